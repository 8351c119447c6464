/*
 * report.c: the run summary (one row per variant, paired against the
 * reference) and its renderings: terminal table, Markdown, self-contained
 * HTML with inline SVG charts, JSON and a model-card block.
 *
 * Every number printed comes from qe_report_load, which reads the results
 * table (aggregated by harness/store) and pairs samples for significance;
 * the formats only differ in layout, so they agree with each other and
 * with the database by construction.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/eval/stats.h"
#include "report.h"

const char *const qe_report_family_names[QE_FAM_COUNT] = {"text", "math", "code", "multilingual",
                                                          "general"};

static int db_err(qe_store *s, qe_err *err, const char *what)
{
    return qe_err_set(err, QE_EDB, "%s: %s: %s", qe_store_path(s), what,
                      sqlite3_errmsg(qe_store_db(s)));
}

static void col_text(sqlite3_stmt *st, int c, char *dst, size_t n)
{
    const char *t = (const char *)sqlite3_column_text(st, c);
    qe_strlcpy(dst, t ? t : "", n);
}

static double col_num(sqlite3_stmt *st, int c)
{
    return sqlite3_column_type(st, c) == SQLITE_NULL ? NAN : sqlite3_column_double(st, c);
}

void qe_report_data_free(qe_report_data *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n_variants; i++) {
        free(d->variants[i].lang_dppl);
        free(d->variants[i].rows);
    }
    free(d->variants);
    free(d->langs);
    free(d);
}

/* A result value of (variant, task, metric); NaN if absent. */
static double result(qe_store *s, int64_t vid, int64_t tid, const char *metric, double *se)
{
    sqlite3_stmt *st;
    double v = NAN;
    if (se)
        *se = NAN;
    if (sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT value, stderr FROM results WHERE variant_id=? AND task_id=? AND"
                           " metric=?",
                           -1, &st, NULL) != SQLITE_OK)
        return NAN;
    sqlite3_bind_int64(st, 1, vid);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_text(st, 3, metric, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = col_num(st, 0);
        if (se)
            *se = col_num(st, 1);
    }
    sqlite3_finalize(st);
    return v;
}

/* Pooled primary-metric accuracy of a family: own items for the value and
 * Wilson interval; items paired with the reference for delta and p. */
static int family_acc(qe_store *s, int64_t vid, int64_t ref_vid, const char *family,
                      qe_fam_acc *fa, qe_err *err)
{
    sqlite3 *db = qe_store_db(s);
    sqlite3_stmt *st;
    memset(fa, 0, sizeof *fa);
    fa->delta = NAN;
    fa->p = NAN;
    fa->p_adj = NAN;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*), sum(s.value) FROM samples s JOIN tasks t ON t.id ="
                           " s.task_id WHERE s.variant_id=? AND t.family=? AND s.metric=t.metric"
                           " AND t.metric <> 'nll'",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "family accuracy");
    sqlite3_bind_int64(st, 1, vid);
    sqlite3_bind_text(st, 2, family, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        fa->n = sqlite3_column_int64(st, 0);
    double sum = sqlite3_column_double(st, 1);
    sqlite3_finalize(st);
    if (fa->n == 0)
        return 0;
    fa->present = true;
    fa->acc = sum / (double)fa->n;
    double k = round(sum);
    qe_stats_wilson((size_t)(k < 0 ? 0 : k), (size_t)fa->n, 1.96, &fa->lo, &fa->hi);
    if (ref_vid < 0)
        return 0;
    if (ref_vid == vid) {
        fa->delta = 0;
        fa->p = 1;
        return 0;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT a.value, b.value FROM samples a JOIN samples b ON b.task_id ="
                           " a.task_id AND b.item = a.item AND b.metric = a.metric JOIN tasks t ON"
                           " t.id = a.task_id WHERE a.variant_id=? AND b.variant_id=? AND"
                           " t.family=? AND a.metric = t.metric AND t.metric <> 'nll'"
                           " ORDER BY a.task_id, a.item",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "family pairs");
    sqlite3_bind_int64(st, 1, ref_vid);
    sqlite3_bind_int64(st, 2, vid);
    sqlite3_bind_text(st, 3, family, -1, SQLITE_STATIC);
    size_t n = 0, cap = 0;
    double *a = NULL, *b = NULL;
    bool binary = true;
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            double *na = realloc(a, cap * sizeof *na), *nb;
            if (!na) {
                rc = qe_err_set(err, QE_ENOMEM, "out of memory pairing %s items", family);
                goto out;
            }
            a = na;
            if (!(nb = realloc(b, cap * sizeof *nb))) {
                rc = qe_err_set(err, QE_ENOMEM, "out of memory pairing %s items", family);
                goto out;
            }
            b = nb;
        }
        a[n] = sqlite3_column_double(st, 0);
        b[n] = sqlite3_column_double(st, 1);
        if (!((a[n] == 0 || a[n] == 1) && (b[n] == 0 || b[n] == 1)))
            binary = false;
        n++;
    }
    if (n) {
        qe_paired pr;
        if (binary) {
            unsigned char *oa = malloc(n), *ob = malloc(n);
            if (!oa || !ob) {
                free(oa), free(ob);
                rc = qe_err_set(err, QE_ENOMEM, "out of memory pairing %s items", family);
                goto out;
            }
            for (size_t i = 0; i < n; i++)
                oa[i] = a[i] != 0, ob[i] = b[i] != 0;
            qe_stats_paired_acc(oa, ob, n, &pr);
            free(oa), free(ob);
        } else if ((rc = qe_stats_paired_bootstrap(a, b, n, 2000, 42, &pr, err))) {
            goto out;
        }
        fa->delta = pr.delta;
        fa->p = pr.p;
    }
out:
    free(a);
    free(b);
    sqlite3_finalize(st);
    return rc;
}

/* Flips of v against the reference over the primary 0/1 metric of every
 * accuracy task (both outcomes 0 or 1). */
