/*
 * recipe.c: llama.cpp b4747's quantization mixes (src/llama-quant.cpp,
 * llama_tensor_get_type) as pure per-tensor logic; see recipe.h.
 *
 * The rule code below mirrors the structure of llama_tensor_get_type on
 * purpose (same branch order, same counters), so that it can be checked
 * against the spec line by line and against the types llama-quantize
 * wrote into the golden files (tests/test_recipe.c).
 */
#include "recipe.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* ------------------------------------------------------------------ */
/* ftype table                                                          */
/* ------------------------------------------------------------------ */

static const qe_ftype_info g_ftypes[QE_FTYPE_COUNT] = {
    [QE_FTYPE_ALL_F32] = {"F32", QE_TYPE_F32, false, false},
    [QE_FTYPE_F16] = {"F16", QE_TYPE_F16, false, false},
    [QE_FTYPE_BF16] = {"BF16", QE_TYPE_BF16, false, false},
    [QE_FTYPE_Q4_0] = {"Q4_0", QE_TYPE_Q4_0, false, true},
    [QE_FTYPE_Q4_1] = {"Q4_1", QE_TYPE_Q4_1, false, true},
    [QE_FTYPE_Q8_0] = {"Q8_0", QE_TYPE_Q8_0, false, true},
    [QE_FTYPE_Q5_0] = {"Q5_0", QE_TYPE_Q5_0, false, true},
    [QE_FTYPE_Q5_1] = {"Q5_1", QE_TYPE_Q5_1, false, true},
    [QE_FTYPE_Q2_K] = {"Q2_K", QE_TYPE_Q2_K, false, true},
    [QE_FTYPE_Q2_K_S] = {"Q2_K_S", QE_TYPE_Q2_K, true, true},
    [QE_FTYPE_Q3_K_S] = {"Q3_K_S", QE_TYPE_Q3_K, false, true},
    [QE_FTYPE_Q3_K_M] = {"Q3_K_M", QE_TYPE_Q3_K, false, true},
    [QE_FTYPE_Q3_K_L] = {"Q3_K_L", QE_TYPE_Q3_K, false, true},
    [QE_FTYPE_Q4_K_S] = {"Q4_K_S", QE_TYPE_Q4_K, false, true},
    [QE_FTYPE_Q4_K_M] = {"Q4_K_M", QE_TYPE_Q4_K, false, true},
    [QE_FTYPE_Q5_K_S] = {"Q5_K_S", QE_TYPE_Q5_K, false, true},
    [QE_FTYPE_Q5_K_M] = {"Q5_K_M", QE_TYPE_Q5_K, false, true},
    [QE_FTYPE_Q6_K] = {"Q6_K", QE_TYPE_Q6_K, false, true},
    [QE_FTYPE_IQ2_XXS] = {"IQ2_XXS", QE_TYPE_IQ2_XXS, true, true},
    [QE_FTYPE_IQ2_XS] = {"IQ2_XS", QE_TYPE_IQ2_XS, true, true},
    [QE_FTYPE_IQ2_S] = {"IQ2_S", QE_TYPE_IQ2_XS, true, true},
    [QE_FTYPE_IQ2_M] = {"IQ2_M", QE_TYPE_IQ2_S, true, true}, /* its iq2_s tensors */
    [QE_FTYPE_IQ3_XS] = {"IQ3_XS", QE_TYPE_IQ3_S, false, true},
    /* llama-quantize accepts the name, then refuses attn_q/attn_k (iq2_s) */
    [QE_FTYPE_IQ3_XXS] = {"IQ3_XXS", QE_TYPE_IQ3_XXS, true, true},
    [QE_FTYPE_IQ3_S] = {"IQ3_S", QE_TYPE_IQ3_S, false, true},
    [QE_FTYPE_IQ3_M] = {"IQ3_M", QE_TYPE_IQ3_S, false, true},
    [QE_FTYPE_IQ1_S] = {"IQ1_S", QE_TYPE_IQ1_S, true, true},
    [QE_FTYPE_IQ1_M] = {"IQ1_M", QE_TYPE_IQ1_M, true, true},
    [QE_FTYPE_IQ4_NL] = {"IQ4_NL", QE_TYPE_IQ4_NL, false, true},
    [QE_FTYPE_IQ4_XS] = {"IQ4_XS", QE_TYPE_IQ4_XS, false, true},
    [QE_FTYPE_TQ1_0] = {"TQ1_0", QE_TYPE_TQ1_0, false, true},
    [QE_FTYPE_TQ2_0] = {"TQ2_0", QE_TYPE_TQ2_0, false, true},
};

