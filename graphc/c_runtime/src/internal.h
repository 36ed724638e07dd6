/*
 * internal.h — what a compiled model provides to the runtime, and the runtime's own helpers.
 *
 * Not public: C programs include graphc.h only. graphc's code generator emits, per model, an
 * object file with the kernels (LLVM) and a small C file defining one `struct gc_model` that
 * points at them; both follow the layout below (GC_MODEL_ABI guards changes to it).
 *
 * Buffers are addressed through "slots": an array of pointers the runtime fills before each
 * run (inputs, outputs, weights, prepacked weights, and scratch buffers placed in one arena by
 * the planner in arena.c for the free-dim values of the call).
 */
#ifndef GRAPHC_INTERNAL_H_
#define GRAPHC_INTERNAL_H_

#include <stdint.h>

#include "graphc/graphc.h"

#define GC_MODEL_ABI 9u

/* What every kernel sees; the generated code reads it at fixed offsets (keep in sync with
   graphc/backends/llvm/frame.py). */
typedef struct gc_frame {
  void** slots;                  /* 0  */
  const int64_t* dims;           /* 8  : free-dim values, model->free_dims order, then the thread count */
  void* pool;                    /* 16 : gc_pool_t* or NULL */
  char* thread_scratch;          /* 24 : num_threads * thread_scratch_stride bytes */
  int64_t thread_scratch_stride; /* 32 */
  int64_t error_value;           /* 40 : detail of a kernel failure (the bad index) */
  void** args;                   /* 48 : the running kernel's arguments (set by the generated code) */
  uint64_t* random;              /* 56 : the instance's random state: [0] the seed, [1 + op] op's call count */
  struct gc_profile* profile;    /* 64 : the instance's kernel timer (profile.c), NULL when not profiling */
  /* Read by the runtime only (gc__collective_sum), never by generated code: */
  const struct gc_collective* collective; /* the instance's collective hook */
  int32_t worker; /* the thread running the whole model on this frame (sub-batches at once), else 0 */
} gc_frame_t;

/* An instance's collective hook (gc_instance_set_collective); fn NULL: one replica. */
typedef struct gc_collective {
  gc_collective_fn fn;
  void* user;
} gc_collective_t;

/* Called by generated code for a cross-replica sum: `count` elements of `dtype` at `data` summed across
   replicas in place through frame->collective (kind: gc_collective_kind_t); 0, or the hook's failure. */
int32_t gc__collective_sum(gc_frame_t* frame, void* data, int64_t count, int32_t dtype, int32_t kind);

/* A parallel task: runs items [begin, end) of one op on worker `thread`; 0 = ok. */
typedef int32_t (*gc_task_fn)(gc_frame_t* frame, int64_t begin, int64_t end, int32_t thread);

/* An input or output. dims[i] >= 0: static; inputs: -(1 + k) is free dim k; outputs: -1, the
   size comes from model->shapes. */
typedef struct gc_io_def {
  const char* name;
  int32_t dtype;
  int32_t rank;
  const int64_t* dims;
  const char* const* dim_names;
  int32_t slot;
} gc_io_def_t;

typedef struct gc_weight_def {
  const char* name;
  int32_t dtype;
  int32_t rank;
  const int64_t* dims;
  uint64_t offset; /* in the weights blob (64-byte aligned) */
  uint64_t nbytes;
  int32_t slot;
} gc_weight_def_t;

typedef struct gc_packed_def {
  uint64_t offset; /* in the prepacked region */
  int32_t slot;
} gc_packed_def_t;

/* A state update of a training step: output `output` is the new value of weight `weight`. With `in_place`
   the step's kernels write it over the weight itself (the generated code runs every reader of the old value
   first, and every in-place writer after all other kernels); otherwise it is copied there after the step. */
typedef struct gc_update_def {
  int32_t weight;
  int32_t output;
  int32_t in_place;
} gc_update_def_t;

/* One trainable weight's gradient in a training library's gradient buffer: the split step's gradient
   model writes its output `output` to bytes [offset, offset + nbytes) of the buffer, which the apply
   model reads back as its step input of the same position. `weight` indexes the training model's weights. */
typedef struct gc_gradient_def {
  int32_t weight;
  int32_t output;
  uint64_t offset;
  uint64_t nbytes;
} gc_gradient_def_t;

