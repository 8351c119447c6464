/*
 * lm.c: qe_lm over the reference inference core.  Loglikelihood requests
 * reuse the KV cache: the longest common prefix between the new input and
 * the ids already in the cache is kept (qe_infer_rewind) and only the rest
 * is evaluated, so a multiple-choice context is run once for all choices
 * and consecutive rolling windows share nothing they need not.
 */
#include "lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../infer/infer.h"
#include "../model/model.h"
#include "../model/tokenizer.h"

typedef struct lm_impl {
    const qe_model *m;
    qe_infer *inf;
    int32_t *cache;       /* ids in the KV cache, n_cache of them (n_ctx capacity) */
    int n_cache;
    float *logits;        /* scratch: n_ctx * n_vocab */
    int n_vocab;
    int n_ctx, n_threads; /* as created */
    int parallel;         /* generate_many: sequences in flight (slots 0..parallel-1;
                             slot `parallel` holds the shared prefix) */
    int numerics;         /* QE_NUMERICS_EXACT (default) or _INT8 */
} lm_impl;

static int li_tokenize(qe_lm *lm, const char *text, size_t len, int32_t **ids, size_t *n,
                       qe_err *err)
{
    lm_impl *im = lm->impl;
    return qe_tokenize(im->m->tok, text, len, false, lm->parse_special, ids, n, err);
}

static int li_detokenize(qe_lm *lm, const int32_t *ids, size_t n, char **out, qe_err *err)
{
    lm_impl *im = lm->impl;
    size_t cap = 64 + 16 * n, used = 0;
    char *buf = malloc(cap);
    if (!buf)
        return qe_err_set(err, QE_ENOMEM, "detokenize: out of memory");
    for (size_t i = 0; i < n; i++) {
        char piece[256];
        int k = qe_token_to_piece(im->m->tok, ids[i], piece, sizeof piece);
        if (k < 0)
            continue;
        if ((size_t)k > sizeof piece)
            k = sizeof piece;
        if (used + (size_t)k + 1 > cap) {
            char *nb = realloc(buf, 2 * (used + (size_t)k + 1));
            if (!nb) {
                free(buf);
                return qe_err_set(err, QE_ENOMEM, "detokenize: out of memory");
            }
            buf = nb;
            cap = 2 * (used + (size_t)k + 1);
        }
        memcpy(buf + used, piece, (size_t)k);
        used += (size_t)k;
    }
    buf[used] = '\0';
    *out = buf;
    return 0;
}

/* Make the KV cache hold exactly input[0..n) and write logits for
 * positions >= from into im->logits (row 0 = position from). */
static int li_run(qe_lm *lm, const int32_t *input, int n, int from, qe_err *err)
{
    lm_impl *im = lm->impl;
    int p = 0;
    while (p < im->n_cache && p < n && im->cache[p] == input[p])
        p++;
    if (p > from)
        p = from; /* we need logits from `from` on: recompute them */
    qe_infer_rewind(im->inf, p);
    im->n_cache = p;
    lm->n_tokens_reused += (uint64_t)p;
    int rc = qe_infer_eval(im->inf, input + p, n - p, from - p, im->logits, err);
    if (rc) {
        qe_infer_rewind(im->inf, 0);
        im->n_cache = 0;
        return rc;
    }
    memcpy(im->cache + p, input + p, (size_t)(n - p) * sizeof *input);
    im->n_cache = n;
    lm->n_tokens_eval += (uint64_t)(n - p);
    return 0;
}

static double log_softmax_at(const float *row, int n_vocab, int32_t target, bool *is_max)
{
    float mx = row[0];
    int arg = 0;
    for (int v = 1; v < n_vocab; v++)
        if (row[v] > mx) {
            mx = row[v];
            arg = v;
        }
    double s = 0;
    for (int v = 0; v < n_vocab; v++)
        s += exp((double)row[v] - mx);
    *is_max = arg == target;
    return (double)row[target] - mx - log(s);
}

