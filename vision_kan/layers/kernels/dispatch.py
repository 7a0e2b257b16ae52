"""Which path a KAN layer takes (fused Triton kernel or plain-torch reference), and the fused calls themselves.

Backends:
* 'auto' (default): fused on CUDA tensors when Triton is importable, reference everywhere else.
* 'reference': always the plain-torch path (the test oracle).
* 'fused': always the fused path; on CPU this needs Triton's interpreter (TRITON_INTERPRET=1 set before Triton
  is imported), which is how the tests run it. Raises RuntimeError where the kernels cannot run.
Layers the kernels do not cover (a non-uniform grid after `update_grid`, spline order != 3, a base activation
other than SiLU) take the reference path with a one-time warning.
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Iterator, Optional

import torch
import torch.nn as nn

from .ops import KIND_BSPLINE, KIND_RSWAF, basis_linear_call

__all__ = [
    'BACKENDS', 'set_backend', 'get_backend', 'backend', 'fused_available', 'kan_linear_fused',
    'fasterkan_linear_fused',
]

BACKENDS = ('auto', 'reference', 'fused')
_STATE = {'backend': 'auto'}
_WARNED = set()
_FOUND = {}


def set_backend(name: str) -> None:
    """Choose the KAN layers' path for the whole process: 'auto', 'reference' or 'fused'."""
    if name not in BACKENDS:
        raise ValueError(f'set_backend: name must be one of {BACKENDS}, got {name!r}')
    _STATE['backend'] = name


def get_backend() -> str:
    return _STATE['backend']


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager: `with backend('reference'): y = model(x)`; restores the previous backend on exit."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@torch.compiler.assume_constant_result
def _triton_importable() -> bool:
    if 'triton' not in _FOUND:  # looked up once: find_spec searches the file system
        _FOUND['triton'] = importlib.util.find_spec('triton') is not None
    return _FOUND['triton']


@torch.compiler.assume_constant_result
def _interpreter_on() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def fused_available(x: torch.Tensor) -> bool:
    """True when the fused kernels can run on x's device: CUDA with Triton, or CPU under Triton's interpreter."""
    if not _triton_importable():
        return False
    if x.is_cuda:
        return True
    return x.device.type == 'cpu' and _interpreter_on()


def _want_fused(x: torch.Tensor) -> bool:
    name = _STATE['backend']
    if name == 'reference':
        return False
    if name == 'auto':
        return x.is_cuda and _triton_importable()
    if not fused_available(x):
        raise RuntimeError(f"vision_kan backend 'fused' cannot run on {x.device.type} tensors: it needs CUDA and "
                           "Triton, or TRITON_INTERPRET=1 set before Triton is imported (CPU, slow)")
    return True


@torch.compiler.disable
def _warn_once(layer: nn.Module, reason: str) -> None:
    key = (type(layer).__name__, reason)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f'{type(layer).__name__}: fused kernel does not cover {reason}; using the reference path',
                      stacklevel=3)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul operand dtype: autocast's when autocast is on for x's device (as F.linear would), else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def kan_linear_fused(layer: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """KANLinear.forward through the fused kernel, or None when the reference path must run.

    Packs [base_weight; spline_weight * scaler] slot-major into (1 + K, d', d) so one kernel does both branches.
    """
    if not _want_fused(x):
        return None
    if layer.spline_order != 3:
        _warn_once(layer, f'spline_order={layer.spline_order} (only cubic)')
        return None
    if not layer.grid_uniform:
        _warn_once(layer, 'a non-uniform grid (after update_grid)')
        return None
    if type(layer.base_activation) is not nn.SiLU:
        _warn_once(layer, f'base_activation {type(layer.base_activation).__name__} (only SiLU)')
        return None
    dtype = _compute_dtype(x)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features).to(dtype)  # (M, d)
    spline = (layer.spline_weight * layer.spline_scaler.unsqueeze(-1)).permute(2, 0, 1)  # (K, d', d)
    weight = torch.cat([layer.base_weight.unsqueeze(0), spline], 0).to(dtype)  # (1 + K, d', d), contiguous
    grid = layer.grid.float()
    params = torch.stack([grid[:, 0], 1.0 / (grid[:, 1] - grid[:, 0])])  # (2, d): first knot, 1 / spacing
    bias = None if layer.bias is None else layer.bias.to(dtype)
    y = basis_linear_call(x2, weight, params, bias, KIND_BSPLINE, 1.0)
    return y.reshape(*lead, layer.out_features)


def fasterkan_linear_fused(layer: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """FasterKANLinear.forward: LayerNorm in torch, then RSWAF basis + matmul fused. None -> reference path."""
    if not _want_fused(x):
        return None
    dtype = _compute_dtype(x)
    lead = x.shape[:-1]
    xn = layer.norm(x.reshape(-1, layer.in_features)).to(dtype)  # (M, d)
    k = layer.num_grids
    weight = layer.weight.view(layer.out_features, layer.in_features, k).permute(2, 0, 1)  # (K, d', d)
    weight = weight.to(dtype, memory_format=torch.contiguous_format)
    bias = None if layer.bias is None else layer.bias.to(dtype)
    y = basis_linear_call(xn, weight, layer.grid.float(), bias, KIND_RSWAF, float(layer.inv_h))
    return y.reshape(*lead, layer.out_features)
