/*
 * infer.c: the reference forward pass: weights binding and validation, KV
 * cache, batched prefill, decode.  One transformer-block implementation for
 * every architecture; the optional steps are switched by qe_config's
 * feature fields, which harness/model/arch.c derives from a per-architecture
 * descriptor and the metadata (nothing here tests the architecture name).
 *
 * One call of forward() runs T tokens (1 = decode, up to n_batch =
 * prefill) through every layer:
 *
 *   x = embd[tok] (* sqrt(n_embd): embd_scale)                 (T, n_embd)
 *   per layer: xb = rmsnorm(x)*attn_norm
 *              q,k,v = xb.Wq^T (+bq), ... (row views of attn_qkv when fused)
 *              [qk_norm] per-head rmsnorm(q)*q_norm, rmsnorm(k)*k_norm
 *              rope(q), rope(k) (local layers: their own table); [q_prescale] q *= scale
 *              K^T, V -> cache at positions pos..pos+T-1
 *              s = q.K^T (* scale); [attn_softcap] s = c*tanh(s/c);
 *              causal mask, [local layer] window mask; softmax; . V   (GQA)
 *              o = att.Wo^T; [post_norms] o = rmsnorm(o)*post_attention_norm; x += o
 *              xb = rmsnorm(x)*ffn_norm
 *              dense: f = (act(xb.Wg^T) * xb.Wu^T).Wd^T  (act: SiLU or GELU-tanh;
 *                     gate/up: row views of ffn_up when fused)
 *              experts: route (softmax, top-k, [renormalise]); per expert the
 *                     tokens routed to it as one batch through its gated FFN;
 *                     f = sum_k w_k y_k (+ sigmoid(xb.g_sh) * shared expert)
 *              [post_norms] f = rmsnorm(f)*post_ffw_norm; x += f
 *   logits = rmsnorm(x)*output_norm . Wout^T  (only the rows asked for)
 *            [final_softcap] c*tanh(l/c)
 *
 * Matrix products with weights go through mm_run(): the output rows are cut
 * into tiles, one pool work item each (q/k/v share one job, gate/up share
 * one with the SwiGLU fused per tile, o and down add the residual per
 * tile).  Prefill: a thread dequantizes its tile (traits table to_float)
 * into scratch, transposes it to k-major and applies it to all T tokens
 * with qe_gemm_f32 (every output one sequential FMA chain over k); for 3
 * to SWAP_MAX_T tokens (sequences decoding together) it computes
 * Y^T = W . X^T instead, the tile as dequantized and the tokens as vector
 * lanes (the same chains, no weight transpose).
 * Decode (T <= QE_DECODE_MAX_T): each weight row is streamed once through
 * the type's fused dequantize-and-dot kernel (traits row_dot, AVX-512:
 * bitwise equal to dequantizing the row and qe_dot_f32, lanes split over
 * k), a few rows ahead of a software prefetch, each thread on long runs of
 * rows; without row_dot the row is dequantized into an L1 buffer first.
 * Threads come from a persistent pool (pool.h: short spin, then sleep; no
 * OpenMP barriers spinning on a shared machine).  Attention runs per
 * (head, block of query tokens), per-token ops per token.  No dot product
 * is split across threads, so logits are bit-identical for any thread
 * count; decode logits differ from prefill logits in the last bits only
 * (lane-split vs sequential sums; test_infer bounds it at 1e-5 of range).
 *
 * Several sequences (qe_infer_batch): the KV cache holds n_seq slots of
 * n_ctx positions; one forward runs the tokens of several runs (segments,
 * one per slot) together: per-token ops and the weight products see one
 * batch, attention works per segment on its own slot.  Segments taking the
 * prefill kernels come first (fwd_batch.t_gemm), so a token's kernel, hence
 * its bits, depends on its own run only.
 *
 * Numerics follow llama.cpp where it matters for matching its perplexity:
 * RMSNorm sum of squares in double, RoPE angles by repeated multiplication
 * of theta by base^(-2/n_rot) in float (ggml_rope_cache_init), softmax with
 * max subtraction and a double sum, attention scale 1/sqrt(head_dim),
 * SiLU x/(1+exp(-x)).  What remains different in QE_NUMERICS_EXACT (the
 * default): llama.cpp keeps the KV cache in f16 and quantizes activations
 * to the weight's vec_dot type (f16, q8_0, q8_1, q8_K); we keep everything
 * f32.  QE_NUMERICS_LLAMACPP reproduces those too: weight matmuls through
 * quant/dot_llamacpp.h (F32 weights excepted: f32 in both, see
 * mm_run_llamacpp), q/K/V and the softmax probabilities rounded to f16.
 * It matches llama.cpp's running KLD to ~0.1 % (test_ppl).
 *
 * Must not hold: file parsing, tokenization, evaluation protocols.
 */
#include "infer.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../quant/dot_int8.h"
#include "../../quant/dot_llamacpp.h"
#include "../../quant/quant.h"
#include "../model/arch.h"
#include "../model/model.h"
#include "pool.h"

#define ATT_BLOCK 12          /* query tokens per attention work item */
#define TILE_TARGET_NBYTES (256 * 1024) /* f32 weight tile kept in L2 */
/* prefill kernels for 3 to this many tokens run W . X^T (mm_tile):
 * 16 sequences decoding together +20 %, 32 +20 % (Qwen2.5-0.5B shape,
 * q8_0, 2 cores) */
#define SWAP_MAX_T 32
/* pack's room beyond tile_cap (>= 32 n_in floats) for that: Y^T of a
 * tile of at most 256 rows */
#define PACK_EXTRA ((size_t)SWAP_MAX_T * 256)
_Static_assert(SWAP_MAX_T <= 32, "X^T must fit in tile_cap (>= 32 n_in floats)");

/* A weight matrix (n_out rows of n_in values) bound to its dequantizer:
 * a whole 2-D tensor, or a run of its rows (the q/k/v parts of a fused
 * attn_qkv, gate/up of a fused ffn_up), or one expert of a 3-D stack. */
typedef struct qe_wt {
    const qe_tensor *t;
    const qe_type_traits *tr;
    const uint8_t *data; /* first row */
    int n_in, n_out;
    size_t row_nbytes;
    const float *bias; /* (n_out) or NULL; owned by qe_infer.vecs */
    bool no_hook;      /* a later row view of a fused tensor: the hook saw its input */
} qe_wt;

/* Slots of the per-layer weight names (hook and error messages). */
enum { WN_Q, WN_K, WN_V, WN_O, WN_GATE, WN_UP, WN_DOWN, WN_QKV, WN_ROUTER, WN_SH_GATE,
       WN_SH_UP, WN_SH_DOWN, WN_GATE_EXPS, WN_UP_EXPS, WN_DOWN_EXPS, WN_SH_GATE_INP,
       WN_PER_LAYER };

/* One transformer block's weights.  Which optional parts are bound follows
 * qe_config's feature fields (harness/model/arch.h), never the arch name. */
typedef struct qe_layer_w {
    qe_wt q, k, v, o;     /* q/k/v: row views of attn_qkv when fused */
    qe_wt gate, up, down; /* dense FFN; gate/up: row views of ffn_up when fused */
    const float *attn_norm, *ffn_norm;          /* (n_embd) */
    const float *q_norm, *k_norm;               /* (head_dim) or NULL */
    const float *post_attn_norm, *post_ffn_norm; /* (n_embd) or NULL */
    qe_wt router;      /* ffn_gate_inp: n_expert rows of n_embd */
    qe_wt *exps;       /* (n_expert, 3): gate, up, down of expert e at 3e..3e+2 */
    qe_wt sh_gate, sh_up, sh_down; /* shared expert */
    const float *sh_gate_inp; /* (n_embd): sigmoid gate of the shared expert */
    bool swa;          /* local layer: sliding-window mask */
    int rope;          /* RoPE table: 0 global, 1 local */
} qe_layer_w;

typedef struct qe_thread_scratch {
    float *tile;   /* (tile_cap) dequantized rows, row-major */
    float *pack;   /* (tile_cap + PACK_EXTRA) the same rows, k-major; or, for few
                      tokens, X^T (n_in, T) then Y^T (rows, T) (mm_tile) */
    float *scores; /* (ATT_BLOCK, n_ctx) attention probabilities */
    float *row;    /* (n_in_max) one dequantized weight row (decode) */
} qe_thread_scratch;

/*
 * One forward call: T tokens from n_seg sequences (segments), each a run of
 * consecutive positions of one KV slot.  Segments of more than
 * QE_DECODE_MAX_T tokens come first and take the prefill kernels (tokens
 * 0 .. t_gemm-1), the others the decode kernels: the kernel a token gets
 * depends on its own sequence's run length only, never on its companions.
 */
typedef struct fwd_batch {
    int T, t_gemm, n_seg;
    int *pos, *seq;  /* (n_batch) per token */
    int *seg_t0, *seg_n, *seg_seq, *seg_pos0, *seg_item0; /* (n_seq + 1) */
} fwd_batch;

struct qe_infer {
    const qe_model *m;
    qe_config cfg;
    int n_ctx, n_batch, n_threads, max_threads, isa;
    int numerics;   /* QE_NUMERICS_EXACT, _LLAMACPP or _INT8 */
    int i8_vnni;    /* int8 numerics: the AVX512-VNNI kernel (else the scalar one) */
    void *xq;       /* int8 numerics: a job's activations, quantized once (xq_nbytes) */
    size_t xq_nbytes;
    qe_pool *pool;  /* max_threads - 1 workers */
    void *lc_ws;    /* (lc_ws_nbytes) llamacpp numerics: quantized activations */
    size_t lc_ws_nbytes;
    int q_dim, kv_dim; /* n_head*head_dim, n_head_kv*head_dim */
    int defer_from, defer_n; /* qe_infer_eval_defer: normed rows kept in xb */
    qe_matmul_hook hook;
    qe_matmul_id_hook hook_id;
    void *hook_ud;

    qe_wt tok_embd, output;
    const float *output_norm;
    qe_layer_w *layers; /* (n_layer) */
    char (*names)[96];  /* (n_layer*WN_PER_LAYER + 1) weight names for the hook */
    qe_wt *exp_wts;     /* (n_layer, n_expert, 3) expert views, owned */
    const qe_wt **all_w; /* every bound weight (llamacpp numerics setup) */
    int n_all_w, cap_all_w;

    float **vecs; /* owned f32 copies of norms and biases */
    int n_vecs;

    float *rope_cos[2], *rope_sin[2]; /* (n_ctx, n_rot/2): global, local layers (may alias) */

    /* mixture of experts, for up to n_batch tokens */
    float *rlog;     /* (n_batch, n_expert) router logits, then probabilities */
    int *sel;        /* (n_batch, n_expert_used) chosen experts, best first */
    float *selw;     /* (n_batch, n_expert_used) their weights */
    int *ex_tok;     /* (n_batch * n_expert_used) token*k+slot, grouped by expert */
    int *ex_start;   /* (n_expert + 1) group offsets into ex_tok */
    float *xe, *ye;  /* (n_batch, n_embd) one expert's gathered inputs / outputs */
    float *yslot;    /* (n_batch * n_expert_used, n_embd) expert outputs per (token, slot) */

    /* KV cache: n_seq slots of n_ctx positions each; slot s owns the
     * positions s*n_ctx .. s*n_ctx+n_ctx-1 of kv_cap = n_seq*n_ctx */
    float *k_cache; /* (n_layer, n_head_kv, head_dim, kv_cap): K transposed */
    float *v_cache; /* (n_layer, kv_cap, n_head_kv*head_dim) */
    int n_seq, kv_cap;
    int *seq_past;  /* (n_seq) cached positions per slot; slot 0 = qe_infer_eval's */
    fwd_batch fb;   /* the batch forward() runs */
    int32_t *b_tok; /* (n_batch) tokens of a qe_infer_batch call, in forward order */
    float *b_rows;  /* (n_dec_rows, n_vocab) logits of decode rows, lazily */
    int b_rows_cap;

    /* activations for up to n_batch tokens */
    float *x, *xb, *xb2; /* (n_batch, n_embd) */
    float *q, *att;      /* (n_batch, q_dim) */
    float *k, *v;        /* (n_batch, kv_dim) */
    float *hb, *hb2;     /* (n_batch, max(n_ff, n_ff_exp, n_ff_shexp)) */

    size_t tile_cap; /* floats per tile buffer */
    float *xt;       /* (SWAP_MAX_T, n_in_max) a job's activations transposed (mm_run) */
    qe_thread_scratch *scratch; /* (max_threads) */
    uint64_t alloc_nbytes;
};

/* ------------------------------------------------------------ helpers -- */

