/*
 * tokenizer.c: encoding and decoding for the SPM and byte-level BPE
 * tokenizers, plus the vocabulary tables they share (hash maps, special
 * tokens, end-of-generation set).
 *
 * Algorithms follow llama.cpp b4747 (src/llama-vocab.cpp):
 *  - special/added tokens are cut out of the text first (longest text
 *    first); CONTROL and UNKNOWN ones only when parse_special, USER_DEFINED
 *    ones always;
 *  - SPM: ' ' -> U+2581, a ' ' prefix before the first raw fragment (and
 *    after every special token), symbols = UTF-8 characters, the adjacent
 *    pair whose concatenation is the highest-scoring token is merged first
 *    (ties: leftmost), unknown symbols fall back to <0xXX> byte tokens;
 *    when no token continues past a '\n', the text is encoded one line at
 *    a time (the same ids; scratch bounded by the longest line);
 *  - BPE: the regex pre-tokenizer (tok_pre.c), then per word the pair
 *    with the lowest merge rank first (ties: leftmost); a final symbol that
 *    is not a token becomes its single-byte tokens where those exist.
 * Loaders live in tok_load.c (GGUF, llama2.c) and tok_hf.c (tokenizer.json).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- hash map ------------------------------------------------------------ */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h ? h : 1;
}

int qe_tok_map_init(qe_tok_map *m, uint64_t n_expected)
{
    uint64_t cap = 16;
    while (cap < n_expected * 2 + 16)
        cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = m->slots ? cap : 0;
    m->n = 0;
    return m->slots ? 0 : QE_ENOMEM;
}

void qe_tok_map_free(qe_tok_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static qe_tok_map_slot *map_find(const qe_tok_map *m, const char *key, size_t len, uint32_t h)
{
    uint64_t mask = m->cap - 1;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
        qe_tok_map_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

int qe_tok_map_put(qe_tok_map *m, const char *key, uint32_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap) { /* keep load <= 1/2 */
        qe_tok_map big;
        if (qe_tok_map_init(&big, m->cap))
            return QE_ENOMEM;
        for (uint64_t i = 0; i < m->cap; i++) {
            qe_tok_map_slot *s = &m->slots[i];
            if (s->key)
                *map_find(&big, s->key, s->len, s->hash) = *s;
        }
        big.n = m->n;
        free(m->slots);
        *m = big;
    }
    uint32_t h = hash_bytes(key, len);
    qe_tok_map_slot *s = map_find(m, key, len, h);
    if (!s->key) {
        s->key = key;
        s->len = len;
        s->hash = h;
        m->n++;
    }
    s->val = val;
    return 0;
}

int32_t qe_tok_map_get(const qe_tok_map *m, const char *key, size_t len)
{
    if (!m->cap || len > UINT32_MAX)
        return -1;
    qe_tok_map_slot *s = map_find(m, key, len, hash_bytes(key, len));
    return s->key ? s->val : -1;
}

/* ---- construction --------------------------------------------------------- */

qe_tokenizer *qe_tok_alloc(int32_t n_vocab, size_t text_pool_nbytes, const char *src)
{
    qe_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    qe_strlcpy(t->src, src ? src : "", sizeof t->src);
    t->n_vocab = n_vocab;
    size_t nv = n_vocab > 0 ? (size_t)n_vocab : 1;
    t->text = calloc(nv, sizeof *t->text);
    t->len = calloc(nv, sizeof *t->len);
    t->score = calloc(nv, sizeof *t->score);
    t->toktype = calloc(nv, sizeof *t->toktype);
    t->attr = calloc(nv, sizeof *t->attr);
    t->text_pool = malloc(text_pool_nbytes + 1);
    t->bos = t->eos = t->eot = t->eom = t->unk = t->pad = t->sep = -1;
    if (!t->text || !t->len || !t->score || !t->toktype || !t->attr || !t->text_pool) {
        qe_tokenizer_free(t);
        return NULL;
    }
    return t;
}

int qe_tok_set_text(qe_tokenizer *t, int32_t i, const char *s, size_t n, size_t *pool_off,
                    qe_err *err)
{
    size_t bad;
    if (n > UINT32_MAX)
        return qe_err_set(err, QE_EFORMAT, "%s: token %d: text of %zu bytes", t->src, i, n);
    if (!qe_utf8_valid(s, n, &bad))
        return qe_err_set(err, QE_EUTF8,
                          "%s: token %d: invalid UTF-8 at byte %zu of its text (0x%02x); "
                          "expected UTF-8 token text",
                          t->src, i, bad, (unsigned)(unsigned char)s[bad]);
    char *dst = t->text_pool + *pool_off;
    memcpy(dst, s, n);
    dst[n] = '\0';
    t->text[i] = dst;
    t->len[i] = (uint32_t)n;
    *pool_off += n + 1;
    return 0;
}

int qe_tok_merges_begin(qe_tokenizer *t, int64_t n, size_t pool_nbytes, qe_err *err)
{
    free(t->merge_pool);
    qe_tok_map_free(&t->merges);
    t->n_merges = 0;
    t->merge_pool = malloc(pool_nbytes + 1);
    t->merge_pool_used = 0;
    t->merge_pool_cap = pool_nbytes;
    if (!t->merge_pool || qe_tok_map_init(&t->merges, (uint64_t)(n > 0 ? n : 0)))
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory for %lld merges", t->src,
                          (long long)n);
    return 0;
}

