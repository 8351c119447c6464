/*
 * formats_k.c: the k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-weight
 * super-blocks) and Q8_K (the activation format of ggml's k-quant dots):
 * scalar dequantize (the spec), quantize one row, vec_dot.
 *
 * Without an imatrix, quantization mirrors llama.cpp b4747's
 * quantize_row_q*_K_ref; with one it mirrors quantize_row_q*_K_impl
 * (weights imatrix[col] * sqrt(sigma2 + x^2), sub-block scales fit by
 * make_qkx3/make_qx/make_qp).  Every super-block is independent except
 * that the imatrix is indexed by column within the row.
 *
 * The qe_q*_K_quantize_with drivers at the end are the fast twins: the
 * same code with the group fits handed 16 at a time to SIMD kernels
 * (simd_avx2.c / simd_avx512.c), so their bytes are the reference's.
 */
#include "quant_internal.h"

#define QK_K QE_QK_K

/* Pack 256 2-bit levels: per 128-weight half, byte l holds weights
 * l, l+32, l+64, l+96 at bit offsets 0, 2, 4, 6. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ===================== Q2_K ========================================= */

static void q2_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q2_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                uint8_t sc = x[i].scales[is++];
                float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((int8_t)((q[l] >> shift) & 3)) - ml;
                sc = x[i].scales[is++];
                dl = d * (sc & 0xF);
                ml = min * (sc >> 4);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((int8_t)((q[l + 16] >> shift) & 3)) - ml;
                shift += 2;
            }
            q += 32;
        }
    }
}

/* Tail of the Q2_K reference quantizer for one block: 4-bit scale and
 * min levels from the 16 group fits (scales, mins: 16 each), then every
 * weight re-rounded against the stored values.  L: 256 levels from the
 * fits, kept for groups whose stored scale is 0. */
static void q2_K_finish_ref(const float *restrict x, qe_block_q2_K *restrict y,
                            const float *scales, const float *mins, uint8_t *restrict L)
{
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j)
            y->scales[j] = (uint8_t)qe_nearest_int(iscale * scales[j]);
        y->d = qe_f2h(max_scale / q4scale);
    } else {
        for (int j = 0; j < QK_K / 16; ++j)
            y->scales[j] = 0;
        y->d = qe_f2h(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j) {
            int l = qe_nearest_int(iscale * mins[j]);
            y->scales[j] |= (uint8_t)(l << 4);
        }
        y->dmin = qe_f2h(max_min / q4scale);
    } else {
        y->dmin = qe_f2h(0.f);
    }
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = qe_h2f(y->d) * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float dm = qe_h2f(y->dmin) * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = qe_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)QE_MAX(0, QE_MIN(3, l));
        }
    }
    pack_2bit(L, y->qs);
}

static void q2_K_quant_ref(const float *restrict x, qe_block_q2_K *restrict y, int64_t k)
{
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    for (int64_t i = 0; i < k / QK_K; i++) {
        for (int j = 0; j < QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = qe_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                            -0.5f, 0.1f, 15, true);
        }
        q2_K_finish_ref(x, &y[i], scales, mins, L);
        x += QK_K;
    }
}

/* Tail of the Q2_K imatrix quantizer for one block: scales and mins of
 * the 16 groups fit by make_qp_quants with group weights sw, then the
 * re-rounding. */
static void q2_K_finish_imat(const float *restrict x, qe_block_q2_K *restrict y, const float *scales,
                             const float *mins, const float *sw, uint8_t *restrict L)
{
    uint8_t Ls[QK_K / 16], Lm[QK_K / 16];
    float dm = qe_make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    float mm = qe_make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    y->d = qe_f2h(dm);
    y->dmin = qe_f2h(mm);
    dm = qe_h2f(y->d);
    mm = qe_h2f(y->dmin);
    for (int j = 0; j < QK_K / 16; ++j)
        y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dm * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = qe_nearest_int((x[16 * j + ii] + m) / d);
            L[16 * j + ii] = (uint8_t)QE_MAX(0, QE_MIN(3, l));
        }
    }
    pack_2bit(L, y->qs);
}

/* Importance weights of one Q2_K block (imatrix[col] * sqrt(sigma2 + x^2),
 * sigma2 = mean x^2 of the block) and their per-group sums sw[16]. */
