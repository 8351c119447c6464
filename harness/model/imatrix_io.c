/*
 * imatrix_io.c: read/write llama.cpp importance matrices (legacy .dat and
 * GGUF); formats and units are documented in imatrix_io.h.
 */
#include "imatrix_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../quant/quant.h"
#include "gguf.h"

qe_imatrix *qe_imatrix_new(qe_err *err)
{
    qe_imatrix *im = calloc(1, sizeof *im);
    if (!im)
        qe_err_set(err, QE_ENOMEM, "out of memory");
    return im;
}

static void entry_free(qe_imatrix_entry *e)
{
    free(e->name);
    free(e->sum_sq);
    free(e->counts);
    free(e->mean_sq);
}

void qe_imatrix_free(qe_imatrix *im)
{
    if (!im)
        return;
    for (int i = 0; i < im->n_entries; i++)
        entry_free(&im->entries[i]);
    free(im->entries);
    for (int i = 0; i < im->n_datasets; i++)
        free(im->datasets[i]);
    free(im->datasets);
    free(im);
}

const qe_imatrix_entry *qe_imatrix_find(const qe_imatrix *im, const char *name)
{
    for (int i = 0; i < im->n_entries; i++)
        if (strcmp(im->entries[i].name, name) == 0)
            return &im->entries[i];
    return NULL;
}

int qe_imatrix_add_dataset(qe_imatrix *im, const char *name, qe_err *err)
{
    char **d = realloc(im->datasets, (size_t)(im->n_datasets + 1) * sizeof *d);
    if (!d)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    im->datasets = d;
    d[im->n_datasets] = strdup(name);
    if (!d[im->n_datasets])
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    im->n_datasets++;
    return 0;
}

