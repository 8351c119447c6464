/*
 * jinja.c: the sandboxed Jinja2 renderer (see jinja.h).
 *
 * Sections: arena, values, lexer, parser, values to text (Python str/repr,
 * json.dumps), interpreter (expressions, filters, tests, methods,
 * statements), public API.
 *
 * Memory: a template owns one arena (tokens, AST, literals); a render owns
 * another (every value, frame and buffer) that is freed in one go.  Errors
 * inside the lexer, parser and interpreter longjmp back to the public entry
 * point, which frees the arena: no partial state survives.
 *
 * Holds no model or file-format knowledge.
 */
#include "jinja.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NEST 200 /* template nesting: blocks plus expression depth */

/* ------------------------------------------------------------------ arena */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    _Alignas(16) char data[];
} arena_blk;

typedef struct arena {
    arena_blk *head;
    size_t total, limit;
} arena;

static void arena_free(arena *a)
{
    arena_blk *b = a->head;
    while (b) {
        arena_blk *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->total = 0;
}

/* NULL when the limit is reached or malloc fails. */
static void *arena_alloc_raw(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->limit)
            return NULL;
        arena_blk *b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

/* ----------------------------------------------------------------- values */

enum {
    T_UNDEF,
    T_NONE,
    T_BOOL,
    T_INT,
    T_FLOAT,
    T_STR,
    T_LIST, /* list or tuple (l->tuple) */
    T_DICT,
    T_NS, /* namespace(): a dict whose attributes can be set */
    T_FUNC,
    T_LOOP,
};

typedef struct jstr {
    size_t n;
    char s[]; /* NUL-terminated */
} jstr;

struct jval;
typedef struct jlist {
    size_t n;
    struct jval *v;
    bool tuple;
    bool lazy; /* a Python generator from a filter (map, select...): always true, no len,
                  not JSON serializable, not subscriptable */
} jlist;

typedef struct jdict {
    size_t n, cap;
    struct jval *k, *v;
} jdict;

struct jfunc;
struct jloop;

typedef struct jval {
    int t;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s; /* T_STR; T_UNDEF: the error message for using it (or NULL) */
        jlist *l;
        jdict *d;
        struct jfunc *fn;
        struct jloop *lp;
    } u;
    bool safe; /* T_STR: a markupsafe.Markup (|safe, |escape): `+` escapes plain strings */
} jval;

/* ------------------------------------------------------------------ lexer */

enum { K_TEXT, K_VBEGIN, K_VEND, K_BBEGIN, K_BEND, K_NAME, K_STR, K_INT, K_FLOAT, K_OP, K_EOF };

typedef struct tok {
    int k;
    size_t off; /* byte offset in the normalized source */
    const char *p;
    size_t n;  /* K_NAME, K_OP: the text */
    jstr *s;   /* K_TEXT, K_STR: the value */
    int64_t i; /* K_INT */
    double f;  /* K_FLOAT */
} tok;

/* ------------------------------------------------------------------- AST */

enum {
    /* statements */
    N_TEXT,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SETBLOCK,
    N_MACRO,
    N_CALLBLOCK,
    N_FILTERBLOCK,
    N_BREAK,
    N_CONTINUE,
    N_BODY, /* generation, with */
    N_WITH,
    /* expressions */
    N_LIT,
    N_NAME,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_BIN,
    N_NEG,
    N_POS,
    N_NOT,
    N_AND,
    N_OR,
    N_COND,
    N_LIST,
    N_TUPLE,
    N_DICT,
    N_CMP,
};

typedef struct jnode {
    int kind;
    int op; /* N_BIN, N_CMP ops; N_TEST negated; N_FOR has-cond */
    size_t off;
    struct jnode *a, *b, *c;
    struct jnode **kids; /* body / args / items / keys / params' defaults */
    size_t n_kids;
    struct jnode **kids2; /* else body / kw values / dict values */
    size_t n_kids2;
    jstr **names; /* kw names / params / target names / cmp ops */
    size_t n_names;
    int *ops; /* N_CMP: one op per kids[1..] */
    jstr *name;
    jval val;
} jnode;

typedef struct nodevec {
    jnode **v;
    size_t n, cap;
} nodevec;

struct qe_jinja {
    arena ar;
    char *src;
    size_t n;
    char name[96];
    jnode *root; /* N_BODY */
};

/* ------------------------------------------------- positions and errors */