/* llama-quantize's aliases (QUANT_OPTIONS "Q3_K" etc.). */
static const struct {
    const char *alias;
    int ftype;
} g_aliases[] = {
    {"Q3_K", QE_FTYPE_Q3_K_M},
    {"Q4_K", QE_FTYPE_Q4_K_M},
    {"Q5_K", QE_FTYPE_Q5_K_M},
    {"ALL_F32", QE_FTYPE_ALL_F32},
};

const qe_ftype_info *qe_ftype_get(int ftype)
{
    if (ftype < 0 || ftype >= QE_FTYPE_COUNT || !g_ftypes[ftype].name)
        return NULL;
    return &g_ftypes[ftype];
}

const char *qe_ftype_name(int ftype)
{
    const qe_ftype_info *f = qe_ftype_get(ftype);
    return f ? f->name : NULL;
}

static bool streq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

int qe_ftype_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int f = 0; f < QE_FTYPE_COUNT; f++)
        if (g_ftypes[f].name && streq_nocase(g_ftypes[f].name, name))
            return f;
    for (size_t i = 0; i < sizeof g_aliases / sizeof g_aliases[0]; i++)
        if (streq_nocase(g_aliases[i].alias, name))
            return g_aliases[i].ftype;
    return -1;
}

const char *qe_ftype_names(void)
{
    return "Q2_K, Q3_K_S, Q3_K_M (=Q3_K), Q3_K_L, Q4_K_S, Q4_K_M (=Q4_K), Q5_K_S, "
           "Q5_K_M (=Q5_K), Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, "
           "IQ3_XS, IQ3_S, IQ3_M, TQ1_0, TQ2_0, F16, BF16, F32; "
           "with an importance matrix also IQ3_XXS, IQ2_M, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, "
           "IQ1_S, Q2_K_S";
}

/* ------------------------------------------------------------------ */
/* row-length fallbacks                                                 */
/* ------------------------------------------------------------------ */

/* llama.cpp's convert_incompatible_tensor table: type -> substitute when
 * ne[0] is not a multiple of the type's block.  0 = no entry (llama.cpp
 * throws; qeval uses F16).  Stored +1 so that 0 can mean "none". */
static const int8_t g_fallback_plus1[QE_TYPE_COUNT] = {
    [QE_TYPE_TQ1_0] = QE_TYPE_Q4_0 + 1,   [QE_TYPE_TQ2_0] = QE_TYPE_Q4_0 + 1,
    [QE_TYPE_IQ2_XXS] = QE_TYPE_IQ4_NL + 1, [QE_TYPE_IQ2_XS] = QE_TYPE_IQ4_NL + 1,
    [QE_TYPE_IQ2_S] = QE_TYPE_IQ4_NL + 1,  [QE_TYPE_IQ3_XXS] = QE_TYPE_IQ4_NL + 1,
    [QE_TYPE_IQ3_S] = QE_TYPE_IQ4_NL + 1,  [QE_TYPE_IQ1_S] = QE_TYPE_IQ4_NL + 1,
    [QE_TYPE_IQ1_M] = QE_TYPE_IQ4_NL + 1,  [QE_TYPE_Q2_K] = QE_TYPE_IQ4_NL + 1,
    [QE_TYPE_Q3_K] = QE_TYPE_IQ4_NL + 1,   [QE_TYPE_IQ4_XS] = QE_TYPE_IQ4_NL + 1,
    [QE_TYPE_Q4_K] = QE_TYPE_Q5_0 + 1,     [QE_TYPE_Q5_K] = QE_TYPE_Q5_1 + 1,
    [QE_TYPE_Q6_K] = QE_TYPE_Q8_0 + 1,
};

