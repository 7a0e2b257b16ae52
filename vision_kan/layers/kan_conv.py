"""Kolmogorov-Arnold convolutions: a univariate basis per pixel and channel, mixed by one convolution.

    y = conv([b(x), phi_0(x), ..., phi_{K-1}(x)] per input channel, W) (+ bias) -> norm -> act

b is the base activation (SiLU; its conv is torch-conv-kan's "base conv") and phi_k the basis functions
(`conv_basis`). Base and basis share one convolution over C * (K + 1) channels, so groups are one grouped conv,
never a loop of modules. `BasisKANConv` is the N-d (1/2/3) layer; the families (`KAGNConv2d`, ...) are thin
subclasses in `kan_conv_families`.

Memory: the (B, C * (K + 1), *S) feature tensor is the largest thing a KAN conv makes. `_KANConvFunction` builds it
inside its forward, convolves and drops it; it saves only x. Backward rebuilds it for the weight gradient, frees
it, and gets the input gradient from the basis's vector-Jacobian product (`ConvBasis.vjp`), one function at a
time. Under autocast the features are written in the autocast dtype, the basis itself is evaluated in fp32.
"""
import contextlib
import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .conv_basis import ConvBasis
from .conv_basis_poly import silu_grad
from .kernels import conv_basis_fused
from .kernels.dispatch import backend_repr, check_backend

__all__ = ['BasisKANConv']

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}
IntOrTuple = Union[int, Sequence[int]]


class _Geometry(NamedTuple):
    ndim: int
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int


def _ntuple(value: IntOrTuple, ndim: int, name: str, low: int, owner: str) -> Tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim
    if len(values) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in values):
        raise ValueError(f'{owner}: {name} must be an integer >= {low} or {ndim} of them, got {value!r}')
    return values


