"""Weights files are read without reading any HDF5 attribute value: in a corrupt file, a string
attribute (Keras's ``name`` on every ``vars`` group; strings live in HDF5's global heap) can send
libhdf5 into an endless loop. The names are written afresh when graphc saves."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from graphc import models
from tests.saving.helpers import read_members

pytestmark = pytest.mark.keras


@pytest.fixture
def keras_file_with_optimizer_state(keras, tmp_path):
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(4, activation="relu")(inp)))
    model.compile(optimizer=keras.optimizers.Adam(name="my_adam"), loss="mse")
    model.fit(np.ones((4, 3), "float32"), np.ones((4, 2), "float32"), verbose=0)
    model.save(tmp_path / "k.keras")
    return tmp_path / "k.keras"


def test_loading_reads_no_attribute_value(keras_file_with_optimizer_state, monkeypatch, tmp_path):
    def refuse(self, name):
        raise AssertionError(f"attribute {name!r} was read")

    with monkeypatch.context() as patch:
        patch.setattr(h5py.AttributeManager, "__getitem__", refuse)
        model = models.load_model(keras_file_with_optimizer_state)
    model.save(tmp_path / "again.keras")
    with h5py.File(io.BytesIO(read_members(tmp_path / "again.keras")["model.weights.h5"]), "r") as f:
        assert f["optimizer/vars"].attrs["name"] == "my_adam"
        assert len(f["optimizer/vars"]) > 0
        names = {}
        f.visititems(lambda p, o: names.__setitem__(p, o.attrs["name"]) if p.endswith("vars") else None)
    assert all(isinstance(n, str) and n for n in names.values()), names


def test_a_dataset_marked_with_a_dtype_is_refused_unread(keras_file_with_optimizer_state, monkeypatch, tmp_path):
    from tests.saving.helpers import edit_weights

    path = keras_file_with_optimizer_state
    edit_weights(path, lambda f: f[sorted(k for k in _datasets(f) if k.startswith("layers/"))[0]].attrs.create(
        "dtype", "bfloat16"))
    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", lambda self, name: pytest.fail(f"read {name!r}"))
    with pytest.raises(Exception, match="bfloat16"):
        models.load_model(path)


def _datasets(f) -> list[str]:
    out: list[str] = []
    f.visititems(lambda p, o: out.append(p) if isinstance(o, h5py.Dataset) else None)
    return out
