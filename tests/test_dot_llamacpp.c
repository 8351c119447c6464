/*
 * test_dot_llamacpp.c: llama.cpp CPU-backend matmul numerics
 * (quant/dot_llamacpp.h).
 *
 * Checks: the activation quantizers on hand-picked rows (int8s, d, s,
 * bsums, ggml's tie and sign rules); hand-computed single-block dots;
 * every supported weight type against an independent computation
 * (dequantize the weights through the traits table, dequantize our
 * quantized activations, dot in double) and against the exact f32 product
 * (the difference must be of the size of activation rounding, no more, no
 * less); zeros stay NaN-free; thread count does not change a bit; bad
 * shapes and types give the specific error codes.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/dot_llamacpp.h"
#include "../quant/quant.h"
#include "../quant/quant_internal.h"
#include "test.h"

/* Deterministic uniform [-1, 1). */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- (c) activation quantizers ----------------------------------- */

/* One q8_0 block: amax 127 so id = 127/127 = 1 exactly; 62.5 is a tie
 * (AVX2 path rounds to even: 62; the scalar _ref rounds away: 63). */
static void fill_tie_block(float *x)
{
    memset(x, 0, 32 * sizeof *x);
    x[0] = 127.f;
    x[1] = 62.5f;
    x[2] = -0.5f;
    x[3] = 1.5f;
    x[4] = 2.5f;
}

TEST(act_q8_0_hand)
{
    float x[64];
    fill_tie_block(x);
    memset(x + 32, 0, 32 * sizeof *x); /* second block all zero */
    qe_block_q8_0 y[2];
    qe_llamacpp_quantize_q8_0(x, y, 64);
    CHECKF(y[0].d == 0x3C00, "d bits 0x%04x, want 0x3C00 (1.0)", y[0].d);
    const int8_t want[5] = {127, 62, 0, 2, 2};
    for (int j = 0; j < 5; j++)
        CHECKF(y[0].qs[j] == want[j], "qs[%d] = %d, want %d", j, y[0].qs[j], want[j]);
    for (int j = 5; j < 32; j++)
        CHECKF(y[0].qs[j] == 0, "qs[%d] = %d", j, y[0].qs[j]);
    CHECKF(y[1].d == 0, "zero block d bits 0x%04x", y[1].d);
    for (int j = 0; j < 32; j++)
        CHECK(y[1].qs[j] == 0);

    /* The scalar reference quantizer (traits) rounds halves away from
     * zero: that is exactly the difference llama.cpp's SIMD path makes. */
    const qe_type_traits *tt = qe_type_get(QE_TYPE_Q8_0);
    REQUIRE(tt && tt->from_float_ref, "q8_0 reference quantizer registered");
    qe_block_q8_0 r[2];
    REQUIRE(tt->from_float_ref(x, r, 64, NULL) == 0, "ref quantize");
    CHECKF(r[0].qs[1] == 63 && r[0].qs[4] == 3, "ref qs[1]=%d qs[4]=%d, want 63 and 3",
           r[0].qs[1], r[0].qs[4]);

    /* A non-trivial scale: amax 3 -> d = fp16(3/127), q = rne(x*127/3). */
    float z[32];
    for (int j = 0; j < 32; j++)
        z[j] = (float)(j % 7 - 3);
    qe_llamacpp_quantize_q8_0(z, y, 32);
    CHECKF(y[0].d == qe_fp32_to_fp16(3.f / 127.f), "d bits 0x%04x", y[0].d);
    /* 1*127/3 = 42.33 -> 42, 2*127/3 = 84.67 -> 85, 3 -> 127 */
    const int8_t wz[7] = {-127, -85, -42, 0, 42, 85, 127};
    for (int j = 0; j < 32; j++)
        CHECKF(y[0].qs[j] == wz[j % 7], "qs[%d] = %d, want %d", j, y[0].qs[j], wz[j % 7]);
}

