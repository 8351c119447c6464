/*
 * safetensors.c: safetensors header parser (buffer level, fuzzed), HF
 * config.json -> qe_config, and the loader that turns a single or sharded
 * safetensors checkpoint into a qe_model with GGUF names and layouts.
 * Formats are documented in safetensors.h.
 *
 * Tensors stay views into the file mappings, except (a) llama/mistral
 * attn_q / attn_k rows, which are permuted into an owned copy exactly as
 * llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) does so that
 * "normal" RoPE applies, (b) tensors whose data is not aligned to their
 * element size (owned aligned copy), and (c) rope_freqs.weight, computed
 * from a llama3 rope_scaling block as the converter does.
 */
#include "safetensors.h"

#include "arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../quant/quant.h"
#include "tokenizer.h"

#define ST_MAX_HEADER_NBYTES (100ull << 20) /* as the reference implementation */

static const struct {
    const char *name;
    size_t size;
} k_dtypes[QE_ST_DTYPE_COUNT] = {
    [QE_ST_BOOL] = {"BOOL", 1},       [QE_ST_U8] = {"U8", 1},
    [QE_ST_I8] = {"I8", 1},           [QE_ST_F8_E5M2] = {"F8_E5M2", 1},
    [QE_ST_F8_E4M3] = {"F8_E4M3", 1}, [QE_ST_I16] = {"I16", 2},
    [QE_ST_U16] = {"U16", 2},         [QE_ST_F16] = {"F16", 2},
    [QE_ST_BF16] = {"BF16", 2},       [QE_ST_I32] = {"I32", 4},
    [QE_ST_U32] = {"U32", 4},         [QE_ST_F32] = {"F32", 4},
    [QE_ST_F64] = {"F64", 8},         [QE_ST_I64] = {"I64", 8},
    [QE_ST_U64] = {"U64", 8},
};

const char *qe_st_dtype_name(int dtype)
{
    return dtype >= 0 && dtype < QE_ST_DTYPE_COUNT ? k_dtypes[dtype].name : NULL;
}

size_t qe_st_dtype_size(int dtype)
{
    return dtype >= 0 && dtype < QE_ST_DTYPE_COUNT ? k_dtypes[dtype].size : 0;
}

void qe_safetensors_header_free(qe_st_header *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->n_tensors; i++)
        free(h->tensors[i].name);
    free(h->tensors);
    memset(h, 0, sizeof *h);
}

/* A JSON number that is a non-negative integer below 2^53 (exact in double). */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

static const qe_st_header *g_sort_hdr; /* qsort context (single-threaded use) */

static int cmp_by_begin(const void *a, const void *b)
{
    const qe_st_tensor *x = &g_sort_hdr->tensors[*(const int *)a];
    const qe_st_tensor *y = &g_sort_hdr->tensors[*(const int *)b];
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(g_sort_hdr->tensors[*(const int *)a].name,
                  g_sort_hdr->tensors[*(const int *)b].name);
}

/* Parse one "<name>": {dtype, shape, data_offsets} entry into t. */
static int parse_entry(const cJSON *e, const char *file, uint64_t data_nbytes, qe_st_tensor *t,
                       qe_err *err)
{
    const char *tn = t->name;
    if (!cJSON_IsObject(e))
        return qe_err_set(err, QE_EJSON, "%s: header: tensor '%s': expected an object", file, tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return qe_err_set(err, QE_EJSON, "%s: header: tensor '%s': \"dtype\": expected a string",
                          file, tn);
    t->dtype = -1;
    for (int d = 0; d < QE_ST_DTYPE_COUNT; d++)
        if (strcmp(dt->valuestring, k_dtypes[d].name) == 0)
            t->dtype = d;
    if (t->dtype < 0)
        return qe_err_set(err, QE_EUNSUPPORTED, "%s: tensor '%s': unknown dtype '%.40s'", file, tn,
                          dt->valuestring);
    if (!cJSON_IsArray(sh))
        return qe_err_set(err, QE_EJSON, "%s: header: tensor '%s': \"shape\": expected an array",
                          file, tn);
    int nd = cJSON_GetArraySize(sh);
    if (nd > QE_ST_MAX_DIMS)
        return qe_err_set(err, QE_ECOUNT, "%s: tensor '%s': %d dims, at most %d supported", file,
                          tn, nd, QE_ST_MAX_DIMS);
    t->n_dims = (uint32_t)nd;
    uint64_t nel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(sh, d), &v))
            return qe_err_set(err, QE_EJSON,
                              "%s: header: tensor '%s': shape[%d]: expected a non-negative "
                              "integer", file, tn, d);
        if (v > INT64_MAX || !qe_mul_ok(nel, v, &nel))
            return qe_err_set(err, QE_EOVERFLOW, "%s: tensor '%s': element count overflows", file,
                              tn);
        t->shape[d] = (int64_t)v;
    }
    uint64_t need;
    if (!qe_mul_ok(nel, k_dtypes[t->dtype].size, &need))
        return qe_err_set(err, QE_EOVERFLOW, "%s: tensor '%s': byte size overflows", file, tn);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
        !json_uint(cJSON_GetArrayItem(of, 0), &t->begin) ||
        !json_uint(cJSON_GetArrayItem(of, 1), &t->end))
        return qe_err_set(err, QE_EJSON,
                          "%s: header: tensor '%s': \"data_offsets\": expected [begin, end] "
                          "non-negative integers", file, tn);
    if (t->begin > t->end || t->end > data_nbytes)
        return qe_err_set(err, QE_EBOUNDS,
                          "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section "
                          "(%llu bytes)", file, tn, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)data_nbytes);
    if (t->end - t->begin != need)
        return qe_err_set(err, QE_ESHAPE,
                          "%s: tensor '%s': data_offsets span %llu bytes, but %s x %llu elements "
                          "need %llu", file, tn, (unsigned long long)(t->end - t->begin),
                          k_dtypes[t->dtype].name, (unsigned long long)nel,
                          (unsigned long long)need);
    return 0;
}

