/*
 * dot_int8.c: int8 numerics of weight products (see dot_int8.h for the
 * arithmetic): the per-type unpackers, the activation quantizer, the
 * scalar kernel (the spec) and the AVX512-VNNI kernel.
 *
 * Layouts (all offsets 64-byte aligned):
 *   tile  q[rows][n] unsigned bytes v + off, then s[rows][n/G] floats,
 *         then (types with mins) m[rows][n/G] floats.
 *   act   groups of QE_I8_LANES tokens; per group and block b of 32:
 *         qx at b*512 + l*64 + lane*4 + e (element 4l + e of the block,
 *         signed bytes), then dx[b][lane] floats, then qsum[b][h][lane]
 *         int32 (sum of qx over elements 16h .. 16h+15).
 * The kernel holds one token group in the lanes of a vector: a weight
 * group of 4 bytes is broadcast, vpdpbusd adds its 4 products for 16
 * tokens at once.
 */
#include "quant_internal.h" /* first: sets the FP contraction mode */

#include "dot_int8.h"

#include <immintrin.h>

/* ------------------------------------------------------------ kinds -- */

typedef struct i8_kind {
    int G;    /* sub-block size */
    int off;  /* stored byte = v + off */
    int mins; /* w = s*v + m (else w = s*v) */
} i8_kind;

static i8_kind kind_of(int type)
{
    switch (type) {
    case QE_TYPE_Q4_0: return (i8_kind){32, 8, 0};
    case QE_TYPE_Q4_1: return (i8_kind){32, 0, 1};
    case QE_TYPE_Q5_0: return (i8_kind){32, 16, 0};
    case QE_TYPE_Q5_1: return (i8_kind){32, 0, 1};
    case QE_TYPE_Q8_0: return (i8_kind){32, 128, 0};
    case QE_TYPE_IQ4_NL: return (i8_kind){32, 128, 0};
    case QE_TYPE_Q2_K: return (i8_kind){16, 0, 1};
    case QE_TYPE_Q3_K: return (i8_kind){16, 4, 0};
    case QE_TYPE_Q4_K: return (i8_kind){32, 0, 1};
    case QE_TYPE_Q5_K: return (i8_kind){32, 0, 1};
    case QE_TYPE_Q6_K: return (i8_kind){16, 32, 0};
    default: return (i8_kind){0, 0, 0};
    }
}

int qe_i8_group(int type)
{
    return kind_of(type).G;
}

static size_t al64(size_t n)
{
    return (n + 63) / 64 * 64;
}

/* Offsets of a tile's parts. */
typedef struct tile_view {
    uint8_t *q;
    float *s, *m;
    int nsub; /* sub-blocks per row */
} tile_view;

static tile_view view_of(i8_kind k, void *tile, int rows, int n)
{
    tile_view v;
    v.nsub = n / k.G;
    v.q = tile;
    v.s = (float *)(v.q + al64((size_t)rows * n));
    v.m = k.mins ? v.s + al64((size_t)rows * v.nsub * sizeof(float)) / sizeof(float) : NULL;
    return v;
}

size_t qe_i8_tile_nbytes(int type, int rows, int n)
{
    const i8_kind k = kind_of(type);
    if (!k.G)
        return 0;
    const size_t sub = al64((size_t)rows * (n / k.G) * sizeof(float));
    return al64((size_t)rows * n) + sub * (k.mins ? 2 : 1);
}

/* --------------------------------------------------------- unpackers -- */
/* One row of n elements each: bytes q (n), scales s and mins m (n/G). */

static void unpack_q4_0(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q4_0 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        for (int j = 0; j < 16; j++) {
            q[j] = x[i].qs[j] & 15;
            q[j + 16] = x[i].qs[j] >> 4;
        }
    }
}

static void unpack_q4_1(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q4_1 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        m[i] = qe_h2f(x[i].m);
        for (int j = 0; j < 16; j++) {
            q[j] = x[i].qs[j] & 15;
            q[j + 16] = x[i].qs[j] >> 4;
        }
    }
}

