/*
 * runner.c: `qeval run` / `qeval eval` engine (see runner.h for the work
 * units and their order).
 *
 */
#include "runner.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "../../quant/quant.h"
#include "../../quant/recipe.h"
#include "../chat/chat.h"
#include "../eval/lm.h"
#include "../eval/task.h"
#include "../eval/stats.h"
#include "../eval/teacher.h"
#include "../infer/infer.h"
#include "../infer/ppl.h"
#include "../model/imatrix_io.h"
#include "../model/model.h"
#include "../model/quantize_model.h"
#include "../model/recipe_json.h"
#include "../model/tokenizer.h"
#include "../util/sha256.h"
#include "store.h"


#define TASK_SLICES 4
/* Generation tasks: at least this many items per unit, so a unit fills the
 * default 16 sequence slots (qe_lm_default_parallel) */
#define GEN_SLICE_ITEMS 16

/* A progress note on stderr ("qeval run: ..."), silent under QEVAL_QUIET=1. */
__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    const char *q = getenv("QEVAL_QUIET");
    if (q && strcmp(q, "1") == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("qeval run: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void qe_run_opts_init(qe_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->db_path = "results.db";
    o->shard_n = 1;
    o->unit_chunks = 4;
}

/* One variant of the run. */
typedef struct variant_spec {
    char name[96];
    int ftype;                 /* llama.cpp mix, -1 for reference/recipe/artifact */
    const char *recipe_path;   /* borrowed */
    qe_recipe *recipe;         /* owned */
    char recipe_sha[65];
    bool is_reference;
    bool is_artifact;
} variant_spec;

/* One evaluated task (besides the built-in text task). */
typedef struct task_spec {
    qe_task *t;
    long long limit;
    int64_t id;
    int n_slices;
} task_spec;

typedef struct runner {
    const qe_run_opts *o;
    qe_store *s;
    qe_model *ref;
    qe_imatrix *imatrix;
    /* the imatrix's provenance, stored with every variant quantized with it */
    char imx_dataset[256];
    int imx_chunks;
    char imx_sha256[65];
    int64_t run_id;
    int n_ctx;
    /* text task */
    int32_t *tokens;
    size_t n_tokens;
    int n_chunks;
    int64_t text_task;
    int32_t bos;
    /* variants and tasks */
    qe_suite *suite; /* o->suite loaded once (NULL without --suite) */
    variant_spec *vs;
    int n_vs;
    task_spec *ts;
    int n_ts;
    long long unit_index;  /* running counter over all units (sharding) */
    const qe_chat_template *chat; /* --chat's, or the model's for "chat": true specs */
    qe_chat_template *chat_own;
    long long n_run, n_skipped, n_done_before;
    qe_tf_cache *tfc; /* the reference's teacher-forced rows, kept over all variants */
} runner;

static bool file_is_regular(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* sha256 of a file, or of "path:<p>" for directories (safetensors dirs). */
static int hash_input(const char *p, char hex[65], qe_err *err)
{
    if (file_is_regular(p))
        return qe_sha256_file(p, hex, err);
    char buf[1100];
    int n = snprintf(buf, sizeof buf, "path:%s", p);
    qe_sha256_hex(buf, (size_t)n, hex);
    return 0;
}

static const char *default_text(const qe_model *m)
{
    static char p[1024];
    const char *root = qe_assets_dir();
    if (m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train <= 512) {
        snprintf(p, sizeof p, "%s/datasets/tinystories/tinystories_val.txt", root);
        if (file_is_regular(p))
            return p;
    }
    snprintf(p, sizeof p, "%s/datasets/wikitext2_raw/wiki.test.raw", root);
    return p;
}

/* The calibration text `run` collects an importance matrix from when a
 * mix needs one and neither --imatrix nor --calib is given: FLORES-200
 * devtest eng_Latn (1012 general-domain sentences).  It is not the
 * perplexity/KLD text (wikitext-2 test or TinyStories val); the default
 * suite's flores200-eng_Latn task reads the same sentences. */
static const char *default_calib_text(void)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/datasets/flores200/devtest/eng_Latn.devtest", qe_assets_dir());
    return p;
}

/* ------------------------------------------------------------ units */

/* Should this process run unit number u?  Counts every unit. */
static bool mine(runner *r)
{
    long long u = r->unit_index++;
    int n = r->o->shard_n > 1 ? r->o->shard_n : 1;
    return u % n == r->o->shard_i;
}

static int text_unit(runner *r, const qe_model *m, const variant_spec *v, int64_t vid, int c0,
                     int nc, qe_err *err)
{
    qe_unit u = {r->run_id, vid, r->text_task, c0, c0 + nc, 0};
    const int32_t *tok = r->tokens + (size_t)c0 * (size_t)r->n_ctx;
    size_t n = (size_t)nc * (size_t)r->n_ctx;
    qe_ppl_opts po = {.n_ctx = r->n_ctx, .n_chunks = nc, .n_threads = r->o->threads,
                      .bos = r->bos};
    qe_sample *sm = calloc((size_t)nc, sizeof *sm);
    qe_kld_chunk *kc = calloc((size_t)nc, sizeof *kc);
    float *kf = NULL;
    int rc = 0;
    if (!sm || !kc) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    if (v->is_reference) {
        qe_ppl_result pr = {0};
        if ((rc = qe_ppl_run(m, tok, n, &po, &pr, err)))
            goto out;
        for (int c = 0; c < nc; c++) {
            double s = 0, q = 0;
            for (int i = 0; i < pr.n_per_chunk; i++) {
                double x = pr.nll[(size_t)c * (size_t)pr.n_per_chunk + (size_t)i];
                s += x, q += x * x;
            }
            sm[c] = (qe_sample){.item = c0 + c, .metric = "nll", .value = s, .value2 = q,
                                .n_tokens = pr.n_per_chunk};
        }
        qe_ppl_result_free(&pr);
        rc = qe_store_unit_commit(r->s, &u, sm, (size_t)nc, NULL, 0, NULL, err);
    } else {
        qe_kld_result kr = {0};
        if ((rc = qe_kld_run(r->ref, m, tok, n, &po, &kr, err)))
            goto out;
        int per = kr.n_per_chunk;
        kf = malloc(kr.n * sizeof *kf);
        if (!kf) {
            qe_kld_result_free(&kr);
            rc = qe_err_set(err, QE_ENOMEM, "out of memory");
            goto out;
        }
        for (int c = 0; c < nc; c++) {
            double s = 0, q = 0;
            int top = 0;
            for (int i = 0; i < per; i++) {
                size_t k = (size_t)c * (size_t)per + (size_t)i;
                s += kr.nll_q[k], q += kr.nll_q[k] * kr.nll_q[k];
                kf[k] = (float)kr.kld[k];
                top += kr.same_top[k] != 0;
            }
            sm[c] = (qe_sample){.item = c0 + c, .metric = "nll", .value = s, .value2 = q,
                                .n_tokens = per};
            kc[c] = (qe_kld_chunk){.item = c0 + c, .n_tokens = per,
                                   .kld = kf + (size_t)c * (size_t)per, .n_top1_same = top};
        }
        qe_kld_result_free(&kr);
        rc = qe_store_unit_commit(r->s, &u, sm, (size_t)nc, kc, (size_t)nc, NULL, err);
    }
out:
    free(sm);
    free(kc);
    free(kf);
    return rc;
}

/* Does task t run through the chat template (--chat, or "chat": true)? */
static bool task_chat(const runner *r, const qe_task *t)
{
    return r->chat && t->output_type != QE_OUT_PERPLEXITY &&
           (r->o->chat || t->chat || (r->suite && r->suite->chat));
}

/* The reference's stored output for (task, item) of this run, malloc'd;
 * NULL if the reference has not stored it (yet: another shard). */
static char *ref_response(runner *r, int64_t task_id, int64_t item)
{
    sqlite3_stmt *st;
    char *out = NULL;
    if (sqlite3_prepare_v2(qe_store_db(r->s),
                           "SELECT s.response FROM samples s JOIN variants v ON v.id ="
                           " s.variant_id WHERE v.run_id = ? AND v.is_reference = 1 AND"
                           " s.task_id = ? AND s.item = ? AND s.response IS NOT NULL LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int64(st, 2, task_id);
    sqlite3_bind_int64(st, 3, item);
    if (sqlite3_step(st) == SQLITE_ROW)
        out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

/* Teacher-forced divergence of a generation task's items (see
 * harness/eval/teacher.h): for each item the reference's greedy output
 * (stored, or generated here by the reference when this process has not
 * seen it, e.g. under --shard) is scored after the item's prompt by both
 * models; one kld row per item (per-token KLD, top-1 agreement) and a
 * "tf_first_diff" sample.  *kc / *n_kc receive the rows (each kld array
 * malloc'd). */
static int tf_unit(runner *r, qe_lm *lm, const qe_model *m, const task_spec *ts,
                   const qe_task_result *res, qe_kld_chunk **kc, size_t *n_kc, qe_sample *sm,
                   size_t *n_sm, qe_err *err)
{
    const qe_task *t = ts->t;
    *kc = NULL;
    *n_kc = 0;
    if (!res->n_items)
        return 0;
    qe_kld_chunk *rows = calloc(res->n_items, sizeof *rows);
    if (!rows)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    qe_tf *tf = qe_tf_new(r->ref, m, r->n_ctx, r->o->threads, err);
    if (!tf) {
        free(rows);
        return err ? err->code : QE_EINVAL;
    }
    if (!r->tfc) /* an item's reference side is the same for every variant */
        r->tfc = qe_tf_cache_new(0);
    qe_tf_set_cache(tf, r->tfc);
    qe_lm ref_lm = {0};
    bool have_ref_lm = false;
    int rc = 0;
    size_t n = 0;
    /* --chat: the prompt is the template's render, whose special-token
     * texts are tokens (as when the item was evaluated) */
    bool chat = task_chat(r, t), ps_before = lm->parse_special;
    lm->parse_special = chat;
    for (size_t i = 0; i < res->n_items && !rc; i++) {
        const qe_item *it = &res->items[i];
        if (!it->prompt)
            continue;
        int64_t item = (int64_t)it->doc_index;
        char *resp = ref_response(r, ts->id, item);
        if (!resp) {
            if (!have_ref_lm) {
                if ((rc = qe_lm_infer_init(&ref_lm, r->ref, r->n_ctx, r->o->threads, err)))
                    break;
                ref_lm.parse_special = chat;
                have_ref_lm = true;
            }
            int32_t *ids = NULL;
            size_t ni = 0;
            rc = qe_lm_encode_context(&ref_lm, it->prompt, &ids, &ni, err);
            if (!rc)
                rc = ref_lm.ops->generate(&ref_lm, ids, ni, t->max_tokens,
                                          (const char *const *)t->until, t->n_until, &resp, err);
            free(ids);
            if (rc)
                break;
        }
        int32_t *ci = NULL, *ki = NULL;
        size_t nci = 0, nki = 0;
        if (resp[0])
            rc = qe_lm_encode_pair(lm, it->prompt, resp, &ci, &nci, &ki, &nki, err);
        free(resp);
        /* the context the generation saw: its last n_ctx - max_tokens ids
         * (harness/eval/lm.c keeps the end of a long prompt, as lm-eval) */
        int mt = t->max_tokens < 1 ? 1 : t->max_tokens >= r->n_ctx ? r->n_ctx - 1 : t->max_tokens;
        size_t room = (size_t)(r->n_ctx - mt), skip = nci > room ? nci - room : 0;
        if (!rc && nci > skip && nki > 0) {
            qe_tf_item ti;
            if (!(rc = qe_tf_score(tf, ci + skip, nci - skip, ki, nki, &ti, err))) {
                rows[n++] = (qe_kld_chunk){.item = item, .n_tokens = ti.n_tokens, .kld = ti.kld,
                                           .n_top1_same = ti.n_top1_same};
                sm[(*n_sm)++] = (qe_sample){.item = item, .metric = QE_METRIC_TF_FIRST_DIFF,
                                            .value = ti.first_diff, .n_tokens = ti.n_tokens};
            }
        }
        free(ci);
        free(ki);
    }
    lm->parse_special = ps_before;
    if (have_ref_lm)
        qe_lm_free(&ref_lm);
    qe_tf_free(tf);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            free((void *)rows[i].kld);
        free(rows);
        return rc;
    }
    *kc = rows;
    *n_kc = n;
    return 0;
}

/* Per-item samples of one slice of a task (and, for a generation task on
 * a variant other than the reference, its teacher-forced divergence). */
static int task_unit(runner *r, qe_lm *lm, const qe_model *model, bool is_ref,
                     const task_spec *ts, int64_t vid, int k, qe_err *err)
{
    qe_task *t = ts->t;
    int K = ts->n_slices;
    int64_t n_docs = (int64_t)t->docs.n;
    qe_unit u = {r->run_id, vid, ts->id, k, n_docs, K};
    qe_eval_opts eo = {0};
    if (task_chat(r, t))
        eo.chat = r->chat;
    eo.chat_system = r->o->chat_system;
    eo.chat_vars = r->o->chat_vars;
    eo.shard_i = k;
    eo.shard_n = K;
    if (ts->limit > 0) {
        long long L = ts->limit;
        eo.limit = L > k ? (size_t)((L - k + K - 1) / K) : 0;
        if (eo.limit == 0) /* nothing in this slice: mark it done */
            return qe_store_unit_commit(r->s, &u, NULL, 0, NULL, 0, NULL, err);
    }
    qe_task_result res = {0};
    int rc = qe_eval_task(lm, t, &eo, &res, err);
    if (rc)
        return rc;
    if (res.skipped[0]) {
        note("%s: %s\n", t->name, res.skipped);
        qe_task_result_free(&res);
        return qe_store_unit_commit(r->s, &u, NULL, 0, NULL, 0, NULL, err);
    }
    bool ppl = t->output_type == QE_OUT_PERPLEXITY;
    size_t cap = res.n_items * (size_t)(t->n_metrics > 0 ? t->n_metrics + 2 : 3) + 1, n = 0;
    qe_sample *sm = calloc(cap, sizeof *sm);
    if (!sm) {
        qe_task_result_free(&res);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < res.n_items; i++) {
        const qe_item *it = &res.items[i];
        int64_t item = (int64_t)it->doc_index;
        if (ppl) {
            /* rolling windows of one document add up into one item; value2
             * assumes equal token NLLs inside a window (no per-token data) */
            if (n && sm[n - 1].item == item) {
                sm[n - 1].value += it->nll;
                sm[n - 1].value2 += it->n_tokens > 0 ? it->nll * it->nll / it->n_tokens : 0;
                sm[n - 1].n_tokens += (int64_t)it->n_tokens;
            } else {
                sm[n++] = (qe_sample){.item = item, .metric = "nll", .value = it->nll,
                                      .value2 = it->n_tokens > 0
                                                    ? it->nll * it->nll / it->n_tokens
                                                    : 0,
                                      .n_tokens = (int64_t)it->n_tokens};
            }
            continue;
        }
        for (int m = 0; m < t->n_metrics; m++) {
            if (!isfinite(it->values[m]))
                continue;
            sm[n++] = (qe_sample){.item = item, .metric = t->metrics[m].name,
                                  .value = it->values[m], .n_tokens = 1,
                                  .response = m == 0 ? it->response : NULL,
                                  .extracted = m == 0 && it->filtered && t->n_filters > 0
                                                   ? it->filtered[0]
                                                   : NULL,
                                  .prompt_sha = m == 0 ? it->prompt_sha : NULL,
                                  .ids_sha = m == 0 ? it->ids_sha : NULL};
        }
        if (isfinite(it->ll_margin))
            sm[n++] = (qe_sample){.item = item, .metric = QE_METRIC_LL_MARGIN,
                                  .value = it->ll_margin, .n_tokens = 1};
    }
    qe_kld_chunk *kc = NULL;
    size_t n_kc = 0;
    bool gen = t->output_type == QE_OUT_GENERATE || t->output_type == QE_OUT_CODE_EXEC ||
               t->output_type == QE_OUT_EXACT_OUTPUT;
    if (gen && !is_ref)
        rc = tf_unit(r, lm, model, ts, &res, &kc, &n_kc, sm, &n, err);
    if (!rc)
        rc = qe_store_unit_commit(r->s, &u, sm, n, kc, n_kc, NULL, err);
    for (size_t i = 0; i < n_kc; i++)
        free((void *)kc[i].kld);
    free(kc);
    free(sm);
    qe_task_result_free(&res);
    return rc;
}

/* ------------------------------------------------------------ variants */

static void type_histogram(const qe_model *m, char *out, size_t cap)
{
    int count[QE_TYPE_COUNT] = {0};
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].type >= 0 && m->tensors[i].type < QE_TYPE_COUNT)
            count[m->tensors[i].type]++;
    size_t used = (size_t)snprintf(out, cap, "{");
    for (int t = 0; t < QE_TYPE_COUNT && used < cap; t++)
        if (count[t])
            used += (size_t)snprintf(out + used, cap - used, "%s\"%s\":%d", used > 1 ? "," : "",
                                     qe_type_name(t) ? qe_type_name(t) : "?", count[t]);
    if (used < cap)
        snprintf(out + used, cap - used, "}");
}

/* Pending units of a variant in this shard (advances the unit counter the
 * same way whether or not they run). */
typedef struct pending {
    int n_text;
    int *text_c0, *text_nc;
    int n_task;
    int *task_i, *task_k;
} pending;

static void pending_free(pending *p)
{
    free(p->text_c0);
    free(p->text_nc);
    free(p->task_i);
    free(p->task_k);
}

static int plan_variant(runner *r, int64_t vid, bool have_vid, pending *p, qe_err *err)
{
    memset(p, 0, sizeof *p);
    int U = r->o->unit_chunks >= 2 ? r->o->unit_chunks : 2;
    int n_units = r->n_chunks ? (r->n_chunks + U - 1) / U : 0;
    int n_tasks_units = 0;
    for (int i = 0; i < r->n_ts; i++)
        n_tasks_units += r->ts[i].n_slices;
    p->text_c0 = calloc((size_t)n_units + 1, sizeof(int));
    p->text_nc = calloc((size_t)n_units + 1, sizeof(int));
    p->task_i = calloc((size_t)n_tasks_units + 1, sizeof(int));
    p->task_k = calloc((size_t)n_tasks_units + 1, sizeof(int));
    if (!p->text_c0 || !p->text_nc || !p->task_i || !p->task_k)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    for (int c0 = 0; c0 < r->n_chunks; c0 += U) {
        int nc = r->n_chunks - c0 < U ? r->n_chunks - c0 : U;
        if (nc < 2) /* qe_ppl_run needs two chunks: fold into the previous unit */
            break;
        if (r->n_chunks - (c0 + nc) == 1)
            nc++;
        if (!mine(r))
            continue;
        bool done = false;
        if (have_vid) {
            qe_unit u = {r->run_id, vid, r->text_task, c0, c0 + nc, 0};
            int rc = qe_store_unit_done(r->s, &u, &done, err);
            if (rc)
                return rc;
        }
        if (done)
            r->n_done_before++;
        else
            p->text_c0[p->n_text] = c0, p->text_nc[p->n_text++] = nc;
    }
    for (int i = 0; i < r->n_ts; i++)
        for (int k = 0; k < r->ts[i].n_slices; k++) {
            if (!mine(r))
                continue;
            bool done = false;
            if (have_vid) {
                qe_unit u = {r->run_id, vid, r->ts[i].id, k, (int64_t)r->ts[i].t->docs.n,
                             r->ts[i].n_slices};
                int rc = qe_store_unit_done(r->s, &u, &done, err);
                if (rc)
                    return rc;
            }
            if (done)
                r->n_done_before++;
            else
                p->task_i[p->n_task] = i, p->task_k[p->n_task++] = k;
        }
    return 0;
}

static int existing_variant(runner *r, const char *name, int64_t *vid)
{
    qe_err e2 = {0};
    return qe_store_find_variant(r->s, r->run_id, name, vid, &e2) == 0;
}

/* Say plainly which tensors did not get the mix's type because their rows
 * do not fit its block (e.g. stories260K's 64- and 172-wide rows under a
 * 256-block type), grouped by (wanted, got, row length). */
static void note_fallbacks(const char *variant, const qe_quant_report *rep)
{
    if (!rep->n_fallback_llama && !rep->n_fallback_qeval)
        return;
    bool *done = calloc((size_t)rep->n_tensors, sizeof *done);
    if (!done)
        return;
    note("%s: %d of %d tensors fell back to another type (rows not a multiple of the type's "
         "block):\n",
         variant, rep->n_fallback_llama + rep->n_fallback_qeval, rep->n_tensors);
    for (int i = 0; i < rep->n_tensors; i++) {
        const qe_quant_tensor_info *t = &rep->tensors[i];
        if (done[i] || t->fallback == QE_FALLBACK_NONE)
            continue;
        int n = 0;
        const qe_quant_tensor_info *first = t;
        for (int j = i; j < rep->n_tensors; j++) {
            const qe_quant_tensor_info *u = &rep->tensors[j];
            if (!done[j] && u->fallback == t->fallback && u->wanted == t->wanted &&
                u->type == t->type) {
                done[j] = true;
                n++;
            }
        }
        note("  %d x %s -> %s (e.g. %s)%s\n", n, qe_type_name(first->wanted),
             qe_type_name(first->type), first->name,
             t->fallback == QE_FALLBACK_LLAMA ? ": llama.cpp's own substitution"
                                              : ": qeval's choice, llama.cpp aborts here");
    }
    free(done);
}

static qe_model *build_variant(runner *r, const variant_spec *v, qe_variant_info *vi,
                               char *hist, size_t hist_cap, qe_err *err)
{
    qe_model *m = NULL;
    if (v->is_reference)
        return r->ref;
    if (v->is_artifact) {
        m = qe_model_load(v->recipe_path, NULL, err);
        if (!m)
            return NULL;
    } else {
        qe_quant_opts qo;
        qe_quant_opts_init(&qo);
        qo.ftype = v->recipe ? qe_recipe_base_ftype(v->recipe) : v->ftype;
        qo.recipe = v->recipe;
        qo.imatrix = r->imatrix;
        qo.n_threads = r->o->threads;
        qe_quant_report rep = {0};
        m = qe_model_quantize(r->ref, &qo, &rep, err);
        if (!m) {
            qe_err_prefix(err, "variant %s", v->name);
            return NULL;
        }
        note_fallbacks(v->name, &rep);
        qe_quant_report_free(&rep);
        if (r->imatrix) {
            vi->imatrix_dataset = r->imx_dataset;
            vi->imatrix_chunks = r->imx_chunks;
            vi->imatrix_sha256 = r->imx_sha256;
        }
    }
    vi->n_params = qe_model_n_params(m);
    vi->size_nbytes = qe_model_tensor_nbytes(m);
    vi->bpw = vi->n_params ? 8.0 * (double)vi->size_nbytes / (double)vi->n_params : NAN;
    type_histogram(m, hist, hist_cap);
    vi->type_hist_json = hist;
    return m;
}

static int run_variant(runner *r, const variant_spec *v, qe_err *err)
{
    int64_t vid = -1;
    bool have = existing_variant(r, v->name, &vid);
    pending p;
    int rc = plan_variant(r, vid, have, &p, err);
    if (rc || (p.n_text == 0 && p.n_task == 0)) {
        pending_free(&p);
        return rc;
    }
    double t0 = qe_now();
    char hist[512] = "";
    qe_variant_info vi = {.name = v->name, .is_reference = v->is_reference,
                          .recipe = v->recipe ? qe_recipe_name(v->recipe) : "",
                          .recipe_sha256 = v->recipe_sha,
                          .artifact_sha256 = v->is_artifact ? v->recipe_sha : ""};
    qe_model *m = build_variant(r, v, &vi, hist, sizeof hist, err);
    if (!m) {
        pending_free(&p);
        return err ? err->code : QE_EINVAL;
    }
    if (v->is_reference) {
        vi.n_params = qe_model_n_params(m);
        vi.size_nbytes = qe_model_tensor_nbytes(m);
        vi.bpw = vi.n_params ? 8.0 * (double)vi.size_nbytes / (double)vi.n_params : NAN;
        type_histogram(m, hist, sizeof hist);
        vi.type_hist_json = hist;
    }
    if ((rc = qe_store_variant_put(r->s, r->run_id, &vi, &vid, err)))
        goto out;
    note("%s: %.2f bpw, %.1f KiB; %d text + %d task units to run\n",
            v->name, vi.bpw, (double)vi.size_nbytes / 1024.0, p.n_text, p.n_task);
    qe_progress pg;
    char label[64];
    qe_strlcpy(label, v->name, sizeof label);
    qe_progress_start(&pg, label, (uint64_t)(p.n_text + p.n_task));
    for (int i = 0; i < p.n_text && !rc; i++) {
        rc = text_unit(r, m, v, vid, p.text_c0[i], p.text_nc[i], err);
        r->n_run++;
        qe_progress_update(&pg, (uint64_t)i + 1);
    }
    if (!rc && p.n_task) {
        qe_lm lm = {0};
        const int par = r->o->parallel;
        if (!(rc = qe_lm_infer_init(&lm, m, r->n_ctx, r->o->threads, err)) &&
            (rc = qe_lm_set_parallel(&lm, par > 0 ? par : qe_lm_default_parallel(m, lm.n_ctx),
                                     err)))
            qe_lm_free(&lm);
        else if (!rc) {
            for (int i = 0; i < p.n_task && !rc; i++) {
                rc = task_unit(r, &lm, m, v->is_reference, &r->ts[p.task_i[i]], vid,
                               p.task_k[i], err);
                r->n_run++;
                qe_progress_update(&pg, (uint64_t)(p.n_text + i + 1));
            }
            qe_lm_free(&lm);
        }
    }
    qe_progress_end(&pg);
    if (!rc)
        note("%s done in %.1f s\n", v->name, qe_now() - t0);
out:
    if (m != r->ref)
        qe_model_free(m);
    pending_free(&p);
    if (rc)
        qe_err_prefix(err, "variant %s", v->name);
    return rc;
}

/* ------------------------------------------------------------ setup */

static int add_variant(runner *r, const variant_spec *v, qe_err *err)
{
    for (int i = 0; i < r->n_vs; i++)
        if (strcasecmp(r->vs[i].name, v->name) == 0)
            return 0; /* duplicate (e.g. F16 of an F16 model) */
    variant_spec *nv = realloc(r->vs, (size_t)(r->n_vs + 1) * sizeof *nv);
    if (!nv)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    r->vs = nv;
    r->vs[r->n_vs++] = *v;
    return 0;
}

static const char *ref_type_name(const qe_model *m)
{
    /* the dominant tensor type of the loaded model names the reference */
    int count[QE_TYPE_COUNT] = {0}, best = QE_TYPE_F32;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].type >= 0 && m->tensors[i].type < QE_TYPE_COUNT &&
            m->tensors[i].n_dims >= 2)
            count[m->tensors[i].type]++;
    for (int t = 0; t < QE_TYPE_COUNT; t++)
        if (count[t] > count[best])
            best = t;
    static char name[32];
    const char *n = qe_type_name(best);
    snprintf(name, sizeof name, "%s", n ? n : "ref");
    for (char *c = name; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return name;
}

