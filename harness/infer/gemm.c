/*
 * gemm.c: the f32 matrix-product kernels of the inference core.
 *
 *   C[M][N] (+)= A[M][K] . B[K][N]      (row-major, strides lda/ldb/ldc in floats)
 *
 * B is "k-major": row k of B holds the N values that multiply A[.][k].  The
 * forward pass feeds it packed weight panels (W^T of a dequantized tile),
 * the transposed K cache (attention scores) and the V cache (P.V).
 *
 * Numerics contract: every output element is ONE sequential chain of fused
 * multiply-adds over k = 0..K-1, started from 0 (or from C when
 * accumulating).  No lane splitting of the k sum, no horizontal reductions.
 * So the result of an element does not depend on the ISA (AVX-512, AVX2 and
 * the scalar fmaf reference give identical bits), on the tiling, on the
 * edge handling or on the number of threads.  The kernels vectorise across
 * N (output columns) and block over M (rows of A share each loaded B row).
 *
 * Must not hold: quant formats, threading (callers parallelise over
 * output tiles), allocation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>

#include "infer.h"

/* ---------------------------------------------------------------- ref -- */

static void gemm_ref(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc, bool accumulate)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float c = accumulate ? C[(size_t)i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++)
                c = fmaf(A[(size_t)i * lda + k], B[(size_t)k * ldb + j], c);
            C[(size_t)i * ldc + j] = c;
        }
    }
}

/* ------------------------------------------------------------- avx512 -- */

/* Micro-kernel: mr (<= 12) rows of A x nc (<= 32) columns of B.  mr is a
 * compile-time constant at every call site (always_inline + switch), so the
 * accumulator arrays live in zmm registers. */
#define MR512 12
#define NR512 32

__attribute__((target("avx512f"), always_inline)) static inline void
k512(const int mr, int nc, int K, const float *restrict A, int lda, const float *restrict B,
     int ldb, float *restrict C, int ldc, bool accumulate)
{
    __m512 c0[MR512], c1[MR512];
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32   ? (__mmask16)0xFFFF
                         : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1)
                                   : (__mmask16)0;
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        if (accumulate) {
            c0[i] = _mm512_maskz_loadu_ps(m0, C + (size_t)i * ldc);
            c1[i] = _mm512_maskz_loadu_ps(m1, C + (size_t)i * ldc + 16);
        } else {
            c0[i] = _mm512_setzero_ps();
            c1[i] = _mm512_setzero_ps();
        }
    }
    if (m1) {
        for (int k = 0; k < K; k++) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + (size_t)k * ldb);
            const __m512 b1 = _mm512_maskz_loadu_ps(m1, B + (size_t)k * ldb + 16);
#pragma GCC unroll 12
            for (int i = 0; i < mr; i++) {
                const __m512 a = _mm512_set1_ps(A[(size_t)i * lda + k]);
                c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
            }
        }
    } else {
        for (int k = 0; k < K; k++) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + (size_t)k * ldb);
#pragma GCC unroll 12
            for (int i = 0; i < mr; i++) {
                const __m512 a = _mm512_set1_ps(A[(size_t)i * lda + k]);
                c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            }
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(C + (size_t)i * ldc, m0, c0[i]);
        if (m1)
            _mm512_mask_storeu_ps(C + (size_t)i * ldc + 16, m1, c1[i]);
    }
}

/* One or two rows of A (a sequence or two decoding with the prefill
 * kernels) against up to NW512 columns: 8 column vectors per row give 8 or
 * 16 independent FMA chains, where k512 would have 2 and wait on the FMA
 * latency.  Same chains, same bits. */
