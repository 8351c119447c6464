/*
 * bench_memory.c: peak resident memory of `qeval ppl`, against the
 * acceptance budget "peak RSS <= (model file + KV cache + activations)
 * + 10 %".
 *
 * Models: random weights with real shapes (as bench_infer.c builds them),
 * written to GGUF files in a temp folder with a real tokenizer:
 *   smollm-135m:  llama, n_embd 576, n_ff 1536, 30 layers, 9/3 heads,
 *                 vocab 49152 = ggml-vocab-starcoder.gguf (as SPEED.md)
 *   qwen2.5-0.5b: qwen2, n_embd 896, n_ff 4864, 24 layers, 14/2 heads,
 *                 Q/K/V biases, vocab 151936 = ggml-vocab-gpt-2.gguf padded
 *                 with CONTROL tokens <|pad_N|> (as SPEED.md)
 * in F16 and Q8_0 by default (q4_K / q2_K on request: their row-length
 * fallbacks as in bench_infer.c; Q2_K of the qwen shape takes minutes to
 * build), plus the shipped stories260K.gguf (SPM vocab) on
 * tinystories-200k.txt and on the wiki text: a 1 MiB model, so its rows
 * show the fixed process overhead and the tokenizer's transient peak.
 *
 * Each model runs as a child process,
 *   $QEVAL_BIN ppl FILE --text TEXT --chunks 2 --threads N
 * and its peak RSS is wait4()'s ru_maxrss.  "core" is what qeval prints as
 * "core memory (KV cache, activations, scratch, logits)"; the budget is
 * (file + core) * 1.10.  While the child runs, /proc/PID/status is sampled
 * every 2 ms for the anonymous (heap) and file-backed (mmap'd weights,
 * binary, libraries) parts of the RSS: a breakdown, not a bound (samples
 * can miss a short peak).  The child is forked when this process has
 * freed its models (and given the memory back to the kernel: malloc_trim),
 * because fork copies the parent's resident anonymous pages into the
 * child's RSS high-water mark, which ru_maxrss reports; that floor is
 * printed.
 *
 * usage: bench_memory [--models smollm,qwen] [--types f16,q8_0]
 *                     [--threads 2] [--ctx 512]
 * Exit status: 0 when every run completed (OVER is a finding, printed,
 * not a failure), 1 when something failed to build or run, 2 on usage.
 */
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness/model/gguf.h"
#include "../harness/model/model.h"
#include "../harness/model/quantize_model.h"
#include "../quant/quant.h"

#define MIB (1024.0 * 1024.0)
#define SLACK 1.10 /* the acceptance item's +10 % */

#include "bench_models.h"

/* ------------------------------------------------------------ GGUF writing */

/* tokenizer.* KVs of the vocab-only file `voc`, with tokens / token_type /
 * scores padded to n_vocab by CONTROL tokens "<|pad_N|>" when shorter. */
