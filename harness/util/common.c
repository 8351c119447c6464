/*
 * common.c: error handling, file helpers, progress and fp16/bf16 conversion
 * shared by every module.  No format knowledge lives here.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int qe_err_set(qe_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int qe_err_prefix(qe_err *err, const char *fmt, ...)
{
    if (!err)
        return QE_EINVAL;
    char pre[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = qe_strlcpy(err->msg, pre, sizeof err->msg);
    if (n + 2 < sizeof err->msg) {
        memcpy(err->msg + n, ": ", 3);
        qe_strlcpy(err->msg + n + 2, old, sizeof err->msg - n - 2);
    }
    return err->code;
}

void qe_err_clear(qe_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *qe_strerror(int code)
{
    static const char *names[] = {
        "OK", "EINVAL", "EIO", "ENOMEM", "EMAGIC", "EVERSION", "ETRUNC",
        "ECOUNT", "EBOUNDS", "EOVERLAP", "ETYPE", "EOVERFLOW", "EUTF8",
        "EJSON", "EFORMAT", "EUNSUPPORTED", "ENOTFOUND", "EDB", "ENAN",
        "ESHAPE", "EEXEC", "EINTR",
    };
    int i = -code;
    if (i < 0 || i >= (int)(sizeof names / sizeof names[0]))
        return "EUNKNOWN";
    return names[i];
}

size_t qe_strlcpy(char *dst, const char *src, size_t dst_nbytes)
{
    size_t n = strlen(src);
    if (dst_nbytes) {
        size_t c = n < dst_nbytes - 1 ? n : dst_nbytes - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int qe_read_file(const char *path, char **out, size_t *out_n, qe_err *err)
{
    *out = NULL;
    if (out_n)
        *out_n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return qe_err_set(err, QE_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return qe_err_set(err, QE_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (out_n)
        *out_n = n;
    return 0;
}

int qe_map_open(qe_map *m, const char *path, qe_err *err)
{
    m->data = NULL;
    m->nbytes = 0;
    m->fd = -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return qe_err_set(err, QE_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qe_err_set(err, QE_EIO, "%s: not a regular file", path);
    }
    m->fd = fd;
    m->nbytes = (size_t)st.st_size;
    if (m->nbytes == 0) {
        m->data = NULL;
        return 0;
    }
    void *p = mmap(NULL, m->nbytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        m->fd = -1;
        return qe_err_set(err, QE_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    m->data = p;
    return 0;
}

void qe_map_close(qe_map *m)
{
    if (!m)
        return;
    if (m->data)
        munmap((void *)m->data, m->nbytes);
    if (m->fd >= 0)
        close(m->fd);
    m->data = NULL;
    m->nbytes = 0;
    m->fd = -1;
}

const char *qe_assets_dir(void)
{
    const char *e = getenv("QEVAL_ASSETS");
    return (e && *e) ? e : "../shared";
}

double qe_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qe_progress_start(qe_progress *p, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    qe_strlcpy(p->label, label, sizeof p->label);
    p->total = total;
    p->t_start = p->t_last = qe_now();
    p->tty = isatty(2);
    const char *q = getenv("QEVAL_QUIET");
    p->quiet = q && *q && strcmp(q, "0") != 0;
}

static void progress_draw(qe_progress *p, bool final)
{
    double t = qe_now(), el = t - p->t_start;
    double rate = el > 0 ? (double)p->done / el : 0.0;
    double eta = (rate > 0 && p->total > p->done) ? (double)(p->total - p->done) / rate : 0.0;
    if (p->tty) {
        int width = 30, fill = p->total ? (int)((double)width * (double)p->done / (double)p->total) : 0;
        if (fill > width)
            fill = width;
        fprintf(stderr, "\r%-20s [%.*s%*s] %llu/%llu %.1f/s ETA %.0fs ", p->label, fill,
                "==============================", width - fill, "",
                (unsigned long long)p->done, (unsigned long long)p->total, rate, eta);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %llu/%llu (%.1f/s, %.1fs elapsed%s)\n", p->label,
                (unsigned long long)p->done, (unsigned long long)p->total, rate, el,
                final ? ", done" : "");
    }
    p->drawn = true;
}

void qe_progress_update(qe_progress *p, uint64_t done)
{
    p->done = done;
    if (p->quiet)
        return;
    double t = qe_now();
    double every = p->tty ? 0.1 : 5.0;
    if (t - p->t_last >= every) {
        p->t_last = t;
        progress_draw(p, false);
    }
}

void qe_progress_end(qe_progress *p)
{
    if (p->quiet)
        return;
    if (p->tty || p->drawn || qe_now() - p->t_start > 1.0)
        progress_draw(p, true);
}

/* ---- fp16 / bf16 ---------------------------------------------------- */

float qe_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qe_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep quiet bit */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* subnormal or zero in half */
        if (ax < 0x33000000u) /* < 2^-25: rounds to 0 */
            return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((ax >> 13) - (112u << 10));
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float qe_bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qe_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 64); /* quiet NaN, like ggml */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

const char *qe_fmt_compact(double v, int decimals, char *buf, size_t buf_nbytes)
{
    if (isfinite(v) && fabs(v) >= 1e6)
        snprintf(buf, buf_nbytes, "%.4g", v);
    else
        snprintf(buf, buf_nbytes, "%.*f", decimals, v);
    return buf;
}
