/* graphc's CPython call path into gc_instance_run and the training library's steps.
 *
 * A ctypes call that fills gc_tensor_t structs from Python costs several microseconds, more than a
 * small model's kernels. A Runner holds one instance's tensor structs and the input and output
 * shapes of the last input signature the Python side ran; a call whose inputs are NumPy arrays of
 * that signature (same dtypes, shapes, C-contiguous and aligned) is checked, handed to
 * gc_instance_run with the GIL released, and answered with fresh output arrays (or written into the
 * caller's). Everything else - a new signature, another dtype, a non-array, a failed run - returns to
 * the Python binding, which has the whole checking and error path; Runner.remember then teaches the
 * runner the new signature.
 *
 * A step runner (n_targets >= 0) calls one of the steps instead (gc_instance_train_step, eval_step,
 * gradient_step: inputs, targets, outputs): its inputs are the step's inputs followed by its targets.
 *
 * The runner does no locking: the runtime refuses a second thread on the same instance
 * (GC_FAILED_PRECONDITION), and that status is returned to Python like any other failure.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <string.h>

#include "graphc/graphc.h"

typedef gc_status_t (*run_fn_t)(gc_instance_t*, const gc_tensor_t*, size_t, gc_tensor_t*, size_t);
typedef gc_status_t (*step_fn_t)(gc_instance_t*, const gc_tensor_t*, size_t, const gc_tensor_t*, size_t,
                                 gc_tensor_t*, size_t);

typedef struct {
  PyObject_HEAD
  gc_instance_t* instance;
  void* fn;               /* gc_instance_run, or a step when n_targets >= 0 */
  Py_ssize_t n_in, n_out;
  Py_ssize_t n_targets;   /* -1: a run; else the last n_targets inputs are the step's targets */
  int busy;               /* a thread is inside run (set and read under the GIL) */
  int known;              /* the structs hold a signature the Python side ran successfully */
  gc_tensor_t* ins;
  gc_tensor_t* outs;
  int* in_types;          /* NumPy type numbers of the inputs and outputs */
  int* out_types;
  npy_intp* out_dims;     /* n_out x GC_MAX_RANK */
  PyObject* keepalive;    /* the ctypes library object: the code must outlive the runner */
} Runner;

static void runner_dealloc(Runner* self) {
  PyMem_Free(self->ins);
  PyMem_Free(self->outs);
  PyMem_Free(self->in_types);
  PyMem_Free(self->out_types);
  PyMem_Free(self->out_dims);
  Py_XDECREF(self->keepalive);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

/* Runner(instance_address, function_address, in_codes, in_types, out_types, keepalive, n_targets=-1):
   in_codes are the runtime's dtype codes of the inputs, in_types/out_types NumPy type numbers; the
   function is gc_instance_run (n_targets -1) or a step taking the last n_targets inputs as targets. */
static int runner_init(Runner* self, PyObject* args, PyObject* kwds) {
  unsigned long long instance, fn;
  PyObject *in_codes, *in_types, *out_types, *keepalive;
  Py_ssize_t n_targets = -1;
  (void)kwds;
  if (!PyArg_ParseTuple(args, "KKO!O!O!O|n", &instance, &fn, &PyTuple_Type, &in_codes, &PyTuple_Type, &in_types,
                        &PyTuple_Type, &out_types, &keepalive, &n_targets))
    return -1;
  if (!instance || !fn) {
    PyErr_SetString(PyExc_ValueError, "Runner needs an instance and a runtime function");
    return -1;
  }
  Py_ssize_t n_in = PyTuple_GET_SIZE(in_types), n_out = PyTuple_GET_SIZE(out_types);
  if (PyTuple_GET_SIZE(in_codes) != n_in) {
    PyErr_SetString(PyExc_ValueError, "in_codes and in_types differ in length");
    return -1;
  }
  if (n_targets > n_in) {
    PyErr_SetString(PyExc_ValueError, "n_targets exceeds the number of inputs");
    return -1;
  }
  self->instance = (gc_instance_t*)(uintptr_t)instance;
  self->fn = (void*)(uintptr_t)fn;
  self->n_targets = n_targets;
  self->n_in = n_in;
  self->n_out = n_out;
  self->known = 0;
  self->ins = PyMem_Calloc((size_t)(n_in ? n_in : 1), sizeof(gc_tensor_t));
  self->outs = PyMem_Calloc((size_t)(n_out ? n_out : 1), sizeof(gc_tensor_t));
  self->in_types = PyMem_Calloc((size_t)(n_in ? n_in : 1), sizeof(int));
  self->out_types = PyMem_Calloc((size_t)(n_out ? n_out : 1), sizeof(int));
  self->out_dims = PyMem_Calloc((size_t)(n_out ? n_out : 1) * GC_MAX_RANK, sizeof(npy_intp));
  if (!self->ins || !self->outs || !self->in_types || !self->out_types || !self->out_dims) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n_in; i++) {
    self->ins[i].dtype = (gc_dtype_t)PyLong_AsLong(PyTuple_GET_ITEM(in_codes, i));
    self->in_types[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(in_types, i));
  }
  for (Py_ssize_t j = 0; j < n_out; j++) self->out_types[j] = (int)PyLong_AsLong(PyTuple_GET_ITEM(out_types, j));
  if (PyErr_Occurred()) return -1;
  Py_INCREF(keepalive);
  Py_XSETREF(self->keepalive, keepalive);
  return 0;
}