static void *xcalloc(qe_infer *inf, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p)
        inf->alloc_nbytes += (uint64_t)n * size;
    return p;
}

static const qe_tensor *find_tensor(const qe_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

const char *qe_numerics_name(int numerics)
{
    switch (numerics) {
    case QE_NUMERICS_EXACT: return "exact";
    case QE_NUMERICS_LLAMACPP: return "llamacpp";
    case QE_NUMERICS_INT8: return "int8";
    default: return "?";
    }
}

const char *qe_infer_supported_archs(void)
{
    return qe_arch_list();
}

static int note_wt(qe_infer *inf, const qe_wt *w, qe_err *err)
{
    if (inf->n_all_w == inf->cap_all_w) {
        int nc = inf->cap_all_w ? 2 * inf->cap_all_w : 64;
        const qe_wt **p = realloc(inf->all_w, (size_t)nc * sizeof *p);
        if (!p)
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        inf->all_w = p;
        inf->cap_all_w = nc;
    }
    inf->all_w[inf->n_all_w++] = w;
    return 0;
}

static int dequant_ok(const qe_tensor *t, qe_err *err)
{
    const qe_type_traits *tr = qe_type_get(t->type);
    if (!tr)
        return qe_err_set(err, QE_ETYPE, "tensor '%s': unknown type id %d", t->name, t->type);
    if (!tr->to_float)
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "tensor '%s': type %s has no dequantizer in this build", t->name,
                          tr->name);
    return 0;
}

/* Bind a weight matrix: ne = {n_in, n_out} (n_mat = 1) or a stack of n_mat
 * such matrices, ne = {n_in, n_out, n_mat} (experts; w is then the first). */
static int bind_wt_n(qe_infer *inf, qe_wt *w, const char *name, int n_in, int n_out, int n_mat,
                     qe_err *err)
{
    const qe_tensor *t = find_tensor(inf->m, name);
    if (!t)
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing tensor '%s'", inf->m->path, name);
    if (t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != n_mat || t->ne[3] != 1)
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tensor '%s': shape ne=[%lld,%lld,%lld,%lld], expected [%d,%d,%d]",
                          inf->m->path, name, (long long)t->ne[0], (long long)t->ne[1],
                          (long long)t->ne[2], (long long)t->ne[3], n_in, n_out, n_mat);
    int rc = dequant_ok(t, err);
    if (rc)
        return rc;
    w->t = t;
    w->tr = qe_type_get(t->type);
    w->data = t->data;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_nbytes = qe_type_row_nbytes(t->type, n_in);
    w->no_hook = false;
    if (w->row_nbytes == 0)
        return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': row of %d values is not a multiple "
                          "of the %s block size", inf->m->path, name, n_in, w->tr->name);
    const uint64_t need = (uint64_t)w->row_nbytes * (uint64_t)n_out * (uint64_t)n_mat;
    if (!t->data || t->nbytes < need)
        return qe_err_set(err, QE_EBOUNDS, "%s: tensor '%s': %llu data bytes, expected %llu",
                          inf->m->path, name, (unsigned long long)t->nbytes,
                          (unsigned long long)need);
    w->bias = NULL;
    return note_wt(inf, w, err);
}

static int bind_wt(qe_infer *inf, qe_wt *w, const char *name, int n_in, int n_out, qe_err *err)
{
    return bind_wt_n(inf, w, name, n_in, n_out, 1, err);
}

/* dst = rows r0 .. r0+n_out-1 of src (or of matrix r0/n_out of a stack). */
static void view_rows(qe_wt *dst, const qe_wt *src, int64_t r0, int n_out)
{
    *dst = *src;
    dst->data = src->data + (size_t)r0 * src->row_nbytes;
    dst->n_out = n_out;
    dst->no_hook = r0 > 0;
}

/* Dequantize a 1-D tensor of n values into an owned f32 vector. */
static int bind_vec(qe_infer *inf, const float **out, const char *name, int n, bool optional,
                    qe_err *err)
{
    *out = NULL;
    const qe_tensor *t = find_tensor(inf->m, name);
    if (!t) {
        if (optional)
            return 0;
        return qe_err_set(err, QE_ENOTFOUND, "%s: missing tensor '%s'", inf->m->path, name);
    }
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': ne[0]=%lld, expected [%d]",
                          inf->m->path, name, (long long)t->ne[0], n);
    int rc = dequant_ok(t, err);
    if (rc)
        return rc;
    size_t need = qe_type_row_nbytes(t->type, n);
    if (need == 0 || !t->data || t->nbytes < need)
        return qe_err_set(err, QE_EBOUNDS, "%s: tensor '%s': %llu data bytes, expected %zu",
                          inf->m->path, name, (unsigned long long)t->nbytes, need);
    float *v = xcalloc(inf, (size_t)n, sizeof(float));
    if (!v)
        return qe_err_set(err, QE_ENOMEM, "out of memory for '%s'", name);
    qe_type_get(t->type)->to_float(t->data, v, n);
    inf->vecs[inf->n_vecs++] = v;
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- rope -- */

/* cos/sin of one table: see rope_init. */
static int rope_table(qe_infer *inf, int which, float base, float freq_scale, const float *ff,
                      qe_err *err)
{
    const qe_config *c = &inf->cfg;
    const int n_pair = c->n_rot / 2;
    float *cs = xcalloc(inf, (size_t)inf->n_ctx * n_pair, sizeof(float));
    float *sn = xcalloc(inf, (size_t)inf->n_ctx * n_pair, sizeof(float));
    inf->rope_cos[which] = cs;
    inf->rope_sin[which] = sn;
    if (!cs || !sn)
        return qe_err_set(err, QE_ENOMEM, "out of memory (rope tables)");
    const float theta_scale = powf(base, -2.0f / (float)c->n_rot);
    const float mscale = c->rope_attn_factor;
    for (int p = 0; p < inf->n_ctx; p++) {
        float theta = (float)p;
        for (int i = 0; i < n_pair; i++) {
            float th = (ff ? theta / ff[i] : theta) * freq_scale;
            cs[(size_t)p * n_pair + i] = cosf(th) * mscale;
            sn[(size_t)p * n_pair + i] = sinf(th) * mscale;
            theta *= theta_scale;
        }
    }
    return 0;
}

/*
 * cos/sin tables per position, as ggml_rope_cache_init computes them:
 * theta starts at the position and is multiplied by theta_scale =
 * base^(-2/n_rot) once per pair (float), divided by the per-pair frequency
 * factor (Llama 3 scaling, LongRoPE), times freq_scale (linear scaling);
 * cos and sin times rope.scaling.attn_factor.  Local (sliding-window)
 * layers get their own table when their base or scale differs (gemma3).
 */
static int rope_init(qe_infer *inf, qe_err *err)
{
    const qe_config *c = &inf->cfg;
    const int n_pair = c->n_rot / 2;
    float *ff = NULL;
    int rc = 0;
    if (n_pair == 0)
        return 0;
    if (c->has_rope_factors) {
        /* LongRoPE: long factors when the context exceeds the original one
         * (llama.cpp: n_ctx > n_ctx_orig_yarn, which defaults to n_ctx_train) */
        const int orig = c->rope_llama3_orig_ctx > 0 ? c->rope_llama3_orig_ctx : c->n_ctx_train;
        const char *nm = inf->n_ctx > orig ? "rope_factors_long.weight"
                                           : "rope_factors_short.weight";
        const float *v;
        if ((rc = bind_vec(inf, &v, nm, n_pair, false, err)))
            return rc;
        for (int i = 0; i < n_pair; i++)
            if (!(v[i] > 0.0f) || !isfinite(v[i]))
                return qe_err_set(err, QE_EFORMAT, "%s: tensor '%s': value %g at %d: expected "
                                  "positive frequency factors", inf->m->path, nm, (double)v[i],
                                  i);
        ff = (float *)v;
    } else if (c->has_rope_freqs) {
        const float *v;
        rc = bind_vec(inf, &v, "rope_freqs.weight", n_pair, false, err);
        if (rc)
            return rc;
        ff = (float *)v;
    } else if (c->rope_scaling == QE_ROPE_SCALING_LLAMA3) {
        /* the factors llama.cpp's converter writes as rope_freqs.weight */
        ff = xcalloc(inf, (size_t)n_pair, sizeof(float));
        if (!ff)
            return qe_err_set(err, QE_ENOMEM, "out of memory (rope factors)");
        inf->vecs[inf->n_vecs++] = ff;
        const double factor = c->rope_llama3_factor > 0 ? c->rope_llama3_factor : 8.0;
        const double lo = c->rope_llama3_low_freq > 0 ? c->rope_llama3_low_freq : 1.0;
        const double hi = c->rope_llama3_high_freq > 0 ? c->rope_llama3_high_freq : 4.0;
        const double orig = c->rope_llama3_orig_ctx > 0 ? c->rope_llama3_orig_ctx : 8192;
        const double lo_wl = orig / lo, hi_wl = orig / hi;
        for (int i = 0; i < n_pair; i++) {
            double freq = 1.0 / pow(c->rope_freq_base, 2.0 * i / c->n_rot);
            double wl = 2.0 * M_PI / freq;
            if (wl < hi_wl)
                ff[i] = 1.0f;
            else if (wl > lo_wl)
                ff[i] = (float)factor;
            else {
                double smooth = (orig / wl - lo) / (hi - lo);
                ff[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
            }
        }
    }
    if ((rc = rope_table(inf, 0, c->rope_freq_base, c->rope_freq_scale, ff, err)))
        return rc;
    if (c->rope_freq_base_swa == c->rope_freq_base &&
        c->rope_freq_scale_swa == c->rope_freq_scale) {
        inf->rope_cos[1] = inf->rope_cos[0];
        inf->rope_sin[1] = inf->rope_sin[0];
        return 0;
    }
    return rope_table(inf, 1, c->rope_freq_base_swa, c->rope_freq_scale_swa, ff, err);
}

/* Rotate n_heads heads of head_dim values (vec) at position pos with table tb. */
static void rope_apply(const qe_infer *inf, int tb, float *vec, int n_heads, int pos)
{
    const qe_config *c = &inf->cfg;
    const int n_pair = c->n_rot / 2, hd = c->head_dim;
    const float *cs = inf->rope_cos[tb] + (size_t)pos * n_pair;
    const float *sn = inf->rope_sin[tb] + (size_t)pos * n_pair;
    for (int h = 0; h < n_heads; h++) {
        float *x = vec + (size_t)h * hd;
        for (int i = 0; i < n_pair; i++) {
            /* NORM: adjacent pairs (2i, 2i+1); NEOX: (i, i + n_rot/2) */
            const int i0 = c->rope_kind == QE_ROPE_NEOX ? i : 2 * i;
            const int i1 = c->rope_kind == QE_ROPE_NEOX ? i + n_pair : 2 * i + 1;
            const float x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * cs[i] - x1 * sn[i];
            x[i1] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

/* ---------------------------------------------------------- activation -- */

/* ggml's tanh-approximation GELU in f32 (ggml_gelu_f32). */
#define GELU_COEF_A 0.044715f
#define SQRT_2_OVER_PI 0.79788456080286535587989211986876f
static inline float gelu_f32(float x)
{
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * x * (1.0f + GELU_COEF_A * x * x)));
}

/* llama.cpp's CPU backend evaluates GELU through an f16 table: the input
 * rounded to f16, the table value gelu(x) rounded to f16; |x| >= 10 exact
 * (ggml_vec_gelu_f32 with GGML_GELU_FP16).  Used with llamacpp numerics. */
static float gelu_table[65536];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void)
{
    for (int i = 0; i < 65536; i++) {
        const float f = qe_fp16_to_fp32((uint16_t)i);
        gelu_table[i] = qe_fp16_to_fp32(qe_fp32_to_fp16(gelu_f32(f)));
    }
}

static inline float gelu_lut(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    return gelu_table[qe_fp32_to_fp16(x)];
}

/* ---------------------------------------------------------- lifecycle -- */

static int check_cfg(const qe_model *m, qe_err *err)
{
    const qe_config *c = &m->cfg;
    if (!qe_arch_find(c->arch))
        return qe_err_set(err, QE_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: %s)", m->path,
                          c->arch, qe_infer_supported_archs());
    if (c->n_vocab <= 0 || c->n_embd <= 0 || c->n_ff <= 0 || c->n_layer <= 0 || c->n_head <= 0 ||
        c->n_head_kv <= 0 || c->head_dim <= 0 || c->n_head % c->n_head_kv != 0 ||
        c->n_rot < 0 || c->n_rot > c->head_dim || c->n_rot % 2 != 0)
        return qe_err_set(err, QE_EFORMAT,
                          "%s: inconsistent hyperparameters: n_vocab %d n_embd %d n_ff %d "
                          "n_layer %d n_head %d n_head_kv %d head_dim %d n_rot %d",
                          m->path, c->n_vocab, c->n_embd, c->n_ff, c->n_layer, c->n_head,
                          c->n_head_kv, c->head_dim, c->n_rot);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return qe_err_set(err, QE_EFORMAT, "%s: rms_eps %g: expected a positive number",
                          m->path, (double)c->rms_eps);
    return 0;
}

