"""Triton kernels of the fused KAN linear layers. Imported lazily: only where Triton is installed.

All three kernels share one picture of the layer: y = sum_j B_j(x) @ W_j^T, with J "slots" j and a weight
W of shape (J, N, D) (slot, out feature, in feature):

* KIND_BSPLINE (KANLinear): slot 0 is SiLU(x) with the base weight, slots 1..J-1 the cubic B-splines
  B_s(x) = N(u - s), u = (x - t0_i) * inv_h_i per feature i, N the cardinal cubic on [0, 4).
* KIND_RSWAF (FasterKANLinear, after its LayerNorm): slot j is phi_j(x) = 1 - tanh^2((x - g_j) * inv_h).

The basis is computed per (rows x features) tile in registers and never written to memory:
* forward   y  (M, N) = sum_j B_j(x) (M, D) @ W_j^T                       prologue fusion into the matmul
* input grad dx (M, D) = sum_j B_j'(x) * (dY (M, N) @ W_j (N, D))          epilogue contraction per slot
* weight grad dW_j (N, D) = dY^T (N, M) @ B_j(x) (M, D)                   basis tile recomputed from x
Operands of tl.dot are in the weight dtype (bf16 / fp16 / fp32), accumulation in fp32.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import triton
import triton.language as tl
import triton.testing
from torch._subclasses.fake_tensor import is_fake

from .kinds import KIND_BSPLINE, KIND_RSWAF  # noqa: F401  (the kernels branch on KIND == 0 / 1)
_LOG2E = 1.4426950408889634


@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr, PREC: tl.constexpr):
    """acc += a @ b. UPCAST: multiply in fp32 (Triton's interpreter mis-multiplies bf16 operands)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _cast(a, dt: tl.constexpr, UPCAST: tl.constexpr):
    """a.to(dt). Triton's interpreter truncates fp32 -> bf16 where the GPU rounds to nearest even: under the
    interpreter (UPCAST) round the bits here first, so its results match the GPU's."""
    if UPCAST and dt == tl.bfloat16:
        bits = a.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dt)
    else:
        return a.to(dt)


@triton.jit
def _cubic(u, s):
    """Cubic B-spline B_s at positions u (knot units): N(u - s), N the cardinal cubic, support [s, s + 4)."""
    r = tl.abs(u - (s + 2.0))  # distance from the centre of the support
    inner = r * r * (0.5 * r - 1.0) + 2.0 / 3.0  # (4 - 6 r^2 + 3 r^3) / 6 for r < 1
    q = tl.maximum(2.0 - r, 0.0)
    return tl.where(r < 1.0, inner, q * q * q * (1.0 / 6.0))  # (2 - r)^3 / 6 for 1 <= r < 2, 0 beyond


@triton.jit
def _cubic_du(u, s):
    """d B_s / d u."""
    t = u - (s + 2.0)
    r = tl.abs(t)
    q = tl.maximum(2.0 - r, 0.0)
    dr = tl.where(r < 1.0, r * (1.5 * r - 2.0), -0.5 * q * q)  # dN / dr
    return tl.where(t < 0.0, -dr, dr)


@triton.jit
def _sech2_tanh(z):
    """(1 - tanh^2 z, tanh z) through e = exp(-2|z|) in (0, 1]: no overflow for any z."""
    e = tl.exp2(-2.0 * 1.4426950408889634 * tl.abs(z))
    s = 1.0 / (1.0 + e)
    th = (1.0 - e) * s
    th = tl.where(z < 0.0, -th, th)
    return 4.0 * e * s * s, th


@triton.jit
def _silu(x):
    return x / (1.0 + tl.exp2(-1.4426950408889634 * x))


@triton.jit
def _silu_dx(x):
    sg = 1.0 / (1.0 + tl.exp2(-1.4426950408889634 * x))
    return sg * (1.0 + x * (1.0 - sg))


@triton.jit
def _slot_basis(x, p_ptr, offs_d, d_mask, D, s, inv_h, KIND: tl.constexpr):
    """Basis slot s (0-based among the non-base slots) of an fp32 (rows, BD) tile x."""
    if KIND == 0:
        t0 = tl.load(p_ptr + offs_d, mask=d_mask, other=0.0)  # (BD,) first knot per feature
        ih = tl.load(p_ptr + D + offs_d, mask=d_mask, other=0.0)  # (BD,) 1 / knot spacing
        return _cubic((x - t0[None, :]) * ih[None, :], s)
    else:
        g = tl.load(p_ptr + s)  # grid point g_s
        phi, _ = _sech2_tanh((x - g) * inv_h)
        return phi


