/*
 * ppl.h: perplexity and KL-divergence protocols on top of the inference
 * core, as a library (the `ppl` command and the `run` command use it).
 *
 * Perplexity = llama-perplexity's default mode (b4747):
 *   tokens = the whole text tokenized once (BOS first if the vocab adds it);
 *   n_chunk = n_tokens / n_ctx (capped by n_chunks); chunk i = tokens
 *   [i*n_ctx, (i+1)*n_ctx), KV cache cleared per chunk, its first token
 *   replaced by BOS (when bos >= 0); the logits at positions
 *   first..n_ctx-2 (first = n_ctx/2) score the tokens first+1..n_ctx-1:
 *   n_ctx-1-n_ctx/2 tokens per chunk.  nll = -log_softmax (max-subtracted,
 *   double sum).  PPL = exp(mean nll), +/- PPL*sqrt((E[nll^2]-E[nll]^2)/(N-1)).
 *
 * KL divergence, two sources for the base distribution:
 *  - lockstep (qe_kld_run): reference and candidate run chunk by chunk on
 *    the same tokens, both log-softmaxes exact (f32 logits, double math),
 *    no file.  KLD(base||cand) = sum_i p_b(i) (log p_b(i) - log p_c(i)) over
 *    the whole vocabulary.  Error = f32 rounding of the two forward passes
 *    only; memory = two models + two KV caches + n_ctx/2 logit rows each.
 *  - llama.cpp's --kl-divergence-base file (qe_kld_run_base): base rows
 *    stored as 16-bit codes clamped 16 nats below the top logit; the
 *    per-token math then follows llama.cpp exactly (float nll, terms with
 *    base log-prob <= -16 dropped), so its printed statistics reproduce.
 *
 * Ownership: result structs own their arrays; free with the _free calls.
 */
#ifndef QE_PPL_H
#define QE_PPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../util/common.h"

struct qe_model;

typedef struct qe_ppl_opts {
    int n_ctx;       /* chunk length in tokens (default 512) */
    int n_chunks;    /* at most this many chunks; <= 0: all */
    int n_threads;   /* 0 = OpenMP default */
    int32_t bos;     /* id written over each chunk's first token; -1 = none */
    FILE *log;       /* running per-chunk lines (llama.cpp layout) or NULL */
    bool progress;   /* qe_progress bar on stderr */
    int numerics;    /* QE_NUMERICS_EXACT (0, default) or QE_NUMERICS_LLAMACPP (infer.h);
                        lockstep KLD runs both models in this mode */
} qe_ppl_opts;

typedef struct qe_ppl_result {
    int n_ctx, n_chunks;
    int n_per_chunk;    /* n_ctx - 1 - n_ctx/2 */
    size_t n_scored;    /* n_chunks * n_per_chunk */
    double *nll;        /* (n_scored) per-token negative log-likelihood, nats */
    int32_t *target;    /* (n_scored) the scored token ids */
    double *chunk_ppl;  /* (n_chunks) running PPL after chunk i ("[i+1]" lines) */
    double mean_nll, ppl, ppl_stderr;
    double seconds;     /* wall time of the evaluation */
    uint64_t core_nbytes; /* memory of the core + logit rows (not weights) */
} qe_ppl_result;

/* Perplexity of model m over tokens (already tokenized, BOS included as the
 * tokenizer adds it).  QE_EINVAL if fewer than 2*n_ctx tokens (as llama.cpp). */
int qe_ppl_run(const struct qe_model *m, const int32_t *tokens, size_t n_tokens,
               const qe_ppl_opts *opts, qe_ppl_result *res, qe_err *err);
void qe_ppl_result_free(qe_ppl_result *r);

/* Everything llama.cpp's --kl-divergence prints, plus the 95/90 % KLD
 * percentiles that b4747 mislabels (it prints its 99.0 % line twice). */