/* Whether `a` is an input of the known signature at position i (and, if so, its data is set). */
static int matches(Runner* self, Py_ssize_t i, PyObject* obj) {
  if (!PyArray_Check(obj)) return 0;
  PyArrayObject* a = (PyArrayObject*)obj;
  gc_tensor_t* t = &self->ins[i];
  if (PyArray_TYPE(a) != self->in_types[i] || PyArray_NDIM(a) != t->rank ||
      !PyArray_ISCARRAY_RO(a) || PyArray_DESCR(a)->byteorder == '>')
    return 0;
  npy_intp* dims = PyArray_DIMS(a);
  for (int d = 0; d < t->rank; d++)
    if (dims[d] != t->shape[d]) return 0;
  t->data = PyArray_DATA(a);
  return 1;
}

/* Whether `obj` can receive output j: the known shape, its dtype, C-contiguous, aligned, writeable. */
static int output_fits(Runner* self, Py_ssize_t j, PyObject* obj) {
  if (!PyArray_Check(obj)) return 0;
  PyArrayObject* a = (PyArrayObject*)obj;
  if (PyArray_TYPE(a) != self->out_types[j] || PyArray_NDIM(a) != self->outs[j].rank || !PyArray_ISCARRAY(a) ||
      PyArray_DESCR(a)->byteorder == '>')
    return 0;
  for (int d = 0; d < PyArray_NDIM(a); d++)
    if (PyArray_DIMS(a)[d] != self->out_dims[j * GC_MAX_RANK + d]) return 0;
  return 1;
}

/* run(inputs, max_rows=0, out=None): inputs is one array (a one-input model) or a tuple/list.
   Returns the list of outputs; None when the call is not of the known signature, has more than
   max_rows samples (when max_rows > 0), `out` does not fit, or another thread is inside run (the
   Python binding then takes the call); an int, the gc_status_t address, when the run failed. */
static PyObject* runner_run(Runner* self, PyObject* args) {
  PyObject* inputs;
  Py_ssize_t max_rows = 0;
  PyObject* out = Py_None;
  if (!PyArg_ParseTuple(args, "O|nO", &inputs, &max_rows, &out)) return NULL;
  if (!self->known || self->busy) Py_RETURN_NONE;
  if (PyArray_Check(inputs)) {
    if (self->n_in != 1 || !matches(self, 0, inputs)) Py_RETURN_NONE;
  } else if (PyTuple_CheckExact(inputs) || PyList_CheckExact(inputs)) {
    if (PySequence_Fast_GET_SIZE(inputs) != self->n_in) Py_RETURN_NONE;
    PyObject** items = PySequence_Fast_ITEMS(inputs);
    for (Py_ssize_t i = 0; i < self->n_in; i++)
      if (!matches(self, i, items[i])) Py_RETURN_NONE;
  } else {
    Py_RETURN_NONE;
  }
  if (max_rows > 0)
    for (Py_ssize_t i = 0; i < self->n_in; i++)
      if (self->ins[i].rank > 0 && self->ins[i].shape[0] > max_rows) Py_RETURN_NONE;

  PyObject* result = PyList_New(self->n_out);
  if (!result) return NULL;
  PyObject** given = NULL;
  if (out != Py_None) {
    if (!(PyTuple_CheckExact(out) || PyList_CheckExact(out)) || PySequence_Fast_GET_SIZE(out) != self->n_out) {
      Py_DECREF(result);
      Py_RETURN_NONE;
    }
    given = PySequence_Fast_ITEMS(out);
  }
  for (Py_ssize_t j = 0; j < self->n_out; j++) {
    PyObject* arr;
    if (given) {
      if (!output_fits(self, j, given[j])) {
        Py_DECREF(result);
        Py_RETURN_NONE;
      }
      arr = given[j];
      Py_INCREF(arr);
    } else {
      arr = PyArray_SimpleNew(self->outs[j].rank, &self->out_dims[j * GC_MAX_RANK], self->out_types[j]);
      if (!arr) {
        Py_DECREF(result);
        return NULL;
      }
    }
    self->outs[j].data = PyArray_DATA((PyArrayObject*)arr);
    self->outs[j].size_bytes = (size_t)PyArray_NBYTES((PyArrayObject*)arr);
    PyList_SET_ITEM(result, j, arr);
  }
  gc_status_t status;
  self->busy = 1; /* the structs are this runner's until the call returns */
  Py_BEGIN_ALLOW_THREADS
  if (self->n_targets < 0) {
    status = ((run_fn_t)self->fn)(self->instance, self->ins, (size_t)self->n_in, self->outs, (size_t)self->n_out);
  } else {
    size_t n_x = (size_t)(self->n_in - self->n_targets);
    status = ((step_fn_t)self->fn)(self->instance, self->ins, n_x, self->ins + n_x, (size_t)self->n_targets,
                                   self->outs, (size_t)self->n_out);
  }
  Py_END_ALLOW_THREADS
  self->busy = 0;
  if (status) {
    Py_DECREF(result);
    return PyLong_FromVoidPtr((void*)status);
  }
  return result;
}

