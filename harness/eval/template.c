/*
 * template.c: prompt templates: "{{path|pipe|pipe:arg}}" (see task.h for
 * the pipes).  A value comes from the extra name/value pairs first, then
 * from the document's dotted path.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "task.h"

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static const char *const pipe_names[] = {"lower", "upper", "capitalize", "strip", "lstrip",
                                         "rstrip_period", "last_word", "but_last_word",
                                         "before", "after", "map", "dec", "hellaswag"};
#define N_PIPES (sizeof pipe_names / sizeof pipe_names[0])

static bool pipe_known(const char *name, size_t n)
{
    for (size_t i = 0; i < N_PIPES; i++)
        if (strlen(pipe_names[i]) == n && !memcmp(pipe_names[i], name, n))
            return true;
    return false;
}

/* Apply one pipe to v (malloc'd, replaced). */
static char *apply_pipe(char *v, const char *pipe, size_t pn)
{
    char name[32], arg[256] = "";
    const char *colon = memchr(pipe, ':', pn);
    size_t nl = colon ? (size_t)(colon - pipe) : pn;
    if (nl >= sizeof name)
        nl = sizeof name - 1;
    memcpy(name, pipe, nl);
    name[nl] = '\0';
    if (colon) {
        size_t al = pn - nl - 1;
        if (al >= sizeof arg)
            al = sizeof arg - 1;
        memcpy(arg, colon + 1, al);
        arg[al] = '\0';
    }
    size_t n = strlen(v);
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        for (char *p = v; *p; p++)
            *p = (char)(name[0] == 'l' ? tolower((unsigned char)*p) : toupper((unsigned char)*p));
    } else if (!strcmp(name, "capitalize")) {
        for (char *p = v; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (*v)
            *v = (char)toupper((unsigned char)*v);
    } else if (!strcmp(name, "strip") || !strcmp(name, "lstrip")) {
        size_t a = 0;
        while (a < n && isspace((unsigned char)v[a]))
            a++;
        if (name[0] == 's')
            while (n > a && isspace((unsigned char)v[n - 1]))
                n--;
        memmove(v, v + a, n - a);
        v[n - a] = '\0';
    } else if (!strcmp(name, "rstrip_period")) {
        while (n > 0 && isspace((unsigned char)v[n - 1]))
            n--;
        if (n > 0 && v[n - 1] == '.')
            n--;
        v[n] = '\0';
    } else if (!strcmp(name, "last_word") || !strcmp(name, "but_last_word")) {
        char *sp = strrchr(v, ' ');
        if (name[0] == 'l') {
            if (sp)
                memmove(v, sp + 1, strlen(sp + 1) + 1);
        } else {
            if (sp)
                *sp = '\0';
            else
                v[0] = '\0';
        }
    } else if (!strcmp(name, "before") || !strcmp(name, "after")) {
        char *h = arg[0] ? strstr(v, arg) : NULL;
        if (h) {
            if (name[0] == 'b')
                *h = '\0';
            else
                memmove(v, h + strlen(arg), strlen(h + strlen(arg)) + 1);
        }
    } else if (!strcmp(name, "map")) {
        /* map:k=v;k=v */
        char *save = NULL;
        for (char *kv = strtok_r(arg, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
            char *eq = strchr(kv, '=');
            if (eq && (size_t)(eq - kv) == n && !memcmp(kv, v, n)) {
                char *nv = strdup(eq + 1);
                if (nv) {
                    free(v);
                    return nv;
                }
            }
        }
    } else if (!strcmp(name, "dec")) {
        char *e;
        long x = strtol(v, &e, 10);
        if (e != v) {
            char *nv = malloc(32);
            if (nv) {
                snprintf(nv, 32, "%ld", x - 1);
                free(v);
                return nv;
            }
        }
    } else if (!strcmp(name, "hellaswag")) {
        /* lm-eval hellaswag preprocess: strip, " [title]" -> ". ",
         * drop "[...]" spans, "  " -> " " */
        sbuf b = {0};
        const char *p = v;
        while (*p == ' ')
            p++;
        while (*p) {
            if (!strncmp(p, " [title]", 8)) {
                sb_add(&b, ". ", 2);
                p += 8;
            } else if (*p == '[') {
                const char *q = strchr(p, ']');
                if (q) {
                    p = q + 1;
                    continue;
                }
                sb_add(&b, p++, 1);
            } else if (p[0] == ' ' && p[1] == ' ') {
                p++;
            } else {
                sb_add(&b, p++, 1);
            }
        }
        if (!b.oom) {
            free(v);
            if (!b.p)
                return strdup("");
            size_t m = b.n;
            while (m > 0 && b.p[m - 1] == ' ')
                b.p[--m] = '\0';
            return b.p;
        }
        free(b.p);
    }
    return v;
}

static char *value_text(const cJSON *v)
{
    char num[64];
    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == (double)(long long)d && d < 1e15 && d > -1e15)
            snprintf(num, sizeof num, "%lld", (long long)d);
        else
            snprintf(num, sizeof num, "%.17g", d);
        return strdup(num);
    }
    if (cJSON_IsBool(v))
        return strdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNull(v))
        return strdup("");
    return cJSON_PrintUnformatted(v);
}

