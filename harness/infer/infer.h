/*
 * infer.h: the reference inference core: the architectures of
 * harness/model/arch.h (llama incl. Mixtral-style experts, qwen2, qwen2moe,
 * qwen3, qwen3moe, gemma2, gemma3, phi3).
 *
 * A qe_infer is a runnable model: borrowed weights (qe_model), a KV cache
 * of n_ctx positions, and scratch buffers.  Prefill goes through batched
 * matrix-matrix products (each weight tile dequantized once per batch);
 * attention and softmax are f32; reductions have a fixed order so logits
 * are bit-identical for any thread count.
 *
 * Must not hold: file formats, tokenization rules, evaluation protocols
 * (those are in ppl.h and harness/eval).
 */
#ifndef QE_INFER_H
#define QE_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/common.h"

struct qe_model;

typedef struct qe_infer qe_infer;

/* Optional observer of matrix products, for imatrix collection: called
 * once per weight matmul with the f32 input activations x, n_tokens rows of
 * n_in values (n_in = the weight's ne[0]).  weight_name is the canonical
 * tensor name ("blk.3.ffn_down.weight", "output.weight"). */
typedef void (*qe_matmul_hook)(void *ud, const char *weight_name, const float *x, int n_tokens,
                               int n_in);

/* Arithmetic of the forward pass (qe_infer_opts.numerics):
 *  EXACT    f32 activations, f32 KV cache; every prefill product one
 *           sequential FMA chain (the default; bit-identical across ISAs
 *           and thread counts).
 *  LLAMACPP llama.cpp b4747's CPU backend: weight matmuls through
 *           qe_matmul_llamacpp (activations quantized to the weight type's
 *           vec_dot type: q8_0, q8_1, q8_K or f16; integer block dots), q
 *           and the KV cache rounded to f16, softmax probabilities rounded
 *           to f16 before P.V.  Deterministic for any thread count.
 *  INT8     weight matmuls of the types quant/dot_int8.h covers (q4_0 ..
 *           q8_0, iq4_nl, q2_K .. q6_K) with activations rounded to 8-bit
 *           integers per 32 and integer sub-block dots (AVX512-VNNI, or a
 *           scalar kernel with the same bits); everything else as EXACT.
 *           Every output is computed alone in one fixed order, so a token's
 *           logits do not depend on the batch, the kernel or the thread
 *           count: the fast path for batched generation. */
enum { QE_NUMERICS_EXACT = 0, QE_NUMERICS_LLAMACPP = 1, QE_NUMERICS_INT8 = 2 };

/* "exact", "llamacpp" or "int8"; "?" for other values. */
const char *qe_numerics_name(int numerics);

/* Optional observer of the expert matmuls (llama-imatrix's MUL_MAT_ID
 * path): called once per expert and weight with the n_rows token rows
 * routed to `expert` (of n_expert) in this batch; weight_name is the 3-D
 * tensor ("blk.3.ffn_down_exps.weight"). */
typedef void (*qe_matmul_id_hook)(void *ud, const char *weight_name, int expert, int n_expert,
                                  const float *x, int n_rows, int n_in);

typedef struct qe_infer_opts {
    int n_ctx;      /* KV capacity in positions (default 512 if 0) */
    int n_threads;  /* 0 = OpenMP default */
    int n_batch;    /* max tokens per forward call chunk (default n_ctx) */
    qe_matmul_hook hook; /* optional */
    void *hook_ud;
    int numerics;   /* QE_NUMERICS_EXACT (0, default), _LLAMACPP or _INT8 */
    qe_matmul_id_hook hook_id; /* optional; same hook_ud */
    int n_seq;      /* sequence slots (qe_infer_batch), n_ctx positions each (default 1) */
} qe_infer_opts;

/* Errors: unknown architecture (message lists supported ones), missing or
 * mis-shaped tensors, types without a dequantizer. */
qe_infer *qe_infer_new(const struct qe_model *m, const qe_infer_opts *opts, qe_err *err);
void qe_infer_free(qe_infer *inf);

/* Architectures the core runs, e.g. "llama, qwen2, ...". */
const char *qe_infer_supported_archs(void);

