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
from graphc.training import custom
from graphc.training import losses as _losses
from graphc.training.losses import as_dtype, run_on_arrays, same_rank, sparse_labels

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "Precision", "Recall", "AUC",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "ConfusionMetric", "get", "accuracy_for"]


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

    def get_totals(self) -> Any:
        """The accumulated state (``set_totals`` puts it back: evaluation inside fit keeps the epoch's)."""
        return self.total, self.count

    def set_totals(self, totals: Any) -> None:
        self.total, self.count = totals

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)

    def add_variable(self, shape=(), initializer="zeros", dtype=None, aggregation="sum", name=None):
        """Keras's metric state variables: refused, graphc compiles a metric's per-batch values, not its
        ``update_state``."""
        raise NotImplementedError(_STATEFUL_REFUSAL.format(cls=type(self).__name__, what="add_variable()"))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


_STATEFUL_REFUSAL = ("metric {cls}: {what} is not supported by graphc: a metric with its own state and update_state() "
                     "cannot be compiled into the step; write it as a function of (y_true, y_pred) with graphc ops "
                     "(compiled as the mean of its values) or a MeanMetricWrapper subclass")


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
    """The mean of ``fn(y_true, y_pred)`` per-sample values: graphc's ``fn`` emits graph ops, the user's is
    written with graphc ops and traced (on the targets and predictions as they come, as Keras calls it; its
    values are cast to float32 as Keras's ``Mean`` casts them)."""

    def __init__(self, fn, name: str | None = None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype)  # Keras's default: the class's name, not the function's
        emitter = getattr(fn, "_graphc_values", None)
        if emitter is None and not getattr(fn, "__module__", "").startswith("graphc."):  # the user's function
            custom.check_traceable(fn, "metric")
            self.fn = fn
            emitter = self._traced
        self._fn = emitter or fn
        self._fn_kwargs = kwargs

    def values(self, b: OpBuilder, y_true: str, y_pred: str) -> str:
        """Per-sample metric values as graph ops."""
        return self._fn(b, y_true, y_pred, **self._fn_kwargs)

    def _traced(self, b: OpBuilder, y_true: str, y_pred: str, **kwargs) -> str:
        value = custom.trace_values(self.fn, custom.describe("metric function", self.fn), b, (y_true, y_pred), kwargs)
        return custom.as_float(b, value)

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


def top_k_categorical_accuracy(b: OpBuilder, y_true: str, y_pred: str, k: int = 5) -> str:
    depth = b.graph.type_of(y_pred).shape[-1]
    labels = b.argmax(as_dtype(b, y_true, b.graph.type_of(y_pred).dtype), axis=-1)
    return _in_top_k(b, b.one_hot(labels, depth=depth, dtype=b.graph.type_of(y_pred).dtype), y_pred, k)


def sparse_top_k_categorical_accuracy(b: OpBuilder, y_true: str, y_pred: str, k: int = 5,
                                      from_sorted_ids: bool = False) -> str:
    if from_sorted_ids:
        raise ValueError("SparseTopKCategoricalAccuracy(from_sorted_ids=True) is not supported by graphc")
    labels = sparse_labels(b, y_true, y_pred, "sparse_top_k_categorical_accuracy")
    depth = b.graph.type_of(y_pred).shape[-1]
    return _in_top_k(b, b.one_hot(labels, depth=depth, dtype=b.graph.type_of(y_pred).dtype), y_pred, k)


def _in_top_k(b: OpBuilder, onehot: str, y_pred: str, k: int) -> str:
    """1 where the target's score is at least the k-th largest (ties count, as Keras's in_top_k):
    fewer than ``k`` scores exceed it."""
    target_score = b.reduce_sum(b.mul(onehot, y_pred), axes=(-1,), keepdims=True)
    above = b.reduce_sum(b.cast(b.greater(y_pred, target_score), dtype="float32"), axes=(-1,))
    return b.cast(b.less(above, b.constant(np.asarray(k, dtype="float32"), "k")), dtype="float32")


class TopKCategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None, from_sorted_ids=False):
        if from_sorted_ids:
            raise ValueError("SparseTopKCategoricalAccuracy(from_sorted_ids=True) is not supported by graphc")
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k

    def get_config(self):
        return {**super().get_config(), "from_sorted_ids": False}


