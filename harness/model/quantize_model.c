/*
 * quantize_model.c: quantize a qe_model in memory, write a qe_model as
 * GGUF, collect an importance matrix (see quantize_model.h).
 *
 * Must not hold: per-tensor type rules (quant/recipe.c), row quantizers
 * (quant/), CLI parsing (harness/cli/cmd_quantize.c, cmd_imatrix.c).
 */
#include "quantize_model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../quant/quant.h"
#include "../../quant/recipe.h"
#include "../infer/infer.h"
#include "gguf.h"
#include "tokenizer.h"

void qe_quant_opts_init(qe_quant_opts *o)
{
    memset(o, 0, sizeof *o);
    o->ftype = -1;
    o->output_type = -1;
    o->token_embd_type = -1;
}

void qe_quant_report_free(qe_quant_report *r)
{
    if (!r)
        return;
    free(r->tensors);
    r->tensors = NULL;
    r->n_tensors = 0;
}

static uint64_t n_elements(const qe_tensor *t)
{
    return (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
}

/* Source tensor -> f32 (caller-owned out of n_elements floats), OpenMP
 * over row blocks. */
static int to_f32(const qe_tensor *t, float *out, int n_threads, qe_err *err)
{
    const qe_type_traits *tr = qe_type_get(t->type);
    if (!tr || !tr->to_float)
        return qe_err_set(err, QE_EUNSUPPORTED, "tensor '%s': no dequantizer for type %s", t->name,
                          qe_type_name(t->type) ? qe_type_name(t->type) : "?");
    const int64_t ne0 = t->ne[0];
    const int64_t nrows = (int64_t)(n_elements(t) / (uint64_t)ne0);
    const size_t row_nbytes = qe_type_row_nbytes(t->type, ne0);
#pragma omp parallel for num_threads(n_threads) schedule(static) if (nrows > 64)
    for (int64_t r = 0; r < nrows; r++)
        tr->to_float((const uint8_t *)t->data + (size_t)r * row_nbytes, out + r * ne0, ne0);
    return 0;
}

static const char *tname(int t)
{
    const char *n = qe_type_name(t);
    return n ? n : "?";
}

qe_model *qe_model_quantize(const qe_model *ref, const qe_quant_opts *opts, qe_quant_report *rep,
                            qe_err *err)
{
    double t0 = qe_now();
    qe_model *out = NULL;
    qe_mix_tensor *mt = NULL;
    qe_mix_choice *ch = NULL;
    qe_quant_tensor_info *info = NULL;
    float *f32 = NULL;
    const int n = ref->n_tensors;
    int ftype = opts->ftype;
    if (ftype < 0 && opts->recipe)
        ftype = qe_recipe_base_ftype(opts->recipe);
    if (ftype < 0 && !opts->recipe) {
        qe_err_set(err, QE_EINVAL, "quantize: no mix type and no recipe given");
        return NULL;
    }
    int n_threads = opts->n_threads > 0 ? opts->n_threads : omp_get_max_threads();

    mt = calloc((size_t)n + 1, sizeof *mt);
    ch = calloc((size_t)n + 1, sizeof *ch);
    info = calloc((size_t)n + 1, sizeof *info);
    if (!mt || !ch || !info) {
        qe_err_set(err, QE_ENOMEM, "quantize: out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const qe_tensor *t = &ref->tensors[i];
        mt[i] = (qe_mix_tensor){t->name, t->n_dims, {t->ne[0], t->ne[1], t->ne[2], t->ne[3]},
                                t->type, -1};
    }
    if (opts->recipe)
        qe_recipe_apply(opts->recipe, mt, n);
    qe_mix_opts mo = {0};
    mo.ftype = ftype;
    mo.pure = opts->pure;
    mo.has_imatrix = opts->imatrix != NULL;
    mo.leave_output = opts->leave_output;
    mo.output_type = opts->output_type;
    mo.token_embd_type = opts->token_embd_type;
    mo.arch = ref->cfg.arch;
    mo.n_layer = ref->cfg.n_layer;
    mo.n_head = ref->cfg.n_head;
    mo.n_head_kv = ref->cfg.n_head_kv;
    mo.n_expert = ref->cfg.n_expert;
    if (qe_mix_plan(&mo, mt, n, ch, err))
        goto fail;

    /* every conversion is checked before any work starts */
    uint64_t max_el = 0;
    for (int i = 0; i < n; i++) {
        const qe_tensor *t = &ref->tensors[i];
        if (!ch[i].quantize)
            continue;
        const qe_type_traits *dst = qe_type_get(ch[i].type), *src = qe_type_get(t->type);
        if (!dst || !dst->from_float_ref) {
            qe_err_set(err, QE_EUNSUPPORTED, "tensor '%s': no quantizer for type %s yet", t->name,
                       tname(ch[i].type));
            goto fail;
        }
        if (!src || !src->to_float) {
            qe_err_set(err, QE_EUNSUPPORTED, "tensor '%s': cannot dequantize source type %s",
                       t->name, tname(t->type));
            goto fail;
        }
        if (opts->imatrix) {
            const qe_imatrix_entry *e = qe_imatrix_find(opts->imatrix, t->name);
            if (e && e->n_values != t->ne[0] * t->ne[2] && strcmp(t->name, "token_embd.weight")) {
                qe_err_set(err, QE_EINVAL, "imatrix entry '%s' has %d values, tensor has %lld columns",
                           t->name, e->n_values, (long long)(t->ne[0] * t->ne[2]));
                goto fail;
            }
            if (!e && qe_mix_type_needs_imatrix(ch[i].type, ftype, t->name)) {
                qe_err_set(err, QE_EINVAL,
                           "tensor '%s': type %s needs importance-matrix data, the imatrix has no "
                           "entry for it",
                           t->name, tname(ch[i].type));
                goto fail;
            }
        }
        if (n_elements(t) > max_el)
            max_el = n_elements(t);
    }
    if (max_el && !(f32 = malloc(max_el * sizeof(float)))) {
        qe_err_set(err, QE_ENOMEM, "quantize: out of memory for a %llu-element buffer",
                   (unsigned long long)max_el);
        goto fail;
    }

    out = qe_model_new_like(ref, n, err);
    if (!out)
        goto fail;
    out->cfg.file_type = ftype;
    uint64_t tot_src = 0, tot_new = 0, tot_params = 0;
    for (int i = 0; i < n; i++) {
        const qe_tensor *t = &ref->tensors[i];
        qe_quant_tensor_info *ti = &info[i];
        qe_strlcpy(ti->name, t->name, sizeof ti->name);
        ti->src_type = t->type;
        ti->type = ch[i].type;
        ti->wanted = ch[i].wanted;
        ti->source = ch[i].source;
        ti->fallback = ch[i].fallback;
        ti->converted = ch[i].quantize;
        ti->n_elements = n_elements(t);
        ti->src_nbytes = t->nbytes;
        uint64_t nbytes = qe_mix_tensor_nbytes(ch[i].type, t->ne);
        void *data = malloc(nbytes ? nbytes : 1);
        if (!data) {
            qe_err_set(err, QE_ENOMEM, "tensor '%s': out of memory (%llu bytes)", t->name,
                       (unsigned long long)nbytes);
            goto fail;
        }
        if (!ch[i].quantize) {
            memcpy(data, t->data, nbytes);
        } else {
            const float *src = NULL;
            if (t->type == QE_TYPE_F32) {
                src = t->data;
            } else {
                if (to_f32(t, f32, n_threads, err)) {
                    free(data);
                    goto fail;
                }
                src = f32;
            }
            const qe_imatrix_entry *e = opts->imatrix ? qe_imatrix_find(opts->imatrix, t->name)
                                                      : NULL;
            if (e && e->n_values != t->ne[0] * t->ne[2])
                e = NULL; /* token_embd size mismatch: ignored, like llama.cpp */
            const int64_t ne0 = t->ne[0], rows_per_mat = t->ne[1];
            const int64_t n_mat = (int64_t)(ti->n_elements / (uint64_t)(ne0 * rows_per_mat));
            const size_t mat_nbytes = qe_type_row_nbytes(ch[i].type, ne0) * (size_t)rows_per_mat;
            /* experts (ne[2] > 1) each get their own slice of the imatrix */
            for (int64_t m3 = 0; m3 < n_mat; m3++) {
                /* by size: a .dat entry of an expert tensor has n_mat 1 but
                 * n_expert * ne0 values, one slice per expert (llama-quantize) */
                const bool sliced = n_mat > 1 && e && e->n_values == ne0 * n_mat;
                const float *imat = e ? e->mean_sq + (sliced ? m3 * ne0 : 0) : NULL;
                if (qe_quantize_rows(ch[i].type, src + m3 * ne0 * rows_per_mat,
                                     (uint8_t *)data + (size_t)m3 * mat_nbytes, rows_per_mat, ne0,
                                     imat, n_threads, err)) {
                    qe_err_prefix(err, "tensor '%s'", t->name);
                    free(data);
                    goto fail;
                }
            }
            ti->imatrix_used = e != NULL;
        }
        if (qe_model_add_tensor(out, t->name, ch[i].type, t->n_dims, t->ne, data, data, err)) {
            free(data);
            goto fail;
        }
        ti->nbytes = nbytes;
        tot_src += t->nbytes;
        tot_new += nbytes;
        tot_params += ti->n_elements;
        if (opts->verbose) {
            char note[160] = "";
            if (ti->fallback == QE_FALLBACK_LLAMA)
                snprintf(note, sizeof note, "  (wanted %s: row %lld not a multiple of its block; "
                         "llama.cpp falls back the same way)", tname(ti->wanted), (long long)t->ne[0]);
            else if (ti->fallback == QE_FALLBACK_QEVAL)
                snprintf(note, sizeof note, "  (wanted %s: row %lld not a multiple of its block; "
                         "QEVAL FALLBACK, llama.cpp would abort)", tname(ti->wanted),
                         (long long)t->ne[0]);
            else if (ti->source == QE_MIX_RULE)
                snprintf(note, sizeof note, "  (recipe rule)");
            fprintf(stderr, "[%4d/%4d] %-32s %-8s -> %-7s %9.3f MiB -> %9.3f MiB%s%s\n", i + 1, n,
                    t->name, tname(t->type), tname(ch[i].type), t->nbytes / 1048576.0,
                    nbytes / 1048576.0, ti->imatrix_used ? "  imatrix" : "", note);
        }
    }
    if (rep) {
        memset(rep, 0, sizeof *rep);
        rep->ftype = ftype;
        if (opts->recipe)
            snprintf(rep->mix, sizeof rep->mix, "recipe:%s%s%s%s", qe_recipe_name(opts->recipe),
                     ftype >= 0 ? " (base " : "", ftype >= 0 ? qe_ftype_name(ftype) : "",
                     ftype >= 0 ? ")" : "");
        else
            snprintf(rep->mix, sizeof rep->mix, "%s%s", qe_ftype_name(ftype),
                     opts->pure ? " (pure)" : "");
        rep->n_tensors = n;
        rep->tensors = info;
        info = NULL;
        rep->n_params = tot_params;
        rep->src_nbytes = tot_src;
        rep->nbytes = tot_new;
        rep->bpw = tot_params ? 8.0 * (double)tot_new / (double)tot_params : 0.0;
        for (int i = 0; i < n; i++) {
            rep->n_converted += rep->tensors[i].converted;
            rep->n_fallback_llama += rep->tensors[i].fallback == QE_FALLBACK_LLAMA;
            rep->n_fallback_qeval += rep->tensors[i].fallback == QE_FALLBACK_QEVAL;
            rep->n_imatrix_used += rep->tensors[i].imatrix_used;
        }
        rep->seconds = qe_now() - t0;
    }
    free(info);
    free(f32);
    free(mt);
    free(ch);
    return out;

fail:
    qe_model_free(out);
    free(info);
    free(f32);
    free(mt);
    free(ch);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* GGUF writer                                                          */
/* ------------------------------------------------------------------ */

static int copy_src_kvs(qe_gguf_builder *b, const qe_gguf *g, qe_err *err)
{
    static const char *const skip[] = {"split.no", "split.count", "split.tensors.count"};
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const qe_gguf_kv *kv = &g->kvs[i];
        char *key = malloc(kv->key.len + 1);
        if (!key)
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        bool drop = false;
        for (size_t k = 0; k < sizeof skip / sizeof skip[0]; k++)
            drop |= strcmp(key, skip[k]) == 0;
        int rc = drop ? 0 : qe_gguf_builder_set_value(b, key, &kv->val, err);
        free(key);
        if (rc)
            return rc;
    }
    return 0;
}

int qe_gguf_put_config(qe_gguf_builder *b, const qe_config *c, qe_err *err)
{
    char k[128];
    int rc;
#define KEY(suffix) (snprintf(k, sizeof k, "%s." suffix, c->arch), k)
    if ((rc = qe_gguf_builder_set_str(b, "general.architecture", c->arch, err)) ||
        (rc = qe_gguf_builder_set_str(b, "general.name", c->name, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("context_length"), (uint32_t)c->n_ctx_train, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("embedding_length"), (uint32_t)c->n_embd, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("feed_forward_length"), (uint32_t)c->n_ff, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("block_count"), (uint32_t)c->n_layer, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("attention.head_count"), (uint32_t)c->n_head, err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv,
                                      err)) ||
        (rc = qe_gguf_builder_set_u32(b, KEY("rope.dimension_count"), (uint32_t)c->n_rot, err)) ||
        (rc = qe_gguf_builder_set_f32(b, KEY("attention.layer_norm_rms_epsilon"), c->rms_eps,
                                      err)) ||
        (rc = qe_gguf_builder_set_f32(b, KEY("rope.freq_base"), c->rope_freq_base, err)))
        return rc;
    if (c->head_dim != c->n_embd / (c->n_head ? c->n_head : 1) &&
        ((rc = qe_gguf_builder_set_u32(b, KEY("attention.key_length"), (uint32_t)c->head_dim, err)) ||
         (rc = qe_gguf_builder_set_u32(b, KEY("attention.value_length"), (uint32_t)c->head_dim,
                                       err))))
        return rc;
#undef KEY
    return 0;
}

/* llama.cpp metadata for a model loaded from safetensors / llama2.c. */
static int synth_kvs(qe_gguf_builder *b, const qe_model *m, qe_err *err)
{
    int rc = qe_gguf_put_config(b, &m->cfg, err);
    if (rc)
        return rc;
    const qe_tokenizer *t = m->tok;
    if (!t)
        return 0;
    if (qe_tokenizer_kind(t) != QE_TOK_SPM)
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: cannot synthesize GGUF tokenizer metadata for a %s tokenizer "
                          "(only SPM); convert the model with llama.cpp first",
                          m->path, qe_tokenizer_kind_name(t));
    int32_t nv = qe_tokenizer_n_vocab(t);
    const char **toks = malloc((size_t)nv * sizeof *toks);
    float *scores = malloc((size_t)nv * sizeof *scores);
    int32_t *types = malloc((size_t)nv * sizeof *types);
    if (!toks || !scores || !types) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < nv; i++) {
        toks[i] = qe_tokenizer_token_text(t, i);
        if (!toks[i])
            toks[i] = "";
        scores[i] = qe_tokenizer_token_score(t, i);
        types[i] = qe_tokenizer_token_type(t, i);
    }
    qe_gguf_value vs = {.type = QE_GGUF_ARRAY}, vt = {.type = QE_GGUF_ARRAY};
    vs.v.arr.elem_type = QE_GGUF_FLOAT32;
    vs.v.arr.n = (uint64_t)nv;
    vs.v.arr.data = scores;
    vt.v.arr.elem_type = QE_GGUF_INT32;
    vt.v.arr.n = (uint64_t)nv;
    vt.v.arr.data = types;
    if ((rc = qe_gguf_builder_set_str(b, "tokenizer.ggml.model", "llama", err)) ||
        (rc = qe_gguf_builder_set_str_array(b, "tokenizer.ggml.tokens", toks, (uint64_t)nv, err)) ||
        (rc = qe_gguf_builder_set_value(b, "tokenizer.ggml.scores", &vs, err)) ||
        (rc = qe_gguf_builder_set_value(b, "tokenizer.ggml.token_type", &vt, err)))
        goto out;
    if (qe_tokenizer_bos(t) >= 0 &&
        (rc = qe_gguf_builder_set_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)qe_tokenizer_bos(t),
                                      err)))
        goto out;
    if (qe_tokenizer_eos(t) >= 0 &&
        (rc = qe_gguf_builder_set_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)qe_tokenizer_eos(t),
                                      err)))
        goto out;
