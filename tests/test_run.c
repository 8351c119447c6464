/*
 * test_run.c: end-to-end tests of `qeval run` on the real stories260K
 * model (the built binary, $QEVAL_BIN, default ./qeval):
 *   - resume: SIGKILL at 5 pseudo-random points; after re-running, the
 *     database content (every table, ids replaced by names, timestamps
 *     left out) equals that of an uninterrupted run;
 *   - concurrency: two processes running the same command on one database
 *     end with exactly the uninterrupted content; a third with another
 *     label at the same time completes too;
 *   - shards: --shard 0/2 and 1/2 into two databases, `qeval merge`d,
 *     equal the uninterrupted content;
 *   - gate: an all-Q2_K recipe fails against a Q8_0 baseline (exit 1), a
 *     re-evaluation of the baseline passes (exit 0), bad usage exits 2;
 *   - report/compare/history commands on the run database;
 *   - below 4 bits: an imatrix collected once (default calibration text or
 *     --calib) with its provenance on every variant, fallbacks stated.
 * The run is small (ctx 64, 16 chunks, copa 16 items, 3 variants) so the
 * whole binary stays well under a minute.
 */
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../harness/store/runner.h"
#include "../harness/store/store.h"
#include "../harness/util/common.h"
#include "../harness/util/sha256.h"
#include "../reports/report.h"
#include "test.h"

static char tmpdir[256];
static const char *qeval_bin;

static const char *tp(const char *name)
{
    static char b[8][512];
    static int k;
    char *p = b[k++ & 7];
    snprintf(p, sizeof b[0], "%s/%s", tmpdir, name);
    return p;
}

/* argv for a small run into db with label (and optional extra args). */
static int build_argv(char **argv, int cap, const char *db, const char *label, const char *quants,
                      const char *extra1, const char *extra2)
{
    static char model[600], text[600];
    snprintf(model, sizeof model, "%s", test_asset("models/stories260K/stories260K.gguf"));
    snprintf(text, sizeof text, "%s", test_asset("datasets/tinystories/tinystories_val.txt"));
    int n = 0;
    const char *a[] = {qeval_bin, "run", model, "--quants", quants, "--tasks", "copa",
                       "--limit", "16", "--ctx", "64", "--unit-chunks", "2", "--text", text,
                       "--threads", "1", "--db", db, "--label", label};
    for (size_t i = 0; i < sizeof a / sizeof a[0] && n < cap - 3; i++)
        argv[n++] = (char *)a[i];
    if (extra1)
        argv[n++] = (char *)extra1;
    if (extra2)
        argv[n++] = (char *)extra2;
    argv[n] = NULL;
    return n;
}

