"""The native backend: LLVM code for every op (through llvmlite), one shared library per model,
and the C-ABI runtime that C programs and graphc's Python binding both call.

- ``builder``: the kernel-builder facade op lowerings use (``lower(kb, op, ...)``);
- ``kernels/``: elementwise, data movement, reductions, GEMM, convolution, pooling, recurrences;
- ``codegen``: a whole graph to one module plus the model descriptor;
- ``target``: the target description (host CPU detection, or a cross triple and CPU), optimization,
  object emission;
- ``toolchain``: each platform's C compiler (host or cross), the cached runtime build, linking;
- ``cache``: where builds are kept, the cache's size limit and least-recently-used eviction;
- ``checksum``: CRC32C, the checksum of weights files;
- ``native``: the library cache and the ``CompiledModel`` of ``target="native"``.
"""

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.native import LibraryFiles, build_native, compile_library, export_files
from graphc.backends.llvm.toolchain import ToolchainError

__all__ = ["KernelBuilder", "Tensor", "NativeLoweringError", "ToolchainError", "LibraryFiles", "build_native",
           "compile_library", "export_files"]
