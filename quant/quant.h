/*
 * quant.h: the ggml/GGUF tensor types as one traits table (the only
 * registry of type behaviour; STYLE.md "Quant formats").
 *
 * Holds: type ids (the ggml enum values, stored in GGUF files: never
 * renumber), block geometry, scalar reference (de)quantizers and dots,
 * runtime-dispatched SIMD variants.  Must not hold: file I/O, SQLite, CLI.
 *
 * Every type id that ggml b4747 knows has a row with its name, block size
 * and type size, so readers can validate and size tensors of any type;
 * `to_float` etc. are NULL where qeval cannot compute with the type yet.
 */
#ifndef QE_QUANT_H
#define QE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../harness/util/common.h"

typedef enum qe_type {
    QE_TYPE_F32 = 0,
    QE_TYPE_F16 = 1,
    QE_TYPE_Q4_0 = 2,
    QE_TYPE_Q4_1 = 3,
    /* 4, 5: removed Q4_2, Q4_3 */
    QE_TYPE_Q5_0 = 6,
    QE_TYPE_Q5_1 = 7,
    QE_TYPE_Q8_0 = 8,
    QE_TYPE_Q8_1 = 9,
    QE_TYPE_Q2_K = 10,
    QE_TYPE_Q3_K = 11,
    QE_TYPE_Q4_K = 12,
    QE_TYPE_Q5_K = 13,
    QE_TYPE_Q6_K = 14,
    QE_TYPE_Q8_K = 15,
    QE_TYPE_IQ2_XXS = 16,
    QE_TYPE_IQ2_XS = 17,
    QE_TYPE_IQ3_XXS = 18,
    QE_TYPE_IQ1_S = 19,
    QE_TYPE_IQ4_NL = 20,
    QE_TYPE_IQ3_S = 21,
    QE_TYPE_IQ2_S = 22,
    QE_TYPE_IQ4_XS = 23,
    QE_TYPE_I8 = 24,
    QE_TYPE_I16 = 25,
    QE_TYPE_I32 = 26,
    QE_TYPE_I64 = 27,
    QE_TYPE_F64 = 28,
    QE_TYPE_IQ1_M = 29,
    QE_TYPE_BF16 = 30,
    /* 31..33: removed Q4_0_4_4, Q4_0_4_8, Q4_0_8_8 */
    QE_TYPE_TQ1_0 = 34,
    QE_TYPE_TQ2_0 = 35,
    /* 36..38: removed IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8 */
    QE_TYPE_COUNT = 39,
} qe_type;

/*
 * Kernel signatures.  `k`/`n` are element counts and must be a multiple of
 * the block size.  Kernels never allocate and never fail: callers validate.
 *
 * to_float:   dequantize k elements from x (blocks) into y.
 * from_float: reference quantize of ONE row of n elements into y.
 *             imatrix (n importance weights, mean x^2 per column) may be
 *             NULL except for the types of qe_type_needs_imatrix.  Returns
 *             0, QE_ENAN if x holds NaN/Inf (y undefined), QE_EINVAL for a
 *             NULL imatrix where one is required, QE_ENOMEM if a grid
 *             type's search tables could not be built.
 * vec_dot:    *s = dot(x, y) over n elements, x of this type and y of
 *             `vec_dot_type` (F32 for the reference path).
 */
typedef void (*qe_to_float_fn)(const void *restrict x, float *restrict y, int64_t k);
typedef int (*qe_from_float_fn)(const float *restrict x, void *restrict y, int64_t n,
                                const float *restrict imatrix);
typedef void (*qe_vec_dot_fn)(int64_t n, float *restrict s, const void *restrict x,
                              const void *restrict y);
/* Decode's fused dequantize-and-dot (quant/simd_rowdot_avx512.c): for
 * t < nx (<= QE_ROW_DOT_MAX_X), out[t] = one weight row of n elements (n a
 * multiple of 64) dotted with x + t*ldx, bitwise equal to to_float then
 * qe_dot_f32 at the AVX-512 level (the contract is in that file). */
#define QE_ROW_DOT_MAX_X 4
typedef void (*qe_row_dot_fn)(const void *restrict row, int64_t n, const float *restrict x,
                              int nx, int64_t ldx, float *restrict out);

typedef struct qe_type_traits {
    const char *name;        /* ggml's name, e.g. "q4_K"; NULL for unused ids */
    int64_t blck_size;       /* elements per block (1 for plain types) */
    size_t type_size;        /* bytes per block */
    bool is_quantized;
    qe_to_float_fn to_float_ref;      /* scalar reference (the spec) */
    qe_to_float_fn to_float;          /* fastest available (SIMD or ref) */
    qe_from_float_fn from_float_ref;  /* scalar reference quantizer */
    qe_vec_dot_fn vec_dot;            /* x (this type) . y (vec_dot_type) */
    qe_type vec_dot_type;
    qe_vec_dot_fn vec_dot_ref;        /* scalar reference dot (fixed order) */
    qe_row_dot_fn row_dot;            /* decode kernel at the avx512 level, else NULL */
} qe_type_traits;

/* Row of the traits table, or NULL if `t` is not a known ggml type id. */
const qe_type_traits *qe_type_get(int t);
/* "q4_K" etc., or NULL for unknown ids. */
const char *qe_type_name(int t);
/* Parse a name case-insensitively ("Q4_K", "q4_k", "f16"); -1 if unknown. */
int qe_type_from_name(const char *name);
/* Bytes for a row of n elements; 0 if n is not a multiple of the block. */
size_t qe_type_row_nbytes(int t, int64_t n);
/* True if the type's quantizer cannot run without importance weights
 * (IQ2_XXS, IQ2_XS, IQ1_S: ggml asserts on them). */
bool qe_type_needs_imatrix(int t);
/* Bits per weight of the type itself (type_size*8/blck_size). */
double qe_type_bpw(int t);

/* Pick the best kernels for this CPU (AVX2/AVX-512 detection).  Idempotent;
 * called lazily by qe_type_get.  QEVAL_SIMD=ref|avx2|avx512 forces a level. */
void qe_quant_init(void);
/* "avx512", "avx2" or "ref": the level chosen. */
const char *qe_quant_simd_level(void);
/* Re-register the kernels at level "ref", "avx2" or "avx512" (tests and
 * benchmarks); QE_EUNSUPPORTED if the CPU cannot run it.  Not thread-safe:
 * call while no kernels run. */
int qe_quant_set_simd_level(const char *level);

/*
 * Quantize nrows rows of n_per_row floats (row-major, src) into dst
 * (nrows * qe_type_row_nbytes(type, n_per_row) bytes, caller-owned) with
 * the type's reference quantizer, OpenMP over rows (n_threads; the result
 * does not depend on it).  imatrix: n_per_row importance weights (mean x^2
 * per column, shared by all rows) or NULL.  Errors: QE_ETYPE unknown type,
 * QE_EUNSUPPORTED no quantizer, QE_ESHAPE row not a multiple of the block,
 * QE_EINVAL no imatrix for a type that needs one, QE_ENAN non-finite input
 * (message names the first bad row), QE_ENOMEM.
 */
int qe_quantize_rows(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                     const float *imatrix, int n_threads, qe_err *err);

#endif /* QE_QUANT_H */
