"""Bad Keras files and configs: each error names the file and the layer; nothing is half-loaded."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers, models
from graphc.saving import KerasFormatError, UnsupportedKerasError
from tests.saving.helpers import edit_config, edit_weights, randomize, read_members, write_members


def _model(name="m"):
    inp = Input(shape=(5,), name="x")
    h = layers.Dense(4, activation="relu", name="hidden")(inp)
    return Model(inp, layers.Dense(2, name="head")(h), name=name)


@pytest.fixture
def saved(tmp_path, rng):
    model = _model()
    randomize(model, rng)
    path = tmp_path / "m.keras"
    model.save(path)
    return path


def test_truncated_archive(saved):
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        saved.write_bytes(data[:cut])
        with pytest.raises(KerasFormatError, match=r"m\.keras") as info:
            models.load_model(saved)
        assert "truncated" in str(info.value) or "corrupted" in str(info.value)


def test_not_an_archive_and_missing_file(tmp_path):
    path = tmp_path / "noise.keras"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(KerasFormatError, match=r"noise\.keras: not a Keras 3 '\.keras' archive"):
        models.load_model(path)
    with pytest.raises(FileNotFoundError, match="absent.keras"):
        models.load_model(tmp_path / "absent.keras")


def test_legacy_h5_model_file(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
    with pytest.raises(KerasFormatError, match=r"old\.h5: .*legacy Keras 2 '\.h5' model format"):
        models.load_model(path)


def test_corrupted_member_crc(saved):
    data = bytearray(saved.read_bytes())
    members = read_members(saved)
    start = bytes(data).index(members["model.weights.h5"][:64])
    data[start + 200] ^= 0xFF  # flip a byte inside the stored weights
    saved.write_bytes(bytes(data))
    with pytest.raises(KerasFormatError, match=r"m\.keras: corrupted '\.keras' archive"):
        models.load_model(saved)


def test_missing_members_and_bad_json(saved):
    members = read_members(saved)
    write_members(saved, {k: v for k, v in members.items() if k != "model.weights.h5"})
    with pytest.raises(KerasFormatError, match=r"m\.keras: the archive has no model\.weights\.h5"):
        models.load_model(saved)
    write_members(saved, {k: v for k, v in members.items() if k != "config.json"})
    with pytest.raises(KerasFormatError, match=r"m\.keras: the archive has no config\.json"):
        models.load_model(saved)
    write_members(saved, {**members, "config.json": b'{"class_name": "Functional", "config": '})
    with pytest.raises(KerasFormatError, match=r"m\.keras: config\.json is not valid JSON"):
        models.load_model(saved)
    write_members(saved, {**members, "config.json": b'[1, 2]'})
    with pytest.raises(KerasFormatError, match=r"config\.json is not a serialized Keras model"):
        models.load_model(saved)


def test_truncated_weights_inside_the_archive(saved):
    members = read_members(saved)
    write_members(saved, {**members, "model.weights.h5": members["model.weights.h5"][:300]})
    with pytest.raises(KerasFormatError, match=r"m\.keras \(model\.weights\.h5\): not a readable HDF5"):
        models.load_model(saved)


def test_truncated_weights_file(tmp_path):
    model = _model()
    model.save_weights(tmp_path / "w.weights.h5")
    data = (tmp_path / "w.weights.h5").read_bytes()
    (tmp_path / "w.weights.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(KerasFormatError, match=r"w\.weights\.h5: not a readable HDF5"):
        model.load_weights(tmp_path / "w.weights.h5")


def test_wrong_weight_shape_names_file_layer_and_shapes(saved):
    def reshape(f):
        del f["layers/dense_1/vars/0"]
        f["layers/dense_1/vars/0"] = np.zeros((4, 3), np.float32)

    edit_weights(saved, reshape)
    with pytest.raises(KerasFormatError, match=r"m\.keras \(model\.weights\.h5\): weight 'kernel' of layer "
                                               r"'m/head' has shape \(4, 2\), the file holds shape \(4, 3\)"):
        models.load_model(saved)


def test_wrong_weight_count(saved):
    edit_weights(saved, lambda f: f["layers/dense/vars"].create_dataset("2", data=np.zeros(3, np.float32)))
    with pytest.raises(KerasFormatError, match=r"layer 'm/hidden' has 2 weights \(kernel\(5, 4\), bias\(4,\)\), "
                                               r"the file holds 3"):
        models.load_model(saved)


def test_missing_weight_group(saved):
    edit_weights(saved, lambda f: f.__delitem__("layers/dense"))
    with pytest.raises(KerasFormatError, match=r"no weights for layer 'm/hidden' \(expected 2 at "
                                               r"'layers/dense/vars'\)"):
        models.load_model(saved)


def test_weights_for_layers_the_model_lacks(saved):
    edit_weights(saved, lambda f: f.create_dataset("layers/dense_2/vars/0", data=np.zeros(3, np.float32)))
    with pytest.raises(KerasFormatError, match=r"has no layer for: \['layers/dense_2/vars/0'\]"):
        models.load_model(saved)


def test_links_are_refused(saved):
    edit_weights(saved, lambda f: f.__setitem__("layers/alias", h5py.SoftLink("/layers/dense")))
    with pytest.raises(KerasFormatError, match="'layers/alias' is a link"):
        models.load_model(saved)


def test_non_numeric_weight(saved):
    def to_text(f):
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = np.array([b"a", b"b", b"c", b"d"])

    edit_weights(saved, to_text)
    with pytest.raises(KerasFormatError, match="weight 'bias' of layer 'm/hidden' is stored as"):
        models.load_model(saved)


def test_failed_load_weights_changes_nothing(tmp_path, rng):
    source = _model("source")
    randomize(source, rng)
    path = tmp_path / "w.weights.h5"
    source.save_weights(path)
    with h5py.File(path, "a") as f:  # the first layer is fine, the second is not
        del f["layers/dense_1/vars/1"]
        f["layers/dense_1/vars/1"] = np.zeros(5, np.float32)
    target = _model("target")
    before = target.get_weights()
    with pytest.raises(KerasFormatError, match=r"w\.weights\.h5: weight 'bias' of layer 'target/head'"):
        target.load_weights(path)
    for a, b in zip(target.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="skipping the weights of layer 'target/head'"):
        target.load_weights(path, skip_mismatch=True)
    np.testing.assert_array_equal(target.get_weights()[0], source.get_weights()[0])
    np.testing.assert_array_equal(target.get_weights()[3], before[3])


def test_load_weights_into_a_different_architecture(tmp_path):
    _model().save_weights(tmp_path / "w.weights.h5")
    inp = Input(shape=(5,))
    other = Model(inp, layers.Dense(4)(inp))
    with pytest.raises(KerasFormatError, match=r"has no layer for: \['layers/dense_1/vars/0'"):
        other.load_weights(tmp_path / "w.weights.h5")


def test_unsupported_layer_class_names_class_and_path(tmp_path):
    inner_in = Input(shape=(5,))
    inner = Model(inner_in, layers.Dense(3, name="proj")(inner_in), name="encoder")
    x = Input(shape=(5,))
    path = tmp_path / "u.keras"
    Model(x, inner(x), name="outer").save(path)

    def rename(config):
        inner_config = config["config"]["layers"][1]["config"]
        inner_config["layers"][1]["class_name"] = "FancyDense"

    edit_config(path, rename)
    with pytest.raises(UnsupportedKerasError, match=r"u\.keras: Keras layer class 'FancyDense' \(layer "
                                                    r"'outer/encoder/proj'\) is not supported by graphc"):
        models.load_model(path)


def test_custom_objects_supply_a_class(tmp_path, rng):
    class FancyDense(layers.Dense):
        pass

    model = _model()
    randomize(model, rng)
    path = tmp_path / "c.keras"
    model.save(path)
    edit_config(path, lambda c: c["config"]["layers"][2].__setitem__("class_name", "FancyDense"))
    edit_weights(path, lambda f: f.move("layers/dense_1", "layers/fancy_dense"))  # Keras names groups by class
    loaded = models.load_model(path, custom_objects={"FancyDense": FancyDense})
    assert type(loaded.get_layer("head")) is FancyDense
    x = rng.normal(size=(2, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_unsupported_option_is_named(saved):
    edit_config(saved, lambda c: c["config"]["layers"][1]["config"].__setitem__("lora_alpha", 4.0))
    with pytest.raises(UnsupportedKerasError, match=r"layer 'm/hidden'.*Dense 'hidden': graphc does not implement "
                                                    r"lora_alpha"):
        models.load_model(saved)


def test_neutral_keras_options_are_accepted(saved, rng):
    def keras_style(config):
        dense = config["config"]["layers"][1]["config"]
        dense["quantization_config"] = None
        dense["kernel_regularizer"] = {"module": "keras.regularizers", "class_name": "L2",
                                       "config": {"l2": 0.01}, "registered_name": None}
        dense["kernel_initializer"]["config"].update({"input_axes": None, "output_axes": None})
        dense["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"},
                          "registered_name": None}

    edit_config(saved, keras_style)
    model = models.load_model(saved)
    assert model.get_layer("hidden").dtype == "float32"


def test_broken_graph_configs(saved):
    members = read_members(saved)

    def load_with(fn):
        config = json.loads(members["config.json"])
        fn(config)
        write_members(saved, {**members, "config.json": json.dumps(config).encode()})
        return models.load_model(saved)

    with pytest.raises(KerasFormatError, match="its input comes from unknown layer 'ghost'"):
        load_with(lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"]
                  .__setitem__("keras_history", ["ghost", 0, 0]))
    with pytest.raises(KerasFormatError, match=r"calls of layer\(s\) \['hidden', 'head'\] refer to calls that never"):
        load_with(lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"]
                  .__setitem__("keras_history", ["x", 3, 0]))
    with pytest.raises(KerasFormatError, match="input/output refers to unknown layer 'nowhere'"):
        load_with(lambda c: c["config"].__setitem__("output_layers", ["nowhere", 0, 0]))
    with pytest.raises(KerasFormatError, match="its config has no 'input_layers'"):
        load_with(lambda c: c["config"].pop("input_layers"))
    with pytest.raises(KerasFormatError, match="two layers are named 'hidden'"):
        load_with(lambda c: c["config"]["layers"][2].__setitem__("name", "hidden"))


def test_mask_arguments_are_passed_to_the_call(saved):
    def add_mask(config):
        node = config["config"]["layers"][1]["inbound_nodes"][0]
        node["kwargs"]["mask"] = node["args"][0]

    edit_config(saved, add_mask)
    model = models.load_model(saved)
    node = model.get_layer("hidden")._inbound_nodes[0]
    assert node.call_kwargs["mask"] is model.inputs[0]


def test_config_only_layer_is_not_a_model(saved):
    members = read_members(saved)
    layer_only = json.loads(members["config.json"])["config"]["layers"][1]
    write_members(saved, {**members, "config.json": json.dumps(layer_only).encode()})
    with pytest.raises(KerasFormatError, match="describes a Dense layer, not a model"):
        models.load_model(saved)


def test_npz_weights_are_refused(saved):
    members = read_members(saved)
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(2))
    write_members(saved, {"metadata.json": members["metadata.json"], "config.json": members["config.json"],
                          "model.weights.npz": buffer.getvalue()})
    with pytest.raises(UnsupportedKerasError, match="stored as npz"):
        models.load_model(saved)
    assert zipfile.is_zipfile(saved)


def test_writing_a_custom_layer_class_is_refused(tmp_path):
    class Mine(layers.Dense):
        pass

    inp = Input(shape=(3,))
    model = Model(inp, Mine(2, name="mine")(inp))
    with pytest.raises(UnsupportedKerasError, match="layer 'mine' is a Mine"):
        model.save(tmp_path / "x.keras")
    assert not (tmp_path / "x.keras").exists()
    graphc.utils.clear_session(free_memory=False)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from graphc.saving import keras_format

    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{}")
        archive.writestr("model.weights.h5", b"\0" * 200_000)
    monkeypatch.setattr(keras_format, "_INFLATE_FLOOR", 1000)
    with pytest.raises(KerasFormatError, match=r"bomb\.keras: archive member 'model\.weights\.h5' claims 200000 "
                                               r"bytes from \d+ stored"):
        models.load_model(path)
