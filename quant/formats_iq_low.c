/*
 * formats_iq_low.c: the grid ("i-quant") types below 4 bits: IQ2_XXS,
 * IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M: scalar dequantize (the
 * spec), reference quantize of one row, reference dot.
 *
 * Each 256-weight block stores, per group of 8 (IQ1/IQ2) or 4 (IQ3)
 * weights, an index into a fixed codebook (iq_grids.c) plus signs and small
 * sub-block scales.  The quantizers follow llama.cpp b4747's
 * quantize_row_iq*_impl step by step (float arithmetic in the same order,
 * qe_nearest_int rounding, the same tie rules and fudge factors, libc
 * qsort with the same comparator for IQ1), because the goal is files
 * byte-identical to llama-quantize's.  Where ggml's code has quirks that
 * shape the bytes they are kept and marked "(as ggml)".
 *
 * Importance weights: IQ2_XXS, IQ2_XS and IQ1_S cannot run without them
 * (ggml asserts); their quantizers return QE_EINVAL for a NULL imatrix and
 * qe_quantize_rows says so.  The others fall back to ggml's x-based
 * weights.
 *
 * Holds no I/O; allocation happens once per grid (qe_iq_search_get).
 */
#include "quant_internal.h"

#include <float.h>
#include <stdlib.h>

#define GROUP_MAX_EPS_IQ3_XXS 1e-8f
#define GROUP_MAX_EPS_IQ2_S 1e-8f
#define GROUP_MAX_EPS_IQ1_M 1e-7f
#define GROUP_MAX_EPS_IQ1_S 1e-12f

static const uint8_t kmask_iq2xs[8] = {1, 2, 4, 8, 16, 32, 64, 128};

/* ==================== dequantize (the spec) ========================== */

static void iq2_xxs_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xxs *x = vx;
    uint32_t aux32[2];
    const uint8_t *aux8 = (const uint8_t *)aux32;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        for (int ib32 = 0; ib32 < QE_QK_K / 32; ++ib32) {
            memcpy(aux32, x[i].qs + 4 * ib32, 2 * sizeof(uint32_t));
            const float db = d * (0.5f + (aux32[1] >> 28)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const uint8_t *grid = (const uint8_t *)(qe_iq2xxs_grid + aux8[l]);
                const uint8_t signs = qe_ksigns_iq2xs[(aux32[1] >> 7 * l) & 127];
                for (int j = 0; j < 8; ++j)
                    y[j] = db * grid[j] * (signs & kmask_iq2xs[j] ? -1.f : 1.f);
                y += 8;
            }
        }
    }
}

static void iq2_xs_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_xs *x = vx;
    float db[2];
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        uint16_t qs[32];
        memcpy(qs, x[i].qs, sizeof qs);
        for (int ib32 = 0; ib32 < QE_QK_K / 32; ++ib32) {
            db[0] = d * (0.5f + (x[i].scales[ib32] & 0xf)) * 0.25f;
            db[1] = d * (0.5f + (x[i].scales[ib32] >> 4)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const uint8_t *grid = (const uint8_t *)(qe_iq2xs_grid + (qs[4 * ib32 + l] & 511));
                const uint8_t signs = qe_ksigns_iq2xs[qs[4 * ib32 + l] >> 9];
                for (int j = 0; j < 8; ++j)
                    y[j] = db[l / 2] * grid[j] * (signs & kmask_iq2xs[j] ? -1.f : 1.f);
                y += 8;
            }
        }
    }
}

static void iq2_s_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq2_s *x = vx;
    float db[2];
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        const uint8_t *qh = x[i].qh;
        const uint8_t *signs = qs + QE_QK_K / 8;
        for (int ib32 = 0; ib32 < QE_QK_K / 32; ++ib32) {
            db[0] = d * (0.5f + (x[i].scales[ib32] & 0xf)) * 0.25f;
            db[1] = d * (0.5f + (x[i].scales[ib32] >> 4)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const float dl = db[l / 2];
                const uint8_t *grid =
                    (const uint8_t *)(qe_iq2s_grid + (qs[l] | (qh[ib32] << (8 - 2 * l) & 0x300)));
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * grid[j] * (signs[l] & kmask_iq2xs[j] ? -1.f : 1.f);
                y += 8;
            }
            qs += 4;
            signs += 4;
        }
    }
}

static void iq3_xxs_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_xxs *x = vx;
    uint32_t aux32;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        const uint8_t *scales_and_signs = qs + QE_QK_K / 4;
        for (int ib32 = 0; ib32 < QE_QK_K / 32; ++ib32) {
            memcpy(&aux32, scales_and_signs + 4 * ib32, sizeof(uint32_t));
            const float db = d * (0.5f + (aux32 >> 28)) * 0.5f;
            for (int l = 0; l < 4; ++l) {
                const uint8_t signs = qe_ksigns_iq2xs[(aux32 >> 7 * l) & 127];
                const uint8_t *grid1 = (const uint8_t *)(qe_iq3xxs_grid + qs[2 * l + 0]);
                const uint8_t *grid2 = (const uint8_t *)(qe_iq3xxs_grid + qs[2 * l + 1]);
                for (int j = 0; j < 4; ++j) {
                    y[j + 0] = db * grid1[j] * (signs & kmask_iq2xs[j + 0] ? -1.f : 1.f);
                    y[j + 4] = db * grid2[j] * (signs & kmask_iq2xs[j + 4] ? -1.f : 1.f);
                }
                y += 8;
            }
            qs += 8;
        }
    }
}

static void iq3_s_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq3_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        const uint8_t *qh = x[i].qh;
        const uint8_t *signs = x[i].signs;
        for (int ib32 = 0; ib32 < QE_QK_K / 32; ib32 += 2) {
            const float db1 = d * (1 + 2 * (x[i].scales[ib32 / 2] & 0xf));
            const float db2 = d * (1 + 2 * (x[i].scales[ib32 / 2] >> 4));
            for (int half = 0; half < 2; ++half) {
                const float db = half ? db2 : db1;
                for (int l = 0; l < 4; ++l) {
                    const uint8_t *grid1 = (const uint8_t *)(qe_iq3s_grid +
                                                             (qs[2 * l + 0] | ((qh[half] << (8 - 2 * l)) & 256)));
                    const uint8_t *grid2 = (const uint8_t *)(qe_iq3s_grid +
                                                             (qs[2 * l + 1] | ((qh[half] << (7 - 2 * l)) & 256)));
                    for (int j = 0; j < 4; ++j) {
                        y[j + 0] = db * grid1[j] * (signs[l] & kmask_iq2xs[j + 0] ? -1.f : 1.f);
                        y[j + 4] = db * grid2[j] * (signs[l] & kmask_iq2xs[j + 4] ? -1.f : 1.f);
                    }
                    y += 8;
                }
                qs += 8;
                signs += 4;
            }
            qh += 2;
        }
    }
}

static void iq1_s_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_s *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        const float d = qe_h2f(x[i].d);
        const uint8_t *qs = x[i].qs;
        uint16_t qh[8];
        memcpy(qh, x[i].qh, sizeof qh);
        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            const float dl = d * (2 * ((qh[ib] >> 12) & 7) + 1);
            const float delta = qh[ib] & 0x8000 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
            for (int l = 0; l < 4; ++l) {
                const int8_t *grid =
                    (const int8_t *)(qe_iq1s_grid + (qs[l] | (((qh[ib] >> 3 * l) & 7) << 8)));
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * (grid[j] + delta);
                y += 8;
            }
            qs += 4;
        }
    }
}

