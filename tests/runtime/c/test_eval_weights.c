/* test_eval_weights.c -- gc_instance_eval_step, gc_instance_save_weights and gc_instance_load_weights
 * of a training library: every bad argument returns a status whose code and message name what was
 * wrong; an evaluation step changes nothing; saved state loads back into a fresh instance.
 *
 * The library (built by tests/runtime/test_c_weights_roundtrip.py as "eval_model"): a Dense layer from
 * x float32 (batch, 3) to 2 units, MSE loss, MAE metric, SGD; step inputs x, targets y (batch, 2).
 * Usage: test_eval_weights DIR [released]   (DIR: a writable directory; "released" also calls the new
 * entry points on a released handle, which sanitizers would report as the use after free it is).
 * Prints "ok <checks>" and exits 0 on success.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_model.h"
#include "expect.h"

enum { BATCH = 4 };

static void kernel_of(gc_instance_t* inst, float out[6]) {
  gc_tensor_t w;
  memset(&w, 0, sizeof w);
  w.data = out;
  w.size_bytes = 6 * sizeof(float);
  EXPECT_OK(gc_instance_get_weight(inst, "dense/kernel", &w));
}

static float eval_loss(gc_instance_t* inst, gc_tensor_t* x, gc_tensor_t* y) {
  float loss = -1.0f;
  gc_tensor_t out[3];
  memset(out, 0, sizeof out);
  out[0].data = &loss;
  out[0].size_bytes = sizeof loss;
  EXPECT_OK(gc_instance_eval_step(inst, x, 1, y, 1, out, gc_model_num_step_outputs(gc_instance_model(inst))));
  return loss;
}

static void write_bytes(const char* path, const void* data, size_t n) {
  FILE* f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, n, f) != n) FAIL("cannot write %s", path);
  if (f) fclose(f);
}

static unsigned char* read_bytes(const char* path, size_t* n) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* p = malloc(*n);
  if (fread(p, 1, *n, f) != *n) *n = 0;
  fclose(f);
  return p;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [released]\n", argv[0]);
    return 2;
  }
  const char* dir = argv[1];
  const gc_model_t* m = gc_model_eval_model();
  CHECK(gc_model_has_eval_step(m) == 1, "no evaluation step");
  CHECK(gc_model_has_eval_step(NULL) == 0, "NULL model has an evaluation step");
  size_t n_out = gc_model_num_step_outputs(m);
  CHECK(n_out == 3, "%zu reported outputs, expected 3 (loss, MAE sum and count over samples)", n_out);

  gc_options_t o;
  gc_options_init(&o);
  o.num_threads = 1;
  gc_instance_t* inst = NULL;
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  if (inst == NULL) return 1;
  float xs[BATCH * 3], ys[BATCH * 2];
  for (int i = 0; i < BATCH * 3; i++) xs[i] = (float)((i * 7) % 5) * 0.25f - 0.5f;
  for (int i = 0; i < BATCH * 2; i++) ys[i] = (float)((i * 3) % 4) * 0.5f - 0.75f;
  gc_tensor_t x = matrix_f32(xs, BATCH, 3), y = matrix_f32(ys, BATCH, 2);
  gc_tensor_t out[3];
  memset(out, 0, sizeof out);

  /* ---- gc_instance_eval_step: bad arguments */
  EXPECT_ERROR(gc_instance_eval_step(NULL, &x, 1, &y, 1, out, 3), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_eval_step(inst, NULL, 1, &y, 1, out, 3), GC_INVALID_ARGUMENT, "inputs is NULL");
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, NULL, 1, out, 3), GC_INVALID_ARGUMENT, "targets is NULL");
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &y, 1, NULL, 3), GC_INVALID_ARGUMENT, "outputs is NULL");
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &y, 0, out, 3), GC_INVALID_ARGUMENT, "takes 1 target(s)");
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 2, &y, 1, out, 3), GC_INVALID_ARGUMENT, "takes 1 input(s)");
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &y, 1, out, 2), GC_INVALID_ARGUMENT, "reports 3 output(s)");
  gc_tensor_t narrow = matrix_f32(xs, BATCH, 2);
  EXPECT_ERROR(gc_instance_eval_step(inst, &narrow, 1, &y, 1, out, 3), GC_INVALID_ARGUMENT, "axis 1");
  gc_tensor_t short_y = matrix_f32(ys, BATCH - 1, 2);
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &short_y, 1, out, 3), GC_INVALID_ARGUMENT, "batch");
  gc_tensor_t bad_size = x;
  bad_size.size_bytes -= 4;
  EXPECT_ERROR(gc_instance_eval_step(inst, &bad_size, 1, &y, 1, out, 3), GC_INVALID_ARGUMENT, "size_bytes");
  gc_tensor_t bad_dtype = y;
  bad_dtype.dtype = GC_INT32;
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &bad_dtype, 1, out, 3), GC_INVALID_ARGUMENT, "dtype");
  char tiny[2];
  memset(out, 0, sizeof out);
  out[0].data = tiny;
  out[0].size_bytes = sizeof tiny;
  EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &y, 1, out, 3), GC_INVALID_ARGUMENT, "needs 4 bytes");

  /* ---- an evaluation step changes nothing; a training step changes what it reports */
  float before[6], after[6];
  kernel_of(inst, before);
  float first = eval_loss(inst, &x, &y);
  float again = eval_loss(inst, &x, &y);
  kernel_of(inst, after);
  CHECK(first >= 0.0f && first == again, "evaluation losses %g then %g", first, again);
  CHECK(memcmp(before, after, sizeof before) == 0, "an evaluation step changed the weights");
  memset(out, 0, sizeof out);
  EXPECT_OK(gc_instance_eval_step(inst, &x, 1, &y, 1, out, 0)); /* no outputs wanted */
  EXPECT_OK(gc_instance_eval_step(inst, &x, 1, &y, 1, out, 3)); /* all in instance memory */
  CHECK(out[0].data != NULL && out[0].rank == 0 && *(float*)out[0].data == first, "instance-owned loss");
  CHECK(out[2].data != NULL && *(float*)out[2].data == (float)BATCH, "MAE count %g",
        out[2].data ? *(float*)out[2].data : -1.0);
  EXPECT_OK(gc_instance_train_step(inst, &x, 1, &y, 1, NULL, 0));
  float trained = eval_loss(inst, &x, &y);
  CHECK(trained < first, "after a training step the evaluation loss is %g, before %g", trained, first);

  /* ---- gc_instance_save_weights / gc_instance_load_weights */
  char path[4096], missing[4096], bad[4096];
  snprintf(path, sizeof path, "%s/state.weights", dir);
  snprintf(missing, sizeof missing, "%s/no/such/dir/state.weights", dir);
  snprintf(bad, sizeof bad, "%s/bad.weights", dir);
  EXPECT_ERROR(gc_instance_save_weights(NULL, path), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_save_weights(inst, NULL), GC_INVALID_ARGUMENT, "path is NULL");
  EXPECT_ERROR(gc_instance_save_weights(inst, ""), GC_INVALID_ARGUMENT, "path is empty");
  EXPECT_ERROR(gc_instance_save_weights(inst, missing), GC_NOT_FOUND, "no/such/dir");
  EXPECT_ERROR(gc_instance_save_weights(inst, dir), GC_FAILED_PRECONDITION, "cannot rename");
  EXPECT_OK(gc_instance_save_weights(inst, path));
  EXPECT_ERROR(gc_instance_load_weights(NULL, path), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_load_weights(inst, NULL), GC_INVALID_ARGUMENT, "path is NULL");
  EXPECT_ERROR(gc_instance_load_weights(inst, missing), GC_NOT_FOUND, "cannot open");
  EXPECT_ERROR(gc_instance_load_weights(inst, dir), GC_INVALID_ARGUMENT, "not a regular file");

  gc_instance_t* fresh = NULL;
  EXPECT_OK(gc_instance_create(m, &o, &fresh));
  EXPECT_OK(gc_instance_load_weights(fresh, path));
  float loaded[6];
  kernel_of(inst, after);
  kernel_of(fresh, loaded);
  CHECK(memcmp(after, loaded, sizeof after) == 0, "the loaded kernel differs from the saved one");
  CHECK(eval_loss(fresh, &x, &y) == trained, "the loaded state evaluates differently");
  /* the iteration counter (an optimizer state weight) travels too: one step each gives equal weights */
  EXPECT_OK(gc_instance_train_step(inst, &x, 1, &y, 1, NULL, 0));
  EXPECT_OK(gc_instance_train_step(fresh, &x, 1, &y, 1, NULL, 0));
  kernel_of(inst, after);
  kernel_of(fresh, loaded);
  CHECK(memcmp(after, loaded, sizeof after) == 0, "the resumed instance trains differently");

  /* truncated, foreign and flipped files are refused and leave the weights in place */
  size_t n = 0;
  unsigned char* good = read_bytes(path, &n);
  CHECK(good != NULL && n > 48, "saved file of %zu bytes", n);
  if (good != NULL && n > 48) {
    kernel_of(fresh, before);
    write_bytes(bad, good, n - 1);
    EXPECT_ERROR(gc_instance_load_weights(fresh, bad), GC_DATA_LOSS, "truncated");
    write_bytes(bad, good, 20);
    EXPECT_ERROR(gc_instance_load_weights(fresh, bad), GC_DATA_LOSS, "not a graphc weights file");
    static const char zip[] = "PK\003\004 a zip archive, not weights";
    write_bytes(bad, zip, sizeof zip - 1);
    EXPECT_ERROR(gc_instance_load_weights(fresh, bad), GC_DATA_LOSS, "not a graphc weights file");
    int undetected = 0;
    for (size_t i = 8; i < n; i++) {
      if (i >= 16 && i < 24) continue; /* the layout digest: another one loads the same values by name */
      good[i] ^= 0x04;
      write_bytes(bad, good, n);
      gc_status_t s = gc_instance_load_weights(fresh, bad);
      if (s == NULL) undetected++;
      gc_status_release(s);
      good[i] ^= 0x04;
    }
    CHECK(undetected == 0, "%d flipped bytes of a saved file were not detected", undetected);
    kernel_of(fresh, after);
    CHECK(memcmp(before, after, sizeof before) == 0, "a refused file changed the weights");
    free(good);
  }
  remove(bad);
  gc_instance_release(fresh);

  /* ---- released handles */
  if (argc > 2 && strcmp(argv[2], "released") == 0) {
    gc_instance_release(inst);
    EXPECT_ERROR(gc_instance_eval_step(inst, &x, 1, &y, 1, NULL, 0), GC_FAILED_PRECONDITION, "released");
    EXPECT_ERROR(gc_instance_save_weights(inst, path), GC_FAILED_PRECONDITION, "released");
    EXPECT_ERROR(gc_instance_load_weights(inst, path), GC_FAILED_PRECONDITION, "released");
  } else {
    gc_instance_release(inst);
  }
  if (g_failures) {
    fprintf(stderr, "%d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("ok %d\n", g_checks);
  return 0;
}
