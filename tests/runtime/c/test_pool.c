/* test_pool.c — gc__parallel_for's schedule: every item exactly once for pools of 2..8 threads and
 * item counts 1..1000; a thread that stalls on its first block has the rest of its segment taken by the
 * others; a failing item's code comes back; and a worker starts with its own segment (the part of the
 * data its caches hold from the op before) even while the caller stalls in its first block, where one
 * shared counter would hand it the caller's next blocks. Prints "ok". */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_N 1000
static _Atomic int32_t runs[MAX_N];
static _Atomic int64_t worker_first; /* the first block thread 1 ran in the current job, or -1 */
static int32_t stall_thread = -1;
static _Atomic int32_t stalled;
static int64_t cur_n, cur_chunks, cur_blocks;

static void sleep_ms(int ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

static int32_t task(gc_frame_t* frame, int64_t begin, int64_t end, int32_t thread) {
  (void)frame;
  if (thread == stall_thread && atomic_exchange(&stalled, 1) == 0) sleep_ms(30);
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&runs[i], 1);
  /* the block: blocks are [n*b/B, n*(b+1)/B) */
  int64_t b = 0;
  while (cur_n * (b + 1) / cur_blocks <= begin) b++;
  if (thread == 1) {
    int64_t none = -1;
    atomic_compare_exchange_strong(&worker_first, &none, b);
  }
  return 0;
}

static int32_t failing(gc_frame_t* frame, int64_t begin, int64_t end, int32_t thread) {
  (void)frame, (void)thread;
  return (begin <= 500 && 500 < end) ? 7 : 0;
}

static int check(gc_pool_t* pool, int32_t threads, int64_t n) {
  memset((void*)runs, 0, sizeof(runs));
  cur_n = n;
  cur_chunks = threads < n ? threads : n;
  cur_blocks = n < cur_chunks * 4 ? n : cur_chunks * 4;
  int32_t r = gc__parallel_for(pool, task, NULL, n, 0);
  if (r != 0) {
    printf("FAIL: parallel_for returned %d (threads %d, n %lld)\n", r, threads, (long long)n);
    return 1;
  }
  for (int64_t i = 0; i < n; i++) {
    if (runs[i] != 1) {
      printf("FAIL: item %lld ran %d times (threads %d, n %lld)\n", (long long)i, (int)runs[i], threads,
             (long long)n);
      return 1;
    }
  }
  return 0;
}

int main(void) {
  gc_allocator_t a;
  gc__default_allocator(&a, 1);
  static const int64_t sizes[] = {1, 2, 3, 7, 17, 64, 1000};
  for (int32_t threads = 2; threads <= 8; threads++) {
    gc_pool_t* pool = NULL;
    if (gc__pool_create(&a, threads, &pool) != NULL) {
      printf("FAIL: pool of %d threads\n", threads);
      return 1;
    }
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
      for (int rep = 0; rep < 20; rep++)
        if (check(pool, threads, sizes[s])) return 1;
    /* each thread in turn stalls on its first block: the others finish its segment */
    for (int32_t t = 0; t < threads; t++) {
      stall_thread = t;
      atomic_store(&stalled, 0);
      if (check(pool, threads, 1000)) return 1;
    }
    stall_thread = -1;
    if (gc__parallel_for(pool, failing, NULL, 1000, 0) != 7) {
      printf("FAIL: the failing item's code was lost (threads %d)\n", threads);
      return 1;
    }
    gc__pool_release(pool);
  }
  /* ownership: on 2 threads the caller stalls 30 ms in its first block; a worker that takes part starts
   * with a block of its own segment (the second half), not with the caller's next one */
  gc_pool_t* pool = NULL;
  if (gc__pool_create(&a, 2, &pool) != NULL) return 1;
  int joined = 0;
  for (int rep = 0; rep < 20 && joined < 3; rep++) {
    stall_thread = 0;
    atomic_store(&stalled, 0);
    atomic_store(&worker_first, -1);
    if (check(pool, 2, 1000)) return 1;
    int64_t first = atomic_load(&worker_first);
    if (first < 0) continue; /* the worker did not wake in time: the caller ran everything */
    joined++;
    if (first < cur_blocks / 2) {
      printf("FAIL: the worker started with block %lld of %lld, in the caller's segment\n", (long long)first,
             (long long)cur_blocks);
      return 1;
    }
  }
  gc__pool_release(pool);
  if (joined == 0) {
    printf("FAIL: the worker never took part in 20 jobs with a 30 ms stall\n");
    return 1;
  }
  printf("ok\n");
  return 0;
}
