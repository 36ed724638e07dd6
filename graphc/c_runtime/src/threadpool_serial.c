/* threadpool_serial.c — the thread pool of platforms without threads (WebAssembly under WASI).
 *
 * Every pool has one thread, the caller: gc__parallel_for runs the whole range in one call. The
 * results are those of any thread count (threadpool.c: kernels compute each item the same way
 * whichever thread runs it). Elsewhere threadpool.c is the pool and this file compiles to nothing.
 */
#include "internal.h"

#if defined(__wasi__)

struct gc_pool {
  gc_allocator_t alloc;
};

int32_t gc_max_threads(void) { return 1; }

gc_status_t gc__pool_create(const gc_allocator_t* a, int32_t num_threads, gc_pool_t** out) {
  (void)num_threads; /* clamped to gc_max_threads(), as on every platform */
  *out = (gc_pool_t*)gc__alloc(a, sizeof(gc_pool_t), 16);
  if (*out == NULL) return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a thread pool");
  (*out)->alloc = *a;
  return NULL;
}

void gc__pool_release(gc_pool_t* p) {
  if (p == NULL) return;
  gc_allocator_t a = p->alloc;
  gc__free(&a, p);
}

int32_t gc__pool_num_threads(const gc_pool_t* p) {
  (void)p;
  return 1;
}

int32_t gc__parallel_for(void* pool, gc_task_fn fn, gc_frame_t* frame, int64_t n, int64_t cost) {
  (void)pool;
  (void)cost;
  return n > 0 ? fn(frame, 0, n, 0) : 0;
}

#endif /* __wasi__ */