/* A scalar float32 input the caller sets between steps (gc_instance_set_hyperparameter). */
typedef struct gc_hyper_def {
  const char* name;
  int32_t input;
  double initial;
} gc_hyper_def_t;

/* A scratch buffer live from op `first` to op `last` (inclusive), holding value `name`. */
typedef struct gc_scratch_def {
  int32_t slot;
  int32_t first;
  int32_t last;
  const char* name;
} gc_scratch_def_t;

struct gc_model {
  uint32_t abi;
  const char* name;
  uint32_t num_inputs, num_outputs, num_weights, num_packed, num_scratch, num_slots, num_free_dims, num_ops;
  const gc_io_def_t* inputs;
  const gc_io_def_t* outputs;
  const gc_weight_def_t* weights;
  const gc_packed_def_t* packed;
  const gc_scratch_def_t* scratch;
  const char* const* free_dims;
  const unsigned char* weights_data; /* NULL: external weights */
  uint64_t weights_nbytes;
  uint64_t weights_layout_digest; /* identifies the weights layout (names, shapes, offsets) */
  uint64_t packed_nbytes;
  uint64_t thread_scratch_nbytes;
  /* Output dims (all outputs, flattened) and scratch sizes in bytes for free dims `dims`;
     returns 0, or 1 + the index of a failed check (model->check_messages). */
  int32_t (*shapes)(const int64_t* dims, int64_t* out_dims, int64_t* scratch_nbytes);
  /* Fills prepacked slots from weight slots; only those derived from weight `which` (-1: all). */
  void (*prepare)(void** slots, int32_t which);
  /* Runs every op; returns 0, or 1 + the index of the op that failed (frame->error_value). */
  int32_t (*run)(gc_frame_t* frame);
  const char* const* op_errors;      /* per op: printf format with one %lld for error_value */
  const char* const* check_messages; /* per shape check, printf format without arguments */
  /* The training step (all 0 / NULL for an inference library): the model inputs and the targets
     of a step as indices into `inputs`, its hyperparameters, its reported outputs (outputs
     0..num_reported-1) and the state updates applied after each step. */
  uint32_t has_train_step, num_step_inputs, num_targets, num_hypers, num_reported, num_updates;
  const int32_t* step_inputs;
  const int32_t* targets;
  const gc_hyper_def_t* hypers;
  const gc_update_def_t* updates;
  /* A training library's evaluation step (NULL: none): a model of the same weights layout, reading
     the training instance's weights, whose step tables (has_train_step 0) name its model inputs,
     targets and reported outputs. */
  const struct gc_model* eval_step;
  /* The split step (NULL: the library was built without it): the gradient model (forward, loss and
     backward; its reported outputs as the training step's, then the gradients; it updates only the
     layers' state such as moving statistics) and the apply model (the optimizer update from the
     gradient buffer; its step inputs are the gradients in buffer order, then its hyperparameters).
     Both share this model's weights layout; the gradient buffer is `gradients_nbytes` bytes. */
  const struct gc_model* gradient_step;
  const struct gc_model* apply_step;
  uint32_t num_gradients;
  const gc_gradient_def_t* gradients;
  uint64_t gradients_nbytes;
  /* Sub-batches (batch_split.py): the free dim that every input and output leads with and that no op
     mixes across (-1: none), and the scratch bytes a sub-batch may use (0: the batch runs whole). */
  int32_t batch_dim;
  uint64_t batch_budget;
  /* The batch's tail (batch_split.batch_tail): where the batch runs in sub-batches, the ops before
     `batch_tail_op` run once per sub-batch and the ops from it on once over the whole batch after them
     (-1: every op per sub-batch). The scratch buffers live across that op hold the whole batch and lead
     with it. `run_ops` runs the ops [first, end) of `run` (NULL without a tail). */
  int32_t batch_tail_op;
  int32_t (*run_ops)(gc_frame_t* frame, int32_t first, int32_t end);
  /* The CPU the code was generated for (LLVM's name: "znver3", "x86-64-v4", "cortex-a72") and the
     instruction set features it may use ("+avx2,+fma,..."): instances are refused on a CPU without them. */
  const char* target_cpu;
  const char* target_features;
};

/* How many of `features` (LLVM's names, "+a,+b") this CPU lacks among those the runtime can detect; their
   names, comma-separated, written to `out` (`cap` bytes, always terminated) (cpu_features.c). */
