/*
 * quant_internal.h: what the quant/ files share and nobody else needs:
 * the GGUF block layouts (pinned by static asserts, byte-compatible with
 * ggml-common.h of llama.cpp b4747), exact fp16 helpers, the rounding
 * helper the k-quant searches depend on, the scale/min search routines
 * (kquant_search.c), the fast-quantizer table and the SIMD search-kernel
 * interfaces (qe_iq4_kernels, qe_kquant_kernels: many independent fits
 * side by side, byte-identical to the scalar spec) and the per-file
 * registration hooks.
 *
 * Holds no I/O.  All multi-byte fields are little-endian (we only build on
 * little-endian x86-64, where the structs map the file bytes directly).
 */
#ifndef QE_QUANT_INTERNAL_H
#define QE_QUANT_INTERNAL_H

/* Never fuse a*b+c into one FMA rounding in the quant/ code, whatever the
 * build flags (GCC contracts by default under -std=gnu11, clang under any
 * -std): the quantizers and dequantizers must stay byte-identical to
 * llama.cpp's.  Include this header first, before <immintrin.h>, so the
 * whole translation unit is compiled alike.  Explicit FMA intrinsics (the
 * vec_dot kernels) are unaffected. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

#define QE_QK4_0 32
#define QE_QK4_1 32
#define QE_QK5_0 32
#define QE_QK5_1 32
#define QE_QK8_0 32
#define QE_QK8_1 32
#define QE_QK4_NL 32
#define QE_QK_K 256
#define QE_K_SCALE_SIZE 12

/* Groups whose largest |x| is below this are treated as all-zero
 * (ggml's GROUP_MAX_EPS). */
#define QE_GROUP_MAX_EPS 1e-15f

typedef uint16_t qe_half; /* IEEE binary16 bits */

