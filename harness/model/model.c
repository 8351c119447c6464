/*
 * model.c: qe_model: format sniffing, the GGUF loader (metadata -> qe_config,
 * tensors as views into the reader's mapping), and what every format shares:
 * the tensor table, lookups, parameter counts, shape validation, free.
 *
 * The llama2.c and safetensors loaders live in llama2c.c and safetensors.c;
 * they fill a fresh qe_model through qe_model_add_tensor / _attach_map.
 * Must not hold: quantization math, the forward pass.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../quant/quant.h"
#include "gguf.h"
#include "llama2c.h"
#include "safetensors.h"
#include "tokenizer.h"

/* Loader-private state: the file mappings tensors point into. */
typedef struct model_priv {
    int n_maps, cap_maps;
    qe_map *maps; /* owned; each closed in qe_model_free */
} model_priv;

/* ---------------------------------------------------------------- basics */

static qe_model *model_alloc(qe_err *err)
{
    qe_model *m = calloc(1, sizeof *m);
    if (!m) {
        qe_err_set(err, QE_ENOMEM, "model: out of memory");
        return NULL;
    }
    m->cfg.file_type = -1;
    m->cfg.rope_freq_scale = 1.0f;
    m->cfg.rope_freq_base = 10000.0f;
    return m;
}

void qe_model_free(qe_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_tensors; i++)
        free(m->tensors[i].owned);
    free(m->tensors);
    if (!m->tok_borrowed)
        qe_tokenizer_free(m->tok);
    qe_gguf_close(m->gguf);
    model_priv *p = m->priv;
    if (p) {
        for (int i = 0; i < p->n_maps; i++)
            qe_map_close(&p->maps[i]);
        free(p->maps);
        free(p);
    }
    free(m);
}

const char *qe_model_format_name(int format)
{
    switch (format) {
    case QE_FMT_GGUF: return "gguf";
    case QE_FMT_SAFETENSORS: return "safetensors";
    case QE_FMT_LLAMA2C: return "llama2c";
    default: return "unknown";
    }
}

int qe_model_attach_map(qe_model *m, const char *path, const qe_map **out, qe_err *err)
{
    model_priv *p = m->priv;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
        m->priv = p;
    }
    if (p->n_maps == p->cap_maps) {
        int nc = p->cap_maps ? p->cap_maps * 2 : 4;
        qe_map *nm = realloc(p->maps, (size_t)nc * sizeof *nm);
        if (!nm)
            return qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
        p->maps = nm;
        p->cap_maps = nc;
    }
    int rc = qe_map_open(&p->maps[p->n_maps], path, err);
    if (rc)
        return rc;
    m->file_nbytes += p->maps[p->n_maps].nbytes;
    *out = &p->maps[p->n_maps++];
    return 0;
}

int qe_model_add_tensor(qe_model *m, const char *name, int type, uint32_t n_dims,
                        const int64_t *ne, const void *data, void *owned, qe_err *err)
{
    const qe_type_traits *tr = qe_type_get(type);
    if (!tr)
        return qe_err_set(err, QE_ETYPE, "%s: tensor '%s': unknown type id %d", m->path, name,
                          type);
    if (n_dims < 1 || n_dims > 4)
        return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': %u dims, expected 1..4", m->path,
                          name, n_dims);
    if (strlen(name) >= sizeof m->tensors[0].name)
        return qe_err_set(err, QE_EFORMAT, "%s: tensor name '%.120s' longer than %zu bytes",
                          m->path, name, sizeof m->tensors[0].name - 1);
    if (qe_model_tensor(m, name))
        return qe_err_set(err, QE_EFORMAT, "%s: duplicate tensor '%s'", m->path, name);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || !qe_mul_ok(nel, (uint64_t)ne[d], &nel))
            return qe_err_set(err, QE_EOVERFLOW, "%s: tensor '%s': bad or overflowing dim %u",
                              m->path, name, d);
    }
    if (ne[0] % tr->blck_size != 0)
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tensor '%s': row length %lld not a multiple of the %s block (%lld)",
                          m->path, name, (long long)ne[0], tr->name, (long long)tr->blck_size);
    uint64_t nbytes;
    if (!qe_mul_ok(nel / (uint64_t)tr->blck_size, tr->type_size, &nbytes))
        return qe_err_set(err, QE_EOVERFLOW, "%s: tensor '%s': byte size overflows", m->path,
                          name);
    if (m->n_tensors == m->n_tensors_cap) {
        int nc = m->n_tensors_cap ? m->n_tensors_cap * 2 : 64;
        qe_tensor *nt = realloc(m->tensors, (size_t)nc * sizeof *nt);
        if (!nt)
            return qe_err_set(err, QE_ENOMEM, "%s: out of memory", m->path);
        m->tensors = nt;
        m->n_tensors_cap = nc;
    }
    qe_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    qe_strlcpy(t->name, name, sizeof t->name);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++)
        t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    t->owned = owned;
    return 0;
}