static pid_t spawn(char **argv)
{
    pid_t p = fork();
    if (p == 0) {
        int fd = open("/dev/null", 1);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("QEVAL_QUIET", "1", 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

static int wait_rc(pid_t p)
{
    int st = 0;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_cmd(const char *db, const char *label, const char *quants, const char *e1,
                   const char *e2)
{
    char *argv[32];
    build_argv(argv, 32, db, label, quants, e1, e2);
    return wait_rc(spawn(argv));
}

/* Canonical dump of a database: every row of every table with ids replaced
 * by names and timestamps / host-specific columns left out. */
static char *dump(const char *db)
{
    sqlite3 *h;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(h, 10000);
    static const char *q[] = {
        "SELECT run_key, label, model_sha256, suite, quants, item_limit FROM runs ORDER BY 1",
        "SELECT r.run_key, v.name, v.is_reference, v.bpw, v.size_nbytes, v.type_hist FROM"
        " variants v JOIN runs r ON r.id = v.run_id ORDER BY 1, 2",
        "SELECT name, version, family, data_sha256, protocol, metric FROM tasks ORDER BY 1, 5",
        "SELECT r.run_key, v.name, t.name, s.item, s.metric, s.value, s.value2, s.n_tokens,"
        " s.response, s.extracted, s.prompt_sha, s.ids_sha FROM samples s JOIN variants v ON v.id = s.variant_id JOIN"
        " runs r ON r.id = v.run_id JOIN tasks t ON t.id = s.task_id ORDER BY 1, 2, 3, 4, 5",
        "SELECT r.run_key, v.name, t.name, k.item, k.n_tokens, k.kld_sum, k.top1_same,"
        " hex(k.kld) FROM kld k JOIN variants v ON v.id = k.variant_id JOIN runs r ON r.id ="
        " v.run_id JOIN tasks t ON t.id = k.task_id ORDER BY 1, 2, 3, 4",
        "SELECT r.run_key, v.name, t.name, x.metric, x.value, x.stderr, x.n FROM results x JOIN"
        " variants v ON v.id = x.variant_id JOIN runs r ON r.id = v.run_id JOIN tasks t ON"
        " t.id = x.task_id ORDER BY 1, 2, 3, 4",
        "SELECT r.run_key, v.name, t.name, w.item_lo, w.item_hi, w.item_stride, w.n_rows FROM"
        " work_units w JOIN variants v ON v.id = w.variant_id JOIN runs r ON r.id = w.run_id"
        " JOIN tasks t ON t.id = w.task_id ORDER BY 1, 2, 3, 4, 5, 6",
    };
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(h, q[i], -1, &st, NULL) != SQLITE_OK) {
            fprintf(f, "ERR %s\n", sqlite3_errmsg(h));
            continue;
        }
        fprintf(f, "== table %zu\n", i);
        while (sqlite3_step(st) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(st); c++) {
                if (sqlite3_column_type(st, c) == SQLITE_FLOAT)
                    fprintf(f, "%.17g|", sqlite3_column_double(st, c));
                else {
                    const unsigned char *t = sqlite3_column_text(st, c);
                    fprintf(f, "%s|", t ? (const char *)t : "NULL");
                }
            }
            fputc('\n', f);
        }
        sqlite3_finalize(st);
    }
    fclose(f);
    sqlite3_close(h);
    return buf;
}

static int count_rows(const char *d)
{
    int n = 0;
    for (const char *p = d; (p = strchr(p, '\n')); p++)
        n++;
    return n;
}

static void rm_db(const char *db)
{
    char p[600];
    unlink(db);
    snprintf(p, sizeof p, "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db);
    unlink(p);
}

static char *baseline;
static double baseline_s = 1.0; /* wall time of an uninterrupted run */

TEST(uninterrupted_baseline)
{
    const char *db = tp("base.db");
    double t0 = qe_now();
    CHECK(run_cmd(db, "e2e", "Q8_0,Q4_K_M", NULL, NULL) == 0);
    baseline = dump(db);
    REQUIRE(baseline, "dump");
    /* 3 variants x (16 chunks + 16 copa items x >= 1 metric) */
    CHECKF(count_rows(baseline) > 100, "rows %d", count_rows(baseline));
    CHECK(strstr(baseline, "|Q4_K_M|ppl:tinystories_val.txt|kld_mean|") != NULL);
    CHECK(strstr(baseline, "|copa|") != NULL);
    /* every copa item logs its prompt token-id hash, the same for every
     * variant (same tokenizer, same BOS handling) */
    sqlite3 *h;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(h,
                           "SELECT count(*), count(DISTINCT s.item), count(DISTINCT s.item || "
                           "s.ids_sha), sum(s.ids_sha IS NULL) FROM samples s JOIN tasks t ON "
                           "t.id = s.task_id WHERE t.name = 'copa' AND s.metric = t.metric",
                           -1, &st, NULL);
        if (sqlite3_step(st) == SQLITE_ROW) {
            CHECKF(sqlite3_column_int(st, 0) == 3 * 16 && sqlite3_column_int(st, 1) == 16 &&
                       sqlite3_column_int(st, 2) == 16 && sqlite3_column_int(st, 3) == 0,
                   "rows %d items %d item+ids %d null %d", sqlite3_column_int(st, 0),
                   sqlite3_column_int(st, 1), sqlite3_column_int(st, 2),
                   sqlite3_column_int(st, 3));
        }
        sqlite3_finalize(st);
        sqlite3_close(h);
    }
    /* a second invocation finds the finished run and adds nothing */
    CHECK(run_cmd(db, "e2e", "Q8_0,Q4_K_M", NULL, NULL) == 0);
    char *again = dump(db);
    CHECK(again && strcmp(again, baseline) == 0);
    free(again);
    baseline_s = qe_now() - t0;
    fprintf(stdout, "   (uninterrupted run: %.1f s)\n", baseline_s);
}

TEST(resume_after_sigkill)
{
    REQUIRE(baseline, "needs the baseline");
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int killed = 0;
    for (int trial = 0; trial < 5; trial++) {
        char name[32];
        snprintf(name, sizeof name, "kill%d.db", trial);
        const char *db = tp(name);
        rm_db(db);
        char *argv[32];
        build_argv(argv, 32, db, "e2e", "Q8_0,Q4_K_M", NULL, NULL);
        /* kill at a pseudo-random point inside an uninterrupted run's
         * duration (xorshift), twice in odd trials.  If the first kill came
         * after the run had already finished, start over with half the
         * delay, so every trial really interrupts a run. */
        long span = (long)(baseline_s * 800);
        for (int k = 0; k < 1 + (trial & 1); k++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            long lim = (k ? span / 4 : span) > 100 ? (k ? span / 4 : span) : 100;
            long ms = 30 + (long)(seed % (uint64_t)lim);
            for (int attempt = 0; attempt < 8; attempt++, ms /= 2) {
                pid_t p = spawn(argv);
                struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
                kill(p, SIGKILL);
                int rc = wait_rc(p);
                if (rc == 128 + SIGKILL || k > 0) {
                    killed += k == 0 && rc == 128 + SIGKILL;
                    break;
                }
                rm_db(db); /* finished before the kill: retry earlier */
            }
        }
        CHECKF(wait_rc(spawn(argv)) == 0, "trial %d: resumed run failed", trial);
        char *d = dump(db);
        CHECKF(d && strcmp(d, baseline) == 0, "trial %d: content differs from the uninterrupted "
               "run (%d vs %d rows)", trial, d ? count_rows(d) : -1, count_rows(baseline));
        free(d);
    }
    CHECKF(killed == 5, "only %d of 5 trials interrupted a running process", killed);
}

TEST(concurrent_runs)
{
    REQUIRE(baseline, "needs the baseline");
    const char *db = tp("conc.db");
    char *a1[32], *a2[32], *a3[32];
    build_argv(a1, 32, db, "e2e", "Q8_0,Q4_K_M", NULL, NULL);
    build_argv(a2, 32, db, "e2e", "Q8_0,Q4_K_M", NULL, NULL);
    build_argv(a3, 32, db, "other", "Q8_0", NULL, NULL);
    pid_t p1 = spawn(a1), p2 = spawn(a2), p3 = spawn(a3);
    CHECK(wait_rc(p1) == 0);
    CHECK(wait_rc(p2) == 0);
    CHECK(wait_rc(p3) == 0);
    /* the "e2e" run's rows equal the baseline; the other run is separate */
    const char *sdb = tp("conc_only.db");
    rm_db(sdb);
    sqlite3 *h;
    int orc = sqlite3_open(db, &h); /* REQUIRE evaluates its condition twice */
    REQUIRE(orc == SQLITE_OK, "open");
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL);
    sqlite3_step(st);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0);
    sqlite3_finalize(st);
    sqlite3_prepare_v2(h, "SELECT count(*) FROM runs", -1, &st, NULL);
    sqlite3_step(st);
    CHECK(sqlite3_column_int(st, 0) == 2);
    sqlite3_finalize(st);
    /* delete the other run's rows in a copy, then compare */
    char sql[800];
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", sdb);
    CHECK(sqlite3_exec(h, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    orc = sqlite3_open(sdb, &h);
    REQUIRE(orc == SQLITE_OK, "open copy");
    CHECK(sqlite3_exec(h,
                       "DELETE FROM samples WHERE variant_id IN (SELECT v.id FROM variants v JOIN"
                       " runs r ON r.id=v.run_id WHERE r.label='other');"
                       "DELETE FROM kld WHERE variant_id IN (SELECT v.id FROM variants v JOIN runs"
                       " r ON r.id=v.run_id WHERE r.label='other');"
                       "DELETE FROM results WHERE variant_id IN (SELECT v.id FROM variants v JOIN"
                       " runs r ON r.id=v.run_id WHERE r.label='other');"
                       "DELETE FROM work_units WHERE run_id IN (SELECT id FROM runs WHERE"
                       " label='other');"
                       "DELETE FROM variants WHERE run_id IN (SELECT id FROM runs WHERE"
                       " label='other');"
                       "DELETE FROM runs WHERE label='other';",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    char *d = dump(sdb);
    CHECKF(d && strcmp(d, baseline) == 0, "concurrent content differs (%d vs %d rows)",
           d ? count_rows(d) : -1, count_rows(baseline));
    free(d);
}

TEST(shards_merge)
{
    REQUIRE(baseline, "needs the baseline");
    const char *s0 = tp("shard0.db"), *s1 = tp("shard1.db"), *out = tp("merged.db");
    CHECK(run_cmd(s0, "e2e", "Q8_0,Q4_K_M", "--shard", "0/2") == 0);
    CHECK(run_cmd(s1, "e2e", "Q8_0,Q4_K_M", "--shard", "1/2") == 0);
    char *d0 = dump(s0);
    CHECK(d0 && count_rows(d0) < count_rows(baseline));
    free(d0);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s' merge '%s' '%s' '%s' >/dev/null 2>&1", qeval_bin, out, s0,
             s1);
    CHECK(system(cmd) == 0);
    char *d = dump(out);
    CHECKF(d && strcmp(d, baseline) == 0, "merged content differs (%d vs %d rows)",
           d ? count_rows(d) : -1, count_rows(baseline));
    free(d);
    snprintf(cmd, sizeof cmd, "'%s' merge '%s' >/dev/null 2>&1", qeval_bin, out);
    CHECK(WEXITSTATUS(system(cmd)) == 2);
}

/* Run a shell command line (printf-style); its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
    char cmd[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(gate_degraded_recipe)
{
    const char *db = tp("gate.db"), *recipe = tp("allq2k.json");
    FILE *f = fopen(recipe, "w");
    REQUIRE(f, "recipe");
    fputs("{\"name\": \"allq2k\", \"rules\": [{\"match\": \".*\", \"type\": \"q2_K\"}]}\n", f);
    fclose(f);
    CHECK(run_cmd(db, "base", "Q8_0", NULL, NULL) == 0);
    CHECK(run_cmd(db, "cand", "", "--recipe", recipe) == 0);
    CHECK(run_cmd(db, "rebase", "Q8_0", NULL, NULL) == 0);
    /* degraded: beyond threshold and significant -> exit 1 */
    CHECK(sh("'%s' gate --db '%s' --baseline base:Q8_0 --candidate 'cand:recipe:allq2k' >'%s' "
             "2>&1", qeval_bin, db, tp("gate1.out")) == 1);
    char *txt = NULL;
    size_t n;
    qe_err e = {0};
    if (qe_read_file(tp("gate1.out"), &txt, &n, &e) == 0) {
        CHECKF(strstr(txt, "REGRESSION") && strstr(txt, "gate: FAIL"), "%s", txt);
        free(txt);
    }
    /* the baseline re-evaluated -> identical numbers -> exit 0 */
    CHECK(sh("'%s' gate --db '%s' --baseline base:Q8_0 --candidate rebase:Q8_0 >'%s' 2>&1", qeval_bin, db, tp("gate2.out")) == 0);
    /* whole runs, variants matched by name */
    CHECK(sh("'%s' gate --db '%s' --baseline base --candidate rebase >/dev/null 2>&1", qeval_bin, db) == 0);
    /* usage errors -> 2 */
    CHECK(sh("'%s' gate --db '%s' >/dev/null 2>&1", qeval_bin, db) == 2);
    CHECK(sh("'%s' gate --db '%s' --baseline nosuchrun >/dev/null 2>&1", qeval_bin, db) == 2);
    CHECK(sh("'%s' gate --db '%s' --baseline base --max-kld abc >/dev/null 2>&1", qeval_bin, db) == 2);
    /* report/compare/history on the real run */
    CHECK(sh("'%s' report --db '%s' --run cand --format html -o '%s' 2>/dev/null", qeval_bin, db, tp("r.html")) == 0);
    if (qe_read_file(tp("r.html"), &txt, &n, &e) == 0) {
        CHECK(strstr(txt, "id=\"cliff-kld\"") && !strstr(txt, "http"));
        free(txt);
    }
    CHECK(sh("'%s' report --db '%s' --format card >/dev/null 2>&1", qeval_bin, db) == 0);
    CHECK(sh("'%s' report --db '%s' --format pdf >/dev/null 2>&1", qeval_bin, db) == 2);
    CHECK(sh("'%s' compare --db '%s' base:Q8_0 'cand:recipe:allq2k' >/dev/null 2>&1", qeval_bin, db) == 0);
    CHECK(sh("'%s' history --db '%s' --model stories260K --variant Q8_0 --metric kld_mean "
             ">'%s' 2>&1", qeval_bin, db, tp("hist.out")) == 0);
    if (qe_read_file(tp("hist.out"), &txt, &n, &e) == 0) {
        CHECKF(count_rows(txt) == 3, "history:\n%s", txt); /* header + base + rebase */
        free(txt);
    }
}

/* qe_store_eval_artifact (the `qeval eval FILE.gguf` hook): a Q4_K_M file
 * written by `qeval quantize` is stored as "Q4_K_M@<sha8>" and its numbers
 * equal those of the same mix built in memory by `qeval run`. */
TEST(eval_artifact)
{
    REQUIRE(baseline, "needs the baseline");
    const char *gguf = tp("q4km.gguf"), *db = tp("artifact.db");
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' --type Q4_K_M -o '%s' >/dev/null 2>&1",
             qeval_bin, test_asset("models/stories260K/stories260K.gguf"), gguf);
    REQUIRE(system(cmd) == 0, "qeval quantize failed: %s", cmd);
    qe_run_opts o;
    qe_run_opts_init(&o);
    o.tasks = "copa";
    o.limit = 16;
    o.n_ctx = 64;
    o.unit_chunks = 2;
    o.threads = 1;
    o.text_path = test_asset("datasets/tinystories/tinystories_val.txt");
    qe_err e = {0};
    int64_t run = -1;
    setenv("QEVAL_QUIET", "1", 1);
    int rc = qe_store_eval_artifact(gguf, test_asset("models/stories260K/stories260K.gguf"), db,
                                    &o, &run, &e);
    REQUIRE(rc == 0, "%s", e.msg);
    qe_store *s = qe_store_open(db, &e);
    REQUIRE(s, "%s", e.msg);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(qe_store_db(s),
                       "SELECT v.name, v.artifact_sha256, x.value FROM variants v JOIN results x"
                       " ON x.variant_id = v.id WHERE v.is_reference = 0 AND x.metric ="
                       " 'kld_mean'",
                       -1, &st, NULL);
    char name[96] = "", sha[65] = "";
    double kld = NAN;
    if (sqlite3_step(st) == SQLITE_ROW) {
        qe_strlcpy(name, (const char *)sqlite3_column_text(st, 0), sizeof name);
        qe_strlcpy(sha, (const char *)sqlite3_column_text(st, 1), sizeof sha);
        kld = sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    qe_store_close(s);
    char want[65];
    qe_sha256_file(gguf, want, &e);
    char wname[96];
    snprintf(wname, sizeof wname, "Q4_K_M@%.8s", want);
    CHECKF(strcmp(name, wname) == 0, "variant '%s', expected '%s'", name, wname);
    CHECK(strcmp(sha, want) == 0);
    /* the in-memory Q4_K_M of the baseline run has the same KLD */
    char line[200];
    snprintf(line, sizeof line, "|Q4_K_M|ppl:tinystories_val.txt|kld_mean|%.17g|", kld);
    CHECKF(strstr(baseline, line) != NULL, "kld %.17g of the file differs from the in-memory "
           "variant's", kld);
}

/* Flips and the multiple-choice margin are exact: recomputed here from the
 * samples table with SQL, they equal the numbers `qeval report --format
 * json` prints; the reference against itself has no flips and margin
 * delta 0. */
TEST(flips_and_margin_from_samples)
{
    REQUIRE(baseline, "needs the baseline");
    const char *db = tp("base.db"), *js = tp("base.json");
    CHECK(sh("'%s' report --db '%s' --format json -o '%s' 2>/dev/null", qeval_bin, db, js) == 0);
    char *txt = NULL;
    size_t n;
    qe_err e = {0};
    REQUIRE(qe_read_file(js, &txt, &n, &e) == 0, "%s", e.msg);
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    REQUIRE(root, "json parse");
    sqlite3 *h;
    REQUIRE(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open");
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h,
                       "SELECT b.name, t.name, sa.metric, count(*),"
                       " total(sa.value = 1 AND sb.value = 0), total(sa.value = 0 AND sb.value = 1),"
                       " avg(sb.value - sa.value)"
                       " FROM samples sa JOIN samples sb ON sb.task_id = sa.task_id AND sb.item ="
                       " sa.item AND sb.metric = sa.metric JOIN variants a ON a.id = sa.variant_id"
                       " JOIN variants b ON b.id = sb.variant_id JOIN tasks t ON t.id = sa.task_id"
                       " WHERE a.is_reference = 1 AND b.is_reference = 0 AND a.run_id = b.run_id"
                       " AND sa.metric IN ('acc', 'acc_norm', 'll_margin')"
                       " GROUP BY b.name, t.name, sa.metric",
                       -1, &st, NULL);
    int n_checked = 0, n_margin = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *var = (const char *)sqlite3_column_text(st, 0);
        const char *task = (const char *)sqlite3_column_text(st, 1);
        const char *metric = (const char *)sqlite3_column_text(st, 2);
        double cnt = sqlite3_column_double(st, 3), rw = sqlite3_column_double(st, 4);
        double wr = sqlite3_column_double(st, 5), md = sqlite3_column_double(st, 6);
        cJSON *v, *found = NULL;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "variants"))
        {
            if (strcmp(cJSON_GetObjectItem(v, "name")->valuestring, var))
                continue;
            cJSON *t;
            cJSON_ArrayForEach(t, cJSON_GetObjectItem(v, "tasks"))
            {
                if (!strcmp(cJSON_GetObjectItem(t, "task")->valuestring, task) &&
                    !strcmp(cJSON_GetObjectItem(t, "metric")->valuestring, metric))
                    found = t;
            }
        }
        CHECKF(found, "%s %s %s not in the JSON report", var, task, metric);
        if (!found)
            continue;
        CHECK(cJSON_GetObjectItem(found, "n")->valuedouble == cnt);
        if (!strcmp(metric, "ll_margin")) {
            double jd = cJSON_GetObjectItem(found, "delta")->valuedouble;
            CHECKF(fabs(jd - md) <= 1e-9 * (1 + fabs(md)), "%s margin delta %.17g vs SQL %.17g",
                   var, jd, md);
            n_margin++;
        } else {
            CHECKF(cJSON_GetObjectItem(found, "right_to_wrong")->valuedouble == rw &&
                       cJSON_GetObjectItem(found, "wrong_to_right")->valuedouble == wr,
                   "%s %s %s: flips differ from SQL %g/%g", var, task, metric, rw, wr);
            n_checked++;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    cJSON_Delete(root);
    /* Q8_0 and Q4_K_M x copa x (acc, ll_margin) */
    CHECKF(n_checked >= 2 && n_margin == 2, "checked %d flips, %d margins", n_checked, n_margin);
    /* the reference against itself */
    qe_store *s = qe_store_open(db, &e);
    REQUIRE(s, "%s", e.msg);
    int64_t run, ref;
    REQUIRE(qe_report_parse_ref(s, "e2e:F32", &run, &ref, &e) == 0, "%s", e.msg);
    qe_cmp_row *rows;
    int nr;
    REQUIRE(qe_compare_variants(s, ref, ref, 0.05, &rows, &nr, &e) == 0, "%s", e.msg);
    int n_acc = 0;
    for (int i = 0; i < nr; i++) {
        CHECKF(rows[i].delta == 0, "%s %s delta %g", rows[i].task, rows[i].metric, rows[i].delta);
        if (rows[i].n_rw >= 0) {
            CHECK(rows[i].n_rw == 0 && rows[i].n_wr == 0);
            n_acc++;
        }
    }
    CHECK(n_acc >= 1);
    free(rows);
    qe_store_close(s);
}

