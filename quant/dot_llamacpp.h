/*
 * dot_llamacpp.h: llama.cpp CPU-backend matmul numerics ("llamacpp" mode).
 *
 * Holds: the activation quantizers and the quantized dot products of
 * ggml's CPU backend (llama.cpp b4747, x86 AVX2/AVX-512 build, AMX off,
 * LLAMAFILE on), and a matmul built on them.  qeval's reference core
 * multiplies in f32; llama.cpp first rounds every activation row to the
 * weight type's "vec_dot_type" (q8_0, q8_1, q8_K, f16, bf16) and then
 * forms integer dot products scaled per block.  That rounding adds error
 * of the size of Q8_0 weight error, so matching llama.cpp's KLD needs it.
 *
 *   weight type                    activations  dot
 *   q4_0 q5_0 q8_0 iq4_nl          q8_0         int per block, *d_w*d_a
 *   q4_1 q5_1                      q8_1         + m_w * s_a per block
 *   q2_K q3_K q4_K q5_K q6_K iq4_xs q8_K        int per sub-block * scale
 *   iq1_s iq1_m iq2_* iq3_* tq1_0 tq2_0 q8_K    int per sub-block * scale
 *   f16                            f16          f32 FMA accumulation
 *   bf16                           bf16         f32 FMA accumulation
 *   f32                            f32          f32 FMA accumulation
 *
 * The float accumulation follows ggml's x86 kernels: 8 lanes of partial
 * sums (lane k takes elements 4k..4k+3 of every 32), one FMA per block,
 * reduced at the end as ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).  Known
 * deviations are listed at the top of dot_llamacpp.c.
 *
 * Must not hold: file I/O, type decisions outside its own table.
 */
#ifndef QE_DOT_LLAMACPP_H
#define QE_DOT_LLAMACPP_H

#include <stddef.h>
#include <stdint.h>

#include "../harness/util/common.h"

/* ggml's activation type for weights of type `wtype` (QE_TYPE_Q8_0, ...),
 * or -1 if llamacpp mode has no path for `wtype`. */
int qe_llamacpp_vec_dot_type(int wtype);

/*
 * Activation quantizers, one row of n floats (n a multiple of the block:
 * 32 for q8_0/q8_1, 256 for q8_K) into caller-owned blocks
 * (qe_type_row_nbytes(type, n) bytes).  They never fail; x must be finite.
 *
 * q8_0, q8_1: ggml's AVX2 quantize_row_q8_0/_q8_1: amax over the block,
 *   d = amax/127 stored as fp16, q = round-half-even(x * (127/amax)).
 *   (The scalar _ref uses 1/d and rounds half away from zero.)  q8_1 also
 *   stores s = fp16(d * sum(q)).
 * q8_K: ggml's quantize_row_q8_K (on x86 the _ref): max = the element of
 *   largest |x| WITH its sign, iscale = -127/max, q = min(127,
 *   nearest_int(iscale*x)), d = 1/iscale (so d < 0 when that element is
 *   positive), bsums = sums of q per 16.
 */
void qe_llamacpp_quantize_q8_0(const float *restrict x, void *restrict y, int64_t n);
void qe_llamacpp_quantize_q8_1(const float *restrict x, void *restrict y, int64_t n);
void qe_llamacpp_quantize_q8_K(const float *restrict x, void *restrict y, int64_t n);

/*
 * One dot product: *s = vec_dot(w row of n elements of wtype, a), where a
 * is a row already in qe_llamacpp_vec_dot_type(wtype) format (produced by
 * the quantizers above, or fp16/bf16/f32 for the float types).  `n_out`
 * is the matmul's output count: Q4_0 dots differ when n_out % 8 == 0
 * (ggml repacks such Q4_0 weights to q4_0_8x8, whose gemv sums each
 * block's integers into one lane).  Errors: QE_ETYPE unknown type,
 * QE_EUNSUPPORTED no path, QE_ESHAPE n not a multiple of the blocks.
 */
int qe_llamacpp_vec_dot(int wtype, int64_t n, float *s, const void *w, const void *a, int n_out,
                        qe_err *err);

/*
 * y (n_tokens, n_out) = x (n_tokens, n_in) times W^T, W (n_out, n_in):
 *   y[t*n_out + o] = vec_dot(W row o, quantize(x row t)).
 * w: n_out rows of wtype, row o at w + o*w_row_nbytes (w_row_nbytes >= the
 * row's size: a stride, so views into a larger tensor work).  Borrowed.
 * x, y: caller-owned f32 buffers; y is fully written.  OpenMP over output
 * rows; every output is computed by one thread in a fixed order, so the
 * result does not depend on the thread count.  Allocates scratch for the
 * quantized activations (n_tokens rows of the vec_dot type).
 * Errors: QE_ETYPE unknown wtype; QE_EUNSUPPORTED (no llamacpp path for
 * the type, named in the message); QE_ESHAPE (n_in not a multiple of the
 * weight's or vec_dot type's block, e.g. 256 for q8_K; w_row_nbytes too
 * small; negative counts); QE_ENAN (x holds NaN/Inf: message names the
 * token row); QE_ENOMEM.
 */
int qe_matmul_llamacpp(int wtype, const void *w, size_t w_row_nbytes, int n_out, int n_in,
                       const float *x, int n_tokens, float *y, qe_err *err);

/* Bytes of activation scratch qe_matmul_llamacpp_ws needs (0 if the type
 * or shape is unsupported). */
size_t qe_matmul_llamacpp_ws_nbytes(int wtype, int n_in, int n_tokens);
/* As qe_matmul_llamacpp, with caller-owned scratch `ws` of at least
 * qe_matmul_llamacpp_ws_nbytes() bytes (for callers that reuse it). */
int qe_matmul_llamacpp_ws(int wtype, const void *w, size_t w_row_nbytes, int n_out, int n_in,
                          const float *x, int n_tokens, float *y, void *ws, size_t ws_nbytes,
                          qe_err *err);

#endif /* QE_DOT_LLAMACPP_H */