qe_model *qe_model_new_like(const qe_model *ref, int n_tensors_cap, qe_err *err)
{
    if (!ref || n_tensors_cap < 0) {
        qe_err_set(err, QE_EINVAL, "qe_model_new_like: bad arguments");
        return NULL;
    }
    qe_model *m = model_alloc(err);
    if (!m)
        return NULL;
    m->cfg = ref->cfg;
    m->tok = ref->tok;
    m->tok_borrowed = true;
    m->format = ref->format;
    qe_strlcpy(m->path, ref->path, sizeof m->path);
    if (n_tensors_cap > 0) {
        m->tensors = calloc((size_t)n_tensors_cap, sizeof *m->tensors);
        if (!m->tensors) {
            qe_err_set(err, QE_ENOMEM, "qe_model_new_like: out of memory");
            free(m);
            return NULL;
        }
        m->n_tensors_cap = n_tensors_cap;
    }
    return m;
}

const qe_tensor *qe_model_tensor(const qe_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

const qe_tensor *qe_model_layer_tensor(const qe_model *m, int layer, const char *suffix)
{
    char name[128];
    int w = snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    if (w < 0 || (size_t)w >= sizeof name)
        return NULL;
    return qe_model_tensor(m, name);
}

uint64_t qe_model_n_params(const qe_model *m)
{
    uint64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = &m->tensors[i];
        n += (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
    }
    return n;
}

uint64_t qe_model_tensor_nbytes(const qe_model *m)
{
    uint64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        n += m->tensors[i].nbytes;
    return n;
}

/* ------------------------------------------------------------ validation */

static bool arch_is_llama_family(const char *arch)
{
    return strcmp(arch, "llama") == 0 || strcmp(arch, "qwen2") == 0;
}

/* Check that `name` exists with exactly the given shape (n_dims entries). */
static int want_tensor(const qe_model *m, const char *name, uint32_t n_dims, int64_t ne0,
                       int64_t ne1, const char *what, qe_err *err)
{
    const qe_tensor *t = qe_model_tensor(m, name);
    if (!t)
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing tensor '%s' (%s)", m->path, name, what);
    int64_t want[2] = {ne0, ne1};
    bool ok = t->ne[2] == 1 && t->ne[3] == 1;
    for (uint32_t d = 0; d < 2; d++)
        ok = ok && t->ne[d] == (d < n_dims ? want[d] : 1);
    if (!ok) {
        if (n_dims == 1)
            return qe_err_set(err, QE_ESHAPE,
                              "%s: tensor '%s': shape [%lld, %lld], expected [%lld] (%s)",
                              m->path, name, (long long)t->ne[0], (long long)t->ne[1],
                              (long long)ne0, what);
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tensor '%s': shape [%lld, %lld], expected [%lld, %lld] (%s)",
                          m->path, name, (long long)t->ne[0], (long long)t->ne[1],
                          (long long)ne0, (long long)ne1, what);
    }
    return 0;
}

