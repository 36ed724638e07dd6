"""Attention, AdditiveAttention and MultiHeadAttention against Keras 3: configs, weights (names,
shapes, order, ``.keras`` paths), predictions through the reference, ONNX and native targets and
``.keras`` files, masks (explicit, causal, sliding window, rows with every key masked), returned
scores, dropout in training, gradients against finite differences, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm.kernels.random import uniform_reference
from graphc.ops.registry import get
from tests.frontend.layer_gradcheck import check_model_gradients
from tests.keras_parity import check_keras_file, check_predict


def _normal(*shapes):
    def data(rng, n):
        out = [rng.standard_normal((n,) + s).astype("float32") for s in shapes]
        return out if len(out) > 1 else out[0]

    return data


def _with_mask(data, mask_shape, *, empty_row: bool = True):
    """``data``'s inputs and a 0/1 float mask (one query row with every key masked)."""
    def with_mask(rng, n):
        x = data(rng, n)
        mask = (rng.random((n,) + mask_shape) < 0.6).astype("float32")
        if empty_row:
            mask[0, ..., 1, :] = 0.0
        return (x if isinstance(x, list) else [x]) + [mask]

    return with_mask


# ---------------------------------------------------------------------------- MultiHeadAttention
def _mha(q_shape, v_shape=None, k_shape=None, mask_shape=None, call=None, **options):
    """query, value (default: the query) and optionally key and attention-mask inputs."""
    def build(K):
        q = K.Input(q_shape)
        inputs = [q]
        v = q
        if v_shape is not None:
            v = K.Input(v_shape)
            inputs.append(v)
        kwargs = dict(call or {})
        if k_shape is not None:
            kwargs["key"] = K.Input(k_shape)
            inputs.append(kwargs["key"])
        if mask_shape is not None:
            kwargs["attention_mask"] = K.Input(mask_shape)
            inputs.append(kwargs["attention_mask"])
        out = K.layers.MultiHeadAttention(**options)(q, v, **kwargs)
        return K.Model(inputs, list(out) if isinstance(out, tuple) else out)

    return build


MHA_CASES = {
    # self-attention with a padding-style mask, one query row fully masked (Keras's fused path)
    "self_masked": (_mha((7, 5), mask_shape=(7, 7), num_heads=3, key_dim=2), _with_mask(_normal((7, 5)), (7, 7))),
    # cross-attention: value and key differ, key of another width, values of another size
    "cross_key": (_mha((5, 6), (7, 3), (7, 4), num_heads=2, key_dim=3, value_dim=5),
                  _normal((5, 6), (7, 3), (7, 4))),
    "output_shape": (_mha((3, 4), (5, 2), num_heads=1, key_dim=7, output_shape=(3, 2), use_bias=False),
                     _normal((3, 4), (5, 2))),
    # the explicit path (dropout > 0 at inference): masked probabilities zeroed, empty rows give zeros
    "dropout_masked": (_mha((7, 5), (3, 5), mask_shape=(7, 3), num_heads=2, key_dim=3, dropout=0.3),
                       _with_mask(_normal((7, 5), (3, 5)), (7, 3))),
    "scores": (_mha((5, 4), (7, 4), mask_shape=(5, 7), call={"return_attention_scores": True}, num_heads=3,
                    key_dim=2), _with_mask(_normal((5, 4), (7, 4)), (5, 7))),
    "causal": (_mha((7, 5), call={"use_causal_mask": True}, num_heads=2, key_dim=3), _normal((7, 5))),
    "causal_masked_scores": (_mha((5, 3), mask_shape=(1, 5), call={"use_causal_mask": True,
                                                                   "return_attention_scores": True},
                                  num_heads=1, key_dim=3), _with_mask(_normal((5, 3)), (1, 5), empty_row=False)),
    "sliding_window": (_mha((7, 4), num_heads=2, key_dim=2, sliding_window=2), _normal((7, 4))),
    "sliding_causal": (_mha((7, 4), call={"use_causal_mask": True}, num_heads=2, key_dim=2, sliding_window=3),
                       _normal((7, 4))),
    # attention over axis 2 of 4-D inputs (axis 1 a batch dim), and over axes 1 and 2 together
    "axes_2": (_mha((3, 5, 4), num_heads=2, key_dim=3, attention_axes=(2,)), _normal((3, 5, 4))),
    "axes_12": (_mha((3, 5, 4), (3, 2, 6), num_heads=2, key_dim=3, attention_axes=(1, 2)),
                _normal((3, 5, 4), (3, 2, 6))),
    "axes_12_scores": (_mha((3, 5, 4), call={"return_attention_scores": True}, num_heads=1, key_dim=2,
                            attention_axes=(1, 2)), _normal((3, 5, 4))),
}


