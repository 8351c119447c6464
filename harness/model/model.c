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
#include "arch.h"
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
    m->cfg.embd_scale = 1.0f;
    m->cfg.rope_attn_factor = 1.0f;
    m->cfg.rope_freq_base_swa = 10000.0f;
    m->cfg.rope_freq_scale_swa = 1.0f;
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

/* Check that `name` exists with exactly the given shape (n_dims entries). */
static int want_tensor(const qe_model *m, const char *name, uint32_t n_dims, int64_t ne0,
                       int64_t ne1, int64_t ne2, const char *what, qe_err *err)
{
    const qe_tensor *t = qe_model_tensor(m, name);
    if (!t)
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing tensor '%s' (%s)", m->path, name, what);
    int64_t want[3] = {ne0, ne1, ne2};
    bool ok = t->ne[3] == 1;
    for (uint32_t d = 0; d < 3; d++)
        ok = ok && t->ne[d] == (d < n_dims ? want[d] : 1);
    if (!ok) {
        char got[96], exp[96];
        snprintf(got, sizeof got, "[%lld, %lld, %lld]", (long long)t->ne[0], (long long)t->ne[1],
                 (long long)t->ne[2]);
        if (n_dims == 1)
            snprintf(exp, sizeof exp, "[%lld]", (long long)ne0);
        else if (n_dims == 2)
            snprintf(exp, sizeof exp, "[%lld, %lld]", (long long)ne0, (long long)ne1);
        else
            snprintf(exp, sizeof exp, "[%lld, %lld, %lld]", (long long)ne0, (long long)ne1,
                     (long long)ne2);
        return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': shape %s, expected %s (%s)", m->path,
                          name, got, exp, what);
    }
    return 0;
}

/* One expected per-layer tensor: which sizes its ne[] must equal. */
typedef struct layer_spec {
    const char *suffix;
    uint32_t n_dims;
    char r[3]; /* E n_embd, F n_ff, Q q width, K kv width, H head_dim, X n_expert,
                  G n_ff_exp, S n_ff_shexp, 3 q+2kv, 2 2*n_ff */
} layer_spec;

static int64_t spec_size(const qe_config *c, char r, const char **nm)
{
    const int64_t Q = (int64_t)c->n_head * c->head_dim, K = (int64_t)c->n_head_kv * c->head_dim;
    switch (r) {
    case 'E': *nm = "n_embd"; return c->n_embd;
    case 'F': *nm = "n_ff"; return c->n_ff;
    case 'Q': *nm = "n_head*head_dim"; return Q;
    case 'K': *nm = "n_head_kv*head_dim"; return K;
    case 'H': *nm = "head_dim"; return c->head_dim;
    case 'X': *nm = "expert_count"; return c->n_expert;
    case 'G': *nm = "expert_feed_forward_length"; return c->n_ff_exp;
    case 'S': *nm = "expert_shared_feed_forward_length"; return c->n_ff_shexp;
    case '3': *nm = "q + 2 kv widths"; return Q + 2 * K;
    case '2': *nm = "2*n_ff (gate | up)"; return 2 * (int64_t)c->n_ff;
    default: *nm = ""; return 0;
    }
}

static int want_spec(const qe_model *m, int l, const layer_spec *s, qe_err *err)
{
    char name[96], what[160] = "";
    snprintf(name, sizeof name, "blk.%d.%s", l, s->suffix);
    int64_t d[3] = {0, 0, 0};
    for (uint32_t k = 0; k < s->n_dims; k++) {
        const char *nm;
        d[k] = spec_size(&m->cfg, s->r[k], &nm);
        if (k)
            strncat(what, ", ", sizeof what - strlen(what) - 1);
        strncat(what, nm, sizeof what - strlen(what) - 1);
    }
    return want_tensor(m, name, s->n_dims, d[0], d[1], d[2], what, err);
}

