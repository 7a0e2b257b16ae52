"""torch.library custom ops around the Triton kernels: autograd, fake (meta) kernels, torch.compile boundary.

`basis_linear(x, weight, params, bias, kind, inv_h)` computes y = sum_j B_j(x) @ weight[j]^T + bias for a
(M, D) input and a (J, N, D) slot-major weight (see triton_kan.py for the slots of each kind). Its backward is two
more ops, `basis_linear_dx` and `basis_linear_dw`, all three `torch.library.triton_op`s: torch.compile traces into
them and launches their kernels from inductor's generated code (the autotuner picks at trace time, on real tensors of
the traced shapes); the (M, J * D) basis tensor is never saved. On the CPU (Triton's interpreter, the tests) they
call opaque custom ops instead. Triton is imported on the first call, never at import time.

`basis_linear_call` is what the layers use: the op while torch.compile traces, and in eager mode an
autograd.Function over the same kernels, which skips the custom-op dispatch layers (Python overhead per call).
"""
from typing import Optional, Tuple

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import _disable_current_modes

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


# Under Triton's CPU interpreter (the tests) wrap_triton cannot trace an interpreted kernel: there the triton_ops
# below call these opaque custom ops, so the CPU tests still check schema, fake shapes, autograd and compile.
@torch.library.custom_op('vision_kan::basis_linear_interpreted', mutates_args=())
def _fwd_interpreted(x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, bias: Optional[torch.Tensor],
                     kind: int, inv_h: float) -> torch.Tensor:
    return _fwd_impl(x, weight, params, bias, kind, inv_h)


@_fwd_interpreted.register_fake
def _(x, weight, params, bias, kind, inv_h):
    return x.new_empty(x.shape[0], weight.shape[1], dtype=weight.dtype)


@torch.library.custom_op('vision_kan::basis_linear_dx_interpreted', mutates_args=())
def _dx_interpreted(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int,
                    inv_h: float) -> torch.Tensor:
    return _dx_impl(grad, x, weight, params, kind, inv_h)


@_dx_interpreted.register_fake
def _(grad, x, weight, params, kind, inv_h):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op('vision_kan::basis_linear_dw_interpreted', mutates_args=())
def _dw_interpreted(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int,
                    inv_h: float) -> torch.Tensor:
    return _dw_impl(grad, x, weight, params, kind, inv_h)


@_dw_interpreted.register_fake
def _(grad, x, weight, params, kind, inv_h):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


_TRACE_TUNED = set()


def _real_like(args):
    return [torch.rand(a.shape, dtype=a.dtype, device=a.device) if isinstance(a, torch.Tensor) else a for a in args]


def _tune_for_trace(x, weight, params, kind, inv_h) -> None:
    """Traced on fake tensors, the autotuner cannot time anything. So the first trace of a shape runs the three
    kernels once on real random tensors of the traced shapes and dtypes (outside every tracing mode), which picks and
    caches their configurations; the trace, and the backward's later, take them from the cache. Timed by GPU time
    alone: the compiled graph launches them with little host time (triton_kan.tuning_by_gpu_time)."""
    if not all(isinstance(n, int) for t in (x, weight) for n in t.shape):
        return  # symbolic shapes: the first configuration (triton_kan._pick)
    key = (tuple(x.shape), x.dtype, tuple(weight.shape), weight.dtype, kind)
    if key in _TRACE_TUNED:
        return
    with _disable_current_modes():
        rx, rw, rp = _real_like((x, weight, params))
        grad = torch.rand(x.shape[0], weight.shape[1], dtype=weight.dtype, device=x.device)
        _fwd_impl(rx, rw, rp, None, kind, inv_h)
        _dx_impl(grad, rx, rw, rp, kind, inv_h)
        _dw_impl(grad, rx, rw, rp, kind, inv_h)
    _TRACE_TUNED.add(key)


def _traced(impl, *args):
    """impl(*args) with every kernel launched through wrap_triton (triton_kan.traced_launches), for torch.compile to
    trace into; tuned first where the arguments are fake (see _tune_for_trace), by GPU time alone."""
    x, weight, params = (args[0], args[1], args[2]) if impl is _fwd_impl else (args[1], args[2], args[3])
    with _kernels().tuning_by_gpu_time():
        if is_fake(x):
            _tune_for_trace(x, weight, params, args[-2], args[-1])
        with _kernels().traced_launches():
            return impl(*args)


# torch.library.triton_op: under torch.compile inductor traces into them and launches the Triton kernels (and the
# cuBLAS calls of the 'g' forms) from its own generated code, without a Python op dispatch per call.
@torch.library.triton_op('vision_kan::basis_linear', mutates_args=())
def basis_linear(
        x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, bias: Optional[torch.Tensor], kind: int,
        inv_h: float,
) -> torch.Tensor:
    """x (M, D), weight (J, N, D) -> y (M, N) in weight's dtype."""
    if not x.is_cuda:
        return _fwd_interpreted(x, weight, params, bias, kind, inv_h)
    return _traced(_fwd_impl, x, weight, params, bias, kind, inv_h)


@torch.library.triton_op('vision_kan::basis_linear_dx', mutates_args=())
def basis_linear_dx(
        grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int, inv_h: float,
) -> torch.Tensor:
    """dY (M, N) -> dx (M, D) in x's dtype."""
    if not x.is_cuda:
        return _dx_interpreted(grad, x, weight, params, kind, inv_h)
    return _traced(_dx_impl, grad, x, weight, params, kind, inv_h)


@torch.library.triton_op('vision_kan::basis_linear_dw', mutates_args=())
def basis_linear_dw(
        grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, kind: int, inv_h: float,
) -> torch.Tensor:
    """dY (M, N) -> dW (J, N, D) in weight's dtype (fp32 accumulation). `weight` gives only shape and dtype."""
    if not x.is_cuda:
        return _dw_interpreted(grad, x, weight, params, kind, inv_h)
    return _traced(_dw_impl, grad, x, weight, params, kind, inv_h)


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