/* Number of positions currently in the KV cache. */
int qe_infer_n_past(const qe_infer *inf);
/* Drop cached positions >= n_past (0 clears). */
void qe_infer_rewind(qe_infer *inf, int n_past);
int qe_infer_n_vocab(const qe_infer *inf);
int qe_infer_n_embd(const qe_infer *inf);

/*
 * Run n tokens at positions n_past .. n_past+n-1, appending them to the
 * KV cache.  If logits != NULL, writes logits (f32, n_vocab each) for the
 * positions i >= logits_from (0-based within this call), row-major:
 * logits[(i - logits_from) * n_vocab + v].
 */
int qe_infer_eval(qe_infer *inf, const int32_t *tokens, int n, int logits_from, float *logits,
                  qe_err *err);

/*
 * Logits on demand, in blocks (so a 152k vocab does not need n x n_vocab
 * floats at once): qe_infer_eval_defer runs n tokens (one batch: n <=
 * n_batch) like qe_infer_eval, but only keeps the final-normed hidden
 * states of positions >= logits_from.  qe_infer_logits then writes the
 * logits of deferred rows r0 .. r0+n_rows-1 (row 0 = position
 * logits_from) into logits (n_rows x n_vocab).  Rows from blocks of more
 * than QE_DECODE_MAX_T rows, or from one block of all deferred rows, are
 * bit-identical to what qe_infer_eval writes.  Any later eval invalidates
 * the deferred rows.
 */
int qe_infer_eval_defer(qe_infer *inf, const int32_t *tokens, int n, int logits_from,
                        qe_err *err);
int qe_infer_logits(qe_infer *inf, int r0, int n_rows, float *logits, qe_err *err);
/* The deferred rows themselves (final-normed hidden states, n_embd floats
 * each; *n_rows of them, NULL when none), and installing such rows, e.g.
 * kept from an earlier qe_infer of the same model: qe_infer_logits then
 * gives the logits the forward pass that made them would have (bitwise),
 * without running it.  Any later eval invalidates them. */
const float *qe_infer_deferred(const qe_infer *inf, int *n_rows);
int qe_infer_set_deferred(qe_infer *inf, const float *rows, int n_rows, qe_err *err);
/* The same for the vocabulary columns v0 .. v0+n_cols-1 only (logits:
 * n_rows x n_cols); the values are bit-identical to those columns of
 * qe_infer_logits over the same rows.  A caller that reduces every row
 * (teacher.c) sweeps the vocabulary in slices over all rows at once, so
 * each output tile is dequantized once for all of them. */
int qe_infer_logits_cols(qe_infer *inf, int r0, int n_rows, int v0, int n_cols, float *logits,
                         qe_err *err);

/* Greedy decode: feed prompt, then generate up to n_max tokens, stopping
 * at end-of-generation tokens.  *out malloc'd (caller frees). */
int qe_infer_generate_greedy(qe_infer *inf, const int32_t *prompt, int n_prompt, int n_max,
                             int32_t **out, int *n_out, qe_err *err);
/* Greedy pick: the index of the largest of v[0..n-1], the first one on
 * ties (as llama.cpp's greedy sampler). */
int32_t qe_infer_argmax(const float *v, int n);
/* As qe_infer_generate_greedy; ignore_eog: keep going past end-of-generation
 * tokens (speed measurements); *prompt_s (if set): seconds of the prompt
 * prefill, so the caller can tell prefill from decode speed. */
int qe_infer_generate_greedy_timed(qe_infer *inf, const int32_t *prompt, int n_prompt, int n_max,
                                   bool ignore_eog, int32_t **out, int *n_out, double *prompt_s,
                                   qe_err *err);

/* ------------------------------------------------------------------ *
 * Added API (kept stable from here on).
 * ------------------------------------------------------------------ */

/* The model this core runs (borrowed). */
const struct qe_model *qe_infer_model(const qe_infer *inf);

/* Configured thread count (resolved: never 0) and KV capacity. */
int qe_infer_n_threads(const qe_infer *inf);
int qe_infer_n_ctx(const qe_infer *inf);
/* Change the thread count used by later calls (0 = OpenMP default).
 * Results do not depend on it (bit-identical logits). */
void qe_infer_set_threads(qe_infer *inf, int n_threads);