/* ---- legacy 32-weight blocks ---------------------------------------- */
typedef struct { qe_half d; uint8_t qs[16]; } qe_block_q4_0;          /* x = d*(q-8) */
typedef struct { qe_half d, m; uint8_t qs[16]; } qe_block_q4_1;       /* x = d*q + m */
typedef struct { qe_half d; uint8_t qh[4]; uint8_t qs[16]; } qe_block_q5_0;
typedef struct { qe_half d, m; uint8_t qh[4]; uint8_t qs[16]; } qe_block_q5_1;
typedef struct { qe_half d; int8_t qs[32]; } qe_block_q8_0;           /* x = d*q */
typedef struct { qe_half d, s; int8_t qs[32]; } qe_block_q8_1;        /* s = d*sum(q) */
_Static_assert(sizeof(qe_block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(qe_block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(qe_block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(qe_block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(qe_block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(qe_block_q8_1) == 36, "q8_1 block size");

/* ---- k-quants: 256-weight super-blocks ------------------------------ */
typedef struct {
    uint8_t scales[16]; /* low nibble: 4-bit scale, high nibble: 4-bit min, per 16 */
    uint8_t qs[64];     /* 2-bit quants */
    qe_half d, dmin;
} qe_block_q2_K;
typedef struct {
    uint8_t hmask[32];  /* high bit of each 3-bit quant */
    uint8_t qs[64];     /* low 2 bits */
    uint8_t scales[12]; /* 16 x 6-bit scales, stored +32 */
    qe_half d;
} qe_block_q3_K;
typedef struct {
    qe_half d, dmin;
    uint8_t scales[QE_K_SCALE_SIZE]; /* 8 x 6-bit scales + 8 x 6-bit mins */
    uint8_t qs[128];
} qe_block_q4_K;
typedef struct {
    qe_half d, dmin;
    uint8_t scales[QE_K_SCALE_SIZE];
    uint8_t qh[32];  /* 5th bit */
    uint8_t qs[128]; /* low 4 bits */
} qe_block_q5_K;
typedef struct {
    uint8_t ql[128];   /* low 4 bits */
    uint8_t qh[64];    /* high 2 bits */
    int8_t scales[16]; /* 8-bit signed scale per 16 */
    qe_half d;
} qe_block_q6_K;
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16]; /* sum of qs per 16 */
} qe_block_q8_K;
_Static_assert(sizeof(qe_block_q2_K) == 84, "q2_K block size");
_Static_assert(sizeof(qe_block_q3_K) == 110, "q3_K block size");
_Static_assert(sizeof(qe_block_q4_K) == 144, "q4_K block size");
_Static_assert(sizeof(qe_block_q5_K) == 176, "q5_K block size");
_Static_assert(sizeof(qe_block_q6_K) == 210, "q6_K block size");
_Static_assert(sizeof(qe_block_q8_K) == 292, "q8_K block size");

/* ---- non-linear 4-bit ----------------------------------------------- */
typedef struct { qe_half d; uint8_t qs[16]; } qe_block_iq4_nl; /* x = d*kvalues[q] */
typedef struct {
    qe_half d;
    uint16_t scales_h;   /* high 2 bits of 8 x 6-bit scales */
    uint8_t scales_l[4]; /* low 4 bits */
    uint8_t qs[128];
} qe_block_iq4_xs;
_Static_assert(sizeof(qe_block_iq4_nl) == 18, "iq4_nl block size");
_Static_assert(sizeof(qe_block_iq4_xs) == 136, "iq4_xs block size");

/* ---- IQ1/IQ2/IQ3 grid types and ternary types (256-weight blocks) -- */
typedef struct { qe_half d; uint16_t qs[32]; } qe_block_iq2_xxs; /* 8 x (4 grid bytes, 4x7 signs + 4-bit scale) */
typedef struct { qe_half d; uint16_t qs[32]; uint8_t scales[8]; } qe_block_iq2_xs; /* 9-bit grid | 7-bit signs */
typedef struct {
    qe_half d;
    uint8_t qs[64];     /* 32 grid index low bytes, then 32 sign bytes */
    uint8_t qh[8];      /* grid index bits 8..9, 2 per group of 8 */
    uint8_t scales[8];  /* 4-bit scale per 16 */
} qe_block_iq2_s;
typedef struct { qe_half d; uint8_t qs[96]; } qe_block_iq3_xxs; /* 64 grid bytes, 8 x (4x7 signs + 4-bit scale) */
typedef struct {
    qe_half d;
    uint8_t qs[64];     /* grid index low bytes */
    uint8_t qh[8];      /* grid index bit 8 */
    uint8_t signs[32];
    uint8_t scales[4];  /* 4-bit scale per 32 */
} qe_block_iq3_s;
typedef struct { qe_half d; uint8_t qs[32]; uint16_t qh[8]; } qe_block_iq1_s;
typedef struct {
    uint8_t qs[32];     /* grid index low bytes */
    uint8_t qh[16];     /* grid index bits 8..10 + delta sign, per group of 8 */
    uint8_t scales[8];  /* 3-bit scales per 16; the fp16 d in the top nibbles */
} qe_block_iq1_m;
typedef struct { uint8_t qs[48]; uint8_t qh[4]; qe_half d; } qe_block_tq1_0; /* 5 trits/byte, then 4 */
typedef struct { uint8_t qs[64]; qe_half d; } qe_block_tq2_0;                 /* 2 bits per trit */
_Static_assert(sizeof(qe_block_iq2_xxs) == 66, "iq2_xxs block size");
_Static_assert(sizeof(qe_block_iq2_xs) == 74, "iq2_xs block size");
_Static_assert(sizeof(qe_block_iq2_s) == 82, "iq2_s block size");
_Static_assert(sizeof(qe_block_iq3_xxs) == 98, "iq3_xxs block size");
_Static_assert(sizeof(qe_block_iq3_s) == 110, "iq3_s block size");
_Static_assert(sizeof(qe_block_iq1_s) == 50, "iq1_s block size");
_Static_assert(sizeof(qe_block_iq1_m) == 56, "iq1_m block size");
_Static_assert(sizeof(qe_block_tq1_0) == 54, "tq1_0 block size");
_Static_assert(sizeof(qe_block_tq2_0) == 66, "tq2_0 block size");

#define QE_NGRID_IQ1S 2048
#define QE_IQ1S_DELTA 0.125f
#define QE_IQ1M_DELTA 0.125f

/* The codebooks (iq_grids.c), byte for byte ggml's: grid point i holds 8
 * (IQ1/IQ2: uint64) or 4 (IQ3: uint32) little-endian bytes; IQ1S bytes are
 * int8 -1/0/+1.  Filled by qe_iq_grids_init() (idempotent, thread-safe;
 * qe_register_iq calls it). */
extern uint64_t qe_iq2xxs_grid[256];
extern uint64_t qe_iq2xs_grid[512];
extern uint64_t qe_iq2s_grid[1024];
extern uint64_t qe_iq1s_grid[QE_NGRID_IQ1S];
extern uint32_t qe_iq3xxs_grid[256];
extern uint32_t qe_iq3s_grid[512];
/* 7 stored sign bits -> 8 (the 8th keeps the count of minus signs even) */
extern uint8_t qe_ksigns_iq2xs[128];
void qe_iq_grids_init(void);

/* Neighbour tables of the grid searches (ggml's iq2xs_init_impl /
 * iq3xs_init_impl): map[u] for a lattice point u (levels packed 2 or 3
 * bits per coordinate) is its grid index, or -(offset+1) into neighbours
 * where neighbours[offset] = count and the next count entries are grid
 * indices.  grid: the grid points in 2l+1 coordinates, ncoord int8 each. */
enum { QE_IQS_IQ2XXS, QE_IQS_IQ2XS, QE_IQS_IQ2S, QE_IQS_IQ1S, QE_IQS_IQ3XXS, QE_IQS_IQ3S,
       QE_IQS_COUNT };
typedef struct qe_iq_search {
    const int8_t *grid;
    int ncoord, grid_size;
    const int *map;
    const uint16_t *neighbours;
} qe_iq_search;
/* Built once on first use (thread-safe); NULL if out of memory. */
const qe_iq_search *qe_iq_search_get(int which);

/* The 16 IQ4_NL/IQ4_XS codebook values (formats_iq.c). */
extern const int8_t qe_kvalues_iq4nl[16];

/* ---- helpers -------------------------------------------------------- */

/* Exact binary16 -> binary32 (inline twin of qe_fp16_to_fp32). */
static inline float qe_h2f(qe_half h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp != 0 && exp != 31) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    return qe_fp16_to_fp32(h);
}
static inline qe_half qe_f2h(float f) { return qe_fp32_to_fp16(f); }

/* Round to nearest, ties to even, via the 1.5*2^23 trick ggml uses
 * (valid for |x| <= 4194303; the k-quant outputs depend on it). */
static inline int qe_nearest_int(float fval)
{
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

#define QE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QE_MAX(a, b) ((a) > (b) ? (a) : (b))

/* 1 if all n values are finite. */
static inline bool qe_all_finite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* The 16 signed 6-bit scales of a q3_K block's 12 packed scale bytes. */
static inline void qe_q3_K_scales(const uint8_t *restrict s12, int8_t *restrict sc)
{
    for (int j = 0; j < 16; ++j) {
        int lo = j < 8 ? (s12[j] & 0xF) : (s12[j - 8] >> 4);
        int hi = (s12[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* The 6-bit scale *d and min *m of 32-weight sub-block j (0..7) of a
 * q4_K/q5_K block's 12 packed scale bytes q (GGUF layout). */
/* always_inline: simd_rowdot_avx512.c (O3) calls it, and GCC does not inline
 * an -O2 function into an O3 one */
static inline __attribute__((always_inline)) void
qe_scale_min_k4(int j, const uint8_t *restrict q, uint8_t *restrict d, uint8_t *restrict m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* ---- scale / min searches (kquant_search.c), ggml semantics --------- */
float qe_make_qx_quants(int n, int nmax, const float *restrict x, int8_t *restrict L,
                        int rmse_type, const float *restrict qw);
float qe_make_q3_quants(int n, int nmax, const float *restrict x, int8_t *restrict L,
                        bool do_rmse);
float qe_make_qkx2_quants(int n, int nmax, const float *restrict x, const float *restrict weights,
                          uint8_t *restrict L, float *restrict the_min, uint8_t *restrict Laux,
                          float rmin, float rdelta, int nstep, bool use_mad);
float qe_make_qkx3_quants(int n, int nmax, const float *restrict x, const float *restrict weights,
                          uint8_t *restrict L, float *restrict the_min, uint8_t *restrict Laux,
                          float rmin, float rdelta, int nstep, bool use_mad);
float qe_make_qp_quants(int n, int nmax, const float *restrict x, uint8_t *restrict L,
                        const float *restrict quant_weights);
/* Index of the codebook entry (sorted, n values) nearest to x. */
int qe_best_index_int8(int n, const int8_t *val, float x);

/* ---- fast quantizers ------------------------------------------------ */
/* Per type, a quantizer with the from_float_ref contract whose output is
 * byte-identical to from_float_ref (same float operations per value in
 * the same order, only restructured: independent groups side by side in
 * vector lanes, inlined rounding).  NULL where a type has none.  Filled
 * by the qe_register_* hooks, cleared at SIMD level "ref" (so that level
 * runs the plain spec), used by qe_quantize_rows.  Defined in types.c. */
extern qe_from_float_fn qe_from_float_fast[QE_TYPE_COUNT];

/* IQ4_NL / IQ4_XS quantizers built on vector kernels (formats_iq.c holds
 * the driver, a SIMD file the kernels); output byte-identical to
 * from_float_ref. */
typedef struct qe_iq4_kernels {
    /* 16 candidate inverse scales id[16] for one 32-weight sub-block x with
     * weights w: for each lane t, in j order, q = codebook value nearest
     * to id[t]*x[j] (qe_best_index_int8 rules), sumqx[t] += w[j]*q*x[j],
     * sumq2[t] += w[j]*q*q, both from 0. */
    void (*trials16)(const float *restrict x, const float *restrict w, const float *restrict id,
                     float *restrict sumqx, float *restrict sumq2);
    /* L[j] = qe_best_index_int8(16, codebook, id*x[j]) for j < 32. */
    void (*index32)(const float *restrict x, float id, uint8_t *restrict L);
} qe_iq4_kernels;
int qe_iq4_nl_quantize_with(const qe_iq4_kernels *k, const float *restrict x, void *restrict y,
                            int64_t n, const float *restrict imatrix);
int qe_iq4_xs_quantize_with(const qe_iq4_kernels *k, const float *restrict x, void *restrict y,
                            int64_t n, const float *restrict imatrix);

/* K-quant search kernels: 16 independent fits side by side, one per
 * lane, each bit-identical to the scalar routine.  Inputs are transposed:
 * value i of group g sits at [i*16 + g]; n <= 32. */
typedef struct qe_kquant_kernels {
    /* qe_make_qkx2_quants (== qe_make_qkx3_quants with weights) for 16
     * groups; nstep >= 1.  Lt: levels, scale[g], the_min[g]. */
    void (*qkx2_16)(int n, int nmax, const float *restrict xt, const float *restrict wt,
                    uint8_t *restrict Lt, float *restrict scale, float *restrict the_min,
                    float rmin, float rdelta, int nstep, bool use_mad);
    /* qe_make_qx_quants(n, nmax, x, L, 1, qw) for 16 groups (qwt NULL:
     * weights x^2).  Lt: levels (+nmax), scale[g]. */
    void (*qx16)(int n, int nmax, const float *restrict xt, const float *restrict qwt,
                 int8_t *restrict Lt, float *restrict scale);
} qe_kquant_kernels;
/* Kernel layout helpers (kquant_search.c): n_groups (<= 16) groups of n
 * values (group g at src + g*n) -> dst[i*16 + g], lanes past n_groups
 * filled with group 0 (their results are ignored); and back for levels. */
void qe_kq_transpose_in(const float *restrict src, int n, int n_groups, float *restrict dst);
void qe_kq_transpose_out(const uint8_t *restrict src, int n, int n_groups, uint8_t *restrict dst);
/* Fast twins of the k-quant from_float_ref (formats_k.c drivers). */
int qe_q2_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q3_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q4_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q5_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q6_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
/* Fast twins of Q4_0/Q4_1/Q5_0/Q5_1 (formats_legacy.c): the imatrix path
 * runs 16 blocks per kernel call; without an imatrix the scalar
 * reference runs (it is cheap). */
int qe_q4_0_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q4_1_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q5_0_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);
int qe_q5_1_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict y,
                          int64_t n, const float *restrict imatrix);

/* ---- registration hooks (called from qe_quant_init in types.c) ------ */
void qe_register_float(qe_type_traits *tab);
void qe_register_legacy(qe_type_traits *tab);
void qe_register_k(qe_type_traits *tab);
void qe_register_iq(qe_type_traits *tab);
void qe_register_iq_low(qe_type_traits *tab);
/* Overwrite to_float/vec_dot with SIMD variants where the CPU allows. */
void qe_register_avx2(qe_type_traits *tab);
void qe_register_avx512(qe_type_traits *tab);
void qe_register_rowdot_avx512(qe_type_traits *tab);
/* The same for the types below 4 bits (simd_iq_low.c). */
void qe_register_iq_low_avx2(qe_type_traits *tab);
void qe_register_iq_low_avx512(qe_type_traits *tab);

/* Reference vec_dot built on a type's to_float_ref: dequantize one block at
 * a time into a stack buffer, accumulate x*y in double, in index order. */
#define QE_DEFINE_VEC_DOT_REF(fname, block_t, qk, to_float)                               \
    static void fname(int64_t n, float *restrict s, const void *restrict vx,              \
                      const void *restrict vy)                                            \
    {                                                                                     \
        const block_t *xb = vx;                                                           \
        const float *y = vy;                                                              \
        float tmp[qk];                                                                    \
        double acc = 0.0;                                                                 \
        for (int64_t ib = 0; ib < n / (qk); ib++) {                                       \
            to_float(xb + ib, tmp, (qk));                                                 \
            for (int j = 0; j < (qk); j++)                                                \
                acc += (double)tmp[j] * (double)y[ib * (qk) + j];                         \
        }                                                                                 \
        *s = (float)acc;                                                                  \
    }

#endif /* QE_QUANT_INTERNAL_H */
