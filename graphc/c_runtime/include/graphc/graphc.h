/*
 * graphc.h — the C ABI of models compiled by graphc.
 *
 * A compiled model is one library (libNAME.so or libNAME.a) plus a generated header NAME.h,
 * which declares `const gc_model_t* gc_model_NAME(void)` and includes this file. This header
 * is the whole public surface: the same calls serve C programs and graphc's own Python binding.
 *
 * Conventions
 *  - Every fallible call returns a gc_status_t. NULL means success; any other value is an
 *    error object owned by the caller, who must pass it to gc_status_release() (which accepts
 *    NULL). Its message names what was wrong (which input, expected vs. got shape).
 *  - `*_create` hands ownership of a new object to the caller; `*_release` takes it back and
 *    accepts NULL. Nothing else transfers ownership. Pointers returned by getters (names,
 *    messages) stay owned by the object they came from and live as long as it does.
 *  - There is no global mutable state: the model handle is immutable static data, and all
 *    mutable state (buffers, weights copies, random state, thread pool) belongs to an instance.
 *
 * Threads
 *  - gc_model_t: thread-safe (immutable).
 *  - gc_instance_t: thread-compatible. One instance is used by one thread at a time; any number
 *    of instances of the same or of different models may run in parallel threads. Each instance
 *    owns its own intra-op thread pool (gc_options_t.num_threads), never a global one. A call
 *    made while another thread is inside a call on the same instance is refused with
 *    GC_FAILED_PRECONDITION ("instance is in use by another thread"); releasing an instance
 *    another thread is using is undefined behaviour.
 *  - gc_status_t: owned by the thread that received it.
 *
 * Memory
 *  - Input buffers are caller-owned and only read during gc_instance_run.
 *  - Output buffers are caller-owned when gc_tensor_t.data is set before the call; when it is
 *    NULL the runtime points it at memory owned by the instance, valid until the next run,
 *    set_weight, train step or release of that instance.
 *  - Everything the runtime allocates goes through gc_options_t.allocator (malloc by default).
 */
#ifndef GRAPHC_GRAPHC_H_
#define GRAPHC_GRAPHC_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this ABI; gc_api_version() returns the version the library was built with.
   Version 2: gc_options_t.seed, gc_instance_train_step with outputs, gc_instance_set_hyperparameter.
   Version 3: gc_instance_eval_step, gc_instance_save_weights, self-describing weights files (format 3);
   the kernel profiler (gc_options_t.profile, gc_instance_profile, gc_profile_*).
   Version 4: the collective hook of cross-replica sums (gc_instance_set_collective).
   Version 5: gc_options_t.huge_pages.
   Version 6: gc_model_target_cpu, gc_model_target_features; instances refused on a CPU without the
   model's instruction set features. */
#define GC_API_VERSION 6u

/* The most dimensions a tensor can have. */
#define GC_MAX_RANK 8

#if defined(__GNUC__) || defined(__clang__)
#define GC_MUST_USE_RESULT __attribute__((warn_unused_result))
#define GC_EXPORT __attribute__((visibility("default")))
#else
#define GC_MUST_USE_RESULT
#define GC_EXPORT
#endif

/* ----------------------------------------------------------------------------- status */

typedef enum gc_status_code {
  GC_OK = 0,
  GC_INVALID_ARGUMENT = 1,   /* a NULL pointer, wrong count, shape, dtype or name */
  GC_OUT_OF_RANGE = 2,       /* a value out of its range: an id beyond the embedding table */
  GC_FAILED_PRECONDITION = 3,/* a call in the wrong state: no weights loaded, instance released */
  GC_RESOURCE_EXHAUSTED = 4, /* an allocation failed or a size overflowed */
  GC_NOT_FOUND = 5,          /* no input, output or weight of that name; a missing file */
  GC_DATA_LOSS = 6,          /* a truncated or corrupt weights file */
  GC_UNIMPLEMENTED = 7,      /* an entry point the library was not built for (a training step of an
                                inference library) */
  GC_INTERNAL = 8            /* a bug in graphc: please report it */
} gc_status_code_t;

/* An error: code, message and the runtime source location that raised it. NULL = OK. */
typedef struct gc_status_s* gc_status_t;

