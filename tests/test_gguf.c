/*
 * test_gguf.c: the GGUF reader/writer against real llama.cpp files and a
 * hostile corpus generated here by patching bytes of a real file.
 *
 * References (independent of our parser):
 *   - byte identity: every *.gguf under $QEVAL_ASSETS, read then written,
 *     must equal the file llama.cpp / gguf-py wrote;
 *   - golden.json (what llama.cpp reported for each testdata file): tensor
 *     types and shapes, and the scalar metadata values;
 *   - stories260K.bin (llama2.c export of the same weights): the raw bytes
 *     of token_embd.weight must equal its token embedding table.
 * Hostile inputs (see tests/hostile/README.md) each expect one QE_E* code
 * and a message naming the file, the field and the offset.
 */
#include "../harness/model/gguf.h"
#include "../quant/quant.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

static char g_tmpdir[256];

static const char *tmp_path(const char *leaf)
{
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", g_tmpdir, leaf);
    return b;
}

/* Whole file into memory; NULL on failure. */
static uint8_t *slurp(const char *path, size_t *n)
{
    char *buf = NULL;
    if (qe_read_file(path, &buf, n, NULL) != 0)
        return NULL;
    return (uint8_t *)buf;
}

static void put_u32_at(uint8_t *b, size_t off, uint32_t v)
{
    memcpy(b + off, &v, 4);
}

static void put_u64_at(uint8_t *b, size_t off, uint64_t v)
{
    memcpy(b + off, &v, 8);
}

/* File offset of the length field of a string the reader returned. */
static size_t str_off(const qe_gguf *g, qe_gguf_str s)
{
    return (size_t)((const uint8_t *)s.ptr - g->base) - 8;
}

/* Offsets of the fields of tensor info i (after its name). */
typedef struct tinfo_off {
    size_t name, n_dims, ne, type, offset;
} tinfo_off;

static tinfo_off tensor_fields(const qe_gguf *g, uint64_t i)
{
    const qe_gguf_tensor *t = &g->tensors[i];
    tinfo_off o;
    o.name = str_off(g, t->name);
    o.n_dims = o.name + 8 + (size_t)t->name.len;
    o.ne = o.n_dims + 4;
    o.type = o.ne + 8 * (size_t)t->n_dims;
    o.offset = o.type + 4;
    return o;
}

/* Open a copy of buf[0..n) in an exactly sized allocation (so ASan sees any
 * read past the end) and expect failure with `code` and a message holding
 * the name and each non-NULL needle. */
static void expect_fail_(const uint8_t *buf, size_t n, const char *name, int code,
                         const char *n1, const char *n2, int line)
{
    uint8_t *c = malloc(n ? n : 1);
    if (n)
        memcpy(c, buf, n);
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(c, n, name, &e);
    CHECKF(g == NULL, "line %d: %s opened but should fail with %s", line, name, qe_strerror(code));
    CHECKF(e.code == code, "line %d: %s: got %s, want %s: %s", line, name, qe_strerror(e.code),
           qe_strerror(code), e.msg);
    CHECKF(strstr(e.msg, name) != NULL, "line %d: message lacks file name: %s", line, e.msg);
    CHECKF(strstr(e.msg, "offset ") != NULL, "line %d: message lacks offset: %s", line, e.msg);
    CHECKF(!n1 || strstr(e.msg, n1), "line %d: message lacks '%s': %s", line, n1, e.msg);
    CHECKF(!n2 || strstr(e.msg, n2), "line %d: message lacks '%s': %s", line, n2, e.msg);
    qe_gguf_close(g);
    free(c);
}
#define expect_fail(buf, n, name, code, n1, n2) expect_fail_(buf, n, name, code, n1, n2, __LINE__)

/* ---- round trip over every asset file ----------------------------------- */

enum { MAX_FILES = 256 };
static char *g_files[MAX_FILES];
static int g_n_files;

static int collect(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    size_t n = strlen(path);
    if (flag == FTW_F && n > 5 && strcmp(path + n - 5, ".gguf") == 0 && g_n_files < MAX_FILES)
        g_files[g_n_files++] = strdup(path);
    return 0;
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

TEST(roundtrip_every_asset_file)
{
    int walk = nftw(test_asset(""), collect, 16, 0); /* REQUIRE evaluates twice */
    REQUIRE(walk == 0, "cannot walk %s", test_asset(""));
    qsort(g_files, (size_t)g_n_files, sizeof *g_files, cmp_strp);
    int n_same = 0, n_model = 0, n_testdata = 0, n_vocab = 0;
    uint64_t total = 0;
    for (int i = 0; i < g_n_files; i++) {
        const char *p = g_files[i];
        qe_err e = {0};
        qe_gguf *g = qe_gguf_open(p, &e);
        CHECKF(g != NULL, "%s: %s", p, e.msg);
        if (!g)
            continue;
        qe_gguf_builder *b = qe_gguf_builder_from(g, &e);
        CHECKF(b != NULL, "%s: %s", p, e.msg);
        const char *out = tmp_path("rt.gguf");
        int rc = b ? qe_gguf_builder_write(b, out, &e) : -1;
        CHECKF(rc == 0, "%s: write: %s", p, e.msg);
        size_t n_out = 0;
        uint8_t *w = rc == 0 ? slurp(out, &n_out) : NULL;
        bool same = w && n_out == g->nbytes && memcmp(w, g->base, n_out) == 0;
        if (!same && w) {
            size_t k = 0;
            while (k < n_out && k < g->nbytes && w[k] == g->base[k])
                k++;
            CHECKF(same, "%s: written copy differs at byte %zu (sizes %zu vs %zu)", p, k, n_out,
                   g->nbytes);
        }
        if (same) {
            n_same++;
            total += n_out;
            n_model += strstr(p, "/models/") != NULL;
            n_testdata += strstr(p, "/testdata/") != NULL;
            n_vocab += strstr(p, "/tokenizers/") != NULL;
        }
        /* The in-memory writer produces the same bytes. */
        uint8_t *m = NULL;
        size_t n_m = 0;
        if (b && qe_gguf_builder_write_mem(b, &m, &n_m, &e) == 0)
            CHECKF(n_m == g->nbytes && memcmp(m, g->base, n_m) == 0, "%s: write_mem differs", p);
        else
            CHECKF(0, "%s: write_mem: %s", p, e.msg);
        free(m);
        free(w);
        qe_gguf_builder_free(b);
        qe_gguf_close(g);
        unlink(out);
    }
    printf("  round trip: %d of %d .gguf files byte-identical (%d model, %d testdata, %d vocab; %.1f MB)\n",
           n_same, g_n_files, n_model, n_testdata, n_vocab, (double)total / 1e6);
    CHECKF(g_n_files >= 3 && n_same == g_n_files, "%d of %d identical", n_same, g_n_files);
    CHECKF(n_model >= 1 && n_testdata >= 1 && n_vocab >= 1, "model %d testdata %d vocab %d",
           n_model, n_testdata, n_vocab);
    for (int i = 0; i < g_n_files; i++)
        free(g_files[i]);
}

/* The fuzz seeds were written by an independent serialiser
 * (tests/hostile/mkseeds.py): nested arrays, v2, alignment 64, no tensors.
 * Each must open and be rewritten byte for byte. */
TEST(roundtrip_python_written_seeds)
{
    static const char *names[] = {"small-model.gguf", "small-v2-align64.gguf", "vocab-only.gguf",
                                  "nested.gguf"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "tests/fuzz_seeds/gguf/%s", names[i]);
        qe_err e = {0};
        qe_gguf *g = qe_gguf_open(p, &e);
        CHECKF(g, "%s: %s", p, e.msg);
        if (!g)
            continue;
        qe_gguf_builder *b = qe_gguf_builder_from(g, &e);
        uint8_t *m = NULL;
        size_t n = 0;
        CHECKF(b && qe_gguf_builder_write_mem(b, &m, &n, &e) == 0 && n == g->nbytes &&
                   !memcmp(m, g->base, n), "%s: not rewritten byte for byte", p);
        if (i == 1)
            CHECK(g->version == 2 && g->alignment == 64 && g->data_offset % 64 == 0);
        free(m);
        qe_gguf_builder_free(b);
        qe_gguf_close(g);
    }
}

