/*
 * tok_hf.c: HF tokenizers' tokenizer.json (+ tokenizer_config.json) loader
 * for byte-level BPE vocabularies.
 *
 * tokenizer.json fields used:
 *   model.type "BPE" (WordPiece / Unigram answer QE_EUNSUPPORTED),
 *   model.vocab {text: id}, model.merges ["a b" | ["a", "b"]],
 *   model.ignore_merges, model.byte_fallback (must be false),
 *   added_tokens [{id, content, special}],
 *   pre_tokenizer: Sequence / Split {pattern.Regex} / ByteLevel {use_regex},
 *   post_processor: TemplateProcessing starting with a special token = BOS.
 * tokenizer_config.json: add_bos_token, add_eos_token, bos_token, eos_token
 * (a string or {"content": ...}).
 *
 * Token types follow llama.cpp's convert_hf_to_gguf: added tokens with
 * special=true, or that look special ("<|...|>", "<｜...｜>"), are CONTROL,
 * other added tokens USER_DEFINED, ids missing from both maps become
 * "[PAD<id>]" UNUSED.  The two Split regexes that Llama 3 and Qwen2 ship
 * select llama.cpp's "llama-bpe" and "qwen2" pre-tokenizers; any other
 * regex is used as written.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define HF_RE_LLAMA3                                                                          \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define HF_RE_QWEN2                                                                           \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"     \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static bool looks_special(const char *s)
{
    size_t n = strlen(s);
    if (n >= 4 && memcmp(s, "<|", 2) == 0 && memcmp(s + n - 2, "|>", 2) == 0)
        return true;
    /* "<｜" ... "｜>" (U+FF5C, DeepSeek) */
    if (n >= 8 && memcmp(s, "<\xef\xbd\x9c", 4) == 0 && memcmp(s + n - 4, "\xef\xbd\x9c>", 4) == 0)
        return true;
    return strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0;
}

/* First Split regex in the pre_tokenizer (recursing into Sequence); sets
 * *byte_regex when a ByteLevel with use_regex=true is found. */
static const char *find_split_regex(const cJSON *pt, bool *byte_regex)
{
    if (!cJSON_IsObject(pt))
        return NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pt, "type");
    if (!cJSON_IsString(type))
        return NULL;
    if (strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *it, *arr = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        const char *found = NULL;
        cJSON_ArrayForEach(it, arr)
        {
            const char *r = find_split_regex(it, byte_regex);
            if (r && !found)
                found = r;
        }
        return found;
    }
    if (strcmp(type->valuestring, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        return cJSON_IsString(re) ? re->valuestring : NULL;
    }
    if (strcmp(type->valuestring, "ByteLevel") == 0) {
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        if (!ur || cJSON_IsTrue(ur))
            *byte_regex = true;
    }
    return NULL;
}

static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* Does the post_processor put a special token before the sequence? */
static bool post_adds_bos(const cJSON *pp)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    if (!cJSON_IsString(type))
        return false;
    if (strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
        {
            if (post_adds_bos(it))
                return true;
        }
        return false;
    }
    if (strcmp(type->valuestring, "TemplateProcessing") != 0)
        return false;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *first = cJSON_GetArrayItem(single, 0);
    return cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") != NULL;
}

static cJSON *parse_json_file(const char *path, qe_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    if (qe_read_file(path, &buf, &n, err))
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, n, &end, false);
    if (!j) {
        size_t off = end && end >= buf ? (size_t)(end - buf) : 0;
        const char *e = cJSON_GetErrorPtr();
        if (e && e >= buf && e <= buf + n)
            off = (size_t)(e - buf);
        qe_err_set(err, QE_EJSON, "%s: malformed JSON near byte offset %zu", path, off);
    }
    free(buf);
    return j;
}

#define HF_MAX_VOCAB (1 << 24)

