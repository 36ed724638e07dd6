"""Helpers for the saving tests: outputs as lists, archive surgery, weights listings."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np


def as_list(out) -> list[np.ndarray]:
    if isinstance(out, dict):
        return [np.asarray(v) for v in out.values()]
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def assert_same_outputs(got, want, rtol: float = 1e-5, atol: float = 1e-6, what: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{what}: output keys {list(got)} != {list(want)}"
        got, want = [got[k] for k in sorted(want)], [want[k] for k in sorted(want)]
    got, want = as_list(got), as_list(want)
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=what)


def randomize(model, rng) -> None:
    """Distinct, non-trivial weights (positive variances for BatchNormalization)."""
    new = []
    for var in model.weights:
        if "variance" in var.name:
            new.append(rng.uniform(0.5, 1.5, size=var.shape).astype(np.float32))
        else:
            scale = np.float32(1.0 / np.sqrt(max(1, int(np.prod(var.shape[:-1])))))
            new.append(rng.standard_normal(var.shape, dtype=np.float32) * scale)
    model.set_weights(new)


def read_members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def edit_config(path, fn) -> None:
    """Rewrite the config.json of a .keras archive with ``fn(config)``."""
    members = read_members(path)
    config = json.loads(members["config.json"])
    fn(config)
    members["config.json"] = json.dumps(config).encode()
    write_members(path, members)


def edit_weights(path, fn) -> None:
    """Rewrite the model.weights.h5 of a .keras archive with ``fn(h5py.File)``."""
    members = read_members(path)
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "a") as f:
        fn(f)
    members["model.weights.h5"] = buffer.getvalue()
    write_members(path, members)


def weight_listing(data: bytes) -> dict[str, tuple]:
    """Dataset path -> shape of an HDF5 weights file given as bytes."""
    out: dict[str, tuple] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None)
    return out
