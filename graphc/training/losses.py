"""Keras 3 losses, written as IR ops so that a training step stays one graph.

A :class:`Loss` emits, for graph values ``y_true`` and ``y_pred``, the per-sample values
(``values``) and their reduction (``emit``: Keras's "sum_over_batch_size", i.e. the mean of
every value). Formulas follow Keras 3 on its torch backend: probabilities are clipped to
``[1e-7, 1 - 1e-7]``; categorical crossentropy first renormalizes ``y_pred`` to sum to one;
``y_true`` and ``y_pred`` whose ranks differ by one are squeezed/expanded on the last axis.
Called on arrays (``loss(y_true, y_pred)``), a loss runs the same ops through the reference
interpreter. The user's loss functions and ``Loss`` subclasses defining ``call`` are written with
graphc ops and traced into the graph (:mod:`graphc.training.custom`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir.graph import Graph
from graphc.ir.types import TensorType, is_float, is_int, normalize_dtype
from graphc.ops.builder import OpBuilder
from graphc.training import custom

EPSILON = 1e-7  # keras.backend.epsilon()

__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "mean_squared_error",
           "mean_absolute_error", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "mse", "mae", "MSE", "MAE", "get", "serialize", "deserialize",
           "Huber", "LogCosh", "KLDivergence", "Poisson", "CosineSimilarity", "Hinge", "SquaredHinge",
           "CategoricalHinge", "MeanSquaredLogarithmicError", "MeanAbsolutePercentageError",
           "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy", "huber", "log_cosh", "kl_divergence", "poisson",
           "cosine_similarity", "hinge", "squared_hinge", "categorical_hinge", "mean_squared_logarithmic_error",
           "mean_absolute_percentage_error", "binary_focal_crossentropy", "categorical_focal_crossentropy",
           "bce", "BCE", "kld", "KLD", "mape", "MAPE", "msle", "MSLE"]


# ---------------------------------------------------------------------------- emitting helpers
def _scalar(b: OpBuilder, value: float, dtype: str) -> str:
    return b.constant(np.asarray(value, dtype=dtype), "loss_const")


def same_rank(b: OpBuilder, y_true: str, y_pred: str) -> tuple[str, str]:
    """Keras's squeeze_or_expand_to_same_rank: ranks differing by one meet on a size-1 last axis."""
    rt, rp = b.graph.type_of(y_true).rank, b.graph.type_of(y_pred).rank
    if rt == rp + 1 and b.graph.type_of(y_true).shape[-1] == 1:
        if rp == 1:
            y_pred = b.expand_dims(y_pred, axis=-1)
        else:
            y_true = b.squeeze(y_true, axis=-1)
    elif rp == rt + 1 and b.graph.type_of(y_pred).shape[-1] == 1:
        if rt == 1:
            y_true = b.expand_dims(y_true, axis=-1)
        else:
            y_pred = b.squeeze(y_pred, axis=-1)
    return y_true, y_pred


def as_dtype(b: OpBuilder, value: str, dtype: str) -> str:
    return value if b.graph.type_of(value).dtype == dtype else b.cast(value, dtype=dtype)


def mean_all(b: OpBuilder, values: str) -> str:
    rank = b.graph.type_of(values).rank
    return values if rank == 0 else b.reduce_mean(values, axes=tuple(range(rank)))


def _check_float_pred(b: OpBuilder, y_pred: str, what: str) -> str:
    dtype = b.graph.type_of(y_pred).dtype
    if not is_float(dtype):
        raise ValueError(f"{what} needs float predictions, got {dtype}")
    return dtype


def _same_shape(b: OpBuilder, y_true: str, y_pred: str, what: str) -> None:
    from graphc.ir import dims

    t, p = b.graph.type_of(y_true), b.graph.type_of(y_pred)
    if t.rank != p.rank or not all(dims.compatible(x, y) for x, y in zip(t.shape, p.shape)):
        raise ValueError(f"{what}: y_true and y_pred must have the same shape, got "
                         f"{_fmt(t.shape)} and {_fmt(p.shape)}")


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if isinstance(d, str) else str(d) for d in shape) + ")"