static int setup_tasks(runner *r, qe_err *err)
{
    const qe_run_opts *o = r->o;
    if (!o->suite && !o->tasks)
        return 0;
    const qe_suite *su = r->suite;
    int n = su ? su->n : 0;
    char **names = NULL;
    long long *limits = NULL;
    int rc = 0;
    char *list = o->tasks ? strdup(o->tasks) : NULL;
    int n_list = 0;
    if (list)
        for (char *c = list; *c; c++)
            n_list += *c == ',';
    if (list)
        n_list++;
    names = calloc((size_t)(n + n_list) + 1, sizeof *names);
    limits = calloc((size_t)(n + n_list) + 1, sizeof *limits);
    if (!names || !limits || (o->tasks && !list)) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    int k = 0;
    for (int i = 0; i < n; i++)
        names[k] = su->entries[i].task, limits[k++] = (long long)su->entries[i].limit;
    if (list)
        for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
            if (*tok)
                names[k] = tok, limits[k++] = 0;
    r->ts = calloc((size_t)k + 1, sizeof *r->ts);
    if (!r->ts) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < k && !rc; i++) {
        task_spec *ts = &r->ts[r->n_ts];
        ts->t = qe_task_load_name(names[i], err);
        if (!ts->t) {
            rc = err ? err->code : QE_ENOTFOUND;
            break;
        }
        r->n_ts++;
        if ((rc = qe_task_load_data(ts->t, err)))
            break;
        long long lim = limits[i];
        if (o->limit > 0 && (lim == 0 || o->limit < lim))
            lim = o->limit;
        ts->limit = lim;
        long long n_items = lim > 0 && lim < (long long)ts->t->docs.n ? lim
                                                                     : (long long)ts->t->docs.n;
        ts->n_slices = n_items < TASK_SLICES ? (n_items > 0 ? (int)n_items : 1) : TASK_SLICES;
        const int ot = ts->t->output_type;
        if (ot == QE_OUT_GENERATE || ot == QE_OUT_CODE_EXEC || ot == QE_OUT_EXACT_OUTPUT) {
            /* generation batches the items of a unit: keep GEN_SLICE_ITEMS or more per
             * unit (a fixed count, not --parallel, which must not change the run key) */
            const long long g = n_items / GEN_SLICE_ITEMS;
            ts->n_slices = g < 1 ? 1 : g > TASK_SLICES ? TASK_SLICES : (int)g;
        }
        char version[16], protocol[160];
        snprintf(version, sizeof version, "%d", ts->t->version);
        /* through a chat template: its sha256 names the task row of every sample */
        char chat[40] = "";
        if (task_chat(r, ts->t))
            snprintf(chat, sizeof chat, " chat=%.16s", r->chat->sha256);
        snprintf(protocol, sizeof protocol, "%s fewshot=%d ctx=%d limit=%lld slices=%d%s",
                 qe_output_type_name(ts->t->output_type), ts->t->fewshot_n, r->n_ctx, lim,
                 ts->n_slices, chat);
        bool is_ppl = ts->t->output_type == QE_OUT_PERPLEXITY;
        qe_task_info ti = {.name = ts->t->name, .version = version, .family = ts->t->family,
                           .language = ts->t->language, .data_sha256 = ts->t->data_sha256,
                           .protocol = protocol,
                           .metric = is_ppl ? "nll"
                                     : ts->t->n_metrics ? ts->t->metrics[0].name
                                                        : ""};
        rc = qe_store_task_put(r->s, &ti, &ts->id, err);
    }