/* KVs are deep copies: a builder from a (tensor-free) vocab file still
 * writes the same bytes after the reader is closed. */
TEST(builder_outlives_reader)
{
    const char *p = test_asset("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
    size_t n = 0;
    uint8_t *orig = slurp(p, &n);
    REQUIRE(orig, "cannot read %s", p);
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open(p, &e);
    REQUIRE(g, "%s", e.msg);
    CHECK(g->n_tensors == 0);
    qe_gguf_builder *b = qe_gguf_builder_from(g, &e);
    qe_gguf_close(g);
    REQUIRE(b, "%s", e.msg);
    uint8_t *m = NULL;
    size_t n_m = 0;
    CHECKF(qe_gguf_builder_write_mem(b, &m, &n_m, &e) == 0, "%s", e.msg);
    CHECK(n_m == n && m && memcmp(m, orig, n) == 0);
    free(m);
    free(orig);
    qe_gguf_builder_free(b);
}

/* ---- known values --------------------------------------------------------- */

TEST(known_values_stories260K)
{
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open(test_asset("models/stories260K/stories260K.gguf"), &e);
    REQUIRE(g, "%s", e.msg);
    CHECK(g->version == 3);
    CHECKF(g->n_tensors == 48, "%llu", (unsigned long long)g->n_tensors);
    CHECKF(g->n_kv == 19, "%llu", (unsigned long long)g->n_kv);
    CHECK(g->alignment == 32);
    CHECK(g->data_offset % 32 == 0);
    char s[64];
    CHECK(qe_gguf_get_str(g, "general.architecture", s, sizeof s, &e) == 0 && !strcmp(s, "llama"));
    /* Truncating copy. */
    CHECK(qe_gguf_get_str(g, "general.architecture", s, 3, &e) == 0 && !strcmp(s, "ll"));
    uint64_t u = 0;
    CHECK(qe_gguf_get_u64(g, "llama.embedding_length", &u, &e) == 0 && u == 64);
    CHECK(qe_gguf_get_u64(g, "llama.block_count", &u, &e) == 0 && u == 5);
    int64_t i64 = 0;
    CHECK(qe_gguf_get_i64(g, "llama.feed_forward_length", &i64, &e) == 0 && i64 == 172);
    double f = 0;
    CHECK(qe_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &f, &e) == 0 &&
          f == (double)1e-5f);
    CHECK(qe_gguf_get_f64(g, "llama.block_count", &f, &e) == 0 && f == 5.0);
    /* Type errors and absent keys: specific codes, out untouched. */
    u = 7;
    CHECK(qe_gguf_get_u64(g, "llama.attention.layer_norm_rms_epsilon", &u, &e) == QE_ETYPE && u == 7);
    CHECK(strstr(e.msg, "layer_norm_rms_epsilon") && strstr(e.msg, "f32"));
    CHECK(qe_gguf_get_u64(g, "no.such.key", &u, &e) == QE_ENOTFOUND && u == 7);
    bool bo = false;
    CHECK(qe_gguf_get_bool(g, "general.architecture", &bo, &e) == QE_ETYPE);
    CHECK(qe_gguf_get_str(g, "llama.block_count", s, sizeof s, &e) == QE_ETYPE);
    CHECK(qe_gguf_find_kv(g, "general.architecture") >= 0);
    CHECK(qe_gguf_find_kv(g, "general.architectur") == -1);

    const qe_gguf_value *tok = qe_gguf_get(g, "tokenizer.ggml.tokens");
    REQUIRE(tok && tok->type == QE_GGUF_ARRAY, "tokens");
    CHECK(tok->v.arr.elem_type == QE_GGUF_STRING && tok->v.arr.n == 512);
    CHECK(qe_gguf_str_eq(tok->v.arr.strs[0], "<unk>") && qe_gguf_str_eq(tok->v.arr.strs[1], "<s>"));
    const qe_gguf_value *sc = qe_gguf_get(g, "tokenizer.ggml.scores");
    CHECK(sc && sc->type == QE_GGUF_ARRAY && sc->v.arr.elem_type == QE_GGUF_FLOAT32 &&
          sc->v.arr.n == 512);

    const qe_gguf_tensor *t = qe_gguf_find_tensor(g, "token_embd.weight");
    REQUIRE(t, "token_embd.weight missing");
    CHECK(t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 && t->ne[2] == 1 && t->ne[3] == 1);
    CHECK(t->type == QE_TYPE_F32 && t->nbytes == 64 * 512 * 4);
    CHECK(qe_gguf_find_tensor(g, "token_embd.weigh") == NULL);
    const qe_gguf_tensor *d = qe_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    CHECK(d && d->ne[0] == 172 && d->ne[1] == 64);

    /* Independent check of the data pointer: llama2.c's export of the same
     * weights stores the token embedding table right after its 7-int
     * header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq). */
    size_t nb = 0;
    uint8_t *bin = slurp(test_asset("models/stories260K/stories260K.bin"), &nb);
    REQUIRE(bin && nb > 28 + t->nbytes, "stories260K.bin");
    int32_t hdr[7];
    memcpy(hdr, bin, sizeof hdr);
    CHECK(hdr[0] == 64 && hdr[1] == 172 && hdr[2] == 5 && abs(hdr[5]) == 512);
    CHECK(memcmp(bin + 28, t->data, (size_t)t->nbytes) == 0);
    free(bin);
    qe_gguf_close(g);
}

