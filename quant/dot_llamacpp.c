/*
 * dot_llamacpp.c: llama.cpp CPU-backend matmul numerics (see
 * dot_llamacpp.h for what and why).  Scalar code that reproduces what
 * ggml's x86 SIMD kernels compute: integer parts exactly, float parts
 * with the same operations (FMA per block into 8 lanes, same reduction).
 *
 * Which ggml path this follows, per weight type (llama.cpp b4747, x86
 * build with AVX-512 + LLAMAFILE + AARCH64_REPACK, AMX off):
 *   q8_0 q5_0 iq4_nl, q4_0 (n_out % 8 != 0): llamafile tinyBLAS_Q0_AVX:
 *       per block acc[k] = fma(d_w*d_a, (float)isum_k, acc[k]), 8 lanes.
 *   q4_0 with n_out % 8 == 0: ggml repacks to q4_0_8x8; its gemv/gemm
 *       sum a block's 32 products into one int:  acc = fma((float)isum,
 *       d_w*d_a, acc), no final reduction.
 *   q4_1 q5_1: ggml_vec_dot_q4_1_q8_1 / q5_1 AVX2: 8 lanes + summs m*s.
 *   q2_K..q6_K, iq4_xs: ggml_vec_dot_*_q8_K AVX2 (see each accum_*).
 *   iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq1_s iq1_m tq1_0 tq2_0: their
 *       ggml_vec_dot_*_q8_K AVX2 kernels: per block the integer lanes
 *       (grid value * sign * q8, times the sub-block's odd scale), one FMA
 *       by d = d_w*d_a into 8 lanes, a constant factor after the final
 *       sum (1/8 for iq2, 1/4 for iq3_xxs); iq1_s/iq1_m add their delta
 *       term, tq1_0/tq2_0 subtract the q8 block sums per lane pair.  The
 *       fused operations are where the b4747 gnu11 -O3 build fuses them
 *       (checked in its disassembly).
 *   f32, f16 (n % 16 == 0): tinyBLAS 16-lane FMA (AVX-512), then
 *       _mm512_reduce_add_ps; otherwise ggml_vec_dot_f32/f16 (4 x 16
 *       lanes per 64, leftovers summed in double).
 *   bf16 (n % 32 == 0): tinyBLAS with AVX512-BF16 dpbf16_ps; otherwise
 *       ggml_vec_dot_bf16.
 *
 * Known deviations (best effort; none changes an integer sum):
 *   - tinyBLAS_Q0_AVX's 4xN tiles may reduce lanes inside a block before
 *     the FMA; we keep the 8-lane form of the vec_dot kernels.
 *   - dpbf16_ps flushes denormals (DAZ/FTZ); we do not.
 *   - AMX paths are not modelled (the goldens were made without AMX).
 *
 * Holds no I/O.  The per-type behaviour lives in one table (k_rows).
 */
#include "dot_llamacpp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"

/* ===================== float helpers (AVX register emulation) ========= */

/* hsum_float_8: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
static inline float hsum8(const float a[8])
{
    const float r0 = a[0] + a[4], r1 = a[1] + a[5], r2 = a[2] + a[6], r3 = a[3] + a[7];
    const float s0 = r0 + r2, s1 = r1 + r3;
    return s0 + s1;
}

/* __m128 reduce (movehl + movehdup): (l0+l2) + (l1+l3). */
static inline float hsum4(const float a[4])
{
    const float s0 = a[0] + a[2], s1 = a[1] + a[3];
    return s0 + s1;
}

/* _mm512_reduce_add_ps: halves 16->8->4, then (l0+l2)+(l1+l3). */
static inline float hsum16(const float a[16])
{
    float v8[8], v4[4];
    for (int i = 0; i < 8; i++)
        v8[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++)
        v4[i] = v8[i + 4] + v8[i];
    return hsum4(v4);
}

/* _mm256_round_ps(NEAREST) + _mm256_cvtps_epi32 + packs to int8: ties to
 * even; out-of-int32-range and NaN become INT_MIN, which saturates to
 * -128; everything else saturates to [-128, 127]. */
static inline int8_t round_sat_i8(float v)
{
    if (!(v == v) || fabsf(v) >= 2147483648.f)
        return -128;
    if (v > 127.f)
        return 127;
    if (v < -128.f)
        return -128;
    return (int8_t)qe_nearest_int(v);
}

/* ===================== activation quantizers ======================== */

/* Largest |x| of one 32-block (the order does not matter for max). */
static inline float block_amax(const float *x, int n)
{
    float amax = 0.f;
    for (int j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

void qe_llamacpp_quantize_q8_0(const float *restrict x, void *restrict vy, int64_t n)
{
    qe_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / QE_QK8_0; i++, x += QE_QK8_0) {
        const float amax = block_amax(x, QE_QK8_0);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[i].d = qe_f2h(d);
        for (int j = 0; j < QE_QK8_0; j++)
            y[i].qs[j] = round_sat_i8(x[j] * id);
    }
}

void qe_llamacpp_quantize_q8_1(const float *restrict x, void *restrict vy, int64_t n)
{
    qe_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / QE_QK8_1; i++, x += QE_QK8_1) {
        const float amax = block_amax(x, QE_QK8_1);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        int sum = 0;
        y[i].d = qe_f2h(d);
        for (int j = 0; j < QE_QK8_1; j++) {
            /* ggml sums the int32 values before the int8 pack; for finite
             * input they are already in [-127, 127], so this is equal. */
            y[i].qs[j] = round_sat_i8(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = qe_f2h(d * (float)sum);
    }
}

void qe_llamacpp_quantize_q8_K(const float *restrict x, void *restrict vy, int64_t n)
{
    qe_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / QE_QK_K; i++, x += QE_QK_K) {
        float max = 0.f, amax = 0.f;
        for (int j = 0; j < QE_QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j]; /* keeps the sign: d < 0 when this is positive */
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]); /* ggml leaves bsums unset here */
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QE_QK_K; j++) {
            const float v = iscale * x[j];
            y[i].qs[j] = (int8_t)QE_MIN(127, qe_nearest_int(v));
        }
        for (int j = 0; j < QE_QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.f / iscale;
    }
}

/* ===================== decoded weight blocks ======================== */