int qe_safetensors_parse_header(const void *buf, size_t n, const char *name, qe_st_header *out,
                                qe_err *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf;
    if (n < 8)
        return qe_err_set(err, QE_ETRUNC, "%s: %zu bytes: too short for the 8-byte header length",
                          name, n);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | p[i];
    if (hn > n - 8)
        return qe_err_set(err, QE_EBOUNDS,
                          "%s: offset 0: header length %llu runs past the end of the file "
                          "(%zu bytes after the length field)",
                          name, (unsigned long long)hn, n - 8);
    if (hn > ST_MAX_HEADER_NBYTES)
        return qe_err_set(err, QE_EBOUNDS, "%s: offset 0: header length %llu over the 100 MiB "
                          "limit", name, (unsigned long long)hn);
    if (hn < 2 || p[8] != '{')
        return qe_err_set(err, QE_EJSON, "%s: offset 8: header must be a JSON object starting "
                          "with '{'", name);
    const char *jend = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)p + 8, (size_t)hn, &jend, false);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        long at = ep ? (long)(ep - (const char *)p) : -1;
        return qe_err_set(err, QE_EJSON, "%s: header JSON is malformed (near file offset %ld)",
                          name, at);
    }
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = qe_err_set(err, QE_EJSON, "%s: header: expected a JSON object", name);
        goto out_free_json;
    }
    /* Only spaces may follow the JSON (the writer pads with them). */
    for (const char *q = jend; q && q < (const char *)p + 8 + hn; q++)
        if (*q != ' ' && *q != '\0' && *q != '\n' && *q != '\t' && *q != '\r') {
            rc = qe_err_set(err, QE_EJSON, "%s: header: trailing bytes after the JSON object at "
                            "file offset %ld", name, (long)(q - (const char *)p));
            goto out_free_json;
        }
    out->header_nbytes = hn;
    out->data_offset = 8 + hn;
    out->data_nbytes = n - out->data_offset;
    int cap = cJSON_GetArraySize(root);
    out->tensors = calloc((size_t)(cap > 0 ? cap : 1), sizeof *out->tensors);
    if (!out->tensors) {
        rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory", name);
        goto out_free_json;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            rc = qe_err_set(err, QE_EJSON, "%s: header: entry without a key", name);
            goto out_fail;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = qe_err_set(err, QE_EJSON, "%s: header: \"__metadata__\": expected an object",
                                name);
                goto out_fail;
            }
            for (const cJSON *mkv = e->child; mkv; mkv = mkv->next)
                if (!cJSON_IsString(mkv)) {
                    rc = qe_err_set(err, QE_EJSON,
                                    "%s: header: \"__metadata__\".\"%.60s\": expected a string",
                                    name, mkv->string ? mkv->string : "");
                    goto out_fail;
                }
            continue;
        }
        qe_st_tensor *t = &out->tensors[out->n_tensors];
        t->name = strdup(e->string);
        if (!t->name) {
            rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory", name);
            goto out_fail;
        }
        out->n_tensors++;
        if ((rc = parse_entry(e, name, out->data_nbytes, t, err)))
            goto out_fail;
    }
    /* Duplicate names and overlapping ranges, via two sorted index orders. */
    if (out->n_tensors > 1) {
        int *idx = malloc((size_t)out->n_tensors * sizeof *idx);
        if (!idx) {
            rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory", name);
            goto out_fail;
        }
        for (int i = 0; i < out->n_tensors; i++)
            idx[i] = i;
        g_sort_hdr = out;
        qsort(idx, (size_t)out->n_tensors, sizeof *idx, cmp_by_name);
        for (int i = 1; i < out->n_tensors && !rc; i++)
            if (strcmp(out->tensors[idx[i]].name, out->tensors[idx[i - 1]].name) == 0)
                rc = qe_err_set(err, QE_EJSON, "%s: header: tensor '%s' appears twice", name,
                                out->tensors[idx[i]].name);
        if (!rc) {
            qsort(idx, (size_t)out->n_tensors, sizeof *idx, cmp_by_begin);
            for (int i = 1; i < out->n_tensors && !rc; i++) {
                const qe_st_tensor *a = &out->tensors[idx[i - 1]], *b = &out->tensors[idx[i]];
                if (b->begin < a->end)
                    rc = qe_err_set(err, QE_EOVERLAP,
                                    "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                                    name, a->name, (unsigned long long)a->begin,
                                    (unsigned long long)a->end, b->name,
                                    (unsigned long long)b->begin, (unsigned long long)b->end);
            }
        }
        g_sort_hdr = NULL;
        free(idx);
        if (rc)
            goto out_fail;
    }
    cJSON_Delete(root);
    return 0;

out_fail:
    qe_safetensors_header_free(out);
out_free_json:
    cJSON_Delete(root);
    return rc;
}

/* ----------------------------------------------------------- config.json */

/* Optional number field; returns false (and sets err) when present but not a number. */
static bool cfg_num(const cJSON *o, const char *key, double *out, bool *present, const char *name,
                    qe_err *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *present = false;
    if (!j || cJSON_IsNull(j))
        return true;
    if (!cJSON_IsNumber(j)) {
        qe_err_set(err, QE_EJSON, "%s: \"%s\": expected a number", name, key);
        return false;
    }
    *out = j->valuedouble;
    *present = true;
    return true;
}