/* llamacpp numerics: every weight needs a qe_matmul_llamacpp path; the
 * activation scratch is sized for the largest n_in at n_batch tokens. */
static int lc_init(qe_infer *inf, qe_err *err)
{
    size_t need = 0;
    for (int j = 0; j < inf->n_all_w; j++) {
        const qe_wt *w = inf->all_w[j];
        if (w == &inf->tok_embd || w->t->type == QE_TYPE_F32)
            continue; /* embeddings: rows only; F32: exact path (see mm_run_llamacpp) */
        const size_t nb = qe_matmul_llamacpp_ws_nbytes(w->t->type, w->n_in, inf->n_batch);
        if (nb == 0)
            return qe_err_set(err, QE_EUNSUPPORTED,
                              "%s: tensor '%s': type %s with rows of %d has no llamacpp "
                              "numerics path (use --numerics exact)",
                              inf->m->path, w->t->name, w->tr->name, w->n_in);
        if (nb > need)
            need = nb;
    }
    inf->lc_ws = xcalloc(inf, need ? need : 1, 1);
    if (!inf->lc_ws)
        return qe_err_set(err, QE_ENOMEM, "out of memory (%zu B of activation scratch)", need);
    inf->lc_ws_nbytes = need;
    return 0;
}

qe_infer *qe_infer_new(const struct qe_model *m, const qe_infer_opts *opts, qe_err *err)
{
    if (!m) {
        qe_err_set(err, QE_EINVAL, "qe_infer_new: no model");
        return NULL;
    }
    if (check_cfg(m, err))
        return NULL;
    qe_infer *inf = calloc(1, sizeof *inf);
    if (!inf) {
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    inf->m = m;
    inf->cfg = m->cfg;
    qe_config *c = &inf->cfg;
    if (!(c->rope_freq_base > 0.0f))
        c->rope_freq_base = 10000.0f;
    if (!(c->rope_freq_scale > 0.0f))
        c->rope_freq_scale = 1.0f;
    /* configs assembled by hand (tests, tools) may leave the feature fields 0 */
    if (!(c->attn_scale > 0.0f))
        c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    if (!(c->embd_scale > 0.0f))
        c->embd_scale = 1.0f;
    if (!(c->rope_attn_factor > 0.0f))
        c->rope_attn_factor = 1.0f;
    if (!(c->rope_freq_base_swa > 0.0f) || c->n_swa <= 0)
        c->rope_freq_base_swa = c->rope_freq_base;
    if (!(c->rope_freq_scale_swa > 0.0f) || c->n_swa <= 0)
        c->rope_freq_scale_swa = c->rope_freq_scale;
    inf->n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : 512;
    inf->n_batch = opts && opts->n_batch > 0 ? opts->n_batch : inf->n_ctx;
    if (inf->n_batch > inf->n_ctx)
        inf->n_batch = inf->n_ctx;
    inf->hook = opts ? opts->hook : NULL;
    inf->hook_ud = opts ? opts->hook_ud : NULL;
    inf->hook_id = opts ? opts->hook_id : NULL;
    inf->numerics = opts ? opts->numerics : QE_NUMERICS_EXACT;
    if (inf->numerics != QE_NUMERICS_EXACT && inf->numerics != QE_NUMERICS_LLAMACPP &&
        inf->numerics != QE_NUMERICS_INT8) {
        qe_err_set(err, QE_EINVAL, "qe_infer_new: numerics %d: expected %d (exact), %d "
                   "(llamacpp) or %d (int8)", inf->numerics, QE_NUMERICS_EXACT,
                   QE_NUMERICS_LLAMACPP, QE_NUMERICS_INT8);
        free(inf);
        return NULL;
    }
    inf->isa = qe_infer_isa();
    inf->max_threads = omp_get_max_threads();
    if (opts && opts->n_threads > inf->max_threads)
        inf->max_threads = opts->n_threads;
    qe_infer_set_threads(inf, opts ? opts->n_threads : 0);
    inf->q_dim = c->n_head * c->head_dim;
    inf->kv_dim = c->n_head_kv * c->head_dim;

    const int L = c->n_layer, E = c->n_embd, F = c->n_ff;
    const int X = c->n_expert, K = c->n_expert_used, Fe = c->n_ff_exp, Fs = c->n_ff_shexp;
    int F_max = F;
    if (X > 0 && Fe > F_max)
        F_max = Fe;
    if (Fs > F_max)
        F_max = Fs;
    int rc = 0;
    inf->layers = xcalloc(inf, (size_t)L, sizeof *inf->layers);
    inf->names = xcalloc(inf, (size_t)L * WN_PER_LAYER + 2, sizeof *inf->names);
    inf->vecs = xcalloc(inf, (size_t)L * 12 + 8, sizeof *inf->vecs);
    if (X > 0)
        inf->exp_wts = xcalloc(inf, (size_t)L * X * 3, sizeof *inf->exp_wts);
    if (!inf->layers || !inf->names || !inf->vecs || (X > 0 && !inf->exp_wts)) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = bind_wt(inf, &inf->tok_embd, "token_embd.weight", E, c->n_vocab, err)))
        goto fail;
    if (find_tensor(m, "output.weight")) {
        if ((rc = bind_wt(inf, &inf->output, "output.weight", E, c->n_vocab, err)))
            goto fail;
    } else {
        inf->output = inf->tok_embd; /* tied */
        if ((rc = note_wt(inf, &inf->output, err)))
            goto fail;
    }
    if ((rc = bind_vec(inf, &inf->output_norm, "output_norm.weight", E, false, err)))
        goto fail;
    for (int l = 0; l < L; l++) {
        qe_layer_w *lw = &inf->layers[l];
        char nm[96];
#define LNAME(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix), nm)
        /* attention */
        if (c->fused_qkv) {
            qe_wt qkv;
            if ((rc = bind_wt(inf, &qkv, LNAME("attn_qkv.weight"), E,
                              inf->q_dim + 2 * inf->kv_dim, err)))
                goto fail;
            inf->n_all_w--; /* the views below are what runs */
            view_rows(&lw->q, &qkv, 0, inf->q_dim);
            view_rows(&lw->k, &qkv, inf->q_dim, inf->kv_dim);
            view_rows(&lw->v, &qkv, inf->q_dim + inf->kv_dim, inf->kv_dim);
            if ((rc = note_wt(inf, &lw->q, err)) || (rc = note_wt(inf, &lw->k, err)) ||
                (rc = note_wt(inf, &lw->v, err)))
                goto fail;
        } else {
            if ((rc = bind_wt(inf, &lw->q, LNAME("attn_q.weight"), E, inf->q_dim, err)) ||
                (rc = bind_wt(inf, &lw->k, LNAME("attn_k.weight"), E, inf->kv_dim, err)) ||
                (rc = bind_wt(inf, &lw->v, LNAME("attn_v.weight"), E, inf->kv_dim, err)))
                goto fail;
            /* Q/K/V biases: required when the config says so, optional otherwise */
            const char *bn[3] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
            qe_wt *bw[3] = {&lw->q, &lw->k, &lw->v};
            for (int j = 0; j < 3; j++)
                if ((rc = bind_vec(inf, &bw[j]->bias, LNAME(bn[j]), bw[j]->n_out,
                                   !c->has_qkv_bias, err)))
                    goto fail;
        }
        if ((rc = bind_wt(inf, &lw->o, LNAME("attn_output.weight"), inf->q_dim, E, err)) ||
            (rc = bind_vec(inf, &lw->attn_norm, LNAME("attn_norm.weight"), E, false, err)) ||
            (rc = bind_vec(inf, &lw->ffn_norm, LNAME("ffn_norm.weight"), E, false, err)))
            goto fail;
        if (c->qk_norm &&
            ((rc = bind_vec(inf, &lw->q_norm, LNAME("attn_q_norm.weight"), c->head_dim, false,
                            err)) ||
             (rc = bind_vec(inf, &lw->k_norm, LNAME("attn_k_norm.weight"), c->head_dim, false,
                            err))))
            goto fail;
        if (c->post_norms &&
            ((rc = bind_vec(inf, &lw->post_attn_norm, LNAME("post_attention_norm.weight"), E,
                            false, err)) ||
             (rc = bind_vec(inf, &lw->post_ffn_norm, LNAME("post_ffw_norm.weight"), E, false,
                            err))))
            goto fail;
        lw->swa = qe_config_layer_swa(c, l);
        lw->rope = lw->swa ? 1 : 0;
        /* feed-forward */
        if (X > 0) {
            if ((rc = bind_wt(inf, &lw->router, LNAME("ffn_gate_inp.weight"), E, X, err)))
                goto fail;
            lw->exps = inf->exp_wts + (size_t)l * X * 3;
            const char *en[3] = {"ffn_gate_exps.weight", "ffn_up_exps.weight",
                                 "ffn_down_exps.weight"};
            const int ein[3] = {E, E, Fe}, eout[3] = {Fe, Fe, E};
            for (int j = 0; j < 3; j++) {
                qe_wt st;
                if ((rc = bind_wt_n(inf, &st, LNAME(en[j]), ein[j], eout[j], X, err)))
                    goto fail;
                inf->n_all_w--;
                for (int e = 0; e < X; e++) {
                    view_rows(&lw->exps[3 * e + j], &st, (int64_t)e * eout[j], eout[j]);
                    lw->exps[3 * e + j].no_hook = true;
                    if ((rc = note_wt(inf, &lw->exps[3 * e + j], err)))
                        goto fail;
                }
            }
            if (Fs > 0 &&
                ((rc = bind_wt(inf, &lw->sh_gate, LNAME("ffn_gate_shexp.weight"), E, Fs, err)) ||
                 (rc = bind_wt(inf, &lw->sh_up, LNAME("ffn_up_shexp.weight"), E, Fs, err)) ||
                 (rc = bind_wt(inf, &lw->sh_down, LNAME("ffn_down_shexp.weight"), Fs, E, err)) ||
                 (rc = bind_vec(inf, &lw->sh_gate_inp, LNAME("ffn_gate_inp_shexp.weight"), E,
                                false, err))))
                goto fail;
        } else if (c->fused_gate_up) {
            qe_wt gu;
            if ((rc = bind_wt(inf, &gu, LNAME("ffn_up.weight"), E, 2 * F, err)))
                goto fail;
            inf->n_all_w--;
            view_rows(&lw->gate, &gu, 0, F);
            view_rows(&lw->up, &gu, F, F);
            if ((rc = note_wt(inf, &lw->gate, err)) || (rc = note_wt(inf, &lw->up, err)) ||
                (rc = bind_wt(inf, &lw->down, LNAME("ffn_down.weight"), F, E, err)))
                goto fail;
        } else {
            if ((rc = bind_wt(inf, &lw->gate, LNAME("ffn_gate.weight"), E, F, err)) ||
                (rc = bind_wt(inf, &lw->up, LNAME("ffn_up.weight"), E, F, err)) ||
                (rc = bind_wt(inf, &lw->down, LNAME("ffn_down.weight"), F, E, err)))
                goto fail;
        }
#undef LNAME
    }
    if ((rc = rope_init(inf, err)))
        goto fail;
    if (c->ffn_act == QE_ACT_GELU)
        pthread_once(&gelu_once, gelu_table_init);

    inf->n_seq = opts && opts->n_seq > 0 ? opts->n_seq : 1;
    const uint64_t kv_need = 2ull * L * inf->n_seq * inf->n_ctx * inf->kv_dim * sizeof(float);
    const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    const uint64_t phys = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    if ((uint64_t)inf->n_seq * inf->n_ctx > INT32_MAX || (phys && kv_need > phys)) {
        rc = qe_err_set(err, QE_ENOMEM, "the KV cache for %d sequences x %d positions needs "
                        "%.1f MiB, more than this machine's %.1f MiB of memory (use fewer "
                        "parallel sequences or a shorter context)", inf->n_seq, inf->n_ctx,
                        kv_need / 1048576.0, phys / 1048576.0);
        goto fail;
    }
    inf->kv_cap = inf->n_seq * inf->n_ctx;
    const size_t kv_n = (size_t)L * inf->kv_cap * inf->kv_dim;
    inf->k_cache = xcalloc(inf, kv_n, sizeof(float));
    inf->v_cache = xcalloc(inf, kv_n, sizeof(float));
    if (!inf->k_cache || !inf->v_cache) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory for the KV cache: %d sequences x %d "
                        "positions need %.1f MiB", inf->n_seq, inf->n_ctx, kv_need / 1048576.0);
        goto fail;
    }
    const size_t B = (size_t)inf->n_batch;
    const size_t NS = (size_t)inf->n_seq + 1;
    inf->seq_past = xcalloc(inf, NS, sizeof(int));
    inf->b_tok = xcalloc(inf, B, sizeof(int32_t));
    inf->fb.pos = xcalloc(inf, B, sizeof(int));
    inf->fb.seq = xcalloc(inf, B, sizeof(int));
    inf->fb.seg_t0 = xcalloc(inf, NS, sizeof(int));
    inf->fb.seg_n = xcalloc(inf, NS, sizeof(int));
    inf->fb.seg_seq = xcalloc(inf, NS, sizeof(int));
    inf->fb.seg_pos0 = xcalloc(inf, NS, sizeof(int));
    inf->fb.seg_item0 = xcalloc(inf, NS + 1, sizeof(int));
    if (!inf->seq_past || !inf->b_tok || !inf->fb.pos || !inf->fb.seq || !inf->fb.seg_t0 ||
        !inf->fb.seg_n || !inf->fb.seg_seq || !inf->fb.seg_pos0 || !inf->fb.seg_item0) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory (batch tables)");
        goto fail;
    }
    inf->x = xcalloc(inf, B * E, sizeof(float));
    inf->xb = xcalloc(inf, B * E, sizeof(float));
    inf->xb2 = xcalloc(inf, B * E, sizeof(float));
    inf->q = xcalloc(inf, B * inf->q_dim, sizeof(float));
    inf->att = xcalloc(inf, B * inf->q_dim, sizeof(float));
    inf->k = xcalloc(inf, B * inf->kv_dim, sizeof(float));
    inf->v = xcalloc(inf, B * inf->kv_dim, sizeof(float));
    inf->hb = xcalloc(inf, B * F_max, sizeof(float));
    inf->hb2 = xcalloc(inf, B * F_max, sizeof(float));
    if (!inf->k_cache || !inf->v_cache || !inf->x || !inf->xb || !inf->xb2 || !inf->q ||
        !inf->att || !inf->k || !inf->v || !inf->hb || !inf->hb2) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory for the KV cache (%d positions) and "
                        "activations (%d tokens)", inf->n_ctx, inf->n_batch);
        goto fail;
    }
    if (X > 0) {
        inf->rlog = xcalloc(inf, B * X, sizeof(float));
        inf->sel = xcalloc(inf, B * K, sizeof(int));
        inf->selw = xcalloc(inf, B * K, sizeof(float));
        inf->ex_tok = xcalloc(inf, B * K, sizeof(int));
        inf->ex_start = xcalloc(inf, (size_t)X + 1, sizeof(int));
        inf->xe = xcalloc(inf, B * E, sizeof(float));
        inf->ye = xcalloc(inf, B * E, sizeof(float));
        inf->yslot = xcalloc(inf, B * K * E, sizeof(float));
        if (!inf->rlog || !inf->sel || !inf->selw || !inf->ex_tok || !inf->ex_start ||
            !inf->xe || !inf->ye || !inf->yslot) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory for the expert buffers (%d tokens)",
                            inf->n_batch);
            goto fail;
        }
    }
    int n_in_max = E > F_max ? E : F_max;
    if (inf->q_dim > n_in_max)
        n_in_max = inf->q_dim;
    inf->tile_cap = TILE_TARGET_NBYTES / sizeof(float);
    if (inf->tile_cap < (size_t)32 * n_in_max)
        inf->tile_cap = (size_t)32 * n_in_max;
    inf->xt = xcalloc(inf, (size_t)SWAP_MAX_T * n_in_max, sizeof(float));
    if (!inf->xt) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto fail;
    }
    inf->scratch = xcalloc(inf, (size_t)inf->max_threads, sizeof *inf->scratch);
    if (!inf->scratch) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto fail;
    }
    for (int t = 0; t < inf->max_threads; t++) {
        qe_thread_scratch *s = &inf->scratch[t];
        s->tile = xcalloc(inf, inf->tile_cap, sizeof(float));
        s->pack = xcalloc(inf, inf->tile_cap + PACK_EXTRA, sizeof(float));
        s->scores = xcalloc(inf, (size_t)ATT_BLOCK * inf->n_ctx, sizeof(float));
        s->row = xcalloc(inf, (size_t)n_in_max, sizeof(float));
        if (!s->tile || !s->pack || !s->scores || !s->row) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory (thread scratch)");
            goto fail;
        }
    }
    if (inf->numerics == QE_NUMERICS_LLAMACPP && (rc = lc_init(inf, err)))
        goto fail;
    if (inf->numerics == QE_NUMERICS_INT8) {
        inf->i8_vnni = qe_i8_have_vnni() && inf->isa == QE_ISA_AVX512;
        inf->xq_nbytes = qe_i8_act_nbytes(inf->n_batch, n_in_max);
        inf->xq = aligned_alloc(64, inf->xq_nbytes);
        if (!inf->xq) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory (%.1f MiB for int8 activations)",
                            inf->xq_nbytes / 1048576.0);
            goto fail;
        }
        inf->alloc_nbytes += inf->xq_nbytes;
    }
    if (!(inf->pool = qe_pool_new(inf->max_threads, err))) {
        rc = err ? err->code : QE_ENOMEM;
        goto fail;
    }
    return inf;