/* the 5-bit values of a q5_0/q5_1 block */
static void q5_bytes(const uint8_t qh4[4], const uint8_t qs[16], uint8_t *q)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    for (int j = 0; j < 16; j++) {
        q[j] = (uint8_t)((qs[j] & 15) | (((qh >> j) & 1) << 4));
        q[j + 16] = (uint8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

static void unpack_q5_0(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q5_0 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        q5_bytes(x[i].qh, x[i].qs, q);
    }
}

static void unpack_q5_1(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q5_1 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        m[i] = qe_h2f(x[i].m);
        q5_bytes(x[i].qh, x[i].qs, q);
    }
}

static void unpack_q8_0(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q8_0 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        for (int j = 0; j < 32; j++)
            q[j] = (uint8_t)(x[i].qs[j] + 128);
    }
}

static void unpack_iq4_nl(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_iq4_nl *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = qe_h2f(x[i].d);
        for (int j = 0; j < 16; j++) {
            q[j] = (uint8_t)(qe_kvalues_iq4nl[x[i].qs[j] & 15] + 128);
            q[j + 16] = (uint8_t)(qe_kvalues_iq4nl[x[i].qs[j] >> 4] + 128);
        }
    }
}

/* q2_K: element 128*h + 32*k + l of a block is bits 2k.. of qs[32*h + l];
 * sub-block j of 16 has scale nibble and min nibble scales[j]. */
static void unpack_q2_K(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q2_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16, m += 16) {
        const float d = qe_h2f(x[i].d), dmin = qe_h2f(x[i].dmin);
        for (int j = 0; j < 16; j++) {
            s[j] = d * (x[i].scales[j] & 15);
            m[j] = -(dmin * (x[i].scales[j] >> 4));
        }
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * k + l] = (x[i].qs[32 * h + l] >> (2 * k)) & 3;
    }
}

/* q3_K: as q2_K, minus 4 where the hmask bit (bit 4h + k of hmask[l]) is clear. */
static void unpack_q3_K(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q3_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16) {
        const float d = qe_h2f(x[i].d);
        int8_t sc[16];
        qe_q3_K_scales(x[i].scales, sc);
        for (int j = 0; j < 16; j++)
            s[j] = d * sc[j];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * k + l] =
                        (uint8_t)(((x[i].qs[32 * h + l] >> (2 * k)) & 3) |
                                  (((x[i].hmask[l] >> (4 * h + k)) & 1) << 2));
    }
}

/* q4_K/q5_K: the 8 sub-blocks' scale products d*sc and mins -(dmin*mn) */
static inline __attribute__((always_inline)) void k4_scales(float d, float dmin,
                                                            const uint8_t *scales, float *s,
                                                            float *m)
{
    for (int j = 0; j < 8; j++) {
        uint8_t sc, mn;
        qe_scale_min_k4(j, scales, &sc, &mn);
        s[j] = d * sc;
        m[j] = -(dmin * mn);
    }
}

static void unpack_q4_K(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q4_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 8, m += 8) {
        const float d = qe_h2f(x[i].d), dmin = qe_h2f(x[i].dmin);
        k4_scales(d, dmin, x[i].scales, s, m);
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                q[64 * p + l] = x[i].qs[32 * p + l] & 15;
                q[64 * p + 32 + l] = x[i].qs[32 * p + l] >> 4;
            }
    }
}

static void unpack_q5_K(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q5_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 8, m += 8) {
        const float d = qe_h2f(x[i].d), dmin = qe_h2f(x[i].dmin);
        k4_scales(d, dmin, x[i].scales, s, m);
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                const uint8_t h = x[i].qh[l] >> (2 * p);
                q[64 * p + l] = (uint8_t)((x[i].qs[32 * p + l] & 15) | ((h & 1) << 4));
                q[64 * p + 32 + l] = (uint8_t)((x[i].qs[32 * p + l] >> 4) | ((h & 2) << 3));
            }
    }
}

