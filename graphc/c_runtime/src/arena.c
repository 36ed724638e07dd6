/* arena.c — the allocator hooks and the scratch-arena planner.
 *
 * Planner: graphc.memory's heap algorithm (graphc/memory/planner.py, GreedyBySizeAllocator), offset for
 * offset: the buffers in four orders (by size then lifetime, by size x lifetime, by first use, by size then
 * position), each placed by best fit (the smallest gap between the placed buffers alive with it that holds
 * it) and by first fit (the lowest), 64-byte aligned; the smallest arena wins. It runs once per distinct set of free-dim values, not per call:
 * O(n^2 log n) for n scratch buffers (measured at -O2 on a Zen 4: 100 buffers 0.3 ms, InceptionV3 has
 * 87; 500 buffers 2.5 ms; 2000 buffers, a large training step's, 35 ms).
 */
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "internal.h"

#define GC_ALIGN 64u

static void* gc__malloc_alloc(void* self, size_t size, size_t alignment) {
  (void)self;
  void* p = NULL;
  if (alignment < sizeof(void*)) alignment = sizeof(void*);
  if (size == 0) size = 1;
  if (posix_memalign(&p, alignment, size) != 0) return NULL;
  return p;
}

/* Blocks of GC_HUGE_PAGE bytes and more (packed weights, the arena of a large model or batch) start on a
   huge-page boundary and are advised as transparent huge pages, where the OS offers them (Linux, THP
   "always" or "madvise"): one TLB entry then maps 2 MiB instead of 4 KiB. A GEMM walks its packed B and
   its A rows across many pages; with 4 KiB pages on a Zen 4 (3072 L2 TLB entries: 12 MiB), M = N = K
   = 4096 ran at 79-80 % of the FMA peak, with huge pages at 85-90 %, and ResNet50 at batch 1 ran 1.05x faster
   (python -m benchmarks.gemm --before 4k-pages, python -m benchmarks.huge_pages). NumPy advises its
   large arrays the same way. With huge_pages 0 the same blocks are advised against huge pages, so that
   they get 4 KiB pages whatever the heap they come from was advised before (and under THP "always").
   Off Linux both are the plain allocation. */
#define GC_HUGE_PAGE ((size_t)2 << 20)
#define GC_SMALL_PAGE ((size_t)4096)

#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
static void* gc__advised_alloc(size_t size, size_t alignment, size_t page, int advice) {
  void* p = NULL;
  if (alignment < page) alignment = page;
  if (posix_memalign(&p, alignment, size) != 0) return NULL;
  (void)madvise(p, size & ~(page - 1), advice); /* advice only: the whole pages of the block */
  return p;
}
#endif

static void* gc__huge_alloc(void* self, size_t size, size_t alignment) {
#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
  if (size >= GC_HUGE_PAGE) return gc__advised_alloc(size, alignment, GC_HUGE_PAGE, MADV_HUGEPAGE);
#endif
  return gc__malloc_alloc(self, size, alignment);
}

static void* gc__small_alloc(void* self, size_t size, size_t alignment) {
#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
  if (size >= GC_HUGE_PAGE) return gc__advised_alloc(size, alignment, GC_SMALL_PAGE, MADV_NOHUGEPAGE);
#endif
  return gc__malloc_alloc(self, size, alignment);
}

static void gc__malloc_free(void* self, void* ptr) {
  (void)self;
  free(ptr);
}

void gc__default_allocator(gc_allocator_t* a, int huge_pages) {
  a->self = NULL;
  a->alloc = huge_pages ? gc__huge_alloc : gc__small_alloc;
  a->free = gc__malloc_free;
}

void* gc__alloc(const gc_allocator_t* a, size_t size, size_t alignment) {
  return a->alloc(a->self, size == 0 ? 1 : size, alignment);
}

void gc__free(const gc_allocator_t* a, void* ptr) {
  if (ptr != NULL) a->free(a->self, ptr);
}

static uint64_t gc__round_up(uint64_t x) { return (x + GC_ALIGN - 1) / GC_ALIGN * GC_ALIGN; }

/* The orders buffers are placed in (graphc/memory/planner.py, GreedyBySizeAllocator): each sorts by its key,
   ties by index, and is placed by best fit, then by first fit; the first of these giving the smallest arena
   wins. */
enum { GC__BY_SIZE, GC__BY_SIZE_LIFETIME, GC__BY_FIRST_USE, GC__BY_SIZE_POSITION, GC__NUM_ORDERS };

typedef struct {
  const gc_scratch_def_t* defs;
  const int64_t* sizes;
  int kind;
} gc__order_key_t;

static uint64_t gc__size(const gc__order_key_t* k, int32_t i) { return gc__round_up((uint64_t)k->sizes[i]); }

