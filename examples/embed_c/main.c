/* main.c -- run a model compiled by graphc from C, with nothing but its library and header.
 *
 *   usage: embed INPUTS_FILE [THREADS]
 *
 * INPUTS_FILE holds each model input in order: a line "name rank d0 d1 ..." followed by the
 * values (whitespace separated, row-major). The program prints each output the same way
 * ("name rank d0 d1 ..." then one line of values), so its output can be read back as input.
 *
 * Everything read from the file is checked (sizes whose product overflows, values an integer input
 * cannot hold): like the runtime, the program refuses bad input with a one-line message.
 *
 * Build (the Makefile does this): cc -std=c11 -O2 -I build -DMODEL=mlp main.c build/libmlp.a -lpthread -lm
 * MODEL names the model: its header is MODEL.h and its handle gc_model_MODEL().
 */
#include <math.h>
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
  fprintf(stderr, "embed: %s failed: %s [%s]\n", what, gc_status_message(status),
          gc_status_code_name(gc_status_code(status)));
  gc_status_release(status);
  return 1;
}

/* The largest input this example reads (bytes): a file cannot make it allocate more. 4 GiB, or half
   the address space where size_t has 32 bits (WebAssembly). */
#define MAX_INPUT_BYTES (SIZE_MAX > 0xFFFFFFFFu ? (size_t)0xFFFFFFFFu + 1u : SIZE_MAX / 2)

/* *out = a * b, or 1 when that does not fit in a size_t. */
static int mul_overflows(size_t a, size_t b, size_t* out) {
  if (a != 0 && b > SIZE_MAX / a) return 1;
  *out = a * b;
  return 0;
}

/* Stores value v as element i of t, refusing what the dtype cannot hold (converting such a
   double to an integer type is undefined behaviour in C). */
static int store(gc_tensor_t* t, size_t i, double v, const char* name) {
  switch (t->dtype) {
    case GC_FLOAT32: ((float*)t->data)[i] = (float)v; return 0;
    case GC_FLOAT64: ((double*)t->data)[i] = v; return 0;
    case GC_INT32:
    case GC_INT64: {
      double lo = t->dtype == GC_INT32 ? -2147483648.0 : -9223372036854775808.0;
      double hi = t->dtype == GC_INT32 ? 2147483648.0 : 9223372036854775808.0; /* exclusive */
      if (isnan(v)) {
        fprintf(stderr, "embed: value %zu of input '%s' is not a number\n", i, name);
        return 1;
      }
      if (!(v >= lo && v < hi) || v != floor(v)) {
        fprintf(stderr, "embed: value %zu of input '%s' (%g) is out of range for %s\n", i, name, v,
                gc_dtype_name(t->dtype));
        return 1;
      }
      if (t->dtype == GC_INT32)
        ((int32_t*)t->data)[i] = (int32_t)v;
      else
        ((int64_t*)t->data)[i] = (int64_t)v;
      return 0;
    }
    default:
      fprintf(stderr, "embed: input dtype %s is not supported by this example\n", gc_dtype_name(t->dtype));
      return 1;
  }
}

