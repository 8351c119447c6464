/*
 * jinja.h: a sandboxed Jinja2 renderer for chat templates.
 *
 * Covers the language as chat templates use it, rendered the way Hugging
 * Face transformers renders them: ImmutableSandboxedEnvironment with
 * trim_blocks and lstrip_blocks, the loopcontrols extension, a
 * {% generation %} block that renders its body, tojson as Python's
 * json.dumps(ensure_ascii=False), and the globals raise_exception,
 * strftime_now, range, namespace and dict.  Printed values follow Python's
 * str() (None, True, ['a', 1], {'k': 'v'}, 1.0).
 *
 * Sandbox: no file, environment or clock access except strftime_now (which
 * reads SOURCE_DATE_EPOCH when set, else the clock); bounded template
 * nesting, macro recursion, evaluation steps, range() size, string and
 * output size, and memory.  Every failure is an error with line and column
 * ("chat template: line 3, column 7: ..."), never a crash.
 *
 * Holds no model, tokenizer or file-format knowledge.
 */
#ifndef QE_JINJA_H
#define QE_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

struct cJSON;

typedef struct qe_jinja qe_jinja;

typedef struct qe_jinja_limits {
    size_t max_output_nbytes; /* rendered text and any one string (default 4 MiB) */
    size_t max_memory_nbytes; /* all values of one render (default 256 MiB) */
    uint64_t max_steps;       /* evaluation steps and loop iterations (default 20M) */
    int max_call_depth;       /* nested macro calls (default 100) */
    int64_t max_range;        /* items one range() may make (default 1M) */
} qe_jinja_limits;

/* The defaults above. */
void qe_jinja_limits_default(qe_jinja_limits *lim);

/* Parse a template (src need not be NUL-terminated).  `name` labels the
 * errors ("chat template" when NULL).  Returns NULL and fills err
 * (QE_EFORMAT) on a syntax error. */
qe_jinja *qe_jinja_parse(const char *src, size_t n, const char *name, qe_err *err);
void qe_jinja_free(qe_jinja *t);

/* Render with the variables of `ctx` (a cJSON object; NULL = none).
 * On success *out is a malloc'd NUL-terminated string the caller frees and
 * *out_n its length.  Errors: QE_EINVAL (a runtime error, or the message of
 * raise_exception), QE_EBOUNDS (a limit).  lim NULL = defaults. */
int qe_jinja_render(const qe_jinja *t, const struct cJSON *ctx, const qe_jinja_limits *lim,
                    char **out, size_t *out_n, qe_err *err);

/* cJSON_Parse, except that integral-valued floats of the text ("1.0",
 * "2e3") are kept as cJSON_Raw number text so that they render as Python
 * floats ("1.0"); cJSON alone cannot tell them from ints.  NULL on malformed
 * JSON (*err_off: where).  Free with cJSON_Delete. */
struct cJSON *qe_jinja_json_parse(const char *text, size_t n, size_t *err_off);

/* Parse and render in one call. */
int qe_jinja_render_src(const char *src, size_t n, const struct cJSON *ctx, char **out,
                        size_t *out_n, qe_err *err);

#endif /* QE_JINJA_H */
