/* threadpool.c — the intra-op thread pool an instance owns.
 *
 * A pool of T threads is the caller plus T-1 workers. gc__parallel_for splits [0, n) into a few
 * blocks per participating thread, in one contiguous segment per thread: each thread takes the
 * blocks of its own segment in order, then those left in the others' (from their counters), so a
 * thread slowed down by another process does not hold the others back, while in the common case
 * thread t works on the same part of [0, n) in every op, the part of the data its own caches hold
 * from the op before (a 2-thread MobileNetV2 at batch 1: 2.9 -> 2.6 ms, its depthwise convolutions
 * scaling 1.3x -> 1.7x, against one shared counter handing out blocks in any order). Kernels
 * compute each item the same way whichever thread runs it, so results never depend on the schedule.
 *
 * Hand-off without waiting for sleepers: for each job the caller marks every participating
 * worker READY, then publishes the job (bumps `generation`). A worker that wakes up claims its
 * slot (READY -> RUNNING) before it reads the job. When the caller has run out of blocks, it
 * withdraws the slots still READY (READY -> SKIPPED) and waits only for the workers that did
 * claim theirs — so a worker that was asleep never delays a job, and one that wakes late finds
 * its slot withdrawn and goes back to waiting. The next job is published only after every
 * claimed worker finished, so the job fields never change under a running worker.
 *
 * Workers spin briefly on the job counter before sleeping on a condition variable, so that a
 * model's consecutive small ops do not pay a wake-up each.
 *
 * Platforms without threads (WebAssembly under WASI) use threadpool_serial.c instead.
 */
#if !defined(__wasi__)
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define GC_SPIN_ITERS 4000
#define GC_YIELD_ITERS 200
/* gc_max_threads(): this many threads per online core, and never more than the hard limit. */
#define GC_THREADS_PER_CORE 4
#define GC_HARD_MAX_THREADS 1024
/* Work (in ~flops) below which one more thread does not pay for its hand-off. */
#define GC_MIN_COST_PER_THREAD 32768

enum { GC_IDLE = 0, GC_READY = 1, GC_RUNNING = 2, GC_DONE = 3, GC_SKIPPED = 4 };

typedef struct {
  _Atomic int32_t state;
  _Atomic int64_t next; /* the next block of this thread's segment of the current job */
  char pad[48];         /* one cache line per thread */
} gc_slot_t;

struct gc_pool {
  gc_allocator_t alloc;
  int32_t num_threads;
  pthread_t* threads;
  gc_slot_t* slots;
  int32_t started;
  pthread_mutex_t mu;
  pthread_cond_t cv_work;
  pthread_cond_t cv_done;
  /* the current job; written by the caller before `generation` is bumped */
  gc_task_fn fn;
  gc_frame_t* frame;
  int64_t n;
  int32_t chunks; /* participating threads */
  int64_t blocks; /* work blocks: segment k of `chunks` is thread k's, taken in order from slots[k].next */
  _Atomic uint64_t generation;
  _Atomic int32_t error;
  _Atomic int32_t stop;
};

typedef struct {
  gc_pool_t* pool;
  int32_t id;
} gc_worker_arg_t;

static inline void gc__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static inline int64_t gc__segment_end(const gc_pool_t* p, int64_t k) { return p->blocks * (k + 1) / p->chunks; }

/* Runs the blocks of thread `thread`'s segment, then those left in the others'; returns the first failure. */
static int32_t gc__run_blocks(gc_pool_t* p, int32_t thread) {
  int32_t result = 0;
  for (int64_t i = 0; i < p->chunks; i++) {
    int64_t k = (thread + i) % p->chunks;
    int64_t last = gc__segment_end(p, k);
    for (;;) {
      int64_t b = atomic_fetch_add_explicit(&p->slots[k].next, 1, memory_order_relaxed);
      if (b >= last) break;
      int64_t begin = p->n * b / p->blocks;
      int64_t end = p->n * (b + 1) / p->blocks;
      if (begin >= end) continue;
      int32_t r = p->fn(p->frame, begin, end, thread);
      if (r != 0 && result == 0) result = r;
    }
  }
  return result;
}

static void* gc__worker(void* arg) {
  gc_worker_arg_t* wa = (gc_worker_arg_t*)arg;
  gc_pool_t* p = wa->pool;
  int32_t id = wa->id;
  _Atomic int32_t* state = &p->slots[id].state;
  uint64_t seen = 0;
  for (;;) {
    int i = 0;
    while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
           !atomic_load_explicit(&p->stop, memory_order_acquire)) {
      if (i < GC_SPIN_ITERS) {
        gc__cpu_relax();
      } else if (i < GC_SPIN_ITERS + GC_YIELD_ITERS) {
        sched_yield();
      } else {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire))
          pthread_cond_wait(&p->cv_work, &p->mu);
        pthread_mutex_unlock(&p->mu);
      }
      i++;
    }
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    seen = atomic_load_explicit(&p->generation, memory_order_acquire);
    int32_t expected = GC_READY;
    if (!atomic_compare_exchange_strong_explicit(state, &expected, GC_RUNNING, memory_order_acq_rel,
                                                 memory_order_acquire))
      continue; /* not part of this job, or withdrawn: wait for the next one */
    int32_t r = gc__run_blocks(p, id);
    if (r != 0) {
      int32_t zero = 0;
      atomic_compare_exchange_strong(&p->error, &zero, r);
    }
    atomic_store_explicit(state, GC_DONE, memory_order_release);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv_done);
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