/* One weight block as integers.  q: weights in element order, already
 * offset as ggml's kernels use them (q4_0: q-8, q3_K: -4..3, q6_K:
 * -32..31, iq4: codebook value; q4_1/q5_1/q2_K/q4_K/q5_K unsigned).
 * sc: per-16 sub-block scale (k-quants, iq4_xs).  mn: mins per 16 (q2_K)
 * or per 32 (q4_K, q5_K).  d/dmin/m: the block's fp16 fields as float. */
typedef struct wblock {
    int8_t q[QE_QK_K];
    int8_t q2[QE_QK_K];      /* iq1_m: the +-1 delta sign of each weight's group */
    int16_t sc[QE_QK_K / 16];
    int16_t mn[QE_QK_K / 16];
    float d, dmin, m;
} wblock;

/* Running sums of one output (one __m256 acc, one __m128 acc_m, one
 * scalar summs, as ggml's kernels keep them). */
typedef struct dot_state {
    float acc[8];
    float acc2[8]; /* iq1_m's delta lanes */
    float accm[4];
    float summs;
} dot_state;

static void decode_q4_0(const void *vb, wblock *wb)
{
    const qe_block_q4_0 *b = vb;
    wb->d = qe_h2f(b->d);
    for (int j = 0; j < 16; j++) {
        wb->q[j] = (int8_t)((b->qs[j] & 0x0F) - 8);
        wb->q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
}

static void decode_q4_1(const void *vb, wblock *wb)
{
    const qe_block_q4_1 *b = vb;
    wb->d = qe_h2f(b->d);
    wb->m = qe_h2f(b->m);
    for (int j = 0; j < 16; j++) {
        wb->q[j] = (int8_t)(b->qs[j] & 0x0F);
        wb->q[j + 16] = (int8_t)(b->qs[j] >> 4);
    }
}

/* The 5th bit of weight j (0..31) is bit j of qh (little-endian u32). */
static inline uint32_t load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 |
           (uint32_t)qh[3] << 24;
}

static void decode_q5_0(const void *vb, wblock *wb)
{
    const qe_block_q5_0 *b = vb;
    const uint32_t qh = load_qh(b->qh);
    wb->d = qe_h2f(b->d);
    for (int j = 0; j < 16; j++) {
        const int h0 = (int)((qh >> j) & 1u) << 4, h1 = (int)((qh >> (j + 16)) & 1u) << 4;
        wb->q[j] = (int8_t)(((b->qs[j] & 0x0F) | h0) - 16);
        wb->q[j + 16] = (int8_t)(((b->qs[j] >> 4) | h1) - 16);
    }
}

static void decode_q5_1(const void *vb, wblock *wb)
{
    const qe_block_q5_1 *b = vb;
    const uint32_t qh = load_qh(b->qh);
    wb->d = qe_h2f(b->d);
    wb->m = qe_h2f(b->m);
    for (int j = 0; j < 16; j++) {
        const int h0 = (int)((qh >> j) & 1u) << 4, h1 = (int)((qh >> (j + 16)) & 1u) << 4;
        wb->q[j] = (int8_t)((b->qs[j] & 0x0F) | h0);
        wb->q[j + 16] = (int8_t)((b->qs[j] >> 4) | h1);
    }
}

static void decode_q8_0(const void *vb, wblock *wb)
{
    const qe_block_q8_0 *b = vb;
    wb->d = qe_h2f(b->d);
    memcpy(wb->q, b->qs, 32);
}

static void decode_iq4_nl(const void *vb, wblock *wb)
{
    const qe_block_iq4_nl *b = vb;
    wb->d = qe_h2f(b->d);
    for (int j = 0; j < 16; j++) {
        wb->q[j] = qe_kvalues_iq4nl[b->qs[j] & 0x0F];
        wb->q[j + 16] = qe_kvalues_iq4nl[b->qs[j] >> 4];
    }
}

/* q2_K: per 128 weights, 32 bytes of qs; weight 128h + 32j + l (l < 32)
 * is bits 2j..2j+1 of qs[32h + l].  scales[s]: low nibble scale, high
 * nibble min of sub-block s (16 weights). */
static void decode_q2_K(const void *vb, wblock *wb)
{
    const qe_block_q2_K *b = vb;
    wb->d = qe_h2f(b->d);
    wb->dmin = qe_h2f(b->dmin);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                wb->q[128 * h + 32 * j + l] = (int8_t)((b->qs[32 * h + l] >> (2 * j)) & 3);
    for (int s = 0; s < 16; s++) {
        wb->sc[s] = b->scales[s] & 0x0F;
        wb->mn[s] = b->scales[s] >> 4;
    }
}

/* q3_K: as q2_K for the low 2 bits; the high bit of weight 128h + 32j + l
 * is bit 4h + j of hmask[l], and a CLEAR bit subtracts 4.  The 16 6-bit
 * scales (stored +32): low 4 bits in scales[s] (s < 8) or the high nibble
 * of scales[s-8]; high 2 bits at bit 2*(s/4) of scales[8 + s%4]. */
static void decode_q3_K(const void *vb, wblock *wb)
{
    const qe_block_q3_K *b = vb;
    wb->d = qe_h2f(b->d);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                const int lo = (b->qs[32 * h + l] >> (2 * j)) & 3;
                const int hi = (b->hmask[l] >> (4 * h + j)) & 1;
                wb->q[128 * h + 32 * j + l] = (int8_t)(lo - (hi ? 0 : 4));
            }
    for (int s = 0; s < 16; s++) {
        const int lo = s < 8 ? b->scales[s] & 0x0F : b->scales[s - 8] >> 4;
        const int hi = (b->scales[8 + s % 4] >> (2 * (s / 4))) & 3;
        wb->sc[s] = (int16_t)((lo | hi << 4) - 32);
    }
}

/* The 6-bit scale and min of 32-weight sub-block j (0..7) of q4_K/q5_K. */
static inline void scale_min_k4(int j, const uint8_t *s12, int *sc, int *m)
{
    if (j < 4) {
        *sc = s12[j] & 63;
        *m = s12[j + 4] & 63;
    } else {
        *sc = (s12[j + 4] & 0x0F) | ((s12[j - 4] >> 6) << 4);
        *m = (s12[j + 4] >> 4) | ((s12[j] >> 6) << 4);
    }
}

static void k4_scales(const uint8_t *s12, wblock *wb)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_k4(j, s12, &sc, &m);
        wb->sc[2 * j] = wb->sc[2 * j + 1] = (int16_t)sc;
        wb->mn[j] = (int16_t)m;
    }
}

