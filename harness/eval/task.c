/*
 * task.c: loading and validating task specs and suites (schema in
 * datasets/README.md).  Every unknown key, filter function or metric is an
 * error naming "<file>: <json.path>"; regexes and templates are checked at
 * load, so a spec that loads can run.
 */
#include "task.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *qe_datasets_dir(void)
{
    const char *d = getenv("QEVAL_DATASETS");
    return d && *d ? d : "datasets";
}

const char *qe_output_type_name(int t)
{
    switch (t) {
    case QE_OUT_PERPLEXITY: return "perplexity";
    case QE_OUT_MULTIPLE_CHOICE: return "multiple_choice";
    case QE_OUT_GENERATE: return "generate";
    case QE_OUT_CODE_EXEC: return "code_exec";
    case QE_OUT_EXACT_OUTPUT: return "exact_output";
    default: return "?";
    }
}

/* Check that obj has only the allowed keys. */
static int check_keys(const cJSON *obj, const char *const *allowed, const char *file,
                      const char *where, qe_err *err)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(*a, it->string);
        if (!ok) {
            char list[300] = "";
            for (const char *const *a = allowed; *a; a++) {
                strncat(list, *a, sizeof list - strlen(list) - 1);
                if (a[1])
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return qe_err_set(err, QE_EJSON, "%s: %s%s%s: unknown key (allowed: %s)", file,
                              where, *where ? "." : "", it->string, list);
        }
    }
    return 0;
}

static int get_str(const cJSON *obj, const char *key, bool required, char **out,
                   const char *file, const char *where, qe_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        if (required)
            return qe_err_set(err, QE_EJSON, "%s: %s%s%s: required key missing", file, where,
                              *where ? "." : "", key);
        return 0;
    }
    if (!cJSON_IsString(v))
        return qe_err_set(err, QE_EJSON, "%s: %s%s%s: expected a string", file, where,
                          *where ? "." : "", key);
    *out = strdup(v->valuestring);
    return *out ? 0 : qe_err_set(err, QE_ENOMEM, "out of memory");
}

static int get_fixed(const cJSON *obj, const char *key, bool required, char *dst, size_t cap,
                     const char *file, const char *where, qe_err *err)
{
    char *s = NULL;
    int rc = get_str(obj, key, required, &s, file, where, err);
    if (rc || !s)
        return rc;
    if (strlen(s) >= cap) {
        free(s);
        return qe_err_set(err, QE_EJSON, "%s: %s.%s: longer than %zu bytes", file, where, key,
                          cap - 1);
    }
    strcpy(dst, s);
    free(s);
    return 0;
}

static int get_num(const cJSON *obj, const char *key, double lo, double hi, double *out,
                   const char *file, const char *where, qe_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi)
        return qe_err_set(err, QE_EJSON, "%s: %s%s%s: expected a number in [%g, %g]", file,
                          where, *where ? "." : "", key, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *obj, const char *key, bool *out, const char *file,
                    const char *where, qe_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return qe_err_set(err, QE_EJSON, "%s: %s.%s: expected true or false", file, where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_str_array(const cJSON *obj, const char *key, char ***out, int *n,
                         const char *file, const char *where, qe_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsArray(v))
        return qe_err_set(err, QE_EJSON, "%s: %s.%s: expected an array of strings", file, where,
                          key);
    int k = cJSON_GetArraySize(v);
    char **a = calloc((size_t)(k ? k : 1), sizeof *a);
    if (!a)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    *out = a;
    *n = 0;
    for (int i = 0; i < k; i++) {
        const cJSON *s = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsString(s))
            return qe_err_set(err, QE_EJSON, "%s: %s.%s[%d]: expected a string", file, where,
                              key, i);
        if (!(a[i] = strdup(s->valuestring)))
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        (*n)++;
    }
    return 0;
}

static int check_tpl(const char *tpl, const char *file, const char *where, qe_err *err)
{
    if (!tpl)
        return 0;
    int rc = qe_template_check(tpl, err);
    if (rc)
        qe_err_prefix(err, "%s: %s", file, where);
    return rc;
}