/* GC_OK for NULL. */
GC_EXPORT gc_status_code_t gc_status_code(gc_status_t status);
/* The message ("" for NULL); owned by the status. */
GC_EXPORT const char* gc_status_message(gc_status_t status);
/* Where in the runtime the error was raised ("" and 0 for NULL). */
GC_EXPORT const char* gc_status_file(gc_status_t status);
GC_EXPORT int gc_status_line(gc_status_t status);
/* "GC_INVALID_ARGUMENT"... for a code. */
GC_EXPORT const char* gc_status_code_name(gc_status_code_t code);
/* Frees a status; accepts NULL. */
GC_EXPORT void gc_status_release(gc_status_t status);

/* The ABI version the library implements (GC_API_VERSION at its build). */
GC_EXPORT uint32_t gc_api_version(void);

/* ----------------------------------------------------------------------------- tensors */

typedef enum gc_dtype {
  GC_DTYPE_INVALID = 0,
  GC_FLOAT32 = 1,
  GC_FLOAT64 = 2,
  GC_INT32 = 3,
  GC_INT64 = 4,
  GC_INT8 = 5,
  GC_UINT8 = 6,
  GC_BOOL = 7,
  GC_FLOAT16 = 8
} gc_dtype_t;

/* Bytes per element (0 for an unknown dtype) and "float32"... */
GC_EXPORT size_t gc_dtype_size(gc_dtype_t dtype);
GC_EXPORT const char* gc_dtype_name(gc_dtype_t dtype);

/* A dense row-major tensor passed through the ABI. The struct itself is caller-owned. */
typedef struct gc_tensor {
  gc_dtype_t dtype;
  int32_t rank;
  int64_t shape[GC_MAX_RANK];
  void* data;        /* inputs: read only; outputs: see "Memory" above */
  size_t size_bytes; /* inputs: bytes at data; outputs: capacity of data (set by the runtime) */
} gc_tensor_t;

/* What a model input or output looks like. Free dimensions have shape[i] == -1 and a name in
   dim_names[i] ("batch", "text_len"); dim_names[i] is the decimal size for a static dim, or an
   expression over free dims ("(text_len - 4) // 1 + 1") for a derived one. Strings are owned
   by the model. */
typedef struct gc_tensor_desc {
  const char* name;
  gc_dtype_t dtype;
  int32_t rank;
  int64_t shape[GC_MAX_RANK];
  const char* dim_names[GC_MAX_RANK];
} gc_tensor_desc_t;

/* ----------------------------------------------------------------------------- models */

/* A compiled model: immutable, static, thread-safe; never released. Obtained from the
   generated `gc_model_NAME()` of a model library. */
typedef struct gc_model gc_model_t;

GC_EXPORT const char* gc_model_name(const gc_model_t* model);
GC_EXPORT size_t gc_model_num_inputs(const gc_model_t* model);
GC_EXPORT size_t gc_model_num_outputs(const gc_model_t* model);
GC_EXPORT size_t gc_model_num_weights(const gc_model_t* model);
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_input(const gc_model_t* model, size_t index,
                                                        gc_tensor_desc_t* out_desc);
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_output(const gc_model_t* model, size_t index,
                                                         gc_tensor_desc_t* out_desc);
/* Weights always have static shapes. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_weight(const gc_model_t* model, size_t index,
                                                         gc_tensor_desc_t* out_desc);
/* Index of the input / output / weight called `name` (GC_NOT_FOUND if none). */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_find_input(const gc_model_t* model, const char* name,
                                                             size_t* out_index);
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_find_output(const gc_model_t* model, const char* name,
                                                              size_t* out_index);
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_find_weight(const gc_model_t* model, const char* name,
                                                              size_t* out_index);
/* 1 when the weights are embedded in the library, 0 when they live in a separate file. */
GC_EXPORT int gc_model_has_embedded_weights(const gc_model_t* model);
/* The CPU the model's code was generated for (LLVM's name: "znver3", "x86-64-v4", "cortex-a72"; "" for
   NULL) and the instruction set features that code may use, comma-separated ("+avx2,+fma,..."; "" when
   none beyond the architecture's base). gc_instance_create refuses with GC_FAILED_PRECONDITION, naming
   the missing features, on a CPU that lacks any of them (as CPUID and the OS, or the kernel's hardware
   capabilities, report them; the environment variable GRAPHC_HIDE_CPU_FEATURES=a,b makes the named
   ones count as absent). */
