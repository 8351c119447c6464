/*
 * test_e2e.c: end-to-end checks of the qeval binary as a user meets it:
 * every command answers --help with exit 0 and a bad option with a clear
 * message and exit 2; the smoke suite runs on the real stories260K model
 * (llama2.c .bin as candidate, the same weights as GGUF as reference), and
 * its numbers are the ones the libraries give (identical weights => every
 * paired delta is exactly zero).
 *
 * The binary is $QEVAL_BIN (set by `make test`), else ./qeval.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static const char *const commands[] = {
    "info", "tokenize", "template", "ppl", "generate", "quantize", "imatrix", "eval", "tasks",
    "suites", "run", "report", "compare", "gate", "history", "merge",
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

TEST(every_command_has_help)
{
    char cmd[512];
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char *out = NULL;
        snprintf(cmd, sizeof cmd, "%s %s --help 2>&1", test_qeval_bin(), commands[i]);
        int rc = test_run_cmd(cmd, &out);
        CHECKF(rc == 0, "%s --help exited %d", commands[i], rc);
        CHECKF(out && (strstr(out, "usage") || strstr(out, "Usage")),
               "%s --help prints no usage line", commands[i]);
        free(out);
    }
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s --help 2>&1", test_qeval_bin());
    CHECK(test_run_cmd(cmd, &out) == 0);
    for (size_t i = 0; i < N_COMMANDS; i++)
        CHECKF(out && strstr(out, commands[i]), "top-level help does not list '%s'", commands[i]);
    free(out);
}

TEST(bad_option_exits_2_with_message)
{
    char cmd[512];
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char *out = NULL;
        snprintf(cmd, sizeof cmd, "%s %s --no-such-option 2>&1", test_qeval_bin(), commands[i]);
        int rc = test_run_cmd(cmd, &out);
        CHECKF(rc == 2, "%s --no-such-option exited %d (want 2)", commands[i], rc);
        CHECKF(out && strstr(out, "--no-such-option"),
               "%s: message does not name the bad option: %s", commands[i], out ? out : "");
        free(out);
    }
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", test_qeval_bin());
    CHECK(test_run_cmd(cmd, &out) == 2);
    CHECK(out && strstr(out, "unknown command 'frobnicate'"));
    free(out);
}

TEST(missing_model_file_is_a_clear_error)
{
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s info /nonexistent/model.gguf 2>&1", test_qeval_bin());
    int rc = test_run_cmd(cmd, &out);
    CHECKF(rc == 2, "exit %d", rc);
    CHECKF(out && strstr(out, "/nonexistent/model.gguf"), "message does not name the file: %s",
           out ? out : "");
    free(out);
}

/* The smoke suite end to end: candidate = llama2.c .bin, reference = the
 * GGUF of the same weights.  Every task row must be present, and because
 * the weights are bit-identical, each paired delta is exactly +0.0000. */
TEST(smoke_suite_end_to_end)
{
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "QEVAL_QUIET=1 %s eval %s --reference %s --suite smoke --threads 2 2>/dev/null", test_qeval_bin(),
             test_asset("models/stories260K/stories260K.bin"),
             test_asset("models/stories260K/stories260K.gguf"));
    int rc = test_run_cmd(cmd, &out);
    REQUIRE(rc == 0, "qeval eval --suite smoke exited %d:\n%s", rc, out ? out : "");
    static const char *const rows[] = {"tinystories-cloze", "tinystories-ppl", "copa", "gsm8k",
                                       "humaneval"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECKF(strstr(out, rows[i]) != NULL, "no row for task %s", rows[i]);
    /* every line with a delta column shows an exact zero delta */
    int n_delta = 0, n_nonzero = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char *d = strstr(line, "+0.0000");
        if (strstr(line, "task ") == line)
            continue;
        if (d)
            n_delta++;
        else if (strchr(line, '+') || strstr(line, " -0.") || strstr(line, " -1."))
            n_nonzero++;
    }
    CHECKF(n_delta >= 8, "expected >= 8 metric rows with a zero delta, got %d", n_delta);
    CHECKF(n_nonzero == 0, "%d rows show a non-zero delta for identical weights", n_nonzero);
    free(out);
}


/* `qeval tokenize` on a bare tokenizer.json and on a directory holding only
 * tokenizer files: llama.cpp's llama-bpe and qwen2 vectors (test-tokenizer-0
 * settings: no BOS, no special parsing), one process per tokenizer. */
TEST(tokenize_bare_tokenizer_vectors)
{
    const struct {
        const char *model, *vectors;
    } cases[] = {
        {"tokenizers/hf-llama3/tokenizer.json", "tokenizers/llama.cpp-vocab/ggml-vocab-llama-bpe.gguf"},
        {"tokenizers/hf-qwen3", "tokenizers/llama.cpp-vocab/ggml-vocab-qwen2.gguf"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char model[512], inp[512], outp[512], cmd[2048];
        snprintf(model, sizeof model, "%s", test_asset(cases[c].model));
        snprintf(inp, sizeof inp, "%s.inp", test_asset(cases[c].vectors));
        snprintf(outp, sizeof outp, "%s.out", test_asset(cases[c].vectors));
        FILE *fo = fopen(outp, "rb");
        if (!fo || access(model, R_OK) != 0) {
            printf("  skipped: %s or %s not found\n", model, outp);
            if (fo)
                fclose(fo);
            continue;
        }
        snprintf(cmd, sizeof cmd,
                 "%s tokenize %s --file %s --split '\\n__ggml_vocab_test__\\n' --ids --no-bos "
                 "2>/dev/null",
                 test_qeval_bin(), model, inp);
        char *got = NULL;
        int rc = test_run_cmd(cmd, &got);
        CHECKF(rc == 0, "%s: rc=%d", cmd, rc);
        /* compare line by line: "[1, 2]" against " 1 2" */
        char want[65536], *g = got;
        int n = 0, bad = 0;
        while (fgets(want, sizeof want, fo)) {
            char norm[65536];
            size_t k = 0;
            norm[k++] = '[';
            for (char *t = strtok(want, " \n"); t; t = strtok(NULL, " \n"))
                k += (size_t)snprintf(norm + k, sizeof norm - k, "%s%s", k > 1 ? ", " : "", t);
            norm[k++] = ']';
            norm[k] = 0;
            char *eol = g ? strchr(g, '\n') : NULL;
            if (!eol || (size_t)(eol - g) != k || memcmp(g, norm, k) != 0) {
                if (bad++ < 3)
                    printf("  %s vector %d: want %s got %.*s\n", cases[c].model, n, norm,
                           eol ? (int)(eol - g) : 20, g ? g : "(none)");
            }
            g = eol ? eol + 1 : NULL;
            n++;
        }
        fclose(fo);
        CHECKF(bad == 0 && n > 20, "%s: %d of %d vectors differ", cases[c].model, bad, n);
        printf("  %s: %d vectors through the CLI\n", cases[c].model, n - bad);
        free(got);
    }
}

int main(void)
{
    RUN(every_command_has_help);
    RUN(bad_option_exits_2_with_message);
    RUN(missing_model_file_is_a_clear_error);
    RUN(smoke_suite_end_to_end);
    RUN(tokenize_bare_tokenizer_vectors);
    return test_finish();
}
