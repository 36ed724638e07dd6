"""EfficientNet B0 to B7 (Tan and Le, ICML 2019) built from graphc layers, layer for layer as Keras
builds them.

The same layers in the same order with the same names (``rescaling``, ``normalization``,
``stem_conv``, ``block1a_dwconv``, ``block2a_se_squeeze``, ... ``predictions``), initializers and
weight shapes as ``keras.applications.EfficientNetB0`` and its siblings, so Keras weights can be
copied with ``set_weights``. B1 ... B7 are B0 scaled: wider (``width_coefficient``), deeper
(``depth_coefficient``), for larger images, with more dropout. graphc downloads nothing: only
``weights=None`` (random initialization) is accepted.

The model scales pixels itself (a ``Rescaling(1/255)`` and a ``Normalization`` with mean 0 and
variance 1 until adapted): it expects inputs in [0, 255].
"""

from __future__ import annotations

import math

from graphc import layers
from graphc.applications.common import (
    check_arguments,
    classifier_head,
    correct_pad,
    image_input,
    model_inputs,
    obtain_input_shape,
)
from graphc.frontend.model import Model

__all__ = ["EfficientNet", "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
           "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "DEFAULT_BLOCKS_ARGS"]

MIN_SIZE = 32

# The seven stages of B0: mobile inverted bottlenecks with squeeze-and-excitation.
DEFAULT_BLOCKS_ARGS = (
    {"kernel_size": 3, "repeats": 1, "filters_in": 32, "filters_out": 16, "expand_ratio": 1, "id_skip": True,
     "strides": 1, "se_ratio": 0.25},
    {"kernel_size": 3, "repeats": 2, "filters_in": 16, "filters_out": 24, "expand_ratio": 6, "id_skip": True,
     "strides": 2, "se_ratio": 0.25},
    {"kernel_size": 5, "repeats": 2, "filters_in": 24, "filters_out": 40, "expand_ratio": 6, "id_skip": True,
     "strides": 2, "se_ratio": 0.25},
    {"kernel_size": 3, "repeats": 3, "filters_in": 40, "filters_out": 80, "expand_ratio": 6, "id_skip": True,
     "strides": 2, "se_ratio": 0.25},
    {"kernel_size": 5, "repeats": 3, "filters_in": 80, "filters_out": 112, "expand_ratio": 6, "id_skip": True,
     "strides": 1, "se_ratio": 0.25},
    {"kernel_size": 5, "repeats": 4, "filters_in": 112, "filters_out": 192, "expand_ratio": 6, "id_skip": True,
     "strides": 2, "se_ratio": 0.25},
    {"kernel_size": 3, "repeats": 1, "filters_in": 192, "filters_out": 320, "expand_ratio": 6, "id_skip": True,
     "strides": 1, "se_ratio": 0.25},
)
BLOCK_KEYS = {"kernel_size", "repeats", "filters_in", "filters_out", "expand_ratio", "id_skip", "strides", "se_ratio"}

CONV_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                           "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                            "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}

# name -> (width_coefficient, depth_coefficient, default_size, dropout_rate)
SCALING = {
    "EfficientNetB0": (1.0, 1.0, 224, 0.2),
    "EfficientNetB1": (1.0, 1.1, 240, 0.2),
    "EfficientNetB2": (1.1, 1.2, 260, 0.3),
    "EfficientNetB3": (1.2, 1.4, 300, 0.3),
    "EfficientNetB4": (1.4, 1.8, 380, 0.4),
    "EfficientNetB5": (1.6, 2.2, 456, 0.4),
    "EfficientNetB6": (1.8, 2.6, 528, 0.5),
    "EfficientNetB7": (2.0, 3.1, 600, 0.5),
}


def _conv(filters: int, kernel_size: int, name: str, **kwargs):
    return layers.Conv2D(filters, kernel_size, kernel_initializer=CONV_KERNEL_INITIALIZER, name=name, **kwargs)