GC_EXPORT const char* gc_model_target_cpu(const gc_model_t* model);
GC_EXPORT const char* gc_model_target_features(const gc_model_t* model);

/* ----------------------------------------------------------------------------- options */

/* Where the runtime gets memory. alloc returns NULL on failure; alignment is a power of two. */
typedef struct gc_allocator {
  void* self;
  void* (*alloc)(void* self, size_t size, size_t alignment);
  void (*free)(void* self, void* ptr);
} gc_allocator_t;

typedef struct gc_options {
  uint32_t struct_size;     /* sizeof(gc_options_t); set by gc_options_init */
  int32_t num_threads;      /* intra-op threads including the caller's; 0 = all online cores; more
                               than gc_max_threads() is clamped to it (gc_instance_num_threads
                               says how many an instance really uses) */
  gc_allocator_t allocator; /* alloc == NULL: malloc/free */
  const char* weights_path; /* weights file for models built with external weights (or NULL) */
  uint64_t seed;            /* the instance's random state (dropout masks, noise): instances with the same
                               seed draw the same values; each instance draws its own (API version 2) */
  int32_t profile;          /* nonzero: time every kernel launch (gc_instance_profile); 0 (default): no
                               timing at all, the kernels run exactly as without a profiler */
  uint32_t profile_events;  /* with profile: the most launch events kept for a trace (0: sums only) */
  int32_t huge_pages;       /* with the default allocator, nonzero (the default): blocks of 2 MiB and more
                               (packed weights, the arena) are 2 MiB-aligned and advised as transparent huge
                               pages (Linux: madvise MADV_HUGEPAGE), fewer TLB misses in large products;
                               0: advised against them (MADV_NOHUGEPAGE: 4 KiB pages) (API version 5) */
} gc_options_t;

/* Fills defaults: all cores, malloc with huge pages for large blocks, no weights file, seed 0, no
   profiling. Shorter options structs of earlier versions (struct_size ending before `seed`, `profile` or
   `huge_pages`) are still accepted: the missing fields keep their defaults. */
GC_EXPORT void gc_options_init(gc_options_t* options);

/* The most intra-op threads an instance uses: 4 per online core (at most 1024). More would only
   add hand-offs between threads that share cores. */
GC_EXPORT int32_t gc_max_threads(void);

/* ----------------------------------------------------------------------------- instances */

/* Mutable state to run a model: buffers, a weights copy when weights were replaced, a thread
   pool. Thread-compatible (see "Threads"). */
typedef struct gc_instance gc_instance_t;

/* Creates an instance; options may be NULL (defaults). On success *out_instance must later be
   passed to gc_instance_release. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_create(const gc_model_t* model, const gc_options_t* options,
                                                            gc_instance_t** out_instance);
/* Destroys an instance and everything it owns; accepts NULL. Using an instance after release
   is undefined behaviour; the runtime detects it on a best-effort basis only. */
GC_EXPORT void gc_instance_release(gc_instance_t* instance);

GC_EXPORT const gc_model_t* gc_instance_model(const gc_instance_t* instance);
/* The number of threads the instance really uses. */
GC_EXPORT int32_t gc_instance_num_threads(const gc_instance_t* instance);
/* The samples in the largest sub-batch of the last run (0: it ran its batch whole). A model none of whose ops mixes
   the samples of a batch runs a large batch as sub-batches whose scratch fits a budget set at build time
   (one core's L2 cache), with the same results as separate runs over them. */
GC_EXPORT int64_t gc_instance_sub_batch(const gc_instance_t* instance);
/* How many sub-batches the last run went in (0: the batch whole), as even as the batch allows: each holds
   batch / n or batch / n + 1 samples of the n (gc_instance_sub_batch_start says which). */
