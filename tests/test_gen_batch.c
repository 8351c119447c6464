/*
 * test_gen_batch.c: continuous batching in the generation evaluators
 * (qe_lm generate_many, --parallel).  GSM8K (limit 50) and HumanEval
 * (limit 20, code_exec) on stories260K and on a random-weight llama
 * (rand-llama-256 Q4_K_M) give identical responses, filtered answers,
 * per-item values and sandbox statuses with parallel 1 on 1 thread and
 * parallel 16 on 2 threads, in exact numerics and (Q4_K_M, Q8_0) in int8
 * numerics.  Bad parallel and numerics values are refused.
 */
#include <stdlib.h>
#include <string.h>

#include "../harness/eval/lm.h"
#include "../harness/infer/infer.h"
#include "../harness/eval/task.h"
#include "../harness/model/model.h"
#include "test.h"

static int numerics; /* of every run_task: QE_NUMERICS_EXACT or _INT8 */

static int run_task(const qe_model *m, const char *task, size_t limit, int parallel, int threads,
                    qe_task_result *res, qe_task **tp)
{
    qe_err e = {0};
    qe_lm lm;
    if (qe_lm_infer_init(&lm, m, 0, threads, &e) || qe_lm_set_parallel(&lm, parallel, &e) ||
        qe_lm_set_numerics(&lm, numerics, &e)) {
        printf("  %s\n", e.msg);
        return -1;
    }
    qe_task *t = qe_task_load_name(task, &e);
    if (!t) {
        printf("  skipped: %s: %s\n", task, e.msg);
        qe_lm_free(&lm);
        return 1;
    }
    qe_eval_opts o = {.limit = limit};
    int rc = qe_eval_task(&lm, t, &o, res, &e);
    if (rc)
        printf("  %s: %s\n", task, e.msg);
    qe_lm_free(&lm);
    *tp = t;
    return rc ? -1 : 0;
}

static bool same_items(const qe_task *t, const qe_task_result *a, const qe_task_result *b)
{
    if (a->n_items != b->n_items || strcmp(a->skipped, b->skipped))
        return false;
    for (size_t i = 0; i < a->n_items; i++) {
        const qe_item *x = &a->items[i], *y = &b->items[i];
        if (x->doc_index != y->doc_index || strcmp(x->response ? x->response : "",
                                                   y->response ? y->response : "") ||
            x->status != y->status)
            return false;
        for (int f = 0; f < t->n_filters; f++)
            if (strcmp(x->filtered[f], y->filtered[f]))
                return false;
        for (int k = 0; k < t->n_metrics; k++)
            if (memcmp(&x->values[k], &y->values[k], sizeof(double)))
                return false;
    }
    return true;
}

static void same_answers(const char *path)
{
    qe_err e = {0};
    qe_model *m = qe_model_load(path, NULL, &e);
    if (!m) {
        printf("  skipped: %s\n", e.msg);
        return;
    }
    static const char *const tasks[] = {"gsm8k", "humaneval"};
    static const size_t limits[] = {50, 20};
    for (int k = 0; k < 2; k++) {
        qe_task_result base, other;
        qe_task *t = NULL, *t2 = NULL;
        int rc = run_task(m, tasks[k], limits[k], 1, 1, &base, &t);
        if (rc > 0)
            continue;
        CHECKF(rc == 0, "%s %s parallel 1", path, tasks[k]);
        if (rc)
            break;
        /* parallel 1 on 1 thread vs parallel 16 on 2 threads (test_batch covers
         * the core's independence of threads and companions separately) */
        static const int par[1] = {16}, thr[1] = {2};
        size_t n_chars = 0;
        for (size_t i = 0; i < base.n_items; i++)
            n_chars += base.items[i].response ? strlen(base.items[i].response) : 0;
        for (int v = 0; v < 1; v++) {
            rc = run_task(m, tasks[k], limits[k], par[v], thr[v], &other, &t2);
            CHECKF(rc == 0 && same_items(t, &base, &other),
                   "%s %s: parallel %d, %d threads differ from parallel 1", path, tasks[k],
                   par[v], thr[v]);
            if (rc == 0)
                qe_task_result_free(&other);
            qe_task_free(t2);
        }
        printf("  %s %s (%s): %zu items (%zu response bytes%s) identical with parallel 1 "
               "(1 thread) and 16 (2 threads)\n", strrchr(path, '/') + 1, tasks[k],
               qe_numerics_name(numerics), base.n_items, n_chars,
               base.skipped[0] ? ", sandbox skipped" : "");
        qe_task_result_free(&base);
        qe_task_free(t);
    }
    qe_model_free(m);
}

TEST(same_answers_any_parallel_and_threads)
{
    same_answers(test_asset("models/stories260K/stories260K.gguf"));
    same_answers(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"));
    numerics = QE_NUMERICS_INT8; /* the eval --numerics int8 path */
    same_answers(test_asset("testdata/llamacpp/rand-llama-256-Q4_K_M.gguf"));
    same_answers(test_asset("testdata/llamacpp/rand-llama-256-Q8_0.gguf"));
    numerics = QE_NUMERICS_EXACT;
}

TEST(bad_parallel_refused)
{
    qe_err e = {0};
    qe_model *m = qe_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &e);
    if (!m) {
        printf("  skipped: %s\n", e.msg);
        return;
    }
    qe_lm lm;
    REQUIRE(qe_lm_infer_init(&lm, m, 0, 1, &e) == 0, "%s", e.msg);
    CHECK(qe_lm_set_parallel(&lm, 0, &e) == QE_EINVAL && strstr(e.msg, "expected 1 .. 256"));
    CHECK(qe_lm_set_parallel(&lm, 100000, &e) == QE_EINVAL);
    CHECK(qe_lm_set_parallel(&lm, 4, &e) == 0);
    CHECK(qe_lm_set_numerics(&lm, QE_NUMERICS_LLAMACPP, &e) == QE_EINVAL &&
          strstr(e.msg, "expected exact"));
    CHECK(qe_lm_set_numerics(&lm, QE_NUMERICS_INT8, &e) == 0);
    const int d = qe_lm_default_parallel(m, lm.n_ctx);
    CHECKF(d >= 1 && d <= 16, "default %d", d);
    qe_lm_free(&lm);
    qe_model_free(m);
}

int main(void)
{
    RUN(same_answers_any_parallel_and_threads);
    RUN(bad_parallel_refused);
    return test_finish();
}