static int copy_tokenizer(qe_gguf_builder *b, const qe_gguf *voc, int n_vocab, qe_err *err)
{
    int rc = 0;
    char key[256];
    for (uint64_t i = 0; i < voc->n_kv && rc == 0; i++) {
        const qe_gguf_kv *kv = &voc->kvs[i];
        if (kv->key.len >= sizeof key)
            continue;
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        if (strncmp(key, "tokenizer.", 10) == 0)
            rc = qe_gguf_builder_set_value(b, key, &kv->val, err);
    }
    const qe_gguf_value *tv = qe_gguf_get(voc, "tokenizer.ggml.tokens");
    if (rc || !tv || tv->type != QE_GGUF_ARRAY || tv->v.arr.elem_type != QE_GGUF_STRING)
        return rc ? rc : qe_err_set(err, QE_EFORMAT, "%s: no tokenizer.ggml.tokens", voc->path);
    const uint64_t n_tok = tv->v.arr.n;
    if (n_tok >= (uint64_t)n_vocab)
        return 0;
    /* padded copies: strings, token types (3 = CONTROL) and scores (0) */
    char **toks = calloc((size_t)n_vocab, sizeof *toks);
    int32_t *types = calloc((size_t)n_vocab, sizeof *types);
    float *scores = calloc((size_t)n_vocab, sizeof *scores);
    if (!toks || !types || !scores) {
        rc = qe_err_set(err, QE_ENOMEM, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < (uint64_t)n_vocab; i++) {
        if (i < n_tok) {
            const qe_gguf_str *s = &tv->v.arr.strs[i];
            toks[i] = malloc(s->len + 1);
            if (toks[i]) {
                memcpy(toks[i], s->ptr, s->len);
                toks[i][s->len] = 0;
            }
        } else {
            toks[i] = malloc(32);
            if (toks[i])
                snprintf(toks[i], 32, "<|pad_%llu|>", (unsigned long long)i);
            types[i] = 3;
        }
        if (!toks[i]) {
            rc = qe_err_set(err, QE_ENOMEM, "out of memory");
            goto out;
        }
    }
    const qe_gguf_value *tt = qe_gguf_get(voc, "tokenizer.ggml.token_type");
    if (tt && tt->type == QE_GGUF_ARRAY && tt->v.arr.elem_type == QE_GGUF_INT32 &&
        tt->v.arr.n >= n_tok)
        memcpy(types, tt->v.arr.data, n_tok * sizeof(int32_t));
    else
        for (uint64_t i = 0; i < n_tok; i++)
            types[i] = 1; /* NORMAL */
    qe_gguf_value vt = {.type = QE_GGUF_ARRAY};
    vt.v.arr.elem_type = QE_GGUF_INT32;
    vt.v.arr.n = (uint64_t)n_vocab;
    vt.v.arr.data = types;
    if ((rc = qe_gguf_builder_set_str_array(b, "tokenizer.ggml.tokens", (const char *const *)toks,
                                            (uint64_t)n_vocab, err)) ||
        (rc = qe_gguf_builder_set_value(b, "tokenizer.ggml.token_type", &vt, err)))
        goto out;
    const qe_gguf_value *sv = qe_gguf_get(voc, "tokenizer.ggml.scores");
    if (sv && sv->type == QE_GGUF_ARRAY && sv->v.arr.elem_type == QE_GGUF_FLOAT32 &&
        sv->v.arr.n >= n_tok) {
        memcpy(scores, sv->v.arr.data, n_tok * sizeof(float));
        qe_gguf_value vs = {.type = QE_GGUF_ARRAY};
        vs.v.arr.elem_type = QE_GGUF_FLOAT32;
        vs.v.arr.n = (uint64_t)n_vocab;
        vs.v.arr.data = scores;
        rc = qe_gguf_builder_set_value(b, "tokenizer.ggml.scores", &vs, err);
    }
out:
    if (toks)
        for (int i = 0; i < n_vocab; i++)
            free(toks[i]);
    free(toks);
    free(types);
    free(scores);
    return rc;
}

/* Write m (shape s) with llama.cpp metadata and the tokenizer of `voc`. */
static int write_model(const qe_model *m, const shape *s, int ftype, const qe_gguf *voc,
                       const char *path, qe_err *err)
{
    qe_gguf_builder *b = qe_gguf_builder_new(3, err);
    if (!b)
        return err->code ? err->code : QE_ENOMEM;
    int rc;
    if ((rc = qe_gguf_put_config(b, &m->cfg, err)))
        goto out;
    if ((rc = qe_gguf_builder_set_u32(b, "general.quantization_version", 2, err)))
        goto out;
    if (ftype >= 0 && (rc = qe_gguf_builder_set_u32(b, "general.file_type", (uint32_t)ftype, err)))
        goto out;
    if ((rc = copy_tokenizer(b, voc, s->n_vocab, err)))
        goto out;
    for (int i = 0; i < m->n_tensors; i++) {
        const qe_tensor *t = &m->tensors[i];
        if ((rc = qe_gguf_builder_set_tensor(b, t->name, t->type, t->n_dims, t->ne, t->data,
                                             t->nbytes, err)))
            goto out;
    }
    rc = qe_gguf_builder_write(b, path, err);
out:
    qe_gguf_builder_free(b);
    return rc;
}

/* ------------------------------------------------------------ measuring */

/* "Key:   123 kB" from /proc/<pid>/status, in KiB; -1 if absent. */
static long status_kib(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? atol(p + strlen(key)) : -1;
}

static long self_rss_kib(void)
{
    char buf[4096] = "";
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return status_kib(buf, "VmRSS:");
}

typedef struct run_result {
    double file_mib, core_mib;   /* as qeval ppl prints them */
    double rss_mib;              /* ru_maxrss */
    double anon_mib, fmap_mib;   /* sampled peaks of RssAnon and RssFile+RssShmem */
    double ppl, seconds;
    long n_tokens;               /* tokens of the whole text */
} run_result;

/* Run qeval ppl on `model` with all output into log_path, then parse it.
 * 0 on success, -1 (message printed) when it did not run or exited != 0. */
static int run_ppl(const char *qeval, const char *model, const char *text, int n_threads,
                   int n_ctx, const char *log_path, run_result *r)
{
    char nt[16], nc[16];
    snprintf(nt, sizeof nt, "%d", n_threads);
    snprintf(nc, sizeof nc, "%d", n_ctx);
    fflush(NULL);
    double t0 = qe_now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_memory: fork");
        return -1;
    }
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        close(fd);
        execl(qeval, qeval, "ppl", model, "--text", text, "--ctx", nc, "--chunks", "2",
              "--threads", nt, (char *)NULL);
        _exit(127);
    }
    /* sample the RSS split while it runs, once it has exec'd qeval */
    char path[64], exe[64], buf[8192], self_exe[1024] = "", child_exe[1024];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    snprintf(exe, sizeof exe, "/proc/%d/exe", (int)pid);
    ssize_t ns = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    self_exe[ns > 0 ? ns : 0] = 0;
    bool exec_done = false;
    long anon = 0, fmap = 0;
    struct rusage ru;
    int st = 0;
    pid_t w;
    while ((w = wait4(pid, &st, WNOHANG, &ru)) == 0) {
        if (!exec_done) {
            ssize_t n_exe = readlink(exe, child_exe, sizeof child_exe - 1);
            child_exe[n_exe > 0 ? n_exe : 0] = 0;
            exec_done = n_exe > 0 && strcmp(child_exe, self_exe) != 0;
        }
        FILE *f = exec_done ? fopen(path, "r") : NULL;
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            long a = status_kib(buf, "RssAnon:");
            long fi = status_kib(buf, "RssFile:") + status_kib(buf, "RssShmem:");
            anon = a > anon ? a : anon;
            fmap = fi > fmap ? fi : fmap;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    if (w < 0) {
        perror("bench_memory: wait4");
        return -1;
    }
    r->seconds = qe_now() - t0;
    r->rss_mib = ru.ru_maxrss / 1024.0;
    r->anon_mib = anon / 1024.0;
    r->fmap_mib = fmap / 1024.0;

    char *log = NULL;
    size_t n = 0;
    qe_err err = {0};
    if (qe_read_file(log_path, &log, &n, &err)) {
        fprintf(stderr, "bench_memory: %s\n", err.msg);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench_memory: %s ppl %s: %s %d; its output:\n%s\n", qeval, model,
                WIFEXITED(st) ? "exit status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log);
        free(log);
        return -1;
    }
    /* "ppl: TEXT: N tokens, ...", "ppl: model file X MiB; core memory (...) Y MiB",
     * "Final estimate: PPL = P +/- U" */
    const char *p = strstr(log, " tokens, n_ctx ");
    r->n_tokens = -1;
    if (p) {
        while (p > log && p[-1] != ' ')
            p--;
        r->n_tokens = atol(p);
    }
    int ok = 0;
    p = strstr(log, "ppl: model file ");
    if (p && sscanf(p, "ppl: model file %lf MiB", &r->file_mib) == 1)
        ok++;
    const char *q = p ? strstr(p, "core memory (") : NULL;
    q = q ? strchr(q, ')') : NULL;
    if (q && sscanf(q, ") %lf MiB", &r->core_mib) == 1)
        ok++;
    p = strstr(log, "Final estimate: PPL = ");
    if (p && sscanf(p, "Final estimate: PPL = %lf", &r->ppl) == 1)
        ok++;
    if (ok != 3)
        fprintf(stderr, "bench_memory: cannot parse the output of %s ppl %s:\n%s\n", qeval,
                model, log);
    free(log);
    return ok == 3 ? 0 : -1;
}

