"""``compile`` / ``fit`` / ``evaluate`` / ``train_on_batch`` / ``test_on_batch`` with Keras 3's semantics.

:class:`Trainer` (one per model, created by ``compile``) resolves the losses, loss weights and
metrics per output, builds the step graphs of :mod:`graphc.training.step` on the first batch
(``"acc"`` depends on the targets' shapes, as in Keras) and runs them batch by batch:

- data: arrays, lists (in input/output order) or dicts (by input/output name); the number of
  samples must agree; ``validation_split`` keeps the last fraction aside before shuffling;
- each epoch shuffles (``shuffle=True``), runs ``ceil(n / batch_size)`` steps, then evaluates
  the validation data; logs are running means weighted like Keras's (the loss by batch size,
  metrics by their number of values);
- history keys and order: ``loss``, the metrics (``acc``..., prefixed by the output name for
  several outputs), the per-output losses (``age_loss``...) when there are several, then the
  same with ``val_``.

Beyond Keras 3: one loss given for several outputs applies to each of them (as in Keras 2), so
``loss="binary_crossentropy", loss_weights=[1.0, 0.2]`` works.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.saving import custom_objects
from graphc.training import losses as losses_mod
from graphc.training import metrics as metrics_mod
from graphc.training import optimizers as optimizers_mod
from graphc.training import schedules
from graphc.training.callbacks import CallbackList
from graphc.training.metrics import Mean
from graphc.training.step import OutputSpec, Step

__all__ = ["Trainer", "compile_model", "fit", "evaluate", "train_on_batch", "test_on_batch"]


def is_serialized_object(value) -> bool:
    """A Keras-serialized loss, metric or optimizer (``{"class_name": ..., "config": ...}``), not a nest."""
    return isinstance(value, dict) and "class_name" in value and "config" in value


def nest_leaves(value) -> list:
    if value is None:
        return []
    if is_serialized_object(value):
        return [value]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in nest_leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in nest_leaves(v)]
    return [value]


class Trainer:
    """The training configuration of one model and its compiled steps."""

    def __init__(self, model, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                 weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
                 auto_scale_loss=True):
        self.model = model
        self.optimizer = optimizers_mod.get(optimizer)
        self._user_loss, self._user_loss_weights = loss, loss_weights
        self._user_metrics = metrics
        for m in nest_leaves(metrics):
            metrics_mod.get(m)  # unknown names fail here, at compile time
        for entry in nest_leaves(loss):
            losses_mod.get(entry)
        if weighted_metrics:
            raise ValueError("compile(weighted_metrics=...) is not supported by graphc")
        self._custom_objects = custom_objects.active_objects()  # metrics resolve again on the first batch
        self.output_names: list[str] | None = None
        self.specs: list[OutputSpec] | None = None
        self.loss_tracker = Mean(name="loss")
        self.output_loss_trackers: list[Mean | None] = []
        self._steps: dict[tuple, Step] = {}
        self.runner = None  # how step graphs run: (graph, feeds) -> outputs; None = the reference interpreter
        if model.built and getattr(model, "_nodes", None):
            self.configure()

    def configure(self) -> None:
        """Match losses and loss weights to the model's outputs (once the model is built)."""
        if self.output_names is not None:
            return
        self.output_names = list(self.model.output_names)
        self.losses = self._per_output(self._user_loss, "loss", allow_single_for_all=True)
        with custom_objects.custom_object_scope(self._custom_objects):
            self.loss_objects = [None if entry is None else losses_mod.get(entry) for entry in self.losses]
        self.loss_weights = self._weights(self._user_loss_weights, len(self.output_names))

    # ------------------------------------------------------------------ configuration
    def _per_output(self, value, what: str, allow_single_for_all: bool) -> list:
        names = self.output_names
        n = len(names)
        if value is None:
            return [None] * n
        if isinstance(value, dict) and not is_serialized_object(value):
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(f"compile({what}=...): keys {unknown} are not model outputs; the outputs are {names}")
            return [value.get(k) for k in names]
        if isinstance(value, (list, tuple)):
            if n == 1 and len(value) == 1:
                return [value[0]]
            if len(value) != n:
                raise ValueError(f"compile({what}=...) got a list of {len(value)} entries for a model with {n} "
                                 f"output(s) {names}")
            return list(value)
        if allow_single_for_all:
            return [value] * n
        return [value]

    def _weights(self, loss_weights, n: int) -> list[float | None]:
        if loss_weights is None:
            return [None] * n
        if isinstance(loss_weights, (int, float)):
            if n != 1:
                raise ValueError(f"compile(loss_weights={loss_weights}) must be a list or dict for a model with "
                                 f"{n} outputs {self.output_names}")
            return [float(loss_weights)]
        if isinstance(loss_weights, dict):
            unknown = [k for k in loss_weights if k not in self.output_names]
            if unknown:
                raise ValueError(f"compile(loss_weights=...): keys {unknown} are not model outputs; the outputs are "
                                 f"{self.output_names}")
            return [None if loss_weights.get(k) is None else float(loss_weights[k]) for k in self.output_names]
        weights = list(loss_weights)
        with_loss = [i for i, loss in enumerate(self.losses) if loss is not None]
        if len(weights) == n:
            return [None if w is None else float(w) for w in weights]
        if len(weights) == len(with_loss):
            out: list[float | None] = [None] * n
            for i, w in zip(with_loss, weights):
                out[i] = float(w)
            return out
        raise ValueError(f"`loss_weights` must match the number of losses, got {len(with_loss)} losses and "
                         f"{len(weights)} weights.")

    def _build_specs(self, targets: list[np.ndarray | None]) -> None:
        """Resolve losses and metrics against the first batch's targets (Keras builds them lazily too)."""
        if all(loss is None for loss in self.losses):
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        n = len(self.output_names)
        user = self._user_metrics
        if user is None:
            per_output: list = [None] * n
        elif isinstance(user, dict):
            per_output = self._per_output(user, "metrics", allow_single_for_all=False)
        elif isinstance(user, (list, tuple)) and n > 1 and len(user) == n and all(
                m is None or isinstance(m, (list, tuple)) for m in user):
            per_output = list(user)
        else:
            per_output = [user] * n
        pred_shapes = [tuple(t.shape) for t in self.model.outputs]
        specs = []
        for i, name in enumerate(self.output_names):
            y = targets[i] if i < len(targets) else None
            loss = self.loss_objects[i]
            ms = per_output[i]
            ms = [] if ms is None else list(ms) if isinstance(ms, (list, tuple)) else [ms]
            resolved = []
            for m in ms:
                true_shape = tuple(np.shape(y)) if y is not None else pred_shapes[i]
                with custom_objects.custom_object_scope(self._custom_objects):
                    resolved.append(metrics_mod.get(m, true_shape, pred_shapes[i]))
            specs.append(OutputSpec(name, loss, self.loss_weights[i], resolved, f"{name}_" if n > 1 else ""))
        self.specs = specs
        with_loss = [s for s in specs if s.loss is not None]
        self.output_loss_trackers = [Mean(name=f"{s.name}_loss") if (s.loss is not None and len(with_loss) > 1)
                                     else None for s in specs]

    def all_metrics(self) -> list:
        out = [self.loss_tracker]
        for spec in self.specs or []:
            out.extend(spec.metrics)
        out.extend(t for t in self.output_loss_trackers if t is not None)
        return out

    def reset_metrics(self) -> None:
        for m in self.all_metrics():
            m.reset_state()

    def metric_names(self) -> list[str]:
        """Keras's ``metrics_names``: loss, the compiled metrics (unprefixed), the per-output losses."""
        names = ["loss"]
        for spec in self.specs or []:
            names.extend(m.name for m in spec.metrics)
        names.extend(t.name for t in self.output_loss_trackers if t is not None)
        return names

    def results(self) -> dict[str, float]:
        logs: dict[str, float] = {"loss": self.loss_tracker.result()}
        seen: dict[str, int] = {}
        for spec in self.specs or []:
            for m in spec.metrics:
                name = spec.metric_prefix + m.name
                if name in seen:
                    seen[name] += 1
                    name = f"{name}_{seen[name] - 1}"
                else:
                    seen[name] = 1
                logs[name] = m.result()
        for t in self.output_loss_trackers:
            if t is not None:
                logs[t.name] = t.result()
        return logs

    # ------------------------------------------------------------------ steps
    def _step(self, feeds: dict[str, np.ndarray], targets: list, training: bool,
              sample_weights: list | None = None) -> Step:
        if self.specs is None:
            self._build_specs(targets)
        key = (training, tuple(None if y is None else (np.asarray(y).dtype.kind, np.shape(y)[1:]) for y in targets),
               tuple(v.trainable for v in self.model.weights),
               None if sample_weights is None else tuple(None if w is None else np.shape(w)[1:]
                                                         for w in sample_weights),
               self._schedule_key())
        step = self._steps.get(key)
        if step is None:
            step = Step(self.model, self.specs, targets, self.optimizer if training else None, training,
                        runner=self.runner, sample_weights=sample_weights)
            self._steps[key] = step
        return step

    def _schedule_key(self) -> int | None:
        """Which schedule the training steps compute in their graphs (a new one assigned to the optimizer
        needs new steps; the steps hold theirs, so its id is not reused while they live)."""
        lr = getattr(self.optimizer, "_learning_rate", None)
        return id(lr) if schedules.in_graph(lr) else None

    def run_batch(self, feeds: dict[str, np.ndarray], targets: list, training: bool,
                  sample_weights: list | None = None, distribution=None) -> dict[str, float]:
        """One step on one batch (its losses weighted by ``sample_weights``, one array or None per output);
        updates the trackers and returns the running logs. With a ``distribution``
        (:class:`graphc.distribute.DataParallel`) a training batch is this process's share of a global
        batch, and the update and the logs are the global batch's."""
        step = self._step(feeds, targets, training, sample_weights)
        n = next(iter(feeds.values())).shape[0] if feeds else 0
        if training and distribution is not None:
            result, n = distribution.train_step(step, feeds, targets, sample_weights, n)
        else:
            result = step.run(feeds, targets, sample_weights)
        out = step.outputs
        loss = float(result[out.loss])
        self.loss_tracker.update_state_totals(loss * n, n)
        for i, value in out.output_losses:
            tracker = self.output_loss_trackers[i]
            if tracker is not None:
                tracker.update_state_totals(float(result[value]) * n, n)
        for i, k, *totals in out.metrics:
            self.specs[i].metrics[k].update_state_totals(*(result[value] for value in totals))
        return self.results()


    def train_step(self, x, y) -> dict[str, float]:
        """One optimizer step on one batch (arrays, lists or dicts); the running logs since the last reset."""
        xs, ys, _ = _prepare(self.model, x, y)
        return self.run_batch(xs, ys, training=True)

    def test_step(self, x, y) -> dict[str, float]:
        """The loss and metrics of one batch, accumulated into the running logs."""
        xs, ys, _ = _prepare(self.model, x, y)
        return self.run_batch(xs, ys, training=False)