/* Teacher-forced divergence of a generation task (lambada, 8 items) is
 * exact: the mean KLD and top-1 agreement recomputed with SQL from the kld
 * rows (and from their float blobs) equal the report's per-family and
 * per-task numbers; the reference stores no rows for itself. */
TEST(teacher_forced_from_samples)
{
    const char *db = tp("tf.db"), *js = tp("tf.json");
    char model[600], text[600];
    snprintf(model, sizeof model, "%s", test_asset("models/stories260K/stories260K.gguf"));
    snprintf(text, sizeof text, "%s", test_asset("datasets/tinystories/tinystories_val.txt"));
    CHECK(sh("QEVAL_QUIET=1 '%s' run '%s' --quants Q4_K_M --tasks lambada --limit 8 --ctx 64 "
             "--text '%s' --threads 1 --db '%s' --label tf >/dev/null 2>&1",
             qeval_bin, model, text, db) == 0);
    CHECK(sh("'%s' report --db '%s' --format json -o '%s' 2>/dev/null", qeval_bin, db, js) == 0);
    sqlite3 *h;
    REQUIRE(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open");
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h,
                       "SELECT v.is_reference, count(*), total(k.kld_sum), total(k.n_tokens),"
                       " total(k.top1_same) FROM kld k JOIN variants v ON v.id = k.variant_id"
                       " JOIN tasks t ON t.id = k.task_id WHERE t.name = 'lambada'"
                       " GROUP BY v.is_reference",
                       -1, &st, NULL);
    int groups = 0;
    double kld = NAN, top1 = NAN, items = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        groups++;
        CHECK(sqlite3_column_int(st, 0) == 0); /* only the candidate has rows */
        items = sqlite3_column_double(st, 1);
        kld = sqlite3_column_double(st, 2) / sqlite3_column_double(st, 3);
        top1 = sqlite3_column_double(st, 4) / sqlite3_column_double(st, 3);
    }
    sqlite3_finalize(st);
    CHECKF(groups == 1 && items >= 1 && items <= 8, "groups %d items %g", groups, items);
    /* each row's blob holds its per-token values: they add up to kld_sum,
     * and first_diff samples match the rows one to one */
    sqlite3_prepare_v2(h,
                       "SELECT k.kld, k.kld_sum, k.n_tokens, k.top1_same, s.value, s.n_tokens"
                       " FROM kld k JOIN tasks t ON t.id = k.task_id LEFT JOIN samples s ON"
                       " s.variant_id = k.variant_id AND s.task_id = k.task_id AND s.item ="
                       " k.item AND s.metric = 'tf_first_diff' WHERE t.name = 'lambada'",
                       -1, &st, NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const float *b = sqlite3_column_blob(st, 0);
        int nt = sqlite3_column_int(st, 2), nb = sqlite3_column_bytes(st, 0);
        double sum = 0;
        for (int i = 0; b && i < nb / 4; i++)
            sum += b[i];
        CHECKF(nb == 4 * nt && fabs(sum - sqlite3_column_double(st, 1)) <=
                                   1e-6 * (1 + sqlite3_column_double(st, 1)),
               "blob %d bytes for %d tokens, sum %g vs %g", nb, nt, sum,
               sqlite3_column_double(st, 1));
        CHECK(sqlite3_column_type(st, 4) != SQLITE_NULL && sqlite3_column_int(st, 5) == nt);
        double fd = sqlite3_column_double(st, 4);
        CHECK(fd >= 0 && fd <= nt);
        /* no disagreement before first_diff: then top1 >= first_diff */
        CHECK(sqlite3_column_int(st, 3) >= (int)fd);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    char *txt = NULL;
    size_t n;
    qe_err e = {0};
    REQUIRE(qe_read_file(js, &txt, &n, &e) == 0, "%s", e.msg);
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    REQUIRE(root, "json");
    int found = 0;
    cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "variants"))
    {
        if (strcmp(cJSON_GetObjectItem(v, "name")->valuestring, "Q4_K_M"))
            continue;
        cJSON *g = cJSON_GetObjectItem(cJSON_GetObjectItem(v, "teacher_forced"), "general");
        REQUIRE(g, "no teacher_forced.general in the JSON report");
        double jk = cJSON_GetObjectItem(g, "kld_mean")->valuedouble;
        double jt = cJSON_GetObjectItem(g, "top1")->valuedouble;
        CHECKF(fabs(jk - kld) <= 1e-12 * kld && fabs(jt - top1) <= 1e-12, "json %g %g sql %g %g",
               jk, jt, kld, top1);
        cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(v, "tasks"))
        {
            if (!strcmp(cJSON_GetObjectItem(t, "task")->valuestring, "lambada") &&
                !strcmp(cJSON_GetObjectItem(t, "metric")->valuestring, "kld_mean")) {
                found++;
                CHECK(fabs(cJSON_GetObjectItem(t, "value")->valuedouble - kld) <= 1e-12 * kld);
                CHECK(cJSON_GetObjectItem(t, "n")->valuedouble == items);
            }
        }
    }
    CHECK(found == 1);
    cJSON_Delete(root);
}

