/*
 * formats_iq.c: the non-linear 4-bit types IQ4_NL (32-weight blocks) and
 * IQ4_XS (256-weight super-blocks with 6-bit sub-block scales): scalar
 * dequantize (the spec), quantize one row, vec_dot.
 *
 * Both quantizers always run their own weighted search (ntry = 7), with
 * or without an imatrix, exactly as llama.cpp b4747's quantize_iq4_nl /
 * quantize_iq4_xs do (that is what llama-quantize writes); without an
 * imatrix the weights are x^2.
 *
 * qe_iq4_*_quantize_with are the fast twins: the 16 candidate scales of a
 * sub-block are scored side by side by SIMD kernels, the winner is picked
 * in the reference order, so the bytes are the reference's.
 */
#include "quant_internal.h"

const int8_t qe_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

static void iq4_nl_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq4_nl *x = vx;
    for (int64_t i = 0; i < k / QE_QK4_NL; i++) {
        const uint8_t *qs = x[i].qs;
        const float d = qe_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j + 0] = d * qe_kvalues_iq4nl[qs[j] & 0xf];
            y[j + 16] = d * qe_kvalues_iq4nl[qs[j] >> 4];
        }
        y += 32;
    }
}

static void iq4_xs_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq4_xs *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const uint8_t *qs = x[i].qs;
        const float d = qe_h2f(x[i].d);
        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            const int ls = ((x[i].scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) |
                           (((x[i].scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j + 0] = dl * qe_kvalues_iq4nl[qs[j] & 0xf];
                y[j + 16] = dl * qe_kvalues_iq4nl[qs[j] >> 4];
            }
            y += 32;
            qs += 16;
        }
    }
}

/*
 * One super-block of super_block_size weights in sub-blocks of 32.
 * For IQ4_NL super_block_size == 32 (scale straight to dh); for IQ4_XS it
 * is 256 and the sub-block scales become 6-bit levels of d = -max/32.
 * quant_weights: this super-block's imatrix slice or NULL.
 */