/* q6_K: element 128*h + 32*k + l: low nibble of ql[64h + l + 32*(k&1)]
 * (high nibble for k >= 2), high bits 2k.. of qh[32h + l]; scale per 16. */
static void unpack_q6_K(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q6_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16) {
        const float d = qe_h2f(x[i].d);
        for (int j = 0; j < 16; j++)
            s[j] = d * x[i].scales[j];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    const uint8_t lo = x[i].ql[64 * h + l + 32 * (k & 1)];
                    q[128 * h + 32 * k + l] =
                        (uint8_t)(((k < 2 ? lo : lo >> 4) & 15) |
                                  (((x[i].qh[32 * h + l] >> (2 * k)) & 3) << 4));
                }
    }
}

/* AVX-512 unpackers of every int8 type: the same bytes and the
 * same scale products as the scalar ones above (integers; fp16 through
 * vcvtph2ps, equal to qe_h2f for every non-NaN value). */
#define UTGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))

UTGT static inline float h2f_fast(qe_half h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

UTGT static void unpack_q8_0_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q8_0 *x = vx;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        const __m256i v = _mm256_loadu_si256((const __m256i *)x[i].qs);
        _mm256_storeu_si256((__m256i *)q, _mm256_xor_si256(v, flip));
    }
}

/* 16 packed bytes -> low nibbles then high nibbles (32 bytes) */
UTGT static inline __m256i nibbles_16(const uint8_t *qs)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)qs), lo4 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), lo4), _mm_and_si128(v, lo4));
}

/* the 5-bit values of a q5_0/q5_1 block (q5_bytes' vector twin) */
UTGT static inline void q5_bytes_avx512(const uint8_t qh4[4], const uint8_t qs[16], uint8_t *q)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    const __m256i v =
        _mm256_or_si256(nibbles_16(qs), _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(16)));
    _mm256_storeu_si256((__m256i *)q, v);
}

UTGT static void unpack_q5_0_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q5_0 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        q5_bytes_avx512(x[i].qh, x[i].qs, q);
    }
}

UTGT static void unpack_q4_K_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q4_K *x = vx;
    const __m256i lo4 = _mm256_set1_epi8(15);
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 8, m += 8) {
        const float d = h2f_fast(x[i].d), dmin = h2f_fast(x[i].dmin);
        k4_scales(d, dmin, x[i].scales, s, m);
        for (int p = 0; p < 4; p++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * p));
            _mm256_storeu_si256((__m256i *)(q + 64 * p), _mm256_and_si256(v, lo4));
            _mm256_storeu_si256((__m256i *)(q + 64 * p + 32),
                                _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4));
        }
    }
}

UTGT static void unpack_q6_K_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q6_K *x = vx;
    const __m256i lo4 = _mm256_set1_epi8(15), hi2 = _mm256_set1_epi8(0x30);
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16) {
        const float d = h2f_fast(x[i].d);
        for (int j = 0; j < 16; j++)
            s[j] = d * x[i].scales[j];
        for (int h = 0; h < 2; h++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h));
            const __m256i b = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(x[i].qh + 32 * h));
            uint8_t *o = q + 128 * h;
            _mm256_storeu_si256((__m256i *)o,
                                _mm256_or_si256(_mm256_and_si256(a, lo4),
                                                _mm256_and_si256(_mm256_slli_epi16(hb, 4), hi2)));
            _mm256_storeu_si256((__m256i *)(o + 32),
                                _mm256_or_si256(_mm256_and_si256(b, lo4),
                                                _mm256_and_si256(_mm256_slli_epi16(hb, 2), hi2)));
            _mm256_storeu_si256((__m256i *)(o + 64),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), lo4),
                                                _mm256_and_si256(hb, hi2)));
            _mm256_storeu_si256((__m256i *)(o + 96),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), lo4),
                                                _mm256_and_si256(_mm256_srli_epi16(hb, 2), hi2)));
        }
    }
}

UTGT static void unpack_q4_0_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q4_0 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        _mm256_storeu_si256((__m256i *)q, nibbles_16(x[i].qs));
    }
}