static void pos_of(const char *src, size_t n, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < n; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

typedef struct P {
    qe_jinja *t;
    arena *ar;
    jmp_buf jb;
    qe_err *err;
    tok *toks;
    size_t nt, cap, i;
    int depth, loop_depth;
} P;

__attribute__((format(printf, 3, 4), noreturn)) static void p_fail(P *p, size_t off,
                                                                   const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    pos_of(p->t->src, p->t->n, off, &line, &col);
    qe_err_set(p->err, QE_EFORMAT, "%s: line %d, column %d: syntax error: %s", p->t->name, line,
               col, msg);
    longjmp(p->jb, 1);
}

static void *p_alloc(P *p, size_t n)
{
    void *m = arena_alloc_raw(p->ar, n);
    if (!m) {
        qe_err_set(p->err, QE_ENOMEM, "%s: out of memory while parsing", p->t->name);
        longjmp(p->jb, 1);
    }
    memset(m, 0, n);
    return m;
}

static jstr *p_str(P *p, const char *s, size_t n)
{
    jstr *r = p_alloc(p, sizeof *r + n + 1);
    r->n = n;
    memcpy(r->s, s, n);
    r->s[n] = 0;
    return r;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static tok *p_push(P *p, int k, size_t off)
{
    if (p->nt == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        tok *nt = p_alloc(p, cap * sizeof *nt);
        if (p->nt)
            memcpy(nt, p->toks, p->nt * sizeof *nt);
        p->toks = nt;
        p->cap = cap;
    }
    tok *t = &p->toks[p->nt++];
    memset(t, 0, sizeof *t);
    t->k = k;
    t->off = off;
    return t;
}

static void emit_text(P *p, size_t a, size_t b)
{
    if (b > a) {
        tok *t = p_push(p, K_TEXT, a);
        t->s = p_str(p, p->t->src + a, b - a);
    }
}

/* Append the UTF-8 encoding of code point c to buf (>= 4 bytes free). */
static size_t utf8_put(char *buf, uint32_t c)
{
    if (c < 0x80) {
        buf[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        buf[0] = (char)(0xC0 | (c >> 6));
        buf[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        buf[0] = (char)(0xE0 | (c >> 12));
        buf[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    buf[0] = (char)(0xF0 | (c >> 18));
    buf[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    buf[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    buf[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string literal body, unescaped like Python's unicode-escape codec. */
static jstr *unescape(P *p, size_t off, const char *s, size_t n)
{
    jstr *r = p_alloc(p, sizeof *r + n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            r->s[o++] = s[i];
            continue;
        }
        char c = s[++i];
        switch (c) {
        case '\n': break;
        case '\\': r->s[o++] = '\\'; break;
        case '\'': r->s[o++] = '\''; break;
        case '"': r->s[o++] = '"'; break;
        case 'a': r->s[o++] = '\a'; break;
        case 'b': r->s[o++] = '\b'; break;
        case 'f': r->s[o++] = '\f'; break;
        case 'n': r->s[o++] = '\n'; break;
        case 'r': r->s[o++] = '\r'; break;
        case 't': r->s[o++] = '\t'; break;
        case 'v': r->s[o++] = '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            uint32_t v = 0;
            if (i + (size_t)nd >= n)
                p_fail(p, off, "truncated \\%c escape in a string literal", c);
            for (int k = 1; k <= nd; k++) {
                int h = hexval(s[i + k]);
                if (h < 0)
                    p_fail(p, off, "bad \\%c escape in a string literal", c);
                v = v * 16 + (uint32_t)h;
            }
            if (v > 0x10FFFF)
                p_fail(p, off, "\\%c escape out of the Unicode range", c);
            i += (size_t)nd;
            o += utf8_put(r->s + o, v); /* never longer than the escape */
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                uint32_t v = 0;
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    v = v * 8 + (uint32_t)(s[i] - '0');
                    i++;
                    k++;
                }
                i--;
                o += utf8_put(r->s + o, v);
            } else {
                r->s[o++] = '\\';
                r->s[o++] = c;
            }
        }
    }
    r->s[o] = 0;
    r->n = o;
    return r;
}

static bool match_at(const char *s, size_t n, size_t pos, const char *lit)
{
    size_t k = strlen(lit);
    return pos + k <= n && memcmp(s + pos, lit, k) == 0;
}

/* `{% raw %}` at pos (the '{')?  Returns the offset after its "%}", or 0. */
static size_t raw_begin(const char *s, size_t n, size_t pos, bool *strip_after)
{
    size_t i = pos + 2;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    while (i < n && is_ws(s[i]))
        i++;
    if (!match_at(s, n, i, "raw"))
        return 0;
    i += 3;
    while (i < n && is_ws(s[i]))
        i++;
    *strip_after = false;
    if (match_at(s, n, i, "-%}")) {
        *strip_after = true;
        return i + 3;
    }
    if (match_at(s, n, i, "%}"))
        return i + 2;
    return 0;
}

static const char *const OPS[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                  "~",  "<",  ">",  "=",  "(",  ")",  "[", "]", "{", "}", ",",
                                  ".",  ":",  "|",  ";"};

static void lex(P *p, bool trim_blocks, bool lstrip_blocks)
{
    const char *s = p->t->src;
    size_t n = p->t->n, pos = 0;
    bool line_starting = true;
    while (pos < n) {
        size_t q = pos;
        int kind = 0;
        for (; q + 1 < n; q++)
            if (s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')) {
                kind = s[q + 1];
                break;
            }
        if (!kind) {
            emit_text(p, pos, n);
            break;
        }
        char sign = (q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+')) ? s[q + 2] : 0;
        size_t tend = q;
        if (sign == '-') {
            while (tend > pos && is_ws(s[tend - 1]))
                tend--;
        } else if (sign != '+' && lstrip_blocks && kind != '{') {
            size_t l = tend;
            while (l > pos && s[l - 1] != '\n')
                l--;
            if (l > pos || line_starting) {
                bool allws = true;
                for (size_t k = l; k < tend; k++)
                    if (!is_ws(s[k]))
                        allws = false;
                if (allws)
                    tend = l;
            }
        }
        emit_text(p, pos, tend);
        size_t after;
        if (kind == '#') {
            size_t e = q + 2;
            while (e + 1 < n && !(s[e] == '#' && s[e + 1] == '}'))
                e++;
            if (e + 1 >= n)
                p_fail(p, q, "unclosed comment: '{#' without '#}'");
            after = e + 2;
            if (e > q + 2 && s[e - 1] == '-') {
                while (after < n && is_ws(s[after]))
                    after++;
            } else if (!(e > q + 2 && s[e - 1] == '+') && trim_blocks && after < n &&
                       s[after] == '\n') {
                after++;
            }
            line_starting = s[after - 1] == '\n';
            pos = after;
            continue;
        }
        bool rstrip_raw = false;
        size_t rb = kind == '%' ? raw_begin(s, n, q, &rstrip_raw) : 0;
        if (rb) {
            /* find {% endraw %} */
            size_t e = rb;
            for (;;) {
                while (e + 1 < n && !(s[e] == '{' && s[e + 1] == '%'))
                    e++;
                if (e + 1 >= n)
                    p_fail(p, q, "unclosed raw block: '{%% raw %%}' without '{%% endraw %%}'");
                size_t k = e + 2;
                char esign = (k < n && (s[k] == '-' || s[k] == '+')) ? s[k] : 0;
                if (esign)
                    k++;
                while (k < n && is_ws(s[k]))
                    k++;
                if (match_at(s, n, k, "endraw")) {
                    k += 6;
                    while (k < n && is_ws(s[k]))
                        k++;
                    char endsign = 0;
                    if (k < n && (s[k] == '-' || s[k] == '+'))
                        endsign = s[k++];
                    if (!match_at(s, n, k, "%}"))
                        p_fail(p, e, "expected '%%}' after 'endraw'");
                    size_t a = rb, b = e;
                    if (rstrip_raw)
                        while (a < b && is_ws(s[a]))
                            a++;
                    if (esign == '-') {
                        while (b > a && is_ws(s[b - 1]))
                            b--;
                    } else if (esign != '+' && lstrip_blocks) {
                        size_t l = b;
                        while (l > a && s[l - 1] != '\n')
                            l--;
                        bool allws = true;
                        for (size_t z = l; z < b; z++)
                            if (!is_ws(s[z]))
                                allws = false;
                        if (allws && l > a)
                            b = l;
                    }
                    emit_text(p, a, b);
                    after = k + 2;
                    if (endsign == '-') {
                        while (after < n && is_ws(s[after]))
                            after++;
                    } else if (endsign != '+' && trim_blocks && after < n && s[after] == '\n') {
                        after++;
                    }
                    break;
                }
                e += 2;
            }
            line_starting = s[after - 1] == '\n';
            pos = after;
            continue;
        }
        /* a variable or block tag: tokens up to the matching end */
        bool block = kind == '%';
        p_push(p, block ? K_BBEGIN : K_VBEGIN, q);
        pos = q + 2 + (sign ? 1 : 0);
        int bal = 0;
        for (;;) {
            while (pos < n && is_ws(s[pos]))
                pos++;
            if (pos >= n)
                p_fail(p, q, "unexpected end of template: '%s' is never closed by '%s'",
                       block ? "{%" : "{{", block ? "%}" : "}}");
            if (bal == 0) {
                const char *endt = block ? "%}" : "}}";
                size_t at = pos;
                char esign = 0;
                if ((s[pos] == '-' || (block && s[pos] == '+')) && match_at(s, n, pos + 1, endt))
                    esign = s[pos++];
                if (match_at(s, n, pos, endt)) {
                    p_push(p, block ? K_BEND : K_VEND, at);
                    pos += 2;
                    if (esign == '-') {
                        while (pos < n && is_ws(s[pos]))
                            pos++;
                    } else if (block && esign != '+' && trim_blocks && pos < n && s[pos] == '\n') {
                        pos++;
                    }
                    line_starting = s[pos - 1] == '\n';
                    break;
                }
                pos = at;
            }
            char c = s[pos];
            size_t st = pos;
            if (isalpha((unsigned char)c) || c == '_') {
                while (pos < n && (isalnum((unsigned char)s[pos]) || s[pos] == '_'))
                    pos++;
                tok *t = p_push(p, K_NAME, st);
                t->p = s + st;
                t->n = pos - st;
            } else if (isdigit((unsigned char)c)) {
                bool after_dot = p->nt > 0 && p->toks[p->nt - 1].k == K_OP &&
                                 p->toks[p->nt - 1].n == 1 && p->toks[p->nt - 1].p[0] == '.';
                char buf[128];
                size_t bn = 0;
                bool flt = false;
                while (pos < n && (isdigit((unsigned char)s[pos]) || s[pos] == '_')) {
                    if (s[pos] != '_' && bn < sizeof buf - 1)
                        buf[bn++] = s[pos];
                    pos++;
                }
                if (!after_dot && pos + 1 < n && s[pos] == '.' && isdigit((unsigned char)s[pos + 1])) {
                    flt = true;
                    buf[bn++] = s[pos++];
                    while (pos < n && (isdigit((unsigned char)s[pos]) || s[pos] == '_')) {
                        if (s[pos] != '_' && bn < sizeof buf - 1)
                            buf[bn++] = s[pos];
                        pos++;
                    }
                }
                if (!after_dot && pos < n && (s[pos] == 'e' || s[pos] == 'E')) {
                    size_t k = pos + 1;
                    if (k < n && (s[k] == '+' || s[k] == '-'))
                        k++;
                    if (k < n && isdigit((unsigned char)s[k])) {
                        flt = true;
                        while (pos < k && bn < sizeof buf - 1)
                            buf[bn++] = s[pos++];
                        while (pos < n && (isdigit((unsigned char)s[pos]) || s[pos] == '_')) {
                            if (s[pos] != '_' && bn < sizeof buf - 1)
                                buf[bn++] = s[pos];
                            pos++;
                        }
                    }
                }
                buf[bn] = 0;
                tok *t = p_push(p, flt ? K_FLOAT : K_INT, st);
                if (flt) {
                    t->f = strtod(buf, NULL);
                } else {
                    errno = 0;
                    char *e;
                    long long v = strtoll(buf, &e, 10);
                    if (errno || bn > 19)
                        p_fail(p, st, "integer literal %s is too large (64-bit limit)", buf);
                    t->i = v;
                }
            } else if (c == '\'' || c == '"') {
                pos++;
                while (pos < n && s[pos] != c) {
                    if (s[pos] == '\\' && pos + 1 < n)
                        pos++;
                    pos++;
                }
                if (pos >= n)
                    p_fail(p, st, "unterminated string literal");
                pos++;
                tok *t = p_push(p, K_STR, st);
                t->s = unescape(p, st, s + st + 1, pos - st - 2);
            } else {
                size_t k;
                for (k = 0; k < sizeof OPS / sizeof OPS[0]; k++)
                    if (match_at(s, n, pos, OPS[k]))
                        break;
                if (k == sizeof OPS / sizeof OPS[0])
                    p_fail(p, pos, "unexpected character '%c'", c);
                size_t ol = strlen(OPS[k]);
                tok *t = p_push(p, K_OP, st);
                t->p = s + st;
                t->n = ol;
                pos += ol;
                if (ol == 1 && (c == '(' || c == '[' || c == '{'))
                    bal++;
                else if (ol == 1 && (c == ')' || c == ']' || c == '}')) {
                    if (bal == 0)
                        p_fail(p, st, "unexpected '%c'", c);
                    bal--;
                }
            }
        }
    }
    p_push(p, K_EOF, n);
}

/* ----------------------------------------------------------------- parser */

static tok *cur(P *p) { return &p->toks[p->i]; }
static tok *peek_tok(P *p, size_t k)
{
    size_t j = p->i + k;
    return &p->toks[j < p->nt ? j : p->nt - 1];
}
static void adv(P *p)
{
    if (p->i + 1 < p->nt)
        p->i++;
}
static bool t_op(const tok *t, const char *op)
{
    return t->k == K_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}
static bool t_name(const tok *t, const char *nm)
{
    return t->k == K_NAME && t->n == strlen(nm) && memcmp(t->p, nm, t->n) == 0;
}

static const char *tok_desc(const tok *t, char *buf, size_t nb)
{
    switch (t->k) {
    case K_TEXT: return "template text";
    case K_VBEGIN: return "'{{'";
    case K_VEND: return "'}}'";
    case K_BBEGIN: return "'{%'";
    case K_BEND: return "'%}'";
    case K_EOF: return "end of template";
    case K_STR: return "a string";
    case K_INT: return "an integer";
    case K_FLOAT: return "a number";
    default: snprintf(buf, nb, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p); return buf;
    }
}

static void expect_op(P *p, const char *op)
{
    if (!t_op(cur(p), op)) {
        char b[64];
        p_fail(p, cur(p)->off, "expected '%s', got %s", op, tok_desc(cur(p), b, sizeof b));
    }
    adv(p);
}

static jstr *expect_ident(P *p, const char *what)
{
    tok *t = cur(p);
    if (t->k != K_NAME) {
        char b[64];
        p_fail(p, t->off, "expected %s, got %s", what, tok_desc(t, b, sizeof b));
    }
    adv(p);
    return p_str(p, t->p, t->n);
}

static void expect_bend(P *p, const char *tag)
{
    if (cur(p)->k != K_BEND) {
        char b[64];
        p_fail(p, cur(p)->off, "expected '%%}' to end the '%s' tag, got %s", tag,
               tok_desc(cur(p), b, sizeof b));
    }
    adv(p);
}

static jnode *mk(P *p, int kind, size_t off)
{
    jnode *nd = p_alloc(p, sizeof *nd);
    nd->kind = kind;
    nd->off = off;
    return nd;
}

static void nv_push(P *p, nodevec *v, jnode *nd)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        jnode **nv = p_alloc(p, cap * sizeof *nv);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = nd;
}

typedef struct strvec {
    jstr **v;
    size_t n, cap;
} strvec;

static void sv_push(P *p, strvec *v, jstr *s)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        jstr **nv = p_alloc(p, cap * sizeof *nv);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = s;
}

static void enter(P *p, size_t off)
{
    if (++p->depth > MAX_NEST)
        p_fail(p, off, "template nested too deeply (more than %d levels)", MAX_NEST);
}

static jnode *parse_expr(P *p);
static jnode *parse_or(P *p);
static jnode *parse_unary(P *p, bool with_filter);
static jnode *parse_primary(P *p);
static jnode *parse_postfix(P *p, jnode *e);

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT };
enum { C_EQ, C_NE, C_LT, C_GT, C_LE, C_GE, C_IN, C_NOTIN };

/* Call arguments after '(' up to ')': positional in kids, keywords in
 * names/kids2. */
static void parse_args(P *p, jnode *call)
{
    nodevec pos = {0}, kwv = {0};
    strvec kwn = {0};
    expect_op(p, "(");
    while (!t_op(cur(p), ")")) {
        if (pos.n + kwv.n)
            expect_op(p, ",");
        if (t_op(cur(p), ")"))
            break;
        if (cur(p)->k == K_NAME && t_op(peek_tok(p, 1), "=")) {
            jstr *nm = expect_ident(p, "an argument name");
            adv(p);
            sv_push(p, &kwn, nm);
            nv_push(p, &kwv, parse_expr(p));
        } else {
            if (kwv.n)
                p_fail(p, cur(p)->off, "positional argument after a keyword argument");
            nv_push(p, &pos, parse_expr(p));
        }
    }
    expect_op(p, ")");
    call->kids = pos.v;
    call->n_kids = pos.n;
    call->kids2 = kwv.v;
    call->n_kids2 = kwv.n;
    call->names = kwn.v;
    call->n_names = kwn.n;
}

static const char *const FILTERS[] = {
    "abs",     "attr",    "batch",  "capitalize", "center", "count",      "d",         "default",
    "dictsort", "e",      "escape", "first",      "float",  "format",     "indent",    "int",
    "items",   "join",    "last",   "length",     "list",   "lower",      "map",       "max",
    "min",     "reject",  "rejectattr", "replace", "reverse", "round",    "safe",      "select",
    "selectattr", "sort", "string", "sum",        "title",  "tojson",     "trim",      "unique",
    "upper",   "wordcount", "striptags", "truncate", "pprint", NULL};
static const char *const TESTS[] = {
    "boolean", "callable", "defined", "divisibleby", "eq",     "equalto", "escaped",  "even",
    "false",   "filter",   "float",   "ge",          "greaterthan", "gt", "in",       "integer",
    "iterable", "le",      "lessthan", "lower",      "lt",     "mapping", "ne",       "none",
    "number",  "odd",      "sameas",  "sequence",    "string", "test",    "true",     "undefined",
    "upper",   "==",       "!=",      "<",           ">",      "<=",      ">=",       NULL};

static bool in_list(const char *const *l, const jstr *s)
{
    for (; *l; l++)
        if (strlen(*l) == s->n && memcmp(*l, s->s, s->n) == 0)
            return true;
    return false;
}

static jnode *parse_filter(P *p, jnode *e)
{
    /* after '|' */
    size_t off = cur(p)->off;
    jstr *nm = expect_ident(p, "a filter name");
    if (!in_list(FILTERS, nm))
        p_fail(p, off, "no filter named '%s'", nm->s);
    jnode *f = mk(p, N_FILTER, off);
    f->a = e;
    f->name = nm;
    if (t_op(cur(p), "("))
        parse_args(p, f);
    return f;
}

static jnode *parse_filter_expr(P *p, jnode *e)
{
    for (;;) {
        if (t_op(cur(p), "|")) {
            adv(p);
            e = parse_filter(p, e);
        } else if (t_name(cur(p), "is")) {
            size_t off = cur(p)->off;
            adv(p);
            bool neg = false;
            if (t_name(cur(p), "not")) {
                neg = true;
                adv(p);
            }
            tok *t = cur(p);
            jstr *nm;
            if (t->k == K_NAME)
                nm = p_str(p, t->p, t->n);
            else if (t->k == K_OP && (t_op(t, "==") || t_op(t, "!=") || t_op(t, "<") ||
                                      t_op(t, ">") || t_op(t, "<=") || t_op(t, ">=")))
                nm = p_str(p, t->p, t->n);
            else {
                char b[64];
                p_fail(p, t->off, "expected a test name after 'is', got %s",
                       tok_desc(t, b, sizeof b));
            }
            if (!in_list(TESTS, nm))
                p_fail(p, t->off, "no test named '%s'", nm->s);
            adv(p);
            jnode *tn = mk(p, N_TEST, off);
            tn->a = e;
            tn->name = nm;
            tn->op = neg;
            tok *n2 = cur(p);
            if (t_op(n2, "(")) {
                parse_args(p, tn);
            } else if ((n2->k == K_NAME || n2->k == K_STR || n2->k == K_INT || n2->k == K_FLOAT ||
                        t_op(n2, "[") || t_op(n2, "{")) &&
                       !t_name(n2, "else") && !t_name(n2, "or") && !t_name(n2, "and") &&
                       !t_name(n2, "is") && !t_name(n2, "if") && !t_name(n2, "in") &&
                       !t_name(n2, "not")) {
                jnode *arg = parse_postfix(p, parse_primary(p));
                tn->kids = p_alloc(p, sizeof(jnode *));
                tn->kids[0] = arg;
                tn->n_kids = 1;
            }
            e = tn;
        } else if (t_op(cur(p), "(")) {
            jnode *c = mk(p, N_CALL, cur(p)->off);
            c->a = e;
            parse_args(p, c);
            e = c;
        } else {
            return e;
        }
    }
}

static jnode *parse_postfix(P *p, jnode *e)
{
    for (;;) {
        tok *t = cur(p);
        if (t_op(t, ".")) {
            adv(p);
            tok *a = cur(p);
            if (a->k == K_NAME) {
                jnode *n = mk(p, N_ATTR, a->off);
                n->a = e;
                n->name = p_str(p, a->p, a->n);
                adv(p);
                e = n;
            } else if (a->k == K_INT) {
                jnode *n = mk(p, N_ITEM, a->off);
                n->a = e;
                n->b = mk(p, N_LIT, a->off);
                n->b->val.t = T_INT;
                n->b->val.u.i = a->i;
                adv(p);
                e = n;
            } else {
                char b[64];
                p_fail(p, a->off, "expected an attribute name after '.', got %s",
                       tok_desc(a, b, sizeof b));
            }
        } else if (t_op(t, "[")) {
            adv(p);
            jnode *parts[3] = {NULL, NULL, NULL};
            int np = 0;
            bool slice = false;
            for (;;) {
                if (t_op(cur(p), ":")) {
                    slice = true;
                    if (np >= 2)
                        p_fail(p, cur(p)->off, "too many ':' in a subscript");
                    np++;
                    adv(p);
                    continue;
                }
                if (t_op(cur(p), "]"))
                    break;
                if (parts[np])
                    p_fail(p, cur(p)->off, "expected ']' or ':' in a subscript");
                parts[np] = parse_expr(p);
            }
            expect_op(p, "]");
            if (!slice && !parts[0])
                p_fail(p, t->off, "empty subscript '[]'");
            jnode *n = mk(p, slice ? N_SLICE : N_ITEM, t->off);
            n->a = e;
            if (slice) {
                n->kids = p_alloc(p, 3 * sizeof(jnode *));
                memcpy(n->kids, parts, sizeof parts);
                n->n_kids = 3;
            } else {
                n->b = parts[0];
            }
            e = n;
        } else if (t_op(t, "(")) {
            jnode *c = mk(p, N_CALL, e->off);
            c->a = e;
            parse_args(p, c);
            e = c;
        } else {
            return e;
        }
    }
}

static jnode *parse_primary(P *p)
{
    tok *t = cur(p);
    enter(p, t->off);
    jnode *e;
    if (t->k == K_NAME) {
        adv(p);
        e = mk(p, N_LIT, t->off);
        if (t_name(t, "true") || t_name(t, "True")) {
            e->val.t = T_BOOL;
            e->val.u.b = true;
        } else if (t_name(t, "false") || t_name(t, "False")) {
            e->val.t = T_BOOL;
            e->val.u.b = false;
        } else if (t_name(t, "none") || t_name(t, "None")) {
            e->val.t = T_NONE;
        } else {
            e->kind = N_NAME;
            e->name = p_str(p, t->p, t->n);
        }
    } else if (t->k == K_STR) {
        e = mk(p, N_LIT, t->off);
        jstr *s = t->s;
        adv(p);
        while (cur(p)->k == K_STR) { /* adjacent literals concatenate */
            jstr *b = cur(p)->s;
            jstr *c = p_alloc(p, sizeof *c + s->n + b->n + 1);
            c->n = s->n + b->n;
            memcpy(c->s, s->s, s->n);
            memcpy(c->s + s->n, b->s, b->n + 1);
            s = c;
            adv(p);
        }
        e->val.t = T_STR;
        e->val.u.s = s;
    } else if (t->k == K_INT || t->k == K_FLOAT) {
        adv(p);
        e = mk(p, N_LIT, t->off);
        if (t->k == K_INT) {
            e->val.t = T_INT;
            e->val.u.i = t->i;
        } else {
            e->val.t = T_FLOAT;
            e->val.u.f = t->f;
        }
    } else if (t_op(t, "(")) {
        adv(p);
        if (t_op(cur(p), ")")) {
            adv(p);
            e = mk(p, N_TUPLE, t->off);
        } else {
            jnode *first = parse_expr(p);
            if (t_op(cur(p), ",")) {
                nodevec v = {0};
                nv_push(p, &v, first);
                while (t_op(cur(p), ",")) {
                    adv(p);
                    if (t_op(cur(p), ")"))
                        break;
                    nv_push(p, &v, parse_expr(p));
                }
                e = mk(p, N_TUPLE, t->off);
                e->kids = v.v;
                e->n_kids = v.n;
            } else {
                e = first;
            }
            expect_op(p, ")");
        }
    } else if (t_op(t, "[")) {
        adv(p);
        nodevec v = {0};
        while (!t_op(cur(p), "]")) {
            if (v.n)
                expect_op(p, ",");
            if (t_op(cur(p), "]"))
                break;
            nv_push(p, &v, parse_expr(p));
        }
        expect_op(p, "]");
        e = mk(p, N_LIST, t->off);
        e->kids = v.v;
        e->n_kids = v.n;
    } else if (t_op(t, "{")) {
        adv(p);
        nodevec k = {0}, v = {0};
        while (!t_op(cur(p), "}")) {
            if (k.n)
                expect_op(p, ",");
            if (t_op(cur(p), "}"))
                break;
            nv_push(p, &k, parse_expr(p));
            expect_op(p, ":");
            nv_push(p, &v, parse_expr(p));
        }
        expect_op(p, "}");
        e = mk(p, N_DICT, t->off);
        e->kids = k.v;
        e->n_kids = k.n;
        e->kids2 = v.v;
        e->n_kids2 = v.n;
    } else {
        char b[64];
        p_fail(p, t->off, "expected an expression, got %s", tok_desc(t, b, sizeof b));
    }
    p->depth--;
    return e;
}

static jnode *parse_unary(P *p, bool with_filter)
{
    tok *t = cur(p);
    enter(p, t->off);
    jnode *e;
    if (t_op(t, "-") || t_op(t, "+")) {
        adv(p);
        e = mk(p, t_op(t, "-") ? N_NEG : N_POS, t->off);
        e->a = parse_unary(p, false);
    } else {
        e = parse_primary(p);
    }
    e = parse_postfix(p, e);
    if (with_filter)
        e = parse_filter_expr(p, e);
    p->depth--;
    return e;
}

static jnode *bin(P *p, int op, size_t off, jnode *a, jnode *b)
{
    jnode *n = mk(p, N_BIN, off);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(P *p)
{
    jnode *e = parse_unary(p, true);
    while (t_op(cur(p), "**")) {
        size_t off = cur(p)->off;
        adv(p);
        e = bin(p, OP_POW, off, e, parse_unary(p, true));
    }
    return e;
}

static jnode *parse_math2(P *p)
{
    jnode *e = parse_pow(p);
    for (;;) {
        tok *t = cur(p);
        int op = t_op(t, "*") ? OP_MUL : t_op(t, "/") ? OP_DIV : t_op(t, "//") ? OP_FLOORDIV
                 : t_op(t, "%") ? OP_MOD : -1;
        if (op < 0)
            return e;
        adv(p);
        e = bin(p, op, t->off, e, parse_pow(p));
    }
}

static jnode *parse_concat(P *p)
{
    jnode *e = parse_math2(p);
    while (t_op(cur(p), "~")) {
        size_t off = cur(p)->off;
        adv(p);
        e = bin(p, OP_CONCAT, off, e, parse_math2(p));
    }
    return e;
}

static jnode *parse_math1(P *p)
{
    jnode *e = parse_concat(p);
    for (;;) {
        tok *t = cur(p);
        int op = t_op(t, "+") ? OP_ADD : t_op(t, "-") ? OP_SUB : -1;
        if (op < 0)
            return e;
        adv(p);
        e = bin(p, op, t->off, e, parse_concat(p));
    }
}

static jnode *parse_compare(P *p)
{
    size_t off = cur(p)->off;
    jnode *first = parse_math1(p);
    nodevec v = {0};
    int ops[64];
    size_t nops = 0;
    for (;;) {
        tok *t = cur(p);
        int op = t_op(t, "==") ? C_EQ : t_op(t, "!=") ? C_NE : t_op(t, "<") ? C_LT
                 : t_op(t, ">") ? C_GT : t_op(t, "<=") ? C_LE : t_op(t, ">=") ? C_GE
                 : t_name(t, "in") ? C_IN : -1;
        if (op < 0 && t_name(t, "not") && t_name(peek_tok(p, 1), "in")) {
            adv(p);
            op = C_NOTIN;
        }
        if (op < 0)
            break;
        if (nops == 64)
            p_fail(p, t->off, "comparison chain too long");
        adv(p);
        if (!v.n)
            nv_push(p, &v, first);
        ops[nops++] = op;
        nv_push(p, &v, parse_math1(p));
    }
    if (!nops)
        return first;
    jnode *n = mk(p, N_CMP, off);
    n->kids = v.v;
    n->n_kids = v.n;
    n->ops = p_alloc(p, nops * sizeof(int));
    memcpy(n->ops, ops, nops * sizeof(int));
    return n;
}

static jnode *parse_not(P *p)
{
    if (t_name(cur(p), "not")) {
        size_t off = cur(p)->off;
        enter(p, off);
        adv(p);
        jnode *n = mk(p, N_NOT, off);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(P *p)
{
    jnode *e = parse_not(p);
    while (t_name(cur(p), "and")) {
        size_t off = cur(p)->off;
        adv(p);
        jnode *n = mk(p, N_AND, off);
        n->a = e;
        n->b = parse_not(p);
        e = n;
    }
    return e;
}

static jnode *parse_or(P *p)
{
    jnode *e = parse_and(p);
    while (t_name(cur(p), "or")) {
        size_t off = cur(p)->off;
        adv(p);
        jnode *n = mk(p, N_OR, off);
        n->a = e;
        n->b = parse_and(p);
        e = n;
    }
    return e;
}

static jnode *parse_expr(P *p)
{
    enter(p, cur(p)->off);
    jnode *e = parse_or(p);
    while (t_name(cur(p), "if")) {
        size_t off = cur(p)->off;
        adv(p);
        jnode *n = mk(p, N_COND, off);
        n->a = parse_or(p); /* condition */
        n->b = e;           /* then */
        if (t_name(cur(p), "else")) {
            adv(p);
            n->c = parse_expr(p);
        }
        e = n;
    }
    p->depth--;
    return e;
}

/* An expression, or a tuple of them when followed by ','. */
static jnode *parse_tuple(P *p)
{
    size_t off = cur(p)->off;
    jnode *e = parse_expr(p);
    if (!t_op(cur(p), ","))
        return e;
    nodevec v = {0};
    nv_push(p, &v, e);
    while (t_op(cur(p), ",")) {
        adv(p);
        if (cur(p)->k == K_BEND || cur(p)->k == K_VEND)
            break;
        nv_push(p, &v, parse_expr(p));
    }
    jnode *t = mk(p, N_TUPLE, off);
    t->kids = v.v;
    t->n_kids = v.n;
    return t;
}

/* Assignment target: names (a, b), or one `name.attr` (namespace). */
static jnode *parse_target(P *p, bool allow_attr)
{
    size_t off = cur(p)->off;
    bool paren = t_op(cur(p), "(");
    if (paren)
        adv(p);
    strvec names = {0};
    jstr *attr = NULL;
    for (;;) {
        sv_push(p, &names, expect_ident(p, "a variable name"));
        if (allow_attr && names.n == 1 && t_op(cur(p), ".")) {
            adv(p);
            attr = expect_ident(p, "an attribute name");
            break;
        }
        if (!t_op(cur(p), ","))
            break;
        adv(p);
        if (!paren && (t_name(cur(p), "in") || t_op(cur(p), "=")))
            break;
    }
    if (paren)
        expect_op(p, ")");
    jnode *n = mk(p, N_NAME, off);
    n->names = names.v;
    n->n_names = names.n;
    n->name = attr; /* non-NULL: ns.attr */
    n->op = names.n > 1 || (paren && 0);
    for (size_t i = 0; i < names.n; i++) {
        jstr *s = names.v[i];
        if ((s->n == 4 && !memcmp(s->s, "true", 4)) || (s->n == 5 && !memcmp(s->s, "false", 5)) ||
            (s->n == 4 && !memcmp(s->s, "none", 4)))
            p_fail(p, off, "cannot assign to '%s'", s->s);
    }
    return n;
}

static jnode *parse_body(P *p, const char *const *ends, const char *opener, size_t opener_off);

static jnode *parse_filter_chain(P *p, jnode *target)
{
    /* name(args) | name ... applied to target (N_LIT placeholder) */
    jnode *e = target;
    for (;;) {
        e = parse_filter(p, e);
        if (!t_op(cur(p), "|"))
            return e;
        adv(p);
    }
}

static void parse_params(P *p, jnode *m)
{
    nodevec defs = {0};
    strvec names = {0};
    expect_op(p, "(");
    while (!t_op(cur(p), ")")) {
        if (names.n)
            expect_op(p, ",");
        if (t_op(cur(p), ")"))
            break;
        sv_push(p, &names, expect_ident(p, "a parameter name"));
        if (t_op(cur(p), "=")) {
            adv(p);
            nv_push(p, &defs, parse_expr(p));
        } else {
            if (defs.n && defs.v[defs.n - 1])
                p_fail(p, cur(p)->off, "parameter without a default after one with a default");
            nv_push(p, &defs, NULL);
        }
    }
    expect_op(p, ")");
    m->names = names.v;
    m->n_names = names.n;
    m->kids2 = defs.v;
    m->n_kids2 = defs.n;
}

static jnode *parse_stmt(P *p)
{
    tok *bt = cur(p); /* K_BBEGIN */
    adv(p);
    tok *t = cur(p);
    if (t->k != K_NAME) {
        char b[64];
        p_fail(p, t->off, "expected a tag name after '{%%', got %s", tok_desc(t, b, sizeof b));
    }
    size_t off = t->off;
    enter(p, off);
    jnode *n = NULL;
    if (t_name(t, "if")) {
        adv(p);
        n = mk(p, N_IF, off);
        n->a = parse_tuple(p);
        expect_bend(p, "if");
        static const char *const e1[] = {"elif", "else", "endif", NULL};
        n->b = parse_body(p, e1, "if", off);
        jnode *tail = n;
        for (;;) {
            tok *e = cur(p);
            adv(p);
            if (t_name(e, "elif")) {
                jnode *x = mk(p, N_IF, e->off);
                x->a = parse_tuple(p);
                expect_bend(p, "elif");
                x->b = parse_body(p, e1, "if", off);
                tail->c = x;
                tail = x;
            } else if (t_name(e, "else")) {
                expect_bend(p, "else");
                static const char *const e2[] = {"endif", NULL};
                tail->c = parse_body(p, e2, "if", off);
                adv(p);
                expect_bend(p, "endif");
                break;
            } else {
                expect_bend(p, "endif");
                break;
            }
        }
    } else if (t_name(t, "for")) {
        adv(p);
        n = mk(p, N_FOR, off);
        n->a = parse_target(p, false);
        if (!t_name(cur(p), "in")) {
            char b[64];
            p_fail(p, cur(p)->off, "expected 'in' in the 'for' tag, got %s",
                   tok_desc(cur(p), b, sizeof b));
        }
        adv(p);
        n->b = parse_or(p);
        if (t_name(cur(p), "if")) {
            adv(p);
            n->c = parse_expr(p);
        }
        if (t_name(cur(p), "recursive")) {
            n->op = 1; /* loop(children) renders the body again, one level deeper */
            adv(p);
        }
        expect_bend(p, "for");
        p->loop_depth++;
        static const char *const e1[] = {"else", "endfor", NULL};
        jnode *body = parse_body(p, e1, "for", off);
        p->loop_depth--;
        n->kids = body->kids;
        n->n_kids = body->n_kids;
        tok *e = cur(p);
        adv(p);
        if (t_name(e, "else")) {
            expect_bend(p, "else");
            static const char *const e2[] = {"endfor", NULL};
            jnode *eb = parse_body(p, e2, "for", off);
            n->kids2 = eb->kids;
            n->n_kids2 = eb->n_kids;
            adv(p);
        }
        expect_bend(p, "endfor");
    } else if (t_name(t, "set")) {
        adv(p);
        jnode *target = parse_target(p, true);
        if (t_op(cur(p), "=")) {
            adv(p);
            n = mk(p, N_SET, off);
            n->a = target;
            n->b = parse_tuple(p);
            expect_bend(p, "set");
        } else {
            n = mk(p, N_SETBLOCK, off);
            n->a = target;
            if (t_op(cur(p), "|")) {
                adv(p);
                n->c = parse_filter_chain(p, NULL);
            }
            expect_bend(p, "set");
            static const char *const e1[] = {"endset", NULL};
            n->b = parse_body(p, e1, "set", off);
            adv(p);
            expect_bend(p, "endset");
        }
    } else if (t_name(t, "macro")) {
        adv(p);
        n = mk(p, N_MACRO, off);
        n->name = expect_ident(p, "a macro name");
        parse_params(p, n);
        expect_bend(p, "macro");
        int ld = p->loop_depth;
        p->loop_depth = 0;
        static const char *const e1[] = {"endmacro", NULL};
        n->b = parse_body(p, e1, "macro", off);
        p->loop_depth = ld;
        adv(p);
        if (cur(p)->k == K_NAME)
            adv(p);
        expect_bend(p, "endmacro");
    } else if (t_name(t, "call")) {
        adv(p);
        n = mk(p, N_CALLBLOCK, off);
        if (t_op(cur(p), "("))
            parse_params(p, n);
        n->a = parse_expr(p);
        if (n->a->kind != N_CALL)
            p_fail(p, n->a->off, "expected a call in the 'call' tag");
        expect_bend(p, "call");
        static const char *const e1[] = {"endcall", NULL};
        int ld = p->loop_depth;
        p->loop_depth = 0;
        n->b = parse_body(p, e1, "call", off);
        p->loop_depth = ld;
        adv(p);
        expect_bend(p, "endcall");
    } else if (t_name(t, "filter")) {
        adv(p);
        n = mk(p, N_FILTERBLOCK, off);
        n->c = parse_filter_chain(p, NULL);
        expect_bend(p, "filter");
        static const char *const e1[] = {"endfilter", NULL};
        n->b = parse_body(p, e1, "filter", off);
        adv(p);
        expect_bend(p, "endfilter");
    } else if (t_name(t, "generation")) {
        adv(p);
        expect_bend(p, "generation");
        static const char *const e1[] = {"endgeneration", NULL};
        n = parse_body(p, e1, "generation", off);
        adv(p);
        expect_bend(p, "endgeneration");
    } else if (t_name(t, "with")) {
        adv(p);
        n = mk(p, N_WITH, off);
        nodevec vals = {0};
        strvec names = {0};
        while (cur(p)->k != K_BEND) {
            if (names.n)
                expect_op(p, ",");
            sv_push(p, &names, expect_ident(p, "a variable name"));
            expect_op(p, "=");
            nv_push(p, &vals, parse_expr(p));
        }
        n->names = names.v;
        n->n_names = names.n;
        n->kids2 = vals.v;
        n->n_kids2 = vals.n;
        expect_bend(p, "with");
        static const char *const e1[] = {"endwith", NULL};
        n->b = parse_body(p, e1, "with", off);
        adv(p);
        expect_bend(p, "endwith");
    } else if (t_name(t, "break") || t_name(t, "continue")) {
        bool brk = t_name(t, "break");
        if (!p->loop_depth)
            p_fail(p, off, "'%s' outside of a loop", brk ? "break" : "continue");
        adv(p);
        n = mk(p, brk ? N_BREAK : N_CONTINUE, off);
        expect_bend(p, brk ? "break" : "continue");
    } else if (t_name(t, "include") || t_name(t, "import") || t_name(t, "from") ||
               t_name(t, "extends") || t_name(t, "block")) {
        p_fail(p, off, "'%.*s' is not allowed: chat templates are rendered without a loader",
               (int)t->n, t->p);
    } else {
        p_fail(p, off, "unknown tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
    }
    (void)bt;
    p->depth--;
    return n;
}

static const char *last_of(const char *const *l)
{
    const char *r = l[0];
    for (; *l; l++)
        r = *l;
    return r;
}

/* Statements up to a block tag named in `ends` (left with cur at that
 * name) or the end of the template (ends == NULL). */
static jnode *parse_body(P *p, const char *const *ends, const char *opener, size_t opener_off)
{
    jnode *body = mk(p, N_BODY, cur(p)->off);
    nodevec v = {0};
    for (;;) {
        tok *t = cur(p);
        if (t->k == K_EOF) {
            if (ends) {
                int line, col;
                pos_of(p->t->src, p->t->n, opener_off, &line, &col);
                p_fail(p, t->off,
                       "unexpected end of template: the '%s' tag at line %d, column %d is never "
                       "closed (expected '%s')",
                       opener, line, col, last_of(ends));
            }
            break;
        }
        if (t->k == K_TEXT) {
            jnode *n = mk(p, N_TEXT, t->off);
            n->val.t = T_STR;
            n->val.u.s = t->s;
            nv_push(p, &v, n);
            adv(p);
        } else if (t->k == K_VBEGIN) {
            adv(p);
            jnode *n = mk(p, N_OUTPUT, t->off);
            n->a = parse_tuple(p);
            if (cur(p)->k != K_VEND) {
                char b[64];
                p_fail(p, cur(p)->off, "expected '}}', got %s", tok_desc(cur(p), b, sizeof b));
            }
            adv(p);
            nv_push(p, &v, n);
        } else if (t->k == K_BBEGIN) {
            tok *nm = peek_tok(p, 1);
            if (ends && nm->k == K_NAME) {
                for (const char *const *e = ends; *e; e++)
                    if (t_name(nm, *e)) {
                        adv(p);
                        goto done;
                    }
            }
            if (nm->k == K_NAME && nm->n >= 3 &&
                (memcmp(nm->p, "end", 3) == 0 || t_name(nm, "else") || t_name(nm, "elif"))) {
                if (ends)
                    p_fail(p, nm->off, "unexpected '%.*s' inside the '%s' tag (expected '%s')",
                           (int)(nm->n > 40 ? 40 : nm->n), nm->p, opener, last_of(ends));
                p_fail(p, nm->off, "unexpected '%.*s' without a matching opening tag",
                       (int)(nm->n > 40 ? 40 : nm->n), nm->p);
            }
            nv_push(p, &v, parse_stmt(p));
        } else {
            char b[64];
            p_fail(p, t->off, "unexpected %s", tok_desc(t, b, sizeof b));
        }
    }
done:
    body->kids = v.v;
    body->n_kids = v.n;
    return body;
}

/* ------------------------------------------------------------ interpreter */

typedef struct jframe {
    struct jframe *parent;
    size_t n, cap;
    jstr **k;
    jval *v;
} jframe;

enum { F_BUILTIN, F_METHOD, F_MACRO, F_CALLER, F_CYCLE, F_CHANGED };
enum { B_RANGE, B_NAMESPACE, B_RAISE, B_STRFTIME, B_DICT };

typedef struct jfunc {
    int kind;
    int id;           /* F_BUILTIN */
    jstr *name;       /* method or macro name */
    jval self;        /* F_METHOD, F_CYCLE */
    const jnode *node; /* F_MACRO, F_CALLER: params in names/kids2, body in b */
    jframe *closure;
} jfunc;

typedef struct jloop {
    jlist *items;
    int64_t i;
    int depth;
    jval last;       /* loop.changed: the arguments of its previous call */
    bool has_last;
    const struct jnode *node;  /* recursive loops: the for tag ... */
    struct jframe *frame;      /* ... and the frame it runs in */
} jloop;

typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

typedef struct jargs {
    jval *pos;
    size_t npos;
    jstr **kwn;
    jval *kwv;
    size_t nkw;
} jargs;

typedef struct R {
    const qe_jinja *t;
    arena ar;
    jmp_buf jb;
    qe_err *err;
    qe_jinja_limits lim;
    uint64_t steps;
    int depth;
    int call_depth;
    jframe *root;
} R;

__attribute__((format(printf, 3, 4), noreturn)) static void r_fail_code(R *r, int code,
                                                                        const char *fmt, ...);

__attribute__((format(printf, 3, 4), noreturn)) static void r_fail(R *r, const jnode *at,
                                                                   const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = 0, col = 0;
    if (at)
        pos_of(r->t->src, r->t->n, at->off, &line, &col);
    qe_err_set(r->err, QE_EINVAL, "%s: line %d, column %d: %s", r->t->name, line, col, msg);
    longjmp(r->jb, 1);
}


static void r_fail_code(R *r, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qe_err_set(r->err, code, "%s: %s", r->t->name, msg);
    longjmp(r->jb, 1);
}

static void *r_alloc(R *r, size_t n)
{
    void *m = arena_alloc_raw(&r->ar, n);
    if (!m)
        r_fail_code(r, QE_EBOUNDS, "memory limit of %zu MiB exceeded while rendering",
                    r->lim.max_memory_nbytes >> 20);
    return m;
}

static void step(R *r, const jnode *at)
{
    if (++r->steps > r->lim.max_steps)
        r_fail(r, at, "evaluation limit of %llu steps exceeded (runaway loop?)",
               (unsigned long long)r->lim.max_steps);
}

/* --- buffers and strings --- */

static void buf_put(R *r, jbuf *b, const char *s, size_t n)
{
    if (!n)
        return;
    if (b->n + n > r->lim.max_output_nbytes)
        r_fail_code(r, QE_EBOUNDS, "output exceeds the limit of %zu bytes",
                    r->lim.max_output_nbytes);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *np = r_alloc(r, cap);
        if (b->n)
            memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_puts(R *r, jbuf *b, const char *s) { buf_put(r, b, s, strlen(s)); }
static void buf_putc(R *r, jbuf *b, char c) { buf_put(r, b, &c, 1); }

static jstr *mkstr(R *r, const char *s, size_t n)
{
    if (n > r->lim.max_output_nbytes)
        r_fail_code(r, QE_EBOUNDS, "a string of %zu bytes exceeds the limit of %zu bytes", n,
                    r->lim.max_output_nbytes);
    jstr *j = r_alloc(r, sizeof *j + n + 1);
    j->n = n;
    if (n)
        memcpy(j->s, s, n);
    j->s[n] = 0;
    return j;
}

static jval v_str(R *r, const char *s, size_t n)
{
    jval v = {.t = T_STR};
    v.u.s = mkstr(r, s, n);
    return v;
}
static jval v_cstr(R *r, const char *s) { return v_str(r, s, strlen(s)); }
static jval v_buf(R *r, const jbuf *b) { return v_str(r, b->p ? b->p : "", b->n); }
static jval v_int(int64_t i) { jval v = {.t = T_INT}; v.u.i = i; return v; }
static jval v_float(double f) { jval v = {.t = T_FLOAT}; v.u.f = f; return v; }
static jval v_bool(bool b) { jval v = {.t = T_BOOL}; v.u.b = b; return v; }
static jval v_none(void) { jval v = {.t = T_NONE}; return v; }

__attribute__((format(printf, 2, 3))) static jval v_undef(R *r, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jval v = {.t = T_UNDEF};
    v.u.s = mkstr(r, msg, strlen(msg));
    return v;
}

static jlist *mklist(R *r, size_t n)
{
    jlist *l = r_alloc(r, sizeof *l);
    memset(l, 0, sizeof *l);
    l->n = n;
    l->v = n ? r_alloc(r, n * sizeof(jval)) : NULL;
    return l;
}
static jval v_list(jlist *l) { jval v = {.t = T_LIST}; v.u.l = l; return v; }

typedef struct jvec {
    jval *v;
    size_t n, cap;
} jvec;
static void vec_push(R *r, jvec *v, jval x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        jval *nv = r_alloc(r, cap * sizeof *nv);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}
static jval v_vec(R *r, jvec *v)
{
    jlist *l = r_alloc(r, sizeof *l);
    memset(l, 0, sizeof *l);
    l->n = v->n;
    l->v = v->v;
    return v_list(l);
}

static jdict *mkdict(R *r)
{
    jdict *d = r_alloc(r, sizeof *d);
    memset(d, 0, sizeof *d);
    return d;
}

static bool v_eq(const jval *a, const jval *b);

static jval *dict_find(jdict *d, const jval *k)
{
    for (size_t i = 0; i < d->n; i++)
        if (v_eq(&d->k[i], k))
            return &d->v[i];
    return NULL;
}
static jval *dict_find_s(jdict *d, const char *s, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == T_STR && d->k[i].u.s->n == n && memcmp(d->k[i].u.s->s, s, n) == 0)
            return &d->v[i];
    return NULL;
}
static void dict_set(R *r, jdict *d, jval k, jval v)
{
    jval *e = dict_find(d, &k);
    if (e) {
        *e = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jval *nk = r_alloc(r, cap * sizeof *nk), *nv = r_alloc(r, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
}

/* --- UTF-8 --- */

/* Decode one code point at s[i] (invalid bytes decode as themselves). */
static uint32_t utf8_get(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c = u[*i];
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (*i + (size_t)extra >= n + (extra ? 0 : 1) && extra) {
        (*i)++;
        return c;
    }
    if (extra) {
        c &= (uint32_t)(0x3F >> extra);
        for (int k = 1; k <= extra; k++)
            c = (c << 6) | (u[*i + (size_t)k] & 0x3F);
    }
    *i += (size_t)extra + 1;
    return c;
}

static size_t cp_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* Byte offset of code point index k (k <= count). */
static size_t cp_off(const char *s, size_t n, size_t k)
{
    size_t i = 0, c = 0;
    for (; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (c == k)
                return i;
            c++;
        }
    }
    return n;
}

static bool py_space(uint32_t c)
{
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 ||
           c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python str.strip family: chars NULL = whitespace. */
static jval py_strip(R *r, const jstr *s, const jstr *chars, bool left, bool right)
{
    size_t a = 0, b = s->n;
    for (;;) {
        if (!left || a >= b)
            break;
        size_t i = a;
        uint32_t c = utf8_get(s->s, b, &i);
        bool strip;
        if (chars) {
            strip = false;
            for (size_t j = 0; j < chars->n;) {
                if (utf8_get(chars->s, chars->n, &j) == c)
                    strip = true;
            }
        } else {
            strip = py_space(c);
        }
        if (!strip)
            break;
        a = i;
    }
    while (right && b > a) {
        size_t st = b - 1;
        while (st > a && ((unsigned char)s->s[st] & 0xC0) == 0x80)
            st--;
        size_t i = st;
        uint32_t c = utf8_get(s->s, b, &i);
        bool strip;
        if (chars) {
            strip = false;
            for (size_t j = 0; j < chars->n;) {
                if (utf8_get(chars->s, chars->n, &j) == c)
                    strip = true;
            }
        } else {
            strip = py_space(c);
        }
        if (!strip)
            break;
        b = st;
    }
    return v_str(r, s->s + a, b - a);
}

/* --- type names, truthiness, equality, ordering --- */

static const char *type_name(const jval *v)
{
    switch (v->t) {
    case T_UNDEF: return "Undefined";
    case T_NONE: return "NoneType";
    case T_BOOL: return "bool";
    case T_INT: return "int";
    case T_FLOAT: return "float";
    case T_STR: return "str";
    case T_LIST: return v->u.l->lazy ? "generator" : v->u.l->tuple ? "tuple" : "list";
    case T_DICT: return "dict";
    case T_NS: return "Namespace";
    case T_FUNC: return "function";
    case T_LOOP: return "LoopContext";
    }
    return "?";
}

static bool truthy(const jval *v)
{
    switch (v->t) {
    case T_UNDEF:
    case T_NONE: return false;
    case T_BOOL: return v->u.b;
    case T_INT: return v->u.i != 0;
    case T_FLOAT: return v->u.f != 0;
    case T_STR: return v->u.s->n != 0;
    case T_LIST: return v->u.l->lazy || v->u.l->n != 0;
    case T_DICT: return v->u.d->n != 0;
    default: return true;
    }
}

static bool is_num(const jval *v) { return v->t == T_INT || v->t == T_FLOAT || v->t == T_BOOL; }
static double num_f(const jval *v)
{
    return v->t == T_FLOAT ? v->u.f : v->t == T_INT ? (double)v->u.i : (double)v->u.b;
}
static int64_t num_i(const jval *v) { return v->t == T_INT ? v->u.i : (int64_t)v->u.b; }

static bool v_eq(const jval *a, const jval *b)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != T_FLOAT && b->t != T_FLOAT)
            return num_i(a) == num_i(b);
        return num_f(a) == num_f(b);
    }
    if (a->t != b->t)
        return false;
    switch (a->t) {
    case T_UNDEF:
    case T_NONE: return true;
    case T_STR: return a->u.s->n == b->u.s->n && memcmp(a->u.s->s, b->u.s->s, a->u.s->n) == 0;
    case T_LIST:
        if (a->u.l->n != b->u.l->n || a->u.l->tuple != b->u.l->tuple)
            return false;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!v_eq(&a->u.l->v[i], &b->u.l->v[i]))
                return false;
        return true;
    case T_DICT:
        if (a->u.d->n != b->u.d->n)
            return false;
        for (size_t i = 0; i < a->u.d->n; i++) {
            jval *o = dict_find(b->u.d, &a->u.d->k[i]);
            if (!o || !v_eq(&a->u.d->v[i], o))
                return false;
        }
        return true;
    case T_NS: return a->u.d == b->u.d;
    case T_FUNC: return a->u.fn == b->u.fn;
    case T_LOOP: return a->u.lp == b->u.lp;
    }
    return false;
}

/* Python ordering; error on types that do not order. */
static int v_cmp(R *r, const jnode *at, const jval *a, const jval *b, const char *op)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != T_FLOAT && b->t != T_FLOAT)
            return num_i(a) < num_i(b) ? -1 : num_i(a) > num_i(b);
        double x = num_f(a), y = num_f(b);
        return x < y ? -1 : x > y;
    }
    if (a->t == T_STR && b->t == T_STR) {
        size_t n = a->u.s->n < b->u.s->n ? a->u.s->n : b->u.s->n;
        int c = memcmp(a->u.s->s, b->u.s->s, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a->u.s->n < b->u.s->n ? -1 : a->u.s->n > b->u.s->n;
    }
    if (a->t == T_LIST && b->t == T_LIST) {
        size_t n = a->u.l->n < b->u.l->n ? a->u.l->n : b->u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (!v_eq(&a->u.l->v[i], &b->u.l->v[i]))
                return v_cmp(r, at, &a->u.l->v[i], &b->u.l->v[i], op);
        }
        return a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
    }
    if (a->t == T_UNDEF)
        r_fail(r, at, "%s", a->u.s ? a->u.s->s : "undefined value");
    if (b->t == T_UNDEF)
        r_fail(r, at, "%s", b->u.s ? b->u.s->s : "undefined value");
    r_fail(r, at, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a),
           type_name(b));
}

/* --- values to text --- */

/* Python repr(float). */
static void fmt_float(double x, char *out, size_t nb)
{
    if (isnan(x)) {
        snprintf(out, nb, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(out, nb, x < 0 ? "-inf" : "inf");
        return;
    }
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    /* buf: [-]d.ddde[+-]XX */
    char digits[32];
    int nd = 0;
    const char *q = buf;
    bool neg = *q == '-';
    if (neg)
        q++;
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q))
            digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char *o = out;
    size_t left = nb;
#define PUT(...)                                                                            \
    do {                                                                                    \
        int w_ = snprintf(o, left, __VA_ARGS__);                                            \
        if (w_ > 0 && (size_t)w_ < left) {                                                  \
            o += w_;                                                                        \
            left -= (size_t)w_;                                                             \
        }                                                                                   \
    } while (0)
    if (neg)
        PUT("-");
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                PUT("%c", i < nd ? digits[i] : '0');
            PUT(".");
            if (nd > exp + 1)
                PUT("%s", digits + exp + 1);
            else
                PUT("0");
        } else {
            PUT("0.");
            for (int i = 0; i < -exp - 1; i++)
                PUT("0");
            PUT("%s", digits);
        }
    } else {
        PUT("%c", digits[0]);
        if (nd > 1)
            PUT(".%s", digits + 1);
        PUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
#undef PUT
}

static void put_repr_str(R *r, jbuf *b, const jstr *s)
{
    bool has_sq = memchr(s->s, '\'', s->n) != NULL, has_dq = memchr(s->s, '"', s->n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    buf_putc(r, b, q);
    for (size_t i = 0; i < s->n;) {
        size_t st = i;
        uint32_t c = utf8_get(s->s, s->n, &i);
        char e[16];
        if (c == '\\')
            buf_puts(r, b, "\\\\");
        else if (c == (uint32_t)q) {
            buf_putc(r, b, '\\');
            buf_putc(r, b, q);
        } else if (c == '\n')
            buf_puts(r, b, "\\n");
        else if (c == '\r')
            buf_puts(r, b, "\\r");
        else if (c == '\t')
            buf_puts(r, b, "\\t");
        else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0xA0) || c == 0xAD) {
            snprintf(e, sizeof e, "\\x%02x", c);
            buf_puts(r, b, e);
        } else if (c == 0x2028 || c == 0x2029 || (c >= 0x200B && c <= 0x200F) ||
                   (c >= 0xD800 && c <= 0xDFFF)) {
            snprintf(e, sizeof e, "\\u%04x", c);
            buf_puts(r, b, e);
        } else
            buf_put(r, b, s->s + st, i - st);
    }
    buf_putc(r, b, q);
}

