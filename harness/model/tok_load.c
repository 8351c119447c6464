/*
 * tok_load.c: tokenizer loaders for GGUF metadata and llama2.c
 * tokenizer.bin.
 *
 * GGUF keys read (llama.cpp b4747 llama_vocab::load):
 *   tokenizer.ggml.model        "llama" (SPM) | "gpt2" (BPE); "bert" and the
 *                               rest answer QE_EUNSUPPORTED
 *   tokenizer.ggml.pre          BPE pre-tokenizer name (absent = "default")
 *   tokenizer.ggml.tokens       [string] (required)
 *   tokenizer.ggml.scores       [f32 | i32] (optional, >= n_vocab entries)
 *   tokenizer.ggml.token_type   [i32] (optional, >= n_vocab entries)
 *   tokenizer.ggml.merges       [string "a b"] (BPE, required)
 *   tokenizer.ggml.{bos,eos,eot,eom,unknown,padding,seperator}_token_id
 *   tokenizer.ggml.add_{bos,eos}_token, tokenizer.ggml.add_space_prefix
 *   general.name                (phi-3 special-token attributes)
 * Defaults when a key is absent: SPM bos 1, eos 2, unk 0, add_bos, space
 * prefix; BPE bos = eos = 11 (if in range), no BOS added.
 *
 * llama2.c tokenizer.bin: i32 max_token_length, then per token f32 score,
 * i32 len, len bytes.  Pieces carry raw spaces and BOS/EOS are "\n<s>\n" /
 * "\n</s>\n"; we store them as SentencePiece texts (U+2581, "<s>", "</s>")
 * so the vocabulary equals llama.cpp's GGUF conversion of the same file.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok_internal.h"

/* ---- GGUF ----------------------------------------------------------------- */

static int gguf_str_key(const qe_gguf *g, const char *key, char *buf, size_t cap, bool *found,
                        qe_err *err)
{
    const qe_gguf_value *v = qe_gguf_get(g, key);
    *found = false;
    buf[0] = '\0';
    if (!v)
        return 0;
    if (v->type != QE_GGUF_STRING)
        return qe_err_set(err, QE_ETYPE, "%s: %s: expected a string, got value type %d", g->path,
                          key, v->type);
    size_t n = v->v.str.len < cap - 1 ? (size_t)v->v.str.len : cap - 1;
    memcpy(buf, v->v.str.ptr, n);
    buf[n] = '\0';
    *found = true;
    return 0;
}

static void gguf_opt_bool(const qe_gguf *g, const char *key, bool *out)
{
    const qe_gguf_value *v = qe_gguf_get(g, key);
    if (v && v->type == QE_GGUF_BOOL)
        *out = v->v.u64 != 0;
}

/* A special id key: kept only when in [0, n_vocab) (llama.cpp warns and
 * keeps the default otherwise). */
static void gguf_opt_id(const qe_gguf *g, const char *key, int32_t n_vocab, int32_t *out)
{
    const qe_gguf_value *v = qe_gguf_get(g, key);
    if (!v)
        return;
    int64_t id = -1;
    if (v->type == QE_GGUF_UINT8 || v->type == QE_GGUF_UINT16 || v->type == QE_GGUF_UINT32 ||
        v->type == QE_GGUF_UINT64)
        id = v->v.u64 > INT32_MAX ? -1 : (int64_t)v->v.u64;
    else if (v->type == QE_GGUF_INT8 || v->type == QE_GGUF_INT16 || v->type == QE_GGUF_INT32 ||
             v->type == QE_GGUF_INT64)
        id = v->v.i64;
    if (id >= 0 && id < n_vocab)
        *out = (int32_t)id;
}

static const qe_gguf_value *gguf_array(const qe_gguf *g, const char *key, int elem_type,
                                       int elem_type2, bool required, int *rc, qe_err *err)
{
    const qe_gguf_value *v = qe_gguf_get(g, key);
    *rc = 0;
    if (!v) {
        if (required)
            *rc = qe_err_set(err, QE_ENOTFOUND, "%s: missing key %s", g->path, key);
        return NULL;
    }
    if (v->type != QE_GGUF_ARRAY ||
        (v->v.arr.elem_type != elem_type && v->v.arr.elem_type != elem_type2)) {
        *rc = qe_err_set(err, QE_ETYPE, "%s: %s: expected an array of value type %d, got type %d",
                         g->path, key, elem_type,
                         v->type == QE_GGUF_ARRAY ? v->v.arr.elem_type : v->type);
        return NULL;
    }
    return v;
}