/* Merge keys are "left \xFF right": 0xFF never occurs in UTF-8, so the key
 * is unambiguous.  The caller sized the pool (ln + rn + 1 per merge). */
int qe_tok_merge_add(qe_tokenizer *t, const char *l, size_t ln, const char *r, size_t rn,
                     qe_err *err)
{
    size_t need = ln + rn + 1;
    if (need > UINT32_MAX || t->merge_pool_used + need > t->merge_pool_cap)
        return qe_err_set(err, QE_EFORMAT, "%s: merge %lld: merge texts exceed their pool",
                          t->src, (long long)t->n_merges);
    char *k = t->merge_pool + t->merge_pool_used;
    memcpy(k, l, ln);
    k[ln] = (char)0xFF;
    memcpy(k + ln + 1, r, rn);
    int32_t rank = (int32_t)t->n_merges;
    t->n_merges++;
    if (qe_tok_map_get(&t->merges, k, need) >= 0)
        return 0; /* emplace: the first rank stays */
    t->merge_pool_used += need;
    if (qe_tok_map_put(&t->merges, k, (uint32_t)need, rank))
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory adding merges", t->src);
    return 0;
}

/* ---- finishing a vocabulary ------------------------------------------------ */

static bool text_is(const qe_tokenizer *t, int32_t id, const char *s)
{
    size_t n = strlen(s);
    return t->len[id] == n && memcmp(t->text[id], s, n) == 0;
}

static bool text_in(const qe_tokenizer *t, int32_t id, const char *const *list)
{
    for (; *list; list++)
        if (text_is(t, id, *list))
            return true;
    return false;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const qe_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y])
        return t->len[x] > t->len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

