/*
 * generate.c: greedy decoding on top of qe_infer_eval (prompt prefill in
 * one batch, then one token per step through the KV cache).
 *
 * Kept apart from infer.c because it needs the tokenizer (end-of-generation
 * ids); the forward pass itself does not.
 */
#include <stdlib.h>

#include "../util/common.h"

#include "../model/model.h"
#include "../model/tokenizer.h"
#include "infer.h"

int32_t qe_infer_argmax(const float *v, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i; /* first index wins ties, like llama.cpp's greedy sampler */
    return best;
}

int qe_infer_generate_greedy(qe_infer *inf, const int32_t *prompt, int n_prompt, int n_max,
                             int32_t **out, int *n_out, qe_err *err)
{
    return qe_infer_generate_greedy_timed(inf, prompt, n_prompt, n_max, false, out, n_out, NULL,
                                          err);
}

int qe_infer_generate_greedy_timed(qe_infer *inf, const int32_t *prompt, int n_prompt, int n_max,
                                   bool ignore_eog, int32_t **out, int *n_out, double *prompt_s,
                                   qe_err *err)
{
    *out = NULL;
    *n_out = 0;
    if (n_prompt <= 0 || !prompt)
        return qe_err_set(err, QE_EINVAL, "generate: empty prompt");
    if (n_max < 0)
        n_max = 0;
    const int n_vocab = qe_infer_n_vocab(inf);
    const qe_model *m = qe_infer_model(inf);
    int room = qe_infer_n_ctx(inf) - qe_infer_n_past(inf) - n_prompt;
    if (room < 0)
        return qe_err_set(err, QE_EBOUNDS, "generate: prompt of %d tokens does not fit the "
                          "context of %d", n_prompt, qe_infer_n_ctx(inf));
    /* the last generated token is never fed back, so n_max may be room+1 */
    if (n_max > room + 1)
        n_max = room + 1;
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    int32_t *gen = malloc((size_t)(n_max > 0 ? n_max : 1) * sizeof(int32_t));
    int rc = 0, n = 0;
    if (!logits || !gen) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    const double t0 = qe_now();
    if ((rc = qe_infer_eval(inf, prompt, n_prompt, n_prompt - 1, logits, err)))
        goto out;
    if (prompt_s)
        *prompt_s = qe_now() - t0;
    while (n < n_max) {
        int32_t tok = qe_infer_argmax(logits, n_vocab);
        if (!ignore_eog && m && m->tok && qe_tokenizer_is_eog(m->tok, tok))
            break;
        gen[n++] = tok;
        if (n == n_max)
            break;
        if ((rc = qe_infer_eval(inf, &tok, 1, 0, logits, err)))
            goto out;
    }
out:
    free(logits);
    if (rc) {
        free(gen);
        return rc;
    }
    *out = gen;
    *n_out = n;
    return 0;
}
