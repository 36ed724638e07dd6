/* main.c -- train a model compiled by graphc from C, with nothing but its library and header.
 *
 *   usage: train DATA_FILE [EPOCHS] [BATCH] [LEARNING_RATE] [WEIGHTS_OUT]
 *
 * DATA_FILE holds two float32 tensors, each a line "name rank d0 d1 ..." followed by its values
 * (whitespace separated, row-major): the inputs x (samples first) and the targets y. The program
 * runs EPOCHS passes over the samples in order, BATCH samples per gc_instance_train_step, and
 * prints "epoch K loss L" after each: L is the epoch's mean loss over its samples (as Keras's
 * fit reports it). The weights and optimizer state stay inside the instance from step to step;
 * LEARNING_RATE, when given (and not "-"), replaces the library's through
 * gc_instance_set_hyperparameter. With WEIGHTS_OUT the program then evaluates the trained model on
 * the same samples (gc_instance_eval_step: inference mode, nothing updated), prints
 * "evaluate loss L" (the mean over samples, as Keras's evaluate reports it) and saves the weights
 * and optimizer state to WEIGHTS_OUT (gc_instance_save_weights), a file graphc's
 * Model.load_weights reads.
 *
 * The library comes from `graphc compile MODEL --target native --training -o build` (one model
 * input, one target); build with the Makefile:
 *   cc -std=c11 -O2 -I build -DMODEL=mlp main.c build/libmlp.a -lpthread -lm
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL
#error "define MODEL to the model's name (e.g. -DMODEL=mlp)"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#include STR(MODEL.h)
#define MODEL_HANDLE CAT(gc_model_, MODEL)

static int check(gc_status_t status, const char* what) {
  if (status == NULL) return 0;
  fprintf(stderr, "train: %s failed: %s [%s]\n", what, gc_status_message(status),
          gc_status_code_name(gc_status_code(status)));
  gc_status_release(status);
  return 1;
}

/* One float32 tensor read from the data file. */
typedef struct {
  int32_t rank;
  int64_t shape[GC_MAX_RANK];
  size_t count;
  float* values;
} array_t;

static int read_array(FILE* f, array_t* a) {
  char name[256];
  if (fscanf(f, "%255s %d", name, &a->rank) != 2 || a->rank < 1 || a->rank > GC_MAX_RANK) return 1;
  a->count = 1;
  for (int32_t i = 0; i < a->rank; i++) {
    long long d;
    if (fscanf(f, "%lld", &d) != 1 || d < 1 || d > (1LL << 31)) return 1;
    a->shape[i] = d;
    if (a->count > SIZE_MAX / (size_t)d / sizeof(float)) return 1;
    a->count *= (size_t)d;
  }
  a->values = (float*)malloc(a->count * sizeof(float));
  if (a->values == NULL) return 1;
  for (size_t i = 0; i < a->count; i++)
    if (fscanf(f, "%f", &a->values[i]) != 1) return 1;
  return 0;
}

/* Rows [start, start + n) of a as a tensor. */
static gc_tensor_t rows(const array_t* a, int64_t start, int64_t n) {
  gc_tensor_t t;
  memset(&t, 0, sizeof t);
  t.dtype = GC_FLOAT32;
  t.rank = a->rank;
  size_t row = a->count / (size_t)a->shape[0];
  for (int32_t i = 0; i < a->rank; i++) t.shape[i] = a->shape[i];
  t.shape[0] = n;
  t.data = a->values + (size_t)start * row;
  t.size_bytes = (size_t)n * row * sizeof(float);
  return t;
}

/* The loss of the trained model over all samples (gc_instance_eval_step, BATCH at a time), then its
   weights and optimizer state saved to `path`. */