# ---------------------------------------------------------------------------- loss functions (as ops)
def _mse_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    dtype = _check_float_pred(b, y_pred, "mean_squared_error")
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    _same_shape(b, y_true, y_pred, "mean_squared_error")
    return b.reduce_mean(b.square(b.sub(y_true, y_pred)), axes=(-1,))


def _mae_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    dtype = _check_float_pred(b, y_pred, "mean_absolute_error")
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    _same_shape(b, y_true, y_pred, "mean_absolute_error")
    return b.reduce_mean(b.abs(b.sub(y_true, y_pred)), axes=(-1,))


def _bce_values(b: OpBuilder, y_true: str, y_pred: str, from_logits: bool = False,
                label_smoothing: float = 0.0, axis: int = -1) -> str:
    dtype = _check_float_pred(b, y_pred, "binary_crossentropy")
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    _same_shape(b, y_true, y_pred, "binary_crossentropy")
    one = _scalar(b, 1.0, dtype)
    if label_smoothing:
        y_true = b.add(b.mul(y_true, _scalar(b, 1.0 - label_smoothing, dtype)),
                       _scalar(b, 0.5 * label_smoothing, dtype))
    if from_logits:  # max(x, 0) - x*z + log(1 + exp(-|x|))
        elem = b.add(b.sub(b.relu(y_pred), b.mul(y_pred, y_true)), b.softplus(b.neg(b.abs(y_pred))))
    else:
        p = b.clip(y_pred, min=EPSILON, max=1.0 - EPSILON)
        pos = b.mul(y_true, b.log(p))
        neg = b.mul(b.sub(one, y_true), b.log(b.sub(one, p)))
        elem = b.neg(b.add(pos, neg))
    return b.reduce_mean(elem, axes=(axis,))


def _cce_from_onehot(b: OpBuilder, y_true: str, y_pred: str, from_logits: bool, axis: int) -> str:
    if from_logits:
        log_p = b.log_softmax(y_pred, axis=axis)
    else:
        p = b.div(y_pred, b.reduce_sum(y_pred, axes=(axis,), keepdims=True))
        log_p = b.log(b.clip(p, min=EPSILON, max=1.0 - EPSILON))
    return b.neg(b.reduce_sum(b.mul(y_true, log_p), axes=(axis,)))


def _cce_values(b: OpBuilder, y_true: str, y_pred: str, from_logits: bool = False,
                label_smoothing: float = 0.0, axis: int = -1) -> str:
    dtype = _check_float_pred(b, y_pred, "categorical_crossentropy")
    y_true = as_dtype(b, y_true, dtype)
    _same_shape(b, y_true, y_pred, "categorical_crossentropy")
    if label_smoothing:
        n = b.graph.type_of(y_pred).shape[axis]
        y_true = b.add(b.mul(y_true, _scalar(b, 1.0 - label_smoothing, dtype)),
                       _scalar(b, label_smoothing / n, dtype))
    return _cce_from_onehot(b, y_true, y_pred, from_logits, axis)


def sparse_labels(b: OpBuilder, y_true: str, y_pred: str, what: str) -> str:
    """Integer labels of rank ``rank(y_pred) - 1`` (a trailing size-1 axis squeezed; floats cast)."""
    t, p = b.graph.type_of(y_true), b.graph.type_of(y_pred)
    if t.rank == p.rank and t.shape[-1] == 1:
        y_true = b.squeeze(y_true, axis=-1)
        t = b.graph.type_of(y_true)
    if t.rank != p.rank - 1:
        raise ValueError(f"{what}: integer labels of shape {_fmt(t.shape)} do not match predictions of shape "
                         f"{_fmt(p.shape)} (labels have the predictions' shape without the class axis)")
    return y_true if is_int(t.dtype) else b.cast(y_true, dtype="int32")


def _scce_values(b: OpBuilder, y_true: str, y_pred: str, from_logits: bool = False, axis: int = -1) -> str:
    _check_float_pred(b, y_pred, "sparse_categorical_crossentropy")
    if axis not in (-1, b.graph.type_of(y_pred).rank - 1):
        raise ValueError("sparse_categorical_crossentropy supports the last axis only in graphc")
    labels = sparse_labels(b, y_true, y_pred, "sparse_categorical_crossentropy")
    depth = b.graph.type_of(y_pred).shape[-1]
    if not isinstance(depth, int):
        raise ValueError("sparse_categorical_crossentropy needs a known number of classes")
    onehot = b.one_hot(labels, depth=depth, dtype=b.graph.type_of(y_pred).dtype)
    return _cce_from_onehot(b, onehot, y_pred, from_logits, -1)


