"""``keras.ops`` for graphc: functions on symbolic, traced and concrete tensors.

``from graphc import ops`` exposes these functions (``ops.matmul(x, y)``, ``ops.mean(x, axis=1)``).
On symbolic tensors each call adds a Keras operation node (``Add``, ``Matmul``, ``GetItem``...)
to the functional graph; inside a custom layer's ``call`` it emits IR ops; on NumPy arrays it
computes at once. See ``base`` for the three modes and the per-family modules for the ops.
"""

from graphc.frontend.operations import creation, einsum_ops, indexing, nn_ops, numpy_ops
from graphc.frontend.operations.base import OPERATIONS, Operation
from graphc.frontend.operations.creation import *  # noqa: F403
from graphc.frontend.operations.einsum_ops import *  # noqa: F403
from graphc.frontend.operations.indexing import *  # noqa: F403
from graphc.frontend.operations.nn_ops import *  # noqa: F403
from graphc.frontend.operations.numpy_ops import *  # noqa: F403

FUNCTIONS: tuple[str, ...] = tuple(numpy_ops.__all__ + nn_ops.__all__ + indexing.__all__ + einsum_ops.__all__
                                   + creation.__all__)

__all__ = ["Operation", "OPERATIONS", "FUNCTIONS", *FUNCTIONS]
