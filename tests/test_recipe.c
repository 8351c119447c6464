/*
 * test_recipe.c: quantization mixes (quant/recipe.c) against what
 * llama-quantize b4747 actually wrote (../shared/testdata/llamacpp/
 * golden.json: per-tensor types, fallbacks, failures), against file sizes
 * llama.cpp publishes for Llama-3-8B, and custom JSON recipes
 * (harness/model/recipe_json.c).
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../harness/model/gguf.h"
#include "../harness/model/imatrix_io.h"
#include "../harness/model/model.h"
#include "../harness/model/quantize_model.h"
#include "../harness/model/recipe_json.h"
#include "../harness/util/common.h"
#include "../quant/quant.h"
#include "../quant/recipe.h"
#include "test.h"

/* REQUIRE evaluates its condition twice: run calls with side effects once. */
#define REQUIRE_OK(expr, ...)                                                                  \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        REQUIRE(rc_ == 0, __VA_ARGS__);                                                        \
    } while (0)

/* ---- golden.json helpers ---------------------------------------------- */

static cJSON *g_golden;

static cJSON *golden(void)
{
    if (g_golden)
        return g_golden;
    char *buf = NULL;
    size_t n = 0;
    qe_err err = {0};
    if (qe_read_file(test_asset("testdata/llamacpp/golden.json"), &buf, &n, &err))
        return NULL;
    g_golden = cJSON_ParseWithLength(buf, n);
    free(buf);
    return g_golden;
}

static cJSON *golden_file(const char *name)
{
    cJSON *files = cJSON_GetObjectItemCaseSensitive(golden(), "files"), *f;
    cJSON_ArrayForEach(f, files)
    {
        cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(nm) && strcmp(nm->valuestring, name) == 0)
            return f;
    }
    return NULL;
}

/* A source model from golden.json: tensor names/shapes + hparams. */
typedef struct src_model {
    int n;
    qe_mix_tensor t[64];
    char names[64][96];
    int n_layer, n_head, n_head_kv;
} src_model;

