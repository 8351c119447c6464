/*
 * imatrix_io.h: importance matrices (per-column activation statistics of
 * every weight matmul) in llama.cpp's two file formats, and the in-memory
 * accumulator `qeval imatrix` fills.
 *
 * Legacy ".dat" (llama-imatrix b4747, little-endian):
 *   i32 n_entries
 *   n_entries x { i32 name_len | name bytes (no NUL) | i32 ncall |
 *                 i32 nval | f32 values[nval] }     values = (sum x^2 / count) * ncall
 *   optional trailer: i32 last_call (chunks processed) | i32 len | dataset file name
 * GGUF (upstream PR #9400): KV general.type = "imatrix",
 *   imatrix.datasets (string array), imatrix.chunk_count (u32),
 *   imatrix.chunk_size (u32); per weight W the F32 tensors
 *   "W.in_sum2" (ne = {n_per_row, n_mat}: raw sum x^2) and
 *   "W.counts" (ne = {1, n_mat}: tokens seen); an optional "W.in_sum" is
 *   ignored.
 *
 * In memory every entry keeps exactly what its file stored (sum_sq and
 * counts; for .dat entries counts[k] = ncall so sum_sq/counts is the mean),
 * so writing back to the format it came from is byte-identical, and
 * mean_sq holds what quantizers take: mean x^2 per column (sum/count, in
 * float like llama-quantize; count 0 gives 1.0 like upstream's loader).
 * Conversion .dat -> GGUF multiplies by chunk_size (tokens per chunk),
 * GGUF -> .dat derives ncall = ceil(count / chunk_size), as upstream does.
 */
#ifndef QE_IMATRIX_IO_H
#define QE_IMATRIX_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

typedef struct qe_imatrix_entry {
    char *name;        /* owned, e.g. "blk.0.attn_q.weight" */
    int32_t n_values;  /* n_per_row * n_mat */
    int32_t n_mat;     /* 1 for dense weights, n_expert for MoE */
    int32_t ncall;     /* chunks the weight was seen in */
    float *sum_sq;     /* owned (n_mat, n_per_row): sum x^2 in count units */
    float *counts;     /* owned (n_mat): samples behind sum_sq */
    float *mean_sq;    /* owned (n_mat, n_per_row): sum_sq / counts */
} qe_imatrix_entry;

enum qe_imatrix_format { QE_IMATRIX_DAT = 1, QE_IMATRIX_GGUF = 2 };

typedef struct qe_imatrix {
    int n_entries;
    qe_imatrix_entry *entries;   /* owned, in file order */
    int n_datasets;
    char **datasets;             /* owned calibration file names (provenance) */
    int32_t chunk_count;         /* chunks processed (.dat trailer / imatrix.chunk_count) */
    int32_t chunk_size;          /* tokens per chunk; 0 = unknown (.dat) */
    bool dat_trailer;            /* .dat had the optional trailer */
    bool counts_are_chunks;      /* counts are in chunks (.dat origin), not tokens */
    int format;                  /* enum qe_imatrix_format it was read from, 0 if built */
} qe_imatrix;

/* Empty matrix (for the collector). */
qe_imatrix *qe_imatrix_new(qe_err *err);
void qe_imatrix_free(qe_imatrix *im);

/* Read either format (sniffs the GGUF magic).  NULL + err: QE_EIO,
 * QE_ETRUNC / QE_ECOUNT / QE_EBOUNDS / QE_EFORMAT naming the file, the
 * entry and the byte offset; QE_ENAN for non-finite values. */
qe_imatrix *qe_imatrix_load(const char *path, qe_err *err);
qe_imatrix *qe_imatrix_read_dat(const void *buf, size_t nbytes, const char *label, qe_err *err);

int qe_imatrix_write_dat(const qe_imatrix *im, const char *path, qe_err *err);
int qe_imatrix_write_gguf(const qe_imatrix *im, const char *path, qe_err *err);
/* .dat bytes into a malloc'd buffer (caller frees). */
int qe_imatrix_write_dat_mem(const qe_imatrix *im, uint8_t **out, size_t *out_nbytes, qe_err *err);

/* Entry by weight name, or NULL. */
const qe_imatrix_entry *qe_imatrix_find(const qe_imatrix *im, const char *name);

/* Append an entry (copies name, sum_sq[n_values], counts[n_mat]) and
 * computes mean_sq.  QE_EINVAL for n_mat not dividing n_values or a
 * duplicate name. */
int qe_imatrix_add(qe_imatrix *im, const char *name, int32_t n_values, int32_t n_mat, int32_t ncall,
                   const float *sum_sq, const float *counts, qe_err *err);
int qe_imatrix_add_dataset(qe_imatrix *im, const char *name, qe_err *err);

#endif /* QE_IMATRIX_IO_H */
