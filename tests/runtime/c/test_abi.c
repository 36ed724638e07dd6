/* test_abi.c -- the C ABI's contract on a small model: every bad input returns a status whose
 * code and message name what was wrong; good calls give the right shapes.
 *
 * The model (built by tests/runtime/test_c_abi.py as "abi_model"):
 *   inputs  ids int32 (batch, seq), x float32 (batch, 8)
 *   outputs y float32 (batch, 4), pooled float32 (batch, 8)
 *   weights table (50, 8), w (8, 4), b (4,)
 * Usage: test_abi [iterations]   (prints "ok <checks>" and exits 0 on success)
 */
#define _POSIX_C_SOURCE 200112L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi_model.h"
#include "expect.h"

enum { BATCH = 3, SEQ = 5 };

typedef struct {
  int32_t ids[BATCH * SEQ];
  float x[BATCH * 8];
  gc_tensor_t in[2];
  float y[BATCH * 4];
  float pooled[BATCH * 8];
  gc_tensor_t out[2];
} io_t;

static void make_io(io_t* io) {
  memset(io, 0, sizeof(*io));
  for (int i = 0; i < BATCH * SEQ; i++) io->ids[i] = (i * 7) % 50;
  for (int i = 0; i < BATCH * 8; i++) io->x[i] = (float)(i % 5) - 2.0f;
  io->in[0] = (gc_tensor_t){GC_INT32, 2, {BATCH, SEQ}, io->ids, sizeof io->ids};
  io->in[1] = (gc_tensor_t){GC_FLOAT32, 2, {BATCH, 8}, io->x, sizeof io->x};
  io->out[0] = (gc_tensor_t){GC_FLOAT32, 0, {0}, io->y, sizeof io->y};
  io->out[1] = (gc_tensor_t){GC_FLOAT32, 0, {0}, io->pooled, sizeof io->pooled};
}

/* An allocator that never returns memory before the end (so that a released instance stays
   readable: use-after-release detection is then well defined). */
typedef struct {
  void* blocks[4096];
  int n;
} keeper_t;

static void* keeper_alloc(void* self, size_t size, size_t alignment) {
  keeper_t* k = (keeper_t*)self;
  void* p = NULL;
  if (k->n >= 4096 || posix_memalign(&p, alignment < sizeof(void*) ? sizeof(void*) : alignment, size) != 0)
    return NULL;
  k->blocks[k->n++] = p;
  return p;
}

static void keeper_free(void* self, void* ptr) {
  (void)self;
  (void)ptr;
}

static void keeper_release_all(keeper_t* k) {
  for (int i = 0; i < k->n; i++) free(k->blocks[i]);
  k->n = 0;
}

static void check_describe(const gc_model_t* m) {
  gc_tensor_desc_t d;
  g_checks++;
  if (gc_api_version() != GC_API_VERSION) FAIL("gc_api_version %u != %u", gc_api_version(), GC_API_VERSION);
  if (gc_model_num_inputs(m) != 2 || gc_model_num_outputs(m) != 2 || gc_model_num_weights(m) != 3)
    FAIL("model counts %zu %zu %zu", gc_model_num_inputs(m), gc_model_num_outputs(m), gc_model_num_weights(m));
  EXPECT_OK(gc_model_input(m, 0, &d));
  if (strcmp(d.name, "ids") != 0 || d.dtype != GC_INT32 || d.rank != 2 || d.shape[0] != -1 || d.shape[1] != -1 ||
      strcmp(d.dim_names[0], "batch") != 0)
    FAIL("input 0 described as %s dtype %d rank %d", d.name, d.dtype, d.rank);
  EXPECT_OK(gc_model_output(m, 0, &d));
  if (strcmp(d.name, "y") != 0 || d.shape[1] != 4) FAIL("output 0 described as %s", d.name);
  EXPECT_OK(gc_model_weight(m, 0, &d));
  size_t index = 99;
  EXPECT_OK(gc_model_find_input(m, "x", &index));
  if (index != 1) FAIL("find_input x -> %zu", index);
  EXPECT_ERROR(gc_model_find_input(m, "nope", &index), GC_NOT_FOUND, "'nope'");
  EXPECT_ERROR(gc_model_find_weight(m, NULL, &index), GC_INVALID_ARGUMENT, "NULL");
  EXPECT_ERROR(gc_model_input(m, 2, &d), GC_INVALID_ARGUMENT, "out of range");
  EXPECT_ERROR(gc_model_input(m, 0, NULL), GC_INVALID_ARGUMENT, "NULL");
  EXPECT_ERROR(gc_model_input(NULL, 0, &d), GC_INVALID_ARGUMENT, "model is NULL");
  if (!gc_model_has_embedded_weights(m)) FAIL("weights should be embedded");
  if (strcmp(gc_model_target_cpu(NULL), "") != 0 || strcmp(gc_model_target_features(NULL), "") != 0)
    FAIL("a NULL model's target should read \"\"");
  if (gc_model_target_cpu(m)[0] == '\0') FAIL("the model should name the CPU its code is for");
}

