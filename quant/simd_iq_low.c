/*
 * simd_iq_low.c: AVX2 and AVX-512 dequantizers (and the vec_dots built
 * on them) for the types below 4 bits: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
 * IQ3_S, IQ1_S, IQ1_M, TQ1_0, TQ2_0.
 *
 * Bitwise equal to the scalar spec in formats_iq_low.c: grid bytes are
 * widened to int32 and converted (exact), then the same float operations
 * in the same order: (db * grid) * (+-1) for the signed grids,
 * dl * (grid + delta) for IQ1, (q - 1) * d for the ternary types; never a
 * fused multiply-add.  vec_dot dequantizes 256 weights into a stack
 * buffer and accumulates with FMA in 4 x 8 (16) lanes, like the other
 * SIMD dots (tested within 1e-5 * sum|x*y| of the reference).
 *
 * Registered by qe_register_avx2 / qe_register_avx512 (types.c) through
 * qe_register_iq_low_avx2 / _avx512; nothing here runs unless the CPU
 * reported the features.
 */
#include "quant_internal.h" /* first: sets the FP contraction mode */

#include <immintrin.h>

#define TGT2 __attribute__((target("avx2,fma,f16c")))
#define TGT5 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* ================================ AVX2 ================================ */

/* y[0..7] = (db * g[j]) * (sign bit j ? -1 : +1), g unsigned bytes. */
TGT2 static inline void emit8_signed(float *y, __m128i g8, __m256 db, uint8_t signs)
{
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256 v = _mm256_mul_ps(db, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(g8)));
    __m256i neg = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(signs), bit), bit);
    __m256 s = _mm256_blendv_ps(_mm256_set1_ps(1.f), _mm256_set1_ps(-1.f), _mm256_castsi256_ps(neg));
    _mm256_storeu_ps(y, _mm256_mul_ps(v, s));
}

TGT2 static inline __m128i ld_grid8(uint64_t g) { return _mm_cvtsi64_si128((long long)g); }
TGT2 static inline __m128i ld_grid4x2(uint32_t g1, uint32_t g2)
{
    return _mm_cvtsi64_si128((long long)((uint64_t)g1 | ((uint64_t)g2 << 32)));
}

TGT2 static void iq2_xxs_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xxs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        for (int ib = 0; ib < 8; ib++) {
            uint32_t aux[2];
            memcpy(aux, x[i].qs + 4 * ib, 8);
            const uint8_t *a8 = (const uint8_t *)aux;
            const __m256 db = _mm256_set1_ps(d * (0.5f + (aux[1] >> 28)) * 0.25f);
            for (int l = 0; l < 4; l++, y += 8)
                emit8_signed(y, ld_grid8(qe_iq2xxs_grid[a8[l]]), db,
                             qe_ksigns_iq2xs[(aux[1] >> 7 * l) & 127]);
        }
    }
}

TGT2 static void iq2_xs_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        uint16_t qs[32];
        memcpy(qs, x[i].qs, sizeof qs);
        for (int ib = 0; ib < 8; ib++) {
            const __m256 db0 = _mm256_set1_ps(d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f);
            const __m256 db1 = _mm256_set1_ps(d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f);
            for (int l = 0; l < 4; l++, y += 8) {
                const uint16_t q = qs[4 * ib + l];
                emit8_signed(y, ld_grid8(qe_iq2xs_grid[q & 511]), l < 2 ? db0 : db1,
                             qe_ksigns_iq2xs[q >> 9]);
            }
        }
    }
}

TGT2 static void iq2_s_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs, *qh = x[i].qh, *signs = x[i].qs + QE_QK_K / 8;
        for (int ib = 0; ib < 8; ib++) {
            const __m256 db0 = _mm256_set1_ps(d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f);
            const __m256 db1 = _mm256_set1_ps(d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f);
            for (int l = 0; l < 4; l++, y += 8)
                emit8_signed(y, ld_grid8(qe_iq2s_grid[qs[4 * ib + l] | (qh[ib] << (8 - 2 * l) & 0x300)]),
                             l < 2 ? db0 : db1, signs[4 * ib + l]);
        }
    }
}

