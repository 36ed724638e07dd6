/* instance.c — models and instances: describing, validating, planning and running.
 *
 * gc_instance_run checks every input against the model (count, dtype, rank, static dims, free
 * dims consistent across inputs and within bounds, exact byte size), binds the free dims, and
 * — only when their values differ from the previous call — asks the model for its output
 * shapes and scratch sizes and re-plans the scratch arena. It then fills the slot table and
 * calls the generated code.
 *
 * Misuse the runtime detects: an instance entered by a second thread while one is inside a call
 * (an atomic in-use flag: GC_FAILED_PRECONDITION "in use by another thread") and, on a best-effort
 * basis, a handle used after gc_instance_release (the tag is poisoned before the memory is
 * freed, and lies past the bytes allocators reuse for their own bookkeeping).
 *
 * A training library's step (gc_instance_train_step) runs the same way with the instance's
 * hyperparameters appended to the caller's inputs and targets, then writes each state update
 * (new weights, optimizer slots, iteration count, moving statistics) over its weight in the
 * instance's own copy of the weights and repacks the prepacked ones: the state never leaves
 * the instance between steps. The random state (a seed and one call counter per random op) is
 * per instance too.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GC_INSTANCE_LIVE 0x6763696e7374616eull /* "gcinstan" */
#define GC_INSTANCE_DEAD 0x646561646465616dull
/* The largest value a free dimension may take. */
#define GC_MAX_FREE_DIM ((int64_t)1 << 40)
#define GC_MAX_ARENA ((uint64_t)1 << 46)

struct gc_instance {
  /* the first 32 bytes: what free() may overwrite with its own links (glibc: up to 4 pointers) */
  const gc_model_t* model;
  gc_allocator_t alloc;
  gc_pool_t* pool;
  uint64_t tag;          /* GC_INSTANCE_LIVE, then GC_INSTANCE_DEAD once released */
  _Atomic int in_use;    /* 1 while a thread is inside a call on this instance */
  void** slots;
  int64_t* dims;         /* free dims of the current plan */
  int64_t* call_dims;    /* free dims being bound */
  int64_t* out_dims;     /* flattened dims of every output for `dims` */
  int64_t* scratch_size; /* bytes per scratch buffer for `dims` */
  uint64_t* scratch_offset;
  void* plan_work; /* gc__plan_arena's scratch */
  int planned;
  int plan_ran; /* the last run succeeded on the current plan (gc_instance_memory reports it) */
  uint64_t arena_bytes;   /* of the current plan */
  char* arena;
  uint64_t arena_capacity;
  /* sub-batches (model->batch_dim): the call dims the last choice was made for, and the rows of each
     sub-batch it chose (0: the batch runs whole); the plan is then for that many rows */
  int64_t* split_dims;
  void** split_out;       /* the outputs' buffers while sub-batches run */
  size_t* split_sample_bytes; /* and the bytes of one sample of each */
  int split_valid;
  int64_t split_rows;  /* the largest sub-batch */
  int64_t split_count; /* sub-batches (their samples: gc__sub_batch_start) */
  /* sub-batches at once, one per thread, each on its own copy of the arena (0: one after another with the
     pool on each op); the plan is then for one thread, whose slots and dims each worker keeps here */
  int32_t split_workers;
  /* the batch's tail (model->batch_tail_op) in the current split plan: the bytes of one sample of each
     scratch buffer live across its first op (0 for the others), held whole in the arena */
  int split_tail;
  size_t* tail_sample_bytes;
  gc_scratch_def_t* tail_defs; /* the scratch buffers' lives as planned: from the first op where they cross */
  uint64_t worker_stride; /* bytes between the workers' arenas */
  void** worker_slots;    /* threads x model->num_slots */
  int64_t* worker_dims;   /* threads x (model->num_free_dims + 1) */
  char* thread_scratch;
  int64_t thread_scratch_stride;
  unsigned char* weights_owned; /* a private copy once a weight was replaced or loaded */
  const unsigned char* weights;
  char* packed;
  void** owned_out;       /* instance-owned output buffers */
  size_t* owned_out_cap;
  int has_run;
  uint64_t* random;       /* [0] the seed, [1 + op] the calls of random op `op` so far */
  gc_tensor_t* step_in;   /* a training step's full input list (inputs, targets, hyperparameters) */
  gc_tensor_t* step_out;  /* a step's outputs: the in-place state updates point at their weights */
  float* hypers;          /* hyperparameter values (scalar float32 inputs of the step) */
  gc_profile_t* profile;  /* the kernel timer (options.profile), else NULL */
  gc_instance_t* eval;    /* the evaluation step's instance (created on first use), reading these weights */
  gc_instance_t* grad;    /* the split step's gradient and apply instances (created on first use), reading */
  gc_instance_t* apply;   /* these weights; the gradient one draws from this instance's random state */
  unsigned char* grads;   /* the gradient buffer (model->gradients_nbytes bytes), NULL without a split step */
  int stale_packed;       /* the apply step changed the weights: repack before the next run */
  gc_collective_t collective; /* the hook of cross-replica sums (gc_instance_set_collective), shared with
                                 the evaluation, gradient and apply instances */
};

_Static_assert(offsetof(struct gc_instance, tag) >= 4 * sizeof(void*),
               "the tag must survive free() for use-after-release to be reported");

/* ------------------------------------------------------------------ model description */

static gc_status_t gc__check_model(const gc_model_t* m) {
  if (m == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "model is NULL");
  if (m->abi != GC_MODEL_ABI)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model was compiled for runtime ABI %u, this runtime implements %u",
                    m->abi, GC_MODEL_ABI);
  return NULL;
}

const char* gc_model_name(const gc_model_t* m) { return m ? m->name : ""; }
size_t gc_model_num_inputs(const gc_model_t* m) { return m ? m->num_inputs : 0; }
size_t gc_model_num_outputs(const gc_model_t* m) { return m ? m->num_outputs : 0; }
size_t gc_model_num_weights(const gc_model_t* m) { return m ? m->num_weights : 0; }
int gc_model_has_embedded_weights(const gc_model_t* m) { return m && m->weights_data != NULL; }
const char* gc_model_target_cpu(const gc_model_t* m) {
  return m && m->abi == GC_MODEL_ABI && m->target_cpu ? m->target_cpu : "";
}
const char* gc_model_target_features(const gc_model_t* m) {
  return m && m->abi == GC_MODEL_ABI && m->target_features ? m->target_features : "";
}

/* Refuses a model whose code uses instructions this CPU lacks, before any of that code runs. */
static gc_status_t gc__check_cpu(const gc_model_t* m) {
  char missing[256];
  if (gc__cpu_missing_features(m->target_features, missing, sizeof missing) == 0) return NULL;
  return GC_ERROR(GC_FAILED_PRECONDITION,
                  "model '%s' was compiled for CPU '%s', whose instructions this CPU lacks (%s): build it for "
                  "this machine (cpu=\"host\") or for a CPU whose features it has",
                  m->name, m->target_cpu ? m->target_cpu : "?", missing);
}

static void gc__fill_desc(const char* name, int32_t dtype, int32_t rank, const int64_t* dims,
                          const char* const* dim_names, gc_tensor_desc_t* out) {
  memset(out, 0, sizeof(*out));
  out->name = name;
  out->dtype = (gc_dtype_t)dtype;
  out->rank = rank;
  for (int32_t i = 0; i < rank; i++) {
    out->shape[i] = dims[i] >= 0 ? dims[i] : -1;
    out->dim_names[i] = dim_names ? dim_names[i] : NULL;
  }
}

gc_status_t gc_model_input(const gc_model_t* m, size_t index, gc_tensor_desc_t* out) {
  GC_RETURN_IF_ERROR(gc__check_model(m));
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_desc is NULL");
  if (index >= m->num_inputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "input index %zu is out of range: model '%s' has %u inputs", index, m->name,
                    m->num_inputs);
  const gc_io_def_t* d = &m->inputs[index];
  gc__fill_desc(d->name, d->dtype, d->rank, d->dims, d->dim_names, out);
  return NULL;
}

gc_status_t gc_model_output(const gc_model_t* m, size_t index, gc_tensor_desc_t* out) {
  GC_RETURN_IF_ERROR(gc__check_model(m));
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_desc is NULL");
  if (index >= m->num_outputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "output index %zu is out of range: model '%s' has %u outputs", index,
                    m->name, m->num_outputs);
  const gc_io_def_t* d = &m->outputs[index];
  gc__fill_desc(d->name, d->dtype, d->rank, d->dims, d->dim_names, out);
  return NULL;
}

gc_status_t gc_model_weight(const gc_model_t* m, size_t index, gc_tensor_desc_t* out) {
  GC_RETURN_IF_ERROR(gc__check_model(m));
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_desc is NULL");
  if (index >= m->num_weights)
    return GC_ERROR(GC_INVALID_ARGUMENT, "weight index %zu is out of range: model '%s' has %u weights", index,
                    m->name, m->num_weights);
  const gc_weight_def_t* w = &m->weights[index];
  gc__fill_desc(w->name, w->dtype, w->rank, w->dims, NULL, out);
  return NULL;
}