int qe_tok_finish(qe_tokenizer *t, const char *model_name, const char *pattern_override,
                  qe_err *err)
{
    /* text -> id; a repeated text maps to its last id (llama.cpp b4747
     * assigned token_to_id[word] = i). */
    if (qe_tok_map_init(&t->vocab, (uint64_t)t->n_vocab))
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory for the vocab map", t->src);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!t->text[i])
            return qe_err_set(err, QE_EFORMAT, "%s: token %d has no text", t->src, i);
        if (t->len[i] && qe_tok_map_put(&t->vocab, t->text[i], t->len[i], i))
            return qe_err_set(err, QE_ENOMEM, "%s: out of memory for the vocab map", t->src);
    }

    /* Control-looking tokens found by text (llama.cpp's auto-detection):
     * they get the CONTROL bit; EOT/EOM ids are taken from them if unset. */
    static const char *const k_eot[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<EOT>", "_<EOT>",
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence"
                                        "\xef\xbd\x9c>", NULL};
    static const char *const k_eom[] = {"<|eom_id|>", NULL};
    static const char *const k_fim[] = {
        "<|fim_prefix|>", "<fim-prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
        "<PRE>", "<|fim_suffix|>", "<fim-suffix>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>", "<SUF>", "<|fim_middle|>",
        "<fim-middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
        "<|fim_pad|>", "<fim-pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
        "<REPO>", "<|file_sep|>", "<fim-separator>", "<FILE_SEP>", NULL};
    static const char *const k_eog[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", NULL};
    bool had_eot = t->eot >= 0, had_eom = t->eom >= 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (text_in(t, i, k_eot)) {
            if (!had_eot && t->eot < 0)
                t->eot = i;
            t->attr[i] |= QE_TATTR_CONTROL;
        }
        if (text_in(t, i, k_eom)) {
            if (!had_eom && t->eom < 0)
                t->eom = i;
            t->attr[i] |= QE_TATTR_CONTROL;
        }
        if (text_in(t, i, k_fim))
            t->attr[i] |= QE_TATTR_CONTROL;
    }
    t->eog = malloc(((size_t)t->n_vocab + 3) * sizeof *t->eog);
    t->special = malloc(((size_t)t->n_vocab + 1) * sizeof *t->special);
    if (!t->eog || !t->special)
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory", t->src);
    t->n_eog = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (text_in(t, i, k_eog) || i == t->eos || i == t->eot || i == t->eom) {
            t->eog[t->n_eog++] = i;
            t->attr[i] |= text_in(t, i, k_eog) ? QE_TATTR_CONTROL : 0;
        }

    /* Special-token cache: tried in this order when partitioning text. */
    t->n_special = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (QE_TATTR_CONTROL | QE_TATTR_USER_DEFINED | QE_TATTR_UNKNOWN))
            if (t->len[i] > 0)
                t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);

    /* Per-model attributes (llama.cpp: phi-3 strips spaces right of its
     * special tokens, except <unk>, <s>, <|endoftext|>). */
    if (model_name && (strstr(model_name, "phi-3") || strstr(model_name, "phi3"))) {
        for (int32_t k = 0; k < t->n_special; k++)
            t->attr[t->special[k]] |= QE_TATTR_RSTRIP;
        int32_t id = qe_tok_map_get(&t->vocab, "</s>", 4);
        if (id >= 0)
            t->attr[id] |= QE_TATTR_RSTRIP;
        static const char *const k_no[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (int k = 0; k < 3; k++) {
            id = qe_tok_map_get(&t->vocab, k_no[k], strlen(k_no[k]));
            if (id >= 0)
                t->attr[id] &= ~(uint32_t)QE_TATTR_RSTRIP;
        }
    }

    /* SPM merges never join across a '\n' when no token continues past
     * one (llama-spm, stories260K: newline is the byte token <0x0A>). */
    t->spm_line_split = t->kind == QE_TOK_SPM;
    for (int32_t i = 0; i < t->n_vocab && t->spm_line_split; i++)
        if (t->len[i] > 1 && memchr(t->text[i], '\n', t->len[i] - 1))
            t->spm_line_split = false;

    if (t->kind == QE_TOK_BPE)
        return qe_tok_pre_init(t, pattern_override, err);
    return 0;
}

void qe_tokenizer_free(qe_tokenizer *t)
{
    if (!t)
        return;
    qe_tok_pre_free(t);
    qe_tok_map_free(&t->vocab);
    qe_tok_map_free(&t->merges);
    free(t->merge_pool);
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->toktype);
    free(t->attr);
    free(t->text_pool);
    free(t->special);
    free(t->eog);
    free(t);
}

/* ---- growable id vector and fragments ---------------------------------- */

typedef struct ids_vec {
    int32_t *v;
    size_t n, cap;
} ids_vec;

static int ids_push(ids_vec *o, int32_t x)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        int32_t *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv)
            return QE_ENOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = x;
    return 0;
}

typedef struct frag {
    int32_t id; /* -1: raw text [off, off+len) */
    size_t off, len;
} frag;

typedef struct frag_vec {
    frag *v;
    size_t n, cap;
} frag_vec;

static int frag_push(frag_vec *o, int32_t id, size_t off, size_t len)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 16;
        frag *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv)
            return QE_ENOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = (frag){id, off, len};
    return 0;
}

static bool is_space_c(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Cut special tokens out of the raw fragments, longest first (llama.cpp
 * tokenizer_st_partition).  *fv is replaced. */
static int partition(const qe_tokenizer *t, const char *text, bool parse_special, frag_vec *fv)
{
    frag_vec next = {0};
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t sid = t->special[k];
        uint32_t a = t->attr[sid];
        if (!parse_special && (a & (QE_TATTR_CONTROL | QE_TATTR_UNKNOWN)))
            continue;
        const char *st = t->text[sid];
        size_t sl = t->len[sid];
        next.n = 0;
        for (size_t f = 0; f < fv->n; f++) {
            frag fr = fv->v[f];
            if (fr.id >= 0) {
                if (frag_push(&next, fr.id, 0, 0))
                    goto oom;
                continue;
            }
            size_t off = fr.off, len = fr.len;
            for (;;) {
                const char *m = len >= sl ? memmem(text + off, len, st, sl) : NULL;
                if (!m) {
                    if (len > 0 && frag_push(&next, -1, off, len))
                        goto oom;
                    break;
                }
                size_t mpos = (size_t)(m - text);
                size_t ll = mpos - off;
                if (a & QE_TATTR_LSTRIP)
                    while (ll > 0 && is_space_c(text[off + ll - 1]))
                        ll--;
                if (ll > 0 && frag_push(&next, -1, off, ll))
                    goto oom;
                if (frag_push(&next, sid, 0, 0))
                    goto oom;
                size_t roff = mpos + sl, rlen = off + len - roff;
                if (a & QE_TATTR_RSTRIP)
                    while (rlen > 0 && is_space_c(text[roff])) {
                        roff++;
                        rlen--;
                    }
                off = roff;
                len = rlen;
                if (len == 0)
                    break;
            }
        }
        frag_vec tmp = *fv;
        *fv = next;
        next = tmp;
    }
    free(next.v);
    return 0;
oom:
    free(next.v);
    return QE_ENOMEM;
}