/* The fp16 super-block scale of an IQ1_M block: the top nibbles of its
 * four 16-bit scale words. */
static inline float iq1_m_d(const uint16_t sc[4])
{
    uint16_t u = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                            (sc[3] & 0xf000));
    return qe_h2f(u);
}

static void iq1_m_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_iq1_m *x = vx;
    float delta[4];
    uint16_t idx[4];
    for (int64_t i = 0; i < k / QE_QK_K; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, sizeof sc);
        const float d = iq1_m_d(sc);
        const uint8_t *qs = x[i].qs;
        const uint8_t *qh = x[i].qh;
        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            const float dl1 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1);
            const float dl2 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1);
            idx[0] = (uint16_t)(qs[0] | ((qh[0] << 8) & 0x700));
            idx[1] = (uint16_t)(qs[1] | ((qh[0] << 4) & 0x700));
            idx[2] = (uint16_t)(qs[2] | ((qh[1] << 8) & 0x700));
            idx[3] = (uint16_t)(qs[3] | ((qh[1] << 4) & 0x700));
            delta[0] = qh[0] & 0x08 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
            delta[1] = qh[0] & 0x80 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
            delta[2] = qh[1] & 0x08 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
            delta[3] = qh[1] & 0x80 ? -QE_IQ1S_DELTA : QE_IQ1S_DELTA;
            for (int l = 0; l < 4; ++l) {
                const float dl = l < 2 ? dl1 : dl2;
                const int8_t *grid = (const int8_t *)(qe_iq1s_grid + idx[l]);
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * (grid[j] + delta[l]);
                y += 8;
            }
            qs += 4;
            qh += 2;
        }
    }
}

/* ==================== quantize: shared pieces ======================== */

/* Grid point nearest (weighted) to scale*q ~ xval among the listed
 * neighbours; L gets its levels.  8 or 4 coordinates (s->ncoord). */
static int iq_find_best_neighbour(const qe_iq_search *s, const uint16_t *restrict nbrs,
                                  const float *restrict xval, const float *restrict weight,
                                  float scale, int8_t *restrict L)
{
    const int nc = s->ncoord, num = nbrs[0];
    float best_d2 = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= num; ++j) {
        const int8_t *pg = s->grid + nc * nbrs[j];
        float d2 = 0;
        for (int i = 0; i < nc; ++i) {
            float q = pg[i];
            float diff = scale * q - xval[i];
            d2 += weight[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            grid_index = nbrs[j];
        }
    }
    if (grid_index < 0) /* only with NaN distances (ggml aborts): take the first */
        grid_index = nbrs[1];
    const int8_t *pg = s->grid + nc * grid_index;
    for (int i = 0; i < nc; ++i)
        L[i] = (int8_t)((pg[i] - 1) / 2);
    return grid_index;
}

/* Grid index of the lattice point u, searching the neighbours of an
 * off-grid point (L updated then); *on_grid (may be NULL) tells which. */
static inline int iq_lookup(const qe_iq_search *s, int u, const float *xval, const float *w,
                            float scale, int8_t *L, bool *on_grid)
{
    int gi = s->map[u];
    if (on_grid)
        *on_grid = gi >= 0;
    if (gi < 0)
        gi = iq_find_best_neighbour(s, s->neighbours - s->map[u] - 1, xval, w, scale, L);
    return gi;
}

/* xval = |x| of groups of 8 with an even number of sign flips: when the
 * count of negatives is odd, the least important weight (w*x^2) keeps its
 * wrong sign.  signs[k] = 7 stored sign bits of group k. */
static void iq_even_signs(const float *restrict xb, const float *restrict weight, int ngroups,
                          float *restrict xval, uint8_t *restrict signs)
{
    for (int k = 0; k < ngroups; ++k) {
        int nflip = 0;
        uint8_t s = 0;
        for (int i = 0; i < 8; ++i) {
            if (xb[8 * k + i] >= 0) {
                xval[8 * k + i] = xb[8 * k + i];
            } else {
                xval[8 * k + i] = -xb[8 * k + i];
                ++nflip;
                s |= (uint8_t)(1 << i);
            }
        }
        if (nflip % 2) {
            int imin = 0;
            float min = weight[8 * k + imin] * xb[8 * k + imin] * xb[8 * k + imin];
            for (int i = 1; i < 8; ++i) {
                float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if (ax < min) {
                    min = ax;
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= (uint8_t)(1 << imin);
        }
        signs[k] = s & 127;
    }
}

/* ==================== IQ2_XXS ======================================== */

static int iq2_xxs_from_float(const float *restrict x, void *restrict vy, int64_t n,
                              const float *restrict quant_weights)
{
    if (!quant_weights)
        return QE_EINVAL;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ2XXS);
    if (!S)
        return QE_ENOMEM;
    const int kMaxQ = 3;
    qe_block_iq2_xxs *y = vy;
    float scales[QE_QK_K / 32], weight[32], xval[32], waux[32];
    int8_t L[32], Laux[32];
    uint8_t block_signs[4];
    uint32_t q2[2 * (QE_QK_K / 32)];

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        y[ibl].d = qe_f2h(0.f);
        memset(q2, 0, QE_QK_K / 4);
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            const float *xb = xbl + 32 * ib;
            const float *qw = quant_weights + QE_QK_K * ibl + 32 * ib;
            for (int i = 0; i < 32; ++i)
                weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            for (int i = 0; i < 32; ++i)
                waux[i] = sqrtf(weight[i]);
            iq_even_signs(xb, weight, 4, xval, block_signs);
            float max = xval[0];
            for (int i = 1; i < 32; ++i)
                max = QE_MAX(max, xval[i]);
            if (max < QE_GROUP_MAX_EPS) {
                scales[ib] = 0;
                memset(L, 0, 32);
                continue;
            }
            float scale = qe_make_qp_quants(32, kMaxQ + 1, xval, (uint8_t *)L, weight);
            float eff_max = scale * kMaxQ;
            float best = 0;
            for (int is = -6; is <= 6; ++is) {
                float id = (2 * kMaxQ - 1 + is * 0.1f) / eff_max;
                float this_scale = 1 / id;
                for (int k = 0; k < 4; ++k) {
                    for (int i = 0; i < 8; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[8 * k + i] - 1));
                        Laux[8 * k + i] = (int8_t)QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                    }
                    int u = 0;
                    for (int i = 0; i < 8; ++i)
                        u |= (Laux[8 * k + i] << 2 * i);
                    iq_lookup(S, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k, NULL);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < 32; ++i) {
                    float w = weight[i];
                    float q = 2 * Laux[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    memcpy(L, Laux, 32);
                }
            }
            if (scale > 0) {
                float id = 1 / scale;
                for (int k = 0; k < 4; ++k) {
                    int u = 0;
                    for (int i = 0; i < 8; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[8 * k + i] - 1));
                        l = QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                        u |= (l << 2 * i);
                    }
                    int gi = iq_lookup(S, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k, NULL);
                    const int8_t *pg = S->grid + 8 * gi;
                    for (int i = 0; i < 8; ++i)
                        L[8 * k + i] = (int8_t)((pg[i] - 1) / 2);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < 32; ++i) {
                    float w = weight[i];
                    float q = 2 * L[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0)
                    scale = sumqx / sumq2;
            }
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 4; ++k)
                    block_signs[k] = (~block_signs[k]) & 127;
            }
            for (int k = 0; k < 4; ++k) {
                int u = 0;
                for (int i = 0; i < 8; ++i)
                    u |= (L[8 * k + i] << 2 * i);
                int gi = S->map[u];
                if (gi < 0)
                    gi = 0; /* cannot happen: L comes from grid points */
                q2[2 * ib + 0] |= ((uint32_t)gi << 8 * k);
                q2[2 * ib + 1] |= ((uint32_t)block_signs[k] << 7 * k);
            }
            scales[ib] = scale;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale) {
            memset(y[ibl].qs, 0, QE_QK_K / 4);
            continue;
        }
        float d = max_scale / 31;
        y[ibl].d = qe_f2h(d);
        float id = 1 / d;
        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            int l = qe_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QE_MAX(0, QE_MIN(15, l));
            q2[2 * ib + 1] |= ((uint32_t)l << 28);
        }
        memcpy(y[ibl].qs, q2, QE_QK_K / 4);
    }
    return 0;
}