static gc_status_t gc__find(const char* what, const gc_model_t* m, const char* name, uint32_t n,
                            const char* (*name_of)(const gc_model_t*, uint32_t), size_t* out_index) {
  GC_RETURN_IF_ERROR(gc__check_model(m));
  if (name == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "%s name is NULL", what);
  if (out_index == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_index is NULL");
  for (uint32_t i = 0; i < n; i++) {
    if (strcmp(name_of(m, i), name) == 0) {
      *out_index = i;
      return NULL;
    }
  }
  return GC_ERROR(GC_NOT_FOUND, "model '%s' has no %s named '%s'", m->name, what, name);
}

static const char* gc__input_name(const gc_model_t* m, uint32_t i) { return m->inputs[i].name; }
static const char* gc__output_name(const gc_model_t* m, uint32_t i) { return m->outputs[i].name; }
static const char* gc__weight_name(const gc_model_t* m, uint32_t i) { return m->weights[i].name; }

gc_status_t gc_model_find_input(const gc_model_t* m, const char* name, size_t* out_index) {
  return gc__find("input", m, name, m ? m->num_inputs : 0, gc__input_name, out_index);
}
gc_status_t gc_model_find_output(const gc_model_t* m, const char* name, size_t* out_index) {
  return gc__find("output", m, name, m ? m->num_outputs : 0, gc__output_name, out_index);
}
gc_status_t gc_model_find_weight(const gc_model_t* m, const char* name, size_t* out_index) {
  return gc__find("weight", m, name, m ? m->num_weights : 0, gc__weight_name, out_index);
}

/* ------------------------------------------------------------------ options and instances */

void gc_options_init(gc_options_t* o) {
  if (o == NULL) return;
  memset(o, 0, sizeof(*o));
  o->struct_size = (uint32_t)sizeof(gc_options_t);
  o->num_threads = 0;
  o->huge_pages = 1;
}

static gc_status_t gc__check_instance(const gc_instance_t* inst) {
  if (inst == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "instance is NULL");
  if (inst->tag == GC_INSTANCE_DEAD)
    return GC_ERROR(GC_FAILED_PRECONDITION, "instance was released (use after gc_instance_release)");
  if (inst->tag != GC_INSTANCE_LIVE)
    return GC_ERROR(GC_INVALID_ARGUMENT, "instance is not a gc_instance_t created by gc_instance_create");
  return NULL;
}

/* Every call that reads or changes an instance's state enters it first and leaves it after: a
   second thread entering meanwhile is refused instead of corrupting the state. */
static gc_status_t gc__enter(gc_instance_t* inst) {
  GC_RETURN_IF_ERROR(gc__check_instance(inst));
  if (atomic_exchange_explicit(&inst->in_use, 1, memory_order_acquire) != 0)
    return GC_ERROR(GC_FAILED_PRECONDITION,
                    "instance is in use by another thread: an instance serves one thread at a time "
                    "(create one instance per thread)");
  return NULL;
}

static void gc__leave(gc_instance_t* inst) { atomic_store_explicit(&inst->in_use, 0, memory_order_release); }

/* The body of an entry point: `call` (an expression giving a gc_status_t) run with `inst` entered, which is
   left whatever the call returns. */
#define GC__ENTERED(inst, call)                \
  do {                                         \
    GC_RETURN_IF_ERROR(gc__enter(inst));       \
    gc_status_t gc__entered_status = (call);   \
    gc__leave(inst);                           \
    return gc__entered_status;                 \
  } while (0)

const gc_model_t* gc_instance_model(const gc_instance_t* inst) {
  return inst && inst->tag == GC_INSTANCE_LIVE ? inst->model : NULL;
}

gc_profile_t* gc_instance_profile(gc_instance_t* inst) {
  return inst && inst->tag == GC_INSTANCE_LIVE ? inst->profile : NULL;
}

int32_t gc_instance_num_threads(const gc_instance_t* inst) {
  return inst && inst->tag == GC_INSTANCE_LIVE ? gc__pool_num_threads(inst->pool) : 0;
}

int64_t gc_instance_sub_batch(const gc_instance_t* inst) {
  return inst && inst->tag == GC_INSTANCE_LIVE && inst->split_valid ? inst->split_rows : 0;
}

int64_t gc_instance_sub_batch_count(const gc_instance_t* inst) {
  return inst && inst->tag == GC_INSTANCE_LIVE && inst->split_valid && inst->split_rows ? inst->split_count : 0;
}

/* The arena's copies: one per worker where sub-batches run at once, else one. */
static int32_t gc__arena_copies(const gc_instance_t* inst) {
  return inst->split_rows && inst->split_workers > 1 ? inst->split_workers : 1;
}

int32_t gc_instance_sub_batch_threads(const gc_instance_t* inst) {
  if (!inst || inst->tag != GC_INSTANCE_LIVE || !inst->split_valid || !inst->split_rows) return 0;
  return gc__arena_copies(inst);
}

int32_t gc_model_batch_tail_op(const gc_model_t* m) {
  return m && m->abi == GC_MODEL_ABI && m->run_ops != NULL ? m->batch_tail_op : -1;
}

int32_t gc_instance_batch_tail_op(const gc_instance_t* inst) {
  if (!inst || inst->tag != GC_INSTANCE_LIVE || !inst->split_valid || !inst->split_rows || !inst->split_tail) return -1;
  return inst->model->batch_tail_op;
}

size_t gc_model_num_scratch(const gc_model_t* m) { return m && m->abi == GC_MODEL_ABI ? m->num_scratch : 0; }

static gc_status_t gc__require_plan(const gc_instance_t* inst) {
  if (!inst->plan_ran)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no memory plan to report: no run has succeeded yet",
                    inst->model->name);
  return NULL;
}

static gc_status_t gc__memory(gc_instance_t* inst, gc_memory_info_t* out) {
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out is NULL");
  GC_RETURN_IF_ERROR(gc__require_plan(inst));
  const gc_model_t* m = inst->model;
  out->arena_bytes = inst->arena_bytes;
  out->arena_copies = gc__arena_copies(inst);
  out->thread_scratch_bytes = (uint64_t)inst->thread_scratch_stride * (uint64_t)gc__pool_num_threads(inst->pool);
  out->packed_bytes = m->packed_nbytes;
  return NULL;
}

gc_status_t gc_instance_memory(gc_instance_t* inst, gc_memory_info_t* out) {
  GC__ENTERED(inst, gc__memory(inst, out));
}

static gc_status_t gc__scratch(gc_instance_t* inst, size_t index, gc_scratch_info_t* out) {
  const gc_model_t* m = inst->model;
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out is NULL");
  if (index >= m->num_scratch)
    return GC_ERROR(GC_INVALID_ARGUMENT, "scratch index %zu is out of range: model '%s' has %u scratch buffers",
                    index, m->name, m->num_scratch);
  GC_RETURN_IF_ERROR(gc__require_plan(inst));
  const gc_scratch_def_t* d = &m->scratch[index];
  out->name = d->name;
  out->offset = inst->scratch_offset[index];
  out->nbytes = (uint64_t)inst->scratch_size[index];
  out->first_op = inst->split_tail ? inst->tail_defs[index].first : d->first; /* as planned */
  out->last_op = d->last;
  return NULL;
}

gc_status_t gc_instance_scratch(gc_instance_t* inst, size_t index, gc_scratch_info_t* out) {
  GC__ENTERED(inst, gc__scratch(inst, index, out));
}

static void gc__set_weight_slots(gc_instance_t* inst) {
  const gc_model_t* m = inst->model;
  for (uint32_t i = 0; i < m->num_weights; i++)
    inst->slots[m->weights[i].slot] = (void*)(inst->weights + m->weights[i].offset);
  for (uint32_t i = 0; i < m->num_packed; i++) inst->slots[m->packed[i].slot] = inst->packed + m->packed[i].offset;
}

static void gc__prepare(gc_instance_t* inst, int32_t which) {
  if (inst->model->num_packed > 0) inst->model->prepare(inst->slots, which);
}

static size_t gc__array_bytes(size_t n, size_t elem) { return (n == 0 ? 1 : n) * elem; }

/* A zero-filled table of n elements (at least one), or NULL. */
static void* gc__table(const gc_allocator_t* a, size_t n, size_t elem) {
  void* p = gc__alloc(a, gc__array_bytes(n, elem), 64);
  if (p != NULL) memset(p, 0, gc__array_bytes(n, elem));
  return p;
}

/* The weights of a model that has none: any non-NULL address (nothing is ever read from it). */
static const unsigned char gc__no_weights[1] = {0};

/* An instance of m; with `borrowed`, one that reads those weights (another instance's, of the same
   layout) instead of its own: the evaluation step's. */
