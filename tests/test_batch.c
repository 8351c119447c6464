/*
 * test_batch.c: multi-sequence batches in the inference core
 * (qe_infer_batch, sequence slots, prefix copy).
 *
 * For every architecture the core runs (llama: stories260K and a Q4_K_M
 * random llama; qwen3, qwen3moe, gemma2 (soft-caps, sliding window),
 * gemma3, phi3, Mixtral-style, qwen2moe: the random F32 bases test_arch
 * regenerates), in exact and llamacpp numerics, and in int8 numerics on
 * random llamas of every int8 weight type:
 *  - each sequence decoded alone through qe_infer_eval (prompt in one run,
 *    then one token per call) gives reference logits;
 *  - the same sequences interleaved in qe_infer_batch calls (several in
 *    one call, starting at different steps, prompts sharing calls with
 *    other sequences' decode tokens, in other slots, 1 and 3 threads) give
 *    bit-identical logits (memcmp);
 *  - a prefix copied from another slot and extended equals recomputing it;
 *  - bad calls (slot twice, bad slot, context overflow) are refused;
 *  - int8 logits stay within a small fraction of exact ones.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../harness/infer/infer.h"
#include "../harness/model/model.h"
#include "test.h"

#define GEN_DIR "build/arch-models"
#define N_STEPS 6
#define N_PROMPT 3

static const int32_t prompt_tok[N_PROMPT][12] = {
    {1, 5, 9, 14, 20, 27, 3, 0, 0, 0, 0, 0},
    {1, 40, 33, 2, 8, 19, 21, 22, 6, 7, 30, 11},
    {1, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};
static const int prompt_len[N_PROMPT] = {7, 12, 2};

static int32_t argmax(const float *v, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* Reference: sequence s alone; ref[s][k] = logits after step k (k = 0:
 * the prompt's last row), toks[s][k] the greedy token fed at step k+1. */
static bool forced; /* every run with prefill_kernels (reference: qe_infer_batch alone) */

static int reference(const qe_model *m, int numerics, float *ref[N_PROMPT][N_STEPS + 1],
                     int32_t toks[N_PROMPT][N_STEPS])
{
    qe_err err = {0};
    qe_infer_opts o = {.n_ctx = 64, .n_threads = 1, .numerics = numerics};
    qe_infer *inf = qe_infer_new(m, &o, &err);
    if (!inf) {
        printf("  %s\n", err.msg);
        return -1;
    }
    const int V = qe_infer_n_vocab(inf);
    for (int s = 0; s < N_PROMPT; s++) {
        qe_infer_rewind(inf, 0);
        for (int k = 0; k <= N_STEPS; k++) {
            ref[s][k] = malloc((size_t)V * sizeof(float));
            int rc;
            if (forced) {
                qe_seq_run r = {.seq = 0, .tokens = k == 0 ? prompt_tok[s] : &toks[s][k - 1],
                                .n = k == 0 ? prompt_len[s] : 1,
                                .logits_from = k == 0 ? prompt_len[s] - 1 : 0,
                                .prefill_kernels = true};
                rc = qe_infer_batch(inf, &r, 1, ref[s][k], &err);
            } else {
                rc = k == 0 ? qe_infer_eval(inf, prompt_tok[s], prompt_len[s], prompt_len[s] - 1,
                                            ref[s][k], &err)
                            : qe_infer_eval(inf, &toks[s][k - 1], 1, 0, ref[s][k], &err);
            }
            if (rc) {
                printf("  %s\n", err.msg);
                qe_infer_free(inf);
                return -1;
            }
            if (k < N_STEPS)
                toks[s][k] = argmax(ref[s][k], V);
        }
    }
    qe_infer_free(inf);
    return 0;
}

/* The three sequences through shared batches: sequence s in slot
 * slot_of[s], starting at call start[s]; every call runs each live
 * sequence's next run.  Returns the number of logit rows that differ. */