# ---------------------------------------------------------------------------- data handling
def _num_samples(arrays: list[np.ndarray], what: str) -> int:
    sizes = {a.shape[0] if a.ndim else None for a in arrays}
    if None in sizes:
        raise ValueError(f"{what} must be arrays with a leading sample axis; got a scalar")
    if len(sizes) != 1:
        raise ValueError(f"Data cardinality is ambiguous: {what} have sizes {sorted(sizes)}. Make sure all arrays "
                         "contain the same number of samples.")
    return sizes.pop()


def standardize_x(model, x) -> dict[str, np.ndarray]:
    names = model.input_names
    if x is None:
        raise ValueError("fit/evaluate need input data x")
    if isinstance(x, dict):
        unknown = [k for k in x if k not in names]
        missing = [k for k in names if k not in x]
        if unknown or missing:
            raise ValueError(f"input dict keys {sorted(x)} do not match the model inputs {names}"
                             + (f"; missing {missing}" if missing else "")
                             + (f"; unknown {unknown}" if unknown else ""))
        return {k: np.asarray(x[k]) for k in names}
    if isinstance(x, (list, tuple)):
        if len(names) == 1 and len(x) == 1:
            return {names[0]: np.asarray(x[0])}
        if len(x) != len(names):
            raise ValueError(f"the model takes {len(names)} input(s) {names}, got a list of {len(x)} arrays")
        return {k: np.asarray(v) for k, v in zip(names, x)}
    if len(names) != 1:
        raise ValueError(f"the model takes {len(names)} inputs {names}; pass a list or a dict of arrays")
    return {names[0]: np.asarray(x)}


