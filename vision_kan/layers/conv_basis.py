"""Univariate bases of the conv-KAN layers, evaluated per pixel and channel.

A basis maps an input x of shape (B, C, *S) to K functions phi_0(x) ... phi_{K-1}(x), each shaped like x. The
layer writes them into a (B, C, K, *S) buffer and mixes them with one convolution over C*K channels.

To keep memory low the layer never saves that buffer for backward: it saves x and asks the basis for the
vector-Jacobian product `vjp(x, grad)` = (sum_k grad_k * phi_k'(x), gradients of the basis parameters).
Bases build their functions one at a time, so the largest temporary is one (B, C, *S) tensor, never (.., K).
Every method takes the basis tensors (`tensors()`: parameters and buffers) as explicit arguments so the
autograd Function can hand back gradients for exactly the tensors it was given.

| basis            | input map  | functions (K)                                   | learnable        |
|------------------|------------|-------------------------------------------------|------------------|
| BSplineBasis     | x          | B-splines of order k on G intervals (G + k)     | -                |
| RBFBasis         | x          | exp(-((x - g_j) / h)^2) on a grid (num_grids)   | -                |
| LegendreBasis    | tanh(x)    | P_0 ... P_n (n + 1)                             | -                |
| ChebyshevBasis   | tanh(x)    | T_0 ... T_n by the recurrence, no acos (n + 1)  | -                |
| JacobiBasis      | tanh(x)    | P_0^(a,b) ... P_n^(a,b) (n + 1)                 | -                |
| GramBasis        | tanh(x)    | SiLU(P_j), P_{j+1} = t P_j - beta_j P_{j-1}     | beta             |
| BernsteinBasis   | sigmoid(x) | C(n,j) s^j (1 - s)^(n-j) (n + 1)                | -                |
| ReLUKANBasis     | x          | (r relu(x - a_j) relu(b_j - x))^2 (G + k)       | a_j, b_j per ch. |
| WaveletBasis     | x          | psi((x - tau_cj) / s_cj) (num_wavelets)         | tau, s per ch.   |

Every function is finite for every finite input in fp16/bf16/fp32: inputs are squashed (tanh, sigmoid) or
clamped where the function has already decayed to 0, so no inf reaches a product with 0.
"""
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .basis import bspline_basis, bspline_basis_uniform, uniform_knots

__all__ = [
    'ConvBasis', 'BSplineBasis', 'RBFBasis', 'LegendreBasis', 'ChebyshevBasis', 'JacobiBasis', 'GramBasis',
    'BernsteinBasis', 'ReLUKANBasis', 'WaveletBasis', 'WAVELETS',
]

Tensors = Sequence[torch.Tensor]
VJP = Tuple[torch.Tensor, List[Optional[torch.Tensor]]]


def _channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel column (C,) -> (1, C, 1, ...) broadcasting against x (B, C, *S)."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def _check_int(name: str, value, low: int, owner: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{owner}: {name} must be an integer >= {low}, got {value!r}')


def _check_range(grid_range, owner: str) -> Tuple[float, float]:
    if len(grid_range) != 2 or not float(grid_range[0]) < float(grid_range[1]):
        raise ValueError(f'{owner}: grid_range must be (low, high) with low < high, got {grid_range!r}')
    return float(grid_range[0]), float(grid_range[1])


