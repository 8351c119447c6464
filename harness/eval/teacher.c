/*
 * teacher.c: teacher-forced divergence of a candidate from the reference
 * on the reference's own output (see teacher.h).
 */
#include "teacher.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"
#include "../model/model.h"

/* Logits held per model: the rows to score times a slice of the
 * vocabulary (at least 256 columns), 64 MiB of f32. */
#define TF_SLICE_BYTES (64u << 20)

/* Running log-sum-exp state of one scored position over vocab slices
 * (double): maxima m, sums s = sum exp(l - m), w = sum exp(lr - mr) (lr - lc),
 * and the first argmax of each model. */
typedef struct tf_row {
    double mr, sr, wr, mc, sc;
    float br, bc;
    int ir, ic;
} tf_row;

/* One cached item: its whole token sequence (the key), the context
 * length, and the reference's n deferred rows (n x n_embd). */
typedef struct tf_entry {
    int32_t *tokens;
    int n_tokens, n_ctx, n_rows;
    float *rows;
} tf_entry;

struct qe_tf_cache {
    tf_entry *e;
    size_t n, cap;
    size_t bytes, max_bytes;
    long hits;
};

struct qe_tf {
    qe_infer *ref, *cand;
    int n_ctx, n_vocab, n_threads;
    int32_t *tokens; /* (n_ctx) */
    float *lr, *lc;  /* (cap) logits of a slice, rows x columns */
    size_t cap;
    tf_row *rows;    /* (n_ctx) */
    int slice;       /* qe_tf_set_slice: columns per slice, 0 = as cap allows */
    qe_tf_cache *cache; /* the reference's rows across candidates, or NULL */
};

qe_tf_cache *qe_tf_cache_new(size_t max_bytes)
{
    qe_tf_cache *c = calloc(1, sizeof *c);
    if (c)
        c->max_bytes = max_bytes ? max_bytes : (size_t)512 << 20;
    return c;
}

void qe_tf_cache_free(qe_tf_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].tokens);
        free(c->e[i].rows);
    }
    free(c->e);
    free(c);
}

void qe_tf_cache_stats(const qe_tf_cache *c, long *hits, long *stored)
{
    *hits = c ? c->hits : 0;
    *stored = c ? (long)c->n : 0;
}

void qe_tf_set_cache(qe_tf *tf, qe_tf_cache *c)
{
    tf->cache = c;
}

static const tf_entry *cache_find(const qe_tf_cache *c, const int32_t *tokens, int n_tokens,
                                  int n_ctx)
{
    for (size_t i = 0; c && i < c->n; i++) {
        const tf_entry *e = &c->e[i];
        if (e->n_tokens == n_tokens && e->n_ctx == n_ctx &&
            memcmp(e->tokens, tokens, (size_t)n_tokens * sizeof *tokens) == 0)
            return e;
    }
    return NULL;
}

/* Keep the reference's deferred rows of this sequence (quietly nothing
 * when the cache is full or memory is short: it only saves time). */
static void cache_put(qe_tf_cache *c, const qe_infer *ref, const int32_t *tokens, int n_tokens,
                      int n_ctx)
{
    int n = 0;
    const float *rows = qe_infer_deferred(ref, &n);
    const size_t nb = (size_t)n * qe_infer_n_embd(ref) * sizeof(float) +
                      (size_t)n_tokens * sizeof *tokens;
    if (!rows || c->bytes + nb > c->max_bytes)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        tf_entry *e = realloc(c->e, cap * sizeof *e);
        if (!e)
            return;
        c->e = e;
        c->cap = cap;
    }
    tf_entry e = {.tokens = malloc((size_t)n_tokens * sizeof *tokens), .n_tokens = n_tokens,
                  .n_ctx = n_ctx, .n_rows = n, .rows = malloc(nb)};
    if (!e.tokens || !e.rows) {
        free(e.tokens);
        free(e.rows);
        return;
    }
    memcpy(e.tokens, tokens, (size_t)n_tokens * sizeof *tokens);
    memcpy(e.rows, rows, (size_t)n * qe_infer_n_embd(ref) * sizeof(float));
    c->e[c->n++] = e;
    c->bytes += nb;
}

