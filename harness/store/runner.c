/*
 * runner.c: `qeval run` / `qeval eval` engine (see runner.h for the work
 * units and their order).
 *
 */
#include "runner.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../quant/quant.h"
#include "../../quant/recipe.h"
#include "../eval/lm.h"
#include "../eval/task.h"
#include "../infer/ppl.h"
#include "../model/imatrix_io.h"
#include "../model/model.h"
#include "../model/quantize_model.h"
#include "../model/recipe_json.h"
#include "../model/tokenizer.h"
#include "../util/sha256.h"
#include "store.h"


#define TASK_SLICES 4

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
    long long n_run, n_skipped, n_done_before;
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

/* Per-item samples of one slice of a task. */
static int task_unit(runner *r, qe_lm *lm, const task_spec *ts, int64_t vid, int k, qe_err *err)
{
    qe_task *t = ts->t;
    int K = ts->n_slices;
    int64_t n_docs = (int64_t)t->docs.n;
    qe_unit u = {r->run_id, vid, ts->id, k, n_docs, K};
    qe_eval_opts eo = {0};
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
    size_t cap = res.n_items * (size_t)(t->n_metrics > 0 ? t->n_metrics : 1) + 1, n = 0;
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
    }
    rc = qe_store_unit_commit(r->s, &u, sm, n, NULL, 0, NULL, err);
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
        qe_quant_report_free(&rep);
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
                rc = task_unit(r, &lm, &r->ts[p.task_i[i]], vid, p.task_k[i], err);
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
        char version[16], protocol[160];
        snprintf(version, sizeof version, "%d", ts->t->version);
        snprintf(protocol, sizeof protocol, "%s fewshot=%d ctx=%d limit=%lld slices=%d",
                 qe_output_type_name(ts->t->output_type), ts->t->fewshot_n, r->n_ctx, lim,
                 ts->n_slices);
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
    free(r->tokens);
    if (r->imatrix)
        qe_imatrix_free(r->imatrix);
    qe_model_free(r->ref);
    qe_store_close(r->s);
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
    if (o->imatrix_path) {
        if ((rc = qe_sha256_file(o->imatrix_path, imx_sha, err)))
            goto out;
        if (!(r.imatrix = qe_imatrix_load(o->imatrix_path, err))) {
            rc = err ? err->code : QE_EFORMAT;
            goto out;
        }
    } else if (o->calib_path) {
        char *text = NULL;
        size_t n = 0;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if ((rc = qe_sha256_file(o->calib_path, imx_sha, err)) ||
            (rc = qe_read_file(o->calib_path, &text, &n, err)))
            goto out;
        rc = qe_tokenize(r.ref->tok, text, n, true, false, &ids, &n_ids, err);
        free(text);
        if (rc)
            goto out;
        qe_imatrix_collect_opts io = {.n_ctx = r.n_ctx, .n_threads = o->threads,
                                      .dataset = o->calib_path};
        r.imatrix = qe_imatrix_collect(r.ref, ids, n_ids, &io, NULL, err);
        free(ids);
        if (!r.imatrix) {
            rc = err ? err->code : QE_EINVAL;
            goto out;
        }
    }
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
    quants[0] = '\0';
    for (int i = 0; i < r.n_vs; i++) {
        size_t l = strlen(quants);
        snprintf(quants + l, sizeof quants - l, "%s%s%s%.12s", i ? "," : "", r.vs[i].name,
                 r.vs[i].recipe_sha[0] ? "#" : "", r.vs[i].recipe_sha);
    }
    char suite[512];
    snprintf(suite, sizeof suite, "%s%s%s ctx=%d text=%s", o->suite ? o->suite : "",
             o->suite && o->tasks ? "+" : "", o->tasks ? o->tasks : "", r.n_ctx,
             o->text_path ? o->text_path : "default");
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
