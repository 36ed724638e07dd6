"""Targets: the machine code is generated for, target machines, optimization and object emission.

A target is a platform (a GNU-style triple: ``x86_64-linux-gnu``, ``aarch64-linux-gnu``) and a CPU
of it. :func:`resolve_target` is the one place that decides what a target offers; kernels ask the
:class:`TargetInfo` it returns for the vector width and register budget (the kernel-builder facade,
``kb.target``), never the machine graphc runs on. Without a triple the target is the host: the CPU
name and feature string come from LLVM's host detection (``get_host_cpu_name`` /
``get_host_cpu_features``); ``cpu="generic"`` (or the environment variable
``GRAPHC_NATIVE_CPU=generic``) gives portable x86-64 code instead. With a triple (cross-compiling,
or a portable library for the host's own architecture), the CPU is one of the named CPUs of that
architecture (``generic`` by default), so the same model and triple give the same code on every
machine.

IR becomes machine code in :mod:`graphc.backends.llvm.emission` (its light optimization pipeline; the
backend's loop strength reduction off unless :func:`strength_reduction_enabled`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cache

import llvmlite.binding as llvm

from graphc.backends.llvm import emission, switches


def _init() -> None:
    emission.initialize()


@dataclass(frozen=True)
class TargetInfo:
    """What code generation needs to know about the CPU it compiles for."""

    triple: str  # LLVM's triple (x86_64-unknown-linux-gnu)
    cpu: str
    features: str
    vector_bits: int  # widest float vector register: 128, 256 or 512
    has_fma: bool
    num_vector_registers: int
    precision: str = "float32"  # of products' inputs: "float32", or "bf16" (see with_precision)

    @property
    def vw(self) -> int:
        """float32 lanes in the vector type elementwise kernels use (at most 8)."""
        return min(8, self.vector_bits // 32)

    @property
    def gemm_vw(self) -> int:
        """float32 lanes of the GEMM micro-kernel's vectors."""
        return self.vector_bits // 32

    def key(self) -> str:
        """What identifies the generated code: platform, CPU, features and (when reduced) precision."""
        base = f"{self.triple}|{self.cpu}|{self.features}"
        return base if self.precision == "float32" else f"{base}|{self.precision}"

    @property
    def fma512_in_halves(self) -> bool:
        """Whether the CPU runs a 512-bit FMA as two 256-bit halves (AMD Zen 4: one 512-bit or two 256-bit
        FMAs per cycle), so that a 256-bit FMA costs half a 512-bit one's time; elsewhere (Intel with
        AVX-512, Zen 5) it takes a whole one's issue slot."""
        return self.vector_bits == 512 and self.cpu == "znver4"

    @property
    def feature_set(self) -> set[str]:
        """The instruction set features the code may use (``avx2``, ``avx512f``...): the ``+`` ones of
        :attr:`features`."""
        return _feature_set(self.features)

    @property
    def has_avx512_bf16(self) -> bool:
        """``vdpbf16ps`` (bf16 pair dot products into float32) on 512-bit vectors."""
        have = _feature_set(self.features)
        return "avx512bf16" in have and "avx512f" in have

    @property
    def has_amx_bf16(self) -> bool:
        """AMX tiles with bf16 products (``tdpbf16ps``)."""
        have = _feature_set(self.features)
        return "amx-bf16" in have and "amx-tile" in have

    @property
    def has_amx_int8(self) -> bool:
        """AMX tiles with byte products into int32 (``tdpbusd``)."""
        have = _feature_set(self.features)
        return "amx-int8" in have and "amx-tile" in have

    @property
    def platform(self) -> str:
        """graphc's name of the triple (``aarch64-linux-gnu``): what toolchains are chosen by."""
        return platform_of(self.triple)

    @property
    def arch(self) -> str:
        return self.triple.split("-", 1)[0]


def _feature_set(features: str) -> set[str]:
    return {f[1:] for f in features.split(",") if f.startswith("+")}


@dataclass(frozen=True)
class Architecture:
    """What every CPU of one architecture shares, and its named CPUs: name -> (LLVM CPU, features)."""

    llvm_arch: str
    vendor_os: str  # the rest of LLVM's triple
    cpus: dict[str, tuple[str, str]]
    default_cpu: str
    description: str


