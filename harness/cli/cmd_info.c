/*
 * cmd_info.c: `qeval info MODEL [--json]`: what a model file holds:
 * architecture and hyperparameters, tokenizer, a table of tensors (name,
 * shape, type, bytes), total params, bits per weight (tensor bits /
 * params), file size, general.file_type and the quantize.imatrix.*
 * provenance keys (GGUF).  Results on stdout; errors on stderr, exit 2.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../../quant/quant.h"
#include "../../quant/recipe.h"
#include "../model/gguf.h"
#include "../model/arch.h"
#include "../model/model.h"
#include "../model/tokenizer.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval info MODEL [--json]\n"
    "\n"
    "Describe a model: architecture, hyperparameters, tokenizer, tensors (name,\n"
    "shape, type, bytes), parameter count, bits per weight, file size, file type\n"
    "and imatrix provenance (quantize.imatrix.* keys).\n"
    "\n"
    "MODEL   a .gguf file, a llama2.c .bin (tok<N>.bin or tokenizer.bin beside it),\n"
    "        or a safetensors directory / file with config.json\n"
    "  --json  print one JSON object instead of text\n";

/* JSON string body with escapes (no surrounding quotes). */
static void json_str(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

static const char *rope_kind_name(int k)
{
    return k == QE_ROPE_NEOX ? "neox" : "norm";
}

static const char *rope_scaling_name(int s)
{
    return s == QE_ROPE_SCALING_LINEAR ? "linear" : s == QE_ROPE_SCALING_LLAMA3 ? "llama3" : "none";
}

/* One GGUF scalar/string value as JSON (text mode prints the same). */
static void print_value(FILE *f, const qe_gguf_value *v)
{
    switch (v->type) {
    case QE_GGUF_STRING:
        fputc('"', f);
        json_str(f, v->v.str.ptr, (size_t)v->v.str.len);
        fputc('"', f);
        break;
    case QE_GGUF_UINT8: case QE_GGUF_UINT16: case QE_GGUF_UINT32: case QE_GGUF_UINT64:
        fprintf(f, "%" PRIu64, v->v.u64);
        break;
    case QE_GGUF_BOOL:
        fputs(v->v.u64 ? "true" : "false", f);
        break;
    case QE_GGUF_INT8: case QE_GGUF_INT16: case QE_GGUF_INT32: case QE_GGUF_INT64:
        fprintf(f, "%" PRId64, v->v.i64);
        break;
    case QE_GGUF_FLOAT32: case QE_GGUF_FLOAT64:
        fprintf(f, "%.9g", v->v.f64);
        break;
    case QE_GGUF_ARRAY:
        fprintf(f, "\"<array of %" PRIu64 ">\"", v->v.arr.n);
        break;
    default:
        fputs("null", f);
    }
}

static void shape_str(const qe_tensor *t, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (uint32_t d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? ", " : "", t->ne[d]);
}

/* The architecture features the forward pass uses (harness/model/arch.h). */
static void print_features(const qe_config *c)
{
    if (!qe_arch_find(c->arch)) {
        printf("features:       unknown architecture (supported: %s)\n", qe_arch_list());
        return;
    }
    printf("features:       ffn %s%s%s%s%s%s\n", c->ffn_act == QE_ACT_GELU ? "gelu" : "silu",
           c->fused_qkv ? ", fused attn_qkv" : "", c->fused_gate_up ? ", fused gate|up" : "",
           c->qk_norm ? ", q/k norms" : "", c->post_norms ? ", post-attn/ffn norms" : "",
           c->embd_scale != 1.0f ? ", embeddings * sqrt(n_embd)" : "");
    if (c->n_expert > 0)
        printf("  experts %d (%d used, width %d, top-k weights %s)%s", c->n_expert,
               c->n_expert_used, c->n_ff_exp, c->moe_norm_topk ? "renormalised" : "as softmax",
               c->n_ff_shexp > 0 ? "" : "\n");
    if (c->n_expert > 0 && c->n_ff_shexp > 0)
        printf(", shared expert width %d (sigmoid gate)\n", c->n_ff_shexp);
    if (c->n_swa > 0) {
        int n_local = 0;
        for (int l = 0; l < c->n_layer; l++)
            n_local += qe_config_layer_swa(c, l);
        printf("  sliding window %d on %d of %d layers (pattern %d)", c->n_swa, n_local,
               c->n_layer, c->swa_pattern);
        if (c->rope_freq_base_swa != c->rope_freq_base ||
            c->rope_freq_scale_swa != c->rope_freq_scale)
            printf(", local rope base %g scale %g", (double)c->rope_freq_base_swa,
                   (double)c->rope_freq_scale_swa);
        putchar('\n');
    }
    printf("  attention scale %.6g%s", (double)c->attn_scale,
           c->q_prescale ? " (on q)" : "");
    if (c->attn_softcap > 0.0f || c->final_softcap > 0.0f)
        printf(", soft-caps attn %g final %g", (double)c->attn_softcap,
               (double)c->final_softcap);
    if (c->has_rope_factors)
        printf(", LongRoPE factors (long above ctx %d)",
               c->rope_llama3_orig_ctx > 0 ? c->rope_llama3_orig_ctx : c->n_ctx_train);
    if (c->rope_attn_factor != 1.0f)
        printf(", rope attn_factor %g", (double)c->rope_attn_factor);
    putchar('\n');
}

static void print_text(const qe_model *m, int vrc, const qe_err *verr)
{
    const qe_config *c = &m->cfg;
    uint64_t np = qe_model_n_params(m), nb = qe_model_tensor_nbytes(m);
    const char *ft = qe_ftype_name(c->file_type);
    printf("model:          %s\n", m->path);
    printf("format:         %s\n", qe_model_format_name(m->format));
    printf("name:           %s\n", c->name);
    printf("architecture:   %s\n", c->arch);
    printf("file size:      %" PRIu64 " B (%.2f MiB)\n", m->file_nbytes,
           (double)m->file_nbytes / 1048576.0);
    if (c->file_type < 0)
        printf("file type:      not set (general.file_type absent)\n");
    else
        printf("file type:      %d (%s)\n", c->file_type, ft ? ft : "unknown");
    printf("hyperparameters:\n");
    printf("  n_vocab %d, n_embd %d, n_ff %d, n_layer %d\n", c->n_vocab, c->n_embd, c->n_ff,
           c->n_layer);
    printf("  n_head %d, n_head_kv %d, head_dim %d, n_rot %d, n_ctx_train %d\n", c->n_head,
           c->n_head_kv, c->head_dim, c->n_rot, c->n_ctx_train);
    printf("  rms_eps %g, rope %s, freq_base %g, scaling %s (freq_scale %g)\n", (double)c->rms_eps,
           rope_kind_name(c->rope_kind), (double)c->rope_freq_base,
           rope_scaling_name(c->rope_scaling), (double)c->rope_freq_scale);
    if (c->rope_scaling == QE_ROPE_SCALING_LLAMA3)
        printf("  llama3 rope: factor %g, low %g, high %g, original ctx %d, rope_freqs tensor %s\n",
               (double)c->rope_llama3_factor, (double)c->rope_llama3_low_freq,
               (double)c->rope_llama3_high_freq, c->rope_llama3_orig_ctx,
               c->has_rope_freqs ? "yes" : "no");
    printf("  tied_output %s, qkv_bias %s\n", c->tied_output ? "yes" : "no",
           c->has_qkv_bias ? "yes" : "no");
    print_features(c);
    if (m->tok)
        printf("tokenizer:      %s, pre '%s', %d tokens, bos %d, eos %d, add_bos %s, add_eos %s\n",
               qe_tokenizer_kind_name(m->tok), qe_tokenizer_pre(m->tok),
               (int)qe_tokenizer_n_vocab(m->tok), (int)qe_tokenizer_bos(m->tok),
               (int)qe_tokenizer_eos(m->tok), qe_tokenizer_add_bos(m->tok) ? "yes" : "no",
               qe_tokenizer_add_eos(m->tok) ? "yes" : "no");
    else
        printf("tokenizer:      none\n");
    if (m->gguf) {
        for (uint64_t i = 0; i < m->gguf->n_kv; i++) {
            const qe_gguf_kv *kv = &m->gguf->kvs[i];
            if (kv->key.len > 17 && memcmp(kv->key.ptr, "quantize.imatrix.", 17) == 0) {
                printf("imatrix:        %.*s = ", (int)kv->key.len, kv->key.ptr);
                print_value(stdout, &kv->val);
                putchar('\n');
            }
        }
    }
    printf("tensors (%d):\n", m->n_tensors);
    printf("  %-32s %-16s %-8s %12s\n", "name", "shape (ne)", "type", "bytes");
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = &m->tensors[i];
        char sh[96];
        shape_str(t, sh, sizeof sh);
        const char *tn = qe_type_name(t->type);
        printf("  %-32s %-16s %-8s %12" PRIu64 "\n", t->name, sh, tn ? tn : "?", t->nbytes);
    }
    printf("params:         %" PRIu64 "\n", np);
    printf("tensor bytes:   %" PRIu64 "\n", nb);
    printf("bits/weight:    %.4f\n", np ? 8.0 * (double)nb / (double)np : 0.0);
    if (vrc)
        printf("validation:     FAILED: %s\n", verr->msg);
    else
        printf("validation:     ok\n");
}

