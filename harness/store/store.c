/*
 * store.c: schema, migrations and writers of the results database (see
 * store.h for the tables and the concurrency/resume contract).
 */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/sha256.h"

struct qe_store {
    sqlite3 *db;
    char path[1024];
};

/* ---------------------------------------------------------------- schema */

/* Migration k takes user_version k to k+1.  Never edit a shipped entry:
 * append a new one and bump QE_STORE_SCHEMA_VERSION. */
static const char *const migrations[QE_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1: the initial schema */
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY,"
    "  run_key TEXT NOT NULL UNIQUE,"
    "  label TEXT NOT NULL DEFAULT '',"
    "  model_path TEXT NOT NULL DEFAULT '',"
    "  model_name TEXT NOT NULL DEFAULT '',"
    "  model_sha256 TEXT NOT NULL DEFAULT '',"
    "  imatrix_sha256 TEXT NOT NULL DEFAULT '',"
    "  suite TEXT NOT NULL DEFAULT '',"
    "  quants TEXT NOT NULL DEFAULT '',"
    "  recipes_sha256 TEXT NOT NULL DEFAULT '',"
    "  item_limit INTEGER NOT NULL DEFAULT 0,"
    "  args TEXT NOT NULL DEFAULT '',"
    "  tool_version TEXT NOT NULL DEFAULT '',"
    "  git_rev TEXT NOT NULL DEFAULT '',"
    "  host TEXT NOT NULL DEFAULT '',"
    "  threads INTEGER NOT NULL DEFAULT 0,"
    "  shard TEXT NOT NULL DEFAULT '',"
    "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    "  finished_at TEXT);"
    "CREATE TABLE variants("
    "  id INTEGER PRIMARY KEY,"
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  name TEXT NOT NULL,"
    "  is_reference INTEGER NOT NULL DEFAULT 0,"
    "  recipe TEXT NOT NULL DEFAULT '',"
    "  recipe_sha256 TEXT NOT NULL DEFAULT '',"
    "  artifact_sha256 TEXT NOT NULL DEFAULT '',"
    "  bpw REAL,"
    "  size_nbytes INTEGER,"
    "  n_params INTEGER,"
    "  type_hist TEXT NOT NULL DEFAULT '',"
    "  UNIQUE(run_id, name));"
    "CREATE TABLE tasks("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  version TEXT NOT NULL DEFAULT '',"
    "  family TEXT NOT NULL DEFAULT '',"
    "  language TEXT NOT NULL DEFAULT '',"
    "  data_sha256 TEXT NOT NULL DEFAULT '',"
    "  protocol TEXT NOT NULL DEFAULT '',"
    "  metric TEXT NOT NULL DEFAULT '',"
    "  UNIQUE(name, version, data_sha256, protocol));"
    "CREATE TABLE samples("
    "  variant_id INTEGER NOT NULL REFERENCES variants(id),"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  item INTEGER NOT NULL,"
    "  metric TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  value2 REAL NOT NULL DEFAULT 0,"
    "  n_tokens INTEGER NOT NULL DEFAULT 1,"
    "  response TEXT,"
    "  extracted TEXT,"
    "  prompt_sha TEXT,"
    "  ids_sha TEXT,"
    "  PRIMARY KEY(variant_id, task_id, item, metric)) WITHOUT ROWID;"
    "CREATE TABLE kld("
    "  variant_id INTEGER NOT NULL REFERENCES variants(id),"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  item INTEGER NOT NULL,"
    "  n_tokens INTEGER NOT NULL,"
    "  kld_sum REAL NOT NULL,"
    "  top1_same INTEGER NOT NULL,"
    "  kld BLOB NOT NULL,"
    "  PRIMARY KEY(variant_id, task_id, item)) WITHOUT ROWID;"
    "CREATE TABLE results("
    "  variant_id INTEGER NOT NULL REFERENCES variants(id),"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  metric TEXT NOT NULL,"
    "  value REAL,"
    "  stderr REAL,"
    "  n INTEGER NOT NULL,"
    "  PRIMARY KEY(variant_id, task_id, metric)) WITHOUT ROWID;"
    "CREATE TABLE work_units("
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  variant_id INTEGER NOT NULL REFERENCES variants(id),"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  item_lo INTEGER NOT NULL,"
    "  item_hi INTEGER NOT NULL,"
    "  item_stride INTEGER NOT NULL DEFAULT 0,"
    "  n_rows INTEGER NOT NULL,"
    "  done_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    "  PRIMARY KEY(run_id, variant_id, task_id, item_lo, item_hi, item_stride)) WITHOUT ROWID;"
    /* every result row with its provenance (reports read this) */
    "CREATE VIEW v_results AS SELECT"
    "  r.id AS run_id, r.run_key, r.label, r.model_name, r.model_sha256, r.tool_version,"
    "  r.git_rev, r.host, r.threads, r.imatrix_sha256, r.created_at,"
    "  v.id AS variant_id, v.name AS variant, v.is_reference, v.bpw, v.size_nbytes,"
    "  t.id AS task_id, t.name AS task, t.version AS task_version, t.family, t.language,"
    "  t.data_sha256, t.protocol, t.metric AS primary_metric,"
    "  x.metric, x.value, x.stderr, x.n"
    "  FROM results x JOIN variants v ON v.id = x.variant_id JOIN runs r ON r.id = v.run_id"
    "  JOIN tasks t ON t.id = x.task_id;"
    "CREATE VIEW v_samples AS SELECT"
    "  v.run_id, v.name AS variant, t.name AS task, t.family, s.item, s.metric, s.value,"
    "  s.value2, s.n_tokens, s.response, s.extracted, s.prompt_sha, s.ids_sha"
    "  FROM samples s JOIN variants v ON v.id = s.variant_id JOIN tasks t ON t.id = s.task_id;",
    /* 1 -> 2: each variant's importance-matrix provenance */
    "ALTER TABLE variants ADD COLUMN imatrix_dataset TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE variants ADD COLUMN imatrix_chunks INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE variants ADD COLUMN imatrix_sha256 TEXT NOT NULL DEFAULT '';",
};

