"""Fused group-rational function (GR-KAN, orders 5/4) in Triton: one read of x, one write of y, forward and
backward, with the coefficient gradients reduced without global atomics.

Forward, per element (fp32 in registers, any input dtype):
    P = a0 + x(a1 + x(a2 + x(a3 + x(a4 + x a5)))),  T = x(b1 + x(b2 + x(b3 + x b4))),  y = P / (1 + |T|)
Backward, with Q = 1 + |T|, g = dy / Q and h = -dy P sign(T) / Q^2:
    dx = g P'(x) + h T'(x),  da_j = sum g x^j,  db_j = sum h x^j
Each backward program walks a strided set of row blocks for one column block and keeps 10 running (rows x
columns) sums in registers, folded over rows once at the end; it writes them to partials[split, 10, D] (no
atomics), and one torch reduction folds splits and the channels of each group: (splits, 10, D) -> (10, g).

The forward writes y in `out_dtype` (the autocast dtype under autocast: the matmul that follows reads it without a
cast pass); dx comes back in x's dtype. Exposed as torch.library custom ops (`torch.ops.vision_kan.rational_fwd` /
`rational_bwd`) with fake kernels and autograd, so torch.compile keeps them as single nodes; eager calls take an
autograd.Function over the same kernels (less dispatch per call). Triton is imported on first use.

`rational_inductor` is the same function in plain torch ops, computed in fp32 and returned in `out_dtype`: under
torch.compile inductor fuses it with the LayerNorm / bias / cast around it and generates the coefficient-gradient
reductions itself. GroupRational takes it under torch.compile with backend 'auto' because a compiled
vit_grkan_tiny step measured faster that way than with the opaque custom ops (H200, 2026-11-28: 32.9 ms against
60.8 ms a step, batch 256, bf16; benchmarks/profile_vit_step.py).
"""
import functools
from typing import Optional, Tuple

import torch

__all__ = ['rational_call', 'rational_fused', 'rational_inductor', 'NUM_COEFFS', 'DEN_COEFFS']

NUM_COEFFS, DEN_COEFFS = 6, 4  # orders (5, 4): the only orders the kernel covers


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton

    from . import _rational_kernels as k
    return triton, k.fwd_kernel, k.bwd_kernel


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == 'cuda' else 2


_BLOCK_M, _BLOCK_D = 32, 128  # forward tile
_BLOCK_M_BWD = 8  # backward rows per step: 10 running (8, 128) sums stay in registers


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()  # (M, D)


def _fwd(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    triton, fwd_kernel, _ = _kernels()
    rows = _as_rows(x)
    m, d = rows.shape
    y = torch.empty(m, d, dtype=out_dtype or x.dtype, device=x.device)
    grid = (triton.cdiv(m, _BLOCK_M), triton.cdiv(d, _BLOCK_D))
    fwd_kernel[grid](rows, a.float().contiguous(), b.float().contiguous(), y, m, d, d // a.shape[0],
                     BLOCK_M=_BLOCK_M, BLOCK_D=_BLOCK_D)
    return y.reshape(x.shape)


def _bwd(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
         b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    triton, _, bwd_kernel = _kernels()
    rows, dy_rows = _as_rows(x), _as_rows(dy)
    m, d = rows.shape
    groups = a.shape[0]
    col_blocks = triton.cdiv(d, _BLOCK_D)
    row_blocks = triton.cdiv(m, _BLOCK_M_BWD)
    splits = max(1, min(row_blocks, (4 * _num_sms(x.device)) // col_blocks))  # ~4 programs per SM
    iters = triton.cdiv(row_blocks, splits)
    dx = torch.empty_like(rows)
    partials = torch.empty(splits, 10, d, device=x.device, dtype=torch.float32)
    bwd_kernel[(splits, col_blocks)](rows, dy_rows, a.float().contiguous(), b.float().contiguous(), dx, partials,
                                     m, d, d // groups, iters, BLOCK_M=_BLOCK_M_BWD, BLOCK_D=_BLOCK_D)
    sums = partials.sum(0).view(10, groups, d // groups).sum(-1)  # (10, g)
    return dx.reshape(x.shape), sums[:NUM_COEFFS].T.contiguous().to(a.dtype), sums[NUM_COEFFS:].T.contiguous().to(
        b.dtype)


@torch.library.custom_op('vision_kan::rational_fwd', mutates_args=())
def rational_fwd(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """x (..., D), a (g, 6), b (g, 4) -> y (..., D) in out_dtype (default x's)."""
    return _fwd(x, a, b, out_dtype)


@rational_fwd.register_fake
def _(x, a, b, out_dtype=None):
    return torch.empty_like(x, dtype=out_dtype or x.dtype, memory_format=torch.contiguous_format)


@torch.library.custom_op('vision_kan::rational_bwd', mutates_args=())
def rational_bwd(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                 b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy (..., D) -> (dx in x's dtype, da (g, 6), db (g, 4))."""
    return _bwd(dy, x, a, b)


@rational_bwd.register_fake
def _(dy, x, a, b):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(a),
            torch.empty_like(b))


def _setup_context(ctx, inputs, output):
    x, a, b, _ = inputs
    ctx.save_for_backward(x, a, b)


def _backward(ctx, dy):
    x, a, b = ctx.saved_tensors
    return rational_bwd(dy, x, a, b) + (None,)


rational_fwd.register_autograd(_backward, setup_context=_setup_context)


class _RationalEager(torch.autograd.Function):
    """The eager twin of the custom ops: same kernels, same saved tensors, less dispatch per call."""

    @staticmethod
    def forward(ctx, x, a, b, out_dtype):
        ctx.save_for_backward(x, a, b)
        return _fwd(x, a, b, out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, a, b = ctx.saved_tensors
        return _bwd(dy, x, a, b) + (None,)


def rational_call(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The fused rational for the layers: the custom op under torch.compile, the autograd.Function in eager."""
    if torch.compiler.is_compiling():
        return rational_fwd(x, a, b, out_dtype)
    return _RationalEager.apply(x, a, b, out_dtype)


def rational_fused(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Same function as `vision_kan.layers.grkan.rational`, fused, output in x's dtype. x (..., D), a (g, 6),
    b (g, 4) -> (..., D)."""
    return rational_call(x, a, b)


def rational_inductor(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """The group rational in plain torch ops, fp32 maths, output in out_dtype: for inductor to fuse (see above).
    x (..., D), a (g, m + 1), b (g, n) -> (..., D)."""
    g = a.shape[0]
    xg = x.float().reshape(*x.shape[:-1], g, x.shape[-1] // g)  # (..., g, D/g)
    a32, b32 = a.float()[:, :, None], b.float()[:, :, None]  # (g, m + 1, 1), (g, n, 1)
    p = a32[:, -1]
    for j in range(a32.shape[1] - 2, -1, -1):  # Horner
        p = p * xg + a32[:, j]
    s = b32[:, -1]
    for j in range(b32.shape[1] - 2, -1, -1):
        s = s * xg + b32[:, j]
    return (p / (1.0 + (xg * s).abs())).reshape(x.shape).to(out_dtype)