qe_tf *qe_tf_new(const qe_model *ref, const qe_model *cand, int n_ctx, int n_threads,
                 qe_err *err)
{
    if (ref->cfg.n_vocab != cand->cfg.n_vocab) {
        qe_err_set(err, QE_EINVAL, "teacher forcing: vocab sizes differ: reference %d, "
                   "candidate %d", ref->cfg.n_vocab, cand->cfg.n_vocab);
        return NULL;
    }
    qe_tf *tf = calloc(1, sizeof *tf);
    if (!tf) {
        qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
        return NULL;
    }
    tf->n_ctx = n_ctx > 0 ? n_ctx : 512;
    tf->n_vocab = ref->cfg.n_vocab;
    tf->n_threads = n_threads > 0 ? n_threads : omp_get_max_threads();
    qe_infer_opts io = {.n_ctx = tf->n_ctx, .n_threads = n_threads, .n_batch = tf->n_ctx};
    /* every row times >= 256 columns, all columns when they fit */
    size_t cols = TF_SLICE_BYTES / sizeof(float) / (size_t)tf->n_ctx;
    cols = cols < 256 ? 256 : cols > (size_t)tf->n_vocab ? (size_t)tf->n_vocab : cols;
    tf->cap = cols * (size_t)tf->n_ctx;
    if (!(tf->ref = qe_infer_new(ref, &io, err)) || !(tf->cand = qe_infer_new(cand, &io, err)))
        goto fail;
    tf->tokens = malloc((size_t)tf->n_ctx * sizeof *tf->tokens);
    tf->lr = malloc(tf->cap * sizeof(float));
    tf->lc = malloc(tf->cap * sizeof(float));
    tf->rows = malloc((size_t)tf->n_ctx * sizeof *tf->rows);
    if (!tf->tokens || !tf->lr || !tf->lc || !tf->rows) {
        qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
        goto fail;
    }
    return tf;
fail:
    qe_tf_free(tf);
    return NULL;
}

void qe_tf_free(qe_tf *tf)
{
    if (!tf)
        return;
    qe_infer_free(tf->ref);
    qe_infer_free(tf->cand);
    free(tf->tokens);
    free(tf->lr);
    free(tf->lc);
    free(tf->rows);
    free(tf);
}

void qe_tf_set_slice(qe_tf *tf, int cols)
{
    tf->slice = cols > 0 ? cols : 0;
}

/* Fold one slice (nv columns) of a position's two logit rows into its
 * running state.  Maxima first, so every exp is of a value <= 0; the
 * earlier sums are rescaled when a maximum rises. */
static void row_fold(tf_row *st, const float *lr, const float *lc, int nv, int v0)
{
    float br = lr[0], bc = lc[0];
    int ir = 0, ic = 0;
    for (int i = 1; i < nv; i++) {
        if (lr[i] > br)
            br = lr[i], ir = i;
        if (lc[i] > bc)
            bc = lc[i], ic = i;
    }
    if (v0 == 0 || br > st->br) /* the first argmax over the whole row */
        st->br = br, st->ir = v0 + ir;
    if (v0 == 0 || bc > st->bc)
        st->bc = bc, st->ic = v0 + ic;
    if (v0 == 0) {
        st->mr = br, st->mc = bc;
        st->sr = st->wr = st->sc = 0;
    }
    if (br > st->mr) {
        const double f = exp(st->mr - br);
        st->sr *= f, st->wr *= f, st->mr = br;
    }
    if (bc > st->mc) {
        st->sc *= exp(st->mc - bc);
        st->mc = bc;
    }
    double sr = st->sr, wr = st->wr, sc = st->sc;
    const double mr = st->mr, mc = st->mc;
    for (int i = 0; i < nv; i++) {
        const double e = exp((double)lr[i] - mr);
        sr += e;
        wr += e * ((double)lr[i] - (double)lc[i]);
        sc += exp((double)lc[i] - mc);
    }
    st->sr = sr, st->wr = wr, st->sc = sc;
}

/* KL(r || c) = sum p_r (lr - lc) - (zr - zc), z = m + log s: exactly 0
 * when the two rows are equal. */
static double row_kld(const tf_row *st)
{
    return st->wr / st->sr - ((st->mr + log(st->sr)) - (st->mc + log(st->sc)));
}

