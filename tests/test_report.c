/*
 * test_report.c: reports/ on a synthetic database written through the
 * store API: the summary numbers against hand-computed values, every
 * format agreeing with the database, the HTML self-contained and
 * well-formed with its charts, paired comparisons (McNemar p computed by
 * hand), the gate decision, the recommendation and history.
 *
 * Fixture (deterministic): reference F16 and three variants Q8_0, Q4_K_M,
 * Q2_K on
 *   wiki   text ppl, 20 chunks x 8 tokens; variant v adds d[v] nats to every
 *          token's NLL (d = 0, 0.001, 0.01, 0.2), so PPL = e^(1.5 + d);
 *   arith  math acc, 100 items; the reference gets items 0..79 right, Q2_K
 *          loses items 0..19 (b = 20, c = 0 discordant pairs), others equal;
 *   flores_de / flores_fr  multilingual ppl (language de, fr);
 *   KLD    every token of a variant has KLD k[v] (k = 0.001, 0.02, 0.3) +-
 *          a small item-dependent wiggle.
 */
#include <ctype.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <unistd.h>

#include "../harness/eval/stats.h"
#include "../reports/report.h"
#include "test.h"

static char tmpdir[256];
static const char *db_path(const char *n)
{
    static char b[4][512];
    static int k;
    char *p = b[k++ & 3];
    snprintf(p, sizeof b[0], "%s/%s", tmpdir, n);
    return p;
}

static const char *vname[4] = {"F16", "Q8_0", "Q4_K_M", "Q2_K"};
static const double vbpw[4] = {16.0, 8.5, 4.89, 2.63};
static const uint64_t vsize[4] = {2000000, 1062500, 611250, 328750};
static const double dnll[4] = {0, 0.001, 0.01, 0.2};
static const double kbase[4] = {0, 0.001, 0.02, 0.3};

static int64_t make_run(qe_store *s, const char *label, double extra)
{
    qe_err e = {0};
    qe_run_info ri = {.label = label, .model_name = "tiny", .model_sha256 = "abcdef0123456789",
                      .suite = "smoke", .quants = "F16,Q8_0,Q4_K_M,Q2_K", .threads = 1,
                      .shard_n = 1};
    int64_t run, tw, ta, tde, tfr;
    qe_store_run_begin(s, &ri, &run, NULL, &e);
    qe_task_info w = {.name = "wiki", .version = "1", .family = "text", .language = "en",
                      .metric = "nll", .protocol = "llama.cpp-ppl ctx=16"};
    qe_task_info a = {.name = "arith", .version = "1", .family = "math", .metric = "acc"};
    qe_task_info de = {.name = "flores_de", .version = "1", .family = "multilingual",
                       .language = "de", .metric = "nll"};
    qe_task_info fr = {.name = "flores_fr", .version = "1", .family = "multilingual",
                       .language = "fr", .metric = "nll"};
    qe_store_task_put(s, &w, &tw, &e);
    qe_store_task_put(s, &a, &ta, &e);
    qe_store_task_put(s, &de, &tde, &e);
    qe_store_task_put(s, &fr, &tfr, &e);
    for (int v = 0; v < 4; v++) {
        int64_t vid;
        qe_variant_info vi = {.name = vname[v], .is_reference = v == 0, .bpw = vbpw[v],
                              .size_nbytes = vsize[v]};
        qe_store_variant_put(s, run, &vi, &vid, &e);
        qe_sample sm[20];
        qe_kld_chunk kc[20];
        float kv[20][8];
        for (int c = 0; c < 20; c++) {
            /* token NLLs alternate 1 and 2 (mean 1.5), shifted by d */
            double d = dnll[v] + (v ? extra : 0);
            double sum = 0, sq = 0;
            for (int t = 0; t < 8; t++) {
                double x = (t & 1 ? 2.0 : 1.0) + d;
                sum += x, sq += x * x;
            }
            sm[c] = (qe_sample){.item = c, .metric = "nll", .value = sum, .value2 = sq,
                                .n_tokens = 8};
            for (int t = 0; t < 8; t++)
                kv[c][t] = (float)(kbase[v] * (1.0 + 0.1 * ((c + t) % 3 - 1)));
            kc[c] = (qe_kld_chunk){.item = c, .n_tokens = 8, .kld = kv[c],
                                   .n_top1_same = 8 - v};
        }
        qe_unit u = {run, vid, tw, 0, 20, 0};
        qe_store_unit_commit(s, &u, sm, 20, v ? kc : NULL, v ? 20 : 0, NULL, &e);
        qe_sample ac[100];
        for (int i = 0; i < 100; i++) {
            bool ok = i < 80 && !(v == 3 && i < 20);
            ac[i] = (qe_sample){.item = i, .metric = "acc", .value = ok, .n_tokens = 1};
        }
        qe_unit ua = {run, vid, ta, 0, 100, 0};
        qe_store_unit_commit(s, &ua, ac, 100, NULL, 0, NULL, &e);
        for (int l = 0; l < 2; l++) {
            /* 8 chunks: a paired p can go below 2 * 0.5^n (sign-test floor) */
            qe_sample ls[8];
            for (int c = 0; c < 8; c++) {
                double x = 2.0 + (l + 1) * dnll[v];
                ls[c] = (qe_sample){.item = c, .metric = "nll", .value = 4 * x,
                                    .value2 = 4 * x * x, .n_tokens = 4};
            }
            qe_unit ul = {run, vid, l ? tfr : tde, 0, 8, 0};
            qe_store_unit_commit(s, &ul, ls, 8, NULL, 0, NULL, &e);
        }
    }
    if (qe_store_run_finish(s, run, &e))
        fprintf(stdout, "  fixture: %s\n", e.msg);
    return run;
}

