/* test_hardening.c -- the C ABI under conditions a well-behaved caller never creates: allocations
 * that fail, one instance shared by two threads, a handle used after release, absurd thread
 * counts, corrupted weights files.
 *
 * The model: "abi_model" (see test_abi.c). Usage: test_hardening MODE [ARG], MODE one of
 *   alloc WEIGHTS    the n-th allocation fails, for every n: create, run, set_weight, load_weights
 *                    each fail cleanly (GC_RESOURCE_EXHAUSTED), the instance stays usable, nothing leaks
 *   shared ROUNDS    two threads call one instance: every call is either right or refused with
 *                    GC_FAILED_PRECONDITION "in use by another thread" (and some are refused)
 *   released         a handle used after gc_instance_release (default allocator) is reported as released
 *   threads          num_threads beyond gc_max_threads() is clamped to it
 *   weights WEIGHTS  a valid weights file loads; a flipped byte, trailing bytes, a truncation are refused
 * Prints "ok <checks>" and exits 0 on success.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "abi_model.h"
#include "expect.h"

/* NULL, or the status's code when it has `code` and mentions `needle` (else a failure). */
static int expect(gc_status_t s, gc_status_code_t code, const char* needle, const char* what) {
  g_checks++;
  if (s == NULL) return 0;
  int ok = gc_status_code(s) == code && strstr(gc_status_message(s), needle) != NULL;
  if (!ok)
    FAIL("%s: %s (%s), expected %s mentioning \"%s\"", what, gc_status_message(s),
         gc_status_code_name(gc_status_code(s)), gc_status_code_name(code), needle);
  gc_status_release(s);
  return ok ? 1 : -1;
}

static void expect_ok(gc_status_t s, const char* what) {
  g_checks++;
  if (s != NULL) {
    FAIL("%s failed: %s (%s)", what, gc_status_message(s), gc_status_code_name(gc_status_code(s)));
    gc_status_release(s);
  }
}

/* ------------------------------------------------------------------ inputs and expected outputs */

typedef struct {
  int batch, seq;
  int32_t* ids;
  float* x;
  float* y;
  float* pooled;
  gc_tensor_t in[2];
  gc_tensor_t out[2];
} io_t;

static void io_init(io_t* io, int batch, int seq, int seed) {
  io->batch = batch;
  io->seq = seq;
  io->ids = calloc((size_t)(batch * seq), sizeof(int32_t));
  io->x = calloc((size_t)(batch * 8), sizeof(float));
  io->y = calloc((size_t)(batch * 4), sizeof(float));
  io->pooled = calloc((size_t)(batch * 8), sizeof(float));
  for (int i = 0; i < batch * seq; i++) io->ids[i] = (seed * 13 + i * 7) % 50;
  for (int i = 0; i < batch * 8; i++) io->x[i] = (float)((seed * 31 + i * 17) % 23) / 7.0f - 1.5f;
  io->in[0] = (gc_tensor_t){GC_INT32, 2, {batch, seq}, io->ids, sizeof(int32_t) * (size_t)(batch * seq)};
  io->in[1] = (gc_tensor_t){GC_FLOAT32, 2, {batch, 8}, io->x, sizeof(float) * (size_t)(batch * 8)};
  io->out[0] = (gc_tensor_t){GC_FLOAT32, 0, {0}, io->y, sizeof(float) * (size_t)(batch * 4)};
  io->out[1] = (gc_tensor_t){GC_FLOAT32, 0, {0}, io->pooled, sizeof(float) * (size_t)(batch * 8)};
}

static void io_free(io_t* io) {
  free(io->ids);
  free(io->x);
  free(io->y);
  free(io->pooled);
}

/* y of `io` computed by a fresh instance with the default allocator. */
static float* expected_y(const gc_model_t* m, io_t* io) {
  gc_instance_t* inst = NULL;
  expect_ok(gc_instance_create(m, NULL, &inst), "create (reference)");
  expect_ok(gc_instance_run(inst, io->in, 2, io->out, 2), "run (reference)");
  gc_instance_release(inst);
  float* y = malloc(sizeof(float) * (size_t)(io->batch * 4));
  memcpy(y, io->y, sizeof(float) * (size_t)(io->batch * 4));
  memset(io->y, 0, sizeof(float) * (size_t)(io->batch * 4));
  return y;
}