static int cfg_int(const cJSON *o, const char *key, bool required, int *out, const char *name,
                   qe_err *err)
{
    double d;
    bool present;
    if (!cfg_num(o, key, &d, &present, name, err))
        return QE_EJSON;
    if (!present)
        return required ? qe_err_set(err, QE_ENOTFOUND, "%s: missing \"%s\"", name, key) : 0;
    if (!(d >= 1.0) || d > 2147483647.0 || d != floor(d))
        return qe_err_set(err, QE_EJSON, "%s: \"%s\": expected a positive integer, got %g", name,
                          key, d);
    *out = (int)d;
    return 0;
}

/* Optional positive float (null = absent); *out unchanged when absent. */
static int cfg_pos(const cJSON *o, const char *key, float *out, const char *name, qe_err *err)
{
    double d;
    bool present;
    if (!cfg_num(o, key, &d, &present, name, err))
        return QE_EJSON;
    if (!present)
        return 0;
    if (!(d > 0.0) || !isfinite(d))
        return qe_err_set(err, QE_EJSON, "%s: \"%s\": expected a positive number, got %g", name,
                          key, d);
    *out = (float)d;
    return 0;
}

/* The config.json fields of the architecture features (experts, window,
 * soft-caps, local RoPE base, partial rotary, LongRoPE attention factor),
 * as convert_hf_to_gguf.py writes them into GGUF keys. */
static int hf_arch_fields(const cJSON *o, qe_config *c, const qe_arch_desc *d, const char *name,
                          qe_err *err)
{
    int rc;
    if (d->flags & QE_ARCH_MOE) {
        c->n_expert = 0;
        if ((rc = cfg_int(o, "num_local_experts", false, &c->n_expert, name, err)) ||
            (rc = cfg_int(o, "num_experts", false, &c->n_expert, name, err)) ||
            (rc = cfg_int(o, "num_experts_per_tok", false, &c->n_expert_used, name, err)))
            return rc;
        c->n_ff_exp = c->n_ff;
        if ((rc = cfg_int(o, "moe_intermediate_size", false, &c->n_ff_exp, name, err)) ||
            (rc = cfg_int(o, "shared_expert_intermediate_size", false, &c->n_ff_shexp, name,
                          err)))
            return rc;
        if (c->n_expert > 0 && c->n_expert_used == 0)
            return qe_err_set(err, QE_ENOTFOUND, "%s: missing \"num_experts_per_tok\" (%d "
                              "experts)", name, c->n_expert);
    }
    if (d->swa_pattern && (rc = cfg_int(o, "sliding_window", false, &c->n_swa, name, err)))
        return rc;
    if (d->swa_pattern > 1 &&
        (rc = cfg_int(o, "sliding_window_pattern", false, &c->swa_pattern, name, err)))
        return rc;
    if (d->flags & QE_ARCH_SOFTCAP) {
        c->attn_softcap = c->final_softcap = 0.0f; /* null in config.json: none */
        if ((rc = cfg_pos(o, "attn_logit_softcapping", &c->attn_softcap, name, err)) ||
            (rc = cfg_pos(o, "final_logit_softcapping", &c->final_softcap, name, err)))
            return rc;
    }
    if (d->flags & QE_ARCH_SWA_BASE) {
        c->rope_freq_base_swa = 10000.0f;
        if ((rc = cfg_pos(o, "rope_local_base_freq", &c->rope_freq_base_swa, name, err)))
            return rc;
    }
    if (d->flags & QE_ARCH_ROPE_FACTORS) {
        double prf = 1.0;
        bool present;
        if (!cfg_num(o, "partial_rotary_factor", &prf, &present, name, err))
            return QE_EJSON;
        if (present) {
            if (!(prf > 0.0 && prf <= 1.0))
                return qe_err_set(err, QE_EJSON, "%s: \"partial_rotary_factor\": expected (0, 1], "
                                  "got %g", name, prf);
            c->n_rot = (int)(prf * c->n_embd) / c->n_head; /* the converter's rope_dims */
        }
        int orig = 0;
        if ((rc = cfg_int(o, "original_max_position_embeddings", false, &orig, name, err)))
            return rc;
        c->rope_llama3_orig_ctx = orig;
        c->rope_attn_factor = 1.0f;
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
        if (orig > 0 && c->n_ctx_train > orig && cJSON_IsObject(rs)) {
            /* convert_hf_to_gguf.py (Phi3MiniModel): sqrt(1 + ln(scale) / ln(orig)) */
            const double scale = (double)c->n_ctx_train / orig;
            c->rope_attn_factor = (float)sqrt(1.0 + log(scale) / log((double)orig));
        }
    }
    return 0;
}

