/*
 * recipe.h: quantization mixes: which ggml type each tensor of a model
 * gets for a llama.cpp "ftype" (Q4_K_M, Q3_K_S, ...), plus the row-length
 * fallbacks.  Pure logic: no file I/O, no regex (custom JSON recipes are
 * loaded by harness/model/recipe_json.c and arrive here as forced types).
 *
 * The rules reproduce llama.cpp b4747 src/llama-quant.cpp
 * (llama_tensor_get_type and the "should this tensor be quantized" tests of
 * llama_model_quantize_impl), including the per-model counters
 * (n_attention_wv, i_attention_wv, i_ffn_down ...) and the order in which
 * llama.cpp visits tensors (by layer number, then by name).
 *
 * One deliberate difference: where llama.cpp throws "Unsupported tensor
 * size encountered" (a 32-block type such as Q8_0/Q4_0 on a row length that
 * is not a multiple of 32, e.g. stories260K's 172-wide ffn_down), qeval
 * falls back to F16 for that tensor and marks the choice
 * QE_FALLBACK_QEVAL so callers can report it.  --pure and custom recipe
 * rules get the same fallbacks (llama.cpp would abort in ggml there).
 */
#ifndef QE_RECIPE_H
#define QE_RECIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../harness/util/common.h"

/* llama.cpp's llama_ftype values, stored in GGUF general.file_type.
 * Never renumber. */
typedef enum qe_ftype {
    QE_FTYPE_ALL_F32 = 0,
    QE_FTYPE_F16 = 1,
    QE_FTYPE_Q4_0 = 2,
    QE_FTYPE_Q4_1 = 3,
    /* 4 (Q4_1_SOME_F16), 5, 6: removed */
    QE_FTYPE_Q8_0 = 7,
    QE_FTYPE_Q5_0 = 8,
    QE_FTYPE_Q5_1 = 9,
    QE_FTYPE_Q2_K = 10,
    QE_FTYPE_Q3_K_S = 11,
    QE_FTYPE_Q3_K_M = 12,
    QE_FTYPE_Q3_K_L = 13,
    QE_FTYPE_Q4_K_S = 14,
    QE_FTYPE_Q4_K_M = 15,
    QE_FTYPE_Q5_K_S = 16,
    QE_FTYPE_Q5_K_M = 17,
    QE_FTYPE_Q6_K = 18,
    QE_FTYPE_IQ2_XXS = 19,
    QE_FTYPE_IQ2_XS = 20,
    QE_FTYPE_Q2_K_S = 21,
    QE_FTYPE_IQ3_XS = 22,
    QE_FTYPE_IQ3_XXS = 23,
    QE_FTYPE_IQ1_S = 24,
    QE_FTYPE_IQ4_NL = 25,
    QE_FTYPE_IQ3_S = 26,
    QE_FTYPE_IQ3_M = 27,
    QE_FTYPE_IQ2_S = 28,
    QE_FTYPE_IQ2_M = 29,
    QE_FTYPE_IQ4_XS = 30,
    QE_FTYPE_IQ1_M = 31,
    QE_FTYPE_BF16 = 32,
    /* 33..35: removed Q4_0_4_4, Q4_0_4_8, Q4_0_8_8 */
    QE_FTYPE_TQ1_0 = 36,
    QE_FTYPE_TQ2_0 = 37,
    QE_FTYPE_COUNT = 38,
} qe_ftype;

/* One row per ftype id (the only registry of mixes). */
typedef struct qe_ftype_info {
    const char *name;    /* "Q4_K_M"; NULL for unused ids */
    int base_type;       /* qe_type every quantizable tensor starts from */
    bool needs_imatrix;  /* llama-quantize refuses it without --imatrix (at the
                          * command line, or at the first tensor that needs
                          * one: IQ3_XXS, IQ2_M always have iq2_s tensors) */
    bool k_mix;          /* base type is quantized: llama_tensor_get_type applies */
} qe_ftype_info;

/* Row for `ftype`, or NULL if not a known id. */
const qe_ftype_info *qe_ftype_get(int ftype);
/* "Q4_K_M" etc., or NULL. */
const char *qe_ftype_name(int ftype);
/* Case-insensitive; accepts llama-quantize's aliases Q3_K (=Q3_K_M),
 * Q4_K (=Q4_K_M), Q5_K (=Q5_K_M), and F32/F16/BF16.  -1 if unknown. */