/* ---- merge queue (binary min-heap on (key, left)) ---------------------- */

/* Symbol offsets and lengths are 32-bit: make_symbols refuses runs of
 * QE_TOK_MAX_RUN bytes or more. */
#define QE_TOK_MAX_RUN ((size_t)INT32_MAX)

typedef struct bigram {
    double key; /* SPM: -score; BPE: rank */
    int32_t left, right;
    uint32_t size; /* SPM: byte length of the pair; BPE: left n */
    uint32_t rsize; /* BPE: right n */
} bigram; /* 24 bytes */

typedef struct heap {
    bigram *v;
    size_t n, cap;
} heap;

static bool bg_less(const bigram *a, const bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(heap *h, bigram b)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        bigram *nv = realloc(h->v, nc * sizeof *nv);
        if (!nv)
            return QE_ENOMEM;
        h->v = nv;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&b, &h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
    return 0;
}

static bigram heap_pop(heap *h)
{
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && bg_less(&h->v[c + 1], &h->v[c]))
            c++;
        if (!bg_less(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

typedef struct sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes, into the word/text buffer */
} sym; /* 16 bytes */

/* Split s[0..n) into UTF-8 symbols (a truncated tail is one symbol), in
 * *buf (grown as needed, owned by the caller, *cap entries). */
static int make_symbols(const char *s, size_t n, sym **buf, size_t *cap, int32_t *n_out)
{
    if (n >= QE_TOK_MAX_RUN)
        return QE_EINVAL;
    if (n > *cap || !*buf) {
        size_t nc = n > 64 ? n : 64;
        sym *nv = realloc(*buf, nc * sizeof *nv);
        if (!nv)
            return QE_ENOMEM;
        *buf = nv;
        *cap = nc;
    }
    sym *v = *buf;
    int32_t k = 0;
    for (size_t off = 0; off < n;) {
        size_t l = qe_utf8_len((unsigned char)s[off]);
        if (l > n - off)
            l = n - off;
        v[k] = (sym){k - 1, off + l == n ? -1 : k + 1, (uint32_t)off, (uint32_t)l};
        off += l;
        k++;
    }
    *n_out = k;
    return 0;
}

/* Error for a make_symbols/heap failure (rc QE_ENOMEM or QE_EINVAL). */
static int encode_fail(const qe_tokenizer *t, int rc, size_t n, qe_err *err)
{
    if (rc == QE_EINVAL)
        return qe_err_set(err, QE_EINVAL,
                          "%s: an unbreakable run of %zu bytes is too long to tokenize "
                          "(limit 2 GiB)",
                          t->src, n);
    return qe_err_set(err, QE_ENOMEM, "%s: out of memory while tokenizing", t->src);
}

/* ---- SPM --------------------------------------------------------------------- */

static int spm_byte_token(const qe_tokenizer *t, unsigned char c, int32_t *id)
{
    static const char hex[] = "0123456789ABCDEF";
    char buf[6] = {'<', '0', 'x', hex[c >> 4], hex[c & 15], '>'};
    *id = qe_tok_map_get(&t->vocab, buf, 6);
    if (*id < 0) {
        char one = (char)c;
        *id = qe_tok_map_get(&t->vocab, &one, 1);
    }
    return *id < 0 ? QE_EFORMAT : 0;
}

static int spm_try_bigram(const qe_tokenizer *t, const char *s, const sym *sy, int32_t l,
                          int32_t r, heap *h)
{
    if (l < 0 || r < 0)
        return 0;
    size_t n = sy[l].n + sy[r].n;
    int32_t id = qe_tok_map_get(&t->vocab, s + sy[l].off, n);
    if (id < 0)
        return 0;
    return heap_push(h, (bigram){-(double)t->score[id], l, r, n, 0});
}

/* Scratch reused by every segment of one qe_tokenize call (owned). */
typedef struct spm_work {
    char *esc; /* escaped segment, esc_cap bytes */
    size_t esc_cap;
    sym *sy;
    size_t sy_cap;
    heap h;
} spm_work;

static void spm_work_free(spm_work *w)
{
    free(w->esc);
    free(w->sy);
    free(w->h.v);
}

/* s: already escaped (U+2581 for spaces). */
static int spm_encode(const qe_tokenizer *t, const char *s, size_t n, spm_work *w, ids_vec *out,
                      qe_err *err)
{
    int32_t ns = 0;
    heap *h = &w->h;
    int rc = make_symbols(s, n, &w->sy, &w->sy_cap, &ns);
    sym *sy = w->sy;
    h->n = 0;
    if (rc)
        goto done;
    for (int32_t i = 1; i < ns; i++)
        if ((rc = spm_try_bigram(t, s, sy, i - 1, i, h)))
            goto done;
    while (h->n) {
        bigram b = heap_pop(h);
        sym *L = &sy[b.left], *R = &sy[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size)
            continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0)
            sy[R->next].prev = b.left;
        if ((rc = spm_try_bigram(t, s, sy, L->prev, b.left, h)) ||
            (rc = spm_try_bigram(t, s, sy, b.left, L->next, h)))
            goto done;
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = sy[i].next) {
        int32_t id = qe_tok_map_get(&t->vocab, s + sy[i].off, sy[i].n);
        if (id >= 0) {
            if ((rc = ids_push(out, id)))
                goto done;
            continue;
        }
        for (size_t j = 0; j < sy[i].n; j++) {
            unsigned char c = (unsigned char)s[sy[i].off + j];
            if (spm_byte_token(t, c, &id))
                return qe_err_set(err, QE_EFORMAT,
                                  "%s: no byte token <0x%02X> for an unknown piece; expected "
                                  "byte-fallback tokens in the vocab",
                                  t->src, c);
            if ((rc = ids_push(out, id)))
                goto done;
        }
    }
done:
    return rc ? encode_fail(t, rc, n, err) : 0;
}