int qe_hf_config_parse(const char *json, size_t n, const char *name, qe_config *c, qe_err *err)
{
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!root)
        return qe_err_set(err, QE_EJSON, "%s: malformed JSON", name);
    int rc = 0;
    cJSON *top = NULL; /* the parsed document (root may move to text_config) */
    if (!cJSON_IsObject(root)) {
        rc = qe_err_set(err, QE_EJSON, "%s: expected a JSON object", name);
        goto out;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        rc = qe_err_set(err, QE_EJSON, "%s: \"model_type\": expected a string", name);
        goto out;
    }
    /* HF model_type -> GGUF architecture (as convert_hf_to_gguf.py) */
    static const struct {
        const char *mt, *arch;
    } k_types[] = {{"llama", "llama"},     {"mistral", "llama"},   {"mixtral", "llama"},
                   {"qwen2", "qwen2"},     {"qwen2_moe", "qwen2moe"}, {"qwen3", "qwen3"},
                   {"qwen3_moe", "qwen3moe"},
                   {"gemma2", "gemma2"},   {"gemma3_text", "gemma3"}, {"gemma3", "gemma3"},
                   {"phi3", "phi3"}};
    const char *arch = NULL;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0] && !arch; i++)
        if (strcmp(mt->valuestring, k_types[i].mt) == 0)
            arch = k_types[i].arch;
    if (!arch) {
        rc = qe_err_set(err, QE_EUNSUPPORTED,
                        "%s: \"model_type\": '%.40s' not supported (llama, mistral, mixtral, "
                        "qwen2, qwen2_moe, qwen3, qwen3_moe, gemma2, gemma3_text, gemma3, phi3)", name,
                        mt->valuestring);
        goto out;
    }
    qe_strlcpy(c->arch, arch, sizeof c->arch);
    const qe_arch_desc *desc = qe_arch_find(arch);
    c->rope_kind = desc->rope_kind;
    /* Gemma3ForConditionalGeneration: the text model's settings */
    top = root;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (strcmp(mt->valuestring, "gemma3") == 0 && cJSON_IsObject(tc))
        root = (cJSON *)tc;
    if ((rc = cfg_int(root, "hidden_size", true, &c->n_embd, name, err)) ||
        (rc = cfg_int(root, "intermediate_size", true, &c->n_ff, name, err)) ||
        (rc = cfg_int(root, "num_hidden_layers", true, &c->n_layer, name, err)) ||
        (rc = cfg_int(root, "num_attention_heads", true, &c->n_head, name, err)) ||
        (rc = cfg_int(root, "vocab_size", true, &c->n_vocab, name, err)))
        goto out;
    c->n_head_kv = c->n_head;
    c->head_dim = c->n_embd / c->n_head;
    c->n_ctx_train = 0;
    if ((rc = cfg_int(root, "num_key_value_heads", false, &c->n_head_kv, name, err)) ||
        (rc = cfg_int(root, "head_dim", false, &c->head_dim, name, err)) ||
        (rc = cfg_int(root, "max_position_embeddings", false, &c->n_ctx_train, name, err)))
        goto out;
    c->n_rot = c->head_dim;
    double d;
    bool present;
    c->rms_eps = 1e-6f; /* transformers' LlamaConfig default */
    if (!cfg_num(root, "rms_norm_eps", &d, &present, name, err)) {
        rc = QE_EJSON;
        goto out;
    }
    if (present)
        c->rms_eps = (float)d;
    c->rope_freq_base = 10000.0f;
    if (!cfg_num(root, "rope_theta", &d, &present, name, err)) {
        rc = QE_EJSON;
        goto out;
    }
    if (present)
        c->rope_freq_base = (float)d;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    c->tied_output = cJSON_IsTrue(tie);
    c->rope_scaling = QE_ROPE_SCALING_NONE;
    c->rope_freq_scale = 1.0f;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        if (!cJSON_IsObject(rs)) {
            rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\": expected an object or null",
                            name);
            goto out;
        }
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!cJSON_IsString(ty))
            ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        if (!cJSON_IsString(ty)) {
            rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\": \"rope_type\": expected a "
                            "string", name);
            goto out;
        }
        double factor = 1.0;
        if (!cfg_num(rs, "factor", &factor, &present, name, err)) {
            rc = QE_EJSON;
            goto out;
        }
        if (strcmp(ty->valuestring, "linear") == 0) {
            if (!(factor > 0.0)) {
                rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\".\"factor\": expected > 0",
                                name);
                goto out;
            }
            c->rope_scaling = QE_ROPE_SCALING_LINEAR;
            c->rope_freq_scale = (float)(1.0 / factor);
        } else if (strcmp(ty->valuestring, "llama3") == 0) {
            /* Defaults as convert_hf_to_gguf.py uses them. */
            double lo = 1.0, hi = 4.0, orig = 8192.0;
            if (!present)
                factor = 8.0;
            if (!cfg_num(rs, "low_freq_factor", &lo, &present, name, err) ||
                !cfg_num(rs, "high_freq_factor", &hi, &present, name, err) ||
                !cfg_num(rs, "original_max_position_embeddings", &orig, &present, name, err)) {
                rc = QE_EJSON;
                goto out;
            }
            if (!(factor > 0.0) || !(lo > 0.0) || !(hi > lo) || !(orig >= 1.0) || orig > 1e9) {
                rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\" (llama3): factor %g, "
                                "low_freq_factor %g, high_freq_factor %g, original_max_position_"
                                "embeddings %g: expected positive values with high > low",
                                name, factor, lo, hi, orig);
                goto out;
            }
            c->rope_scaling = QE_ROPE_SCALING_LLAMA3;
            c->rope_llama3_factor = (float)factor;
            c->rope_llama3_low_freq = (float)lo;
            c->rope_llama3_high_freq = (float)hi;
            c->rope_llama3_orig_ctx = (int)orig;
        } else if (desc->flags & QE_ARCH_ROPE_FACTORS && (strcmp(ty->valuestring, "longrope") == 0 ||
                                                          strcmp(ty->valuestring, "su") == 0)) {
            /* LongRoPE: the loader adds rope_factors_long/short from the
             * factor lists; hf_arch_fields sets the attention factor */
        } else if (strcmp(ty->valuestring, "default") != 0) {
            rc = qe_err_set(err, QE_EUNSUPPORTED, "%s: \"rope_scaling\": type '%.40s' not "
                            "supported (linear, llama3)", name, ty->valuestring);
            goto out;
        }
    }
    if ((rc = hf_arch_fields(root, c, desc, name, err)))
        goto out;
    if (c->n_head % c->n_head_kv != 0 || c->head_dim < 2 || c->head_dim % 2 != 0) {
        rc = qe_err_set(err, QE_EJSON, "%s: num_attention_heads %d, num_key_value_heads %d, "
                        "head_dim %d: expected heads a multiple of kv heads, even head_dim",
                        name, c->n_head, c->n_head_kv, c->head_dim);
        goto out;
    }
out:
    cJSON_Delete(top ? top : root);
    return rc;
}

