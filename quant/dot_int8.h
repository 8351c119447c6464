/*
 * dot_int8.h: the "int8" numerics of weight products: activations rounded
 * to 8-bit integers per 32 elements, integer dot products per weight
 * sub-block, then one f32 FMA per sub-block.  The fast path for batched
 * generation (AVX512-VNNI: 64 multiply-adds per instruction, against 16
 * for f32 FMA), deterministic and independent of the batch by
 * construction: every output is computed alone, in one fixed order, in
 * its own vector lane.
 *
 * The arithmetic, per output (weight row r, token t):
 *   activations: per block b of 32, a = max |x|, dx = a / 127,
 *     qx = round-half-even(x * (127 / a)) (0 and dx = 0 when a == 0);
 *   weights: each sub-block j of G (16 or 32) elements exactly as the type
 *     stores it, w = s_j * v + m_j, v a small integer (s_j, m_j: the
 *     type's scale and min products, e.g. q4_K s = d * sc, m = -dmin * mn);
 *   acc = 0; for every sub-block j in ascending order:
 *     i   = sum of v * qx over j                     (exact integer)
 *     acc = fma(s_j * dx, (float) i, acc)
 *     acc = fma(m_j, dx * (float) sum(qx over j), acc)   (types with mins)
 * The VNNI kernel and the scalar one compute exactly this and agree
 * bitwise (tests/test_quant.c int8_bits); weights are stored offset to
 * unsigned bytes (v + off) and the offset taken back out of i exactly.
 *
 * Types: q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl q2_K q3_K q4_K q5_K q6_K.  Others
 * (float, IQ1-IQ3, TQ) have no int8 path: the core multiplies them in f32.
 *
 * Must not hold: file I/O, threading (callers split rows and tokens).
 */
#ifndef QE_DOT_INT8_H
#define QE_DOT_INT8_H

#include <stddef.h>
#include <stdint.h>

/* Tokens per activation group: the vector lanes of the kernel. */
#define QE_I8_LANES 16

/* Sub-block size G (16 or 32) of `type`'s int8 path, or 0 if it has none. */
int qe_i8_group(int type);

/* Bytes of an unpacked tile of `rows` rows of n elements (n % 256 == 0 for
 * k-quants, % 32 for the others). */
size_t qe_i8_tile_nbytes(int type, int rows, int n);

/* Unpack `rows` packed rows (row r at w + r*row_nbytes) into tile
 * (qe_i8_tile_nbytes bytes).  `type` must have a path.  simd: AVX-512
 * unpackers where there are (the caller checks qe_i8_have_vnni); the
 * tile is the same. */
void qe_i8_unpack(int type, const void *w, size_t row_nbytes, int rows, int n, void *tile,
                  int simd);

/* Bytes of T tokens of n elements (n % 32 == 0) quantized for the kernel. */
size_t qe_i8_act_nbytes(int T, int n);

/* Quantize tokens t0 .. t1-1 of x (row t at x + t*ldx) into act (laid out
 * for T tokens; 64-byte aligned, zeroed lanes beyond T are the caller's:
 * qe_i8_act_clear).  Tokens are independent: split them over threads.
 * simd: AVX-512 (the caller checks qe_i8_have_vnni); the same bytes. */
void qe_i8_quantize(const float *x, int ldx, int T, int n, int t0, int t1, void *act, int simd);
/* Zero the unused lanes of the last group (T % 16 != 0). */
void qe_i8_act_clear(int T, int n, void *act);

/*
 * y[t*ldy + r] = row r of the tile times token t (the arithmetic above),
 * for r < rows, t < T.  vnni: use the AVX512-VNNI kernel (the caller checks
 * qe_i8_have_vnni), else the scalar one; the bits are the same.
 */
void qe_i8_gemm(int type, const void *tile, int rows, int n, const void *act, int T, float *y,
                int ldy, int vnni);

/* Does this CPU run the VNNI kernel (avx512f, bw, vl, vnni)? */
int qe_i8_have_vnni(void);

#endif