static void put_value(R *r, jbuf *b, const jval *v, bool repr);

static void put_value(R *r, jbuf *b, const jval *v, bool repr)
{
    char tmp[64];
    switch (v->t) {
    case T_UNDEF: break;
    case T_NONE: buf_puts(r, b, "None"); break;
    case T_BOOL: buf_puts(r, b, v->u.b ? "True" : "False"); break;
    case T_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
        buf_puts(r, b, tmp);
        break;
    case T_FLOAT:
        fmt_float(v->u.f, tmp, sizeof tmp);
        buf_puts(r, b, tmp);
        break;
    case T_STR:
        if (repr)
            put_repr_str(r, b, v->u.s);
        else
            buf_put(r, b, v->u.s->s, v->u.s->n);
        break;
    case T_LIST: {
        jlist *l = v->u.l;
        if (l->lazy) { /* Python prints the generator's address; no stable text */
            buf_puts(r, b, "<generator object>");
            break;
        }
        buf_putc(r, b, l->tuple ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                buf_puts(r, b, ", ");
            put_value(r, b, &l->v[i], true);
        }
        if (l->tuple && l->n == 1)
            buf_putc(r, b, ',');
        buf_putc(r, b, l->tuple ? ')' : ']');
        break;
    }
    case T_DICT:
    case T_NS: {
        jdict *d = v->u.d;
        if (v->t == T_NS)
            buf_puts(r, b, "<Namespace ");
        buf_putc(r, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                buf_puts(r, b, ", ");
            put_value(r, b, &d->k[i], true);
            buf_puts(r, b, ": ");
            put_value(r, b, &d->v[i], true);
        }
        buf_putc(r, b, '}');
        if (v->t == T_NS)
            buf_putc(r, b, '>');
        break;
    }
    case T_FUNC:
        if (v->u.fn->kind == F_MACRO) {
            buf_puts(r, b, "<Macro '");
            buf_put(r, b, v->u.fn->name->s, v->u.fn->name->n);
            buf_puts(r, b, "'>");
        } else {
            buf_puts(r, b, "<built-in function>");
        }
        break;
    case T_LOOP: buf_puts(r, b, "<LoopContext>"); break;
    }
}