static void q2_K_imat_weights(const float *restrict x, const float *restrict qw_sb,
                              float *restrict weights, float *restrict sw)
{
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        float *weight = weights + 16 * j;
        sw[j] = 0;
        for (int l = 0; l < 16; ++l)
            weight[l] = qw_sb[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < QK_K / 16; ++l)
            sw[j] += weight[l];
    }
}

static void q2_K_quant_imat(const float *restrict x, qe_block_q2_K *restrict y, int64_t n,
                            const float *restrict quant_weights)
{
    uint8_t L[QK_K], Laux[16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weights[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        q2_K_imat_weights(x, quant_weights + QK_K * i, weights, sw);
        for (int j = 0; j < QK_K / 16; ++j)
            scales[j] = qe_make_qkx3_quants(16, 3, x + 16 * j, weights + 16 * j, L + 16 * j,
                                            &mins[j], Laux, -0.9f, 0.05f, 36, false);
        q2_K_finish_imat(x, &y[i], scales, mins, sw, L);
        x += QK_K;
    }
}

/* ===================== Q3_K ========================================= */

static void q3_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q3_K *x = vx;
    int8_t scales[16];
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d_all = qe_h2f(x[i].d);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        uint8_t m = 1;
        qe_q3_K_scales(x[i].scales, scales);
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                float dl = d_all * (scales[is++]);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((int8_t)((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
                dl = d_all * (scales[is++]);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((int8_t)((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
                shift += 2;
                m <<= 1;
            }
            q += 32;
        }
    }
}

/* Shared tail of both Q3_K quantizers: re-round against the stored
 * scales, split off the high bit into hmask, pack the low 2 bits. */
static void q3_K_finish(const float *restrict x, qe_block_q3_K *restrict yb, int8_t *restrict L)
{
    int8_t sc[16];
    qe_q3_K_scales(yb->scales, sc);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = qe_h2f(yb->d) * sc[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = qe_nearest_int(x[16 * j + ii] / d);
            l = QE_MAX(-4, QE_MIN(3, l));
            L[16 * j + ii] = (int8_t)(l + 4);
        }
    }
    memset(yb->hmask, 0, QK_K / 8);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < QK_K; ++j) {
        if (L[j] > 3) {
            yb->hmask[m] |= hm;
            L[j] -= 4;
        }
        if (++m == QK_K / 8) {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit((const uint8_t *)L, yb->qs);
}

/* Store 6-bit level l (0..63) of sub-block j into the 12 scale bytes
 * (which the caller zeroed). */
static void q3_K_put_scale(uint8_t *s12, int j, int l)
{
    if (j < 8)
        s12[j] = (uint8_t)(l & 0xF);
    else
        s12[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    s12[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

static void q3_K_quant_ref(const float *restrict x, qe_block_q3_K *restrict y, int64_t k)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < k / QK_K; i++) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            scales[j] = qe_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; ++j) {
                int8_t l = (int8_t)qe_nearest_int(iscale * scales[j]);
                l = (int8_t)(QE_MAX(-32, QE_MIN(31, l)) + 32);
                q3_K_put_scale(y[i].scales, j, l);
            }
            y[i].d = qe_f2h(1 / iscale);
        } else {
            y[i].d = qe_f2h(0.f);
        }
        q3_K_finish(x, &y[i], L);
        x += QK_K;
    }
}

/* Importance weights of one Q3_K block (sigma2 = 2 * mean x^2) and
 * their per-group sums sw[16]. */
static void q3_K_imat_weights(const float *restrict x, const float *restrict qw_sb,
                              float *restrict weights, float *restrict sw)
{
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j)
        sumx2 += x[j] * x[j];
    float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        float *weight = weights + 16 * j;
        for (int l = 0; l < 16; ++l)
            weight[l] = qw_sb[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l)
            sumw += weight[l];
        sw[j] = sumw;
    }
}

static void q3_K_quant_imat(const float *restrict x, qe_block_q3_K *restrict y, int64_t n,
                            const float *restrict quant_weights)
{
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weights[QK_K], sw[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        q3_K_imat_weights(x, quant_weights + QK_K * i, weights, sw);
        for (int j = 0; j < QK_K / 16; ++j)
            scales[j] = qe_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weights + 16 * j);
        memset(y[i].scales, 0, 12);
        float d_block = qe_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
        for (int j = 0; j < QK_K / 16; ++j)
            q3_K_put_scale(y[i].scales, j, Ls[j]);
        y[i].d = qe_f2h(d_block);
        q3_K_finish(x, &y[i], L);
        x += QK_K;
    }
}

