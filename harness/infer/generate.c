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
    /* The first index of the largest value (ties: the first, like
     * llama.cpp's greedy sampler; NaNs never win, and a NaN at 0 gives 0 as
     * the one-pass "v[i] > v[best]" scan does).  Two passes: the maximum
     * over 16 independent lanes, then its first occurrence; the one-pass
     * scan is a chain of dependent loads, a vocabulary of 152k per
     * sequence and step. */
    if (n <= 0)
        return 0;
    float lane[16];
    for (int j = 0; j < 16; j++)
        lane[j] = v[0];
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            lane[j] = v[i + j] > lane[j] ? v[i + j] : lane[j];
    float m = v[0];
    for (int j = 0; j < 16; j++)
        m = lane[j] > m ? lane[j] : m;
    for (; i < n; i++)
        m = v[i] > m ? v[i] : m;
    for (i = 0; i < n; i++)
        if (v[i] == m)
            return i;
    return 0;
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
