"""Depthwise convolution over a few channels, its rows computed as one flat run of lanes.

With fewer channels than half a vector (an RGB image's 3), the depthwise kernel's vectors of channels
hold 3 useful lanes of 16: every FMA of :func:`~graphc.backends.llvm.kernels.conv._depthwise_span` does
3 lanes' work. But in NHWC a row's pixels lie one after another, channels innermost, so that along a
row of unit stride the interior's outputs ``(x, c)`` form one contiguous run of ``width * C`` floats,
and under tap ``(dy, dx)`` so do their inputs, the run shifted by a constant. The kernel computes the run
in whole vectors: lane ``q`` of the run is channel ``q mod C``, so tap ``t``'s weight for a vector
starting at lane ``v * vw`` is a pattern of the weights repeating every C lanes, one of
``C / gcd(vw, C)`` phases, built into a small table once per instance (bias likewise). The
pixels whose windows reach into the padding (the row's ends, rows near the top and bottom) keep the
general kernel's code (``rows``). Each output is the same sum in the same order as the general kernel's
(one FMA chain over the taps, then the bias), so the bits do not change.

Measured on a Zen 4 (one thread, one process): the first SeparableConv2D of separable_conv_bn (3
channels, 3x3, 32 x 32 images, six at a time) in its depthwise kernel 13 -> 4 us.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.builder import Kernel, Tensor
from graphc.backends.llvm.irutil import F32, i64, vector_constant
from graphc.backends.llvm.kernels.gemm import load_lanes, store_lanes

# the pattern table's largest size (bytes on the stack of each call)
MAX_TABLE_BYTES = 16 << 10


def flat_phases(geo, mult: int, vw: int) -> int:
    """The weight patterns' phases (``C / gcd(vw, C)``) where a depthwise convolution runs its rows'
    interiors as flat runs of lanes, else 0: one input channel per output (mult 1), at most half a vector
    of channels, static sizes, unit stride along the row, an interior, and a table of patterns that
    fits :data:`MAX_TABLE_BYTES`."""
    C = geo.C
    if mult != 1 or not isinstance(C, int) or 2 * C > vw or geo.strides[-1] != 1:
        return 0
    if not all(isinstance(d, int) for d in geo.in_sp + geo.out_sp):
        return 0
    lo, hi = geo.inside_range()
    phases = C // math.gcd(vw, C)
    if hi - lo < 1 or 4 * (len(geo.taps) + 1) * phases * vw > MAX_TABLE_BYTES:
        return 0
    return phases


def _fill_patterns(fn, source, table, count: int, C: int, phases: int, vw: int, name: str) -> None:
    """``table[t][lane] = source[t * C + lane % C]`` for ``count`` patterns of ``phases * vw`` lanes."""
    b, span = fn.b, phases * vw
    with fn.loop(0, count * span, name=f"{name}.fill") as idx:
        t, lane = b.sdiv(idx, i64(span)), b.srem(idx, i64(span))
        src = b.add(b.mul(t, i64(C)), b.srem(lane, i64(C)))
        b.store(b.load(b.gep(source, [src], source_etype=F32), typ=F32), b.gep(table, [idx], source_etype=F32))


def _pattern_table(k: Kernel, tensor: Tensor, count: int, C: int, phases: int, vw: int, name: str):
    """``count`` patterns of ``phases * vw`` lanes, entry ``(t, lane)`` being ``tensor[t * C + lane % C]``:
    a weight's filled once per instance by the prepare function (as the GEMM packs its panels); another
    tensor's (weights trained at run time) into a table on the stack of each call."""
    span = phases * vw
    if tensor.is_constant and tensor.buf is not None and tensor.buf.kind == "weight":
        def pack(fn, src, dst):
            _fill_patterns(fn, src, dst, count, C, phases, vw, name)

        packed = k.kb.packed_weight(tensor, (name, C, phases, vw, count), count * span * 4, pack)
        return k.ptr(packed)
    table = k.fn.entry.alloca(F32, size=i64(count * span), name=name)
    table.align = 64
    _fill_patterns(k.fn, k.ptr(tensor), table, count, C, phases, vw, name)
    return table


def emit_flat_rows(k: Kernel, px, w: Tensor, bias: Tensor | None, po, geo, vw: int, phases: int, *, activation,
                   pres, post_activation, rows: Callable) -> None:
    """The loop body of one output row per work item (``k.begin .. k.end``): the interior as a flat run
    when its windows lie inside the input vertically too, every other pixel through
    ``rows(first_pixel, end_pixel)`` (the general kernel)."""
    fb, b, m = k.fn, k.b, k.m
    C, width = geo.C, geo.out_sp[-1]
    lo, hi = geo.inside_range()
    lanes = (hi - lo) * C
    span = phases * vw
    deltas = geo.static_tap_deltas()
    weights = _pattern_table(k, w, len(deltas), C, phases, vw, "dwflat.w")
    bias = _pattern_table(k, bias, 1, C, phases, vw, "dwflat.b") if bias is not None else None
    zero = vector_constant(ir.VectorType(F32, vw), 0.0)

    def vector(base_in, base_out, q, phase, valid):
        """Lanes ``q .. q + vw`` of the run (``valid`` of them), of pattern phase ``phase``."""
        acc = zero
        src = b.gep(px, [b.add(base_in, q)], source_etype=F32)
        for t, delta in enumerate(deltas):
            w_at = b.add(i64(t * span), b.mul(phase, i64(vw)))
            wv = load_lanes(b, b.gep(weights, [w_at], source_etype=F32), vw, vw)
            acc = m.fma(load_lanes(b, b.gep(src, [i64(delta)], source_etype=F32), vw, valid), wv, acc)
        if bias is not None:
            acc = b.fadd(acc, load_lanes(b, b.gep(bias, [b.mul(phase, i64(vw))], source_etype=F32), vw, vw))
        if activation is not None:
            acc = activation(m, acc)
        out_at = b.add(base_out, q)
        if pres is not None:
            acc = b.fadd(acc, load_lanes(b, b.gep(pres, [out_at], source_etype=F32), vw, valid))
        if post_activation is not None:
            acc = post_activation(m, acc)
        store_lanes(b, acc, b.gep(po, [out_at], source_etype=F32), vw, valid)

    with fb.loop(k.begin, k.end, name="dwflat.row") as row:
        first = b.mul(row, i64(width))
        if lo > 0:
            rows(first, b.add(first, i64(lo)))
        start = b.add(first, i64(lo))
        n, outs = geo.decode(k, start)
        inside, corner = geo.window_inside(k, n, outs)
        with b.if_else(inside) as (then, otherwise):
            with then:
                base_out = b.mul(start, i64(C))
                full = lanes // vw
                if full:
                    with fb.loop(0, full, name="dwflat.vec") as v:
                        vector(corner, base_out, b.mul(v, i64(vw)), b.srem(v, i64(phases)), vw)
                if lanes % vw:
                    vector(corner, base_out, i64(full * vw), i64(full % phases), lanes % vw)
            with otherwise:
                rows(start, b.add(first, i64(hi)))
        if hi < width:
            rows(b.add(first, i64(hi)), b.add(first, i64(width)))
