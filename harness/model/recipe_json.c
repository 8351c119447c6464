/*
 * recipe_json.c: load custom quantization recipes (cJSON + PCRE2); the
 * format is documented in recipe_json.h.  Holds no mix logic: matching
 * rules become forced types for quant/recipe.c.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "recipe_json.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "../../quant/quant.h"

typedef struct recipe_rule {
    char *pattern;       /* owned copy of "match" */
    pcre2_code *re;      /* owned compiled pattern */
    int type;            /* qe_type */
} recipe_rule;

struct qe_recipe {
    char name[128];
    int base_ftype; /* -1: none */
    int n_rules;
    recipe_rule *rules;
    pcre2_match_data *md; /* owned; sized for the largest pattern */
};

void qe_recipe_free(qe_recipe *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_rules; i++) {
        free(r->rules[i].pattern);
        pcre2_code_free(r->rules[i].re);
    }
    free(r->rules);
    pcre2_match_data_free(r->md);
    free(r);
}

/* Types a rule may ask for: storage types of weights (no Q8_K/Q8_1 dot
 * helpers, no integer or F64 types). */
static bool rule_type_ok(int t)
{
    const qe_type_traits *tr = qe_type_get(t);
    if (!tr)
        return false;
    if (t == QE_TYPE_F32 || t == QE_TYPE_F16 || t == QE_TYPE_BF16)
        return true;
    return tr->is_quantized && t != QE_TYPE_Q8_K && t != QE_TYPE_Q8_1;
}

static bool key_in(const char *k, const char *const *allowed, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, allowed[i]) == 0)
            return true;
    return false;
}

