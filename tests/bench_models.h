/*
 * bench_models.h: random-weight models with the real shapes of SmolLM-135M
 * and Qwen2.5-0.5B, built in memory, for the benchmarks (bench_infer.c,
 * bench_memory.c).  Every 2-D weight is of one type, with llama-quantize's
 * row-length fallback where a k-quant does not fit (576 and 896 are not
 * multiples of 256); values uniform with std ~0.02, norms 1, tied output.
 * Header-only (static functions): each benchmark is one translation unit.
 */
#ifndef QE_TESTS_BENCH_MODELS_H
#define QE_TESTS_BENCH_MODELS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/model/model.h"
#include "../quant/quant.h"

typedef struct shape {
    const char *name, *arch;
    int n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv;
    bool bias;
    float rope_base, eps;
    double llama_tps[4]; /* SPEED.md medians for f16, q8_0, q4_K(_M), q2_K */
    int n_ctx_train;
    const char *vocab; /* llama.cpp vocab-only GGUF under $QEVAL_ASSETS/tokenizers/llama.cpp-vocab
                          with the right size (SPEED.md: gpt-2 padded to 151936 for qwen) */
} shape;

static const shape SHAPES[] = {
    {"smollm-135m", "llama", 49152, 576, 1536, 30, 9, 3, false, 10000.f, 1e-5f,
     {436, 453, 385, 370}, 2048, "ggml-vocab-starcoder.gguf"},
    {"qwen2.5-0.5b", "qwen2", 151936, 896, 4864, 24, 14, 2, true, 1e6f, 1e-6f,
     {165, 168, 137, 131}, 32768, "ggml-vocab-gpt-2.gguf"},
};
static const char *TYPES[] = {"f16", "q8_0", "q4_K", "q2_K"};

static uint64_t rs = 88172645463325252ull;
static inline float urand(void) /* uniform [-1, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((int32_t)(rs >> 32)) * (1.0f / 2147483648.0f);
}

/* llama-quantize's fallback for a k-quant whose rows are not a multiple of
 * 256 (n_embd 576 and 896 are not): q4_K -> q5_0, q2_K -> iq4_nl, as in
 * llama.cpp's Q4_K_M / Q2_K files of these shapes. */
static int fallback_type(int type, int n_in)
{
    if (n_in % 256 == 0)
        return type;
    if (type == QE_TYPE_Q4_K)
        return QE_TYPE_Q5_0;
    if (type == QE_TYPE_Q2_K)
        return QE_TYPE_IQ4_NL;
    return type;
}

/* Append a tensor of n_out rows x n_in values of type `type` (or its
 * fallback); random values of std ~0.02 (norms: 1). */