int qe_model_validate(const qe_model *m, qe_err *err)
{
    const qe_config *c = &m->cfg;
    if (!qe_arch_find(c->arch))
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: %s)", m->path,
                          c->arch, qe_arch_list());
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
    if (!(c->rms_eps > 0.0f) || !(c->rope_freq_base > 0.0f) || !(c->rope_freq_scale > 0.0f) ||
        !(c->rope_freq_base_swa > 0.0f) || !(c->rope_freq_scale_swa > 0.0f))
        return qe_err_set(err, QE_EFORMAT,
                          "%s: config: rms eps %g, rope base %g (local %g), rope scale %g "
                          "(local %g) must be > 0",
                          m->path, (double)c->rms_eps, (double)c->rope_freq_base,
                          (double)c->rope_freq_base_swa, (double)c->rope_freq_scale,
                          (double)c->rope_freq_scale_swa);
    if (c->n_expert > 0 && (c->n_expert_used < 1 || c->n_expert_used > c->n_expert ||
                            c->n_ff_exp <= 0))
        return qe_err_set(err, QE_EFORMAT, "%s: config: %d experts, %d used, width %d: expected "
                          "1 <= used <= experts and a positive width", m->path, c->n_expert,
                          c->n_expert_used, c->n_ff_exp);
    int64_t E = c->n_embd, V = c->n_vocab;
    int rc;
    if ((rc = want_tensor(m, "token_embd.weight", 2, E, V, 0, "n_embd, n_vocab", err)) ||
        (rc = want_tensor(m, "output_norm.weight", 1, E, 0, 0, "n_embd", err)))
        return rc;
    if (!c->tied_output &&
        (rc = want_tensor(m, "output.weight", 2, E, V, 0, "n_embd, n_vocab", err)))
        return rc;
    if (c->has_rope_freqs &&
        (rc = want_tensor(m, "rope_freqs.weight", 1, c->n_rot / 2, 0, 0, "n_rot/2", err)))
        return rc;
    if (c->has_rope_factors &&
        ((rc = want_tensor(m, "rope_factors_long.weight", 1, c->n_rot / 2, 0, 0,
                           "LongRoPE factors: n_rot/2", err)) ||
         (rc = want_tensor(m, "rope_factors_short.weight", 1, c->n_rot / 2, 0, 0,
                           "LongRoPE factors: n_rot/2", err))))
        return rc;
    static const layer_spec attn_sep[] = {
        {"attn_q.weight", 2, "EQ"}, {"attn_k.weight", 2, "EK"}, {"attn_v.weight", 2, "EK"}};
    static const layer_spec attn_bias[] = {
        {"attn_q.bias", 1, "Q"}, {"attn_k.bias", 1, "K"}, {"attn_v.bias", 1, "K"}};
    static const layer_spec attn_fused = {"attn_qkv.weight", 2, "E3"};
    static const layer_spec qk_norm[] = {{"attn_q_norm.weight", 1, "H"},
                                         {"attn_k_norm.weight", 1, "H"}};
    static const layer_spec common[] = {{"attn_norm.weight", 1, "E"},
                                        {"attn_output.weight", 2, "QE"},
                                        {"ffn_norm.weight", 1, "E"}};
    static const layer_spec post[] = {{"post_attention_norm.weight", 1, "E"},
                                      {"post_ffw_norm.weight", 1, "E"}};
    static const layer_spec ffn[] = {
        {"ffn_gate.weight", 2, "EF"}, {"ffn_up.weight", 2, "EF"}, {"ffn_down.weight", 2, "FE"}};
    static const layer_spec ffn_fused[] = {{"ffn_up.weight", 2, "E2"},
                                           {"ffn_down.weight", 2, "FE"}};
    static const layer_spec moe[] = {{"ffn_gate_inp.weight", 2, "EX"},
                                     {"ffn_gate_exps.weight", 3, "EGX"},
                                     {"ffn_up_exps.weight", 3, "EGX"},
                                     {"ffn_down_exps.weight", 3, "GEX"}};
    static const layer_spec shexp[] = {{"ffn_gate_inp_shexp.weight", 1, "E"},
                                       {"ffn_gate_shexp.weight", 2, "ES"},
                                       {"ffn_up_shexp.weight", 2, "ES"},
                                       {"ffn_down_shexp.weight", 2, "SE"}};