static const char *golden_path(const char *file)
{
    static char b[1024];
    if (!strncmp(file, "../shared/", 10))
        return test_asset(file + 10);
    snprintf(b, sizeof b, "%s", test_asset("testdata/llamacpp/"));
    strncat(b, file, sizeof b - strlen(b) - 1);
    return b;
}

/* Every file in golden.json: tensor types and shapes, scalar metadata. */
TEST(golden_json_types_shapes_metadata)
{
    char *txt = NULL;
    size_t n = 0;
    int rc = qe_read_file(test_asset("testdata/llamacpp/golden.json"), &txt, &n, NULL);
    REQUIRE(rc == 0, "golden.json");
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    REQUIRE(root, "golden.json does not parse");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files"), *f;
    int n_files = 0, n_tensors = 0, n_meta = 0;
    cJSON_ArrayForEach(f, files)
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(f, "status");
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(f, "file");
        if (!cJSON_IsString(st) || strcmp(st->valuestring, "ok") || !cJSON_IsString(file))
            continue;
        const char *p = golden_path(file->valuestring);
        qe_err e = {0};
        qe_gguf *g = qe_gguf_open(p, &e);
        CHECKF(g, "%s: %s", p, e.msg);
        if (!g)
            continue;
        n_files++;
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(f, "size_bytes");
        CHECKF(!cJSON_IsNumber(sz) || (double)g->nbytes == sz->valuedouble, "%s size", p);
        const cJSON *types = cJSON_GetObjectItemCaseSensitive(f, "tensor_types");
        const cJSON *shapes = cJSON_GetObjectItemCaseSensitive(f, "tensor_shapes");
        const cJSON *it;
        CHECKF(cJSON_GetArraySize(types) == (int)g->n_tensors, "%s: %d golden tensors vs %llu", p,
               cJSON_GetArraySize(types), (unsigned long long)g->n_tensors);
        cJSON_ArrayForEach(it, types)
        {
            const qe_gguf_tensor *t = qe_gguf_find_tensor(g, it->string);
            CHECKF(t, "%s: tensor %s missing", p, it->string);
            if (!t)
                continue;
            n_tensors++;
            CHECKF(t->type == qe_type_from_name(it->valuestring), "%s: %s is %s, golden %s", p,
                   it->string, qe_type_name(t->type), it->valuestring);
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(shapes, it->string), *d;
            CHECKF(cJSON_GetArraySize(sh) == (int)t->n_dims, "%s: %s n_dims", p, it->string);
            int j = 0;
            cJSON_ArrayForEach(d, sh)
            {
                CHECKF(j < 4 && (double)t->ne[j] == d->valuedouble, "%s: %s ne[%d]", p, it->string, j);
                j++;
            }
        }
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(f, "metadata");
        cJSON_ArrayForEach(it, meta)
        {
            if (cJSON_IsString(it)) {
                char s[256];
                CHECKF(qe_gguf_get_str(g, it->string, s, sizeof s, &e) == 0 &&
                           !strcmp(s, it->valuestring), "%s: %s", p, it->string);
                n_meta++;
            } else if (cJSON_IsNumber(it)) {
                double v = 0;
                CHECKF(qe_gguf_get_f64(g, it->string, &v, &e) == 0 && v == it->valuedouble,
                       "%s: %s = %.17g, golden %.17g (%s)", p, it->string, v, it->valuedouble, e.msg);
                n_meta++;
            }
        }
        qe_gguf_close(g);
    }
    printf("  golden.json: %d files, %d tensor types+shapes, %d metadata values match\n", n_files,
           n_tensors, n_meta);
    CHECK(n_files >= 20 && n_tensors >= 400 && n_meta >= 100);
    cJSON_Delete(root);
}

/* ---- editing ------------------------------------------------------------ */

