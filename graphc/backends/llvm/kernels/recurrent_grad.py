"""Backpropagation through time for LSTM, GRU (``reset_after``) and SimpleRNN.

1. The input projection of every step, ``x (N*T, F) @ kernel + bias``, is one GEMM.
2. One kernel, one batch row per work item, re-runs the forward recurrence saving each
   step's pre-activations (and the previous state), then walks back through time writing
   the projection's gradient ``dproj`` (N, T, G*U) and carrying ``dh`` (``dc``) in the
   thread's scratch. The per-unit formulas run on vectors of units (a masked tail), and the
   two recurrent products are row updates: ``z += h[k] * recurrent_kernel[k, :]`` and
   ``dh_prev += dz[j] * recurrent_kernel.T[j, :]`` (the transpose made once per call).
3. The weight gradients are GEMMs over all (row, step) pairs: ``d_kernel = x.T @ dproj``,
   ``d_recurrent = h_prev.T @ dz``, ``dx = dproj @ kernel.T``; the bias gradient is a sum.

Steps are saved at the input's time index (``go_backwards`` reads step T-1-s at step s), so
the GEMMs of step 3 pair each saved step with the input row it came from.

With a mask, a masked step is skipped forward (the state stays) and backward (the state's
gradient passes through, its projection gradient is zero); the output of step t is the
state times "a step up to t was kept" (or "step t was kept" with ``zero_output_for_mask``),
so its gradient joins the state's only there. The first kept step of the row is kept in a
local for that test.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64
from graphc.backends.llvm.kernels.gemm import load_lanes, store_lanes
from graphc.ir import dims


def emit_rnn_grad(kb: KernelBuilder, kind: str, x: Tensor, kernel: Tensor, rkernel: Tensor, bias: Tensor,
                  states: list[Tensor], cots: list[Tensor], outs: tuple, *, activation: Callable,
                  activation_deriv: Callable, recurrent_activation: Callable, recurrent_deriv: Callable,
                  go_backwards: bool, return_sequences: bool, reset_after: bool = True, mask: Tensor | None = None,
                  zero_output_for_mask: bool = False) -> None:
    """``outs`` = gradients of (x, kernel, recurrent_kernel, bias, initial state(s)); None if unread."""
    if x.dtype != "float32":
        raise NativeLoweringError(f"{kind}_grad over {x.dtype} inputs")
    if kind == "gru" and not reset_after:
        raise NativeLoweringError("gru_grad with reset_after=False: GRU(reset_after=False) has no native backward "
                                  "kernel; train it on the reference target")
    N, T, F = x.shape
    U, GU = rkernel.shape
    NT = dims.mul(N, T)
    lstm, gru = kind == "lstm", kind == "gru"
    if gru:
        bias_in, bias_rec = kb.view(bias, (GU,)), kb.view(bias, (GU,), offset=GU)
    else:
        bias_in, bias_rec = bias, None
    proj = kb.temp((N, T, GU))
    kb.matmul(x, kernel, proj, bias=bias_in)
    pre = kb.temp((N, T, GU))  # pre-activations of every step
    hprev = kb.temp((N, T, U))  # the state each step starts from
    cprev = kb.temp((N, T, U)) if lstm else None
    innerh = kb.temp((N, T, U)) if gru else None  # GRU: (h @ recurrent_kernel + bias)[2U:]
    dproj = kb.temp((N, T, GU))
    dinner = kb.temp((N, T, GU)) if gru else None  # GRU: the recurrent projection's gradient
    rkt = kb.temp((GU, U))
    kb.transpose(rkt, rkernel, (1, 0))
    d_out, d_h = cots[0], cots[1]
    d_c = cots[2] if lstm else None
    dstate_outs = list(outs[4:])

    k = kb.kernel(f"{kind}_grad")
    fb, b, m = k.fn, k.b, k.m
    p = {name: k.ptr(t) for name, t in (("proj", proj), ("pre", pre), ("hprev", hprev), ("cprev", cprev),
                                        ("innerh", innerh), ("dproj", dproj), ("dinner", dinner),
                                        ("rk", rkernel), ("rkt", rkt),
                                        ("brec", bias_rec), ("d_out", d_out), ("d_h", d_h), ("d_c", d_c))
         if t is not None}
    pstates = [k.ptr(s) for s in states]
    pmask = k.ptr(mask) if mask is not None else None
    first_kept = fb.var(I64, name="first_kept")  # the row's first kept step (processing order), T if none
    pdst = [k.ptr(o) if o is not None else None for o in dstate_outs]
    scratch = k.thread_scratch((4 * U + GU) * 4)

    def buf(off):
        return b.gep(scratch, [i64(off)], source_etype=F32)

    h_s, c_s, dh_s, dc_s, z_s = buf(0), buf(U), buf(2 * U), buf(3 * U), buf(4 * U)
    Tv = k.dim(T)
    vw = kb.vw
    zero = ir.Constant(ir.VectorType(F32, vw), [ir.Constant(F32, 0.0)] * vw)
    lanes = [vw]  # valid lanes of the vector body being emitted

    def ld(ptr, idx):
        return load_lanes(b, b.gep(ptr, [idx], source_etype=F32), vw, lanes[0])

    def st(ptr, idx, v):
        store_lanes(b, v, b.gep(ptr, [idx], source_etype=F32), vw, lanes[0])

    def scalar(ptr, idx):
        return k.splat(b.load(b.gep(ptr, [idx], source_etype=F32), typ=F32), vw)

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

    def kept_at(n, t):
        """Whether processing step ``t`` of row ``n`` is kept (nonzero mask, NaN included)."""
        tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
        value = b.load(b.gep(pmask, [b.add(b.mul(n, Tv), tt)], source_etype=F32), typ=F32)
        return b.fcmp_unordered("!=", value, ir.Constant(F32, 0.0))

    def output_counts(n, t):
        """Whether the output of processing step ``t`` is the state (else zeros)."""
        if zero_output_for_mask:
            return kept_at(n, t)
        return b.icmp_signed(">=", t, first_kept.get())

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

    with fb.loop(k.begin, k.end, name="n") as n:
        srow = b.mul(n, i64(U))
        # ------------------------------------------------ initial state
        for s_ptr, src in ((h_s, pstates[0] if pstates else None), (c_s, pstates[1] if len(pstates) > 1 else None)):
            if s_ptr is c_s and not lstm:
                continue
            units(lambda j, s_ptr=s_ptr, src=src: st(s_ptr, j, ld(src, add(srow, j)) if src is not None
                                                     else zero))
        # ------------------------------------------------ forward, saving each step
        first_kept.set(Tv)
        with fb.loop(0, Tv, name="t") as t:
            tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
            row = b.add(b.mul(n, Tv), tt)
            urow, grow = b.mul(row, i64(U)), b.mul(row, i64(GU))

            def save(j):
                st(p["hprev"], add(urow, j), ld(h_s, j))
                if lstm:
                    st(p["cprev"], add(urow, j), ld(c_s, j))

            units(save)

            def recurrent_product():
                """z = h @ recurrent_kernel (+ recurrent bias), accumulated row by row of the kernel."""
                units(lambda j: st(z_s, j, ld(p["brec"], j) if gru else zero), GU, "g0")
                with fb.loop(0, U, name="kk") as kk:
                    hk = scalar(h_s, kk)
                    rrow = b.mul(kk, i64(GU))
                    units(lambda j: st(z_s, j, m.fma(hk, ld(p["rk"], add(rrow, j)), ld(z_s, j))), GU, "g1")
            if lstm:
                def step(j):
                    zs = [b.fadd(ld(p["proj"], add(grow, add(j, q * U))), ld(z_s, add(j, q * U))) for q in range(4)]
                    for q in range(4):
                        st(p["pre"], add(grow, add(j, q * U)), zs[q])
                    i_, f_ = recurrent_activation(m, zs[0]), recurrent_activation(m, zs[1])
                    g_, o_ = activation(m, zs[2]), recurrent_activation(m, zs[3])
                    c_new = m.fma(f_, ld(c_s, j), m.mul(i_, g_))
                    st(c_s, j, c_new)
                    st(h_s, j, m.mul(o_, activation(m, c_new)))
            elif gru:
                def step(j):
                    zp = b.fadd(ld(p["proj"], add(grow, j)), ld(z_s, j))
                    rp = b.fadd(ld(p["proj"], add(grow, add(j, U))), ld(z_s, add(j, U)))
                    ih = ld(z_s, add(j, 2 * U))
                    r_ = recurrent_activation(m, rp)
                    hp = m.fma(r_, ih, ld(p["proj"], add(grow, add(j, 2 * U))))
                    st(p["pre"], add(grow, j), zp)
                    st(p["pre"], add(grow, add(j, U)), rp)
                    st(p["pre"], add(grow, add(j, 2 * U)), hp)
                    st(p["innerh"], add(urow, j), ih)
                    z_, hh = recurrent_activation(m, zp), activation(m, hp)
                    st(h_s, j, m.fma(z_, m.sub(ld(h_s, j), hh), hh))
            else:
                def step(j):
                    zp = b.fadd(ld(p["proj"], add(grow, j)), ld(z_s, j))
                    st(p["pre"], add(grow, j), zp)
                    st(h_s, j, activation(m, zp))

            def kept_step(t=t):
                recurrent_product()
                units(step)
                if pmask is not None:
                    first_kept.set(fb.min_(first_kept.get(), t))

            when_kept(n, t, kept_step)
        # ------------------------------------------------ backward through time
        def init_d(j):
            st(dh_s, j, ld(p["d_h"], add(srow, j)))
            if lstm:
                st(dc_s, j, ld(p["d_c"], add(srow, j)))

        units(init_d)
        if not return_sequences:
            def add_last(j):
                st(dh_s, j, b.fadd(ld(dh_s, j), ld(p["d_out"], add(srow, j))))

            if pmask is None:
                units(add_last)
            else:
                with b.if_then(output_counts(n, b.sub(Tv, i64(1)))):
                    units(add_last)
        with fb.loop(0, Tv, name="tb") as tb:
            t = b.sub(b.sub(Tv, i64(1)), tb)  # output step, last first
            tt = b.sub(b.sub(Tv, i64(1)), t) if go_backwards else t
            row = b.add(b.mul(n, Tv), tt)
            urow, grow = b.mul(row, i64(U)), b.mul(row, i64(GU))
            orow = b.mul(b.add(b.mul(n, Tv), t), i64(U))
            if return_sequences:
                def add_out(j, orow=orow):
                    st(dh_s, j, b.fadd(ld(dh_s, j), ld(p["d_out"], add(orow, j))))

                if pmask is None:
                    units(add_out)
                else:
                    with b.if_then(output_counts(n, t)):
                        units(add_out)
            dz_ptr = p["dinner"] if gru else p["dproj"]
            if lstm:
                def back(j):
                    zs = [ld(p["pre"], add(grow, add(j, q * U))) for q in range(4)]
                    i_, f_ = recurrent_activation(m, zs[0]), recurrent_activation(m, zs[1])
                    g_, o_ = activation(m, zs[2]), recurrent_activation(m, zs[3])
                    cp = ld(p["cprev"], add(urow, j))
                    c_new = m.fma(f_, cp, m.mul(i_, g_))
                    dh = ld(dh_s, j)
                    dc = b.fadd(ld(dc_s, j), m.mul(m.mul(dh, o_), activation_deriv(m, c_new)))
                    dzs = [m.mul(m.mul(dc, g_), recurrent_deriv(m, zs[0])),
                           m.mul(m.mul(dc, cp), recurrent_deriv(m, zs[1])),
                           m.mul(m.mul(dc, i_), activation_deriv(m, zs[2])),
                           m.mul(m.mul(dh, activation(m, c_new)), recurrent_deriv(m, zs[3]))]
                    for q in range(4):
                        st(p["dproj"], add(grow, add(j, q * U)), dzs[q])
                    st(dc_s, j, m.mul(dc, f_))
                    st(dh_s, j, zero)
            elif gru:
                def back(j):
                    zp, rp, hp = (ld(p["pre"], add(grow, add(j, q * U))) for q in range(3))
                    z_, r_, hh = recurrent_activation(m, zp), recurrent_activation(m, rp), activation(m, hp)
                    dh = ld(dh_s, j)
                    hpv = ld(p["hprev"], add(urow, j))
                    dzg = m.mul(m.mul(dh, m.sub(hpv, hh)), recurrent_deriv(m, zp))
                    dhp = m.mul(m.mul(dh, m.sub(m.const(1.0, z_), z_)), activation_deriv(m, hp))
                    drg = m.mul(m.mul(dhp, ld(p["innerh"], add(urow, j))), recurrent_deriv(m, rp))
                    for q, v in enumerate((dzg, drg, dhp)):
                        st(p["dproj"], add(grow, add(j, q * U)), v)
                    for q, v in enumerate((dzg, drg, m.mul(dhp, r_))):
                        st(p["dinner"], add(grow, add(j, q * U)), v)
                    st(dh_s, j, m.mul(dh, z_))
            else:
                def back(j):
                    dpre = m.mul(ld(dh_s, j), activation_deriv(m, ld(p["pre"], add(grow, j))))
                    st(p["dproj"], add(grow, j), dpre)
                    st(dh_s, j, zero)
            def kept_back(grow=grow, dz_ptr=dz_ptr):
                units(back)
                # dh_prev += dz @ recurrent_kernel.T, one row of the transpose per gate column
                with fb.loop(0, GU, name="g2") as jj:
                    dzj = scalar(dz_ptr, add(grow, jj))
                    trow = b.mul(jj, i64(U))
                    units(lambda u: st(dh_s, u, m.fma(dzj, ld(p["rkt"], add(trow, u)), ld(dh_s, u))), U, "u2")

            def masked_back(grow=grow):
                """The state's gradient passes through; the projections' gradients are zero."""
                units(lambda j: st(p["dproj"], add(grow, j), zero), GU, "z0")
                if gru:
                    units(lambda j: st(p["dinner"], add(grow, j), zero), GU, "z1")

            when_kept(n, t, kept_back, masked_back)
        for ptr_s, dst in zip((dh_s, dc_s), pdst):
            if dst is not None:
                units(lambda j, ptr_s=ptr_s, dst=dst: st(dst, add(srow, j), ld(ptr_s, j)))
    kb.launch(k, N, 6 * U * GU * (T if isinstance(T, int) else 32))

    # ---------------------------------------------------- weight gradients as GEMMs
    dx, dk, drk, db = outs[:4]
    d2 = kb.view(dproj, (NT, GU))
    if dk is not None:
        xt = kb.temp((F, NT))
        kb.transpose(xt, kb.view(x, (NT, F)), (1, 0))
        kb.matmul(xt, d2, dk)
    if drk is not None:
        ht = kb.temp((U, NT))
        kb.transpose(ht, kb.view(hprev, (NT, U)), (1, 0))
        kb.matmul(ht, kb.view(dinner if gru else dproj, (NT, GU)), drk)
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


__all__ = ["emit_rnn_grad"]
