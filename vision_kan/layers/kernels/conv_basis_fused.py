"""Fused basis expansion of the conv-KAN layers: each family's expansion and its vector-Jacobian product compiled
by torch.compile (Inductor), so all K' = 1 + K feature channels of a pixel come from one read of x in one generated
kernel (Triton on CUDA, C++ on CPU), forward and backward, instead of one elementwise pass per basis function.

    feats = features(x, dtype, base_act, basis, tensors)        # (B, C, *S) -> (B, C * K', *S), in dtype
    gx, gts = features_vjp(x, gfeats, base_act, basis, tensors, needs)

The compiled functions are the plain definitions: the expansion stacks `basis.functions` (the reference the tests
check the lean `expand` against), the vjp is the basis's analytic `vjp` (`conv_basis`, `conv_basis_poly`), so the
fused path and the reference compute the same function. One compiled function per (direction, base activation,
basis hyper-parameters) "signature", each under its own code object, so Dynamo's per-code recompile limit is
spent per family, not shared by every family in a process; shapes are dynamic after the first recompile.

`kan_conv` takes this path when `applies(x, base_act, layer.kernel_backend)` holds: the layer's backend ('auto':
CUDA tensors with Triton importable; 'fused': any device; 'reference': never; see kernels.set_backend), a base
activation that is None or SiLU, and not inside an outer torch.compile (which fuses the reference path itself).
"""
import copy
import types
import weakref
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..conv_basis import ConvBasis
from ..conv_basis_poly import silu_grad
from .dispatch import _triton_importable

__all__ = ['applies', 'features', 'features_vjp', 'COMPILE_OPTIONS']

# torch.compile keywords of the fused functions (tests on CPU swap the backend for 'aot_eager': same graph, no codegen)
COMPILE_OPTIONS = {'backend': 'inductor', 'dynamic': None}
_COMPILED: Dict[tuple, Callable] = {}  # signature -> compiled function
_BY_OBJECT = weakref.WeakKeyDictionary()  # a layer's basis (or base activation) -> {direction: compiled function}


def applies(x: torch.Tensor, base_act: Optional[nn.Module], name: str) -> bool:
    """Whether a conv-KAN layer with kernel backend `name` evaluates its basis through the compiled functions."""
    if base_act is not None and type(base_act) is not nn.SiLU:
        return False
    if torch.compiler.is_compiling():
        return False
    if name == 'reference':
        return False
    if name == 'auto':
        return x.is_cuda and _triton_importable()
    return True


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _expand(x: torch.Tensor, tensors: List[torch.Tensor], dtype: torch.dtype, base_act: Optional[nn.Module],
            basis: Optional[ConvBasis]) -> torch.Tensor:
    """x (B, C, *S) -> (B, C * K', *S) in dtype: [b(x), phi_0(x), ..., phi_{K-1}(x)] per channel."""
    xw = x.to(_work_dtype(x))
    parts = [base_act(xw)] if base_act is not None else []
    if basis is not None:
        parts.extend(basis.functions(xw, tensors))
    feats = torch.stack(parts, dim=2).to(dtype).flatten(1, 2)  # (B, C, K', *S) -> (B, C * K', *S)
    layout = _CHANNELS_LAST.get(x.dim())
    if layout is not None and x.is_contiguous(memory_format=layout) and not x.is_contiguous():
        feats = feats.contiguous(memory_format=layout)  # channels-last in, channels-last features (cuDNN's layout)
    return feats


def _expand_vjp(x: torch.Tensor, grad: torch.Tensor, tensors: List[torch.Tensor], needs: Tuple[bool, ...],
                base_act: Optional[nn.Module], basis: Optional[ConvBasis]):
    """grad (B, C * K', *S) of the features -> (grad of x in x's dtype, [grads of the basis tensors or None])."""
    xw = x.to(_work_dtype(x))
    g = grad.view(x.shape[0], x.shape[1], -1, *x.shape[2:])  # (B, C, K', *S)
    gx, gts = None, [None] * len(tensors)
    offset = 1 if base_act is not None else 0
    if base_act is not None:
        gx = silu_grad(xw) * g[:, :, 0]
    if basis is not None:
        gb, gts = basis.vjp(xw, g[:, :, offset:], tensors, needs)
        gx = gb if gx is None else gx + gb
    return gx.to(x.dtype), gts


def _bind(body: Callable, name: str, base_act: Optional[nn.Module], basis: Optional[ConvBasis]) -> Callable:
    """body(*args, base_act=, basis=) as a plain function under a new code object named `name`: Dynamo caches (and
    limits recompiles) per code object, and compiles a functools.partial under one shared wrapper code."""
    def bound(*args):
        return body(*args, base_act=base_act, basis=basis)
    code = bound.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, bound.__globals__, name, None, bound.__closure__)


def _signature(base_act: Optional[nn.Module], basis: Optional[ConvBasis]) -> tuple:
    """What the compiled code depends on besides its tensor arguments: the classes and the basis's plain
    hyper-parameters (degree, grid, wavelet type, ...)."""
    plain = (int, float, str, bool, tuple, list)
    hyper = () if basis is None else tuple(sorted(
        (k, repr(v)) for k, v in vars(basis).items() if isinstance(v, plain) and k != 'training'))
    return type(base_act), type(basis), hyper


def _compiled(direction: str, base_act: Optional[nn.Module], basis: Optional[ConvBasis]) -> Callable:
    owner = basis if basis is not None else base_act
    options = tuple(sorted(COMPILE_OPTIONS.items()))
    known = _BY_OBJECT.setdefault(owner, {})
    fn = known.get((direction, options))  # the per-call path: one dict look-up, no signature
    if fn is not None:
        return fn
    key = (direction,) + _signature(base_act, basis) + (options,)
    fn = _COMPILED.get(key)
    if fn is None:
        # a private copy of the (parameter-free) activation and of the basis: its tensors are always passed in, so
        # the compiled code never reads a layer's own parameters and guards on one fixed object per signature
        proto_act, proto_basis = copy.deepcopy(base_act), copy.deepcopy(basis)
        name = f'conv_kan_{direction}_{type(basis).__name__.lower()}_{len(_COMPILED)}'
        fn = torch.compile(_bind(_expand if direction == 'fwd' else _expand_vjp, name, proto_act, proto_basis),
                           **COMPILE_OPTIONS)
        _COMPILED[key] = fn
    known[(direction, options)] = fn
    return fn


def features(x: torch.Tensor, dtype: torch.dtype, base_act: Optional[nn.Module], basis: Optional[ConvBasis],
             tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The layer's (B, C * K', *S) features in dtype, by the compiled expansion."""
    return _compiled('fwd', base_act, basis)(x, list(tensors), dtype)


def features_vjp(x: torch.Tensor, grad: torch.Tensor, base_act: Optional[nn.Module], basis: Optional[ConvBasis],
                 tensors: Sequence[torch.Tensor], needs: Sequence[bool]):
    """(grad of x, grads of the basis tensors) from the (B, C * K', *S) feature gradient, by the compiled vjp."""
    gx, gts = _compiled('bwd', base_act, basis)(x, grad, list(tensors), tuple(bool(n) for n in needs))
    return gx, [g if g is not None or not n else torch.zeros_like(t) for g, t, n in zip(gts, tensors, needs)]
