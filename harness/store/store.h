/*
 * store.h: the qeval results database (SQLite, one file).
 *
 * Holds: the schema and its migrations (PRAGMA user_version), the writers
 * used by `qeval run` / `qeval eval` (runs, variants, tasks, per-item
 * samples, per-token KLD, work-unit done-markers), the aggregation of
 * samples into results, and `merge` of shard databases.  Must not hold:
 * evaluation logic or report rendering (reports/ reads through the views
 * created here: v_results, v_samples).
 *
 * Tables (schema version QE_STORE_SCHEMA_VERSION):
 *   runs      one row per run, identified by run_key = sha256 of its inputs
 *             (model sha256, variants, tasks, limit, imatrix, recipes,
 *             label), so that re-running the same command finds it again.
 *             Carries the provenance: model sha256, tool version, git
 *             revision, imatrix/calibration sha256, threads, host.
 *   variants  (run, name) -> bits per weight, bytes, recipe, type histogram,
 *             and the importance matrix it was quantized with (schema 2:
 *             imatrix_dataset, imatrix_chunks, imatrix_sha256; '' / 0 when
 *             none was used).
 *   tasks     (name, version, data sha256, protocol) -> family, language,
 *             primary metric.  Shared by all runs.
 *   samples   per-item outcome: (variant, task, item, metric) -> value.
 *             metric "nll": value = sum of token NLLs (nats) of the item,
 *             value2 = sum of their squares, n_tokens = tokens scored.
 *             metric "ll_margin" (multiple choice): value = loglik of the
 *             gold answer minus the best wrong answer's, nats.
 *             metric "tf_first_diff" (generation tasks, variants other than
 *             the reference): teacher forcing on the reference's output,
 *             value = index of the first output token whose argmax differs
 *             from the reference's (n_tokens if none), n_tokens = tokens
 *             scored.
 *             Other metrics: value = the item's score (0/1 for accuracy),
 *             with the raw response, the extracted answer and hashes of the
 *             prompt text and token ids.
 *   kld       per chunk: per-token KL(ref || variant) in nats as a float32
 *             blob, plus the count of tokens whose argmax agrees.  For a
 *             generation task, one row per item: the teacher-forced
 *             divergence on the reference's greedy output (item = the
 *             task's item, see harness/eval/teacher.h).
 *   results   aggregates computed from samples/kld by qe_store_aggregate:
 *             (variant, task, metric) -> value, stderr, n.
 *   work_units  done-markers (run, variant, task, item range): committed
 *             in the same transaction as the unit's rows, which is what
 *             makes resume after SIGKILL exact (no lost, no duplicate row).
 *
 * Concurrency: WAL mode, a 60 s busy timeout, and every write transaction
 * is BEGIN IMMEDIATE with a retry on SQLITE_BUSY, so several processes can
 * write one database.  A unit already marked done is skipped on commit,
 * so two processes doing the same run never duplicate rows.
 */
#ifndef QE_STORE_H
#define QE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

#define QE_STORE_SCHEMA_VERSION 2

/* Per-item sample metrics that are not task metrics (see samples above). */
#define QE_METRIC_LL_MARGIN "ll_margin"
#define QE_METRIC_TF_FIRST_DIFF "tf_first_diff"

typedef struct sqlite3 sqlite3;
typedef struct qe_store qe_store;

/* Open (creating and migrating as needed).  A database written by a newer
 * qeval (user_version > ours) is refused with QE_EVERSION; a file that is
 * not SQLite gives QE_EDB naming the path. */
qe_store *qe_store_open(const char *path, qe_err *err);
void qe_store_close(qe_store *s);
/* The connection, borrowed (for read queries in reports/). */
sqlite3 *qe_store_db(qe_store *s);
const char *qe_store_path(const qe_store *s);

/* Run a statement list (no results) inside BEGIN IMMEDIATE ... COMMIT,
 * retrying while the database is busy. */
int qe_store_exec(qe_store *s, const char *sql, qe_err *err);

/* Provenance of a run.  NULL strings are stored as ''. */
typedef struct qe_run_info {
    const char *label;
    const char *model_path;
    const char *model_name;
    const char *model_sha256;
    const char *imatrix_sha256;   /* imatrix or calibration text, '' if none */
    const char *suite;            /* suite name and/or task list */
    const char *quants;           /* the variant list as given */
    const char *recipes_sha256;   /* sha256 over the recipe files, '' if none */
    const char *args;             /* canonical command line (informational) */
    long long limit;              /* --limit, 0 = none */
    int threads;
    int shard_i, shard_n;         /* 0/1 when not sharded */
} qe_run_info;

/* run_key (64 hex) = sha256 over the fields that define the work: model
 * sha256, quants, suite, recipes, imatrix, limit, label.  Not threads,
 * shard, host or args, so shards of one run share a key and merge. */
void qe_store_run_key(const qe_run_info *ri, char key[65]);

/* Find the run with this key or create it.  *resumed = true if it existed
 * (a resumed or concurrent run).  Tool version, git revision and host are
 * filled in here. */
int qe_store_run_begin(qe_store *s, const qe_run_info *ri, int64_t *run_id, bool *resumed,
                       qe_err *err);
/* Aggregate the run's results and stamp finished_at. */
int qe_store_run_finish(qe_store *s, int64_t run_id, qe_err *err);

/* Git revision of the qeval build: $QEVAL_GIT_REV, else -DQE_GIT_REV, else
 * `git rev-parse` in the executable's directory, else "unknown".  Static. */