static int meta_int(cJSON *f, const char *key)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(f, "metadata");
    cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static bool load_src(const char *name, src_model *s)
{
    cJSON *f = golden_file(name);
    if (!f)
        return false;
    memset(s, 0, sizeof *s);
    cJSON *shapes = cJSON_GetObjectItemCaseSensitive(f, "tensor_shapes"), *sh;
    cJSON_ArrayForEach(sh, shapes)
    {
        if (s->n >= 64)
            return false;
        qe_mix_tensor *t = &s->t[s->n];
        qe_strlcpy(s->names[s->n], sh->string, sizeof s->names[0]);
        t->name = s->names[s->n];
        t->n_dims = (uint32_t)cJSON_GetArraySize(sh);
        for (int d = 0; d < 4; d++)
            t->ne[d] = d < (int)t->n_dims ? (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble : 1;
        t->src_type = QE_TYPE_F32;
        t->forced_type = -1;
        s->n++;
    }
    const char *arch = "llama";
    char key[64];
    snprintf(key, sizeof key, "%s.block_count", arch);
    s->n_layer = meta_int(f, key);
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    s->n_head = meta_int(f, key);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    s->n_head_kv = meta_int(f, key);
    return s->n > 0 && s->n_layer > 0;
}

static int find_tensor(const src_model *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return i;
    return -1;
}

static qe_mix_opts opts_for(const src_model *s, int ftype, bool imat)
{
    qe_mix_opts o = {0};
    o.ftype = ftype;
    o.has_imatrix = imat;
    o.output_type = o.token_embd_type = -1;
    o.arch = "llama";
    o.n_layer = s->n_layer;
    o.n_head = s->n_head;
    o.n_head_kv = s->n_head_kv;
    return o;
}

/* ---- tests -------------------------------------------------------------- */

TEST(ftype_ids_and_names)
{
    /* ids as llama.h b4747 numbers them (checked against golden
     * general.file_type below as well) */
    CHECK(qe_ftype_from_name("Q4_K_M") == 15);
    CHECK(qe_ftype_from_name("q4_k") == 15);
    CHECK(qe_ftype_from_name("Q3_K") == 12);
    CHECK(qe_ftype_from_name("Q5_K") == 17);
    CHECK(qe_ftype_from_name("Q8_0") == 7);
    CHECK(qe_ftype_from_name("Q5_0") == 8);
    CHECK(qe_ftype_from_name("IQ4_XS") == 30);
    CHECK(qe_ftype_from_name("BF16") == 32);
    CHECK(qe_ftype_from_name("F32") == 0);
    CHECK(qe_ftype_from_name("Q7_K") == -1);
    CHECK(qe_ftype_get(4) == NULL);
    CHECK(qe_ftype_get(QE_FTYPE_Q2_K_S)->needs_imatrix);
    CHECK(!qe_ftype_get(QE_FTYPE_Q2_K)->needs_imatrix);
    CHECK(qe_ftype_get(QE_FTYPE_IQ2_S)->base_type == QE_TYPE_IQ2_XS);
    CHECK(strcmp(qe_ftype_name(QE_FTYPE_Q3_K_L), "Q3_K_L") == 0);
}

TEST(fallback_table)
{
    int k;
    CHECK(qe_mix_fallback(QE_TYPE_Q4_K, 256, true, &k) == QE_TYPE_Q4_K && k == QE_FALLBACK_NONE);
    CHECK(qe_mix_fallback(QE_TYPE_Q4_K, 64, true, &k) == QE_TYPE_Q5_0 && k == QE_FALLBACK_LLAMA);
    CHECK(qe_mix_fallback(QE_TYPE_Q5_K, 64, true, &k) == QE_TYPE_Q5_1 && k == QE_FALLBACK_LLAMA);
    CHECK(qe_mix_fallback(QE_TYPE_Q6_K, 64, true, &k) == QE_TYPE_Q8_0 && k == QE_FALLBACK_LLAMA);
    CHECK(qe_mix_fallback(QE_TYPE_Q2_K, 64, true, &k) == QE_TYPE_IQ4_NL);
    CHECK(qe_mix_fallback(QE_TYPE_Q3_K, 96, true, &k) == QE_TYPE_IQ4_NL);
    CHECK(qe_mix_fallback(QE_TYPE_IQ4_XS, 32, true, &k) == QE_TYPE_IQ4_NL);
    /* fallback does not fit either -> F16 (llama.cpp does this too) */
    CHECK(qe_mix_fallback(QE_TYPE_Q4_K, 172, true, &k) == QE_TYPE_F16 && k == QE_FALLBACK_LLAMA);
    /* legacy types: llama.cpp throws, qeval -> F16 */
    CHECK(qe_mix_fallback(QE_TYPE_Q8_0, 172, true, &k) == QE_TYPE_F16 && k == QE_FALLBACK_QEVAL);
    CHECK(qe_mix_fallback(QE_TYPE_Q4_0, 172, true, &k) == QE_TYPE_F16 && k == QE_FALLBACK_QEVAL);
    /* outside llama.cpp's rules (--pure / custom rule) any change is ours */
    CHECK(qe_mix_fallback(QE_TYPE_Q4_K, 64, false, &k) == QE_TYPE_Q5_0 && k == QE_FALLBACK_QEVAL);
}

TEST(quantizable_names)
{
    CHECK(qe_mix_is_quantizable("blk.0.attn_q.weight", 2, false));
    CHECK(!qe_mix_is_quantizable("blk.0.attn_norm.weight", 1, false));
    CHECK(!qe_mix_is_quantizable("blk.0.attn_norm.weight", 2, false));
    CHECK(!qe_mix_is_quantizable("blk.0.attn_q.bias", 2, false));
    CHECK(!qe_mix_is_quantizable("blk.0.ffn_gate_inp.weight", 2, false));
    CHECK(qe_mix_is_quantizable("output.weight", 2, false));
    CHECK(!qe_mix_is_quantizable("output.weight", 2, true));
    CHECK(!qe_mix_is_quantizable("position_embd.weight", 2, false));
}

/* Every llama-quantize run in golden.json: our per-tensor types, the
 * wanted type of each fallback, and the ftype id must match. */
static void check_golden_run(cJSON *f, const src_model *src, int *n_checked)
{
    const char *fname = cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring;
    cJSON *q = cJSON_GetObjectItemCaseSensitive(f, "quantize");
    const char *req = cJSON_GetObjectItemCaseSensitive(f, "requested_type")->valuestring;
    const char *cmd = cJSON_GetObjectItemCaseSensitive(q, "command")->valuestring;
    const char *status = cJSON_GetObjectItemCaseSensitive(f, "status")->valuestring;
    char tname[32];
    sscanf(req, "%31s", tname);
    int ftype = qe_ftype_from_name(tname);
    REQUIRE(ftype >= 0, "%s: unknown requested type '%s'", fname, tname);
    bool imat = strstr(cmd, "--imatrix") != NULL;

    cJSON *gft = cJSON_GetObjectItemCaseSensitive(f, "general.file_type");
    if (cJSON_IsNumber(gft))
        CHECKF(gft->valueint == ftype, "%s: file_type %d, our id %d", fname, gft->valueint, ftype);

    qe_mix_opts o = opts_for(src, ftype, imat);
    qe_mix_choice ch[64];
    qe_err err = {0};
    REQUIRE_OK(qe_mix_plan(&o, src->t, src->n, ch, &err), "%s: %s", fname, err.msg);

    cJSON *fallbacks = cJSON_GetObjectItemCaseSensitive(q, "fallbacks"), *fb;
    cJSON_ArrayForEach(fb, fallbacks)
    {
        int i = find_tensor(src, fb->string);
        REQUIRE(i >= 0, "%s: no tensor %s", fname, fb->string);
        const char *w = cJSON_GetObjectItemCaseSensitive(fb, "wanted")->valuestring;
        cJSON *to = cJSON_GetObjectItemCaseSensitive(fb, "fallback");
        CHECKF(ch[i].wanted == qe_type_from_name(w), "%s %s: wanted %s, ours %s", fname,
               fb->string, w, qe_type_name(ch[i].wanted));
        if (cJSON_IsString(to)) {
            CHECKF(ch[i].type == qe_type_from_name(to->valuestring), "%s %s: fallback %s, ours %s",
                   fname, fb->string, to->valuestring, qe_type_name(ch[i].type));
            CHECKF(ch[i].fallback == QE_FALLBACK_LLAMA, "%s %s: kind %d", fname, fb->string,
                   ch[i].fallback);
        }
    }

    if (strcmp(status, "ok") == 0) {
        cJSON *types = cJSON_GetObjectItemCaseSensitive(f, "tensor_types"), *tt;
        int n = 0;
        cJSON_ArrayForEach(tt, types)
        {
            int i = find_tensor(src, tt->string);
            REQUIRE(i >= 0, "%s: tensor %s not in source", fname, tt->string);
            int want = qe_type_from_name(tt->valuestring);
            CHECKF(ch[i].type == want, "%s %s: llama.cpp %s, ours %s (wanted %s)", fname,
                   tt->string, tt->valuestring, qe_type_name(ch[i].type),
                   qe_type_name(ch[i].wanted));
            CHECKF(ch[i].fallback != QE_FALLBACK_QEVAL, "%s %s: qeval-only fallback", fname,
                   tt->string);
            if (!cJSON_GetObjectItemCaseSensitive(fallbacks, tt->string))
                CHECKF(ch[i].fallback == QE_FALLBACK_NONE, "%s %s: unexpected fallback", fname,
                       tt->string);
            n++;
        }
        CHECKF(n == src->n, "%s: %d tensors in golden, %d in source", fname, n, src->n);
        (*n_checked)++;
    } else {
        /* llama.cpp aborted on this tensor: we must substitute (F16) and
         * flag it as our own fallback */
        cJSON *ft = cJSON_GetObjectItemCaseSensitive(q, "failing_tensor");
        REQUIRE(ft, "%s: failed without failing_tensor", fname);
        const char *tn = cJSON_GetObjectItemCaseSensitive(ft, "tensor")->valuestring;
        const char *w = cJSON_GetObjectItemCaseSensitive(ft, "wanted")->valuestring;
        int i = find_tensor(src, tn);
        REQUIRE(i >= 0, "%s: no tensor %s", fname, tn);
        CHECKF(ch[i].wanted == qe_type_from_name(w), "%s %s: wanted %s, ours %s", fname, tn, w,
               qe_type_name(ch[i].wanted));
        CHECKF(ch[i].fallback == QE_FALLBACK_QEVAL && ch[i].type == QE_TYPE_F16,
               "%s %s: kind %d type %s", fname, tn, ch[i].fallback, qe_type_name(ch[i].type));
        (*n_checked)++;
    }
}

TEST(golden_llamacpp_mixes)
{
    src_model *rand = calloc(1, sizeof *rand), *stories = calloc(1, sizeof *stories);
    REQUIRE(golden(), "cannot read golden.json");
    REQUIRE(load_src("rand-llama-256-F32", rand), "rand-llama-256-F32 not in golden.json");
    REQUIRE(load_src("stories260K-F32", stories), "stories260K-F32 not in golden.json");
    CHECK(rand->n == 21 && rand->n_layer == 2 && rand->n_head == 4 && rand->n_head_kv == 2);
    CHECK(stories->n == 48 && stories->n_layer == 5);

    int n_checked = 0, n_runs = 0;
    cJSON *files = cJSON_GetObjectItemCaseSensitive(golden(), "files"), *f;
    cJSON_ArrayForEach(f, files)
    {
        if (!cJSON_GetObjectItemCaseSensitive(f, "quantize"))
            continue;
        const char *src = cJSON_GetObjectItemCaseSensitive(f, "source_model")->valuestring;
        n_runs++;
        check_golden_run(f, strncmp(src, "stories260K", 11) == 0 ? stories : rand, &n_checked);
    }
    /* every llama-quantize run: rand-llama-256 (all written) and
     * stories260K (3 written, the legacy types aborted) */
    printf("  info: %d llama-quantize runs compared tensor by tensor\n", n_checked);
    CHECKF(n_checked == n_runs && n_runs >= 24, "checked %d of %d runs", n_checked, n_runs);
    free(rand);
    free(stories);
}

TEST(stories_legacy_types_do_not_abort)
{
    src_model *s = calloc(1, sizeof *s);
    REQUIRE(load_src("stories260K-F32", s), "no stories260K");
    int legacy[] = {QE_FTYPE_Q8_0, QE_FTYPE_Q4_0, QE_FTYPE_Q4_1, QE_FTYPE_Q5_0, QE_FTYPE_Q5_1};
    for (size_t k = 0; k < sizeof legacy / sizeof legacy[0]; k++) {
        qe_mix_opts o = opts_for(s, legacy[k], false);
        qe_mix_choice ch[64];
        qe_err err = {0};
        REQUIRE_OK(qe_mix_plan(&o, s->t, s->n, ch, &err), "%s", err.msg);
        int n_qeval = 0;
        for (int i = 0; i < s->n; i++) {
            if (ch[i].fallback == QE_FALLBACK_QEVAL) {
                n_qeval++;
                CHECK(strstr(s->t[i].name, "ffn_down") && ch[i].type == QE_TYPE_F16);
            }
            if (ch[i].type != QE_TYPE_F16 && ch[i].type != QE_TYPE_F32)
                CHECK(s->t[i].ne[0] % 32 == 0);
        }
        CHECKF(n_qeval == 5, "%s: %d tensors changed by qeval", qe_ftype_name(legacy[k]), n_qeval);
    }
    free(s);
}

/* Llama-3-8B shapes; llama.cpp's published file sizes (REFERENCE.md 2.3:
 * Q4_K_M 4.58 GiB, Q3_K_M 3.74 GiB, Q2_K 2.96 GiB; metadata < 10 MiB) */
TEST(llama3_8b_sizes)
{
    static char names[400][64];
    static qe_mix_tensor t[400];
    int n = 0;
    const int64_t E = 4096, F = 14336, V = 128256, KV = 1024;
#define ADD(nm, a, b, nd)                                                                      \
    do {                                                                                       \
        qe_strlcpy(names[n], nm, sizeof names[0]);                                             \
        t[n] = (qe_mix_tensor){names[n], nd, {a, b, 1, 1}, QE_TYPE_F16, -1};                  \
        n++;                                                                                   \
    } while (0)
    ADD("token_embd.weight", E, V, 2);
    ADD("output.weight", E, V, 2);
    ADD("output_norm.weight", E, 1, 1);
    for (int l = 0; l < 32; l++) {
        static const struct {
            const char *s;
            int64_t a, b;
            uint32_t nd;
        } L[] = {{"attn_q.weight", 4096, 4096, 2}, {"attn_k.weight", 4096, 1024, 2},
                 {"attn_v.weight", 4096, 1024, 2}, {"attn_output.weight", 4096, 4096, 2},
                 {"ffn_gate.weight", 4096, 14336, 2}, {"ffn_up.weight", 4096, 14336, 2},
                 {"ffn_down.weight", 14336, 4096, 2}, {"attn_norm.weight", 4096, 1, 1},
                 {"ffn_norm.weight", 4096, 1, 1}};
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s", l, L[k].s);
            ADD(nm, L[k].a, L[k].b, L[k].nd);
        }
    }
#undef ADD
    (void)F;
    (void)KV;
    struct {
        int ftype;
        double gib;
    } exp[] = {{QE_FTYPE_Q4_K_M, 4.58}, {QE_FTYPE_Q3_K_M, 3.74}, {QE_FTYPE_Q2_K, 2.96}};
    for (size_t k = 0; k < sizeof exp / sizeof exp[0]; k++) {
        qe_mix_opts o = {0};
        o.ftype = exp[k].ftype;
        o.output_type = o.token_embd_type = -1;
        o.arch = "llama";
        o.n_layer = 32;
        o.n_head = 32;
        o.n_head_kv = 8;
        qe_mix_choice *ch = calloc((size_t)n, sizeof *ch);
        qe_err err = {0};
        REQUIRE_OK(qe_mix_plan(&o, t, n, ch, &err), "%s", err.msg);
        uint64_t bytes = 0;
        for (int i = 0; i < n; i++)
            bytes += qe_mix_tensor_nbytes(ch[i].type, t[i].ne);
        double gib = (double)bytes / (1024.0 * 1024.0 * 1024.0);
        printf("  info: Llama-3-8B %s: %.3f GiB of tensors (llama.cpp file: %.2f GiB)\n",
               qe_ftype_name(exp[k].ftype), gib, exp[k].gib);
        CHECKF(gib <= exp[k].gib + 0.006 && gib >= exp[k].gib - 0.015, "%s: %.3f GiB, expected %.2f",
               qe_ftype_name(exp[k].ftype), gib, exp[k].gib);
        free(ch);
    }
    (void)E;
    (void)V;
}