qe_recipe *qe_recipe_parse(const char *json, size_t n, const char *label, qe_err *err)
{
    static const char *const top_keys[] = {"name", "description", "base", "rules"};
    static const char *const rule_keys[] = {"match", "type"};
    qe_recipe *r = NULL;
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = (at && at >= json && at <= json + n) ? (long)(at - json) : -1;
        qe_err_set(err, QE_EJSON, "%s: offset %ld: malformed JSON", label, off);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        qe_err_set(err, QE_EJSON, "%s: expected a JSON object at the top level", label);
        goto fail;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    r->base_ftype = -1;
    cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (!key_in(it->string, top_keys, sizeof top_keys / sizeof top_keys[0])) {
            qe_err_set(err, QE_EJSON, "%s: unknown key '%s' (expected name, description, base, rules)",
                       label, it->string);
            goto fail;
        }
    }
    cJSON *jname = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!cJSON_IsString(jname) || !jname->valuestring[0]) {
        qe_err_set(err, QE_EJSON, "%s: name: expected a non-empty string", label);
        goto fail;
    }
    qe_strlcpy(r->name, jname->valuestring, sizeof r->name);
    cJSON *jdesc = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (jdesc && !cJSON_IsString(jdesc)) {
        qe_err_set(err, QE_EJSON, "%s: description: expected a string", label);
        goto fail;
    }
    cJSON *jbase = cJSON_GetObjectItemCaseSensitive(root, "base");
    if (jbase && !cJSON_IsNull(jbase)) {
        if (!cJSON_IsString(jbase)) {
            qe_err_set(err, QE_EJSON, "%s: base: expected a mix name such as \"Q4_K_M\"", label);
            goto fail;
        }
        r->base_ftype = qe_ftype_from_name(jbase->valuestring);
        if (r->base_ftype < 0) {
            qe_err_set(err, QE_EJSON, "%s: base: unknown mix '%s' (known: %s)", label,
                       jbase->valuestring, qe_ftype_names());
            goto fail;
        }
    }
    cJSON *jrules = cJSON_GetObjectItemCaseSensitive(root, "rules");
    if (!cJSON_IsArray(jrules)) {
        qe_err_set(err, QE_EJSON, "%s: rules: expected an array of {\"match\", \"type\"}", label);
        goto fail;
    }
    int nr = cJSON_GetArraySize(jrules);
    if (nr == 0 && r->base_ftype < 0) {
        qe_err_set(err, QE_EJSON, "%s: rules: empty and no base mix: the recipe changes nothing",
                   label);
        goto fail;
    }
    r->rules = calloc((size_t)(nr ? nr : 1), sizeof *r->rules);
    if (!r->rules) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    int i = 0;
    cJSON *jr;
    cJSON_ArrayForEach(jr, jrules)
    {
        if (!cJSON_IsObject(jr)) {
            qe_err_set(err, QE_EJSON, "%s: rules[%d]: expected an object", label, i);
            goto fail;
        }
        cJSON_ArrayForEach(it, jr)
        {
            if (!key_in(it->string, rule_keys, 2)) {
                qe_err_set(err, QE_EJSON, "%s: rules[%d]: unknown key '%s' (expected match, type)",
                           label, i, it->string);
                goto fail;
            }
        }
        cJSON *jm = cJSON_GetObjectItemCaseSensitive(jr, "match");
        cJSON *jt = cJSON_GetObjectItemCaseSensitive(jr, "type");
        if (!cJSON_IsString(jm)) {
            qe_err_set(err, QE_EJSON, "%s: rules[%d].match: expected a regex string", label, i);
            goto fail;
        }
        if (!cJSON_IsString(jt)) {
            qe_err_set(err, QE_EJSON, "%s: rules[%d].type: expected a type name string", label, i);
            goto fail;
        }
        int t = qe_type_from_name(jt->valuestring);
        if (t < 0 || !rule_type_ok(t)) {
            qe_err_set(err, QE_EJSON, "%s: rules[%d].type: unknown type '%s'", label, i,
                       jt->valuestring);
            goto fail;
        }
        recipe_rule *rule = &r->rules[i];
        rule->type = t;
        rule->pattern = strdup(jm->valuestring);
        if (!rule->pattern) {
            qe_err_set(err, QE_ENOMEM, "%s: out of memory", label);
            goto fail;
        }
        r->n_rules = i + 1; /* owned from here on: freed by qe_recipe_free */
        int ec;
        PCRE2_SIZE eoff;
        rule->re = pcre2_compile((PCRE2_SPTR)rule->pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec,
                                 &eoff, NULL);
        if (!rule->re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            qe_err_set(err, QE_EJSON, "%s: rules[%d].match: bad regex at pattern offset %zu: %s",
                       label, i, (size_t)eoff, (const char *)msg);
            goto fail;
        }
        i++;
    }
    r->md = pcre2_match_data_create(1, NULL);
    if (!r->md) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    cJSON_Delete(root);
    return r;

fail:
    qe_recipe_free(r);
    cJSON_Delete(root);
    return NULL;
}

qe_recipe *qe_recipe_load(const char *path, qe_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    if (qe_read_file(path, &buf, &n, err))
        return NULL;
    const char *base = strrchr(path, '/');
    qe_recipe *r = qe_recipe_parse(buf, n, base ? base + 1 : path, err);
    free(buf);
    return r;
}

const char *qe_recipe_name(const qe_recipe *r)
{
    return r->name;
}

int qe_recipe_base_ftype(const qe_recipe *r)
{
    return r->base_ftype;
}

int qe_recipe_n_rules(const qe_recipe *r)
{
    return r->n_rules;
}

int qe_recipe_match(const qe_recipe *r, const char *name, int *rule_index)
{
    for (int i = 0; i < r->n_rules; i++) {
        int rc = pcre2_match(r->rules[i].re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, r->md,
                             NULL);
        if (rc >= 0) {
            if (rule_index)
                *rule_index = i;
            return r->rules[i].type;
        }
    }
    if (rule_index)
        *rule_index = -1;
    return -1;
}

void qe_recipe_apply(const qe_recipe *r, qe_mix_tensor *ts, int n)
{
    for (int i = 0; i < n; i++) {
        ts[i].forced_type = -1;
        if (qe_mix_is_quantizable(ts[i].name, ts[i].n_dims, false))
            ts[i].forced_type = qe_recipe_match(r, ts[i].name, NULL);
    }
}
