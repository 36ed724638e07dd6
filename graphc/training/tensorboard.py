"""The TensorBoard callback: Keras's logs, written by tensorboardX's ``SummaryWriter``.

As Keras's callback does, it writes two runs under ``log_dir``: ``train/`` (``epoch_<metric>``
scalars each epoch, ``batch_<metric>`` every ``update_freq`` batches, the learning rate, weight
histograms and images every ``histogram_freq`` epochs, the graph) and ``validation/`` (the
``val_`` metrics as ``epoch_<metric>``, and ``evaluation_<metric>_vs_iterations`` at the
optimizer's step). The graph is graphc's own IR of the model, given to TensorBoard as a
``GraphDef``: every op is named ``<layer>/<op>`` and every weight ``<layer>/<weight>``, so the
Graphs dashboard shows one collapsible box per layer of the user's model, with the tensor shapes
on the edges (free dimensions such as the batch as ``?``). tensorboardX is an optional dependency
(``pip install graphc[tensorboard]``); the callback says so when it is missing.
"""

from __future__ import annotations

import os
import time

import numpy as np

from graphc.training.callbacks import Callback

__all__ = ["TensorBoard", "graph_def"]

_INSTALL_HINT = "pip install tensorboardX (or pip install 'graphc[tensorboard]')"

# numpy dtype name -> TensorFlow's DataType enum name (what TensorBoard shows on edges and nodes)
_TF_DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16",
              "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
              "uint8": "DT_UINT8", "bool": "DT_BOOL"}


def _tensorboardx():
    try:
        import tensorboardX
    except ImportError as e:
        raise ImportError(f"the TensorBoard callback writes its event files with tensorboardX, which is not "
                          f"installed: {_INSTALL_HINT}") from e
    return tensorboardX


def graph_def(graph):
    """A TensorBoard ``GraphDef`` (tensorboardX's protobuf) of an IR graph, scoped by the user's layers.

    Inputs become ``Placeholder`` nodes, weights ``VariableV2`` nodes (constants that are not
    trainable: ``Const``) and every op a node of its graphc op type; each node carries its dtype and
    ``_output_shapes``, and an op its attributes as text.
    """
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboardX.proto.types_pb2 import DataType
    from tensorboardX.proto.versions_pb2 import VersionDef

    def dtype(ttype) -> int:
        return DataType.Value(_TF_DTYPES.get(ttype.dtype, "DT_INVALID"))

    def shape(ttype) -> TensorShapeProto:
        return TensorShapeProto(dim=[TensorShapeProto.Dim(size=d if isinstance(d, int) else -1)
                                     for d in ttype.shape])

    def shapes_attr(values) -> AttrValue:
        return AttrValue(list=AttrValue.ListValue(shape=[shape(graph.type_of(v)) for v in values]))

    node_of: dict[str, str] = {}  # op id -> node name
    nodes = []
    for name in graph.inputs:
        node_of[name] = name
        t = graph.type_of(name)
        nodes.append(NodeDef(name=name, op="Placeholder",
                             attr={"dtype": AttrValue(type=dtype(t)), "shape": AttrValue(shape=shape(t)),
                                   "_output_shapes": shapes_attr([name])}))
    for name in graph.constants:
        value = graph.values[name]
        t = value.type
        node_of[name] = name
        nodes.append(NodeDef(name=name, op="VariableV2" if value.trainable else "Const",
                             attr={"dtype": AttrValue(type=dtype(t)), "shape": AttrValue(shape=shape(t)),
                                   "_output_shapes": shapes_attr([name])}))

    def source(value: str) -> str:
        v = graph.values[value]
        if v.kind != "op":
            return node_of[value]
        node = node_of[v.producer]
        return node if v.index == 0 else f"{node}:{v.index}"

    for op in graph.ops():
        node_of[op.id] = f"{op.layer}/{op.id}" if op.layer else op.id
        attr = {k: AttrValue(s=repr(v).encode()) for k, v in sorted(op.attrs.items())}
        if op.outputs:
            attr["T"] = AttrValue(type=dtype(graph.type_of(op.outputs[0])))
            attr["_output_shapes"] = shapes_attr(op.outputs)
        nodes.append(NodeDef(name=node_of[op.id], op=op.type, input=[source(v) for v in op.inputs], attr=attr))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


