"""Univariate bases: closed form against the recursion, true derivatives, support."""
import pytest
import torch

from vision_kan.layers.basis import (
    bspline_basis, bspline_basis_uniform, knots_are_uniform, legendre, powers, rswaf_basis, rswaf_basis_derivative,
    uniform_knots,
)
from vision_kan.layers.conv_basis_poly import LegendreBasis


def _per_feature_uniform_knots(d: int, grid_size: int = 5) -> torch.Tensor:
    """Each feature its own equally spaced knots (different origin and spacing)."""
    knots = uniform_knots(d, grid_size, 3, dtype=torch.float64)
    scale = torch.linspace(0.5, 2.0, d, dtype=torch.float64)[:, None]
    shift = torch.linspace(-0.3, 0.4, d, dtype=torch.float64)[:, None]
    return knots * scale + shift


@pytest.mark.parametrize('grid_size', [1, 3, 5, 10])
def test_closed_form_matches_recursion(grid_size):
    knots = _per_feature_uniform_knots(4, grid_size)
    x = torch.linspace(-6, 6, 4001, dtype=torch.float64)[:, None].expand(-1, 4)  # inside and far outside
    ref = bspline_basis(x, knots, 3)
    fast = bspline_basis_uniform(x, knots)
    assert ref.shape == fast.shape == (4001, 4, grid_size + 3)
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=0)


def test_bspline_partition_of_unity_and_zero_outside():
    knots = uniform_knots(3, 5, 3, dtype=torch.float64)  # knots from -2.2 to 2.2, core [-1, 1]
    inside = torch.rand(1000, 3, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(bspline_basis_uniform(inside, knots).sum(-1), torch.ones(1000, 3, dtype=torch.float64))
    outside = torch.tensor([[-2.3, 2.21, 5.0]], dtype=torch.float64)
    assert bspline_basis_uniform(outside, knots).abs().max() == 0
    assert bspline_basis(outside, knots, 3).abs().max() == 0


@pytest.mark.parametrize('order', [0, 1, 2, 3, 4])
def test_recursion_partition_of_unity_any_order(order):
    knots = uniform_knots(2, 4, order, dtype=torch.float64)
    x = torch.rand(500, 2, dtype=torch.float64) * 2 - 1
    basis = bspline_basis(x, knots, order)
    assert basis.shape == (500, 2, 4 + order)
    torch.testing.assert_close(basis.sum(-1), torch.ones(500, 2, dtype=torch.float64))


def test_bspline_gradcheck():
    knots = _per_feature_uniform_knots(3)
    x = (torch.rand(7, 3, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: bspline_basis_uniform(t, knots), (x,))
    assert torch.autograd.gradcheck(lambda t: bspline_basis(t, knots, 3), (x,))


def test_knots_are_uniform():
    assert knots_are_uniform(_per_feature_uniform_knots(5))
    knots = uniform_knots(2, 5, 3)
    knots[1, 4] += 0.05
    assert not knots_are_uniform(knots)


def test_rswaf_true_derivative():
    grid = torch.linspace(-2, 2, 8, dtype=torch.float64)
    inv_h = 7 / 4
    x = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    basis = rswaf_basis(x, grid, inv_h)
    (grad,) = torch.autograd.grad(basis.sum(), x)
    torch.testing.assert_close(grad, rswaf_basis_derivative(x, grid, inv_h).sum(-1))
    # the derivative carries 1/h: finite differences agree
    eps = 1e-6
    fd = (rswaf_basis(x + eps, grid, inv_h) - rswaf_basis(x - eps, grid, inv_h)) / (2 * eps)
    torch.testing.assert_close(rswaf_basis_derivative(x, grid, inv_h), fd, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(lambda t: rswaf_basis(t, grid, inv_h), (x[:4].detach().requires_grad_(),))


def _bonnet_legendre(t: torch.Tensor, degree: int) -> torch.Tensor:
    """KAL-Net's former private copy: (j + 1) P_{j+1} = (2j + 1) t P_j - j P_{j-1}, divided last."""
    polys = [torch.ones_like(t), t][:degree + 1]
    for j in range(1, degree):
        polys.append(((2 * j + 1) * t * polys[j] - j * polys[j - 1]) / (j + 1))
    return torch.stack(polys, dim=-1)


@pytest.mark.parametrize('degree', [0, 1, 2, 5])
def test_shared_legendre_equals_the_two_it_replaced(degree):
    """The KALN layer's Bonnet form and the conv basis's lean in-place recurrence both agree with `legendre` to fp64
    rounding; in fp32 `legendre` is as accurate as the Bonnet form (measured: both 4 ulps of 1 off fp64 at degree 3,
    10-11 at degree 5)."""
    t = torch.tanh(torch.linspace(-4, 4, 801, dtype=torch.float64))
    shared = legendre(t, degree)
    assert shared.shape == (801, degree + 1)
    torch.testing.assert_close(shared, _bonnet_legendre(t, degree), atol=1e-14, rtol=0)
    x = torch.atanh(t.clamp(-1 + 1e-12, 1 - 1e-12)).view(1, 1, -1)
    lean = torch.empty(1, 1, degree + 1, 801, dtype=torch.float64)
    LegendreBasis(degree).expand(x, lean, [])
    torch.testing.assert_close(lean[0, 0].T, shared, atol=1e-14, rtol=0)
    errors = [(f(t.float(), degree).double() - shared).abs().max() / 2.0 ** -23 for f in (legendre, _bonnet_legendre)]
    assert errors[0] <= 1.25 * errors[1] + 1, errors  # ulps of 1 (|P_n| <= 1 on (-1, 1))


def test_powers_are_monomials():
    t = torch.linspace(-1, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(powers(t, 4), torch.stack([t ** k for k in range(1, 5)], -1), atol=1e-15, rtol=0)
