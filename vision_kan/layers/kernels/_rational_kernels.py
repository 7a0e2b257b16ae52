"""Triton kernels of the fused group rational (see rational_triton.py for the maths); imported on first use."""
import triton
import triton.language as tl


@triton.jit
def coeff(ptr, grp, j: tl.constexpr, stride: tl.constexpr, cmask):
    return tl.load(ptr + grp * stride + j, mask=cmask, other=0.0)[None, :]  # (1, BLOCK_D)


@triton.jit
def fwd_kernel(x_ptr, a_ptr, b_ptr, y_ptr, M, D, group_size,
               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    mask = (rows[:, None] < M) & cmask[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grp = cols // group_size
    p = coeff(a_ptr, grp, 5, 6, cmask)
    p = coeff(a_ptr, grp, 4, 6, cmask) + x * p
    p = coeff(a_ptr, grp, 3, 6, cmask) + x * p
    p = coeff(a_ptr, grp, 2, 6, cmask) + x * p
    p = coeff(a_ptr, grp, 1, 6, cmask) + x * p
    p = coeff(a_ptr, grp, 0, 6, cmask) + x * p
    s = coeff(b_ptr, grp, 3, 4, cmask)
    s = coeff(b_ptr, grp, 2, 4, cmask) + x * s
    s = coeff(b_ptr, grp, 1, 4, cmask) + x * s
    s = coeff(b_ptr, grp, 0, 4, cmask) + x * s
    y = p / (1.0 + tl.abs(x * s))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fold(acc, v, FOLD_ROWS: tl.constexpr):
    """acc += v, v (BLOCK_M, BLOCK_D): summed over rows now (acc (1, BLOCK_D)) or kept per row (acc like v)."""
    if FOLD_ROWS:
        out = acc + tl.sum(v, axis=0)[None, :]
    else:
        out = acc + v
    return out


@triton.jit
def bwd_kernel(x_ptr, dy_ptr, a_ptr, b_ptr, dx_ptr, part_ptr, M, D, group_size, iters,
               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, FOLD_ROWS: tl.constexpr, STAGES: tl.constexpr):
    split = tl.program_id(0)
    splits = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    grp = cols // group_size
    a0 = coeff(a_ptr, grp, 0, 6, cmask)
    a1 = coeff(a_ptr, grp, 1, 6, cmask)
    a2 = coeff(a_ptr, grp, 2, 6, cmask)
    a3 = coeff(a_ptr, grp, 3, 6, cmask)
    a4 = coeff(a_ptr, grp, 4, 6, cmask)
    a5 = coeff(a_ptr, grp, 5, 6, cmask)
    b1 = coeff(b_ptr, grp, 0, 4, cmask)
    b2 = coeff(b_ptr, grp, 1, 4, cmask)
    b3 = coeff(b_ptr, grp, 2, 4, cmask)
    b4 = coeff(b_ptr, grp, 3, 4, cmask)
    # 10 running sums: (1, BLOCK_D) folded over the rows of every tile (FOLD_ROWS: few registers, so large tiles),
    # or (BLOCK_M, BLOCK_D) folded once at the end (no cross-thread reduction in the loop, small tiles)
    zero = tl.zeros((1 if FOLD_ROWS else BLOCK_M, BLOCK_D), dtype=tl.float32)
    sa0, sa1, sa2, sa3, sa4, sa5 = zero, zero, zero, zero, zero, zero
    sb1, sb2, sb3, sb4 = zero, zero, zero, zero
    for it in tl.range(iters, num_stages=STAGES):
        rows = (split + it * splits) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows[:, None] < M) & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * D + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x2 = x * x
        x3 = x2 * x
        x4 = x3 * x
        p = a0 + x * (a1 + x * (a2 + x * (a3 + x * (a4 + x * a5))))
        dp = a1 + x * (2.0 * a2 + x * (3.0 * a3 + x * (4.0 * a4 + x * 5.0 * a5)))
        t = x * (b1 + x * (b2 + x * (b3 + x * b4)))
        dt = b1 + x * (2.0 * b2 + x * (3.0 * b3 + x * 4.0 * b4))
        q = 1.0 + tl.abs(t)
        sign = tl.where(t > 0.0, 1.0, tl.where(t < 0.0, -1.0, 0.0))
        g = dy / q
        h = -g * p * sign / q
        tl.store(dx_ptr + offs, (g * dp + h * dt).to(dx_ptr.dtype.element_ty), mask=mask)
        sa0 = _fold(sa0, g, FOLD_ROWS)
        sa1 = _fold(sa1, g * x, FOLD_ROWS)
        sa2 = _fold(sa2, g * x2, FOLD_ROWS)
        sa3 = _fold(sa3, g * x3, FOLD_ROWS)
        sa4 = _fold(sa4, g * x4, FOLD_ROWS)
        sa5 = _fold(sa5, g * x4 * x, FOLD_ROWS)
        sb1 = _fold(sb1, h * x, FOLD_ROWS)
        sb2 = _fold(sb2, h * x2, FOLD_ROWS)
        sb3 = _fold(sb3, h * x3, FOLD_ROWS)
        sb4 = _fold(sb4, h * x4, FOLD_ROWS)
    base = part_ptr + split * 10 * D + cols
    tl.store(base + 0 * D, tl.sum(sa0, axis=0), mask=cmask)
    tl.store(base + 1 * D, tl.sum(sa1, axis=0), mask=cmask)
    tl.store(base + 2 * D, tl.sum(sa2, axis=0), mask=cmask)
    tl.store(base + 3 * D, tl.sum(sa3, axis=0), mask=cmask)
    tl.store(base + 4 * D, tl.sum(sa4, axis=0), mask=cmask)
    tl.store(base + 5 * D, tl.sum(sa5, axis=0), mask=cmask)
    tl.store(base + 6 * D, tl.sum(sb1, axis=0), mask=cmask)
    tl.store(base + 7 * D, tl.sum(sb2, axis=0), mask=cmask)
    tl.store(base + 8 * D, tl.sum(sb3, axis=0), mask=cmask)
    tl.store(base + 9 * D, tl.sum(sb4, axis=0), mask=cmask)