class TensorBoard(Callback):
    """Keras's ``TensorBoard`` callback: scalars, weight histograms and images, and the model's graph."""

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        _tensorboardx()
        if write_images:
            try:
                import PIL  # noqa: F401  (tensorboardX encodes images with Pillow)
            except ImportError as e:
                raise ImportError("TensorBoard(write_images=True) encodes the weight images with Pillow, "
                                  "which is not installed: pip install pillow") from e
        if profile_batch:
            raise ValueError(f"TensorBoard: profile_batch={profile_batch!r} is not supported (graphc has no "
                             "TensorBoard profiler trace; time kernels with gc_options_t.profile instead); "
                             "use profile_batch=0")
        if embeddings_freq or embeddings_metadata is not None:
            raise ValueError("TensorBoard: embeddings_freq and embeddings_metadata (the embedding projector) are "
                             "not supported; leave them at 0 and None")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be a non-negative integer, got {histogram_freq!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int)
                                       or update_freq <= 0):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a positive integer, "
                             f"got {update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = bool(write_graph)
        self.write_images = bool(write_images)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self._writers: dict[str, object] = {}
        self._global_train_batch = 0
        self._batch_start = 0.0
        self._epoch_start = 0.0
        self._epoch_batches = 0

    # ------------------------------------------------------------------ writers
    def _writer(self, run: str):
        """The SummaryWriter of ``train`` or ``validation``, created at its first use (as Keras does)."""
        if run not in self._writers:
            self._writers[run] = _tensorboardx().SummaryWriter(logdir=os.path.join(self.log_dir, run))
        return self._writers[run]

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        writer = self._writer("train")
        if self.write_graph:
            from tensorboardX.proto.event_pb2 import Event

            from graphc.api import lower

            writer.file_writer.add_event(Event(graph_def=graph_def(lower(self.model)).SerializeToString()))
            writer.flush()

    def on_train_end(self, logs=None):
        self._close_writers()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self._epoch_batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._global_train_batch += 1
        self._batch_start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        self._epoch_batches += 1
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq:
            return
        writer = self._writer("train")
        step = self._global_train_batch
        if self.write_steps_per_second:
            writer.add_scalar("batch_steps_per_second", 1.0 / max(time.time() - self._batch_start, 1e-9), step)
        for name, value in (logs or {}).items():
            writer.add_scalar(f"batch_{name}", float(value), step)

    def on_test_end(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if not logs or optimizer is None or not hasattr(optimizer, "iterations"):
            return
        writer = self._writer("validation")
        for name, value in logs.items():
            writer.add_scalar(f"evaluation_{name}_vs_iterations", float(value), int(optimizer.iterations))
        writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            train["learning_rate"] = float(np.float32(optimizer.learning_rate))
        if self.write_steps_per_second:
            train["steps_per_second"] = self._epoch_batches / max(time.time() - self._epoch_start, 1e-9)
        writer = self._writer("train")
        for name, value in train.items():
            writer.add_scalar(f"epoch_{name}", float(value), epoch)
        if val:
            val_writer = self._writer("validation")
            for name, value in val.items():
                val_writer.add_scalar(f"epoch_{name}", float(value), epoch)
            val_writer.flush()
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(writer, epoch)
        writer.flush()

    def _log_weights(self, writer, epoch: int) -> None:
        """One histogram (and with ``write_images`` one image) per weight of each layer, as Keras names them."""
        for layer in self.model.layers:
            for weight in layer.weights:
                name = weight.path.replace(":", "_")
                values = np.asarray(weight.value)
                writer.add_histogram(f"{name}/histogram", values, epoch)
                if self.write_images:
                    image = _weight_image(values)
                    if image is not None:
                        writer.add_images(f"{name}/image", image, epoch, dataformats="NHWC")


def _weight_image(weight: np.ndarray) -> np.ndarray | None:
    """A weight as a batch of one-channel NHWC images, as Keras shapes it (None where Keras draws none).

    A bias is one column, a Dense kernel one image (its longer side across), a 1-D convolution kernel
    one image per output channel; values are drawn as they are, clipped to [0, 1] as TensorBoard does.
    """
    w = np.squeeze(weight)
    if w.ndim == 1:
        w = w.reshape(1, w.shape[0], 1, 1)
    elif w.ndim == 2:
        if w.shape[0] > w.shape[1]:
            w = w.T
        w = w.reshape(1, w.shape[0], w.shape[1], 1)
    elif w.ndim == 3:
        w = np.transpose(w, (2, 0, 1))[..., None]
    if w.ndim != 4 or w.shape[-1] not in (1, 3, 4):
        return None
    return w