GC_EXPORT int64_t gc_instance_sub_batch_count(const gc_instance_t* instance);
/* The first sample of sub-batch b (0 <= b <= gc_instance_sub_batch_count; b = the count gives the batch) of the
   last run, -1 where b is out of that range or the batch ran whole. One after another, the first batch % n
   sub-batches hold a sample more than the others; run at once by T threads, each thread's run of n / T
   consecutive sub-batches holds batch / T or batch / T + 1 samples, shared as evenly between them. */
GC_EXPORT int64_t gc_instance_sub_batch_start(const gc_instance_t* instance, int64_t b);
/* How many of those sub-batches ran at once, one per thread, each with its own scratch (0: the batch ran
   whole; 1: one after another, each op split over the threads). */
GC_EXPORT int32_t gc_instance_sub_batch_threads(const gc_instance_t* instance);
/* The first op of the model's batch tail, -1 where it has none: where a batch runs in sub-batches, the ops
   from this one on run once over the whole batch after the sub-batches have run the ops before it. */
GC_EXPORT int32_t gc_model_batch_tail_op(const gc_model_t* model);
/* The first op of the batch tail the last run used (after its sub-batches), -1 where it used none. */
GC_EXPORT int32_t gc_instance_batch_tail_op(const gc_instance_t* instance);

/* The memory of the last successful run (gc_instance_memory). */
typedef struct gc_memory_info {
  uint64_t arena_bytes;          /* one copy of the scratch arena, as planned for the last run's shapes (those
                                    of one sub-batch where the batch ran in sub-batches, with the whole
                                    batch's for the buffers of the model's batch tail and those across it) */
  int32_t arena_copies;          /* copies in use: one per thread where sub-batches ran at once, else 1 */
  uint64_t thread_scratch_bytes; /* the threads' kernel scratch, all of them together */
  uint64_t packed_bytes;         /* weights repacked for the kernels, once per instance */
} gc_memory_info_t;

/* A buffer of the scratch arena's plan (gc_instance_scratch). */
typedef struct gc_scratch_info {
  const char* name; /* the value it holds (an op's result, or a kernel's temporary); static storage */
  uint64_t offset;  /* bytes from the start of the arena (of each copy) */
  uint64_t nbytes;  /* for the last run's shapes */
  int32_t first_op; /* live from this op to last_op (inclusive), in the order the ops run */
  int32_t last_op;
} gc_scratch_info_t;

/* The scratch buffers of the model's arena plan: the intermediate values the generated code keeps in the arena. */
GC_EXPORT size_t gc_model_num_scratch(const gc_model_t* model);
/* The memory plan the last successful run used: the runtime plans the arena whenever the shapes change, with
   the heap algorithm of graphc.memory (greedy by size: the smallest of four placement orders by best and
   first fit);
   GC_FAILED_PRECONDITION before a run has succeeded. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_memory(gc_instance_t* instance, gc_memory_info_t* out);
/* Scratch buffer `index` (below gc_model_num_scratch) of that plan. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_scratch(gc_instance_t* instance, size_t index,
                                                             gc_scratch_info_t* out);

/* Runs the model. inputs[i] is model input i (same order as gc_model_input); dtype, rank and
   shape must match, with free dims consistent across inputs and size_bytes exact.
   outputs[i] receives output i: shape/rank/dtype are always written; data is written to a
   caller buffer of outputs[i].size_bytes when outputs[i].data != NULL, else it is set to
   instance-owned memory. num_outputs may be 0 (outputs NULL): read them with
   gc_instance_output afterwards. Fails with a message naming the offending input. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_run(gc_instance_t* instance, const gc_tensor_t* inputs,
                                                         size_t num_inputs, gc_tensor_t* outputs,
                                                         size_t num_outputs);
/* Output `index` of the last successful run, in instance-owned memory (valid until the next run,
   set_weight or release). */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_output(gc_instance_t* instance, size_t index,
                                                            gc_tensor_t* out);

/* Replaces weight `name` (dtype and shape must match; the data is copied). */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_set_weight(gc_instance_t* instance, const char* name,
                                                                const gc_tensor_t* value);
