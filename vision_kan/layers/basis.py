"""Univariate bases evaluated per input feature, shared by the KAN layers.

Shapes: an input x of shape (..., d) gives a basis tensor of shape (..., d, K), K functions per feature.

* B-spline of order k on a per-feature knot vector `knots` of shape (d, G + 2k + 1): K = G + k functions.
  `bspline_basis` is the general Cox-de Boor recursion (any knots, e.g. after a grid update);
  `bspline_basis_uniform` is the closed form of the cubic (k = 3) basis on equally spaced knots, 3-6x faster and
  free of the recursion's intermediate tensors. Both are 0 outside [knots[0], knots[-1]).
* RSWAF (FasterKAN): phi_j(x) = 1 - tanh^2((x - g_j) / h) on a shared 1-d grid g of K points.
"""
from typing import Tuple

import torch

__all__ = [
    'uniform_knots', 'knots_are_uniform', 'bspline_basis', 'bspline_basis_uniform', 'bspline_basis_auto',
    'rswaf_basis', 'rswaf_basis_derivative',
]


def uniform_knots(
        in_features: int,
        grid_size: int,
        spline_order: int,
        grid_range: Tuple[float, float] = (-1.0, 1.0),
        dtype: torch.dtype = torch.float32,
        device=None,
) -> torch.Tensor:
    """Equally spaced knots: G intervals on grid_range, extended by k knots on each side -> (d, G + 2k + 1)."""
    lo, hi = grid_range
    h = (hi - lo) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64, device=device)
    knots = (lo + h * steps).to(dtype)
    return knots.expand(in_features, -1).contiguous()


def knots_are_uniform(knots: torch.Tensor, rtol: float = 1e-4) -> bool:
    """True when every feature's knots are equally spaced (each feature may have its own spacing)."""
    gaps = knots.diff(dim=-1)
    return bool(torch.allclose(gaps, gaps[:, :1].expand_as(gaps), rtol=rtol, atol=0.0))


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, spline_order: int) -> torch.Tensor:
    """Cox-de Boor recursion. x (..., d), knots (d, G + 2k + 1) -> (..., d, G + k)."""
    x = x.unsqueeze(-1)  # (..., d, 1)
    # order 0: indicator of each knot interval, (..., d, G + 2k)
    bases = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).to(x.dtype)
    for p in range(1, spline_order + 1):
        left = (x - knots[:, :-(p + 1)]) / (knots[:, p:-1] - knots[:, :-(p + 1)])
        right = (knots[:, p + 1:] - x) / (knots[:, p + 1:] - knots[:, 1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]  # (..., d, G + 2k - p)
    return bases


def _cardinal_cubic(r: torch.Tensor) -> torch.Tensor:
    """Centred cardinal cubic B-spline of r = |s - 2|, s in knot units: support [0, 2)."""
    inner = (4.0 - 6.0 * r * r + 3.0 * r * r * r) / 6.0  # r < 1
    outer = (2.0 - r).clamp(min=0.0) ** 3 / 6.0  # 1 <= r < 2, 0 beyond
    return torch.where(r < 1.0, inner, outer)


def bspline_basis_uniform(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Closed-form cubic B-spline basis on equally spaced knots. x (..., d), knots (d, G + 7) -> (..., d, G + 3).

    With u = (x - t_0) / h the position in knot units, B_j(x) = N(u - j), N the cardinal cubic B-spline on [0, 4).
    """
    num_basis = knots.shape[-1] - 4  # G + 2k + 1 knots, k = 3 -> G + k functions
    t0 = knots[:, 0]
    h = knots[:, 1] - knots[:, 0]
    u = (x - t0) / h  # (..., d)
    j = torch.arange(num_basis, device=x.device, dtype=x.dtype)
    r = (u.unsqueeze(-1) - j - 2.0).abs()  # (..., d, G + 3)
    return _cardinal_cubic(r)  # 0 wherever r >= 2, so 0 outside [t_0, t_last) as in the recursion


def bspline_basis_auto(x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool) -> torch.Tensor:
    """Closed form where it applies (cubic, equally spaced knots), the recursion otherwise."""
    if uniform and spline_order == 3:
        return bspline_basis_uniform(x, knots)
    return bspline_basis(x, knots, spline_order)


def rswaf_basis(x: torch.Tensor, grid: torch.Tensor, inv_h: float) -> torch.Tensor:
    """Reflectional switch activation functions. x (..., d), grid (K,) -> (..., d, K) in [0, 1]."""
    t = torch.tanh((x.unsqueeze(-1) - grid) * inv_h)
    return 1.0 - t * t


def rswaf_basis_derivative(x: torch.Tensor, grid: torch.Tensor, inv_h: float) -> torch.Tensor:
    """d phi_j / dx = -2 tanh(z) (1 - tanh^2(z)) / h with z = (x - g_j) / h. Same shape as `rswaf_basis`."""
    t = torch.tanh((x.unsqueeze(-1) - grid) * inv_h)
    return -2.0 * inv_h * t * (1.0 - t * t)