static int pooled_flips(qe_store *s, int64_t ref_vid, qe_report_variant *v, qe_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT count(*), total(a.value = 1 AND b.value = 0), total(a.value = 0"
                           " AND b.value = 1) FROM samples a JOIN samples b ON b.task_id ="
                           " a.task_id AND b.item = a.item AND b.metric = a.metric JOIN tasks t ON"
                           " t.id = a.task_id WHERE a.variant_id = ? AND b.variant_id = ? AND"
                           " a.metric = t.metric AND t.metric <> 'nll' AND a.value IN (0, 1) AND"
                           " b.value IN (0, 1)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "pooled flips");
    sqlite3_bind_int64(st, 1, ref_vid);
    sqlite3_bind_int64(st, 2, v->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v->flip_n = sqlite3_column_int64(st, 0);
        v->flip_rw = (int64_t)sqlite3_column_double(st, 1);
        v->flip_wr = (int64_t)sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    return 0;
}

/* Teacher-forced divergence of v per family (kld rows of accuracy tasks). */
static int teacher_forced(qe_store *s, qe_report_variant *v, qe_err *err)
{
    sqlite3_stmt *st;
    for (int f = 0; f < QE_FAM_COUNT; f++)
        v->tf_kld[f] = v->tf_top1[f] = v->tf_first[f] = NAN;
    if (sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT t.family, count(*), total(k.n_tokens), total(k.kld_sum),"
                           " total(k.top1_same), (SELECT avg(x.value) FROM samples x JOIN tasks y"
                           " ON y.id = x.task_id WHERE x.variant_id = k.variant_id AND y.family ="
                           " t.family AND x.metric = '" QE_METRIC_TF_FIRST_DIFF "')"
                           " FROM kld k JOIN tasks t ON t.id = k.task_id WHERE k.variant_id = ?"
                           " AND t.metric <> 'nll' GROUP BY t.family",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "teacher-forced divergence");
    sqlite3_bind_int64(st, 1, v->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *fam = (const char *)sqlite3_column_text(st, 0);
        for (int f = 0; fam && f < QE_FAM_COUNT; f++) {
            if (strcmp(fam, qe_report_family_names[f]))
                continue;
            double ntok = sqlite3_column_double(st, 2);
            v->tf_items[f] = sqlite3_column_int64(st, 1);
            v->tf_tokens[f] = (int64_t)ntok;
            v->tf_kld[f] = ntok > 0 ? sqlite3_column_double(st, 3) / ntok : NAN;
            v->tf_top1[f] = ntok > 0 ? sqlite3_column_double(st, 4) / ntok : NAN;
            v->tf_first[f] = col_num(st, 5);
        }
    }
    sqlite3_finalize(st);
    return 0;
}

static int cmp_variant(const void *pa, const void *pb)
{
    const qe_report_variant *a = pa, *b = pb;
    if (a->is_reference != b->is_reference)
        return a->is_reference ? -1 : 1;
    double x = isnan(a->bpw) ? -1 : a->bpw, y = isnan(b->bpw) ? -1 : b->bpw;
    if (x != y)
        return x > y ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

int qe_report_load(qe_store *s, int64_t run_id, qe_report_data **out, qe_err *err)
{
    sqlite3 *db = qe_store_db(s);
    sqlite3_stmt *st = NULL;
    int rc = 0;
    int64_t main_tid = -1;
    qe_report_data *d = calloc(1, sizeof *d);
    *out = NULL;
    if (!d)
        return qe_err_set(err, QE_ENOMEM, "out of memory loading report");
    d->run_id = run_id;
    d->ref_index = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT run_key,label,model_name,model_sha256,tool_version,git_rev,host,"
                           "created_at,imatrix_sha256,suite,threads FROM runs WHERE id=?",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "reading run");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = qe_err_set(err, QE_ENOTFOUND, "%s: no run with id %lld", qe_store_path(s),
                        (long long)run_id);
        goto fail;
    }
    col_text(st, 0, d->run_key, sizeof d->run_key);
    col_text(st, 1, d->label, sizeof d->label);
    col_text(st, 2, d->model_name, sizeof d->model_name);
    col_text(st, 3, d->model_sha256, sizeof d->model_sha256);
    col_text(st, 4, d->tool_version, sizeof d->tool_version);
    col_text(st, 5, d->git_rev, sizeof d->git_rev);
    col_text(st, 6, d->host, sizeof d->host);
    col_text(st, 7, d->created_at, sizeof d->created_at);
    col_text(st, 8, d->imatrix_sha256, sizeof d->imatrix_sha256);
    col_text(st, 9, d->suite, sizeof d->suite);
    d->threads = sqlite3_column_int(st, 10);
    sqlite3_finalize(st);
    st = NULL;

    /* main text task: nll samples; the run's llama.cpp-protocol text (the
     * one with KLD) first, then family text, English, oldest */
    if (sqlite3_prepare_v2(db,
                           "SELECT t.id, t.name, t.protocol FROM tasks t WHERE t.metric='nll' AND"
                           " EXISTS (SELECT 1 FROM samples s JOIN variants v ON v.id=s.variant_id"
                           " WHERE v.run_id=?1 AND s.task_id=t.id) ORDER BY (t.protocol LIKE 'llama.cpp-ppl%')"
                           " DESC, (t.family='text')"
                           " DESC, (t.language IN ('', 'en')) DESC, t.id LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "finding the main task");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        main_tid = sqlite3_column_int64(st, 0);
        col_text(st, 1, d->main_task, sizeof d->main_task);
        col_text(st, 2, d->main_protocol, sizeof d->main_protocol);
    }
    sqlite3_finalize(st);
    st = NULL;

    /* languages with a ppl task in this run */
    if (sqlite3_prepare_v2(db,
                           "SELECT DISTINCT t.language FROM tasks t WHERE t.metric='nll' AND"
                           " t.language <> '' AND EXISTS (SELECT 1 FROM results x JOIN variants v"
                           " ON v.id=x.variant_id WHERE v.run_id=?1 AND x.task_id=t.id) ORDER BY"
                           " t.language",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "listing languages");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, run_id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char(*nl)[16] = realloc(d->langs, (size_t)(d->n_lang + 1) * sizeof *nl);
        if (!nl) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory loading report");
            goto fail;
        }
        d->langs = nl;
        col_text(st, 0, d->langs[d->n_lang], sizeof d->langs[0]);
        d->n_lang++;
    }
    sqlite3_finalize(st);
    st = NULL;

    if (sqlite3_prepare_v2(db,
                           "SELECT id, name, is_reference, bpw, size_nbytes FROM variants WHERE"
                           " run_id=? ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "reading variants");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, run_id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        qe_report_variant *nv =
            realloc(d->variants, (size_t)(d->n_variants + 1) * sizeof *nv);
        if (!nv) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory loading report");
            goto fail;
        }
        d->variants = nv;
        qe_report_variant *v = &d->variants[d->n_variants++];
        memset(v, 0, sizeof *v);
        v->id = sqlite3_column_int64(st, 0);
        col_text(st, 1, v->name, sizeof v->name);
        v->is_reference = sqlite3_column_int(st, 2) != 0;
        v->bpw = col_num(st, 3);
        v->size_nbytes = (uint64_t)sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (d->n_variants)
        qsort(d->variants, (size_t)d->n_variants, sizeof *d->variants, cmp_variant);
    if (d->n_variants && d->variants[0].is_reference)
        d->ref_index = 0;
    int64_t ref_vid = d->ref_index >= 0 ? d->variants[0].id : -1;
    double ref_ppl = NAN;

    for (int i = 0; i < d->n_variants; i++) {
        qe_report_variant *v = &d->variants[i];
        v->ppl = v->ppl_se = v->dppl_pct = v->dppl_p = NAN;
        v->kld_mean = v->kld_se = v->kld_p99 = v->top1 = NAN;
        if (main_tid >= 0) {
            v->ppl = result(s, v->id, main_tid, "ppl", &v->ppl_se);
            v->kld_mean = result(s, v->id, main_tid, "kld_mean", &v->kld_se);
            v->kld_p99 = result(s, v->id, main_tid, "kld_p99", NULL);
            v->top1 = result(s, v->id, main_tid, "top1", NULL);
            if (v->is_reference) {
                ref_ppl = v->ppl;
                v->dppl_pct = 0;
                v->dppl_p = 1;
            }
        }
        if (ref_vid >= 0 && !v->is_reference) {
            if ((rc = qe_compare_variants(s, ref_vid, v->id, 0.05, &v->rows, &v->n_rows, err)))
                goto fail;
            for (int k = 0; main_tid >= 0 && k < v->n_rows; k++)
                if (strcmp(v->rows[k].metric, "ppl") == 0 &&
                    strcmp(v->rows[k].task, d->main_task) == 0)
                    v->dppl_p = v->rows[k].p;
            if (!isnan(ref_ppl) && !isnan(v->ppl))
                v->dppl_pct = 100.0 * (v->ppl / ref_ppl - 1.0);
            if ((rc = pooled_flips(s, ref_vid, v, err)))
                goto fail;
        }
        if ((rc = teacher_forced(s, v, err)))
            goto fail;
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if ((rc = family_acc(s, v->id, ref_vid, qe_report_family_names[f], &v->fam[f], err)))
                goto fail;
        if (d->n_lang) {
            v->lang_dppl = malloc((size_t)d->n_lang * sizeof *v->lang_dppl);
            if (!v->lang_dppl) {
                rc = qe_err_set(err, QE_ENOMEM, "out of memory loading report");
                goto fail;
            }
            for (int l = 0; l < d->n_lang; l++) {
                v->lang_dppl[l] = NAN;
                if (ref_vid < 0)
                    continue;
                if (sqlite3_prepare_v2(db,
                                       "SELECT c.value / r.value FROM results c JOIN results r ON"
                                       " r.task_id = c.task_id AND r.metric = c.metric JOIN tasks"
                                       " t ON t.id = c.task_id WHERE c.variant_id=? AND"
                                       " r.variant_id=? AND c.metric='ppl' AND t.language=?"
                                       " ORDER BY t.id LIMIT 1",
                                       -1, &st, NULL) != SQLITE_OK) {
                    rc = db_err(s, err, "per-language ppl");
                    goto fail;
                }
                sqlite3_bind_int64(st, 1, v->id);
                sqlite3_bind_int64(st, 2, ref_vid);
                sqlite3_bind_text(st, 3, d->langs[l], -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
                    v->lang_dppl[l] = 100.0 * (sqlite3_column_double(st, 0) - 1.0);
                sqlite3_finalize(st);
                st = NULL;
            }
        }
    }
    if ((rc = qe_report_adjust(d, QE_ADJUST_HOLM, err)))
        goto fail;
    *out = d;
    return 0;
fail:
    sqlite3_finalize(st);
    qe_report_data_free(d);
    return rc;
}

int qe_report_adjust(qe_report_data *d, int method, qe_err *err)
{
    /* family 1: the summary's markers (dPPL and family accuracy of every
     * variant); family 2: every per-task row of every variant */
    int cap = d->n_variants * (1 + QE_FAM_COUNT) + 1, m = 0, rc = 0;
    double *p = calloc((size_t)cap, sizeof *p);
    double **dst = calloc((size_t)cap, sizeof *dst);
    if (!p || !dst) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory adjusting p-values");
        goto out;
    }
    d->adjust = method;
    for (int i = 0; i < d->n_variants; i++) {
        qe_report_variant *v = &d->variants[i];
        v->dppl_p_adj = v->dppl_p;
        if (!v->is_reference && isfinite(v->dppl_p) && isfinite(v->dppl_pct))
            p[m] = v->dppl_p, dst[m++] = &v->dppl_p_adj;
        for (int f = 0; f < QE_FAM_COUNT; f++) {
            qe_fam_acc *fa = &v->fam[f];
            fa->p_adj = fa->p;
            if (fa->present && !v->is_reference && isfinite(fa->p))
                p[m] = fa->p, dst[m++] = &fa->p_adj;
        }
    }
    d->n_summary_tests = m;
    if ((rc = qe_stats_adjust_p(p, (size_t)m, (qe_adjust)method, p, err)))
        goto out;
    for (int k = 0; k < m; k++)
        *dst[k] = p[k];
    int nt = 0;
    for (int i = 0; i < d->n_variants; i++)
        nt += d->variants[i].n_rows;
    d->n_task_tests = nt;
    if (nt) {
        qe_cmp_row *all = malloc((size_t)nt * sizeof *all);
        if (!all) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory adjusting p-values");
            goto out;
        }
        int k = 0;
        for (int i = 0; i < d->n_variants; i++)
            for (int j = 0; j < d->variants[i].n_rows; j++)
                all[k++] = d->variants[i].rows[j];
        rc = qe_compare_adjust(all, nt, method, err);
        k = 0;
        for (int i = 0; !rc && i < d->n_variants; i++)
            for (int j = 0; j < d->variants[i].n_rows; j++)
                d->variants[i].rows[j].p_adj = all[k++].p_adj;
        free(all);
    }
out:
    free(p);
    free(dst);
    return rc;
}

/* ------------------------------------------------------- recommendation */

void qe_tolerance_default(qe_tolerance *t)
{
    t->max_dppl_pct = 3.0;
    t->max_kld = 0.05;
    t->max_acc_drop = 2.0;
}

static bool within(const qe_report_variant *v, const qe_tolerance *t)
{
    if (v->is_reference)
        return true;
    if (!isnan(v->dppl_pct) && v->dppl_pct > t->max_dppl_pct)
        return false;
    if (!isnan(v->kld_mean) && v->kld_mean > t->max_kld)
        return false;
    for (int f = 0; f < QE_FAM_COUNT; f++) {
        const qe_fam_acc *fa = &v->fam[f];
        if (fa->present && !isnan(fa->delta) && -100.0 * fa->delta > t->max_acc_drop &&
            fa->p_adj < 0.05)
            return false;
    }
    return true;
}

int qe_report_recommend(const qe_report_data *d, const qe_tolerance *t, uint64_t mem_budget,
                        char *why, size_t why_nbytes)
{
    int best = -1;
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        if (mem_budget) {
            if (!v->size_nbytes || v->size_nbytes > mem_budget)
                continue;
            if (best < 0) {
                best = i;
                continue;
            }
            const qe_report_variant *b = &d->variants[best];
            /* quality: reference beats all, then lower KLD, then lower PPL */
            double kv = v->is_reference ? 0 : v->kld_mean, kb = b->is_reference ? 0 : b->kld_mean;
            if ((!isnan(kv) && (isnan(kb) || kv < kb)) ||
                (isnan(kv) && isnan(kb) && v->ppl < b->ppl))
                best = i;
        } else {
            if (!within(v, t))
                continue;
            if (best < 0 || v->size_nbytes < d->variants[best].size_nbytes ||
                (v->size_nbytes == d->variants[best].size_nbytes && v->bpw < d->variants[best].bpw))
                best = i;
        }
    }
    if (mem_budget)
        snprintf(why, why_nbytes,
                 best >= 0 ? "best quality (lowest mean KLD) among variants of at most %.1f MiB"
                           : "no variant fits in %.1f MiB",
                 (double)mem_budget / 1048576.0);
    else
        snprintf(why, why_nbytes,
                 "%s within tolerance: dPPL <= +%.3g%%, mean KLD <= %.3g, no family accuracy drop "
                 "> %.3g pts with adjusted p < 0.05",
                 best >= 0 ? "smallest variant" : "no variant is", t->max_dppl_pct, t->max_kld,
                 t->max_acc_drop);
    return best;
}

