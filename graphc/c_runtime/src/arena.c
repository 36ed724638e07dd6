/* arena.c — the allocator hooks and the scratch-arena planner.
 *
 * Planner: buffers are sorted by size (largest first, ties by slot for determinism); each is
 * placed at the lowest 64-byte aligned offset where it overlaps no already-placed buffer whose
 * lifetime [first, last] intersects its own. This is the greedy-by-size scheme of TFLite
 * Micro's planner; it runs once per distinct set of free-dim values, not per call.
 */
#include <stdlib.h>
#include <string.h>

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

static void gc__malloc_free(void* self, void* ptr) {
  (void)self;
  free(ptr);
}

void gc__default_allocator(gc_allocator_t* a) {
  a->self = NULL;
  a->alloc = gc__malloc_alloc;
  a->free = gc__malloc_free;
}

void* gc__alloc(const gc_allocator_t* a, size_t size, size_t alignment) {
  return a->alloc(a->self, size == 0 ? 1 : size, alignment);
}

void gc__free(const gc_allocator_t* a, void* ptr) {
  if (ptr != NULL) a->free(a->self, ptr);
}

static uint64_t gc__round_up(uint64_t x) { return (x + GC_ALIGN - 1) / GC_ALIGN * GC_ALIGN; }

uint64_t gc__plan_arena(const gc_scratch_def_t* defs, const int64_t* sizes, uint32_t n, uint64_t* offsets,
                        int32_t* order) {
  for (uint32_t i = 0; i < n; i++) order[i] = (int32_t)i;
  /* insertion sort: n is the number of intermediate tensors, and this runs rarely */
  for (uint32_t i = 1; i < n; i++) {
    int32_t v = order[i];
    uint32_t j = i;
    while (j > 0 && (sizes[order[j - 1]] < sizes[v] ||
                     (sizes[order[j - 1]] == sizes[v] && order[j - 1] > v))) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = v;
  }
  uint64_t arena = 0;
  for (uint32_t i = 0; i < n; i++) {
    int32_t b = order[i];
    uint64_t size = gc__round_up((uint64_t)sizes[b]);
    uint64_t offset = 0;
    /* Move past every placed, lifetime-overlapping buffer that collides, until none does. */
    int moved = 1;
    while (moved) {
      moved = 0;
      for (uint32_t k = 0; k < i; k++) {
        int32_t o = order[k];
        if (defs[o].last < defs[b].first || defs[b].last < defs[o].first) continue;
        uint64_t o_end = offsets[o] + gc__round_up((uint64_t)sizes[o]);
        if (offsets[o] < offset + size && offset < o_end) {
          offset = o_end;
          moved = 1;
        }
      }
    }
    offsets[b] = offset;
    if (offset + size > arena) arena = offset + size;
  }
  return arena;
}