def _regression_pair(b: OpBuilder, y_true: str, y_pred: str, what: str) -> tuple[str, str, str]:
    """Float predictions, targets cast to their dtype, ranks met, shapes checked: (y_true, y_pred, dtype)."""
    dtype = _check_float_pred(b, y_pred, what)
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    _same_shape(b, y_true, y_pred, what)
    return y_true, y_pred, dtype


def _huber_values(b: OpBuilder, y_true: str, y_pred: str, delta: float = 1.0) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "huber")
    error = b.sub(y_pred, y_true)
    abs_error = b.abs(error)
    d = _scalar(b, delta, dtype)
    half = _scalar(b, 0.5, dtype)
    quadratic = b.mul(half, b.square(error))
    linear = b.sub(b.mul(d, abs_error), _scalar(b, 0.5 * float(np.float32(delta)) ** 2, dtype))
    return b.reduce_mean(b.where(b.greater_equal(d, abs_error), quadratic, linear), axes=(-1,))


def _log_cosh_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "log_cosh")
    x = b.sub(y_pred, y_true)  # log(cosh(x)) = x + softplus(-2x) - log(2), stable for large |x|
    value = b.sub(b.add(x, b.softplus(b.mul(x, _scalar(b, -2.0, dtype)))), _scalar(b, np.log(2.0), dtype))
    return b.reduce_mean(value, axes=(-1,))


def _kl_divergence_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, _ = _regression_pair(b, y_true, y_pred, "kl_divergence")
    y_true = b.clip(y_true, min=EPSILON, max=1.0)
    y_pred = b.clip(y_pred, min=EPSILON, max=1.0)
    return b.reduce_sum(b.mul(y_true, b.log(b.div(y_true, y_pred))), axes=(-1,))


def _poisson_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "poisson")
    value = b.sub(y_pred, b.mul(y_true, b.log(b.add(y_pred, _scalar(b, EPSILON, dtype)))))
    return b.reduce_mean(value, axes=(-1,))


def _cosine_similarity_values(b: OpBuilder, y_true: str, y_pred: str, axis: int = -1) -> str:
    y_true, y_pred, _ = _regression_pair(b, y_true, y_pred, "cosine_similarity")
    # Keras's normalize: x * min(rsqrt(sum(x^2)), 1/eps), i.e. x / sqrt(max(sum(x^2), eps^2))
    y_true = b.l2_normalize(y_true, axis=axis, epsilon=EPSILON * EPSILON)
    y_pred = b.l2_normalize(y_pred, axis=axis, epsilon=EPSILON * EPSILON)
    return b.neg(b.reduce_sum(b.mul(y_true, y_pred), axes=(axis,)))


def _hinge_labels(b: OpBuilder, y_true: str, dtype: str) -> str:
    """Keras's convert_binary_labels_to_hinge: labels that are all 0 or 1 become -1 or 1 (``y + all*(y-1)``)."""
    one = _scalar(b, 1.0, dtype)
    is_binary = b.maximum(b.cast(b.equal(y_true, _scalar(b, 0.0, dtype)), dtype=dtype),
                          b.cast(b.equal(y_true, one), dtype=dtype))
    all_binary = b.reduce_min(is_binary, axes=tuple(range(b.graph.type_of(y_true).rank)))
    return b.add(y_true, b.mul(all_binary, b.sub(y_true, one)))


def _hinge_margins(b: OpBuilder, y_true: str, y_pred: str, what: str) -> tuple[str, str]:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, what)
    y_true = _hinge_labels(b, y_true, dtype)
    margin = b.relu(b.sub(_scalar(b, 1.0, dtype), b.mul(y_true, y_pred)))
    return margin, dtype


def _hinge_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    margin, _ = _hinge_margins(b, y_true, y_pred, "hinge")
    return b.reduce_mean(margin, axes=(-1,))


def _squared_hinge_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    margin, _ = _hinge_margins(b, y_true, y_pred, "squared_hinge")
    return b.reduce_mean(b.square(margin), axes=(-1,))


