/*
 * simd_rowdot_avx512.c: fused dequantize-and-dot kernels for decode
 * (qe_type_traits.row_dot): one packed weight row times up to
 * QE_ROW_DOT_MAX_X f32 activation vectors, streaming the quantized blocks
 * once with nothing written to memory.
 *
 * Contract (pinned by test_quant): for n a multiple of 64, row_dot's
 * result is bitwise equal to
 *     to_float(row) into w[], then the 64-stride AVX-512 dot of
 *     harness/infer/gemm.c (qe_dot_f32): element k of w*x goes into lane
 *     k % 16 of accumulator (k % 64) / 16 (one FMA per element, k
 *     ascending), then (c0 + c1) + (c2 + c3) and _mm512_reduce_add_ps.
 * Every weight is the to_float value itself (the reference's multiply and
 * subtract in its order, no fused ops), so only where it lives changes:
 * a register instead of an L1 row buffer.  The exact numerics mode keeps
 * its bits; decode just stops paying the store and reload of every weight.
 *
 * Holds no I/O.  Registered by qe_register_rowdot_avx512 (types.c) at the
 * avx512 level only; other levels leave row_dot NULL and the core falls
 * back to to_float + qe_dot_f32.
 */
#include "quant_internal.h" /* first: sets the FP contraction mode */

#include <immintrin.h>

/* Full unrolling of the small fixed loops (nx, 4 accumulators) keeps every
 * accumulator and weight vector in a register; at -O2 GCC keeps them in
 * stack arrays and decode runs at half speed.  The one helper used from
 * quant_internal.h, qe_scale_min_k4, is always_inline: GCC does not inline
 * -O2 functions into O3 ones, and a call spills every register. */
#pragma GCC optimize("O3")

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
/* The kernel bodies take nx as a constant (WRAP below instantiates 1 to
 * 4), so the accumulators live in registers. */
#define INL TGT static inline __attribute__((always_inline))

/* The accumulators of up to QE_ROW_DOT_MAX_X activation vectors. */
typedef struct acc {
    __m512 c[QE_ROW_DOT_MAX_X][4];
} acc;

/* fp16 -> f32 in one instruction (vcvtph2ps): equal to qe_h2f for every
 * non-NaN input (a NaN scale gives NaN weights either way) */
INL float h2f(qe_half h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

INL void acc_zero(acc *a, int nx)
{
    for (int t = 0; t < nx; t++)
        for (int j = 0; j < 4; j++)
            a->c[t][j] = _mm512_setzero_ps();
}

/* Weights w[0..3] = elements k..k+63: FMA into accumulators 0..3. */
INL void acc_64(acc *a, int nx, const __m512 w[4], const float *x, int64_t ldx,
                              int64_t k)
{
    for (int t = 0; t < nx; t++) {
        const float *xt = x + t * ldx + k;
        for (int j = 0; j < 4; j++)
            a->c[t][j] = _mm512_fmadd_ps(_mm512_loadu_ps(xt + 16 * j), w[j], a->c[t][j]);
    }
}

INL void acc_finish(const acc *a, int nx, float *out)
{
    for (int t = 0; t < nx; t++) {
        __m512 s = _mm512_add_ps(_mm512_add_ps(a->c[t][0], a->c[t][1]),
                                 _mm512_add_ps(a->c[t][2], a->c[t][3]));
        out[t] = _mm512_reduce_add_ps(s);
    }
}

INL __m512i ld16_u8(const uint8_t *p)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
/* d * float(q): the reference's y = q*d (one rounding) */
INL __m512 scaled(__m512i q, __m512 d)
{
    return _mm512_mul_ps(d, _mm512_cvtepi32_ps(q));
}
/* d * float(q) - m (two roundings, as the k-quant references) */
INL __m512 scaled_min(__m512i q, __m512 d, __m512 m)
{
    return _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(q)), m);
}
/* float(q) * d + m (q4_1, q5_1) */
INL __m512 scaled_plus(__m512i q, __m512 d, __m512 m)
{
    return _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), d), m);
}

/* Bits base..base+15 of qh, each at bit 4 of its lane (q5_0 / q5_1). */
INL __m512i qh_bit4(uint32_t qh, int base)
{
    const __m512i sh = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i v = _mm512_srlv_epi32(_mm512_set1_epi32((int)(qh >> base)), sh);
    return _mm512_slli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(1)), 4);
}

/* ---- plain types ----------------------------------------------------- */

