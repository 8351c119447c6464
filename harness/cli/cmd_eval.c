/*
 * cmd_eval.c: `qeval eval MODEL (--tasks a,b | --suite S) [--limit N]
 * [--reference REF] [--threads N] [--ctx N] [--verbose]`.  Thin printing
 * over harness/eval: each task runs on MODEL (and on REF when given, on
 * the same items; with --chat through MODEL's chat template), then one row per metric: value +- stderr, n, and the
 * paired delta vs the reference with its p-value.  BOS handling of the
 * two models is compared on every task's first prompt; a mismatch is an
 * error (the numbers would not be comparable).
 *
 * With --db, MODEL is an artifact (a GGUF made elsewhere, the file being
 * shipped) and is stored as a variant of REF's run in SQLite through the
 * run engine (harness/store/runner.h): perplexity/KLD on the text, plus the
 * given tasks or suite; the stored run is then printed as a table.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../chat/chat.h"
#include "../eval/lm.h"
#include "../eval/stats.h"
#include "../eval/task.h"
#include "../infer/infer.h"
#include "../model/model.h"
#include "../store/runner.h"
#include "../store/store.h"
#include "../../reports/report.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval eval MODEL (--tasks a,b | --suite S) [--limit N] [--reference REF]\n"
    "                  [--threads N] [--ctx N] [--parallel B] [--numerics exact|int8]\n"
    "                  [--verbose]\n"
    "                  [--chat [--system TEXT] [--chat-template FILE] [--template-name N]\n"
    "                   [--template-var K=V]...]\n"
    "       qeval eval FILE.gguf --reference REF --db results.db [--tasks a,b | --suite S]\n"
    "                  [--limit N] [--text FILE] [--threads N] [--parallel B]\n"
    "  MODEL, REF   GGUF, safetensors dir or llama2.c .bin\n"
    "  --tasks      comma-separated task names (see `qeval tasks`)\n"
    "  --suite      a suite name (see `qeval suites`); its per-task limits apply\n"
    "  --limit N    at most N items per task (perplexity: N windows); overrides the suite's\n"
    "  --reference  also run REF on the same items: delta and paired p-value per metric\n"
    "               (McNemar exact for accuracies, paired bootstrap otherwise); multiple\n"
    "               choice adds ll_margin: the gold answer's loglik lead over the best\n"
    "               wrong answer, a continuous paired statistic\n"
    "  --ctx N      context window (default 512)    --threads N  OpenMP threads\n"
    "  --parallel B generate/code_exec/exact_output: B sequences in flight (1 .. 256;\n"
    "               default 16, fewer when their KV caches would exceed 1/4 of the memory);\n"
    "               the answers do not depend on B\n"
    "  --numerics M exact (default: f32 activations, the arithmetic stored results use) or\n"
    "               int8 (activations rounded to 8 bits per 32, integer weight dots on\n"
    "               AVX512-VNNI: batched generation about 1.5x faster; every forward\n"
    "               pass of MODEL and REF); not with --db\n"
    "  --verbose    log the first 16 token ids of every prompt to stderr (--chat: 64)\n"
    "  --chat       render every prompt through MODEL's chat template (GGUF\n"
    "               tokenizer.chat_template, tokenizer_config.json): [system], few-shot\n"
    "               examples as user/assistant turns, the prompt as the last user turn,\n"
    "               add_generation_prompt; special tokens parsed, BOS never doubled;\n"
    "               choices scored as the start of the assistant turn\n"
    "  --system T   with --chat: a system message\n"
    "  --chat-template F  with --chat: the template in file F instead of MODEL's\n"
    "  --template-name N  with --chat: a named template of MODEL\n"
    "  --template-var K=V with --chat: template variable (JSON value or string), e.g.\n"
    "               enable_thinking=false; repeatable\n"
    "  --db F       store FILE.gguf as a variant named <file type>@<sha256 prefix> of REF's run\n"
    "               (with --chat: FILE.gguf's template, part of the run key)\n"
    "               in the SQLite database F (resumable), then print the run's table\n"
    "  --text FILE  with --db: perplexity/KLD text (default: wikitext-2, or TinyStories for\n"
    "               models trained on <= 512 positions)\n"
    "Results on stdout, progress on stderr.  Exit 0 ok, 2 usage or input error.\n";

typedef struct ev_side {
    qe_model *m;
    qe_lm lm;
    bool lm_ok;
} ev_side;

static int open_side(ev_side *s, const char *path, int ctx, int threads, int parallel,
                     int numerics, qe_err *err)
{
    memset(s, 0, sizeof *s);
    s->m = qe_model_load(path, NULL, err);
    if (!s->m)
        return err->code ? err->code : QE_EINVAL;
    int rc = qe_lm_infer_init(&s->lm, s->m, ctx, threads, err);
    s->lm_ok = rc == 0;
    if (rc == 0)
        rc = qe_lm_set_parallel(&s->lm, parallel > 0 ? parallel
                                                     : qe_lm_default_parallel(s->m, s->lm.n_ctx),
                                err);
    if (rc == 0)
        rc = qe_lm_set_numerics(&s->lm, numerics, err);
    return rc;
}

static void close_side(ev_side *s)
{
    if (s->lm_ok)
        qe_lm_free(&s->lm);
    qe_model_free(s->m);
}

/* `qeval eval FILE.gguf --reference REF --db F`: store the artifact. */
static int eval_into_db(const char *gguf, const char *ref, const char *db, const char *tasks,
                        const char *suite, const char *text, long long limit, int threads,
                        const qe_chat_template *ct, const char *system, const cJSON *vars,
                        int parallel)
{
    if (!ref)
        return qe_usage_error("eval", "--db needs --reference MODEL (the full-precision model)");
    if (tasks && suite)
        return qe_usage_error("eval", "give at most one of --tasks or --suite");
    qe_run_opts o;
    qe_run_opts_init(&o);
    o.tasks = tasks;
    o.suite = suite;
    o.text_path = text;
    o.limit = limit;
    o.threads = threads;
    o.chat = ct;
    o.chat_system = system;
    o.chat_vars = vars;
    o.parallel = parallel;
    qe_err err = {0};
    int64_t run_id = 0;
    if (qe_store_eval_artifact(gguf, ref, db, &o, &run_id, &err) != 0)
        return qe_report_error("eval", &err);
    qe_store *s = qe_store_open(db, &err);
    if (!s)
        return qe_report_error("eval", &err);
    /* the run's summary, as `qeval run` prints it (`qeval report` adds the per-task table) */
    qe_render_opts ro = {.format = "table", .adjust = QE_ADJUST_HOLM, .per_task = false};
    int rc = qe_report_render_ex(s, run_id, &ro, stdout, &err);
    qe_store_close(s);
    return rc ? qe_report_error("eval", &err) : QE_EXIT_OK;
}

