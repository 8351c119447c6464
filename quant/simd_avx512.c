/*
 * simd_avx512.c: AVX-512 (F+BW+VL) variants of to_float (dequantize) for
 * the hot types, 16 lanes at a time, and their vec_dot (dequantize 256
 * weights + 16-lane FMA).  Same contract as simd_avx2.c: dequantize is
 * bitwise equal to the scalar reference (separate multiply and subtract in
 * the reference's order, no fused ops), vec_dot within 1e-5 * sum|x*y|.
 * qe_register_avx512 runs after qe_register_avx2, so types not listed here
 * keep their AVX2 kernels.
 */
#include <immintrin.h>

#include "quant_internal.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* 16 bytes -> 16 x int32 (zero-extended). */
TGT static inline __m512i ld16_u8(const uint8_t *p)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
TGT static inline void st_scaled(float *y, __m512i q, __m512 d)
{
    _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q)));
}
TGT static inline void st_scaled_min(float *y, __m512i q, __m512 d, __m512 m)
{
    _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(q)), m));
}

TGT static void f16_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
        _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
    for (; i < k; i++)
        y[i] = qe_h2f(x[i]);
}

TGT static void bf16_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
        _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; i < k; i++)
        y[i] = qe_bf16_to_fp32(x[i]);
}

TGT static void q8_0_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q8_0 *x = vx;
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m512 d = _mm512_set1_ps(qe_h2f(x[i].d));
        st_scaled(y, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)x[i].qs)), d);
        st_scaled(y + 16, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x[i].qs + 16))),
                  d);
    }
}

TGT static void q4_0_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_0 *x = vx;
    const __m512i m4 = _mm512_set1_epi32(0xF), off = _mm512_set1_epi32(8);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m512 d = _mm512_set1_ps(qe_h2f(x[i].d));
        __m512i b = ld16_u8(x[i].qs);
        st_scaled(y, _mm512_sub_epi32(_mm512_and_si512(b, m4), off), d);
        st_scaled(y + 16, _mm512_sub_epi32(_mm512_srli_epi32(b, 4), off), d);
    }
}

TGT static void iq4_nl_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq4_nl *x = vx;
    const __m128i lut = _mm_loadu_si128((const __m128i *)qe_kvalues_iq4nl);
    const __m128i m4 = _mm_set1_epi8(0xF);
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m512 d = _mm512_set1_ps(qe_h2f(x[i].d));
        __m128i b = _mm_loadu_si128((const __m128i *)x[i].qs);
        __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, m4));
        __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), m4));
        st_scaled(y, _mm512_cvtepi8_epi32(lo), d);
        st_scaled(y + 16, _mm512_cvtepi8_epi32(hi), d);
    }
}

TGT static void q2_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q2_K *x = vx;
    const __m512i m3 = _mm512_set1_epi32(3);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < 256; n += 128, q += 32) {
            __m512i b0 = ld16_u8(q), b1 = ld16_u8(q + 16);
            for (int shift = 0; shift < 8; shift += 2) {
                const __m128i s = _mm_cvtsi32_si128(shift);
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = x[i].scales[is++];
                    const __m512 dl = _mm512_set1_ps(d * (sc & 0xF));
                    const __m512 ml = _mm512_set1_ps(min * (sc >> 4));
                    __m512i b = half ? b1 : b0;
                    st_scaled_min(y, _mm512_and_si512(_mm512_srl_epi32(b, s), m3), dl, ml);
                    y += 16;
                }
            }
        }
    }
}

TGT static void q3_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q3_K *x = vx;
    const __m512i m3 = _mm512_set1_epi32(3), four = _mm512_set1_epi32(4);
    int8_t sc[16];
    for (int64_t i = 0; i < k / 256; i++) {
        const float d_all = qe_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            int lo = j < 8 ? (x[i].scales[j] & 0xF) : (x[i].scales[j - 8] >> 4);
            int hi = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = x[i].qs;
        const __m512i h0 = ld16_u8(x[i].hmask), h1 = ld16_u8(x[i].hmask + 16);
        int is = 0, mbit = 0;
        for (int n = 0; n < 256; n += 128, q += 32) {
            __m512i b0 = ld16_u8(q), b1 = ld16_u8(q + 16);
            for (int shift = 0; shift < 8; shift += 2, mbit++) {
                const __m512i mm = _mm512_set1_epi32(1 << mbit);
                const __m128i s = _mm_cvtsi32_si128(shift);
                for (int half = 0; half < 2; half++) {
                    const __m512 dl = _mm512_set1_ps(d_all * sc[is++]);
                    __m512i b = _mm512_and_si512(_mm512_srl_epi32(half ? b1 : b0, s), m3);
                    /* lanes whose high bit is clear get 4 subtracted */
                    __mmask16 clear = _mm512_testn_epi32_mask(half ? h1 : h0, mm);
                    b = _mm512_mask_sub_epi32(b, clear, b, four);
                    st_scaled(y, b, dl);
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

TGT static void q4_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_K *x = vx;
    const __m512i m4 = _mm512_set1_epi32(0xF);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(min * m);
            for (int l = 0; l < 32; l += 16) {
                __m512i b = ld16_u8(q + l);
                st_scaled_min(y + l, _mm512_and_si512(b, m4), d1, m1);
                st_scaled_min(y + 32 + l, _mm512_srli_epi32(b, 4), d2, m2);
            }
        }
    }
}

TGT static void q5_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_K *x = vx;
    const __m512i m4 = _mm512_set1_epi32(0xF), one = _mm512_set1_epi32(1);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        for (int is = 0; is < 8; is += 2, ql += 32, y += 64) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(min * m);
            const __m128i s1 = _mm_cvtsi32_si128(is), s2 = _mm_cvtsi32_si128(is + 1);
            for (int l = 0; l < 32; l += 16) {
                __m512i b = ld16_u8(ql + l), h = ld16_u8(qh + l);
                __m512i h1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h, s1), one), 4);
                __m512i h2 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h, s2), one), 4);
                st_scaled_min(y + l, _mm512_or_si512(_mm512_and_si512(b, m4), h1), d1, m1);
                st_scaled_min(y + 32 + l, _mm512_or_si512(_mm512_srli_epi32(b, 4), h2), d2, m2);
            }
        }
    }
}

