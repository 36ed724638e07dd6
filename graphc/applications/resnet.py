"""ResNet (He et al., CVPR 2016) and ResNetV2 (He et al., ECCV 2016) built from graphc layers, layer
for layer as Keras builds them.

The same layers in the same order with the same names (``conv1_pad``, ``conv1_conv``,
``conv2_block1_0_conv``, ... ``predictions``) and weight shapes as ``keras.applications.ResNet50``
and its siblings, so Keras weights can be copied with ``set_weights``. The depths differ only in
how many bottleneck blocks each of the four stacks holds. graphc downloads nothing: only
``weights=None`` (random initialization) is accepted.
"""

from __future__ import annotations

from graphc import layers
from graphc.applications.common import check_arguments, classifier_head, image_input, model_inputs, obtain_input_shape
from graphc.frontend.model import Model

__all__ = ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"]

DEFAULT_SIZE = 224
MIN_SIZE = 32
EPSILON = 1.001e-5
# Bottleneck filters of the four stacks (conv2 ... conv5); each block widens to 4x that.
FILTERS = (64, 128, 256, 512)


def _batch_norm(x, name: str):
    return layers.BatchNormalization(axis=3, epsilon=EPSILON, name=name)(x)


def _block_v1(x, filters: int, name: str, stride: int = 1, conv_shortcut: bool = False):
    """Post-activation bottleneck: 1x1 (strided), 3x3, 1x1 convolutions, each followed by BatchNorm,
    added to the (projected) input and activated."""
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = _batch_norm(shortcut, f"{name}_0_bn")
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_batch_norm(x, f"{name}_1_bn"))
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_batch_norm(x, f"{name}_2_bn"))
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = _batch_norm(x, f"{name}_3_bn")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _stack_v1(x, filters: int, blocks: int, name: str, stride: int = 2):
    """A stack that downsamples (and projects the shortcut) in its first block."""
    x = _block_v1(x, filters, f"{name}_block1", stride=stride, conv_shortcut=True)
    for i in range(2, blocks + 1):
        x = _block_v1(x, filters, f"{name}_block{i}")
    return x


def _block_v2(x, filters: int, name: str, stride: int = 1, conv_shortcut: bool = False):
    """Pre-activation bottleneck: BatchNorm and ReLU before the convolutions, a plain sum after;
    a strided block subsamples its identity shortcut with a 1x1 max pooling."""
    preact = _batch_norm(x, f"{name}_preact_bn")
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    else:
        shortcut = layers.MaxPooling2D(1, strides=stride)(x) if stride > 1 else x
    x = layers.Conv2D(filters, 1, strides=1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_batch_norm(x, f"{name}_1_bn"))
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_batch_norm(x, f"{name}_2_bn"))
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _stack_v2(x, filters: int, blocks: int, name: str, stride: int = 2):
    """A stack that projects the shortcut in its first block and downsamples in its last."""
    x = _block_v2(x, filters, f"{name}_block1", conv_shortcut=True)
    for i in range(2, blocks):
        x = _block_v2(x, filters, f"{name}_block{i}")
    return _block_v2(x, filters, f"{name}_block{blocks}", stride=stride)


def _resnet(application: str, blocks: tuple[int, int, int, int], preact: bool, include_top: bool, weights,
            input_tensor, input_shape, pooling, classes: int, classifier_activation, name: str) -> Model:
    """The stem (7x7/2 convolution, 3x3/2 max pooling), four stacks of bottlenecks and the top.

    ResNet downsamples at the start of stacks conv3..conv5; ResNetV2 at the end of conv2..conv4,
    with one BatchNorm and ReLU after the last stack instead of one after the stem."""
    check_arguments(application, weights, pooling, include_top, classes)
    img_input = image_input(application, input_tensor,
                            obtain_input_shape(application, input_shape, include_top, DEFAULT_SIZE, MIN_SIZE))

    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    if not preact:
        x = layers.Activation("relu", name="conv1_relu")(_batch_norm(x, "conv1_bn"))
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    for stack, (filters, count) in enumerate(zip(FILTERS, blocks), start=2):
        if preact:
            x = _stack_v2(x, filters, count, f"conv{stack}", stride=1 if stack == 5 else 2)
        else:
            x = _stack_v1(x, filters, count, f"conv{stack}", stride=1 if stack == 2 else 2)
    if preact:
        x = layers.Activation("relu", name="post_relu")(_batch_norm(x, "post_bn"))

    x = classifier_head(x, include_top, pooling, classes, classifier_activation, top_pool_name="avg_pool",
                        avg_name="avg_pool", max_name="max_pool")
    return Model(model_inputs(input_tensor, img_input), x, name=name)


def ResNet50(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802 (Keras's name)
             pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
             name: str = "resnet50") -> Model:
    """ResNet50: 3, 4, 6 and 3 bottleneck blocks. Default input (224, 224, 3) with the top,
    (None, None, 3) without it; images of at least 32x32."""
    return _resnet("ResNet50", (3, 4, 6, 3), False, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)


def ResNet101(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
              pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
              name: str = "resnet101") -> Model:
    """ResNet101: 3, 4, 23 and 3 bottleneck blocks."""
    return _resnet("ResNet101", (3, 4, 23, 3), False, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)


def ResNet152(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
              pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
              name: str = "resnet152") -> Model:
    """ResNet152: 3, 8, 36 and 3 bottleneck blocks."""
    return _resnet("ResNet152", (3, 8, 36, 3), False, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)


def ResNet50V2(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
               pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
               name: str = "resnet50v2") -> Model:
    """ResNet50V2 (pre-activation): 3, 4, 6 and 3 bottleneck blocks."""
    return _resnet("ResNet50V2", (3, 4, 6, 3), True, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)


def ResNet101V2(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "resnet101v2") -> Model:
    """ResNet101V2 (pre-activation): 3, 4, 23 and 3 bottleneck blocks."""
    return _resnet("ResNet101V2", (3, 4, 23, 3), True, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)


def ResNet152V2(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,  # noqa: N802
                pooling: str | None = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "resnet152v2") -> Model:
    """ResNet152V2 (pre-activation): 3, 8, 36 and 3 bottleneck blocks."""
    return _resnet("ResNet152V2", (3, 8, 36, 3), True, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name)