/* ==================== IQ2_XS / IQ2_S (16-weight sub-blocks) ========== */

/* The shared search of IQ2_XS and IQ2_S for one 16-weight sub-block
 * (xval/weight/waux given); returns the scale, L the levels.  xs: IQ2_XS's
 * variant, where the final re-fit only revisits off-grid halves (both
 * do; they differ only in weights, signs and packing). */
static float iq2_search16(const qe_iq_search *S, const float *restrict xval,
                          const float *restrict weight, const float *restrict waux, float max,
                          int8_t *restrict L)
{
    const int kMaxQ = 3;
    int8_t Laux[16];
    bool is_on_grid[2], is_on_grid_aux[2];
    float best = 0;
    float scale = max / (2 * kMaxQ - 1);
    is_on_grid[0] = is_on_grid[1] = true;
    for (int is = -9; is <= 9; ++is) {
        float id = (2 * kMaxQ - 1 + is * 0.1f) / max;
        float this_scale = 1 / id;
        for (int k = 0; k < 2; ++k) {
            for (int i = 0; i < 8; ++i) {
                int l = qe_nearest_int(0.5f * (id * xval[8 * k + i] - 1));
                Laux[8 * k + i] = (int8_t)QE_MAX(0, QE_MIN(kMaxQ - 1, l));
            }
            int u = 0;
            for (int i = 0; i < 8; ++i)
                u |= (Laux[8 * k + i] << 2 * i);
            iq_lookup(S, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k,
                      &is_on_grid_aux[k]);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 16; ++i) {
            float w = weight[i];
            float q = 2 * Laux[i] + 1;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            for (int i = 0; i < 16; ++i)
                L[i] = Laux[i];
            for (int k = 0; k < 2; ++k)
                is_on_grid[k] = is_on_grid_aux[k];
        }
    }
    int n_not_ongrid = 0;
    for (int k = 0; k < 2; ++k)
        if (!is_on_grid[k])
            ++n_not_ongrid;
    if (n_not_ongrid > 0 && scale > 0) {
        float id = 1 / scale;
        for (int k = 0; k < 2; ++k) {
            if (is_on_grid[k])
                continue;
            int u = 0;
            for (int i = 0; i < 8; ++i) {
                int l = qe_nearest_int(0.5f * (id * xval[8 * k + i] - 1));
                l = QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                u |= (l << 2 * i);
                L[8 * k + i] = (int8_t)l;
            }
            iq_lookup(S, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k, NULL);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 16; ++i) {
            float w = weight[i];
            float q = 2 * L[i] + 1;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if (sumq2 > 0)
            scale = sumqx / sumq2;
    }
    return scale;
}

static int iq2_xs_from_float(const float *restrict x, void *restrict vy, int64_t n,
                             const float *restrict quant_weights)
{
    if (!quant_weights)
        return QE_EINVAL;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ2XS);
    if (!S)
        return QE_ENOMEM;
    qe_block_iq2_xs *y = vy;
    float scales[QE_QK_K / 16], weight[16], xval[16], waux[16];
    int8_t L[16];
    uint8_t block_signs[2];
    uint16_t q2[2 * (QE_QK_K / 16)];

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        y[ibl].d = qe_f2h(0.f);
        memset(q2, 0, QE_QK_K / 4);
        memset(y[ibl].scales, 0, QE_QK_K / 32);
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / 16; ++ib) {
            const float *xb = xbl + 16 * ib;
            const float *qw = quant_weights + QE_QK_K * ibl + 16 * ib;
            for (int i = 0; i < 16; ++i)
                weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            for (int i = 0; i < 16; ++i)
                waux[i] = sqrtf(weight[i]);
            iq_even_signs(xb, weight, 2, xval, block_signs);
            float max = xval[0];
            for (int i = 1; i < 16; ++i)
                max = QE_MAX(max, xval[i]);
            if (max < QE_GROUP_MAX_EPS) {
                scales[ib] = 0;
                memset(L, 0, 16);
                continue;
            }
            float scale = iq2_search16(S, xval, weight, waux, max, L);
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 2; ++k)
                    block_signs[k] = (~block_signs[k]) & 127;
            }
            for (int k = 0; k < 2; ++k) {
                int u = 0;
                for (int i = 0; i < 8; ++i)
                    u |= (L[8 * k + i] << 2 * i);
                int gi = S->map[u];
                if (gi < 0)
                    gi = 0; /* cannot happen */
                q2[2 * ib + k] = (uint16_t)(gi | (block_signs[k] << 9));
            }
            scales[ib] = scale;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale) {
            memset(y[ibl].qs, 0, QE_QK_K / 4);
            continue;
        }
        float d = max_scale / 31;
        y[ibl].d = qe_f2h(d);
        float id = 1 / d;
        for (int ib = 0; ib < QE_QK_K / 16; ++ib) {
            int l = qe_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QE_MAX(0, QE_MIN(15, l));
            if (ib % 2 == 0)
                y[ibl].scales[ib / 2] = (uint8_t)l;
            else
                y[ibl].scales[ib / 2] |= (uint8_t)(l << 4);
        }
        memcpy(y[ibl].qs, q2, QE_QK_K / 4);
    }
    return 0;
}

static int iq2_s_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict quant_weights)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ2S);
    if (!S)
        return QE_ENOMEM;
    qe_block_iq2_s *y = vy;
    float scales[QE_QK_K / 16], weight[16], xval[16], waux[16];
    int8_t L[16];
    uint8_t block_signs[2];

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        memset(&y[ibl], 0, sizeof(qe_block_iq2_s));
        y[ibl].d = qe_f2h(0.f);
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = 2 * sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / 16; ++ib) {
            const float *xb = xbl + 16 * ib;
            if (quant_weights) {
                const float *qw = quant_weights + QE_QK_K * ibl + 16 * ib;
                for (int i = 0; i < 16; ++i)
                    weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            } else {
                for (int i = 0; i < 16; ++i)
                    weight[i] = 0.25f * sigma2 + xb[i] * xb[i];
            }
            for (int i = 0; i < 16; ++i)
                waux[i] = sqrtf(weight[i]);
            for (int k = 0; k < 2; ++k) { /* all signs stored: no parity trick */
                uint8_t s = 0;
                for (int i = 0; i < 8; ++i) {
                    if (xb[8 * k + i] >= 0) {
                        xval[8 * k + i] = xb[8 * k + i];
                    } else {
                        xval[8 * k + i] = -xb[8 * k + i];
                        s |= (uint8_t)(1 << i);
                    }
                }
                block_signs[k] = s;
            }
            float max = xval[0];
            for (int i = 1; i < 16; ++i)
                max = QE_MAX(max, xval[i]);
            if (max < GROUP_MAX_EPS_IQ2_S) {
                scales[ib] = 0;
                continue;
            }
            float scale = iq2_search16(S, xval, weight, waux, max, L);
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 2; ++k)
                    block_signs[k] = (uint8_t)~block_signs[k];
            }
            for (int k = 0; k < 2; ++k) {
                int u = 0;
                for (int i = 0; i < 8; ++i)
                    u |= (L[8 * k + i] << 2 * i);
                int gi = S->map[u];
                if (gi < 0)
                    gi = 0; /* cannot happen */
                const int i8 = 2 * ib + k;
                y[ibl].qs[i8] = (uint8_t)(gi & 255);
                y[ibl].qh[i8 / 4] |= (uint8_t)((gi >> 8) << 2 * (i8 % 4));
                y[ibl].qs[QE_QK_K / 8 + i8] = block_signs[k];
            }
            scales[ib] = scale;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale)
            continue;
        float d = max_scale / 31;
        y[ibl].d = qe_f2h(d * 0.9875f);
        float id = 1 / d;
        for (int ib = 0; ib < QE_QK_K / 16; ++ib) {
            int l = qe_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QE_MAX(0, QE_MIN(15, l));
            if (ib % 2 == 0)
                y[ibl].scales[ib / 2] = (uint8_t)l;
            else
                y[ibl].scales[ib / 2] |= (uint8_t)(l << 4);
        }
    }
    return 0;
}

