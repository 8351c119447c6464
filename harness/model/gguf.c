/*
 * gguf.c: GGUF v2/v3 reader (validating, zero-copy over an mmap or a
 * caller's buffer) and writer (builder -> file or memory buffer).
 *
 * The file layout is documented in gguf.h.  Holds no model or tokenizer
 * knowledge: only the container.  Tensor geometry comes from the traits
 * table (quant/quant.h), never from a switch over types here.
 *
 * Validation policy (each failure -> a specific QE_E* code and a message
 * "<file>: offset <byte>: <field>: <what was expected>"):
 *   fixed-size field cut by EOF               QE_ETRUNC
 *   string / data length past EOF             QE_EBOUNDS
 *   count whose minimal encoding cannot fit   QE_ETRUNC when the count is
 *     in the bytes left                       plausible (<= 2^24, i.e. the
 *                                             file may just be cut short),
 *                                             QE_ECOUNT beyond that
 *   unknown value type / ggml type            QE_ETYPE
 *   size arithmetic overflow                  QE_EOVERFLOW
 *   overlapping tensor data                   QE_EOVERLAP
 *   other structure (n_dims, alignment,       QE_EFORMAT
 *     duplicate names, nesting depth, ...)
 * No allocation is made from a count before that count has been checked
 * against the bytes left, so memory use is bounded by a small multiple of
 * the input size.
 */
#include "gguf.h"

#include "../../quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads and writes little-endian GGUF by memcpy: little-endian host required"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
/* Counts above this whose minimal encoding does not fit are "absurd"
 * (QE_ECOUNT); at or below it the file is treated as truncated. */
#define GGUF_PLAUSIBLE_COUNT (UINT64_C(1) << 24)
/* Minimal encoded sizes in bytes, used to bound counts before allocating. */
#define GGUF_MIN_KV_NBYTES 13     /* u64 key len + u32 type + 1-byte value */
#define GGUF_MIN_TINFO_NBYTES 32  /* u64 name len + u32 n_dims + 1 x u64 ne + u32 type + u64 off */
#define GGUF_MIN_STR_NBYTES 8     /* u64 length */
#define GGUF_MIN_ARR_NBYTES 12    /* u32 elem type + u64 count */

