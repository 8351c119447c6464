/*
 * test_stats.c: harness/eval/stats against values computed by hand (each
 * computation is written out beside its check).
 */
#include "../harness/eval/stats.h"
#include "test.h"

TEST(mean_se_hand)
{
    /* {1,0,1,1}: mean 3/4; deviations .25,-.75,.25,.25; sum sq = .75;
     * sample var = .75/3 = .25; sd = .5; se = .5/sqrt(4) = .25 */
    double x[] = {1, 0, 1, 1}, m, se;
    qe_stats_mean_se(x, 4, &m, &se);
    CHECKF(fabs(m - 0.75) < 1e-15, "m=%g", m);
    CHECKF(fabs(se - 0.25) < 1e-15, "se=%g", se);
    /* one item: stderr 0; none: NaN */
    qe_stats_mean_se(x, 1, &m, &se);
    CHECK(m == 1 && se == 0);
    qe_stats_mean_se(x, 0, &m, &se);
    CHECK(isnan(m) && isnan(se));
}

TEST(wilson_hand)
{
    /* k=8, n=10, z=1.96: p=.8, z^2=3.8416, denom = 1 + 3.8416/10 = 1.38416,
     * centre = (.8 + 3.8416/20)/1.38416 = .99208/1.38416 = .7167380,
     * half = 1.96*sqrt(.8*.2/10 + 3.8416/400)/1.38416
     *      = 1.96*sqrt(.025604)/1.38416 = .3136255/1.38416 = .2265818
     * -> [.4901562, .9433198] */
    double lo, hi;
    qe_stats_wilson(8, 10, 1.96, &lo, &hi);
    CHECKF(fabs(lo - 0.4901562) < 1e-6, "lo=%.7f", lo);
    CHECKF(fabs(hi - 0.9433198) < 1e-6, "hi=%.7f", hi);
    /* k=0, n=10: centre = .19208/1.38416 = .1387701, half the same value
     * (p=0: half = 1.96*sqrt(.009604)/1.38416 = .19208/1.38416) -> lo = 0 */
    qe_stats_wilson(0, 10, 1.96, &lo, &hi);
    CHECKF(fabs(lo) < 1e-12 && fabs(hi - 0.2775403) < 1e-6, "lo=%g hi=%.7f", lo, hi);
    qe_stats_wilson(0, 0, 1.96, &lo, &hi);
    CHECK(lo == 0 && hi == 1);
}

TEST(mcnemar_hand)
{
    /* b=1, c=9: n=10, P(X<=1) = (C(10,0)+C(10,1))/2^10 = 11/1024,
     * p = 22/1024 = 0.021484375 */
    double p = qe_stats_mcnemar_exact(1, 9);
    CHECKF(fabs(p - 22.0 / 1024) < 1e-12, "p=%.12f", p);
    CHECK(fabs(qe_stats_mcnemar_exact(9, 1) - 22.0 / 1024) < 1e-12);
    /* b=0, c=6: 2 * 1/64 = 0.03125 */
    CHECK(fabs(qe_stats_mcnemar_exact(0, 6) - 0.03125) < 1e-12);
    /* b=5, c=5: 2 * 638/1024 > 1 -> 1 */
    CHECK(qe_stats_mcnemar_exact(5, 5) == 1.0);
    CHECK(qe_stats_mcnemar_exact(0, 0) == 1.0);
    /* b=2, c=12: P(X<=2) = (1+14+91)/16384 = 106/16384; p = 212/16384 */
    CHECKF(fabs(qe_stats_mcnemar_exact(2, 12) - 212.0 / 16384) < 1e-12, "p=%g",
           qe_stats_mcnemar_exact(2, 12));
    /* large n stays finite: b=500, c=600 -> small but > 0 */
    p = qe_stats_mcnemar_exact(500, 600);
    CHECKF(p > 0 && p < 0.01, "p=%g", p);
}

