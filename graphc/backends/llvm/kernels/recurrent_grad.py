"""Backpropagation through time for LSTM, GRU (``reset_after``) and SimpleRNN.

1. The input projection of every step, ``x (N*T, F) @ kernel + bias``, is one GEMM.
2. One kernel, one group of MR batch rows per work item, re-runs the forward recurrence saving
   each step's pre-activations (and the previous state), then walks back through time writing
   the projection's gradient ``dproj`` (N, T, G*U) and carrying ``dh`` (``dc``) in the
   thread's scratch. The per-unit formulas run on vectors of units (a masked tail); the two
   recurrent products of a step, ``h @ recurrent_kernel`` forward and
   ``dz @ recurrent_kernel.T`` backward, run for the whole group on the GEMM micro-kernel
   (:func:`~graphc.backends.llvm.kernels.gemm.tile_compute`) over the recurrent kernel
   prepacked in panels, and in panels of its transpose (both packed once per step with the
   other weights). Rows past the batch in the last group are zeros in the products' operands.
3. The weight gradients are GEMMs over all (row, step) pairs: ``d_kernel = x.T @ dproj``,
   ``d_recurrent = h_prev.T @ dz``, ``dx = dproj @ kernel.T``; the bias gradient is a sum.

Steps are saved at the input's time index (``go_backwards`` reads step T-1-s at step s), so
the GEMMs of step 3 pair each saved step with the input row it came from.

With a mask, a masked step is skipped forward (the state stays) and backward (the state's
gradient passes through, its projection gradient is zero); the output of step t is the
state times "a step up to t was kept" (or "step t was kept" with ``zero_output_for_mask``),
so its gradient joins the state's only there. Each row's first kept step is kept in the
thread's scratch for that test.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64, vector_constant
from graphc.backends.llvm.kernels.gemm import (
    load_lanes,
    micro_tile,
    pack_mapped,
    packed_panels,
    store_lanes,
    tile_compute,
)
from graphc.backends.llvm.kernels.recurrent import GROUP_ROWS
from graphc.backends.llvm.kernels.recurrent_saved import kept_for_grad
from graphc.ir import dims


def emit_rnn_grad(kb: KernelBuilder, kind: str, x: Tensor, kernel: Tensor, rkernel: Tensor, bias: Tensor,
                  states: list[Tensor], cots: list[Tensor], outs: tuple, *, activation: Callable,
                  activation_deriv: Callable, recurrent_activation: Callable, recurrent_deriv: Callable,
                  go_backwards: bool, return_sequences: bool, reset_after: bool = True, mask: Tensor | None = None,
                  zero_output_for_mask: bool = False) -> None:
    """``outs`` = gradients of (x, kernel, recurrent_kernel, bias, initial state(s)); those None or that
    no op reads (``kb.op_unread``: an input sequence's gradient, the zero initial states') are not computed."""
    if x.dtype != "float32":
        raise NativeLoweringError(f"{kind}_grad over {x.dtype} inputs")
    if kind == "gru" and not reset_after:
        raise NativeLoweringError("gru_grad with reset_after=False: GRU(reset_after=False) has no native backward "
                                  "kernel; train it on the reference target")
    outs = tuple(None if i in kb.op_unread else o for i, o in enumerate(outs))
    N, T, F = x.shape
    U, GU = rkernel.shape
    NT = dims.mul(N, T)
    lstm, gru = kind == "lstm", kind == "gru"
    if gru:
        bias_in, bias_rec = kb.view(bias, (GU,)), kb.view(bias, (GU,), offset=GU)
    else:
        bias_in, bias_rec = bias, None
    kept = kept_for_grad(kb, kind, len(cots))
    if kept is None:  # recomputed here: the input projection, then the forward recurrence
        proj = kb.temp((N, T, GU))
        kb.matmul(x, kernel, proj, bias=bias_in)
        pre = kb.temp((N, T, GU))  # pre-activations of every step
        hprev = kb.temp((N, T, U))  # the state each step starts from
        cprev = kb.temp((N, T, U)) if lstm else None
        innerh = kb.temp((N, T, U)) if gru else None  # GRU: (h @ recurrent_kernel + bias)[2U:]
    else:  # written by the forward kernel
        proj = None
        pre, hprev, cprev, innerh = kept["pre"], kept["hprev"], kept.get("cprev"), kept.get("innerh")
    dproj = kb.temp((N, T, GU))
    dinner = kb.temp((N, T, GU)) if gru else None  # GRU: the recurrent projection's gradient
    # the recurrent products run on the GEMM micro-kernel over groups of MR batch rows: the
    # recurrent kernel in panels (as the forward packs it) and its transpose in panels
    gvw = kb.target.gemm_vw
    MR, NV = micro_tile(gvw, kb.target.num_vector_registers)
    MR = min(MR, GROUP_ROWS)
    NR = NV * gvw
    GUp, Up = -(-GU // NR) * NR, -(-U // NR) * NR
    rk_panels = packed_panels(kb, rkernel, NR) if kept is None else None
    rkt_panels = kb.packed_weight(rkernel, ("panels_t", NR), Up * GU * 4,
                                  pack_mapped(GU, U, NR, lambda b, kk, col: b.add(b.mul(col, i64(GU)), kk)))
    d_out, d_h = cots[0], cots[1]
    d_c = cots[2] if lstm else None
    dstate_outs = list(outs[4:])

    k = kb.kernel(f"{kind}_grad")
    fb, b, m = k.fn, k.b, k.m
    p = {name: k.ptr(t) for name, t in (("proj", proj), ("pre", pre), ("hprev", hprev), ("cprev", cprev),
                                        ("innerh", innerh), ("dproj", dproj), ("dinner", dinner),
                                        ("brec", bias_rec), ("d_out", d_out), ("d_h", d_h), ("d_c", d_c))
         if t is not None}
    pstates = [k.ptr(s) for s in states]
    pmask = k.ptr(mask) if mask is not None else None
    pdst = [k.ptr(o) if o is not None else None for o in dstate_outs]
    prk, prkt = k.ptr(rk_panels) if rk_panels is not None else None, k.ptr(rkt_panels)
    # the thread's scratch: the group's state and carried gradients, the products' operands and results
    sizes = dict(h=MR * U, c=MR * U, dh=MR * U, dc=MR * U, dz=MR * GU, ztile=MR * GUp, dtile=MR * Up, first=2 * MR)
    offsets, off = {}, 0
    for name, size in sizes.items():
        offsets[name] = off
        off += -(-size // 16) * 16  # each part 64-byte aligned
    scratch = k.thread_scratch(off * 4)
    s = {name: b.gep(scratch, [i64(o)], source_etype=F32) for name, o in offsets.items()}
    first_kept = s["first"]  # i64 per row: the row's first kept step (processing order), T if none
    Nv, Tv = k.dim(N), k.dim(T)
    vw = gvw  # the per-unit formulas on the micro-kernel's vectors (the widest)
    zero = vector_constant(ir.VectorType(F32, vw), 0.0)
    lanes = [vw]  # valid lanes of the vector body being emitted

    def ld(ptr, idx):
        return load_lanes(b, b.gep(ptr, [idx], source_etype=F32), vw, lanes[0])

    def st(ptr, idx, v):
        store_lanes(b, v, b.gep(ptr, [idx], source_etype=F32), vw, lanes[0])

    def units(body, n=U, name="j"):
        """body(j) over [0, n) in vectors of vw: full vectors in a loop, then a masked tail."""
        full = n // vw * vw
        if full:
            lanes[0] = vw
            with fb.loop(0, full, vw, name=name) as j:
                body(j)
        if n % vw:
            lanes[0] = n % vw
            body(i64(full))
        lanes[0] = vw

    def add(a, c):
        return b.add(a, i64(c)) if isinstance(c, int) else b.add(a, c)

    def first_of(r):
        return b.gep(first_kept, [r], source_etype=I64)

    def kept_at(n, t):
        """Whether processing step ``t`` of row ``n`` is kept (nonzero mask, NaN included)."""
        tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
        value = b.load(b.gep(pmask, [b.add(b.mul(n, Tv), tt)], source_etype=F32), typ=F32)
        return b.fcmp_unordered("!=", value, ir.Constant(F32, 0.0))

    def output_counts(n, r, t):
        """Whether the output of processing step ``t`` is the state (else zeros)."""
        if zero_output_for_mask:
            return kept_at(n, t)
        return b.icmp_signed(">=", t, b.load(first_of(r), typ=I64))

    def when_kept(n, t, body, otherwise=None):
        if pmask is None:
            body()
            return
        if otherwise is None:
            with b.if_then(kept_at(n, t)):
                body()
            return
        with b.if_else(kept_at(n, t)) as (then, other):
            with then:
                body()
            with other:
                otherwise()

    def product(a_tile, a_stride, kc, panels_ptr, width, out_tile):
        """out_tile (MR x width) = the MR rows of a_tile @ the packed panels (kc x width)."""
        with fb.loop(0, width // NR, name="panel") as q:
            panel = b.gep(panels_ptr, [b.mul(q, i64(kc * NR))], source_etype=F32)
            acc = tile_compute(k, None, panel, kc, NV, gvw, NR, a_base=a_tile, a_stride=a_stride, rows=MR)
            for r in range(MR):
                for v in range(NV):
                    dst = b.gep(out_tile, [b.add(b.mul(q, i64(NR)), i64(r * width + v * gvw))], source_etype=F32)
                    b.store(acc[r][v].get(), dst, align=4)

    def rows(body, name="r"):
        """body(r, n) for the group's valid rows."""
        with fb.loop(0, rows_valid, name=name) as r:
            body(r, b.add(i, r))

    with fb.loop(k.begin, k.end, name="group") as g:
        i = b.mul(g, i64(MR))
        rows_valid = fb.min_(b.sub(Nv, i), i64(MR))
        # the products' A operands start as zeros: rows past the batch stay zero
        for name in ("h", "dz") if kept is None else ("dz",):
            with fb.loop(0, sizes[name], vw, name=f"zero_{name}") as j:
                b.store(zero, b.gep(s[name], [j], source_etype=F32), align=4)

        if kept is None:
            # ------------------------------------------------ initial state
            def init_state(r, n):
                b.store(Tv, first_of(r))
                sources = (("h", pstates[0] if pstates else None), ("c", pstates[1] if len(pstates) > 1 else None))
                for s_name, src in sources[:2 if lstm else 1]:
                    srow, rrow = b.mul(n, i64(U)), b.mul(r, i64(U))
                    units(lambda j, s_name=s_name, src=src, srow=srow, rrow=rrow:
                          st(s[s_name], add(rrow, j), ld(src, add(srow, j)) if src is not None else zero))

            rows(init_state, "r0")
            # ------------------------------------------------ forward, saving each step
            with fb.loop(0, Tv, name="t") as t:
                tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
                product(s["h"], U, U, prk, GUp, s["ztile"])

                def forward_row(r, n, t=t, tt=tt):
                    row = b.add(b.mul(n, Tv), tt)
                    urow, grow = b.mul(row, i64(U)), b.mul(row, i64(GU))
                    hrow, zrow = b.mul(r, i64(U)), b.mul(r, i64(GUp))

                    def save(j):
                        st(p["hprev"], add(urow, j), ld(s["h"], add(hrow, j)))
                        if lstm:
                            st(p["cprev"], add(urow, j), ld(s["c"], add(hrow, j)))

                    units(save)

                    def z(j, q):
                        """The recurrent product's column q*U + j (+ the recurrent bias of a GRU)."""
                        v = ld(s["ztile"], add(zrow, add(j, q * U)))
                        return b.fadd(v, ld(p["brec"], add(j, q * U))) if gru else v

                    if lstm:
                        def step(j):
                            zs = [b.fadd(ld(p["proj"], add(grow, add(j, q * U))), z(j, q)) for q in range(4)]
                            for q in range(4):
                                st(p["pre"], add(grow, add(j, q * U)), zs[q])
                            i_, f_ = recurrent_activation(m, zs[0]), recurrent_activation(m, zs[1])
                            g_, o_ = activation(m, zs[2]), recurrent_activation(m, zs[3])
                            c_new = m.fma(f_, ld(s["c"], add(hrow, j)), m.mul(i_, g_))
                            st(s["c"], add(hrow, j), c_new)
                            st(s["h"], add(hrow, j), m.mul(o_, activation(m, c_new)))
                    elif gru:
                        def step(j):
                            zp = b.fadd(ld(p["proj"], add(grow, j)), z(j, 0))
                            rp = b.fadd(ld(p["proj"], add(grow, add(j, U))), z(j, 1))
                            ih = z(j, 2)
                            r_ = recurrent_activation(m, rp)
                            hp = m.fma(r_, ih, ld(p["proj"], add(grow, add(j, 2 * U))))
                            st(p["pre"], add(grow, j), zp)
                            st(p["pre"], add(grow, add(j, U)), rp)
                            st(p["pre"], add(grow, add(j, 2 * U)), hp)
                            st(p["innerh"], add(urow, j), ih)
                            z_, hh = recurrent_activation(m, zp), activation(m, hp)
                            st(s["h"], add(hrow, j), m.fma(z_, m.sub(ld(s["h"], add(hrow, j)), hh), hh))
                    else:
                        def step(j):
                            zp = b.fadd(ld(p["proj"], add(grow, j)), z(j, 0))
                            st(p["pre"], add(grow, j), zp)
                            st(s["h"], add(hrow, j), activation(m, zp))

                    def kept_step():
                        units(step)
                        if pmask is not None:
                            b.store(fb.min_(b.load(first_of(r), typ=I64), t), first_of(r))

                    when_kept(n, t, kept_step)

                rows(forward_row)
        elif pmask is not None:
            def find_first_kept(r, n):
                b.store(Tv, first_of(r))
                with fb.loop(0, Tv, name="tf") as t:
                    with b.if_then(kept_at(n, t)):
                        b.store(fb.min_(b.load(first_of(r), typ=I64), t), first_of(r))

            rows(find_first_kept, "r0")

        # ------------------------------------------------ backward through time
        def init_d(r, n):
            srow, rrow = b.mul(n, i64(U)), b.mul(r, i64(U))

            def body(j):
                st(s["dh"], add(rrow, j), ld(p["d_h"], add(srow, j)))
                if lstm:
                    st(s["dc"], add(rrow, j), ld(p["d_c"], add(srow, j)))

            units(body)
            if not return_sequences:
                def add_last(j):
                    st(s["dh"], add(rrow, j), b.fadd(ld(s["dh"], add(rrow, j)), ld(p["d_out"], add(srow, j))))

                if pmask is None:
                    units(add_last)
                else:
                    with b.if_then(output_counts(n, r, b.sub(Tv, i64(1)))):
                        units(add_last)

        rows(init_d, "r1")
        with fb.loop(0, Tv, name="tb") as tb:
            t = b.sub(b.sub(Tv, i64(1)), tb)  # output step, last first
            tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t

            def backward_row(r, n, t=t, tt=tt):
                row = b.add(b.mul(n, Tv), tt)
                urow, grow = b.mul(row, i64(U)), b.mul(row, i64(GU))
                orow = b.mul(b.add(b.mul(n, Tv), t), i64(U))
                hrow, dzrow = b.mul(r, i64(U)), b.mul(r, i64(GU))
                if return_sequences:
                    def add_out(j):
                        st(s["dh"], add(hrow, j), b.fadd(ld(s["dh"], add(hrow, j)), ld(p["d_out"], add(orow, j))))

                    if pmask is None:
                        units(add_out)
                    else:
                        with b.if_then(output_counts(n, r, t)):
                            units(add_out)

                def put(q, j, dproj_v, dz_v=None):
                    """Gate block q's gradient: the projection's (global) and the recurrent product's (scratch)."""
                    st(p["dproj"], add(grow, add(j, q * U)), dproj_v)
                    if gru:
                        st(p["dinner"], add(grow, add(j, q * U)), dz_v)
                    st(s["dz"], add(dzrow, add(j, q * U)), dproj_v if dz_v is None else dz_v)

                if lstm:
                    def back(j):
                        zs = [ld(p["pre"], add(grow, add(j, q * U))) for q in range(4)]
                        i_, f_ = recurrent_activation(m, zs[0]), recurrent_activation(m, zs[1])
                        g_, o_ = activation(m, zs[2]), recurrent_activation(m, zs[3])
                        cp = ld(p["cprev"], add(urow, j))
                        c_new = m.fma(f_, cp, m.mul(i_, g_))
                        dh = ld(s["dh"], add(hrow, j))
                        dc = b.fadd(ld(s["dc"], add(hrow, j)), m.mul(m.mul(dh, o_), activation_deriv(m, c_new)))
                        dzs = [m.mul(m.mul(dc, g_), recurrent_deriv(m, zs[0])),
                               m.mul(m.mul(dc, cp), recurrent_deriv(m, zs[1])),
                               m.mul(m.mul(dc, i_), activation_deriv(m, zs[2])),
                               m.mul(m.mul(dh, activation(m, c_new)), recurrent_deriv(m, zs[3]))]
                        for q in range(4):
                            put(q, j, dzs[q])
                        st(s["dc"], add(hrow, j), m.mul(dc, f_))
                        st(s["dh"], add(hrow, j), zero)
                elif gru:
                    def back(j):
                        zp, rp, hp = (ld(p["pre"], add(grow, add(j, q * U))) for q in range(3))
                        z_, r_, hh = recurrent_activation(m, zp), recurrent_activation(m, rp), activation(m, hp)
                        dh = ld(s["dh"], add(hrow, j))
                        hpv = ld(p["hprev"], add(urow, j))
                        dzg = m.mul(m.mul(dh, m.sub(hpv, hh)), recurrent_deriv(m, zp))
                        dhp = m.mul(m.mul(dh, m.sub(m.const(1.0, z_), z_)), activation_deriv(m, hp))
                        drg = m.mul(m.mul(dhp, ld(p["innerh"], add(urow, j))), recurrent_deriv(m, rp))
                        put(0, j, dzg, dzg)
                        put(1, j, drg, drg)
                        put(2, j, dhp, m.mul(dhp, r_))
                        st(s["dh"], add(hrow, j), m.mul(dh, z_))
                else:
                    def back(j):
                        dpre = m.mul(ld(s["dh"], add(hrow, j)), activation_deriv(m, ld(p["pre"], add(grow, j))))
                        put(0, j, dpre)
                        st(s["dh"], add(hrow, j), zero)

                def masked_back():
                    """The state's gradient passes through; the projections' gradients are zero."""
                    units(lambda j: st(p["dproj"], add(grow, j), zero), GU, "z0")
                    if gru:
                        units(lambda j: st(p["dinner"], add(grow, j), zero), GU, "z1")

                when_kept(n, t, lambda: units(back), masked_back)

            rows(backward_row)
            # dh_prev += dz @ recurrent_kernel.T for the group's rows at once
            product(s["dz"], GU, GU, prkt, Up, s["dtile"])

            def carry(r, n, t=t):
                hrow, trow = b.mul(r, i64(U)), b.mul(r, i64(Up))
                when_kept(n, t, lambda: units(lambda j: st(s["dh"], add(hrow, j), b.fadd(
                    ld(s["dh"], add(hrow, j)), ld(s["dtile"], add(trow, j))))))

            rows(carry, "r2")

        def write_dstates(r, n):
            srow, rrow = b.mul(n, i64(U)), b.mul(r, i64(U))
            for s_name, dst in zip(("dh", "dc"), pdst):
                if dst is not None:
                    units(lambda j, s_name=s_name, dst=dst: st(dst, add(srow, j), ld(s[s_name], add(rrow, j))))

        rows(write_dstates, "r3")
    kb.launch(k, dims.ceildiv(N, MR), 6 * MR * U * GU * (T if isinstance(T, int) else 32))

    # ---------------------------------------------------- weight gradients
    dx, dk, drk, db = outs[:4]
    d2 = kb.view(dproj, (NT, GU))
    products = []
    if dk is not None:
        products.append((kb.view(x, (NT, F)), d2, dk))
    if drk is not None:
        products.append((kb.view(hprev, (NT, U)), kb.view(dinner if gru else dproj, (NT, GU)), drk))
    if products and max(F, U) <= DIRECT_WIDTH and GU <= DIRECT_WIDTH:
        _transposed_products(kb, products, NT, MR, NV)
    else:  # wide layers: the operands transposed, then the packed GEMM (its blocking pays off)
        for a, g, out in products:
            at = kb.temp((a.shape[1], NT))
            kb.transpose(at, a, (1, 0))
            kb.matmul(at, g, out)
    if dx is not None:
        kt = kb.temp((GU, F))
        kb.transpose(kt, kernel, (1, 0))
        kb.matmul(d2, kt, kb.view(dx, (NT, F)))
    if db is not None:
        if gru:
            kb.reduce(kb.view(db, (GU,)), d2, (0,), "sum")
            kb.reduce(kb.view(db, (GU,), offset=GU), kb.view(dinner, (NT, GU)), (0,), "sum")
        else:
            kb.reduce(db, d2, (0,), "sum")


