/*
 * bench_quantize.c: whole-model quantization throughput on the
 * Qwen2.5-0.5B shape (n_embd 896, n_ff 4864, 24 layers, 14 heads / 2 KV
 * heads of 64, vocab 151936, tied embeddings, qkv bias) with random
 * N(0, 0.02) F16 weights made in memory, 2 threads, for Q4_K_M and Q2_K,
 * and with a random importance matrix (mean x^2 in [0.1, 2.1) per column
 * of every blk.* weight) for IQ2_XXS, IQ2_M, IQ3_XXS and IQ1_M.
 * llama-quantize b4747 on the same shape took 5.6 s (Q4_K_M) and 30.8 s
 * (Q2_K) with 2 threads (figures from the brief).
 *
 * usage: bench_quantize [n_layers (default 24)] [threads (default 2)] [DIR]
 *   DIR: also write DIR/shape-F16.gguf and DIR/shape.imatrix (llama.cpp
 *   .dat) so that llama-quantize can be timed on the very same input:
 *   llama-quantize --imatrix DIR/shape.imatrix DIR/shape-F16.gguf OUT IQ2_XXS 2
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/model/imatrix_io.h"
#include "../harness/model/model.h"
#include "../harness/model/quantize_model.h"
#include "../harness/util/common.h"
#include "../quant/recipe.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double uniform01(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* A pool of N(0, 0.02) halfs (Box-Muller); tensors copy from it at random
 * offsets, which keeps setup fast for 0.5 B weights. */
#define POOL_N (1 << 22)
static uint16_t *g_pool;

static int make_pool(void)
{
    g_pool = malloc(POOL_N * sizeof *g_pool);
    if (!g_pool)
        return -1;
    for (int64_t i = 0; i < POOL_N; i += 2) {
        double u1 = uniform01(), u2 = uniform01(), r = sqrt(-2.0 * log(u1));
        g_pool[i] = qe_fp32_to_fp16((float)(0.02 * r * cos(6.283185307179586 * u2)));
        g_pool[i + 1] = qe_fp32_to_fp16((float)(0.02 * r * sin(6.283185307179586 * u2)));
    }
    return 0;
}

/* F16 tensor of N(0, 0.02) values, owned by the model */
static int add_f16(qe_model *m, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1,
                   qe_err *err)
{
    int64_t n = ne0 * ne1;
    uint16_t *d = malloc((size_t)n * sizeof *d);
    if (!d)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n;) {
        int64_t off = (int64_t)(uniform01() * (POOL_N / 2)), len = n - i < POOL_N / 2 ? n - i : POOL_N / 2;
        memcpy(d + i, g_pool + off, (size_t)len * sizeof *d);
        i += len;
    }
    int64_t ne[4] = {ne0, ne1, 1, 1};
    int rc = qe_model_add_tensor(m, name, 1 /* f16 */, n_dims, ne, d, d, err);
    if (rc)
        free(d);
    return rc;
}

