/*
 * llamacpp_golden.h: readers for llama.cpp's recorded outputs in ../shared
 * (the tokenized evaluation text and the running KLD of --kl-divergence
 * logs), shared by the tests that compare against them (test_ppl,
 * test_arch).  Include after test.h.
 */
#ifndef QE_LLAMACPP_GOLDEN_H
#define QE_LLAMACPP_GOLDEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's token stream of text-eng.txt with the stories260K tokenizer
 * (289 chunks of 128; '#' lines are comments): malloc'd, *n ids; NULL if
 * the file cannot be read. */
static inline int32_t *golden_ref_tokens(size_t *n)
{
    char *tk = test_slurp(test_asset("testdata/llamacpp/tokens-text-eng-stories260K-tokenizer.txt"),
                          NULL);
    *n = 0;
    if (!tk)
        return NULL;
    const size_t cap = 40000;
    int32_t *ids = malloc(cap * sizeof *ids);
    for (char *line = strtok(tk, "\n"); ids && line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *p = line, *end;
        for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
            if (*n < cap)
                ids[(*n)++] = (int32_t)v;
            p = end;
        }
    }
    free(tk);
    return ids;
}

/* Running mean KLD after chunk k in the --kl-divergence log `log_name` under
 * asset dir `dir` ("testdata/llamacpp-iq/", ...); NAN if absent. */
static inline double golden_log_running_kld(const char *dir, const char *log_name, int k)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%slogs/%s", dir, log_name);
    char *txt = test_slurp(test_asset(rel), NULL);
    if (!txt)
        return NAN;
    double out = NAN;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        int c;
        double ppl, ppl_u, lr, lr_u, kl, kl_u;
        if (sscanf(line, "%d %lf ± %lf %lf ± %lf %lf ± %lf", &c, &ppl, &ppl_u, &lr, &lr_u, &kl,
                   &kl_u) == 7 &&
            c == k) {
            out = kl;
            break;
        }
    }
    free(txt);
    return out;
}

#endif