TEST(edit_kvs_and_tensors)
{
    const char *src = test_asset("testdata/llamacpp/stories260K-Q2_K.gguf");
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open(src, &e);
    REQUIRE(g, "%s", e.msg);
    qe_gguf_builder *b = qe_gguf_builder_from(g, &e);
    REQUIRE(b, "%s", e.msg);

    /* KVs: replace in place, append, remove. */
    CHECK(qe_gguf_builder_set_str(b, "general.name", "edited model", &e) == 0);
    CHECK(qe_gguf_builder_set_u32(b, "qeval.test.u32", 123456u, &e) == 0);
    CHECK(qe_gguf_builder_set_i32(b, "qeval.test.i32", -42, &e) == 0);
    CHECK(qe_gguf_builder_set_f32(b, "qeval.test.f32", 0.1f, &e) == 0);
    CHECK(qe_gguf_builder_set_bool(b, "qeval.test.bool", true, &e) == 0);
    const char *strs[] = {"a", "", "ünïcode"};
    CHECK(qe_gguf_builder_set_str_array(b, "qeval.test.strs", strs, 3, &e) == 0);
    CHECK(qe_gguf_builder_remove(b, "llama.rope.dimension_count") == 0);
    CHECK(qe_gguf_builder_remove(b, "llama.rope.dimension_count") == QE_ENOTFOUND);
    CHECK(qe_gguf_builder_set_u32(b, "llama.block_count", 6, &e) == 0); /* replace, same slot */

    /* Tensors: replace output.weight (Q8_0 {64,512}) by F32 data, which
     * moves every later tensor; replace a norm; append a new tensor. */
    const qe_gguf_tensor *ow = qe_gguf_find_tensor(g, "output.weight");
    REQUIRE(ow && ow->type == QE_TYPE_Q8_0, "output.weight should be Q8_0 (GOLDEN.md)");
    int64_t ne_out[2] = {64, 512};
    float *fo = malloc(64 * 512 * sizeof *fo);
    for (int i = 0; i < 64 * 512; i++)
        fo[i] = (float)i * 0.25f;
    CHECK(qe_gguf_builder_set_tensor(b, "output.weight", QE_TYPE_F32, 2, ne_out, fo,
                                     64 * 512 * 4, &e) == 0);
    float nrm[64];
    for (int i = 0; i < 64; i++)
        nrm[i] = 1.0f + (float)i;
    int64_t ne_n = 64;
    CHECK(qe_gguf_builder_set_tensor(b, "output_norm.weight", QE_TYPE_F32, 1, &ne_n, nrm,
                                     sizeof nrm, &e) == 0);
    uint16_t h[3 * 7];
    for (int i = 0; i < 21; i++)
        h[i] = qe_fp32_to_fp16((float)i);
    int64_t ne_x[3] = {3, 7, 1};
    CHECK(qe_gguf_builder_set_tensor(b, "qeval.extra", QE_TYPE_F16, 3, ne_x, h, sizeof h, &e) == 0);
    /* Bad tensors: specific codes, builder unchanged. */
    CHECK(qe_gguf_builder_set_tensor(b, "bad", QE_TYPE_F32, 1, &ne_n, nrm, 12, &e) == QE_ESHAPE);
    CHECK(qe_gguf_builder_set_tensor(b, "bad", 4, 1, &ne_n, nrm, 256, &e) == QE_ETYPE);
    int64_t ne_bad = 48;
    CHECK(qe_gguf_builder_set_tensor(b, "bad", QE_TYPE_Q8_0, 1, &ne_bad, nrm, 51, &e) == QE_ESHAPE);
    CHECK(qe_gguf_builder_set_tensor(b, "bad", QE_TYPE_F32, 5, ne_x, nrm, 4, &e) == QE_EINVAL);

    const char *out = tmp_path("edited.gguf");
    CHECKF(qe_gguf_builder_write(b, out, &e) == 0, "%s", e.msg);
    qe_gguf *h2 = qe_gguf_open(out, &e);
    REQUIRE(h2, "%s", e.msg);
    char s[64];
    CHECK(qe_gguf_get_str(h2, "general.name", s, sizeof s, &e) == 0 && !strcmp(s, "edited model"));
    uint64_t u = 0;
    int64_t i64 = 0;
    double f = 0;
    bool bo = false;
    CHECK(qe_gguf_get_u64(h2, "qeval.test.u32", &u, &e) == 0 && u == 123456u);
    CHECK(qe_gguf_get(h2, "qeval.test.u32")->type == QE_GGUF_UINT32);
    CHECK(qe_gguf_get_i64(h2, "qeval.test.i32", &i64, &e) == 0 && i64 == -42);
    CHECK(qe_gguf_get_u64(h2, "qeval.test.i32", &u, &e) == QE_ETYPE);
    CHECK(qe_gguf_get_f64(h2, "qeval.test.f32", &f, &e) == 0 && f == (double)0.1f);
    CHECK(qe_gguf_get_bool(h2, "qeval.test.bool", &bo, &e) == 0 && bo);
    CHECK(qe_gguf_get_u64(h2, "llama.block_count", &u, &e) == 0 && u == 6);
    CHECK(qe_gguf_find_kv(h2, "llama.block_count") == qe_gguf_find_kv(g, "llama.block_count"));
    CHECK(qe_gguf_find_kv(h2, "llama.rope.dimension_count") == -1);
    CHECK(h2->n_kv == g->n_kv - 1 + 5);
    const qe_gguf_value *sa = qe_gguf_get(h2, "qeval.test.strs");
    CHECK(sa && sa->type == QE_GGUF_ARRAY && sa->v.arr.n == 3 &&
          qe_gguf_str_eq(sa->v.arr.strs[0], "a") && qe_gguf_str_eq(sa->v.arr.strs[1], "") &&
          qe_gguf_str_eq(sa->v.arr.strs[2], "ünïcode"));

    CHECK(h2->n_tensors == g->n_tensors + 1);
    uint64_t n_same = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const qe_gguf_tensor *a = &g->tensors[i], *c = &h2->tensors[i];
        CHECK(c->offset % h2->alignment == 0);
        if (qe_gguf_str_eq(a->name, "output.weight") || qe_gguf_str_eq(a->name, "output_norm.weight"))
            continue;
        /* Same order, same name/type/shape/bytes even where offsets moved. */
        n_same += a->name.len == c->name.len && !memcmp(a->name.ptr, c->name.ptr, a->name.len) &&
                  a->type == c->type && a->nbytes == c->nbytes &&
                  !memcmp(a->data, c->data, (size_t)a->nbytes);
    }
    CHECK(n_same == g->n_tensors - 2);
    const qe_gguf_tensor *t = qe_gguf_find_tensor(h2, "output.weight");
    CHECK(t && t->type == QE_TYPE_F32 && t->nbytes == 64 * 512 * 4 &&
          !memcmp(t->data, fo, (size_t)t->nbytes));
    t = qe_gguf_find_tensor(h2, "output_norm.weight");
    CHECK(t && !memcmp(t->data, nrm, sizeof nrm));
    t = qe_gguf_find_tensor(h2, "qeval.extra");
    CHECK(t && t == &h2->tensors[h2->n_tensors - 1] && t->type == QE_TYPE_F16 && t->n_dims == 3 &&
          t->ne[0] == 3 && t->ne[1] == 7 && t->ne[2] == 1 && !memcmp(t->data, h, sizeof h));
    /* Files are atomically replaced: no temp files left behind. */
    CHECK(access(out, F_OK) == 0);

    /* Alignment 64: data section and every offset move to multiples of 64. */
    CHECK(qe_gguf_builder_set_u32(b, "general.alignment", 64, &e) == 0);
    CHECK(qe_gguf_builder_remove_tensor(b, "qeval.extra") == 0);
    CHECK(qe_gguf_builder_remove_tensor(b, "qeval.extra") == QE_ENOTFOUND);
    uint8_t *m = NULL;
    size_t n_m = 0;
    CHECKF(qe_gguf_builder_write_mem(b, &m, &n_m, &e) == 0, "%s", e.msg);
    qe_gguf *h3 = qe_gguf_open_mem(m, n_m, "aligned64", &e);
    CHECKF(h3, "%s", e.msg);
    if (h3) {
        CHECK(h3->alignment == 64 && h3->data_offset % 64 == 0 && h3->n_tensors == g->n_tensors);
        for (uint64_t i = 0; i < h3->n_tensors; i++)
            CHECK(h3->tensors[i].offset % 64 == 0);
    }
    qe_gguf_close(h3);
    free(m);
    /* A bad alignment KV is refused at write time. */
    CHECK(qe_gguf_builder_set_u32(b, "general.alignment", 48, &e) == 0);
    CHECK(qe_gguf_builder_write_mem(b, &m, &n_m, &e) == QE_EFORMAT && m == NULL);
    CHECK(qe_gguf_builder_set_str(b, "general.alignment", "32", &e) == 0);
    CHECK(qe_gguf_builder_write(b, tmp_path("never.gguf"), &e) == QE_ETYPE);
    CHECK(access(tmp_path("never.gguf"), F_OK) != 0);

    qe_gguf_close(h2);
    qe_gguf_builder_free(b);
    qe_gguf_close(g);
    free(fo);
    unlink(out);
}