def _block(inputs, activation, drop_rate: float, name: str, filters_in: int, filters_out: int, kernel_size: int,
           strides: int, expand_ratio: int, se_ratio: float, id_skip: bool):
    """Mobile inverted bottleneck: 1x1 expansion, depthwise convolution, squeeze-and-excitation,
    1x1 projection; the input is added back (after per-sample drop connect) when shapes agree."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = _conv(filters, 1, f"{name}expand_conv", padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(axis=3, name=f"{name}expand_bn")(x)
        x = layers.Activation(activation, name=f"{name}expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(padding=correct_pad(x, kernel_size), name=f"{name}dwconv_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="valid" if strides == 2 else "same",
                               use_bias=False, depthwise_initializer=CONV_KERNEL_INITIALIZER, name=f"{name}dwconv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}bn")(x)
    x = layers.Activation(activation, name=f"{name}activation")(x)
    if 0 < se_ratio <= 1:
        se = layers.GlobalAveragePooling2D(name=f"{name}se_squeeze")(x)
        se = layers.Reshape((1, 1, filters), name=f"{name}se_reshape")(se)
        se = _conv(max(1, int(filters_in * se_ratio)), 1, f"{name}se_reduce", padding="same",
                   activation=activation)(se)
        se = _conv(filters, 1, f"{name}se_expand", padding="same", activation="sigmoid")(se)
        x = layers.multiply([x, se], name=f"{name}se_excite")
    x = _conv(filters_out, 1, f"{name}project_conv", padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}project_bn")(x)
    if id_skip and strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def _checked_blocks_args(blocks_args) -> list[dict]:
    if blocks_args == "default":
        return [dict(args) for args in DEFAULT_BLOCKS_ARGS]
    checked = []
    for i, args in enumerate(blocks_args):
        if not isinstance(args, dict) or set(args) != BLOCK_KEYS:
            raise ValueError(f"EfficientNet blocks_args[{i}] must be a dict with the keys {sorted(BLOCK_KEYS)}, "
                             f"got {args!r}")
        if args["repeats"] <= 0:
            raise ValueError(f"The number of repeats in EfficientNet must be > 0; blocks_args[{i}] has "
                             f"repeats={args['repeats']}")
        checked.append(dict(args))
    return checked


def EfficientNet(width_coefficient: float, depth_coefficient: float, default_size: int,  # noqa: N802
                 dropout_rate: float = 0.2, drop_connect_rate: float = 0.2, depth_divisor: int = 8,
                 activation="swish", blocks_args="default", name: str = "efficientnet", include_top: bool = True,
                 weights=None, input_tensor=None, input_shape=None, pooling: str | None = None, classes: int = 1000,
                 classifier_activation="softmax") -> Model:
    """The EfficientNet family: B0's stages with filters scaled by ``width_coefficient`` (rounded to
    ``depth_divisor``) and repeats by ``depth_coefficient``. ``drop_connect_rate`` grows linearly
    over the blocks (block b drops its residual branch with rate ``drop_connect_rate * b / blocks``);
    ``dropout_rate`` is the classifier's dropout. Both 0 build no Dropout layers (a deterministic
    training step)."""
    return _efficientnet("EfficientNet", width_coefficient, depth_coefficient, default_size, dropout_rate,
                         drop_connect_rate, depth_divisor, activation, blocks_args, name, include_top, weights,
                         input_tensor, input_shape, pooling, classes, classifier_activation)


def _efficientnet(application: str, width_coefficient, depth_coefficient, default_size, dropout_rate,
                  drop_connect_rate, depth_divisor, activation, blocks_args, name, include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation) -> Model:
    """EfficientNet's network; errors name ``application`` (``EfficientNetB3 pooling must be ...``)."""
    check_arguments(application, weights, pooling, include_top, classes)
    for what, rate in (("dropout_rate", dropout_rate), ("drop_connect_rate", drop_connect_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"{application} {what} must be a number in [0, 1), got {rate!r}")
    stages = _checked_blocks_args(blocks_args)
    img_input = image_input(application, input_tensor,
                            obtain_input_shape(application, input_shape, include_top, default_size, MIN_SIZE))

    def round_filters(filters: int) -> int:
        filters *= width_coefficient
        rounded = max(depth_divisor, int(filters + depth_divisor / 2) // depth_divisor * depth_divisor)
        return int(rounded + depth_divisor if rounded < 0.9 * filters else rounded)

    def round_repeats(repeats: int) -> int:
        return int(math.ceil(depth_coefficient * repeats))

    x = layers.Rescaling(1.0 / 255.0)(img_input)
    x = layers.Normalization(axis=3)(x)
    x = layers.ZeroPadding2D(padding=correct_pad(x, 3), name="stem_conv_pad")(x)
    x = _conv(round_filters(32), 3, "stem_conv", strides=2, padding="valid", use_bias=False)(x)
    x = layers.BatchNormalization(axis=3, name="stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    b = 0
    blocks = float(sum(round_repeats(args["repeats"]) for args in stages))
    for i, args in enumerate(stages):
        args["filters_in"] = round_filters(args["filters_in"])
        args["filters_out"] = round_filters(args["filters_out"])
        for j in range(round_repeats(args.pop("repeats"))):
            if j > 0:
                args["strides"] = 1
                args["filters_in"] = args["filters_out"]
            x = _block(x, activation, drop_connect_rate * b / blocks, name=f"block{i + 1}{chr(j + 97)}_", **args)
            b += 1

    x = _conv(round_filters(1280), 1, "top_conv", padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(axis=3, name="top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)

    x = classifier_head(x, include_top, pooling, classes, classifier_activation, top_pool_name="avg_pool",
                        avg_name="avg_pool", max_name="max_pool",
                        dropout=(dropout_rate, "top_dropout") if dropout_rate > 0 else None,
                        dense_kwargs={"kernel_initializer": DENSE_KERNEL_INITIALIZER})
    return Model(model_inputs(input_tensor, img_input), x, name=name)


def _scaled(application: str, include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name) -> Model:
    width, depth, size, dropout = SCALING[application]
    return _efficientnet(application, width, depth, size, dropout, 0.2, 8, "swish", "default", name, include_top,
                         weights, input_tensor, input_shape, pooling, classes, classifier_activation)


def EfficientNetB0(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb0") -> Model:
    """EfficientNetB0: the base network, for 224x224 images."""
    return _scaled("EfficientNetB0", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB1(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb1") -> Model:
    """EfficientNetB1: depth x1.1, for 240x240 images."""
    return _scaled("EfficientNetB1", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB2(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb2") -> Model:
    """EfficientNetB2: width x1.1, depth x1.2, for 260x260 images."""
    return _scaled("EfficientNetB2", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB3(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb3") -> Model:
    """EfficientNetB3: width x1.2, depth x1.4, for 300x300 images."""
    return _scaled("EfficientNetB3", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB4(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb4") -> Model:
    """EfficientNetB4: width x1.4, depth x1.8, for 380x380 images."""
    return _scaled("EfficientNetB4", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB5(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb5") -> Model:
    """EfficientNetB5: width x1.6, depth x2.2, for 456x456 images."""
    return _scaled("EfficientNetB5", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB6(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb6") -> Model:
    """EfficientNetB6: width x1.8, depth x2.6, for 528x528 images."""
    return _scaled("EfficientNetB6", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)


def EfficientNetB7(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                   pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                   name: str = "efficientnetb7") -> Model:
    """EfficientNetB7: width x2, depth x3.1, for 600x600 images."""
    return _scaled("EfficientNetB7", include_top, weights, input_tensor, input_shape, pooling, classes,
                   classifier_activation, name)