TGT2 static void iq3_xxs_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_xxs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < 8; ib++, qs += 8) {
            uint32_t aux;
            memcpy(&aux, x[i].qs + QE_QK_K / 4 + 4 * ib, 4);
            const __m256 db = _mm256_set1_ps(d * (0.5f + (aux >> 28)) * 0.5f);
            for (int l = 0; l < 4; l++, y += 8)
                emit8_signed(y, ld_grid4x2(qe_iq3xxs_grid[qs[2 * l]], qe_iq3xxs_grid[qs[2 * l + 1]]),
                             db, qe_ksigns_iq2xs[(aux >> 7 * l) & 127]);
        }
    }
}

TGT2 static void iq3_s_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs, *qh = x[i].qh, *signs = x[i].signs;
        for (int ib = 0; ib < 8; ib++, qs += 8, signs += 4) {
            const int ls = ib % 2 ? x[i].scales[ib / 2] >> 4 : x[i].scales[ib / 2] & 0xf;
            const __m256 db = _mm256_set1_ps(d * (1 + 2 * ls));
            const int h = qh[ib];
            for (int l = 0; l < 4; l++, y += 8)
                emit8_signed(y,
                             ld_grid4x2(qe_iq3s_grid[qs[2 * l] | ((h << (8 - 2 * l)) & 256)],
                                        qe_iq3s_grid[qs[2 * l + 1] | ((h << (7 - 2 * l)) & 256)]),
                             db, signs[l]);
        }
    }
}

/* y[0..7] = dl * (g[j] + delta), g signed bytes (-1, 0, 1). */
TGT2 static inline void emit8_iq1(float *y, uint64_t g, __m256 dl, __m256 delta)
{
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(ld_grid8(g)));
    _mm256_storeu_ps(y, _mm256_mul_ps(dl, _mm256_add_ps(v, delta)));
}

TGT2 static void iq1_s_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        uint16_t qh[8];
        memcpy(qh, x[i].qh, sizeof qh);
        for (int ib = 0; ib < 8; ib++, qs += 4) {
            const __m256 dl = _mm256_set1_ps(d * (2 * ((qh[ib] >> 12) & 7) + 1));
            const __m256 delta = _mm256_set1_ps(qh[ib] & 0x8000 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA);
            for (int l = 0; l < 4; l++, y += 8)
                emit8_iq1(y, qe_iq1s_grid[qs[l] | (((qh[ib] >> 3 * l) & 7) << 8)], dl, delta);
        }
    }
}

TGT2 static void iq1_m_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_m *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, sizeof sc);
        const float d = qe_h2f((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                          ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
        const uint8_t *qs = x[i].qs, *qh = x[i].qh;
        for (int ib = 0; ib < 8; ib++, qs += 4, qh += 2) {
            const __m256 dl1 = _mm256_set1_ps(d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1));
            const __m256 dl2 = _mm256_set1_ps(d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1));
            for (int l = 0; l < 4; l++, y += 8) {
                const int h = qh[l / 2] >> (4 * (l % 2));
                const __m256 delta = _mm256_set1_ps(h & 0x08 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA);
                emit8_iq1(y, qe_iq1s_grid[qs[l] | ((h & 7) << 8)], l < 2 ? dl1 : dl2, delta);
            }
        }
    }
}

/* Ternary: the trits of a block in element order (as the spec decodes
 * them), then (q - 1) * d eight at a time. */
static void tq1_0_trits(const qe_block_tq1_0 *b, uint8_t t[QE_QK_K])
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    int o = 0;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            t[o++] = (uint8_t)(((uint16_t)(uint8_t)(b->qs[m] * pow3[n]) * 3) >> 8);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            t[o++] = (uint8_t)(((uint16_t)(uint8_t)(b->qs[32 + m] * pow3[n]) * 3) >> 8);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            t[o++] = (uint8_t)(((uint16_t)(uint8_t)(b->qh[j] * pow3[n]) * 3) >> 8);
}

static void tq2_0_trits(const qe_block_tq2_0 *b, uint8_t t[QE_QK_K])
{
    int o = 0;
    for (int j = 0; j < 64; j += 32)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                t[o++] = (uint8_t)((b->qs[j + m] >> (l * 2)) & 3);
}