fail:
    (void)rc;
    qe_infer_free(inf);
    return NULL;
}

void qe_infer_free(qe_infer *inf)
{
    if (!inf)
        return;
    qe_pool_free(inf->pool);
    free(inf->lc_ws);
    for (int i = 0; i < inf->n_vecs; i++)
        free(inf->vecs[i]);
    free(inf->vecs);
    free(inf->layers);
    free(inf->names);
    free(inf->exp_wts);
    free(inf->all_w);
    if (inf->rope_cos[1] != inf->rope_cos[0]) {
        free(inf->rope_cos[1]);
        free(inf->rope_sin[1]);
    }
    free(inf->rope_cos[0]);
    free(inf->rope_sin[0]);
    free(inf->rlog);
    free(inf->sel);
    free(inf->selw);
    free(inf->ex_tok);
    free(inf->ex_start);
    free(inf->xe);
    free(inf->ye);
    free(inf->yslot);
    free(inf->k_cache);
    free(inf->v_cache);
    free(inf->seq_past);
    free(inf->b_tok);
    free(inf->b_rows);
    free(inf->fb.pos);
    free(inf->fb.seq);
    free(inf->fb.seg_t0);
    free(inf->fb.seg_n);
    free(inf->fb.seg_seq);
    free(inf->fb.seg_pos0);
    free(inf->fb.seg_item0);
    free(inf->x);
    free(inf->xb);
    free(inf->xb2);
    free(inf->q);
    free(inf->att);
    free(inf->k);
    free(inf->v);
    free(inf->hb);
    free(inf->hb2);
    free(inf->xt);
    free(inf->xq);
    if (inf->scratch) {
        for (int t = 0; t < inf->max_threads; t++) {
            free(inf->scratch[t].tile);
            free(inf->scratch[t].pack);
            free(inf->scratch[t].scores);
            free(inf->scratch[t].row);
        }
        free(inf->scratch);
    }
    free(inf);
}

int qe_infer_n_past(const qe_infer *inf)
{
    return inf->seq_past[0];
}

void qe_infer_rewind(qe_infer *inf, int n_past)
{
    qe_infer_seq_rewind(inf, 0, n_past);
}

int qe_infer_n_embd(const qe_infer *inf)
{
    return inf->cfg.n_embd;
}

int qe_infer_n_vocab(const qe_infer *inf)
{
    return inf->cfg.n_vocab;
}

const struct qe_model *qe_infer_model(const qe_infer *inf)
{
    return inf->m;
}

int qe_infer_n_threads(const qe_infer *inf)
{
    return inf->n_threads;
}

int qe_infer_n_ctx(const qe_infer *inf)
{
    return inf->n_ctx;
}

void qe_infer_set_threads(qe_infer *inf, int n_threads)
{
    if (n_threads <= 0)
        n_threads = omp_get_max_threads();
    if (n_threads > inf->max_threads)
        n_threads = inf->max_threads; /* scratch exists for max_threads only */
    inf->n_threads = n_threads;
}

uint64_t qe_infer_alloc_nbytes(const qe_infer *inf)
{
    return inf->alloc_nbytes;
}

/* ------------------------------------------------------------ threads -- */

/* Jobs smaller than this (multiply-adds) run on the calling thread only:
 * waking a worker costs more than it saves.  Results never depend on it. */
#define PAR_MIN_WORK (1 << 17)

static void run_job(qe_infer *inf, double work, int n_items, qe_pool_fn fn, void *ctx)
{
    qe_pool_run(inf->pool, work >= PAR_MIN_WORK ? inf->n_threads : 1, n_items, fn, ctx);
}

/* Round n floats to the nearest f16 value (ties to even), in place: the
 * f16 KV cache and f16 activations of llamacpp numerics.  The AVX-512 and
 * scalar paths give the same bits (both round to nearest even). */
__attribute__((target("avx512f"))) static void round_f16_avx512(float *v, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(v + i),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm512_storeu_ps(v + i, _mm512_cvtph_ps(h));
    }
    for (; i < n; i++)
        v[i] = qe_fp16_to_fp32(qe_fp32_to_fp16(v[i]));
}

static void round_f16(int isa, float *v, int n)
{
    if (isa == QE_ISA_AVX512) {
        round_f16_avx512(v, n);
        return;
    }
    for (int i = 0; i < n; i++)
        v[i] = qe_fp16_to_fp32(qe_fp32_to_fp16(v[i]));
}

/* ------------------------------------------------------------- matmul -- */

/* Rows per tile: the f32 tile fits TILE_TARGET_NBYTES, a multiple of 32
 * (the kernel's column block), and there are enough tiles for the threads.
 * Decode (T <= QE_DECODE_MAX_T): no tile is materialised, and each thread
 * streams long runs of rows: DECODE_ITEMS_PER_THREAD contiguous items per
 * thread (32-row items, taken in turn by the threads, gave 20 % fewer
 * tokens/s on the Qwen2.5-0.5B shape: every switch breaks the hardware
 * prefetchers' streams). */
#define DECODE_ITEMS_PER_THREAD 4
/* decode prefetches the weight row this many rows ahead (about 4 KiB at
 * these shapes): +10-15 % tokens/s on 2 cores (Zen 5), where the hardware
 * prefetchers alone leave bandwidth unused */
#define PF_ROWS 4
static int tile_rows(const qe_infer *inf, const qe_wt *w, int t_gemm)
{
    if (t_gemm == 0) {
        const int per = inf->n_threads * DECODE_ITEMS_PER_THREAD;
        int r = (w->n_out + per - 1) / per;
        r = (r + 15) / 16 * 16;
        return r < 16 ? 16 : r;
    }
    int r = (int)(inf->tile_cap / (size_t)w->n_in);
    if (r > 256)
        r = 256;
    r = r / 32 * 32;
    int want = (w->n_out + 2 * inf->n_threads - 1) / (2 * inf->n_threads);
    want = (want + 31) / 32 * 32;
    if (want < r)
        r = want;
    if (r < 32)
        r = 32;
    return r;
}

/* Rows unpacked at a time by the int8 path (mm_tile) */
#define I8_CHUNK 16

/* Does w take the int8 kernels (int8 numerics and a type dot_int8.h covers)? */
static bool i8_path(const qe_infer *inf, const qe_wt *w)
{
    return inf->numerics == QE_NUMERICS_INT8 && qe_i8_group(w->t->type) &&
           w->n_in % 32 == 0;
}

/* Does a prefill product of t_gemm tokens run as W . X^T (mm_tile)? */
static bool few_tokens(int t_gemm)
{
    return t_gemm > 2 && t_gemm <= SWAP_MAX_T;
}

/* y[t][r0 + r] += w's bias[r0 + r] for t < T, r < rows (if w has one) */
static void add_bias(const qe_wt *w, int T, float *y, int ldy, int r0, int rows)
{
    if (w->bias)
        for (int t = 0; t < T; t++)
            for (int r = 0; r < rows; r++)
                y[(size_t)t * ldy + r0 + r] += w->bias[r0 + r];
}

/*
 * y[t][r0..r0+rows) = x[t] . W[r0..r0+rows)^T (+ bias) for t < T.
 * Prefill: dequantize the tile once, transpose it to k-major and apply it
 * to all T tokens (qe_gemm_f32: one FMA chain per element), or for few
 * tokens apply it as dequantized to X^T.  Decode: row by row through the
 * type's fused row_dot (or an L1-sized row buffer and qe_dot_f32), so the
 * weights stream from memory once and nothing tile-sized is written.
 */