#define WANT_ALL(arr)                                                                          \
    for (size_t i_ = 0; i_ < sizeof arr / sizeof arr[0]; i_++)                                 \
        if ((rc = want_spec(m, l, &arr[i_], err)))                                             \
            return rc;
    for (int l = 0; l < c->n_layer; l++) {
        WANT_ALL(common)
        if (c->fused_qkv) {
            if ((rc = want_spec(m, l, &attn_fused, err)))
                return rc;
        } else {
            WANT_ALL(attn_sep)
            if (c->has_qkv_bias)
                WANT_ALL(attn_bias)
        }
        if (c->qk_norm)
            WANT_ALL(qk_norm)
        if (c->post_norms)
            WANT_ALL(post)
        if (c->n_expert > 0) {
            WANT_ALL(moe)
            if (c->n_ff_shexp > 0)
                WANT_ALL(shexp)
        } else if (c->fused_gate_up) {
            WANT_ALL(ffn_fused)
        } else {
            WANT_ALL(ffn)
        }
    }
#undef WANT_ALL
    if (m->tok && qe_tokenizer_n_vocab(m->tok) > c->n_vocab)
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tokenizer has %d tokens but token_embd has only %d rows", m->path,
                          (int)qe_tokenizer_n_vocab(m->tok), c->n_vocab);
    return 0;
}

/* ----------------------------------------------------------------- GGUF */

int qe_model_key_int(const qe_gguf *g, const char *arch, const char *suffix, bool required,
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

int qe_model_key_float(const qe_gguf *g, const char *arch, const char *suffix, float *out,
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
    if (!qe_arch_find(a) && !(opts && opts->no_validate))
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: %s)", path, a,
                          qe_arch_list());
    if ((rc = qe_model_key_int(g, a, "embedding_length", true, &c->n_embd, err)) < 0 ||
        (rc = qe_model_key_int(g, a, "feed_forward_length", true, &c->n_ff, err)) < 0 ||
        (rc = qe_model_key_int(g, a, "block_count", true, &c->n_layer, err)) < 0 ||
        (rc = qe_model_key_int(g, a, "attention.head_count", true, &c->n_head, err)) < 0)
        return rc;
    if (c->n_head <= 0)
        return qe_err_set(err, QE_EFORMAT, "%s: key '%s.attention.head_count' is 0", path, a);
    c->n_head_kv = c->n_head;
    if ((rc = qe_model_key_int(g, a, "attention.head_count_kv", false, &c->n_head_kv, err)) < 0)
        return rc;
    c->head_dim = c->n_embd / c->n_head;
    if ((rc = qe_model_key_int(g, a, "attention.key_length", false, &c->head_dim, err)) < 0)
        return rc;
    c->n_rot = c->head_dim;
    if ((rc = qe_model_key_int(g, a, "rope.dimension_count", false, &c->n_rot, err)) < 0)
        return rc;
    c->n_ctx_train = 0;
    if ((rc = qe_model_key_int(g, a, "context_length", false, &c->n_ctx_train, err)) < 0)
        return rc;
    c->rms_eps = 1e-5f;
    if ((rc = qe_model_key_float(g, a, "attention.layer_norm_rms_epsilon", &c->rms_eps, err)) < 0 ||
        (rc = qe_model_key_float(g, a, "rope.freq_base", &c->rope_freq_base, err)) < 0)
        return rc;

    /* RoPE scaling: "<arch>.rope.scaling.type" + ".factor" (newer), or the
     * older "<arch>.rope.scale_linear"; Llama 3.1 scaling arrives as the
     * rope_freqs.weight tensor. */
    char stype[32] = "";
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    qe_gguf_get_str(g, key, stype, sizeof stype, NULL);
    float factor = 0.0f;
    if ((rc = qe_model_key_float(g, a, "rope.scaling.factor", &factor, err)) < 0)
        return rc;
    if (rc == 1 && (rc = qe_model_key_float(g, a, "rope.scale_linear", &factor, err)) < 0)
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
    if ((rc = qe_model_key_int(g, a, "rope.scaling.original_context_length", false,
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
    /* features of the known architectures (unknown ones load for `qeval info`;
     * qe_model_validate refuses them) */
    if (qe_arch_find(a) && (rc = qe_arch_apply(m, g, err)))
        return rc;

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
        qe_model_key_int(g, a, "vocab_size", false, &c->n_vocab, NULL);
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
    /* GGUF applied the architecture's features itself (with its metadata) */
    if (rc == 0 && m->format != QE_FMT_GGUF && qe_arch_find(m->cfg.arch))
        rc = qe_arch_apply(m, NULL, err);
    if (rc == 0 && !(opts && opts->no_validate))
        rc = qe_model_validate(m, err);
    if (rc) {
        qe_model_free(m);
        return NULL;
    }
    return m;
}
