/*
 * test_quant.c: quant/ (the traits table, every format).
 *
 * Independent references used here:
 *  - llama.cpp b4747's own output files (../shared/testdata/llamacpp):
 *    re-quantizing the F32 source tensors with our from_float_ref must
 *    reproduce the bytes llama-quantize wrote, block for block (with the
 *    shipped imatrix for the -imat files); the fraction of identical
 *    blocks per type is printed and must be 1.
 *  - the F32 source itself: every dequantized tensor must lie within the
 *    type's relative-RMSE bound of it.
 *  - hand-computed blocks (Q8_0, Q4_0, Q4_K scale packing).
 *  - the scalar reference vs the SIMD kernels: dequantize bitwise equal,
 *    vec_dot within 1e-5 of sum|x*y|.
 *
 * The GGUF/imatrix readers below are deliberately minimal and test-only
 * (harness/model/gguf.c is another module with its own tests).
 */
#include <stdint.h>

#include "../harness/infer/infer.h"
#include "../harness/util/common.h"
#include "../quant/dot_int8.h"
#include "../quant/quant.h"
#include "../quant/quant_internal.h"
#include "test.h"

/* ================= minimal GGUF reader (test-only) =================== */

typedef struct {
    char name[128];
    int64_t ne[4];
    int type;
    const uint8_t *data;
    size_t nbytes;
} mini_tensor;

typedef struct {
    qe_map map;
    int n;
    mini_tensor *t;
} mini_gguf;

typedef struct {
    const uint8_t *p, *end;
    int bad;
} rd;

static uint64_t rd_u(rd *r, int nb)
{
    if (r->bad || r->end - r->p < nb) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, r->p, (size_t)nb);
    r->p += nb;
    return v;
}

static void rd_skip(rd *r, uint64_t nb)
{
    if (r->bad || (uint64_t)(r->end - r->p) < nb) {
        r->bad = 1;
        return;
    }
    r->p += nb;
}

static void rd_skip_value(rd *r, uint32_t vt, int depth)
{
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (vt > 12 || depth > 4) {
        r->bad = 1;
        return;
    }
    if (vt == 8) {
        rd_skip(r, rd_u(r, 8));
    } else if (vt == 9) {
        uint32_t et = (uint32_t)rd_u(r, 4);
        uint64_t n = rd_u(r, 8);
        if (et > 12) {
            r->bad = 1;
            return;
        }
        if (et != 8 && et != 9) {
            if (n > (uint64_t)(r->end - r->p) / (uint64_t)sz[et])
                r->bad = 1;
            else
                rd_skip(r, n * (uint64_t)sz[et]);
        } else {
            for (uint64_t i = 0; i < n && !r->bad; i++)
                rd_skip_value(r, et, depth + 1);
        }
    } else {
        rd_skip(r, (uint64_t)sz[vt]);
    }
}

static void mini_close(mini_gguf *g)
{
    free(g->t);
    qe_map_close(&g->map);
    memset(g, 0, sizeof *g);
}

static int mini_open(mini_gguf *g, const char *path)
{
    memset(g, 0, sizeof *g);
    qe_err e = {0};
    if (qe_map_open(&g->map, path, &e))
        return -1;
    rd r = {g->map.data, g->map.data + g->map.nbytes, 0};
    if (rd_u(&r, 4) != 0x46554747u) /* "GGUF" */
        goto bad;
    rd_u(&r, 4);
    uint64_t n_t = rd_u(&r, 8), n_kv = rd_u(&r, 8);
    if (n_t > 100000 || n_kv > 100000)
        goto bad;
    uint64_t align = 32;
    for (uint64_t i = 0; i < n_kv && !r.bad; i++) {
        uint64_t kl = rd_u(&r, 8);
        const uint8_t *key = r.p;
        rd_skip(&r, kl);
        uint32_t vt = (uint32_t)rd_u(&r, 4);
        if (!r.bad && kl == 17 && !memcmp(key, "general.alignment", 17) && vt == 4) {
            align = rd_u(&r, 4);
            if (!align || (align & (align - 1)))
                goto bad;
        } else {
            rd_skip_value(&r, vt, 0);
        }
    }
    g->t = calloc(n_t ? n_t : 1, sizeof *g->t);
    if (!g->t)
        goto bad;
    g->n = (int)n_t;
    uint64_t *offs = calloc(n_t ? n_t : 1, sizeof *offs);
    if (!offs)
        goto bad;
    for (uint64_t i = 0; i < n_t && !r.bad; i++) {
        mini_tensor *t = &g->t[i];
        uint64_t nl = rd_u(&r, 8);
        if (nl >= sizeof t->name || (uint64_t)(r.end - r.p) < nl) {
            r.bad = 1;
            break;
        }
        memcpy(t->name, r.p, nl);
        r.p += nl;
        uint32_t nd = (uint32_t)rd_u(&r, 4);
        if (nd < 1 || nd > 4) {
            r.bad = 1;
            break;
        }
        for (int d = 0; d < 4; d++)
            t->ne[d] = d < (int)nd ? (int64_t)rd_u(&r, 8) : 1;
        t->type = (int)rd_u(&r, 4);
        offs[i] = rd_u(&r, 8);
    }
    if (r.bad) {
        free(offs);
        goto bad;
    }
    uint64_t pos = (uint64_t)(r.p - g->map.data);
    uint64_t data_off = (pos + align - 1) / align * align;
    for (int i = 0; i < g->n; i++) {
        mini_tensor *t = &g->t[i];
        int64_t nel = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        size_t rb = qe_type_row_nbytes(t->type, t->ne[0]);
        t->nbytes = rb * (size_t)(nel / t->ne[0]);
        if (!rb || data_off + offs[i] + t->nbytes > g->map.nbytes) {
            free(offs);
            goto bad;
        }
        t->data = g->map.data + data_off + offs[i];
    }
    free(offs);
    return 0;
bad:
    mini_close(g);
    return -1;
}

static const mini_tensor *mini_find(const mini_gguf *g, const char *name)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->t[i].name, name))
            return &g->t[i];
    return NULL;
}

/* ================= legacy imatrix .dat reader (test-only) ============ */

typedef struct {
    char name[128];
    int nval;
    float *val; /* mean x^2 per column (stored value / ncall) */
} imat_entry;

typedef struct {
    int n;
    imat_entry e[64];
} imat;

static void imat_free(imat *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->e[i].val);
    m->n = 0;
}

static int imat_load(imat *m, const char *path)
{
    memset(m, 0, sizeof *m);
    char *buf;
    size_t nb;
    qe_err e = {0};
    if (qe_read_file(path, &buf, &nb, &e))
        return -1;
    rd r = {(const uint8_t *)buf, (const uint8_t *)buf + nb, 0};
    int32_t n = (int32_t)rd_u(&r, 4);
    if (n < 0 || n > 64)
        r.bad = 1;
    for (int i = 0; i < n && !r.bad; i++) {
        imat_entry *en = &m->e[i];
        int32_t len = (int32_t)rd_u(&r, 4);
        if (len < 0 || len >= (int)sizeof en->name || r.end - r.p < len) {
            r.bad = 1;
            break;
        }
        memcpy(en->name, r.p, (size_t)len);
        r.p += len;
        int32_t ncall = (int32_t)rd_u(&r, 4);
        int32_t nval = (int32_t)rd_u(&r, 4);
        if (nval <= 0 || (r.end - r.p) / 4 < nval) {
            r.bad = 1;
            break;
        }
        en->nval = nval;
        en->val = malloc((size_t)nval * sizeof(float));
        if (!en->val) {
            r.bad = 1;
            break;
        }
        m->n = i + 1;
        memcpy(en->val, r.p, (size_t)nval * 4);
        r.p += (size_t)nval * 4;
        if (ncall > 0)
            for (int j = 0; j < nval; j++)
                en->val[j] /= (float)ncall; /* as llama-quantize's load_imatrix */
    }
    free(buf);
    if (r.bad) {
        imat_free(m);
        return -1;
    }
    return 0;
}