int qe_model_validate(const qe_model *m, qe_err *err)
{
    const qe_config *c = &m->cfg;
    if (!arch_is_llama_family(c->arch))
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (expected llama or qwen2)",
                          m->path, c->arch);
    if (c->n_embd <= 0 || c->n_ff <= 0 || c->n_layer <= 0 || c->n_head <= 0 ||
        c->n_head_kv <= 0 || c->head_dim <= 0 || c->n_vocab <= 0)
        return qe_err_set(err, QE_EFORMAT,
                          "%s: config: n_embd %d, n_ff %d, n_layer %d, n_head %d, n_head_kv %d, "
                          "head_dim %d, n_vocab %d: all must be positive",
                          m->path, c->n_embd, c->n_ff, c->n_layer, c->n_head, c->n_head_kv,
                          c->head_dim, c->n_vocab);
    if (c->n_head % c->n_head_kv != 0)
        return qe_err_set(err, QE_EFORMAT, "%s: config: n_head %d not a multiple of n_head_kv %d",
                          m->path, c->n_head, c->n_head_kv);
    if (c->n_rot <= 0 || c->n_rot > c->head_dim || c->n_rot % 2 != 0)
        return qe_err_set(err, QE_EFORMAT,
                          "%s: config: rope dimension count %d, expected an even number in "
                          "[2, head_dim %d]",
                          m->path, c->n_rot, c->head_dim);
    if (!(c->rms_eps > 0.0f) || !(c->rope_freq_base > 0.0f) || !(c->rope_freq_scale > 0.0f))
        return qe_err_set(err, QE_EFORMAT,
                          "%s: config: rms eps %g, rope base %g, rope scale %g must be > 0",
                          m->path, (double)c->rms_eps, (double)c->rope_freq_base,
                          (double)c->rope_freq_scale);
    int64_t E = c->n_embd, F = c->n_ff, V = c->n_vocab;
    int64_t Q = (int64_t)c->n_head * c->head_dim, K = (int64_t)c->n_head_kv * c->head_dim;
    int rc;
    if ((rc = want_tensor(m, "token_embd.weight", 2, E, V, "n_embd, n_vocab", err)) ||
        (rc = want_tensor(m, "output_norm.weight", 1, E, 0, "n_embd", err)))
        return rc;
    if (!c->tied_output &&
        (rc = want_tensor(m, "output.weight", 2, E, V, "n_embd, n_vocab", err)))
        return rc;
    if (c->has_rope_freqs &&
        (rc = want_tensor(m, "rope_freqs.weight", 1, c->n_rot / 2, 0, "n_rot/2", err)))
        return rc;
    static const struct {
        const char *suffix;
        uint32_t n_dims;
        char r0, r1; /* E, F, Q, K: which config size each ne[] must equal */
        bool bias;
    } per_layer[] = {
        {"attn_norm.weight", 1, 'E', 0, false},   {"attn_q.weight", 2, 'E', 'Q', false},
        {"attn_k.weight", 2, 'E', 'K', false},    {"attn_v.weight", 2, 'E', 'K', false},
        {"attn_output.weight", 2, 'Q', 'E', false}, {"ffn_norm.weight", 1, 'E', 0, false},
        {"ffn_gate.weight", 2, 'E', 'F', false},  {"ffn_up.weight", 2, 'E', 'F', false},
        {"ffn_down.weight", 2, 'F', 'E', false},  {"attn_q.bias", 1, 'Q', 0, true},
        {"attn_k.bias", 1, 'K', 0, true},         {"attn_v.bias", 1, 'K', 0, true},
    };
    for (int l = 0; l < c->n_layer; l++) {
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++) {
            if (per_layer[i].bias && !c->has_qkv_bias)
                continue;
            char name[96], what[32];
            snprintf(name, sizeof name, "blk.%d.%s", l, per_layer[i].suffix);
            int64_t d[2] = {0, 0};
            char r[2] = {per_layer[i].r0, per_layer[i].r1};
            const char *rn[2] = {"", ""};
            for (int k = 0; k < 2; k++) {
                switch (r[k]) {
                case 'E': d[k] = E; rn[k] = "n_embd"; break;
                case 'F': d[k] = F; rn[k] = "n_ff"; break;
                case 'Q': d[k] = Q; rn[k] = "n_head*head_dim"; break;
                case 'K': d[k] = K; rn[k] = "n_head_kv*head_dim"; break;
                default: break;
                }
            }
            snprintf(what, sizeof what, "%s%s%s", rn[0], r[1] ? ", " : "", rn[1]);
            if ((rc = want_tensor(m, name, per_layer[i].n_dims, d[0], d[1], what, err)))
                return rc;
        }
    }
    if (m->tok && qe_tokenizer_n_vocab(m->tok) > c->n_vocab)
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tokenizer has %d tokens but token_embd has only %d rows", m->path,
                          (int)qe_tokenizer_n_vocab(m->tok), c->n_vocab);
    return 0;
}

/* ----------------------------------------------------------------- GGUF */

/* Read "<arch>.<suffix>" as a positive int.  Returns 0 and sets *out when
 * present, 1 when absent and optional, negative on error. */
static int gguf_int(const qe_gguf *g, const char *arch, const char *suffix, bool required,
                    int *out, qe_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    qe_err e = {0};
    int rc = qe_gguf_get_u64(g, key, &v, &e);
    if (rc == QE_ENOTFOUND) {
        if (!required)
            return 1;
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing key '%s'", g->path, key);
    }
    if (rc)
        return qe_err_set(err, rc, "%s: key '%s': %s", g->path, key, e.msg);
    if (v > 0x7fffffff)
        return qe_err_set(err, QE_EFORMAT, "%s: key '%s': value %llu out of range", g->path, key,
                          (unsigned long long)v);
    *out = (int)v;
    return 0;
}