static int parse_filters(qe_task *t, const cJSON *fs, const char *file, qe_err *err)
{
    if (!cJSON_IsObject(fs))
        return qe_err_set(err, QE_EJSON, "%s: filters: expected an object of named pipelines",
                          file);
    int n = cJSON_GetArraySize(fs);
    t->filters = calloc((size_t)(n ? n : 1), sizeof *t->filters);
    if (!t->filters)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    const cJSON *f;
    cJSON_ArrayForEach(f, fs)
    {
        qe_filter *flt = &t->filters[t->n_filters++];
        if (strlen(f->string) >= sizeof flt->name)
            return qe_err_set(err, QE_EJSON, "%s: filters.%s: name too long", file, f->string);
        strcpy(flt->name, f->string);
        if (!cJSON_IsArray(f))
            return qe_err_set(err, QE_EJSON, "%s: filters.%s: expected an array of steps", file,
                              f->string);
        int ns = cJSON_GetArraySize(f);
        flt->steps = calloc((size_t)(ns ? ns : 1), sizeof *flt->steps);
        if (!flt->steps)
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        for (int i = 0; i < ns; i++) {
            const cJSON *s = cJSON_GetArrayItem(f, i);
            char where[128];
            snprintf(where, sizeof where, "filters.%s[%d]", f->string, i);
            qe_filter_step *st = &flt->steps[flt->n_steps++];
            static const char *const keys[] = {"regex", "group_select", "fallback", "function",
                                               NULL};
            int rc = cJSON_IsObject(s) ? check_keys(s, keys, file, where, err)
                                       : qe_err_set(err, QE_EJSON, "%s: %s: expected an object",
                                                    file, where);
            if (rc)
                return rc;
            char *fn = NULL;
            if ((rc = get_str(s, "regex", false, &st->pattern, file, where, err)) ||
                (rc = get_str(s, "fallback", false, &st->fallback, file, where, err)) ||
                (rc = get_str(s, "function", false, &fn, file, where, err)))
                return rc;
            double gs = 0;
            if ((rc = get_num(s, "group_select", -100, 100, &gs, file, where, err))) {
                free(fn);
                return rc;
            }
            st->group_select = (int)gs;
            if (st->pattern && fn) {
                free(fn);
                return qe_err_set(err, QE_EJSON, "%s: %s: give either regex or function, not "
                                  "both", file, where);
            }
            if (st->pattern) {
                st->kind = QE_FILTER_REGEX;
                char w2[160];
                snprintf(w2, sizeof w2, "%s: %s.regex", file, where);
                if ((rc = qe_regex_compile(st->pattern, w2, &st->re, err)))
                    return rc;
            } else if (fn) {
                static const struct { const char *n; int k; } fns[] = {
                    {"take_first", QE_FILTER_TAKE_FIRST}, {"remove_whitespace", QE_FILTER_REMOVE_WHITESPACE},
                    {"strip", QE_FILTER_STRIP}, {"lower", QE_FILTER_LOWER},
                    {"number", QE_FILTER_NUMBER}, {"until", QE_FILTER_UNTIL}};
                for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++)
                    if (!strcmp(fns[k].n, fn))
                        st->kind = fns[k].k;
                if (!st->kind) {
                    rc = qe_err_set(err, QE_EJSON, "%s: %s.function: unknown filter '%s' "
                                    "(known: take_first, remove_whitespace, strip, lower, "
                                    "number, until)", file, where, fn);
                    free(fn);
                    return rc;
                }
                free(fn);
            } else {
                return qe_err_set(err, QE_EJSON, "%s: %s: expected \"regex\" or \"function\"",
                                  file, where);
            }
        }
    }
    return 0;
}

static int add_metric(qe_task *t, const char *name, const char *base, int filter, int agg,
                      bool acc)
{
    qe_metric_def *nm = realloc(t->metrics, (size_t)(t->n_metrics + 1) * sizeof *nm);
    if (!nm)
        return QE_ENOMEM;
    t->metrics = nm;
    qe_metric_def *m = &nm[t->n_metrics++];
    memset(m, 0, sizeof *m);
    qe_strlcpy(m->name, name, sizeof m->name);
    qe_strlcpy(m->base, base, sizeof m->base);
    m->filter = filter;
    m->agg = agg;
    m->is_accuracy = acc;
    return 0;
}