static int li_loglik(qe_lm *lm, const int32_t *ctx, size_t n_ctx, const int32_t *cont,
                     size_t n_cont, double *ll, bool *greedy, qe_err *err)
{
    lm_impl *im = lm->impl;
    if (n_ctx < 1 || n_cont < 1)
        return qe_err_set(err, QE_EINVAL, "loglik: need >= 1 context and >= 1 continuation "
                          "token (got %zu, %zu)", n_ctx, n_cont);
    if (n_cont > (size_t)lm->n_ctx)
        return qe_err_set(err, QE_EINVAL, "loglik: continuation of %zu tokens exceeds the "
                          "context window %d", n_cont, lm->n_ctx);
    /* input = (ctx ++ cont)[-(n_ctx+1):][:-1], as lm-eval */
    size_t total = n_ctx + n_cont, keep = total > (size_t)lm->n_ctx + 1 ? (size_t)lm->n_ctx + 1
                                                                          : total;
    size_t skip = total - keep;
    int n_in = (int)keep - 1;
    int32_t *in = malloc((size_t)(n_in > 0 ? n_in : 1) * sizeof *in);
    if (!in)
        return qe_err_set(err, QE_ENOMEM, "loglik: out of memory");
    for (int i = 0; i < n_in; i++) {
        size_t k = skip + (size_t)i;
        in[i] = k < n_ctx ? ctx[k] : cont[k - n_ctx];
    }
    int from = n_in - (int)n_cont;
    int rc = li_run(lm, in, n_in, from, err);
    free(in);
    if (rc)
        return rc;
    double s = 0;
    bool g = true;
    for (size_t i = 0; i < n_cont; i++) {
        bool mx;
        s += log_softmax_at(im->logits + i * (size_t)im->n_vocab, im->n_vocab, cont[i], &mx);
        g = g && mx;
    }
    *ll = s;
    if (greedy)
        *greedy = g;
    lm->n_requests++;
    return 0;
}

static int li_generate(qe_lm *lm, const int32_t *prompt, size_t n_prompt, int max_tokens,
                       const char *const *until, int n_until, char **text, qe_err *err)
{
    lm_impl *im = lm->impl;
    if (max_tokens < 1)
        max_tokens = 1;
    if (max_tokens >= lm->n_ctx)
        max_tokens = lm->n_ctx - 1;
    size_t room = (size_t)(lm->n_ctx - max_tokens);
    const int32_t *p = prompt;
    size_t np = n_prompt;
    if (np > room) { /* keep the end of the prompt, as lm-eval does */
        p += np - room;
        np = room;
    }
    if (np == 0)
        return qe_err_set(err, QE_EINVAL, "generate: empty prompt");
    int rc = li_run(lm, p, (int)np, (int)np - 1, err);
    if (rc)
        return rc;
    size_t cap = 256, used = 0;
    char *out = malloc(cap);
    if (!out)
        return qe_err_set(err, QE_ENOMEM, "generate: out of memory");
    out[0] = '\0';
    const float *row = im->logits;
    for (int t = 0; t < max_tokens; t++) {
        int32_t best = qe_infer_argmax(row, im->n_vocab);
        if (qe_tokenizer_is_eog(im->m->tok, best))
            break;
        char piece[256];
        int k = qe_token_to_piece(im->m->tok, best, piece, sizeof piece);
        if (k > (int)sizeof piece)
            k = sizeof piece;
        if (k > 0) {
            if (used + (size_t)k + 1 > cap) {
                char *nb = realloc(out, 2 * (used + (size_t)k + 1));
                if (!nb) {
                    free(out);
                    return qe_err_set(err, QE_ENOMEM, "generate: out of memory");
                }
                out = nb;
                cap = 2 * (used + (size_t)k + 1);
            }
            memcpy(out + used, piece, (size_t)k);
            used += (size_t)k;
            out[used] = '\0';
        }
        bool stop = false;
        for (int u = 0; u < n_until; u++) {
            char *h = until[u][0] ? strstr(out, until[u]) : NULL;
            if (h) {
                *h = '\0';
                used = (size_t)(h - out);
                stop = true;
            }
        }
        if (stop || t + 1 == max_tokens || im->n_cache >= lm->n_ctx)
            break;
        rc = qe_infer_eval(im->inf, &best, 1, 0, im->logits, err);
        if (rc) {
            free(out);
            qe_infer_rewind(im->inf, 0);
            im->n_cache = 0;
            return rc;
        }
        im->cache[im->n_cache++] = best;
        lm->n_tokens_eval++;
        row = im->logits;
    }
    lm->n_requests++;
    *text = out;
    return 0;
}