static int render(const char *tpl, const cJSON *doc, const char *const *xn,
                  const char *const *xv, int nx, bool check_only, char **out, qe_err *err)
{
    sbuf b = {0};
    sb_add(&b, "", 0);
    const char *p = tpl;
    while (*p) {
        const char *o = strstr(p, "{{");
        if (!o) {
            sb_add(&b, p, strlen(p));
            break;
        }
        sb_add(&b, p, (size_t)(o - p));
        const char *c = strstr(o + 2, "}}");
        if (!c) {
            free(b.p);
            return qe_err_set(err, QE_EFORMAT, "template: '{{' at offset %zu has no closing '}}'",
                              (size_t)(o - tpl));
        }
        const char *s = o + 2, *e = c;
        while (s < e && *s == ' ')
            s++;
        while (e > s && e[-1] == ' ')
            e--;
        const char *bar = memchr(s, '|', (size_t)(e - s));
        size_t pl = bar ? (size_t)(bar - s) : (size_t)(e - s);
        char path[256];
        if (pl == 0 || pl >= sizeof path) {
            free(b.p);
            return qe_err_set(err, QE_EFORMAT, "template: empty or too long field name at "
                              "offset %zu", (size_t)(o - tpl));
        }
        memcpy(path, s, pl);
        path[pl] = '\0';
        /* validate pipes */
        for (const char *q = bar; q && q < e;) {
            const char *pn = q + 1, *nb = memchr(pn, '|', (size_t)(e - pn));
            const char *pe = nb ? nb : e;
            const char *colon = memchr(pn, ':', (size_t)(pe - pn));
            size_t nl = colon ? (size_t)(colon - pn) : (size_t)(pe - pn);
            if (!pipe_known(pn, nl)) {
                free(b.p);
                return qe_err_set(err, QE_EFORMAT, "template: unknown pipe '%.*s' at offset %zu "
                                  "(known: lower upper capitalize strip lstrip rstrip_period "
                                  "last_word but_last_word before:X after:X map:k=v;.. dec "
                                  "hellaswag)", (int)nl, pn, (size_t)(pn - tpl));
            }
            q = nb;
        }
        if (!check_only) {
            char *v = NULL;
            for (int i = 0; i < nx && !v; i++)
                if (!strcmp(xn[i], path))
                    v = strdup(xv[i] ? xv[i] : "");
            if (!v) {
                const cJSON *j = doc ? qe_doc_get(doc, path) : NULL;
                if (!j) {
                    free(b.p);
                    return qe_err_set(err, QE_ENOTFOUND, "template: field '%s' not found in "
                                      "document %d", path,
                                      doc ? (int)cJSON_GetNumberValue(
                                                cJSON_GetObjectItem(doc, "_index"))
                                          : -1);
                }
                v = value_text(j);
            }
            for (const char *q = bar; v && q && q < e;) {
                const char *pn = q + 1, *nb = memchr(pn, '|', (size_t)(e - pn));
                const char *pe = nb ? nb : e;
                v = apply_pipe(v, pn, (size_t)(pe - pn));
                q = nb;
            }
            if (!v) {
                free(b.p);
                return qe_err_set(err, QE_ENOMEM, "template: out of memory");
            }
            sb_add(&b, v, strlen(v));
            free(v);
        }
        p = c + 2;
    }
    if (b.oom) {
        free(b.p);
        return qe_err_set(err, QE_ENOMEM, "template: out of memory");
    }
    if (check_only)
        free(b.p);
    else
        *out = b.p;
    return 0;
}

int qe_template_render(const char *tpl, const cJSON *doc, const char *const *xn,
                       const char *const *xv, int nx, char **out, qe_err *err)
{
    return render(tpl, doc, xn, xv, nx, false, out, err);
}

int qe_template_check(const char *tpl, qe_err *err)
{
    return render(tpl, NULL, NULL, NULL, 0, true, NULL, err);
}
