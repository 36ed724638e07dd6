/* test_train_step.c -- the training calls of the C ABI on a training-step library: every bad
 * argument returns a status whose code and message name what was wrong; good steps update the
 * instance's weights in place and report the loss.
 *
 * The library (built by tests/runtime/test_train_step_abi.py as "train_model"): a Dense layer
 * from x float32 (batch, 3) to 2 units, MSE loss, SGD; step inputs x, targets y (batch, 2).
 * Usage: test_train_step   (prints "ok <checks>" and exits 0 on success)
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "train_model.h"
#include "expect.h"

enum { BATCH = 4 };

int main(void) {
  const gc_model_t* m = gc_model_train_model();
  CHECK(gc_api_version() == 6u && GC_API_VERSION == 6u, "API version %u", gc_api_version());
  CHECK(gc_model_has_train_step(m) == 1, "no training step");
  CHECK(gc_model_has_train_step(NULL) == 0, "NULL model has a training step");
  CHECK(gc_model_num_step_inputs(m) == 1 && gc_model_num_step_targets(m) == 1, "step counts %zu, %zu",
        gc_model_num_step_inputs(m), gc_model_num_step_targets(m));
  size_t n_out = gc_model_num_step_outputs(m);
  CHECK(n_out >= 1 && n_out < gc_model_num_outputs(m), "reported outputs %zu of %zu", n_out,
        gc_model_num_outputs(m));
  CHECK(gc_model_num_step_inputs(NULL) == 0 && gc_model_num_step_outputs(NULL) == 0, "NULL model counts");

  /* options: a version-1 struct (without the seed) is accepted; any other size refused */
  gc_options_t o;
  gc_options_init(&o);
  CHECK(o.seed == 0, "default seed %llu", (unsigned long long)o.seed);
  gc_instance_t* inst = NULL;
  o.struct_size = (uint32_t)offsetof(gc_options_t, seed);
  o.num_threads = 1;
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  gc_instance_release(inst);
  inst = NULL;
  o.struct_size = 12;
  EXPECT_ERROR(gc_instance_create(m, &o, &inst), GC_INVALID_ARGUMENT, "struct_size");
  gc_options_init(&o);
  o.num_threads = 1;
  o.seed = 42;
  EXPECT_OK(gc_instance_create(m, &o, &inst));
  if (inst == NULL) return 1;

  float x[BATCH * 3], y[BATCH * 2], loss = -1.0f;
  for (int i = 0; i < BATCH * 3; i++) x[i] = (float)((i * 7) % 5) - 2.0f;
  for (int i = 0; i < BATCH * 2; i++) y[i] = (float)(i % 3);
  gc_tensor_t in = matrix_f32(x, BATCH, 3), target = matrix_f32(y, BATCH, 2);
  gc_tensor_t outs[16];
  memset(outs, 0, sizeof outs);

  EXPECT_ERROR(gc_instance_train_step(NULL, &in, 1, &target, 1, NULL, 0), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_train_step(inst, NULL, 1, &target, 1, NULL, 0), GC_INVALID_ARGUMENT, "inputs is NULL");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 2, &target, 1, NULL, 0), GC_INVALID_ARGUMENT, "takes 1 input(s)");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 0, &target, 1, NULL, 0), GC_INVALID_ARGUMENT, "takes 1 input(s)");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, NULL, 1, NULL, 0), GC_INVALID_ARGUMENT, "targets is NULL");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, &target, 0, NULL, 0), GC_INVALID_ARGUMENT, "takes 1 target(s)");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, &target, 1, outs, n_out + 1), GC_INVALID_ARGUMENT,
               "num_outputs");
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, &target, 1, NULL, n_out), GC_INVALID_ARGUMENT,
               "outputs is NULL");
  gc_tensor_t bad = matrix_f32(y, BATCH, 2);
  EXPECT_ERROR(gc_instance_train_step(inst, &bad, 1, &target, 1, NULL, 0), GC_INVALID_ARGUMENT, "expects shape");
  gc_tensor_t short_target = matrix_f32(y, BATCH - 1, 2);
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, &short_target, 1, NULL, 0), GC_INVALID_ARGUMENT, "batch");
  outs[0].data = &loss;
  outs[0].size_bytes = 2;
  EXPECT_ERROR(gc_instance_train_step(inst, &in, 1, &target, 1, outs, n_out), GC_INVALID_ARGUMENT, "needs 4 bytes");

  EXPECT_ERROR(gc_instance_set_hyperparameter(NULL, "learning_rate", 0.1), GC_INVALID_ARGUMENT, "instance is NULL");
  EXPECT_ERROR(gc_instance_set_hyperparameter(inst, NULL, 0.1), GC_INVALID_ARGUMENT, "name is NULL");
  EXPECT_ERROR(gc_instance_set_hyperparameter(inst, "momentum", 0.1), GC_NOT_FOUND, "'momentum'");
  EXPECT_ERROR(gc_instance_set_hyperparameter(inst, "learning_rate", NAN), GC_INVALID_ARGUMENT, "NaN");
  double lr = 0.0;
  EXPECT_ERROR(gc_instance_get_hyperparameter(inst, "learning_rate", NULL), GC_INVALID_ARGUMENT, "out_value");
  EXPECT_OK(gc_instance_get_hyperparameter(inst, "learning_rate", &lr));
  CHECK(fabs(lr - 0.05) < 1e-7, "initial learning rate %g, expected the optimizer's 0.05", lr);

  /* good steps: the loss falls, the weights change in place, a rate of 0 freezes them */
  float kernel0[3 * 2], kernel1[3 * 2];
  gc_tensor_t k0 = matrix_f32(kernel0, 3, 2), k1 = matrix_f32(kernel1, 3, 2);
  gc_tensor_desc_t wd;
  EXPECT_OK(gc_model_weight(m, 0, &wd));
  EXPECT_OK(gc_instance_get_weight(inst, wd.name, &k0));
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 20; step++) {
    memset(outs, 0, sizeof outs);
    outs[0].data = &loss;
    outs[0].size_bytes = sizeof loss;
    EXPECT_OK(gc_instance_train_step(inst, &in, 1, &target, 1, outs, n_out));
    CHECK(outs[0].rank == 0 && outs[0].dtype == GC_FLOAT32, "loss rank %d", (int)outs[0].rank);
    if (step == 0) first = loss;
    last = loss;
  }
  CHECK(last < first, "the loss did not fall: %g then %g", first, last);
  EXPECT_OK(gc_instance_get_weight(inst, wd.name, &k1));
  CHECK(memcmp(kernel0, kernel1, sizeof kernel0) != 0, "the weights did not change");
  EXPECT_OK(gc_instance_set_hyperparameter(inst, "learning_rate", 0.0));
  EXPECT_OK(gc_instance_train_step(inst, &in, 1, &target, 1, NULL, 0)); /* outputs may be omitted */
  EXPECT_OK(gc_instance_get_weight(inst, wd.name, &k0));
  CHECK(memcmp(kernel0, kernel1, sizeof kernel0) == 0, "a zero learning rate changed the weights");
  /* gc_instance_run sees the whole step graph: inputs, targets and hyperparameters */
  EXPECT_ERROR(gc_instance_run(inst, &in, 1, NULL, 0), GC_INVALID_ARGUMENT, "takes 3 input(s)");

  gc_instance_release(inst);
  if (g_failures) {
    fprintf(stderr, "%d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("ok %d\n", g_checks);
  return 0;
}
