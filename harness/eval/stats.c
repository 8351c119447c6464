/*
 * stats.c: mean/stderr, Wilson interval, McNemar's exact test and the
 * paired bootstrap (see stats.h).  Pure functions; the only allocation is
 * the bootstrap's scratch array.
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    /* No resample reached the other side of 0: the count says only "p <
     * 2/(B+1)", a resolution limit that multiple-comparison control would
     * multiply (Holm over 30 checks turns every 0.001 into 0.03).  Below it
     * use the normal tail of the bootstrap distribution, 2 Phi(-|delta|/se). */
    if (tail == 0 && out->se > 0) {
        double pn = erfc(fabs(out->delta) / out->se / sqrt(2.0));
        if (pn < p)
            p = pn;
    } else if (tail == 0) {
        p = 0; /* every resample equal and non-zero: the sign-test floor below */
    }
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

/* ------------------------------------------------------------ Wilcoxon */

typedef struct absd {
    double a;   /* |cand - ref| */
    int pos;    /* cand > ref */
} absd;

static int cmp_absd(const void *pa, const void *pb)
{
    double x = ((const absd *)pa)->a, y = ((const absd *)pb)->a;
    return (x > y) - (x < y);
}

int qe_stats_wilcoxon(const double *ref, const double *cand, size_t n, qe_paired *out,
                      qe_err *err)
{
    if (n == 0)
        return qe_err_set(err, QE_EINVAL, "Wilcoxon test: need n > 0 items (got n=0)");
    absd *d = malloc(n * sizeof *d);
    double *diff = malloc(n * sizeof *diff);
    if (!d || !diff) {
        free(d), free(diff);
        return qe_err_set(err, QE_ENOMEM, "Wilcoxon test: out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        diff[i] = cand[i] - ref[i];
        if (diff[i] != 0)
            d[m++] = (absd){fabs(diff[i]), diff[i] > 0};
    }
    double mean, se;
    qe_stats_mean_se(diff, n, &mean, &se);
    free(diff);
    out->n = n;
    out->n_resamples = 0;
    out->delta = mean;
    out->se = se;
    out->lo = mean - 1.96 * se;
    out->hi = mean + 1.96 * se;
    out->p = 1.0;
    if (m == 0) {
        free(d);
        return 0;
    }
    qsort(d, m, sizeof *d, cmp_absd);
    /* doubled average ranks (integers): a tie group at ranks a..b gets a+b */
    long long *r2 = malloc(m * sizeof *r2);
    if (!r2) {
        free(d);
        return qe_err_set(err, QE_ENOMEM, "Wilcoxon test: out of memory");
    }
    long long w2 = 0;
    double tie = 0;
    for (size_t i = 0; i < m;) {
        size_t j = i;
        while (j + 1 < m && d[j + 1].a == d[i].a)
            j++;
        double t = (double)(j - i + 1);
        tie += t * t * t - t;
        for (size_t k = i; k <= j; k++) {
            r2[k] = (long long)(i + 1) + (long long)(j + 1);
            if (d[k].pos)
                w2 += r2[k];
        }
        i = j + 1;
    }
    double p;
    if (m <= 50) {
        /* exact: the 2^m equally likely sign patterns, counted by the sum of
         * the doubled ranks of the positive ones (counts < 2^51: exact) */
        size_t tot = (size_t)(m * (m + 1));
        double *cnt = calloc(tot + 1, sizeof *cnt);
        if (!cnt) {
            free(d), free(r2);
            return qe_err_set(err, QE_ENOMEM, "Wilcoxon test: out of memory");
        }
        cnt[0] = 1;
        size_t hi = 0;
        for (size_t k = 0; k < m; k++) {
            size_t r = (size_t)r2[k];
            for (size_t s = hi + 1; s-- > 0;)
                if (cnt[s] != 0)
                    cnt[s + r] += cnt[s];
            hi += r;
        }
        double le = 0, ge = 0, all = ldexp(1.0, (int)m);
        for (size_t s = 0; s <= tot; s++) {
            if ((long long)s <= w2)
                le += cnt[s];
            if ((long long)s >= w2)
                ge += cnt[s];
        }
        free(cnt);
        p = 2.0 * fmin(le, ge) / all;
    } else {
        double mm = (double)m, w = (double)w2 / 2.0;
        double e = mm * (mm + 1) / 4.0;
        double var = mm * (mm + 1) * (2 * mm + 1) / 24.0 - tie / 48.0;
        double z = var > 0 ? (fabs(w - e) - 0.5) / sqrt(var) : 0;
        p = z > 0 ? erfc(z / sqrt(2.0)) : 1.0;
    }
    out->p = p > 1 ? 1 : p;
    free(d);
    free(r2);
    return 0;
}

/* -------------------------------------------------------------- power */

double qe_stats_norm_cdf(double z)
{
    return 0.5 * erfc(-z / sqrt(2.0));
}

double qe_stats_norm_quantile(double p)
{
    if (!(p > 0))
        return p == 0 ? -INFINITY : NAN;
    if (!(p < 1))
        return p == 1 ? INFINITY : NAN;
    /* bisection on the CDF: 200 halvings of [-40, 40] reach the double
     * spacing; simple, and called a handful of times per report */
    double lo = -40, hi = 40;
    for (int i = 0; i < 200 && hi - lo > 0; i++) {
        double mid = 0.5 * (lo + hi);
        if (mid == lo || mid == hi)
            break;
        if (qe_stats_norm_cdf(mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* Largest k with McNemar p(k, D - k) < alpha, or -1: the rejection region
 * min(b, c) <= k.  The tail is summed exactly as qe_stats_mcnemar_exact
 * sums it, so the region is that function's, bit for bit. */
static long long mcnemar_kmax(size_t D, double alpha)
{
    if (D == 0)
        return -1;
    double lfn = lgamma((double)D + 1), ln2n = (double)D * log(2.0);
    double tail = 0;
    long long k = -1;
    for (size_t i = 0; 2 * i < D; i++) {
        tail += exp(lfn - lgamma((double)i + 1) - lgamma((double)(D - i) + 1) - ln2n);
        double p = 2 * tail;
        if ((p > 1 ? 1 : p) < alpha)
            k = (long long)i;
        else
            break;
    }
    return k;
}

/* P(X <= k), X ~ Binomial(D, q), 0 < q < 1. */
static double binom_cdf(size_t D, double q, long long k)
{
    if (k < 0)
        return 0;
    double lfn = lgamma((double)D + 1), lq = log(q), l1q = log1p(-q), s = 0;
    for (long long i = 0; i <= k && (size_t)i <= D; i++)
        s += exp(lfn - lgamma((double)i + 1) - lgamma((double)(D - (size_t)i) + 1) +
                 (double)i * lq + (double)(D - (size_t)i) * l1q);
    return s;
}

double qe_stats_mcnemar_power(size_t n, double psi, double delta, double alpha)
{
    if (n == 0 || !(psi > 0))
        return 0;
    if (psi > 1)
        psi = 1;
    delta = fabs(delta);
    if (delta > psi)
        delta = psi;
    double nn = (double)n;
    if (nn * psi > 1000) {
        double z = qe_stats_norm_quantile(1 - alpha / 2);
        double v = psi - delta * delta;
        if (v <= 0)
            return 1;
        return qe_stats_norm_cdf((delta * sqrt(nn) - z * sqrt(psi)) / sqrt(v));
    }
    /* q = P(a discordant pair goes the candidate's way) */
    double q = 0.5 * (1 + delta / psi);
    double mu = nn * psi, sd = sqrt(nn * psi * (1 - psi));
    double dlo = floor(mu - 12 * sd - 12), dhi = ceil(mu + 12 * sd + 12);
    size_t D0 = dlo < 0 ? 0 : (size_t)dlo, D1 = dhi > nn ? n : (size_t)dhi;
    double lfn = lgamma(nn + 1), lp = log(psi), l1p = log1p(-psi), pw = 0;
    for (size_t D = D0; D <= D1; D++) {
        double pd;
        if (psi >= 1)
            pd = D == n ? 1 : 0;
        else
            pd = exp(lfn - lgamma((double)D + 1) - lgamma((double)(n - D) + 1) + (double)D * lp +
                     (double)(n - D) * l1p);
        if (pd < 1e-300)
            continue;
        long long k = mcnemar_kmax(D, alpha);
        if (k < 0)
            continue;
        double rej;
        if (q >= 1)
            rej = 1; /* b = 0 always */
        else /* P(c <= k) + P(b <= k), disjoint since k < D/2 */
            rej = binom_cdf(D, q, k) + binom_cdf(D, 1 - q, k);
        pw += pd * rej;
    }
    return pw > 1 ? 1 : pw;
}

double qe_stats_mde_mcnemar(size_t n, size_t n_discordant, double alpha, double power)
{
    if (n == 0)
        return INFINITY;
    double psi0 = (double)n_discordant / (double)n;
#define PW(dd) qe_stats_mcnemar_power(n, fmax(psi0, (dd)), (dd), alpha)
    if (PW(1.0) < power)
        return INFINITY;
    double lo = 0, hi = 1;
    for (int i = 0; i < 60 && hi - lo > 1e-12; i++) {
        double mid = 0.5 * (lo + hi);
        if (PW(mid) >= power)
            hi = mid;
        else
            lo = mid;
    }
#undef PW
    return hi;
}

double qe_stats_mde_paired(size_t n, double sd_diff, double alpha, double power)
{
    if (n == 0 || !isfinite(sd_diff))
        return INFINITY;
    /* the paired bootstrap's p never goes below the sign test's 2 * 0.5^n */
    if (n < 64 && ldexp(1.0, 1 - (int)n) >= alpha)
        return INFINITY;
    return (qe_stats_norm_quantile(1 - alpha / 2) + qe_stats_norm_quantile(power)) * sd_diff /
           sqrt((double)n);
}

/* ---------------------------------------------------- multiple testing */

typedef struct pidx {
    double p;
    size_t i;
} pidx;

static int cmp_pidx(const void *pa, const void *pb)
{
    const pidx *a = pa, *b = pb;
    if (a->p != b->p)
        return a->p < b->p ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

int qe_stats_adjust_p(const double *p, size_t m, qe_adjust method, double *adj, qe_err *err)
{
    pidx *s = malloc((m ? m : 1) * sizeof *s);
    if (!s)
        return qe_err_set(err, QE_ENOMEM, "p-value adjustment: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (!isnan(p[i]))
            s[k++] = (pidx){p[i], i};
    qsort(s, k, sizeof *s, cmp_pidx);
    for (size_t i = 0; i < m; i++)
        if (isnan(p[i]))
            adj[i] = NAN;
    double kk = (double)k;
    if (method == QE_ADJUST_HOLM) {
        double run = 0;
        for (size_t j = 0; j < k; j++) {
            double v = fmin(1.0, (kk - (double)j) * s[j].p);
            run = fmax(run, v);
            adj[s[j].i] = run;
        }
    } else if (method == QE_ADJUST_BH) {
        double run = 1;
        for (size_t j = k; j-- > 0;) {
            double v = fmin(1.0, kk * s[j].p / (double)(j + 1));
            run = fmin(run, v);
            adj[s[j].i] = run;
        }
    } else {
        for (size_t j = 0; j < k; j++)
            adj[s[j].i] = s[j].p;
    }
    free(s);
    return 0;
}

const char *qe_stats_adjust_name(qe_adjust method)
{
    switch (method) {
    case QE_ADJUST_HOLM: return "Holm (family-wise)";
    case QE_ADJUST_BH: return "Benjamini-Hochberg (FDR)";
    default: return "none (per comparison)";
    }
}

int qe_stats_adjust_parse(const char *s)
{
    if (!strcmp(s, "holm"))
        return QE_ADJUST_HOLM;
    if (!strcmp(s, "bh") || !strcmp(s, "fdr"))
        return QE_ADJUST_BH;
    if (!strcmp(s, "none"))
        return QE_ADJUST_NONE;
    return -1;
}