/* q4_K: per 64 weights 32 bytes: low nibbles first 32, high next 32. */
static void decode_q4_K(const void *vb, wblock *wb)
{
    const qe_block_q4_K *b = vb;
    wb->d = qe_h2f(b->d);
    wb->dmin = qe_h2f(b->dmin);
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            wb->q[64 * j + l] = (int8_t)(b->qs[32 * j + l] & 0x0F);
            wb->q[64 * j + 32 + l] = (int8_t)(b->qs[32 * j + l] >> 4);
        }
    k4_scales(b->scales, wb);
}

/* q5_K: q4_K plus the 5th bit: bit 2j of qh[l] for weight 64j + l, bit
 * 2j+1 for weight 64j + 32 + l. */
static void decode_q5_K(const void *vb, wblock *wb)
{
    const qe_block_q5_K *b = vb;
    wb->d = qe_h2f(b->d);
    wb->dmin = qe_h2f(b->dmin);
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            const int h0 = ((b->qh[l] >> (2 * j)) & 1) << 4;
            const int h1 = ((b->qh[l] >> (2 * j + 1)) & 1) << 4;
            wb->q[64 * j + l] = (int8_t)((b->qs[32 * j + l] & 0x0F) | h0);
            wb->q[64 * j + 32 + l] = (int8_t)((b->qs[32 * j + l] >> 4) | h1);
        }
    k4_scales(b->scales, wb);
}

/* q6_K: per 128 weights 64 bytes ql + 32 bytes qh (REFERENCE.md). */
static void decode_q6_K(const void *vb, wblock *wb)
{
    const qe_block_q6_K *b = vb;
    wb->d = qe_h2f(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *q = wb->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
    for (int s = 0; s < 16; s++)
        wb->sc[s] = b->scales[s];
}

/* iq4_xs: 8 sub-blocks of 32 (16 bytes each, low nibbles first), 6-bit
 * scales (stored +32): low 4 bits in scales_l, high 2 bits in scales_h. */
static void decode_iq4_xs(const void *vb, wblock *wb)
{
    const qe_block_iq4_xs *b = vb;
    wb->d = qe_h2f(b->d);
    for (int ib = 0; ib < 8; ib++) {
        const int ls = ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) |
                       (((b->scales_h >> (2 * ib)) & 3) << 4);
        wb->sc[2 * ib] = wb->sc[2 * ib + 1] = (int16_t)(ls - 32);
        for (int j = 0; j < 16; j++) {
            wb->q[32 * ib + j] = qe_kvalues_iq4nl[b->qs[16 * ib + j] & 0x0F];
            wb->q[32 * ib + 16 + j] = qe_kvalues_iq4nl[b->qs[16 * ib + j] >> 4];
        }
    }
}

/* ---- grid types (iq_grids.c codebooks) ----------------------------- */

/* Store one group of 8 weights: grid bytes times signs (bit j of
 * `signs` set = negative). */
static inline void put8(int8_t *q, const uint8_t *grid, uint8_t signs)
{
    for (int j = 0; j < 8; j++)
        q[j] = (int8_t)((signs >> j) & 1 ? -(int)grid[j] : (int)grid[j]);
}

static void decode_iq2_xxs(const void *vb, wblock *wb)
{
    const qe_block_iq2_xxs *b = vb;
    wb->d = qe_h2f(b->d);
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux[2];
        memcpy(aux, b->qs + 4 * ib, 8);
        const uint8_t *idx = (const uint8_t *)aux;
        wb->sc[2 * ib] = wb->sc[2 * ib + 1] = (int16_t)(2 * (aux[1] >> 28) + 1);
        for (int l = 0; l < 4; l++)
            put8(wb->q + 32 * ib + 8 * l, (const uint8_t *)(qe_iq2xxs_grid + idx[l]),
                 qe_ksigns_iq2xs[(aux[1] >> 7 * l) & 127]);
    }
}

static void decode_iq2_xs(const void *vb, wblock *wb)
{
    const qe_block_iq2_xs *b = vb;
    wb->d = qe_h2f(b->d);
    uint16_t qs[32];
    memcpy(qs, b->qs, sizeof qs);
    for (int ib = 0; ib < 8; ib++) {
        wb->sc[2 * ib] = (int16_t)(2 * (b->scales[ib] & 0xf) + 1);
        wb->sc[2 * ib + 1] = (int16_t)(2 * (b->scales[ib] >> 4) + 1);
        for (int l = 0; l < 4; l++)
            put8(wb->q + 32 * ib + 8 * l, (const uint8_t *)(qe_iq2xs_grid + (qs[4 * ib + l] & 511)),
                 qe_ksigns_iq2xs[qs[4 * ib + l] >> 9]);
    }
}

static void decode_iq2_s(const void *vb, wblock *wb)
{
    const qe_block_iq2_s *b = vb;
    wb->d = qe_h2f(b->d);
    const uint8_t *signs = b->qs + QE_QK_K / 8;
    for (int ib = 0; ib < 8; ib++) {
        wb->sc[2 * ib] = (int16_t)(2 * (b->scales[ib] & 0xf) + 1);
        wb->sc[2 * ib + 1] = (int16_t)(2 * (b->scales[ib] >> 4) + 1);
        for (int l = 0; l < 4; l++) {
            const int g = b->qs[4 * ib + l] | ((b->qh[ib] << (8 - 2 * l)) & 0x300);
            put8(wb->q + 32 * ib + 8 * l, (const uint8_t *)(qe_iq2s_grid + g), signs[4 * ib + l]);
        }
    }
}

static void decode_iq3_xxs(const void *vb, wblock *wb)
{
    const qe_block_iq3_xxs *b = vb;
    wb->d = qe_h2f(b->d);
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux;
        memcpy(&aux, b->qs + QE_QK_K / 4 + 4 * ib, 4);
        wb->sc[2 * ib] = wb->sc[2 * ib + 1] = (int16_t)(2 * (aux >> 28) + 1);
        for (int l = 0; l < 4; l++) {
            uint8_t g[8];
            memcpy(g, qe_iq3xxs_grid + b->qs[8 * ib + 2 * l], 4);
            memcpy(g + 4, qe_iq3xxs_grid + b->qs[8 * ib + 2 * l + 1], 4);
            put8(wb->q + 32 * ib + 8 * l, g, qe_ksigns_iq2xs[(aux >> 7 * l) & 127]);
        }
    }
}

