/*
 * simd_avx2.c: AVX2 (+FMA, F16C) variants of to_float (dequantize) and
 * vec_dot, chosen at run time by qe_quant_init (types.c).
 *
 * Dequantize is BITWISE equal to the scalar reference in formats_*.c: the
 * integer levels are rebuilt exactly, converted to float, and combined with
 * the same float operations in the same order (a separate multiply and
 * subtract, never a fused multiply-add; the build's -std=c11 keeps
 * -ffp-contract=off).  vec_dot dequantizes up to 256 weights into a stack
 * buffer and accumulates with FMA in 4x8 lanes: its rounding differs from
 * the reference, tested within 1e-5 * sum|x*y|.
 *
 * Every function carries target("avx2,fma,f16c"); nothing here runs unless
 * the CPU reported those features.
 */
#include <immintrin.h>

#include "quant_internal.h"

#define TGT __attribute__((target("avx2,fma,f16c")))

/* 8 bytes -> 8 x int32 (zero-extended). */
TGT static inline __m256i ld8_u8(const uint8_t *p)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
TGT static inline __m256i ld8_i8(const int8_t *p)
{
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
TGT static inline void st_scaled(float *y, __m256i q, __m256 d)
{
    _mm256_storeu_ps(y, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
}
TGT static inline void st_scaled_min(float *y, __m256i q, __m256 d, __m256 m)
{
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m));
}

/* ---- plain floats -------------------------------------------------- */

TGT static void f16_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < k; i++)
        y[i] = qe_h2f(x[i]);
}

TGT static void bf16_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < k; i++)
        y[i] = qe_bf16_to_fp32(x[i]);
}

/* ---- legacy -------------------------------------------------------- */

TGT static void q8_0_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q8_0 *x = vx;
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(qe_h2f(x[i].d));
        for (int j = 0; j < 32; j += 8)
            st_scaled(y + j, ld8_i8(x[i].qs + j), d);
    }
}

TGT static void q4_0_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_0 *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF), off = _mm256_set1_epi32(8);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(qe_h2f(x[i].d));
        for (int j = 0; j < 16; j += 8) {
            __m256i b = ld8_u8(x[i].qs + j);
            st_scaled(y + j, _mm256_sub_epi32(_mm256_and_si256(b, m4), off), d);
            st_scaled(y + 16 + j, _mm256_sub_epi32(_mm256_srli_epi32(b, 4), off), d);
        }
    }
}

/* 8 x int32: bit (base + lane) of qh, as 0 or 16. */
TGT static inline __m256i qh_bits16(uint32_t qh, int base)
{
    const __m256i sh = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)(qh >> base)), sh);
    return _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(1)), 4);
}

TGT static void q5_0_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_0 *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF), off = _mm256_set1_epi32(16);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(qe_h2f(x[i].d));
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < 16; j += 8) {
            __m256i b = ld8_u8(x[i].qs + j);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(b, m4), qh_bits16(qh, j));
            __m256i hi = _mm256_or_si256(_mm256_srli_epi32(b, 4), qh_bits16(qh, j + 16));
            st_scaled(y + j, _mm256_sub_epi32(lo, off), d);
            st_scaled(y + 16 + j, _mm256_sub_epi32(hi, off), d);
        }
    }
}

TGT static void q5_1_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_1 *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(qe_h2f(x[i].d)), m = _mm256_set1_ps(qe_h2f(x[i].m));
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < 16; j += 8) {
            __m256i b = ld8_u8(x[i].qs + j);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(b, m4), qh_bits16(qh, j));
            __m256i hi = _mm256_or_si256(_mm256_srli_epi32(b, 4), qh_bits16(qh, j + 16));
            /* reference: x*d + m */
            _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), d), m));
            _mm256_storeu_ps(y + 16 + j,
                             _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), d), m));
        }
    }
}

TGT static void iq4_nl_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq4_nl *x = vx;
    const __m128i lut = _mm_loadu_si128((const __m128i *)qe_kvalues_iq4nl);
    const __m128i m4 = _mm_set1_epi8(0xF);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(qe_h2f(x[i].d));
        __m128i b = _mm_loadu_si128((const __m128i *)x[i].qs);
        __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, m4));
        __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), m4));
        st_scaled(y + 0, _mm256_cvtepi8_epi32(lo), d);
        st_scaled(y + 8, _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)), d);
        st_scaled(y + 16, _mm256_cvtepi8_epi32(hi), d);
        st_scaled(y + 24, _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)), d);
    }
}

/* ---- k-quants ------------------------------------------------------ */