/* Multiple choice with --reference: the paired gold-answer margin (loglik
 * of the gold answer minus the best wrong one), a continuous statistic
 * that sees a shift long before acc flips (paired bootstrap, 2000
 * resamples, seed 42, as qeval compare). */
static void print_margin_row(const qe_task *t, const qe_task_result *ref,
                             const qe_task_result *cand)
{
    if (t->output_type != QE_OUT_MULTIPLE_CHOICE || ref->n_items != cand->n_items ||
        !cand->n_items)
        return;
    size_t n = cand->n_items, k = 0;
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; a && b && i < n; i++) {
        const qe_item *x = &ref->items[i], *y = &cand->items[i];
        if (x->doc_index == y->doc_index && isfinite(x->ll_margin) && isfinite(y->ll_margin))
            a[k] = x->ll_margin, b[k] = y->ll_margin, k++;
    }
    qe_paired pr;
    double m, se;
    if (k && qe_stats_paired_bootstrap(a, b, k, 2000, 42, &pr, NULL) == 0) {
        qe_stats_mean_se(b, k, &m, &se);
        char dl[32], pv[32];
        snprintf(dl, sizeof dl, "%+.4f", pr.delta);
        snprintf(pv, sizeof pv, "%.3g", pr.p);
        printf("%-20s %-22s %10.4f %9.4f %6zu %10s %8s %8s\n", t->name, "ll_margin", m, se, k, dl,
               pv, "");
    }
    free(a);
    free(b);
}