/* Growing text of one generation. */
typedef struct gen_text {
    char *s;
    size_t used, cap;
} gen_text;

static int text_add(gen_text *g, const char *piece, int k)
{
    if (g->used + (size_t)k + 1 > g->cap) {
        size_t nc = 2 * (g->used + (size_t)k + 1);
        char *nb = realloc(g->s, nc);
        if (!nb)
            return QE_ENOMEM;
        g->s = nb;
        g->cap = nc;
    }
    memcpy(g->s + g->used, piece, (size_t)k);
    g->used += (size_t)k;
    g->s[g->used] = '\0';
    return 0;
}

/* One greedy step of generate's loop on logits row: returns 1 when the
 * sequence stops (end-of-generation, stop string, max_tokens, context),
 * 0 to feed *tok next, or -1 out of memory. */
static int gen_step(lm_impl *im, const float *row, gen_text *g, int n_gen, int max_tokens,
                    const char *const *until, int n_until, int n_past, int n_ctx, int32_t *tok)
{
    const int32_t best = qe_infer_argmax(row, im->n_vocab);
    if (qe_tokenizer_is_eog(im->m->tok, best))
        return 1;
    char piece[256];
    int k = qe_token_to_piece(im->m->tok, best, piece, sizeof piece);
    if (k > (int)sizeof piece)
        k = sizeof piece;
    if (k > 0 && text_add(g, piece, k))
        return -1;
    bool stop = false;
    for (int u = 0; u < n_until; u++) {
        char *h = until[u][0] ? strstr(g->s, until[u]) : NULL;
        if (h) {
            *h = '\0';
            g->used = (size_t)(h - g->s);
            stop = true;
        }
    }
    if (stop || n_gen + 1 == max_tokens || n_past >= n_ctx)
        return 1;
    *tok = best;
    return 0;
}

/*
 * Continuous batching over the core's sequence slots.  The prompts'
 * longest common prefix (the few-shot examples) is computed once in the
 * prefix slot and copied into a sequence's slot when it starts; the rest
 * of its prompt is one run, then one token per call.  Up to `parallel`
 * sequences share every call; a slot is refilled as soon as its sequence
 * stops.  How a sequence's tokens are split into runs depends only on its
 * own prompt and the prefix, and the core's logits do not depend on the
 * companions of a run (infer.h), so the texts are the same for any
 * parallel and thread count.  Every run takes the prefill kernels (one
 * dequantized weight tile applied to all sequences in flight, W . X^T:
 * about 1.7x the decode kernels' aggregate speed at 16 sequences, 3.5x
 * llama.cpp's single-stream decode on the Qwen2.5-0.5B shape).
 */
