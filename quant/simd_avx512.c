/*
 * simd_avx512.c: AVX-512 (F+BW+VL) variants of to_float (dequantize) for
 * the hot types, 16 lanes at a time, and their vec_dot (dequantize 256
 * weights + 16-lane FMA).  Same contract as simd_avx2.c: dequantize is
 * bitwise equal to the scalar reference (separate multiply and subtract in
 * the reference's order, no fused ops), vec_dot within 1e-5 * sum|x*y|.
 * qe_register_avx512 runs after qe_register_avx2, so types not listed here
 * keep their AVX2 kernels.
 *
 * Quantize side: the search kernels behind the fast quantizers (16 IQ4
 * trial scales, or 16 k-quant group fits, one per lane), each lane doing
 * exactly the scalar operations of kquant_search.c / formats_iq.c, so the
 * output bytes equal from_float_ref's.
 */
#include "quant_internal.h" /* first: sets the FP contraction mode */

#include <immintrin.h>

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

/* q5_0 / q5_1 block: the 32 5-bit values in element order as bytes
 * (nibbles, then the high bits from qh as a byte mask): lo nibbles are
 * elements 0..15, hi nibbles 16..31, qh bit j belongs to element j. */
TGT static inline __m256i q5_bytes(const uint8_t qs[16], const uint8_t qh[4], int sub16)
{
    const __m128i m4 = _mm_set1_epi8(0xF);
    const __m128i b = _mm_loadu_si128((const __m128i *)qs);
    const __m256i nib = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_and_si128(b, m4)), _mm_and_si128(_mm_srli_epi16(b, 4), m4), 1);
    uint32_t h;
    memcpy(&h, qh, 4);
    if (sub16) /* q5_0: (nibble | bit << 4) - 16 = nibble - 16 where the bit is clear */
        return _mm256_mask_sub_epi8(nib, _cvtu32_mask32(~h), nib, _mm256_set1_epi8(16));
    return _mm256_mask_add_epi8(nib, _cvtu32_mask32(h), nib, _mm256_set1_epi8(16));
}

TGT static void q5_0_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_0 *x = vx;
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m512 d = _mm512_set1_ps(qe_h2f(x[i].d));
        const __m256i v = q5_bytes(x[i].qs, x[i].qh, 1);
        st_scaled(y, _mm512_cvtepi8_epi32(_mm256_castsi256_si128(v)), d);
        st_scaled(y + 16, _mm512_cvtepi8_epi32(_mm256_extracti128_si256(v, 1)), d);
    }
}

TGT static void q5_1_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_1 *x = vx;
    for (int64_t i = 0; i < k / 32; i++, y += 32) {
        const __m512 d = _mm512_set1_ps(qe_h2f(x[i].d)), m = _mm512_set1_ps(qe_h2f(x[i].m));
        const __m256i v = q5_bytes(x[i].qs, x[i].qh, 0);
        /* reference: x*d + m */
        _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                                            _mm256_castsi256_si128(v))), d), m));
        _mm512_storeu_ps(y + 16,
                         _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                                         _mm256_extracti128_si256(v, 1))), d), m));
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

TGT static void q4_K_to_float_avx512(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_K *x = vx;
    const __m512i m4 = _mm512_set1_epi32(0xF);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            qe_scale_min_k4(is, x[i].scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
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
            qe_scale_min_k4(is, x[i].scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
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
DOT_WRAP(q5_0_dot_avx512, q5_0_to_float_avx512, 32, sizeof(qe_block_q5_0))
DOT_WRAP(q5_1_dot_avx512, q5_1_to_float_avx512, 32, sizeof(qe_block_q5_1))
DOT_WRAP(q2_K_dot_avx512, q2_K_to_float_avx512, 256, sizeof(qe_block_q2_K))
DOT_WRAP(q3_K_dot_avx512, q3_K_to_float_avx512, 256, sizeof(qe_block_q3_K))
DOT_WRAP(q4_K_dot_avx512, q4_K_to_float_avx512, 256, sizeof(qe_block_q4_K))
DOT_WRAP(q5_K_dot_avx512, q5_K_to_float_avx512, 256, sizeof(qe_block_q5_K))
DOT_WRAP(q6_K_dot_avx512, q6_K_to_float_avx512, 256, sizeof(qe_block_q6_K))

/* ===== quantize side: search kernels, bit-identical to the scalar spec =====
 * Each lane runs one scalar computation of the reference (same operations
 * in the same order, separate multiply and add: no FMA), so lanes change
 * only how many fits run at once, never a result. */

/* Codebook index per lane: qe_best_index_int8(16, qe_kvalues_iq4nl, al).
 * ml = the largest k with V[k] <= al (branch-free binary search, 0 when
 * al < V[0]); then the nearer of V[ml], V[ml+1] (ties to the upper one,
 * as in the reference), capped at 15 (al >= V[15]). */
TGT static inline __m512i iq4_index16(__m512 al, __m512 tab)
{
    __m512i ml = _mm512_setzero_si512();
    for (int step = 8; step >= 1; step >>= 1) {
        __m512i cand = _mm512_add_epi32(ml, _mm512_set1_epi32(step));
        __mmask16 le = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(cand, tab), al, _CMP_LE_OQ);
        ml = _mm512_mask_mov_epi32(ml, le, cand);
    }
    __m512i mu = _mm512_min_epi32(_mm512_add_epi32(ml, _mm512_set1_epi32(1)),
                                  _mm512_set1_epi32(15));
    __m512 lo = _mm512_permutexvar_ps(ml, tab), hi = _mm512_permutexvar_ps(mu, tab);
    __mmask16 take_lo = _mm512_cmp_ps_mask(_mm512_sub_ps(al, lo), _mm512_sub_ps(hi, al),
                                           _CMP_LT_OQ);
    return _mm512_mask_mov_epi32(mu, take_lo, ml);
}

TGT static inline __m512 iq4_table(void)
{
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qe_kvalues_iq4nl)));
}

