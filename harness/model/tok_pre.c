/*
 * tok_pre.c: the byte-level BPE pre-tokenizer: UTF-8 helpers, GPT-2's
 * bytes_to_unicode map, and the regex split run by PCRE2 (UTF + UCP, JIT
 * when available).
 *
 * The regex lists per tokenizer.ggml.pre are llama.cpp b4747's
 * (llm_tokenizer_bpe): several regexes run in sequence, each one splitting
 * every piece that the previous one produced, and the text between two
 * matches stays a piece of its own (unicode_regex_split_stl).  llama.cpp
 * runs the GPT-2 and Llama-3 patterns through hand-written matchers that
 * behave as if the GPT-2 pattern ended in `|\s+`; we append that
 * alternative, which gives the same pieces.  Invalid UTF-8 in the input
 * becomes U+FFFD per bad byte, as in unicode_cpts_from_utf8.
 *
 * Holds no vocabulary logic (tokenizer.c) and no file parsing.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- UTF-8 ---------------------------------------------------------------- */

size_t qe_utf8_len(unsigned char c)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

size_t qe_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Strict decode of one code point at s[*i] (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF).  Returns -1 when invalid. */
static int32_t utf8_decode_strict(const unsigned char *s, size_t n, size_t *i)
{
    size_t k = *i;
    unsigned char c = s[k];
    uint32_t cp;
    size_t need;
    if (c < 0x80) {
        *i = k + 1;
        return c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        need = 2;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        need = 3;
    } else {
        return -1;
    }
    if (n - k - 1 < need)
        return -1;
    for (size_t j = 1; j <= need; j++) {
        if ((s[k + j] & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[k + j] & 0x3F);
    }
    if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *i = k + 1 + need;
    return (int32_t)cp;
}

bool qe_utf8_valid(const char *s, size_t n, size_t *bad_off)
{
    size_t i = 0;
    while (i < n) {
        size_t at = i;
        if (utf8_decode_strict((const unsigned char *)s, n, &i) < 0) {
            if (bad_off)
                *bad_off = at;
            return false;
        }
    }
    return true;
}

/* llama.cpp's lenient decoder (unicode_cpt_from_utf8): checks only the
 * lead byte pattern and the continuation bits; a bad byte becomes U+FFFD
 * and decoding resumes at the next byte.  Code points that PCRE2 would
 * reject (surrogates, > U+10FFFF) are also mapped to U+FFFD. */
static uint32_t utf8_decode_lenient(const unsigned char *s, size_t n, size_t *i)
{
    size_t k = *i;
    unsigned char c = s[k];
    uint32_t cp;
    size_t need;
    if (!(c & 0x80)) {
        *i = k + 1;
        return c;
    }
    if (!(c & 0x40))
        goto bad;
    if (!(c & 0x20)) {
        need = 1;
        cp = c & 0x1F;
    } else if (!(c & 0x10)) {
        need = 2;
        cp = c & 0x0F;
    } else if (!(c & 0x08)) {
        need = 3;
        cp = c & 0x07;
    } else {
        goto bad;
    }
    if (k + need >= n)
        goto bad;
    for (size_t j = 1; j <= need; j++) {
        if ((s[k + j] & 0xC0) != 0x80)
            goto bad;
        cp = (cp << 6) | (s[k + j] & 0x3F);
    }
    *i = k + 1 + need;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0xFFFD;
    return cp;
bad:
    *i = k + 1;
    return 0xFFFD;
}

/* ---- GPT-2 bytes_to_unicode ------------------------------------------- */

static char g_b2u[256][3];
static uint8_t g_b2u_len[256];
static int16_t g_u2b[324]; /* code point (< 324) -> byte, -1 if none */
static pthread_once_t g_b2u_once = PTHREAD_ONCE_INIT;

/* Printable bytes map to themselves; the other 68 take U+0100.. in byte
 * order. */
static void byte_map_build(void)
{
    for (int i = 0; i < 324; i++)
        g_u2b[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        g_b2u_len[b] = (uint8_t)qe_utf8_put(cp, g_b2u[b]);
        g_u2b[cp] = (int16_t)b;
    }
}

static void byte_map_init(void)
{
    pthread_once(&g_b2u_once, byte_map_build);
}

const char *qe_tok_byte_to_utf8(uint8_t b, size_t *n)
{
    byte_map_init();
    *n = g_b2u_len[b];
    return g_b2u[b];
}

int qe_tok_utf8_to_byte(uint32_t cp)
{
    byte_map_init();
    return cp < 324 ? g_u2b[cp] : -1;
}

/* ---- regex tables (llama.cpp b4747 llm_tokenizer_bpe) ---------------- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                             \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[一-龥ࠀ-一가-퟿]+"

typedef struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *re[6];
    int clean_spaces;  /* -1 keep default (true for BPE), 0 false */
    int ignore_merges;
} pre_def;