static const float *imat_find(const imat *m, const char *name, int64_t n)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->e[i].name, name) && m->e[i].nval == n)
            return m->e[i].val;
    return NULL;
}

/* ================= helpers ========================================== */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rng_uniform(void) { return (rng_u32() + 0.5f) / 4294967296.0f; }
static float rng_normal(void)
{
    float u = rng_uniform(), v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Types with kernels, and the relative-RMSE bounds (rmse / rms(x)) they
 * must meet on Gaussian data and on the rand-llama-256 weights (Student-t,
 * heavier tails).  Bounds are ~1.5x the error of a uniform quantizer with
 * the type's step at the data's typical block range; measured values are
 * printed. */
typedef struct {
    int type;
    double rel_rmse_bound;
} type_case;

static const type_case k_cases[] = {
    {QE_TYPE_F32, 1e-7},   {QE_TYPE_F16, 1e-3},   {QE_TYPE_BF16, 5e-3},  {QE_TYPE_Q8_0, 0.01},
    {QE_TYPE_Q8_1, 0.01},  {QE_TYPE_Q8_K, 0.01},  {QE_TYPE_Q6_K, 0.03},  {QE_TYPE_Q5_0, 0.06},
    {QE_TYPE_Q5_1, 0.05},  {QE_TYPE_Q5_K, 0.05},  {QE_TYPE_Q4_0, 0.12},  {QE_TYPE_Q4_1, 0.10},
    {QE_TYPE_Q4_K, 0.10},  {QE_TYPE_IQ4_NL, 0.12}, {QE_TYPE_IQ4_XS, 0.12}, {QE_TYPE_Q3_K, 0.22},
    {QE_TYPE_Q2_K, 0.45},
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

static double case_bound(int type)
{
    for (int i = 0; i < N_CASES; i++)
        if (k_cases[i].type == type)
            return k_cases[i].rel_rmse_bound;
    return 0;
}

static double rel_rmse(const float *a, const float *ref, int64_t n)
{
    double se = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        se += d * d;
        ss += (double)ref[i] * ref[i];
    }
    return ss > 0 ? sqrt(se / ss) : sqrt(se / (double)n);
}

/* ================= tests: table and hand-computed blocks ============= */

TEST(table_geometry)
{
    CHECK(qe_type_bpw(QE_TYPE_Q4_K) == 4.5);
    CHECK(qe_type_bpw(QE_TYPE_Q6_K) == 6.5625);
    CHECK(qe_type_bpw(QE_TYPE_Q2_K) == 2.625);
    CHECK(qe_type_bpw(QE_TYPE_IQ4_XS) == 4.25);
    CHECK(qe_type_from_name("Q4_K") == QE_TYPE_Q4_K);
    CHECK(qe_type_from_name("iq4_nl") == QE_TYPE_IQ4_NL);
    CHECK(qe_type_from_name("q4_k_m") == -1);
    CHECK(qe_type_get(4) == NULL && qe_type_get(QE_TYPE_COUNT) == NULL && qe_type_get(-1) == NULL);
    const char *lvl = qe_quant_simd_level();
    CHECKF(!strcmp(lvl, "ref") || !strcmp(lvl, "avx2") || !strcmp(lvl, "avx512"), "%s", lvl);
    printf("  simd level: %s\n", lvl);
    for (int i = 0; i < N_CASES; i++) {
        const qe_type_traits *tt = qe_type_get(k_cases[i].type);
        REQUIRE(tt != NULL, "type %d", k_cases[i].type);
        CHECKF(tt->to_float_ref && tt->to_float && tt->from_float_ref && tt->vec_dot &&
                   tt->vec_dot_ref,
               "%s lacks kernels", tt->name);
    }
}

TEST(hand_q8_0_block)
{
    /* x = j - 10 for j in 0..31: amax 21, d = 21/127, q = round(x*127/21). */
    float x[32], y[32];
    uint8_t blk[34];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 10);
    const qe_type_traits *tt = qe_type_get(QE_TYPE_Q8_0);
    int rc_q = tt->from_float_ref(x, blk, 32, NULL);
    REQUIRE(rc_q == 0, "quantize");
    uint16_t d;
    memcpy(&d, blk, 2);
    CHECKF(d == qe_fp32_to_fp16(21.0f / 127.0f), "d=0x%04x", d);
    CHECK((int8_t)blk[2 + 0] == -60);  /* -10*127/21 = -60.48 */
    CHECK((int8_t)blk[2 + 31] == 127); /* 21 */
    CHECK((int8_t)blk[2 + 13] == 18);  /* 3*127/21 = 18.14 */
    tt->to_float_ref(blk, y, 32);
    CHECK(y[31] == qe_fp16_to_fp32(d) * 127.0f);
}

TEST(hand_q4_0_block)
{
    /* max |x| is x[5] = -8: d = -8/-8 = 1, q = x + 8 (x integral). */
    float x[32], y[32];
    uint8_t blk[18];
    for (int j = 0; j < 32; j++)
        x[j] = (float)((j % 15) - 7);
    x[5] = -8;
    const qe_type_traits *tt = qe_type_get(QE_TYPE_Q4_0);
    int rc_q = tt->from_float_ref(x, blk, 32, NULL);
    REQUIRE(rc_q == 0, "quantize");
    CHECK(blk[0] == 0x00 && blk[1] == 0x3c); /* fp16 1.0 */
    CHECK((blk[2 + 5] & 0xF) == 0);          /* -8 + 8 */
    CHECK((blk[2 + 0] & 0xF) == 1 && (blk[2 + 0] >> 4) == ((16 % 15) - 7 + 8));
    tt->to_float_ref(blk, y, 32);
    for (int j = 0; j < 32; j++)
        CHECKF(y[j] == x[j], "j=%d %g vs %g", j, y[j], x[j]);
}

TEST(hand_q4_K_scales)
{
    /* Sub-block j holds the constant ramp (l%16) * (j+1) / 15, min 0: the
     * largest scale is sub-block 7 with 8/15 -> d = (8/15)/63, and each
     * sub-block's 6-bit scale must be round(63*(j+1)/8). */
    float x[256], y[256];
    uint8_t blk[144];
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++)
            x[32 * j + l] = (float)(l % 16) * (float)(j + 1) / 15.0f;
    const qe_type_traits *tt = qe_type_get(QE_TYPE_Q4_K);
    int rc_q = tt->from_float_ref(x, blk, 256, NULL);
    REQUIRE(rc_q == 0, "quantize");
    const uint8_t *s = blk + 4;
    for (int j = 0; j < 8; j++) {
        int sc = j < 4 ? (s[j] & 63) : ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        int want = (int)lrint(63.0 * (j + 1) / 8.0);
        CHECKF(sc == want, "sub-block %d scale %d want %d", j, sc, want);
    }
    tt->to_float_ref(blk, y, 256);
    CHECKF(rel_rmse(y, x, 256) < 0.01, "rel rmse %g", rel_rmse(y, x, 256));
}