def _categorical_hinge_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "categorical_hinge")
    one = _scalar(b, 1.0, dtype)
    pos = b.reduce_sum(b.mul(y_true, y_pred), axes=(-1,))
    neg = b.reduce_max(b.mul(b.sub(one, y_true), y_pred), axes=(-1,))
    return b.relu(b.add(b.sub(neg, pos), one))


def _msle_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "mean_squared_logarithmic_error")
    eps, one = _scalar(b, EPSILON, dtype), _scalar(b, 1.0, dtype)
    first = b.log(b.add(b.maximum(y_pred, eps), one))
    second = b.log(b.add(b.maximum(y_true, eps), one))
    return b.reduce_mean(b.square(b.sub(first, second)), axes=(-1,))


def _mape_values(b: OpBuilder, y_true: str, y_pred: str) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "mean_absolute_percentage_error")
    diff = b.abs(b.div(b.sub(y_true, y_pred), b.maximum(b.abs(y_true), _scalar(b, EPSILON, dtype))))
    return b.mul(_scalar(b, 100.0, dtype), b.reduce_mean(diff, axes=(-1,)))


def _binary_focal_values(b: OpBuilder, y_true: str, y_pred: str, apply_class_balancing: bool = False,
                         alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = False,
                         label_smoothing: float = 0.0, axis: int = -1) -> str:
    dtype = _check_float_pred(b, y_pred, "binary_focal_crossentropy")
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    _same_shape(b, y_true, y_pred, "binary_focal_crossentropy")
    one = _scalar(b, 1.0, dtype)
    if label_smoothing:
        y_true = b.add(b.mul(y_true, _scalar(b, 1.0 - label_smoothing, dtype)),
                       _scalar(b, 0.5 * label_smoothing, dtype))
    if from_logits:
        y_pred = b.sigmoid(y_pred)
    p = b.clip(y_pred, min=EPSILON, max=1.0 - EPSILON)
    bce = b.neg(b.add(b.mul(y_true, b.log(p)), b.mul(b.sub(one, y_true), b.log(b.sub(one, p)))))
    p_t = b.add(b.mul(y_true, y_pred), b.mul(b.sub(one, y_true), b.sub(one, y_pred)))
    focal = b.mul(b.pow(b.sub(one, p_t), _scalar(b, gamma, dtype)), bce)
    if apply_class_balancing:
        weight = b.add(b.mul(y_true, _scalar(b, alpha, dtype)),
                       b.mul(b.sub(one, y_true), _scalar(b, 1.0 - alpha, dtype)))
        focal = b.mul(weight, focal)
    return b.reduce_mean(focal, axes=(axis,))


def _categorical_focal_values(b: OpBuilder, y_true: str, y_pred: str, alpha: float = 0.25, gamma: float = 2.0,
                              from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1) -> str:
    y_true, y_pred, dtype = _regression_pair(b, y_true, y_pred, "categorical_focal_crossentropy")
    one = _scalar(b, 1.0, dtype)
    if label_smoothing:
        n = b.graph.type_of(y_pred).shape[-1]
        if not isinstance(n, int):
            raise ValueError("categorical_focal_crossentropy(label_smoothing=...) needs a known number of classes")
        y_true = b.add(b.mul(y_true, _scalar(b, 1.0 - label_smoothing, dtype)), _scalar(b, label_smoothing / n, dtype))
    if from_logits:
        y_pred = b.softmax(y_pred, axis=axis)
    output = b.clip(b.div(y_pred, b.reduce_sum(y_pred, axes=(axis,), keepdims=True)), min=EPSILON, max=1.0 - EPSILON)
    cce = b.mul(b.neg(y_true), b.log(output))
    factor = b.mul(b.pow(b.sub(one, output), _scalar(b, gamma, dtype)), _scalar(b, alpha, dtype))
    return b.reduce_sum(b.mul(factor, cce), axes=(axis,))