UTGT static void unpack_q4_1_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q4_1 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        m[i] = h2f_fast(x[i].m);
        _mm256_storeu_si256((__m256i *)q, nibbles_16(x[i].qs));
    }
}

UTGT static void unpack_q5_1_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q5_1 *x = vx;
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        m[i] = h2f_fast(x[i].m);
        q5_bytes_avx512(x[i].qh, x[i].qs, q);
    }
}

UTGT static void unpack_q5_K_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q5_K *x = vx;
    const __m256i lo4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(16);
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 8, m += 8) {
        const float d = h2f_fast(x[i].d), dmin = h2f_fast(x[i].dmin);
        k4_scales(d, dmin, x[i].scales, s, m);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)x[i].qh);
        for (int p = 0; p < 4; p++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * p));
            const __mmask32 h0 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * p))));
            const __mmask32 h1 =
                _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * p + 1))));
            _mm256_storeu_si256((__m256i *)(q + 64 * p),
                                _mm256_or_si256(_mm256_and_si256(v, lo4),
                                                _mm256_maskz_mov_epi8(h0, b4)));
            _mm256_storeu_si256((__m256i *)(q + 64 * p + 32),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4),
                                                _mm256_maskz_mov_epi8(h1, b4)));
        }
    }
}

UTGT static void unpack_iq4_nl_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_iq4_nl *x = vx;
    int8_t lut[16];
    for (int j = 0; j < 16; j++)
        lut[j] = (int8_t)(qe_kvalues_iq4nl[j] + 128);
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lut));
    for (int i = 0; i < n / 32; i++, q += 32) {
        s[i] = h2f_fast(x[i].d);
        _mm256_storeu_si256((__m256i *)q, _mm256_shuffle_epi8(tab, nibbles_16(x[i].qs)));
    }
}

/* bits 2k, 2k+1 of every byte of v */
UTGT static inline __m256i crumb(__m256i v, int k)
{
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
}

UTGT static void unpack_q2_K_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    const qe_block_q2_K *x = vx;
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16, m += 16) {
        const float d = h2f_fast(x[i].d), dmin = h2f_fast(x[i].dmin);
        for (int j = 0; j < 16; j++) {
            s[j] = d * (x[i].scales[j] & 15);
            m[j] = -(dmin * (x[i].scales[j] >> 4));
        }
        for (int h = 0; h < 2; h++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int k = 0; k < 4; k++)
                _mm256_storeu_si256((__m256i *)(q + 128 * h + 32 * k), crumb(a, k));
        }
    }
}

UTGT static void unpack_q3_K_avx512(const void *vx, int n, uint8_t *q, float *s, float *m)
{
    (void)m;
    const qe_block_q3_K *x = vx;
    const __m256i four = _mm256_set1_epi8(4);
    for (int i = 0; i < n / QE_QK_K; i++, q += QE_QK_K, s += 16) {
        const float d = h2f_fast(x[i].d);
        int8_t sc[16];
        qe_q3_K_scales(x[i].scales, sc);
        for (int j = 0; j < 16; j++)
            s[j] = d * sc[j];
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                const __mmask32 hi = _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * h + k))));
                _mm256_storeu_si256((__m256i *)(q + 128 * h + 32 * k),
                                    _mm256_or_si256(crumb(a, k), _mm256_maskz_mov_epi8(hi, four)));
            }
        }
    }
}

typedef void (*unpack_fn)(const void *, int, uint8_t *, float *, float *);

/* simd: the AVX-512 unpacker where there is one */
static unpack_fn unpack_of(int type, int simd)
{
    if (simd)
        switch (type) {
        case QE_TYPE_Q8_0: return unpack_q8_0_avx512;
        case QE_TYPE_Q5_0: return unpack_q5_0_avx512;
        case QE_TYPE_Q4_K: return unpack_q4_K_avx512;
        case QE_TYPE_Q6_K: return unpack_q6_K_avx512;
        case QE_TYPE_IQ4_NL: return unpack_iq4_nl_avx512;
        case QE_TYPE_Q4_0: return unpack_q4_0_avx512;
        case QE_TYPE_Q4_1: return unpack_q4_1_avx512;
        case QE_TYPE_Q5_1: return unpack_q5_1_avx512;
        case QE_TYPE_Q5_K: return unpack_q5_K_avx512;
        case QE_TYPE_Q2_K: return unpack_q2_K_avx512;
        case QE_TYPE_Q3_K: return unpack_q3_K_avx512;
        default: break;
        }
    switch (type) {
    case QE_TYPE_Q4_0: return unpack_q4_0;
    case QE_TYPE_Q4_1: return unpack_q4_1;
    case QE_TYPE_Q5_0: return unpack_q5_0;
    case QE_TYPE_Q5_1: return unpack_q5_1;
    case QE_TYPE_Q8_0: return unpack_q8_0;
    case QE_TYPE_IQ4_NL: return unpack_iq4_nl;
    case QE_TYPE_Q2_K: return unpack_q2_K;
    case QE_TYPE_Q3_K: return unpack_q3_K;
    case QE_TYPE_Q4_K: return unpack_q4_K;
    case QE_TYPE_Q5_K: return unpack_q5_K;
    case QE_TYPE_Q6_K: return unpack_q6_K;
    default: return NULL;
    }
}

void qe_i8_unpack(int type, const void *w, size_t row_nbytes, int rows, int n, void *tile,
                  int simd)
{
    const i8_kind k = kind_of(type);
    const unpack_fn f = unpack_of(type, simd);
    const tile_view v = view_of(k, tile, rows, n);
    for (int r = 0; r < rows; r++)
        f((const uint8_t *)w + (size_t)r * row_nbytes, n, v.q + (size_t)r * n,
          v.s + (size_t)r * v.nsub, v.m ? v.m + (size_t)r * v.nsub : NULL);
}

/* ------------------------------------------------------- activations -- */

#define BLK_BYTES (512 + QE_I8_LANES * 4 + 2 * QE_I8_LANES * 4) /* qx, dx, qsum */

typedef struct act_view {
    int8_t *qx;   /* [nb][8][16][4] */
    float *dx;    /* [nb][16] */
    int32_t *qs;  /* [nb][2][16] */
} act_view;

static act_view act_group(void *act, int n, int g)
{
    const int nb = n / 32;
    uint8_t *base = (uint8_t *)act + (size_t)g * nb * BLK_BYTES;
    return (act_view){(int8_t *)base, (float *)(base + (size_t)nb * 512),
                      (int32_t *)(base + (size_t)nb * 576)};
}

size_t qe_i8_act_nbytes(int T, int n)
{
    const int groups = (T + QE_I8_LANES - 1) / QE_I8_LANES;
    return (size_t)groups * (n / 32) * BLK_BYTES;
}

/* One token's block b: the same values as the scalar loop below (the same
 * maximum, quotients and products; vcvtps2dq rounds half to even as
 * nearbyintf does in the default rounding mode). */
UTGT static void quantize_block_avx512(const float *xb, const act_view *a, int b, int lane)
{
    const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
    uint32_t w[8];
    _mm_storeu_si128((__m128i *)w, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(w + 4), _mm512_cvtepi32_epi8(q1));
    int8_t *q = a->qx + (size_t)b * 512 + lane * 4;
    for (int l = 0; l < 8; l++)
        memcpy(q + l * 64, &w[l], 4);
    a->dx[b * QE_I8_LANES + lane] = d;
    a->qs[(b * 2 + 0) * QE_I8_LANES + lane] = _mm512_reduce_add_epi32(q0);
    a->qs[(b * 2 + 1) * QE_I8_LANES + lane] = _mm512_reduce_add_epi32(q1);
}

void qe_i8_quantize(const float *x, int ldx, int T, int n, int t0, int t1, void *act, int simd)
{
    (void)T;
    if (simd) {
        for (int t = t0; t < t1; t++) {
            const act_view a = act_group(act, n, t / QE_I8_LANES);
            for (int b = 0; b < n / 32; b++)
                quantize_block_avx512(x + (size_t)t * ldx + 32 * b, &a, b, t % QE_I8_LANES);
        }
        return;
    }
    for (int t = t0; t < t1; t++) {
        const act_view a = act_group(act, n, t / QE_I8_LANES);
        const int lane = t % QE_I8_LANES;
        const float *xt = x + (size_t)t * ldx;
        for (int b = 0; b < n / 32; b++) {
            const float *xb = xt + 32 * b;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) {
                const float v = fabsf(xb[i]);
                amax = v > amax ? v : amax;
            }
            const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            int8_t *q = a.qx + (size_t)b * 512 + lane * 4;
            int32_t sum[2] = {0, 0};
            for (int i = 0; i < 32; i++) {
                const int v = (int)nearbyintf(xb[i] * id);
                q[(i / 4) * 64 + i % 4] = (int8_t)v;
                sum[i / 16] += v;
            }
            a.dx[b * QE_I8_LANES + lane] = d;
            a.qs[(b * 2 + 0) * QE_I8_LANES + lane] = sum[0];
            a.qs[(b * 2 + 1) * QE_I8_LANES + lane] = sum[1];
        }
    }
}

void qe_i8_act_clear(int T, int n, void *act)
{
    if (T % QE_I8_LANES == 0)
        return;
    const act_view a = act_group(act, n, T / QE_I8_LANES);
    for (int b = 0; b < n / 32; b++)
        for (int lane = T % QE_I8_LANES; lane < QE_I8_LANES; lane++) {
            for (int i = 0; i < 32; i++)
                a.qx[(size_t)b * 512 + (i / 4) * 64 + lane * 4 + i % 4] = 0;
            a.dx[b * QE_I8_LANES + lane] = 0.0f;
            a.qs[(b * 2 + 0) * QE_I8_LANES + lane] = 0;
            a.qs[(b * 2 + 1) * QE_I8_LANES + lane] = 0;
        }
}

/* ------------------------------------------------------------ kernels -- */

/* The spec: one output at a time, in the order of dot_int8.h. */
static float dot_ref(i8_kind k, const tile_view *v, int r, int n, const act_view *a, int lane)
{
    const uint8_t *q = v->q + (size_t)r * n;
    float acc = 0.0f;
    for (int j = 0; j < v->nsub; j++) {
        const int e0 = j * k.G, b = e0 / 32;
        int32_t qsum = a->qs[(b * 2 + (e0 % 32) / 16) * QE_I8_LANES + lane];
        if (k.G == 32)
            qsum += a->qs[(b * 2 + 1) * QE_I8_LANES + lane];
        int32_t i = -k.off * qsum;
        for (int e = e0; e < e0 + k.G; e++) {
            const int eb = e % 32;
            i += q[e] * a->qx[(size_t)b * 512 + (eb / 4) * 64 + lane * 4 + eb % 4];
        }
        const float dx = a->dx[b * QE_I8_LANES + lane];
        acc = fmaf(v->s[(size_t)r * v->nsub + j] * dx, (float)i, acc);
        if (k.mins)
            acc = fmaf(v->m[(size_t)r * v->nsub + j], dx * (float)qsum, acc);
    }
    return acc;
}

#pragma GCC push_options
#pragma GCC optimize("O3")
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

#define RB 8 /* rows per register block */