TGT static void q2_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q2_K *x = vx;
    const __m256i m3 = _mm256_set1_epi32(3);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < 256; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = x[i].scales[is++];
                    const __m256 dl = _mm256_set1_ps(d * (sc & 0xF));
                    const __m256 ml = _mm256_set1_ps(min * (sc >> 4));
                    const __m128i s = _mm_cvtsi32_si128(shift);
                    for (int l = 0; l < 16; l += 8) {
                        __m256i b = ld8_u8(q + 16 * half + l);
                        st_scaled_min(y + l, _mm256_and_si256(_mm256_srl_epi32(b, s), m3), dl, ml);
                    }
                    y += 16;
                }
            }
        }
    }
}

TGT static void q3_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q3_K *x = vx;
    const __m256i m3 = _mm256_set1_epi32(3), four = _mm256_set1_epi32(4);
    const __m256i zero = _mm256_setzero_si256();
    int8_t sc[16];
    for (int64_t i = 0; i < k / 256; i++) {
        const float d_all = qe_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            int lo = j < 8 ? (x[i].scales[j] & 0xF) : (x[i].scales[j - 8] >> 4);
            int hi = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        int is = 0, mbit = 0;
        for (int n = 0; n < 256; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, mbit++) {
                const __m256i mm = _mm256_set1_epi32(1 << mbit);
                const __m128i s = _mm_cvtsi32_si128(shift);
                for (int half = 0; half < 2; half++) {
                    const __m256 dl = _mm256_set1_ps(d_all * sc[is++]);
                    for (int l = 0; l < 16; l += 8) {
                        __m256i b = _mm256_and_si256(_mm256_srl_epi32(ld8_u8(q + 16 * half + l), s), m3);
                        __m256i h = _mm256_and_si256(ld8_u8(hm + 16 * half + l), mm);
                        /* subtract 4 where the high bit is clear */
                        __m256i sub = _mm256_and_si256(_mm256_cmpeq_epi32(h, zero), four);
                        st_scaled(y + l, _mm256_sub_epi32(b, sub), dl);
                    }
                    y += 16;
                }
            }
        }
    }
}

static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

TGT static void q4_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_K *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(min * m);
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const __m256 d2 = _mm256_set1_ps(d * sc), m2 = _mm256_set1_ps(min * m);
            for (int l = 0; l < 32; l += 8) {
                __m256i b = ld8_u8(q + l);
                st_scaled_min(y + l, _mm256_and_si256(b, m4), d1, m1);
                st_scaled_min(y + 32 + l, _mm256_srli_epi32(b, 4), d2, m2);
            }
        }
    }
}

TGT static void q5_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_K *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF), one = _mm256_set1_epi32(1);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        for (int is = 0; is < 8; is += 2, ql += 32, y += 64) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(min * m);
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const __m256 d2 = _mm256_set1_ps(d * sc), m2 = _mm256_set1_ps(min * m);
            const __m128i s1 = _mm_cvtsi32_si128(is), s2 = _mm_cvtsi32_si128(is + 1);
            for (int l = 0; l < 32; l += 8) {
                __m256i b = ld8_u8(ql + l), h = ld8_u8(qh + l);
                __m256i h1 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(h, s1), one), 4);
                __m256i h2 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(h, s2), one), 4);
                st_scaled_min(y + l, _mm256_or_si256(_mm256_and_si256(b, m4), h1), d1, m1);
                st_scaled_min(y + 32 + l, _mm256_or_si256(_mm256_srli_epi32(b, 4), h2), d2, m2);
            }
        }
    }
}

TGT static void q6_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q6_K *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF), m3 = _mm256_set1_epi32(3);
    const __m256i off = _mm256_set1_epi32(32);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l += 8) {
                const int is = l / 16;
                __m256i a = ld8_u8(ql + l), b = ld8_u8(ql + 32 + l), h = ld8_u8(qh + l);
                __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, m4),
                                             _mm256_slli_epi32(_mm256_and_si256(h, m3), 4));
                __m256i q2 = _mm256_or_si256(
                    _mm256_and_si256(b, m4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), m3), 4));
                __m256i q3 = _mm256_or_si256(
                    _mm256_srli_epi32(a, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), m3), 4));
                __m256i q4 = _mm256_or_si256(
                    _mm256_srli_epi32(b, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), m3), 4));
                /* reference: (d * sc) * q */
                st_scaled(y + l + 0, _mm256_sub_epi32(q1, off), _mm256_set1_ps(d * sc[is + 0]));
                st_scaled(y + l + 32, _mm256_sub_epi32(q2, off), _mm256_set1_ps(d * sc[is + 2]));
                st_scaled(y + l + 64, _mm256_sub_epi32(q3, off), _mm256_set1_ps(d * sc[is + 4]));
                st_scaled(y + l + 96, _mm256_sub_epi32(q4, off), _mm256_set1_ps(d * sc[is + 6]));
            }
        }
    }
}

/* ---- vec_dot: SIMD dequantize + FMA -------------------------------- */

