"""Which path a fused-capable layer takes (fused kernel or plain-torch reference): one question for every layer.

Backends:
* 'auto' (default): fused on CUDA tensors when Triton is importable, reference everywhere else. Under
  torch.compile a layer may pick, by measurement, a plain-torch form that inductor fuses with its neighbours
  (GroupRational does: see its `forward`); 'fused' always takes the kernels.
* 'reference': always the plain-torch path (the test oracle).
* 'fused': always the fused path; on CPU this needs Triton's interpreter (TRITON_INTERPRET=1 set before Triton
  is imported), which is how the tests run it. Raises RuntimeError where the kernels cannot run.

The interface a layer implements (KANLinear, FasterKANLinear, GroupRational):
* `fused_unsupported() -> Optional[str]`: why this layer's configuration has no kernel (None: it has one);
* it packs its own operands and calls its kernel, after asking `fused_path(self, x)`.
A layer the kernels do not cover takes the reference path with a one-time warning.
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ['BACKENDS', 'set_backend', 'get_backend', 'backend', 'fused_available', 'fused_path', 'compute_dtype']

BACKENDS = ('auto', 'reference', 'fused')
_STATE = {'backend': 'auto'}
_WARNED = set()
_FOUND = {}


def set_backend(name: str) -> None:
    """Choose the fused-capable layers' path for the whole process: 'auto', 'reference' or 'fused'."""
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


def _backend_wants_fused(x: torch.Tensor) -> bool:
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
                      stacklevel=4)


def fused_path(layer: nn.Module, x: torch.Tensor) -> bool:
    """The one question a fused-capable layer asks: does its fused kernel run on this input?

    True when the backend allows the fused path on x's device and `layer.fused_unsupported()` is None; a layer
    the kernels do not cover warns once and answers False. Raises under backend 'fused' where no kernel can run.
    """
    if not _backend_wants_fused(x):
        return False
    reason = layer.fused_unsupported()
    if reason is not None:
        _warn_once(layer, reason)
        return False
    return True


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul operand dtype: autocast's when autocast is on for x's device (as F.linear would), else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype
