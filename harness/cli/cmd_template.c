/*
 * cmd_template.c: `qeval template [MODEL] [--chat-template FILE]
 * [--template-name NAME] [--context FILE.json] [--add-generation-prompt]
 * [--template-var K=V]...`: render a conversation through the model's chat
 * template and print the text byte for byte, so that a template can be
 * checked the way tokenization is checked.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../chat/chat.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval template [MODEL] [--chat-template FILE] [--template-name NAME]\n"
    "                      [--context FILE.json] [--add-generation-prompt]\n"
    "                      [--template-var K=V]... [--info]\n"
    "\n"
    "Render a conversation through a chat template (sandboxed Jinja2, as\n"
    "transformers renders it) and print the text to stdout byte for byte.\n"
    "\n"
    "  MODEL               a GGUF file (tokenizer.chat_template), an HF model or\n"
    "                      tokenizer directory (chat_template.jinja or\n"
    "                      tokenizer_config.json), or a tokenizer_config.json;\n"
    "                      also supplies bos_token/eos_token when the context lacks them\n"
    "  --chat-template F   use the template in file F instead of the model's\n"
    "  --template-name N   a named template (GGUF tokenizer.chat_template.N, or\n"
    "                      the entry named N of a tokenizer_config.json list)\n"
    "  --context F         JSON object with messages and any other variable the\n"
    "                      template reads (tools, add_generation_prompt,\n"
    "                      enable_thinking, ...); '-' reads stdin.  Default: a\n"
    "                      short user/assistant/user conversation\n"
    "  --add-generation-prompt  set add_generation_prompt=true\n"
    "  --template-var K=V  set variable K (V as JSON if it parses, else a string),\n"
    "                      e.g. enable_thinking=false\n"
    "  --info              print the template's origin and sha256 to stderr\n"
    "\n"
    "Exit status 2 with the message (line and column) when the template fails,\n"
    "including a raise_exception in the template.\n";

static const char DEFAULT_CONTEXT[] =
    "{\"messages\": ["
    "{\"role\": \"user\", \"content\": \"Hello, how are you?\"},"
    "{\"role\": \"assistant\", \"content\": \"I'm doing great. How can I help you today?\"},"
    "{\"role\": \"user\", \"content\": \"What is 2 + 2?\"}]}";

static char *read_stdin(size_t *n)
{
    size_t cap = 65536, k = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    for (;;) {
        if (k + 4096 > cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + k, 1, cap - k - 1, stdin);
        if (!r)
            break;
        k += r;
    }
    b[k] = 0;
    *n = k;
    return b;
}

int qe_cmd_template(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *name = NULL, *ctx_path = NULL;
    bool gen_prompt = false, info = false;
    const char **vars = calloc((size_t)argc + 1, sizeof *vars);
    int n_vars = 0, status = QE_EXIT_OK;
    if (!vars)
        return QE_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            free(vars);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--chat-template", NULL))) {
            file = v;
        } else if (i > argc) {
            free(vars);
            return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--template-name", NULL))) {
            name = v;
        } else if (i > argc) {
            free(vars);
            return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--context", NULL))) {
            ctx_path = v;
        } else if (i > argc) {
            free(vars);
            return QE_EXIT_USAGE;
        } else if ((v = qe_arg_value(argc, argv, &i, "--template-var", NULL))) {
            vars[n_vars++] = v;
        } else if (i > argc) {
            free(vars);
            return QE_EXIT_USAGE;
        } else if (qe_arg_is_flag(argv[i], "--add-generation-prompt")) {
            gen_prompt = true;
        } else if (qe_arg_is_flag(argv[i], "--info")) {
            info = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            free(vars);
            return qe_usage_error("template", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            free(vars);
            return qe_usage_error("template", "more than one MODEL ('%s' and '%s')", model,
                                  argv[i]);
        }
    }
    if (!model && !file) {
        free(vars);
        return qe_usage_error("template", "give a MODEL or --chat-template FILE");
    }
    qe_err err = {0};
    char *text = NULL, *out = NULL;
    size_t n = 0, on = 0;
    cJSON *ctx = NULL;
    qe_chat_template *ct = qe_chat_template_load(model, file, name, &err);
    if (!ct) {
        status = qe_report_error("template", &err);
        goto out;
    }
    if (ctx_path) {
        if (strcmp(ctx_path, "-") == 0) {
            text = read_stdin(&n);
        } else if (qe_read_file(ctx_path, &text, &n, &err)) {
            status = qe_report_error("template", &err);
            goto out;
        }
        size_t bad = 0;
        ctx = text ? qe_jinja_json_parse(text, n, &bad) : NULL;
        if (!cJSON_IsObject(ctx)) {
            qe_err_set(&err, QE_EJSON, "%s: %s at byte %zu", ctx_path,
                       ctx ? "expected a JSON object" : "malformed JSON", ctx ? (size_t)0 : bad);
            status = qe_report_error("template", &err);
            goto out;
        }
    } else {
        ctx = cJSON_Parse(DEFAULT_CONTEXT);
    }
    if (gen_prompt) {
        cJSON_DeleteItemFromObjectCaseSensitive(ctx, "add_generation_prompt");
        cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    }
    for (int k = 0; k < n_vars; k++)
        if (qe_chat_set_var(ctx, vars[k], &err)) {
            status = qe_usage_error("template", "%s", err.msg);
            goto out;
        }
    if (info)
        fprintf(stderr, "qeval template: %s (%zu bytes, sha256 %s)\n", ct->origin, ct->n,
                ct->sha256);
    if (qe_chat_render(ct, ctx, &out, &on, &err)) {
        status = qe_report_error("template", &err);
        goto out;
    }
    fwrite(out, 1, on, stdout);
    fflush(stdout);
out:
    free(out);
    cJSON_Delete(ctx);
    free(text);
    qe_chat_template_free(ct);
    free(vars);
    return status;
}