/* ================= tests: per-row properties ======================== */

TEST(roundtrip_rmse_random)
{
    enum { NB = 5 }; /* odd number of super-blocks per row */
    const int64_t n = 256 * NB;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *imx = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 4 + 64);
    REQUIRE(x && y && q && imx, "alloc");
    for (int64_t i = 0; i < n; i++) {
        x[i] = rng_normal() * 0.05f;
        imx[i] = 0.1f + rng_uniform();
    }
    for (int c = 0; c < N_CASES; c++) {
        const qe_type_traits *tt = qe_type_get(k_cases[c].type);
        CHECKF(tt->from_float_ref(x, q, n, NULL) == 0, "%s", tt->name);
        tt->to_float_ref(q, y, n);
        double r0 = rel_rmse(y, x, n);
        CHECKF(tt->from_float_ref(x, q, n, imx) == 0, "%s imat", tt->name);
        tt->to_float_ref(q, y, n);
        double r1 = rel_rmse(y, x, n);
        printf("  %-7s rel rmse %.5f (imatrix %.5f), bound %.3g\n", tt->name, r0, r1,
               k_cases[c].rel_rmse_bound);
        CHECKF(r0 <= k_cases[c].rel_rmse_bound, "%s: %g", tt->name, r0);
        CHECKF(r1 <= k_cases[c].rel_rmse_bound, "%s imat: %g", tt->name, r1);
    }
    free(x);
    free(y);
    free(imx);
    free(q);
}

TEST(odd_rows_zero_blocks_nan)
{
    float x[256 * 3], y[256 * 3];
    uint8_t q[292 * 3];
    for (int c = 0; c < N_CASES; c++) {
        const qe_type_traits *tt = qe_type_get(k_cases[c].type);
        int64_t bs = tt->blck_size;
        if (bs > 1) {
            CHECKF(qe_type_row_nbytes(k_cases[c].type, bs + 1) == 0, "%s", tt->name);
            CHECKF(qe_type_row_nbytes(k_cases[c].type, bs * 3 - 1) == 0, "%s", tt->name);
        }
        CHECKF(qe_type_row_nbytes(k_cases[c].type, bs * 3) == 3 * tt->type_size, "%s", tt->name);
        int64_t n = tt->blck_size == 1 ? 96 : 3 * bs;
        memset(x, 0, sizeof x);
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f;
        CHECKF(tt->from_float_ref(x, q, n, NULL) == 0, "%s", tt->name);
        tt->to_float_ref(q, y, n);
        int nz = 0;
        for (int64_t i = 0; i < n; i++)
            nz += y[i] != 0.0f;
        CHECKF(nz == 0, "%s: %d nonzero after all-zero quantize", tt->name, nz);
        tt->to_float(q, y, n);
        nz = 0;
        for (int64_t i = 0; i < n; i++)
            nz += y[i] != 0.0f;
        CHECKF(nz == 0, "%s simd: %d nonzero", tt->name, nz);
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)i * 0.01f;
        x[n - 2] = NAN;
        CHECKF(tt->from_float_ref(x, q, n, NULL) == QE_ENAN, "%s NaN", tt->name);
        x[n - 2] = -INFINITY;
        CHECKF(tt->from_float_ref(x, q, n, NULL) == QE_ENAN, "%s Inf", tt->name);
    }
    /* qe_quantize_rows: the error names the bad row; bad shapes refused. */
    float rows[4 * 64];
    uint8_t out[4 * 64 * 4];
    for (int i = 0; i < 4 * 64; i++)
        rows[i] = (float)(i % 7) - 3.0f;
    rows[2 * 64 + 5] = NAN;
    qe_err e = {0};
    CHECK(qe_quantize_rows(QE_TYPE_Q8_0, rows, out, 4, 64, NULL, 2, &e) == QE_ENAN);
    CHECKF(strstr(e.msg, "row 2") != NULL, "%s", e.msg);
    CHECK(qe_quantize_rows(QE_TYPE_Q4_K, rows, out, 1, 64, NULL, 1, &e) == QE_ESHAPE);
    CHECK(qe_quantize_rows(4, rows, out, 1, 64, NULL, 1, &e) == QE_ETYPE);
    /* IQ2_XXS/IQ2_XS/IQ1_S cannot run without importance weights */
    CHECK(qe_quantize_rows(QE_TYPE_IQ2_XXS, rows, out, 1, 256, NULL, 1, &e) == QE_EINVAL);
    CHECKF(strstr(e.msg, "iq2_xxs") && strstr(e.msg, "imatrix"), "%s", e.msg);
    rows[2 * 64 + 5] = 1.0f;
    CHECK(qe_quantize_rows(QE_TYPE_Q8_0, rows, out, 4, 64, NULL, 2, &e) == 0);
}


/* ================= low-bit types: grids, searches, rows ============= */

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The codebooks are format data: byte for byte ggml-common.h's (b4747).
 * The checksums (FNV-1a 64 over the little-endian table bytes) and the
 * spot values were computed from ggml-common.h's tables. */
TEST(iq_grids_pinned)
{
    REQUIRE(qe_type_get(QE_TYPE_IQ2_XXS), "init");
    CHECK(fnv1a(qe_iq2xxs_grid, sizeof qe_iq2xxs_grid) == 0xbb4ee025b5ac6e8eull);
    CHECK(fnv1a(qe_iq2xs_grid, sizeof qe_iq2xs_grid) == 0xc9b1ee61e79909bdull);
    CHECK(fnv1a(qe_iq2s_grid, sizeof qe_iq2s_grid) == 0x123edd38a3b62b90ull);
    CHECK(fnv1a(qe_iq1s_grid, sizeof qe_iq1s_grid) == 0x6703ed863501ae2eull);
    CHECK(fnv1a(qe_iq3xxs_grid, sizeof qe_iq3xxs_grid) == 0xdfa5dc83d6a155d5ull);
    CHECK(fnv1a(qe_iq3s_grid, sizeof qe_iq3s_grid) == 0xfa37020c25b44829ull);
    CHECK(qe_iq2xxs_grid[1] == 0x080808080808082bull && qe_iq2xxs_grid[255] == 0x2b2b2b1908081908ull);
    CHECK(qe_iq2s_grid[1023] == 0x2b2b2b2b2b2b2b2bull);
    CHECK(qe_iq1s_grid[1] == 0xffffffffffffff01ull && qe_iq1s_grid[2047] == 0x0101010101010101ull);
    CHECK(qe_iq3xxs_grid[1] == 0x04040414u && qe_iq3xxs_grid[255] == 0x3e341c04u);
    CHECK(qe_iq3s_grid[1] == 0x01010103u && qe_iq3s_grid[511] == 0x0f0f0101u);
    CHECK(qe_ksigns_iq2xs[1] == 129 && qe_ksigns_iq2xs[3] == 3 && qe_ksigns_iq2xs[127] == 255);
}

typedef struct { int d2, j; } dj_pair;
static int dj_cmp(const void *a, const void *b)
{
    const dj_pair *x = a, *y = b;
    return x->d2 != y->d2 ? (x->d2 < y->d2 ? -1 : 1) : (x->j < y->j ? -1 : x->j > y->j);
}