/* remember(inputs, out_shapes): the signature of inputs (arrays the runtime just ran) and the output
   shapes it produced become the known signature. */
static PyObject* runner_remember(Runner* self, PyObject* args) {
  PyObject *inputs, *shapes;
  if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &inputs, &PyTuple_Type, &shapes)) return NULL;
  if (PyTuple_GET_SIZE(inputs) != self->n_in || PyTuple_GET_SIZE(shapes) != self->n_out) {
    PyErr_SetString(PyExc_ValueError, "remember: wrong number of inputs or output shapes");
    return NULL;
  }
  if (self->busy) Py_RETURN_NONE; /* another thread's call is reading the structs */
  self->known = 0;
  for (Py_ssize_t i = 0; i < self->n_in; i++) {
    PyObject* obj = PyTuple_GET_ITEM(inputs, i);
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject*)obj) != self->in_types[i] ||
        PyArray_NDIM((PyArrayObject*)obj) > GC_MAX_RANK) {
      PyErr_Format(PyExc_ValueError, "remember: input %zd is not an array of the model's dtype", i);
      return NULL;
    }
    PyArrayObject* a = (PyArrayObject*)obj;
    self->ins[i].rank = PyArray_NDIM(a);
    for (int d = 0; d < PyArray_NDIM(a); d++) self->ins[i].shape[d] = PyArray_DIMS(a)[d];
    self->ins[i].size_bytes = (size_t)PyArray_NBYTES(a);
  }
  for (Py_ssize_t j = 0; j < self->n_out; j++) {
    PyObject* shape = PyTuple_GET_ITEM(shapes, j);
    if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) > GC_MAX_RANK) {
      PyErr_SetString(PyExc_ValueError, "remember: an output shape is not a tuple of at most 8 dims");
      return NULL;
    }
    self->outs[j].rank = (int32_t)PyTuple_GET_SIZE(shape);
    for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(shape); d++) {
      npy_intp v = (npy_intp)PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, d));
      if (v < 0 && PyErr_Occurred()) return NULL;
      self->out_dims[j * GC_MAX_RANK + d] = v;
    }
  }
  self->known = 1;
  Py_RETURN_NONE;
}

static PyMethodDef runner_methods[] = {
    {"run", (PyCFunction)runner_run, METH_VARARGS, "run(inputs, max_rows=0, out=None)"},
    {"remember", (PyCFunction)runner_remember, METH_VARARGS, "remember(inputs, out_shapes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_graphc_fastcall.Runner",
    .tp_basicsize = sizeof(Runner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One instance's call path into gc_instance_run (or a step) for a known input signature.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)runner_init,
    .tp_dealloc = (destructor)runner_dealloc,
    .tp_methods = runner_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_graphc_fastcall", NULL, -1, NULL, NULL, NULL, NULL,
                                    NULL};

PyMODINIT_FUNC PyInit__graphc_fastcall(void) {
  import_array();
  if (PyType_Ready(&RunnerType) < 0) return NULL;
  PyObject* m = PyModule_Create(&module);
  if (!m) return NULL;
  Py_INCREF(&RunnerType);
  if (PyModule_AddObject(m, "Runner", (PyObject*)&RunnerType) < 0) {
    Py_DECREF(&RunnerType);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