/* ------------------------------------------------------------ rendering */

static const char *sig_mark(double p)
{
    return isnan(p) ? "" : p < 0.01 ? "**" : p < 0.05 ? "*" : "";
}

static void fmt_size(uint64_t n, char *out, size_t len)
{
    if (n >= 1073741824ull)
        snprintf(out, len, "%.2f GiB", (double)n / 1073741824.0);
    else if (n >= 1048576ull)
        snprintf(out, len, "%.2f MiB", (double)n / 1048576.0);
    else
        snprintf(out, len, "%.1f KiB", (double)n / 1024.0);
}

/* v with `decimals` decimals and an optional suffix, "-" for NaN. */
static void fmt_num(double v, int decimals, const char *suffix, char *out, size_t len)
{
    if (isnan(v))
        snprintf(out, len, "-");
    else
        snprintf(out, len, "%.*f%s", decimals, v, suffix);
}

/* The cells of one summary row, shared by table, md and card. */
typedef struct row_cells {
    char bpw[16], size[24], ppl[48], kld[32], top1[16], flips[32];
    char fam[QE_FAM_COUNT][48];
} row_cells;

static void cells(const qe_report_variant *v, row_cells *c)
{
    fmt_num(v->bpw, 2, "", c->bpw, sizeof c->bpw);
    fmt_size(v->size_nbytes, c->size, sizeof c->size);
    if (isnan(v->ppl))
        snprintf(c->ppl, sizeof c->ppl, "-");
    else if (v->is_reference)
        qe_fmt_compact(v->ppl, 4, c->ppl, sizeof c->ppl);
    else {
        char pb[32];
        snprintf(c->ppl, sizeof c->ppl, "%s (%+.2f%%%s)", qe_fmt_compact(v->ppl, 4, pb, sizeof pb),
                 v->dppl_pct, sig_mark(v->dppl_p_adj));
    }
    if (isnan(v->kld_mean))
        snprintf(c->kld, sizeof c->kld, "-");
    else
        snprintf(c->kld, sizeof c->kld, "%.5f", v->kld_mean);
    fmt_num(100.0 * v->top1, 1, "%", c->top1, sizeof c->top1);
    for (int f = 0; f < QE_FAM_COUNT; f++) {
        const qe_fam_acc *fa = &v->fam[f];
        if (!fa->present)
            snprintf(c->fam[f], sizeof c->fam[f], "-");
        else if (v->is_reference || isnan(fa->delta))
            snprintf(c->fam[f], sizeof c->fam[f], "%.1f", 100.0 * fa->acc);
        else
            snprintf(c->fam[f], sizeof c->fam[f], "%.1f (%+.1f%s)", 100.0 * fa->acc,
                     100.0 * fa->delta, sig_mark(fa->p_adj));
    }
    if (v->is_reference || v->flip_n <= 0)
        snprintf(c->flips, sizeof c->flips, "-");
    else
        snprintf(c->flips, sizeof c->flips, "-%.1f/+%.1f%%",
                 100.0 * (double)v->flip_rw / (double)v->flip_n,
                 100.0 * (double)v->flip_wr / (double)v->flip_n);
}

static bool any_flips(const qe_report_data *d)
{
    for (int i = 0; i < d->n_variants; i++)
        if (!d->variants[i].is_reference && d->variants[i].flip_n > 0)
            return true;
    return false;
}

static bool fam_any(const qe_report_data *d, int f)
{
    for (int i = 0; i < d->n_variants; i++)
        if (d->variants[i].fam[f].present)
            return true;
    return false;
}

static void render_table(const qe_report_data *d, FILE *out, bool markdown)
{
    const char *hdr[5] = {"variant", "bpw", "size", "PPL (dPPL)", "KLD mean"};
    bool fl = any_flips(d);
    if (markdown) {
        fprintf(out, "| %s | %s | %s | %s | %s | top-1", hdr[0], hdr[1], hdr[2], hdr[3], hdr[4]);
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if (fam_any(d, f))
                fprintf(out, " | %s acc %%", qe_report_family_names[f]);
        if (fl)
            fprintf(out, " | flips -/+");
        fprintf(out, " |\n|---|---:|---:|---:|---:|---:");
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if (fam_any(d, f))
                fprintf(out, "|---:");
        if (fl)
            fprintf(out, "|---:");
        fprintf(out, "|\n");
    } else {
        fprintf(out, "%-18s %6s %11s %24s %10s %7s", hdr[0], hdr[1], hdr[2], hdr[3], hdr[4],
                "top-1");
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if (fam_any(d, f))
                fprintf(out, " %18s", qe_report_family_names[f]);
        if (fl)
            fprintf(out, " %14s", "flips -/+");
        fputc('\n', out);
    }
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        row_cells c;
        cells(v, &c);
        char name[80];
        snprintf(name, sizeof name, "%s%s", v->name, v->is_reference ? " (ref)" : "");
        if (markdown)
            fprintf(out, "| %s | %s | %s | %s | %s | %s", name, c.bpw, c.size, c.ppl, c.kld,
                    c.top1);
        else
            fprintf(out, "%-18s %6s %11s %24s %10s %7s", name, c.bpw, c.size, c.ppl, c.kld,
                    c.top1);
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if (fam_any(d, f))
                fprintf(out, markdown ? " | %s" : " %18s", c.fam[f]);
        if (fl)
            fprintf(out, markdown ? " | %s" : " %14s", c.flips);
        fputs(markdown ? " |\n" : "\n", out);
    }
    fprintf(out, "%sPPL and KLD on %s (%s); accuracy in %%; * p<0.05, ** p<0.01 paired vs the "
                 "reference (bootstrap for NLL, McNemar for accuracy), %s over the %d "
                 "comparisons marked here",
            markdown ? "\n" : "", d->main_task[0] ? d->main_task : "-",
            d->main_protocol[0] ? d->main_protocol : "-",
            qe_stats_adjust_name((qe_adjust)d->adjust), d->n_summary_tests);
    if (fl)
        fprintf(out, "; flips: %% of accuracy items right->wrong / wrong->right vs the reference");
    fputc('\n', out);
}