static void mm_tile(qe_infer *inf, const qe_wt *w, const float *x, int ldx, const float *xt,
                    const void *xq, int T, int t_gemm, float *y, int ldy, int r0, int rows,
                    int tid)
{
    qe_thread_scratch *s = &inf->scratch[tid];
    const int n_in = w->n_in, isa = inf->isa;
    const uint8_t *src = w->data + (size_t)r0 * w->row_nbytes;
    if (xq && i8_path(inf, w)) {
        /* int8 numerics: every token alike, whatever t_gemm (quant/dot_int8.h).
         * Rows in chunks of I8_CHUNK, the next chunk's bytes requested while
         * the kernel works on this one: the weight stream overlaps the
         * arithmetic instead of stalling the unpacker. */
        for (int c0 = 0; c0 < rows; c0 += I8_CHUNK) {
            const int nc = rows - c0 < I8_CHUNK ? rows - c0 : I8_CHUNK;
            const uint8_t *cs = src + (size_t)c0 * w->row_nbytes;
            if (c0 + nc < rows) {
                const int nn = rows - c0 - nc < I8_CHUNK ? rows - c0 - nc : I8_CHUNK;
                const uint8_t *pf = cs + (size_t)nc * w->row_nbytes;
                for (size_t off = 0; off < (size_t)nn * w->row_nbytes; off += 64)
                    _mm_prefetch((const char *)pf + off, _MM_HINT_T0);
            }
            qe_i8_unpack(w->t->type, cs, w->row_nbytes, nc, n_in, s->tile, inf->i8_vnni);
            qe_i8_gemm(w->t->type, s->tile, nc, n_in, xq, T, y + r0 + c0, ldy, inf->i8_vnni);
        }
        add_bias(w, T, y, ldy, r0, rows);
        return;
    }
    if (t_gemm == 0) {
        /* fused kernel: the same bits without the row buffer (simd_rowdot_avx512.c) */
        const qe_row_dot_fn rd = isa == QE_ISA_AVX512 && n_in % 64 == 0 ? w->tr->row_dot : NULL;
        if (rd) {
            float o[QE_ROW_DOT_MAX_X];
            for (int r = 0; r < rows; r++) {
                if (r + PF_ROWS < rows) { /* the stream runs ahead of the hardware's */
                    const uint8_t *pf = src + (size_t)(r + PF_ROWS) * w->row_nbytes;
                    for (size_t off = 0; off < w->row_nbytes; off += 64)
                        _mm_prefetch((const char *)pf + off, _MM_HINT_T0);
                }
                const float b = w->bias ? w->bias[r0 + r] : 0.0f;
                /* tokens in groups: each token's bits are those of a group of one */
                for (int t0 = 0; t0 < T; t0 += QE_ROW_DOT_MAX_X) {
                    const int nx = T - t0 < QE_ROW_DOT_MAX_X ? T - t0 : QE_ROW_DOT_MAX_X;
                    rd(src + (size_t)r * w->row_nbytes, n_in, x + (size_t)t0 * ldx, nx, ldx, o);
                    for (int t = 0; t < nx; t++)
                        y[(size_t)(t0 + t) * ldy + r0 + r] = o[t] + b;
                }
            }
            return;
        }
        for (int r = 0; r < rows; r++) {
            w->tr->to_float(src + (size_t)r * w->row_nbytes, s->row, n_in);
            const float b = w->bias ? w->bias[r0 + r] : 0.0f;
            for (int t = 0; t < T; t++)
                y[(size_t)t * ldy + r0 + r] = qe_dot_f32(isa, n_in, x + (size_t)t * ldx, s->row) + b;
        }
        return;
    }
    w->tr->to_float(src, s->tile, (int64_t)rows * n_in);
    if (few_tokens(t_gemm)) {
        /* few tokens (sequences decoding together): Y^T = W . X^T, the
         * rows of W as the kernel's M and the tokens as its vector lanes,
         * so the tile is used as dequantized (no transpose of the weights,
         * which costs more than the product at this size).  Every output is
         * the same sequential FMA chain over k, so the bits are those of
         * the branch below. */
        float *yt = s->pack + (size_t)n_in * t_gemm; /* (rows, T) */
        if (!xt) { /* X^T (n_in, T), unless the job made it once for all tiles */
            qe_transpose_f32(isa, t_gemm, n_in, x, ldx, s->pack, t_gemm);
            xt = s->pack;
        }
        qe_gemm_f32(isa, rows, t_gemm, n_in, s->tile, n_in, xt, t_gemm, yt, t_gemm, false);
        qe_transpose_f32(isa, rows, t_gemm, yt, t_gemm, y + r0, ldy);
    } else {
        qe_transpose_f32(isa, rows, n_in, s->tile, n_in, s->pack, rows); /* pack[k][r] */
        qe_gemm_f32(isa, t_gemm, rows, n_in, x, ldx, s->pack, rows, y + r0, ldy, false);
    }
    /* decode rows of a mixed batch: the decode kernel on the same dequantized rows */
    for (int t = t_gemm; t < T; t++)
        for (int r = 0; r < rows; r++)
            y[(size_t)t * ldy + r0 + r] =
                qe_dot_f32(isa, n_in, x + (size_t)t * ldx, s->tile + (size_t)r * n_in);
    add_bias(w, T, y, ldy, r0, rows);
}

/* Up to 3 weights applied to the same input in one pool job (q/k/v;
 * gate/up), with optional epilogues on each finished tile. */
typedef struct mm_job {
    qe_infer *inf;
    int n_w;
    const qe_wt *w[3];
    float *y[3];   /* (T, ldy[j]) outputs */
    int ldy[3];
    int R[3];      /* rows per tile */
    int n_tiles[3];
    const float *x; /* (T, ldx) */
    int ldx, T;
    const float *xt; /* (n_in, t_gemm): x's prefill rows transposed once for all tiles
                        (mm_run sets it when the tiles run W . X^T), or NULL */
    const void *xq;  /* int8 numerics: x quantized once for all tiles (inf->xq), or NULL */
    const char *name[3]; /* weight names, for errors */
    int t_gemm;    /* rows 0..t_gemm-1 take the prefill kernels, the others the decode
                      kernels (gemm_rows(T) for one sequence; a batch's segments decide:
                      fwd_batch), so a token's bits never depend on its companions */
    bool swiglu;   /* w[0] gate, w[1] up, tiles paired: y0 = act(y0) * y1 (gated FFN) */
    int act;       /* enum qe_ffn_act of the gated FFN */
    float *resid;  /* if set: resid[t*ldr + o] += y[0][t*ldy + o] (residual) */
    int ldr;
} mm_job;

/* Epilogue on finished output rows r0..r0+rows of every token. */
static void mm_epilogue(const mm_job *J, int r0, int rows)
{
    const int T = J->T;
    if (J->swiglu && J->act == QE_ACT_GELU)
        for (int t = 0; t < T; t++) {
            float *g = J->y[0] + (size_t)t * J->ldy[0] + r0;
            const float *u = J->y[1] + (size_t)t * J->ldy[1] + r0;
            if (J->inf->numerics == QE_NUMERICS_LLAMACPP)
                for (int i = 0; i < rows; i++)
                    g[i] = gelu_lut(g[i]) * u[i];
            else
                for (int i = 0; i < rows; i++)
                    g[i] = gelu_f32(g[i]) * u[i];
        }
    else if (J->swiglu) /* g = g / (1 + exp(-g)) * u; the expf calls apart so the rest vectorises */
        for (int t = 0; t < T; t++) {
            float *g = J->y[0] + (size_t)t * J->ldy[0] + r0;
            const float *u = J->y[1] + (size_t)t * J->ldy[1] + r0;
            for (int i0 = 0; i0 < rows; i0 += 256) {
                const int n = rows - i0 < 256 ? rows - i0 : 256;
                float e[256];
                for (int i = 0; i < n; i++)
                    e[i] = expf(-g[i0 + i]);
                for (int i = 0; i < n; i++)
                    g[i0 + i] = g[i0 + i] / (1.0f + e[i]) * u[i0 + i];
            }
        }
    if (J->resid)
        for (int t = 0; t < T; t++) {
            float *xr = J->resid + (size_t)t * J->ldr + r0;
            const float *yr = J->y[0] + (size_t)t * J->ldy[0] + r0;
            for (int i = 0; i < rows; i++)
                xr[i] += yr[i];
        }
}

static void mm_item(void *ctx, int item, int tid)
{
    mm_job *J = ctx;
    int j = 0;
    if (!J->swiglu)
        while (item >= J->n_tiles[j]) {
            item -= J->n_tiles[j];
            j++;
        }
    const qe_wt *w = J->w[j];
    const int r0 = item * J->R[j];
    const int rows = w->n_out - r0 < J->R[j] ? w->n_out - r0 : J->R[j];
    mm_tile(J->inf, w, J->x, J->ldx, J->xt, J->xq, J->T, J->t_gemm, J->y[j], J->ldy[j], r0, rows,
            tid);
    if (J->swiglu)
        mm_tile(J->inf, J->w[1], J->x, J->ldx, J->xt, J->xq, J->T, J->t_gemm, J->y[1], J->ldy[1],
                r0, rows, tid);
    if (j == 0)
        mm_epilogue(J, r0, rows);
}

/* llamacpp numerics: each weight through qe_matmul_llamacpp_ws (its own
 * OpenMP over output rows, set to this core's thread count), then bias
 * and epilogue.  x rows and y rows must be dense (ldx = n_in, ldy = n_out),
 * as at every call site.  F32 weights take the exact path: ggml multiplies
 * them in f32 too (vec_dot_type f32), only its summation order differs
 * (last-bit effects), and the scalar emulation of that order is ~30x
 * slower than this core's kernels. */
static int mm_run_llamacpp(mm_job *J, qe_err *err)
{
    qe_infer *inf = J->inf;
    const int omp_prev = omp_get_max_threads();
    int rc = 0;
    omp_set_num_threads(inf->n_threads);
    for (int j = 0; j < J->n_w && rc == 0; j++) {
        const qe_wt *w = J->w[j];
        if (w->t->type == QE_TYPE_F32) {
            mm_job J1 = {.inf = inf, .n_w = 1, .w = {w}, .y = {J->y[j]}, .ldy = {J->ldy[j]},
                         .R = {J->R[j]}, .n_tiles = {J->n_tiles[j]}, .x = J->x, .ldx = J->ldx,
                         .T = J->T, .t_gemm = J->t_gemm};
            run_job(inf, (double)J->T * w->n_out * w->n_in, J1.n_tiles[0], mm_item, &J1);
            continue;
        }
        if (J->ldx != w->n_in || J->ldy[j] != w->n_out) {
            rc = qe_err_set(err, QE_EINVAL, "%s: llamacpp matmul needs dense rows (ldx %d, ldy "
                            "%d)", J->name[j], J->ldx, J->ldy[j]);
            break;
        }
        qe_err e = {0};
        rc = qe_matmul_llamacpp_ws(w->t->type, w->data, w->row_nbytes, w->n_out, w->n_in,
                                   J->x, J->T, J->y[j], inf->lc_ws, inf->lc_ws_nbytes, &e);
        if (rc) {
            qe_err_set(err, rc, "%s: %s", J->name[j], e.msg);
            break;
        }
        if (w->bias)
            for (int t = 0; t < J->T; t++)
                for (int o = 0; o < w->n_out; o++)
                    J->y[j][(size_t)t * J->ldy[j] + o] += w->bias[o];
    }
    omp_set_num_threads(omp_prev);
    if (rc == 0)
        mm_epilogue(J, 0, J->w[0]->n_out);
    return rc;
}

static void quantize_item(void *ctx, int t, int tid)
{
    (void)tid;
    const mm_job *J = ctx;
    qe_i8_quantize(J->x, J->ldx, J->T, J->w[0]->n_in, t, t + 1, J->inf->xq, J->inf->i8_vnni);
}

static void mm_add(mm_job *J, const qe_wt *w, const char *name, float *y, int ldy)
{
    qe_infer *inf = J->inf;
    if (inf->hook && J->ldx == w->n_in && !w->no_hook)
        inf->hook(inf->hook_ud, name, J->x, J->T, w->n_in);
    const int j = J->n_w++;
    J->w[j] = w;
    J->name[j] = name;
    J->y[j] = y;
    J->ldy[j] = ldy;
    J->R[j] = tile_rows(inf, w, J->t_gemm);
    J->n_tiles[j] = (w->n_out + J->R[j] - 1) / J->R[j];
}