static int evaluate_and_save(gc_instance_t* inst, const array_t* x, const array_t* y, int64_t batch,
                             gc_tensor_t* outputs, size_t n_out, const char* path) {
  if (!gc_model_has_eval_step(gc_instance_model(inst))) {
    fprintf(stderr, "train: the library has no evaluation step (graphc compile --training)\n");
    return 1;
  }
  double total = 0.0;
  float loss = 0.0f;
  for (int64_t start = 0; start < x->shape[0]; start += batch) {
    int64_t n = x->shape[0] - start < batch ? x->shape[0] - start : batch;
    gc_tensor_t in = rows(x, start, n), target = rows(y, start, n);
    memset(outputs, 0, n_out * sizeof(gc_tensor_t));
    outputs[0].data = &loss;
    outputs[0].size_bytes = sizeof loss;
    if (check(gc_instance_eval_step(inst, &in, 1, &target, 1, outputs, n_out), "gc_instance_eval_step")) return 1;
    total += (double)loss * (double)n;
  }
  printf("evaluate loss %.9g\n", total / (double)x->shape[0]);
  if (check(gc_instance_save_weights(inst, path), "gc_instance_save_weights")) return 1;
  printf("saved %s\n", path);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DATA_FILE [EPOCHS] [BATCH] [LEARNING_RATE] [WEIGHTS_OUT]\n", argv[0]);
    return 2;
  }
  int epochs = argc > 2 ? atoi(argv[2]) : 5;
  int64_t batch = argc > 3 ? atoll(argv[3]) : 16;
  if (epochs < 1 || batch < 1) {
    fprintf(stderr, "train: EPOCHS and BATCH must be at least 1\n");
    return 2;
  }
  FILE* f = fopen(argv[1], "r");
  if (f == NULL) {
    fprintf(stderr, "train: cannot open %s\n", argv[1]);
    return 1;
  }
  array_t x, y;
  memset(&x, 0, sizeof x);
  memset(&y, 0, sizeof y);
  int bad = read_array(f, &x) || read_array(f, &y);
  fclose(f);
  if (bad || x.shape[0] != y.shape[0]) {
    fprintf(stderr, "train: %s must hold x and y with the same number of samples\n", argv[1]);
    return 1;
  }
  const gc_model_t* model = MODEL_HANDLE();
  if (!gc_model_has_train_step(model) || gc_model_num_step_inputs(model) != 1 ||
      gc_model_num_step_targets(model) != 1) {
    fprintf(stderr, "train: model '%s' has no training step of one input and one target "
            "(graphc compile --training)\n", gc_model_name(model));
    return 1;
  }
  gc_options_t options;
  gc_options_init(&options);
  options.num_threads = 1;
  gc_instance_t* inst = NULL;
  if (check(gc_instance_create(model, &options, &inst), "gc_instance_create")) return 1;
  int status = 0;
  if (argc > 4 && strcmp(argv[4], "-") != 0 &&
      check(gc_instance_set_hyperparameter(inst, "learning_rate", atof(argv[4])), "set learning_rate"))
    status = 1;
  size_t n_out = gc_model_num_step_outputs(model);
  gc_tensor_t* outputs = (gc_tensor_t*)calloc(n_out, sizeof(gc_tensor_t));
  float loss = 0.0f;
  for (int epoch = 1; status == 0 && epoch <= epochs; epoch++) {
    double total = 0.0;
    for (int64_t start = 0; start < x.shape[0]; start += batch) {
      int64_t n = x.shape[0] - start < batch ? x.shape[0] - start : batch;
      gc_tensor_t in = rows(&x, start, n), target = rows(&y, start, n);
      memset(outputs, 0, n_out * sizeof(gc_tensor_t));
      outputs[0].data = &loss; /* the loss; the other reported outputs land in instance memory */
      outputs[0].size_bytes = sizeof loss;
      if (check(gc_instance_train_step(inst, &in, 1, &target, 1, outputs, n_out), "gc_instance_train_step")) {
        status = 1;
        break;
      }
      total += (double)loss * (double)n;
    }
    if (status == 0) printf("epoch %d loss %.9g\n", epoch, total / (double)x.shape[0]);
  }
  if (status == 0 && argc > 5) status = evaluate_and_save(inst, &x, &y, batch, outputs, n_out, argv[5]);
  free(outputs);
  free(x.values);
  free(y.values);
  gc_instance_release(inst);
  return status;
}
