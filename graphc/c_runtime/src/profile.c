/* profile.c — the kernel timer of an instance created with options.profile.
 *
 * The generated `run` function reads frame->profile once; when it is set, every launch goes
 * through gc__parallel_for_profiled, which reads a monotonic clock before and after the launch
 * (the whole parallel launch, as the calling thread waits for it) and adds the difference to the
 * launch's op. gc__profile_record_run times the run itself, so a caller can compare the sum of the
 * kernels with the whole. Events (launches and runs) are appended to a fixed table until it is
 * full; later ones are only counted as dropped, so a long profile never allocates while running.
 *
 * A profile belongs to its instance and follows the instance's threading rules: it is written only
 * during a run. Where a run's sub-batches run at once, one per thread (instance.c), each worker times
 * the launches of its own sub-batches: the counters are added to atomically, each event takes its
 * place in the table by an atomic increment and names the worker that ran it (0: the calling thread).
 */
#include <string.h>
#include <time.h>

#include "internal.h"

struct gc_profile {
  uint32_t num_ops;
  uint32_t max_events;
  uint64_t* op_ns;
  uint64_t* op_launches;
  gc_profile_event_t* events;
  uint64_t num_events;
  uint64_t dropped;
  uint64_t runs;
  uint64_t run_ns;
  int64_t epoch_ns; /* the clock's value at creation or reset */
};

static int64_t gc__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

gc_status_t gc__profile_create(const gc_allocator_t* a, uint32_t num_ops, uint32_t max_events, gc_profile_t** out) {
  *out = NULL;
  gc_profile_t* p = (gc_profile_t*)gc__alloc(a, sizeof(gc_profile_t), 64);
  if (p == NULL) return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate the profile of an instance");
  memset(p, 0, sizeof(*p));
  p->num_ops = num_ops;
  p->max_events = max_events;
  size_t n = num_ops > 0 ? num_ops : 1;
  p->op_ns = (uint64_t*)gc__alloc(a, n * sizeof(uint64_t), 64);
  p->op_launches = (uint64_t*)gc__alloc(a, n * sizeof(uint64_t), 64);
  if (max_events > 0) p->events = (gc_profile_event_t*)gc__alloc(a, (size_t)max_events * sizeof(gc_profile_event_t), 64);
  if (p->op_ns == NULL || p->op_launches == NULL || (max_events > 0 && p->events == NULL)) {
    gc__profile_release(a, p);
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a profile of %u ops and %u events", num_ops, max_events);
  }
  gc_profile_reset(p);
  *out = p;
  return NULL;
}

void gc__profile_release(const gc_allocator_t* a, gc_profile_t* p) {
  if (p == NULL) return;
  gc__free(a, p->op_ns);
  gc__free(a, p->op_launches);
  gc__free(a, p->events);
  gc__free(a, p);
}

static void gc__profile_event(gc_profile_t* p, int32_t op, int32_t thread, int64_t t0, int64_t t1) {
  uint64_t k = __atomic_fetch_add(&p->num_events, 1, __ATOMIC_RELAXED);
  if (k >= p->max_events) { /* the table is full (its readers count at most max_events) */
    __atomic_fetch_add(&p->dropped, 1, __ATOMIC_RELAXED);
    return;
  }
  gc_profile_event_t* e = &p->events[k];
  e->op = op;
  e->thread = thread;
  e->start_ns = t0 - p->epoch_ns;
  e->duration_ns = t1 - t0;
}

int32_t gc__parallel_for_profiled(void* pool, gc_task_fn fn, gc_frame_t* frame, int64_t n, int64_t cost, int32_t op) {
  gc_profile_t* p = frame->profile;
  int64_t t0 = gc__now_ns();
  int32_t r = gc__parallel_for(pool, fn, frame, n, cost);
  int64_t t1 = gc__now_ns();
  if (op >= 0 && (uint32_t)op < p->num_ops) {
    __atomic_fetch_add(&p->op_ns[op], (uint64_t)(t1 - t0), __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->op_launches[op], 1, __ATOMIC_RELAXED);
  }
  gc__profile_event(p, op, frame->worker, t0, t1);
  return r;
}

int64_t gc__profile_now(void) { return gc__now_ns(); }

void gc__profile_record_run(gc_profile_t* p, int64_t t0, int64_t t1) {
  p->runs++;
  p->run_ns += (uint64_t)(t1 - t0);
  gc__profile_event(p, -1, 0, t0, t1);
}

size_t gc_profile_num_ops(const gc_profile_t* p) { return p ? p->num_ops : 0; }
uint64_t gc_profile_runs(const gc_profile_t* p) { return p ? p->runs : 0; }
uint64_t gc_profile_run_ns(const gc_profile_t* p) { return p ? p->run_ns : 0; }
static uint64_t gc__recorded(const gc_profile_t* p) {
  return p->num_events < p->max_events ? p->num_events : p->max_events;
}

size_t gc_profile_num_events(const gc_profile_t* p) { return p ? (size_t)gc__recorded(p) : 0; }
uint64_t gc_profile_dropped_events(const gc_profile_t* p) { return p ? p->dropped : 0; }

gc_status_t gc_profile_op_times(const gc_profile_t* p, uint64_t* op_ns, uint64_t* launches, size_t num_ops) {
  if (p == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "profile is NULL (create the instance with options.profile)");
  if (op_ns == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "op_ns is NULL");
  if (num_ops != p->num_ops)
    return GC_ERROR(GC_INVALID_ARGUMENT, "the profile counts %u ops, got num_ops = %zu", p->num_ops, num_ops);
  memcpy(op_ns, p->op_ns, num_ops * sizeof(uint64_t));
  if (launches != NULL) memcpy(launches, p->op_launches, num_ops * sizeof(uint64_t));
  return NULL;
}

gc_status_t gc_profile_events(const gc_profile_t* p, gc_profile_event_t* events, size_t num_events) {
  if (p == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "profile is NULL (create the instance with options.profile)");
  if (events == NULL && num_events > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "events is NULL");
  if (num_events > gc__recorded(p))
    return GC_ERROR(GC_INVALID_ARGUMENT, "the profile holds %llu events, asked for %zu",
                    (unsigned long long)gc__recorded(p), num_events);
  if (num_events > 0) memcpy(events, p->events, num_events * sizeof(gc_profile_event_t));
  return NULL;
}

void gc_profile_reset(gc_profile_t* p) {
  if (p == NULL) return;
  memset(p->op_ns, 0, (p->num_ops > 0 ? p->num_ops : 1) * sizeof(uint64_t));
  memset(p->op_launches, 0, (p->num_ops > 0 ? p->num_ops : 1) * sizeof(uint64_t));
  p->num_events = 0;
  p->dropped = 0;
  p->runs = 0;
  p->run_ns = 0;
  p->epoch_ns = gc__now_ns();
}