static void html_esc(FILE *out, const char *s);

static bool tf_any(const qe_report_data *d, int f)
{
    for (int i = 0; i < d->n_variants; i++)
        if (d->variants[i].tf_items[f] > 0)
            return true;
    return false;
}

/* Teacher-forced divergence per family: mode 0 text, 1 Markdown, 2 HTML. */
static void render_tf(const qe_report_data *d, FILE *out, int mode)
{
    int fams[QE_FAM_COUNT], nf = 0;
    for (int f = 0; f < QE_FAM_COUNT; f++)
        if (tf_any(d, f))
            fams[nf++] = f;
    if (!nf)
        return;
    const char *title = "teacher-forced on the reference's outputs (generation tasks): mean KLD "
                        "/ top-1 agreement / mean position of the first disagreeing token";
    if (mode == 0) {
        fprintf(out, "\n%s\n%-18s", title, "variant");
        for (int k = 0; k < nf; k++)
            fprintf(out, " %28s", qe_report_family_names[fams[k]]);
        fputc('\n', out);
    } else if (mode == 1) {
        fprintf(out, "\n%s\n\n| variant", title);
        for (int k = 0; k < nf; k++)
            fprintf(out, " | %s", qe_report_family_names[fams[k]]);
        fprintf(out, " |\n|---");
        for (int k = 0; k < nf; k++)
            fprintf(out, "|---:");
        fprintf(out, "|\n");
    } else {
        fprintf(out, "<p class=\"note\">");
        html_esc(out, title);
        fprintf(out, "</p>\n<table><tr><th>variant</th>");
        for (int k = 0; k < nf; k++)
            fprintf(out, "<th>%s</th>", qe_report_family_names[fams[k]]);
        fprintf(out, "</tr>\n");
    }
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        if (v->is_reference)
            continue;
        fprintf(out, mode == 0 ? "%-18s" : mode == 1 ? "| %s" : "<tr><td>%s", v->name);
        for (int k = 0; k < nf; k++) {
            int f = fams[k];
            char c[64] = "-";
            if (v->tf_items[f] > 0)
                snprintf(c, sizeof c, "%.3g / %.1f%% / %.1f", v->tf_kld[f], 100 * v->tf_top1[f],
                         v->tf_first[f]);
            fprintf(out, mode == 0 ? " %28s" : mode == 1 ? " | %s" : "<td>%s</td>", c);
        }
        fputs(mode == 0 ? "\n" : mode == 1 ? " |\n" : "</tr>\n", out);
    }
    if (mode == 2)
        fprintf(out, "</table>\n");
}

/* Cells of one per-task row (compare row r of variant v). */
typedef struct task_cells {
    char base[24], cand[24], delta[24], ci[40], p[24], mde[24], rw[40], wr[40];
} task_cells;

static void task_row_cells(const qe_cmp_row *r, task_cells *c)
{
    const char *unit = qe_cmp_row_unit(r);
    double sc = qe_cmp_row_scale(r);
    snprintf(c->base, sizeof c->base, "%.5g", sc * r->base);
    snprintf(c->cand, sizeof c->cand, "%.5g", sc * r->cand);
    snprintf(c->delta, sizeof c->delta, "%+.3g%s", r->delta, unit);
    snprintf(c->ci, sizeof c->ci, "[%+.3g, %+.3g]", r->lo, r->hi);
    snprintf(c->p, sizeof c->p, "%.3g%s", r->p_adj, sig_mark(r->p_adj));
    if (isfinite(r->mde))
        snprintf(c->mde, sizeof c->mde, "%.3g%s", r->mde, unit);
    else
        snprintf(c->mde, sizeof c->mde, "-");
    if (r->n_rw >= 0) {
        snprintf(c->rw, sizeof c->rw, "%.1f%% [%.1f, %.1f]", 100.0 * (double)r->n_rw / (double)r->n,
                 100 * r->rw_lo, 100 * r->rw_hi);
        snprintf(c->wr, sizeof c->wr, "%.1f%% [%.1f, %.1f]", 100.0 * (double)r->n_wr / (double)r->n,
                 100 * r->wr_lo, 100 * r->wr_hi);
    } else {
        snprintf(c->rw, sizeof c->rw, "-");
        snprintf(c->wr, sizeof c->wr, "-");
    }
}

/* The per-task table: every paired comparison of every variant with the
 * reference.  mode 0 text, 1 Markdown, 2 HTML. */
static void render_tasks(const qe_report_data *d, FILE *out, int mode)
{
    if (d->n_task_tests == 0)
        return;
    static const char *const hdr[] = {"variant", "task", "metric", "n", "ref", "variant value",
                                      "delta", "95% CI", "p (adj)", "MDE", "right->wrong",
                                      "wrong->right"};
    if (mode == 0) {
        fprintf(out, "\nper task, paired vs the reference:\n%-16s %-24s %-20s %5s %9s %9s %9s "
                     "%20s %10s %9s %20s %20s\n",
                hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], "value", hdr[6], hdr[7], hdr[8], hdr[9],
                hdr[10], hdr[11]);
    } else if (mode == 1) {
        fprintf(out, "\n| variant | task | metric | n | ref | value | delta | 95%% CI | p (adj) "
                     "| MDE | right->wrong | wrong->right |\n|---|---|---|---:|---:|---:|---:|"
                     "---:|---:|---:|---:|---:|\n");
    } else {
        fprintf(out, "<table><tr>");
        for (int k = 0; k < 12; k++)
            fprintf(out, "<th>%s</th>", k == 10 ? "right&rarr;wrong" : k == 11 ? "wrong&rarr;right" : hdr[k]);
        fprintf(out, "</tr>\n");
    }
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        for (int j = 0; j < v->n_rows; j++) {
            const qe_cmp_row *r = &v->rows[j];
            task_cells c;
            task_row_cells(r, &c);
            if (mode == 0)
                fprintf(out, "%-16s %-24s %-20s %5lld %9s %9s %9s %20s %10s %9s %20s %20s\n",
                        v->name, r->task, r->metric, (long long)r->n, c.base, c.cand, c.delta,
                        c.ci, c.p, c.mde, c.rw, c.wr);
            else if (mode == 1)
                fprintf(out, "| %s | %s | %s | %lld | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                        v->name, r->task, r->metric, (long long)r->n, c.base, c.cand, c.delta,
                        c.ci, c.p, c.mde, c.rw, c.wr);
            else {
                const char *cols[12] = {v->name, r->task, r->metric, NULL, c.base, c.cand,
                                        c.delta, c.ci, c.p, c.mde, c.rw, c.wr};
                fprintf(out, "<tr>");
                for (int k = 0; k < 12; k++) {
                    fprintf(out, "<td>");
                    if (k == 3)
                        fprintf(out, "%lld", (long long)r->n);
                    else
                        html_esc(out, cols[k]);
                    fprintf(out, "</td>");
                }
                fprintf(out, "</tr>\n");
            }
        }
    }
    char note[400];
    snprintf(note, sizeof note,
             "delta: ppl in %%, accuracy in points, kld_mean and ll_margin in nats; p: %s over "
             "these %d rows (* < 0.05, ** < 0.01); MDE: the smallest |delta| detectable at 80%% "
             "power and alpha 0.05 with these items (McNemar: given the observed flips); flips "
             "with Wilson 95%% intervals",
             qe_stats_adjust_name((qe_adjust)d->adjust), d->n_task_tests);
    if (mode == 2) {
        fprintf(out, "</table>\n<p class=\"note\">");
        html_esc(out, note);
        fprintf(out, "</p>\n");
    } else {
        fprintf(out, "%s%s\n", mode == 1 ? "\n" : "", note);
    }
}

static void provenance_lines(const qe_report_data *d, FILE *out, const char *prefix)
{
    fprintf(out, "%smodel: %s (sha256 %.16s)\n", prefix, d->model_name, d->model_sha256);
    fprintf(out, "%srun: %lld, key %.12s, label '%s', %s on %s, %d threads\n", prefix,
            (long long)d->run_id, d->run_key, d->label, d->created_at, d->host, d->threads);
    fprintf(out, "%sqeval %s, git %s; suite %s; imatrix %s\n", prefix, d->tool_version,
            d->git_rev, d->suite[0] ? d->suite : "-",
            d->imatrix_sha256[0] ? d->imatrix_sha256 : "none");
}

static void render_recommendation(const qe_report_data *d, FILE *out, const char *prefix,
                                  bool html)
{
    qe_tolerance t;
    qe_tolerance_default(&t);
    char why[300], line[512];
    int k = qe_report_recommend(d, &t, 0, why, sizeof why);
    snprintf(line, sizeof line, "%srecommended: %s (%s)\n", prefix,
             k >= 0 ? d->variants[k].name : "none", why);
    if (html)
        html_esc(out, line);
    else
        fputs(line, out);
}