TGT static void iq4_trials16_avx512(const float *restrict x, const float *restrict w,
                                    const float *restrict id, float *restrict sumqx,
                                    float *restrict sumq2)
{
    const __m512 tab = iq4_table(), vid = _mm512_loadu_ps(id);
    __m512 sqx = _mm512_setzero_ps(), sq2 = _mm512_setzero_ps();
    for (int j = 0; j < 32; ++j) {
        const __m512 xj = _mm512_set1_ps(x[j]), wj = _mm512_set1_ps(w[j]);
        const __m512 q = _mm512_permutexvar_ps(iq4_index16(_mm512_mul_ps(vid, xj), tab), tab);
        const __m512 wq = _mm512_mul_ps(wj, q);
        sqx = _mm512_add_ps(sqx, _mm512_mul_ps(wq, xj)); /* (w*q)*x */
        sq2 = _mm512_add_ps(sq2, _mm512_mul_ps(wq, q));  /* (w*q)*q */
    }
    _mm512_storeu_ps(sumqx, sqx);
    _mm512_storeu_ps(sumq2, sq2);
}

TGT static void iq4_index32_avx512(const float *restrict x, float id, uint8_t *restrict L)
{
    const __m512 tab = iq4_table(), vid = _mm512_set1_ps(id);
    for (int j = 0; j < 32; j += 16) {
        __m512i l = iq4_index16(_mm512_mul_ps(vid, _mm512_loadu_ps(x + j)), tab);
        _mm_storeu_si128((__m128i *)(L + j), _mm512_cvtepi32_epi8(l));
    }
}

/* qe_nearest_int per lane: the 1.5*2^23 trick. */
TGT static inline __m512i nearest16(__m512 v)
{
    __m512i i = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
    return _mm512_sub_epi32(_mm512_and_si512(i, _mm512_set1_epi32(0x007fffff)),
                            _mm512_set1_epi32(0x00400000));
}

TGT static inline __m512 err16(__m512 diff, bool use_mad)
{
    return use_mad ? _mm512_abs_ps(diff) : _mm512_mul_ps(diff, diff);
}

/* 16 x qe_make_qkx2_quants (kquant_search.c), lane g = group g.  Lanes
 * whose group is constant (max == min) compute garbage that the scalar
 * code's early return then overrides. */
