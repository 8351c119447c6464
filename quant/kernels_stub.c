/*
 * kernels_stub.c: temporary kernel registration (F32/F16/BF16 only) until
 * the format files land.  Replaced by quant/formats_*.c.
 */
#include <string.h>

#include "quant.h"

static void f32_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    memcpy(y, x, (size_t)k * sizeof(float));
}

static void f16_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    const uint16_t *h = x;
    for (int64_t i = 0; i < k; i++)
        y[i] = qe_fp16_to_fp32(h[i]);
}

static void bf16_to_float(const void *restrict x, float *restrict y, int64_t k)
{
    const uint16_t *h = x;
    for (int64_t i = 0; i < k; i++)
        y[i] = qe_bf16_to_fp32(h[i]);
}

void qe_quant_register_kernels(qe_type_traits *tab);
void qe_quant_register_kernels(qe_type_traits *tab)
{
    tab[QE_TYPE_F32].to_float_ref = tab[QE_TYPE_F32].to_float = f32_to_float;
    tab[QE_TYPE_F16].to_float_ref = tab[QE_TYPE_F16].to_float = f16_to_float;
    tab[QE_TYPE_BF16].to_float_ref = tab[QE_TYPE_BF16].to_float = bf16_to_float;
}

const char *qe_quant_simd_level(void)
{
    return "ref";
}