static int eval_main(int argc, char **argv, cJSON *chat_vars)
{
    const char *model = NULL, *ref = NULL, *tasks = NULL, *suite = NULL, *db = NULL, *text = NULL;
    long long limit = 0, ctx = 512, threads = 0, parallel = 0;
    int numerics = QE_NUMERICS_EXACT;
    bool verbose = false, chat = false;
    const char *system = NULL, *chat_file = NULL, *chat_name = NULL;
    qe_err verr = {0};
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--tasks", NULL))) {
            tasks = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--suite", NULL))) {
            suite = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--reference", NULL))) {
            ref = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL))) {
            db = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--text", NULL))) {
            text = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--system", NULL))) {
            system = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--chat-template", NULL))) {
            chat_file = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--template-name", NULL))) {
            chat_name = v;
        } else if ((v = qe_arg_value(argc, argv, &i, "--template-var", NULL))) {
            if (qe_chat_set_var(chat_vars, v, &verr))
                return qe_usage_error("eval", "%s", verr.msg);
        } else if ((v = qe_arg_value(argc, argv, &i, "--limit", NULL))) {
            if (!qe_arg_int("--limit", v, 1, 100000000, &limit))
                return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--ctx", NULL))) {
            if (!qe_arg_int("--ctx", v, 16, 1 << 20, &ctx))
                return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--threads", NULL))) {
            if (!qe_arg_int("--threads", v, 0, 1024, &threads))
                return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--parallel", NULL))) {
            if (!qe_arg_int("--parallel", v, 1, QE_LM_MAX_PARALLEL, &parallel))
                return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--numerics", NULL))) {
            if (!qe_arg_numerics("eval", v, &numerics))
                return QE_EXIT_USAGE;
            if (numerics == QE_NUMERICS_LLAMACPP)
                return qe_usage_error("eval", "--numerics llamacpp: ppl and generate only; "
                                              "eval takes exact or int8");
        } else if (i >= argc) {
            return QE_EXIT_USAGE; /* qe_arg_value printed the missing value */
        } else if (qe_arg_is_flag(argv[i], "--verbose")) {
            verbose = true;
        } else if (qe_arg_is_flag(argv[i], "--chat")) {
            chat = true;
        } else if (argv[i][0] == '-') {
            return qe_usage_error("eval", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return qe_usage_error("eval", "unexpected argument '%s'", argv[i]);
        }
    }
    bool chat_opts = system || chat_file || chat_name || cJSON_GetArraySize(chat_vars) > 0;
    if (!model)
        return qe_usage_error("eval", "missing MODEL");
    if (db && numerics != QE_NUMERICS_EXACT)
        return qe_usage_error("eval", "--numerics %s is not stored: --db runs exact numerics",
                              qe_numerics_name(numerics));
    if (db) {
        /* the artifact's own template; its sha256 goes into the run key */
        qe_err cerr = {0};
        qe_chat_template *dct = NULL;
        int drc;
        if (chat_opts && !chat)
            drc = qe_usage_error("eval", "--system, --chat-template, --template-name and "
                                         "--template-var need --chat");
        else if (chat && !(dct = qe_chat_template_load(model, chat_file, chat_name, &cerr)))
            drc = qe_report_error("eval", &cerr);
        else
            drc = eval_into_db(model, ref, db, tasks, suite, text, limit, (int)threads, dct,
                               system, chat_vars, (int)parallel);
        qe_chat_template_free(dct);
        return drc;
    }
    if (text || !tasks == !suite) {
        if (text)
            return qe_usage_error("eval", "--text is only used with --db");
        return qe_usage_error("eval", "give exactly one of --tasks or --suite");
    }

    qe_err err = {0};
    qe_suite *s = NULL;
    qe_chat_template *ct = NULL;
    if (suite) {
        s = qe_suite_load_name(suite, &err);
        if (!s)
            return qe_report_error("eval", &err);
    } else {
        s = calloc(1, sizeof *s);
        char *dup = strdup(tasks);
        int cap = 1;
        for (const char *p = tasks; *p; p++)
            cap += *p == ',';
        s->entries = calloc((size_t)cap, sizeof *s->entries);
        char *save = NULL;
        for (char *tk = strtok_r(dup, ",", &save); tk; tk = strtok_r(NULL, ",", &save))
            qe_strlcpy(s->entries[s->n++].task, tk, sizeof s->entries[0].task);
        free(dup);
    }
    /* load every spec before the (slow) model work */
    qe_task **ts = calloc((size_t)s->n, sizeof *ts);
    int rc = 0;
    for (int k = 0; k < s->n && rc == 0; k++) {
        ts[k] = qe_task_load_name(s->entries[k].task, &err);
        if (!ts[k])
            rc = err.code ? err.code : QE_EINVAL;
    }
    /* --chat, or "chat": true in the suite or a task spec */
    bool need_chat = chat || s->chat;
    for (int k = 0; k < s->n && rc == 0; k++)
        need_chat = need_chat || ts[k]->chat;
    if (rc == 0 && chat_opts && !need_chat)
        rc = qe_err_set(&err, QE_EINVAL, "--system, --chat-template, --template-name and "
                                         "--template-var need --chat");
    if (rc == 0 && need_chat) {
        /* the candidate's template, used for the reference too (same prompts) */
        ct = qe_chat_template_load(model, chat_file, chat_name, &err);
        if (!ct)
            rc = err.code ? err.code : QE_ENOTFOUND;
        else if (verbose)
            fprintf(stderr, "chat template: %s (sha256 %s)\n", ct->origin, ct->sha256);
    }
    ev_side cand = {0}, refs = {0};
    if (rc == 0)
        rc = open_side(&cand, model, (int)ctx, (int)threads, (int)parallel, numerics, &err);
    if (rc == 0 && ref)
        rc = open_side(&refs, ref, (int)ctx, (int)threads, (int)parallel, numerics, &err);
    if (rc == 0)
        printf("%-20s %-22s %10s %9s %6s %10s %8s %8s\n", "task", "metric", "value", "stderr", "n",
               ref ? "delta" : "", ref ? "p" : "", "fail");
    for (int k = 0; k < s->n && rc == 0; k++) {
        qe_eval_opts o = {.limit = limit ? (size_t)limit : s->entries[k].limit,
                          .progress = true, .log = verbose ? stderr : NULL,
                          .log_ids = ct ? 64 : 16, .chat_system = system,
                          .chat_vars = chat_vars};
        if (chat || s->chat || ts[k]->chat)
            o.chat = ct;
        qe_task_result rc_res, rr_res;
        memset(&rr_res, 0, sizeof rr_res);
        rc = qe_eval_task(&cand.lm, ts[k], &o, &rc_res, &err);
        if (rc)
            break;
        if (ref) {
            rc = qe_eval_task(&refs.lm, ts[k], &o, &rr_res, &err);
            if (rc) {
                qe_task_result_free(&rc_res);
                break;
            }
            const qe_item *a = rc_res.n_items ? &rc_res.items[0] : NULL;
            const qe_item *b = rr_res.n_items ? &rr_res.items[0] : NULL;
            bool bos_a = a && a->n_head && a->head_ids[0] == cand.lm.bos;
            bool bos_b = b && b->n_head && b->head_ids[0] == refs.lm.bos;
            if (a && b && bos_a != bos_b) {
                rc = qe_err_set(&err, QE_EFORMAT, "task %s: BOS handling differs: candidate "
                                "prompt starts with %d (bos %d), reference with %d (bos %d)",
                                ts[k]->name, a->head_ids[0], cand.lm.bos, b->head_ids[0],
                                refs.lm.bos);
            }
        }
        if (rc_res.skipped[0])
            printf("%-20s %s\n", ts[k]->name, rc_res.skipped);
        for (int m = 0; rc == 0 && !rc_res.skipped[0] && m < rc_res.n_metrics; m++) {
            const qe_metric_result *mr = &rc_res.metrics[m];
            char dl[32] = "", pv[32] = "", fr[32] = "";
            if (ref && rr_res.n_metrics == rc_res.n_metrics) {
                qe_paired pr;
                qe_err e2 = {0};
                if (qe_task_compare(ts[k], &rr_res, &rc_res, m, &pr, &e2) == 0) {
                    bool ppl = ts[k]->metrics[m].agg != QE_AGG_MEAN;
                    snprintf(dl, sizeof dl, ppl ? "%+.4f*" : "%+.4f",
                             ppl ? pr.delta : mr->value - rr_res.metrics[m].value);
                    snprintf(pv, sizeof pv, "%.3g", pr.p);
                }
            }
            if (!isnan(mr->fail_rate))
                snprintf(fr, sizeof fr, "%.3f", mr->fail_rate);
            char vb[32], sb[32];
            printf("%-20s %-22s %10s %9s %6zu %10s %8s %8s\n", ts[k]->name, mr->name,
                   qe_fmt_compact(mr->value, 4, vb, sizeof vb),
                   qe_fmt_compact(mr->se, 4, sb, sizeof sb), mr->n, dl, pv, fr);
        }
        if (rc == 0 && ref && !rc_res.skipped[0])
            print_margin_row(ts[k], &rr_res, &rc_res);
        if (verbose)
            fprintf(stderr, "%s: %s; %.1f s\n", ts[k]->name, rc_res.protocol, rc_res.wall_s);
        fflush(stdout);
        qe_task_result_free(&rc_res);
        qe_task_result_free(&rr_res);
    }
    if (rc == 0 && ref)
        printf("(* perplexity rows: delta of mean NLL per token per window, nats, paired "
               "bootstrap; ll_margin: mean loglik margin of the gold answer over the best wrong "
               "one, nats, paired bootstrap)\n");
    for (int k = 0; k < s->n; k++)
        qe_task_free(ts[k]);
    free(ts);
    qe_suite_free(s);
    qe_chat_template_free(ct);
    close_side(&cand);
    if (ref)
        close_side(&refs);
    return rc ? qe_report_error("eval", &err) : QE_EXIT_OK;
}

int qe_cmd_eval(int argc, char **argv)
{
    cJSON *chat_vars = cJSON_CreateObject();
    int rc = chat_vars ? eval_main(argc, argv, chat_vars) : QE_EXIT_USAGE;
    cJSON_Delete(chat_vars);
    return rc;
}