static void check_create(const gc_model_t* m) {
  gc_instance_t* inst = NULL;
  gc_options_t o;
  EXPECT_ERROR(gc_instance_create(NULL, NULL, &inst), GC_INVALID_ARGUMENT, "model is NULL");
  EXPECT_ERROR(gc_instance_create(m, NULL, NULL), GC_INVALID_ARGUMENT, "out_instance");
  gc_options_init(&o);
  o.struct_size = 3;
  EXPECT_ERROR(gc_instance_create(m, &o, &inst), GC_INVALID_ARGUMENT, "struct_size");
  gc_options_init(&o);
  o.num_threads = -2;
  EXPECT_ERROR(gc_instance_create(m, &o, &inst), GC_INVALID_ARGUMENT, "num_threads");
  gc_options_init(&o);
  o.allocator.alloc = keeper_alloc;
  EXPECT_ERROR(gc_instance_create(m, &o, &inst), GC_INVALID_ARGUMENT, "allocator");
  gc_options_init(&o);
  o.weights_path = "/nonexistent/graphc.weights";
  EXPECT_ERROR(gc_instance_create(m, &o, &inst), GC_NOT_FOUND, "/nonexistent/graphc.weights");
  if (inst != NULL) FAIL("a failed create left *out_instance set");
  /* API version 4's options end before huge_pages: accepted, huge pages by default */
  gc_options_init(&o);
  if (o.huge_pages != 1) FAIL("gc_options_init: huge_pages %d", o.huge_pages);
  o.struct_size = (uint32_t)offsetof(gc_options_t, huge_pages);
  o.huge_pages = 12345; /* past the struct the caller declared: never read */
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  gc_instance_release(inst);
  inst = NULL;
  gc_options_init(&o);
  o.huge_pages = 0;
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  gc_instance_release(inst);
  inst = NULL;
}

static void check_run_errors(gc_instance_t* inst) {
  io_t io;
  make_io(&io);
  EXPECT_ERROR(gc_instance_run(NULL, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_run(inst, NULL, 2, io.out, 2), GC_INVALID_ARGUMENT, "inputs is NULL");
  EXPECT_ERROR(gc_instance_run(inst, io.in, 1, io.out, 2), GC_INVALID_ARGUMENT, "takes 2 input(s), got 1");
  EXPECT_ERROR(gc_instance_run(inst, io.in, 3, io.out, 2), GC_INVALID_ARGUMENT, "got 3");
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, NULL, 2), GC_INVALID_ARGUMENT, "outputs is NULL");
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 1), GC_INVALID_ARGUMENT, "num_outputs = 1");

  make_io(&io);
  io.in[1].dtype = GC_FLOAT64;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "input 'x' (#1) expects dtype float32, got float64");
  make_io(&io);
  io.in[0].dtype = (gc_dtype_t)77;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "input 'ids'");
  make_io(&io);
  io.in[1].rank = 3;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "input 'x' expects shape (batch, 8) (rank 2)");
  make_io(&io);
  io.in[1].rank = 1000;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "invalid rank 1000");
  make_io(&io);
  io.in[1].shape[1] = 9;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "axis 1: expected 8, got 9");
  make_io(&io);
  io.in[1].shape[0] = 2;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT,
               "free dimension 'batch') is 2, but an earlier input gives 'batch' = 3");
  make_io(&io);
  io.in[0].shape[1] = 0;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "(free dimension 'seq') is 0");
  make_io(&io);
  io.in[0].shape[0] = -4;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "is -4");
  make_io(&io);
  io.in[0].shape[1] = (int64_t)1 << 50;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "the limit is");
  make_io(&io);
  io.in[0].shape[0] = (int64_t)1 << 39;
  io.in[0].shape[1] = (int64_t)1 << 39;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "too many elements");
  make_io(&io);
  io.in[1].size_bytes = 12;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "needs 96 bytes, size_bytes says 12");
  make_io(&io);
  io.in[1].data = NULL;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT, "input 'x' has data == NULL");
  make_io(&io);
  io.out[0].size_bytes = 8;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_INVALID_ARGUMENT,
               "output 'y' of shape (3, 4) float32 needs 48 bytes; its buffer has 8");
  make_io(&io);
  io.ids[4] = 50;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_OUT_OF_RANGE, "index 50 is out of range for a table of 50 rows");
  make_io(&io);
  io.ids[0] = -1;
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_OUT_OF_RANGE, "index -1");
  gc_tensor_t t;
  EXPECT_ERROR(gc_instance_output(inst, 0, &t), GC_FAILED_PRECONDITION, "no successful gc_instance_run");
  EXPECT_ERROR(gc_instance_output(inst, 5, &t), GC_INVALID_ARGUMENT, "out of range");
  EXPECT_ERROR(gc_instance_output(inst, 0, NULL), GC_INVALID_ARGUMENT, "out is NULL");
  EXPECT_ERROR(gc_instance_train_step(inst, io.in, 2, NULL, 0, NULL, 0), GC_UNIMPLEMENTED, "inference only");
  EXPECT_ERROR(gc_instance_set_hyperparameter(inst, "learning_rate", 0.1), GC_UNIMPLEMENTED, "inference only");
}