/* ---------------------------------------------------------------- loader */

/* dirname of path, or the path itself if it is a directory. */
static void model_dir(const char *path, char *dir, size_t cap)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        qe_strlcpy(dir, path, cap);
        return;
    }
    const char *s = strrchr(path, '/');
    if (s)
        snprintf(dir, cap, "%.*s", (int)(s - path), path);
    else
        qe_strlcpy(dir, ".", cap);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Rows of a q_proj/k_proj weight (or bias) reordered as
 * convert_hf_to_gguf.py's permute(w, n_head, n_head_kv): within each of
 * `groups` heads, HF row (j*half + i) goes to row (2*i + j), j in {0,1}. */
static void permute_rows(const uint8_t *src, uint8_t *dst, int64_t n_rows, size_t row_nbytes,
                         int64_t groups)
{
    int64_t hd = n_rows / groups, half = hd / 2;
    for (int64_t h = 0; h < groups; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(dst + (size_t)(h * hd + 2 * i + j) * row_nbytes,
                       src + (size_t)(h * hd + j * half + i) * row_nbytes, row_nbytes);
}

/* rope_freqs.weight for llama3 scaling, as convert_hf_to_gguf.py's
 * LlamaModel.generate_extra_tensors computes it (n_rot/2 F32 factors). */
static int add_llama3_rope_freqs(qe_model *m, qe_err *err)
{
    const qe_config *c = &m->cfg;
    int64_t n = c->n_rot / 2;
    float *f = malloc((size_t)n * sizeof *f);
    if (!f)
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory", m->path);
    double lo_wl = c->rope_llama3_orig_ctx / c->rope_llama3_low_freq;
    double hi_wl = c->rope_llama3_orig_ctx / c->rope_llama3_high_freq;
    for (int64_t i = 0; i < n; i++) {
        float freq = (float)(1.0 / pow(c->rope_freq_base, (double)(2 * i) / c->n_rot));
        double wl = 2.0 * M_PI / freq;
        if (wl < hi_wl) {
            f[i] = 1.0f;
        } else if (wl > lo_wl) {
            f[i] = c->rope_llama3_factor;
        } else {
            double smooth = (c->rope_llama3_orig_ctx / wl - c->rope_llama3_low_freq) /
                            (c->rope_llama3_high_freq - c->rope_llama3_low_freq);
            f[i] = (float)(1.0 / ((1.0 - smooth) / c->rope_llama3_factor + smooth));
        }
    }
    int rc = qe_model_add_tensor(m, "rope_freqs.weight", QE_TYPE_F32, 1, &n, f, f, err);
    if (rc)
        free(f);
    else
        m->cfg.has_rope_freqs = true;
    return rc;
}

/* Per-expert HF tensors stacked into one 3-D GGUF tensor (n_expert slices
 * of {n_in, n_out}); filled across shards, added to the model at the end. */
typedef struct expert_stack {
    char name[96];
    int type;
    int64_t ne[3];
    size_t slice_nbytes;
    uint8_t *data;  /* owned until added */
    uint8_t *seen;  /* (n_expert) */
    int n_seen;
} expert_stack;

typedef struct stacks {
    expert_stack *s;
    int n, cap;
} stacks;

static void stacks_free(stacks *st)
{
    for (int i = 0; i < st->n; i++) {
        free(st->s[i].data);
        free(st->s[i].seen);
    }
    free(st->s);
}

static int stack_put(qe_model *m, stacks *st, const char *file, const char *hf_name,
                     const char *gname, int expert, int type, const int64_t ne[2],
                     const void *src, size_t nbytes, qe_err *err)
{
    const int X = m->cfg.n_expert;
    if (X <= 0 || expert >= X)
        return qe_err_set(err, QE_EFORMAT, "%s: tensor '%s': expert %d, but config.json has %d "
                          "experts (num_local_experts / num_experts)", file, hf_name, expert, X);
    expert_stack *e = NULL;
    for (int i = 0; i < st->n && !e; i++)
        if (strcmp(st->s[i].name, gname) == 0)
            e = &st->s[i];
    if (!e) {
        if (st->n == st->cap) {
            int nc = st->cap ? 2 * st->cap : 16;
            expert_stack *p = realloc(st->s, (size_t)nc * sizeof *p);
            if (!p)
                return qe_err_set(err, QE_ENOMEM, "%s: out of memory", file);
            st->s = p;
            st->cap = nc;
        }
        e = &st->s[st->n];
        memset(e, 0, sizeof *e);
        qe_strlcpy(e->name, gname, sizeof e->name);
        e->type = type;
        e->ne[0] = ne[0];
        e->ne[1] = ne[1];
        e->ne[2] = X;
        e->slice_nbytes = nbytes;
        if (nbytes > SIZE_MAX / (size_t)X ||
            !(e->data = malloc(nbytes * (size_t)X)) || !(e->seen = calloc((size_t)X, 1))) {
            free(e->data);
            return qe_err_set(err, QE_ENOMEM, "%s: out of memory stacking '%s'", file, gname);
        }
        st->n++;
    }
    if (e->type != type || e->ne[0] != ne[0] || e->ne[1] != ne[1] || e->slice_nbytes != nbytes)
        return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': shape/dtype differs from the other "
                          "experts of '%s'", file, hf_name, gname);
    if (e->seen[expert])
        return qe_err_set(err, QE_EFORMAT, "%s: tensor '%s' appears twice", file, hf_name);
    memcpy(e->data + (size_t)expert * nbytes, src, nbytes);
    e->seen[expert] = 1;
    e->n_seen++;
    return 0;
}