/* ===================== Q4_K / Q5_K ================================== */

static void q4_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q4_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64) {
            qe_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

static void q5_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q5_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = qe_h2f(x[i].d), min = qe_h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            qe_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qe_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

/* Pack 8 6-bit scales ls[] and mins lm[] into the 12 bytes of Q4_K/Q5_K. */
static void k4_put_scales(uint8_t *s12, const uint8_t *ls, const uint8_t *lm)
{
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            s12[j] = ls[j];
            s12[j + 4] = lm[j];
        } else {
            s12[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s12[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s12[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Re-round the 256 weights of a Q4_K/Q5_K block to [0, nmax] against the
 * stored (fp16) scales and mins. */
static void k4_requant(const float *restrict x, const uint8_t *s12, qe_half hd, qe_half hdmin,
                       int nmax, uint8_t *restrict L)
{
    uint8_t sc, m;
    for (int j = 0; j < QK_K / 32; ++j) {
        qe_scale_min_k4(j, s12, &sc, &m);
        const float d = qe_h2f(hd) * sc;
        if (!d)
            continue;
        const float dm = qe_h2f(hdmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = qe_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QE_MAX(0, QE_MIN(nmax, l));
        }
    }
}

/* 6-bit scale and min levels of the reference path from the 8 group fits
 * (largest scale / min -> 63). */
static void k4_ref_encode(const float *scales, const float *mins, uint8_t *s12, qe_half *hd,
                          qe_half *hdmin)
{
    uint8_t ls[8], lm[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t a = (uint8_t)qe_nearest_int(inv_scale * scales[j]);
        uint8_t b = (uint8_t)qe_nearest_int(inv_min * mins[j]);
        ls[j] = QE_MIN(63, a);
        lm[j] = QE_MIN(63, b);
    }
    memset(s12, 0, 12);
    k4_put_scales(s12, ls, lm);
    *hd = qe_f2h(max_scale / 63.f);
    *hdmin = qe_f2h(max_min / 63.f);
}

/* 6-bit scale and min levels of the imatrix path: make_qp_quants over the
 * 8 group fits with group weights sw. */
static void k4_imat_encode(const float *scales, const float *mins, const float *sw, uint8_t *s12,
                           qe_half *hd, qe_half *hdmin)
{
    uint8_t Ls[8], Lm[8];
    float d_block = qe_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = qe_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j) {
        Ls[j] = QE_MIN(63, Ls[j]);
        Lm[j] = QE_MIN(63, Lm[j]);
    }
    memset(s12, 0, 12);
    k4_put_scales(s12, Ls, Lm);
    *hd = qe_f2h(d_block);
    *hdmin = qe_f2h(m_block);
}

/* Reference-path group weights of one Q4_K/Q5_K block: av_x + |x| with
 * av_x the rms of the 32-weight group. */
static void k4_ref_weights(const float *restrict x, float *restrict weights)
{
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[32 * j + l] = av_x + fabsf(x[32 * j + l]);
    }
}

/* imatrix-path weights of one Q4_K/Q5_K block (sigma2 = 2 * mean x^2)
 * and their per-group sums sw[8]. */
static void k4_imat_weights(const float *restrict x, const float *restrict qw_sb,
                            float *restrict weights, float *restrict sw)
{
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l)
        sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        const float *qw = qw_sb + 32 * j;
        float *w = weights + 32 * j;
        for (int l = 0; l < 32; ++l)
            w[l] = qw[l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += w[l];
        sw[j] = sumw;
    }
}

/* Reference scale search shared by Q4_K (nmax 15) and Q5_K (nmax 31). */
static void k4_ref_scales(const float *restrict x, int nmax, float rmin, int nstep, uint8_t *L,
                          uint8_t *s12, qe_half *hd, qe_half *hdmin)
{
    uint8_t Laux[32];
    float weights[QK_K], mins[8], scales[8];
    k4_ref_weights(x, weights);
    for (int j = 0; j < QK_K / 32; ++j)
        scales[j] = qe_make_qkx2_quants(32, nmax, x + 32 * j, weights + 32 * j, L + 32 * j,
                                        &mins[j], Laux, rmin, 0.1f, nstep, false);
    k4_ref_encode(scales, mins, s12, hd, hdmin);
}

/* imatrix scale search shared by Q4_K and Q5_K. */
static void k4_imat_scales(const float *restrict x, const float *restrict qw_sb, int nmax,
                           uint8_t *L, uint8_t *s12, qe_half *hd, qe_half *hdmin)
{
    uint8_t Laux[32];
    float weights[QK_K], sw[8], mins[8], scales[8];
    k4_imat_weights(x, qw_sb, weights, sw);
    for (int j = 0; j < QK_K / 32; ++j)
        scales[j] = qe_make_qkx3_quants(32, nmax, x + 32 * j, weights + 32 * j, L + 32 * j,
                                        &mins[j], Laux, -0.9f, 0.05f, 36, false);
    k4_imat_encode(scales, mins, sw, s12, hd, hdmin);
}

static void q4_K_pack(const uint8_t *L, uint8_t *q)
{
    for (int j = 0; j < QK_K; j += 64) {
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

static void q5_K_pack(const uint8_t *L, uint8_t *qh, uint8_t *ql)
{
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 <<= 2;
        m2 <<= 2;
        ql += 32;
    }
}

static void q4_K_quant(const float *restrict x, qe_block_q4_K *restrict y, int64_t n,
                       const float *restrict qw)
{
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        if (qw)
            k4_imat_scales(x, qw + QK_K * i, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
        else
            k4_ref_scales(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
        k4_requant(x, y[i].scales, y[i].d, y[i].dmin, 15, L);
        q4_K_pack(L, y[i].qs);
        x += QK_K;
    }
}

static void q5_K_quant(const float *restrict x, qe_block_q5_K *restrict y, int64_t n,
                       const float *restrict qw)
{
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        if (qw)
            k4_imat_scales(x, qw + QK_K * i, 31, L, y[i].scales, &y[i].d, &y[i].dmin);
        else
            k4_ref_scales(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
        k4_requant(x, y[i].scales, y[i].d, y[i].dmin, 31, L);
        q5_K_pack(L, y[i].qh, y[i].qs);
        x += QK_K;
    }
}

/* ===================== Q6_K ========================================= */

static void q6_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q6_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* Tail of the Q6_K quantizer for one block: 8-bit group scales from the
 * 16 group fits (scales[16]), re-rounding, packing.  L: 256 levels
 * (+32) from the fits, kept for groups whose stored scale is 0. */
static void q6_K_finish(const float *restrict x, qe_block_q6_K *restrict y, const float *scales,
                        int8_t *restrict L)
{
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < QE_GROUP_MAX_EPS) {
        memset(y, 0, sizeof(qe_block_q6_K));
        y->d = qe_f2h(0.f);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = qe_f2h(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib)
        y->scales[ib] = (int8_t)QE_MIN(127, qe_nearest_int(iscale * scales[ib]));
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = qe_h2f(y->d) * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = qe_nearest_int(x[16 * j + ii] / d);
            l = QE_MAX(-32, QE_MIN(31, l));
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

static void q6_K_quant(const float *restrict x, qe_block_q6_K *restrict y, int64_t n,
                       const float *restrict quant_weights)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            const float *qw = quant_weights ? quant_weights + QK_K * i + 16 * ib : NULL;
            scales[ib] = qe_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw);
        }
        q6_K_finish(x, &y[i], scales, L);
        x += QK_K;
    }
}

/* ===================== Q8_K ========================================= */

static void q8_K_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_q8_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++)
        for (int j = 0; j < QK_K; ++j)
            *y++ = x[i].d * x[i].qs[j];
}