@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_multi_head_attention_equals_keras(keras, rng, case):
    build, data = MHA_CASES[case]
    model, kmodel, _ = check_predict(keras, build, data, rng)
    assert [w.path for w in model.weights] == [w.path for w in kmodel.weights]


def _padded_ids(*shapes, vocab=11):
    """Token ids padded with 0 at the end (a row with a single token included)."""
    def data(rng, n):
        out = []
        for (t,) in shapes:
            ids = rng.integers(1, vocab, size=(n, t))
            lengths = rng.integers(1, t + 1, size=n)
            lengths[0] = 1
            ids[np.arange(t)[None, :] >= lengths[:, None]] = 0
            out.append(ids.astype("int32"))
        return out

    return data


def _implicit_masks(K):
    """Masks from Embedding(mask_zero=True): self-attention (query and value masks), then
    cross-attention with dropout (the explicit path) on another masked sequence as the value,
    a residual Add carrying the query's mask and a masked average."""
    ids, other = K.Input((7,), dtype="int32"), K.Input((5,), dtype="int32")
    x = K.layers.Embedding(11, 6, mask_zero=True)(ids)
    y = K.layers.Embedding(11, 6, mask_zero=True)(other)
    a = K.layers.MultiHeadAttention(2, 3)(x, x)
    c = K.layers.MultiHeadAttention(3, 2, dropout=0.2)(a, y, key=y)
    h = K.layers.GlobalAveragePooling1D()(K.layers.Add()([a, c]))
    return K.Model([ids, other], h)


@pytest.mark.keras
def test_multi_head_attention_takes_the_masks_of_its_tensors(keras, rng):
    _, _, errors = check_predict(keras, _implicit_masks, _padded_ids((7,), (5,)), rng)
    assert set(errors) == {"reference", "onnx", "native"}


@pytest.mark.keras
def test_implicit_masks_keras_files(keras, rng, tmp_path):
    check_keras_file(keras, _implicit_masks, _padded_ids((7,), (5,)), rng, tmp_path)


def test_multi_head_attention_output_keeps_the_query_mask():
    ids = Input((7,), dtype="int32")
    x = layers.Embedding(11, 6, mask_zero=True)(ids)
    out = layers.MultiHeadAttention(2, 3)(x, x)
    assert out._keras_mask is not None and out._keras_mask.shape == (None, 7)
    with pytest.raises(ValueError, match="explicit query_mask= is not supported"):
        layers.MultiHeadAttention(2, 3)(x, x, query_mask=Input((7,), dtype="bool"))


@pytest.mark.keras
@pytest.mark.parametrize("case", ["self_masked", "cross_key", "axes_12_scores", "causal"])
def test_multi_head_attention_keras_files(keras, rng, tmp_path, case):
    build, data = MHA_CASES[case]
    check_keras_file(keras, build, data, rng, tmp_path)


@pytest.mark.keras
def test_multi_head_attention_weights_file_paths_equal_keras(keras, tmp_path):
    import h5py

    build, _ = MHA_CASES["cross_key"]
    model, kmodel = build(graphc), build(keras)
    model.save_weights(tmp_path / "g.weights.h5")
    kmodel.save_weights(tmp_path / "k.weights.h5")

    def datasets(path):
        names = []
        with h5py.File(path) as f:
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return sorted(names)

    assert datasets(tmp_path / "g.weights.h5") == datasets(tmp_path / "k.weights.h5")


@pytest.mark.keras
@pytest.mark.parametrize("options", [
    {"num_heads": 2, "key_dim": 3},
    {"num_heads": 4, "key_dim": 5, "value_dim": 3, "dropout": 0.25, "use_bias": False, "output_shape": (2, 3),
     "attention_axes": (1, 2), "kernel_initializer": "he_uniform", "bias_initializer": "ones", "seed": 7},
    {"num_heads": 1, "key_dim": 2, "sliding_window": 3, "kernel_regularizer": "l2", "bias_constraint": "non_neg"},
])
def test_multi_head_attention_config_equals_keras(keras, options):
    ours = layers.MultiHeadAttention(**options).get_config()
    theirs = keras.layers.MultiHeadAttention(**options).get_config()
    for key in ("name", "dtype", "trainable"):
        ours.pop(key), theirs.pop(key)
    for key in ("kernel_initializer", "bias_initializer"):
        ours[key].pop("module"), theirs[key].pop("module")
        for config in (ours, theirs):
            config[key]["config"] = {k: v for k, v in config[key]["config"].items() if v is not None}
    theirs["output_shape"] = list(theirs["output_shape"]) if theirs["output_shape"] else None
    theirs["attention_axes"] = list(theirs["attention_axes"]) if theirs["attention_axes"] else None
    assert {k: v for k, v in ours.items() if v is not None} == {k: v for k, v in theirs.items() if v is not None}
    again = layers.MultiHeadAttention.from_config(layers.MultiHeadAttention(**options).get_config())
    assert again.get_config()["num_heads"] == options["num_heads"]