/* ==================== IQ3_XXS / IQ3_S ================================ */

static int iq3_xxs_from_float(const float *restrict x, void *restrict vy, int64_t n,
                              const float *restrict quant_weights)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ3XXS);
    if (!S)
        return QE_ENOMEM;
    const int kMaxQ = 8;
    qe_block_iq3_xxs *y = vy;
    float scales[QE_QK_K / 32], weight[32], xval[32], waux[32];
    int8_t L[32], Laux[32];
    bool is_on_grid[8], is_on_grid_aux[8];
    uint8_t block_signs[8];
    uint8_t q3[3 * (QE_QK_K / 8)];
    uint32_t scales_and_signs[QE_QK_K / 32];

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        y[ibl].d = qe_f2h(0.f);
        memset(q3, 0, sizeof q3);
        memset(scales_and_signs, 0, sizeof scales_and_signs);
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = 2 * sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            const float *xb = xbl + 32 * ib;
            if (quant_weights) {
                const float *qw = quant_weights + QE_QK_K * ibl + 32 * ib;
                for (int i = 0; i < 32; ++i)
                    weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            } else {
                for (int i = 0; i < 32; ++i)
                    weight[i] = xb[i] * xb[i];
            }
            for (int i = 0; i < 32; ++i)
                waux[i] = sqrtf(weight[i]);
            iq_even_signs(xb, weight, 4, xval, block_signs);
            float max = xval[0];
            for (int i = 1; i < 32; ++i)
                max = QE_MAX(max, xval[i]);
            if (max < GROUP_MAX_EPS_IQ3_XXS) {
                scales[ib] = 0;
                memset(L, 0, 32);
                continue;
            }
            float best = 0;
            float scale = max / (2 * kMaxQ - 1);
            for (int is = -15; is <= 15; ++is) {
                float id = (2 * kMaxQ - 1 + is * 0.2f) / max;
                float this_scale = 1 / id;
                for (int k = 0; k < 8; ++k) {
                    for (int i = 0; i < 4; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                        Laux[4 * k + i] = (int8_t)QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                    }
                    int u = 0;
                    for (int i = 0; i < 4; ++i)
                        u |= (Laux[4 * k + i] << 3 * i);
                    iq_lookup(S, u, xval + 4 * k, waux + 4 * k, this_scale, Laux + 4 * k,
                              &is_on_grid_aux[k]);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < 32; ++i) {
                    float w = weight[i];
                    float q = 2 * Laux[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    for (int i = 0; i < 32; ++i)
                        L[i] = Laux[i];
                    for (int k = 0; k < 8; ++k)
                        is_on_grid[k] = is_on_grid_aux[k];
                }
            }
            /* (as ggml) is_on_grid is only written by an accepted trial;
             * the first trial always passes best = 0, so it is set */
            int n_not_ongrid = 0;
            for (int k = 0; k < 8; ++k)
                if (!is_on_grid[k])
                    ++n_not_ongrid;
            if (n_not_ongrid > 0 && scale > 0) {
                float id = 1 / scale;
                for (int k = 0; k < 8; ++k) {
                    if (is_on_grid[k])
                        continue;
                    int u = 0;
                    for (int i = 0; i < 4; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                        l = QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                        u |= (l << 3 * i);
                    }
                    int gi = iq_lookup(S, u, xval + 4 * k, waux + 4 * k, scale, L + 4 * k, NULL);
                    const int8_t *pg = S->grid + 4 * gi;
                    for (int i = 0; i < 4; ++i)
                        L[4 * k + i] = (int8_t)((pg[i] - 1) / 2);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < 32; ++i) {
                    float w = weight[i];
                    float q = 2 * L[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0)
                    scale = sumqx / sumq2;
            }
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < 4; ++k)
                    block_signs[k] = (~block_signs[k]) & 127;
            }
            for (int k = 0; k < 8; ++k) {
                int u = 0;
                for (int i = 0; i < 4; ++i)
                    u |= (L[4 * k + i] << 3 * i);
                int gi = S->map[u];
                if (gi < 0)
                    gi = 0; /* cannot happen */
                q3[8 * ib + k] = (uint8_t)gi;
            }
            scales_and_signs[ib] = (uint32_t)block_signs[0] | ((uint32_t)block_signs[1] << 7) |
                                   ((uint32_t)block_signs[2] << 14) |
                                   ((uint32_t)block_signs[3] << 21);
            scales[ib] = scale;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale) {
            memset(y[ibl].qs, 0, sizeof y[ibl].qs);
            continue;
        }
        float d = max_scale / 31;
        y[ibl].d = qe_f2h(d * 1.0125f);
        float id = 1 / d;
        for (int ib = 0; ib < QE_QK_K / 32; ++ib) {
            int l = qe_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QE_MAX(0, QE_MIN(15, l));
            scales_and_signs[ib] |= ((uint32_t)l << 28);
        }
        memcpy(y[ibl].qs, q3, QE_QK_K / 4);
        memcpy(y[ibl].qs + QE_QK_K / 4, scales_and_signs, sizeof scales_and_signs);
    }
    return 0;
}