TGT static void qkx2_16_avx512(int n, int nmax, const float *restrict xt,
                               const float *restrict wt, uint8_t *restrict Lt,
                               float *restrict scale_out, float *restrict min_out, float rmin,
                               float rdelta, int nstep, bool use_mad)
{
    __m512 xs[32], ws[32];
    __m512i L[32], Laux[32];
    const __m512 zero = _mm512_setzero_ps();
    const __m512i izero = _mm512_setzero_si512(), inmax = _mm512_set1_epi32(nmax);
    xs[0] = _mm512_loadu_ps(xt); /* n >= 1 */
    ws[0] = _mm512_loadu_ps(wt);
    for (int i = 1; i < n; ++i) {
        xs[i] = _mm512_loadu_ps(xt + 16 * i);
        ws[i] = _mm512_loadu_ps(wt + 16 * i);
    }
    __m512 mn = xs[0], mx = xs[0], sum_w = ws[0], sum_x = _mm512_mul_ps(ws[0], xs[0]);
    for (int i = 1; i < n; ++i) {
        mn = _mm512_min_ps(xs[i], mn); /* x < min ? x : min */
        mx = _mm512_max_ps(xs[i], mx); /* x > max ? x : max */
        sum_w = _mm512_add_ps(sum_w, ws[i]);
        sum_x = _mm512_add_ps(sum_x, _mm512_mul_ps(ws[i], xs[i]));
    }
    mn = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, zero, _CMP_GT_OQ), zero);
    const __m512 mn0 = mn;
    const __mmask16 flat = _mm512_cmp_ps_mask(mx, mn, _CMP_EQ_OQ);
    __m512 iscale = _mm512_div_ps(_mm512_set1_ps((float)nmax), _mm512_sub_ps(mx, mn));
    __m512 scale = _mm512_div_ps(_mm512_set1_ps(1.f), iscale);
    __m512 best = zero;
    for (int i = 0; i < n; ++i) {
        __m512i l = nearest16(_mm512_mul_ps(iscale, _mm512_sub_ps(xs[i], mn)));
        L[i] = _mm512_max_epi32(izero, _mm512_min_epi32(inmax, l));
        __m512 diff = _mm512_sub_ps(
            _mm512_add_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(L[i])), mn), xs[i]);
        best = _mm512_add_ps(best, _mm512_mul_ps(ws[i], err16(diff, use_mad)));
    }
    for (int is = 0; is <= nstep; ++is) {
        const float num = rmin + rdelta * is + nmax;
        iscale = _mm512_div_ps(_mm512_set1_ps(num), _mm512_sub_ps(mx, mn));
        __m512 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; ++i) {
            __m512i l = nearest16(_mm512_mul_ps(iscale, _mm512_sub_ps(xs[i], mn)));
            Laux[i] = _mm512_max_epi32(izero, _mm512_min_epi32(inmax, l));
            __m512 lf = _mm512_cvtepi32_ps(Laux[i]), wl = _mm512_mul_ps(ws[i], lf);
            sum_l = _mm512_add_ps(sum_l, wl);
            sum_l2 = _mm512_add_ps(sum_l2, _mm512_mul_ps(wl, lf));
            sum_xl = _mm512_add_ps(sum_xl, _mm512_mul_ps(wl, xs[i]));
        }
        __m512 D = _mm512_sub_ps(_mm512_mul_ps(sum_w, sum_l2), _mm512_mul_ps(sum_l, sum_l));
        __mmask16 ok = _mm512_cmp_ps_mask(D, zero, _CMP_GT_OQ);
        if (!ok)
            continue;
        __m512 this_scale = _mm512_div_ps(
            _mm512_sub_ps(_mm512_mul_ps(sum_w, sum_xl), _mm512_mul_ps(sum_x, sum_l)), D);
        __m512 this_min = _mm512_div_ps(
            _mm512_sub_ps(_mm512_mul_ps(sum_l2, sum_x), _mm512_mul_ps(sum_l, sum_xl)), D);
        __mmask16 mpos = _mm512_cmp_ps_mask(this_min, zero, _CMP_GT_OQ);
        this_min = _mm512_mask_mov_ps(this_min, mpos, zero);
        this_scale = _mm512_mask_mov_ps(this_scale, mpos, _mm512_div_ps(sum_xl, sum_l2));
        __m512 cur = zero;
        for (int i = 0; i < n; ++i) {
            __m512 diff = _mm512_sub_ps(
                _mm512_add_ps(_mm512_mul_ps(this_scale, _mm512_cvtepi32_ps(Laux[i])), this_min),
                xs[i]);
            cur = _mm512_add_ps(cur, _mm512_mul_ps(ws[i], err16(diff, use_mad)));
        }
        __mmask16 upd = ok & _mm512_cmp_ps_mask(cur, best, _CMP_LT_OQ);
        if (!upd)
            continue;
        for (int i = 0; i < n; ++i)
            L[i] = _mm512_mask_mov_epi32(L[i], upd, Laux[i]);
        best = _mm512_mask_mov_ps(best, upd, cur);
        scale = _mm512_mask_mov_ps(scale, upd, this_scale);
        mn = _mm512_mask_mov_ps(mn, upd, this_min);
    }
    /* constant group: levels 0, scale 0, the_min = -min */
    for (int i = 0; i < n; ++i)
        _mm_storeu_si128((__m128i *)(Lt + 16 * i),
                         _mm512_cvtepi32_epi8(_mm512_mask_mov_epi32(L[i], flat, izero)));
    scale = _mm512_mask_mov_ps(scale, flat, zero);
    mn = _mm512_mask_mov_ps(mn, flat, mn0);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    _mm512_storeu_ps(scale_out, scale);
    _mm512_storeu_ps(min_out, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(mn), sign)));
}