def test_multi_head_attention_shapes_and_free_lengths():
    q, v = Input((None, 6)), Input((None, 4))
    out, scores = layers.MultiHeadAttention(3, 2, value_dim=5)(q, v, return_attention_scores=True)
    assert out.shape == (None, None, 6) and scores.shape == (None, 3, None, None)
    model = Model([q, v], [out, scores])
    rng = np.random.default_rng(3)
    x = [rng.standard_normal((2, 7, 6)).astype("float32"), rng.standard_normal((2, 3, 4)).astype("float32")]
    want = graphc.build(model, target="reference").predict(x)
    got = graphc.build(model, target="native").predict(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    assert got[0].shape == (2, 7, 6) and got[1].shape == (2, 3, 7, 3)


@pytest.mark.keras
def test_multi_head_attention_output_shape_and_summary_equal_keras(keras):
    def build(K):
        q, v = K.Input((5, 4)), K.Input((3, 2))
        layer = K.layers.MultiHeadAttention(2, 3, output_shape=(7,))
        return K.Model([q, v], layer(q, v)), layer

    keras.utils.clear_session(free_memory=False)
    (model, layer), (kmodel, klayer) = build(graphc), build(keras)
    assert layer.compute_output_shape((None, 5, 4), (None, 3, 2)) == \
        tuple(klayer.compute_output_shape((None, 5, 4), (None, 3, 2)))
    lines, klines = [], []
    model.summary(print_fn=lines.append)
    kmodel.summary(print_fn=klines.append)
    assert "\n".join(lines) == "\n".join(klines)


def test_multi_head_attention_eager_call_equals_the_model():
    rng = np.random.default_rng(5)
    layer = layers.MultiHeadAttention(2, 3)
    q = rng.standard_normal((2, 5, 4)).astype("float32")
    v = rng.standard_normal((2, 3, 4)).astype("float32")
    eager = layer(q, v)
    qi, vi = Input((5, 4)), Input((3, 4))
    model = Model([qi, vi], layer(qi, vi))
    np.testing.assert_allclose(eager, model.predict([q, v]), rtol=1e-5, atol=1e-6)


def test_multi_head_attention_projections_are_gemms_with_fused_bias():
    """Each projection is one GEMM with its (heads, channels) bias in the epilogue (projections of
    the same tensor share one GEMM after sibling merging: self-attention's three, cross-attention's
    key and value); the scores and the combination are batched matmuls over (batch, heads)."""
    x, y = Input((7, 8)), Input((5, 8))
    for value, gemms in ((x, 2), (y, 3)):  # query, key and value; key and value share y
        graph = graphc.optimize(graphc.lower(Model([x, y], layers.MultiHeadAttention(2, 4)(x, value))), 2)
        counts = graph.op_counts()
        assert counts.get("fused_matmul") == gemms and "add" not in counts and "bias_add" not in counts, counts
        batched = [op for op in graph.ops() if op.type == "matmul"]
        assert len(batched) == 2 and all(graph.type_of(op.inputs[1]).rank == 4 for op in batched), counts


def test_multi_head_attention_gradients_match_finite_differences(rng):
    q, v, m = Input((5, 4)), Input((3, 2)), Input((5, 3))
    out, scores = layers.MultiHeadAttention(2, 3, value_dim=2, dropout=0.1)(
        q, v, attention_mask=m, return_attention_scores=True)
    h = layers.MultiHeadAttention(1, 2, attention_axes=(1,), use_bias=False)(out, out, use_causal_mask=True)
    model = Model([q, v, m], [h, scores])
    mask = (rng.random((2, 5, 3)) < 0.6).astype("float32")
    mask[0, 1] = 0.0
    feeds = {"input_layer": rng.standard_normal((2, 5, 4)), "input_layer_1": rng.standard_normal((2, 3, 2)),
             "input_layer_2": mask}
    checked = check_model_gradients(model, feeds, rng)
    assert len(checked) == 2 + 8 + 4  # the two float inputs, both layers' weights


def test_gradient_check_catches_a_wrong_vjp(rng, monkeypatch):
    """The finite-difference check can fail: a softmax gradient off by a factor is caught."""
    q = Input((3, 4))
    model = Model(q, layers.MultiHeadAttention(1, 2)(q, q))
    vjp = get("softmax").vjp
    monkeypatch.setattr(get("softmax"), "vjp", lambda ctx, dy: [ctx.mul(vjp(ctx, dy)[0], vjp(ctx, dy)[0])])
    with pytest.raises(AssertionError, match="central differences"):
        check_model_gradients(model, {"input_layer": rng.standard_normal((2, 3, 4))}, rng)


def _dropout_mha_model():
    graphc.utils.set_random_seed(9)
    q = Input((5, 6))
    h = layers.MultiHeadAttention(2, 3, dropout=0.4, seed=17)(q, q)
    model = Model(q, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(h)))
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return model