TEST(act_q8_1_hand)
{
    float x[32];
    fill_tie_block(x);
    qe_block_q8_1 y;
    qe_llamacpp_quantize_q8_1(x, &y, 32);
    CHECKF(y.d == 0x3C00, "d bits 0x%04x", y.d);
    const int8_t want[5] = {127, 62, 0, 2, 2};
    for (int j = 0; j < 5; j++)
        CHECKF(y.qs[j] == want[j], "qs[%d] = %d, want %d", j, y.qs[j], want[j]);
    /* s = fp16(d * sum q) = 127+62+2+2 = 193 */
    CHECKF(qe_fp16_to_fp32(y.s) == 193.f, "s = %g, want 193", qe_fp16_to_fp32(y.s));
}

TEST(act_q8_K_hand)
{
    float x[256];
    qe_block_q8_K y;
    /* Largest |x| is +2: iscale = -127/2 = -63.5, so d = 1/iscale < 0 and
     * positive inputs become negative ints.  1.0*-63.5 is a tie: even. */
    memset(x, 0, sizeof x);
    x[0] = 2.f;
    x[1] = 1.f;
    x[2] = -1.f;
    x[3] = 0.5f;
    x[16] = 0.25f;
    qe_llamacpp_quantize_q8_K(x, &y, 256);
    const int8_t want[4] = {-127, -64, 64, -32};
    for (int j = 0; j < 4; j++)
        CHECKF(y.qs[j] == want[j], "qs[%d] = %d, want %d", j, y.qs[j], want[j]);
    CHECKF(y.qs[16] == -16, "qs[16] = %d, want -16 (-15.875)", y.qs[16]);
    CHECKF(y.d == 1.f / -63.5f, "d = %.9g, want %.9g", y.d, 1.f / -63.5f);
    CHECKF(y.bsums[0] == -159, "bsums[0] = %d, want -159", y.bsums[0]);
    CHECKF(y.bsums[1] == -16, "bsums[1] = %d, want -16", y.bsums[1]);
    for (int j = 2; j < 16; j++)
        CHECK(y.bsums[j] == 0);

    /* Largest |x| negative: d > 0, and 1.0*63.5 ties to 64. */
    x[0] = -2.f;
    qe_llamacpp_quantize_q8_K(x, &y, 256);
    CHECKF(y.qs[0] == -127 && y.qs[1] == 64 && y.qs[2] == -64, "qs %d %d %d", y.qs[0], y.qs[1],
           y.qs[2]);
    CHECKF(y.d == 1.f / 63.5f, "d = %.9g", y.d);

    /* All zero: d = 0, q = 0, bsums = 0. */
    memset(x, 0, sizeof x);
    qe_llamacpp_quantize_q8_K(x, &y, 256);
    CHECK(y.d == 0.f);
    for (int j = 0; j < 16; j++)
        CHECK(y.bsums[j] == 0);
}

/* ---- (b) hand-computed single-block dots -------------------------- */

TEST(dot_hand_q8_0)
{
    qe_block_q8_0 w;
    w.d = qe_fp32_to_fp16(0.25f);
    for (int j = 0; j < 32; j++)
        w.qs[j] = (int8_t)(j - 16);
    float x[32], y = 0.f;
    fill_tie_block(x);
    qe_err err = {0};
    REQUIRE(qe_matmul_llamacpp(QE_TYPE_Q8_0, &w, sizeof w, 1, 32, x, 1, &y, &err) == 0, "%s",
            err.msg);
    /* q_a = 127, 62, 0, 2, 2; q_w = -16, -15, -14, -13, -12:
     * isum = -2032 - 930 + 0 - 26 - 24 = -3012; y = 0.25 * 1.0 * isum */
    CHECKF(y == -753.f, "y = %.9g, want -753", y);
}

