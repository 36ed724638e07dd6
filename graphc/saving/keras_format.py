"""The Keras 3 files: ``.keras`` archives and ``.weights.h5`` weight files.

A ``.keras`` file is a zip archive of ``metadata.json`` (versions, date), ``config.json``
(the model's serialization plus its ``compile_config``) and ``model.weights.h5``. The HDF5
file holds one ``<path>/vars`` group per saved object (see :mod:`graphc.saving.layout`), each
with a ``name`` attribute and datasets ``"0"``, ``"1"``... A ``.weights.h5`` file is that HDF5
file alone.

The compile configuration (optimizer, loss, metrics, loss weights) goes to ``Model.compile``
and comes back from the model's ``_compile_config``. The optimizer's variables become the
state of graphc's optimizer (see :mod:`graphc.saving.optimizer_state`) and are written from
it. What graphc cannot use (the state of an optimizer it lacks, a compile configuration it
cannot apply, any other group outside the layers) is kept on the model and written back when
it is saved again with the same compile configuration.

Loading is all-or-nothing: the whole archive and every weight are read and checked (names,
counts, shapes) before any variable is assigned, and every error names the file and the
layer. Saving builds the file in memory, writes it to a temporary file beside the target and
renames it over the target, so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.frontend.layer import Variable
from graphc.frontend.model import Model
from graphc.saving import custom_objects as custom_objects_module
from graphc.saving import functional, layout, optimizer_state
from graphc.saving.errors import KerasFormatError, UnsupportedKerasError

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
KERAS_FORMAT_VERSION = "3.15.1"  # the Keras release whose file layout graphc writes
_INFLATE_FLOOR = 1 << 28  # members above 256 MiB must not inflate more than 100x (decompression bombs)
_MAX_INFLATION = 100
_KERAS_COMPILE_KEYS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics", "run_eagerly",
                       "steps_per_execution", "jit_compile", "auto_scale_loss")
_KERAS_COMPILE_DEFAULTS = {"loss_weights": None, "metrics": None, "weighted_metrics": None, "run_eagerly": False,
                           "steps_per_execution": 1, "jit_compile": False}


def _h5py():
    import h5py

    return h5py


@dataclass
class CarriedState:
    """Weights-file content graphc keeps without using it (optimizer variables, ...).

    ``datasets`` maps dataset paths to arrays, ``groups`` group paths to their attributes;
    ``compile_config`` is the compile configuration these belong to.
    """

    datasets: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, dict] = field(default_factory=dict)
    compile_config: Any = None


# ---------------------------------------------------------------------- writing
def save_model(model: Model, filepath, overwrite: bool = True) -> None:
    """Write ``model`` to a ``.keras`` archive (through a temporary file and a rename)."""
    path = _check_target(filepath, ".keras", "Model.save", overwrite)
    _require_model(model, "save")
    config = functional.serialize_layer(model)
    compile_config = compile_config_to_keras(model)
    config["compile_config"] = compile_config
    metadata = {"keras_version": KERAS_FORMAT_VERSION, "date_saved": datetime.datetime.now().strftime(
        "%Y-%m-%d@%H:%M:%S"), "saved_by": _graphc_version()}
    weights = weights_to_h5(model)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(METADATA_FILE, json.dumps(metadata))
        archive.writestr(CONFIG_FILE, json.dumps(config))
        archive.writestr(WEIGHTS_FILE, weights)
    _atomic_write(path, buffer.getvalue())


def save_weights(model: Model, filepath, overwrite: bool = True) -> None:
    """Write the model's weights to a ``.weights.h5`` file (through a temporary file and a rename)."""
    path = _check_target(filepath, ".weights.h5", "Model.save_weights", overwrite)
    _require_model(model, "save_weights")
    _atomic_write(path, weights_to_h5(model))


