"""The conv-KAN families (torch-conv-kan's collection) as thin subclasses of `BasisKANConv`.

Each `<Family>ConvNd` picks its basis (`conv_basis`) and takes `ndim`; `<Family>Conv{1,2,3}d` fix ndim. Every
class accepts BasisKANConv's keywords: base_activation, norm_layer, act_layer, dropout, bias, device, dtype,
kernel_backend.

    layer = KAGNConv2d(64, 128, 3, padding=1, degree=3, norm_layer=nn.BatchNorm2d, act_layer=nn.SiLU)
    loss = loss + layer.regularization_loss(l1=1e-5, l2=0.0)
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv_basis import BSplineBasis, RBFBasis, ReLUKANBasis, WaveletBasis
from .conv_basis_poly import BernsteinBasis, ChebyshevBasis, GramBasis, JacobiBasis, LegendreBasis
from .kan_conv import BasisKANConv

__all__ = [
    'KANConvNd', 'KANConv1d', 'KANConv2d', 'KANConv3d',
    'FastKANConvNd', 'FastKANConv1d', 'FastKANConv2d', 'FastKANConv3d',
    'KALNConvNd', 'KALNConv1d', 'KALNConv2d', 'KALNConv3d',
    'KACNConvNd', 'KACNConv1d', 'KACNConv2d', 'KACNConv3d',
    'KAGNConvNd', 'KAGNConv1d', 'KAGNConv2d', 'KAGNConv3d',
    'KAJNConvNd', 'KAJNConv1d', 'KAJNConv2d', 'KAJNConv3d',
    'KABNConvNd', 'KABNConv1d', 'KABNConv2d', 'KABNConv3d',
    'ReLUKANConvNd', 'ReLUKANConv1d', 'ReLUKANConv2d', 'ReLUKANConv3d',
    'WavKANConvNd', 'WavKANConv1d', 'WavKANConv2d', 'WavKANConv3d',
    'BottleNeckKAGNConvNd', 'BottleNeckKAGNConv1d', 'BottleNeckKAGNConv2d', 'BottleNeckKAGNConv3d',
    'CONV_KAN_FAMILIES',
]


class KANConvNd(BasisKANConv):
    """B-spline KAN conv (efficient-KAN's basis): grid_size + spline_order B-splines per channel on grid_range."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 grid_size: int = 5, spline_order: int = 3, grid_range=(-1.0, 1.0), device=None, dtype=None,
                 **kwargs):
        basis = BSplineBasis(grid_size, spline_order, grid_range, device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, basis=basis,
                         device=device, dtype=dtype, **kwargs)


class FastKANConvNd(BasisKANConv):
    """FastKAN conv: num_grids Gaussian RBFs per channel on grid_range (width = grid spacing by default)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 num_grids: int = 8, grid_range=(-2.0, 2.0), denominator: Optional[float] = None, device=None,
                 dtype=None, **kwargs):
        basis = RBFBasis(num_grids, grid_range, denominator, device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, basis=basis,
                         device=device, dtype=dtype, **kwargs)


class KALNConvNd(BasisKANConv):
    """KALN conv: Legendre polynomials P_0..P_degree of tanh(x) per channel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         basis=LegendreBasis(degree), **kwargs)


class KACNConvNd(BasisKANConv):
    """KACN conv: Chebyshev polynomials T_0..T_degree of tanh(x) per channel (recurrence, no arccos)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         basis=ChebyshevBasis(degree), **kwargs)


class KAGNConvNd(BasisKANConv):
    """KAGN conv: SiLU of Gram polynomials of tanh(x) with a learnable recurrence beta."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, device=None, dtype=None, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         basis=GramBasis(degree, device=device, dtype=dtype), device=device, dtype=dtype, **kwargs)


class KAJNConvNd(BasisKANConv):
    """KAJN conv: Jacobi polynomials P^(alpha, beta)_0..degree of tanh(x) per channel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, alpha: float = 1.0, beta: float = 1.0, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         basis=JacobiBasis(degree, alpha, beta), **kwargs)


class KABNConvNd(BasisKANConv):
    """KABN conv: Bernstein polynomials of sigmoid(x) per channel (a partition of unity, never constant)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         basis=BernsteinBasis(degree), **kwargs)


class ReLUKANConvNd(BasisKANConv):
    """ReLU-KAN conv: grid_size + order squared-ReLU bumps per channel, phases learnable when train_phases."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 grid_size: int = 5, order: int = 3, grid_range=(-1.0, 1.0), train_phases: bool = True,
                 device=None, dtype=None, **kwargs):
        basis = ReLUKANBasis(in_channels, grid_size, order, grid_range, train_phases, device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, basis=basis,
                         device=device, dtype=dtype, **kwargs)


class WavKANConvNd(BasisKANConv):
    """WavKAN conv: num_wavelets wavelets per input channel (learnable translation and scale), mixed by one conv.

    wavelet_type: 'mexican_hat', 'morlet', 'dog' or 'shannon'.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 wavelet_type: str = 'mexican_hat', num_wavelets: int = 4, init_range=(-1.0, 1.0), device=None,
                 dtype=None, **kwargs):
        basis = WaveletBasis(in_channels, wavelet_type, num_wavelets, init_range, device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, basis=basis,
                         device=device, dtype=dtype, **kwargs)