def standardize_y(model, y) -> list[np.ndarray | None]:
    names = model.output_names
    if y is None:
        return [None] * len(names)
    if isinstance(y, dict):
        unknown = [k for k in y if k not in names]
        if unknown:
            raise ValueError(f"target dict keys {unknown} are not model outputs; the outputs are {names}")
        return [None if y.get(k) is None else np.asarray(y[k]) for k in names]
    if isinstance(y, (list, tuple)):
        if len(names) == 1 and len(y) == 1:
            return [np.asarray(y[0])]
        if len(names) == 1:
            return [np.asarray(y)]
        if len(y) != len(names):
            raise ValueError(f"the model has {len(names)} outputs {names}, got a list of {len(y)} targets")
        return [None if v is None else np.asarray(v) for v in y]
    if len(names) != 1:
        raise ValueError(f"the model has {len(names)} outputs {names}; pass the targets as a list or a dict")
    return [np.asarray(y)]


def _take(xs: dict[str, np.ndarray], ys: list, index) -> tuple[dict, list]:
    return ({k: v[index] for k, v in xs.items()}, [None if y is None else y[index] for y in ys])


def _take_weights(sws: list | None, index) -> list | None:
    return None if sws is None else [None if w is None else w[index] for w in sws]


def is_batch_source(x) -> bool:
    """A Python generator or iterator, or a PyDataset-like object (``__getitem__`` and ``__len__`` giving
    batches), rather than arrays."""
    if x is None or isinstance(x, (np.ndarray, list, tuple, dict, str, bytes)) or hasattr(x, "__array__"):
        return False
    return hasattr(x, "__next__") or (hasattr(x, "__getitem__") and hasattr(x, "__len__"))


