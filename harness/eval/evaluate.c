/*
 * evaluate.c: the evaluators (perplexity, multiple_choice, generate,
 * exact_output, code_exec) over a qe_lm, per-item outcomes, aggregation
 * with standard errors, and paired comparison (see task.h).
 *
 * Conventions, each written into res->protocol:
 *  - perplexity: lm-eval loglikelihood_rolling: disjoint windows of n_ctx
 *    predicted tokens, the first preceded by BOS, later ones by the one
 *    token before them; every token scored exactly once.
 *  - multiple_choice: sum of log p(delimiter + choice | context); acc =
 *    argmax; acc_norm = argmax of ll / UTF-8 bytes of (delimiter + choice);
 *    acc_norm_chars = lm-eval's ll / characters of the choice.
 *  - generate / exact_output: greedy, stop strings, filters, exact_match.
 *  - code_exec: greedy completion, program template, sandboxed python3.
 *  - chat (o->chat): the context is the chat template's render of [system],
 *    few-shot examples as user/assistant turns, and the prompt as the last
 *    user turn, with add_generation_prompt (lm-eval --apply_chat_template
 *    --fewshot_as_multiturn); choices follow it with no delimiter.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../chat/chat.h"
#include "lm.h"
#include "sandbox.h"
#include "stats.h"
#include "task.h"

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static size_t count_words(const char *s)
{
    /* len(re.split(r"\s+", doc)) as lm-eval: pieces between whitespace runs,
     * including empty leading/trailing pieces */
    size_t n = 1;
    bool in_ws = false;
    for (; *s; s++) {
        bool ws = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r' || *s == '\f' || *s == '\v';
        if (ws && !in_ws)
            n++;
        in_ws = ws;
    }
    return n;
}

static void item_free(qe_item *it, int n_filters)
{
    free(it->response);
    free(it->prompt);
    for (int f = 0; it->filtered && f < n_filters; f++)
        free(it->filtered[f]);
    free(it->filtered);
    free(it->values);
}

void qe_task_result_free(qe_task_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_items; i++)
        item_free(&r->items[i], r->n_filters);
    free(r->items);
    free(r->metrics);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ helpers */

typedef struct ev_ctx {
    qe_lm *lm;
    qe_task *t;
    const qe_eval_opts *o;
    qe_task_result *res;
    size_t cap;
    qe_err *err;
    char **pre; /* (docs.n) or NULL: responses generated ahead in one batch (gen_ahead) */
} ev_ctx;

static qe_item *new_item(ev_ctx *c, size_t doc_index)
{
    qe_task_result *r = c->res;
    if (r->n_items == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 64;
        qe_item *ni = realloc(r->items, nc * sizeof *ni);
        if (!ni)
            return NULL;
        r->items = ni;
        c->cap = nc;
    }
    qe_item *it = &r->items[r->n_items];
    memset(it, 0, sizeof *it);
    it->values = malloc((size_t)(c->t->n_metrics ? c->t->n_metrics : 1) * sizeof *it->values);
    if (!it->values)
        return NULL;
    for (int m = 0; m < c->t->n_metrics; m++)
        it->values[m] = NAN;
    it->ll_margin = NAN;
    it->doc_index = doc_index;
    const cJSON *doc = c->t->docs.items[doc_index];
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    if (!id)
        id = cJSON_GetObjectItemCaseSensitive(doc, "task_id");
    if (cJSON_IsString(id))
        qe_strlcpy(it->doc_id, id->valuestring, sizeof it->doc_id);
    else if (cJSON_IsNumber(id))
        snprintf(it->doc_id, sizeof it->doc_id, "%lld", (long long)id->valuedouble);
    else
        snprintf(it->doc_id, sizeof it->doc_id, "%zu", doc_index);
    r->n_items++;
    return it;
}

/* Record the prompt's text hash, id hash and first ids; log them. */
static void note_prompt(ev_ctx *c, qe_item *it, const char *prompt, const int32_t *ids, size_t n)
{
    char hex[65];
    qe_sha256_hex(prompt, strlen(prompt), hex);
    memcpy(it->prompt_sha, hex, 16);
    it->prompt_sha[16] = '\0';
    uint8_t *le = malloc(n * 4 + 1);
    if (le) {
        for (size_t i = 0; i < n; i++)
            for (int b = 0; b < 4; b++)
                le[4 * i + (size_t)b] = (uint8_t)((uint32_t)ids[i] >> (8 * b));
        qe_sha256_hex(le, n * 4, hex);
        memcpy(it->ids_sha, hex, 16);
        it->ids_sha[16] = '\0';
        free(le);
    }
    it->n_prompt_ids = (int)n;
    it->n_head = (int)(n < QE_ITEM_HEAD_IDS ? n : QE_ITEM_HEAD_IDS);
    memcpy(it->head_ids, ids, (size_t)it->n_head * sizeof *ids);
    if (c->o && c->o->log) {
        int k = c->o->log_ids > 0 ? c->o->log_ids : 16;
        fprintf(c->o->log, "%s doc=%s n_ids=%zu ids=[", c->t->name, it->doc_id, n);
        for (size_t i = 0; i < n && i < (size_t)k; i++)
            fprintf(c->o->log, "%s%d", i ? "," : "", ids[i]);
        fprintf(c->o->log, "%s]\n", n > (size_t)k ? ",..." : "");
    }
}

