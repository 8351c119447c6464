/*
 * test_model.c: model loading (harness/model/model.c, llama2c.c,
 * safetensors.c, hf_names.c) and the `qeval info` / `qeval tokenize` exit
 * codes.
 *
 * References, all independent of the code under test:
 *  - stories260K.bin (llama2.c) and stories260K.gguf (llama.cpp's converter)
 *    hold the same weights: every tensor must load bit for bit identical,
 *    with the same hyperparameters (SOURCE.txt / SOURCE-gguf.txt list them,
 *    and the parameter counts 260,032 and 292,800).
 *  - A safetensors checkpoint written here from the GGUF weights with HF
 *    names and Q/K rows put back into HF order (the inverse of
 *    convert_hf_to_gguf.py's permute, written independently below) must
 *    load back to the GGUF weights exactly.
 *  - llama3 rope factors: values computed with Python from the formula in
 *    convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors).
 *  - "Once upon a time" -> [1, 403, 407, 261, 378] (llama2.c's run.c, per
 *    models/stories260K/SOURCE.txt).
 */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/model/gguf.h"
#include "../harness/model/model.h"
#include "../harness/model/safetensors.h"
#include "../harness/model/tokenizer.h"
#include "../quant/quant.h"
#include "test.h"

static char g_tmp[256];

static const char *tmp_path(const char *rel)
{
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", g_tmp, rel);
    return b;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void rm_rf_tmp(void)
{
    DIR *d = opendir(g_tmp);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", g_tmp, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR *d2 = opendir(p);
            struct dirent *e2;
            while (d2 && (e2 = readdir(d2))) {
                if (e2->d_name[0] == '.')
                    continue;
                char p2[900];
                snprintf(p2, sizeof p2, "%s/%s", p, e2->d_name);
                unlink(p2);
            }
            if (d2)
                closedir(d2);
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(g_tmp);
}

/* ------------------------------------------------------------ llama2.c vs GGUF */

static qe_model *load_l2c(void)
{
    qe_err e = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &e);
    if (!m)
        printf("  llama2c load: %s\n", e.msg);
    return m;
}

static qe_model *load_gguf(void)
{
    qe_err e = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &e);
    if (!m)
        printf("  gguf load: %s\n", e.msg);
    return m;
}

TEST(llama2c_config)
{
    qe_model *m = load_l2c();
    REQUIRE(m, "load failed");
    const qe_config *c = &m->cfg;
    /* SOURCE.txt: dim=64 hidden_dim=172 n_layers=5 n_heads=8 n_kv_heads=4 vocab_size=512 seq_len=512 */
    CHECK(m->format == QE_FMT_LLAMA2C);
    CHECK(strcmp(c->arch, "llama") == 0);
    CHECK(strcmp(c->name, "stories260K") == 0);
    CHECK(c->n_embd == 64 && c->n_ff == 172 && c->n_layer == 5);
    CHECK(c->n_head == 8 && c->n_head_kv == 4 && c->head_dim == 8 && c->n_rot == 8);
    CHECK(c->n_vocab == 512 && c->n_ctx_train == 512);
    CHECK(c->rms_eps == 1e-5f && c->rope_freq_base == 10000.0f && c->rope_freq_scale == 1.0f);
    CHECK(c->rope_kind == QE_ROPE_NORM && c->rope_scaling == QE_ROPE_SCALING_NONE);
    CHECK(c->tied_output && !c->has_qkv_bias && c->file_type == 0);
    CHECK(m->n_tensors == 2 + 5 * 9);
    CHECK(qe_model_tensor(m, "output.weight") == NULL);
    /* SOURCE.txt: 264,128 floats in file incl. 4,096 freq_cis => 260,032 params */
    CHECKF(qe_model_n_params(m) == 260032, "%llu", (unsigned long long)qe_model_n_params(m));
    CHECK(qe_model_tensor_nbytes(m) == 260032ull * 4);
    CHECK(m->file_nbytes == 1056540);
    REQUIRE(m->tok, "no tokenizer");
    CHECK(qe_tokenizer_n_vocab(m->tok) == 512);
    CHECK(qe_tokenizer_bos(m->tok) == 1 && qe_tokenizer_eos(m->tok) == 2);
    int32_t *ids = NULL;
    size_t n = 0;
    qe_err e = {0};
    const char *text = "Once upon a time";
    int rc = qe_tokenize(m->tok, text, strlen(text), true, false, &ids, &n, &e);
    CHECKF(rc == 0, "%s", e.msg);
    int32_t want[] = {1, 403, 407, 261, 378};
    CHECKF(rc == 0 && n == 5 && memcmp(ids, want, sizeof want) == 0, "n=%zu", n);
    free(ids);
    const qe_tensor *q = qe_model_layer_tensor(m, 4, "attn_k.weight");
    CHECK(q && q->ne[0] == 64 && q->ne[1] == 32 && q->type == QE_TYPE_F32 && q->nbytes == 8192);
    qe_model_free(m);
}

TEST(gguf_config)
{
    qe_model *m = load_gguf();
    REQUIRE(m, "load failed");
    const qe_config *c = &m->cfg;
    /* SOURCE-gguf.txt: context_length=2048, embedding_length=64, feed_forward_length=172,
     * block_count=5, head_count=8, head_count_kv=4, rope.dimension_count=8, eps 1e-5,
     * 48 tensors, 292,800 params. */
    CHECK(m->format == QE_FMT_GGUF);
    CHECK(strcmp(c->arch, "llama") == 0 && strcmp(c->name, "llama") == 0);
    CHECK(c->n_embd == 64 && c->n_ff == 172 && c->n_layer == 5);
    CHECK(c->n_head == 8 && c->n_head_kv == 4 && c->head_dim == 8 && c->n_rot == 8);
    CHECK(c->n_vocab == 512 && c->n_ctx_train == 2048);
    CHECKF(c->rms_eps == 1e-5f, "%g", (double)c->rms_eps);
    CHECK(c->rope_freq_base == 10000.0f && c->rope_freq_scale == 1.0f);
    CHECK(c->rope_kind == QE_ROPE_NORM && c->rope_scaling == QE_ROPE_SCALING_NONE);
    CHECK(!c->tied_output && !c->has_qkv_bias && !c->has_rope_freqs);
    CHECK(c->file_type == -1); /* this file has no general.file_type */
    CHECK(m->n_tensors == 48);
    CHECKF(qe_model_n_params(m) == 292800, "%llu", (unsigned long long)qe_model_n_params(m));
    CHECK(m->file_nbytes == 1185376);
    REQUIRE(m->tok, "no tokenizer");
    CHECK(qe_tokenizer_n_vocab(m->tok) == 512 && qe_tokenizer_bos(m->tok) == 1);
    qe_model_free(m);
}

