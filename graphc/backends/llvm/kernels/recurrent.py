"""Recurrent layers: LSTM, GRU and SimpleRNN over a whole sequence.

1. The input projection of every step, ``x (N*T, F) @ kernel + bias``, is one GEMM into a
   scratch tensor (N, T, G*U).
2. One kernel runs the recurrence. Batch rows are independent, so work items are groups of
   MR rows, each running all T steps on its own: per step, ``h @ recurrent_kernel`` with the
   GEMM micro-kernel (the recurrent kernel prepacked in panels) into a per-thread tile, then
   the gates, vectorized along the units, updating the state in place. No synchronization
   between steps, and no launch per step.

The state lives in the op's state outputs (h, and c for the LSTM); the sequence output gets
a copy of h at every step when ``return_sequences``, else the final h. With ``go_backwards``
step t reads input step T-1-t and writes output step t (Keras's reversed order).

With a mask, a row whose step is masked skips the update (its state stays) and writes the
previous step's output, or zeros (before its first kept step, or always with
``zero_output_for_mask``); a per-row flag in the thread's scratch remembers whether a step
was kept, for the last output.

In a training step (the op's gradient op in the graph, see :mod:`.recurrent_saved`) the kernel
also writes what the backward kernel needs: every step's pre-activations and the state it
started from, at the input's time index, so the backward kernel does not recompute them.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, i64, vector_constant
from graphc.backends.llvm.kernels.gemm import (
    each_panel_group,
    load_lanes,
    micro_tile,
    packed_panels,
    row_compute,
    store_lanes,
    tile_compute,
)
from graphc.backends.llvm.kernels.recurrent_saved import forward_has_grad, keep_for_grad
from graphc.ir import dims

# batch rows per work item: enough for the micro-kernel's register tile, few enough that a batch
# of 32 splits evenly over two threads (and into whole groups: a partial group runs row by row)
GROUP_ROWS = 8


def emit_rnn(kb: KernelBuilder, kind: str, x: Tensor, kernel: Tensor, rkernel: Tensor, bias: Tensor,
             states: list[Tensor], outs: tuple, *, activation: Callable, recurrent_activation: Callable,
             go_backwards: bool, return_sequences: bool, reset_after: bool = True, mask: Tensor | None = None,
             zero_output_for_mask: bool = False) -> None:
    if x.dtype != "float32":
        raise NativeLoweringError(f"{kind} over {x.dtype} inputs")
    for w in (rkernel,):
        if not (w.is_constant and w.buf is not None and w.buf.kind == "weight"):
            raise NativeLoweringError(f"{kind} with a recurrent kernel computed at run time")
    N, T, F = x.shape
    U = rkernel.shape[0]
    GU = rkernel.shape[1]
    # 1. input projection
    proj = kb.temp((N, T, GU))
    if kind == "gru" and reset_after:
        bias_in, bias_rec = kb.view(bias, (GU,)), kb.view(bias, (GU,), offset=GU)
    else:
        bias_in, bias_rec = bias, None
    kb.matmul(x, kernel, proj, bias=bias_in)
    # 2. the recurrence
    vw = kb.target.gemm_vw
    MR, NV = micro_tile(vw, kb.target.num_vector_registers)
    MR = min(MR, GROUP_ROWS)
    NR = NV * vw
    seq_out, h_out = outs[0], outs[1]
    c_out = outs[2] if kind == "lstm" else None
    if kind == "gru" and not reset_after:
        packs = [(packed_panels(kb, rkernel, NR, 0, 2 * U), 2 * U), (packed_panels(kb, rkernel, NR, 2 * U, U), U)]
    else:
        packs = [(packed_panels(kb, rkernel, NR), GU)]
    widths = [-(-cols // NR) * NR for _, cols in packs]

    # kept for the gradient op: pre-activations, the state each step starts from (GRU: the
    # recurrent product's candidate part), as the backward kernel would recompute them
    kept = {}
    if (kind != "gru" or reset_after) and forward_has_grad(kb):
        kept = {"pre": kb.temp((N, T, GU)), "hprev": kb.temp((N, T, U))}
        if kind == "lstm":
            kept["cprev"] = kb.temp((N, T, U))
        if kind == "gru":
            kept["innerh"] = kb.temp((N, T, U))
        keep_for_grad(kb, kept)

    k = kb.kernel(kind)
    fb, b, m = k.fn, k.b, k.m
    pkept = {name: k.ptr(t) for name, t in kept.items()}
    ptr = {name: k.ptr(t) for name, t in (("proj", proj), ("h", h_out), ("seq", seq_out)) if t is not None}
    pc = k.ptr(c_out) if c_out is not None else None
    pstates = [k.ptr(s) for s in states]
    pbrec = k.ptr(bias_rec) if bias_rec is not None else None
    pmask = k.ptr(mask) if mask is not None else None
    ppacks = [k.ptr(p) for p, _ in packs]
    tile_floats = sum(MR * wd for wd in widths) + MR * U + MR  # + a kept-step flag per row
    scratch = k.thread_scratch(tile_floats * 4)
    tiles = []
    off = 0
    for wd in widths:
        tiles.append(b.gep(scratch, [i64(off)], source_etype=F32))
        off += MR * wd
    rh_tile = b.gep(scratch, [i64(off)], source_etype=F32)
    seen = b.gep(scratch, [i64(off + MR * U)], source_etype=F32)  # per row: 1.0 once a step was kept
    Nv, Tv = k.dim(N), k.dim(T)
    vt = ir.VectorType(F32, vw)

    def for_units(body):
        """body(j, lanes_valid) over the U units: full vectors in a loop, then a masked tail."""
        full = U // vw * vw
        if full:
            with fb.loop(0, full, vw, name="u") as j:
                body(j, vw)
        if U % vw:
            body(i64(full), U % vw)

    def vload(p, idx, valid):
        return load_lanes(b, b.gep(p, [idx], source_etype=F32), vw, valid)

    def vstore(p, idx, val, valid):
        store_lanes(b, val, b.gep(p, [idx], source_etype=F32), vw, valid)

    zeros = vector_constant(vt, 0.0)

    def kept_at(n, tt):
        """Whether the mask keeps input step ``tt`` of batch row ``n`` (nonzero, NaN included)."""
        value = b.load(b.gep(pmask, [b.add(b.mul(n, Tv), tt)], source_etype=F32), typ=F32)
        return b.fcmp_unordered("!=", value, ir.Constant(F32, 0.0))

    def guarded(n, tt, r, t, srow, update):
        """``update()`` where the step is kept; else the masked step's output (previous or zeros)."""
        if pmask is None:
            update()
            return
        with b.if_else(kept_at(n, tt)) as (then, otherwise):
            with then:
                update()
                b.store(ir.Constant(F32, 1.0), b.gep(seen, [r], source_etype=F32))
            with otherwise:
                if return_sequences:
                    for_units(lambda j, valid: vstore(ptr["seq"], b.add(srow, j), zeros, valid))
                    if not zero_output_for_mask:
                        with b.if_then(b.icmp_signed(">", t, i64(0))):
                            prev = b.sub(srow, i64(U))
                            for_units(lambda j, valid: vstore(ptr["seq"], b.add(srow, j),
                                                              vload(ptr["seq"], b.add(prev, j), valid), valid))

    def matmul_rows(i, rows_valid, a_base, a_stride, pack_index):
        """tile[pack_index][r][:] = (rows of a) @ packed weights, for the rows_valid (<= MR) rows from i.

        A full group of MR rows runs the register-tiled micro-kernel; fewer rows (small batches) run
        one at a time over PANEL_GROUP panels at once (no work goes to missing rows), each summed as a
        tile's row is, so a sample's state does not depend on the others in its group."""
        packed = ppacks[pack_index]
        width = widths[pack_index]
        panels = width // NR

        def store(r, p, acc_row):
            for v in range(NV):
                q = b.gep(tiles[pack_index], [b.add(b.add(b.mul(r, i64(width)), b.mul(p, i64(NR))), i64(v * vw))],
                          source_etype=F32)
                b.store(acc_row[v].get(), q, align=4)

        with b.if_else(b.icmp_signed("==", rows_valid, i64(MR))) as (full, partial):
            with full:
                with fb.loop(0, panels, name="panel") as p:
                    panel = b.gep(packed, [b.mul(p, i64(U * NR))], source_etype=F32)
                    acc = tile_compute(k, None, panel, U, NV, vw, NR, a_base=a_base, a_stride=a_stride, rows=MR)
                    for r in range(MR):
                        store(i64(r), p, acc[r])
            with partial:
                with fb.loop(0, rows_valid, name="r1") as r:
                    a_row = b.gep(a_base, [b.mul(r, i64(a_stride))], source_etype=F32)

                    def group(p, count, r=r, a_row=a_row):
                        panel = b.gep(packed, [b.mul(p, i64(U * NR))], source_etype=F32)
                        acc = row_compute(k, a_row, panel, U, NV, vw, NR, panels=count, panel_step=U * NR)
                        for g in range(count):
                            store(r, b.add(p, i64(g)), acc[g])

                    each_panel_group(k, 0, panels, group)

    act, ract = activation, recurrent_activation
    with fb.loop(k.begin, k.end, name="group") as g:
        i = b.mul(g, i64(MR))
        rows_valid = fb.min_(b.sub(Nv, i), i64(MR))
        h_base = b.gep(ptr["h"], [b.mul(i, i64(U))], source_etype=F32)
        c_base = b.gep(pc, [b.mul(i, i64(U))], source_etype=F32) if pc is not None else None
        # initial state
        with fb.loop(0, rows_valid, name="r0") as r:
            ro = b.mul(r, i64(U))
            b.store(ir.Constant(F32, 0.0), b.gep(seen, [r], source_etype=F32))

            def init(j, valid, ro=ro):
                idx = b.add(ro, j)
                for base, src in ((h_base, pstates[0] if pstates else None),
                                  (c_base, pstates[1] if len(pstates) > 1 else None)):
                    if base is None:
                        continue
                    if src is None:
                        val = vector_constant(vt, 0.0)
                    else:
                        val = vload(b.gep(src, [b.mul(i, i64(U))], source_etype=F32), idx, valid)
                    vstore(base, idx, val, valid)

            for_units(init)
        with fb.loop(0, Tv, name="t") as t:
            tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
            matmul_rows(i, rows_valid, h_base, U, 0)
            with fb.loop(0, rows_valid, name="r") as r:
                n = b.add(i, r)
                prow = b.mul(b.add(b.mul(n, Tv), tt), i64(GU))  # proj[n, tt, :]
                zrow = b.mul(r, i64(widths[0]))
                hrow = b.mul(r, i64(U))
                srow = b.mul(b.add(b.mul(n, Tv), t), i64(U))
                if kept:
                    urow = b.mul(b.add(b.mul(n, Tv), tt), i64(U))  # the input step's row of the kept states

                    def keep_state(j, valid, urow=urow, hrow=hrow):
                        vstore(pkept["hprev"], b.add(urow, j), vload(h_base, b.add(hrow, j), valid), valid)
                        if "cprev" in pkept:
                            vstore(pkept["cprev"], b.add(urow, j), vload(c_base, b.add(hrow, j), valid), valid)

                    for_units(keep_state)

                def keep_pre(j, col, value, valid, prow=prow):
                    if kept:
                        vstore(pkept["pre"], b.add(prow, b.add(j, i64(col))), value, valid)
                    return value

                def gate_in(j, col, valid, prow=prow, zrow=zrow):
                    """projection + recurrent part of column ``col`` + j."""
                    pj = b.add(j, i64(col))
                    return b.fadd(vload(ptr["proj"], b.add(prow, pj), valid), vload(tiles[0], b.add(zrow, pj), valid))

                def finish(j, h_new, valid, hrow=hrow, srow=srow):
                    vstore(h_base, b.add(hrow, j), h_new, valid)
                    if return_sequences:
                        vstore(ptr["seq"], b.add(srow, j), h_new, valid)

                if kind == "lstm":
                    def step(j, valid, hrow=hrow):
                        ig = ract(m, keep_pre(j, 0, gate_in(j, 0, valid), valid))
                        fg = ract(m, keep_pre(j, U, gate_in(j, U, valid), valid))
                        gg = act(m, keep_pre(j, 2 * U, gate_in(j, 2 * U, valid), valid))
                        og = ract(m, keep_pre(j, 3 * U, gate_in(j, 3 * U, valid), valid))
                        c_new = m.fma(fg, vload(c_base, b.add(hrow, j), valid), m.mul(ig, gg))
                        vstore(c_base, b.add(hrow, j), c_new, valid)
                        finish(j, m.mul(og, act(m, c_new)), valid)
                elif kind == "simple_rnn":
                    def step(j, valid):
                        finish(j, act(m, keep_pre(j, 0, gate_in(j, 0, valid), valid)), valid)
                elif reset_after:
                    def step(j, valid, prow=prow, zrow=zrow, hrow=hrow, urow=urow if kept else None):
                        def inner(col):
                            v = vload(tiles[0], b.add(zrow, b.add(j, i64(col))), valid)
                            return b.fadd(v, vload(pbrec, b.add(j, i64(col)), valid))

                        def px(col):
                            return vload(ptr["proj"], b.add(prow, b.add(j, i64(col))), valid)

                        zg = ract(m, keep_pre(j, 0, b.fadd(px(0), inner(0)), valid))
                        rg = ract(m, keep_pre(j, U, b.fadd(px(U), inner(U)), valid))
                        candidate = inner(2 * U)
                        if kept:
                            vstore(pkept["innerh"], b.add(urow, j), candidate, valid)
                        hh = act(m, keep_pre(j, 2 * U, m.fma(rg, candidate, px(2 * U)), valid))
                        h_old = vload(h_base, b.add(hrow, j), valid)
                        finish(j, m.fma(zg, m.sub(h_old, hh), hh), valid)
                else:
                    # reset gate applied to h before the projection: r * h first, its product next
                    def step(j, valid, hrow=hrow):
                        rg = ract(m, gate_in(j, U, valid))
                        vstore(rh_tile, b.add(hrow, j), m.mul(rg, vload(h_base, b.add(hrow, j), valid)), valid)

                guarded(n, tt, r, t, srow, lambda: for_units(step))
            if kind == "gru" and not reset_after:
                matmul_rows(i, rows_valid, rh_tile, U, 1)
                with fb.loop(0, rows_valid, name="r2") as r:
                    n = b.add(i, r)
                    prow = b.mul(b.add(b.mul(n, Tv), tt), i64(GU))
                    zrow = b.mul(r, i64(widths[0]))
                    z2row = b.mul(r, i64(widths[1]))
                    hrow = b.mul(r, i64(U))
                    srow = b.mul(b.add(b.mul(n, Tv), t), i64(U))

                    def step2(j, valid, prow=prow, zrow=zrow, z2row=z2row, hrow=hrow, srow=srow):
                        zg = ract(m, b.fadd(vload(ptr["proj"], b.add(prow, j), valid),
                                            vload(tiles[0], b.add(zrow, j), valid)))
                        hh = act(m, b.fadd(vload(ptr["proj"], b.add(prow, b.add(j, i64(2 * U))), valid),
                                           vload(tiles[1], b.add(z2row, j), valid)))
                        h_old = vload(h_base, b.add(hrow, j), valid)
                        h_new = m.fma(zg, m.sub(h_old, hh), hh)
                        vstore(h_base, b.add(hrow, j), h_new, valid)
                        if return_sequences:
                            vstore(ptr["seq"], b.add(srow, j), h_new, valid)

                    if pmask is None:
                        for_units(step2)
                    else:
                        with b.if_then(kept_at(n, tt)):
                            for_units(step2)
        if not return_sequences:
            with fb.loop(0, rows_valid, name="rl") as r:
                ro = b.mul(r, i64(U))
                out_base = b.gep(ptr["seq"], [b.mul(i, i64(U))], source_etype=F32)

                def last(j, valid, ro=ro, out_base=out_base):
                    vstore(out_base, b.add(ro, j), vload(h_base, b.add(ro, j), valid), valid)

                if pmask is None:
                    for_units(last)
                else:
                    # the last output is the state where Keras's is (else zeros): a step was kept,
                    # or, with zero_output_for_mask, the last step was
                    if zero_output_for_mask:
                        keep = kept_at(b.add(i, r), i64(0) if go_backwards else b.sub(Tv, i64(1)))
                    else:
                        flag = b.load(b.gep(seen, [r], source_etype=F32), typ=F32)
                        keep = b.fcmp_ordered("!=", flag, ir.Constant(F32, 0.0))
                    with b.if_else(keep) as (then, otherwise):
                        with then:
                            for_units(last)
                        with otherwise:
                            for_units(lambda j, valid, ro=ro, out_base=out_base:
                                      vstore(out_base, b.add(ro, j), zeros, valid))
    kb.launch(k, dims.ceildiv(N, MR), 2 * MR * U * GU * (T if isinstance(T, int) else 32))


__all__ = ["emit_rnn"]
