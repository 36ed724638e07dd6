"""Keras 3 metrics: per-sample values as IR ops, accumulated on the host.

A metric that compares targets and predictions (:class:`MeanMetricWrapper` and its
subclasses) emits its per-sample values into the training or evaluation graph; the step's
outputs carry their sum and count, and :meth:`Metric.update_state_totals` accumulates them, so
``result()`` is the mean over every value seen since ``reset_state()``, as Keras's
``MeanMetricWrapper`` computes it. :class:`Mean` only accumulates (the loss trackers).
Called on arrays, ``update_state(y_true, y_pred)`` runs the same ops through the reference
interpreter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ops.builder import OpBuilder
from graphc.training import losses as _losses
from graphc.training.losses import as_dtype, run_on_arrays, same_rank, sparse_labels

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "get", "accuracy_for"]


class Metric:
    """A running mean: ``total / count`` over the values given since the last reset."""

    _direction = "down"

    def __init__(self, name: str | None = None, dtype=None):
        from graphc.frontend.state import to_snake_case

        self.name = name or to_snake_case(type(self).__name__)
        self.dtype = dtype or "float32"
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def update_state_totals(self, total: float, count: float) -> None:
        self.total += float(total)
        self.count += float(count)

    def result(self) -> float:
        return float(np.float32(self.total / self.count)) if self.count else 0.0

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class Mean(Metric):
    """The (weighted) mean of the values passed to ``update_state``."""

    def update_state(self, values, sample_weight=None) -> None:
        v = np.asarray(values, dtype=np.float64)
        if sample_weight is None:
            self.update_state_totals(v.sum(), v.size)
        else:
            w = np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), v.shape) if v.ndim else \
                np.asarray(sample_weight, dtype=np.float64)
            self.update_state_totals((v * w).sum(), np.sum(w))


class MeanMetricWrapper(Metric):
    """The mean of ``fn(y_true, y_pred)`` per-sample values (``fn`` emits graph ops)."""

    def __init__(self, fn, name: str | None = None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)
        self._fn = getattr(fn, "_graphc_values", fn)
        self._fn_kwargs = kwargs

    def values(self, b: OpBuilder, y_true: str, y_pred: str) -> str:
        """Per-sample metric values as graph ops."""
        return self._fn(b, y_true, y_pred, **self._fn_kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        v = np.asarray(run_on_arrays(self.values, y_true, y_pred), dtype=np.float64)
        if sample_weight is None:
            self.update_state_totals(v.sum(), v.size)
        else:
            w = np.asarray(sample_weight, dtype=np.float64)
            while w.ndim > v.ndim and w.shape[-1] == 1:
                w = w[..., 0]
            w = np.broadcast_to(w, v.shape)
            self.update_state_totals((v * w).sum(), w.sum())

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fn_kwargs}


# ---------------------------------------------------------------------------- per-sample formulas
def _float_pred(b: OpBuilder, y_pred: str) -> str:
    return b.graph.type_of(y_pred).dtype


def accuracy(b: OpBuilder, y_true: str, y_pred: str) -> str:
    dtype = _float_pred(b, y_pred)
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    return b.cast(b.equal(y_true, y_pred), dtype="float32")


def binary_accuracy(b: OpBuilder, y_true: str, y_pred: str, threshold: float = 0.5) -> str:
    dtype = _float_pred(b, y_pred)
    y_true, y_pred = same_rank(b, as_dtype(b, y_true, dtype), y_pred)
    thr = b.constant(np.asarray(threshold, dtype=dtype), "threshold")
    predicted = b.cast(b.greater(y_pred, thr), dtype=dtype)
    return b.reduce_mean(b.cast(b.equal(y_true, predicted), dtype="float32"), axes=(-1,))


def categorical_accuracy(b: OpBuilder, y_true: str, y_pred: str) -> str:
    return b.cast(b.equal(b.argmax(y_true, axis=-1), b.argmax(y_pred, axis=-1)), dtype="float32")


def sparse_categorical_accuracy(b: OpBuilder, y_true: str, y_pred: str) -> str:
    labels = sparse_labels(b, y_true, y_pred, "sparse_categorical_accuracy")
    return b.cast(b.equal(as_dtype(b, labels, "int64"), b.argmax(y_pred, axis=-1)), dtype="float32")


class Accuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class MeanSquaredError(MeanMetricWrapper):
    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(_losses.mean_squared_error, name=name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(_losses.mean_absolute_error, name=name, dtype=dtype)


class BinaryCrossentropy(MeanMetricWrapper):
    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0.0):
        super().__init__(_losses.binary_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing)


class CategoricalCrossentropy(MeanMetricWrapper):
    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0.0):
        super().__init__(_losses.categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing)


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False):
        super().__init__(_losses.sparse_categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits)


_BY_NAME: dict[str, type] = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_CLASSES = {cls.__name__: cls for cls in (Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
                                          MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                          CategoricalCrossentropy, SparseCategoricalCrossentropy, Mean)}


def accuracy_for(name: str, true_shape: tuple, pred_shape: tuple) -> Metric:
    """Keras's choice for "accuracy"/"acc": binary, sparse categorical or categorical, from the shapes."""
    is_binary = pred_shape[-1] == 1
    is_sparse = len(true_shape) < len(pred_shape) or (true_shape[-1] == 1 and pred_shape[-1] != 1)
    if is_binary:
        return BinaryAccuracy(name=name)
    if is_sparse:
        return SparseCategoricalAccuracy(name=name)
    return CategoricalAccuracy(name=name)


def get(identifier: Any, true_shape: tuple | None = None, pred_shape: tuple | None = None) -> Metric:
    """A Metric from a name (named as given, as in Keras), a class name, a config dict or an instance.

    "accuracy"/"acc" need the target and prediction shapes to pick the accuracy kind.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name in _CLASSES:
            return _CLASSES[name].from_config(dict(identifier.get("config") or {}))
        if isinstance(identifier.get("config"), str):
            return get(identifier["config"], true_shape, pred_shape)
        raise ValueError(f"unknown metric class {name!r} in {identifier!r}")
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            if true_shape is None or pred_shape is None:
                return Accuracy(name=identifier)
            return accuracy_for(identifier, true_shape, pred_shape)
        if identifier in _BY_NAME:
            metric = _BY_NAME[identifier]()
            metric.name = identifier
            return metric
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
        raise ValueError(f"unknown metric {identifier!r}; graphc knows accuracy, acc, "
                         f"{', '.join(sorted(set(_BY_NAME) | set(_CLASSES)))}")
    if callable(identifier) and hasattr(identifier, "_graphc_values"):
        return MeanMetricWrapper(identifier, name=identifier.__name__)
    raise ValueError(f"cannot interpret {identifier!r} as a metric; custom Python metric functions cannot be "
                     "compiled into the graph")