static void iq4_quant_sb(int super_block_size, const float *restrict x, qe_half *dh,
                         uint8_t *restrict q4, uint16_t *scales_h, uint8_t *scales_l,
                         const float *restrict quant_weights, int ntry)
{
    const int block_size = 32;
    const int8_t *values = qe_kvalues_iq4nl;
    float scales[QE_QK_K / 32], weight[32];
    uint8_t L[QE_QK_K];

    float sigma2 = 0;
    for (int j = 0; j < super_block_size; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / super_block_size;

    memset(q4, 0, (size_t)super_block_size / 2);
    memset(L, 0, sizeof L);
    dh[0] = qe_f2h(0.f);

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < super_block_size / block_size; ++ib) {
        const float *xb = x + ib * block_size;
        uint8_t *Lb = L + ib * block_size;
        if (quant_weights) {
            const float *qw = quant_weights + ib * block_size;
            for (int j = 0; j < block_size; ++j)
                weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < block_size; ++j)
                weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < block_size; ++j) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax < QE_GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        float d = ntry > 0 ? -max / values[0] : max / values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < block_size; ++j) {
            float al = id * xb[j];
            int l = qe_best_index_int8(16, values, al);
            Lb[j] = (uint8_t)l;
            float q = values[l];
            float w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumqx / sumq2;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; ++itry) {
            id = (itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < block_size; ++j) {
                float al = id * xb[j];
                int l = qe_best_index_int8(16, values, al);
                float q = values[l];
                float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if (super_block_size / block_size > 1) {
        int nb = super_block_size / block_size;
        memset(scales_h, 0, (size_t)((nb + 7) / 8) * sizeof(uint16_t));
        float d = -max_scale / 32;
        dh[0] = qe_f2h(d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ++ib) {
            int l = qe_nearest_int(id * scales[ib]);
            l = QE_MAX(-32, QE_MIN(31, l));
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            uint8_t *Lb = L + ib * block_size;
            const float *xb = x + ib * block_size;
            for (int j = 0; j < block_size; ++j)
                Lb[j] = (uint8_t)qe_best_index_int8(16, values, idl * xb[j]);
            l += 32;
            uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            if (ib % 2 == 0)
                scales_l[ib / 2] = l_l;
            else
                scales_l[ib / 2] |= (uint8_t)(l_l << 4);
            scales_h[ib / 8] |= (uint16_t)(l_h << 2 * (ib % 8));
        }
    } else {
        dh[0] = qe_f2h(scales[0]);
        if (ntry > 0) {
            float id = scales[0] ? 1 / scales[0] : 0;
            for (int j = 0; j < super_block_size; ++j)
                L[j] = (uint8_t)qe_best_index_int8(16, values, id * x[j]);
        }
    }

    for (int i = 0; i < super_block_size / 32; ++i)
        for (int j = 0; j < 16; ++j)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

static int iq4_nl_from_float(const float *restrict x, void *restrict vy, int64_t n,
                             const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_iq4_nl *y = vy;
    uint16_t unused_h;
    uint8_t unused_l[4];
    for (int64_t ib = 0; ib < n / QE_QK4_NL; ++ib)
        iq4_quant_sb(QE_QK4_NL, x + QE_QK4_NL * ib, &y[ib].d, y[ib].qs, &unused_h, unused_l,
                     imatrix ? imatrix + QE_QK4_NL * ib : NULL, 7);
    return 0;
}

static int iq4_xs_from_float(const float *restrict x, void *restrict vy, int64_t n,
                             const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_iq4_xs *y = vy;
    for (int64_t ib = 0; ib < n / QE_QK_K; ++ib) {
        uint16_t sh;
        iq4_quant_sb(QE_QK_K, x + QE_QK_K * ib, &y[ib].d, y[ib].qs, &sh, y[ib].scales_l,
                     imatrix ? imatrix + QE_QK_K * ib : NULL, 7);
        y[ib].scales_h = sh; /* via a local: the struct field is unaligned-safe either way */
    }
    return 0;
}

/* ---- fast driver ------------------------------------------------------ */

/*
 * Same search as iq4_quant_sb with ntry = 7 (the only value used), with
 * the 16 fits of a sub-block (the first fit at d = -max/values[0], then
 * itry = -7..7) evaluated side by side by k->trials16 and the winner then
 * picked in the reference order.  The levels of the first fit are never
 * stored: the reference overwrites them in its final pass.
 */
static void iq4_quant_sb_fast(const qe_iq4_kernels *k, int super_block_size,
                              const float *restrict x, qe_half *dh, uint8_t *restrict q4,
                              uint16_t *scales_h, uint8_t *scales_l,
                              const float *restrict quant_weights)
{
    const int block_size = 32, ntry = 7;
    const int8_t *values = qe_kvalues_iq4nl;
    float scales[QE_QK_K / 32], weight[32], id[16], sumqx[16], sumq2[16];
    uint8_t L[QE_QK_K];

    float sigma2 = 0;
    for (int j = 0; j < super_block_size; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / super_block_size;

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < super_block_size / block_size; ++ib) {
        const float *xb = x + ib * block_size;
        if (quant_weights) {
            const float *qw = quant_weights + ib * block_size;
            for (int j = 0; j < block_size; ++j)
                weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < block_size; ++j)
                weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < block_size; ++j) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax < QE_GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        id[0] = 1 / (-max / values[0]);
        for (int itry = -ntry; itry <= ntry; ++itry)
            id[itry + ntry + 1] = (itry + values[0]) / max;
        k->trials16(xb, weight, id, sumqx, sumq2);
        float d = sumqx[0] / sumq2[0];
        float best = d * sumqx[0];
        for (int t = 1; t < 16; ++t) {
            if (sumq2[t] > 0 && sumqx[t] * sumqx[t] > best * sumq2[t]) {
                d = sumqx[t] / sumq2[t];
                best = d * sumqx[t];
            }
        }
        scales[ib] = d;
        float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if (super_block_size / block_size > 1) {
        int nb = super_block_size / block_size;
        memset(scales_h, 0, (size_t)((nb + 7) / 8) * sizeof(uint16_t));
        float d = -max_scale / 32;
        dh[0] = qe_f2h(d);
        float idd = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ++ib) {
            int l = qe_nearest_int(idd * scales[ib]);
            l = QE_MAX(-32, QE_MIN(31, l));
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            k->index32(x + ib * block_size, idl, L + ib * block_size);
            l += 32;
            uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            if (ib % 2 == 0)
                scales_l[ib / 2] = l_l;
            else
                scales_l[ib / 2] |= (uint8_t)(l_l << 4);
            scales_h[ib / 8] |= (uint16_t)(l_h << 2 * (ib % 8));
        }
    } else {
        dh[0] = qe_f2h(scales[0]);
        float idd = scales[0] ? 1 / scales[0] : 0;
        k->index32(x, idd, L);
    }

    for (int i = 0; i < super_block_size / 32; ++i)
        for (int j = 0; j < 16; ++j)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

int qe_iq4_nl_quantize_with(const qe_iq4_kernels *k, const float *restrict x, void *restrict vy,
                            int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_iq4_nl *y = vy;
    uint16_t unused_h;
    uint8_t unused_l[4];
    for (int64_t ib = 0; ib < n / QE_QK4_NL; ++ib)
        iq4_quant_sb_fast(k, QE_QK4_NL, x + QE_QK4_NL * ib, &y[ib].d, y[ib].qs, &unused_h,
                          unused_l, imatrix ? imatrix + QE_QK4_NL * ib : NULL);
    return 0;
}

int qe_iq4_xs_quantize_with(const qe_iq4_kernels *k, const float *restrict x, void *restrict vy,
                            int64_t n, const float *restrict imatrix)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_iq4_xs *y = vy;
    for (int64_t ib = 0; ib < n / QE_QK_K; ++ib) {
        uint16_t sh;
        iq4_quant_sb_fast(k, QE_QK_K, x + QE_QK_K * ib, &y[ib].d, y[ib].qs, &sh, y[ib].scales_l,
                          imatrix ? imatrix + QE_QK_K * ib : NULL);
        y[ib].scales_h = sh;
    }
    return 0;
}

QE_DEFINE_VEC_DOT_REF(iq4_nl_vec_dot, qe_block_iq4_nl, QE_QK4_NL, iq4_nl_to_float)
QE_DEFINE_VEC_DOT_REF(iq4_xs_vec_dot, qe_block_iq4_xs, QE_QK_K, iq4_xs_to_float)

void qe_register_iq(qe_type_traits *tab)
{
    tab[QE_TYPE_IQ4_NL].to_float_ref = tab[QE_TYPE_IQ4_NL].to_float = iq4_nl_to_float;
    tab[QE_TYPE_IQ4_NL].from_float_ref = iq4_nl_from_float;
    tab[QE_TYPE_IQ4_NL].vec_dot_ref = tab[QE_TYPE_IQ4_NL].vec_dot = iq4_nl_vec_dot;
    tab[QE_TYPE_IQ4_XS].to_float_ref = tab[QE_TYPE_IQ4_XS].to_float = iq4_xs_to_float;
    tab[QE_TYPE_IQ4_XS].from_float_ref = iq4_xs_from_float;
    tab[QE_TYPE_IQ4_XS].vec_dot_ref = tab[QE_TYPE_IQ4_XS].vec_dot = iq4_xs_vec_dot;
}