# name -> (per-sample values emitter, Keras class name)
_FUNCTIONS: dict[str, Callable[..., str]] = {
    "mean_squared_error": _mse_values,
    "mean_absolute_error": _mae_values,
    "binary_crossentropy": _bce_values,
    "categorical_crossentropy": _cce_values,
    "sparse_categorical_crossentropy": _scce_values,
    "huber": _huber_values,
    "log_cosh": _log_cosh_values,
    "kl_divergence": _kl_divergence_values,
    "poisson": _poisson_values,
    "cosine_similarity": _cosine_similarity_values,
    "hinge": _hinge_values,
    "squared_hinge": _squared_hinge_values,
    "categorical_hinge": _categorical_hinge_values,
    "mean_squared_logarithmic_error": _msle_values,
    "mean_absolute_percentage_error": _mape_values,
    "binary_focal_crossentropy": _binary_focal_values,
    "categorical_focal_crossentropy": _categorical_focal_values,
}
_ALIASES = {"mse": "mean_squared_error", "MSE": "mean_squared_error", "mae": "mean_absolute_error",
            "MAE": "mean_absolute_error", "bce": "binary_crossentropy", "BCE": "binary_crossentropy",
            "kld": "kl_divergence", "KLD": "kl_divergence", "mape": "mean_absolute_percentage_error",
            "MAPE": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
            "MSLE": "mean_squared_logarithmic_error"}


# ---------------------------------------------------------------------------- eager evaluation
def run_on_arrays(emit: Callable[[OpBuilder, str, str], str], y_true, y_pred) -> np.ndarray:
    """Evaluate ``emit`` (graph values -> one value) on arrays through the reference interpreter."""
    from graphc.backends.reference import run

    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if not np.issubdtype(yp.dtype, np.floating):
        yp = yp.astype("float32")
    graph = Graph("loss")
    b = OpBuilder(graph)
    t = graph.add_input("y_true", TensorType(normalize_dtype(yt.dtype if yt.dtype != np.float64 else "float32"),
                                             yt.shape))
    p = graph.add_input("y_pred", TensorType(normalize_dtype(yp.dtype if yp.dtype != np.float64 else "float32"),
                                             yp.shape))
    out = emit(b, t, p)
    graph.set_outputs([out])
    return run(graph, {"y_true": yt, "y_pred": yp})[out]


def _function(name: str):
    values = _FUNCTIONS[name]

    def fn(y_true, y_pred, **kwargs):
        return run_on_arrays(lambda b, t, p: values(b, t, p, **kwargs), y_true, y_pred)

    fn.__name__ = name
    fn.__doc__ = f"Keras's ``{name}`` on arrays: the per-sample values (last axis reduced)."
    fn._graphc_values = values  # type: ignore[attr-defined]
    return fn


mean_squared_error = _function("mean_squared_error")
mean_absolute_error = _function("mean_absolute_error")
binary_crossentropy = _function("binary_crossentropy")
categorical_crossentropy = _function("categorical_crossentropy")
sparse_categorical_crossentropy = _function("sparse_categorical_crossentropy")
huber = _function("huber")
log_cosh = _function("log_cosh")
kl_divergence = _function("kl_divergence")
poisson = _function("poisson")
cosine_similarity = _function("cosine_similarity")
hinge = _function("hinge")
squared_hinge = _function("squared_hinge")
categorical_hinge = _function("categorical_hinge")
mean_squared_logarithmic_error = _function("mean_squared_logarithmic_error")
mean_absolute_percentage_error = _function("mean_absolute_percentage_error")
binary_focal_crossentropy = _function("binary_focal_crossentropy")
categorical_focal_crossentropy = _function("categorical_focal_crossentropy")
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
bce = BCE = binary_crossentropy
kld = KLD = kl_divergence
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error