/* logits_mib: the n_ctx/2 x n_vocab f32 logit rows inside `core`. */
static void print_row(const char *model, const char *type, const char *text, double logits_mib,
                      const run_result *r)
{
    double budget = (r->file_mib + r->core_mib) * SLACK;
    printf("%-13s %-5s %-5s %8.1f %8.1f %8.1f %8.1f %8.1f %7.1f%% %-4s %8.1f %8.1f %7ld %6.1f\n",
           model, type, text, r->file_mib, r->core_mib, logits_mib, budget, r->rss_mib,
           100.0 * r->rss_mib / budget, r->rss_mib <= budget ? "PASS" : "OVER", r->anon_mib,
           r->fmap_mib, r->n_tokens, r->seconds);
    fflush(stdout);
}

/* The logit block inside `core`, sized as harness/infer/ppl.c does: rows
 * of the n_ctx/2 scored positions in blocks of <= 32 MiB (>= 16 rows),
 * plus QE_DECODE_MAX_T (2) rows for a merged remainder. */
static double logits_mib(int n_ctx, int n_vocab)
{
    const size_t n_out = (size_t)(n_ctx - n_ctx / 2);
    size_t b = (32u << 20) / ((size_t)n_vocab * sizeof(float));
    b = b < 16 ? 16 : b;
    b = b < n_out ? b : n_out;
    return (double)(b + 2) * n_vocab * sizeof(float) / MIB;
}

