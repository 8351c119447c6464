/*
 * cmd_ppl.c: `qeval ppl`: llama.cpp-compatible perplexity, and KL
 * divergence against a reference model (lockstep, exact) or against a
 * llama.cpp --kl-divergence-base file.  Protocols: harness/infer/ppl.h.
 *
 * stdout: "Final estimate: PPL = X +/- U" (and the KLD statistics blocks);
 * stderr: the running "[i]ppl," values, per-chunk KLD lines and progress.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"
#include "../infer/ppl.h"
#include "../model/model.h"
#include "../model/tokenizer.h"
#include "cli.h"

static const char *USAGE =
    "usage: qeval ppl MODEL --text FILE [--ctx 512] [--chunks N] [--threads N]\n"
    "                 [--numerics exact|llamacpp|int8]\n"
    "       qeval ppl CANDIDATE --reference REF --text FILE [--ctx 512] [--chunks N]\n"
    "       qeval ppl CANDIDATE --kld-base FILE.kld [--chunks N]\n"
    "\n"
    "Perplexity with llama-perplexity's protocol: the text is tokenized once (BOS first\n"
    "if the vocab adds it), cut into non-overlapping chunks of --ctx tokens, each chunk's\n"
    "first token replaced by BOS, and the second half of every chunk scored.\n"
    "\n"
    "With --reference, reference and candidate run in lockstep chunk by chunk and the\n"
    "KL divergence KLD(ref || cand) is computed exactly from both f32 log-softmaxes (no\n"
    "logits file).  With --kld-base, the reference is a llama.cpp --kl-divergence-base\n"
    "file (16-bit log-probs, floor 16 nats below the top); tokens and ctx come from it.\n"
    "\n"
    "options:\n"
    "  --text FILE        evaluation text (UTF-8)\n"
    "  --ctx N            chunk length in tokens (default 512)\n"
    "  --chunks N         evaluate at most N chunks (default: all)\n"
    "  --threads N        threads (default: all cores)\n"
    "  --reference MODEL  reference model for KL divergence (lockstep)\n"
    "  --kld-base FILE    llama.cpp --kl-divergence-base file as the reference\n"
    "  --numerics MODE    exact (default): f32 activations and KV cache, bit-identical for\n"
    "                     any thread count; llamacpp: reproduce llama.cpp's CPU backend\n"
    "                     (activations quantized to q8_0/q8_1/q8_K/f16 per weight type,\n"
    "                     integer block dots, f16 KV cache); int8: activations rounded\n"
    "                     to 8 bits per 32 and integer weight dots (AVX512-VNNI), f32\n"
    "                     KV cache; with --reference both models run in that mode\n"
    "  -h, --help         this help\n";

static int tokenize_file(const qe_model *m, const char *path, int32_t **ids, size_t *n_ids,
                         qe_err *err)
{
    char *text = NULL;
    size_t n = 0;
    int rc = qe_read_file(path, &text, &n, err);
    if (rc)
        return rc;
    if (!m->tok) {
        free(text);
        return qe_err_set(err, QE_ENOTFOUND, "%s: the model has no tokenizer", m->path);
    }
    rc = qe_tokenize(m->tok, text, n, qe_tokenizer_add_bos(m->tok), false, ids, n_ids, err);
    free(text);
    return rc;
}

/* True when argv[i] is option name; v = its value.  A missing value has
 * been reported and leaves i > argc (checked once per loop turn). */
#define OPT(name, alias) ((v = qe_arg_value(argc, argv, &i, name, alias)) || i > argc)