static qe_store *fixture(const char *name, int64_t *run)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(db_path(name), &e);
    if (s)
        *run = make_run(s, "r1", 0);
    return s;
}

/* Render a format into a malloc'd string. */
static char *render(qe_store *s, int64_t run, const char *fmt)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    qe_err e = {0};
    int rc = qe_report_render(s, run, fmt, f, &e);
    fclose(f);
    if (rc) {
        fprintf(stdout, "  render %s: %s\n", fmt, e.msg);
        free(buf);
        return NULL;
    }
    return buf;
}

static double db_value(qe_store *s, int64_t run, const char *variant, const char *task,
                       const char *metric)
{
    sqlite3_stmt *st;
    double v = NAN;
    sqlite3_prepare_v2(qe_store_db(s),
                       "SELECT value FROM v_results WHERE run_id=? AND variant=? AND task=? AND"
                       " metric=?",
                       -1, &st, NULL);
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, variant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, task, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, metric, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

TEST(summary_numbers)
{
    int64_t run;
    qe_store *s = fixture("sum.db", &run);
    REQUIRE(s, "open");
    qe_report_data *d;
    qe_err e = {0};
    int lrc = qe_report_load(s, run, &d, &e); /* REQUIRE evaluates twice */
    REQUIRE(lrc == 0, "%s", e.msg);
    CHECK(d->n_variants == 4 && d->ref_index == 0);
    CHECK(strcmp(d->variants[0].name, "F16") == 0 && strcmp(d->variants[3].name, "Q2_K") == 0);
    CHECK(strcmp(d->main_task, "wiki") == 0);
    for (int v = 0; v < 4; v++) {
        const qe_report_variant *r = &d->variants[v];
        CHECKF(test_close(r->ppl, exp(1.5 + dnll[v]), 1e-12), "%s ppl %g", r->name, r->ppl);
        CHECKF(test_close(r->dppl_pct, 100 * expm1(dnll[v]), 1e-9), "%s dppl %g", r->name,
               r->dppl_pct);
        if (v) {
            CHECKF(test_close(r->kld_mean, kbase[v], 1e-6), "%s kld %g", r->name, r->kld_mean);
            CHECK(test_close(r->top1, (8.0 - v) / 8.0, 1e-12));
        }
        const qe_fam_acc *m = &r->fam[QE_FAM_MATH];
        CHECK(m->present && m->n == 100);
        CHECK(test_close(m->acc, v == 3 ? 0.6 : 0.8, 1e-12));
    }
    /* Q2_K math: b = 20, c = 0 -> exact McNemar p = 2 * 0.5^20 */
    const qe_fam_acc *m2 = &d->variants[3].fam[QE_FAM_MATH];
    CHECKF(test_close(m2->p, 2.0 * pow(0.5, 20), 1e-9), "p %g", m2->p);
    CHECK(test_close(m2->delta, -0.2, 1e-12));
    CHECK(d->variants[1].fam[QE_FAM_MATH].p == 1.0);
    /* every token shifted by 0.2: the bootstrap can never cross 0 */
    CHECKF(d->variants[3].dppl_p < 0.01, "p %g", d->variants[3].dppl_p);
    /* per-language: de shifted by d, fr by 2d on NLL 2.0 */
    CHECK(d->n_lang == 3 && strcmp(d->langs[0], "de") == 0 && strcmp(d->langs[2], "fr") == 0);
    CHECK(test_close(d->variants[3].lang_dppl[2], 100 * expm1(0.4), 1e-9));
    CHECK(test_close(d->variants[3].lang_dppl[1], 100 * expm1(0.2), 1e-9)); /* wiki is "en" */
    /* recommendation: Q2_K fails (dPPL 22 %, KLD .3, math -20 pts p<.05);
     * Q4_K_M passes (1.005 %, .02) and is the smallest that does */
    qe_tolerance t;
    qe_tolerance_default(&t);
    char why[300];
    int k = qe_report_recommend(d, &t, 0, why, sizeof why);
    CHECKF(k == 2, "picked %d: %s", k, why);
    CHECK(strstr(why, "KLD <= 0.05") != NULL);
    /* budget 700 kB: Q4_K_M and Q2_K fit; Q4_K_M has the lower KLD */
    CHECK(qe_report_recommend(d, &t, 700000, why, sizeof why) == 2);
    CHECK(qe_report_recommend(d, &t, 1000, why, sizeof why) == -1);
    qe_report_data_free(d);
    qe_store_close(s);
}

/* Check that tags open/close in order (void elements excepted). */
static bool html_well_formed(const char *h, char *why, size_t n)
{
    char stack[64][16];
    int depth = 0;
    for (const char *p = strchr(h, '<'); p; p = strchr(p + 1, '<')) {
        if (p[1] == '!')
            continue;
        bool close = p[1] == '/';
        const char *q = p + 1 + close;
        char tag[16];
        int k = 0;
        while ((isalnum((unsigned char)*q)) && k < 15)
            tag[k++] = *q++;
        tag[k] = '\0';
        const char *gt = strchr(q, '>');
        if (!gt || !k) {
            snprintf(why, n, "bad tag at offset %ld", (long)(p - h));
            return false;
        }
        bool self = gt[-1] == '/';
        if (!strcmp(tag, "meta") || !strcmp(tag, "br") || self)
            continue;
        if (!close) {
            if (depth == 64)
                return false;
            strcpy(stack[depth++], tag);
        } else if (depth == 0 || strcmp(stack[--depth], tag) != 0) {
            snprintf(why, n, "</%.15s> at %ld closes <%.15s>", tag, (long)(p - h),
                     depth >= 0 ? stack[depth] : "");
            return false;
        }
    }
    if (depth) {
        snprintf(why, n, "%d unclosed, innermost <%.15s>", depth, stack[depth - 1]);
        return false;
    }
    return true;
}

TEST(formats_agree_with_db)
{
    int64_t run;
    qe_store *s = fixture("fmt.db", &run);
    REQUIRE(s, "open");
    char *fm[5];
    const char *names[5] = {"table", "md", "html", "json", "card"};
    for (int i = 0; i < 5; i++) {
        fm[i] = render(s, run, names[i]);
        REQUIRE(fm[i], "render %s", names[i]);
    }
    /* the numbers, formatted from the db values, appear in every text format */
    for (int v = 0; v < 4; v++) {
        char ppl[32], kld[32];
        snprintf(ppl, sizeof ppl, "%.4f", db_value(s, run, vname[v], "wiki", "ppl"));
        snprintf(kld, sizeof kld, "%.5f", db_value(s, run, vname[v], "wiki", "kld_mean"));
        for (int f = 0; f < 5; f++) {
            if (f == 3)
                continue;
            CHECKF(strstr(fm[f], ppl) != NULL, "%s lacks ppl %s of %s", names[f], ppl, vname[v]);
            if (v)
                CHECKF(strstr(fm[f], kld) != NULL, "%s lacks kld %s", names[f], kld);
        }
    }
    CHECK(strstr(fm[0], "60.0 (-20.0**)") != NULL); /* Q2_K math with its marker */
    CHECK(strstr(fm[1], "| Q2_K |") != NULL);
    CHECK(strstr(fm[4], "**Recommended: Q4_K_M**") != NULL);
    /* json: exact values and every result row */
    cJSON *j = cJSON_Parse(fm[3]);
    REQUIRE(j, "json parses");
    cJSON *vs = cJSON_GetObjectItem(j, "variants");
    CHECK(cJSON_GetArraySize(vs) == 4);
    cJSON *q2 = cJSON_GetArrayItem(vs, 3);
    CHECK(cJSON_GetObjectItem(q2, "ppl")->valuedouble == db_value(s, run, "Q2_K", "wiki", "ppl"));
    CHECK(cJSON_GetObjectItem(q2, "kld_mean")->valuedouble ==
          db_value(s, run, "Q2_K", "wiki", "kld_mean"));
    sqlite3_stmt *st;
    sqlite3_prepare_v2(qe_store_db(s), "SELECT count(*) FROM results", -1, &st, NULL);
    sqlite3_step(st);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "results")) == sqlite3_column_int(st, 0));
    sqlite3_finalize(st);
    CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "run"), "model_sha256")->valuestring,
                 "abcdef0123456789") == 0);
    cJSON_Delete(j);
    /* html: self-contained, well formed, with the charts */
    const char *h = fm[2];
    CHECK(strncmp(h, "<!DOCTYPE html>", 15) == 0);
    static const char *banned[] = {"http:", "https:", "//cdn", "<script", "<link", "@import",
                                   "url(", "src="};
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++)
        CHECKF(strstr(h, banned[i]) == NULL, "html contains '%s'", banned[i]);
    static const char *charts[] = {"id=\"cliff-kld\"", "id=\"cliff-ppl\"",
                                   "id=\"family-accuracy\"", "id=\"lang-heatmap\""};
    for (size_t i = 0; i < 4; i++)
        CHECKF(strstr(h, charts[i]) != NULL, "missing chart %s", charts[i]);
    CHECK(strstr(h, "<circle") != NULL && strstr(h, "<rect") != NULL);
    char why[200] = "";
    CHECKF(html_well_formed(h, why, sizeof why), "%s", why);
    for (int i = 0; i < 5; i++)
        free(fm[i]);
    qe_err e = {0};
    CHECK(qe_report_render(s, run, "pdf", stdout, &e) == QE_EINVAL);
    CHECK(qe_report_render(s, 999, "table", stdout, &e) == QE_ENOTFOUND);
    qe_store_close(s);
}

