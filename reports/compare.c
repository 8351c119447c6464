/*
 * compare.c: paired comparisons of two variants on the same items
 * (`qeval compare`), the CI gate built on them (`qeval gate`), and the
 * history of one metric across runs (`qeval history`).
 *
 * Pairing: samples are matched by (task, item, metric), KLD chunks by
 * (task, item).  NLL and KLD use the paired bootstrap, 0/1 accuracies
 * McNemar's exact test (harness/eval/stats.h), 2000 resamples, seed 42,
 * so the same database always gives the same p-values.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../harness/eval/stats.h"
#include "report.h"

#define N_RESAMPLES 2000
#define BOOT_SEED 42

/* Growable paired arrays. */
typedef struct pairs {
    double *a, *b;
    double wa, wb;       /* token-weighted totals (sum values) */
    double ta, tb;       /* token counts */
    size_t n, cap;
    bool binary;         /* every value is 0 or 1 */
} pairs;

static int pairs_push(pairs *p, double a, double b, qe_err *err)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        double *na = realloc(p->a, nc * sizeof *na);
        if (!na)
            return qe_err_set(err, QE_ENOMEM, "out of memory pairing samples");
        p->a = na;
        double *nb = realloc(p->b, nc * sizeof *nb);
        if (!nb)
            return qe_err_set(err, QE_ENOMEM, "out of memory pairing samples");
        p->b = nb;
        p->cap = nc;
    }
    p->a[p->n] = a;
    p->b[p->n] = b;
    p->n++;
    if (!((a == 0 || a == 1) && (b == 0 || b == 1)))
        p->binary = false;
    return 0;
}

static void pairs_free(pairs *p)
{
    free(p->a);
    free(p->b);
}

static double mean_of(const double *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    return n ? s / (double)n : NAN;
}

static int db_err(qe_store *s, qe_err *err, const char *what)
{
    return qe_err_set(err, QE_EDB, "%s: %s: %s", qe_store_path(s), what,
                      sqlite3_errmsg(qe_store_db(s)));
}

static int push_row(qe_cmp_row **rows, int *n, int *cap, const qe_cmp_row *r, qe_err *err)
{
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 16;
        qe_cmp_row *p = realloc(*rows, (size_t)nc * sizeof *p);
        if (!p)
            return qe_err_set(err, QE_ENOMEM, "out of memory in compare");
        *rows = p;
        *cap = nc;
    }
    (*rows)[*n] = *r;
    (*rows)[*n].p_adj = r->p;
    (*n)++;
    return 0;
}