/* out[r][lane] for rows r0 .. r0+RB-1 (all present) of one token group. */
TGT static inline __attribute__((always_inline)) void
block_vnni(const int G, const int off, const int mins, const tile_view *v, int r0, int n,
           const act_view *a, float *out)
{
    __m512 acc[RB];
    for (int r = 0; r < RB; r++)
        acc[r] = _mm512_setzero_ps();
    const uint8_t *q0 = v->q + (size_t)r0 * n;
    const float *s0 = v->s + (size_t)r0 * v->nsub;
    const float *m0 = mins ? v->m + (size_t)r0 * v->nsub : NULL;
    const __m512i noff = _mm512_set1_epi32(-off);
    for (int j = 0; j < v->nsub; j++) {
        const int e0 = j * G, b = e0 / 32, l0 = (e0 % 32) / 4;
        __m512i x[8];
        for (int l = 0; l < G / 4; l++)
            x[l] = _mm512_load_si512(a->qx + (size_t)b * 512 + (l0 + l) * 64);
        __m512i qs = _mm512_load_si512(a->qs + (b * 2 + l0 / 4) * QE_I8_LANES);
        if (G == 32)
            qs = _mm512_add_epi32(qs, _mm512_load_si512(a->qs + (b * 2 + 1) * QE_I8_LANES));
        const __m512i init = off ? _mm512_mullo_epi32(qs, noff) : _mm512_setzero_si512();
        const __m512 dx = _mm512_load_ps(a->dx + b * QE_I8_LANES);
        const __m512 xs = mins ? _mm512_mul_ps(dx, _mm512_cvtepi32_ps(qs)) : dx;
        for (int r = 0; r < RB; r++) {
            const uint8_t *qr = q0 + (size_t)r * n + e0;
            __m512i i = init;
            for (int l = 0; l < G / 4; l++) {
                int32_t w4;
                memcpy(&w4, qr + 4 * l, 4);
                i = _mm512_dpbusd_epi32(i, _mm512_set1_epi32(w4), x[l]);
            }
            const __m512 sc = _mm512_mul_ps(_mm512_set1_ps(s0[(size_t)r * v->nsub + j]), dx);
            acc[r] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(i), acc[r]);
            if (mins)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(m0[(size_t)r * v->nsub + j]), xs, acc[r]);
        }
    }
    for (int r = 0; r < RB; r++)
        _mm512_storeu_ps(out + r * QE_I8_LANES, acc[r]);
}

/* G and mins as constants: the loops unroll and x[] stays in registers */
#define BLOCK_FN(name, G, MINS)                                                                \
    TGT static void name(int off, const tile_view *v, int r0, int n, const act_view *a,       \
                         float *out)                                                           \
    {                                                                                          \
        block_vnni(G, off, MINS, v, r0, n, a, out);                                            \
    }
BLOCK_FN(block_32_off, 32, 0)
BLOCK_FN(block_32_min, 32, 1)
BLOCK_FN(block_16_off, 16, 0)
BLOCK_FN(block_16_min, 16, 1)
#undef BLOCK_FN
#pragma GCC pop_options

int qe_i8_have_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

void qe_i8_gemm(int type, const void *tile, int rows, int n, const void *act, int T, float *y,
                int ldy, int vnni)
{
    const i8_kind k = kind_of(type);
    const tile_view v = view_of(k, (void *)tile, rows, n);
    for (int g = 0; g * QE_I8_LANES < T; g++) {
        const act_view a = act_group((void *)act, n, g);
        const int nt = T - g * QE_I8_LANES < QE_I8_LANES ? T - g * QE_I8_LANES : QE_I8_LANES;
        float *yg = y + (size_t)g * QE_I8_LANES * ldy;
        int r = 0;
        if (vnni) {
            void (*fn)(int, const tile_view *, int, int, const act_view *, float *) =
                k.G == 32 ? (k.mins ? block_32_min : block_32_off)
                          : (k.mins ? block_16_min : block_16_off);
            float out[RB * QE_I8_LANES] __attribute__((aligned(64)));
            for (; r + RB <= rows; r += RB) {
                fn(k.off, &v, r, n, &a, out);
                for (int i = 0; i < RB; i++)
                    for (int t = 0; t < nt; t++)
                        yg[(size_t)t * ldy + r + i] = out[i * QE_I8_LANES + t];
            }
        }
        for (; r < rows; r++)
            for (int t = 0; t < nt; t++)
                yg[(size_t)t * ldy + r] = dot_ref(k, &v, r, n, &a, t);
    }
}