TEST(imatrix_required)
{
    src_model *s = calloc(1, sizeof *s);
    REQUIRE(load_src("rand-llama-256-F32", s), "no rand-llama");
    int need[] = {QE_FTYPE_IQ2_XXS, QE_FTYPE_IQ2_XS, QE_FTYPE_IQ2_S, QE_FTYPE_IQ1_S,
                  QE_FTYPE_IQ1_M, QE_FTYPE_Q2_K_S};
    for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
        qe_mix_opts o = opts_for(s, need[k], false);
        qe_mix_choice ch[64];
        qe_err err = {0};
        int rc = qe_mix_plan(&o, s->t, s->n, ch, &err);
        CHECKF(rc == QE_EINVAL && strstr(err.msg, "importance matrix"), "%s: rc %d '%s'",
               qe_ftype_name(need[k]), rc, err.msg);
        o.has_imatrix = true;
        CHECKF(qe_mix_plan(&o, s->t, s->n, ch, &err) == 0, "%s with imatrix: %s",
               qe_ftype_name(need[k]), err.msg);
    }
    /* IQ2_XXS mix on rand-llama-256 (GQA 2): attn_v -> Q2_K, output -> Q5_K,
     * token_embd -> Q2_K, first n/8 = 0 ffn_down layers bumped: none */
    qe_mix_opts o = opts_for(s, QE_FTYPE_IQ2_XXS, true);
    qe_mix_choice ch[64];
    qe_err err = {0};
    REQUIRE_OK(qe_mix_plan(&o, s->t, s->n, ch, &err), "%s", err.msg);
    CHECK(ch[find_tensor(s, "output.weight")].type == QE_TYPE_Q5_K);
    CHECK(ch[find_tensor(s, "token_embd.weight")].type == QE_TYPE_Q2_K);
    CHECK(ch[find_tensor(s, "blk.0.attn_v.weight")].type == QE_TYPE_Q2_K);
    CHECK(ch[find_tensor(s, "blk.1.ffn_up.weight")].type == QE_TYPE_IQ2_XXS);
    free(s);
}