static int iq3_s_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict quant_weights)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ3S);
    if (!S)
        return QE_ENOMEM;
    enum { BS = 32, BS4 = BS / 4, BS8 = BS / 8 };
    const int kMaxQ = 8;
    qe_block_iq3_s *y = vy;
    float scales[QE_QK_K / BS], weight[BS], xval[BS], waux[BS];
    int8_t L[BS], Laux[BS];
    bool is_on_grid[BS4], is_on_grid_aux[BS4];
    uint8_t block_signs[BS8];

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        memset(&y[ibl], 0, sizeof(qe_block_iq3_s));
        y[ibl].d = qe_f2h(0.f);
        uint8_t *qs = y[ibl].qs;
        uint8_t *qh = y[ibl].qh;
        uint8_t *signs = y[ibl].signs;
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = 2 * sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / BS; ++ib) {
            const float *xb = xbl + BS * ib;
            if (quant_weights) {
                const float *qw = quant_weights + QE_QK_K * ibl + BS * ib;
                for (int i = 0; i < BS; ++i)
                    weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            } else {
                for (int i = 0; i < BS; ++i)
                    weight[i] = xb[i] * xb[i];
            }
            for (int i = 0; i < BS; ++i)
                waux[i] = sqrtf(weight[i]);
            for (int k = 0; k < BS8; ++k) {
                uint8_t s = 0;
                for (int i = 0; i < 8; ++i) {
                    if (xb[8 * k + i] >= 0) {
                        xval[8 * k + i] = xb[8 * k + i];
                    } else {
                        xval[8 * k + i] = -xb[8 * k + i];
                        s |= (uint8_t)(1 << i);
                    }
                }
                block_signs[k] = s;
            }
            float max = xval[0];
            for (int i = 1; i < BS; ++i)
                max = QE_MAX(max, xval[i]);
            if (!max) {
                /* (as ggml) qs/signs do not advance past an all-zero
                 * sub-block: the next one is written in its place */
                scales[ib] = 0;
                continue;
            }
            float best = 0;
            float scale = max / (2 * kMaxQ - 1);
            for (int k = 0; k < BS4; ++k)
                is_on_grid[k] = false;
            for (int is = -9; is <= 9; ++is) {
                float id = (2 * kMaxQ - 1 + is * 0.2f) / max;
                float this_scale = 1 / id;
                for (int k = 0; k < BS4; ++k) {
                    for (int i = 0; i < 4; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                        Laux[4 * k + i] = (int8_t)QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                    }
                    int u = 0;
                    for (int i = 0; i < 4; ++i)
                        u |= (Laux[4 * k + i] << 3 * i);
                    iq_lookup(S, u, xval + 4 * k, waux + 4 * k, this_scale, Laux + 4 * k,
                              &is_on_grid_aux[k]);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < BS; ++i) {
                    float w = weight[i];
                    float q = 2 * Laux[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    for (int i = 0; i < BS; ++i)
                        L[i] = Laux[i];
                    for (int k = 0; k < BS4; ++k)
                        is_on_grid[k] = is_on_grid_aux[k];
                }
            }
            int n_not_ongrid = 0;
            for (int k = 0; k < BS4; ++k)
                if (!is_on_grid[k])
                    ++n_not_ongrid;
            if (n_not_ongrid > 0 && scale > 0) {
                float id = 1 / scale;
                for (int k = 0; k < BS4; ++k) { /* (as ggml) every group, on grid or not */
                    int u = 0;
                    for (int i = 0; i < 4; ++i) {
                        int l = qe_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                        l = QE_MAX(0, QE_MIN(kMaxQ - 1, l));
                        u |= (l << 3 * i);
                    }
                    int gi = iq_lookup(S, u, xval + 4 * k, waux + 4 * k, scale, L + 4 * k, NULL);
                    const int8_t *pg = S->grid + 4 * gi;
                    for (int i = 0; i < 4; ++i)
                        L[4 * k + i] = (int8_t)((pg[i] - 1) / 2);
                }
                float sumqx = 0, sumq2 = 0;
                for (int i = 0; i < BS; ++i) {
                    float w = weight[i];
                    float q = 2 * L[i] + 1;
                    sumqx += w * xval[i] * q;
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0)
                    scale = sumqx / sumq2;
            }
            if (scale < 0) {
                scale = -scale;
                for (int k = 0; k < BS8; ++k)
                    block_signs[k] = (uint8_t)~block_signs[k];
            }
            for (int k = 0; k < BS4; ++k) {
                int u = 0;
                for (int i = 0; i < 4; ++i)
                    u |= (L[4 * k + i] << 3 * i);
                int gi = S->map[u];
                if (gi < 0)
                    gi = 0; /* cannot happen */
                qs[k] = (uint8_t)(gi & 255);
                qh[(ib * BS4 + k) / 8] |= (uint8_t)((gi >> 8) << ((ib * BS4 + k) % 8));
            }
            qs += BS4;
            for (int k = 0; k < BS8; ++k)
                signs[k] = block_signs[k];
            signs += BS8;
            scales[ib] = scale;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale)
            continue;
        float d = max_scale / 31;
        y[ibl].d = qe_f2h(d * 1.033f);
        float id = 1 / d;
        for (int ib = 0; ib < QE_QK_K / BS; ib += 2) {
            int l1 = qe_nearest_int(0.5f * (id * scales[ib + 0] - 1));
            l1 = QE_MAX(0, QE_MIN(15, l1));
            int l2 = qe_nearest_int(0.5f * (id * scales[ib + 1] - 1));
            l2 = QE_MAX(0, QE_MIN(15, l2));
            y[ibl].scales[ib / 2] = (uint8_t)(l1 | (l2 << 4));
        }
    }
    return 0;
}

/* ==================== IQ1_S / IQ1_M ================================== */

/* One (value, column) pair; the layout of ggml's float pairs[2*j] /
 * int idx[2*j] so that libc qsort sees the same elements. */
typedef struct iq1_pair {
    float v;
    int i;
} iq1_pair;

static int iq1_sort_helper(const void *left, const void *right)
{
    const float *l = left;
    const float *r = right;
    return *l < *r ? -1 : *l > *r ? 1 : 0;
}

/* Grid point among the neighbours minimising the weighted distance of
 * scale*xg[level] to xval (ggml's iq1_find_best_neighbour2). */
static int iq1_find_best_neighbour2(const qe_iq_search *S, const uint16_t *restrict nbrs,
                                    const float *restrict xval, const float *restrict weight,
                                    float scale, const float *restrict xg, int8_t *restrict L)
{
    int num = nbrs[0];
    float best_score = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= num; ++j) {
        const int8_t *pg = S->grid + 8 * nbrs[j];
        float d2 = 0;
        for (int i = 0; i < 8; ++i) {
            float q = xg[(pg[i] - 1) / 2];
            float w = weight[i];
            float diff = scale * q - xval[i];
            d2 += w * diff * diff;
        }
        if (d2 < best_score) {
            best_score = d2;
            grid_index = nbrs[j];
        }
    }
    if (grid_index < 0) {
        /* every neighbour scored NaN: ggml then scans the whole grid (with
         * an out-of-range xval index); qeval scans it correctly */
        for (int g = 0; g < S->grid_size; ++g) {
            const int8_t *pg = S->grid + 8 * g;
            float d2 = 0;
            for (int j = 0; j < 8; ++j) {
                float w = weight[j];
                float q = xg[(pg[j] - 1) / 2];
                float diff = scale * q - xval[j];
                d2 += w * diff * diff;
            }
            if (d2 < best_score) {
                best_score = d2;
                grid_index = g;
            }
        }
        if (grid_index < 0)
            grid_index = nbrs[1];
    }
    const int8_t *pg = S->grid + 8 * grid_index;
    for (int i = 0; i < 8; ++i)
        L[i] = (int8_t)((pg[i] - 1) / 2);
    return grid_index;
}

