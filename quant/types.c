/*
 * types.c: the traits table, one row per ggml type id (b4747 numbering).
 *
 * Geometry for every id lives here so GGUF readers can size tensors of any
 * type.  Kernel pointers are wired in qe_quant_init() by the per-format
 * files (quant/formats_*.c) and the SIMD files.
 */
#include "quant.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

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

qe_from_float_fn qe_from_float_fast[QE_TYPE_COUNT];

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

bool qe_type_needs_imatrix(int t)
{
    return t == QE_TYPE_IQ2_XXS || t == QE_TYPE_IQ2_XS || t == QE_TYPE_IQ1_S;
}

double qe_type_bpw(int t)
{
    if (t < 0 || t >= QE_TYPE_COUNT || !g_traits[t].name)
        return 0.0;
    return 8.0 * (double)g_traits[t].type_size / (double)g_traits[t].blck_size;
}

/* ---- kernel registration and SIMD dispatch ------------------------ */

static const char *g_simd_level = "ref";

/* Highest level this CPU supports: 2 = avx512 (F+BW+VL), 1 = avx2+fma+f16c,
 * 0 = none. */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/* F16C via CPUID leaf 1, ECX bit 29 (clang 14 rejects "f16c" in
 * __builtin_cpu_supports). */
static bool cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    return (c >> 29) & 1u;
}
#endif

static int cpu_simd_level(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        return 1;
#endif
    return 0;
}

static void register_all(int level)
{
    memset(qe_from_float_fast, 0, sizeof qe_from_float_fast);
    for (size_t t = 0; t < sizeof g_traits / sizeof g_traits[0]; t++)
        g_traits[t].row_dot = NULL; /* a lower level has no fused decode kernels */
    qe_register_float(g_traits);
    qe_register_legacy(g_traits);
    qe_register_k(g_traits);
    qe_register_iq(g_traits);
    qe_register_iq_low(g_traits);
    g_simd_level = "ref";
    if (level == 0) /* "ref" runs the scalar spec only */
        memset(qe_from_float_fast, 0, sizeof qe_from_float_fast);
    if (level >= 1) {
        qe_register_avx2(g_traits);
        qe_register_iq_low_avx2(g_traits);
        g_simd_level = "avx2";
    }
    if (level >= 2) {
        qe_register_avx512(g_traits);
        qe_register_iq_low_avx512(g_traits);
        qe_register_rowdot_avx512(g_traits);
        g_simd_level = "avx512";
    }
}

static void quant_init_once(void)
{
    int level = cpu_simd_level();
    const char *force = getenv("QEVAL_SIMD");
    if (force && *force) {
        int want = !strcmp(force, "ref") ? 0 : !strcmp(force, "avx2") ? 1
                 : !strcmp(force, "avx512") ? 2 : level;
        if (want < level)
            level = want; /* never above what the CPU can run */
    }
    register_all(level);
    g_inited = true;
}

/* Thread-safe: the first caller registers, concurrent callers wait. */
void qe_quant_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, quant_init_once);
}

int qe_quant_set_simd_level(const char *level)
{
    if (!g_inited)
        qe_quant_init();
    int want = !strcmp(level, "ref") ? 0 : !strcmp(level, "avx2") ? 1
             : !strcmp(level, "avx512") ? 2 : -1;
    if (want < 0 || want > cpu_simd_level())
        return QE_EUNSUPPORTED;
    register_all(want);
    return 0;
}

const char *qe_quant_simd_level(void)
{
    if (!g_inited)
        qe_quant_init();
    return g_simd_level;
}

/* ---- many rows ------------------------------------------------------ */

int qe_quantize_rows(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                     const float *imatrix, int n_threads, qe_err *err)
{
    const qe_type_traits *tt = qe_type_get(type);
    if (!tt)
        return qe_err_set(err, QE_ETYPE, "quantize: unknown type id %d", type);
    if (!tt->from_float_ref)
        return qe_err_set(err, QE_EUNSUPPORTED, "quantize: type %s has no quantizer", tt->name);
    if (nrows < 0 || n_per_row <= 0)
        return qe_err_set(err, QE_EINVAL, "quantize %s: bad shape %lld x %lld", tt->name,
                          (long long)nrows, (long long)n_per_row);
    size_t row_nbytes = qe_type_row_nbytes(type, n_per_row);
    if (!row_nbytes)
        return qe_err_set(err, QE_ESHAPE,
                          "quantize %s: row length %lld is not a multiple of the block size %lld",
                          tt->name, (long long)n_per_row, (long long)tt->blck_size);
    if (!imatrix && qe_type_needs_imatrix(type))
        return qe_err_set(err, QE_EINVAL,
                          "quantize %s: this type needs importance weights (an imatrix); "
                          "llama.cpp refuses it without one too",
                          tt->name);
    /* the fast twin (byte-identical output) where this SIMD level has one */
    qe_from_float_fn quantize = qe_from_float_fast[type] ? qe_from_float_fast[type]
                                                         : tt->from_float_ref;
    int64_t bad_row = -1;
    int bad_rc = 0;
    if (n_threads < 1)
        n_threads = 1;
    /* rows cost the same: one contiguous run of rows per thread */
#pragma omp parallel for schedule(static) num_threads(n_threads) if (nrows > 1)
    for (int64_t r = 0; r < nrows; r++) {
        int rc = quantize(src + r * n_per_row, (uint8_t *)dst + (size_t)r * row_nbytes, n_per_row,
                          imatrix);
        if (rc) {
#pragma omp critical(qe_quantize_rows_err)
            {
                if (bad_row < 0 || r < bad_row) {
                    bad_row = r;
                    bad_rc = rc;
                }
            }
        }
    }
    if (bad_row >= 0 && bad_rc == QE_ENOMEM)
        return qe_err_set(err, bad_rc, "quantize %s: out of memory for the grid search tables",
                          tt->name);
    if (bad_row >= 0)
        return qe_err_set(err, bad_rc, "quantize %s: row %lld holds NaN or Inf", tt->name,
                          (long long)bad_row);
    return 0;
}