out:
    free(toks);
    free(scores);
    free(types);
    return rc;
}

/* llama-quantize writes tensors in its weights_map order: layer number
 * ("blk.%d.", -1 for others) first, then name. */
static int tensor_order_layer(const char *name)
{
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1)
        l = -1;
    return l;
}

static int cmp_tensor_order(const void *a, const void *b)
{
    const qe_tensor *ta = *(const qe_tensor *const *)a, *tb = *(const qe_tensor *const *)b;
    int la = tensor_order_layer(ta->name), lb = tensor_order_layer(tb->name);
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(ta->name, tb->name);
}

int qe_model_write_gguf(const qe_model *m, const qe_model *src_meta, const char *path,
                        const qe_gguf_write_info *info, qe_err *err)
{
    int rc;
    const qe_tensor **order = calloc((size_t)m->n_tensors + 1, sizeof *order);
    if (!order)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    for (int i = 0; i < m->n_tensors; i++)
        order[i] = &m->tensors[i];
    qsort(order, (size_t)m->n_tensors, sizeof *order, cmp_tensor_order);
    if (!src_meta)
        src_meta = m;
    qe_gguf_builder *b = qe_gguf_builder_new(3, err);
    if (!b) {
        free(order);
        return err ? err->code : QE_ENOMEM;
    }
    if (src_meta->gguf)
        rc = copy_src_kvs(b, src_meta->gguf, err);
    else
        rc = synth_kvs(b, src_meta, err);
    if (rc)
        goto out;
    int ftype = info && info->ftype >= 0 ? info->ftype : m->cfg.file_type;
    /* llama.cpp's gguf_set_val_* removes a key and appends it: same order */
    static const char *const moved[] = {"general.quantization_version", "general.file_type",
                                        "quantize.imatrix.file", "quantize.imatrix.dataset",
                                        "quantize.imatrix.entries_count",
                                        "quantize.imatrix.chunks_count"};
    for (size_t k = 0; k < sizeof moved / sizeof moved[0]; k++)
        qe_gguf_builder_remove(b, moved[k]);
    if ((rc = qe_gguf_builder_set_u32(b, "general.quantization_version", 2, err)))
        goto out;
    if (ftype >= 0 && (rc = qe_gguf_builder_set_u32(b, "general.file_type", (uint32_t)ftype, err)))
        goto out;
    if (info && info->imatrix) {
        const qe_imatrix *im = info->imatrix;
        const char *file = info->imatrix_path ? info->imatrix_path : "";
        const char *slash = strrchr(file, '/');
        if ((rc = qe_gguf_builder_set_str(b, "quantize.imatrix.file", slash ? slash + 1 : file,
                                          err)))
            goto out;
        if (im->n_datasets &&
            (rc = qe_gguf_builder_set_str(b, "quantize.imatrix.dataset",
                                          im->datasets[im->n_datasets - 1], err)))
            goto out;
        if ((rc = qe_gguf_builder_set_i32(b, "quantize.imatrix.entries_count", im->n_entries, err)) ||
            (rc = qe_gguf_builder_set_i32(b, "quantize.imatrix.chunks_count", im->chunk_count, err)))
            goto out;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = order[i];
        if ((rc = qe_gguf_builder_set_tensor(b, t->name, t->type, t->n_dims, t->ne, t->data,
                                             t->nbytes, err)))
            goto out;
    }
    rc = qe_gguf_builder_write(b, path, err);
out:
    qe_gguf_builder_free(b);
    free(order);
    return rc;
}