class ConvBasis(nn.Module):
    """K univariate functions per input channel, with their vector-Jacobian product.

    Subclasses set `num_functions` and implement `function(x, k, tensors)` (independent functions) or
    `functions(x, tensors)` with `coupled = True` (functions sharing a recurrence). The default `vjp` runs autograd
    on a recomputation: one function at a time for independent bases, all together for coupled ones.
    """
    num_functions: int
    coupled: bool = False

    def tensors(self) -> Tuple[torch.Tensor, ...]:
        """The parameters and buffers the functions read, in the order the methods take them."""
        return ()

    def reset_parameters(self) -> None:
        """Re-initialise learnable basis parameters (none by default)."""

    def function(self, x: torch.Tensor, k: int, tensors: Tensors) -> torch.Tensor:
        raise NotImplementedError

    def functions(self, x: torch.Tensor, tensors: Tensors) -> Iterator[torch.Tensor]:
        """phi_0(x), ..., phi_{K-1}(x), each shaped like x, computed in x's dtype, one at a time."""
        for k in range(self.num_functions):
            yield self.function(x, k, tensors)

    def expand(self, x: torch.Tensor, out: torch.Tensor, tensors: Tensors) -> None:
        """Write phi_k(x) (B, C, *S) into out[:, :, k] of out (B, C, K, *S), casting to out's dtype."""
        for k, value in enumerate(self.functions(x, tensors)):
            out[:, :, k].copy_(value)

    def vjp(self, x: torch.Tensor, grad: torch.Tensor, tensors: Tensors, needs: Sequence[bool]) -> VJP:
        """grad (B, C, K, *S) -> (sum_k grad_k phi_k'(x) shaped like x, [d/d tensor_i or None if not needs[i]])."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            ts = [t.detach().requires_grad_(bool(n)) for t, n in zip(tensors, needs)]
            inputs = [xg] + [t for t in ts if t.requires_grad]
            if self.coupled:
                values = list(self.functions(xg, ts))
                pairs = [(v, grad[:, :, k].to(v.dtype)) for k, v in enumerate(values) if v.requires_grad]
                grads = _grad([v for v, _ in pairs], inputs, [g for _, g in pairs])
            else:
                grads = [None] * len(inputs)
                for k in range(self.num_functions):
                    value = self.function(xg, k, ts)
                    if value.requires_grad:
                        step = _grad([value], inputs, [grad[:, :, k].to(value.dtype)])
                        grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, step)]
        gx = grads[0] if grads[0] is not None else torch.zeros_like(x)
        rest = iter(grads[1:])
        return gx, [next(rest) if t.requires_grad else None for t in ts]


def _grad(outputs, inputs, grads) -> List[Optional[torch.Tensor]]:
    if not outputs:
        return [None] * len(inputs)
    return list(torch.autograd.grad(outputs, inputs, grads, allow_unused=True))


class BSplineBasis(ConvBasis):
    """B-splines of order k on G equal intervals of grid_range (efficient-KAN's basis): K = G + k functions.

    Reuses `vision_kan.layers.basis`: function j is the single B-spline on the knot slice t_j ... t_{j+k+1} (the
    closed form for cubics, the Cox-de Boor recursion otherwise). 0 outside [t_0, t_last).
    """

    def __init__(self, grid_size: int = 5, spline_order: int = 3, grid_range=(-1.0, 1.0), device=None, dtype=None):
        super().__init__()
        _check_int('grid_size', grid_size, 1, 'BSplineBasis')
        _check_int('spline_order', spline_order, 0, 'BSplineBasis')
        lo, hi = _check_range(grid_range, 'BSplineBasis')
        self.grid_size, self.spline_order, self.grid_range = grid_size, spline_order, (lo, hi)
        self.num_functions = grid_size + spline_order
        h = (hi - lo) / grid_size
        # every function is 0 beyond one knot step outside the extended grid: clamping there changes nothing
        # and keeps (x - t_0) / h finite for any finite x
        self._clamp = (lo - (spline_order + 1) * h, hi + (spline_order + 1) * h)

    def knots(self, x: torch.Tensor) -> torch.Tensor:
        """(1, G + 2k + 1) equally spaced knots in x's dtype (made from the Python floats: exact in fp64)."""
        return uniform_knots(1, self.grid_size, self.spline_order, self.grid_range, dtype=x.dtype, device=x.device)

    def function(self, x, k, tensors, knots: Optional[torch.Tensor] = None):
        knots = self.knots(x) if knots is None else knots
        xs = x.clamp(*self._clamp).unsqueeze(-1)  # (B, C, *S, 1): each element is one "feature"
        local = knots[:, k:k + self.spline_order + 2]  # (1, k + 2) knots of B_j alone
        if self.spline_order == 3:
            value = bspline_basis_uniform(xs, local)
        else:
            value = bspline_basis(xs, local, self.spline_order)
        return value.reshape(x.shape)  # (B, C, *S, 1, 1) -> (B, C, *S)

    def functions(self, x, tensors):
        knots = self.knots(x)
        for k in range(self.num_functions):
            yield self.function(x, k, tensors, knots)

    def extra_repr(self):
        return f'grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}'


class RBFBasis(ConvBasis):
    """Gaussian radial basis (FastKAN): phi_j(x) = exp(-((x - g_j) / h)^2), g a uniform grid, h its spacing."""

    def __init__(self, num_grids: int = 8, grid_range=(-2.0, 2.0), denominator: Optional[float] = None,
                 device=None, dtype=None):
        super().__init__()
        _check_int('num_grids', num_grids, 2, 'RBFBasis')
        lo, hi = _check_range(grid_range, 'RBFBasis')
        h = denominator if denominator is not None else (hi - lo) / (num_grids - 1)
        if not h > 0:
            raise ValueError(f'RBFBasis: denominator must be > 0, got {denominator!r}')
        self.num_functions, self.grid_range, self.denominator = num_grids, (lo, hi), float(h)
        self.centres = [lo + (hi - lo) * j / (num_grids - 1) for j in range(num_grids)]  # Python floats
        self._clamp = (lo - 11.0 * h, hi + 11.0 * h)  # exp(-11^2) underflows fp32: the clamp changes nothing

    def function(self, x, k, tensors):
        z = (x.clamp(*self._clamp) - self.centres[k]) / self.denominator
        return torch.exp(-z * z)

    def extra_repr(self):
        return f'num_grids={self.num_functions}, grid_range={self.grid_range}, denominator={self.denominator:.4g}'


class _ThreeTermBasis(ConvBasis):
    """Orthogonal polynomials of t = tanh(x) by a three-term recurrence, with an analytic, storage-free vjp.

    P_0 = 1, P_1 = s t + o, P_{n+1} = (a_n t + b_n) P_n - c_n P_{n-1}. The vjp carries P_n and P_n' forward, so its
    memory is a few (B, C, *S) tensors whatever the degree.
    """
    coupled = True

    def __init__(self, degree: int, owner: str):
        super().__init__()
        _check_int('degree', degree, 0, owner)
        self.degree = degree
        self.num_functions = degree + 1

    def first(self) -> Tuple[float, float]:
        """(s, o) of P_1 = s t + o."""
        return 1.0, 0.0

    def coeffs(self, n: int) -> Tuple[float, float, float]:
        """(a_n, b_n, c_n) of P_{n+1} = (a_n t + b_n) P_n - c_n P_{n-1}, n >= 1."""
        raise NotImplementedError

    def functions(self, x, tensors):
        t = torch.tanh(x)
        p_prev = torch.ones_like(t)
        yield p_prev
        if self.degree == 0:
            return
        s, o = self.first()
        p = t * s + o
        yield p
        for n in range(1, self.degree):
            a, b, c = self.coeffs(n)
            p_prev, p = p, (t * a + b) * p - c * p_prev
            yield p

    def vjp(self, x, grad, tensors, needs):
        if self.degree == 0:  # P_0 = 1 does not depend on x
            return torch.zeros_like(x), []
        t = torch.tanh(x)
        s, o = self.first()
        p_prev, p = torch.ones_like(t), t * s + o  # P_0, P_1
        d_prev, d = torch.zeros_like(t), torch.full_like(t, s)  # dP_0/dt, dP_1/dt
        acc = grad[:, :, 1].to(x.dtype) * s  # sum_n grad_n dP_n/dt
        for n in range(1, self.degree):
            a, b, c = self.coeffs(n)
            lin = t * a + b
            p_prev, p, d_prev, d = p, lin * p - c * p_prev, d, a * p + lin * d - c * d_prev
            acc += grad[:, :, n + 1].to(x.dtype) * d
        return acc * (1.0 - t * t), []  # chain rule through tanh

    def extra_repr(self):
        return f'degree={self.degree}'


class LegendreBasis(_ThreeTermBasis):
    """Legendre polynomials P_0 ... P_n of tanh(x) (KALN): (n + 1) P_{n+1} = (2n + 1) t P_n - n P_{n-1}."""

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__(degree, 'LegendreBasis')

    def coeffs(self, n):
        return (2 * n + 1) / (n + 1), 0.0, n / (n + 1)


class ChebyshevBasis(_ThreeTermBasis):
    """Chebyshev polynomials T_0 ... T_n of tanh(x) (KACN), by T_{n+1} = 2 t T_n - T_{n-1}.

    The recurrence equals cos(n arccos t) without the arccos, so |t| rounding to 1 in fp16 is harmless.
    """

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__(degree, 'ChebyshevBasis')

    def coeffs(self, n):
        return 2.0, 0.0, 1.0


class JacobiBasis(_ThreeTermBasis):
    """Jacobi polynomials P_0^(a,b) ... P_n^(a,b) of tanh(x) (KAJN), a, b > -1 (a = b = 0 gives Legendre)."""

    def __init__(self, degree: int = 3, alpha: float = 1.0, beta: float = 1.0, device=None, dtype=None):
        super().__init__(degree, 'JacobiBasis')
        if not (alpha > -1 and beta > -1):
            raise ValueError(f'JacobiBasis: alpha and beta must be > -1, got alpha={alpha!r}, beta={beta!r}')
        self.alpha, self.beta = float(alpha), float(beta)

    def first(self):
        a, b = self.alpha, self.beta
        return (a + b + 2) / 2, (a - b) / 2

    def coeffs(self, n):
        # standard recurrence for degree m = n + 1:
        # 2m(m+a+b)(2m+a+b-2) P_m = (2m+a+b-1)[(2m+a+b)(2m+a+b-2) t + a^2 - b^2] P_{m-1}
        #                           - 2(m+a-1)(m+b-1)(2m+a+b) P_{m-2}
        a, b, m = self.alpha, self.beta, n + 1
        ab = a + b
        den = 2 * m * (m + ab) * (2 * m + ab - 2)
        return ((2 * m + ab - 1) * (2 * m + ab) * (2 * m + ab - 2) / den,
                (2 * m + ab - 1) * (a * a - b * b) / den,
                2 * (m + a - 1) * (m + b - 1) * (2 * m + ab) / den)

    def extra_repr(self):
        return f'degree={self.degree}, alpha={self.alpha}, beta={self.beta}'


def _silu_grad(p: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(p)
    return sig * (1.0 + p * (1.0 - sig))


class GramBasis(ConvBasis):
    """SiLU of Gram polynomials of t = tanh(x) (KAGN), with a learnable recurrence.

    P_0 = 1, P_1 = t, P_{n+1} = t P_n - beta_n P_{n-1}, beta_n = w_n n^2 / (4 n^2 - 1); functions SiLU(P_n).
    w starts at 1, where P_n are the monic Legendre polynomials (orthogonal on [-1, 1]). The vjp walks the
    recurrence backwards (adjoint), storing the n + 1 values P_j of one (B, C, *S) size each.
    """
    coupled = True

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__()
        _check_int('degree', degree, 0, 'GramBasis')
        self.degree = degree
        self.num_functions = degree + 1
        self.beta_weights = nn.Parameter(torch.empty(max(degree - 1, 0), device=device, dtype=dtype))  # w_1..
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.beta_weights)

    def tensors(self):
        return (self.beta_weights,)

    def _betas(self, w: torch.Tensor, dtype) -> List[torch.Tensor]:
        return [w[n - 1].to(dtype) * (n * n / (4.0 * n * n - 1.0)) for n in range(1, self.degree)]

    def _polys(self, x: torch.Tensor, w: torch.Tensor) -> Iterator[torch.Tensor]:
        t = torch.tanh(x)
        p_prev = torch.ones_like(t)
        yield p_prev
        if self.degree == 0:
            return
        p = t
        yield p
        for beta in self._betas(w, x.dtype):
            p_prev, p = p, t * p - beta * p_prev
            yield p

    def functions(self, x, tensors):
        for p in self._polys(x, tensors[0]):
            yield F.silu(p)

    def vjp(self, x, grad, tensors, needs):
        (w,) = tensors
        polys = list(self._polys(x, w))  # P_0 .. P_n, each (B, C, *S)
        t, betas, n_max = polys[1] if self.degree else None, self._betas(w, x.dtype), self.degree
        if n_max == 0:
            return torch.zeros_like(x), [torch.zeros_like(w) if needs[0] else None]
        lam_next2 = lam_next = None  # adjoints of P_{n+2}, P_{n+1}
        gt = torch.zeros_like(x)
        gbeta = [None] * len(betas)
        for n in range(n_max, 0, -1):  # lambda_n = h_n + t lambda_{n+1} - beta_{n+1} lambda_{n+2}
            lam = grad[:, :, n].to(x.dtype) * _silu_grad(polys[n])
            if lam_next is not None:
                lam = lam + t * lam_next
            if lam_next2 is not None:
                lam = lam - betas[n] * lam_next2  # P_{n+2} = t P_{n+1} - beta_{n+1} P_n, betas[n] = beta_{n+1}
            # P_{n+1} = t P_n - beta_n P_{n-1} for n >= 1: dL/dt += lambda_{n+1} P_n, dL/dbeta_n -= lambda_{n+1} P_{n-1}
            if lam_next is not None:
                gt = gt + lam_next * polys[n]
                gbeta[n - 1] = -(lam_next * polys[n - 1]).sum()
            lam_next2, lam_next = lam_next, lam
        gt = gt + lam_next  # P_1 = t
        gw = None
        if needs[0]:
            gw = torch.stack([g * (n * n / (4.0 * n * n - 1.0)) for n, g in enumerate(gbeta, start=1)]) \
                if gbeta else torch.zeros_like(w)
            gw = gw.to(w.dtype)
        return gt * (1.0 - t * t), [gw]

    def extra_repr(self):
        return f'degree={self.degree}'


def _int_pow(s: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    """s**n by products (None for n = 0): no pow, so no 0 * inf in the gradient at s = 0."""
    out = None
    for _ in range(n):
        out = s if out is None else out * s
    return out


class BernsteinBasis(ConvBasis):
    """Bernstein polynomials of s = sigmoid(x) (KABN): B_j(s) = C(n, j) s^j (1 - s)^(n - j), j = 0..n.

    Non-negative and summing to 1 for every x (a partition of unity), so no function is constant.
    """

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__()
        _check_int('degree', degree, 0, 'BernsteinBasis')
        self.degree = degree
        self.num_functions = degree + 1

    def function(self, x, k, tensors):
        s = torch.sigmoid(x)
        left, right = _int_pow(s, k), _int_pow(1.0 - s, self.degree - k)
        value = left if right is None else (right if left is None else left * right)
        if value is None:  # degree 0: B_0 = 1
            return torch.ones_like(x)
        return value * float(math.comb(self.degree, k))

    def extra_repr(self):
        return f'degree={self.degree}'


class ReLUKANBasis(ConvBasis):
    """ReLU-KAN: phi_j(x) = (r relu(x - a_j) relu(b_j - x))^2, a bump on [a_j, b_j] with peak 1.

    a_j = lo + (j - k) h, b_j = a_j + (k + 1) h, h = (hi - lo) / G, j = 0..G+k-1, r = 4 / ((k + 1) h)^2; a and b are
    learnable per input channel when train_phases.
    """

    def __init__(self, in_channels: int, grid_size: int = 5, order: int = 3, grid_range=(-1.0, 1.0),
                 train_phases: bool = True, device=None, dtype=None):
        super().__init__()
        _check_int('in_channels', in_channels, 1, 'ReLUKANBasis')
        _check_int('grid_size', grid_size, 1, 'ReLUKANBasis')
        _check_int('order', order, 0, 'ReLUKANBasis')
        lo, hi = _check_range(grid_range, 'ReLUKANBasis')
        self.in_channels, self.grid_size, self.order, self.grid_range = in_channels, grid_size, order, (lo, hi)
        self.num_functions = grid_size + order
        h = (hi - lo) / grid_size
        self.r = 4.0 / ((order + 1) * h) ** 2
        dd = {'device': device, 'dtype': dtype}
        self.phase_low = nn.Parameter(torch.empty(in_channels, self.num_functions, **dd), requires_grad=train_phases)
        self.phase_high = nn.Parameter(torch.empty(in_channels, self.num_functions, **dd), requires_grad=train_phases)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        lo, hi = self.grid_range
        h = (hi - lo) / self.grid_size
        with torch.no_grad():
            j = torch.arange(self.num_functions, dtype=torch.float64)
            low = lo + (j - self.order) * h
            self.phase_low.copy_(low.expand(self.in_channels, -1))
            self.phase_high.copy_((low + (self.order + 1) * h).expand(self.in_channels, -1))

    def tensors(self):
        return (self.phase_low, self.phase_high)

    def function(self, x, k, tensors):
        low, high = tensors
        a, b = _channel(low[:, k].to(x.dtype), x), _channel(high[:, k].to(x.dtype), x)
        bump = torch.relu(x - a) * torch.relu(b - x) * self.r
        return bump * bump

    def extra_repr(self):
        return f'in_channels={self.in_channels}, grid_size={self.grid_size}, order={self.order}, ' \
               f'grid_range={self.grid_range}'


def _mexican_hat(z):
    return (2.0 / (math.sqrt(3.0) * math.pi ** 0.25)) * (1.0 - z * z) * torch.exp(-0.5 * z * z)


def _morlet(z):
    return torch.cos(5.0 * z) * torch.exp(-0.5 * z * z)


def _dog(z):  # derivative of a Gaussian
    return -z * torch.exp(-0.5 * z * z)


def _shannon(z):  # real Shannon wavelet, sinc(t) = sin(pi t) / (pi t)
    return 2.0 * torch.sinc(2.0 * z) - torch.sinc(z)


WAVELETS = {'mexican_hat': _mexican_hat, 'morlet': _morlet, 'dog': _dog, 'shannon': _shannon}


class WaveletBasis(ConvBasis):
    """Wavelets psi((x - tau_cj) / s_cj), num_wavelets per input channel with learnable translation and scale.

    WavKAN's conv layers evaluate one wavelet per (output, input) pair, a (B, Cout, Cin, *S) tensor; here each
    input channel has its own bank of wavelets, shared by the outputs, so the layer stays a conv over Cin * K
    channels. Scales are stored as log_scale (s = exp(log_scale) > 0). Translations start evenly spread over
    init_range, scales at 1.
    """

    def __init__(self, in_channels: int, wavelet_type: str = 'mexican_hat', num_wavelets: int = 4,
                 init_range=(-1.0, 1.0), device=None, dtype=None):
        super().__init__()
        _check_int('in_channels', in_channels, 1, 'WaveletBasis')
        _check_int('num_wavelets', num_wavelets, 1, 'WaveletBasis')
        if wavelet_type not in WAVELETS:
            raise ValueError(f'WaveletBasis: wavelet_type must be one of {sorted(WAVELETS)}, got {wavelet_type!r}')
        self.in_channels, self.wavelet_type, self.num_functions = in_channels, wavelet_type, num_wavelets
        self.init_range = _check_range(init_range, 'WaveletBasis')
        dd = {'device': device, 'dtype': dtype}
        self.translation = nn.Parameter(torch.empty(in_channels, num_wavelets, **dd))
        self.log_scale = nn.Parameter(torch.empty(in_channels, num_wavelets, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        lo, hi = self.init_range
        with torch.no_grad():
            centres = torch.linspace(lo, hi, self.num_functions) if self.num_functions > 1 else torch.zeros(1)
            self.translation.copy_(centres.expand(self.in_channels, -1))
            self.log_scale.zero_()

    def tensors(self):
        return (self.translation, self.log_scale)

    def function(self, x, k, tensors):
        translation, log_scale = tensors
        tau = _channel(translation[:, k].to(x.dtype), x)
        inv_s = _channel(torch.exp(-log_scale[:, k].to(x.dtype)), x)
        # the wavelets have decayed (Gaussian) or nearly (Shannon, ~1/z) long before |z| = 1e4; the clamp keeps
        # z * z and sin(pi z) finite for any finite x
        z = ((x - tau) * inv_s).clamp(-1e4, 1e4)
        return WAVELETS[self.wavelet_type](z)

    def extra_repr(self):
        return f'in_channels={self.in_channels}, wavelet_type={self.wavelet_type!r}, ' \
               f'num_wavelets={self.num_functions}'
