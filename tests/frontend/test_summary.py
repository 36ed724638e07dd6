"""``Model.summary()``: the same text as Keras 3 for the same architectures, and its pieces."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from graphc.frontend import summary as sm

# ---------------------------------------------------------------------------------------------
# Architectures written once against a Keras-compatible module K (graphc or keras).


def mlp(K):
    inp = K.Input(shape=(784,), name="img")
    x = K.layers.Dense(64, activation="relu")(inp)
    x = K.layers.Dense(64, activation="relu")(x)
    return K.Model(inp, K.layers.Dense(10)(x), name="mnist_model")


def program01_sequential(K):
    m = K.Sequential()
    m.add(K.layers.Dense(32, activation="relu", input_shape=(64,)))
    m.add(K.layers.Dense(32, activation="relu"))
    m.add(K.layers.Dense(10, activation="softmax"))
    return m


def program01_functional(K):
    inp = K.Input(shape=(64,))
    x = K.layers.Dense(32, activation="relu")(inp)
    x = K.layers.Dense(32, activation="relu")(x)
    return K.Model(inp, K.layers.Dense(10, activation="softmax")(x))


def sequential_with_input(K):
    return K.Sequential([K.Input((3,)), K.layers.Dense(5), K.layers.Dropout(0.5),
                         K.layers.Dense(2, activation="softmax")], name="stack")


def two_inputs_shared(K):
    a = K.Input((32,), name="a")
    b = K.Input((32,), name="b")
    d = K.layers.Dense(4)
    e = K.layers.Dense(3, name="a_very_long_layer_name_that_needs_wrapping_for_sure")
    return K.Model([a, b], [e(d(a)), e(d(b))])


def three_heads(K):
    x = K.Input((4,))
    h = K.layers.Dense(8)(x)
    return K.Model(x, [K.layers.Dense(1, name="age")(h), K.layers.Dense(10, name="income")(h),
                       K.layers.Dense(1, name="gender", activation="sigmoid")(h)])


def nested(K):
    i = K.Input((4,))
    inner = K.Model(i, K.layers.Dense(10)(i))
    a = K.Input((4,))
    y = inner(a)
    z = K.layers.Dense(3, trainable=False)(y)
    return K.Model(a, [y, z])


def nested_two_outputs(K):
    x = K.Input((4,))
    inner = K.Model(x, [K.layers.Dense(2)(x), K.layers.Dense(3)(x)])
    c = K.Input((4,))
    o = inner(c)
    return K.Model(c, [K.layers.Dense(5)(o[0]), o[1]])


def nested_twice(K):
    x = K.Input((6,))
    inner = K.Model(x, K.layers.Dense(6, activation="tanh")(x), name="block")
    c = K.Input((6,))
    return K.Model(c, inner(inner(c)))


def frozen_model(K):
    x = K.Input((5,))
    m = K.Model(x, K.layers.Dense(2)(K.layers.Dense(7)(x)))
    m.trainable = False
    return m


def reshape_stack(K):
    L = K.layers
    x = K.Input((28, 28, 1))
    y = L.Flatten()(x)
    y = L.Dense(14 * 14 * 448 // 64)(y)
    y = L.Reshape((14, 14, 7))(y)
    y = L.Activation("relu")(y)
    return K.Model(x, y)


def embedding_ids(K):
    x = K.Input((None,), dtype="int32", name="ids")
    return K.Model(x, K.layers.Dense(3)(K.layers.Embedding(1000, 64)(x)))


def wide_dense(K):
    x = K.Input((2000,))
    return K.Model(x, K.layers.Dense(1000)(x))


def long_name(K):
    inp = K.Input(shape=(784,), name="img")
    return K.Model(inp, K.layers.Dense(10)(inp), name="a_model_with_a_really_long_name_that_goes_on_"
                   "and_on_and_on_and_on_and_on_and_on_and_on")


def unbuilt_sequential(K):
    return K.Sequential([K.layers.Dense(3), K.layers.Dropout(0.1), K.layers.Flatten()], name="pending")


def partly_built_sequential(K):
    first = K.layers.Dense(3)
    first.build((None, 4))
    return K.Sequential([first, K.layers.Dense(2)])


MODELS = {f.__name__: f for f in [
    unbuilt_sequential, partly_built_sequential,
    mlp, program01_sequential, program01_functional, sequential_with_input, two_inputs_shared,
    three_heads, nested, nested_two_outputs, nested_twice, frozen_model, reshape_stack, embedding_ids,
    wide_dense, long_name]}


def summary_text(K, build, **kwargs) -> str:
    K.utils.clear_session(free_memory=False)
    model = build(K)
    out: list[str] = []
    model.summary(print_fn=out.append, **kwargs)
    assert len(out) == 1
    return out[0]


@pytest.fixture
def columns(monkeypatch):
    """A fixed terminal width, so that Keras and graphc size their tables alike."""
    monkeypatch.setenv("COLUMNS", "200")
    return 200


# ---------------------------------------------------------------------------------------------
# Against Keras.

@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_same_text_as_keras(name, keras, columns):
    build = MODELS[name]
    assert summary_text(graphc, build) == summary_text(keras, build)


@pytest.mark.keras
@pytest.mark.parametrize("options", [{"show_trainable": True, "expand_nested": True}, {"line_length": 70}],
                         ids=["trainable_nested", "narrow"])
@pytest.mark.parametrize("name", ["nested", "two_inputs_shared", "program01_sequential"])
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_same_text_as_keras_with_options(name, options, keras, columns):
    build = MODELS[name]
    assert summary_text(graphc, build, **options) == summary_text(keras, build, **options)


@pytest.mark.keras
@pytest.mark.parametrize("name, cols", [("two_inputs_shared", "44"), ("long_name", "80"), ("nested", "60")])
def test_terminal_width_as_keras(name, cols, keras, monkeypatch):
    """Default width from the terminal; wider tables cropped and long titles wrapped at it."""
    monkeypatch.setenv("COLUMNS", cols)
    build = MODELS[name]
    for options in ({}, {"line_length": 100}):
        assert summary_text(graphc, build, **options) == summary_text(keras, build, **options)


@pytest.mark.keras
@pytest.mark.parametrize("options", [{"positions": [0.2, 0.5, 0.7, 1.0]}, {"positions": [30, 60, 70, 100]},
                                     {"layer_range": ["dense", "a_very"]},
                                     {"layer_range": ["a_very", "dense"], "line_length": 150}])
def test_positions_and_layer_range_as_keras(options, keras, columns):
    assert summary_text(graphc, two_inputs_shared, **options) == summary_text(keras, two_inputs_shared, **options)


@pytest.mark.keras
def test_printed_to_stdout_as_keras(keras, columns, capsys):
    for K in (keras, graphc):
        K.utils.clear_session(free_memory=False)
        two_inputs_shared(K).summary()
    keras_text, graphc_text = capsys.readouterr().out.split('Model: "functional"')[1:]
    assert graphc_text == keras_text


SEED_ARCHITECTURES = ["qa_two_inputs", "inception", "residual_projection", "siamese_lstm", "auxiliary_output",
                      "separable_conv", "conv_bn", "merge", "conv1d_text", "time_distributed_classifier"]


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
@pytest.mark.parametrize("name", SEED_ARCHITECTURES)
def test_seed_architectures_same_text_as_keras(name, keras, columns):
    """Conv, pooling, recurrent, merge, normalization and wrapper layers in the seeds' models."""
    from tests.programs.seed_models import SEED_MODELS

    def build(K):
        return SEED_MODELS[name][0](K)[0]

    assert summary_text(graphc, build) == summary_text(keras, build)


