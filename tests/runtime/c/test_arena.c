/* test_arena.c -- the scratch-arena planner (graphc/c_runtime/src/arena.c) on random lifetime tables:
 * buffers whose lifetimes overlap never overlap in memory, offsets are 64-byte aligned, the
 * arena is at least the peak of live bytes and never more than the sum of all buffers; plus a
 * hand-written table whose optimum is known.
 *
 * Built with the runtime sources (it calls the internal gc__plan_arena). Prints "ok N".
 *
 * `test_arena plan` instead plans the tables it reads from stdin (per table: the count n, then n lines of
 * "first last size"), printing per table the arena size and the n offsets on one line: what
 * tests/runtime/test_c_abi.py compares with graphc.memory's GreedyBySizeAllocator.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int failures = 0;
#define CHECK(cond, ...)                           \
  do {                                             \
    if (!(cond)) {                                 \
      fprintf(stderr, "FAIL line %d: ", __LINE__); \
      fprintf(stderr, __VA_ARGS__);                \
      fprintf(stderr, "\n");                       \
      failures++;                                  \
    }                                              \
  } while (0)

static uint64_t round64(uint64_t x) { return (x + 63) / 64 * 64; }

static int plan_tables(void) {
  unsigned n;
  while (scanf("%u", &n) == 1) {
    gc_scratch_def_t* defs = calloc(n + 1, sizeof *defs);
    int64_t* sizes = calloc(n + 1, sizeof *sizes);
    uint64_t* offsets = calloc(n + 1, sizeof *offsets);
    void* work = calloc(n + 1, GC_PLAN_WORK_BYTES_PER_BUFFER);
    if (!defs || !sizes || !offsets || !work) return 1;
    for (unsigned i = 0; i < n; i++) {
      long long size;
      if (scanf("%d %d %lld", &defs[i].first, &defs[i].last, &size) != 3) return 1;
      defs[i].slot = (int32_t)i;
      sizes[i] = size;
    }
    printf("%llu", (unsigned long long)gc__plan_arena(defs, sizes, n, offsets, work));
    for (unsigned i = 0; i < n; i++) printf(" %llu", (unsigned long long)offsets[i]);
    printf("\n");
    free(defs);
    free(sizes);
    free(offsets);
    free(work);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "plan") == 0) return plan_tables();
  /* known case: a chain a -> b -> c where a and c never live together: c reuses a's place */
  {
    gc_scratch_def_t defs[3] = {{0, 0, 1}, {1, 1, 2}, {2, 2, 3}};
    int64_t sizes[3] = {1000, 500, 1000};
    uint64_t offsets[3];
    uint64_t work[3 * 4];
    uint64_t arena = gc__plan_arena(defs, sizes, 3, offsets, work);
    CHECK(arena == round64(1000) + round64(500), "chain arena %llu", (unsigned long long)arena);
    CHECK(offsets[0] == offsets[2], "c should reuse a's offset (%llu, %llu)", (unsigned long long)offsets[0],
          (unsigned long long)offsets[2]);
  }
  /* zero-size buffers and an empty table */
  {
    gc_scratch_def_t defs[2] = {{0, 0, 0}, {1, 0, 0}};
    int64_t sizes[2] = {0, 0};
    uint64_t offsets[2];
    uint64_t work[2 * 4];
    CHECK(gc__plan_arena(defs, sizes, 2, offsets, work) == 0, "zero-size buffers need no arena");
    CHECK(gc__plan_arena(defs, sizes, 0, offsets, work) == 0, "an empty table needs no arena");
  }
  /* random tables */
  srand(12345);
  int cases = 0;
  for (int trial = 0; trial < 2000; trial++) {
    enum { MAX = 40 };
    gc_scratch_def_t defs[MAX];
    int64_t sizes[MAX];
    uint64_t offsets[MAX];
    uint64_t work[MAX * 4];
    int n = 1 + rand() % MAX;
    int ops = 1 + rand() % 30;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
      int first = rand() % ops;
      int last = first + rand() % (ops - first);
      defs[i] = (gc_scratch_def_t){i, first, last};
      sizes[i] = rand() % 3 == 0 ? rand() % 100 : rand() % 100000;
      total += round64((uint64_t)sizes[i]);
    }
    uint64_t arena = gc__plan_arena(defs, sizes, (uint32_t)n, offsets, work);
    uint64_t peak = 0;
    for (int op = 0; op < ops; op++) {
      uint64_t live = 0;
      for (int i = 0; i < n; i++)
        if (defs[i].first <= op && op <= defs[i].last) live += round64((uint64_t)sizes[i]);
      if (live > peak) peak = live;
    }
    CHECK(arena >= peak, "trial %d: arena %llu below the peak of live bytes %llu", trial, (unsigned long long)arena,
          (unsigned long long)peak);
    CHECK(arena <= total, "trial %d: arena %llu above the sum of all buffers %llu", trial,
          (unsigned long long)arena, (unsigned long long)total);
    for (int i = 0; i < n; i++) {
      CHECK(offsets[i] % 64 == 0, "trial %d: offset %llu not aligned", trial, (unsigned long long)offsets[i]);
      CHECK(offsets[i] + (uint64_t)sizes[i] <= arena, "trial %d: buffer %d ends past the arena", trial, i);
      for (int j = i + 1; j < n; j++) {
        int live_together = !(defs[i].last < defs[j].first || defs[j].last < defs[i].first);
        int apart = offsets[i] + (uint64_t)sizes[i] <= offsets[j] || offsets[j] + (uint64_t)sizes[j] <= offsets[i];
        CHECK(!live_together || apart || sizes[i] == 0 || sizes[j] == 0,
              "trial %d: buffers %d and %d live together and overlap", trial, i, j);
      }
    }
    cases++;
    if (failures) break;
  }
  if (failures) return 1;
  printf("ok %d\n", cases);
  return 0;
}
