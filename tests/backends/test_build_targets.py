"""graphc.build: every target predicts what the reference interpreter predicts."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers


def small_model():
    a = Input(shape=(None, 7), name="seq")
    b = Input(shape=(3,), name="side")
    x = layers.LSTM(5)(a)
    x = layers.concatenate([x, b])
    out = layers.Dense(4, activation="softmax", name="probs")(x)
    aux = layers.Dense(1, name="aux")(x)
    return Model([a, b], {"probs": out, "aux": aux})


def test_onnx_target_matches_reference_and_picks_up_new_weights(rng):
    model = small_model()
    x = {"seq": rng.normal(size=(3, 5, 7)).astype(np.float32), "side": rng.normal(size=(3, 3)).astype(np.float32)}
    ref = graphc.build(model, target="reference", level=0)
    onnx_cm = graphc.build(model, target="onnx", threads=1)
    assert onnx_cm.onnx_model.graph.output[0].name in ("probs", "aux")
    for cm_out, ref_out in [(onnx_cm.predict(x), ref.predict(x))]:
        assert set(cm_out) == {"probs", "aux"}
        for k in cm_out:
            np.testing.assert_allclose(cm_out[k], ref_out[k], rtol=1e-4, atol=1e-5)
    model.set_weights([w + 0.1 for w in model.get_weights()])
    np.testing.assert_allclose(onnx_cm.predict(x)["aux"], ref.predict(x)["aux"], rtol=1e-4, atol=1e-5)


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        graphc.build(small_model(), target="tpu")