/* --time-budget prints a plan whose --limit the run then uses (no timing
 * assertion: only that the plan and the stored run agree); a bad duration
 * is a usage error. */
TEST(time_budget_plan)
{
    const char *db = tp("budget.db"), *o = tp("budget.out");
    char model[600], text[600];
    snprintf(model, sizeof model, "%s", test_asset("models/stories260K/stories260K.gguf"));
    snprintf(text, sizeof text, "%s", test_asset("datasets/tinystories/tinystories_val.txt"));
    CHECK(sh("QEVAL_QUIET=1 '%s' run '%s' --quants Q8_0 --tasks copa --ctx 64 --text '%s' "
             "--threads 1 --db '%s' --time-budget 20s >'%s' 2>&1",
             qeval_bin, model, text, db, o) == 0);
    char *txt = NULL;
    size_t n;
    qe_err e = {0};
    REQUIRE(qe_read_file(o, &txt, &n, &e) == 0, "%s", e.msg);
    const char *p = strstr(txt, "plan: --limit ");
    long long L = p ? atoll(p + 14) : -1;
    CHECKF(p && L >= 2 && strstr(txt, "plan: copa") && strstr(txt, "MDE (10% flips)"), "%s", txt);
    free(txt);
    sqlite3 *h;
    REQUIRE(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open");
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "SELECT item_limit, finished_at IS NOT NULL FROM runs", -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == L &&
          sqlite3_column_int(st, 1) == 1);
    sqlite3_finalize(st);
    sqlite3_close(h);
    CHECK(sh("'%s' run '%s' --time-budget 1x >/dev/null 2>&1", qeval_bin, model) == 2);
    CHECK(sh("'%s' run '%s' --time-budget 0s >/dev/null 2>&1", qeval_bin, model) == 2);
}

