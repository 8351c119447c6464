/*
 * filters.c: answer extraction and matching, mirroring lm-evaluation-
 * harness: RegexFilter (findall + group_select + fallback "[invalid]" +
 * strip), take_first, remove_whitespace, and exact_match_hf_evaluate
 * (regexes_to_ignore, ignore_case, ignore_punctuation, ignore_numbers).
 * Regexes are PCRE2 in UTF mode; Python's findall is emulated: with one
 * group the group's text, with several the first non-empty group, with
 * none the whole match; an empty match advances by one character.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "task.h"

int qe_regex_compile(const char *pattern, const char *where, void **out, qe_err *err)
{
    int ec;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return qe_err_set(err, QE_EFORMAT, "%s: PCRE2 error at offset %zu: %s (pattern \"%s\")",
                          where, (size_t)eoff, (const char *)msg, pattern);
    }
    *out = re;
    return 0;
}

void qe_regex_free(void *re)
{
    pcre2_code_free((pcre2_code *)re);
}

static char *dup_range(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (o) {
        memcpy(o, s, n);
        o[n] = '\0';
    }
    return o;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Python str.strip() on ASCII whitespace, in place. */
static void strip_inplace(char *s)
{
    size_t n = strlen(s), a = 0;
    while (a < n && is_ws((unsigned char)s[a]))
        a++;
    while (n > a && is_ws((unsigned char)s[n - 1]))
        n--;
    memmove(s, s + a, n - a);
    s[n - a] = '\0';
}

/* findall-style extraction; returns malloc'd string (fallback if none). */
static char *regex_extract(const qe_filter_step *st, const char *s, qe_err *err)
{
    pcre2_code *re = st->re;
    uint32_t n_groups = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n_groups);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    size_t len = strlen(s), off = 0;
    /* keep the offsets of every match's chosen text */
    size_t cap = 16, n = 0;
    size_t(*sel)[2] = malloc(cap * sizeof *sel);
    if (!sel) {
        pcre2_match_data_free(md);
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    while (off <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, 0, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (n_groups >= 1) {
            a = b = 0;
            for (uint32_t g = 1; g <= n_groups; g++) {
                if ((int)g < rc && ov[2 * g] != PCRE2_UNSET && ov[2 * g + 1] > ov[2 * g]) {
                    a = ov[2 * g];
                    b = ov[2 * g + 1];
                    break;
                }
                if (n_groups == 1)
                    break; /* single group: its (possibly empty) text */
            }
        }
        if (n == cap) {
            void *ns = realloc(sel, 2 * cap * sizeof *sel);
            if (!ns)
                break;
            sel = ns;
            cap *= 2;
        }
        sel[n][0] = a;
        sel[n][1] = b;
        n++;
        if (ov[1] == ov[0]) {
            /* empty match: step one UTF-8 character */
            size_t k = ov[1] + 1;
            while (k < len && ((unsigned char)s[k] & 0xC0) == 0x80)
                k++;
            off = k;
        } else {
            off = ov[1];
        }
    }
    pcre2_match_data_free(md);
    char *out;
    long idx = st->group_select < 0 ? (long)n + st->group_select : st->group_select;
    if (n == 0 || idx < 0 || idx >= (long)n) {
        out = strdup(st->fallback ? st->fallback : "[invalid]");
    } else if (sel[idx][1] == sel[idx][0] && n_groups > 1) {
        out = strdup(st->fallback ? st->fallback : "[invalid]"); /* all groups empty */
    } else {
        out = dup_range(s + sel[idx][0], sel[idx][1] - sel[idx][0]);
        if (out)
            strip_inplace(out);
    }
    free(sel);
    if (!out)
        qe_err_set(err, QE_ENOMEM, "out of memory");
    return out;
}

int qe_filter_apply(const qe_filter *f, const char *const *until, int n_until, const char *resp,
                    char **out, qe_err *err)
{
    char *cur = strdup(resp ? resp : "");
    if (!cur)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    for (int i = 0; f && i < f->n_steps; i++) {
        const qe_filter_step *st = &f->steps[i];
        char *next = NULL;
        switch (st->kind) {
        case QE_FILTER_REGEX:
            next = regex_extract(st, cur, err);
            if (!next) {
                free(cur);
                return err ? err->code : QE_ENOMEM;
            }
            free(cur);
            cur = next;
            break;
        case QE_FILTER_TAKE_FIRST:
            break;
        case QE_FILTER_REMOVE_WHITESPACE:
            if (cur[0] == ' ')
                memmove(cur, cur + 1, strlen(cur));
            break;
        case QE_FILTER_STRIP:
            strip_inplace(cur);
            break;
        case QE_FILTER_LOWER:
            for (char *p = cur; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            break;
        case QE_FILTER_NUMBER: {
            char *w = cur;
            for (char *p = cur; *p; p++)
                if (*p != ',' && *p != '$')
                    *w++ = *p;
            *w = '\0';
            strip_inplace(cur);
            size_t n = strlen(cur);
            if (n && cur[n - 1] == '.')
                cur[n - 1] = '\0';
            break;
        }
        case QE_FILTER_UNTIL: {
            size_t cut = strlen(cur);
            for (int k = 0; k < n_until; k++) {
                const char *h = until[k][0] ? strstr(cur, until[k]) : NULL;
                if (h && (size_t)(h - cur) < cut)
                    cut = (size_t)(h - cur);
            }
            cur[cut] = '\0';
            break;
        }
        default:
            free(cur);
            return qe_err_set(err, QE_EINVAL, "filter '%s': step %d has unknown kind %d",
                              f->name, i, st->kind);
        }
    }
    *out = cur;
    return 0;
}

/* re.sub(pattern, "", s) for every match. */
static int regex_remove(void *re, char **s, qe_err *err)
{
    size_t len = strlen(*s);
    PCRE2_SIZE outlen = len + 1;
    char *out = malloc(outlen);
    if (!out)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    int rc = pcre2_substitute(re, (PCRE2_SPTR)*s, len, 0, PCRE2_SUBSTITUTE_GLOBAL, NULL, NULL,
                              (PCRE2_SPTR) "", 0, (PCRE2_UCHAR *)out, &outlen);
    if (rc < 0) {
        free(out);
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return qe_err_set(err, QE_EFORMAT, "exact_match: regexes_to_ignore: %s",
                          (const char *)msg);
    }
    free(*s);
    *s = out;
    return 0;
}

static void em_normalise(const qe_em_opts *o, char *s)
{
    static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    char *w = s;
    for (char *p = s; *p; p++) {
        char c = *p;
        if (o->ignore_case && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (o->ignore_punctuation && strchr(punct, c))
            continue;
        if (o->ignore_numbers && c >= '0' && c <= '9')
            continue;
        *w++ = c;
    }
    *w = '\0';
}

int qe_exact_match(const qe_em_opts *o, const char *pred, const char *ref, bool *match,
                   qe_err *err)
{
    char *p = strdup(pred ? pred : ""), *r = strdup(ref ? ref : "");
    int rc = (p && r) ? 0 : qe_err_set(err, QE_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && o && i < o->n_ignore; i++) {
        rc = regex_remove(o->ignore_re[i], &p, err);
        if (rc == 0)
            rc = regex_remove(o->ignore_re[i], &r, err);
    }
    if (rc == 0) {
        if (o) {
            em_normalise(o, p);
            em_normalise(o, r);
        }
        *match = strcmp(p, r) == 0;
    }
    free(p);
    free(r);
    return rc;
}