TEST(compare_and_gate)
{
    int64_t run;
    qe_store *s = fixture("gate.db", &run);
    REQUIRE(s, "open");
    qe_err e = {0};
    int64_t ref, q8, q2, r, v;
    int prc = qe_report_parse_ref(s, "r1:F16", &r, &ref, &e);
    REQUIRE(prc == 0, "%s", e.msg);
    CHECK(r == run);
    qe_report_parse_ref(s, "latest:Q8_0", &r, &q8, &e);
    qe_report_parse_ref(s, "1:q2_k", &r, &q2, &e);
    CHECK(qe_report_parse_ref(s, "r1:Q9", &r, &v, &e) == QE_ENOTFOUND);
    qe_cmp_row *rows;
    int n;
    int crc = qe_compare_variants(s, ref, q2, 0.05, &rows, &n, &e);
    REQUIRE(crc == 0, "%s", e.msg);
    int seen = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(rows[i].task, "arith")) {
            CHECK(test_close(rows[i].delta, -20.0, 1e-12));
            CHECK(test_close(rows[i].p, 2.0 * pow(0.5, 20), 1e-9));
            seen++;
        } else if (!strcmp(rows[i].task, "wiki") && !strcmp(rows[i].metric, "ppl")) {
            CHECK(test_close(rows[i].delta, 100 * expm1(0.2), 1e-9));
            CHECK(rows[i].lo <= rows[i].delta && rows[i].delta <= rows[i].hi + 1e-9);
            seen++;
        } else if (!strcmp(rows[i].metric, "kld_mean")) {
            CHECK(test_close(rows[i].cand, 0.3, 1e-6) && rows[i].base == 0);
            seen++;
        }
    }
    CHECK(seen == 3);
    free(rows);
    /* gate: Q2_K vs a Q8_0 baseline regresses on every check: ppl of wiki,
     * flores_de and flores_fr, kld and accuracy */
    qe_gate_opts o;
    qe_gate_opts_default(&o);
    int n_reg = -1;
    char *buf = NULL;
    size_t bn = 0;
    FILE *f = open_memstream(&buf, &bn);
    CHECK(qe_gate_check(s, &q8, &q2, 1, &o, f, &n_reg, &e) == 0);
    fclose(f);
    CHECKF(n_reg == 5, "regressions %d\n%s", n_reg, buf);
    CHECK(strstr(buf, "gate: FAIL") != NULL);
    free(buf);
    /* identical candidate passes; Q8_0's +0.1 % PPL is within 1 % */
    f = fopen("/dev/null", "w");
    CHECK(qe_gate_check(s, &q8, &q8, 1, &o, f, &n_reg, &e) == 0 && n_reg == 0);
    CHECK(qe_gate_check(s, &ref, &q8, 1, &o, f, &n_reg, &e) == 0 && n_reg == 0);
    /* a tight threshold turns Q8_0's significant +0.1 % (wiki, de) and
     * +0.2 % (fr) into regressions */
    o.max_ppl_increase_pct = 0.01;
    CHECK(qe_gate_check(s, &ref, &q8, 1, &o, f, &n_reg, &e) == 0 && n_reg == 3);
    /* ... but not when the threshold is beyond them */
    o.max_ppl_increase_pct = 0.25;
    CHECK(qe_gate_check(s, &ref, &q8, 1, &o, f, &n_reg, &e) == 0 && n_reg == 0);
    fclose(f);
    /* thresholds file */
    const char *tp = db_path("thr.json");
    f = fopen(tp, "w");
    fputs("{\"max_ppl_increase\": 5, \"max_kld\": 0.5, \"max_acc_drop\": 25}", f);
    fclose(f);
    qe_gate_opts_default(&o);
    CHECK(qe_gate_opts_load(&o, tp, &e) == 0 && o.max_ppl_increase_pct == 5 &&
          o.max_acc_drop_pts == 25);
    f = fopen(tp, "w");
    fputs("{\"max_ppl\": 5}", f);
    fclose(f);
    CHECK(qe_gate_opts_load(&o, tp, &e) == QE_EJSON);
    CHECKF(strstr(e.msg, "max_ppl") != NULL, "%s", e.msg);
    qe_store_close(s);
}