TEST(dot_hand_q4_1)
{
    qe_block_q4_1 w;
    w.d = qe_fp32_to_fp16(0.5f);
    w.m = qe_fp32_to_fp16(-1.f);
    for (int j = 0; j < 16; j++)
        w.qs[j] = (uint8_t)(j | (15 - j) << 4); /* weights 0..15, then 15..0 */
    float x[32], y = 0.f;
    fill_tie_block(x);
    qe_err err = {0};
    REQUIRE(qe_matmul_llamacpp(QE_TYPE_Q4_1, &w, sizeof w, 1, 32, x, 1, &y, &err) == 0, "%s",
            err.msg);
    /* isum = 0*127 + 1*62 + 2*0 + 3*2 + 4*2 = 76; y = 0.5*76 + m*s = 38 - 193 */
    CHECKF(y == -155.f, "y = %.9g, want -155", y);
}

TEST(dot_hand_q4_K)
{
    /* Every weight q = 1, every 6-bit scale 1 and min 2, d = dmin = 1:
     * each weight is 1*1*1 - 1*2 = -1.  Activations as in act_q8_K_hand:
     * sum(q_a) = -175 and d_a = 1/-63.5, so y = -1 * d_a * (-175) = 175 * d_a. */
    qe_block_q4_K w;
    memset(&w, 0, sizeof w);
    w.d = w.dmin = qe_fp32_to_fp16(1.f);
    for (int j = 0; j < 4; j++) {
        w.scales[j] = 1;
        w.scales[j + 4] = 2;
        w.scales[j + 8] = 1 | 2 << 4;
    }
    memset(w.qs, 0x11, sizeof w.qs);
    float x[256], y = 0.f;
    memset(x, 0, sizeof x);
    x[0] = 2.f;
    x[1] = 1.f;
    x[2] = -1.f;
    x[3] = 0.5f;
    x[16] = 0.25f;
    qe_err err = {0};
    REQUIRE(qe_matmul_llamacpp(QE_TYPE_Q4_K, &w, sizeof w, 1, 256, x, 1, &y, &err) == 0, "%s",
            err.msg);
    const double want = 175.0 / -63.5;
    CHECKF(fabs(y - want) < 1e-6 * fabs(want), "y = %.9g, want %.9g", y, want);
    /* Cross-check the weight decoding with the traits dequantizer. */
    float wf[256];
    qe_type_get(QE_TYPE_Q4_K)->to_float_ref(&w, wf, 256);
    CHECKF(wf[0] == -1.f && wf[255] == -1.f, "dequant %g %g", wf[0], wf[255]);
}

/* ---- (a) every type vs an independent computation ----------------- */

/* Our quantized activation row, dequantized to float (what the integer
 * dot effectively multiplies the weights by).  For q8_1 also the fp16
 * block sums s (used only for the tolerance). */
static void act_dequant(int vt, const float *x, int n, float *out, float *s_out)
{
    if (vt == QE_TYPE_Q8_0 || vt == QE_TYPE_Q8_1 || vt == QE_TYPE_Q8_K) {
        size_t nb = qe_type_row_nbytes(vt, n);
        void *buf = malloc(nb);
        if (vt == QE_TYPE_Q8_0) {
            qe_llamacpp_quantize_q8_0(x, buf, n);
            const qe_block_q8_0 *b = buf;
            for (int i = 0; i < n; i++)
                out[i] = qe_fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
        } else if (vt == QE_TYPE_Q8_1) {
            qe_llamacpp_quantize_q8_1(x, buf, n);
            const qe_block_q8_1 *b = buf;
            for (int i = 0; i < n; i++)
                out[i] = qe_fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
            for (int i = 0; i < n / 32; i++)
                s_out[i] = qe_fp16_to_fp32(b[i].s);
        } else {
            qe_llamacpp_quantize_q8_K(x, buf, n);
            const qe_block_q8_K *b = buf;
            for (int i = 0; i < n; i++)
                out[i] = b[i / 256].d * b[i / 256].qs[i % 256];
        }
        free(buf);
    } else if (vt == QE_TYPE_F16) {
        for (int i = 0; i < n; i++)
            out[i] = qe_fp16_to_fp32(qe_fp32_to_fp16(x[i]));
    } else if (vt == QE_TYPE_BF16) {
        for (int i = 0; i < n; i++)
            out[i] = qe_bf16_to_fp32(qe_fp32_to_bf16(x[i]));
    } else {
        memcpy(out, x, (size_t)n * sizeof *out);
    }
}

