/*
 * recipe_json.h: custom quantization recipes from JSON.
 *
 *   {"name": "attn-hi", "description": "optional text",
 *    "base": "Q4_K_M",                     (optional llama.cpp mix)
 *    "rules": [{"match": "attn_v\\.weight$", "type": "q6_K"}, ...]}
 *
 * "match" is a PCRE2 pattern searched (unanchored, like llama-quantize
 * --tensor-type) in the GGUF tensor name; the first matching rule wins.
 * Tensors no rule matches follow the base mix, or keep their type when
 * there is no base.  Rules only touch tensors llama.cpp would quantize at
 * all (2-D+ weights, not norms; quant/recipe.h qe_mix_is_quantizable), and
 * a rule type that does not fit a row length falls back like the mixes do.
 * Unknown keys and types are errors naming the JSON path, e.g.
 *   "recipe.json: rules[2].type: unknown type 'q7_K'"
 * and a bad pattern names the rule and the offset inside the pattern.
 */
#ifndef QE_RECIPE_JSON_H
#define QE_RECIPE_JSON_H

#include <stddef.h>

#include "../../quant/recipe.h"
#include "../util/common.h"

typedef struct qe_recipe qe_recipe;

/* Load/parse; NULL + err (QE_EJSON for shape errors, QE_EIO) on failure.
 * `label` names the source in messages (usually the file name). */
qe_recipe *qe_recipe_load(const char *path, qe_err *err);
qe_recipe *qe_recipe_parse(const char *json, size_t n, const char *label, qe_err *err);
void qe_recipe_free(qe_recipe *r);

const char *qe_recipe_name(const qe_recipe *r);
/* qe_ftype of "base", or -1 when the recipe has none. */
int qe_recipe_base_ftype(const qe_recipe *r);
int qe_recipe_n_rules(const qe_recipe *r);

/* qe_type of the first rule matching `name`, or -1; *rule_index (may be
 * NULL) gets the rule's index or -1. */
int qe_recipe_match(const qe_recipe *r, const char *name, int *rule_index);

/* Set ts[i].forced_type for every quantizable tensor a rule matches
 * (others get -1), ready for qe_mix_plan. */
void qe_recipe_apply(const qe_recipe *r, qe_mix_tensor *ts, int n);

#endif /* QE_RECIPE_JSON_H */
