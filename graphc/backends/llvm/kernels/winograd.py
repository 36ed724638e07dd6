"""Stride-1 convolutions by Winograd's minimal filtering: F(2x2, 3x3), 5x5, and along one axis 1x7 and 1x3.

A 2x2 tile of outputs of one image needs the 4x4 input patch under it; with the transforms of
Lavin and Gray ("Fast Algorithms for Convolutional Neural Networks", 2015)

    Y = A^T [ (G g G^T) . (B^T d B) ] A

the 36 multiplications per tile and (input, output) channel pair of the direct convolution become
16: an element-wise product in the transformed space, which over channels is 16 independent
matrix products ``M_xi[tiles, K] = V_xi[tiles, C] @ U_xi[C, K]``. They run on the packed GEMM's
micro-kernel (:func:`.gemm.tile_function`), so the products keep its efficiency while doing 2.25x
fewer FLOPs than the implicit GEMM of :mod:`.conv`.

The transforms are per axis (``Y = A_h^T [(G_h g G_w^T) . (B_h^T d B_w)] A_w``), so a kernel of one
row or one column (InceptionV3's 1x7 and 7x1, a third of its time) takes a 1-D algorithm along its
long axis and the identity along the other: two outputs of a 7-tap row as F(2, 3) over its first
three taps plus F(2, 4) over the other four (:func:`split_taps`), 9 products instead of 14 (1.56x
fewer FLOPs); of a 3-tap row as F(2, 3), 4 instead of 6. A 5x5 kernel splits its 5 taps as F(2, 3) +
F(2, 2) along both axes: 7 x 7 = 49 products for a 2x2 tile instead of 100 (2.04x fewer FLOPs; the
minimal F(2, 5), over F(4, 3)'s six points, had 9-10x the reference's mean error, the split 1.6-1.7x).
The transforms come from Toom-Cook (:func:`toom_cook`).

A ``precision="bf16"`` build on a CPU with AVX512-BF16 and no AMX tiles (:func:`bf16_products`) runs
the products on bf16: V is rounded to bf16 as the input transform writes it, U is packed as the bf16
GEMM's panels of channel pairs (:mod:`.gemm_bf16`), ``vdpbf16ps`` accumulates M in float32, and the
output transform and epilogue run in float32. Its error against float32, measured on random data
(3x3, 16-256 channels), is 1.65-1.72x the bf16 im2col GEMM's on average (7e-4 against 4e-4 of the
output's scale) and 1.5-2.3x at worst; each output is within a bound derived from the transforms
(``tests/backends/llvm/test_conv_winograd.py``). ResNet50 at batch 1 on one thread (AMD Zen 4): 40.3
-> 31.6 ms in bf16, its 3x3 layers 1.06-1.16 -> 0.63-0.91 ms. With AMX the im2col GEMM keeps them:
its tiles' products are several times faster again.

Which tiles: measured in float32 on random inputs and weights scaled to unit outputs, against the
exact result, F(4x4, 3x3) is 25-30x further from it than the direct sum (5e-5 at 256 channels),
F(2x2, 3x3) 1.3-1.5x; the split 5x5 0.5-1.8x of the implicit GEMM's mean error (16-256 channels).
Along one axis, over 16-192 channels, as mean error against the reference
backend's (float32 products tap by tap): the split F(2, 3) + F(2, 4) 2.0x (its largest 2.5-3.9x, as
large as the implicit GEMM's own, 1.3-4.7e-6, over these shapes), F(2, 3) 1.3-1.4x, while the minimal F(2, 7) (8
points: 0, +-1, +-2, +-1/2, infinity; 1.75x fewer FLOPs) was 5x, F(3, 7) 7-9x and F(4, 7) 20x. Only
the tiles near the direct algorithm's error are taken: the larger ones would trade answers that agree
with the reference and with Keras to 1e-5 for speed, silently.

One work item is a block of at most ``Tb`` tiles:

1. input transform: for each tile and vector of channels, the input patch under it (zeros where it
   covers the padding or lies past the image) is transformed, ``V[xi][tile][c]``, into the thread's
   scratch;
2. the products (one per point ``xi`` of the transformed patch), each over the block's tiles:
   ``U_xi``'s panels (packed once per instance, as the GEMM's weights are, ``U[xi][panel][c][NR]``)
   stream from L2 while V's rows and the ``M[xi][panel][tile][NR]`` tiles stay in L2;
3. output transform: the transformed vectors of a tile and a vector of output channels become its
   outputs, through the GEMM's epilogue (bias, activation, residual, post-activation); where a pooling
   whose window is the tile follows (:mod:`..pool_fusion`), pooled into one output.

``Tb`` is sized so that V and M take half of L2 where U fits in the other half. Larger U (16/9 of
the weights for 3x3: 256 channels to 256 take 4 MiB) streams from beyond L2 once per block, prefetched
a panel ahead, the blocks taking three quarters of L2. On an Intel Xeon that pays where a block holds
at least ``MIN_TILES_STREAMED`` tiles; on AMD Zen, whose L3 and memory serve a core faster, where the
blocks' products, each block costing at least as long as reading U once, still take 1.3x fewer products
than the direct convolution (:func:`streaming_pays`). Elsewhere (512 channels at 7x7: 16 tiles, 16 MiB of
U) the implicit GEMM is kept (see :func:`winograd_applies`).
``GRAPHC_CONV_WINOGRAD=0`` turns the algorithm off, ``=force`` takes it for every stride-1 convolution
of a kernel it has (part of the build cache key).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import KernelBuilder, Tensor
from graphc.backends.llvm.irutil import F32, I32, constant, i64, vector_constant
from graphc.backends.llvm.kernels.conv import _epilogue
from graphc.backends.llvm.kernels.gemm import (
    EDGE_ROWS,
    gemm_blocking,
    load_lanes,
    micro_tile,
    panel_entries,
    row_function,
    store_lanes,
    tile_function,
    tile_row_stride,
)
from graphc.backends.llvm.kernels.gemm_bf16 import (
    I16,
    LANES,
    bf16_bits,
    row_function_bf16,
    tile_function_bf16,
    uses_amx,
)
from graphc.backends.llvm.kernels.gemm_blocking import caches_for
from graphc.backends.llvm.kernels.gemm_items import THREADS_DIM
from graphc.backends.llvm.target import host_target, same_machine
from graphc.ir import dims

ENV = switches.CONV_WINOGRAD.name


@dataclass(frozen=True, eq=False)
class Axis:
    """A 1-D fast filtering algorithm along one axis of the image: the ``m`` outputs of an ``r``-tap
    correlation over ``m + r - 1`` inputs ``d`` are ``at @ ((g @ w) * (bt @ d))``, one product per point
    (``m + r - 1`` points for a minimal algorithm F(m, r), more for one split by :func:`split_taps`)."""

    bt: np.ndarray  # (points, inputs): the input transform
    g: np.ndarray  # (points, r): the kernel transform
    at: np.ndarray  # (m, points): the output transform

    @property
    def m(self) -> int:
        return self.at.shape[0]

    @property
    def r(self) -> int:
        return self.g.shape[1]

    @property
    def inputs(self) -> int:
        return self.bt.shape[1]

    @property
    def points(self) -> int:
        return self.bt.shape[0]


def toom_cook(m: int, r: int, points) -> Axis:
    """F(m, r) by Toom-Cook over the ``m + r - 2`` finite ``points`` and infinity, exact in rationals.

    ``at`` evaluates at the points (rows of powers, the point at infinity taking the highest
    coefficient), ``g`` interpolates with the divisions by ``prod(a_j - a_l)`` (applied once, in double,
    to the weights), and ``bt`` is the one matrix that makes ``at [(g w) . (bt d)]`` the correlation
    ``y_i = sum_k w_k d_(i+k)``: solved in floats, rounded to small rationals and checked exactly.
    """
    n = m + r - 1
    pts = [Fraction(a) for a in points]
    if len(pts) != n - 1 or len(set(pts)) != n - 1:
        raise ValueError(f"F({m}, {r}) takes {n - 1} distinct finite points, got {points}")
    at = [[a ** i for a in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j, a in enumerate(pts):
        f = Fraction(1)
        for l_, b in enumerate(pts):
            if l_ != j:
                f *= a - b
        g.append([a ** k / f for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    # sum_j at[i][j] g[j][k] bt[j][l] = [l == i + k] for every (i, k): one system per column l of bt
    system = [[at[i][j] * g[j][k] for j in range(n)] for i in range(m) for k in range(r)]
    floats = np.array(system, dtype=np.float64)
    bt = [[Fraction(0)] * n for _ in range(n)]
    for l_ in range(n):
        want = [Fraction(int(l_ == i + k)) for i in range(m) for k in range(r)]
        sol = np.linalg.lstsq(floats, np.array(want, dtype=np.float64), rcond=None)[0]
        col = [Fraction(float(v)).limit_denominator(1 << 12) for v in sol]
        if any(sum(row[j] * col[j] for j in range(n)) != w for row, w in zip(system, want)):
            raise ValueError(f"no exact input transform for F({m}, {r}) over {points}")
        for j in range(n):
            bt[j][l_] = col[j]
    return Axis(*(np.array([[float(v) for v in row] for row in mat]) for mat in (bt, g, at)))


def split_taps(first: Axis, second: Axis) -> Axis:
    """The correlation by ``first.r + second.r`` taps as ``first`` over its first taps plus ``second`` over
    the rest, on one tile of ``m`` outputs: their points side by side, each reading its own inputs."""
    if first.m != second.m:
        raise ValueError(f"the parts compute {first.m} and {second.m} outputs")
    r1, r = first.r, first.r + second.r
    bt = np.zeros((first.points + second.points, first.m + r - 1))
    bt[:first.points, :first.inputs] = first.bt
    bt[first.points:, r1:r1 + second.inputs] = second.bt
    g = np.zeros((first.points + second.points, r))
    g[:first.points, :r1] = first.g
    g[first.points:, r1:] = second.g
    return Axis(bt=bt, g=g, at=np.hstack([first.at, second.at]))


# F(2, 3) (points 0, 1, -1, infinity), Lavin and Gray's matrices
F2_3 = Axis(bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64),
            g=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64),
            at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64))
# 7 taps as 3 + 4 (9 points, see the module's docstring for why not the minimal 8)
F2_7 = split_taps(F2_3, toom_cook(2, 4, (0, 1, -1, 2)))
# 5 taps as 3 + 2 (7 points): InceptionV3's 5x5 over 48 channels to 64 at 35x35, 1.52-1.62x alone and
# 1.71 -> 1.08 ms in the model at batch 1 (`python -m benchmarks.conv_winograd --match 5x5`)
F2_5 = split_taps(F2_3, toom_cook(2, 2, (0, 1)))
IDENTITY = Axis(bt=np.ones((1, 1)), g=np.ones((1, 1)), at=np.ones((1, 1)))  # a kernel of one tap
# the kernel's (height, width) -> the algorithm along each axis
ALGORITHMS = {(3, 3): (F2_3, F2_3), (5, 5): (F2_5, F2_5), (1, 7): (IDENTITY, F2_7), (7, 1): (F2_7, IDENTITY),
              (1, 3): (IDENTITY, F2_3),
              (3, 1): (F2_3, IDENTITY)}
# Kernels whose transformed weights may stream from beyond L2 (see streaming_pays). Not the 3-tap rows:
# F(2, 3) along one axis saves a third of the products, too little for it. InceptionV3's 1x3 and 3x1 over
# 384 channels at 8x8 (2.4 MiB of U, 32 tiles), `python -m benchmarks.conv_winograd --match mixed9`:
# 1.18-1.23x on one thread, 0.89-0.90x on two.
STREAMED = {(3, 3), (5, 5), (1, 7), (7, 1)}  # 5x5 over 128 to 128 at 14x14 (3.1 MiB of U): 1.90x

# Fewer input channels: the 16 products over K = C are too thin, and the implicit GEMM's few-channel
# im2col is quick (`python -m benchmarks.conv_winograd`, a 32x32 image: 3 -> 32 channels 0.57x, 6 -> 6
# 0.92x, 8 -> 3 1.13x, 8 -> 32 1.11x, 32 -> 1 1.46x). Any number of output channels: the last panel's
# columns past them are not computed.
MIN_IN_CHANNELS = 8
# Transformed weights larger than L2 are read from beyond it once per block: worth it where a block has at
# least this many tiles (2 / tiles bytes of U per FLOP). On the Xeon (Sapphire Rapids, whose mesh L3 gives
# one core a fraction of what a Zen CCD's L3 does), ResNet50's 3x3 convolutions at batch 1, one thread:
# over 256 channels at 14x14 (49 tiles) 1.4 -> 0.8 ms; over 512 at 7x7 (16 tiles, 16 MiB of U) 0.82x.
MIN_TILES_STREAMED = 24
# On AMD Zen (znver*: 1 MiB of L2 per core, blocks of 12 tiles from 256 channels on) a block costs the
# longer of its products and reading U once, which takes as long as the products of this many tiles: U
# within a quarter of L3 (the share of a CCD's L3 a core gets beside the machine's other tenants), else
# coming from memory. Fitted to four such convolutions in a row, each with its own weights (U read from
# beyond L2 at every call, as in a model), the implicit GEMM's time / Winograd's at batch 1 on one and
# two threads (`python -m benchmarks.conv_winograd --stack 4 --match streamed`, AMD EPYC Zen 4,
# benchmarks/results/2026-12-06-conv_winograd-stack-zen4.md): 3x3 over 256 at 7x7 (16 tiles in blocks
# of 12 and 4, 4 MiB of U) 1.46x / 1.25x; 3x3 over 512 (16 MiB) at 7x7 1.02x / 1.14x, at 14x14
# 1.94x / 2.04x, at 28x28 2.09x / 2.22x; 448 -> 384 at 8x8 1.48x / 1.45x; 5x5 over 256 at 14x14 1.68x /
# 1.79x, over 512 at 7x7 (49 MiB) 0.87x / 0.71x; 1x7 over 768 at 17x17 (21 MiB) 1.37x / 1.24x.
STREAM_TILES_ZEN_L3 = 8
STREAM_TILES_ZEN_MEMORY = 12
# ... and streaming is taken where the direct convolution has this many times the products of the blocks
# so costed (the estimates for the cases above: 1.72; 1.15, 1.84, 2.16; 1.50; 1.67, 1.04; 1.44)
MIN_GAIN_STREAMED_ZEN = 1.3
# the fewest images a convolution of the batch's tail (batch_split.batch_tail) runs over at once
TAIL_IMAGES = 2


def streaming_pays(cpu: str, u_bytes: int, l3: int, tiles: int, block: int, direct: float) -> bool:
    """Whether streaming U (``u_bytes``, beyond L2) once per block pays on CPU ``cpu`` (LLVM's name) whose
    last-level cache holds ``l3`` bytes, for an image of ``tiles`` tiles in blocks of at most ``block``
    (evened out, as the kernel does on one thread: it rounds the count up to a multiple of the thread count,
    which the build does not know) against the direct convolution's products, ``direct`` tiles' worth."""
    if cpu.startswith("znver"):
        blocks = -(-tiles // block)
        stream = STREAM_TILES_ZEN_L3 if u_bytes <= l3 // 4 else STREAM_TILES_ZEN_MEMORY
        return direct >= MIN_GAIN_STREAMED_ZEN * blocks * max(tiles / blocks, stream)
    return min(block, tiles) >= MIN_TILES_STREAMED


def last_level_cache(kb: KernelBuilder) -> int:
    """Bytes of the target's last-level cache (this machine's when the code is for its CPU)."""
    return caches_for(same_machine(kb.target, host_target())).l3


def mode() -> str:
    """``GRAPHC_CONV_WINOGRAD``: "1" (default: where the rule below expects it to pay), "0" (never),
    "force" (every stride-1 float32 convolution of a kernel in :data:`ALGORITHMS`, for measuring the rule:
    ``benchmarks/conv_winograd``), or "3x3" (the rule, for 3x3 kernels only: the 1-D algorithms off, for
    measuring them in whole models)."""
    return switches.CONV_WINOGRAD.value()


def winograd_applies(kb: KernelBuilder, geo, C, n_out) -> bool:
    """Whether a convolution of ``geo`` (groups 1, weights known) runs by Winograd: float32 products (or
    bf16 ones, :func:`bf16_products`), a kernel of :data:`ALGORITHMS` (3x3, 5x5, 1x7, 7x1, 1x3, 3x1) of
    stride 1 and dilation 1 over a 2-D image of known size, at least ``MIN_IN_CHANNELS`` input channels,
    and transformed weights (``points * C * K`` elements) that fit in L2, or else (kernels of
    :data:`STREAMED`) blocks that pay for reading them (:func:`streaming_pays`)."""
    chosen = mode()
    if not winograd_possible(kb, geo.kernel, geo.strides, geo.dilations):
        return False
    if chosen == "3x3" and geo.kernel != [3, 3]:
        return False
    if not all(isinstance(d, int) for d in (*geo.in_sp, *geo.out_sp, C, n_out)):
        return False
    if chosen == "force":
        return True
    if C < MIN_IN_CHANNELS:
        return False
    ah, aw = ALGORITHMS[tuple(geo.kernel)]
    plan = _Plan(kb, C, n_out, ah.points * aw.points)
    th, tw = -(-geo.out_sp[0] // ah.m), -(-geo.out_sp[1] // aw.m)
    if plan.u_bytes <= plan.l2:
        return True
    if tuple(geo.kernel) not in STREAMED:
        return False
    # the direct convolution's products in tiles' worth: more than the tiles by the products saved, less
    # by the tiles' outputs past the image
    direct = geo.out_sp[0] * geo.out_sp[1] * geo.kernel[0] * geo.kernel[1] / (ah.points * aw.points)
    cpu, l3 = kb.target.cpu, last_level_cache(kb)
    if streaming_pays(cpu, plan.u_bytes, l3, th * tw, plan.tb, direct):
        return True
    # the batch's tail runs over a batch that was split, of two images or more: where that pays and one
    # image does not, the tail is worth running whole (kb.tail_gains; batch_split.batch_tail)
    if kb.in_tail() and streaming_pays(cpu, plan.u_bytes, l3, TAIL_IMAGES * th * tw, plan.tb,
                                                         TAIL_IMAGES * direct):
        kb.tail_gains = True
        return True
    return False


def bf16_products(target) -> bool:
    """Whether a ``precision="bf16"`` build's Winograd products run on bf16 (AVX512-BF16's ``vdpbf16ps``):
    the transformed input and kernel rounded to bf16, accumulated in float32. Where the target has AMX
    tiles, whose products are several times faster again, the im2col GEMM keeps the convolution."""
    return (target.precision == "bf16" and target.has_avx512_bf16 and target.gemm_vw == LANES
            and not uses_amx(target))


def winograd_possible(kb: KernelBuilder, kernel, strides, dilations) -> bool:
    """Whether a convolution of this kernel, strides and dilations may run by Winograd on the target (which
    reads its input as float32, where it lies), whatever its sizes."""
    return (mode() != "0" and (kb.target.precision == "float32" or bf16_products(kb.target))
            and len(kernel) == 2 and tuple(kernel) in ALGORITHMS and list(strides) == [1, 1]
            and list(dilations) == [1, 1])


class _Plan:
    """Block sizes of one Winograd convolution on the target."""

    def __init__(self, kb: KernelBuilder, C: int, K: int, points: int):
        self.vw = kb.target.gemm_vw
        self.mr, self.nv = micro_tile(self.vw, kb.target.num_vector_registers)
        self.nr = self.nv * self.vw
        self.panels = -(-K // self.nr)
        self.cs = tile_row_stride(C)  # V's rows: C rounded up and padded by a cache line
        self.l2 = gemm_blocking(kb.target, self.mr, self.nr).l2
        # bf16 products: V's and U's elements in bf16 (U as words of channel pairs), M in float32
        self.bf16 = kb.target.precision == "bf16"
        self.v_elt = 2 if self.bf16 else 4
        self.pairs = -(-C // 2)
        self.u_bytes = points * (self.pairs * 2 if self.bf16 else C) * self.panels * self.nr * self.v_elt
        # U stays in L2 beside the blocks where it fits in half of it; else it streams, once per block,
        # prefetched a panel ahead, and the blocks take three quarters of L2
        self.u_streamed = self.u_bytes > self.l2 // 2
        # weights of a quarter of L2 or more come from beyond it at batch 1 (as in the GEMM): the
        # micro-kernel prefetches the next panel (ResNet50's 3x3 over 128 channels at 28x28: 0.77 -> 0.65 ms)
        self.prefetch = self.u_bytes >= self.l2 // 4
        budget = 3 * self.l2 // 4 if self.u_streamed else self.l2 // 2
        per_tile = points * (self.cs * self.v_elt + self.panels * self.nr * 4)
        self.tb = max(self.mr, min(16 * self.mr, budget // per_tile // self.mr * self.mr))


def _combine(b: ir.IRBuilder, coeffs, values: list, zero):
    """sum(coeffs[i] * values[i]) with the zero coefficients left out and +-1 as additions."""
    total = None
    for c, v in zip(coeffs, values):
        if c == 0:
            continue
        if c == 1:
            term, neg = v, False
        elif c == -1:
            term, neg = v, True
        else:
            term, neg = b.fmul(v, constant(v.type, float(c))), False
        if total is None:
            total = b.fsub(zero, term) if neg else term
        else:
            total = b.fsub(total, term) if neg else b.fadd(total, term)
    return total if total is not None else zero


def _transform(b: ir.IRBuilder, left: np.ndarray, right: np.ndarray, d: list[list], zero) -> list[list]:
    """``left @ d @ right.T`` for a grid ``d`` of values (an identity side costs nothing)."""
    rows = [[_combine(b, left[i], [d[r][j] for r in range(len(d))], zero) for j in range(len(d[0]))]
            for i in range(left.shape[0])]
    return [[_combine(b, right[j], rows[i], zero) for j in range(right.shape[0])] for i in range(left.shape[0])]


def _kernel_transform(b: ir.IRBuilder, src, C: int, K: int, ah: Axis, aw: Axis, c, col, ok) -> list[list]:
    """``G_h g G_w^T`` in double for input channel ``c`` and output column ``col`` of the weight ``src``
    (kh, kw, C, K), zeros where ``ok`` is false."""
    D = ir.DoubleType()
    g = [[None] * aw.r for _ in range(ah.r)]
    for ky in range(ah.r):
        for kx in range(aw.r):
            idx = b.add(b.mul(b.add(i64((ky * aw.r + kx) * C), c), i64(K)), col)
            v = b.load(b.gep(src, [idx], source_etype=F32), typ=F32)
            g[ky][kx] = b.fpext(b.select(ok, v, ir.Constant(F32, 0.0)), D)
    return _transform(b, ah.g, aw.g, g, ir.Constant(D, 0.0))


def pack_winograd(C: int, K: int, NR: int, ah: Axis, aw: Axis):
    """Emitter of ``dst[xi][p][c][j] = (G_h g G_w^T)[xi]`` for ``g = w[:, :, c, p*NR + j]`` (0 past K):
    the transformed kernel as panels of the packed GEMM, computed in double and rounded once."""
    panels = -(-K // NR)

    def emit(fn, src, dst):
        b = fn.b
        with panel_entries(fn, panels, C, NR, K) as (p, c, j, ok, safe):
            u = _kernel_transform(b, src, C, K, ah, aw, c, safe, ok)
            for xi in range(ah.points * aw.points):
                i, jj = divmod(xi, aw.points)
                di = b.add(b.mul(b.add(b.mul(b.add(i64(xi * panels), p), i64(C)), c), i64(NR)), j)
                b.store(b.fptrunc(u[i][jj], F32), b.gep(dst, [di], source_etype=F32))

    return emit


def pack_winograd_bf16(C: int, K: int, NR: int, ah: Axis, aw: Axis):
    """Emitter of the transformed kernel as the bf16 GEMM's panels of channel pairs
    (:mod:`.gemm_bf16`): ``dst[xi][p][cp][j]`` is the 32-bit word of ``U[xi]`` at channels ``2cp`` (low
    half) and ``2cp + 1`` (high half, zero past C) and column ``p*NR + j`` (zero past K), each computed
    in double and rounded to float32, then to bf16 (nearest even)."""
    panels = -(-K // NR)
    pairs = -(-C // 2)

    def emit(fn, src, dst):
        b = fn.b
        with panel_entries(fn, panels, pairs, NR, K) as (p, cp, j, ok, safe):
            c0 = b.mul(cp, i64(2))
            c1 = b.add(c0, i64(1))
            second = b.icmp_signed("<", c1, i64(C))
            lo = _kernel_transform(b, src, C, K, ah, aw, c0, safe, ok)
            hi = _kernel_transform(b, src, C, K, ah, aw, b.select(second, c1, c0), safe, b.and_(ok, second))
            for xi in range(ah.points * aw.points):
                i, jj = divmod(xi, aw.points)
                word = b.or_(b.zext(bf16_bits(b, b.fptrunc(lo[i][jj], F32)), I32),
                             b.shl(b.zext(bf16_bits(b, b.fptrunc(hi[i][jj], F32)), I32), ir.Constant(I32, 16)))
                di = b.add(b.mul(b.add(b.mul(b.add(i64(xi * panels), p), i64(pairs)), cp), i64(NR)), j)
                b.store(word, b.gep(dst, [di], source_etype=I32))

    return emit


def emit_winograd(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, geo, *, bias=None, activation=None,
                  residual=None, post_activation=None) -> None:
    """The convolution of ``x`` by the weight ``w`` (kh, kw, C, K) into ``out``, by the algorithms of
    :data:`ALGORITHMS` along its two axes."""
    C, K = geo.C, w.shape[-1]
    H, W = geo.in_sp
    OH, OW = geo.out_sp
    pad_t, pad_l = geo.pads
    ah, aw = ALGORITHMS[tuple(geo.kernel)]
    points = ah.points * aw.points
    plan = _Plan(kb, C, K, points)
    vw, MR, NV, NR, panels, Cs, Tb = plan.vw, plan.mr, plan.nv, plan.nr, plan.panels, plan.cs, plan.tb
    vt = ir.VectorType(F32, vw)
    if plan.bf16:
        packed = kb.packed_weight(w, (f"winograd{ah.r}x{aw.r}_bf16", NR), plan.u_bytes,
                                  pack_winograd_bf16(C, K, NR, ah, aw))
    else:
        packed = kb.packed_weight(w, (f"winograd{ah.r}x{aw.r}", NR), plan.u_bytes, pack_winograd(C, K, NR, ah, aw))
    th, tw = -(-OH // ah.m), -(-OW // aw.m)
    per_image = th * tw
    tiles = dims.mul(geo.batch, per_image)
    units = dims.ceildiv(tiles, MR)  # micro-tiles of MR tiles
    mb0 = dims.ceildiv(units, Tb // MR)
    # at least two items per thread where there are enough micro-tiles; one where U streams (each
    # item reads all of it)
    per_thread = 1 if plan.u_streamed else 2
    spread = dims.minimum(units, dims.mul(per_thread, THREADS_DIM))
    # blocks in a multiple of the thread count where there are enough micro-tiles (three blocks of 13
    # micro-tiles kept one of two threads busy for two of them)
    rounded = dims.mul(dims.ceildiv(mb0, THREADS_DIM), THREADS_DIM)
    even = dims.minimum(rounded, units)
    mb = dims.maximum(even, spread)

    # a pooling of the result whose window is the tile (2x2 after a 3x3): each tile's outputs pooled as
    # they leave the output transform, the unpooled result never written (see ..pool_fusion)
    pool = kb.take_pool(out, lambda p: p.window == (ah.m, aw.m))
    dst = out if pool is None else pool.out
    k = kb.kernel("winograd_conv")
    fb, b = k.fn, k.b
    px, pu, po = k.ptr(x), k.ptr(packed), k.ptr(dst)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None
    ldc = dst.row_stride or K  # the output's rows: further apart in a concatenation's part written in place
    v_floats = -(-points * Tb * Cs * plan.v_elt // 64) * 16  # V, in floats' room (whole cache lines)
    scratch = k.thread_scratch((v_floats + points * panels * Tb * NR) * 4)
    pv = scratch
    pm = b.gep(scratch, [i64(v_floats)], source_etype=F32)
    v_type = I16 if plan.bf16 else F32
    tiles_v, units_v, mb_v = k.dim(tiles), k.dim(units), k.dim(mb)
    zero_v = vector_constant(vt, None)
    c_full = C // vw * vw
    k_full = K // vw * vw

    def decode(t):
        n = b.sdiv(t, i64(per_image))
        r = b.srem(t, i64(per_image))
        return n, b.sdiv(r, i64(tw)), b.srem(r, i64(tw))

    with fb.loop(k.begin, k.end, name="item") as item:
        t0 = b.mul(b.sdiv(b.mul(item, units_v), mb_v), i64(MR))
        t1 = fb.min_(b.mul(b.sdiv(b.mul(b.add(item, i64(1)), units_v), mb_v), i64(MR)), tiles_v)

        # 1. input transform
        with fb.loop(t0, t1, name="tin") as t:
            n, ty, tx = decode(t)
            iy0 = b.sub(b.mul(ty, i64(ah.m)), i64(pad_t))
            ix0 = b.sub(b.mul(tx, i64(aw.m)), i64(pad_l))
            offs, oks = [], []
            for i in range(ah.inputs):
                iy = b.add(iy0, i64(i))
                row_ok = b.and_(b.icmp_signed(">=", iy, i64(0)), b.icmp_signed("<", iy, i64(H)))
                for j in range(aw.inputs):
                    ix = b.add(ix0, i64(j))
                    ok = b.and_(row_ok, b.and_(b.icmp_signed(">=", ix, i64(0)), b.icmp_signed("<", ix, i64(W))))
                    off = b.mul(b.add(b.mul(b.add(b.mul(n, i64(H)), iy), i64(W)), ix), i64(C))
                    offs.append(b.select(ok, off, i64(0)))
                    oks.append(ok)
            vrow = b.gep(pv, [b.mul(b.sub(t, t0), i64(Cs))], source_etype=v_type)

            def in_chunk(c, valid):
                d = [[None] * aw.inputs for _ in range(ah.inputs)]
                for q in range(ah.inputs * aw.inputs):
                    v = load_lanes(b, b.gep(px, [b.add(offs[q], c)], source_etype=F32), vw, valid)
                    d[q // aw.inputs][q % aw.inputs] = b.select(oks[q], v, zero_v)
                V = _transform(b, ah.bt, aw.bt, d, zero_v)
                for xi in range(points):
                    dst = b.gep(vrow, [b.add(i64(xi * Tb * Cs), c)], source_etype=v_type)
                    value = V[xi // aw.points][xi % aw.points]
                    if plan.bf16:  # the lanes past C are zeros: the last pair's second half
                        b.store(bf16_bits(b, value), dst, align=2)
                    else:
                        b.store(value, dst, align=4)

            with fb.loop(0, c_full, vw, name="cin") as c:
                in_chunk(c, vw)
            if C % vw:
                in_chunk(i64(c_full), C % vw)

        # 2. the 16 products, each over the block's tiles; the last panel's columns past K are not
        # computed (16 output channels: half of a 32-column panel)
        # bf16: the panels' k steps are channel pairs (32-bit words), V's rows bf16 elements
        steps = plan.pairs if plan.bf16 else C
        u_type = I32 if plan.bf16 else F32

        def products(p_lo, p_hi, nv: int):
            if plan.bf16:
                micro = tile_function_bf16(kb.module, MR, nv, NR, Cs, steps * NR if plan.prefetch else 0)
                one_row = row_function_bf16(kb.module, nv, NR)
                micro_args = []
            else:
                micro = tile_function(kb.module, MR, nv, vw, NR, Cs, plan.prefetch)
                edge = tile_function(kb.module, EDGE_ROWS, nv, vw, NR, Cs, plan.prefetch)
                one_row = row_function(kb.module, nv, vw, NR)
                micro_args = [i64(C * NR)]  # the prefetch distance: the next panel
            with fb.loop(0, points, name="xi") as xi:
                with fb.loop(p_lo, p_hi, name="p") as p:
                    xp = b.add(b.mul(xi, i64(panels)), p)
                    panel = b.gep(pu, [b.mul(xp, i64(steps * NR))], source_etype=u_type)
                    a_base = b.gep(pv, [b.mul(xi, i64(Tb * Cs))], source_etype=v_type)
                    c_base = b.gep(pm, [b.mul(xp, i64(Tb * NR))], source_etype=F32)
                    with fb.loop(t0, t1, MR, name="rt") as i:
                        rel = b.sub(i, t0)
                        rows = fb.min_(b.sub(t1, i), i64(MR))
                        a = b.gep(a_base, [b.mul(rel, i64(Cs))], source_etype=v_type)
                        c_tile = b.gep(c_base, [b.mul(rel, i64(NR))], source_etype=F32)
                        with b.if_else(b.icmp_signed("==", rows, i64(MR))) as (full, partial):
                            with full:
                                b.call(micro, [a, panel, i64(steps), c_tile] + micro_args)
                            with partial:
                                def a_row(r):
                                    return b.gep(a, [b.mul(r, i64(Cs))], source_etype=v_type)

                                def c_row(r):
                                    return b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32)

                                if plan.bf16:
                                    with fb.loop(0, rows, name="r1") as r:
                                        b.call(one_row, [a_row(r), panel, i64(steps), c_row(r)])
                                else:  # edge tiles, then single rows: each row summed as a whole tile's
                                    edge_end = b.and_(rows, i64(-EDGE_ROWS))
                                    with fb.loop(0, edge_end, EDGE_ROWS, name="r4") as r:
                                        b.call(edge, [a_row(r), panel, i64(steps), c_row(r)] + micro_args)
                                    with fb.loop(edge_end, rows, name="r1") as r:
                                        b.call(one_row, [a_row(r), panel, i64(0), i64(steps), c_row(r)])

        if K // NR:
            products(i64(0), i64(K // NR), NV)
        if K % NR:
            products(i64(K // NR), i64(panels), -(-(K % NR) // vw))

        # 3. output transform and epilogue
        with fb.loop(t0, t1, name="tout") as t:
            n, ty, tx = decode(t)
            oy0, ox0 = b.mul(ty, i64(ah.m)), b.mul(tx, i64(aw.m))
            rel = b.sub(t, t0)
            outs = []
            for i in range(ah.m):
                oy = b.add(oy0, i64(i))
                for j in range(aw.m):
                    ox = b.add(ox0, i64(j))
                    ok = b.and_(b.icmp_signed("<", oy, i64(OH)), b.icmp_signed("<", ox, i64(OW)))
                    pixel = b.add(b.mul(b.add(b.mul(n, i64(OH)), oy), i64(OW)), ox)
                    outs.append((ok, b.mul(pixel, i64(K)), b.mul(pixel, i64(ldc))))

            def out_chunk(col, valid):
                p = b.sdiv(col, i64(NR))
                within = b.srem(col, i64(NR))
                m = [[None] * aw.points for _ in range(ah.points)]
                for xi in range(points):
                    idx = b.add(b.mul(b.add(b.mul(b.add(i64(xi * panels), p), i64(Tb)), rel), i64(NR)), within)
                    m[xi // aw.points][xi % aw.points] = b.load(b.gep(pm, [idx], source_etype=F32), typ=vt, align=4)
                Y = _transform(b, ah.at, aw.at, m, zero_v)
                if pool is not None:
                    # a whole tile (one pooled pixel; the tiles past the last whole window are dropped): its
                    # outputs through the epilogue, then pooled as the pooling kernel pools them
                    P0, P1 = pool.pooled
                    with b.if_then(b.and_(b.icmp_signed("<", ty, i64(P0)), b.icmp_signed("<", tx, i64(P1)))):
                        vals = [_epilogue(k, Y[q // aw.m][q % aw.m], col, row_off, valid, vw, pbias, activation,
                                          pres, post_activation) for q, (_, row_off, _) in enumerate(outs)]
                        pooled = b.add(b.mul(b.add(b.mul(n, i64(P0)), ty), i64(P1)), tx)
                        store_lanes(b, pool.combine(k, vals), b.gep(po, [b.add(b.mul(pooled, i64(ldc)), col)],
                                                                   source_etype=F32), vw, valid)
                    return
                for q, (ok, row_off, out_off) in enumerate(outs):
                    with b.if_then(ok):
                        val = _epilogue(k, Y[q // aw.m][q % aw.m], col, row_off, valid, vw, pbias, activation,
                                        pres, post_activation)
                        store_lanes(b, val, b.gep(po, [b.add(out_off, col)], source_etype=F32), vw, valid)

            with fb.loop(0, k_full, vw, name="kout") as col:
                out_chunk(col, vw)
            if K % vw:
                out_chunk(i64(k_full), K % vw)
    kb.launch(k, mb, 2 * Tb * points * C * K)