static int esc_reserve(spm_work *w, size_t need)
{
    if (w->esc_cap >= need)
        return 0;
    size_t nc = w->esc_cap ? w->esc_cap : 256;
    while (nc < need)
        nc *= 2;
    char *ne = realloc(w->esc, nc);
    if (!ne)
        return QE_ENOMEM;
    w->esc = ne;
    w->esc_cap = nc;
    return 0;
}

/* One raw fragment s[0..n): escape ' ' -> U+2581 (after a U+2581 prefix
 * when `prefix`) and encode.  With t->spm_line_split the escaped text is
 * cut after each '\n' that ends a symbol and the pieces are encoded one
 * by one: no merge can cross such a cut (no token has a '\n' before its
 * last byte), the symbols on each side are the same as in the whole text,
 * and the merge order within a piece is its own (key, left) order, so the
 * ids are those of the whole text while the scratch is bounded by the
 * longest line. */
static int spm_encode_raw(const qe_tokenizer *t, const char *s, size_t n, bool prefix,
                          spm_work *w, ids_vec *out, qe_err *err)
{
    size_t en = 0, walked = 0; /* walked: start of the first symbol not yet passed */
    if (prefix) {
        if (esc_reserve(w, 3))
            return encode_fail(t, QE_ENOMEM, n, err);
        memcpy(w->esc, "\xe2\x96\x81", 3);
        en = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (esc_reserve(w, en + 3))
            return encode_fail(t, QE_ENOMEM, n, err);
        char c = s[i];
        if (c == ' ') {
            memcpy(w->esc + en, "\xe2\x96\x81", 3);
            en += 3;
        } else {
            w->esc[en++] = c;
        }
        if (c != '\n' || !t->spm_line_split)
            continue;
        while (walked < en)
            walked += qe_utf8_len((unsigned char)w->esc[walked]);
        if (walked != en) /* the '\n' is inside an invalid UTF-8 sequence */
            continue;
        int rc = spm_encode(t, w->esc, en, w, out, err);
        if (rc)
            return rc;
        en = walked = 0;
    }
    return en ? spm_encode(t, w->esc, en, w, out, err) : 0;
}

/* ---- BPE --------------------------------------------------------------------- */

