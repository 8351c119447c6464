/*
 * task.h: tasks as data.  A task spec (datasets/tasks/<name>.json, schema
 * in datasets/README.md) names a data file, a prompt template, an output
 * type, filter pipelines and metrics; this module loads and validates it
 * (unknown keys, filters and metrics are load-time errors naming the JSON
 * path; PCRE2 patterns are compiled at load), reads the data (jsonl, json,
 * tsv, csv, txt, each optionally .gz), renders templates, and runs the
 * evaluators over a qe_lm (lm.h) into per-item outcomes + aggregates.
 *
 * Suites (datasets/suites/<name>.json) are lists of task names with
 * per-task limits.
 *
 * Ownership: everything a qe_task / qe_suite / qe_task_result holds is
 * owned by it and released by its *_free.  Documents are cJSON objects
 * owned by qe_docs.
 * Must not hold: model code, SQLite, CLI printing.
 */
#ifndef QE_TASK_H
#define QE_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../util/common.h"
#include "../util/sha256.h"

struct cJSON;
struct qe_lm;

/* ---------------------------------------------------------------- data */

/* Documents of a data file: items[i] is a JSON object (a row of a TSV/CSV
 * becomes {"<column>": "<text>", ...}; a txt record {"text": ...} or
 * {"line0": ..., "line1": ...}).  Every item also gets "_index" (its
 * 0-based position). */
typedef struct qe_docs {
    struct cJSON *root;     /* owning array */
    struct cJSON **items;   /* n views into root */
    size_t n;
} qe_docs;

typedef struct qe_data_opts {
    char **columns;         /* tsv/csv column names (NULL: csv header row) */
    int n_columns;
    bool header;            /* tsv/csv: first row is a header (skipped/used) */
    int record_lines;       /* txt: lines per record; 0 = the whole file is one doc, -1 = one doc per line */
    const char *explode;    /* field holding an array: each element becomes a doc,
                               with the parent object under "parent" */
    const char *labels_path;/* file with one label per line, stored as "label" */
} qe_data_opts;

/* Read a data file.  format: "jsonl" | "json" | "tsv" | "csv" | "txt"; a
 * path ending in ".gz" is decompressed through a child `gzip -dc`.  A path
 * containing '*' is a glob: the files are read in sorted order and each
 * doc gets "_file" (the file's stem).  Errors name the file and line. */
int qe_docs_read(const char *path, const char *format, const qe_data_opts *opts, qe_docs *docs,
                 qe_err *err);
void qe_docs_free(qe_docs *docs);

/* Value at a dotted path ("question.stem", "answers.0.text") of a doc:
 * strings as is, numbers/bools rendered into a static-per-call buffer is
 * NOT done here (see qe_doc_text).  NULL if absent or not a string. */
const char *qe_doc_str(const struct cJSON *doc, const char *path);
const struct cJSON *qe_doc_get(const struct cJSON *doc, const char *path);

/* Render a template: "{{path}}" or "{{path|pipe|pipe:arg}}" substituted
 * from doc, then from the extra name/value pairs (e.g. "completion").
 * Pipes: lower upper capitalize strip rstrip_period last_word
 * but_last_word before:X after:X map:k=v;k=v dec (integer - 1)
 * hellaswag (lm-eval's preprocess).  *out malloc'd.  Errors name the
 * template and the missing field. */
int qe_template_render(const char *tpl, const struct cJSON *doc, const char *const *extra_names,
                       const char *const *extra_vals, int n_extra, char **out, qe_err *err);
/* Check a template's syntax and pipes without a doc (used at load). */
int qe_template_check(const char *tpl, qe_err *err);

/* ------------------------------------------------------------- filters */

enum qe_filter_kind {
    QE_FILTER_REGEX = 1,          /* lm-eval RegexFilter: findall, group_select, fallback */
    QE_FILTER_TAKE_FIRST,         /* lm-eval take_first (one response: no-op) */
    QE_FILTER_REMOVE_WHITESPACE,  /* lm-eval WhitespaceFilter: drop one leading space */
    QE_FILTER_STRIP,              /* strip surrounding whitespace */
    QE_FILTER_LOWER,
    QE_FILTER_NUMBER,             /* normalise a number: drop , and $ and a trailing . */
    QE_FILTER_UNTIL,              /* cut at the first stop string (the task's until list) */
};

typedef struct qe_filter_step {
    int kind;                     /* enum qe_filter_kind */
    void *re;                     /* pcre2_code * for REGEX */
    char *pattern;
    int group_select;             /* REGEX: index into the list of matches; -1 = last */
    char *fallback;               /* REGEX: when nothing matches; default "[invalid]" */
} qe_filter_step;

typedef struct qe_filter {
    char name[48];
    int n_steps;
    qe_filter_step *steps;
} qe_filter;