/* Add the complete stacks to m (each must have every expert). */
static int stacks_add(qe_model *m, stacks *st, const char *path, qe_err *err)
{
    for (int i = 0; i < st->n; i++) {
        expert_stack *e = &st->s[i];
        if (e->n_seen != e->ne[2]) {
            int miss = 0;
            while (miss < e->ne[2] && e->seen[miss])
                miss++;
            return qe_err_set(err, QE_ENOTFOUND, "%s: '%s': expert %d of %lld is missing", path,
                              e->name, miss, (long long)e->ne[2]);
        }
        int rc = qe_model_add_tensor(m, e->name, e->type, 3, e->ne, e->data, e->data, err);
        if (rc)
            return rc;
        e->data = NULL; /* the model owns it */
    }
    return 0;
}

/* Gemma's converter stores norm weights as 1 + w, computed in the
 * checkpoint's dtype (then written as F32). */
static float *gemma_norm_plus_one(const uint8_t *src, int dtype, int64_t n)
{
    float *out = malloc((size_t)(n ? n : 1) * sizeof *out);
    if (!out)
        return NULL;
    const int qt = dtype == QE_ST_F32 ? QE_TYPE_F32 : dtype == QE_ST_F16 ? QE_TYPE_F16
                                                                         : QE_TYPE_BF16;
    const qe_type_traits *tr = qe_type_get(qt);
    tr->to_float(src, out, n);
    for (int64_t i = 0; i < n; i++) {
        out[i] += 1.0f;
        if (dtype == QE_ST_F16)
            out[i] = qe_fp16_to_fp32(qe_fp32_to_fp16(out[i]));
        else if (dtype == QE_ST_BF16)
            out[i] = qe_bf16_to_fp32(qe_fp32_to_bf16(out[i]));
    }
    return out;
}

/* LongRoPE (Phi-3): rope_scaling.long_factor / short_factor lists of
 * config.json -> rope_factors_long/short.weight (n_rot/2 F32 each), as
 * convert_hf_to_gguf.py writes them.  Nothing when rope_scaling is null. */
static int add_longrope_factors(qe_model *m, const char *cfg_path, qe_err *err)
{
    char *txt = NULL;
    size_t n;
    int rc = qe_read_file(cfg_path, &txt, &n, err);
    if (rc)
        return rc;
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    if (!root)
        return qe_err_set(err, QE_EJSON, "%s: malformed JSON", cfg_path);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const int64_t want = m->cfg.n_rot / 2;
    static const char *const keys[2] = {"long_factor", "short_factor"};
    static const char *const names[2] = {"rope_factors_long.weight", "rope_factors_short.weight"};
    for (int k = 0; k < 2 && rc == 0 && cJSON_IsObject(rs); k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(rs, keys[k]);
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != want) {
            rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\".\"%s\": expected an array of "
                            "%lld numbers (rotary dims / 2)", cfg_path, keys[k], (long long)want);
            break;
        }
        float *v = malloc((size_t)want * sizeof *v);
        if (!v) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory");
            break;
        }
        int i = 0;
        for (const cJSON *e = a->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0.0)) {
                rc = qe_err_set(err, QE_EJSON, "%s: \"rope_scaling\".\"%s\"[%d]: expected a "
                                "positive number", cfg_path, keys[k], i);
                break;
            }
            v[i] = (float)e->valuedouble;
        }
        if (rc == 0)
            rc = qe_model_add_tensor(m, names[k], QE_TYPE_F32, 1, &want, v, v, err);
        if (rc)
            free(v);
    }
    cJSON_Delete(root);
    return rc;
}