static const char *const g_vtype_names[QE_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
};
/* Encoded size of a scalar value type; 0 for STRING/ARRAY. */
static const uint8_t g_vtype_nbytes[QE_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *qe_gguf_vtype_name(int t)
{
    if (t < 0 || t >= QE_GGUF_VTYPE_COUNT)
        return NULL;
    return g_vtype_names[t];
}

static bool vtype_valid(uint64_t t)
{
    return t < QE_GGUF_VTYPE_COUNT;
}

/* Minimal encoded size of one element of type t (t valid). */
static uint64_t vtype_min_nbytes(int t)
{
    if (t == QE_GGUF_STRING)
        return GGUF_MIN_STR_NBYTES;
    if (t == QE_GGUF_ARRAY)
        return GGUF_MIN_ARR_NBYTES;
    return g_vtype_nbytes[t];
}

bool qe_gguf_str_eq(qe_gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static int str_cmp(qe_gguf_str a, qe_gguf_str b)
{
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* Printable excerpt of a file-provided string for messages (at most 48
 * bytes, non-printables as '?'). */
static const char *str_disp(char *buf, size_t buf_nbytes, qe_gguf_str s)
{
    size_t n = s.len < 48 ? (size_t)s.len : 48;
    if (n > buf_nbytes - 4)
        n = buf_nbytes - 4;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (s.len > n) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

/* ---- reader ------------------------------------------------------------ */

enum { RD_MAX_WHAT = 200 };

/* Cursor over the whole file plus the field being parsed (for messages). */
typedef struct rd {
    const uint8_t *p;   /* whole file, n bytes (borrowed) */
    size_t n;
    size_t pos;         /* next byte to read */
    const char *file;   /* name used in messages */
    qe_err *err;
    char what[RD_MAX_WHAT];            /* current field, e.g. "kv[3] 'general.name'" */
    uint64_t idx[QE_GGUF_MAX_DEPTH + 1]; /* array element indices, outermost first */
    int depth;                         /* number of valid idx[] entries */
} rd;

static uint64_t rd_left(const rd *r)
{
    return (uint64_t)(r->n - r->pos);
}

static int rd_fail(rd *r, int code, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int rd_fail(rd *r, int code, size_t at, const char *fmt, ...)
{
    char msg[400], field[RD_MAX_WHAT + 24 * (QE_GGUF_MAX_DEPTH + 1)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t k = qe_strlcpy(field, r->what, sizeof field);
    for (int d = 0; d < r->depth && k < sizeof field; d++)
        k += (size_t)snprintf(field + k, sizeof field - k, "[%llu]", (unsigned long long)r->idx[d]);
    return qe_err_set(r->err, code, "%s: offset %zu: %s: %s", r->file, at, field, msg);
}

static void rd_what(rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rd_what(rd *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof r->what, fmt, ap);
    va_end(ap);
}

/* Read k (<= 8) bytes of a fixed-size field named `field`. */
static int rd_fixed(rd *r, void *out, size_t k, const char *field)
{
    if (rd_left(r) < k)
        return rd_fail(r, QE_ETRUNC, r->pos, "%s: needs %zu bytes, the file ends %llu bytes later",
                       field, k, (unsigned long long)rd_left(r));
    memcpy(out, r->p + r->pos, k);
    r->pos += k;
    return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *field)
{
    return rd_fixed(r, v, 4, field);
}

static int rd_u64(rd *r, uint64_t *v, const char *field)
{
    return rd_fixed(r, v, 8, field);
}

/* gguf_string: u64 length + bytes; the view borrows the file. */
static int rd_str(rd *r, qe_gguf_str *s)
{
    size_t at = r->pos;
    uint64_t len = 0;
    int rc = rd_u64(r, &len, "string length");
    if (rc)
        return rc;
    if (len > rd_left(r))
        return rd_fail(r, QE_EBOUNDS, at, "string length %llu exceeds the %llu bytes left",
                       (unsigned long long)len, (unsigned long long)rd_left(r));
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += (size_t)len;
    return 0;
}

/* Check that `count` entries of at least `min_each` bytes can fit. */
static int rd_count(rd *r, size_t at, uint64_t count, uint64_t min_each, const char *field)
{
    uint64_t need;
    if (!qe_mul_ok(count, min_each, &need))
        return rd_fail(r, QE_ECOUNT, at, "%s %llu is absurd: %llu x %llu bytes overflows", field,
                       (unsigned long long)count, (unsigned long long)count,
                       (unsigned long long)min_each);
    if (need <= rd_left(r))
        return 0;
    if (count > GGUF_PLAUSIBLE_COUNT)
        return rd_fail(r, QE_ECOUNT, at,
                       "%s %llu is absurd: needs at least %llu bytes, only %llu bytes left", field,
                       (unsigned long long)count, (unsigned long long)need,
                       (unsigned long long)rd_left(r));
    return rd_fail(r, QE_ETRUNC, at,
                   "%s %llu needs at least %llu bytes, only %llu bytes left (file truncated?)", field,
                   (unsigned long long)count, (unsigned long long)need,
                   (unsigned long long)rd_left(r));
}

/* Frees what a reader value owns (the strs/items tables, recursively);
 * string bytes and scalar array data are borrowed from the file. */
static void rd_value_free(qe_gguf_value *v)
{
    if (v->type != QE_GGUF_ARRAY)
        return;
    if (v->v.arr.items) {
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            rd_value_free(&v->v.arr.items[i]);
    }
    free(v->v.arr.items);
    free(v->v.arr.strs);
    v->v.arr.items = NULL;
    v->v.arr.strs = NULL;
}

static int rd_value(rd *r, int type, qe_gguf_value *v);

static int rd_array(rd *r, qe_gguf_value *v)
{
    size_t at = r->pos;
    uint32_t et = 0;
    uint64_t n = 0;
    int rc;
    if (r->depth >= QE_GGUF_MAX_DEPTH)
        return rd_fail(r, QE_EFORMAT, at, "arrays nested deeper than %d levels",
                       QE_GGUF_MAX_DEPTH);
    if ((rc = rd_u32(r, &et, "array element type")))
        return rc;
    if (!vtype_valid(et))
        return rd_fail(r, QE_ETYPE, at, "array element type %u is unknown (expected 0..%d)", et,
                       QE_GGUF_VTYPE_COUNT - 1);
    size_t at_n = r->pos;
    if ((rc = rd_u64(r, &n, "array length")))
        return rc;
    if ((rc = rd_count(r, at_n, n, vtype_min_nbytes((int)et), "array length")))
        return rc;
    v->v.arr.elem_type = (int)et;
    v->v.arr.n = n;
    if (et != QE_GGUF_STRING && et != QE_GGUF_ARRAY) {
        /* Scalars: a borrowed raw little-endian run, already bounds-checked. */
        size_t nb = (size_t)n * g_vtype_nbytes[et];
        v->v.arr.data = r->p + r->pos;
        if (et == QE_GGUF_BOOL) {
            for (size_t i = 0; i < nb; i++)
                if (r->p[r->pos + i] > 1)
                    return rd_fail(r, QE_EFORMAT, r->pos + i,
                                   "bool element %zu is %u, expected 0 or 1", i, r->p[r->pos + i]);
        }
        r->pos += nb;
        return 0;
    }
    size_t alloc_n = n ? (size_t)n : 1;
    if (et == QE_GGUF_STRING) {
        v->v.arr.strs = calloc(alloc_n, sizeof *v->v.arr.strs);
        if (!v->v.arr.strs)
            return rd_fail(r, QE_ENOMEM, at, "out of memory for %llu strings",
                           (unsigned long long)n);
    } else {
        v->v.arr.items = calloc(alloc_n, sizeof *v->v.arr.items);
        if (!v->v.arr.items)
            return rd_fail(r, QE_ENOMEM, at, "out of memory for %llu nested arrays",
                           (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            v->v.arr.items[i].type = QE_GGUF_ARRAY; /* safe to free while partly parsed */
    }
    int d = r->depth++;
    for (uint64_t i = 0; i < n; i++) {
        r->idx[d] = i;
        rc = et == QE_GGUF_STRING ? rd_str(r, &v->v.arr.strs[i])
                                  : rd_value(r, QE_GGUF_ARRAY, &v->v.arr.items[i]);
        if (rc)
            break;
    }
    r->depth = d;
    return rc;
}

static int rd_value(rd *r, int type, qe_gguf_value *v)
{
    size_t at = r->pos;
    uint8_t b[8];
    int rc;
    memset(v, 0, sizeof *v);
    v->type = type;
    switch (type) {
    case QE_GGUF_STRING:
        return rd_str(r, &v->v.str);
    case QE_GGUF_ARRAY:
        return rd_array(r, v);
    default:
        break;
    }
    if ((rc = rd_fixed(r, b, g_vtype_nbytes[type], "value")))
        return rc;
    switch (type) {
    case QE_GGUF_UINT8: v->v.u64 = b[0]; break;
    case QE_GGUF_INT8: v->v.i64 = (int8_t)b[0]; break;
    case QE_GGUF_UINT16: { uint16_t x; memcpy(&x, b, 2); v->v.u64 = x; break; }
    case QE_GGUF_INT16: { int16_t x; memcpy(&x, b, 2); v->v.i64 = x; break; }
    case QE_GGUF_UINT32: { uint32_t x; memcpy(&x, b, 4); v->v.u64 = x; break; }
    case QE_GGUF_INT32: { int32_t x; memcpy(&x, b, 4); v->v.i64 = x; break; }
    case QE_GGUF_FLOAT32: { float x; memcpy(&x, b, 4); v->v.f64 = x; break; }
    case QE_GGUF_BOOL:
        if (b[0] > 1)
            return rd_fail(r, QE_EFORMAT, at, "bool value is %u, expected 0 or 1", b[0]);
        v->v.u64 = b[0];
        break;
    case QE_GGUF_UINT64: memcpy(&v->v.u64, b, 8); break;
    case QE_GGUF_INT64: memcpy(&v->v.i64, b, 8); break;
    case QE_GGUF_FLOAT64: memcpy(&v->v.f64, b, 8); break;
    default: break;
    }
    return 0;
}

/* Sort records for duplicate and overlap checks: the sort key travels
 * with the index, so qsort needs no context. */
typedef struct keyref {
    qe_gguf_str s;
    uint64_t i;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = str_cmp(x->s, y->s);
    if (c)
        return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

typedef struct spanref {
    uint64_t start, end; /* absolute file offsets [start, end) */
    uint64_t i;
} spanref;

static int spanref_cmp(const void *a, const void *b)
{
    const spanref *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int parse_kvs(rd *r, qe_gguf *g)
{
    int rc;
    g->kvs = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *g->kvs);
    if (!g->kvs)
        return qe_err_set(r->err, QE_ENOMEM, "%s: out of memory for %llu KVs", r->file,
                          (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        qe_gguf_kv *kv = &g->kvs[i];
        char disp[64];
        kv->val.type = QE_GGUF_UINT8; /* nothing owned until parsed */
        rd_what(r, "kv[%llu] key", (unsigned long long)i);
        if ((rc = rd_str(r, &kv->key)))
            return rc;
        rd_what(r, "kv[%llu] '%s'", (unsigned long long)i,
                str_disp(disp, sizeof disp, kv->key));
        size_t at = r->pos;
        uint32_t t = 0;
        if ((rc = rd_u32(r, &t, "value type")))
            return rc;
        if (!vtype_valid(t))
            return rd_fail(r, QE_ETYPE, at, "value type %u is unknown (expected 0..%d)", t,
                           QE_GGUF_VTYPE_COUNT - 1);
        if ((rc = rd_value(r, (int)t, &kv->val)))
            return rc;
    }
    /* Duplicate keys: sort (key, index) pairs, compare neighbours. */
    if (g->n_kv > 1) {
        keyref *k = malloc((size_t)g->n_kv * sizeof *k);
        if (!k)
            return qe_err_set(r->err, QE_ENOMEM, "%s: out of memory", r->file);
        for (uint64_t i = 0; i < g->n_kv; i++)
            k[i] = (keyref){g->kvs[i].key, i};
        qsort(k, (size_t)g->n_kv, sizeof *k, keyref_cmp);
        rc = 0;
        for (uint64_t i = 1; i < g->n_kv && !rc; i++) {
            if (str_cmp(k[i - 1].s, k[i].s) == 0) {
                char disp[64];
                size_t at = (size_t)((const uint8_t *)k[i].s.ptr - r->p) - 8;
                r->depth = 0;
                rd_what(r, "kv[%llu] key", (unsigned long long)k[i].i);
                rc = rd_fail(r, QE_EFORMAT, at, "duplicate key '%s' (first at kv[%llu])",
                             str_disp(disp, sizeof disp, k[i].s), (unsigned long long)k[i - 1].i);
            }
        }
        free(k);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_alignment(rd *r, qe_gguf *g)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = qe_gguf_find_kv(g, "general.alignment");
    if (i < 0)
        return 0;
    const qe_gguf_kv *kv = &g->kvs[i];
    size_t at = (size_t)((const uint8_t *)kv->key.ptr - r->p) - 8;
    rd_what(r, "kv[%lld] 'general.alignment'", (long long)i);
    if (kv->val.type != QE_GGUF_UINT32)
        return rd_fail(r, QE_ETYPE, at, "expected type u32, got %s",
                       qe_gguf_vtype_name(kv->val.type));
    uint64_t a = kv->val.v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return rd_fail(r, QE_EFORMAT, at, "alignment %llu is not a non-zero power of two",
                       (unsigned long long)a);
    g->alignment = a;
    return 0;
}

static int parse_tensor_infos(rd *r, qe_gguf *g, size_t *info_at)
{
    int rc;
    g->tensors = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors)
        return qe_err_set(r->err, QE_ENOMEM, "%s: out of memory for %llu tensors", r->file,
                          (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        qe_gguf_tensor *t = &g->tensors[i];
        char disp[64];
        info_at[i] = r->pos;
        rd_what(r, "tensor[%llu] name", (unsigned long long)i);
        if ((rc = rd_str(r, &t->name)))
            return rc;
        rd_what(r, "tensor[%llu] '%s'", (unsigned long long)i,
                str_disp(disp, sizeof disp, t->name));
        if (t->name.len >= QE_GGUF_MAX_NAME)
            return rd_fail(r, QE_EFORMAT, info_at[i],
                           "name is %llu bytes, ggml allows at most %d",
                           (unsigned long long)t->name.len, QE_GGUF_MAX_NAME - 1);
        size_t at = r->pos;
        if ((rc = rd_u32(r, &t->n_dims, "n_dims")))
            return rc;
        if (t->n_dims < 1 || t->n_dims > 4)
            return rd_fail(r, QE_EFORMAT, at, "n_dims %u, expected 1..4", t->n_dims);
        uint64_t nelem = 1;
        for (uint32_t j = 0; j < 4; j++)
            t->ne[j] = 1;
        for (uint32_t j = 0; j < t->n_dims; j++) {
            uint64_t ne = 0;
            at = r->pos;
            if ((rc = rd_u64(r, &ne, "ne")))
                return rc;
            if (ne > (uint64_t)INT64_MAX)
                return rd_fail(r, QE_EOVERFLOW, at, "ne[%u] = %llu exceeds INT64_MAX", j,
                               (unsigned long long)ne);
            t->ne[j] = (int64_t)ne;
            if (!qe_mul_ok(nelem, ne, &nelem) || nelem > (uint64_t)INT64_MAX)
                return rd_fail(r, QE_EOVERFLOW, at,
                               "element count overflows at ne[%u] = %llu", j,
                               (unsigned long long)ne);
        }
        at = r->pos;
        uint32_t type = 0;
        if ((rc = rd_u32(r, &type, "type")))
            return rc;
        const qe_type_traits *tr = qe_type_get((int)type);
        if (!tr)
            return rd_fail(r, QE_ETYPE, at, "type %u is not a known ggml type", type);
        t->type = (int)type;
        if (t->ne[0] % tr->blck_size)
            return rd_fail(r, QE_EFORMAT, at, "ne[0] = %lld is not a multiple of the %s block size %lld",
                           (long long)t->ne[0], tr->name, (long long)tr->blck_size);
        uint64_t row = (uint64_t)(t->ne[0] / tr->blck_size), nb;
        if (!qe_mul_ok(row, tr->type_size, &nb) || !qe_mul_ok(nb, (uint64_t)t->ne[1], &nb) ||
            !qe_mul_ok(nb, (uint64_t)t->ne[2], &nb) || !qe_mul_ok(nb, (uint64_t)t->ne[3], &nb))
            return rd_fail(r, QE_EOVERFLOW, at, "byte size of %s tensor {%lld,%lld,%lld,%lld} overflows",
                           tr->name, (long long)t->ne[0], (long long)t->ne[1],
                           (long long)t->ne[2], (long long)t->ne[3]);
        t->nbytes = nb;
        if ((rc = rd_u64(r, &t->offset, "offset")))
            return rc;
    }
    return 0;
}

/* Names unique; offsets aligned; data inside the file; no overlaps. */
static int check_tensor_data(rd *r, qe_gguf *g, const size_t *info_at)
{
    int rc = 0;
    r->depth = 0;
    if (g->n_tensors == 0)
        return 0;
    size_t nt = (size_t)g->n_tensors;
    keyref *k = malloc(nt * sizeof *k);
    spanref *s = malloc(nt * sizeof *s);
    if (!k || !s) {
        rc = qe_err_set(r->err, QE_ENOMEM, "%s: out of memory", r->file);
        goto out;
    }
    for (size_t i = 0; i < nt; i++)
        k[i] = (keyref){g->tensors[i].name, i};
    qsort(k, nt, sizeof *k, keyref_cmp);
    for (size_t i = 1; i < nt; i++) {
        if (str_cmp(k[i - 1].s, k[i].s) == 0) {
            char disp[64];
            rd_what(r, "tensor[%llu] name", (unsigned long long)k[i].i);
            rc = rd_fail(r, QE_EFORMAT, info_at[k[i].i], "duplicate tensor name '%s' (first at tensor[%llu])",
                         str_disp(disp, sizeof disp, k[i].s), (unsigned long long)k[i - 1].i);
            goto out;
        }
    }
    for (size_t i = 0; i < nt; i++) {
        qe_gguf_tensor *t = &g->tensors[i];
        char disp[64];
        uint64_t start, end;
        rd_what(r, "tensor[%zu] '%s' offset", i, str_disp(disp, sizeof disp, t->name));
        if (t->offset % g->alignment) {
            rc = rd_fail(r, QE_EFORMAT, info_at[i], "data offset %llu is not a multiple of the alignment %llu",
                         (unsigned long long)t->offset, (unsigned long long)g->alignment);
            goto out;
        }
        if (!qe_add_ok(g->data_offset, t->offset, &start) || !qe_add_ok(start, t->nbytes, &end) ||
            end > g->nbytes) {
            rc = rd_fail(r, QE_EBOUNDS, info_at[i],
                         "data at data section %llu + offset %llu, %llu bytes, runs past the end of the file (%zu bytes)",
                         (unsigned long long)g->data_offset, (unsigned long long)t->offset,
                         (unsigned long long)t->nbytes, g->nbytes);
            goto out;
        }
        t->data = g->base + start;
        s[i] = (spanref){start, end, i};
    }
    qsort(s, nt, sizeof *s, spanref_cmp);
    /* Keep the span reaching furthest so far; any later start below its end
     * overlaps it (empty tensors overlap nothing). */
    size_t far = SIZE_MAX;
    for (size_t i = 0; i < nt; i++) {
        if (s[i].end == s[i].start)
            continue;
        if (far != SIZE_MAX && s[i].start < s[far].end) {
            char d1[64], d2[64];
            rd_what(r, "tensor[%llu] '%s' offset", (unsigned long long)s[i].i,
                    str_disp(d1, sizeof d1, g->tensors[s[i].i].name));
            rc = rd_fail(r, QE_EOVERLAP, info_at[s[i].i],
                         "data [%llu, %llu) overlaps tensor[%llu] '%s' data [%llu, %llu)",
                         (unsigned long long)s[i].start, (unsigned long long)s[i].end,
                         (unsigned long long)s[far].i, str_disp(d2, sizeof d2, g->tensors[s[far].i].name),
                         (unsigned long long)s[far].start, (unsigned long long)s[far].end);
            goto out;
        }
        if (far == SIZE_MAX || s[i].end > s[far].end)
            far = i;
    }
out:
    free(k);
    free(s);
    return rc;
}

static int gguf_parse(qe_gguf *g, qe_err *err)
{
    rd r = {.p = g->base, .n = g->nbytes, .file = g->path, .err = err};
    uint32_t magic = 0;
    int rc;
    size_t *info_at = NULL;

    rd_what(&r, "header");
    if ((rc = rd_u32(&r, &magic, "magic")))
        return rc;
    if (memcmp(&magic, "GGUF", 4) != 0) {
        const uint8_t *m = g->base;
        return rd_fail(&r, QE_EMAGIC, 0, "magic is %02x %02x %02x %02x, expected \"GGUF\" (47 47 55 46)",
                       m[0], m[1], m[2], m[3]);
    }
    if ((rc = rd_u32(&r, &g->version, "version")))
        return rc;
    if (g->version != 2 && g->version != 3)
        return rd_fail(&r, QE_EVERSION, 4, "version %u is not supported, expected 2 or 3%s",
                       g->version,
                       g->version == 1 ? " (GGUF v1 used 32-bit lengths)"
                       : (g->version & 0xffff) == 0 ? " (big-endian file?)" : "");
    size_t at_nt = r.pos;
    if ((rc = rd_u64(&r, &g->n_tensors, "n_tensors")))
        return rc;
    size_t at_nkv = r.pos;
    if ((rc = rd_u64(&r, &g->n_kv, "n_kv")))
        return rc;
    if ((rc = rd_count(&r, at_nkv, g->n_kv, GGUF_MIN_KV_NBYTES, "n_kv")) ||
        (rc = rd_count(&r, at_nt, g->n_tensors, GGUF_MIN_TINFO_NBYTES, "n_tensors")))
        return rc;
    if ((rc = parse_kvs(&r, g)))
        return rc;
    r.depth = 0;
    if ((rc = parse_alignment(&r, g)))
        return rc;
    /* n_tensors was checked against the bytes left before the KVs, so recheck. */
    rd_what(&r, "header");
    if ((rc = rd_count(&r, at_nt, g->n_tensors, GGUF_MIN_TINFO_NBYTES, "n_tensors")))
        return rc;
    info_at = malloc((g->n_tensors ? (size_t)g->n_tensors : 1) * sizeof *info_at);
    if (!info_at)
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory", g->path);
    if ((rc = parse_tensor_infos(&r, g, info_at)))
        goto out;
    /* The data section starts at the next multiple of the alignment; with
     * no tensors the file may end before it (vocab-only files do). */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = (uint64_t)r.pos + pad;
    rc = check_tensor_data(&r, g, info_at);
out:
    free(info_at);
    return rc;
}

static qe_gguf *gguf_new(const char *name)
{
    qe_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    qe_strlcpy(g->path, name ? name : "<memory>", sizeof g->path);
    g->map.fd = -1;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    return g;
}

qe_gguf *qe_gguf_open(const char *path, qe_err *err)
{
    qe_gguf *g = gguf_new(path);
    if (!g) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (qe_map_open(&g->map, path, err) != 0) {
        free(g);
        return NULL;
    }
    g->base = g->map.data;
    g->nbytes = g->map.nbytes;
    if (gguf_parse(g, err) != 0) {
        qe_gguf_close(g);
        return NULL;
    }
    return g;
}

qe_gguf *qe_gguf_open_mem(const void *buf, size_t nbytes, const char *name, qe_err *err)
{
    qe_gguf *g = gguf_new(name);
    if (!g) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", name ? name : "<memory>");
        return NULL;
    }
    g->base = buf;
    g->nbytes = buf ? nbytes : 0;
    if (gguf_parse(g, err) != 0) {
        qe_gguf_close(g);
        return NULL;
    }
    return g;
}

void qe_gguf_close(qe_gguf *g)
{
    if (!g)
        return;
    if (g->kvs) {
        for (uint64_t i = 0; i < g->n_kv; i++)
            rd_value_free(&g->kvs[i].val);
    }
    free(g->kvs);
    free(g->tensors);
    qe_map_close(&g->map);
    free(g);
}

/* ---- lookup and typed getters ----------------------------------------- */

int64_t qe_gguf_find_kv(const qe_gguf *g, const char *key)
{
    if (!g || !key || !g->kvs)
        return -1;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (qe_gguf_str_eq(g->kvs[i].key, key))
            return (int64_t)i;
    return -1;
}

const qe_gguf_value *qe_gguf_get(const qe_gguf *g, const char *key)
{
    int64_t i = qe_gguf_find_kv(g, key);
    return i < 0 ? NULL : &g->kvs[i].val;
}

const qe_gguf_tensor *qe_gguf_find_tensor(const qe_gguf *g, const char *name)
{
    if (!g || !name || !g->tensors)
        return NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (qe_gguf_str_eq(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static bool vtype_is_unsigned(int t)
{
    return t == QE_GGUF_UINT8 || t == QE_GGUF_UINT16 || t == QE_GGUF_UINT32 || t == QE_GGUF_UINT64;
}

static bool vtype_is_signed(int t)
{
    return t == QE_GGUF_INT8 || t == QE_GGUF_INT16 || t == QE_GGUF_INT32 || t == QE_GGUF_INT64;
}

static const qe_gguf_value *get_or_fail(const qe_gguf *g, const char *key, qe_err *err)
{
    const qe_gguf_value *v = qe_gguf_get(g, key);
    if (!v)
        qe_err_set(err, QE_ENOTFOUND, "%s: key '%s' not found", g ? g->path : "<null>", key);
    return v;
}

static int type_fail(const qe_gguf *g, const char *key, const qe_gguf_value *v, const char *want,
                     qe_err *err)
{
    return qe_err_set(err, QE_ETYPE, "%s: key '%s': stored as %s, expected %s", g->path, key,
                      qe_gguf_vtype_name(v->type), want);
}

int qe_gguf_get_u64(const qe_gguf *g, const char *key, uint64_t *out, qe_err *err)
{
    const qe_gguf_value *v = get_or_fail(g, key, err);
    if (!v)
        return QE_ENOTFOUND;
    if (vtype_is_unsigned(v->type)) {
        *out = v->v.u64;
        return 0;
    }
    if (vtype_is_signed(v->type) && v->v.i64 >= 0) {
        *out = (uint64_t)v->v.i64;
        return 0;
    }
    return type_fail(g, key, v, "a non-negative integer", err);
}

int qe_gguf_get_i64(const qe_gguf *g, const char *key, int64_t *out, qe_err *err)
{
    const qe_gguf_value *v = get_or_fail(g, key, err);
    if (!v)
        return QE_ENOTFOUND;
    if (vtype_is_signed(v->type)) {
        *out = v->v.i64;
        return 0;
    }
    if (vtype_is_unsigned(v->type) && v->v.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->v.u64;
        return 0;
    }
    return type_fail(g, key, v, "an integer within int64", err);
}

int qe_gguf_get_f64(const qe_gguf *g, const char *key, double *out, qe_err *err)
{
    const qe_gguf_value *v = get_or_fail(g, key, err);
    if (!v)
        return QE_ENOTFOUND;
    if (v->type == QE_GGUF_FLOAT32 || v->type == QE_GGUF_FLOAT64)
        *out = v->v.f64;
    else if (vtype_is_unsigned(v->type))
        *out = (double)v->v.u64;
    else if (vtype_is_signed(v->type))
        *out = (double)v->v.i64;
    else
        return type_fail(g, key, v, "a number", err);
    return 0;
}

int qe_gguf_get_bool(const qe_gguf *g, const char *key, bool *out, qe_err *err)
{
    const qe_gguf_value *v = get_or_fail(g, key, err);
    if (!v)
        return QE_ENOTFOUND;
    if (v->type != QE_GGUF_BOOL)
        return type_fail(g, key, v, "bool", err);
    *out = v->v.u64 != 0;
    return 0;
}

int qe_gguf_get_str(const qe_gguf *g, const char *key, char *buf, size_t buf_nbytes, qe_err *err)
{
    const qe_gguf_value *v = get_or_fail(g, key, err);
    if (!v)
        return QE_ENOTFOUND;
    if (v->type != QE_GGUF_STRING)
        return type_fail(g, key, v, "str", err);
    if (buf_nbytes == 0)
        return 0;
    size_t n = v->v.str.len < buf_nbytes - 1 ? (size_t)v->v.str.len : buf_nbytes - 1;
    if (n)
        memcpy(buf, v->v.str.ptr, n);
    buf[n] = '\0';
    return 0;
}

/* ---- builder ------------------------------------------------------------ */

typedef struct bkv {
    qe_gguf_str key;   /* owned, NUL-terminated copy */
    qe_gguf_value val; /* owned deep copy (strings NUL-terminated) */
} bkv;

typedef struct btensor {
    qe_gguf_str name;  /* owned, NUL-terminated copy */
    int type;          /* ggml type id */
    uint32_t n_dims;
    int64_t ne[4];     /* unused dims = 1 */
    const void *data;  /* borrowed until write returns */
    uint64_t nbytes;
} btensor;

struct qe_gguf_builder {
    uint32_t version;
    bkv *kvs;          /* n_kv in file order (owned) */
    size_t n_kv, cap_kv;
    btensor *ts;       /* n_ts in file order (owned table) */
    size_t n_ts, cap_ts;
};

static int str_dup(qe_gguf_str *dst, const char *p, uint64_t len)
{
    if (len >= SIZE_MAX)
        return QE_ENOMEM;
    char *c = malloc((size_t)len + 1);
    if (!c)
        return QE_ENOMEM;
    if (len)
        memcpy(c, p, (size_t)len);
    c[len] = '\0';
    dst->ptr = c;
    dst->len = len;
    return 0;
}

/* Frees everything a builder value owns (string bytes included). */
static void bvalue_free(qe_gguf_value *v)
{
    if (v->type == QE_GGUF_STRING) {
        free((void *)v->v.str.ptr);
    } else if (v->type == QE_GGUF_ARRAY) {
        if (v->v.arr.strs)
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                free((void *)v->v.arr.strs[i].ptr);
        if (v->v.arr.items)
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                bvalue_free(&v->v.arr.items[i]);
        free(v->v.arr.strs);
        free(v->v.arr.items);
        free((void *)v->v.arr.data);
    }
    memset(v, 0, sizeof *v);
}

/* Deep copy of any value (reader's or caller-built) into owned memory. */
static int bvalue_copy(qe_gguf_value *dst, const qe_gguf_value *src, int depth, const char *key,
                       qe_err *err)
{
    memset(dst, 0, sizeof *dst);
    if (src->type < 0 || src->type >= QE_GGUF_VTYPE_COUNT)
        return qe_err_set(err, QE_ETYPE, "gguf builder: key '%s': value type %d unknown", key,
                          src->type);
    dst->type = src->type;
    if (src->type == QE_GGUF_STRING) {
        if (!src->v.str.ptr && src->v.str.len)
            return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL string", key);
        if (str_dup(&dst->v.str, src->v.str.ptr, src->v.str.len)) {
            dst->type = QE_GGUF_UINT8;
            return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s': out of memory", key);
        }
        return 0;
    }
    if (src->type != QE_GGUF_ARRAY) {
        dst->v = src->v;
        return 0;
    }
    int et = src->v.arr.elem_type;
    uint64_t n = src->v.arr.n;
    if (depth >= QE_GGUF_MAX_DEPTH)
        return qe_err_set(err, QE_EFORMAT, "gguf builder: key '%s': arrays nested deeper than %d",
                          key, QE_GGUF_MAX_DEPTH);
    if (et < 0 || et >= QE_GGUF_VTYPE_COUNT)
        return qe_err_set(err, QE_ETYPE, "gguf builder: key '%s': array element type %d unknown",
                          key, et);
    dst->v.arr.elem_type = et;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / sizeof(qe_gguf_value))
        return qe_err_set(err, QE_ECOUNT, "gguf builder: key '%s': array length %llu too large",
                          key, (unsigned long long)n);
    if (et == QE_GGUF_STRING) {
        if (!src->v.arr.strs)
            return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL string table", key);
        dst->v.arr.strs = calloc((size_t)n, sizeof *dst->v.arr.strs);
        if (!dst->v.arr.strs)
            return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s': out of memory", key);
        dst->v.arr.n = n;
        for (uint64_t i = 0; i < n; i++) {
            const qe_gguf_str *s = &src->v.arr.strs[i];
            if ((!s->ptr && s->len) || str_dup(&dst->v.arr.strs[i], s->ptr, s->len))
                return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s'[%llu]: bad string or out of memory",
                                  key, (unsigned long long)i);
        }
        return 0;
    }
    if (et == QE_GGUF_ARRAY) {
        if (!src->v.arr.items)
            return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL item table", key);
        dst->v.arr.items = calloc((size_t)n, sizeof *dst->v.arr.items);
        if (!dst->v.arr.items)
            return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s': out of memory", key);
        dst->v.arr.n = n;
        for (uint64_t i = 0; i < n; i++) {
            if (src->v.arr.items[i].type != QE_GGUF_ARRAY)
                return qe_err_set(err, QE_ETYPE, "gguf builder: key '%s'[%llu]: expected a nested array",
                                  key, (unsigned long long)i);
            int rc = bvalue_copy(&dst->v.arr.items[i], &src->v.arr.items[i], depth + 1, key, err);
            if (rc)
                return rc;
        }
        return 0;
    }
    size_t nb = (size_t)n * g_vtype_nbytes[et];
    if (!src->v.arr.data)
        return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL array data", key);
    void *d = malloc(nb);
    if (!d)
        return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s': out of memory", key);
    memcpy(d, src->v.arr.data, nb);
    dst->v.arr.data = d;
    dst->v.arr.n = n;
    return 0;
}

qe_gguf_builder *qe_gguf_builder_new(uint32_t version, qe_err *err)
{
    if (version != 2 && version != 3) {
        qe_err_set(err, QE_EVERSION, "gguf builder: version %u, expected 2 or 3", version);
        return NULL;
    }
    qe_gguf_builder *b = calloc(1, sizeof *b);
    if (!b) {
        qe_err_set(err, QE_ENOMEM, "gguf builder: out of memory");
        return NULL;
    }
    b->version = version;
    return b;
}

void qe_gguf_builder_free(qe_gguf_builder *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_kv; i++) {
        free((void *)b->kvs[i].key.ptr);
        bvalue_free(&b->kvs[i].val);
    }
    for (size_t i = 0; i < b->n_ts; i++)
        free((void *)b->ts[i].name.ptr);
    free(b->kvs);
    free(b->ts);
    free(b);
}

/* Index of a KV whose key equals (p, len), or -1. */
static ptrdiff_t bfind_kv(const qe_gguf_builder *b, const char *p, uint64_t len)
{
    qe_gguf_str k = {p, len};
    for (size_t i = 0; i < b->n_kv; i++)
        if (str_cmp(b->kvs[i].key, k) == 0)
            return (ptrdiff_t)i;
    return -1;
}

static ptrdiff_t bfind_tensor(const qe_gguf_builder *b, const char *p, uint64_t len)
{
    qe_gguf_str k = {p, len};
    for (size_t i = 0; i < b->n_ts; i++)
        if (str_cmp(b->ts[i].name, k) == 0)
            return (ptrdiff_t)i;
    return -1;
}

static int grow(void **tab, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *t = realloc(*tab, nc * elem);
    if (!t)
        return QE_ENOMEM;
    *tab = t;
    *cap = nc;
    return 0;
}

/* Set by key given as bytes (so keys read from a file, which may hold any
 * byte, round-trip exactly). */
static int bset_value(qe_gguf_builder *b, const char *key, uint64_t key_len,
                      const qe_gguf_value *v, qe_err *err)
{
    char kbuf[128];
    qe_gguf_str ks = {key, key_len};
    str_disp(kbuf, sizeof kbuf, ks);
    qe_gguf_value copy;
    int rc = bvalue_copy(&copy, v, 0, kbuf, err);
    if (rc) {
        bvalue_free(&copy);
        return rc;
    }
    ptrdiff_t i = bfind_kv(b, key, key_len);
    if (i >= 0) {
        bvalue_free(&b->kvs[i].val);
        b->kvs[i].val = copy;
        return 0;
    }
    if (grow((void **)&b->kvs, &b->cap_kv, b->n_kv + 1, sizeof *b->kvs) ||
        str_dup(&b->kvs[b->n_kv].key, key, key_len)) {
        bvalue_free(&copy);
        return qe_err_set(err, QE_ENOMEM, "gguf builder: key '%s': out of memory", kbuf);
    }
    b->kvs[b->n_kv++].val = copy;
    return 0;
}

int qe_gguf_builder_set_value(qe_gguf_builder *b, const char *key, const qe_gguf_value *v,
                              qe_err *err)
{
    if (!b || !key || !v)
        return qe_err_set(err, QE_EINVAL, "gguf builder: NULL argument");
    return bset_value(b, key, strlen(key), v, err);
}

int qe_gguf_builder_set_u32(qe_gguf_builder *b, const char *key, uint32_t v, qe_err *err)
{
    qe_gguf_value x = {.type = QE_GGUF_UINT32, .v.u64 = v};
    return qe_gguf_builder_set_value(b, key, &x, err);
}

int qe_gguf_builder_set_i32(qe_gguf_builder *b, const char *key, int32_t v, qe_err *err)
{
    qe_gguf_value x = {.type = QE_GGUF_INT32, .v.i64 = v};
    return qe_gguf_builder_set_value(b, key, &x, err);
}

int qe_gguf_builder_set_f32(qe_gguf_builder *b, const char *key, float v, qe_err *err)
{
    qe_gguf_value x = {.type = QE_GGUF_FLOAT32, .v.f64 = v};
    return qe_gguf_builder_set_value(b, key, &x, err);
}

int qe_gguf_builder_set_bool(qe_gguf_builder *b, const char *key, bool v, qe_err *err)
{
    qe_gguf_value x = {.type = QE_GGUF_BOOL, .v.u64 = v ? 1 : 0};
    return qe_gguf_builder_set_value(b, key, &x, err);
}

int qe_gguf_builder_set_str(qe_gguf_builder *b, const char *key, const char *v, qe_err *err)
{
    if (!v)
        return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL string", key ? key : "?");
    qe_gguf_value x = {.type = QE_GGUF_STRING, .v.str = {v, strlen(v)}};
    return qe_gguf_builder_set_value(b, key, &x, err);
}

int qe_gguf_builder_set_str_array(qe_gguf_builder *b, const char *key, const char *const *v,
                                  uint64_t n, qe_err *err)
{
    if (n && !v)
        return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s': NULL array", key ? key : "?");
    if (n > SIZE_MAX / sizeof(qe_gguf_str))
        return qe_err_set(err, QE_ECOUNT, "gguf builder: key '%s': %llu strings", key ? key : "?",
                          (unsigned long long)n);
    qe_gguf_str *s = calloc(n ? (size_t)n : 1, sizeof *s);
    if (!s)
        return qe_err_set(err, QE_ENOMEM, "gguf builder: out of memory");
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) {
            free(s);
            return qe_err_set(err, QE_EINVAL, "gguf builder: key '%s'[%llu]: NULL string",
                              key ? key : "?", (unsigned long long)i);
        }
        s[i] = (qe_gguf_str){v[i], strlen(v[i])};
    }
    qe_gguf_value x = {.type = QE_GGUF_ARRAY};
    x.v.arr.elem_type = QE_GGUF_STRING;
    x.v.arr.n = n;
    x.v.arr.strs = s;
    int rc = qe_gguf_builder_set_value(b, key, &x, err);
    free(s);
    return rc;
}

int qe_gguf_builder_remove(qe_gguf_builder *b, const char *key)
{
    if (!b || !key)
        return QE_EINVAL;
    ptrdiff_t i = bfind_kv(b, key, strlen(key));
    if (i < 0)
        return QE_ENOTFOUND;
    free((void *)b->kvs[i].key.ptr);
    bvalue_free(&b->kvs[i].val);
    memmove(&b->kvs[i], &b->kvs[i + 1], (b->n_kv - (size_t)i - 1) * sizeof *b->kvs);
    b->n_kv--;
    return 0;
}

/* Shared by set_tensor (C-string name) and builder_from (byte names). */
static int bset_tensor(qe_gguf_builder *b, const char *name, uint64_t name_len, int type,
                       uint32_t n_dims, const int64_t *ne, const void *data, uint64_t nbytes,
                       qe_err *err)
{
    char disp[64];
    str_disp(disp, sizeof disp, (qe_gguf_str){name, name_len});
    if (name_len >= QE_GGUF_MAX_NAME)
        return qe_err_set(err, QE_EINVAL, "gguf builder: tensor '%s': name is %llu bytes, ggml allows at most %d",
                          disp, (unsigned long long)name_len, QE_GGUF_MAX_NAME - 1);
    const qe_type_traits *tr = qe_type_get(type);
    if (!tr)
        return qe_err_set(err, QE_ETYPE, "gguf builder: tensor '%s': type %d is not a known ggml type",
                          disp, type);
    if (n_dims < 1 || n_dims > 4 || !ne)
        return qe_err_set(err, QE_EINVAL, "gguf builder: tensor '%s': n_dims %u, expected 1..4",
                          disp, n_dims);
    btensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .data = data, .nbytes = nbytes};
    uint64_t want = 0;
    for (uint32_t j = 0; j < n_dims; j++) {
        if (ne[j] < 0)
            return qe_err_set(err, QE_EINVAL, "gguf builder: tensor '%s': ne[%u] = %lld is negative",
                              disp, j, (long long)ne[j]);
        t.ne[j] = ne[j];
    }
    if (t.ne[0] % tr->blck_size)
        return qe_err_set(err, QE_ESHAPE, "gguf builder: tensor '%s': ne[0] = %lld is not a multiple of the %s block size %lld",
                          disp, (long long)t.ne[0], tr->name, (long long)tr->blck_size);
    if (!qe_mul_ok((uint64_t)(t.ne[0] / tr->blck_size), tr->type_size, &want) ||
        !qe_mul_ok(want, (uint64_t)t.ne[1], &want) || !qe_mul_ok(want, (uint64_t)t.ne[2], &want) ||
        !qe_mul_ok(want, (uint64_t)t.ne[3], &want))
        return qe_err_set(err, QE_EOVERFLOW, "gguf builder: tensor '%s': byte size overflows", disp);
    if (want != nbytes)
        return qe_err_set(err, QE_ESHAPE, "gguf builder: tensor '%s': %llu bytes given, %s {%lld,%lld,%lld,%lld} needs %llu",
                          disp, (unsigned long long)nbytes, tr->name, (long long)t.ne[0],
                          (long long)t.ne[1], (long long)t.ne[2], (long long)t.ne[3],
                          (unsigned long long)want);
    if (!data && nbytes)
        return qe_err_set(err, QE_EINVAL, "gguf builder: tensor '%s': NULL data", disp);
    ptrdiff_t i = bfind_tensor(b, name, name_len);
    if (i >= 0) {
        t.name = b->ts[i].name;
        b->ts[i] = t;
        return 0;
    }
    if (grow((void **)&b->ts, &b->cap_ts, b->n_ts + 1, sizeof *b->ts) ||
        str_dup(&t.name, name, name_len))
        return qe_err_set(err, QE_ENOMEM, "gguf builder: tensor '%s': out of memory", disp);
    b->ts[b->n_ts++] = t;
    return 0;
}

int qe_gguf_builder_set_tensor(qe_gguf_builder *b, const char *name, int type, uint32_t n_dims,
                               const int64_t *ne, const void *data, uint64_t nbytes, qe_err *err)
{
    if (!b || !name)
        return qe_err_set(err, QE_EINVAL, "gguf builder: NULL argument");
    return bset_tensor(b, name, strlen(name), type, n_dims, ne, data, nbytes, err);
}

int qe_gguf_builder_remove_tensor(qe_gguf_builder *b, const char *name)
{
    if (!b || !name)
        return QE_EINVAL;
    ptrdiff_t i = bfind_tensor(b, name, strlen(name));
    if (i < 0)
        return QE_ENOTFOUND;
    free((void *)b->ts[i].name.ptr);
    memmove(&b->ts[i], &b->ts[i + 1], (b->n_ts - (size_t)i - 1) * sizeof *b->ts);
    b->n_ts--;
    return 0;
}

qe_gguf_builder *qe_gguf_builder_from(const qe_gguf *src, qe_err *err)
{
    if (!src) {
        qe_err_set(err, QE_EINVAL, "gguf builder: NULL source");
        return NULL;
    }
    qe_gguf_builder *b = qe_gguf_builder_new(src->version, err);
    if (!b)
        return NULL;
    for (uint64_t i = 0; i < src->n_kv; i++) {
        const qe_gguf_kv *kv = &src->kvs[i];
        if (bset_value(b, kv->key.ptr, kv->key.len, &kv->val, err))
            goto fail;
    }
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const qe_gguf_tensor *t = &src->tensors[i];
        if (bset_tensor(b, t->name.ptr, t->name.len, t->type, t->n_dims, t->ne, t->data,
                        t->nbytes, err))
            goto fail;
    }
    return b;
fail:
    qe_err_prefix(err, "%s", src->path);
    qe_gguf_builder_free(b);
    return NULL;
}

/* ---- serialisation ------------------------------------------------------ */

/* Byte sink: a FILE or a growing memory buffer.  Errors are sticky. */
typedef struct sink {
    FILE *f;
    uint8_t *buf;   /* owned while writing to memory */
    size_t n, cap;
    bool failed;
} sink;

static void put(sink *s, const void *p, size_t k)
{
    if (s->failed || k == 0)
        return;
    if (s->f) {
        if (fwrite(p, 1, k, s->f) != k)
            s->failed = true;
        return;
    }
    if (s->n + k > s->cap) {
        size_t nc = s->cap ? s->cap : 4096;
        while (nc < s->n + k) {
            if (nc > SIZE_MAX / 2) {
                s->failed = true;
                return;
            }
            nc *= 2;
        }
        uint8_t *nb = realloc(s->buf, nc);
        if (!nb) {
            s->failed = true;
            return;
        }
        s->buf = nb;
        s->cap = nc;
    }
    memcpy(s->buf + s->n, p, k);
    s->n += k;
}

static void put_u32(sink *s, uint32_t v)
{
    put(s, &v, 4);
}

static void put_u64(sink *s, uint64_t v)
{
    put(s, &v, 8);
}

static void put_zeros(sink *s, uint64_t k)
{
    static const uint8_t z[64];
    while (k) {
        size_t c = k < sizeof z ? (size_t)k : sizeof z;
        put(s, z, c);
        k -= c;
    }
}

static void put_str(sink *s, qe_gguf_str str)
{
    put_u64(s, str.len);
    put(s, str.ptr, (size_t)str.len);
}

/* Encoded size of a value (for the header size and padding). */
static uint64_t value_nbytes(const qe_gguf_value *v)
{
    if (v->type == QE_GGUF_STRING)
        return 8 + v->v.str.len;
    if (v->type != QE_GGUF_ARRAY)
        return g_vtype_nbytes[v->type];
    uint64_t n = 12;
    int et = v->v.arr.elem_type;
    if (et == QE_GGUF_STRING) {
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            n += 8 + v->v.arr.strs[i].len;
    } else if (et == QE_GGUF_ARRAY) {
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            n += value_nbytes(&v->v.arr.items[i]);
    } else {
        n += v->v.arr.n * g_vtype_nbytes[et];
    }
    return n;
}

static void put_value(sink *s, const qe_gguf_value *v)
{
    uint8_t b[8];
    switch (v->type) {
    case QE_GGUF_STRING: put_str(s, v->v.str); return;
    case QE_GGUF_ARRAY: {
        int et = v->v.arr.elem_type;
        put_u32(s, (uint32_t)et);
        put_u64(s, v->v.arr.n);
        if (et == QE_GGUF_STRING) {
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                put_str(s, v->v.arr.strs[i]);
        } else if (et == QE_GGUF_ARRAY) {
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                put_value(s, &v->v.arr.items[i]);
        } else {
            put(s, v->v.arr.data, (size_t)v->v.arr.n * g_vtype_nbytes[et]);
        }
        return;
    }
    case QE_GGUF_UINT8: case QE_GGUF_BOOL: b[0] = (uint8_t)v->v.u64; break;
    case QE_GGUF_INT8: b[0] = (uint8_t)(int8_t)v->v.i64; break;
    case QE_GGUF_UINT16: { uint16_t x = (uint16_t)v->v.u64; memcpy(b, &x, 2); break; }
    case QE_GGUF_INT16: { int16_t x = (int16_t)v->v.i64; memcpy(b, &x, 2); break; }
    case QE_GGUF_UINT32: { uint32_t x = (uint32_t)v->v.u64; memcpy(b, &x, 4); break; }
    case QE_GGUF_INT32: { int32_t x = (int32_t)v->v.i64; memcpy(b, &x, 4); break; }
    case QE_GGUF_FLOAT32: { float x = (float)v->v.f64; memcpy(b, &x, 4); break; }
    case QE_GGUF_UINT64: memcpy(b, &v->v.u64, 8); break;
    case QE_GGUF_INT64: memcpy(b, &v->v.i64, 8); break;
    case QE_GGUF_FLOAT64: memcpy(b, &v->v.f64, 8); break;
    default: return;
    }
    put(s, b, g_vtype_nbytes[v->type]);
}

static uint64_t pad_to(uint64_t x, uint64_t a)
{
    return (a - x % a) % a;
}

/* Alignment the file will declare: general.alignment (u32, power of two)
 * or 32. */
static int builder_alignment(const qe_gguf_builder *b, uint64_t *out, qe_err *err)
{
    *out = GGUF_DEFAULT_ALIGNMENT;
    ptrdiff_t i = bfind_kv(b, "general.alignment", strlen("general.alignment"));
    if (i < 0)
        return 0;
    const qe_gguf_value *v = &b->kvs[i].val;
    if (v->type != QE_GGUF_UINT32)
        return qe_err_set(err, QE_ETYPE, "gguf builder: general.alignment: expected u32, got %s",
                          qe_gguf_vtype_name(v->type));
    if (v->v.u64 == 0 || (v->v.u64 & (v->v.u64 - 1)))
        return qe_err_set(err, QE_EFORMAT, "gguf builder: general.alignment %llu is not a non-zero power of two",
                          (unsigned long long)v->v.u64);
    *out = v->v.u64;
    return 0;
}

/* The whole file: header, KVs, tensor infos (offsets packed in order, each
 * aligned), zero padding to the data section (only when there are tensors:
 * vocab-only files written by llama.cpp's tools end right after the
 * header), then each tensor's data followed by zeros to the alignment. */
static int builder_emit(const qe_gguf_builder *b, sink *s, const char *dest, qe_err *err)
{
    uint64_t align, off = 0, hdr = 24;
    int rc = builder_alignment(b, &align, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n_kv; i++)
        hdr += 8 + b->kvs[i].key.len + 4 + value_nbytes(&b->kvs[i].val);
    put(s, "GGUF", 4);
    put_u32(s, b->version);
    put_u64(s, b->n_ts);
    put_u64(s, b->n_kv);
    for (size_t i = 0; i < b->n_kv; i++) {
        put_str(s, b->kvs[i].key);
        put_u32(s, (uint32_t)b->kvs[i].val.type);
        put_value(s, &b->kvs[i].val);
    }
    for (size_t i = 0; i < b->n_ts; i++) {
        const btensor *t = &b->ts[i];
        put_str(s, t->name);
        put_u32(s, t->n_dims);
        for (uint32_t j = 0; j < t->n_dims; j++)
            put_u64(s, (uint64_t)t->ne[j]);
        put_u32(s, (uint32_t)t->type);
        put_u64(s, off);
        hdr += 8 + t->name.len + 4 + 8ull * t->n_dims + 4 + 8;
        if (!qe_add_ok(off, t->nbytes, &off) || !qe_add_ok(off, pad_to(off, align), &off))
            return qe_err_set(err, QE_EOVERFLOW, "%s: tensor data offsets overflow", dest);
    }
    if (b->n_ts) {
        put_zeros(s, pad_to(hdr, align));
        for (size_t i = 0; i < b->n_ts; i++) {
            put(s, b->ts[i].data, (size_t)b->ts[i].nbytes);
            put_zeros(s, pad_to(b->ts[i].nbytes, align));
        }
    }
    if (s->failed)
        return qe_err_set(err, s->f ? QE_EIO : QE_ENOMEM, "%s: %s", dest,
                          s->f ? strerror(errno) : "out of memory");
    return 0;
}

int qe_gguf_builder_write_mem(const qe_gguf_builder *b, uint8_t **out, size_t *out_nbytes,
                              qe_err *err)
{
    if (!b || !out || !out_nbytes)
        return qe_err_set(err, QE_EINVAL, "gguf builder: NULL argument");
    *out = NULL;
    *out_nbytes = 0;
    sink s = {0};
    int rc = builder_emit(b, &s, "<memory>", err);
    if (rc) {
        free(s.buf);
        return rc;
    }
    *out = s.buf;
    *out_nbytes = s.n;
    return 0;
}

int qe_gguf_builder_write(const qe_gguf_builder *b, const char *path, qe_err *err)
{
    if (!b || !path)
        return qe_err_set(err, QE_EINVAL, "gguf builder: NULL argument");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= sizeof tmp)
        return qe_err_set(err, QE_EINVAL, "%s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return qe_err_set(err, QE_EIO, "%s: cannot create temp file %s: %s", path, tmp,
                          strerror(errno));
    if (fchmod(fd, 0644) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return qe_err_set(err, QE_EIO, "%s: chmod: %s", tmp, strerror(e));
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return qe_err_set(err, QE_EIO, "%s: fdopen: %s", tmp, strerror(e));
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    sink s = {.f = f};
    int rc = builder_emit(b, &s, tmp, err);
    if (!rc && (fflush(f) != 0 || fsync(fd) != 0))
        rc = qe_err_set(err, QE_EIO, "%s: write: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && !rc)
        rc = qe_err_set(err, QE_EIO, "%s: close: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = qe_err_set(err, QE_EIO, "%s: rename from %s: %s", path, tmp, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}