# ---------------------------------------------------------------------------- confusion-matrix metrics
class ConfusionMetric(Metric):
    """Metrics over true/false positive/negative counts at thresholds, accumulated over the epoch.

    ``emit_totals`` writes into the step graph one ``[4, thresholds]`` float32 value: the counts of
    true positives, false positives, true negatives and false negatives of the batch (a prediction
    is positive when it is strictly above the threshold, a label when it is non-zero, as in Keras);
    ``update_state_totals`` adds them up and ``result`` derives the metric.
    """

    _direction = "up"

    def __init__(self, thresholds, class_id=None, name=None, dtype=None):
        self.thresholds = [float(t) for t in thresholds]
        self.class_id = class_id
        super().__init__(name=name, dtype=dtype)

    def reset_state(self) -> None:
        self.counts = np.zeros((4, len(self.thresholds)), dtype=np.float64)

    def update_state_totals(self, counts) -> None:  # type: ignore[override]
        self.counts = self.counts + np.asarray(counts, dtype=np.float64)

    def get_totals(self) -> np.ndarray:
        return self.counts

    def set_totals(self, totals: np.ndarray) -> None:
        self.counts = totals

    def emit_totals(self, b: OpBuilder, y_true: str, y_pred: str) -> tuple[str]:
        f32 = "float32"
        y_true, y_pred = same_rank(b, as_dtype(b, y_true, f32), as_dtype(b, y_pred, f32))
        if self.class_id is not None:
            if b.graph.type_of(y_pred).rank != 2:
                raise ValueError(f"{type(self).__name__}(class_id=...) needs 2D predictions (batch, classes), got "
                                 f"rank {b.graph.type_of(y_pred).rank}")
            y_true = b.slice(y_true, axis=-1, start=self.class_id, stop=self.class_id + 1)
            y_pred = b.slice(y_pred, axis=-1, start=self.class_id, stop=self.class_id + 1)
        y_pred = self._scores(b, y_pred)
        pred = b.reshape(y_pred, shape=(-1, 1))
        one = b.constant(np.asarray(1.0, dtype=f32), "one")
        label = b.sub(one, b.cast(b.equal(b.reshape(y_true, shape=(-1, 1)), b.constant(np.asarray(0.0, f32), "zero")),
                                  dtype=f32))
        thresholds = b.constant(np.asarray(self.thresholds, dtype=f32), f"{self.name}/thresholds")
        positive = b.cast(b.greater(pred, thresholds), dtype=f32)  # [values, thresholds]
        negative, no_label = b.sub(one, positive), b.sub(one, label)
        counts = [b.reduce_sum(b.mul(p, t), axes=(0,), keepdims=True)
                  for p, t in ((positive, label), (positive, no_label), (negative, no_label), (negative, label))]
        return (b.concat(*counts, axis=0),)

    def _scores(self, b: OpBuilder, y_pred: str) -> str:
        return y_pred

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__}.update_state(sample_weight=...) is not supported by graphc")
        self.update_state_totals(run_on_arrays(lambda b, t, p: self.emit_totals(b, t, p)[0], y_true, y_pred))

    @property
    def true_positives(self) -> np.ndarray:
        return self.counts[0]

    @property
    def false_positives(self) -> np.ndarray:
        return self.counts[1]

    @property
    def true_negatives(self) -> np.ndarray:
        return self.counts[2]

    @property
    def false_negatives(self) -> np.ndarray:
        return self.counts[3]


def _divide_no_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def _single_threshold(cls: str, thresholds, top_k) -> list[float]:
    if top_k is not None:
        raise ValueError(f"{cls}(top_k=...) is not supported by graphc")
    if thresholds is None:
        return [0.5]
    if isinstance(thresholds, (list, tuple)):
        if len(thresholds) != 1:
            raise ValueError(f"{cls}(thresholds=[...]) with several thresholds is not supported by graphc")
        return [float(thresholds[0])]
    return [float(thresholds)]


class Precision(ConfusionMetric):
    """``TP / (TP + FP)`` over the epoch."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds = thresholds
        self.top_k = top_k
        super().__init__(_single_threshold("Precision", thresholds, top_k), class_id, name or "precision", dtype)

    def result(self) -> float:
        return float(np.float32(_divide_no_nan(self.true_positives, self.true_positives + self.false_positives)[0]))

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


class Recall(ConfusionMetric):
    """``TP / (TP + FN)`` over the epoch."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds = thresholds
        self.top_k = top_k
        super().__init__(_single_threshold("Recall", thresholds, top_k), class_id, name or "recall", dtype)

    def result(self) -> float:
        return float(np.float32(_divide_no_nan(self.true_positives, self.true_positives + self.false_negatives)[0]))

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


