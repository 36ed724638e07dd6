"""The host target: CPU detection, target machines, optimization and object emission.

The CPU name and feature string come from LLVM's host detection
(``get_host_cpu_name`` / ``get_host_cpu_features``); ``cpu="generic"`` (or the environment
variable ``GRAPHC_NATIVE_CPU=generic``) gives portable x86-64 code instead. Kernels ask
:class:`TargetInfo` for the vector width and register budget rather than assuming AVX2.

Optimization is deliberately light: kernels are written explicitly vectorized, so a short
middle-end pipeline (SROA, instcombine, CFG simplification, GVN, DCE) followed by the backend
at opt level 3 gives the speed of a full O3 pipeline at a fraction of its compile time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm


@cache
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@dataclass(frozen=True)
class TargetInfo:
    """What code generation needs to know about the CPU it compiles for."""

    triple: str
    cpu: str
    features: str
    vector_bits: int  # widest float vector register: 128, 256 or 512
    has_fma: bool
    num_vector_registers: int

    @property
    def vw(self) -> int:
        """float32 lanes in the vector type elementwise kernels use (at most 8)."""
        return min(8, self.vector_bits // 32)

    @property
    def gemm_vw(self) -> int:
        """float32 lanes of the GEMM micro-kernel's vectors."""
        return self.vector_bits // 32

    def key(self) -> str:
        return f"{self.triple}|{self.cpu}|{self.features}"


def _feature_set(features: str) -> set[str]:
    return {f[1:] for f in features.split(",") if f.startswith("+")}


# Named targets: portable x86-64 levels (what a library built for another machine may assume).
_NAMED = {
    "generic": ("x86-64", ""),
    "x86-64": ("x86-64", ""),
    "x86-64-v2": ("x86-64-v2", "+sse4.2,+popcnt"),
    "x86-64-v3": ("x86-64-v3", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2"),
    "x86-64-v4": ("x86-64-v4", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd"),
}


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
    elif cpu in _NAMED:
        name, features = _NAMED[cpu]
    else:
        raise ValueError(f"unknown native cpu {cpu!r}: use 'host' or one of {', '.join(_NAMED)}")
    have = _feature_set(features)
    if "avx512f" in have:
        bits, regs = 512, 32
    elif "avx" in have or "avx2" in have:
        bits, regs = 256, 16
    else:
        bits, regs = 128, 16
    return TargetInfo(triple=triple, cpu=name, features=features, vector_bits=bits,
                      has_fma="fma" in have or "avx512f" in have, num_vector_registers=regs)


@cache
def _target_machine(info: TargetInfo, opt: int):
    _init()
    target = llvm.Target.from_triple(info.triple)
    return target.create_target_machine(cpu=info.cpu, features=info.features, opt=opt, reloc="pic",
                                        codemodel="default")


def compile_ir(ir_text: str, info: TargetInfo, *, opt: int = 3) -> bytes:
    """Parse, verify, optimize (light pipeline) and compile LLVM IR text to an ELF object."""
    tm = _target_machine(info, opt)
    mod = llvm.parse_assembly(ir_text)
    mod.verify()
    mod.triple = info.triple
    mod.data_layout = str(tm.target_data)
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=2)
        pto.loop_vectorization = False
        pto.slp_vectorization = False
        pto.loop_unrolling = False
        pb = llvm.create_pass_builder(tm, pto)
        mpm = llvm.create_new_module_pass_manager()
        mpm.add_sroa_pass()
        mpm.add_instruction_combine_pass()
        mpm.add_simplify_cfg_pass()
        mpm.add_new_gvn_pass()
        mpm.add_instruction_combine_pass()
        mpm.add_aggressive_dce_pass()
        mpm.add_simplify_cfg_pass()
        mpm.run(mod, pb)
    return tm.emit_object(mod)


def data_layout(info: TargetInfo) -> str:
    return str(_target_machine(info, 3).target_data)
