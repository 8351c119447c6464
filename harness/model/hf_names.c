/*
 * hf_names.c: the one table mapping Hugging Face (transformers) tensor
 * names of llama / mistral / qwen2 / qwen3 / qwen3-moe / mixtral / gemma2 /
 * gemma3 / phi3 checkpoints to GGUF canonical names, as llama.cpp's
 * convert_hf_to_gguf.py names them.  "{N}" stands for the layer index and
 * "{E}" for the expert index (decimal, no sign, no leading zeros).
 * Holds no I/O.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

/* gguf "{N}" = layer, "{E}" = expert (its tensors are stacked into one
 * 3-D GGUF tensor by the loader).  `arch`: rows that apply to these
 * architectures only ("|"-separated, matched before the generic rows);
 * NULL = every architecture. */
static const struct {
    const char *hf;
    const char *gguf;
    const char *arch;
} k_names[] = {
    /* gemma2/3: four norms per block; the HF post_attention_layernorm is a
     * post-branch norm there, not the FFN's input norm */
    {"model.layers.{N}.post_attention_layernorm.weight", "blk.{N}.post_attention_norm.weight",
     "gemma2|gemma3"},
    {"model.layers.{N}.pre_feedforward_layernorm.weight", "blk.{N}.ffn_norm.weight",
     "gemma2|gemma3"},
    {"model.layers.{N}.post_feedforward_layernorm.weight", "blk.{N}.post_ffw_norm.weight",
     "gemma2|gemma3"},
    /* Mixtral (block_sparse_moe.experts.{E}.w1/w3/w2 = gate/up/down) */
    {"model.layers.{N}.block_sparse_moe.gate.weight", "blk.{N}.ffn_gate_inp.weight", NULL},
    {"model.layers.{N}.block_sparse_moe.experts.{E}.w1.weight", "blk.{N}.ffn_gate_exps.weight",
     NULL},
    {"model.layers.{N}.block_sparse_moe.experts.{E}.w3.weight", "blk.{N}.ffn_up_exps.weight",
     NULL},
    {"model.layers.{N}.block_sparse_moe.experts.{E}.w2.weight", "blk.{N}.ffn_down_exps.weight",
     NULL},
    /* Qwen2-MoE / Qwen3-MoE */
    {"model.layers.{N}.mlp.gate.weight", "blk.{N}.ffn_gate_inp.weight", NULL},
    {"model.layers.{N}.mlp.experts.{E}.gate_proj.weight", "blk.{N}.ffn_gate_exps.weight", NULL},
    {"model.layers.{N}.mlp.experts.{E}.up_proj.weight", "blk.{N}.ffn_up_exps.weight", NULL},
    {"model.layers.{N}.mlp.experts.{E}.down_proj.weight", "blk.{N}.ffn_down_exps.weight", NULL},
    {"model.layers.{N}.mlp.shared_expert.gate_proj.weight", "blk.{N}.ffn_gate_shexp.weight",
     NULL},
    {"model.layers.{N}.mlp.shared_expert.up_proj.weight", "blk.{N}.ffn_up_shexp.weight", NULL},
    {"model.layers.{N}.mlp.shared_expert.down_proj.weight", "blk.{N}.ffn_down_shexp.weight",
     NULL},
    {"model.layers.{N}.mlp.shared_expert_gate.weight", "blk.{N}.ffn_gate_inp_shexp.weight",
     NULL},
    /* Qwen3, Gemma3: per-head q/k norms */
    {"model.layers.{N}.self_attn.q_norm.weight", "blk.{N}.attn_q_norm.weight", NULL},
    {"model.layers.{N}.self_attn.k_norm.weight", "blk.{N}.attn_k_norm.weight", NULL},
    /* Phi-3: fused projections */
    {"model.layers.{N}.self_attn.qkv_proj.weight", "blk.{N}.attn_qkv.weight", NULL},
    {"model.layers.{N}.mlp.gate_up_proj.weight", "blk.{N}.ffn_up.weight", NULL},
    /* llama / mistral / qwen2 (and the shared parts of the others) */
    {"model.embed_tokens.weight", "token_embd.weight", NULL},
    {"model.norm.weight", "output_norm.weight", NULL},
    {"lm_head.weight", "output.weight", NULL},
    {"model.layers.{N}.input_layernorm.weight", "blk.{N}.attn_norm.weight", NULL},
    {"model.layers.{N}.self_attn.q_proj.weight", "blk.{N}.attn_q.weight", NULL},
    {"model.layers.{N}.self_attn.k_proj.weight", "blk.{N}.attn_k.weight", NULL},
    {"model.layers.{N}.self_attn.v_proj.weight", "blk.{N}.attn_v.weight", NULL},
    {"model.layers.{N}.self_attn.o_proj.weight", "blk.{N}.attn_output.weight", NULL},
    {"model.layers.{N}.self_attn.q_proj.bias", "blk.{N}.attn_q.bias", NULL},
    {"model.layers.{N}.self_attn.k_proj.bias", "blk.{N}.attn_k.bias", NULL},
    {"model.layers.{N}.self_attn.v_proj.bias", "blk.{N}.attn_v.bias", NULL},
    {"model.layers.{N}.self_attn.o_proj.bias", "blk.{N}.attn_output.bias", NULL},
    {"model.layers.{N}.post_attention_layernorm.weight", "blk.{N}.ffn_norm.weight", NULL},
    {"model.layers.{N}.mlp.gate_proj.weight", "blk.{N}.ffn_gate.weight", NULL},
    {"model.layers.{N}.mlp.up_proj.weight", "blk.{N}.ffn_up.weight", NULL},
    {"model.layers.{N}.mlp.down_proj.weight", "blk.{N}.ffn_down.weight", NULL},
};
#define N_NAMES (sizeof k_names / sizeof k_names[0])

