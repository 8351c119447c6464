/*
 * test_tokenizer.c: tokenizers against llama.cpp's own test vectors and
 * outputs (independent references):
 *  - ../shared/tokenizers/llama.cpp-vocab/ggml-vocab-*.gguf with .inp/.out
 *    (tests/test-tokenizer-0.cpp settings: add_special=false,
 *    parse_special=false; cases split on "\n__ggml_vocab_test__\n");
 *  - llama-bpe / qwen2 vectors through hf-llama3 / hf-qwen3 tokenizer.json;
 *  - stories260K: tok512.bin and stories260K.gguf on "Once upon a time"
 *    and llama.cpp's token ids for text-eng.txt;
 *  - decode(encode(x)) == x where llama.cpp guarantees it;
 *  - SPM line-by-line encoding against the whole-text encoding on large
 *    multi-line texts (the private switch spm_line_split, tok_internal.h);
 *  - hostile vocab files, each with its specific error code.
 */
#include <stdint.h>
#include <unistd.h>

#include "../harness/model/gguf.h"
#include "../harness/model/tok_internal.h" /* spm_line_split */
#include "../harness/model/tokenizer.h"
#include "test.h"

/* Parse "1 2 3" into ids (malloc'd). */
static size_t parse_ids(const char *s, size_t len, int32_t **out)
{
    size_t cap = 16, n = 0;
    int32_t *v = malloc(cap * sizeof *v);
    size_t i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\r'))
            i++;
        if (i >= len)
            break;
        long x = strtol(s + i, NULL, 10);
        while (i < len && s[i] != ' ')
            i++;
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = (int32_t)x;
    }
    *out = v;
    return n;
}

typedef struct vec_result {
    int n_cases, n_pass, n_rt, n_rt_pass;
} vec_result;

/* Run the .inp/.out vectors of `base` (path without .inp) through t. */
static vec_result run_vectors(const qe_tokenizer *t, const char *base, bool check_roundtrip)
{
    vec_result r = {0};
    char p_inp[1024], p_out[1024];
    snprintf(p_inp, sizeof p_inp, "%s.inp", base);
    snprintf(p_out, sizeof p_out, "%s.out", base);
    size_t ni = 0, no = 0;
    char *inp = test_slurp(p_inp, &ni), *out = test_slurp(p_out, &no);
    if (!inp || !out) {
        CHECKF(0, "cannot read %s / %s", p_inp, p_out);
        free(inp);
        free(out);
        return r;
    }
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t sl = strlen(sep), pos = 0, opos = 0;
    while (pos < ni) {
        const char *nx = memmem(inp + pos, ni - pos, sep, sl);
        size_t clen = nx ? (size_t)(nx - (inp + pos)) : ni - pos;
        const char *eol = memchr(out + opos, '\n', no - opos);
        size_t olen = eol ? (size_t)(eol - (out + opos)) : no - opos;
        int32_t *want = NULL;
        size_t nw = parse_ids(out + opos, olen, &want);
        int32_t *got = NULL;
        size_t ng = 0;
        qe_err e = {0};
        int rc = qe_tokenize(t, inp + pos, clen, false, false, &got, &ng, &e);
        bool ok = rc == 0 && ng == nw && (nw == 0 || memcmp(got, want, nw * sizeof *got) == 0);
        r.n_cases++;
        r.n_pass += ok;
        if (!ok) {
            printf("  mismatch %s case %d '%.*s' rc=%d (%s)\n   want:", base, r.n_cases,
                   (int)(clen > 60 ? 60 : clen), inp + pos, rc, e.msg);
            for (size_t k = 0; k < nw && k < 24; k++)
                printf(" %d", want[k]);
            printf("\n   got: ");
            for (size_t k = 0; k < ng && k < 24; k++)
                printf(" %d", got[k]);
            printf("\n");
        }
        if (ok && check_roundtrip) {
            char *dec = NULL;
            r.n_rt++;
            if (qe_detokenize(t, got, ng, false, &dec, &e) == 0 && strlen(dec) == clen &&
                memcmp(dec, inp + pos, clen) == 0)
                r.n_rt_pass++;
            else
                printf("  roundtrip differs: %s case %d\n", base, r.n_cases);
            free(dec);
        }
        free(want);
        free(got);
        if (!nx)
            break;
        pos = (size_t)(nx - inp) + sl;
        opos = eol ? (size_t)(eol - out) + 1 : no;
    }
    free(inp);
    free(out);
    return r;
}