static void q8_K_quant(const float *restrict x, qe_block_q8_K *restrict y, int64_t k)
{
    for (int64_t i = 0; i < k / QK_K; i++) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            x += QK_K;
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) {
            int v = qe_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)QE_MIN(127, v);
        }
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii)
                sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
        x += QK_K;
    }
}

/* ===================== fast drivers ================================= */

/*
 * The same quantizers with the group fits run 16 at a time by SIMD
 * kernels (qe_kquant_kernels); everything else is the reference code, so
 * the bytes are the reference's.  Group data go to the kernels transposed
 * (value i of group g at [i*16 + g]).
 */

static int q3_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix);

int qe_q2_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q2_K *y = vy;
    uint8_t L[QK_K], Lt[QK_K];
    float xt[QK_K], wt[QK_K], weights[QK_K], scales[16], mins[16], sw[16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        qe_kq_transpose_in(x, 16, 16, xt);
        if (imatrix) {
            q2_K_imat_weights(x, imatrix + QK_K * i, weights, sw);
            qe_kq_transpose_in(weights, 16, 16, wt);
            k->qkx2_16(16, 3, xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36, false);
            qe_kq_transpose_out(Lt, 16, 16, L);
            q2_K_finish_imat(x, &y[i], scales, mins, sw, L);
        } else {
            for (int j = 0; j < QK_K; ++j)
                wt[j] = fabsf(xt[j]);
            k->qkx2_16(16, 3, xt, wt, Lt, scales, mins, -0.5f, 0.1f, 15, true);
            qe_kq_transpose_out(Lt, 16, 16, L);
            q2_K_finish_ref(x, &y[i], scales, mins, L);
        }
        x += QK_K;
    }
    return 0;
}