def unpack_batch(batch) -> tuple[Any, Any, Any]:
    """Keras's unpack_x_y_sample_weight: ``(x,)``, ``(x, y)``, ``(x, y, sample_weight)`` or ``x``."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return batch, None, None
    if len(batch) not in (1, 2, 3):
        raise ValueError("Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, "
                         f"found a tuple of {len(batch)} elements")
    return (tuple(batch) + (None, None))[:3]


class BatchSource:
    """The batches of a generator/iterator (one iterator kept across epochs, as Keras does) or of a
    PyDataset-like object (indexed ``0..steps-1`` each epoch, in a random order with ``shuffle`` as
    Keras's PyDataset adapter does, ``on_epoch_end`` after each)."""

    def __init__(self, source, steps: int | None, what: str, shuffle: bool = False):
        self.source = source
        self.shuffle = shuffle
        self.indexed = not hasattr(source, "__next__")
        self.iterator = None if self.indexed else source
        if steps is None and self.indexed:
            steps = len(source)
        if steps is not None and int(steps) < 1:
            raise ValueError(f"{what} must be a positive integer, got {steps}")
        self.steps = None if steps is None else int(steps)

    def batches(self):
        if self.indexed:
            for i in np.random.permutation(self.steps) if self.shuffle else range(self.steps):
                yield unpack_batch(self.source[int(i)])
            if hasattr(self.source, "on_epoch_end"):
                self.source.on_epoch_end()
            return
        count = 0
        while self.steps is None or count < self.steps:
            try:
                batch = next(self.iterator)
            except StopIteration:
                return
            count += 1
            yield unpack_batch(batch)


def standardize_sample_weights(model, ys: list, sample_weight=None, class_weight=None) -> list | None:
    """One weight array (or None) per output from Keras's ``sample_weight`` (an array for every output, a
    list or a dict by output name) or ``class_weight`` (``{class: weight}``, one output only)."""
    names = model.output_names
    if sample_weight is not None and class_weight is not None:
        raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")
    if class_weight is not None:
        if not isinstance(class_weight, dict):
            raise ValueError("`class_weight` must be a dict {class index: weight}, got "
                             f"{type(class_weight).__name__}")
        if len(names) != 1:
            raise ValueError("`class_weight` is only supported for Models with a single output.")
        y = ys[0]
        if y is None:
            raise ValueError("`class_weight` needs targets y")
        labels = np.asarray(y)
        if labels.ndim > 1:
            labels = np.argmax(labels, axis=-1) if labels.shape[-1] != 1 else np.squeeze(labels, axis=-1)
        labels = np.round(labels).astype("int32")
        return [np.asarray([class_weight.get(int(c), 1.0) for c in labels.reshape(-1)], dtype=np.float32)
                .reshape(labels.shape)]
    if sample_weight is None:
        return None
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in names]
        if unknown:
            raise ValueError(f"sample_weight dict keys {unknown} are not model outputs; the outputs are {names}")
        sws = [sample_weight.get(k) for k in names]
    elif isinstance(sample_weight, (list, tuple)) and len(names) > 1:
        if len(sample_weight) != len(names):
            raise ValueError(f"the model has {len(names)} outputs {names}, got {len(sample_weight)} sample_weight "
                             "arrays")
        sws = list(sample_weight)
    else:
        sws = [sample_weight] * len(names)  # one array weights every output, as in Keras
    out = [None if w is None else np.asarray(w, dtype=np.float32) for w in sws]
    for name, w, y in zip(names, out, ys):
        if w is not None and (w.ndim == 0 or (y is not None and w.shape[0] != np.shape(y)[0])):
            raise ValueError(f"sample_weight for output {name!r} must have one entry per sample "
                             f"({np.shape(y)[0] if y is not None else '?'}), got shape {w.shape}")
    return out