/* The acceptance check: both files give the same weights, bit for bit. */
TEST(llama2c_equals_gguf)
{
    qe_model *a = load_l2c(), *g = load_gguf();
    REQUIRE(a && g, "load failed");
    const qe_config *x = &a->cfg, *y = &g->cfg;
    CHECK(x->n_vocab == y->n_vocab && x->n_embd == y->n_embd && x->n_ff == y->n_ff);
    CHECK(x->n_layer == y->n_layer && x->n_head == y->n_head && x->n_head_kv == y->n_head_kv);
    CHECK(x->head_dim == y->head_dim && x->n_rot == y->n_rot && x->rms_eps == y->rms_eps);
    CHECK(x->rope_freq_base == y->rope_freq_base && x->rope_kind == y->rope_kind);
    int compared = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const qe_tensor *tg = &g->tensors[i];
        /* the GGUF's output.weight is a copy of token_embd; llama2.c shares it */
        const char *name = strcmp(tg->name, "output.weight") == 0 ? "token_embd.weight" : tg->name;
        const qe_tensor *ta = qe_model_tensor(a, name);
        CHECKF(ta != NULL, "%s missing from llama2c", name);
        if (!ta)
            continue;
        CHECKF(ta->type == tg->type && ta->n_dims == tg->n_dims && ta->ne[0] == tg->ne[0] &&
                   ta->ne[1] == tg->ne[1] && ta->nbytes == tg->nbytes,
               "%s: shape/type differ", tg->name);
        CHECKF(ta->nbytes == tg->nbytes && memcmp(ta->data, tg->data, tg->nbytes) == 0,
               "%s: data differ", tg->name);
        compared++;
    }
    CHECK(compared == 48);
    qe_model_free(a);
    qe_model_free(g);
}

static int l2c_err(const char *path, const qe_load_opts *o, qe_err *e)
{
    qe_model *m = qe_model_load(path, o, e);
    qe_model_free(m);
    return m ? 0 : e->code;
}

TEST(llama2c_hostile)
{
    size_t n;
    uint8_t *buf = read_all(test_asset("models/stories260K/stories260K.bin"), &n);
    REQUIRE(buf && n == 1056540, "read");
    qe_err e = {0};
    qe_load_opts nt = {.no_tokenizer = true};
    /* truncated by one float */
    REQUIRE(write_file(tmp_path("trunc.bin"), buf, n - 4) == 0, "write");
    CHECKF(l2c_err(tmp_path("trunc.bin"), &nt, &e) == QE_ETRUNC, "%s", e.msg);
    CHECKF(strstr(e.msg, "trunc.bin") && strstr(e.msg, "1056540"), "%s", e.msg);
    /* shorter than the header */
    REQUIRE(write_file(tmp_path("tiny.bin"), buf, 20) == 0, "write");
    CHECKF(l2c_err(tmp_path("tiny.bin"), &nt, &e) == QE_ETRUNC, "%s", e.msg);
    /* trailing garbage */
    uint8_t *big = calloc(1, n + 8);
    memcpy(big, buf, n);
    REQUIRE(write_file(tmp_path("trail.bin"), big, n + 8) == 0, "write");
    CHECKF(l2c_err(tmp_path("trail.bin"), &nt, &e) == QE_EFORMAT, "%s", e.msg);
    free(big);
    /* absurd header values */
    int32_t save = 0;
    memcpy(&save, buf + 8, 4);
    int32_t bad = -3;
    memcpy(buf + 8, &bad, 4); /* n_layers */
    write_file(tmp_path("neg.bin"), buf, n);
    CHECKF(l2c_err(tmp_path("neg.bin"), &nt, &e) == QE_EFORMAT && strstr(e.msg, "n_layers"),
           "%s", e.msg);
    bad = 0x7fffffff;
    memcpy(buf + 8, &bad, 4);
    write_file(tmp_path("huge.bin"), buf, n);
    CHECKF(l2c_err(tmp_path("huge.bin"), &nt, &e) == QE_EFORMAT, "%s", e.msg);
    memcpy(buf + 8, &save, 4);
    int32_t heads = 3; /* dim 64 not divisible by 3 */
    memcpy(buf + 12, &heads, 4);
    write_file(tmp_path("heads.bin"), buf, n);
    CHECKF(l2c_err(tmp_path("heads.bin"), &nt, &e) == QE_EFORMAT, "%s", e.msg);
    /* a valid model without a tokenizer beside it */
    memcpy(buf + 12, &(int32_t){8}, 4);
    write_file(tmp_path("alone.bin"), buf, n);
    CHECKF(l2c_err(tmp_path("alone.bin"), NULL, &e) == QE_ENOTFOUND && strstr(e.msg, "tok512.bin"),
           "%s", e.msg);
    /* ... loads with an explicit tokenizer path */
    qe_load_opts tp = {.tokenizer_path = test_asset("models/stories260K/tok512.bin")};
    CHECKF(l2c_err(tmp_path("alone.bin"), &tp, &e) == 0, "%s", e.msg);
    free(buf);
    /* llama2.c version 2 export (Q8_0) is refused clearly */
    CHECKF(l2c_err(test_asset("models/stories260K/stories260K_q80.bin"), &nt, &e) ==
               QE_EUNSUPPORTED, "%s", e.msg);
    CHECKF(l2c_err("/nonexistent/model.bin", NULL, &e) == QE_ENOTFOUND, "%s", e.msg);
}

/* ------------------------------------------------------------ safetensors */

typedef struct st_entry {
    char name[128];
    const char *dtype;
    int n_dims;
    int64_t shape[4]; /* safetensors order */
    const void *data;
    size_t nbytes;
} st_entry;

/* Write a safetensors file: header JSON padded with spaces to 8 bytes. */
static int write_safetensors(const char *path, const st_entry *ents, int n, const char *meta)
{
    size_t cap = 4096 + (size_t)n * 256, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{");
    if (meta)
        len += (size_t)snprintf(h + len, cap - len, "\"__metadata__\":%s,", meta);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                i ? "," : "", ents[i].name, ents[i].dtype);
        for (int d = 0; d < ents[i].n_dims; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)ents[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off,
                                (unsigned long long)(off + ents[i].nbytes));
        off += ents[i].nbytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(h);
        return -1;
    }
    uint8_t l8[8];
    for (int i = 0; i < 8; i++)
        l8[i] = (uint8_t)((uint64_t)len >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(h, 1, len, f);
    for (int i = 0; i < n; i++)
        fwrite(ents[i].data, 1, ents[i].nbytes, f);
    free(h);
    return fclose(f);
}

/* Inverse of convert_hf_to_gguf.py's permute: GGUF row (h*hd + 2i + j) came
 * from HF row (h*hd + j*hd/2 + i).  Written here by index, not by calling
 * the loader's code. */
static float *unpermute(const float *gguf, int64_t rows, int64_t cols, int64_t heads)
{
    float *hf = malloc((size_t)(rows * cols) * sizeof *hf);
    int64_t hd = rows / heads;
    for (int64_t r = 0; r < rows; r++) {
        int64_t h = r / hd, w = r % hd, i = w / 2, j = w % 2;
        memcpy(hf + (h * hd + j * (hd / 2) + i) * cols, gguf + r * cols,
               (size_t)cols * sizeof *hf);
    }
    return hf;
}

