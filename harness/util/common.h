/*
 * common.h: what every qeval module shares: the error type and codes,
 * bounded string helpers, progress reporting, and small numeric helpers.
 *
 * Holds no file-format, model or SQLite knowledge.
 *
 * Error convention (STYLE.md): a function that can fail returns int
 * (0 = ok, negative QE_E* code) and takes `qe_err *err` last; a constructor
 * returns NULL and fills err.  `err` may be NULL everywhere.  The message
 * names the file, the field or offset, and what was expected, e.g.
 *   "model.gguf: tensor 'blk.0.attn_q.weight': data at offset 123456 + 4096 B
 *    runs past end of file (118000 B)".
 */
#ifndef QE_COMMON_H
#define QE_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QE_VERSION "0.1.0"

/* Error codes.  Never renumber: they are part of the tested contract and
 * the hostile-input corpus expects specific codes. */
enum {
    QE_OK = 0,
    QE_EINVAL = -1,       /* bad argument / usage error */
    QE_EIO = -2,          /* open/read/write/mmap failed (errno text in msg) */
    QE_ENOMEM = -3,       /* allocation failed */
    QE_EMAGIC = -4,       /* wrong magic bytes */
    QE_EVERSION = -5,     /* unsupported format version */
    QE_ETRUNC = -6,       /* file ends inside a header/field */
    QE_ECOUNT = -7,       /* absurd count (n_tensors, n_kv, array length) */
    QE_EBOUNDS = -8,      /* length/offset points past the end of the data */
    QE_EOVERLAP = -9,     /* two tensors' data ranges overlap */
    QE_ETYPE = -10,       /* unknown type id (ggml type, gguf value type) */
    QE_EOVERFLOW = -11,   /* arithmetic on file-provided sizes overflows */
    QE_EUTF8 = -12,       /* invalid UTF-8 where text was expected */
    QE_EJSON = -13,       /* malformed JSON or wrong JSON shape */
    QE_EFORMAT = -14,     /* other structural error in a file */
    QE_EUNSUPPORTED = -15,/* valid input we do not handle (arch, tokenizer) */
    QE_ENOTFOUND = -16,   /* missing key / tensor / file */
    QE_EDB = -17,         /* SQLite error */
    QE_ENAN = -18,        /* NaN or Inf where finite numbers are required */
    QE_ESHAPE = -19,      /* tensor shape does not match the config */
    QE_EEXEC = -20,       /* child process / sandbox failure */
    QE_EINTR = -21,       /* interrupted by a signal */
};

typedef struct qe_err {
    int code;          /* last QE_E* code, 0 if none */
    char msg[768];     /* human-readable, always NUL-terminated */
} qe_err;

/* Fill err (if non-NULL) and return code.  printf-style, truncating. */
int qe_err_set(qe_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "<prefix>: <old msg>".  Returns err->code. */
int qe_err_prefix(qe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void qe_err_clear(qe_err *err);
/* Short name of a code, e.g. "EMAGIC". */
const char *qe_strerror(int code);

/* Bounded string copy/format; always NUL-terminate; return strlen(src). */
size_t qe_strlcpy(char *dst, const char *src, size_t dst_nbytes);

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool qe_mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool qe_add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Whole file into a malloc'd buffer (NUL-terminated; *out_n excludes it). */
int qe_read_file(const char *path, char **out, size_t *out_n, qe_err *err);

/* Read-only memory map of a whole file. */
typedef struct qe_map {
    const uint8_t *data;
    size_t nbytes;
    int fd;
} qe_map;
int qe_map_open(qe_map *m, const char *path, qe_err *err);
void qe_map_close(qe_map *m);

/* Asset root: $QEVAL_ASSETS or "../shared".  Returned string is static. */
const char *qe_assets_dir(void);

/* Progress on stderr: a bar with items/s and ETA when stderr is a TTY,
 * a plain line every few seconds otherwise.  Quiet if QEVAL_QUIET=1. */
typedef struct qe_progress {
    char label[64];
    uint64_t total, done;
    double t_start, t_last;
    bool tty, quiet, drawn;
} qe_progress;
void qe_progress_start(qe_progress *p, const char *label, uint64_t total);
void qe_progress_update(qe_progress *p, uint64_t done);
void qe_progress_end(qe_progress *p);

/* Monotonic seconds. */
double qe_now(void);

/* v with `decimals` decimals, or in compact scientific notation ("3.142e+97",
 * 4 significant digits) when |v| >= 1e6, where fixed decimals would print
 * dozens of digits (word_perplexity of a tiny model).  Returns buf. */
const char *qe_fmt_compact(double v, int decimals, char *buf, size_t buf_nbytes);

/* Half-precision conversions (IEEE binary16 and bfloat16), exact. */
float qe_fp16_to_fp32(uint16_t h);
uint16_t qe_fp32_to_fp16(float f);   /* round-to-nearest-even, like F16C */
float qe_bf16_to_fp32(uint16_t h);
uint16_t qe_fp32_to_bf16(float f);   /* round-to-nearest-even, NaN kept */

#endif /* QE_COMMON_H */
