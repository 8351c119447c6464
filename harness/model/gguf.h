/*
 * gguf.h: GGUF v2/v3 reader (mmap, zero-copy) and writer.
 *
 * File layout (little-endian), as llama.cpp writes it:
 *   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
 *   n_kv x { gguf_string key | u32 value_type | value }
 *   n_tensors x { gguf_string name | u32 n_dims | u64 ne[n_dims] |
 *                 u32 ggml_type | u64 offset (relative to data section) }
 *   padding to `general.alignment` (default 32)
 *   data section: tensor data, each at its offset (aligned)
 * gguf_string = u64 length + bytes (no NUL).  Arrays = u32 elem type +
 * u64 count + elements (arrays may nest).
 *
 * Every length, count and offset is checked against the bytes remaining
 * and against overflow before use (codes in common.h: ETRUNC, ECOUNT,
 * EBOUNDS, EOVERLAP, ETYPE, EOVERFLOW, EMAGIC, EVERSION).  Messages read
 * "<file>: offset <byte>: <field>: <what was expected>", e.g.
 *   "x.gguf: offset 40: kv[3] key: string length 18446744073709551615
 *    exceeds the 120 bytes left".
 * A count whose minimal encoding cannot fit in the bytes left is ECOUNT
 * when above 2^24 entries, else ETRUNC (a cut file, not an absurd count);
 * string/data lengths past EOF are EBOUNDS; bool values must be 0 or 1;
 * tensor names < 64 bytes, n_dims 1..4, ne[0] a multiple of the block.
 *
 * Ownership: qe_gguf owns its parsed tables and the mapping; tensor data
 * pointers and array data pointers are borrowed views into the mapping
 * and die with qe_gguf_close().
 */
#ifndef QE_GGUF_H
#define QE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

enum qe_gguf_vtype {
    QE_GGUF_UINT8 = 0,
    QE_GGUF_INT8 = 1,
    QE_GGUF_UINT16 = 2,
    QE_GGUF_INT16 = 3,
    QE_GGUF_UINT32 = 4,
    QE_GGUF_INT32 = 5,
    QE_GGUF_FLOAT32 = 6,
    QE_GGUF_BOOL = 7,
    QE_GGUF_STRING = 8,
    QE_GGUF_ARRAY = 9,
    QE_GGUF_UINT64 = 10,
    QE_GGUF_INT64 = 11,
    QE_GGUF_FLOAT64 = 12,
    QE_GGUF_VTYPE_COUNT = 13,
};

/* Arrays may nest at most this deep (an array of arrays is depth 2). */
#define QE_GGUF_MAX_DEPTH 8
/* ggml's GGML_MAX_NAME: tensor names are at most 63 bytes. */
#define QE_GGUF_MAX_NAME 64

/* Short name of a value type as llama.cpp prints it ("u8", "i8", "u16",
 * "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"),
 * or NULL if t is not a GGUF value type.  Static string. */
const char *qe_gguf_vtype_name(int t);

typedef struct qe_gguf_str {
    const char *ptr; /* borrowed (reader: into mapping; NOT NUL-terminated) */
    uint64_t len;
} qe_gguf_str;

typedef struct qe_gguf_value qe_gguf_value;
struct qe_gguf_value {
    int type; /* enum qe_gguf_vtype */
    union {
        uint64_t u64;  /* UINT8/16/32/64, BOOL (0/1) */
        int64_t i64;   /* INT8/16/32/64 */
        double f64;    /* FLOAT32/64 */
        qe_gguf_str str;
        struct {
            int elem_type;        /* enum qe_gguf_vtype */
            uint64_t n;           /* element count */
            const void *data;     /* scalar elems: raw LE array (borrowed) */
            qe_gguf_str *strs;    /* STRING elems: n views (owned table) */
            qe_gguf_value *items; /* ARRAY elems: n nested values (owned) */
        } arr;
    } v;
};

typedef struct qe_gguf_kv {
    qe_gguf_str key;
    qe_gguf_value val;
} qe_gguf_kv;

typedef struct qe_gguf_tensor {
    qe_gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];       /* ne[0] = contiguous (row) length; unused dims = 1 */
    int type;            /* ggml type id (quant/quant.h qe_type) */
    uint64_t offset;     /* relative to the data section */
    uint64_t nbytes;     /* computed from type and shape */
    const void *data;    /* borrowed view into the mapping */
} qe_gguf_tensor;

typedef struct qe_gguf {
    char path[512];
    uint32_t version;
    uint64_t n_kv;
    qe_gguf_kv *kvs;
    uint64_t n_tensors;
    qe_gguf_tensor *tensors;
    uint64_t alignment;   /* general.alignment or 32 */
    uint64_t data_offset; /* file offset of the data section */
    const uint8_t *base;  /* whole file */
    size_t nbytes;
    qe_map map;           /* owned mapping (unused for _open_mem) */
} qe_gguf;

