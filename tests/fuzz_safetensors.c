/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors header parser
 * (qe_safetensors_parse_header) and the config.json parser
 * (qe_hf_config_parse).
 *
 * For each input: the parser must either fail with a negative QE_E* code
 * and a non-empty message naming the input, or succeed; on success every
 * tensor's range must lie inside the data section, match dtype x shape,
 * not overlap the next one, and its first and last byte are read (ASan
 * catches any out-of-bounds view).  The same bytes are also fed to the
 * config.json parser, which must fail cleanly or give positive sizes.
 * Any violation traps.  Built and run by `make fuzz` (scripts/fuzz.sh);
 * seeds in tests/fuzz_seeds/safetensors/.
 */
#include "../harness/model/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qe_err err = {0};
    qe_st_header h;
    int rc = qe_safetensors_parse_header(data, size, "fuzz.safetensors", &h, &err);
    if (rc > 0)
        __builtin_trap();
    if (rc < 0) {
        if (err.code != rc || !strstr(err.msg, "fuzz.safetensors") || h.n_tensors != 0 ||
            h.tensors != NULL)
            __builtin_trap();
    } else {
        if (h.data_offset != 8 + h.header_nbytes || h.data_offset + h.data_nbytes != size)
            __builtin_trap();
        for (int i = 0; i < h.n_tensors; i++) {
            const qe_st_tensor *t = &h.tensors[i];
            uint64_t nel = 1;
            for (uint32_t d = 0; d < t->n_dims; d++)
                nel *= (uint64_t)t->shape[d];
            if (!t->name || t->begin > t->end || t->end > h.data_nbytes ||
                t->end - t->begin != nel * qe_st_dtype_size(t->dtype) ||
                !qe_st_dtype_name(t->dtype))
                __builtin_trap();
            for (int j = 0; j < h.n_tensors; j++)
                if (j != i && t->begin < h.tensors[j].end && h.tensors[j].begin < t->end)
                    __builtin_trap();
            if (t->end > t->begin)
                g_sink += data[h.data_offset + t->begin] + data[h.data_offset + t->end - 1];
        }
        qe_safetensors_header_free(&h);
    }

    qe_config cfg;
    memset(&cfg, 0, sizeof cfg);
    rc = qe_hf_config_parse((const char *)data, size, "config.json", &cfg, &err);
    if (rc > 0)
        __builtin_trap();
    if (rc == 0 && (cfg.n_embd <= 0 || cfg.n_head <= 0 || cfg.n_head_kv <= 0 ||
                    cfg.head_dim <= 0 || cfg.n_vocab <= 0 || cfg.n_head % cfg.n_head_kv))
        __builtin_trap();
    return 0;
}