/* <0, 0, >0 as buffer a goes before, with or after buffer b in order k->kind (then by index). */
static int gc__compare(const gc__order_key_t* k, int32_t a, int32_t b) {
  uint64_t sa = gc__size(k, a), sb = gc__size(k, b);
  int64_t la = (int64_t)k->defs[a].last - k->defs[a].first, lb = (int64_t)k->defs[b].last - k->defs[b].first;
  int32_t fa = k->defs[a].first, fb = k->defs[b].first;
#define GC__KEY(x, y) \
  if ((x) != (y)) return (x) < (y) ? -1 : 1
  switch (k->kind) {
    case GC__BY_SIZE: /* larger first, then longer-lived, then earlier */
      GC__KEY(sb, sa);
      GC__KEY(lb, la);
      GC__KEY(fa, fb);
      break;
    case GC__BY_SIZE_LIFETIME: { /* larger size x lifetime first, then larger, then earlier */
      uint64_t pa = sa * (uint64_t)(la + 1), pb = sb * (uint64_t)(lb + 1);
      GC__KEY(pb, pa);
      GC__KEY(sb, sa);
      GC__KEY(fa, fb);
      break;
    }
    case GC__BY_FIRST_USE: /* earlier first use first, then larger */
      GC__KEY(fa, fb);
      GC__KEY(sb, sa);
      break;
    default: /* larger first, then by position */
      GC__KEY(sb, sa);
      break;
  }
#undef GC__KEY
  return a < b ? -1 : a > b;
}

/* order[0..n) sorted by gc__compare: a merge sort through tmp (stable; n log n, as Python's sort). */
static void gc__sort(const gc__order_key_t* k, int32_t* order, int32_t* tmp, uint32_t n) {
  for (uint32_t width = 1; width < n; width *= 2) {
    for (uint32_t lo = 0; lo < n; lo += 2 * width) {
      uint32_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
      uint32_t i = lo, j = mid, o = lo;
      while (i < mid && j < hi) tmp[o++] = gc__compare(k, order[j], order[i]) < 0 ? order[j++] : order[i++];
      while (i < mid) tmp[o++] = order[i++];
      while (j < hi) tmp[o++] = order[j++];
    }
    memcpy(order, tmp, sizeof(int32_t) * n);
  }
}

static int gc__compare_interval(const void* a, const void* b) {
  const uint64_t* x = (const uint64_t*)a;
  const uint64_t* y = (const uint64_t*)b;
  if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
  return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Each buffer of `order` in turn into a gap between the placed buffers alive with it that holds it -- the
   smallest such gap (best fit) or the lowest (first fit) -- else above them all. busy: room for n [lo, hi)
   pairs. Returns the arena size. */
static uint64_t gc__place(const gc__order_key_t* k, const int32_t* order, uint32_t n, int best_fit,
                          uint64_t* offsets, uint64_t* busy) {
  uint64_t arena = 0;
  for (uint32_t i = 0; i < n; i++) {
    int32_t b = order[i];
    uint64_t size = gc__size(k, b);
    uint32_t m = 0;
    for (uint32_t p = 0; p < i; p++) {
      int32_t o = order[p];
      if (k->defs[o].first <= k->defs[b].last && k->defs[b].first <= k->defs[o].last) {
        busy[2 * m] = offsets[o];
        busy[2 * m + 1] = offsets[o] + gc__size(k, o);
        m++;
      }
    }
    qsort(busy, m, 2 * sizeof(uint64_t), gc__compare_interval);
    uint64_t end = 0, best = 0, best_gap = 0;
    int found = 0;
    for (uint32_t q = 0; q < m; q++) {
      uint64_t lo = busy[2 * q], hi = busy[2 * q + 1];
      if (lo >= end && lo - end >= size && (!found || (best_fit && lo - end < best_gap))) {
        best = end;
        best_gap = lo - end;
        found = 1;
      }
      if (hi > end) end = hi;
    }
    offsets[b] = found ? best : end;
    if (offsets[b] + size > arena) arena = offsets[b] + size;
  }
  return arena;
}

uint64_t gc__plan_arena(const gc_scratch_def_t* defs, const int64_t* sizes, uint32_t n, uint64_t* offsets,
                        void* work) {
  uint64_t* trial = (uint64_t*)work;
  uint64_t* busy = trial + n;
  int32_t* order = (int32_t*)(busy + 2 * (size_t)n);
  int32_t* tmp = order + n;
  uint64_t arena = 0;
  for (int kind = 0; kind < GC__NUM_ORDERS; kind++) {
    gc__order_key_t key = {defs, sizes, kind};
    for (uint32_t i = 0; i < n; i++) order[i] = (int32_t)i;
    gc__sort(&key, order, tmp, n);
    for (int best_fit = 1; best_fit >= 0; best_fit--) {
      uint64_t size = gc__place(&key, order, n, best_fit, trial, busy);
      if ((kind == 0 && best_fit) || size < arena) {
        arena = size;
        if (n) memcpy(offsets, trial, sizeof(uint64_t) * n);
      }
    }
  }
  return arena;
}