# Portable x86-64 levels (what a library built for another machine may assume); AArch64 CPUs with
# NEON (128-bit vectors, 32 registers, fused multiply-add on every one).
ARCHITECTURES = {
    "x86_64-linux-gnu": Architecture("x86_64", "unknown-linux-gnu", {
        "generic": ("x86-64", ""),
        "x86-64": ("x86-64", ""),
        "x86-64-v2": ("x86-64-v2", "+sse4.2,+popcnt"),
        "x86-64-v3": ("x86-64-v3", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2"),
        "x86-64-v4": ("x86-64-v4", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd"),
    }, "generic", "x86-64 Linux (SSE2 .. AVX-512)"),
    "aarch64-linux-gnu": Architecture("aarch64", "unknown-linux-gnu", {
        "generic": ("generic", "+neon,+fp-armv8"),
        "cortex-a72": ("cortex-a72", "+neon,+fp-armv8,+crc"),
        "neoverse-n1": ("neoverse-n1", "+neon,+fp-armv8,+crc,+lse,+rcpc,+dotprod,+fullfp16"),
        "apple-m1": ("apple-m1", "+neon,+fp-armv8,+crc,+lse,+rcpc,+dotprod,+fullfp16,+fp16fml"),
    }, "generic", "AArch64 Linux (NEON: Raspberry Pi 4, Graviton, Ampere, Apple silicon under Linux)"),
    "wasm32-wasi": Architecture("wasm32", "unknown-wasi", {
        "generic": ("generic", "+simd128"),
        "mvp": ("mvp", ""),
    }, "generic", "WebAssembly with WASI (SIMD128; wasmtime, browsers with a WASI shim)"),
}
_NAMED = ARCHITECTURES["x86_64-linux-gnu"].cpus
# Other spellings of the same platforms.
_ALIASES = {"x86_64-unknown-linux-gnu": "x86_64-linux-gnu", "x86_64-pc-linux-gnu": "x86_64-linux-gnu",
            "amd64-linux-gnu": "x86_64-linux-gnu", "aarch64-unknown-linux-gnu": "aarch64-linux-gnu",
            "arm64-linux-gnu": "aarch64-linux-gnu", "wasm32-unknown-wasi": "wasm32-wasi",
            "wasm32-wasip1": "wasm32-wasi"}


def platform_of(triple: str) -> str:
    """graphc's name of an LLVM triple: the vendor dropped (``x86_64-unknown-linux-gnu`` -> ``x86_64-linux-gnu``)."""
    if triple in ARCHITECTURES:
        return triple
    if triple in _ALIASES:
        return _ALIASES[triple]
    parts = triple.split("-")
    return "-".join([parts[0], *parts[2:]]) if len(parts) == 4 else triple


def host_platform() -> str:
    _init()
    return platform_of(llvm.get_process_triple())


def normalize_triple(triple: str) -> str:
    """The platform ``triple`` names, or a ValueError listing the supported ones."""
    name = platform_of(triple.strip().lower())
    if name not in ARCHITECTURES:
        raise ValueError(f"unsupported target triple {triple!r}: graphc builds for {', '.join(ARCHITECTURES)}")
    return name


def _vector_budget(arch: str, features: str) -> tuple[int, int, bool]:
    """(widest float vector in bits, vector registers, fused multiply-add) of a CPU."""
    if arch == "aarch64":
        return 128, 32, True
    if arch == "wasm32":  # SIMD128 (without it LLVM splits the vectors); the engine allocates registers
        return 128, 16, False
    have = _feature_set(features)
    if "avx512f" in have:
        return 512, 32, True
    if "avx" in have or "avx2" in have:
        return 256, 16, "fma" in have
    return 128, 16, False


def _info(triple: str, name: str, features: str) -> TargetInfo:
    bits, regs, fma = _vector_budget(triple.split("-", 1)[0], features)
    return TargetInfo(triple=triple, cpu=name, features=features, vector_bits=bits, has_fma=fma,
                      num_vector_registers=regs)


@cache
def host_target(cpu: str | None = None) -> TargetInfo:
    """The target for ``cpu``: None or "host" (the host, or $GRAPHC_NATIVE_CPU), or a portable level:
    "generic" (x86-64 with SSE2), "x86-64-v2", "x86-64-v3" (AVX2 + FMA), "x86-64-v4" (AVX-512)."""
    _init()
    cpu = cpu or os.environ.get("GRAPHC_NATIVE_CPU") or "host"
    triple = llvm.get_process_triple()
    if cpu == "host":
        name = llvm.get_host_cpu_name()
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # feature detection unsupported on this platform
            features = ""
        return _info(triple, name, features)
    arch = ARCHITECTURES.get(platform_of(triple))
    if arch is None or cpu not in arch.cpus:
        named = ", ".join(arch.cpus) if arch else "none on this platform"
        raise ValueError(f"unknown native cpu {cpu!r}: use 'host' or one of {named}")
    return _info(triple, *arch.cpus[cpu])


@cache
def resolve_target(triple: str | None = None, cpu: str | None = None) -> TargetInfo:
    """The target code is generated for: the host (``triple=None``, see :func:`host_target`), or
    ``cpu`` (default ``generic``) of the platform ``triple`` names. Never reads the host's features
    when a triple is given: the same model and triple compile to the same bytes on every machine."""
    if triple is None:
        return host_target(cpu)
    _init()
    platform = normalize_triple(triple)
    arch = ARCHITECTURES[platform]
    name = cpu or arch.default_cpu
    if name not in arch.cpus:
        raise ValueError(f"unknown cpu {name!r} for {platform}: use one of {', '.join(arch.cpus)}")
    return _info(f"{arch.llvm_arch}-{arch.vendor_os}", *arch.cpus[name])


PRECISIONS = ("float32", "bf16")


class PrecisionFallbackWarning(UserWarning):
    """precision="bf16" was asked for a target without bf16 products: float32 code is built instead."""


def with_precision(info: TargetInfo, precision: str) -> tuple[TargetInfo, str | None]:
    """``info`` generating code at ``precision``, and why it could not (None when it can).

    ``"bf16"`` runs matrix products and convolutions on bf16 inputs (rounded to nearest even)
    with float32 accumulation, which needs AVX512-BF16; a target without it keeps float32 and the
    reason names the target and the missing feature (callers warn with it). Any other name is a
    ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "float32":
        return replace(info, precision="float32"), None
    if not info.has_avx512_bf16:
        return replace(info, precision="float32"), (
            f"precision='bf16' needs AVX512-BF16 (vdpbf16ps), which target {info.triple} cpu {info.cpu!r} lacks: "
            "building float32 code instead")
    return replace(info, precision=precision), None


def _machine_key(info: TargetInfo) -> TargetInfo:
    """The target without its precision: one LLVM target machine serves every precision."""
    return replace(info, precision="float32")


def same_machine(a: TargetInfo, b: TargetInfo) -> bool:
    """Whether ``a`` and ``b`` are the same CPU (whatever precision each generates code at)."""
    return _machine_key(a) == _machine_key(b)


def reloc_model(info: TargetInfo) -> str:
    return "static" if info.arch == "wasm32" else "pic"  # a .wasm module is linked whole: no PIC


def _target_machine(info: TargetInfo, opt: int):
    return emission.target_machine(info.triple, info.cpu, info.features, opt, reloc_model(info))


LSR_VARIABLE = switches.LLVM_LSR.name


def strength_reduction_enabled() -> bool:
    """Whether the backend runs its loop strength reduction (``GRAPHC_LLVM_LSR=1``; off by default).

    LLVM's LSR rewrites a loop's address arithmetic into induction variables matched to the target's
    addressing modes. graphc's kernels compute addresses explicitly; measured on the bundled models,
    the applications and Dense products, their speed is the same either way
    (``python -m benchmarks.switch_models GRAPHC_LLVM_LSR=1``), while LSR took half of the backend's
    time on the large unrolled kernels (separable convolutions: 0.29 of 0.56 s). The switch is in the
    build cache key.
    """
    return switches.LLVM_LSR.on()


def emission_spec(info: TargetInfo, opt: int = 3) -> dict:
    """:func:`graphc.backends.llvm.emission.emit_object`'s arguments for ``info``'s machine (what a
    worker process needs to compile as this process would)."""
    key = _machine_key(info)
    return {"triple": key.triple, "cpu": key.cpu, "features": key.features, "opt": opt, "reloc": reloc_model(key),
            "strength_reduction": strength_reduction_enabled()}


def compile_ir(ir_text: str, info: TargetInfo, *, opt: int = 3) -> bytes:
    """Parse, verify, optimize (light pipeline) and compile LLVM IR text to an object file."""
    return emission.emit_object(ir_text, **emission_spec(info, opt))


def data_layout(info: TargetInfo) -> str:
    return str(_target_machine(_machine_key(info), 3).target_data)