TEST(pure_and_overrides)
{
    src_model *s = calloc(1, sizeof *s);
    REQUIRE(load_src("rand-llama-256-F32", s), "no rand-llama");
    qe_mix_opts o = opts_for(s, QE_FTYPE_Q4_K_M, false);
    o.pure = true;
    qe_mix_choice ch[64];
    qe_err err = {0};
    REQUIRE_OK(qe_mix_plan(&o, s->t, s->n, ch, &err), "%s", err.msg);
    for (int i = 0; i < s->n; i++)
        CHECKF(ch[i].type == (s->t[i].n_dims >= 2 ? QE_TYPE_Q4_K : QE_TYPE_F32), "%s: %s",
               s->t[i].name, qe_type_name(ch[i].type));
    o.pure = false;
    o.leave_output = true;
    o.token_embd_type = QE_TYPE_Q8_0;
    REQUIRE_OK(qe_mix_plan(&o, s->t, s->n, ch, &err), "%s", err.msg);
    CHECK(ch[find_tensor(s, "output.weight")].type == QE_TYPE_F32);
    CHECK(!ch[find_tensor(s, "output.weight")].quantize);
    CHECK(ch[find_tensor(s, "token_embd.weight")].type == QE_TYPE_Q8_0);
    free(s);
}

/* ---- custom JSON recipes ------------------------------------------------ */