static int mm_run(mm_job *J, qe_err *err)
{
    if (J->inf->numerics == QE_NUMERICS_LLAMACPP)
        return mm_run_llamacpp(J, err);
    double work = 0;
    int n_items = 0;
    for (int j = 0; j < J->n_w; j++) {
        work += (double)J->T * J->w[j]->n_out * J->w[j]->n_in;
        n_items += J->n_tiles[j];
    }
    if (J->swiglu)
        n_items = J->n_tiles[0];
    const int n_in = J->w[0]->n_in;
    bool same_in = true;
    for (int j = 1; j < J->n_w; j++)
        same_in = same_in && J->w[j]->n_in == n_in;
    bool any_i8 = false;
    for (int j = 0; j < J->n_w; j++)
        any_i8 = any_i8 || i8_path(J->inf, J->w[j]);
    /* int8 numerics: x quantized once for all tiles, its tokens over the threads */
    if (any_i8 && same_in && qe_i8_act_nbytes(J->T, n_in) <= J->inf->xq_nbytes) {
        J->xq = J->inf->xq;
        run_job(J->inf, 2.0 * J->T * n_in, J->T, quantize_item, J);
        qe_i8_act_clear(J->T, n_in, J->inf->xq);
    }
    if (few_tokens(J->t_gemm) && same_in && n_items > 1) {
        qe_transpose_f32(J->inf->isa, J->t_gemm, n_in, J->x, J->ldx, J->inf->xt, J->t_gemm);
        J->xt = J->inf->xt;
    }
    run_job(J->inf, work, n_items, mm_item, J);
    return 0;
}

/* Rows taking the prefill kernels when T rows of one sequence run together. */
static int gemm_rows(int T)
{
    return T > QE_DECODE_MAX_T ? T : 0;
}

/* y = x . W^T (+ bias) for T rows of x (t_gemm: see mm_job); optionally resid += y. */
static int matmul(qe_infer *inf, const qe_wt *w, const char *name, const float *x, int ldx,
                  int T, int t_gemm, float *y, int ldy, float *resid, int ldr, qe_err *err)
{
    mm_job J = {.inf = inf, .x = x, .ldx = ldx, .T = T, .t_gemm = t_gemm, .resid = resid,
                .ldr = ldr};
    mm_add(&J, w, name, y, ldy);
    return mm_run(&J, err);
}

/* ---------------------------------------------------------- per token -- */

/* out = x / sqrt(mean(x^2) + eps) * w, the sum of squares in double (ggml_rms_norm). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        out[i] = (x[i] * scale) * w[i];
}

typedef struct tok_job {
    qe_infer *inf;
    float *out;
    const float *x, *w;
    const int32_t *tokens;
    int l, pos0;
} tok_job;

static void rmsnorm_item(void *ctx, int t, int tid)
{
    (void)tid;
    tok_job *J = ctx;
    const int E = J->inf->cfg.n_embd;
    rmsnorm(J->out + (size_t)t * E, J->x + (size_t)t * E, J->w, E, J->inf->cfg.rms_eps);
}

static void rmsnorm_rows(qe_infer *inf, float *out, const float *x, const float *w, int T)
{
    tok_job J = {.inf = inf, .out = out, .x = x, .w = w};
    run_job(inf, 4.0 * T * inf->cfg.n_embd, T, rmsnorm_item, &J);
}

static void embed_item(void *ctx, int t, int tid)
{
    (void)tid;
    tok_job *J = ctx;
    qe_infer *inf = J->inf;
    const int E = inf->cfg.n_embd;
    float *x = inf->x + (size_t)t * E;
    inf->tok_embd.tr->to_float(inf->tok_embd.data + (size_t)J->tokens[t] * inf->tok_embd.row_nbytes,
                               x, E);
    const float sc = inf->cfg.embd_scale;
    if (sc != 1.0f) /* gemma: times sqrt(n_embd) */
        for (int i = 0; i < E; i++)
            x[i] *= sc;
}

/* RoPE on q and k of token t, then k (transposed) and v into the cache of
 * layer l at position pos0 + t.  llamacpp numerics: q, k, v rounded to f16
 * (ggml converts q to the f16 cache's vec_dot type; the cache is f16). */
static void rope_kv_item(void *ctx, int t, int tid)
{
    (void)tid;
    tok_job *J = ctx;
    qe_infer *inf = J->inf;
    const qe_config *c = &inf->cfg;
    const int qd = inf->q_dim, kvd = inf->kv_dim, cap = inf->kv_cap, hd = c->head_dim;
    const int p = inf->fb.pos[t];
    const size_t col = (size_t)inf->fb.seq[t] * inf->n_ctx + (size_t)p; /* its slot's column */
    float *kt_l = inf->k_cache + (size_t)J->l * c->n_head_kv * hd * cap;
    float *v_l = inf->v_cache + (size_t)J->l * cap * kvd;
    float *q = inf->q + (size_t)t * qd, *k = inf->k + (size_t)t * kvd, *v = inf->v + (size_t)t * kvd;
    const qe_layer_w *lw = &inf->layers[J->l];
    if (lw->q_norm) /* per-head RMS norms (qwen3, gemma3) */
        for (int h = 0; h < c->n_head; h++)
            rmsnorm(q + (size_t)h * hd, q + (size_t)h * hd, lw->q_norm, hd, c->rms_eps);
    if (lw->k_norm)
        for (int h = 0; h < c->n_head_kv; h++)
            rmsnorm(k + (size_t)h * hd, k + (size_t)h * hd, lw->k_norm, hd, c->rms_eps);
    rope_apply(inf, lw->rope, q, c->n_head, p);
    rope_apply(inf, lw->rope, k, c->n_head_kv, p);
    if (c->q_prescale) /* scale q, not the scores (llama.cpp's order for gemma, phi3) */
        for (int d = 0; d < qd; d++)
            q[d] *= c->attn_scale;
    if (inf->numerics == QE_NUMERICS_LLAMACPP) {
        round_f16(inf->isa, q, qd);
        round_f16(inf->isa, k, kvd);
        round_f16(inf->isa, v, kvd);
    }
    for (int d = 0; d < kvd; d++) /* d = g*hd + i -> kt[g][i][p] */
        kt_l[(size_t)d * cap + col] = k[d];
    memcpy(v_l + col * kvd, v, (size_t)kvd * sizeof(float));
}

/* ---------------------------------------------------------- attention -- */

typedef struct att_job {
    qe_infer *inf;
    int l;
} att_job;

/* One (segment, head, block of ATT_BLOCK query tokens): scores = q.K^T
 * (gemm against the segment's slot of the transposed cache), causal
 * softmax, then P.V (gemm).  A query's bits depend on its own position and
 * keys only. */
static void att_item(void *ctx, int item, int tid)
{
    att_job *J = ctx;
    qe_infer *inf = J->inf;
    const fwd_batch *fb = &inf->fb;
    int sg = 0;
    while (item >= fb->seg_item0[sg + 1])
        sg++;
    item -= fb->seg_item0[sg];
    const qe_config *c = &inf->cfg;
    const int hd = c->head_dim, n_ctx = inf->n_ctx, kvd = inf->kv_dim, qd = inf->q_dim;
    const int kcap = inf->kv_cap;
    const int gqa = c->n_head / c->n_head_kv, T = fb->seg_n[sg], pos0 = fb->seg_pos0[sg];
    const int isa = inf->isa, n_blk = (T + ATT_BLOCK - 1) / ATT_BLOCK;
    const float scale = c->q_prescale ? 1.0f : c->attn_scale;
    const float cap = c->attn_softcap, inv_cap = cap > 0.0f ? 1.0f / cap : 0.0f;
    const int win = inf->layers[J->l].swa ? c->n_swa : 0;
    const size_t slot = (size_t)fb->seg_seq[sg] * n_ctx;
    const float *kt_l = inf->k_cache + (size_t)J->l * c->n_head_kv * hd * kcap + slot;
    const float *v_l = inf->v_cache + ((size_t)J->l * kcap + slot) * kvd;
    float *S = inf->scratch[tid].scores;
    const int h = item / n_blk, b = item % n_blk, g = h / gqa;
    const int t0 = b * ATT_BLOCK;
    const int mr = T - t0 < ATT_BLOCK ? T - t0 : ATT_BLOCK;
    const int N = pos0 + t0 + mr; /* keys 0..N-1 cover every query of the block */
    const size_t tq = (size_t)fb->seg_t0[sg] + t0; /* batch row of the block's first query */
    qe_gemm_f32(isa, mr, N, hd, inf->q + tq * qd + (size_t)h * hd, qd,
                kt_l + (size_t)g * hd * kcap, kcap, S, n_ctx, false);
    for (int i = 0; i < mr; i++) {
        float *row = S + (size_t)i * n_ctx;
        const int p = pos0 + t0 + i; /* causal: keys 0..p */
        /* sliding window: key j masked when p - j >= win */
        const int lo = win > 0 && p - win + 1 > 0 ? p - win + 1 : 0;
        for (int j = 0; j < lo; j++)
            row[j] = 0.0f;
        if (cap > 0.0f) /* soft-cap before the mask and softmax (gemma2) */
            for (int j = lo; j <= p; j++)
                row[j] = tanhf(row[j] * inv_cap) * cap;
        float mx = -INFINITY;
        for (int j = lo; j <= p; j++) {
            row[j] *= scale;
            if (row[j] > mx)
                mx = row[j];
        }
        double sum = 0.0;
        for (int j = lo; j <= p; j++) {
            const float e = expf(row[j] - mx);
            row[j] = e;
            sum += (double)e;
        }
        const float inv = (float)(1.0 / sum);
        for (int j = lo; j <= p; j++)
            row[j] *= inv;
        for (int j = p + 1; j < N; j++)
            row[j] = 0.0f;
        if (inf->numerics == QE_NUMERICS_LLAMACPP) /* ggml: P to f16 for the f16 V */
            round_f16(isa, row + lo, p + 1 - lo);
    }
    qe_gemm_f32(isa, mr, hd, N, S, n_ctx, v_l + (size_t)g * hd, kvd,
                inf->att + tq * qd + (size_t)h * hd, qd, false);
}

/* att of every token of the batch, reading the cache of layer l. */
static void attention(qe_infer *inf, int l)
{
    const qe_config *c = &inf->cfg;
    const fwd_batch *fb = &inf->fb;
    double work = 0;
    for (int sg = 0; sg < fb->n_seg; sg++)
        work += 2.0 * c->n_head * fb->seg_n[sg] * (fb->seg_pos0[sg] + fb->seg_n[sg]) * c->head_dim;
    att_job J = {.inf = inf, .l = l};
    run_job(inf, work, fb->seg_item0[fb->n_seg], att_item, &J);
}

/* ------------------------------------------------------------ forward -- */

static const char *wname(qe_infer *inf, int l, int j, const char *suffix)
{
    char *n = inf->names[(size_t)l * WN_PER_LAYER + j];
    if (!n[0])
        snprintf(n, 96, "blk.%d.%s.weight", l, suffix);
    return n;
}

/* Gated feed-forward on T rows of x (ldx E): out = down(act(x.Wg^T) * x.Wu^T),
 * out added to resid when given.  t_gemm: see mm_job. */
static int gated_ffn(qe_infer *inf, const qe_wt *gate, const qe_wt *up, const qe_wt *down,
                     const char *ng, const char *nu, const char *nd, const float *x, int T,
                     int t_gemm, float *out, float *resid, int expert, qe_err *err)
{
    const int E = inf->cfg.n_embd, F = gate->n_out;
    if (expert >= 0 && inf->hook_id) {
        inf->hook_id(inf->hook_ud, ng, expert, inf->cfg.n_expert, x, T, E);
        inf->hook_id(inf->hook_ud, nu, expert, inf->cfg.n_expert, x, T, E);
    }
    mm_job FF = {.inf = inf, .x = x, .ldx = E, .T = T, .t_gemm = t_gemm, .swiglu = true,
                 .act = inf->cfg.ffn_act};
    mm_add(&FF, gate, ng, inf->hb, F);
    mm_add(&FF, up, nu, inf->hb2, F);
    int rc = mm_run(&FF, err);
    if (rc)
        return rc;
    if (expert >= 0 && inf->hook_id)
        inf->hook_id(inf->hook_ud, nd, expert, inf->cfg.n_expert, inf->hb, T, F);
    mm_job D = {.inf = inf, .x = inf->hb, .ldx = F, .T = T, .t_gemm = t_gemm, .resid = resid,
                .ldr = E};
    mm_add(&D, down, nd, out, E);
    return mm_run(&D, err);
}

/* Router of token t: softmax over the expert logits (max subtracted, sum in
 * double, times 1/sum as ggml_soft_max), the top k by probability (ties:
 * lower index), their weights renormalised to sum 1 when the architecture
 * says so (sum in double, then a float division, as ggml_sum_rows/div). */
