"""Keras layers, grouped by family (core, conv, pooling, recurrent, merge, normalization, wrappers)."""
