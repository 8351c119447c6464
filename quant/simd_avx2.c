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
 *
 * Quantize side: 8-lane versions of the search kernels of simd_avx512.c
 * (same per-lane scalar arithmetic, so the same bytes as from_float_ref).
 */
#include "quant_internal.h" /* first: sets the FP contraction mode */

#include <immintrin.h>

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

TGT static void q4_K_to_float_avx2(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_K *x = vx;
    const __m256i m4 = _mm256_set1_epi32(0xF);
    for (int64_t i = 0; i < k / 256; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            qe_scale_min_k4(is, x[i].scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(min * m);
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
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
            qe_scale_min_k4(is, x[i].scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(min * m);
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
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

/* ===== quantize side: search kernels, bit-identical to the scalar spec =====
 * Same scheme as simd_avx512.c (one scalar fit per lane, multiply and add
 * kept separate), 8 lanes: the 16-group kernels run as two halves. */

TGT static inline __m256i nearest8(__m256 v)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

TGT static inline __m256 abs8(__m256 v)
{
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

TGT static inline __m256 err8(__m256 diff, bool use_mad)
{
    return use_mad ? abs8(diff) : _mm256_mul_ps(diff, diff);
}

TGT static inline __m256 sel8(__m256 a, __m256 b, __m256 mask) /* mask ? b : a */
{
    return _mm256_blendv_ps(a, b, mask);
}

TGT static inline __m256i seli8(__m256i a, __m256i b, __m256 mask)
{
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), mask));
}

/* 8 x int32 in [-128, 127] -> 8 bytes at p. */
TGT static inline void store8_i8(void *p, __m256i v)
{
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(w, w));
}

/* Lanes h*8 .. h*8+7 of qkx2_16 (see quant_internal.h). */
TGT static void qkx2_8_avx2(int h, int n, int nmax, const float *restrict xt,
                            const float *restrict wt, uint8_t *restrict Lt,
                            float *restrict scale_out, float *restrict min_out, float rmin,
                            float rdelta, int nstep, bool use_mad)
{
    __m256 xs[32], ws[32];
    __m256i L[32], Laux[32];
    const __m256 zero = _mm256_setzero_ps();
    const __m256i izero = _mm256_setzero_si256(), inmax = _mm256_set1_epi32(nmax);
    xs[0] = _mm256_loadu_ps(xt + 8 * h); /* n >= 1 */
    ws[0] = _mm256_loadu_ps(wt + 8 * h);
    for (int i = 1; i < n; ++i) {
        xs[i] = _mm256_loadu_ps(xt + 16 * i + 8 * h);
        ws[i] = _mm256_loadu_ps(wt + 16 * i + 8 * h);
    }
    __m256 mn = xs[0], mx = xs[0], sum_w = ws[0], sum_x = _mm256_mul_ps(ws[0], xs[0]);
    for (int i = 1; i < n; ++i) {
        mn = _mm256_min_ps(xs[i], mn); /* x < min ? x : min */
        mx = _mm256_max_ps(xs[i], mx); /* x > max ? x : max */
        sum_w = _mm256_add_ps(sum_w, ws[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(ws[i], xs[i]));
    }
    mn = sel8(mn, zero, _mm256_cmp_ps(mn, zero, _CMP_GT_OQ));
    const __m256 mn0 = mn, flat = _mm256_cmp_ps(mx, mn, _CMP_EQ_OQ);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(mx, mn));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.f), iscale);
    __m256 best = zero;
    for (int i = 0; i < n; ++i) {
        __m256i l = nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(xs[i], mn)));
        L[i] = _mm256_max_epi32(izero, _mm256_min_epi32(inmax, l));
        __m256 diff = _mm256_sub_ps(
            _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(L[i])), mn), xs[i]);
        best = _mm256_add_ps(best, _mm256_mul_ps(ws[i], err8(diff, use_mad)));
    }
    for (int is = 0; is <= nstep; ++is) {
        const float num = rmin + rdelta * is + nmax;
        iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(mx, mn));
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; ++i) {
            __m256i l = nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(xs[i], mn)));
            Laux[i] = _mm256_max_epi32(izero, _mm256_min_epi32(inmax, l));
            __m256 lf = _mm256_cvtepi32_ps(Laux[i]), wl = _mm256_mul_ps(ws[i], lf);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xs[i]));
        }
        __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        __m256 ok = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        if (!_mm256_movemask_ps(ok))
            continue;
        __m256 this_scale = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
        __m256 this_min = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        __m256 mpos = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_min = sel8(this_min, zero, mpos);
        this_scale = sel8(this_scale, _mm256_div_ps(sum_xl, sum_l2), mpos);
        __m256 cur = zero;
        for (int i = 0; i < n; ++i) {
            __m256 diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(Laux[i])), this_min),
                xs[i]);
            cur = _mm256_add_ps(cur, _mm256_mul_ps(ws[i], err8(diff, use_mad)));
        }
        __m256 upd = _mm256_and_ps(ok, _mm256_cmp_ps(cur, best, _CMP_LT_OQ));
        if (!_mm256_movemask_ps(upd))
            continue;
        for (int i = 0; i < n; ++i)
            L[i] = seli8(L[i], Laux[i], upd);
        best = sel8(best, cur, upd);
        scale = sel8(scale, this_scale, upd);
        mn = sel8(mn, this_min, upd);
    }
    for (int i = 0; i < n; ++i) /* constant group: levels 0, scale 0, the_min = -min */
        store8_i8(Lt + 16 * i + 8 * h, seli8(L[i], izero, flat));
    _mm256_storeu_ps(scale_out + 8 * h, sel8(scale, zero, flat));
    mn = sel8(mn, mn0, flat);
    _mm256_storeu_ps(min_out + 8 * h, _mm256_xor_ps(mn, _mm256_set1_ps(-0.f)));
}