def _padding(padding, kernel: Tuple[int, ...], dilation: Tuple[int, ...], stride: Tuple[int, ...], owner: str):
    if padding == 'valid':
        return (0,) * len(kernel)
    if padding == 'same':
        span = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(s % 2 for s in span) or any(s != 1 for s in stride):
            raise ValueError(f"{owner}: padding='same' needs stride 1 and an odd dilated kernel, got "
                             f'kernel_size={kernel}, dilation={dilation}, stride={stride}')
        return tuple(s // 2 for s in span)
    return _ntuple(padding, len(kernel), 'padding', 0, owner)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """The basis is evaluated in fp32 for half inputs, in the input's dtype otherwise (fp64 for the tests)."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


# The basis is evaluated a slice of the batch at a time, so its fp32 temporaries (a few per function, each the size
# of the slice) stay small next to the features; 2^22 elements = 16 MiB per fp32 temporary.
CHUNK_ELEMENTS = 1 << 22


def _batch_chunks(x: torch.Tensor):
    """Slices of the batch dim holding at most CHUNK_ELEMENTS elements each (at least one sample)."""
    per_sample = max(x[0].numel(), 1) if x.shape[0] else 1
    step = max(1, CHUNK_ELEMENTS // per_sample)
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _features(x: torch.Tensor, dtype: torch.dtype, base_act: Optional[nn.Module], basis: Optional[ConvBasis],
              tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """x (B, C, *S) -> (B, C * K', *S) in dtype: [b(x), phi_0(x), ..., phi_{K-1}(x)] for each channel in turn."""
    offset = 1 if base_act is not None else 0
    num = offset + (basis.num_functions if basis is not None else 0)
    out = torch.empty(x.shape[0], x.shape[1], num, *x.shape[2:], dtype=dtype, device=x.device)  # (B, C, K', *S)
    for sl in _batch_chunks(x):
        xw = x[sl].to(_work_dtype(x))
        if base_act is not None:
            out[sl, :, 0].copy_(base_act(xw))
        if basis is not None:
            basis.expand(xw, out[sl, :, offset:], tensors)
    return out.flatten(1, 2)


def _features_vjp(x: torch.Tensor, grad: torch.Tensor, base_act: Optional[nn.Module], basis: Optional[ConvBasis],
                  tensors: Sequence[torch.Tensor], needs: Sequence[bool]):
    """grad (B, C, K', *S) of the features -> (grad of x, grads of the basis tensors)."""
    gx, gt = torch.empty_like(x), [None] * len(tensors)
    offset = 1 if base_act is not None else 0
    for sl in _batch_chunks(x):
        xw, g = x[sl].to(_work_dtype(x)), grad[sl]
        gxs = None
        if isinstance(base_act, nn.SiLU):
            gxs = silu_grad(xw).mul_(g[:, :, 0])
        elif base_act is not None:
            with torch.enable_grad():
                xg = xw.detach().requires_grad_(True)
                (gxs,) = torch.autograd.grad(base_act(xg), xg, g[:, :, 0].to(xw.dtype))
        if basis is not None:
            gb, gts = basis.vjp(xw, g[:, :, offset:], tensors, needs)
            gxs = gb if gxs is None else gxs.add_(gb)
            gt = [a if b is None else (b if a is None else a + b) for a, b in zip(gt, gts)]
        gx[sl] = gxs
    # an empty batch has no slices: its basis tensors still get a (zero) gradient, as DDP expects
    gt = [torch.zeros_like(t) if g is None and n else g for g, t, n in zip(gt, tensors, needs)]
    return gx, gt


def _make_features(x, dtype, base_act, basis, tensors, fused: bool) -> torch.Tensor:
    """`_features`, through the compiled (fused) expansion when `fused` (conv_basis_fused.applies)."""
    if fused:
        return conv_basis_fused.features(x, dtype, base_act, basis, tensors)
    return _features(x, dtype, base_act, basis, tensors)


def _make_features_vjp(x, grad, base_act, basis, tensors, needs, fused: bool):
    """`_features_vjp`, through the compiled (fused) vjp when `fused`."""
    if fused:
        return conv_basis_fused.features_vjp(x, grad.flatten(1, 2), base_act, basis, tensors, needs)
    return _features_vjp(x, grad, base_act, basis, tensors, needs)


class _KANConvFunction(torch.autograd.Function):
    """conv(features(x), W) that saves x, not the features. Inputs: x, W, geometry, b, basis, fused (whether the
    compiled expansion runs, forward and backward alike), *basis tensors."""

    @staticmethod
    def forward(ctx, x, weight, geom: _Geometry, base_act, basis, fused: bool, *tensors):
        feats = _make_features(x, weight.dtype, base_act, basis, tensors, fused)  # (B, C * K', *S)
        y = _CONV[geom.ndim](feats, weight, None, geom.stride, geom.padding, geom.dilation, geom.groups)
        ctx.geom, ctx.base_act, ctx.basis, ctx.feat_shape, ctx.fused = geom, base_act, basis, feats.shape, fused
        ctx.save_for_backward(x, weight, *tensors)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight, *tensors = ctx.saved_tensors
        geom = ctx.geom
        needs_t = ctx.needs_input_grad[6:]
        conv_args = (geom.stride, geom.padding, geom.dilation, False, [0] * geom.ndim, geom.groups)
        gx = gw = None
        gt = [None] * len(tensors)
        if ctx.needs_input_grad[1]:  # weight grad first, so the features are freed before the input grad
            feats = _make_features(x, weight.dtype, ctx.base_act, ctx.basis, tensors, ctx.fused)
            gw = torch.ops.aten.convolution_backward(gy, feats, weight, None, *conv_args, [False, True, False])[1]
            del feats
        if ctx.needs_input_grad[0] or any(needs_t):
            shape_only = gy.new_empty(1).expand(ctx.feat_shape)  # the input is only read for its shape
            gfeats = torch.ops.aten.convolution_backward(gy, shape_only, weight, None, *conv_args,
                                                         [True, False, False])[0]
            k_prime = ctx.feat_shape[1] // x.shape[1]  # explicit: an empty batch cannot infer it
            gfeats = gfeats.view(x.shape[0], x.shape[1], k_prime, *x.shape[2:])  # (B, C, K', *S)
            gx, gt = _make_features_vjp(x, gfeats, ctx.base_act, ctx.basis, tensors, needs_t, ctx.fused)
        return (gx, gw, None, None, None, None, *gt)


class BasisKANConv(nn.Module):
    """N-d KAN convolution: base conv of b(x) plus a conv over the basis functions of x, fused into one conv.

    Parameters: base_weight (Cout, Cin/g, *k), basis_weight (Cout, Cin/g, K, *k), optional bias (Cout,), and the
    basis's own (e.g. Gram beta). Input (B, Cin, *S) -> output (B, Cout, *S') with nn.ConvNd's shape arithmetic.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as in nn.ConvNd (padding also
            'valid' or 'same'; zero padding of the features, i.e. padded pixels contribute 0).
        basis: the univariate basis (`conv_basis`); None for a base-only conv.
        ndim: 1, 2 or 3 (fixed by the 1d/2d/3d classes; default 2 here).
        base_activation: class of the parameter-free base activation b (SiLU); None drops the base branch.
        norm_layer: optional norm on the output, called as norm_layer(out_channels), e.g. nn.BatchNorm2d.
        act_layer: optional activation class applied after the norm (torch-conv-kan uses SiLU for KAGN/KALN).
        dropout: channel dropout (nn.Dropout{n}d) on the input.
        bias: add a learned bias to the convolution.
        kernel_backend: 'auto', 'reference' or 'fused': whether the basis expansion runs compiled
            (`kernels.conv_basis_fused`); `kernels.set_backend` sets a model's.
    """
    fixed_ndim: Optional[int] = None
    _extra_branch = False  # subclasses that add their own branch may have neither basis nor base

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: IntOrTuple,
            stride: IntOrTuple = 1,
            padding: Union[IntOrTuple, str] = 0,
            dilation: IntOrTuple = 1,
            groups: int = 1,
            *,
            basis: Optional[ConvBasis] = None,
            ndim: Optional[int] = None,
            base_activation: Optional[Callable[[], nn.Module]] = nn.SiLU,
            norm_layer: Optional[Callable[[int], nn.Module]] = None,
            act_layer: Optional[Callable[[], nn.Module]] = None,
            dropout: float = 0.0,
            bias: bool = False,
            device=None,
            dtype=None,
            kernel_backend: str = 'auto',
    ):
        super().__init__()
        owner = type(self).__name__
        self.kernel_backend = check_backend(kernel_backend, owner)
        ndim = self._resolve_ndim(ndim, owner)
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels), ('groups', groups)):
            _ntuple(value, 1, name, 1, owner)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'{owner}: in_channels={in_channels} and out_channels={out_channels} must be '
                             f'divisible by groups={groups}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'{owner}: dropout must be in [0, 1), got {dropout!r}')
        if basis is None and base_activation is None and not self._extra_branch:
            raise ValueError(f'{owner}: needs a basis or a base_activation (both are None)')
        kernel = _ntuple(kernel_size, ndim, 'kernel_size', 1, owner)
        stride_t = _ntuple(stride, ndim, 'stride', 1, owner)
        dilation_t = _ntuple(dilation, ndim, 'dilation', 1, owner)
        padding_t = _padding(padding, kernel, dilation_t, stride_t, owner)
        self.in_channels, self.out_channels, self.kernel_size, self.ndim = in_channels, out_channels, kernel, ndim
        self.stride, self.padding, self.dilation, self.groups = stride_t, padding_t, dilation_t, groups
        self._geom = _Geometry(ndim, stride_t, padding_t, dilation_t, groups)
        dd = {'device': device, 'dtype': dtype}

        self.base_act = base_activation() if base_activation is not None else None
        if self.base_act is not None and any(True for _ in self.base_act.parameters()):
            raise ValueError(f'{owner}: base_activation must be parameter-free (e.g. nn.SiLU), got {self.base_act}')
        self.basis = basis
        self.base_weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel, **dd)) \
            if self.base_act is not None else None
        self.basis_weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, basis.num_functions,
                                                     *kernel, **dd)) if basis is not None else None
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self.drop = _DROPOUT[ndim](dropout) if dropout > 0 else nn.Identity()
        self.norm = norm_layer(out_channels) if norm_layer is not None else nn.Identity()
        if device is not None or dtype is not None:
            self.norm.to(**{k: v for k, v in dd.items() if v is not None})
        self.act = act_layer() if act_layer is not None else nn.Identity()
        BasisKANConv.reset_parameters(self)

    def _resolve_ndim(self, ndim: Optional[int], owner: str) -> int:
        fixed = type(self).fixed_ndim
        if fixed is not None:
            if ndim not in (None, fixed):
                raise ValueError(f'{owner}: ndim is fixed to {fixed}, got ndim={ndim!r}')
            return fixed
        ndim = 2 if ndim is None else ndim
        if ndim not in _CONV:
            raise ValueError(f'{owner}: ndim must be 1, 2 or 3, got {ndim!r}')
        return ndim

    @property
    def num_functions(self) -> int:
        """K, basis functions per input channel (0 without a basis)."""
        return self.basis.num_functions if self.basis is not None else 0

    def reset_parameters(self) -> None:
        """nn.ConvNd's uniform bound 1/sqrt(fan_in) for the base; the basis conv's fan-in includes the K functions."""
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        if self.base_weight is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.base_weight, -bound, bound)
        if self.basis_weight is not None:
            bound = 1.0 / math.sqrt(fan_in * self.num_functions)
            nn.init.uniform_(self.basis_weight, -bound, bound)
            self.basis.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if hasattr(self.norm, 'reset_parameters'):
            self.norm.reset_parameters()

    def packed_weight(self) -> Optional[torch.Tensor]:
        """(Cout, Cin/g * K', *k): base and basis weights interleaved per input channel like the features."""
        parts = []
        if self.base_weight is not None:
            parts.append(self.base_weight.unsqueeze(2))  # (Cout, Cin/g, 1, *k)
        if self.basis_weight is not None:
            parts.append(self.basis_weight)  # (Cout, Cin/g, K, *k)
        if not parts:
            return None
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)).flatten(1, 2)

    def regularization_loss(self, l1: float = 1.0, l2: float = 0.0) -> torch.Tensor:
        """l1 * sum |basis weight| + l2 * sum basis weight^2: this layer's penalty, to add to the loss."""
        w = self.basis_weight
        if w is None:
            return self.base_weight.new_zeros(()) if self.base_weight is not None else torch.zeros(())
        return l1 * w.abs().sum() + l2 * w.square().sum()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__}: input must be (B, {self.in_channels}, '
                             f'{", ".join(["*"] * self.ndim)}), got shape {tuple(x.shape)}')

    def _kan_conv(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The fused base + basis convolution, in the autocast dtype when autocast is on."""
        weight = self.packed_weight()
        if weight is None:
            return None
        device_type = x.device.type
        # False e.g. on 'meta'; not asked under torch.compile (torch 2.6's dynamo cannot trace the query)
        autocast = torch.compiler.is_compiling() or torch.amp.is_autocast_available(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast and torch.is_autocast_enabled(device_type) \
            else x.dtype
        tensors = self.basis.tensors() if self.basis is not None else ()
        with torch.autocast(device_type, enabled=False) if autocast else contextlib.nullcontext():
            fused = conv_basis_fused.applies(x, self.base_act, self.kernel_backend)
            return _KANConvFunction.apply(x, weight.to(dtype), self._geom, self.base_act, self.basis, fused, *tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = self._kan_conv(self.drop(x))  # (B, Cout, *S')
        if self.bias is not None:
            y = y + self.bias.to(y.dtype).view(1, -1, *([1] * self.ndim))
        return self.act(self.norm(y))

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
             f'padding={self.padding}, dilation={self.dilation}, groups={self.groups}, ndim={self.ndim}')
        return s + (', bias=True' if self.bias is not None else '') + backend_repr(self)