static gc_status_t gc__create(const gc_model_t* m, const gc_options_t* options, const unsigned char* borrowed,
                              gc_instance_t** out_instance) {
  if (out_instance == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_instance is NULL");
  *out_instance = NULL;
  GC_RETURN_IF_ERROR(gc__check_model(m));
  GC_RETURN_IF_ERROR(gc__check_cpu(m));
  gc_options_t opts;
  gc_options_init(&opts);
  if (options != NULL) {
    /* earlier options end before `seed`, `profile` or `huge_pages`: their prefix is taken, the rest keeps
       defaults */
    if (options->struct_size != sizeof(gc_options_t) && options->struct_size != offsetof(gc_options_t, seed) &&
        options->struct_size != offsetof(gc_options_t, profile) &&
        options->struct_size != offsetof(gc_options_t, huge_pages))
      return GC_ERROR(GC_INVALID_ARGUMENT,
                      "options->struct_size is %u, expected %zu: initialize options with gc_options_init",
                      options->struct_size, sizeof(gc_options_t));
    memcpy(&opts, options, options->struct_size);
    opts.struct_size = (uint32_t)sizeof(gc_options_t);
  }
  if (opts.num_threads < 0)
    return GC_ERROR(GC_INVALID_ARGUMENT, "options->num_threads is %d; must be >= 0 (0 = all cores)",
                    (int)opts.num_threads);
  if ((opts.allocator.alloc == NULL) != (opts.allocator.free == NULL))
    return GC_ERROR(GC_INVALID_ARGUMENT, "options->allocator needs both alloc and free (or neither)");
  if (opts.allocator.alloc == NULL) gc__default_allocator(&opts.allocator, opts.huge_pages);
  const gc_allocator_t* a = &opts.allocator;

  gc_instance_t* inst = (gc_instance_t*)gc__alloc(a, sizeof(gc_instance_t), 64);
  if (inst == NULL) return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate an instance of model '%s'", m->name);
  /* everything zeroed before the first fallible step: the failure path releases a valid instance */
  memset(inst, 0, sizeof(*inst));
  inst->tag = GC_INSTANCE_LIVE;
  atomic_init(&inst->in_use, 0);
  inst->model = m;
  inst->alloc = *a;
  size_t n_out_dims = 0;
  for (uint32_t i = 0; i < m->num_outputs; i++) n_out_dims += (size_t)m->outputs[i].rank;
  inst->slots = (void**)gc__table(a, m->num_slots, sizeof(void*));
  /* the dims arrays end with one more entry: the thread count, which kernels read like a free dim */
  inst->dims = (int64_t*)gc__table(a, (size_t)m->num_free_dims + 1, sizeof(int64_t));
  inst->call_dims = (int64_t*)gc__table(a, (size_t)m->num_free_dims + 1, sizeof(int64_t));
  inst->out_dims = (int64_t*)gc__table(a, n_out_dims, sizeof(int64_t));
  inst->scratch_size = (int64_t*)gc__table(a, m->num_scratch, sizeof(int64_t));
  inst->scratch_offset = (uint64_t*)gc__table(a, m->num_scratch, sizeof(uint64_t));
  inst->plan_work = gc__table(a, m->num_scratch, GC_PLAN_WORK_BYTES_PER_BUFFER);
  inst->split_dims = (int64_t*)gc__table(a, (size_t)m->num_free_dims + 1, sizeof(int64_t));
  inst->split_out = (void**)gc__table(a, m->num_outputs, sizeof(void*));
  inst->split_sample_bytes = (size_t*)gc__table(a, m->num_outputs, sizeof(size_t));
  inst->tail_sample_bytes = (size_t*)gc__table(a, m->num_scratch, sizeof(size_t));
  inst->tail_defs = (gc_scratch_def_t*)gc__table(a, m->num_scratch, sizeof(gc_scratch_def_t));
  inst->owned_out = (void**)gc__table(a, m->num_outputs, sizeof(void*));
  inst->owned_out_cap = (size_t*)gc__table(a, m->num_outputs, sizeof(size_t));
  inst->random = (uint64_t*)gc__table(a, (size_t)m->num_ops + 1, sizeof(uint64_t));
  inst->step_in = (gc_tensor_t*)gc__table(a, m->num_inputs, sizeof(gc_tensor_t));
  inst->step_out = (gc_tensor_t*)gc__table(a, m->num_outputs, sizeof(gc_tensor_t));
  inst->hypers = (float*)gc__table(a, m->num_hypers, sizeof(float));
  gc_status_t status = NULL;
  if (!inst->slots || !inst->dims || !inst->call_dims || !inst->split_dims || !inst->split_out ||
      !inst->split_sample_bytes || !inst->tail_sample_bytes || !inst->tail_defs || !inst->out_dims ||
      !inst->scratch_size || !inst->scratch_offset || !inst->plan_work || !inst->owned_out || !inst->owned_out_cap || !inst->random ||
      !inst->step_in || !inst->step_out || !inst->hypers) {
    status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate the tables of an instance of model '%s'", m->name);
    goto fail;
  }

  inst->random[0] = opts.seed;
  for (uint32_t k = 0; k < m->num_hypers; k++) {
    const gc_hyper_def_t* h = &m->hypers[k];
    gc_tensor_t* t = &inst->step_in[h->input];
    inst->hypers[k] = (float)h->initial;
    t->dtype = GC_FLOAT32;
    t->rank = 0;
    t->data = &inst->hypers[k];
    t->size_bytes = sizeof(float);
  }
  if (m->gradients_nbytes > 0) {
    inst->grads = (unsigned char*)gc__table(a, (size_t)m->gradients_nbytes, 1);
    if (!inst->grads) {
      status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate the %llu-byte gradient buffer of model '%s'",
                        (unsigned long long)m->gradients_nbytes, m->name);
      goto fail;
    }
  }
  status = gc__pool_create(a, opts.num_threads, &inst->pool);
  if (status) goto fail;
  if (opts.profile) {
    status = gc__profile_create(a, m->num_ops, opts.profile_events, &inst->profile);
    if (status) goto fail;
  }
  int32_t threads = gc__pool_num_threads(inst->pool);
  inst->call_dims[m->num_free_dims] = threads;
  inst->dims[m->num_free_dims] = threads;
  if (threads > 1 && m->batch_dim >= 0 && m->batch_budget > 0) {
    inst->worker_slots = (void**)gc__table(a, (size_t)threads * m->num_slots, sizeof(void*));
    inst->worker_dims = (int64_t*)gc__table(a, (size_t)threads * (m->num_free_dims + 1), sizeof(int64_t));
    if (!inst->worker_slots || !inst->worker_dims) {
      status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate the sub-batch tables of %d threads", (int)threads);
      goto fail;
    }
  }
  inst->thread_scratch_stride = (int64_t)((m->thread_scratch_nbytes + 63) / 64 * 64);
  if (inst->thread_scratch_stride > 0) {
    inst->thread_scratch = (char*)gc__alloc(a, (size_t)inst->thread_scratch_stride * (size_t)threads, 64);
    if (!inst->thread_scratch) {
      status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %lld bytes of per-thread scratch",
                        (long long)inst->thread_scratch_stride * threads);
      goto fail;
    }
  }
  if (m->packed_nbytes > 0) {
    inst->packed = (char*)gc__alloc(a, (size_t)m->packed_nbytes, 64);
    if (!inst->packed) {
      status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes for prepacked weights",
                        (unsigned long long)m->packed_nbytes);
      goto fail;
    }
  }
  if (borrowed != NULL || m->weights_data != NULL || m->weights_nbytes == 0) {
    /* borrowed or embedded weights, or a model without weights: it needs no weights file */
    inst->weights = borrowed != NULL ? borrowed : m->weights_data != NULL ? m->weights_data : gc__no_weights;
    gc__set_weight_slots(inst);
    gc__prepare(inst, -1);
  }
  if (borrowed != NULL) {
    /* nothing to load */
  } else if (opts.weights_path != NULL) {
    status = gc_instance_load_weights(inst, opts.weights_path);
    if (status) goto fail;
  } else if (m->weights_data == NULL && m->weights_nbytes > 0) {
    status = GC_ERROR(GC_FAILED_PRECONDITION,
                      "model '%s' was compiled with external weights: set options.weights_path to its weights file",
                      m->name);
    goto fail;
  }
  *out_instance = inst;
  return NULL;

fail:
  gc_instance_release(inst);
  return status;
}

gc_status_t gc_instance_create(const gc_model_t* m, const gc_options_t* options, gc_instance_t** out_instance) {
  return gc__create(m, options, NULL, out_instance);
}

void gc_instance_release(gc_instance_t* inst) {
  if (inst == NULL || inst->tag != GC_INSTANCE_LIVE) return;
  gc_allocator_t a = inst->alloc;
  gc_instance_release(inst->eval);
  if (inst->grad) inst->grad->random = NULL; /* borrowed from this instance */
  gc_instance_release(inst->grad);
  gc_instance_release(inst->apply);
  gc__free(&a, inst->grads);
  gc__pool_release(inst->pool);
  if (inst->owned_out) {
    for (uint32_t i = 0; i < inst->model->num_outputs; i++) gc__free(&a, inst->owned_out[i]);
  }
  gc__free(&a, inst->owned_out);
  gc__free(&a, inst->owned_out_cap);
  gc__free(&a, inst->slots);
  gc__free(&a, inst->dims);
  gc__free(&a, inst->call_dims);
  gc__free(&a, inst->out_dims);
  gc__free(&a, inst->scratch_size);
  gc__free(&a, inst->scratch_offset);
  gc__free(&a, inst->plan_work);
  gc__free(&a, inst->split_dims);
  gc__free(&a, inst->split_out);
  gc__free(&a, inst->split_sample_bytes);
  gc__free(&a, inst->tail_sample_bytes);
  gc__free(&a, inst->tail_defs);
  gc__free(&a, inst->worker_slots);
  gc__free(&a, inst->worker_dims);
  gc__free(&a, inst->arena);
  gc__free(&a, inst->thread_scratch);
  gc__free(&a, inst->weights_owned);
  gc__free(&a, inst->packed);
  gc__free(&a, inst->random);
  gc__free(&a, inst->step_in);
  gc__free(&a, inst->step_out);
  gc__free(&a, inst->hypers);
  gc__profile_release(&a, inst->profile);
  inst->tag = GC_INSTANCE_DEAD; /* poisoned before the memory goes back: see the struct's layout */
  gc__free(&a, inst);
}

/* ------------------------------------------------------------------ running */

static void gc__format_shape(char* buf, size_t cap, int32_t rank, const int64_t* shape) {
  size_t n = (size_t)snprintf(buf, cap, "(");
  for (int32_t i = 0; i < rank && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (n < cap) n += (size_t)snprintf(buf + n, cap - n, rank == 1 ? ",)" : ")");
}

static void gc__format_expected(char* buf, size_t cap, const gc_io_def_t* d, const gc_model_t* m) {
  size_t n = (size_t)snprintf(buf, cap, "(");
  for (int32_t i = 0; i < d->rank && n < cap; i++) {
    if (d->dims[i] >= 0)
      n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)d->dims[i]);
    else
      n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", m->free_dims[-d->dims[i] - 1]);
  }
  if (n < cap) n += (size_t)snprintf(buf + n, cap - n, d->rank == 1 ? ",)" : ")");
}

static int gc__mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

static gc_status_t gc__bind_inputs(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs) {
  const gc_model_t* m = inst->model;
  if (num_inputs != m->num_inputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "model '%s' takes %u input(s), got %zu", m->name, m->num_inputs,
                    num_inputs);
  if (inputs == NULL && num_inputs > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "inputs is NULL");
  for (uint32_t k = 0; k < m->num_free_dims; k++) inst->call_dims[k] = -1;
  char want[256], got[256];
  for (uint32_t i = 0; i < m->num_inputs; i++) {
    const gc_io_def_t* d = &m->inputs[i];
    const gc_tensor_t* t = &inputs[i];
    if (t->dtype != (gc_dtype_t)d->dtype)
      return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' (#%u) expects dtype %s, got %s (%d)", d->name, i,
                      gc_dtype_name((gc_dtype_t)d->dtype), gc_dtype_name(t->dtype), (int)t->dtype);
    if (t->rank != d->rank) {
      gc__format_expected(want, sizeof want, d, m);
      if (t->rank >= 0 && t->rank <= GC_MAX_RANK)
        gc__format_shape(got, sizeof got, t->rank, t->shape);
      else
        snprintf(got, sizeof got, "(invalid rank %d)", (int)t->rank);
      return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' expects shape %s (rank %d), got shape %s (rank %d)", d->name,
                      want, (int)d->rank, got, (int)t->rank);
    }
    uint64_t elems = 1;
    for (int32_t a = 0; a < d->rank; a++) {
      int64_t n = t->shape[a];
      if (d->dims[a] >= 0) {
        if (n != d->dims[a]) {
          gc__format_expected(want, sizeof want, d, m);
          gc__format_shape(got, sizeof got, t->rank, t->shape);
          return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' expects shape %s, got %s (axis %d: expected %lld, got %lld)",
                          d->name, want, got, (int)a, (long long)d->dims[a], (long long)n);
        }
      } else {
        int64_t k = -d->dims[a] - 1;
        const char* dim = m->free_dims[k];
        if (n < 1)
          return GC_ERROR(GC_INVALID_ARGUMENT,
                          "input '%s' axis %d (free dimension '%s') is %lld; it must be at least 1", d->name, (int)a,
                          dim, (long long)n);
        if (n > GC_MAX_FREE_DIM)
          return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' axis %d (free dimension '%s') is %lld; the limit is %lld",
                          d->name, (int)a, dim, (long long)n, (long long)GC_MAX_FREE_DIM);
        if (inst->call_dims[k] >= 0 && inst->call_dims[k] != n)
          return GC_ERROR(GC_INVALID_ARGUMENT,
                          "input '%s' axis %d (free dimension '%s') is %lld, but an earlier input gives '%s' = %lld",
                          d->name, (int)a, dim, (long long)n, dim, (long long)inst->call_dims[k]);
        inst->call_dims[k] = n;
      }
      if (gc__mul_overflows(elems, (uint64_t)n, &elems))
        return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' has too many elements", d->name);
    }
    uint64_t bytes;
    if (gc__mul_overflows(elems, gc_dtype_size(t->dtype), &bytes))
      return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' has too many elements", d->name);
    if (t->size_bytes != bytes) {
      gc__format_shape(got, sizeof got, t->rank, t->shape);
      return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' of shape %s %s needs %llu bytes, size_bytes says %zu", d->name,
                      got, gc_dtype_name(t->dtype), (unsigned long long)bytes, t->size_bytes);
    }
    if (t->data == NULL && bytes > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "input '%s' has data == NULL", d->name);
    inst->slots[d->slot] = t->data;
  }
  for (uint32_t k = 0; k < m->num_free_dims; k++)
    if (inst->call_dims[k] < 0)
      return GC_ERROR(GC_INTERNAL, "free dimension '%s' is not bound by any input", m->free_dims[k]);
  return NULL;
}