/* One row per variant: name|imatrix_dataset|imatrix_chunks|imatrix_sha256 */
static char *variant_provenance(const char *db)
{
    sqlite3 *h;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_stmt *st;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (sqlite3_prepare_v2(h,
                           "SELECT name, imatrix_dataset, imatrix_chunks, imatrix_sha256 FROM"
                           " variants ORDER BY id",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW)
            fprintf(f, "%s|%s|%d|%s\n", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                    sqlite3_column_int(st, 2), sqlite3_column_text(st, 3));
        sqlite3_finalize(st);
    }
    fclose(f);
    sqlite3_close(h);
    return buf;
}

/* Below 4 bits: IQ2_M/IQ1_M need an importance matrix; without --imatrix
 * or --calib `run` collects one once from the default calibration text
 * (FLORES-200 eng_Latn, not the evaluation text), stores its provenance
 * with every quantized variant, and says which tensors fell back
 * (stories260K's 64/172-wide rows fit no 256 block).  With --calib the
 * named text is used. */
TEST(low_bit_imatrix_provenance)
{
    const char *db = tp("lowbit.db"), *out = tp("lowbit.out"), *err = tp("lowbit.err");
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "QEVAL_QUIET=0 '%s' run '%s' --quants Q4_K_M,IQ2_M,IQ1_M --limit 2 --ctx 64 --text '%s' "
             "--threads 2 --db '%s' >'%s' 2>'%s'",
             qeval_bin, test_asset("models/stories260K/stories260K.gguf"),
             test_asset("datasets/tinystories/tinystories_val.txt"), db, out, err);
    int rc = system(cmd);
    char *o = test_slurp(out, NULL), *e = test_slurp(err, NULL);
    REQUIRE(rc == 0 && o && e, "qeval run failed (%d): %s", rc, e ? e : "");
    /* every variant has a row in the table */
    CHECKF(strstr(o, "\nQ4_K_M ") && strstr(o, "\nIQ2_M ") && strstr(o, "\nIQ1_M "), "%s", o);
    /* the collection is announced once, with the default text named */
    CHECKF(strstr(e, "needs an importance matrix: collecting one from the default calibration "
                     "text") && strstr(e, "eng_Latn.devtest"),
           "%s", e);
    const char *first = strstr(e, "imatrix: ");
    CHECKF(first && !strstr(first + 1, "imatrix: "), "imatrix collected more than once: %s", e);
    /* the fallbacks are stated plainly */
    CHECKF(strstr(e, "IQ2_M: 36 of 48 tensors fell back") &&
               strstr(e, "iq2_s -> iq4_nl (e.g. blk.0.attn_q.weight)") &&
               strstr(e, "iq2_s -> f16 (e.g. blk.0.ffn_down.weight)"),
           "%s", e);
    char *pv = variant_provenance(db);
    REQUIRE(pv, "no variants");
    /* the reference has none; every quantized variant the same imatrix */
    char sha[65] = "";
    int n_q = 0;
    for (char *line = strtok(pv, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], ds[256], hx[65];
        int chunks = 0;
        if (sscanf(line, "%63[^|]|%255[^|]|%d|%64s", name, ds, &chunks, hx) == 4) {
            CHECKF(strcmp(ds, "eng_Latn.devtest") == 0 && chunks > 100 && strlen(hx) == 64,
                   "%s", line);
            if (!sha[0])
                qe_strlcpy(sha, hx, sizeof sha);
            CHECKF(strcmp(sha, hx) == 0, "variants with different imatrices: %s", line);
            n_q++;
        } else {
            CHECKF(strncmp(line, "F32||0|", 7) == 0, "reference row '%s'", line);
        }
    }
    CHECKF(n_q == 3, "%d quantized variants with provenance", n_q);
    free(pv);
    free(o);
    free(e);
    /* --calib: that text, named */
    const char *db2 = tp("lowbit2.db");
    snprintf(cmd, sizeof cmd,
             "QEVAL_QUIET=0 '%s' run '%s' --quants IQ2_M --limit 2 --ctx 64 --text '%s' --calib '%s' "
             "--threads 2 --db '%s' >/dev/null 2>'%s'",
             qeval_bin, test_asset("models/stories260K/stories260K.gguf"),
             test_asset("datasets/tinystories/tinystories_val.txt"),
             test_asset("testdata/llamacpp/text-eng.txt"), db2, err);
    rc = system(cmd);
    e = test_slurp(err, NULL);
    REQUIRE(rc == 0, "qeval run --calib failed (%d): %s", rc, e ? e : "");
    CHECKF(e && !strstr(e, "default calibration"), "%s", e);
    free(e);
    pv = variant_provenance(db2);
    CHECKF(pv && strstr(pv, "IQ2_M|text-eng.txt|"), "%s", pv ? pv : "");
    free(pv);
}

int main(void)
{
    qeval_bin = getenv("QEVAL_BIN");
    static char abs_bin[600];
    if (!qeval_bin || !*qeval_bin)
        qeval_bin = "./qeval";
    if (qeval_bin[0] != '/' && realpath(qeval_bin, abs_bin))
        qeval_bin = abs_bin;
    if (access(qeval_bin, X_OK) != 0 ||
        access(test_asset("models/stories260K/stories260K.gguf"), R_OK) != 0) {
        fprintf(stdout, "skip: needs %s and the stories260K assets\n", qeval_bin);
        return test_finish();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qeval_test_run_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(uninterrupted_baseline);
    RUN(flips_and_margin_from_samples);
    RUN(teacher_forced_from_samples);
    RUN(time_budget_plan);
    RUN(resume_after_sigkill);
    RUN(concurrent_runs);
    RUN(shards_merge);
    RUN(gate_degraded_recipe);
    RUN(eval_artifact);
    RUN(low_bit_imatrix_provenance);
    free(baseline);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