static void render_card(const qe_report_data *d, FILE *out)
{
    fprintf(out, "<!-- qeval model card block: paste into the release notes -->\n");
    fprintf(out, "### Quantization quality: %s\n\n", d->model_name);
    render_table(d, out, true);
    fprintf(out, "\n");
    qe_tolerance t;
    qe_tolerance_default(&t);
    char why[300];
    int k = qe_report_recommend(d, &t, 0, why, sizeof why);
    fprintf(out, "**Recommended: %s** (%s)\n", k >= 0 ? d->variants[k].name : "none", why);
    fprintf(out, "\n<sub>Measured with qeval %s (git %s) on %s, %s. Model sha256 `%.16s`. "
                 "Run key `%.12s`. KLD is KL(reference || variant) in nats per token.</sub>\n",
            d->tool_version, d->git_rev, d->main_task[0] ? d->main_task : "-",
            d->main_protocol[0] ? d->main_protocol : "-", d->model_sha256, d->run_key);
}

/* ---------------------------------------------------------------- json */

/* Numbers are written with 17 significant digits so they read back as
 * the exact doubles in the database (cJSON's own printer may round). */
static cJSON *num_or_null(double v)
{
    if (!isfinite(v))
        return cJSON_CreateNull();
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    return cJSON_CreateRaw(buf);
}

static cJSON *ci_array(double lo, double hi)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, num_or_null(lo));
    cJSON_AddItemToArray(a, num_or_null(hi));
    return a;
}

static int render_json(qe_store *s, const qe_report_data *d, FILE *out, qe_err *err)
{
    cJSON *root = cJSON_CreateObject(), *run = cJSON_AddObjectToObject(root, "run");
    cJSON_AddNumberToObject(run, "id", (double)d->run_id);
    cJSON_AddStringToObject(run, "run_key", d->run_key);
    cJSON_AddStringToObject(run, "label", d->label);
    cJSON_AddStringToObject(run, "model", d->model_name);
    cJSON_AddStringToObject(run, "model_sha256", d->model_sha256);
    cJSON_AddStringToObject(run, "tool_version", d->tool_version);
    cJSON_AddStringToObject(run, "git_rev", d->git_rev);
    cJSON_AddStringToObject(run, "host", d->host);
    cJSON_AddStringToObject(run, "created_at", d->created_at);
    cJSON_AddStringToObject(run, "imatrix_sha256", d->imatrix_sha256);
    cJSON_AddStringToObject(run, "suite", d->suite);
    cJSON_AddNumberToObject(run, "threads", d->threads);
    cJSON_AddStringToObject(run, "main_task", d->main_task);
    cJSON_AddStringToObject(run, "protocol", d->main_protocol);
    cJSON_AddStringToObject(run, "multiple_comparisons", qe_stats_adjust_name((qe_adjust)d->adjust));
    cJSON *vs = cJSON_AddArrayToObject(root, "variants");
    for (int i = 0; i < d->n_variants; i++) {
        const qe_report_variant *v = &d->variants[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", v->name);
        cJSON_AddBoolToObject(o, "reference", v->is_reference);
        cJSON_AddItemToObject(o, "bpw", num_or_null(v->bpw));
        cJSON_AddNumberToObject(o, "size_bytes", (double)v->size_nbytes);
        cJSON_AddItemToObject(o, "ppl", num_or_null(v->ppl));
        cJSON_AddItemToObject(o, "ppl_stderr", num_or_null(v->ppl_se));
        cJSON_AddItemToObject(o, "dppl_pct", num_or_null(v->dppl_pct));
        cJSON_AddItemToObject(o, "dppl_p", num_or_null(v->dppl_p));
        cJSON_AddItemToObject(o, "kld_mean", num_or_null(v->kld_mean));
        cJSON_AddItemToObject(o, "kld_stderr", num_or_null(v->kld_se));
        cJSON_AddItemToObject(o, "kld_p99", num_or_null(v->kld_p99));
        cJSON_AddItemToObject(o, "top1", num_or_null(v->top1));
        cJSON *fam = cJSON_AddObjectToObject(o, "families");
        for (int f = 0; f < QE_FAM_COUNT; f++) {
            const qe_fam_acc *fa = &v->fam[f];
            if (!fa->present)
                continue;
            cJSON *fo = cJSON_AddObjectToObject(fam, qe_report_family_names[f]);
            cJSON_AddNumberToObject(fo, "n", (double)fa->n);
            cJSON_AddNumberToObject(fo, "acc", fa->acc);
            cJSON_AddNumberToObject(fo, "ci_lo", fa->lo);
            cJSON_AddNumberToObject(fo, "ci_hi", fa->hi);
            cJSON_AddItemToObject(fo, "delta", num_or_null(fa->delta));
            cJSON_AddItemToObject(fo, "p", num_or_null(fa->p));
            cJSON_AddItemToObject(fo, "p_adj", num_or_null(fa->p_adj));
        }
        cJSON_AddItemToObject(o, "dppl_p_adj", num_or_null(v->dppl_p_adj));
        if (!v->is_reference && v->flip_n > 0) {
            cJSON *fl = cJSON_AddObjectToObject(o, "flips");
            double lo, hi;
            cJSON_AddNumberToObject(fl, "n", (double)v->flip_n);
            cJSON_AddNumberToObject(fl, "right_to_wrong", (double)v->flip_rw);
            cJSON_AddNumberToObject(fl, "wrong_to_right", (double)v->flip_wr);
            qe_stats_wilson((size_t)v->flip_rw, (size_t)v->flip_n, 1.96, &lo, &hi);
            cJSON_AddItemToObject(fl, "right_to_wrong_ci", ci_array(lo, hi));
            qe_stats_wilson((size_t)v->flip_wr, (size_t)v->flip_n, 1.96, &lo, &hi);
            cJSON_AddItemToObject(fl, "wrong_to_right_ci", ci_array(lo, hi));
        }
        cJSON *tfo = cJSON_AddObjectToObject(o, "teacher_forced");
        for (int f = 0; f < QE_FAM_COUNT; f++) {
            if (v->tf_items[f] <= 0)
                continue;
            cJSON *fo = cJSON_AddObjectToObject(tfo, qe_report_family_names[f]);
            cJSON_AddNumberToObject(fo, "items", (double)v->tf_items[f]);
            cJSON_AddNumberToObject(fo, "tokens", (double)v->tf_tokens[f]);
            cJSON_AddItemToObject(fo, "kld_mean", num_or_null(v->tf_kld[f]));
            cJSON_AddItemToObject(fo, "top1", num_or_null(v->tf_top1[f]));
            cJSON_AddItemToObject(fo, "first_diff_mean", num_or_null(v->tf_first[f]));
        }
        cJSON *ta = cJSON_AddArrayToObject(o, "tasks");
        for (int j = 0; j < v->n_rows; j++) {
            const qe_cmp_row *r = &v->rows[j];
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "task", r->task);
            cJSON_AddStringToObject(t, "family", r->family);
            cJSON_AddStringToObject(t, "metric", r->metric);
            cJSON_AddStringToObject(t, "test", r->test);
            cJSON_AddNumberToObject(t, "n", (double)r->n);
            cJSON_AddItemToObject(t, "ref", num_or_null(r->base));
            cJSON_AddItemToObject(t, "value", num_or_null(r->cand));
            cJSON_AddItemToObject(t, "delta", num_or_null(r->delta));
            cJSON_AddStringToObject(t, "delta_unit", qe_cmp_row_unit(r));
            cJSON_AddItemToObject(t, "ci", ci_array(r->lo, r->hi));
            cJSON_AddItemToObject(t, "p", num_or_null(r->p));
            cJSON_AddItemToObject(t, "p_adj", num_or_null(r->p_adj));
            cJSON_AddItemToObject(t, "mde", num_or_null(r->mde));
            cJSON_AddNumberToObject(t, "alpha", r->alpha);
            cJSON_AddNumberToObject(t, "power", QE_REPORT_POWER);
            if (r->n_rw >= 0) {
                cJSON_AddNumberToObject(t, "right_to_wrong", (double)r->n_rw);
                cJSON_AddNumberToObject(t, "wrong_to_right", (double)r->n_wr);
                cJSON_AddItemToObject(t, "right_to_wrong_ci", ci_array(r->rw_lo, r->rw_hi));
                cJSON_AddItemToObject(t, "wrong_to_right_ci", ci_array(r->wr_lo, r->wr_hi));
            }
            cJSON_AddItemToArray(ta, t);
        }
        cJSON_AddItemToArray(vs, o);
    }
    /* every result row with its provenance */
    cJSON *rs = cJSON_AddArrayToObject(root, "results");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT variant, task, task_version, family, language, metric, value,"
                           " stderr, n, data_sha256, protocol FROM v_results WHERE run_id=?"
                           " ORDER BY variant_id, task_id, metric",
                           -1, &st, NULL) != SQLITE_OK) {
        cJSON_Delete(root);
        return db_err(s, err, "reading results");
    }
    sqlite3_bind_int64(st, 1, d->run_id);
    static const char *keys[] = {"variant", "task", "task_version", "family", "language",
                                 "metric"};
    while (sqlite3_step(st) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        for (int c = 0; c < 6; c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            cJSON_AddStringToObject(o, keys[c], t ? t : "");
        }
        cJSON_AddItemToObject(o, "value", num_or_null(col_num(st, 6)));
        cJSON_AddItemToObject(o, "stderr", num_or_null(col_num(st, 7)));
        cJSON_AddNumberToObject(o, "n", (double)sqlite3_column_int64(st, 8));
        const char *ds = (const char *)sqlite3_column_text(st, 9);
        const char *pr = (const char *)sqlite3_column_text(st, 10);
        cJSON_AddStringToObject(o, "data_sha256", ds ? ds : "");
        cJSON_AddStringToObject(o, "protocol", pr ? pr : "");
        cJSON_AddItemToArray(rs, o);
    }
    sqlite3_finalize(st);
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt)
        return qe_err_set(err, QE_ENOMEM, "out of memory rendering JSON");
    fputs(txt, out);
    fputc('\n', out);
    free(txt);
    return 0;
}

