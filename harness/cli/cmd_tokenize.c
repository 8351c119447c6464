/*
 * cmd_tokenize.c: `qeval tokenize MODEL (--text TEXT | --file F) [--ids]
 * [--no-bos] [--special]`: tokenize with the model's own tokenizer and
 * print one "id -> 'piece'" line per token, or with --ids the list
 * "[1, 403, 407]" (as llama-tokenize --ids prints it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/model.h"
#include "../model/tokenizer.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval tokenize MODEL (--text TEXT | --file F) [--ids] [--no-bos] [--special]\n"
    "\n"
    "Tokenize text with the model's tokenizer (GGUF metadata, tokenizer.json,\n"
    "or llama2.c tokenizer.bin) and print one 'id -> piece' line per token.\n"
    "\n"
    "  --text TEXT  the text to tokenize\n"
    "  --file F     read the text from file F instead\n"
    "  --ids        print only the ids, as [1, 403, 407]\n"
    "  --no-bos     do not add BOS/EOS (the vocab's add_bos/add_eos otherwise)\n"
    "  --special    parse special-token texts (e.g. <|endoftext|>) as tokens\n";

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

int qe_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL, *text = NULL, *file = NULL;
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
    qe_load_opts opts = {.no_validate = true};
    qe_model *m = qe_model_load(path, &opts, &err);
    if (!m) {
        free(buf);
        return qe_report_error("tokenize", &err);
    }
    if (!m->tok) {
        qe_err_set(&err, QE_ENOTFOUND, "%s: the model has no tokenizer", path);
        status = qe_report_error("tokenize", &err);
        goto out_free_model;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (qe_tokenize(m->tok, text, len, !no_bos, special, &ids, &n, &err) != 0) {
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
            int pl = qe_token_to_piece(m->tok, ids[i], piece, sizeof piece);
            printf("%6d -> '", (int)ids[i]);
            if (pl > 0)
                print_piece(piece, (size_t)pl < sizeof piece ? (size_t)pl : sizeof piece);
            puts("'");
        }
    }
    fprintf(stderr, "qeval tokenize: %zu tokens\n", n);
    free(ids);
out_free_model:
    qe_model_free(m);
    free(buf);
    return status;
}