#define K_CONFIG_LLAMA \
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"%s\",\"hidden_size\":64," \
    "\"intermediate_size\":172,\"num_hidden_layers\":5,\"num_attention_heads\":8," \
    "\"num_key_value_heads\":4,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0," \
    "\"max_position_embeddings\":2048,\"tie_word_embeddings\":false,\"vocab_size\":512," \
    "\"rope_scaling\":null,\"torch_dtype\":\"float32\"}"

/* Dump the GGUF model as an HF checkpoint into dir: shards = 1 or 2. */
static int dump_hf(const qe_model *g, const char *dir, const char *model_type, bool unperm,
                   int shards, float ***owned_out, int *n_owned)
{
    mkdir(dir, 0755);
    st_entry *ents = calloc((size_t)g->n_tensors, sizeof *ents);
    float **owned = calloc((size_t)g->n_tensors, sizeof *owned);
    int n = 0, no = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const qe_tensor *t = &g->tensors[i];
        st_entry *e = &ents[n++];
        if (qe_gguf_name_to_hf(t->name, e->name, sizeof e->name) != 1)
            return -1;
        e->dtype = "F32";
        e->n_dims = (int)t->n_dims;
        for (uint32_t d = 0; d < t->n_dims; d++)
            e->shape[d] = t->ne[t->n_dims - 1 - d];
        e->data = t->data;
        e->nbytes = t->nbytes;
        bool q = strstr(t->name, "attn_q.weight") != NULL, k = strstr(t->name, "attn_k.weight") != NULL;
        if (unperm && (q || k)) {
            float *u = unpermute(t->data, t->ne[1], t->ne[0], q ? g->cfg.n_head : g->cfg.n_head_kv);
            owned[no++] = u;
            e->data = u;
        }
    }
    char p[600], cfg[2048];
    snprintf(cfg, sizeof cfg, K_CONFIG_LLAMA, model_type);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, cfg, strlen(cfg));
    int rc;
    if (shards == 1) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        rc = write_safetensors(p, ents, n, "{\"format\":\"pt\"}");
    } else {
        int half = n / 2;
        snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
        rc = write_safetensors(p, ents, half, NULL);
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
        rc |= write_safetensors(p, ents + half, n - half, "{\"format\":\"pt\"}");
        size_t cap = 65536, len = 0;
        char *idx = malloc(cap);
        len += (size_t)snprintf(idx + len, cap - len,
                                "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(idx + len, cap - len,
                                    "%s\"%s\":\"model-0000%d-of-00002.safetensors\"",
                                    i ? "," : "", ents[i].name, i < half ? 1 : 2);
        len += (size_t)snprintf(idx + len, cap - len, "}}");
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        write_file(p, idx, len);
        free(idx);
    }
    free(ents);
    *owned_out = owned;
    *n_owned = no;
    return rc;
}

static void free_owned(float **o, int n)
{
    for (int i = 0; i < n; i++)
        free(o[i]);
    free(o);
}

static int compare_models(const qe_model *g, const qe_model *s)
{
    int bad = 0;
    if (g->n_tensors != s->n_tensors)
        bad++;
    for (int i = 0; i < g->n_tensors; i++) {
        const qe_tensor *a = &g->tensors[i], *b = qe_model_tensor(s, a->name);
        if (!b || b->type != a->type || b->ne[0] != a->ne[0] || b->ne[1] != a->ne[1] ||
            b->nbytes != a->nbytes || memcmp(a->data, b->data, a->nbytes) != 0)
            bad++;
    }
    return bad;
}

TEST(safetensors_llama_roundtrip)
{
    qe_model *g = load_gguf();
    REQUIRE(g, "load");
    float **owned;
    int no;
    const char *dir = tmp_path("hf1");
    int drc = dump_hf(g, dir, "llama", true, 1, &owned, &no);
    REQUIRE(drc == 0, "dump");
    CHECK(no == 10); /* q and k of 5 layers */
    qe_load_opts o = {.no_tokenizer = true};
    qe_err e = {0};
    qe_model *s = qe_model_load(dir, &o, &e);
    CHECKF(s, "%s", e.msg);
    if (s) {
        CHECK(s->format == QE_FMT_SAFETENSORS);
        CHECK(strcmp(s->cfg.arch, "llama") == 0 && strcmp(s->cfg.name, "hf1") == 0);
        CHECK(s->cfg.n_embd == 64 && s->cfg.n_ff == 172 && s->cfg.n_layer == 5);
        CHECK(s->cfg.n_head == 8 && s->cfg.n_head_kv == 4 && s->cfg.head_dim == 8);
        CHECK(s->cfg.n_rot == 8 && s->cfg.n_vocab == 512 && s->cfg.n_ctx_train == 2048);
        CHECK(s->cfg.rms_eps == g->cfg.rms_eps && s->cfg.rope_freq_base == 10000.0f);
        CHECK(s->cfg.rope_kind == QE_ROPE_NORM && !s->cfg.tied_output && s->cfg.file_type == 0);
        CHECK(compare_models(g, s) == 0);
        CHECK(qe_model_n_params(s) == 292800);
    }
    qe_model_free(s);
    /* the file path itself also loads */
    s = qe_model_load(tmp_path("hf1/model.safetensors"), &o, &e);
    CHECKF(s && compare_models(g, s) == 0, "%s", e.msg);
    qe_model_free(s);
    /* mistral is llama to GGUF: same permutation */
    free_owned(owned, no);
    drc = dump_hf(g, tmp_path("hf_mistral"), "mistral", true, 1, &owned, &no);
    REQUIRE(drc == 0, "dump");
    s = qe_model_load(tmp_path("hf_mistral"), &o, &e);
    CHECKF(s && compare_models(g, s) == 0, "%s", e.msg);
    qe_model_free(s);
    free_owned(owned, no);
    /* qwen2: no permutation (NeoX rope); Q/K written in GGUF order load unchanged */
    drc = dump_hf(g, tmp_path("hf_qwen"), "qwen2", false, 1, &owned, &no);
    REQUIRE(drc == 0, "dump");
    s = qe_model_load(tmp_path("hf_qwen"), &o, &e);
    CHECKF(s && compare_models(g, s) == 0, "%s", e.msg);
    CHECK(s && strcmp(s->cfg.arch, "qwen2") == 0 && s->cfg.rope_kind == QE_ROPE_NEOX);
    qe_model_free(s);
    free_owned(owned, no);
    /* without the permutation a llama checkpoint would NOT match: the check has teeth */
    drc = dump_hf(g, tmp_path("hf_noperm"), "llama", false, 1, &owned, &no);
    REQUIRE(drc == 0, "dump");
    s = qe_model_load(tmp_path("hf_noperm"), &o, &e);
    CHECK(s && compare_models(g, s) == 10);
    qe_model_free(s);
    free_owned(owned, no);
    qe_model_free(g);
}