static void route_item(void *ctx, int t, int tid)
{
    (void)tid;
    tok_job *J = ctx;
    qe_infer *inf = J->inf;
    const int X = inf->cfg.n_expert, K = inf->cfg.n_expert_used;
    float *p = inf->rlog + (size_t)t * X;
    float mx = -INFINITY;
    for (int e = 0; e < X; e++)
        if (p[e] > mx)
            mx = p[e];
    double sum = 0.0;
    for (int e = 0; e < X; e++) {
        p[e] = expf(p[e] - mx);
        sum += (double)p[e];
    }
    const float inv = (float)(1.0 / sum);
    for (int e = 0; e < X; e++)
        p[e] *= inv;
    int *sel = inf->sel + (size_t)t * K;
    float *w = inf->selw + (size_t)t * K;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < X; e++) {
            bool taken = false;
            for (int j = 0; j < k; j++)
                taken |= sel[j] == e;
            if (!taken && (best < 0 || p[e] > p[best]))
                best = e;
        }
        sel[k] = best;
        w[k] = p[best];
    }
    if (inf->cfg.moe_norm_topk) {
        double ws = 0.0;
        for (int k = 0; k < K; k++)
            ws += (double)w[k];
        const float wsf = (float)ws;
        for (int k = 0; k < K; k++)
            w[k] /= wsf;
    }
}

/* Weighted sum of the experts' outputs of token t, in slot order, plus the
 * shared expert times its sigmoid gate: xb2[t]. */
static void combine_item(void *ctx, int t, int tid)
{
    (void)tid;
    tok_job *J = ctx;
    qe_infer *inf = J->inf;
    const qe_layer_w *lw = &inf->layers[J->l];
    const int E = inf->cfg.n_embd, K = inf->cfg.n_expert_used;
    float *o = inf->xb2 + (size_t)t * E;
    const float *w = inf->selw + (size_t)t * K;
    const float *y0 = inf->yslot + (size_t)t * K * E;
    for (int i = 0; i < E; i++)
        o[i] = y0[i] * w[0];
    for (int k = 1; k < K; k++) {
        const float *yk = y0 + (size_t)k * E;
        for (int i = 0; i < E; i++)
            o[i] += yk[i] * w[k];
    }
    if (lw->sh_gate_inp) {
        /* gate = sigmoid(x . g) computed as silu(z)/z (llama.cpp's graph) */
        const float *x = inf->xb + (size_t)t * E;
        float z = 0.0f;
        for (int i = 0; i < E; i++)
            z += x[i] * lw->sh_gate_inp[i];
        const float g = z != 0.0f ? (z / (1.0f + expf(-z))) / z : 0.5f;
        const float *ys = inf->ye + (size_t)t * E;
        for (int i = 0; i < E; i++)
            o[i] += ys[i] * g;
    }
}

/*
 * Mixture-of-experts FFN on the T normed rows in xb -> xb2.  Tokens are
 * grouped by expert (in token order within a group); each expert with
 * tokens runs one batched gated FFN over its group, so its weights are
 * dequantized once per batch.  Every output element is still one FMA
 * chain over its inputs and the slots are summed in a fixed order, so the
 * bits do not depend on the batch composition or the thread count.
 */
static int moe_ffn(qe_infer *inf, int l, int T, qe_err *err)
{
    const qe_config *c = &inf->cfg;
    const qe_layer_w *lw = &inf->layers[l];
    const int E = c->n_embd, X = c->n_expert, K = c->n_expert_used;
    int rc;
    const int t_gemm = inf->fb.t_gemm;
    if ((rc = matmul(inf, &lw->router, wname(inf, l, WN_ROUTER, "ffn_gate_inp"), inf->xb, E, T,
                     t_gemm, inf->rlog, X, NULL, 0, err)))
        return rc;
    tok_job RJ = {.inf = inf, .l = l};
    run_job(inf, 4.0 * T * X * K, T, route_item, &RJ);
    int *start = inf->ex_start;
    memset(start, 0, (size_t)(X + 1) * sizeof *start);
    for (int i = 0; i < T * K; i++)
        start[inf->sel[i] + 1]++;
    for (int e = 0; e < X; e++)
        start[e + 1] += start[e];
    for (int e = 0, fill = 0; e < X; e++) /* token-major order inside each group */
        for (int i = 0; i < T * K; i++)
            if (inf->sel[i] == e)
                inf->ex_tok[fill++] = i;
    for (int e = 0; e < X; e++) {
        const int n = start[e + 1] - start[e];
        if (n == 0)
            continue;
        const int *ids = inf->ex_tok + start[e];
        int n_gemm = 0; /* ids are in token order: the batch's prefill tokens first */
        while (n_gemm < n && ids[n_gemm] / K < t_gemm)
            n_gemm++;
        for (int r = 0; r < n; r++)
            memcpy(inf->xe + (size_t)r * E, inf->xb + (size_t)(ids[r] / K) * E,
                   (size_t)E * sizeof(float));
        const qe_wt *ew = lw->exps + 3 * e;
        if ((rc = gated_ffn(inf, &ew[0], &ew[1], &ew[2], wname(inf, l, WN_GATE_EXPS, "ffn_gate_exps"),
                            wname(inf, l, WN_UP_EXPS, "ffn_up_exps"),
                            wname(inf, l, WN_DOWN_EXPS, "ffn_down_exps"), inf->xe, n, n_gemm,
                            inf->ye, NULL, e, err)))
            return rc;
        for (int r = 0; r < n; r++)
            memcpy(inf->yslot + (size_t)ids[r] * E, inf->ye + (size_t)r * E,
                   (size_t)E * sizeof(float));
    }
    if (lw->sh_gate_inp &&
        (rc = gated_ffn(inf, &lw->sh_gate, &lw->sh_up, &lw->sh_down,
                        wname(inf, l, WN_SH_GATE, "ffn_gate_shexp"),
                        wname(inf, l, WN_SH_UP, "ffn_up_shexp"),
                        wname(inf, l, WN_SH_DOWN, "ffn_down_shexp"), inf->xb, T, t_gemm, inf->ye,
                        NULL, -1, err)))
        return rc;
    if (lw->sh_gate_inp && inf->hook) /* its 1-row matmul, as llama-imatrix sees it */
        inf->hook(inf->hook_ud, wname(inf, l, WN_SH_GATE_INP, "ffn_gate_inp_shexp"), inf->xb, T,
                  E);
    tok_job CJ = {.inf = inf, .l = l};
    run_job(inf, 2.0 * T * K * E, T, combine_item, &CJ);
    return 0;
}

/* xb2 = rmsnorm(xb2) * w, then x += xb2 (the post-branch norms of gemma). */
static void post_norm_add(qe_infer *inf, const float *w, int T)
{
    const int E = inf->cfg.n_embd;
    rmsnorm_rows(inf, inf->xb2, inf->xb2, w, T);
    for (size_t i = 0; i < (size_t)T * E; i++)
        inf->x[i] += inf->xb2[i];
}

/* inf->fb for one run of T tokens of sequence slot seq. */
static void batch_one(qe_infer *inf, int seq, int T)
{
    fwd_batch *fb = &inf->fb;
    fb->T = T;
    fb->t_gemm = gemm_rows(T);
    fb->n_seg = 1;
    fb->seg_t0[0] = 0;
    fb->seg_n[0] = T;
    fb->seg_seq[0] = seq;
    fb->seg_pos0[0] = inf->seq_past[seq];
    fb->seg_item0[0] = 0;
    fb->seg_item0[1] = inf->cfg.n_head * ((T + ATT_BLOCK - 1) / ATT_BLOCK);
    for (int t = 0; t < T; t++) {
        fb->pos[t] = fb->seg_pos0[0] + t;
        fb->seq[t] = seq;
    }
}

/* The T tokens of inf->fb through every layer; advances each segment's
 * slot.  Logits for rows >= logits_from into logits (row-major) unless
 * logits is NULL (logits_from = T: none).  One block implementation for
 * every architecture: the optional steps are switched by qe_config's
 * feature fields. */
static int forward(qe_infer *inf, const int32_t *tokens, int T, int logits_from, float *logits,
                   bool defer, qe_err *err)
{
    inf->defer_n = 0;
    const qe_config *c = &inf->cfg;
    const int E = c->n_embd;
    const int qd = inf->q_dim, kvd = inf->kv_dim, t_gemm = inf->fb.t_gemm;
    int rc = 0;

    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->n_vocab)
            return qe_err_set(err, QE_EINVAL, "token %d at batch index %d: expected an id in "
                              "[0, %d)", tokens[t], t, c->n_vocab);
    tok_job TJ = {.inf = inf, .tokens = tokens};
    run_job(inf, 4.0 * T * E, T, embed_item, &TJ);

    for (int l = 0; l < c->n_layer; l++) {
        const qe_layer_w *lw = &inf->layers[l];
        /* attention */
        rmsnorm_rows(inf, inf->xb, inf->x, lw->attn_norm, T);
        mm_job QKV = {.inf = inf, .x = inf->xb, .ldx = E, .T = T, .t_gemm = t_gemm};
        mm_add(&QKV, &lw->q, c->fused_qkv ? wname(inf, l, WN_QKV, "attn_qkv")
                                          : wname(inf, l, WN_Q, "attn_q"), inf->q, qd);
        mm_add(&QKV, &lw->k, wname(inf, l, WN_K, "attn_k"), inf->k, kvd);
        mm_add(&QKV, &lw->v, wname(inf, l, WN_V, "attn_v"), inf->v, kvd);
        if ((rc = mm_run(&QKV, err)))
            return rc;
        tok_job RJ = {.inf = inf, .l = l};
        run_job(inf, 8.0 * T * (qd + kvd), T, rope_kv_item, &RJ);
        attention(inf, l);
        if ((rc = matmul(inf, &lw->o, wname(inf, l, WN_O, "attn_output"), inf->att, qd, T,
                         t_gemm, inf->xb2, E, lw->post_attn_norm ? NULL : inf->x, E, err)))
            return rc;
        if (lw->post_attn_norm)
            post_norm_add(inf, lw->post_attn_norm, T);

        /* feed-forward */
        rmsnorm_rows(inf, inf->xb, inf->x, lw->ffn_norm, T);
        if (c->n_expert > 0) {
            if ((rc = moe_ffn(inf, l, T, err)))
                return rc;
            if (!lw->post_ffn_norm)
                for (size_t i = 0; i < (size_t)T * E; i++)
                    inf->x[i] += inf->xb2[i];
        } else {
            const char *ng = c->fused_gate_up ? wname(inf, l, WN_UP, "ffn_up")
                                              : wname(inf, l, WN_GATE, "ffn_gate");
            if ((rc = gated_ffn(inf, &lw->gate, &lw->up, &lw->down, ng,
                                wname(inf, l, WN_UP, "ffn_up"),
                                wname(inf, l, WN_DOWN, "ffn_down"), inf->xb, T, t_gemm, inf->xb2,
                                lw->post_ffn_norm ? NULL : inf->x, -1, err)))
                return rc;
        }
        if (lw->post_ffn_norm)
            post_norm_add(inf, lw->post_ffn_norm, T);
    }
    for (int sg = 0; sg < inf->fb.n_seg; sg++)
        inf->seq_past[inf->fb.seg_seq[sg]] += inf->fb.seg_n[sg];

    if ((logits || defer) && logits_from < T) {
        /* the final-normed rows stay in xb; qe_infer_logits applies the
         * output matrix, now or (defer) when the caller asks */
        const int n_out = T - logits_from;
        rmsnorm_rows(inf, inf->xb + (size_t)logits_from * E, inf->x + (size_t)logits_from * E,
                     inf->output_norm, n_out);
        inf->defer_from = logits_from;
        inf->defer_n = n_out;
        if (!defer) { /* qe_infer_eval: the rows are used up here */
            rc = qe_infer_logits(inf, 0, n_out, logits, err);
            inf->defer_n = 0;
            return rc;
        }
    }
    return 0;
}

/* The checks qe_infer_eval and qe_infer_eval_defer share. */
static int check_eval(const qe_infer *inf, const int32_t *tokens, int n, const char *fn,
                      qe_err *err)
{
    if (n < 0 || (n > 0 && !tokens))
        return qe_err_set(err, QE_EINVAL, "%s: bad token array (n=%d)", fn, n);
    if (n > inf->n_ctx - inf->seq_past[0])
        return qe_err_set(err, QE_EBOUNDS, "%s: %d tokens after %d cached positions exceed the "
                          "context of %d", fn, n, inf->seq_past[0], inf->n_ctx);
    return 0;
}

