/*
 * cmd_imatrix.c: `qeval imatrix`: collect an importance matrix over
 * calibration text the way llama-imatrix b4747 does (chunks of n_ctx, BOS
 * first, blk.* weights, batches >= 16 tokens) and write it as .dat or GGUF.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/imatrix_io.h"
#include "../model/model.h"
#include "../model/quantize_model.h"
#include "../model/tokenizer.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval imatrix MODEL --text FILE [--ctx 512] [--chunks N] [--threads N]\n"
    "                       [--format dat|gguf] -o OUT\n"
    "\n"
    "Run MODEL over FILE in chunks of --ctx tokens (BOS first, like llama-imatrix) and\n"
    "accumulate mean x^2 per input column of every blk.* weight.\n"
    "\n"
    "  --text FILE      calibration text (UTF-8)\n"
    "  --ctx N          tokens per chunk (default 512)\n"
    "  --chunks N       use at most N chunks (default: all)\n"
    "  --threads N      threads (default: all)\n"
    "  --format F       dat (llama.cpp b4747 legacy, default) or gguf (upstream format)\n"
    "  -o, --output F   output file\n";

int qe_cmd_imatrix(int argc, char **argv)
{
    const char *cmd = "imatrix";
    const char *model_path = NULL, *text_path = NULL, *out_path = NULL, *format = "dat";
    long long n_ctx = 512, n_chunks = 0, n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--text", "-f"))) {
            text_path = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--output", "-o"))) {
            out_path = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--format", NULL))) {
            format = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--ctx", "-c"))) {
            if (!qe_arg_int("--ctx", v, 16, 1 << 20, &n_ctx))
                return qe_usage_error(cmd, "bad --ctx");
        } else if ((v = qe_arg_value(argc, argv, &i, "--chunks", NULL))) {
            if (!qe_arg_int("--chunks", v, 1, 1 << 30, &n_chunks))
                return qe_usage_error(cmd, "bad --chunks");
        } else if ((v = qe_arg_value(argc, argv, &i, "--threads", NULL))) {
            if (!qe_arg_int("--threads", v, 1, 1024, &n_threads))
                return qe_usage_error(cmd, "bad --threads");
        } else if (i >= argc) {
            return QE_EXIT_USAGE;
        } else if (argv[i][0] == '-') {
            return qe_usage_error(cmd, "unknown option '%s'", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return qe_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model_path)
        return qe_usage_error(cmd, "missing MODEL");
    if (!text_path)
        return qe_usage_error(cmd, "missing --text FILE");
    if (!out_path)
        return qe_usage_error(cmd, "missing -o OUT");
    bool gguf = strcmp(format, "gguf") == 0;
    if (!gguf && strcmp(format, "dat") != 0)
        return qe_usage_error(cmd, "--format: expected dat or gguf, got '%s'", format);

    int rc = QE_EXIT_OK;
    qe_err err = {0};
    qe_model *m = NULL;
    qe_imatrix *im = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_text = 0, n_ids = 0;
    if (qe_read_file(text_path, &text, &n_text, &err))
        goto bad;
    if (!(m = qe_model_load(model_path, NULL, &err)))
        goto bad;
    if (!m->tok) {
        qe_err_set(&err, QE_EUNSUPPORTED, "%s: model has no tokenizer", model_path);
        goto bad;
    }
    double t0 = qe_now();
    if (qe_tokenize(m->tok, text, n_text, true, false, &ids, &n_ids, &err))
        goto bad;
    fprintf(stderr, "qeval imatrix: %zu tokens from %s, %zu chunks of %lld\n", n_ids, text_path,
            n_ids / (size_t)n_ctx, n_ctx);
    qe_imatrix_collect_opts co = {(int)n_ctx, (int)n_chunks, (int)n_threads, text_path, true};
    double ppl = 0;
    if (!(im = qe_imatrix_collect(m, ids, n_ids, &co, &ppl, &err)))
        goto bad;
    if ((gguf ? qe_imatrix_write_gguf(im, out_path, &err) : qe_imatrix_write_dat(im, out_path, &err))) {
        rc = qe_report_error(cmd, &err);
        goto out;
    }
    printf("model:    %s\n", model_path);
    printf("dataset:  %s (%zu tokens)\n", text_path, n_ids);
    printf("chunks:   %d x %lld tokens\n", im->chunk_count, n_ctx);
    printf("entries:  %d weights\n", im->n_entries);
    printf("ppl:      %.4f (second half of each chunk, as llama-imatrix prints it)\n", ppl);
    printf("time:     %.2f s\n", qe_now() - t0);
    printf("wrote:    %s (%s)\n", out_path, gguf ? "gguf" : "dat");
    goto out;
bad:
    rc = qe_report_error(cmd, &err);
out:
    free(text);
    free(ids);
    qe_imatrix_free(im);
    qe_model_free(m);
    return rc;
}
