/*
 * formats_legacy.c: the 32-weight block types Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q8_1: scalar dequantize (the spec), quantize one row, vec_dot.
 *
 * Quantizers mirror llama.cpp b4747's quantize_row_*_ref (no imatrix) and
 * quantize_q*_0/1 with quant_weights (imatrix: weighted LSQ via
 * make_qx_quants / make_qkx3_quants, sigma2 = mean x^2 of the whole row).
 * Q8_0/Q8_1 ignore the imatrix, as llama.cpp does.
 *
 * Fast twins (same bytes): Q8_0 with roundf inlined, and the imatrix
 * paths of Q4_0/Q4_1/Q5_0/Q5_1 with 16 blocks per SIMD kernel call.
 */
#include <float.h>

#include "quant_internal.h"

/* ---- dequantize ----------------------------------------------------- */

static void q4_0_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_0 *x = vx;
    for (int64_t i = 0; i < k / QE_QK4_0; i++) {
        const float d = qe_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[i * 32 + j] = x0 * d;
            y[i * 32 + j + 16] = x1 * d;
        }
    }
}

static void q4_1_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_1 *x = vx;
    for (int64_t i = 0; i < k / QE_QK4_1; i++) {
        const float d = qe_h2f(x[i].d), m = qe_h2f(x[i].m);
        for (int j = 0; j < 16; ++j) {
            const int x0 = x[i].qs[j] & 0x0F;
            const int x1 = x[i].qs[j] >> 4;
            y[i * 32 + j] = x0 * d + m;
            y[i * 32 + j + 16] = x1 * d + m;
        }
    }
}

static void q5_0_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_0 *x = vx;
    for (int64_t i = 0; i < k / QE_QK5_0; i++) {
        const float d = qe_h2f(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < 16; ++j) {
            const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
            const int32_t x0 = ((x[i].qs[j] & 0x0F) | xh_0) - 16;
            const int32_t x1 = ((x[i].qs[j] >> 4) | xh_1) - 16;
            y[i * 32 + j] = x0 * d;
            y[i * 32 + j + 16] = x1 * d;
        }
    }
}

static void q5_1_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_1 *x = vx;
    for (int64_t i = 0; i < k / QE_QK5_1; i++) {
        const float d = qe_h2f(x[i].d), m = qe_h2f(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < 16; ++j) {
            const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
            const int x0 = (x[i].qs[j] & 0x0F) | xh_0;
            const int x1 = (x[i].qs[j] >> 4) | xh_1;
            y[i * 32 + j] = x0 * d + m;
            y[i * 32 + j + 16] = x1 * d + m;
        }
    }
}

static void q8_0_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q8_0 *x = vx;
    for (int64_t i = 0; i < k / QE_QK8_0; i++) {
        const float d = qe_h2f(x[i].d);
        for (int j = 0; j < 32; ++j)
            y[i * 32 + j] = x[i].qs[j] * d;
    }
}

static void q8_1_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q8_1 *x = vx;
    for (int64_t i = 0; i < k / QE_QK8_1; i++) {
        const float d = qe_h2f(x[i].d);
        for (int j = 0; j < 32; ++j)
            y[i * 32 + j] = x[i].qs[j] * d;
    }
}

/* ---- quantize: reference (no imatrix) ------------------------------- */

