"""Univariate bases: the one definition of each, shared by the KAN linear layers, the conv-KAN basis classes
(`conv_basis`, `conv_basis_poly`, which add their lean in-place forms and vector-Jacobian products) and the
digit models' layers (`poly_kan_linear`).

Shapes: an input x of shape (..., d) gives a basis tensor of shape (..., d, K), K functions per feature.

* B-spline of order k on a per-feature knot vector `knots` of shape (d, G + 2k + 1): K = G + k functions.
  `bspline_basis` is the general Cox-de Boor recursion (any knots, e.g. after a grid update);
  `bspline_basis_uniform` is the closed form of the cubic (k = 3) basis on equally spaced knots, 3-6x faster and
  free of the recursion's intermediate tensors. Both are 0 outside [knots[0], knots[-1]).
* RSWAF (FasterKAN): phi_j(x) = 1 - tanh^2((x - g_j) / h) on a shared 1-d grid g of K points.

Single functions, each shaped like its input (the conv bases build them one at a time to save memory):

* `rbf`: the Gaussian exp(-((x - c) / h)^2) (FastKAN); `relu_bump`: (r relu(x - a) relu(b - x))^2 (ReLU-KAN);
  `WAVELETS[name]`: psi(z) and `WAVELET_SLOPES[name]`: d psi / dz (Wav-KAN); `bernstein`: C(n, j) s^j (1 - s)^(n-j).
* Three-term recurrences P_0 = 1, P_1 = s t + o, P_{n+1} = (a_n t + b_n) P_n - c_n P_{n-1}
  (`three_term_polynomials`) with the coefficients of Legendre, Chebyshev, Jacobi and Gram (whose c_n is
  learnable: beta_n = w_n * `gram_beta_scale(n)`); `legendre` stacks P_0 ... P_n. `powers`: t, t^2, ..., t^n.
"""
import math
from typing import Callable, Iterator, Optional, Tuple

import torch