/* An arena of at least `bytes` (its contents not kept). */
static gc_status_t gc__reserve_arena(gc_instance_t* inst, uint64_t bytes) {
  const gc_model_t* m = inst->model;
  if (bytes > GC_MAX_ARENA)
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "model '%s' would need %llu bytes of scratch memory for these shapes",
                    m->name, (unsigned long long)bytes);
  if (bytes > inst->arena_capacity) {
    gc__free(&inst->alloc, inst->arena);
    inst->arena_capacity = 0;
    inst->arena = (char*)gc__alloc(&inst->alloc, (size_t)bytes, 64);
    if (inst->arena == NULL)
      return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes of scratch memory for model '%s'",
                      (unsigned long long)bytes, m->name);
    inst->arena_capacity = bytes;
  }
  return NULL;
}

/* Output shapes, scratch sizes and the arena for the bound free dims (kept while they repeat). */
/* The failure of the model's shape check `check` (1 + its index) for the call dims. */
static gc_status_t gc__shape_check_failed(const gc_instance_t* inst, int32_t check) {
  const gc_model_t* m = inst->model;
  char dims[512];
  size_t n = 0;
  dims[0] = 0;
  for (uint32_t k = 0; k < m->num_free_dims && n < sizeof dims; k++)
    n += (size_t)snprintf(dims + n, sizeof dims - n, "%s%s = %lld", k ? ", " : "", m->free_dims[k],
                          (long long)inst->call_dims[k]);
  return GC_ERROR(GC_INVALID_ARGUMENT, "%s (with %s)", m->check_messages[check - 1], dims);
}

/* The arena for the scratch sizes in inst->scratch_size and the lives in `defs`: offsets, room, slots; the
   plan is then that of the call dims. */
static gc_status_t gc__place_scratch(gc_instance_t* inst, const gc_scratch_def_t* defs) {
  const gc_model_t* m = inst->model;
  uint64_t arena = gc__plan_arena(defs, inst->scratch_size, m->num_scratch, inst->scratch_offset, inst->plan_work);
  GC_RETURN_IF_ERROR(gc__reserve_arena(inst, arena));
  for (uint32_t i = 0; i < m->num_scratch; i++) inst->slots[m->scratch[i].slot] = inst->arena + inst->scratch_offset[i];
  memcpy(inst->dims, inst->call_dims, sizeof(int64_t) * m->num_free_dims);
  inst->arena_bytes = arena;
  inst->planned = 1;
  return NULL;
}

static gc_status_t gc__plan(gc_instance_t* inst) {
  const gc_model_t* m = inst->model;
  if (inst->planned && memcmp(inst->dims, inst->call_dims, sizeof(int64_t) * m->num_free_dims) == 0) return NULL;
  inst->planned = 0;
  int32_t check = m->shapes(inst->call_dims, inst->out_dims, inst->scratch_size);
  if (check != 0) return gc__shape_check_failed(inst, check);
  return gc__place_scratch(inst, m->scratch);
}

/* gc__plan for sub-batches of the call dims' rows ahead of the batch's tail (model->batch_tail_op): the
   buffers of the ops before it sized for one sub-batch, those of the tail and those live across its first
   op (which the sub-batches fill a sample range at a time: inst->tail_sample_bytes) for the whole batch of
   `total` samples on `threads` threads, all placed by one plan (a tail buffer never lives beside a
   sub-batch's; a buffer across the tail's first op lives from the first op on, through every sub-batch).
   The outputs' dims are the whole batch's. */
static gc_status_t gc__plan_tail(gc_instance_t* inst, int64_t total, int32_t threads) {
  const gc_model_t* m = inst->model;
  uint32_t nd = m->num_free_dims;
  int32_t tail = m->batch_tail_op;
  int64_t* whole = inst->split_dims; /* free until the split is recorded */
  int64_t* whole_size = (int64_t*)(void*)inst->scratch_offset; /* free until the scratch is placed */
  memcpy(whole, inst->call_dims, sizeof(int64_t) * (nd + 1));
  whole[m->batch_dim] = total;
  whole[nd] = threads;
  inst->planned = 0;
  int32_t check = m->shapes(inst->call_dims, inst->out_dims, inst->scratch_size);
  if (check == 0) check = m->shapes(whole, inst->out_dims, whole_size);
  if (check != 0) return gc__shape_check_failed(inst, check);
  for (uint32_t i = 0; i < m->num_scratch; i++) {
    const gc_scratch_def_t* b = &m->scratch[i];
    inst->tail_defs[i] = *b;
    inst->tail_sample_bytes[i] = 0;
    if (b->last < tail || b->first < 0) continue;
    inst->scratch_size[i] = whole_size[i];
    if (b->first < tail) {
      if (whole_size[i] % total != 0)
        return GC_ERROR(GC_INTERNAL, "model '%s': scratch buffer '%s' (%lld bytes for %lld samples) does not lead "
                        "with the batch", m->name, b->name, (long long)whole_size[i], (long long)total);
      inst->tail_sample_bytes[i] = (size_t)(whole_size[i] / total);
      inst->tail_defs[i].first = 0;
    }
  }
  return gc__place_scratch(inst, inst->tail_defs);
}

/* How many sub-batches a batch of `total` samples runs in, given that `fit` samples fit the budget
   (fit < total), and (*at_once) whether `threads` workers run them at once, one each: as many as a
   multiple of the threads where that leaves each at least one sample (then gc__sub_batch_start keeps
   each thread's share of the batch within a sample of the others'), else one sample each where the
   threads share them evenly or each has at least four (the last round leaving one idle for at most a
   fifth of the time); otherwise one after another, each op split over the threads. */
static int64_t gc__sub_batch_count(int64_t total, int64_t fit, int32_t threads, int* at_once) {
  int64_t n = (total + fit - 1) / fit;
  *at_once = 0;
  if (threads < 2) return n;
  int64_t even = (n + threads - 1) / threads * threads;
  if (even <= total) {
    *at_once = 1;
    return even;
  }
  if (total % threads == 0 || total >= 4 * (int64_t)threads) {
    *at_once = 1;
    return total;
  }
  return n;
}

/* The first of `total` items in piece `b` of `count` as even as they allow: the first total % count pieces
   hold one item more than the others (no product of the total with the count, which could overflow). */
static int64_t gc__even_start(int64_t total, int64_t count, int64_t b) {
  int64_t q = total / count, r = total % count;
  return b * q + (b < r ? b : r);
}

/* The first sample of sub-batch `b` of `count` over `total` samples. Sub-batches run at once by `workers`
   threads (count a multiple of them) go to the threads in runs: gc__parallel_for starts thread t at
   sub-batch count * t / workers. The batch is then shared evenly between those runs first, and each run's
   share between its sub-batches, so that the threads' shares differ by a sample at most: the first total %
   count sub-batches one sample longer would give the first thread all of them (32 samples in 6 sub-batches
   on 2 threads: 6 + 6 + 5 against 5 + 5 + 5, where 6 + 5 + 5 twice is even). Otherwise (one after another,
   or one sample each) the first total % count sub-batches hold one sample more than the others. */
static int64_t gc__sub_batch_start(int64_t total, int64_t count, int32_t workers, int64_t b) {
  if (workers < 2 || count % workers != 0) return gc__even_start(total, count, b);
  int64_t per = count / workers, run = b / per;
  if (run >= workers) return total;
  int64_t first = gc__even_start(total, workers, run);
  return first + gc__even_start(gc__even_start(total, workers, run + 1) - first, per, b % per);
}

int64_t gc_instance_sub_batch_start(const gc_instance_t* inst, int64_t b) {
  int64_t count = gc_instance_sub_batch_count(inst);
  if (count == 0 || b < 0 || b > count) return -1;
  return gc__sub_batch_start(inst->split_dims[inst->model->batch_dim], count, inst->split_workers, b);
}

/* Room for `workers` copies of the current plan's arena, each at a multiple of 64 bytes; the instance's
   slots point into the first. */
static gc_status_t gc__worker_arenas(gc_instance_t* inst, int32_t workers) {
  const gc_model_t* m = inst->model;
  uint64_t stride = (inst->arena_bytes + 63) / 64 * 64;
  GC_RETURN_IF_ERROR(gc__reserve_arena(inst, stride * (uint64_t)workers));
  for (uint32_t i = 0; i < m->num_scratch; i++) inst->slots[m->scratch[i].slot] = inst->arena + inst->scratch_offset[i];
  inst->worker_stride = stride;
  return NULL;
}

/* Plans one sample for the bound call dims (their batch 1) and sets *fit to the samples whose scratch the
   model's budget holds (at least 1). */
static gc_status_t gc__samples_that_fit(gc_instance_t* inst, int64_t* fit) {
  GC_RETURN_IF_ERROR(gc__plan(inst));
  uint64_t per_row = inst->arena_bytes ? inst->arena_bytes : 1;
  uint64_t n = inst->model->batch_budget / per_row;
  *fit = n < 1 ? 1 : n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n;
  return NULL;
}

/* gc__plan for the bound call dims, choosing sub-batches where the model allows them (batch_split.py):
   *rows_out = the rows of each sub-batch (the plan is made for that many; the outputs' dims say the whole
   batch), or 0 where the batch runs whole. With several threads the sub-batches run at once, one per
   thread (inst->split_workers), where they divide evenly enough: the plan is then one thread's, the arena
   one copy per thread. The choice is kept while the call dims repeat. */
