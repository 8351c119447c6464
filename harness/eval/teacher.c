/*
 * teacher.c: teacher-forced divergence of a candidate from the reference
 * on the reference's own output (see teacher.h).
 */
#include "teacher.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"
#include "../model/model.h"

/* Logit rows per block: 32 MiB of f32 per model, at least 16 rows. */
#define TF_BLOCK_BYTES (32u << 20)

struct qe_tf {
    qe_infer *ref, *cand;
    int n_ctx, n_vocab;
    int32_t *tokens;      /* (n_ctx) */
    float *lr, *lc;       /* (block_rows + QE_DECODE_MAX_T, n_vocab) */
    int block_rows;
};

qe_tf *qe_tf_new(const qe_model *ref, const qe_model *cand, int n_ctx, int n_threads,
                 qe_err *err)
{
    if (ref->cfg.n_vocab != cand->cfg.n_vocab) {
        qe_err_set(err, QE_EINVAL, "teacher forcing: vocab sizes differ: reference %d, "
                   "candidate %d", ref->cfg.n_vocab, cand->cfg.n_vocab);
        return NULL;
    }
    qe_tf *tf = calloc(1, sizeof *tf);
    if (!tf) {
        qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
        return NULL;
    }
    tf->n_ctx = n_ctx > 0 ? n_ctx : 512;
    tf->n_vocab = ref->cfg.n_vocab;
    qe_infer_opts io = {.n_ctx = tf->n_ctx, .n_threads = n_threads, .n_batch = tf->n_ctx};
    size_t b = TF_BLOCK_BYTES / ((size_t)tf->n_vocab * sizeof(float));
    tf->block_rows = b < 16 ? 16 : b > (size_t)tf->n_ctx ? tf->n_ctx : (int)b;
    size_t rows = (size_t)tf->block_rows + QE_DECODE_MAX_T;
    if (!(tf->ref = qe_infer_new(ref, &io, err)) || !(tf->cand = qe_infer_new(cand, &io, err)))
        goto fail;
    tf->tokens = malloc((size_t)tf->n_ctx * sizeof *tf->tokens);
    tf->lr = malloc(rows * (size_t)tf->n_vocab * sizeof(float));
    tf->lc = malloc(rows * (size_t)tf->n_vocab * sizeof(float));
    if (!tf->tokens || !tf->lr || !tf->lc) {
        qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
        goto fail;
    }
    return tf;
fail:
    qe_tf_free(tf);
    return NULL;
}

void qe_tf_free(qe_tf *tf)
{
    if (!tf)
        return;
    qe_infer_free(tf->ref);
    qe_infer_free(tf->cand);
    free(tf->tokens);
    free(tf->lr);
    free(tf->lc);
    free(tf);
}

/* KL(r || c) of two logit rows, exact (double log-softmax), and whether
 * their argmaxes agree. */
static double row_kld(const float *lr, const float *lc, int nv, int *same)
{
    int ir = 0, ic = 0;
    for (int i = 1; i < nv; i++) {
        if (lr[i] > lr[ir])
            ir = i;
        if (lc[i] > lc[ic])
            ic = i;
    }
    double mr = lr[ir], mc = lc[ic], sr = 0, sc = 0;
    for (int i = 0; i < nv; i++) {
        sr += exp((double)lr[i] - mr);
        sc += exp((double)lc[i] - mc);
    }
    double zr = mr + log(sr), zc = mc + log(sc), k = 0;
    for (int i = 0; i < nv; i++) {
        double a = (double)lr[i] - zr, b = (double)lc[i] - zc;
        k += exp(a) * (a - b);
    }
    *same = ir == ic;
    return k;
}

int qe_tf_score(qe_tf *tf, const int32_t *ctx, size_t n_ctx, const int32_t *cont, size_t n_cont,
                qe_tf_item *out, qe_err *err)
{
    memset(out, 0, sizeof *out);
    if (n_ctx == 0 || n_cont == 0)
        return qe_err_set(err, QE_EINVAL, "teacher forcing: need >= 1 context and >= 1 output "
                          "token (got %zu and %zu)", n_ctx, n_cont);
    if (n_ctx > (size_t)tf->n_ctx)
        return qe_err_set(err, QE_EINVAL, "teacher forcing: the context has %zu tokens, more "
                          "than the window of %d", n_ctx, tf->n_ctx);
    /* the logits at positions n_ctx-1 .. n_ctx+n-2 score cont[0..n-1]: the
     * last output token is never fed, so n_ctx + n - 1 <= window */
    size_t n = n_cont < (size_t)tf->n_ctx + 1 - n_ctx ? n_cont : (size_t)tf->n_ctx + 1 - n_ctx;
    size_t L = n_ctx + n - 1;
    for (size_t i = 0; i < L; i++) {
        int32_t t = i < n_ctx ? ctx[i] : cont[i - n_ctx];
        if (t < 0 || t >= tf->n_vocab)
            return qe_err_set(err, QE_EINVAL, "teacher forcing: token %zu = %d outside the "
                              "vocab of %d", i, t, tf->n_vocab);
        tf->tokens[i] = t;
    }
    out->kld = malloc(n * sizeof *out->kld);
    if (!out->kld)
        return qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
    int rc;
    qe_infer_rewind(tf->ref, 0);
    qe_infer_rewind(tf->cand, 0);
    if ((rc = qe_infer_eval_defer(tf->ref, tf->tokens, (int)L, (int)n_ctx - 1, err)) ||
        (rc = qe_infer_eval_defer(tf->cand, tf->tokens, (int)L, (int)n_ctx - 1, err)))
        goto fail;
    const int nv = tf->n_vocab, N = (int)n;
    out->first_diff = N;
    for (int r0 = 0, nb; r0 < N; r0 += nb) {
        nb = N - r0 < tf->block_rows ? N - r0 : tf->block_rows;
        if (N - (r0 + nb) <= QE_DECODE_MAX_T)
            nb = N - r0; /* a small remainder joins this block */
        if ((rc = qe_infer_logits(tf->ref, r0, nb, tf->lr, err)) ||
            (rc = qe_infer_logits(tf->cand, r0, nb, tf->lc, err)))
            goto fail;
        for (int j = 0; j < nb; j++) {
            int same;
            double k = row_kld(tf->lr + (size_t)j * nv, tf->lc + (size_t)j * nv, nv, &same);
            out->kld[r0 + j] = (float)k;
            out->kld_sum += k;
            out->n_top1_same += same;
            if (!same && out->first_diff == N)
                out->first_diff = r0 + j;
        }
    }
    out->n_tokens = N;
    return 0;
fail:
    free(out->kld);
    out->kld = NULL;
    return rc;
}