qe_tokenizer *qe_tokenizer_from_gguf(const struct qe_gguf *g, qe_err *err)
{
    char model[64], pre[64], name[256];
    bool found;
    int rc;
    qe_tokenizer *t = NULL;

    if (!g) {
        qe_err_set(err, QE_EINVAL, "qe_tokenizer_from_gguf: NULL file");
        return NULL;
    }
    if (gguf_str_key(g, "tokenizer.ggml.model", model, sizeof model, &found, err))
        return NULL;
    if (!found) {
        qe_err_set(err, QE_ENOTFOUND, "%s: missing key tokenizer.ggml.model (no vocabulary)",
                   g->path);
        return NULL;
    }
    qe_tok_kind kind;
    if (strcmp(model, "llama") == 0) {
        kind = QE_TOK_SPM;
    } else if (strcmp(model, "gpt2") == 0) {
        kind = QE_TOK_BPE;
    } else if (strcmp(model, "bert") == 0) {
        qe_err_set(err, QE_EUNSUPPORTED, "unsupported tokenizer 'bert' (WordPiece) in %s", g->path);
        return NULL;
    } else {
        qe_err_set(err, QE_EUNSUPPORTED, "unsupported tokenizer '%s' in %s (expected 'llama' or "
                   "'gpt2')", model, g->path);
        return NULL;
    }
    if (gguf_str_key(g, "tokenizer.ggml.pre", pre, sizeof pre, &found, err) ||
        gguf_str_key(g, "general.name", name, sizeof name, &found, err))
        return NULL;
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);

    const qe_gguf_value *tok =
        gguf_array(g, "tokenizer.ggml.tokens", QE_GGUF_STRING, QE_GGUF_STRING, true, &rc, err);
    if (!tok)
        return NULL;
    uint64_t n = tok->v.arr.n;
    if (n == 0 || n > INT32_MAX) {
        qe_err_set(err, QE_ECOUNT, "%s: tokenizer.ggml.tokens: %llu tokens, expected 1..%d",
                   g->path, (unsigned long long)n, INT32_MAX);
        return NULL;
    }
    const qe_gguf_value *sc =
        gguf_array(g, "tokenizer.ggml.scores", QE_GGUF_FLOAT32, QE_GGUF_INT32, false, &rc, err);
    if (rc)
        return NULL;
    const qe_gguf_value *tt =
        gguf_array(g, "tokenizer.ggml.token_type", QE_GGUF_INT32, QE_GGUF_INT32, false, &rc, err);
    if (rc)
        return NULL;
    if (sc && sc->v.arr.n < n) {
        qe_err_set(err, QE_ECOUNT, "%s: tokenizer.ggml.scores: %llu entries < %llu tokens",
                   g->path, (unsigned long long)sc->v.arr.n, (unsigned long long)n);
        return NULL;
    }
    if (tt && tt->v.arr.n < n) {
        qe_err_set(err, QE_ECOUNT, "%s: tokenizer.ggml.token_type: %llu entries < %llu tokens",
                   g->path, (unsigned long long)tt->v.arr.n, (unsigned long long)n);
        return NULL;
    }
    const qe_gguf_value *mg = NULL;
    if (kind == QE_TOK_BPE) {
        mg = gguf_array(g, "tokenizer.ggml.merges", QE_GGUF_STRING, QE_GGUF_STRING, true, &rc, err);
        if (!mg)
            return NULL;
    }

    uint64_t pool = 0;
    for (uint64_t i = 0; i < n; i++)
        if (!qe_add_ok(pool, tok->v.arr.strs[i].len + 1, &pool)) {
            qe_err_set(err, QE_EOVERFLOW, "%s: tokenizer.ggml.tokens: total size overflows",
                       g->path);
            return NULL;
        }
    t = qe_tok_alloc((int32_t)n, pool, g->path);
    if (!t) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory for %llu tokens", g->path,
                   (unsigned long long)n);
        return NULL;
    }
    t->kind = kind;
    qe_strlcpy(t->pre, pre, sizeof t->pre);
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        const qe_gguf_str *s = &tok->v.arr.strs[i];
        if (qe_tok_set_text(t, (int32_t)i, s->ptr, s->len, &off, err))
            goto fail;
        float f = 0.0f;
        if (sc && sc->v.arr.elem_type == QE_GGUF_FLOAT32) {
            memcpy(&f, (const char *)sc->v.arr.data + 4 * i, 4);
        } else if (sc) {
            int32_t k;
            memcpy(&k, (const char *)sc->v.arr.data + 4 * i, 4);
            f = (float)k;
        }
        t->score[i] = f;
        int32_t ty = QE_TOKTYPE_NORMAL;
        if (tt)
            memcpy(&ty, (const char *)tt->v.arr.data + 4 * i, 4);
        t->toktype[i] = ty;
        static const uint32_t k_attr[7] = {0, QE_TATTR_NORMAL, QE_TATTR_UNKNOWN,
                                           QE_TATTR_CONTROL, QE_TATTR_USER_DEFINED,
                                           QE_TATTR_UNUSED, QE_TATTR_BYTE};
        t->attr[i] = (ty >= 1 && ty <= 6) ? k_attr[ty] : QE_TATTR_UNDEFINED;
    }

    if (kind == QE_TOK_BPE) {
        uint64_t mpool = 0, nm = mg->v.arr.n;
        if (nm > INT32_MAX) {
            qe_err_set(err, QE_ECOUNT, "%s: tokenizer.ggml.merges: %llu merges", g->path,
                       (unsigned long long)nm);
            goto fail;
        }
        for (uint64_t i = 0; i < nm; i++)
            if (!qe_add_ok(mpool, mg->v.arr.strs[i].len + 1, &mpool)) {
                qe_err_set(err, QE_EOVERFLOW, "%s: tokenizer.ggml.merges: size overflows",
                           g->path);
                goto fail;
            }
        if (qe_tok_merges_begin(t, (int64_t)nm, mpool, err))
            goto fail;
        for (uint64_t i = 0; i < nm; i++) {
            const qe_gguf_str *s = &mg->v.arr.strs[i];
            size_t bad;
            if (!qe_utf8_valid(s->ptr, s->len, &bad)) {
                qe_err_set(err, QE_EUTF8, "%s: tokenizer.ggml.merges[%llu]: invalid UTF-8 at "
                           "byte %zu", g->path, (unsigned long long)i, bad);
                goto fail;
            }
            /* split at the first ' ' from position 1 (llama.cpp); a merge
             * without one pairs "" with "" and never applies. */
            const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
            size_t ln = sp ? (size_t)(sp - s->ptr) : 0;
            size_t rn = sp ? s->len - ln - 1 : 0;
            if (qe_tok_merge_add(t, s->ptr, ln, sp ? sp + 1 : "", rn, err))
                goto fail;
        }
    }

    if (kind == QE_TOK_SPM) {
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
        t->clean_spaces = false;
    } else {
        t->bos = t->eos = 11;
        t->clean_spaces = true;
        if (strcmp(pre, "llama3") == 0 || strcmp(pre, "llama-v3") == 0 ||
            strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "falcon3") == 0 ||
            strcmp(pre, "tekken") == 0 || strcmp(pre, "chameleon") == 0)
            t->add_bos = true;
        if (strcmp(pre, "chatglm-bpe") == 0)
            t->bos = -1;
    }
    if (t->bos >= t->n_vocab)
        t->bos = -1;
    if (t->eos >= t->n_vocab)
        t->eos = -1;
    if (t->unk >= t->n_vocab)
        t->unk = -1;
    gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    gguf_opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos);
    gguf_opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos);
    gguf_opt_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot);
    gguf_opt_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom);
    gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
    gguf_opt_id(g, "tokenizer.ggml.seperator_token_id", t->n_vocab, &t->sep);
    gguf_opt_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad);
    gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_opt_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (t->add_bos && t->bos < 0) {
        qe_err_set(err, QE_EFORMAT, "%s: tokenizer.ggml.add_bos_token is true, but "
                   "tokenizer.ggml.bos_token_id is not set", g->path);
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        qe_err_set(err, QE_EFORMAT, "%s: tokenizer.ggml.add_eos_token is true, but "
                   "tokenizer.ggml.eos_token_id is not set", g->path);
        goto fail;
    }
    if (qe_tok_finish(t, name, NULL, err))
        goto fail;
    return t;