/* ------------------------------------------------------------------ */
/* imatrix collection                                                   */
/* ------------------------------------------------------------------ */

typedef struct acc_entry {
    char name[96];
    int n_in;
    int n_mat;         /* 1, or n_expert for a 3-D expert tensor */
    double *sum;       /* (n_mat, n_in) sum x^2 */
    uint64_t count;    /* token rows (n_mat == 1) */
    uint64_t *cnt;     /* (n_mat) token rows per expert (n_mat > 1) */
    int32_t ncall;     /* chunks seen */
    int last_chunk;
} acc_entry;

typedef struct collector {
    acc_entry *e;
    int n, cap;
    int chunk;     /* index of the chunk being evaluated */
    bool oom, bad_size;
} collector;

/* The entry of `name` (created with n_in x n_mat on first use), or NULL. */
static acc_entry *collect_entry(collector *c, const char *name, int n_in, int n_mat)
{
    acc_entry *e = NULL;
    for (int i = c->n - 1; i >= 0; i--)
        if (strcmp(c->e[i].name, name) == 0) {
            e = &c->e[i];
            break;
        }
    if (!e) {
        if (c->n == c->cap) {
            int cap = c->cap ? 2 * c->cap : 64;
            acc_entry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
            if (!ne) {
                c->oom = true;
                return NULL;
            }
            c->e = ne;
            c->cap = cap;
        }
        e = &c->e[c->n];
        memset(e, 0, sizeof *e);
        qe_strlcpy(e->name, name, sizeof e->name);
        e->n_in = n_in;
        e->n_mat = n_mat;
        e->last_chunk = -1;
        e->sum = calloc((size_t)n_in * (size_t)n_mat, sizeof *e->sum);
        e->cnt = calloc((size_t)n_mat, sizeof *e->cnt);
        if (!e->sum || !e->cnt) {
            free(e->sum);
            free(e->cnt);
            c->oom = true;
            return NULL;
        }
        c->n++;
    }
    if (e->n_in != n_in || e->n_mat != n_mat) {
        c->bad_size = true;
        return NULL;
    }
    if (e->last_chunk != c->chunk) {
        e->last_chunk = c->chunk;
        e->ncall++;
    }
    return e;
}