/* ------------------------------------------------------------- helpers */

static int db_error(qe_store *s, qe_err *err, int rc, const char *what)
{
    return qe_err_set(err, QE_EDB, "%s: %s: %s (sqlite %d)", s->path, what,
                      s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), rc);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* BEGIN IMMEDIATE with retries on BUSY (beyond the busy timeout). */
static int tx_begin(qe_store *s, qe_err *err)
{
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || attempt >= 50)
            return db_error(s, err, rc, "BEGIN IMMEDIATE");
        sleep_ms(20 + 10 * (attempt % 10));
    }
}

static int tx_commit(qe_store *s, qe_err *err)
{
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if (rc != SQLITE_BUSY || attempt >= 50) {
            qe_err_set(err, QE_EDB, "%s: COMMIT: %s", s->path, sqlite3_errmsg(s->db));
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return QE_EDB;
        }
        sleep_ms(20);
    }
}

static void tx_rollback(qe_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int prep(qe_store *s, const char *sql, sqlite3_stmt **st, qe_err *err)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK)
        return db_error(s, err, rc, "prepare");
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_TRANSIENT);
}

static int user_version(qe_store *s, int *v, qe_err *err)
{
    sqlite3_stmt *st;
    int rc = prep(s, "PRAGMA user_version", &st, err);
    if (rc)
        return rc;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return db_error(s, err, rc, "reading user_version");
    }
    *v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

static int migrate(qe_store *s, qe_err *err)
{
    int v, rc;
    if ((rc = user_version(s, &v, err)))
        return rc;
    if (v > QE_STORE_SCHEMA_VERSION)
        return qe_err_set(err, QE_EVERSION,
                          "%s: schema version %d is newer than this qeval supports (%d)", s->path,
                          v, QE_STORE_SCHEMA_VERSION);
    if (v == QE_STORE_SCHEMA_VERSION)
        return 0;
    if ((rc = tx_begin(s, err)))
        return rc;
    /* re-read under the write lock: another process may have migrated */
    if ((rc = user_version(s, &v, err)))
        goto fail;
    for (; v < QE_STORE_SCHEMA_VERSION; v++) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, migrations[v], NULL, NULL, &msg) != SQLITE_OK) {
            rc = qe_err_set(err, QE_EDB, "%s: migration %d -> %d: %s", s->path, v, v + 1,
                            msg ? msg : "?");
            sqlite3_free(msg);
            goto fail;
        }
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(s->db, pragma, NULL, NULL, NULL) != SQLITE_OK) {
            rc = db_error(s, err, SQLITE_ERROR, "setting user_version");
            goto fail;
        }
    }
    return tx_commit(s, err);
fail:
    tx_rollback(s);
    return rc;
}

/* ---------------------------------------------------------- open/close */

qe_store *qe_store_open(const char *path, qe_err *err)
{
    qe_store *s = calloc(1, sizeof *s);
    if (!s) {
        qe_err_set(err, QE_ENOMEM, "%s: out of memory opening the database", path);
        return NULL;
    }
    qe_strlcpy(s->path, path, sizeof s->path);
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        db_error(s, err, rc, "cannot open database");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 60000);
    /* WAL: readers never block the writer; NORMAL sync is durable at
     * checkpoints and never corrupts (a crash may lose the last commit,
     * which resume then redoes). */
    char *msg = NULL;
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg);
        if (rc == SQLITE_OK)
            break;
        if (rc != SQLITE_BUSY || attempt > 100) {
            qe_err_set(err, QE_EDB, "%s: not a usable SQLite database: %s", path,
                       msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            goto fail;
        }
        sqlite3_free(msg);
        msg = NULL;
        sleep_ms(20);
    }
    sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (migrate(s, err))
        goto fail;
    return s;
fail:
    qe_store_close(s);
    return NULL;
}

void qe_store_close(qe_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    free(s);
}

sqlite3 *qe_store_db(qe_store *s)
{
    return s->db;
}

const char *qe_store_path(const qe_store *s)
{
    return s->path;
}

int qe_store_exec(qe_store *s, const char *sql, qe_err *err)
{
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        qe_err_set(err, QE_EDB, "%s: %s", s->path, msg ? msg : "exec failed");
        sqlite3_free(msg);
        tx_rollback(s);
        return QE_EDB;
    }
    return tx_commit(s, err);
}

