/*
 * chat.h: chat templates of instruct models: where a template comes from,
 * and rendering a conversation through it.
 *
 * Sources, in order: --chat-template FILE; GGUF `tokenizer.chat_template`
 * (or `tokenizer.chat_template.NAME`); an HF model directory's
 * chat_template.jinja or tokenizer_config.json `chat_template` (a string,
 * or a list of {name, template} where "default" is used unless a name is
 * asked for).  bos_token/eos_token come from the same model: GGUF
 * tokenizer.ggml.tokens[bos/eos id], or tokenizer_config.json
 * bos_token/eos_token (a string or {"content": ...}).
 *
 * Holds no task or inference knowledge; the language is jinja.c.
 */
#ifndef QE_CHAT_H
#define QE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "../util/common.h"
#include "jinja.h"

struct cJSON;

typedef struct qe_chat_template {
    char *src;         /* template source (owned, NUL-terminated) */
    size_t n;
    char origin[600];  /* "model.gguf: tokenizer.chat_template", "FILE" ... */
    char sha256[65];   /* of src, lowercase hex */
    char *bos_token;   /* owned; NULL when the model names none */
    char *eos_token;   /* owned; NULL when the model names none */
    qe_jinja *tpl;     /* parsed (owned) */
} qe_chat_template;

/*
 * Load the chat template of `model` (a GGUF file, an HF model or tokenizer
 * directory, a tokenizer_config.json, or a tokenizer.json with a
 * tokenizer_config.json beside it), or of `file` when non-NULL (then model,
 * which may be NULL, only supplies bos/eos).  `name` selects a named
 * variant (NULL: the default).  A model without a template is QE_ENOTFOUND
 * with a message saying so; a template that does not parse is QE_EFORMAT
 * with its line and column.
 */
qe_chat_template *qe_chat_template_load(const char *model, const char *file, const char *name,
                                        qe_err *err);
void qe_chat_template_free(qe_chat_template *ct);

/* Render: ctx is a cJSON object with messages and any other variables;
 * bos_token / eos_token are added from ct when ctx lacks them.  *out is
 * malloc'd (caller frees). */
int qe_chat_render(const qe_chat_template *ct, const struct cJSON *ctx, char **out,
                   size_t *out_n, qe_err *err);

/* "k=v" into ctx: v as JSON when it parses (true, 3, "x", [..]), else as
 * a string. */
int qe_chat_set_var(struct cJSON *ctx, const char *kv, qe_err *err);

#endif /* QE_CHAT_H */