/* Expert matmuls (llama-imatrix's MUL_MAT_ID path: every batch size, per
 * expert sums and counts). */
static void collect_id_hook(void *ud, const char *name, int expert, int n_expert, const float *x,
                            int n_rows, int n_in)
{
    collector *c = ud;
    if (c->oom || expert < 0 || expert >= n_expert)
        return;
    acc_entry *e = collect_entry(c, name, n_in, n_expert);
    if (!e)
        return;
    double *s = e->sum + (size_t)expert * n_in;
    for (int t = 0; t < n_rows; t++) {
        const float *row = x + (size_t)t * n_in;
        for (int j = 0; j < n_in; j++)
            s[j] += (double)row[j] * row[j];
    }
    e->cnt[expert] += (uint64_t)n_rows;
}

static void collect_hook(void *ud, const char *name, const float *x, int n_tokens, int n_in)
{
    collector *c = ud;
    /* llama-imatrix: only blk.* weights, only batches of >= 16 tokens */
    if (n_tokens < 16 || strncmp(name, "blk.", 4) != 0 || c->oom)
        return;
    acc_entry *e = collect_entry(c, name, n_in, 1);
    if (!e)
        return;
    for (int t = 0; t < n_tokens; t++) {
        const float *row = x + (size_t)t * n_in;
        for (int j = 0; j < n_in; j++)
            e->sum[j] += (double)row[j] * row[j];
    }
    e->count += (uint64_t)n_tokens;
}