/* 16 x qe_make_qx_quants(n, nmax, x, L, 1, qw), lane g = group g. */
TGT static void qx16_avx512(int n, int nmax, const float *restrict xt, const float *restrict qwt,
                            int8_t *restrict Lt, float *restrict scale_out)
{
    __m512 xs[32], ws[32];
    __m512i L[32];
    const __m512 zero = _mm512_setzero_ps();
    const __m512i lo = _mm512_set1_epi32(-nmax), hi = _mm512_set1_epi32(nmax - 1),
                  off = _mm512_set1_epi32(nmax);
    __m512 amax = zero, max = zero;
    for (int i = 0; i < n; ++i) {
        xs[i] = _mm512_loadu_ps(xt + 16 * i);
        ws[i] = qwt ? _mm512_loadu_ps(qwt + 16 * i) : _mm512_mul_ps(xs[i], xs[i]);
        __m512 ax = _mm512_abs_ps(xs[i]);
        __mmask16 gt = _mm512_cmp_ps_mask(ax, amax, _CMP_GT_OQ);
        amax = _mm512_mask_mov_ps(amax, gt, ax);
        max = _mm512_mask_mov_ps(max, gt, xs[i]);
    }
    const __mmask16 tiny = _mm512_cmp_ps_mask(amax, _mm512_set1_ps(QE_GROUP_MAX_EPS), _CMP_LT_OQ);
    __m512 iscale = _mm512_div_ps(_mm512_set1_ps((float)-nmax), max);
    __m512 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        __m512i l = _mm512_max_epi32(lo, _mm512_min_epi32(hi, nearest16(_mm512_mul_ps(iscale, xs[i]))));
        L[i] = _mm512_add_epi32(l, off);
        __m512 lf = _mm512_cvtepi32_ps(l);
        sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(_mm512_mul_ps(ws[i], xs[i]), lf));
        suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(ws[i], lf), lf));
    }
    __m512 scale = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(suml2, zero, _CMP_NEQ_UQ), sumlx, suml2);
    __m512 best = _mm512_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        const float num = -(nmax + 0.1f * is);
        iscale = _mm512_div_ps(_mm512_set1_ps(num), max);
        __m512i Laux[32];
        sumlx = suml2 = zero;
        for (int i = 0; i < n; ++i) {
            __m512i l = _mm512_max_epi32(lo, _mm512_min_epi32(hi, nearest16(_mm512_mul_ps(iscale, xs[i]))));
            Laux[i] = l;
            __m512 lf = _mm512_cvtepi32_ps(l);
            sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(_mm512_mul_ps(ws[i], xs[i]), lf));
            suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(ws[i], lf), lf));
        }
        __mmask16 upd = _mm512_cmp_ps_mask(suml2, zero, _CMP_GT_OQ) &
                        _mm512_cmp_ps_mask(_mm512_mul_ps(sumlx, sumlx), _mm512_mul_ps(best, suml2),
                                           _CMP_GT_OQ);
        if (!upd)
            continue;
        for (int i = 0; i < n; ++i)
            L[i] = _mm512_mask_mov_epi32(L[i], upd, _mm512_add_epi32(Laux[i], off));
        scale = _mm512_mask_mov_ps(scale, upd, _mm512_div_ps(sumlx, suml2));
        best = _mm512_mask_mov_ps(best, upd, _mm512_mul_ps(scale, sumlx));
    }
    for (int i = 0; i < n; ++i)
        _mm_storeu_si128((__m128i *)(Lt + 16 * i),
                         _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32((__mmask16)~tiny, L[i])));
    _mm512_storeu_ps(scale_out, _mm512_mask_mov_ps(scale, tiny, zero));
}

static const qe_kquant_kernels g_kq_avx512 = {qkx2_16_avx512, qx16_avx512};

#define KQ_WRAP(name, driver)                                                             \
    static int name(const float *restrict x, void *restrict y, int64_t n,                 \
                    const float *restrict imatrix)                                        \
    {                                                                                     \
        return driver(&g_kq_avx512, x, y, n, imatrix);                                    \
    }