static gc_worker_arg_t* gc__worker_args(gc_pool_t* p) {
  return (gc_worker_arg_t*)(void*)(p->threads + p->num_threads);
}

static int32_t gc__online_cores(void) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? (cores < GC_HARD_MAX_THREADS ? (int32_t)cores : GC_HARD_MAX_THREADS) : 1;
}

int32_t gc_max_threads(void) {
  int32_t limit = GC_THREADS_PER_CORE * gc__online_cores();
  return limit < GC_HARD_MAX_THREADS ? limit : GC_HARD_MAX_THREADS;
}

gc_status_t gc__pool_create(const gc_allocator_t* a, int32_t num_threads, gc_pool_t** out) {
  *out = NULL;
  if (num_threads <= 0) num_threads = gc__online_cores();
  /* more threads than this only add hand-offs and memory: clamped (see gc_options_t.num_threads) */
  int32_t limit = gc_max_threads();
  if (num_threads > limit) num_threads = limit;
  gc_pool_t* p = (gc_pool_t*)gc__alloc(a, sizeof(gc_pool_t), 64);
  if (p == NULL) return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a thread pool");
  *p = (gc_pool_t){0};
  p->alloc = *a;
  p->num_threads = num_threads;
  if (num_threads == 1) {
    *out = p;
    return NULL;
  }
  size_t bytes = sizeof(pthread_t) * (size_t)num_threads + sizeof(gc_worker_arg_t) * (size_t)num_threads;
  p->threads = (pthread_t*)gc__alloc(a, bytes, 16);
  p->slots = (gc_slot_t*)gc__alloc(a, sizeof(gc_slot_t) * (size_t)num_threads, 64);
  if (p->threads == NULL || p->slots == NULL) {
    gc__free(a, p->threads);
    gc__free(a, p->slots);
    gc__free(a, p);
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a thread pool of %d threads", (int)num_threads);
  }
  for (int32_t k = 0; k < num_threads; k++) {
    atomic_init(&p->slots[k].state, GC_IDLE);
    atomic_init(&p->slots[k].next, 0);
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv_work, NULL);
  pthread_cond_init(&p->cv_done, NULL);
  gc_worker_arg_t* args = gc__worker_args(p);
  for (int32_t k = 1; k < num_threads; k++) {
    args[k].pool = p;
    args[k].id = k;
    int rc = pthread_create(&p->threads[k], NULL, gc__worker, &args[k]);
    if (rc != 0) {
      gc__pool_release(p);
      return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot start worker thread %d of %d (error %d)", (int)k,
                      (int)num_threads, rc);
    }
    p->started = k;
  }
  *out = p;
  return NULL;
}

void gc__pool_release(gc_pool_t* p) {
  if (p == NULL) return;
  if (p->threads != NULL) {
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int32_t k = 1; k <= p->started; k++) pthread_join(p->threads[k], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    gc__free(&p->alloc, p->threads);
    gc__free(&p->alloc, p->slots);
  }
  gc_allocator_t a = p->alloc;
  gc__free(&a, p);
}

int32_t gc__pool_num_threads(const gc_pool_t* p) { return p ? p->num_threads : 1; }

int32_t gc__parallel_for(void* pool_ptr, gc_task_fn fn, gc_frame_t* frame, int64_t n, int64_t cost) {
  gc_pool_t* p = (gc_pool_t*)pool_ptr;
  if (n <= 0) return 0;
  int64_t chunks = p ? p->num_threads : 1;
  if (chunks > n) chunks = n;
  if (cost > 0) {
    int64_t total = n * cost;
    int64_t useful = total / GC_MIN_COST_PER_THREAD;
    if (useful < 1) useful = 1;
    if (chunks > useful) chunks = useful;
  }
  if (chunks <= 1) return fn(frame, 0, n, 0);
  p->fn = fn;
  p->frame = frame;
  p->n = n;
  p->chunks = (int32_t)chunks;
  p->blocks = n < chunks * 4 ? n : chunks * 4;
  for (int64_t k = 0; k < chunks; k++)
    atomic_store_explicit(&p->slots[k].next, p->blocks * k / chunks, memory_order_relaxed);
  atomic_store_explicit(&p->error, 0, memory_order_relaxed);
  for (int32_t k = 1; k < p->num_threads; k++)
    atomic_store_explicit(&p->slots[k].state, k < chunks ? GC_READY : GC_IDLE, memory_order_release);
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
  pthread_cond_broadcast(&p->cv_work);
  pthread_mutex_unlock(&p->mu);
  int32_t r = gc__run_blocks(p, 0);
  /* withdraw the slots of workers that have not started; wait for those that have */
  for (int32_t k = 1; k < chunks; k++) {
    int32_t expected = GC_READY;
    if (atomic_compare_exchange_strong_explicit(&p->slots[k].state, &expected, GC_SKIPPED, memory_order_acq_rel,
                                                memory_order_acquire))
      continue;
    int i = 0;
    while (atomic_load_explicit(&p->slots[k].state, memory_order_acquire) != GC_DONE) {
      if (i < GC_SPIN_ITERS) {
        gc__cpu_relax();
      } else if (i < GC_SPIN_ITERS + GC_YIELD_ITERS) {
        sched_yield();
      } else {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->slots[k].state, memory_order_acquire) != GC_DONE)
          pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
      }
      i++;
    }
  }
  int32_t e = atomic_load_explicit(&p->error, memory_order_acquire);
  return r != 0 ? r : e;
}

#endif /* !__wasi__ */
