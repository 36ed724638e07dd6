"""Reference architectures (Keras applications), built from graphc layers."""

from graphc.applications import xception
from graphc.applications.xception import Xception

__all__ = ["Xception", "xception"]
