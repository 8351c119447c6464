/*
 * chat.c: finding a model's chat template and rendering conversations
 * through it (see chat.h).  The language itself is jinja.c.
 */
#include "chat.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/gguf.h"
#include "../util/sha256.h"

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static bool is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    char m[4] = {0};
    size_t k = fread(m, 1, 4, f);
    fclose(f);
    return k == 4 && memcmp(m, "GGUF", 4) == 0;
}

/* --- GGUF --- */

static char *gguf_token_text(const qe_gguf *g, const char *id_key)
{
    uint64_t id;
    if (qe_gguf_find_kv(g, id_key) < 0 || qe_gguf_get_u64(g, id_key, &id, NULL))
        return NULL;
    const qe_gguf_value *toks = qe_gguf_get(g, "tokenizer.ggml.tokens");
    if (!toks || toks->type != QE_GGUF_ARRAY || toks->v.arr.elem_type != QE_GGUF_STRING ||
        id >= toks->v.arr.n)
        return NULL;
    return dupn(toks->v.arr.strs[id].ptr, toks->v.arr.strs[id].len);
}

static int from_gguf(qe_chat_template *ct, const char *path, const char *name, bool want_src,
                     qe_err *err)
{
    qe_gguf *g = qe_gguf_open(path, err);
    if (!g)
        return err ? err->code : QE_EIO;
    int rc = 0;
    if (want_src) {
        char key[256];
        if (name)
            snprintf(key, sizeof key, "tokenizer.chat_template.%s", name);
        else
            snprintf(key, sizeof key, "tokenizer.chat_template");
        const qe_gguf_value *v = qe_gguf_get(g, key);
        if (!v) {
            char names[400] = "";
            size_t o = 0;
            for (uint64_t i = 0; i < g->n_kv; i++) {
                qe_gguf_str k = g->kvs[i].key;
                const char *pre = "tokenizer.chat_template.";
                size_t pl = strlen(pre);
                if (k.len > pl && memcmp(k.ptr, pre, pl) == 0 && o + k.len < sizeof names - 4)
                    o += (size_t)snprintf(names + o, sizeof names - o, "%s%.*s", o ? ", " : "",
                                          (int)(k.len - pl), k.ptr + pl);
            }
            rc = qe_err_set(err, QE_ENOTFOUND,
                            "%s: the model has no chat template (no '%s' in its metadata%s%s%s); "
                            "give one with --chat-template FILE",
                            path, key, o ? "; named templates: " : "", names, o ? "" : "");
            goto out;
        }
        if (v->type != QE_GGUF_STRING) {
            rc = qe_err_set(err, QE_EFORMAT, "%s: %s: expected a string, got %s", path, key,
                            qe_gguf_vtype_name(v->type));
            goto out;
        }
        ct->src = dupn(v->v.str.ptr, v->v.str.len);
        ct->n = v->v.str.len;
        snprintf(ct->origin, sizeof ct->origin, "%s: %s", path, key);
    }
    ct->bos_token = gguf_token_text(g, "tokenizer.ggml.bos_token_id");
    ct->eos_token = gguf_token_text(g, "tokenizer.ggml.eos_token_id");
out:
    qe_gguf_close(g);
    return rc;
}

/* --- HF --- */

static char *token_field(const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsString(v) && v->valuestring)
        return dupn(v->valuestring, strlen(v->valuestring));
    return NULL;
}

static int from_hf_config(qe_chat_template *ct, const char *cfg_path, const char *jinja_path,
                          const char *name, bool want_src, qe_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    cJSON *cfg = NULL;
    int rc = 0;
    if (cfg_path) {
        if ((rc = qe_read_file(cfg_path, &buf, &n, err)))
            return rc;
        cfg = cJSON_ParseWithLength(buf, n);
        free(buf);
        buf = NULL;
        if (!cJSON_IsObject(cfg)) {
            cJSON_Delete(cfg);
            return qe_err_set(err, QE_EJSON, "%s: expected a JSON object", cfg_path);
        }
        ct->bos_token = token_field(cfg, "bos_token");
        ct->eos_token = token_field(cfg, "eos_token");
    }
    if (!want_src)
        goto out;
    if (jinja_path && !name) { /* transformers >= 4.43 saves chat_template.jinja */
        if ((rc = qe_read_file(jinja_path, &ct->src, &ct->n, err)))
            goto out;
        snprintf(ct->origin, sizeof ct->origin, "%.590s", jinja_path);
        goto out;
    }
    const cJSON *t = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    const char *where = cfg_path ? cfg_path : jinja_path;
    if (!t || cJSON_IsNull(t)) {
        rc = qe_err_set(err, QE_ENOTFOUND,
                        "%s: the model has no chat template (no 'chat_template' field and no "
                        "chat_template.jinja); give one with --chat-template FILE",
                        where);
        goto out;
    }
    if (cJSON_IsString(t)) {
        if (name) {
            rc = qe_err_set(err, QE_ENOTFOUND,
                            "%s: chat_template is a single template; there is no template "
                            "named '%s'",
                            where, name);
            goto out;
        }
        ct->src = dupn(t->valuestring, strlen(t->valuestring));
        ct->n = strlen(t->valuestring);
        snprintf(ct->origin, sizeof ct->origin, "%.500s: chat_template", cfg_path);
        goto out;
    }
    if (!cJSON_IsArray(t)) {
        rc = qe_err_set(err, QE_EJSON,
                        "%s: chat_template: expected a string or a list of {name, template}",
                        cfg_path);
        goto out;
    }
    const char *want = name ? name : "default";
    char names[400] = "";
    size_t o = 0;
    int idx = 0;
    for (const cJSON *e = t->child; e; e = e->next, idx++) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (!cJSON_IsString(nm) || !cJSON_IsString(tp)) {
            rc = qe_err_set(err, QE_EJSON,
                            "%s: chat_template[%d]: expected {\"name\": string, \"template\": "
                            "string}",
                            cfg_path, idx);
            goto out;
        }
        if (o < sizeof names - 64)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "",
                                  nm->valuestring);
        if (strcmp(nm->valuestring, want) == 0 && !ct->src) {
            ct->src = dupn(tp->valuestring, strlen(tp->valuestring));
            ct->n = strlen(tp->valuestring);
            snprintf(ct->origin, sizeof ct->origin, "%.400s: chat_template[%d] (%.100s)", cfg_path, idx,
                     want);
        }
    }
    if (!ct->src)
        rc = qe_err_set(err, QE_ENOTFOUND,
                        "%s: no chat template named '%s' (the model has: %s)%s", cfg_path, want,
                        names, name ? "" : "; choose one with --template-name NAME");