static int parse_metrics(qe_task *t, const cJSON *ms, const char *file, qe_err *err)
{
    if (!cJSON_IsArray(ms))
        return qe_err_set(err, QE_EJSON, "%s: metrics: expected an array of names", file);
    int n = cJSON_GetArraySize(ms);
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(ms, i);
        if (!cJSON_IsString(m))
            return qe_err_set(err, QE_EJSON, "%s: metrics[%d]: expected a string", file, i);
        const char *s = m->valuestring;
        int ot = t->output_type, rc = 0;
        bool ok = false;
        if (ot == QE_OUT_PERPLEXITY) {
            static const struct { const char *n; int a; } pm[] = {
                {"perplexity", QE_AGG_PPL_TOKEN}, {"word_perplexity", QE_AGG_PPL_WORD},
                {"byte_perplexity", QE_AGG_PPL_BYTE}, {"bits_per_byte", QE_AGG_BPB}};
            for (size_t k = 0; k < 4 && !ok; k++)
                if (!strcmp(pm[k].n, s)) {
                    ok = true;
                    rc = add_metric(t, s, s, -1, pm[k].a, false);
                }
        } else if (ot == QE_OUT_MULTIPLE_CHOICE) {
            if (!strcmp(s, "acc") || !strcmp(s, "acc_norm") || !strcmp(s, "acc_norm_chars")) {
                ok = true;
                rc = add_metric(t, s, s, -1, QE_AGG_MEAN, true);
            }
        } else if (ot == QE_OUT_GENERATE || ot == QE_OUT_EXACT_OUTPUT) {
            if (!strncmp(s, "exact_match", 11) && (s[11] == '\0' || s[11] == ',')) {
                ok = true;
                if (s[11] == ',') { /* one named filter */
                    int f = -1;
                    for (int k = 0; k < t->n_filters; k++)
                        if (!strcmp(t->filters[k].name, s + 12))
                            f = k;
                    if (f < 0)
                        return qe_err_set(err, QE_EJSON, "%s: metrics[%d]: no filter named '%s'",
                                          file, i, s + 12);
                    rc = add_metric(t, s, "exact_match", f, QE_AGG_MEAN, true);
                } else if (t->n_filters == 0) {
                    rc = add_metric(t, s, "exact_match", -1, QE_AGG_MEAN, true);
                } else {
                    for (int k = 0; k < t->n_filters && !rc; k++) {
                        char nm[64];
                        snprintf(nm, sizeof nm, "exact_match,%s", t->filters[k].name);
                        rc = add_metric(t, nm, "exact_match", k, QE_AGG_MEAN, true);
                    }
                }
            }
        } else if (ot == QE_OUT_CODE_EXEC) {
            if (!strcmp(s, "pass@1")) {
                ok = true;
                rc = add_metric(t, s, s, t->n_filters ? 0 : -1, QE_AGG_MEAN, true);
            }
        }
        if (rc)
            return qe_err_set(err, QE_ENOMEM, "out of memory");
        if (!ok)
            return qe_err_set(err, QE_EJSON, "%s: metrics[%d]: unknown metric '%s' for output_type "
                              "%s (perplexity: perplexity word_perplexity byte_perplexity "
                              "bits_per_byte; multiple_choice: acc acc_norm acc_norm_chars; "
                              "generate/exact_output: exact_match[,FILTER]; code_exec: pass@1)",
                              file, i, s, qe_output_type_name(ot));
    }
    if (t->n_metrics == 0)
        return qe_err_set(err, QE_EJSON, "%s: metrics: at least one metric is required", file);
    return 0;
}