static void decode_iq3_s(const void *vb, wblock *wb)
{
    const qe_block_iq3_s *b = vb;
    wb->d = qe_h2f(b->d);
    for (int ib = 0; ib < 8; ib++) {
        const int ls = ib % 2 ? b->scales[ib / 2] >> 4 : b->scales[ib / 2] & 0xf;
        wb->sc[2 * ib] = wb->sc[2 * ib + 1] = (int16_t)(2 * ls + 1);
        const uint8_t *qs = b->qs + 8 * ib;
        const int qh = b->qh[ib];
        for (int l = 0; l < 4; l++) {
            uint8_t g[8];
            memcpy(g, qe_iq3s_grid + (qs[2 * l] | ((qh << (8 - 2 * l)) & 256)), 4);
            memcpy(g + 4, qe_iq3s_grid + (qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256)), 4);
            put8(wb->q + 32 * ib + 8 * l, g, b->signs[4 * ib + l]);
        }
    }
}

/* iq1_s: q = grid value (-1, 0, 1); sc = the odd scale per 32; mn[ib] =
 * that scale with the sign of the block's delta. */
static void decode_iq1_s(const void *vb, wblock *wb)
{
    const qe_block_iq1_s *b = vb;
    wb->d = qe_h2f(b->d);
    uint16_t qh[8];
    memcpy(qh, b->qh, sizeof qh);
    for (int ib = 0; ib < 8; ib++) {
        const int ls = 2 * ((qh[ib] >> 12) & 7) + 1;
        wb->sc[2 * ib] = wb->sc[2 * ib + 1] = (int16_t)ls;
        wb->mn[ib] = (int16_t)(qh[ib] & 0x8000 ? -ls : ls);
        for (int l = 0; l < 4; l++) {
            const int8_t *g =
                (const int8_t *)(qe_iq1s_grid + (b->qs[4 * ib + l] | (((qh[ib] >> 3 * l) & 7) << 8)));
            memcpy(wb->q + 32 * ib + 8 * l, g, 8);
        }
    }
}

/* iq1_m: q = grid value, q2 = +-1 delta per group of 8, sc per 16. */
static void decode_iq1_m(const void *vb, wblock *wb)
{
    const qe_block_iq1_m *b = vb;
    uint16_t sc[4];
    memcpy(sc, b->scales, sizeof sc);
    wb->d = qe_h2f((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                              (sc[3] & 0xf000)));
    for (int ib = 0; ib < 8; ib++) {
        wb->sc[2 * ib] = (int16_t)(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 7) + 1);
        wb->sc[2 * ib + 1] = (int16_t)(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1);
        const uint8_t *qs = b->qs + 4 * ib, *qh = b->qh + 2 * ib;
        for (int l = 0; l < 4; l++) {
            const int h = qh[l / 2] >> (4 * (l % 2));
            const int8_t *g = (const int8_t *)(qe_iq1s_grid + (qs[l] | ((h & 7) << 8)));
            memcpy(wb->q + 32 * ib + 8 * l, g, 8);
            memset(wb->q2 + 32 * ib + 8 * l, h & 8 ? -1 : 1, 8);
        }
    }
}

/* tq1_0 / tq2_0: q = the stored trit 0..2 (tq2_0: the 2-bit code, 3
 * possible in a malformed file), in element order; sc = 1. */
static void decode_tq1_0(const void *vb, wblock *wb)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const qe_block_tq1_0 *b = vb;
    wb->d = qe_h2f(b->d);
    int o = 0;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            wb->q[o++] = (int8_t)(((uint16_t)(uint8_t)(b->qs[m] * pow3[n]) * 3) >> 8);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            wb->q[o++] = (int8_t)(((uint16_t)(uint8_t)(b->qs[32 + m] * pow3[n]) * 3) >> 8);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            wb->q[o++] = (int8_t)(((uint16_t)(uint8_t)(b->qh[j] * pow3[n]) * 3) >> 8);
    for (int k = 0; k < 16; k++)
        wb->sc[k] = 1;
}

static void decode_tq2_0(const void *vb, wblock *wb)
{
    const qe_block_tq2_0 *b = vb;
    wb->d = qe_h2f(b->d);
    int o = 0;
    for (int j = 0; j < 64; j += 32)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                wb->q[o++] = (int8_t)((b->qs[j + m] >> (2 * l)) & 3);
    for (int k = 0; k < 16; k++)
        wb->sc[k] = 1;
}

/* ===================== integer lane sums ============================ */

/* 32-weight blocks: lane k = sum of q*a over elements 4k..4k+3 (what
 * maddubs + madd(ones) leave in int32 lane k). */
static inline void lanes_32(const int8_t *q, const int8_t *a, int32_t L[8])
{
    for (int k = 0; k < 8; k++) {
        int32_t s = 0;
        for (int e = 4 * k; e < 4 * k + 4; e++)
            s += (int32_t)q[e] * a[e];
        L[k] = s;
    }
}

/* 256-weight blocks: the kernels load 32 consecutive weights per register,
 * so lane k = sum over the 8 chunks c of sc(sub-block) * (sum of q*a over
 * elements 32c+4k..32c+4k+3).  Integer, so the order does not matter. */
static inline void lanes_256(const wblock *wb, const int8_t *a, int32_t L[8])
{
    for (int k = 0; k < 8; k++)
        L[k] = 0;
    for (int c = 0; c < 8; c++)
        for (int k = 0; k < 8; k++) {
            const int base = 32 * c + 4 * k;
            int32_t s = 0;
            for (int e = base; e < base + 4; e++)
                s += (int32_t)wb->q[e] * a[e];
            L[k] += (int32_t)wb->sc[base / 16] * s;
        }
}

/* acc[k] = fma(d, (float)L[k], acc[k]).  fmaf is exact (one rounding)
 * either way; without -mfma it is a libm call, so CPUs with FMA take a
 * target("fma") copy where it is one instruction (same bits). */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("fma"))) static void fma_lanes_hw(float acc[8], float d, const int32_t L[8])
{
    for (int k = 0; k < 8; k++)
        acc[k] = __builtin_fmaf(d, (float)L[k], acc[k]);
}

static int cpu_has_fma(void)
{
    static int has = -1; /* every thread would store the same value */
    int h = __atomic_load_n(&has, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("fma") ? 1 : 0;
        __atomic_store_n(&has, h, __ATOMIC_RELAXED);
    }
    return h;
}
#endif

