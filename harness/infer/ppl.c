/*
 * ppl.c: llama.cpp-compatible perplexity, lockstep KL divergence, and the
 * reader for llama.cpp's --kl-divergence-base files (protocols in ppl.h).
 *
 * Per-token values are computed in parallel (OpenMP over scored positions)
 * into arrays; every sum runs afterwards in token order, so results do not
 * depend on the thread count.
 */
#include "ppl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../model/model.h"
#include "infer.h"

/* ------------------------------------------------------------ helpers -- */

static int n_threads_of(const qe_ppl_opts *o)
{
    return o && o->n_threads > 0 ? o->n_threads : omp_get_max_threads();
}

/* Run one chunk: KV cleared, first token replaced by BOS; the logits of
 * positions first..n_ctx-1 are deferred (qe_infer_logits, by blocks). */
static int eval_chunk(qe_infer *inf, const int32_t *chunk, int n_ctx, int32_t bos, int32_t *tmp,
                      qe_err *err)
{
    memcpy(tmp, chunk, (size_t)n_ctx * sizeof(int32_t));
    if (bos >= 0)
        tmp[0] = bos;
    qe_infer_rewind(inf, 0);
    return qe_infer_eval_defer(inf, tmp, n_ctx, n_ctx / 2, err);
}

/* Logit rows are made in blocks of at most LOGIT_BLOCK_BYTES (at least 16
 * rows), so a 152k vocab costs ~32 MiB instead of n_ctx/2 x n_vocab
 * floats.  The buffer holds QE_DECODE_MAX_T more rows: a remainder that
 * small joins the previous block, because every block must take the
 * batched GEMM path to give the same bits as one block of all rows. */
#define LOGIT_BLOCK_BYTES (32u << 20)

static int logit_block_rows(int n_out, int n_vocab)
{
    size_t b = LOGIT_BLOCK_BYTES / ((size_t)n_vocab * sizeof(float));
    if (b < 16)
        b = 16;
    return b < (size_t)n_out ? (int)b : n_out;
}

/* The next block of deferred rows, [r0, r0 + return value) of n_out (a
 * small remainder joins it); *n_scored: how many of its rows are among
 * the n_per scored ones (the chunk's last row is not). */
static int next_block(int r0, int n_out, int n_per, int B, int *n_scored)
{
    int nb = n_out - r0 < B ? n_out - r0 : B;
    if (n_out - (r0 + nb) <= QE_DECODE_MAX_T)
        nb = n_out - r0;
    *n_scored = r0 + nb > n_per ? n_per - r0 : nb;
    return nb;
}

/* -log softmax(lg)[tok] as llama-perplexity computes it: float max, sum of
 * expf in double, logits[tok] - max in float. */
static double row_nll(const float *lg, int n_vocab, int tok)
{
    float mx = lg[0];
    for (int i = 1; i < n_vocab; i++)
        if (lg[i] > mx)
            mx = lg[i];
    double s = 0.0;
    for (int i = 0; i < n_vocab; i++)
        s += expf(lg[i] - mx);
    return -((double)(lg[tok] - mx) - log(s));
}

static qe_infer *make_infer(const qe_model *m, int n_ctx, const qe_ppl_opts *o, qe_err *err)
{
    qe_infer_opts io = {.n_ctx = n_ctx, .n_threads = o ? o->n_threads : 0, .n_batch = n_ctx,
                        .numerics = o ? o->numerics : QE_NUMERICS_EXACT};
    return qe_infer_new(m, &io, err);
}

/* ------------------------------------------------------------ ppl run -- */

void qe_ppl_result_free(qe_ppl_result *r)
{
    if (!r)
        return;
    free(r->nll);
    free(r->target);
    free(r->chunk_ppl);
    memset(r, 0, sizeof *r);
}