/* Bytes the core allocated itself (KV cache + activations + scratch),
 * not counting the model's weights. */
uint64_t qe_infer_alloc_nbytes(const qe_infer *inf);

/* ---- f32 kernels, exposed for tests and benchmarks (gemm.c) ---- */
enum { QE_ISA_REF = 0, QE_ISA_AVX2 = 1, QE_ISA_AVX512 = 2 };
/* ISA the core uses on this CPU (QEVAL_SIMD=ref|avx2 forces a lower one). */
int qe_infer_isa(void);
const char *qe_infer_isa_name(int isa);
bool qe_infer_isa_available(int isa);
/*
 * C[M][N] (+)= A[M][K] . B[K][N], row strides lda/ldb/ldc in floats.
 * Every element is one sequential fused multiply-add chain over
 * k = 0..K-1 (from 0, or from C if accumulate), so the bits do not depend
 * on isa, tiling or threads.  Single-threaded; never allocates.
 */
void qe_gemm_f32(int isa, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, bool accumulate);
/* Dot product for the decode path (T <= QE_DECODE_MAX_T tokens): lanes
 * split the k sum and a fixed tree reduces them, so the bits depend on isa
 * but never on threads.  Decode logits may therefore differ from prefill
 * logits in the last bits. */
#define QE_DECODE_MAX_T 2
/* dst[c][r] = src[r][c] (rows x cols, row strides lds/ldd in floats):
 * packs dequantized weight tiles k-major.  Same result on every isa. */
void qe_transpose_f32(int isa, int rows, int cols, const float *src, int lds, float *dst,
                      int ldd);
float qe_dot_f32(int isa, int n, const float *a, const float *b);

/* ------------------------------------------------------------------ *
 * Multi-sequence batches (the llama_batch idea).  The core holds n_seq
 * sequence slots (qe_infer_opts.n_seq), each with its own KV cache of n_ctx
 * positions; slot 0 is the one qe_infer_eval and friends use.  One
 * qe_infer_batch call runs runs of tokens from several sequences together
 * (one weight stream for all of them).
 *
 * Determinism: a sequence's logits are bit-identical whatever other
 * sequences share its calls, whatever slot it is in and for any thread
 * count; they depend only on how its own tokens were split into runs (a
 * run of <= QE_DECODE_MAX_T tokens takes the decode kernels, a longer one
 * the prefill kernels, exactly as qe_infer_eval calls of the same lengths,
 * which they therefore equal bit for bit).  Logit rows follow the same
 * rule per run (a run's asked rows > QE_DECODE_MAX_T: prefill kernels).
 * ------------------------------------------------------------------ */

typedef struct qe_seq_run {
    int seq;               /* slot, 0 .. n_seq-1; at most one run per slot per call */
    const int32_t *tokens; /* n tokens at the slot's next positions */
    int n;                 /* >= 1 */
    int logits_from;       /* rows i >= logits_from get logits (n: none) */
    bool prefill_kernels;  /* take the prefill kernels even for <= QE_DECODE_MAX_T tokens
                              (and logit rows): faster when many sequences decode together;
                              a sequence whose runs all set it is bit-identical however
                              its runs are batched */
} qe_seq_run;

int qe_infer_n_seq(const qe_infer *inf);
/* Cached positions of slot seq (-1 for a bad slot). */
int qe_infer_seq_n_past(const qe_infer *inf, int seq);
/* Drop slot seq's positions >= n_past (0 frees the slot). */
void qe_infer_seq_rewind(qe_infer *inf, int seq, int n_past);
/* Slot dst := the first n positions of slot src (a shared prompt prefix
 * computed once); bit-identical to computing them in dst. */
int qe_infer_seq_copy(qe_infer *inf, int dst, int src, int n, qe_err *err);
/*
 * Run n_runs runs (total tokens <= n_batch), appending each to its slot.
 * logits: the asked rows of every run, in run order, n_vocab floats each.
 * Errors (bad slot, a slot twice, context overflow, bad token) change
 * nothing.
 */
int qe_infer_batch(qe_infer *inf, const qe_seq_run *runs, int n_runs, float *logits,
                   qe_err *err);

#endif /* QE_INFER_H */
