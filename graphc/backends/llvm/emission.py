"""LLVM IR text to an object file: parsing, the light optimization pipeline, and the backend.

The one place that turns IR into machine code, for :func:`graphc.backends.llvm.target.compile_ir` in
graphc's process and for the worker processes of :mod:`graphc.backends.llvm.parallel_emit`, which run
this file by path (its :func:`main`: ``SPEC.json IN.ll OUT.o``). It therefore imports nothing of
graphc: a worker starts in the time Python and llvmlite take to load, not graphc's.

Optimization is deliberately light: kernels are written explicitly vectorized, so a short middle-end
pipeline (SROA, instcombine, CFG simplification, GVN, DCE) followed by the backend at opt level 3 gives
the speed of a full O3 pipeline at a fraction of its compile time. The backend's loop strength
reduction is switched off unless asked for (see ``target.strength_reduction_enabled``).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm


@cache
def initialize() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


@cache
def target_machine(triple: str, cpu: str, features: str, opt: int, reloc: str):
    initialize()
    return llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=opt, reloc=reloc,
                                                                 codemodel="default")


def set_strength_reduction(enabled: bool) -> None:
    """Switch the backend's loop strength reduction (a process-wide LLVM option: set for each emission
    and put back to LLVM's default, on, after it, so other users of llvmlite in the process see it
    unchanged)."""
    llvm.set_option("graphc", f"-disable-lsr={'false' if enabled else 'true'}")


def emit_object(ir_text: str, triple: str, cpu: str, features: str, *, opt: int, reloc: str,
                strength_reduction: bool) -> bytes:
    """Parse, verify, optimize (light pipeline) and compile LLVM IR text to an object file."""
    tm = target_machine(triple, cpu, features, opt, reloc)
    mod = llvm.parse_assembly(ir_text)
    mod.verify()
    mod.triple = triple
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
    set_strength_reduction(strength_reduction)
    try:
        return tm.emit_object(mod)
    finally:
        set_strength_reduction(True)


def main(argv: list[str]) -> int:
    """The worker: ``SPEC.json IN.ll OUT.o``; SPEC holds :func:`emit_object`'s other arguments."""
    if len(argv) != 3:
        print("usage: emission.py SPEC.json IN.ll OUT.o", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    obj = emit_object(Path(argv[1]).read_text(), **spec)
    Path(argv[2]).write_bytes(obj)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