static void q4_0_quant_ref(const float *restrict x, qe_block_q4_0 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = x[i * 32 + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        for (int j = 0; j < 16; ++j) {
            const float x0 = x[i * 32 + j] * id;
            const float x1 = x[i * 32 + 16 + j] * id;
            const uint8_t xi0 = (uint8_t)QE_MIN(15, (int8_t)(x0 + 8.5f));
            const uint8_t xi1 = (uint8_t)QE_MIN(15, (int8_t)(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

static void q4_1_quant_ref(const float *restrict x, qe_block_q4_1 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            const float v = x[i * 32 + j];
            if (v < min)
                min = v;
            if (v > max)
                max = v;
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        y[i].m = qe_f2h(min);
        for (int j = 0; j < 16; ++j) {
            const float x0 = (x[i * 32 + j] - min) * id;
            const float x1 = (x[i * 32 + 16 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)QE_MIN(15, (int8_t)(x0 + 0.5f));
            const uint8_t xi1 = (uint8_t)QE_MIN(15, (int8_t)(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

static void q5_0_quant_ref(const float *restrict x, qe_block_q5_0 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = x[i * 32 + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const float x0 = x[i * 32 + j] * id;
            const float x1 = x[i * 32 + 16 + j] * id;
            const uint8_t xi0 = (uint8_t)QE_MIN(31, (int8_t)(x0 + 16.5f));
            const uint8_t xi1 = (uint8_t)QE_MIN(31, (int8_t)(x1 + 16.5f));
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y[i].qh, &qh, sizeof qh);
    }
}

static void q5_1_quant_ref(const float *restrict x, qe_block_q5_1 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            const float v = x[i * 32 + j];
            if (v < min)
                min = v;
            if (v > max)
                max = v;
        }
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        y[i].m = qe_f2h(min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const float x0 = (x[i * 32 + j] - min) * id;
            const float x1 = (x[i * 32 + 16 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)(x0 + 0.5f);
            const uint8_t xi1 = (uint8_t)(x1 + 0.5f);
            y[i].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y[i].qh, &qh, sizeof qh);
    }
}

static void q8_0_quant_ref(const float *restrict x, qe_block_q8_0 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = QE_MAX(amax, fabsf(x[i * 32 + j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        for (int j = 0; j < 32; ++j)
            y[i].qs[j] = (int8_t)roundf(x[i * 32 + j] * id);
    }
}

static void q8_1_quant_ref(const float *restrict x, qe_block_q8_1 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = QE_MAX(amax, fabsf(x[i * 32 + j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        int sum = 0;
        for (int j = 0; j < 16; ++j) {
            y[i].qs[j] = (int8_t)roundf(x[i * 32 + j] * id);
            y[i].qs[16 + j] = (int8_t)roundf(x[i * 32 + 16 + j] * id);
            sum += y[i].qs[j] + y[i].qs[16 + j];
        }
        y[i].s = qe_f2h(sum * d);
    }
}

/* ---- quantize: importance-weighted (imatrix) ------------------------ */

static float row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j)
        sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static void q4_0_quant_imat(const float *restrict x, qe_block_q4_0 *restrict y, int64_t n,
                            const float *restrict qw_row)
{
    float weight[32];
    int8_t L[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *qw = qw_row + 32 * ib;
        for (int j = 0; j < 32; ++j)
            weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        float d = qe_make_qx_quants(32, 8, xb, L, 1, weight);
        y[ib].d = qe_f2h(d);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void q4_1_quant_imat(const float *restrict x, qe_block_q4_1 *restrict y, int64_t n,
                            const float *restrict qw_row)
{
    float weight[32];
    uint8_t L[32], Laux[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *qw = qw_row + 32 * ib;
        for (int j = 0; j < 32; ++j)
            weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        float min;
        float d = qe_make_qkx3_quants(32, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = qe_f2h(d);
        y[ib].m = qe_f2h(-min);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void q5_0_quant_imat(const float *restrict x, qe_block_q5_0 *restrict y, int64_t n,
                            const float *restrict qw_row)
{
    float weight[32];
    int8_t L[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *qw = qw_row + 32 * ib;
        for (int j = 0; j < 32; ++j)
            weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        float d = qe_make_qx_quants(32, 16, xb, L, 1, weight);
        y[ib].d = qe_f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const uint8_t xi0 = (uint8_t)L[j], xi1 = (uint8_t)L[j + 16];
            y[ib].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y[ib].qh, &qh, sizeof qh);
    }
}

static void q5_1_quant_imat(const float *restrict x, qe_block_q5_1 *restrict y, int64_t n,
                            const float *restrict qw_row)
{
    float weight[32];
    uint8_t L[32], Laux[32];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / 32; ++ib) {
        const float *xb = x + 32 * ib, *qw = qw_row + 32 * ib;
        for (int j = 0; j < 32; ++j)
            weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        float min;
        float d = qe_make_qkx3_quants(32, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = qe_f2h(d);
        y[ib].m = qe_f2h(-min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const uint8_t xi0 = L[j], xi1 = L[j + 16];
            y[ib].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y[ib].qh, &qh, sizeof qh);
    }
}

/* ---- fast twins ------------------------------------------------------ */

/* roundf(v) (halves away from zero) without the libm call; exact for
 * |v| < 2^31: (int)v truncates and v - trunc(v) is exact. */
static inline int round_half_away(float v)
{
    int r = (int)v;
    float frac = v - (float)r;
    return r + (frac >= 0.5f) - (frac <= -0.5f);
}

/* q8_0_quant_ref with the rounding inlined: |x*id| <= 127 (id = 127/amax). */
static void q8_0_quant_fast(const float *restrict x, qe_block_q8_0 *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / 32; i++) {
        const float *xb = x + i * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = QE_MAX(amax, fabsf(xb[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; ++j)
            q[j] = round_half_away(xb[j] * id);
        y[i].d = qe_f2h(d);
        for (int j = 0; j < 32; ++j)
            y[i].qs[j] = (int8_t)q[j];
    }
}

static int q8_0_from_float_fast(const float *restrict x, void *restrict y, int64_t n,
                                const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q8_0_quant_fast(x, y, n);
    return 0;
}

/* ---- traits entry points -------------------------------------------- */

#define LEGACY_FROM_FLOAT(fname, ref_fn, imat_fn)                                          \
    static int fname(const float *restrict x, void *restrict y, int64_t n,                \
                     const float *restrict imatrix)                                       \
    {                                                                                     \
        if (!qe_all_finite(x, n))                                                         \
            return QE_ENAN;                                                               \
        if (imatrix)                                                                      \
            imat_fn(x, y, n, imatrix);                                                    \
        else                                                                              \
            ref_fn(x, y, n);                                                              \
        return 0;                                                                         \
    }

LEGACY_FROM_FLOAT(q4_0_from_float, q4_0_quant_ref, q4_0_quant_imat)
LEGACY_FROM_FLOAT(q4_1_from_float, q4_1_quant_ref, q4_1_quant_imat)
LEGACY_FROM_FLOAT(q5_0_from_float, q5_0_quant_ref, q5_0_quant_imat)
LEGACY_FROM_FLOAT(q5_1_from_float, q5_1_quant_ref, q5_1_quant_imat)

static int q8_0_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    (void)imatrix; /* llama.cpp ignores it for Q8_0 */
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q8_0_quant_ref(x, y, n);
    return 0;
}

static int q8_1_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q8_1_quant_ref(x, y, n);
    return 0;
}

QE_DEFINE_VEC_DOT_REF(q4_0_vec_dot, qe_block_q4_0, 32, q4_0_to_float)
QE_DEFINE_VEC_DOT_REF(q4_1_vec_dot, qe_block_q4_1, 32, q4_1_to_float)
QE_DEFINE_VEC_DOT_REF(q5_0_vec_dot, qe_block_q5_0, 32, q5_0_to_float)
QE_DEFINE_VEC_DOT_REF(q5_1_vec_dot, qe_block_q5_1, 32, q5_1_to_float)
QE_DEFINE_VEC_DOT_REF(q8_0_vec_dot, qe_block_q8_0, 32, q8_0_to_float)
QE_DEFINE_VEC_DOT_REF(q8_1_vec_dot, qe_block_q8_1, 32, q8_1_to_float)

/* ---- fast twins of the imatrix path: 16 blocks per kernel call ------- */

/* Importance weights of nblk 32-weight blocks: qw * sqrt(sigma2 + x^2). */
static void legacy_weights(const float *restrict x, const float *restrict qw, int nblk,
                           float sigma2, float *restrict weight)
{
    for (int j = 0; j < 32 * nblk; ++j)
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* Symmetric types (Q4_0 nmax 8, Q5_0 nmax 16): make_qx_quants per block;
 * d[b] and the levels (+nmax) L[32*b + j] for nblk <= 16 blocks. */
static void legacy_sym_fits(const qe_kquant_kernels *k, const float *restrict x,
                            const float *restrict qw, int nblk, float sigma2, int nmax,
                            float *restrict d, uint8_t *restrict L)
{
    float weight[512], xt[512], wt[512];
    uint8_t Lt[512];
    legacy_weights(x, qw, nblk, sigma2, weight);
    qe_kq_transpose_in(x, 32, nblk, xt);
    qe_kq_transpose_in(weight, 32, nblk, wt);
    k->qx16(32, nmax, xt, wt, (int8_t *)Lt, d);
    qe_kq_transpose_out(Lt, 32, nblk, L);
}

/* Asymmetric types (Q4_1 nmax 15, Q5_1 nmax 31): make_qkx3_quants. */
static void legacy_asym_fits(const qe_kquant_kernels *k, const float *restrict x,
                             const float *restrict qw, int nblk, float sigma2, int nmax,
                             float *restrict d, float *restrict the_min, uint8_t *restrict L)
{
    float weight[512], xt[512], wt[512];
    uint8_t Lt[512];
    legacy_weights(x, qw, nblk, sigma2, weight);
    qe_kq_transpose_in(x, 32, nblk, xt);
    qe_kq_transpose_in(weight, 32, nblk, wt);
    k->qkx2_16(32, nmax, xt, wt, Lt, d, the_min, -0.9f, 0.05f, 36, false);
    qe_kq_transpose_out(Lt, 32, nblk, L);
}

int qe_q4_0_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!imatrix)
        return q4_0_from_float(x, vy, n, imatrix);
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q4_0 *y = vy;
    const float sigma2 = row_sigma2(x, n);
    float d[16];
    uint8_t L[512];
    for (int64_t ib = 0; ib < n / 32; ib += 16) {
        int nblk = n / 32 - ib >= 16 ? 16 : (int)(n / 32 - ib);
        legacy_sym_fits(k, x + 32 * ib, imatrix + 32 * ib, nblk, sigma2, 8, d, L);
        for (int b = 0; b < nblk; ++b) {
            const uint8_t *Lb = L + 32 * b;
            y[ib + b].d = qe_f2h(d[b]);
            for (int j = 0; j < 16; ++j)
                y[ib + b].qs[j] = (uint8_t)(Lb[j] | (Lb[j + 16] << 4));
        }
    }
    return 0;
}

int qe_q5_0_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!imatrix)
        return q5_0_from_float(x, vy, n, imatrix);
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q5_0 *y = vy;
    const float sigma2 = row_sigma2(x, n);
    float d[16];
    uint8_t L[512];
    for (int64_t ib = 0; ib < n / 32; ib += 16) {
        int nblk = n / 32 - ib >= 16 ? 16 : (int)(n / 32 - ib);
        legacy_sym_fits(k, x + 32 * ib, imatrix + 32 * ib, nblk, sigma2, 16, d, L);
        for (int b = 0; b < nblk; ++b) {
            const uint8_t *Lb = L + 32 * b;
            y[ib + b].d = qe_f2h(d[b]);
            uint32_t qh = 0;
            for (int j = 0; j < 16; ++j) {
                const uint8_t xi0 = Lb[j], xi1 = Lb[j + 16];
                y[ib + b].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
                qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
                qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
            }
            memcpy(y[ib + b].qh, &qh, sizeof qh);
        }
    }
    return 0;
}

int qe_q4_1_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!imatrix)
        return q4_1_from_float(x, vy, n, imatrix);
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q4_1 *y = vy;
    const float sigma2 = row_sigma2(x, n);
    float d[16], the_min[16];
    uint8_t L[512];
    for (int64_t ib = 0; ib < n / 32; ib += 16) {
        int nblk = n / 32 - ib >= 16 ? 16 : (int)(n / 32 - ib);
        legacy_asym_fits(k, x + 32 * ib, imatrix + 32 * ib, nblk, sigma2, 15, d, the_min, L);
        for (int b = 0; b < nblk; ++b) {
            const uint8_t *Lb = L + 32 * b;
            y[ib + b].d = qe_f2h(d[b]);
            y[ib + b].m = qe_f2h(-the_min[b]);
            for (int j = 0; j < 16; ++j)
                y[ib + b].qs[j] = (uint8_t)(Lb[j] | (Lb[j + 16] << 4));
        }
    }
    return 0;
}

int qe_q5_1_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!imatrix)
        return q5_1_from_float(x, vy, n, imatrix);
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q5_1 *y = vy;
    const float sigma2 = row_sigma2(x, n);
    float d[16], the_min[16];
    uint8_t L[512];
    for (int64_t ib = 0; ib < n / 32; ib += 16) {
        int nblk = n / 32 - ib >= 16 ? 16 : (int)(n / 32 - ib);
        legacy_asym_fits(k, x + 32 * ib, imatrix + 32 * ib, nblk, sigma2, 31, d, the_min, L);
        for (int b = 0; b < nblk; ++b) {
            const uint8_t *Lb = L + 32 * b;
            y[ib + b].d = qe_f2h(d[b]);
            y[ib + b].m = qe_f2h(-the_min[b]);
            uint32_t qh = 0;
            for (int j = 0; j < 16; ++j) {
                const uint8_t xi0 = Lb[j], xi1 = Lb[j + 16];
                y[ib + b].qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
                qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
                qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
            }
            memcpy(y[ib + b].qh, &qh, sizeof qh);
        }
    }
    return 0;
}

#define REG(T, pre)                                                                       \
    do {                                                                                  \
        tab[T].to_float_ref = tab[T].to_float = pre##_to_float;                           \
        tab[T].from_float_ref = pre##_from_float;                                         \
        tab[T].vec_dot_ref = tab[T].vec_dot = pre##_vec_dot;                              \
    } while (0)

void qe_register_legacy(qe_type_traits *tab)
{
    REG(QE_TYPE_Q4_0, q4_0);
    REG(QE_TYPE_Q4_1, q4_1);
    REG(QE_TYPE_Q5_0, q5_0);
    REG(QE_TYPE_Q5_1, q5_1);
    REG(QE_TYPE_Q8_0, q8_0);
    REG(QE_TYPE_Q8_1, q8_1);
    qe_from_float_fast[QE_TYPE_Q8_0] = q8_0_from_float_fast;
}