TEST(safetensors_sharded)
{
    qe_model *g = load_gguf();
    REQUIRE(g, "load");
    float **owned;
    int no;
    int drc = dump_hf(g, tmp_path("hf2"), "llama", true, 2, &owned, &no);
    REQUIRE(drc == 0, "dump");
    qe_load_opts o = {.no_tokenizer = true};
    qe_err e = {0};
    qe_model *s = qe_model_load(tmp_path("hf2"), &o, &e);
    CHECKF(s, "%s", e.msg);
    if (s) {
        CHECK(compare_models(g, s) == 0);
        /* file_nbytes = both shards */
        struct stat a, b;
        stat(tmp_path("hf2/model-00001-of-00002.safetensors"), &a);
        stat(tmp_path("hf2/model-00002-of-00002.safetensors"), &b);
        CHECK(s->file_nbytes == (uint64_t)(a.st_size + b.st_size));
    }
    qe_model_free(s);
    s = qe_model_load(tmp_path("hf2/model.safetensors.index.json"), &o, &e);
    CHECKF(s && compare_models(g, s) == 0, "%s", e.msg);
    qe_model_free(s);
    s = qe_model_load(tmp_path("hf2/config.json"), &o, &e);
    CHECKF(s && compare_models(g, s) == 0, "%s", e.msg);
    qe_model_free(s);
    /* index pointing outside the directory is refused */
    const char *bad = "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}";
    mkdir(tmp_path("hf3"), 0755);
    write_file(tmp_path("hf3/model.safetensors.index.json"), bad, strlen(bad));
    char cfg[2048];
    snprintf(cfg, sizeof cfg, K_CONFIG_LLAMA, "llama");
    write_file(tmp_path("hf3/config.json"), cfg, strlen(cfg));
    s = qe_model_load(tmp_path("hf3"), &o, &e);
    CHECKF(!s && e.code == QE_EFORMAT, "%s", e.msg);
    qe_model_free(s);
    /* index naming a tensor its shard lacks */
    size_t n;
    char *idx = read_all(tmp_path("hf2/model.safetensors.index.json"), &n);
    REQUIRE(idx, "read");
    idx[n] = 0;
    char *p = strstr(idx, "\"model.norm.weight\":\"model-00002");
    if (!p)
        p = strstr(idx, "\"model.norm.weight\":\"model-00001");
    REQUIRE(p, "index layout");
    char *digit = p + strlen("\"model.norm.weight\":\"model-0000");
    *digit = *digit == '1' ? '2' : '1';
    write_file(tmp_path("hf2/model.safetensors.index.json"), idx, n);
    free(idx);
    s = qe_model_load(tmp_path("hf2"), &o, &e);
    CHECKF(!s && e.code == QE_ENOTFOUND && strstr(e.msg, "model.norm.weight"), "%s", e.msg);
    qe_model_free(s);
    free_owned(owned, no);
    qe_model_free(g);
}

/* F16 and BF16 tensors load with their own types; Q/K permutation moves
 * 2-byte rows the same way. */
TEST(safetensors_f16_bf16)
{
    qe_model *g = load_gguf();
    REQUIRE(g, "load");
    const qe_tensor *q = qe_model_tensor(g, "blk.1.attn_q.weight");
    const qe_tensor *nrm = qe_model_tensor(g, "blk.1.attn_norm.weight");
    REQUIRE(q && nrm, "tensors");
    int64_t nq = q->ne[0] * q->ne[1];
    float *hf = unpermute(q->data, q->ne[1], q->ne[0], 8);
    uint16_t *h16 = malloc((size_t)nq * 2), *want = malloc((size_t)nq * 2);
    uint16_t *b16 = malloc(64 * 2);
    for (int64_t i = 0; i < nq; i++) {
        h16[i] = qe_fp32_to_fp16(hf[i]);
        want[i] = qe_fp32_to_fp16(((const float *)q->data)[i]);
    }
    for (int i = 0; i < 64; i++)
        b16[i] = qe_fp32_to_bf16(((const float *)nrm->data)[i]);
    st_entry ents[2] = {
        {"model.layers.1.self_attn.q_proj.weight", "F16", 2, {64, 64}, h16, (size_t)nq * 2},
        {"model.layers.1.input_layernorm.weight", "BF16", 1, {64}, b16, 128},
    };
    mkdir(tmp_path("hf16"), 0755);
    write_safetensors(tmp_path("hf16/model.safetensors"), ents, 2, NULL);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, K_CONFIG_LLAMA, "llama");
    write_file(tmp_path("hf16/config.json"), cfg, strlen(cfg));
    qe_load_opts o = {.no_tokenizer = true, .no_validate = true};
    qe_err e = {0};
    qe_model *s = qe_model_load(tmp_path("hf16"), &o, &e);
    CHECKF(s, "%s", e.msg);
    if (s) {
        const qe_tensor *sq = qe_model_tensor(s, "blk.1.attn_q.weight");
        const qe_tensor *sn = qe_model_tensor(s, "blk.1.attn_norm.weight");
        CHECK(sq && sq->type == QE_TYPE_F16 && sq->nbytes == (uint64_t)nq * 2 &&
              memcmp(sq->data, want, (size_t)nq * 2) == 0);
        CHECK(sn && sn->type == QE_TYPE_BF16 && memcmp(sn->data, b16, 128) == 0);
        CHECK(s->cfg.file_type == -1); /* mixed F16 + BF16 */
        /* validation without the rest of the tensors names the first missing one */
        CHECK(qe_model_validate(s, &e) == QE_ENOTFOUND && strstr(e.msg, "token_embd.weight"));
    }
    qe_model_free(s);
    free(hf);
    free(h16);
    free(want);
    free(b16);
    qe_model_free(g);
}

/* Hostile headers against the buffer-level parser. */
static int parse_buf(const char *json, uint64_t claimed_len, size_t data_nbytes, qe_err *e)
{
    size_t jl = strlen(json), n = 8 + jl + data_nbytes;
    uint8_t *b = calloc(1, n);
    uint64_t L = claimed_len ? claimed_len : jl;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(L >> (8 * i));
    memcpy(b + 8, json, jl);
    qe_st_header h;
    int rc = qe_safetensors_parse_header(b, n, "x.safetensors", &h, e);
    qe_safetensors_header_free(&h);
    free(b);
    return rc;
}

