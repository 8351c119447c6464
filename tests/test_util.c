/*
 * test_util.c: common.c: error formatting, fp16/bf16 conversion (checked
 * exhaustively against the hardware F16C conversion where available).
 */
#include <immintrin.h>

#include "../harness/util/common.h"
#include "test.h"

TEST(err_set_and_prefix)
{
    qe_err e = {0};
    int rc = qe_err_set(&e, QE_ETRUNC, "x.gguf: offset %d: expected %s", 24, "u64 n_kv");
    CHECK(rc == QE_ETRUNC);
    CHECK(strcmp(e.msg, "x.gguf: offset 24: expected u64 n_kv") == 0);
    qe_err_prefix(&e, "loading %s", "model");
    CHECKF(strcmp(e.msg, "loading model: x.gguf: offset 24: expected u64 n_kv") == 0, "%s", e.msg);
    CHECK(strcmp(qe_strerror(QE_ETRUNC), "ETRUNC") == 0);
    CHECK(qe_err_set(NULL, QE_EIO, "ignored") == QE_EIO);
}

__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) static float hw_f16_to_f32(uint16_t h)
{
    return _cvtsh_ss(h);
}

TEST(fp16_exhaustive_vs_f16c)
{
    if (!__builtin_cpu_supports("f16c"))
        return;
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = qe_fp16_to_fp32((uint16_t)h), b = hw_f16_to_f32((uint16_t)h);
        if (memcmp(&a, &b, 4) != 0 && !(isnan(a) && isnan(b)))
            bad++;
    }
    CHECKF(bad == 0, "%d half values decode differently", bad);
    bad = 0;
    /* every 97th float bit pattern, plus boundaries */
    for (uint64_t x = 0; x < 0x100000000ull; x += 97) {
        uint32_t u = (uint32_t)x;
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f))
            continue;
        if (qe_fp32_to_fp16(f) != hw_f32_to_f16(f))
            bad++;
    }
    CHECKF(bad == 0, "%d floats encode differently", bad);
}

TEST(bf16_roundtrip)
{
    CHECK(qe_bf16_to_fp32(qe_fp32_to_bf16(1.0f)) == 1.0f);
    CHECK(qe_fp32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
    CHECK(qe_fp32_to_bf16(1.01171875f) == 0x3f82);
    CHECK(isnan(qe_bf16_to_fp32(qe_fp32_to_bf16(NAN))));
}

TEST(fmt_compact)
{
    char b[32];
    CHECK(strcmp(qe_fmt_compact(12.3456789, 4, b, sizeof b), "12.3457") == 0);
    CHECK(strcmp(qe_fmt_compact(999999.0, 2, b, sizeof b), "999999.00") == 0);
    /* a tiny model's word_perplexity: 97 digits in %.4f */
    CHECKF(strcmp(qe_fmt_compact(3.14159e97, 4, b, sizeof b), "3.142e+97") == 0, "%s", b);
    CHECK(strcmp(qe_fmt_compact(-2.5e6, 4, b, sizeof b), "-2.5e+06") == 0);
    CHECK(strcmp(qe_fmt_compact(INFINITY, 4, b, sizeof b), "inf") == 0);
}

int main(void)
{
    RUN(fmt_compact);
    RUN(err_set_and_prefix);
    RUN(fp16_exhaustive_vs_f16c);
    RUN(bf16_roundtrip);
    return test_finish();
}