static bool variant_is_reference(qe_store *s, int64_t vid)
{
    sqlite3_stmt *st;
    bool r = false;
    if (sqlite3_prepare_v2(qe_store_db(s), "SELECT is_reference FROM variants WHERE id=?", -1,
                           &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_int64(st, 1, vid);
    if (sqlite3_step(st) == SQLITE_ROW)
        r = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return r;
}

/* Sample sd of the paired differences b - a (NaN for n < 2). */
static double diff_sd(const pairs *p)
{
    if (p->n < 2)
        return NAN;
    double m = 0, ss = 0;
    for (size_t i = 0; i < p->n; i++)
        m += p->b[i] - p->a[i];
    m /= (double)p->n;
    for (size_t i = 0; i < p->n; i++) {
        double d = p->b[i] - p->a[i] - m;
        ss += d * d;
    }
    return sqrt(ss / (double)(p->n - 1));
}

static void row_init(qe_cmp_row *r, double alpha)
{
    memset(r, 0, sizeof *r);
    r->alpha = alpha;
    r->mde = INFINITY;
    r->n_rw = r->n_wr = -1;
    r->rw_lo = r->rw_hi = r->wr_lo = r->wr_hi = NAN;
    r->test = "bootstrap";
    r->gated = true;
}

const char *qe_cmp_row_unit(const qe_cmp_row *r)
{
    if (strcmp(r->metric, "ppl") == 0)
        return "%";
    if (strcmp(r->metric, "kld_mean") == 0 || strcmp(r->metric, QE_METRIC_LL_MARGIN) == 0 ||
        strcmp(r->metric, QE_METRIC_TF_FIRST_DIFF) == 0)
        return "";
    return "pt";
}

double qe_cmp_row_scale(const qe_cmp_row *r)
{
    return strcmp(qe_cmp_row_unit(r), "pt") == 0 ? 100.0 : 1.0;
}

int qe_compare_adjust(qe_cmp_row *rows, int n, int method, qe_err *err)
{
    if (n <= 0)
        return 0;
    double *p = malloc((size_t)n * sizeof *p);
    if (!p)
        return qe_err_set(err, QE_ENOMEM, "out of memory adjusting p-values");
    for (int i = 0; i < n; i++)
        p[i] = rows[i].p;
    int rc = qe_stats_adjust_p(p, (size_t)n, (qe_adjust)method, p, err);
    for (int i = 0; !rc && i < n; i++)
        rows[i].p_adj = p[i];
    free(p);
    return rc;
}

int qe_compare_variants(qe_store *s, int64_t base_vid, int64_t cand_vid, double alpha,
                        qe_cmp_row **rows, int *n_rows, qe_err *err)
{
    sqlite3 *db = qe_store_db(s);
    sqlite3_stmt *grp = NULL, *st = NULL;
    int rc = 0, cap = 0;
    *rows = NULL;
    *n_rows = 0;
    bool base_is_ref = variant_is_reference(s, base_vid);
    /* 1. sample metrics present in both variants */
    if (sqlite3_prepare_v2(db,
                           "SELECT DISTINCT a.task_id, a.metric, t.name, t.family FROM samples a"
                           " JOIN tasks t ON t.id = a.task_id WHERE a.variant_id = ?1 AND EXISTS"
                           " (SELECT 1 FROM samples b WHERE b.variant_id = ?2 AND b.task_id ="
                           " a.task_id AND b.metric = a.metric) ORDER BY a.task_id, a.metric",
                           -1, &grp, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "listing shared tasks");
        goto out;
    }
    sqlite3_bind_int64(grp, 1, base_vid);
    sqlite3_bind_int64(grp, 2, cand_vid);
    if (sqlite3_prepare_v2(db,
                           "SELECT a.value, a.n_tokens, b.value, b.n_tokens FROM samples a JOIN"
                           " samples b ON b.task_id = a.task_id AND b.item = a.item AND b.metric ="
                           " a.metric WHERE a.variant_id = ?1 AND b.variant_id = ?2 AND a.task_id"
                           " = ?3 AND a.metric = ?4 ORDER BY a.item",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "preparing pairs");
        goto out;
    }
    while (sqlite3_step(grp) == SQLITE_ROW) {
        int64_t tid = sqlite3_column_int64(grp, 0);
        const char *metric = (const char *)sqlite3_column_text(grp, 1);
        qe_cmp_row r;
        row_init(&r, alpha);
        qe_strlcpy(r.task, (const char *)sqlite3_column_text(grp, 2), sizeof r.task);
        qe_strlcpy(r.family, (const char *)sqlite3_column_text(grp, 3), sizeof r.family);
        bool is_nll = strcmp(metric, "nll") == 0;
        /* per-item measures in their own units, not accuracies: no threshold */
        bool is_margin = strcmp(metric, QE_METRIC_LL_MARGIN) == 0 ||
                         strcmp(metric, QE_METRIC_TF_FIRST_DIFF) == 0;
        pairs p = {.binary = true};
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, base_vid);
        sqlite3_bind_int64(st, 2, cand_vid);
        sqlite3_bind_int64(st, 3, tid);
        sqlite3_bind_text(st, 4, metric, -1, SQLITE_TRANSIENT);
        while (sqlite3_step(st) == SQLITE_ROW) {
            double va = sqlite3_column_double(st, 0), vb = sqlite3_column_double(st, 2);
            double na = (double)sqlite3_column_int64(st, 1), nb = (double)sqlite3_column_int64(st, 3);
            if (is_nll) {
                if (na <= 0 || nb <= 0)
                    continue;
                p.wa += va, p.wb += vb, p.ta += na, p.tb += nb;
                va /= na, vb /= nb;
            }
            if ((rc = pairs_push(&p, va, vb, err))) {
                pairs_free(&p);
                goto out;
            }
        }
        if (p.n == 0) {
            pairs_free(&p);
            continue;
        }
        r.n = (int64_t)p.n;
        qe_paired pr;
        if (is_nll) {
            qe_strlcpy(r.metric, "ppl", sizeof r.metric);
            rc = qe_stats_paired_bootstrap(p.a, p.b, p.n, N_RESAMPLES, BOOT_SEED, &pr, err);
            if (rc) {
                pairs_free(&p);
                goto out;
            }
            r.base = exp(p.wa / p.ta);
            r.cand = exp(p.wb / p.tb);
            r.delta = 100.0 * (r.cand / r.base - 1.0);
            r.lo = 100.0 * expm1(pr.lo);
            r.hi = 100.0 * expm1(pr.hi);
            r.p = pr.p;
            r.higher_is_better = false;
            /* the MDE of the per-item mean NLL difference, as a PPL ratio */
            r.mde = 100.0 * expm1(qe_stats_mde_paired(p.n, diff_sd(&p), alpha, QE_REPORT_POWER));
        } else if (is_margin) {
            qe_strlcpy(r.metric, metric, sizeof r.metric);
            rc = qe_stats_paired_bootstrap(p.a, p.b, p.n, N_RESAMPLES, BOOT_SEED, &pr, err);
            if (rc) {
                pairs_free(&p);
                goto out;
            }
            r.base = mean_of(p.a, p.n);
            r.cand = mean_of(p.b, p.n);
            r.delta = pr.delta;
            r.lo = pr.lo;
            r.hi = pr.hi;
            r.p = pr.p;
            r.higher_is_better = true;
            r.gated = false;
            r.mde = qe_stats_mde_paired(p.n, diff_sd(&p), alpha, QE_REPORT_POWER);
        } else {
            qe_strlcpy(r.metric, metric, sizeof r.metric);
            double sa = 0, sb = 0;
            for (size_t i = 0; i < p.n; i++)
                sa += p.a[i], sb += p.b[i];
            r.base = sa / (double)p.n;
            r.cand = sb / (double)p.n;
            if (p.binary) {
                unsigned char *oa = malloc(p.n), *ob = malloc(p.n);
                if (!oa || !ob) {
                    free(oa), free(ob), pairs_free(&p);
                    rc = qe_err_set(err, QE_ENOMEM, "out of memory in compare");
                    goto out;
                }
                r.n_rw = r.n_wr = 0;
                for (size_t i = 0; i < p.n; i++) {
                    oa[i] = p.a[i] != 0, ob[i] = p.b[i] != 0;
                    r.n_rw += oa[i] && !ob[i];
                    r.n_wr += !oa[i] && ob[i];
                }
                qe_stats_paired_acc(oa, ob, p.n, &pr);
                free(oa), free(ob);
                qe_stats_wilson((size_t)r.n_rw, p.n, 1.96, &r.rw_lo, &r.rw_hi);
                qe_stats_wilson((size_t)r.n_wr, p.n, 1.96, &r.wr_lo, &r.wr_hi);
                r.test = "McNemar";
                r.mde = 100.0 * qe_stats_mde_mcnemar(p.n, (size_t)(r.n_rw + r.n_wr), alpha,
                                                     QE_REPORT_POWER);
            } else if ((rc = qe_stats_paired_bootstrap(p.a, p.b, p.n, N_RESAMPLES, BOOT_SEED, &pr,
                                                       err))) {
                pairs_free(&p);
                goto out;
            }
            r.delta = 100.0 * (r.cand - r.base);
            r.lo = 100.0 * pr.lo;
            r.hi = 100.0 * pr.hi;
            if (p.binary) { /* closed-form paired 95 % interval */
                r.lo = r.delta - 196.0 * pr.se;
                r.hi = r.delta + 196.0 * pr.se;
            } else {
                r.mde = 100.0 * qe_stats_mde_paired(p.n, diff_sd(&p), alpha, QE_REPORT_POWER);
            }
            r.p = pr.p;
            r.higher_is_better = true;
        }
        pairs_free(&p);
        if ((rc = push_row(rows, n_rows, &cap, &r, err)))
            goto out;
    }
    sqlite3_finalize(grp);
    sqlite3_finalize(st);
    grp = st = NULL;
    /* 2. KLD: candidate's chunks, paired with the base's (or with 0 when the
     * base is the reference itself, whose KLD to itself is 0 by definition) */
    if (sqlite3_prepare_v2(db,
                           "SELECT DISTINCT k.task_id, t.name, t.family FROM kld k JOIN tasks t ON"
                           " t.id = k.task_id WHERE k.variant_id = ?2 AND (?3 OR EXISTS (SELECT 1"
                           " FROM kld b WHERE b.variant_id = ?1 AND b.task_id = k.task_id))"
                           " ORDER BY k.task_id",
                           -1, &grp, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT c.kld_sum, c.n_tokens, b.kld_sum, b.n_tokens FROM kld c LEFT"
                           " JOIN kld b ON b.variant_id = ?1 AND b.task_id = c.task_id AND b.item"
                           " = c.item WHERE c.variant_id = ?2 AND c.task_id = ?3 ORDER BY c.item",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "preparing kld pairs");
        goto out;
    }
    sqlite3_bind_int64(grp, 1, base_vid);
    sqlite3_bind_int64(grp, 2, cand_vid);
    sqlite3_bind_int(grp, 3, base_is_ref);
    while (sqlite3_step(grp) == SQLITE_ROW) {
        int64_t tid = sqlite3_column_int64(grp, 0);
        qe_cmp_row r;
        row_init(&r, alpha);
        qe_strlcpy(r.task, (const char *)sqlite3_column_text(grp, 1), sizeof r.task);
        qe_strlcpy(r.family, (const char *)sqlite3_column_text(grp, 2), sizeof r.family);
        qe_strlcpy(r.metric, "kld_mean", sizeof r.metric);
        pairs p = {0};
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, base_vid);
        sqlite3_bind_int64(st, 2, cand_vid);
        sqlite3_bind_int64(st, 3, tid);
        while (sqlite3_step(st) == SQLITE_ROW) {
            double cs = sqlite3_column_double(st, 0), cn = (double)sqlite3_column_int64(st, 1);
            bool has_b = sqlite3_column_type(st, 2) != SQLITE_NULL;
            if (!has_b && !base_is_ref)
                continue;
            double bs = has_b ? sqlite3_column_double(st, 2) : 0;
            double bn = has_b ? (double)sqlite3_column_int64(st, 3) : cn;
            if (cn <= 0 || bn <= 0)
                continue;
            p.wa += bs, p.ta += bn, p.wb += cs, p.tb += cn;
            if ((rc = pairs_push(&p, bs / bn, cs / cn, err))) {
                pairs_free(&p);
                goto out;
            }
        }
        if (p.n) {
            qe_paired pr;
            rc = qe_stats_paired_bootstrap(p.a, p.b, p.n, N_RESAMPLES, BOOT_SEED, &pr, err);
            if (rc) {
                pairs_free(&p);
                goto out;
            }
            r.n = (int64_t)p.n;
            r.base = p.wa / p.ta;
            r.cand = p.wb / p.tb;
            r.delta = r.cand - r.base;
            r.lo = pr.lo;
            r.hi = pr.hi;
            r.p = pr.p;
            r.higher_is_better = false;
            r.mde = qe_stats_mde_paired(p.n, diff_sd(&p), alpha, QE_REPORT_POWER);
            rc = push_row(rows, n_rows, &cap, &r, err);
        }
        pairs_free(&p);
        if (rc)
            goto out;
    }
out:
    sqlite3_finalize(grp);
    sqlite3_finalize(st);
    if (rc) {
        free(*rows);
        *rows = NULL;
        *n_rows = 0;
    }
    return rc;
}