/* The few-shot examples of doc di: *chosen malloc'd, *got of them. */
static int fewshot_pick(ev_ctx *c, size_t di, size_t **chosen_out, int *got_out)
{
    qe_task *t = c->t;
    int want = t->fewshot_n;
    if ((size_t)want > t->docs.n - 1)
        want = (int)t->docs.n - 1;
    bool first_n = t->fewshot_sampler && !strcmp(t->fewshot_sampler, "first_n");
    uint64_t st = t->fewshot_seed * 0x9E3779B97F4A7C15ull + di;
    size_t *chosen = calloc((size_t)(want > 0 ? want : 1), sizeof *chosen);
    int got = 0;
    for (size_t k = 0; chosen && got < want && k < 100000; k++) {
        size_t j = first_n ? k : (size_t)(qe_stats_rng_next(&st) % t->docs.n);
        if (j >= t->docs.n)
            break;
        bool dup = j == di;
        for (int q = 0; q < got && !dup; q++)
            dup = chosen[q] == j;
        if (!dup)
            chosen[got++] = j;
    }
    if (!chosen)
        return qe_err_set(c->err, QE_ENOMEM, "out of memory");
    *chosen_out = chosen;
    *got_out = got;
    return 0;
}

/* Few-shot prefix for doc di: n examples "prompt + delim + target" joined
 * by the fewshot delimiter and followed by it; "" when n == 0. */