TEST(history_two_runs)
{
    int64_t run;
    qe_store *s = fixture("hist.db", &run);
    REQUIRE(s, "open");
    make_run(s, "r2", 0.05);
    char *buf = NULL;
    size_t bn = 0;
    FILE *f = open_memstream(&buf, &bn);
    int n = 0;
    qe_err e = {0};
    CHECK(qe_history_print(s, "tiny", "Q2_K", "ppl", NULL, f, &n, &e) == 0);
    fclose(f);
    CHECKF(n == 2, "%d points", n);
    char want[32];
    snprintf(want, sizeof want, "%.6g", exp(1.5 + 0.25));
    CHECKF(strstr(buf, want) != NULL, "history lacks %s:\n%s", want, buf);
    free(buf);
    f = fopen("/dev/null", "w");
    CHECK(qe_history_print(s, "abcdef01", "Q2_K", "kld_mean", "wiki", f, &n, &e) == 0 && n == 2);
    fclose(f);
    char *h = render(s, 2, "html");
    REQUIRE(h, "render");
    CHECK(strstr(h, "id=\"history\"") != NULL);
    free(h);
    qe_store_close(s);
}

/* Flips, MDE and multiple-comparison control on the fixture: Q2_K loses
 * arith items 0..19 (20 right->wrong of 100, none wrong->right). */