out:
    free(list);
    free(names);
    free(limits);
    return rc;
}

static int setup_text(runner *r, qe_err *err)
{
    const char *path = r->o->text_path ? r->o->text_path : default_text(r->ref);
    char *text = NULL;
    size_t n = 0;
    int rc = qe_read_file(path, &text, &n, err);
    if (rc)
        return qe_err_prefix(err, "perplexity text");
    char sha[65];
    qe_sha256_hex(text, n, sha);
    rc = qe_tokenize(r->ref->tok, text, n, true, false, &r->tokens, &r->n_tokens, err);
    free(text);
    if (rc)
        return qe_err_prefix(err, "%s: tokenizing", path);
    r->bos = qe_tokenizer_add_bos(r->ref->tok) ? qe_tokenizer_bos(r->ref->tok) : -1;
    r->n_chunks = (int)(r->n_tokens / (size_t)r->n_ctx);
    /* the suite may cap the text, as it caps each task */
    if (r->suite && r->suite->text_chunks > 0 && r->n_chunks > r->suite->text_chunks)
        r->n_chunks = r->suite->text_chunks;
    if (r->o->limit > 0 && r->n_chunks > r->o->limit)
        r->n_chunks = (int)r->o->limit;
    if (r->n_chunks < 2)
        return qe_err_set(err, QE_EINVAL,
                          "%s: %zu tokens make %d chunks of %d; the perplexity protocol needs at "
                          "least 2 (use a longer --text or a smaller --ctx)",
                          path, r->n_tokens, r->n_chunks, r->n_ctx);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char name[96], protocol[128];
    snprintf(name, sizeof name, "ppl:%.80s", base);
    snprintf(protocol, sizeof protocol, "llama.cpp-ppl ctx=%d chunks=%d bos=%s", r->n_ctx,
             r->n_chunks, r->bos >= 0 ? "yes" : "no");
    qe_task_info ti = {.name = name, .version = "1", .family = "text", .language = "",
                       .data_sha256 = sha, .protocol = protocol, .metric = "nll"};
    return qe_store_task_put(r->s, &ti, &r->text_task, err);
}