/* The neighbour tables against a brute-force build the way ggml's
 * iq2xs_init_impl/iq3xs_init_impl do it (qsort of (d2, index), keep the
 * nwant smallest distinct distances), on a sample of lattice points. */
TEST(iq_neighbour_tables)
{
    static const struct { int which, nwant, kmap; } g[] = {
        {QE_IQS_IQ2XXS, 2, 43692}, {QE_IQS_IQ2XS, 2, 43692}, {QE_IQS_IQ2S, 1, 43692},
        {QE_IQS_IQ1S, 3, 43692},   {QE_IQS_IQ3XXS, 2, 4096}, {QE_IQS_IQ3S, 3, 4096},
    };
    dj_pair *d = malloc(2048 * sizeof *d);
    REQUIRE(d, "alloc");
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
        const qe_iq_search *S = qe_iq_search_get(g[k].which);
        REQUIRE(S, "search table %d", g[k].which);
        const int nc = S->ncoord, bits = nc == 8 ? 2 : 3;
        int n_on = 0, n_checked = 0;
        for (int u = 0; u < g[k].kmap; u++)
            n_on += S->map[u] >= 0;
        CHECKF(n_on == S->grid_size, "grid %d: %d points on the grid", g[k].which, n_on);
        for (int u = 0; u < g[k].kmap; u += (nc == 8 ? 97 : 7)) {
            if (S->map[u] >= 0) {
                /* on-grid points map to a grid point with exactly these levels */
                const int8_t *pg = S->grid + nc * S->map[u];
                int v = 0;
                for (int i = 0; i < nc; i++)
                    v |= ((pg[i] - 1) / 2) << bits * i;
                CHECKF(v == u, "grid %d: map[%d] -> levels %d", g[k].which, u, v);
                continue;
            }
            for (int j = 0; j < S->grid_size; j++) {
                int d2 = 0;
                for (int i = 0; i < nc; i++) {
                    int df = S->grid[nc * j + i] - (2 * ((u >> bits * i) & ((1 << bits) - 1)) + 1);
                    d2 += df * df;
                }
                d[j] = (dj_pair){d2, j};
            }
            qsort(d, (size_t)S->grid_size, sizeof *d, dj_cmp);
            int n = 0, have = 1, cur = d[0].d2;
            for (int j = 0; j < S->grid_size; j++) {
                if (d[j].d2 > cur) {
                    if (have == g[k].nwant)
                        break;
                    cur = d[j].d2;
                    have++;
                }
                n++;
            }
            const uint16_t *nb = S->neighbours - S->map[u] - 1;
            bool same = nb[0] == n;
            for (int j = 0; same && j < n; j++)
                same = nb[1 + j] == d[j].j;
            CHECKF(same, "grid %d: neighbours of %d differ (%d vs %d)", g[k].which, u, nb[0], n);
            n_checked++;
        }
        printf("  grid %d: %d points, %d off-grid lattice points checked\n", g[k].which,
               S->grid_size, n_checked);
    }
    free(d);
}

typedef struct {
    int type;
    double bound; /* rel RMSE bound on N(0,1)-ish rows with an imatrix */
} low_case;
static const low_case k_low[] = {
    {QE_TYPE_IQ1_S, 0.62}, {QE_TYPE_IQ1_M, 0.70},   {QE_TYPE_IQ2_XXS, 0.45},
    {QE_TYPE_IQ2_XS, 0.40}, {QE_TYPE_IQ2_S, 0.36},  {QE_TYPE_IQ3_XXS, 0.25},
    {QE_TYPE_IQ3_S, 0.22},  {QE_TYPE_TQ1_0, 0.95},  {QE_TYPE_TQ2_0, 0.95},
};
#define N_LOW ((int)(sizeof k_low / sizeof k_low[0]))

/* Per row: quantize with and without an imatrix (where allowed), error
 * bounds, all-zero rows, NaN/Inf, the imatrix requirement, geometry. */
TEST(low_bit_rows)
{
    enum { NB = 3 };
    const int64_t n = 256 * NB;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *imx = malloc(n * sizeof(float));
    uint8_t *q = malloc(n + 256), *q2 = malloc(n + 256);
    REQUIRE(x && y && imx && q && q2, "alloc");
    for (int64_t i = 0; i < n; i++) {
        x[i] = rng_normal() * (0.02f + 0.01f * (float)((i / 32) % 3));
        imx[i] = 0.1f + rng_uniform();
    }
    for (int c = 0; c < N_LOW; c++) {
        const qe_type_traits *tt = qe_type_get(k_low[c].type);
        REQUIRE(tt && tt->to_float_ref && tt->to_float && tt->from_float_ref && tt->vec_dot &&
                    tt->vec_dot_ref,
                "type %d lacks kernels", k_low[c].type);
        CHECKF(tt->blck_size == 256 && qe_type_row_nbytes(k_low[c].type, 257) == 0, "%s",
               tt->name);
        CHECKF(tt->from_float_ref(x, q, n, imx) == 0, "%s", tt->name);
        tt->to_float_ref(q, y, n);
        double r1 = rel_rmse(y, x, n);
        /* the quantizer is deterministic and row-local: twice the same bytes */
        CHECKF(tt->from_float_ref(x, q2, n, imx) == 0 &&
                   !memcmp(q, q2, qe_type_row_nbytes(k_low[c].type, n)),
               "%s: not deterministic", tt->name);
        double r0 = -1;
        if (qe_type_needs_imatrix(k_low[c].type)) {
            CHECKF(tt->from_float_ref(x, q, n, NULL) == QE_EINVAL, "%s: NULL imatrix", tt->name);
        } else {
            CHECKF(tt->from_float_ref(x, q, n, NULL) == 0, "%s", tt->name);
            tt->to_float_ref(q, y, n);
            r0 = rel_rmse(y, x, n);
            CHECKF(r0 <= k_low[c].bound, "%s: %g", tt->name, r0);
        }
        printf("  %-7s rel rmse %.4f with imatrix, %.4f without (-1: needs one), bound %.2f\n",
               tt->name, r1, r0, k_low[c].bound);
        CHECKF(r1 <= k_low[c].bound, "%s imat: %g", tt->name, r1);
        /* the ternary types ignore the imatrix (as ggml) */
        if (k_low[c].type == QE_TYPE_TQ1_0 || k_low[c].type == QE_TYPE_TQ2_0)
            CHECKF(r0 == r1, "%s: imatrix changed the result", tt->name);
        /* all-zero input -> all-zero output, reference and SIMD */
        float z[512] = {0};
        for (int i = 0; i < 512; i++)
            y[i] = 1.0f;
        CHECKF(tt->from_float_ref(z, q, 512, imx) == 0, "%s zero", tt->name);
        tt->to_float_ref(q, y, 512);
        int nz = 0;
        for (int i = 0; i < 512; i++)
            nz += y[i] != 0.0f;
        tt->to_float(q, y, 512);
        for (int i = 0; i < 512; i++)
            nz += y[i] != 0.0f;
        CHECKF(nz == 0, "%s: %d nonzero after all-zero quantize", tt->name, nz);
        float xb = x[300];
        x[300] = NAN;
        CHECKF(tt->from_float_ref(x, q, n, imx) == QE_ENAN, "%s NaN", tt->name);
        x[300] = INFINITY;
        CHECKF(tt->from_float_ref(x, q, n, imx) == QE_ENAN, "%s Inf", tt->name);
        x[300] = xb;
        /* qe_quantize_rows = row by row from_float_ref, any thread count */
        qe_err e = {0};
        CHECKF(qe_quantize_rows(k_low[c].type, x, q2, NB, 256, imx, 2, &e) == 0, "%s: %s",
               tt->name, e.msg);
        for (int r = 0; r < NB; r++) {
            CHECK(tt->from_float_ref(x + 256 * r, q, 256, imx) == 0);
            CHECKF(!memcmp(q, q2 + r * tt->type_size, tt->type_size), "%s row %d", tt->name, r);
        }
    }
    CHECK(qe_type_needs_imatrix(QE_TYPE_IQ2_XXS) && qe_type_needs_imatrix(QE_TYPE_IQ2_XS) &&
          qe_type_needs_imatrix(QE_TYPE_IQ1_S) && !qe_type_needs_imatrix(QE_TYPE_IQ2_S) &&
          !qe_type_needs_imatrix(QE_TYPE_IQ1_M) && !qe_type_needs_imatrix(QE_TYPE_Q2_K));
    free(x);
    free(y);
    free(imx);
    free(q);
    free(q2);
}