int qe_ppl_run(const qe_model *m, const int32_t *tokens, size_t n_tokens, const qe_ppl_opts *opts,
               qe_ppl_result *res, qe_err *err)
{
    memset(res, 0, sizeof *res);
    const int n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : 512;
    const int32_t bos = opts ? opts->bos : -1;
    if (n_ctx < 4)
        return qe_err_set(err, QE_EINVAL, "perplexity: n_ctx %d: expected at least 4", n_ctx);
    if (n_tokens < (size_t)2 * n_ctx)
        return qe_err_set(err, QE_EINVAL, "perplexity: the text has %zu tokens; a context of %d "
                          "needs at least %d (2*n_ctx, as llama-perplexity)", n_tokens, n_ctx,
                          2 * n_ctx);
    size_t n_chunk = n_tokens / (size_t)n_ctx;
    if (opts && opts->n_chunks > 0 && (size_t)opts->n_chunks < n_chunk)
        n_chunk = (size_t)opts->n_chunks;
    const int first = n_ctx / 2, n_per = n_ctx - 1 - first;
    const int n_vocab = m->cfg.n_vocab;
    for (size_t i = 0; i < n_chunk * (size_t)n_ctx; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return qe_err_set(err, QE_EINVAL, "perplexity: token %zu = %d outside the vocab of "
                              "%d", i, tokens[i], n_vocab);

    int rc = 0;
    qe_infer *inf = make_infer(m, n_ctx, opts, err);
    const int n_out = n_ctx - first, B = logit_block_rows(n_out, n_vocab);
    float *logits = malloc((size_t)(B + QE_DECODE_MAX_T) * n_vocab * sizeof(float));
    int32_t *tmp = malloc((size_t)n_ctx * sizeof(int32_t));
    res->nll = malloc(n_chunk * n_per * sizeof(double));
    res->target = malloc(n_chunk * n_per * sizeof(int32_t));
    res->chunk_ppl = malloc(n_chunk * sizeof(double));
    if (!inf) {
        rc = err ? err->code : QE_EINVAL;
        goto out;
    }
    if (!logits || !tmp || !res->nll || !res->target || !res->chunk_ppl) {
        rc = qe_err_set(err, QE_ENOMEM, "perplexity: out of memory");
        goto out;
    }
    res->n_ctx = n_ctx;
    res->n_chunks = (int)n_chunk;
    res->n_per_chunk = n_per;
    res->n_scored = n_chunk * n_per;
    qe_progress pg;
    if (opts && opts->progress)
        qe_progress_start(&pg, "perplexity", n_chunk);
    const double t0 = qe_now();
    double sum = 0.0, sum2 = 0.0;
    for (size_t c = 0; c < n_chunk; c++) {
        const int32_t *chunk = tokens + c * n_ctx;
        if ((rc = eval_chunk(inf, chunk, n_ctx, bos, tmp, err)))
            goto out;
        double *nll = res->nll + c * n_per;
        for (int r0 = 0, nb, ns; r0 < n_per; r0 += nb) {
            nb = next_block(r0, n_out, n_per, B, &ns);
            if ((rc = qe_infer_logits(inf, r0, nb, logits, err)))
                goto out;
#pragma omp parallel for num_threads(n_threads_of(opts)) schedule(static) \
    if ((double)ns * n_vocab >= (1 << 18))
            for (int j = 0; j < ns; j++)
                nll[r0 + j] = row_nll(logits + (size_t)j * n_vocab, n_vocab,
                                      chunk[first + 1 + r0 + j]);
        }
        for (int j = 0; j < n_per; j++) {
            res->target[c * n_per + j] = chunk[first + 1 + j];
            sum += nll[j];
            sum2 += nll[j] * nll[j];
        }
        res->chunk_ppl[c] = exp(sum / (double)((c + 1) * n_per));
        if (opts && opts->log) {
            fprintf(opts->log, "[%zu]%.4f,", c + 1, res->chunk_ppl[c]);
            fflush(opts->log);
        }
        if (opts && opts->progress)
            qe_progress_update(&pg, c + 1);
    }
    if (opts && opts->progress)
        qe_progress_end(&pg);
    if (opts && opts->log)
        fputc('\n', opts->log);
    res->seconds = qe_now() - t0;
    res->core_nbytes = qe_infer_alloc_nbytes(inf) + (uint64_t)(B + QE_DECODE_MAX_T) * n_vocab * 4;
    const double N = (double)res->n_scored;
    res->mean_nll = sum / N;
    res->ppl = exp(res->mean_nll);
    double var = sum2 / N - res->mean_nll * res->mean_nll;
    res->ppl_stderr = var > 0 && N > 1 ? res->ppl * sqrt(var / (N - 1)) : 0.0;
out:
    free(logits);
    free(tmp);
    qe_infer_free(inf);
    if (rc)
        qe_ppl_result_free(res);
    return rc;
}

/* ---------------------------------------------------------- KLD stats -- */

static void mean_unc(double sum, double sum2, size_t n, double *f, double *df)
{
    if (n < 1) {
        *f = *df = 0;
        return;
    }
    *f = sum / (double)n;
    double v = sum2 / (double)n - *f * *f;
    *df = v > 0 && n > 10 ? sqrt(v / (double)(n - 1)) : 0.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *v, size_t n, double frac)
{
    if (frac <= 0)
        return v[0];
    if (frac >= 1)
        return v[n - 1];
    double p = frac * (double)(n - 1);
    size_t ip = (size_t)p;
    p -= (double)ip;
    size_t ip1 = ip + 1 < n ? ip + 1 : n - 1;
    return (1 - p) * v[ip] + p * v[ip1];
}

static double median(const double *v, size_t n)
{
    return n % 2 == 0 ? 0.5 * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* Means, uncertainties and ratios; percentiles only if with_sorted. */
static void kld_stats(qe_kld_stats *s, const double *kld, const double *nll_q,
                      const double *nll_base, const double *dp, const uint8_t *same_top, size_t n,
                      bool with_sorted)
{
    memset(s, 0, sizeof *s);
    s->count = n;
    if (n == 0)
        return;
    double sq = 0, sq2 = 0, sb = 0, sb2 = 0, sqb = 0, sk = 0, sk2 = 0, sd = 0, sd2 = 0, sd4 = 0;
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
        sq += nll_q[i];
        sq2 += nll_q[i] * nll_q[i];
        sb += nll_base[i];
        sb2 += nll_base[i] * nll_base[i];
        sqb += nll_q[i] * nll_base[i];
        sk += kld[i];
        sk2 += kld[i] * kld[i];
        sd += dp[i];
        double d2 = dp[i] * dp[i];
        sd2 += d2;
        sd4 += d2 * d2;
        same += same_top[i] != 0;
    }
    double lq, lq_u, lb, lb_u;
    mean_unc(sq, sq2, n, &lq, &lq_u);
    mean_unc(sb, sb2, n, &lb, &lb_u);
    double cov = n < 10 ? 0.0 : (sqb / n - (sq / n) * (sb / n)) / (double)(n - 1);
    s->ppl_q = exp(lq);
    s->ppl_q_unc = s->ppl_q * lq_u;
    s->ppl_base = exp(lb);
    s->ppl_base_unc = s->ppl_base * lb_u;
    s->cor = lq_u > 0 && lb_u > 0 ? cov / (lq_u * lb_u) : 0.0;
    s->ln_ratio = lq - lb;
    double v = lq_u * lq_u + lb_u * lb_u - 2.0 * cov;
    s->ln_ratio_unc = v > 0 ? sqrt(v) : 0.0;
    s->ratio = exp(s->ln_ratio);
    s->ratio_unc = s->ratio * s->ln_ratio_unc;
    s->diff = s->ppl_q - s->ppl_base;
    v = s->ppl_q_unc * s->ppl_q_unc + s->ppl_base_unc * s->ppl_base_unc -
        2.0 * s->ppl_q * s->ppl_base * cov;
    s->diff_unc = v > 0 ? sqrt(v) : 0.0;
    mean_unc(sk, sk2, n, &s->kld_mean, &s->kld_unc);
    mean_unc(sd, sd2, n, &s->dp_mean, &s->dp_unc);
    double mse, mse_u;
    mean_unc(sd2, sd4, n, &mse, &mse_u);
    s->rms_dp = sqrt(mse);
    s->rms_dp_unc = s->rms_dp > 0 ? 0.5 / s->rms_dp * mse_u : 0.0;
    s->same_top = (double)same / (double)n;
    s->same_top_unc = n > 1 ? sqrt(s->same_top * (1 - s->same_top) / (double)(n - 1)) : 0.0;
    if (!with_sorted)
        return;

    double *sorted = malloc(n * sizeof(double));
    if (!sorted)
        return; /* percentiles stay 0; means above are complete */
    memcpy(sorted, kld, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_double);
    s->kld_max = sorted[n - 1];
    s->kld_p999 = percentile(sorted, n, 0.999);
    s->kld_p99 = percentile(sorted, n, 0.99);
    s->kld_p95 = percentile(sorted, n, 0.95);
    s->kld_p90 = percentile(sorted, n, 0.90);
    s->kld_median = median(sorted, n);
    s->kld_p10 = percentile(sorted, n, 0.10);
    s->kld_p05 = percentile(sorted, n, 0.05);
    s->kld_p01 = percentile(sorted, n, 0.01);
    s->kld_min = sorted[0];
    memcpy(sorted, dp, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_double);
    s->dp_max = sorted[n - 1];
    s->dp_p999 = percentile(sorted, n, 0.999);
    s->dp_p99 = percentile(sorted, n, 0.99);
    s->dp_p95 = percentile(sorted, n, 0.95);
    s->dp_p90 = percentile(sorted, n, 0.90);
    s->dp_p75 = percentile(sorted, n, 0.75);
    s->dp_median = median(sorted, n);
    s->dp_p25 = percentile(sorted, n, 0.25);
    s->dp_p10 = percentile(sorted, n, 0.10);
    s->dp_p05 = percentile(sorted, n, 0.05);
    s->dp_p01 = percentile(sorted, n, 0.01);
    s->dp_p001 = percentile(sorted, n, 0.001);
    s->dp_min = sorted[0];
    free(sorted);
}

void qe_kld_stats_compute(qe_kld_stats *s, const double *kld, const double *nll_q,
                          const double *nll_base, const double *dp, const uint8_t *same_top,
                          size_t n)
{
    kld_stats(s, kld, nll_q, nll_base, dp, same_top, n, true);
}

void qe_kld_stats_print(FILE *f, const qe_kld_stats *s)
{
    fprintf(f, "====== Perplexity statistics ======\n");
    fprintf(f, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", s->ppl_q, s->ppl_q_unc);
    fprintf(f, "Mean PPL(base)                : %10.6f ± %10.6f\n", s->ppl_base, s->ppl_base_unc);
    fprintf(f, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * s->cor);
    fprintf(f, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", s->ln_ratio, s->ln_ratio_unc);
    fprintf(f, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", s->ratio, s->ratio_unc);
    fprintf(f, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", s->diff, s->diff_unc);
    fprintf(f, "\n====== KL divergence statistics ======\n");
    fprintf(f, "Mean    KLD: %10.6f ± %10.6f\n", s->kld_mean, s->kld_unc);
    fprintf(f, "Maximum KLD: %10.6f\n", s->kld_max);
    fprintf(f, "99.9%%   KLD: %10.6f\n", s->kld_p999);
    fprintf(f, "99.0%%   KLD: %10.6f\n", s->kld_p99);
    fprintf(f, "95.0%%   KLD: %10.6f\n", s->kld_p95);
    fprintf(f, "90.0%%   KLD: %10.6f\n", s->kld_p90);
    fprintf(f, "Median  KLD: %10.6f\n", s->kld_median);
    fprintf(f, "10.0%%   KLD: %10.6f\n", s->kld_p10);
    fprintf(f, " 5.0%%   KLD: %10.6f\n", s->kld_p05);
    fprintf(f, " 1.0%%   KLD: %10.6f\n", s->kld_p01);
    fprintf(f, "Minimum KLD: %10.6f\n", s->kld_min);
    fprintf(f, "\n====== Token probability statistics ======\n");
    fprintf(f, "Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * s->dp_mean, 100.0 * s->dp_unc);
    fprintf(f, "Maximum Δp: %6.3f%%\n", 100.0 * s->dp_max);
    fprintf(f, "99.9%%   Δp: %6.3f%%\n", 100.0 * s->dp_p999);
    fprintf(f, "99.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p99);
    fprintf(f, "95.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p95);
    fprintf(f, "90.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p90);
    fprintf(f, "75.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p75);
    fprintf(f, "Median  Δp: %6.3f%%\n", 100.0 * s->dp_median);
    fprintf(f, "25.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p25);
    fprintf(f, "10.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p10);
    fprintf(f, " 5.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p05);
    fprintf(f, " 1.0%%   Δp: %6.3f%%\n", 100.0 * s->dp_p01);
    fprintf(f, " 0.1%%   Δp: %6.3f%%\n", 100.0 * s->dp_p001);
    fprintf(f, "Minimum Δp: %6.3f%%\n", 100.0 * s->dp_min);
    fprintf(f, "RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * s->rms_dp, 100.0 * s->rms_dp_unc);
    fprintf(f, "Same top p: %6.3f ± %5.3f %%\n", 100.0 * s->same_top, 100.0 * s->same_top_unc);
}

/* ---------------------------------------------------------- KLD shared -- */

void qe_kld_result_free(qe_kld_result *r)
{
    if (!r)
        return;
    free(r->kld);
    free(r->nll_q);
    free(r->nll_base);
    free(r->dp);
    free(r->same_top);
    memset(r, 0, sizeof *r);
}

static int kld_alloc(qe_kld_result *r, int n_ctx, size_t n_chunk, qe_err *err)
{
    memset(r, 0, sizeof *r);
    r->n_ctx = n_ctx;
    r->n_chunks = (int)n_chunk;
    r->n_per_chunk = n_ctx - 1 - n_ctx / 2;
    r->n = n_chunk * (size_t)r->n_per_chunk;
    size_t n = r->n ? r->n : 1;
    r->kld = malloc(n * sizeof(double));
    r->nll_q = malloc(n * sizeof(double));
    r->nll_base = malloc(n * sizeof(double));
    r->dp = malloc(n * sizeof(double));
    r->same_top = malloc(n);
    if (!r->kld || !r->nll_q || !r->nll_base || !r->dp || !r->same_top) {
        qe_kld_result_free(r);
        return qe_err_set(err, QE_ENOMEM, "KL divergence: out of memory for %zu tokens", n);
    }
    return 0;
}

/* llama.cpp's per-chunk line: running PPL(Q), ln ratio, KLD, RMS Δp, same top. */
static void kld_chunk_line(FILE *f, const qe_kld_result *r, size_t n_done, int chunk)
{
    qe_kld_stats s;
    kld_stats(&s, r->kld, r->nll_q, r->nll_base, r->dp, r->same_top, n_done, false);
    if (chunk == 1)
        fprintf(f, "\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL "
                   "Divergence              Δp RMS            Same top p\n");
    fprintf(f, "%4d    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%"
               "    %6.3f ± %6.3f %%\n",
            chunk, s.ppl_q, s.ppl_q_unc, s.ln_ratio, s.ln_ratio_unc, s.kld_mean, s.kld_unc,
            100.0 * s.rms_dp, 100.0 * s.rms_dp_unc, 100.0 * s.same_top, 100.0 * s.same_top_unc);
    fflush(f);
}

/* ----------------------------------------------------------- lockstep -- */

/* Exact per-token comparison of two logit rows (double math). */
static void kld_token_exact(const float *lb, const float *lq, int nv, int tok, double *kld,
                            double *nll_q, double *nll_b, double *dp, uint8_t *same)
{
    int ib = 0, iq = 0;
    for (int i = 1; i < nv; i++) {
        if (lb[i] > lb[ib])
            ib = i;
        if (lq[i] > lq[iq])
            iq = i;
    }
    const double mb = lb[ib], mq = lq[iq];
    double sb = 0, sq = 0;
    for (int i = 0; i < nv; i++) {
        sb += exp((double)lb[i] - mb);
        sq += exp((double)lq[i] - mq);
    }
    const double zb = mb + log(sb), zq = mq + log(sq);
    double k = 0;
    for (int i = 0; i < nv; i++) {
        const double lpb = (double)lb[i] - zb, lpq = (double)lq[i] - zq;
        k += exp(lpb) * (lpb - lpq);
    }
    *kld = k;
    *nll_b = zb - (double)lb[tok];
    *nll_q = zq - (double)lq[tok];
    *dp = exp(-*nll_q) - exp(-*nll_b);
    *same = ib == iq;
}

int qe_kld_run(const qe_model *ref, const qe_model *cand, const int32_t *tokens, size_t n_tokens,
               const qe_ppl_opts *opts, qe_kld_result *res, qe_err *err)
{
    memset(res, 0, sizeof *res);
    const int n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : 512;
    const int32_t bos = opts ? opts->bos : -1;
    const int nv = ref->cfg.n_vocab;
    if (cand->cfg.n_vocab != nv)
        return qe_err_set(err, QE_EINVAL, "KL divergence: vocab sizes differ: reference %d, "
                          "candidate %d", nv, cand->cfg.n_vocab);
    if (n_ctx < 4 || n_tokens < (size_t)2 * n_ctx)
        return qe_err_set(err, QE_EINVAL, "KL divergence: the text has %zu tokens; a context of "
                          "%d needs at least %d", n_tokens, n_ctx, 2 * n_ctx);
    size_t n_chunk = n_tokens / (size_t)n_ctx;
    if (opts && opts->n_chunks > 0 && (size_t)opts->n_chunks < n_chunk)
        n_chunk = (size_t)opts->n_chunks;
    for (size_t i = 0; i < n_chunk * (size_t)n_ctx; i++)
        if (tokens[i] < 0 || tokens[i] >= nv)
            return qe_err_set(err, QE_EINVAL, "KL divergence: token %zu = %d outside the vocab "
                              "of %d", i, tokens[i], nv);
    int rc = kld_alloc(res, n_ctx, n_chunk, err);
    if (rc)
        return rc;
    const int first = n_ctx / 2, n_per = res->n_per_chunk;
    qe_infer *ib = make_infer(ref, n_ctx, opts, err);
    qe_infer *iq = ib ? make_infer(cand, n_ctx, opts, err) : NULL;
    const int n_out = n_ctx - first, B = logit_block_rows(n_out, nv);
    float *lb = malloc((size_t)(B + QE_DECODE_MAX_T) * nv * sizeof(float));
    float *lq = malloc((size_t)(B + QE_DECODE_MAX_T) * nv * sizeof(float));
    int32_t *tmp = malloc((size_t)n_ctx * sizeof(int32_t));
    if (!ib || !iq) {
        rc = err ? err->code : QE_EINVAL;
        goto out;
    }
    if (!lb || !lq || !tmp) {
        rc = qe_err_set(err, QE_ENOMEM, "KL divergence: out of memory");
        goto out;
    }
    qe_progress pg;
    if (opts && opts->progress)
        qe_progress_start(&pg, "kld", n_chunk);
    const double t0 = qe_now();
    for (size_t c = 0; c < n_chunk; c++) {
        const int32_t *chunk = tokens + c * n_ctx;
        if ((rc = eval_chunk(ib, chunk, n_ctx, bos, tmp, err)))
            goto out;
        if ((rc = eval_chunk(iq, chunk, n_ctx, bos, tmp, err)))
            goto out;
        for (int r0 = 0, nb, m; r0 < n_per; r0 += nb) {
            nb = next_block(r0, n_out, n_per, B, &m);
            if ((rc = qe_infer_logits(ib, r0, nb, lb, err)) ||
                (rc = qe_infer_logits(iq, r0, nb, lq, err)))
                goto out;
            const size_t o = c * n_per + (size_t)r0;
#pragma omp parallel for num_threads(n_threads_of(opts)) schedule(static) \
    if ((double)m * nv >= (1 << 16))
            for (int j = 0; j < m; j++)
                kld_token_exact(lb + (size_t)j * nv, lq + (size_t)j * nv, nv,
                                chunk[first + 1 + r0 + j], &res->kld[o + j], &res->nll_q[o + j],
                                &res->nll_base[o + j], &res->dp[o + j], &res->same_top[o + j]);
        }
        const size_t o = c * n_per;
        if (opts && opts->log)
            kld_chunk_line(opts->log, res, o + n_per, (int)c + 1);
        if (opts && opts->progress)
            qe_progress_update(&pg, c + 1);
    }
    if (opts && opts->progress)
        qe_progress_end(&pg);
    res->seconds = qe_now() - t0;
    qe_kld_stats_compute(&res->stats, res->kld, res->nll_q, res->nll_base, res->dp, res->same_top,
                         res->n);
out:
    free(lb);
    free(lq);
    free(tmp);
    qe_infer_free(ib);
    qe_infer_free(iq);
    if (rc)
        qe_kld_result_free(res);
    return rc;
}

/* ---------------------------------------------------- llama.cpp base -- */

static uint32_t rd_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float rd_f32(const uint8_t *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t rd_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

int qe_kld_base_open(qe_kld_base *b, const char *path, qe_err *err)
{
    memset(b, 0, sizeof *b);
    b->map.fd = -1;
    qe_strlcpy(b->path, path, sizeof b->path);
    int rc = qe_map_open(&b->map, path, err);
    if (rc)
        return rc;
    const uint8_t *d = b->map.data;
    const size_t n = b->map.nbytes;
    if (n < 20) {
        rc = qe_err_set(err, QE_ETRUNC, "%s: %zu bytes; the header needs 20", path, n);
        goto fail;
    }
    if (memcmp(d, "_logits_", 8) != 0) {
        rc = qe_err_set(err, QE_EMAGIC, "%s: offset 0: expected magic \"_logits_\" (llama.cpp "
                        "--kl-divergence-base file)", path);
        goto fail;
    }
    uint32_t n_ctx = rd_u32(d + 8), n_vocab = rd_u32(d + 12), n_chunk = rd_u32(d + 16);
    if (n_ctx < 4 || n_ctx > (1u << 24)) {
        rc = qe_err_set(err, QE_EFORMAT, "%s: offset 8: n_ctx %u: expected 4..16777216", path,
                        n_ctx);
        goto fail;
    }
    if (n_vocab < 1 || n_vocab > (1u << 24)) {
        rc = qe_err_set(err, QE_EFORMAT, "%s: offset 12: n_vocab %d: expected 1..16777216", path,
                        (int32_t)n_vocab);
        goto fail;
    }
    if (n_chunk > (1u << 24)) {
        rc = qe_err_set(err, QE_ECOUNT, "%s: offset 16: n_chunk %d: expected 0..16777216", path,
                        (int32_t)n_chunk);
        goto fail;
    }
    b->n_ctx = (int)n_ctx;
    b->n_vocab = (int)n_vocab;
    b->n_chunk = (int)n_chunk;
    b->nv = 2 * (((size_t)n_vocab + 1) / 2) + 4;
    uint64_t tok_nbytes, rows, row_nbytes, data_nbytes, total;
    const uint64_t n_per = n_ctx - 1 - n_ctx / 2;
    if (!qe_mul_ok((uint64_t)n_ctx * n_chunk, 4, &tok_nbytes) ||
        !qe_mul_ok(n_per, n_chunk, &rows) || !qe_mul_ok(b->nv, 2, &row_nbytes) ||
        !qe_mul_ok(rows, row_nbytes, &data_nbytes) || !qe_add_ok(20, tok_nbytes, &total) ||
        !qe_add_ok(total, data_nbytes, &total)) {
        rc = qe_err_set(err, QE_EOVERFLOW, "%s: sizes from n_ctx %u, n_vocab %u, n_chunk %u "
                        "overflow", path, n_ctx, n_vocab, n_chunk);
        goto fail;
    }
    if (total > n) {
        rc = qe_err_set(err, QE_ETRUNC, "%s: %zu bytes, but n_ctx %u, n_vocab %u, n_chunk %u "
                        "need %llu (tokens at offset 20, %llu rows of %llu bytes)", path, n,
                        n_ctx, n_vocab, n_chunk, (unsigned long long)total,
                        (unsigned long long)rows, (unsigned long long)row_nbytes);
        goto fail;
    }
    b->tokens = d + 20;
    b->rows = d + 20 + tok_nbytes;
    for (size_t i = 0; i < (size_t)n_ctx * n_chunk; i++) {
        int32_t t = qe_kld_base_token(b, i);
        if (t < 0 || t >= (int32_t)n_vocab) {
            rc = qe_err_set(err, QE_EFORMAT, "%s: offset %zu: token %d outside the vocab of %u",
                            path, 20 + 4 * i, t, n_vocab);
            goto fail;
        }
    }
    return 0;
fail:
    qe_map_close(&b->map);
    memset(&b->map, 0, sizeof b->map);
    b->map.fd = -1;
    return rc;
}

void qe_kld_base_close(qe_kld_base *b)
{
    if (b && b->map.data)
        qe_map_close(&b->map);
    if (b)
        memset(b, 0, sizeof *b);
}

int32_t qe_kld_base_token(const qe_kld_base *b, size_t i)
{
    return (int32_t)rd_u32(b->tokens + 4 * i);
}

/* One scored token against a stored base row, with llama.cpp's float math
 * (perplexity.cpp log_softmax(..., base_log_prob, ...)). */
static void kld_token_base(const float *lg, int nv, const uint8_t *row, int tok, double *kld,
                           double *nll_q, double *nll_b, double *dp, uint8_t *same)
{
    float max_logit = lg[0];
    int imax = 0;
    for (int i = 1; i < nv; i++)
        if (lg[i] > max_logit) {
            max_logit = lg[i];
            imax = i;
        }
    double sum_exp = 0.0;
    for (int i = 0; i < nv; i++)
        sum_exp += expf(lg[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    const float scale = rd_f32(row), min_log_prob = rd_f32(row + 4);
    const uint8_t *codes = row + 8;
    const float nll = max_logit + log_sum_exp - lg[tok];
    const float nll_base = -(scale * rd_u16(codes + 2 * (size_t)tok) + min_log_prob);
    max_logit += log_sum_exp;
    double sum = 0;
    int imax_base = -1;
    float p_log_base_max = 0;
    for (int i = 0; i < nv; i++) {
        const float p_log_base = scale * rd_u16(codes + 2 * (size_t)i) + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if (p_log_base > -16.f) {
            const float p_base = expf(p_log_base);
            sum += p_base * (p_log_base - lg[i] + max_logit);
        }
    }
    *kld = sum;
    *nll_q = nll;
    *nll_b = nll_base;
    const float p_diff = expf(-nll) - expf(-nll_base);
    *dp = p_diff;
    *same = imax == imax_base;
}

int qe_kld_run_base(const qe_model *cand, const qe_kld_base *base, const qe_ppl_opts *opts,
                    qe_kld_result *res, qe_err *err)
{
    memset(res, 0, sizeof *res);
    const int nv = base->n_vocab, n_ctx = base->n_ctx;
    const int32_t bos = opts ? opts->bos : -1;
    if (cand->cfg.n_vocab != nv)
        return qe_err_set(err, QE_EINVAL, "%s: base n_vocab %d, model %s has %d", base->path, nv,
                          cand->path, cand->cfg.n_vocab);
    size_t n_chunk = (size_t)base->n_chunk;
    if (opts && opts->n_chunks > 0 && (size_t)opts->n_chunks < n_chunk)
        n_chunk = (size_t)opts->n_chunks;
    int rc = kld_alloc(res, n_ctx, n_chunk, err);
    if (rc)
        return rc;
    const int first = n_ctx / 2, n_per = res->n_per_chunk;
    qe_infer *iq = make_infer(cand, n_ctx, opts, err);
    const int n_out = n_ctx - first, B = logit_block_rows(n_out, nv);
    float *lq = malloc((size_t)(B + QE_DECODE_MAX_T) * nv * sizeof(float));
    int32_t *chunk = malloc((size_t)n_ctx * sizeof(int32_t));
    int32_t *tmp = malloc((size_t)n_ctx * sizeof(int32_t));
    if (!iq) {
        rc = err ? err->code : QE_EINVAL;
        goto out;
    }
    if (!lq || !chunk || !tmp) {
        rc = qe_err_set(err, QE_ENOMEM, "KL divergence: out of memory");
        goto out;
    }
    qe_progress pg;
    if (opts && opts->progress)
        qe_progress_start(&pg, "kld", n_chunk);
    const double t0 = qe_now();
    const size_t row_nbytes = base->nv * 2;
    for (size_t c = 0; c < n_chunk; c++) {
        for (int i = 0; i < n_ctx; i++)
            chunk[i] = qe_kld_base_token(base, c * n_ctx + i);
        if ((rc = eval_chunk(iq, chunk, n_ctx, bos, tmp, err)))
            goto out;
        for (int r0 = 0, nb, m; r0 < n_per; r0 += nb) {
            nb = next_block(r0, n_out, n_per, B, &m);
            if ((rc = qe_infer_logits(iq, r0, nb, lq, err)))
                goto out;
            const size_t o = c * n_per + (size_t)r0;
#pragma omp parallel for num_threads(n_threads_of(opts)) schedule(static) \
    if ((double)m * nv >= (1 << 16))
            for (int j = 0; j < m; j++)
                kld_token_base(lq + (size_t)j * nv, nv, base->rows + (o + j) * row_nbytes,
                               chunk[first + 1 + r0 + j], &res->kld[o + j], &res->nll_q[o + j],
                               &res->nll_base[o + j], &res->dp[o + j], &res->same_top[o + j]);
        }
        const size_t o = c * n_per;
        if (opts && opts->log)
            kld_chunk_line(opts->log, res, o + n_per, (int)c + 1);
        if (opts && opts->progress)
            qe_progress_update(&pg, c + 1);
    }
    if (opts && opts->progress)
        qe_progress_end(&pg);
    res->seconds = qe_now() - t0;
    qe_kld_stats_compute(&res->stats, res->kld, res->nll_q, res->nll_base, res->dp, res->same_top,
                         res->n);
out:
    free(lq);
    free(chunk);
    free(tmp);
    qe_infer_free(iq);
    if (rc)
        qe_kld_result_free(res);
    return rc;
}