# What Keras 3.15 prints for the seed programs (the counts are in shared/spec/README.md).
SPEC_TOTALS = {
    "mlp": " Total params: 3,466 (13.54 KB)",
    "qa_two_inputs": " Total params: 1,000,052 (3.81 MB)",
    "multi_output": " Total params: 14,146,316 (53.96 MB)",
    "inception": " Total params: 467,712 (1.78 MB)",
    "siamese_lstm": " Total params: 20,673 (80.75 KB)",
    "conv1d_text": " Total params: 291,937 (1.11 MB)",
}


@pytest.mark.parametrize("name", sorted(SPEC_TOTALS))
def test_spec_parameter_counts(name, columns):
    from graphc import examples

    model = examples.build(name)
    out: list[str] = []
    model.summary(print_fn=out.append)
    assert SPEC_TOTALS[name] + "\n" in out[0]
    assert SPEC_TOTALS[name].replace("Total", "Trainable") + "\n" in out[0]


def test_inception_output_and_shared_xception(columns):
    from graphc import examples

    out: list[str] = []
    examples.build("inception").summary(print_fn=out.append)
    assert "│ concatenate (Concatenate)     │ (None, 14, 14, 448)       │               0 │ conv2d[0][0]," in out[0]
    out.clear()
    examples.build("stereo_xception").summary(print_fn=out.append)
    text = out[0]
    assert "│ xception (Functional)" in text and "│ (None, 8, 8, 2048)" in text
    assert "left[0][0], right[0][0]" in text and "(None, 8, 8, 4096)" in text
    assert " Total params: 20,861,480 (79.58 MB)" in text
    assert " Non-trainable params: 54,528 (213.00 KB)" in text