def test_attention_dropout_trains_natively_with_the_references_masks(rng, monkeypatch):
    """Dropout on the attention probabilities is a random mask in the training graph: native
    steps equal the reference's steps given the native masks, and the masks change per step."""
    a, b = _dropout_mha_model(), _dropout_mha_model()
    b.set_weights(a.get_weights())
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=4), 3)
    native = graphc.build(a, target="native", training=True)
    got = [native.train_step(x, y) for _ in range(3)]
    (step,) = [s for s in native._steps.values() if s.training]
    (index,) = [i for i, op in enumerate(step.graph.ops()) if op.type == "random_uniform_like"]
    calls = iter(range(3))
    monkeypatch.setattr(get("random_uniform_like"), "reference",
                        lambda v, *, seed: uniform_reference(seed, index, next(calls), v.shape))
    reference = graphc.build(b, target="reference", training=True)
    want = [reference.train_step(x, y) for _ in range(3)]
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g["loss"], w["loss"], rtol=1e-4, err_msg=f"step {k}")
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=5e-5)
    assert len({float(g["loss"]) for g in got}) == 3
    inference = graphc.lower(a)
    assert "random_uniform_like" not in inference.op_counts()


# ---------------------------------------------------------------------------- Attention / AdditiveAttention
def _attention(cls, q_shape, v_shape, k_shape=None, call=None, **options):
    def build(K):
        inputs = [K.Input(q_shape), K.Input(v_shape)] + ([K.Input(k_shape)] if k_shape else [])
        out = getattr(K.layers, cls)(**options)(inputs, **(call or {}))
        return K.Model(inputs, list(out) if isinstance(out, tuple) else out)

    return build


ATTENTION_CASES = {
    "dot": (_attention("Attention", (5, 4), (7, 3), (7, 4)), _normal((5, 4), (7, 3), (7, 4))),
    "dot_scale_causal": (_attention("Attention", (7, 3), (7, 3), call={"use_causal_mask": True}, use_scale=True),
                         _normal((7, 3), (7, 3))),
    "concat_scores": (_attention("Attention", (3, 5), (7, 5), call={"return_attention_scores": True},
                                 score_mode="concat", use_scale=True), _normal((3, 5), (7, 5))),
    "concat_dropout": (_attention("Attention", (3, 5), (7, 5), score_mode="concat", dropout=0.5),
                       _normal((3, 5), (7, 5))),
    "additive": (_attention("AdditiveAttention", (5, 3), (7, 3)), _normal((5, 3), (7, 3))),
    "additive_plain_causal": (_attention("AdditiveAttention", (7, 3), (7, 2), (7, 3),
                                         call={"use_causal_mask": True, "return_attention_scores": True},
                                         use_scale=False), _normal((7, 3), (7, 2), (7, 3))),
}


@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_layers_equal_keras(keras, rng, case):
    build, data = ATTENTION_CASES[case]
    check_predict(keras, build, data, rng)


@pytest.mark.keras
@pytest.mark.parametrize("case", ["dot_scale_causal", "concat_scores", "additive"])
def test_attention_layers_keras_files(keras, rng, tmp_path, case):
    build, data = ATTENTION_CASES[case]
    check_keras_file(keras, build, data, rng, tmp_path)