static gc_status_t gc__plan_batches(gc_instance_t* inst, int64_t* rows_out) {
  const gc_model_t* m = inst->model;
  int32_t d = m->batch_dim;
  *rows_out = 0;
  if (d < 0 || m->batch_budget == 0) return gc__plan(inst);
  size_t nbytes = sizeof(int64_t) * m->num_free_dims;
  if (inst->split_valid && memcmp(inst->split_dims, inst->call_dims, nbytes) == 0) {
    *rows_out = inst->split_rows;
    return inst->split_rows ? NULL : gc__plan(inst);
  }
  inst->split_valid = 0;
  inst->split_workers = 0;
  inst->planned = 0; /* the outputs' dims of a split plan are the whole batch's: never reuse them */
  int64_t total = inst->call_dims[d];
  int64_t rows = total, count = 1;
  int32_t threads = gc__pool_num_threads(inst->pool);
  gc_status_t status = NULL;
  if (total > 1) { /* the scratch one sample needs: as many rows as the budget holds */
    /* planned as the sub-batches would run (some kernels' scratch follows the thread count): first on one
       worker each, where they may run at once; else, or where they then do not, with each op split over
       the threads */
    int workers = inst->worker_slots && threads > 1, at_once = 0;
    inst->call_dims[d] = 1;
    inst->call_dims[m->num_free_dims] = workers ? 1 : threads;
    inst->planned = 0;
    int64_t fit = 0;
    status = gc__samples_that_fit(inst, &fit);
    if (status == NULL && fit < total) count = gc__sub_batch_count(total, fit, workers ? threads : 1, &at_once);
    if (status == NULL && workers && !at_once) {
      inst->call_dims[m->num_free_dims] = threads;
      inst->planned = 0;
      status = gc__samples_that_fit(inst, &fit);
      count = fit < total ? (total + fit - 1) / fit : 1;
    }
    if (status == NULL && count > 1) {
      rows = (total + count - 1) / count;
      if (at_once) inst->split_workers = threads; /* each sub-batch on one thread: dims[threads] stays 1 */
    }
    inst->planned = 0;
    inst->call_dims[d] = rows;
  }
  inst->split_tail = status == NULL && rows < total && m->batch_tail_op >= 0 && m->run_ops != NULL;
  if (status == NULL) status = inst->split_tail ? gc__plan_tail(inst, total, threads) : gc__plan(inst);
  inst->call_dims[m->num_free_dims] = threads;
  if (status == NULL && inst->split_workers) status = gc__worker_arenas(inst, inst->split_workers);
  if (status != NULL) {
    inst->planned = 0;
    inst->split_workers = 0;
    inst->split_tail = 0;
    return status;
  }
  memcpy(inst->split_dims, inst->dims, nbytes);
  inst->split_dims[d] = total;
  inst->split_rows = rows < total ? rows : 0;
  inst->split_count = count;
  if (inst->split_rows) { /* every output leads with the batch: its dims say the whole of it */
    int64_t* dims = inst->out_dims;
    for (uint32_t i = 0; i < m->num_outputs; i++) {
      dims[0] = total;
      dims += m->outputs[i].rank;
    }
    inst->planned = 0; /* a later unsplit plan for `rows` rows must not take these output dims */
  }
  inst->split_valid = 1;
  *rows_out = inst->split_rows;
  return NULL;
}

static uint64_t gc__output_bytes(const gc_instance_t* inst, uint32_t i, const int64_t** dims_out) {
  const gc_model_t* m = inst->model;
  const int64_t* dims = inst->out_dims;
  for (uint32_t k = 0; k < i; k++) dims += m->outputs[k].rank;
  uint64_t n = gc_dtype_size((gc_dtype_t)m->outputs[i].dtype);
  for (int32_t a = 0; a < m->outputs[i].rank; a++) n *= (uint64_t)dims[a];
  *dims_out = dims;
  return n;
}

static void gc__describe_output(const gc_instance_t* inst, uint32_t i, void* data, size_t cap, gc_tensor_t* t) {
  const gc_io_def_t* d = &inst->model->outputs[i];
  const int64_t* dims;
  (void)gc__output_bytes(inst, i, &dims);
  t->dtype = (gc_dtype_t)d->dtype;
  t->rank = d->rank;
  for (int32_t a = 0; a < GC_MAX_RANK; a++) t->shape[a] = a < d->rank ? dims[a] : 0;
  t->data = data;
  t->size_bytes = cap;
}

/* A call in sub-batches: the whole batch's inputs and output buffers, the bytes of one sample of each
   output, and the first failure of a sub-batch run on another thread. `frame` comes first: the pool hands
   it to gc__worker_task. */
typedef struct gc_batch_job {
  gc_frame_t frame;
  gc_instance_t* inst;
  const gc_tensor_t* inputs;
  int64_t count, total;
  _Atomic int32_t failed;
  int64_t error_value;
} gc_batch_job_t;

/* `slots`' inputs and outputs addressed at sample `s` of the batch (the model's outputs' buffers in
   inst->split_out, their sample sizes in inst->split_sample_bytes). */
static void gc__address_sub_batch(const gc_batch_job_t* job, void** slots, int64_t s) {
  const gc_instance_t* inst = job->inst;
  const gc_model_t* m = inst->model;
  for (uint32_t i = 0; i < m->num_inputs; i++)
    slots[m->inputs[i].slot] =
        (char*)job->inputs[i].data + (size_t)s * (job->inputs[i].size_bytes / (size_t)job->total);
  for (uint32_t i = 0; i < m->num_outputs; i++)
    slots[m->outputs[i].slot] = (char*)inst->split_out[i] + (size_t)s * inst->split_sample_bytes[i];
  if (inst->split_tail) /* the tail's inputs: the whole batch's buffers, in the first copy of the arena */
    for (uint32_t i = 0; i < m->num_scratch; i++)
      if (inst->tail_sample_bytes[i])
        slots[m->scratch[i].slot] = inst->arena + inst->scratch_offset[i] + (size_t)s * inst->tail_sample_bytes[i];
}

/* The ops a sub-batch runs: all of them, or those ahead of the batch's tail. */
static int32_t gc__run_sub_batch(const gc_instance_t* inst, gc_frame_t* frame) {
  const gc_model_t* m = inst->model;
  return inst->split_tail ? m->run_ops(frame, 0, m->batch_tail_op) : m->run(frame);
}

/* Sub-batches [begin, end) of a job on worker `thread`: its own slots, dims (one thread) and arena. */
static int32_t gc__worker_task(gc_frame_t* frame, int64_t begin, int64_t end, int32_t thread) {
  gc_batch_job_t* job = (gc_batch_job_t*)(void*)frame;
  gc_instance_t* inst = job->inst;
  const gc_model_t* m = inst->model;
  void** slots = inst->worker_slots + (size_t)thread * m->num_slots;
  int64_t* dims = inst->worker_dims + (size_t)thread * (m->num_free_dims + 1);
  char* scratch = inst->thread_scratch ? inst->thread_scratch + (size_t)thread * (size_t)inst->thread_scratch_stride
                                       : NULL;
  gc_frame_t f = {slots, dims, NULL, scratch, inst->thread_scratch_stride, 0, NULL, inst->random, inst->profile,
                  &inst->collective, thread};
  for (int64_t b = begin; b < end; b++) {
    if (atomic_load_explicit(&job->failed, memory_order_relaxed)) return 0;
    int64_t s = gc__sub_batch_start(job->total, job->count, inst->split_workers, b);
    dims[m->batch_dim] = gc__sub_batch_start(job->total, job->count, inst->split_workers, b + 1) - s;
    gc__address_sub_batch(job, slots, s);
    int32_t r = gc__run_sub_batch(inst, &f);
    if (r != 0) {
      int32_t none = 0;
      if (atomic_compare_exchange_strong(&job->failed, &none, r)) job->error_value = f.error_value;
      return r;
    }
  }
  return 0;
}

/* The sub-batches at once, one per thread: each worker's slots are the instance's with the scratch in its
   own arena, its dims the plan's with one thread. */
static int32_t gc__run_workers(gc_batch_job_t* job) {
  gc_instance_t* inst = job->inst;
  const gc_model_t* m = inst->model;
  for (int32_t t = 0; t < inst->split_workers; t++) {
    void** slots = inst->worker_slots + (size_t)t * m->num_slots;
    memcpy(slots, inst->slots, sizeof(void*) * m->num_slots);
    for (uint32_t i = 0; i < m->num_scratch; i++)
      slots[m->scratch[i].slot] = inst->arena + (size_t)t * inst->worker_stride + inst->scratch_offset[i];
    int64_t* dims = inst->worker_dims + (size_t)t * (m->num_free_dims + 1);
    memcpy(dims, inst->dims, sizeof(int64_t) * m->num_free_dims);
    dims[m->num_free_dims] = 1;
  }
  int32_t r = gc__parallel_for(inst->pool, gc__worker_task, &job->frame, job->count, 0);
  int32_t failed = atomic_load(&job->failed);
  if (failed) job->frame.error_value = job->error_value;
  return failed ? failed : r;
}

/* The model over the batch in the sub-batches gc__plan_batches chose (the outputs' slots point at the whole
   batch's buffers): each input and output addressed at the sub-batch's first sample, the batch dim set to
   its rows. Returns as model->run does. */
static int32_t gc__run_batches(gc_instance_t* inst, const gc_tensor_t* inputs, gc_frame_t* frame) {
  const gc_model_t* m = inst->model;
  int32_t d = m->batch_dim;
  gc_batch_job_t job = {*frame, inst, inputs, inst->split_count, inst->split_dims[d], 0, 0};
  for (uint32_t i = 0; i < m->num_outputs; i++) {
    const int64_t* odims;
    inst->split_out[i] = inst->slots[m->outputs[i].slot];
    inst->split_sample_bytes[i] = (size_t)(gc__output_bytes(inst, i, &odims) / (uint64_t)job.total);
  }
  int32_t failed = 0;
  if (inst->split_workers > 1) {
    failed = gc__run_workers(&job);
    frame->error_value = job.frame.error_value;
  } else {
    int64_t* dims = inst->call_dims; /* free after binding: the frame's dims for each sub-batch */
    memcpy(dims, inst->dims, sizeof(int64_t) * (m->num_free_dims + 1));
    frame->dims = dims;
    for (int64_t b = 0; b < job.count && failed == 0; b++) {
      int64_t s = gc__sub_batch_start(job.total, job.count, 1, b);
      dims[d] = gc__sub_batch_start(job.total, job.count, 1, b + 1) - s;
      gc__address_sub_batch(&job, inst->slots, s);
      failed = gc__run_sub_batch(inst, frame);
    }
    frame->dims = inst->dims;
  }
  for (uint32_t i = 0; i < m->num_inputs; i++) inst->slots[m->inputs[i].slot] = inputs[i].data;
  for (uint32_t i = 0; i < m->num_outputs; i++) inst->slots[m->outputs[i].slot] = inst->split_out[i];
  if (inst->split_tail) { /* then the tail, once over the whole batch with the pool on each op */
    for (uint32_t i = 0; i < m->num_scratch; i++)
      if (inst->tail_sample_bytes[i]) inst->slots[m->scratch[i].slot] = inst->arena + inst->scratch_offset[i];
    if (failed == 0) {
      int64_t* dims = inst->call_dims;
      memcpy(dims, inst->split_dims, sizeof(int64_t) * m->num_free_dims);
      dims[m->num_free_dims] = gc__pool_num_threads(inst->pool);
      frame->dims = dims;
      failed = m->run_ops(frame, m->batch_tail_op, INT32_MAX);
      frame->dims = inst->dims;
    }
  }
  return failed;
}