/* Nested arrays (gguf-py writes them; llama.cpp tools do not): every
 * level round-trips, and MAX_DEPTH levels are accepted. */
TEST(nested_arrays_roundtrip)
{
    qe_err e = {0};
    qe_gguf_builder *b = qe_gguf_builder_new(3, &e);
    REQUIRE(b, "%s", e.msg);
    int32_t row0[2] = {1, -2}, row1[3] = {3, 4, 5};
    qe_gguf_value rows[2] = {{.type = QE_GGUF_ARRAY}, {.type = QE_GGUF_ARRAY}};
    rows[0].v.arr.elem_type = QE_GGUF_INT32, rows[0].v.arr.n = 2, rows[0].v.arr.data = row0;
    rows[1].v.arr.elem_type = QE_GGUF_INT32, rows[1].v.arr.n = 3, rows[1].v.arr.data = row1;
    qe_gguf_value mat = {.type = QE_GGUF_ARRAY};
    mat.v.arr.elem_type = QE_GGUF_ARRAY, mat.v.arr.n = 2, mat.v.arr.items = rows;
    CHECK(qe_gguf_builder_set_value(b, "nested.i32", &mat, &e) == 0);

    /* QE_GGUF_MAX_DEPTH levels: accepted; one more: refused (EFORMAT). */
    qe_gguf_value lv[QE_GGUF_MAX_DEPTH + 1];
    memset(lv, 0, sizeof lv);
    uint8_t leaf = 7;
    for (int d = QE_GGUF_MAX_DEPTH; d >= 0; d--) {
        lv[d].type = QE_GGUF_ARRAY;
        lv[d].v.arr.n = 1;
        if (d == QE_GGUF_MAX_DEPTH) {
            lv[d].v.arr.elem_type = QE_GGUF_UINT8, lv[d].v.arr.data = &leaf;
        } else {
            lv[d].v.arr.elem_type = QE_GGUF_ARRAY, lv[d].v.arr.items = &lv[d + 1];
        }
    }
    CHECK(qe_gguf_builder_set_value(b, "deep.ok", &lv[1], &e) == 0);
    CHECK(qe_gguf_builder_set_value(b, "deep.bad", &lv[0], &e) == QE_EFORMAT);
    CHECK(qe_gguf_builder_set_bool(b, "flag", false, &e) == 0);

    uint8_t *m = NULL;
    size_t n = 0;
    int rc = qe_gguf_builder_write_mem(b, &m, &n, &e);
    REQUIRE(rc == 0, "%s", e.msg);
    /* No tensors: the file ends right after the header (no padding). */
    qe_gguf *g = qe_gguf_open_mem(m, n, "nested", &e);
    REQUIRE(g, "%s", e.msg);
    CHECK(g->n_kv == 3 && g->n_tensors == 0);
    const qe_gguf_value *v = qe_gguf_get(g, "nested.i32");
    REQUIRE(v && v->type == QE_GGUF_ARRAY && v->v.arr.elem_type == QE_GGUF_ARRAY && v->v.arr.n == 2,
            "nested.i32");
    const qe_gguf_value *r1 = &v->v.arr.items[1];
    int32_t got[3];
    CHECK(r1->v.arr.elem_type == QE_GGUF_INT32 && r1->v.arr.n == 3);
    memcpy(got, r1->v.arr.data, sizeof got);
    CHECK(got[0] == 3 && got[1] == 4 && got[2] == 5);
    v = qe_gguf_get(g, "deep.ok");
    int depth = 0;
    while (v && v->type == QE_GGUF_ARRAY && v->v.arr.elem_type == QE_GGUF_ARRAY) {
        v = &v->v.arr.items[0];
        depth++;
    }
    CHECK(depth == QE_GGUF_MAX_DEPTH - 1 && v && *(const uint8_t *)v->v.arr.data == 7);
    /* Reader -> builder -> bytes is the identity here too. */
    qe_gguf_builder *b2 = qe_gguf_builder_from(g, &e);
    uint8_t *m2 = NULL;
    size_t n2 = 0;
    CHECK(b2 && qe_gguf_builder_write_mem(b2, &m2, &n2, &e) == 0 && n2 == n && !memcmp(m, m2, n));
    free(m2);
    qe_gguf_builder_free(b2);
    qe_gguf_close(g);
    free(m);
    qe_gguf_builder_free(b);
    CHECK(qe_gguf_builder_new(1, &e) == NULL && e.code == QE_EVERSION);
    CHECK(!strcmp(qe_gguf_vtype_name(QE_GGUF_STRING), "str") && qe_gguf_vtype_name(13) == NULL &&
          qe_gguf_vtype_name(-1) == NULL);
}

/* ---- hostile corpus -------------------------------------------------------- */

