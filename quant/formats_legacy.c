/*
 * formats_legacy.c: the 32-weight block types Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q8_1: scalar dequantize (the spec), quantize one row, vec_dot.
 *
 * Quantizers mirror llama.cpp b4747's quantize_row_*_ref (no imatrix) and
 * quantize_q*_0/1 with quant_weights (imatrix: weighted LSQ via
 * make_qx_quants / make_qkx3_quants, sigma2 = mean x^2 of the whole row).
 * Q8_0/Q8_1 ignore the imatrix, as llama.cpp does.
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
}