static int iq1_s_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict quant_weights)
{
    if (!quant_weights)
        return QE_EINVAL;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ1S);
    if (!S)
        return QE_ENOMEM;
    enum { BS = 32 };
    qe_block_iq1_s *y = vy;
    const float x_p[3] = {-1 + QE_IQ1S_DELTA, QE_IQ1S_DELTA, 1 + QE_IQ1S_DELTA};
    const float x_m[3] = {-1 - QE_IQ1S_DELTA, -QE_IQ1S_DELTA, 1 - QE_IQ1S_DELTA};
    float scales[QE_QK_K / BS], weight[BS], sumx[BS + 1], sumw[BS + 1];
    iq1_pair pairs[BS];
    int8_t L[BS];
    uint16_t index[BS / 8];
    /* ggml keeps a zero sub-block's shift from whatever ran before (an
     * uninitialised buffer); qeval starts every row at 0 */
    int8_t shifts[QE_QK_K / BS] = {0};

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        y[ibl].d = qe_f2h(0.f);
        memset(y[ibl].qs, 0, QE_QK_K / 8);
        uint16_t qh[QE_QK_K / BS] = {0};
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = 2 * sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / BS; ++ib) {
            const float *xb = xbl + BS * ib;
            const float *qw = quant_weights + QE_QK_K * ibl + BS * ib;
            for (int i = 0; i < BS; ++i)
                weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            float max = fabsf(xb[0]);
            for (int i = 1; i < BS; ++i)
                max = QE_MAX(max, fabsf(xb[i]));
            if (max < GROUP_MAX_EPS_IQ1_S) {
                scales[ib] = 0;
                memset(L, 1, BS);
                continue;
            }
            /* exhaustive search of the two cut points of the sorted values
             * into -1 / 0 / +1, with prefix sums */
            for (int j = 0; j < BS; ++j) {
                pairs[j].v = xb[j];
                pairs[j].i = j;
            }
            qsort(pairs, BS, sizeof pairs[0], iq1_sort_helper);
            sumx[0] = sumw[0] = 0;
            for (int j = 0; j < BS; ++j) {
                int i = pairs[j].i;
                sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                sumw[j + 1] = sumw[j] + weight[i];
            }
            float best_score = -FLT_MIN, scale = max;
            int besti1 = -1, besti2 = -1, best_shift = 0;
            for (int i1 = 0; i1 <= BS; ++i1) {
                for (int i2 = i1; i2 <= BS; ++i2) {
                    float sumqx = (sumx[i1] - sumx[0]) * x_p[0] + (sumx[i2] - sumx[i1]) * x_p[1] +
                                  (sumx[BS] - sumx[i2]) * x_p[2];
                    float sumq2 = (sumw[i1] - sumw[0]) * x_p[0] * x_p[0] +
                                  (sumw[i2] - sumw[i1]) * x_p[1] * x_p[1] +
                                  (sumw[BS] - sumw[i2]) * x_p[2] * x_p[2];
                    if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        besti1 = i1;
                        besti2 = i2;
                        best_shift = 1;
                    }
                    sumqx = (sumx[i1] - sumx[0]) * x_m[0] + (sumx[i2] - sumx[i1]) * x_m[1] +
                            (sumx[BS] - sumx[i2]) * x_m[2];
                    sumq2 = (sumw[i1] - sumw[0]) * x_m[0] * x_m[0] +
                            (sumw[i2] - sumw[i1]) * x_m[1] * x_m[1] +
                            (sumw[BS] - sumw[i2]) * x_m[2] * x_m[2];
                    if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        besti1 = i1;
                        besti2 = i2;
                        best_shift = -1;
                    }
                }
            }
            if (besti1 < 0) { /* all weights zero (ggml asserts): middle level */
                besti1 = 0;
                besti2 = BS;
                best_shift = 1;
                scale = 0;
            }
            for (int j = 0; j < besti1; ++j)
                L[pairs[j].i] = 0;
            for (int j = besti1; j < besti2; ++j)
                L[pairs[j].i] = 1;
            for (int j = besti2; j < BS; ++j)
                L[pairs[j].i] = 2;
            if (scale < 0) {
                for (int j = 0; j < BS; ++j)
                    L[j] = (int8_t)(2 - L[j]);
                scale = -scale;
                best_shift = -best_shift;
            }
            bool all_on_grid = true;
            const float *xx = best_shift == 1 ? x_p : x_m;
            for (int k = 0; k < BS / 8; ++k) {
                int u = 0;
                for (int j = 0; j < 8; ++j)
                    u |= (L[8 * k + j] << 2 * j);
                int gi = S->map[u];
                if (gi < 0) {
                    all_on_grid = false;
                    gi = iq1_find_best_neighbour2(S, S->neighbours - S->map[u] - 1, xb + 8 * k,
                                                  weight + 8 * k, scale, xx, L + 8 * k);
                }
                index[k] = (uint16_t)gi;
            }
            if (!all_on_grid) {
                float sumqx = 0, sumq2 = 0;
                for (int k = 0; k < BS / 8; ++k) {
                    const int8_t *pg = S->grid + 8 * index[k];
                    for (int j = 0; j < 8; ++j) {
                        float w = weight[8 * k + j];
                        float q = xx[(pg[j] - 1) / 2];
                        sumqx += w * q * xb[8 * k + j];
                        sumq2 += w * q * q;
                    }
                }
                if (sumqx > 0 && sumq2 > 0)
                    scale = sumqx / sumq2;
            }
            uint16_t h = 0;
            for (int k = 0; k < BS / 8; ++k) {
                y[ibl].qs[(BS / 8) * ib + k] = (uint8_t)(index[k] & 255);
                h |= (uint16_t)((index[k] >> 8) << 3 * k);
            }
            qh[ib] = h;
            scales[ib] = scale;
            shifts[ib] = (int8_t)best_shift;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (max_scale) {
            float d = max_scale / 15;
            y[ibl].d = qe_f2h(d * 1.125f);
            float id = 1 / d;
            for (int ib = 0; ib < QE_QK_K / BS; ++ib) {
                int l = qe_nearest_int(0.5f * (id * scales[ib] - 1));
                l = QE_MAX(0, QE_MIN(7, l));
                if (shifts[ib] == -1)
                    l |= 8;
                qh[ib] |= (uint16_t)(l << 12);
            }
        }
        memcpy(y[ibl].qh, qh, sizeof qh);
    }
    return 0;
}