# the widest layer (input features, units, gate columns) whose weight gradients are direct a.T @ g tiles:
# rows of both operands a few cache lines long, so strided row reads neither alias in L1 nor waste lines
DIRECT_WIDTH = 256
ROWS_PER_CHUNK = 64  # of the (row, step) pairs a weight gradient sums over: its operands' chunks stay in L1/L2


def _transposed_products(kb: KernelBuilder, products: list[tuple[Tensor, Tensor, Tensor]], M, MR: int,
                         NV: int) -> None:
    """``out = a.T @ g`` for each ``(a (M, Fa), g (M, G), out (Fa, G))``, all in one launch.

    A weight's gradient sums over every (row, step) pair: M is long, Fa and G are a layer's
    widths. A work item is a group of panels (NR columns) of one ``out``; it walks M in chunks of
    ROWS_PER_CHUNK rows and, per chunk, every panel of its group and every MR-row block of ``out``:
    an MR x NR tile in registers summed over the chunk's rows (per row NV vectors of ``g``, MR
    broadcast elements of ``a``, MR * NV fused multiply-adds), then added to ``out``. The chunk's
    rows of ``g`` stay in L1 across the blocks and its rows of ``a`` in L2 across the panels, so
    each operand streams from memory about once per item. Neither is transposed or packed first."""
    NR = NV * kb.target.gemm_vw
    k = kb.kernel("rnn_weight_grads")
    b = k.b
    first = 0
    spans = []
    for _, _, out in products:
        panels = -(-out.shape[1] // NR)
        group = 4 if panels >= 8 else 1
        items = -(-panels // group)
        spans.append((first, items, panels, group))
        first += items
    with k.fn.loop(k.begin, k.end, name="item") as item:
        for (a, g, out), (lo, items, panels, group) in zip(products, spans):
            inside = b.and_(b.icmp_signed(">=", item, i64(lo)), b.icmp_signed("<", item, i64(lo + items)))
            with b.if_then(inside):
                q0 = b.mul(b.sub(item, i64(lo)), i64(group))
                q1 = k.fn.min_(b.add(q0, i64(group)), i64(panels))
                _transposed_panels(k, a, g, out, M, q0, q1, MR, NV)
    kb.launch(k, first, 2 * MR * NR * (M if isinstance(M, int) else 256))


def _transposed_panels(k, a: Tensor, g: Tensor, out: Tensor, M, q0, q1, MR: int, NV: int) -> None:
    """Panels [q0, q1) of ``out = a.T @ g``, M in chunks (see :func:`_transposed_products`)."""
    fb, b = k.fn, k.b
    gvw = k.kb.target.gemm_vw
    NR = NV * gvw
    Fa, G = out.shape
    panels = -(-G // NR)
    full = [gvw] * NV
    tail = [max(0, min(gvw, G - (panels - 1) * NR - v * gvw)) for v in range(NV)]
    Mv = k.dim(M)
    with fb.loop(0, Mv, ROWS_PER_CHUNK, name="chunk") as m0:  # free dims are at least 1: M > 0
        m1 = fb.min_(b.add(m0, i64(ROWS_PER_CHUNK)), Mv)
        first = b.icmp_signed("==", m0, i64(0))
        with fb.loop(q0, q1, name="q") as q:
            with fb.loop(0, -(-Fa // MR), name="fb") as fblock:
                f0 = b.mul(fblock, i64(MR))
                if tail == full:
                    _transposed_tile(k, a, g, out, m0, m1, first, f0, q, MR, NV, full)
                else:
                    with b.if_else(b.icmp_signed("<", q, i64(panels - 1))) as (then, last):
                        with then:
                            _transposed_tile(k, a, g, out, m0, m1, first, f0, q, MR, NV, full)
                        with last:
                            _transposed_tile(k, a, g, out, m0, m1, first, f0, q, MR, NV, tail)


def _transposed_tile(k, a: Tensor, g: Tensor, out: Tensor, m0, m1, first, f0, q, MR: int, NV: int,
                     valid: list[int]) -> None:
    """Rows f0.. (MR) and panel q (NR columns, ``valid`` lanes per vector) of ``out = a.T @ g``: the sum
    over rows [m0, m1) stored (``first``) or added to ``out``."""
    fb, b = k.fn, k.b
    gvw = k.kb.target.gemm_vw
    vt = ir.VectorType(F32, gvw)
    Fa, G = out.shape
    pa, pg, po = k.ptr(a), k.ptr(g), k.ptr(out)
    # a's columns past Fa read its last column (those rows of the tile are not stored)
    cols = [fb.min_(b.add(f0, i64(r)), i64(Fa - 1)) for r in range(MR)]
    g0 = b.mul(q, i64(NV * gvw))
    acc = [[fb.var(vt, name=f"w{r}_{v}") for v in range(NV)] for r in range(MR)]
    for row in acc:
        for var in row:
            var.set(vector_constant(vt, None))
    with fb.loop(m0, m1, name="m") as mm:
        grow = b.gep(pg, [b.add(b.mul(mm, i64(G)), g0)], source_etype=F32)
        gv = [load_lanes(b, b.gep(grow, [i64(v * gvw)], source_etype=F32), gvw, valid[v]) for v in range(NV)]
        arow = b.gep(pa, [b.mul(mm, i64(Fa))], source_etype=F32)
        for r in range(MR):
            av = k.splat(b.load(b.gep(arow, [cols[r]], source_etype=F32), typ=F32), gvw)
            for v in range(NV):
                acc[r][v].set(mathlib.fma(b, av, gv[v], acc[r][v].get()))
    rows_valid = fb.min_(b.sub(i64(Fa), f0), i64(MR))
    for r in range(MR):
        with b.if_then(b.icmp_signed("<", i64(r), rows_valid)):
            orow = b.gep(po, [b.add(b.mul(b.add(f0, i64(r)), i64(G)), g0)], source_etype=F32)
            for v in range(NV):
                if valid[v] > 0:
                    dst = b.gep(orow, [i64(v * gvw)], source_etype=F32)
                    total = acc[r][v].get()
                    with b.if_then(b.not_(first)):  # later chunks add to the earlier ones' sum
                        var = acc[r][v]
                        var.set(b.fadd(load_lanes(b, dst, gvw, valid[v]), total))
                    store_lanes(b, acc[r][v].get(), dst, gvw, valid[v])


__all__ = ["emit_rnn_grad"]