static jstr *to_str(R *r, const jval *v)
{
    if (v->t == T_STR)
        return v->u.s;
    jbuf b = {0};
    put_value(r, &b, v, false);
    return mkstr(r, b.p ? b.p : "", b.n);
}

/* json.dumps(ensure_ascii, indent, separators, sort_keys) */
typedef struct json_opts {
    bool ascii;
    bool sort;
    const char *indent; /* NULL = one line */
    const char *item_sep, *key_sep;
} json_opts;

static void put_json_str(R *r, jbuf *b, const char *s, size_t n, bool ascii)
{
    buf_putc(r, b, '"');
    for (size_t i = 0; i < n;) {
        size_t st = i;
        uint32_t c = utf8_get(s, n, &i);
        char e[16];
        switch (c) {
        case '"': buf_puts(r, b, "\\\""); break;
        case '\\': buf_puts(r, b, "\\\\"); break;
        case '\n': buf_puts(r, b, "\\n"); break;
        case '\r': buf_puts(r, b, "\\r"); break;
        case '\t': buf_puts(r, b, "\\t"); break;
        case '\b': buf_puts(r, b, "\\b"); break;
        case '\f': buf_puts(r, b, "\\f"); break;
        default:
            if (c < 0x20 || (ascii && c >= 0x7F)) {
                if (c >= 0x10000) {
                    uint32_t v = c - 0x10000;
                    snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else {
                    snprintf(e, sizeof e, "\\u%04x", c);
                }
                buf_puts(r, b, e);
            } else {
                buf_put(r, b, s + st, i - st);
            }
        }
    }
    buf_putc(r, b, '"');
}

static void json_nl(R *r, jbuf *b, const json_opts *o, int level)
{
    buf_putc(r, b, '\n');
    for (int i = 0; i < level; i++)
        buf_puts(r, b, o->indent);
}

static void put_json(R *r, const jnode *at, jbuf *b, const jval *v, const json_opts *o, int level)
{
    char tmp[64];
    if (level > MAX_NEST)
        r_fail(r, at, "tojson: value nested too deeply");
    switch (v->t) {
    case T_NONE: buf_puts(r, b, "null"); return;
    case T_BOOL: buf_puts(r, b, v->u.b ? "true" : "false"); return;
    case T_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
        buf_puts(r, b, tmp);
        return;
    case T_FLOAT:
        if (isnan(v->u.f))
            buf_puts(r, b, "NaN");
        else if (isinf(v->u.f))
            buf_puts(r, b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else {
            fmt_float(v->u.f, tmp, sizeof tmp);
            buf_puts(r, b, tmp);
        }
        return;
    case T_STR: put_json_str(r, b, v->u.s->s, v->u.s->n, o->ascii); return;
    case T_LIST: {
        jlist *l = v->u.l;
        if (l->lazy)
            r_fail(r, at, "tojson: Object of type generator is not JSON serializable");
        if (!l->n) {
            buf_puts(r, b, "[]");
            return;
        }
        buf_putc(r, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                buf_puts(r, b, o->item_sep);
            if (o->indent)
                json_nl(r, b, o, level + 1);
            put_json(r, at, b, &l->v[i], o, level + 1);
        }
        if (o->indent)
            json_nl(r, b, o, level);
        buf_putc(r, b, ']');
        return;
    }
    case T_DICT: {
        jdict *d = v->u.d;
        if (!d->n) {
            buf_puts(r, b, "{}");
            return;
        }
        size_t *ord = r_alloc(r, d->n * sizeof *ord);
        for (size_t i = 0; i < d->n; i++)
            ord[i] = i;
        if (o->sort) { /* insertion sort by key (keys are strings) */
            for (size_t i = 1; i < d->n; i++) {
                size_t x = ord[i], j = i;
                while (j > 0 && v_cmp(r, at, &d->k[ord[j - 1]], &d->k[x], "<") > 0) {
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = x;
            }
        }
        buf_putc(r, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            const jval *k = &d->k[ord[i]];
            if (i)
                buf_puts(r, b, o->item_sep);
            if (o->indent)
                json_nl(r, b, o, level + 1);
            if (k->t == T_STR) {
                put_json_str(r, b, k->u.s->s, k->u.s->n, o->ascii);
            } else if (k->t == T_INT || k->t == T_FLOAT || k->t == T_BOOL || k->t == T_NONE) {
                jbuf kb = {0};
                put_json(r, at, &kb, k, o, level + 1);
                put_json_str(r, b, kb.p, kb.n, o->ascii);
            } else {
                r_fail(r, at, "tojson: keys must be str, int, float, bool or None, not %s",
                       type_name(k));
            }
            buf_puts(r, b, o->key_sep);
            put_json(r, at, b, &d->v[ord[i]], o, level + 1);
        }
        if (o->indent)
            json_nl(r, b, o, level);
        buf_putc(r, b, '}');
        return;
    }
    default:
        r_fail(r, at, "tojson: Object of type %s is not JSON serializable", type_name(v));
    }
}

/* --- frames --- */

static jframe *frame_new(R *r, jframe *parent)
{
    jframe *f = r_alloc(r, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(R *r, jframe *f, jstr *k, jval v)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->k[i]->n == k->n && memcmp(f->k[i]->s, k->s, k->n) == 0) {
            f->v[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        jstr **nk = r_alloc(r, cap * sizeof *nk);
        jval *nv = r_alloc(r, cap * sizeof *nv);
        if (f->n) {
            memcpy(nk, f->k, f->n * sizeof *nk);
            memcpy(nv, f->v, f->n * sizeof *nv);
        }
        f->k = nk;
        f->v = nv;
        f->cap = cap;
    }
    f->k[f->n] = k;
    f->v[f->n] = v;
    f->n++;
}

static jval *frame_find(jframe *f, const jstr *k)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (f->k[i]->n == k->n && memcmp(f->k[i]->s, k->s, k->n) == 0)
                return &f->v[i];
    return NULL;
}

static jval mkfunc(R *r, int kind, int id, jstr *name)
{
    jfunc *fn = r_alloc(r, sizeof *fn);
    memset(fn, 0, sizeof *fn);
    fn->kind = kind;
    fn->id = id;
    fn->name = name;
    jval v = {.t = T_FUNC};
    v.u.fn = fn;
    return v;
}

static jval lookup(R *r, jframe *f, const jstr *name)
{
    jval *v = frame_find(f, name);
    if (v)
        return *v;
    static const char *const bn[] = {"range", "namespace", "raise_exception", "strftime_now",
                                     "dict"};
    for (int i = 0; i < 5; i++)
        if (strlen(bn[i]) == name->n && memcmp(bn[i], name->s, name->n) == 0)
            return mkfunc(r, F_BUILTIN, i, mkstr(r, bn[i], strlen(bn[i])));
    return v_undef(r, "'%s' is undefined", name->s);
}

/* --- iteration --- */

/* The items a for loop, |list and friends walk over. */
static jlist *iter_list(R *r, const jnode *at, const jval *v)
{
    switch (v->t) {
    case T_UNDEF: return mklist(r, 0);
    case T_LIST: return v->u.l;
    case T_DICT: {
        jlist *l = mklist(r, v->u.d->n);
        memcpy(l->v, v->u.d->k, v->u.d->n * sizeof(jval));
        return l;
    }
    case T_STR: {
        jlist *l = mklist(r, cp_count(v->u.s->s, v->u.s->n));
        size_t k = 0;
        for (size_t i = 0; i < v->u.s->n;) {
            size_t st = i;
            utf8_get(v->u.s->s, v->u.s->n, &i);
            l->v[k++] = v_str(r, v->u.s->s + st, i - st);
        }
        l->n = k;
        return l;
    }
    default: r_fail(r, at, "'%s' object is not iterable", type_name(v));
    }
}

/* --- attribute and item access --- */

static const char *const STR_METHODS[] = {
    "strip",  "lstrip",   "rstrip",  "split",    "rsplit",  "splitlines", "startswith",
    "endswith", "replace", "upper",  "lower",    "title",   "capitalize", "find",
    "rfind",  "index",    "count",   "join",     "isdigit", "isalpha",    "isalnum",
    "isspace", "isupper", "islower", "zfill",    "center",  "ljust",      "rjust",
    "swapcase", "format", "partition", "rpartition", "removeprefix", "removesuffix", "isnumeric",
    "isdecimal", "casefold", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", NULL};
static const char *const LIST_METHODS[] = {"index", "count", "copy", NULL};
static const char *const UNSAFE[] = {"append", "extend", "insert", "pop", "remove", "clear",
                                     "sort", "reverse", "update", "setdefault", "popitem",
                                     "add", "discard", NULL};

static jval getattr_v(R *r, const jnode *at, const jval *o, jstr *name)
{
    switch (o->t) {
    case T_UNDEF: r_fail(r, at, "%s", o->u.s ? o->u.s->s : "undefined value");
    case T_DICT:
        if (in_list(DICT_METHODS, name)) {
            jval f = mkfunc(r, F_METHOD, 0, name);
            f.u.fn->self = *o;
            return f;
        }
        if (in_list(UNSAFE, name))
            r_fail(r, at, "access to attribute '%s' of 'dict' object is unsafe", name->s);
        {
            jval *v = dict_find_s(o->u.d, name->s, name->n);
            if (v)
                return *v;
        }
        break;
    case T_NS: {
        jval *v = dict_find_s(o->u.d, name->s, name->n);
        if (v)
            return *v;
        break;
    }
    case T_STR:
        if (in_list(STR_METHODS, name)) {
            jval f = mkfunc(r, F_METHOD, 0, name);
            f.u.fn->self = *o;
            return f;
        }
        break;
    case T_LIST:
        if (in_list(LIST_METHODS, name)) {
            jval f = mkfunc(r, F_METHOD, 0, name);
            f.u.fn->self = *o;
            return f;
        }
        if (in_list(UNSAFE, name))
            r_fail(r, at, "access to attribute '%s' of '%s' object is unsafe", name->s,
                   type_name(o));
        break;
    case T_LOOP: {
        jloop *lp = o->u.lp;
        int64_t n = (int64_t)lp->items->n, i = lp->i;
#define IS(lit) (name->n == strlen(lit) && memcmp(name->s, lit, name->n) == 0)
        if (IS("index"))
            return v_int(i + 1);
        if (IS("index0"))
            return v_int(i);
        if (IS("revindex"))
            return v_int(n - i);
        if (IS("revindex0"))
            return v_int(n - i - 1);
        if (IS("first"))
            return v_bool(i == 0);
        if (IS("last"))
            return v_bool(i == n - 1);
        if (IS("length"))
            return v_int(n);
        if (IS("depth"))
            return v_int(lp->depth);
        if (IS("depth0"))
            return v_int(lp->depth - 1);
        if (IS("previtem"))
            return i > 0 ? lp->items->v[i - 1] : v_undef(r, "there is no previous item");
        if (IS("nextitem"))
            return i + 1 < n ? lp->items->v[i + 1] : v_undef(r, "there is no next item");
        if (IS("cycle") || IS("changed")) {
            jval f = mkfunc(r, IS("cycle") ? F_CYCLE : F_CHANGED, 0, name);
            f.u.fn->self = *o;
            return f;
        }
#undef IS
        break;
    }
    default: break;
    }
    if (o->t == T_NONE)
        return v_undef(r, "'None' has no attribute '%s'", name->s);
    return v_undef(r, "'%s object' has no attribute '%s'", type_name(o), name->s);
}

static jval getitem_v(R *r, const jnode *at, const jval *o, const jval *k)
{
    switch (o->t) {
    case T_UNDEF: r_fail(r, at, "%s", o->u.s ? o->u.s->s : "undefined value");
    case T_DICT:
    case T_NS: {
        jval *v = dict_find(o->u.d, k);
        if (v)
            return *v;
        break;
    }
    case T_LIST:
    case T_STR:
        if (o->t == T_LIST && o->u.l->lazy)
            return v_undef(r, "'generator' object is not subscriptable");
        if (k->t == T_INT || k->t == T_BOOL) {
            int64_t i = num_i(k);
            int64_t n = o->t == T_LIST ? (int64_t)o->u.l->n
                                       : (int64_t)cp_count(o->u.s->s, o->u.s->n);
            if (i < 0)
                i += n;
            if (i >= 0 && i < n) {
                if (o->t == T_LIST)
                    return o->u.l->v[i];
                size_t a = cp_off(o->u.s->s, o->u.s->n, (size_t)i);
                size_t b = a;
                utf8_get(o->u.s->s, o->u.s->n, &b);
                return v_str(r, o->u.s->s + a, b - a);
            }
            return v_undef(r, "%s index out of range", type_name(o));
        }
        break;
    default: break;
    }
    if (k->t == T_STR)
        return getattr_v(r, at, o, k->u.s);
    jbuf kb = {0};
    put_value(r, &kb, k, true);
    return v_undef(r, "'%s object' has no item %s", type_name(o), kb.p ? kb.p : "");
}

static int64_t clamp_idx(int64_t i, int64_t n, bool neg_step)
{
    if (i < 0) {
        i += n;
        if (i < 0)
            i = neg_step ? -1 : 0;
    } else if (i >= n) {
        i = neg_step ? n - 1 : n;
    }
    return i;
}

static jval slice_v(R *r, const jnode *at, const jval *o, const jval *a, const jval *b,
                    const jval *c)
{
    int64_t step = 1;
    if (c->t != T_NONE && c->t != T_UNDEF) {
        if (c->t != T_INT)
            r_fail(r, at, "slice step must be an integer");
        step = c->u.i;
        if (step == 0)
            r_fail(r, at, "slice step cannot be zero");
    }
    bool is_str = o->t == T_STR;
    if (!is_str && o->t != T_LIST) {
        if (o->t == T_UNDEF)
            r_fail(r, at, "%s", o->u.s ? o->u.s->s : "undefined value");
        r_fail(r, at, "'%s' object is not subscriptable", type_name(o));
    }
    int64_t n = is_str ? (int64_t)cp_count(o->u.s->s, o->u.s->n) : (int64_t)o->u.l->n;
    int64_t lo, hi;
    if (a->t == T_NONE || a->t == T_UNDEF)
        lo = step > 0 ? 0 : n - 1;
    else if (a->t == T_INT)
        lo = clamp_idx(a->u.i, n, step < 0);
    else
        r_fail(r, at, "slice indices must be integers or None");
    if (b->t == T_NONE || b->t == T_UNDEF)
        hi = step > 0 ? n : -1;
    else if (b->t == T_INT)
        hi = clamp_idx(b->u.i, n, step < 0);
    else
        r_fail(r, at, "slice indices must be integers or None");
    /* code point offsets of a string, computed once */
    size_t *offs = NULL;
    if (is_str) {
        offs = r_alloc(r, ((size_t)n + 1) * sizeof *offs);
        size_t k = 0;
        for (size_t i = 0; i < o->u.s->n; i++)
            if (((unsigned char)o->u.s->s[i] & 0xC0) != 0x80)
                offs[k++] = i;
        offs[k] = o->u.s->n;
    }
    jbuf sb = {0};
    jvec lv = {0};
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (is_str)
            buf_put(r, &sb, o->u.s->s + offs[i], offs[i + 1] - offs[i]);
        else
            vec_push(r, &lv, o->u.l->v[i]);
    }
    if (is_str)
        return v_buf(r, &sb);
    jval res = v_vec(r, &lv);
    res.u.l->tuple = o->u.l->tuple;
    return res;
}

/* --- arguments --- */

static bool getarg(const jargs *a, size_t idx, const char *name, jval *out)
{
    if (idx < a->npos) {
        *out = a->pos[idx];
        return true;
    }
    for (size_t i = 0; i < a->nkw; i++)
        if (strcmp(a->kwn[i]->s, name) == 0) {
            *out = a->kwv[i];
            return true;
        }
    return false;
}

static jstr *arg_str(R *r, const jnode *at, const jargs *a, size_t idx, const char *name,
                     const char *what)
{
    jval v;
    if (!getarg(a, idx, name, &v))
        r_fail(r, at, "%s: missing argument '%s'", what, name);
    if (v.t != T_STR)
        r_fail(r, at, "%s: argument '%s' must be a string, not %s", what, name, type_name(&v));
    return v.u.s;
}

static int64_t arg_int(R *r, const jnode *at, const jargs *a, size_t idx, const char *name,
                       int64_t def, const char *what)
{
    jval v;
    if (!getarg(a, idx, name, &v) || v.t == T_NONE)
        return def;
    if (v.t != T_INT && v.t != T_BOOL)
        r_fail(r, at, "%s: argument '%s' must be an integer, not %s", what, name, type_name(&v));
    return num_i(&v);
}

static jval ev(R *r, jframe *f, const jnode *n);
static jval call_v(R *r, jframe *f, const jnode *at, const jval *fnv, const jargs *a);
static jval apply_filter(R *r, jframe *f, const jnode *at, const jstr *name, jval v,
                         const jargs *a);
static bool apply_test(R *r, jframe *f, const jnode *at, const jstr *name, const jval *v,
                       const jargs *a);

static void eval_args(R *r, jframe *f, const jnode *n, jargs *a)
{
    a->npos = n->n_kids;
    a->pos = n->n_kids ? r_alloc(r, n->n_kids * sizeof(jval)) : NULL;
    for (size_t i = 0; i < n->n_kids; i++)
        a->pos[i] = ev(r, f, n->kids[i]);
    a->nkw = n->n_kids2;
    a->kwn = n->names;
    a->kwv = n->n_kids2 ? r_alloc(r, n->n_kids2 * sizeof(jval)) : NULL;
    for (size_t i = 0; i < n->n_kids2; i++)
        a->kwv[i] = ev(r, f, n->kids2[i]);
}

/* --- arithmetic --- */

static jval do_format(R *r, const jnode *at, const jstr *s, const jargs *a);

/* markupsafe.escape: Markup stays as it is, anything else becomes escaped Markup. */
static jval html_escape(R *r, const jval *v)
{
    if (v->t == T_STR && v->safe)
        return *v;
    jstr *s = to_str(r, v);
    jbuf b = {0};
    for (size_t i = 0; i < s->n; i++) {
        switch (s->s[i]) {
        case '&': buf_puts(r, &b, "&amp;"); break;
        case '<': buf_puts(r, &b, "&lt;"); break;
        case '>': buf_puts(r, &b, "&gt;"); break;
        case '"': buf_puts(r, &b, "&#34;"); break;
        case '\'': buf_puts(r, &b, "&#39;"); break;
        default: buf_putc(r, &b, s->s[i]);
        }
    }
    jval res = v_buf(r, &b);
    res.safe = true;
    return res;
}

static jval arith(R *r, const jnode *at, int op, const jval *a, const jval *b)
{
    static const char *const opn[] = {"+", "-", "*", "/", "//", "%", "**", "~"};
    if (op == OP_CONCAT) {
        jstr *x = to_str(r, a), *y = to_str(r, b);
        jbuf o = {0};
        buf_put(r, &o, x->s, x->n);
        buf_put(r, &o, y->s, y->n);
        return v_buf(r, &o);
    }
    if (a->t == T_UNDEF)
        r_fail(r, at, "%s", a->u.s ? a->u.s->s : "undefined value");
    if (b->t == T_UNDEF)
        r_fail(r, at, "%s", b->u.s ? b->u.s->s : "undefined value");
    if (is_num(a) && is_num(b)) {
        bool flt = a->t == T_FLOAT || b->t == T_FLOAT;
        if (!flt && op != OP_DIV) {
            int64_t x = num_i(a), y = num_i(b), z = 0;
            bool ovf = false;
            switch (op) {
            case OP_ADD: ovf = __builtin_add_overflow(x, y, &z); break;
            case OP_SUB: ovf = __builtin_sub_overflow(x, y, &z); break;
            case OP_MUL: ovf = __builtin_mul_overflow(x, y, &z); break;
            case OP_FLOORDIV:
            case OP_MOD:
                if (y == 0)
                    r_fail(r, at, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) {
                    ovf = true;
                    break;
                }
                {
                    int64_t q = x / y, m = x % y;
                    if (m != 0 && ((m < 0) != (y < 0))) {
                        q--;
                        m += y;
                    }
                    z = op == OP_FLOORDIV ? q : m;
                }
                break;
            case OP_POW:
                if (y < 0)
                    return v_float(pow((double)x, (double)y));
                {
                    int64_t base = x, e = y;
                    z = 1;
                    while (e && !ovf) {
                        if (e & 1)
                            ovf = __builtin_mul_overflow(z, base, &z);
                        e >>= 1;
                        if (e && !ovf)
                            ovf = __builtin_mul_overflow(base, base, &base);
                    }
                }
                break;
            }
            if (ovf)
                r_fail(r, at, "integer overflow in '%s' (64-bit integers)", opn[op]);
            return v_int(z);
        }
        double x = num_f(a), y = num_f(b);
        switch (op) {
        case OP_ADD: return v_float(x + y);
        case OP_SUB: return v_float(x - y);
        case OP_MUL: return v_float(x * y);
        case OP_DIV:
            if (y == 0)
                r_fail(r, at, "division by zero");
            return v_float(x / y);
        case OP_FLOORDIV:
            if (y == 0)
                r_fail(r, at, "float floor division by zero");
            return v_float(floor(x / y));
        case OP_MOD: {
            if (y == 0)
                r_fail(r, at, "float modulo by zero");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0)))
                m += y;
            return v_float(m);
        }
        case OP_POW: return v_float(pow(x, y));
        }
    }
    if (op == OP_MOD && a->t == T_STR) { /* printf-style formatting */
        jargs fa = {0};
        if (b->t == T_LIST && b->u.l->tuple) {
            fa.pos = b->u.l->v;
            fa.npos = b->u.l->n;
        } else {
            fa.pos = (jval *)b;
            fa.npos = 1;
        }
        if (a->safe) { /* Markup % args escapes the arguments */
            jval *esc = r_alloc(r, (fa.npos + 1) * sizeof *esc);
            for (size_t i = 0; i < fa.npos; i++)
                esc[i] = html_escape(r, &fa.pos[i]);
            fa.pos = esc;
        }
        jval res = do_format(r, at, a->u.s, &fa);
        res.safe = a->safe;
        return res;
    }
    if (op == OP_ADD && a->t == T_STR && b->t == T_STR) {
        /* Markup + str escapes the str (markupsafe), and the result is Markup */
        jval x = *a, y = *b;
        bool safe = a->safe || b->safe;
        if (safe) {
            x = html_escape(r, a);
            y = html_escape(r, b);
        }
        jbuf o = {0};
        buf_put(r, &o, x.u.s->s, x.u.s->n);
        buf_put(r, &o, y.u.s->s, y.u.s->n);
        jval res = v_buf(r, &o);
        res.safe = safe;
        return res;
    }
    if (op == OP_ADD && a->t == T_LIST && b->t == T_LIST && !a->u.l->lazy && !b->u.l->lazy) {
        jlist *l = mklist(r, a->u.l->n + b->u.l->n);
        if (a->u.l->n)
            memcpy(l->v, a->u.l->v, a->u.l->n * sizeof(jval));
        if (b->u.l->n)
            memcpy(l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof(jval));
        l->tuple = a->u.l->tuple;
        return v_list(l);
    }
    if (op == OP_MUL && ((a->t == T_STR || a->t == T_LIST) && (b->t == T_INT || b->t == T_BOOL))) {
        int64_t k = num_i(b);
        if (k < 0)
            k = 0;
        if (a->t == T_STR) {
            if (a->u.s->n && (uint64_t)k > r->lim.max_output_nbytes / a->u.s->n)
                r_fail(r, at, "string repetition exceeds the limit of %zu bytes",
                       r->lim.max_output_nbytes);
            jbuf o = {0};
            for (int64_t i = 0; i < k; i++)
                buf_put(r, &o, a->u.s->s, a->u.s->n);
            return v_buf(r, &o);
        }
        if (a->u.l->n && (uint64_t)k > (uint64_t)r->lim.max_range / a->u.l->n)
            r_fail(r, at, "list repetition exceeds the limit of %lld items",
                   (long long)r->lim.max_range);
        jlist *l = mklist(r, a->u.l->n * (size_t)k);
        for (int64_t i = 0; i < k; i++)
            if (a->u.l->n)
                memcpy(l->v + (size_t)i * a->u.l->n, a->u.l->v, a->u.l->n * sizeof(jval));
        return v_list(l);
    }
    if (op == OP_MUL && (b->t == T_STR || b->t == T_LIST) && (a->t == T_INT || a->t == T_BOOL))
        return arith(r, at, op, b, a);
    r_fail(r, at, "unsupported operand type(s) for %s: '%s' and '%s'", opn[op], type_name(a),
           type_name(b));
}