INL void f32_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const float *r = row;
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64) {
        __m512 w[4];
        for (int j = 0; j < 4; j++)
            w[j] = _mm512_loadu_ps(r + k + 16 * j);
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void f16_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const uint16_t *r = row;
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64) {
        __m512 w[4];
        for (int j = 0; j < 4; j++)
            w[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + k + 16 * j)));
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void bf16_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const uint16_t *r = row;
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64) {
        __m512 w[4];
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r + k + 16 * j)));
            w[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

/* ---- 32-element blocks: two per 64 ----------------------------------- */

INL void q8_0_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q8_0 *b = row;
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        __m512 w[4];
        for (int h = 0; h < 2; h++) {
            const __m512 d = _mm512_set1_ps(h2f(b[h].d));
            for (int j = 0; j < 2; j++)
                w[2 * h + j] = scaled(
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[h].qs + 16 * j))), d);
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void q4_0_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q4_0 *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF), off = _mm512_set1_epi32(8);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        __m512 w[4];
        for (int h = 0; h < 2; h++) {
            const __m512 d = _mm512_set1_ps(h2f(b[h].d));
            __m512i q = ld16_u8(b[h].qs);
            w[2 * h] = scaled(_mm512_sub_epi32(_mm512_and_si512(q, m4), off), d);
            w[2 * h + 1] = scaled(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), off), d);
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void q4_1_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q4_1 *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        __m512 w[4];
        for (int h = 0; h < 2; h++) {
            const __m512 d = _mm512_set1_ps(h2f(b[h].d)), m = _mm512_set1_ps(h2f(b[h].m));
            __m512i q = ld16_u8(b[h].qs);
            w[2 * h] = scaled_plus(_mm512_and_si512(q, m4), d, m);
            w[2 * h + 1] = scaled_plus(_mm512_srli_epi32(q, 4), d, m);
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void q5_0_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    /* two blocks at a time in the byte domain: 64 values q - 16 in one
     * vector (nibbles in element order, high bits from the 64-bit mask
     * of both qh words), then widened 16 at a time */
    const qe_block_q5_0 *b = row;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m512i sixteen = _mm512_set1_epi8(16);
    const __m512i order = _mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        const __m256i qs = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b[0].qs)),
            _mm_loadu_si128((const __m128i *)b[1].qs), 1);
        const __m256i lo = _mm256_and_si256(qs, m4);                         /* lo0 lo1 */
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), m4);  /* hi0 hi1 */
        const __m512i nib = _mm512_permutexvar_epi64(
            order, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)); /* lo0 hi0 lo1 hi1 */
        uint32_t h0, h1;
        memcpy(&h0, b[0].qh, 4);
        memcpy(&h1, b[1].qh, 4);
        const __mmask64 clear = _cvtu64_mask64(~((uint64_t)h0 | (uint64_t)h1 << 32));
        const __m512i v = _mm512_mask_sub_epi8(nib, clear, nib, sixteen); /* q - 16 */
        const __m512 d0 = _mm512_set1_ps(h2f(b[0].d)), d1 = _mm512_set1_ps(h2f(b[1].d));
        const __m512 w[4] = {
            scaled(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(v)), d0),
            scaled(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 1)), d0),
            scaled(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 2)), d1),
            scaled(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 3)), d1),
        };
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void q5_1_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q5_1 *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        __m512 w[4];
        for (int h = 0; h < 2; h++) {
            const __m512 d = _mm512_set1_ps(h2f(b[h].d)), m = _mm512_set1_ps(h2f(b[h].m));
            uint32_t qh;
            memcpy(&qh, b[h].qh, 4);
            __m512i q = ld16_u8(b[h].qs);
            __m512i lo = _mm512_or_si512(_mm512_and_si512(q, m4), qh_bit4(qh, 0));
            __m512i hi = _mm512_or_si512(_mm512_srli_epi32(q, 4), qh_bit4(qh, 16));
            w[2 * h] = scaled_plus(lo, d, m);
            w[2 * h + 1] = scaled_plus(hi, d, m);
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

INL void iq4_nl_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_iq4_nl *b = row;
    const __m128i lut = _mm_loadu_si128((const __m128i *)qe_kvalues_iq4nl);
    const __m128i m4 = _mm_set1_epi8(0xF);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 64, b += 2) {
        __m512 w[4];
        for (int h = 0; h < 2; h++) {
            const __m512 d = _mm512_set1_ps(h2f(b[h].d));
            __m128i q = _mm_loadu_si128((const __m128i *)b[h].qs);
            __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, m4));
            __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4));
            w[2 * h] = scaled(_mm512_cvtepi8_epi32(lo), d);
            w[2 * h + 1] = scaled(_mm512_cvtepi8_epi32(hi), d);
        }
        acc_64(&a, nx, w, x, ldx, k);
    }
    acc_finish(&a, nx, out);
}

/* ---- 256-element super-blocks: four 64s each ------------------------- */