/* ------------------------------------------------------------ html/svg */

static void html_esc(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default: fputc(*s, out);
        }
    }
}

#define SVG_W 560
#define SVG_H 300
#define PAD_L 64
#define PAD_R 20
#define PAD_T 30
#define PAD_B 46

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static void svg_open(FILE *out, const char *id, const char *title, const char *xl, const char *yl)
{
    fprintf(out, "<figure><svg id=\"%s\" class=\"chart\" "
                 "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n",
            id, SVG_W, SVG_H, SVG_W, SVG_H);
    fprintf(out, "<text x=\"%d\" y=\"18\" class=\"t\">", SVG_W / 2);
    html_esc(out, title);
    fprintf(out, "</text>\n<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"ax\"/>"
                 "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"ax\"/>\n",
            PAD_L, SVG_H - PAD_B, SVG_W - PAD_R, SVG_H - PAD_B, PAD_L, PAD_T, PAD_L,
            SVG_H - PAD_B);
    fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"l\">", (PAD_L + SVG_W - PAD_R) / 2, SVG_H - 8);
    html_esc(out, xl);
    fprintf(out, "</text><text x=\"14\" y=\"%d\" class=\"l\" transform=\"rotate(-90 14 %d)\">",
            SVG_H / 2, SVG_H / 2);
    html_esc(out, yl);
    fprintf(out, "</text>\n");
}

static void svg_close(FILE *out, const char *caption)
{
    fprintf(out, "</svg><figcaption>");
    html_esc(out, caption);
    fprintf(out, "</figcaption></figure>\n");
}

/* The smallest of 1, 2, 5 x 10^k that is >= raw (raw > 0). */
static double nice_step(double raw)
{
    double p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/* Tick label of the decade 10^k: "0.001" ... "1000" near 1, "1e-06" beyond. */
static void decade_label(int k, char *buf, size_t n)
{
    if (k >= -4 && k <= 4)
        snprintf(buf, n, "%g", pow(10.0, k));
    else
        snprintf(buf, n, "1e%+03d", k);
}

/* Decade ticks k0..k1 (log10 axis bounds, integers): every decade, or every
 * step-th when there are more than 6. */
static int decade_step(int k0, int k1)
{
    int span = k1 - k0;
    return span > 6 ? (span + 5) / 6 : 1;
}

#define LABEL_CHAR_W 6.0   /* px per character at font-size 10 (estimate) */
#define LABEL_H 11.0

typedef struct lbox {
    double x0, y0, x1, y1;
} lbox;

static bool lbox_hit(const lbox *a, const lbox *b)
{
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

/* Place n labels of width w[i] next to points (px[i], py[i]) so that no
 * label overlaps another label or any point (radius 4): the first free
 * position of right-above, right-below, left-above, left-below, then
 * further up or down.  (tx, ty) is the text's start and baseline. */
static void place_labels(const double *px, const double *py, const double *w, int n, double *tx,
                         double *ty)
{
    lbox *placed = calloc((size_t)(n > 0 ? n : 1), sizeof *placed);
    for (int i = 0; i < n; i++) {
        double cand[16][2];
        int nc = 0;
        cand[nc][0] = px[i] + 6, cand[nc++][1] = py[i] - 6;
        cand[nc][0] = px[i] + 6, cand[nc++][1] = py[i] + 14;
        cand[nc][0] = px[i] - 6 - w[i], cand[nc++][1] = py[i] - 6;
        cand[nc][0] = px[i] - 6 - w[i], cand[nc++][1] = py[i] + 14;
        for (int k = 1; k <= 5; k++) {
            cand[nc][0] = px[i] + 6, cand[nc++][1] = py[i] - 6 - 12 * k;
            cand[nc][0] = px[i] + 6, cand[nc++][1] = py[i] + 14 + 12 * k;
        }
        int pick = 0;
        for (int c = 0; c < nc; c++) {
            lbox b = {cand[c][0], cand[c][1] - 9, cand[c][0] + w[i], cand[c][1] + 2};
            bool ok = b.x0 >= 0 && b.x1 <= SVG_W && b.y0 >= 20 && b.y1 <= SVG_H;
            for (int j = 0; ok && placed && j < i; j++)
                ok = !lbox_hit(&b, &placed[j]);
            for (int j = 0; ok && j < n; j++) {
                lbox pt = {px[j] - 4, py[j] - 4, px[j] + 4, py[j] + 4};
                ok = !lbox_hit(&b, &pt);
            }
            if (ok) {
                pick = c;
                break;
            }
        }
        tx[i] = cand[pick][0];
        ty[i] = cand[pick][1];
        if (placed)
            placed[i] = (lbox){tx[i], ty[i] - 9, tx[i] + w[i], ty[i] + 2};
    }
    free(placed);
}

/* Scatter of (x, y) labelled points, y optionally log10-scaled. */
static void svg_scatter(FILE *out, const char *id, const char *title, const char *xl,
                        const char *yl, const double *x, const double *y, char (*labels)[64],
                        int n, bool logy)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, lstep = 1;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]) || (logy && y[i] <= 0))
            continue;
        double yy = logy ? log10(y[i]) : y[i];
        x0 = fmin(x0, x[i]), x1 = fmax(x1, x[i]), y0 = fmin(y0, yy), y1 = fmax(y1, yy);
        m++;
    }
    svg_open(out, id, title, xl, yl);
    if (m == 0) {
        fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"l\">no data</text>\n", SVG_W / 2, SVG_H / 2);
        svg_close(out, title);
        return;
    }
    if (logy) {
        y0 = floor(y0), y1 = ceil(y1);
        if (y1 <= y0)
            y1 = y0 + 1;
    } else {
        if (y0 > 0)
            y0 = 0;
        if (y1 <= y0)
            y1 = y0 + 1;
        /* round ticks: a step of 1, 2 or 5 times a power of ten, at most 6
         * intervals, and the axis widened to whole steps */
        lstep = nice_step((y1 - y0) / 5);
        y0 = floor(y0 / lstep) * lstep;
        y1 = ceil(y1 / lstep) * lstep;
    }
    x0 = floor(x0) - 0.5, x1 = ceil(x1) + 0.5;
    double pw = SVG_W - PAD_L - PAD_R, ph = SVG_H - PAD_T - PAD_B;
#define PX(v) (PAD_L + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (SVG_H - PAD_B - ((v) - y0) / (y1 - y0) * ph)
    for (int t = (int)ceil(x0); t <= (int)floor(x1); t++)
        fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"k\">%d</text>", PX((double)t),
                SVG_H - PAD_B + 14, t);
    if (logy) {
        /* round decades: 0.001, 0.01, 0.1 (not 0.00316) */
        int k0 = (int)y0, k1 = (int)y1, step = decade_step(k0, k1);
        for (int k = k0; k <= k1; k += step) {
            char lab[32];
            decade_label(k, lab, sizeof lab);
            fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/>"
                         "<text x=\"%d\" y=\"%.1f\" class=\"k ke\">%s</text>\n",
                    PAD_L, PY((double)k), SVG_W - PAD_R, PY((double)k), PAD_L - 4,
                    PY((double)k) + 4, lab);
        }
    } else {
        int nt = (int)lround((y1 - y0) / lstep);
        for (int t = 0; t <= nt; t++) {
            double v = y0 + lstep * t;
            char lab[32];
            snprintf(lab, sizeof lab, "%.6g", fabs(v) < 1e-9 * lstep ? 0.0 : v);
            fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/>"
                         "<text x=\"%d\" y=\"%.1f\" class=\"k ke\">%s</text>\n",
                    PAD_L, PY(v), SVG_W - PAD_R, PY(v), PAD_L - 4, PY(v) + 4, lab);
        }
    }
    /* connecting line in bpw order (the cliff) */
    fprintf(out, "<polyline class=\"cl\" points=\"");
    for (int i = n - 1; i >= 0; i--) {
        if (!isfinite(x[i]) || !isfinite(y[i]) || (logy && y[i] <= 0))
            continue;
        fprintf(out, "%.1f,%.1f ", PX(x[i]), PY(logy ? log10(y[i]) : y[i]));
    }
    fprintf(out, "\"/>\n");
    /* one label per distinct point: variants at the same position (equal
     * bpw and value, e.g. Q6_K = Q8_0 on stories260K) share it; then the
     * labels are placed so that none overlaps another or a point */
    double *ppx = calloc((size_t)n + 1, sizeof *ppx), *ppy = calloc((size_t)n + 1, sizeof *ppy);
    double *lw = calloc((size_t)n + 1, sizeof *lw), *tx = calloc((size_t)n + 1, sizeof *tx);
    double *ty = calloc((size_t)n + 1, sizeof *ty);
    char(*txt)[256] = calloc((size_t)n + 1, sizeof *txt);
    int np = 0;
    if (ppx && ppy && lw && tx && ty && txt) {
        for (int i = 0; i < n; i++) {
            if (!isfinite(x[i]) || !isfinite(y[i]) || (logy && y[i] <= 0))
                continue;
            double yy = logy ? log10(y[i]) : y[i], cx = PX(x[i]), cy = PY(yy);
            fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" class=\"pt\"><title>", cx, cy);
            html_esc(out, labels[i]);
            fprintf(out, ": bpw %.2f, %.5g</title></circle>\n", x[i], y[i]);
            int j = 0;
            while (j < np && !(fabs(ppx[j] - cx) < 1 && fabs(ppy[j] - cy) < 1))
                j++;
            if (j == np) {
                ppx[np] = cx, ppy[np] = cy;
                qe_strlcpy(txt[np], labels[i], sizeof txt[np]);
                np++;
            } else {
                size_t l = strlen(txt[j]);
                snprintf(txt[j] + l, sizeof txt[j] - l, " = %s", labels[i]);
            }
        }
        for (int j = 0; j < np; j++)
            lw[j] = LABEL_CHAR_W * (double)strlen(txt[j]);
        place_labels(ppx, ppy, lw, np, tx, ty);
        for (int j = 0; j < np; j++) {
            fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" class=\"k ks lab\">", tx[j], ty[j]);
            html_esc(out, txt[j]);
            fprintf(out, "</text>\n");
        }
    }
    free(ppx), free(ppy), free(lw), free(tx), free(ty), free(txt);