@pytest.mark.keras
@pytest.mark.parametrize("cls", ["Attention", "AdditiveAttention"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_masks_equal_keras(keras, rng, cls, causal):
    """query and value masks (a key row with everything masked included), eager calls."""
    options = {"score_mode": "concat", "use_scale": True} if cls == "Attention" else {}
    ours, theirs = getattr(layers, cls)(**options), getattr(keras.layers, cls)(**options)
    q = rng.standard_normal((2, 5, 3)).astype("float32")
    v = rng.standard_normal((2, 5, 3)).astype("float32")
    q_mask = rng.random((2, 5)) < 0.7
    v_mask = rng.random((2, 5)) < 0.6
    v_mask[1] = False
    want = theirs([q, v], mask=[q_mask, v_mask], use_causal_mask=causal, return_attention_scores=True)
    ours.build([q.shape, v.shape])
    ours.set_weights([np.asarray(w) for w in theirs.get_weights()])
    got = ours([q, v], mask=[q_mask, v_mask], use_causal_mask=causal, return_attention_scores=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w.detach() if hasattr(w, "detach") else w), rtol=1e-5, atol=1e-6)


@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda L: L.Attention(),
    lambda L: L.Attention(use_scale=True, score_mode="concat", dropout=0.2, seed=3),
    lambda L: L.AdditiveAttention(use_scale=False, dropout=0.1),
])
def test_attention_configs_equal_keras(keras, make):
    ours, theirs = make(layers).get_config(), make(keras.layers).get_config()
    for key in ("name", "dtype", "trainable"):
        ours.pop(key), theirs.pop(key)
    assert ours == theirs


def test_attention_gradients_match_finite_differences(rng):
    q, v, k = Input((3, 4)), Input((5, 2)), Input((5, 4))
    dot = layers.Attention(use_scale=True)([q, v, k], use_causal_mask=False)
    concat = layers.Attention(use_scale=True, score_mode="concat")([q, v, k])
    additive = layers.AdditiveAttention()([q, v, k], use_causal_mask=False)
    model = Model([q, v, k], [dot, concat, additive])
    feeds = {"input_layer": rng.standard_normal((2, 3, 4)), "input_layer_1": rng.standard_normal((2, 5, 2)),
             "input_layer_2": rng.standard_normal((2, 5, 4))}
    assert len(check_model_gradients(model, feeds, rng)) == 3 + 4


def test_attention_dropout_in_training_drops_probabilities():
    """With value = identity the output is the dropped attention distribution itself."""
    layer = layers.Attention(dropout=0.5, seed=3)
    q = np.random.default_rng(0).standard_normal((4, 30, 3)).astype("float32")
    k = np.random.default_rng(1).standard_normal((4, 40, 3)).astype("float32")
    identity = np.broadcast_to(np.eye(40, dtype="float32"), (4, 40, 40)).copy()
    probs = layer([q, identity, k], training=False)
    dropped = layer([q, identity, k], training=True)
    kept = dropped != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(dropped[kept], 2 * probs[kept], rtol=1e-5)


# ---------------------------------------------------------------------------- refusals
def test_unsupported_options_are_refused_by_name():
    with pytest.raises(ValueError, match="use_gate=True is not supported"):
        layers.MultiHeadAttention(2, 3, use_gate=True)
    with pytest.raises(ValueError, match="flash_attention=True is not supported"):
        layers.MultiHeadAttention(2, 3, flash_attention=True)
    with pytest.raises(ValueError, match="key_dim must be a positive integer"):
        layers.MultiHeadAttention(2, 0)
    with pytest.raises(ValueError, match="score_mode must be 'dot' or 'concat'"):
        layers.Attention(score_mode="additive")


def test_bad_calls_are_named():
    q, v = Input((5, 4)), Input((3, 4))
    with pytest.raises(ValueError, match="value and key must agree"):
        layers.MultiHeadAttention(2, 3)(q, v, key=Input((4, 4)))
    with pytest.raises(ValueError, match="needs a query and a value"):
        layers.MultiHeadAttention(2, 3)(q)
    with pytest.raises(ValueError, match="attention_axes"):
        layers.MultiHeadAttention(2, 3, attention_axes=(2,))(q, v)
    with pytest.raises(ValueError, match="list"):
        layers.Attention()(q)
    with pytest.raises(ValueError, match="same last dimension"):
        layers.Attention()([q, Input((3, 2))])
    free = Input((None, 4))
    with pytest.raises(ValueError, match="use_causal_mask needs static sequence lengths"):
        layers.MultiHeadAttention(2, 3)(free, free, use_causal_mask=True)
