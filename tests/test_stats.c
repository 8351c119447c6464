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
     * se = 0, interval [0.1, 0.1], and no resample is <= 0:
     * p = 2 * (0 + 1) / (1000 + 1) */
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
    CHECKF(fabs(p.p - 2.0 / 1001) < 1e-15, "p=%g", p.p);
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
}

int main(void)
{
    RUN(mean_se_hand);
    RUN(wilson_hand);
    RUN(mcnemar_hand);
    RUN(paired_acc_hand);
    RUN(bootstrap_constant_shift);
    RUN(bootstrap_deterministic_and_calibrated);
    return test_finish();
}