TEST(flips_mde_adjust)
{
    int64_t run;
    qe_store *s = fixture("flips.db", &run);
    REQUIRE(s, "open");
    qe_err e = {0};
    int64_t ref, q8, q2, r;
    qe_report_parse_ref(s, "r1:F16", &r, &ref, &e);
    qe_report_parse_ref(s, "r1:Q8_0", &r, &q8, &e);
    qe_report_parse_ref(s, "r1:Q2_K", &r, &q2, &e);
    qe_cmp_row *rows;
    int n;
    REQUIRE(qe_compare_variants(s, ref, q2, 0.05, &rows, &n, &e) == 0, "%s", e.msg);
    int seen = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].task, "arith"))
            continue;
        seen++;
        CHECKF(rows[i].n_rw == 20 && rows[i].n_wr == 0, "flips %lld %lld",
               (long long)rows[i].n_rw, (long long)rows[i].n_wr);
        double lo, hi;
        qe_stats_wilson(20, 100, 1.96, &lo, &hi);
        CHECK(rows[i].rw_lo == lo && rows[i].rw_hi == hi);
        CHECK(rows[i].wr_lo == 0 && rows[i].wr_hi > 0.03 && rows[i].wr_hi < 0.04);
        /* MDE: McNemar at 100 items with 20 observed flips, in points */
        CHECKF(test_close(rows[i].mde, 100 * qe_stats_mde_mcnemar(100, 20, 0.05, 0.8), 1e-12),
               "mde %g", rows[i].mde);
        CHECK(rows[i].mde > 5 && rows[i].mde < 20);
        CHECK(strcmp(rows[i].test, "McNemar") == 0);
    }
    CHECK(seen == 1);
    for (int i = 0; i < n; i++) /* every row has a finite MDE and p_adj = p until adjusted */
        CHECKF(isfinite(rows[i].mde) && rows[i].p_adj == rows[i].p, "%s %s", rows[i].task,
               rows[i].metric);
    /* Holm over the rows: the k-th smallest p times (m - k + 1), running max */
    REQUIRE(qe_compare_adjust(rows, n, QE_ADJUST_HOLM, &e) == 0, "adjust");
    for (int i = 0; i < n; i++)
        CHECK(rows[i].p_adj >= rows[i].p && rows[i].p_adj <= 1);
    free(rows);
    /* the reference against itself: no flips at all */
    REQUIRE(qe_compare_variants(s, ref, ref, 0.05, &rows, &n, &e) == 0, "%s", e.msg);
    for (int i = 0; i < n; i++)
        if (rows[i].n_rw >= 0)
            CHECK(rows[i].n_rw == 0 && rows[i].n_wr == 0 && rows[i].delta == 0);
    free(rows);
    /* summary: the pooled flips column and the per-task table */
    qe_report_data *d;
    REQUIRE(qe_report_load(s, run, &d, &e) == 0, "%s", e.msg);
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        if (!strcmp(v->name, "Q2_K"))
            CHECK(v->flip_n == 100 && v->flip_rw == 20 && v->flip_wr == 0);
        else if (!v->is_reference)
            CHECK(v->flip_n == 100 && v->flip_rw == 0 && v->flip_wr == 0);
    }
    CHECK(d->adjust == QE_ADJUST_HOLM && d->n_summary_tests > 0);
    qe_report_data_free(d);
    char *t = render(s, run, "table");
    REQUIRE(t, "table");
    CHECKF(strstr(t, "-20.0/+0.0%") && strstr(t, "Holm (family-wise)") &&
               strstr(t, "per task, paired vs the reference") && strstr(t, "20.0% [13.3, 28.9]"),
           "%s", t);
    free(t);
    char *j = render(s, run, "json");
    REQUIRE(j, "json");
    cJSON *root = cJSON_Parse(j);
    int jf = 0;
    cJSON *vs = cJSON_GetObjectItem(root, "variants"), *v;
    cJSON_ArrayForEach(v, vs)
    {
        if (strcmp(cJSON_GetObjectItem(v, "name")->valuestring, "Q2_K"))
            continue;
        cJSON *fl = cJSON_GetObjectItem(v, "flips");
        CHECK(fl && cJSON_GetObjectItem(fl, "right_to_wrong")->valuedouble == 20);
        cJSON *tk;
        cJSON_ArrayForEach(tk, cJSON_GetObjectItem(v, "tasks"))
        {
            if (!strcmp(cJSON_GetObjectItem(tk, "task")->valuestring, "arith")) {
                jf++;
                CHECK(cJSON_GetObjectItem(tk, "right_to_wrong")->valuedouble == 20);
                CHECK(cJSON_IsNumber(cJSON_GetObjectItem(tk, "mde")));
            }
        }
    }
    CHECK(jf == 1);
    cJSON_Delete(root);
    free(j);
    /* gate: Holm vs per-comparison at a tiny alpha.  arith's McNemar p =
     * 2 * 0.5^20 = 1.9e-6; with 5 checks Holm multiplies it by 5 (it is the
     * smallest), 9.5e-6 > 5e-6: no longer a regression. */
    qe_gate_opts o;
    qe_gate_opts_default(&o);
    o.alpha = 5e-6;
    o.max_ppl_increase_pct = 1000, o.max_kld_increase = 1000; /* only accuracy is beyond */
    FILE *f = fopen("/dev/null", "w");
    int n_reg = -1;
    o.adjust = QE_ADJUST_NONE;
    CHECK(qe_gate_check(s, &ref, &q2, 1, &o, f, &n_reg, &e) == 0 && n_reg == 1);
    o.adjust = QE_ADJUST_HOLM;
    CHECK(qe_gate_check(s, &ref, &q2, 1, &o, f, &n_reg, &e) == 0 && n_reg == 0);
    fclose(f);
    /* --max-flips: 20 % right->wrong against a 5 % limit regresses (exact
     * one-sided binomial p ~ 1e-6), against 25 % it does not */
    qe_gate_opts_default(&o);
    o.max_flips_pct = 5;
    o.adjust = QE_ADJUST_BH;
    char *buf = NULL;
    size_t bn = 0;
    f = open_memstream(&buf, &bn);
    CHECK(qe_gate_check(s, &q8, &q2, 1, &o, f, &n_reg, &e) == 0);
    fclose(f);
    CHECKF(n_reg == 6 && strstr(buf, "acc flips") && strstr(buf, "Benjamini-Hochberg (FDR)") &&
               strstr(buf, "MDE "),
           "regressions %d\n%s", n_reg, buf);
    free(buf);
    o.max_flips_pct = 25;
    f = fopen("/dev/null", "w");
    CHECK(qe_gate_check(s, &q8, &q2, 1, &o, f, &n_reg, &e) == 0 && n_reg == 5);
    fclose(f);
    qe_store_close(s);
}