TGT static void q6_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q6_K *x = vx;
    const __m512i m4 = _mm512_set1_epi32(0xF), m3 = _mm512_set1_epi32(3);
    const __m512i off = _mm512_set1_epi32(32);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l += 16) {
                const int is = l / 16;
                __m512i a = ld16_u8(ql + l), b = ld16_u8(ql + 32 + l), h = ld16_u8(qh + l);
                __m512i q1 = _mm512_or_si512(_mm512_and_si512(a, m4),
                                             _mm512_slli_epi32(_mm512_and_si512(h, m3), 4));
                __m512i q2 = _mm512_or_si512(
                    _mm512_and_si512(b, m4),
                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 2), m3), 4));
                __m512i q3 = _mm512_or_si512(
                    _mm512_srli_epi32(a, 4),
                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 4), m3), 4));
                __m512i q4 = _mm512_or_si512(
                    _mm512_srli_epi32(b, 4),
                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 6), m3), 4));
                st_scaled(y + l + 0, _mm512_sub_epi32(q1, off), _mm512_set1_ps(d * sc[is + 0]));
                st_scaled(y + l + 32, _mm512_sub_epi32(q2, off), _mm512_set1_ps(d * sc[is + 2]));
                st_scaled(y + l + 64, _mm512_sub_epi32(q3, off), _mm512_set1_ps(d * sc[is + 4]));
                st_scaled(y + l + 96, _mm512_sub_epi32(q4, off), _mm512_set1_ps(d * sc[is + 6]));
            }
        }
    }
}

/* ---- vec_dot ------------------------------------------------------- */

TGT static float dot_via(qe_to_float_fn deq, int64_t blck, size_t type_size, int64_t n,
                         const void *vx, const float *y)
{
    float tmp[256];
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const uint8_t *x = vx;
    float tail = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t m = n - i0 < 256 ? n - i0 : 256;
        deq(x + (size_t)(i0 / blck) * type_size, tmp, m);
        int64_t j = 0;
        for (; j + 32 <= m; j += 32) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j), _mm512_loadu_ps(y + i0 + j), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(tmp + j + 16), _mm512_loadu_ps(y + i0 + j + 16),
                                   acc1);
        }
        for (; j < m; j++)
            tail += tmp[j] * y[i0 + j];
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + tail;
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
DOT_WRAP(f32_dot_avx512, f32_copy, 1, 4)
DOT_WRAP(f16_dot_avx512, f16_to_float_avx512, 1, 2)
DOT_WRAP(bf16_dot_avx512, bf16_to_float_avx512, 1, 2)
DOT_WRAP(q8_0_dot_avx512, q8_0_to_float_avx512, 32, sizeof(qe_block_q8_0))
DOT_WRAP(q4_0_dot_avx512, q4_0_to_float_avx512, 32, sizeof(qe_block_q4_0))
DOT_WRAP(iq4_nl_dot_avx512, iq4_nl_to_float_avx512, 32, sizeof(qe_block_iq4_nl))
DOT_WRAP(q2_K_dot_avx512, q2_K_to_float_avx512, 256, sizeof(qe_block_q2_K))
DOT_WRAP(q3_K_dot_avx512, q3_K_to_float_avx512, 256, sizeof(qe_block_q3_K))
DOT_WRAP(q4_K_dot_avx512, q4_K_to_float_avx512, 256, sizeof(qe_block_q4_K))
DOT_WRAP(q5_K_dot_avx512, q5_K_to_float_avx512, 256, sizeof(qe_block_q5_K))
DOT_WRAP(q6_K_dot_avx512, q6_K_to_float_avx512, 256, sizeof(qe_block_q6_K))

void qe_register_avx512(qe_type_traits *tab)
{
#define SET(T, deq, dot)                                                                  \
    do {                                                                                  \
        tab[T].to_float = deq;                                                            \
        tab[T].vec_dot = dot;                                                             \
    } while (0)
    SET(QE_TYPE_F16, f16_to_float_avx512, f16_dot_avx512);
    SET(QE_TYPE_BF16, bf16_to_float_avx512, bf16_dot_avx512);
    tab[QE_TYPE_F32].vec_dot = f32_dot_avx512;
    SET(QE_TYPE_Q8_0, q8_0_to_float_avx512, q8_0_dot_avx512);
    SET(QE_TYPE_Q4_0, q4_0_to_float_avx512, q4_0_dot_avx512);
    SET(QE_TYPE_IQ4_NL, iq4_nl_to_float_avx512, iq4_nl_dot_avx512);
    SET(QE_TYPE_Q2_K, q2_K_to_float_avx512, q2_K_dot_avx512);
    SET(QE_TYPE_Q3_K, q3_K_to_float_avx512, q3_K_dot_avx512);
    SET(QE_TYPE_Q4_K, q4_K_to_float_avx512, q4_K_dot_avx512);
    SET(QE_TYPE_Q5_K, q5_K_to_float_avx512, q5_K_dot_avx512);
    SET(QE_TYPE_Q6_K, q6_K_to_float_avx512, q6_K_dot_avx512);
#undef SET
}
