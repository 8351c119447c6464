/*
 * cmd_generate.c: `qeval generate`: greedy decoding, a sanity check of a
 * model or quantized file.  stdout: prompt + generated text; stderr: speed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"
#include "../model/model.h"
#include "../model/tokenizer.h"
#include "cli.h"

static const char *USAGE =
    "usage: qeval generate MODEL --prompt TEXT [-n N] [--ctx N] [--threads N]\n"
    "                      [--numerics exact|llamacpp|int8] [--ignore-eos] [--parallel B]\n"
    "\n"
    "Greedy (argmax) generation: the prompt (with BOS if the vocab adds it) is run as one\n"
    "batch, then one token at a time until N tokens or an end-of-generation token.\n"
    "\n"
    "options:\n"
    "  --prompt TEXT   prompt text\n"
    "  -n N            tokens to generate (default 32)\n"
    "  --ctx N         KV cache size (default: prompt + N)\n"
    "  --threads N     threads (default: all cores)\n"
    "  --numerics M    exact (default: f32 activations and KV cache), llamacpp\n"
    "                  (llama.cpp's CPU arithmetic: quantized activations, f16 KV cache)\n"
    "                  or int8 (activations rounded to 8 bits per 32, integer weight dots\n"
    "                  on AVX512-VNNI; f32 KV cache; the fast mode for --parallel, slower\n"
    "                  than exact for a single stream)\n"
    "  --ignore-eos    do not stop at end-of-generation tokens (speed measurements:\n"
    "                  always N tokens, like llama-bench)\n"
    "  --parallel B    decode B copies of the prompt together (1 .. 256, default 1;\n"
    "                  exact or int8 numerics): the aggregate speed of batched generation,\n"
    "                  as eval's generation tasks run it; prints the first copy\n"
    "  -h, --help      this help\n"
    "\n"
    "stdout: the prompt and the generated text.  stderr: prompt (prefill) and decode\n"
    "speed, apart.\n";

/*
 * B = qe_infer_n_seq copies of the prompt decoded together, the way eval's
 * generation tasks run (harness/eval/lm.c): the prompt once in slot 0,
 * copied into the other slots, then one token per sequence per call with
 * the prefill kernels.  The copies stay identical (a sequence's logits do
 * not depend on its companions), so the first one's tokens are returned;
 * every copy runs n_max steps (it stops early only for all of them).
 */
static int generate_parallel(qe_infer *inf, const qe_model *m, const int32_t *ids, int n_ids,
                             int n_max, bool ignore_eos, int32_t **out, int *n_out,
                             double *prompt_s, qe_err *err)
{
    const int B = qe_infer_n_seq(inf), n_vocab = qe_infer_n_vocab(inf);
    *out = NULL;
    *n_out = 0;
    if (n_max > qe_infer_n_ctx(inf) - n_ids + 1)
        n_max = qe_infer_n_ctx(inf) - n_ids + 1;
    float *logits = malloc((size_t)B * n_vocab * sizeof(float));
    int32_t *gen = malloc((size_t)(n_max > 0 ? n_max : 1) * sizeof(int32_t));
    int32_t *last = malloc((size_t)B * sizeof(int32_t));
    qe_seq_run *runs = malloc((size_t)B * sizeof *runs);
    int rc = 0, n = 0;
    if (!logits || !gen || !last || !runs) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto done;
    }
    const double t0 = qe_now();
    qe_seq_run pr = {.seq = 0, .tokens = ids, .n = n_ids, .logits_from = n_ids - 1,
                     .prefill_kernels = true};
    if ((rc = qe_infer_batch(inf, &pr, 1, logits, err)))
        goto done;
    for (int s = 1; s < B; s++)
        if ((rc = qe_infer_seq_copy(inf, s, 0, n_ids, err)))
            goto done;
    *prompt_s = qe_now() - t0;
    for (int s = 1; s < B; s++)
        memcpy(logits + (size_t)s * n_vocab, logits, (size_t)n_vocab * sizeof(float));
    while (n < n_max) {
        for (int s = 0; s < B; s++)
            last[s] = qe_infer_argmax(logits + (size_t)s * n_vocab, n_vocab);
        if (!ignore_eos && m->tok && qe_tokenizer_is_eog(m->tok, last[0]))
            break;
        gen[n++] = last[0];
        if (n == n_max)
            break;
        for (int s = 0; s < B; s++)
            runs[s] = (qe_seq_run){.seq = s, .tokens = &last[s], .n = 1, .logits_from = 0,
                                   .prefill_kernels = true};
        if ((rc = qe_infer_batch(inf, runs, B, logits, err)))
            goto done;
    }
done:
    free(logits);
    free(last);
    free(runs);
    if (rc) {
        free(gen);
        return rc;
    }
    *out = gen;
    *n_out = n;
    return 0;
}

#define OPT(name, alias) ((v = qe_arg_value(argc, argv, &i, name, alias)) || i > argc)

