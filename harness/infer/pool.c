/*
 * pool.c: persistent worker threads with dynamic item hand-out (see
 * pool.h for why this replaces OpenMP in the forward pass).
 *
 * Protocol: the caller publishes a job (fn, ctx, n_items, n_active) under
 * the mutex, bumps `gen` and wakes the workers.  Workers whose tid is below
 * n_active take items from the atomic `next` counter until none are left,
 * then check out (n_left--; idle workers check out too, so no worker can
 * still be reading a job when the next is published); the caller takes items too and returns once
 * every participant has checked out, so a job's memory is never touched
 * after qe_pool_run returns.  Waiting is a short spin, then a condition
 * variable (no CPU burnt while another process needs the core).
 */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Spin iterations (with a pause instruction, ~30-60 ns each) before
 * sleeping: covers the gap between the jobs of one forward pass. */
#define SPIN_ITERS 2000

struct qe_pool {
    int max_threads;
    int n_started;       /* workers running (tids 1..n_started) */
    pthread_t *threads;  /* (max_threads - 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_uint gen;     /* job generation, bumped per job */
    atomic_bool stop;
    /* the current job (written under mu before gen is bumped) */
    qe_pool_fn fn;
    void *ctx;
    int n_items, n_active;
    atomic_int next;     /* next item to hand out */
    atomic_int n_left;   /* participating workers not yet checked out */
};

typedef struct worker_arg {
    qe_pool *p;
    int tid;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void take_items(qe_pool *p, int tid)
{
    const int n = p->n_items;
    for (int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed); i < n;
         i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed))
        p->fn(p->ctx, i, tid);
}

static void *worker_main(void *arg)
{
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    qe_pool *p = a.p;
    unsigned seen = 0; /* gen at creation: a job posted before this thread ran is not missed */
    for (;;) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int s = 0; g == seen && s < SPIN_ITERS; s++) {
            cpu_relax();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen)
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop))
            break;
        if (a.tid < p->n_active)
            take_items(p, a.tid);
        if (atomic_fetch_sub(&p->n_left, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

qe_pool *qe_pool_new(int max_threads, qe_err *err)
{
    if (max_threads < 1)
        max_threads = 1;
    qe_pool *p = calloc(1, sizeof *p);
    if (!p) {
        qe_err_set(err, QE_ENOMEM, "thread pool: out of memory");
        return NULL;
    }
    p->max_threads = max_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->gen, 0u);
    atomic_init(&p->stop, false);
    atomic_init(&p->next, 0);
    atomic_init(&p->n_left, 0);
    if (max_threads > 1) {
        p->threads = calloc((size_t)max_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            qe_err_set(err, QE_ENOMEM, "thread pool: out of memory");
            qe_pool_free(p);
            return NULL;
        }
    }
    for (int t = 1; t < max_threads; t++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) {
            qe_err_set(err, QE_ENOMEM, "thread pool: out of memory");
            qe_pool_free(p);
            return NULL;
        }
        a->p = p;
        a->tid = t;
        if (pthread_create(&p->threads[t - 1], NULL, worker_main, a) != 0) {
            free(a);
            qe_err_set(err, QE_ENOMEM, "thread pool: cannot start worker thread %d of %d", t,
                       max_threads - 1);
            qe_pool_free(p);
            return NULL;
        }
        p->n_started++;
    }
    return p;
}

void qe_pool_free(qe_pool *p)
{
    if (!p)
        return;
    if (p->n_started > 0) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, true);
        atomic_fetch_add(&p->gen, 1u);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
        for (int t = 0; t < p->n_started; t++)
            pthread_join(p->threads[t], NULL);
    }
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

void qe_pool_run(qe_pool *p, int n_threads, int n_items, qe_pool_fn fn, void *ctx)
{
    if (n_items <= 0)
        return;
    if (n_threads > p->n_started + 1)
        n_threads = p->n_started + 1;
    if (n_threads > n_items)
        n_threads = n_items;
    if (n_threads <= 1) {
        for (int i = 0; i < n_items; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    p->n_active = n_threads;
    atomic_store(&p->next, 0);
    atomic_store(&p->n_left, p->n_started); /* every worker checks out */
    atomic_fetch_add_explicit(&p->gen, 1u, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    take_items(p, 0);

    for (int s = 0; atomic_load_explicit(&p->n_left, memory_order_acquire) > 0 &&
                    s < SPIN_ITERS; s++)
        cpu_relax();
    if (atomic_load_explicit(&p->n_left, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->n_left) > 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