static int setup_variants(runner *r, qe_err *err)
{
    const qe_run_opts *o = r->o;
    variant_spec ref = {.ftype = -1, .is_reference = true};
    snprintf(ref.name, sizeof ref.name, "%s", ref_type_name(r->ref));
    int rc = add_variant(r, &ref, err);
    if (rc)
        return rc;
    if (o->artifact_path) {
        variant_spec a = {.ftype = -1, .is_artifact = true, .recipe_path = o->artifact_path};
        if ((rc = qe_sha256_file(o->artifact_path, a.recipe_sha, err)))
            return rc;
        qe_model *m = qe_model_load(o->artifact_path, NULL, err);
        if (!m)
            return err ? err->code : QE_EFORMAT;
        const char *ft = m->cfg.file_type >= 0 ? qe_ftype_name(m->cfg.file_type) : NULL;
        snprintf(a.name, sizeof a.name, "%s@%.8s", ft ? ft : "file", a.recipe_sha);
        qe_model_free(m);
        return add_variant(r, &a, err);
    }
    const char *q = o->quants ? o->quants : QE_RUN_DEFAULT_QUANTS;
    char buf[512];
    if (qe_strlcpy(buf, q, sizeof buf) >= sizeof buf)
        return qe_err_set(err, QE_EINVAL, "--quants: list too long");
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!*tok)
            continue;
        int ft = qe_ftype_from_name(tok);
        if (ft < 0)
            return qe_err_set(err, QE_EINVAL, "--quants: unknown type '%s' (expected one of %s)",
                              tok, qe_ftype_names());
        variant_spec v = {.ftype = ft};
        snprintf(v.name, sizeof v.name, "%s", qe_ftype_name(ft));
        if ((rc = add_variant(r, &v, err)))
            return rc;
    }
    for (int i = 0; i < o->n_recipes; i++) {
        variant_spec v = {.ftype = -1, .recipe_path = o->recipes[i]};
        if ((rc = qe_sha256_file(o->recipes[i], v.recipe_sha, err)))
            return rc;
        v.recipe = qe_recipe_load(o->recipes[i], err);
        if (!v.recipe)
            return err ? err->code : QE_EJSON;
        const char *nm = qe_recipe_name(v.recipe);
        const char *base = strrchr(o->recipes[i], '/') ? strrchr(o->recipes[i], '/') + 1
                                                        : o->recipes[i];
        snprintf(v.name, sizeof v.name, "recipe:%.80s", nm && *nm ? nm : base);
        if ((rc = add_variant(r, &v, err))) {
            qe_recipe_free(v.recipe);
            return rc;
        }
    }
    return 0;
}