static const char *k_vocab_dir = "tokenizers/llama.cpp-vocab";

/* name, decode(encode(x)) == x expected for every case (clean_spaces off
 * and no byte dropping in these vocabs' vectors) */
static const struct {
    const char *name;
    bool roundtrip;
} k_vocabs[] = {
    {"llama-spm", true},   {"phi-3", false},   {"baichuan", true},      {"gpt-2", false},
    {"deepseek-coder", true}, {"deepseek-llm", true}, {"falcon", false}, {"mpt", false},
    {"refact", false},     {"starcoder", false}, {"gpt-neox", false},
};

TEST(test_gguf_vectors)
{
    printf("  %-16s %8s %8s %10s\n", "vocab", "cases", "pass", "roundtrip");
    for (size_t v = 0; v < sizeof k_vocabs / sizeof k_vocabs[0]; v++) {
        char rel[300], base[1024], inp[1100];
        const char *path;
        snprintf(rel, sizeof rel, "%s/ggml-vocab-%s.gguf", k_vocab_dir, k_vocabs[v].name);
        path = test_asset(rel);
        if (access(path, R_OK) != 0) {
            printf("  %-16s (missing)\n", k_vocabs[v].name);
            continue;
        }
        qe_err e = {0};
        qe_gguf *g = qe_gguf_open(path, &e);
        CHECKF(g, "%s: %s", path, e.msg);
        if (!g)
            continue;
        qe_tokenizer *t = qe_tokenizer_from_gguf(g, &e);
        CHECKF(t, "%s: %s", path, e.msg);
        snprintf(base, sizeof base, "%s", path);
        snprintf(inp, sizeof inp, "%s.inp", base);
        if (t && access(inp, R_OK) == 0) {
            vec_result r = run_vectors(t, base, true);
            printf("  %-16s %8d %8d %5d/%-4d\n", k_vocabs[v].name, r.n_cases, r.n_pass,
                   r.n_rt_pass, r.n_rt);
            CHECKF(r.n_cases > 0 && r.n_pass == r.n_cases, "%s: %d/%d cases", k_vocabs[v].name,
                   r.n_pass, r.n_cases);
            if (k_vocabs[v].roundtrip)
                CHECKF(r.n_rt_pass == r.n_rt, "%s: roundtrip %d/%d", k_vocabs[v].name,
                       r.n_rt_pass, r.n_rt);
        } else if (t) {
            printf("  %-16s (loads: n_vocab %d, pre '%s'; no vectors)\n", k_vocabs[v].name,
                   qe_tokenizer_n_vocab(t), qe_tokenizer_pre(t));
        }
        qe_tokenizer_free(t);
        qe_gguf_close(g);
    }
}

TEST(test_hf_vectors)
{
    static const struct {
        const char *json, *vectors, *pre;
        int32_t bos;
        bool add_bos;
    } k[] = {
        {"tokenizers/hf-llama3/tokenizer.json", "ggml-vocab-llama-bpe.gguf", "llama-bpe", 128000,
         true},
        {"tokenizers/hf-qwen3/tokenizer.json", "ggml-vocab-qwen2.gguf", "qwen2", -1, false},
    };
    for (size_t i = 0; i < 2; i++) {
        qe_err e = {0};
        double t0 = qe_now();
        qe_tokenizer *t = qe_tokenizer_from_hf(test_asset(k[i].json), NULL, &e);
        double dt = qe_now() - t0;
        REQUIRE(t, "%s: %s", k[i].json, e.msg);
        printf("  %s: loaded in %.3f s, n_vocab %d\n", k[i].json, dt, qe_tokenizer_n_vocab(t));
        CHECK(strcmp(qe_tokenizer_pre(t), k[i].pre) == 0);
        CHECK(qe_tokenizer_bos(t) == k[i].bos);
        CHECK(qe_tokenizer_add_bos(t) == k[i].add_bos);
        char rel[512];
        snprintf(rel, sizeof rel, "%s/%s", k_vocab_dir, k[i].vectors);
        vec_result r = run_vectors(t, test_asset(rel), true);
        printf("  %-16s %8d %8d %5d/%-4d (via %s)\n", k[i].pre, r.n_cases, r.n_pass, r.n_rt_pass,
               r.n_rt, k[i].json);
        CHECKF(r.n_cases > 0 && r.n_pass == r.n_cases, "%s: %d/%d", k[i].pre, r.n_pass,
               r.n_cases);
        /* special tokens only with parse_special */
        int32_t *ids = NULL;
        size_t n = 0;
        const char *s = i == 0 ? "<|eot_id|>" : "<|im_end|>";
        CHECK(qe_tokenize(t, s, strlen(s), false, true, &ids, &n, &e) == 0 && n == 1 &&
              qe_tokenizer_is_eog(t, ids[0]));
        free(ids);
        CHECK(qe_tokenize(t, s, strlen(s), false, false, &ids, &n, &e) == 0 && n > 1);
        free(ids);
        if (i == 0) { /* Llama 3 adds BOS */
            CHECK(qe_tokenize(t, "Hello world", 11, true, false, &ids, &n, &e) == 0 && n == 3 &&
                  ids[0] == 128000 && ids[1] == 9906 && ids[2] == 1917);
            free(ids);
        }
        qe_tokenizer_free(t);
    }
}

