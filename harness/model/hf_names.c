/*
 * hf_names.c: the one table mapping Hugging Face (transformers) tensor
 * names of llama / mistral / qwen2 checkpoints to GGUF canonical names, as
 * llama.cpp's convert_hf_to_gguf.py names them.  "{N}" stands for the
 * layer index (decimal, no sign, no leading zeros) on both sides.
 * Holds no I/O.
 */
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

static const struct {
    const char *hf;
    const char *gguf;
} k_names[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {"model.layers.{N}.input_layernorm.weight", "blk.{N}.attn_norm.weight"},
    {"model.layers.{N}.self_attn.q_proj.weight", "blk.{N}.attn_q.weight"},
    {"model.layers.{N}.self_attn.k_proj.weight", "blk.{N}.attn_k.weight"},
    {"model.layers.{N}.self_attn.v_proj.weight", "blk.{N}.attn_v.weight"},
    {"model.layers.{N}.self_attn.o_proj.weight", "blk.{N}.attn_output.weight"},
    {"model.layers.{N}.self_attn.q_proj.bias", "blk.{N}.attn_q.bias"},
    {"model.layers.{N}.self_attn.k_proj.bias", "blk.{N}.attn_k.bias"},
    {"model.layers.{N}.self_attn.v_proj.bias", "blk.{N}.attn_v.bias"},
    {"model.layers.{N}.self_attn.o_proj.bias", "blk.{N}.attn_output.bias"},
    {"model.layers.{N}.post_attention_layernorm.weight", "blk.{N}.ffn_norm.weight"},
    {"model.layers.{N}.mlp.gate_proj.weight", "blk.{N}.ffn_gate.weight"},
    {"model.layers.{N}.mlp.up_proj.weight", "blk.{N}.ffn_up.weight"},
    {"model.layers.{N}.mlp.down_proj.weight", "blk.{N}.ffn_down.weight"},
};
#define N_NAMES (sizeof k_names / sizeof k_names[0])

/* Match `s` against `pat`; on success *layer = the {N} value (or -1). */
static int name_match(const char *pat, const char *s, long *layer)
{
    *layer = -1;
    const char *ph = strstr(pat, "{N}");
    if (!ph)
        return strcmp(pat, s) == 0;
    size_t pre = (size_t)(ph - pat);
    if (strncmp(pat, s, pre) != 0)
        return 0;
    const char *d = s + pre;
    long v = 0;
    size_t nd = 0;
    while (d[nd] >= '0' && d[nd] <= '9') {
        if (nd >= 6) /* more than a million layers: not a name we know */
            return 0;
        v = v * 10 + (d[nd] - '0');
        nd++;
    }
    if (nd == 0 || (nd > 1 && d[0] == '0'))
        return 0;
    if (strcmp(ph + 3, d + nd) != 0)
        return 0;
    *layer = v;
    return 1;
}

static int name_render(const char *pat, long layer, char *out, size_t cap)
{
    const char *ph = strstr(pat, "{N}");
    int w = ph ? snprintf(out, cap, "%.*s%ld%s", (int)(ph - pat), pat, layer, ph + 3)
               : snprintf(out, cap, "%s", pat);
    return (w < 0 || (size_t)w >= cap) ? QE_EFORMAT : 1;
}

int qe_hf_name_to_gguf(const char *hf, char *out, size_t cap)
{
    long layer;
    for (size_t i = 0; i < N_NAMES; i++)
        if (name_match(k_names[i].hf, hf, &layer))
            return name_render(k_names[i].gguf, layer, out, cap);
    return 0;
}

int qe_gguf_name_to_hf(const char *gguf, char *out, size_t cap)
{
    long layer;
    for (size_t i = 0; i < N_NAMES; i++)
        if (name_match(k_names[i].gguf, gguf, &layer))
            return name_render(k_names[i].hf, layer, out, cap);
    return 0;
}