static inline void fma_lanes(float acc[8], float d, const int32_t L[8])
{
#if defined(__x86_64__) || defined(__i386__)
    if (cpu_has_fma()) {
        fma_lanes_hw(acc, d, L);
        return;
    }
#endif
    for (int k = 0; k < 8; k++)
        acc[k] = fmaf(d, (float)L[k], acc[k]);
}

/* ===================== per-type accumulate / finish ================= */

/* q4_0/q5_0/q8_0/iq4_nl x q8_0 (tinyBLAS_Q0_AVX and ggml_vec_dot AVX2). */
static void accum_q8_0(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_0 *a = va;
    int32_t L[8];
    lanes_32(wb->q, a->qs, L);
    const float d = wb->d * qe_h2f(a->d);
    fma_lanes(st->acc, d, L);
}

/* q4_0_8x8 gemv/gemm: one int per block, acc = fma(isum, d_w*d_a, acc). */
static void accum_q4_0_repack(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_0 *a = va;
    int32_t s = 0;
    for (int j = 0; j < 32; j++)
        s += (int32_t)wb->q[j] * a->qs[j];
    const float d = wb->d * qe_h2f(a->d);
    st->acc[0] = fmaf((float)s, d, st->acc[0]);
}

/* q4_1/q5_1 x q8_1: lanes scaled by d_w*d_a, plus m_w * s_a in summs. */
static void accum_q8_1(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_1 *a = va;
    int32_t L[8];
    lanes_32(wb->q, a->qs, L);
    const float d = wb->d * qe_h2f(a->d);
    fma_lanes(st->acc, d, L);
    const float ms = wb->m * qe_h2f(a->s);
    st->summs += ms;
}

/* q2_K: mins first (madd of 16 mins with 16 bsums -> 8 lanes, FMA with
 * -d_a*dmin into the same acc), then the scaled quants with d_a*d_w. */
static void accum_q2_K(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d, dmin = -a->d * wb->dmin;
    int32_t M[8], L[8];
    for (int k = 0; k < 8; k++)
        M[k] = (int32_t)wb->mn[2 * k] * a->bsums[2 * k] +
               (int32_t)wb->mn[2 * k + 1] * a->bsums[2 * k + 1];
    fma_lanes(st->acc, dmin, M);
    lanes_256(wb, a->qs, L);
    fma_lanes(st->acc, d, L);
}

/* q3_K, q6_K: scaled quants only. */
static void accum_k_plain(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d;
    int32_t L[8];
    lanes_256(wb, a->qs, L);
    fma_lanes(st->acc, d, L);
}

/* Sums of q8 per 32 (hadd_epi16 of the 16 bsums). */
static inline void bsums32(const qe_block_q8_K *a, int32_t b32[8])
{
    for (int j = 0; j < 8; j++)
        b32[j] = (int32_t)a->bsums[2 * j] + a->bsums[2 * j + 1];
}

/* q4_K: mins into the 4-lane acc_m (madd of 8 mins with 8 bsums32),
 * quants into acc. */
static void accum_q4_K(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d, dmin = -a->d * wb->dmin;
    int32_t b32[8], L[8];
    bsums32(a, b32);
    for (int t = 0; t < 4; t++) {
        const int32_t p = (int32_t)wb->mn[2 * t] * b32[2 * t] + (int32_t)wb->mn[2 * t + 1] * b32[2 * t + 1];
        st->accm[t] = fmaf(dmin, (float)p, st->accm[t]);
    }
    lanes_256(wb, a->qs, L);
    fma_lanes(st->acc, d, L);
}

/* q5_K: mins as one int per block, summs += dmin * int (no FMA). */
static void accum_q5_K(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d, dmin = -a->d * wb->dmin;
    int32_t b32[8], L[8], msum = 0;
    bsums32(a, b32);
    for (int j = 0; j < 8; j++)
        msum += (int32_t)wb->mn[j] * b32[j];
    const float mterm = dmin * (float)msum;
    st->summs += mterm;
    lanes_256(wb, a->qs, L);
    fma_lanes(st->acc, d, L);
}

/* iq4_xs, iq2_*, iq3_*: acc = fma(d_w*d_a, lanes, acc), d_w = fp16(d);
 * the iq2/iq3 constant factor is applied after the final sum (finish_*). */
static void accum_d_lanes(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = wb->d * a->d;
    int32_t L[8];
    lanes_256(wb, a->qs, L);
    fma_lanes(st->acc, d, L);
}

/* iq1_s: lanes as above; the delta term sum_ib (bsums pair) * +-ls is one
 * int per block, summs = fma(d, (float)int, summs). */
static void accum_iq1_s(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d;
    int32_t L[8], s1 = 0;
    lanes_256(wb, a->qs, L);
    for (int ib = 0; ib < 8; ib++)
        s1 += ((int32_t)a->bsums[2 * ib] + a->bsums[2 * ib + 1]) * wb->mn[ib];
    fma_lanes(st->acc, d, L);
    st->summs = fmaf(d, (float)s1, st->summs);
}

/* iq1_m: a second set of lanes over the +-1 deltas, same scales. */
static void accum_iq1_m(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d;
    int32_t L[8], L2[8];
    lanes_256(wb, a->qs, L);
    for (int k = 0; k < 8; k++)
        L2[k] = 0;
    for (int c = 0; c < 8; c++)
        for (int k = 0; k < 8; k++) {
            const int base = 32 * c + 4 * k;
            int32_t sum = 0;
            for (int e = base; e < base + 4; e++)
                sum += (int32_t)wb->q2[e] * a->qs[e];
            L2[k] += (int32_t)wb->sc[base / 16] * sum;
        }
    fma_lanes(st->acc, d, L);
    fma_lanes(st->acc2, d, L2);
}

/* tq1_0/tq2_0: lane k = sum of q*a over its elements minus the q8 block
 * sums 2k and 2k+1 (int16 lanes minus bsums, madd with ones), then
 * acc = fma((float)lane, d, acc). */
static void accum_tq(const wblock *wb, const void *va, dot_state *st)
{
    const qe_block_q8_K *a = va;
    const float d = a->d * wb->d;
    int32_t L[8];
    lanes_256(wb, a->qs, L);
    for (int k = 0; k < 8; k++)
        L[k] -= (int32_t)a->bsums[2 * k] + a->bsums[2 * k + 1];
    fma_lanes(st->acc, d, L);
}