static bool contains(R *r, const jnode *at, const jval *item, const jval *cont)
{
    switch (cont->t) {
    case T_STR:
        if (item->t != T_STR)
            r_fail(r, at, "'in <string>' requires string as left operand, not %s",
                   type_name(item));
        if (!item->u.s->n)
            return true;
        return memmem(cont->u.s->s, cont->u.s->n, item->u.s->s, item->u.s->n) != NULL;
    case T_LIST:
        for (size_t i = 0; i < cont->u.l->n; i++)
            if (v_eq(item, &cont->u.l->v[i]))
                return true;
        return false;
    case T_DICT:
    case T_NS: return dict_find(cont->u.d, item) != NULL;
    case T_UNDEF: return false;
    default: r_fail(r, at, "argument of type '%s' is not iterable", type_name(cont));
    }
}

/* --- string helpers for methods and filters --- */

/* Simple case mappings of Python's str for Latin, Greek, Cyrillic,
 * Armenian and fullwidth letters (no final-sigma or locale rules). */
static uint32_t uc_lower(uint32_t c)
{
    if (c < 0x80)
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if ((c >= 0xC0 && c <= 0xDE && c != 0xD7) || (c >= 0x391 && c <= 0x3AB && c != 0x3A2) ||
        (c >= 0x410 && c <= 0x42F))
        return c + 32;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177) || (c >= 0x460 && c <= 0x481) ||
        (c >= 0x48A && c <= 0x4BF))
        return c | 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return c & 1 ? c + 1 : c;
    if (c == 0x130)
        return 'i';
    if (c == 0x178)
        return 0xFF;
    if (c == 0x386)
        return 0x3AC;
    if (c >= 0x388 && c <= 0x38A)
        return c + 37;
    if (c == 0x38C)
        return 0x3CC;
    if (c == 0x38E || c == 0x38F)
        return c + 63;
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    if (c >= 0x531 && c <= 0x556)
        return c + 48;
    if (c >= 0xFF21 && c <= 0xFF3A)
        return c + 32;
    return c;
}

static uint32_t uc_upper(uint32_t c)
{
    if (c < 0x80)
        return c >= 'a' && c <= 'z' ? c - 32 : c;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7) || (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2) ||
        (c >= 0x430 && c <= 0x44F))
        return c - 32;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177) || (c >= 0x460 && c <= 0x481) ||
        (c >= 0x48A && c <= 0x4BF))
        return c & ~(uint32_t)1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return c & 1 ? c : c - 1;
    if (c == 0xFF)
        return 0x178;
    if (c == 0xB5)
        return 0x39C;
    if (c == 0x131)
        return 'I';
    if (c == 0x17F)
        return 'S';
    if (c == 0x3C2)
        return 0x3A3;
    if (c == 0x3AC)
        return 0x386;
    if (c >= 0x3AD && c <= 0x3AF)
        return c - 37;
    if (c == 0x3CC)
        return 0x38C;
    if (c == 0x3CD || c == 0x3CE)
        return c - 63;
    if (c >= 0x450 && c <= 0x45F)
        return c - 80;
    if (c >= 0x561 && c <= 0x586)
        return c - 48;
    if (c >= 0xFF41 && c <= 0xFF5A)
        return c - 32;
    return c;
}

static bool uc_cased(uint32_t c) { return uc_lower(c) != c || uc_upper(c) != c; }
static bool uc_is_upper(uint32_t c) { return uc_lower(c) != c; }
static bool uc_is_lower(uint32_t c) { return uc_upper(c) != c; }

static void put_cp(R *r, jbuf *b, uint32_t c, bool upper)
{
    char u[4];
    if (upper && c == 0xDF) { /* ß -> SS */
        buf_puts(r, b, "SS");
        return;
    }
    buf_put(r, b, u, utf8_put(u, c));
}

/* mode 0 lower, 1 upper, 2 swap */
static jval str_case(R *r, const jstr *s, int mode)
{
    jbuf b = {0};
    for (size_t i = 0; i < s->n;) {
        size_t st = i;
        uint32_t c = utf8_get(s->s, s->n, &i);
        bool up = mode == 1 || (mode == 2 && uc_is_lower(c));
        uint32_t m = up ? uc_upper(c) : (mode == 0 || uc_is_upper(c)) ? uc_lower(c) : c;
        if (m == c && !(up && c == 0xDF))
            buf_put(r, &b, s->s + st, i - st);
        else
            put_cp(r, &b, m, up);
    }
    return v_buf(r, &b);
}

/* Python str.title(): a cased letter after an uncased one starts a word. */
static jval py_title(R *r, const jstr *s)
{
    jbuf b = {0};
    bool prev_cased = false;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = utf8_get(s->s, s->n, &i);
        bool cased = uc_cased(c);
        if (cased)
            put_cp(r, &b, prev_cased ? uc_lower(c) : uc_upper(c), !prev_cased);
        else
            put_cp(r, &b, c, false);
        prev_cased = cased;
    }
    return v_buf(r, &b);
}

/* Jinja's |title: words split at whitespace, '-', and opening brackets;
 * the first character of each upper, the rest lower. */
static jval jinja_title(R *r, const jstr *s)
{
    jbuf b = {0};
    bool start = true;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = utf8_get(s->s, s->n, &i);
        if (py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<') {
            put_cp(r, &b, c, false);
            start = true;
            continue;
        }
        put_cp(r, &b, start ? uc_upper(c) : uc_lower(c), start);
        start = false;
    }
    return v_buf(r, &b);
}

/* Python str.capitalize(): the first character upper, the rest lower. */
static jval py_capitalize(R *r, const jstr *s)
{
    jbuf b = {0};
    bool first = true;
    for (size_t i = 0; i < s->n;) {
        uint32_t c = utf8_get(s->s, s->n, &i);
        put_cp(r, &b, first ? uc_upper(c) : uc_lower(c), first);
        first = false;
    }
    return v_buf(r, &b);
}

static jval py_split(R *r, const jnode *at, const jstr *s, const jval *sepv, int64_t maxsplit,
                     bool from_right)
{
    jvec out = {0};
    if (sepv->t == T_NONE || sepv->t == T_UNDEF) {
        /* runs of whitespace; leading/trailing ignored */
        size_t i = 0, n = s->n;
        if (!from_right) {
            while (i < n) {
                size_t j = i, k;
                while (j < n) { /* skip spaces */
                    k = j;
                    if (!py_space(utf8_get(s->s, n, &k)))
                        break;
                    j = k;
                }
                if (j >= n)
                    break;
                if (maxsplit >= 0 && (int64_t)out.n >= maxsplit) {
                    /* rest, with trailing whitespace stripped */
                    jstr tmp;
                    (void)tmp;
                    jval rest = py_strip(r, mkstr(r, s->s + j, n - j), NULL, false, true);
                    vec_push(r, &out, rest);
                    break;
                }
                size_t e = j;
                while (e < n) {
                    k = e;
                    if (py_space(utf8_get(s->s, n, &k)))
                        break;
                    e = k;
                }
                vec_push(r, &out, v_str(r, s->s + j, e - j));
                i = e;
            }
        } else {
            /* rsplit(None, maxsplit): from the right */
            jval words = py_split(r, at, s, sepv, -1, false);
            jlist *w = words.u.l;
            if (maxsplit < 0 || (size_t)maxsplit >= w->n)
                return words;
            /* keep the last maxsplit words; the head is the rest of the text */
            size_t keep = (size_t)maxsplit;
            /* find the start of word (w->n - keep) in s, from the right */
            size_t e = s->n, cnt = 0;
            while (cnt < keep) {
                while (e > 0 && is_ws(s->s[e - 1]))
                    e--;
                while (e > 0 && !is_ws(s->s[e - 1]))
                    e--;
                cnt++;
            }
            jval head = py_strip(r, mkstr(r, s->s, e), NULL, true, true);
            vec_push(r, &out, head);
            for (size_t i2 = w->n - keep; i2 < w->n; i2++)
                vec_push(r, &out, w->v[i2]);
        }
        return v_vec(r, &out);
    }
    if (sepv->t != T_STR)
        r_fail(r, at, "split: separator must be a string or None, not %s", type_name(sepv));
    const jstr *sep = sepv->u.s;
    if (!sep->n)
        r_fail(r, at, "split: empty separator");
    if (!from_right) {
        size_t i = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || (int64_t)out.n < maxsplit)
                                  ? memmem(s->s + i, s->n - i, sep->s, sep->n)
                                  : NULL;
            if (!hit) {
                vec_push(r, &out, v_str(r, s->s + i, s->n - i));
                break;
            }
            vec_push(r, &out, v_str(r, s->s + i, (size_t)(hit - (s->s + i))));
            i = (size_t)(hit - s->s) + sep->n;
        }
        return v_vec(r, &out);
    }
    /* rsplit with a separator */
    jvec rev = {0};
    size_t e = s->n;
    for (;;) {
        const char *hit = NULL;
        if ((maxsplit < 0 || (int64_t)rev.n < maxsplit) && e >= sep->n) {
            for (size_t k = e - sep->n + 1; k-- > 0;)
                if (memcmp(s->s + k, sep->s, sep->n) == 0) {
                    hit = s->s + k;
                    break;
                }
        }
        if (!hit) {
            vec_push(r, &rev, v_str(r, s->s, e));
            break;
        }
        size_t st = (size_t)(hit - s->s) + sep->n;
        vec_push(r, &rev, v_str(r, s->s + st, e - st));
        e = (size_t)(hit - s->s);
    }
    for (size_t i = rev.n; i-- > 0;)
        vec_push(r, &out, rev.v[i]);
    return v_vec(r, &out);
}

static jval py_replace(R *r, const jstr *s, const jstr *old, const jstr *nw, int64_t count)
{
    jbuf b = {0};
    int64_t done = 0;
    if (!old->n) {
        for (size_t i = 0; i <= s->n;) {
            if (count < 0 || done < count) {
                buf_put(r, &b, nw->s, nw->n);
                done++;
            }
            if (i == s->n)
                break;
            size_t st = i;
            utf8_get(s->s, s->n, &i);
            buf_put(r, &b, s->s + st, i - st);
        }
        return v_buf(r, &b);
    }
    size_t i = 0;
    for (;;) {
        const char *hit = (count < 0 || done < count) ? memmem(s->s + i, s->n - i, old->s, old->n)
                                                      : NULL;
        if (!hit) {
            buf_put(r, &b, s->s + i, s->n - i);
            break;
        }
        buf_put(r, &b, s->s + i, (size_t)(hit - (s->s + i)));
        buf_put(r, &b, nw->s, nw->n);
        i = (size_t)(hit - s->s) + old->n;
        done++;
    }
    return v_buf(r, &b);
}

static bool affix_match(const jstr *s, const jval *p, bool end)
{
    if (p->t == T_LIST) {
        for (size_t i = 0; i < p->u.l->n; i++)
            if (affix_match(s, &p->u.l->v[i], end))
                return true;
        return false;
    }
    if (p->t != T_STR || p->u.s->n > s->n)
        return false;
    return memcmp(end ? s->s + s->n - p->u.s->n : s->s, p->u.s->s, p->u.s->n) == 0;
}

static jval pad(R *r, const jstr *s, int64_t width, const jstr *fill, int where)
{
    int64_t len = (int64_t)cp_count(s->s, s->n);
    if (width > (int64_t)r->lim.max_output_nbytes)
        width = (int64_t)r->lim.max_output_nbytes;
    if (width <= len)
        return v_str(r, s->s, s->n);
    int64_t total = width - len, left;
    if (where == 0)
        left = total / 2 + (total & width & 1); /* Python's center */
    else if (where == 1)
        left = 0; /* ljust */
    else
        left = total; /* rjust */
    jbuf b = {0};
    for (int64_t i = 0; i < left; i++)
        buf_put(r, &b, fill->s, fill->n);
    buf_put(r, &b, s->s, s->n);
    for (int64_t i = left; i < total; i++)
        buf_put(r, &b, fill->s, fill->n);
    return v_buf(r, &b);
}

/* Python str.format with {} {0} {name} fields (no format specs). */
static jval py_format(R *r, const jnode *at, const jstr *s, const jargs *a)
{
    jbuf b = {0};
    size_t auto_i = 0;
    for (size_t i = 0; i < s->n; i++) {
        char c = s->s[i];
        if (c == '{' && i + 1 < s->n && s->s[i + 1] == '{') {
            buf_putc(r, &b, '{');
            i++;
        } else if (c == '}' && i + 1 < s->n && s->s[i + 1] == '}') {
            buf_putc(r, &b, '}');
            i++;
        } else if (c == '{') {
            size_t e = i + 1;
            while (e < s->n && s->s[e] != '}')
                e++;
            if (e >= s->n)
                r_fail(r, at, "format: single '{' encountered in format string");
            jval v;
            size_t fl = e - i - 1;
            const char *fs = s->s + i + 1;
            if (memchr(fs, ':', fl) || memchr(fs, '!', fl))
                r_fail(r, at, "format: format specifications are not supported");
            if (!fl) {
                if (auto_i >= a->npos)
                    r_fail(r, at, "format: replacement index %zu out of range", auto_i);
                v = a->pos[auto_i++];
            } else if (isdigit((unsigned char)fs[0])) {
                size_t k = (size_t)atoi(fs);
                if (k >= a->npos)
                    r_fail(r, at, "format: replacement index %zu out of range", k);
                v = a->pos[k];
            } else {
                char nm[64];
                snprintf(nm, sizeof nm, "%.*s", (int)(fl < 63 ? fl : 63), fs);
                if (!getarg(a, (size_t)-1, nm, &v))
                    r_fail(r, at, "format: missing key '%s'", nm);
            }
            jstr *t = to_str(r, &v);
            buf_put(r, &b, t->s, t->n);
            i = e;
        } else if (c == '}') {
            r_fail(r, at, "format: single '}' encountered in format string");
        } else {
            buf_putc(r, &b, c);
        }
    }
    return v_buf(r, &b);
}

static int64_t py_find(const jstr *s, const jstr *sub, bool rev)
{
    if (sub->n > s->n)
        return -1;
    if (!rev) {
        const char *h = sub->n ? memmem(s->s, s->n, sub->s, sub->n) : s->s;
        return h ? (int64_t)cp_count(s->s, (size_t)(h - s->s)) : -1;
    }
    for (size_t k = s->n - sub->n + 1; k-- > 0;)
        if (memcmp(s->s + k, sub->s, sub->n) == 0)
            return (int64_t)cp_count(s->s, k);
    return -1;
}

