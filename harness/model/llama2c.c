/*
 * llama2c.c: llama2.c legacy (version 0) fp32 checkpoints -> qe_model.
 * The file layout is documented in llama2c.h.  Every size is derived from
 * the header with overflow checks and must match the file size exactly
 * before any tensor view is taken.
 */
#include "llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../quant/quant.h"
#include "tokenizer.h"

#define L2C_HEADER_NBYTES 28 /* 7 x int32 */

static int32_t rd_i32(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    int32_t s;
    memcpy(&s, &v, 4);
    return s;
}

/* Tokenizer beside the model: tok<vocab>.bin, then tokenizer.bin. */
static int find_tokenizer(const char *model_path, int n_vocab, char *out, size_t cap)
{
    char dir[512];
    const char *slash = strrchr(model_path, '/');
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - model_path), model_path);
    else
        snprintf(dir, sizeof dir, ".");
    snprintf(out, cap, "%s/tok%d.bin", dir, n_vocab);
    if (access(out, R_OK) == 0)
        return 0;
    snprintf(out, cap, "%s/tokenizer.bin", dir);
    if (access(out, R_OK) == 0)
        return 0;
    return QE_ENOTFOUND;
}

int qe_llama2c_load(qe_model *m, const char *path, const qe_load_opts *opts, qe_err *err)
{
    const qe_map *map;
    int rc = qe_model_attach_map(m, path, &map, err);
    if (rc)
        return rc;
    const uint8_t *base = map->data;
    uint64_t size = map->nbytes;
    if (size < L2C_HEADER_NBYTES)
        return qe_err_set(err, QE_ETRUNC,
                          "%s: %llu bytes: too short for a llama2.c header (28 bytes: 7 x int32) "
                          "and not GGUF/safetensors",
                          path, (unsigned long long)size);
    int32_t h[7];
    for (int i = 0; i < 7; i++)
        h[i] = rd_i32(base + 4 * i);
    if ((uint32_t)h[0] == 0x616b3432u)
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: llama2.c export version %d (magic 'ak42'): only the legacy "
                          "version 0 fp32 format is supported", path, h[1]);
    static const char *const fields[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                          "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int32_t v = i == 5 ? (h[i] < 0 ? -h[i] : h[i]) : h[i];
        if (v <= 0 || v > (1 << 24))
            return qe_err_set(err, QE_EFORMAT,
                              "%s: header offset %d: %s = %d, expected 1..16777216 "
                              "(not a llama2.c checkpoint?)",
                              path, 4 * i, fields[i], (int)h[i]);
    }
    int64_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4];
    bool shared = h[5] > 0;
    int64_t vocab = shared ? h[5] : -(int64_t)h[5], seq_len = h[6];
    if (dim % n_heads != 0 || n_kv > n_heads || n_heads % n_kv != 0 || (dim / n_heads) % 2)
        return qe_err_set(err, QE_EFORMAT,
                          "%s: header: dim %lld, n_heads %lld, n_kv_heads %lld: expected dim "
                          "divisible by n_heads into an even head size, and n_heads a multiple "
                          "of n_kv_heads",
                          path, (long long)dim, (long long)n_heads, (long long)n_kv);
    int64_t head = dim / n_heads, kv_dim = dim * n_kv / n_heads;

    /* Section sizes in floats (each term < 2^24 * 2^24 * 2^24: no overflow in
     * uint64 for products of at most three header values). */
    struct sect {
        const char *name; /* GGUF name pattern; NULL = skipped */
        uint64_t per_layer_nel; /* elements per layer (or total if !layered) */
        bool layered;
        int64_t ne0, ne1;   /* GGUF ne */
    } sects[] = {
        {"token_embd.weight", (uint64_t)(vocab * dim), false, dim, vocab},
        {"attn_norm.weight", (uint64_t)dim, true, dim, 1},
        {"attn_q.weight", (uint64_t)(dim * dim), true, dim, dim},
        {"attn_k.weight", (uint64_t)(kv_dim * dim), true, dim, kv_dim},
        {"attn_v.weight", (uint64_t)(kv_dim * dim), true, dim, kv_dim},
        {"attn_output.weight", (uint64_t)(dim * dim), true, dim, dim},
        {"ffn_norm.weight", (uint64_t)dim, true, dim, 1},
        {"ffn_gate.weight", (uint64_t)(hidden * dim), true, dim, hidden},
        {"ffn_down.weight", (uint64_t)(dim * hidden), true, hidden, dim},
        {"ffn_up.weight", (uint64_t)(hidden * dim), true, dim, hidden},
        {"output_norm.weight", (uint64_t)dim, false, dim, 1},
        {NULL, (uint64_t)(seq_len * head), false, 0, 0}, /* freq_cis_real + imag */
        {"output.weight", shared ? 0 : (uint64_t)(vocab * dim), false, dim, vocab},
    };
    const size_t n_sects = sizeof sects / sizeof sects[0];
    uint64_t total = 0;
    for (size_t s = 0; s < n_sects; s++) {
        uint64_t nel = sects[s].per_layer_nel, nb;
        if (sects[s].layered && !qe_mul_ok(nel, (uint64_t)n_layers, &nel))
            return qe_err_set(err, QE_EOVERFLOW, "%s: header sizes overflow", path);
        if (!qe_mul_ok(nel, 4, &nb) || !qe_add_ok(total, nb, &total))
            return qe_err_set(err, QE_EOVERFLOW, "%s: header sizes overflow", path);
    }
    uint64_t want;
    if (!qe_add_ok(total, L2C_HEADER_NBYTES, &want))
        return qe_err_set(err, QE_EOVERFLOW, "%s: header sizes overflow", path);
    if (size != want)
        return qe_err_set(err, size < want ? QE_ETRUNC : QE_EFORMAT,
                          "%s: %llu bytes, but the header (dim %lld, hidden %lld, layers %lld, "
                          "heads %lld/%lld, vocab %lld%s, seq_len %lld) implies exactly %llu",
                          path, (unsigned long long)size, (long long)dim, (long long)hidden,
                          (long long)n_layers, (long long)n_heads, (long long)n_kv,
                          (long long)vocab, shared ? " shared" : " unshared", (long long)seq_len,
                          (unsigned long long)want);

    /* Views, in GGUF order per layer for readability of `qeval info`. */
    uint64_t off[16];
    uint64_t o = L2C_HEADER_NBYTES;
    for (size_t s = 0; s < n_sects; s++) {
        off[s] = o;
        o += sects[s].per_layer_nel * (sects[s].layered ? (uint64_t)n_layers : 1) * 4;
    }
    for (size_t s = 0; s < n_sects; s++) {
        if (!sects[s].name || sects[s].layered || sects[s].per_layer_nel == 0)
            continue;
        if (s == n_sects - 1)
            continue; /* output.weight goes last */
        int64_t ne[2] = {sects[s].ne0, sects[s].ne1};
        if ((rc = qe_model_add_tensor(m, sects[s].name, QE_TYPE_F32, sects[s].ne1 > 1 ? 2 : 1,
                                      ne, base + off[s], NULL, err)))
            return rc;
    }
    if (!shared) {
        const struct sect *s = &sects[n_sects - 1];
        int64_t ne[2] = {s->ne0, s->ne1};
        if ((rc = qe_model_add_tensor(m, s->name, QE_TYPE_F32, 2, ne, base + off[n_sects - 1],
                                      NULL, err)))
            return rc;
    }
    for (int64_t l = 0; l < n_layers; l++) {
        for (size_t s = 0; s < n_sects; s++) {
            if (!sects[s].layered)
                continue;
            char name[96];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, sects[s].name);
            int64_t ne[2] = {sects[s].ne0, sects[s].ne1};
            const uint8_t *p = base + off[s] + (uint64_t)l * sects[s].per_layer_nel * 4;
            if ((rc = qe_model_add_tensor(m, name, QE_TYPE_F32, sects[s].ne1 > 1 ? 2 : 1, ne, p,
                                          NULL, err)))
                return rc;
        }
    }

    qe_config *c = &m->cfg;
    qe_strlcpy(c->arch, "llama", sizeof c->arch);
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(c->name, sizeof c->name, "%.*s",
             (int)(strrchr(b, '.') ? (size_t)(strrchr(b, '.') - b) : strlen(b)), b);
    c->n_vocab = (int)vocab;
    c->n_embd = (int)dim;
    c->n_ff = (int)hidden;
    c->n_layer = (int)n_layers;
    c->n_head = (int)n_heads;
    c->n_head_kv = (int)n_kv;
    c->head_dim = (int)head;
    c->n_rot = (int)head;
    c->n_ctx_train = (int)seq_len;
    c->rms_eps = 1e-5f;
    c->rope_freq_base = 10000.0f;
    c->rope_freq_scale = 1.0f;
    c->rope_kind = QE_ROPE_NORM;
    c->rope_scaling = QE_ROPE_SCALING_NONE;
    c->tied_output = shared;
    c->has_qkv_bias = false;
    c->has_rope_freqs = false;
    c->file_type = 0; /* LLAMA_FTYPE_ALL_F32 */

    if (opts && opts->no_tokenizer)
        return 0;
    char tpath[1024];
    if (opts && opts->tokenizer_path) {
        qe_strlcpy(tpath, opts->tokenizer_path, sizeof tpath);
    } else if (find_tokenizer(path, (int)vocab, tpath, sizeof tpath) != 0) {
        return qe_err_set(err, QE_ENOTFOUND,
                          "%s: no tokenizer: expected tok%lld.bin or tokenizer.bin beside the "
                          "model (or pass a tokenizer path)",
                          path, (long long)vocab);
    }
    m->tok = qe_tokenizer_from_llama2c(tpath, (int)vocab, err);
    if (!m->tok)
        return qe_err_prefix(err, "%s: tokenizer", path);
    return 0;
}
