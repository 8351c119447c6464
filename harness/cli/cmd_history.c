/*
 * cmd_history.c: `qeval history --model M --variant V --metric X`: one
 * line per run, oldest first (reports/compare.c: qe_history_print).
 */
#include <stdio.h>

#include "../../reports/report.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval history [--db results.db] --model M --variant V --metric X [--task T]\n"
    "\n"
    "Trend of one metric over the runs in the database, oldest first.\n"
    "  --model M    model name or sha256 prefix (>= 6 hex)\n"
    "  --variant V  e.g. Q4_K_M\n"
    "  --metric X   e.g. kld_mean, ppl, top1, kld_p99, acc, exact_match\n"
    "  --task T     task name (default: the first task with that metric in each run)\n";

int qe_cmd_history(int argc, char **argv)
{
    const char *db = "results.db", *model = NULL, *variant = NULL, *metric = NULL, *task = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL)))
            db = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--model", NULL)))
            model = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--variant", NULL)))
            variant = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--metric", NULL)))
            metric = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--task", NULL)))
            task = v;
        else if (i > argc)
            return QE_EXIT_USAGE;
        else
            return qe_usage_error("history", "unexpected argument '%s'", argv[i]);
        if (i > argc)
            return QE_EXIT_USAGE;
    }
    if (!model || !variant || !metric)
        return qe_usage_error("history", "--model, --variant and --metric are required");
    qe_err err = {0};
    if (qe_report_db_exists(db, &err))
        return qe_report_error("history", &err);
    qe_store *s = qe_store_open(db, &err);
    if (!s)
        return qe_report_error("history", &err);
    int n = 0;
    int rc = qe_history_print(s, model, variant, metric, task, stdout, &n, &err);
    qe_store_close(s);
    if (rc)
        return qe_report_error("history", &err);
    if (n == 0)
        fprintf(stderr, "qeval history: no results for model '%s', variant '%s', metric '%s'\n",
                model, variant, metric);
    return QE_EXIT_OK;
}