TGT2 static inline void emit_trits_avx2(float *y, const uint8_t t[QE_QK_K], float d)
{
    const __m256 vd = _mm256_set1_ps(d);
    const __m256i one = _mm256_set1_epi32(1);
    for (int j = 0; j < QE_QK_K; j += 8) {
        __m256i q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(t + j))), one);
        _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), vd));
    }
}

TGT2 static void tq1_0_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq1_0 *x = vx;
    uint8_t t[QE_QK_K];
    for (int64_t i = 0; i < k / QE_QK_K; i++, y += QE_QK_K) {
        tq1_0_trits(&x[i], t);
        emit_trits_avx2(y, t, qe_h2f(x[i].d));
    }
}

TGT2 static void tq2_0_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq2_0 *x = vx;
    uint8_t t[QE_QK_K];
    for (int64_t i = 0; i < k / QE_QK_K; i++, y += QE_QK_K) {
        tq2_0_trits(&x[i], t);
        emit_trits_avx2(y, t, qe_h2f(x[i].d));
    }
}

TGT2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Dot of n weights (256-blocks of type_size bytes) with f32 y. */
TGT2 static float dot_via_avx2(qe_to_float_fn deq, size_t type_size, int64_t n, const void *vx,
                               const float *y)
{
    float tmp[QE_QK_K];
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    const uint8_t *x = vx;
    for (int64_t i0 = 0; i0 < n; i0 += QE_QK_K) {
        deq(x + (size_t)(i0 / QE_QK_K) * type_size, tmp, QE_QK_K);
        for (int j = 0; j < QE_QK_K; j += 32) {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j), _mm256_loadu_ps(y + i0 + j), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 8), _mm256_loadu_ps(y + i0 + j + 8), acc1);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 16), _mm256_loadu_ps(y + i0 + j + 16), acc2);
            acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 24), _mm256_loadu_ps(y + i0 + j + 24), acc3);
        }
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

#define DOT2(name, deq, block_t)                                                          \
    TGT2 static void name(int64_t n, float *restrict s, const void *restrict x,           \
                          const void *restrict y)                                         \
    {                                                                                     \
        *s = dot_via_avx2(deq, sizeof(block_t), n, x, y);                                 \
    }
DOT2(iq2_xxs_dot_avx2, iq2_xxs_to_float_avx2, qe_block_iq2_xxs)
DOT2(iq2_xs_dot_avx2, iq2_xs_to_float_avx2, qe_block_iq2_xs)
DOT2(iq2_s_dot_avx2, iq2_s_to_float_avx2, qe_block_iq2_s)
DOT2(iq3_xxs_dot_avx2, iq3_xxs_to_float_avx2, qe_block_iq3_xxs)
DOT2(iq3_s_dot_avx2, iq3_s_to_float_avx2, qe_block_iq3_s)
DOT2(iq1_s_dot_avx2, iq1_s_to_float_avx2, qe_block_iq1_s)
DOT2(iq1_m_dot_avx2, iq1_m_to_float_avx2, qe_block_iq1_m)
DOT2(tq1_0_dot_avx2, tq1_0_to_float_avx2, qe_block_tq1_0)
DOT2(tq2_0_dot_avx2, tq2_0_to_float_avx2, qe_block_tq2_0)
#undef DOT2

void qe_register_iq_low_avx2(qe_type_traits *tab)
{
#define SET(T, pfx)                                                                       \
    do {                                                                                  \
        tab[T].to_float = pfx##_to_float_avx2;                                            \
        tab[T].vec_dot = pfx##_dot_avx2;                                                  \
    } while (0)
    SET(QE_TYPE_IQ2_XXS, iq2_xxs);
    SET(QE_TYPE_IQ2_XS, iq2_xs);
    SET(QE_TYPE_IQ2_S, iq2_s);
    SET(QE_TYPE_IQ3_XXS, iq3_xxs);
    SET(QE_TYPE_IQ3_S, iq3_s);
    SET(QE_TYPE_IQ1_S, iq1_s);
    SET(QE_TYPE_IQ1_M, iq1_m);
    SET(QE_TYPE_TQ1_0, tq1_0);
    SET(QE_TYPE_TQ2_0, tq2_0);
#undef SET
}

