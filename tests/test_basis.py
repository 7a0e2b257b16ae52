"""Univariate bases: closed form against the recursion, true derivatives, support."""
import pytest
import torch

from vision_kan.layers.basis import (
    bspline_basis, bspline_basis_uniform, knots_are_uniform, rswaf_basis, rswaf_basis_derivative, uniform_knots,
)


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
