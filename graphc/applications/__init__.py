"""Reference architectures (Keras applications), built from graphc layers."""

from graphc.applications import efficientnet, mobilenet_v2, resnet, xception
from graphc.applications.efficientnet import (
    EfficientNetB0,
    EfficientNetB1,
    EfficientNetB2,
    EfficientNetB3,
    EfficientNetB4,
    EfficientNetB5,
    EfficientNetB6,
    EfficientNetB7,
)
from graphc.applications.mobilenet_v2 import MobileNetV2
from graphc.applications.resnet import ResNet50, ResNet50V2, ResNet101, ResNet101V2, ResNet152, ResNet152V2
from graphc.applications.xception import Xception

__all__ = ["EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
           "EfficientNetB6", "EfficientNetB7", "MobileNetV2", "ResNet50", "ResNet50V2", "ResNet101", "ResNet101V2",
           "ResNet152", "ResNet152V2", "Xception", "efficientnet", "mobilenet_v2", "resnet", "xception"]
