"""graphc -> .keras / .weights.h5 -> graphc round trips, and model configs (no Keras needed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers, models
from graphc.saving import layout, model_config
from tests.programs.seed_models import SEED_MODELS
from tests.saving.helpers import assert_same_outputs, randomize, read_members, weight_listing


def _mlp():
    inp = Input(shape=(7,), name="features")
    h = layers.Dense(17, activation="relu", name="hidden")(inp)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    return Model(inp, out, name="mlp")


def _dict_outputs():
    a = Input(shape=(5,), name="a")
    b = Input(shape=(3,), name="b")
    x = layers.concatenate([a, b])
    x = layers.Dense(9, activation="tanh")(x)
    return Model([a, b], {"score": layers.Dense(1, name="score")(x),
                          "probs": layers.Dense(4, activation="softmax", name="probs")(x)})


def _shared():
    shared = layers.Dense(6, activation="relu", name="shared")
    left, right = Input(shape=(4,), name="left"), Input(shape=(4,), name="right")
    x = layers.concatenate([shared(left), shared(right), shared(layers.add([left, right]))])
    return Model([left, right], layers.Dense(2)(x))


def _nested():
    inner_in = Input(shape=(4,))
    inner = Model(inner_in, layers.Dense(3, activation="relu")(inner_in), name="inner")
    stack = Sequential([Input(shape=(3,)), layers.Dense(5), layers.Dense(2)], name="stack")
    x = Input(shape=(4,), name="x")
    first = inner(x)
    second = inner(layers.Dense(4)(x))  # the nested model is called twice
    return Model(x, [stack(first), layers.subtract([first, second])], name="outer")


def _data(model, rng, n):
    arrays = [rng.normal(size=(n,) + t.shape[1:]).astype(np.float32) for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


BUILDERS = {"mlp": _mlp, "dict_outputs": _dict_outputs, "shared": _shared, "nested": _nested}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_save_load_predicts_the_same(name, tmp_path, rng):
    model = BUILDERS[name]()
    randomize(model, rng)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = models.load_model(path)
    assert [lay.name for lay in loaded.layers] == [lay.name for lay in model.layers]
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    for n in (1, 3):
        x = _data(model, rng, n)
        assert_same_outputs(loaded.predict(x), model.predict(x), what=name)
    assert loaded.get_config() == model.get_config()


def test_archive_members_and_metadata(tmp_path):
    model = _mlp()
    model.save(tmp_path / "m.keras")
    members = read_members(tmp_path / "m.keras")
    assert list(members) == ["metadata.json", "config.json", "model.weights.h5"]
    metadata = json.loads(members["metadata.json"])
    assert metadata["keras_version"].startswith("3.") and "date_saved" in metadata
    config = json.loads(members["config.json"])
    assert config["class_name"] == "Functional" and config["config"]["name"] == "mlp"
    assert config["compile_config"] is None


def test_weights_are_stored_under_class_names_not_layer_names(tmp_path):
    model = _nested()
    model.save(tmp_path / "n.keras")
    listing = weight_listing(read_members(tmp_path / "n.keras")["model.weights.h5"])
    assert listing == {
        "layers/dense/vars/0": (4, 4), "layers/dense/vars/1": (4,),  # the Dense called on x
        "layers/functional/layers/dense/vars/0": (4, 3), "layers/functional/layers/dense/vars/1": (3,),
        "layers/sequential/layers/dense/vars/0": (3, 5), "layers/sequential/layers/dense/vars/1": (5,),
        "layers/sequential/layers/dense_1/vars/0": (5, 2), "layers/sequential/layers/dense_1/vars/1": (2,),
    }


def test_shared_layer_is_stored_once(tmp_path):
    model = _shared()
    model.save_weights(tmp_path / "s.weights.h5")
    listing = weight_listing((tmp_path / "s.weights.h5").read_bytes())
    assert sorted(listing) == ["layers/dense/vars/0", "layers/dense/vars/1",
                               "layers/dense_1/vars/0", "layers/dense_1/vars/1"]
    assert listing["layers/dense/vars/0"] == (4, 6)  # "shared", the first Dense in layer order


def test_recurrent_weights_go_to_the_cell_group():
    inp = Input(shape=(None, 3))
    model = Model(inp, layers.GRU(4)(layers.LSTM(5, return_sequences=True)(inp)))
    paths = {g.vars_path: [v.name for v in g.variables] for g in layout.weight_groups(model)}
    assert paths["layers/lstm/cell/vars"] == ["kernel", "recurrent_kernel", "bias"]
    assert paths["layers/gru/cell/vars"] == ["kernel", "recurrent_kernel", "bias"]
    assert paths["layers/lstm/vars"] == [] and paths["vars"] == []


@pytest.mark.parametrize("how", ["input", "input_shape", "predict"])
def test_sequential_round_trip(how, tmp_path, rng):
    if how == "input":
        model = Sequential([Input(shape=(6,)), layers.Dense(4, activation="relu"), layers.Dense(2)])
    elif how == "input_shape":
        model = Sequential([layers.Dense(4, activation="relu", input_shape=(6,)), layers.Dense(2)])
    else:
        model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(2)])
        model.predict(np.zeros((1, 6), np.float32))
    randomize(model, rng)
    model.save(tmp_path / "s.keras")
    loaded = models.load_model(tmp_path / "s.keras")
    assert isinstance(loaded, Sequential)
    assert [lay.name for lay in loaded.layers] == [lay.name for lay in model.layers]
    x = rng.normal(size=(5, 6)).astype(np.float32)
    assert_same_outputs(loaded.predict(x), model.predict(x))
    config = json.loads(read_members(tmp_path / "s.keras")["config.json"])
    assert config["class_name"] == "Sequential"
    assert [entry["class_name"] for entry in config["config"]["layers"]] == ["InputLayer", "Dense", "Dense"]


def test_unbuilt_sequential_cannot_be_saved(tmp_path):
    model = Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        model.save(tmp_path / "s.keras")
    assert not os.listdir(tmp_path)


def test_compile_config_is_carried_through(tmp_path):
    model = _mlp()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["acc"], loss_weights=[1.0])
    model.save(tmp_path / "c.keras")
    config = json.loads(read_members(tmp_path / "c.keras")["config.json"])
    assert config["compile_config"]["optimizer"] == "rmsprop"
    assert config["compile_config"]["loss"] == "categorical_crossentropy"
    assert config["compile_config"]["metrics"] == ["acc"]
    assert config["compile_config"]["loss_weights"] == [1.0]
    loaded = models.load_model(tmp_path / "c.keras")
    assert loaded.compiled
    assert loaded._compile_config["optimizer"] == "rmsprop"
    assert loaded._compile_config["metrics"] == ["acc"]
    assert not models.load_model(tmp_path / "c.keras", compile=False).compiled


def test_optimizer_state_round_trip_in_keras_layout(tmp_path, rng):
    model = _mlp()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(rng.normal(size=(6, 7)).astype(np.float32), np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]],
              batch_size=3, epochs=1, verbose=0)
    model.save(tmp_path / "a.keras")
    listing = weight_listing(read_members(tmp_path / "a.keras")["model.weights.h5"])
    # iterations, learning rate, then momentum and velocity interleaved weight by weight (Keras's Adam)
    assert [listing[f"optimizer/vars/{i}"] for i in range(10)] == \
        [(), (), (7, 17), (7, 17), (17,), (17,), (17, 3), (17, 3), (3,), (3,)]
    loaded = models.load_model(tmp_path / "a.keras")
    assert loaded.optimizer.iterations == model.optimizer.iterations == 2
    for key, slots in model.optimizer.slots.items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(loaded.optimizer.slots[key][slot], value)
    loaded.compile(optimizer="sgd", loss="mse")  # a new optimizer: the old state no longer applies
    loaded.save(tmp_path / "b.keras")
    listing = weight_listing(read_members(tmp_path / "b.keras")["model.weights.h5"])
    assert sorted(p for p in listing if p.startswith("optimizer")) == ["optimizer/vars/0", "optimizer/vars/1"]


def test_state_of_an_optimizer_graphc_lacks_is_carried_through(tmp_path):
    from tests.saving.helpers import edit_config, edit_weights

    model = _mlp()
    model.save(tmp_path / "n.keras")
    adafactor = {"module": "keras.optimizers", "class_name": "Adafactor", "config": {"name": "adafactor"},
                 "registered_name": None}
    compile_config = {"optimizer": adafactor, "loss": "mse"}
    edit_config(tmp_path / "n.keras", lambda c: c.__setitem__("compile_config", compile_config))

    def add_state(f):
        group = f.create_group("optimizer/vars")
        group.attrs["name"] = "adafactor"
        group["0"] = np.array(7, dtype=np.int64)
        group["1"] = np.full((7, 17), 0.5, np.float32)

    edit_weights(tmp_path / "n.keras", add_state)
    with pytest.warns(UserWarning, match=r"n\.keras: the model is loaded uncompiled: .*Adafactor"):
        loaded = models.load_model(tmp_path / "n.keras")
    loaded.save(tmp_path / "again.keras")
    listing = weight_listing(read_members(tmp_path / "again.keras")["model.weights.h5"])
    assert listing["optimizer/vars/0"] == () and listing["optimizer/vars/1"] == (7, 17)
    config = json.loads(read_members(tmp_path / "again.keras")["config.json"])
    assert config["compile_config"]["optimizer"] == adafactor


def test_save_weights_load_weights(tmp_path, rng):
    source = _dict_outputs()
    randomize(source, rng)
    source.save_weights(tmp_path / "w.weights.h5")
    graphc.utils.clear_session(free_memory=False)
    target = _dict_outputs()
    target.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    source.save(tmp_path / "m.keras")
    third = _dict_outputs()
    third.load_weights(tmp_path / "m.keras")
    for a, b in zip(third.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_get_config_from_config_without_files(rng):
    for build in (_mlp, _dict_outputs, _shared, _nested):
        model = build()
        clone = Model.from_config(model.get_config())
        assert clone.get_config() == model.get_config()
        clone.set_weights(model.get_weights())
        x = _data(model, rng, 2)
        assert_same_outputs(clone.predict(x), model.predict(x))
    seq = Sequential([layers.Dense(3, input_shape=(2,))])
    clone = Sequential.from_config(seq.get_config())
    assert isinstance(clone, Sequential) and clone.get_config() == seq.get_config()


def test_functional_config_format():
    config = _nested().get_config()
    assert config["input_layers"] == ["x", 0, 0]
    assert config["output_layers"] == [["stack", 0, 0], ["subtract", 0, 0]]
    by_name = {entry["name"]: entry for entry in config["layers"]}
    subtract_args = by_name["subtract"]["inbound_nodes"][0]["args"][0]
    assert [arg["config"]["keras_history"] for arg in subtract_args] == [["inner", 0, 0], ["inner", 1, 0]]
    assert by_name["inner"]["class_name"] == "Functional" and len(by_name["inner"]["inbound_nodes"]) == 2
    assert by_name["dense_3"]["config"]["dtype"]["class_name"] == "DTypePolicy"
    assert by_name["dense_3"]["build_config"] == {"input_shape": [None, 4]}
    assert model_config(_mlp())["output_layers"] == ["out", 0, 0]
    # Keras numbers the calls of a nested functional model from 1 in output_layers (not in inbound nodes)
    inner = Model.from_config(by_name["inner"]["config"])
    x = Input(shape=(4,))
    outer = Model(x, [inner(x), inner(layers.Dense(4)(x))])
    assert outer.get_config()["output_layers"] == [["inner", 1, 0], ["inner", 2, 0]]
    again = Model.from_config(outer.get_config())
    assert again.get_config() == outer.get_config()


def test_time_distributed_model_round_trip(tmp_path, rng):
    model, data = SEED_MODELS["time_distributed_classifier"][0](graphc)
    randomize(model, rng)
    model.save(tmp_path / "td.keras")
    listing = weight_listing(read_members(tmp_path / "td.keras")["model.weights.h5"])
    assert "layers/time_distributed/layer/layers/dense_2/vars/0" in listing
    loaded = models.load_model(tmp_path / "td.keras")
    x = data(rng, 2)
    assert_same_outputs(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("name", ["siamese_lstm", "conv_bn", "separable_conv", "merge", "two_heads_text"])
def test_seed_models_round_trip(name, tmp_path, rng):
    builder, _, lengths = SEED_MODELS[name]
    model, data = builder(graphc)
    randomize(model, rng)
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    x = data(rng, 2) if lengths is None else data(rng, 2, lengths[0])
    assert_same_outputs(loaded.predict(x), model.predict(x), what=name)


def test_save_replaces_the_file_through_a_temporary(tmp_path, monkeypatch, rng):
    model = _mlp()
    path = tmp_path / "m.keras"
    model.save(path)
    before = path.read_bytes()
    from graphc.saving import keras_format

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_format.os, "replace", fail)
    randomize(model, rng)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary left behind


def test_overwrite_false_and_suffixes(tmp_path):
    model = _mlp()
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save(tmp_path / "m.keras", overwrite=False)
    with pytest.raises(ValueError, match=r"must end in '\.keras'"):
        model.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match=r"must end in '\.weights\.h5'"):
        model.save_weights(tmp_path / "m.h5")
    with pytest.raises(ValueError, match=r"'\.weights\.h5' or '\.keras'"):
        model.load_weights(tmp_path / "m.npz")


def test_layer_from_config_round_trips_including_wrapped_layers():
    for layer in (layers.Dense(3, activation="relu", use_bias=False), layers.Conv2D(4, 3, strides=2, padding="same"),
                  layers.LSTM(5, return_sequences=True), layers.TimeDistributed(layers.Dense(2, name="inner")),
                  layers.BatchNormalization(momentum=0.9), layers.Concatenate(axis=1)):
        clone = type(layer).from_config(layer.get_config())
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    wrapped = layers.TimeDistributed.from_config(layers.TimeDistributed(layers.Dense(2, name="d7")).get_config())
    assert isinstance(wrapped.layer, layers.Dense) and wrapped.layer.name == "d7"


def test_saved_files_keep_the_usual_permissions(tmp_path):
    model = _mlp()
    path = tmp_path / "p.keras"
    model.save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    model.save(path)
    assert path.stat().st_mode & 0o777 == 0o640