@triton.jit
def _knot_units(x, p_ptr, offs_d, d_mask, D, inv_h, KIND: tl.constexpr):
    """(z, dz/dx) of an fp32 (rows, BD) tile x: B-spline, z = u in knot units and dz/dx = 1 / spacing per feature
    (1, BD); RSWAF, z = x * inv_h and the scalar -2 * inv_h (d phi / dz = -2 tanh phi, the -2 applied once)."""
    if KIND == 0:
        t0 = tl.load(p_ptr + offs_d, mask=d_mask, other=0.0)
        ih = tl.load(p_ptr + D + offs_d, mask=d_mask, other=0.0)
        return (x - t0[None, :]) * ih[None, :], ih[None, :]
    else:
        return x * inv_h, -2.0 * inv_h


@triton.jit
def _slot_dz(z, p_ptr, s, inv_h, KIND: tl.constexpr):
    """d B_s / dz of basis slot s at z (_knot_units), up to the RSWAF's -2."""
    if KIND == 0:
        return _cubic_du(z, s)
    else:
        phi, th = _sech2_tanh(z - tl.load(p_ptr + s) * inv_h)
        return th * phi


@triton.jit
def _fwd_kernel(
        x_ptr, w_ptr, p_ptr, b_ptr, y_ptr, M, N, D, inv_h,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr, HAS_BIAS: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """y (M, N) = sum_j B_j(x) @ W_j^T (+ bias). One program: a (BM, BN) tile of y."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BN)
    pid_m, pid_n = pid // num_n, pid % num_n  # neighbours share the x rows (L2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask, n_mask = offs_m < M, offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * D
    w_cols = w_ptr + offs_n[None, :] * D  # W_j^T tile (BD, BN) read from (N, D) rows
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    nd = tl.cdiv(D, BD)
    if FIRST == 1:  # base branch: slot 0 = SiLU(x) against the base weight
        for kd in range(0, nd):
            offs_d = kd * BD + tl.arange(0, BD)
            d_mask = offs_d < D
            x = tl.load(x_rows + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0)
            w = tl.load(w_cols + offs_d[:, None], mask=d_mask[:, None] & n_mask[None, :], other=0.0)
            acc = _mma(_cast(_silu(x.to(tl.float32)), w.dtype, UPCAST), w, acc, UPCAST, PREC)
    ns = J - FIRST  # basis slots; flat loop over (feature block, slot) so one W tile streams per step
    for it in range(0, nd * ns):
        kd = it // ns
        s = it % ns
        offs_d = kd * BD + tl.arange(0, BD)
        d_mask = offs_d < D
        x = tl.load(x_rows + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
        w = tl.load(w_cols + (FIRST + s) * N * D + offs_d[:, None], mask=d_mask[:, None] & n_mask[None, :],
                    other=0.0)  # padded features get W = 0, so their (nonzero) basis adds nothing
        b = _slot_basis(x, p_ptr, offs_d, d_mask, D, s, inv_h, KIND)
        acc = _mma(_cast(b, w.dtype, UPCAST), w, acc, UPCAST, PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(y_ptrs, _cast(acc, y_ptr.dtype.element_ty, UPCAST), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _dx_kernel(
        g_ptr, x_ptr, w_ptr, p_ptr, dx_ptr, M, N, D, inv_h,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr,
        BM: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """dx (M, D) = sum_j B_j'(x) * (dY @ W_j). One program: a (BM, BD) tile of dx; G_j tiles stay in registers."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid = tl.program_id(0)
    num_d = tl.cdiv(D, BD)
    pid_m, pid_d = pid // num_d, pid % num_d  # neighbours share the dY rows (L2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = pid_d * BD + tl.arange(0, BD)
    m_mask, d_mask = offs_m < M, offs_d < D
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
    x_mask = m_mask[:, None] & d_mask[None, :]
    x = tl.load(x_ptrs, mask=x_mask, other=0.0).to(tl.float32)  # (BM, BD)
    g_rows = g_ptr + offs_m.to(tl.int64)[:, None] * N
    w_cols = w_ptr + offs_d[None, :]
    nn = tl.cdiv(N, BN)
    z, dz_dx = _knot_units(x, p_ptr, offs_d, d_mask, D, inv_h, KIND)
    # basis slots first, so only z, the slot's G tile and the running sum are live in the long loop
    dxs = tl.zeros((BM, BD), dtype=tl.float32)  # sum_s (dY @ W_s) * dB_s/dz
    for s in range(0, J - FIRST):
        acc = tl.zeros((BM, BD), dtype=tl.float32)
        for kn in range(0, nn):
            offs_n = kn * BN + tl.arange(0, BN)
            n_mask = offs_n < N
            g = tl.load(g_rows + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            w = tl.load(w_cols + (FIRST + s) * N * D + offs_n[:, None] * D, mask=n_mask[:, None] & d_mask[None, :],
                        other=0.0)
            acc = _mma(g, w, acc, UPCAST, PREC)
        dxs += acc * _slot_dz(z, p_ptr, s, inv_h, KIND)
    dx = dxs * dz_dx
    if FIRST == 1:  # base slot: SiLU'(x) * (dY @ W_0)
        acc = tl.zeros((BM, BD), dtype=tl.float32)
        for kn in range(0, nn):
            offs_n = kn * BN + tl.arange(0, BN)
            n_mask = offs_n < N
            g = tl.load(g_rows + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            w = tl.load(w_cols + offs_n[:, None] * D, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
            acc = _mma(g, w, acc, UPCAST, PREC)
        x = tl.load(x_ptrs, mask=x_mask, other=0.0).to(tl.float32)  # reloaded (L1/L2) rather than kept live
        dx += acc * _silu_dx(x)
    dx_ptrs = dx_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(dx_ptrs, _cast(dx, dx_ptr.dtype.element_ty, UPCAST), mask=m_mask[:, None] & d_mask[None, :])


@triton.jit
def _dw_kernel(
        g_ptr, x_ptr, p_ptr, part_ptr, M, N, D, inv_h, rows_per_split,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr,
        BN: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """Partial dW_j (N, D) = dY^T @ B_j(x) over one split of the rows. Grid: (J * tiles, splits)."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_n = tl.cdiv(N, BN)
    num_d = tl.cdiv(D, BD)
    j = pid // (num_n * num_d)
    rem = pid % (num_n * num_d)
    pid_n, pid_d = rem // num_d, rem % num_d
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d = pid_d * BD + tl.arange(0, BD)
    n_mask, d_mask = offs_n < N, offs_d < D
    m_lo = split * rows_per_split
    m_hi = tl.minimum(M, m_lo + rows_per_split)
    acc = tl.zeros((BN, BD), dtype=tl.float32)
    dt = g_ptr.dtype.element_ty
    if j < FIRST:  # base slot: SiLU(x)
        for m0 in range(m_lo, m_hi, BM):
            offs_m = m0 + tl.arange(0, BM)
            m_mask = offs_m < m_hi
            rows = offs_m.to(tl.int64)[:, None]
            g = tl.load(g_ptr + rows * N + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            x = tl.load(x_ptr + rows * D + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0)
            acc = _mma(tl.trans(g), _cast(_silu(x.to(tl.float32)), dt, UPCAST), acc, UPCAST, PREC)
    else:
        s = j - FIRST
        for m0 in range(m_lo, m_hi, BM):
            offs_m = m0 + tl.arange(0, BM)
            m_mask = offs_m < m_hi
            rows = offs_m.to(tl.int64)[:, None]
            # rows past m_hi load dY = 0, so their basis values add nothing
            g = tl.load(g_ptr + rows * N + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            x = tl.load(x_ptr + rows * D + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0)
            b = _slot_basis(x.to(tl.float32), p_ptr, offs_d, d_mask, D, s, inv_h, KIND)
            acc = _mma(tl.trans(g), _cast(b, dt, UPCAST), acc, UPCAST, PREC)
    out = part_ptr + (split * J + j).to(tl.int64) * N * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(out, acc, mask=n_mask[:, None] & d_mask[None, :])


@triton.jit
def _dw_kernel_t(
        g_ptr, x_ptr, p_ptr, part_ptr, M, N, D, inv_h, rows_per_split,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr, BASE: tl.constexpr,
        BD: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
):
    """`_dw_kernel` with the product transposed, dW_j^T (D, N) = B_j(x)^T (D, M) @ dY (M, N): the basis tile is
    then the register operand of the tensor-core MMA, as in the forward, instead of a shared-memory operand.
    One launch per slot family (BASE: the SiLU slot 0; else the basis slots), so the row loop has no branch.
    Grid: (slots * tiles, splits)."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_d = tl.cdiv(D, BD)
    num_n = tl.cdiv(N, BN)
    s = pid // (num_d * num_n)  # basis slot (0 for BASE)
    j = s if BASE else s + FIRST  # slot in the weight
    rem = pid % (num_d * num_n)
    pid_d, pid_n = rem // num_n, rem % num_n
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = pid_n * BN + tl.arange(0, BN)
    d_mask, n_mask = offs_d < D, offs_n < N
    m_lo = split * rows_per_split
    m_hi = tl.minimum(M, m_lo + rows_per_split)
    acc = tl.zeros((BD, BN), dtype=tl.float32)
    dt = g_ptr.dtype.element_ty
    x_cols = x_ptr + offs_d[:, None]  # x^T tile (BD, BM) read from (M, D) rows
    if KIND == 0:
        t0 = tl.load(p_ptr + offs_d, mask=d_mask, other=0.0)[:, None]  # (BD, 1)
        ih = tl.load(p_ptr + D + offs_d, mask=d_mask, other=0.0)[:, None]
    else:
        g_s = tl.load(p_ptr + s)
    for m0 in range(m_lo, m_hi, BM):
        offs_m = m0 + tl.arange(0, BM)
        m_mask = offs_m < m_hi
        rows = offs_m.to(tl.int64)
        # rows past m_hi load dY = 0, so their basis values add nothing
        g = tl.load(g_ptr + rows[:, None] * N + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
        xt = tl.load(x_cols + rows[None, :] * D, mask=d_mask[:, None] & m_mask[None, :], other=0.0).to(tl.float32)
        if BASE:
            bt = _silu(xt)
        elif KIND == 0:
            bt = _cubic((xt - t0) * ih, s)
        else:
            bt, _ = _sech2_tanh((xt - g_s) * inv_h)
        acc = _mma(_cast(bt, dt, UPCAST), g, acc, UPCAST, PREC)
    out = part_ptr + (split * J + j).to(tl.int64) * N * D + offs_n[None, :] * D + offs_d[:, None]
    tl.store(out, acc, mask=d_mask[:, None] & n_mask[None, :])


@triton.jit
def _dx_reduce_kernel(
        gw_ptr, x_ptr, p_ptr, dx_ptr, M, D, inv_h,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
        UPCAST: tl.constexpr,
):
    """dx (M, D) = sum_j B_j'(x) * GW_j for GW (M, J, D) = dY @ W (written by cuBLAS, dx_gemm): `_dx_kernel`
    with its products read from memory. One program: a (BM, BD) tile, all J slots."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid_m, pid_d = tl.program_id(0), tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = pid_d * BD + tl.arange(0, BD)
    m_mask, d_mask = offs_m < M, offs_d < D
    mask = m_mask[:, None] & d_mask[None, :]
    x = tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    gw_rows = gw_ptr + offs_m.to(tl.int64)[:, None] * (J * D) + offs_d[None, :]
    z, dz_dx = _knot_units(x, p_ptr, offs_d, d_mask, D, inv_h, KIND)
    dxs = tl.zeros((BM, BD), dtype=tl.float32)
    # unrolled (J is a constexpr): the J - FIRST loads of GW are independent, so they can all be in flight at
    # once instead of each waiting for the previous slot's sum (a runtime loop)
    for s in tl.static_range(0, J - FIRST):
        gs = tl.load(gw_rows + (FIRST + s) * D, mask=mask, other=0.0).to(tl.float32)
        dxs += gs * _slot_dz(z, p_ptr, s, inv_h, KIND)
    dx = dxs * dz_dx
    if FIRST == 1:
        dx += tl.load(gw_rows, mask=mask, other=0.0).to(tl.float32) * _silu_dx(x)
    dx_ptrs = dx_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(dx_ptrs, _cast(dx, dx_ptr.dtype.element_ty, UPCAST), mask=mask)


@triton.jit
def _expand_kernel(
        x_ptr, p_ptr, out_ptr, M, D, inv_h,
        KIND: tl.constexpr, J: tl.constexpr, FIRST: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
        UPCAST: tl.constexpr,
):
    """out (M, J, D) = [SiLU(x)], B_0(x), ..., B_{J-FIRST-1}(x) in out's dtype: every slot of a (BM, BD) tile of x
    evaluated once, the operand of the cuBLAS forms (fwd_gemm, dw_gemm). One program: a (BM, BD) tile, all J slots."""
    inv_h = tl.cast(inv_h, tl.float32)  # inductor passes a Python float as fp64 (triton_op launches)
    pid_m, pid_d = tl.program_id(0), tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = pid_d * BD + tl.arange(0, BD)
    d_mask = offs_d < D
    mask = (offs_m < M)[:, None] & d_mask[None, :]
    x = tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    rows = out_ptr + offs_m.to(tl.int64)[:, None] * (J * D) + offs_d[None, :]
    dt = out_ptr.dtype.element_ty
    if FIRST == 1:
        tl.store(rows, _cast(_silu(x), dt, UPCAST), mask=mask)
    for s in range(0, J - FIRST):
        b = _slot_basis(x, p_ptr, offs_d, d_mask, D, s, inv_h, KIND)
        tl.store(rows + (FIRST + s) * D, _cast(b, dt, UPCAST), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Launch configurations and a small tuner (first call per shape times the candidates on the GPU, then caches)
# ---------------------------------------------------------------------------------------------------------------

# Fused candidates checked with ptxas for sm_90 (triton 3.8, bf16, dims divisible by 16): all use wgmma, none
# spills. The 'g' entries are not kernels of their own: _expand_kernel plus cuBLAS.
# fwd: (BM, BN, BD, warps, stages); the accumulator is (BM, BN), x and W_j^T tiles stream through shared memory
# ('g', BM, BD, cap, warps): fwd_gemm, the basis per chunk of rows (_expand_kernel) then one cuBLAS GEMM per chunk
# ('g', ..., 1 << 27, 4): one chunk at M = 50,432 for J <= 13 (ViT-tiny, batch 256); with 1 << 26 the ViT-tiny
# shape took two chunks and a cat of y (~50 µs a layer pair on the H200, seventh session's profile)
_FWD_CONFIGS = [(128, 128, 64, 8, 3), (128, 256, 32, 8, 3), (64, 128, 64, 4, 3),
                ('g', 32, 128, 1 << 25, 4), ('g', 32, 128, 1 << 26, 4), ('g', 32, 128, 1 << 27, 4)]
# dx: (BM, BD, BN, ...); three (BM, BD) fp32 tiles stay live (z, G_j, running sum)
#     ('g', BM, BD, cap, warps) = dx_gemm: GW = dY @ W by cuBLAS per chunk of rows (at most `cap` elements), then
#     _dx_reduce_kernel. H200, 2026-11-28, M = 50,432, 192 -> 192, GPU time (tuning_by_gpu_time): chosen over the
#     fused kernel for B-spline (its reduce kernel 128 µs, ~2.5x its byte floor), not for RSWAF (NOTES.md). Then
#     the slot loop was a runtime loop; it is unrolled now. The BD = 64 tiles (no masked half tile at D = 192) are
#     candidates since the seventh session.
_DX_CONFIGS = [(128, 64, 64, 8, 3), (64, 64, 64, 8, 3), (64, 64, 128, 8, 2),
               ('g', 32, 128, 1 << 26, 4), ('g', 32, 128, 1 << 27, 4), ('g', 64, 64, 1 << 27, 4),
               ('g', 32, 64, 1 << 27, 4)]
# dw: ('n', BN, BD, BM, ...) = _dw_kernel, basis tile through shared memory, accumulator (BN, BD);
#     ('t', BD, BN, BM, ...) = _dw_kernel_t, basis tile as the register operand, accumulator (BD, BN).
# Measured on an H100 (2026-11-23, M = 50432): 'n' reached 83-143 TFLOP/s, a third of the forward's rate per FLOP;
# its SASS waits for each MMA before the next basis tile (no overlap), which 't' does not.
#     ('g', BM, BD, cap, warps, 1) = dw_gemm: the basis written once per chunk of rows (at most `cap` elements) by
#     _expand_kernel, then dW = dY^T @ basis as one cuBLAS GEMM per chunk. Measured (H100, 2026-11-28, M = 50,432,
#     NOTES.md): faster than the fused kernels at 192 -> 768 (0.484 ms against 1.297 for the first fused config),
#     slower at 192 -> 192 (0.657 against 0.323 tuned), both on the wall clock, which counts the 'g' form's host
#     launches; by GPU time it wins at 192 -> 192 too (H200, NOTES.md sixth session). The autotuner times it per shape.
#     The last entry of a 'g' config: 1 = each chunk's product written in fp32 by cuBLAS (out_dtype), 0 = written in
#     dW's dtype (the plain bf16 GEMM, fp32 accumulation inside), then summed over chunks in fp32.
_DW_CONFIGS = [('t', 128, 128, 64, 8, 3), ('t', 128, 256, 32, 8, 3), ('t', 64, 128, 64, 4, 3),
               ('n', 128, 64, 64, 8, 3), ('n', 128, 128, 64, 8, 3),
               ('g', 32, 128, 1 << 25, 4, 1), ('g', 32, 128, 1 << 26, 4, 1),
               ('g', 32, 128, 1 << 26, 4, 0), ('g', 32, 128, 1 << 27, 4, 0)]
_INTERP_CONFIGS = {'fwd': (16, 16, 16, 1, 1), 'dx': (16, 16, 16, 1, 1), 'dw': ('t', 16, 16, 16, 1, 1)}
_TUNED: Dict[Tuple, Tuple] = {}
_TUNE = {'enabled': True, 'gemm': True, 'gpu_time': False}
_FORCED: Dict[str, Tuple] = {}
_MODE = {'traced': False}


@contextlib.contextmanager
def _switched_on(flags: Dict[str, bool], name: str) -> Iterator[None]:
    previous = flags[name]
    flags[name] = True
    try:
        yield
    finally:
        flags[name] = previous


def traced_launches():
    """Launch every kernel through `torch.library.wrap_triton` (inside the triton_ops of ops.py, which torch.compile
    traces into); the configuration must be tuned already (ops.py tunes on real tensors of the traced shapes)."""
    return _switched_on(_MODE, 'traced')


def _k(kernel):
    return torch.library.wrap_triton(kernel) if _MODE['traced'] else kernel


def _interpreting(t: torch.Tensor) -> bool:
    return not t.is_cuda


def _prec(dtype: torch.dtype) -> Optional[str]:
    if dtype != torch.float32:
        return None
    return 'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'


def _pick(name: str, key: Tuple, configs: List[Tuple], launch, ref: torch.Tensor) -> None:
    """Launch with the tuned config for `key`, timing every candidate on the first call (CUDA only)."""
    if name in _FORCED:
        launch(_FORCED[name])
        return
    if _interpreting(ref):
        launch(_INTERP_CONFIGS[name])
        return
    full_key = (name,) + key + (('gpu time',) if _TUNE['gpu_time'] else ())
    cfg = _TUNED.get(full_key)
    if cfg is None and is_fake(ref):  # traced without a tuned entry (symbolic shapes): the first, not cached
        launch(configs[0])
        return
    if cfg is None:
        if not _TUNE['enabled'] or torch.cuda.is_current_stream_capturing():
            cfg = configs[0]
        else:
            times = []
            for c in configs if _TUNE['gemm'] else [c for c in configs if c[0] != 'g']:
                try:
                    times.append((_time_launch(lambda: launch(c)), c))
                except Exception:  # a config that does not fit (shared memory, registers) is skipped
                    continue
            if not times:
                raise RuntimeError(f'vision_kan kernels: no launch configuration of {name} runs for {key}')
            cfg = min(times, key=lambda t: t[0])[1]  # the first of equal times (configs do not compare)
        _TUNED[full_key] = cfg
    launch(cfg)


def _time_launch(fn) -> float:
    """Median ms of fn(). Wall time between CUDA events (do_bench), or with _TUNE['gpu_time'] the GPU's time alone:
    fn captured in a CUDA graph and replayed (do_bench_cudagraph), so the host's launches and allocations drop out.
    The 'g' forms issue several torch calls per launch: timed on the wall, an eager host decides between them and
    the fused kernels; inside a compiled graph that host cost is mostly gone."""
    if _TUNE['gpu_time']:
        return triton.testing.do_bench_cudagraph(fn, rep=40, return_mode='median')
    # the median of 40 ms: the mean of 20 ms let one slow sample decide between close candidates
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode='median')


def tuning_by_gpu_time():
    """Configurations tuned inside this block are timed by GPU time alone (_time_launch): ops.py tunes so for the
    torch.compile path, whose generated code launches with little host time."""
    return _switched_on(_TUNE, 'gpu_time')


def set_gemm_variants(enabled: bool) -> None:
    """Let the autotuner consider the basis + cuBLAS ('g') variants (True, the default) or the fused kernels only
    (benchmarks: the A/B of the two in one run). Clears the configurations chosen so far."""
    _TUNE['gemm'] = bool(enabled)
    _TUNED.clear()


def set_tuning(enabled: bool) -> None:
    """Time the candidate configurations on the first call per shape (True) or take the first one (False)."""
    _TUNE['enabled'] = bool(enabled)


@contextlib.contextmanager
def forced_config(kernel: str, config: Tuple) -> Iterator[None]:
    """Run `kernel` ('fwd', 'dx' or 'dw') with `config` instead of the tuned one (tests: every variant)."""
    if kernel not in _INTERP_CONFIGS:
        raise ValueError(f'forced_config: kernel must be one of {sorted(_INTERP_CONFIGS)}, got {kernel!r}')
    _FORCED[kernel] = tuple(config)
    try:
        yield
    finally:
        del _FORCED[kernel]


def tuned_configs() -> Dict[Tuple, Tuple]:
    """The configurations chosen so far, {(kernel, kind, dtype, M bucket, N, D[, 'gpu time']): (blocks..., warps,
    stages)}; 'gpu time' marks those tuned by GPU time alone (tuning_by_gpu_time, the compiled path)."""
    return dict(_TUNED)


def _m_bucket(m: int) -> int:
    return 1 << max(m - 1, 1).bit_length()


def fwd(x: torch.Tensor, w: torch.Tensor, p: torch.Tensor, bias: Optional[torch.Tensor], kind: int,
        first: int, inv_h: float) -> torch.Tensor:
    """x (M, D), w (J, N, D), p params, bias (N,) or None -> y (M, N) in w's dtype."""
    m, d = x.shape
    j, n, _ = w.shape
    if m == 0:
        return torch.empty(m, n, dtype=w.dtype, device=x.device)
    upcast = _interpreting(x)
    result = {}

    def launch(c):
        if c[0] == 'g':
            result['y'] = fwd_gemm(x, w, p, bias, kind, first, inv_h, *c[1:])
            return
        bm, bn, bd, warps, stages = c
        y = torch.empty(m, n, dtype=w.dtype, device=x.device)
        grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
        _k(_fwd_kernel)[grid](
            x, w, p, bias if bias is not None else y, y, m, n, d, inv_h,
            KIND=kind, J=j, FIRST=first, HAS_BIAS=bias is not None, BM=bm, BN=bn, BD=bd,
            UPCAST=upcast, PREC=_prec(w.dtype), num_warps=warps, num_stages=stages)
        result['y'] = y

    _pick('fwd', (kind, w.dtype, _m_bucket(m), n, d), _FWD_CONFIGS, launch, x)
    return result['y']


def dx(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, p: torch.Tensor, kind: int, first: int,
       inv_h: float) -> torch.Tensor:
    """dY (M, N), x (M, D), w (J, N, D) -> dx (M, D) in x's dtype."""
    m, d = x.shape
    j, n, _ = w.shape
    if m == 0:
        return torch.empty_like(x)
    upcast = _interpreting(x)
    result = {}

    def launch(c):
        if c[0] == 'g':
            result['dx'] = dx_gemm(g, x, w, p, kind, first, inv_h, *c[1:])
            return
        bm, bd, bn, warps, stages = c
        out = torch.empty_like(x)
        grid = (triton.cdiv(m, bm) * triton.cdiv(d, bd),)
        _k(_dx_kernel)[grid](
            g, x, w, p, out, m, n, d, inv_h, KIND=kind, J=j, FIRST=first, BM=bm, BD=bd, BN=bn,
            UPCAST=upcast, PREC=_prec(w.dtype), num_warps=warps, num_stages=stages)
        result['dx'] = out

    _pick('dx', (kind, w.dtype, _m_bucket(m), n, d), _DX_CONFIGS, launch, x)
    return result['dx']


def _num_sms(device: torch.device) -> int:
    if device.type != 'cuda':
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def dw(g: torch.Tensor, x: torch.Tensor, p: torch.Tensor, num_slots: int, kind: int, first: int,
       inv_h: float, dtype: torch.dtype) -> torch.Tensor:
    """dY (M, N), x (M, D) -> dW (J, N, D) in `dtype`, fp32 partial sums over row splits."""
    m, d = x.shape
    n = g.shape[1]
    j = num_slots
    if m == 0:
        return torch.zeros(j, n, d, dtype=dtype, device=x.device)
    upcast = _interpreting(x)
    sms = _num_sms(x.device)
    result = {}

    def launch(c):
        variant, b0, b1, bm, warps, stages = c
        if variant == 'g':
            result['part'] = dw_gemm(g, x, p, j, kind, first, inv_h, dtype, b0, b1, bm, warps, bool(stages))[None]
            result['part'] = result['part'].permute(0, 2, 1, 3)  # (1, N, J, D) -> (1, J, N, D), a view
            return
        bn, bd = (b0, b1) if variant == 'n' else (b1, b0)
        tiles = triton.cdiv(n, bn) * triton.cdiv(d, bd)
        # enough programs for ~2 waves of the SMs, each split a multiple of BM rows and at least 4 blocks
        splits = max(1, min(triton.cdiv(2 * sms, j * tiles), triton.cdiv(m, 4 * bm)))
        rows = triton.cdiv(triton.cdiv(m, splits), bm) * bm
        splits = triton.cdiv(m, rows)
        part = torch.empty(splits, j, n, d, dtype=torch.float32, device=x.device)
        common = dict(KIND=kind, J=j, FIRST=first, BM=bm, UPCAST=upcast, PREC=_prec(dtype), num_warps=warps,
                      num_stages=stages)
        if variant == 'n':
            _k(_dw_kernel)[(j * tiles, splits)](g, x, p, part, m, n, d, inv_h, rows, BN=bn, BD=bd, **common)
        else:  # one launch for the SiLU slot, one for the basis slots: no branch in the row loop
            if first:
                _k(_dw_kernel_t)[(tiles, splits)](g, x, p, part, m, n, d, inv_h, rows, BASE=True, BD=bd, BN=bn, **common)
            _k(_dw_kernel_t)[((j - first) * tiles, splits)](g, x, p, part, m, n, d, inv_h, rows, BASE=False, BD=bd,
                                                        BN=bn, **common)
        result['part'] = part

    _pick('dw', (kind, dtype, _m_bucket(m), n, d), _DW_CONFIGS, launch, x)
    part = result['part']
    total = part[0] if part.shape[0] == 1 else part.sum(0)
    return total.to(dtype, memory_format=torch.contiguous_format)  # one copy: the cast and, for 'g', the layout


def dw_gemm(g: torch.Tensor, x: torch.Tensor, p: torch.Tensor, num_slots: int, kind: int, first: int,
            inv_h: float, dtype: torch.dtype, bm: int, bd: int, cap: int, warps: int, out32: bool = True
            ) -> torch.Tensor:
    """dY (M, N), x (M, D) -> dW as (N, J, D) fp32 (slots in the middle; dw() re-lays it out in the same copy as
    its cast): per chunk of rows, the basis (rows, J, D) in `dtype` by _expand_kernel, then dW (N, J * D) += dY_chunk^T (N, rows) @ basis (rows, J * D), the product written in fp32
    (out32) or in `dtype` (cuBLAS's plain GEMM; still fp32 sums inside it and across chunks).

    cap: most basis elements held at once (rows per chunk = cap // (J * D), at least bm): the transient memory is
    2 * cap bytes in bf16, one layer at a time, never saved for later."""
    m, d = x.shape
    n, j = g.shape[1], num_slots
    acc = None
    for r0, r in _chunks(m, max(bm, cap // (j * d))):
        flat = _expand(x[r0:r0 + r], p, j, dtype, kind, first, inv_h, bm, bd, warps)
        g_t = g[r0:r0 + r].t()
        if x.is_cuda and dtype != torch.float32 and out32:
            part = torch.mm(g_t, flat, out_dtype=torch.float32)  # cuBLAS, fp32 accumulation and output
        elif x.is_cuda:  # fp32 accumulation, output rounded to dtype once per chunk (TF32 where allowed for fp32)
            part = torch.mm(g_t, flat).float()
        else:  # the interpreter (tests): the same products, fp32 sums
            part = torch.mm(g_t.float(), flat.float())
        acc = part if acc is None else acc + part
        del flat
    return acc.view(n, j, d)


def _chunks(m: int, rows: int) -> List[Tuple[int, int]]:
    """(first row, rows) of each chunk of at most `rows` rows."""
    return [(r0, min(rows, m - r0)) for r0 in range(0, m, rows)]


def _expand(x: torch.Tensor, p: torch.Tensor, num_slots: int, dtype: torch.dtype, kind: int, first: int,
            inv_h: float, bm: int, bd: int, warps: int) -> torch.Tensor:
    """Every basis slot of x (r, D), a new (r, J * D) tensor in `dtype` (_expand_kernel). A new tensor per call,
    not a slice of a reused buffer: under torch.compile a kernel that writes into a view makes functionalization copy
    the whole buffer after it (measured, NOTES.md)."""
    r, d = x.shape
    out = torch.empty(r, num_slots, d, dtype=dtype, device=x.device)
    _k(_expand_kernel)[(triton.cdiv(r, bm), triton.cdiv(d, bd))](
        x, p, out, r, d, inv_h, KIND=kind, J=num_slots, FIRST=first, BM=bm, BD=bd, UPCAST=_interpreting(x),
        num_warps=warps)
    return out.view(r, num_slots * d)


def _flat_weight(w: torch.Tensor) -> torch.Tensor:
    """(J, N, D) -> (N, J * D): slot-major columns, as the basis rows."""
    j, n, d = w.shape
    return w.permute(1, 0, 2).reshape(n, j * d)


def fwd_gemm(x: torch.Tensor, w: torch.Tensor, p: torch.Tensor, bias: Optional[torch.Tensor], kind: int,
             first: int, inv_h: float, bm: int, bd: int, cap: int, warps: int) -> torch.Tensor:
    """y (M, N) = basis(x) (M, J * D) @ W (N, J * D)^T (+ bias), per chunk of rows (at most `cap` basis elements
    at once, in W's dtype; transient, never saved)."""
    m, d = x.shape
    j, n, _ = w.shape
    w_flat = _flat_weight(w)
    parts = []
    for r0, r in _chunks(m, max(bm, cap // (j * d))):
        a = _expand(x[r0:r0 + r], p, j, w.dtype, kind, first, inv_h, bm, bd, warps)
        if _interpreting(x):  # the interpreter (tests): the same products, fp32 sums
            y = a.float() @ w_flat.float().t() + (0 if bias is None else bias.float())
            parts.append(y.to(w.dtype))
        elif bias is None:
            parts.append(torch.mm(a, w_flat.t()))
        else:
            parts.append(torch.addmm(bias, a, w_flat.t()))
        del a
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def dx_gemm(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, p: torch.Tensor, kind: int, first: int,
            inv_h: float, bm: int, bd: int, cap: int, warps: int) -> torch.Tensor:
    """dx (M, D) in x's dtype: per chunk of rows, GW (rows, J * D) = dY_chunk @ W (N, J * D) by cuBLAS in W's
    dtype (fp32 accumulation, rounded once, as autocast's matmul), then dx = sum_j B_j'(x) * GW_j by
    _dx_reduce_kernel. At most `cap` elements of GW at once (transient, never saved)."""
    m, d = x.shape
    j, n, _ = w.shape
    w_flat = _flat_weight(w)
    parts = []
    for r0, r in _chunks(m, max(bm, cap // (j * d))):
        g_r = g[r0:r0 + r]
        if _interpreting(x):  # the interpreter (tests): fp32 products, rounded to W's dtype as cuBLAS's output
            gw = (g_r.float() @ w_flat.float()).to(w.dtype)
        else:
            gw = torch.mm(g_r, w_flat)
        out = torch.empty(r, d, dtype=x.dtype, device=x.device)
        _k(_dx_reduce_kernel)[(triton.cdiv(r, bm), triton.cdiv(d, bd))](
            gw, x[r0:r0 + r], p, out, r, d, inv_h, KIND=kind, J=j, FIRST=first, BM=bm, BD=bd,
            UPCAST=_interpreting(x), num_warps=warps)
        parts.append(out)
        del gw
    return parts[0] if len(parts) == 1 else torch.cat(parts)