int qe_report_parse_ref(qe_store *s, const char *ref, int64_t *run_id, int64_t *variant_id,
                        qe_err *err)
{
    char buf[256];
    if (qe_strlcpy(buf, ref, sizeof buf) >= sizeof buf)
        return qe_err_set(err, QE_EINVAL, "reference '%.40s...' is too long", ref);
    char *colon = strchr(buf, ':');
    *variant_id = -1;
    if (colon)
        *colon = '\0';
    int rc = qe_store_find_run(s, buf, run_id, err);
    if (rc)
        return rc;
    if (colon && colon[1])
        return qe_store_find_variant(s, *run_id, colon + 1, variant_id, err);
    return 0;
}

int qe_report_db_exists(const char *path, qe_err *err)
{
    if (access(path, F_OK) != 0)
        return qe_err_set(err, QE_ENOTFOUND,
                          "%s: no such results database (write one with qeval run, or pass --db)",
                          path);
    return 0;
}

/* ----------------------------------------------------------------- gate */

void qe_gate_opts_default(qe_gate_opts *o)
{
    o->max_ppl_increase_pct = 1.0;
    o->max_kld_increase = 0.02;
    o->max_acc_drop_pts = 2.0;
    o->alpha = 0.05;
    o->max_flips_pct = NAN;
    o->adjust = QE_ADJUST_HOLM;
}