class AUC(ConfusionMetric):
    """The area under the ROC or precision-recall curve, from the counts at ``num_thresholds`` thresholds
    (Keras's Riemann sums: interpolation, minoring or majoring; PR interpolation as Davis & Goadrich)."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        if multi_label or num_labels is not None or label_weights is not None:
            option = "multi_label" if multi_label else "num_labels" if num_labels is not None else "label_weights"
            raise ValueError(f"AUC({option}=...) is not supported by graphc")
        curve = str(curve).upper()
        if curve not in ("ROC", "PR"):
            raise ValueError(f"AUC(curve={curve!r}) is not supported by graphc (ROC and PR are)")
        summation_method = str(summation_method).lower()
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f'Invalid AUC summation method value "{summation_method}". Expected values are '
                             "['interpolation', 'majoring', 'minoring']")
        if thresholds is not None:
            values = sorted(float(t) for t in thresholds)
            self.num_thresholds = len(values) + 2
        else:
            if num_thresholds <= 1:
                raise ValueError(f"Argument `num_thresholds` must be an integer > 1. Received: "
                                 f"num_thresholds={num_thresholds}")
            self.num_thresholds = num_thresholds
            values = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        eps = 1e-7
        self.curve = curve
        self.summation_method = summation_method
        self.multi_label = False
        self.num_labels = None
        self.label_weights = None
        self.from_logits = from_logits
        self._init_thresholds = thresholds is not None
        super().__init__([0.0 - eps] + values + [1.0 + eps], None, name or "auc", dtype)

    def _scores(self, b: OpBuilder, y_pred: str) -> str:
        return b.sigmoid(y_pred) if self.from_logits else y_pred

    def result(self) -> float:
        tp, fp, tn, fn = self.counts
        n = self.num_thresholds
        if self.curve == "PR" and self.summation_method == "interpolation":
            return float(np.float32(self._interpolate_pr_auc()))
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, _divide_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:n - 1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:n - 1], y[1:])
        else:
            heights = np.maximum(y[:n - 1], y[1:])
        return float(np.float32(np.sum((x[:n - 1] - x[1:]) * heights)))

    def _interpolate_pr_auc(self) -> float:
        tp, fp, _, fn = self.counts
        n = self.num_thresholds
        dtp = tp[:n - 1] - tp[1:]
        p = tp + fp
        dp = p[:n - 1] - p[1:]
        slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:n - 1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _divide_no_nan(p[:n - 1], np.maximum(p[1:], 0)), 1.0)
        increment = _divide_no_nan(slope * (dtp + intercept * np.log(np.where(ratio > 0, ratio, 1.0))),
                                   np.maximum(tp[1:] + fn[1:], 0))
        return float(np.sum(increment))

    def get_config(self) -> dict:
        config = {"num_thresholds": self.num_thresholds, "curve": self.curve,
                  "summation_method": self.summation_method, "multi_label": False, "num_labels": None,
                  "label_weights": None, "from_logits": self.from_logits, "name": self.name, "dtype": self.dtype}
        if self._init_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


_BY_NAME: dict[str, type] = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "precision": Precision, "recall": Recall, "auc": AUC, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
}
_CLASSES = {cls.__name__: cls for cls in (Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
                                          MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                          CategoricalCrossentropy, SparseCategoricalCrossentropy, Mean, Precision,
                                          Recall, AUC, TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy)}


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
        if not hasattr(identifier, "values") and not hasattr(identifier, "emit_totals"):
            raise ValueError(_STATEFUL_REFUSAL.format(cls=type(identifier).__name__, what="update_state()"))
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name in _CLASSES:
            return _CLASSES[name].from_config(dict(identifier.get("config") or {}))
        if isinstance(identifier.get("config"), str):
            fn_name = identifier["config"]
            if name != "function" or fn_name.lower() in ("accuracy", "acc") or fn_name in _BY_NAME:
                return get(fn_name, true_shape, pred_shape)
            fn = custom.find_object("metric function", fn_name)
            return MeanMetricWrapper(fn, name=getattr(fn, "__name__", fn_name))
        cls = custom.find_object("metric class", identifier.get("registered_name"), name)
        return cls.from_config(dict(identifier.get("config") or {}))
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
        from graphc.saving.custom_objects import get_registered_object

        found = get_registered_object(identifier)
        if found is None:
            raise ValueError(f"unknown metric {identifier!r}; graphc knows accuracy, acc, "
                             f"{', '.join(sorted(set(_BY_NAME) | set(_CLASSES)))} and the user's metrics given as "
                             "custom_objects or registered with register_keras_serializable")
        return found() if isinstance(found, type) else MeanMetricWrapper(found, name=identifier)
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", None))
    raise ValueError(f"cannot interpret {identifier!r} as a metric")