KQ_WRAP(q2_K_quantize_avx512, qe_q2_K_quantize_with)
KQ_WRAP(q3_K_quantize_avx512, qe_q3_K_quantize_with)
KQ_WRAP(q4_K_quantize_avx512, qe_q4_K_quantize_with)
KQ_WRAP(q5_K_quantize_avx512, qe_q5_K_quantize_with)
KQ_WRAP(q6_K_quantize_avx512, qe_q6_K_quantize_with)
KQ_WRAP(q4_0_quantize_avx512, qe_q4_0_quantize_with)
KQ_WRAP(q4_1_quantize_avx512, qe_q4_1_quantize_with)
KQ_WRAP(q5_0_quantize_avx512, qe_q5_0_quantize_with)
KQ_WRAP(q5_1_quantize_avx512, qe_q5_1_quantize_with)

/* Q8_0 quantizer, the same bytes as q8_0_quant_ref: amax is a plain
 * maximum (order-free), x*id per lane, roundf done as truncate then
 * +-1 when the exact remainder reaches +-0.5.  The finiteness check runs
 * in the same pass (y is undefined on QE_ENAN, as for the reference). */
TGT static inline __m512i round_half_away16(__m512 v)
{
    __m512i r = _mm512_cvttps_epi32(v);
    __m512 frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(r));
    const __m512i one = _mm512_set1_epi32(1);
    r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ), r,
                              one);
    return _mm512_mask_sub_epi32(r, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(-0.5f), _CMP_LE_OQ),
                                 r, one);
}

TGT static int q8_0_quantize_avx512(const float *restrict x, void *restrict vy, int64_t n,
                                    const float *restrict imatrix)
{
    (void)imatrix; /* llama.cpp ignores it for Q8_0 */
    qe_block_q8_0 *y = vy;
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __mmask16 bad = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const __m512 a = _mm512_loadu_ps(x + 32 * i), b = _mm512_loadu_ps(x + 32 * i + 16);
        const __m512 aa = _mm512_abs_ps(a), ab = _mm512_abs_ps(b);
        bad |= _mm512_cmp_ps_mask(aa, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(ab, inf, _CMP_NLT_UQ);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        y[i].d = qe_f2h(d);
        _mm_storeu_si128((__m128i *)y[i].qs,
                         _mm512_cvtepi32_epi8(round_half_away16(_mm512_mul_ps(a, vid))));
        _mm_storeu_si128((__m128i *)(y[i].qs + 16),
                         _mm512_cvtepi32_epi8(round_half_away16(_mm512_mul_ps(b, vid))));
    }
    return bad ? QE_ENAN : 0;
}

static const qe_iq4_kernels g_iq4_avx512 = {iq4_trials16_avx512, iq4_index32_avx512};

static int iq4_nl_quantize_avx512(const float *restrict x, void *restrict y, int64_t n,
                                  const float *restrict imatrix)
{
    return qe_iq4_nl_quantize_with(&g_iq4_avx512, x, y, n, imatrix);
}

static int iq4_xs_quantize_avx512(const float *restrict x, void *restrict y, int64_t n,
                                  const float *restrict imatrix)
{
    return qe_iq4_xs_quantize_with(&g_iq4_avx512, x, y, n, imatrix);
}

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
    SET(QE_TYPE_Q5_0, q5_0_to_float_avx512, q5_0_dot_avx512);
    SET(QE_TYPE_Q5_1, q5_1_to_float_avx512, q5_1_dot_avx512);
    SET(QE_TYPE_Q2_K, q2_K_to_float_avx512, q2_K_dot_avx512);
    SET(QE_TYPE_Q3_K, q3_K_to_float_avx512, q3_K_dot_avx512);
    SET(QE_TYPE_Q4_K, q4_K_to_float_avx512, q4_K_dot_avx512);
    SET(QE_TYPE_Q5_K, q5_K_to_float_avx512, q5_K_dot_avx512);
    SET(QE_TYPE_Q6_K, q6_K_to_float_avx512, q6_K_dot_avx512);
#undef SET
    qe_from_float_fast[QE_TYPE_Q8_0] = q8_0_quantize_avx512;
    qe_from_float_fast[QE_TYPE_IQ4_NL] = iq4_nl_quantize_avx512;
    qe_from_float_fast[QE_TYPE_IQ4_XS] = iq4_xs_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q2_K] = q2_K_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q3_K] = q3_K_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q4_K] = q4_K_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q5_K] = q5_K_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q6_K] = q6_K_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q4_0] = q4_0_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q4_1] = q4_1_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q5_0] = q5_0_quantize_avx512;
    qe_from_float_fast[QE_TYPE_Q5_1] = q5_1_quantize_avx512;
}