# ---------------------------------------------------------------------------------------------
# What the text says, independently of Keras.


def test_program01_counts_and_sizes(columns):
    text = summary_text(graphc, program01_functional)
    assert " Total params: 3,466 (13.54 KB)\n" in text
    assert " Trainable params: 3,466 (13.54 KB)\n" in text
    assert " Non-trainable params: 0 (0.00 B)\n" in text
    assert "│ dense (Dense)" in text and "│ (None, 32)" in text and "2,080 │" in text
    seq = summary_text(graphc, program01_sequential)
    assert "InputLayer" not in seq and seq.count("(Dense)") == 3 and "3,466 (13.54 KB)" in seq


def test_layout_of_a_chain(columns):
    lines = summary_text(graphc, mlp).splitlines()
    assert lines[0] == 'Model: "mnist_model"'
    assert lines[1] == "┏" + "━" * 38 + "┳" + "━" * 29 + "┳" + "━" * 17 + "┓"
    assert lines[2] == "┃ Layer (type)" + " " * 25 + "┃ Output Shape" + " " * 16 + "┃" + " " * 9 + "Param # ┃"
    assert lines[3].startswith("┡") and lines[3].endswith("┩")
    assert lines[4] == "│ img (InputLayer)" + " " * 21 + "│ (None, 784)" + " " * 17 + "│" + " " * 15 + "0 │"
    assert lines[5].startswith("├") and "┼" in lines[5]
    assert lines[11].startswith("└") and lines[11].endswith("┘")
    assert all(len(line) == 88 for line in lines[1:12])
    assert lines[12:] == [" Total params: 55,050 (215.04 KB)", " Trainable params: 55,050 (215.04 KB)",
                          " Non-trainable params: 0 (0.00 B)"]
    assert "Connected to" not in "\n".join(lines)


def test_branching_graph_gets_connected_to_column(columns):
    text = summary_text(graphc, two_inputs_shared)
    lines = text.splitlines()
    assert "Connected to" in lines[2] and len(lines[1]) == 108
    assert "│ a[0][0], b[0][0]" in text  # the shared Dense, called on both inputs
    assert "│ dense[0][0], dense[1][0]   │" in text
    assert "│ a_very_long_layer_name_that_… │" in text  # a name longer than its cell is cut
    assert "│ (Dense)" in text  # and its class wraps onto the next line


def test_nested_model_shown_as_functional_and_counted_once(columns):
    text = summary_text(graphc, nested_twice)
    assert "│ block (Functional)" in text
    assert text.count("block (Functional)") == 1
    assert " Total params: 42 (168.00 B)" in text
    expanded = summary_text(graphc, nested_twice, expand_nested=True)
    assert "│    └ dense (Dense)" in expanded