/* ============================== AVX-512 ============================== */

/* 16 weights (two groups of 8): y = (db * g) * (+-1), sign bit j of the
 * 16-bit mask set = negative; g unsigned bytes. */
TGT5 static inline void emit16_signed(float *y, __m128i g16, __m512 db, __mmask16 neg)
{
    __m512 v = _mm512_mul_ps(db, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(g16)));
    __m512 s = _mm512_mask_blend_ps(neg, _mm512_set1_ps(1.f), _mm512_set1_ps(-1.f));
    _mm512_storeu_ps(y, _mm512_mul_ps(v, s));
}

TGT5 static inline __m128i grid2(uint64_t a, uint64_t b)
{
    return _mm_set_epi64x((long long)b, (long long)a);
}

/* db for two groups: the first 8 lanes da, the last 8 db. */
TGT5 static inline __m512 db2(float da, float db)
{
    return _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(da), _mm512_set1_ps(db));
}

TGT5 static void iq2_xxs_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xxs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        for (int ib = 0; ib < 8; ib++) {
            uint32_t aux[2];
            memcpy(aux, x[i].qs + 4 * ib, 8);
            const uint8_t *a8 = (const uint8_t *)aux;
            const __m512 db = _mm512_set1_ps(d * (0.5f + (aux[1] >> 28)) * 0.25f);
            for (int l = 0; l < 4; l += 2, y += 16) {
                const unsigned s = qe_ksigns_iq2xs[(aux[1] >> 7 * l) & 127] |
                                   ((unsigned)qe_ksigns_iq2xs[(aux[1] >> 7 * (l + 1)) & 127] << 8);
                emit16_signed(y, grid2(qe_iq2xxs_grid[a8[l]], qe_iq2xxs_grid[a8[l + 1]]), db,
                              (__mmask16)s);
            }
        }
    }
}

TGT5 static void iq2_xs_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        uint16_t qs[32];
        memcpy(qs, x[i].qs, sizeof qs);
        for (int ib = 0; ib < 8; ib++) {
            const float db0 = d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f;
            const float db1 = d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f;
            for (int l = 0; l < 4; l += 2, y += 16) {
                const uint16_t q0 = qs[4 * ib + l], q1 = qs[4 * ib + l + 1];
                const unsigned s = qe_ksigns_iq2xs[q0 >> 9] | ((unsigned)qe_ksigns_iq2xs[q1 >> 9] << 8);
                emit16_signed(y, grid2(qe_iq2xs_grid[q0 & 511], qe_iq2xs_grid[q1 & 511]),
                              _mm512_set1_ps(l < 2 ? db0 : db1), (__mmask16)s);
            }
        }
    }
}

TGT5 static void iq2_s_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs, *qh = x[i].qh, *signs = x[i].qs + QE_QK_K / 8;
        for (int ib = 0; ib < 8; ib++) {
            const float db0 = d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f;
            const float db1 = d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f;
            for (int l = 0; l < 4; l += 2, y += 16) {
                const uint64_t g0 = qe_iq2s_grid[qs[4 * ib + l] | (qh[ib] << (8 - 2 * l) & 0x300)];
                const uint64_t g1 =
                    qe_iq2s_grid[qs[4 * ib + l + 1] | (qh[ib] << (8 - 2 * (l + 1)) & 0x300)];
                const unsigned s = signs[4 * ib + l] | ((unsigned)signs[4 * ib + l + 1] << 8);
                emit16_signed(y, grid2(g0, g1), _mm512_set1_ps(l < 2 ? db0 : db1), (__mmask16)s);
            }
        }
    }
}