#define NW512 128
__attribute__((target("avx512f"), always_inline)) static inline void
k512_wide(const int mr, int nc, int K, const float *restrict A, int lda, const float *restrict B,
          int ldb, float *restrict C, int ldc, bool accumulate)
{
    __m512 c[2][8];
    __mmask16 m[8];
#pragma GCC unroll 8
    for (int v = 0; v < 8; v++) {
        const int left = nc - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
#pragma GCC unroll 2
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++)
            c[i][v] = accumulate ? _mm512_maskz_loadu_ps(m[v], C + (size_t)i * ldc + 16 * v)
                                 : _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 b[8];
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++)
            b[v] = _mm512_maskz_loadu_ps(m[v], B + (size_t)k * ldb + 16 * v);
#pragma GCC unroll 2
        for (int i = 0; i < mr; i++) {
            const __m512 a = _mm512_set1_ps(A[(size_t)i * lda + k]);
#pragma GCC unroll 8
            for (int v = 0; v < 8; v++)
                c[i][v] = _mm512_fmadd_ps(a, b[v], c[i][v]);
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++)
            _mm512_mask_storeu_ps(C + (size_t)i * ldc + 16 * v, m[v], c[i][v]);
}

#define K512_CASE(R)                                                                       \
    case R:                                                                                \
        k512(R, nc, K, A + (size_t)i * lda, lda, B + j, ldb, C + (size_t)i * ldc + j, ldc, \
             accumulate);                                                                  \
        break;

__attribute__((target("avx512f"))) static void gemm_avx512(int M, int N, int K, const float *A,
                                                           int lda, const float *B, int ldb,
                                                           float *C, int ldc, bool accumulate)
{
    if (M <= 2 && N > NR512) {
        for (int j = 0; j < N; j += NW512) {
            const int nc = N - j < NW512 ? N - j : NW512;
            if (M == 1)
                k512_wide(1, nc, K, A, lda, B + j, ldb, C + j, ldc, accumulate);
            else
                k512_wide(2, nc, K, A, lda, B + j, ldb, C + j, ldc, accumulate);
        }
        return;
    }
    for (int i = 0; i < M; i += MR512) {
        const int mr = M - i < MR512 ? M - i : MR512;
        for (int j = 0; j < N; j += NR512) {
            const int nc = N - j < NR512 ? N - j : NR512;
            switch (mr) {
                K512_CASE(1) K512_CASE(2) K512_CASE(3) K512_CASE(4) K512_CASE(5) K512_CASE(6)
                K512_CASE(7) K512_CASE(8) K512_CASE(9) K512_CASE(10) K512_CASE(11)
                K512_CASE(12)
            default:
                break;
            }
        }
    }
}

/* --------------------------------------------------------------- avx2 -- */

#define MR256 6
#define NR256 16

__attribute__((target("avx2,fma"), always_inline)) static inline __m256i mask256(int n)
{
    /* lanes < n set (n may be <= 0 or >= 8) */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
k256(const int mr, int nc, int K, const float *restrict A, int lda, const float *restrict B,
     int ldb, float *restrict C, int ldc, bool accumulate)
{
    __m256 c0[MR256], c1[MR256];
    const __m256i m0 = mask256(nc), m1 = mask256(nc - 8);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        if (accumulate) {
            c0[i] = _mm256_maskload_ps(C + (size_t)i * ldc, m0);
            c1[i] = _mm256_maskload_ps(C + (size_t)i * ldc + 8, m1);
        } else {
            c0[i] = _mm256_setzero_ps();
            c1[i] = _mm256_setzero_ps();
        }
    }
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_maskload_ps(B + (size_t)k * ldb, m0);
        const __m256 b1 = _mm256_maskload_ps(B + (size_t)k * ldb + 8, m1);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m256 a = _mm256_broadcast_ss(A + (size_t)i * lda + k);
            c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        _mm256_maskstore_ps(C + (size_t)i * ldc, m0, c0[i]);
        _mm256_maskstore_ps(C + (size_t)i * ldc + 8, m1, c1[i]);
    }
}