INL void q2_K_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q2_K *b = row;
    const __m512i m3 = _mm512_set1_epi32(3);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 256, b++) {
        const float d = h2f(b->d), min = h2f(b->dmin);
        const uint8_t *q = b->qs;
        int is = 0;
        for (int g = 0; g < 4; g++) { /* 64 elements: shifts 2*(2*(g%2)) and +2 */
            if (g == 2)
                q += 32;
            const __m512i b0 = ld16_u8(q), b1 = ld16_u8(q + 16);
            __m512 w[4];
            for (int s2 = 0; s2 < 2; s2++) {
                const __m128i sh = _mm_cvtsi32_si128(4 * (g % 2) + 2 * s2);
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = b->scales[is++];
                    const __m512 dl = _mm512_set1_ps(d * (sc & 0xF));
                    const __m512 ml = _mm512_set1_ps(min * (sc >> 4));
                    w[2 * s2 + half] =
                        scaled_min(_mm512_and_si512(_mm512_srl_epi32(half ? b1 : b0, sh), m3), dl, ml);
                }
            }
            acc_64(&a, nx, w, x, ldx, k + 64 * g);
        }
    }
    acc_finish(&a, nx, out);
}

INL void q3_K_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q3_K *b = row;
    const __m512i m3 = _mm512_set1_epi32(3), four = _mm512_set1_epi32(4);
    int8_t sc[16];
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 256, b++) {
        const float d_all = h2f(b->d);
        for (int j = 0; j < 16; ++j) {
            int lo = j < 8 ? (b->scales[j] & 0xF) : (b->scales[j - 8] >> 4);
            int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = b->qs;
        const __m512i h0 = ld16_u8(b->hmask), h1 = ld16_u8(b->hmask + 16);
        int is = 0, mbit = 0;
        for (int g = 0; g < 4; g++) {
            if (g == 2)
                q += 32;
            const __m512i b0 = ld16_u8(q), b1 = ld16_u8(q + 16);
            __m512 w[4];
            for (int s2 = 0; s2 < 2; s2++, mbit++) {
                const __m512i mm = _mm512_set1_epi32(1 << mbit);
                const __m128i sh = _mm_cvtsi32_si128(4 * (g % 2) + 2 * s2);
                for (int half = 0; half < 2; half++) {
                    const __m512 dl = _mm512_set1_ps(d_all * sc[is++]);
                    __m512i v = _mm512_and_si512(_mm512_srl_epi32(half ? b1 : b0, sh), m3);
                    __mmask16 clear = _mm512_testn_epi32_mask(half ? h1 : h0, mm);
                    v = _mm512_mask_sub_epi32(v, clear, v, four);
                    w[2 * s2 + half] = scaled(v, dl);
                }
            }
            acc_64(&a, nx, w, x, ldx, k + 64 * g);
        }
    }
    acc_finish(&a, nx, out);
}

INL void q4_K_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q4_K *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 256, b++) {
        const float d = h2f(b->d), min = h2f(b->dmin);
        const uint8_t *q = b->qs;
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, m;
            qe_scale_min_k4(is, b->scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            qe_scale_min_k4(is + 1, b->scales, &sc, &m);
            const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(min * m);
            const __m512i q0 = ld16_u8(q), q1 = ld16_u8(q + 16);
            const __m512 w[4] = {
                scaled_min(_mm512_and_si512(q0, m4), d1, m1),
                scaled_min(_mm512_and_si512(q1, m4), d1, m1),
                scaled_min(_mm512_srli_epi32(q0, 4), d2, m2),
                scaled_min(_mm512_srli_epi32(q1, 4), d2, m2),
            };
            acc_64(&a, nx, w, x, ldx, k + 32 * is);
        }
    }
    acc_finish(&a, nx, out);
}

INL void q5_K_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q5_K *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF), one = _mm512_set1_epi32(1);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 256, b++) {
        const float d = h2f(b->d), min = h2f(b->dmin);
        const uint8_t *ql = b->qs;
        const __m512i h0 = ld16_u8(b->qh), h1 = ld16_u8(b->qh + 16);
        for (int is = 0; is < 8; is += 2, ql += 32) {
            uint8_t sc, m;
            qe_scale_min_k4(is, b->scales, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            qe_scale_min_k4(is + 1, b->scales, &sc, &m);
            const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(min * m);
            const __m128i s1 = _mm_cvtsi32_si128(is), s2 = _mm_cvtsi32_si128(is + 1);
            __m512 w[4];
            for (int l = 0; l < 2; l++) {
                const __m512i q = ld16_u8(ql + 16 * l), h = l ? h1 : h0;
                __m512i hb1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h, s1), one), 4);
                __m512i hb2 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srl_epi32(h, s2), one), 4);
                w[l] = scaled_min(_mm512_or_si512(_mm512_and_si512(q, m4), hb1), d1, m1);
                w[2 + l] = scaled_min(_mm512_or_si512(_mm512_srli_epi32(q, 4), hb2), d2, m2);
            }
            acc_64(&a, nx, w, x, ldx, k + 32 * is);
        }
    }
    acc_finish(&a, nx, out);
}