int qe_q3_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!imatrix) /* make_q3_quants: data-dependent descent, kept scalar */
        return q3_K_from_float(x, vy, n, imatrix);
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q3_K *y = vy;
    int8_t L[QK_K], Ls[QK_K / 16];
    uint8_t Lt[QK_K];
    float xt[QK_K], wt[QK_K], weights[QK_K], scales[16], sw[16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        q3_K_imat_weights(x, imatrix + QK_K * i, weights, sw);
        qe_kq_transpose_in(x, 16, 16, xt);
        qe_kq_transpose_in(weights, 16, 16, wt);
        k->qx16(16, 4, xt, wt, (int8_t *)Lt, scales);
        qe_kq_transpose_out(Lt, 16, 16, (uint8_t *)L);
        memset(y[i].scales, 0, 12);
        float d_block = qe_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
        for (int j = 0; j < QK_K / 16; ++j)
            q3_K_put_scale(y[i].scales, j, Ls[j]);
        y[i].d = qe_f2h(d_block);
        q3_K_finish(x, &y[i], L);
        x += QK_K;
    }
    return 0;
}

/* Q4_K (nmax 15) / Q5_K (nmax 31): two blocks per kernel call (8 groups
 * of 32 each); L: 2 x 256 levels; the scale encoding is the reference's. */
static void k4_scales_fast(const qe_kquant_kernels *k, const float *restrict x, int nblk,
                           const float *restrict qw, int nmax, float rmin, int nstep,
                           uint8_t *restrict L, uint8_t *s12[2], qe_half *hd[2], qe_half *hdmin[2])
{
    float xt[512], wt[512], weights[512], scales[16], mins[16], sw[16];
    uint8_t Lt[512];
    for (int b = 0; b < nblk; ++b) {
        if (qw)
            k4_imat_weights(x + QK_K * b, qw + QK_K * b, weights + QK_K * b, sw + 8 * b);
        else
            k4_ref_weights(x + QK_K * b, weights + QK_K * b);
    }
    qe_kq_transpose_in(x, 32, 8 * nblk, xt);
    qe_kq_transpose_in(weights, 32, 8 * nblk, wt);
    if (qw)
        k->qkx2_16(32, nmax, xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36, false);
    else
        k->qkx2_16(32, nmax, xt, wt, Lt, scales, mins, rmin, 0.1f, nstep, false);
    qe_kq_transpose_out(Lt, 32, 8 * nblk, L);
    for (int b = 0; b < nblk; ++b) {
        if (qw)
            k4_imat_encode(scales + 8 * b, mins + 8 * b, sw + 8 * b, s12[b], hd[b], hdmin[b]);
        else
            k4_ref_encode(scales + 8 * b, mins + 8 * b, s12[b], hd[b], hdmin[b]);
    }
}

int qe_q4_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q4_K *y = vy;
    uint8_t L[2 * QK_K];
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i += 2) {
        int nblk = nb - i >= 2 ? 2 : 1;
        uint8_t *s12[2] = {y[i].scales, y[i + nblk - 1].scales};
        qe_half *hd[2] = {&y[i].d, &y[i + nblk - 1].d}, *hdm[2] = {&y[i].dmin, &y[i + nblk - 1].dmin};
        k4_scales_fast(k, x + QK_K * i, nblk, imatrix ? imatrix + QK_K * i : NULL, 15, -1.f, 20,
                       L, s12, hd, hdm);
        for (int b = 0; b < nblk; ++b) {
            k4_requant(x + QK_K * (i + b), y[i + b].scales, y[i + b].d, y[i + b].dmin, 15,
                       L + QK_K * b);
            q4_K_pack(L + QK_K * b, y[i + b].qs);
        }
    }
    return 0;
}