static int batched(const qe_model *m, int numerics, int n_threads, const int slot_of[N_PROMPT],
                   const int start[N_PROMPT], float *ref[N_PROMPT][N_STEPS + 1],
                   int32_t toks[N_PROMPT][N_STEPS], int *n_cmp)
{
    qe_err err = {0};
    qe_infer_opts o = {.n_ctx = 64, .n_threads = n_threads, .numerics = numerics, .n_seq = 4,
                       .n_batch = 32};
    qe_infer *inf = qe_infer_new(m, &o, &err);
    if (!inf) {
        printf("  %s\n", err.msg);
        return 1000;
    }
    const int V = qe_infer_n_vocab(inf);
    float *lg = malloc((size_t)N_PROMPT * V * sizeof(float));
    int bad = 0, step[N_PROMPT] = {0};
    *n_cmp = 0;
    for (int call = 0; call < 16; call++) {
        qe_seq_run runs[N_PROMPT];
        int who[N_PROMPT], n = 0;
        for (int s = N_PROMPT - 1; s >= 0; s--) { /* reverse order: slots, order both vary */
            if (call < start[s] || step[s] > N_STEPS)
                continue;
            const int k = step[s];
            runs[n] = (qe_seq_run){.seq = slot_of[s],
                                   .tokens = k == 0 ? prompt_tok[s] : &toks[s][k - 1],
                                   .n = k == 0 ? prompt_len[s] : 1,
                                   .logits_from = k == 0 ? prompt_len[s] - 1 : 0,
                                   .prefill_kernels = forced};
            who[n++] = s;
        }
        if (n == 0)
            continue;
        if (qe_infer_batch(inf, runs, n, lg, &err)) {
            printf("  batch: %s\n", err.msg);
            bad++;
            break;
        }
        for (int i = 0; i < n; i++) {
            const int s = who[i];
            if (memcmp(lg + (size_t)i * V, ref[s][step[s]], (size_t)V * sizeof(float)) != 0)
                bad++;
            (*n_cmp)++;
            step[s]++;
        }
    }
    /* prefix copy: slot 3 := the first 4 positions of sequence 1's slot,
     * then the rest of its prompt as one run: equals recomputing it */
    const int s1 = slot_of[1];
    int dst = 0; /* the slot no sequence uses */
    while (dst == slot_of[0] || dst == slot_of[1] || dst == slot_of[2])
        dst++;
    if (qe_infer_seq_copy(inf, dst, s1, 4, &err) || qe_infer_seq_n_past(inf, dst) != 4) {
        printf("  copy: %s\n", err.msg);
        bad++;
    } else {
        qe_seq_run r = {.seq = dst, .tokens = prompt_tok[1] + 4, .n = prompt_len[1] - 4,
                        .logits_from = prompt_len[1] - 5, .prefill_kernels = forced};
        qe_seq_run r2 = {.seq = slot_of[0], .tokens = prompt_tok[0], .n = 1, .logits_from = 1,
                         .prefill_kernels = !forced};
        qe_infer_seq_rewind(inf, slot_of[0], 0); /* a freed slot restarted alongside */
        qe_infer_opts o1 = {.n_ctx = 64, .n_threads = 1, .numerics = numerics};
        qe_infer *one = qe_infer_new(m, &o1, &err);
        float *want = malloc((size_t)V * sizeof(float));
        qe_seq_run rr[2] = {r2, r};
        qe_seq_run w1 = {.seq = 0, .tokens = prompt_tok[1], .n = 4, .logits_from = 4,
                         .prefill_kernels = forced};
        qe_seq_run w2 = r;
        w2.seq = 0;
        if (!one || qe_infer_batch(inf, rr, 2, lg, &err) ||
            qe_infer_batch(one, &w1, 1, NULL, &err) || qe_infer_batch(one, &w2, 1, want, &err)) {
            printf("  copy check: %s\n", err.msg);
            bad++;
        } else {
            bad += memcmp(lg, want, (size_t)V * sizeof(float)) != 0;
            (*n_cmp)++;
        }
        free(want);
        qe_infer_free(one);
    }
    free(lg);
    qe_infer_free(inf);
    return bad;
}

static void check_model(const char *path, int numerics)
{
    qe_err err = {0};
    qe_model *m = qe_model_load(path, NULL, &err);
    if (!m) {
        printf("  skipped: %s: %s\n", path, err.msg);
        return;
    }
    float *ref[N_PROMPT][N_STEPS + 1];
    int32_t toks[N_PROMPT][N_STEPS];
    memset(ref, 0, sizeof ref);
    if (reference(m, numerics, ref, toks)) {
        CHECKF(0, "%s: reference failed", path);
    } else {
        static const int slots[3][N_PROMPT] = {{0, 1, 2}, {2, 0, 1}, {3, 2, 0}};
        static const int starts[3][N_PROMPT] = {{0, 0, 0}, {0, 2, 3}, {4, 0, 1}};
        const int failed0 = test_cur_failed;
        test_cur_failed = 0;
        for (int v = 0; v < 3; v++)
            for (int th = 1; th <= 3; th += 2) {
                int n_cmp = 0;
                const int bad =
                    batched(m, numerics, th, slots[v], starts[v], ref, toks, &n_cmp);
                CHECKF(bad == 0 && n_cmp == N_PROMPT * (N_STEPS + 1) + 1,
                       "%s numerics %d, schedule %d, %d threads: %d of %d logit rows differ",
                       path, numerics, v, th, bad, n_cmp);
            }
        if (!test_cur_failed)
            printf("  %s (%s%s): 6 schedules x %d rows bit-identical\n", strrchr(path, '/') + 1,
               qe_numerics_name(numerics), forced ? ", prefill kernels" : "",
               N_PROMPT * (N_STEPS + 1) + 1);
        test_cur_failed |= failed0;
    }
    for (int s = 0; s < N_PROMPT; s++)
        for (int k = 0; k <= N_STEPS; k++)
            free(ref[s][k]);
    qe_model_free(m);
}