/* Hand-built blocks: the documented layouts decode as ggml's do. */
TEST(low_bit_hand_blocks)
{
    float y[256];
    /* TQ2_0: byte m of 32 holds trits of y[m], y[m+32], y[m+64], y[m+96]
     * (2 bits each, 0/1/2 -> -1/0/+1), d = 0.5 */
    qe_block_tq2_0 t2;
    memset(&t2, 0, sizeof t2);
    t2.qs[0] = 0x02 | (0x01 << 2) | (0x00 << 4) | (0x02 << 6);
    t2.d = qe_fp32_to_fp16(0.5f);
    qe_type_get(QE_TYPE_TQ2_0)->to_float_ref(&t2, y, 256);
    CHECK(y[0] == 0.5f && y[32] == 0.0f && y[64] == -0.5f && y[96] == 0.5f && y[1] == -0.5f);
    /* TQ1_0: qs[0] = ceil(243*... ): trits (2,1,0,2,1) base 3 = 2*81+27+0+6+1 = 196,
     * stored as ceil(196*256/243) = 207; y[0], y[32], ... in that order */
    qe_block_tq1_0 t1;
    memset(&t1, 0, sizeof t1);
    t1.qs[0] = 207;
    t1.d = qe_fp32_to_fp16(2.0f);
    qe_type_get(QE_TYPE_TQ1_0)->to_float_ref(&t1, y, 256);
    CHECKF(y[0] == 2.0f && y[32] == 0.0f && y[64] == -2.0f && y[96] == 2.0f && y[128] == 0.0f,
           "%g %g %g %g %g", y[0], y[32], y[64], y[96], y[128]);
    /* IQ2_XXS: group 0 = grid point 1 (0x080808080808082b), signs 0b0000011
     * (-> ksigns 3: y[0], y[1] negative), 4-bit scale 15: db = d*(15.5)/4 */
    qe_block_iq2_xxs b;
    memset(&b, 0, sizeof b);
    b.d = qe_fp32_to_fp16(1.0f);
    uint32_t aux[2] = {1u, 3u | (15u << 28)};
    memcpy(b.qs, aux, 8);
    qe_type_get(QE_TYPE_IQ2_XXS)->to_float_ref(&b, y, 256);
    const float db = 1.0f * 15.5f * 0.25f;
    CHECKF(y[0] == -db * 0x2b && y[1] == -db * 8 && y[2] == db * 8 && y[8] == db * 8,
           "%g %g %g", y[0], y[1], y[2]);
}

/* Every available SIMD level against the reference: dequantize bitwise,
 * dot within 1e-5 * sum|x*y|. */
TEST(simd_vs_ref)
{
    static const char *levels[] = {"avx2", "avx512"};
    enum { NB = 7 };
    const int64_t n = 256 * NB;
    float *x = malloc(n * sizeof(float)), *yr = malloc(n * sizeof(float));
    float *ys = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 4 + 64);
    REQUIRE(x && yr && ys && q && v, "alloc");
    for (int64_t i = 0; i < n; i++) {
        /* mix of scales so sub-block scales and mins vary */
        x[i] = rng_normal() * (0.01f + (float)((i / 32) % 5)) + ((i / 256) % 2 ? 0.3f : 0.0f);
        v[i] = rng_normal();
    }
    static const int hot[] = {QE_TYPE_F16,  QE_TYPE_BF16, QE_TYPE_Q8_0, QE_TYPE_Q4_0,
                              QE_TYPE_Q4_K, QE_TYPE_Q5_K, QE_TYPE_Q6_K, QE_TYPE_Q2_K,
                              QE_TYPE_Q3_K, QE_TYPE_IQ4_NL, QE_TYPE_Q5_0, QE_TYPE_Q5_1};
    char saved[16];
    snprintf(saved, sizeof saved, "%s", qe_quant_simd_level());
    for (int li = 0; li < 2; li++) {
        if (qe_quant_set_simd_level(levels[li]) != 0) {
            printf("  %s not supported on this CPU: skipped\n", levels[li]);
            continue;
        }
        /* the hot types really have a SIMD dequantizer at this level */
        for (size_t h = 0; h < sizeof hot / sizeof hot[0]; h++) {
            const qe_type_traits *tt = qe_type_get(hot[h]);
            CHECKF(tt->to_float != tt->to_float_ref, "%s %s: no SIMD to_float", levels[li],
                   tt->name);
        }
        for (int c = 0; c < N_CASES; c++) {
            const qe_type_traits *tt = qe_type_get(k_cases[c].type);
            int rc_q = tt->from_float_ref(x, q, n, NULL);
            REQUIRE(rc_q == 0, "%s", tt->name);
            tt->to_float_ref(q, yr, n);
            memset(ys, 0xff, n * sizeof(float));
            tt->to_float(q, ys, n);
            CHECKF(!memcmp(yr, ys, n * sizeof(float)), "%s %s dequant differs", levels[li],
                   tt->name);
            /* sub-ranges: a single block, odd block counts */
            int64_t bs = tt->blck_size == 1 ? 16 : tt->blck_size;
            tt->to_float(q, ys, bs);
            CHECKF(!memcmp(yr, ys, bs * sizeof(float)), "%s %s one block", levels[li], tt->name);
            tt->to_float(q, ys, 3 * bs);
            CHECKF(!memcmp(yr, ys, 3 * bs * sizeof(float)), "%s %s 3 blocks", levels[li],
                   tt->name);
            float sr = 0, ss = 0;
            tt->vec_dot_ref(n, &sr, q, v);
            tt->vec_dot(n, &ss, q, v);
            double mag = 0, exact = 0;
            for (int64_t i = 0; i < n; i++) {
                mag += fabs((double)yr[i] * v[i]);
                exact += (double)yr[i] * v[i];
            }
            CHECKF(sr == (float)exact, "%s ref dot %g vs %g", tt->name, sr, exact);
            CHECKF(fabs((double)ss - sr) <= 1e-5 * mag, "%s %s dot %g vs %g (mag %g)", levels[li],
                   tt->name, ss, sr, mag);
        }
    }
    /* the types below 4 bits (quantized with an imatrix, some need one) */
    float *imx = malloc(n * sizeof(float));
    REQUIRE(imx, "alloc");
    for (int64_t i = 0; i < n; i++)
        imx[i] = 0.5f + (float)(i % 7) * 0.25f;
    for (int li = 0; li < 2; li++) {
        if (qe_quant_set_simd_level(levels[li]) != 0)
            continue;
        for (int c = 0; c < N_LOW; c++) {
            const qe_type_traits *tt = qe_type_get(k_low[c].type);
            CHECKF(tt->to_float != tt->to_float_ref && tt->vec_dot != tt->vec_dot_ref,
                   "%s %s: no SIMD kernels", levels[li], tt->name);
            REQUIRE(tt->from_float_ref(x, q, n, imx) == 0, "%s", tt->name);
            tt->to_float_ref(q, yr, n);
            memset(ys, 0xff, n * sizeof(float));
            tt->to_float(q, ys, n);
            CHECKF(!memcmp(yr, ys, n * sizeof(float)), "%s %s dequant differs", levels[li],
                   tt->name);
            tt->to_float(q, ys, 256);
            CHECKF(!memcmp(yr, ys, 256 * sizeof(float)), "%s %s one block", levels[li], tt->name);
            float sr = 0, ss = 0;
            tt->vec_dot_ref(n, &sr, q, v);
            tt->vec_dot(n, &ss, q, v);
            double mag = 0;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)yr[i] * v[i]);
            CHECKF(fabs((double)ss - sr) <= 1e-5 * mag, "%s %s dot %g vs %g (mag %g)", levels[li],
                   tt->name, ss, sr, mag);
        }
        /* every sign pattern and scale: random block bytes (any grid index,
         * sign, scale; d a small normal fp16) decode alike */
        for (int c = 0; c < N_LOW; c++) {
            const qe_type_traits *tt = qe_type_get(k_low[c].type);
            for (int64_t b = 0; b < (int64_t)tt->type_size * NB; b++)
                q[b] = (uint8_t)rng_u32();
            for (int blk = 0; blk < NB; blk++) {
                uint8_t *bp = q + blk * tt->type_size;
                uint16_t d = qe_fp32_to_fp16(0.01f + 0.001f * (float)blk);
                if (k_low[c].type == QE_TYPE_IQ1_M) { /* d in the scales' top nibbles */
                    uint16_t sc[4];
                    memcpy(sc, bp + 48, 8);
                    for (int j = 0; j < 4; j++)
                        sc[j] = (uint16_t)((sc[j] & 0x0fff) | (((d >> (4 * j)) & 0xf) << 12));
                    memcpy(bp + 48, sc, 8);
                } else if (k_low[c].type == QE_TYPE_TQ1_0 || k_low[c].type == QE_TYPE_TQ2_0) {
                    memcpy(bp + tt->type_size - 2, &d, 2);
                } else {
                    memcpy(bp, &d, 2);
                }
            }
            tt->to_float_ref(q, yr, n);
            memset(ys, 0xff, n * sizeof(float));
            tt->to_float(q, ys, n);
            CHECKF(!memcmp(yr, ys, n * sizeof(float)), "%s %s: random blocks decode differently",
                   levels[li], tt->name);
        }
    }
    free(imx);
    CHECK(qe_quant_set_simd_level(saved) == 0); /* back to the automatic choice */
    CHECK(qe_quant_set_simd_level("sse9") == QE_EUNSUPPORTED);
    free(x);
    free(yr);
    free(ys);
    free(v);
    free(q);
}

