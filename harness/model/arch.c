/*
 * arch.c: the architecture table and qe_arch_apply (descriptor + metadata ->
 * qe_config features).  What each row says follows llama.cpp (b4747 for
 * llama/qwen2/qwen2moe/phi3/gemma2; later builds for qwen3, qwen3moe,
 * gemma3), see the issue-13 notes for where we chose otherwise.
 *
 * Must not hold: tensor math, file parsing beyond key lookups.
 */
#include "arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "model.h"

static const qe_arch_desc arch_table[] = {
    /* Llama 1-3, Mistral; Mixtral when expert_count > 0 (expert width = feed_forward_length) */
    {"llama", QE_ROPE_NORM, QE_ACT_SILU, QE_ARCH_QKV_BIAS | QE_ARCH_MOE | QE_ARCH_MOE_NORM, 0, 0,
     0},
    {"qwen2", QE_ROPE_NEOX, QE_ACT_SILU, QE_ARCH_QKV_BIAS, 0, 0, 0},
    /* softmax router, top-k not renormalised, shared expert with sigmoid gate */
    {"qwen2moe", QE_ROPE_NEOX, QE_ACT_SILU, QE_ARCH_QKV_BIAS | QE_ARCH_MOE | QE_ARCH_SHEXP, 0, 0,
     0},
    {"qwen3", QE_ROPE_NEOX, QE_ACT_SILU, QE_ARCH_QK_NORM, 0, 0, 0},
    {"qwen3moe", QE_ROPE_NEOX, QE_ACT_SILU, QE_ARCH_QK_NORM | QE_ARCH_MOE | QE_ARCH_MOE_NORM, 0,
     0, 0},
    /* window on even layers (default 4096), soft-caps 50/30, 27B = 46 layers */
    {"gemma2", QE_ROPE_NEOX, QE_ACT_GELU,
     QE_ARCH_POST_NORMS | QE_ARCH_EMBD_SCALE | QE_ARCH_Q_PRESCALE | QE_ARCH_SOFTCAP, 2, 4096, 46},
    /* 5 local layers then 1 global; local RoPE base 10000; 27B = 62 layers */
    {"gemma3", QE_ROPE_NEOX, QE_ACT_GELU,
     QE_ARCH_QK_NORM | QE_ARCH_POST_NORMS | QE_ARCH_EMBD_SCALE | QE_ARCH_Q_PRESCALE |
         QE_ARCH_SWA_BASE,
     6, -1, 62},
    /* fused qkv / gate-up, LongRoPE; b4747 applies the window (when given) to every layer */
    {"phi3", QE_ROPE_NEOX, QE_ACT_SILU,
     QE_ARCH_FUSED | QE_ARCH_ROPE_FACTORS | QE_ARCH_Q_PRESCALE | QE_ARCH_QKV_BIAS, 1, 0, 0},
};

#define N_ARCH ((int)(sizeof arch_table / sizeof arch_table[0]))

const qe_arch_desc *qe_arch_find(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; i < N_ARCH; i++)
        if (strcmp(arch_table[i].name, name) == 0)
            return &arch_table[i];
    return NULL;
}

const char *qe_arch_list(void)
{
    static char buf[256];
    if (!buf[0])
        for (int i = 0; i < N_ARCH; i++) {
            if (i)
                strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
            strncat(buf, arch_table[i].name, sizeof buf - strlen(buf) - 1);
        }
    return buf;
}

bool qe_config_layer_swa(const qe_config *c, int l)
{
    if (c->n_swa <= 0 || c->swa_pattern <= 0)
        return false;
    return c->swa_pattern == 1 || l % c->swa_pattern < c->swa_pattern - 1;
}

void qe_arch_defaults(qe_config *c, const qe_arch_desc *d)
{
    c->rope_kind = d->rope_kind;
    c->ffn_act = d->ffn_act;
    c->qk_norm = (d->flags & QE_ARCH_QK_NORM) != 0;
    c->post_norms = (d->flags & QE_ARCH_POST_NORMS) != 0;
    c->q_prescale = (d->flags & QE_ARCH_Q_PRESCALE) != 0;
    c->moe_norm_topk = (d->flags & QE_ARCH_MOE_NORM) != 0;
    c->swa_pattern = d->swa_pattern;
    c->embd_scale = (d->flags & QE_ARCH_EMBD_SCALE) ? sqrtf((float)c->n_embd) : 1.0f;
    if (d->flags & QE_ARCH_SOFTCAP) {
        c->attn_softcap = 50.0f;
        c->final_softcap = 30.0f;
    }
    if (d->swa_pattern && d->swa_default > 0)
        c->n_swa = d->swa_default;
}