/* Copies weight `name` into out->data (caller-owned, out->size_bytes large enough); fills
   dtype, rank and shape. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_get_weight(gc_instance_t* instance, const char* name,
                                                                gc_tensor_t* out);
/* Loads all weights from a file written by graphc (export_library(weights="external")) or by
   gc_instance_save_weights. The file is checked whole before it replaces the current weights:
   layout, size, CRC32C checksums, no trailing bytes. A file of another layout (format 3 names its
   weights) loads when it holds every weight of this model by name, with the same dtype and shape
   (extra ones, such as optimizer slots, are skipped). A model without weights needs no file.
   Errors: GC_INVALID_ARGUMENT for a NULL path, a file of another model or a weight whose dtype or
   shape differs (the message names it); GC_NOT_FOUND when the file cannot be opened;
   GC_DATA_LOSS for a foreign, corrupt or truncated file; GC_FAILED_PRECONDITION for a released
   instance or one in use by another thread. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_load_weights(gc_instance_t* instance, const char* path);
/* Writes every weight of the instance (for a training library: the weights, optimizer slots,
   iteration counter and moving statistics, its whole state but the random state) to `path` in
   weights file format 3, which gc_instance_load_weights and graphc's Model.load_weights read. The
   file is written beside `path` under a temporary name, flushed and renamed over it: `path` holds
   either its old content or the whole new file. Errors: GC_INVALID_ARGUMENT for a NULL or empty
   path; GC_NOT_FOUND when the directory does not exist; GC_RESOURCE_EXHAUSTED when the disk is
   full; GC_FAILED_PRECONDITION when the file cannot be created or renamed (permissions), for a
   released instance or one in use by another thread. Thread rules as every instance call: one
   thread at a time; the instance is not changed. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_save_weights(gc_instance_t* instance, const char* path);

/* ----------------------------------------------------------------------------- profiler

   An instance created with options.profile times each kernel launch of every run (a monotonic
   clock read before and after it) and charges the time to the launch's op: op k is the k-th op of
   the compiled graph in its topological order (after fusion, as the code runs), and op
   gc_profile_num_ops() - 1 copies graph outputs that no op writes. Without options.profile the
   generated code takes a branch per launch that is never taken, and nothing is timed. */

typedef struct gc_profile gc_profile_t;

/* One timed interval: a kernel launch of op `op`, or a whole run (op == -1). Times in nanoseconds
   since the profile was created or last reset. */
typedef struct gc_profile_event {
  int32_t op;
  int32_t thread; /* the thread that ran the launch: 0 the caller's, k the pool's k-th where sub-batches run
                     at once (gc_instance_sub_batch_threads) */
  int64_t start_ns;
  int64_t duration_ns;
} gc_profile_event_t;

/* The instance's profile (owned by it), or NULL when it was created without options.profile. */
GC_EXPORT gc_profile_t* gc_instance_profile(gc_instance_t* instance);
/* Ops the profile counts (the compiled graph's ops and the output copy). */
GC_EXPORT size_t gc_profile_num_ops(const gc_profile_t* profile);
/* Runs completed since the last reset and their total time (the generated code's, from its first
   launch to its last return). */
GC_EXPORT uint64_t gc_profile_runs(const gc_profile_t* profile);
GC_EXPORT uint64_t gc_profile_run_ns(const gc_profile_t* profile);
/* Per op since the last reset: total nanoseconds of its launches (op_ns) and their count
   (launches, may be NULL); both arrays hold num_ops = gc_profile_num_ops() entries. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_profile_op_times(const gc_profile_t* profile, uint64_t* op_ns,
                                                             uint64_t* launches, size_t num_ops);
/* Events kept (at most options.profile_events, the earliest ones) and events dropped once full. */
GC_EXPORT size_t gc_profile_num_events(const gc_profile_t* profile);
GC_EXPORT uint64_t gc_profile_dropped_events(const gc_profile_t* profile);
/* Copies the first `num_events` kept events (in the order they ended) into `events`. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_profile_events(const gc_profile_t* profile, gc_profile_event_t* events,
                                                           size_t num_events);
/* Forgets every time and event; the clock restarts at 0. */
GC_EXPORT void gc_profile_reset(gc_profile_t* profile);

