"""Which path a fused-capable layer takes (fused kernel or plain-torch reference): one question for every layer.

The choice belongs to the model, not the process: each fused-capable layer carries a `kernel_backend` attribute
(a plain string, constructor keyword `kernel_backend=`, neither parameter nor buffer, so state_dicts are unchanged;
it travels with `.to()`, deepcopy (EMA) and pickling). Two models in one process can take different paths.

    kernels.set_backend(model, 'reference')        # every fused-capable layer of model; returns model
    with kernels.backend(model, 'fused'):          # for a block; restores each layer's own value on exit
        y = model(x)

Backends:
* 'auto' (default): fused on CUDA tensors when Triton is importable, reference everywhere else. Under
  torch.compile a layer may pick, by measurement, a plain-torch form that inductor fuses with its neighbours
  (GroupRational does: see its `forward`); 'fused' always takes the kernels.
* 'reference': always the plain-torch path (the test oracle).
* 'fused': always the fused path; on CPU this needs Triton's interpreter (TRITON_INTERPRET=1 set before Triton
  is imported), which is how the tests run it. Raises RuntimeError where the kernels cannot run.

The interface a layer implements (KANLinear, FasterKANLinear, GroupRational; BasisKANConv has the attribute too,
for its compiled basis expansion, see `conv_basis_fused`):
* `kernel_backend: str`, checked by `check_backend` in its constructor;
* `fused_unsupported() -> Optional[str]`: why this layer's configuration has no kernel (None: it has one);
* it packs its own operands and calls its kernel, after asking `fused_path(self, x)`.
A layer the kernels do not cover takes the reference path with a one-time warning. Under torch.compile the
attribute is an ordinary module attribute: Dynamo guards on it (changing it recompiles), no graph break.
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Dict, Iterator, List

import torch
import torch.nn as nn

__all__ = ['BACKENDS', 'set_backend', 'backend', 'check_backend', 'fused_available', 'fused_path', 'compute_dtype']

BACKENDS = ('auto', 'reference', 'fused')
_WARNED = set()
_FOUND = {}


def check_backend(name: str, owner: str) -> str:
    """name if it is one of BACKENDS, else the one ValueError every entry point raises."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f'{owner}: kernel backend must be one of {BACKENDS}, got {name!r}')
    return name


def backend_repr(layer: nn.Module) -> str:
    """The extra_repr suffix of a fused-capable layer: ', kernel_backend=...' unless it is the default 'auto'."""
    return f', kernel_backend={layer.kernel_backend}' if layer.kernel_backend != 'auto' else ''


def _fused_capable(model: nn.Module, owner: str) -> List[nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f'{owner}(model, name): model must be an nn.Module, got {type(model).__name__}')
    return [m for m in model.modules() if hasattr(m, 'kernel_backend')]


def set_backend(model: nn.Module, name: str) -> nn.Module:
    """Set `kernel_backend = name` on every fused-capable layer of model (model itself included); returns model.

    name: 'auto', 'reference' or 'fused' (see the module docstring). A model without such layers is returned as is.
    Works through wrappers (torch.compile's OptimizedModule, DDP) since their modules() reach the layers.
    """
    layers = _fused_capable(model, 'set_backend')
    check_backend(name, 'set_backend')
    for layer in layers:
        layer.kernel_backend = name
    return model


@contextlib.contextmanager
def backend(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """`with backend(model, 'reference'): y = model(x)`: set_backend for the block, then each layer gets back the
    value it had (also on an exception). Yields model."""
    previous: Dict[nn.Module, str] = {m: m.kernel_backend for m in _fused_capable(model, 'backend')}
    check_backend(name, 'backend')
    for layer in previous:
        layer.kernel_backend = name
    try:
        yield model
    finally:
        for layer, value in previous.items():
            layer.kernel_backend = value


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


def _backend_wants_fused(name: str, x: torch.Tensor) -> bool:
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

    True when the layer's `kernel_backend` allows the fused path on x's device and `layer.fused_unsupported()` is
    None; a layer the kernels do not cover warns once and answers False. Raises under 'fused' where no kernel can run.
    """
    if not _backend_wants_fused(layer.kernel_backend, x):
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