def weights_to_h5(model: Model, layer_orders: dict | None = None) -> bytes:
    """The bytes of the HDF5 weights file of ``model``."""
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for group in layout.weight_groups(model, layer_orders):
            g = f.create_group(group.vars_path)
            g.attrs["name"] = group.name
            for i, var in enumerate(group.variables):
                g.create_dataset(str(i), data=var.value)
        live = optimizer_state.keras_variables(model)
        if live is not None:
            name, arrays = live
            g = f.create_group("optimizer/vars")
            g.attrs["name"] = name
            for i, array in enumerate(arrays):
                g.create_dataset(str(i), data=array)
        carried = _carried_for_saving(model)
        if carried is not None:
            for path, attrs in carried.groups.items():
                if live is not None and path.startswith("optimizer"):
                    continue
                g = f.require_group(path)
                for key, value in attrs.items():
                    g.attrs.setdefault(key, value)
            for path, array in carried.datasets.items():
                if path not in f and not (live is not None and path.startswith("optimizer/")):
                    f.create_dataset(path, data=array)
    return buffer.getvalue()


def _carried_for_saving(model: Model) -> CarriedState | None:
    carried = getattr(model, "_keras_carried_state", None)
    if carried is None:
        return None
    if carried.compile_config == compile_config_to_keras(model):
        return carried
    # A different compile configuration: the old optimizer state no longer belongs to the model.
    return CarriedState({p: a for p, a in carried.datasets.items() if not p.startswith("optimizer/")},
                        {p: a for p, a in carried.groups.items() if not p.startswith("optimizer")})


def compile_config_to_keras(model: Model) -> dict | None:
    """The model's ``compile()`` arguments in Keras's ``compile_config`` form (None if not compiled)."""
    config = getattr(model, "_compile_config", None)
    if not config:
        return None
    out = dict(_KERAS_COMPILE_DEFAULTS)
    for key in _KERAS_COMPILE_KEYS:
        if key in config:
            out[key] = _serialize_compile_value(config[key], key)
    return out


def _serialize_compile_value(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _serialize_compile_value(v, key) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialize_compile_value(v, key) for v in value]
    if hasattr(value, "get_config"):
        config = json.loads(json.dumps(value.get_config(), default=_json_default))
        if not type(value).__module__.startswith("graphc."):  # the user's class, named as Keras names it
            module = type(value).__module__
            return {"module": None if module == "__main__" else module, "class_name": type(value).__name__,
                    "config": config,
                    "registered_name": custom_objects_module.get_registered_name(type(value))}
        module = {"optimizer": "keras.optimizers", "loss": "keras.losses"}.get(key, "keras.metrics")
        return {"module": module, "class_name": type(value).__name__, "config": config, "registered_name": None}
    if callable(value) and getattr(value, "__name__", "<lambda>") != "<lambda>":
        if hasattr(value, "_graphc_values"):  # graphc's own loss and metric functions: Keras's names
            return value.__name__
        return {"module": "builtins", "class_name": "function",
                "config": custom_objects_module.get_registered_name(value), "registered_name": "function"}
    raise UnsupportedKerasError(f"cannot write the compile argument {key}={value!r} in the Keras format")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{value!r} is not JSON serializable")