class BottleNeckKAGNConvNd(BasisKANConv):
    """Bottleneck KAGN conv: base conv of SiLU(x) + 1x1 expand(Gram KAN conv(1x1 squeeze(x))).

    The squeeze maps each group's Cin/g channels to m = max(Cin/g, Cout/g) / dim_reduction (at least
    min(min_internal, Cin/g, Cout/g)); the Gram conv (m*g -> m*g, the layer's kernel/stride/padding/dilation/
    groups, no base branch) then works on m*g*(degree + 1) feature channels instead of Cin*(degree + 1).
    """
    _extra_branch = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 degree: int = 3, dim_reduction: float = 4.0, min_internal: int = 16, device=None, dtype=None,
                 **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, basis=None,
                         device=device, dtype=dtype, **kwargs)
        if not dim_reduction > 0:
            raise ValueError(f'{type(self).__name__}: dim_reduction must be > 0, got {dim_reduction!r}')
        cin, cout = in_channels // groups, out_channels // groups
        inner = int(max(cin / dim_reduction, cout / dim_reduction))
        self.inner_channels = inner if inner >= min_internal else min(min_internal, cin, cout)  # m, per group
        m, ones = self.inner_channels * groups, (1,) * self.ndim
        dd = {'device': device, 'dtype': dtype}
        self.squeeze_weight = nn.Parameter(torch.empty(m, cin, *ones, **dd))  # (m*g, Cin/g, 1..)
        self.inner = KAGNConvNd(m, m, self.kernel_size, self.stride, self.padding, self.dilation, groups,
                                degree=degree, ndim=self.ndim, base_activation=None,
                                kernel_backend=self.kernel_backend, **dd)
        self.expand_weight = nn.Parameter(torch.empty(out_channels, self.inner_channels, *ones, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, 'inner'):  # the parent's __init__ resets before the bottleneck exists
            for w in (self.squeeze_weight, self.expand_weight):
                bound = 1.0 / (w[0].numel() ** 0.5)  # 1 / sqrt(fan_in)
                nn.init.uniform_(w, -bound, bound)
            self.inner.reset_parameters()

    def regularization_loss(self, l1: float = 1.0, l2: float = 0.0) -> torch.Tensor:
        return self.inner.regularization_loss(l1, l2)

    def _kan_conv(self, x: torch.Tensor) -> torch.Tensor:
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.ndim]
        z = conv(x, self.squeeze_weight, groups=self.groups)  # (B, m*g, *S)
        z = conv(self.inner(z), self.expand_weight, groups=self.groups)  # (B, Cout, *S')
        base = super()._kan_conv(x)  # base conv of SiLU(x), or None without a base
        return z if base is None else base + z


def _fixed(family: type, ndim: int) -> type:
    name = family.__name__[:-2] + f'{ndim}d'
    doc = f'{family.__name__} with ndim={ndim}. {family.__doc__.splitlines()[0]}'
    return type(name, (family,), {'fixed_ndim': ndim, '__doc__': doc, '__module__': __name__})


KANConv1d, KANConv2d, KANConv3d = (_fixed(KANConvNd, n) for n in (1, 2, 3))
FastKANConv1d, FastKANConv2d, FastKANConv3d = (_fixed(FastKANConvNd, n) for n in (1, 2, 3))
KALNConv1d, KALNConv2d, KALNConv3d = (_fixed(KALNConvNd, n) for n in (1, 2, 3))
KACNConv1d, KACNConv2d, KACNConv3d = (_fixed(KACNConvNd, n) for n in (1, 2, 3))
KAGNConv1d, KAGNConv2d, KAGNConv3d = (_fixed(KAGNConvNd, n) for n in (1, 2, 3))
KAJNConv1d, KAJNConv2d, KAJNConv3d = (_fixed(KAJNConvNd, n) for n in (1, 2, 3))
KABNConv1d, KABNConv2d, KABNConv3d = (_fixed(KABNConvNd, n) for n in (1, 2, 3))
ReLUKANConv1d, ReLUKANConv2d, ReLUKANConv3d = (_fixed(ReLUKANConvNd, n) for n in (1, 2, 3))
WavKANConv1d, WavKANConv2d, WavKANConv3d = (_fixed(WavKANConvNd, n) for n in (1, 2, 3))
BottleNeckKAGNConv1d, BottleNeckKAGNConv2d, BottleNeckKAGNConv3d = (
    _fixed(BottleNeckKAGNConvNd, n) for n in (1, 2, 3))

CONV_KAN_FAMILIES = {  # short name -> N-d class, e.g. for a model's `conv_type` argument
    'kan': KANConvNd, 'fastkan': FastKANConvNd, 'kaln': KALNConvNd, 'kacn': KACNConvNd, 'kagn': KAGNConvNd,
    'kajn': KAJNConvNd, 'kabn': KABNConvNd, 'relukan': ReLUKANConvNd, 'wavkan': WavKANConvNd,
    'bottleneck_kagn': BottleNeckKAGNConvNd,
}
