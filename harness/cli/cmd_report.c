/*
 * cmd_report.c: `qeval report`: render one run from the results database
 * as a terminal table, Markdown, self-contained HTML, JSON or a model-card
 * block (reports/report.h does the rendering).
 */
#include <stdio.h>
#include <string.h>

#include "../../reports/report.h"
#include "../eval/stats.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval report [--db results.db] [--run ID] [--format table|md|html|json|card] "
    "[-o FILE]\n"
    "                    [--adjust holm|bh|none]\n"
    "\n"
    "Render the results of one run (default: the latest) from the database.\n"
    "  --db F       results database (default results.db)\n"
    "  --run ID     run id, 'latest', a label or a run key prefix\n"
    "  --format F   table (default), md, html (self-contained, inline SVG charts),\n"
    "               json (summary + every result row with provenance), card (Markdown\n"
    "               block for a release)\n"
    "  -o FILE      write to FILE instead of stdout\n"
    "  --adjust M   multiple-comparison control behind the * / ** markers: holm\n"
    "               (family-wise error, default), bh (Benjamini-Hochberg false-discovery\n"
    "               rate) or none\n"
    "Every format shows flips (right->wrong / wrong->right shares against the\n"
    "reference); table, md, html and json add the per-task table with 95% intervals,\n"
    "adjusted p and the minimal detectable effect (MDE) at 80% power.\n";

int qe_cmd_report(int argc, char **argv)
{
    const char *db = "results.db", *run = "latest", *format = "table", *out_path = NULL;
    int adjust = QE_ADJUST_HOLM;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL)))
            db = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--run", NULL)))
            run = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--format", "-f")))
            format = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--output", "-o")))
            out_path = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--adjust", NULL))) {
            if ((adjust = qe_stats_adjust_parse(v)) < 0)
                return qe_usage_error("report", "--adjust: expected holm, bh or none, got '%s'",
                                      v);
        }
        else if (i > argc)
            return QE_EXIT_USAGE;
        else
            return qe_usage_error("report", "unexpected argument '%s'", argv[i]);
        if (i > argc)
            return QE_EXIT_USAGE;
    }
    if (strcmp(format, "table") && strcmp(format, "md") && strcmp(format, "html") &&
        strcmp(format, "json") && strcmp(format, "card"))
        return qe_usage_error("report", "--format: expected table, md, html, json or card, got '%s'",
                              format);
    qe_err err = {0};
    if (qe_report_db_exists(db, &err))
        return qe_report_error("report", &err);
    qe_store *s = qe_store_open(db, &err);
    if (!s)
        return qe_report_error("report", &err);
    int64_t run_id;
    int rc = qe_store_find_run(s, run, &run_id, &err);
    FILE *out = stdout;
    if (!rc && out_path && !(out = fopen(out_path, "w")))
        rc = qe_err_set(&err, QE_EIO, "%s: cannot open for writing", out_path);
    qe_render_opts ro = {.format = format, .adjust = adjust, .per_task = true};
    if (!rc)
        rc = qe_report_render_ex(s, run_id, &ro, out, &err);
    if (out && out != stdout && fclose(out) != 0 && !rc)
        rc = qe_err_set(&err, QE_EIO, "%s: write failed", out_path);
    qe_store_close(s);
    if (rc)
        return qe_report_error("report", &err);
    if (out_path)
        fprintf(stderr, "qeval report: wrote %s\n", out_path);
    return QE_EXIT_OK;
}