static int parse_spec(qe_task *t, const cJSON *j, const char *file, const char *data_dir,
                      qe_err *err)
{
    static const char *const top[] = {
        "name", "version", "family", "language", "description", "data", "output_type", "prompt",
        "target", "label", "target_delimiter", "fewshot_delimiter", "choices", "fewshot", "generation",
        "filters", "metrics", "exact_match", "program", "code_timeout_s", "perplexity", "chat",
        NULL};
    int rc;
    if (!cJSON_IsObject(j))
        return qe_err_set(err, QE_EJSON, "%s: expected a JSON object", file);
    if ((rc = check_keys(j, top, file, "", err)))
        return rc;
    if ((rc = get_fixed(j, "name", true, t->name, sizeof t->name, file, "", err)) ||
        (rc = get_fixed(j, "family", true, t->family, sizeof t->family, file, "", err)) ||
        (rc = get_fixed(j, "language", false, t->language, sizeof t->language, file, "", err)) ||
        (rc = get_str(j, "description", false, &t->description, file, "", err)) ||
        (rc = get_bool(j, "chat", &t->chat, file, "", err)))
        return rc;
    static const char *const fams[] = {"text", "math", "code", "multilingual", "general", NULL};
    bool fam_ok = false;
    for (const char *const *f = fams; *f; f++)
        fam_ok = fam_ok || !strcmp(*f, t->family);
    if (!fam_ok)
        return qe_err_set(err, QE_EJSON, "%s: family: '%s' is not one of text, math, code, "
                          "multilingual, general", file, t->family);
    double ver = 1;
    if ((rc = get_num(j, "version", 0, 1e6, &ver, file, "", err)))
        return rc;
    t->version = (int)ver;

    /* data */
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsObject(d))
        return qe_err_set(err, QE_EJSON, "%s: data: required object missing", file);
    static const char *const dkeys[] = {"path", "format", "sha256", "split", "columns", "header",
                                        "record_lines", "explode", "labels", NULL};
    if ((rc = check_keys(d, dkeys, file, "data", err)) ||
        (rc = get_fixed(d, "path", true, t->data_rel, sizeof t->data_rel, file, "data", err)) ||
        (rc = get_fixed(d, "format", true, t->format, sizeof t->format, file, "data", err)) ||
        (rc = get_fixed(d, "sha256", false, t->sha256, sizeof t->sha256, file, "data", err)) ||
        (rc = get_fixed(d, "split", false, t->split, sizeof t->split, file, "data", err)) ||
        (rc = get_str_array(d, "columns", &t->dopts.columns, &t->dopts.n_columns, file, "data",
                            err)) ||
        (rc = get_bool(d, "header", &t->dopts.header, file, "data", err)) ||
        (rc = get_str(d, "explode", false, &t->explode, file, "data", err)) ||
        (rc = get_str(d, "labels", false, &t->labels_rel, file, "data", err)))
        return rc;
    if (!cJSON_GetObjectItemCaseSensitive(d, "header"))
        t->dopts.header = !strcmp(t->format, "csv") && t->dopts.n_columns == 0;
    double rl = 0;
    if ((rc = get_num(d, "record_lines", -1, 64, &rl, file, "data", err)))
        return rc;
    t->dopts.record_lines = (int)rl;
    static const char *const fmts[] = {"jsonl", "json", "tsv", "csv", "txt", NULL};
    bool fmt_ok = false;
    for (const char *const *f = fmts; *f; f++)
        fmt_ok = fmt_ok || !strcmp(*f, t->format);
    if (!fmt_ok)
        return qe_err_set(err, QE_EJSON, "%s: data.format: '%s' is not one of jsonl, json, tsv, "
                          "csv, txt (a .gz path is decompressed)", file, t->format);
    if (t->sha256[0] && strlen(t->sha256) != 64)
        return qe_err_set(err, QE_EJSON, "%s: data.sha256: expected 64 hex digits", file);
    if (strstr(t->data_rel, ".."))
        return qe_err_set(err, QE_EJSON, "%s: data.path: '..' is not allowed (paths are relative "
                          "to the data directory)", file);
    snprintf(t->data_path, sizeof t->data_path, "%s/%s", data_dir, t->data_rel);
    if (t->labels_rel)
        snprintf(t->labels_path, sizeof t->labels_path, "%s/%s", data_dir, t->labels_rel);
    t->dopts.explode = t->explode;
    t->dopts.labels_path = t->labels_rel ? t->labels_path : NULL;

    /* output type */
    char ot[32] = "";
    if ((rc = get_fixed(j, "output_type", true, ot, sizeof ot, file, "", err)))
        return rc;
    for (int k = QE_OUT_PERPLEXITY; k <= QE_OUT_EXACT_OUTPUT; k++)
        if (!strcmp(ot, qe_output_type_name(k)))
            t->output_type = k;
    if (!t->output_type)
        return qe_err_set(err, QE_EJSON, "%s: output_type: '%s' is not one of perplexity, "
                          "multiple_choice, generate, code_exec, exact_output", file, ot);

    if ((rc = get_str(j, "prompt", t->output_type != QE_OUT_PERPLEXITY, &t->prompt, file, "",
                      err)) ||
        (rc = get_str(j, "target", false, &t->target, file, "", err)) ||
        (rc = get_str(j, "label", false, &t->label, file, "", err)) ||
        (rc = get_str(j, "target_delimiter", false, &t->target_delimiter, file, "", err)) ||
        (rc = get_str(j, "fewshot_delimiter", false, &t->fewshot_delimiter, file, "", err)) ||
        (rc = get_str(j, "program", false, &t->program, file, "", err)))
        return rc;
    if (!t->prompt && !(t->prompt = strdup("{{text}}")))
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    if (!t->target_delimiter && !(t->target_delimiter = strdup(" ")))
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    if (!t->fewshot_delimiter && !(t->fewshot_delimiter = strdup("\n\n")))
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    if ((rc = check_tpl(t->prompt, file, "prompt", err)) ||
        (rc = check_tpl(t->target, file, "target", err)) ||
        (rc = check_tpl(t->label, file, "label", err)) ||
        (rc = check_tpl(t->program, file, "program", err)))
        return rc;
    if (t->output_type == QE_OUT_CODE_EXEC && !t->program)
        return qe_err_set(err, QE_EJSON, "%s: program: required for code_exec (a template using "
                          "{{completion}})", file);

    /* choices */
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    if (t->output_type == QE_OUT_MULTIPLE_CHOICE && !ch)
        return qe_err_set(err, QE_EJSON, "%s: choices: required for multiple_choice", file);
    if (ch && cJSON_IsArray(ch)) {
        if ((rc = get_str_array(j, "choices", &t->choice_tpl, &t->n_choice_tpl, file, "", err)))
            return rc;
        for (int i = 0; i < t->n_choice_tpl; i++) {
            char w[32];
            snprintf(w, sizeof w, "choices[%d]", i);
            if ((rc = check_tpl(t->choice_tpl[i], file, w, err)))
                return rc;
        }
        if (t->n_choice_tpl < 2)
            return qe_err_set(err, QE_EJSON, "%s: choices: need at least 2", file);
    } else if (ch && cJSON_IsObject(ch)) {
        static const char *const ckeys[] = {"field", "text", "key", "correct", "as_context",
                                            "templates", NULL};
        bool has_tpl = cJSON_GetObjectItemCaseSensitive(ch, "templates") != NULL;
        if ((rc = check_keys(ch, ckeys, file, "choices", err)) ||
            (rc = get_str_array(ch, "templates", &t->choice_tpl, &t->n_choice_tpl, file,
                                "choices", err)) ||
            (rc = get_str(ch, "field", !has_tpl, &t->choices_field, file, "choices", err)) ||
            (rc = get_str(ch, "text", false, &t->choice_text, file, "choices", err)) ||
            (rc = get_str(ch, "key", false, &t->choice_key, file, "choices", err)) ||
            (rc = get_str(ch, "correct", false, &t->choice_correct, file, "choices", err)) ||
            (rc = get_bool(ch, "as_context", &t->choices_are_contexts, file, "choices", err)))
            return rc;
    } else if (ch) {
        return qe_err_set(err, QE_EJSON, "%s: choices: expected an array of templates or an "
                          "object {field, text, key, correct, as_context}", file);
    }

    if (t->output_type != QE_OUT_PERPLEXITY && t->output_type != QE_OUT_CODE_EXEC && !t->target &&
        !t->label && !t->choice_correct)
        return qe_err_set(err, QE_EJSON, "%s: target: required for output_type %s", file, ot);

    /* few-shot */
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(j, "fewshot");
    t->fewshot_seed = 1234;
    if (fs) {
        static const char *const fkeys[] = {"n", "split", "seed", "sampler", NULL};
        double n = 0, seed = 1234;
        char *split = NULL;
        if (!cJSON_IsObject(fs))
            return qe_err_set(err, QE_EJSON, "%s: fewshot: expected an object", file);
        if ((rc = check_keys(fs, fkeys, file, "fewshot", err)) ||
            (rc = get_num(fs, "n", 0, 64, &n, file, "fewshot", err)) ||
            (rc = get_num(fs, "seed", 0, 4294967295.0, &seed, file, "fewshot", err)) ||
            (rc = get_str(fs, "sampler", false, &t->fewshot_sampler, file, "fewshot", err)) ||
            (rc = get_str(fs, "split", false, &split, file, "fewshot", err)))
            return rc;
        free(split); /* documented: examples come from the task's own data, never the doc itself */
        t->fewshot_n = (int)n;
        t->fewshot_seed = (uint64_t)seed;
        if (t->fewshot_sampler && strcmp(t->fewshot_sampler, "random") &&
            strcmp(t->fewshot_sampler, "first_n"))
            return qe_err_set(err, QE_EJSON, "%s: fewshot.sampler: '%s' is not random or first_n",
                              file, t->fewshot_sampler);
    }

    /* generation */
    t->max_tokens = 256;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "generation");
    if (g) {
        static const char *const gkeys[] = {"max_tokens", "until", NULL};
        double mt = 256;
        if (!cJSON_IsObject(g))
            return qe_err_set(err, QE_EJSON, "%s: generation: expected an object", file);
        if ((rc = check_keys(g, gkeys, file, "generation", err)) ||
            (rc = get_num(g, "max_tokens", 1, 65536, &mt, file, "generation", err)) ||
            (rc = get_str_array(g, "until", &t->until, &t->n_until, file, "generation", err)))
            return rc;
        t->max_tokens = (int)mt;
    }

    const cJSON *flt = cJSON_GetObjectItemCaseSensitive(j, "filters");
    if (flt && (rc = parse_filters(t, flt, file, err)))
        return rc;

    const cJSON *em = cJSON_GetObjectItemCaseSensitive(j, "exact_match");
    if (em) {
        static const char *const ekeys[] = {"ignore_case", "ignore_punctuation", "ignore_numbers",
                                            "regexes_to_ignore", NULL};
        if (!cJSON_IsObject(em))
            return qe_err_set(err, QE_EJSON, "%s: exact_match: expected an object", file);
        if ((rc = check_keys(em, ekeys, file, "exact_match", err)) ||
            (rc = get_bool(em, "ignore_case", &t->em.ignore_case, file, "exact_match", err)) ||
            (rc = get_bool(em, "ignore_punctuation", &t->em.ignore_punctuation, file,
                           "exact_match", err)) ||
            (rc = get_bool(em, "ignore_numbers", &t->em.ignore_numbers, file, "exact_match",
                           err)) ||
            (rc = get_str_array(em, "regexes_to_ignore", &t->em.ignore_pat, &t->em.n_ignore,
                                file, "exact_match", err)))
            return rc;
        if (t->em.n_ignore) {
            t->em.ignore_re = calloc((size_t)t->em.n_ignore, sizeof *t->em.ignore_re);
            if (!t->em.ignore_re)
                return qe_err_set(err, QE_ENOMEM, "out of memory");
            for (int i = 0; i < t->em.n_ignore; i++) {
                char w[160];
                snprintf(w, sizeof w, "%s: exact_match.regexes_to_ignore[%d]", file, i);
                if ((rc = qe_regex_compile(t->em.ignore_pat[i], w, &t->em.ignore_re[i], err)))
                    return rc;
            }
        }
    }

    double cto = 10;
    if ((rc = get_num(j, "code_timeout_s", 0.1, 600, &cto, file, "", err)))
        return rc;
    t->code_timeout_s = cto;

    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(j, "perplexity");
    if (pp) {
        static const char *const pkeys[] = {"convention", NULL};
        if (!cJSON_IsObject(pp))
            return qe_err_set(err, QE_EJSON, "%s: perplexity: expected an object", file);
        if ((rc = check_keys(pp, pkeys, file, "perplexity", err)) ||
            (rc = get_str(pp, "convention", false, &t->ppl_convention, file, "perplexity", err)))
            return rc;
        if (t->ppl_convention && strcmp(t->ppl_convention, "rolling"))
            return qe_err_set(err, QE_EJSON, "%s: perplexity.convention: '%s' unsupported (only "
                              "\"rolling\", lm-eval loglikelihood_rolling; llama.cpp's chunked "
                              "protocol is `qeval ppl`)", file, t->ppl_convention);
    }

    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "metrics");
    if (!ms)
        return qe_err_set(err, QE_EJSON, "%s: metrics: required key missing", file);
    return parse_metrics(t, ms, file, err);
}

