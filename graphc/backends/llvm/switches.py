"""The environment variables that change the native code graphc generates, in one table.

Each switch is read where it acts (a kernel's choice, a rule of the memory plan); most exist to measure one
choice against the code without it (``benchmarks/``). Because the generated code depends on them, the build
cache key holds every one (:func:`code_key`): two builds that differ in a switch never share a cache entry,
and a switch added here is in the key without more code. Switches with a fixed set of values are checked
here (a value outside it raises ValueError naming the variable and the values it takes); the others
(sizes, tile shapes) are parsed where they are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    """One environment variable: its name, its value when unset, and the values it takes (empty: free form)."""

    name: str
    default: str = ""
    choices: tuple[str, ...] = ()

    def raw(self) -> str:
        """The variable's value as set ("" when unset), unchecked."""
        return os.environ.get(self.name, "")

    def value(self) -> str:
        """The variable's value, or its default when unset; checked against ``choices``."""
        value = os.environ.get(self.name, self.default)
        if self.choices and value not in self.choices:
            shown = [c if c else "unset" for c in self.choices]
            raise ValueError(f"{self.name} must be {', '.join(shown[:-1])} or {shown[-1]}, got {value!r}")
        return value

    def on(self) -> bool:
        """For a 0/1 switch: whether it is 1."""
        return self.value() == "1"

    def integer(self, default: int) -> int:
        """A whole-number switch's value, ``default`` when unset."""
        value = self.raw()
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{self.name} must be a whole number, got {value!r}") from None


ON_OFF = ("0", "1")

# the GEMM (kernels/gemm.py, gemm_blocking.py, gemm_items.py)
GEMM_TILE = Switch("GRAPHC_GEMM_TILE")  # "MRxNV": the register tile everywhere
GEMM_KC = Switch("GRAPHC_GEMM_KC")  # the K block, in elements
GEMM_MC = Switch("GRAPHC_GEMM_MC")  # the rows per block
GEMM_CACHES = Switch("GRAPHC_GEMM_CACHES")  # cache sizes the blocking follows ("l1=32K,l2=1M,...")
GEMM_ROWS = Switch("GRAPHC_GEMM_ROWS", "", ("", "fixed"))
GEMM_HALVES = Switch("GRAPHC_GEMM_HALVES", "1", ON_OFF)
GEMM_FUSED_EPILOGUE = Switch("GRAPHC_GEMM_FUSED_EPILOGUE", "1", ON_OFF)
GEMM_ITEMS = Switch("GRAPHC_GEMM_ITEMS", "", ("", "ceil"))
# a packed weight's loop order: K blocks outside the row blocks where it takes half of L3 ("auto"), never, always
GEMM_K_OUTER = Switch("GRAPHC_GEMM_K_OUTER", "auto", ("auto", "0", "1"))
# prefetching a streamed packed weight (a quarter of L2 or more) into L2 one panel ahead: from the first
# micro-tile of each panel in a row block ("auto"), from every micro-tile ("every"), never ("0")
GEMM_PREFETCH = Switch("GRAPHC_GEMM_PREFETCH", "auto", ("auto", "every", "0"))
# reduced precision (kernels/gemm_bf16.py, gemm_int8.py): AMX tiles or the vector instructions
BF16_KERNEL = Switch("GRAPHC_BF16_KERNEL", "", ("", "avx512"))
INT8_KERNEL = Switch("GRAPHC_INT8_KERNEL", "", ("", "vnni"))
# convolutions (kernels/conv.py, winograd.py)
CONV_SINGLE_K = Switch("GRAPHC_CONV_SINGLE_K")  # im2col K up to this is one block
CONV_WINOGRAD = Switch("GRAPHC_CONV_WINOGRAD", "1", ("0", "1", "force", "3x3"))
DEPTHWISE_SPANS = Switch("GRAPHC_DEPTHWISE_SPANS", "1", ON_OFF)
DEPTHWISE_ITEMS = Switch("GRAPHC_DEPTHWISE_ITEMS", "", ("", "pixels"))
DEPTHWISE_PAD = Switch("GRAPHC_DEPTHWISE_PAD", "auto", ("auto", "0", "1"))
SEPARABLE_ITEMS = Switch("GRAPHC_SEPARABLE_ITEMS")  # items per thread a separable convolution's GEMM aims for
# the memory plan carried into the code (concat_in_place.py, pool_fusion.py, result_in_place.py, batch_split.py)
CONCAT_IN_PLACE = Switch("GRAPHC_CONCAT_IN_PLACE", "1", ON_OFF)
POOL_FUSION = Switch("GRAPHC_POOL_FUSION", "1", ON_OFF)
RESULT_IN_PLACE = Switch("GRAPHC_RESULT_IN_PLACE", "1", ON_OFF)
BATCH_SPLIT = Switch("GRAPHC_BATCH_SPLIT")  # scratch bytes per sub-batch ("512K", "0": never split)
# the model's last ops once over the whole batch: where it pays, never, or wherever a model allows it
BATCH_TAIL = Switch("GRAPHC_BATCH_TAIL", "1", ("0", "1", "force"))
# LLVM (target.py)
LLVM_LSR = Switch("GRAPHC_LLVM_LSR", "0", ON_OFF)

SWITCHES: tuple[Switch, ...] = tuple(v for v in globals().values() if isinstance(v, Switch))


def code_key() -> str:
    """Every switch's value as set, for the build cache key."""
    return "|".join(f"{s.name}={s.raw()}" for s in SWITCHES)
