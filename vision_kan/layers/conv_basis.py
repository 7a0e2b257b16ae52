"""Univariate bases of the conv-KAN layers, evaluated per pixel and channel.

A basis maps an input x of shape (B, C, *S) to K functions phi_0(x) ... phi_{K-1}(x), each shaped like x. The
layer writes them into a (B, C, K, *S) buffer and mixes them with one convolution over C*K channels.

To keep memory low the layer never saves that buffer for backward: it saves x and asks the basis for the
vector-Jacobian product `vjp(x, grad)` = (sum_k grad_k * phi_k'(x), gradients of the basis parameters).
Bases build their functions one at a time, so their temporaries are a few tensors of x's size, never (.., K).
Every method takes the basis tensors (`tensors()`: parameters and buffers) as explicit arguments so the
autograd Function can hand back gradients for exactly the tensors it was given.

Grid bases live here, polynomial ones (Legendre ... Bernstein) in `conv_basis_poly`. The functions themselves
(closed forms, recurrences, wavelets) are defined once in `basis`, shared with the linear layers.

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
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .basis import (
    WAVELET_SLOPES, WAVELETS, bspline_basis, bspline_basis_uniform, rbf, relu_bump, uniform_knots,
)

__all__ = ['ConvBasis', 'BSplineBasis', 'RBFBasis', 'ReLUKANBasis', 'WaveletBasis', 'WAVELETS', 'WAVELET_SLOPES']

Tensors = Sequence[torch.Tensor]
VJP = Tuple[torch.Tensor, List[Optional[torch.Tensor]]]


def _channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel column (C,) -> (1, C, 1, ...) broadcasting against x (B, C, *S)."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def _sum_but_channels(t: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (C,): the gradient of a per-channel parameter."""
    return t.sum(dim=[d for d in range(t.dim()) if d != 1])


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

    def vjp(self, x, grad, tensors, needs):
        """Analytic: B_j' = (B_{j,k-1} - B_{j+1,k-1}) / h on knots h apart; for cubics the closed form of N'."""
        order, h = self.spline_order, (self.grid_range[1] - self.grid_range[0]) / self.grid_size
        acc = torch.zeros_like(x)
        if order == 0:  # piecewise constant
            return acc, []
        xc = x.clamp(*self._clamp)
        if order == 3:
            # B_j(x) = N(r), r = |u - j - 2|, u = (x - t_0) / h; dN/dr = -2r + 1.5r^2 (r < 1), -(2 - r)^2 / 2 (r < 2)
            u = (xc - (self.grid_range[0] - 3 * h)) / h
            for j in range(self.num_functions):
                v = u - (j + 2.0)
                r = v.abs()
                inner = torch.mul(r, 1.5).sub_(2.0).mul_(r)
                outer = torch.sub(2.0, r).clamp_(min=0.0).square_().mul_(-0.5)
                slope = torch.where(r < 1.0, inner, outer).mul_(torch.sign(v))
                acc.addcmul_(grad[:, :, j], slope)
            return acc.mul_(1.0 / h), []
        xs = xc.unsqueeze(-1)
        knots = self.knots(x)
        for i in range(self.num_functions + 1):  # sum_j g_j B_j' = sum_i B_{i,k-1} (g_i - g_{i-1}) / h
            lower = bspline_basis(xs, knots[:, i:i + order + 1], order - 1).reshape(x.shape)
            if i < self.num_functions:
                acc.addcmul_(grad[:, :, i], lower)
            if i > 0:
                acc.addcmul_(grad[:, :, i - 1], lower, value=-1.0)
        return acc.mul_(1.0 / h), []

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
        return rbf(x.clamp(*self._clamp), self.centres[k], self.denominator)

    def vjp(self, x, grad, tensors, needs):
        """Analytic: phi_j' = -2 z_j exp(-z_j^2) / h (beyond the clamp both are 0 to fp32 precision)."""
        xc = x.clamp(*self._clamp)
        acc = torch.zeros_like(x)
        for j, centre in enumerate(self.centres):
            z = torch.sub(xc, centre).div_(self.denominator)
            acc.addcmul_(grad[:, :, j], torch.mul(z, z).neg_().exp_().mul_(z))
        return acc.mul_(-2.0 / self.denominator), []

    def extra_repr(self):
        return f'num_grids={self.num_functions}, grid_range={self.grid_range}, denominator={self.denominator:.4g}'


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
        return relu_bump(x, _channel(low[:, k].to(x.dtype), x), _channel(high[:, k].to(x.dtype), x), self.r)

    def vjp(self, x, grad, tensors, needs):
        """Analytic, with u = relu(x - a), v = relu(b - x): phi = r^2 u^2 v^2, so d/dx = 2 r^2 u v (v - u),
        d/da = -2 r^2 u v^2, d/db = 2 r^2 u^2 v (all 0 off the bump)."""
        low, high = tensors
        acc = torch.zeros_like(x)
        g_low = torch.zeros(low.shape, dtype=x.dtype, device=x.device) if needs[0] else None
        g_high = torch.zeros(high.shape, dtype=x.dtype, device=x.device) if needs[1] else None
        for k in range(self.num_functions):
            u = torch.sub(x, _channel(low[:, k].to(x.dtype), x)).relu_()
            v = torch.sub(_channel(high[:, k].to(x.dtype), x), x).relu_()
            w = torch.mul(u, v).mul_(grad[:, :, k])  # grad_k u v
            acc.addcmul_(w, torch.sub(v, u))
            if g_low is not None:
                g_low[:, k] = -_sum_but_channels(w * v)
            if g_high is not None:
                g_high[:, k] = _sum_but_channels(w * u)
        scale = 2.0 * self.r * self.r
        return acc.mul_(scale), [None if g is None else (g * scale).to(t.dtype)
                                 for g, t in ((g_low, low), (g_high, high))]

    def extra_repr(self):
        return f'in_channels={self.in_channels}, grid_size={self.grid_size}, order={self.order}, ' \
               f'grid_range={self.grid_range}'


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

    def vjp(self, x, grad, tensors, needs):
        """Analytic, z = (x - tau) / s: d/dx = psi'(z) / s, d/dtau = -psi'(z) / s, d/dlog_scale = -psi'(z) z."""
        translation, log_scale = tensors
        acc = torch.zeros_like(x)
        g_tau = torch.zeros(translation.shape, dtype=x.dtype, device=x.device) if needs[0] else None
        g_log = torch.zeros(log_scale.shape, dtype=x.dtype, device=x.device) if needs[1] else None
        slope = WAVELET_SLOPES[self.wavelet_type]
        for k in range(self.num_functions):
            inv_s = torch.exp(-log_scale[:, k].to(x.dtype))  # (C,)
            raw = torch.sub(x, _channel(translation[:, k].to(x.dtype), x)).mul_(_channel(inv_s, x))
            z = raw.clamp(-1e4, 1e4)
            w = slope(z).mul_(grad[:, :, k]).masked_fill_(raw != z, 0.0)  # grad_k psi'(z), 0 where clamped
            acc.addcmul_(w, _channel(inv_s, x))
            if g_tau is not None:
                g_tau[:, k] = -_sum_but_channels(w) * inv_s
            if g_log is not None:
                g_log[:, k] = -_sum_but_channels(w.mul_(z))
        return acc, [None if g is None else g.to(t.dtype) for g, t in ((g_tau, translation), (g_log, log_scale))]

    def extra_repr(self):
        return f'in_channels={self.in_channels}, wavelet_type={self.wavelet_type!r}, ' \
               f'num_wavelets={self.num_functions}'