__all__ = [
    'uniform_knots', 'knots_are_uniform', 'bspline_basis', 'bspline_basis_uniform', 'bspline_basis_auto',
    'rswaf_basis', 'rswaf_basis_derivative', 'rbf', 'relu_bump', 'WAVELETS', 'WAVELET_SLOPES',
    'three_term_polynomials', 'legendre_coeffs', 'chebyshev_coeffs', 'jacobi_first', 'jacobi_coeffs',
    'gram_beta_scale', 'legendre', 'bernstein_product', 'bernstein', 'powers',
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


def rbf(x: torch.Tensor, centre: float, h: float) -> torch.Tensor:
    """Gaussian radial function exp(-((x - centre) / h)^2) (FastKAN), shaped like x."""
    z = (x - centre) / h
    return torch.exp(-z * z)


def relu_bump(x: torch.Tensor, low, high, r: float) -> torch.Tensor:
    """ReLU-KAN's bump (r relu(x - a) relu(b - x))^2 on [a, b] (peak 1 for r = 4 / (b - a)^2), shaped like x."""
    bump = torch.relu(x - low) * torch.relu(high - x) * r
    return bump * bump


def _mexican_hat(z):
    return (2.0 / (math.sqrt(3.0) * math.pi ** 0.25)) * (1.0 - z * z) * torch.exp(-0.5 * z * z)


def _morlet(z):
    return torch.cos(5.0 * z) * torch.exp(-0.5 * z * z)


def _dog(z):  # derivative of a Gaussian
    return -z * torch.exp(-0.5 * z * z)


def _shannon(z):  # real Shannon wavelet, sinc(t) = sin(pi t) / (pi t)
    return 2.0 * torch.sinc(2.0 * z) - torch.sinc(z)


WAVELETS = {'mexican_hat': _mexican_hat, 'morlet': _morlet, 'dog': _dog, 'shannon': _shannon}
_MEXICAN_HAT_C = 2.0 / (math.sqrt(3.0) * math.pi ** 0.25)


def _gauss(z):
    return torch.mul(z, z).mul_(-0.5).exp_()


def _sinc_slope(t):
    """d sinc(t) / dt = (cos(pi t) - sinc(t)) / t, 0 at t = 0."""
    zero = t == 0
    safe = torch.where(zero, torch.ones_like(t), t)
    return torch.cos(math.pi * t).sub_(torch.sinc(t)).div_(safe).masked_fill_(zero, 0.0)


WAVELET_SLOPES = {  # d psi / dz, each in a new tensor
    'mexican_hat': lambda z: torch.mul(z, z).sub_(3.0).mul_(z).mul_(_gauss(z)).mul_(_MEXICAN_HAT_C),
    'morlet': lambda z: torch.sin(5.0 * z).mul_(5.0).addcmul_(z, torch.cos(5.0 * z)).mul_(_gauss(z)).neg_(),
    'dog': lambda z: torch.mul(z, z).sub_(1.0).mul_(_gauss(z)),
    'shannon': lambda z: _sinc_slope(2.0 * z).mul_(4.0).sub_(_sinc_slope(z)),
}

Coeffs = Tuple[float, float, float]


def three_term_polynomials(t: torch.Tensor, degree: int, coeffs: Callable[[int], Coeffs],
                           first: Tuple[float, float] = (1.0, 0.0)) -> Iterator[torch.Tensor]:
    """P_0(t) ... P_n(t), each shaped like t: P_0 = 1, P_1 = s t + o with (s, o) = first,
    P_{m+1} = (a_m t + b_m) P_m - c_m P_{m-1} with (a_m, b_m, c_m) = coeffs(m), m >= 1 (c_m may be a 0-d tensor)."""
    p_prev = torch.ones_like(t)
    yield p_prev
    if degree == 0:
        return
    s, o = first
    p = t * s + o
    yield p
    for m in range(1, degree):
        a, b, c = coeffs(m)
        p_prev, p = p, (t * a + b) * p - c * p_prev
        yield p


def legendre_coeffs(m: int) -> Coeffs:
    """Bonnet: (m + 1) P_{m+1} = (2m + 1) t P_m - m P_{m-1}."""
    return (2 * m + 1) / (m + 1), 0.0, m / (m + 1)


def chebyshev_coeffs(m: int) -> Coeffs:
    """T_{m+1} = 2 t T_m - T_{m-1}: cos(m arccos t) without the arccos (|t| rounding to 1 is harmless)."""
    return 2.0, 0.0, 1.0


def jacobi_first(alpha: float, beta: float) -> Tuple[float, float]:
    """P_1^(a,b) = (a + b + 2) / 2 t + (a - b) / 2."""
    return (alpha + beta + 2) / 2, (alpha - beta) / 2


def jacobi_coeffs(m: int, alpha: float, beta: float) -> Coeffs:
    """Jacobi P^(a,b), a, b > -1 (a = b = 0 gives Legendre), by the standard recurrence for degree k = m + 1:
    2k(k+a+b)(2k+a+b-2) P_k = (2k+a+b-1)[(2k+a+b)(2k+a+b-2) t + a^2 - b^2] P_{k-1} - 2(k+a-1)(k+b-1)(2k+a+b) P_{k-2}."""
    a, b, k = alpha, beta, m + 1
    ab = a + b
    den = 2 * k * (k + ab) * (2 * k + ab - 2)
    return ((2 * k + ab - 1) * (2 * k + ab) * (2 * k + ab - 2) / den,
            (2 * k + ab - 1) * (a * a - b * b) / den,
            2 * (k + a - 1) * (k + b - 1) * (2 * k + ab) / den)


def gram_beta_scale(m: int) -> float:
    """Gram (KAGN): P_{m+1} = t P_m - beta_m P_{m-1}, beta_m = w_m m^2 / (4 m^2 - 1); w = 1 gives monic Legendre."""
    return m * m / (4.0 * m * m - 1.0)


def legendre(t: torch.Tensor, degree: int) -> torch.Tensor:
    """Legendre polynomials P_0 ... P_n of t stacked last: t (...) -> (..., n + 1)."""
    return torch.stack(list(three_term_polynomials(t, degree, legendre_coeffs)), dim=-1)


def _int_pow(s: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    """s**n by products (None for n = 0): no pow, so no 0 * inf in the gradient at s = 0."""
    out = None
    for _ in range(n):
        out = s if out is None else out * s
    return out


def bernstein_product(s: torch.Tensor, j: int, degree: int) -> torch.Tensor:
    """s^j (1 - s)^(n - j) by products, shaped like s (ones for n = 0): the Bernstein polynomial without C(n, j)."""
    left, right = _int_pow(s, j), _int_pow(1.0 - s, degree - j)
    value = left if right is None else (right if left is None else left * right)
    return torch.ones_like(s) if value is None else value


def bernstein(s: torch.Tensor, j: int, degree: int) -> torch.Tensor:
    """Bernstein polynomial B_{j,n}(s) = C(n, j) s^j (1 - s)^(n - j), j = 0..n, shaped like s."""
    if degree == 0:  # B_0 = 1
        return torch.ones_like(s)
    return bernstein_product(s, j, degree) * float(math.comb(degree, j))


def powers(t: torch.Tensor, order: int) -> torch.Tensor:
    """Monomials t, t^2, ..., t^n stacked last: t (...) -> (..., n)."""
    out = [t]
    for _ in range(order - 1):
        out.append(out[-1] * t)
    return torch.stack(out, dim=-1)