TEST(llama_batches_bit_identical)
{
    check_model(test_asset("models/stories260K/stories260K.gguf"), QE_NUMERICS_EXACT);
    check_model(test_asset("models/stories260K/stories260K.gguf"), QE_NUMERICS_LLAMACPP);
    check_model(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"), QE_NUMERICS_EXACT);
    check_model(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"),
                QE_NUMERICS_LLAMACPP);
    forced = true; /* the kernels generate_many uses */
    check_model(test_asset("models/stories260K/stories260K.gguf"), QE_NUMERICS_EXACT);
    check_model(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"), QE_NUMERICS_EXACT);
    forced = false;
}

/* int8 numerics: every int8 weight type (q4_K, q5_K, q6_K, q8_0, q4_0, q4_1,
 * q5_0, q5_1, q2_K, q3_K, iq4_nl across these mixes) batch- and
 * thread-invariant, whichever kernels the runs ask for. */
TEST(int8_batches_bit_identical)
{
    static const char *const files[] = {"Q4_K_M", "Q5_K_M", "Q8_0", "Q4_1", "Q5_0", "Q2_K",
                                        "Q3_K_M", "IQ4_NL"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[96];
        snprintf(p, sizeof p, "testdata/llamacpp/rand-llama-256-%s.gguf", files[i]);
        check_model(test_asset(p), QE_NUMERICS_INT8);
    }
    forced = true;
    check_model(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"), QE_NUMERICS_INT8);
    forced = false;
}

/* int8 numerics stay close to exact: the RMS of (int8 - exact) logits,
 * relative to their spread, is of the size llamacpp numerics give (the
 * same activation rounding to 8 bits per 32, validated against llama.cpp),
 * and the greedy token agrees on every row but at most one. */
static double logit_rms(const float *a, const float *b, int n, int V)
{
    double worst = 0;
    for (int t = 0; t < n; t++) {
        double mean = 0, var = 0, d2 = 0;
        for (int v = 0; v < V; v++)
            mean += a[(size_t)t * V + v] / V;
        for (int v = 0; v < V; v++) {
            const double e = a[(size_t)t * V + v], q = b[(size_t)t * V + v];
            var += (e - mean) * (e - mean) / V;
            d2 += (e - q) * (e - q) / V;
        }
        worst = sqrt(d2 / var) > worst ? sqrt(d2 / var) : worst;
    }
    return worst;
}

TEST(int8_close_to_exact)
{
    static const char *const files[] = {"Q8_0", "Q4_K_M", "Q2_K"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char p[96];
        snprintf(p, sizeof p, "testdata/llamacpp/rand-llama-256-%s.gguf", files[f]);
        qe_err err = {0};
        qe_model *m = qe_model_load(test_asset(p), NULL, &err);
        REQUIRE(m, "%s", err.msg);
        const int V = m->cfg.n_vocab, n = prompt_len[1];
        static const int modes[3] = {QE_NUMERICS_EXACT, QE_NUMERICS_INT8, QE_NUMERICS_LLAMACPP};
        float *lg[3];
        for (int k = 0; k < 3; k++) {
            qe_infer_opts o = {.n_ctx = 64, .n_threads = 2, .numerics = modes[k]};
            qe_infer *inf = qe_infer_new(m, &o, &err);
            REQUIRE(inf, "%s", err.msg);
            lg[k] = malloc((size_t)n * V * sizeof(float));
            REQUIRE(lg[k] && qe_infer_eval(inf, prompt_tok[1], n, 0, lg[k], &err) == 0, "%s",
                    err.msg);
            qe_infer_free(inf);
        }
        const double r8 = logit_rms(lg[0], lg[1], n, V), rl = logit_rms(lg[0], lg[2], n, V);
        int agree = 0;
        for (int t = 0; t < n; t++)
            agree += argmax(lg[0] + (size_t)t * V, V) == argmax(lg[1] + (size_t)t * V, V);
        printf("  %s, %d rows: worst RMS (int8 - exact) %.3g x the logits' std (llamacpp: %.3g);"
               " greedy token agrees on %d\n", files[f], n, r8, rl, agree);
        CHECKF(r8 > 0 && r8 < 2.0 * rl, "%s: int8 %.3g, llamacpp %.3g", files[f], r8, rl);
        CHECK(agree >= n - 1);
        for (int k = 0; k < 3; k++)
            free(lg[k]);
        qe_model_free(m);
    }
}

static const char *const arch_bases[] = {"rand-qwen3", "rand-qwen3moe", "rand-gemma3",
                                         "rand-gemma2", "rand-phi3", "rand-mixtral",
                                         "rand-qwen2moe"};

TEST(every_architecture_batches_bit_identical)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "python3 '%s' --specs '%s' --tokenizer '%s' --out %s",
                     test_asset("testdata/llamacpp-arch/gen_arch_models.py"),
                     test_asset("testdata/llamacpp-arch/arch-models.json"),
                     test_asset("models/stories260K/stories260K.gguf"), GEN_DIR);
    int missing = 0;
    for (size_t i = 0; i < sizeof arch_bases / sizeof arch_bases[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s-F32.gguf", GEN_DIR, arch_bases[i]);
        struct stat st;
        if (stat(p, &st) != 0) {
            n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", arch_bases[i]);
            missing++;
        }
    }
    if (missing) {
        mkdir("build", 0755);
        mkdir(GEN_DIR, 0755);
        strncat(cmd, " >/dev/null 2>&1", sizeof cmd - strlen(cmd) - 1);
        if (system(cmd) != 0) {
            printf("  skipped: the random architecture bases could not be generated (needs "
                   "python3 with numpy): %s\n", cmd);
            return;
        }
    }
    for (size_t i = 0; i < sizeof arch_bases / sizeof arch_bases[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s-F32.gguf", GEN_DIR, arch_bases[i]);
        check_model(p, QE_NUMERICS_EXACT);
        if (strstr(arch_bases[i], "moe")) { /* experts: per-group split of the kernels */
            forced = true;
            check_model(p, QE_NUMERICS_EXACT);
            forced = false;
        }
    }
    char p[256];
    snprintf(p, sizeof p, "%s/rand-gemma2-F32.gguf", GEN_DIR);
    check_model(p, QE_NUMERICS_LLAMACPP);
}

TEST(bad_batches_refused)
{
    qe_err err = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &err);
    if (!m) {
        printf("  skipped: %s\n", err.msg);
        return;
    }
    qe_infer_opts o = {.n_ctx = 16, .n_seq = 2, .n_batch = 16};
    qe_infer *inf = qe_infer_new(m, &o, &err);
    REQUIRE(inf, "%s", err.msg);
    const int32_t t[20] = {1, 2, 3};
    float *lg = malloc((size_t)2 * qe_infer_n_vocab(inf) * sizeof(float));
    qe_seq_run r[2] = {{.seq = 0, .tokens = t, .n = 3, .logits_from = 2},
                       {.seq = 0, .tokens = t, .n = 1, .logits_from = 0}};
    CHECK(qe_infer_batch(inf, r, 2, lg, &err) == QE_EINVAL && strstr(err.msg, "both extend"));
    r[1].seq = 2;
    CHECK(qe_infer_batch(inf, r, 2, lg, &err) == QE_EINVAL && strstr(err.msg, "sequence 2"));
    r[1].seq = 1;
    r[1].n = 17;
    CHECK(qe_infer_batch(inf, r, 2, lg, &err) == QE_EBOUNDS);
    CHECK(qe_infer_seq_n_past(inf, 0) == 0 && qe_infer_seq_n_past(inf, 1) == 0);
    r[1].n = 1;
    CHECK(qe_infer_batch(inf, r, 2, lg, &err) == 0);
    CHECK(qe_infer_seq_n_past(inf, 0) == 3 && qe_infer_seq_n_past(inf, 1) == 1);
    CHECK(qe_infer_seq_copy(inf, 1, 0, 4, &err) == QE_EINVAL);
    CHECK(qe_infer_seq_copy(inf, 5, 0, 1, &err) == QE_EINVAL);
    free(lg);
    qe_infer_free(inf);
    /* a KV cache beyond the machine's memory: a clear error, not a crash */
    qe_infer_opts big = {.n_ctx = 1 << 20, .n_seq = 1 << 10};
    qe_infer *no = qe_infer_new(m, &big, &err);
    CHECKF(!no && strstr(err.msg, "MiB") && strstr(err.msg, "1024 sequences"), "%s", err.msg);
    qe_infer_free(no);
    qe_model_free(m);
}

int main(void)
{
    RUN(llama_batches_bit_identical);
    RUN(int8_batches_bit_identical);
    RUN(int8_close_to_exact);
    RUN(every_architecture_batches_bit_identical);
    RUN(bad_batches_refused);
    return test_finish();
}
