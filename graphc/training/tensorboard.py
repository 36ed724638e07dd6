"""The TensorBoard callback and a minimal, dependency-free writer of TensorBoard event files.

An event file (``events.out.tfevents.<time>.<host>.<pid>.<n>.v2``) is a TFRecord stream: each
record is ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``
(little-endian; CRC-32C with TensorFlow's mask). Each record's data is an ``Event`` protocol
buffer: the first carries ``file_version = "brain.Event:2"``, the others a ``Summary`` of scalar
(``simple_value``) or histogram (``HistogramProto``) values. The three message types are
declared here, with TensorFlow's field numbers, and encoded by the ``protobuf`` package (a
dependency of onnx). The callback writes, like Keras's, ``train/`` and ``validation/`` runs with
``epoch_<metric>`` scalars per epoch (``batch_<metric>`` with ``update_freq``) and, every
``histogram_freq`` epochs, one histogram per weight. Graphs, images and profiling are not written.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from functools import lru_cache
from itertools import count

import numpy as np

from graphc.training.callbacks import Callback

__all__ = ["EventFileWriter", "TensorBoard", "masked_crc32c", "crc32c", "event_messages"]


# ---------------------------------------------------------------------------- CRC-32C (Castagnoli)
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# ---------------------------------------------------------------------------- the Event protocol buffer
@lru_cache(maxsize=1)
def event_messages() -> dict[str, type]:
    """Message classes Event, Summary, Summary.Value and HistogramProto (TensorFlow's field numbers)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="graphc/tensorboard_event.proto", package="graphc.tb",
                                             syntax="proto3")

    def field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None, oneof=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof
        return f

    hist = fdp.message_type.add(name="HistogramProto")
    for name, number in (("min", 1), ("max", 2), ("num", 3), ("sum", 4), ("sum_squares", 5)):
        field(hist, name, number, F.TYPE_DOUBLE)
    for name, number in (("bucket_limit", 6), ("bucket", 7)):
        field(hist, name, number, F.TYPE_DOUBLE, F.LABEL_REPEATED).options.packed = True
    summary = fdp.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    field(value, "tag", 1, F.TYPE_STRING)
    field(value, "simple_value", 2, F.TYPE_FLOAT, oneof=0)
    field(value, "histo", 5, F.TYPE_MESSAGE, type_name=".graphc.tb.HistogramProto", oneof=0)
    field(summary, "value", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".graphc.tb.Summary.Value")
    event = fdp.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    field(event, "wall_time", 1, F.TYPE_DOUBLE)
    field(event, "step", 2, F.TYPE_INT64)
    field(event, "file_version", 3, F.TYPE_STRING, oneof=0)
    field(event, "summary", 5, F.TYPE_MESSAGE, type_name=".graphc.tb.Summary", oneof=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    names = {"Event": "graphc.tb.Event", "Summary": "graphc.tb.Summary", "Value": "graphc.tb.Summary.Value",
             "HistogramProto": "graphc.tb.HistogramProto"}
    return {k: message_factory.GetMessageClass(pool.FindMessageTypeByName(v)) for k, v in names.items()}


def histogram(values: np.ndarray, buckets: int = 30):
    """A HistogramProto of ``values``: ``buckets`` equal-width buckets between min and max."""
    m = event_messages()
    v = np.asarray(values, dtype=np.float64).ravel()
    h = m["HistogramProto"]()
    if v.size == 0:
        return h
    lo, hi = float(v.min()), float(v.max())
    h.min, h.max, h.num = lo, hi, float(v.size)
    h.sum, h.sum_squares = float(v.sum()), float(np.dot(v, v))
    if lo == hi:
        h.bucket_limit.extend([hi])
        h.bucket.extend([float(v.size)])
    else:
        counts, edges = np.histogram(v, bins=buckets, range=(lo, hi))
        h.bucket_limit.extend(float(e) for e in edges[1:])
        h.bucket.extend(float(c) for c in counts)
    return h


_file_counter = count()


class EventFileWriter:
    """Appends events to one new ``events.out.tfevents...`` file in ``logdir``."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_file_counter)}.v2")
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        m = event_messages()
        self._write(m["Event"](wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._file.write(tfrecord(event.SerializeToString()))

    def scalar(self, tag: str, value: float, step: int) -> None:
        m = event_messages()
        summary = m["Summary"](value=[m["Value"](tag=tag, simple_value=float(value))])
        self._write(m["Event"](wall_time=time.time(), step=int(step), summary=summary))

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        m = event_messages()
        summary = m["Summary"](value=[m["Value"](tag=tag, histo=histogram(values))])
        self._write(m["Event"](wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_events(path: str) -> list:
    """The Event messages of an event file (checking every record's CRCs); for tests and tools."""
    m = event_messages()
    events = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        (crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if len(body) != length or crc != masked_crc32c(body):
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        events.append(m["Event"].FromString(body))
        pos += 16 + length
    return events


class TensorBoard(Callback):
    """Write TensorBoard logs: epoch (and batch) scalars under ``train``/``validation``, weight histograms."""

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq)
        self.write_graph = write_graph
        self.write_images = write_images
        self.write_steps_per_second = write_steps_per_second
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive integer, got {update_freq!r}")
        self.update_freq = update_freq
        self._writers: dict[str, EventFileWriter] = {}
        self._global_batch = 0

    def _writer(self, run: str) -> EventFileWriter:
        if run not in self._writers:
            self._writers[run] = EventFileWriter(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_train_begin(self, logs=None):
        self._global_batch = 0
        self._writer("train")

    def on_train_batch_end(self, batch, logs=None):
        self._global_batch += 1
        if self.update_freq != "epoch" and self._global_batch % self.update_freq == 0:
            w = self._writer("train")
            for k, v in (logs or {}).items():
                w.scalar(f"batch_{k}", v, self._global_batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and "learning_rate" not in train:
            train["learning_rate"] = float(np.float32(optimizer.learning_rate))
        w = self._writer("train")
        for k, v in train.items():
            w.scalar(f"epoch_{k}", v, epoch)
        if val:
            wv = self._writer("validation")
            for k, v in val.items():
                wv.scalar(f"epoch_{k}", v, epoch)
            wv.flush()
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            for var in self.model.weights:
                w.histogram(f"{var.path}/histogram", var.value, epoch)
        w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers.clear()