static const int32_t k_once[] = {1, 403, 407, 261, 378};

static void check_stories(const qe_tokenizer *t, const char *what)
{
    qe_err e = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    CHECKF(qe_tokenize(t, "Once upon a time", 16, true, false, &ids, &n, &e) == 0, "%s: %s", what,
           e.msg);
    CHECKF(n == 5 && memcmp(ids, k_once, sizeof k_once) == 0, "%s: n=%zu", what, n);
    char *dec = NULL;
    CHECK(qe_detokenize_ex(t, ids + 1, n - 1, false, false, &dec, &e) == 0 && dec &&
          strcmp(dec, "Once upon a time") == 0);
    free(dec);
    free(ids);

    /* text-eng.txt with BOS vs llama.cpp's 289 x 128 ids */
    size_t nt = 0, ng = 0;
    char *text = test_slurp(test_asset("testdata/llamacpp/text-eng.txt"), &nt);
    char *gold = test_slurp(test_asset("testdata/llamacpp/tokens-text-eng-stories260K-tokenizer.txt"),
                       &ng);
    if (!text || !gold) {
        CHECKF(0, "missing text-eng assets");
        free(text);
        free(gold);
        return;
    }
    CHECK(qe_tokenize(t, text, nt, true, false, &ids, &n, &e) == 0);
    size_t matched = 0, total = 0, bad_at = SIZE_MAX;
    const char *p = gold;
    while (p < gold + ng) {
        const char *eol = memchr(p, '\n', (size_t)(gold + ng - p));
        size_t len = eol ? (size_t)(eol - p) : (size_t)(gold + ng - p);
        if (len && p[0] != '#') {
            int32_t *line = NULL;
            size_t nl = parse_ids(p, len, &line);
            for (size_t k = 0; k < nl; k++, total++) {
                if (total < n && ids[total] == line[k])
                    matched++;
                else if (bad_at == SIZE_MAX)
                    bad_at = total;
            }
            free(line);
        }
        p += len + 1;
    }
    printf("  %s: text-eng.txt -> %zu tokens; %zu/%zu golden ids match (289 x 128)\n", what, n,
           matched, total);
    CHECKF(total == 289 * 128 && matched == total && n >= total && n < total + 128,
           "%s: first mismatch at %zu", what, bad_at);
    /* decode(encode(x)) == x: without the BOS the SPM prefix space of the
     * first piece is stripped (llama.cpp keeps it when a BOS precedes) */
    CHECK(qe_detokenize(t, ids + 1, n - 1, false, &dec, &e) == 0 && dec);
    CHECKF(dec && strlen(dec) == nt && memcmp(dec, text, nt) == 0, "%s: text roundtrip", what);
    free(dec);
    free(ids);
    free(text);
    free(gold);
}