static void print_json(const qe_model *m, int vrc, const qe_err *verr)
{
    const qe_config *c = &m->cfg;
    uint64_t np = qe_model_n_params(m), nb = qe_model_tensor_nbytes(m);
    const char *ft = qe_ftype_name(c->file_type);
    printf("{\n  \"path\": \"");
    json_str(stdout, m->path, strlen(m->path));
    printf("\",\n  \"format\": \"%s\",\n  \"name\": \"", qe_model_format_name(m->format));
    json_str(stdout, c->name, strlen(c->name));
    printf("\",\n  \"arch\": \"");
    json_str(stdout, c->arch, strlen(c->arch));
    printf("\",\n  \"file_nbytes\": %" PRIu64 ",\n  \"file_type\": %d,\n", m->file_nbytes,
           c->file_type);
    printf("  \"file_type_name\": %s%s%s,\n", ft ? "\"" : "", ft ? ft : "null", ft ? "\"" : "");
    printf("  \"n_vocab\": %d, \"n_embd\": %d, \"n_ff\": %d, \"n_layer\": %d,\n", c->n_vocab,
           c->n_embd, c->n_ff, c->n_layer);
    printf("  \"n_head\": %d, \"n_head_kv\": %d, \"head_dim\": %d, \"n_rot\": %d, "
           "\"n_ctx_train\": %d,\n", c->n_head, c->n_head_kv, c->head_dim, c->n_rot,
           c->n_ctx_train);
    printf("  \"rms_eps\": %.9g, \"rope_kind\": \"%s\", \"rope_freq_base\": %.9g,\n",
           (double)c->rms_eps, rope_kind_name(c->rope_kind), (double)c->rope_freq_base);
    printf("  \"rope_scaling\": \"%s\", \"rope_freq_scale\": %.9g, \"has_rope_freqs\": %s,\n",
           rope_scaling_name(c->rope_scaling), (double)c->rope_freq_scale,
           c->has_rope_freqs ? "true" : "false");
    printf("  \"tied_output\": %s, \"has_qkv_bias\": %s,\n", c->tied_output ? "true" : "false",
           c->has_qkv_bias ? "true" : "false");
    printf("  \"features\": {\"ffn_act\": \"%s\", \"fused_qkv\": %s, \"fused_gate_up\": %s, "
           "\"qk_norm\": %s, \"post_norms\": %s, \"embd_scale\": %.9g, \"attn_scale\": %.9g, "
           "\"q_prescale\": %s,\n", c->ffn_act == QE_ACT_GELU ? "gelu" : "silu",
           c->fused_qkv ? "true" : "false", c->fused_gate_up ? "true" : "false",
           c->qk_norm ? "true" : "false", c->post_norms ? "true" : "false",
           (double)c->embd_scale, (double)c->attn_scale, c->q_prescale ? "true" : "false");
    printf("    \"attn_softcap\": %.9g, \"final_softcap\": %.9g, \"n_swa\": %d, "
           "\"swa_pattern\": %d, \"rope_freq_base_swa\": %.9g, \"rope_attn_factor\": %.9g, "
           "\"has_rope_factors\": %s,\n", (double)c->attn_softcap, (double)c->final_softcap,
           c->n_swa, c->swa_pattern, (double)c->rope_freq_base_swa, (double)c->rope_attn_factor,
           c->has_rope_factors ? "true" : "false");
    printf("    \"n_expert\": %d, \"n_expert_used\": %d, \"n_ff_exp\": %d, "
           "\"moe_norm_topk\": %s, \"n_ff_shexp\": %d},\n", c->n_expert, c->n_expert_used,
           c->n_expert > 0 ? c->n_ff_exp : 0, c->moe_norm_topk ? "true" : "false",
           c->n_ff_shexp);
    if (m->tok) {
        printf("  \"tokenizer\": {\"kind\": \"%s\", \"pre\": \"", qe_tokenizer_kind_name(m->tok));
        json_str(stdout, qe_tokenizer_pre(m->tok), strlen(qe_tokenizer_pre(m->tok)));
        printf("\", \"n_vocab\": %d, \"bos\": %d, \"eos\": %d, \"add_bos\": %s, "
               "\"add_eos\": %s},\n",
               (int)qe_tokenizer_n_vocab(m->tok), (int)qe_tokenizer_bos(m->tok),
               (int)qe_tokenizer_eos(m->tok), qe_tokenizer_add_bos(m->tok) ? "true" : "false",
               qe_tokenizer_add_eos(m->tok) ? "true" : "false");
    } else {
        printf("  \"tokenizer\": null,\n");
    }
    printf("  \"imatrix\": {");
    int k = 0;
    for (uint64_t i = 0; m->gguf && i < m->gguf->n_kv; i++) {
        const qe_gguf_kv *kv = &m->gguf->kvs[i];
        if (kv->key.len > 17 && memcmp(kv->key.ptr, "quantize.imatrix.", 17) == 0) {
            printf("%s\"", k++ ? ", " : "");
            json_str(stdout, kv->key.ptr + 17, (size_t)kv->key.len - 17);
            printf("\": ");
            print_value(stdout, &kv->val);
        }
    }
    printf("},\n  \"n_params\": %" PRIu64 ",\n  \"tensor_nbytes\": %" PRIu64 ",\n", np, nb);
    printf("  \"bits_per_weight\": %.6f,\n", np ? 8.0 * (double)nb / (double)np : 0.0);
    printf("  \"valid\": %s,\n", vrc ? "false" : "true");
    if (vrc) {
        printf("  \"validation_error\": \"");
        json_str(stdout, verr->msg, strlen(verr->msg));
        printf("\",\n");
    }
    printf("  \"tensors\": [\n");
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = &m->tensors[i];
        char sh[96];
        shape_str(t, sh, sizeof sh);
        const char *tn = qe_type_name(t->type);
        printf("    {\"name\": \"");
        json_str(stdout, t->name, strlen(t->name));
        printf("\", \"ne\": [%s], \"type\": \"%s\", \"nbytes\": %" PRIu64 "}%s\n", sh,
               tn ? tn : "?", t->nbytes, i + 1 < m->n_tensors ? "," : "");
    }
    printf("  ]\n}\n");
}

int qe_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if (qe_arg_is_flag(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return qe_usage_error("info", "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return qe_usage_error("info", "more than one MODEL ('%s' and '%s')", path, argv[i]);
        }
    }
    if (!path)
        return qe_usage_error("info", "missing MODEL");
    qe_err err = {0};
    qe_load_opts opts = {.no_validate = true};
    qe_model *m = qe_model_load(path, &opts, &err);
    if (!m)
        return qe_report_error("info", &err);
    qe_err verr = {0};
    int vrc = qe_model_validate(m, &verr);
    if (json)
        print_json(m, vrc, &verr);
    else
        print_text(m, vrc, &verr);
    if (vrc)
        fprintf(stderr, "qeval info: warning: %s\n", verr.msg);
    qe_model_free(m);
    return QE_EXIT_OK;
}
