/*
 * sha256.h: SHA-256 (FIPS 180-4) of a buffer or a whole file, for
 * provenance: model, data, imatrix and recipe hashes stored with every
 * result, and run keys derived from a run's inputs.
 *
 * Holds no file-format knowledge.  Files are hashed by streaming reads, so
 * a multi-GB model costs no memory.
 */
#ifndef QE_SHA256_H
#define QE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Incremental context: init, update any number of times, final. */
typedef struct qe_sha256_ctx {
    uint32_t h[8];
    uint64_t n_bytes;     /* total bytes fed so far */
    uint8_t buf[64];      /* partial block */
    size_t buf_n;         /* bytes in buf (< 64) */
} qe_sha256_ctx;

void qe_sha256_init(qe_sha256_ctx *c);
void qe_sha256_update(qe_sha256_ctx *c, const void *data, size_t n);
void qe_sha256_final(qe_sha256_ctx *c, uint8_t out[32]);

/* One-shot digest of n bytes. */
void qe_sha256(const void *buf, size_t n, uint8_t out[32]);
/* Digest of n bytes as 64 lowercase hex chars + NUL. */
void qe_sha256_hex(const void *buf, size_t n, char hex[65]);
/* 32-byte digest -> 64 lowercase hex chars + NUL. */
void qe_sha256_digest_hex(const uint8_t digest[32], char hex[65]);
/* Digest of a file's contents as hex, streamed in 64 KiB reads (QE_EIO
 * naming the path on failure). */
int qe_sha256_file(const char *path, char hex[65], qe_err *err);

#endif /* QE_SHA256_H */