static float finish_acc(const dot_state *st) { return hsum8(st->acc); }
static float finish_acc_summs(const dot_state *st) { return hsum8(st->acc) + st->summs; }
static float finish_acc_accm(const dot_state *st) { return hsum8(st->acc) + hsum4(st->accm); }
static float finish_single(const dot_state *st) { return st->acc[0]; }
static float finish_x0125(const dot_state *st) { return 0.125f * hsum8(st->acc); }
static float finish_x025(const dot_state *st) { return 0.25f * hsum8(st->acc); }
static float finish_iq1_s(const dot_state *st)
{
    const float delta = QE_IQ1S_DELTA * st->summs;
    return hsum8(st->acc) + delta;
}
static float finish_iq1_m(const dot_state *st)
{
    return fmaf(hsum8(st->acc2), QE_IQ1M_DELTA, hsum8(st->acc));
}

/* ===================== float weight types ========================== */

typedef float (*elem_fn)(const void *row, int64_t i);
static float elem_f32(const void *row, int64_t i) { return ((const float *)row)[i]; }
static float elem_f16(const void *row, int64_t i) { return qe_h2f(((const uint16_t *)row)[i]); }

/* tinyBLAS f32/f16 (AVX-512, n % 16 == 0): lane j = FMA over i = j mod 16. */
static float dot_tinyblas16(elem_fn el, const void *w, const void *a, int64_t n)
{
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i += 16)
        for (int j = 0; j < 16; j++)
            acc[j] = fmaf(el(w, i + j), el(a, i + j), acc[j]);
    return hsum16(acc);
}

/* ggml_vec_dot_f32/f16 (AVX-512): 4 x 16 lanes per 64 elements, reduced
 * (0+2, 1+3, 0+1, then 16->1), leftovers as float products summed in
 * double. */
static float dot_vec_f(elem_fn el, const void *w, const void *a, int64_t n)
{
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 16; j++)
                acc[r][j] = fmaf(el(w, i + 16 * r + j), el(a, i + 16 * r + j), acc[r][j]);
    for (int j = 0; j < 16; j++) {
        acc[0][j] = acc[0][j] + acc[2][j];
        acc[1][j] = acc[1][j] + acc[3][j];
    }
    for (int j = 0; j < 16; j++)
        acc[0][j] = acc[0][j] + acc[1][j];
    double sumf = hsum16(acc[0]);
    for (int64_t i = np; i < n; i++) {
        const float p = el(w, i) * el(a, i);
        sumf += p;
    }
    return (float)sumf;
}

static float dot_f32(const void *w, const void *a, int64_t n)
{
    return n % 16 == 0 ? dot_tinyblas16(elem_f32, w, a, n) : dot_vec_f(elem_f32, w, a, n);
}

static float dot_f16(const void *w, const void *a, int64_t n)
{
    return n % 16 == 0 ? dot_tinyblas16(elem_f16, w, a, n) : dot_vec_f(elem_f16, w, a, n);
}

/* One _mm512_dpbf16_ps step on 32 bf16 pairs: lane j += odd then even
 * product (products of bf16 are exact in f32). */
static inline void dpbf16(float acc[16], const uint16_t *w, const uint16_t *a)
{
    for (int j = 0; j < 16; j++) {
        const float p1 = qe_bf16_to_fp32(w[2 * j + 1]) * qe_bf16_to_fp32(a[2 * j + 1]);
        const float p0 = qe_bf16_to_fp32(w[2 * j]) * qe_bf16_to_fp32(a[2 * j]);
        acc[j] = acc[j] + p1;
        acc[j] = acc[j] + p0;
    }
}

static float dot_bf16(const void *vw, const void *va, int64_t n)
{
    const uint16_t *w = vw, *a = va;
    if (n % 32 == 0) { /* tinyBLAS<32, __m512, __m512bh> */
        float acc[16] = {0};
        for (int64_t i = 0; i < n; i += 32)
            dpbf16(acc, w + i, a + i);
        return hsum16(acc);
    }
    /* ggml_vec_dot_bf16: two accumulators per 64, then scalar in double */
    float c1[16] = {0}, c2[16] = {0};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        dpbf16(c1, w + i, a + i);
        dpbf16(c2, w + i + 32, a + i + 32);
    }
    double sumf = 0.0;
    sumf += hsum16(c1);
    sumf += hsum16(c2);
    for (; i < n; i++) {
        const float p = qe_bf16_to_fp32(w[i]) * qe_bf16_to_fp32(a[i]);
        sumf += p;
    }
    return (float)sumf;
}

/* ===================== the per-type table =========================== */

typedef void (*decode_fn)(const void *blk, wblock *wb);
typedef void (*accum_fn)(const wblock *wb, const void *ablk, dot_state *st);
typedef float (*finish_fn)(const dot_state *st);
typedef float (*fdot_fn)(const void *w, const void *a, int64_t n);

typedef struct llamacpp_row {
    int vec_dot_type;      /* activation type; 0 (= F32) also for f32 weights */
    bool ok;               /* a path exists */
    decode_fn decode;      /* quantized: weight block -> integers */
    accum_fn accum;        /* one weight block x one activation block */
    finish_fn finish;      /* running sums -> the float result */
    accum_fn accum_rep8;   /* alternative when n_out % 8 == 0 (q4_0 repack) */
    finish_fn finish_rep8;
    fdot_fn fdot;          /* float weight types: whole-row dot */
} llamacpp_row;