static const pre_def k_pre[] = {
    {"default|", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, -1, 0},
    {"llama3|llama-v3|llama-bpe|falcon3|pixtral|dbrx|smaug-bpe", {RE_LLAMA3}, -1, 1},
    {"chatglm-bpe", {RE_LLAMA3}, -1, 0},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-"
      "ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ\\x{1F5F}-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}ῂ-ῄῆ-ῌ\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-\\x{212D}ℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-"
      "ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", RE_CJK, "\\p{N}+"},
     0, 0},
    {"deepseek-coder", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}, 0, 0},
    {"deepseek-v3",
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     0, 0},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, -1, 0},
    {"starcoder|refact|codeshell|exaone|minerva-7b", {"\\p{N}", RE_GPT2}, -1, 0},
    {"command-r|smollm", {"\\p{N}", RE_GPT2}, 0, 0},
    {"gpt-2|phi-2|jina-es|jina-de|jina-v1-en|jina-v2-es|jina-v2-de|jina-v2-code|roberta-bpe|"
     "gigachat|mpt|olmo|jais",
     {RE_GPT2}, -1, 0},
    {"qwen2|deepseek-r1-qwen|megrez", {RE_QWEN2}, 0, 0},
    {"stablelm2", {RE_QWEN2}, -1, 0},
    {"poro-chat", {" ?[^(\\s|.,!?…。，、।۔،)]+"}, 0, 0},
    {"bloom|gpt3-finnish", {" ?[^(\\s|.,!?…。，、।۔،)]+"}, -1, 0},
    {"viking", {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}, 0, 0},
    {"tekken",
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?(("
      "?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|"
      "\\s+(?!\\S)|\\s+"},
     0, 1},
    {"chameleon",
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
     0, 0},
};

static bool name_in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

static int compile_one(qe_tokenizer *t, const char *pat, qe_err *err)
{
    int ecode;
    PCRE2_SIZE eoff;
    if (t->n_re >= QE_TOK_MAX_RE)
        return qe_err_set(err, QE_EUNSUPPORTED, "%s: more than %d pre-tokenizer regexes", t->src,
                          QE_TOK_MAX_RE);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ecode, &eoff,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return qe_err_set(err, QE_EFORMAT, "%s: pre-tokenizer regex '%.80s': %s at offset %zu",
                          t->src, pat, (const char *)msg, (size_t)eoff);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    t->re[t->n_re++] = re;
    return 0;
}