static int fewshot_prefix(ev_ctx *c, size_t di, char **out)
{
    qe_task *t = c->t;
    *out = NULL;
    size_t total = 0, cap = 256;
    size_t *chosen = NULL;
    int got = 0;
    int rc = fewshot_pick(c, di, &chosen, &got);
    if (rc)
        return rc;
    char *buf = malloc(cap);
    if (!buf) {
        free(chosen);
        return qe_err_set(c->err, QE_ENOMEM, "out of memory");
    }
    buf[0] = '\0';
    for (int q = 0; q < got && rc == 0; q++) {
        const cJSON *d = t->docs.items[chosen[q]];
        char *p = NULL, *tg = NULL;
        rc = qe_template_render(t->prompt, d, NULL, NULL, 0, &p, c->err);
        if (rc == 0 && t->output_type == QE_OUT_MULTIPLE_CHOICE && !t->target) {
            tg = strdup(""); /* label-only tasks: no example answer text */
        } else if (rc == 0) {
            rc = qe_template_render(t->target ? t->target : "", d, NULL, NULL, 0, &tg, c->err);
        }
        if (rc == 0) {
            size_t need = total + strlen(p) + strlen(t->target_delimiter) + strlen(tg) +
                          strlen(t->fewshot_delimiter) + 1;
            if (need > cap) {
                char *nb = realloc(buf, need * 2);
                if (!nb)
                    rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
                else {
                    buf = nb;
                    cap = need * 2;
                }
            }
            if (rc == 0) {
                total += (size_t)sprintf(buf + total, "%s%s%s%s", p, t->target_delimiter, tg,
                                         t->fewshot_delimiter);
            }
        }
        free(p);
        free(tg);
    }
    free(chosen);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

static int mc_choices(ev_ctx *c, size_t di, char ***out, int *n_out, int *gold);

static bool chat_on(const ev_ctx *c) { return c->o && c->o->chat; }

/* Chat turns of few-shot example j: the user's text and the answer. */
static int chat_example(ev_ctx *c, size_t j, char **user, char **answer)
{
    qe_task *t = c->t;
    const cJSON *d = t->docs.items[j];
    *user = *answer = NULL;
    int rc = 0;
    if (t->output_type == QE_OUT_MULTIPLE_CHOICE) {
        char **ch = NULL;
        int n = 0, gold = -1;
        if ((rc = mc_choices(c, j, &ch, &n, &gold)))
            return rc;
        if (t->choices_are_contexts) {
            *user = strdup(ch[gold]);
            rc = qe_template_render(t->target, d, NULL, NULL, 0, answer, c->err);
        } else {
            rc = qe_template_render(t->prompt, d, NULL, NULL, 0, user, c->err);
            *answer = strdup(ch[gold]);
        }
        for (int i = 0; i < n; i++)
            free(ch[i]);
        free(ch);
    } else {
        rc = qe_template_render(t->prompt, d, NULL, NULL, 0, user, c->err);
        if (rc == 0)
            rc = qe_template_render(t->target ? t->target : "", d, NULL, NULL, 0, answer, c->err);
    }
    if (rc == 0 && (!*user || !*answer))
        rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
    return rc;
}

static void add_turn(cJSON *msgs, const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
}

/* --chat: the template's render of [system], the few-shot examples as
 * user/assistant turns and `user_last`, with add_generation_prompt. */
static int chat_context(ev_ctx *c, size_t di, const char *user_last, char **out)
{
    const qe_eval_opts *o = c->o;
    size_t *chosen = NULL;
    int got = 0;
    int rc = fewshot_pick(c, di, &chosen, &got);
    if (rc)
        return rc;
    cJSON *ctx = o->chat_vars ? cJSON_Duplicate(o->chat_vars, 1) : cJSON_CreateObject();
    cJSON *msgs = cJSON_CreateArray();
    if (!ctx || !msgs) {
        cJSON_Delete(ctx);
        cJSON_Delete(msgs);
        free(chosen);
        return qe_err_set(c->err, QE_ENOMEM, "out of memory");
    }
    if (o->chat_system)
        add_turn(msgs, "system", o->chat_system);
    for (int q = 0; q < got && rc == 0; q++) {
        char *u = NULL, *a = NULL;
        rc = chat_example(c, chosen[q], &u, &a);
        if (rc == 0) {
            add_turn(msgs, "user", u);
            add_turn(msgs, "assistant", a);
        }
        free(u);
        free(a);
    }
    add_turn(msgs, "user", user_last);
    cJSON_DeleteItemFromObjectCaseSensitive(ctx, "messages");
    cJSON_AddItemToObject(ctx, "messages", msgs);
    if (!cJSON_GetObjectItemCaseSensitive(ctx, "add_generation_prompt"))
        cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    size_t n = 0;
    if (rc == 0 && qe_chat_render(o->chat, ctx, out, &n, c->err))
        rc = qe_err_prefix(c->err, "task %s: doc %zu: chat template", c->t->name, di);
    cJSON_Delete(ctx);
    free(chosen);
    return rc;
}

/* Full context (few-shot + prompt) for doc di; *out malloc'd. */
static int build_context(ev_ctx *c, size_t di, const char *tpl, char **out)
{
    char *fs = NULL, *p = NULL;
    if (chat_on(c)) {
        int rc = qe_template_render(tpl, c->t->docs.items[di], NULL, NULL, 0, &p, c->err);
        if (rc == 0)
            rc = chat_context(c, di, p, out);
        free(p);
        return rc;
    }
    int rc = fewshot_prefix(c, di, &fs);
    if (rc == 0)
        rc = qe_template_render(tpl, c->t->docs.items[di], NULL, NULL, 0, &p, c->err);
    if (rc == 0) {
        size_t n = strlen(fs) + strlen(p) + 1;
        *out = malloc(n);
        if (*out)
            snprintf(*out, n, "%s%s", fs, p);
        else
            rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
    }
    free(fs);
    free(p);
    return rc;
}

/* ---------------------------------------------------- multiple choice */

static int mc_choices(ev_ctx *c, size_t di, char ***out, int *n_out, int *gold)
{
    qe_task *t = c->t;
    const cJSON *doc = t->docs.items[di];
    char **ch = NULL;
    int n = 0, rc = 0;
    *gold = -1;
    char **keys = NULL;
    if (t->n_choice_tpl) {
        n = t->n_choice_tpl;
        ch = calloc((size_t)n, sizeof *ch);
        if (!ch)
            return qe_err_set(c->err, QE_ENOMEM, "out of memory");
        for (int i = 0; i < n && rc == 0; i++)
            rc = qe_template_render(t->choice_tpl[i], doc, NULL, NULL, 0, &ch[i], c->err);
    } else {
        const cJSON *arr = qe_doc_get(doc, t->choices_field);
        if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 2)
            return qe_err_set(c->err, QE_EFORMAT, "task %s: doc %zu: choices.field '%s' is not an "
                              "array of >= 2 elements", t->name, di, t->choices_field);
        n = cJSON_GetArraySize(arr);
        ch = calloc((size_t)n, sizeof *ch);
        keys = calloc((size_t)n, sizeof *keys);
        if (!ch || !keys) {
            free(ch);
            free(keys);
            return qe_err_set(c->err, QE_ENOMEM, "out of memory");
        }
        for (int i = 0; i < n && rc == 0; i++) {
            const cJSON *e = cJSON_GetArrayItem(arr, i);
            const char *txt = t->choice_text ? qe_doc_str(e, t->choice_text)
                                             : (cJSON_IsString(e) ? e->valuestring : NULL);
            if (!txt) {
                rc = qe_err_set(c->err, QE_EFORMAT, "task %s: doc %zu: choice %d has no text%s%s",
                                t->name, di, i, t->choice_text ? " field " : "",
                                t->choice_text ? t->choice_text : "");
                break;
            }
            ch[i] = strdup(txt);
            if (t->choice_key) {
                const char *k = qe_doc_str(e, t->choice_key);
                keys[i] = strdup(k ? k : "");
            }
            if (t->choice_correct && cJSON_IsTrue(qe_doc_get(e, t->choice_correct)))
                *gold = i;
        }
    }
    if (rc == 0 && *gold < 0) {
        char *lab = NULL;
        rc = qe_template_render(t->label ? t->label : t->target, doc, NULL, NULL, 0, &lab,
                                c->err);
        if (rc == 0) {
            if (keys) {
                for (int i = 0; i < n; i++)
                    if (keys[i] && !strcmp(keys[i], lab))
                        *gold = i;
            }
            if (*gold < 0) {
                char *e;
                long v = strtol(lab, &e, 10);
                if (e != lab && *e == '\0' && v >= 0 && v < n)
                    *gold = (int)v;
            }
            if (*gold < 0)
                rc = qe_err_set(c->err, QE_EFORMAT, "task %s: doc %zu: label '%s' is neither a "
                                "choice key nor an index in [0, %d)", t->name, di, lab, n);
        }
        free(lab);
    }
    for (int i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    if (rc) {
        for (int i = 0; i < n; i++)
            free(ch[i]);
        free(ch);
        return rc;
    }
    *out = ch;
    *n_out = n;
    return 0;
}

static int eval_mc_doc(ev_ctx *c, size_t di)
{
    qe_task *t = c->t;
    char **ch = NULL;
    int n = 0, gold = -1;
    int rc = mc_choices(c, di, &ch, &n, &gold);
    if (rc)
        return rc;
    double *ll = calloc((size_t)n, sizeof *ll);
    char *ctx = NULL, *cont_shared = NULL;
    qe_item *it = ll ? new_item(c, di) : NULL;
    if (!it)
        rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
    if (rc == 0 && t->choices_are_contexts)
        rc = qe_template_render(t->target, t->docs.items[di], NULL, NULL, 0, &cont_shared,
                                c->err);
    if (rc == 0 && !t->choices_are_contexts)
        rc = build_context(c, di, t->prompt, &ctx);
    /* chat: the choice starts the assistant's turn, no delimiter (lm-eval) */
    const char *delim = chat_on(c) ? "" : t->target_delimiter;
    for (int i = 0; i < n && rc == 0; i++) {
        char *cx = ctx, *cont = NULL;
        size_t dl = strlen(delim);
        if (t->choices_are_contexts && chat_on(c)) {
            rc = chat_context(c, di, ch[i], &cx);
            if (rc)
                break;
            cont = malloc(dl + strlen(cont_shared) + 1);
            if (cont)
                sprintf(cont, "%s%s", delim, cont_shared);
        } else if (t->choices_are_contexts) {
            /* the choice completes the context; the target is scored */
            char *fs = NULL;
            rc = fewshot_prefix(c, di, &fs);
            if (rc)
                break;
            size_t m = strlen(fs) + strlen(ch[i]) + 1;
            cx = malloc(m);
            if (cx)
                snprintf(cx, m, "%s%s", fs, ch[i]);
            free(fs);
            cont = malloc(dl + strlen(cont_shared) + 1);
            if (cont)
                sprintf(cont, "%s%s", delim, cont_shared);
        } else {
            cont = malloc(dl + strlen(ch[i]) + 1);
            if (cont)
                sprintf(cont, "%s%s", delim, ch[i]);
        }
        if (!cx || !cont) {
            rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
        } else {
            int32_t *ci = NULL, *ki = NULL;
            size_t nci = 0, nki = 0;
            rc = qe_lm_encode_pair(c->lm, cx, cont, &ci, &nci, &ki, &nki, c->err);
            if (rc == 0 && (nci == 0 || nki == 0))
                rc = qe_err_set(c->err, QE_EFORMAT, "task %s: doc %s: choice %d gives %zu context "
                                "and %zu continuation tokens (need >= 1 each)", t->name,
                                it->doc_id, i, nci, nki);
            if (rc == 0 && i == 0)
                note_prompt(c, it, cx, ci, nci);
            bool greedy;
            if (rc == 0)
                rc = c->lm->ops->loglik(c->lm, ci, nci, ki, nki, &ll[i], &greedy, c->err);
            if (rc == 0 && i == gold) {
                it->nll = -ll[i];
                it->n_tokens = (double)nki;
                it->n_bytes = (double)strlen(cont);
            }
            free(ci);
            free(ki);
        }
        if (cx != ctx)
            free(cx);
        free(cont);
    }
    if (rc == 0) {
        int a = 0, an = 0, ac = 0;
        for (int i = 1; i < n; i++) {
            if (ll[i] > ll[a])
                a = i;
        }
        double best_n = -INFINITY, best_c = -INFINITY;
        for (int i = 0; i < n; i++) {
            const char *txt = t->choices_are_contexts ? cont_shared : ch[i];
            size_t nb = strlen(delim) + strlen(txt);
            size_t nc = utf8_chars(txt);
            double vn = ll[i] / (double)(nb ? nb : 1), vc = ll[i] / (double)(nc ? nc : 1);
            if (vn > best_n) {
                best_n = vn;
                an = i;
            }
            if (vc > best_c) {
                best_c = vc;
                ac = i;
            }
        }
        for (int m = 0; m < t->n_metrics; m++) {
            const char *b = t->metrics[m].base;
            int pick = !strcmp(b, "acc") ? a : !strcmp(b, "acc_norm") ? an : ac;
            it->values[m] = pick == gold ? 1.0 : 0.0;
        }
        it->response = strdup(ch[a]);
        /* the continuous paired statistic behind acc: how far the gold
         * answer leads (or trails) the best wrong one */
        double best_wrong = -INFINITY;
        for (int i = 0; i < n; i++)
            if (i != gold && ll[i] > best_wrong)
                best_wrong = ll[i];
        if (gold >= 0 && gold < n && n >= 2)
            it->ll_margin = ll[gold] - best_wrong;
    }
    free(ctx);
    free(cont_shared);
    free(ll);
    for (int i = 0; i < n; i++)
        free(ch[i]);
    free(ch);
    return rc;
}

/* ----------------------------------------------------------- generate */

static int generate_doc(ev_ctx *c, size_t di, qe_item **itp)
{
    qe_task *t = c->t;
    char *ctx = NULL;
    int rc = build_context(c, di, t->prompt, &ctx);
    if (rc)
        return rc;
    qe_item *it = new_item(c, di);
    if (!it) {
        free(ctx);
        return qe_err_set(c->err, QE_ENOMEM, "out of memory");
    }
    int32_t *ids = NULL;
    size_t n = 0;
    rc = qe_lm_encode_context(c->lm, ctx, &ids, &n, c->err);
    if (rc == 0) {
        note_prompt(c, it, ctx, ids, n);
        if (c->pre && c->pre[di]) {
            it->response = c->pre[di];
            c->pre[di] = NULL;
        } else {
            rc = c->lm->ops->generate(c->lm, ids, n, t->max_tokens,
                                      (const char *const *)t->until, t->n_until, &it->response,
                                      c->err);
        }
    }
    free(ids);
    it->prompt = ctx; /* kept: teacher forcing scores the reference's output after it */
    if (rc == 0 && t->n_filters) {
        it->filtered = calloc((size_t)t->n_filters, sizeof *it->filtered);
        if (!it->filtered)
            rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
        for (int f = 0; f < t->n_filters && rc == 0; f++)
            rc = qe_filter_apply(&t->filters[f], (const char *const *)t->until, t->n_until,
                                 it->response, &it->filtered[f], c->err);
    }
    *itp = it;
    return rc;
}

static int eval_gen_doc(ev_ctx *c, size_t di)
{
    qe_item *it = NULL;
    int rc = generate_doc(c, di, &it);
    if (rc)
        return rc;
    char *ref = NULL;
    rc = qe_template_render(c->t->target, c->t->docs.items[di], NULL, NULL, 0, &ref, c->err);
    for (int m = 0; m < c->t->n_metrics && rc == 0; m++) {
        const qe_metric_def *md = &c->t->metrics[m];
        const char *pred = md->filter >= 0 ? it->filtered[md->filter] : it->response;
        bool ok = false;
        rc = qe_exact_match(&c->t->em, pred, ref, &ok, c->err);
        it->values[m] = ok ? 1.0 : 0.0;
    }
    free(ref);
    return rc;
}

/* --------------------------------------------------------- perplexity */

static int eval_ppl_doc(ev_ctx *c, size_t di, size_t *budget)
{
    qe_task *t = c->t;
    char *text = NULL;
    int rc = qe_template_render(t->prompt, t->docs.items[di], NULL, NULL, 0, &text, c->err);
    if (rc)
        return rc;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = c->lm->ops->tokenize(c->lm, text, strlen(text), &ids, &n, c->err);
    double doc_bytes = (double)strlen(text), doc_words = (double)count_words(text);
    size_t max_len = (size_t)c->lm->n_ctx;
    int32_t prefix = c->lm->bos >= 0 ? c->lm->bos : (n ? ids[0] : 0);
    for (size_t pos = 0; rc == 0 && pos < n && *budget > 0; (*budget)--) {
        size_t len = n - pos < max_len ? n - pos : max_len;
        int32_t ctx1 = pos == 0 ? prefix : ids[pos - 1];
        qe_item *it = new_item(c, di);
        if (!it) {
            rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
            break;
        }
        double ll = 0;
        if (pos == 0)
            note_prompt(c, it, text, ids, n < 64 ? n : 64);
        rc = c->lm->ops->loglik(c->lm, &ctx1, 1, ids + pos, len, &ll, NULL, c->err);
        it->nll = -ll;
        it->n_tokens = (double)len;
        it->n_bytes = doc_bytes * (double)len / (double)n;
        it->n_words = doc_words * (double)len / (double)n;
        snprintf(it->doc_id + strlen(it->doc_id), sizeof it->doc_id - strlen(it->doc_id),
                 "#w%zu", pos / max_len);
        pos += len;
        if (rc == 0 && c->o && c->o->on_item && (rc = c->o->on_item(c->o->ud, t, it)))
            break;
    }
    free(ids);
    free(text);
    return rc;
}

/* -------------------------------------------------------------- code */

/* Generate the responses of the selected docs in one generate_many call
 * (continuous batching in the model) into c->pre, when the model has it. */
static int gen_ahead(ev_ctx *c, const size_t *sel, size_t n_sel)
{
    if (!c->lm->generate_many || n_sel == 0)
        return 0;
    qe_task *t = c->t;
    int32_t **ids = calloc(n_sel, sizeof *ids);
    size_t *n = calloc(n_sel, sizeof *n);
    char **out = calloc(n_sel, sizeof *out);
    c->pre = calloc(t->docs.n, sizeof *c->pre);
    int rc = ids && n && out && c->pre ? 0 : qe_err_set(c->err, QE_ENOMEM, "out of memory");
    for (size_t k = 0; k < n_sel && rc == 0; k++) {
        char *ctx = NULL;
        if ((rc = build_context(c, sel[k], t->prompt, &ctx)) == 0)
            rc = qe_lm_encode_context(c->lm, ctx, &ids[k], &n[k], c->err);
        free(ctx);
    }
    if (rc == 0)
        rc = c->lm->generate_many(c->lm, (const int32_t *const *)ids, n, n_sel,
                                       t->max_tokens, (const char *const *)t->until, t->n_until,
                                       out, c->err);
    for (size_t k = 0; k < n_sel && rc == 0; k++)
        c->pre[sel[k]] = out[k];
    for (size_t k = 0; ids && k < n_sel; k++)
        free(ids[k]);
    free(ids);
    free(n);
    free(out);
    return rc;
}

static void gen_ahead_free(ev_ctx *c)
{
    for (size_t i = 0; c->pre && i < c->t->docs.n; i++)
        free(c->pre[i]);
    free(c->pre);
    c->pre = NULL;
}

/* pr (or NULL) counts the completions generated; running them follows. */
static int eval_code(ev_ctx *c, const size_t *sel, size_t n_sel, qe_progress *pr)
{
    qe_task *t = c->t;
    char py[512];
    qe_err pe = {0};
    if (qe_sandbox_find_python(py, sizeof py, &pe) != 0) {
        snprintf(c->res->skipped, sizeof c->res->skipped, "skipped: python3 not found");
        return 0;
    }
    size_t first = c->res->n_items;
    int rc = gen_ahead(c, sel, n_sel);
    for (size_t k = 0; k < n_sel && rc == 0; k++) {
        qe_item *it = NULL;
        rc = generate_doc(c, sel[k], &it);
        if (pr)
            qe_progress_update(pr, k + 1);
    }
    size_t n = c->res->n_items - first;
    char **progs = calloc(n ? n : 1, sizeof *progs);
    qe_sandbox_result *sr = calloc(n ? n : 1, sizeof *sr);
    if (rc == 0 && (!progs || !sr))
        rc = qe_err_set(c->err, QE_ENOMEM, "out of memory");
    for (size_t k = 0; k < n && rc == 0; k++) {
        qe_item *it = &c->res->items[first + k];
        const char *comp = t->n_filters ? it->filtered[0] : it->response;
        const char *xn[] = {"completion"};
        const char *xv[] = {comp};
        rc = qe_template_render(t->program, t->docs.items[it->doc_index], xn, xv, 1, &progs[k],
                                c->err);
    }
    if (rc == 0 && n) {
        qe_sandbox_opts so = {0};
        so.timeout_s = t->code_timeout_s;
        int par = c->o && c->o->code_parallel > 0 ? c->o->code_parallel : 2;
        rc = qe_sandbox_run_many(py, &so, (const char *const *)progs, n, par, sr, c->err);
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        qe_item *it = &c->res->items[first + k];
        it->status = sr[k].status;
        for (int m = 0; m < t->n_metrics; m++)
            it->values[m] = sr[k].status == QE_SB_PASS ? 1.0 : 0.0;
    }
    for (size_t k = 0; progs && k < n; k++)
        free(progs[k]);
    free(progs);
    free(sr);
    return rc;
}

/* ---------------------------------------------------------- aggregate */

static void aggregate(const qe_task *t, qe_task_result *r)
{
    r->n_metrics = t->n_metrics;
    r->metrics = calloc((size_t)(t->n_metrics ? t->n_metrics : 1), sizeof *r->metrics);
    if (!r->metrics)
        return;
    double *v = malloc((r->n_items ? r->n_items : 1) * sizeof *v);
    for (int m = 0; v && m < t->n_metrics; m++) {
        const qe_metric_def *md = &t->metrics[m];
        qe_metric_result *mr = &r->metrics[m];
        qe_strlcpy(mr->name, md->name, sizeof mr->name);
        mr->fail_rate = NAN;
        if (md->agg == QE_AGG_MEAN) {
            size_t k = 0, nfail = 0, ok = 0;
            for (size_t i = 0; i < r->n_items; i++) {
                double x = r->items[i].values[m];
                if (isnan(x))
                    continue;
                v[k++] = x;
                ok += x != 0;
                if (md->filter >= 0 && r->items[i].filtered) {
                    const qe_filter *f = &t->filters[md->filter];
                    const char *fb = "[invalid]";
                    for (int s = 0; s < f->n_steps; s++)
                        if (f->steps[s].kind == QE_FILTER_REGEX && f->steps[s].fallback)
                            fb = f->steps[s].fallback;
                    nfail += !strcmp(r->items[i].filtered[md->filter], fb);
                }
            }
            qe_stats_mean_se(v, k, &mr->value, &mr->se);
            mr->n = k;
            if (md->is_accuracy)
                qe_stats_wilson(ok, k, 1.96, &mr->lo, &mr->hi);
            else {
                mr->lo = mr->value - 1.96 * mr->se;
                mr->hi = mr->value + 1.96 * mr->se;
            }
            if (md->filter >= 0 && k)
                mr->fail_rate = (double)nfail / (double)k;
        } else {
            /* ratio estimator: R = sum nll / sum units; se(R) by the delta
             * method over windows: sqrt(sum (nll_i - R u_i)^2 / (n (n-1))) / mean(u) */
            double sn = 0, su = 0;
            size_t n = r->n_items;
            for (size_t i = 0; i < n; i++) {
                const qe_item *it = &r->items[i];
                double u = md->agg == QE_AGG_PPL_TOKEN ? it->n_tokens
                           : md->agg == QE_AGG_PPL_WORD ? it->n_words : it->n_bytes;
                v[i] = u;
                sn += it->nll;
                su += u;
            }
            double R = su > 0 ? sn / su : NAN, ss = 0;
            for (size_t i = 0; i < n; i++)
                ss += (r->items[i].nll - R * v[i]) * (r->items[i].nll - R * v[i]);
            double se_r = n > 1 ? sqrt(ss / ((double)n * (double)(n - 1))) / (su / (double)n) : 0;
            mr->n = n;
            if (md->agg == QE_AGG_BPB) {
                mr->value = R / log(2.0);
                mr->se = se_r / log(2.0);
            } else {
                mr->value = exp(R);
                mr->se = mr->value * se_r;
            }
            mr->lo = mr->value - 1.96 * mr->se;
            mr->hi = mr->value + 1.96 * mr->se;
        }
    }
    free(v);
}

/* -------------------------------------------------------------- entry */

int qe_eval_task(qe_lm *lm, qe_task *t, const qe_eval_opts *o, qe_task_result *res, qe_err *err)
{
    memset(res, 0, sizeof *res);
    res->n_filters = t->n_filters;
    int rc = qe_task_load_data(t, err);
    if (rc)
        return rc;
    double t0 = qe_now();
    ev_ctx c = {lm, t, o, res, 0, err, NULL};
    size_t limit = o && o->limit ? o->limit : (size_t)-1;
    int sn = o && o->shard_n > 1 ? o->shard_n : 1, si = o && o->shard_n > 1 ? o->shard_i : 0;
    size_t *sel = malloc((t->docs.n ? t->docs.n : 1) * sizeof *sel), n_sel = 0;
    if (!sel)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    bool ppl = t->output_type == QE_OUT_PERPLEXITY;
    for (size_t i = 0; i < t->docs.n && (ppl || n_sel < limit); i++)
        if ((int)(i % (size_t)sn) == si)
            sel[n_sel++] = i;
    switch (t->output_type) {
    case QE_OUT_PERPLEXITY:
        snprintf(res->protocol, sizeof res->protocol, "lm-eval loglikelihood_rolling: disjoint "
                 "windows of %d tokens, %s prefix, every token scored once", lm->n_ctx,
                 lm->bos >= 0 ? "BOS" : "first-token");
        break;
    case QE_OUT_MULTIPLE_CHOICE:
        snprintf(res->protocol, sizeof res->protocol, "loglikelihood of delimiter+choice; "
                 "acc_norm = ll / UTF-8 bytes; %d-shot; %s", t->fewshot_n,
                 lm->add_bos ? "BOS" : "no BOS");
        break;
    default:
        snprintf(res->protocol, sizeof res->protocol, "greedy, max %d tokens, %d stop strings, "
                 "%d-shot; %s", t->max_tokens, t->n_until, t->fewshot_n,
                 lm->add_bos ? "BOS" : "no BOS");
        break;
    }
    bool parse_special_before = lm->parse_special;
    if (o && o->chat && !ppl) {
        /* the template's special tokens are tokens; its sha256 is part of the protocol */
        lm->parse_special = true;
        size_t pl = strlen(res->protocol);
        snprintf(res->protocol + pl, sizeof res->protocol - pl, "; chat template %.16s%s",
                 o->chat->sha256, o->chat_system ? " + system" : "");
    }
    qe_progress pr;
    bool prog = o && o->progress;
    if (prog)
        qe_progress_start(&pr, t->name, n_sel);
    if (t->output_type == QE_OUT_CODE_EXEC) {
        rc = eval_code(&c, sel, n_sel, prog ? &pr : NULL);
        for (size_t i = 0; rc == 0 && o && o->on_item && i < res->n_items; i++)
            rc = o->on_item(o->ud, t, &res->items[i]);
    } else {
        size_t budget = limit;
        if (t->output_type == QE_OUT_GENERATE || t->output_type == QE_OUT_EXACT_OUTPUT)
            rc = gen_ahead(&c, sel, n_sel);
        for (size_t k = 0; k < n_sel && rc == 0; k++) {
            size_t before = res->n_items;
            if (ppl) {
                if (budget == 0)
                    break;
                rc = eval_ppl_doc(&c, sel[k], &budget);
            } else if (t->output_type == QE_OUT_MULTIPLE_CHOICE) {
                rc = eval_mc_doc(&c, sel[k]);
            } else {
                rc = eval_gen_doc(&c, sel[k]);
            }
            if (rc == 0 && !ppl && o && o->on_item && res->n_items > before)
                rc = o->on_item(o->ud, t, &res->items[res->n_items - 1]);
            if (prog)
                qe_progress_update(&pr, k + 1);
        }
    }
    if (prog)
        qe_progress_end(&pr);
    if (o && o->chat)
        lm->parse_special = parse_special_before;
    gen_ahead_free(&c);
    free(sel);
    if (rc == 0)
        aggregate(t, res);
    res->wall_s = qe_now() - t0;
    return rc;
}

int qe_task_compare(const qe_task *t, const qe_task_result *ref, const qe_task_result *cand,
                    int m, qe_paired *out, qe_err *err)
{
    if (m < 0 || m >= t->n_metrics)
        return qe_err_set(err, QE_EINVAL, "compare: metric index %d out of range", m);
    if (ref->n_items != cand->n_items)
        return qe_err_set(err, QE_EINVAL, "compare %s: %zu reference items vs %zu candidate items "
                          "(run both with the same --limit/shard)", t->name, ref->n_items,
                          cand->n_items);
    size_t n = ref->n_items;
    for (size_t i = 0; i < n; i++)
        if (ref->items[i].doc_index != cand->items[i].doc_index)
            return qe_err_set(err, QE_EINVAL, "compare %s: item %zu is doc %zu in the reference "
                              "but doc %zu in the candidate", t->name, i, ref->items[i].doc_index,
                              cand->items[i].doc_index);
    if (n == 0)
        return qe_err_set(err, QE_EINVAL, "compare %s: no items", t->name);
    const qe_metric_def *md = &t->metrics[m];
    if (md->is_accuracy) {
        unsigned char *a = malloc(n), *b = malloc(n);
        if (!a || !b) {
            free(a);
            free(b);
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            a[i] = ref->items[i].values[m] != 0;
            b[i] = cand->items[i].values[m] != 0;
        }
        qe_stats_paired_acc(a, b, n, out);
        free(a);
        free(b);
        return 0;
    }
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        bool per_tok = md->agg != QE_AGG_MEAN;
        a[i] = per_tok ? ref->items[i].nll / ref->items[i].n_tokens : ref->items[i].values[m];
        b[i] = per_tok ? cand->items[i].nll / cand->items[i].n_tokens : cand->items[i].values[m];
    }
    int rc = qe_stats_paired_bootstrap(a, b, n, 1000, 1234, out, err);
    free(a);
    free(b);
    return rc;
}