/* ------------------------------------------------------------------ alloc: the n-th allocation fails */

typedef struct {
  long calls, fail_at, live;
} failing_t;

static void* failing_alloc(void* self, size_t size, size_t alignment) {
  failing_t* f = (failing_t*)self;
  if (++f->calls == f->fail_at) return NULL;
  void* p = NULL;
  if (posix_memalign(&p, alignment < sizeof(void*) ? sizeof(void*) : alignment, size ? size : 1) != 0) return NULL;
  f->live++;
  return p;
}

static void failing_free(void* self, void* ptr) {
  failing_t* f = (failing_t*)self;
  if (ptr == NULL) return;
  f->live--;
  free(ptr);
}

/* One call of the scenario: OK, or GC_RESOURCE_EXHAUSTED when the failing allocation was in it. */
static void step(failing_t* f, gc_status_t s, const char* what) {
  int hit = f->calls >= f->fail_at && f->fail_at > 0;
  if (s == NULL) return;
  if (!hit || expect(s, GC_RESOURCE_EXHAUSTED, "", what) != 1) {
    if (!hit) FAIL("%s failed without an allocation failure", what);
  }
}

static int scenario(const gc_model_t* m, long fail_at, const char* weights, const float* want, io_t* io) {
  failing_t f = {0, fail_at, 0};
  gc_options_t o;
  gc_options_init(&o);
  o.num_threads = 2;
  o.allocator = (gc_allocator_t){&f, failing_alloc, failing_free};
  gc_instance_t* inst = NULL;
  gc_status_t s = gc_instance_create(m, &o, &inst);
  if (s != NULL) {
    expect(s, GC_RESOURCE_EXHAUSTED, "", "create");
    CHECK(inst == NULL, "a failed create left *out_instance set (n = %ld)", fail_at);
    CHECK(f.live == 0, "a failed create leaked %ld allocation(s) (n = %ld)", f.live, fail_at);
    return 1;
  }
  gc_tensor_t owned[2];
  for (int round = 0; round < 2; round++) {
    memset(owned, 0, sizeof owned);
    step(&f, gc_instance_run(inst, io->in, 2, owned, 2), "run (instance-owned outputs)");
    step(&f, gc_instance_run(inst, io->in, 2, io->out, 2), "run");
  }
  float w[8 * 4];
  gc_tensor_t wt = {GC_FLOAT32, 2, {8, 4}, w, sizeof w};
  expect_ok(gc_instance_get_weight(inst, "w", &wt), "get_weight");
  step(&f, gc_instance_set_weight(inst, "w", &wt), "set_weight");
  step(&f, gc_instance_load_weights(inst, weights), "load_weights");
  /* the instance still computes the right thing (every allocation from here on succeeds) */
  long hit = f.calls >= fail_at;
  memset(io->y, 0, sizeof(float) * (size_t)(io->batch * 4));
  memset(owned, 0, sizeof owned);
  f.fail_at = 0;
  expect_ok(gc_instance_run(inst, io->in, 2, owned, 2), "run after the failure");
  expect_ok(gc_instance_run(inst, io->in, 2, io->out, 2), "run after the failure");
  CHECK(memcmp(io->y, want, sizeof(float) * (size_t)(io->batch * 4)) == 0, "wrong y after a failure at n = %ld",
        fail_at);
  gc_instance_release(inst);
  CHECK(f.live == 0, "%ld allocation(s) leaked (n = %ld)", f.live, fail_at);
  return (int)hit;
}

static void mode_alloc(const gc_model_t* m, const char* weights) {
  io_t io;
  io_init(&io, 3, 5, 1);
  float* want = expected_y(m, &io);
  long n = 1;
  while (g_failures == 0 && scenario(m, n, weights, want, &io)) n++;
  CHECK(n > 10, "the scenario made only %ld allocations", n);
  free(want);
  io_free(&io);
}

/* ------------------------------------------------------------------ shared: two threads, one instance */

typedef struct {
  gc_instance_t* inst;
  io_t io;
  float* want;
  int rounds;
  long ok, busy;
  int failures;
  char error[512];
  pthread_barrier_t* start;
} sharer_t;

/* set by the first refusal: the sharers go on past their rounds (for at most 20 s) until one is seen, so
 * that a loaded machine which happens to run them one after the other cannot fail the check */
