/*
 * cmd_gate.c: `qeval gate --baseline REF`: the CI gate.  Exit 0 when no
 * check regresses, 1 when a check is both beyond its threshold and
 * significant (adjusted p < alpha, Holm by default), 2 on usage errors (reports/compare.c).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../reports/report.h"
#include "../eval/stats.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval gate [--db results.db] --baseline REF [--candidate REF]\n"
    "                  [--max-ppl-increase 1%] [--max-kld 0.02] [--max-acc-drop 2]\n"
    "                  [--max-flips PCT] [--alpha 0.05] [--adjust holm|bh|none]\n"
    "                  [--thresholds FILE.json]\n"
    "\n"
    "Compare a candidate (default: the latest run) against a baseline, pairing\n"
    "items.  REF is a run (variants matched by name) or RUN:VARIANT.  A check\n"
    "fails only if it is beyond its threshold AND significant (adjusted p < alpha):\n"
    "  PPL     relative increase in %, paired bootstrap over items\n"
    "  KLD     increase of mean KLD over the baseline's, in nats, paired bootstrap (the\n"
    "          text, and generation tasks teacher-forced on the reference's outputs)\n"
    "  acc     drop in percentage points, McNemar's exact test\n"
    "  flips   (with --max-flips) share of items the baseline got right and the\n"
    "          candidate wrong, in %, one-sided exact binomial test against PCT\n"
    "The p-values of all checks are adjusted as one family: Holm (family-wise\n"
    "error, the default), bh (Benjamini-Hochberg false-discovery rate) or none.\n"
    "Every check prints its minimal detectable effect (MDE) at 80% power.\n"
    "--thresholds reads {\"max_ppl_increase\":1,\"max_kld\":0.02,\"max_acc_drop\":2,\"alpha\":0.05,\n"
    "\"max_flips\":5};\n"
    "options given after it override it.\n"
    "Exit: 0 pass, 1 regression, 2 usage error.\n";

int qe_cmd_gate(int argc, char **argv)
{
    const char *db = "results.db", *base = NULL, *cand = "latest";
    qe_gate_opts o;
    qe_gate_opts_default(&o);
    qe_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *v;
        double x;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--db", NULL)))
            db = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--baseline", NULL)))
            base = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--candidate", NULL)))
            cand = v;
        else if ((v = qe_arg_value(argc, argv, &i, "--thresholds", NULL))) {
            if (qe_gate_opts_load(&o, v, &err))
                return qe_report_error("gate", &err);
        } else if ((v = qe_arg_value(argc, argv, &i, "--max-ppl-increase", NULL))) {
            if (!qe_arg_double("--max-ppl-increase", v, &x) || x < 0)
                return qe_usage_error("gate", "--max-ppl-increase: expected a percentage >= 0");
            o.max_ppl_increase_pct = x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--max-kld", NULL))) {
            if (!qe_arg_double("--max-kld", v, &x) || x < 0)
                return qe_usage_error("gate", "--max-kld: expected a number >= 0");
            o.max_kld_increase = x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--max-acc-drop", NULL))) {
            if (!qe_arg_double("--max-acc-drop", v, &x) || x < 0)
                return qe_usage_error("gate", "--max-acc-drop: expected points >= 0");
            o.max_acc_drop_pts = x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--max-flips", NULL))) {
            if (!qe_arg_double("--max-flips", v, &x) || x < 0 || x > 100)
                return qe_usage_error("gate", "--max-flips: expected a percentage in [0, 100]");
            o.max_flips_pct = x;
        } else if ((v = qe_arg_value(argc, argv, &i, "--adjust", NULL))) {
            int m = qe_stats_adjust_parse(v);
            if (m < 0)
                return qe_usage_error("gate", "--adjust: expected holm, bh or none, got '%s'", v);
            o.adjust = m;
        } else if ((v = qe_arg_value(argc, argv, &i, "--alpha", NULL))) {
            if (!qe_arg_double("--alpha", v, &x) || x <= 0 || x >= 1)
                return qe_usage_error("gate", "--alpha: expected a number in (0, 1)");
            o.alpha = x;
        } else if (i > argc)
            return QE_EXIT_USAGE;
        else
            return qe_usage_error("gate", "unexpected argument '%s'", argv[i]);
        if (i > argc)
            return QE_EXIT_USAGE;
    }
    if (!base)
        return qe_usage_error("gate", "--baseline is required");
    if (qe_report_db_exists(db, &err))
        return qe_report_error("gate", &err);
    qe_store *s = qe_store_open(db, &err);
    if (!s)
        return qe_report_error("gate", &err);
    int64_t br, bv, cr, cv;
    int64_t *bvs = NULL, *cvs = NULL;
    int n = 0, n_reg = 0;
    int rc = qe_report_parse_ref(s, base, &br, &bv, &err);
    if (!rc)
        rc = qe_report_parse_ref(s, cand, &cr, &cv, &err);
    if (!rc && bv >= 0 && cv < 0) {
        /* baseline variant given: the candidate's variant of the same name,
         * or its only non-reference variant */
        sqlite3_stmt *st;
        sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT c.id FROM variants c, variants b WHERE b.id=?1 AND c.run_id=?2"
                           " ORDER BY (c.name = b.name) DESC, c.is_reference, c.id LIMIT 1",
                           -1, &st, NULL);
        sqlite3_bind_int64(st, 1, bv);
        sqlite3_bind_int64(st, 2, cr);
        if (sqlite3_step(st) == SQLITE_ROW)
            cv = sqlite3_column_int64(st, 0);
        else
            rc = qe_err_set(&err, QE_ENOTFOUND, "%s: candidate run %lld has no variants", db,
                            (long long)cr);
        sqlite3_finalize(st);
    }
    if (!rc && (bv < 0) != (cv < 0))
        rc = qe_err_set(&err, QE_EINVAL, "give the baseline as RUN:VARIANT when the candidate "
                                         "names a variant");
    if (!rc && bv >= 0) {
        bvs = malloc(sizeof *bvs);
        cvs = malloc(sizeof *cvs);
        if (!bvs || !cvs)
            rc = qe_err_set(&err, QE_ENOMEM, "out of memory");
        else
            bvs[0] = bv, cvs[0] = cv, n = 1;
    } else if (!rc) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT b.id, c.id FROM variants b JOIN variants c ON c.name = b.name"
                           " WHERE b.run_id=? AND c.run_id=? ORDER BY b.id",
                           -1, &st, NULL);
        sqlite3_bind_int64(st, 1, br);
        sqlite3_bind_int64(st, 2, cr);
        while (!rc && sqlite3_step(st) == SQLITE_ROW) {
            int64_t *nb = realloc(bvs, (size_t)(n + 1) * sizeof *nb);
            if (nb)
                bvs = nb;
            int64_t *nc = realloc(cvs, (size_t)(n + 1) * sizeof *nc);
            if (nc)
                cvs = nc;
            if (!nb || !nc) {
                rc = qe_err_set(&err, QE_ENOMEM, "out of memory");
                break;
            }
            bvs[n] = sqlite3_column_int64(st, 0);
            cvs[n] = sqlite3_column_int64(st, 1);
            n++;
        }
        sqlite3_finalize(st);
        if (!rc && !n)
            rc = qe_err_set(&err, QE_ENOTFOUND,
                            "%s: runs %lld and %lld share no variant name; use RUN:VARIANT", db,
                            (long long)br, (long long)cr);
    }
    if (!rc)
        rc = qe_gate_check(s, bvs, cvs, n, &o, stdout, &n_reg, &err);
    free(bvs);
    free(cvs);
    qe_store_close(s);
    if (rc)
        return qe_report_error("gate", &err);
    return n_reg ? QE_EXIT_REGRESSION : QE_EXIT_OK;
}
