/*
 * formats_float.c: the plain float types F32, F16 and BF16 as traits-table
 * rows: scalar to_float / from_float / vec_dot (the spec for the SIMD
 * conversions).  from_float rounds to nearest-even like ggml's row
 * converters and refuses NaN/Inf input with QE_ENAN.
 */
#include "quant_internal.h"

static void f32_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    memcpy(y, x, (size_t)k * sizeof(float));
}

static void f16_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    const qe_half *h = x;
    for (int64_t i = 0; i < k; i++)
        y[i] = qe_h2f(h[i]);
}

static void bf16_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    const uint16_t *h = x;
    for (int64_t i = 0; i < k; i++)
        y[i] = qe_bf16_to_fp32(h[i]);
}

static int f32_from_float(const float *restrict x, void *restrict y, int64_t n,
                          const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    memcpy(y, x, (size_t)n * sizeof(float));
    return 0;
}

static int f16_from_float(const float *restrict x, void *restrict y, int64_t n,
                          const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_half *h = y;
    for (int64_t i = 0; i < n; i++)
        h[i] = qe_f2h(x[i]);
    return 0;
}

static int bf16_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++)
        h[i] = qe_fp32_to_bf16(x[i]);
    return 0;
}

/* Plain types use one "block" of 32 elements per step in the dot so the
 * stack buffer stays small; n need not be a multiple of 32. */
#define FLOAT_DOT(fname, to_float, elem_nbytes)                                           \
    static void fname(int64_t n, float *restrict s, const void *restrict vx,              \
                      const void *restrict vy)                                            \
    {                                                                                     \
        const uint8_t *xb = vx;                                                           \
        const float *y = vy;                                                              \
        float tmp[32];                                                                    \
        double acc = 0.0;                                                                 \
        for (int64_t i0 = 0; i0 < n; i0 += 32) {                                          \
            int64_t m = n - i0 < 32 ? n - i0 : 32;                                        \
            to_float(xb + i0 * (elem_nbytes), tmp, m);                                    \
            for (int64_t j = 0; j < m; j++)                                               \
                acc += (double)tmp[j] * (double)y[i0 + j];                                \
        }                                                                                 \
        *s = (float)acc;                                                                  \
    }
FLOAT_DOT(f32_vec_dot, f32_to_float, 4)
FLOAT_DOT(f16_vec_dot, f16_to_float, 2)
FLOAT_DOT(bf16_vec_dot, bf16_to_float, 2)

void qe_register_float(qe_type_traits *tab)
{
    tab[QE_TYPE_F32].to_float_ref = tab[QE_TYPE_F32].to_float = f32_to_float;
    tab[QE_TYPE_F32].from_float_ref = f32_from_float;
    tab[QE_TYPE_F32].vec_dot_ref = tab[QE_TYPE_F32].vec_dot = f32_vec_dot;
    tab[QE_TYPE_F16].to_float_ref = tab[QE_TYPE_F16].to_float = f16_to_float;
    tab[QE_TYPE_F16].from_float_ref = f16_from_float;
    tab[QE_TYPE_F16].vec_dot_ref = tab[QE_TYPE_F16].vec_dot = f16_vec_dot;
    tab[QE_TYPE_BF16].to_float_ref = tab[QE_TYPE_BF16].to_float = bf16_to_float;
    tab[QE_TYPE_BF16].from_float_ref = bf16_from_float;
    tab[QE_TYPE_BF16].vec_dot_ref = tab[QE_TYPE_BF16].vec_dot = bf16_vec_dot;
}