static gc_status_t gc__run(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs, gc_tensor_t* outputs,
                           size_t num_outputs) {
  const gc_model_t* m = inst->model;
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded (see gc_instance_load_weights)",
                    m->name);
  if (num_outputs != 0 && num_outputs != m->num_outputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "model '%s' has %u output(s), got num_outputs = %zu (or pass 0)", m->name,
                    m->num_outputs, num_outputs);
  if (num_outputs > 0 && outputs == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "outputs is NULL");
  if (inst->stale_packed) {
    gc__prepare(inst, -1);
    inst->stale_packed = 0;
  }
  inst->has_run = 0;
  inst->plan_ran = 0;
  GC_RETURN_IF_ERROR(gc__bind_inputs(inst, inputs, num_inputs));
  int64_t rows = 0;
  GC_RETURN_IF_ERROR(gc__plan_batches(inst, &rows));
  for (uint32_t i = 0; i < m->num_outputs; i++) {
    const int64_t* dims;
    uint64_t bytes = gc__output_bytes(inst, i, &dims);
    void* data = num_outputs > 0 ? outputs[i].data : NULL;
    if (data != NULL) {
      if (outputs[i].size_bytes < bytes) {
        char shape[256];
        gc__format_shape(shape, sizeof shape, m->outputs[i].rank, dims);
        return GC_ERROR(GC_INVALID_ARGUMENT, "output '%s' of shape %s %s needs %llu bytes; its buffer has %zu",
                        m->outputs[i].name, shape, gc_dtype_name((gc_dtype_t)m->outputs[i].dtype),
                        (unsigned long long)bytes, outputs[i].size_bytes);
      }
    } else {
      if (inst->owned_out_cap[i] < bytes || inst->owned_out[i] == NULL) {
        gc__free(&inst->alloc, inst->owned_out[i]);
        inst->owned_out_cap[i] = 0;
        inst->owned_out[i] = gc__alloc(&inst->alloc, (size_t)bytes, 64);
        if (inst->owned_out[i] == NULL)
          return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes for output '%s'", (unsigned long long)bytes,
                          m->outputs[i].name);
        inst->owned_out_cap[i] = (size_t)bytes;
      }
      data = inst->owned_out[i];
    }
    inst->slots[m->outputs[i].slot] = data;
  }
  gc_frame_t frame = {inst->slots, inst->dims,  inst->pool,   inst->thread_scratch, inst->thread_scratch_stride,
                      0,           NULL,        inst->random, inst->profile,        &inst->collective,
                      0};
  int64_t t0 = inst->profile ? gc__profile_now() : 0;
  int32_t failed = rows ? gc__run_batches(inst, inputs, &frame) : m->run(&frame);
  if (inst->profile && failed == 0) gc__profile_record_run(inst->profile, t0, gc__profile_now());
  if (failed != 0) {
    char detail[512];
    snprintf(detail, sizeof detail, m->op_errors[failed - 1], (long long)frame.error_value);
    return GC_ERROR(GC_OUT_OF_RANGE, "%s", detail);
  }
  for (uint32_t i = 0; i < num_outputs; i++) {
    void* data = inst->slots[m->outputs[i].slot];
    size_t cap = outputs[i].data != NULL ? outputs[i].size_bytes : inst->owned_out_cap[i];
    gc__describe_output(inst, i, data, cap, &outputs[i]);
  }
  inst->has_run = 1;
  inst->plan_ran = 1;
  return NULL;
}

gc_status_t gc_instance_run(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs, gc_tensor_t* outputs,
                            size_t num_outputs) {
  GC__ENTERED(inst, gc__run(inst, inputs, num_inputs, outputs, num_outputs));
}

static gc_status_t gc__output(gc_instance_t* inst, size_t index, gc_tensor_t* out) {
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out is NULL");
  if (index >= inst->model->num_outputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "output index %zu is out of range: model '%s' has %u outputs", index,
                    inst->model->name, inst->model->num_outputs);
  if (!inst->has_run)
    return GC_ERROR(GC_FAILED_PRECONDITION, "no successful gc_instance_run yet: output '%s' has no value",
                    inst->model->outputs[index].name);
  void* data = inst->slots[inst->model->outputs[index].slot];
  if (data != inst->owned_out[index])
    return GC_ERROR(GC_FAILED_PRECONDITION, "output '%s' was written to the caller's buffer in the last run",
                    inst->model->outputs[index].name);
  gc__describe_output(inst, (uint32_t)index, data, inst->owned_out_cap[index], out);
  return NULL;
}

gc_status_t gc_instance_output(gc_instance_t* inst, size_t index, gc_tensor_t* out) {
  GC__ENTERED(inst, gc__output(inst, index, out));
}

/* ------------------------------------------------------------------ weights */

static gc_status_t gc__own_weights(gc_instance_t* inst) {
  if (inst->weights_owned != NULL) return NULL;
  const gc_model_t* m = inst->model;
  inst->weights_owned = (unsigned char*)gc__alloc(&inst->alloc, (size_t)m->weights_nbytes, 64);
  if (inst->weights_owned == NULL)
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes for a copy of the weights",
                    (unsigned long long)m->weights_nbytes);
  if (inst->weights != NULL)
    memcpy(inst->weights_owned, inst->weights, (size_t)m->weights_nbytes);
  else
    memset(inst->weights_owned, 0, (size_t)m->weights_nbytes);
  inst->weights = inst->weights_owned;
  gc__set_weight_slots(inst);
  return NULL;
}

static gc_status_t gc__weight_by_name(const gc_instance_t* inst, const char* name, uint32_t* out) {
  const gc_model_t* m = inst->model;
  if (name == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "weight name is NULL");
  for (uint32_t i = 0; i < m->num_weights; i++) {
    if (strcmp(m->weights[i].name, name) == 0) {
      *out = i;
      return NULL;
    }
  }
  return GC_ERROR(GC_NOT_FOUND, "model '%s' has no weight named '%s'", m->name, name);
}

static gc_status_t gc__check_weight_tensor(const gc_weight_def_t* w, const gc_tensor_t* t, int is_output) {
  char want[256], got[256];
  if (t->dtype != (gc_dtype_t)w->dtype && !is_output)
    return GC_ERROR(GC_INVALID_ARGUMENT, "weight '%s' is %s, got %s", w->name, gc_dtype_name((gc_dtype_t)w->dtype),
                    gc_dtype_name(t->dtype));
  if (!is_output) {
    int same = t->rank == w->rank;
    for (int32_t a = 0; same && a < w->rank; a++) same = t->shape[a] == w->dims[a];
    if (!same) {
      gc__format_shape(want, sizeof want, w->rank, w->dims);
      if (t->rank >= 0 && t->rank <= GC_MAX_RANK)
        gc__format_shape(got, sizeof got, t->rank, t->shape);
      else
        snprintf(got, sizeof got, "(invalid rank %d)", (int)t->rank);
      return GC_ERROR(GC_INVALID_ARGUMENT, "weight '%s' has shape %s, got %s", w->name, want, got);
    }
  }
  if (t->data == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "data for weight '%s' is NULL", w->name);
  if (t->size_bytes != w->nbytes && !(is_output && t->size_bytes > w->nbytes))
    return GC_ERROR(GC_INVALID_ARGUMENT, "weight '%s' has %llu bytes, size_bytes is %zu", w->name,
                    (unsigned long long)w->nbytes, t->size_bytes);
  return NULL;
}

static gc_status_t gc__set_weight(gc_instance_t* inst, const char* name, const gc_tensor_t* value) {
  if (value == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "value is NULL");
  uint32_t i;
  GC_RETURN_IF_ERROR(gc__weight_by_name(inst, name, &i));
  const gc_weight_def_t* w = &inst->model->weights[i];
  GC_RETURN_IF_ERROR(gc__check_weight_tensor(w, value, 0));
  GC_RETURN_IF_ERROR(gc__own_weights(inst));
  memcpy(inst->weights_owned + w->offset, value->data, (size_t)w->nbytes);
  gc__prepare(inst, (int32_t)i);
  inst->has_run = 0;
  return NULL;
}

gc_status_t gc_instance_set_weight(gc_instance_t* inst, const char* name, const gc_tensor_t* value) {
  GC__ENTERED(inst, gc__set_weight(inst, name, value));
}

