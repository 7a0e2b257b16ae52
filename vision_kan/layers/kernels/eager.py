"""The eager (not compiled) fused path of the KAN linear layers: one autograd.Function per layer call.

Why a second form of the same kernels: eager mode pays host time for every op it issues, and through the op-level
form (ops.basis_linear_call, with the layer assembling its weight in torch: mul, permute, cat, cast, each with a
backward node) one KANLinear forward + backward issued ~1.5 ms of host work for ~0.5 ms of GPU work (H200,
benchmarks/kan_host_overhead.py): eager vit_kan_tiny's step took 65 ms with 36 ms of kernels in it. Here:

* the weight is packed by two ops into one (N, J, D) buffer (output row, slot, input feature) in the matmul dtype,
  which the fused kernels read in place as its (J, N, D) view (strides D, J*D, 1) and the basis + cuBLAS forms as
  the (N, J*D) matrix, without a copy;
* the backward takes the fp32 weight gradient as the kernels leave it and derives each parameter's gradient from it
  in one or two ops, with no autograd node in between.

Under torch.compile the layers call ops.basis_linear (a triton_op) instead; inductor fuses the weight's assembly.
Gradients are those of the op-level form, except that dW reaches the parameters in fp32 rather than rounded to the
matmul dtype first.

    y = bspline_linear(x, base_weight, spline_weight, spline_scaler, bias, grid_params, dtype)   # KANLinear
    y = rswaf_linear(x_normed, weight, bias, grid, inv_h, dtype)                                 # FasterKANLinear
"""
from typing import Optional

import torch

from .kinds import KIND_BSPLINE, KIND_RSWAF

__all__ = ['bspline_linear', 'rswaf_linear', 'use_layer_functions', 'layer_functions_on']

_ON = {'layer_functions': True}


def use_layer_functions(enabled: bool) -> None:
    """Eager fused layers through these layer-level Functions (True, the default) or through the op-level
    ops.basis_linear_call with the weight assembled in torch (False): benchmarks/kan_host_overhead.py's A/B."""
    _ON['layer_functions'] = bool(enabled)


def layer_functions_on() -> bool:
    return _ON['layer_functions']


def _kernels():
    from . import triton_kan  # noqa: PLC0415  (lazy: Triton may be absent on CPU-only installs)
    return triton_kan


def _bias_grad(ctx, gy: torch.Tensor) -> Optional[torch.Tensor]:
    return gy.sum(0, dtype=torch.float32) if ctx.has_bias and ctx.needs_bias_grad else None


class _BSplineLinear(torch.autograd.Function):
    """y (M, N) = SiLU(x) @ base^T + sum_s B_s(x) @ (spline[:, :, s] * scaler)^T + bias, the kernels' slots 0..K."""

    @staticmethod
    def forward(ctx, x, base_weight, spline_weight, scaler, bias, params, dtype):
        n, d, k = spline_weight.shape
        w = torch.empty(n, 1 + k, d, dtype=dtype, device=x.device)  # (N, J, D), J = 1 + K
        w[:, 0].copy_(base_weight)
        torch.mul(spline_weight.transpose(1, 2), scaler.unsqueeze(1), out=w[:, 1:])  # (N, K, D), rounded to dtype
        wj = w.transpose(0, 1)  # (J, N, D) view
        y = _kernels().fwd(x, wj, params, None if bias is None else bias.to(dtype), KIND_BSPLINE, 1, 1.0)
        ctx.save_for_backward(x, wj, params, spline_weight, scaler)
        ctx.has_bias, ctx.needs_bias_grad = bias is not None, ctx.needs_input_grad[4]
        return y

    @staticmethod
    def backward(ctx, gy):
        x, wj, params, spline_weight, scaler = ctx.saved_tensors
        need_x, need_base, need_spline, need_scaler = ctx.needs_input_grad[:4]
        g = gy.to(wj.dtype).contiguous()
        kernels = _kernels()
        dx = kernels.dx(g, x, wj, params, KIND_BSPLINE, 1, 1.0) if need_x else None
        d_base = d_spline = d_scaler = None
        if need_base or need_spline or need_scaler:
            dw = kernels.dw(g, x, params, wj.shape[0], KIND_BSPLINE, 1, 1.0, wj.dtype, fp32=True)  # (J, N, D) fp32
            d_base = dw[0]
            d_packed = dw[1:].permute(1, 2, 0)  # (N, D, K): dL / d(spline * scaler)
            d_spline = d_packed * scaler.unsqueeze(-1) if need_spline else None
            d_scaler = (d_packed * spline_weight).sum(-1) if need_scaler else None
        return dx, d_base, d_spline, d_scaler, _bias_grad(ctx, gy), None, None


class _RSWAFLinear(torch.autograd.Function):
    """y (M, N) = sum_k phi_k(x) @ weight.view(N, D, K)[:, :, k]^T + bias, phi_k the RSWAF basis on `grid`."""

    @staticmethod
    def forward(ctx, x, weight, bias, grid, inv_h, dtype):
        n, d, k = weight.shape[0], x.shape[1], grid.numel()
        w = torch.empty(n, k, d, dtype=dtype, device=x.device)  # (N, J, D), J = K
        w.copy_(weight.view(n, d, k).transpose(1, 2))
        wj = w.transpose(0, 1)  # (J, N, D) view
        y = _kernels().fwd(x, wj, grid, None if bias is None else bias.to(dtype), KIND_RSWAF, 0, inv_h)
        ctx.save_for_backward(x, wj, grid)
        ctx.inv_h = inv_h
        ctx.has_bias, ctx.needs_bias_grad = bias is not None, ctx.needs_input_grad[2]
        return y

    @staticmethod
    def backward(ctx, gy):
        x, wj, grid = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        g = gy.to(wj.dtype).contiguous()
        kernels = _kernels()
        dx = kernels.dx(g, x, wj, grid, KIND_RSWAF, 0, ctx.inv_h) if need_x else None
        d_weight = None
        if need_w:
            dw = kernels.dw(g, x, grid, wj.shape[0], KIND_RSWAF, 0, ctx.inv_h, wj.dtype, fp32=True)  # (K, N, D)
            k, n, d = dw.shape
            d_weight = dw.permute(1, 2, 0).reshape(n, d * k)
        return dx, d_weight, _bias_grad(ctx, gy), None, None, None


def bspline_linear(x: torch.Tensor, base_weight: torch.Tensor, spline_weight: torch.Tensor, scaler: torch.Tensor,
                   bias: Optional[torch.Tensor], params: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """KANLinear's fused forward in eager mode. x (M, D) contiguous, any float dtype (the basis is evaluated from it
    in fp32); base (N, D), spline (N, D, K), scaler (N, D); params (2, D) fp32 [first knot; 1 / spacing];
    dtype: the matmul operand dtype. -> y (M, N) in dtype."""
    return _BSplineLinear.apply(x.contiguous(), base_weight, spline_weight, scaler, bias, params, dtype)


def rswaf_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], grid: torch.Tensor,
                 inv_h: float, dtype: torch.dtype) -> torch.Tensor:
    """FasterKANLinear's fused forward in eager mode, after its LayerNorm. x (M, D) contiguous; weight (N, D * K)
    (feature-major, as the layer stores it); grid (K,) fp32. -> y (M, N) in dtype."""
    return _RSWAFLinear.apply(x.contiguous(), weight, bias, grid, inv_h, dtype)