typedef struct qe_kld_stats {
    size_t count;
    double ppl_q, ppl_q_unc, ppl_base, ppl_base_unc;
    double cor;                       /* Cor(ln PPL(Q), ln PPL(base)), fraction */
    double ln_ratio, ln_ratio_unc;    /* Mean ln(PPL(Q)/PPL(base)) */
    double ratio, ratio_unc;          /* Mean PPL(Q)/PPL(base) */
    double diff, diff_unc;            /* Mean PPL(Q)-PPL(base) */
    double kld_mean, kld_unc;
    double kld_max, kld_p999, kld_p99, kld_p95, kld_p90, kld_median, kld_p10, kld_p05, kld_p01,
        kld_min;
    double dp_mean, dp_unc;           /* Δp as fractions (printed as %) */
    double dp_max, dp_p999, dp_p99, dp_p95, dp_p90, dp_p75, dp_median, dp_p25, dp_p10, dp_p05,
        dp_p01, dp_p001, dp_min;
    double rms_dp, rms_dp_unc;
    double same_top, same_top_unc;    /* fraction */
} qe_kld_stats;

typedef struct qe_kld_result {
    int n_ctx, n_chunks, n_per_chunk;
    size_t n;            /* scored tokens */
    double *kld;         /* (n) per-token KLD(base || cand), nats */
    double *nll_q;       /* (n) candidate nll */
    double *nll_base;    /* (n) base nll */
    double *dp;          /* (n) p_cand(target) - p_base(target) */
    uint8_t *same_top;   /* (n) 1 if both argmaxes agree */
    qe_kld_stats stats;
    double seconds;
} qe_kld_result;

/* Lockstep: reference `ref` and candidate `cand` over the same tokens
 * (vocab sizes must agree). */
int qe_kld_run(const struct qe_model *ref, const struct qe_model *cand, const int32_t *tokens,
               size_t n_tokens, const qe_ppl_opts *opts, qe_kld_result *res, qe_err *err);

/* llama.cpp --kl-divergence-base file (mapped, validated):
 *   "_logits_" | u32 n_ctx | i32 n_vocab | i32 n_chunk | i32 tokens[n_chunk*n_ctx] |
 *   n_chunk*(n_ctx-1-n_ctx/2) rows of nv = 2*((n_vocab+1)/2)+4 u16:
 *   f32 scale, f32 min_log_prob, n_vocab u16 codes (+pad); log p = scale*code + min. */
typedef struct qe_kld_base {
    qe_map map;
    char path[512];
    int n_ctx, n_vocab, n_chunk;
    size_t nv;               /* u16 words per row */
    const uint8_t *tokens;   /* i32 LE x n_chunk*n_ctx (possibly unaligned) */
    const uint8_t *rows;     /* row data */
} qe_kld_base;

int qe_kld_base_open(qe_kld_base *b, const char *path, qe_err *err);
void qe_kld_base_close(qe_kld_base *b);
int32_t qe_kld_base_token(const qe_kld_base *b, size_t i);

/* Candidate against a base file; opts->n_ctx is ignored (the file's). */
int qe_kld_run_base(const struct qe_model *cand, const qe_kld_base *base, const qe_ppl_opts *opts,
                    qe_kld_result *res, qe_err *err);
void qe_kld_result_free(qe_kld_result *r);

/* Summary statistics of n per-token values (llama.cpp's formulas: means
 * with +/- sqrt((E[x^2]-E[x]^2)/(n-1)), 0 when n <= 10; percentiles by
 * linear interpolation at p*(n-1); median = mean of the middle two). */
void qe_kld_stats_compute(qe_kld_stats *s, const double *kld, const double *nll_q,
                          const double *nll_base, const double *dp, const uint8_t *same_top,
                          size_t n);
/* The three statistics blocks in llama.cpp's layout. */
void qe_kld_stats_print(FILE *f, const qe_kld_stats *s);

#endif /* QE_PPL_H */