def _prepare(model, x, y) -> tuple[dict, list, int]:
    trainer = _trainer(model)
    if hasattr(model, "_ensure_built"):
        model._ensure_built(x)
    trainer.configure()
    xs = standardize_x(model, x)
    ys = standardize_y(model, y)
    arrays = list(xs.values()) + [v for v in ys if v is not None]
    return xs, ys, _num_samples(arrays, "x and y")


def _trainer(model) -> Trainer:
    trainer = getattr(model, "_graphc_trainer", None)
    if trainer is None:
        raise RuntimeError("You must call `compile()` before using the model.")
    return trainer


def _verbose(verbose) -> int:
    return 1 if verbose == "auto" else int(verbose)


# ---------------------------------------------------------------------------- the API
def compile_model(model, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, **kwargs) -> Trainer:
    trainer = Trainer(model, optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs)
    model._graphc_trainer = trainer
    model.optimizer = trainer.optimizer
    model.loss = loss
    model.compiled = True
    model.stop_training = False
    return trainer


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1,
        distribution=None):
    """Keras's ``Model.fit`` on arrays, Python generators or PyDataset-like objects (losses weighted by
    ``sample_weight`` or ``class_weight``); returns the History. ``distribution``: a
    :class:`graphc.distribute.DataParallel` (``batch_size`` is then per process, and each process takes
    its share of every global batch, a generator's batches included)."""
    source = None
    if is_batch_source(x):
        for arg, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(f"`{arg}` argument is not supported when using a generator or PyDataset as input; "
                                 "yield it with the batches")
        if validation_split:
            raise ValueError("`validation_split` is only supported for arrays, not generators or PyDatasets")
        source = BatchSource(x, steps_per_epoch, "steps_per_epoch", shuffle=bool(shuffle))
    elif steps_per_epoch is not None:
        raise ValueError("fit(steps_per_epoch=...) is supported for generators and PyDatasets; with arrays, "
                         "batch_size sets the steps")
    trainer = _trainer(model)
    if source is None:
        xs, ys, n = _prepare(model, x, y)
        sws = standardize_sample_weights(model, ys, sample_weight, class_weight)
    val = None
    if validation_data is not None and is_batch_source(validation_data):
        val = BatchSource(validation_data, validation_steps, "validation_steps")
    elif validation_steps is not None:
        raise ValueError("fit(validation_steps=...) is supported for generator or PyDataset validation data")
    elif validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val); got "
                             f"{type(validation_data).__name__}")
        vx, vy, vn = _prepare(model, validation_data[0], validation_data[1])
        vsw = validation_data[2] if len(validation_data) == 3 else None
        val = (vx, vy, standardize_sample_weights(model, vy, vsw))
    elif validation_split and source is None:
        if not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        split = int(math.floor(n * (1.0 - validation_split)))
        if split == 0 or split == n:
            raise ValueError(f"Training data contains {n} samples, which is not sufficient to split it into a "
                             f"validation and training set as specified by `validation_split={validation_split}`.")
        val = (*_take(xs, ys, slice(split, None)), _take_weights(sws, slice(split, None)))
        xs, ys = _take(xs, ys, slice(0, split))
        sws = _take_weights(sws, slice(0, split))
        n = split
    batch_size = int(batch_size or 32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if distribution is not None:
        distribution.begin_fit(model)
        callbacks, verbose = distribution.fit_callbacks(callbacks, verbose)
    try:
        if source is None:
            global_batch = batch_size * (1 if distribution is None else distribution.world_size)
            steps = max(1, math.ceil(n / global_batch))

            def epoch_batches():
                order = np.random.permutation(n) if shuffle else np.arange(n)
                for step in range(steps):
                    index = order[step * global_batch:(step + 1) * global_batch]
                    if distribution is not None and (index := distribution.shard(index)) is None:
                        continue
                    yield (*_take(xs, ys, index), _take_weights(sws, index))
        else:
            steps = source.steps

            def epoch_batches():
                for bx, by, bsw in source.batches():
                    bxs, bys, bn = _prepare(model, bx, by)
                    bsws = standardize_sample_weights(model, bys, bsw, class_weight)
                    if distribution is not None:
                        if (index := distribution.shard(np.arange(bn))) is None:
                            continue
                        bxs, bys, bsws = (*_take(bxs, bys, index), _take_weights(bsws, index))
                    yield bxs, bys, bsws
        verbose = _verbose(verbose)
        cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
                           epochs=epochs, steps=steps)
        model.stop_training = False
        cbs.on_train_begin()
        training_logs: dict[str, Any] = {}
        for epoch in range(initial_epoch, epochs):
            trainer.reset_metrics()
            cbs.on_epoch_begin(epoch)
            logs: dict[str, float] = {}
            for step, (bx, by, bsw) in enumerate(epoch_batches()):
                cbs.on_train_batch_begin(step)
                logs = trainer.run_batch(bx, by, training=True, sample_weights=bsw, distribution=distribution)
                cbs.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(trainer.results())
            if val is not None and (epoch + 1) % validation_freq == 0:
                if isinstance(val, BatchSource):
                    val_logs = _evaluate_batches(model, val, cbs, 0)
                else:
                    val_logs = _evaluate(model, val[0], val[1], validation_batch_size or batch_size, cbs, 0, val[2])
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        cbs.on_train_end(logs=training_logs)
        return model.history
    finally:
        if distribution is not None:
            distribution.end_fit(model)


