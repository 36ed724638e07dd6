"""Which ONNX opsets graphc exports: the default and the accepted range.

The default is the newest opset that the installed onnxruntime *fully* supports: every
operator its CPU provider implements has a kernel for the operator's version at that
opset. This is read from onnxruntime's kernel registry, so a newer onnxruntime raises
the default by itself; where the registry cannot be read, a conservative 17 is used.
onnxruntime matches a kernel registered without an end version only to the exact operator
version it starts at (a kernel for ``RandomUniformLike`` "1 and later" does not run version
22), and the check here follows the same rule.
"""

from __future__ import annotations

import functools

import onnx

MIN_OPSET = 11  # below this, ops common to every model (Clip, Slice, Concat...) change meaning
FALLBACK_OPSET = 17


def onnx_max_opset() -> int:
    """The newest opset the installed onnx package (checker, shape inference) knows."""
    return onnx.defs.onnx_opset_version()


@functools.cache
def ort_max_opset() -> int:
    """The newest opset every CPU kernel of the installed onnxruntime implements."""
    try:
        from onnxruntime.capi import _pybind_state as ort_c

        kernels = ort_c.get_all_opkernel_def()
    except Exception:  # pragma: no cover - depends on onnxruntime internals
        return min(FALLBACK_OPSET, onnx_max_opset())
    ranges: dict[str, list[tuple[int, int]]] = {}
    for k in kernels:
        if k.domain in ("", "ai.onnx") and k.provider == "CPUExecutionProvider":
            ranges.setdefault(k.op_name, []).append(tuple(k.version_range))
    open_end = 2 ** 31 - 1
    best = MIN_OPSET
    for opset in range(MIN_OPSET, onnx_max_opset() + 1):
        for op_type, spans in ranges.items():
            try:
                schema = onnx.defs.get_schema(op_type, opset)
            except onnx.defs.SchemaError:
                continue
            if schema.deprecated:
                continue
            v = schema.since_version
            if not any(lo == v or (hi != open_end and lo <= v <= hi) for lo, hi in spans):
                return best
        best = opset
    return best


def default_opset() -> int:
    """The opset ``export`` uses when none is asked for."""
    return ort_max_opset()


def check_opset(opset: int | None) -> int:
    """``opset`` (or the default) after checking that graphc can export to it."""
    if opset is None:
        return default_opset()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an integer, got {opset!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"graphc exports ONNX opset {MIN_OPSET} or newer; opset {opset} was asked for "
                         f"(the default here is {default_opset()})")
    if opset > onnx_max_opset():
        raise ValueError(f"opset {opset} is newer than the installed onnx package knows "
                         f"(it knows up to {onnx_max_opset()})")
    return opset
