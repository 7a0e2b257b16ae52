"""Fused group-rational function (GR-KAN, orders 5/4) in Triton: one read of x, one write of y, forward and
backward, with the coefficient gradients reduced without global atomics.

Forward, per element (fp32 in registers, any input dtype):
    P = a0 + x(a1 + x(a2 + x(a3 + x(a4 + x a5)))),  T = x(b1 + x(b2 + x(b3 + x b4))),  y = P / (1 + |T|)
Backward, with Q = 1 + |T|, g = dy / Q and h = -dy P sign(T) / Q^2:
    dx = g P'(x) + h T'(x),  da_j = sum g x^j,  db_j = sum h x^j
Each backward program walks a strided set of row blocks for one column block and keeps 10 running (rows x
columns) sums in registers, folded over rows once at the end; it writes them to partials[split, 10, D] (no atomics), and one torch reduction folds splits and the
channels of each group: (splits, 10, D) -> (10, g).

Exposed as torch.library custom ops (`torch.ops.vision_kan.rational_fwd` / `rational_bwd`) with fake kernels and
autograd, so torch.compile keeps them as single nodes. Triton is imported on first use.
"""
import functools
from typing import Tuple

import torch

from .dispatch import fused_available, get_backend

__all__ = ['rational_fused', 'fused_rational_applies']

NUM_COEFFS, DEN_COEFFS = 6, 4  # orders (5, 4): the only orders the kernel covers


def fused_rational_applies(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """The fused path for this call: orders (5, 4), and the backend allows it on x's device."""
    if a.shape[-1] != NUM_COEFFS or b.shape[-1] != DEN_COEFFS:
        return False
    name = get_backend()
    if name == 'reference':
        return False
    if name == 'auto' and not x.is_cuda:
        return False
    return fused_available(x)


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton

    from . import _rational_kernels as k
    return triton, k.fwd_kernel, k.bwd_kernel


_BLOCK_M, _BLOCK_D = 32, 128  # forward tile
_BLOCK_M_BWD = 8  # backward rows per step: 10 running (8, 128) sums stay in registers


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()  # (M, D)


@torch.library.custom_op('vision_kan::rational_fwd', mutates_args=())
def rational_fwd(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    triton, fwd_kernel, _ = _kernels()
    rows = _as_rows(x)
    m, d = rows.shape
    y = torch.empty_like(rows)
    grid = (triton.cdiv(m, _BLOCK_M), triton.cdiv(d, _BLOCK_D))
    fwd_kernel[grid](rows, a.float().contiguous(), b.float().contiguous(), y, m, d, d // a.shape[0],
                     BLOCK_M=_BLOCK_M, BLOCK_D=_BLOCK_D)
    return y.reshape(x.shape)


@rational_fwd.register_fake
def _(x, a, b):
    return torch.empty_like(x)


@torch.library.custom_op('vision_kan::rational_bwd', mutates_args=())
def rational_bwd(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                 b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    triton, _, bwd_kernel = _kernels()
    rows, dy_rows = _as_rows(x), _as_rows(dy)
    m, d = rows.shape
    groups = a.shape[0]
    col_blocks = triton.cdiv(d, _BLOCK_D)
    row_blocks = triton.cdiv(m, _BLOCK_M_BWD)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2
    splits = max(1, min(row_blocks, (4 * sms) // col_blocks))  # ~4 programs per SM
    iters = triton.cdiv(row_blocks, splits)
    dx = torch.empty_like(rows)
    partials = torch.empty(splits, 10, d, device=x.device, dtype=torch.float32)
    bwd_kernel[(splits, col_blocks)](rows, dy_rows, a.float().contiguous(), b.float().contiguous(), dx, partials,
                                     m, d, d // groups, iters, BLOCK_M=_BLOCK_M_BWD, BLOCK_D=_BLOCK_D)
    sums = partials.sum(0).view(10, groups, d // groups).sum(-1)  # (10, g)
    return dx.reshape(x.shape), sums[:NUM_COEFFS].T.contiguous().to(a.dtype), sums[NUM_COEFFS:].T.contiguous().to(
        b.dtype)


@rational_bwd.register_fake
def _(dy, x, a, b):
    return torch.empty_like(x), torch.empty_like(a), torch.empty_like(b)


def _setup_context(ctx, inputs, output):
    x, a, b = inputs
    ctx.save_for_backward(x, a, b)


def _backward(ctx, dy):
    x, a, b = ctx.saved_tensors
    return rational_bwd(dy, x, a, b)


rational_fwd.register_autograd(_backward, setup_context=_setup_context)


def rational_fused(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Same function as `vision_kan.layers.grkan.rational`, fused. x (..., D), a (g, 6), b (g, 4) -> (..., D)."""
    return rational_fwd(x, a, b)