static const int k_types[] = {QE_TYPE_F32,  QE_TYPE_F16,  QE_TYPE_BF16,  QE_TYPE_Q4_0,
                              QE_TYPE_Q4_1, QE_TYPE_Q5_0, QE_TYPE_Q5_1,  QE_TYPE_Q8_0,
                              QE_TYPE_Q2_K, QE_TYPE_Q3_K, QE_TYPE_Q4_K,  QE_TYPE_Q5_K,
                              QE_TYPE_Q6_K, QE_TYPE_IQ4_NL, QE_TYPE_IQ4_XS,
                              QE_TYPE_IQ2_XXS, QE_TYPE_IQ2_XS, QE_TYPE_IQ2_S, QE_TYPE_IQ3_XXS,
                              QE_TYPE_IQ3_S, QE_TYPE_IQ1_S, QE_TYPE_IQ1_M, QE_TYPE_TQ1_0,
                              QE_TYPE_TQ2_0};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

/* One type at one shape: matmul vs independent, vs exact, zeros. */
static void check_type(int wt, int n_out, int n_in, int n_tok)
{
    const qe_type_traits *tt = qe_type_get(wt);
    REQUIRE(tt && tt->from_float_ref && tt->to_float_ref, "type %d has quantizer+dequantizer", wt);
    const int vt = qe_llamacpp_vec_dot_type(wt);
    REQUIRE(vt >= 0, "%s has a llamacpp path", tt->name);
    const size_t row_nb = qe_type_row_nbytes(wt, n_in);
    float *wf = malloc(sizeof(float) * (size_t)n_out * n_in);
    float *wd = malloc(sizeof(float) * (size_t)n_out * n_in);
    uint8_t *wq = malloc(row_nb * (size_t)n_out);
    float *x = malloc(sizeof(float) * (size_t)n_tok * n_in);
    float *xa = malloc(sizeof(float) * (size_t)n_tok * n_in);
    float *s1 = malloc(sizeof(float) * (size_t)n_tok * (n_in / 32));
    float *y = malloc(sizeof(float) * (size_t)n_tok * n_out);
    for (size_t i = 0; i < (size_t)n_out * n_in; i++)
        wf[i] = rnd() * 0.5f + 0.1f; /* an offset exercises mins / m */
    for (size_t i = 0; i < (size_t)n_tok * n_in; i++)
        x[i] = rnd() * (i % 97 == 3 ? 6.f : 1.f); /* a few outliers */
    qe_err err = {0};
    /* IQ2_XXS/IQ2_XS/IQ1_S need importance weights: uniform ones */
    float *imx = malloc(sizeof(float) * (size_t)n_in);
    for (int i = 0; i < n_in; i++)
        imx[i] = 1.0f;
    int rc = qe_quantize_rows(wt, wf, wq, n_out, n_in, qe_type_needs_imatrix(wt) ? imx : NULL, 1,
                              &err);
    free(imx);
    if (rc) {
        CHECKF(rc == 0, "quantize %s: %s", tt->name, err.msg);
        goto out;
    }
    for (int o = 0; o < n_out; o++)
        tt->to_float_ref(wq + (size_t)o * row_nb, wd + (size_t)o * n_in, n_in);
    for (int t = 0; t < n_tok; t++)
        act_dequant(vt, x + (size_t)t * n_in, n_in, xa + (size_t)t * n_in,
                    s1 + (size_t)t * (n_in / 32));
    rc = qe_matmul_llamacpp(wt, wq, row_nb, n_out, n_in, x, n_tok, y, &err);
    if (rc) {
        CHECKF(rc == 0, "matmul %s: %s", tt->name, err.msg);
        goto out;
    }
    /* Relative rms rounding of the activations themselves: with weights
     * independent of that rounding, the dot's relative error is about it. */
    double a2 = 0.0, x2 = 0.0;
    for (size_t i = 0; i < (size_t)n_tok * n_in; i++) {
        a2 += ((double)xa[i] - x[i]) * ((double)xa[i] - x[i]);
        x2 += (double)x[i] * x[i];
    }
    const double ract = sqrt(a2 / x2);
    double e2 = 0.0, r2 = 0.0;
    int n_bad = 0;
    for (int t = 0; t < n_tok; t++)
        for (int o = 0; o < n_out; o++) {
            const float *wr = wd + (size_t)o * n_in, *xr = xa + (size_t)t * n_in;
            const float *xe = x + (size_t)t * n_in;
            double ref = 0.0, mag = 0.0, exact = 0.0, mtol = 0.0;
            for (int i = 0; i < n_in; i++) {
                ref += (double)wr[i] * xr[i];
                mag += fabs((double)wr[i] * xr[i]);
                exact += (double)wr[i] * xe[i];
            }
            if (vt == QE_TYPE_Q8_1) {
                /* ggml uses m * fp16(d_a * sum q_a): allow for that rounding */
                const qe_block_q4_1 *b41 = (const void *)(wq + (size_t)o * row_nb);
                const qe_block_q5_1 *b51 = (const void *)(wq + (size_t)o * row_nb);
                for (int b = 0; b < n_in / 32; b++) {
                    const float m = qe_fp16_to_fp32(wt == QE_TYPE_Q4_1 ? b41[b].m : b51[b].m);
                    mtol += fabs(m * s1[(size_t)t * (n_in / 32) + b]) * (1.0 / 1024);
                }
            }
            const float got = y[(size_t)t * n_out + o];
            const double tol = 1e-5 * mag + mtol + 1e-30;
            if (!(fabs(got - ref) <= tol)) {
                if (n_bad++ < 3)
                    CHECKF(0, "%s t=%d o=%d: got %.9g, independent %.9g (tol %.3g)", tt->name,
                           t, o, got, ref, tol);
            }
            e2 += (got - exact) * (got - exact);
            r2 += exact * exact;
        }
    /* Sanity both ways: the result must differ from the exact f32 product
     * (activation rounding is really applied) by about the rounding
     * (nothing else is wrong).  f32 activations: only float reordering. */
    const double rel = sqrt(e2 / r2);
    if (vt == QE_TYPE_F32)
        CHECKF(rel < 1e-6, "%s: rms error vs exact %.3g", tt->name, rel);
    else
        CHECKF(ract > 0 && rel >= 0.3 * ract && rel <= 3.0 * ract,
               "%s: rms error vs exact f32 %.3g, activation rounding %.3g", tt->name, rel, ract);
    if (n_out == 12)
        printf("        %-7s act %-5s rel rms err vs f32 %.3g (activation rounding %.3g)\n",
               tt->name, qe_type_name(vt), rel, ract);

    /* (d) all-zero activations: exactly zero, never NaN */
    memset(x, 0, sizeof(float) * (size_t)n_tok * n_in);
    rc = qe_matmul_llamacpp(wt, wq, row_nb, n_out, n_in, x, n_tok, y, &err);
    CHECKF(rc == 0, "%s zeros: %s", tt->name, err.msg);
    for (size_t i = 0; i < (size_t)n_tok * n_out; i++)
        if (y[i] != 0.f) {
            CHECKF(y[i] == 0.f, "%s zero activations gave y[%zu] = %g", tt->name, i, y[i]);
            break;
        }
out:
    free(wf);
    free(wd);
    free(wq);
    free(x);
    free(xa);
    free(s1);
    free(y);
}