static int li_generate_many(qe_lm *lm, const int32_t *const *prompts, const size_t *n_prompts,
                            size_t n_req, int max_tokens, const char *const *until, int n_until,
                            char **texts, qe_err *err)
{
    lm_impl *im = lm->impl;
    qe_infer *inf = im->inf;
    const int B = im->parallel > 0 ? im->parallel : 1, PS = B, n_ctx = lm->n_ctx;
    const int n_batch = n_ctx;
    if (max_tokens < 1)
        max_tokens = 1;
    if (max_tokens >= n_ctx)
        max_tokens = n_ctx - 1;
    const size_t room = (size_t)(n_ctx - max_tokens);
    im->n_cache = 0; /* slot 0 is used here: loglik's cache is gone */
    for (size_t i = 0; i < n_req; i++) {
        texts[i] = NULL;
        if (n_prompts[i] == 0)
            return qe_err_set(err, QE_EINVAL, "generate: empty prompt (request %zu)", i);
    }
    if (n_req == 0)
        return 0;
    /* prompts keep their end (lm-eval); the shared prefix leaves each >= 1 own token */
#define PROMPT(i) (prompts[i] + (n_prompts[i] > room ? n_prompts[i] - room : 0))
#define NPROMPT(i) (n_prompts[i] > room ? room : n_prompts[i])
    size_t P = NPROMPT(0) - 1;
    for (size_t i = 1; i < n_req && P > 0; i++) {
        size_t q = 0;
        const size_t lim = NPROMPT(i) - 1 < P ? NPROMPT(i) - 1 : P;
        while (q < lim && PROMPT(i)[q] == PROMPT(0)[q])
            q++;
        P = q;
    }
    int rc = 0;
    qe_infer_seq_rewind(inf, PS, 0);
    for (size_t s = 0; s < P && rc == 0; s += (size_t)n_batch) {
        const int n = P - s < (size_t)n_batch ? (int)(P - s) : n_batch;
        qe_seq_run r = {.seq = PS, .tokens = PROMPT(0) + s, .n = n, .logits_from = n,
                        .prefill_kernels = true};
        rc = qe_infer_batch(inf, &r, 1, NULL, err);
    }
    lm->n_tokens_eval += P;
    size_t next = 0, n_done = 0;
    int *req = malloc((size_t)B * sizeof *req), *n_gen = calloc((size_t)B, sizeof *n_gen);
    int32_t *last = malloc((size_t)B * sizeof *last);
    gen_text *gt = calloc((size_t)B, sizeof *gt);
    qe_seq_run *runs = malloc((size_t)B * sizeof *runs);
    int *run_slot = malloc((size_t)B * sizeof *run_slot);
    if (!req || !n_gen || !last || !gt || !runs || !run_slot)
        rc = qe_err_set(err, QE_ENOMEM, "generate: out of memory");
    for (int s = 0; s < B && rc == 0; s++)
        req[s] = -1;
    while (rc == 0 && n_done < n_req) {
        int n_runs = 0, n_tok = 0;
        for (int s = 0; s < B; s++) { /* sequences in flight: their next token */
            if (req[s] < 0 || n_gen[s] == 0)
                continue;
            runs[n_runs] = (qe_seq_run){.seq = s, .tokens = &last[s], .n = 1, .logits_from = 0,
                                        .prefill_kernels = true};
            run_slot[n_runs++] = s;
            n_tok++;
        }
        for (int s = 0; s < B && next < n_req; s++) { /* refill free slots */
            if (req[s] >= 0)
                continue;
            const size_t i = next;
            const int rest = (int)(NPROMPT(i) - P);
            if (n_runs > 0 && n_tok + rest > n_batch)
                break; /* next call */
            if ((rc = qe_infer_seq_copy(inf, s, PS, (int)P, err)))
                break;
            req[s] = (int)i;
            n_gen[s] = 0;
            gt[s].used = 0;
            if (!gt[s].s && !(gt[s].s = malloc(gt[s].cap = 256))) {
                rc = qe_err_set(err, QE_ENOMEM, "generate: out of memory");
                break;
            }
            gt[s].s[0] = '\0';
            runs[n_runs] = (qe_seq_run){.seq = s, .tokens = PROMPT(i) + P, .n = rest,
                                        .logits_from = rest - 1, .prefill_kernels = true};
            run_slot[n_runs++] = s;
            n_tok += rest;
            lm->n_tokens_reused += P;
            next++;
        }
        if (rc)
            break;
        if ((rc = qe_infer_batch(inf, runs, n_runs, im->logits, err)))
            break;
        lm->n_tokens_eval += (uint64_t)n_tok;
        for (int j = 0; j < n_runs; j++) {
            const int s = run_slot[j];
            const int st = gen_step(im, im->logits + (size_t)j * im->n_vocab, &gt[s], n_gen[s],
                                    max_tokens, until, n_until, qe_infer_seq_n_past(inf, s),
                                    n_ctx, &last[s]);
            if (st < 0) {
                rc = qe_err_set(err, QE_ENOMEM, "generate: out of memory");
                break;
            }
            n_gen[s]++;
            if (st == 1) {
                texts[req[s]] = gt[s].s;
                gt[s] = (gen_text){0};
                req[s] = -1;
                qe_infer_seq_rewind(inf, s, 0);
                n_done++;
                lm->n_requests++;
            }
        }
    }
#undef PROMPT
#undef NPROMPT
    for (int s = 0; gt && s < B; s++)
        free(gt[s].s);
    free(req);
    free(n_gen);
    free(last);
    free(gt);
    free(runs);
    free(run_slot);
    if (rc)
        for (size_t i = 0; i < n_req; i++) {
            free(texts[i]);
            texts[i] = NULL;
        }
    return rc;
}