static void runner_free(runner *r)
{
    for (int i = 0; i < r->n_vs; i++)
        qe_recipe_free(r->vs[i].recipe);
    free(r->vs);
    for (int i = 0; i < r->n_ts; i++)
        qe_task_free(r->ts[i].t);
    free(r->ts);
    qe_suite_free(r->suite);
    qe_chat_template_free(r->chat_own);
    free(r->tokens);
    if (r->imatrix)
        qe_imatrix_free(r->imatrix);
    qe_model_free(r->ref);
    qe_tf_cache_free(r->tfc);
    qe_store_close(r->s);
}

/* The importance matrix of the run: --imatrix, or collected once from
 * --calib, or (when a requested mix needs one and neither is given)
 * collected from the default calibration text.  run_sha (the run key's
 * "imatrix" field) is the sha256 of the imatrix file or of the
 * calibration text; r->imx_* the provenance stored with each variant. */
static int setup_imatrix(runner *r, char run_sha[65], qe_err *err)
{
    const qe_run_opts *o = r->o;
    const char *calib = o->calib_path;
    int rc;
    if (!o->imatrix_path && !calib) {
        const char *needs = NULL;
        for (int i = 0; i < r->n_vs && !needs; i++) {
            int ft = r->vs[i].recipe ? qe_recipe_base_ftype(r->vs[i].recipe) : r->vs[i].ftype;
            if (ft >= 0 && qe_ftype_get(ft) && qe_ftype_get(ft)->needs_imatrix)
                needs = r->vs[i].name;
        }
        if (!needs)
            return 0;
        calib = default_calib_text();
        if (!file_is_regular(calib))
            return qe_err_set(err, QE_ENOTFOUND,
                              "%s needs an importance matrix and the default calibration text "
                              "%s is missing: pass --calib TEXT or --imatrix FILE",
                              needs, calib);
        note("%s needs an importance matrix: collecting one from the default calibration text "
             "%s (FLORES-200 devtest eng_Latn; --calib TEXT or --imatrix FILE to choose)\n",
             needs, calib);
    }
    if (o->imatrix_path) {
        if ((rc = qe_sha256_file(o->imatrix_path, run_sha, err)))
            return rc;
        if (!(r->imatrix = qe_imatrix_load(o->imatrix_path, err)))
            return err ? err->code : QE_EFORMAT;
        const qe_imatrix *im = r->imatrix;
        const char *b = strrchr(o->imatrix_path, '/');
        snprintf(r->imx_dataset, sizeof r->imx_dataset, "%s%s%s%s",
                 im->n_datasets ? im->datasets[im->n_datasets - 1] : "",
                 im->n_datasets ? " (via " : "", b ? b + 1 : o->imatrix_path,
                 im->n_datasets ? ")" : "");
        r->imx_chunks = im->chunk_count;
        memcpy(r->imx_sha256, run_sha, 65);
        return 0;
    }
    char *text = NULL;
    size_t n = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if ((rc = qe_sha256_file(calib, run_sha, err)) || (rc = qe_read_file(calib, &text, &n, err)))
        return rc;
    rc = qe_tokenize(r->ref->tok, text, n, true, false, &ids, &n_ids, err);
    free(text);
    if (rc)
        return rc;
    qe_imatrix_collect_opts io = {.n_ctx = r->n_ctx, .n_threads = o->threads, .dataset = calib};
    r->imatrix = qe_imatrix_collect(r->ref, ids, n_ids, &io, NULL, err);
    free(ids);
    if (!r->imatrix)
        return err ? err->code : QE_EINVAL;
    uint8_t *dat = NULL;
    size_t nd = 0;
    if ((rc = qe_imatrix_write_dat_mem(r->imatrix, &dat, &nd, err)))
        return rc;
    qe_sha256_hex(dat, nd, r->imx_sha256);
    free(dat);
    const char *b = strrchr(calib, '/');
    qe_strlcpy(r->imx_dataset, b ? b + 1 : calib, sizeof r->imx_dataset);
    r->imx_chunks = r->imatrix->chunk_count;
    note("imatrix: %d entries from %s, %d chunks of %d tokens, sha256 %.16s...; used for every "
         "quantized variant\n",
         r->imatrix->n_entries, r->imx_dataset, r->imx_chunks, r->n_ctx, r->imx_sha256);
    return 0;
}

