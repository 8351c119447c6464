/*
 * args.c: argument parsing helpers for the command files (see cli.h).
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"

bool qe_arg_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

bool qe_arg_is_flag(const char *a, const char *name)
{
    return strcmp(a, name) == 0;
}

const char *qe_arg_value(int argc, char **argv, int *i, const char *name, const char *alias)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=')
        return a + n + 1;
    if (strcmp(a, name) == 0 || (alias && strcmp(a, alias) == 0)) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "qeval: option '%s' needs a value\n", a);
            *i = argc + 1; /* caller sees i > argc: failure */
            return NULL;
        }
        *i += 1;
        return argv[*i];
    }
    return NULL;
}

bool qe_arg_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "qeval: option '%s': expected an integer in [%lld, %lld], got '%s'\n", opt,
                lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool qe_arg_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || (*end && strcmp(end, "%") != 0)) {
        fprintf(stderr, "qeval: option '%s': expected a number, got '%s'\n", opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool qe_arg_duration(const char *opt, const char *s, double *seconds)
{
    double total = 0;
    const char *p = s;
    bool any = false;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || v < 0 || !isfinite(v))
            goto bad;
        double mul = 1;
        if (*end == 'h')
            mul = 3600, end++;
        else if (*end == 'm')
            mul = 60, end++;
        else if (*end == 's')
            end++;
        else if (*end)
            goto bad;
        total += v * mul;
        any = true;
        p = end;
    }
    if (!any || total <= 0)
        goto bad;
    *seconds = total;
    return true;
bad:
    fprintf(stderr, "qeval: option '%s': expected a duration like 1h, 30m, 90s or 1h30m, got "
                    "'%s'\n", opt, s);
    return false;
}

bool qe_arg_bytes(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) {
        fprintf(stderr, "qeval: option '%s': expected a size like 8GiB or 512M, got '%s'\n", opt, s);
        return false;
    }
    static const struct { const char *suf; double mul; } units[] = {
        {"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"KiB", 1024.0}, {"M", 1e6}, {"MB", 1e6},
        {"MiB", 1048576.0}, {"G", 1e9}, {"GB", 1e9}, {"GiB", 1073741824.0}, {"T", 1e12},
        {"TB", 1e12}, {"TiB", 1099511627776.0},
    };
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        if (strcmp(end, units[k].suf) == 0) {
            *out = (uint64_t)(v * units[k].mul);
            return true;
        }
    }
    fprintf(stderr, "qeval: option '%s': unknown size unit in '%s' (use K, M, G, KiB, MiB, GiB)\n",
            opt, s);
    return false;
}

int qe_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "qeval %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'qeval %s --help'.\n", cmd);
    return QE_EXIT_USAGE;
}

int qe_report_error(const char *cmd, const qe_err *err)
{
    fprintf(stderr, "qeval %s: error: %s [%s]\n", cmd, err && err->msg[0] ? err->msg : "failed",
            qe_strerror(err ? err->code : QE_EINVAL));
    return QE_EXIT_USAGE;
}

bool qe_arg_numerics(const char *cmd, const char *s, int *out)
{
    if (strcmp(s, "exact") == 0)
        *out = QE_NUMERICS_EXACT;
    else if (strcmp(s, "llamacpp") == 0)
        *out = QE_NUMERICS_LLAMACPP;
    else if (strcmp(s, "int8") == 0)
        *out = QE_NUMERICS_INT8;
    else {
        qe_usage_error(cmd, "--numerics '%s': expected exact, llamacpp or int8", s);
        return false;
    }
    return true;
}