/* ----------------------------------------------------------------- runs */

static void key_field(qe_sha256_ctx *c, const char *name, const char *v)
{
    /* name=value\n, lengths implicit but fields are newline-free names */
    qe_sha256_update(c, name, strlen(name));
    qe_sha256_update(c, "=", 1);
    if (v)
        qe_sha256_update(c, v, strlen(v));
    qe_sha256_update(c, "\n", 1);
}

void qe_store_run_key(const qe_run_info *ri, char key[65])
{
    qe_sha256_ctx c;
    char lim[32];
    qe_sha256_init(&c);
    key_field(&c, "qeval-run-key", "1");
    key_field(&c, "model", ri->model_sha256);
    key_field(&c, "quants", ri->quants);
    key_field(&c, "suite", ri->suite);
    key_field(&c, "recipes", ri->recipes_sha256);
    key_field(&c, "imatrix", ri->imatrix_sha256);
    snprintf(lim, sizeof lim, "%lld", ri->limit);
    key_field(&c, "limit", lim);
    key_field(&c, "label", ri->label);
    uint8_t d[32];
    qe_sha256_final(&c, d);
    qe_sha256_digest_hex(d, key);
}

const char *qe_store_git_rev(void)
{
    static char rev[64];
    if (rev[0])
        return rev;
    const char *e = getenv("QEVAL_GIT_REV");
    if (e && *e) {
        qe_strlcpy(rev, e, sizeof rev);
        return rev;
    }
#ifdef QE_GIT_REV
    qe_strlcpy(rev, QE_GIT_REV, sizeof rev);
    return rev;
#else
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    qe_strlcpy(rev, "unknown", sizeof rev);
    if (n <= 0)
        return rev;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse --short=12 HEAD 2>/dev/null", exe);
    if (strchr(exe, '\''))
        return rev;
    FILE *p = popen(cmd, "r");
    if (!p)
        return rev;
    char line[64] = "";
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0])
            qe_strlcpy(rev, line, sizeof rev);
    }
    pclose(p);
    return rev;
#endif
}

int qe_store_run_begin(qe_store *s, const qe_run_info *ri, int64_t *run_id, bool *resumed,
                       qe_err *err)
{
    char key[65], host[256] = "", shard[32] = "";
    qe_store_run_key(ri, key);
    if (gethostname(host, sizeof host - 1) != 0)
        qe_strlcpy(host, "unknown", sizeof host);
    if (ri->shard_n > 1)
        snprintf(shard, sizeof shard, "%d/%d", ri->shard_i, ri->shard_n);
    sqlite3_stmt *st = NULL;
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    rc = prep(s,
              "INSERT INTO runs(run_key,label,model_path,model_name,model_sha256,imatrix_sha256,"
              "suite,quants,recipes_sha256,item_limit,args,tool_version,git_rev,host,threads,shard)"
              " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(run_key) DO NOTHING",
              &st, err);
    if (rc)
        goto fail;
    bind_text(st, 1, key);
    bind_text(st, 2, ri->label);
    bind_text(st, 3, ri->model_path);
    bind_text(st, 4, ri->model_name);
    bind_text(st, 5, ri->model_sha256);
    bind_text(st, 6, ri->imatrix_sha256);
    bind_text(st, 7, ri->suite);
    bind_text(st, 8, ri->quants);
    bind_text(st, 9, ri->recipes_sha256);
    sqlite3_bind_int64(st, 10, ri->limit);
    bind_text(st, 11, ri->args);
    bind_text(st, 12, QE_VERSION);
    bind_text(st, 13, qe_store_git_rev());
    bind_text(st, 14, host);
    sqlite3_bind_int(st, 15, ri->threads);
    bind_text(st, 16, shard);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
        rc = db_error(s, err, rc, "inserting run");
        goto fail;
    }
    bool inserted = sqlite3_changes(s->db) > 0;
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = prep(s, "SELECT id FROM runs WHERE run_key = ?", &st, err)))
        goto fail;
    bind_text(st, 1, key);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = db_error(s, err, SQLITE_ERROR, "run row vanished");
        goto fail;
    }
    *run_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (resumed)
        *resumed = !inserted;
    return tx_commit(s, err);
fail:
    sqlite3_finalize(st);
    tx_rollback(s);
    return rc;
}

int qe_store_run_finish(qe_store *s, int64_t run_id, qe_err *err)
{
    int rc = qe_store_aggregate(s, run_id, err);
    if (rc)
        return rc;
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE runs SET finished_at = strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ','now') "
             "WHERE id = %lld",
             (long long)run_id);
    return qe_store_exec(s, sql, err);
}

/* ------------------------------------------------------ variants, tasks */