static qe_recipe *parse(const char *json, qe_err *err)
{
    return qe_recipe_parse(json, strlen(json), "recipe.json", err);
}

TEST(custom_recipe_rules)
{
    src_model *s = calloc(1, sizeof *s);
    REQUIRE(load_src("rand-llama-256-F32", s), "no rand-llama");
    qe_err err = {0};
    qe_recipe *r = parse("{\"name\": \"attn-hi\", \"base\": \"Q4_K_M\", \"rules\": ["
                         "{\"match\": \"attn_v\\\\.weight$\", \"type\": \"q8_0\"},"
                         "{\"match\": \"^blk\\\\.0\\\\.\", \"type\": \"Q6_K\"},"
                         "{\"match\": \"norm\", \"type\": \"q4_0\"}]}",
                         &err);
    REQUIRE(r, "%s", err.msg);
    CHECK(strcmp(qe_recipe_name(r), "attn-hi") == 0);
    CHECK(qe_recipe_base_ftype(r) == QE_FTYPE_Q4_K_M);
    CHECK(qe_recipe_n_rules(r) == 3);
    int idx;
    CHECK(qe_recipe_match(r, "blk.0.attn_v.weight", &idx) == QE_TYPE_Q8_0 && idx == 0);
    CHECK(qe_recipe_match(r, "blk.0.ffn_up.weight", &idx) == QE_TYPE_Q6_K && idx == 1);
    CHECK(qe_recipe_match(r, "blk.10.ffn_up.weight", &idx) == -1 && idx == -1);
    qe_recipe_apply(r, s->t, s->n);
    qe_mix_opts o = opts_for(s, qe_recipe_base_ftype(r), false);
    qe_mix_choice ch[64];
    REQUIRE_OK(qe_mix_plan(&o, s->t, s->n, ch, &err), "%s", err.msg);
    for (int i = 0; i < s->n; i++) {
        const char *nm = s->t[i].name;
        int want;
        if (s->t[i].n_dims < 2)
            want = QE_TYPE_F32; /* norms are never quantized, rule 2 ignored */
        else if (strstr(nm, "attn_v.weight"))
            want = QE_TYPE_Q8_0;
        else if (strncmp(nm, "blk.0.", 6) == 0)
            want = QE_TYPE_Q6_K;
        else if (strcmp(nm, "output.weight") == 0 || strcmp(nm, "blk.1.ffn_down.weight") == 0)
            want = QE_TYPE_Q6_K; /* base Q4_K_M rules */
        else
            want = QE_TYPE_Q4_K;
        CHECKF(ch[i].type == want, "%s: %s, want %s", nm, qe_type_name(ch[i].type),
               qe_type_name(want));
        CHECK(ch[i].source == (s->t[i].forced_type >= 0 ? QE_MIX_RULE
                               : s->t[i].n_dims < 2     ? QE_MIX_KEEP
                                                        : QE_MIX_BASE));
    }
    qe_recipe_free(r);

    /* no base: unmatched tensors keep their type; rule types fall back by
     * row length (stories260K: 64-wide -> q5_0, 172-wide -> f16) */
    src_model *st = calloc(1, sizeof *st);
    REQUIRE(load_src("stories260K-F32", st), "no stories");
    r = parse("{\"name\": \"ffn\", \"rules\": [{\"match\": \"ffn_(down|up)\", \"type\": \"q4_K\"}]}",
              &err);
    REQUIRE(r, "%s", err.msg);
    qe_recipe_apply(r, st->t, st->n);
    o = opts_for(st, qe_recipe_base_ftype(r), false);
    CHECK(o.ftype == -1);
    REQUIRE_OK(qe_mix_plan(&o, st->t, st->n, ch, &err), "%s", err.msg);
    CHECK(ch[find_tensor(st, "blk.2.ffn_down.weight")].type == QE_TYPE_F16);
    CHECK(ch[find_tensor(st, "blk.2.ffn_down.weight")].fallback == QE_FALLBACK_QEVAL);
    CHECK(ch[find_tensor(st, "blk.2.ffn_up.weight")].type == QE_TYPE_Q5_0);
    CHECK(ch[find_tensor(st, "blk.2.ffn_gate.weight")].type == QE_TYPE_F32);
    CHECK(!ch[find_tensor(st, "blk.2.ffn_gate.weight")].quantize);
    CHECK(ch[find_tensor(st, "output.weight")].type == QE_TYPE_F32);
    qe_recipe_free(r);
    free(st);
    free(s);
}