static int gguf_float(const qe_gguf *g, const char *arch, const char *suffix, float *out,
                      qe_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    double v;
    qe_err e = {0};
    int rc = qe_gguf_get_f64(g, key, &v, &e);
    if (rc == QE_ENOTFOUND)
        return 1;
    if (rc)
        return qe_err_set(err, rc, "%s: key '%s': %s", g->path, key, e.msg);
    *out = (float)v;
    return 0;
}

/* RoPE flavour by architecture, as llama.cpp's llama_model_rope_type. */
static int rope_kind_for_arch(const char *arch)
{
    static const char *const neox[] = {"qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3",
                                       "qwen3moe", "phi2", "phi3", "gemma", "gemma2",
                                       "gemma3", "stablelm", "gptneox", "falcon", "starcoder2",
                                       "olmo2", "bert", "nomic-bert", "codeshell", "orion",
                                       "minicpm3", "openelm", "dbrx", "plamo", "exaone"};
    for (size_t i = 0; i < sizeof neox / sizeof neox[0]; i++)
        if (strcmp(arch, neox[i]) == 0)
            return QE_ROPE_NEOX;
    return QE_ROPE_NORM;
}

static int load_gguf(qe_model *m, const char *path, const qe_load_opts *opts, qe_err *err)
{
    int rc;
    m->gguf = qe_gguf_open(path, err);
    if (!m->gguf)
        return err ? err->code : QE_EFORMAT;
    const qe_gguf *g = m->gguf;
    m->file_nbytes = g->nbytes;
    qe_config *c = &m->cfg;

    qe_err e = {0};
    rc = qe_gguf_get_str(g, "general.architecture", c->arch, sizeof c->arch, &e);
    if (rc == QE_ENOTFOUND)
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing key 'general.architecture'", path);
    if (rc)
        return qe_err_set(err, rc, "%s: key 'general.architecture': %s", path, e.msg);
    if (qe_gguf_get_str(g, "general.name", c->name, sizeof c->name, NULL) != 0) {
        const char *b = strrchr(path, '/');
        qe_strlcpy(c->name, b ? b + 1 : path, sizeof c->name);
    }
    const char *a = c->arch;
    if ((rc = gguf_int(g, a, "embedding_length", true, &c->n_embd, err)) < 0 ||
        (rc = gguf_int(g, a, "feed_forward_length", true, &c->n_ff, err)) < 0 ||
        (rc = gguf_int(g, a, "block_count", true, &c->n_layer, err)) < 0 ||
        (rc = gguf_int(g, a, "attention.head_count", true, &c->n_head, err)) < 0)
        return rc;
    if (c->n_head <= 0)
        return qe_err_set(err, QE_EFORMAT, "%s: key '%s.attention.head_count' is 0", path, a);
    c->n_head_kv = c->n_head;
    if ((rc = gguf_int(g, a, "attention.head_count_kv", false, &c->n_head_kv, err)) < 0)
        return rc;
    c->head_dim = c->n_embd / c->n_head;
    if ((rc = gguf_int(g, a, "attention.key_length", false, &c->head_dim, err)) < 0)
        return rc;
    c->n_rot = c->head_dim;
    if ((rc = gguf_int(g, a, "rope.dimension_count", false, &c->n_rot, err)) < 0)
        return rc;
    c->n_ctx_train = 0;
    if ((rc = gguf_int(g, a, "context_length", false, &c->n_ctx_train, err)) < 0)
        return rc;
    c->rms_eps = 1e-5f;
    if ((rc = gguf_float(g, a, "attention.layer_norm_rms_epsilon", &c->rms_eps, err)) < 0 ||
        (rc = gguf_float(g, a, "rope.freq_base", &c->rope_freq_base, err)) < 0)
        return rc;

    /* RoPE scaling: "<arch>.rope.scaling.type" + ".factor" (newer), or the
     * older "<arch>.rope.scale_linear"; Llama 3.1 scaling arrives as the
     * rope_freqs.weight tensor. */
    char stype[32] = "";
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    qe_gguf_get_str(g, key, stype, sizeof stype, NULL);
    float factor = 0.0f;
    if ((rc = gguf_float(g, a, "rope.scaling.factor", &factor, err)) < 0)
        return rc;
    if (rc == 1 && (rc = gguf_float(g, a, "rope.scale_linear", &factor, err)) < 0)
        return rc;
    c->rope_scaling = QE_ROPE_SCALING_NONE;
    c->rope_freq_scale = 1.0f;
    if (stype[0] && strcmp(stype, "linear") != 0 && strcmp(stype, "none") != 0)
        return qe_err_set(err, QE_EUNSUPPORTED, "%s: key '%s' = '%s': only linear RoPE scaling "
                          "(or rope_freqs.weight) is supported", path, key, stype);
    if (factor > 0.0f && factor != 1.0f && strcmp(stype, "none") != 0) {
        c->rope_scaling = QE_ROPE_SCALING_LINEAR;
        c->rope_freq_scale = 1.0f / factor;
    }
    if ((rc = gguf_int(g, a, "rope.scaling.original_context_length", false,
                       &c->rope_llama3_orig_ctx, err)) < 0)
        return rc;
    c->rope_kind = rope_kind_for_arch(a);
    int64_t ft;
    c->file_type = qe_gguf_get_i64(g, "general.file_type", &ft, NULL) == 0 ? (int)ft : -1;

    /* Tensors: views into the reader's mapping. */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const qe_gguf_tensor *gt = &g->tensors[i];
        char name[128];
        if (gt->name.len >= sizeof m->tensors[0].name)
            return qe_err_set(err, QE_EFORMAT, "%s: tensor %llu: name of %llu bytes, at most %zu "
                              "supported", path, (unsigned long long)i,
                              (unsigned long long)gt->name.len, sizeof m->tensors[0].name - 1);
        memcpy(name, gt->name.ptr, gt->name.len);
        name[gt->name.len] = '\0';
        if (gt->n_dims < 1) {
            int64_t one = 1;
            rc = qe_model_add_tensor(m, name, gt->type, 1, &one, gt->data, NULL, err);
        } else {
            rc = qe_model_add_tensor(m, name, gt->type, gt->n_dims, gt->ne, gt->data, NULL, err);
        }
        if (rc)
            return rc;
    }
    const qe_tensor *emb = qe_model_tensor(m, "token_embd.weight");
    c->tied_output = qe_model_tensor(m, "output.weight") == NULL;
    c->has_qkv_bias = qe_model_tensor(m, "blk.0.attn_q.bias") != NULL;
    c->has_rope_freqs = qe_model_tensor(m, "rope_freqs.weight") != NULL;
    if (c->has_rope_freqs && c->rope_scaling == QE_ROPE_SCALING_NONE)
        c->rope_scaling = QE_ROPE_SCALING_LLAMA3;

    if (!(opts && opts->no_tokenizer) && qe_gguf_find_kv(g, "tokenizer.ggml.model") >= 0) {
        m->tok = qe_tokenizer_from_gguf(g, err);
        if (!m->tok)
            return qe_err_prefix(err, "%s: tokenizer", path);
    }
    if (emb && emb->ne[1] > 0 && emb->ne[1] <= 0x7fffffff)
        c->n_vocab = (int)emb->ne[1];
    else if (m->tok)
        c->n_vocab = qe_tokenizer_n_vocab(m->tok);
    else
        gguf_int(g, a, "vocab_size", false, &c->n_vocab, NULL);
    return 0;
}

