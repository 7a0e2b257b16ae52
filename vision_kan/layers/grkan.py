"""Group-rational KAN (GR-KAN), the block of KAT (Kolmogorov-Arnold Transformer, Yang & Wang, 2024,
https://arxiv.org/abs/2409.10594): a learnable rational function shared within each channel group, then a linear map.

    F(x) = P(x) / Q(x),  P(x) = a_0 + a_1 x + ... + a_m x^m,  Q(x) = 1 + |b_1 x + ... + b_n x^n|   (m=5, n=4)

Q >= 1, so F has no poles. Channels are split into `groups` contiguous groups, each with its own (a, b).
KAT's released kernels (CUDA and Triton, github.com/Adamdad/rational_kat_cu) compute another denominator,
Q(x) = 1 + |b_1| |x| + ... + |b_n| |x|^n: `denominator='sum_abs'` selects it (what KAT's checkpoints need).
"""
import functools
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels.dispatch import backend_repr, check_backend, compute_dtype, fused_path
from .kernels.rational_triton import DEN_COEFFS, NUM_COEFFS, rational_call

__all__ = ['rational', 'rational_sum_abs', 'fit_rational', 'GroupRational', 'GRKANLinear', 'DENOMINATORS']

_TARGETS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'identity': lambda x: x,
    'swish': F.silu,
    'gelu': F.gelu,
}