int qe_store_variant_put(qe_store *s, int64_t run_id, const qe_variant_info *vi,
                         int64_t *variant_id, qe_err *err)
{
    if (!vi->name || !vi->name[0])
        return qe_err_set(err, QE_EINVAL, "%s: variant name is empty", s->path);
    sqlite3_stmt *st = NULL;
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    rc = prep(s,
              "INSERT INTO variants(run_id,name,is_reference,recipe,recipe_sha256,artifact_sha256,"
              "bpw,size_nbytes,n_params,type_hist,imatrix_dataset,imatrix_chunks,imatrix_sha256)"
              " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"
              " ON CONFLICT(run_id,name) DO UPDATE SET is_reference=excluded.is_reference,"
              " recipe=excluded.recipe, recipe_sha256=excluded.recipe_sha256,"
              " artifact_sha256=excluded.artifact_sha256, bpw=excluded.bpw,"
              " size_nbytes=excluded.size_nbytes, n_params=excluded.n_params,"
              " type_hist=excluded.type_hist, imatrix_dataset=excluded.imatrix_dataset,"
              " imatrix_chunks=excluded.imatrix_chunks, imatrix_sha256=excluded.imatrix_sha256"
              " RETURNING id",
              &st, err);
    if (rc)
        goto fail;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, vi->name);
    sqlite3_bind_int(st, 3, vi->is_reference);
    bind_text(st, 4, vi->recipe);
    bind_text(st, 5, vi->recipe_sha256);
    bind_text(st, 6, vi->artifact_sha256);
    sqlite3_bind_double(st, 7, vi->bpw);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)vi->size_nbytes);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)vi->n_params);
    bind_text(st, 10, vi->type_hist_json);
    bind_text(st, 11, vi->imatrix_dataset);
    sqlite3_bind_int(st, 12, vi->imatrix_chunks);
    bind_text(st, 13, vi->imatrix_sha256);
    if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
        rc = db_error(s, err, rc, "inserting variant");
        goto fail;
    }
    *variant_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return tx_commit(s, err);
fail:
    sqlite3_finalize(st);
    tx_rollback(s);
    return rc;
}

int qe_store_task_put(qe_store *s, const qe_task_info *ti, int64_t *task_id, qe_err *err)
{
    if (!ti->name || !ti->name[0])
        return qe_err_set(err, QE_EINVAL, "%s: task name is empty", s->path);
    sqlite3_stmt *st = NULL;
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    rc = prep(s,
              "INSERT INTO tasks(name,version,family,language,data_sha256,protocol,metric)"
              " VALUES(?,?,?,?,?,?,?) ON CONFLICT(name,version,data_sha256,protocol)"
              " DO UPDATE SET family=excluded.family, language=excluded.language,"
              " metric=excluded.metric RETURNING id",
              &st, err);
    if (rc)
        goto fail;
    bind_text(st, 1, ti->name);
    bind_text(st, 2, ti->version);
    bind_text(st, 3, ti->family);
    bind_text(st, 4, ti->language);
    bind_text(st, 5, ti->data_sha256);
    bind_text(st, 6, ti->protocol);
    bind_text(st, 7, ti->metric);
    if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
        rc = db_error(s, err, rc, "inserting task");
        goto fail;
    }
    *task_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return tx_commit(s, err);
fail:
    sqlite3_finalize(st);
    tx_rollback(s);
    return rc;
}

/* ---------------------------------------------------------- work units */

static int unit_marker_exists(qe_store *s, const qe_unit *u, bool *done, qe_err *err)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT 1 FROM work_units WHERE run_id=? AND variant_id=? AND task_id=?"
                  " AND item_lo=? AND item_hi=? AND item_stride=?",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, u->run_id);
    sqlite3_bind_int64(st, 2, u->variant_id);
    sqlite3_bind_int64(st, 3, u->task_id);
    sqlite3_bind_int64(st, 4, u->item_lo);
    sqlite3_bind_int64(st, 5, u->item_hi);
    sqlite3_bind_int64(st, 6, u->item_stride);
    rc = sqlite3_step(st);
    *done = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_error(s, err, rc, "reading work_units");
    return 0;
}

int qe_store_unit_done(qe_store *s, const qe_unit *u, bool *done, qe_err *err)
{
    return unit_marker_exists(s, u, done, err);
}

