/*
 * test_eval.c: harness/eval task specs, filters, evaluators.
 *  - GSM8K / MGSM extraction: 32 hand-checked cases through the shipped
 *    specs' filters and exact_match options (lm-eval semantics);
 *  - every shipped spec loads; bad specs fail with the JSON path;
 *  - a task added as data alone (tests/data/tiny_mc.{json,tsv}) runs on a
 *    fake LM with hand-computed results;
 *  - tinystories-cloze on stories260K F32 reproduces the independent
 *    reference (acc 0.435, acc_norm 0.560 on the first 200 items) +- 0.01.
 */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "../harness/eval/lm.h"
#include "../harness/eval/stats.h"
#include "../harness/eval/task.h"
#include "../harness/eval/teacher.h"
#include "../harness/infer/infer.h"
#include "../harness/model/model.h"
#include "test.h"

/* ---------------------------------------------------------- filters */

typedef struct fcase {
    const char *resp, *target;
    const char *f0, *f1;   /* expected filter outputs (strict/remove_ws, flexible) */
    int em0, em1;          /* expected exact_match */
} fcase;

/* GSM8K: target is the reference answer text; regexes_to_ignore strip
 * everything up to "#### ", commas, $ and a final period. */
static const fcase gsm[] = {
    {"The answer is 5.\n#### 5", "x\n#### 5", "5", "5", 1, 1},
    {"#### 1,234", "#### 1234", "1,234", "1,234", 1, 1},
    {"#### $18", "#### 18", "[invalid]", "$18", 0, 1},
    {"#### -7", "#### -7", "-7", "-7", 1, 1},
    {"She has 3 apples and 4 oranges, total 7.", "#### 7", "[invalid]", "7.", 0, 1},
    {"No number here", "#### 3", "[invalid]", "[invalid]", 0, 0},
    {"#### 10.5", "#### 10.5", "10.5", "10.5", 1, 1},
    {"#### 42\n", "#### 42", "42", "42", 1, 1},
    {"The answer is 1,000,000", "#### 1000000", "[invalid]", "1,000,000", 0, 1},
    {"#### 5 apples", "#### 5", "5", "5", 1, 1},
    {"#### 3.\n", "#### 3", "3.", "3.", 1, 1},
    {"x = 2, y = 3", "#### 3", "[invalid]", "3", 0, 1},
    {"#### 12 and #### 13", "#### 13", "12", "13", 0, 1},
    {"-5 degrees", "#### -5", "[invalid]", "-5", 0, 1},
    {"Costs $1,200.50 total", "#### 1200.50", "[invalid]", "$1,200.50", 0, 1},
    {"Answer: 0", "#### 0", "[invalid]", "0", 0, 1},
    {"The year 2023 had 365 days", "#### 365", "[invalid]", "365", 0, 1},
    {"#### -0.5", "#### -0.5", "-0.5", "-0.5", 1, 1},
    {"a.b", "#### 1", "[invalid]", "[invalid]", 0, 0},
    {"....", "#### 5", "[invalid]", "....", 0, 0},
    {"#### 7\n#### 8", "#### 8", "7", "8", 0, 1},
    {"1 2 3 4 5", "#### 5", "[invalid]", "5", 0, 1},
    {"It is 50%.", "#### 50", "[invalid]", "50", 0, 1},
    {"", "#### 1", "[invalid]", "[invalid]", 0, 0},
    {"#### 72\n\nQuestion: more", "#### 72", "72", "72", 1, 1},
};

/* MGSM direct (de): remove_whitespace drops ONE leading space; exact
 * match ignores case and ASCII punctuation. */
static const fcase mgsm[] = {
    {" 18", "18", "18", "18", 1, 1},
    {"  18", "18", " 18", "18", 0, 1},
    {" 1,234", "1234", "1,234", "1,234", 1, 1},
    {" Die Antwort ist 18.", "18", "Die Antwort ist 18.", "18.", 0, 1},
    {" -3", "-3", "-3", "-3", 1, 1},
    {" 18 Eier", "18", "18 Eier", "18", 0, 1},
    {"答案是18。", "18", "答案是18。", "18", 0, 1},
};

