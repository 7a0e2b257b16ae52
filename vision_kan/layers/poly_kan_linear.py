"""KAN linear layers on polynomials of t = tanh(x): the layers of the digit models KAL-Net and KANvolver (TorchKAN).

TorchKAN (KAL-Net, KANvolver) - https://github.com/1ssb/torchkan

* `KALNLinear`: y = SiLU(LayerNorm(W_b . SiLU(x) + W_p . [P_0(t), ..., P_n(t)])), P_j the Legendre polynomials.
* `MonomialKANLinear`: y = SiLU(LayerNorm(W_b . x + W_p . [t, t^2, ..., t^n])) (the constant t^0 is the bias).

TorchKAN rescales x to [-1, 1] by the min and max of the whole batch, so a sample's output depends on the rest of
its batch (and eval differs from train); tanh squashes each value on its own instead. A classifier layer drops the
LayerNorm and SiLU (norm_act=False: logits). Both map (B, d) -> (B, d'); the bases come from `basis`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .basis import legendre, powers

__all__ = ['KALNLinear', 'MonomialKANLinear']


class KALNLinear(nn.Module):
    """Legendre KAN layer: base SiLU branch + degree-n Legendre expansion of tanh(x), optional LayerNorm + SiLU.

    Parameters: d' d (base) + d' d (n + 1) (polynomials) + 2 d' (LayerNorm). (B, d) -> (B, d').

    Args:
        in_features: d.
        out_features: d'.
        degree: n, highest Legendre degree.
        norm_act: apply LayerNorm and SiLU to the output (hidden layers); False for a classifier.
    """

    def __init__(self, in_features: int, out_features: int, degree: int = 3, norm_act: bool = True):
        super().__init__()
        if not isinstance(degree, int) or degree < 0:
            raise ValueError(f'KALNLinear: degree must be an integer >= 0, got {degree!r}')
        self.in_features, self.out_features, self.degree = in_features, out_features, degree
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.poly_weight = nn.Parameter(torch.empty(out_features, in_features * (degree + 1)))  # (d', d (n+1))
        self.norm = nn.LayerNorm(out_features) if norm_act else nn.Identity()
        self.act = nn.SiLU() if norm_act else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))  # nn.Linear's init
        bound = 1.0 / math.sqrt(self.in_features * (self.degree + 1))
        nn.init.uniform_(self.poly_weight, -bound, bound)
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.reset_parameters()

    def legendre(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d, n + 1): P_0 ... P_n of t = tanh(x), (j + 1) P_{j+1} = (2j + 1) t P_j - j P_{j-1}."""
        return legendre(torch.tanh(x), self.degree)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f'KALNLinear: input must be (B, {self.in_features}), got {tuple(x.shape)}')
        base = F.linear(F.silu(x), self.base_weight)  # (B, d')
        poly = F.linear(self.legendre(x).flatten(1), self.poly_weight)  # (B, d (n+1)) -> (B, d')
        return self.act(self.norm(base + poly))

    def extra_repr(self) -> str:
        return f'{self.in_features}, {self.out_features}, degree={self.degree}'


class MonomialKANLinear(nn.Module):
    """KAN layer on the powers t^1..t^n of t = tanh(x), plus a linear base branch; optional LayerNorm + SiLU.

    Parameters: d' d (base) + d' d n (powers) + d' (bias) + 2 d' (LayerNorm).

    Args:
        in_features: d.
        out_features: d'.
        order: n, the highest power.
        norm_act: LayerNorm and SiLU on the output (hidden layers); False for a classifier.
    """

    def __init__(self, in_features: int, out_features: int, order: int = 3, norm_act: bool = True):
        super().__init__()
        if not isinstance(order, int) or order < 1:
            raise ValueError(f'MonomialKANLinear: order must be an integer >= 1, got {order!r}')
        self.in_features, self.out_features, self.order = in_features, out_features, order
        self.base = nn.Linear(in_features, out_features)  # W_b x + bias (the bias is the t^0 term)
        self.poly_weight = nn.Parameter(torch.empty(out_features, in_features * order))  # (d', d n)
        self.norm = nn.LayerNorm(out_features) if norm_act else nn.Identity()
        self.act = nn.SiLU() if norm_act else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.base.reset_parameters()
        bound = 1.0 / math.sqrt(self.in_features * self.order)
        nn.init.uniform_(self.poly_weight, -bound, bound)
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.reset_parameters()

    def monomials(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d, n): t, t^2, ..., t^n of t = tanh(x)."""
        return powers(torch.tanh(x), self.order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f'MonomialKANLinear: input must be (B, {self.in_features}), got {tuple(x.shape)}')
        y = self.base(x) + F.linear(self.monomials(x).flatten(1), self.poly_weight)  # (B, d')
        return self.act(self.norm(y))

    def extra_repr(self) -> str:
        return f'{self.in_features}, {self.out_features}, order={self.order}'