TEST(all_types_vs_independent)
{
    for (int i = 0; i < N_TYPES; i++)
        check_type(k_types[i], 12, 512, 5);
}

/* n_in not a multiple of 16/64 (float types' vec_dot fallback), and
 * n_out % 8 == 0 (Q4_0's repacked-gemv accumulation). */
TEST(other_shapes)
{
    check_type(QE_TYPE_F32, 5, 32 * 7, 3);
    check_type(QE_TYPE_F16, 5, 32 * 7, 3);
    check_type(QE_TYPE_BF16, 5, 32 * 7, 3);
    check_type(QE_TYPE_Q4_0, 16, 256, 3);
    check_type(QE_TYPE_Q8_0, 3, 32, 70); /* more tokens than one pass */
}

/* Weights all zero: finite zeros for every type. */
TEST(zero_weights)
{
    enum { NO = 4, NI = 256, NT = 2 };
    static float wf[NO * NI], x[NT * NI], y[NT * NO], ones[NI];
    static uint8_t wq[NO * NI * 4];
    memset(wf, 0, sizeof wf);
    for (int i = 0; i < NI; i++)
        ones[i] = 1.0f;
    for (int i = 0; i < NT * NI; i++)
        x[i] = rnd();
    for (int i = 0; i < N_TYPES; i++) {
        const int wt = k_types[i];
        qe_err err = {0};
        const size_t rnb = qe_type_row_nbytes(wt, NI);
        REQUIRE(qe_quantize_rows(wt, wf, wq, NO, NI, qe_type_needs_imatrix(wt) ? ones : NULL, 1,
                                 &err) == 0,
                "%s", err.msg);
        REQUIRE(qe_matmul_llamacpp(wt, wq, rnb, NO, NI, x, NT, y, &err) == 0, "%s", err.msg);
        for (int j = 0; j < NT * NO; j++)
            CHECKF(y[j] == 0.f, "%s: y[%d] = %g", qe_type_name(wt), j, y[j]);
    }
}

