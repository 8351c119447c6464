/*
 * cmd_quantize.c: `qeval quantize`: quantize a model with a llama.cpp mix
 * or a custom JSON recipe (optionally imatrix-weighted) and write GGUF.
 * Per-tensor progress goes to stderr, the summary to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../quant/quant.h"
#include "../../quant/recipe.h"
#include "../model/imatrix_io.h"
#include "../model/model.h"
#include "../model/quantize_model.h"
#include "../model/recipe_json.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval quantize MODEL --type T [--imatrix F] [--recipe R.json] [--threads N]\n"
    "                        [--pure] [--leave-output] -o OUT.gguf\n"
    "\n"
    "Quantize MODEL (GGUF, safetensors dir, llama2.c .bin) and write OUT.gguf.\n"
    "\n"
    "  --type T         llama.cpp mix, e.g. Q4_K_M, Q8_0, Q2_K (see below)\n"
    "  --imatrix F      importance matrix (.dat or GGUF) from llama-imatrix or qeval imatrix\n"
    "  --recipe R.json  custom rules {\"name\", \"base\", \"rules\": [{\"match\", \"type\"}]};\n"
    "                   --type, if given, replaces the recipe's base mix\n"
    "  --threads N      threads (default: all)\n"
    "  --pure           base type for every tensor (no per-tensor mix rules)\n"
    "  --leave-output   keep output.weight as it is\n"
    "  -o, --output F   output file\n"
    "\n"
    "Per-tensor types follow llama.cpp b4747's llama-quantize.  Where a row length does\n"
    "not fit a type's block, qeval falls back like llama.cpp (q4_K->q5_0, q5_K->q5_1,\n"
    "q6_K->q8_0, q2_K/q3_K/iq*->iq4_nl, else f16); where llama.cpp aborts (legacy types\n"
    "such as Q8_0 on 172-wide rows) qeval uses f16 and lists the tensors.\n";

int qe_cmd_quantize(int argc, char **argv)
{
    const char *cmd = "quantize";
    const char *model_path = NULL, *out_path = NULL, *imat_path = NULL, *recipe_path = NULL;
    const char *type_name = NULL;
    long long n_threads = 0;
    bool pure = false, leave_output = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            printf("%s\nmixes: %s\n", USAGE, qe_ftype_names());
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--type", "-t"))) {
            type_name = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--imatrix", NULL))) {
            imat_path = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--recipe", NULL))) {
            recipe_path = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--output", "-o"))) {
            out_path = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--threads", NULL))) {
            if (!qe_arg_int("--threads", v, 1, 1024, &n_threads))
                return qe_usage_error(cmd, "bad --threads");
        } else if (i >= argc) {
            return QE_EXIT_USAGE; /* qe_arg_value printed the message */
        } else if (qe_arg_is_flag(argv[i], "--pure")) {
            pure = true;
        } else if (qe_arg_is_flag(argv[i], "--leave-output")) {
            leave_output = true;
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
    if (!out_path)
        return qe_usage_error(cmd, "missing -o OUT.gguf");
    if (!type_name && !recipe_path)
        return qe_usage_error(cmd, "missing --type (or --recipe)");
    int ftype = -1;
    if (type_name) {
        ftype = qe_ftype_from_name(type_name);
        if (ftype < 0)
            return qe_usage_error(cmd, "--type: unknown mix '%s' (known: %s)", type_name,
                                  qe_ftype_names());
        if (qe_ftype_get(ftype)->needs_imatrix && !imat_path)
            return qe_usage_error(cmd,
                                  "--type %s needs an importance matrix (--imatrix F); "
                                  "without one the result is garbage (llama.cpp refuses too)",
                                  qe_ftype_name(ftype));
    }

    int rc = QE_EXIT_OK;
    qe_err err = {0};
    qe_model *m = NULL, *q = NULL;
    qe_imatrix *im = NULL;
    qe_recipe *recipe = NULL;
    qe_quant_report rep = {0};
    if (recipe_path && !(recipe = qe_recipe_load(recipe_path, &err)))
        goto bad_input;
    if (imat_path && !(im = qe_imatrix_load(imat_path, &err)))
        goto bad_input;
    qe_load_opts lo = {0};
    if (!(m = qe_model_load(model_path, &lo, &err)))
        goto bad_input;

    qe_quant_opts qo;
    qe_quant_opts_init(&qo);
    qo.ftype = ftype;
    qo.recipe = recipe;
    qo.imatrix = im;
    qo.pure = pure;
    qo.leave_output = leave_output;
    qo.n_threads = (int)n_threads;
    qo.verbose = true;
    fprintf(stderr, "qeval quantize: %s -> %s (%s%s%s)\n", model_path, out_path,
            ftype >= 0 ? qe_ftype_name(ftype) : "recipe base",
            recipe ? ", recipe " : "", recipe ? qe_recipe_name(recipe) : "");
    if (!(q = qe_model_quantize(m, &qo, &rep, &err)))
        goto bad_input;
    qe_gguf_write_info wi = {rep.ftype, im, imat_path};
    if (qe_model_write_gguf(q, m, out_path, &wi, &err)) {
        rc = qe_report_error(cmd, &err);
        goto out;
    }

    printf("model:       %s (%s, %llu parameters)\n", model_path, m->cfg.arch,
           (unsigned long long)rep.n_params);
    printf("mix:         %s%s\n", rep.mix, im ? " + imatrix" : "");
    if (im)
        printf("imatrix:     %s (%d entries, %d chunks, dataset %s; used for %d tensors)\n",
               imat_path, im->n_entries, im->chunk_count,
               im->n_datasets ? im->datasets[im->n_datasets - 1] : "?", rep.n_imatrix_used);
    printf("size:        %.3f MiB -> %.3f MiB of tensors\n", rep.src_nbytes / 1048576.0,
           rep.nbytes / 1048576.0);
    printf("bpw:         %.4f effective bits per weight over all %d tensors\n", rep.bpw,
           rep.n_tensors);
    printf("converted:   %d of %d tensors in %.2f s\n", rep.n_converted, rep.n_tensors,
           rep.seconds);
    printf("fallbacks:   %d as llama.cpp does, %d qeval-only (llama.cpp would abort)\n",
           rep.n_fallback_llama, rep.n_fallback_qeval);
    for (int i = 0; i < rep.n_tensors; i++) {
        const qe_quant_tensor_info *t = &rep.tensors[i];
        if (t->fallback == QE_FALLBACK_NONE)
            continue;
        printf("  %-32s wanted %-7s -> %-7s%s\n", t->name, qe_type_name(t->wanted),
               qe_type_name(t->type), t->fallback == QE_FALLBACK_QEVAL ? "  (qeval fallback)" : "");
    }
    printf("wrote:       %s\n", out_path);
    goto out;

bad_input:
    rc = qe_report_error(cmd, &err);
out:
    qe_quant_report_free(&rep);
    qe_model_free(q);
    qe_model_free(m);
    qe_imatrix_free(im);
    qe_recipe_free(recipe);
    return rc;
}
