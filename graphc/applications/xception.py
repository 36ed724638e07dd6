"""Xception (Chollet, CVPR 2017) built from graphc layers, layer for layer as Keras builds it.

The same layers in the same order with the same names (``block1_conv1``,
``block1_conv1_bn``, ... ``predictions``) and the same weight shapes as
``keras.applications.Xception``, so Keras weights can be copied with ``set_weights``.
graphc downloads nothing: only ``weights=None`` (random initialization) is accepted.
"""

from __future__ import annotations

from graphc import layers
from graphc.frontend.input_layer import Input
from graphc.frontend.model import Model, _source_inputs
from graphc.frontend.tensor import KerasTensor

__all__ = ["Xception"]

DEFAULT_SIZE = 299
MIN_SIZE = 71


def _input_shape(input_shape, include_top: bool) -> tuple:
    """Keras's obtain_input_shape for channels-last images without pretrained weights."""
    if not input_shape:
        return (DEFAULT_SIZE, DEFAULT_SIZE, 3) if include_top else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"Xception input_shape must be a tuple of three integers (height, width, channels), "
                         f"got {input_shape}")
    if any(d is not None and d < MIN_SIZE for d in input_shape[:2]):
        raise ValueError(f"Xception input size must be at least {MIN_SIZE}x{MIN_SIZE}; got input_shape={input_shape}")
    if include_top and None in input_shape:
        raise ValueError(f"if include_top is True, Xception needs a static input_shape; got {input_shape}")
    return input_shape


def _check_weights(weights) -> None:
    if weights is None:
        return
    if weights == "imagenet":
        raise ValueError("Xception(weights='imagenet'): graphc does not download pretrained weights. Build the "
                         "model with weights=None and copy trained weights in with model.set_weights() (for "
                         "example from keras.applications.Xception(...).get_weights()).")
    raise ValueError(f"Xception(weights={weights!r}): graphc cannot load weight files here. Build the model "
                     "with weights=None and load the arrays with model.set_weights().")


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
    _check_weights(weights)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"Xception pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"Xception classes must be a positive integer, got {classes!r}")
    shape = _input_shape(input_shape, include_top)
    if input_tensor is None:
        img_input = Input(shape=shape)
    elif isinstance(input_tensor, KerasTensor):
        img_input = input_tensor
    else:
        raise ValueError(f"Xception input_tensor must be a symbolic tensor (from Input or a layer), "
                         f"got {type(input_tensor).__name__}")

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

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D()(x)

    if input_tensor is not None:
        inputs = [layer.output for layer in _source_inputs(input_tensor)]
        inputs = inputs[0] if len(inputs) == 1 else inputs
    else:
        inputs = img_input
    return Model(inputs, x, name=name)
