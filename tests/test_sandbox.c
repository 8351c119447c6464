/*
 * test_sandbox.c: harness/eval/sandbox: the canonical HumanEval solutions
 * pass 164/164, empty completions pass 0, and hostile programs (escape by
 * shell, sockets, fork bombs, 10 GB allocations, endless loops) are
 * contained, with and without the Python guard layer.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "../harness/eval/sandbox.h"
#include "../harness/eval/task.h"
#include "test.h"

static char py[512];
static int have_py;

static qe_sandbox_opts short_opts(int no_guard)
{
    qe_sandbox_opts o = {0};
    o.timeout_s = 1.5;
    o.no_guard = no_guard != 0;
    return o;
}

static void run1(const char *prog, int no_guard, qe_sandbox_result *r)
{
    qe_sandbox_opts o = short_opts(no_guard);
    qe_err e = {0};
    int rc = qe_sandbox_run(py, &o, prog, strlen(prog), r, &e);
    CHECKF(rc == 0, "harness error: %s", e.msg);
}

TEST(basic_pass_fail)
{
    if (!have_py)
        return;
    qe_sandbox_result r;
    run1("assert 1 + 1 == 2\n", 0, &r);
    CHECKF(r.status == QE_SB_PASS, "status=%s out=%s", qe_sandbox_status_name(r.status), r.out_tail);
    run1("assert 1 + 1 == 3\n", 0, &r);
    CHECK(r.status == QE_SB_FAIL);
    CHECK(strstr(r.out_tail, "AssertionError") != NULL);
    /* cwd is an empty directory and the environment is scrubbed */
    run1("import os\nassert os.listdir('.') == [], os.listdir('.')\n"
         "assert 'QE_SECRET' not in os.environ\n", 0, &r);
    CHECKF(r.status == QE_SB_PASS, "out=%s", r.out_tail);
}

/* Hostile programs: each must end (not hang), fail or be denied, and leave
 * nothing outside its temp dir.  Run with the guard on and off: the OS
 * layers alone must contain them too. */
TEST(hostile_contained)
{
    if (!have_py)
        return;
    char marker[256], marker2[256];
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(marker, sizeof marker, "%s/escape", tmp);
    snprintf(marker2, sizeof marker2, "%s/qeval_escape_%d", tmp, (int)getpid());
    unlink(marker);
    unlink(marker2);
    char esc2[512];
    snprintf(esc2, sizeof esc2, "open('%s', 'w').write('x')\n", marker2);
    for (int ng = 0; ng <= 1; ng++) {
        qe_sandbox_result r;
        double t0 = qe_now();
        run1("import os\nrc = os.system('touch ../escape')\nassert rc != 0\n"
             "import subprocess\nsubprocess.run(['touch', '../escape'])\n", ng, &r);
        struct stat st;
        CHECKF(stat(marker, &st) != 0, "guard=%d: %s appeared", !ng, marker);
        run1(esc2, ng, &r);
        CHECKF(stat(marker2, &st) != 0, "guard=%d: %s appeared", !ng, marker2);
        CHECK(r.status != QE_SB_PASS);
        /* network: connecting anywhere must fail */
        run1("import socket\ns = socket.socket()\ns.settimeout(1)\n"
             "s.connect(('1.1.1.1', 80))\n", ng, &r);
        CHECKF(r.status != QE_SB_PASS, "guard=%d socket connect passed", !ng);
        CHECK(r.net_isolated);
        /* fork bomb: killed with its process group / PID namespace */
        run1("import os\nwhile True:\n    try:\n        os.fork()\n"
             "    except Exception:\n        pass\n", ng, &r);
        CHECKF(r.status != QE_SB_PASS, "guard=%d fork bomb", !ng);
        /* 10 GB allocation: MemoryError under RLIMIT_AS */
        run1("x = bytearray(10 * 1024**3)\n", ng, &r);
        CHECKF(r.status == QE_SB_FAIL && strstr(r.out_tail, "MemoryError"), "guard=%d %s: %s",
               !ng, qe_sandbox_status_name(r.status), r.out_tail);
        /* endless loop: killed at the 1.5 s timeout */
        double t1 = qe_now();
        run1("while True:\n    pass\n", ng, &r);
        CHECKF(r.status == QE_SB_TIMEOUT, "status=%s", qe_sandbox_status_name(r.status));
        CHECKF(qe_now() - t1 < 3.0, "took %.1f s", qe_now() - t1);
        fprintf(stdout, "  hostile set (guard=%d) in %.1f s\n", !ng, qe_now() - t0);
    }
    unlink(marker);
    unlink(marker2);
}