static int64_t blck(int type)
{
    const qe_type_traits *tr = qe_type_get(type);
    return tr ? tr->blck_size : 1;
}

int qe_mix_fallback(int type, int64_t ne0, bool llama_rules, int *kind)
{
    int k = QE_FALLBACK_NONE;
    int t = type;
    if (ne0 % blck(type) != 0) {
        int fb = (type >= 0 && type < QE_TYPE_COUNT) ? g_fallback_plus1[type] - 1 : -1;
        if (fb >= 0) {
            t = (ne0 % blck(fb) == 0) ? fb : QE_TYPE_F16;
            k = llama_rules ? QE_FALLBACK_LLAMA : QE_FALLBACK_QEVAL;
        } else {
            /* No block-based type smaller than 32 exists: F16 is the next
             * type whose block (1) fits. */
            t = QE_TYPE_F16;
            k = QE_FALLBACK_QEVAL;
        }
    }
    if (kind)
        *kind = k;
    return t;
}

/* ------------------------------------------------------------------ */
/* which tensors are quantized at all                                   */
/* ------------------------------------------------------------------ */

static bool has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

bool qe_mix_is_quantizable(const char *name, uint32_t n_dims, bool leave_output)
{
    static const char *const never[] = {
        "_norm.weight",          "ffn_gate_inp.weight",   "ssm_conv1d.weight",
        "time_mix_first.weight", "time_mix_w1.weight",    "time_mix_w2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight", "attn_rel_b.weight",
    };
    if (n_dims < 2 || !ends_with(name, "weight"))
        return false;
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (has(name, never[i]))
            return false;
    if (leave_output && strcmp(name, "output.weight") == 0)
        return false;
    /* BERT-style position / token-type embeddings */
    if (strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0)
        return false;
    return true;
}

bool qe_mix_type_needs_imatrix(int type, int ftype, const char *name)
{
    bool tok = strcmp(name, "token_embd.weight") == 0;
    bool out = strcmp(name, "output.weight") == 0;
    return type == QE_TYPE_IQ2_XXS || type == QE_TYPE_IQ2_XS || type == QE_TYPE_IQ2_S ||
           type == QE_TYPE_IQ1_S || (type == QE_TYPE_IQ1_M && !tok && !out) ||
           (type == QE_TYPE_Q2_K && ftype == QE_FTYPE_Q2_K_S && !tok);
}

