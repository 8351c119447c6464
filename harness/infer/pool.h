/*
 * pool.h: the inference core's persistent worker threads (private to
 * harness/infer).
 *
 * Why not OpenMP: on a machine shared with other work, libgomp's barrier
 * threads spin while they wait, taking CPU time from the thread that still
 * works; a forward pass has hundreds of fork/join points, and measured
 * prefill fell to a quarter of its single-thread speed x 2.  This pool
 * spins only briefly, then sleeps on a condition variable, and hands out
 * work items one at a time (atomic counter), so a descheduled worker
 * delays a job by at most the one item it holds.
 *
 * Results never depend on the pool: an item's computation must depend only
 * on the item index (tid selects scratch memory, nothing else).
 *
 * Must not hold: numerics, model knowledge.
 */
#ifndef QE_INFER_POOL_H
#define QE_INFER_POOL_H

#include "../util/common.h"

/* fn(ctx, item, tid): run work item `item` (0..n_items-1) on thread tid
 * (0 = the calling thread, 1..n_threads-1 = workers). */
typedef void (*qe_pool_fn)(void *ctx, int item, int tid);

typedef struct qe_pool qe_pool;

/* A pool able to run jobs on up to max_threads threads (the caller plus
 * max_threads-1 workers, started here).  NULL + err on failure. */
qe_pool *qe_pool_new(int max_threads, qe_err *err);
/* Stops and joins the workers; NULL is a no-op. */
void qe_pool_free(qe_pool *p);

/* Run items 0..n_items-1 of fn on n_threads threads (clamped to
 * 1..max_threads and to n_items) and return when all are done.  The
 * caller's thread takes part.  Not reentrant: one job at a time. */
void qe_pool_run(qe_pool *p, int n_threads, int n_items, qe_pool_fn fn, void *ctx);

#endif /* QE_INFER_POOL_H */