static int32_t bpe_rank(const qe_tokenizer *t, const char *w, const sym *l, const sym *r,
                        char **scratch, size_t *scap)
{
    size_t need = l->n + r->n + 1;
    if (need > *scap) {
        char *ns = realloc(*scratch, need * 2);
        if (!ns)
            return -2;
        *scratch = ns;
        *scap = need * 2;
    }
    memcpy(*scratch, w + l->off, l->n);
    (*scratch)[l->n] = (char)0xFF;
    memcpy(*scratch + l->n + 1, w + r->off, r->n);
    return qe_tok_map_get(&t->merges, *scratch, need);
}

static int bpe_try_bigram(const qe_tokenizer *t, const char *w, const sym *sy, int32_t l,
                          int32_t r, heap *h, char **scratch, size_t *scap)
{
    if (l < 0 || r < 0)
        return 0;
    int32_t rank = bpe_rank(t, w, &sy[l], &sy[r], scratch, scap);
    if (rank == -2)
        return QE_ENOMEM;
    if (rank < 0)
        return 0;
    return heap_push(h, (bigram){(double)rank, l, r, sy[l].n, sy[r].n});
}

static int bpe_word(const qe_tokenizer *t, const char *w, size_t n, ids_vec *out, heap *h,
                    sym **sy_buf, size_t *sy_cap, char **scratch, size_t *scap)
{
    if (t->ignore_merges) {
        int32_t id = qe_tok_map_get(&t->vocab, w, n);
        if (id >= 0)
            return ids_push(out, id);
    }
    int32_t ns = 0;
    int rc = make_symbols(w, n, sy_buf, sy_cap, &ns);
    if (rc)
        return rc;
    sym *sy = *sy_buf;
    h->n = 0;
    for (int32_t i = 1; i < ns; i++)
        if ((rc = bpe_try_bigram(t, w, sy, i - 1, i, h, scratch, scap)))
            return rc;
    while (h->n) {
        bigram b = heap_pop(h);
        sym *L = &sy[b.left], *R = &sy[b.right];
        /* Outdated when either side changed since the pair was queued. */
        if (L->n == 0 || R->n == 0 || L->n != b.size || R->n != b.rsize || L->next != b.right)
            continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0)
            sy[R->next].prev = b.left;
        if ((rc = bpe_try_bigram(t, w, sy, L->prev, b.left, h, scratch, scap)) ||
            (rc = bpe_try_bigram(t, w, sy, b.left, L->next, h, scratch, scap)))
            return rc;
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = sy[i].next) {
        int32_t id = qe_tok_map_get(&t->vocab, w + sy[i].off, sy[i].n);
        if (id >= 0) {
            if ((rc = ids_push(out, id)))
                return rc;
            continue;
        }
        /* Not a token: each byte of the (byte-encoded) text that is itself
         * a token; the rest is dropped, as llama.cpp does. */
        for (size_t j = 0; j < sy[i].n; j++) {
            id = qe_tok_map_get(&t->vocab, w + sy[i].off + j, 1);
            if (id >= 0 && (rc = ids_push(out, id)))
                return rc;
        }
    }
    return 0;
}

static int bpe_encode(const qe_tokenizer *t, const char *s, size_t n, ids_vec *out, qe_err *err)
{
    char *buf = NULL, *scratch = NULL;
    size_t *offs = NULL, n_words = 0, scap = 0;
    sym *sy = NULL;
    size_t sy_cap = 0;
    heap h = {0};
    int rc = qe_tok_pre_split(t, s, n, &buf, &offs, &n_words, err);
    if (rc)
        return rc;
    for (size_t w = 0; w < n_words && !rc; w++) {
        size_t wn = offs[w + 1] - offs[w];
        rc = bpe_word(t, buf + offs[w], wn, out, &h, &sy, &sy_cap, &scratch, &scap);
        if (rc)
            encode_fail(t, rc, wn, err);
    }
    free(sy);
    free(h.v);
    free(scratch);
    free(buf);
    free(offs);
    return rc;
}

/* ---- public encode ----------------------------------------------------- */

