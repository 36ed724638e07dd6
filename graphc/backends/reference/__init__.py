"""The NumPy reference interpreter: the oracle every other path is compared with."""

from graphc.backends.reference.interpreter import InputError, bind_inputs, run

__all__ = ["InputError", "bind_inputs", "run"]