/* Cliff charts: variants at the same bpw (and value) share one label,
 * close points get labels that do not overlap, and the log axis is
 * labelled at round decades.  Variants as stories260K has them: Q8_0 and
 * Q6_K identical, Q3_K_M and Q2_K 0.11 bpw apart. */
TEST(cliff_labels_and_ticks)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(db_path("cliff.db"), &e);
    REQUIRE(s, "%s", e.msg);
    qe_run_info ri = {.label = "cliff", .model_name = "m", .model_sha256 = "00aa", .shard_n = 1};
    int64_t run, tw;
    qe_store_run_begin(s, &ri, &run, NULL, &e);
    qe_task_info w = {.name = "wiki", .version = "1", .family = "text", .language = "en",
                      .metric = "nll", .protocol = "llama.cpp-ppl ctx=16"};
    qe_store_task_put(s, &w, &tw, &e);
    static const char *nm[] = {"F32", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"};
    static const double bpw[] = {32, 9.97, 9.97, 7.92, 7.29, 7.18};
    static const double kl[] = {0, 0.00036, 0.00036, 0.016, 0.048, 0.056};
    for (int v = 0; v < 6; v++) {
        int64_t vid;
        qe_variant_info vi = {.name = nm[v], .is_reference = v == 0, .bpw = bpw[v],
                              .size_nbytes = (uint64_t)(bpw[v] * 1000)};
        qe_store_variant_put(s, run, &vi, &vid, &e);
        qe_sample sm[4];
        qe_kld_chunk kc[4];
        float kv[4][4];
        for (int c = 0; c < 4; c++) {
            double x = 1.5 + kl[v] + 0.01 * c;
            sm[c] = (qe_sample){.item = c, .metric = "nll", .value = 4 * x, .value2 = 4 * x * x,
                                .n_tokens = 4};
            for (int t = 0; t < 4; t++)
                kv[c][t] = (float)kl[v];
            kc[c] = (qe_kld_chunk){.item = c, .n_tokens = 4, .kld = kv[c], .n_top1_same = 4};
        }
        qe_unit u = {run, vid, tw, 0, 4, 0};
        qe_store_unit_commit(s, &u, sm, 4, v ? kc : NULL, v ? 4 : 0, NULL, &e);
    }
    qe_store_run_finish(s, run, &e);
    char *h = render(s, run, "html");
    REQUIRE(h, "html");
    static const char *charts[] = {"id=\"cliff-kld\"", "id=\"cliff-ppl\""};
    for (int c = 0; c < 2; c++) {
        const char *a = strstr(h, charts[c]), *z = a ? strstr(a, "</svg>") : NULL;
        REQUIRE(a && z, "chart %s", charts[c]);
        double bx[16][4];
        int nb = 0, merged = 0;
        for (const char *p = a; (p = strstr(p, "class=\"k ks lab\">")) && p < z; p++) {
            const char *t0 = p;
            while (t0 > a && strncmp(t0, "<text x=", 8))
                t0--;
            double tx = 0, ty = 0;
            REQUIRE(sscanf(t0, "<text x=\"%lf\" y=\"%lf\"", &tx, &ty) == 2, "label at %.40s", t0);
            const char *g = strchr(p, '>') + 1, *ge = strchr(g, '<');
            double wd = 6.0 * (double)(ge - g);
            if (ge - g > 4 && strstr(g, " = ") && strstr(g, " = ") < ge)
                merged++;
            REQUIRE(nb < 16, "too many labels");
            bx[nb][0] = tx, bx[nb][1] = ty - 9, bx[nb][2] = tx + wd, bx[nb][3] = ty + 2;
            nb++;
        }
        /* 5 variants with a value (the reference has none on the KLD chart),
         * Q8_0 and Q6_K share one label */
        CHECKF(merged == 1, "%s: %d merged labels", charts[c], merged);
        CHECKF(nb == (c == 0 ? 4 : 5), "%s: %d labels", charts[c], nb);
        for (int i = 0; i < nb; i++)
            for (int j = 0; j < i; j++)
                CHECKF(!(bx[i][0] < bx[j][2] && bx[j][0] < bx[i][2] && bx[i][1] < bx[j][3] &&
                         bx[j][1] < bx[i][3]),
                       "%s: labels %d and %d overlap", charts[c], i, j);
        if (c == 0) { /* y ticks of the log axis: round decades only */
            int nt = 0;
            for (const char *p = a; (p = strstr(p, "class=\"k ke\">")) && p < z; p++) {
                double v = strtod(p + 13, NULL);
                double k = log10(v);
                CHECKF(v > 0 && fabs(k - round(k)) < 1e-9, "tick %.20s", p + 13);
                nt++;
            }
            CHECKF(nt >= 3, "%d ticks", nt);
        } else { /* linear axis: equally spaced at 1, 2 or 5 x 10^k, on multiples of it */
            double tv[16];
            int nt = 0;
            for (const char *p = a; (p = strstr(p, "class=\"k ke\">")) && p < z && nt < 16; p++)
                tv[nt++] = strtod(p + 13, NULL);
            REQUIRE(nt >= 3, "%d ticks", nt);
            double st = tv[1] - tv[0], ex = floor(log10(st)), f = st / pow(10, ex);
            CHECKF(fabs(f - 1) < 1e-9 || fabs(f - 2) < 1e-9 || fabs(f - 5) < 1e-9, "step %g", st);
            for (int i = 0; i < nt; i++)
                CHECKF(fabs(tv[i] / st - round(tv[i] / st)) < 1e-6 &&
                           (i == 0 || fabs(tv[i] - tv[i - 1] - st) < 1e-9 * st),
                       "tick %d = %g (step %g)", i, tv[i], st);
        }
    }
    free(h);
    qe_store_close(s);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qeval_test_report_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(summary_numbers);
    RUN(formats_agree_with_db);
    RUN(compare_and_gate);
    RUN(history_two_runs);
    RUN(flips_mde_adjust);
    RUN(cliff_labels_and_ticks);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