TEST(safetensors_hostile)
{
    qe_err e = {0};
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}";
    CHECKF(parse_buf(ok, 0, 32, &e) == 0, "%s", e.msg);
    /* header length larger than the file */
    CHECKF(parse_buf(ok, 1000000, 32, &e) == QE_EBOUNDS && strstr(e.msg, "x.safetensors"),
           "%s", e.msg);
    CHECKF(parse_buf(ok, UINT64_MAX, 32, &e) == QE_EBOUNDS, "%s", e.msg);
    /* shorter than the length field */
    qe_st_header h;
    CHECK(qe_safetensors_parse_header("abc", 3, "x.safetensors", &h, &e) == QE_ETRUNC);
    /* malformed JSON */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",", 0, 0, &e) == QE_EJSON &&
               strstr(e.msg, "x.safetensors"), "%s", e.msg);
    CHECKF(parse_buf("[1,2,3]", 0, 0, &e) == QE_EJSON, "%s", e.msg);
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}xx", 0, 4,
                     &e) == QE_EJSON, "%s", e.msg);
    CHECKF(parse_buf("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, &e) ==
               QE_EJSON && strstr(e.msg, "'a'"), "%s", e.msg);
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
                     &e) == QE_EJSON, "%s", e.msg);
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 4,
                     &e) == QE_EJSON, "%s", e.msg);
    CHECKF(parse_buf("{\"__metadata__\":{\"k\":3}}", 0, 0, &e) == QE_EJSON, "%s", e.msg);
    /* data offsets past the end */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 8,
                     &e) == QE_EBOUNDS && strstr(e.msg, "'a'"), "%s", e.msg);
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 0, 8,
                     &e) == QE_EBOUNDS, "%s", e.msg);
    /* unknown dtype: named with the tensor */
    CHECKF(parse_buf("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 0, 1,
                     &e) == QE_EUNSUPPORTED && strstr(e.msg, "'w'") && strstr(e.msg, "Q4"),
           "%s", e.msg);
    /* size mismatch: dtype x shape != span */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 12,
                     &e) == QE_ESHAPE, "%s", e.msg);
    /* overlap */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                     0, 12, &e) == QE_EOVERLAP, "%s", e.msg);
    /* duplicate name */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                     0, 8, &e) == QE_EJSON, "%s", e.msg);
    /* element-count overflow */
    CHECKF(parse_buf("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                     "\"data_offsets\":[0,4]}}", 0, 4, &e) == QE_EOVERFLOW, "%s", e.msg);

    /* through the model loader: I32 model tensor is refused, naming it */
    int32_t iv[4] = {1, 2, 3, 4};
    st_entry ents[1] = {{"model.norm.weight", "I32", 1, {4}, iv, 16}};
    mkdir(tmp_path("hfbad"), 0755);
    write_safetensors(tmp_path("hfbad/model.safetensors"), ents, 1, NULL);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, K_CONFIG_LLAMA, "llama");
    write_file(tmp_path("hfbad/config.json"), cfg, strlen(cfg));
    qe_load_opts o = {.no_tokenizer = true};
    qe_model *m = qe_model_load(tmp_path("hfbad"), &o, &e);
    CHECKF(!m && e.code == QE_EUNSUPPORTED && strstr(e.msg, "model.norm.weight") &&
               strstr(e.msg, "I32"), "%s", e.msg);
    qe_model_free(m);
    /* on-disk header length larger than the file */
    uint8_t junk[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_file(tmp_path("hfbad/model.safetensors"), junk, sizeof junk);
    m = qe_model_load(tmp_path("hfbad"), &o, &e);
    CHECKF(!m && e.code == QE_EBOUNDS && strstr(e.msg, "model.safetensors"), "%s", e.msg);
    /* unknown module name */
    float fv[4] = {0};
    st_entry ents2[1] = {{"model.layers.0.mlp.experts.0.w1.weight", "F32", 1, {4}, fv, 16}};
    write_safetensors(tmp_path("hfbad/model.safetensors"), ents2, 1, NULL);
    m = qe_model_load(tmp_path("hfbad"), &o, &e);
    CHECKF(!m && e.code == QE_EUNSUPPORTED && strstr(e.msg, "experts"), "%s", e.msg);
    /* missing config.json */
    unlink(tmp_path("hfbad/config.json"));
    m = qe_model_load(tmp_path("hfbad"), &o, &e);
    CHECKF(!m && e.code == QE_EIO && strstr(e.msg, "config.json"), "%s", e.msg);
}

TEST(hf_config)
{
    qe_config c;
    qe_err e = {0};
    /* Llama 3.1 8B's config.json rope block */
    const char *j = "{\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,"
                    "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
                    "\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"vocab_size\":128256,"
                    "\"max_position_embeddings\":131072,\"tie_word_embeddings\":false,"
                    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
                    "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,"
                    "\"rope_type\":\"llama3\"}}";
    memset(&c, 0, sizeof c);
    CHECKF(qe_hf_config_parse(j, strlen(j), "config.json", &c, &e) == 0, "%s", e.msg);
    CHECK(c.n_embd == 4096 && c.n_ff == 14336 && c.n_layer == 32 && c.n_head == 32);
    CHECK(c.n_head_kv == 8 && c.head_dim == 128 && c.n_rot == 128 && c.n_vocab == 128256);
    CHECK(c.n_ctx_train == 131072 && c.rope_freq_base == 500000.0f && c.rms_eps == 1e-5f);
    CHECK(c.rope_scaling == QE_ROPE_SCALING_LLAMA3 && c.rope_llama3_factor == 8.0f);
    CHECK(c.rope_llama3_low_freq == 1.0f && c.rope_llama3_high_freq == 4.0f);
    CHECK(c.rope_llama3_orig_ctx == 8192 && !c.tied_output);
    /* linear */
    const char *lin = "{\"model_type\":\"qwen2\",\"hidden_size\":896,\"intermediate_size\":4864,"
                      "\"num_hidden_layers\":24,\"num_attention_heads\":14,"
                      "\"num_key_value_heads\":2,\"vocab_size\":151936,\"tie_word_embeddings\":true,"
                      "\"rope_scaling\":{\"type\":\"linear\",\"factor\":4.0}}";
    memset(&c, 0, sizeof c);
    CHECKF(qe_hf_config_parse(lin, strlen(lin), "config.json", &c, &e) == 0, "%s", e.msg);
    CHECK(c.rope_scaling == QE_ROPE_SCALING_LINEAR && c.rope_freq_scale == 0.25f);
    CHECK(c.head_dim == 64 && c.tied_output && c.rms_eps == 1e-6f && c.rope_kind == QE_ROPE_NEOX);
    /* bad ones */
    const char *yarn = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,"
                       "\"num_hidden_layers\":1,\"num_attention_heads\":1,\"vocab_size\":1,"
                       "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}}";
    CHECK(qe_hf_config_parse(yarn, strlen(yarn), "c.json", &c, &e) == QE_EUNSUPPORTED);
    const char *gpt = "{\"model_type\":\"gpt2\"}";
    CHECK(qe_hf_config_parse(gpt, strlen(gpt), "c.json", &c, &e) == QE_EUNSUPPORTED &&
          strstr(e.msg, "gpt2"));
    const char *noh = "{\"model_type\":\"llama\",\"hidden_size\":\"64\"}";
    CHECK(qe_hf_config_parse(noh, strlen(noh), "c.json", &c, &e) == QE_EJSON &&
          strstr(e.msg, "hidden_size"));
    const char *miss = "{\"model_type\":\"llama\",\"hidden_size\":64}";
    CHECK(qe_hf_config_parse(miss, strlen(miss), "c.json", &c, &e) == QE_ENOTFOUND &&
          strstr(e.msg, "intermediate_size"));
    CHECK(qe_hf_config_parse("{", 1, "c.json", &c, &e) == QE_EJSON && strstr(e.msg, "c.json"));
    /* found by fuzzing: hidden_size < heads gave head_dim 0 */
    const char *hd0 = "{\"model_type\":\"llama\",\"hidden_size\":4,\"intermediate_size\":1,"
                      "\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":1}";
    CHECK(qe_hf_config_parse(hd0, strlen(hd0), "c.json", &c, &e) == QE_EJSON);
}