static gc_status_t gc__get_weight(gc_instance_t* inst, const char* name, gc_tensor_t* out) {
  if (out == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out is NULL");
  uint32_t i;
  GC_RETURN_IF_ERROR(gc__weight_by_name(inst, name, &i));
  const gc_weight_def_t* w = &inst->model->weights[i];
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded", inst->model->name);
  GC_RETURN_IF_ERROR(gc__check_weight_tensor(w, out, 1));
  memcpy(out->data, inst->weights + w->offset, (size_t)w->nbytes);
  out->dtype = (gc_dtype_t)w->dtype;
  out->rank = w->rank;
  for (int32_t a = 0; a < GC_MAX_RANK; a++) out->shape[a] = a < w->rank ? w->dims[a] : 0;
  return NULL;
}

gc_status_t gc_instance_get_weight(gc_instance_t* inst, const char* name, gc_tensor_t* out) {
  GC__ENTERED(inst, gc__get_weight(inst, name, out));
}

/* Weights files are read and written by weights_io.c (the format is described there). */
static gc_status_t gc__load_weights(gc_instance_t* inst, const char* path) {
  unsigned char* blob;
  GC_RETURN_IF_ERROR(gc__read_weights(inst->model, &inst->alloc, path, &blob));
  gc__free(&inst->alloc, inst->weights_owned);
  inst->weights_owned = blob;
  inst->weights = blob;
  gc__set_weight_slots(inst);
  gc__prepare(inst, -1);
  inst->has_run = 0;
  return NULL;
}

gc_status_t gc_instance_load_weights(gc_instance_t* inst, const char* path) {
  GC__ENTERED(inst, gc__load_weights(inst, path));
}

static gc_status_t gc__save_weights(gc_instance_t* inst, const char* path) {
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded", inst->model->name);
  return gc__write_weights(inst->model, &inst->alloc, inst->weights, path);
}

gc_status_t gc_instance_save_weights(gc_instance_t* inst, const char* path) {
  GC__ENTERED(inst, gc__save_weights(inst, path));
}

/* ------------------------------------------------------------------ training */

int gc_model_has_train_step(const gc_model_t* m) { return m && m->abi == GC_MODEL_ABI && m->has_train_step; }
int gc_model_has_eval_step(const gc_model_t* m) { return gc_model_has_train_step(m) && m->eval_step != NULL; }
size_t gc_model_num_step_inputs(const gc_model_t* m) { return gc_model_has_train_step(m) ? m->num_step_inputs : 0; }
size_t gc_model_num_step_targets(const gc_model_t* m) { return gc_model_has_train_step(m) ? m->num_targets : 0; }
size_t gc_model_num_step_outputs(const gc_model_t* m) { return gc_model_has_train_step(m) ? m->num_reported : 0; }

static gc_status_t gc__check_train_step(const gc_instance_t* inst) {
  if (!inst->model->has_train_step)
    return GC_ERROR(GC_UNIMPLEMENTED,
                    "model '%s' was compiled for inference only: it has no training step (graphc compile --training)",
                    inst->model->name);
  return NULL;
}

/* Writes every state update of `src` (an instance-owned output of the step it just ran) over its weight in
   `dst`'s own weights: `src` is `dst` itself, or one of its split-step instances (same weights layout). */
static gc_status_t gc__write_updates(gc_instance_t* dst, const gc_instance_t* src) {
  const gc_model_t* m = src->model;
  for (uint32_t k = 0; k < m->num_updates; k++) {
    const gc_weight_def_t* w = &m->weights[m->updates[k].weight];
    uint32_t out = (uint32_t)m->updates[k].output;
    const int64_t* dims;
    uint64_t bytes = gc__output_bytes(src, out, &dims);
    if (bytes != w->nbytes)
      return GC_ERROR(GC_INTERNAL, "state update '%s' has %llu bytes, its weight %llu", m->outputs[out].name,
                      (unsigned long long)bytes, (unsigned long long)w->nbytes);
    unsigned char* target = dst->weights_owned + w->offset;
    if (src->slots[m->outputs[out].slot] != target) /* not written in place by the step */
      memcpy(target, src->slots[m->outputs[out].slot], (size_t)w->nbytes);
  }
  return NULL;
}

/* Runs step model instance `ri` (the instance itself or one of its sub-instances) on its step_in, the state
   updates the generated code writes in place pointed at `dst`'s own weights, every other output in instance
   memory. */
static gc_status_t gc__run_step(gc_instance_t* ri, gc_instance_t* dst) {
  const gc_model_t* m = ri->model;
  memset(ri->step_out, 0, gc__array_bytes(m->num_outputs, sizeof(gc_tensor_t)));
  for (uint32_t k = 0; k < m->num_updates; k++) {
    const gc_update_def_t* u = &m->updates[k];
    if (!u->in_place) continue;
    const gc_weight_def_t* w = &m->weights[u->weight];
    ri->step_out[u->output].data = dst->weights_owned + w->offset;
    ri->step_out[u->output].size_bytes = (size_t)w->nbytes;
  }
  return gc__run(ri, ri->step_in, m->num_inputs, ri->step_out, m->num_outputs);
}

static gc_status_t gc__apply_updates(gc_instance_t* inst) {
  GC_RETURN_IF_ERROR(gc__write_updates(inst, inst));
  gc__prepare(inst, -1);
  inst->stale_packed = 0;
  return NULL;
}

/* The counts and pointers of a step's arguments, against step model m (`kind`: "training", "evaluation"). */
static gc_status_t gc__check_step_args(const gc_model_t* m, const char* kind, const gc_tensor_t* inputs,
                                       size_t num_inputs, const gc_tensor_t* targets, size_t num_targets,
                                       const gc_tensor_t* outputs, size_t num_outputs) {
  if (num_inputs != m->num_step_inputs)
    return GC_ERROR(GC_INVALID_ARGUMENT, "the %s step of model '%s' takes %u input(s), got num_inputs = %zu", kind,
                    m->name, m->num_step_inputs, num_inputs);
  if (inputs == NULL && num_inputs > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "inputs is NULL");
  if (num_targets != m->num_targets)
    return GC_ERROR(GC_INVALID_ARGUMENT, "the %s step of model '%s' takes %u target(s), got num_targets = %zu", kind,
                    m->name, m->num_targets, num_targets);
  if (targets == NULL && num_targets > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "targets is NULL");
  if (num_outputs != 0 && num_outputs != m->num_reported)
    return GC_ERROR(GC_INVALID_ARGUMENT,
                    "the %s step of model '%s' reports %u output(s), got num_outputs = %zu (or pass 0)", kind, m->name,
                    m->num_reported, num_outputs);
  if (outputs == NULL && num_outputs > 0) return GC_ERROR(GC_INVALID_ARGUMENT, "outputs is NULL");
  return NULL;
}

/* The reported outputs of the step just run (all in instance memory) into the caller's outputs. */
static gc_status_t gc__report_outputs(gc_instance_t* inst, gc_tensor_t* outputs, size_t num_outputs) {
  const gc_model_t* m = inst->model;
  char shape[256];
  for (size_t i = 0; i < num_outputs; i++) {
    const int64_t* dims;
    uint64_t bytes = gc__output_bytes(inst, (uint32_t)i, &dims);
    void* owned = inst->slots[m->outputs[i].slot];
    if (outputs[i].data != NULL) {
      if (outputs[i].size_bytes < bytes) {
        gc__format_shape(shape, sizeof shape, m->outputs[i].rank, dims);
        return GC_ERROR(GC_INVALID_ARGUMENT, "output '%s' of shape %s %s needs %llu bytes; its buffer has %zu",
                        m->outputs[i].name, shape, gc_dtype_name((gc_dtype_t)m->outputs[i].dtype),
                        (unsigned long long)bytes, outputs[i].size_bytes);
      }
      memcpy(outputs[i].data, owned, (size_t)bytes);
      gc__describe_output(inst, (uint32_t)i, outputs[i].data, outputs[i].size_bytes, &outputs[i]);
    } else {
      gc__describe_output(inst, (uint32_t)i, owned, inst->owned_out_cap[i], &outputs[i]);
    }
  }
  return NULL;
}

static gc_status_t gc__train_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                  const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                  size_t num_outputs) {
  const gc_model_t* m = inst->model;
  GC_RETURN_IF_ERROR(gc__check_train_step(inst));
  GC_RETURN_IF_ERROR(
      gc__check_step_args(m, "training", inputs, num_inputs, targets, num_targets, outputs, num_outputs));
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded (see gc_instance_load_weights)",
                    m->name);
  GC_RETURN_IF_ERROR(gc__own_weights(inst));
  for (size_t i = 0; i < num_inputs; i++) inst->step_in[m->step_inputs[i]] = inputs[i];
  for (size_t j = 0; j < num_targets; j++) inst->step_in[m->targets[j]] = targets[j];
  /* the state updates in place or in instance memory, every other output in instance memory */
  GC_RETURN_IF_ERROR(gc__run_step(inst, inst));
  GC_RETURN_IF_ERROR(gc__apply_updates(inst));
  return gc__report_outputs(inst, outputs, num_outputs);
}

gc_status_t gc_instance_train_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                   const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                   size_t num_outputs) {
  GC__ENTERED(inst, gc__train_step(inst, inputs, num_inputs, targets, num_targets, outputs, num_outputs));
}

/* The evaluation step runs in an instance of the library's evaluation model (m->eval_step), created
   on first use, whose weights are this instance's own: the two models share one weights layout, so
   the evaluation instance's weight slots point into this instance's weights (repacked before each
   step, since a training step, set_weight or load_weights may have changed or moved them). */
static gc_status_t gc__sub_instance(gc_instance_t* inst, const gc_model_t* e, const char* kind, gc_instance_t** slot) {
  const gc_model_t* m = inst->model;
  if (e->weights_layout_digest != m->weights_layout_digest || e->weights_nbytes != m->weights_nbytes)
    return GC_ERROR(GC_INTERNAL, "the %s step of model '%s' has another weights layout", kind, m->name);
  if (*slot == NULL) {
    gc_options_t o;
    gc_options_init(&o);
    o.num_threads = gc__pool_num_threads(inst->pool);
    o.allocator = inst->alloc;
    o.seed = inst->random[0];
    GC_RETURN_IF_ERROR(gc__create(e, &o, inst->weights, slot));
  } else {
    (*slot)->weights = inst->weights;
    gc__set_weight_slots(*slot);
    gc__prepare(*slot, -1);
  }
  (*slot)->collective = inst->collective;
  return NULL;
}

static gc_status_t gc__eval_instance(gc_instance_t* inst, gc_instance_t** out) {
  GC_RETURN_IF_ERROR(gc__sub_instance(inst, inst->model->eval_step, "evaluation", &inst->eval));
  *out = inst->eval;
  return NULL;
}

static gc_status_t gc__eval_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                 const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                 size_t num_outputs) {
  const gc_model_t* m = inst->model;
  if (!m->has_train_step)
    return GC_ERROR(GC_UNIMPLEMENTED,
                    "model '%s' was compiled for inference only: it has no evaluation step (graphc compile --training)",
                    m->name);
  if (m->eval_step == NULL)
    return GC_ERROR(GC_UNIMPLEMENTED, "the training library of model '%s' was built without an evaluation step",
                    m->name);
  const gc_model_t* e = m->eval_step;
  GC_RETURN_IF_ERROR(
      gc__check_step_args(e, "evaluation", inputs, num_inputs, targets, num_targets, outputs, num_outputs));
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded (see gc_instance_load_weights)",
                    m->name);
  gc_instance_t* ev = NULL;
  GC_RETURN_IF_ERROR(gc__eval_instance(inst, &ev));
  for (size_t i = 0; i < num_inputs; i++) ev->step_in[e->step_inputs[i]] = inputs[i];
  for (size_t j = 0; j < num_targets; j++) ev->step_in[e->targets[j]] = targets[j];
  GC_RETURN_IF_ERROR(gc__run(ev, ev->step_in, e->num_inputs, NULL, 0));
  return gc__report_outputs(ev, outputs, num_outputs);
}