int main(int argc, char **argv)
{
    int n_layer = argc > 1 ? atoi(argv[1]) : 24;
    int n_threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *out_dir = argc > 3 ? argv[3] : NULL;
    qe_imatrix *im = NULL;
    if (n_layer < 1 || n_layer > 24 || n_threads < 1) {
        fprintf(stderr, "usage: bench_quantize [n_layers 1..24] [threads]\n");
        return 2;
    }
    const int64_t E = 896, F = 4864, V = 151936, KV = 2 * 64;
    qe_err err = {0};
    qe_model shape = {0};
    qe_strlcpy(shape.cfg.arch, "qwen2", sizeof shape.cfg.arch);
    qe_strlcpy(shape.cfg.name, "qwen2.5-0.5b-shape", sizeof shape.cfg.name);
    shape.cfg.n_vocab = (int)V;
    shape.cfg.n_embd = (int)E;
    shape.cfg.n_ff = (int)F;
    shape.cfg.n_layer = n_layer;
    shape.cfg.n_head = 14;
    shape.cfg.n_head_kv = 2;
    shape.cfg.head_dim = 64;
    shape.cfg.n_rot = 64; /* Qwen2.5-0.5B's hyperparameters, so the written file loads */
    shape.cfg.n_ctx_train = 32768;
    shape.cfg.rms_eps = 1e-6f;
    shape.cfg.rope_freq_base = 1000000.0f;
    shape.cfg.tied_output = true;
    shape.cfg.has_qkv_bias = true;
    qe_model *m = qe_model_new_like(&shape, 16 + 12 * n_layer, &err);
    if (!m)
        goto fail;
    double t0 = qe_now();
    if (make_pool()) {
        qe_err_set(&err, QE_ENOMEM, "out of memory");
        goto fail;
    }
    if (add_f16(m, "token_embd.weight", 2, E, V, &err) ||
        add_f16(m, "output_norm.weight", 1, E, 1, &err))
        goto fail;
    for (int l = 0; l < n_layer; l++) {
        static const struct {
            const char *s;
            int64_t a, b;
            uint32_t nd;
        } L[] = {{"attn_norm.weight", 896, 1, 1},  {"attn_q.weight", 896, 896, 2},
                 {"attn_q.bias", 896, 1, 1},       {"attn_k.weight", 896, 128, 2},
                 {"attn_k.bias", 128, 1, 1},       {"attn_v.weight", 896, 128, 2},
                 {"attn_v.bias", 128, 1, 1},       {"attn_output.weight", 896, 896, 2},
                 {"ffn_norm.weight", 896, 1, 1},   {"ffn_gate.weight", 896, 4864, 2},
                 {"ffn_up.weight", 896, 4864, 2},  {"ffn_down.weight", 4864, 896, 2}};
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s", l, L[k].s);
            if (add_f16(m, nm, L[k].nd, L[k].a, L[k].b, &err))
                goto fail;
        }
    }
    (void)KV;
    printf("bench_quantize: Qwen2.5-0.5B shape, %d layers, %.1f M params F16 (made in %.1f s), "
           "%d threads\n",
           n_layer, qe_model_n_params(m) / 1e6, qe_now() - t0, n_threads);
    /* a random importance matrix for every blk.* weight (what llama-imatrix
     * covers), sums in count units with 1 chunk */
    if (!(im = qe_imatrix_new(&err)))
        goto fail;
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = &m->tensors[i];
        if (t->n_dims != 2 || strncmp(t->name, "blk.", 4) != 0)
            continue;
        float *v = malloc((size_t)t->ne[0] * sizeof *v), cnt = 1.0f;
        if (!v) {
            qe_err_set(&err, QE_ENOMEM, "out of memory");
            goto fail;
        }
        for (int64_t j = 0; j < t->ne[0]; j++)
            v[j] = (float)(0.1 + 2.0 * uniform01());
        int rc = qe_imatrix_add(im, t->name, (int32_t)t->ne[0], 1, 1, v, &cnt, &err);
        free(v);
        if (rc)
            goto fail;
    }
    im->chunk_count = 1;
    if (qe_imatrix_add_dataset(im, "random", &err))
        goto fail;
    if (out_dir) {
        char gp[1024], ip[1024];
        snprintf(gp, sizeof gp, "%s/shape-F16.gguf", out_dir);
        snprintf(ip, sizeof ip, "%s/shape.imatrix", out_dir);
        qe_gguf_write_info wi = {1 /* F16 */, NULL, NULL};
        if (qe_model_write_gguf(m, m, gp, &wi, &err) || qe_imatrix_write_dat(im, ip, &err))
            goto fail;
        printf("  wrote %s and %s\n", gp, ip);
    }
    static const struct {
        int ftype;
        double llama_s; /* < 0: not measured in the brief */
        bool imatrix;
    } runs[] = {{QE_FTYPE_Q4_K_M, 5.6, false},   {QE_FTYPE_Q2_K, 30.8, false},
                {QE_FTYPE_IQ2_XXS, -1, true},    {QE_FTYPE_IQ2_M, -1, true},
                {QE_FTYPE_IQ3_XXS, -1, true},    {QE_FTYPE_IQ1_M, -1, true}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        qe_quant_opts o;
        qe_quant_opts_init(&o);
        o.ftype = runs[r].ftype;
        o.n_threads = n_threads;
        o.imatrix = runs[r].imatrix ? im : NULL;
        qe_quant_report rep = {0};
        double t = qe_now();
        qe_model *q = qe_model_quantize(m, &o, &rep, &err);
        t = qe_now() - t;
        if (!q)
            goto fail;
        char ref[96] = "llama-quantize: time it on DIR's files";
        if (runs[r].llama_s > 0)
            snprintf(ref, sizeof ref, "llama-quantize b4747, 24 layers, 2 threads: %5.1f s",
                     runs[r].llama_s);
        printf("  %-7s%s %7.2f s  (%s)  %.1f MiB, %.4f bpw, %d fallbacks\n",
               qe_ftype_name(runs[r].ftype), runs[r].imatrix ? "+imat" : "     ", t, ref,
               rep.nbytes / 1048576.0, rep.bpw, rep.n_fallback_llama + rep.n_fallback_qeval);
        qe_quant_report_free(&rep);
        qe_model_free(q);
    }
    qe_imatrix_free(im);
    qe_model_free(m);
    free(g_pool);
    return 0;
fail:
    fprintf(stderr, "bench_quantize: %s\n", err.msg);
    qe_imatrix_free(im);
    qe_model_free(m);
    free(g_pool);
    return 1;
}