static jval call_method(R *r, const jnode *at, const jfunc *fn, const jargs *a)
{
    const jval *self = &fn->self;
    const jstr *m = fn->name;
#define IS(lit) (m->n == strlen(lit) && memcmp(m->s, lit, m->n) == 0)
    if (self->t == T_STR) {
        const jstr *s = self->u.s;
        jval x;
        if (IS("strip") || IS("lstrip") || IS("rstrip")) {
            const jstr *chars = NULL;
            if (getarg(a, 0, "chars", &x) && x.t != T_NONE) {
                if (x.t != T_STR)
                    r_fail(r, at, "%s arg must be None or str", m->s);
                chars = x.u.s;
            }
            return py_strip(r, s, chars, !IS("rstrip"), !IS("lstrip"));
        }
        if (IS("split") || IS("rsplit")) {
            jval sep = v_none();
            getarg(a, 0, "sep", &sep);
            return py_split(r, at, s, &sep, arg_int(r, at, a, 1, "maxsplit", -1, m->s),
                            IS("rsplit"));
        }
        if (IS("splitlines")) {
            jvec out = {0};
            size_t i = 0;
            while (i < s->n) {
                size_t e = i;
                while (e < s->n && s->s[e] != '\n' && s->s[e] != '\r' && s->s[e] != '\v' &&
                       s->s[e] != '\f' && !(s->s[e] >= 0x1c && s->s[e] <= 0x1e))
                    e++;
                vec_push(r, &out, v_str(r, s->s + i, e - i));
                if (e < s->n && s->s[e] == '\r' && e + 1 < s->n && s->s[e + 1] == '\n')
                    e++;
                i = e + 1;
            }
            return v_vec(r, &out);
        }
        if (IS("startswith") || IS("endswith")) {
            if (!getarg(a, 0, "prefix", &x))
                r_fail(r, at, "%s: missing argument", m->s);
            if (x.t != T_STR && x.t != T_LIST)
                r_fail(r, at, "%s first arg must be str or a tuple of str, not %s", m->s,
                       type_name(&x));
            return v_bool(affix_match(s, &x, IS("endswith")));
        }
        if (IS("replace")) {
            jstr *old = arg_str(r, at, a, 0, "old", "replace");
            jstr *nw = arg_str(r, at, a, 1, "new", "replace");
            return py_replace(r, s, old, nw, arg_int(r, at, a, 2, "count", -1, "replace"));
        }
        if (IS("upper"))
            return str_case(r, s, 1);
        if (IS("lower") || IS("casefold"))
            return str_case(r, s, 0);
        if (IS("swapcase"))
            return str_case(r, s, 2);
        if (IS("title"))
            return py_title(r, s);
        if (IS("capitalize"))
            return py_capitalize(r, s);
        if (IS("find") || IS("rfind") || IS("index")) {
            int64_t k = py_find(s, arg_str(r, at, a, 0, "sub", m->s), IS("rfind"));
            if (k < 0 && IS("index"))
                r_fail(r, at, "substring not found");
            return v_int(k);
        }
        if (IS("count")) {
            jstr *sub = arg_str(r, at, a, 0, "sub", "count");
            if (!sub->n)
                return v_int((int64_t)cp_count(s->s, s->n) + 1);
            int64_t c = 0;
            for (size_t i = 0; i + sub->n <= s->n;) {
                const char *h = memmem(s->s + i, s->n - i, sub->s, sub->n);
                if (!h)
                    break;
                c++;
                i = (size_t)(h - s->s) + sub->n;
            }
            return v_int(c);
        }
        if (IS("join")) {
            if (!getarg(a, 0, "iterable", &x))
                r_fail(r, at, "join: missing argument");
            jlist *l = iter_list(r, at, &x);
            jbuf b = {0};
            for (size_t i = 0; i < l->n; i++) {
                if (l->v[i].t != T_STR)
                    r_fail(r, at, "sequence item %zu: expected str instance, %s found", i,
                           type_name(&l->v[i]));
                if (i)
                    buf_put(r, &b, s->s, s->n);
                buf_put(r, &b, l->v[i].u.s->s, l->v[i].u.s->n);
            }
            return v_buf(r, &b);
        }
        if (IS("isdigit") || IS("isnumeric") || IS("isdecimal") || IS("isalpha") ||
            IS("isalnum") || IS("isspace") || IS("isupper") || IS("islower")) {
            bool any = false, ok = s->n > 0, cased = false;
            for (size_t i = 0; i < s->n; i++) {
                unsigned char c = (unsigned char)s->s[i];
                any = true;
                if (IS("isdigit") || IS("isnumeric") || IS("isdecimal"))
                    ok = ok && isdigit(c);
                else if (IS("isalpha"))
                    ok = ok && (isalpha(c) || c >= 0x80);
                else if (IS("isalnum"))
                    ok = ok && (isalnum(c) || c >= 0x80);
                else if (IS("isspace"))
                    ok = ok && is_ws((char)c);
                else if (IS("isupper")) {
                    ok = ok && !islower(c);
                    cased = cased || isupper(c);
                } else {
                    ok = ok && !isupper(c);
                    cased = cased || islower(c);
                }
            }
            if (IS("isupper") || IS("islower"))
                ok = ok && cased;
            return v_bool(any && ok);
        }
        if (IS("zfill")) {
            int64_t w = arg_int(r, at, a, 0, "width", 0, "zfill");
            int64_t len = (int64_t)cp_count(s->s, s->n);
            if (w <= len)
                return *self;
            if (w > (int64_t)r->lim.max_output_nbytes)
                r_fail(r, at, "zfill: width too large");
            jbuf b = {0};
            size_t st = 0;
            if (s->n && (s->s[0] == '-' || s->s[0] == '+')) {
                buf_putc(r, &b, s->s[0]);
                st = 1;
            }
            for (int64_t i = 0; i < w - len; i++)
                buf_putc(r, &b, '0');
            buf_put(r, &b, s->s + st, s->n - st);
            return v_buf(r, &b);
        }
        if (IS("center") || IS("ljust") || IS("rjust")) {
            int64_t w = arg_int(r, at, a, 0, "width", 0, m->s);
            jstr sp = {0};
            const jstr *fill = &sp;
            jval fv;
            jstr *one = mkstr(r, " ", 1);
            fill = one;
            if (getarg(a, 1, "fillchar", &fv) && fv.t == T_STR)
                fill = fv.u.s;
            return pad(r, s, w, fill, IS("center") ? 0 : IS("ljust") ? 1 : 2);
        }
        if (IS("format"))
            return py_format(r, at, s, a);
        if (IS("removeprefix") || IS("removesuffix")) {
            jstr *p = arg_str(r, at, a, 0, "prefix", m->s);
            jval pv = {.t = T_STR};
            pv.u.s = p;
            bool end = IS("removesuffix");
            if (affix_match(s, &pv, end))
                return end ? v_str(r, s->s, s->n - p->n) : v_str(r, s->s + p->n, s->n - p->n);
            return *self;
        }
    } else if (self->t == T_DICT) {
        jdict *d = self->u.d;
        if (IS("items") || IS("keys") || IS("values")) {
            jlist *l = mklist(r, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (IS("items")) {
                    jlist *t = mklist(r, 2);
                    t->tuple = true;
                    t->v[0] = d->k[i];
                    t->v[1] = d->v[i];
                    l->v[i] = v_list(t);
                } else {
                    l->v[i] = IS("keys") ? d->k[i] : d->v[i];
                }
            }
            return v_list(l);
        }
        if (IS("get")) {
            jval k, def = v_none();
            if (!getarg(a, 0, "key", &k))
                r_fail(r, at, "get: missing argument 'key'");
            getarg(a, 1, "default", &def);
            jval *v = dict_find(d, &k);
            return v ? *v : def;
        }
        if (IS("copy"))
            return *self;
    } else if (self->t == T_LIST) {
        jlist *l = self->u.l;
        jval x;
        if (IS("copy"))
            return *self;
        if (!getarg(a, 0, "value", &x))
            r_fail(r, at, "%s: missing argument", m->s);
        if (IS("index")) {
            for (size_t i = 0; i < l->n; i++)
                if (v_eq(&l->v[i], &x))
                    return v_int((int64_t)i);
            r_fail(r, at, "value is not in list");
        }
        if (IS("count")) {
            int64_t c = 0;
            for (size_t i = 0; i < l->n; i++)
                c += v_eq(&l->v[i], &x);
            return v_int(c);
        }
    }
#undef IS
    r_fail(r, at, "'%s' object has no method '%s'", type_name(self), m->s);
}

/* --- filters and tests --- */

static bool name_is(const jstr *s, const char *lit)
{
    return s->n == strlen(lit) && memcmp(s->s, lit, s->n) == 0;
}

/* Jinja's attribute getter: "a.b.0" walks items/attributes. */
static jval get_path(R *r, const jnode *at, jval v, const jstr *path)
{
    size_t i = 0;
    while (i <= path->n) {
        size_t e = i;
        while (e < path->n && path->s[e] != '.')
            e++;
        bool digits = e > i;
        for (size_t k = i; k < e; k++)
            if (!isdigit((unsigned char)path->s[k]))
                digits = false;
        jval key;
        if (digits)
            key = v_int(strtoll(path->s + i, NULL, 10));
        else
            key = v_str(r, path->s + i, e - i);
        v = getitem_v(r, at, &v, &key);
        if (e >= path->n)
            break;
        i = e + 1;
    }
    return v;
}

static int sort_cmp(R *r, const jnode *at, const jval *a, const jval *b, bool cs)
{
    if (!cs && a->t == T_STR && b->t == T_STR) {
        jval x = str_case(r, a->u.s, 0), y = str_case(r, b->u.s, 0);
        return v_cmp(r, at, &x, &y, "<");
    }
    return v_cmp(r, at, a, b, "<");
}

/* Stable merge sort of vals by keys. */
static void sort_vals(R *r, const jnode *at, jval *vals, jval *keys, size_t n, bool cs,
                      bool reverse)
{
    if (n < 2)
        return;
    size_t *idx = r_alloc(r, n * sizeof *idx), *tmp = r_alloc(r, n * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int c = sort_cmp(r, at, &keys[idx[j]], &keys[idx[i]], cs);
                if (reverse)
                    c = -c;
                if (c < 0)
                    tmp[k++] = idx[j++];
                else
                    tmp[k++] = idx[i++];
            }
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
    jval *cp = r_alloc(r, n * sizeof *cp);
    for (size_t i = 0; i < n; i++)
        cp[i] = vals[idx[i]];
    memcpy(vals, cp, n * sizeof *cp);
}

static jval do_indent(R *r, const jnode *at, const jstr *s, const jargs *a)
{
    jval w = v_int(4), fv = v_bool(false), bv = v_bool(false);
    getarg(a, 0, "width", &w);
    getarg(a, 1, "first", &fv);
    getarg(a, 2, "blank", &bv);
    jbuf ind = {0};
    if (w.t == T_STR)
        buf_put(r, &ind, w.u.s->s, w.u.s->n);
    else if (w.t == T_INT) {
        if (w.u.i > 1000)
            r_fail(r, at, "indent: width %lld too large", (long long)w.u.i);
        for (int64_t i = 0; i < w.u.i; i++)
            buf_putc(r, &ind, ' ');
    } else
        r_fail(r, at, "indent: width must be an integer or a string");
    /* s + "\n", split into lines (Python splitlines on \n, \r\n, \r) */
    jvec lines = {0};
    size_t i = 0;
    jbuf src = {0};
    buf_put(r, &src, s->s, s->n);
    buf_putc(r, &src, '\n');
    while (i < src.n) {
        size_t e = i;
        while (e < src.n && src.p[e] != '\n' && src.p[e] != '\r')
            e++;
        vec_push(r, &lines, v_str(r, src.p + i, e - i));
        if (e < src.n && src.p[e] == '\r' && e + 1 < src.n && src.p[e + 1] == '\n')
            e++;
        i = e + 1;
    }
    jbuf o = {0};
    if (truthy(&fv) && ind.n)
        buf_put(r, &o, ind.p, ind.n);
    for (size_t k = 0; k < lines.n; k++) {
        const jstr *ln = lines.v[k].u.s;
        if (k) {
            buf_putc(r, &o, '\n');
            if (truthy(&bv) || ln->n)
                if (ind.n)
                    buf_put(r, &o, ind.p, ind.n);
        }
        buf_put(r, &o, ln->s, ln->n);
    }
    return v_buf(r, &o);
}

static jval do_tojson(R *r, const jnode *at, const jval *v, const jargs *a)
{
    json_opts o = {.ascii = false, .sort = false, .indent = NULL, .item_sep = ", ",
                   .key_sep = ": "};
    jval x;
    if (getarg(a, 0, "ensure_ascii", &x))
        o.ascii = truthy(&x);
    char indbuf[64];
    if (getarg(a, 1, "indent", &x) && x.t != T_NONE) {
        if (x.t == T_INT || x.t == T_BOOL) {
            int64_t k = num_i(&x);
            if (k < 0)
                k = 0;
            if (k > 32)
                r_fail(r, at, "tojson: indent %lld too large", (long long)k);
            memset(indbuf, ' ', (size_t)k);
            indbuf[k] = 0;
            o.indent = indbuf;
        } else if (x.t == T_STR) {
            o.indent = x.u.s->s;
        } else {
            r_fail(r, at, "tojson: indent must be an integer or a string");
        }
        o.item_sep = ",";
    }
    if (getarg(a, 2, "separators", &x) && x.t != T_NONE) {
        if (x.t != T_LIST || x.u.l->n != 2 || x.u.l->v[0].t != T_STR || x.u.l->v[1].t != T_STR)
            r_fail(r, at, "tojson: separators must be a pair of strings");
        o.item_sep = x.u.l->v[0].u.s->s;
        o.key_sep = x.u.l->v[1].u.s->s;
    }
    if (getarg(a, 3, "sort_keys", &x))
        o.sort = truthy(&x);
    jbuf b = {0};
    put_json(r, at, &b, v, &o, 0);
    return v_buf(r, &b);
}

/* Python's printf-style formatting, `"%s: %05.1f" % (a, b)` and `|format`:
 * flags, width, precision and the conversions s r d i u f F e E g G x X o c %. */
static jval do_format(R *r, const jnode *at, const jstr *s, const jargs *a)
{
    jbuf b = {0};
    size_t ai = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->s[i] != '%') {
            buf_putc(r, &b, s->s[i]);
            continue;
        }
        char spec[32];
        size_t k = 0;
        spec[k++] = '%';
        i++;
        while (i < s->n && strchr("-+ #0", s->s[i]) && k < 8)
            spec[k++] = s->s[i++];
        while (i < s->n && isdigit((unsigned char)s->s[i]) && k < 16)
            spec[k++] = s->s[i++];
        if (i < s->n && s->s[i] == '.') {
            spec[k++] = s->s[i++];
            while (i < s->n && isdigit((unsigned char)s->s[i]) && k < 24)
                spec[k++] = s->s[i++];
        }
        if (i >= s->n)
            r_fail(r, at, "format: incomplete format");
        char c = s->s[i];
        if (c == '%') {
            buf_putc(r, &b, '%');
            continue;
        }
        if (ai >= a->npos)
            r_fail(r, at, "not enough arguments for format string");
        jval v = a->pos[ai++];
        char out[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        if (c == 's' || c == 'r') {
            jbuf t = {0};
            put_value(r, &t, &v, c == 'r');
            spec[k++] = 's';
            spec[k] = 0;
            if (k == 2) { /* plain %s: no length limit */
                buf_put(r, &b, t.p ? t.p : "", t.n);
                continue;
            }
            snprintf(out, sizeof out, spec, t.p ? t.p : "");
        } else if (strchr("diuxXoc", c)) {
            if (!is_num(&v))
                r_fail(r, at, "%%%c format: a number is required, not %s", c, type_name(&v));
            long long iv = v.t == T_FLOAT ? (long long)v.u.f : (long long)num_i(&v);
            spec[k++] = 'l';
            spec[k++] = 'l';
            spec[k++] = c == 'i' || c == 'u' ? 'd' : c;
            spec[k] = 0;
            if (c == 'c')
                snprintf(out, sizeof out, "%c", (int)iv);
            else
                snprintf(out, sizeof out, spec, iv);
        } else if (strchr("fFeEgG", c)) {
            if (!is_num(&v))
                r_fail(r, at, "%%%c format: a number is required, not %s", c, type_name(&v));
            spec[k++] = c;
            spec[k] = 0;
            snprintf(out, sizeof out, spec, num_f(&v));
        } else {
            r_fail(r, at, "unsupported format character '%c'", c);
        }
#pragma GCC diagnostic pop
        buf_puts(r, &b, out);
    }
    if (ai < a->npos)
        r_fail(r, at, "not all arguments converted during string formatting");
    return v_buf(r, &b);
}

static jargs args_shift(const jargs *a, size_t k)
{
    jargs s = *a;
    if (s.npos >= k) {
        s.pos += k;
        s.npos -= k;
    } else {
        s.npos = 0;
    }
    return s;
}