TEST(test_stories260k)
{
    qe_err e = {0};
    qe_tokenizer *a = qe_tokenizer_from_llama2c(test_asset("models/stories260K/tok512.bin"), 512,
                                                &e);
    REQUIRE(a, "tok512.bin: %s", e.msg);
    check_stories(a, "tok512.bin");
    qe_gguf *g = qe_gguf_open(test_asset("models/stories260K/stories260K.gguf"), &e);
    REQUIRE(g, "%s", e.msg);
    qe_tokenizer *b = qe_tokenizer_from_gguf(g, &e);
    REQUIRE(b, "stories260K.gguf: %s", e.msg);
    check_stories(b, "stories260K.gguf");
    /* the two loaders see the same vocabulary */
    int same = qe_tokenizer_n_vocab(a) == qe_tokenizer_n_vocab(b);
    for (int32_t i = 0; same && i < qe_tokenizer_n_vocab(a); i++)
        same = strcmp(qe_tokenizer_token_text(a, i), qe_tokenizer_token_text(b, i)) == 0 &&
               qe_tokenizer_token_score(a, i) == qe_tokenizer_token_score(b, i) &&
               qe_tokenizer_token_type(a, i) == qe_tokenizer_token_type(b, i);
    CHECK(same);
    CHECK(qe_tokenizer_bos(b) == 1 && qe_tokenizer_eos(b) == 2 && qe_tokenizer_add_bos(b));
    CHECK(qe_tokenizer_is_eog(b, 2) && !qe_tokenizer_is_eog(b, 1));
    /* byte fallback: U+2603 is not in the 512 vocab -> "▁" <0xE2><0x98><0x83>
     * (byte tokens are ids 3 + byte) */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(qe_tokenizer_find(b, "\xe2\x98\x83", 3) < 0);
    CHECK(qe_tokenize(b, "\xe2\x98\x83", 3, false, false, &ids, &n, &e) == 0);
    CHECKF(n == 4 && ids[1] == 3 + 0xE2 && ids[2] == 3 + 0x98 && ids[3] == 3 + 0x83, "n=%zu", n);
    char *dec = NULL;
    CHECK(qe_detokenize(b, ids, n, false, &dec, &e) == 0 && strcmp(dec, "\xe2\x98\x83") == 0);
    free(dec);
    free(ids);
    /* parse_special: "<s>" is cut out as BOS and the text after it gets the
     * SPM space prefix again; without parse_special it is plain text */
    CHECK(qe_tokenize(b, "<s>Once", 7, false, true, &ids, &n, &e) == 0);
    CHECKF(n == 2 && ids[0] == 1 && ids[1] == 403, "n=%zu", n);
    free(ids);
    CHECK(qe_tokenize(b, "<s>Once", 7, false, false, &ids, &n, &e) == 0);
    CHECKF(n > 2 && ids[0] != 1, "n=%zu", n);
    free(ids);
    char piece[16];
    CHECK(qe_token_to_piece(b, 403, piece, sizeof piece) == 5 && memcmp(piece, " Once", 5) == 0);
    qe_tokenizer_free(a);
    qe_tokenizer_free(b);
    qe_gguf_close(g);
}

TEST(test_bert_unsupported)
{
    qe_err e = {0};
    const char *p = test_asset("tokenizers/llama.cpp-vocab/ggml-vocab-bert-bge.gguf");
    qe_gguf *g = qe_gguf_open(p, &e);
    REQUIRE(g, "%s", e.msg);
    qe_tokenizer *t = qe_tokenizer_from_gguf(g, &e);
    CHECK(t == NULL && e.code == QE_EUNSUPPORTED);
    CHECKF(strstr(e.msg, "unsupported tokenizer 'bert' (WordPiece) in ") && strstr(e.msg, p),
           "msg: %s", e.msg);
    qe_tokenizer_free(t);
    qe_gguf_close(g);
}

/* Write a file into a temp dir; returns its path (static buffer per slot). */
static const char *write_tmp(int slot, const char *name, const char *body, size_t n)
{
    static char paths[4][256];
    snprintf(paths[slot], sizeof paths[slot], "/tmp/qe_tok_test_%d_%s", (int)getpid(), name);
    FILE *f = fopen(paths[slot], "wb");
    if (f) {
        fwrite(body, 1, n, f);
        fclose(f);
    }
    return paths[slot];
}

/* Encode text[0..n) with t line by line (t->spm_line_split, as loaded) and
 * as one piece: the ids must be the same.  Returns the number of ids. */
static size_t check_line_split(qe_tokenizer *t, const char *what, const char *text, size_t n,
                               bool parse_special)
{
    CHECKF(t->spm_line_split, "%s: the vocab should allow line-by-line encoding", what);
    qe_err e = {0};
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0, same = 0;
    CHECKF(qe_tokenize(t, text, n, true, parse_special, &a, &na, &e) == 0, "%s: %s", what,
           e.msg);
    t->spm_line_split = false;
    CHECKF(qe_tokenize(t, text, n, true, parse_special, &b, &nb, &e) == 0, "%s: %s", what,
           e.msg);
    t->spm_line_split = true;
    while (same < na && same < nb && a[same] == b[same])
        same++;
    CHECKF(na == nb && same == na, "%s: %zu ids line by line, %zu whole, first difference at %zu",
           what, na, nb, same);
    free(a);
    free(b);
    return na;
}