/* ----------------------------------------------------------------------------- training

   A library built with `graphc compile MODEL --training` holds one training step: forward pass,
   loss, gradients and the optimizer update. Its state -- weights, optimizer slots, the iteration
   counter, BatchNormalization moving statistics and the random state -- lives in the instance: a
   step reads and updates it in place, and gc_instance_get_weight / gc_instance_set_weight read or
   replace it between steps (the optimizer slots and the iteration counter are weights too, named
   as gc_model_weight lists them). The library's model inputs are followed by one target per
   trained output and then by its hyperparameters; gc_model_input describes them all. */

/* 1 when the library holds a training step (gc_instance_train_step works), else 0. */
GC_EXPORT int gc_model_has_train_step(const gc_model_t* model);
/* 1 when the training library also holds its evaluation step (gc_instance_eval_step works), else 0. */
GC_EXPORT int gc_model_has_eval_step(const gc_model_t* model);
/* The step's counts: model inputs (the `inputs` of a step), targets, and reported outputs (the
   loss first, then each output's loss, then every metric's sum and count over the batch; their
   names and shapes are gc_model_output 0..num_reported-1). All 0 for an inference library. */
GC_EXPORT size_t gc_model_num_step_inputs(const gc_model_t* model);
GC_EXPORT size_t gc_model_num_step_targets(const gc_model_t* model);
GC_EXPORT size_t gc_model_num_step_outputs(const gc_model_t* model);

/* One training step on a batch: inputs[i] is model input i, targets[j] the target of trained
   output j (dtype, rank and shape checked as in gc_instance_run). Updates the instance's state in
   place. outputs receives the reported values (see gc_model_num_step_outputs), written like
   gc_instance_run's outputs; num_outputs may be 0 (outputs NULL). GC_UNIMPLEMENTED for an
   inference library. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_train_step(gc_instance_t* instance, const gc_tensor_t* inputs,
                                                                size_t num_inputs, const gc_tensor_t* targets,
                                                                size_t num_targets, gc_tensor_t* outputs,
                                                                size_t num_outputs);
/* One evaluation step on a batch: the loss and metrics of the instance's current state, nothing
   updated. It runs the model as in inference (Dropout off, BatchNormalization with its moving
   statistics) -- the evaluation graph compiled into the same library by `graphc compile --training`
   -- and reads the weights in place (no copy). Arguments as gc_instance_train_step; outputs
   receives the same reported values (loss, each output's loss, metric sums and counts:
   gc_model_output 0..gc_model_num_step_outputs-1 describe them), written like gc_instance_run's
   outputs (instance-owned memory is valid until the next call on the instance). Errors:
   GC_UNIMPLEMENTED for an inference library or a training library built without an evaluation
   step; GC_INVALID_ARGUMENT for a NULL pointer, a wrong count (inputs, targets, outputs), dtype,
   shape or size; GC_FAILED_PRECONDITION for a released instance or one in use by another thread.
   Thread rules as every instance call: one thread at a time. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_eval_step(gc_instance_t* instance, const gc_tensor_t* inputs,
                                                               size_t num_inputs, const gc_tensor_t* targets,
                                                               size_t num_targets, gc_tensor_t* outputs,
                                                               size_t num_outputs);
/* ----------------------------------------------------------------------------- split step

   A training library built with its split step (graphc.training.native_step.train_step_library(model,
   split_step=True); data-parallel training builds its libraries so) can run a training step in two
   halves, so that something -- an all-reduce across processes -- can change the gradients in between:

     gc_instance_gradient_step  forward pass, loss and backward pass on a batch: the gradient of the loss
                                with respect to every trainable weight is written into the instance's
                                gradient buffer; layer state (BatchNormalization moving statistics) is
                                updated as by a training step; nothing else changes;
     gc_instance_apply_gradients the optimizer update (with its gradient clipping, then the weights'
                                constraints) read from the gradient buffer; advances the iteration count.

   A gradient step followed by an apply step computes exactly what gc_instance_train_step computes. The
   gradient buffer is one contiguous block owned by the instance, valid for its whole life (the address
   never changes): gradient k (k = 0..gc_model_num_gradients-1, the trainable weights in the order the
   optimizer updates them) is a dense row-major array of its weight's dtype and shape at byte offset
   `offset` (gc_model_gradient), the gradients packed one after the other without padding. The caller
   may read and overwrite it between the two calls (average it across processes, scale it). */