TEST(custom_recipe_errors)
{
    static const struct {
        const char *json;
        const char *msg;
    } bad[] = {
        {"{\"name\": \"x\", \"rules\": [{\"match\": \"a\", \"type\": \"q4_0\"}, "
         "{\"match\": \"b\", \"type\": \"q4_0\"}, {\"match\": \"c\", \"type\": \"q7_K\"}]}",
         "recipe.json: rules[2].type: unknown type 'q7_K'"},
        {"{\"name\": \"x\", \"rules\": [{\"match\": \"a\", \"typ\": \"q4_0\"}]}",
         "recipe.json: rules[0]: unknown key 'typ'"},
        {"{\"name\": \"x\", \"rulez\": []}", "recipe.json: unknown key 'rulez'"},
        {"{\"name\": \"x\", \"base\": \"Q4_K_X\", \"rules\": []}",
         "recipe.json: base: unknown mix 'Q4_K_X'"},
        {"{\"name\": \"x\", \"rules\": [{\"match\": \"blk\\\\.(\", \"type\": \"q4_0\"}]}",
         "recipe.json: rules[0].match: bad regex at pattern offset 6"},
        {"{\"name\": \"x\", \"rules\": [{\"match\": \"a\", \"type\": \"q8_K\"}]}",
         "recipe.json: rules[0].type: unknown type 'q8_K'"},
        {"{\"name\": \"x\", \"rules\": [{\"match\": 3, \"type\": \"q4_0\"}]}",
         "recipe.json: rules[0].match: expected a regex string"},
        {"{\"rules\": []}", "recipe.json: name: expected"},
        {"{\"name\": \"x\", \"rules\": []}", "changes nothing"},
        {"[1]", "expected a JSON object"},
        {"{\"name\": \"x\", \"rules\": [", "recipe.json: offset"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qe_err err = {0};
        qe_recipe *r = parse(bad[i].json, &err);
        CHECKF(!r && err.code == QE_EJSON && strstr(err.msg, bad[i].msg), "case %zu: code %d '%s'",
               i, err.code, err.msg);
        qe_recipe_free(r);
    }
    qe_err err = {0};
    CHECK(!qe_recipe_load("/nonexistent/recipe.json", &err) && err.code == QE_EIO);
}

/* ---- whole-model quantization vs llama-quantize output files ---------- */

static bool files_equal(const char *a, const char *b, size_t *n_out)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    qe_err err = {0};
    bool eq = qe_read_file(a, &x, &nx, &err) == 0 && qe_read_file(b, &y, &ny, &err) == 0 &&
              nx == ny && memcmp(x, y, nx) == 0;
    *n_out = nx;
    free(x);
    free(y);
    return eq;
}

/* Quantize with qeval, write GGUF, and compare with the llama.cpp file
 * byte for byte (same KV order, tensor order, quantized blocks). */