/* Does a suite or task spec of the run ask for its chat template ("chat": true)? */
static bool specs_want_chat(const qe_run_opts *o)
{
    bool want = false;
    qe_err e = {0};
    if (o->suite) {
        qe_suite *s = qe_suite_load_name(o->suite, &e);
        for (int k = 0; s && k < s->n && !want; k++) {
            qe_task *t = qe_task_load_name(s->entries[k].task, &e);
            want = t && t->chat;
            qe_task_free(t);
        }
        want = want || (s && s->chat);
        qe_suite_free(s);
    }
    if (o->tasks && !want) {
        char *dup = strdup(o->tasks), *save = NULL;
        for (char *tk = dup ? strtok_r(dup, ",", &save) : NULL; tk && !want;
             tk = strtok_r(NULL, ",", &save)) {
            qe_task *t = qe_task_load_name(tk, &e);
            want = t && t->chat;
            qe_task_free(t);
        }
        free(dup);
    }
    return want; /* load errors are reported later, where the specs are loaded for real */
}

int qe_run_execute(const qe_run_opts *o, int64_t *run_id, qe_err *err)
{
    runner r = {.o = o};
    int rc = 0;
    char model_sha[65] = "", imx_sha[65] = "", recipes_sha[65] = "", quants[600];
    if (o->shard_n < 1 || o->shard_i < 0 || o->shard_i >= o->shard_n)
        return qe_err_set(err, QE_EINVAL, "shard %d/%d: expected 0 <= I < N", o->shard_i,
                          o->shard_n);
    if (o->imatrix_path && o->calib_path)
        return qe_err_set(err, QE_EINVAL, "give --imatrix or --calib, not both");
    double t0 = qe_now();
    r.ref = qe_model_load(o->model_path, NULL, err);
    if (!r.ref)
        return err ? err->code : QE_EIO;
    if ((rc = hash_input(o->model_path, model_sha, err)))
        goto out;
    r.n_ctx = o->n_ctx > 0 ? o->n_ctx
              : r.ref->cfg.n_ctx_train > 0 && r.ref->cfg.n_ctx_train < 512 ? r.ref->cfg.n_ctx_train
                                                                           : 512;
    if (o->n_recipes) {
        qe_sha256_ctx c;
        qe_sha256_init(&c);
        for (int i = 0; i < o->n_recipes; i++) {
            char h[65];
            if ((rc = qe_sha256_file(o->recipes[i], h, err)))
                goto out;
            qe_sha256_update(&c, h, 64);
        }
        uint8_t d[32];
        qe_sha256_final(&c, d);
        qe_sha256_digest_hex(d, recipes_sha);
    }
    if (!(r.s = qe_store_open(o->db_path ? o->db_path : "results.db", err))) {
        rc = err ? err->code : QE_EDB;
        goto out;
    }
    if ((rc = setup_variants(&r, err)))
        goto out;
    if ((rc = setup_imatrix(&r, imx_sha, err)))
        goto out;
    quants[0] = '\0';
    for (int i = 0; i < r.n_vs; i++) {
        size_t l = strlen(quants);
        snprintf(quants + l, sizeof quants - l, "%s%s%s%.12s", i ? "," : "", r.vs[i].name,
                 r.vs[i].recipe_sha[0] ? "#" : "", r.vs[i].recipe_sha);
    }
    char suite[512], chat_id[128] = "";
    r.chat = o->chat;
    if (!r.chat && specs_want_chat(o)) {
        if (!(r.chat_own = qe_chat_template_load(o->model_path, NULL, NULL, err))) {
            rc = err ? err->code : QE_ENOTFOUND;
            goto out;
        }
        r.chat = r.chat_own;
    }
    if (r.chat) {
        /* a run through another template, system message or variables is another run */
        char *vars = o->chat_vars ? cJSON_PrintUnformatted(o->chat_vars) : NULL;
        char sys_sha[65] = "", vars_sha[65] = "";
        if (o->chat_system)
            qe_sha256_hex(o->chat_system, strlen(o->chat_system), sys_sha);
        if (vars && strcmp(vars, "{}") != 0)
            qe_sha256_hex(vars, strlen(vars), vars_sha);
        snprintf(chat_id, sizeof chat_id, " chat=%.16s%s%.8s%s%.8s", r.chat->sha256,
                 sys_sha[0] ? " system=" : "", sys_sha, vars_sha[0] ? " vars=" : "", vars_sha);
        free(vars);
    }
    snprintf(suite, sizeof suite, "%s%s%s ctx=%d text=%s%s", o->suite ? o->suite : "",
             o->suite && o->tasks ? "+" : "", o->tasks ? o->tasks : "", r.n_ctx,
             o->text_path ? o->text_path : "default", chat_id);
    /* the model's own name, or its file stem when the metadata has none */
    char mname[128];
    if (r.ref->cfg.name[0] && strcmp(r.ref->cfg.name, r.ref->cfg.arch) != 0) {
        qe_strlcpy(mname, r.ref->cfg.name, sizeof mname);
    } else {
        const char *b = strrchr(o->model_path, '/') ? strrchr(o->model_path, '/') + 1
                                                     : o->model_path;
        qe_strlcpy(mname, b, sizeof mname);
        char *dot = strrchr(mname, '.');
        if (dot && dot != mname)
            *dot = '\0';
    }
    qe_run_info ri = {.label = o->label, .model_path = o->model_path,
                      .model_name = mname, .model_sha256 = model_sha,
                      .imatrix_sha256 = imx_sha, .suite = suite, .quants = quants,
                      .recipes_sha256 = recipes_sha, .args = o->args, .limit = o->limit,
                      .threads = o->threads > 0 ? o->threads : omp_get_max_threads(),
                      .shard_i = o->shard_i, .shard_n = o->shard_n};
    bool resumed = false;
    if ((rc = qe_store_run_begin(r.s, &ri, &r.run_id, &resumed, err)))
        goto out;
    *run_id = r.run_id;
    if (o->suite && !(r.suite = qe_suite_load_name(o->suite, err))) {
        rc = err ? err->code : QE_ENOTFOUND;
        goto out;
    }
    if ((rc = setup_text(&r, err)) || (rc = setup_tasks(&r, err)))
        goto out;
    note("run %lld%s: %s, %d variants, text %d chunks x %d, %d tasks\n",
            (long long)r.run_id, resumed ? " (resuming)" : "", mname, r.n_vs,
            r.n_chunks, r.n_ctx, r.n_ts);
    for (int i = 0; i < r.n_vs && !rc; i++)
        rc = run_variant(&r, &r.vs[i], err);
    if (!rc)
        rc = qe_store_run_finish(r.s, r.run_id, err);
    if (!rc)
        note("%lld units run, %lld already done, %.1f s\n", r.n_run,
                r.n_done_before, qe_now() - t0);
out:
    runner_free(&r);
    return rc;
}