TGT static void qkx2_16_avx2(int n, int nmax, const float *restrict xt, const float *restrict wt,
                             uint8_t *restrict Lt, float *restrict scale, float *restrict the_min,
                             float rmin, float rdelta, int nstep, bool use_mad)
{
    for (int h = 0; h < 2; ++h)
        qkx2_8_avx2(h, n, nmax, xt, wt, Lt, scale, the_min, rmin, rdelta, nstep, use_mad);
}

/* Lanes h*8 .. h*8+7 of qx16 (see quant_internal.h). */
TGT static void qx8_avx2(int h, int n, int nmax, const float *restrict xt,
                         const float *restrict qwt, int8_t *restrict Lt, float *restrict scale_out)
{
    __m256 xs[32], ws[32];
    __m256i L[32], Laux[32];
    const __m256 zero = _mm256_setzero_ps();
    const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1),
                  off = _mm256_set1_epi32(nmax);
    __m256 amax = zero, max = zero;
    for (int i = 0; i < n; ++i) {
        xs[i] = _mm256_loadu_ps(xt + 16 * i + 8 * h);
        ws[i] = qwt ? _mm256_loadu_ps(qwt + 16 * i + 8 * h) : _mm256_mul_ps(xs[i], xs[i]);
        __m256 ax = abs8(xs[i]), gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = sel8(amax, ax, gt);
        max = sel8(max, xs[i], gt);
    }
    const __m256 tiny = _mm256_cmp_ps(amax, _mm256_set1_ps(QE_GROUP_MAX_EPS), _CMP_LT_OQ);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        __m256i l = _mm256_max_epi32(lo, _mm256_min_epi32(hi, nearest8(_mm256_mul_ps(iscale, xs[i]))));
        L[i] = _mm256_add_epi32(l, off);
        __m256 lf = _mm256_cvtepi32_ps(l);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(ws[i], xs[i]), lf));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(ws[i], lf), lf));
    }
    __m256 scale = sel8(zero, _mm256_div_ps(sumlx, suml2), _mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        const float num = -(nmax + 0.1f * is);
        iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
        sumlx = suml2 = zero;
        for (int i = 0; i < n; ++i) {
            __m256i l = _mm256_max_epi32(lo, _mm256_min_epi32(hi, nearest8(_mm256_mul_ps(iscale, xs[i]))));
            Laux[i] = l;
            __m256 lf = _mm256_cvtepi32_ps(l);
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(ws[i], xs[i]), lf));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(ws[i], lf), lf));
        }
        __m256 upd = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                   _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx),
                                                 _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
        if (!_mm256_movemask_ps(upd))
            continue;
        for (int i = 0; i < n; ++i)
            L[i] = seli8(L[i], _mm256_add_epi32(Laux[i], off), upd);
        scale = sel8(scale, _mm256_div_ps(sumlx, suml2), upd);
        best = sel8(best, _mm256_mul_ps(scale, sumlx), upd);
    }
    for (int i = 0; i < n; ++i)
        store8_i8(Lt + 16 * i + 8 * h, seli8(L[i], _mm256_setzero_si256(), tiny));
    _mm256_storeu_ps(scale_out + 8 * h, sel8(scale, zero, tiny));
}

