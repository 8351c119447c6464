/*
 * teacher.h: task-level divergence at prefill cost.  For a generation
 * item, the reference model's greedy output (stored by the reference
 * variant) is fed after the prompt to both the reference and a candidate,
 * in one prefill each (teacher forcing, no decode), and every output token
 * is compared: KL(reference || candidate) over the whole vocabulary
 * (double log-softmax of f32 logits, as the lockstep text KLD), whether the
 * two argmaxes agree, and the position of the first disagreement.  So a
 * math or code item gives a graded, paired signal even when its accuracy
 * is 0 or 100 %.
 *
 * Uses the inference core's public API only (qe_infer_eval_defer, then
 * qe_infer_logits_cols over vocabulary slices of all scored rows, folded
 * into a running log-sum-exp per row, so the output matrix is applied
 * once per model and the logits held are bounded).  Must not hold: SQLite, task
 * logic (which text to score is the caller's business).
 */
#ifndef QE_TEACHER_H
#define QE_TEACHER_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

struct qe_model;
typedef struct qe_tf qe_tf;

/* Two cores (reference and candidate, both borrowed models that must
 * outlive tf) with n_ctx positions each; n_threads 0 = default.  Errors:
 * vocab sizes differ, or those of qe_infer_new. */
qe_tf *qe_tf_new(const struct qe_model *ref, const struct qe_model *cand, int n_ctx,
                 int n_threads, qe_err *err);
void qe_tf_free(qe_tf *tf);

typedef struct qe_tf_item {
    int n_tokens;        /* output tokens scored (the continuation, cut to fit n_ctx) */
    double kld_sum;      /* sum of the per-token KL(ref || cand), nats */
    int n_top1_same;     /* tokens whose two argmaxes agree */
    int first_diff;      /* index of the first token whose argmaxes differ; n_tokens if none */
    float *kld;          /* (n_tokens) per-token KLD, malloc'd: the caller frees */
} qe_tf_item;

/*
 * The reference's side of an item does not depend on the candidate: a
 * cache kept across candidates (qe run: one per run, over all variants)
 * holds, per scored token sequence, the reference's final-normed hidden
 * states of the scored positions, so every later candidate skips the
 * reference's forward pass (its logits are recomputed from them, bitwise
 * the same).  At most max_bytes of rows are kept (0: 512 MiB); items past
 * that are computed as without a cache.
 */
typedef struct qe_tf_cache qe_tf_cache;
qe_tf_cache *qe_tf_cache_new(size_t max_bytes);
void qe_tf_cache_free(qe_tf_cache *c);
/* Lookups that found the item, and items stored. */
void qe_tf_cache_stats(const qe_tf_cache *c, long *hits, long *stored);
/* Use c (NULL: none) for the reference of tf from now on; c must belong
 * to tf's reference model and outlive its use. */
void qe_tf_set_cache(qe_tf *tf, qe_tf_cache *c);

/* Vocabulary columns per slice (default: as many as 64 MiB of logits per
 * model hold for all rows, >= 256); a smaller slice only bounds memory
 * further (tests use it to fold many slices). */
void qe_tf_set_slice(qe_tf *tf, int cols);

/* Score the continuation cont (n_cont ids) after the context ctx (n_ctx
 * ids, BOS first when the model adds one).  A continuation longer than
 * the room left in n_ctx positions is cut (n_tokens says how much was
 * scored); QE_EINVAL when the context alone fills the window or either
 * part is empty, or an id is outside the vocabulary. */
int qe_tf_score(qe_tf *tf, const int32_t *ctx, size_t n_ctx, const int32_t *cont, size_t n_cont,
                qe_tf_item *out, qe_err *err);

#endif /* QE_TEACHER_H */