static jval apply_filter_impl(R *r, jframe *f, const jnode *at, const jstr *name, jval v,
                              const jargs *a)
{
    jval x;
#define IS(lit) name_is(name, lit)
    if (IS("default") || IS("d")) {
        jval def = v_str(r, "", 0), bl = v_bool(false);
        getarg(a, 0, "default_value", &def);
        getarg(a, 1, "boolean", &bl);
        if (v.t == T_UNDEF || (truthy(&bl) && !truthy(&v)))
            return def;
        return v;
    }
    if (IS("safe")) {
        jval m = v.t == T_STR ? v : v_str(r, to_str(r, &v)->s, to_str(r, &v)->n);
        m.safe = true;
        return m;
    }
    /* Python generators (Jinja's map/select/... yield): mark the lists they give */
    bool gen_filter = IS("map") || IS("select") || IS("reject") || IS("selectattr") ||
                      IS("rejectattr");
    if (gen_filter && !truthy(&v)) { /* `if value:` guards their loops in Jinja */
        jlist *l = mklist(r, 0);
        l->lazy = true;
        return v_list(l);
    }
    if (IS("tojson"))
        return do_tojson(r, at, &v, a);
    if (IS("string"))
        return v.t == T_STR ? v : v_str(r, to_str(r, &v)->s, to_str(r, &v)->n);
    if (IS("length") || IS("count")) {
        switch (v.t) {
        case T_UNDEF: return v_int(0);
        case T_STR: return v_int((int64_t)cp_count(v.u.s->s, v.u.s->n));
        case T_LIST:
            if (v.u.l->lazy)
                r_fail(r, at, "object of type 'generator' has no len()");
            return v_int((int64_t)v.u.l->n);
        case T_DICT:
        case T_NS: return v_int((int64_t)v.u.d->n);
        default: r_fail(r, at, "object of type '%s' has no len()", type_name(&v));
        }
    }
    if (IS("list")) {
        jlist *l = iter_list(r, at, &v), *c = mklist(r, l->n);
        if (l->n)
            memcpy(c->v, l->v, l->n * sizeof(jval));
        return v_list(c);
    }
    if (IS("items")) {
        if (v.t == T_UNDEF)
            return v_list(mklist(r, 0));
        if (v.t != T_DICT)
            r_fail(r, at, "items: can only get item pairs from a mapping, not %s", type_name(&v));
        jfunc fn = {.kind = F_METHOD, .self = v, .name = mkstr(r, "items", 5)};
        jargs none = {0};
        return call_method(r, at, &fn, &none);
    }
    if (IS("first") || IS("last")) {
        if ((v.t == T_DICT || (v.t == T_LIST && v.u.l->lazy)) && IS("last"))
            r_fail(r, at, "last: '%s' object is not reversible", type_name(&v));
        jlist *l = iter_list(r, at, &v);
        if (!l->n)
            return v_undef(r, "No %s item, sequence was empty.", IS("first") ? "first" : "last");
        return l->v[IS("first") ? 0 : l->n - 1];
    }
    if (IS("reverse")) {
        if (v.t == T_STR) {
            jlist *l = iter_list(r, at, &v);
            jbuf b = {0};
            for (size_t i = l->n; i-- > 0;)
                buf_put(r, &b, l->v[i].u.s->s, l->v[i].u.s->n);
            return v_buf(r, &b);
        }
        jlist *l = iter_list(r, at, &v), *c = mklist(r, l->n);
        for (size_t i = 0; i < l->n; i++)
            c->v[i] = l->v[l->n - 1 - i];
        return v_list(c);
    }
    if (IS("join")) {
        jval sep = v_str(r, "", 0), attr = v_none();
        getarg(a, 0, "d", &sep);
        getarg(a, 1, "attribute", &attr);
        jstr *ss = to_str(r, &sep);
        jlist *l = iter_list(r, at, &v);
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                buf_put(r, &b, ss->s, ss->n);
            jval it = l->v[i];
            if (attr.t == T_STR)
                it = get_path(r, at, it, attr.u.s);
            jstr *t = to_str(r, &it);
            buf_put(r, &b, t->s, t->n);
        }
        return v_buf(r, &b);
    }
    if (IS("map")) {
        jlist *l = iter_list(r, at, &v);
        jvec out = {0};
        jval attr, def;
        bool has_def = getarg(a, (size_t)-1, "default", &def);
        if (getarg(a, (size_t)-1, "attribute", &attr)) {
            if (attr.t != T_STR)
                r_fail(r, at, "map: attribute must be a string");
            for (size_t i = 0; i < l->n; i++) {
                jval it = get_path(r, at, l->v[i], attr.u.s);
                if (it.t == T_UNDEF && has_def)
                    it = def;
                vec_push(r, &out, it);
            }
            return v_vec(r, &out);
        }
        if (!a->npos || a->pos[0].t != T_STR)
            r_fail(r, at, "map: expected a filter name or attribute=");
        jstr *fname = a->pos[0].u.s;
        if (!in_list(FILTERS, fname))
            r_fail(r, at, "map: no filter named '%s'", fname->s);
        jargs rest = args_shift(a, 1);
        for (size_t i = 0; i < l->n; i++)
            vec_push(r, &out, apply_filter(r, f, at, fname, l->v[i], &rest));
        return v_vec(r, &out);
    }
    if (IS("select") || IS("reject") || IS("selectattr") || IS("rejectattr")) {
        bool attr_mode = IS("selectattr") || IS("rejectattr");
        bool want = IS("select") || IS("selectattr");
        jlist *l = iter_list(r, at, &v);
        size_t k = 0;
        jstr *attr = NULL;
        if (attr_mode) {
            if (!a->npos || a->pos[0].t != T_STR)
                r_fail(r, at, "%s: expected an attribute name", name->s);
            attr = a->pos[0].u.s;
            k = 1;
        }
        jstr *tname = NULL;
        if (a->npos > k) {
            if (a->pos[k].t != T_STR)
                r_fail(r, at, "%s: expected a test name", name->s);
            tname = a->pos[k].u.s;
            if (!in_list(TESTS, tname))
                r_fail(r, at, "%s: no test named '%s'", name->s, tname->s);
            k++;
        }
        jargs rest = args_shift(a, k);
        jvec out = {0};
        for (size_t i = 0; i < l->n; i++) {
            step(r, at);
            jval it = attr ? get_path(r, at, l->v[i], attr) : l->v[i];
            bool ok = tname ? apply_test(r, f, at, tname, &it, &rest) : truthy(&it);
            if (ok == want)
                vec_push(r, &out, l->v[i]);
        }
        return v_vec(r, &out);
    }
    if (IS("unique")) {
        jval cs = v_bool(false), attr = v_none();
        getarg(a, 0, "case_sensitive", &cs);
        getarg(a, 1, "attribute", &attr);
        jlist *l = iter_list(r, at, &v);
        jvec out = {0}, seen = {0};
        for (size_t i = 0; i < l->n; i++) {
            jval key = attr.t == T_STR ? get_path(r, at, l->v[i], attr.u.s) : l->v[i];
            if (!truthy(&cs) && key.t == T_STR)
                key = str_case(r, key.u.s, 0);
            bool dup = false;
            for (size_t j = 0; j < seen.n && !dup; j++)
                dup = v_eq(&seen.v[j], &key);
            if (!dup) {
                vec_push(r, &seen, key);
                vec_push(r, &out, l->v[i]);
            }
        }
        return v_vec(r, &out);
    }
    if (IS("sort") || IS("dictsort")) {
        jval rev = v_bool(false), cs = v_bool(false), attr = v_none(), by = v_none();
        jlist *l;
        jval *keys;
        if (IS("sort")) {
            getarg(a, 0, "reverse", &rev);
            getarg(a, 1, "case_sensitive", &cs);
            getarg(a, 2, "attribute", &attr);
            jlist *src = iter_list(r, at, &v);
            l = mklist(r, src->n);
            if (src->n)
                memcpy(l->v, src->v, src->n * sizeof(jval));
            keys = r_alloc(r, (l->n + 1) * sizeof *keys);
            for (size_t i = 0; i < l->n; i++)
                keys[i] = attr.t == T_STR ? get_path(r, at, l->v[i], attr.u.s) : l->v[i];
        } else {
            getarg(a, 0, "case_sensitive", &cs);
            getarg(a, 1, "by", &by);
            getarg(a, 2, "reverse", &rev);
            if (v.t != T_DICT)
                r_fail(r, at, "dictsort: expected a mapping, not %s", type_name(&v));
            jfunc fn = {.kind = F_METHOD, .self = v, .name = mkstr(r, "items", 5)};
            jargs none = {0};
            l = call_method(r, at, &fn, &none).u.l;
            bool by_value = by.t == T_STR && name_is(by.u.s, "value");
            keys = r_alloc(r, (l->n + 1) * sizeof *keys);
            for (size_t i = 0; i < l->n; i++)
                keys[i] = l->v[i].u.l->v[by_value ? 1 : 0];
        }
        sort_vals(r, at, l->v, keys, l->n, truthy(&cs), truthy(&rev));
        return v_list(l);
    }
    if (IS("sum")) {
        jval attr = v_none(), acc = v_int(0);
        getarg(a, 0, "attribute", &attr);
        getarg(a, 1, "start", &acc);
        jlist *l = iter_list(r, at, &v);
        for (size_t i = 0; i < l->n; i++) {
            jval it = attr.t == T_STR ? get_path(r, at, l->v[i], attr.u.s) : l->v[i];
            acc = arith(r, at, OP_ADD, &acc, &it);
        }
        return acc;
    }
    if (IS("min") || IS("max")) {
        jval cs = v_bool(false), attr = v_none();
        getarg(a, 0, "case_sensitive", &cs);
        getarg(a, 1, "attribute", &attr);
        jlist *l = iter_list(r, at, &v);
        if (!l->n)
            return v_undef(r, "No aggregated item, sequence was empty.");
        size_t best = 0;
        for (size_t i = 1; i < l->n; i++) {
            jval x1 = attr.t == T_STR ? get_path(r, at, l->v[i], attr.u.s) : l->v[i];
            jval x0 = attr.t == T_STR ? get_path(r, at, l->v[best], attr.u.s) : l->v[best];
            int c = sort_cmp(r, at, &x1, &x0, truthy(&cs));
            if (IS("min") ? c < 0 : c > 0)
                best = i;
        }
        return l->v[best];
    }
    if (IS("batch")) {
        int64_t cnt = arg_int(r, at, a, 0, "linecount", 1, "batch");
        if (cnt <= 0)
            r_fail(r, at, "batch: linecount must be positive");
        jval fill;
        bool has_fill = getarg(a, 1, "fill_with", &fill) && fill.t != T_NONE;
        jlist *l = iter_list(r, at, &v);
        jvec out = {0}, row = {0};
        for (size_t i = 0; i < l->n; i++) {
            vec_push(r, &row, l->v[i]);
            if ((int64_t)row.n == cnt) {
                vec_push(r, &out, v_vec(r, &row));
                memset(&row, 0, sizeof row);
            }
        }
        if (row.n) {
            while (has_fill && (int64_t)row.n < cnt)
                vec_push(r, &row, fill);
            vec_push(r, &out, v_vec(r, &row));
        }
        return v_vec(r, &out);
    }
    if (IS("attr")) {
        jstr *nm = arg_str(r, at, a, 0, "name", "attr");
        if (v.t == T_DICT && !in_list(DICT_METHODS, nm))
            return v_undef(r, "'dict object' has no attribute '%s'", nm->s);
        return getattr_v(r, at, &v, nm);
    }
    if (IS("abs")) {
        if (v.t == T_INT) {
            if (v.u.i == INT64_MIN)
                r_fail(r, at, "integer overflow in abs");
            return v_int(v.u.i < 0 ? -v.u.i : v.u.i);
        }
        if (v.t == T_BOOL)
            return v_int(v.u.b);
        if (v.t == T_FLOAT)
            return v_float(fabs(v.u.f));
        r_fail(r, at, "bad operand type for abs(): '%s'", type_name(&v));
    }
    if (IS("int")) {
        jval def = v_int(0);
        getarg(a, 0, "default", &def);
        int64_t base = arg_int(r, at, a, 1, "base", 10, "int");
        if (v.t == T_INT)
            return v;
        if (v.t == T_BOOL)
            return v_int(v.u.b);
        if (v.t == T_FLOAT)
            return (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) ? v_int((int64_t)v.u.f) : def;
        if (v.t == T_STR) {
            jval t = py_strip(r, v.u.s, NULL, true, true);
            char *e;
            errno = 0;
            long long k = strtoll(t.u.s->s, &e, (int)base);
            if (t.u.s->n && !*e && !errno)
                return v_int(k);
            double d = strtod(t.u.s->s, &e);
            if (t.u.s->n && !*e && isfinite(d) && fabs(d) < 9.2e18)
                return v_int((int64_t)d);
        }
        return def;
    }
    if (IS("float")) {
        jval def = v_float(0);
        getarg(a, 0, "default", &def);
        if (is_num(&v))
            return v_float(num_f(&v));
        if (v.t == T_STR) {
            jval t = py_strip(r, v.u.s, NULL, true, true);
            char *e;
            double d = strtod(t.u.s->s, &e);
            if (t.u.s->n && !*e)
                return v_float(d);
        }
        return def;
    }
    if (IS("round")) {
        int64_t prec = arg_int(r, at, a, 0, "precision", 0, "round");
        jval method = v_none();
        getarg(a, 1, "method", &method);
        if (!is_num(&v))
            r_fail(r, at, "round: expected a number, not %s", type_name(&v));
        if (prec < 0 || prec > 30)
            r_fail(r, at, "round: precision %lld out of range", (long long)prec);
        double xf = num_f(&v), p10 = pow(10, (double)prec);
        if (method.t == T_STR && name_is(method.u.s, "ceil"))
            return v_float(ceil(xf * p10) / p10);
        if (method.t == T_STR && name_is(method.u.s, "floor"))
            return v_float(floor(xf * p10) / p10);
        char t[400];
        snprintf(t, sizeof t, "%.*f", (int)prec, xf);
        return v_float(strtod(t, NULL));
    }
    if (IS("format")) {
        if (v.t != T_STR)
            r_fail(r, at, "format: expected a string, not %s", type_name(&v));
        return do_format(r, at, v.u.s, a);
    }
    if (IS("pprint"))
        return v_str(r, to_str(r, &v)->s, to_str(r, &v)->n);
    /* the rest take the value as a string */
    jstr *s = to_str(r, &v);
    if (IS("trim")) {
        const jstr *chars = NULL;
        if (getarg(a, 0, "chars", &x) && x.t == T_STR)
            chars = x.u.s;
        return py_strip(r, s, chars, true, true);
    }
    if (IS("upper"))
        return str_case(r, s, 1);
    if (IS("lower"))
        return str_case(r, s, 0);
    if (IS("title"))
        return jinja_title(r, s);
    if (IS("capitalize"))
        return py_capitalize(r, s);
    if (IS("replace")) {
        jstr *old = to_str(r, &(jval){0}), *nw;
        if (!getarg(a, 0, "old", &x))
            r_fail(r, at, "replace: missing argument 'old'");
        old = to_str(r, &x);
        if (!getarg(a, 1, "new", &x))
            r_fail(r, at, "replace: missing argument 'new'");
        nw = to_str(r, &x);
        return py_replace(r, s, old, nw, arg_int(r, at, a, 2, "count", -1, "replace"));
    }
    if (IS("indent"))
        return do_indent(r, at, s, a);
    if (IS("center")) {
        jstr *one = mkstr(r, " ", 1);
        return pad(r, s, arg_int(r, at, a, 0, "width", 80, "center"), one, 0);
    }
    if (IS("wordcount")) {
        int64_t c = 0;
        bool in = false;
        for (size_t i = 0; i < s->n; i++) {
            unsigned char ch = (unsigned char)s->s[i];
            bool w = isalnum(ch) || ch == '_' || ch >= 0x80;
            if (w && !in)
                c++;
            in = w;
        }
        return v_int(c);
    }
    if (IS("e") || IS("escape"))
        return html_escape(r, &v);
    if (IS("striptags")) {
        jbuf b = {0};
        bool tag = false;
        for (size_t i = 0; i < s->n; i++) {
            if (s->s[i] == '<')
                tag = true;
            else if (s->s[i] == '>' && tag)
                tag = false;
            else if (!tag)
                buf_putc(r, &b, s->s[i]);
        }
        jval t = v_buf(r, &b);
        jval words = py_split(r, at, t.u.s, &(jval){.t = T_NONE}, -1, false);
        jfunc fn = {.kind = F_METHOD, .self = v_str(r, " ", 1), .name = mkstr(r, "join", 4)};
        jargs ja = {.pos = &words, .npos = 1};
        return call_method(r, at, &fn, &ja);
    }
    if (IS("truncate")) {
        int64_t len = arg_int(r, at, a, 0, "length", 255, "truncate");
        jval killw = v_bool(false), endv = v_cstr(r, "...");
        getarg(a, 1, "killwords", &killw);
        getarg(a, 2, "end", &endv);
        int64_t leeway = arg_int(r, at, a, 3, "leeway", 5, "truncate");
        jstr *end = to_str(r, &endv);
        int64_t n = (int64_t)cp_count(s->s, s->n);
        if (n <= len + leeway)
            return v_str(r, s->s, s->n);
        int64_t keep = len - (int64_t)cp_count(end->s, end->n);
        if (keep < 0)
            keep = 0;
        size_t cut = cp_off(s->s, s->n, (size_t)keep);
        jbuf b = {0};
        if (truthy(&killw)) {
            buf_put(r, &b, s->s, cut);
        } else {
            size_t sp = cut;
            while (sp > 0 && s->s[sp - 1] != ' ')
                sp--;
            buf_put(r, &b, s->s, sp ? sp - 1 : 0);
        }
        buf_put(r, &b, end->s, end->n);
        return v_buf(r, &b);
    }
#undef IS
    r_fail(r, at, "no filter named '%s'", name->s);
}

static jval apply_filter(R *r, jframe *f, const jnode *at, const jstr *name, jval v,
                         const jargs *a)
{
    jval res = apply_filter_impl(r, f, at, name, v, a);
    /* what Jinja gives back as a generator or iterator (it yields, or reversed()) */
    static const char *const lazy[] = {"map", "select", "reject", "selectattr", "rejectattr",
                                       "unique", "batch", "items", "reverse", NULL};
    if (res.t == T_LIST && in_list(lazy, name))
        res.u.l->lazy = true;
    return res;
}

static bool apply_test(R *r, jframe *f, const jnode *at, const jstr *name, const jval *v,
                       const jargs *a)
{
    (void)f;
    jval x;
#define IS(lit) name_is(name, lit)
    if (IS("defined"))
        return v->t != T_UNDEF;
    if (IS("undefined"))
        return v->t == T_UNDEF;
    if (IS("none"))
        return v->t == T_NONE;
    if (IS("boolean"))
        return v->t == T_BOOL;
    if (IS("true"))
        return v->t == T_BOOL && v->u.b;
    if (IS("false"))
        return v->t == T_BOOL && !v->u.b;
    if (IS("integer"))
        return v->t == T_INT;
    if (IS("float"))
        return v->t == T_FLOAT;
    if (IS("number"))
        return is_num(v);
    if (IS("string"))
        return v->t == T_STR;
    if (IS("mapping"))
        return v->t == T_DICT;
    if (IS("iterable"))
        return v->t == T_STR || v->t == T_LIST || v->t == T_DICT || v->t == T_UNDEF;
    if (IS("sequence"))
        return v->t == T_STR || (v->t == T_LIST && !v->u.l->lazy) || v->t == T_DICT;
    if (IS("callable"))
        return v->t == T_FUNC;
    if (IS("escaped"))
        return false;
    if (IS("filter") || IS("test")) {
        if (v->t != T_STR)
            return false;
        return in_list(IS("filter") ? FILTERS : TESTS, v->u.s);
    }
    if (IS("lower") || IS("upper")) {
        if (v->t != T_STR)
            return false;
        jval c = str_case(r, v->u.s, IS("lower") ? 0 : 1);
        return v_eq(&c, v);
    }
    if (IS("odd") || IS("even") || IS("divisibleby")) {
        if (v->t != T_INT && v->t != T_BOOL)
            r_fail(r, at, "test '%s' needs an integer, not %s", name->s, type_name(v));
        int64_t k = num_i(v);
        if (IS("odd"))
            return k % 2 != 0;
        if (IS("even"))
            return k % 2 == 0;
        int64_t d = arg_int(r, at, a, 0, "num", 1, "divisibleby");
        if (!d)
            r_fail(r, at, "divisibleby: division by zero");
        return k % d == 0;
    }
    if (!getarg(a, 0, "other", &x))
        r_fail(r, at, "test '%s' needs an argument", name->s);
    if (IS("sameas"))
        return v->t == x.t && (v->t == T_NONE || v->t == T_UNDEF || v_eq(v, &x)) &&
               (v->t != T_LIST || v->u.l == x.u.l) && (v->t != T_DICT || v->u.d == x.u.d);
    if (IS("eq") || IS("equalto") || IS("=="))
        return v_eq(v, &x);
    if (IS("ne") || IS("!="))
        return !v_eq(v, &x);
    if (IS("in"))
        return contains(r, at, v, &x);
    if (IS("lt") || IS("lessthan") || IS("<"))
        return v_cmp(r, at, v, &x, "<") < 0;
    if (IS("le") || IS("<="))
        return v_cmp(r, at, v, &x, "<=") <= 0;
    if (IS("gt") || IS("greaterthan") || IS(">"))
        return v_cmp(r, at, v, &x, ">") > 0;
    if (IS("ge") || IS(">="))
        return v_cmp(r, at, v, &x, ">=") >= 0;
#undef IS
    r_fail(r, at, "no test named '%s'", name->s);
}

/* --- calls --- */

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };
static int exec_list(R *r, jframe *f, jnode *const *kids, size_t n, jbuf *out);
static int exec_for_items(R *r, jframe *f, const jnode *n, jval it, int depth, jbuf *out);