int qe_tf_score(qe_tf *tf, const int32_t *ctx, size_t n_ctx, const int32_t *cont, size_t n_cont,
                qe_tf_item *out, qe_err *err)
{
    memset(out, 0, sizeof *out);
    if (n_ctx == 0 || n_cont == 0)
        return qe_err_set(err, QE_EINVAL, "teacher forcing: need >= 1 context and >= 1 output "
                          "token (got %zu and %zu)", n_ctx, n_cont);
    if (n_ctx > (size_t)tf->n_ctx)
        return qe_err_set(err, QE_EINVAL, "teacher forcing: the context has %zu tokens, more "
                          "than the window of %d", n_ctx, tf->n_ctx);
    /* the logits at positions n_ctx-1 .. n_ctx+n-2 score cont[0..n-1]: the
     * last output token is never fed, so n_ctx + n - 1 <= window */
    size_t n = n_cont < (size_t)tf->n_ctx + 1 - n_ctx ? n_cont : (size_t)tf->n_ctx + 1 - n_ctx;
    size_t L = n_ctx + n - 1;
    for (size_t i = 0; i < L; i++) {
        int32_t t = i < n_ctx ? ctx[i] : cont[i - n_ctx];
        if (t < 0 || t >= tf->n_vocab)
            return qe_err_set(err, QE_EINVAL, "teacher forcing: token %zu = %d outside the "
                              "vocab of %d", i, t, tf->n_vocab);
        tf->tokens[i] = t;
    }
    out->kld = malloc(n * sizeof *out->kld);
    if (!out->kld)
        return qe_err_set(err, QE_ENOMEM, "teacher forcing: out of memory");
    int rc;
    qe_infer_rewind(tf->ref, 0);
    qe_infer_rewind(tf->cand, 0);
    const tf_entry *hit = cache_find(tf->cache, tf->tokens, (int)L, (int)n_ctx);
    if (hit) {
        if ((rc = qe_infer_set_deferred(tf->ref, hit->rows, hit->n_rows, err)))
            goto fail;
        tf->cache->hits++;
    } else {
        if ((rc = qe_infer_eval_defer(tf->ref, tf->tokens, (int)L, (int)n_ctx - 1, err)))
            goto fail;
        if (tf->cache)
            cache_put(tf->cache, tf->ref, tf->tokens, (int)L, (int)n_ctx);
    }
    if ((rc = qe_infer_eval_defer(tf->cand, tf->tokens, (int)L, (int)n_ctx - 1, err)))
        goto fail;
    /* the vocabulary in slices, each over all N rows: one pass over the
     * output matrix per model, whatever N */
    const int nv = tf->n_vocab, N = (int)n;
    size_t cols = tf->cap / (size_t)N;
    if (tf->slice > 0 && (size_t)tf->slice < cols)
        cols = (size_t)tf->slice;
    const int ns = cols > (size_t)nv ? nv : (int)cols;
    for (int v0 = 0; v0 < nv; v0 += ns) {
        const int nc = nv - v0 < ns ? nv - v0 : ns;
        if ((rc = qe_infer_logits_cols(tf->ref, 0, N, v0, nc, tf->lr, err)) ||
            (rc = qe_infer_logits_cols(tf->cand, 0, N, v0, nc, tf->lc, err)))
            goto fail;
        const float *lr = tf->lr, *lc = tf->lc;
        tf_row *rows = tf->rows;
#pragma omp parallel for num_threads(tf->n_threads) schedule(static)
        for (int j = 0; j < N; j++)
            row_fold(&rows[j], lr + (size_t)j * nc, lc + (size_t)j * nc, nc, v0);
    }
    out->first_diff = N;
    for (int j = 0; j < N; j++) {
        const double k = row_kld(&tf->rows[j]);
        const int same = tf->rows[j].ir == tf->rows[j].ic;
        out->kld[j] = (float)k;
        out->kld_sum += k;
        out->n_top1_same += same;
        if (!same && out->first_diff == N)
            out->first_diff = j;
    }
    out->n_tokens = N;
    return 0;
fail:
    free(out->kld);
    out->kld = NULL;
    return rc;
}