static _Atomic int any_refusal;

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void* sharer(void* arg) {
  sharer_t* s = (sharer_t*)arg;
  pthread_barrier_wait(s->start);
  double deadline = seconds_now() + 20.0;
  for (int r = 0; (r < s->rounds || (!atomic_load(&any_refusal) && seconds_now() < deadline)) && !s->failures;
       r++) {
    memset(s->io.y, 0, sizeof(float) * (size_t)(s->io.batch * 4));
    gc_status_t st = gc_instance_run(s->inst, s->io.in, 2, s->io.out, 2);
    if (st == NULL) {
      s->ok++;
      if (memcmp(s->io.y, s->want, sizeof(float) * (size_t)(s->io.batch * 4)) != 0) {
        snprintf(s->error, sizeof s->error, "round %d: a successful run gave a wrong result", r);
        s->failures++;
      }
    } else if (gc_status_code(st) == GC_FAILED_PRECONDITION &&
               strstr(gc_status_message(st), "in use by another thread") != NULL) {
      s->busy++;
      atomic_store(&any_refusal, 1);
      gc_status_release(st);
    } else {
      snprintf(s->error, sizeof s->error, "round %d: %s (%s)", r, gc_status_message(st),
               gc_status_code_name(gc_status_code(st)));
      gc_status_release(st);
      s->failures++;
    }
  }
  return NULL;
}

static void mode_shared(const gc_model_t* m, int rounds) {
  gc_options_t o;
  gc_options_init(&o);
  o.num_threads = 1;
  gc_instance_t* inst = NULL;
  expect_ok(gc_instance_create(m, &o, &inst), "create");
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, 2);
  sharer_t s[2];
  pthread_t t[2];
  for (int k = 0; k < 2; k++) {
    memset(&s[k], 0, sizeof s[k]);
    /* different sequence lengths: each call re-plans the scratch arena of the other's shapes */
    io_init(&s[k].io, 16, 24 + 9 * k, 3 + k);
    s[k].want = expected_y(m, &s[k].io);
    s[k].inst = inst;
    s[k].rounds = rounds;
    s[k].start = &start;
  }
  for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, sharer, &s[k]);
  for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
  long busy = 0, ok = 0;
  for (int k = 0; k < 2; k++) {
    CHECK(s[k].failures == 0, "thread %d: %s", k, s[k].error);
    busy += s[k].busy;
    ok += s[k].ok;
    free(s[k].want);
    io_free(&s[k].io);
  }
  CHECK(busy > 0, "no call was refused as concurrent in %d rounds per thread", rounds);
  CHECK(ok > 0, "no call succeeded");
  /* afterwards the instance serves one thread normally */
  io_t io;
  io_init(&io, 2, 3, 9);
  float* want = expected_y(m, &io);
  expect_ok(gc_instance_run(inst, io.in, 2, io.out, 2), "run after sharing");
  CHECK(memcmp(io.y, want, sizeof(float) * 8) == 0, "wrong result after sharing");
  free(want);
  io_free(&io);
  pthread_barrier_destroy(&start);
  gc_instance_release(inst);
}

/* ------------------------------------------------------------------ released, threads */

static void mode_released(const gc_model_t* m) {
  io_t io;
  io_init(&io, 2, 3, 1);
  for (int threads = 1; threads <= 2; threads++) {
    gc_options_t o;
    gc_options_init(&o);
    o.num_threads = threads;
    gc_instance_t* inst = NULL;
    expect_ok(gc_instance_create(m, &o, &inst), "create");
    expect_ok(gc_instance_run(inst, io.in, 2, io.out, 2), "run");
    gc_instance_release(inst);
    /* deliberately reading a released handle: what the runtime promises to detect (best effort) */
    CHECK(expect(gc_instance_run(inst, io.in, 2, io.out, 2), GC_FAILED_PRECONDITION, "instance was released",
                 "run after release") == 1, "a released instance was not reported as released");
    CHECK(gc_instance_num_threads(inst) == 0, "num_threads of a released instance");
    CHECK(gc_instance_model(inst) == NULL, "model of a released instance");
  }
  io_free(&io);
}