def rational(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference group-rational function. x (..., D), a (g, m + 1), b (g, n), D divisible by g -> (..., D)."""
    g = a.shape[0]
    xg = x.reshape(*x.shape[:-1], g, x.shape[-1] // g)  # (..., g, D/g)
    a = a.to(x.dtype)[:, :, None]  # (g, m + 1, 1): broadcast over the group's channels
    b = b.to(x.dtype)[:, :, None]
    p = a[:, -1]
    for j in range(a.shape[1] - 2, -1, -1):  # Horner: P(x) = a_0 + x (a_1 + x (a_2 + ...))
        p = p * xg + a[:, j]
    s = b[:, -1]
    for j in range(b.shape[1] - 2, -1, -1):  # S(x) = b_1 + x (b_2 + ...), Q = 1 + |x S(x)|
        s = s * xg + b[:, j]
    return (p / (1.0 + (xg * s).abs())).reshape(x.shape)


def rational_sum_abs(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KAT kernels' group-rational function: Q = 1 + sum_j |b_j| |x|^j. Shapes as `rational`."""
    g = a.shape[0]
    xg = x.reshape(*x.shape[:-1], g, x.shape[-1] // g)  # (..., g, D/g)
    a = a.to(x.dtype)[:, :, None]
    b = b.to(x.dtype).abs()[:, :, None]
    ax = xg.abs()
    p = a[:, -1]
    for j in range(a.shape[1] - 2, -1, -1):  # Horner: P(x) = a_0 + x (a_1 + ...)
        p = p * xg + a[:, j]
    q = b[:, -1]
    for j in range(b.shape[1] - 2, -1, -1):  # Horner in |x|: |b_1| + |x| (|b_2| + ...)
        q = q * ax + b[:, j]
    return (p / (q * ax + 1.0)).reshape(x.shape)


# denominator name -> reference function: 'abs_sum' Q = 1 + |sum_j b_j x^j| (the paper's), 'sum_abs' (KAT's kernels)
DENOMINATORS = {'abs_sum': rational, 'sum_abs': rational_sum_abs}


@functools.lru_cache(maxsize=None)
def fit_rational(target: str, num_order: int = 5, den_order: int = 4, span: float = 3.0) -> Tuple[tuple, tuple]:
    """Coefficients (a, b) of a rational function close to `target` on [-span, span], fitted once in float64.

    A linearised least-squares start (P(x) - f(x) (1 + S(x)) = 0) refined by L-BFGS on the true form.
    Returns tuples of floats so the cache never holds tensors.
    """
    if target not in _TARGETS:
        raise ValueError(f'fit_rational: target must be one of {sorted(_TARGETS)}, got {target!r}')
    x = torch.linspace(-span, span, 1001, dtype=torch.float64)
    y = _TARGETS[target](x)
    if target == 'identity':
        a = torch.zeros(num_order + 1, dtype=torch.float64)
        a[1] = 1.0
        return tuple(a.tolist()), (0.0,) * den_order
    powers_p = torch.stack([x ** j for j in range(num_order + 1)], 1)  # (N, m + 1)
    powers_q = torch.stack([x ** j for j in range(1, den_order + 1)], 1)  # (N, n)
    design = torch.cat([powers_p, -y[:, None] * powers_q], 1)
    coef = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(1)
    a = coef[:num_order + 1].clone().requires_grad_()
    b = coef[num_order + 1:].clone().requires_grad_()
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = (rational(x[:, None], a[None], b[None])[:, 0] - y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return tuple(a.detach().tolist()), tuple(b.detach().tolist())


class GroupRational(nn.Module):
    """F applied channel-wise, one (a, b) per group. (..., D) -> (..., D).

    denominator: 'abs_sum' (Q = 1 + |b_1 x + ... + b_n x^n|, fused on CUDA) or 'sum_abs' (KAT's released kernels,
    Q = 1 + |b_1||x| + ... + |b_n||x|^n, reference path only). `init` fits are for 'abs_sum'; 'identity' is exact
    for both. kernel_backend: 'auto', 'reference' or 'fused', this layer's path (`kernels.set_backend` sets a
    model's).
    """

    def __init__(self, num_channels: int, groups: int = 8, num_order: int = 5, den_order: int = 4,
                 init: str = 'identity', denominator: str = 'abs_sum', device=None, dtype=None,
                 kernel_backend: str = 'auto'):
        super().__init__()
        self.kernel_backend = check_backend(kernel_backend, 'GroupRational')
        if denominator not in DENOMINATORS:
            raise ValueError(f'GroupRational: denominator must be one of {sorted(DENOMINATORS)}, got {denominator!r}')
        self.denominator = denominator
        if groups < 1 or num_channels % groups:
            raise ValueError(f'GroupRational: num_channels={num_channels} must be divisible by groups={groups}')
        if init not in _TARGETS:
            raise ValueError(f'GroupRational: init must be one of {sorted(_TARGETS)}, got {init!r}')
        dd = {'device': device, 'dtype': dtype}
        self.num_channels, self.groups, self.init = num_channels, groups, init
        self.num_order, self.den_order = num_order, den_order
        self.weight_numerator = nn.Parameter(torch.empty(groups, num_order + 1, **dd))  # a
        self.weight_denominator = nn.Parameter(torch.empty(groups, den_order, **dd))  # b
        self.reset_parameters()

    def reset_parameters(self) -> None:
        a, b = fit_rational(self.init, self.num_order, self.den_order)
        with torch.no_grad():
            self.weight_numerator.copy_(torch.tensor(a).expand(self.groups, -1))
            self.weight_denominator.copy_(torch.tensor(b).expand(self.groups, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.num_channels:
            raise ValueError(f'GroupRational: input last dim must be {self.num_channels}, got {tuple(x.shape)}')
        if fused_path(self, x):  # self.kernel_backend, x's device, the orders and the denominator
            return self.fused_forward(x)
        return DENOMINATORS[self.denominator](x, self.weight_numerator, self.weight_denominator)

    def fused_unsupported(self) -> Optional[str]:
        if self.denominator != 'abs_sum':
            return f"denominator {self.denominator!r} (the kernel computes 'abs_sum')"
        if (self.num_order + 1, self.den_order) != (NUM_COEFFS, DEN_COEFFS):
            return f'orders ({self.num_order}, {self.den_order}) (only (5, 4))'
        return None

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The rational through the fused kernel (ask `kernels.fused_path` first), output in the autocast dtype
        under autocast (else x's), so the linear map after it reads it without a cast pass. Under torch.compile the
        kernels are a triton_op that inductor launches itself (see kernels/rational_triton.py)."""
        return rational_call(x, self.weight_numerator, self.weight_denominator, compute_dtype(x))

    def extra_repr(self) -> str:
        s = f'{self.num_channels}, groups={self.groups}, order=({self.num_order}, {self.den_order}), init={self.init}'
        return s + (f', denominator={self.denominator}' if self.denominator != 'abs_sum' else '') + backend_repr(self)


class GRKANLinear(nn.Module):
    """GR-KAN layer: group rational -> linear. (..., d) -> (..., d'). Parameters: d d' (+ d') + 2 g (m + n + 1)."""

    def __init__(self, in_features: int, out_features: int, groups: int = 8, num_order: int = 5, den_order: int = 4,
                 rational_init: str = 'identity', bias: bool = True, rational_denominator: str = 'abs_sum',
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.in_features, self.out_features = in_features, out_features
        self.rational = GroupRational(in_features, groups, num_order, den_order, rational_init,
                                      denominator=rational_denominator, **dd)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **dd))
        self.bias = nn.Parameter(torch.empty(out_features, **dd)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT's linear init (trunc-normal 0.02, zero bias), as KAT trains it."""
        self.rational.reset_parameters()
        nn.init.trunc_normal_(self.weight, std=0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_weights(self) -> None:
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f'GRKANLinear: input last dim must be in_features={self.in_features}, '
                             f'got shape {tuple(x.shape)}')
        return F.linear(self.rational(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}'
