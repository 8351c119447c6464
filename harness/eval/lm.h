/*
 * lm.h: the language-model interface the evaluators run on.  A qe_lm is a
 * small vtable so that tests can plug in a fake model and the harness the
 * real one (qe_lm_infer_init: qe_model + qe_infer with KV reuse).
 *
 * Token conventions (lm-eval's): a request is (context, continuation).
 * The context is tokenized with BOS (when the tokenizer adds one); the
 * continuation's ids are those of tokenize(context + continuation) past
 * the context's ids, with trailing spaces of the context moved to the
 * continuation first (lm-eval _encode_pair).
 * Must not hold: task logic, filters, statistics.
 */
#ifndef QE_LM_H
#define QE_LM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

struct qe_model;
struct qe_infer;

typedef struct qe_lm qe_lm;

typedef struct qe_lm_ops {
    /* UTF-8 text -> ids (no BOS/EOS); *ids malloc'd. */
    int (*tokenize)(qe_lm *lm, const char *text, size_t len, int32_t **ids, size_t *n_ids,
                    qe_err *err);
    /* ids -> text bytes appended as generated (no BOS stripping); *out malloc'd. */
    int (*detokenize)(qe_lm *lm, const int32_t *ids, size_t n, char **out, qe_err *err);
    /* Sum of log p(cont[i] | ctx, cont[<i]) in nats, and whether every cont
     * token is the argmax.  n_ctx >= 1 (the first context id may be BOS). */
    int (*loglik)(qe_lm *lm, const int32_t *ctx, size_t n_ctx, const int32_t *cont,
                  size_t n_cont, double *ll, bool *greedy, qe_err *err);
    /* Greedy decode after prompt, up to max_tokens, stopping at
     * end-of-generation ids or when the decoded text contains one of
     * until[]; *text malloc'd (the text before the stop string). */
    int (*generate)(qe_lm *lm, const int32_t *prompt, size_t n_prompt, int max_tokens,
                    const char *const *until, int n_until, char **text, qe_err *err);
    void (*free)(qe_lm *lm);
} qe_lm_ops;

/* Generate for n_req prompts at once, texts[i] as generate would write
 * them for prompts[i] (see qe_lm.generate_many). */
typedef int (*qe_lm_generate_many_fn)(qe_lm *lm, const int32_t *const *prompts,
                                      const size_t *n_prompts, size_t n_req, int max_tokens,
                                      const char *const *until, int n_until, char **texts,
                                      qe_err *err);

struct qe_lm {
    const qe_lm_ops *ops;
    void *impl;             /* owned by the implementation */
    int32_t bos;            /* -1 if none */
    bool add_bos;           /* contexts start with BOS (not doubled when the text starts with it) */
    bool parse_special;     /* special-token texts in contexts become special tokens (chat) */
    int n_ctx;              /* max positions per request */
    char name[128];
    /* counters (for logs): requests and tokens evaluated */
    uint64_t n_requests, n_tokens_eval, n_tokens_reused;
    /* Optional (NULL: ops->generate per request).  The real model's does
     * continuous batching with the shared prompt prefix computed once (see
     * lm.c); its answers do not depend on how many run at a time. */
    qe_lm_generate_many_fn generate_many;
};

/* The real model: qe_infer over m (borrowed; must outlive lm).  n_ctx
 * defaults to min(512, model's trained context); threads 0 = default. */
int qe_lm_infer_init(qe_lm *lm, const struct qe_model *m, int n_ctx, int n_threads, qe_err *err);
void qe_lm_free(qe_lm *lm);

/* Sequences generate_many keeps in flight (the real model; default 1
 * until set).  Recreates the core with B+1 KV slots (one for the shared
 * prefix); errors (QE_ENOMEM with the memory needed) leave lm as it was. */
int qe_lm_set_parallel(qe_lm *lm, int parallel, qe_err *err);
/* Arithmetic of the real model's forward passes: QE_NUMERICS_EXACT (the
 * default) or QE_NUMERICS_INT8 (harness/infer/infer.h).  Recreates the
 * core; errors leave lm as it was.  A no-op for other models. */
int qe_lm_set_numerics(qe_lm *lm, int numerics, qe_err *err);
/* A default for --parallel: 16, fewer when their KV caches would take more
 * than a quarter of the machine's memory (at least 1). */
int qe_lm_default_parallel(const struct qe_model *m, int n_ctx);
/* Upper bound accepted for --parallel. */
#define QE_LM_MAX_PARALLEL 256

/* Tokenize a context (BOS first when lm->add_bos). */
int qe_lm_encode_context(qe_lm *lm, const char *ctx, int32_t **ids, size_t *n, qe_err *err);
/* lm-eval _encode_pair: ids of context (with BOS) and continuation. */
int qe_lm_encode_pair(qe_lm *lm, const char *ctx, const char *cont, int32_t **ctx_ids,
                      size_t *n_ctx, int32_t **cont_ids, size_t *n_cont, qe_err *err);

#endif /* QE_LM_H */