int main(int argc, char **argv)
{
    bench_args a = {.models = "smollm,qwen", .types = "f16,q8_0", .n_threads = 2, .n_ctx = 512};
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (bench_common_arg(argc, argv, &i, &a))
            continue;
        else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc)
            keep = argv[++i]; /* keep the GGUF files there (for timing other commands) */
        else {
            fprintf(stderr, "usage: %s [--models smollm,qwen] [--types f16,q8_0,q4_K,q2_K] "
                            "[--threads N] [--ctx 512] [--keep DIR]\n", argv[0]);
            return 2;
        }
    }
    const char *models = a.models, *types = a.types;
    const int n_threads = a.n_threads, n_ctx = a.n_ctx;
    if (n_threads < 1 || n_ctx < 16) {
        fprintf(stderr, "bench_memory: bad --threads/--ctx\n");
        return 2;
    }
    const char *qeval = getenv("QEVAL_BIN");
    if (!qeval || !*qeval)
        qeval = "./qeval";
    const char *assets = getenv("QEVAL_ASSETS");
    if (!assets || !*assets)
        assets = "../shared";
    char wiki[1024], stories[1024], stories_text[1024];
    snprintf(wiki, sizeof wiki, "%s/datasets/wikitext2_raw/wiki.test.raw", assets);
    snprintf(stories, sizeof stories, "%s/models/stories260K/stories260K.gguf", assets);
    snprintf(stories_text, sizeof stories_text, "%s/testdata/llamacpp/tinystories-200k.txt",
             assets);
    if (access(qeval, X_OK) != 0) {
        fprintf(stderr, "bench_memory: %s is not executable (set QEVAL_BIN)\n", qeval);
        return 1;
    }

    char dir[] = "/tmp/qeval-bench-memory-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_memory: mkdtemp");
        return 1;
    }
    char gguf_path[512], log_path[512];
    snprintf(gguf_path, sizeof gguf_path, "%s/model.gguf", dir);
    snprintf(log_path, sizeof log_path, "%s/ppl.log", dir);

    printf("bench_memory: `qeval ppl MODEL --text T --ctx %d --chunks 2 --threads %d`, "
           "peak RSS vs budget = (file + core) x %.2f\n", n_ctx, n_threads, SLACK);
    printf("MiB throughout.  core: qeval's own figure (KV cache, activations, scratch, logits), "
           "logits: its block of f32 logit rows (<= 32 MiB);\nrss: ru_maxrss; anon / mapped: sampled "
           "peaks of RssAnon and RssFile+RssShmem; tokens: the whole text, tokenized\n");
    printf("%-13s %-5s %-5s %8s %8s %8s %8s %8s %8s %-4s %8s %8s %7s %6s\n", "model", "type",
           "text", "file", "core", "logits", "budget", "rss", "rss/bud", "", "anon", "mapped",
           "tokens", "run s");
    int status = 0;
    long floor_kib = 0;
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0] && status == 0; si++) {
        const shape *s = &SHAPES[si];
        if (!bench_in_list(models, bench_model_key(s)))
            continue;
        char vpath[1024];
        snprintf(vpath, sizeof vpath, "%s/tokenizers/llama.cpp-vocab/%s", assets, s->vocab);
        qe_err err = {0};
        qe_gguf *voc = qe_gguf_open(vpath, &err);
        if (!voc) {
            fprintf(stderr, "bench_memory: %s\n", err.msg);
            status = 1;
            break;
        }
        for (int ti = 0; ti < 4 && status == 0; ti++) {
            if (!bench_in_list(types, TYPES[ti]))
                continue;
            int type = qe_type_from_name(TYPES[ti]);
            /* llama_ftype: 1 MOSTLY_F16, 7 MOSTLY_Q8_0; the k-quant builds are
             * pure mixes with fallbacks, no llama.cpp ftype */
            int ftype = type == QE_TYPE_F16 ? 1 : type == QE_TYPE_Q8_0 ? 7 : -1;
            qe_model *m = build(s, type);
            if (!m || write_model(m, s, ftype, voc, gguf_path, &err)) {
                fprintf(stderr, "bench_memory: %s %s: %s\n", s->name, TYPES[ti],
                        m ? err.msg : "build failed");
                qe_model_free(m);
                status = 1;
                break;
            }
            qe_model_free(m); /* before fork: see the header */
            malloc_trim(0);
            long self = self_rss_kib();
            floor_kib = self > floor_kib ? self : floor_kib;
            run_result r = {0};
            if (run_ppl(qeval, gguf_path, wiki, n_threads, n_ctx, log_path, &r))
                status = 1;
            else
                print_row(s->name, TYPES[ti], "wiki", logits_mib(n_ctx, s->n_vocab), &r);
            if (keep) {
                char kp[1024];
                snprintf(kp, sizeof kp, "%s/%s-%s.gguf", keep, s->name, TYPES[ti]);
                if (rename(gguf_path, kp) != 0)
                    fprintf(stderr, "bench_memory: cannot keep %s as %s\n", gguf_path, kp);
            }
            unlink(gguf_path);
        }
        qe_gguf_close(voc);
    }
    /* stories260K (SPM vocab, 512 tokens): on its own text, then on the
     * wiki text, where the tokenizer's whole-text transient shows */
    const char *st_texts[2] = {stories_text, wiki}, *st_names[2] = {"tiny", "wiki"};
    double over_mib[2] = {0, 0};
    int n_vocab_st = 0;
    if (status == 0) {
        qe_err err = {0};
        qe_load_opts lo = {.no_tokenizer = true};
        qe_model *m = qe_model_load(stories, &lo, &err);
        if (!m) {
            fprintf(stderr, "bench_memory: %s\n", err.msg);
            status = 1;
        } else {
            n_vocab_st = m->cfg.n_vocab;
            qe_model_free(m);
            malloc_trim(0);
        }
    }
    for (int k = 0; k < 2 && status == 0; k++) {
        run_result r = {0};
        long self = self_rss_kib();
        floor_kib = self > floor_kib ? self : floor_kib;
        if (run_ppl(qeval, stories, st_texts[k], n_threads, n_ctx, log_path, &r)) {
            status = 1;
            break;
        }
        print_row("stories260K", "f32", st_names[k], logits_mib(n_ctx, n_vocab_st), &r);
        over_mib[k] = r.rss_mib - r.file_mib - r.core_mib;
    }
    if (status == 0)
        printf("note: stories260K's budget is (file + core) x 1.10 of a 1 MiB model: the fixed "
               "process overhead dominates\n(qeval binary and libc/libgomp/PCRE2/SQLite pages, "
               "tokenizer tables, the token ids); rss - file - core = %.1f MiB on tiny,\n"
               "%.1f MiB on wiki (0.81 M token ids: 3.1 MiB of them are the ids, kept for the "
               "whole run)\n", over_mib[0], over_mib[1]);
    printf("note: this launcher's RSS at fork was at most %.1f MiB (a floor under every "
           "rss figure above)\n", floor_kib / 1024.0);
    unlink(gguf_path);
    unlink(log_path);
    if (rmdir(dir) != 0)
        perror("bench_memory: rmdir");
    return status;
}