TGT5 static void iq3_xxs_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_xxs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < 8; ib++, qs += 8) {
            uint32_t aux;
            memcpy(&aux, x[i].qs + QE_QK_K / 4 + 4 * ib, 4);
            const __m512 db = _mm512_set1_ps(d * (0.5f + (aux >> 28)) * 0.5f);
            for (int l = 0; l < 4; l += 2, y += 16) {
                const __m128i g = _mm_setr_epi32((int)qe_iq3xxs_grid[qs[2 * l]], (int)qe_iq3xxs_grid[qs[2 * l + 1]],
                                                 (int)qe_iq3xxs_grid[qs[2 * l + 2]],
                                                 (int)qe_iq3xxs_grid[qs[2 * l + 3]]);
                const unsigned s = qe_ksigns_iq2xs[(aux >> 7 * l) & 127] |
                                   ((unsigned)qe_ksigns_iq2xs[(aux >> 7 * (l + 1)) & 127] << 8);
                emit16_signed(y, g, db, (__mmask16)s);
            }
        }
    }
}

TGT5 static void iq3_s_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs, *qh = x[i].qh, *signs = x[i].signs;
        for (int ib = 0; ib < 8; ib++, qs += 8, signs += 4) {
            const int ls = ib % 2 ? x[i].scales[ib / 2] >> 4 : x[i].scales[ib / 2] & 0xf;
            const __m512 db = _mm512_set1_ps(d * (1 + 2 * ls));
            const int h = qh[ib];
            for (int l = 0; l < 4; l += 2, y += 16) {
                const __m128i g = _mm_setr_epi32(
                    (int)qe_iq3s_grid[qs[2 * l] | ((h << (8 - 2 * l)) & 256)],
                    (int)qe_iq3s_grid[qs[2 * l + 1] | ((h << (7 - 2 * l)) & 256)],
                    (int)qe_iq3s_grid[qs[2 * l + 2] | ((h << (8 - 2 * (l + 1))) & 256)],
                    (int)qe_iq3s_grid[qs[2 * l + 3] | ((h << (7 - 2 * (l + 1))) & 256)]);
                const unsigned s = signs[l] | ((unsigned)signs[l + 1] << 8);
                emit16_signed(y, g, db, (__mmask16)s);
            }
        }
    }
}

/* 16 weights of IQ1: y = dl * (g + delta), per-half dl and delta. */
TGT5 static inline void emit16_iq1(float *y, uint64_t g0, uint64_t g1, __m512 dl, __m512 delta)
{
    __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(grid2(g0, g1)));
    _mm512_storeu_ps(y, _mm512_mul_ps(dl, _mm512_add_ps(v, delta)));
}

TGT5 static void iq1_s_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        uint16_t qh[8];
        memcpy(qh, x[i].qh, sizeof qh);
        for (int ib = 0; ib < 8; ib++, qs += 4) {
            const __m512 dl = _mm512_set1_ps(d * (2 * ((qh[ib] >> 12) & 7) + 1));
            const __m512 delta = _mm512_set1_ps(qh[ib] & 0x8000 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA);
            for (int l = 0; l < 4; l += 2, y += 16)
                emit16_iq1(y, qe_iq1s_grid[qs[l] | (((qh[ib] >> 3 * l) & 7) << 8)],
                           qe_iq1s_grid[qs[l + 1] | (((qh[ib] >> 3 * (l + 1)) & 7) << 8)], dl,
                           delta);
        }
    }
}

TGT5 static void iq1_m_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_m *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, sizeof sc);
        const float d = qe_h2f((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                          ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
        const uint8_t *qs = x[i].qs, *qh = x[i].qh;
        for (int ib = 0; ib < 8; ib++, qs += 4, qh += 2) {
            const float dl1 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1);
            const float dl2 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1);
            for (int l = 0; l < 4; l += 2, y += 16) {
                const int h = qh[l / 2]; /* low nibble: group l, high: group l+1 */
                const float de0 = h & 0x08 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
                const float de1 = h & 0x80 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
                emit16_iq1(y, qe_iq1s_grid[qs[l] | ((h & 7) << 8)],
                           qe_iq1s_grid[qs[l + 1] | (((h >> 4) & 7) << 8)],
                           _mm512_set1_ps(l < 2 ? dl1 : dl2), db2(de0, de1));
            }
        }
    }
}