/* The single-dot API agrees with the matmul; thread count changes nothing. */
TEST(vec_dot_and_threads)
{
    enum { NO = 24, NI = 512, NT = 7 };
    const int wt = QE_TYPE_Q4_K;
    const size_t rnb = qe_type_row_nbytes(wt, NI);
    float *wf = malloc(sizeof(float) * NO * NI), *x = malloc(sizeof(float) * NT * NI);
    float *y1 = malloc(sizeof(float) * NT * NO), *y2 = malloc(sizeof(float) * NT * NO);
    uint8_t *wq = malloc(rnb * NO), *act = malloc(qe_type_row_nbytes(QE_TYPE_Q8_K, NI));
    for (int i = 0; i < NO * NI; i++)
        wf[i] = rnd();
    for (int i = 0; i < NT * NI; i++)
        x[i] = rnd();
    qe_err err = {0};
    CHECK(qe_quantize_rows(wt, wf, wq, NO, NI, NULL, 1, &err) == 0);
    const int nthr = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(qe_matmul_llamacpp(wt, wq, rnb, NO, NI, x, NT, y1, &err) == 0);
    omp_set_num_threads(3);
    CHECK(qe_matmul_llamacpp(wt, wq, rnb, NO, NI, x, NT, y2, &err) == 0);
    omp_set_num_threads(nthr);
    CHECK(memcmp(y1, y2, sizeof(float) * NT * NO) == 0);
    for (int t = 0; t < NT; t++) {
        qe_llamacpp_quantize_q8_K(x + t * NI, act, NI);
        for (int o = 0; o < NO; o += 5) {
            float s = 0.f;
            CHECK(qe_llamacpp_vec_dot(wt, NI, &s, wq + o * rnb, act, NO, &err) == 0);
            CHECKF(s == y1[t * NO + o], "vec_dot %.9g vs matmul %.9g", s, y1[t * NO + o]);
        }
    }
    free(wf);
    free(x);
    free(y1);
    free(y2);
    free(wq);
    free(act);
}