/* The memory plan of the last successful run: every scratch buffer named, inside the arena. */
static void check_memory_plan(gc_instance_t* inst) {
  gc_memory_info_t info;
  gc_scratch_info_t b;
  EXPECT_ERROR(gc_instance_memory(NULL, &info), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_memory(inst, NULL), GC_INVALID_ARGUMENT, "out is NULL");
  EXPECT_OK(gc_instance_memory(inst, &info));
  g_checks++;
  if (info.arena_copies != 1) FAIL("arena copies %d", info.arena_copies);
  size_t n = gc_model_num_scratch(gc_instance_model(inst));
  for (size_t i = 0; i < n; i++) {
    EXPECT_OK(gc_instance_scratch(inst, i, &b));
    g_checks++;
    if (b.name == NULL || b.name[0] == 0 || b.offset + b.nbytes > info.arena_bytes || b.first_op > b.last_op)
      FAIL("scratch %zu: %s at %llu (+%llu) of %llu, ops %d..%d", i, b.name ? b.name : "(null)",
           (unsigned long long)b.offset, (unsigned long long)b.nbytes, (unsigned long long)info.arena_bytes,
           b.first_op, b.last_op);
  }
  EXPECT_ERROR(gc_instance_scratch(inst, n, &b), GC_INVALID_ARGUMENT, "out of range");
  EXPECT_ERROR(gc_instance_scratch(inst, 0, NULL), GC_INVALID_ARGUMENT, "out is NULL");
}

static void check_run_ok(gc_instance_t* inst) {
  io_t io;
  make_io(&io);
  gc_memory_info_t info;
  EXPECT_ERROR(gc_instance_memory(inst, &info), GC_FAILED_PRECONDITION, "no run has succeeded yet");
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  check_memory_plan(inst);
  g_checks++;
  if (io.out[0].rank != 2 || io.out[0].shape[0] != BATCH || io.out[0].shape[1] != 4 || io.out[0].dtype != GC_FLOAT32)
    FAIL("output y shape (%lld, %lld)", (long long)io.out[0].shape[0], (long long)io.out[0].shape[1]);
  for (int i = 0; i < BATCH * 4; i++)
    if (!(io.y[i] >= 0.0f)) FAIL("y[%d] = %f is not a relu output", i, io.y[i]);
  /* instance-owned outputs, then gc_instance_output */
  gc_tensor_t owned[2];
  memset(owned, 0, sizeof owned);
  EXPECT_OK(gc_instance_run(inst, io.in, 2, owned, 2));
  g_checks++;
  if (owned[0].data == NULL || memcmp(owned[0].data, io.y, sizeof io.y) != 0) FAIL("instance-owned y differs");
  EXPECT_OK(gc_instance_run(inst, io.in, 2, NULL, 0));
  gc_tensor_t t;
  EXPECT_OK(gc_instance_output(inst, 1, &t));
  g_checks++;
  if (t.rank != 2 || t.shape[1] != 8 || memcmp(t.data, io.pooled, sizeof io.pooled) != 0) FAIL("gc_instance_output");
  /* another sequence length re-plans, then the first one again */
  int32_t ids2[BATCH * 2] = {1, 2, 3, 4, 5, 6};
  io.in[0].shape[1] = 2;
  io.in[0].data = ids2;
  io.in[0].size_bytes = sizeof ids2;
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  make_io(&io);
  float y_again[BATCH * 4];
  io.out[0].data = y_again;
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  make_io(&io);
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  g_checks++;
  if (memcmp(y_again, io.y, sizeof y_again) != 0) FAIL("results differ after another shape");
}