const char *qe_store_git_rev(void);

typedef struct qe_variant_info {
    const char *name;            /* "F16", "Q4_K_M", "recipe:allq2k", "Q4_K_M@1a2b3c4d" */
    bool is_reference;           /* the model as loaded */
    const char *recipe;          /* recipe name or file, '' for none */
    const char *recipe_sha256;
    const char *artifact_sha256; /* sha256 of an evaluated file (qeval eval) */
    double bpw;                  /* effective bits per weight over all tensors */
    uint64_t size_nbytes;        /* tensor bytes of the variant */
    uint64_t n_params;
    const char *type_hist_json;  /* {"q4_K": 20, "q6_K": 2, ...} or NULL */
    /* the importance matrix used to quantize it (NULL/0: none) */
    const char *imatrix_dataset; /* calibration text (file name) or imatrix file */
    int imatrix_chunks;          /* chunks the imatrix was collected over */
    const char *imatrix_sha256;  /* sha256 of the imatrix (its .dat bytes) */
} qe_variant_info;

/* Insert or update (run, name).  Returns its id. */
int qe_store_variant_put(qe_store *s, int64_t run_id, const qe_variant_info *vi,
                         int64_t *variant_id, qe_err *err);

typedef struct qe_task_info {
    const char *name;        /* "tinystories_ppl", "gsm8k" */
    const char *version;     /* bumped whenever scores would change */
    const char *family;      /* text, math, code, multilingual, general */
    const char *language;    /* ISO code ("en", "de") or '' */
    const char *data_sha256;
    const char *protocol;    /* "llama.cpp-ppl ctx=512", "gsm8k 5-shot greedy" */
    const char *metric;      /* primary metric ("nll" for text, "acc", "exact_match") */
} qe_task_info;

/* Insert or find (name, version, data_sha256, protocol).  Returns its id. */
int qe_store_task_put(qe_store *s, const qe_task_info *ti, int64_t *task_id, qe_err *err);

/* A work unit of one task on one variant: items [item_lo, item_hi), or
 * with item_stride > 0 the items i in [0, item_hi) with
 * i % item_stride == item_lo (a strided slice, as the task evaluator
 * shards documents). */
typedef struct qe_unit {
    int64_t run_id, variant_id, task_id;
    int64_t item_lo, item_hi;
    int64_t item_stride;   /* 0 = contiguous range */
} qe_unit;

/* *done = the unit's marker exists. */
int qe_store_unit_done(qe_store *s, const qe_unit *u, bool *done, qe_err *err);

typedef struct qe_sample {
    int64_t item;           /* item index within the task (doc id, chunk) */
    const char *metric;     /* "nll", "acc", "acc_norm", "exact_match", ... */
    double value;           /* see the samples table above */
    double value2;          /* nll: sum of squares; else 0 */
    int64_t n_tokens;       /* nll: tokens scored; else 1 */
    const char *response;   /* optional raw generation */
    const char *extracted;  /* optional filtered answer */
    const char *prompt_sha; /* optional: sha256 prefix of the prompt text */
    const char *ids_sha;    /* optional: sha256 prefix of the prompt token ids (BOS/tokenizer
                               drift between variants shows up here) */
} qe_sample;

typedef struct qe_kld_chunk {
    int64_t item;            /* chunk index */
    int n_tokens;            /* scored tokens */
    const float *kld;        /* (n_tokens) KL(ref || variant), nats */
    int n_top1_same;         /* tokens whose argmax equals the reference's */
} qe_kld_chunk;

/* Write a unit's rows and its done-marker in one transaction.  If the
 * marker already exists (another process finished the unit) nothing is
 * written and *written = false.  `written` may be NULL. */
int qe_store_unit_commit(qe_store *s, const qe_unit *u, const qe_sample *samples,
                         size_t n_samples, const qe_kld_chunk *kld, size_t n_kld, bool *written,
                         qe_err *err);

/* Recompute the results rows of every variant of a run from its samples
 * and kld rows (idempotent).  Metrics written per (variant, task):
 *   nll samples -> nll_mean (± stderr, token-iid like llama.cpp), ppl
 *                  (stderr = ppl * se(nll_mean)), n = tokens
 *   other       -> the mean (± sample sd / sqrt(n)), n = items
 *   kld rows    -> kld_mean (± se), kld_median, kld_p90, kld_p99, kld_max,
 *                  top1 (± binomial se), n = tokens */
int qe_store_aggregate(qe_store *s, int64_t run_id, qe_err *err);

/* Join shard databases into `out` (created if absent).  Runs with the same
 * run_key become one run; rows already present are kept (a unit is
 * deterministic, so either copy is the same); results are re-aggregated.
 * *n_rows_added = samples + kld rows copied (may be NULL). */
int qe_store_merge(qe_store *out, const char *in_path, int64_t *n_rows_added, qe_err *err);

/* Run id from a reference: a number, "latest", a label, or a run_key
 * prefix (>= 6 hex).  QE_ENOTFOUND if none matches. */
int qe_store_find_run(qe_store *s, const char *ref, int64_t *run_id, qe_err *err);
/* Variant id of (run, name); QE_ENOTFOUND lists the run's variants. */
int qe_store_find_variant(qe_store *s, int64_t run_id, const char *name, int64_t *variant_id,
                          qe_err *err);

#endif /* QE_STORE_H */