# ---------------------------------------------------------------------- reading
def load_model(filepath, custom_objects: dict | None = None, compile: bool = True) -> Model:
    """A graphc model from a ``.keras`` archive: its architecture, weights and compile configuration."""
    path = os.fspath(filepath)
    config, weights = _read_archive(path)
    try:
        model, loader = functional.deserialize(config, custom_objects)
    except (KerasFormatError, UnsupportedKerasError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except (KeyError, AttributeError, TypeError, IndexError, ValueError, ArithmeticError, RuntimeError,
            MemoryError) as exc:
        # a config.json no well-formed Keras file has (the file is untrusted input): one clean error
        raise KerasFormatError(f"{path}: {CONFIG_FILE} does not describe a model graphc can build "
                               f"({type(exc).__name__}: {exc})") from None
    if not isinstance(model, Model):
        raise KerasFormatError(f"{path}: config.json describes a {type(model).__name__} layer, not a model")
    datasets, groups = read_h5(weights, f"{path} ({WEIGHTS_FILE})")
    assign = _match_weights(model, datasets, f"{path} ({WEIGHTS_FILE})", loader.layer_orders)
    compile_config = config.get("compile_config") if compile else None
    if compile_config is not None and not isinstance(compile_config, dict):
        raise KerasFormatError(f"{path}: compile_config is not a dict")
    for var, value in assign:
        var.assign(value)
    if compile_config:
        kwargs = {k: v for k, v in compile_config.items() if k in _KERAS_COMPILE_KEYS}
        try:
            with custom_objects_module.custom_object_scope(custom_objects):
                model.compile(**kwargs)
        except (TypeError, ValueError, NotImplementedError) as exc:
            # The model still loads for inference; its compile configuration is kept and written back.
            model._compile_config = kwargs
            warnings.warn(f"{path}: the model is loaded uncompiled: graphc cannot apply its compile "
                          f"configuration ({exc})", stacklevel=2)
        else:
            _restore_optimizer(model, datasets, f"{path} ({WEIGHTS_FILE})")
    _carry(model, datasets, groups)
    return model


def _restore_optimizer(model: Model, datasets: dict[str, np.ndarray], where: str) -> None:
    prefix = "optimizer/vars/"
    stored = {p[len(prefix):]: a for p, a in datasets.items() if p.startswith(prefix)}
    if not stored:
        return
    why = optimizer_state.restore(model, stored, where)
    if why is not None:
        warnings.warn(f"{where}: the optimizer state is kept as saved but not used: {why}", stacklevel=3)


def load_weights(model: Model, filepath, skip_mismatch: bool = False) -> None:
    """Load weights saved by ``save_weights`` (``.weights.h5``) or ``save`` (``.keras``) into ``model``."""
    path = os.fspath(filepath)
    _require_model(model, "load_weights")
    if path.endswith(".keras"):
        _, data = _read_archive(path)
        where = f"{path} ({WEIGHTS_FILE})"
    elif path.endswith(".weights.h5"):
        data = _read_file(path)
        where = path
    else:
        raise ValueError(f"load_weights reads a '.weights.h5' or '.keras' file, got {path!r}")
    datasets, groups = read_h5(data, where)
    assign = _match_weights(model, datasets, where, None, skip_mismatch=skip_mismatch)
    for var, value in assign:
        var.assign(value)
    if getattr(model, "compiled", False):
        _restore_optimizer(model, datasets, where)
    _carry(model, datasets, groups)


def read_h5(data: bytes, where: str) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Every dataset (path -> array) of an HDF5 file given as bytes, and the paths of its groups
    (each mapped to ``{}``: no attribute value is read).

    Keras's only attributes are strings (a ``name`` on each ``vars`` group, ``dtype="bfloat16"`` on
    bfloat16 datasets), and in a corrupt file reading variable-length data (strings live in HDF5's
    global heap) can send the HDF5 library into an endless loop. So attributes are only tested for
    presence; the names are written afresh on saving (:func:`_carry`)."""
    h5py = _h5py()
    datasets: dict[str, np.ndarray] = {}
    group_objects: dict[str, Any] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            stack = [("", f)]
            while stack:  # a walk that sees links (h5py's visititems skips them)
                prefix, group = stack.pop()
                group_objects[prefix.rstrip("/")] = group
                for key in group:
                    name = prefix + key
                    link = group.get(key, getlink=True)
                    if not isinstance(link, h5py.HardLink):
                        raise KerasFormatError(f"{where}: {name!r} is a link; weights files hold plain datasets")
                    obj = group[key]
                    if isinstance(obj, h5py.Group):
                        stack.append((name + "/", obj))
                        continue
                    if not isinstance(obj, h5py.Dataset):
                        raise KerasFormatError(f"{where}: {name!r} is a {type(obj).__name__}, not a dataset")
                    if obj.external or obj.is_virtual:
                        raise KerasFormatError(f"{where}: dataset {name!r} refers to data outside the file")
                    if obj.dtype.kind in "OV":  # variable-length or compound: never a Keras weight
                        raise KerasFormatError(f"{where}: dataset {name!r} holds {obj.dtype}, not numbers")
                    if "dtype" in obj.attrs:  # its value is not read (see above)
                        raise UnsupportedKerasError(f"{where}: dataset {name!r} carries a dtype attribute, which "
                                                    "Keras writes on bfloat16 weights: graphc does not support "
                                                    "bfloat16")
                    datasets[name] = np.asarray(obj[()])
            groups: dict[str, dict] = {p: {} for p in group_objects}
    except (KerasFormatError, UnsupportedKerasError):
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, OverflowError) as exc:
        raise KerasFormatError(f"{where}: not a readable HDF5 weights file ({exc})") from None
    return datasets, groups


def _match_weights(model: Model, datasets: dict[str, np.ndarray], where: str, layer_orders: dict | None,
                   skip_mismatch: bool = False) -> list[tuple[Variable, np.ndarray]]:
    """(variable, value) for every weight of ``model``, after checking them all against the file."""
    assign: list[tuple[Variable, np.ndarray]] = []
    for group in layout.weight_groups(model, layer_orders):
        if not group.variables:
            continue
        prefix = group.vars_path + "/"
        stored = {p[len(prefix):]: a for p, a in datasets.items()
                  if p.startswith(prefix) and "/" not in p[len(prefix):]}
        try:
            assign.extend(_match_group(group, stored, where))
        except KerasFormatError as exc:
            if not skip_mismatch:
                raise
            warnings.warn(f"skipping the weights of layer {group.where!r}: {exc}", stacklevel=3)
    claimed = {group.vars_path for group in layout.weight_groups(model, layer_orders)}
    strays = sorted(p for p in datasets if p.startswith("layers/") and p.rsplit("/", 1)[0] not in claimed)
    if strays and not skip_mismatch:
        raise KerasFormatError(f"{where}: the file holds weights the model {model.name!r} has no layer for: "
                               f"{strays[:6]}{' ...' if len(strays) > 6 else ''} (a different architecture?)")
    return assign


def _match_group(group: layout.WeightGroup, stored: dict[str, np.ndarray], where: str):
    expected = [(str(i), var) for i, var in enumerate(group.variables)]
    if not stored:
        raise KerasFormatError(f"{where}: no weights for layer {group.where!r} (expected {len(expected)} at "
                               f"{group.vars_path!r})")
    if sorted(stored) != sorted(k for k, _ in expected):
        raise KerasFormatError(
            f"{where}: layer {group.where!r} has {len(expected)} weights "
            f"({', '.join(v.name + str(v.shape) for _, v in expected)}), the file holds {len(stored)} at "
            f"{group.vars_path!r} ({', '.join(f'{k}{tuple(a.shape)}' for k, a in sorted(stored.items()))})")
    out = []
    for key, var in expected:
        value = stored[key]
        if tuple(value.shape) != tuple(var.shape):
            raise KerasFormatError(f"{where}: weight {var.name!r} of layer {group.where!r} has shape {var.shape}, "
                                   f"the file holds shape {tuple(value.shape)} at {group.vars_path}/{key}")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise KerasFormatError(f"{where}: weight {var.name!r} of layer {group.where!r} is stored as "
                                   f"{value.dtype}, not a number")
        out.append((var, value.astype(var.value.dtype, copy=False)))
    return out


def _carry(model: Model, datasets: dict, groups: dict) -> None:
    """Keep the file content outside the layers (optimizer variables, ...) on the model."""
    extra = {p: a for p, a in datasets.items() if not p.startswith("layers/")}
    compile_config = compile_config_to_keras(model)
    extra_groups = {p: ({"name": _vars_owner_name(model, p, compile_config)} if p.split("/")[-1] == "vars" else {})
                    for p in groups if p and any(d.startswith(p + "/") for d in extra)}
    model._keras_carried_state = CarriedState(extra, extra_groups, compile_config)


def _vars_owner_name(model: Model, path: str, compile_config: Any) -> str:
    """The ``name`` Keras writes on a ``vars`` group: its owner's name (the optimizer's, for
    ``optimizer/vars``; the model's, for the top-level ``vars``)."""
    owner = path[: -len("/vars")] if path.endswith("/vars") else ""
    if owner.startswith("optimizer"):
        optimizer = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
        if isinstance(optimizer, dict):
            return str((optimizer.get("config") or {}).get("name", owner))
        return optimizer if isinstance(optimizer, str) else owner
    return owner.rsplit("/", 1)[-1] if owner else model.name


