"""What every application checks and builds the same way: arguments, the image input, the head.

Keras's ``imagenet_utils`` rules for channels-last images without pretrained weights, with errors
that name the application (``ResNet50 pooling must be ...``), so each architecture module only
describes its own layers.
"""

from __future__ import annotations

from graphc import layers
from graphc.frontend.input_layer import Input
from graphc.frontend.model import _source_inputs
from graphc.frontend.tensor import KerasTensor

__all__ = ["check_weights", "check_arguments", "obtain_input_shape", "image_input", "model_inputs", "correct_pad",
           "classifier_head"]


def check_weights(application: str, weights) -> None:
    """Only ``weights=None``: graphc downloads nothing and reads weights in through ``set_weights``."""
    if weights is None:
        return
    if weights == "imagenet":
        raise ValueError(f"{application}(weights='imagenet'): graphc does not download pretrained weights. Build "
                         "the model with weights=None and copy trained weights in with model.set_weights() (for "
                         f"example from keras.applications.{application}(...).get_weights()).")
    raise ValueError(f"{application}(weights={weights!r}): graphc cannot load weight files here. Build the model "
                     "with weights=None and load the arrays with model.set_weights().")


def check_arguments(application: str, weights, pooling, include_top: bool, classes) -> None:
    """The arguments every application takes: weights, pooling and classes."""
    check_weights(application, weights)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"{application} pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"{application} classes must be a positive integer, got {classes!r}")


def obtain_input_shape(application: str, shape, include_top: bool, default_size: int, min_size: int) -> tuple:
    """Keras's obtain_input_shape for channels-last images without pretrained weights."""
    if not shape:
        return (default_size, default_size, 3) if include_top else (None, None, 3)
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"{application} input_shape must be a tuple of three integers (height, width, channels), "
                         f"got {shape}")
    if any(d is not None and d < min_size for d in shape[:2]):
        raise ValueError(f"{application} input size must be at least {min_size}x{min_size}; got input_shape={shape}")
    if include_top and None in shape:
        raise ValueError(f"if include_top is True, {application} needs a static input_shape; got {shape}")
    return shape


def image_input(application: str, input_tensor, shape: tuple) -> KerasTensor:
    """The tensor the network starts from: ``input_tensor`` when given, else a new ``Input``."""
    if input_tensor is None:
        return Input(shape=shape)
    if isinstance(input_tensor, KerasTensor):
        return input_tensor
    raise ValueError(f"{application} input_tensor must be a symbolic tensor (from Input or a layer), "
                     f"got {type(input_tensor).__name__}")


def model_inputs(input_tensor, img_input: KerasTensor):
    """The model's inputs: the sources ``input_tensor`` came from, as Keras's get_source_inputs."""
    if input_tensor is None:
        return img_input
    inputs = [layer.output for layer in _source_inputs(input_tensor)]
    return inputs[0] if len(inputs) == 1 else inputs


def correct_pad(x: KerasTensor, kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's correct_pad: the zero padding before a strided 'valid' convolution that centres it as
    TensorFlow's 'same' would (one row/column less before an even-sized or unknown dimension)."""
    height, width = x.shape[1:3]
    adjust = (1, 1) if height is None else (1 - height % 2, 1 - width % 2)
    half = kernel_size // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def classifier_head(x: KerasTensor, include_top: bool, pooling, classes: int, classifier_activation, *,
                    avg_name: str | None = None, max_name: str | None = None, dense_kwargs=None,
                    top_pool_name: str | None = None, dropout: tuple[float, str] | None = None) -> KerasTensor:
    """The top: global average pooling and the ``predictions`` Dense layer (after an optional
    ``(rate, name)`` Dropout); without the top, the ``pooling`` requested. Pooling layer names
    differ between applications (Keras leaves some unnamed), so each one passes its own."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name=top_pool_name)(x)
        if dropout is not None:
            x = layers.Dropout(dropout[0], name=dropout[1])(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions", **(dense_kwargs or {}))(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=avg_name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=max_name)(x)
    return x
