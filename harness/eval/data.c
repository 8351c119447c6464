/*
 * data.c: reading task data files into JSON documents (jsonl, json, tsv,
 * csv, txt; .gz through a child `gzip -dc`; globs), dotted-path access,
 * and prompt templates (SHA-256 comes from harness/util/sha256).  See task.h for the contracts.
 */
#include "task.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* -------------------------------------------------------- file reading */

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Decompress a .gz file through `gzip -dc` (zlib is not a dependency). */
static int read_gz(const char *path, char **out, size_t *out_n, qe_err *err)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return qe_err_set(err, QE_EIO, "%s: pipe: %s", path, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return qe_err_set(err, QE_EEXEC, "%s: fork: %s", path, strerror(errno));
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execlp("gzip", "gzip", "-dc", "--", path, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    int rc = buf ? 0 : qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
    while (rc == 0) {
        if (n == cap) {
            char *nb = cap < ((size_t)1 << 32) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!nb) {
                rc = qe_err_set(err, QE_ENOMEM, "%s: decompressed data too large", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(pfd[0], buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = qe_err_set(err, QE_EIO, "%s: read from gzip: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(pfd[0]);
    int st = 0;
    if (rc)
        kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        rc = qe_err_set(err, WIFEXITED(st) && WEXITSTATUS(st) == 127 ? QE_EEXEC : QE_EFORMAT,
                        "%s: `gzip -dc` failed (exit %d): not a valid gzip file, or gzip "
                        "is missing", path, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *out_n = n;
    return 0;
}

static int read_any(const char *path, char **out, size_t *n, qe_err *err)
{
    if (ends_with(path, ".gz"))
        return read_gz(path, out, n, err);
    return qe_read_file(path, out, n, err);
}

/* ----------------------------------------------------------- parsers */

static int add_doc(cJSON *arr, cJSON *doc, const char *file_stem, qe_err *err)
{
    if (!doc)
        return qe_err_set(err, QE_ENOMEM, "out of memory building documents");
    if (file_stem)
        cJSON_AddStringToObject(doc, "_file", file_stem);
    cJSON_AddItemToArray(arr, doc);
    return 0;
}

static int parse_jsonl(const char *path, char *buf, size_t n, cJSON *arr, const char *stem,
                       qe_err *err)
{
    size_t line = 0;
    char *p = buf, *end = buf + n;
    while (p < end) {
        line++;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        char *q = p;
        while (q < le && isspace((unsigned char)*q))
            q++;
        if (q < le) {
            const char *ep = NULL;
            cJSON *doc = cJSON_ParseWithLengthOpts(q, (size_t)(le - q), &ep, 0);
            if (!doc)
                return qe_err_set(err, QE_EJSON, "%s:%zu: malformed JSON at column %zu", path,
                                  line, ep ? (size_t)(ep - p) + 1 : 1);
            if (!cJSON_IsObject(doc)) {
                cJSON_Delete(doc);
                return qe_err_set(err, QE_EJSON, "%s:%zu: expected a JSON object per line",
                                  path, line);
            }
            int rc = add_doc(arr, doc, stem, err);
            if (rc)
                return rc;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static int parse_json(const char *path, const char *buf, size_t n, cJSON *arr, const char *stem,
                      qe_err *err)
{
    const char *ep = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &ep, 0);
    if (!root)
        return qe_err_set(err, QE_EJSON, "%s: malformed JSON at byte %zu", path,
                          ep ? (size_t)(ep - buf) : 0);
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        return qe_err_set(err, QE_EJSON, "%s: expected a JSON array of objects", path);
    }
    int i = 0, rc = 0;
    cJSON *it;
    while ((it = cJSON_DetachItemFromArray(root, 0))) {
        if (!cJSON_IsObject(it)) {
            cJSON_Delete(it);
            rc = qe_err_set(err, QE_EJSON, "%s: [%d]: expected an object", path, i);
            break;
        }
        if ((rc = add_doc(arr, it, stem, err)))
            break;
        i++;
    }
    cJSON_Delete(root);
    return rc;
}

/* One field of a TSV (no quoting) or CSV (RFC 4180 quotes) row.  Advances
 * *pp past the separator; returns malloc'd text; *eol set at row end. */
static char *next_field(char **pp, char *end, char sep, bool csv, bool *eol, bool *bad)
{
    char *p = *pp;
    size_t cap = 64, n = 0;
    char *o = malloc(cap);
    if (!o)
        return NULL;
    bool quoted = csv && p < end && *p == '"';
    if (quoted)
        p++;
    *eol = false;
    for (;;) {
        if (p >= end) {
            if (quoted)
                *bad = true;
            *eol = true;
            break;
        }
        char c = *p;
        if (quoted) {
            if (c == '"') {
                if (p + 1 < end && p[1] == '"') {
                    p += 2;
                    c = '"';
                } else {
                    quoted = false;
                    p++;
                    continue;
                }
            } else {
                p++;
            }
        } else {
            if (c == sep) {
                p++;
                break;
            }
            if (c == '\n' || c == '\r') {
                if (c == '\r' && p + 1 < end && p[1] == '\n')
                    p++;
                p++;
                *eol = true;
                break;
            }
            p++;
        }
        if (n + 2 > cap) {
            char *no = realloc(o, cap * 2);
            if (!no) {
                free(o);
                return NULL;
            }
            o = no;
            cap *= 2;
        }
        o[n++] = c;
    }
    o[n] = '\0';
    *pp = p;
    return o;
}

static int parse_table(const char *path, char *buf, size_t n, bool csv, const qe_data_opts *o,
                       cJSON *arr, const char *stem, qe_err *err)
{
    char *p = buf, *end = buf + n;
    char sep = csv ? ',' : '\t';
    char **names = NULL;
    int n_names = 0, rc = 0;
    bool own_names = false;
    if (o && o->n_columns > 0) {
        names = o->columns;
        n_names = o->n_columns;
    }
    bool skip_header = o ? o->header : csv;
    size_t row = 0;
    while (p < end && rc == 0) {
        row++;
        char *fields[64];
        int nf = 0;
        bool eol = false, bad = false;
        while (!eol) {
            char *f = next_field(&p, end, sep, csv, &eol, &bad);
            if (!f) {
                rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
                break;
            }
            if (nf == 64) {
                free(f);
                bad = true;
                continue;
            }
            fields[nf++] = f;
        }
        if (rc == 0 && bad)
            rc = qe_err_set(err, QE_EFORMAT, "%s: row %zu: unterminated quote or more than 64 "
                            "fields", path, row);
        bool blank = nf == 1 && fields[0][0] == '\0';
        if (rc == 0 && row == 1 && skip_header) {
            if (!names) {
                names = calloc((size_t)nf, sizeof *names);
                if (!names)
                    rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory", path);
                for (int i = 0; rc == 0 && i < nf; i++) {
                    names[i] = fields[i];
                    fields[i] = NULL;
                }
                n_names = nf;
                own_names = true;
            }
        } else if (rc == 0 && !blank) {
            if (!names)
                rc = qe_err_set(err, QE_EFORMAT, "%s: no column names: give data.columns for a "
                                "file without a header row", path);
            else if (nf != n_names)
                rc = qe_err_set(err, QE_EFORMAT, "%s: row %zu: expected %d fields, got %d", path,
                                row, n_names, nf);
            else {
                cJSON *doc = cJSON_CreateObject();
                for (int i = 0; doc && i < nf; i++)
                    cJSON_AddStringToObject(doc, names[i], fields[i]);
                rc = add_doc(arr, doc, stem, err);
            }
        }
        for (int i = 0; i < nf; i++)
            free(fields[i]);
    }
    if (own_names) {
        for (int i = 0; i < n_names; i++)
            free(names[i]);
        free(names);
    }
    return rc;
}

static int parse_txt(char *buf, size_t n, const qe_data_opts *o, cJSON *arr, const char *stem,
                     qe_err *err)
{
    int per = o ? o->record_lines : 0;
    if (per == 0) {
        cJSON *doc = cJSON_CreateObject();
        if (doc)
            cJSON_AddStringToObject(doc, "text", buf);
        return add_doc(arr, doc, stem, err);
    }
    char *p = buf, *end = buf + n;
    cJSON *doc = NULL;
    int k = 0;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        char save = *le;
        *le = '\0';
        if (per < 0) {
            if (le > p) {
                cJSON *d = cJSON_CreateObject();
                if (d)
                    cJSON_AddStringToObject(d, "text", p);
                int rc = add_doc(arr, d, stem, err);
                if (rc) {
                    *le = save;
                    return rc;
                }
            }
        } else {
            if (!doc && !(doc = cJSON_CreateObject())) {
                *le = save;
                return qe_err_set(err, QE_ENOMEM, "out of memory");
            }
            char key[16];
            snprintf(key, sizeof key, "line%d", k);
            cJSON_AddStringToObject(doc, key, p);
            if (++k == per) {
                int rc = add_doc(arr, doc, stem, err);
                doc = NULL;
                k = 0;
                if (rc) {
                    *le = save;
                    return rc;
                }
            }
        }
        *le = save;
        p = nl ? nl + 1 : end;
    }
    if (doc) {
        cJSON_Delete(doc);
        return qe_err_set(err, QE_EFORMAT, "txt: file ends inside a record of %d lines (got %d)",
                          per, k);
    }
    return 0;
}

static int read_one(const char *path, const char *format, const qe_data_opts *o, cJSON *arr,
                    const char *stem, qe_err *err)
{
    char *buf;
    size_t n;
    int rc = read_any(path, &buf, &n, err);
    if (rc)
        return rc;
    if (!strcmp(format, "jsonl"))
        rc = parse_jsonl(path, buf, n, arr, stem, err);
    else if (!strcmp(format, "json"))
        rc = parse_json(path, buf, n, arr, stem, err);
    else if (!strcmp(format, "tsv") || !strcmp(format, "csv"))
        rc = parse_table(path, buf, n, format[0] == 'c', o, arr, stem, err);
    else if (!strcmp(format, "txt"))
        rc = parse_txt(buf, n, o, arr, stem, err);
    else
        rc = qe_err_set(err, QE_EINVAL, "%s: unknown data format '%s' (expected jsonl, json, "
                        "tsv, csv or txt)", path, format);
    if (rc && !strncmp(format, "txt", 3) && err && !strstr(err->msg, path))
        qe_err_prefix(err, "%s", path);
    free(buf);
    return rc;
}

static int explode_docs(cJSON **arrp, const char *field, const char *path, qe_err *err)
{
    cJSON *out = cJSON_CreateArray();
    if (!out)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    cJSON *doc;
    int i = 0;
    while ((doc = cJSON_DetachItemFromArray(*arrp, 0))) {
        cJSON *list = cJSON_DetachItemFromObject(doc, field);
        if (!cJSON_IsArray(list)) {
            cJSON_Delete(list);
            cJSON_Delete(doc);
            cJSON_Delete(out);
            return qe_err_set(err, QE_EFORMAT, "%s: doc %d: field '%s' to explode is not an "
                              "array", path, i, field);
        }
        cJSON *el;
        while ((el = cJSON_DetachItemFromArray(list, 0))) {
            if (!cJSON_IsObject(el)) {
                cJSON_Delete(el);
                continue;
            }
            cJSON_AddItemToObject(el, "parent", cJSON_Duplicate(doc, 1));
            cJSON_AddItemToArray(out, el);
        }
        cJSON_Delete(list);
        cJSON_Delete(doc);
        i++;
    }
    cJSON_Delete(*arrp);
    *arrp = out;
    return 0;
}

static int attach_labels(cJSON *arr, const char *labels_path, qe_err *err)
{
    char *buf;
    size_t n;
    int rc = qe_read_file(labels_path, &buf, &n, err);
    if (rc)
        return rc;
    int n_docs = cJSON_GetArraySize(arr), k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, "\r\n", &save); tok; tok = strtok_r(NULL, "\r\n", &save)) {
        if (k < n_docs)
            cJSON_AddStringToObject(cJSON_GetArrayItem(arr, k), "label", tok);
        k++;
    }
    free(buf);
    if (k != n_docs)
        return qe_err_set(err, QE_EFORMAT, "%s: %d labels for %d documents", labels_path, k,
                          n_docs);
    return 0;
}

int qe_docs_read(const char *path, const char *format, const qe_data_opts *o, qe_docs *docs,
                 qe_err *err)
{
    memset(docs, 0, sizeof *docs);
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    int rc = 0;
    if (strchr(path, '*')) {
        glob_t g;
        int gr = glob(path, 0, NULL, &g);
        if (gr != 0 || g.gl_pathc == 0) {
            if (gr == 0)
                globfree(&g);
            cJSON_Delete(arr);
            return qe_err_set(err, QE_ENOTFOUND, "%s: no file matches", path);
        }
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
            char stem[256];
            const char *b = strrchr(g.gl_pathv[i], '/');
            qe_strlcpy(stem, b ? b + 1 : g.gl_pathv[i], sizeof stem);
            char *dot = strchr(stem, '.');
            if (dot)
                *dot = '\0';
            rc = read_one(g.gl_pathv[i], format, o, arr, stem, err);
        }
        globfree(&g);
    } else {
        rc = read_one(path, format, o, arr, NULL, err);
    }
    if (rc == 0 && o && o->explode && *o->explode)
        rc = explode_docs(&arr, o->explode, path, err);
    if (rc == 0 && o && o->labels_path && *o->labels_path)
        rc = attach_labels(arr, o->labels_path, err);
    if (rc) {
        cJSON_Delete(arr);
        return rc;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    docs->items = calloc(n ? n : 1, sizeof *docs->items);
    if (!docs->items) {
        cJSON_Delete(arr);
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    }
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        cJSON_AddNumberToObject(it, "_index", (double)i);
        docs->items[i++] = it;
    }
    docs->root = arr;
    docs->n = n;
    return 0;
}

void qe_docs_free(qe_docs *docs)
{
    if (!docs)
        return;
    cJSON_Delete(docs->root);
    free(docs->items);
    memset(docs, 0, sizeof *docs);
}

const cJSON *qe_doc_get(const cJSON *doc, const char *path)
{
    const cJSON *cur = doc;
    char key[128];
    while (cur && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        if (cJSON_IsArray(cur)) {
            char *e;
            long idx = strtol(key, &e, 10);
            if (*e || e == key)
                return NULL;
            if (idx < 0)
                idx += cJSON_GetArraySize(cur);
            cur = idx >= 0 ? cJSON_GetArrayItem(cur, (int)idx) : NULL;
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(cur, key);
        }
        path += n;
        if (*path == '.')
            path++;
    }
    return cur;
}

const char *qe_doc_str(const cJSON *doc, const char *path)
{
    const cJSON *v = qe_doc_get(doc, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