# ---------------------------------------------------------------------- files
def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path!r}") from None
    except IsADirectoryError:
        raise KerasFormatError(f"{path} is a directory, not a Keras file") from None


def _read_archive(path: str) -> tuple[dict, bytes]:
    """(config dict, weights bytes) of a ``.keras`` archive, with errors naming the file and part."""
    data = _read_file(path)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        legacy = data[:8] == b"\x89HDF\r\n\x1a\n"
        raise KerasFormatError(
            f"{path}: not a Keras 3 '.keras' archive"
            + (" (it is an HDF5 file: the legacy Keras 2 '.h5' model format, which graphc does not read; "
               "load it in Keras and save it as '.keras')" if legacy else
               " (not a zip archive: truncated or corrupted?)"))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if CONFIG_FILE not in names:
                raise KerasFormatError(f"{path}: the archive has no {CONFIG_FILE} (members: {names})")
            if WEIGHTS_FILE not in names:
                if "model.weights.npz" in names:
                    raise UnsupportedKerasError(f"{path}: the weights are stored as npz; graphc reads the h5 format")
                raise KerasFormatError(f"{path}: the archive has no {WEIGHTS_FILE} (members: {names})")
            for info in archive.infolist():
                if info.file_size > _INFLATE_FLOOR and info.file_size > _MAX_INFLATION * max(1, info.compress_size):
                    raise KerasFormatError(f"{path}: archive member {info.filename!r} claims {info.file_size} bytes "
                                           f"from {info.compress_size} stored; refusing to inflate it")
            config_bytes = archive.read(CONFIG_FILE)
            weights = archive.read(WEIGHTS_FILE)
    except (KerasFormatError, UnsupportedKerasError):
        raise  # already a precise message about the file
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, ValueError,
            OverflowError) as exc:
        raise KerasFormatError(f"{path}: corrupted '.keras' archive ({exc})") from None
    try:
        config = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KerasFormatError(f"{path}: {CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise KerasFormatError(f"{path}: {CONFIG_FILE} is not a serialized Keras model")
    return config, weights


def _check_target(filepath, suffix: str, what: str, overwrite: bool) -> str:
    path = os.fspath(filepath)
    if not path.endswith(suffix):
        raise ValueError(f"{what} writes a '{suffix}' file; the path must end in '{suffix}', got {path!r}")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    return path


def _require_model(model, what: str) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"{what} needs a graphc Model, got {type(model).__name__}")
    if not model._nodes:
        raise ValueError(f"model {model.name!r} is not built yet: give it an input shape (an Input, or "
                         "input_shape= on its first layer) or call it on data first")


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        mode = os.stat(path).st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _graphc_version() -> str:
    from graphc import __version__

    return f"graphc {__version__}"


__all__ = ["save_model", "save_weights", "load_model", "load_weights", "weights_to_h5", "read_h5",
           "compile_config_to_keras", "CarriedState", "KERAS_FORMAT_VERSION"]