out:
    cJSON_Delete(cfg);
    return rc;
}

/* Model path -> the HF files that may hold a template. */
static int from_hf(qe_chat_template *ct, const char *model, const char *name, bool want_src,
                   qe_err *err)
{
    char dir[1024], cfg[1100], jinja[1100];
    if (is_dir(model)) {
        snprintf(dir, sizeof dir, "%s", model);
    } else {
        snprintf(dir, sizeof dir, "%s", model);
        char *sl = strrchr(dir, '/');
        if (sl)
            *sl = 0;
        else
            snprintf(dir, sizeof dir, ".");
    }
    bool given_cfg = !is_dir(model) && has_suffix(model, ".json") &&
                     !has_suffix(model, "tokenizer.json") && !has_suffix(model, "config.json");
    if (given_cfg || has_suffix(model, "tokenizer_config.json"))
        snprintf(cfg, sizeof cfg, "%s", model);
    else
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    bool have_cfg = is_file(cfg), have_jinja = is_file(jinja);
    if (!have_cfg && !have_jinja) {
        if (!want_src)
            return 0;
        return qe_err_set(err, QE_ENOTFOUND,
                          "%s: the model has no chat template (neither %s nor %s exists); give "
                          "one with --chat-template FILE",
                          model, cfg, jinja);
    }
    return from_hf_config(ct, have_cfg ? cfg : NULL, have_jinja ? jinja : NULL, name, want_src,
                          err);
}

qe_chat_template *qe_chat_template_load(const char *model, const char *file, const char *name,
                                        qe_err *err)
{
    qe_chat_template *ct = calloc(1, sizeof *ct);
    if (!ct) {
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    int rc = 0;
    if (model) {
        if (!is_dir(model) && !is_file(model)) {
            qe_err_set(err, QE_EIO, "%s: no such file or directory", model);
            goto fail;
        }
        rc = is_gguf(model) ? from_gguf(ct, model, name, !file, err)
                            : from_hf(ct, model, name, !file, err);
        if (rc)
            goto fail;
    }
    if (file) {
        if ((rc = qe_read_file(file, &ct->src, &ct->n, err)))
            goto fail;
        snprintf(ct->origin, sizeof ct->origin, "%s", file);
    }
    if (!ct->src) {
        qe_err_set(err, QE_EINVAL, "no chat template: give a MODEL or --chat-template FILE");
        goto fail;
    }
    qe_sha256_hex(ct->src, ct->n, ct->sha256);
    ct->tpl = qe_jinja_parse(ct->src, ct->n, ct->origin, err);
    if (!ct->tpl)
        goto fail;
    return ct;
fail:
    qe_chat_template_free(ct);
    return NULL;
}

void qe_chat_template_free(qe_chat_template *ct)
{
    if (!ct)
        return;
    qe_jinja_free(ct->tpl);
    free(ct->src);
    free(ct->bos_token);
    free(ct->eos_token);
    free(ct);
}

int qe_chat_render(const qe_chat_template *ct, const cJSON *ctx, char **out, size_t *out_n,
                   qe_err *err)
{
    cJSON *c = ctx ? cJSON_Duplicate(ctx, 1) : cJSON_CreateObject();
    if (!c)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return qe_err_set(err, QE_EJSON, "the context must be a JSON object");
    }
    if (ct->bos_token && !cJSON_GetObjectItemCaseSensitive(c, "bos_token"))
        cJSON_AddStringToObject(c, "bos_token", ct->bos_token);
    if (ct->eos_token && !cJSON_GetObjectItemCaseSensitive(c, "eos_token"))
        cJSON_AddStringToObject(c, "eos_token", ct->eos_token);
    int rc = qe_jinja_render(ct->tpl, c, NULL, out, out_n, err);
    cJSON_Delete(c);
    return rc;
}

int qe_chat_set_var(cJSON *ctx, const char *kv, qe_err *err)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return qe_err_set(err, QE_EINVAL, "template variable '%s': expected NAME=VALUE", kv);
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv < 255 ? eq - kv : 255), kv);
    cJSON *v = qe_jinja_json_parse(eq + 1, strlen(eq + 1), NULL);
    if (!v)
        v = cJSON_CreateString(eq + 1);
    if (!v)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(ctx, key);
    cJSON_AddItemToObject(ctx, key, v);
    return 0;
}
