/*
 * bench_quant.c: quant/ throughput (make bench).  Prints, per type:
 *  - dequantize GB/s of output f32 (ref vs the SIMD level in use), over a
 *    4 Mi-weight buffer that exceeds L2, best of 5;
 *  - quantize M weights/s through qe_quantize_rows: the scalar reference
 *    (SIMD level "ref", 2 threads) and the fast twins of the SIMD level in
 *    use (1 and 2 threads), with and without an imatrix, on N(0, 0.02)
 *    weights; checks that both write the same bytes and refuse NaN/Inf
 *    (exit 1 if not).
 * Anchor (SPEED.md, llama-quantize b4747, Qwen2.5-0.5B shape, 494 M
 * weights, 2 threads): Q4_K_M 5.6 s (~88 M w/s), Q2_K 30.8 s (~16 M w/s).
 */
#include "../harness/util/common.h"
#include "../quant/quant.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s = 88172645463325252ull;
static float rnd_normal(void)
{
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    float u = ((float)(s >> 40) + 0.5f) / 16777216.0f;
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    float v = ((float)(s >> 40) + 0.5f) / 16777216.0f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

int main(void)
{
    static const int deq_types[] = {QE_TYPE_F16,  QE_TYPE_BF16, QE_TYPE_Q8_0,  QE_TYPE_Q4_0,
                                    QE_TYPE_Q4_1, QE_TYPE_Q5_0, QE_TYPE_Q5_1,  QE_TYPE_IQ4_NL,
                                    QE_TYPE_Q2_K, QE_TYPE_Q3_K, QE_TYPE_Q4_K,  QE_TYPE_Q5_K,
                                    QE_TYPE_Q6_K, QE_TYPE_IQ4_XS};
    static const int q_types[] = {QE_TYPE_Q8_0, QE_TYPE_Q4_0, QE_TYPE_Q4_1, QE_TYPE_Q5_0,
                                  QE_TYPE_Q5_1, QE_TYPE_Q2_K, QE_TYPE_Q3_K, QE_TYPE_Q4_K,
                                  QE_TYPE_Q5_K, QE_TYPE_Q6_K, QE_TYPE_IQ4_NL, QE_TYPE_IQ4_XS};
    const int64_t n_per_row = 4096, nrows = 1024, n = n_per_row * nrows;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4), *im = malloc(n_per_row * 4);
    uint8_t *q = malloc((size_t)n * 4);
    if (!x || !y || !q || !im)
        return 1;
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.02f * rnd_normal();
    for (int64_t i = 0; i < n_per_row; i++)
        im[i] = 0.05f + fabsf(rnd_normal());
    const char *level = qe_quant_simd_level();
    char lv[16];
    snprintf(lv, sizeof lv, "%s", level);
    qe_err err = {0};

    printf("dequantize (GB/s of f32 output, %lld weights, best of 5), SIMD level %s\n",
           (long long)n, lv);
    printf("  %-8s %10s %10s %8s\n", "type", "ref", lv, "speedup");
    for (size_t t = 0; t < sizeof deq_types / sizeof deq_types[0]; t++) {
        const qe_type_traits *tt = qe_type_get(deq_types[t]);
        if (qe_quantize_rows(deq_types[t], x, q, nrows, n_per_row, NULL, 2, &err))
            return 1;
        double best[2] = {1e9, 1e9};
        for (int pass = 0; pass < 2; pass++) {
            qe_to_float_fn f = pass ? tt->to_float : tt->to_float_ref;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = qe_now();
                f(q, y, n);
                double dt = qe_now() - t0;
                if (dt < best[pass])
                    best[pass] = dt;
            }
        }
        double gb = (double)n * 4 / 1e9;
        printf("  %-8s %10.2f %10.2f %7.2fx\n", tt->name, gb / best[0], gb / best[1],
               best[0] / best[1]);
    }

    /* Quantize: the fast twins (qe_quantize_rows at this SIMD level) must
     * write the very bytes of the scalar reference (level "ref"); the run
     * fails if they do not.  1 Mi weights per measurement. */
    const int64_t rows = nrows / 4;
    const size_t cap = (size_t)n * 4 / 2;
    uint8_t *qr = malloc(cap);
    if (!qr)
        return 1;
    int n_diff = 0;
    printf("quantize (M weights/s, %lld x %lld rows; ref = scalar spec, 2 threads)\n",
           (long long)rows, (long long)n_per_row);
    printf("  %-8s %9s %9s %9s %9s %9s %9s %9s  %s\n", "type", "ref", "1 thr", "2 thr",
           "x ref", "imat ref", "imat 1", "imat 2", "bytes vs ref");
    for (size_t t = 0; t < sizeof q_types / sizeof q_types[0]; t++) {
        double r[6];
        bool same = true;
        for (int k = 0; k < 6; k++) {
            /* k: 0 ref, 1 fast 1 thr, 2 fast 2 thr, 3 imat ref, 4/5 imat fast */
            bool is_ref = k == 0 || k == 3;
            int thr = (k == 1 || k == 4) ? 1 : 2;
            const float *imx = k >= 3 ? im : NULL;
            if (qe_quant_set_simd_level(is_ref ? "ref" : lv)) {
                fprintf(stderr, "cannot set SIMD level\n");
                return 1;
            }
            double t0 = qe_now();
            if (qe_quantize_rows(q_types[t], x, is_ref ? qr : q, rows, n_per_row, imx, thr,
                                 &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            r[k] = (double)rows * n_per_row / (qe_now() - t0) / 1e6;
            if (k == 2 || k == 5)
                same = same && !memcmp(q, qr, qe_type_row_nbytes(q_types[t], n_per_row) * rows);
        }
        /* a NaN or an Inf anywhere in a row must still be refused */
        for (int bad = 0; bad < 2; bad++) {
            float keep = x[777];
            x[777] = bad ? INFINITY : NAN;
            int rc = qe_quantize_rows(q_types[t], x, q, 2, n_per_row, NULL, 1, &err);
            x[777] = keep;
            same = same && rc == QE_ENAN;
        }
        n_diff += !same;
        printf("  %-8s %9.1f %9.1f %9.1f %8.1fx %9.1f %9.1f %9.1f  %s\n",
               qe_type_name(q_types[t]), r[0], r[1], r[2], r[2] / r[0], r[3], r[4], r[5],
               same ? "identical, NaN/Inf refused" : "DIFFERENT or NaN accepted");
    }
    printf("  llama-quantize anchor (2 threads): Q4_K_M ~88 M w/s, Q2_K ~16 M w/s\n");
    free(qr);
    if (n_diff) {
        fprintf(stderr, "bench_quant: %d types differ from the reference quantizer\n", n_diff);
        return 1;
    }
    free(x);
    free(y);
    free(q);
    free(im);
    return 0;
}