/* rope_freqs.weight from a llama3 rope_scaling block.  Expected values:
 * Python, the converter's formula, base 10000, head_dim 8 (n_rot/2 = 4),
 * factor 8, low 1, high 4, original ctx 64:
 *   freqs = [1, 0.1, 0.01, 0.001]; wavelen = 2*pi/freq
 *   wavelen 6.28 < 64/4 -> 1; 62.83 in [16, 64] -> smooth = (64/62.83 - 1)/3,
 *   1/((1-s)/8 + s) = 7.6673851; 628.3 and 6283 > 64 -> 8.
 *   Python prints [1, 7.6673851260097665, 8.0, 8.0]. */
TEST(llama3_rope_freqs)
{
    qe_model *g = load_gguf();
    REQUIRE(g, "load");
    float **owned;
    int no;
    int drc = dump_hf(g, tmp_path("hf_l3"), "llama", true, 1, &owned, &no);
    REQUIRE(drc == 0, "dump");
    free_owned(owned, no);
    char cfg[2048];
    const char *j = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,"
                    "\"num_hidden_layers\":5,\"num_attention_heads\":8,\"num_key_value_heads\":4,"
                    "\"rms_norm_eps\":1e-05,\"vocab_size\":512,\"rope_scaling\":{\"factor\":8.0,"
                    "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                    "\"original_max_position_embeddings\":64,\"rope_type\":\"llama3\"}}";
    snprintf(cfg, sizeof cfg, "%s", j);
    write_file(tmp_path("hf_l3/config.json"), cfg, strlen(cfg));
    qe_load_opts o = {.no_tokenizer = true};
    qe_err e = {0};
    qe_model *s = qe_model_load(tmp_path("hf_l3"), &o, &e);
    CHECKF(s, "%s", e.msg);
    if (s) {
        const qe_tensor *rf = qe_model_tensor(s, "rope_freqs.weight");
        CHECK(s->cfg.has_rope_freqs && s->cfg.rope_scaling == QE_ROPE_SCALING_LLAMA3);
        REQUIRE(rf && rf->ne[0] == 4 && rf->type == QE_TYPE_F32, "rope_freqs");
        const float *f = rf->data;
        const float want[4] = {1.0f, 7.6673851f, 8.0f, 8.0f};
        for (int i = 0; i < 4; i++)
            CHECKF(test_close(f[i], want[i], 1e-5), "f[%d]=%.7f want %.7f", i, (double)f[i],
                   (double)want[i]);
    }
    qe_model_free(s);
    qe_model_free(g);
}

TEST(validate_and_new_like)
{
    qe_model *g = load_gguf();
    REQUIRE(g, "load");
    qe_err e = {0};
    CHECK(qe_model_validate(g, &e) == 0);
    qe_model *v = qe_model_new_like(g, 4, &e);
    REQUIRE(v, "%s", e.msg);
    CHECK(v->tok == g->tok && v->tok_borrowed && v->n_tensors == 0 && v->n_tensors_cap == 4);
    CHECK(memcmp(&v->cfg, &g->cfg, sizeof v->cfg) == 0);
    /* copy every tensor as an owned buffer (grows past the capacity of 4) */
    for (int i = 0; i < g->n_tensors; i++) {
        const qe_tensor *t = &g->tensors[i];
        void *c = malloc(t->nbytes);
        memcpy(c, t->data, t->nbytes);
        int rc = qe_model_add_tensor(v, t->name, t->type, t->n_dims, t->ne, c, c, &e);
        CHECKF(rc == 0, "%s", e.msg);
        if (rc)
            free(c);
    }
    CHECK(qe_model_validate(v, &e) == 0 && qe_model_n_params(v) == 292800);
    CHECK(qe_model_tensor_nbytes(v) == 292800ull * 4);
    /* duplicate and bad shapes are refused */
    int64_t ne[2] = {64, 512};
    CHECK(qe_model_add_tensor(v, "output.weight", 0, 2, ne, NULL, NULL, &e) == QE_EFORMAT);
    int64_t ne5[1] = {5};
    CHECK(qe_model_add_tensor(v, "x", QE_TYPE_Q8_0, 1, ne5, NULL, NULL, &e) == QE_ESHAPE);
    CHECK(qe_model_add_tensor(v, "y", 99, 1, ne5, NULL, NULL, &e) == QE_ETYPE);
    /* a wrong shape is caught by validate, naming tensor and expectation */
    qe_tensor *k = (qe_tensor *)qe_model_tensor(v, "blk.2.attn_k.weight");
    REQUIRE(k, "k");
    k->ne[1] = 64;
    CHECKF(qe_model_validate(v, &e) == QE_ESHAPE && strstr(e.msg, "blk.2.attn_k.weight") &&
               strstr(e.msg, "[64, 32]"), "%s", e.msg);
    k->ne[1] = 32;
    v->cfg.n_head_kv = 3;
    CHECK(qe_model_validate(v, &e) == QE_EFORMAT);
    v->cfg.n_head_kv = 4;
    qe_strlcpy(v->cfg.arch, "bert", sizeof v->cfg.arch);
    CHECK(qe_model_validate(v, &e) == QE_EUNSUPPORTED && strstr(e.msg, "bert"));
    qe_model_free(v); /* frees the owned copies, not the borrowed tokenizer */
    CHECK(g->tok && qe_tokenizer_n_vocab(g->tok) == 512);
    qe_model_free(g);
    qe_model_free(NULL);
}

TEST(hf_names)
{
    char out[96];
    CHECK(qe_hf_name_to_gguf("model.layers.12.self_attn.o_proj.weight", out, sizeof out) == 1 &&
          strcmp(out, "blk.12.attn_output.weight") == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.0.mlp.gate_proj.weight", out, sizeof out) == 1 &&
          strcmp(out, "blk.0.ffn_gate.weight") == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.3.post_attention_layernorm.weight", out,
                             sizeof out) == 1 && strcmp(out, "blk.3.ffn_norm.weight") == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.7.self_attn.k_proj.bias", out, sizeof out) == 1 &&
          strcmp(out, "blk.7.attn_k.bias") == 0);
    CHECK(qe_hf_name_to_gguf("lm_head.weight", out, sizeof out) == 1 &&
          strcmp(out, "output.weight") == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.x.mlp.up_proj.weight", out, sizeof out) == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.01.mlp.up_proj.weight", out, sizeof out) == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.1.mlp.up_proj.weightX", out, sizeof out) == 0);
    CHECK(qe_hf_name_to_gguf("model.layers.1.mlp.up_proj.weight", out, 8) == QE_EFORMAT);
    CHECK(qe_gguf_name_to_hf("blk.4.ffn_down.weight", out, sizeof out) == 1 &&
          strcmp(out, "model.layers.4.mlp.down_proj.weight") == 0);
}