int qe_gate_opts_load(qe_gate_opts *o, const char *path, qe_err *err)
{
    char *text = NULL;
    size_t n = 0;
    int rc = qe_read_file(path, &text, &n, err);
    if (rc)
        return rc;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return qe_err_set(err, QE_EJSON, "%s: expected a JSON object of thresholds", path);
    }
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"max_ppl_increase", offsetof(qe_gate_opts, max_ppl_increase_pct)},
        {"max_kld", offsetof(qe_gate_opts, max_kld_increase)},
        {"max_acc_drop", offsetof(qe_gate_opts, max_acc_drop_pts)},
        {"alpha", offsetof(qe_gate_opts, alpha)},
        {"max_flips", offsetof(qe_gate_opts, max_flips_pct)},
    };
    rc = 0;
    for (cJSON *it = j->child; it && !rc; it = it->next) {
        size_t k = 0;
        for (; k < sizeof keys / sizeof keys[0]; k++)
            if (strcmp(it->string, keys[k].key) == 0)
                break;
        if (k == sizeof keys / sizeof keys[0])
            rc = qe_err_set(err, QE_EJSON,
                            "%s: unknown key '%s' (expected max_ppl_increase, max_kld, "
                            "max_acc_drop, alpha, max_flips)",
                            path, it->string);
        else if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0)
            rc = qe_err_set(err, QE_EJSON, "%s: '%s': expected a non-negative number", path,
                            it->string);
        else
            *(double *)((char *)o + keys[k].off) = it->valuedouble;
    }
    cJSON_Delete(j);
    return rc;
}