gc_status_t gc_instance_eval_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                  const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                  size_t num_outputs) {
  GC__ENTERED(inst, gc__eval_step(inst, inputs, num_inputs, targets, num_targets, outputs, num_outputs));
}

static gc_status_t gc__hyper(gc_instance_t* inst, const char* name, float** out) {
  GC_RETURN_IF_ERROR(gc__check_train_step(inst));
  if (name == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "hyperparameter name is NULL");
  for (uint32_t k = 0; k < inst->model->num_hypers; k++) {
    if (strcmp(inst->model->hypers[k].name, name) == 0) {
      *out = &inst->hypers[k];
      return NULL;
    }
  }
  return GC_ERROR(GC_NOT_FOUND, "the training step of model '%s' has no hyperparameter named '%s'",
                  inst->model->name, name);
}

static gc_status_t gc__set_hyper(gc_instance_t* inst, const char* name, double value) {
  float* slot;
  GC_RETURN_IF_ERROR(gc__hyper(inst, name, &slot));
  if (value != value) return GC_ERROR(GC_INVALID_ARGUMENT, "hyperparameter '%s' set to NaN", name);
  *slot = (float)value;
  return NULL;
}

gc_status_t gc_instance_set_hyperparameter(gc_instance_t* inst, const char* name, double value) {
  GC__ENTERED(inst, gc__set_hyper(inst, name, value));
}

static gc_status_t gc__get_hyper(gc_instance_t* inst, const char* name, double* out_value) {
  if (out_value == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_value is NULL");
  float* slot;
  GC_RETURN_IF_ERROR(gc__hyper(inst, name, &slot));
  *out_value = (double)*slot;
  return NULL;
}

gc_status_t gc_instance_get_hyperparameter(gc_instance_t* inst, const char* name, double* out_value) {
  GC__ENTERED(inst, gc__get_hyper(inst, name, out_value));
}

/* ------------------------------------------------------------------ the split step

   The gradient model and the apply model run in instances of their own (created on first use) whose
   weight slots point into this instance's weights, like the evaluation step's. The gradient instance
   draws its random numbers from this instance's random state, as the fused step would. Gradients go
   into this instance's gradient buffer (inst->grads), where a collective may reduce them in place
   before the apply step reads them back. */

int gc_model_has_gradient_step(const gc_model_t* m) {
  return gc_model_has_train_step(m) && m->gradient_step != NULL && m->apply_step != NULL;
}

size_t gc_model_num_gradients(const gc_model_t* m) { return gc_model_has_gradient_step(m) ? m->num_gradients : 0; }

gc_status_t gc_model_gradient(const gc_model_t* m, size_t index, gc_tensor_desc_t* out_desc, size_t* out_offset) {
  GC_RETURN_IF_ERROR(gc__check_model(m));
  if (out_desc == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_desc is NULL");
  if (out_offset == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_offset is NULL");
  if (!gc_model_has_gradient_step(m))
    return GC_ERROR(GC_UNIMPLEMENTED, "model '%s' was built without a split step: it has no gradient buffer", m->name);
  if (index >= m->num_gradients)
    return GC_ERROR(GC_INVALID_ARGUMENT, "gradient index %zu is out of range: model '%s' has %u gradients", index,
                    m->name, m->num_gradients);
  const gc_weight_def_t* w = &m->weights[m->gradients[index].weight];
  gc__fill_desc(w->name, w->dtype, w->rank, w->dims, NULL, out_desc);
  *out_offset = (size_t)m->gradients[index].offset;
  return NULL;
}

static gc_status_t gc__check_split_step(gc_instance_t* inst) {
  GC_RETURN_IF_ERROR(gc__check_train_step(inst));
  if (!gc_model_has_gradient_step(inst->model))
    return GC_ERROR(GC_UNIMPLEMENTED,
                    "the training library of model '%s' was built without a split step (gradient and apply steps)",
                    inst->model->name);
  if (inst->weights == NULL)
    return GC_ERROR(GC_FAILED_PRECONDITION, "model '%s' has no weights loaded (see gc_instance_load_weights)",
                    inst->model->name);
  return gc__own_weights(inst);
}

static gc_status_t gc__gradient_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                     const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                     size_t num_outputs) {
  const gc_model_t* m = inst->model;
  GC_RETURN_IF_ERROR(gc__check_split_step(inst));
  const gc_model_t* g = m->gradient_step;
  GC_RETURN_IF_ERROR(gc__check_step_args(g, "gradient", inputs, num_inputs, targets, num_targets, outputs,
                                         num_outputs));
  if (inst->grad == NULL) {
    GC_RETURN_IF_ERROR(gc__sub_instance(inst, g, "gradient", &inst->grad));
    gc__free(&inst->alloc, inst->grad->random);
    inst->grad->random = inst->random; /* the gradient graph's ops are the training graph's first ones */
  } else {
    GC_RETURN_IF_ERROR(gc__sub_instance(inst, g, "gradient", &inst->grad));
  }
  gc_instance_t* gi = inst->grad;
  for (size_t i = 0; i < num_inputs; i++) gi->step_in[g->step_inputs[i]] = inputs[i];
  for (size_t j = 0; j < num_targets; j++) gi->step_in[g->targets[j]] = targets[j];
  GC_RETURN_IF_ERROR(gc__run_step(gi, inst));
  for (uint32_t k = 0; k < m->num_gradients; k++) {
    const gc_gradient_def_t* d = &m->gradients[k];
    const int64_t* dims;
    uint64_t bytes = gc__output_bytes(gi, (uint32_t)d->output, &dims);
    if (bytes != d->nbytes || d->offset + d->nbytes > m->gradients_nbytes)
      return GC_ERROR(GC_INTERNAL, "gradient '%s' has %llu bytes, its place in the gradient buffer %llu",
                      g->outputs[d->output].name, (unsigned long long)bytes, (unsigned long long)d->nbytes);
    memcpy(inst->grads + d->offset, gi->slots[g->outputs[d->output].slot], (size_t)d->nbytes);
  }
  GC_RETURN_IF_ERROR(gc__write_updates(inst, gi)); /* moving statistics and other layer state */
  if (g->num_updates > 0) inst->stale_packed = 1;
  return gc__report_outputs(gi, outputs, num_outputs);
}

gc_status_t gc_instance_gradient_step(gc_instance_t* inst, const gc_tensor_t* inputs, size_t num_inputs,
                                      const gc_tensor_t* targets, size_t num_targets, gc_tensor_t* outputs,
                                      size_t num_outputs) {
  GC__ENTERED(inst, gc__gradient_step(inst, inputs, num_inputs, targets, num_targets, outputs, num_outputs));
}

static gc_status_t gc__apply_gradients(gc_instance_t* inst) {
  const gc_model_t* m = inst->model;
  GC_RETURN_IF_ERROR(gc__check_split_step(inst));
  const gc_model_t* a = m->apply_step;
  if (a->num_step_inputs != m->num_gradients)
    return GC_ERROR(GC_INTERNAL, "the apply step of model '%s' takes %u inputs for %u gradients", m->name,
                    a->num_step_inputs, m->num_gradients);
  GC_RETURN_IF_ERROR(gc__sub_instance(inst, a, "apply", &inst->apply));
  gc_instance_t* ai = inst->apply;
  for (uint32_t k = 0; k < m->num_gradients; k++) {
    const gc_gradient_def_t* d = &m->gradients[k];
    const gc_weight_def_t* w = &m->weights[d->weight];
    gc_tensor_t* t = &ai->step_in[a->step_inputs[k]];
    memset(t, 0, sizeof(*t));
    t->dtype = (gc_dtype_t)w->dtype;
    t->rank = w->rank;
    for (int32_t r = 0; r < w->rank; r++) t->shape[r] = w->dims[r];
    t->data = inst->grads + d->offset;
    t->size_bytes = (size_t)d->nbytes;
  }
  for (uint32_t k = 0; k < a->num_hypers; k++) {
    for (uint32_t h = 0; h < m->num_hypers; h++)
      if (strcmp(a->hypers[k].name, m->hypers[h].name) == 0) ai->hypers[k] = inst->hypers[h];
  }
  GC_RETURN_IF_ERROR(gc__run_step(ai, inst));
  GC_RETURN_IF_ERROR(gc__write_updates(inst, ai));
  inst->stale_packed = 1;
  inst->has_run = 0;
  return NULL;
}

gc_status_t gc_instance_apply_gradients(gc_instance_t* inst) {
  GC__ENTERED(inst, gc__apply_gradients(inst));
}

static gc_status_t gc__gradient_buffer(gc_instance_t* inst, void** out_data, size_t* out_size_bytes) {
  if (out_data == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_data is NULL");
  if (out_size_bytes == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "out_size_bytes is NULL");
  GC_RETURN_IF_ERROR(gc__check_train_step(inst));
  if (!gc_model_has_gradient_step(inst->model))
    return GC_ERROR(GC_UNIMPLEMENTED,
                    "the training library of model '%s' was built without a split step: it has no gradient buffer",
                    inst->model->name);
  *out_data = inst->grads;
  *out_size_bytes = (size_t)inst->model->gradients_nbytes;
  return NULL;
}

gc_status_t gc_instance_gradient_buffer(gc_instance_t* inst, void** out_data, size_t* out_size_bytes) {
  GC__ENTERED(inst, gc__gradient_buffer(inst, out_data, out_size_bytes));
}

/* ------------------------------------------------------------------ collectives

   Cross-replica sums call the instance's hook between kernels (gc__collective_sum, from generated
   code, on the calling thread); sub-instances take the hook over each time they are used. */

int32_t gc__collective_sum(gc_frame_t* frame, void* data, int64_t count, int32_t dtype, int32_t kind) {
  const gc_collective_t* c = frame->collective;
  if (c == NULL || c->fn == NULL) return 0; /* one replica: the sum is the value itself */
  return c->fn(c->user, data, count, (gc_dtype_t)dtype, kind);
}

gc_status_t gc_instance_set_collective(gc_instance_t* inst, gc_collective_fn fn, void* user) {
  GC_RETURN_IF_ERROR(gc__enter(inst));
  inst->collective.fn = fn;
  inst->collective.user = user;
  gc__leave(inst);
  return NULL;
}
