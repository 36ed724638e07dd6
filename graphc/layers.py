"""Keras-compatible layers: ``from graphc import layers``.

Each family module lists its public names in ``__all__``; this module re-exports them all,
plus the functional merge forms (``layers.add``, ``layers.concatenate``...), and ``Layer``, the
base class of custom layers written with ``build`` and ``call``.
"""

from graphc.frontend.custom_layer import Layer  # noqa: F401
from graphc.frontend.layers.activation import *  # noqa: F403
from graphc.frontend.layers.attention import *  # noqa: F403
from graphc.frontend.layers.conv import *  # noqa: F403
from graphc.frontend.layers.conv_lstm import *  # noqa: F403
from graphc.frontend.layers.core import *  # noqa: F403
from graphc.frontend.layers.einsum_dense import *  # noqa: F403
from graphc.frontend.layers.merge import *  # noqa: F403
from graphc.frontend.layers.normalization import *  # noqa: F403
from graphc.frontend.layers.pooling import *  # noqa: F403
from graphc.frontend.layers.preprocessing import *  # noqa: F403
from graphc.frontend.layers.recurrent import *  # noqa: F403
from graphc.frontend.layers.regularization import *  # noqa: F403
from graphc.frontend.layers.reshaping import *  # noqa: F403
from graphc.frontend.layers.wrappers import *  # noqa: F403