int qe_store_unit_commit(qe_store *s, const qe_unit *u, const qe_sample *samples,
                         size_t n_samples, const qe_kld_chunk *kld, size_t n_kld, bool *written,
                         qe_err *err)
{
    sqlite3_stmt *st = NULL;
    bool done = false;
    if (written)
        *written = false;
    for (size_t i = 0; i < n_samples; i++) {
        const qe_sample *x = &samples[i];
        bool inside = u->item_stride > 0
                          ? x->item >= 0 && x->item < u->item_hi &&
                                x->item % u->item_stride == u->item_lo
                          : x->item >= u->item_lo && x->item < u->item_hi;
        if (!inside || !x->metric || !x->metric[0])
            return qe_err_set(err, QE_EINVAL,
                              "%s: sample %zu: item %lld outside unit [%lld, %lld) or metric "
                              "missing",
                              s->path, i, (long long)x->item, (long long)u->item_lo,
                              (long long)u->item_hi);
        if (!isfinite(x->value) || !isfinite(x->value2))
            return qe_err_set(err, QE_ENAN, "%s: sample %zu (item %lld, %s): value not finite",
                              s->path, i, (long long)x->item, x->metric);
    }
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    if ((rc = unit_marker_exists(s, u, &done, err)))
        goto fail;
    if (done) { /* someone else finished this unit: keep their rows */
        tx_rollback(s);
        return 0;
    }
    if (n_samples) {
        rc = prep(s,
                  "INSERT OR REPLACE INTO samples(variant_id,task_id,item,metric,value,value2,"
                  "n_tokens,response,extracted,prompt_sha,ids_sha) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                  &st, err);
        if (rc)
            goto fail;
        for (size_t i = 0; i < n_samples; i++) {
            const qe_sample *x = &samples[i];
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, u->variant_id);
            sqlite3_bind_int64(st, 2, u->task_id);
            sqlite3_bind_int64(st, 3, x->item);
            bind_text(st, 4, x->metric);
            sqlite3_bind_double(st, 5, x->value);
            sqlite3_bind_double(st, 6, x->value2);
            sqlite3_bind_int64(st, 7, x->n_tokens);
            if (x->response)
                sqlite3_bind_text(st, 8, x->response, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, 8);
            if (x->extracted)
                sqlite3_bind_text(st, 9, x->extracted, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, 9);
            if (x->prompt_sha && x->prompt_sha[0])
                sqlite3_bind_text(st, 10, x->prompt_sha, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, 10);
            if (x->ids_sha && x->ids_sha[0])
                sqlite3_bind_text(st, 11, x->ids_sha, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, 11);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
                rc = db_error(s, err, rc, "inserting sample");
                goto fail;
            }
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (n_kld) {
        rc = prep(s,
                  "INSERT OR REPLACE INTO kld(variant_id,task_id,item,n_tokens,kld_sum,top1_same,"
                  "kld) VALUES(?,?,?,?,?,?,?)",
                  &st, err);
        if (rc)
            goto fail;
        for (size_t i = 0; i < n_kld; i++) {
            const qe_kld_chunk *k = &kld[i];
            double sum = 0;
            bool inside = u->item_stride > 0 ? k->item % u->item_stride == u->item_lo
                                             : k->item >= u->item_lo && k->item < u->item_hi;
            if (!inside || k->n_tokens < 0 || (k->n_tokens > 0 && !k->kld) ||
                k->n_top1_same < 0 || k->n_top1_same > k->n_tokens) {
                rc = qe_err_set(err, QE_EINVAL,
                                "%s: kld chunk %lld: outside the unit or bad counts (%d tokens, "
                                "%d top-1)",
                                s->path, (long long)k->item, k->n_tokens, k->n_top1_same);
                goto fail;
            }
            for (int j = 0; j < k->n_tokens; j++)
                sum += k->kld[j];
            if (!isfinite(sum)) {
                rc = qe_err_set(err, QE_ENAN, "%s: kld chunk %lld: non-finite KLD", s->path,
                                (long long)k->item);
                goto fail;
            }
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, u->variant_id);
            sqlite3_bind_int64(st, 2, u->task_id);
            sqlite3_bind_int64(st, 3, k->item);
            sqlite3_bind_int(st, 4, k->n_tokens);
            sqlite3_bind_double(st, 5, sum);
            sqlite3_bind_int(st, 6, k->n_top1_same);
            sqlite3_bind_blob(st, 7, k->kld, (int)(sizeof(float) * (size_t)k->n_tokens),
                              SQLITE_TRANSIENT);
            if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
                rc = db_error(s, err, rc, "inserting kld");
                goto fail;
            }
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    rc = prep(s,
              "INSERT INTO work_units(run_id,variant_id,task_id,item_lo,item_hi,item_stride,"
              "n_rows) VALUES(?,?,?,?,?,?,?)",
              &st, err);
    if (rc)
        goto fail;
    sqlite3_bind_int64(st, 1, u->run_id);
    sqlite3_bind_int64(st, 2, u->variant_id);
    sqlite3_bind_int64(st, 3, u->task_id);
    sqlite3_bind_int64(st, 4, u->item_lo);
    sqlite3_bind_int64(st, 5, u->item_hi);
    sqlite3_bind_int64(st, 6, u->item_stride);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)(n_samples + n_kld));
    if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
        rc = db_error(s, err, rc, "inserting work unit marker");
        goto fail;
    }
    sqlite3_finalize(st);
    if ((rc = tx_commit(s, err)))
        return rc;
    if (written)
        *written = true;
    return 0;
fail:
    sqlite3_finalize(st);
    tx_rollback(s);
    return rc;
}

/* --------------------------------------------------------- aggregation */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array, q in [0, 1]. */
static double pctl(const float *v, size_t n, double q)
{
    if (!n)
        return NAN;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    double f = pos - (double)lo;
    if (lo + 1 >= n)
        return v[n - 1];
    return v[lo] + f * (v[lo + 1] - v[lo]);
}

static int put_result(qe_store *s, sqlite3_stmt *ins, int64_t vid, int64_t tid, const char *metric,
                      double value, double se, int64_t n, qe_err *err)
{
    sqlite3_reset(ins);
    sqlite3_bind_int64(ins, 1, vid);
    sqlite3_bind_int64(ins, 2, tid);
    sqlite3_bind_text(ins, 3, metric, -1, SQLITE_STATIC);
    if (isfinite(value))
        sqlite3_bind_double(ins, 4, value);
    else
        sqlite3_bind_null(ins, 4);
    if (isfinite(se))
        sqlite3_bind_double(ins, 5, se);
    else
        sqlite3_bind_null(ins, 5);
    sqlite3_bind_int64(ins, 6, n);
    int rc = sqlite3_step(ins);
    if (rc != SQLITE_DONE)
        return db_error(s, err, rc, "writing result");
    return 0;
}