static int add(qe_model *m, const char *name, int type, int n_in, int n_out, float amp, float off)
{
    type = fallback_type(type, n_in);
    const qe_type_traits *tr = qe_type_get(type);
    size_t row = qe_type_row_nbytes(type, n_in);
    if (!tr || row == 0 || (type != QE_TYPE_F32 && type != QE_TYPE_F16 && !tr->from_float_ref)) {
        fprintf(stderr, "bench: cannot build %s as %s\n", name, tr ? tr->name : "?");
        return -1;
    }
    uint8_t *data = malloc(row * (size_t)n_out);
    float *x = malloc((size_t)n_in * sizeof(float));
    if (!data || !x) {
        free(data);
        free(x);
        return -1;
    }
    for (int r = 0; r < n_out; r++) {
        for (int i = 0; i < n_in; i++)
            x[i] = off + amp * urand();
        uint8_t *dst = data + (size_t)r * row;
        if (type == QE_TYPE_F32)
            memcpy(dst, x, (size_t)n_in * 4);
        else if (type == QE_TYPE_F16)
            for (int i = 0; i < n_in; i++)
                ((uint16_t *)dst)[i] = qe_fp32_to_fp16(x[i]);
        else
            tr->from_float_ref(x, dst, n_in, NULL);
    }
    free(x);
    int64_t ne[4] = {n_in, n_out, 1, 1};
    qe_err err = {0};
    if (qe_model_add_tensor(m, name, type, n_out > 1 ? 2 : 1, ne, data, data, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        free(data);
        return -1;
    }
    return 0;
}

static qe_model *build(const shape *s, int type)
{
    qe_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    qe_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "%s", s->arch);
    snprintf(c->name, sizeof c->name, "%s", s->name);
    snprintf(m->path, sizeof m->path, "<random %s>", s->name);
    c->n_vocab = s->n_vocab;
    c->n_embd = s->n_embd;
    c->n_ff = s->n_ff;
    c->n_layer = s->n_layer;
    c->n_head = s->n_head;
    c->n_head_kv = s->n_head_kv;
    c->head_dim = s->n_embd / s->n_head;
    c->n_rot = c->head_dim;
    c->rms_eps = s->eps;
    c->rope_freq_base = s->rope_base;
    c->rope_freq_scale = 1.0f;
    c->rope_kind = strcmp(s->arch, "qwen2") == 0 ? QE_ROPE_NEOX : QE_ROPE_NORM;
    c->tied_output = true;
    c->has_qkv_bias = s->bias;
    c->n_ctx_train = s->n_ctx_train;
    const int E = s->n_embd, qd = c->n_head * c->head_dim, kvd = c->n_head_kv * c->head_dim;
    const float a = 0.035f; /* uniform amplitude: std 0.02 */
    int rc = add(m, "token_embd.weight", type, E, s->n_vocab, a, 0);
    rc |= add(m, "output_norm.weight", QE_TYPE_F32, E, 1, 0, 1);
    char nm[96];
    for (int l = 0; l < s->n_layer && rc == 0; l++) {
#define W(suf, ni, no)                                    \
    snprintf(nm, sizeof nm, "blk.%d." suf ".weight", l); \
    rc |= add(m, nm, type, ni, no, a, 0)
        W("attn_q", E, qd);
        W("attn_k", E, kvd);
        W("attn_v", E, kvd);
        W("attn_output", qd, E);
        W("ffn_gate", E, s->n_ff);
        W("ffn_up", E, s->n_ff);
        W("ffn_down", s->n_ff, E);
#undef W
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        rc |= add(m, nm, QE_TYPE_F32, E, 1, 0, 1);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        rc |= add(m, nm, QE_TYPE_F32, E, 1, 0, 1);
        if (s->bias) {
            snprintf(nm, sizeof nm, "blk.%d.attn_q.bias", l);
            rc |= add(m, nm, QE_TYPE_F32, qd, 1, a, 0);
            snprintf(nm, sizeof nm, "blk.%d.attn_k.bias", l);
            rc |= add(m, nm, QE_TYPE_F32, kvd, 1, a, 0);
            snprintf(nm, sizeof nm, "blk.%d.attn_v.bias", l);
            rc |= add(m, nm, QE_TYPE_F32, kvd, 1, a, 0);
        }
    }
    if (rc) {
        qe_model_free(m);
        return NULL;
    }
    return m;
}

/* Options both benchmarks take: --models smollm,qwen --types f16,q8_0,...
 * --threads N --ctx N. */
typedef struct bench_args {
    const char *models, *types;
    int n_threads, n_ctx;
} bench_args;

/* If argv[*i] is one of the common options (with its value), store it in
 * a, step *i past the value and return true. */
static bool bench_common_arg(int argc, char **argv, int *i, bench_args *a)
{
    if (*i + 1 >= argc)
        return false;
    const char *o = argv[*i], *v = argv[*i + 1];
    if (strcmp(o, "--models") == 0)
        a->models = v;
    else if (strcmp(o, "--types") == 0)
        a->types = v;
    else if (strcmp(o, "--threads") == 0)
        a->n_threads = atoi(v);
    else if (strcmp(o, "--ctx") == 0)
        a->n_ctx = atoi(v);
    else
        return false;
    ++*i;
    return true;
}

/* Exact, case-sensitive match of name in a comma-separated list. */
static bool bench_in_list(const char *list, const char *name)
{
    char l[256], n[64];
    snprintf(l, sizeof l, ",%s,", list);
    snprintf(n, sizeof n, ",%s,", name);
    return strstr(l, n) != NULL;
}

/* The --models name of a shape: "qwen" or "smollm". */
static const char *bench_model_key(const shape *s)
{
    return strncmp(s->name, "qwen", 4) == 0 ? "qwen" : "smollm";
}

#endif /* QE_TESTS_BENCH_MODELS_H */