INL void q6_K_impl(const void *row, int64_t n, const float *x, const int nx, int64_t ldx,
                     float *out)
{
    const qe_block_q6_K *b = row;
    const __m512i m4 = _mm512_set1_epi32(0xF), m3 = _mm512_set1_epi32(3);
    const __m512i off = _mm512_set1_epi32(32);
    acc a;
    acc_zero(&a, nx);
    for (int64_t k = 0; k < n; k += 256, b++) {
        const float d = h2f(b->d);
        const uint8_t *ql = b->ql, *qh = b->qh;
        const int8_t *sc = b->scales;
        for (int n128 = 0; n128 < 256; n128 += 128, ql += 64, qh += 32, sc += 8) {
            /* elements n128 + 32*part + l: part 0 ql[l] low, 1 ql[32+l] low,
             * 2 ql[l] high, 3 ql[32+l] high; high bits qh[l] >> 2*part */
            __m512 w[8];
            for (int l = 0; l < 2; l++) {
                const __m512i qa = ld16_u8(ql + 16 * l), qb = ld16_u8(ql + 32 + 16 * l);
                const __m512i h = ld16_u8(qh + 16 * l);
                const __m512i q[4] = {
                    _mm512_and_si512(qa, m4), _mm512_and_si512(qb, m4),
                    _mm512_srli_epi32(qa, 4), _mm512_srli_epi32(qb, 4)};
                for (int part = 0; part < 4; part++) {
                    __m512i hb = _mm512_slli_epi32(
                        _mm512_and_si512(_mm512_srli_epi32(h, 2 * part), m3), 4);
                    __m512i v = _mm512_sub_epi32(_mm512_or_si512(q[part], hb), off);
                    w[2 * part + l] = scaled(v, _mm512_set1_ps(d * sc[l + 2 * part]));
                }
            }
            acc_64(&a, nx, w, x, ldx, k + n128);
            acc_64(&a, nx, w + 4, x, ldx, k + n128 + 64);
        }
    }
    acc_finish(&a, nx, out);
}

#define WRAP(T)                                                                           \
    TGT static void T##_row_dot(const void *row, int64_t n, const float *x, int nx,       \
                                int64_t ldx, float *out)                                  \
    {                                                                                     \
        switch (nx) {                                                                     \
        case 1: T##_impl(row, n, x, 1, ldx, out); break;                                  \
        case 2: T##_impl(row, n, x, 2, ldx, out); break;                                  \
        case 3: T##_impl(row, n, x, 3, ldx, out); break;                                  \
        default: T##_impl(row, n, x, 4, ldx, out); break;                                 \
        }                                                                                 \
    }
WRAP(f32)
WRAP(f16)
WRAP(bf16)
WRAP(q8_0)
WRAP(q4_0)
WRAP(q4_1)
WRAP(q5_0)
WRAP(q5_1)
WRAP(iq4_nl)
WRAP(q2_K)
WRAP(q3_K)
WRAP(q4_K)
WRAP(q5_K)
WRAP(q6_K)
#undef WRAP

void qe_register_rowdot_avx512(qe_type_traits *tab)
{
    tab[QE_TYPE_F32].row_dot = f32_row_dot;
    tab[QE_TYPE_F16].row_dot = f16_row_dot;
    tab[QE_TYPE_BF16].row_dot = bf16_row_dot;
    tab[QE_TYPE_Q8_0].row_dot = q8_0_row_dot;
    tab[QE_TYPE_Q4_0].row_dot = q4_0_row_dot;
    tab[QE_TYPE_Q4_1].row_dot = q4_1_row_dot;
    tab[QE_TYPE_Q5_0].row_dot = q5_0_row_dot;
    tab[QE_TYPE_Q5_1].row_dot = q5_1_row_dot;
    tab[QE_TYPE_IQ4_NL].row_dot = iq4_nl_row_dot;
    tab[QE_TYPE_Q2_K].row_dot = q2_K_row_dot;
    tab[QE_TYPE_Q3_K].row_dot = q3_K_row_dot;
    tab[QE_TYPE_Q4_K].row_dot = q4_K_row_dot;
    tab[QE_TYPE_Q5_K].row_dot = q5_K_row_dot;
    tab[QE_TYPE_Q6_K].row_dot = q6_K_row_dot;
}