/* 1 when the library holds a split step (gc_instance_gradient_step and gc_instance_apply_gradients). */
GC_EXPORT int gc_model_has_gradient_step(const gc_model_t* model);
/* The number of gradients in the buffer (0 without a split step). */
GC_EXPORT size_t gc_model_num_gradients(const gc_model_t* model);
/* Gradient `index`: its weight's name, dtype and shape in *out_desc and its byte offset in the buffer.
   GC_UNIMPLEMENTED without a split step; GC_INVALID_ARGUMENT for a NULL pointer or an index out of range. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_model_gradient(const gc_model_t* model, size_t index,
                                                           gc_tensor_desc_t* out_desc, size_t* out_offset);
/* The first half of a training step (see above). Arguments and reported outputs as gc_instance_train_step
   (outputs in instance memory stay valid until the next call on the instance). Errors: GC_UNIMPLEMENTED for
   an inference library or a training library without a split step; otherwise as gc_instance_train_step. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_gradient_step(gc_instance_t* instance, const gc_tensor_t* inputs,
                                                                   size_t num_inputs, const gc_tensor_t* targets,
                                                                   size_t num_targets, gc_tensor_t* outputs,
                                                                   size_t num_outputs);
/* The second half: the optimizer update from the gradient buffer as it is now, at the instance's current
   hyperparameters. Errors: GC_UNIMPLEMENTED without a split step; GC_FAILED_PRECONDITION for a released
   instance or one in use by another thread. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_apply_gradients(gc_instance_t* instance);
/* The gradient buffer, zero-copy: *out_data points at it (owned by the instance, writable, at least
   16-byte aligned, the same address for the instance's life), *out_size_bytes is its size. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_gradient_buffer(gc_instance_t* instance, void** out_data,
                                                                     size_t* out_size_bytes);

/* ----------------------------------------------------------------------------- collectives

   A training library built for data parallelism with synchronized statistics (graphc's
   DataParallel(sync_batchnorm=True)) holds cross-replica sums: values that every process running the
   same step adds up, such as BatchNormalization's per-batch sums. The generated code does not talk to
   other processes itself: between two kernels it calls the instance's collective hook with the buffer
   to sum in place. Without a hook (the default) the process is its own single replica and the buffer is
   left as it is. The hook is called on the thread that called into the instance, once per cross-replica
   sum, in the graph's order, with the same counts on every replica; it must sum `count` elements of
   `dtype` (GC_FLOAT32 or GC_FLOAT64) at `data` across the replicas, in place, and return 0, or nonzero
   when the collective failed (the step then fails with GC_OUT_OF_RANGE, naming the op and that value).
   `kind` GC_COLLECTIVE_SHARE_WEIGHTED_SUM (the gradient of a cross-replica sum) asks for the replicas'
   values each multiplied by that replica's share of the global batch before the sum, and the sum divided
   by the calling replica's share (ABI version 4). */

typedef enum gc_collective_kind {
  GC_COLLECTIVE_SUM = 0,
  GC_COLLECTIVE_SHARE_WEIGHTED_SUM = 1
} gc_collective_kind_t;

typedef int32_t (*gc_collective_fn)(void* user, void* data, int64_t count, gc_dtype_t dtype, int32_t kind);

/* Sets the instance's collective hook (`fn` NULL: none, one replica) and the `user` pointer passed to
   it; the evaluation, gradient and apply steps of a training library use the same hook. Errors:
   GC_INVALID_ARGUMENT for a NULL instance; GC_FAILED_PRECONDITION for a released instance or one in use
   by another thread. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_set_collective(gc_instance_t* instance, gc_collective_fn fn,
                                                                    void* user);

/* Sets hyperparameter `name` ("learning_rate") for the following steps; the library starts with
   the value the optimizer had when it was compiled. GC_NOT_FOUND for an unknown name. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_set_hyperparameter(gc_instance_t* instance, const char* name,
                                                                        double value);
/* Reads hyperparameter `name` into *out_value. */
GC_EXPORT GC_MUST_USE_RESULT gc_status_t gc_instance_get_hyperparameter(gc_instance_t* instance, const char* name,
                                                                        double* out_value);

#ifdef __cplusplus
}
#endif

#endif /* GRAPHC_GRAPHC_H_ */