def test_multiple_outputs_listed(columns):
    text = summary_text(graphc, nested_two_outputs)
    assert "[(None, 2), (None, 3)]" in text


def test_trainable_column_and_frozen_counts(columns):
    text = summary_text(graphc, nested, show_trainable=True)
    assert text.splitlines()[2].endswith("┃ Traina… ┃")
    rows = [line for line in text.splitlines() if "(Dense)" in line or "InputLayer" in line]
    assert rows[0].rstrip("│ ").endswith("-")  # no weights
    assert rows[-1].rstrip("│ ").endswith("N")  # trainable=False
    assert " Trainable params: 50 (200.00 B)" in text
    assert " Non-trainable params: 33 (132.00 B)" in text
    frozen = summary_text(graphc, frozen_model)
    assert " Trainable params: 0 (0.00 B)" in frozen and " Non-trainable params: 58 (232.00 B)" in frozen


def test_print_fn_gets_one_string_and_default_prints_it(columns, capsys):
    model = program01_functional(graphc)
    got: list[str] = []
    model.summary(print_fn=got.append)
    assert len(got) == 1 and got[0].endswith(" Non-trainable params: 0 (0.00 B)\n")
    model.summary()
    assert capsys.readouterr().out == got[0]


def test_default_width_follows_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    lines = summary_text(graphc, mlp).splitlines()
    assert len(lines[1]) == 56
    monkeypatch.setenv("COLUMNS", "200")
    assert len(summary_text(graphc, mlp, line_length=40).splitlines()[1]) == 40


def test_table_cropped_and_title_wrapped_at_console_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    lines = summary_text(graphc, long_name, line_length=100).splitlines()
    assert lines[0] == "Model: "
    assert lines[1] == '"a_model_with_a_really_long_name_that_goes_on_and_o'[:50]
    assert all(len(line) <= 50 for line in lines)
    assert len(lines[3]) == 50 and not lines[3].endswith("┓")


def test_insufficient_width_refused(monkeypatch):
    monkeypatch.setenv("COLUMNS", "12")
    with pytest.raises(ValueError, match="Insufficient console width"):
        summary_text(graphc, mlp)


def test_bad_positions_and_layer_range_refused(columns):
    model = mlp(graphc)
    with pytest.raises(ValueError, match="positions must give 3 column ends"):
        model.summary(positions=[0.5, 1.0], print_fn=lambda s: None)
    with pytest.raises(ValueError, match="matches no layer name.*'img', 'dense'"):
        model.summary(layer_range=["nope", "dense"], print_fn=lambda s: None)
    with pytest.raises(ValueError, match="length 2"):
        model.summary(layer_range=["dense"], print_fn=lambda s: None)
    with pytest.raises(ValueError, match="strings"):
        model.summary(layer_range=[0, 1], print_fn=lambda s: None)


def test_layer_range_selects_rows(columns):
    text = summary_text(graphc, mlp, layer_range=["dense_1", "dense_2"])
    assert "img (InputLayer)" not in text and "│ dense (Dense)" not in text
    assert "dense_1 (Dense)" in text and "dense_2 (Dense)" in text
    assert " Total params: 55,050" in text  # the counts stay the model's


def test_unbuilt_sequential_shows_unknown_shapes(columns):
    text = summary_text(graphc, unbuilt_sequential)
    assert "│ dense (Dense)                        │ ?" in text and "0 (unbuilt) │" in text
    assert text.count("(unbuilt)") == 2  # Dense and Flatten; Keras builds Dropout when it is made
    assert " Total params: 0 (0.00 B)" in text


def test_sequential_built_by_calling_it(columns):
    model = Sequential([layers.Dense(3), layers.Dense(2)])
    model(Input((5,)))
    out: list[str] = []
    model.summary(print_fn=out.append)
    text = out[0]
    assert "│ dense (Dense)" in text and "(None, 3)" in text and " Total params: 26 (104.00 B)" in text