uint64_t qe_mix_tensor_nbytes(int type, const int64_t ne[4])
{
    size_t row = qe_type_row_nbytes(type, ne[0]);
    uint64_t n = row, tmp;
    for (int d = 1; d < 4; d++) {
        if (!qe_mul_ok(n, (uint64_t)(ne[d] > 0 ? ne[d] : 1), &tmp))
            return 0;
        n = tmp;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* llama_tensor_get_type                                                */
/* ------------------------------------------------------------------ */

typedef struct mix_state {
    const qe_mix_opts *o;
    int ftype;
    bool has_output;
    bool falcon, is_70b;
    int n_gqa;
    int n_attention_wv, n_ffn_down, n_ffn_gate, n_ffn_up;
    int i_attention_wv, i_ffn_down, i_ffn_gate, i_ffn_up;
} mix_state;

static bool use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
           (i_layer - n_layers / 8) % 3 == 2;
}

/* (i_layer, n_layer) as llama.cpp's layer_info: the running counter for
 * dense models, the number in the name for MoE models. */
static int layer_of(const mix_state *s, int counter, const char *name)
{
    int i_layer = counter;
    if (s->o->n_expert > 1) {
        int l;
        if (sscanf(name, "blk.%d.", &l) == 1 && l >= 0 && l < s->o->n_layer)
            i_layer = l;
    }
    return i_layer;
}

#define FT(x) (ftype == QE_FTYPE_##x)

/* The type llama.cpp wants for this tensor before the row-length fallback. */
static int get_type(mix_state *s, int new_type, const qe_mix_tensor *t)
{
    const char *name = t->name;
    const int ftype = s->ftype;
    const int n_expert = s->o->n_expert;

    if (strcmp(name, "output.weight") == 0 ||
        (!s->has_output && strcmp(name, "token_embd.weight") == 0)) {
        if (s->o->output_type >= 0) {
            new_type = s->o->output_type;
        } else {
            int64_t nx = t->ne[0];
            if (s->falcon || nx % blck(new_type) != 0)
                new_type = QE_TYPE_Q8_0;
            else if (FT(IQ2_XXS) || FT(IQ2_XS) || FT(IQ3_XXS) || FT(IQ1_S) || FT(IQ2_S) ||
                     FT(IQ2_M) || FT(IQ1_M))
                new_type = QE_TYPE_Q5_K;
            else if (new_type != QE_TYPE_Q8_0)
                new_type = QE_TYPE_Q6_K;
        }
    } else if (strcmp(name, "token_embd.weight") == 0) {
        if (s->o->token_embd_type >= 0) {
            new_type = s->o->token_embd_type;
        } else {
            if (FT(IQ2_XXS) || FT(IQ2_XS) || FT(IQ1_S) || FT(IQ1_M))
                new_type = QE_TYPE_Q2_K;
            else if (FT(IQ2_S) || FT(IQ2_M))
                new_type = QE_TYPE_IQ3_S;
            else if (FT(IQ3_XXS))
                new_type = QE_TYPE_IQ3_S;
            else if (FT(TQ1_0) || FT(TQ2_0))
                new_type = QE_TYPE_Q4_K;
        }
    } else if (FT(IQ2_XXS) || FT(IQ2_XS) || FT(IQ1_S) || FT(IQ2_S) || FT(IQ2_M) || FT(IQ1_M)) {
        if (has(name, "attn_v.weight")) {
            if (s->n_gqa >= 4 || n_expert >= 4)
                new_type = QE_TYPE_Q4_K;
            else
                new_type = (FT(IQ2_S) || FT(IQ2_M)) ? QE_TYPE_IQ3_S : QE_TYPE_Q2_K;
            ++s->i_attention_wv;
        } else if (n_expert == 8 && has(name, "attn_k.weight")) {
            new_type = QE_TYPE_Q4_K;
        } else if (has(name, "ffn_down")) {
            if (s->i_ffn_down < s->n_ffn_down / 8)
                new_type = (FT(IQ2_S) || FT(IQ2_M)) ? QE_TYPE_IQ3_S : QE_TYPE_Q2_K;
            ++s->i_ffn_down;
        } else if (has(name, "attn_output.weight")) {
            if (n_expert == 8) {
                new_type = QE_TYPE_Q5_K;
            } else {
                if (FT(IQ1_S) || FT(IQ1_M))
                    new_type = QE_TYPE_IQ2_XXS;
                else if (FT(IQ2_S) || FT(IQ2_M))
                    new_type = QE_TYPE_IQ3_S;
            }
        }
    } else if (has(name, "attn_v.weight")) {
        if (FT(Q2_K))
            new_type = s->n_gqa >= 4 ? QE_TYPE_Q4_K : QE_TYPE_Q3_K;
        else if (FT(Q2_K_S) && s->n_gqa >= 4)
            new_type = QE_TYPE_Q4_K;
        else if (FT(IQ3_XXS))
            new_type = s->n_gqa >= 4 ? QE_TYPE_Q4_K
                       : !s->o->has_imatrix ? QE_TYPE_IQ3_S
                                            : QE_TYPE_IQ3_XXS;
        else if ((FT(IQ3_XS) || FT(IQ3_S)) && s->n_gqa >= 4)
            new_type = QE_TYPE_Q4_K;
        else if (FT(IQ3_M))
            new_type = QE_TYPE_Q4_K;
        else if (FT(Q3_K_M))
            new_type = s->i_attention_wv < 2 ? QE_TYPE_Q5_K : QE_TYPE_Q4_K;
        else if (FT(Q3_K_L))
            new_type = QE_TYPE_Q5_K;
        else if ((FT(IQ4_NL) || FT(IQ4_XS)) && s->n_gqa >= 4)
            new_type = QE_TYPE_Q5_K;
        else if ((FT(Q4_K_M) || FT(Q5_K_M)) && use_more_bits(s->i_attention_wv, s->n_attention_wv))
            new_type = QE_TYPE_Q6_K;
        else if (FT(Q4_K_S) && s->i_attention_wv < 4)
            new_type = QE_TYPE_Q5_K;
        if (s->is_70b) {
            /* 8 heads share one attn_v: more bits cost little */
            if (new_type == QE_TYPE_Q3_K || new_type == QE_TYPE_Q4_K)
                new_type = QE_TYPE_Q5_K;
        }
        if (n_expert == 8)
            new_type = QE_TYPE_Q8_0;
        ++s->i_attention_wv;
    } else if (has(name, "attn_k.weight")) {
        if (n_expert == 8)
            new_type = QE_TYPE_Q8_0;
        else if (FT(IQ3_XS))
            new_type = QE_TYPE_IQ3_XXS;
        else if (FT(IQ3_XXS))
            new_type = QE_TYPE_IQ2_S;
    } else if (has(name, "attn_q.weight")) {
        if (FT(IQ3_XS))
            new_type = QE_TYPE_IQ3_XXS;
        else if (FT(IQ3_XXS))
            new_type = QE_TYPE_IQ2_S;
    } else if (has(name, "ffn_down")) {
        int i_layer = layer_of(s, s->i_ffn_down, name), n_layer = s->n_ffn_down;
        if (FT(Q2_K)) {
            new_type = QE_TYPE_Q3_K;
        } else if (FT(Q2_K_S)) {
            if (i_layer < n_layer / 8)
                new_type = QE_TYPE_Q4_K;
        } else if (FT(IQ3_XXS) && !s->o->has_imatrix) {
            new_type = i_layer < n_layer / 8 ? QE_TYPE_Q4_K : QE_TYPE_Q3_K;
        } else if (FT(Q3_K_M)) {
            new_type = i_layer < n_layer / 16 ? QE_TYPE_Q5_K
                       : (!s->falcon || use_more_bits(i_layer, n_layer)) ? QE_TYPE_Q4_K
                                                                         : QE_TYPE_Q3_K;
        } else if (FT(IQ3_M) &&
                   (i_layer < n_layer / 8 || (n_expert == 8 && use_more_bits(i_layer, n_layer)))) {
            new_type = QE_TYPE_Q4_K;
        } else if (FT(Q3_K_L)) {
            new_type = s->falcon ? QE_TYPE_Q4_K : QE_TYPE_Q5_K;
        } else if (FT(Q4_K_M)) {
            if (s->falcon)
                new_type = i_layer < n_layer / 16           ? QE_TYPE_Q6_K
                           : use_more_bits(i_layer, n_layer) ? QE_TYPE_Q5_K
                                                             : QE_TYPE_Q4_K;
            else if (use_more_bits(i_layer, n_layer))
                new_type = QE_TYPE_Q6_K;
        } else if (i_layer < n_layer / 8 && (FT(IQ4_NL) || FT(IQ4_XS)) && !s->o->has_imatrix) {
            new_type = QE_TYPE_Q5_K;
        } else if (FT(Q5_K_M) && use_more_bits(i_layer, n_layer)) {
            new_type = QE_TYPE_Q6_K;
        } else if (FT(Q4_K_S) && !s->falcon && i_layer < n_layer / 8) {
            new_type = QE_TYPE_Q5_K;
        } else if ((FT(Q4_0) || FT(Q5_0)) && s->o->has_imatrix && i_layer < n_layer / 8) {
            /* guard the first ffn_down layers (only with an imatrix, so the
             * imatrix-free result stays what it always was) */
            new_type = FT(Q4_0) ? QE_TYPE_Q4_1 : QE_TYPE_Q5_1;
        }
        ++s->i_ffn_down;
    } else if (has(name, "attn_output.weight")) {
        if (!s->falcon) {
            if (n_expert == 8) {
                if (FT(Q2_K) || FT(IQ3_XS) || FT(IQ3_XXS) || FT(Q3_K_S) || FT(Q3_K_M) ||
                    FT(IQ4_NL) || FT(Q4_K_S) || FT(Q4_K_M) || FT(IQ3_S) || FT(IQ3_M) ||
                    FT(IQ4_XS))
                    new_type = QE_TYPE_Q5_K;
            } else {
                if (FT(Q2_K))
                    new_type = QE_TYPE_Q3_K;
                else if (FT(IQ3_XXS))
                    new_type = QE_TYPE_IQ3_S;
                else if (FT(Q3_K_M))
                    new_type = QE_TYPE_Q4_K;
                else if (FT(Q3_K_L))
                    new_type = QE_TYPE_Q5_K;
                else if (FT(IQ3_M))
                    new_type = QE_TYPE_Q4_K;
            }
        } else {
            if (FT(Q3_K_L))
                new_type = QE_TYPE_Q4_K;
        }
    } else if (has(name, "attn_qkv.weight")) {
        if (FT(Q3_K_M) || FT(Q3_K_L) || FT(IQ3_M))
            new_type = QE_TYPE_Q4_K;
        else if (FT(Q4_K_M))
            new_type = QE_TYPE_Q5_K;
        else if (FT(Q5_K_M))
            new_type = QE_TYPE_Q6_K;
    } else if (has(name, "ffn_gate")) {
        int i_layer = layer_of(s, s->i_ffn_gate, name), n_layer = s->n_ffn_gate;
        if (FT(IQ3_XS) && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8)
            new_type = QE_TYPE_IQ3_XXS;
        ++s->i_ffn_gate;
    } else if (has(name, "ffn_up")) {
        int i_layer = layer_of(s, s->i_ffn_up, name), n_layer = s->n_ffn_up;
        if (FT(IQ3_XS) && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8)
            new_type = QE_TYPE_IQ3_XXS;
        ++s->i_ffn_up;
    }
    return new_type;
}

#undef FT

/* ------------------------------------------------------------------ */
/* planning                                                             */
/* ------------------------------------------------------------------ */

/* llama.cpp's weight_name_comparer: layer number first ("blk.%d.", -1 for
 * others), then the name. */
static int layer_key(const char *name)
{
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1)
        l = -1;
    return l;
}

