/*
 * bench_infer.c: speed of the inference core on random-weight models with
 * real shapes, built in memory (no files):
 *   smollm-135m:  llama, n_embd 576, n_ff 1536, 30 layers, 9/3 heads, vocab 49152, tied
 *   qwen2.5-0.5b: qwen2, n_embd 896, n_ff 4864, 24 layers, 14/2 heads, vocab 151936,
 *                 tied, Q/K/V biases, rope base 1e6
 * in F16, Q8_0, Q4_K and Q2_K (every 2-D weight in that type, quantized
 * with the traits table's from_float_ref; weights N(0, 0.02)-like uniform;
 * rows that are not a multiple of 256 fall back as in llama-quantize:
 * q4_K -> q5_0, q2_K -> iq4_nl, so most of these models' matrices are
 * q5_0 / iq4_nl and only ffn_down is q4_K / q2_K).
 *
 * Prints per model/type: prefill tokens/s for the perplexity workload
 * (one 512-token chunk, logits for all 512 positions incl. the output
 * projection), decode tokens/s (single-token steps after a 128-token
 * prompt), achieved GFLOP/s and the fraction of this machine's peak,
 * then with llamacpp numerics (integer block dots on q8 activations):
 * decode tokens/s; the aggregate tokens/s of 16 sequences decoding
 * together (qe_infer_batch, one run of 1 token per sequence per call, exact
 * numerics) with the decode kernels (b16-dec) and with the prefill kernels
 * (b16, what generate_many uses).
 *
 * usage: bench_infer [--models smollm,qwen] [--types f16,q8_0,q4_K,q2_K]
 *                    [--threads N] [--ctx 512]
 * llama.cpp b4747 reference (SPEED.md, 2 threads, ctx 512, Intel host):
 *   SmolLM F16 436, Q8_0 453, Q4_K_M 385, Q2_K 370 tok/s;
 *   Qwen2.5-0.5B F16 165, Q8_0 168, Q4_K_M 137, Q2_K 131 tok/s.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/infer/infer.h"
#include "../harness/model/model.h"
#include "../quant/quant.h"

#include "bench_models.h"

#define N_REP 3

static double median3(const double *t)
{
    double a = t[0], b = t[1], c = t[2];
    return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

/* Peak f32 GFLOP/s of this machine: cores x MHz x flops/cycle (AVX-512 FMA:
 * 2 pipes x 16 lanes x 2 = 64 on Intel and on AMD Zen 5 (cpu family 26),
 * 32 on Zen 4 (family 25) whose 512-bit ops run as two 256-bit halves;
 * AVX2: 32).  MHz is the nominal clock from /proc/cpuinfo; boost clocks
 * can exceed it, so a figure near 100% means "at the FMA limit". */
static double peak_gflops(int n_threads)
{
    double mhz = 0;
    bool amd = false;
    int family = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (!mhz && strncmp(line, "cpu MHz", 7) == 0)
                mhz = atof(strchr(line, ':') + 1);
            if (strstr(line, "AuthenticAMD"))
                amd = true;
            if (!family && strncmp(line, "cpu family", 10) == 0)
                family = atoi(strchr(line, ':') + 1);
        }
        fclose(f);
    }
    if (mhz <= 0)
        mhz = 2500;
    int isa = qe_infer_isa();
    double fpc = isa == QE_ISA_AVX512 ? (amd && family < 26 ? 32 : 64) : isa == QE_ISA_AVX2 ? 32 : 4;
    return n_threads * mhz * 1e-3 * fpc;
}