/* ================= tests: llama.cpp files =========================== */

typedef struct {
    int64_t blocks, same;
    double worst_rel_rmse;
} type_stat;

static type_stat g_stat[QE_TYPE_COUNT], g_stat_imat[QE_TYPE_COUNT];

/* Compare one llama.cpp file against our re-quantization of its source. */
static void check_file(const char *qfile, const mini_gguf *src, const imat *im, type_stat *stat)
{
    mini_gguf g;
    int rc_open = mini_open(&g, test_asset(qfile));
    REQUIRE(rc_open == 0, "cannot read %s", qfile);
    for (int i = 0; i < g.n; i++) {
        const mini_tensor *t = &g.t[i];
        const mini_tensor *s = mini_find(src, t->name);
        CHECKF(s && s->type == QE_TYPE_F32 && !memcmp(s->ne, t->ne, sizeof t->ne),
               "%s: %s has no F32 source of the same shape", qfile, t->name);
        if (!s || s->type != QE_TYPE_F32 || memcmp(s->ne, t->ne, sizeof t->ne))
            continue;
        const qe_type_traits *tt = qe_type_get(t->type);
        CHECKF(tt && tt->from_float_ref, "%s: %s has type %d without kernels", qfile, t->name,
               t->type);
        if (!tt || !tt->from_float_ref)
            continue;
        int64_t n0 = t->ne[0], nrow = t->ne[1] * t->ne[2] * t->ne[3];
        const float *xs = (const float *)s->data;
        size_t rb = qe_type_row_nbytes(t->type, n0);
        uint8_t *mine = malloc(t->nbytes);
        float *yr = malloc((size_t)(n0 * nrow) * sizeof(float));
        float *ys = malloc((size_t)(n0 * nrow) * sizeof(float));
        REQUIRE(mine && yr && ys, "alloc");
        const float *imx = im ? imat_find(im, t->name, n0) : NULL;
        qe_err e = {0};
        CHECKF(qe_quantize_rows(t->type, xs, mine, nrow, n0, imx, 2, &e) == 0, "%s", e.msg);
        /* block-by-block identity */
        int64_t nblk = (int64_t)(t->nbytes / tt->type_size), same = 0;
        for (int64_t b = 0; b < nblk; b++)
            same += !memcmp(mine + b * tt->type_size, t->data + b * tt->type_size, tt->type_size);
        stat[t->type].blocks += nblk;
        stat[t->type].same += same;
        CHECKF(same == nblk, "%s: %s (%s%s): %lld of %lld blocks differ", qfile, t->name,
               tt->name, imx ? ", imatrix" : "", (long long)(nblk - same), (long long)nblk);
        /* dequantize llama.cpp's bytes: ref vs SIMD bitwise, and vs the source */
        tt->to_float_ref(t->data, yr, n0 * nrow);
        tt->to_float(t->data, ys, n0 * nrow);
        CHECKF(!memcmp(yr, ys, (size_t)(n0 * nrow) * sizeof(float)),
               "%s: %s: SIMD dequant differs from ref", qfile, t->name);
        double r = rel_rmse(yr, xs, n0 * nrow);
        if (r > stat[t->type].worst_rel_rmse)
            stat[t->type].worst_rel_rmse = r;
        CHECKF(r <= case_bound(t->type), "%s: %s (%s): rel rmse %g > %g", qfile, t->name,
               tt->name, r, case_bound(t->type));
        (void)rb;
        free(mine);
        free(yr);
        free(ys);
    }
    mini_close(&g);
}

static void print_stats(const char *title, const type_stat *stat)
{
    printf("  %s\n", title);
    for (int t = 0; t < QE_TYPE_COUNT; t++) {
        if (!stat[t].blocks)
            continue;
        printf("    %-7s %8lld / %8lld blocks identical (%.4f%%), worst rel rmse vs F32 %.5f\n",
               qe_type_name(t), (long long)stat[t].same, (long long)stat[t].blocks,
               100.0 * (double)stat[t].same / (double)stat[t].blocks, stat[t].worst_rel_rmse);
    }
}