static const llamacpp_row k_rows[QE_TYPE_COUNT] = {
    [QE_TYPE_F32] = {QE_TYPE_F32, true, 0, 0, 0, 0, 0, dot_f32},
    [QE_TYPE_F16] = {QE_TYPE_F16, true, 0, 0, 0, 0, 0, dot_f16},
    [QE_TYPE_BF16] = {QE_TYPE_BF16, true, 0, 0, 0, 0, 0, dot_bf16},
    [QE_TYPE_Q4_0] = {QE_TYPE_Q8_0, true, decode_q4_0, accum_q8_0, finish_acc, accum_q4_0_repack,
                      finish_single, 0},
    [QE_TYPE_Q5_0] = {QE_TYPE_Q8_0, true, decode_q5_0, accum_q8_0, finish_acc, 0, 0, 0},
    [QE_TYPE_Q8_0] = {QE_TYPE_Q8_0, true, decode_q8_0, accum_q8_0, finish_acc, 0, 0, 0},
    [QE_TYPE_IQ4_NL] = {QE_TYPE_Q8_0, true, decode_iq4_nl, accum_q8_0, finish_acc, 0, 0, 0},
    [QE_TYPE_Q4_1] = {QE_TYPE_Q8_1, true, decode_q4_1, accum_q8_1, finish_acc_summs, 0, 0, 0},
    [QE_TYPE_Q5_1] = {QE_TYPE_Q8_1, true, decode_q5_1, accum_q8_1, finish_acc_summs, 0, 0, 0},
    [QE_TYPE_Q2_K] = {QE_TYPE_Q8_K, true, decode_q2_K, accum_q2_K, finish_acc, 0, 0, 0},
    [QE_TYPE_Q3_K] = {QE_TYPE_Q8_K, true, decode_q3_K, accum_k_plain, finish_acc, 0, 0, 0},
    [QE_TYPE_Q4_K] = {QE_TYPE_Q8_K, true, decode_q4_K, accum_q4_K, finish_acc_accm, 0, 0, 0},
    [QE_TYPE_Q5_K] = {QE_TYPE_Q8_K, true, decode_q5_K, accum_q5_K, finish_acc_summs, 0, 0, 0},
    [QE_TYPE_Q6_K] = {QE_TYPE_Q8_K, true, decode_q6_K, accum_k_plain, finish_acc, 0, 0, 0},
    [QE_TYPE_IQ4_XS] = {QE_TYPE_Q8_K, true, decode_iq4_xs, accum_d_lanes, finish_acc, 0, 0, 0},
    [QE_TYPE_IQ2_XXS] = {QE_TYPE_Q8_K, true, decode_iq2_xxs, accum_d_lanes, finish_x0125, 0, 0, 0},
    [QE_TYPE_IQ2_XS] = {QE_TYPE_Q8_K, true, decode_iq2_xs, accum_d_lanes, finish_x0125, 0, 0, 0},
    [QE_TYPE_IQ2_S] = {QE_TYPE_Q8_K, true, decode_iq2_s, accum_d_lanes, finish_x0125, 0, 0, 0},
    [QE_TYPE_IQ3_XXS] = {QE_TYPE_Q8_K, true, decode_iq3_xxs, accum_d_lanes, finish_x025, 0, 0, 0},
    [QE_TYPE_IQ3_S] = {QE_TYPE_Q8_K, true, decode_iq3_s, accum_d_lanes, finish_acc, 0, 0, 0},
    [QE_TYPE_IQ1_S] = {QE_TYPE_Q8_K, true, decode_iq1_s, accum_iq1_s, finish_iq1_s, 0, 0, 0},
    [QE_TYPE_IQ1_M] = {QE_TYPE_Q8_K, true, decode_iq1_m, accum_iq1_m, finish_iq1_m, 0, 0, 0},
    [QE_TYPE_TQ1_0] = {QE_TYPE_Q8_K, true, decode_tq1_0, accum_tq, finish_acc, 0, 0, 0},
    [QE_TYPE_TQ2_0] = {QE_TYPE_Q8_K, true, decode_tq2_0, accum_tq, finish_acc, 0, 0, 0},
};

int qe_llamacpp_vec_dot_type(int wtype)
{
    if (wtype < 0 || wtype >= QE_TYPE_COUNT || !k_rows[wtype].ok)
        return -1;
    return k_rows[wtype].vec_dot_type;
}

/* Quantize one activation row into the vec_dot type. */
static void act_convert(int vtype, const float *x, void *out, int64_t n)
{
    switch (vtype) { /* the activation formats, not weight behaviour */
    case QE_TYPE_Q8_0: qe_llamacpp_quantize_q8_0(x, out, n); break;
    case QE_TYPE_Q8_1: qe_llamacpp_quantize_q8_1(x, out, n); break;
    case QE_TYPE_Q8_K: qe_llamacpp_quantize_q8_K(x, out, n); break;
    case QE_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)out)[i] = qe_fp32_to_fp16(x[i]);
        break;
    case QE_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)out)[i] = qe_fp32_to_bf16(x[i]);
        break;
    default: memcpy(out, x, (size_t)n * sizeof(float)); break;
    }
}

/* ===================== shape checks ================================ */

/* Validate (wtype, n_in); fill the row, the activation row size. */
static int check_type_shape(int wtype, int64_t n_in, const llamacpp_row **row,
                            size_t *act_row_nbytes, size_t *w_row_min, qe_err *err)
{
    const qe_type_traits *tt = qe_type_get(wtype);
    if (!tt)
        return qe_err_set(err, QE_ETYPE, "matmul llamacpp: unknown weight type id %d", wtype);
    if (!k_rows[wtype].ok)
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "matmul llamacpp: weight type %s has no llama.cpp CPU dot path here "
                          "(supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_K..q6_K iq4_nl "
                          "iq4_xs)",
                          tt->name);
    const int vt = k_rows[wtype].vec_dot_type;
    const qe_type_traits *vtt = qe_type_get(vt);
    if (n_in <= 0 || n_in % tt->blck_size || n_in % vtt->blck_size)
        return qe_err_set(err, QE_ESHAPE,
                          "matmul llamacpp %s: n_in %lld must be a positive multiple of %lld "
                          "(weight block) and %lld (%s activation block)",
                          tt->name, (long long)n_in, (long long)tt->blck_size,
                          (long long)vtt->blck_size, vtt->name);
    *row = &k_rows[wtype];
    *act_row_nbytes = qe_type_row_nbytes(vt, n_in);
    *w_row_min = qe_type_row_nbytes(wtype, n_in);
    return 0;
}

/* ===================== one dot ==================================== */

int qe_llamacpp_vec_dot(int wtype, int64_t n, float *s, const void *w, const void *a, int n_out,
                        qe_err *err)
{
    const llamacpp_row *row;
    size_t a_nb, w_nb;
    int rc = check_type_shape(wtype, n, &row, &a_nb, &w_nb, err);
    if (rc)
        return rc;
    if (row->fdot) {
        *s = row->fdot(w, a, n);
        return 0;
    }
    const bool rep8 = row->accum_rep8 && n_out % 8 == 0;
    const accum_fn accum = rep8 ? row->accum_rep8 : row->accum;
    const finish_fn finish = rep8 ? row->finish_rep8 : row->finish;
    const size_t wbs = qe_type_get(wtype)->type_size;
    const size_t abs_ = qe_type_get(row->vec_dot_type)->type_size;
    const int64_t nb = n / qe_type_get(wtype)->blck_size;
    dot_state st;
    wblock wb;
    memset(&st, 0, sizeof st);
    memset(&wb, 0, sizeof wb);
    for (int64_t b = 0; b < nb; b++) {
        row->decode((const uint8_t *)w + (size_t)b * wbs, &wb);
        accum(&wb, (const uint8_t *)a + (size_t)b * abs_, &st);
    }
    *s = finish(&st);
    return 0;
}

