/*
 * test.h: the qeval test framework: three macros in one binary per module
 * (after hiredis).  Each test binary prints one line per failed check and
 * ends with "RESULT <binary> passed=N failed=M"; tests/run.sh sums those
 * into the final "N passed, N failed" line.
 *
 *   TEST(name) { CHECK(x == 1); CHECKF(y < 2, "y=%d", y); }
 *   int main(void) { RUN(name); return test_finish(); }
 *
 * A test counts as failed if any of its checks failed.  Tests that need
 * ../shared assets use test_asset("testdata/llamacpp/x.gguf"), which
 * resolves against $QEVAL_ASSETS (default ../shared).
 */
#ifndef QE_TEST_H
#define QE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int test_n_pass, test_n_fail, test_cur_failed;
static const char *test_cur_name;

#define TEST(name) static void name(void)

#define CHECK(cond) CHECKF(cond, "%s", "")

/* Record a failed check: `ok` already evaluated, `text` its source. */
#define TEST_CHECK_IMPL(ok, text, ...)                                                      \
    do {                                                                                    \
        if (!(ok)) {                                                                        \
            test_cur_failed = 1;                                                            \
            fprintf(stdout, "  FAIL %s (%s:%d): %s: ", test_cur_name, __FILE__, __LINE__,   \
                    text);                                                                  \
            fprintf(stdout, __VA_ARGS__);                                                   \
            fputc('\n', stdout);                                                            \
        }                                                                                   \
    } while (0)

#define CHECKF(cond, ...) TEST_CHECK_IMPL(cond, #cond, __VA_ARGS__)

/* Like CHECKF but stops the test (use when later checks would crash).
 * The condition is evaluated exactly once. */
#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        int require_ok_ = !!(cond);                                                         \
        TEST_CHECK_IMPL(require_ok_, #cond, __VA_ARGS__);                                   \
        if (!require_ok_)                                                                   \
            return;                                                                         \
    } while (0)

#define RUN(name) test_run(#name, name)

static inline void test_run(const char *name, void (*fn)(void))
{
    test_cur_name = name;
    test_cur_failed = 0;
    fn();
    if (test_cur_failed) {
        test_n_fail++;
        fprintf(stdout, "not ok  %s\n", name);
    } else {
        test_n_pass++;
        fprintf(stdout, "ok      %s\n", name);
    }
    fflush(stdout);
}

static inline int test_finish_named(const char *bin)
{
    fprintf(stdout, "RESULT %s passed=%d failed=%d\n", bin, test_n_pass, test_n_fail);
    return test_n_fail ? 1 : 0;
}
#define test_finish() test_finish_named(__FILE__)

/* Path of an asset under $QEVAL_ASSETS (static buffer, rotates 8). */
static inline const char *test_asset(const char *rel)
{
    static char bufs[8][1024];
    static int k;
    const char *root = getenv("QEVAL_ASSETS");
    if (!root || !*root)
        root = "../shared";
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", root, rel);
    return b;
}

/* The whole file at `path`, NUL-terminated and malloc'd (length in *n
 * when n is not NULL); NULL when it cannot be read. */
static inline char *test_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t nc = cap ? 2 * cap : 65536;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb, cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    if (n)
        *n = len;
    return buf;
}

/* The qeval binary under test: $QEVAL_BIN (make test sets it), else ./qeval. */
static inline const char *test_qeval_bin(void)
{
    const char *b = getenv("QEVAL_BIN");
    return (b && *b) ? b : "./qeval";
}

/* Run a shell command; its stdout goes into *out (malloc'd, NUL-terminated)
 * when out is not NULL.  Returns the exit status, or -1. */
static inline int test_run_cmd(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n - 1, p);
        if (r == 0)
            break;
        n += r;
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int test_close(double a, double b, double rel)
{
    double d = fabs(a - b), m = fabs(b) > 1e-30 ? fabs(b) : 1.0;
    return d <= rel * m;
}

#endif /* QE_TEST_H */