static void quantize_and_compare_in(const char *dir, qe_model *src, const char *mix,
                                    const qe_imatrix *im, const char *imat_path,
                                    const char *golden_name)
{
    qe_err err = {0};
    qe_quant_opts o;
    qe_quant_opts_init(&o);
    o.ftype = qe_ftype_from_name(mix);
    o.imatrix = im;
    o.n_threads = 2;
    qe_quant_report rep = {0};
    qe_model *q = qe_model_quantize(src, &o, &rep, &err);
    REQUIRE(q, "%s: %s", mix, err.msg);
    char out[] = "/tmp/qe_test_quant_XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    qe_gguf_write_info wi = {rep.ftype, im, imat_path};
    CHECKF(qe_model_write_gguf(q, src, out, &wi, &err) == 0, "%s: %s", mix, err.msg);
    char gp[256];
    snprintf(gp, sizeof gp, "%s%s", dir, golden_name);
    size_t n = 0;
    CHECKF(files_equal(out, test_asset(gp), &n), "%s: %s differs from llama.cpp's", mix, golden_name);
    /* effective bpw counts every tensor: bytes*8/params */
    CHECK(rep.n_params == qe_model_n_params(src));
    CHECK(fabs(rep.bpw - 8.0 * (double)rep.nbytes / (double)rep.n_params) < 1e-9);
    /* the file reads back (GGUF reader + loader) to the same tensors */
    qe_model *back = qe_model_load(out, NULL, &err);
    REQUIRE(back, "%s: reload: %s", mix, err.msg);
    CHECK(back->n_tensors == q->n_tensors);
    for (int i = 0; i < q->n_tensors; i++) {
        const qe_tensor *a = &q->tensors[i], *b = qe_model_tensor(back, a->name);
        CHECKF(b && b->type == a->type && b->nbytes == a->nbytes &&
                   memcmp(a->data, b->data, a->nbytes) == 0,
               "%s: %s differs after reload", mix, a->name);
    }
    CHECK(back->cfg.file_type == rep.ftype);
    printf("  info: %-14s %-7s bpw %.4f, %d converted, fallbacks %d llama / %d qeval, %zu bytes "
           "identical\n",
           golden_name[0] == 's' ? "stories260K" : "rand-llama-256", mix, rep.bpw, rep.n_converted,
           rep.n_fallback_llama, rep.n_fallback_qeval, n);
    qe_model_free(back);
    qe_quant_report_free(&rep);
    qe_model_free(q);
    unlink(out);
}

static void quantize_and_compare(qe_model *src, const char *mix, const qe_imatrix *im,
                                 const char *imat_path, const char *golden_name)
{
    quantize_and_compare_in("testdata/llamacpp/", src, mix, im, imat_path, golden_name);
}

/* The low-bit set (testdata/llamacpp-iq/golden-iq.json): every
 * llama-quantize run of rand-llama-256 there.  Per produced file: our
 * per-tensor types (check_golden_run) and the whole file byte for byte
 * (imatrix passed as "rand-llama-256.imatrix", the string llama-quantize
 * stored).  The refused run (IQ3_XXS without an imatrix) must be refused
 * on the same tensor. */
TEST(iq_golden_files)
{
    char *buf = NULL;
    size_t n = 0;
    qe_err err = {0};
    if (qe_read_file(test_asset("testdata/llamacpp-iq/golden-iq.json"), &buf, &n, &err)) {
        printf("  skipped: %s not found\n", test_asset("testdata/llamacpp-iq/golden-iq.json"));
        return;
    }
    cJSON *gj = cJSON_ParseWithLength(buf, n);
    free(buf);
    REQUIRE(gj, "golden-iq.json does not parse");
    src_model *rand = calloc(1, sizeof *rand);
    REQUIRE(load_src("rand-llama-256-F32", rand), "rand-llama-256-F32 not in golden.json");
    qe_model *m = qe_model_load(test_asset("testdata/llamacpp/rand-llama-256-F32.gguf"), NULL, &err);
    REQUIRE(m, "%s", err.msg);
    const char *ip = test_asset("testdata/llamacpp/rand-llama-256.imatrix");
    qe_imatrix *im = qe_imatrix_load(ip, &err);
    REQUIRE(im, "%s", err.msg);
    int n_files = 0, n_checked = 0, n_refused = 0;
    cJSON *files = cJSON_GetObjectItemCaseSensitive(gj, "files"), *f;
    cJSON_ArrayForEach(f, files)
    {
        const char *name = cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring;
        const char *file = cJSON_GetObjectItemCaseSensitive(f, "file")->valuestring;
        const char *status = cJSON_GetObjectItemCaseSensitive(f, "status")->valuestring;
        const char *cmd =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(f, "quantize"),
                                             "command")
                ->valuestring;
        const char *req = cJSON_GetObjectItemCaseSensitive(f, "requested_type")->valuestring;
        char mix[32];
        sscanf(req, "%31s", mix);
        bool imat = strstr(cmd, "--imatrix") != NULL;
        if (strcmp(status, "ok") != 0) {
            /* llama-quantize bailed out: so must the planner, naming the tensor */
            qe_mix_opts o = opts_for(rand, qe_ftype_from_name(mix), imat);
            qe_mix_choice ch[64];
            int rc = qe_mix_plan(&o, rand->t, rand->n, ch, &err);
            CHECKF(rc == QE_EINVAL && strstr(err.msg, "blk.0.attn_k.weight") &&
                       strstr(err.msg, "importance matrix"),
                   "%s: rc %d '%s'", name, rc, err.msg);
            n_refused++;
            continue;
        }
        n_files++;
        check_golden_run(f, rand, &n_checked);
        /* "rand-llama-256.imatrix": the path string llama-quantize stored */
        quantize_and_compare_in("testdata/llamacpp-iq/", m, mix, imat ? im : NULL,
                                imat ? "rand-llama-256.imatrix" : NULL, file);
    }
    printf("  info: %d low-bit files compared type by type and byte by byte, %d refusal\n",
           n_checked, n_refused);
    CHECKF(n_files == 17 && n_checked == 17 && n_refused == 1, "files %d checked %d refused %d",
           n_files, n_checked, n_refused);
    qe_imatrix_free(im);
    qe_model_free(m);
    free(rand);
    cJSON_Delete(gj);
}