/* Cut stories260K-Q2_K.gguf at every offset from 0 to the data section. */
TEST(hostile_truncation_every_offset)
{
    size_t n = 0;
    uint8_t *f = slurp(test_asset("testdata/llamacpp/stories260K-Q2_K.gguf"), &n);
    REQUIRE(f, "cannot read stories260K-Q2_K.gguf");
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(f, n, "q2k", &e);
    REQUIRE(g, "%s", e.msg);
    size_t end = (size_t)g->data_offset;
    qe_gguf_close(g);
    int n_trunc = 0, n_bounds = 0, n_bad = 0;
    for (size_t cut = 0; cut <= end; cut++) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, f, cut);
        g = qe_gguf_open_mem(c, cut, "cut.gguf", &e);
        bool ok = g == NULL && (e.code == QE_ETRUNC || e.code == QE_EBOUNDS) &&
                  strstr(e.msg, "cut.gguf: offset ") == e.msg;
        if (!ok && n_bad++ < 5)
            CHECKF(ok, "cut at %zu: %s: %s", cut, qe_strerror(e.code), g ? "opened" : e.msg);
        n_trunc += e.code == QE_ETRUNC;
        n_bounds += e.code == QE_EBOUNDS;
        qe_gguf_close(g);
        free(c);
    }
    printf("  truncation: %zu cuts (0..%zu): %d ETRUNC, %d EBOUNDS, %d wrong\n", end + 1, end,
           n_trunc, n_bounds, n_bad);
    CHECK(n_bad == 0);
    free(f);
}

TEST(hostile_header)
{
    size_t n = 0;
    uint8_t *f = slurp(test_asset("testdata/llamacpp/stories260K-Q2_K.gguf"), &n);
    REQUIRE(f, "cannot read");
    uint8_t *b = malloc(n);
    const char *nm = "hostile.gguf";
#define FRESH() memcpy(b, f, n)
    expect_fail(f, 0, nm, QE_ETRUNC, "magic", NULL);
    expect_fail(f, 3, nm, QE_ETRUNC, "magic", NULL);
    FRESH(), b[0] = 'X';
    expect_fail(b, n, nm, QE_EMAGIC, "offset 0:", "expected \"GGUF\"");
    FRESH(), put_u32_at(b, 4, 1);
    expect_fail(b, n, nm, QE_EVERSION, "version 1", "expected 2 or 3");
    FRESH(), put_u32_at(b, 4, 4);
    expect_fail(b, n, nm, QE_EVERSION, "offset 4:", "version 4");
    FRESH(), put_u32_at(b, 4, 0x03000000u);
    expect_fail(b, n, nm, QE_EVERSION, "big-endian", NULL);
    FRESH(), put_u64_at(b, 8, UINT64_C(1) << 40);
    expect_fail(b, n, nm, QE_ECOUNT, "offset 8:", "n_tensors 1099511627776 is absurd");
    FRESH(), put_u64_at(b, 16, UINT64_MAX);
    expect_fail(b, n, nm, QE_ECOUNT, "offset 16:", "n_kv 18446744073709551615 is absurd");
    FRESH(), put_u64_at(b, 16, UINT64_C(1) << 30);
    expect_fail(b, n, nm, QE_ECOUNT, "n_kv", "absurd");
    /* Version 2 is the same encoding: accepted. */
    FRESH(), put_u32_at(b, 4, 2);
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(b, n, nm, &e);
    CHECKF(g && g->version == 2, "%s", e.msg);
    qe_gguf_close(g);
    free(b);
    free(f);
}

TEST(hostile_kvs)
{
    size_t n = 0;
    uint8_t *f = slurp(test_asset("testdata/llamacpp/stories260K-Q2_K.gguf"), &n);
    REQUIRE(f, "cannot read");
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(f, n, "orig", &e);
    REQUIRE(g, "%s", e.msg);
    uint8_t *b = malloc(n);
    const char *nm = "kv.gguf";
    char want[160];

    /* kv[1] key: string length past EOF. */
    size_t k1 = str_off(g, g->kvs[1].key);
    FRESH(), put_u64_at(b, k1, UINT64_MAX);
    snprintf(want, sizeof want, "offset %zu: kv[1] key: string length 18446744073709551615 exceeds the %zu bytes left",
             k1, n - k1 - 8);
    expect_fail(b, n, nm, QE_EBOUNDS, want, NULL);

    /* A value string past EOF (general.architecture). */
    int64_t ia = qe_gguf_find_kv(g, "general.architecture");
    REQUIRE(ia >= 0 && g->kvs[ia].val.type == QE_GGUF_STRING, "arch");
    size_t va = str_off(g, g->kvs[ia].val.v.str);
    FRESH(), put_u64_at(b, va, (uint64_t)n);
    expect_fail(b, n, nm, QE_EBOUNDS, "'general.architecture'", "string length");

    /* Unknown value type (13) in kv[0]. */
    size_t t0 = str_off(g, g->kvs[0].key) + 8 + (size_t)g->kvs[0].key.len;
    FRESH(), put_u32_at(b, t0, 13);
    snprintf(want, sizeof want, "offset %zu: kv[0]", t0);
    expect_fail(b, n, nm, QE_ETYPE, want, "value type 13 is unknown");

    /* Array: unknown element type, absurd length, string element past EOF. */
    int64_t it = qe_gguf_find_kv(g, "tokenizer.ggml.tokens");
    REQUIRE(it >= 0, "tokens");
    const qe_gguf_kv *tk = &g->kvs[it];
    size_t arr = str_off(g, tk->key) + 8 + (size_t)tk->key.len + 4; /* elem type */
    FRESH(), put_u32_at(b, arr, 99);
    expect_fail(b, n, nm, QE_ETYPE, "'tokenizer.ggml.tokens'", "array element type 99");
    FRESH(), put_u64_at(b, arr + 4, UINT64_C(1) << 40);
    expect_fail(b, n, nm, QE_ECOUNT, "'tokenizer.ggml.tokens'", "array length 1099511627776 is absurd");
    size_t s5 = str_off(g, tk->val.v.arr.strs[5]);
    FRESH(), put_u64_at(b, s5, UINT64_C(1) << 33);
    snprintf(want, sizeof want, "offset %zu: kv[%lld] 'tokenizer.ggml.tokens'[5]", s5, (long long)it);
    expect_fail(b, n, nm, QE_EBOUNDS, want, "string length 8589934592 exceeds");

    /* Duplicate key: find two keys of equal length, make them equal. */
    int64_t d1 = -1, d2 = -1;
    for (uint64_t i = 0; i < g->n_kv && d1 < 0; i++)
        for (uint64_t j = i + 1; j < g->n_kv; j++)
            if (g->kvs[i].key.len == g->kvs[j].key.len) {
                d1 = (int64_t)i, d2 = (int64_t)j;
                break;
            }
    REQUIRE(d1 >= 0, "no two keys of equal length");
    FRESH();
    memcpy(b + str_off(g, g->kvs[d2].key) + 8, g->kvs[d1].key.ptr, (size_t)g->kvs[d1].key.len);
    snprintf(want, sizeof want, "kv[%lld] key", (long long)d2);
    expect_fail(b, n, nm, QE_EFORMAT, want, "duplicate key");
    qe_gguf_close(g);
    free(b);
    free(f);
}