/* Line-by-line SPM encoding (bounded scratch) gives the whole-text ids. */
TEST(test_spm_line_split)
{
    /* vocab, bytes of each text to encode (the whole-text encoding of
     * all of it with the 32000-token vocab takes 1.7 s) */
    static const struct {
        const char *path;
        size_t max_nbytes;
    } k_vocab[] = {{"models/stories260K/stories260K.gguf", SIZE_MAX},
                   {"tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf", 512 << 10}};
    static const char *const k_text[] = {"datasets/wikitext2_raw/wiki.test.raw",
                                         "datasets/tinystories/tinystories_val.txt"};
    /* edge cases: invalid UTF-8 leads swallowing a '\n', blank lines, spaces
     * around newlines, special tokens between lines, no final newline */
    static const char *const k_edge[] = {
        "ab\xe2\ncd \xf0\n\n\xc3\nx\n", "\n", "\n\n  \n ", " leading space\nand more",
        "<s>\nOnce upon\n</s> a time\n\n<s>", "no newline at all", "\r\n\r\nThe end.\r\n",
    };
    for (size_t v = 0; v < sizeof k_vocab / sizeof k_vocab[0]; v++) {
        qe_err e = {0};
        qe_gguf *g = qe_gguf_open(test_asset(k_vocab[v].path), &e);
        qe_tokenizer *t = g ? qe_tokenizer_from_gguf(g, &e) : NULL;
        CHECKF(t, "%s: %s", k_vocab[v].path, e.msg);
        for (size_t k = 0; t && k < sizeof k_text / sizeof k_text[0]; k++) {
            size_t n = 0;
            char *text = test_slurp(test_asset(k_text[k]), &n);
            CHECKF(text, "cannot read %s", k_text[k]);
            if (!text)
                continue;
            if (n > k_vocab[v].max_nbytes)
                n = k_vocab[v].max_nbytes;
            double t0 = qe_now();
            size_t n_ids = check_line_split(t, k_text[k], text, n, false);
            printf("  %s, %s: %zu bytes -> %zu ids, same both ways (%.2f s)\n",
                   k_vocab[v].path, k_text[k], n, n_ids, qe_now() - t0);
            free(text);
        }
        for (size_t k = 0; t && k < sizeof k_edge / sizeof k_edge[0]; k++)
            for (int ps = 0; ps < 2; ps++)
                check_line_split(t, k_edge[k], k_edge[k], strlen(k_edge[k]), ps);
        qe_tokenizer_free(t);
        qe_gguf_close(g);
    }

    /* A vocab with a token that continues past a '\n' ("\na") must be
     * encoded whole: llama2.c records (score, length, bytes) for <unk>,
     * <s>, </s>, " ", "a", "\n", "\na". */
    static const struct {
        float score;
        const char *s;
    } k_rec[] = {{0, "<unk>"}, {0, "\n<s>\n"}, {0, "\n</s>\n"}, {-1, " "},
                 {-1, "a"},    {-1, "\n"},     {0, "\na"}};
    char bin[256];
    size_t off = 4;
    memset(bin, 0, 4);
    for (size_t i = 0; i < sizeof k_rec / sizeof k_rec[0]; i++) {
        int32_t len = (int32_t)strlen(k_rec[i].s);
        memcpy(bin + off, &k_rec[i].score, 4);
        memcpy(bin + off + 4, &len, 4);
        memcpy(bin + off + 8, k_rec[i].s, (size_t)len);
        off += 8 + (size_t)len;
    }
    qe_err e = {0};
    const char *p = write_tmp(3, "nl.bin", bin, off);
    qe_tokenizer *t = qe_tokenizer_from_llama2c(p, 0, &e);
    unlink(p);
    REQUIRE(t, "nl.bin: %s", e.msg);
    CHECK(!t->spm_line_split);
    int32_t *ids = NULL;
    size_t n = 0;
    static const int32_t k_want[] = {3, 4, 6}; /* "▁", "a", "\na" */
    CHECKF(qe_tokenize(t, "a\na", 3, false, false, &ids, &n, &e) == 0, "%s", e.msg);
    CHECKF(n == 3 && memcmp(ids, k_want, sizeof k_want) == 0, "n=%zu", n);
    free(ids);
    qe_tokenizer_free(t);
}