qe_imatrix *qe_imatrix_collect(const qe_model *m, const int32_t *tokens, size_t n_tokens,
                               const qe_imatrix_collect_opts *opts, double *ppl, qe_err *err)
{
    collector col = {0};
    int rc_add = 0;
    qe_infer *inf = NULL;
    qe_imatrix *im = NULL;
    int32_t *buf = NULL;
    float *logits = NULL, *sums = NULL;
    int n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : 512;
    if ((size_t)n_ctx * 2 > n_tokens) {
        qe_err_set(err, QE_EINVAL,
                   "imatrix: need at least %d tokens for a context of %d, the text has %zu",
                   2 * n_ctx, n_ctx, n_tokens);
        return NULL;
    }
    int n_chunk = (int)(n_tokens / (size_t)n_ctx);
    if (opts && opts->n_chunks > 0 && opts->n_chunks < n_chunk)
        n_chunk = opts->n_chunks;
    qe_infer_opts io = {0};
    io.n_ctx = n_ctx;
    io.n_batch = n_ctx;
    io.n_threads = opts ? opts->n_threads : 0;
    io.hook = collect_hook;
    io.hook_id = collect_id_hook;
    io.hook_ud = &col;
    inf = qe_infer_new(m, &io, err);
    if (!inf)
        return NULL;
    int n_vocab = qe_infer_n_vocab(inf);
    int first = n_ctx / 2;
    buf = malloc((size_t)n_ctx * sizeof *buf);
    logits = malloc((size_t)(n_ctx - first) * (size_t)n_vocab * sizeof *logits);
    if (!buf || !logits) {
        qe_err_set(err, QE_ENOMEM, "imatrix: out of memory");
        goto fail;
    }
    bool add_bos = m->tok && qe_tokenizer_add_bos(m->tok) && qe_tokenizer_bos(m->tok) >= 0;
    double nll = 0;
    uint64_t n_scored = 0;
    qe_progress pr;
    if (opts && opts->progress)
        qe_progress_start(&pr, "imatrix", (uint64_t)n_chunk);
    for (int i = 0; i < n_chunk; i++) {
        memcpy(buf, tokens + (size_t)i * n_ctx, (size_t)n_ctx * sizeof *buf);
        if (add_bos)
            buf[0] = qe_tokenizer_bos(m->tok);
        col.chunk = i;
        qe_infer_rewind(inf, 0);
        if (qe_infer_eval(inf, buf, n_ctx, first, logits, err))
            goto fail;
        if (col.oom) {
            qe_err_set(err, QE_ENOMEM, "imatrix: out of memory");
            goto fail;
        }
        if (col.bad_size) {
            qe_err_set(err, QE_EFORMAT, "imatrix: a weight changed its input width between calls");
            goto fail;
        }
        /* perplexity over the second half, as llama-imatrix prints it */
        for (int p = first; p < n_ctx - 1; p++) {
            const float *lg = logits + (size_t)(p - first) * n_vocab;
            float mx = lg[0];
            for (int v = 1; v < n_vocab; v++)
                mx = lg[v] > mx ? lg[v] : mx;
            double se = 0;
            for (int v = 0; v < n_vocab; v++)
                se += expf(lg[v] - mx);
            nll += -(lg[tokens[(size_t)i * n_ctx + p + 1]] - mx - log(se));
            n_scored++;
        }
        if (opts && opts->progress)
            qe_progress_update(&pr, (uint64_t)i + 1);
    }
    if (opts && opts->progress)
        qe_progress_end(&pr);
    if (ppl)
        *ppl = n_scored ? exp(nll / (double)n_scored) : 0;

    im = qe_imatrix_new(err);
    if (!im)
        goto fail;
    im->counts_are_chunks = true;
    im->chunk_count = n_chunk;
    im->chunk_size = n_ctx;
    im->dat_trailer = true;
    if (opts && opts->dataset) {
        const char *s = strrchr(opts->dataset, '/');
        if (qe_imatrix_add_dataset(im, s ? s + 1 : opts->dataset, err))
            goto fail;
    }
    for (int k = 0; k < col.n; k++) {
        acc_entry *e = &col.e[k];
        if (e->n_mat > 1) {
            /* llama-imatrix b4747 skips an expert tensor when any of its
             * experts saw no token ("partial data") */
            bool partial = false;
            for (int x = 0; x < e->n_mat; x++)
                partial |= e->cnt[x] == 0;
            if (partial)
                continue;
        }
        const size_t nv = (size_t)e->n_in * (size_t)e->n_mat;
        sums = malloc(nv * sizeof *sums);
        float *cnts = malloc((size_t)e->n_mat * sizeof *cnts);
        if (!sums || !cnts) {
            free(cnts);
            qe_err_set(err, QE_ENOMEM, "imatrix: out of memory");
            goto fail;
        }
        /* .dat units: (sum / count) * ncall, counts = ncall */
        for (int x = 0; x < e->n_mat; x++) {
            const double n = e->n_mat > 1 ? (double)e->cnt[x] : (double)e->count;
            for (int j = 0; j < e->n_in; j++)
                sums[(size_t)x * e->n_in + j] =
                    (float)(e->sum[(size_t)x * e->n_in + j] / n * (double)e->ncall);
            cnts[x] = (float)e->ncall;
        }
        rc_add = qe_imatrix_add(im, e->name, (int32_t)nv, e->n_mat, e->ncall, sums, cnts, err);
        free(cnts);
        if (rc_add)
            goto fail;
        free(sums);
        sums = NULL;
    }
    goto done;

fail:
    qe_imatrix_free(im);
    im = NULL;
done:
    for (int k = 0; k < col.n; k++) {
        free(col.e[k].sum);
        free(col.e[k].cnt);
    }
    free(col.e);
    free(sums);
    free(buf);
    free(logits);
    qe_infer_free(inf);
    return im;
}
