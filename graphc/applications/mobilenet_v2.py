"""MobileNetV2 (Sandler et al., CVPR 2018) built from graphc layers, layer for layer as Keras builds it.

The same layers in the same order with the same names (``Conv1``, ``bn_Conv1``,
``expanded_conv_depthwise``, ``block_1_expand``, ... ``predictions``) and weight shapes as
``keras.applications.MobileNetV2``, so Keras weights can be copied with ``set_weights``. graphc
downloads nothing: only ``weights=None`` (random initialization) is accepted.
"""

from __future__ import annotations

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
from graphc.frontend.tensor import KerasTensor

__all__ = ["MobileNetV2"]

MIN_SIZE = 32
# The square sizes Keras has ImageNet weights for: a square input of one of them names the model.
TRAINED_SIZES = (96, 128, 160, 192, 224)
# (filters, stride, expansion) of the 17 inverted residual blocks, block_id 0 ... 16.
BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
          (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
          (320, 1, 6))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _batch_norm(x, name: str):
    return layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)(x)


def _inverted_res_block(inputs, expansion: int, stride: int, alpha: float, filters: int, block_id: int):
    """1x1 expansion (except block 0), 3x3 depthwise (strided: zero-padded first), linear 1x1
    projection; the input is added back when the shapes agree."""
    in_channels = inputs.shape[-1]
    pointwise_filters = _make_divisible(int(filters * alpha), 8)
    x = inputs
    prefix = f"block_{block_id}_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, kernel_size=1, padding="same", use_bias=False, activation=None,
                          name=f"{prefix}expand")(x)
        x = _batch_norm(x, f"{prefix}expand_BN")
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(padding=correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(kernel_size=3, strides=stride, activation=None, use_bias=False,
                               padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = _batch_norm(x, f"{prefix}depthwise_BN")
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, kernel_size=1, padding="same", use_bias=False, activation=None,
                      name=f"{prefix}project")(x)
    x = _batch_norm(x, f"{prefix}project_BN")
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def _default_size(input_shape, input_tensor) -> int:
    """Keras's default size: the square trained size the input has, else 224."""
    if input_shape is not None:
        rows, cols = tuple(input_shape)[:2]
    elif isinstance(input_tensor, KerasTensor) and len(input_tensor.shape) == 4:
        rows, cols = input_tensor.shape[1:3]
    else:
        return 224
    return rows if rows == cols and rows in TRAINED_SIZES else 224


def _check_input_tensor(input_shape, input_tensor) -> None:
    if input_shape is None or not isinstance(input_tensor, KerasTensor):
        return
    if len(input_tensor.shape) != 4 or len(tuple(input_shape)) < 2 or input_tensor.shape[2] != input_shape[1]:
        raise ValueError(f"MobileNetV2: input_tensor.shape[2] must equal input_shape[1]; got "
                         f"input_tensor.shape={input_tensor.shape}, input_shape={input_shape}")


def MobileNetV2(input_shape=None, alpha: float = 1.0, include_top: bool = True, weights=None,  # noqa: N802
                input_tensor=None, pooling: str | None = None, classes: int = 1000,
                classifier_activation="softmax", name: str | None = None) -> Model:
    """MobileNetV2: a 3x3/2 stem, 17 inverted residual blocks, a 1x1 convolution to 1280 channels.

    ``alpha`` scales every layer's width (the last convolution only when above 1). The default
    name is ``mobilenetv2_{alpha:.2f}_{rows}``; images must be at least 32x32.
    """
    check_arguments("MobileNetV2", weights, pooling, include_top, classes)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"MobileNetV2 alpha must be a positive number, got {alpha!r}")
    _check_input_tensor(input_shape, input_tensor)
    shape = obtain_input_shape("MobileNetV2", input_shape, include_top, _default_size(input_shape, input_tensor),
                               MIN_SIZE)
    img_input = image_input("MobileNetV2", input_tensor, shape)

    x = layers.Conv2D(_make_divisible(32 * alpha, 8), kernel_size=3, strides=(2, 2), padding="same",
                      use_bias=False, name="Conv1")(img_input)
    x = _batch_norm(x, "bn_Conv1")
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (filters, stride, expansion) in enumerate(BLOCKS):
        x = _inverted_res_block(x, filters=filters, alpha=alpha, stride=stride, expansion=expansion,
                                block_id=block_id)

    last_filters = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, kernel_size=1, use_bias=False, name="Conv_1")(x)
    x = _batch_norm(x, "Conv_1_bn")
    x = layers.ReLU(6.0, name="out_relu")(x)

    x = classifier_head(x, include_top, pooling, classes, classifier_activation)
    if name is None:
        name = f"mobilenetv2_{alpha:0.2f}_{shape[0]}"
    return Model(model_inputs(input_tensor, img_input), x, name=name)
