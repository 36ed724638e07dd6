"""LLVM kernels behind the kernel-builder facade: elementwise, data movement, reductions, GEMM..."""