int qe_tok_pre_init(qe_tokenizer *t, const char *pattern_override, qe_err *err)
{
    const pre_def *d = NULL;
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
        if (name_in_list(k_pre[i].names, t->pre)) {
            d = &k_pre[i];
            break;
        }
    }
    if (!d && t->pre[0] == '\0')
        d = &k_pre[0];
    if (!d) {
        if (!pattern_override)
            return qe_err_set(err, QE_EUNSUPPORTED, "%s: unknown pre-tokenizer type '%s'", t->src,
                              t->pre);
        return compile_one(t, pattern_override, err);
    }
    if (d->clean_spaces == 0)
        t->clean_spaces = false;
    if (d->ignore_merges)
        t->ignore_merges = true;
    for (int i = 0; i < 6 && d->re[i]; i++) {
        int rc = compile_one(t, d->re[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

void qe_tok_pre_free(qe_tokenizer *t)
{
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free((pcre2_code *)t->re[i]);
    t->n_re = 0;
}

/* ---- split -------------------------------------------------------------- */

typedef struct offs_vec {
    size_t *v;
    size_t n, cap;
} offs_vec;

static int offs_push(offs_vec *o, size_t x)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        size_t *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv)
            return QE_ENOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = x;
    return 0;
}

/* Split every piece [cur[i], cur[i+1]) of s with one regex; boundaries go
 * to *next (starting with 0). */
static int split_one(const pcre2_code *re, pcre2_match_data *md, const char *s,
                     const offs_vec *cur, offs_vec *next)
{
    next->n = 0;
    if (offs_push(next, 0))
        return QE_ENOMEM;
    for (size_t p = 0; p + 1 < cur->n; p++) {
        const char *subj = s + cur->v[p];
        size_t len = cur->v[p + 1] - cur->v[p];
        size_t start = 0, prev_end = 0;
        while (start < len) {
            int rc = pcre2_match(re, (PCRE2_SPTR)subj, len, start, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0)
                break; /* no match (or a match-limit error): the rest is one piece */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { /* empty match: step one character */
                start = ms + qe_utf8_len((unsigned char)subj[ms]);
                continue;
            }
            if (ms > prev_end && offs_push(next, cur->v[p] + ms))
                return QE_ENOMEM;
            if (offs_push(next, cur->v[p] + me))
                return QE_ENOMEM;
            prev_end = start = me;
        }
        if (prev_end < len && offs_push(next, cur->v[p + 1]))
            return QE_ENOMEM;
    }
    return 0;
}

int qe_tok_pre_split(const qe_tokenizer *t, const char *text, size_t n, char **buf,
                     size_t **offs, size_t *n_words, qe_err *err)
{
    char *clean = NULL, *out = NULL;
    offs_vec a = {0}, b = {0};
    pcre2_match_data *md = NULL;
    int rc = QE_ENOMEM;

    *buf = NULL;
    *offs = NULL;
    *n_words = 0;

    /* 1. Lenient decode + re-encode: valid UTF-8 for PCRE2, at most 3 bytes
     *    out per byte in (U+FFFD for a bad byte). */
    uint64_t cap;
    if (!qe_mul_ok(n, 3, &cap) || !qe_add_ok(cap, 1, &cap))
        return qe_err_set(err, QE_EOVERFLOW, "tokenize: text of %zu bytes too long", n);
    clean = malloc(cap);
    if (!clean)
        goto fail;
    size_t cn = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = utf8_decode_lenient((const unsigned char *)text, n, &i);
        cn += qe_utf8_put(cp, clean + cn);
    }
    clean[cn] = '\0';

    /* 2. Regexes in sequence. */
    if (offs_push(&a, 0) || (cn > 0 && offs_push(&a, cn)))
        goto fail;
    md = pcre2_match_data_create(4, NULL);
    if (!md && t->n_re > 0)
        goto fail;
    for (int r = 0; r < t->n_re; r++) {
        if (split_one((const pcre2_code *)t->re[r], md, clean, &a, &b))
            goto fail;
        offs_vec tmp = a;
        a = b;
        b = tmp;
    }

    /* 3. Byte-encode each word (every byte -> 1 or 2 bytes). */
    if (!qe_mul_ok(cn, 2, &cap) || !qe_add_ok(cap, 1, &cap))
        goto fail;
    out = malloc(cap);
    if (!out)
        goto fail;
    size_t on = 0;
    for (size_t w = 0; w < a.n; w++) {
        size_t from = a.v[w], to = (w + 1 < a.n) ? a.v[w + 1] : cn;
        a.v[w] = on; /* rewrite boundaries in output coordinates */
        for (size_t i = from; i < to; i++) {
            size_t bl;
            const char *bs = qe_tok_byte_to_utf8((uint8_t)clean[i], &bl);
            memcpy(out + on, bs, bl);
            on += bl;
        }
    }
    out[on] = '\0';
    *buf = out;
    *offs = a.v;
    *n_words = a.n ? a.n - 1 : 0;
    a.v = NULL;
    rc = 0;
fail:
    if (rc) {
        free(out);
        qe_err_set(err, QE_ENOMEM, "tokenize: out of memory splitting %zu bytes", n);
    }
    pcre2_match_data_free(md);
    free(a.v);
    free(b.v);
    free(clean);
    return rc;
}