TEST(hostile_tensors)
{
    size_t n = 0;
    uint8_t *f = slurp(test_asset("testdata/llamacpp/stories260K-Q2_K.gguf"), &n);
    REQUIRE(f, "cannot read");
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(f, n, "orig", &e);
    REQUIRE(g, "%s", e.msg);
    uint8_t *b = malloc(n);
    const char *nm = "tensor.gguf";
    char want[200];
    uint64_t last = g->n_tensors - 1;
    tinfo_off o0 = tensor_fields(g, 0), o1 = tensor_fields(g, 1), ol = tensor_fields(g, last);

    /* Tensor data past EOF: last tensor moved to the (aligned) file end. */
    FRESH(), put_u64_at(b, ol.offset, (n - g->data_offset + 31) / 32 * 32);
    snprintf(want, sizeof want, "offset %zu: tensor[%llu] '", ol.name, (unsigned long long)last);
    expect_fail(b, n, nm, QE_EBOUNDS, want, "runs past the end of the file");
    /* Offset arithmetic that would wrap: still EBOUNDS, not a crash. */
    FRESH(), put_u64_at(b, ol.offset, UINT64_MAX - 31);
    expect_fail(b, n, nm, QE_EBOUNDS, "runs past the end", NULL);
    /* Misaligned offset. */
    FRESH(), put_u64_at(b, ol.offset, g->tensors[last].offset + 1);
    expect_fail(b, n, nm, QE_EFORMAT, "is not a multiple of the alignment 32", NULL);
    /* Overlap: tensor[1] placed at tensor[0]'s offset. */
    FRESH(), put_u64_at(b, o1.offset, g->tensors[0].offset);
    expect_fail(b, n, nm, QE_EOVERLAP, "overlaps tensor[", NULL);
    /* Unknown ggml type ids: a removed one (4 = Q4_2) and an out-of-range one. */
    FRESH(), put_u32_at(b, o0.type, 4);
    snprintf(want, sizeof want, "offset %zu: tensor[0]", o0.type);
    expect_fail(b, n, nm, QE_ETYPE, want, "type 4 is not a known ggml type");
    FRESH(), put_u32_at(b, o0.type, 1000);
    expect_fail(b, n, nm, QE_ETYPE, "type 1000", NULL);
    /* n_dims 0 and 5. */
    FRESH(), put_u32_at(b, o0.n_dims, 0);
    expect_fail(b, n, nm, QE_EFORMAT, "n_dims 0, expected 1..4", NULL);
    FRESH(), put_u32_at(b, o0.n_dims, 5);
    expect_fail(b, n, nm, QE_EFORMAT, "n_dims 5", NULL);
    /* Dims whose product overflows; a single dim past INT64_MAX; a byte
     * size that overflows although the element count does not. */
    int64_t i1 = -1;
    for (uint64_t i = 0; i < g->n_tensors && i1 < 0; i++)
        if (g->tensors[i].n_dims == 1 && g->tensors[i].type == QE_TYPE_F32)
            i1 = (int64_t)i;
    int64_t iq = -1;
    for (uint64_t i = 0; i < g->n_tensors && iq < 0; i++)
        if (g->tensors[i].n_dims == 2 && g->tensors[i].type == QE_TYPE_Q8_0)
            iq = (int64_t)i;
    REQUIRE(iq >= 0, "no 2-D Q8_0 tensor");
    tinfo_off oq = tensor_fields(g, (uint64_t)iq);
    FRESH(), put_u64_at(b, oq.ne, UINT64_C(1) << 40), put_u64_at(b, oq.ne + 8, UINT64_C(1) << 40);
    expect_fail(b, n, nm, QE_EOVERFLOW, "element count overflows at ne[1]", NULL);
    FRESH(), put_u64_at(b, oq.ne + 8, UINT64_C(1) << 63);
    expect_fail(b, n, nm, QE_EOVERFLOW, "exceeds INT64_MAX", NULL);
    /* F32 (4 B/element): 2^62 elements fit int64, 2^64 bytes do not. */
    REQUIRE(i1 >= 0, "no 1-D F32 tensor");
    tinfo_off o1d = tensor_fields(g, (uint64_t)i1);
    FRESH(), put_u64_at(b, o1d.ne, UINT64_C(1) << 62);
    expect_fail(b, n, nm, QE_EOVERFLOW, "byte size of f32 tensor {4611686018427387904,1,1,1} overflows",
                NULL);
    /* Row length not a multiple of the block size (Q8_0: 32). */
    FRESH(), put_u64_at(b, oq.ne, 48);
    expect_fail(b, n, nm, QE_EFORMAT, "ne[0] = 48 is not a multiple of the q8_0 block size 32", NULL);
    /* Duplicate tensor names: two names of equal length made equal. */
    int64_t a = -1, c = -1;
    for (uint64_t i = 0; i < g->n_tensors && a < 0; i++)
        for (uint64_t j = i + 1; j < g->n_tensors; j++)
            if (g->tensors[i].name.len == g->tensors[j].name.len) {
                a = (int64_t)i, c = (int64_t)j;
                break;
            }
    REQUIRE(a >= 0, "no equal-length names");
    FRESH();
    memcpy(b + str_off(g, g->tensors[c].name) + 8, g->tensors[a].name.ptr,
           (size_t)g->tensors[a].name.len);
    snprintf(want, sizeof want, "tensor[%lld] name", (long long)c);
    expect_fail(b, n, nm, QE_EFORMAT, want, "duplicate tensor name");
    /* Tensor name length past EOF. */
    FRESH(), put_u64_at(b, o1.name, UINT64_C(1) << 50);
    expect_fail(b, n, nm, QE_EBOUNDS, "tensor[1] name", "string length 1125899906842624 exceeds");
    qe_gguf_close(g);
    free(b);
    free(f);
}

