/*
 * stats.h: the statistics behind every number qeval prints: mean with its
 * standard error, Wilson intervals for accuracies, and paired comparisons
 * of a variant against the reference on the same items (McNemar's exact
 * test for 0/1 outcomes, a paired bootstrap for NLL / KLD differences).
 *
 * Everything is deterministic: the bootstrap uses its own seeded PRNG
 * (splitmix64), so the same inputs and seed give the same bits.
 * Must not hold: I/O, task logic, SQLite.
 */
#ifndef QE_STATS_H
#define QE_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

/* Mean and standard error of the mean: sample stddev (n-1 divisor) / sqrt(n),
 * lm-eval's closed form for mean-aggregated metrics.  n == 0 gives NaN mean
 * and stderr; n == 1 gives stderr 0. */
void qe_stats_mean_se(const double *x, size_t n, double *mean, double *se);

/* Wilson score interval for k successes of n at normal quantile z (1.96 for
 * 95 %).  n == 0 gives [0, 1]. */
void qe_stats_wilson(size_t k, size_t n, double z, double *lo, double *hi);

/* McNemar's exact test on paired 0/1 outcomes.  b = items the reference got
 * right and the candidate wrong, c = the reverse.  Two-sided p-value of the
 * exact binomial test on the discordant pairs: min(1, 2 * P(X <= min(b,c)))
 * with X ~ Binomial(b + c, 1/2).  b + c == 0 gives p = 1. */
double qe_stats_mcnemar_exact(size_t b, size_t c);

/* Result of a paired comparison (candidate - reference). */
typedef struct qe_paired {
    size_t n;           /* number of paired items */
    double delta;       /* mean(cand - ref) */
    double se;          /* bootstrap stddev of the resampled mean delta */
    double lo, hi;      /* 95 % percentile interval of the resampled delta */
    double p;           /* two-sided p-value (see below) */
    int n_resamples;
} qe_paired;

/*
 * Paired bootstrap for the mean difference of per-item values (e.g. NLL or
 * KLD per item): resample item indices with replacement n_resamples times
 * (>= 1000 recommended) with a splitmix64 stream seeded by `seed`.  p is the
 * two-sided bootstrap p-value 2 * min(P*(delta <= 0), P*(delta >= 0)),
 * capped at 1, with the +1 correction (count+1)/(B+1), and never below
 * the exact sign test's floor 2 * 0.5^n (one item is never significant).  Allocates a
 * scratch array of n_resamples doubles.  Errors: QE_EINVAL (n == 0,
 * n_resamples < 1), QE_ENOMEM.
 */
int qe_stats_paired_bootstrap(const double *ref, const double *cand, size_t n, int n_resamples,
                              uint64_t seed, qe_paired *out, qe_err *err);

/* Paired accuracy comparison: delta = acc(cand) - acc(ref), se from the
 * paired differences (closed form), p from McNemar's exact test. */
void qe_stats_paired_acc(const unsigned char *ref_ok, const unsigned char *cand_ok, size_t n,
                         qe_paired *out);

/* splitmix64 step (exposed for tests and deterministic shuffles). */
uint64_t qe_stats_rng_next(uint64_t *state);

#endif /* QE_STATS_H */
