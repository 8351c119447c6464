/*
 * quantize_model.h: model-level quantization: turn a loaded qe_model into
 * a quantized variant in memory (a llama.cpp mix and/or a custom recipe,
 * optionally imatrix-weighted), write a qe_model as a GGUF file that
 * llama.cpp loads, and collect an importance matrix by running the model.
 *
 * Per-tensor type choice lives in quant/recipe.h (pure rules); the row
 * quantizers in quant/quant.h; this file glues them to models and files.
 */
#ifndef QE_QUANTIZE_MODEL_H
#define QE_QUANTIZE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/common.h"
#include "gguf.h"
#include "imatrix_io.h"
#include "model.h"
#include "recipe_json.h"

typedef struct qe_quant_opts {
    int ftype;                   /* qe_ftype mix; -1 = the recipe's base (or none) */
    const qe_recipe *recipe;     /* optional custom rules (borrowed) */
    const qe_imatrix *imatrix;   /* optional importance matrix (borrowed) */
    bool pure;                   /* base type for every quantizable tensor */
    bool leave_output;           /* keep output.weight as it is */
    int output_type;             /* qe_type override for output.weight, or -1 */
    int token_embd_type;         /* qe_type override for token_embd.weight, or -1 */
    int n_threads;               /* 0 = OpenMP default */
    bool verbose;                /* one line per tensor on stderr */
} qe_quant_opts;

/* Defaults: ftype -1, no recipe/imatrix, overrides -1, threads 0. */
void qe_quant_opts_init(qe_quant_opts *o);

typedef struct qe_quant_tensor_info {
    char name[96];
    int src_type;        /* qe_type in the source model */
    int type;            /* qe_type chosen */
    int wanted;          /* qe_type the mix/rule asked for (before fallback) */
    int source;          /* enum qe_mix_source */
    int fallback;        /* enum qe_fallback_kind */
    bool converted;      /* data was (de)quantized */
    bool imatrix_used;
    uint64_t n_elements;
    uint64_t src_nbytes, nbytes;
} qe_quant_tensor_info;

typedef struct qe_quant_report {
    int ftype;                     /* general.file_type written */
    char mix[128];                 /* "Q4_K_M", or "recipe:<name> (base Q4_K_M)" */
    int n_tensors;
    qe_quant_tensor_info *tensors; /* owned, in model order */
    uint64_t n_params;
    uint64_t src_nbytes, nbytes;   /* tensor bytes before / after */
    double bpw;                    /* effective bits per weight: nbytes*8/n_params */
    int n_converted;
    int n_fallback_llama;          /* row-length fallbacks llama.cpp also makes */
    int n_fallback_qeval;          /* tensors where llama.cpp would abort */
    int n_imatrix_used;
    double seconds;
} qe_quant_report;

void qe_quant_report_free(qe_quant_report *r); /* frees r->tensors, not r */

/*
 * Quantize `ref` into a new model (qe_model_new_like: same config,
 * borrowed tokenizer; every tensor's data owned by the new model).  Source
 * tensors may be F32/F16/BF16 or quantized (dequantized to f32 first).
 * `rep` (may be NULL) receives the per-tensor choices.  Errors: QE_EINVAL
 * (no mix and no recipe, a type that needs an imatrix without one, imatrix
 * size mismatch), QE_EUNSUPPORTED (no quantizer/dequantizer for a type),
 * QE_ENAN (non-finite weights), QE_ENOMEM.
 */
qe_model *qe_model_quantize(const qe_model *ref, const qe_quant_opts *opts, qe_quant_report *rep,
                            qe_err *err);

/* The llama.cpp hyperparameter keys of c (general.architecture/name,
 * <arch>.context_length, embedding_length, feed_forward_length,
 * block_count, attention.head_count(_kv), rope.dimension_count,
 * attention.layer_norm_rms_epsilon, rope.freq_base, and key/value_length
 * when head_dim is not n_embd / n_head). */
int qe_gguf_put_config(qe_gguf_builder *b, const qe_config *c, qe_err *err);

/* What qe_model_write_gguf records besides the tensors. */
typedef struct qe_gguf_write_info {
    int ftype;                    /* general.file_type (qe_ftype); -1 = keep/guess */
    const qe_imatrix *imatrix;    /* optional: quantize.imatrix.* provenance keys */
    const char *imatrix_path;     /* file name recorded in quantize.imatrix.file */
} qe_gguf_write_info;

/*
 * Write `m` as GGUF v3 (alignment 32).  Metadata: all KVs of `src_meta`'s
 * GGUF when it has one (as llama-quantize copies them), otherwise
 * synthesized llama.cpp metadata (architecture hparams + tokenizer.ggml.*
 * for SPM tokenizers); then general.quantization_version = 2,
 * general.file_type and, with an imatrix, quantize.imatrix.file /
 * .dataset / .entries_count / .chunks_count.  `src_meta` may be `m`.
 */
int qe_model_write_gguf(const qe_model *m, const qe_model *src_meta, const char *path,
                        const qe_gguf_write_info *info, qe_err *err);

/*
 * Importance-matrix collection (llama-imatrix b4747 protocol): tokens are
 * cut into chunks of n_ctx (the first token of each chunk replaced by BOS
 * when the tokenizer adds BOS), each chunk evaluated from an empty cache;
 * every blk.* weight matmul with >= 16 token rows adds x^2 per input column.
 * Result: .dat-style entries (counts in chunks), chunk_count, chunk_size
 * = n_ctx, and `dataset` recorded.  *ppl (may be NULL) gets the perplexity
 * of the second half of each chunk, as llama-imatrix prints it.
 */
typedef struct qe_imatrix_collect_opts {
    int n_ctx;          /* tokens per chunk (default 512) */
    int n_chunks;       /* max chunks, <= 0 = all */
    int n_threads;      /* 0 = OpenMP default */
    const char *dataset;/* recorded file name (may be NULL) */
    bool progress;      /* progress on stderr */
} qe_imatrix_collect_opts;

qe_imatrix *qe_imatrix_collect(const qe_model *m, const int32_t *tokens, size_t n_tokens,
                               const qe_imatrix_collect_opts *opts, double *ppl, qe_err *err);

#endif /* QE_QUANTIZE_MODEL_H */
