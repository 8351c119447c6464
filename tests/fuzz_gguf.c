/*
 * fuzz_gguf.c: libFuzzer target for the GGUF reader and writer.
 *
 * For each input: qe_gguf_open_mem must either fail with a negative QE_E*
 * code and a message naming the input, or succeed; on success every KV
 * (through every getter, nested arrays included) and every tensor's data
 * (first and last byte) is read, and the builder must rewrite the file into
 * a buffer that opens again with the same counts and rewrites to the same
 * bytes (write -> read -> write is a fixed point).  Any violation traps.
 * Built and run by `make fuzz` (scripts/fuzz.sh).
 */
#include "../harness/model/gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

static void touch_str(qe_gguf_str s)
{
    if (s.len)
        g_sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
}

static void walk_value(const qe_gguf_value *v, int depth)
{
    if (depth > QE_GGUF_MAX_DEPTH)
        __builtin_trap();
    if (!qe_gguf_vtype_name(v->type))
        __builtin_trap();
    if (v->type == QE_GGUF_STRING) {
        touch_str(v->v.str);
    } else if (v->type == QE_GGUF_ARRAY) {
        const int et = v->v.arr.elem_type;
        if (!qe_gguf_vtype_name(et))
            __builtin_trap();
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            if (et == QE_GGUF_STRING)
                touch_str(v->v.arr.strs[i]);
            else if (et == QE_GGUF_ARRAY)
                walk_value(&v->v.arr.items[i], depth + 1);
        }
        if (et != QE_GGUF_STRING && et != QE_GGUF_ARRAY && v->v.arr.n)
            g_sink += ((const uint8_t *)v->v.arr.data)[0];
    } else {
        g_sink += v->v.u64;
    }
}

static void walk(const qe_gguf *g)
{
    char key[QE_GGUF_MAX_NAME * 4], buf[32];
    qe_err e;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const qe_gguf_kv *kv = &g->kvs[i];
        walk_value(&kv->val, 0);
        /* Getters by key, when the key is a plain C string. */
        if (kv->key.len >= sizeof key || memchr(kv->key.ptr, 0, (size_t)kv->key.len))
            continue;
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        uint64_t u;
        int64_t s;
        double f;
        bool b;
        /* Keys are unique, so lookup by name finds this very KV. */
        if (qe_gguf_find_kv(g, key) != (int64_t)i)
            __builtin_trap();
        g_sink += (uint64_t)qe_gguf_get_u64(g, key, &u, &e) + (uint64_t)qe_gguf_get_i64(g, key, &s, &e) +
                  (uint64_t)qe_gguf_get_f64(g, key, &f, &e) + (uint64_t)qe_gguf_get_bool(g, key, &b, &e) +
                  (uint64_t)qe_gguf_get_str(g, key, buf, sizeof buf, &e);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const qe_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment || t->name.len >= QE_GGUF_MAX_NAME)
            __builtin_trap();
        if (t->nbytes) {
            const uint8_t *d = t->data;
            g_sink += d[0] + d[t->nbytes - 1];
        }
        memcpy(key, t->name.ptr, (size_t)t->name.len);
        key[t->name.len] = '\0';
        if (!memchr(t->name.ptr, 0, (size_t)t->name.len) && qe_gguf_find_tensor(g, key) != t)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qe_err e = {0};
    qe_gguf *g = qe_gguf_open_mem(data, size, "fuzz.gguf", &e);
    if (!g) {
        if (e.code >= 0 || strncmp(e.msg, "fuzz.gguf", 9) != 0)
            __builtin_trap();
        return 0;
    }
    walk(g);

    qe_gguf_builder *b = qe_gguf_builder_from(g, &e);
    if (!b)
        __builtin_trap();
    uint8_t *m1 = NULL, *m2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (qe_gguf_builder_write_mem(b, &m1, &n1, &e) != 0)
        __builtin_trap();
    qe_gguf *h = qe_gguf_open_mem(m1, n1, "rewrite", &e);
    if (!h || h->n_kv != g->n_kv || h->n_tensors != g->n_tensors || h->version != g->version)
        __builtin_trap();
    qe_gguf_builder *b2 = qe_gguf_builder_from(h, &e);
    if (!b2 || qe_gguf_builder_write_mem(b2, &m2, &n2, &e) != 0)
        __builtin_trap();
    if (n1 != n2 || memcmp(m1, m2, n1) != 0)
        __builtin_trap();
    qe_gguf_builder_free(b2);
    qe_gguf_close(h);
    free(m2);
    free(m1);
    qe_gguf_builder_free(b);
    qe_gguf_close(g);
    return 0;
}