TEST(llamacpp_rand_llama_requant)
{
    static const char *files[] = {
        "Q8_0", "Q6_K", "Q5_K_S", "Q5_K_M", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M",
        "Q4_0", "Q4_1", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q2_K", "IQ4_NL", "IQ4_XS",
    };
    mini_gguf src;
    int rc_open = mini_open(&src, test_asset("testdata/llamacpp/rand-llama-256-F32.gguf"));
    REQUIRE(rc_open == 0, "cannot read rand-llama-256-F32.gguf");
    CHECKF(src.n == 21, "n_tensors %d", src.n);
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[128];
        snprintf(path, sizeof path, "testdata/llamacpp/rand-llama-256-%s.gguf", files[f]);
        check_file(path, &src, NULL, g_stat);
    }
    mini_close(&src);
}

TEST(llamacpp_stories_requant)
{
    static const char *files[] = {"Q6_K", "Q4_K_M", "Q2_K"};
    mini_gguf src;
    int rc_open = mini_open(&src, test_asset("models/stories260K/stories260K.gguf"));
    REQUIRE(rc_open == 0, "cannot read stories260K.gguf");
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[128];
        snprintf(path, sizeof path, "testdata/llamacpp/stories260K-%s.gguf", files[f]);
        check_file(path, &src, NULL, g_stat);
    }
    mini_close(&src);
    print_stats("re-quantization vs llama.cpp b4747 (no imatrix):", g_stat);
}

TEST(llamacpp_imatrix_requant)
{
    imat im;
    int rc_im = imat_load(&im, test_asset("testdata/llamacpp/rand-llama-256.imatrix"));
    REQUIRE(rc_im == 0, "cannot read rand-llama-256.imatrix");
    CHECKF(im.n == 14, "entries %d", im.n); /* "Have weights data with 14 entries" */
    mini_gguf src;
    int rc_open = mini_open(&src, test_asset("testdata/llamacpp/rand-llama-256-F32.gguf"));
    if (rc_open)
        imat_free(&im);
    REQUIRE(rc_open == 0, "cannot read rand-llama-256-F32.gguf");
    check_file("testdata/llamacpp/rand-llama-256-Q4_K_M-imat.gguf", &src, &im, g_stat_imat);
    check_file("testdata/llamacpp/rand-llama-256-IQ4_XS-imat.gguf", &src, &im, g_stat_imat);
    print_stats("re-quantization vs llama.cpp b4747 (with rand-llama-256.imatrix):", g_stat_imat);
    mini_close(&src);
    imat_free(&im);
}

/* Decode's fused kernels (row_dot, avx512 level): bitwise equal to
 * to_float then qe_dot_f32(avx512), for 1 .. QE_ROW_DOT_MAX_X activation vectors,
 * every type that has one, lengths of 64 .. 4864 (the shapes' rows), rows
 * quantized from mixed-scale data (so scales, mins and high bits vary). */
TEST(row_dot_bits)
{
    if (qe_quant_set_simd_level("avx512") != 0 || !qe_infer_isa_available(QE_ISA_AVX512)) {
        printf("  avx512 not supported on this CPU: skipped\n");
        return;
    }
    static const int want[] = {QE_TYPE_F32,  QE_TYPE_F16,  QE_TYPE_BF16, QE_TYPE_Q8_0,
                               QE_TYPE_Q4_0, QE_TYPE_Q4_1, QE_TYPE_Q5_0, QE_TYPE_Q5_1,
                               QE_TYPE_IQ4_NL, QE_TYPE_Q2_K, QE_TYPE_Q3_K, QE_TYPE_Q4_K,
                               QE_TYPE_Q5_K, QE_TYPE_Q6_K};
    static const int64_t lens[] = {64, 256, 576, 896, 1536, 4864};
    const int64_t nmax = 4864;
    float *x = malloc(QE_ROW_DOT_MAX_X * nmax * sizeof(float));
    float *src = malloc(nmax * sizeof(float));
    float *w = malloc(nmax * sizeof(float));
    uint8_t *q = malloc(nmax * 4 + 64);
    REQUIRE(x && src && w && q, "alloc");
    for (int64_t i = 0; i < QE_ROW_DOT_MAX_X * nmax; i++)
        x[i] = rng_normal() * (i % 7 == 0 ? 10.0f : 1.0f);
    int n_checked = 0;
    for (size_t ti = 0; ti < sizeof want / sizeof want[0]; ti++) {
        const qe_type_traits *tt = qe_type_get(want[ti]);
        CHECKF(tt->row_dot != NULL, "%s: no row_dot at the avx512 level", tt->name);
        if (!tt->row_dot)
            continue;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t n = lens[li];
            if (n % tt->blck_size)
                continue;
            for (int rep = 0; rep < 3; rep++) {
                for (int64_t i = 0; i < n; i++)
                    src[i] = rng_normal() * (0.01f + (float)((i / 32 + rep) % 5)) +
                             ((i / 256 + rep) % 2 ? 0.3f : 0.0f);
                if (want[ti] == QE_TYPE_F32)
                    memcpy(q, src, n * sizeof(float));
                else if (want[ti] == QE_TYPE_F16)
                    for (int64_t i = 0; i < n; i++)
                        ((uint16_t *)q)[i] = qe_fp32_to_fp16(src[i]);
                else if (want[ti] == QE_TYPE_BF16)
                    for (int64_t i = 0; i < n; i++)
                        ((uint16_t *)q)[i] = qe_fp32_to_bf16(src[i]);
                else
                    REQUIRE(tt->from_float_ref(src, q, n, NULL) == 0, "%s", tt->name);
                tt->to_float(q, w, n);
                for (int nx = 1; nx <= QE_ROW_DOT_MAX_X; nx++) {
                    float out[QE_ROW_DOT_MAX_X];
                    tt->row_dot(q, n, x, nx, nmax, out);
                    for (int t = 0; t < nx; t++) {
                        const float ref = qe_dot_f32(QE_ISA_AVX512, (int)n, x + t * nmax, w);
                        CHECKF(memcmp(&ref, &out[t], sizeof ref) == 0,
                               "%s n=%lld nx=%d t=%d: row_dot %.9g, to_float+dot %.9g", tt->name,
                               (long long)n, nx, t, out[t], ref);
                        n_checked++;
                    }
                }
            }
        }
    }
    CHECK(n_checked > 200);
    /* below avx512 there are no fused kernels (the core falls back) */
    if (qe_quant_set_simd_level("avx2") == 0)
        CHECK(qe_type_get(QE_TYPE_Q8_0)->row_dot == NULL);
    qe_quant_set_simd_level("avx512");
    free(x);
    free(src);
    free(w);
    free(q);
}

/* The int8 numerics (quant/dot_int8.h): the VNNI kernel equals the scalar
 * spec bitwise; both equal, to f32 rounding, an independent double sum of
 * the type's own dequantized weights (to_float_ref) times the quantized
 * activations; a token's result does not depend on the others in its group. */
