"""A property of the C ABI, driven from Python with hypothesis: on random small models, any call —
random counts, dtypes, ranks, shapes, free dims, ids, NaNs, thread counts, and raw tensor structs
with arbitrary fields — either returns what the reference interpreter computes or raises a clean
NativeError. Never a crash, never a silently different answer.

A call is *valid* when every input has the model's dtype and rank, its static dims, free dims that
agree across inputs and are at least 1, and ids inside their tables; the reference interpreter
then decides (it refuses ids out of range, sizes that make a derived dimension vanish). Valid calls
must succeed and match; every other call must be refused.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import compile_library
from graphc.backends.reference.interpreter import bind_inputs, run
from graphc.frontend import state
from graphc.runtime import DTYPE_CODES, MAX_RANK, GcTensor, Library, NativeError

TEMPLATES = {
    "dense": [(1, 1), (3, 4), (8, 1)],          # (features, units)
    "embed": [(1, 1, "int32"), (5, 3, "int64"), (7, 2, "int32")],  # (rows, width, id dtype)
    "conv": [(1, 2), (2, 1)],                    # (channels, kernel width 3 filters)
    "two": [(2,), (3,)],                         # (features)
}
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _model(template: str, params: tuple) -> Model:
    state.clear_session()
    if template == "dense":
        f, u = params
        x = Input((f,), name="x")
        return Model(x, layers.Dense(u, activation="relu")(x), name=f"p_dense_{f}_{u}")
    if template == "embed":
        rows, width, dtype = params
        ids = Input((None,), dtype=dtype, name="ids")
        h = layers.GlobalAveragePooling1D()(layers.Embedding(rows, width)(ids))
        return Model(ids, layers.Dense(2)(h), name=f"p_embed_{rows}_{width}_{dtype}")
    if template == "conv":
        c, filters = params
        x = Input((None, c), name="signal")
        h = layers.Conv1D(filters, 3, activation="tanh")(x)
        return Model(x, layers.GlobalMaxPooling1D()(h), name=f"p_conv_{c}_{filters}")
    (f,) = params
    a = Input((f,), name="a")
    b = Input((None, f), name="b")
    h = layers.Concatenate()([layers.Dense(3)(a), layers.GlobalAveragePooling1D()(b)])
    return Model([a, b], [layers.Dense(2, name="main")(h), layers.Dense(1, name="side")(a)], name=f"p_two_{f}")


@cache
def compiled(template: str, params: tuple):
    """(graph, library) of one random model, weights drawn from a fixed seed (built once)."""
    model = _model(template, params)
    rng = np.random.default_rng(hash((template, params)) % 2**32)
    model.set_weights([rng.standard_normal(np.shape(w)).astype(np.float32) for w in model.get_weights()])
    graph = graphc.lower(model)
    files = compile_library(graph)
    return graph, Library(files.shared, files.symbol)


@cache
def instance(template: str, params: tuple, threads: int):
    return compiled(template, params)[1].instance(threads=threads)


# ------------------------------------------------------------------ strategies

models = st.sampled_from([(t, p) for t, ps in TEMPLATES.items() for p in ps])
DTYPES = ["float32", "float64", "int32", "int64", "int8", "uint8", "bool", "float16"]


@st.composite
def calls(draw):
    """A model, an instance thread count, and the arrays of one call (often valid, often not)."""
    template, params = draw(models)
    graph, _ = compiled(template, params)
    free = {d: draw(st.integers(0, 6) if draw(st.integers(0, 9)) == 0 else st.integers(1, 6))
            for d in ("batch", *{str(s) for n in graph.inputs for s in graph.type_of(n).shape if isinstance(s, str)})}
    arrays = []
    for name in graph.inputs:
        t = graph.type_of(name)
        shape = [d if isinstance(d, int) else free[d] for d in t.shape]
        if draw(st.integers(0, 14)) == 0:  # a wrong rank
            shape = shape[:-1] if draw(st.booleans()) and shape else [*shape, 2]
        elif draw(st.integers(0, 14)) == 0:  # a wrong dim
            i = draw(st.integers(0, len(shape) - 1))
            shape[i] = draw(st.integers(0, 9))
        dtype = t.dtype if draw(st.integers(0, 9)) else draw(st.sampled_from(DTYPES))
        n = int(np.prod(shape))
        if np.dtype(dtype).kind in "iub" and dtype != "bool":
            hi = _table_rows(graph, name)
            values = draw(st.lists(st.integers(-2 if hi else 0, (hi + 1) if hi else 9), min_size=n, max_size=n))
        else:
            values = draw(st.lists(st.one_of(st.floats(-4, 4, width=32), st.sampled_from([np.nan, np.inf, 0.0])),
                                   min_size=n, max_size=n))
        arrays.append(np.asarray(values, dtype=np.float64).astype(dtype).reshape(shape))
    if draw(st.integers(0, 19)) == 0:
        arrays = arrays[:-1] if draw(st.booleans()) else [*arrays, arrays[0]]
    return template, params, draw(st.sampled_from([1, 2])), arrays


def _table_rows(graph, name: str) -> int | None:
    for op, _ in graph.consumers(name):
        if op.type == "gather":
            return graph.type_of(op.inputs[0]).shape[0]
    return None


def _reference(graph, arrays):
    """The reference's outputs for a valid call, or None for a call the ABI must refuse."""
    if len(arrays) != len(graph.inputs):
        return None
    for name, a in zip(graph.inputs, arrays):
        if a.dtype != np.dtype(graph.type_of(name).dtype) or a.ndim != graph.type_of(name).rank or 0 in a.shape:
            return None
    try:
        feeds, _ = bind_inputs(graph, dict(zip(graph.inputs, arrays)))
        out = run(graph, feeds)
    except Exception:
        return None
    outs = [out[v] for v in graph.outputs]
    return None if any(0 in o.shape for o in outs) else outs


