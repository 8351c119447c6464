/*
 * model.h: a loaded model = hyperparameters + tokenizer + named tensors,
 * whatever the file format (GGUF, safetensors dir + config.json +
 * tokenizer.json, llama2.c .bin + tokenizer.bin).
 *
 * Tensor names and layouts follow GGUF's canonical convention so that
 * everything downstream (quant recipes, the forward pass) sees one shape:
 *   token_embd.weight      (n_vocab, n_embd)      ne = {n_embd, n_vocab}
 *   output_norm.weight     (n_embd)
 *   output.weight          (n_vocab, n_embd)      absent when tied
 *   blk.N.attn_norm.weight (n_embd)
 *   blk.N.attn_q.weight    (n_head*head_dim, n_embd)
 *   blk.N.attn_k.weight    (n_head_kv*head_dim, n_embd)
 *   blk.N.attn_v.weight    (n_head_kv*head_dim, n_embd)
 *   blk.N.attn_q.bias ...  (qwen2 only)
 *   blk.N.attn_output.weight (n_embd, n_head*head_dim)
 *   blk.N.ffn_norm.weight  (n_embd)
 *   blk.N.ffn_gate.weight  (n_ff, n_embd)
 *   blk.N.ffn_up.weight    (n_ff, n_embd)
 *   blk.N.ffn_down.weight  (n_embd, n_ff)
 * ne[0] is always the contiguous row length (input features).  Q/K rows
 * of HF llama checkpoints are permuted on load as convert_hf_to_gguf.py
 * does, so llama-family models always use "normal" (adjacent-pair) RoPE;
 * qwen2 uses NeoX RoPE.
 */
#ifndef QE_MODEL_H
#define QE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

struct qe_gguf;
struct qe_tokenizer;

enum qe_rope_kind { QE_ROPE_NORM = 0, QE_ROPE_NEOX = 2 };
enum qe_rope_scaling { QE_ROPE_SCALING_NONE = 0, QE_ROPE_SCALING_LINEAR = 1, QE_ROPE_SCALING_LLAMA3 = 2 };
enum qe_model_format { QE_FMT_GGUF = 1, QE_FMT_SAFETENSORS = 2, QE_FMT_LLAMA2C = 3 };

typedef struct qe_config {
    char arch[32];        /* "llama", "qwen2" */
    char name[128];       /* general.name or file stem */
    int n_vocab;
    int n_embd;
    int n_ff;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;         /* n_embd / n_head unless the metadata says otherwise */
    int n_rot;            /* rope dimension count (<= head_dim) */
    int n_ctx_train;
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale;   /* 1/linear factor; 1.0 = none */
    int rope_kind;           /* enum qe_rope_kind */
    int rope_scaling;        /* enum qe_rope_scaling */
    float rope_llama3_factor, rope_llama3_low_freq, rope_llama3_high_freq;
    int rope_llama3_orig_ctx;
    bool tied_output;        /* output.weight absent: reuse token_embd */
    bool has_qkv_bias;
    int file_type;           /* general.file_type, -1 if unknown */
    /* Added after the first draft (append-only): */
    bool has_rope_freqs;     /* tensor rope_freqs.weight (n_rot/2 F32 divisors of each
                                rotation frequency) is present: Llama 3.1-style scaling as
                                llama.cpp's converter writes it; use it instead of the
                                rope_llama3_* parameters when set */
    /* Architecture features (harness/model/arch.h: filled by qe_arch_apply from the
     * architecture's descriptor and the metadata; the forward pass reads only these): */
    int ffn_act;             /* enum qe_ffn_act */
    bool qk_norm;            /* attn_q_norm / attn_k_norm (head_dim) */
    bool post_norms;         /* post_attention_norm / post_ffw_norm */
    bool fused_qkv;          /* attn_qkv (n_embd, q_dim + 2 kv_dim), rows q | k | v */
    bool fused_gate_up;      /* ffn_up (n_embd, 2 n_ff), rows gate | up; no ffn_gate */
    bool q_prescale;         /* attention scale applied to q after RoPE */
    bool has_rope_factors;   /* rope_factors_long / rope_factors_short (n_rot/2) */
    float embd_scale;        /* input embeddings times this (1 = none) */
    float attn_scale;        /* q.k scale, 1/sqrt(head_dim) unless the architecture says */
    float attn_softcap;      /* scores -> c*tanh(s/c) before the mask (0 = none) */
    float final_softcap;     /* logits -> c*tanh(l/c) (0 = none) */
    float rope_attn_factor;  /* RoPE cos/sin multiplier (rope.scaling.attn_factor; 1 = none) */
    int n_swa;               /* sliding window: key at p0 masked for query p1 when
                                p1 - p0 >= n_swa (0 = none) */
    int swa_pattern;         /* 1: every layer local; n > 1: layer l local when l % n < n-1 */
    float rope_freq_base_swa, rope_freq_scale_swa; /* RoPE of the local layers */
    int n_expert;            /* experts per layer (0 = dense FFN) */
    int n_expert_used;       /* top-k */
    int n_ff_exp;            /* expert width */
    bool moe_norm_topk;      /* top-k weights renormalised to sum 1 */
    int n_ff_shexp;          /* shared expert width (0 = none): output times
                                sigmoid(ffn_gate_inp_shexp . x) */
} qe_config;