/* Add every tensor of one parsed shard to m. */
static int add_shard_tensors(qe_model *m, const char *file, const qe_map *map,
                             const qe_st_header *h, bool permute_qk, int *ftype_mask,
                             stacks *stk, qe_err *err)
{
    const qe_config *c = &m->cfg;
    const bool gemma = strncmp(c->arch, "gemma", 5) == 0;
    for (int i = 0; i < h->n_tensors; i++) {
        const qe_st_tensor *st = &h->tensors[i];
        char gname[96], hf[256];
        /* Gemma3ForConditionalGeneration: the text model only */
        const char *nm = st->name;
        if (strncmp(nm, "vision_tower.", 13) == 0 || strncmp(nm, "multi_modal_projector.", 22) == 0 ||
            strncmp(nm, "model.vision_tower.", 19) == 0 ||
            strncmp(nm, "model.multi_modal_projector.", 28) == 0)
            continue;
        if (strncmp(nm, "language_model.", 15) == 0)
            nm += 15;
        else if (strncmp(nm, "model.language_model.", 21) == 0) {
            snprintf(hf, sizeof hf, "model.%s", nm + 21);
            nm = hf;
        }
        int expert = -1;
        int r = qe_hf_name_to_gguf_arch(c->arch, nm, gname, sizeof gname, &expert);
        if (r == 0) {
            size_t ln = strlen(st->name);
            if (ln >= 19 && strcmp(st->name + ln - 19, "rotary_emb.inv_freq") == 0)
                continue; /* recomputed from rope_theta, as the converter does */
            return qe_err_set(err, QE_EUNSUPPORTED,
                              "%s: tensor '%s': no GGUF name for it (unsupported module)", file,
                              st->name);
        }
        if (r < 0)
            return qe_err_set(err, QE_EFORMAT, "%s: tensor '%s': GGUF name too long", file,
                              st->name);
        int type;
        switch (st->dtype) {
        case QE_ST_F32: type = QE_TYPE_F32; *ftype_mask |= 1; break;
        case QE_ST_F16: type = QE_TYPE_F16; *ftype_mask |= 2; break;
        case QE_ST_BF16: type = QE_TYPE_BF16; *ftype_mask |= 4; break;
        default:
            return qe_err_set(err, QE_EUNSUPPORTED,
                              "%s: tensor '%s': dtype %s not supported (F32, F16, BF16)", file,
                              st->name, qe_st_dtype_name(st->dtype));
        }
        if (st->n_dims < 1 || st->n_dims > 4)
            return qe_err_set(err, QE_EUNSUPPORTED, "%s: tensor '%s': %u dims, expected 1..4",
                              file, st->name, st->n_dims);
        int64_t ne[4];
        for (uint32_t d = 0; d < st->n_dims; d++)
            ne[d] = st->shape[st->n_dims - 1 - d];
        const uint8_t *src = map->data + h->data_offset + st->begin;
        size_t esz = qe_st_dtype_size(st->dtype), nbytes = (size_t)(st->end - st->begin);
        if (expert >= 0) {
            if (st->n_dims != 2)
                return qe_err_set(err, QE_ESHAPE, "%s: tensor '%s': %u dims, expected 2 (one "
                                  "expert's matrix)", file, st->name, st->n_dims);
            int rc = stack_put(m, stk, file, st->name, gname, expert, type, ne, src, nbytes, err);
            if (rc)
                return rc;
            continue;
        }
        if (gemma && st->n_dims == 1 && strlen(gname) > 11 &&
            strcmp(gname + strlen(gname) - 11, "norm.weight") == 0) {
            float *v = gemma_norm_plus_one(src, st->dtype, ne[0]);
            if (!v)
                return qe_err_set(err, QE_ENOMEM, "%s: out of memory", file);
            int rc = qe_model_add_tensor(m, gname, QE_TYPE_F32, 1, ne, v, v, err);
            if (rc) {
                free(v);
                return qe_err_prefix(err, "%s", file);
            }
            continue;
        }
        bool is_q = strstr(gname, ".attn_q.") != NULL, is_k = strstr(gname, ".attn_k.") != NULL;
        bool perm = permute_qk && (is_q || is_k);
        void *owned = NULL;
        if (perm || ((uintptr_t)src % esz) != 0) {
            owned = malloc(nbytes ? nbytes : 1);
            if (!owned)
                return qe_err_set(err, QE_ENOMEM, "%s: out of memory", file);
            if (perm) {
                int64_t groups = is_q ? c->n_head : c->n_head_kv;
                int64_t rows = st->n_dims == 1 ? ne[0] : ne[1];
                size_t row_nbytes = st->n_dims == 1 ? esz : (size_t)ne[0] * esz;
                if (st->n_dims > 2 || groups <= 0 || rows % (2 * groups) != 0) {
                    free(owned);
                    return qe_err_set(err, QE_ESHAPE,
                                      "%s: tensor '%s': %lld rows cannot be split into %lld heads "
                                      "of even size for the RoPE permutation", file, st->name,
                                      (long long)rows, (long long)groups);
                }
                permute_rows(src, owned, rows, row_nbytes, groups);
            } else {
                memcpy(owned, src, nbytes);
            }
            src = owned;
        }
        int rc = qe_model_add_tensor(m, gname, type, st->n_dims, ne, src, owned, err);
        if (rc) {
            free(owned);
            return qe_err_prefix(err, "%s", file);
        }
    }
    return 0;
}

/* Shard file names from an index's weight_map (unique, in first-seen
 * order), each a plain file name in `dir`.  *names is owned by the caller
 * (free each, then the array); `index` stays alive for checking the map. */
static int index_shards(const char *index_path, cJSON **index, char ***names, int *n_names,
                        qe_err *err)
{
    char *txt = NULL;
    size_t n;
    int rc = qe_read_file(index_path, &txt, &n, err);
    if (rc)
        return rc;
    *index = cJSON_ParseWithLength(txt, n);
    free(txt);
    if (!*index)
        return qe_err_set(err, QE_EJSON, "%s: malformed JSON", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(*index, "weight_map");
    if (!cJSON_IsObject(wm))
        return qe_err_set(err, QE_EJSON, "%s: \"weight_map\": expected an object", index_path);
    int cap = cJSON_GetArraySize(wm);
    *names = calloc((size_t)(cap > 0 ? cap : 1), sizeof **names);
    if (!*names)
        return qe_err_set(err, QE_ENOMEM, "%s: out of memory", index_path);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return qe_err_set(err, QE_EJSON, "%s: \"weight_map\".\"%.80s\": expected a string",
                              index_path, e->string ? e->string : "");
        const char *f = e->valuestring;
        if (!*f || strchr(f, '/') || strcmp(f, "..") == 0 || strcmp(f, ".") == 0)
            return qe_err_set(err, QE_EFORMAT, "%s: \"weight_map\".\"%.80s\": '%.80s' must be a "
                              "plain file name in the same directory", index_path,
                              e->string ? e->string : "", f);
        bool seen = false;
        for (int k = 0; k < *n_names && !seen; k++)
            seen = strcmp((*names)[k], f) == 0;
        if (!seen) {
            if (!((*names)[*n_names] = strdup(f)))
                return qe_err_set(err, QE_ENOMEM, "%s: out of memory", index_path);
            (*n_names)++;
        }
    }
    if (*n_names == 0)
        return qe_err_set(err, QE_EFORMAT, "%s: \"weight_map\" is empty", index_path);
    return 0;
}