TGT5 static inline void emit_trits_avx512(float *y, const uint8_t t[QE_QK_K], float d)
{
    const __m512 vd = _mm512_set1_ps(d);
    const __m512i one = _mm512_set1_epi32(1);
    for (int j = 0; j < QE_QK_K; j += 16) {
        __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(t + j))), one);
        _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_cvtepi32_ps(q), vd));
    }
}

TGT5 static void tq1_0_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq1_0 *x = vx;
    uint8_t t[QE_QK_K];
    for (int64_t i = 0; i < k / QE_QK_K; i++, y += QE_QK_K) {
        tq1_0_trits(&x[i], t);
        emit_trits_avx512(y, t, qe_h2f(x[i].d));
    }
}

TGT5 static void tq2_0_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq2_0 *x = vx;
    uint8_t t[QE_QK_K];
    for (int64_t i = 0; i < k / QE_QK_K; i++, y += QE_QK_K) {
        tq2_0_trits(&x[i], t);
        emit_trits_avx512(y, t, qe_h2f(x[i].d));
    }
}

TGT5 static float dot_via_avx512(qe_to_float_fn deq, size_t type_size, int64_t n, const void *vx,
                                 const float *y)
{
    float tmp[QE_QK_K];
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    const uint8_t *x = vx;
    for (int64_t i0 = 0; i0 < n; i0 += QE_QK_K) {
        deq(x + (size_t)(i0 / QE_QK_K) * type_size, tmp, QE_QK_K);
        for (int j = 0; j < QE_QK_K; j += 64) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j), _mm512_loadu_ps(y + i0 + j), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j + 16), _mm512_loadu_ps(y + i0 + j + 16), acc1);
            acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j + 32), _mm512_loadu_ps(y + i0 + j + 32), acc2);
            acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j + 48), _mm512_loadu_ps(y + i0 + j + 48), acc3);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

#define DOT5(name, deq, block_t)                                                          \
    TGT5 static void name(int64_t n, float *restrict s, const void *restrict x,           \
                          const void *restrict y)                                         \
    {                                                                                     \
        *s = dot_via_avx512(deq, sizeof(block_t), n, x, y);                               \
    }
DOT5(iq2_xxs_dot_avx512, iq2_xxs_to_float_avx512, qe_block_iq2_xxs)
DOT5(iq2_xs_dot_avx512, iq2_xs_to_float_avx512, qe_block_iq2_xs)
DOT5(iq2_s_dot_avx512, iq2_s_to_float_avx512, qe_block_iq2_s)
DOT5(iq3_xxs_dot_avx512, iq3_xxs_to_float_avx512, qe_block_iq3_xxs)
DOT5(iq3_s_dot_avx512, iq3_s_to_float_avx512, qe_block_iq3_s)
DOT5(iq1_s_dot_avx512, iq1_s_to_float_avx512, qe_block_iq1_s)
DOT5(iq1_m_dot_avx512, iq1_m_to_float_avx512, qe_block_iq1_m)
DOT5(tq1_0_dot_avx512, tq1_0_to_float_avx512, qe_block_tq1_0)
DOT5(tq2_0_dot_avx512, tq2_0_to_float_avx512, qe_block_tq2_0)
#undef DOT5

void qe_register_iq_low_avx512(qe_type_traits *tab)
{
#define SET(T, pfx)                                                                       \
    do {                                                                                  \
        tab[T].to_float = pfx##_to_float_avx512;                                          \
        tab[T].vec_dot = pfx##_dot_avx512;                                                \
    } while (0)
    SET(QE_TYPE_IQ2_XXS, iq2_xxs);
    SET(QE_TYPE_IQ2_XS, iq2_xs);
    SET(QE_TYPE_IQ2_S, iq2_s);
    SET(QE_TYPE_IQ3_XXS, iq3_xxs);
    SET(QE_TYPE_IQ3_S, iq3_s);
    SET(QE_TYPE_IQ1_S, iq1_s);
    SET(QE_TYPE_IQ1_M, iq1_m);
    SET(QE_TYPE_TQ1_0, tq1_0);
    SET(QE_TYPE_TQ2_0, tq2_0);
#undef SET
}