/* lm-eval exact_match options (exact_match_hf_evaluate). */
typedef struct qe_em_opts {
    bool ignore_case, ignore_punctuation, ignore_numbers;
    int n_ignore;
    void **ignore_re;             /* pcre2_code * each, applied in order */
    char **ignore_pat;
} qe_em_opts;

/* Compile one regex; error message "<where>: PCRE2 error at offset N: ...". */
int qe_regex_compile(const char *pattern, const char *where, void **out, qe_err *err);
void qe_regex_free(void *re);

/* Apply a filter pipeline to a response; *out malloc'd. */
int qe_filter_apply(const qe_filter *f, const char *const *until, int n_until, const char *resp,
                    char **out, qe_err *err);
/* lm-eval exact_match of a (filtered) prediction against a reference. */
int qe_exact_match(const qe_em_opts *o, const char *pred, const char *ref, bool *match,
                   qe_err *err);

/* ---------------------------------------------------------------- task */

typedef enum qe_output_type {
    QE_OUT_PERPLEXITY = 1,
    QE_OUT_MULTIPLE_CHOICE = 2,
    QE_OUT_GENERATE = 3,
    QE_OUT_CODE_EXEC = 4,
    QE_OUT_EXACT_OUTPUT = 5,
} qe_output_type;

enum qe_agg {
    QE_AGG_MEAN = 1,        /* mean of per-item values, closed-form stderr */
    QE_AGG_PPL_TOKEN,       /* exp(sum nll / sum tokens) */
    QE_AGG_PPL_WORD,        /* exp(sum nll / sum words)  (lm-eval word_perplexity) */
    QE_AGG_PPL_BYTE,        /* exp(sum nll / sum bytes)  (byte_perplexity) */
    QE_AGG_BPB,             /* sum nll / sum bytes / ln 2 (bits_per_byte) */
};

typedef struct qe_metric_def {
    char name[64];          /* "acc", "acc_norm", "exact_match,strict", "pass@1", "bits_per_byte" */
    char base[32];          /* "acc", "exact_match", ... */
    int filter;             /* index into filters, -1 if none */
    int agg;                /* enum qe_agg */
    bool is_accuracy;       /* 0/1 per item: Wilson interval, McNemar */
} qe_metric_def;

typedef struct qe_task {
    char name[96];
    int version;
    char family[16];        /* text | math | code | multilingual | general */
    char language[24];
    char spec_path[512];
    char *description;      /* optional free text */

    /* data */
    char data_rel[256];     /* as written in the spec (relative to the data dir) */
    char data_path[768];    /* resolved */
    char format[16];
    char sha256[65];        /* expected, lowercase hex; "" = not checked */
    char split[32];
    qe_data_opts dopts;
    char *explode, *labels_rel;
    char labels_path[768];

    int output_type;        /* qe_output_type */
    char *prompt;           /* template (ppl: the text template, default "{{text}}") */
    char *target;           /* template */
    char *label;            /* template: gold choice (index or key); default: target */
    char *target_delimiter; /* between context and continuation; default " " */
    char *fewshot_delimiter;/* between examples; default "\n\n" */

    /* multiple choice: either templates ... */
    int n_choice_tpl;
    char **choice_tpl;
    /* ... or an array field of the doc */
    char *choices_field, *choice_text, *choice_key, *choice_correct;
    bool choices_are_contexts; /* winogrande: each choice is a context, target is shared */

    /* few-shot */
    int fewshot_n;
    char *fewshot_sampler;  /* "random" (seeded, excludes the doc) | "first_n" */
    uint64_t fewshot_seed;

    /* generation */
    int max_tokens;
    int n_until;
    char **until;

    /* scoring */
    int n_filters;
    qe_filter *filters;
    qe_em_opts em;
    int n_metrics;
    qe_metric_def *metrics;
    char *program;          /* code_exec program template ({{completion}} available) */
    double code_timeout_s;

    char *ppl_convention;   /* "rolling" (lm-eval loglikelihood_rolling) */
    bool chat;              /* "chat": true: always through the model's chat template */

    qe_docs docs;           /* filled by qe_task_load_data */
    bool data_loaded;
    char data_sha256[65];   /* measured */
} qe_task;

/* Directory layout: specs in <root>/tasks/, suites in <root>/suites/, data
 * in <root>/data/.  Root: $QEVAL_DATASETS, else "datasets". */
const char *qe_datasets_dir(void);

/* Load and validate a spec file (does not read the data). */
qe_task *qe_task_load(const char *spec_path, const char *data_dir, qe_err *err);
/* By name: <datasets>/tasks/<name>.json. */
qe_task *qe_task_load_name(const char *name, qe_err *err);
/* Read the data (and check sha256 when the spec gives one). */
int qe_task_load_data(qe_task *t, qe_err *err);
void qe_task_free(qe_task *t);
const char *qe_output_type_name(int t);