static void check_weights(gc_instance_t* inst) {
  float w[8 * 4], w0[8 * 4];
  gc_tensor_t t = {GC_FLOAT32, 2, {8, 4}, w0, sizeof w0};
  EXPECT_OK(gc_instance_get_weight(inst, "w", &t));
  EXPECT_ERROR(gc_instance_get_weight(inst, "nope", &t), GC_NOT_FOUND, "no weight named 'nope'");
  EXPECT_ERROR(gc_instance_get_weight(inst, NULL, &t), GC_INVALID_ARGUMENT, "NULL");
  EXPECT_ERROR(gc_instance_get_weight(inst, "w", NULL), GC_INVALID_ARGUMENT, "out is NULL");
  gc_tensor_t small = {GC_FLOAT32, 2, {8, 4}, w, 16};
  EXPECT_ERROR(gc_instance_get_weight(inst, "w", &small), GC_INVALID_ARGUMENT, "has 128 bytes");
  for (int i = 0; i < 32; i++) w[i] = 0.0f;
  gc_tensor_t bad = {GC_FLOAT32, 2, {4, 8}, w, sizeof w};
  EXPECT_ERROR(gc_instance_set_weight(inst, "w", &bad), GC_INVALID_ARGUMENT, "weight 'w' has shape (8, 4), got (4, 8)");
  bad = (gc_tensor_t){GC_INT32, 2, {8, 4}, w, sizeof w};
  EXPECT_ERROR(gc_instance_set_weight(inst, "w", &bad), GC_INVALID_ARGUMENT, "weight 'w' is float32, got int32");
  EXPECT_ERROR(gc_instance_set_weight(inst, "w", NULL), GC_INVALID_ARGUMENT, "value is NULL");
  /* zero weights and bias: y = relu(0) = 0 */
  gc_tensor_t zw = {GC_FLOAT32, 2, {8, 4}, w, sizeof w};
  EXPECT_OK(gc_instance_set_weight(inst, "w", &zw));
  float zb[4] = {0, 0, 0, 0};
  gc_tensor_t zbt = {GC_FLOAT32, 1, {4}, zb, sizeof zb};
  EXPECT_OK(gc_instance_set_weight(inst, "b", &zbt));
  io_t io;
  make_io(&io);
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  g_checks++;
  for (int i = 0; i < BATCH * 4; i++)
    if (io.y[i] != 0.0f) FAIL("y[%d] = %f with zero weights", i, io.y[i]);
  /* restore */
  gc_tensor_t back = {GC_FLOAT32, 2, {8, 4}, w0, sizeof w0};
  EXPECT_OK(gc_instance_set_weight(inst, "w", &back));
  EXPECT_OK(gc_instance_get_weight(inst, "w", &t));
  g_checks++;
  if (memcmp(w0, t.data, sizeof w0) != 0) FAIL("get after set differs");
}

static void check_use_after_release(const gc_model_t* m) {
  keeper_t keeper;
  keeper.n = 0;
  gc_options_t o;
  gc_options_init(&o);
  o.allocator.self = &keeper;
  o.allocator.alloc = keeper_alloc;
  o.allocator.free = keeper_free;
  o.num_threads = 2;
  gc_instance_t* inst = NULL;
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  io_t io;
  make_io(&io);
  EXPECT_OK(gc_instance_run(inst, io.in, 2, io.out, 2));
  gc_instance_release(inst);
  EXPECT_ERROR(gc_instance_run(inst, io.in, 2, io.out, 2), GC_FAILED_PRECONDITION, "instance was released");
  gc_instance_release(inst); /* a second release is ignored */
  keeper_release_all(&keeper);
}

int main(int argc, char** argv) {
  int iterations = argc > 1 ? atoi(argv[1]) : 1;
  const gc_model_t* m = gc_model_abi_model();
  gc_status_release(NULL);
  gc_instance_release(NULL);
  for (int it = 0; it < iterations && g_failures == 0; it++) {
    check_describe(m);
    check_create(m);
    gc_options_t o;
    gc_options_init(&o);
    o.num_threads = 1 + it % 2;
    gc_instance_t* inst = NULL;
    EXPECT_OK(gc_instance_create(m, &o, &inst));
    if (inst == NULL) break;
    check_run_errors(inst);
    check_run_ok(inst);
    check_weights(inst);
    gc_instance_release(inst);
    check_use_after_release(m);
  }
  if (g_failures) {
    fprintf(stderr, "%d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("ok %d\n", g_checks);
  return 0;
}
