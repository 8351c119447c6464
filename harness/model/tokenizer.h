/*
 * tokenizer.h: exact tokenizers.
 *
 *  - SPM: SentencePiece-style BPE over scores with byte fallback
 *    (llama/llama2, llama2.c tok512, phi-3, baichuan).
 *  - BPE: byte-level BPE with merges ranks and a PCRE2 pre-tokenizer regex
 *    (gpt-2, llama-bpe/llama3, qwen2, starcoder, deepseek-coder/llm,
 *    falcon, gpt-neox, mpt, refact).
 *  - WordPiece (bert) answers QE_EUNSUPPORTED with a clear message.
 *
 * Loaded from GGUF metadata (tokenizer.ggml.*; tokenizer.ggml.pre selects
 * the regex), from HF tokenizer.json (+ tokenizer_config.json), or from a
 * llama2.c tokenizer.bin.  Behaviour follows llama.cpp's llama-vocab so
 * the test vectors in ../shared/tokenizers/llama.cpp-vocab match exactly.
 */
#ifndef QE_TOKENIZER_H
#define QE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

struct qe_gguf;

typedef enum qe_tok_kind { QE_TOK_SPM = 1, QE_TOK_BPE = 2 } qe_tok_kind;

/* Token attributes, as GGUF tokenizer.ggml.token_type. */
enum {
    QE_TOKTYPE_NORMAL = 1,
    QE_TOKTYPE_UNKNOWN = 2,
    QE_TOKTYPE_CONTROL = 3,
    QE_TOKTYPE_USER_DEFINED = 4,
    QE_TOKTYPE_UNUSED = 5,
    QE_TOKTYPE_BYTE = 6,
};

typedef struct qe_tokenizer qe_tokenizer;

qe_tokenizer *qe_tokenizer_from_gguf(const struct qe_gguf *g, qe_err *err);
/* config_path may be NULL (then looked for beside tokenizer.json). */
qe_tokenizer *qe_tokenizer_from_hf(const char *tokenizer_json, const char *config_path,
                                   qe_err *err);
/* llama2.c tokenizer.bin: i32 max_token_length, then n_vocab x
 * {f32 score, i32 len, bytes}.  BOS=1, EOS=2, add_bos.  n_vocab <= 0 reads
 * records to the end of the file.  Pieces are stored SentencePiece-style
 * (' ' -> U+2581, "<s>", "</s>"), equal to llama.cpp's GGUF conversion. */
qe_tokenizer *qe_tokenizer_from_llama2c(const char *path, int n_vocab, qe_err *err);
void qe_tokenizer_free(qe_tokenizer *t);

/*
 * Encode UTF-8 text.  add_special: add BOS/EOS as the vocab says
 * (add_bos/add_eos).  parse_special: recognise special/added token texts
 * inside `text` (e.g. "<|endoftext|>") as single tokens.
 * *ids is malloc'd (caller frees); *n_ids its length.
 */
int qe_tokenize(const qe_tokenizer *t, const char *text, size_t len, bool add_special,
                bool parse_special, int32_t **ids, size_t *n_ids, qe_err *err);

/* Text of one token as it appears in decoded output (bytes, not NUL-safe);
 * writes at most cap bytes, returns the full length or negative error. */
int qe_token_to_piece(const qe_tokenizer *t, int32_t id, char *buf, size_t cap);
/* Decode ids to malloc'd UTF-8 (caller frees).  SPM: strips the leading
 * space after BOS like llama.cpp; special tokens rendered only if
 * render_special. */
int qe_detokenize(const qe_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                  char **out, qe_err *err);

qe_tok_kind qe_tokenizer_kind(const qe_tokenizer *t);
const char *qe_tokenizer_kind_name(const qe_tokenizer *t); /* "spm"/"bpe" */
const char *qe_tokenizer_pre(const qe_tokenizer *t);       /* "llama-bpe", "default"... */
int32_t qe_tokenizer_n_vocab(const qe_tokenizer *t);
int32_t qe_tokenizer_bos(const qe_tokenizer *t); /* -1 if none */
int32_t qe_tokenizer_eos(const qe_tokenizer *t); /* -1 if none */
bool qe_tokenizer_add_bos(const qe_tokenizer *t);
bool qe_tokenizer_add_eos(const qe_tokenizer *t);
/* End-of-generation tokens (EOS, EOT, <|im_end|>...). */
bool qe_tokenizer_is_eog(const qe_tokenizer *t, int32_t id);
/* Raw vocab access for tests and info. */
const char *qe_tokenizer_token_text(const qe_tokenizer *t, int32_t id);
float qe_tokenizer_token_score(const qe_tokenizer *t, int32_t id);
int qe_tokenizer_token_type(const qe_tokenizer *t, int32_t id);


/* ---- additions (keep the declarations above stable) ---------------------- */

/* Id of the token whose text is exactly text[0..len), or -1. */
int32_t qe_tokenizer_find(const qe_tokenizer *t, const char *text, size_t len);
/* qe_token_to_piece with llama.cpp's knobs: skip up to `lstrip` leading
 * spaces; CONTROL/UNKNOWN tokens render as "" unless `special`.
 * qe_token_to_piece(t, id, buf, cap) == ..._ex(t, id, 0, true, buf, cap). */
int qe_token_to_piece_ex(const qe_tokenizer *t, int32_t id, int lstrip, bool special, char *buf,
                         size_t cap);
/* llama_detokenize(remove_special, unparse_special): remove_special drops
 * a leading BOS / trailing EOS that the vocab adds; the leading space of
 * the first piece is stripped only when no BOS was removed (SPM vocabs);
 * BPE vocabs with clean_up_tokenization_spaces get llama.cpp's three
 * cleanup passes.  qe_detokenize(t, ids, n, r, out, err) ==
 * qe_detokenize_ex(t, ids, n, false, r, out, err), i.e. common_detokenize. */
int qe_detokenize_ex(const qe_tokenizer *t, const int32_t *ids, size_t n, bool remove_special,
                     bool render_special, char **out, qe_err *err);

#endif /* QE_TOKENIZER_H */