qe_tokenizer *qe_tokenizer_from_hf(const char *tokenizer_json, const char *config_path,
                                   qe_err *err)
{
    cJSON *j = NULL, *cfg = NULL;
    qe_tokenizer *t = NULL;
    char **texts = NULL;
    int *types = NULL;
    const char *P = tokenizer_json;

    if (!P) {
        qe_err_set(err, QE_EINVAL, "qe_tokenizer_from_hf: NULL path");
        return NULL;
    }
    j = parse_json_file(P, err);
    if (!j)
        return NULL;
    if (!cJSON_IsObject(j)) {
        qe_err_set(err, QE_EJSON, "%s: expected a JSON object at the top level", P);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model) || !cJSON_IsString(mtype)) {
        qe_err_set(err, QE_EJSON, "%s: model.type: expected a string", P);
        goto fail;
    }
    if (strcmp(mtype->valuestring, "WordPiece") == 0) {
        qe_err_set(err, QE_EUNSUPPORTED, "unsupported tokenizer 'bert' (WordPiece) in %s", P);
        goto fail;
    }
    if (strcmp(mtype->valuestring, "BPE") != 0) {
        qe_err_set(err, QE_EUNSUPPORTED, "%s: model.type '%s' is not supported (expected 'BPE')",
                   P, mtype->valuestring);
        goto fail;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) {
        qe_err_set(err, QE_EUNSUPPORTED, "%s: model.byte_fallback=true (SentencePiece-style BPE "
                   "in tokenizer.json) is not supported; use the GGUF vocab", P);
        goto fail;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    if (!cJSON_IsObject(vocab)) {
        qe_err_set(err, QE_EJSON, "%s: model.vocab: expected an object {token: id}", P);
        goto fail;
    }
    if (!cJSON_IsArray(merges)) {
        qe_err_set(err, QE_EJSON, "%s: model.merges: expected an array", P);
        goto fail;
    }
    if (added && !cJSON_IsArray(added)) {
        qe_err_set(err, QE_EJSON, "%s: added_tokens: expected an array", P);
        goto fail;
    }

    /* ids: vocab first, then added tokens (which may re-state vocab ids) */
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= HF_MAX_VOCAB ||
            it->valuedouble != (double)(int64_t)it->valuedouble) {
            qe_err_set(err, QE_EJSON, "%s: model.vocab[\"%.60s\"]: expected an integer id in "
                       "[0, %d)", P, it->string, HF_MAX_VOCAB);
            goto fail;
        }
        if ((int64_t)it->valuedouble > max_id)
            max_id = (int64_t)it->valuedouble;
    }
    int ai = 0;
    cJSON_ArrayForEach(it, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= HF_MAX_VOCAB ||
            !cJSON_IsString(ct)) {
            qe_err_set(err, QE_EJSON, "%s: added_tokens[%d]: expected {\"id\": integer in [0, %d), "
                       "\"content\": string}", P, ai, HF_MAX_VOCAB);
            goto fail;
        }
        if ((int64_t)id->valuedouble > max_id)
            max_id = (int64_t)id->valuedouble;
        ai++;
    }
    if (max_id < 0) {
        qe_err_set(err, QE_EJSON, "%s: model.vocab is empty", P);
        goto fail;
    }
    int32_t n = (int32_t)(max_id + 1);
    texts = calloc((size_t)n, sizeof *texts);
    types = calloc((size_t)n, sizeof *types);
    if (!texts || !types) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory for %d tokens", P, n);
        goto fail;
    }
    cJSON_ArrayForEach(it, vocab)
    {
        int32_t id = (int32_t)it->valuedouble;
        if (texts[id]) {
            qe_err_set(err, QE_EFORMAT, "%s: model.vocab: id %d used by both \"%.40s\" and "
                       "\"%.40s\"", P, id, texts[id], it->string);
            goto fail;
        }
        texts[id] = it->string;
        types[id] = QE_TOKTYPE_NORMAL;
    }
    cJSON_ArrayForEach(it, added)
    {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        const char *c = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
        bool sp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        texts[id] = (char *)c;
        types[id] = (sp || looks_special(c)) ? QE_TOKTYPE_CONTROL : QE_TOKTYPE_USER_DEFINED;
    }

    static char pad_names[1]; /* marker: "[PAD<id>]" is generated below */
    uint64_t pool = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!texts[i]) {
            texts[i] = pad_names;
            types[i] = QE_TOKTYPE_UNUSED;
            pool += 24;
        } else {
            pool += strlen(texts[i]) + 1;
        }
    }
    t = qe_tok_alloc(n, pool, P);
    if (!t) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory for %d tokens", P, n);
        goto fail;
    }
    t->kind = QE_TOK_BPE;
    size_t off = 0;
    static const uint32_t k_attr[7] = {0, QE_TATTR_NORMAL, QE_TATTR_UNKNOWN, QE_TATTR_CONTROL,
                                       QE_TATTR_USER_DEFINED, QE_TATTR_UNUSED, QE_TATTR_BYTE};
    for (int32_t i = 0; i < n; i++) {
        char pad[24];
        const char *s = texts[i];
        if (s == pad_names) {
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            s = pad;
        }
        if (qe_tok_set_text(t, i, s, strlen(s), &off, err))
            goto fail;
        t->toktype[i] = types[i];
        t->attr[i] = k_attr[types[i]];
    }
    free(texts);
    texts = NULL;

    /* merges: "a b" or ["a", "b"]; both halves must be tokens */
    uint64_t mpool = 0;
    int64_t nm = cJSON_GetArraySize(merges);
    cJSON_ArrayForEach(it, merges)
    {
        if (cJSON_IsString(it)) {
            mpool += strlen(it->valuestring) + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            mpool += strlen(cJSON_GetArrayItem(it, 0)->valuestring) +
                     strlen(cJSON_GetArrayItem(it, 1)->valuestring) + 1;
        }
    }
    if (qe_tok_merges_begin(t, nm, mpool, err))
        goto fail;
    int64_t mi = 0;
    cJSON_ArrayForEach(it, merges)
    {
        const char *l, *r;
        size_t ln, rn;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring;
            size_t sl = strlen(s);
            const char *sp = sl > 1 ? memchr(s + 1, ' ', sl - 1) : NULL;
            if (!sp) {
                qe_err_set(err, QE_EJSON, "%s: model.merges[%lld]: expected \"left right\", got "
                           "\"%.60s\"", P, (long long)mi, s);
                goto fail;
            }
            l = s;
            ln = (size_t)(sp - s);
            r = sp + 1;
            rn = sl - ln - 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            l = cJSON_GetArrayItem(it, 0)->valuestring;
            r = cJSON_GetArrayItem(it, 1)->valuestring;
            ln = strlen(l);
            rn = strlen(r);
        } else {
            qe_err_set(err, QE_EJSON, "%s: model.merges[%lld]: expected a string \"a b\" or a "
                       "pair [\"a\", \"b\"]", P, (long long)mi);
            goto fail;
        }
        /* vocab map is not built yet: check membership after finish */
        if (qe_tok_merge_add(t, l, ln, r, rn, err))
            goto fail;
        mi++;
    }

    /* pre-tokenizer */
    bool byte_regex = false;
    const char *re = find_split_regex(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"),
                                      &byte_regex);
    const char *override = NULL;
    if (re && strcmp(re, HF_RE_LLAMA3) == 0)
        qe_strlcpy(t->pre, "llama-bpe", sizeof t->pre);
    else if (re && strcmp(re, HF_RE_QWEN2) == 0)
        qe_strlcpy(t->pre, "qwen2", sizeof t->pre);
    else if (re) {
        qe_strlcpy(t->pre, "hf-regex", sizeof t->pre);
        override = re;
    } else if (byte_regex)
        qe_strlcpy(t->pre, "gpt-2", sizeof t->pre);
    else {
        qe_err_set(err, QE_EUNSUPPORTED, "%s: pre_tokenizer: no Split regex and no ByteLevel "
                   "with use_regex; cannot pre-tokenize", P);
        goto fail;
    }
    t->clean_spaces = true; /* llama.cpp's BPE default; the pre table may clear it */
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")))
        t->ignore_merges = true;

    /* tokenizer_config.json: given, or beside tokenizer.json (optional) */
    char cpath[1024];
    if (config_path) {
        cfg = parse_json_file(config_path, err);
        if (!cfg)
            goto fail;
    } else {
        const char *slash = strrchr(P, '/');
        size_t dl = slash ? (size_t)(slash - P + 1) : 0;
        if (dl + 32 < sizeof cpath) {
            memcpy(cpath, P, dl);
            strcpy(cpath + dl, "tokenizer_config.json");
            FILE *f = fopen(cpath, "rb");
            if (f) {
                fclose(f);
                cfg = parse_json_file(cpath, err);
                if (!cfg)
                    goto fail;
            }
        }
    }
    const char *bos_s = NULL, *eos_s = NULL;
    const cJSON *abos = NULL, *aeos = NULL;
    if (cfg) {
        bos_s = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token"));
        eos_s = token_content(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token"));
        abos = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
        aeos = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    }
    if (qe_tok_finish(t, NULL, override, err))
        goto fail;
    /* merge halves must be tokens (HF refuses such files) */
    mi = 0;
    cJSON_ArrayForEach(it, merges)
    {
        const char *l, *r;
        size_t ln, rn;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring, *sp = memchr(s + 1, ' ', strlen(s) - 1);
            l = s;
            ln = (size_t)(sp - s);
            r = sp + 1;
            rn = strlen(r);
        } else {
            l = cJSON_GetArrayItem(it, 0)->valuestring;
            r = cJSON_GetArrayItem(it, 1)->valuestring;
            ln = strlen(l);
            rn = strlen(r);
        }
        if (qe_tok_map_get(&t->vocab, l, ln) < 0 || qe_tok_map_get(&t->vocab, r, rn) < 0) {
            bool left_bad = qe_tok_map_get(&t->vocab, l, ln) < 0;
            qe_err_set(err, QE_EFORMAT, "%s: model.merges[%lld]: %s token \"%.*s\" is not in "
                       "model.vocab", P, (long long)mi, left_bad ? "left" : "right",
                       (int)(left_bad ? (ln > 60 ? 60 : ln) : (rn > 60 ? 60 : rn)),
                       left_bad ? l : r);
            goto fail;
        }
        mi++;
    }
    t->bos = bos_s ? qe_tok_map_get(&t->vocab, bos_s, strlen(bos_s)) : -1;
    t->eos = eos_s ? qe_tok_map_get(&t->vocab, eos_s, strlen(eos_s)) : -1;
    if (cJSON_IsBool(abos))
        t->add_bos = cJSON_IsTrue(abos);
    else
        t->add_bos = t->bos >= 0 &&
                     (strcmp(t->pre, "llama-bpe") == 0 ||
                      post_adds_bos(cJSON_GetObjectItemCaseSensitive(j, "post_processor")));
    if (cJSON_IsBool(aeos))
        t->add_eos = cJSON_IsTrue(aeos);
    if ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)) {
        qe_err_set(err, QE_EFORMAT, "%s: add_%s_token is true but %s_token is not a token",
                   config_path ? config_path : cpath, t->add_bos && t->bos < 0 ? "bos" : "eos",
                   t->add_bos && t->bos < 0 ? "bos" : "eos");
        goto fail;
    }
    /* EOS joins the end-of-generation set (qe_tok_finish ran before we knew it) */
    if (t->eos >= 0 && !qe_tokenizer_is_eog(t, t->eos))
        t->eog[t->n_eog++] = t->eos;
    cJSON_Delete(cfg);
    cJSON_Delete(j);
    free(types);
    return t;
fail:
    qe_tokenizer_free(t);
    free(texts);
    free(types);
    cJSON_Delete(cfg);
    cJSON_Delete(j);
    return NULL;
}
