/*
 * cmd_tokenize.c: `qeval tokenize MODEL (--text TEXT | --file F) [--ids]
 * [--no-bos] [--special]`: tokenize with the model's own tokenizer and
 * print one "id -> 'piece'" line per token, or with --ids the list
 * "[1, 403, 407]" (as llama-tokenize --ids prints it).
 *
 * MODEL may also be a bare HF tokenizer.json, or a directory holding
 * tokenizer files and no weights: then only the tokenizer is loaded
 * (tokenizer_config.json beside it is read when present).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/model.h"
#include "../model/tokenizer.h"
#include "cli.h"

#include <sys/stat.h>

static const char USAGE[] =
    "usage: qeval tokenize MODEL (--text TEXT | --file F) [--ids] [--no-bos] [--special]\n"
    "                      [--split SEP]\n"
    "\n"
    "Tokenize text with the model's tokenizer (GGUF metadata, tokenizer.json,\n"
    "or llama2.c tokenizer.bin) and print one 'id -> piece' line per token.\n"
    "MODEL may be a bare tokenizer.json, or a directory with tokenizer files only.\n"
    "\n"
    "  --text TEXT  the text to tokenize\n"
    "  --file F     read the text from file F instead\n"
    "  --ids        print only the ids, as [1, 403, 407]\n"
    "  --no-bos     do not add BOS/EOS (the vocab's add_bos/add_eos otherwise)\n"
    "  --special    parse special-token texts (e.g. <|endoftext|>) as tokens\n"
    "  --split SEP  tokenize each part of the text between separators SEP (\\n is a\n"
    "               newline) on its own and print one id list per line, e.g.\n"
    "               --split '\\n__ggml_vocab_test__\\n' for llama.cpp's test vectors\n";

/* A bare HF tokenizer: "tokenizer.json" itself, or a directory with a
 * tokenizer.json and no config.json (no weights to load).  Fills json. */
static bool bare_tokenizer(const char *path, char *json, size_t cap)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    if (S_ISDIR(st.st_mode)) {
        char cfg[1200];
        snprintf(json, cap, "%s/tokenizer.json", path);
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        return stat(json, &st) == 0 && stat(cfg, &st) != 0;
    }
    size_t n = strlen(path), k = strlen("tokenizer.json");
    if (n >= k && strcmp(path + n - k, "tokenizer.json") == 0 &&
        (n == k || path[n - k - 1] == '/')) {
        snprintf(json, cap, "%s", path);
        return true;
    }
    return false;
}

/* A piece with non-printable bytes as \xNN, quotes and backslashes escaped. */
static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\'' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

/* --split: one "[ids]" line per part; a trailing separator ends the text. */
static int tokenize_parts(const qe_tokenizer *tok, const char *text, size_t len, const char *sep_arg,
                          bool add_special, bool special, qe_err *err)
{
    char sep[256];
    size_t sl = 0;
    for (const char *p = sep_arg; *p && sl < sizeof sep - 1; p++) {
        if (p[0] == '\\' && p[1] == 'n') {
            sep[sl++] = '\n';
            p++;
        } else if (p[0] == '\\' && p[1] == 't') {
            sep[sl++] = '\t';
            p++;
        } else {
            sep[sl++] = *p;
        }
    }
    if (!sl)
        return qe_usage_error("tokenize", "--split: empty separator");
    size_t pos = 0, parts = 0;
    while (pos < len) {
        const char *nx = memmem(text + pos, len - pos, sep, sl);
        size_t plen = nx ? (size_t)(nx - (text + pos)) : len - pos;
        int32_t *ids = NULL;
        size_t n = 0;
        if (qe_tokenize(tok, text + pos, plen, add_special, special, &ids, &n, err) != 0) {
            qe_err_prefix(err, "part %zu", parts);
            return qe_report_error("tokenize", err);
        }
        putchar('[');
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? ", " : "", (int)ids[i]);
        puts("]");
        free(ids);
        parts++;
        pos += plen + (nx ? sl : 0);
    }
    fprintf(stderr, "qeval tokenize: %zu parts\n", parts);
    return QE_EXIT_OK;
}

int qe_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL, *text = NULL, *file = NULL, *split_arg = NULL;
    bool ids_only = false, no_bos = false, special = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if ((v = qe_arg_value(argc, argv, &i, "--text", NULL))) {
            text = v;
        } else if (i > argc) {
            return qe_usage_error("tokenize", "option needs a value");
        } else if ((v = qe_arg_value(argc, argv, &i, "--file", NULL))) {
            file = v;
        } else if (i > argc) {
            return qe_usage_error("tokenize", "option needs a value");
        } else if ((v = qe_arg_value(argc, argv, &i, "--split", NULL))) {
            split_arg = v;
        } else if (i > argc) {
            return qe_usage_error("tokenize", "option needs a value");
        } else if (qe_arg_is_flag(argv[i], "--ids")) {
            ids_only = true;
        } else if (qe_arg_is_flag(argv[i], "--no-bos")) {
            no_bos = true;
        } else if (qe_arg_is_flag(argv[i], "--special")) {
            special = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return qe_usage_error("tokenize", "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return qe_usage_error("tokenize", "more than one MODEL ('%s' and '%s')", path,
                                  argv[i]);
        }
    }
    if (!path)
        return qe_usage_error("tokenize", "missing MODEL");
    if (!text == !file)
        return qe_usage_error("tokenize", "give exactly one of --text TEXT or --file F");

    int status = QE_EXIT_OK;
    qe_err err = {0};
    char *buf = NULL;
    size_t len;
    if (file) {
        if (qe_read_file(file, &buf, &len, &err) != 0)
            return qe_report_error("tokenize", &err);
        text = buf;
    } else {
        len = strlen(text);
    }
    qe_model *m = NULL;
    qe_tokenizer *tok = NULL, *own_tok = NULL;
    char json[1100];
    if (bare_tokenizer(path, json, sizeof json)) {
        own_tok = tok = qe_tokenizer_from_hf(json, NULL, &err);
        if (!tok) {
            free(buf);
            return qe_report_error("tokenize", &err);
        }
    } else {
        qe_load_opts opts = {.no_validate = true};
        m = qe_model_load(path, &opts, &err);
        if (!m) {
            free(buf);
            return qe_report_error("tokenize", &err);
        }
        tok = m->tok;
    }
    if (!tok) {
        qe_err_set(&err, QE_ENOTFOUND, "%s: the model has no tokenizer", path);
        status = qe_report_error("tokenize", &err);
        goto out_free_model;
    }
    if (split_arg) {
        status = tokenize_parts(tok, text, len, split_arg, !no_bos, special, &err);
        goto out_free_model;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (qe_tokenize(tok, text, len, !no_bos, special, &ids, &n, &err) != 0) {
        status = qe_report_error("tokenize", &err);
        goto out_free_model;
    }
    if (ids_only) {
        putchar('[');
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? ", " : "", (int)ids[i]);
        puts("]");
    } else {
        char piece[256];
        for (size_t i = 0; i < n; i++) {
            int pl = qe_token_to_piece(tok, ids[i], piece, sizeof piece);
            printf("%6d -> '", (int)ids[i]);
            if (pl > 0)
                print_piece(piece, (size_t)pl < sizeof piece ? (size_t)pl : sizeof piece);
            puts("'");
        }
    }
    fprintf(stderr, "qeval tokenize: %zu tokens\n", n);
    free(ids);
out_free_model:
    qe_tokenizer_free(own_tok);
    qe_model_free(m);
    free(buf);
    return status;
}