/* ---- (e) errors --------------------------------------------------- */

TEST(bad_shapes_and_types)
{
    static uint8_t w[4096];
    static float x[1024], y[64];
    memset(w, 0, sizeof w);
    memset(x, 0, sizeof x);
    qe_err err = {0};
    /* n_in not a multiple of 32 (q8_0) or 256 (q4_K, q8_K activations) */
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 34 * 2, 1, 48, x, 1, y, &err) == QE_ESHAPE);
    CHECKF(strstr(err.msg, "48") != NULL, "msg: %s", err.msg);
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q4_K, w, 144, 1, 32, x, 1, y, &err) == QE_ESHAPE);
    CHECKF(strstr(err.msg, "256") != NULL, "msg: %s", err.msg);
    CHECK(qe_matmul_llamacpp(QE_TYPE_IQ4_XS, w, 136, 1, 128, x, 1, y, &err) == QE_ESHAPE);
    CHECK(qe_matmul_llamacpp(QE_TYPE_F32, w, 0, 1, 0, x, 1, y, &err) == QE_ESHAPE);
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 34, 0, 32, x, 1, y, &err) == QE_ESHAPE);
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 34, 1, 32, x, -1, y, &err) == QE_ESHAPE);
    /* row stride smaller than a row */
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 33, 2, 32, x, 1, y, &err) == QE_ESHAPE);
    CHECKF(strstr(err.msg, "stride") != NULL, "msg: %s", err.msg);
    /* no path / unknown id */
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_1, w, 36, 1, 32, x, 1, y, &err) == QE_EUNSUPPORTED);
    CHECKF(strstr(err.msg, "q8_1") != NULL, "msg: %s", err.msg);
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_K, w, 292, 1, 256, x, 1, y, &err) == QE_EUNSUPPORTED);
    CHECK(qe_matmul_llamacpp(99, w, 34, 1, 32, x, 1, y, &err) == QE_ETYPE);
    CHECK(qe_matmul_llamacpp(-1, w, 34, 1, 32, x, 1, y, &err) == QE_ETYPE);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_Q8_1) == -1);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_IQ2_XXS) == QE_TYPE_Q8_K);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_Q6_K) == QE_TYPE_Q8_K);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_Q5_1) == QE_TYPE_Q8_1);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_IQ4_NL) == QE_TYPE_Q8_0);
    CHECK(qe_llamacpp_vec_dot_type(QE_TYPE_F16) == QE_TYPE_F16);
    /* non-finite activations */
    x[40] = NAN;
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 34, 1, 32, x, 2, y, &err) == QE_ENAN);
    CHECKF(strstr(err.msg, "row 1 column 8") != NULL, "msg: %s", err.msg);
    x[40] = INFINITY;
    CHECK(qe_matmul_llamacpp(QE_TYPE_F32, w, 128, 1, 32, x, 2, y, &err) == QE_ENAN);
    x[40] = 0.f;
    /* zero tokens: nothing to do */
    CHECK(qe_matmul_llamacpp(QE_TYPE_Q8_0, w, 34, 1, 32, x, 0, y, &err) == 0);
    CHECK(qe_matmul_llamacpp_ws_nbytes(QE_TYPE_Q4_K, 512, 3) == 3 * 2 * 292);
    CHECK(qe_matmul_llamacpp_ws_nbytes(QE_TYPE_Q4_K, 100, 3) == 0);
}

int main(void)
{
    RUN(act_q8_0_hand);
    RUN(act_q8_1_hand);
    RUN(act_q8_K_hand);
    RUN(dot_hand_q8_0);
    RUN(dot_hand_q4_1);
    RUN(dot_hand_q4_K);
    RUN(all_types_vs_independent);
    RUN(other_shapes);
    RUN(zero_weights);
    RUN(vec_dot_and_threads);
    RUN(bad_shapes_and_types);
    return test_finish();
}