/* "<arch>.<suffix>" as int / positive float: 0 set, 1 absent, < 0 error. */
static int key_int(const qe_gguf *g, const char *arch, const char *suffix, int *out, qe_err *err)
{
    return qe_model_key_int(g, arch, suffix, false, out, err);
}

static int key_pos_float(const qe_gguf *g, const char *arch, const char *suffix, float *out,
                         qe_err *err)
{
    float v = 0;
    int rc = qe_model_key_float(g, arch, suffix, &v, err);
    if (rc)
        return rc;
    if (!(v > 0.0f) || !isfinite(v))
        return qe_err_set(err, QE_EFORMAT, "%s: key '%s.%s' = %g: expected a positive number",
                          g->path, arch, suffix, (double)v);
    *out = v;
    return 0;
}

int qe_arch_apply(qe_model *m, const qe_gguf *g, qe_err *err)
{
    qe_config *c = &m->cfg;
    const qe_arch_desc *d = qe_arch_find(c->arch);
    const char *a = c->arch, *path = m->path;
    if (!d)
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: %s)", path, a,
                          qe_arch_list());
    int rc;
    if (g) {
        qe_arch_defaults(c, d);
        int vlen = 0;
        if ((rc = key_int(g, a, "attention.value_length", &vlen, err)) < 0)
            return rc;
        if (rc == 0 && vlen != c->head_dim)
            return qe_err_set(err, QE_EUNSUPPORTED,
                              "%s: key '%s.attention.value_length' = %d differs from the key "
                              "head dim %d (key_length): not supported",
                              path, a, vlen, c->head_dim);
        if ((rc = key_int(g, a, "expert_count", &c->n_expert, err)) < 0 ||
            (rc = key_int(g, a, "expert_used_count", &c->n_expert_used, err)) < 0)
            return rc;
        c->n_ff_exp = c->n_ff;
        if ((rc = key_int(g, a, "expert_feed_forward_length", &c->n_ff_exp, err)) < 0 ||
            (rc = key_int(g, a, "expert_shared_feed_forward_length", &c->n_ff_shexp, err)) < 0)
            return rc;
        if (d->swa_pattern) {
            if ((rc = key_int(g, a, "attention.sliding_window", &c->n_swa, err)) < 0)
                return rc;
            if (rc == 1 && d->swa_default < 0)
                return qe_err_set(err, QE_ENOTFOUND, "%s: missing key '%s.attention."
                                  "sliding_window' (%s has local attention layers)", path, a, a);
            if (c->n_swa == 0 && d->swa_default != 0)
                return qe_err_set(err, QE_EFORMAT, "%s: key '%s.attention.sliding_window' = 0: "
                                  "expected a positive window", path, a);
        }
        if (d->swa_pattern > 1) {
            /* newer converters may write the pattern; an integer n means
             * "n-1 local then 1 global" (per-layer arrays are not read) */
            char key[160];
            snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", a);
            const qe_gguf_value *v = qe_gguf_get(g, key);
            if (v && v->type != QE_GGUF_ARRAY) {
                int pat = 0;
                if ((rc = key_int(g, a, "attention.sliding_window_pattern", &pat, err)) < 0)
                    return rc;
                if (pat < 1 || pat > c->n_layer + 1)
                    return qe_err_set(err, QE_EFORMAT, "%s: key '%s' = %d: expected 1 .. "
                                      "n_layer + 1", path, key, pat);
                c->swa_pattern = pat;
            }
        }
        if (d->flags & QE_ARCH_SOFTCAP) {
            if ((rc = key_pos_float(g, a, "attn_logit_softcapping", &c->attn_softcap, err)) < 0 ||
                (rc = key_pos_float(g, a, "final_logit_softcapping", &c->final_softcap, err)) < 0)
                return rc;
        }
        c->rope_attn_factor = 1.0f;
        if ((rc = key_pos_float(g, a, "rope.scaling.attn_factor", &c->rope_attn_factor, err)) < 0)
            return rc;
        if (d->flags & QE_ARCH_SWA_BASE) {
            c->rope_freq_base_swa = 10000.0f;
            c->rope_freq_scale_swa = 1.0f;
            if ((rc = key_pos_float(g, a, "rope.freq_base_swa", &c->rope_freq_base_swa, err)) < 0)
                return rc;
        }
    } else {
        /* metadata fields came from the loader; the descriptor's own ones: */
        c->rope_kind = d->rope_kind;
        c->ffn_act = d->ffn_act;
        c->qk_norm = (d->flags & QE_ARCH_QK_NORM) != 0;
        c->post_norms = (d->flags & QE_ARCH_POST_NORMS) != 0;
        c->q_prescale = (d->flags & QE_ARCH_Q_PRESCALE) != 0;
        c->moe_norm_topk = (d->flags & QE_ARCH_MOE_NORM) != 0;
        if (c->swa_pattern <= 0 || !d->swa_pattern)
            c->swa_pattern = d->swa_pattern;
        c->embd_scale = (d->flags & QE_ARCH_EMBD_SCALE) ? sqrtf((float)c->n_embd) : 1.0f;
        if (c->n_ff_exp == 0)
            c->n_ff_exp = c->n_ff;
        if (!(c->rope_attn_factor > 0.0f))
            c->rope_attn_factor = 1.0f;
        if (d->swa_pattern && c->n_swa <= 0 && d->swa_default > 0)
            c->n_swa = d->swa_default;
        if (d->swa_pattern && d->swa_default != 0 && c->n_swa <= 0)
            return qe_err_set(err, QE_EFORMAT, "%s: sliding_window %d: expected a positive "
                              "window (%s has local attention layers)", path, c->n_swa, a);
        if (d->flags & QE_ARCH_SWA_BASE)
            c->rope_freq_scale_swa = 1.0f;
    }
    if (!(d->flags & QE_ARCH_SWA_BASE)) {
        c->rope_freq_base_swa = c->rope_freq_base;
        c->rope_freq_scale_swa = c->rope_freq_scale;
    }
    if (!d->swa_pattern)
        c->n_swa = 0;
    c->attn_scale = d->big_n_layer > 0 && c->n_layer == d->big_n_layer && c->n_head > 0
                        ? 1.0f / sqrtf((float)(c->n_embd / c->n_head))
                        : 1.0f / sqrtf((float)c->head_dim);

    /* experts */
    const bool has_router = qe_model_tensor(m, "blk.0.ffn_gate_inp.weight") != NULL;
    if (c->n_expert > 0 && !(d->flags & QE_ARCH_MOE))
        return qe_err_set(err, QE_EUNSUPPORTED, "%s: key '%s.expert_count' = %d but architecture "
                          "'%s' has no experts here", path, a, c->n_expert, a);
    if (c->n_expert == 0 && has_router)
        return qe_err_set(err, QE_EFORMAT, "%s: tensor 'blk.0.ffn_gate_inp.weight' (expert "
                          "router) present but key '%s.expert_count' is missing or 0", path, a);
    if (c->n_expert > 0) {
        if (c->n_expert > 256)
            return qe_err_set(err, QE_EFORMAT, "%s: key '%s.expert_count' = %d: at most 256 "
                              "supported", path, a, c->n_expert);
        if (c->n_expert_used < 1 || c->n_expert_used > c->n_expert)
            return qe_err_set(err, QE_EFORMAT, "%s: key '%s.expert_used_count' = %d: expected 1 "
                              "to expert_count %d", path, a, c->n_expert_used, c->n_expert);
        if (c->n_ff_exp <= 0)
            return qe_err_set(err, QE_EFORMAT, "%s: key '%s.expert_feed_forward_length' = %d: "
                              "expected a positive width", path, a, c->n_ff_exp);
    } else {
        c->n_expert_used = 0;
    }
    const qe_tensor *sh = qe_model_tensor(m, "blk.0.ffn_gate_shexp.weight");
    if (!(d->flags & QE_ARCH_SHEXP) || c->n_expert == 0)
        c->n_ff_shexp = 0;
    else if (sh && c->n_ff_shexp == 0 && sh->ne[1] > 0 && sh->ne[1] <= 0x7fffffff)
        c->n_ff_shexp = (int)sh->ne[1];
    else if (!sh)
        c->n_ff_shexp = 0;

    /* fused tensors, LongRoPE factors */
    c->fused_qkv = (d->flags & QE_ARCH_FUSED) && qe_model_tensor(m, "blk.0.attn_qkv.weight");
    c->fused_gate_up = (d->flags & QE_ARCH_FUSED) && c->n_expert == 0 &&
                       !qe_model_tensor(m, "blk.0.ffn_gate.weight");
    c->has_rope_factors = (d->flags & QE_ARCH_ROPE_FACTORS) &&
                          (qe_model_tensor(m, "rope_factors_long.weight") ||
                           qe_model_tensor(m, "rope_factors_short.weight"));
    return 0;
}