int qe_cmd_ppl(int argc, char **argv)
{
    const char *model_path = NULL, *text_path = NULL, *ref_path = NULL, *base_path = NULL;
    long long n_ctx = 512, n_chunks = 0, n_threads = 0;
    int numerics = QE_NUMERICS_EXACT;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if (OPT("--text", NULL)) {
            if (i > argc)
                return QE_EXIT_USAGE;
            text_path = v;
        } else if (OPT("--ctx", "-c")) {
            if (i > argc)
                return QE_EXIT_USAGE;
            if (!qe_arg_int("--ctx", v, 4, 1 << 20, &n_ctx))
                return QE_EXIT_USAGE;
        } else if (OPT("--chunks", NULL)) {
            if (i > argc)
                return QE_EXIT_USAGE;
            if (!qe_arg_int("--chunks", v, 1, 1 << 30, &n_chunks))
                return QE_EXIT_USAGE;
        } else if (OPT("--threads", "-t")) {
            if (i > argc)
                return QE_EXIT_USAGE;
            if (!qe_arg_int("--threads", v, 1, 1024, &n_threads))
                return QE_EXIT_USAGE;
        } else if (OPT("--reference", NULL)) {
            if (i > argc)
                return QE_EXIT_USAGE;
            ref_path = v;
        } else if (OPT("--kld-base", NULL)) {
            if (i > argc)
                return QE_EXIT_USAGE;
            base_path = v;
        } else if (OPT("--numerics", NULL)) {
            if (i > argc || !qe_arg_numerics("ppl", v, &numerics))
                return QE_EXIT_USAGE;
        } else if (argv[i][0] == '-') {
            return qe_usage_error("ppl", "unknown option '%s'", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return qe_usage_error("ppl", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model_path)
        return qe_usage_error("ppl", "missing MODEL");
    if (ref_path && base_path)
        return qe_usage_error("ppl", "--reference and --kld-base exclude each other");
    if (!base_path && !text_path)
        return qe_usage_error("ppl", "missing --text FILE");

    qe_err err = {0};
    int status = QE_EXIT_OK;
    qe_model *m = NULL, *ref = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    qe_kld_base base;
    bool base_open = false;
    qe_ppl_opts o = {.n_ctx = (int)n_ctx, .n_chunks = (int)n_chunks, .n_threads = (int)n_threads,
                     .log = stderr, .progress = false, .numerics = numerics};

    if (!(m = qe_model_load(model_path, NULL, &err)))
        goto fail;
    o.bos = m->tok && qe_tokenizer_add_bos(m->tok) ? qe_tokenizer_bos(m->tok) : -1;

    if (base_path) {
        if (qe_kld_base_open(&base, base_path, &err))
            goto fail;
        base_open = true;
        fprintf(stderr, "kld: %s: n_ctx %d, n_vocab %d, %d chunks\n", base_path, base.n_ctx,
                base.n_vocab, base.n_chunk);
        qe_kld_result r;
        if (qe_kld_run_base(m, &base, &o, &r, &err))
            goto fail;
        fputc('\n', stderr);
        if (r.n < 100)
            fprintf(stderr, "kld: only %zu scored tokens (< 100): no statistics, as llama.cpp\n",
                    r.n);
        else
            qe_kld_stats_print(stdout, &r.stats);
        qe_kld_result_free(&r);
        goto done;
    }

    if (tokenize_file(m, text_path, &ids, &n_ids, &err))
        goto fail;
    fprintf(stderr, "ppl: %s: %zu tokens, n_ctx %lld -> %zu chunks%s\n", text_path, n_ids, n_ctx,
            n_ids / (size_t)n_ctx, n_chunks ? " (capped by --chunks)" : "");
    if (ref_path) {
        if (!(ref = qe_model_load(ref_path, NULL, &err)))
            goto fail;
        qe_kld_result r;
        if (qe_kld_run(ref, m, ids, n_ids, &o, &r, &err))
            goto fail;
        fputc('\n', stderr);
        fprintf(stderr, "kld: %zu tokens in %.2f s (lockstep, %s numerics, f32 logits, double "
                "log-softmax)\n", r.n, r.seconds,
                qe_numerics_name(numerics));
        if (r.n < 100)
            fprintf(stderr, "kld: only %zu scored tokens (< 100): no statistics, as llama.cpp\n",
                    r.n);
        else
            qe_kld_stats_print(stdout, &r.stats);
        qe_kld_result_free(&r);
    } else {
        qe_ppl_result r;
        if (qe_ppl_run(m, ids, n_ids, &o, &r, &err))
            goto fail;
        fprintf(stderr, "ppl: %zu scored tokens in %.2f s (%.1f tokens/s evaluated)\n",
                r.n_scored, r.seconds, (double)r.n_chunks * r.n_ctx / r.seconds);
        fprintf(stderr, "ppl: model file %.1f MiB; core memory (KV cache %d x %d layers, "
                "activations, scratch, logits) %.1f MiB\n", m->file_nbytes / 1048576.0,
                r.n_ctx, m->cfg.n_layer, r.core_nbytes / 1048576.0);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
        qe_ppl_result_free(&r);
    }
    goto done;
fail:
    status = qe_report_error("ppl", &err);
done:
    free(ids);
    if (base_open)
        qe_kld_base_close(&base);
    qe_model_free(ref);
    qe_model_free(m);
    return status;
}