int qe_safetensors_load(qe_model *m, const char *path, const qe_load_opts *opts, qe_err *err)
{
    char dir[512], buf[1024], index_path[1024] = "", single[1024] = "";
    int rc;
    model_dir(path, dir, sizeof dir);
    struct stat st;
    bool is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    size_t pl = strlen(path);
    if (is_dir) {
        snprintf(buf, sizeof buf, "%s/model.safetensors.index.json", dir);
        if (file_exists(buf)) {
            qe_strlcpy(index_path, buf, sizeof index_path);
        } else {
            snprintf(single, sizeof single, "%s/model.safetensors", dir);
            if (!file_exists(single))
                return qe_err_set(err, QE_ENOTFOUND, "%s: neither model.safetensors nor "
                                  "model.safetensors.index.json in this directory", path);
        }
    } else if (pl >= 11 && strcmp(path + pl - 11, "config.json") == 0 &&
               (pl == 11 || path[pl - 12] == '/')) {
        /* config.json itself: the checkpoint is the directory holding it */
        snprintf(buf, sizeof buf, "%s/model.safetensors.index.json", dir);
        if (file_exists(buf))
            qe_strlcpy(index_path, buf, sizeof index_path);
        else
            snprintf(single, sizeof single, "%s/model.safetensors", dir);
    } else if (pl >= 5 && strcmp(path + pl - 5, ".json") == 0) {
        qe_strlcpy(index_path, path, sizeof index_path);
    } else {
        qe_strlcpy(single, path, sizeof single);
    }

    /* config.json first: the Q/K permutation needs the head counts. */
    snprintf(buf, sizeof buf, "%s/config.json", dir);
    char *txt = NULL;
    size_t n;
    if ((rc = qe_read_file(buf, &txt, &n, err)))
        return qe_err_prefix(err, "%s: config.json is required beside the weights", path);
    rc = qe_hf_config_parse(txt, n, buf, &m->cfg, err);
    free(txt);
    if (rc)
        return rc;
    const char *b = strrchr(dir, '/');
    qe_strlcpy(m->cfg.name, b ? b + 1 : dir, sizeof m->cfg.name);
    bool permute_qk = strcmp(m->cfg.arch, "llama") == 0;
    int ftype_mask = 0;
    stacks stk = {0};

    if (single[0]) {
        const qe_map *map;
        qe_st_header h;
        if ((rc = qe_model_attach_map(m, single, &map, err)))
            return rc;
        if ((rc = qe_safetensors_parse_header(map->data, map->nbytes, single, &h, err)))
            return rc;
        rc = add_shard_tensors(m, single, map, &h, permute_qk, &ftype_mask, &stk, err);
        qe_safetensors_header_free(&h);
        if (rc) {
            stacks_free(&stk);
            return rc;
        }
    } else {
        cJSON *index = NULL;
        char **names = NULL;
        int n_names = 0;
        rc = index_shards(index_path, &index, &names, &n_names, err);
        const cJSON *wm = index ? cJSON_GetObjectItemCaseSensitive(index, "weight_map") : NULL;
        for (int k = 0; k < n_names && !rc; k++) {
            char shard[1024];
            snprintf(shard, sizeof shard, "%s/%s", dir, names[k]);
            const qe_map *map;
            qe_st_header h;
            if ((rc = qe_model_attach_map(m, shard, &map, err)))
                break;
            if ((rc = qe_safetensors_parse_header(map->data, map->nbytes, shard, &h, err)))
                break;
            /* Every tensor the index assigns to this shard must be in it. */
            for (const cJSON *e = wm->child; e && !rc; e = e->next) {
                if (strcmp(e->valuestring, names[k]) != 0)
                    continue;
                bool found = false;
                for (int i = 0; i < h.n_tensors && !found; i++)
                    found = strcmp(h.tensors[i].name, e->string) == 0;
                if (!found)
                    rc = qe_err_set(err, QE_ENOTFOUND, "%s: tensor '%s' (listed in %s) is not in "
                                    "this shard", shard, e->string, index_path);
            }
            if (!rc)
                rc = add_shard_tensors(m, shard, map, &h, permute_qk, &ftype_mask, &stk, err);
            qe_safetensors_header_free(&h);
        }
        for (int k = 0; k < n_names; k++)
            free(names[k]);
        free(names);
        cJSON_Delete(index);
        if (rc) {
            stacks_free(&stk);
            return rc;
        }
    }
    rc = stacks_add(m, &stk, path, err);
    stacks_free(&stk);
    if (rc)
        return rc;
    if (m->cfg.has_rope_factors || (qe_arch_find(m->cfg.arch)->flags & QE_ARCH_ROPE_FACTORS)) {
        snprintf(buf, sizeof buf, "%s/config.json", dir);
        if ((rc = add_longrope_factors(m, buf, err)))
            return rc;
    }

    qe_config *c = &m->cfg;
    if (!qe_model_tensor(m, "output.weight"))
        c->tied_output = true;
    else
        c->tied_output = false;
    c->has_qkv_bias = qe_model_tensor(m, "blk.0.attn_q.bias") != NULL;
    c->file_type = ftype_mask == 1 ? 0 : ftype_mask == 2 ? 1 : ftype_mask == 4 ? 32 : -1;
    const qe_tensor *emb = qe_model_tensor(m, "token_embd.weight");
    if (emb && emb->ne[1] != c->n_vocab)
        return qe_err_set(err, QE_ESHAPE, "%s: config.json vocab_size %d, but "
                          "model.embed_tokens.weight has %lld rows", path, c->n_vocab,
                          (long long)emb->ne[1]);
    if (c->rope_scaling == QE_ROPE_SCALING_LLAMA3 && (rc = add_llama3_rope_freqs(m, err)))
        return rc;

    if (opts && opts->no_tokenizer)
        return 0;
    if (opts && opts->tokenizer_path)
        qe_strlcpy(buf, opts->tokenizer_path, sizeof buf);
    else
        snprintf(buf, sizeof buf, "%s/tokenizer.json", dir);
    if (!file_exists(buf))
        return qe_err_set(err, QE_ENOTFOUND, "%s: tokenizer.json not found beside the weights",
                          path);
    m->tok = qe_tokenizer_from_hf(buf, NULL, err);
    if (!m->tok)
        return qe_err_prefix(err, "%s: tokenizer", path);
    return 0;
}