/* GGUF metadata paths the stories file does not exercise: a qwen2 copy of
 * it (keys renamed), with q/k/v biases, linear rope scaling, key_length,
 * general.file_type and a rope_freqs tensor, written with the GGUF builder. */
TEST(gguf_metadata_variants)
{
    qe_err e = {0};
    qe_gguf *src = qe_gguf_open(test_asset("models/stories260K/stories260K.gguf"), &e);
    REQUIRE(src, "%s", e.msg);
    qe_gguf_builder *b = qe_gguf_builder_from(src, &e);
    REQUIRE(b, "%s", e.msg);
    for (uint64_t i = 0; i < src->n_kv; i++) {
        const qe_gguf_kv *kv = &src->kvs[i];
        if (kv->key.len > 6 && memcmp(kv->key.ptr, "llama.", 6) == 0) {
            char k[128];
            snprintf(k, sizeof k, "qwen2.%.*s", (int)kv->key.len - 6, kv->key.ptr + 6);
            qe_gguf_builder_set_value(b, k, &kv->val, &e);
            char old[128];
            snprintf(old, sizeof old, "%.*s", (int)kv->key.len, kv->key.ptr);
            qe_gguf_builder_remove(b, old);
        }
    }
    qe_gguf_builder_set_str(b, "general.architecture", "qwen2", &e);
    qe_gguf_builder_set_u32(b, "general.file_type", 0, &e);
    qe_gguf_builder_set_str(b, "qwen2.rope.scaling.type", "linear", &e);
    qe_gguf_builder_set_f32(b, "qwen2.rope.scaling.factor", 4.0f, &e);
    qe_gguf_builder_set_f32(b, "qwen2.rope.freq_base", 1000000.0f, &e);
    qe_gguf_builder_set_u32(b, "qwen2.attention.key_length", 8, &e);
    static float bias[5][3][64], rf[4] = {1, 2, 4, 8};
    for (int l = 0; l < 5; l++) {
        const char *nm[3] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
        for (int k = 0; k < 3; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, nm[k]);
            int64_t ne = k == 0 ? 64 : 32;
            for (int i = 0; i < ne; i++)
                bias[l][k][i] = (float)(l * 100 + k * 10 + i);
            int rc = qe_gguf_builder_set_tensor(b, name, QE_TYPE_F32, 1, &ne, bias[l][k],
                                                (uint64_t)ne * 4, &e);
            CHECKF(rc == 0, "%s", e.msg);
        }
    }
    int64_t n4 = 4;
    CHECK(qe_gguf_builder_set_tensor(b, "rope_freqs.weight", QE_TYPE_F32, 1, &n4, rf, 16, &e) == 0);
    int rc = qe_gguf_builder_write(b, tmp_path("qwen.gguf"), &e);
    qe_gguf_builder_free(b);
    qe_gguf_close(src);
    REQUIRE(rc == 0, "%s", e.msg);
    qe_model *m = qe_model_load(tmp_path("qwen.gguf"), NULL, &e);
    REQUIRE(m, "%s", e.msg);
    const qe_config *c = &m->cfg;
    CHECK(strcmp(c->arch, "qwen2") == 0 && c->rope_kind == QE_ROPE_NEOX);
    CHECK(c->has_qkv_bias && c->has_rope_freqs && c->file_type == 0);
    CHECK(c->rope_scaling == QE_ROPE_SCALING_LINEAR && c->rope_freq_scale == 0.25f);
    CHECK(c->rope_freq_base == 1000000.0f && c->n_head_kv == 4 && c->head_dim == 8);
    const qe_tensor *kb = qe_model_layer_tensor(m, 3, "attn_k.bias");
    CHECK(kb && kb->ne[0] == 32 && ((const float *)kb->data)[5] == 315.0f);
    CHECK(qe_model_n_params(m) == 292800 + 5 * 128 + 4);
    qe_model_free(m);
    /* an unknown rope scaling type is refused; so is a missing required key */
    src = qe_gguf_open(tmp_path("qwen.gguf"), &e);
    REQUIRE(src, "%s", e.msg);
    b = qe_gguf_builder_from(src, &e);
    qe_gguf_builder_set_str(b, "qwen2.rope.scaling.type", "yarn", &e);
    qe_gguf_builder_write(b, tmp_path("qwen_yarn.gguf"), &e);
    qe_gguf_builder_set_str(b, "qwen2.rope.scaling.type", "linear", &e);
    qe_gguf_builder_remove(b, "qwen2.embedding_length");
    qe_gguf_builder_write(b, tmp_path("qwen_noemb.gguf"), &e);
    qe_gguf_builder_free(b);
    qe_gguf_close(src);
    m = qe_model_load(tmp_path("qwen_yarn.gguf"), NULL, &e);
    CHECKF(!m && e.code == QE_EUNSUPPORTED && strstr(e.msg, "yarn"), "%s", e.msg);
    qe_model_free(m);
    m = qe_model_load(tmp_path("qwen_noemb.gguf"), NULL, &e);
    CHECKF(!m && e.code == QE_ENOTFOUND && strstr(e.msg, "qwen2.embedding_length"), "%s", e.msg);
    qe_model_free(m);
}

/* tokenizer.json beside (or given for) a safetensors checkpoint. */
TEST(safetensors_hf_tokenizer)
{
    qe_err e = {0};
    char tj[512];
    snprintf(tj, sizeof tj, "%s", test_asset("tokenizers/hf-llama3/tokenizer.json"));
    qe_load_opts o = {.tokenizer_path = tj, .no_validate = true};
    qe_model *m = qe_model_load(tmp_path("hf1"), &o, &e);
    REQUIRE(m, "%s", e.msg);
    REQUIRE(m->tok, "no tokenizer");
    CHECK(qe_tokenizer_kind(m->tok) == QE_TOK_BPE && qe_tokenizer_n_vocab(m->tok) == 128256);
    /* 128256 tokens cannot index a 512-row embedding: validation says so */
    CHECKF(qe_model_validate(m, &e) == QE_ESHAPE && strstr(e.msg, "128256"), "%s", e.msg);
    qe_model_free(m);
}

/* ------------------------------------------------ vs llama.cpp's print_info */

/* Value after "print_info: <key> = " in a llama.cpp log; NULL if absent. */
static const char *log_value(const char *log, const char *key)
{
    char pat[96];
    snprintf(pat, sizeof pat, "print_info: %s", key);
    const char *p = strstr(log, pat);
    if (!p)
        return NULL;
    p = strchr(p, '=');
    return p ? p + 2 : NULL;
}

/* Every ppl-*.log that llama.cpp b4747 wrote for the golden GGUFs: our
 * config, params and bits per weight must equal what it printed (params
 * and BPW are printed rounded to 2 decimals: compared to +-0.005). */
