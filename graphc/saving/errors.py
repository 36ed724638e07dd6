"""The errors that reading and writing Keras files raise.

All of them are ``ValueError``s, so code that catches Keras's own loading errors keeps
working; each message names the file (when there is one) and the layer concerned.
"""

from __future__ import annotations


class KerasFormatError(ValueError):
    """A file or config that is not a valid Keras model: truncated, corrupt, wrong layout or shapes."""


class UnsupportedKerasError(ValueError):
    """A valid Keras model that uses a layer class or an option graphc cannot represent."""


__all__ = ["KerasFormatError", "UnsupportedKerasError"]
