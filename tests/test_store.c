/*
 * test_store.c: harness/util/sha256 (FIPS 180-4 vectors) and
 * harness/store: schema/migrations, run keys and resume lookup, unit
 * commits (idempotent, atomic), aggregation against hand-computed values,
 * concurrent writers (fork), merge of shards, and bad-input errors.
 */
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness/store/store.h"
#include "../harness/util/sha256.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static void hex_of(const char *msg, size_t n, char hex[65])
{
    uint8_t d[32];
    char h2[65];
    qe_sha256(msg, n, d);
    qe_sha256_digest_hex(d, hex);
    qe_sha256_hex(msg, n, h2);
    CHECKF(strcmp(hex, h2) == 0, "qe_sha256_hex %s vs %s", h2, hex);
}

TEST(sha256_vectors)
{
    char h[65];
    hex_of("", 0, h);
    CHECKF(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0, "%s", h);
    hex_of("abc", 3, h);
    CHECKF(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "%s", h);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), h);
    CHECKF(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0, "%s", h);
    /* one million 'a', fed in odd-sized pieces to exercise buffering */
    qe_sha256_ctx c;
    qe_sha256_init(&c);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    for (size_t step = 1; left; step = step % 990 + 7) {
        size_t t = step < left ? step : left;
        qe_sha256_update(&c, a, t);
        left -= t;
    }
    uint8_t d[32];
    qe_sha256_final(&c, d);
    qe_sha256_digest_hex(d, h);
    CHECKF(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0, "%s", h);
}

TEST(sha256_file)
{
    const char *p = tmp_path("abc.txt");
    FILE *f = fopen(p, "wb");
    REQUIRE(f, "cannot create %s", p);
    fputs("abc", f);
    fclose(f);
    char h[65];
    qe_err e = {0};
    CHECK(qe_sha256_file(p, h, &e) == 0);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    CHECK(qe_sha256_file(tmp_path("missing"), h, &e) == QE_EIO);
    CHECKF(strstr(e.msg, "missing") != NULL, "%s", e.msg);
}

static qe_run_info run_info(const char *label)
{
    qe_run_info ri = {.label = label, .model_path = "m.gguf", .model_name = "tiny",
                      .model_sha256 = "aa11bb22cc33dd44", .suite = "smoke", .quants = "F16,Q8_0",
                      .threads = 2, .shard_n = 1};
    return ri;
}

static int64_t scalar(qe_store *s, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(qe_store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
        return -999;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static double result_of(qe_store *s, int64_t vid, const char *metric, double *se)
{
    sqlite3_stmt *st;
    double v = NAN;
    sqlite3_prepare_v2(qe_store_db(s),
                       "SELECT value, stderr FROM results WHERE variant_id=? AND metric=?", -1, &st,
                       NULL);
    sqlite3_bind_int64(st, 1, vid);
    sqlite3_bind_text(st, 2, metric, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_double(st, 0);
        if (se)
            *se = sqlite3_column_double(st, 1);
    }
    sqlite3_finalize(st);
    return v;
}

TEST(open_migrate_and_reject)
{
    qe_err e = {0};
    const char *p = tmp_path("a.db");
    qe_store *s = qe_store_open(p, &e);
    REQUIRE(s, "%s", e.msg);
    CHECK(scalar(s, "PRAGMA user_version") == QE_STORE_SCHEMA_VERSION);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(qe_store_db(s), "PRAGMA journal_mode", -1, &st, NULL);
    sqlite3_step(st);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0);
    sqlite3_finalize(st);
    qe_store_close(s);
    s = qe_store_open(p, &e); /* reopen: no migration runs again */
    CHECK(s != NULL);
    CHECK(qe_store_exec(s, "PRAGMA user_version = 99", &e) == 0);
    qe_store_close(s);
    CHECK(qe_store_open(p, &e) == NULL);
    CHECKF(e.code == QE_EVERSION && strstr(e.msg, "99"), "%s", e.msg);
    /* not a database */
    const char *junk = tmp_path("junk.db");
    FILE *f = fopen(junk, "wb");
    fputs("this is not an sqlite file at all, just text padding padding padding", f);
    fclose(f);
    CHECK(qe_store_open(junk, &e) == NULL);
    CHECKF(e.code == QE_EDB && strstr(e.msg, "junk.db"), "%s", e.msg);
    qe_store_close(NULL);
}

TEST(run_key_resume_and_lookup)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(tmp_path("b.db"), &e);
    REQUIRE(s, "%s", e.msg);
    qe_run_info a = run_info("nightly"), b = run_info("other");
    int64_t id1, id2, id3;
    bool resumed;
    CHECK(qe_store_run_begin(s, &a, &id1, &resumed, &e) == 0 && !resumed);
    a.threads = 7; /* threads and shard do not change the key */
    a.shard_i = 1, a.shard_n = 4;
    CHECK(qe_store_run_begin(s, &a, &id2, &resumed, &e) == 0 && resumed && id2 == id1);
    CHECK(qe_store_run_begin(s, &b, &id3, &resumed, &e) == 0 && !resumed && id3 != id1);
    int64_t f;
    CHECK(qe_store_find_run(s, "nightly", &f, &e) == 0 && f == id1);
    CHECK(qe_store_find_run(s, "latest", &f, &e) == 0 && f == id3);
    char key[65];
    qe_store_run_key(&a, key);
    key[8] = '\0';
    CHECK(qe_store_find_run(s, key, &f, &e) == 0 && f == id1);
    CHECK(qe_store_find_run(s, "nope", &f, &e) == QE_ENOTFOUND);
    CHECKF(strstr(e.msg, "nope") != NULL, "%s", e.msg);
    CHECK(strlen(qe_store_git_rev()) > 0);
    int64_t vid;
    qe_variant_info vi = {.name = "Q8_0", .bpw = 8.5, .size_nbytes = 1000};
    CHECK(qe_store_variant_put(s, id1, &vi, &vid, &e) == 0);
    CHECK(qe_store_find_variant(s, id1, "q8_0", &f, &e) == 0 && f == vid);
    CHECK(qe_store_find_variant(s, id1, "Q2_K", &f, &e) == QE_ENOTFOUND);
    CHECKF(strstr(e.msg, "Q8_0") != NULL, "error lists the variants: %s", e.msg);
    qe_store_close(s);
}

