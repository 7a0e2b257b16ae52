"""Polynomial bases of the conv-KAN layers: Legendre, Chebyshev, Jacobi, Gram (KAGN) and Bernstein.

See `conv_basis` for the interface. Each has an analytic vjp: the fixed three-term recurrences carry P_n and
dP_n/dt forward (a few temporaries whatever the degree), Gram walks its learnable recurrence backwards, Bernstein
uses B_j' = n (B_{j-1,n-1} - B_{j,n-1}). The polynomials and their recurrence coefficients are defined once in
`basis`; the classes add the lean forms.
"""
import math
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .basis import (
    bernstein, bernstein_product, chebyshev_coeffs, gram_beta_scale, jacobi_coeffs, jacobi_first, legendre_coeffs,
    three_term_polynomials,
)
from .conv_basis import ConvBasis, _check_int

__all__ = ['LegendreBasis', 'ChebyshevBasis', 'JacobiBasis', 'GramBasis', 'BernsteinBasis', 'silu_grad']


class _ThreeTermBasis(ConvBasis):
    """Orthogonal polynomials of t = tanh(x) by a three-term recurrence, with an analytic, storage-free vjp.

    P_0 = 1, P_1 = s t + o, P_{n+1} = (a_n t + b_n) P_n - c_n P_{n-1}. `functions` is the plain (autograd-able)
    recurrence; `expand` and `vjp` are its lean forms: in-place updates, at most 4 (expand) or 7 (vjp) live
    temporaries of the input's size whatever the degree. The vjp carries P_n and dP_n/dt forward.
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
        return three_term_polynomials(torch.tanh(x), self.degree, self.coeffs, self.first())

    @staticmethod
    def _step(t: torch.Tensor, p: torch.Tensor, p_prev, a: float, b: float, c: float) -> torch.Tensor:
        """(a t + b) p - c p_prev into a new tensor; p_prev is a tensor or the float value of P_0."""
        out = torch.mul(t, p).mul_(a)
        if b:
            out.add_(p, alpha=b)
        return out.sub_(p_prev, alpha=c) if torch.is_tensor(p_prev) else out.sub_(c * p_prev)

    def expand(self, x, out, tensors):
        out[:, :, 0].fill_(1.0)
        if self.degree == 0:
            return
        t = torch.tanh(x)
        s, o = self.first()
        p_prev, p = 1.0, t * s + o
        out[:, :, 1].copy_(p)
        for n in range(1, self.degree):
            p_prev, p = p, self._step(t, p, p_prev, *self.coeffs(n))
            out[:, :, n + 1].copy_(p)

    def vjp(self, x, grad, tensors, needs):
        if self.degree == 0:  # P_0 = 1 does not depend on x
            return torch.zeros_like(x), []
        t = torch.tanh(x)
        s, o = self.first()
        p_prev, p = 1.0, t * s + o  # P_0, P_1
        d_prev, d = 0.0, s  # dP_0/dt, dP_1/dt (floats while constant)
        acc = grad[:, :, 1].to(x.dtype, copy=True).mul_(s)  # sum_n grad_n dP_n/dt
        for n in range(1, self.degree):
            a, b, c = self.coeffs(n)
            # dP_{n+1}/dt = a P_n + (a t + b) dP_n/dt - c dP_{n-1}/dt
            if torch.is_tensor(d):
                d_new = self._step(t, d, d_prev, a, b, c).add_(p, alpha=a)
            else:
                d_new = torch.mul(t, a * d).add_(p, alpha=a).add_(b * d - c * d_prev)
            d_prev = None
            p_prev, p = p, self._step(t, p, p_prev, a, b, c)
            acc.addcmul_(grad[:, :, n + 1], d_new)
            d_prev, d = d, d_new
        return acc.mul_(t.mul_(t).neg_().add_(1.0)), []  # chain rule through tanh: * (1 - t^2)

    def extra_repr(self):
        return f'degree={self.degree}'


class LegendreBasis(_ThreeTermBasis):
    """Legendre polynomials P_0 ... P_n of tanh(x) (KALN): (n + 1) P_{n+1} = (2n + 1) t P_n - n P_{n-1}."""

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__(degree, 'LegendreBasis')

    def coeffs(self, n):
        return legendre_coeffs(n)


class ChebyshevBasis(_ThreeTermBasis):
    """Chebyshev polynomials T_0 ... T_n of tanh(x) (KACN), by T_{n+1} = 2 t T_n - T_{n-1}.

    The recurrence equals cos(n arccos t) without the arccos, so |t| rounding to 1 in fp16 is harmless.
    """

    def __init__(self, degree: int = 3, device=None, dtype=None):
        super().__init__(degree, 'ChebyshevBasis')

    def coeffs(self, n):
        return chebyshev_coeffs(n)


class JacobiBasis(_ThreeTermBasis):
    """Jacobi polynomials P_0^(a,b) ... P_n^(a,b) of tanh(x) (KAJN), a, b > -1 (a = b = 0 gives Legendre)."""

    def __init__(self, degree: int = 3, alpha: float = 1.0, beta: float = 1.0, device=None, dtype=None):
        super().__init__(degree, 'JacobiBasis')
        if not (alpha > -1 and beta > -1):
            raise ValueError(f'JacobiBasis: alpha and beta must be > -1, got alpha={alpha!r}, beta={beta!r}')
        self.alpha, self.beta = float(alpha), float(beta)

    def first(self):
        return jacobi_first(self.alpha, self.beta)

    def coeffs(self, n):
        return jacobi_coeffs(n, self.alpha, self.beta)

    def extra_repr(self):
        return f'degree={self.degree}, alpha={self.alpha}, beta={self.beta}'


def silu_grad(p: torch.Tensor) -> torch.Tensor:
    """d SiLU(p) / dp = sigma(p) (1 + p (1 - sigma(p))), in a new tensor."""
    sig = torch.sigmoid(p)
    return torch.sub(1.0, sig).mul_(p).add_(1.0).mul_(sig)


class GramBasis(ConvBasis):
    """SiLU of Gram polynomials of t = tanh(x) (KAGN), with a learnable recurrence.

    P_0 = 1, P_1 = t, P_{n+1} = t P_n - beta_n P_{n-1}, beta_n = w_n n^2 / (4 n^2 - 1); functions SiLU(P_n).
    w starts at 1, where P_n are the monic Legendre polynomials (orthogonal on [-1, 1]). The vjp walks the
    recurrence backwards (adjoint), keeping the n values P_1..P_n, each of the input's size.
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
        """[beta_1, ..., beta_{n-1}] as 0-d tensors."""
        return [w[n - 1].to(dtype) * gram_beta_scale(n) for n in range(1, self.degree)]

    def functions(self, x, tensors):
        betas = self._betas(tensors[0], x.dtype)  # P_{n+1} = (1 t + 0) P_n - beta_n P_{n-1}
        for p in three_term_polynomials(torch.tanh(x), self.degree, lambda n: (1.0, 0.0, betas[n - 1])):
            yield F.silu(p)

    def _polys(self, t: torch.Tensor, betas) -> List:
        """[1.0, P_1 = t, P_2, ..., P_n] without autograd-unsafe reuse: each P_j is a new tensor."""
        polys = [1.0, t]
        for n, beta in enumerate(betas, start=1):
            new = torch.mul(t, polys[n])
            prev = polys[n - 1]
            polys.append(new.sub_(beta) if not torch.is_tensor(prev) else new.addcmul_(prev, beta, value=-1.0))
        return polys[:self.degree + 1]

    def expand(self, x, out, tensors):
        out[:, :, 0].fill_(1.0 / (1.0 + math.exp(-1.0)))  # SiLU(P_0) = SiLU(1)
        if self.degree == 0:
            return
        t = torch.tanh(x)
        p_prev, p = 1.0, t
        out[:, :, 1].copy_(F.silu(t))
        for n, beta in enumerate(self._betas(tensors[0], x.dtype), start=2):
            new = torch.mul(t, p)
            p_prev, p = p, (new.sub_(beta) if not torch.is_tensor(p_prev) else new.addcmul_(p_prev, beta, value=-1.0))
            out[:, :, n].copy_(F.silu(p))

    def vjp(self, x, grad, tensors, needs):
        (w,) = tensors
        if self.degree == 0:
            return torch.zeros_like(x), [torch.zeros_like(w) if needs[0] else None]
        t = torch.tanh(x)
        betas = self._betas(w, x.dtype)
        polys = self._polys(t, betas)  # [1.0, P_1, ..., P_n]
        gbeta = [None] * len(betas)
        lam_next2 = lam_next = gt = None  # adjoints of P_{n+2}, P_{n+1}; dL/dt
        for n in range(self.degree, 0, -1):
            # lambda_n = grad_n SiLU'(P_n) + t lambda_{n+1} - beta_{n+1} lambda_{n+2}   (betas[n] = beta_{n+1})
            lam = silu_grad(polys[n]).mul_(grad[:, :, n])
            if lam_next is not None:
                lam.addcmul_(t, lam_next)
                # P_{n+1} = t P_n - beta_n P_{n-1}: dL/dt += lambda_{n+1} P_n, dL/dbeta_n = -<lambda_{n+1}, P_{n-1}>
                gt = torch.mul(lam_next, polys[n]) if gt is None else gt.addcmul_(lam_next, polys[n])
                prev = polys[n - 1]
                gbeta[n - 1] = -(lam_next.sum() if not torch.is_tensor(prev) else
                                 torch.dot(lam_next.reshape(-1), prev.reshape(-1)))
            if lam_next2 is not None:
                lam.addcmul_(lam_next2, betas[n], value=-1.0)
            lam_next2, lam_next = lam_next, lam
        gt = lam_next if gt is None else gt.add_(lam_next)  # P_1 = t
        gw = None
        if needs[0]:
            gw = torch.stack([g * gram_beta_scale(n) for n, g in enumerate(gbeta, start=1)]).to(w.dtype) \
                if gbeta else torch.zeros_like(w)
        return gt.mul_(t.mul(t).neg_().add_(1.0)), [gw]  # chain rule through tanh: * (1 - t^2)

    def extra_repr(self):
        return f'degree={self.degree}'


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
        return bernstein(torch.sigmoid(x), k, self.degree)

    def vjp(self, x, grad, tensors, needs):
        """Analytic: sum_j g_j B_j' = n s (1 - s) sum_i B_{i,n-1}(s) (g_{i+1} - g_i), s' = s (1 - s)."""
        n = self.degree
        acc = torch.zeros_like(x)
        if n == 0:
            return acc, []
        s = torch.sigmoid(x)
        for i in range(n):
            lower = bernstein_product(s, i, n - 1)  # B_{i,n-1} / C(n-1, i)
            acc.addcmul_(grad[:, :, i + 1], lower, value=float(math.comb(n - 1, i)))
            acc.addcmul_(grad[:, :, i], lower, value=-float(math.comb(n - 1, i)))
        return acc.mul_(torch.sub(1.0, s).mul_(s).mul_(float(n))), []

    def extra_repr(self):
        return f'degree={self.degree}'