TGT static void qx16_avx2(int n, int nmax, const float *restrict xt, const float *restrict qwt,
                          int8_t *restrict Lt, float *restrict scale)
{
    for (int h = 0; h < 2; ++h)
        qx8_avx2(h, n, nmax, xt, qwt, Lt, scale);
}

static const qe_kquant_kernels g_kq_avx2 = {qkx2_16_avx2, qx16_avx2};

/* IQ4 codebook lookup for 8 lanes: idx 0..15 into tlo (values 0..7) and
 * thi (8..15). */
TGT static inline __m256 iq4_lookup8(__m256i idx, __m256 tlo, __m256 thi)
{
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx),
                            _mm256_permutevar8x32_ps(thi, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* qe_best_index_int8(16, qe_kvalues_iq4nl, al) per lane; same scheme as
 * iq4_index16 in simd_avx512.c. */
TGT static inline __m256i iq4_index8(__m256 al, __m256 tlo, __m256 thi)
{
    __m256i ml = _mm256_setzero_si256();
    for (int step = 8; step >= 1; step >>= 1) {
        __m256i cand = _mm256_add_epi32(ml, _mm256_set1_epi32(step));
        ml = seli8(ml, cand, _mm256_cmp_ps(iq4_lookup8(cand, tlo, thi), al, _CMP_LE_OQ));
    }
    __m256i mu = _mm256_min_epi32(_mm256_add_epi32(ml, _mm256_set1_epi32(1)),
                                  _mm256_set1_epi32(15));
    __m256 lo = iq4_lookup8(ml, tlo, thi), hi = iq4_lookup8(mu, tlo, thi);
    return seli8(mu, ml, _mm256_cmp_ps(_mm256_sub_ps(al, lo), _mm256_sub_ps(hi, al), _CMP_LT_OQ));
}

TGT static inline void iq4_tables8(__m256 *tlo, __m256 *thi)
{
    *tlo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)qe_kvalues_iq4nl)));
    *thi = _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qe_kvalues_iq4nl + 8))));
}

