/*
 * cmd_run.c: `qeval run MODEL`: quantize at several bit depths, evaluate
 * every variant (perplexity, KLD vs the reference, task accuracy) into the
 * results database, then print the summary and a recommendation.
 * The engine is harness/store/runner.c; rendering is reports/.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../reports/report.h"
#include "../eval/stats.h"
#include "../chat/chat.h"
#include "../store/runner.h"
#include "../eval/lm.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval run MODEL [options]\n"
    "\n"
    "Quantize MODEL at several bit depths and measure each variant against the\n"
    "model as loaded (the reference): perplexity (llama.cpp protocol), KL divergence\n"
    "and top-1 agreement (lockstep, exact), and task accuracy.  Every per-item\n"
    "result goes into SQLite; re-running the same command resumes a killed run.\n"
    "\n"
    "  --quants LIST        llama.cpp mixes (default " QE_RUN_DEFAULT_QUANTS ")\n"
    "  --suite NAME         task suite: smoke, default, full (datasets/suites)\n"
    "  --tasks a,b          tasks by name (datasets/tasks), added to the suite\n"
    "  --text FILE          perplexity/KLD text (default: wikitext-2 test from the\n"
    "                       assets; tinystories_val for models trained on <= 512 positions)\n"
    "  --ctx N              perplexity chunk length (default min(512, trained context))\n"
    "  --limit N            at most N items per task and N text chunks\n"
    "  --db FILE            results database (default results.db)\n"
    "  --label TEXT         run label (part of the run key: a new label is a new run)\n"
    "  --imatrix FILE       importance matrix for quantization (used for every variant)\n"
    "  --calib FILE         collect an importance matrix from this text first (once, for\n"
    "                       every variant).  When a mix needs one (IQ1_S, IQ1_M, IQ2_XXS,\n"
    "                       IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, Q2_K_S) and neither option is\n"
    "                       given, it is collected from FLORES-200 devtest eng_Latn in the\n"
    "                       assets (not the perplexity text); each variant stores the\n"
    "                       imatrix's data set, chunk count and sha256\n"
    "  --recipe FILE        custom recipe JSON, one more variant (repeatable)\n"
    "  --threads N          threads (default: all)\n"
    "  --parallel B         generation tasks: B sequences in flight (1 .. 256; default 16,\n"
    "                       fewer when their KV caches would exceed 1/4 of the memory)\n"
    "  --shard I/N          run only work units u with u % N == I (merge with qeval merge)\n"
    "  --unit-chunks N      text chunks per work unit (default 4)\n"
    "  --report FILE        also write the HTML report\n"
    "  --memory-budget SIZE recommend the best variant whose tensors fit (e.g. 8GiB)\n"
    "  --time-budget T      fit the run into T (e.g. 1h, 20m): probe per-item costs on\n"
    "                       the reference, set the per-task item limit, print the plan\n"
    "  --chat               tasks through MODEL's chat template (see qeval eval --help);\n"
    "                       the template's sha256 is part of the run key\n"
    "  --system TEXT        with --chat: a system message\n"
    "  --chat-template FILE with --chat: this template instead of MODEL's\n"
    "  --template-name N    with --chat: a named template of MODEL\n"
    "  --template-var K=V   with --chat: a template variable (repeatable)\n"
    "\n"
    "Recommendation: the smallest variant with dPPL <= +3%, mean KLD <= 0.05 and no\n"
    "task family losing > 2 points significantly (p < 0.05); with --memory-budget the\n"
    "lowest-KLD variant that fits.\n";

#define MAX_RECIPES 16

static int run_main(int argc, char **argv, cJSON *chat_vars);

int qe_cmd_run(int argc, char **argv)
{
    cJSON *chat_vars = cJSON_CreateObject();
    int rc = run_main(argc, argv, chat_vars);
    cJSON_Delete(chat_vars);
    return rc;
}

static int run_main(int argc, char **argv, cJSON *chat_vars)
{
    qe_run_opts o;
    qe_run_opts_init(&o);
    const char *recipes[MAX_RECIPES];
    const char *report_path = NULL;
    uint64_t budget = 0;
    double time_budget = 0;
    bool chat = false;
    const char *chat_file = NULL, *chat_name = NULL;
    qe_err verr = {0};
    char args[2048] = "qeval run";
    for (int i = 1; i < argc; i++) {
        size_t l = strlen(args);
        snprintf(args + l, sizeof args - l, " %s", argv[i]);
    }
    o.args = args;
    for (int i = 1; i < argc; i++) {
        const char *v;
        long long x;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--quants", NULL)))
            o.quants = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--suite", NULL)))
            o.suite = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--tasks", NULL)))
            o.tasks = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--text", NULL)))
            o.text_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL)))
            o.db_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--label", NULL)))
            o.label = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--imatrix", NULL)))
            o.imatrix_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--calib", NULL)))
            o.calib_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--report", NULL)))
            report_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--system", NULL)))
            o.chat_system = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--chat-template", NULL)))
            chat_file = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--template-name", NULL)))
            chat_name = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--template-var", NULL))) {
            if (qe_chat_set_var(chat_vars, v, &verr))
                return qe_usage_error("run", "%s", verr.msg);
        } else if (qe_arg_is_flag(argv[i], "--chat"))
            chat = true;
        else if ((v = qe_arg_value(argc, argv, &i, "--recipe", NULL))) {
            if (o.n_recipes == MAX_RECIPES)
                return qe_usage_error("run", "at most %d --recipe options", MAX_RECIPES);
            recipes[o.n_recipes++] = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--ctx", NULL))) {
            if (!qe_arg_int("--ctx", v, 8, 1 << 20, &x))
                return QE_EXIT_USAGE;
            o.n_ctx = (int)x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--limit", NULL))) {
            if (!qe_arg_int("--limit", v, 1, 1LL << 40, &x))
                return QE_EXIT_USAGE;
            o.limit = x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--threads", NULL))) {
            if (!qe_arg_int("--threads", v, 1, 4096, &x))
                return QE_EXIT_USAGE;
            o.threads = (int)x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--parallel", NULL))) {
            if (!qe_arg_int("--parallel", v, 1, QE_LM_MAX_PARALLEL, &x))
                return QE_EXIT_USAGE;
            o.parallel = (int)x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--unit-chunks", NULL))) {
            if (!qe_arg_int("--unit-chunks", v, 2, 1 << 20, &x))
                return QE_EXIT_USAGE;
            o.unit_chunks = (int)x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--shard", NULL))) {
            int si, sn, used = 0;
            if (sscanf(v, "%d/%d%n", &si, &sn, &used) != 2 || v[used] || sn < 1 || si < 0 ||
                si >= sn)
                return qe_usage_error("run", "--shard: expected I/N with 0 <= I < N, got '%s'",
                                      v);
            o.shard_i = si, o.shard_n = sn;
        } else if ((v = qe_arg_value(argc, argv, &i, "--time-budget", NULL))) {
            if (!qe_arg_duration("--time-budget", v, &time_budget))
                return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--memory-budget", NULL))) {
            if (!qe_arg_bytes("--memory-budget", v, &budget) || budget == 0)
                return QE_EXIT_USAGE;
        } else if (i > argc)
            return QE_EXIT_USAGE;
        else if (argv[i][0] == '-' && argv[i][1])
            return qe_usage_error("run", "unknown option '%s'", argv[i]);
        else if (!o.model_path)
            o.model_path = argv[i];
        else
            return qe_usage_error("run", "unexpected argument '%s' (one MODEL)", argv[i]);
        if (i > argc)
            return QE_EXIT_USAGE;
    }
    if (!o.model_path)
        return qe_usage_error("run", "expected a MODEL (GGUF, safetensors dir or llama2.c .bin)");
    if (o.imatrix_path && o.calib_path)
        return qe_usage_error("run", "give --imatrix or --calib, not both");
    if (!chat && (o.chat_system || chat_file || chat_name || cJSON_GetArraySize(chat_vars) > 0))
        return qe_usage_error("run", "--system, --chat-template, --template-name and "
                                     "--template-var need --chat");
    o.recipes = recipes;
    qe_err err = {0};
    int64_t run_id = -1;
    qe_chat_template *ct = NULL;
    if (chat) {
        ct = qe_chat_template_load(o.model_path, chat_file, chat_name, &err);
        if (!ct)
            return qe_report_error("run", &err);
        o.chat = ct;
        o.chat_vars = chat_vars;
    }
    if (time_budget > 0 && qe_run_plan_budget(&o, time_budget, stdout, &err)) {
        qe_chat_template_free(ct);
        return qe_report_error("run", &err);
    }
    fflush(stdout);
    int xrc = qe_run_execute(&o, &run_id, &err);
    qe_chat_template_free(ct);
    if (xrc)
        return qe_report_error("run", &err);
    qe_store *s = qe_store_open(o.db_path, &err);
    if (!s)
        return qe_report_error("run", &err);
    /* the summary only; `qeval report` adds the per-task table */
    qe_render_opts ro = {.format = "table", .adjust = QE_ADJUST_HOLM, .per_task = false};
    int rc = qe_report_render_ex(s, run_id, &ro, stdout, &err);
    if (!rc && budget) {
        qe_report_data *d;
        if (!(rc = qe_report_load(s, run_id, &d, &err))) {
            qe_tolerance t;
            qe_tolerance_default(&t);
            char why[300];
            int k = qe_report_recommend(d, &t, budget, why, sizeof why);
            printf("for --memory-budget: %s (%s)\n", k >= 0 ? d->variants[k].name : "none", why);
            qe_report_data_free(d);
        }
    }
    if (!rc && o.shard_n > 1)
        printf("shard %d/%d: partial results; join the shard databases with qeval merge\n",
               o.shard_i, o.shard_n);
    if (!rc && report_path) {
        FILE *f = fopen(report_path, "w");
        if (!f)
            rc = qe_err_set(&err, QE_EIO, "%s: cannot open for writing", report_path);
        else {
            rc = qe_report_render(s, run_id, "html", f, &err);
            if (fclose(f) != 0 && !rc)
                rc = qe_err_set(&err, QE_EIO, "%s: write failed", report_path);
            if (!rc)
                fprintf(stderr, "qeval run: wrote %s\n", report_path);
        }
    }
    qe_store_close(s);
    if (rc)
        return qe_report_error("run", &err);
    return QE_EXIT_OK;
}