TEST(int8_bits)
{
    static const int want[] = {QE_TYPE_Q4_0, QE_TYPE_Q4_1, QE_TYPE_Q5_0, QE_TYPE_Q5_1,
                               QE_TYPE_Q8_0, QE_TYPE_IQ4_NL, QE_TYPE_Q2_K, QE_TYPE_Q3_K,
                               QE_TYPE_Q4_K, QE_TYPE_Q5_K, QE_TYPE_Q6_K};
    static const int lens[] = {256, 896, 4864};
    const int nmax = 4864, rows = 13, T = 21;
    const int vnni = qe_i8_have_vnni();
    if (!vnni)
        printf("  no avx512-vnni on this CPU: scalar kernel only\n");
    float *x = malloc((size_t)T * nmax * sizeof(float));
    float *src = malloc(nmax * sizeof(float));
    float *w = malloc((size_t)rows * nmax * sizeof(float));
    uint8_t *q = malloc((size_t)rows * nmax * 2);
    float *y_ref = malloc((size_t)T * rows * sizeof(float));
    float *y_simd = malloc((size_t)T * rows * sizeof(float));
    float *y_one = malloc((size_t)rows * sizeof(float));
    void *tile = aligned_alloc(64, qe_i8_tile_nbytes(QE_TYPE_Q2_K, rows, nmax) + 64 * 4096);
    void *tile2 = aligned_alloc(64, qe_i8_tile_nbytes(QE_TYPE_Q2_K, rows, nmax) + 64 * 4096);
    void *act = aligned_alloc(64, qe_i8_act_nbytes(T, nmax));
    void *act2 = aligned_alloc(64, qe_i8_act_nbytes(T, nmax));
    void *act1 = aligned_alloc(64, qe_i8_act_nbytes(1, nmax));
    REQUIRE(x && src && w && q && y_ref && y_simd && y_one && tile && tile2 && act && act2 && act1,
            "alloc");
    for (int i = 0; i < T * nmax; i++)
        x[i] = rng_normal() * (i % 7 == 0 ? 10.0f : 1.0f);
    for (int i = 0; i < 64; i++) /* an all-zero block: dx = 0 */
        x[2 * nmax + i] = 0.0f;
    int n_checked = 0, n_types = 0;
    double worst = 0;
    for (size_t ti = 0; ti < sizeof want / sizeof want[0]; ti++) {
        const qe_type_traits *tt = qe_type_get(want[ti]);
        CHECKF(qe_i8_group(want[ti]) == 16 || qe_i8_group(want[ti]) == 32, "%s: no int8 path",
               tt->name);
        n_types++;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int n = lens[li];
            if (n % tt->blck_size)
                continue;
            const size_t rb = qe_type_row_nbytes(want[ti], n);
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < n; i++)
                    src[i] = rng_normal() * (0.01f + (float)((i / 32 + r) % 5)) +
                             ((i / 256 + r) % 2 ? 0.3f : 0.0f);
                REQUIRE(tt->from_float_ref(src, q + r * rb, n, NULL) == 0, "%s", tt->name);
                tt->to_float_ref(q + r * rb, w + (size_t)r * n, n);
            }
            REQUIRE(qe_i8_tile_nbytes(want[ti], rows, n) <=
                        qe_i8_tile_nbytes(QE_TYPE_Q2_K, rows, nmax) + 64 * 4096, "tile size");
            const size_t tb = qe_i8_tile_nbytes(want[ti], rows, n);
            memset(tile, 0, tb);
            memset(tile2, 0, tb);
            qe_i8_unpack(want[ti], q, rb, rows, n, tile, 0);
            if (vnni) {
                qe_i8_unpack(want[ti], q, rb, rows, n, tile2, 1);
                CHECKF(memcmp(tile, tile2, tb) == 0, "%s n=%d: avx512 unpack differs", tt->name,
                       n);
            }
            qe_i8_quantize(x, nmax, T, n, 0, T, act, 0);
            qe_i8_act_clear(T, n, act);
            if (vnni) {
                const size_t ab = qe_i8_act_nbytes(T, n);
                memset(act2, 0x55, ab);
                qe_i8_quantize(x, nmax, T, n, 0, T, act2, 1);
                qe_i8_act_clear(T, n, act2);
                CHECKF(memcmp(act, act2, ab) == 0, "%s n=%d: avx512 quantize differs", tt->name,
                       n);
            }
            qe_i8_gemm(want[ti], tile, rows, n, act, T, y_ref, rows, 0);
            if (vnni)
                qe_i8_gemm(want[ti], tile, rows, n, act, T, y_simd, rows, 1);
            for (int t = 0; t < T; t++) {
                /* alone: the same bits as in the group of 21 */
                qe_i8_quantize(x + (size_t)t * nmax, nmax, 1, n, 0, 1, act1, vnni);
                qe_i8_act_clear(1, n, act1);
                qe_i8_gemm(want[ti], tile, rows, n, act1, 1, y_one, rows, vnni);
                for (int r = 0; r < rows; r++) {
                    const float v = y_ref[t * rows + r];
                    if (vnni)
                        CHECKF(memcmp(&v, &y_simd[t * rows + r], 4) == 0,
                               "%s n=%d t=%d r=%d: vnni %.9g, scalar %.9g", tt->name, n, t, r,
                               y_simd[t * rows + r], v);
                    CHECKF(memcmp(&v, &y_one[r], 4) == 0, "%s n=%d t=%d r=%d: alone %.9g, in "
                           "a group %.9g", tt->name, n, t, r, y_one[r], v);
                    /* independent: the same activation rounding, written out here */
                    double ref = 0, mag = 0;
                    const float *xt = x + (size_t)t * nmax;
                    for (int b = 0; b < n / 32; b++) {
                        float amax = 0;
                        for (int i = 0; i < 32; i++)
                            amax = fmaxf(amax, fabsf(xt[32 * b + i]));
                        const float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
                        for (int i = 0; i < 32; i++) {
                            const double xa = (double)d * nearbyintf(xt[32 * b + i] * id);
                            ref += (double)w[(size_t)r * n + 32 * b + i] * xa;
                            mag += fabs((double)w[(size_t)r * n + 32 * b + i] * xa);
                        }
                    }
                    const double err = fabs(v - ref) / (mag + 1e-30);
                    if (err > worst)
                        worst = err;
                    CHECKF(err < 2e-6, "%s n=%d t=%d r=%d: int8 %.9g, double %.9g (rel %.2g)",
                           tt->name, n, t, r, v, ref, err);
                    n_checked++;
                }
            }
        }
    }
    printf("  %d outputs of %d types; worst relative error vs double %.2g%s\n", n_checked,
           n_types, worst, vnni ? "; vnni == scalar bitwise" : "");
    CHECK(n_checked > 2000);
    free(x), free(src), free(w), free(q), free(y_ref), free(y_simd), free(y_one);
    free(tile), free(tile2), free(act), free(act2), free(act1);
}

int main(void)
{
    RUN(table_geometry);
    RUN(hand_q8_0_block);
    RUN(hand_q4_0_block);
    RUN(hand_q4_K_scales);
    RUN(roundtrip_rmse_random);
    RUN(odd_rows_zero_blocks_nan);
    RUN(iq_grids_pinned);
    RUN(iq_neighbour_tables);
    RUN(low_bit_rows);
    RUN(low_bit_hand_blocks);
    RUN(simd_vs_ref);
    RUN(row_dot_bits);
    RUN(int8_bits);
    RUN(llamacpp_rand_llama_requant);
    RUN(llamacpp_stories_requant);
    RUN(llamacpp_imatrix_requant);
    return test_finish();
}