static void run_cases(const char *task, const fcase *cs, size_t n)
{
    qe_err e = {0};
    qe_task *t = qe_task_load_name(task, &e);
    REQUIRE(t, "%s: %s", task, e.msg);
    REQUIRE(t->n_filters == 2 && t->n_metrics == 2, "%s: %d filters", task, t->n_filters);
    for (size_t i = 0; i < n; i++) {
        char *f[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            CHECK(qe_filter_apply(&t->filters[k], (const char *const *)t->until, t->n_until,
                                  cs[i].resp, &f[k], &e) == 0);
            const char *want = k ? cs[i].f1 : cs[i].f0;
            CHECKF(f[k] && !strcmp(f[k], want), "%s case %zu filter %s: got '%s' want '%s'",
                   task, i, t->filters[k].name, f[k] ? f[k] : "(null)", want);
            bool m = false;
            CHECK(qe_exact_match(&t->em, f[k], cs[i].target, &m, &e) == 0);
            CHECKF(m == ((k ? cs[i].em1 : cs[i].em0) != 0), "%s case %zu filter %s: em=%d",
                   task, i, t->filters[k].name, m);
            free(f[k]);
        }
    }
    qe_task_free(t);
}

TEST(gsm8k_filters)
{
    run_cases("gsm8k", gsm, sizeof gsm / sizeof gsm[0]);
}

TEST(mgsm_filters)
{
    run_cases("mgsm-de", mgsm, sizeof mgsm / sizeof mgsm[0]);
}

/* ------------------------------------------------------------- specs */

