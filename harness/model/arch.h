/*
 * arch.h: architectures as data.  Each architecture the inference core runs
 * is one qe_arch_desc row: which optional block features it has (q/k norms,
 * post-branch norms, embedding scale, soft-caps, sliding window, fused
 * tensors, LongRoPE factors, experts), its feed-forward activation and its
 * RoPE flavour.  The loaders (GGUF, safetensors + config.json) turn the row
 * plus the model's metadata into the feature fields of qe_config
 * (qe_arch_apply); the forward pass and the shape validation read only those
 * fields, never the architecture name.
 *
 * Adding an architecture = one row here (+ the HF name mapping if it has
 * safetensors checkpoints), plus at most one new block feature when it
 * needs something none of the rows has.
 *
 * Must not hold: tensor math, file parsing.
 */
#ifndef QE_ARCH_H
#define QE_ARCH_H

#include <stdbool.h>

#include "../util/common.h"

struct qe_config;
struct qe_gguf;
struct qe_model;

enum qe_ffn_act { QE_ACT_SILU = 0, QE_ACT_GELU = 1 /* tanh approximation */ };

/* qe_arch_desc.flags */
#define QE_ARCH_QK_NORM      (1u << 0) /* RMS norm of each q and k head before RoPE
                                          (attn_q_norm, attn_k_norm: head_dim) */
#define QE_ARCH_POST_NORMS   (1u << 1) /* post_attention_norm / post_ffw_norm on the branch
                                          outputs before the residual add */
#define QE_ARCH_EMBD_SCALE   (1u << 2) /* input embeddings times sqrt(n_embd) */
#define QE_ARCH_Q_PRESCALE   (1u << 3) /* q (after RoPE) times the attention scale, scores
                                          unscaled (same maths, llama.cpp's rounding) */
#define QE_ARCH_SOFTCAP      (1u << 4) /* attention-logit and final-logit soft-caps
                                          (keys attn_logit_softcapping, final_logit_softcapping;
                                          defaults 50, 30) */
#define QE_ARCH_FUSED        (1u << 5) /* attn_qkv (rows q|k|v) and ffn_up (rows gate|up) */
#define QE_ARCH_ROPE_FACTORS (1u << 6) /* LongRoPE rope_factors_long/short: long when the
                                          context exceeds rope.scaling.original_context_length */
#define QE_ARCH_MOE          (1u << 7) /* experts allowed (expert_count > 0): router
                                          ffn_gate_inp, 3-D ffn_{gate,up,down}_exps, softmax */
#define QE_ARCH_MOE_NORM     (1u << 8) /* top-k router weights renormalised to sum 1 */
#define QE_ARCH_SHEXP        (1u << 9) /* shared expert ffn_*_shexp, output times
                                          sigmoid(ffn_gate_inp_shexp . x) */
#define QE_ARCH_QKV_BIAS     (1u << 10) /* attn_{q,k,v}.bias allowed */
#define QE_ARCH_SWA_BASE     (1u << 11) /* local layers: own RoPE base (rope.freq_base_swa,
                                           default 10000) and no RoPE scaling */

typedef struct qe_arch_desc {
    const char *name;    /* general.architecture */
    int rope_kind;       /* enum qe_rope_kind */
    int ffn_act;         /* enum qe_ffn_act (gated: act(gate) * up) */
    unsigned flags;      /* QE_ARCH_* */
    int swa_pattern;     /* 0: no sliding window; 1: every layer; n > 1: layer l is local
                            when l % n < n - 1 (gemma2: 2, gemma3: 6) */
    int swa_default;     /* window when the key is absent; 0 = key required */
    int big_n_layer;     /* > 0: a model with this many layers scales queries by
                            1/sqrt(n_embd/n_head) instead of 1/sqrt(head_dim) (gemma 27B) */
} qe_arch_desc;

/* The row for `name`, or NULL. */
const qe_arch_desc *qe_arch_find(const char *name);

/* "llama, qwen2, ..." (every row, in table order). */
const char *qe_arch_list(void);

/*
 * Fill the feature fields of m->cfg from its architecture row, the GGUF
 * metadata g and the tensor table (fused tensors, shared expert, rope
 * factors are recognised by their presence).  g is NULL for safetensors /
 * llama2.c: the loader has set the metadata fields (n_expert, n_swa,
 * soft-caps, ...) from config.json before; they are kept.  Needs the basic
 * hyperparameters and the tensors.  Errors (QE_EUNSUPPORTED for an unknown
 * architecture, QE_EFORMAT for an inconsistent key) name the key.
 */
int qe_arch_apply(struct qe_model *m, const struct qe_gguf *g, qe_err *err);

/* Defaults of the feature fields for architecture row d (no metadata). */
void qe_arch_defaults(struct qe_config *c, const qe_arch_desc *d);

/* Does layer l use the sliding window? */
bool qe_config_layer_swa(const struct qe_config *c, int l);

#endif /* QE_ARCH_H */