qe_task *qe_task_load(const char *spec_path, const char *data_dir, qe_err *err)
{
    char *buf;
    size_t n;
    if (qe_read_file(spec_path, &buf, &n, err))
        return NULL;
    const char *base = strrchr(spec_path, '/');
    base = base ? base + 1 : spec_path;
    const char *ep = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, n, &ep, 0);
    if (!j) {
        size_t off = ep ? (size_t)(ep - buf) : 0, line = 1;
        for (size_t i = 0; i < off && i < n; i++)
            line += buf[i] == '\n';
        qe_err_set(err, QE_EJSON, "%s: malformed JSON at byte %zu (line %zu)", base, off, line);
        free(buf);
        return NULL;
    }
    free(buf);
    qe_task *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(j);
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    qe_strlcpy(t->spec_path, spec_path, sizeof t->spec_path);
    if (!data_dir) {
        static char dd[512];
        snprintf(dd, sizeof dd, "%s/data", qe_datasets_dir());
        data_dir = dd;
    }
    int rc = parse_spec(t, j, base, data_dir, err);
    cJSON_Delete(j);
    if (rc) {
        qe_task_free(t);
        return NULL;
    }
    return t;
}

qe_task *qe_task_load_name(const char *name, qe_err *err)
{
    char p[768];
    if (strchr(name, '/') || strstr(name, "..")) {
        qe_err_set(err, QE_EINVAL, "task name '%s': must not contain '/' or '..'", name);
        return NULL;
    }
    snprintf(p, sizeof p, "%s/tasks/%s.json", qe_datasets_dir(), name);
    if (access(p, R_OK) != 0) {
        qe_err_set(err, QE_ENOTFOUND, "unknown task '%s' (no %s; see `qeval tasks`)", name, p);
        return NULL;
    }
    return qe_task_load(p, NULL, err);
}