TEST(all_specs_load)
{
    char **names;
    int n;
    qe_err e = {0};
    int rq_ = qe_task_list(&names, &n, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    CHECKF(n >= 45, "only %d specs", n);
    for (int i = 0; i < n; i++) {
        qe_task *t = qe_task_load_name(names[i], &e);
        CHECKF(t != NULL, "%s: %s", names[i], e.msg);
        qe_task_free(t);
        free(names[i]);
    }
    free(names);
    const char *suites[] = {"smoke", "default", "full"};
    for (int i = 0; i < 3; i++) {
        qe_suite *s = qe_suite_load_name(suites[i], &e);
        CHECKF(s && s->n > 0, "%s: %s", suites[i], e.msg);
        /* default caps qeval run's text (sized to the 1 h budget), the others do not */
        if (s)
            CHECKF(s->text_chunks == (i == 1 ? 8 : 0), "%s: text_chunks %d", suites[i],
                   s->text_chunks);
        for (int k = 0; s && k < s->n; k++) {
            qe_task *t = qe_task_load_name(s->entries[k].task, &e);
            CHECKF(t != NULL, "suite %s: %s", suites[i], e.msg);
            qe_task_free(t);
        }
        qe_suite_free(s);
    }
}

TEST(bad_specs)
{
    qe_err e = {0};
    qe_task *t = qe_task_load("tests/data/bad_regex.json", "tests/data", &e);
    CHECK(!t && e.code == QE_EFORMAT);
    CHECKF(strstr(e.msg, "bad_regex.json: filters.strict[0].regex: PCRE2 error at offset 9"),
           "%s", e.msg);
    t = qe_task_load("tests/data/bad_key.json", "tests/data", &e);
    CHECK(!t && e.code == QE_EJSON);
    CHECKF(strstr(e.msg, "bad_key.json: data.colums: unknown key"), "%s", e.msg);
    t = qe_task_load("tests/data/bad_metric.json", "tests/data", &e);
    CHECKF(!t && strstr(e.msg, "metrics[1]: unknown metric 'f1'"), "%s", e.msg);
    t = qe_task_load("tests/data/bad_filter.json", "tests/data", &e);
    CHECKF(!t && strstr(e.msg, "filters.x[0].function: unknown filter 'majority_vote'"), "%s",
           e.msg);
    t = qe_task_load("tests/data/missing.json", "tests/data", &e);
    CHECK(!t && e.code == QE_EIO);
    qe_suite *su = qe_suite_load("tests/data/bad_suite.json", &e);
    CHECKF(!su && strstr(e.msg, "bad_suite.json: text_chunks: expected a number in [0, 1e+06]"),
           "%s", e.msg);
    qe_suite_free(su);
}

/* ----------------------------------------------------------- fake LM */

/* Bytes as tokens; log p(token) = -1 for every token, so a continuation's
 * ll = -(its byte count), and ll / bytes = -1 for every choice (acc_norm
 * ties go to the first choice, as argmax does). */
static int fk_tok(qe_lm *lm, const char *s, size_t n, int32_t **ids, size_t *nn, qe_err *err)
{
    (void)lm;
    (void)err;
    *ids = malloc((n ? n : 1) * sizeof **ids);
    for (size_t i = 0; i < n; i++)
        (*ids)[i] = (unsigned char)s[i];
    *nn = n;
    return 0;
}
static int fk_ll(qe_lm *lm, const int32_t *c, size_t nc, const int32_t *k, size_t nk, double *ll,
                 bool *g, qe_err *err)
{
    (void)lm;
    (void)c;
    (void)nc;
    (void)k;
    (void)err;
    *ll = -(double)nk;
    if (g)
        *g = false;
    return 0;
}
static int fk_gen(qe_lm *lm, const int32_t *p, size_t np, int mx, const char *const *u, int nu,
                  char **out, qe_err *err)
{
    (void)lm; (void)p; (void)np; (void)mx; (void)u; (void)nu; (void)err;
    *out = strdup(" The answer is 42.\n#### 42");
    return 0;
}
static const qe_lm_ops fk_ops = {fk_tok, NULL, fk_ll, fk_gen, NULL};

static int n_cb;
static int count_cb(void *ud, const qe_task *t, const qe_item *it)
{
    (void)ud;
    (void)t;
    (void)it;
    n_cb++;

    return 0;
}

TEST(task_as_data_fake_lm)
{
    qe_err e = {0};
    qe_task *t = qe_task_load("tests/data/tiny_mc.json", "tests/data", &e);
    REQUIRE(t, "%s", e.msg);
    qe_lm lm = {.ops = &fk_ops, .bos = 1, .add_bos = true, .n_ctx = 128};
    qe_task_result r;
    qe_eval_opts o = {.on_item = count_cb};
    n_cb = 0;
    int rq_ = qe_eval_task(&lm, t, &o, &r, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    CHECKF(n_cb == 4 && r.n_items == 4, "n_cb=%d n_items=%zu", n_cb, r.n_items);
    /* ll = -(1 + len(choice)) (delimiter " " + choice):
     *  Sky: blue -5, greenish -9 -> 0 = gold 0 (1);   norm tie -> 0 (1)
     *  Two: four -5, 3 -2        -> 1 != 0 (0);        norm tie -> 0 (1)
     *  Pick: x -2, yyyy -5       -> 0 != 1 (0);        norm tie -> 0 (0)
     *  Capital: Paris -6, Rome -5 -> 1 = 1 (1);        norm tie -> 0 (0)
     * acc = .5, acc_norm = .5; se of {1,0,0,1} = sqrt(1/3)/2 = .2886751 */
    REQUIRE(r.n_metrics == 2, "n_metrics=%d", r.n_metrics);
    CHECKF(fabs(r.metrics[0].value - 0.5) < 1e-12, "acc=%g", r.metrics[0].value);
    CHECKF(fabs(r.metrics[0].se - 0.2886751) < 1e-6, "se=%g", r.metrics[0].se);
    CHECKF(fabs(r.metrics[1].value - 0.5) < 1e-12, "acc_norm=%g", r.metrics[1].value);
    CHECK(r.items[0].values[0] == 1 && r.items[1].values[0] == 0 && r.items[1].values[1] == 1);
    /* gold nll of item 0 = 5 (" blue"), BOS first in the logged ids */
    CHECK(r.items[0].nll == 5.0 && r.items[0].head_ids[0] == 1 && r.items[0].head_ids[1] == 'Q');
    CHECK(strcmp(t->data_sha256, t->sha256) == 0);
    /* paired comparison against itself: no discordant pairs, p = 1 */
    qe_paired pr;
    CHECK(qe_task_compare(t, &r, &r, 0, &pr, &e) == 0 && pr.p == 1.0 && pr.delta == 0);
    qe_task_result_free(&r);
    qe_task_free(t);
}

TEST(generate_fake_lm)
{
    qe_err e = {0};
    qe_task *t = qe_task_load_name("gsm8k", &e);
    REQUIRE(t, "%s", e.msg);
    qe_lm lm = {.ops = &fk_ops, .bos = 1, .add_bos = true, .n_ctx = 4096};
    qe_task_result r;
    qe_eval_opts o = {.limit = 3};
    int rq_ = qe_eval_task(&lm, t, &o, &r, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    /* the canned answer "#### 42" is wrong for the first three GSM8K
     * items (18, 3, 70000): strict and flexible both parse "42" -> 0 */
    CHECK(r.n_items == 3 && r.n_metrics == 2);
    CHECK(r.metrics[0].value == 0 && r.metrics[1].value == 0);
    CHECK(r.metrics[0].fail_rate == 0 && r.metrics[1].fail_rate == 0);
    CHECK(!strcmp(r.items[0].filtered[0], "42") && !strcmp(r.items[0].filtered[1], "42"));
    /* 5-shot prompt: contains 5 "Question:" blocks + the item's */
    qe_task_result_free(&r);
    qe_task_free(t);
}

/* ---------------------------------------------------- real model */

TEST(tinystories_cloze_stories260k)
{
    qe_err e = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &e);
    REQUIRE(m, "model: %s", e.msg);
    qe_lm lm;
    int rq_ = qe_lm_infer_init(&lm, m, 512, 0, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    qe_task *t = qe_task_load_name("tinystories-cloze", &e);
    REQUIRE(t, "%s", e.msg);
    qe_task_result r;
    qe_eval_opts o = {.limit = 200};
    double t0 = qe_now();
    int rc = qe_eval_task(&lm, t, &o, &r, &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc == 0) {
        fprintf(stdout, "  tinystories-cloze 200: acc %.3f acc_norm %.3f (%.1f s, %llu tokens "
                "evaluated, %llu reused)\n", r.metrics[0].value, r.metrics[1].value,
                qe_now() - t0, (unsigned long long)lm.n_tokens_eval,
                (unsigned long long)lm.n_tokens_reused);
        /* independent numpy reference (SOURCE.txt): 0.435 / 0.560 */
        CHECKF(fabs(r.metrics[0].value - 0.435) <= 0.01, "acc=%.3f", r.metrics[0].value);
        CHECKF(fabs(r.metrics[1].value - 0.560) <= 0.01, "acc_norm=%.3f", r.metrics[1].value);
        /* the margin statistic agrees with acc item by item: the gold answer
         * leads every wrong one exactly when acc picks it */
        size_t bad = 0, nm = 0;
        for (size_t i = 0; i < r.n_items; i++) {
            double mg = r.items[i].ll_margin;
            nm += isfinite(mg);
            bad += isfinite(mg) && ((mg > 0) != (r.items[i].values[0] == 1.0));
        }
        CHECKF(nm == r.n_items && bad == 0, "margins %zu of %zu, %zu disagree with acc", nm,
               r.n_items, bad);
        qe_task_result_free(&r);
    }
    qe_task_free(t);
    qe_lm_free(&lm);
    qe_model_free(m);
}

/* Teacher forcing (harness/eval/teacher.h): the reference against itself
 * gives KLD 0, top-1 100 % and no disagreement; against a Q4_K_M file the
 * per-token values equal an independent computation from qe_infer_eval's
 * full logits. */
TEST(teacher_forced_divergence)
{
    const char *qp = test_asset("testdata/llamacpp/stories260K-Q4_K_M.gguf");
    if (access(qp, R_OK) != 0) {
        fprintf(stdout, "  skipped: %s absent\n", qp);
        return;
    }
    qe_err e = {0};
    qe_model *ref = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &e);
    REQUIRE(ref, "model: %s", e.msg);
    qe_model *q = qe_model_load(qp, NULL, &e);
    REQUIRE(q, "model: %s", e.msg);
    int32_t ctx[6] = {1, 403, 261, 1099 % 512, 300, 15}, cont[40];
    for (int i = 0; i < 40; i++)
        cont[i] = (int32_t)((37 * i + 11) % 500 + 3);
    qe_tf *tf = qe_tf_new(ref, ref, 128, 1, &e);
    REQUIRE(tf, "%s", e.msg);
    qe_tf_item it;
    REQUIRE(qe_tf_score(tf, ctx, 6, cont, 40, &it, &e) == 0, "%s", e.msg);
    CHECK(it.n_tokens == 40 && it.kld_sum == 0 && it.n_top1_same == 40 && it.first_diff == 40);
    for (int i = 0; i < 40; i++)
        CHECK(it.kld[i] == 0);
    free(it.kld);
    qe_tf_free(tf);
    /* reference vs Q4_K_M, against full logits from qe_infer_eval */
    tf = qe_tf_new(ref, q, 128, 1, &e);
    REQUIRE(tf, "%s", e.msg);
    REQUIRE(qe_tf_score(tf, ctx, 6, cont, 40, &it, &e) == 0, "%s", e.msg);
    int nv = ref->cfg.n_vocab;
    qe_infer_opts io = {.n_ctx = 128, .n_threads = 1};
    qe_infer *ir = qe_infer_new(ref, &io, &e), *iq = qe_infer_new(q, &io, &e);
    REQUIRE(ir && iq, "%s", e.msg);
    int32_t all[45];
    memcpy(all, ctx, sizeof ctx);
    memcpy(all + 6, cont, 39 * sizeof *cont);
    float *lr = malloc((size_t)40 * nv * sizeof *lr), *lq = malloc((size_t)40 * nv * sizeof *lq);
    REQUIRE(qe_infer_eval(ir, all, 45, 5, lr, &e) == 0 && qe_infer_eval(iq, all, 45, 5, lq, &e) == 0,
            "%s", e.msg);
    double sum = 0;
    int same = 0, first = 40;
    double maxerr = 0;
    for (int t = 0; t < 40; t++) {
        const float *a = lr + (size_t)t * nv, *b = lq + (size_t)t * nv;
        double ma = -INFINITY, mb = -INFINITY;
        int ia = 0, ib = 0;
        for (int v = 0; v < nv; v++) {
            if (a[v] > ma)
                ma = a[v], ia = v;
            if (b[v] > mb)
                mb = b[v], ib = v;
        }
        double za = 0, zb = 0;
        for (int v = 0; v < nv; v++)
            za += exp(a[v] - ma), zb += exp(b[v] - mb);
        za = ma + log(za), zb = mb + log(zb);
        double k = 0;
        for (int v = 0; v < nv; v++)
            k += exp(a[v] - za) * ((a[v] - za) - (b[v] - zb));
        sum += k;
        same += ia == ib;
        if (ia != ib && first == 40)
            first = t;
        maxerr = fmax(maxerr, fabs(k - it.kld[t]) / (1e-12 + k));
    }
    CHECKF(fabs(sum - it.kld_sum) <= 1e-9 * sum, "kld sum %.17g vs %.17g", it.kld_sum, sum);
    CHECKF(maxerr < 1e-6, "per-token relative error %g (float storage)", maxerr);
    CHECKF(it.n_top1_same == same && it.first_diff == first, "top1 %d/%d first %d/%d",
           it.n_top1_same, same, it.first_diff, first);
    CHECK(sum > 0);
    fprintf(stdout, "  Q4_K_M teacher-forced on 40 tokens: KLD %.5f, top-1 %d/40, first "
            "disagreement at %d\n", sum / 40, same, first);
    /* the vocabulary folded in slices of 100 columns (the last one short),
     * 7 columns (argmax and rescaling across many slices), then all again */
    const int slices[3] = {100, 7, 0};
    for (int s = 0; s < 3; s++) {
        qe_tf_item is;
        qe_tf_set_slice(tf, slices[s]);
        REQUIRE(qe_tf_score(tf, ctx, 6, cont, 40, &is, &e) == 0, "%s", e.msg);
        double me = 0;
        for (int t = 0; t < 40; t++)
            me = fmax(me, fabs((double)is.kld[t] - it.kld[t]) / (1e-12 + it.kld[t]));
        CHECKF(me < 1e-6 && fabs(is.kld_sum - it.kld_sum) <= 1e-12 * it.kld_sum &&
               is.n_top1_same == it.n_top1_same && is.first_diff == it.first_diff,
               "slice %d: per-token error %g, sum %.17g vs %.17g, top1 %d/%d", slices[s], me,
               is.kld_sum, it.kld_sum, is.n_top1_same, it.n_top1_same);
        free(is.kld);
    }
    /* a cache of the reference's rows (qe run keeps one over all variants):
     * the first score stores, later ones (this candidate or another) find
     * the item and give the same values bit for bit; another sequence is
     * another item */
    qe_tf_cache *cache = qe_tf_cache_new(0);
    REQUIRE(cache, "out of memory");
    qe_tf_set_cache(tf, cache);
    for (int rep = 0; rep < 2; rep++) {
        qe_tf_item ic;
        REQUIRE(qe_tf_score(tf, ctx, 6, cont, 40, &ic, &e) == 0, "%s", e.msg);
        CHECKF(memcmp(ic.kld, it.kld, 40 * sizeof *ic.kld) == 0 && ic.kld_sum == it.kld_sum &&
               ic.n_top1_same == it.n_top1_same && ic.first_diff == it.first_diff,
               "cached pass %d differs", rep);
        free(ic.kld);
    }
    long hits, stored;
    qe_tf_cache_stats(cache, &hits, &stored);
    CHECKF(hits == 1 && stored == 1, "hits %ld stored %ld", hits, stored);
    qe_tf *tf2 = qe_tf_new(ref, ref, 128, 1, &e); /* another candidate: the reference itself */
    REQUIRE(tf2, "%s", e.msg);
    qe_tf_set_cache(tf2, cache);
    qe_tf_item i2;
    REQUIRE(qe_tf_score(tf2, ctx, 6, cont, 40, &i2, &e) == 0, "%s", e.msg);
    CHECK(i2.kld_sum == 0 && i2.n_top1_same == 40);
    free(i2.kld);
    REQUIRE(qe_tf_score(tf2, ctx, 5, cont, 40, &i2, &e) == 0, "%s", e.msg); /* another split */
    free(i2.kld);
    qe_tf_cache_stats(cache, &hits, &stored);
    CHECKF(hits == 2 && stored == 2, "hits %ld stored %ld", hits, stored);
    qe_tf_free(tf2);
    qe_tf_set_cache(tf, NULL);
    qe_tf_cache_free(cache);
    free(it.kld);
    /* a window of 16 positions: 6 context ids leave room to score 11 */
    qe_tf_free(tf);
    tf = qe_tf_new(ref, q, 16, 1, &e);
    REQUIRE(tf, "%s", e.msg);
    REQUIRE(qe_tf_score(tf, ctx, 6, cont, 40, &it, &e) == 0, "%s", e.msg);
    CHECK(it.n_tokens == 11);
    free(it.kld);
    int32_t badtok[2] = {1, 99999};
    CHECK(qe_tf_score(tf, badtok, 2, cont, 4, &it, &e) == QE_EINVAL && strstr(e.msg, "99999"));
    qe_tf_free(tf);
    free(lr), free(lq);
    qe_infer_free(ir), qe_infer_free(iq);
    qe_model_free(q);
    qe_model_free(ref);
}

int main(void)
{
    RUN(gsm8k_filters);
    RUN(mgsm_filters);
    RUN(all_specs_load);
    RUN(bad_specs);
    RUN(task_as_data_fake_lm);
    RUN(generate_fake_lm);
    RUN(tinystories_cloze_stories260k);
    RUN(teacher_forced_divergence);
    return test_finish();
}