static void mode_threads(const gc_model_t* m) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int32_t limit = (int32_t)(4 * (cores > 0 ? cores : 1));
  if (limit > 1024) limit = 1024;
  CHECK(gc_max_threads() == limit, "gc_max_threads() = %d, expected %d (4 x %ld cores)", (int)gc_max_threads(),
        (int)limit, cores);
  int32_t asked[] = {limit, limit + 1, 5000, INT32_MAX};
  for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
    gc_options_t o;
    gc_options_init(&o);
    o.num_threads = asked[i];
    gc_instance_t* inst = NULL;
    expect_ok(gc_instance_create(m, &o, &inst), "create");
    CHECK(gc_instance_num_threads(inst) == limit, "num_threads %d gave %d threads, expected %d", (int)asked[i],
          (int)gc_instance_num_threads(inst), (int)limit);
    gc_instance_release(inst);
  }
}

/* ------------------------------------------------------------------ weights files */

static unsigned char* read_file(const char* path, size_t* n) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* data = malloc((size_t)size + 64);
  *n = fread(data, 1, (size_t)size, f);
  fclose(f);
  return data;
}

static void write_file(const char* path, const unsigned char* data, size_t n) {
  FILE* f = fopen(path, "wb");
  fwrite(data, 1, n, f);
  fclose(f);
}

static void mode_weights(const gc_model_t* m, const char* path) {
  size_t n = 0;
  unsigned char* good = read_file(path, &n);
  if (good == NULL) {
    FAIL("cannot read %s", path);
    return;
  }
  gc_instance_t* inst = NULL;
  expect_ok(gc_instance_create(m, NULL, &inst), "create");
  expect_ok(gc_instance_load_weights(inst, path), "load_weights (valid file)");
  char bad[4096];
  snprintf(bad, sizeof bad, "%s.bad", path);
  /* every byte of the payload, flipped one bit at a time */
  for (size_t i = 32; i < n; i++) {
    unsigned char* copy = malloc(n);
    memcpy(copy, good, n);
    copy[i] ^= (unsigned char)(1u << (i % 8));
    write_file(bad, copy, n);
    free(copy);
    CHECK(expect(gc_instance_load_weights(inst, bad), GC_DATA_LOSS, "checksum", "flipped payload byte") == 1,
          "a flipped bit at byte %zu was not detected", i);
  }
  /* every byte of the header: refused, whatever the reason */
  for (size_t i = 0; i < 32; i++) {
    unsigned char* copy = malloc(n);
    memcpy(copy, good, n);
    copy[i] ^= 0x10;
    write_file(bad, copy, n);
    free(copy);
    gc_status_t s = gc_instance_load_weights(inst, bad);
    CHECK(s != NULL, "a flipped header byte %zu was not detected", i);
    gc_status_release(s);
  }
  unsigned char* longer = malloc(n + 7);
  memcpy(longer, good, n);
  memcpy(longer + n, "garbage", 7);
  for (size_t extra = 1; extra <= 7; extra += 6) {
    write_file(bad, longer, n + extra);
    CHECK(expect(gc_instance_load_weights(inst, bad), GC_DATA_LOSS, "trailing", "trailing bytes") == 1,
          "%zu trailing byte(s) were not refused", extra);
  }
  free(longer);
  write_file(bad, good, n - 1);
  CHECK(expect(gc_instance_load_weights(inst, bad), GC_DATA_LOSS, "truncated", "truncated file") == 1,
        "a truncated file was not refused");
  /* after all those refusals the valid weights are still in place */
  expect_ok(gc_instance_load_weights(inst, path), "load_weights (valid file again)");
  remove(bad);
  gc_instance_release(inst);
  free(good);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s alloc WEIGHTS | shared ROUNDS | released | threads | weights WEIGHTS\n", argv[0]);
    return 2;
  }
  const gc_model_t* m = gc_model_abi_model();
  const char* mode = argv[1];
  if (strcmp(mode, "alloc") == 0 && argc > 2) {
    mode_alloc(m, argv[2]);
  } else if (strcmp(mode, "shared") == 0) {
    mode_shared(m, argc > 2 ? atoi(argv[2]) : 20000);
  } else if (strcmp(mode, "released") == 0) {
    mode_released(m);
  } else if (strcmp(mode, "threads") == 0) {
    mode_threads(m);
  } else if (strcmp(mode, "weights") == 0 && argc > 2) {
    mode_weights(m, argv[2]);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  if (g_failures) {
    fprintf(stderr, "%d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("ok %d\n", g_checks);
  return 0;
}