fail:
    qe_tokenizer_free(t);
    return NULL;
}

/* ---- llama2.c tokenizer.bin ---------------------------------------------- */

qe_tokenizer *qe_tokenizer_from_llama2c(const char *path, int n_vocab, qe_err *err)
{
    char *data = NULL;
    size_t nbytes = 0;
    qe_tokenizer *t = NULL;
    if (qe_read_file(path, &data, &nbytes, err))
        return NULL;
    const unsigned char *p = (const unsigned char *)data;
    /* pass 1: count and size the records */
    if (nbytes < 4) {
        qe_err_set(err, QE_ETRUNC, "%s: %zu bytes, expected at least the 4-byte "
                   "max_token_length header", path, nbytes);
        goto fail;
    }
    size_t off = 4, count = 0;
    uint64_t pool = 0;
    while (off < nbytes && (n_vocab <= 0 || count < (size_t)n_vocab)) {
        int32_t len;
        if (nbytes - off < 8) {
            qe_err_set(err, QE_ETRUNC, "%s: token %zu: record header at offset %zu runs past "
                       "the end (%zu bytes)", path, count, off, nbytes);
            goto fail;
        }
        memcpy(&len, p + off + 4, 4);
        if (len < 0 || (size_t)len > nbytes - off - 8) {
            qe_err_set(err, QE_EBOUNDS, "%s: token %zu: length %d at offset %zu runs past the "
                       "end (%zu bytes)", path, count, len, off + 4, nbytes);
            goto fail;
        }
        pool += 3 * (uint64_t)len + 1;
        off += 8 + (size_t)len;
        count++;
    }
    if (count == 0 || (n_vocab > 0 && count < (size_t)n_vocab)) {
        qe_err_set(err, QE_ETRUNC, "%s: %zu tokens, expected %d", path, count, n_vocab);
        goto fail;
    }
    if (count > INT32_MAX) {
        qe_err_set(err, QE_ECOUNT, "%s: %zu tokens", path, count);
        goto fail;
    }
    t = qe_tok_alloc((int32_t)count, pool, path);
    char *piece = malloc(pool + 1);
    if (!t || !piece) {
        free(piece);
        qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    t->kind = QE_TOK_SPM;
    size_t poff = 0;
    off = 4;
    for (size_t i = 0; i < count; i++) {
        float sc;
        int32_t len;
        memcpy(&sc, p + off, 4);
        memcpy(&len, p + off + 4, 4);
        const char *s = (const char *)p + off + 8;
        off += 8 + (size_t)len;
        size_t pn = 0;
        if (i == 1 && len == 5 && memcmp(s, "\n<s>\n", 5) == 0) {
            memcpy(piece, "<s>", 3);
            pn = 3;
        } else if (i == 2 && len == 6 && memcmp(s, "\n</s>\n", 6) == 0) {
            memcpy(piece, "</s>", 4);
            pn = 4;
        } else {
            for (int32_t k = 0; k < len; k++) {
                if (s[k] == ' ') {
                    memcpy(piece + pn, "\xe2\x96\x81", 3);
                    pn += 3;
                } else {
                    piece[pn++] = s[k];
                }
            }
        }
        if (qe_tok_set_text(t, (int32_t)i, piece, pn, &poff, err)) {
            free(piece);
            goto fail;
        }
        t->score[i] = sc;
        bool is_byte = pn == 6 && memcmp(piece, "<0x", 3) == 0 && piece[5] == '>' &&
                       isxdigit((unsigned char)piece[3]) && isxdigit((unsigned char)piece[4]);
        int ty = i == 0 ? QE_TOKTYPE_UNKNOWN
                 : (i == 1 || i == 2) ? QE_TOKTYPE_CONTROL
                 : is_byte ? QE_TOKTYPE_BYTE
                           : QE_TOKTYPE_NORMAL;
        static const uint32_t k_attr[7] = {0, QE_TATTR_NORMAL, QE_TATTR_UNKNOWN,
                                           QE_TATTR_CONTROL, QE_TATTR_USER_DEFINED,
                                           QE_TATTR_UNUSED, QE_TATTR_BYTE};
        t->toktype[i] = ty;
        t->attr[i] = k_attr[ty];
    }
    free(piece);
    t->unk = 0;
    t->bos = count > 1 ? 1 : -1;
    t->eos = count > 2 ? 2 : -1;
    t->add_bos = t->bos >= 0;
    t->add_space_prefix = true;
    if (qe_tok_finish(t, "llama2.c", NULL, err))
        goto fail;
    free(data);
    return t;
fail:
    qe_tokenizer_free(t);
    free(data);
    return NULL;
}