static void variant_label(qe_store *s, int64_t vid, char *out, size_t n)
{
    sqlite3_stmt *st;
    snprintf(out, n, "variant %lld", (long long)vid);
    if (sqlite3_prepare_v2(qe_store_db(s), "SELECT run_id, name FROM variants WHERE id=?", -1, &st,
                           NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, vid);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(out, n, "%lld:%s", (long long)sqlite3_column_int64(st, 0),
                 (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
}

/* P(X >= k), X ~ Binomial(n, q): the one-sided exact test that a share
 * k/n exceeds q. */
static double binom_upper(int64_t k, int64_t n, double q)
{
    if (k <= 0)
        return 1;
    if (q <= 0)
        return 0;
    if (q >= 1)
        return 1;
    double lfn = lgamma((double)n + 1), lq = log(q), l1q = log1p(-q), s = 0;
    for (int64_t i = k; i <= n; i++)
        s += exp(lfn - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) + (double)i * lq +
                 (double)(n - i) * l1q);
    return s > 1 ? 1 : s;
}

/* One gate check: a compare row against one threshold. */
typedef struct gate_check {
    int pair;
    qe_cmp_row r;
    bool flips;          /* the flip check of an accuracy row */
    double worse, thr, p, p_adj;
    const char *unit;
} gate_check;

int qe_gate_check(qe_store *s, const int64_t *base_vid, const int64_t *cand_vid, int n_pairs,
                  const qe_gate_opts *o, FILE *out, int *n_regressions, qe_err *err)
{
    *n_regressions = 0;
    gate_check *ck = NULL;
    int n_ck = 0, cap = 0, rc = 0;
    int *pair_rows = calloc((size_t)(n_pairs > 0 ? n_pairs : 1), sizeof *pair_rows);
    if (!pair_rows)
        return qe_err_set(err, QE_ENOMEM, "out of memory in gate");
    bool flips_on = isfinite(o->max_flips_pct);
    for (int i = 0; i < n_pairs && !rc; i++) {
        qe_cmp_row *rows = NULL;
        int n = 0;
        if ((rc = qe_compare_variants(s, base_vid[i], cand_vid[i], o->alpha, &rows, &n, err)))
            break;
        for (int k = 0; k < n && !rc; k++) {
            const qe_cmp_row *r = &rows[k];
            if (!r->gated)
                continue;
            for (int f = 0; f < 1 + (flips_on && r->n_rw >= 0); f++) {
                if (n_ck == cap) {
                    int nc = cap ? 2 * cap : 32;
                    gate_check *ncp = realloc(ck, (size_t)nc * sizeof *ncp);
                    if (!ncp) {
                        rc = qe_err_set(err, QE_ENOMEM, "out of memory in gate");
                        break;
                    }
                    ck = ncp, cap = nc;
                }
                gate_check *c = &ck[n_ck++];
                memset(c, 0, sizeof *c);
                c->pair = i;
                c->r = *r;
                c->flips = f == 1;
                if (c->flips) {
                    c->worse = 100.0 * (double)r->n_rw / (double)r->n;
                    c->thr = o->max_flips_pct;
                    c->unit = "% right->wrong";
                    c->p = binom_upper(r->n_rw, r->n, o->max_flips_pct / 100.0);
                } else {
                    if (strcmp(r->metric, "ppl") == 0)
                        c->worse = r->delta, c->thr = o->max_ppl_increase_pct, c->unit = "%";
                    else if (strcmp(r->metric, "kld_mean") == 0)
                        c->worse = r->delta, c->thr = o->max_kld_increase, c->unit = " nats";
                    else
                        c->worse = -r->delta, c->thr = o->max_acc_drop_pts, c->unit = " pts";
                    c->p = r->p;
                }
                if (c->worse == 0)
                    c->worse = 0; /* print "+0", never "-0" */
                pair_rows[i]++;
            }
        }
        free(rows);
    }
    if (!rc && n_ck == 0)
        rc = qe_err_set(err, QE_ENOTFOUND,
                        "%s: the baseline and candidate share no task results to compare",
                        qe_store_path(s));
    double *p = rc ? NULL : malloc((size_t)n_ck * sizeof *p);
    if (!rc && !p)
        rc = qe_err_set(err, QE_ENOMEM, "out of memory in gate");
    for (int k = 0; !rc && k < n_ck; k++)
        p[k] = ck[k].p;
    if (!rc)
        rc = qe_stats_adjust_p(p, (size_t)n_ck, (qe_adjust)o->adjust, p, err);
    if (rc)
        goto out;
    for (int k = 0; k < n_ck; k++)
        ck[k].p_adj = p[k];
    char flips[64] = "";
    if (flips_on)
        snprintf(flips, sizeof flips, ", flips %.3g%% right->wrong", o->max_flips_pct);
    fprintf(out,
            "gate: thresholds: PPL +%.3g%%, KLD +%.3g nats over baseline, accuracy -%.3g pts%s; "
            "a regression must also be significant (adjusted p < %.3g)\n"
            "gate: multiple comparisons: %s over the %d checks; MDE = minimal detectable "
            "effect at %.0f%% power\n",
            o->max_ppl_increase_pct, o->max_kld_increase, o->max_acc_drop_pts, flips, o->alpha,
            qe_stats_adjust_name((qe_adjust)o->adjust), n_ck, 100 * QE_REPORT_POWER);
    for (int k = 0; k < n_ck; k++) {
        const gate_check *c = &ck[k];
        if (k == 0 || ck[k - 1].pair != c->pair) {
            char bl[128], cl[128];
            variant_label(s, base_vid[c->pair], bl, sizeof bl);
            variant_label(s, cand_vid[c->pair], cl, sizeof cl);
            fprintf(out, "%s vs baseline %s: %d shared checks\n", cl, bl, pair_rows[c->pair]);
        }
        bool beyond = c->worse > c->thr, signif = c->p_adj < o->alpha;
        bool reg = beyond && signif;
        *n_regressions += reg;
        char metric[48], mde[48];
        snprintf(metric, sizeof metric, "%s%s", c->r.metric, c->flips ? " flips" : "");
        if (c->flips)
            snprintf(mde, sizeof mde, "flips %lld/%lld", (long long)c->r.n_rw,
                     (long long)c->r.n);
        else if (isfinite(c->r.mde))
            snprintf(mde, sizeof mde, "MDE %.3g%s", c->r.mde, c->unit);
        else
            snprintf(mde, sizeof mde, "MDE - (too few items)");
        fprintf(out, "  %-10s %-24s %-26s base %-10.5g cand %-10.5g worse by %+.4g%s (limit %.3g), "
                     "p=%.3g adj=%.3g, %s%s\n",
                reg ? "REGRESSION" : beyond ? "noise" : "ok", c->r.task, metric, c->r.base,
                c->r.cand, c->worse, c->unit, c->thr, c->p, c->p_adj, mde,
                reg ? "" : beyond ? " (beyond threshold but not significant)" : "");
    }
    fprintf(out, "gate: %s (%d regression%s in %d checks)\n",
            *n_regressions ? "FAIL" : "PASS", *n_regressions, *n_regressions == 1 ? "" : "s",
            n_ck);
out:
    free(p);
    free(ck);
    free(pair_rows);
    return rc;
}

/* -------------------------------------------------------------- history */

int qe_history_print(qe_store *s, const char *model, const char *variant, const char *metric,
                     const char *task, FILE *out, int *n_points, qe_err *err)
{
    sqlite3_stmt *st;
    *n_points = 0;
    /* per run, the first task (lowest id) carrying the metric, unless given */
    if (sqlite3_prepare_v2(
            qe_store_db(s),
            "SELECT x.created_at, x.run_id, x.label, x.git_rev, x.task, x.value, x.stderr, x.n"
            " FROM v_results x WHERE (x.model_name = ?1 OR (length(?1) >= 6 AND"
            " substr(x.model_sha256, 1, length(?1)) = lower(?1))) AND x.variant = ?2 COLLATE NOCASE"
            " AND x.metric = ?3 AND (?4 IS NULL AND x.task_id = (SELECT min(y.task_id) FROM"
            " v_results y WHERE y.run_id = x.run_id AND y.variant_id = x.variant_id AND y.metric ="
            " ?3) OR x.task = ?4) ORDER BY x.created_at, x.run_id",
            -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing history");
    sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, variant, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, metric, -1, SQLITE_TRANSIENT);
    if (task)
        sqlite3_bind_text(st, 4, task, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 4);
    fprintf(out, "%-20s %5s %-16s %-12s %-20s %14s %12s %8s\n", "date", "run", "label", "git",
            "task", metric, "stderr", "n");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *col[5];
        for (int c = 0; c < 5; c++) {
            col[c] = (const char *)sqlite3_column_text(st, c);
            if (!col[c])
                col[c] = "";
        }
        char val[32] = "-", se[32] = "-";
        if (sqlite3_column_type(st, 5) != SQLITE_NULL)
            snprintf(val, sizeof val, "%.6g", sqlite3_column_double(st, 5));
        if (sqlite3_column_type(st, 6) != SQLITE_NULL)
            snprintf(se, sizeof se, "%.3g", sqlite3_column_double(st, 6));
        fprintf(out, "%-20s %5s %-16s %-12s %-20s %14s %12s %8lld\n", col[0], col[1],
                col[2][0] ? col[2] : "-", col[3], col[4], val, se,
                (long long)sqlite3_column_int64(st, 7));
        (*n_points)++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(s, err, "reading history");
    return 0;
}