int qe_task_load_data(qe_task *t, qe_err *err)
{
    if (t->data_loaded)
        return 0;
    if (t->sha256[0] && !strchr(t->data_path, '*')) {
        int rc = qe_sha256_file(t->data_path, t->data_sha256, err);
        if (rc)
            return qe_err_prefix(err, "task %s", t->name);
        if (strcmp(t->data_sha256, t->sha256))
            return qe_err_set(err, QE_EFORMAT, "task %s: %s: sha256 %s, expected %s (data.sha256)",
                              t->name, t->data_path, t->data_sha256, t->sha256);
    }
    int rc = qe_docs_read(t->data_path, t->format, &t->dopts, &t->docs, err);
    if (rc)
        return qe_err_prefix(err, "task %s", t->name);
    t->data_loaded = true;
    return 0;
}

static void free_strs(char **a, int n)
{
    for (int i = 0; a && i < n; i++)
        free(a[i]);
    free(a);
}

void qe_task_free(qe_task *t)
{
    if (!t)
        return;
    free(t->description);
    free_strs(t->dopts.columns, t->dopts.n_columns);
    free(t->explode);
    free(t->labels_rel);
    free(t->prompt);
    free(t->target);
    free(t->label);
    free(t->target_delimiter);
    free(t->fewshot_delimiter);
    free_strs(t->choice_tpl, t->n_choice_tpl);
    free(t->choices_field);
    free(t->choice_text);
    free(t->choice_key);
    free(t->choice_correct);
    free(t->fewshot_sampler);
    free_strs(t->until, t->n_until);
    for (int i = 0; t->filters && i < t->n_filters; i++) {
        for (int k = 0; k < t->filters[i].n_steps; k++) {
            qe_regex_free(t->filters[i].steps[k].re);
            free(t->filters[i].steps[k].pattern);
            free(t->filters[i].steps[k].fallback);
        }
        free(t->filters[i].steps);
    }
    free(t->filters);
    for (int i = 0; t->em.ignore_re && i < t->em.n_ignore; i++)
        qe_regex_free(t->em.ignore_re[i]);
    free(t->em.ignore_re);
    free_strs(t->em.ignore_pat, t->em.n_ignore);
    free(t->metrics);
    free(t->program);
    free(t->ppl_convention);
    qe_docs_free(&t->docs);
    free(t);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_json(const char *sub, char ***names, int *n, qe_err *err)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", qe_datasets_dir(), sub);
    DIR *d = opendir(dir);
    *names = NULL;
    *n = 0;
    if (!d)
        return qe_err_set(err, QE_ENOTFOUND, "%s: cannot open directory", dir);
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json"))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn)
                break;
            *names = nn;
        }
        (*names)[*n] = strndup(e->d_name, l - 5);
        if ((*names)[*n])
            (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*names, (size_t)*n, sizeof **names, cmp_str);
    return 0;
}

