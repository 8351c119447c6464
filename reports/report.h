/*
 * report.h: everything qeval renders from the results database: the run
 * summary (one row per variant), paired comparisons, the gate decision,
 * history of a metric, and the output formats (table, md, html with inline
 * SVG, json, card).
 *
 * Reads only through SQL (the views in harness/store/store.c) and computes
 * significance with harness/eval/stats.h.  Must not hold: evaluation logic,
 * writes other than none (the database is opened read-write by qe_store,
 * but nothing here modifies it).
 */
#ifndef QE_REPORT_H
#define QE_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../harness/store/store.h"
#include "../harness/util/common.h"

/* One paired comparison row: candidate vs base on the same items. */
typedef struct qe_cmp_row {
    char task[96];
    char family[32];
    char metric[32];       /* ppl, kld_mean, ll_margin, or an accuracy metric */
    int64_t n;             /* paired items */
    double base, cand;     /* metric values (ppl, mean KLD, mean margin in nats, accuracy 0..1) */
    double delta;          /* ppl: % change; kld, ll_margin: cand-base; acc: points (x100) */
    double lo, hi;         /* 95 % interval of delta, same units */
    double p;              /* two-sided p of this comparison alone */
    double p_adj;          /* p adjusted over a family of comparisons (qe_compare_adjust);
                              equal to p until then */
    double alpha;          /* level the MDE is computed at */
    double mde;            /* minimal detectable |delta| at 80 % power and alpha, units of
                              delta; INFINITY when no effect is detectable with these items */
    const char *test;      /* "McNemar", "bootstrap" (static string) */
    bool higher_is_better;
    bool gated;            /* a gate threshold applies (ppl, kld_mean, accuracies) */
    /* flips, for 0/1 metrics (n_rw = n_wr = -1 otherwise): items the base got
     * right and the candidate wrong, and the reverse, with Wilson 95 %
     * intervals of their shares of n */
    int64_t n_rw, n_wr;
    double rw_lo, rw_hi, wr_lo, wr_hi;
} qe_cmp_row;

#define QE_REPORT_POWER 0.8    /* power of every printed MDE */

/* Task families summarised per variant (DESIGN.md "Metrics"). */
/* Task families with an accuracy column; text = in-domain accuracy tasks such as
 * tinystories-cloze (text perplexity tasks have no accuracy and are not pooled). */
enum { QE_FAM_TEXT, QE_FAM_MATH, QE_FAM_CODE, QE_FAM_MULTILINGUAL, QE_FAM_GENERAL, QE_FAM_COUNT };
extern const char *const qe_report_family_names[QE_FAM_COUNT];

/* Pooled accuracy of one family for one variant, paired with the reference. */
typedef struct qe_fam_acc {
    bool present;
    int64_t n;          /* items pooled over the family's tasks */
    double acc;         /* mean of the primary metric, 0..1 */
    double lo, hi;      /* Wilson 95 % interval */
    double delta;       /* acc - acc(reference), paired items */
    double p;           /* McNemar exact (0/1 metrics) or paired bootstrap */
    double p_adj;       /* p adjusted over the summary's comparisons (qe_report_data.adjust) */
} qe_fam_acc;

typedef struct qe_report_variant {
    int64_t id;
    char name[64];
    bool is_reference;
    double bpw;                 /* NaN if unknown */
    uint64_t size_nbytes;
    /* main text task (first family=text task with metric nll) */
    double ppl, ppl_se;         /* NaN if absent */
    double dppl_pct;            /* 100 * (ppl / ppl_ref - 1) */
    double dppl_p;              /* paired bootstrap p on per-item NLL */
    double dppl_p_adj;          /* adjusted over the summary's comparisons */
    double kld_mean, kld_se, kld_p99, top1;  /* NaN if absent (reference) */
    qe_fam_acc fam[QE_FAM_COUNT];
    double *lang_dppl;          /* (n_lang) ΔPPL % per language, NaN if absent */
    /* flips against the reference, pooled over the primary 0/1 metric of
     * every accuracy task: items right -> wrong and wrong -> right of n */
    int64_t flip_n, flip_rw, flip_wr;
    /* every paired comparison with the reference (qe_compare_variants at
     * alpha 0.05), p_adj over all rows of all variants as one family */
    qe_cmp_row *rows;
    int n_rows;
    /* teacher-forced divergence on the reference's outputs, pooled over
     * the generation tasks of each family (tf_items == 0: none) */
    int64_t tf_items[QE_FAM_COUNT], tf_tokens[QE_FAM_COUNT];
    double tf_kld[QE_FAM_COUNT];     /* token-weighted mean KLD, nats */
    double tf_top1[QE_FAM_COUNT];    /* share of tokens whose argmaxes agree */
    double tf_first[QE_FAM_COUNT];   /* mean index of the first disagreeing token */
} qe_report_variant;

typedef struct qe_report_data {
    int64_t run_id;
    char run_key[65], label[128], model_name[128], model_sha256[65], tool_version[32];
    char git_rev[64], host[128], created_at[32], imatrix_sha256[65], suite[256];
    char main_task[96], main_protocol[128];
    int threads;
    int n_variants;
    qe_report_variant *variants;   /* sorted by bpw descending, reference first */
    int ref_index;                 /* -1 if the run has no reference variant */
    int n_lang;
    char (*langs)[16];             /* (n_lang) language codes with a ppl task */
    int adjust;                    /* qe_adjust behind every p_adj (default Holm) */
    int n_summary_tests;           /* comparisons in the summary's family */
    int n_task_tests;              /* rows in the per-task family */
} qe_report_data;