#undef PX
#undef PY
    svg_close(out, title);
}

static void svg_family_bars(FILE *out, const qe_report_data *d)
{
    int fams[QE_FAM_COUNT], nf = 0;
    for (int f = 0; f < QE_FAM_COUNT; f++)
        if (fam_any(d, f))
            fams[nf++] = f;
    svg_open(out, "family-accuracy", "Accuracy per family (95% Wilson CI)", "task family",
             "accuracy %");
    if (nf == 0 || d->n_variants == 0) {
        fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"l\">no task accuracy in this run</text>\n",
                SVG_W / 2, SVG_H / 2);
        svg_close(out, "Accuracy per family");
        return;
    }
    /* the legend takes LEGEND_W on the right, outside the bars */
    const int LEGEND_W = 100;
    double pw = SVG_W - PAD_L - PAD_R - LEGEND_W, ph = SVG_H - PAD_T - PAD_B;
    double gw = pw / nf, bw = gw * 0.8 / d->n_variants;
    for (int t = 0; t <= 4; t++) {
        double y = SVG_H - PAD_B - ph * t / 4.0;
        fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/>"
                     "<text x=\"%d\" y=\"%.1f\" class=\"k ke\">%d</text>\n",
                PAD_L, y, SVG_W - PAD_R - LEGEND_W, y, PAD_L - 4, y + 4, 25 * t);
    }
    for (int g = 0; g < nf; g++) {
        int f = fams[g];
        double gx = PAD_L + g * gw + gw * 0.1;
        fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"k\">%s</text>\n", PAD_L + (g + 0.5) * gw,
                SVG_H - PAD_B + 14, qe_report_family_names[f]);
        for (int i = 0; i < d->n_variants; i++) {
            const qe_fam_acc *fa = &d->variants[i].fam[f];
            if (!fa->present)
                continue;
            double x = gx + i * bw, h = fa->acc * ph;
            fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                         "fill=\"%s\"><title>",
                    x, SVG_H - PAD_B - h, bw * 0.9, h, palette[i % 8]);
            html_esc(out, d->variants[i].name);
            fprintf(out, " %s: %.1f%% [%.1f, %.1f]</title></rect>", qe_report_family_names[f],
                    100 * fa->acc, 100 * fa->lo, 100 * fa->hi);
            double cx = x + bw * 0.45;
            fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"ci\"/>\n",
                    cx, SVG_H - PAD_B - fa->lo * ph, cx, SVG_H - PAD_B - fa->hi * ph);
        }
    }
    for (int i = 0; i < d->n_variants; i++) {
        fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/>"
                     "<text x=\"%d\" y=\"%d\" class=\"k ks\">",
                SVG_W - PAD_R - LEGEND_W + 14, PAD_T + 14 * i, palette[i % 8], SVG_W - PAD_R - LEGEND_W + 28,
                PAD_T + 14 * i + 9);
        html_esc(out, d->variants[i].name);
        fprintf(out, "</text>\n");
    }
    svg_close(out, "Accuracy per family by variant, with 95% Wilson intervals");
}

static void svg_heatmap(FILE *out, const qe_report_data *d)
{
    int nl = d->n_lang, nv = d->n_variants;
    int cw = nl ? (SVG_W - 140) / nl : 0, ch = 22;
    int h = PAD_T + 24 + ch * nv + 20;
    fprintf(out, "<figure><svg id=\"lang-heatmap\" class=\"chart\" "
                 "width=\"%d\" height=\"%d\" "
                 "viewBox=\"0 0 %d %d\"><text x=\"%d\" y=\"18\" class=\"t\">dPPL %% per "
                 "language</text>\n",
            SVG_W, h, SVG_W, h, SVG_W / 2);
    if (!nl)
        fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"l\">no per-language perplexity tasks in "
                     "this run</text>\n",
                SVG_W / 2, h / 2 + 6);
    double vmax = 1e-9;
    for (int i = 0; i < nv; i++)
        for (int l = 0; l < nl; l++)
            if (isfinite(d->variants[i].lang_dppl[l]))
                vmax = fmax(vmax, fabs(d->variants[i].lang_dppl[l]));
    for (int l = 0; l < nl; l++)
        fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"k\">%s</text>", 130 + l * cw + cw / 2,
                PAD_T + 14, d->langs[l]);
    for (int i = 0; i < nv && nl; i++) {
        int y = PAD_T + 24 + i * ch;
        fprintf(out, "<text x=\"124\" y=\"%d\" class=\"k ke\">", y + 15);
        html_esc(out, d->variants[i].name);
        fprintf(out, "</text>");
        for (int l = 0; l < nl; l++) {
            double v = d->variants[i].lang_dppl[l];
            double a = isfinite(v) ? fmin(1.0, fabs(v) / vmax) : 0;
            fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                         "fill=\"rgb(%d,%d,%d)\"/><text x=\"%d\" y=\"%d\" class=\"k\">",
                    130 + l * cw, y, cw - 2, ch - 2, 255, (int)(255 - 180 * a),
                    (int)(255 - 180 * a), 130 + l * cw + cw / 2, y + 15);
            if (isfinite(v))
                fprintf(out, "%+.2f", v);
            else
                fprintf(out, "-");
            fprintf(out, "</text>\n");
        }
    }
    fprintf(out, "</svg><figcaption>Relative perplexity increase per language vs the "
                 "reference (darker = worse)</figcaption></figure>\n");
}