size_t gc__cpu_missing_features(const char* features, char* out, size_t cap);

/* ------------------------------------------------------------------ status helpers */

gc_status_t gc__status_make(gc_status_code_t code, const char* file, int line, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#define GC_ERROR(code, ...) gc__status_make((code), __FILE__, __LINE__, __VA_ARGS__)
#define GC_RETURN_IF_ERROR(expr)      \
  do {                                \
    gc_status_t gc__s = (expr);       \
    if (gc__s != NULL) return gc__s;  \
  } while (0)

/* ------------------------------------------------------------------ memory */

void* gc__alloc(const gc_allocator_t* a, size_t size, size_t alignment);
void gc__free(const gc_allocator_t* a, void* ptr);
/* malloc and free; large blocks advised for (huge_pages) or against transparent huge pages (gc_options_t.huge_pages). */
void gc__default_allocator(gc_allocator_t* a, int huge_pages);

/* ------------------------------------------------------------------ thread pool */

typedef struct gc_pool gc_pool_t;

gc_status_t gc__pool_create(const gc_allocator_t* a, int32_t num_threads, gc_pool_t** out);
void gc__pool_release(gc_pool_t* pool);
int32_t gc__pool_num_threads(const gc_pool_t* pool);

/* Called by generated code: runs fn over [0, n) split into up to num_threads contiguous chunks;
   `cost` is the estimated work per item (in ~flops), used to decide how many threads pay off.
   Returns the first nonzero value a chunk returned. */
int32_t gc__parallel_for(void* pool, gc_task_fn fn, gc_frame_t* frame, int64_t n, int64_t cost);

/* ------------------------------------------------------------------ profiler (profile.c) */

/* The kernel timer of an instance created with options.profile: per op, the time of its kernel
   launches summed over runs, and a bounded list of launch events for a trace. */
gc_status_t gc__profile_create(const gc_allocator_t* a, uint32_t num_ops, uint32_t max_events, gc_profile_t** out);
void gc__profile_release(const gc_allocator_t* a, gc_profile_t* profile);
/* The profile's clock (ns), and one run of the model from t0 to t1 (all its sub-batches). */
int64_t gc__profile_now(void);
void gc__profile_record_run(gc_profile_t* profile, int64_t t0, int64_t t1);
/* Called by generated code instead of gc__parallel_for when frame->profile is set: the same
   launch, timed and charged to op `op`. */
int32_t gc__parallel_for_profiled(void* pool, gc_task_fn fn, gc_frame_t* frame, int64_t n, int64_t cost, int32_t op);

/* ------------------------------------------------------------------ checksums */

/* CRC32C (Castagnoli) of n bytes: the checksum of a weights file's payload. */
uint32_t gc__crc32c(const void* data, size_t n);

/* ------------------------------------------------------------------ weights files (weights_io.c) */

/* Reads a weights file into a new blob in model m's layout (allocated with a; *out_blob NULL on error). */
gc_status_t gc__read_weights(const gc_model_t* m, const gc_allocator_t* a, const char* path, unsigned char** out_blob);
/* Writes m's weights blob `weights` to `path` (format version 3, atomically: temporary file + rename). */
gc_status_t gc__write_weights(const gc_model_t* m, const gc_allocator_t* a, const unsigned char* weights,
                              const char* path);

/* ------------------------------------------------------------------ arena planner */

/* Places scratch buffers (sizes in bytes, lifetimes from the model) at 64-byte aligned offsets so
   that buffers whose lifetimes overlap never overlap in memory: greedy by size, the smallest arena of
   four placement orders each by best and by first fit -- the algorithm of graphc.memory's GreedyBySizeAllocator,
   offset for offset (tests/runtime/test_c_abi.py compares them). `work` is scratch space of
   n * GC_PLAN_WORK_BYTES_PER_BUFFER bytes, 8-byte aligned. Returns the arena size. */
#define GC_PLAN_WORK_BYTES_PER_BUFFER (3 * sizeof(uint64_t) + 2 * sizeof(int32_t))
uint64_t gc__plan_arena(const gc_scratch_def_t* defs, const int64_t* sizes, uint32_t n, uint64_t* offsets,
                        void* work);

#endif /* GRAPHC_INTERNAL_H_ */