TEST(humaneval_canonical)
{
    if (!have_py)
        return;
    qe_err e = {0};
    char path[512];
    snprintf(path, sizeof path, "%s", "datasets/data/humaneval/HumanEval.jsonl.gz");
    qe_docs docs;
    int rq_ = qe_docs_read(path, "jsonl", NULL, &docs, &e);
    REQUIRE(rq_ == 0, "%s", e.msg);
    REQUIRE(docs.n == 164, "n=%zu", docs.n);
    char **progs = calloc(2 * docs.n, sizeof *progs);
    REQUIRE(progs, "oom");
    for (size_t i = 0; i < docs.n; i++) {
        const char *prompt = qe_doc_str(docs.items[i], "prompt");
        const char *sol = qe_doc_str(docs.items[i], "canonical_solution");
        const char *test = qe_doc_str(docs.items[i], "test");
        const char *ep = qe_doc_str(docs.items[i], "entry_point");
        REQUIRE(prompt && sol && test && ep, "item %zu fields", i);
        size_t n = strlen(prompt) + strlen(sol) + strlen(test) + strlen(ep) + 64;
        progs[i] = malloc(n);
        progs[docs.n + i] = malloc(n);
        snprintf(progs[i], n, "%s%s\n\n%s\n\ncheck(%s)\n", prompt, sol, test, ep);
        /* empty completion: the stub alone has no body -> SyntaxError */
        snprintf(progs[docs.n + i], n, "%s\n\n%s\n\ncheck(%s)\n", prompt, test, ep);
    }
    qe_sandbox_result *res = calloc(2 * docs.n, sizeof *res);
    qe_sandbox_opts o = {0};
    o.timeout_s = 10;
    double t0 = qe_now();
    int rq2_ = qe_sandbox_run_many(py, &o, (const char *const *)progs, 2 * docs.n, 2, res, &e);
    REQUIRE(rq2_ == 0,
            "%s", e.msg);
    int pass = 0, pass_empty = 0;
    for (size_t i = 0; i < docs.n; i++) {
        pass += res[i].status == QE_SB_PASS;
        pass_empty += res[docs.n + i].status == QE_SB_PASS;
        if (res[i].status != QE_SB_PASS)
            fprintf(stdout, "  %s: %s %s\n", qe_doc_str(docs.items[i], "task_id"),
                    qe_sandbox_status_name(res[i].status), res[i].out_tail);
    }
    fprintf(stdout, "  canonical %d/164, empty %d/164, %.1f s\n", pass, pass_empty, qe_now() - t0);
    CHECK(pass == 164);
    CHECK(pass_empty == 0);
    for (size_t i = 0; i < 2 * docs.n; i++)
        free(progs[i]);
    free(progs);
    free(res);
    qe_docs_free(&docs);
}

int main(void)
{
    setenv("QE_SECRET", "1", 1);
    qe_err e = {0};
    have_py = qe_sandbox_find_python(py, sizeof py, &e) == 0;
    if (!have_py)
        fprintf(stdout, "  skipped: %s\n", e.msg);
    RUN(basic_pass_fail);
    RUN(hostile_contained);
    RUN(humaneval_canonical);
    return test_finish();
}
