/*
 * tok_internal.h: the private layout of qe_tokenizer, shared by the
 * tokenizer's own files (tokenizer.c: encode/decode; tok_load.c: GGUF and
 * llama2.c loaders; tok_hf.c: tokenizer.json loader; tok_pre.c: UTF-8,
 * GPT-2 byte map and the PCRE2 pre-tokenizer).  Nothing outside
 * harness/model/tok*.c includes this file, except tests/test_tokenizer.c
 * (it flips spm_line_split).
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp / unicode.cpp (b4747).
 */
#ifndef QE_TOK_INTERNAL_H
#define QE_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Token attribute bits (llama.cpp's llama_token_attr). */
enum {
    QE_TATTR_UNDEFINED = 0,
    QE_TATTR_UNKNOWN = 1 << 0,
    QE_TATTR_UNUSED = 1 << 1,
    QE_TATTR_NORMAL = 1 << 2,
    QE_TATTR_CONTROL = 1 << 3,
    QE_TATTR_USER_DEFINED = 1 << 4,
    QE_TATTR_BYTE = 1 << 5,
    QE_TATTR_LSTRIP = 1 << 7,
    QE_TATTR_RSTRIP = 1 << 8,
};

/* Byte-string -> int32 hash map (open addressing, linear probing).
 * Keys are borrowed views (ptr, len) into pools owned by the tokenizer;
 * the map owns only its slot array. */
typedef struct qe_tok_map_slot {
    const char *key; /* NULL = empty slot */
    uint32_t len;
    uint32_t hash;
    int32_t val;
} qe_tok_map_slot;

typedef struct qe_tok_map {
    qe_tok_map_slot *slots;
    uint64_t cap; /* power of two */
    uint64_t n;
} qe_tok_map;

int qe_tok_map_init(qe_tok_map *m, uint64_t n_expected);
void qe_tok_map_free(qe_tok_map *m);
/* Insert or overwrite (last value wins, like llama.cpp b4747's token_to_id). */
int qe_tok_map_put(qe_tok_map *m, const char *key, uint32_t len, int32_t val);
/* -1 when absent. */
int32_t qe_tok_map_get(const qe_tok_map *m, const char *key, size_t len);

/* Pre-tokenizer: up to QE_TOK_MAX_RE regexes applied in sequence, each
 * splitting every piece left by the previous one (llama.cpp
 * unicode_regex_split).  Text between matches stays a piece of its own. */
#define QE_TOK_MAX_RE 8

struct qe_tokenizer {
    qe_tok_kind kind;
    char src[512];   /* file it came from (for messages) */
    char pre[64];    /* tokenizer.ggml.pre or the name we mapped to */

    int32_t n_vocab;
    char **text;     /* (n_vocab) token texts, NUL-terminated, into text_pool */
    uint32_t *len;   /* (n_vocab) byte lengths */
    float *score;    /* (n_vocab) */
    int *toktype;    /* (n_vocab) GGUF token type (QE_TOKTYPE_*) as stored */
    uint32_t *attr;  /* (n_vocab) QE_TATTR_* bits */
    char *text_pool; /* owned */
    qe_tok_map vocab; /* text -> id */

    /* BPE merges: key "left\xFFright" -> rank (0 = highest priority). */
    char *merge_pool; /* owned */
    size_t merge_pool_used, merge_pool_cap;
    qe_tok_map merges;
    int64_t n_merges;

    int32_t bos, eos, eot, eom, unk, pad, sep;
    bool add_bos, add_eos;
    bool add_space_prefix;  /* SPM: prepend ' ' to the first raw fragment */
    bool ignore_merges;     /* BPE: a pre-token that is itself a token is kept */
    bool clean_spaces;      /* detokenize: clean_up_tokenization_spaces */
    bool spm_line_split;    /* SPM: no token has a '\n' before its last byte, so raw
                             * text is encoded one line at a time (qe_tok_finish
                             * sets it; tests clear it to compare with the
                             * whole-text encoding) */

    int32_t *special; /* ids with CONTROL|USER_DEFINED|UNKNOWN, longest text first */
    int32_t n_special;
    int32_t *eog;     /* end-of-generation ids */
    int32_t n_eog;

    int n_re;
    void *re[QE_TOK_MAX_RE]; /* pcre2_code_8 *, owned */
};

/* ---- tok_pre.c ---------------------------------------------------------- */

/* Length of the UTF-8 sequence that starts with lead byte c, as llama.cpp's
 * unicode_len_utf8 (1 for continuation bytes and invalid leads). */
size_t qe_utf8_len(unsigned char c);
/* Strict UTF-8 validation; on failure *bad_off is the offset of the first
 * invalid byte. */
bool qe_utf8_valid(const char *s, size_t n, size_t *bad_off);
/* Encode one code point; returns bytes written (1-4). */
size_t qe_utf8_put(uint32_t cp, char *out);

/* GPT-2 bytes_to_unicode: the UTF-8 text of byte b (1-2 bytes), and the
 * inverse (-1 if the code point is not in the map). */
const char *qe_tok_byte_to_utf8(uint8_t b, size_t *n);
int qe_tok_utf8_to_byte(uint32_t cp);

/* Compile the regex list for a pre-tokenizer name (llama.cpp's table);
 * pattern_override (from tokenizer.json) is used when the name is unknown
 * and non-NULL.  Fills t->re / t->n_re. */
int qe_tok_pre_init(qe_tokenizer *t, const char *pattern_override, qe_err *err);
void qe_tok_pre_free(qe_tokenizer *t);

/* Split text[0..n) into words: sanitise invalid UTF-8 to U+FFFD, apply the
 * regexes, byte-encode each word (GPT-2 map).  Output: *buf holds all
 * words back to back (malloc'd, caller frees), *offs (n_words+1 entries,
 * malloc'd) their boundaries. */
int qe_tok_pre_split(const qe_tokenizer *t, const char *text, size_t n, char **buf,
                     size_t **offs, size_t *n_words, qe_err *err);

/* ---- tokenizer.c -------------------------------------------------------- */

/* Allocate an empty tokenizer with n_vocab slots (texts set later with
 * qe_tok_set_text).  Returns NULL on OOM. */
qe_tokenizer *qe_tok_alloc(int32_t n_vocab, size_t text_pool_nbytes, const char *src);
/* Store token i's text (copied into the pool at *pool_off). */
int qe_tok_set_text(qe_tokenizer *t, int32_t i, const char *s, size_t n, size_t *pool_off,
                    qe_err *err);
/* Merges: reserve room for n merges whose texts total pool_nbytes, then
 * add them in rank order (rank = insertion index; a repeated pair keeps
 * its first rank, like std::unordered_map::emplace). */
int qe_tok_merges_begin(qe_tokenizer *t, int64_t n, size_t pool_nbytes, qe_err *err);
int qe_tok_merge_add(qe_tokenizer *t, const char *l, size_t ln, const char *r, size_t rn,
                     qe_err *err);
/* Everything after the vocab is in: vocab map, special/EOT/EOG detection,
 * special-token cache, regexes.  model_name selects per-model attributes
 * (phi-3 RSTRIP). */
int qe_tok_finish(qe_tokenizer *t, const char *model_name, const char *pattern_override,
                  qe_err *err);

#endif /* QE_TOK_INTERNAL_H */
