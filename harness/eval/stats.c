/*
 * stats.c: mean/stderr, Wilson interval, McNemar's exact test and the
 * paired bootstrap (see stats.h).  Pure functions; the only allocation is
 * the bootstrap's scratch array.
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

void qe_stats_mean_se(const double *x, size_t n, double *mean, double *se)
{
    if (n == 0) {
        *mean = NAN;
        *se = NAN;
        return;
    }
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    double m = s / (double)n;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *se = n > 1 ? sqrt(ss / (double)(n - 1)) / sqrt((double)n) : 0.0;
}

void qe_stats_wilson(size_t k, size_t n, double z, double *lo, double *hi)
{
    if (n == 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1 + z2 / nn;
    double centre = (p + z2 / (2 * nn)) / denom;
    double half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
}

double qe_stats_mcnemar_exact(size_t b, size_t c)
{
    size_t n = b + c;
    if (n == 0)
        return 1.0;
    size_t k = b < c ? b : c;
    /* P(X <= k), X ~ Bin(n, 1/2), summed in log space so n in the
     * thousands neither overflows nor underflows term by term. */
    double lfn = lgamma((double)n + 1), ln2n = (double)n * log(2.0);
    double tail = 0;
    for (size_t i = 0; i <= k; i++)
        tail += exp(lfn - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - ln2n);
    double p = 2 * tail;
    return p > 1 ? 1 : p;
}

uint64_t qe_stats_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int qe_stats_paired_bootstrap(const double *ref, const double *cand, size_t n, int n_resamples,
                              uint64_t seed, qe_paired *out, qe_err *err)
{
    if (n == 0 || n_resamples < 1)
        return qe_err_set(err, QE_EINVAL, "paired bootstrap: need n > 0 items and >= 1 "
                          "resample (got n=%zu, resamples=%d)", n, n_resamples);
    double *deltas = malloc((size_t)n_resamples * sizeof *deltas);
    if (!deltas)
        return qe_err_set(err, QE_ENOMEM, "paired bootstrap: out of memory");
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d += cand[i] - ref[i];
    out->n = n;
    out->delta = d / (double)n;
    out->n_resamples = n_resamples;

    uint64_t st = seed;
    size_t n_le = 0, n_ge = 0;
    double s = 0, ss = 0;
    for (int r = 0; r < n_resamples; r++) {
        double acc = 0;
        for (size_t i = 0; i < n; i++) {
            /* Lemire-free modulo: bias is < n / 2^64, negligible. */
            size_t j = (size_t)(qe_stats_rng_next(&st) % n);
            acc += cand[j] - ref[j];
        }
        double m = acc / (double)n;
        deltas[r] = m;
        s += m;
        n_le += m <= 0;
        n_ge += m >= 0;
    }
    double mean = s / n_resamples;
    for (int r = 0; r < n_resamples; r++)
        ss += (deltas[r] - mean) * (deltas[r] - mean);
    out->se = n_resamples > 1 ? sqrt(ss / (n_resamples - 1)) : 0;
    qsort(deltas, (size_t)n_resamples, sizeof *deltas, cmp_double);
    size_t ilo = (size_t)floor(0.025 * (n_resamples - 1));
    size_t ihi = (size_t)ceil(0.975 * (n_resamples - 1));
    out->lo = deltas[ilo];
    out->hi = deltas[ihi];
    size_t tail = n_le < n_ge ? n_le : n_ge;
    double p = 2.0 * ((double)tail + 1) / ((double)n_resamples + 1);
    /* With few items every resample can share one sign (n = 1 always
     * does), which would read as p = 2/(B+1).  No paired test on n items
     * can be surer than the exact sign test with all n signs agreeing,
     * 2 * 0.5^n, so that is the floor (n = 1 -> 1, n = 5 -> 0.0625). */
    const double floor_p = n < 1024 ? ldexp(1.0, 1 - (int)n) : 0.0;
    if (p < floor_p)
        p = floor_p;
    out->p = p > 1 ? 1 : p;
    free(deltas);
    return 0;
}

void qe_stats_paired_acc(const unsigned char *ref_ok, const unsigned char *cand_ok, size_t n,
                         qe_paired *out)
{
    size_t b = 0, c = 0;
    double *diff = malloc((n ? n : 1) * sizeof *diff);
    for (size_t i = 0; i < n; i++) {
        int r = ref_ok[i] != 0, k = cand_ok[i] != 0;
        b += r && !k;
        c += !r && k;
        if (diff)
            diff[i] = (double)(k - r);
    }
    out->n = n;
    out->n_resamples = 0;
    out->delta = n ? ((double)c - (double)b) / (double)n : NAN;
    double m = 0, se = NAN;
    if (diff)
        qe_stats_mean_se(diff, n, &m, &se);
    out->se = se;
    out->lo = out->delta - 1.96 * se;
    out->hi = out->delta + 1.96 * se;
    out->p = qe_stats_mcnemar_exact(b, c);
    free(diff);
}