/* Sorted list of task names under <datasets>/tasks (caller frees each and the array). */
int qe_task_list(char ***names, int *n, qe_err *err);

typedef struct qe_suite_entry {
    char task[96];
    size_t limit;            /* 0 = all items */
} qe_suite_entry;

typedef struct qe_suite {
    char name[64];
    char *description;
    int text_chunks;         /* qeval run: perplexity/KLD text chunks (0 = all) */
    bool chat;               /* "chat": true: every task through the chat template */
    int n;
    qe_suite_entry *entries;
} qe_suite;

qe_suite *qe_suite_load(const char *path, qe_err *err);
qe_suite *qe_suite_load_name(const char *name, qe_err *err);
void qe_suite_free(qe_suite *s);
int qe_suite_list(char ***names, int *n, qe_err *err);

/* ------------------------------------------------------------ evaluate */

#define QE_ITEM_HEAD_IDS 16

/* One scored item (or, for perplexity, one rolling window). */
typedef struct qe_item {
    size_t doc_index;       /* index in t->docs */
    char doc_id[64];        /* the doc's id field, else its index */
    char prompt_sha[17];    /* first 16 hex of sha256(prompt text) */
    char ids_sha[17];       /* first 16 hex of sha256(prompt token ids, int32 LE) */
    int n_prompt_ids;
    int32_t head_ids[QE_ITEM_HEAD_IDS]; /* first ids of the prompt (BOS check) */
    int n_head;
    char *response;         /* raw generation, or the chosen choice text; owned */
    char *prompt;           /* generation tasks: the prompt text (context); owned */
    char **filtered;        /* t->n_filters filtered responses (generate tasks); owned */
    double *values;         /* t->n_metrics per-item values; NaN = not applicable */
    double nll;             /* nats: gold continuation (choice tasks) or window (ppl) */
    double n_tokens, n_bytes, n_words;
    double ll_margin;       /* multiple choice: loglik(gold) - max loglik(wrong choice),
                               nats (> 0: acc is right); NaN otherwise */
    int status;             /* code_exec: qe_sandbox_status; else 0 */
} qe_item;

typedef struct qe_metric_result {
    char name[64];
    double value, se;       /* aggregate and its standard error */
    double lo, hi;          /* Wilson 95 % for accuracies, else value +- 1.96 se */
    size_t n;
    double fail_rate;       /* parse failures ("[invalid]") for its filter; NaN if N/A */
} qe_metric_result;

typedef struct qe_task_result {
    size_t n_items;
    qe_item *items;
    int n_filters;          /* strings in each item's filtered[] */
    int n_metrics;
    qe_metric_result *metrics;
    char protocol[160];     /* e.g. "rolling windows ctx=256, BOS prefix" */
    char skipped[160];      /* non-empty: the task was not run, and why */
    double wall_s;
} qe_task_result;

/* Called after each item; return non-zero to stop (the value is returned). */
typedef int (*qe_item_cb)(void *ud, const qe_task *t, const qe_item *it);

typedef struct qe_eval_opts {
    size_t limit;           /* 0 = all */
    int shard_i, shard_n;   /* deterministic item split: doc i belongs to shard i % n */
    qe_item_cb on_item;
    void *ud;
    int code_parallel;      /* sandboxes at once (default 2) */
    FILE *log;              /* optional: token ids of every prompt */
    int log_ids;            /* how many ids per prompt to log (default 16) */
    bool progress;          /* progress line on stderr */
    /* --chat: prompts rendered through the model's chat template: an optional
     * system message, few-shot examples as user/assistant turns, the prompt
     * as the last user turn, add_generation_prompt; special tokens parsed;
     * multiple-choice continuations start the assistant turn (no delimiter). */
    const struct qe_chat_template *chat;
    const char *chat_system;          /* NULL: no system message */
    const struct cJSON *chat_vars;    /* extra template variables (object) or NULL */
} qe_eval_opts;

/* Run one task (loads its data if needed).  A code task without python3
 * returns 0 with res->skipped = "skipped: python3 not found". */
int qe_eval_task(struct qe_lm *lm, qe_task *t, const qe_eval_opts *o, qe_task_result *res,
                 qe_err *err);
void qe_task_result_free(qe_task_result *r);

/* Paired comparison of metric m between a reference and a candidate run
 * of the same task (items matched by doc_index; windows by position).
 * Accuracies: McNemar; others (mean values, and nll per item for ppl
 * metrics): paired bootstrap, 1000 resamples, seed 1234. */
struct qe_paired;
int qe_task_compare(const qe_task *t, const qe_task_result *ref, const qe_task_result *cand,
                    int m, struct qe_paired *out, qe_err *err);

#endif /* QE_TASK_H */
