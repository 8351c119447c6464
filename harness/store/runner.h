/*
 * runner.h: the engine behind `qeval run` and `qeval eval`: load the
 * model once, build each variant in turn (at most one quantized variant
 * alive beside the reference), evaluate it in deterministic work units and
 * commit every unit with its done-marker (harness/store/store.h), so that a
 * killed run resumes exactly and `--shard I/N` splits the work.
 *
 * Work units, in this fixed order (the order defines the unit index that
 * --shard I/N uses: unit u runs on shard u % N):
 *   for each variant (reference first, then --quants in order, then recipes)
 *     text task  chunks [c, c+unit_chunks) of the llama.cpp perplexity
 *                protocol; the reference stores per-chunk NLL, every other
 *                variant runs in lockstep with the reference and stores its
 *                NLL and per-token KLD(ref || variant) + top-1 agreement
 *     each task of the suite / --tasks   strided slices k of K=4 of its
 *                documents (harness/eval qe_eval_task shards), per-item
 *                metric values as samples
 *
 * Must not hold: report rendering (reports/), argument parsing (cli/).
 */
#ifndef QE_RUNNER_H
#define QE_RUNNER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../util/common.h"

#define QE_RUN_DEFAULT_QUANTS "F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K"

typedef struct qe_run_opts {
    const char *model_path;     /* reference model (GGUF, safetensors dir, llama2.c .bin) */
    const char *quants;         /* comma list of llama.cpp mixes; NULL = default; "" = none */
    const char *suite;          /* suite name (datasets/suites/<name>.json) or NULL */
    const char *tasks;          /* comma list of task names or NULL */
    const char *db_path;        /* default "results.db" */
    const char *label;          /* part of the run key; NULL = "" */
    const char *imatrix_path;   /* importance matrix file, or NULL */
    const char *calib_path;     /* calibration text: collect an imatrix, or NULL */
    const char *const *recipes; /* custom recipe JSON files (borrowed) */
    int n_recipes;
    const char *text_path;      /* perplexity/KLD text; NULL = wikitext-2 test from the assets,
                                   or tinystories_val for models trained on <= 512 positions */
    int n_ctx;                  /* 0 = min(512, the model's trained context) */
    long long limit;            /* items per task and chunks of the text; 0 = all */
    int threads;                /* 0 = OpenMP default */
    int parallel;               /* generation: sequences in flight; 0 = qe_lm_default_parallel */
    int shard_i, shard_n;       /* this process runs units u with u % shard_n == shard_i */
    int unit_chunks;            /* text chunks per work unit (>= 2; default 4) */
    const char *artifact_path;  /* qeval eval: this quantized file is the only variant */
    const char *args;           /* command line, recorded */
    /* --chat: tasks through this chat template (borrowed; see qe_eval_opts);
     * its sha256, the system message and the variables are part of the run key */
    const struct qe_chat_template *chat;
    const char *chat_system;
    const struct cJSON *chat_vars;
} qe_run_opts;

void qe_run_opts_init(qe_run_opts *o);

/* Execute (or resume) a run.  *run_id receives the run's id in the
 * database.  Progress goes to stderr; nothing is printed on stdout. */
int qe_run_execute(const qe_run_opts *o, int64_t *run_id, qe_err *err);

/*
 * `qeval run --time-budget`: plan a run that fits budget_s seconds.  A
 * short probe on the reference measures the cost of one text chunk (one
 * forward pass of n_ctx tokens) and of one item of every task (2 items
 * each); the cost of the run at a per-task item limit L is then
 *   text:  min(L, chunks) * c_text * (1 + 2 (V - 1))   (lockstep KLD runs two models)
 *   tasks: sum_j min(L, items_j) * (c_j V + [generation] 2 c_text (V - 1))
 *          (teacher forcing: two prefills per item, at most a full window)
 * for V variants.  The same L for every task minimises the largest
 * minimal detectable effect (it is the same function of n for every task
 * at a given discordance); the largest L whose estimate fits the budget
 * left after the probe, less 10 % held back for quantization and setup,
 * becomes o->limit (a task with fewer items than L runs them all).  The
 * plan (per task: items, estimated seconds, MDE at 10 % flips) is printed
 * to `out`.  Errors: those of loading the model, the text and the tasks.
 */
int qe_run_plan_budget(qe_run_opts *o, double budget_s, FILE *out, qe_err *err);

/*
 * `qeval eval FILE.gguf --reference MODEL --db F`: evaluate a file made
 * elsewhere as a variant named "<file type>@<sha256 prefix>" (e.g.
 * "Q4_K_M@1a2b3c4d") against the reference, with the text task and the
 * suite/tasks of `base` (may be NULL: text task only).  Same resume rules.
 */
int qe_store_eval_artifact(const char *gguf_path, const char *reference_model,
                           const char *db_path, const qe_run_opts *base, int64_t *run_id,
                           qe_err *err);

#endif /* QE_RUNNER_H */