int qe_infer_eval_defer(qe_infer *inf, const int32_t *tokens, int n, int logits_from,
                        qe_err *err)
{
    int rc = check_eval(inf, tokens, n, "qe_infer_eval_defer", err);
    if (rc)
        return rc;
    if (n < 1 || n > inf->n_batch)
        return qe_err_set(err, QE_EINVAL, "qe_infer_eval_defer: %d tokens (1 .. n_batch %d)", n,
                          inf->n_batch);
    batch_one(inf, 0, n);
    return forward(inf, tokens, n, logits_from < 0 ? 0 : logits_from, NULL, true, err);
}

const float *qe_infer_deferred(const qe_infer *inf, int *n_rows)
{
    *n_rows = inf->defer_n;
    return inf->defer_n ? inf->xb + (size_t)inf->defer_from * inf->cfg.n_embd : NULL;
}

int qe_infer_set_deferred(qe_infer *inf, const float *rows, int n_rows, qe_err *err)
{
    if (!rows || n_rows < 1 || n_rows > inf->n_batch)
        return qe_err_set(err, QE_EINVAL, "qe_infer_set_deferred: %d rows (1 .. n_batch %d)",
                          n_rows, inf->n_batch);
    memcpy(inf->xb, rows, (size_t)n_rows * inf->cfg.n_embd * sizeof(float));
    inf->defer_from = 0;
    inf->defer_n = n_rows;
    return 0;
}

int qe_infer_logits(qe_infer *inf, int r0, int n_rows, float *logits, qe_err *err)
{
    return qe_infer_logits_cols(inf, r0, n_rows, 0, inf->cfg.n_vocab, logits, err);
}

int qe_infer_logits_cols(qe_infer *inf, int r0, int n_rows, int v0, int n_cols, float *logits,
                         qe_err *err)
{
    const int E = inf->cfg.n_embd, V = inf->cfg.n_vocab;
    if (!logits || r0 < 0 || n_rows < 1 || r0 + n_rows > inf->defer_n)
        return qe_err_set(err, QE_EINVAL, "qe_infer_logits: rows %d..%d of %d deferred", r0,
                          r0 + n_rows - 1, inf->defer_n);
    if (v0 < 0 || n_cols < 1 || n_cols > V - v0)
        return qe_err_set(err, QE_EINVAL, "qe_infer_logits: vocab columns %d..%d of %d", v0,
                          v0 + n_cols - 1, V);
    /* columns v0.. are the output matrix's rows v0..: a row view of it
     * (every logit is its own FMA chain, so the bits are those of the
     * whole product) */
    qe_wt w = inf->output;
    w.data += (size_t)v0 * w.row_nbytes;
    w.n_out = n_cols;
    if (w.bias)
        w.bias += v0;
    const float *xo = inf->xb + (size_t)(inf->defer_from + r0) * E;
    int rc = matmul(inf, &w, "output.weight", xo, E, n_rows, gemm_rows(n_rows), logits, n_cols,
                    NULL, 0, err);
    const float cap = inf->cfg.final_softcap;
    if (rc == 0 && cap > 0.0f) { /* gemma2: cap*tanh(l/cap), as ggml scale/tanh/scale */
        const float inv = 1.0f / cap;
        for (size_t i = 0; i < (size_t)n_rows * n_cols; i++)
            logits[i] = tanhf(logits[i] * inv) * cap;
    }
    return rc;
}

int qe_infer_eval(qe_infer *inf, const int32_t *tokens, int n, int logits_from, float *logits,
                  qe_err *err)
{
    int rc = check_eval(inf, tokens, n, "qe_infer_eval", err);
    if (rc)
        return rc;
    if (logits_from < 0)
        logits_from = 0;
    for (int s = 0; s < n; s += inf->n_batch) {
        const int T = n - s < inf->n_batch ? n - s : inf->n_batch;
        int from = logits_from - s;
        if (from < 0)
            from = 0;
        float *out = NULL;
        if (logits && from < T)
            out = logits + (size_t)(s + from - logits_from) * inf->cfg.n_vocab;
        batch_one(inf, 0, T);
        rc = forward(inf, tokens + s, T, from, out, false, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------- multi-sequence API -- */

int qe_infer_n_seq(const qe_infer *inf)
{
    return inf->n_seq;
}

int qe_infer_seq_n_past(const qe_infer *inf, int seq)
{
    return seq >= 0 && seq < inf->n_seq ? inf->seq_past[seq] : -1;
}

void qe_infer_seq_rewind(qe_infer *inf, int seq, int n_past)
{
    if (seq < 0 || seq >= inf->n_seq)
        return;
    if (n_past < 0)
        n_past = 0;
    if (n_past < inf->seq_past[seq])
        inf->seq_past[seq] = n_past;
}

int qe_infer_seq_copy(qe_infer *inf, int dst, int src, int n, qe_err *err)
{
    if (dst < 0 || dst >= inf->n_seq || src < 0 || src >= inf->n_seq)
        return qe_err_set(err, QE_EINVAL, "qe_infer_seq_copy: sequence %d -> %d: expected "
                          "slots in [0, %d)", src, dst, inf->n_seq);
    if (n < 0 || n > inf->seq_past[src])
        return qe_err_set(err, QE_EINVAL, "qe_infer_seq_copy: prefix of %d positions, sequence "
                          "%d has %d", n, src, inf->seq_past[src]);
    if (dst != src && n > 0) {
        const size_t cap = (size_t)inf->kv_cap, kvd = (size_t)inf->kv_dim;
        const size_t so = (size_t)src * inf->n_ctx, dof = (size_t)dst * inf->n_ctx;
        for (int l = 0; l < inf->cfg.n_layer; l++) {
            float *kt = inf->k_cache + (size_t)l * kvd * cap;
            for (size_t d = 0; d < kvd; d++)
                memcpy(kt + d * cap + dof, kt + d * cap + so, (size_t)n * sizeof(float));
            float *v = inf->v_cache + (size_t)l * cap * kvd;
            memcpy(v + dof * kvd, v + so * kvd, (size_t)n * kvd * sizeof(float));
        }
    }
    inf->seq_past[dst] = n;
    return 0;
}

/* gemma2's final soft-cap on n values. */
static void final_softcap(const qe_infer *inf, float *logits, size_t n)
{
    const float cap = inf->cfg.final_softcap;
    if (cap > 0.0f) {
        const float inv = 1.0f / cap;
        for (size_t i = 0; i < n; i++)
            logits[i] = tanhf(logits[i] * inv) * cap;
    }
}

int qe_infer_batch(qe_infer *inf, const qe_seq_run *runs, int n_runs, float *logits, qe_err *err)
{
    const int V = inf->cfg.n_vocab, E = inf->cfg.n_embd;
    if (n_runs < 1 || n_runs > inf->n_seq || !runs)
        return qe_err_set(err, QE_EINVAL, "qe_infer_batch: %d runs: expected 1 .. %d (one per "
                          "sequence slot)", n_runs, inf->n_seq);
    int T = 0, n_out = 0;
    for (int i = 0; i < n_runs; i++) {
        const qe_seq_run *r = &runs[i];
        if (r->seq < 0 || r->seq >= inf->n_seq)
            return qe_err_set(err, QE_EINVAL, "qe_infer_batch: run %d: sequence %d: expected a "
                              "slot in [0, %d)", i, r->seq, inf->n_seq);
        for (int j = 0; j < i; j++)
            if (runs[j].seq == r->seq)
                return qe_err_set(err, QE_EINVAL, "qe_infer_batch: runs %d and %d both extend "
                                  "sequence %d", j, i, r->seq);
        if (r->n < 1 || !r->tokens)
            return qe_err_set(err, QE_EINVAL, "qe_infer_batch: run %d: %d tokens", i, r->n);
        if (r->n > inf->n_ctx - inf->seq_past[r->seq])
            return qe_err_set(err, QE_EBOUNDS, "qe_infer_batch: sequence %d: %d tokens after %d "
                              "cached positions exceed the context of %d", r->seq, r->n,
                              inf->seq_past[r->seq], inf->n_ctx);
        T += r->n;
        const int from = r->logits_from < 0 ? 0 : r->logits_from;
        if (from < r->n)
            n_out += r->n - from;
    }
    if (T > inf->n_batch)
        return qe_err_set(err, QE_EINVAL, "qe_infer_batch: %d tokens exceed n_batch %d", T,
                          inf->n_batch);
    if (n_out > 0 && !logits)
        return qe_err_set(err, QE_EINVAL, "qe_infer_batch: logits asked for but no buffer");
    /* segments: the prefill-kernel runs first, then the decode-kernel ones */
    fwd_batch *fb = &inf->fb;
    int t = 0, sg = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n_runs; i++) {
            const qe_seq_run *r = &runs[i];
            if ((gemm_rows(r->n) > 0 || r->prefill_kernels) != (pass == 0))
                continue;
            fb->seg_t0[sg] = t;
            fb->seg_n[sg] = r->n;
            fb->seg_seq[sg] = r->seq;
            fb->seg_pos0[sg] = inf->seq_past[r->seq];
            fb->seg_item0[sg + 1] = fb->seg_item0[sg] +
                                    inf->cfg.n_head * ((r->n + ATT_BLOCK - 1) / ATT_BLOCK);
            for (int j = 0; j < r->n; j++, t++) {
                inf->b_tok[t] = r->tokens[j];
                fb->pos[t] = fb->seg_pos0[sg] + j;
                fb->seq[t] = r->seq;
            }
            sg++;
        }
        if (pass == 0)
            fb->t_gemm = t;
    }
    fb->T = T;
    fb->n_seg = sg;
    int rc = forward(inf, inf->b_tok, T, T, NULL, false, err);
    if (rc || n_out == 0)
        return rc;

    /* logits: final norm of the asked rows; a run with more than
     * QE_DECODE_MAX_T rows is one output product of its own (as
     * qe_infer_eval), the rows of the others go through one product
     * together: those of prefill_kernels runs first (prefill kernels),
     * then the rest (decode kernels) */
    int n_dec = 0, n_forced = 0;
    for (int i = 0; i < n_runs; i++) {
        const int from = runs[i].logits_from < 0 ? 0 : runs[i].logits_from;
        if (from < runs[i].n && gemm_rows(runs[i].n - from) == 0) {
            n_dec += runs[i].n - from;
            if (runs[i].prefill_kernels)
                n_forced += runs[i].n - from;
        }
    }
    if (n_dec > inf->b_rows_cap) {
        float *p = realloc(inf->b_rows, (size_t)n_dec * V * sizeof(float));
        if (!p)
            return qe_err_set(err, QE_ENOMEM, "out of memory (%d logit rows)", n_dec);
        inf->b_rows = p;
        inf->b_rows_cap = n_dec;
    }
    int forced = 0, dec_plain = n_forced; /* gather positions */
    float *out = logits;
    for (int i = 0; i < n_runs; i++) {
        const qe_seq_run *r = &runs[i];
        const int from = r->logits_from < 0 ? 0 : r->logits_from;
        if (from >= r->n)
            continue;
        int s0 = 0;
        while (fb->seg_seq[s0] != r->seq)
            s0++;
        const int rows = r->n - from;
        const float *xr = inf->x + (size_t)(fb->seg_t0[s0] + from) * E;
        if (gemm_rows(rows) > 0) {
            rmsnorm_rows(inf, inf->xb, xr, inf->output_norm, rows);
            if ((rc = matmul(inf, &inf->output, "output.weight", inf->xb, E, rows, rows, out, V,
                             NULL, 0, err)))
                return rc;
            final_softcap(inf, out, (size_t)rows * V);
        } else {
            int *at = r->prefill_kernels ? &forced : &dec_plain;
            rmsnorm_rows(inf, inf->xb2 + (size_t)*at * E, xr, inf->output_norm, rows);
            *at += rows;
        }
        out += (size_t)rows * V;
    }
    if (n_dec > 0) {
        if ((rc = matmul(inf, &inf->output, "output.weight", inf->xb2, E, n_dec, n_forced,
                         inf->b_rows, V, NULL, 0, err)))
            return rc;
        final_softcap(inf, inf->b_rows, (size_t)n_dec * V);
        forced = 0;
        dec_plain = n_forced;
        out = logits;
        for (int i = 0; i < n_runs; i++) {
            const int from = runs[i].logits_from < 0 ? 0 : runs[i].logits_from;
            if (from >= runs[i].n)
                continue;
            const int rows = runs[i].n - from;
            if (gemm_rows(rows) == 0) {
                int *at = runs[i].prefill_kernels ? &forced : &dec_plain;
                memcpy(out, inf->b_rows + (size_t)*at * V, (size_t)rows * V * sizeof(float));
                *at += rows;
            }
            out += (size_t)rows * V;
        }
    }
    return 0;
}
