/*
 * main.c: the qeval entry point: dispatch to one command per file.
 * Only main-level code chooses exit status (STYLE.md).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    qe_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"info", qe_cmd_info, "architecture, tokenizer, tensors, params, bits per weight"},
    {"tokenize", qe_cmd_tokenize, "tokenize text with the model's tokenizer"},
    {"template", qe_cmd_template, "render a conversation through the model's chat template"},
    {"ppl", qe_cmd_ppl, "llama.cpp-compatible perplexity; KL divergence with --reference"},
    {"generate", qe_cmd_generate, "greedy generation (sanity check)"},
    {"quantize", qe_cmd_quantize, "quantize a model to GGUF (Q8_0 ... Q2_K, recipes, imatrix)"},
    {"imatrix", qe_cmd_imatrix, "collect an importance matrix over calibration text"},
    {"eval", qe_cmd_eval, "evaluate tasks on a model or an existing GGUF"},
    {"tasks", qe_cmd_tasks, "list the task specs"},
    {"suites", qe_cmd_suites, "list the suites"},
    {"run", qe_cmd_run, "quantize at several bit depths and evaluate each (into SQLite)"},
    {"report", qe_cmd_report, "render results: table, md, html, json, card"},
    {"compare", qe_cmd_compare, "paired comparison of two runs or variants"},
    {"gate", qe_cmd_gate, "CI gate: exit 1 on a significant regression"},
    {"history", qe_cmd_history, "trend of one metric over time"},
    {"merge", qe_cmd_merge, "join sharded result databases"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "qeval %s: quantization quality evaluation harness\n\n"
               "usage: qeval COMMAND [options]   (qeval COMMAND --help for details)\n\n"
               "commands:\n", QE_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 ok, 1 gate regression, 2 usage error or bad input\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return QE_EXIT_USAGE;
    }
    if (qe_arg_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return QE_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("qeval %s\n", QE_VERSION);
        return QE_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "qeval: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return QE_EXIT_USAGE;
}