TEST(paired_acc_hand)
{
    /* ref 1,1,0,0,1 / cand 1,0,1,0,0: b = 2 (items 1,4), c = 1 (item 2);
     * delta = (1-2)/5 = -0.2; diffs 0,-1,1,0,-1: mean -.2,
     * sum sq dev = .04+.64+1.44+.04+.64 = 2.8, var = .7, se = sqrt(.7/5);
     * p = 2*P(X<=1 | n=3) = 2*4/8 -> 1 */
    unsigned char r[] = {1, 1, 0, 0, 1}, c[] = {1, 0, 1, 0, 0};
    qe_paired pr;
    qe_stats_paired_acc(r, c, 5, &pr);
    CHECKF(fabs(pr.delta + 0.2) < 1e-15, "delta=%g", pr.delta);
    CHECKF(fabs(pr.se - sqrt(0.7 / 5)) < 1e-12, "se=%g", pr.se);
    CHECK(pr.p == 1.0);
}

TEST(bootstrap_constant_shift)
{
    /* cand = ref + 0.1 on every item: every resample has delta 0.1, so
     * se = 0, interval [0.1, 0.1], and no resample is <= 0: all 50 signs
     * agree, p = the exact sign test's 2 * 0.5^50 */
    double ref[50], cand[50];
    for (int i = 0; i < 50; i++) {
        ref[i] = 1.0 + 0.01 * i;
        cand[i] = ref[i] + 0.1;
    }
    qe_paired p;
    qe_err e = {0};
    int rq_ = qe_stats_paired_bootstrap(ref, cand, 50, 1000, 42, &p, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    CHECKF(fabs(p.delta - 0.1) < 1e-12, "delta=%g", p.delta);
    CHECKF(p.se < 1e-12, "se=%g", p.se);
    CHECKF(fabs(p.lo - 0.1) < 1e-12 && fabs(p.hi - 0.1) < 1e-12, "%g %g", p.lo, p.hi);
    CHECKF(p.p == ldexp(1.0, -49), "p=%g", p.p);
}

TEST(bootstrap_deterministic_and_calibrated)
{
    /* 400 items, differences alternate +1/-1 plus 0.05 drift: mean delta
     * = 0.05, sample sd of the differences = sqrt(400/399) ~ 1.00125, so the
     * analytic se = 1.00125/20 = 0.0500626; the bootstrap se must land
     * within 10 % of it (Monte-Carlo error with B=2000 is ~1.6 %). */
    enum { N = 400 };
    double ref[N], cand[N];
    for (int i = 0; i < N; i++) {
        ref[i] = 2.0;
        cand[i] = 2.0 + ((i & 1) ? -1.0 : 1.0) + 0.05;
    }
    qe_paired a, b, c;
    CHECK(qe_stats_paired_bootstrap(ref, cand, N, 2000, 7, &a, NULL) == 0);
    CHECK(qe_stats_paired_bootstrap(ref, cand, N, 2000, 7, &b, NULL) == 0);
    CHECK(qe_stats_paired_bootstrap(ref, cand, N, 2000, 8, &c, NULL) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* same seed: same bits */
    CHECK(a.se != c.se);                  /* another seed: another stream */
    CHECKF(fabs(a.delta - 0.05) < 1e-12, "delta=%g", a.delta);
    CHECKF(fabs(a.se - 0.0500626) < 0.005, "se=%g", a.se);
    /* z = 0.05/0.05 = 1 -> two-sided normal p ~ 0.317 */
    CHECKF(a.p > 0.25 && a.p < 0.40, "p=%g", a.p);
    CHECK(a.lo < 0 && a.hi > 0.1);
    qe_err e = {0};
    CHECK(qe_stats_paired_bootstrap(ref, cand, 0, 1000, 1, &a, &e) == QE_EINVAL);
    CHECK(strstr(e.msg, "n=0") != NULL);
    /* a strong shift (z = 0.5/0.05 = 10): no resample crosses 0, and p is
     * the normal tail 2 Phi(-delta/se) ~ 1.5e-23 (floored at 2 * 0.5^400),
     * far below the count's 2/2001 */
    for (int i = 0; i < N; i++)
        cand[i] = 2.0 + ((i & 1) ? -1.0 : 1.0) + 0.5;
    CHECK(qe_stats_paired_bootstrap(ref, cand, N, 2000, 7, &a, NULL) == 0);
    CHECKF(a.p < 1e-15 && fabs(a.p - erfc(a.delta / a.se / sqrt(2.0))) < 1e-30, "p=%g", a.p);
}

TEST(wilcoxon_hand)
{
    /* diffs 1,-2,3,4,0: the zero is dropped, m = 4, ranks 1..4, W+ = 1+3+4
     * = 8.  Null counts of W+ over the 16 sign patterns, s = 0..10:
     * 1 1 1 2 2 2 2 2 1 1 1, so P(W+ >= 8) = 3/16 and p = 6/16. */
    double r[] = {0, 2, 0, 0, 5}, c[] = {1, 0, 3, 4, 5};
    qe_paired w;
    REQUIRE(qe_stats_wilcoxon(r, c, 5, &w, NULL) == 0, "wilcoxon");
    CHECKF(fabs(w.p - 0.375) < 1e-15, "p=%.17g", w.p);
    CHECKF(fabs(w.delta - 1.2) < 1e-15, "delta=%g", w.delta);
    /* ties: diffs 1,1,-1,2 -> |d| ranks 2,2,2,4 (doubled 4,4,4,8), W+ doubled
     * = 16 of 20; patterns with doubled sum >= 16: {4,4,8} x 3 and all four
     * = 4 of 16, so p = 2 * 4/16 = 0.5 */
    double r2[] = {0, 0, 1, 0}, c2[] = {1, 1, 0, 2};
    REQUIRE(qe_stats_wilcoxon(r2, c2, 4, &w, NULL) == 0, "wilcoxon ties");
    CHECKF(fabs(w.p - 0.5) < 1e-15, "p=%.17g", w.p);
    /* all zero: p = 1 */
    REQUIRE(qe_stats_wilcoxon(r2, r2, 4, &w, NULL) == 0, "wilcoxon zero");
    CHECK(w.p == 1.0 && w.delta == 0);
    /* 8 positive differences, all distinct: exact p = 2/256 */
    double r3[8] = {0}, c3[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    REQUIRE(qe_stats_wilcoxon(r3, c3, 8, &w, NULL) == 0, "wilcoxon 8");
    CHECKF(fabs(w.p - 2.0 / 256) < 1e-15, "p=%.17g", w.p);
    qe_err e = {0};
    CHECK(qe_stats_wilcoxon(r3, c3, 0, &w, &e) == QE_EINVAL);
}

TEST(adjust_hand)
{
    /* Holm, m = 4, p = .01 .04 .03 .005: sorted .005 .01 .03 .04 times
     * 4 3 2 1 = .02 .03 .06 .04, running max .02 .03 .06 .06 */
    double p[] = {0.01, 0.04, 0.03, 0.005}, a[10];
    REQUIRE(qe_stats_adjust_p(p, 4, QE_ADJUST_HOLM, a, NULL) == 0, "holm");
    CHECKF(fabs(a[0] - 0.03) < 1e-15 && fabs(a[1] - 0.06) < 1e-15 &&
               fabs(a[2] - 0.06) < 1e-15 && fabs(a[3] - 0.02) < 1e-15,
           "%g %g %g %g", a[0], a[1], a[2], a[3]);
    /* BH: m p / rank = .02 .02 .04 .04 (ranks 1..4), running min from the
     * top: .02 .02 .04 .04 */
    REQUIRE(qe_stats_adjust_p(p, 4, QE_ADJUST_BH, a, NULL) == 0, "bh");
    CHECKF(fabs(a[0] - 0.02) < 1e-15 && fabs(a[1] - 0.04) < 1e-15 &&
               fabs(a[2] - 0.04) < 1e-15 && fabs(a[3] - 0.02) < 1e-15,
           "%g %g %g %g", a[0], a[1], a[2], a[3]);
    /* caps and monotonicity: p = .5 .6 -> Holm 1 1, BH .6 .6 */
    double q[] = {0.5, 0.6};
    qe_stats_adjust_p(q, 2, QE_ADJUST_HOLM, a, NULL);
    CHECK(a[0] == 1 && a[1] == 1);
    qe_stats_adjust_p(q, 2, QE_ADJUST_BH, a, NULL);
    CHECKF(fabs(a[0] - 0.6) < 1e-15 && fabs(a[1] - 0.6) < 1e-15, "%g %g", a[0], a[1]);
    /* NaN is skipped and does not count: m = 2 for {.01, NaN, .02}:
     * Holm .02 .02, BH .02 .02; in place (adj aliases p) */
    double r[] = {0.01, NAN, 0.02};
    qe_stats_adjust_p(r, 3, QE_ADJUST_HOLM, r, NULL);
    CHECKF(fabs(r[0] - 0.02) < 1e-15 && isnan(r[1]) && fabs(r[2] - 0.02) < 1e-15, "%g %g %g",
           r[0], r[1], r[2]);
    /* the textbook BH example (Benjamini & Hochberg 1995 style): 10 p-values,
     * p(k) <= k/10 * 0.05 holds up to k = 4 (0.019 <= 0.02), so 4 discoveries */
    double b[] = {0.001, 0.008, 0.012, 0.019, 0.041, 0.06, 0.074, 0.205, 0.5, 0.9};
    qe_stats_adjust_p(b, 10, QE_ADJUST_BH, a, NULL);
    int disc = 0;
    for (int i = 0; i < 10; i++)
        disc += a[i] < 0.05;
    CHECKF(disc == 4, "discoveries=%d", disc);
    CHECK(qe_stats_adjust_parse("holm") == QE_ADJUST_HOLM &&
          qe_stats_adjust_parse("bh") == QE_ADJUST_BH && qe_stats_adjust_parse("x") == -1);
}

TEST(norm_quantile)
{
    CHECKF(fabs(qe_stats_norm_quantile(0.975) - 1.959963984540054) < 1e-12, "%.15f",
           qe_stats_norm_quantile(0.975));
    CHECKF(fabs(qe_stats_norm_quantile(0.8) - 0.8416212335729143) < 1e-12, "%.15f",
           qe_stats_norm_quantile(0.8));
    CHECK(qe_stats_norm_quantile(0.5) == 0 || fabs(qe_stats_norm_quantile(0.5)) < 1e-15);
    /* MDE of a paired mean: (1.959964 + 0.841621) * 1 / sqrt(100) */
    CHECKF(fabs(qe_stats_mde_paired(100, 1.0, 0.05, 0.8) - 0.2801585) < 1e-6, "%.7f",
           qe_stats_mde_paired(100, 1.0, 0.05, 0.8));
    /* 5 items cannot reach p < 0.05 (2 * 0.5^5 = 0.0625), paired or McNemar */
    CHECK(isinf(qe_stats_mde_paired(5, 1.0, 0.05, 0.8)));
    CHECK(isfinite(qe_stats_mde_paired(6, 1.0, 0.05, 0.8)));
    CHECK(isinf(qe_stats_mde_mcnemar(5, 0, 0.05, 0.8)));
    /* 6 items, all flipped one way: p = 0.03125, power 1 at delta = 1 */
    CHECK(isfinite(qe_stats_mde_mcnemar(6, 0, 0.05, 0.8)));
}

/* ------------------------------------------------------------ simulation */

static double unif(uint64_t *st)
{
    return ((double)(qe_stats_rng_next(st) >> 11) + 0.5) * 0x1.0p-53;
}

static double gauss(uint64_t *st)
{
    double u = unif(st), v = unif(st);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* Share of `trials` simulated paired-accuracy data sets (n items, each
 * discordant with probability psi, a discordant item going the
 * candidate's way with probability (1 + delta/psi)/2) that McNemar's
 * exact test rejects at alpha. */
static double sim_mcnemar(size_t n, double psi, double delta, double alpha, int trials,
                          uint64_t seed)
{
    uint64_t st = seed;
    int rej = 0;
    double q = 0.5 * (1 + delta / psi);
    for (int t = 0; t < trials; t++) {
        size_t b = 0, c = 0;
        for (size_t i = 0; i < n; i++) {
            if (unif(&st) < psi) {
                if (unif(&st) < q)
                    c++;
                else
                    b++;
            }
        }
        rej += qe_stats_mcnemar_exact(b, c) < alpha;
    }
    return (double)rej / trials;
}

/* Same for a paired continuous measure: differences ~ N(delta, 1),
 * tested by the paired bootstrap (B resamples) or Wilcoxon. */
static double sim_paired(size_t n, double delta, double alpha, int trials, int boot,
                         uint64_t seed)
{
    uint64_t st = seed;
    double *r = calloc(n, sizeof *r), *c = malloc(n * sizeof *c);
    int rej = 0;
    for (int t = 0; t < trials; t++) {
        for (size_t i = 0; i < n; i++) {
            r[i] = gauss(&st);
            c[i] = r[i] + delta + gauss(&st); /* difference ~ N(delta, 1) */
        }
        qe_paired pr;
        if (boot)
            qe_stats_paired_bootstrap(r, c, n, boot, seed + (uint64_t)t, &pr, NULL);
        else
            qe_stats_wilcoxon(r, c, n, &pr, NULL);
        rej += pr.p < alpha;
    }
    free(r);
    free(c);
    return (double)rej / trials;
}

/* 2000 trials at alpha = 0.05: the simulation's sd is sqrt(.05 * .95 /
 * 2000) = 0.0049, so "keeps alpha" is rate <= 0.05 + 3 sd = 0.0646. */
#define TRIALS 2000
#define ALPHA_MAX 0.0646

TEST(type1_error_by_simulation)
{
    double r1 = sim_mcnemar(200, 0.2, 0, 0.05, TRIALS, 101);
    CHECKF(r1 <= ALPHA_MAX, "McNemar n=200: %.4f", r1);
    double r2 = sim_mcnemar(60, 0.5, 0, 0.05, TRIALS, 102);
    CHECKF(r2 <= ALPHA_MAX, "McNemar n=60: %.4f", r2);
    double r3 = sim_paired(100, 0, 0.05, TRIALS, 200, 103);
    CHECKF(r3 <= ALPHA_MAX, "bootstrap n=100: %.4f", r3);
    double r4 = sim_paired(30, 0, 0.05, TRIALS, 0, 104);   /* exact Wilcoxon */
    CHECKF(r4 <= ALPHA_MAX, "Wilcoxon n=30: %.4f", r4);
    double r5 = sim_paired(120, 0, 0.05, TRIALS, 0, 105);  /* normal Wilcoxon */
    CHECKF(r5 <= ALPHA_MAX, "Wilcoxon n=120: %.4f", r5);
    /* none is so conservative that it wastes power: above alpha - 4 sd,
     * except McNemar, whose exactness costs some (> 0.02) */
    CHECKF(r1 > 0.02 && r3 > 0.03 && r4 > 0.03 && r5 > 0.03, "%.4f %.4f %.4f %.4f", r1, r3,
           r4, r5);
    printf("  type-I at alpha 0.05 (2000 trials): McNemar n=200 %.4f, n=60 %.4f; bootstrap "
           "n=100 %.4f; Wilcoxon n=30 %.4f, n=120 %.4f\n", r1, r2, r3, r4, r5);
}

TEST(mde_matches_simulated_power)
{
    /* McNemar, n = 200 items, 30 of them flipped in the observed comparison:
     * the exact power function against the simulation, and the simulated
     * power crossing 80 % between 0.9 and 1.1 times the MDE */
    double mde = qe_stats_mde_mcnemar(200, 30, 0.05, 0.8);
    REQUIRE(isfinite(mde) && mde > 0.03 && mde < 0.15, "mde=%g", mde);
    double pw = qe_stats_mcnemar_power(200, 0.15, mde, 0.05);
    CHECKF(fabs(pw - 0.8) < 1e-6, "power at MDE %.6f", pw);
    double s0 = sim_mcnemar(200, 0.15, mde, 0.05, TRIALS, 201);
    double slo = sim_mcnemar(200, 0.15, 0.9 * mde, 0.05, TRIALS, 202);
    double shi = sim_mcnemar(200, 0.15, 1.1 * mde, 0.05, TRIALS, 203);
    CHECKF(fabs(s0 - 0.8) < 0.03, "simulated power at MDE %.4f", s0);
    CHECKF(slo < 0.8 && shi > 0.8, "simulated power %.4f at 0.9 MDE, %.4f at 1.1 MDE", slo,
           shi);
    /* no discordance observed (e.g. a near-lossless variant): the effect
     * itself must flip items, psi = delta */
    double m0 = qe_stats_mde_mcnemar(200, 0, 0.05, 0.8);
    double t0 = sim_mcnemar(200, m0, m0, 0.05, TRIALS, 204);
    double tlo = sim_mcnemar(200, 0.9 * m0, 0.9 * m0, 0.05, TRIALS, 205);
    double thi = sim_mcnemar(200, 1.1 * m0, 1.1 * m0, 0.05, TRIALS, 206);
    CHECKF(fabs(t0 - 0.8) < 0.04 && tlo < 0.8 && thi > 0.8, "mde0=%g sim %.4f %.4f %.4f", m0,
           tlo, t0, thi);
    /* the normal branch (n * psi > 1000) against simulation */
    double mb = qe_stats_mde_mcnemar(20000, 4000, 0.05, 0.8);
    double sb = sim_mcnemar(20000, 0.2, mb, 0.05, 400, 207);
    CHECKF(fabs(sb - 0.8) < 0.07, "normal branch: mde=%g sim %.4f (400 trials)", mb, sb);
    /* paired mean (bootstrap), n = 100, sd of the differences 1 */
    double md = qe_stats_mde_paired(100, 1.0, 0.05, 0.8);
    double b0 = sim_paired(100, md, 0.05, TRIALS, 200, 208);
    double blo = sim_paired(100, 0.9 * md, 0.05, TRIALS, 200, 209);
    double bhi = sim_paired(100, 1.1 * md, 0.05, TRIALS, 200, 210);
    CHECKF(fabs(b0 - 0.8) < 0.03 && blo < 0.8 && bhi > 0.8, "paired mde=%g sim %.4f %.4f %.4f",
           md, blo, b0, bhi);
    printf("  MDE McNemar n=200 (30 flips) %.4f: simulated power %.3f/%.3f/%.3f at "
           "0.9/1/1.1 MDE; no flips %.4f: %.3f/%.3f/%.3f; paired n=100 %.4f: %.3f/%.3f/%.3f\n",
           mde, slo, s0, shi, m0, tlo, t0, thi, md, blo, b0, bhi);
}

int main(void)
{
    RUN(mean_se_hand);
    RUN(wilson_hand);
    RUN(mcnemar_hand);
    RUN(paired_acc_hand);
    RUN(bootstrap_constant_shift);
    RUN(bootstrap_deterministic_and_calibrated);
    RUN(wilcoxon_hand);
    RUN(adjust_hand);
    RUN(norm_quantile);
    RUN(type1_error_by_simulation);
    RUN(mde_matches_simulated_power);
    return test_finish();
}