int qe_tokenize(const qe_tokenizer *t, const char *text, size_t len, bool add_special,
                bool parse_special, int32_t **ids, size_t *n_ids, qe_err *err)
{
    frag_vec fv = {0};
    ids_vec out = {0};
    spm_work spm = {0};
    int rc = 0;
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len))
        return qe_err_set(err, QE_EINVAL, "qe_tokenize: NULL tokenizer or text");
    if (len > 0 && (rc = frag_push(&fv, -1, 0, len)))
        goto oom;
    if ((rc = partition(t, text, parse_special, &fv)))
        goto oom;

    if (add_special && t->add_bos) {
        if (t->bos < 0) {
            rc = qe_err_set(err, QE_EFORMAT, "%s: add_bos is set but the vocab has no BOS",
                            t->src);
            goto out;
        }
        if ((rc = ids_push(&out, t->bos)))
            goto oom;
    }
    bool prev_special = true; /* SPM: prefix ' ' to the first raw fragment */
    for (size_t f = 0; f < fv.n; f++) {
        frag fr = fv.v[f];
        if (fr.id >= 0) {
            if ((rc = ids_push(&out, fr.id)))
                goto oom;
            prev_special = true;
            continue;
        }
        if (t->kind == QE_TOK_SPM) {
            rc = spm_encode_raw(t, text + fr.off, fr.len, t->add_space_prefix && prev_special,
                                &spm, &out, err);
        } else {
            rc = bpe_encode(t, text + fr.off, fr.len, &out, err);
        }
        if (rc)
            goto out;
        prev_special = false;
    }
    if (add_special && t->add_eos) {
        if (t->eos < 0) {
            rc = qe_err_set(err, QE_EFORMAT, "%s: add_eos is set but the vocab has no EOS",
                            t->src);
            goto out;
        }
        if ((rc = ids_push(&out, t->eos)))
            goto oom;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    goto out;
oom:
    rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory while tokenizing", t->src);
out:
    free(out.v);
    free(fv.v);
    spm_work_free(&spm);
    return rc;
}

/* ---- decode ------------------------------------------------------------------ */

/* Output for one piece: writes what fits in buf[0..cap), counts the full
 * length, and drops up to `strip` leading ' ' (llama.cpp's lstrip). */
typedef struct emitter {
    char *buf;
    size_t cap, w;
    int strip;
} emitter;

static void emit(emitter *e, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (e->strip > 0 && e->w == 0 && s[i] == ' ') {
            e->strip--;
            continue;
        }
        e->strip = 0;
        if (e->w < e->cap)
            e->buf[e->w] = s[i];
        e->w++;
    }
}

int qe_token_to_piece_ex(const qe_tokenizer *t, int32_t id, int lstrip, bool special, char *buf,
                         size_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab)
        return QE_EINVAL;
    uint32_t a = t->attr[id];
    const char *s = t->text[id];
    size_t n = t->len[id];
    emitter e = {buf, cap, 0, lstrip};
    if (!special && (a & (QE_TATTR_UNKNOWN | QE_TATTR_CONTROL)))
        return 0;
    if (a & (QE_TATTR_UNKNOWN | QE_TATTR_CONTROL | QE_TATTR_USER_DEFINED)) {
        emit(&e, s, n);
    } else if ((a & QE_TATTR_NORMAL) && t->kind == QE_TOK_SPM) {
        for (size_t i = 0; i < n;) { /* U+2581 -> ' ' */
            if (n - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                emit(&e, " ", 1);
                i += 3;
            } else {
                emit(&e, s + i, 1);
                i++;
            }
        }
    } else if (a & QE_TATTR_NORMAL) {
        /* BPE: every code point back to its byte (GPT-2 map). */
        for (size_t i = 0; i < n;) {
            size_t st = i, l = qe_utf8_len((unsigned char)s[i]);
            if (l > n - i)
                l = n - i;
            uint32_t cp = (unsigned char)s[i];
            if (l > 1) {
                cp &= (uint32_t)(0xFF >> (l + 1));
                for (size_t j = 1; j < l; j++)
                    cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3F);
            }
            i += l;
            int b = qe_tok_utf8_to_byte(cp);
            if (b >= 0) {
                char c = (char)b;
                emit(&e, &c, 1);
            } else { /* as llama_decode_text: hex of the code point, then the text */
                char hx[4];
                emit(&e, "[UNK_BYTE_0x", 12);
                for (size_t j = st; j < st + l; j++) {
                    snprintf(hx, sizeof hx, "%02x", (unsigned)(unsigned char)s[j]);
                    emit(&e, hx, 2);
                }
                emit(&e, s, n);
                emit(&e, "]", 1);
            }
        }
    } else if (a & QE_TATTR_BYTE) {
        unsigned v = 0; /* "<0xXX>" */
        for (size_t i = 3; i < 5 && i < n; i++) {
            char c = s[i];
            v = v * 16 + (unsigned)(c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
        }
        char c = (char)v;
        emit(&e, &c, 1);
    }
    return e.w > INT32_MAX ? QE_EOVERFLOW : (int)e.w;
}

int qe_token_to_piece(const qe_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    return qe_token_to_piece_ex(t, id, 0, true, buf, cap);
}

