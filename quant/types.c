/*
 * types.c: the traits table, one row per ggml type id (b4747 numbering).
 *
 * Geometry for every id lives here so GGUF readers can size tensors of any
 * type.  Kernel pointers are wired in qe_quant_init() by the per-format
 * files (quant/formats_*.c) and the SIMD files.
 */
#include "quant.h"

#include <ctype.h>
#include <string.h>

/* Defined in the format files; fills the kernel pointers of `tab`. */
void qe_quant_register_kernels(qe_type_traits *tab);

static qe_type_traits g_traits[QE_TYPE_COUNT] = {
    [QE_TYPE_F32] = {"f32", 1, 4, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_F16] = {"f16", 1, 2, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q4_0] = {"q4_0", 32, 18, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q4_1] = {"q4_1", 32, 20, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q5_0] = {"q5_0", 32, 22, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q5_1] = {"q5_1", 32, 24, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q8_0] = {"q8_0", 32, 34, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q8_1] = {"q8_1", 32, 36, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q2_K] = {"q2_K", 256, 84, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q3_K] = {"q3_K", 256, 110, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q4_K] = {"q4_K", 256, 144, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q5_K] = {"q5_K", 256, 176, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q6_K] = {"q6_K", 256, 210, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_Q8_K] = {"q8_K", 256, 292, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ2_XS] = {"iq2_xs", 256, 74, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ1_S] = {"iq1_s", 256, 50, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ4_NL] = {"iq4_nl", 32, 18, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ3_S] = {"iq3_s", 256, 110, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ2_S] = {"iq2_s", 256, 82, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ4_XS] = {"iq4_xs", 256, 136, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_I8] = {"i8", 1, 1, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_I16] = {"i16", 1, 2, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_I32] = {"i32", 1, 4, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_I64] = {"i64", 1, 8, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_F64] = {"f64", 1, 8, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_IQ1_M] = {"iq1_m", 256, 56, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_BF16] = {"bf16", 1, 2, false, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_TQ1_0] = {"tq1_0", 256, 54, true, 0, 0, 0, 0, QE_TYPE_F32},
    [QE_TYPE_TQ2_0] = {"tq2_0", 256, 66, true, 0, 0, 0, 0, QE_TYPE_F32},
};

static bool g_inited;

const qe_type_traits *qe_type_get(int t)
{
    if (t < 0 || t >= QE_TYPE_COUNT || !g_traits[t].name)
        return NULL;
    if (!g_inited)
        qe_quant_init();
    return &g_traits[t];
}

const char *qe_type_name(int t)
{
    if (t < 0 || t >= QE_TYPE_COUNT)
        return NULL;
    return g_traits[t].name;
}

int qe_type_from_name(const char *name)
{
    for (int t = 0; t < QE_TYPE_COUNT; t++) {
        const char *n = g_traits[t].name;
        if (!n)
            continue;
        size_t i = 0;
        while (n[i] && name[i] && tolower((unsigned char)n[i]) == tolower((unsigned char)name[i]))
            i++;
        if (!n[i] && !name[i])
            return t;
    }
    return -1;
}

size_t qe_type_row_nbytes(int t, int64_t n)
{
    if (t < 0 || t >= QE_TYPE_COUNT || !g_traits[t].name || n < 0)
        return 0;
    if (n % g_traits[t].blck_size)
        return 0;
    return (size_t)(n / g_traits[t].blck_size) * g_traits[t].type_size;
}

double qe_type_bpw(int t)
{
    if (t < 0 || t >= QE_TYPE_COUNT || !g_traits[t].name)
        return 0.0;
    return 8.0 * (double)g_traits[t].type_size / (double)g_traits[t].blck_size;
}

void qe_quant_init(void)
{
    if (g_inited)
        return;
    g_inited = true;
    qe_quant_register_kernels(g_traits);
}
