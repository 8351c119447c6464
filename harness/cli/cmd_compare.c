/*
 * cmd_compare.c: `qeval compare BASE CAND`: paired deltas with
 * significance between two runs (variants matched by name) or two
 * run:variant pairs (reports/compare.c).
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../reports/report.h"
#include "../eval/stats.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval compare [--db results.db] [--alpha 0.05] [--adjust holm|bh|none] BASE CAND\n"
    "\n"
    "Paired comparison on the same items.  BASE and CAND are runs (id, 'latest',\n"
    "label or run key prefix; variants are matched by name) or RUN:VARIANT pairs,\n"
    "e.g. 'qeval compare 3:F16 3:Q4_K_M' or 'qeval compare nightly-01 nightly-02'.\n"
    "PPL: relative change with a paired bootstrap over items (2000 resamples);\n"
    "KLD: difference of mean KLD, paired bootstrap; accuracy: difference in points,\n"
    "McNemar's exact test, with flips (right->wrong / wrong->right shares of the\n"
    "items, Wilson 95% intervals); ll_margin (multiple choice: loglik of the gold\n"
    "answer minus the best wrong one, nats): paired bootstrap.\n"
    "MDE: the minimal detectable effect at 80% power and --alpha.  Markers: * adjusted\n"
    "p < alpha, ** adjusted p < alpha/5; the rows of one comparison are one family,\n"
    "adjusted by --adjust (default holm: family-wise error; bh: false-discovery rate).\n";

static void print_rows(const char *bl, const char *cl, const qe_cmp_row *r, int n, int adjust)
{
    printf("%s -> %s\n", bl, cl);
    printf("  %-24s %-20s %5s %10s %10s %11s %22s %8s %8s %10s  %s\n", "task", "metric", "n",
           "base", "cand", "delta", "95% CI", "p", "p_adj", "MDE", "flips -/+ [95% CI]");
    for (int i = 0; i < n; i++) {
        const char *unit = qe_cmp_row_unit(&r[i]);
        char ci[64], mde[32], fl[96] = "";
        snprintf(ci, sizeof ci, "[%+.4g, %+.4g]", r[i].lo, r[i].hi);
        if (isfinite(r[i].mde))
            snprintf(mde, sizeof mde, "%.3g%s", r[i].mde, unit);
        else
            snprintf(mde, sizeof mde, "-");
        if (r[i].n_rw >= 0)
            snprintf(fl, sizeof fl, "-%.1f%% [%.1f, %.1f] / +%.1f%% [%.1f, %.1f]",
                     100.0 * (double)r[i].n_rw / (double)r[i].n, 100 * r[i].rw_lo,
                     100 * r[i].rw_hi, 100.0 * (double)r[i].n_wr / (double)r[i].n,
                     100 * r[i].wr_lo, 100 * r[i].wr_hi);
        double scale = qe_cmp_row_scale(&r[i]);
        const char *mark = r[i].p_adj < r[i].alpha / 5 ? "**" : r[i].p_adj < r[i].alpha ? "*" : "";
        printf("  %-24s %-20s %5lld %10.6g %10.6g %+9.4g%-2s %22s %8.3g %6.3g%-2s %10s  %s\n",
               r[i].task, r[i].metric, (long long)r[i].n, scale * r[i].base, scale * r[i].cand,
               r[i].delta, unit, ci, r[i].p, r[i].p_adj, mark, mde, fl);
    }
    printf("  (%s over these %d rows; MDE at 80%% power, alpha %.3g)\n",
           qe_stats_adjust_name((qe_adjust)adjust), n, n ? r[0].alpha : 0.05);
}

int qe_cmd_compare(int argc, char **argv)
{
    const char *db = "results.db", *pos[2] = {NULL, NULL};
    int n_pos = 0, adjust = QE_ADJUST_HOLM;
    double alpha = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL)))
            db = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--alpha", NULL))) {
            if (!qe_arg_double("--alpha", v, &alpha) || alpha <= 0 || alpha >= 1)
                return qe_usage_error("compare", "--alpha: expected a number in (0, 1)");
        } else if ((v = qe_arg_value(argc, argv, &i, "--adjust", NULL))) {
            if ((adjust = qe_stats_adjust_parse(v)) < 0)
                return qe_usage_error("compare", "--adjust: expected holm, bh or none, got '%s'",
                                      v);
        } else if (i > argc)
            return QE_EXIT_USAGE;
        else if (argv[i][0] == '-' && argv[i][1])
            return qe_usage_error("compare", "unknown option '%s'", argv[i]);
        else if (n_pos < 2)
            pos[n_pos++] = argv[i];
        else
            return qe_usage_error("compare", "expected two references, got a third: '%s'",
                                  argv[i]);
        if (i > argc)
            return QE_EXIT_USAGE;
    }
    if (n_pos != 2)
        return qe_usage_error("compare", "expected BASE and CAND (runs or RUN:VARIANT)");
    qe_err err = {0};
    if (qe_report_db_exists(db, &err))
        return qe_report_error("compare", &err);
    qe_store *s = qe_store_open(db, &err);
    if (!s)
        return qe_report_error("compare", &err);
    int64_t br, bv, cr, cv;
    int rc = qe_report_parse_ref(s, pos[0], &br, &bv, &err);
    if (!rc)
        rc = qe_report_parse_ref(s, pos[1], &cr, &cv, &err);
    if (!rc && (bv < 0) != (cv < 0))
        rc = qe_err_set(&err, QE_EINVAL,
                        "give a variant on both sides (RUN:VARIANT RUN:VARIANT) or on neither");
    int n_cmp = 0;
    if (!rc && bv >= 0) {
        qe_cmp_row *rows = NULL;
        int n = 0;
        rc = qe_compare_variants(s, bv, cv, alpha, &rows, &n, &err);
        if (!rc)
            rc = qe_compare_adjust(rows, n, adjust, &err);
        if (!rc) {
            print_rows(pos[0], pos[1], rows, n, adjust);
            n_cmp++;
        }
        free(rows);
    } else if (!rc) {
        /* whole runs: pair variants by name */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(qe_store_db(s),
                               "SELECT b.id, c.id, b.name FROM variants b JOIN variants c ON"
                               " c.name = b.name WHERE b.run_id=? AND c.run_id=? ORDER BY b.id",
                               -1, &st, NULL) != SQLITE_OK)
            rc = qe_err_set(&err, QE_EDB, "%s: %s", db, sqlite3_errmsg(qe_store_db(s)));
        else {
            sqlite3_bind_int64(st, 1, br);
            sqlite3_bind_int64(st, 2, cr);
            while (!rc && sqlite3_step(st) == SQLITE_ROW) {
                qe_cmp_row *rows = NULL;
                int n = 0;
                char bl[160], cl[160];
                const char *name = (const char *)sqlite3_column_text(st, 2);
                snprintf(bl, sizeof bl, "%lld:%s", (long long)br, name);
                snprintf(cl, sizeof cl, "%lld:%s", (long long)cr, name);
                rc = qe_compare_variants(s, sqlite3_column_int64(st, 0),
                                         sqlite3_column_int64(st, 1), alpha, &rows, &n, &err);
                if (!rc)
                    rc = qe_compare_adjust(rows, n, adjust, &err);
                if (!rc) {
                    print_rows(bl, cl, rows, n, adjust);
                    n_cmp++;
                }
                free(rows);
            }
            sqlite3_finalize(st);
        }
        if (!rc && !n_cmp)
            rc = qe_err_set(&err, QE_ENOTFOUND, "%s: runs %lld and %lld share no variant name",
                            db, (long long)br, (long long)cr);
    }
    qe_store_close(s);
    if (rc)
        return qe_report_error("compare", &err);
    return QE_EXIT_OK;
}
