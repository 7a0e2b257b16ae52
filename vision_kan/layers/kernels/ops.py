"""torch.library custom ops around the Triton kernels: autograd, fake (meta) kernels, torch.compile boundary.

`basis_linear(x, weight, params, bias, kind, inv_h)` computes y = sum_j B_j(x) @ weight[j]^T + bias for a
(M, D) input and a (J, N, D) slot-major weight (see triton_kan.py for the slots of each kind). Its backward is two
more custom ops, `basis_linear_dx` and `basis_linear_dw`, so torch.compile sees three opaque calls and never the
(M, J * D) basis tensor. Triton is imported on the first call, never at import time.

`basis_linear_call` is what the layers use: the custom op while torch.compile traces, and in eager mode an
autograd.Function over the same kernels, which skips the custom-op dispatch layers (Python overhead per call).
"""
from typing import Optional, Tuple

import torch

from .kinds import KIND_BSPLINE, KIND_RSWAF

__all__ = ['basis_linear', 'basis_linear_dx', 'basis_linear_dw', 'basis_linear_call', 'KIND_BSPLINE', 'KIND_RSWAF']



def _first_slot(kind: int) -> int:
    """Number of base slots before the basis slots."""
    return 1 if kind == KIND_BSPLINE else 0


def _kernels():
    from . import triton_kan  # noqa: PLC0415  (lazy: Triton may be absent on CPU-only installs)
    return triton_kan


def _fwd_impl(x, weight, params, bias, kind, inv_h):
    return _kernels().fwd(x.contiguous(), weight.contiguous(), params.contiguous().float(),
                          None if bias is None else bias.contiguous(), kind, _first_slot(kind), inv_h)


def _dx_impl(grad, x, weight, params, kind, inv_h):
    return _kernels().dx(grad.contiguous().to(weight.dtype), x.contiguous(), weight.contiguous(),
                         params.contiguous().float(), kind, _first_slot(kind), inv_h)


def _dw_impl(grad, x, weight, params, kind, inv_h):
    return _kernels().dw(grad.contiguous().to(weight.dtype), x.contiguous(), params.contiguous().float(),
                         weight.shape[0], kind, _first_slot(kind), inv_h, weight.dtype)


@torch.library.custom_op('vision_kan::basis_linear', mutates_args=())
def basis_linear(
        x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, bias: Optional[torch.Tensor], kind: int,
        inv_h: float,
) -> torch.Tensor:
    """x (M, D), weight (J, N, D) -> y (M, N) in weight's dtype."""
    return _fwd_impl(x, weight, params, bias, kind, inv_h)


@basis_linear.register_fake
def _(x, weight, params, bias, kind, inv_h):
    return x.new_empty(x.shape[0], weight.shape[1], dtype=weight.dtype)


@torch.library.custom_op('vision_kan::basis_linear_dx', mutates_args=())
def basis_linear_dx(
        grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int, inv_h: float,
) -> torch.Tensor:
    """dY (M, N) -> dx (M, D) in x's dtype."""
    return _dx_impl(grad, x, weight, params, kind, inv_h)


@basis_linear_dx.register_fake
def _(grad, x, weight, params, kind, inv_h):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op('vision_kan::basis_linear_dw', mutates_args=())
def basis_linear_dw(
        grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int, inv_h: float,
) -> torch.Tensor:
    """dY (M, N) -> dW (J, N, D) in weight's dtype (fp32 accumulation). `weight` gives only shape and dtype."""
    return _dw_impl(grad, x, weight, params, kind, inv_h)


@basis_linear_dw.register_fake
def _(grad, x, weight, params, kind, inv_h):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs: Tuple, output: torch.Tensor) -> None:
    x, weight, params, bias, kind, inv_h = inputs
    ctx.save_for_backward(x, weight, params)
    ctx.kind, ctx.inv_h = kind, inv_h
    ctx.bias_dtype = None if bias is None else bias.dtype


def _grads(ctx, grad: torch.Tensor, dx_fn, dw_fn):
    x, weight, params = ctx.saved_tensors
    need_x, need_w, _, need_b = ctx.needs_input_grad[:4]
    dx = dx_fn(grad, x, weight, params, ctx.kind, ctx.inv_h) if need_x else None
    dw = dw_fn(grad, x, weight, params, ctx.kind, ctx.inv_h) if need_w else None
    db = grad.sum(0, dtype=torch.float32).to(ctx.bias_dtype) if need_b and ctx.bias_dtype is not None else None
    return dx, dw, None, db, None, None


def _backward(ctx, grad: torch.Tensor):
    return _grads(ctx, grad, basis_linear_dx, basis_linear_dw)


basis_linear.register_autograd(_backward, setup_context=_setup_context)


class _BasisLinearEager(torch.autograd.Function):
    """The eager twin of the custom op: same kernels, same saved tensors, less dispatch per call."""

    @staticmethod
    def forward(ctx, x, weight, params, bias, kind, inv_h):
        _setup_context(ctx, (x, weight, params, bias, kind, inv_h), None)
        return _fwd_impl(x, weight, params, bias, kind, inv_h)

    @staticmethod
    def backward(ctx, grad):
        return _grads(ctx, grad, _dx_impl, _dw_impl)


def basis_linear_call(
        x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, bias: Optional[torch.Tensor], kind: int,
        inv_h: float,
) -> torch.Tensor:
    """`basis_linear` for the layers: the custom op under torch.compile, the autograd.Function in eager mode."""
    if torch.compiler.is_compiling():
        return basis_linear(x, weight, params, bias, kind, inv_h)
    return _BasisLinearEager.apply(x, weight, params, bias, kind, inv_h)