TEST(gguf_vs_llamacpp_print_info)
{
    char logdir[512]; /* test_asset's buffers rotate: keep a copy */
    snprintf(logdir, sizeof logdir, "%s", test_asset("testdata/llamacpp/logs"));
    DIR *d = opendir(logdir);
    REQUIRE(d, "no %s", logdir);
    struct dirent *de;
    int n_models = 0;
    while ((de = readdir(d))) {
        size_t ln = strlen(de->d_name);
        if (strncmp(de->d_name, "ppl-", 4) != 0 || ln < 9 || strcmp(de->d_name + ln - 4, ".log"))
            continue;
        char stem[256], lpath[1024], mpath[1400];
        snprintf(stem, sizeof stem, "%.*s", (int)(ln - 8), de->d_name + 4);
        snprintf(lpath, sizeof lpath, "%s/%s", logdir, de->d_name);
        if (strcmp(stem, "stories260K-F32") == 0)
            snprintf(mpath, sizeof mpath, "%s", test_asset("models/stories260K/stories260K.gguf"));
        else
            snprintf(mpath, sizeof mpath, "%s/%s.gguf", test_asset("testdata/llamacpp"), stem);
        size_t n;
        char *log = read_all(lpath, &n);
        CHECKF(log, "cannot read %s", lpath);
        if (!log)
            continue;
        log[n] = 0;
        qe_err e = {0};
        qe_model *m = qe_model_load(mpath, NULL, &e);
        CHECKF(m, "%s: %s", stem, e.msg);
        if (!m) {
            free(log);
            continue;
        }
        const qe_config *c = &m->cfg;
        const char *v;
        struct { const char *key; double ours; } ints[] = {
            {"n_ctx_train ", c->n_ctx_train}, {"n_embd ", c->n_embd},
            {"n_layer ", c->n_layer},         {"n_head ", c->n_head},
            {"n_head_kv ", c->n_head_kv},     {"n_rot ", c->n_rot},
            {"n_embd_head_k ", c->head_dim},  {"n_ff ", c->n_ff},
            {"n_vocab ", c->n_vocab},         {"rope type ", c->rope_kind},
            {"freq_base_train ", c->rope_freq_base},
            {"freq_scale_train ", c->rope_freq_scale},
            {"f_norm_rms_eps ", c->rms_eps},
            {"BOS token ", m->tok ? qe_tokenizer_bos(m->tok) : -1},
            {"EOS token ", m->tok ? qe_tokenizer_eos(m->tok) : -1},
        };
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            v = log_value(log, ints[i].key);
            CHECKF(v && test_close(ints[i].ours, atof(v), 1e-4), "%s: %s: ours %g, llama.cpp %s",
                   stem, ints[i].key, ints[i].ours, v ? v : "(absent)");
        }
        double np = (double)qe_model_n_params(m);
        double bpw = 8.0 * (double)qe_model_tensor_nbytes(m) / np;
        v = log_value(log, "model params ");
        double lp = v ? atof(v) * (strstr(v, " M") == v + strcspn(v, " ") ? 1e6 : 1e3) : -1;
        CHECKF(v && fabs(np - lp) <= 0.005 * (lp >= 1e6 ? 1e6 : 1e3), "%s: params %.0f vs %s",
               stem, np, v ? v : "?");
        v = log_value(log, "file size ");
        const char *b = v ? strchr(v, '(') : NULL;
        CHECKF(b && fabs(bpw - atof(b + 1)) <= 0.005, "%s: bpw %.4f vs %s", stem, bpw,
               b ? b : "?");
        n_models++;
        qe_model_free(m);
        free(log);
    }
    closedir(d);
    CHECKF(n_models >= 20, "only %d models compared", n_models);
}

/* ------------------------------------------------------------ CLI exit codes */

static int run_cmd(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_info_tokenize)
{
    const char *bin = getenv("QEVAL_BIN");
    if (!bin || access(bin, X_OK) != 0)
        bin = "./qeval";
    if (access(bin, X_OK) != 0) {
        printf("  (skipped: no qeval binary)\n");
        return;
    }
    char cmd[2048], out[65536];
    const char *mdl = test_asset("models/stories260K/stories260K.bin");
    snprintf(cmd, sizeof cmd, "%s info --help 2>/dev/null", bin);
    CHECK(run_cmd(cmd, out, sizeof out) == 0 && strstr(out, "usage"));
    snprintf(cmd, sizeof cmd, "%s info /nonexistent.gguf 2>/dev/null", bin);
    CHECK(run_cmd(cmd, out, sizeof out) == 2);
    snprintf(cmd, sizeof cmd, "%s info %s --bogus 2>/dev/null", bin, mdl);
    CHECK(run_cmd(cmd, out, sizeof out) == 2);
    snprintf(cmd, sizeof cmd, "%s info %s 2>/dev/null", bin, mdl);
    CHECK(run_cmd(cmd, out, sizeof out) == 0 && strstr(out, "260032") &&
          strstr(out, "blk.4.ffn_up.weight"));
    snprintf(cmd, sizeof cmd, "%s info %s --json 2>/dev/null", bin, mdl);
    CHECK(run_cmd(cmd, out, sizeof out) == 0 && strstr(out, "\"n_params\": 260032"));
    snprintf(cmd, sizeof cmd, "%s tokenize --help 2>/dev/null", bin);
    CHECK(run_cmd(cmd, out, sizeof out) == 0);
    snprintf(cmd, sizeof cmd, "%s tokenize %s 2>/dev/null", bin, mdl);
    CHECK(run_cmd(cmd, out, sizeof out) == 2); /* no text */
    snprintf(cmd, sizeof cmd, "%s tokenize %s --text 'Once upon a time' --ids 2>/dev/null", bin,
             mdl);
    CHECKF(run_cmd(cmd, out, sizeof out) == 0 && strcmp(out, "[1, 403, 407, 261, 378]\n") == 0,
           "%s", out);
    snprintf(cmd, sizeof cmd,
             "%s tokenize %s --text 'Once upon a time' --ids --no-bos 2>/dev/null", bin, mdl);
    CHECKF(run_cmd(cmd, out, sizeof out) == 0 && strcmp(out, "[403, 407, 261, 378]\n") == 0,
           "%s", out);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/qe_test_model_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(llama2c_config);
    RUN(gguf_config);
    RUN(llama2c_equals_gguf);
    RUN(llama2c_hostile);
    RUN(safetensors_llama_roundtrip);
    RUN(safetensors_sharded);
    RUN(safetensors_hf_tokenizer);
    RUN(safetensors_f16_bf16);
    RUN(safetensors_hostile);
    RUN(hf_config);
    RUN(llama3_rope_freqs);
    RUN(validate_and_new_like);
    RUN(hf_names);
    RUN(gguf_metadata_variants);
    RUN(gguf_vs_llamacpp_print_info);
    RUN(cli_info_tokenize);
    rm_rf_tmp();
    return test_finish();
}
