/*
 * llama2c.h: loader for Karpathy's llama2.c checkpoints (legacy version 0,
 * fp32), e.g. stories260K.bin.
 *
 * File layout (little-endian, no padding):
 *   7 x int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *                     vocab_size (negative = separate classifier), seq_len
 *   fp32 weights, each row-major (out, in) like GGUF's ne = {in, out}:
 *     token_embedding (vocab, dim)          -> token_embd.weight
 *     rms_att         (layer, dim)          -> blk.N.attn_norm.weight
 *     wq              (layer, dim, dim)     -> blk.N.attn_q.weight
 *     wk              (layer, kv_dim, dim)  -> blk.N.attn_k.weight
 *     wv              (layer, kv_dim, dim)  -> blk.N.attn_v.weight
 *     wo              (layer, dim, dim)     -> blk.N.attn_output.weight
 *     rms_ffn         (layer, dim)          -> blk.N.ffn_norm.weight
 *     w1              (layer, hidden, dim)  -> blk.N.ffn_gate.weight
 *     w2              (layer, dim, hidden)  -> blk.N.ffn_down.weight
 *     w3              (layer, hidden, dim)  -> blk.N.ffn_up.weight
 *     rms_final       (dim)                 -> output_norm.weight
 *     freq_cis_real, freq_cis_imag (seq_len * head_size/2 each; skipped)
 *     wcls            (vocab, dim)          -> output.weight, only if vocab_size < 0
 *   kv_dim = dim * n_kv_heads / n_heads, head_size = dim / n_heads.
 * The file size must equal exactly what the header implies.  Q/K rows are
 * already in "normal" (adjacent-pair) RoPE order: no permutation.
 * Versions 1/2 (magic "ak42") are refused with QE_EUNSUPPORTED.
 *
 * Tokenizer: opts->tokenizer_path, else tok<vocab>.bin, else tokenizer.bin
 * in the model's directory (qe_tokenizer_from_llama2c).
 * Config: arch "llama", rms eps 1e-5, rope base 10000, NORM rope,
 * n_rot = head_dim, n_ctx_train = seq_len, file_type 0 (all F32).
 */
#ifndef QE_LLAMA2C_H
#define QE_LLAMA2C_H

#include "model.h"

/* Fill `m` (fresh from the model allocator) from a llama2.c checkpoint.
 * Tensors are views into a mapping attached to m. */
int qe_llama2c_load(qe_model *m, const char *path, const qe_load_opts *opts, qe_err *err);

#endif /* QE_LLAMA2C_H */