TGT static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Dot of n weights of a type (blck elements per type_size bytes) with f32
 * y, dequantizing 256 weights at a time with `deq`. */
TGT static float dot_via(qe_to_float_fn deq, int64_t blck, size_t type_size, int64_t n,
                         const void *vx, const float *y)
{
    float tmp[256];
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    const uint8_t *x = vx;
    float tail = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t m = n - i0 < 256 ? n - i0 : 256;
        deq(x + (size_t)(i0 / blck) * type_size, tmp, m);
        int64_t j = 0;
        for (; j + 32 <= m; j += 32) {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j), _mm256_loadu_ps(y + i0 + j), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 8), _mm256_loadu_ps(y + i0 + j + 8), acc1);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 16), _mm256_loadu_ps(y + i0 + j + 16), acc2);
            acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j + 24), _mm256_loadu_ps(y + i0 + j + 24), acc3);
        }
        for (; j < m; j++)
            tail += tmp[j] * y[i0 + j];
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3))) + tail;
}

static void f32_copy(const void *restrict x, float *restrict y, int64_t k)
{
    memcpy(y, x, (size_t)k * sizeof(float));
}

#define DOT_WRAP(name, deq, blck, tsize)                                                  \
    TGT static void name(int64_t n, float *restrict s, const void *restrict x,            \
                         const void *restrict y)                                          \
    {                                                                                     \
        *s = dot_via(deq, blck, tsize, n, x, y);                                          \
    }
DOT_WRAP(f32_dot_avx2, f32_copy, 1, 4)
DOT_WRAP(f16_dot_avx2, f16_to_float_avx2, 1, 2)
DOT_WRAP(bf16_dot_avx2, bf16_to_float_avx2, 1, 2)
DOT_WRAP(q8_0_dot_avx2, q8_0_to_float_avx2, 32, sizeof(qe_block_q8_0))
DOT_WRAP(q4_0_dot_avx2, q4_0_to_float_avx2, 32, sizeof(qe_block_q4_0))
DOT_WRAP(q5_0_dot_avx2, q5_0_to_float_avx2, 32, sizeof(qe_block_q5_0))
DOT_WRAP(q5_1_dot_avx2, q5_1_to_float_avx2, 32, sizeof(qe_block_q5_1))
DOT_WRAP(iq4_nl_dot_avx2, iq4_nl_to_float_avx2, 32, sizeof(qe_block_iq4_nl))
DOT_WRAP(q2_K_dot_avx2, q2_K_to_float_avx2, 256, sizeof(qe_block_q2_K))
DOT_WRAP(q3_K_dot_avx2, q3_K_to_float_avx2, 256, sizeof(qe_block_q3_K))
DOT_WRAP(q4_K_dot_avx2, q4_K_to_float_avx2, 256, sizeof(qe_block_q4_K))
DOT_WRAP(q5_K_dot_avx2, q5_K_to_float_avx2, 256, sizeof(qe_block_q5_K))
DOT_WRAP(q6_K_dot_avx2, q6_K_to_float_avx2, 256, sizeof(qe_block_q6_K))

void qe_register_avx2(qe_type_traits *tab)
{
#define SET(T, deq, dot)                                                                  \
    do {                                                                                  \
        tab[T].to_float = deq;                                                            \
        tab[T].vec_dot = dot;                                                             \
    } while (0)
    SET(QE_TYPE_F16, f16_to_float_avx2, f16_dot_avx2);
    SET(QE_TYPE_BF16, bf16_to_float_avx2, bf16_dot_avx2);
    tab[QE_TYPE_F32].vec_dot = f32_dot_avx2;
    SET(QE_TYPE_Q8_0, q8_0_to_float_avx2, q8_0_dot_avx2);
    SET(QE_TYPE_Q4_0, q4_0_to_float_avx2, q4_0_dot_avx2);
    SET(QE_TYPE_Q5_0, q5_0_to_float_avx2, q5_0_dot_avx2);
    SET(QE_TYPE_Q5_1, q5_1_to_float_avx2, q5_1_dot_avx2);
    SET(QE_TYPE_IQ4_NL, iq4_nl_to_float_avx2, iq4_nl_dot_avx2);
    SET(QE_TYPE_Q2_K, q2_K_to_float_avx2, q2_K_dot_avx2);
    SET(QE_TYPE_Q3_K, q3_K_to_float_avx2, q3_K_dot_avx2);
    SET(QE_TYPE_Q4_K, q4_K_to_float_avx2, q4_K_dot_avx2);
    SET(QE_TYPE_Q5_K, q5_K_to_float_avx2, q5_K_dot_avx2);
    SET(QE_TYPE_Q6_K, q6_K_to_float_avx2, q6_K_dot_avx2);
#undef SET
}
