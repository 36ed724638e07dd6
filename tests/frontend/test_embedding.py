"""Embedding: the table lookup for int32/int64 ids of any rank, out-of-range ids, Keras cross-checks."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.reference.interpreter import OpExecutionError
from tests.helpers import assert_close


def test_weight_name_shape_and_initializer():
    emb = layers.Embedding(17, 3)
    emb.build((None, 5))
    (w,) = emb.weights
    assert (w.name, w.shape, w.trainable) == ("embeddings", (17, 3), True)
    assert np.all(np.abs(w.numpy()) <= 0.05) and w.numpy().std() > 0
    assert emb.count_params() == 51
    emb = layers.Embedding(4, 2, embeddings_initializer="ones")
    emb.build((None,))
    assert_close(emb.embeddings.numpy(), np.ones((4, 2)))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("ids_shape", [(1,), (3,), (3, 7), (1, 1), (2, 3, 4)])
def test_eager_lookup_matches_table(dtype, ids_shape, rng):
    emb = layers.Embedding(17, 3)
    ids = rng.integers(0, 17, size=ids_shape).astype(dtype)
    got = emb(ids)
    assert got.shape == (*ids_shape, 3) and got.dtype == np.float32
    assert_close(got, emb.embeddings.numpy()[ids])


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_model_with_free_sequence_length(dtype, rng):
    ids_in = Input(shape=(None,), dtype=dtype, name="ids")
    emb = layers.Embedding(10, 4)
    out = emb(ids_in)
    assert out.shape == (None, None, 4) and out.dtype == "float32"
    model = Model(ids_in, out)
    graph = graphc.lower(model)
    graphc.verify(graph)
    (op,) = [op for op in graph.ops() if op.type == "gather"]
    assert graph.type_of(op.inputs[1]).dtype == dtype
    table = emb.embeddings.numpy()
    for t in (1, 7):
        for feed_dtype in ("int32", "int64"):
            ids = rng.integers(0, 10, size=(3, t)).astype(feed_dtype)
            assert_close(model.predict(ids), table[ids])


def test_float_ids_are_cast_like_keras(rng):
    x = Input(shape=(4,))
    emb = layers.Embedding(6, 2)
    model = Model(x, emb(x))
    ids = np.array([[0.0, 1.7, 5.0, 2.2]], dtype="float32")
    assert_close(model.predict(ids), emb.embeddings.numpy()[ids.astype("int32")])


def test_constructor_weights_and_config():
    table = np.arange(8, dtype="float32").reshape(4, 2)
    emb = layers.Embedding(4, 2, weights=[table], name="words")
    assert_close(emb(np.array([3, 0, 3])), table[[3, 0, 3]])
    config = emb.get_config()
    assert (config["name"], config["input_dim"], config["output_dim"], config["mask_zero"]) == ("words", 4, 2, False)
    assert config["embeddings_initializer"]["class_name"] == "RandomUniform"
    clone = layers.Embedding.from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("bad", [[[1, 10]], [[-1, 2]], [[0, 1], [2, 99]]])
def test_out_of_range_ids_give_a_clear_error(bad):
    ids_in = Input(shape=(None,), dtype="int32")
    model = Model(ids_in, layers.Embedding(10, 3, name="vocab")(ids_in))
    bad_id = [i for row in bad for i in row if not 0 <= i < 10][0]
    with pytest.raises(OpExecutionError) as err:
        model.predict(np.array(bad, dtype="int64"))
    message = str(err.value)
    assert "'vocab'" in message and f"index {bad_id} is out of range for a table of 10 rows" in message
    with pytest.raises(OpExecutionError, match=f"index {bad_id} is out of range"):
        layers.Embedding(10, 3)(np.array(bad, dtype="int32"))


@pytest.mark.parametrize("build,message", [
    (lambda: layers.Embedding(0, 3), "positive input_dim and output_dim, got 0, 3"),
    (lambda: layers.Embedding(5, -1), "positive input_dim and output_dim, got 5, -1"),
    (lambda: layers.Embedding(4, 2, weights=[np.zeros((3, 2))])(np.array([1])), "has shape \\(4, 2\\)"),
])
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("ids_shape", [(3,), (3, 7), (2, 3, 4)])
def test_matches_keras(keras, dtype, ids_shape, rng):
    ours = layers.Embedding(17, 5)
    ours.build(ids_shape)
    ours.set_weights([rng.normal(size=(17, 5)).astype("float32")])
    theirs = keras.layers.Embedding(17, 5)
    theirs.build(ids_shape)
    assert [(w.name, tuple(w.shape)) for w in theirs.weights] == [("embeddings", (17, 5))]
    theirs.set_weights(ours.get_weights())
    ids = rng.integers(0, 17, size=ids_shape).astype(dtype)
    assert_close(ours(ids), keras.ops.convert_to_numpy(theirs(ids)))


@pytest.mark.keras
def test_model_and_config_match_keras(keras, rng):
    def build(lib):
        ids = lib.Input(shape=(None,), dtype="int32")
        return lib.Model(ids, lib.layers.Embedding(output_dim=6, input_dim=11)(ids))

    ours, theirs = build(graphc), build(keras)
    assert ours.count_params() == theirs.count_params() == 66
    theirs.set_weights(ours.get_weights())
    ids = rng.integers(0, 11, size=(4, 9))
    assert_close(ours.predict(ids), theirs.predict(ids, verbose=0))
    ours_cfg = layers.Embedding(11, 6).get_config()
    theirs_cfg = keras.layers.Embedding(11, 6).get_config()
    assert set(ours_cfg) <= set(theirs_cfg)
    for key in ("input_dim", "output_dim", "mask_zero", "trainable"):
        assert ours_cfg[key] == theirs_cfg[key], key
    assert ours_cfg["embeddings_initializer"]["config"] == theirs_cfg["embeddings_initializer"]["config"]