static int hf_load_code(const char *json, qe_err *e)
{
    const char *p = write_tmp(0, "tokenizer.json", json, strlen(json));
    const char *c = write_tmp(1, "tokenizer_config.json", "{}", 2);
    qe_tokenizer *t = qe_tokenizer_from_hf(p, c, e);
    int rc = t ? 0 : e->code;
    qe_tokenizer_free(t);
    unlink(p);
    unlink(c);
    return rc;
}

TEST(test_hostile)
{
    qe_err e = {0};
    const char *pre = "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true}";
    char buf[1024];

    /* a tiny valid file loads and tokenizes: "ab" merges to one token */
    snprintf(buf, sizeof buf, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
             "\"merges\":[\"a b\"]},%s}", pre);
    CHECKF(hf_load_code(buf, &e) == 0, "%s", e.msg);

    /* invalid UTF-8 in a token text: names the file and token index */
    snprintf(buf, sizeof buf, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"\xff\xfe\":1},"
             "\"merges\":[]},%s}", pre);
    CHECK(hf_load_code(buf, &e) == QE_EUTF8);
    CHECKF(strstr(e.msg, "tokenizer.json") && strstr(e.msg, "token 1"), "%s", e.msg);

    /* merges referencing unknown tokens */
    snprintf(buf, sizeof buf, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
             "\"merges\":[\"a b\",\"a zz\"]},%s}", pre);
    CHECK(hf_load_code(buf, &e) == QE_EFORMAT);
    CHECKF(strstr(e.msg, "merges[1]") && strstr(e.msg, "zz"), "%s", e.msg);

    /* malformed JSON, wrong shapes */
    CHECK(hf_load_code("{\"model\": {\"type\": \"BPE\", ", &e) == QE_EJSON);
    CHECKF(strstr(e.msg, "malformed JSON"), "%s", e.msg);
    CHECK(hf_load_code("[1,2]", &e) == QE_EJSON);
    snprintf(buf, sizeof buf, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},"
             "\"merges\":[]},%s}", pre);
    CHECK(hf_load_code(buf, &e) == QE_EJSON);
    snprintf(buf, sizeof buf, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
             "\"merges\":[17]},%s}", pre);
    CHECK(hf_load_code(buf, &e) == QE_EJSON);
    CHECKF(strstr(e.msg, "merges[0]"), "%s", e.msg);
    CHECK(hf_load_code("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", &e) ==
          QE_EUNSUPPORTED);
    CHECKF(strstr(e.msg, "unsupported tokenizer 'bert' (WordPiece) in "), "%s", e.msg);
    CHECK(hf_load_code("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
                       &e) == QE_EFORMAT);

    /* llama2.c tokenizer.bin: a length running past the end */
    unsigned char bin[32] = {7, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 'a'};
    const char *p = write_tmp(2, "tok.bin", (const char *)bin, 13);
    qe_tokenizer *t = qe_tokenizer_from_llama2c(p, 1, &e);
    CHECK(t == NULL && e.code == QE_EBOUNDS);
    CHECKF(strstr(e.msg, "token 0") && strstr(e.msg, "offset 8"), "%s", e.msg);
    p = write_tmp(2, "tok.bin", (const char *)bin, 3);
    t = qe_tokenizer_from_llama2c(p, 1, &e);
    CHECK(t == NULL && e.code == QE_ETRUNC);
    unlink(p);

    /* invalid UTF-8 in the input text: U+FFFD per bad byte, never a crash */
    t = qe_tokenizer_from_hf(test_asset("tokenizers/hf-qwen3/tokenizer.json"), NULL, &e);
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(qe_tokenize(t, "a\xff\xc3", 3, false, false, &ids, &n, &e) == 0 && n >= 2);
        free(ids);
        qe_tokenizer_free(t);
    }
}

int main(void)
{
    RUN(test_stories260k);
    RUN(test_gguf_vectors);
    RUN(test_hf_vectors);
    RUN(test_bert_unsupported);
    RUN(test_hostile);
    RUN(test_spm_line_split);
    return test_finish();
}
