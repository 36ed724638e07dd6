"""Gradients of grouped convolutions that are neither ordinary (groups == 1) nor depthwise.

Output channel ``o`` belongs to group ``g = o // (n_out/groups)``, which reads input channels
``[g*cg, (g+1)*cg)`` (``cg = C/groups``). Direct kernels, walking the forward windows:

- ``dx``: one work item per image (windows overlap, so an image's input gradient belongs to
  one thread); for every output pixel and tap inside the input,
  ``dx[pixel under tap, g*cg + ci] += sum over the group's outputs o of dy[o] * w[tap, ci, o]``.
- ``dw``: one work item per tap; ``dw[tap, ci, o] = sum over (image, output pixel) of
  x[pixel under tap, g(o)*cg + ci] * dy[o]``.
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, i64
from graphc.backends.llvm.kernels.conv import Geometry
from graphc.ir import dims


def _geometry(x_like: Tensor, dy: Tensor, kernel, strides, dilations, pads) -> Geometry:
    return Geometry(x_like, dy, kernel, strides, dilations, pads)


def _accessors(k):
    b = k.b

    def ld(ptr, idx):
        return b.load(b.gep(ptr, [idx], source_etype=F32), typ=F32)

    def st(ptr, idx, v):
        b.store(v, b.gep(ptr, [idx], source_etype=F32))

    return ld, st


def emit_grouped_conv_grad_input(kb: KernelBuilder, dy: Tensor, w: Tensor, out: Tensor, *, strides, dilations,
                                 pads, groups: int) -> None:
    nsp = out.rank - 2
    kernel = list(w.shape[:nsp])
    C, cg, n_out = out.shape[-1], w.shape[-2], w.shape[-1]
    if not isinstance(C, int):
        raise NativeLoweringError(f"convolution gradient over a free number of channels ({C})")
    og = n_out // groups
    geo = _geometry(out, dy, kernel, strides, dilations, pads)
    in_px, out_px = dims.product(geo.in_sp), dims.product(geo.out_sp)
    k = kb.kernel("grouped_conv_grad_input")
    fb, b = k.fn, k.b
    ld, st = _accessors(k)
    pdx, pdy, pw = k.ptr(out), k.ptr(dy), k.ptr(w)
    acc = fb.var(F32, 0.0, name="acc")
    P = k.dim(out_px)
    with fb.loop(k.begin, k.end, name="n") as n:
        base = b.mul(n, b.mul(k.dim(in_px), i64(C)))
        with fb.loop(0, b.mul(k.dim(in_px), i64(C)), name="z") as z:
            st(pdx, b.add(base, z), ir.Constant(F32, 0.0))
        with fb.loop(0, P, name="p") as p:
            row = b.add(b.mul(n, P), p)
            _, outs = geo.decode(k, row)
            for t_index, tap in enumerate(geo.taps):
                valid, xoff = geo.tap_offset(k, n, outs, tap)
                with b.if_then(valid):
                    with fb.loop(0, C, name="c") as c:
                        g = b.sdiv(c, i64(cg))
                        ci = b.srem(c, i64(cg))
                        dyo = b.add(b.mul(row, i64(n_out)), b.mul(g, i64(og)))
                        wo = b.add(b.mul(b.add(i64(t_index * cg), ci), i64(n_out)), b.mul(g, i64(og)))
                        acc.set(ir.Constant(F32, 0.0))
                        with fb.loop(0, og, name="j") as j:
                            acc.set(b.fadd(acc.get(), b.fmul(ld(pdy, b.add(dyo, j)), ld(pw, b.add(wo, j)))))
                        q = b.add(xoff, c)
                        st(pdx, q, b.fadd(ld(pdx, q), acc.get()))
    kb.launch(k, geo.batch, 2 * math.prod(kernel) * C * og * (out_px if isinstance(out_px, int) else 64))


def emit_grouped_conv_grad_kernel(kb: KernelBuilder, x: Tensor, dy: Tensor, out: Tensor, *, strides, dilations,
                                  pads, groups: int) -> None:
    nsp = x.rank - 2
    kernel = list(out.shape[:nsp])
    cg, n_out = out.shape[-2], out.shape[-1]
    og = n_out // groups
    geo = _geometry(x, dy, kernel, strides, dilations, pads)
    out_px = dims.product(geo.out_sp)
    taps = math.prod(kernel)
    k = kb.kernel("grouped_conv_grad_kernel")
    fb, b = k.fn, k.b
    ld, st = _accessors(k)
    px, pdy, pdw = k.ptr(x), k.ptr(dy), k.ptr(out)
    rows = k.dim(dims.mul(geo.batch, out_px))
    P = k.dim(out_px)
    with fb.loop(k.begin, k.end, name="t") as t:
        tap, rem = [], t
        for kd in reversed(kernel):
            tap.append(b.srem(rem, i64(kd)))
            rem = b.sdiv(rem, i64(kd))
        tap.reverse()
        wbase = b.mul(t, i64(cg * n_out))
        with fb.loop(0, cg * n_out, name="z") as z:
            st(pdw, b.add(wbase, z), ir.Constant(F32, 0.0))
        with fb.loop(0, rows, name="r") as row:
            n = b.sdiv(row, P)
            _, outs = geo.decode(k, row)
            valid, xoff = geo.tap_offset(k, n, outs, tap)
            with b.if_then(valid):
                with fb.loop(0, n_out, name="o") as o:
                    g = b.sdiv(o, i64(og))
                    d = ld(pdy, b.add(b.mul(row, i64(n_out)), o))
                    xg = b.add(xoff, b.mul(g, i64(cg)))
                    with fb.loop(0, cg, name="ci") as ci:
                        q = b.add(wbase, b.add(b.mul(ci, i64(n_out)), o))
                        st(pdw, q, b.fadd(ld(pdw, q), b.fmul(ld(px, b.add(xg, ci)), d)))
    kb.launch(k, taps, 2 * cg * n_out * (out_px if isinstance(out_px, int) else 64))


__all__ = ["emit_grouped_conv_grad_input", "emit_grouped_conv_grad_kernel"]