#define K256_CASE(R)                                                                       \
    case R:                                                                                \
        k256(R, nc, K, A + (size_t)i * lda, lda, B + j, ldb, C + (size_t)i * ldc + j, ldc, \
             accumulate);                                                                  \
        break;

__attribute__((target("avx2,fma"))) static void gemm_avx2(int M, int N, int K, const float *A,
                                                          int lda, const float *B, int ldb,
                                                          float *C, int ldc, bool accumulate)
{
    for (int i = 0; i < M; i += MR256) {
        const int mr = M - i < MR256 ? M - i : MR256;
        for (int j = 0; j < N; j += NR256) {
            const int nc = N - j < NR256 ? N - j : NR256;
            switch (mr) {
                K256_CASE(1) K256_CASE(2) K256_CASE(3) K256_CASE(4) K256_CASE(5) K256_CASE(6)
            default:
                break;
            }
        }
    }
}

/* ---------------------------------------------------------------- dot -- */

/* Decode-path dot products: the k sum is split over lanes (4 x 16 or
 * 4 x 8 accumulators, then a fixed tree), so the bits depend on the ISA
 * but never on threads. */
static float dot_ref(int n, const float *a, const float *b)
{
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= n; k += 16)
        for (int l = 0; l < 16; l++)
            acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            acc[l] += acc[l + w];
    float s = acc[0];
    for (; k < n; k++)
        s = fmaf(a[k], b[k], s);
    return s;
}

__attribute__((target("avx512f"))) static float dot_avx512(int n, const float *a, const float *b)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    int k = 0;
    for (; k + 64 <= n; k += 64) {
        c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), c0);
        c1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), c1);
        c2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 32), _mm512_loadu_ps(b + k + 32), c2);
        c3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 48), _mm512_loadu_ps(b + k + 48), c3);
    }
    for (; k + 16 <= n; k += 16)
        c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), c0);
    if (k < n) {
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        c1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), c1);
    }
    c0 = _mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3));
    return _mm512_reduce_add_ps(c0);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(int n, const float *a, const float *b)
{
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), c0);
        c1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), c1);
        c2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), c2);
        c3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), c3);
    }
    for (; k + 8 <= n; k += 8)
        c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), c0);
    c0 = _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(c0), _mm256_extractf128_ps(c0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float s = _mm_cvtss_f32(h);
    for (; k < n; k++)
        s = fmaf(a[k], b[k], s);
    return s;
}

float qe_dot_f32(int isa, int n, const float *a, const float *b)
{
    if (isa == QE_ISA_AVX512)
        return dot_avx512(n, a, b);
    if (isa == QE_ISA_AVX2)
        return dot_avx2(n, a, b);
    return dot_ref(n, a, b);
}

/* ----------------------------------------------------------- dispatch -- */

static int g_isa = -1;

int qe_infer_isa(void)
{
    if (g_isa >= 0)
        return g_isa;
    int isa = QE_ISA_REF;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        isa = QE_ISA_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        isa = QE_ISA_AVX2;
    const char *force = getenv("QEVAL_SIMD");
    if (force) {
        if (strcmp(force, "ref") == 0)
            isa = QE_ISA_REF;
        else if (strcmp(force, "avx2") == 0 && isa >= QE_ISA_AVX2)
            isa = QE_ISA_AVX2;
    }
    g_isa = isa;
    return isa;
}

const char *qe_infer_isa_name(int isa)
{
    switch (isa) {
    case QE_ISA_AVX512:
        return "avx512";
    case QE_ISA_AVX2:
        return "avx2";
    default:
        return "ref";
    }
}