/* ===================== matmul ===================================== */

size_t qe_matmul_llamacpp_ws_nbytes(int wtype, int n_in, int n_tokens)
{
    const llamacpp_row *row;
    size_t a_nb, w_nb;
    if (n_tokens < 0 || check_type_shape(wtype, n_in, &row, &a_nb, &w_nb, NULL))
        return 0;
    uint64_t total;
    if (!qe_mul_ok(a_nb, (uint64_t)n_tokens, &total) || total > SIZE_MAX)
        return 0;
    return (size_t)total;
}

/* Tokens per pass: the running sums of this many outputs live on the
 * stack while a weight row's blocks are decoded once per pass. */
#define QE_LLAMACPP_TOK_CHUNK 64

int qe_matmul_llamacpp_ws(int wtype, const void *w, size_t w_row_nbytes, int n_out, int n_in,
                          const float *x, int n_tokens, float *y, void *ws, size_t ws_nbytes,
                          qe_err *err)
{
    const llamacpp_row *row;
    size_t a_nb, w_nb;
    int rc = check_type_shape(wtype, n_in, &row, &a_nb, &w_nb, err);
    if (rc)
        return rc;
    if (n_out <= 0 || n_tokens < 0)
        return qe_err_set(err, QE_ESHAPE, "matmul llamacpp %s: bad shape n_out %d, n_tokens %d",
                          qe_type_name(wtype), n_out, n_tokens);
    if (w_row_nbytes < w_nb)
        return qe_err_set(err, QE_ESHAPE,
                          "matmul llamacpp %s: weight row stride %zu B is smaller than a row of "
                          "%d elements (%zu B)",
                          qe_type_name(wtype), w_row_nbytes, n_in, w_nb);
    if (n_tokens == 0)
        return 0;
    if (!w || !x || !y || !ws || ws_nbytes < a_nb * (size_t)n_tokens)
        return qe_err_set(err, QE_EINVAL, "matmul llamacpp %s: NULL buffer or scratch too small",
                          qe_type_name(wtype));
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * n_in;
        for (int i = 0; i < n_in; i++)
            if (!isfinite(xt[i]))
                return qe_err_set(err, QE_ENAN,
                                  "matmul llamacpp %s: activation row %d column %d is %s",
                                  qe_type_name(wtype), t, i, isnan(xt[i]) ? "NaN" : "Inf");
    }

    const int vt = row->vec_dot_type;
    uint8_t *act = ws;
#pragma omp parallel for schedule(static) if (n_tokens > 1)
    for (int t = 0; t < n_tokens; t++)
        act_convert(vt, x + (size_t)t * n_in, act + (size_t)t * a_nb, n_in);

    if (row->fdot) {
#pragma omp parallel for schedule(static) if (n_out > 1)
        for (int o = 0; o < n_out; o++) {
            const uint8_t *wo = (const uint8_t *)w + (size_t)o * w_row_nbytes;
            for (int t = 0; t < n_tokens; t++)
                y[(size_t)t * n_out + o] = row->fdot(wo, act + (size_t)t * a_nb, n_in);
        }
        return 0;
    }

    const bool rep8 = row->accum_rep8 && n_out % 8 == 0;
    const accum_fn accum = rep8 ? row->accum_rep8 : row->accum;
    const finish_fn finish = rep8 ? row->finish_rep8 : row->finish;
    const size_t wbs = qe_type_get(wtype)->type_size;
    const size_t abs_ = qe_type_get(vt)->type_size;
    const int nb = (int)(n_in / qe_type_get(wtype)->blck_size);

#pragma omp parallel for schedule(static) if (n_out > 1)
    for (int o = 0; o < n_out; o++) {
        const uint8_t *wo = (const uint8_t *)w + (size_t)o * w_row_nbytes;
        dot_state st[QE_LLAMACPP_TOK_CHUNK];
        wblock wb;
        memset(&wb, 0, sizeof wb);
        for (int t0 = 0; t0 < n_tokens; t0 += QE_LLAMACPP_TOK_CHUNK) {
            const int nt = QE_MIN(QE_LLAMACPP_TOK_CHUNK, n_tokens - t0);
            memset(st, 0, sizeof st[0] * (size_t)nt);
            for (int b = 0; b < nb; b++) {
                row->decode(wo + (size_t)b * wbs, &wb);
                for (int t = 0; t < nt; t++)
                    accum(&wb, act + (size_t)(t0 + t) * a_nb + (size_t)b * abs_, &st[t]);
            }
            for (int t = 0; t < nt; t++)
                y[(size_t)(t0 + t) * n_out + o] = finish(&st[t]);
        }
    }
    return 0;
}

int qe_matmul_llamacpp(int wtype, const void *w, size_t w_row_nbytes, int n_out, int n_in,
                       const float *x, int n_tokens, float *y, qe_err *err)
{
    const llamacpp_row *row;
    size_t a_nb, w_nb;
    int rc = check_type_shape(wtype, n_in, &row, &a_nb, &w_nb, err);
    if (rc)
        return rc;
    if (n_tokens <= 0 || n_out <= 0)
        return qe_matmul_llamacpp_ws(wtype, w, w_row_nbytes, n_out, n_in, x, n_tokens, y, NULL, 0,
                                     err);
    size_t ws_nbytes = qe_matmul_llamacpp_ws_nbytes(wtype, n_in, n_tokens);
    void *ws = ws_nbytes ? malloc(ws_nbytes) : NULL;
    if (!ws)
        return qe_err_set(err, QE_ENOMEM,
                          "matmul llamacpp %s: cannot allocate %zu B of activation scratch",
                          qe_type_name(wtype), ws_nbytes);
    rc = qe_matmul_llamacpp_ws(wtype, w, w_row_nbytes, n_out, n_in, x, n_tokens, y, ws, ws_nbytes,
                               err);
    free(ws);
    return rc;
}
