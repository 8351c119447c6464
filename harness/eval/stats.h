/*
 * stats.h: the statistics behind every number qeval prints: mean with its
 * standard error, Wilson intervals for accuracies, and paired comparisons
 * of a variant against the reference on the same items (McNemar's exact
 * test for 0/1 outcomes, a paired bootstrap for NLL / KLD differences).
 *
 * Power and multiple comparisons: the minimal detectable effect (MDE) at a
 * given power for McNemar's exact test and for a paired mean difference,
 * the Wilcoxon signed-rank test, and Holm / Benjamini-Hochberg adjusted
 * p-values.  tests/test_stats.c validates the tests' type-I error and the
 * MDEs by simulation.
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
 * capped at 1, with the +1 correction (count+1)/(B+1); when no resample
 * falls on the other side of 0 it is the normal tail 2 Phi(-|delta|/se)
 * of the bootstrap distribution (if smaller than 2/(B+1)), so strong
 * effects survive multiple-comparison adjustment; never below the exact
 * sign test's floor 2 * 0.5^n (one item is never significant).  Allocates a
 * scratch array of n_resamples doubles.  Errors: QE_EINVAL (n == 0,
 * n_resamples < 1), QE_ENOMEM.
 */
int qe_stats_paired_bootstrap(const double *ref, const double *cand, size_t n, int n_resamples,
                              uint64_t seed, qe_paired *out, qe_err *err);

/* Paired accuracy comparison: delta = acc(cand) - acc(ref), se from the
 * paired differences (closed form), p from McNemar's exact test. */
void qe_stats_paired_acc(const unsigned char *ref_ok, const unsigned char *cand_ok, size_t n,
                         qe_paired *out);

/* Paired Wilcoxon signed-rank test on cand - ref (zero differences
 * dropped, tied |differences| get average ranks).  p is exact (the
 * permutation distribution of the signed ranks, ties included) for up to
 * 50 non-zero differences, else the normal approximation with the tie
 * correction and a continuity correction.  delta = mean(cand - ref), se =
 * sd / sqrt(n), lo/hi = delta -+ 1.96 se.  Errors: QE_EINVAL (n == 0),
 * QE_ENOMEM. */
int qe_stats_wilcoxon(const double *ref, const double *cand, size_t n, qe_paired *out,
                      qe_err *err);

/* Standard normal CDF and its inverse (p in (0,1); 0 -> -inf, 1 -> +inf). */
double qe_stats_norm_cdf(double z);
double qe_stats_norm_quantile(double p);

/* Power of McNemar's exact two-sided test at level alpha (reject when
 * p < alpha) on n pairs whose discordant share is psi (0..1), when the
 * true accuracy difference is delta (0 <= delta <= psi): a discordant pair
 * goes one way with probability (1 + delta/psi)/2.  Exact (binomial sums)
 * while n*psi <= 1000, else the normal approximation of Connor (1987). */
double qe_stats_mcnemar_power(size_t n, double psi, double delta, double alpha);

/* Minimal detectable accuracy difference (a proportion, 0..1) of McNemar's
 * exact test at level alpha with the given power (0.8), for n items of
 * which n_discordant flipped in the observed comparison: the smallest
 * delta whose power reaches `power` when the discordant share is
 * max(n_discordant/n, delta) (a change of delta flips at least delta*n
 * items).  INFINITY when even delta = 1 does not reach it (too few items:
 * n < 6 at alpha 0.05).  n == 0 gives INFINITY. */
double qe_stats_mde_mcnemar(size_t n, size_t n_discordant, double alpha, double power);

/* Minimal detectable mean difference of a paired continuous measure, in
 * its units: (z_{1-alpha/2} + z_power) * sd_diff / sqrt(n), the normal
 * (large-sample) power point of the paired bootstrap / z test.  n == 0,
 * sd_diff NaN, or so few items that the bootstrap's floor 2 * 0.5^n is not
 * below alpha (n < 6 at 0.05) give INFINITY. */
double qe_stats_mde_paired(size_t n, double sd_diff, double alpha, double power);

/* Multiple-comparison adjustment of m p-values (adj may alias p). */
typedef enum qe_adjust {
    QE_ADJUST_HOLM = 0, /* family-wise error (Holm 1979 step-down), the default */
    QE_ADJUST_BH = 1,   /* false-discovery rate (Benjamini-Hochberg 1995 step-up) */
    QE_ADJUST_NONE = 2, /* per comparison */
} qe_adjust;
/* Holm: sort ascending, adj(i) = max over j <= i of min(1, (m - j + 1) p(j)).
 * BH: adj(i) = min over j >= i of min(1, m p(j) / j).  NaN p-values are left
 * NaN and do not count in m.  Errors: QE_ENOMEM. */
int qe_stats_adjust_p(const double *p, size_t m, qe_adjust method, double *adj, qe_err *err);
/* "Holm (family-wise)", "Benjamini-Hochberg (FDR)", "none (per comparison)". */
const char *qe_stats_adjust_name(qe_adjust method);
/* "holm" | "bh" | "none" -> method; -1 if unknown. */
int qe_stats_adjust_parse(const char *s);

/* splitmix64 step (exposed for tests and deterministic shuffles). */
uint64_t qe_stats_rng_next(uint64_t *state);

#endif /* QE_STATS_H */