int qe_cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL;
    long long n_gen = 32, n_ctx = 0, n_threads = 0;
    int numerics = QE_NUMERICS_EXACT;
    bool ignore_eos = false;
    long long parallel = 1;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if (OPT("--prompt", "-p")) {
            if (i > argc)
                return QE_EXIT_USAGE;
            prompt = v;
        } else if (OPT("-n", "--n-predict")) {
            if (i > argc || !qe_arg_int("-n", v, 0, 1 << 20, &n_gen))
                return QE_EXIT_USAGE;
        } else if (OPT("--ctx", "-c")) {
            if (i > argc || !qe_arg_int("--ctx", v, 1, 1 << 20, &n_ctx))
                return QE_EXIT_USAGE;
        } else if (OPT("--threads", "-t")) {
            if (i > argc || !qe_arg_int("--threads", v, 1, 1024, &n_threads))
                return QE_EXIT_USAGE;
        } else if (OPT("--numerics", NULL)) {
            if (i > argc || !qe_arg_numerics("generate", v, &numerics))
                return QE_EXIT_USAGE;
        } else if (OPT("--parallel", NULL)) {
            if (i > argc || !qe_arg_int("--parallel", v, 1, 256, &parallel))
                return QE_EXIT_USAGE;
        } else if (strcmp(argv[i], "--ignore-eos") == 0) {
            ignore_eos = true;
        } else if (argv[i][0] == '-') {
            return qe_usage_error("generate", "unknown option '%s'", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return qe_usage_error("generate", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model_path)
        return qe_usage_error("generate", "missing MODEL");
    if (!prompt)
        return qe_usage_error("generate", "missing --prompt TEXT");
    if (parallel > 1 && numerics == QE_NUMERICS_LLAMACPP)
        return qe_usage_error("generate", "--parallel runs exact or int8 numerics only");

    qe_err err = {0};
    int status = QE_EXIT_OK;
    qe_infer *inf = NULL;
    int32_t *ids = NULL, *gen = NULL, *all = NULL;
    char *text = NULL;
    size_t n_ids = 0;
    int n_out = 0;
    qe_model *m = qe_model_load(model_path, NULL, &err);
    if (!m)
        goto fail;
    if (!m->tok) {
        qe_err_set(&err, QE_ENOTFOUND, "%s: the model has no tokenizer", model_path);
        goto fail;
    }
    if (qe_tokenize(m->tok, prompt, strlen(prompt), qe_tokenizer_add_bos(m->tok), false, &ids,
                    &n_ids, &err))
        goto fail;
    if (n_ids == 0) {
        qe_err_set(&err, QE_EINVAL, "--prompt: tokenizes to nothing");
        goto fail;
    }
    qe_infer_opts io = {.n_ctx = n_ctx > 0 ? (int)n_ctx : (int)(n_ids + (size_t)n_gen),
                        .n_threads = (int)n_threads, .numerics = numerics,
                        .n_seq = (int)parallel};
    if (!(inf = qe_infer_new(m, &io, &err)))
        goto fail;
    double t0 = qe_now(), t_prompt = 0;
    if (parallel > 1
            ? generate_parallel(inf, m, ids, (int)n_ids, (int)n_gen, ignore_eos, &gen, &n_out,
                                &t_prompt, &err)
            : qe_infer_generate_greedy_timed(inf, ids, (int)n_ids, (int)n_gen, ignore_eos, &gen,
                                             &n_out, &t_prompt, &err))
        goto fail;
    double dt = qe_now() - t0, t_dec = dt - t_prompt;
    all = malloc((n_ids + (size_t)n_out) * sizeof(int32_t));
    if (!all) {
        qe_err_set(&err, QE_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(all, ids, n_ids * sizeof(int32_t));
    memcpy(all + n_ids, gen, (size_t)n_out * sizeof(int32_t));
    if (qe_detokenize(m->tok, all, n_ids + (size_t)n_out, false, &text, &err))
        goto fail;
    printf("%s\n", text);
    /* the first generated token comes from the prompt's logits: decode ran n_out - 1 steps */
    const int n_steps = n_out > 1 ? n_out - 1 : 0;
    if (parallel > 1)
        fprintf(stderr, "generate: prompt %zu tokens in %.3f s; decode %d steps x %lld "
                "sequences in %.3f s (%.2f tokens/s aggregate, %.2f per sequence); %s "
                "numerics, %d threads\n", n_ids, t_prompt, n_steps, parallel, t_dec,
                t_dec > 0 ? (double)n_steps * (double)parallel / t_dec : 0.0,
                t_dec > 0 ? n_steps / t_dec : 0.0, qe_numerics_name(numerics),
                qe_infer_n_threads(inf));
    else
        fprintf(stderr, "generate: prompt %zu tokens in %.3f s (%.1f tokens/s); decode %d steps "
                "in %.3f s (%.2f tokens/s); %s numerics, %d threads\n", n_ids, t_prompt,
                t_prompt > 0 ? (double)n_ids / t_prompt : 0.0, n_steps, t_dec,
                t_dec > 0 ? n_steps / t_dec : 0.0,
                qe_numerics_name(numerics), qe_infer_n_threads(inf));
    goto done;
fail:
    status = qe_report_error("generate", &err);
done:
    free(text);
    free(all);
    free(gen);
    free(ids);
    qe_infer_free(inf);
    qe_model_free(m);
    return status;
}