static int aggregate_kld(qe_store *s, sqlite3_stmt *ins, int64_t vid, int64_t tid, qe_err *err)
{
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT n_tokens, top1_same, kld FROM kld WHERE variant_id=? AND task_id=?"
                     " ORDER BY item",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, vid);
    sqlite3_bind_int64(st, 2, tid);
    float *all = NULL;
    size_t n = 0, cap = 0;
    int64_t top1 = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int nt = sqlite3_column_int(st, 0);
        const void *b = sqlite3_column_blob(st, 2);
        int nb = sqlite3_column_bytes(st, 2);
        if (nt < 0 || (size_t)nb != (size_t)nt * sizeof(float)) {
            rc = qe_err_set(err, QE_EFORMAT,
                            "%s: kld row (variant %lld, task %lld): blob of %d B, expected %d "
                            "floats",
                            s->path, (long long)vid, (long long)tid, nb, nt);
            goto out;
        }
        top1 += sqlite3_column_int(st, 1);
        if (n + (size_t)nt > cap) {
            size_t nc = (n + (size_t)nt) * 2 + 1024;
            float *p = realloc(all, nc * sizeof *p);
            if (!p) {
                rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory aggregating KLD", s->path);
                goto out;
            }
            all = p, cap = nc;
        }
        if (nt)
            memcpy(all + n, b, (size_t)nt * sizeof(float));
        n += (size_t)nt;
    }
    if (rc != SQLITE_DONE) {
        rc = db_error(s, err, rc, "reading kld");
        goto out;
    }
    rc = 0;
    if (!n)
        goto out;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++)
        sum += all[i], sq += (double)all[i] * all[i];
    double mean = sum / (double)n;
    double var = n > 1 ? (sq / (double)n - mean * mean) * (double)n / (double)(n - 1) : NAN;
    double se = n > 1 ? sqrt(var > 0 ? var / (double)n : 0) : NAN;
    qsort(all, n, sizeof *all, cmp_float);
    double p1 = (double)top1 / (double)n;
    int64_t nn = (int64_t)n;
    if ((rc = put_result(s, ins, vid, tid, "kld_mean", mean, se, nn, err)) ||
        (rc = put_result(s, ins, vid, tid, "kld_median", pctl(all, n, 0.5), NAN, nn, err)) ||
        (rc = put_result(s, ins, vid, tid, "kld_p90", pctl(all, n, 0.9), NAN, nn, err)) ||
        (rc = put_result(s, ins, vid, tid, "kld_p99", pctl(all, n, 0.99), NAN, nn, err)) ||
        (rc = put_result(s, ins, vid, tid, "kld_max", all[n - 1], NAN, nn, err)) ||
        (rc = put_result(s, ins, vid, tid, "top1", p1,
                         n > 1 ? sqrt(p1 * (1 - p1) / (double)(n - 1)) : NAN, nn, err)))
        goto out;
out:
    free(all);
    sqlite3_finalize(st);
    return rc;
}