bool qe_infer_isa_available(int isa)
{
    __builtin_cpu_init();
    if (isa == QE_ISA_AVX512)
        return __builtin_cpu_supports("avx512f");
    if (isa == QE_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return isa == QE_ISA_REF;
}

void qe_gemm_f32(int isa, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, bool accumulate)
{
    if (M <= 0 || N <= 0)
        return;
    if (isa == QE_ISA_AVX512)
        gemm_avx512(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    else if (isa == QE_ISA_AVX2)
        gemm_avx2(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    else
        gemm_ref(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/* ---------------------------------------------------------- transpose -- */

/*
 * dst[c][r] = src[r][c] for r < rows, c < cols (row strides lds, ldd in
 * floats).  Pure data movement, so every ISA gives the same result; the
 * AVX-512 path moves 16x16 blocks through registers (4 shuffle stages).
 */
static void transpose_ref(int rows, int cols, const float *src, int lds, float *dst, int ldd)
{
    for (int r0 = 0; r0 < rows; r0 += 8) {
        const int rn = rows - r0 < 8 ? rows - r0 : 8;
        for (int c = 0; c < cols; c++)
            for (int r = 0; r < rn; r++)
                dst[(size_t)c * ldd + r0 + r] = src[(size_t)(r0 + r) * lds + c];
    }
}

__attribute__((target("avx512f"))) static void transpose_avx512(int rows, int cols,
                                                                const float *src, int lds,
                                                                float *dst, int ldd)
{
    const int r16 = rows / 16 * 16, c16 = cols / 16 * 16;
    for (int r0 = 0; r0 < r16; r0 += 16) {
        for (int c0 = 0; c0 < c16; c0 += 16) {
            __m512 a[16], b[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                a[i] = _mm512_loadu_ps(src + (size_t)(r0 + i) * lds + c0);
            /* stage 1: interleave rows pairwise (32-bit) */
#pragma GCC unroll 8
            for (int i = 0; i < 16; i += 2) {
                b[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
                b[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
            }
            /* stage 2: 64-bit interleave of pairs of pairs */
#pragma GCC unroll 4
            for (int i = 0; i < 16; i += 4) {
                a[i] = _mm512_castpd_ps(
                    _mm512_unpacklo_pd(_mm512_castps_pd(b[i]), _mm512_castps_pd(b[i + 2])));
                a[i + 1] = _mm512_castpd_ps(
                    _mm512_unpackhi_pd(_mm512_castps_pd(b[i]), _mm512_castps_pd(b[i + 2])));
                a[i + 2] = _mm512_castpd_ps(
                    _mm512_unpacklo_pd(_mm512_castps_pd(b[i + 1]), _mm512_castps_pd(b[i + 3])));
                a[i + 3] = _mm512_castpd_ps(
                    _mm512_unpackhi_pd(_mm512_castps_pd(b[i + 1]), _mm512_castps_pd(b[i + 3])));
            }
            /* stage 3: 128-bit lanes, groups of 4 rows 4 apart */
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                b[i] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0x88);
                b[i + 4] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0xdd);
                b[i + 8] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0x88);
                b[i + 12] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0xdd);
            }
            /* stage 4: 128-bit lanes across the two row halves */
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                a[i] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0x88);
                a[i + 8] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0xdd);
                a[i + 4] = _mm512_shuffle_f32x4(b[i + 4], b[i + 12], 0x88);
                a[i + 12] = _mm512_shuffle_f32x4(b[i + 4], b[i + 12], 0xdd);
            }
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                _mm512_storeu_ps(dst + (size_t)(c0 + i) * ldd + r0, a[i]);
        }
        if (c16 < cols)
            transpose_ref(16, cols - c16, src + (size_t)r0 * lds + c16, lds, dst + (size_t)c16 * ldd + r0,
                          ldd);
    }
    if (r16 < rows)
        transpose_ref(rows - r16, cols, src + (size_t)r16 * lds, lds, dst + r16, ldd);
}

void qe_transpose_f32(int isa, int rows, int cols, const float *src, int lds, float *dst, int ldd)
{
    if (rows <= 0 || cols <= 0)
        return;
    if (isa == QE_ISA_AVX512)
        transpose_avx512(rows, cols, src, lds, dst, ldd);
    else
        transpose_ref(rows, cols, src, lds, dst, ldd);
}
