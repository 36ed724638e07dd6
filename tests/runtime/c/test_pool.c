/* test_pool.c — gc__parallel_for's schedule: every item exactly once for pools of 2..8 threads and
 * item counts 1..1000; a thread that stalls on its first block has the rest of its segment taken by the
 * others; a failing item's code comes back; and, where no thread stalls, blocks stay with the thread
 * that owns their segment more often than a shared counter would leave them (the caches' locality).
 * Prints "ok" and the share of blocks run by their segment's owner. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_N 1000
static _Atomic int32_t runs[MAX_N];
static _Atomic int32_t owner_hits, blocks_seen;
static int32_t stall_thread = -1;
static int busy_us; /* work per block, so that every thread takes part */
static _Atomic int32_t stalled;
static int64_t cur_n, cur_chunks, cur_blocks;

static void sleep_ms(int ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

static int32_t task(gc_frame_t* frame, int64_t begin, int64_t end, int32_t thread) {
  (void)frame;
  if (thread == stall_thread && atomic_exchange(&stalled, 1) == 0) sleep_ms(30);
  if (busy_us) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t1);
    while ((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000 < busy_us);
  }
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&runs[i], 1);
  /* the segment this block belongs to: blocks are [n*b/B, n*(b+1)/B), segment k holds b in [B*k/T, B*(k+1)/T) */
  int64_t b = (begin * cur_blocks + cur_n - 1) / cur_n;
  while (b > 0 && cur_n * b / cur_blocks > begin) b--;
  int64_t seg = 0;
  while (seg + 1 < cur_chunks && cur_blocks * (seg + 1) / cur_chunks <= b) seg++;
  atomic_fetch_add(&blocks_seen, 1);
  if (seg == thread) atomic_fetch_add(&owner_hits, 1);
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
  gc__default_allocator(&a);
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
  /* locality: 2 threads, jobs back to back, 50 us per block */
  gc_pool_t* pool = NULL;
  if (gc__pool_create(&a, 2, &pool) != NULL) return 1;
  atomic_store(&owner_hits, 0);
  atomic_store(&blocks_seen, 0);
  busy_us = 50;
  for (int rep = 0; rep < 300; rep++)
    if (check(pool, 2, 1000)) return 1;
  gc__pool_release(pool);
  printf("ok %.2f\n", (double)owner_hits / (double)blocks_seen);
  return 0;
}