/* Reads one tensor (header line and values) of the dtype the model wants. */
static int read_tensor(FILE* f, const gc_tensor_desc_t* want, gc_tensor_t* t) {
  char name[256];
  int rank;
  if (fscanf(f, "%255s %d", name, &rank) != 2) {
    fprintf(stderr, "embed: expected a header line for input '%s'\n", want->name);
    return 1;
  }
  if (strcmp(name, want->name) != 0) {
    fprintf(stderr, "embed: the inputs file has '%s' where the model expects input '%s'\n", name, want->name);
    return 1;
  }
  if (rank < 0 || rank > GC_MAX_RANK) {
    fprintf(stderr, "embed: input '%s' has rank %d\n", name, rank);
    return 1;
  }
  memset(t, 0, sizeof(*t));
  t->dtype = want->dtype;
  t->rank = rank;
  size_t count = 1;
  for (int i = 0; i < rank; i++) {
    long long d;
    if (fscanf(f, "%lld", &d) != 1 || d < 0) {
      fprintf(stderr, "embed: bad dimension %d of input '%s'\n", i, name);
      return 1;
    }
    t->shape[i] = d;
    if (mul_overflows(count, (size_t)d, &count)) count = SIZE_MAX;
  }
  size_t item = gc_dtype_size(want->dtype);
  if (item == 0) {
    fprintf(stderr, "embed: input dtype %s is not supported by this example\n", gc_dtype_name(want->dtype));
    return 1;
  }
  if (count == SIZE_MAX || mul_overflows(count, item, &t->size_bytes) || t->size_bytes > MAX_INPUT_BYTES) {
    fprintf(stderr, "embed: input '%s' is too large (its shape has more than %zu bytes of %s)\n", name,
            MAX_INPUT_BYTES, gc_dtype_name(want->dtype));
    return 1;
  }
  t->data = malloc(t->size_bytes ? t->size_bytes : 1);
  if (t->data == NULL) {
    fprintf(stderr, "embed: cannot allocate %zu bytes for input '%s'\n", t->size_bytes, name);
    return 1;
  }
  for (size_t i = 0; i < count; i++) {
    double v;
    if (fscanf(f, "%lf", &v) != 1) {
      fprintf(stderr, "embed: input '%s' has %zu values, expected %zu\n", name, i, count);
      return 1;
    }
    if (store(t, i, v, name)) return 1;
  }
  return 0;
}

static void print_tensor(const char* name, const gc_tensor_t* t) {
  size_t count = 1;
  printf("%s %d", name, t->rank);
  for (int i = 0; i < t->rank; i++) {
    printf(" %lld", (long long)t->shape[i]);
    count *= (size_t)t->shape[i];
  }
  printf("\n");
  for (size_t i = 0; i < count; i++) {
    double v = t->dtype == GC_FLOAT32 ? ((const float*)t->data)[i]
               : t->dtype == GC_INT64 ? (double)((const int64_t*)t->data)[i]
               : t->dtype == GC_INT32 ? (double)((const int32_t*)t->data)[i]
                                      : ((const double*)t->data)[i];
    printf(i ? " %.9g" : "%.9g", v);
  }
  printf("\n");
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s INPUTS_FILE [THREADS]\n", argv[0]);
    return 2;
  }
  const gc_model_t* model = MODEL_HANDLE();
  size_t n_in = gc_model_num_inputs(model), n_out = gc_model_num_outputs(model);
  FILE* f = fopen(argv[1], "r");
  if (f == NULL) {
    fprintf(stderr, "embed: cannot open %s\n", argv[1]);
    return 1;
  }
  gc_tensor_t* inputs = calloc(n_in ? n_in : 1, sizeof(gc_tensor_t));
  gc_tensor_t* outputs = calloc(n_out ? n_out : 1, sizeof(gc_tensor_t));
  int failed = inputs == NULL || outputs == NULL;
  for (size_t i = 0; i < n_in && !failed; i++) {
    gc_tensor_desc_t want;
    failed = check(gc_model_input(model, i, &want), "gc_model_input") || read_tensor(f, &want, &inputs[i]);
  }
  fclose(f);

  gc_options_t options;
  gc_options_init(&options);
  options.num_threads = argc > 2 ? atoi(argv[2]) : 0;
  gc_instance_t* instance = NULL;
  if (!failed) failed = check(gc_instance_create(model, &options, &instance), "gc_instance_create");
  /* outputs[i].data == NULL: the instance owns the output memory until its next run */
  if (!failed) failed = check(gc_instance_run(instance, inputs, n_in, outputs, n_out), "gc_instance_run");
  for (size_t i = 0; i < n_out && !failed; i++) {
    gc_tensor_desc_t desc;
    failed = check(gc_model_output(model, i, &desc), "gc_model_output");
    if (!failed) print_tensor(desc.name, &outputs[i]);
  }
  gc_instance_release(instance);
  for (size_t i = 0; i < n_in; i++) free(inputs[i].data);
  free(inputs);
  free(outputs);
  return failed;
}