/* History: mean KLD of each variant name over runs of the same model. */
static int svg_history(FILE *out, qe_store *s, const qe_report_data *d, qe_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(qe_store_db(s),
                           "SELECT x.run_id, x.variant, x.value FROM v_results x WHERE"
                           " x.model_sha256 = ?1 AND x.metric = 'kld_mean' AND x.task = ?2"
                           " AND x.protocol = ?3 ORDER BY x.run_id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "history chart");
    /* only runs measured on the same text with the same protocol are comparable */
    sqlite3_bind_text(st, 1, d->model_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->main_task, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, d->main_protocol, -1, SQLITE_STATIC);
    enum { MAXP = 512 };
    static int64_t run[MAXP];
    static char name[MAXP][64];
    static double val[MAXP];
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < MAXP) {
        run[n] = sqlite3_column_int64(st, 0);
        col_text(st, 1, name[n], sizeof name[n]);
        val[n] = col_num(st, 2);
        n++;
    }
    sqlite3_finalize(st);
    int n_runs = 0;
    int64_t last = -1;
    for (int i = 0; i < n; i++)
        if (run[i] != last)
            n_runs++, last = run[i];
    if (n_runs < 2) {
        fprintf(out, "<p class=\"note\">History: only one run of this model in the database "
                     "(the trend chart appears once there are several).</p>\n");
        return 0;
    }
    svg_open(out, "history", "Mean KLD by run (same model)", "run id", "mean KLD (log)");
    int64_t r0 = run[0], r1 = run[n - 1] > r0 ? run[n - 1] : r0 + 1;
    double y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < n; i++)
        if (val[i] > 0)
            y0 = fmin(y0, log10(val[i])), y1 = fmax(y1, log10(val[i]));
    if (!isfinite(y0))
        y0 = -3, y1 = 0;
    y0 = floor(y0), y1 = ceil(y1);
    if (y1 <= y0)
        y1 = y0 + 1;
    double pw = SVG_W - PAD_L - PAD_R - 90, ph = SVG_H - PAD_T - PAD_B;
    for (int k = (int)y0, step = decade_step((int)y0, (int)y1); k <= (int)y1; k += step) {
        double y = SVG_H - PAD_B - ph * ((double)k - y0) / (y1 - y0);
        char lab[32];
        decade_label(k, lab, sizeof lab);
        fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/><text x=\"%d\" "
                     "y=\"%.1f\" class=\"k ke\">%s</text>\n",
                PAD_L, y, SVG_W - PAD_R, y, PAD_L - 4, y + 4, lab);
    }
    /* one polyline per distinct variant name */
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            if (strcmp(name[j], name[i]) == 0)
                seen = true;
        if (seen)
            continue;
        fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                palette[k % 8]);
        for (int j = i; j < n; j++)
            if (strcmp(name[j], name[i]) == 0 && val[j] > 0)
                fprintf(out, "%.1f,%.1f ",
                        PAD_L + (double)(run[j] - r0) / (double)(r1 - r0) * pw,
                        SVG_H - PAD_B - (log10(val[j]) - y0) / (y1 - y0) * ph);
        fprintf(out, "\"/>");
        /* a dot per run, so a variant measured once still shows */
        for (int j = i; j < n; j++)
            if (strcmp(name[j], name[i]) == 0 && val[j] > 0)
                fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>",
                        PAD_L + (double)(run[j] - r0) / (double)(r1 - r0) * pw,
                        SVG_H - PAD_B - (log10(val[j]) - y0) / (y1 - y0) * ph, palette[k % 8]);
        fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"k ks\" "
                     "fill=\"%s\">",
                (double)(SVG_W - PAD_R - 84), PAD_T + 14 * k, palette[k % 8]);
        html_esc(out, name[i]);
        fprintf(out, "</text>\n");
        k++;
    }
    fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"k\">%lld</text><text x=\"%.1f\" y=\"%d\" "
                 "class=\"k\">%lld</text>\n",
            PAD_L, SVG_H - PAD_B + 14, (long long)r0, PAD_L + pw, SVG_H - PAD_B + 14,
            (long long)r1);
    svg_close(out, "History of mean KLD per variant over the runs of this model");
    return 0;
}

static int render_html(qe_store *s, const qe_report_data *d, FILE *out, qe_err *err)
{
    fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<title>qeval report: ");
    html_esc(out, d->model_name);
    fprintf(out,
            "</title>\n<style>\nbody{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;"
            "color:#222}\ntable{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:"
            "left}\nfigure{display:inline-block;margin:0.5em}.chart{border:1px solid #ddd;"
            "background:#fff}\n.t{font-size:14px;text-anchor:middle;font-weight:bold}.l{font-size:"
            "12px;text-anchor:middle}.k{font-size:10px;text-anchor:middle}.ke{text-anchor:end}.ks{text-anchor:start}\n.ax{stroke:#444}.g{"
            "stroke:#eee}.pt{fill:#d62728}.cl{fill:none;stroke:#d62728;stroke-width:1.5}.ci{"
            "stroke:#000;stroke-width:1.5}\n.note{color:#666}code{background:#f6f6f6}\n</style>"
            "</head><body>\n<h1>qeval report: ");
    html_esc(out, d->model_name);
    fprintf(out, "</h1>\n<p class=\"note\">");
    provenance_lines(d, out, "");
    bool fl = any_flips(d);
    fprintf(out, "</p>\n<h2>Summary</h2>\n<table><tr><th>variant</th><th>bpw</th><th>size</th>"
                 "<th>PPL (dPPL)</th><th>KLD mean</th><th>top-1</th>");
    for (int f = 0; f < QE_FAM_COUNT; f++)
        if (fam_any(d, f))
            fprintf(out, "<th>%s acc %%</th>", qe_report_family_names[f]);
    if (fl)
        fprintf(out, "<th>flips -/+</th>");
    fprintf(out, "</tr>\n");
    for (int i = 0; i < d->n_variants; i++) {
        row_cells c;
        cells(&d->variants[i], &c);
        fprintf(out, "<tr><td>");
        html_esc(out, d->variants[i].name);
        fprintf(out, "%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>",
                d->variants[i].is_reference ? " (ref)" : "", c.bpw, c.size, c.ppl, c.kld,
                c.top1);
        for (int f = 0; f < QE_FAM_COUNT; f++)
            if (fam_any(d, f))
                fprintf(out, "<td>%s</td>", c.fam[f]);
        if (fl)
            fprintf(out, "<td>%s</td>", c.flips);
        fprintf(out, "</tr>\n");
    }
    fprintf(out, "</table>\n<p class=\"note\">PPL and KLD on ");
    html_esc(out, d->main_task);
    fprintf(out, " (");
    html_esc(out, d->main_protocol);
    fprintf(out, "). * p&lt;0.05, ** p&lt;0.01, paired against the reference, %s over the %d "
                 "comparisons marked here.%s</p>\n<p>",
            qe_stats_adjust_name((qe_adjust)d->adjust), d->n_summary_tests,
            fl ? " Flips: % of accuracy items right&rarr;wrong / wrong&rarr;right." : "");
    render_recommendation(d, out, "", true);
    fprintf(out, "</p>\n");
    render_tf(d, out, 2);
    fprintf(out, "<h2>Per task</h2>\n");
    render_tasks(d, out, 2);
    fprintf(out, "<h2>Quality cliff</h2>\n");
    int n = d->n_variants;
    double *x = calloc((size_t)n + 1, sizeof *x), *yk = calloc((size_t)n + 1, sizeof *yk);
    double *yp = calloc((size_t)n + 1, sizeof *yp);
    char(*lab)[64] = calloc((size_t)n + 1, sizeof *lab);
    if (!x || !yk || !yp || !lab) {
        free(x), free(yk), free(yp), free(lab);
        return qe_err_set(err, QE_ENOMEM, "out of memory rendering HTML");
    }
    for (int i = 0; i < n; i++) {
        x[i] = d->variants[i].bpw;
        yk[i] = d->variants[i].is_reference ? NAN : d->variants[i].kld_mean;
        yp[i] = d->variants[i].dppl_pct;
        qe_strlcpy(lab[i], d->variants[i].name, sizeof lab[i]);
    }
    svg_scatter(out, "cliff-kld", "Bits per weight vs mean KLD (log scale)", "bits per weight",
                "mean KLD (nats)", x, yk, lab, n, true);
    svg_scatter(out, "cliff-ppl", "Bits per weight vs dPPL %", "bits per weight", "dPPL %", x, yp,
                lab, n, false);
    free(x), free(yk), free(yp), free(lab);
    fprintf(out, "<h2>Task accuracy</h2>\n");
    svg_family_bars(out, d);
    fprintf(out, "<h2>Languages</h2>\n");
    svg_heatmap(out, d);
    fprintf(out, "<h2>History</h2>\n");
    int rc = svg_history(out, s, d, err);
    fprintf(out, "<footer class=\"note\">generated by qeval %s from %s</footer>\n</body></html>\n",
            QE_VERSION, qe_store_path(s));
    return rc;
}

int qe_report_render(qe_store *s, int64_t run_id, const char *format, FILE *out, qe_err *err)
{
    qe_render_opts ro = {.format = format, .adjust = QE_ADJUST_HOLM, .per_task = true};
    return qe_report_render_ex(s, run_id, &ro, out, err);
}

int qe_report_render_ex(qe_store *s, int64_t run_id, const qe_render_opts *ro, FILE *out,
                        qe_err *err)
{
    static const char *const formats[] = {"table", "md", "html", "json", "card"};
    const char *format = ro->format;
    int k = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(format, formats[i]) == 0)
            k = i;
    if (k < 0)
        return qe_err_set(err, QE_EINVAL,
                          "unknown report format '%s' (expected table, md, html, json or card)",
                          format);
    qe_report_data *d;
    int rc = qe_report_load(s, run_id, &d, err);
    if (rc)
        return rc;
    if (ro->adjust != QE_ADJUST_HOLM && (rc = qe_report_adjust(d, ro->adjust, err))) {
        qe_report_data_free(d);
        return rc;
    }
    switch (k) {
    case 0:
        provenance_lines(d, out, "");
        fputc('\n', out);
        render_table(d, out, false);
        render_recommendation(d, out, "", false);
        render_tf(d, out, 0);
        if (ro->per_task)
            render_tasks(d, out, 0);
        break;
    case 1:
        fprintf(out, "# qeval report: %s\n\n", d->model_name);
        provenance_lines(d, out, "- ");
        fputc('\n', out);
        render_table(d, out, true);
        fputc('\n', out);
        render_recommendation(d, out, "", false);
        render_tf(d, out, 1);
        render_tasks(d, out, 1);
        break;
    case 2:
        rc = render_html(s, d, out, err);
        break;
    case 3:
        rc = render_json(s, d, out, err);
        break;
    case 4:
        render_card(d, out);
        break;
    }
    qe_report_data_free(d);
    return rc;
}