def _evaluate(model, xs: dict, ys: list, batch_size: int, callbacks: CallbackList | None, verbose: int,
              sws: list | None = None) -> dict:
    trainer = _trainer(model)
    n = _num_samples(list(xs.values()) + [v for v in ys if v is not None], "x and y")
    steps = max(1, math.ceil(n / batch_size))
    cbs = callbacks if callbacks is not None else CallbackList(None, add_progbar=verbose != 0, model=model,
                                                               verbose=verbose, epochs=1, steps=steps)
    saved = {m: m.get_totals() for m in trainer.all_metrics()} if trainer.specs is not None else {}
    trainer.reset_metrics()
    cbs.on_test_begin()
    logs: dict[str, float] = {}
    for step in range(steps):
        index = slice(step * batch_size, (step + 1) * batch_size)
        bx, by = _take(xs, ys, index)
        cbs.on_test_batch_begin(step)
        logs = trainer.run_batch(bx, by, training=False, sample_weights=_take_weights(sws, index))
        cbs.on_test_batch_end(step, logs)
    logs = trainer.results()
    cbs.on_test_end(logs)
    for m, totals in saved.items():
        m.set_totals(totals)
    return logs


def _evaluate_batches(model, source: BatchSource, callbacks: CallbackList | None, verbose: int) -> dict:
    """``_evaluate`` over the batches of a generator or PyDataset-like object."""
    trainer = _trainer(model)
    cbs = callbacks if callbacks is not None else CallbackList(None, add_progbar=verbose != 0, model=model,
                                                               verbose=verbose, epochs=1, steps=source.steps)
    saved = {m: m.get_totals() for m in trainer.all_metrics()} if trainer.specs is not None else {}
    trainer.reset_metrics()
    cbs.on_test_begin()
    for step, (bx, by, bsw) in enumerate(source.batches()):
        xs, ys, _ = _prepare(model, bx, by)
        cbs.on_test_batch_begin(step)
        logs = trainer.run_batch(xs, ys, training=False, sample_weights=standardize_sample_weights(model, ys, bsw))
        cbs.on_test_batch_end(step, logs)
    logs = trainer.results()
    cbs.on_test_end(logs)
    for m, totals in saved.items():
        m.set_totals(totals)
    return logs