int qe_store_eval_artifact(const char *gguf_path, const char *reference_model,
                           const char *db_path, const qe_run_opts *base, int64_t *run_id,
                           qe_err *err)
{
    qe_run_opts o;
    if (base)
        o = *base;
    else
        qe_run_opts_init(&o);
    o.model_path = reference_model;
    o.artifact_path = gguf_path;
    if (db_path)
        o.db_path = db_path;
    o.n_recipes = 0;
    o.recipes = NULL;
    return qe_run_execute(&o, run_id, err);
}

/* ------------------------------------------------------ time budget */

typedef struct plan_task {
    qe_task *t;
    long long avail;   /* items the task can run (suite limit applied) */
    double cost;       /* seconds per item on the reference */
    bool gen;          /* generation: teacher forcing on every other variant */
} plan_task;

/* Measured costs (seconds) behind the plan. */
typedef struct plan_costs {
    double ref_chunk;  /* one perplexity chunk on the reference */
    double kld_chunk;  /* one lockstep chunk (reference + quantized variant) */
    double q_ratio;    /* quantized / reference time of a forward pass */
    double quantize;   /* building one variant */
    int V;             /* variants, the reference included */
} plan_costs;

static double plan_cost(const plan_task *pt, int n_pt, long long n_chunks, const plan_costs *c,
                        long long L)
{
    double ch = (double)(L < n_chunks ? L : n_chunks);
    double s = ch * c->ref_chunk + (c->V - 1) * (c->quantize + ch * c->kld_chunk);
    for (int j = 0; j < n_pt; j++) {
        double n = (double)(L < pt[j].avail ? L : pt[j].avail);
        s += n * pt[j].cost * (1 + (c->V - 1) * c->q_ratio);
        if (pt[j].gen) /* teacher forcing: at most a full window, both models */
            s += n * (c->V - 1) * c->kld_chunk;
    }
    return s;
}