/* -------------------------------------------------------------- sniffing */

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

qe_model *qe_model_load(const char *path, const qe_load_opts *opts, qe_err *err)
{
    if (!path) {
        qe_err_set(err, QE_EINVAL, "qe_model_load: path is NULL");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        qe_err_set(err, QE_ENOTFOUND, "%s: no such file or directory", path);
        return NULL;
    }
    qe_model *m = model_alloc(err);
    if (!m)
        return NULL;
    qe_strlcpy(m->path, path, sizeof m->path);
    int rc;
    if (S_ISDIR(st.st_mode) || has_suffix(path, ".safetensors") || has_suffix(path, ".json")) {
        m->format = QE_FMT_SAFETENSORS;
        rc = qe_safetensors_load(m, path, opts, err);
    } else {
        unsigned char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        if (!f) {
            qe_err_set(err, QE_EIO, "%s: cannot open", path);
            qe_model_free(m);
            return NULL;
        }
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
            m->format = QE_FMT_GGUF;
            rc = load_gguf(m, path, opts, err);
        } else {
            m->format = QE_FMT_LLAMA2C;
            rc = qe_llama2c_load(m, path, opts, err);
        }
    }
    if (rc == 0 && !(opts && opts->no_validate))
        rc = qe_model_validate(m, err);
    if (rc) {
        qe_model_free(m);
        return NULL;
    }
    return m;
}