/* Fixture: one run, one variant, one nll task, one acc task, one kld unit. */
static void fill(qe_store *s, int64_t *run_id, int64_t *vid)
{
    qe_err e = {0};
    qe_run_info ri = run_info("fx");
    qe_store_run_begin(s, &ri, run_id, NULL, &e);
    qe_variant_info vi = {.name = "Q4_K_M", .bpw = 4.9};
    qe_store_variant_put(s, *run_id, &vi, vid, &e);
}

TEST(unit_commit_and_aggregate)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(tmp_path("c.db"), &e);
    REQUIRE(s, "%s", e.msg);
    int64_t run, vid, t_ppl, t_acc;
    fill(s, &run, &vid);
    qe_task_info tp = {.name = "wiki", .version = "1", .family = "text", .metric = "nll",
                       .protocol = "llama.cpp-ppl ctx=4"};
    qe_task_info ta = {.name = "arith", .version = "1", .family = "math", .metric = "acc"};
    CHECK(qe_store_task_put(s, &tp, &t_ppl, &e) == 0);
    CHECK(qe_store_task_put(s, &ta, &t_acc, &e) == 0);
    int64_t again;
    CHECK(qe_store_task_put(s, &tp, &again, &e) == 0 && again == t_ppl);
    /* token NLLs: item 0 = {1, 1}, item 1 = {1, 3} */
    qe_sample sp[2] = {{.item = 0, .metric = "nll", .value = 2, .value2 = 2, .n_tokens = 2},
                       {.item = 1, .metric = "nll", .value = 4, .value2 = 10, .n_tokens = 2}};
    float k0[2] = {0.1f, 0.2f}, k1[2] = {0.3f, 0.4f};
    qe_kld_chunk kc[2] = {{.item = 0, .n_tokens = 2, .kld = k0, .n_top1_same = 2},
                          {.item = 1, .n_tokens = 2, .kld = k1, .n_top1_same = 1}};
    qe_unit u = {run, vid, t_ppl, 0, 2, 0};
    bool done, written;
    CHECK(qe_store_unit_done(s, &u, &done, &e) == 0 && !done);
    CHECK(qe_store_unit_commit(s, &u, sp, 2, kc, 2, &written, &e) == 0 && written);
    CHECK(qe_store_unit_done(s, &u, &done, &e) == 0 && done);
    /* the same unit again (a concurrent or resumed process): no new rows */
    CHECK(qe_store_unit_commit(s, &u, sp, 2, kc, 2, &written, &e) == 0 && !written);
    CHECK(scalar(s, "SELECT count(*) FROM samples") == 2);
    CHECK(scalar(s, "SELECT count(*) FROM work_units") == 1);
    qe_sample sa[4];
    for (int i = 0; i < 4; i++)
        sa[i] = (qe_sample){.item = i, .metric = "acc", .value = i == 1 ? 0 : 1, .n_tokens = 1};
    qe_unit ua = {run, vid, t_acc, 0, 4, 0};
    CHECK(qe_store_unit_commit(s, &ua, sa, 4, NULL, 0, NULL, &e) == 0);
    CHECK(qe_store_run_finish(s, run, &e) == 0);
    double se;
    /* mean NLL = 6/4 = 1.5; token variance 12/4 - 1.5^2 = 0.75; se = sqrt(0.75/3) = 0.5 */
    CHECK(test_close(result_of(s, vid, "nll_mean", &se), 1.5, 1e-12) && test_close(se, 0.5, 1e-12));
    CHECK(test_close(result_of(s, vid, "ppl", &se), exp(1.5), 1e-12) &&
          test_close(se, exp(1.5) * 0.5, 1e-12));
    /* acc = 3/4; sample sd = sqrt((3 - 4*0.5625)/3) = 0.5; se = 0.5/2 */
    CHECK(test_close(result_of(s, vid, "acc", &se), 0.75, 1e-12) && test_close(se, 0.25, 1e-12));
    /* KLD {0.1,0.2,0.3,0.4}: mean .25, median .25 (interpolated), max .4, top-1 3/4 */
    CHECK(test_close(result_of(s, vid, "kld_mean", NULL), 0.25, 1e-6));
    CHECK(test_close(result_of(s, vid, "kld_median", NULL), 0.25, 1e-6));
    CHECK(test_close(result_of(s, vid, "kld_max", NULL), 0.4, 1e-6));
    CHECK(test_close(result_of(s, vid, "top1", NULL), 0.75, 1e-12));
    CHECK(scalar(s, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL") == 1);
    /* provenance is reachable from every result row */
    CHECK(scalar(s, "SELECT count(*) FROM v_results WHERE model_sha256 = '' OR tool_version = ''"
                    " OR git_rev = ''") == 0);
    CHECK(scalar(s, "SELECT count(*) FROM v_results") ==
          scalar(s, "SELECT count(*) FROM results"));
    qe_store_close(s);
}

TEST(bad_rows_rejected)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(tmp_path("d.db"), &e);
    REQUIRE(s, "%s", e.msg);
    int64_t run, vid, tid;
    fill(s, &run, &vid);
    qe_task_info ta = {.name = "arith", .metric = "acc"};
    qe_store_task_put(s, &ta, &tid, &e);
    qe_unit u = {run, vid, tid, 0, 2, 0};
    qe_sample bad = {.item = 0, .metric = "acc", .value = NAN};
    CHECK(qe_store_unit_commit(s, &u, &bad, 1, NULL, 0, NULL, &e) == QE_ENAN);
    qe_sample outside = {.item = 5, .metric = "acc", .value = 1};
    CHECK(qe_store_unit_commit(s, &u, &outside, 1, NULL, 0, NULL, &e) == QE_EINVAL);
    CHECKF(strstr(e.msg, "item 5") != NULL, "%s", e.msg);
    float k[1] = {INFINITY};
    qe_kld_chunk kc = {.item = 0, .n_tokens = 1, .kld = k, .n_top1_same = 1};
    CHECK(qe_store_unit_commit(s, &u, NULL, 0, &kc, 1, NULL, &e) == QE_ENAN);
    kc.kld = NULL;
    CHECK(qe_store_unit_commit(s, &u, NULL, 0, &kc, 1, NULL, &e) == QE_EINVAL);
    /* nothing half-written: no marker, no rows */
    CHECK(scalar(s, "SELECT count(*) FROM work_units") == 0);
    CHECK(scalar(s, "SELECT count(*) FROM kld") == 0);
    CHECK(scalar(s, "SELECT count(*) FROM samples") == 0);
    /* a strided unit (items 1, 4, 7 of 9) accepts only its slice */
    qe_unit us = {run, vid, tid, 1, 9, 3};
    qe_sample in1 = {.item = 4, .metric = "acc", .value = 1};
    qe_sample out1 = {.item = 5, .metric = "acc", .value = 1};
    CHECK(qe_store_unit_commit(s, &us, &out1, 1, NULL, 0, NULL, &e) == QE_EINVAL);
    CHECK(qe_store_unit_commit(s, &us, &in1, 1, NULL, 0, NULL, &e) == 0);
    bool dn = false;
    CHECK(qe_store_unit_done(s, &us, &dn, &e) == 0 && dn);
    qe_variant_info noname = {.name = ""};
    CHECK(qe_store_variant_put(s, run, &noname, &vid, &e) == QE_EINVAL);
    qe_store_close(s);
}