# ---------------------------------------------------------------------------------------------
# The pieces.


@pytest.mark.parametrize("size, text", [(0, "0.00 B"), (200, "200.00 B"), (1023, "1023.00 B"), (1024, "1.00 KB"),
                                        (13864, "13.54 KB"), (3 * 1024 ** 2 + 1, "3.00 MB"),
                                        (5 * 1024 ** 4, "5.00 TB"), (5 * 1024 ** 5, "5.00 PB")])
def test_readable_memory_size(size, text):
    assert sm.readable_memory_size(size) == text


def test_weight_memory_counts_each_weight_once():
    d = layers.Dense(3)
    d.build((None, 5))
    assert sm.weight_memory_size(d.weights + d.weights) == 18 * 4
    assert sm.count_params(d.weights) == 18


@pytest.mark.parametrize("text, width, justify, lines", [
    ("concatenate (Concatenate)", 19, "left", ["concatenate        ", "(Concatenate)      "]),
    ("abcdefghijklmnopqrstuvwxyz (Dense)", 10, "left", ["abcdefghi…", "(Dense)   "]),
    ("1,234", 9, "right", ["    1,234"]),
    ("Y", 7, "center", ["   Y   "]),
    ("dense[0][0], dense[1][0]", 13, "left", ["dense[0][0], ", "dense[1][0]  "]),
    ("", 3, "left", ["   "]),
])
def test_wrap_cell(text, width, justify, lines):
    assert sm.wrap_cell(text, width, justify) == lines


def test_wrap_text_folds_long_words():
    assert sm.wrap_text('Model: "' + "x" * 12 + '"', 8) == ["Model: ", '"xxxxxxx', "xxxxx\""]


@pytest.mark.parametrize("requested, table_width", [([39, 31, 18], 88), ([32, 28, 19, 29], 108),
                                                    ([3, 3], 8), ([10, 20, 20], 70), ([5, 5, 5], 40)])
def test_column_widths_fill_the_table(requested, table_width):
    widths = sm.column_widths(requested, table_width)
    assert sum(widths) + len(widths) + 1 == table_width
    assert all(w >= 0 for w in widths)


def test_render_table_shapes():
    lines = sm.render_table(["A", "B"], [["x", "1"], ["yy yy", "22"]], [5, 4], ["left", "right"])
    assert lines == ["┏━━━━━┳━━━━┓",
                     "┃ A   ┃  B ┃",
                     "┡━━━━━╇━━━━┩",
                     "│ x   │  1 │",
                     "├─────┼────┤",
                     "│ yy  │ 22 │",
                     "│ yy  │    │",
                     "└─────┴────┘"]


def test_cell_len_counts_wide_characters():
    assert sm.cell_len("abc") == 3
    assert sm.cell_len("模型") == 4
    assert sm.wrap_cell("模型模型", 5) == ["模型…"]


def test_model_without_connected_inputs_still_summarises(columns):
    a = Input((3,), name="used")
    b = Input((3,), name="unused")
    model = Model([a, b], layers.Dense(2)(a))
    out: list[str] = []
    model.summary(print_fn=out.append)
    assert "unused (InputLayer)" in out[0] and "Connected to" in out[0]


def test_optimizer_state_counted_after_training(columns, rng):
    inp = Input((8,))
    model = Model(inp, layers.Dense(2)(layers.Dense(4)(inp)))
    model.compile(optimizer="rmsprop", loss="mse")
    before = sm.format_summary(model, width=200)
    assert "Optimizer params" not in before and " Total params: 46 (184.00 B)" in before
    model.fit(rng.random((16, 8), dtype=np.float32), rng.random((16, 2), dtype=np.float32), epochs=1, verbose=0)
    after = sm.format_summary(model, width=200)
    # iteration count, learning rate and one RMSprop slot per weight: 2 + 46 values
    assert " Total params: 94 (" in after and " Trainable params: 46 (184.00 B)" in after
    assert after.splitlines()[-1].startswith(" Optimizer params: 48 (")