/* A decimal index at *d (no sign, no leading zeros, < 10^6): its value, or -1. */
static long read_index(const char **d)
{
    long v = 0;
    size_t nd = 0;
    const char *s = *d;
    while (s[nd] >= '0' && s[nd] <= '9') {
        if (nd >= 6) /* more than a million layers: not a name we know */
            return -1;
        v = v * 10 + (s[nd] - '0');
        nd++;
    }
    if (nd == 0 || (nd > 1 && s[0] == '0'))
        return -1;
    *d = s + nd;
    return v;
}

/* Match `s` against `pat` ({N} and {E} placeholders); on success idx[0] =
 * the {N} value, idx[1] = the {E} value (or -1). */
static int name_match(const char *pat, const char *s, long idx[2])
{
    idx[0] = idx[1] = -1;
    while (*pat) {
        if (pat[0] == '{' && (pat[1] == 'N' || pat[1] == 'E') && pat[2] == '}') {
            long v = read_index(&s);
            if (v < 0)
                return 0;
            idx[pat[1] == 'E'] = v;
            pat += 3;
            continue;
        }
        if (*pat != *s)
            return 0;
        pat++;
        s++;
    }
    return *s == 0;
}

static int name_render(const char *pat, const long idx[2], char *out, size_t cap)
{
    size_t n = 0;
    while (*pat) {
        int w;
        if (pat[0] == '{' && (pat[1] == 'N' || pat[1] == 'E') && pat[2] == '}') {
            w = snprintf(out + n, cap - n, "%ld", idx[pat[1] == 'E']);
            pat += 3;
        } else {
            w = snprintf(out + n, cap - n, "%c", *pat++);
        }
        if (w < 0 || (size_t)w >= cap - n)
            return QE_EFORMAT;
        n += (size_t)w;
    }
    return 1;
}

static bool arch_in(const char *list, const char *arch)
{
    if (!list)
        return true;
    if (!arch)
        return false;
    size_t n = strlen(arch);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, '|');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && strncmp(p, arch, n) == 0)
            return true;
        p += k + (e ? 1 : 0);
    }
    return false;
}

int qe_hf_name_to_gguf_arch(const char *arch, const char *hf, char *out, size_t cap,
                            int *expert)
{
    long idx[2];
    *expert = -1;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < N_NAMES; i++) {
            if ((pass == 0) != (k_names[i].arch != NULL) || !arch_in(k_names[i].arch, arch))
                continue;
            if (name_match(k_names[i].hf, hf, idx)) {
                *expert = (int)idx[1];
                return name_render(k_names[i].gguf, idx, out, cap);
            }
        }
    return 0;
}

int qe_hf_name_to_gguf(const char *hf, char *out, size_t cap)
{
    int expert;
    int r = qe_hf_name_to_gguf_arch("llama", hf, out, cap, &expert);
    return r == 1 && expert >= 0 ? 0 : r;
}

int qe_gguf_name_to_hf(const char *gguf, char *out, size_t cap)
{
    long idx[2];
    for (size_t i = 0; i < N_NAMES; i++)
        if (!k_names[i].arch && !strstr(k_names[i].hf, "{E}") &&
            name_match(k_names[i].gguf, gguf, idx))
            return name_render(k_names[i].hf, idx, out, cap);
    return 0;
}