/* Hostile alignment and bool values: a real file plus the KV through the
 * builder, then the value bytes patched. */
TEST(hostile_alignment_bool_depth)
{
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open(test_asset("testdata/llamacpp/stories260K-Q2_K.gguf"), &e);
    REQUIRE(g, "%s", e.msg);
    qe_gguf_builder *bld = qe_gguf_builder_from(g, &e);
    REQUIRE(bld, "%s", e.msg);
    CHECK(qe_gguf_builder_set_u32(bld, "general.alignment", 32, &e) == 0);
    CHECK(qe_gguf_builder_set_bool(bld, "qeval.flag", true, &e) == 0);
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = qe_gguf_builder_write_mem(bld, &b, &n, &e);
    REQUIRE(rc == 0, "%s", e.msg);
    qe_gguf *h = qe_gguf_open_mem(b, n, "a", &e);
    REQUIRE(h, "%s", e.msg);
    int64_t ia = qe_gguf_find_kv(h, "general.alignment"), ib = qe_gguf_find_kv(h, "qeval.flag");
    size_t va = str_off(h, h->kvs[ia].key) + 8 + (size_t)h->kvs[ia].key.len + 4;
    size_t vt = va - 4;
    size_t vb = str_off(h, h->kvs[ib].key) + 8 + (size_t)h->kvs[ib].key.len + 4;
    qe_gguf_close(h);
    const char *nm = "align.gguf";
    put_u32_at(b, va, 48);
    expect_fail(b, n, nm, QE_EFORMAT, "'general.alignment'", "48 is not a non-zero power of two");
    put_u32_at(b, va, 0);
    expect_fail(b, n, nm, QE_EFORMAT, "alignment 0", NULL);
    put_u32_at(b, va, 32);
    put_u32_at(b, vt, QE_GGUF_INT32);
    expect_fail(b, n, nm, QE_ETYPE, "'general.alignment'", "expected type u32, got i32");
    put_u32_at(b, vt, QE_GGUF_UINT32);
    b[vb] = 2;
    expect_fail(b, n, nm, QE_EFORMAT, "'qeval.flag'", "bool value is 2");
    b[vb] = 1;
    h = qe_gguf_open_mem(b, n, nm, &e); /* restored: valid again */
    CHECKF(h, "%s", e.msg);
    qe_gguf_close(h);
    free(b);
    qe_gguf_builder_free(bld);
    qe_gguf_close(g);

    /* Nesting: QE_GGUF_MAX_DEPTH + 1 levels of arrays (hand-built, since
     * the builder refuses them). */
    uint8_t d[256];
    size_t k = 0;
    memcpy(d, "GGUF", 4), k = 4;
    put_u32_at(d, k, 3), k += 4;
    put_u64_at(d, k, 0), k += 8;
    put_u64_at(d, k, 1), k += 8;
    put_u64_at(d, k, 4), k += 8;
    memcpy(d + k, "deep", 4), k += 4;
    put_u32_at(d, k, QE_GGUF_ARRAY), k += 4;
    for (int i = 0; i < QE_GGUF_MAX_DEPTH; i++) { /* + the UINT8 level: MAX + 1 */
        put_u32_at(d, k, QE_GGUF_ARRAY), k += 4;
        put_u64_at(d, k, 1), k += 8;
    }
    put_u32_at(d, k, QE_GGUF_UINT8), k += 4;
    put_u64_at(d, k, 0), k += 8;
    expect_fail(d, k, "deep.gguf", QE_EFORMAT, "kv[0] 'deep'[0][0][0][0][0][0][0][0]",
                "arrays nested deeper than 8 levels");
    /* Exactly MAX_DEPTH levels (the last an empty u8 array): accepted.
     * Layout: 24 B header, 8 + 4 B key, 4 B type, then 12 B per level. */
    size_t k2 = 40 + 12 * (QE_GGUF_MAX_DEPTH - 1);
    put_u32_at(d, k2, QE_GGUF_UINT8);
    put_u64_at(d, k2 + 4, 0);
    h = qe_gguf_open_mem(d, k2 + 12, "deep8.gguf", &e);
    CHECKF(h, "%s", e.msg);
    qe_gguf_close(h);
}

TEST(open_errors_name_the_path)
{
    qe_err e = {0};
    CHECK(qe_gguf_open(tmp_path("missing.gguf"), &e) == NULL && e.code == QE_EIO);
    /* A hostile file on disk: the message names its path. */
    const char *p = tmp_path("bad-magic.gguf");
    FILE *fp = fopen(p, "wb");
    REQUIRE(fp, "cannot create %s", p);
    fwrite("GGUX\3\0\0\0", 1, 8, fp);
    fclose(fp);
    CHECK(qe_gguf_open(p, &e) == NULL && e.code == QE_EMAGIC && strstr(e.msg, p) == e.msg);
    unlink(p);
    fp = fopen(p, "wb");
    fclose(fp);
    CHECK(qe_gguf_open(p, &e) == NULL && e.code == QE_ETRUNC);
    unlink(p);
    CHECK(qe_gguf_open_mem(NULL, 0, NULL, &e) == NULL && e.code == QE_ETRUNC &&
          strstr(e.msg, "<memory>"));
    qe_gguf_close(NULL);
    qe_gguf_builder_free(NULL);
}

int main(void)
{
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/qe_test_gguf.XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(known_values_stories260K);
    RUN(golden_json_types_shapes_metadata);
    RUN(roundtrip_every_asset_file);
    RUN(roundtrip_python_written_seeds);
    RUN(builder_outlives_reader);
    RUN(edit_kvs_and_tensors);
    RUN(nested_arrays_roundtrip);
    RUN(hostile_truncation_every_offset);
    RUN(hostile_header);
    RUN(hostile_kvs);
    RUN(hostile_tensors);
    RUN(hostile_alignment_bool_depth);
    RUN(open_errors_name_the_path);
    rmdir(g_tmpdir);
    return test_finish();
}