int qe_task_list(char ***names, int *n, qe_err *err)
{
    return list_json("tasks", names, n, err);
}

int qe_suite_list(char ***names, int *n, qe_err *err)
{
    return list_json("suites", names, n, err);
}

qe_suite *qe_suite_load(const char *path, qe_err *err)
{
    char *buf;
    size_t n;
    if (qe_read_file(path, &buf, &n, err))
        return NULL;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    cJSON *j = cJSON_ParseWithLength(buf, n);
    free(buf);
    qe_suite *s = calloc(1, sizeof *s);
    int rc = 0;
    if (!s) {
        cJSON_Delete(j);
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    static const char *const keys[] = {"name", "description", "text_chunks", "tasks", "chat",
                                       NULL};
    if (!cJSON_IsObject(j))
        rc = qe_err_set(err, QE_EJSON, "%s: malformed JSON or not an object", base);
    if (!rc)
        rc = check_keys(j, keys, base, "", err);
    if (!rc)
        rc = get_fixed(j, "name", true, s->name, sizeof s->name, base, "", err);
    if (!rc)
        rc = get_str(j, "description", false, &s->description, base, "", err);
    double tc = 0;
    if (!rc)
        rc = get_num(j, "text_chunks", 0, 1e6, &tc, base, "", err);
    s->text_chunks = (int)tc;
    if (!rc)
        rc = get_bool(j, "chat", &s->chat, base, "", err);
    const cJSON *ts = rc ? NULL : cJSON_GetObjectItemCaseSensitive(j, "tasks");
    if (!rc && !cJSON_IsArray(ts))
        rc = qe_err_set(err, QE_EJSON, "%s: tasks: expected an array", base);
    if (!rc) {
        int k = cJSON_GetArraySize(ts);
        s->entries = calloc((size_t)(k ? k : 1), sizeof *s->entries);
        if (!s->entries)
            rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < k; i++) {
            const cJSON *e = cJSON_GetArrayItem(ts, i);
            qe_suite_entry *se = &s->entries[s->n];
            char where[32];
            snprintf(where, sizeof where, "tasks[%d]", i);
            if (cJSON_IsString(e)) {
                qe_strlcpy(se->task, e->valuestring, sizeof se->task);
            } else if (cJSON_IsObject(e)) {
                static const char *const ek[] = {"task", "limit", NULL};
                double lim = 0;
                rc = check_keys(e, ek, base, where, err);
                if (!rc)
                    rc = get_fixed(e, "task", true, se->task, sizeof se->task, base, where, err);
                if (!rc)
                    rc = get_num(e, "limit", 0, 1e9, &lim, base, where, err);
                se->limit = (size_t)lim;
            } else {
                rc = qe_err_set(err, QE_EJSON, "%s: %s: expected a task name or {task, limit}",
                                base, where);
            }
            if (!rc)
                s->n++;
        }
    }
    cJSON_Delete(j);
    if (rc) {
        qe_suite_free(s);
        return NULL;
    }
    return s;
}

qe_suite *qe_suite_load_name(const char *name, qe_err *err)
{
    char p[768];
    if (strchr(name, '/') || strstr(name, "..")) {
        qe_err_set(err, QE_EINVAL, "suite name '%s': must not contain '/' or '..'", name);
        return NULL;
    }
    snprintf(p, sizeof p, "%s/suites/%s.json", qe_datasets_dir(), name);
    if (access(p, R_OK) != 0) {
        qe_err_set(err, QE_ENOTFOUND, "unknown suite '%s' (no %s; see `qeval suites`)", name, p);
        return NULL;
    }
    return qe_suite_load(p, err);
}

void qe_suite_free(qe_suite *s)
{
    if (!s)
        return;
    free(s->description);
    free(s->entries);
    free(s);
}