typedef struct order_key {
    int layer;
    const char *name;
    int idx;
} order_key;

static int cmp_order(const void *a, const void *b)
{
    const order_key *ka = a, *kb = b;
    if (ka->layer != kb->layer)
        return ka->layer < kb->layer ? -1 : 1;
    int c = strcmp(ka->name, kb->name);
    if (c)
        return c;
    return ka->idx - kb->idx;
}

static bool arch_is(const qe_mix_opts *o, const char *a)
{
    return o->arch && strcmp(o->arch, a) == 0;
}

int qe_mix_plan(const qe_mix_opts *o, const qe_mix_tensor *ts, int n, qe_mix_choice *out,
                qe_err *err)
{
    const qe_ftype_info *fi = NULL;
    if (o->ftype >= 0) {
        fi = qe_ftype_get(o->ftype);
        if (!fi)
            return qe_err_set(err, QE_EINVAL, "unknown quantization mix id %d", o->ftype);
    }
    if (n < 0)
        return qe_err_set(err, QE_EINVAL, "negative tensor count %d", n);
    if (n == 0)
        return 0;

    mix_state s = {0};
    s.o = o;
    s.ftype = o->ftype;
    s.falcon = arch_is(o, "falcon");
    s.n_gqa = o->n_head_kv > 0 ? o->n_head / o->n_head_kv : 0;
    /* LLM_TYPE_70B: llama with 80 layers and GQA; qwen2 with 80 layers */
    s.is_70b = o->n_layer == 80 && ((arch_is(o, "llama") && o->n_head != o->n_head_kv) ||
                                    arch_is(o, "qwen2"));
    for (int i = 0; i < n; i++) {
        const char *nm = ts[i].name;
        if (has(nm, "attn_v.weight") || has(nm, "attn_qkv.weight") || has(nm, "attn_kv_b.weight"))
            s.n_attention_wv++;
        else if (strcmp(nm, "output.weight") == 0)
            s.has_output = true;
    }
    s.n_ffn_down = s.n_ffn_gate = s.n_ffn_up = o->n_layer;

    order_key *order = malloc((size_t)n * sizeof *order);
    if (!order)
        return qe_err_set(err, QE_ENOMEM, "out of memory planning %d tensors", n);
    for (int i = 0; i < n; i++)
        order[i] = (order_key){layer_key(ts[i].name), ts[i].name, i};
    qsort(order, (size_t)n, sizeof *order, cmp_order);

    int rc = 0;
    for (int k = 0; k < n; k++) {
        const qe_mix_tensor *t = &ts[order[k].idx];
        qe_mix_choice *c = &out[order[k].idx];
        c->type = c->wanted = t->src_type;
        c->quantize = false;
        c->source = QE_MIX_KEEP;
        c->fallback = QE_FALLBACK_NONE;
        if (!qe_mix_is_quantizable(t->name, t->n_dims, o->leave_output))
            continue;

        int wanted = -1, type = -1, kind = QE_FALLBACK_NONE;
        if (fi) {
            wanted = fi->base_type;
            if (!o->pure && fi->k_mix) {
                wanted = get_type(&s, wanted, t);
                type = qe_mix_fallback(wanted, t->ne[0], true, &kind);
            }
            if (o->token_embd_type >= 0 && strcmp(t->name, "token_embd.weight") == 0)
                wanted = type = o->token_embd_type, kind = QE_FALLBACK_NONE;
            if (o->output_type >= 0 && strcmp(t->name, "output.weight") == 0)
                wanted = type = o->output_type, kind = QE_FALLBACK_NONE;
            if (type < 0 || kind == QE_FALLBACK_NONE)
                type = qe_mix_fallback(wanted, t->ne[0], false, &kind);
            c->source = QE_MIX_BASE;
        }
        if (t->forced_type >= 0) {
            wanted = t->forced_type;
            type = qe_mix_fallback(wanted, t->ne[0], false, &kind);
            c->source = QE_MIX_RULE;
        }
        if (type < 0)
            continue; /* no base mix and no rule: keep */
        c->wanted = wanted;
        c->type = type;
        c->fallback = kind;
        c->quantize = type != t->src_type;
        if (c->quantize && !o->has_imatrix && qe_mix_type_needs_imatrix(type, o->ftype, t->name)) {
            rc = qe_err_set(err, QE_EINVAL,
                            "tensor '%s': type %s needs an importance matrix (llama.cpp refuses "
                            "it without one: the result would be garbage); pass --imatrix",
                            t->name, qe_type_name(type));
            break;
        }
    }
    free(order);
    return rc;
}