def _flatten_in_order(trainer: Trainer, logs: dict[str, float]):
    names = trainer.metric_names()
    out = [logs[k] for k in names if k in logs]
    out += [logs[k] for k in sorted(logs) if k not in names]
    return out[0] if len(out) == 1 else out


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
             callbacks=None, return_dict=False, **kwargs):
    """Keras's ``Model.evaluate``: the loss (a float) or [loss, metrics...] (or a dict)."""
    if is_batch_source(x):
        if y is not None or sample_weight is not None:
            raise ValueError("`y` and `sample_weight` arguments are not supported when using a generator or "
                             "PyDataset as input; yield them with the batches")
        source, verbose = BatchSource(x, steps, "steps"), _verbose(verbose)
        cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=1,
                           steps=source.steps)
        logs = _evaluate_batches(model, source, cbs, verbose)
        return logs if return_dict else _flatten_in_order(_trainer(model), logs)
    xs, ys, n = _prepare(model, x, y)
    sws = standardize_sample_weights(model, ys, sample_weight)
    batch_size = int(batch_size or 32)
    if steps is not None:  # the first `steps` batches, as Keras's epoch iterator over arrays
        if int(steps) < 1:
            raise ValueError(f"evaluate(steps=...) must be a positive integer, got {steps}")
        index = slice(0, int(steps) * batch_size)
        xs, ys, sws = (*_take(xs, ys, index), _take_weights(sws, index))
        n = min(n, int(steps) * batch_size)
    verbose = _verbose(verbose)
    steps_n = max(1, math.ceil(n / batch_size))
    cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=1, steps=steps_n)
    logs = _evaluate(model, xs, ys, batch_size, cbs, verbose, sws)
    if return_dict:
        return logs
    return _flatten_in_order(_trainer(model), logs)


def _on_batch(model, x, y, training: bool, return_dict: bool, sample_weight=None, class_weight=None):
    xs, ys, _ = _prepare(model, x, y)
    sws = standardize_sample_weights(model, ys, sample_weight, class_weight)
    trainer = _trainer(model)
    if trainer.specs is None:
        trainer._build_specs(ys)
    trainer.reset_metrics()
    logs = trainer.run_batch(xs, ys, training=training, sample_weights=sws)
    if return_dict:
        return logs
    return _flatten_in_order(trainer, logs)


def train_on_batch(model, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
    """One optimizer step on one batch; returns the loss (and metrics) on that batch."""
    return _on_batch(model, x, y, True, return_dict, sample_weight, class_weight)


def test_on_batch(model, x, y=None, sample_weight=None, return_dict=False):
    """The loss (and metrics) on one batch, without training."""
    return _on_batch(model, x, y, False, return_dict, sample_weight)