int main(int argc, char **argv)
{
    bench_args a = {.models = "smollm,qwen", .types = "f16,q8_0,q4_K,q2_K", .n_threads = 2,
                    .n_ctx = 512};
    for (int i = 1; i < argc; i++) {
        if (!bench_common_arg(argc, argv, &i, &a)) {
            fprintf(stderr, "usage: %s [--models smollm,qwen] [--types f16,q8_0,q4_K,q2_K] "
                            "[--threads N] [--ctx 512]\n", argv[0]);
            return 2;
        }
    }
    const char *models = a.models, *types = a.types;
    const int n_threads = a.n_threads, n_ctx = a.n_ctx;
    if (n_threads < 1 || n_ctx < 16) {
        fprintf(stderr, "bench_infer: bad --threads/--ctx\n");
        return 2;
    }
    const double peak = peak_gflops(n_threads);
    printf("bench_infer: isa %s, %d threads, ctx %d, peak %.0f GFLOP/s\n",
           qe_infer_isa_name(qe_infer_isa()), n_threads, n_ctx, peak);
    printf("prefill: %d tokens, logits for every position (llama-perplexity's work), median of %d;\n"
           "ppl: the same chunk with logits from n_ctx/2 on (what qeval ppl computes), median of %d\n",
           n_ctx, N_REP, N_REP);
    printf("%-13s %-5s %9s %12s %9s %8s %6s %9s %11s %9s %8s %8s %8s\n", "model", "type",
           "weights", "prefill t/s", "GFLOP/s", "of peak", "llama", "ppl t/s", "decode t/s",
           "build s", "dec-lc", "b16-dec", "b16");
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
        const shape *s = &SHAPES[si];
        if (!bench_in_list(models, bench_model_key(s)))
            continue;
        for (int ti = 0; ti < 4; ti++) {
            if (!bench_in_list(types, TYPES[ti]))
                continue;
            int type = qe_type_from_name(TYPES[ti]);
            const qe_type_traits *tr = qe_type_get(type);
            if (!tr || (!tr->to_float) || (type != QE_TYPE_F16 && !tr->from_float_ref)) {
                printf("%-13s %-5s  skipped: no kernels for this type yet\n", s->name, TYPES[ti]);
                continue;
            }
            double tb = qe_now();
            qe_model *m = build(s, type);
            tb = qe_now() - tb;
            if (!m)
                return 1;
            qe_err err = {0};
            qe_infer_opts o = {.n_ctx = n_ctx, .n_threads = n_threads};
            qe_infer *inf = qe_infer_new(m, &o, &err);
            if (!inf) {
                fprintf(stderr, "bench: %s\n", err.msg);
                return 1;
            }
            int32_t *tok_ids = malloc((size_t)n_ctx * sizeof(int32_t));
            float *logits = malloc((size_t)n_ctx * s->n_vocab * sizeof(float));
            for (int i = 0; i < n_ctx; i++)
                tok_ids[i] = (int32_t)((i * 2654435761u) % (uint32_t)s->n_vocab);
            /* prefill: the perplexity workload, logits for every position
             * (as llama-perplexity computes them), then logits from n_ctx/2
             * only (the positions llama.cpp's protocol scores: qeval ppl) */
            double tp = 0, tq = 0;
            for (int pass = 0; pass < 2; pass++) {
                double ts[N_REP];
                for (int r = 0; r < N_REP; r++) {
                    qe_infer_rewind(inf, 0);
                    double t0 = qe_now();
                    if (qe_infer_eval(inf, tok_ids, n_ctx, pass ? n_ctx / 2 : 0, logits, &err)) {
                        fprintf(stderr, "bench: %s\n", err.msg);
                        return 1;
                    }
                    ts[r] = qe_now() - t0;
                }
                *(pass ? &tq : &tp) = median3(ts);
            }
            /* flops: 2 per weight per token (incl. output) + attention q.k and p.v */
            const double hd = (double)s->n_embd / s->n_head;
            double w_params = (double)qe_model_n_params(m) - (double)s->n_embd * s->n_vocab +
                              2.0 * s->n_embd * s->n_vocab; /* embd lookup is free, output not */
            double flops = 2.0 * w_params * n_ctx +
                           4.0 * s->n_layer * s->n_head * hd * ((double)n_ctx * (n_ctx + 1) / 2);
            double gfs = flops / tp * 1e-9;
            /* decode: 32 single-token steps after a 128-token prompt */
            qe_infer_rewind(inf, 0);
            int n_prompt = n_ctx / 4, n_dec = 32;
            qe_infer_eval(inf, tok_ids, n_prompt, n_prompt - 1, logits, &err);
            double t1 = qe_now();
            for (int i = 0; i < n_dec; i++)
                qe_infer_eval(inf, tok_ids + n_prompt + i, 1, 0, logits, &err);
            double td = qe_now() - t1;
            /* llamacpp numerics decode; 16 sequences at once (exact numerics):
             * tb16[0] prefill kernels, tb16[1] decode kernels */
            double tdl = 0, tb16[2] = {0, 0};
            enum { NB = 16 };
            for (int num = 1; num >= -1; num--) { /* 1: llamacpp; 0 b16-dec, -1 b16 */
                qe_infer_opts ob = {.n_ctx = n_ctx, .n_threads = n_threads, .n_seq = NB,
                                    .numerics = num == 1 ? QE_NUMERICS_LLAMACPP
                                                         : QE_NUMERICS_EXACT};
                qe_infer *ib = qe_infer_new(m, &ob, &err);
                if (!ib) {
                    printf("  (%s numerics: %s)\n", num ? "llamacpp" : "exact", err.msg);
                    continue;
                }
                qe_seq_run r0 = {.seq = 0, .tokens = tok_ids, .n = n_prompt,
                                 .logits_from = n_prompt};
                qe_infer_batch(ib, &r0, 1, NULL, &err);
                if (num == 1) {
                    double t2 = qe_now();
                    for (int i = 0; i < n_dec; i++) {
                        qe_seq_run r1 = {.seq = 0, .tokens = tok_ids + n_prompt + i, .n = 1};
                        qe_infer_batch(ib, &r1, 1, logits, &err);
                    }
                    tdl = qe_now() - t2;
                    qe_infer_free(ib);
                    continue; /* batched llamacpp numerics: too slow to time here */
                }
                qe_seq_run rb[NB];
                for (int q = 0; q < NB; q++)
                    qe_infer_seq_copy(ib, q, 0, n_prompt, &err);
                double t3 = qe_now();
                for (int i = 0; i < n_dec / 2; i++) {
                    for (int q = 0; q < NB; q++)
                        rb[q] = (qe_seq_run){.seq = q, .tokens = tok_ids + (q * 7 + i) % n_ctx,
                                             .n = 1, .prefill_kernels = num < 0};
                    if (qe_infer_batch(ib, rb, NB, logits, &err)) {
                        fprintf(stderr, "bench: %s\n", err.msg);
                        return 1;
                    }
                }
                tb16[num + 1] = qe_now() - t3;
                qe_infer_free(ib);
            }
            double wbytes = (double)qe_model_tensor_nbytes(m) / (1 << 20);
            printf("%-13s %-5s %7.0fMB %12.1f %9.1f %7.1f%% %6.0f %9.1f %11.2f %9.1f %8.2f %8.1f "
                   "%8.1f\n", s->name, TYPES[ti], wbytes, n_ctx / tp, gfs, 100 * gfs / peak,
                   s->llama_tps[ti], n_ctx / tq, n_dec / td, tb, tdl > 0 ? n_dec / tdl : 0.0,
                   tb16[1] > 0 ? NB * (n_dec / 2) / tb16[1] : 0.0,
                   tb16[0] > 0 ? NB * (n_dec / 2) / tb16[0] : 0.0);
            fflush(stdout);
            free(tok_ids);
            free(logits);
            qe_infer_free(inf);
            qe_model_free(m);
        }
    }
    return 0;
}