TEST(quantize_matches_llamacpp_files)
{
    qe_err err = {0};
    qe_model *m = qe_model_load(test_asset("testdata/llamacpp/rand-llama-256-F32.gguf"), NULL, &err);
    REQUIRE(m, "%s", err.msg);
    static const char *const mixes[] = {"Q8_0",   "Q6_K",   "Q5_K_M", "Q5_K_S", "Q5_0",   "Q5_1",
                                        "Q4_K_M", "Q4_K_S", "Q4_0",   "Q4_1",   "Q3_K_L", "Q3_K_M",
                                        "Q3_K_S", "Q2_K",   "IQ4_NL", "IQ4_XS"};
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        char g[64];
        snprintf(g, sizeof g, "rand-llama-256-%s.gguf", mixes[i]);
        quantize_and_compare(m, mixes[i], NULL, NULL, g);
    }
    const char *ip = test_asset("testdata/llamacpp/rand-llama-256.imatrix");
    qe_imatrix *im = qe_imatrix_load(ip, &err);
    REQUIRE(im, "%s", err.msg);
    quantize_and_compare(m, "Q4_K_M", im, ip, "rand-llama-256-Q4_K_M-imat.gguf");
    quantize_and_compare(m, "IQ4_XS", im, ip, "rand-llama-256-IQ4_XS-imat.gguf");
    qe_imatrix_free(im);
    qe_model_free(m);

    m = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &err);
    REQUIRE(m, "%s", err.msg);
    quantize_and_compare(m, "Q6_K", NULL, NULL, "stories260K-Q6_K.gguf");
    quantize_and_compare(m, "Q4_K_M", NULL, NULL, "stories260K-Q4_K_M.gguf");
    quantize_and_compare(m, "Q2_K", NULL, NULL, "stories260K-Q2_K.gguf");
    qe_model_free(m);
}

/* Where llama.cpp aborts (Q8_0 on stories260K), qeval writes a file whose
 * 172-wide ffn_down tensors are F16 and that round-trips; requantizing an
 * already-quantized model dequantizes first. */
TEST(quantize_legacy_on_stories_and_requantize)
{
    qe_err err = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &err);
    REQUIRE(m, "%s", err.msg);
    qe_quant_opts o;
    qe_quant_opts_init(&o);
    o.ftype = QE_FTYPE_Q8_0;
    qe_quant_report rep = {0};
    qe_model *q = qe_model_quantize(m, &o, &rep, &err);
    REQUIRE(q, "%s", err.msg);
    CHECK(rep.n_fallback_qeval == 5 && rep.n_fallback_llama == 0);
    for (int i = 0; i < q->n_tensors; i++) {
        const qe_tensor *t = &q->tensors[i];
        int want = t->n_dims < 2 ? QE_TYPE_F32 : strstr(t->name, "ffn_down") ? QE_TYPE_F16 : QE_TYPE_Q8_0;
        CHECKF(t->type == want, "%s: %s", t->name, qe_type_name(t->type));
    }
    /* F16 conversion of ffn_down is exact to fp16 rounding */
    const qe_tensor *a = qe_model_tensor(m, "blk.1.ffn_down.weight"), *b = qe_model_tensor(q, "blk.1.ffn_down.weight");
    const float *af = a->data;
    const uint16_t *bh = b->data;
    for (int j = 0; j < 172 * 64; j++)
        if (qe_fp16_to_fp32(bh[j]) != qe_fp16_to_fp32(qe_fp32_to_fp16(af[j]))) {
            CHECKF(0, "element %d", j);
            break;
        }
    /* requantize Q8_0 -> Q4_K_M: source blocks are dequantized first */
    qe_quant_opts o2;
    qe_quant_opts_init(&o2);
    o2.ftype = QE_FTYPE_Q4_K_M;
    qe_quant_report rep2 = {0};
    qe_model *q2 = qe_model_quantize(q, &o2, &rep2, &err);
    CHECKF(q2 != NULL, "%s", err.msg);
    if (q2) {
        CHECK(qe_model_tensor(q2, "blk.0.attn_q.weight")->type == QE_TYPE_Q5_0);
        CHECK(qe_model_tensor(q2, "output.weight")->type == QE_TYPE_Q8_0);
        CHECK(rep2.bpw > 4.0 && rep2.bpw < rep.bpw);
    }
    qe_quant_report_free(&rep2);
    qe_model_free(q2);
    qe_quant_report_free(&rep);
    qe_model_free(q);
    qe_model_free(m);
}

int main(void)
{
    RUN(ftype_ids_and_names);
    RUN(fallback_table);
    RUN(quantizable_names);
    RUN(golden_llamacpp_mixes);
    RUN(stories_legacy_types_do_not_abort);
    RUN(llama3_8b_sizes);
    RUN(imatrix_required);
    RUN(pure_and_overrides);
    RUN(custom_recipe_rules);
    RUN(custom_recipe_errors);
    RUN(quantize_matches_llamacpp_files);
    RUN(iq_golden_files);
    RUN(quantize_legacy_on_stories_and_requantize);
    cJSON_Delete(g_golden);
    return test_finish();
}