typedef struct qe_tensor {
    char name[96];
    int type;            /* qe_type */
    uint32_t n_dims;
    int64_t ne[4];
    const void *data;    /* view (mmap or owned buffer) */
    uint64_t nbytes;
    void *owned;         /* non-NULL if the model owns the data (freed) */
} qe_tensor;

typedef struct qe_model {
    qe_config cfg;
    struct qe_tokenizer *tok;   /* owned unless tok_borrowed */
    bool tok_borrowed;
    int n_tensors;
    qe_tensor *tensors;
    int format;                 /* enum qe_model_format */
    char path[512];
    uint64_t file_nbytes;       /* sum of source file sizes */
    struct qe_gguf *gguf;       /* owned, for GGUF models (metadata access) */
    void *priv;                 /* loader-private (maps) */
    int n_tensors_cap;          /* capacity of `tensors` */
} qe_model;

/*
 * Load by sniffing: GGUF magic -> GGUF; a directory or *.safetensors ->
 * safetensors (config.json and tokenizer.json beside it); otherwise
 * llama2.c .bin (tokenizer: opts->tokenizer_path, or tokenizer.bin /
 * tok<N>.bin beside the model).
 */
typedef struct qe_load_opts {
    const char *tokenizer_path; /* optional override (llama2.c tokenizer.bin, or an HF
                                   tokenizer.json for safetensors) */
    bool no_tokenizer;          /* do not load a tokenizer (m->tok stays NULL) */
    bool no_validate;           /* skip qe_model_validate (qeval info on odd files) */
} qe_load_opts;

qe_model *qe_model_load(const char *path, const qe_load_opts *opts, qe_err *err);
void qe_model_free(qe_model *m);

const qe_tensor *qe_model_tensor(const qe_model *m, const char *name);
/* "blk.%d.<suffix>" helper; NULL if absent. */
const qe_tensor *qe_model_layer_tensor(const qe_model *m, int layer, const char *suffix);

/* Parameter count over all tensors, and total tensor bytes. */
uint64_t qe_model_n_params(const qe_model *m);
uint64_t qe_model_tensor_nbytes(const qe_model *m);

/* Validate shapes against cfg (every required tensor present, right ne). */
int qe_model_validate(const qe_model *m, qe_err *err);

/* New model sharing cfg and (borrowed) tokenizer, with an empty tensor
 * table of capacity n; used to build quantized variants in memory. */
qe_model *qe_model_new_like(const qe_model *ref, int n_tensors_cap, qe_err *err);

/*
 * Building blocks for the loaders and for code that assembles a model in
 * memory (quantized variants).
 *
 * qe_model_add_tensor appends a tensor; `data` is borrowed unless `owned`
 * is non-NULL (then the model frees `owned` in qe_model_free; usually
 * owned == data).  nbytes is computed from type and ne.  Grows the table
 * as needed.  QE_ETYPE for an unknown type, QE_ESHAPE when ne[0] is not a
 * multiple of the type's block size, QE_EFORMAT for a name >= 96 bytes or
 * a duplicate name.  On failure `owned` is NOT taken over.
 */
int qe_model_add_tensor(qe_model *m, const char *name, int type, uint32_t n_dims,
                        const int64_t *ne, const void *data, void *owned, qe_err *err);

/* Map `path` read-only for the life of the model (added to m->file_nbytes);
 * *out points at the mapping owned by the model. */
int qe_model_attach_map(qe_model *m, const char *path, const qe_map **out, qe_err *err);

/* "gguf" / "safetensors" / "llama2c". */
const char *qe_model_format_name(int format);

/* GGUF key "<arch>.<suffix>" as an int in 0..INT32_MAX / as a float.  Return
 * 0 and set *out when present; 1 when absent (the int: an error naming the
 * key when required); negative on error, the message naming the file and
 * the key. */
int qe_model_key_int(const struct qe_gguf *g, const char *arch, const char *suffix, bool required,
                     int *out, qe_err *err);
int qe_model_key_float(const struct qe_gguf *g, const char *arch, const char *suffix, float *out,
                       qe_err *err);

#endif /* QE_MODEL_H */