static void li_free(qe_lm *lm)
{
    lm_impl *im = lm->impl;
    if (!im)
        return;
    qe_infer_free(im->inf);
    free(im->cache);
    free(im->logits);
    free(im);
    lm->impl = NULL;
}

static const qe_lm_ops li_ops = {li_tokenize, li_detokenize, li_loglik, li_generate, li_free};

int qe_lm_default_parallel(const qe_model *m, int n_ctx)
{
    const qe_config *c = &m->cfg;
    const double per = 2.0 * c->n_layer * (double)n_ctx * c->n_head_kv * c->head_dim * 4.0;
    const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    int b = 16;
    if (pages > 0 && psz > 0 && per > 0)
        while (b > 1 && (b + 1) * per > 0.25 * (double)pages * (double)psz)
            b--;
    return b;
}

/* A new core for im with `parallel` + 1 sequence slots in `numerics`
 * (the KV cache starts empty); on error im is left as it was. */
static int recreate(lm_impl *im, int parallel, int numerics, qe_err *err)
{
    qe_infer_opts io = {.n_ctx = im->n_ctx, .n_threads = im->n_threads, .n_seq = parallel + 1,
                        .numerics = numerics};
    qe_infer *inf = qe_infer_new(im->m, &io, err);
    if (!inf)
        return err ? err->code : QE_ENOMEM;
    qe_infer_free(im->inf);
    im->inf = inf;
    im->n_cache = 0;
    return 0;
}

int qe_lm_set_parallel(qe_lm *lm, int parallel, qe_err *err)
{
    if (parallel < 1 || parallel > QE_LM_MAX_PARALLEL)
        return qe_err_set(err, QE_EINVAL, "parallel %d: expected 1 .. %d", parallel,
                          QE_LM_MAX_PARALLEL);
    if (!lm || lm->ops != &li_ops)
        return 0; /* other models generate one at a time */
    lm_impl *im = lm->impl;
    if (im->parallel == parallel)
        return 0;
    int rc = recreate(im, parallel, im->numerics, err);
    if (rc == 0)
        im->parallel = parallel;
    return rc;
}

int qe_lm_set_numerics(qe_lm *lm, int numerics, qe_err *err)
{
    if (numerics != QE_NUMERICS_EXACT && numerics != QE_NUMERICS_INT8)
        return qe_err_set(err, QE_EINVAL, "numerics %d: expected exact (%d) or int8 (%d)",
                          numerics, QE_NUMERICS_EXACT, QE_NUMERICS_INT8);
    if (!lm || lm->ops != &li_ops)
        return 0; /* other models have their own arithmetic */
    lm_impl *im = lm->impl;
    if (im->numerics == numerics)
        return 0;
    int rc = recreate(im, im->parallel, numerics, err);
    if (rc == 0)
        im->numerics = numerics;
    return rc;
}