int qe_detokenize_ex(const qe_tokenizer *t, const int32_t *ids, size_t n, bool remove_special,
                     bool render_special, char **out, qe_err *err)
{
    size_t cap = 256, used = 0;
    char *buf = malloc(cap);
    *out = NULL;
    if (!buf)
        return qe_err_set(err, QE_ENOMEM, "detokenize: out of memory");
    /* llama.cpp: strip one leading space of the first piece when the vocab
     * adds a space prefix (SPM), unless a removed BOS came first. */
    int remove_space = t->add_space_prefix ? 1 : 0;
    if (remove_special && t->add_bos && n > 0 && ids[0] == t->bos) {
        remove_space = 0;
        ids++;
        n--;
    }
    if (remove_special && t->add_eos && n > 0 && ids[n - 1] == t->eos)
        n--;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            free(buf);
            return qe_err_set(err, QE_EINVAL, "detokenize: id %d at position %zu out of range "
                              "[0, %d)", ids[i], i, t->n_vocab);
        }
        for (;;) {
            int k = qe_token_to_piece_ex(t, ids[i], remove_space, render_special, buf + used,
                                         cap - used - 1);
            if (k < 0) {
                free(buf);
                return qe_err_set(err, k, "detokenize: token %d too long", ids[i]);
            }
            if ((size_t)k <= cap - used - 1) {
                used += (size_t)k;
                break;
            }
            size_t nc = cap * 2 + (size_t)k;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                return qe_err_set(err, QE_ENOMEM, "detokenize: out of memory");
            }
            buf = nb;
            cap = nc;
        }
        remove_space = 0;
    }
    if (t->clean_spaces && used > 0) {
        /* clean_up_tokenization_spaces, the three passes of llama.cpp */
        size_t tot = 1, t1 = used;
        for (size_t i = 1; i < t1; i++) {
            char x = buf[i];
            if (buf[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
                tot--;
            buf[tot++] = x;
        }
        size_t t2 = tot;
        tot = 1;
        for (size_t i = 1; i < t2; i++) {
            char x = buf[i];
            if (x == '\'' && i + 1 < t2 && buf[i - 1] == ' ' && buf[i + 1] == ' ') {
                tot--;
                buf[++i] = '\0';
            }
            buf[tot++] = x;
        }
        size_t t3 = tot;
        tot = 1;
        for (size_t i = 1; i < t3; i++) {
            char x = buf[i];
            if (buf[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
                char x1 = buf[i + 1];
                if (x1 == 's' || x1 == 'm')
                    tot--;
                else if (i + 2 < t3) {
                    char x2 = buf[i + 2];
                    if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                        tot--;
                }
            }
            buf[tot++] = x;
        }
        used = tot;
    }
    buf[used] = '\0';
    *out = buf;
    return 0;
}

int qe_detokenize(const qe_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                  char **out, qe_err *err)
{
    return qe_detokenize_ex(t, ids, n, false, render_special, out, err);
}

/* ---- accessors ------------------------------------------------------------- */

qe_tok_kind qe_tokenizer_kind(const qe_tokenizer *t) { return t->kind; }
const char *qe_tokenizer_kind_name(const qe_tokenizer *t)
{
    return t->kind == QE_TOK_SPM ? "spm" : "bpe";
}
const char *qe_tokenizer_pre(const qe_tokenizer *t) { return t->pre; }
int32_t qe_tokenizer_n_vocab(const qe_tokenizer *t) { return t->n_vocab; }
int32_t qe_tokenizer_bos(const qe_tokenizer *t) { return t->bos; }
int32_t qe_tokenizer_eos(const qe_tokenizer *t) { return t->eos; }
bool qe_tokenizer_add_bos(const qe_tokenizer *t) { return t->add_bos; }
bool qe_tokenizer_add_eos(const qe_tokenizer *t) { return t->add_eos; }

bool qe_tokenizer_is_eog(const qe_tokenizer *t, int32_t id)
{
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

const char *qe_tokenizer_token_text(const qe_tokenizer *t, int32_t id)
{
    return (id >= 0 && id < t->n_vocab) ? t->text[id] : NULL;
}
float qe_tokenizer_token_score(const qe_tokenizer *t, int32_t id)
{
    return (id >= 0 && id < t->n_vocab) ? t->score[id] : 0.0f;
}
int qe_tokenizer_token_type(const qe_tokenizer *t, int32_t id)
{
    return (id >= 0 && id < t->n_vocab) ? t->toktype[id] : 0;
}
int32_t qe_tokenizer_find(const qe_tokenizer *t, const char *text, size_t len)
{
    return qe_tok_map_get(&t->vocab, text, len);
}