int qe_ftype_from_name(const char *name);
/* Comma-separated list of accepted names (static string), for --help. */
const char *qe_ftype_names(void);

/* Where a tensor's final type came from. */
enum qe_mix_source {
    QE_MIX_KEEP = 0, /* not quantized: kept as it is (norms, 1-D, biases, ...) */
    QE_MIX_BASE = 1, /* the llama.cpp mix rules */
    QE_MIX_RULE = 2, /* a custom recipe rule (forced_type) */
};

/* Whether (and by whom) the type was changed because the row length
 * ne[0] is not a multiple of the wanted type's block size. */
enum qe_fallback_kind {
    QE_FALLBACK_NONE = 0,
    QE_FALLBACK_LLAMA = 1, /* llama.cpp b4747 makes the same substitution */
    QE_FALLBACK_QEVAL = 2, /* llama.cpp aborts here; qeval substitutes */
};

/* One tensor as the planner sees it (borrowed name). */
typedef struct qe_mix_tensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];     /* ne[0] = row length; unused dims = 1 */
    int src_type;      /* qe_type the tensor has now */
    int forced_type;   /* qe_type from a custom rule, or -1 */
} qe_mix_tensor;

typedef struct qe_mix_opts {
    int ftype;            /* qe_ftype, or -1: no base mix (unforced tensors stay as is) */
    bool pure;            /* llama-quantize --pure: base type everywhere */
    bool has_imatrix;     /* an importance matrix will be supplied */
    bool leave_output;    /* --leave-output-tensor */
    int output_type;      /* --output-tensor-type (qe_type), or -1 */
    int token_embd_type;  /* --token-embedding-type (qe_type), or -1 */
    /* model facts the rules consult */
    const char *arch;     /* "llama", "qwen2", "falcon"...; NULL = llama */
    int n_layer;
    int n_head;
    int n_head_kv;
    int n_expert;         /* 0 for dense models */
} qe_mix_opts;

typedef struct qe_mix_choice {
    int type;        /* final qe_type */
    int wanted;      /* qe_type asked for before the row-length fallback */
    bool quantize;   /* type != src_type: the data must be converted */
    int source;      /* enum qe_mix_source */
    int fallback;    /* enum qe_fallback_kind */
} qe_mix_choice;

/*
 * Decide the type of every tensor.  `ts` and `out` have n entries each
 * (out[i] belongs to ts[i]); the order of `ts` does not matter (the
 * counters follow llama.cpp's visiting order internally).
 * Errors: QE_EINVAL for an unknown ftype or a type that needs an
 * importance matrix when opts->has_imatrix is false (message names the
 * tensor and the type), QE_ENOMEM.
 */
int qe_mix_plan(const qe_mix_opts *opts, const qe_mix_tensor *ts, int n, qe_mix_choice *out,
                qe_err *err);

/* True if llama.cpp would quantize a tensor of this name and rank at all
 * (ends in "weight", >= 2 dims, not a norm, not ffn_gate_inp, ...).
 * leave_output excludes output.weight. */
bool qe_mix_is_quantizable(const char *name, uint32_t n_dims, bool leave_output);

/* Apply the row-length fallback to `type` for rows of ne0 elements.
 * *kind (may be NULL) gets the enum qe_fallback_kind; `llama_rules` says
 * whether llama.cpp's fallback table would be consulted (mix rules, not
 * --pure and not a custom rule). */
int qe_mix_fallback(int type, int64_t ne0, bool llama_rules, int *kind);

/* Whether the type needs an importance matrix in llama.cpp's check for
 * this tensor under this ftype (IQ1/IQ2 types, Q2_K under Q2_K_S...). */
bool qe_mix_type_needs_imatrix(int type, int ftype, const char *name);

/* Bytes of a tensor of `type` and shape ne (0 if ne[0] does not fit the
 * block or the type is unknown). */
uint64_t qe_mix_tensor_nbytes(int type, const int64_t ne[4]);

#endif /* QE_RECIPE_H */