# ------------------------------------------------------------------ the properties

@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_the_models_compile(template):
    for params in TEMPLATES[template]:
        graph, lib = compiled(template, params)
        assert [t.name for t in lib.inputs] == list(graph.inputs)


@SETTINGS
@given(calls())
def test_every_call_is_right_or_refused(call):
    template, params, threads, arrays = call
    graph, _ = compiled(template, params)
    want = _reference(graph, arrays)
    inst = instance(template, params, threads)
    try:
        got = inst.run(arrays)
    except NativeError as exc:
        event(f"refused: {exc.code_name}")
        assert exc.message and exc.code_name.startswith("GC_"), exc
        assert want is None, f"a valid call was refused: {exc}"
        return
    event("computed")
    assert want is not None, f"an invalid call was accepted: {[(a.dtype, a.shape) for a in arrays]}"
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(w), w, 0)), initial=0)))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)


@st.composite
def raw_calls(draw):
    """Tensor structs with arbitrary fields; data buffers always as large as size_bytes claims."""
    template, params = draw(models)
    n = len(compiled(template, params)[0].inputs) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    tensors = []
    for _ in range(max(n, 0)):
        rank = draw(st.sampled_from([0, 1, 2, 3, -1, MAX_RANK, MAX_RANK + 1, 2**31 - 1]))
        shape = draw(st.lists(st.sampled_from([1, 2, 3, 5, 8, 0, -1, 2**40, 2**62, -(2**63)]), min_size=MAX_RANK,
                              max_size=MAX_RANK))
        dtype = draw(st.sampled_from([*DTYPE_CODES.values(), 0, -1, 9, 1000]))
        size = draw(st.sampled_from(["exact", 0, 1, 7, 4096]))
        tensors.append((rank, shape, dtype, size, draw(st.booleans())))
    return template, params, tensors


@SETTINGS
@given(raw_calls())
def test_raw_tensor_structs_never_crash_the_runtime(call):
    """gc_instance_run on structs a careless caller could build: a clean status, or a result when
    the struct happens to be a valid input."""
    template, params, tensors = call
    graph, lib = compiled(template, params)
    inst = instance(template, params, 1)
    structs = (GcTensor * max(len(tensors), 1))()
    keep = []
    for t, (rank, shape, dtype, size, null_data) in zip(structs, tensors):
        t.rank, t.dtype = rank, dtype
        for i, d in enumerate(shape):
            t.shape[i] = d
        if size == "exact":
            itemsize = {v: np.dtype(k).itemsize for k, v in DTYPE_CODES.items()}.get(dtype, 1)
            count = int(np.prod([max(d, 0) for d in shape[:rank]])) if 0 <= rank <= MAX_RANK else 1
            size = count * itemsize if count * itemsize <= 1 << 16 else 3
        buf = (ctypes.c_char * max(size, 1))()
        keep.append(buf)
        t.data = None if null_data and size else ctypes.addressof(buf)
        t.size_bytes = size
    outs = (GcTensor * max(len(lib.outputs), 1))()
    status = lib.lib.gc_instance_run(inst._handle, structs, len(tensors), outs, 0)
    if status:
        code = lib.lib.gc_status_code(status)
        message = lib.lib.gc_status_message(status).decode()
        lib.lib.gc_status_release(status)
        event(f"refused: {code}")
        assert 1 <= code <= 8 and message
    else:
        event("computed")