int qe_run_plan_budget(qe_run_opts *o, double budget_s, FILE *out, qe_err *err)
{
    double t0 = qe_now();
    plan_task *pt = NULL;
    int n_pt = 0, rc = 0;
    qe_suite *su = NULL;
    qe_lm lm = {0};
    bool have_lm = false;
    qe_model *qm = NULL;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    char *list = NULL;
    plan_costs c = {.V = 1 + o->n_recipes, .q_ratio = 1};
    qe_model *m = qe_model_load(o->model_path, NULL, err);
    if (!m)
        return err ? err->code : QE_EIO;
    int n_ctx = o->n_ctx > 0 ? o->n_ctx
                : m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train < 512 ? m->cfg.n_ctx_train
                                                                     : 512;
    const char *q = o->quants ? o->quants : QE_RUN_DEFAULT_QUANTS;
    for (const char *p = q; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        c.V += l > 0;
        p += l + (e != NULL);
    }
    /* the text, and what its chunks cost: 2 chunks of perplexity on the
     * reference, and of lockstep KLD against a Q4_K_M build of it */
    const char *path = o->text_path ? o->text_path : default_text(m);
    char *text = NULL;
    size_t tn = 0;
    if ((rc = qe_read_file(path, &text, &tn, err))) {
        qe_err_prefix(err, "perplexity text");
        goto out;
    }
    rc = qe_tokenize(m->tok, text, tn, true, false, &tokens, &n_tokens, err);
    free(text);
    if (rc)
        goto out;
    if (o->suite && !(su = qe_suite_load_name(o->suite, err))) {
        rc = err ? err->code : QE_ENOTFOUND;
        goto out;
    }
    long long n_chunks = (long long)(n_tokens / (size_t)n_ctx);
    if (su && su->text_chunks > 0 && n_chunks > su->text_chunks)
        n_chunks = su->text_chunks;
    if (n_chunks < 2) {
        rc = qe_err_set(err, QE_EINVAL, "%s: %zu tokens make fewer than 2 chunks of %d", path,
                        n_tokens, n_ctx);
        goto out;
    }
    qe_ppl_opts po = {.n_ctx = n_ctx, .n_chunks = 2, .n_threads = o->threads,
                      .bos = qe_tokenizer_add_bos(m->tok) ? qe_tokenizer_bos(m->tok) : -1};
    qe_ppl_result pr;
    qe_kld_result kr;
    double a = qe_now();
    if ((rc = qe_ppl_run(m, tokens, n_tokens, &po, &pr, err)))
        goto out;
    qe_ppl_result_free(&pr);
    c.ref_chunk = (qe_now() - a) / 2;
    if (c.V > 1) {
        qe_quant_opts qo;
        qe_quant_opts_init(&qo);
        qo.ftype = qe_ftype_from_name("Q4_K_M");
        qo.n_threads = o->threads;
        qe_quant_report rep = {0};
        a = qe_now();
        if (!(qm = qe_model_quantize(m, &qo, &rep, err))) {
            rc = err ? err->code : QE_EINVAL;
            goto out;
        }
        qe_quant_report_free(&rep);
        c.quantize = qe_now() - a;
        a = qe_now();
        if ((rc = qe_kld_run(m, qm, tokens, n_tokens, &po, &kr, err)))
            goto out;
        qe_kld_result_free(&kr);
        c.kld_chunk = (qe_now() - a) / 2;
        a = qe_now();
        if ((rc = qe_ppl_run(qm, tokens, n_tokens, &po, &pr, err)))
            goto out;
        qe_ppl_result_free(&pr);
        c.q_ratio = c.ref_chunk > 0 ? (qe_now() - a) / 2 / c.ref_chunk : 1;
    }
    /* tasks: the suite's, then --tasks; 2 items of each on the reference */
    int cap = (su ? su->n : 0) + 1;
    if (o->tasks)
        for (const char *p = o->tasks; *p; p++)
            cap += *p == ',';
    pt = calloc((size_t)cap + 1, sizeof *pt);
    list = o->tasks ? strdup(o->tasks) : NULL;
    if (!pt || (o->tasks && !list)) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = qe_lm_infer_init(&lm, m, n_ctx, o->threads, err)))
        goto out;
    have_lm = true;
    char *save = NULL, *tok = list ? strtok_r(list, ",", &save) : NULL;
    for (int i = 0; !rc && (i < (su ? su->n : 0) || tok); i++) {
        const char *name;
        long long lim = 0;
        if (su && i < su->n)
            name = su->entries[i].task, lim = (long long)su->entries[i].limit;
        else {
            name = tok;
            tok = strtok_r(NULL, ",", &save);
            if (!*name)
                continue;
        }
        plan_task *p = &pt[n_pt];
        if (!(p->t = qe_task_load_name(name, err))) {
            rc = err ? err->code : QE_ENOTFOUND;
            break;
        }
        n_pt++;
        if ((rc = qe_task_load_data(p->t, err)))
            break;
        p->avail = lim > 0 && lim < (long long)p->t->docs.n ? lim : (long long)p->t->docs.n;
        p->gen = p->t->output_type == QE_OUT_GENERATE || p->t->output_type == QE_OUT_CODE_EXEC ||
                 p->t->output_type == QE_OUT_EXACT_OUTPUT;
        long long probe = p->avail < 2 ? p->avail : 2;
        if (probe > 0) {
            qe_eval_opts eo = {.limit = (size_t)probe};
            qe_task_result res = {0};
            a = qe_now();
            if ((rc = qe_eval_task(&lm, p->t, &eo, &res, err)))
                break;
            p->cost = res.skipped[0] ? 0 : (qe_now() - a) / (double)probe;
            qe_task_result_free(&res);
        }
    }
    if (rc)
        goto out;
    double probe_s = qe_now() - t0;
    double avail_s = 0.95 * budget_s - probe_s;
    long long maxL = n_chunks;
    for (int j = 0; j < n_pt; j++)
        if (pt[j].avail > maxL)
            maxL = pt[j].avail;
    long long L = 2;
    if (plan_cost(pt, n_pt, n_chunks, &c, maxL) <= avail_s) {
        L = maxL;
    } else { /* the largest L that fits (the cost grows with L) */
        long long lo = 2, hi = maxL;
        while (lo < hi) {
            long long mid = lo + (hi - lo + 1) / 2;
            if (plan_cost(pt, n_pt, n_chunks, &c, mid) <= avail_s)
                lo = mid;
            else
                hi = mid - 1;
        }
        L = lo;
    }
    if (o->limit > 0 && o->limit < L)
        L = o->limit < 2 ? 2 : o->limit;
    fprintf(out, "plan: budget %.0f s, %d variants, ctx %d; probe %.1f s: text chunk %.3f s on "
                 "the reference, %.3f s in lockstep with Q4_K_M (%.2fx its forward time), %.1f s "
                 "to quantize; 5%% held back\n",
            budget_s, c.V, n_ctx, probe_s, c.ref_chunk, c.kld_chunk, c.q_ratio, c.quantize);
    fprintf(out, "plan: %-24s %8s %8s %12s %10s %16s\n", "task", "items", "of", "s/item (ref)",
            "est. s", "MDE (10% flips)");
    long long tc = L < n_chunks ? L : n_chunks;
    fprintf(out, "plan: %-24s %8lld %8lld %12.3f %10.1f %16s\n", "text (ppl/KLD chunks)", tc,
            n_chunks, c.ref_chunk, (double)tc * (c.ref_chunk + (c.V - 1) * c.kld_chunk), "-");
    for (int j = 0; j < n_pt; j++) {
        long long n = L < pt[j].avail ? L : pt[j].avail;
        double est = (double)n * pt[j].cost * (1 + (c.V - 1) * c.q_ratio) +
                     (pt[j].gen ? (double)n * (c.V - 1) * c.kld_chunk : 0);
        char mde[32] = "-";
        if (pt[j].t->output_type != QE_OUT_PERPLEXITY && n > 0) {
            double d = qe_stats_mde_mcnemar((size_t)n, (size_t)llround(0.1 * (double)n), 0.05,
                                            0.8);
            if (isfinite(d))
                snprintf(mde, sizeof mde, "%.1f pts", 100 * d);
            else
                snprintf(mde, sizeof mde, "none (n=%lld)", n);
        }
        fprintf(out, "plan: %-24s %8lld %8lld %12.3f %10.1f %16s\n", pt[j].t->name, n,
                pt[j].avail, pt[j].cost, est, mde);
    }
    double total = plan_cost(pt, n_pt, n_chunks, &c, L);
    fprintf(out, "plan: --limit %lld per task (the same item count for every task keeps the "
                 "largest MDE smallest): estimated %.0f s of %.0f s%s\n",
            L, total + probe_s, budget_s,
            total > avail_s ? " (over budget: even 2 items per task do not fit)" : "");
    o->limit = L;
out:
    if (have_lm)
        qe_lm_free(&lm);
    for (int j = 0; j < n_pt; j++)
        qe_task_free(pt[j].t);
    free(pt);
    free(list);
    free(tokens);
    qe_suite_free(su);
    qe_model_free(qm);
    qe_model_free(m);
    return rc;
}