/* Write units [lo, hi) of task "t" on variant "V" of run "conc". */
static int writer(const char *path, int lo, int hi)
{
    qe_err e = {0};
    qe_store *s = qe_store_open(path, &e);
    if (!s)
        return 1;
    qe_run_info ri = run_info("conc");
    int64_t run, vid, tid;
    qe_variant_info vi = {.name = "V"};
    qe_task_info ti = {.name = "t", .metric = "acc"};
    if (qe_store_run_begin(s, &ri, &run, NULL, &e) || qe_store_variant_put(s, run, &vi, &vid, &e) ||
        qe_store_task_put(s, &ti, &tid, &e))
        return 2;
    for (int u = lo; u < hi; u++) {
        qe_sample sm[10];
        for (int k = 0; k < 10; k++)
            sm[k] = (qe_sample){.item = u * 10 + k, .metric = "acc", .value = (u + k) & 1};
        qe_unit un = {run, vid, tid, u * 10, u * 10 + 10, 0};
        if (qe_store_unit_commit(s, &un, sm, 10, NULL, 0, NULL, &e)) {
            fprintf(stderr, "writer: %s\n", e.msg);
            qe_store_close(s);
            return 3;
        }
    }
    qe_store_close(s);
    return 0;
}

TEST(concurrent_writers)
{
    const char *p = tmp_path("conc.db");
    /* two processes, overlapping ranges [0,60) and [40,100) of 10-item units */
    pid_t a = fork();
    if (a == 0)
        _exit(writer(p, 0, 60));
    pid_t b = fork();
    if (b == 0)
        _exit(writer(p, 40, 100));
    int sa = -1, sb = -1;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    CHECKF(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "writer A status %d", sa);
    CHECKF(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "writer B status %d", sb);
    qe_err e = {0};
    qe_store *s = qe_store_open(p, &e);
    REQUIRE(s, "%s", e.msg);
    CHECK(scalar(s, "SELECT count(*) FROM samples") == 1000);
    CHECK(scalar(s, "SELECT count(*) FROM work_units") == 100);
    CHECK(scalar(s, "SELECT count(*) FROM runs") == 1);
    CHECK(scalar(s, "SELECT count(*) FROM variants") == 1);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(qe_store_db(s), "PRAGMA integrity_check", -1, &st, NULL);
    sqlite3_step(st);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0);
    sqlite3_finalize(st);
    qe_store_close(s);
}