/* Load the summary of one run (p-values Holm-adjusted).  Caller frees
 * with qe_report_data_free. */
int qe_report_load(qe_store *s, int64_t run_id, qe_report_data **out, qe_err *err);
/* Recompute every p_adj of d with another qe_adjust method. */
int qe_report_adjust(qe_report_data *d, int method, qe_err *err);
void qe_report_data_free(qe_report_data *d);

/* Default tolerances for the recommendation (stated in the output). */
typedef struct qe_tolerance {
    double max_dppl_pct;    /* ΔPPL ≤ this (%), default 3 */
    double max_kld;         /* mean KLD ≤ this (nats), default 0.05 */
    double max_acc_drop;    /* no family drops more than this (points) significantly, default 2 */
} qe_tolerance;
void qe_tolerance_default(qe_tolerance *t);

/* Index of the recommended variant: the smallest (by bytes, then bpw)
 * within tolerance; with mem_budget > 0 the best quality (lowest KLD,
 * then PPL) among variants whose size fits.  -1 if none qualifies.
 * `why` receives one sentence. */
int qe_report_recommend(const qe_report_data *d, const qe_tolerance *t, uint64_t mem_budget,
                        char *why, size_t why_nbytes);

/* Render one run: format is table|md|html|json|card (Holm markers, with
 * the per-task table). */
int qe_report_render(qe_store *s, int64_t run_id, const char *format, FILE *out, qe_err *err);

typedef struct qe_render_opts {
    const char *format;   /* table|md|html|json|card */
    int adjust;           /* qe_adjust of the significance markers */
    bool per_task;        /* table format: also the per-task table */
} qe_render_opts;
int qe_report_render_ex(qe_store *s, int64_t run_id, const qe_render_opts *ro, FILE *out,
                        qe_err *err);

/* ------------------------------------------------------------ compare */

/* Compare every task the two variants share, MDEs at level alpha.
 * *rows malloc'd. */
int qe_compare_variants(qe_store *s, int64_t base_vid, int64_t cand_vid, double alpha,
                        qe_cmp_row **rows, int *n_rows, qe_err *err);

/* Unit of r's delta and MDE ("%", "pt", "") and the factor that turns
 * r's base/cand into the printed values (100 for accuracies). */
const char *qe_cmp_row_unit(const qe_cmp_row *r);
double qe_cmp_row_scale(const qe_cmp_row *r);

/* Fill rows[i].p_adj: method over the n rows' p-values as one family. */
int qe_compare_adjust(qe_cmp_row *rows, int n, int method, qe_err *err);

/* "RUN" or "RUN:VARIANT" (RUN as for qe_store_find_run).  variant_id is
 * -1 when no variant was given. */
int qe_report_parse_ref(qe_store *s, const char *ref, int64_t *run_id, int64_t *variant_id,
                        qe_err *err);

/* -------------------------------------------------------------- gate */

typedef struct qe_gate_opts {
    double max_ppl_increase_pct;  /* default 1 */
    double max_kld_increase;      /* default 0.02 (nats, over the baseline's KLD) */
    double max_acc_drop_pts;      /* default 2 (percentage points) */
    double alpha;                 /* default 0.05 */
    double max_flips_pct;         /* right->wrong share of items (%), NaN = no flip check */
    int adjust;                   /* qe_adjust: QE_ADJUST_HOLM (default) or _BH or _NONE */
} qe_gate_opts;
void qe_gate_opts_default(qe_gate_opts *o);
/* Thresholds from JSON {"max_ppl_increase": 1, "max_kld": 0.02,
 * "max_acc_drop": 2, "alpha": 0.05, "max_flips": 5}; unknown keys are
 * QE_EJSON. */
int qe_gate_opts_load(qe_gate_opts *o, const char *path, qe_err *err);

/* Compare candidate pairs (base_vid[i], cand_vid[i]) and print every
 * check to `out`.  *n_regressions = checks beyond threshold AND adjusted
 * p < alpha, the p-values of all checks of all pairs adjusted as one
 * family (o->adjust).  A flip check (max_flips_pct set, 0/1 metrics) is
 * beyond when the right->wrong share exceeds the limit; its p is the exact
 * one-sided binomial P(X >= n_rw | n, limit). */
int qe_gate_check(qe_store *s, const int64_t *base_vid, const int64_t *cand_vid, int n_pairs,
                  const qe_gate_opts *o, FILE *out, int *n_regressions, qe_err *err);

/* QE_ENOTFOUND naming the path if a database to read does not exist (the
 * reading commands must not create an empty one). */
int qe_report_db_exists(const char *path, qe_err *err);

/* ----------------------------------------------------------- history */

/* Print one line per run of model M (name or sha256 prefix) with variant V:
 * date, run id, label, git rev, value ± stderr of metric X over the main
 * task (or `task` if non-NULL).  *n_points = lines printed. */
int qe_history_print(qe_store *s, const char *model, const char *variant, const char *metric,
                     const char *task, FILE *out, int *n_points, qe_err *err);

#endif /* QE_REPORT_H */