# ---------------------------------------------------------------------------- Loss classes
class Loss:
    """Base class: ``values(b, y_true, y_pred)`` per sample, ``emit`` reduced (mean of all values).

    A subclass written the Keras way defines ``call(self, y_true, y_pred)`` with graphc ops instead of
    ``values``: it is traced, on targets and predictions cast to the loss's dtype as Keras casts them.
    """

    def __init__(self, name: str | None = None, reduction: str = "sum_over_batch_size", dtype=None):
        if reduction not in ("sum_over_batch_size", "mean", "sum", "none", None):
            raise ValueError(f"Invalid value for argument `reduction`: {reduction!r}; expected one of "
                             "'sum_over_batch_size', 'mean', 'sum', 'none', None")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def values(self, b: OpBuilder, y_true: str, y_pred: str) -> str:
        if type(self).call is Loss.call:
            raise NotImplementedError(f"{type(self).__name__} defines neither call() nor values()")
        dtype = self.compute_dtype
        what = f"loss {type(self).__name__}.call ({self.name!r})"
        value = custom.trace_values(self.call, what, b, (as_dtype(b, y_true, dtype), as_dtype(b, y_pred, dtype)), {})
        return as_dtype(b, value, dtype)

    def call(self, y_true, y_pred):
        """Keras's per-sample loss on tensors; subclasses define it with graphc ops."""
        raise NotImplementedError

    @property
    def compute_dtype(self) -> str:
        """The dtype targets, predictions and values take (Keras's ``dtype``, float32 by default)."""
        return normalize_dtype(self.dtype) if self.dtype else "float32"

    def emit(self, b: OpBuilder, y_true: str, y_pred: str) -> str:
        """The reduced loss value (a scalar) as graph ops."""
        return self.reduce(b, self.values(b, y_true, y_pred))

    def reduce(self, b: OpBuilder, values: str) -> str:
        """Keras's reduction of the per-sample values (``emit`` is ``reduce`` of ``values``)."""
        if self.reduction in ("none", None):
            return values
        if self.reduction == "sum":
            rank = b.graph.type_of(values).rank
            return values if rank == 0 else b.reduce_sum(values, axes=tuple(range(rank)))
        return mean_all(b, values)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is None:
            return run_on_arrays(self.emit, y_true, y_pred)
        values = np.asarray(run_on_arrays(self.values, y_true, y_pred))
        sw = np.asarray(sample_weight, dtype=values.dtype)
        while sw.ndim > values.ndim and sw.shape[-1] == 1:
            sw = sw[..., 0]
        weighted = values * sw
        if self.reduction in ("none", None):
            return weighted
        total = weighted.sum(dtype=values.dtype)
        return total if self.reduction == "sum" else (total / max(values.size, 1)).astype(values.dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


def _snake(name: str) -> str:
    from graphc.frontend.state import to_snake_case

    return to_snake_case(name)


class LossFunctionWrapper(Loss):
    """A loss function with its keyword arguments: graphc's (a graph emitter) or the user's, written with
    graphc ops and traced on targets and predictions cast to the loss's dtype and brought to one rank."""

    def __init__(self, fn, reduction: str = "sum_over_batch_size", name: str | None = None, dtype=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        values = getattr(fn, "_graphc_values", None)
        if values is None:
            custom.check_traceable(fn, "loss")
            values = self._traced
        self.fn = fn
        self._fn_kwargs = kwargs
        self._values = values

    def values(self, b, y_true, y_pred):
        return self._values(b, y_true, y_pred, **self._fn_kwargs)

    def _traced(self, b: OpBuilder, y_true: str, y_pred: str, **kwargs) -> str:
        dtype = self.compute_dtype
        y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), as_dtype(b, y_pred, dtype))
        value = custom.trace_values(self.fn, custom.describe("loss function", self.fn), b, (y_true, y_pred), kwargs)
        return as_dtype(b, value, dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fn_kwargs}