int qe_store_aggregate(qe_store *s, int64_t run_id, qe_err *err)
{
    sqlite3_stmt *grp = NULL, *ins = NULL, *kg = NULL;
    int rc = tx_begin(s, err);
    if (rc)
        return rc;
    char del[200];
    snprintf(del, sizeof del,
             "DELETE FROM results WHERE variant_id IN (SELECT id FROM variants WHERE run_id=%lld)",
             (long long)run_id);
    if (sqlite3_exec(s->db, del, NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_error(s, err, SQLITE_ERROR, "clearing results");
        goto fail;
    }
    if ((rc = prep(s, "INSERT OR REPLACE INTO results(variant_id,task_id,metric,value,stderr,n)"
                      " VALUES(?,?,?,?,?,?)",
                   &ins, err)))
        goto fail;
    /* per (variant, task, metric): sums for the closed-form aggregates */
    if ((rc = prep(s,
                   "SELECT s.variant_id, s.task_id, s.metric, count(*), sum(s.value),"
                   " sum(s.value*s.value), sum(s.value2), sum(s.n_tokens)"
                   " FROM samples s JOIN variants v ON v.id = s.variant_id WHERE v.run_id = ?"
                   " GROUP BY s.variant_id, s.task_id, s.metric",
                   &grp, err)))
        goto fail;
    sqlite3_bind_int64(grp, 1, run_id);
    while ((rc = sqlite3_step(grp)) == SQLITE_ROW) {
        int64_t vid = sqlite3_column_int64(grp, 0), tid = sqlite3_column_int64(grp, 1);
        const char *metric = (const char *)sqlite3_column_text(grp, 2);
        int64_t n = sqlite3_column_int64(grp, 3);
        double sum = sqlite3_column_double(grp, 4), sq = sqlite3_column_double(grp, 5);
        double sum2 = sqlite3_column_double(grp, 6);
        int64_t ntok = sqlite3_column_int64(grp, 7);
        if (strcmp(metric, "nll") == 0) {
            /* token-level mean NLL and its Gaussian stderr (llama.cpp's) */
            if (ntok <= 0)
                continue;
            double m = sum / (double)ntok;
            double var = sum2 / (double)ntok - m * m;
            double se = ntok > 1 ? sqrt((var > 0 ? var : 0) / (double)(ntok - 1)) : NAN;
            if ((rc = put_result(s, ins, vid, tid, "nll_mean", m, se, ntok, err)) ||
                (rc = put_result(s, ins, vid, tid, "ppl", exp(m), exp(m) * se, ntok, err)))
                goto fail;
        } else {
            double m = sum / (double)n;
            double var = n > 1 ? (sq - (double)n * m * m) / (double)(n - 1) : NAN;
            double se = n > 1 ? sqrt((var > 0 ? var : 0) / (double)n) : NAN;
            char name[128];
            qe_strlcpy(name, metric, sizeof name);
            if ((rc = put_result(s, ins, vid, tid, name, m, se, n, err)))
                goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = db_error(s, err, rc, "grouping samples");
        goto fail;
    }
    if ((rc = prep(s,
                   "SELECT DISTINCT k.variant_id, k.task_id FROM kld k JOIN variants v"
                   " ON v.id = k.variant_id WHERE v.run_id = ?",
                   &kg, err)))
        goto fail;
    sqlite3_bind_int64(kg, 1, run_id);
    while ((rc = sqlite3_step(kg)) == SQLITE_ROW) {
        int r2 = aggregate_kld(s, ins, sqlite3_column_int64(kg, 0), sqlite3_column_int64(kg, 1),
                               err);
        if (r2) {
            rc = r2;
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = db_error(s, err, rc, "listing kld");
        goto fail;
    }
    sqlite3_finalize(grp);
    sqlite3_finalize(ins);
    sqlite3_finalize(kg);
    return tx_commit(s, err);
fail:
    sqlite3_finalize(grp);
    sqlite3_finalize(ins);
    sqlite3_finalize(kg);
    tx_rollback(s);
    return rc ? rc : QE_EDB;
}

/* ------------------------------------------------------------- lookups */

int qe_store_find_run(qe_store *s, const char *ref, int64_t *run_id, qe_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc;
    char *end;
    long long num = strtoll(ref, &end, 10);
    if (strcmp(ref, "latest") == 0)
        rc = prep(s, "SELECT id FROM runs ORDER BY id DESC LIMIT 1", &st, err);
    else if (*ref && !*end)
        rc = prep(s, "SELECT id FROM runs WHERE id = ?1", &st, err);
    else
        rc = prep(s,
                  "SELECT id FROM runs WHERE label = ?2 OR (length(?2) >= 6 AND"
                  " substr(run_key, 1, length(?2)) = lower(?2)) ORDER BY id DESC LIMIT 1",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, num);
    sqlite3_bind_text(st, 2, ref, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *run_id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, rc, "looking up run");
    return qe_err_set(err, QE_ENOTFOUND,
                      "%s: no run '%s' (expected a run id, 'latest', a label or a run key prefix)",
                      s->path, ref);
}

int qe_store_find_variant(qe_store *s, int64_t run_id, const char *name, int64_t *variant_id,
                          qe_err *err)
{
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT id, name FROM variants WHERE run_id = ? ORDER BY id", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    char names[400] = "";
    size_t used = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *vn = (const char *)sqlite3_column_text(st, 1);
        if (strcasecmp(vn, name) == 0) {
            *variant_id = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
            return 0;
        }
        if (used < sizeof names - 1)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "",
                                     vn);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, rc, "looking up variant");
    return qe_err_set(err, QE_ENOTFOUND, "%s: run %lld has no variant '%s' (it has: %s)", s->path,
                      (long long)run_id, name, names[0] ? names : "none");
}

/* --------------------------------------------------------------- merge */

int qe_store_merge(qe_store *out, const char *in_path, int64_t *n_rows_added, qe_err *err)
{
    /* Validate the input by opening it as a store first (schema check);
     * never create it. */
    if (access(in_path, R_OK) != 0)
        return qe_err_set(err, QE_EIO, "%s: cannot read input database: %s", in_path,
                          strerror(errno));
    qe_store *in = qe_store_open(in_path, err);
    if (!in)
        return err ? err->code : QE_EDB;
    qe_store_close(in);
    sqlite3_stmt *st = NULL;
    int rc;
    if ((rc = prep(out, "ATTACH DATABASE ? AS src", &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, in_path, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(out, err, rc, "attaching input");
    if ((rc = tx_begin(out, err)))
        goto detach;
    int64_t before = 0, after = 0;
    static const char count_sql[] = "SELECT (SELECT count(*) FROM main.samples) +"
                                    " (SELECT count(*) FROM main.kld)";
    if ((rc = prep(out, count_sql, &st, err)))
        goto fail;
    if (sqlite3_step(st) == SQLITE_ROW)
        before = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    /* ids differ between files: map through the natural keys
     * runs.run_key, variants(run_key, name), tasks(name,version,data,protocol) */
    static const char merge_sql[] =
        "INSERT INTO main.runs(run_key,label,model_path,model_name,model_sha256,imatrix_sha256,"
        " suite,quants,recipes_sha256,item_limit,args,tool_version,git_rev,host,threads,shard,"
        " created_at,finished_at)"
        " SELECT run_key,label,model_path,model_name,model_sha256,imatrix_sha256,suite,quants,"
        " recipes_sha256,item_limit,args,tool_version,git_rev,host,threads,shard,created_at,"
        " finished_at FROM src.runs WHERE true ON CONFLICT(run_key) DO NOTHING;"
        "INSERT INTO main.variants(run_id,name,is_reference,recipe,recipe_sha256,artifact_sha256,"
        " bpw,size_nbytes,n_params,type_hist,imatrix_dataset,imatrix_chunks,imatrix_sha256)"
        " SELECT mr.id, v.name, v.is_reference, v.recipe, v.recipe_sha256, v.artifact_sha256,"
        " v.bpw, v.size_nbytes, v.n_params, v.type_hist, v.imatrix_dataset, v.imatrix_chunks,"
        " v.imatrix_sha256 FROM src.variants v"
        " JOIN src.runs sr ON sr.id = v.run_id JOIN main.runs mr ON mr.run_key = sr.run_key"
        " WHERE true ON CONFLICT(run_id,name) DO NOTHING;"
        "INSERT INTO main.tasks(name,version,family,language,data_sha256,protocol,metric)"
        " SELECT name,version,family,language,data_sha256,protocol,metric FROM src.tasks"
        " WHERE true ON CONFLICT(name,version,data_sha256,protocol) DO NOTHING;"
        "CREATE TEMP TABLE vmap AS SELECT sv.id AS sid, mv.id AS mid FROM src.variants sv"
        " JOIN src.runs sr ON sr.id = sv.run_id JOIN main.runs mr ON mr.run_key = sr.run_key"
        " JOIN main.variants mv ON mv.run_id = mr.id AND mv.name = sv.name;"
        "CREATE TEMP TABLE tmap AS SELECT st.id AS sid, mt.id AS mid FROM src.tasks st"
        " JOIN main.tasks mt ON mt.name = st.name AND mt.version = st.version"
        " AND mt.data_sha256 = st.data_sha256 AND mt.protocol = st.protocol;"
        "INSERT OR IGNORE INTO main.samples(variant_id,task_id,item,metric,value,value2,n_tokens,"
        " response,extracted,prompt_sha,ids_sha) SELECT vm.mid, tm.mid, s.item, s.metric,"
        " s.value, s.value2, s.n_tokens, s.response, s.extracted, s.prompt_sha, s.ids_sha"
        " FROM src.samples s"
        " JOIN vmap vm ON vm.sid = s.variant_id JOIN tmap tm ON tm.sid = s.task_id;"
        "INSERT OR IGNORE INTO main.kld(variant_id,task_id,item,n_tokens,kld_sum,top1_same,kld)"
        " SELECT vm.mid, tm.mid, k.item, k.n_tokens, k.kld_sum, k.top1_same, k.kld"
        " FROM src.kld k JOIN vmap vm ON vm.sid = k.variant_id JOIN tmap tm ON tm.sid = k.task_id;"
        "INSERT OR IGNORE INTO main.work_units(run_id,variant_id,task_id,item_lo,item_hi,"
        " item_stride,n_rows,done_at) SELECT mv.run_id, vm.mid, tm.mid, w.item_lo, w.item_hi,"
        " w.item_stride, w.n_rows, w.done_at"
        " FROM src.work_units w JOIN vmap vm ON vm.sid = w.variant_id"
        " JOIN main.variants mv ON mv.id = vm.mid JOIN tmap tm ON tm.sid = w.task_id;"
        "UPDATE main.runs SET shard = '' WHERE run_key IN (SELECT run_key FROM src.runs);"
        "DROP TABLE temp.vmap; DROP TABLE temp.tmap;";
    char *msg = NULL;
    if (sqlite3_exec(out->db, merge_sql, NULL, NULL, &msg) != SQLITE_OK) {
        rc = qe_err_set(err, QE_EDB, "%s: merging %s: %s", out->path, in_path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    if ((rc = prep(out, count_sql, &st, err)))
        goto fail;
    if (sqlite3_step(st) == SQLITE_ROW)
        after = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = tx_commit(out, err)))
        goto detach;
    if (n_rows_added)
        *n_rows_added = after - before;
    /* re-aggregate every run that came from the input */
    if ((rc = prep(out, "SELECT mr.id FROM main.runs mr JOIN src.runs sr ON sr.run_key ="
                        " mr.run_key",
                   &st, err)))
        goto detach;
    int64_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n_ids == cap) {
            size_t nc = cap ? 2 * cap : 16;
            int64_t *p = realloc(ids, nc * sizeof *p);
            if (!p) {
                free(ids);
                rc = qe_err_set(err, QE_ENOMEM, "%s: out of memory merging", out->path);
                goto detach;
            }
            ids = p, cap = nc;
        }
        ids[n_ids++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    st = NULL;
    sqlite3_exec(out->db, "DETACH DATABASE src", NULL, NULL, NULL);
    rc = 0;
    for (size_t i = 0; i < n_ids && !rc; i++)
        rc = qe_store_aggregate(out, ids[i], err);
    free(ids);
    return rc;
fail:
    sqlite3_finalize(st);
    tx_rollback(out);
detach:
    sqlite3_exec(out->db, "DETACH DATABASE src", NULL, NULL, NULL);
    return rc;
}