int qe_q5_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q5_K *y = vy;
    uint8_t L[2 * QK_K];
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i += 2) {
        int nblk = nb - i >= 2 ? 2 : 1;
        uint8_t *s12[2] = {y[i].scales, y[i + nblk - 1].scales};
        qe_half *hd[2] = {&y[i].d, &y[i + nblk - 1].d}, *hdm[2] = {&y[i].dmin, &y[i + nblk - 1].dmin};
        k4_scales_fast(k, x + QK_K * i, nblk, imatrix ? imatrix + QK_K * i : NULL, 31, -0.5f, 15,
                       L, s12, hd, hdm);
        for (int b = 0; b < nblk; ++b) {
            k4_requant(x + QK_K * (i + b), y[i + b].scales, y[i + b].d, y[i + b].dmin, 31,
                       L + QK_K * b);
            q5_K_pack(L + QK_K * b, y[i + b].qh, y[i + b].qs);
        }
    }
    return 0;
}

int qe_q6_K_quantize_with(const qe_kquant_kernels *k, const float *restrict x, void *restrict vy,
                          int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_q6_K *y = vy;
    int8_t L[QK_K];
    uint8_t Lt[QK_K];
    float xt[QK_K], wt[QK_K], scales[16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        qe_kq_transpose_in(x, 16, 16, xt);
        if (imatrix)
            qe_kq_transpose_in(imatrix + QK_K * i, 16, 16, wt);
        k->qx16(16, 32, xt, imatrix ? wt : NULL, (int8_t *)Lt, scales);
        qe_kq_transpose_out(Lt, 16, 16, (uint8_t *)L);
        q6_K_finish(x, &y[i], scales, L);
        x += QK_K;
    }
    return 0;
}

/* ===================== traits entry points ========================== */

static int q2_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    if (imatrix)
        q2_K_quant_imat(x, y, n, imatrix);
    else
        q2_K_quant_ref(x, y, n);
    return 0;
}

static int q3_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    if (imatrix)
        q3_K_quant_imat(x, y, n, imatrix);
    else
        q3_K_quant_ref(x, y, n);
    return 0;
}

static int q4_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q4_K_quant(x, y, n, imatrix);
    return 0;
}

static int q5_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q5_K_quant(x, y, n, imatrix);
    return 0;
}

static int q6_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q6_K_quant(x, y, n, imatrix);
    return 0;
}

static int q8_K_from_float(const float *restrict x, void *restrict y, int64_t n,
                           const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    q8_K_quant(x, y, n);
    return 0;
}

QE_DEFINE_VEC_DOT_REF(q2_K_vec_dot, qe_block_q2_K, QK_K, q2_K_to_float)
QE_DEFINE_VEC_DOT_REF(q3_K_vec_dot, qe_block_q3_K, QK_K, q3_K_to_float)
QE_DEFINE_VEC_DOT_REF(q4_K_vec_dot, qe_block_q4_K, QK_K, q4_K_to_float)
QE_DEFINE_VEC_DOT_REF(q5_K_vec_dot, qe_block_q5_K, QK_K, q5_K_to_float)
QE_DEFINE_VEC_DOT_REF(q6_K_vec_dot, qe_block_q6_K, QK_K, q6_K_to_float)
QE_DEFINE_VEC_DOT_REF(q8_K_vec_dot, qe_block_q8_K, QK_K, q8_K_to_float)

#define REG(T, pre)                                                                       \
    do {                                                                                  \
        tab[T].to_float_ref = tab[T].to_float = pre##_to_float;                           \
        tab[T].from_float_ref = pre##_from_float;                                         \
        tab[T].vec_dot_ref = tab[T].vec_dot = pre##_vec_dot;                              \
    } while (0)

void qe_register_k(qe_type_traits *tab)
{
    REG(QE_TYPE_Q2_K, q2_K);
    REG(QE_TYPE_Q3_K, q3_K);
    REG(QE_TYPE_Q4_K, q4_K);
    REG(QE_TYPE_Q5_K, q5_K);
    REG(QE_TYPE_Q6_K, q6_K);
    REG(QE_TYPE_Q8_K, q8_K);
}
