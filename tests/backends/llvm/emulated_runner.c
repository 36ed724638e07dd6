/* emulated_runner.c -- runs one model library (built for another platform) on binary inputs, for
 * tests that run the library under that platform's emulator (tests/backends/llvm/emulation.py).
 *
 *   usage: runner INPUTS OUTPUTS THREADS
 *
 * INPUTS holds each model input in order: int32 rank, int64 shape[rank], then the data in the
 * model's dtype (row-major). OUTPUTS receives each output the same way, its dtype first (int32).
 * Every integer is little-endian, as on every platform graphc builds for.
 *
 * Build: CC -std=c11 -O1 -I DIR -DMODEL=NAME emulated_runner.c DIR/libNAME.a -lpthread -lm
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define STR2(x) #x
#define STR(x) STR2(x)
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#include STR(MODEL.h)

static int failed(gc_status_t status, const char* what) {
  if (status == NULL) return 0;
  fprintf(stderr, "%s: %s [%s]\n", what, gc_status_message(status), gc_status_code_name(gc_status_code(status)));
  gc_status_release(status);
  return 1;
}

static int read_input(FILE* f, const gc_tensor_desc_t* want, gc_tensor_t* t) {
  t->dtype = want->dtype;
  if (fread(&t->rank, sizeof(int32_t), 1, f) != 1 || t->rank < 0 || t->rank > GC_MAX_RANK) return 1;
  size_t count = 1;
  for (int32_t i = 0; i < t->rank; i++) {
    if (fread(&t->shape[i], sizeof(int64_t), 1, f) != 1 || t->shape[i] < 0) return 1;
    count *= (size_t)t->shape[i];
  }
  t->size_bytes = count * gc_dtype_size(want->dtype);
  t->data = malloc(t->size_bytes ? t->size_bytes : 1);
  return t->data == NULL || fread(t->data, 1, t->size_bytes, f) != t->size_bytes;
}

static int write_output(FILE* f, gc_dtype_t dtype, const gc_tensor_t* t) {
  int32_t code = (int32_t)dtype;
  size_t count = 1;
  for (int32_t i = 0; i < t->rank; i++) count *= (size_t)t->shape[i];
  size_t nbytes = count * gc_dtype_size(dtype);
  return fwrite(&code, sizeof code, 1, f) != 1 || fwrite(&t->rank, sizeof(int32_t), 1, f) != 1 ||
         fwrite(t->shape, sizeof(int64_t), (size_t)t->rank, f) != (size_t)t->rank ||
         fwrite(t->data, 1, nbytes, f) != nbytes;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s INPUTS OUTPUTS THREADS\n", argv[0]);
    return 2;
  }
  const gc_model_t* model = CAT(gc_model_, MODEL)();
  size_t n_in = gc_model_num_inputs(model), n_out = gc_model_num_outputs(model);
  gc_tensor_t* inputs = calloc(n_in ? n_in : 1, sizeof(gc_tensor_t));
  gc_tensor_t* outputs = calloc(n_out ? n_out : 1, sizeof(gc_tensor_t));
  FILE* f = fopen(argv[1], "rb");
  int bad = inputs == NULL || outputs == NULL || f == NULL;
  for (size_t i = 0; i < n_in && !bad; i++) {
    gc_tensor_desc_t want;
    bad = failed(gc_model_input(model, i, &want), "gc_model_input") || read_input(f, &want, &inputs[i]);
    if (bad) fprintf(stderr, "cannot read input %zu from %s\n", i, argv[1]);
  }
  if (f != NULL) fclose(f);
  gc_options_t options;
  gc_options_init(&options);
  options.num_threads = atoi(argv[3]);
  gc_instance_t* instance = NULL;
  if (!bad) bad = failed(gc_instance_create(model, &options, &instance), "gc_instance_create");
  if (!bad) bad = failed(gc_instance_run(instance, inputs, n_in, outputs, n_out), "gc_instance_run");
  FILE* out = bad ? NULL : fopen(argv[2], "wb");
  if (!bad && out == NULL) bad = 1;
  for (size_t i = 0; i < n_out && !bad; i++) {
    gc_tensor_desc_t desc;
    bad = failed(gc_model_output(model, i, &desc), "gc_model_output") || write_output(out, desc.dtype, &outputs[i]);
  }
  if (out != NULL && fclose(out) != 0) bad = 1;
  gc_instance_release(instance);
  for (size_t i = 0; i < n_in; i++) free(inputs[i].data);
  free(inputs);
  free(outputs);
  return bad;
}