TGT static void iq4_trials16_avx2(const float *restrict x, const float *restrict w,
                                  const float *restrict id, float *restrict sumqx,
                                  float *restrict sumq2)
{
    __m256 tlo, thi;
    iq4_tables8(&tlo, &thi);
    const __m256 id0 = _mm256_loadu_ps(id), id1 = _mm256_loadu_ps(id + 8);
    __m256 sqx0 = _mm256_setzero_ps(), sq20 = sqx0, sqx1 = sqx0, sq21 = sqx0;
    for (int j = 0; j < 32; ++j) {
        const __m256 xj = _mm256_set1_ps(x[j]), wj = _mm256_set1_ps(w[j]);
        const __m256 q0 = iq4_lookup8(iq4_index8(_mm256_mul_ps(id0, xj), tlo, thi), tlo, thi);
        const __m256 q1 = iq4_lookup8(iq4_index8(_mm256_mul_ps(id1, xj), tlo, thi), tlo, thi);
        const __m256 wq0 = _mm256_mul_ps(wj, q0), wq1 = _mm256_mul_ps(wj, q1);
        sqx0 = _mm256_add_ps(sqx0, _mm256_mul_ps(wq0, xj)); /* (w*q)*x */
        sq20 = _mm256_add_ps(sq20, _mm256_mul_ps(wq0, q0)); /* (w*q)*q */
        sqx1 = _mm256_add_ps(sqx1, _mm256_mul_ps(wq1, xj));
        sq21 = _mm256_add_ps(sq21, _mm256_mul_ps(wq1, q1));
    }
    _mm256_storeu_ps(sumqx, sqx0);
    _mm256_storeu_ps(sumqx + 8, sqx1);
    _mm256_storeu_ps(sumq2, sq20);
    _mm256_storeu_ps(sumq2 + 8, sq21);
}

TGT static void iq4_index32_avx2(const float *restrict x, float id, uint8_t *restrict L)
{
    __m256 tlo, thi;
    iq4_tables8(&tlo, &thi);
    const __m256 vid = _mm256_set1_ps(id);
    for (int j = 0; j < 32; j += 8)
        store8_i8(L + j, iq4_index8(_mm256_mul_ps(vid, _mm256_loadu_ps(x + j)), tlo, thi));
}

static const qe_iq4_kernels g_iq4_avx2 = {iq4_trials16_avx2, iq4_index32_avx2};

#define Q_WRAP(name, driver, kern)                                                        \
    static int name(const float *restrict x, void *restrict y, int64_t n,                 \
                    const float *restrict imatrix)                                        \
    {                                                                                     \
        return driver(&kern, x, y, n, imatrix);                                           \
    }
Q_WRAP(iq4_nl_quantize_avx2, qe_iq4_nl_quantize_with, g_iq4_avx2)
Q_WRAP(iq4_xs_quantize_avx2, qe_iq4_xs_quantize_with, g_iq4_avx2)
Q_WRAP(q2_K_quantize_avx2, qe_q2_K_quantize_with, g_kq_avx2)
Q_WRAP(q3_K_quantize_avx2, qe_q3_K_quantize_with, g_kq_avx2)
Q_WRAP(q4_K_quantize_avx2, qe_q4_K_quantize_with, g_kq_avx2)
Q_WRAP(q5_K_quantize_avx2, qe_q5_K_quantize_with, g_kq_avx2)
Q_WRAP(q6_K_quantize_avx2, qe_q6_K_quantize_with, g_kq_avx2)
Q_WRAP(q4_0_quantize_avx2, qe_q4_0_quantize_with, g_kq_avx2)
Q_WRAP(q4_1_quantize_avx2, qe_q4_1_quantize_with, g_kq_avx2)
Q_WRAP(q5_0_quantize_avx2, qe_q5_0_quantize_with, g_kq_avx2)
Q_WRAP(q5_1_quantize_avx2, qe_q5_1_quantize_with, g_kq_avx2)

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
    qe_from_float_fast[QE_TYPE_IQ4_NL] = iq4_nl_quantize_avx2;
    qe_from_float_fast[QE_TYPE_IQ4_XS] = iq4_xs_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q2_K] = q2_K_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q3_K] = q3_K_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q4_K] = q4_K_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q5_K] = q5_K_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q6_K] = q6_K_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q4_0] = q4_0_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q4_1] = q4_1_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q5_0] = q5_0_quantize_avx2;
    qe_from_float_fast[QE_TYPE_Q5_1] = q5_1_quantize_avx2;
}