TEST(merge_shards)
{
    /* the whole run in one db vs. the same units split across two shards */
    CHECK(writer(tmp_path("whole.db"), 0, 10) == 0);
    CHECK(writer(tmp_path("s0.db"), 0, 6) == 0);
    CHECK(writer(tmp_path("s1.db"), 4, 10) == 0); /* overlap 4..5: kept once */
    qe_err e = {0};
    qe_store *out = qe_store_open(tmp_path("merged.db"), &e);
    REQUIRE(out, "%s", e.msg);
    int64_t n0 = 0, n1 = 0;
    CHECK(qe_store_merge(out, tmp_path("s0.db"), &n0, &e) == 0);
    CHECK(qe_store_merge(out, tmp_path("s1.db"), &n1, &e) == 0);
    CHECKF(n0 == 60 && n1 == 40, "added %lld + %lld", (long long)n0, (long long)n1);
    CHECK(scalar(out, "SELECT count(*) FROM samples") == 100);
    CHECK(scalar(out, "SELECT count(*) FROM runs") == 1);
    qe_store *whole = qe_store_open(tmp_path("whole.db"), &e);
    REQUIRE(whole, "%s", e.msg);
    qe_store_aggregate(whole, 1, &e);
    int64_t vw, vm;
    qe_store_find_variant(whole, 1, "V", &vw, &e);
    qe_store_find_variant(out, 1, "V", &vm, &e);
    double a = result_of(whole, vw, "acc", NULL), b = result_of(out, vm, "acc", NULL);
    CHECKF(a == b && a == 0.5, "whole %g merged %g", a, b);
    /* merging a non-database is an error naming it */
    CHECK(qe_store_merge(out, tmp_path("junk.db"), NULL, &e) == QE_EDB);
    qe_store_close(whole);
    qe_store_close(out);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qeval_test_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(sha256_vectors);
    RUN(sha256_file);
    RUN(open_migrate_and_reject);
    RUN(run_key_resume_and_lookup);
    RUN(unit_commit_and_aggregate);
    RUN(bad_rows_rejected);
    RUN(concurrent_writers);
    RUN(merge_shards);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
