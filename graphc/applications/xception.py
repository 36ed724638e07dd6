"""Xception (Chollet, CVPR 2017) built from graphc layers, layer for layer as Keras builds it.

The same layers in the same order with the same names (``block1_conv1``,
``block1_conv1_bn``, ... ``predictions``) and the same weight shapes as
``keras.applications.Xception``, so Keras weights can be copied with ``set_weights``.
graphc downloads nothing: only ``weights=None`` (random initialization) is accepted.
"""

from __future__ import annotations

from graphc import layers
from graphc.applications.common import check_arguments, classifier_head, image_input, model_inputs, obtain_input_shape
from graphc.frontend.model import Model

__all__ = ["Xception"]

DEFAULT_SIZE = 299
MIN_SIZE = 71


def _sepconv_bn(x, filters: int, name: str):
    x = layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(axis=-1, name=f"{name}_bn")(x)


def _shortcut(x, filters: int):
    """The strided 1x1 projection of a downsampling block (unnamed in Keras too)."""
    residual = layers.Conv2D(filters, (1, 1), strides=(2, 2), padding="same", use_bias=False)(x)
    return layers.BatchNormalization(axis=-1)(residual)


def Xception(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802 (Keras's name)
             pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
             name: str = "xception") -> Model:
    """The Xception architecture: 36 convolutions in 14 blocks with residual connections.

    ``include_top=False`` leaves the 2048-channel feature map (or its global average/max with
    ``pooling="avg"``/``"max"``); the default input is (299, 299, 3) with the top and
    (None, None, 3) without it. Images must be at least 71x71.
    """
    check_arguments("Xception", weights, pooling, include_top, classes)
    shape = obtain_input_shape("Xception", input_shape, include_top, DEFAULT_SIZE, MIN_SIZE)
    img_input = image_input("Xception", input_tensor, shape)

    # Entry flow.
    x = layers.Conv2D(32, (3, 3), strides=(2, 2), use_bias=False, name="block1_conv1")(img_input)
    x = layers.BatchNormalization(axis=-1, name="block1_conv1_bn")(x)
    x = layers.Activation("relu", name="block1_conv1_act")(x)
    x = layers.Conv2D(64, (3, 3), use_bias=False, name="block1_conv2")(x)
    x = layers.BatchNormalization(axis=-1, name="block1_conv2_bn")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(x)

    residual = _shortcut(x, 128)
    x = _sepconv_bn(x, 128, "block2_sepconv1")
    x = layers.Activation("relu", name="block2_sepconv2_act")(x)
    x = _sepconv_bn(x, 128, "block2_sepconv2")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name="block2_pool")(x)
    x = layers.add([x, residual])

    for block, filters in ((3, 256), (4, 728)):
        residual = _shortcut(x, filters)
        x = layers.Activation("relu", name=f"block{block}_sepconv1_act")(x)
        x = _sepconv_bn(x, filters, f"block{block}_sepconv1")
        x = layers.Activation("relu", name=f"block{block}_sepconv2_act")(x)
        x = _sepconv_bn(x, filters, f"block{block}_sepconv2")
        x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name=f"block{block}_pool")(x)
        x = layers.add([x, residual])

    # Middle flow: eight identity-residual blocks of three separable convolutions.
    for block in range(5, 13):
        residual = x
        for k in (1, 2, 3):
            x = layers.Activation("relu", name=f"block{block}_sepconv{k}_act")(x)
            x = _sepconv_bn(x, 728, f"block{block}_sepconv{k}")
        x = layers.add([x, residual])

    # Exit flow.
    residual = _shortcut(x, 1024)
    x = layers.Activation("relu", name="block13_sepconv1_act")(x)
    x = _sepconv_bn(x, 728, "block13_sepconv1")
    x = layers.Activation("relu", name="block13_sepconv2_act")(x)
    x = _sepconv_bn(x, 1024, "block13_sepconv2")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name="block13_pool")(x)
    x = layers.add([x, residual])

    x = _sepconv_bn(x, 1536, "block14_sepconv1")
    x = layers.Activation("relu", name="block14_sepconv1_act")(x)
    x = _sepconv_bn(x, 2048, "block14_sepconv2")
    x = layers.Activation("relu", name="block14_sepconv2_act")(x)

    x = classifier_head(x, include_top, pooling, classes, classifier_activation, top_pool_name="avg_pool")
    return Model(model_inputs(input_tensor, img_input), x, name=name)