/* Open and fully validate a GGUF file.  NULL + err on failure. */
qe_gguf *qe_gguf_open(const char *path, qe_err *err);
/* Same over a caller-owned buffer that must outlive the result. */
qe_gguf *qe_gguf_open_mem(const void *buf, size_t nbytes, const char *name, qe_err *err);
void qe_gguf_close(qe_gguf *g);

/* Lookup; -1 / NULL when absent. */
int64_t qe_gguf_find_kv(const qe_gguf *g, const char *key);
const qe_gguf_value *qe_gguf_get(const qe_gguf *g, const char *key);
const qe_gguf_tensor *qe_gguf_find_tensor(const qe_gguf *g, const char *name);

/* Typed getters with integer/float widening; return QE_ENOTFOUND if absent
 * (out untouched) or QE_ETYPE if the stored type does not convert. */
int qe_gguf_get_u64(const qe_gguf *g, const char *key, uint64_t *out, qe_err *err);
int qe_gguf_get_i64(const qe_gguf *g, const char *key, int64_t *out, qe_err *err);
int qe_gguf_get_f64(const qe_gguf *g, const char *key, double *out, qe_err *err);
int qe_gguf_get_bool(const qe_gguf *g, const char *key, bool *out, qe_err *err);
/* Copies into buf (NUL-terminated, truncated to buf_nbytes-1). */
int qe_gguf_get_str(const qe_gguf *g, const char *key, char *buf, size_t buf_nbytes, qe_err *err);
/* Compare a gguf string with a C string. */
bool qe_gguf_str_eq(qe_gguf_str s, const char *c);

/*
 * Writer.  A builder holds an ordered list of KVs and tensors; tensor data
 * is borrowed until qe_gguf_builder_write() returns.  Building from a
 * reader (qe_gguf_builder_from) and writing without changes reproduces the
 * source file byte for byte (same version, KV order, tensor order, offsets,
 * alignment and zero padding).
 */
typedef struct qe_gguf_builder qe_gguf_builder;

qe_gguf_builder *qe_gguf_builder_new(uint32_t version, qe_err *err);
qe_gguf_builder *qe_gguf_builder_from(const qe_gguf *src, qe_err *err);
void qe_gguf_builder_free(qe_gguf_builder *b);

/* Set (replace in place, or append) a KV.  Values are deep-copied. */
int qe_gguf_builder_set_u32(qe_gguf_builder *b, const char *key, uint32_t v, qe_err *err);
int qe_gguf_builder_set_i32(qe_gguf_builder *b, const char *key, int32_t v, qe_err *err);
int qe_gguf_builder_set_f32(qe_gguf_builder *b, const char *key, float v, qe_err *err);
int qe_gguf_builder_set_bool(qe_gguf_builder *b, const char *key, bool v, qe_err *err);
int qe_gguf_builder_set_str(qe_gguf_builder *b, const char *key, const char *v, qe_err *err);
int qe_gguf_builder_set_str_array(qe_gguf_builder *b, const char *key, const char *const *v,
                                  uint64_t n, qe_err *err);
/* Generic: copy any reader value (including nested arrays). */
int qe_gguf_builder_set_value(qe_gguf_builder *b, const char *key, const qe_gguf_value *v,
                              qe_err *err);
int qe_gguf_builder_remove(qe_gguf_builder *b, const char *key);

/* Append a tensor, or replace one of the same name (type/shape/data may
 * change; offsets are recomputed for every tensor after a change). */
int qe_gguf_builder_set_tensor(qe_gguf_builder *b, const char *name, int type, uint32_t n_dims,
                               const int64_t *ne, const void *data, uint64_t nbytes, qe_err *err);

/* Remove a tensor; QE_ENOTFOUND if absent.  Later offsets move up. */
int qe_gguf_builder_remove_tensor(qe_gguf_builder *b, const char *name);

/* Write to path (atomically: temp file in the same folder + fsync +
 * rename; the temp file is removed on failure).  Layout: tensor offsets
 * packed in builder order, each aligned to general.alignment (u32, default
 * 32), zero padding; no padding after the header when there are no tensors
 * (as in llama.cpp's vocab-only files). */
int qe_gguf_builder_write(const qe_gguf_builder *b, const char *path, qe_err *err);
/* Same bytes into a malloc'd buffer (*out owned by the caller: free()). */
int qe_gguf_builder_write_mem(const qe_gguf_builder *b, uint8_t **out, size_t *out_nbytes,
                              qe_err *err);

#endif /* QE_GGUF_H */