int qe_imatrix_add(qe_imatrix *im, const char *name, int32_t n_values, int32_t n_mat, int32_t ncall,
                   const float *sum_sq, const float *counts, qe_err *err)
{
    if (n_values <= 0 || n_mat <= 0 || n_values % n_mat)
        return qe_err_set(err, QE_EINVAL, "imatrix entry '%s': %d values do not split into %d matrices",
                          name, n_values, n_mat);
    if (qe_imatrix_find(im, name))
        return qe_err_set(err, QE_EINVAL, "imatrix entry '%s' appears twice", name);
    qe_imatrix_entry *es = realloc(im->entries, (size_t)(im->n_entries + 1) * sizeof *es);
    if (!es)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    im->entries = es;
    qe_imatrix_entry *e = &es[im->n_entries];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->sum_sq = malloc((size_t)n_values * sizeof(float));
    e->mean_sq = malloc((size_t)n_values * sizeof(float));
    e->counts = malloc((size_t)n_mat * sizeof(float));
    if (!e->name || !e->sum_sq || !e->mean_sq || !e->counts) {
        entry_free(e);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    e->n_values = n_values;
    e->n_mat = n_mat;
    e->ncall = ncall;
    memcpy(e->sum_sq, sum_sq, (size_t)n_values * sizeof(float));
    memcpy(e->counts, counts, (size_t)n_mat * sizeof(float));
    int32_t per = n_values / n_mat;
    for (int32_t i = 0; i < n_values; i++) {
        float c = counts[i / per];
        /* llama-quantize: value / ncall when ncall > 0; upstream's loader
         * uses 1.0 for experts never seen */
        e->mean_sq[i] = c > 0 ? sum_sq[i] / c : 1.0f;
    }
    im->n_entries++;
    return 0;
}

/* ------------------------------------------------------------------ */
/* legacy .dat                                                          */
/* ------------------------------------------------------------------ */

typedef struct rd {
    const uint8_t *p;
    size_t n, off;
    const char *label;
} rd;

static int rd_i32(rd *r, int32_t *v, const char *what, qe_err *err)
{
    if (r->n - r->off < 4)
        return qe_err_set(err, QE_ETRUNC, "%s: offset %zu: file ends inside %s (need 4 bytes, %zu left)",
                          r->label, r->off, what, r->n - r->off);
    memcpy(v, r->p + r->off, 4);
    r->off += 4;
    return 0;
}

qe_imatrix *qe_imatrix_read_dat(const void *buf, size_t nbytes, const char *label, qe_err *err)
{
    rd r = {buf, nbytes, 0, label};
    char what[160];
    char *name = NULL;
    float *vals = NULL;
    qe_imatrix *im = qe_imatrix_new(err);
    if (!im)
        return NULL;
    im->format = QE_IMATRIX_DAT;
    im->counts_are_chunks = true;
    int32_t n_entries;
    if (rd_i32(&r, &n_entries, "the entry count", err))
        goto fail;
    /* each entry needs at least 16 bytes (len, ncall, nval, one value) */
    if (n_entries < 0 || (size_t)n_entries > (nbytes - 4) / 16) {
        qe_err_set(err, QE_ECOUNT, "%s: offset 0: entry count %d impossible for a %zu-byte file",
                   label, n_entries, nbytes);
        goto fail;
    }
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len = 0, ncall = 0, nval = 0;
        snprintf(what, sizeof what, "entry %d name length", i);
        if (rd_i32(&r, &len, what, err))
            goto fail;
        if (len <= 0 || (size_t)len > r.n - r.off || len > 4096) {
            qe_err_set(err, QE_EBOUNDS, "%s: offset %zu: entry %d: name length %d (%zu bytes left)",
                       label, r.off - 4, i, len, r.n - r.off);
            goto fail;
        }
        name = malloc((size_t)len + 1);
        if (!name) {
            qe_err_set(err, QE_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(name, r.p + r.off, (size_t)len);
        name[len] = 0;
        if (strlen(name) != (size_t)len) {
            qe_err_set(err, QE_EFORMAT, "%s: offset %zu: entry %d: name contains a NUL byte", label,
                       r.off, i);
            goto fail;
        }
        r.off += (size_t)len;
        snprintf(what, sizeof what, "entry %d ('%s') call count", i, name);
        if (rd_i32(&r, &ncall, what, err))
            goto fail;
        snprintf(what, sizeof what, "entry %d ('%s') value count", i, name);
        if (rd_i32(&r, &nval, what, err))
            goto fail;
        if (ncall < 0) {
            qe_err_set(err, QE_EFORMAT, "%s: offset %zu: entry '%s': negative call count %d", label,
                       r.off - 8, name, ncall);
            goto fail;
        }
        if (nval <= 0 || (size_t)nval > (r.n - r.off) / 4) {
            qe_err_set(err, QE_EBOUNDS,
                       "%s: offset %zu: entry '%s': %d values need %lld bytes, %zu left", label,
                       r.off - 4, name, nval, 4LL * nval, r.n - r.off);
            goto fail;
        }
        vals = malloc((size_t)nval * sizeof(float));
        if (!vals) {
            qe_err_set(err, QE_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(vals, r.p + r.off, (size_t)nval * 4);
        for (int32_t j = 0; j < nval; j++) {
            if (!isfinite(vals[j])) {
                qe_err_set(err, QE_ENAN, "%s: offset %zu: entry '%s': value %d is not finite",
                           label, r.off + 4 * (size_t)j, name, j);
                goto fail;
            }
        }
        r.off += (size_t)nval * 4;
        float cnt = ncall > 0 ? (float)ncall : 0.0f;
        if (ncall == 0) {
            /* llama-quantize keeps the values as they are when ncall is 0:
             * use count 1 so mean_sq == value */
            cnt = 1.0f;
        }
        if (qe_imatrix_add(im, name, nval, 1, ncall, vals, &cnt, err)) {
            qe_err_prefix(err, "%s", label);
            goto fail;
        }
        im->entries[im->n_entries - 1].counts[0] = (float)ncall;
        free(name);
        free(vals);
        name = NULL;
        vals = NULL;
    }
    if (r.off < r.n) {
        int32_t last_call = 0, len = 0;
        if (rd_i32(&r, &last_call, "the trailer's chunk count", err) ||
            rd_i32(&r, &len, "the trailer's dataset name length", err))
            goto fail;
        if (len < 0 || (size_t)len != r.n - r.off) {
            qe_err_set(err, QE_EBOUNDS,
                       "%s: offset %zu: dataset name length %d, but %zu bytes remain", label,
                       r.off - 4, len, r.n - r.off);
            goto fail;
        }
        name = malloc((size_t)len + 1);
        if (!name) {
            qe_err_set(err, QE_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(name, r.p + r.off, (size_t)len);
        name[len] = 0;
        r.off += (size_t)len;
        im->chunk_count = last_call;
        im->dat_trailer = true;
        if (qe_imatrix_add_dataset(im, name, err))
            goto fail;
        free(name);
        name = NULL;
    } else {
        for (int i = 0; i < im->n_entries; i++)
            if (im->entries[i].ncall > im->chunk_count)
                im->chunk_count = im->entries[i].ncall;
    }
    return im;

fail:
    free(name);
    free(vals);
    qe_imatrix_free(im);
    return NULL;
}

/* Growable byte buffer for the .dat writer. */
typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} wbuf;

static void wb_put(wbuf *w, const void *src, size_t n)
{
    if (w->oom)
        return;
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        while (cap < w->n + n)
            cap *= 2;
        uint8_t *p = realloc(w->p, cap);
        if (!p) {
            w->oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}

static void wb_i32(wbuf *w, int32_t v)
{
    wb_put(w, &v, 4);
}

/* ncall of an entry for the .dat format */
static int32_t dat_ncall(const qe_imatrix *im, const qe_imatrix_entry *e)
{
    if (im->counts_are_chunks || im->chunk_size <= 0)
        return e->ncall;
    float mx = 0;
    for (int32_t k = 0; k < e->n_mat; k++)
        if (e->counts[k] > mx)
            mx = e->counts[k];
    return (int32_t)(((int64_t)mx + im->chunk_size - 1) / im->chunk_size);
}

int qe_imatrix_write_dat_mem(const qe_imatrix *im, uint8_t **out, size_t *out_nbytes, qe_err *err)
{
    wbuf w = {0};
    float *tmp = NULL;
    wb_i32(&w, im->n_entries);
    for (int i = 0; i < im->n_entries; i++) {
        const qe_imatrix_entry *e = &im->entries[i];
        int32_t len = (int32_t)strlen(e->name);
        wb_i32(&w, len);
        wb_put(&w, e->name, (size_t)len);
        int32_t ncall = dat_ncall(im, e);
        wb_i32(&w, ncall);
        wb_i32(&w, e->n_values);
        if (im->counts_are_chunks) {
            /* stored as read: (sum/count)*ncall already */
            wb_put(&w, e->sum_sq, (size_t)e->n_values * 4);
            continue;
        }
        tmp = realloc(tmp, (size_t)e->n_values * sizeof(float));
        if (!tmp) {
            w.oom = true;
            break;
        }
        int32_t per = e->n_values / e->n_mat;
        for (int32_t j = 0; j < e->n_values; j++) {
            double c = e->counts[j / per], v = e->sum_sq[j];
            if (c == 0) /* partial data: upstream stores 1 */
                v = 1.0, c = 1.0;
            tmp[j] = (float)(v / c * (double)ncall);
        }
        wb_put(&w, tmp, (size_t)e->n_values * 4);
    }
    free(tmp);
    if (im->dat_trailer || im->format != QE_IMATRIX_DAT) {
        const char *ds = im->n_datasets ? im->datasets[im->n_datasets - 1] : "";
        wb_i32(&w, im->chunk_count);
        wb_i32(&w, (int32_t)strlen(ds));
        wb_put(&w, ds, strlen(ds));
    }
    if (w.oom) {
        free(w.p);
        return qe_err_set(err, QE_ENOMEM, "out of memory writing imatrix");
    }
    *out = w.p;
    *out_nbytes = w.n;
    return 0;
}

static int write_all(const char *path, const uint8_t *p, size_t n, qe_err *err)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return qe_err_set(err, QE_EIO, "%s: cannot create: %m", tmp);
    bool ok = fwrite(p, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return qe_err_set(err, QE_EIO, "%s: write failed: %m", path);
    }
    return 0;
}

int qe_imatrix_write_dat(const qe_imatrix *im, const char *path, qe_err *err)
{
    uint8_t *buf;
    size_t n;
    int rc = qe_imatrix_write_dat_mem(im, &buf, &n, err);
    if (rc)
        return rc;
    rc = write_all(path, buf, n, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* GGUF                                                                 */
/* ------------------------------------------------------------------ */

static bool str_ends(const qe_gguf_str s, const char *suf, size_t *stem)
{
    size_t m = strlen(suf);
    if (s.len <= m || memcmp(s.ptr + s.len - m, suf, m) != 0)
        return false;
    *stem = (size_t)s.len - m;
    return true;
}

static qe_imatrix *read_gguf(const char *path, qe_err *err)
{
    qe_gguf *g = qe_gguf_open(path, err);
    if (!g)
        return NULL;
    qe_imatrix *im = qe_imatrix_new(err);
    float *sums = NULL, *cnts = NULL;
    if (!im)
        goto fail;
    im->format = QE_IMATRIX_GGUF;
    char type[32] = "";
    if (qe_gguf_get_str(g, "general.type", type, sizeof type, NULL) == 0 &&
        strcmp(type, "imatrix") != 0) {
        qe_err_set(err, QE_EFORMAT, "%s: general.type is '%s', expected 'imatrix'", path, type);
        goto fail;
    }
    uint64_t v;
    if (qe_gguf_get_u64(g, "imatrix.chunk_count", &v, NULL) == 0)
        im->chunk_count = v > INT32_MAX ? INT32_MAX : (int32_t)v;
    if (qe_gguf_get_u64(g, "imatrix.chunk_size", &v, NULL) == 0)
        im->chunk_size = v > INT32_MAX ? INT32_MAX : (int32_t)v;
    const qe_gguf_value *ds = qe_gguf_get(g, "imatrix.datasets");
    if (ds && ds->type == QE_GGUF_ARRAY && ds->v.arr.elem_type == QE_GGUF_STRING) {
        for (uint64_t i = 0; i < ds->v.arr.n; i++) {
            char nm[512];
            size_t l = ds->v.arr.strs[i].len < sizeof nm - 1 ? ds->v.arr.strs[i].len : sizeof nm - 1;
            memcpy(nm, ds->v.arr.strs[i].ptr, l);
            nm[l] = 0;
            if (qe_imatrix_add_dataset(im, nm, err))
                goto fail;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const qe_gguf_tensor *t = &g->tensors[i];
        size_t stem;
        if (!str_ends(t->name, ".in_sum2", &stem))
            continue;
        char name[QE_GGUF_MAX_NAME + 16], cname[2 * QE_GGUF_MAX_NAME + 16];
        if (stem >= QE_GGUF_MAX_NAME) {
            qe_err_set(err, QE_EFORMAT, "%s: tensor %llu: name too long", path, (unsigned long long)i);
            goto fail;
        }
        memcpy(name, t->name.ptr, stem);
        name[stem] = 0;
        snprintf(cname, sizeof cname, "%s.counts", name);
        const qe_gguf_tensor *c = qe_gguf_find_tensor(g, cname);
        if (!c) {
            qe_err_set(err, QE_EFORMAT, "%s: '%s.in_sum2' has no '%s'", path, name, cname);
            goto fail;
        }
        if (t->type != QE_TYPE_F32 || c->type != QE_TYPE_F32) {
            qe_err_set(err, QE_ETYPE, "%s: '%s': in_sum2/counts must be F32", path, name);
            goto fail;
        }
        int64_t n_mat = t->ne[1] * t->ne[2] * t->ne[3];
        if (c->ne[0] != 1 || c->ne[1] * c->ne[2] * c->ne[3] != n_mat || t->ne[0] <= 0 ||
            t->ne[0] * n_mat > INT32_MAX) {
            qe_err_set(err, QE_ESHAPE,
                       "%s: '%s': in_sum2 ne {%lld, %lld} and counts ne {%lld, %lld} disagree", path,
                       name, (long long)t->ne[0], (long long)t->ne[1], (long long)c->ne[0],
                       (long long)c->ne[1]);
            goto fail;
        }
        int32_t nval = (int32_t)(t->ne[0] * n_mat);
        sums = malloc((size_t)nval * sizeof(float));
        cnts = malloc((size_t)n_mat * sizeof(float));
        if (!sums || !cnts) {
            qe_err_set(err, QE_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(sums, t->data, (size_t)nval * 4);
        memcpy(cnts, c->data, (size_t)n_mat * 4);
        for (int32_t j = 0; j < nval; j++)
            if (!isfinite(sums[j])) {
                qe_err_set(err, QE_ENAN, "%s: '%s.in_sum2'[%d] is not finite", path, name, j);
                goto fail;
            }
        float mx = 0;
        for (int64_t k = 0; k < n_mat; k++) {
            if (!isfinite(cnts[k]) || cnts[k] < 0) {
                qe_err_set(err, QE_ENAN, "%s: '%s.counts'[%lld] is not a count", path, name,
                           (long long)k);
                goto fail;
            }
            if (cnts[k] > mx)
                mx = cnts[k];
        }
        int32_t ncall = im->chunk_size > 0
                            ? (int32_t)(((int64_t)mx + im->chunk_size - 1) / im->chunk_size)
                            : im->chunk_count;
        if (qe_imatrix_add(im, name, nval, (int32_t)n_mat, ncall, sums, cnts, err)) {
            qe_err_prefix(err, "%s", path);
            goto fail;
        }
        free(sums);
        free(cnts);
        sums = cnts = NULL;
    }
    if (im->n_entries == 0) {
        qe_err_set(err, QE_EFORMAT, "%s: no '*.in_sum2' tensors: not an imatrix file", path);
        goto fail;
    }
    qe_gguf_close(g);
    return im;

fail:
    free(sums);
    free(cnts);
    qe_imatrix_free(im);
    qe_gguf_close(g);
    return NULL;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const qe_imatrix_entry *const *)a)->name,
                  (*(const qe_imatrix_entry *const *)b)->name);
}

int qe_imatrix_write_gguf(const qe_imatrix *im, const char *path, qe_err *err)
{
    int rc = 0;
    const qe_imatrix_entry **order = NULL;
    float **bufs = NULL;
    qe_gguf_builder *b = qe_gguf_builder_new(3, err);
    if (!b)
        return err ? err->code : QE_ENOMEM;
    /* chunk units -> token units need the chunk size; llama.cpp's default
     * n_ctx (512) when the source did not record it */
    int32_t chunk_size = im->chunk_size > 0 ? im->chunk_size : 512;
    double scale = im->counts_are_chunks ? chunk_size : 1.0;
    order = calloc((size_t)im->n_entries + 1, sizeof *order);
    bufs = calloc(2 * (size_t)im->n_entries + 1, sizeof *bufs);
    if (!order || !bufs) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = qe_gguf_builder_set_str(b, "general.type", "imatrix", err)) ||
        (rc = qe_gguf_builder_set_str_array(b, "imatrix.datasets",
                                            (const char *const *)im->datasets,
                                            (uint64_t)im->n_datasets, err)) ||
        (rc = qe_gguf_builder_set_u32(b, "imatrix.chunk_count", (uint32_t)im->chunk_count, err)) ||
        (rc = qe_gguf_builder_set_u32(b, "imatrix.chunk_size", (uint32_t)chunk_size, err)))
        goto out;
    for (int i = 0; i < im->n_entries; i++)
        order[i] = &im->entries[i];
    qsort(order, (size_t)im->n_entries, sizeof *order, cmp_entry_name); /* upstream sorts too */
    for (int i = 0; i < im->n_entries; i++) {
        const qe_imatrix_entry *e = order[i];
        float *s = malloc((size_t)e->n_values * sizeof(float));
        float *c = malloc((size_t)e->n_mat * sizeof(float));
        bufs[2 * i] = s;
        bufs[2 * i + 1] = c;
        if (!s || !c) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory");
            goto out;
        }
        for (int32_t j = 0; j < e->n_values; j++)
            s[j] = (float)(e->sum_sq[j] * scale);
        for (int32_t k = 0; k < e->n_mat; k++)
            c[k] = (float)(e->counts[k] * scale);
        char nm[1024];
        int64_t ne_s[2] = {e->n_values / e->n_mat, e->n_mat}, ne_c[2] = {1, e->n_mat};
        snprintf(nm, sizeof nm, "%s.in_sum2", e->name);
        if ((rc = qe_gguf_builder_set_tensor(b, nm, QE_TYPE_F32, 2, ne_s, s,
                                             (uint64_t)e->n_values * 4, err)))
            goto out;
        snprintf(nm, sizeof nm, "%s.counts", e->name);
        if ((rc = qe_gguf_builder_set_tensor(b, nm, QE_TYPE_F32, 2, ne_c, c,
                                             (uint64_t)e->n_mat * 4, err)))
            goto out;
    }
    rc = qe_gguf_builder_write(b, path, err);
out:
    if (bufs)
        for (int i = 0; i < 2 * im->n_entries; i++)
            free(bufs[i]);
    free(bufs);
    free(order);
    qe_gguf_builder_free(b);
    return rc;
}

qe_imatrix *qe_imatrix_load(const char *path, qe_err *err)
{
    qe_map m = {0};
    if (qe_map_open(&m, path, err))
        return NULL;
    bool is_gguf = m.nbytes >= 4 && memcmp(m.data, "GGUF", 4) == 0;
    qe_imatrix *im = NULL;
    if (is_gguf) {
        qe_map_close(&m);
        return read_gguf(path, err);
    }
    const char *base = strrchr(path, '/');
    im = qe_imatrix_read_dat(m.data, m.nbytes, base ? base + 1 : path, err);
    qe_map_close(&m);
    return im;
}