static int iq1_m_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict quant_weights)
{
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    const qe_iq_search *S = qe_iq_search_get(QE_IQS_IQ1S);
    if (!S)
        return QE_ENOMEM;
    enum { BS = 16 };
    qe_block_iq1_m *y = vy;
    const float x_p[3] = {-1 + QE_IQ1M_DELTA, QE_IQ1M_DELTA, 1 + QE_IQ1M_DELTA};
    const float x_m[3] = {-1 - QE_IQ1M_DELTA, -QE_IQ1M_DELTA, 1 - QE_IQ1M_DELTA};
    static const uint8_t masks[4] = {0x00, 0x80, 0x08, 0x88};
    float scales[QE_QK_K / BS], weight[BS], sumqx[4], sumq2[4];
    iq1_pair pairs[BS];
    int8_t L[BS];
    uint16_t index[BS / 8];
    int8_t shifts[QE_QK_K / BS] = {0}; /* see iq1_s_from_float */
    const float *xx;

    for (int64_t ibl = 0; ibl < n / QE_QK_K; ++ibl) {
        memset(y[ibl].qs, 0, QE_QK_K / 8);
        memset(y[ibl].qh, 0, QE_QK_K / 16);
        memset(y[ibl].scales, 0, QE_QK_K / 32);
        float max_scale = 0;
        const float *xbl = x + QE_QK_K * ibl;
        float sumx2 = 0;
        for (int i = 0; i < QE_QK_K; ++i)
            sumx2 += xbl[i] * xbl[i];
        float sigma2 = 2 * sumx2 / QE_QK_K;

        for (int ib = 0; ib < QE_QK_K / BS; ++ib) {
            const float *xb = xbl + BS * ib;
            if (quant_weights) {
                const float *qw = quant_weights + QE_QK_K * ibl + BS * ib;
                for (int i = 0; i < BS; ++i)
                    weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            } else {
                for (int i = 0; i < BS; ++i)
                    weight[i] = xb[i] * xb[i];
            }
            float max = fabsf(xb[0]);
            for (int i = 1; i < BS; ++i)
                max = QE_MAX(max, fabsf(xb[i]));
            if (max < GROUP_MAX_EPS_IQ1_M) {
                scales[ib] = 0;
                memset(L, 1, BS);
                continue;
            }
            for (int j = 0; j < BS; ++j) {
                pairs[j].v = xb[j];
                pairs[j].i = j;
            }
            qsort(pairs, BS, sizeof pairs[0], iq1_sort_helper);
            float best_score = -FLT_MIN, scale = max;
            int besti1 = -1, besti2 = -1, best_k = -1;
            /* k: shift of the first / second group of 8: 0 ++, 1 +-, 2 -+, 3 -- */
            /* ggml sums, for every cut (i1, i2), the terms of all 16 sorted
             * values from zero in order j = 0..15 (value level v = 0 below
             * i1, 1 below i2, else 2).  The same additions in the same
             * order: each term computed once (tq[v][j]: 4 sumqx, 4 sumq2
             * terms), the prefix j < i2 carried across i2 (and j < i1
             * across i1), only the tail j >= i2 summed per cut. */
            float tq[3][BS][8];
            for (int v = 0; v < 3; ++v)
                for (int j = 0; j < BS; ++j) {
                    const int i = pairs[j].i;
                    const float p = x_p[v], m = x_m[v];
                    const float q1 = i < BS / 2 ? p : m; /* k = 1 */
                    const float q2 = i < BS / 2 ? m : p; /* k = 2 */
                    tq[v][j][0] = weight[i] * p * xb[i];
                    tq[v][j][1] = weight[i] * q1 * xb[i];
                    tq[v][j][2] = weight[i] * q2 * xb[i];
                    tq[v][j][3] = weight[i] * m * xb[i];
                    tq[v][j][4] = weight[i] * p * p;
                    tq[v][j][5] = weight[i] * q1 * q1;
                    tq[v][j][6] = weight[i] * q2 * q2;
                    tq[v][j][7] = weight[i] * m * m;
                }
            float pre0[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i1 = 0; i1 <= BS; ++i1) {
                float pre1[8];
                memcpy(pre1, pre0, sizeof pre1);
                for (int i2 = i1; i2 <= BS; ++i2) {
                    float acc[8];
                    memcpy(acc, pre1, sizeof acc);
                    for (int j = i2; j < BS; ++j)
                        for (int t = 0; t < 8; ++t)
                            acc[t] += tq[2][j][t];
                    memcpy(sumqx, acc, sizeof sumqx);
                    memcpy(sumq2, acc + 4, sizeof sumq2);
                    for (int k = 0; k < 4; ++k) {
                        if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
                            scale = sumqx[k] / sumq2[k];
                            best_score = scale * sumqx[k];
                            besti1 = i1;
                            besti2 = i2;
                            best_k = k;
                        }
                    }
                    if (i2 < BS)
                        for (int t = 0; t < 8; ++t)
                            pre1[t] += tq[1][i2][t];
                }
                if (i1 < BS)
                    for (int t = 0; t < 8; ++t)
                        pre0[t] += tq[0][i1][t];
            }
            if (besti1 < 0) { /* all weights zero (ggml asserts) */
                besti1 = 0;
                besti2 = BS;
                best_k = 0;
                scale = 0;
            }
            for (int j = 0; j < besti1; ++j)
                L[pairs[j].i] = 0;
            for (int j = besti1; j < besti2; ++j)
                L[pairs[j].i] = 1;
            for (int j = besti2; j < BS; ++j)
                L[pairs[j].i] = 2;
            if (scale < 0) {
                for (int j = 0; j < BS; ++j)
                    L[j] = (int8_t)(2 - L[j]);
                scale = -scale;
                best_k = best_k == 0 ? 3 : best_k == 1 ? 2 : best_k == 2 ? 1 : 0;
            }
            bool all_on_grid = true;
            for (int k = 0; k < BS / 8; ++k) {
                if (k == 0)
                    xx = best_k < 2 ? x_p : x_m;
                else
                    xx = best_k % 2 == 0 ? x_p : x_m;
                int u = 0;
                for (int j = 0; j < 8; ++j)
                    u |= (L[8 * k + j] << 2 * j);
                int gi = S->map[u];
                if (gi < 0) {
                    all_on_grid = false;
                    gi = iq1_find_best_neighbour2(S, S->neighbours - S->map[u] - 1, xb + 8 * k,
                                                  weight + 8 * k, scale, xx, L + 8 * k);
                }
                index[k] = (uint16_t)gi;
            }
            if (!all_on_grid) {
                float sumqx_f = 0, sumq2_f = 0;
                for (int k = 0; k < BS / 8; ++k) {
                    if (k == 0)
                        xx = best_k < 2 ? x_p : x_m;
                    else
                        xx = best_k % 2 == 0 ? x_p : x_m;
                    const int8_t *pg = S->grid + 8 * index[k];
                    for (int j = 0; j < 8; ++j) {
                        float w = weight[8 * k + j];
                        float q = xx[(pg[j] - 1) / 2];
                        sumqx_f += w * q * xb[8 * k + j];
                        sumq2_f += w * q * q;
                    }
                }
                if (sumqx_f > 0 && sumq2_f > 0)
                    scale = sumqx_f / sumq2_f;
            }
            y[ibl].qs[2 * ib + 0] = (uint8_t)(index[0] & 255);
            y[ibl].qs[2 * ib + 1] = (uint8_t)(index[1] & 255);
            y[ibl].qh[ib] = (uint8_t)((index[0] >> 8) | ((index[1] >> 8) << 4));
            scales[ib] = scale;
            shifts[ib] = (int8_t)best_k;
            max_scale = QE_MAX(max_scale, scale);
        }
        if (!max_scale)
            continue;

        uint16_t sc[4] = {0, 0, 0, 0};
        float d = max_scale / 15;
        float id = 1 / d;
        float sumqx_f = 0, sumq2_f = 0;
        for (int ib = 0; ib < QE_QK_K / BS; ++ib) {
            int l = qe_nearest_int(0.5f * (id * scales[ib + 0] - 1));
            l = QE_MAX(0, QE_MIN(7, l));
            sc[ib / 4] |= (uint16_t)(l << 3 * (ib % 4));
            y[ibl].qh[ib] |= masks[shifts[ib]];
            const float *xb = xbl + BS * ib;
            if (quant_weights) {
                const float *qw = quant_weights + QE_QK_K * ibl + BS * ib;
                for (int i = 0; i < BS; ++i)
                    weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
            } else {
                for (int i = 0; i < BS; ++i)
                    weight[i] = xb[i] * xb[i];
            }
            for (int k = 0; k < BS / 8; ++k) {
                if (k == 0)
                    xx = shifts[ib] < 2 ? x_p : x_m;
                else
                    xx = shifts[ib] % 2 == 0 ? x_p : x_m;
                const int8_t *pg =
                    S->grid + 8 * (y[ibl].qs[2 * ib + k] + ((y[ibl].qh[ib] << (8 - 4 * k)) & 0x700));
                for (int j = 0; j < 8; ++j) {
                    float w = weight[8 * k + j];
                    float q = xx[(pg[j] - 1) / 2] * (2 * l + 1);
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
        }
        if (sumq2_f > 0)
            d = sumqx_f / sumq2_f;
        uint16_t s = qe_f2h(d * 1.1125f);
        sc[0] |= (uint16_t)((s & 0x000f) << 12);
        sc[1] |= (uint16_t)((s & 0x00f0) << 8);
        sc[2] |= (uint16_t)((s & 0x0f00) << 4);
        sc[3] |= (uint16_t)((s & 0xf000) << 0);
        memcpy(y[ibl].scales, sc, sizeof sc);
    }
    return 0;
}

/* ==================== ternary: TQ1_0, TQ2_0 ========================== */

static void tq1_0_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq1_0 *x = vx;
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    for (int64_t i = 0; i < k / QE_QK_K; ++i) {
        const float d = qe_h2f(x[i].d);
        for (size_t j = 0; j < 32; j += 32)
            for (size_t n = 0; n < 5; ++n)
                for (size_t m = 0; m < 32; ++m) {
                    uint8_t q = (uint8_t)(x[i].qs[j + m] * pow3[n]);
                    int16_t xi = (int16_t)(((uint16_t)q * 3) >> 8);
                    *y++ = (float)(xi - 1) * d;
                }
        for (size_t j = 32; j < 48; j += 16)
            for (size_t n = 0; n < 5; ++n)
                for (size_t m = 0; m < 16; ++m) {
                    uint8_t q = (uint8_t)(x[i].qs[j + m] * pow3[n]);
                    int16_t xi = (int16_t)(((uint16_t)q * 3) >> 8);
                    *y++ = (float)(xi - 1) * d;
                }
        for (size_t n = 0; n < 4; ++n)
            for (size_t j = 0; j < 4; ++j) {
                uint8_t q = (uint8_t)(x[i].qh[j] * pow3[n]);
                int16_t xi = (int16_t)(((uint16_t)q * 3) >> 8);
                *y++ = (float)(xi - 1) * d;
            }
    }
}