int qe_lm_infer_init(qe_lm *lm, const qe_model *m, int n_ctx, int n_threads, qe_err *err)
{
    memset(lm, 0, sizeof *lm);
    if (!m || !m->tok)
        return qe_err_set(err, QE_EINVAL, "lm: model without a tokenizer");
    if (n_ctx <= 0)
        n_ctx = m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train < 512 ? m->cfg.n_ctx_train : 512;
    lm_impl *im = calloc(1, sizeof *im);
    if (!im)
        return qe_err_set(err, QE_ENOMEM, "lm: out of memory");
    im->m = m;
    qe_infer_opts io = {.n_ctx = n_ctx, .n_threads = n_threads, .n_batch = 0, .n_seq = 2};
    im->inf = qe_infer_new(m, &io, err);
    if (!im->inf) {
        free(im);
        return err ? err->code : QE_EINVAL;
    }
    im->n_vocab = qe_infer_n_vocab(im->inf);
    im->n_ctx = n_ctx;
    im->n_threads = n_threads;
    im->parallel = 1;
    im->cache = malloc((size_t)n_ctx * sizeof *im->cache);
    im->logits = malloc((size_t)n_ctx * (size_t)im->n_vocab * sizeof *im->logits);
    if (!im->cache || !im->logits) {
        lm->impl = im;
        li_free(lm);
        return qe_err_set(err, QE_ENOMEM, "lm: out of memory for %d x %d logits", n_ctx,
                          im->n_vocab);
    }
    lm->ops = &li_ops;
    lm->impl = im;
    lm->generate_many = li_generate_many;
    lm->bos = qe_tokenizer_bos(m->tok);
    lm->add_bos = qe_tokenizer_add_bos(m->tok) && lm->bos >= 0;
    lm->n_ctx = n_ctx;
    qe_strlcpy(lm->name, m->cfg.name[0] ? m->cfg.name : m->path, sizeof lm->name);
    return 0;
}

void qe_lm_free(qe_lm *lm)
{
    if (lm && lm->ops && lm->ops->free)
        lm->ops->free(lm);
}

int qe_lm_encode_context(qe_lm *lm, const char *ctx, int32_t **ids, size_t *n, qe_err *err)
{
    int32_t *t = NULL;
    size_t nt = 0;
    int rc = lm->ops->tokenize(lm, ctx, strlen(ctx), &t, &nt, err);
    if (rc)
        return rc;
    /* a chat template may write the BOS itself: never two */
    size_t extra = lm->add_bos && !(nt > 0 && t[0] == lm->bos) ? 1 : 0;
    int32_t *o = malloc((nt + extra + 1) * sizeof *o);
    if (!o) {
        free(t);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    if (extra)
        o[0] = lm->bos;
    if (nt)
        memcpy(o + extra, t, nt * sizeof *t);
    free(t);
    *ids = o;
    *n = nt + extra;
    return 0;
}

int qe_lm_encode_pair(qe_lm *lm, const char *ctx, const char *cont, int32_t **ctx_ids,
                      size_t *n_ctx, int32_t **cont_ids, size_t *n_cont, qe_err *err)
{
    /* move the context's trailing spaces to the continuation */
    size_t cl = strlen(ctx), k = cl;
    while (k > 0 && ctx[k - 1] == ' ')
        k--;
    size_t ql = strlen(cont);
    char *c2 = malloc(k + 1), *whole = malloc(cl + ql + 1);
    if (!c2 || !whole) {
        free(c2);
        free(whole);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    memcpy(c2, ctx, k);
    c2[k] = '\0';
    memcpy(whole, ctx, cl);
    memcpy(whole + cl, cont, ql + 1);
    int32_t *a = NULL, *w = NULL;
    size_t na = 0, nw = 0;
    int rc = qe_lm_encode_context(lm, c2, &a, &na, err);
    if (rc == 0)
        rc = qe_lm_encode_context(lm, whole, &w, &nw, err);
    free(c2);
    free(whole);
    if (rc) {
        free(a);
        free(w);
        return rc;
    }
    /* continuation = whole[len(context):]; if the tokenizations disagree
     * on the boundary, the common prefix decides where it starts */
    size_t p = 0;
    while (p < na && p < nw && a[p] == w[p])
        p++;
    size_t nc = nw - p;
    int32_t *c = malloc((nc ? nc : 1) * sizeof *c);
    if (!c) {
        free(a);
        free(w);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    if (nc)
        memcpy(c, w + p, nc * sizeof *c);
    free(a);
    /* the context handed back is whole[:p] so that ctx ++ cont == whole */
    *ctx_ids = w;
    *n_ctx = p;
    *cont_ids = c;
    *n_cont = nc;
    return 0;
}