static jval call_builtin(R *r, const jnode *at, int id, const jargs *a)
{
    switch (id) {
    case B_RANGE: {
        int64_t lo = 0, hi, st = 1;
        for (size_t i = 0; i < a->npos; i++)
            if (a->pos[i].t != T_INT && a->pos[i].t != T_BOOL)
                r_fail(r, at, "range: '%s' object cannot be interpreted as an integer",
                       type_name(&a->pos[i]));
        if (a->npos == 1) {
            hi = num_i(&a->pos[0]);
        } else if (a->npos == 2 || a->npos == 3) {
            lo = num_i(&a->pos[0]);
            hi = num_i(&a->pos[1]);
            if (a->npos == 3)
                st = num_i(&a->pos[2]);
        } else {
            r_fail(r, at, "range expected 1 to 3 integer arguments, got %zu", a->npos);
        }
        if (st == 0)
            r_fail(r, at, "range() arg 3 must not be zero");
        double cnt = st > 0 ? ceil(((double)hi - (double)lo) / (double)st)
                            : ceil(((double)lo - (double)hi) / (double)-st);
        if (cnt < 0)
            cnt = 0;
        if (cnt > (double)r->lim.max_range)
            r_fail(r, at, "range() of %.0f items exceeds the sandbox limit of %lld", cnt,
                   (long long)r->lim.max_range);
        jlist *l = mklist(r, (size_t)cnt);
        for (size_t i = 0; i < l->n; i++)
            l->v[i] = v_int(lo + (int64_t)i * st);
        return v_list(l);
    }
    case B_NAMESPACE:
    case B_DICT: {
        jdict *d = mkdict(r);
        if (a->npos > 1 || (a->npos == 1 && a->pos[0].t != T_DICT))
            r_fail(r, at, "%s: expected a mapping or keyword arguments",
                   id == B_DICT ? "dict" : "namespace");
        if (a->npos)
            for (size_t i = 0; i < a->pos[0].u.d->n; i++)
                dict_set(r, d, a->pos[0].u.d->k[i], a->pos[0].u.d->v[i]);
        for (size_t i = 0; i < a->nkw; i++) {
            jval k = {.t = T_STR};
            k.u.s = a->kwn[i];
            dict_set(r, d, k, a->kwv[i]);
        }
        jval v = {.t = id == B_DICT ? T_DICT : T_NS};
        v.u.d = d;
        return v;
    }
    case B_RAISE: {
        jval m = v_str(r, "", 0);
        getarg(a, 0, "message", &m);
        jstr *s = to_str(r, &m);
        r_fail(r, at, "raise_exception: %s", s->s);
    }
    case B_STRFTIME: {
        jstr *fmt = arg_str(r, at, a, 0, "format", "strftime_now");
        const char *sde = getenv("SOURCE_DATE_EPOCH");
        time_t now;
        struct tm tm;
        if (sde && *sde) {
            now = (time_t)strtoll(sde, NULL, 10);
            gmtime_r(&now, &tm);
        } else {
            now = time(NULL);
            localtime_r(&now, &tm);
        }
        char out[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t k = strftime(out, sizeof out, fmt->s, &tm);
#pragma GCC diagnostic pop
        if (!k && fmt->n)
            r_fail(r, at, "strftime_now: format '%s' gives no text or more than 511 bytes",
                   fmt->s);
        return v_str(r, out, k);
    }
    }
    r_fail(r, at, "unknown builtin");
}

static jval call_macro(R *r, const jnode *at, const jfunc *fn, const jargs *a)
{
    const jnode *m = fn->node;
    if (r->call_depth >= r->lim.max_call_depth)
        r_fail(r, at, "macro calls nested deeper than %d (unbounded recursion?)",
               r->lim.max_call_depth);
    jframe *mf = frame_new(r, fn->closure);
    jvec varargs = {0};
    jdict *kwargs = mkdict(r);
    bool *bound = r_alloc(r, (m->n_names + 1) * sizeof *bound);
    memset(bound, 0, (m->n_names + 1) * sizeof *bound);
    for (size_t i = 0; i < a->npos; i++) {
        if (i < m->n_names) {
            frame_set(r, mf, m->names[i], a->pos[i]);
            bound[i] = true;
        } else {
            vec_push(r, &varargs, a->pos[i]);
        }
    }
    for (size_t i = 0; i < a->nkw; i++) {
        size_t k;
        for (k = 0; k < m->n_names; k++)
            if (m->names[k]->n == a->kwn[i]->n && !memcmp(m->names[k]->s, a->kwn[i]->s, a->kwn[i]->n))
                break;
        if (k < m->n_names) {
            if (bound[k])
                r_fail(r, at, "macro '%s' got multiple values for argument '%s'",
                       fn->name ? fn->name->s : "caller", a->kwn[i]->s);
            frame_set(r, mf, m->names[k], a->kwv[i]);
            bound[k] = true;
        } else if (name_is(a->kwn[i], "caller")) {
            frame_set(r, mf, a->kwn[i], a->kwv[i]);
        } else {
            jval kk = {.t = T_STR};
            kk.u.s = a->kwn[i];
            dict_set(r, kwargs, kk, a->kwv[i]);
        }
    }
    r->call_depth++;
    for (size_t k = 0; k < m->n_names; k++) {
        if (bound[k])
            continue;
        jval dv = m->kids2 && m->kids2[k]
                      ? ev(r, mf, m->kids2[k])
                      : v_undef(r, "parameter '%s' was not provided", m->names[k]->s);
        frame_set(r, mf, m->names[k], dv);
    }
    frame_set(r, mf, mkstr(r, "varargs", 7), v_vec(r, &varargs));
    jval kv = {.t = T_DICT};
    kv.u.d = kwargs;
    frame_set(r, mf, mkstr(r, "kwargs", 6), kv);
    jbuf out = {0};
    exec_list(r, mf, m->b->kids, m->b->n_kids, &out);
    r->call_depth--;
    return v_buf(r, &out);
}

static jval call_v(R *r, jframe *f, const jnode *at, const jval *fnv, const jargs *a)
{
    (void)f;
    if (fnv->t == T_UNDEF)
        r_fail(r, at, "%s", fnv->u.s ? fnv->u.s->s : "undefined value is not callable");
    if (fnv->t == T_LOOP && fnv->u.lp->node && fnv->u.lp->node->op == 1) {
        if (a->npos != 1)
            r_fail(r, at, "loop() takes one iterable, got %zu arguments", a->npos);
        jloop *lp = fnv->u.lp;
        if (r->call_depth >= r->lim.max_call_depth)
            r_fail(r, at, "recursive loop calls nested deeper than %d", r->lim.max_call_depth);
        jbuf b = {0};
        r->call_depth++;
        exec_for_items(r, lp->frame, lp->node, a->pos[0], lp->depth + 1, &b);
        r->call_depth--;
        return v_buf(r, &b);
    }
    if (fnv->t != T_FUNC)
        r_fail(r, at, "'%s' object is not callable", type_name(fnv));
    const jfunc *fn = fnv->u.fn;
    switch (fn->kind) {
    case F_BUILTIN: return call_builtin(r, at, fn->id, a);
    case F_METHOD: return call_method(r, at, fn, a);
    case F_MACRO:
    case F_CALLER: return call_macro(r, at, fn, a);
    case F_CYCLE: {
        if (!a->npos)
            r_fail(r, at, "no items for cycling given");
        return a->pos[fn->self.u.lp->i % (int64_t)a->npos];
    }
    case F_CHANGED: {
        jloop *lp = fn->self.u.lp;
        jlist *l = mklist(r, a->npos);
        if (a->npos)
            memcpy(l->v, a->pos, a->npos * sizeof(jval));
        jval now = v_list(l);
        bool changed = !lp->has_last || !v_eq(&lp->last, &now);
        lp->last = now;
        lp->has_last = true;
        return v_bool(changed);
    }
    }
    r_fail(r, at, "not callable");
}

/* --- expressions --- */

static jval ev(R *r, jframe *f, const jnode *n)
{
    step(r, n);
    switch (n->kind) {
    case N_LIT: return n->val;
    case N_NAME: return lookup(r, f, n->name);
    case N_ATTR: {
        jval o = ev(r, f, n->a);
        return getattr_v(r, n, &o, n->name);
    }
    case N_ITEM: {
        jval o = ev(r, f, n->a), k = ev(r, f, n->b);
        return getitem_v(r, n, &o, &k);
    }
    case N_SLICE: {
        jval o = ev(r, f, n->a), none = v_none();
        jval x = n->kids[0] ? ev(r, f, n->kids[0]) : none;
        jval y = n->kids[1] ? ev(r, f, n->kids[1]) : none;
        jval z = n->kids[2] ? ev(r, f, n->kids[2]) : none;
        return slice_v(r, n, &o, &x, &y, &z);
    }
    case N_CALL: {
        jval fnv = ev(r, f, n->a);
        jargs a;
        eval_args(r, f, n, &a);
        return call_v(r, f, n, &fnv, &a);
    }
    case N_FILTER: {
        jval v = ev(r, f, n->a);
        jargs a;
        eval_args(r, f, n, &a);
        return apply_filter(r, f, n, n->name, v, &a);
    }
    case N_TEST: {
        jval v = ev(r, f, n->a);
        jargs a;
        eval_args(r, f, n, &a);
        bool t = apply_test(r, f, n, n->name, &v, &a);
        return v_bool(n->op ? !t : t);
    }
    case N_BIN: {
        jval a = ev(r, f, n->a), b = ev(r, f, n->b);
        return arith(r, n, n->op, &a, &b);
    }
    case N_NEG:
    case N_POS: {
        jval a = ev(r, f, n->a);
        if (a.t == T_INT || a.t == T_BOOL) {
            int64_t i = num_i(&a);
            if (n->kind == N_NEG && i == INT64_MIN)
                r_fail(r, n, "integer overflow in unary '-'");
            return v_int(n->kind == N_NEG ? -i : i);
        }
        if (a.t == T_FLOAT)
            return v_float(n->kind == N_NEG ? -a.u.f : a.u.f);
        if (a.t == T_UNDEF)
            r_fail(r, n, "%s", a.u.s ? a.u.s->s : "undefined value");
        r_fail(r, n, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+',
               type_name(&a));
    }
    case N_NOT: {
        jval a = ev(r, f, n->a);
        return v_bool(!truthy(&a));
    }
    case N_AND: {
        jval a = ev(r, f, n->a);
        return truthy(&a) ? ev(r, f, n->b) : a;
    }
    case N_OR: {
        jval a = ev(r, f, n->a);
        return truthy(&a) ? a : ev(r, f, n->b);
    }
    case N_COND: {
        jval c = ev(r, f, n->a);
        if (truthy(&c))
            return ev(r, f, n->b);
        if (n->c)
            return ev(r, f, n->c);
        return v_undef(r, "the inline if-expression evaluated to false and has no else clause");
    }
    case N_LIST:
    case N_TUPLE: {
        jlist *l = mklist(r, n->n_kids);
        l->tuple = n->kind == N_TUPLE;
        for (size_t i = 0; i < n->n_kids; i++)
            l->v[i] = ev(r, f, n->kids[i]);
        return v_list(l);
    }
    case N_DICT: {
        jdict *d = mkdict(r);
        for (size_t i = 0; i < n->n_kids; i++) {
            jval k = ev(r, f, n->kids[i]);
            if (k.t == T_LIST && !k.u.l->tuple)
                r_fail(r, n, "unhashable type: 'list'");
            if (k.t == T_DICT || k.t == T_UNDEF)
                r_fail(r, n, "unhashable type: '%s'", type_name(&k));
            dict_set(r, d, k, ev(r, f, n->kids2[i]));
        }
        jval v = {.t = T_DICT};
        v.u.d = d;
        return v;
    }
    case N_CMP: {
        jval a = ev(r, f, n->kids[0]);
        for (size_t i = 1; i < n->n_kids; i++) {
            jval b = ev(r, f, n->kids[i]);
            bool ok;
            switch (n->ops[i - 1]) {
            case C_EQ: ok = v_eq(&a, &b); break;
            case C_NE: ok = !v_eq(&a, &b); break;
            case C_LT: ok = v_cmp(r, n, &a, &b, "<") < 0; break;
            case C_GT: ok = v_cmp(r, n, &a, &b, ">") > 0; break;
            case C_LE: ok = v_cmp(r, n, &a, &b, "<=") <= 0; break;
            case C_GE: ok = v_cmp(r, n, &a, &b, ">=") >= 0; break;
            case C_IN: ok = contains(r, n, &a, &b); break;
            default: ok = !contains(r, n, &a, &b); break;
            }
            if (!ok)
                return v_bool(false);
            a = b;
        }
        return v_bool(true);
    }
    default: r_fail(r, n, "internal error: node %d is not an expression", n->kind);
    }
}

/* --- statements --- */

static void assign(R *r, jframe *f, const jnode *target, jval v)
{
    if (target->name) { /* ns.attr */
        jval *nsv = frame_find(f, target->names[0]);
        if (!nsv || nsv->t != T_NS)
            r_fail(r, target, "cannot assign attribute on non-namespace object '%s'",
                   target->names[0]->s);
        jval k = {.t = T_STR};
        k.u.s = target->name;
        dict_set(r, nsv->u.d, k, v);
        return;
    }
    if (target->n_names == 1 && !target->op) {
        frame_set(r, f, target->names[0], v);
        return;
    }
    jlist *l = iter_list(r, target, &v);
    if (l->n != target->n_names)
        r_fail(r, target, "%s values to unpack (expected %zu, got %zu)",
               l->n > target->n_names ? "too many" : "not enough", target->n_names, l->n);
    for (size_t i = 0; i < l->n; i++)
        frame_set(r, f, target->names[i], l->v[i]);
}

static jval apply_chain(R *r, jframe *f, const jnode *fl, jval v)
{
    if (!fl)
        return v;
    v = apply_chain(r, f, fl->a, v);
    jargs a;
    eval_args(r, f, fl, &a);
    return apply_filter(r, f, fl, fl->name, v, &a);
}

/* The loop over `it` (a value) at `depth`: recursive loops call this again
 * through loop(children). */
static int exec_for_items(R *r, jframe *f, const jnode *n, jval it, int depth, jbuf *out)
{
    if (depth > MAX_NEST)
        r_fail(r, n, "recursive loop nested deeper than %d", MAX_NEST);
    jlist *items = iter_list(r, n->b, &it);
    if (n->c) { /* for x in xs if cond */
        jvec keep = {0};
        for (size_t i = 0; i < items->n; i++) {
            step(r, n);
            jframe *tf = frame_new(r, f);
            assign(r, tf, n->a, items->v[i]);
            jval c = ev(r, tf, n->c);
            if (truthy(&c))
                vec_push(r, &keep, items->v[i]);
        }
        items = v_vec(r, &keep).u.l;
    }
    jstr *ln = mkstr(r, "loop", 4);
    jloop *lp = r_alloc(r, sizeof *lp);
    memset(lp, 0, sizeof *lp);
    lp->items = items;
    lp->depth = depth;
    lp->node = n;
    lp->frame = f;
    jval lv = {.t = T_LOOP};
    lv.u.lp = lp;
    /* one frame, emptied for each iteration: a set in the body does not
     * outlive its iteration (as in Jinja) and long loops do not grow memory */
    jframe *bf = frame_new(r, f);
    for (size_t i = 0; i < items->n; i++) {
        step(r, n);
        lp->i = (int64_t)i;
        bf->n = 0;
        frame_set(r, bf, ln, lv);
        assign(r, bf, n->a, items->v[i]);
        int fl = exec_list(r, bf, n->kids, n->n_kids, out);
        if (fl == FLOW_BREAK)
            break;
    }
    if (!items->n && n->n_kids2)
        return exec_list(r, f, n->kids2, n->n_kids2, out);
    return FLOW_NORMAL;
}

static int exec_for(R *r, jframe *f, const jnode *n, jbuf *out)
{
    return exec_for_items(r, f, n, ev(r, f, n->b), 1, out);
}

static int exec_node(R *r, jframe *f, const jnode *n, jbuf *out)
{
    step(r, n);
    switch (n->kind) {
    case N_TEXT: buf_put(r, out, n->val.u.s->s, n->val.u.s->n); return FLOW_NORMAL;
    case N_OUTPUT: {
        jval v = ev(r, f, n->a);
        put_value(r, out, &v, false);
        return FLOW_NORMAL;
    }
    case N_IF: {
        jval c = ev(r, f, n->a);
        if (truthy(&c))
            return exec_list(r, f, n->b->kids, n->b->n_kids, out);
        if (n->c) {
            if (n->c->kind == N_IF)
                return exec_node(r, f, n->c, out);
            return exec_list(r, f, n->c->kids, n->c->n_kids, out);
        }
        return FLOW_NORMAL;
    }
    case N_FOR: return exec_for(r, f, n, out);
    case N_SET: assign(r, f, n->a, ev(r, f, n->b)); return FLOW_NORMAL;
    case N_SETBLOCK: {
        jbuf b = {0};
        exec_list(r, f, n->b->kids, n->b->n_kids, &b);
        assign(r, f, n->a, apply_chain(r, f, n->c, v_buf(r, &b)));
        return FLOW_NORMAL;
    }
    case N_MACRO: {
        jval m = mkfunc(r, F_MACRO, 0, n->name);
        m.u.fn->node = n;
        m.u.fn->closure = f;
        frame_set(r, f, n->name, m);
        return FLOW_NORMAL;
    }
    case N_CALLBLOCK: {
        jval caller = mkfunc(r, F_CALLER, 0, mkstr(r, "caller", 6));
        caller.u.fn->node = n;
        caller.u.fn->closure = f;
        const jnode *c = n->a;
        jval fnv = ev(r, f, c->a);
        jargs a;
        eval_args(r, f, c, &a);
        jstr **kwn = r_alloc(r, (a.nkw + 1) * sizeof *kwn);
        jval *kwv = r_alloc(r, (a.nkw + 1) * sizeof *kwv);
        if (a.nkw) {
            memcpy(kwn, a.kwn, a.nkw * sizeof *kwn);
            memcpy(kwv, a.kwv, a.nkw * sizeof *kwv);
        }
        kwn[a.nkw] = caller.u.fn->name;
        kwv[a.nkw] = caller;
        a.kwn = kwn;
        a.kwv = kwv;
        a.nkw++;
        jval v = call_v(r, f, c, &fnv, &a);
        put_value(r, out, &v, false);
        return FLOW_NORMAL;
    }
    case N_FILTERBLOCK: {
        jbuf b = {0};
        exec_list(r, f, n->b->kids, n->b->n_kids, &b);
        jval v = apply_chain(r, f, n->c, v_buf(r, &b));
        put_value(r, out, &v, false);
        return FLOW_NORMAL;
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    case N_BODY: return exec_list(r, f, n->kids, n->n_kids, out);
    case N_WITH: {
        jframe *wf = frame_new(r, f);
        for (size_t i = 0; i < n->n_names; i++)
            frame_set(r, wf, n->names[i], ev(r, f, n->kids2[i]));
        return exec_list(r, wf, n->b->kids, n->b->n_kids, out);
    }
    default: r_fail(r, n, "internal error: node %d is not a statement", n->kind);
    }
}

static int exec_list(R *r, jframe *f, jnode *const *kids, size_t n, jbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        int fl = exec_node(r, f, kids[i], out);
        if (fl != FLOW_NORMAL)
            return fl;
    }
    return FLOW_NORMAL;
}

/* --- JSON context --- */

static jval from_json(R *r, const cJSON *j)
{
    if (cJSON_IsNull(j))
        return v_none();
    if (cJSON_IsTrue(j))
        return v_bool(true);
    if (cJSON_IsFalse(j))
        return v_bool(false);
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* cJSON keeps no int/float distinction: integral values within 2^53 are ints */
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            return v_int((int64_t)d);
        return v_float(d);
    }
    if (cJSON_IsRaw(j) && j->valuestring) {
        /* a number literal kept as text (qe_jinja_json_parse): 1.0 stays a float */
        const char *t = j->valuestring;
        if (strpbrk(t, ".eE"))
            return v_float(strtod(t, NULL));
        return v_int(strtoll(t, NULL, 10));
    }
    if (cJSON_IsString(j))
        return v_cstr(r, j->valuestring ? j->valuestring : "");
    if (cJSON_IsArray(j)) {
        jvec v = {0};
        for (const cJSON *c = j->child; c; c = c->next)
            vec_push(r, &v, from_json(r, c));
        return v_vec(r, &v);
    }
    if (cJSON_IsObject(j)) {
        jdict *d = mkdict(r);
        for (const cJSON *c = j->child; c; c = c->next)
            dict_set(r, d, v_cstr(r, c->string ? c->string : ""), from_json(r, c));
        jval v = {.t = T_DICT};
        v.u.d = d;
        return v;
    }
    return v_none();
}

/* ---------------------------------------------------------------- public */

/* Number literals of the JSON text in document order, to mark the
 * integral-valued floats ("1.0", "2e3") that cJSON cannot tell from ints. */
static void mark_floats(cJSON *j, const char *text, size_t n, size_t *pos)
{
    if (cJSON_IsNumber(j)) {
        /* the next number token in the text outside strings */
        size_t i = *pos;
        bool in_str = false;
        for (; i < n; i++) {
            char c = text[i];
            if (in_str) {
                if (c == '\\')
                    i++;
                else if (c == '"')
                    in_str = false;
            } else if (c == '"') {
                in_str = true;
            } else if (c == '-' || isdigit((unsigned char)c)) {
                break;
            }
        }
        size_t st = i;
        while (i < n && (isdigit((unsigned char)text[i]) || strchr("+-.eE", text[i])))
            i++;
        *pos = i;
        double d = j->valuedouble;
        bool float_text = false;
        for (size_t k = st; k < i; k++)
            float_text = float_text || text[k] == '.' || text[k] == 'e' || text[k] == 'E';
        if (float_text && d == floor(d) && i - st < 64) {
            char lit[64];
            memcpy(lit, text + st, i - st);
            lit[i - st] = 0;
            /* keep it as raw text: the renderer reads it back as a float */
            char *raw = cJSON_malloc(i - st + 1);
            if (raw) {
                memcpy(raw, lit, i - st + 1);
                j->type = cJSON_Raw;
                j->valuestring = raw;
            }
        }
        return;
    }
    for (cJSON *c = j->child; c; c = c->next)
        mark_floats(c, text, n, pos);
}

cJSON *qe_jinja_json_parse(const char *text, size_t n, size_t *err_off)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!j) {
        if (err_off)
            *err_off = end ? (size_t)(end - text) : 0;
        return NULL;
    }
    size_t pos = 0;
    mark_floats(j, text, n, &pos);
    return j;
}

void qe_jinja_limits_default(qe_jinja_limits *lim)
{
    lim->max_output_nbytes = (size_t)4 << 20;
    lim->max_memory_nbytes = (size_t)256 << 20;
    lim->max_steps = 20000000;
    lim->max_call_depth = 100;
    lim->max_range = 1000000;
}

/* Lex and parse t->src into t->root; nonzero on error (err filled). */
static int parse_into(qe_jinja *t, qe_err *err)
{
    P *p = calloc(1, sizeof *p);
    if (!p)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    p->t = t;
    p->ar = &t->ar;
    p->err = err;
    if (setjmp(p->jb)) {
        free(p);
        return err && err->code ? err->code : QE_EFORMAT;
    }
    lex(p, true, true);
    t->root = parse_body(p, NULL, NULL, 0);
    free(p);
    return 0;
}

qe_jinja *qe_jinja_parse(const char *src, size_t n, const char *name, qe_err *err)
{
    qe_jinja *t = calloc(1, sizeof *t);
    if (!t) {
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(t->name, sizeof t->name, "%s", name ? name : "chat template");
    t->ar.limit = (size_t)1 << 30;
    t->src = malloc(n + 1);
    if (!t->src) {
        free(t);
        qe_err_set(err, QE_ENOMEM, "out of memory");
        return NULL;
    }
    /* newlines normalized to \n; one trailing newline dropped (Jinja's default) */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            t->src[o++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n')
                i++;
        } else {
            t->src[o++] = src[i];
        }
    }
    if (o && t->src[o - 1] == '\n')
        o--;
    t->src[o] = 0;
    t->n = o;
    if (parse_into(t, err)) {
        qe_jinja_free(t);
        return NULL;
    }
    return t;
}

void qe_jinja_free(qe_jinja *t)
{
    if (!t)
        return;
    arena_free(&t->ar);
    free(t->src);
    free(t);
}

int qe_jinja_render(const qe_jinja *t, const cJSON *ctx, const qe_jinja_limits *lim, char **out,
                    size_t *out_n, qe_err *err)
{
    *out = NULL;
    if (out_n)
        *out_n = 0;
    R *r = calloc(1, sizeof *r);
    if (!r)
        return qe_err_set(err, QE_ENOMEM, "out of memory");
    r->t = t;
    r->err = err;
    if (lim)
        r->lim = *lim;
    else
        qe_jinja_limits_default(&r->lim);
    r->ar.limit = r->lim.max_memory_nbytes;
    int rc = 0;
    if (setjmp(r->jb)) {
        rc = err && err->code ? err->code : QE_EINVAL;
        goto out;
    }
    r->root = frame_new(r, NULL);
    if (ctx) {
        if (!cJSON_IsObject(ctx))
            r_fail_code(r, QE_EINVAL, "the context must be a JSON object");
        for (const cJSON *c = ctx->child; c; c = c->next)
            frame_set(r, r->root, mkstr(r, c->string ? c->string : "", strlen(c->string ? c->string : "")),
                      from_json(r, c));
    }
    jbuf b = {0};
    exec_list(r, r->root, t->root->kids, t->root->n_kids, &b);
    char *s = malloc(b.n + 1);
    if (!s)
        r_fail_code(r, QE_ENOMEM, "out of memory");
    if (b.n)
        memcpy(s, b.p, b.n);
    s[b.n] = 0;
    *out = s;
    if (out_n)
        *out_n = b.n;
out:
    arena_free(&r->ar);
    free(r);
    return rc;
}

int qe_jinja_render_src(const char *src, size_t n, const cJSON *ctx, char **out, size_t *out_n,
                        qe_err *err)
{
    *out = NULL;
    qe_jinja *t = qe_jinja_parse(src, n, NULL, err);
    if (!t)
        return err && err->code ? err->code : QE_EFORMAT;
    int rc = qe_jinja_render(t, ctx, NULL, out, out_n, err);
    qe_jinja_free(t);
    return rc;
}