static void tq2_0_to_float(const void *restrict vx, float *restrict y, int64_t k)
{
    const qe_block_tq2_0 *x = vx;
    for (int64_t i = 0; i < k / QE_QK_K; ++i) {
        const float d = qe_h2f(x[i].d);
        for (size_t j = 0; j < 64; j += 32)
            for (size_t l = 0; l < 4; ++l)
                for (size_t m = 0; m < 32; ++m) {
                    int8_t q = (int8_t)((x[i].qs[j + m] >> (l * 2)) & 3);
                    *y++ = (float)(q - 1) * d;
                }
    }
}

/* Both ternary quantizers: d = max|x| per block, q = lroundf(x/d) in
 * {-1, 0, 1}; importance weights are ignored (as ggml). */
static int tq1_0_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_tq1_0 *y = vy;
    for (int64_t i = 0; i < n / QE_QK_K; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QE_QK_K; j++)
            amax = QE_MAX(amax, fabsf(x[j]));
        const float d = amax;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        /* 5 trits per byte: 32 bytes over 160 values, then 16 over 80 */
        for (size_t m = 0; m < 32; ++m) {
            uint8_t q = 0;
            for (size_t k = 0; k < 5; ++k) {
                int xi = (int)lroundf(x[m + k * 32] * id) + 1;
                q = (uint8_t)(q * 3 + xi);
            }
            y[i].qs[m] = (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
        }
        x += 5 * 32;
        for (size_t m = 0; m < 16; ++m) {
            uint8_t q = 0;
            for (size_t k = 0; k < 5; ++k) {
                int xi = (int)lroundf(x[m + k * 16] * id) + 1;
                q = (uint8_t)(q * 3 + xi);
            }
            y[i].qs[32 + m] = (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
        }
        x += 5 * 16;
        /* 4 trits per byte over the last 16 values */
        for (size_t j = 0; j < 4; ++j) {
            uint8_t q = 0;
            for (size_t m = 0; m < 4; ++m) {
                int xi = (int)lroundf(x[j + m * 4] * id) + 1;
                q = (uint8_t)(q * 3 + xi);
            }
            q = (uint8_t)(q * 3); /* the first value in the most significant trit */
            y[i].qh[j] = (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
        }
        x += 16;
    }
    return 0;
}

static int tq2_0_from_float(const float *restrict x, void *restrict vy, int64_t n,
                            const float *restrict imatrix)
{
    (void)imatrix;
    if (!qe_all_finite(x, n))
        return QE_ENAN;
    qe_block_tq2_0 *y = vy;
    for (int64_t i = 0; i < n / QE_QK_K; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QE_QK_K; j++)
            amax = QE_MAX(amax, fabsf(x[j]));
        const float d = amax;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qe_f2h(d);
        for (size_t j = 0; j < 64; j += 32) {
            for (size_t m = 0; m < 32; ++m) {
                uint8_t q = 0;
                for (size_t k = 0; k < 4; ++k) {
                    int xi = (int)lroundf(x[m + k * 32] * id) + 1;
                    q = (uint8_t)(q + ((xi & 3) << (2 * k)));
                }
                y[i].qs[j + m] = q;
            }
            x += 4 * 32;
        }
    }
    return 0;
}

/* ==================== reference dots and registration ================ */

QE_DEFINE_VEC_DOT_REF(iq2_xxs_vec_dot, qe_block_iq2_xxs, QE_QK_K, iq2_xxs_to_float)
QE_DEFINE_VEC_DOT_REF(iq2_xs_vec_dot, qe_block_iq2_xs, QE_QK_K, iq2_xs_to_float)
QE_DEFINE_VEC_DOT_REF(iq2_s_vec_dot, qe_block_iq2_s, QE_QK_K, iq2_s_to_float)
QE_DEFINE_VEC_DOT_REF(iq3_xxs_vec_dot, qe_block_iq3_xxs, QE_QK_K, iq3_xxs_to_float)
QE_DEFINE_VEC_DOT_REF(iq3_s_vec_dot, qe_block_iq3_s, QE_QK_K, iq3_s_to_float)
QE_DEFINE_VEC_DOT_REF(iq1_s_vec_dot, qe_block_iq1_s, QE_QK_K, iq1_s_to_float)
QE_DEFINE_VEC_DOT_REF(iq1_m_vec_dot, qe_block_iq1_m, QE_QK_K, iq1_m_to_float)
QE_DEFINE_VEC_DOT_REF(tq1_0_vec_dot, qe_block_tq1_0, QE_QK_K, tq1_0_to_float)
QE_DEFINE_VEC_DOT_REF(tq2_0_vec_dot, qe_block_tq2_0, QE_QK_K, tq2_0_to_float)

void qe_register_iq_low(qe_type_traits *tab)
{
    qe_iq_grids_init();
#define REG(T, pfx)                                                                       \
    do {                                                                                  \
        tab[T].to_float_ref = tab[T].to_float = pfx##_to_float;                           \
        tab[T].from_float_ref = pfx##_from_float;                                         \
        tab[T].vec_dot_ref = tab[T].vec_dot = pfx##_vec_dot;                              \
    } while (0)
    REG(QE_TYPE_IQ2_XXS, iq2_xxs);
    REG(QE_TYPE_IQ2_XS, iq2_xs);
    REG(QE_TYPE_IQ2_S, iq2_s);
    REG(QE_TYPE_IQ3_XXS, iq3_xxs);
    REG(QE_TYPE_IQ3_S, iq3_s);
    REG(QE_TYPE_IQ1_S, iq1_s);
    REG(QE_TYPE_IQ1_M, iq1_m);
    REG(QE_TYPE_TQ1_0, tq1_0);
    REG(QE_TYPE_TQ2_0, tq2_0);
#undef REG
}
