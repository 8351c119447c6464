/*
 * safetensors.h: reader for HF safetensors checkpoints (single file, or
 * sharded with model.safetensors.index.json) plus config.json, into a
 * qe_model with GGUF tensor names.
 *
 * File layout:
 *   u64 LE header_nbytes | header_nbytes of JSON | data section
 *   JSON = { "__metadata__": {str: str} (optional),
 *            "<tensor name>": {"dtype": "F32", "shape": [d0, d1, ...],
 *                              "data_offsets": [begin, end]}, ... }
 *   shape[0] is the outermost dimension (GGUF ne[] is the reverse);
 *   offsets are bytes relative to the data section, end - begin must equal
 *   numel * dtype size, and no two tensors' ranges may overlap.
 *
 * Errors: header length past the end of the buffer -> QE_EBOUNDS;
 * unparsable JSON or wrong JSON shape -> QE_EJSON; offsets past the data
 * section -> QE_EBOUNDS; size mismatch -> QE_ESHAPE; overlap ->
 * QE_EOVERLAP; size arithmetic overflow -> QE_EOVERFLOW; an unknown dtype
 * string -> QE_EUNSUPPORTED (the message names the tensor and the dtype).
 * The model loader accepts only F32/F16/BF16 for model tensors.
 */
#ifndef QE_SAFETENSORS_H
#define QE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

enum qe_st_dtype {
    QE_ST_BOOL, QE_ST_U8, QE_ST_I8, QE_ST_F8_E5M2, QE_ST_F8_E4M3, QE_ST_I16, QE_ST_U16,
    QE_ST_F16, QE_ST_BF16, QE_ST_I32, QE_ST_U32, QE_ST_F32, QE_ST_F64, QE_ST_I64, QE_ST_U64,
    QE_ST_DTYPE_COUNT
};

#define QE_ST_MAX_DIMS 8

typedef struct qe_st_tensor {
    char *name;                      /* owned, NUL-terminated */
    int dtype;                       /* enum qe_st_dtype */
    uint32_t n_dims;
    int64_t shape[QE_ST_MAX_DIMS];   /* safetensors order: shape[0] outermost */
    uint64_t begin, end;             /* bytes, relative to the data section */
} qe_st_tensor;

typedef struct qe_st_header {
    uint64_t header_nbytes;  /* JSON length */
    uint64_t data_offset;    /* 8 + header_nbytes: where the data section starts */
    uint64_t data_nbytes;    /* buffer size - data_offset */
    int n_tensors;
    qe_st_tensor *tensors;   /* owned, in file (JSON) order */
} qe_st_header;

/* Parse and fully validate the header of a safetensors image of n bytes
 * (only the first 8 + header_nbytes bytes are read; n bounds the data
 * section).  `name` is used in messages.  On failure *out is left empty. */
int qe_safetensors_parse_header(const void *buf, size_t n, const char *name, qe_st_header *out,
                                qe_err *err);
void qe_safetensors_header_free(qe_st_header *h);

/* "F32" etc.; NULL if out of range.  Size in bytes of one element. */
const char *qe_st_dtype_name(int dtype);
size_t qe_st_dtype_size(int dtype);

/* Fill m from a safetensors file, an index.json, or a directory holding
 * either, plus config.json (and tokenizer.json) beside it. */
int qe_safetensors_load(qe_model *m, const char *path, const qe_load_opts *opts, qe_err *err);

/* Parse config.json text into cfg (llama, mistral -> arch "llama"; qwen2). */
int qe_hf_config_parse(const char *json, size_t n, const char *name, qe_config *cfg,
                       qe_err *err);

/* hf_names.c: HF tensor name -> GGUF canonical name ("model.layers.3.mlp.up_proj.weight"
 * -> "blk.3.ffn_up.weight").  Returns 1 when mapped, 0 when the name is unknown,
 * QE_EFORMAT when the result does not fit in cap. */
int qe_hf_name_to_gguf(const char *hf, char *out, size_t cap);
/* Architecture-aware form (gemma's norms, experts): *expert = the expert
 * index for a per-expert tensor (stacked into the 3-D GGUF tensor), else -1. */
int qe_hf_name_to_gguf_arch(const char *arch, const char *hf, char *out, size_t cap,
                            int *expert);
/* The reverse for the llama rows (used by tests and writers); same returns. */
int qe_gguf_name_to_hf(const char *gguf, char *out, size_t cap);

#endif /* QE_SAFETENSORS_H */