class MeanSquaredError(LossFunctionWrapper):
    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, reduction=reduction, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class MeanAbsoluteError(LossFunctionWrapper):
    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, reduction=reduction, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class BinaryCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(binary_crossentropy, reduction=reduction, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


class CategoricalCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(categorical_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None):
        if ignore_class is not None:
            raise ValueError("SparseCategoricalCrossentropy(ignore_class=...) is not supported by graphc")
        super().__init__(sparse_categorical_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         from_logits=from_logits)
        self.from_logits = from_logits
        self.ignore_class = None

    def get_config(self):
        return {**super().get_config(), "ignore_class": None}


class _PlainLoss(LossFunctionWrapper):
    """A Keras loss class without options of its own: its config is the name and reduction only."""

    _fn: Callable = None  # type: ignore[assignment]
    _default_name = ""

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(type(self)._fn, reduction=reduction, name=name or self._default_name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class LogCosh(_PlainLoss):
    _fn, _default_name = staticmethod(log_cosh), "log_cosh"


class KLDivergence(_PlainLoss):
    _fn, _default_name = staticmethod(kl_divergence), "kl_divergence"


class Poisson(_PlainLoss):
    _fn, _default_name = staticmethod(poisson), "poisson"


class Hinge(_PlainLoss):
    _fn, _default_name = staticmethod(hinge), "hinge"


class SquaredHinge(_PlainLoss):
    _fn, _default_name = staticmethod(squared_hinge), "squared_hinge"


class CategoricalHinge(_PlainLoss):
    _fn, _default_name = staticmethod(categorical_hinge), "categorical_hinge"


class MeanSquaredLogarithmicError(_PlainLoss):
    _fn, _default_name = staticmethod(mean_squared_logarithmic_error), "mean_squared_logarithmic_error"


class MeanAbsolutePercentageError(_PlainLoss):
    _fn, _default_name = staticmethod(mean_absolute_percentage_error), "mean_absolute_percentage_error"


class Huber(LossFunctionWrapper):
    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(huber, reduction=reduction, name=name, dtype=dtype, delta=float(delta))
        self.delta = float(delta)


class CosineSimilarity(LossFunctionWrapper):
    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
        super().__init__(cosine_similarity, reduction=reduction, name=name, dtype=dtype, axis=axis)
        self.axis = axis


class BinaryFocalCrossentropy(LossFunctionWrapper):
    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 axis=-1, reduction="sum_over_batch_size", name="binary_focal_crossentropy", dtype=None):
        super().__init__(binary_focal_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         apply_class_balancing=apply_class_balancing, alpha=alpha, gamma=gamma,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.apply_class_balancing = apply_class_balancing
        self.alpha = alpha
        self.gamma = gamma
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


class CategoricalFocalCrossentropy(LossFunctionWrapper):
    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_focal_crossentropy", dtype=None):
        super().__init__(categorical_focal_crossentropy, reduction=reduction, name=name, dtype=dtype, alpha=alpha,
                         gamma=gamma, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.alpha = alpha
        self.gamma = gamma
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


_CLASSES = {cls.__name__: cls for cls in (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                          CategoricalCrossentropy, SparseCategoricalCrossentropy, Huber, LogCosh,
                                          KLDivergence, Poisson, CosineSimilarity, Hinge, SquaredHinge,
                                          CategoricalHinge, MeanSquaredLogarithmicError, MeanAbsolutePercentageError,
                                          BinaryFocalCrossentropy, CategoricalFocalCrossentropy)}


def get(identifier: Any) -> Loss:
    """A Loss from a name ("mse", "binary_crossentropy"...), a class name, a config dict, a graphc
    loss function or a Loss instance; the loss is named after the string given, as in Keras."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name in _FUNCTIONS:
            return LossFunctionWrapper(globals()[name], name=identifier)
        if name in _CLASSES:
            return _CLASSES[name]()
        from graphc.saving.custom_objects import get_registered_object

        found = get_registered_object(identifier)
        if found is None:
            raise ValueError(f"unknown loss {identifier!r}; graphc knows "
                             f"{', '.join(sorted(set(_FUNCTIONS) | set(_ALIASES) | set(_CLASSES)))} and the user's "
                             "losses given as custom_objects or registered with register_keras_serializable")
        return found() if isinstance(found, type) else LossFunctionWrapper(found, name=identifier)
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier):
        return LossFunctionWrapper(identifier, name=getattr(identifier, "__name__", None))
    raise ValueError(f"cannot interpret {identifier!r} as a loss")


def serialize(loss: Loss) -> dict:
    return {"module": "keras.losses", "class_name": type(loss).__name__, "config": loss.get_config(),
            "registered_name": None}


def deserialize(config: dict) -> Loss:
    """A Loss from Keras's serialization: graphc's classes and functions by name, the user's (functions and
    ``Loss`` subclasses) through ``custom_objects`` or the registry."""
    name = config.get("class_name")
    if name in _CLASSES:
        return _CLASSES[name].from_config(dict(config.get("config") or {}))
    if name == "function" or isinstance(config.get("config"), str):
        fn_name = config["config"]
        if _ALIASES.get(fn_name, fn_name) in _FUNCTIONS:
            return get(fn_name)
        fn = custom.find_object("loss function", fn_name)
        return LossFunctionWrapper(fn, name=getattr(fn, "__name__", fn_name))
    cls = custom.find_object("loss class", config.get("registered_name"), name)
    return cls.from_config(dict(config.get("config") or {}))
