"""KANLinear, FasterKANLinear and KANMlp: gradients, grid updates, bad input, and the published layers' bugs."""
import math

import pytest
import torch
import torch.nn as nn

from vision_kan.layers import FasterKANLinear, KANLinear, KANMlp, spline_regularization
from vision_kan.layers.kan_linear import _least_squares


def _kan(d=6, d_out=4, **kwargs) -> KANLinear:
    torch.manual_seed(0)
    return KANLinear(d, d_out, **kwargs).double()


def _rel_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_kan_linear_gradcheck_uniform_and_updated_grid():
    layer = _kan(3, 2, bias=True)
    x = (torch.rand(5, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert layer.grid_uniform
    assert torch.autograd.gradcheck(layer, (x,))
    layer.update_grid(torch.rand(200, 3, dtype=torch.float64) * 2 - 1)
    assert not layer.grid_uniform  # data quantiles: the recursion path
    assert torch.autograd.gradcheck(layer, (x,))
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(
        layer, dict(zip([n for n, _ in layer.named_parameters()], ps)), (x.detach(),)), tuple(
        p.detach().requires_grad_() for p in params))


def test_fasterkan_gradcheck():
    torch.manual_seed(0)
    layer = FasterKANLinear(3, 2, bias=True).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_kan_linear_matches_efficient_kan_formula():
    """y = W_b SiLU(x) + sum_ik (W_s * scaler)_{oik} B_ik(x), written out directly."""
    layer = _kan(3, 2)
    x = torch.rand(9, 3, dtype=torch.float64) * 2 - 1
    from vision_kan.layers.basis import bspline_basis
    basis = bspline_basis(x, layer.grid, 3)  # (9, 3, 8)
    expected = nn.functional.silu(x) @ layer.base_weight.T + torch.einsum(
        'mik,oik->mo', basis, layer.spline_weight * layer.spline_scaler[..., None])
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize('layer_cls', [KANLinear, FasterKANLinear])
def test_any_leading_dims(layer_cls):
    layer = layer_cls(8, 5)
    x = torch.randn(2, 7, 8)
    y = layer(x)
    assert y.shape == (2, 7, 5)
    torch.testing.assert_close(y[1, 3], layer(x[1, 3]))
    assert layer(torch.randn(3, 2, 4, 8)).shape == (3, 2, 4, 5)


@pytest.mark.parametrize('layer_cls', [KANLinear, FasterKANLinear])
def test_wrong_last_dim_is_a_clear_error(layer_cls):
    layer = layer_cls(8, 5)
    with pytest.raises(ValueError, match='in_features=8'):
        layer(torch.randn(2, 7, 16))  # same numel as (2, 14, 8): must not be silently reshaped


def test_bad_arguments():
    with pytest.raises(ValueError, match='grid_size'):
        KANLinear(4, 4, grid_size=0)
    with pytest.raises(ValueError, match='spline_order'):
        KANLinear(4, 4, spline_order=-1)
    with pytest.raises(ValueError, match='grid_range'):
        KANLinear(4, 4, grid_range=(1.0, -1.0))
    with pytest.raises(ValueError, match='num_grids'):
        FasterKANLinear(4, 4, num_grids=1)
    with pytest.raises(ValueError, match="kan_type must be one of \\['fasterkan', 'grkan', 'kan'\\], got 'nope'"):
        KANMlp(4, 4, kan_type='nope')


# measured (float64, this seed): 1.33e-5 uniform (the README's 0.0015 %), 1.05e-4 gaussian; bounds ~1.5x that
UPDATE_GRID_BOUND = {'uniform': 2e-5, 'gaussian': 1.5e-4}


@pytest.mark.parametrize('data', ['uniform', 'gaussian'])
def test_update_grid_keeps_the_function(data):
    layer = _kan(16, 8)
    with torch.no_grad():
        layer.spline_scaler.mul_(3.0)  # a scaler far from 1: the published refit scales twice and breaks here
        # a smooth spline that matters next to the base branch: coefficients vary smoothly along the knots
        k = torch.arange(layer.num_basis, dtype=torch.float64)
        amp, freq, phase = torch.rand(3, 8, 16, 1, dtype=torch.float64)
        layer.spline_weight.copy_((0.3 + amp) * torch.sin(0.2 + 0.6 * freq * k + 6 * phase))
    torch.manual_seed(1)
    x = torch.rand(4000, 16, dtype=torch.float64) * 2 - 1 if data == 'uniform' else \
        (0.35 * torch.randn(4000, 16, dtype=torch.float64)).clamp(-0.99, 0.99)
    before = layer(x)
    layer.update_grid(x)
    assert _rel_change(layer(x), before) < UPDATE_GRID_BOUND[data]
    # the spline branch alone is refitted, not replaced by base-only output
    spline_norm = (before - nn.functional.silu(x) @ layer.base_weight.T).norm() / before.norm()
    assert spline_norm > 0.3


def test_update_grid_rank_deficient_data():
    """Constant features, duplicated rows and fewer samples than basis functions: finite, function kept."""
    layer = _kan(6, 3)
    x = torch.rand(3, 6, dtype=torch.float64) * 2 - 1
    x = x.repeat(50, 1)  # 150 rows, 3 distinct
    x[:, 0] = 0.25  # one constant feature
    before = layer(x)
    layer.update_grid(x)
    assert all(torch.isfinite(t).all() for t in (layer.grid, layer.spline_weight, layer.spline_scaler))
    assert _rel_change(layer(x), before) < 1e-6
    assert (layer.grid.diff(dim=-1) > 0).all()  # knots stay strictly increasing


def test_least_squares_matches_lstsq_on_full_rank():
    a = torch.randn(3, 40, 8, dtype=torch.float64)
    b = torch.randn(3, 40, 5, dtype=torch.float64)
    torch.testing.assert_close(_least_squares(a, b), torch.linalg.lstsq(a, b).solution, atol=1e-7, rtol=1e-6)


def test_update_grid_to_a_given_grid():
    """An EMA copy adopts the live layer's knots and refits its own coefficients."""
    live, ema = _kan(5, 3), _kan(5, 3)
    with torch.no_grad():
        ema.spline_weight.mul_(0.5)
    x = torch.rand(2000, 5, dtype=torch.float64) * 2 - 1
    live.update_grid(x)
    before = ema(x)
    ema.update_grid(x, grid=live.grid)
    assert torch.equal(ema.grid, live.grid)
    assert _rel_change(ema(x), before) < 1e-2
    with pytest.raises(ValueError, match='grid must have shape'):
        ema.update_grid(x, grid=live.grid[:, :-1])


def test_grid_is_a_buffer_carried_by_state_dict():
    layer = _kan(4, 2)
    x = torch.rand(500, 4, dtype=torch.float64) * 2 - 1
    layer.update_grid(x)
    state = layer.state_dict()
    assert 'grid' in state
    fresh = KANLinear(4, 2).double()
    assert fresh.grid_uniform
    fresh.load_state_dict(state)
    assert not fresh.grid_uniform  # re-derived from the loaded knots
    torch.testing.assert_close(fresh(x), layer(x))
    assert layer.float().grid.dtype == torch.float32


def test_regularization_no_nan_on_zero_weight():
    w = torch.zeros(3, 4, 8, requires_grad=True)
    loss = spline_regularization(w)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.isfinite(w.grad).all()
    layer = KANLinear(4, 3)
    with torch.no_grad():
        layer.spline_weight.zero_()
    loss = layer.regularization_loss()
    loss.backward()
    assert torch.isfinite(layer.spline_weight.grad).all()


def test_regularization_value():
    """L1 of mean |w| per edge plus entropy of their distribution."""
    w = torch.tensor([[[1.0, -1.0], [0.0, 2.0]]])  # two edges: mean |w| = 1 and 1
    torch.testing.assert_close(spline_regularization(w, 1.0, 0.0), torch.tensor(2.0))
    torch.testing.assert_close(spline_regularization(w, 0.0, 1.0), torch.tensor(math.log(2.0)))


def test_fasterkan_applies_one_over_h_and_symmetric_grid():
    torch.manual_seed(0)
    layer = FasterKANLinear(4, 3).double()
    assert layer.grid[0] == -layer.grid[-1]
    h = (layer.grid[1] - layer.grid[0]).item()
    x = torch.randn(6, 4, dtype=torch.float64)
    xn = nn.functional.layer_norm(x, (4,), layer.norm.weight, layer.norm.bias)
    phi = 1 - torch.tanh((xn[..., None] - layer.grid) / h) ** 2
    torch.testing.assert_close(layer(x), phi.flatten(1) @ layer.weight.T)


def test_kan_mlp_uses_hidden_size_and_timm_signature():
    mlp = KANMlp(in_features=8, hidden_features=24, out_features=6, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 bias=(True, False), drop=0.0, device='cpu', dtype=torch.float32, kan_type='fasterkan')
    assert mlp.fc1.out_features == 24 and mlp.fc2.in_features == 24 and mlp.fc2.out_features == 6
    assert mlp.fc1.bias is not None and mlp.fc2.bias is None
    assert mlp(torch.randn(2, 5, 8)).shape == (2, 5, 6)
    with pytest.raises(ValueError, match='use_conv'):
        KANMlp(8, use_conv=True)


def test_uniform_grid_update_keeps_the_closed_form():
    """grid_eps=1 places the knots uniformly over the data span: the closed form (and fused kernels) still apply."""
    layer = _kan(6, 4)
    x = torch.rand(3000, 6, dtype=torch.float64) * 3 - 1.2
    before = layer(x)
    layer.update_grid(x, grid_eps=1.0)
    assert layer.grid_uniform and layer.grid_eps == 0.02  # the layer's own setting is unchanged
    assert _rel_change(layer(x), before) < 1e-2
    lo, hi = x.min(0).values, x.max(0).values
    torch.testing.assert_close(layer.grid[:, 3], lo - 0.01)  # knot k sits at the data minimum - margin
    torch.testing.assert_close(layer.grid[:, -4], hi + 0.01)
    with pytest.raises(ValueError, match='grid_eps must be in'):
        layer.update_grid(x, grid_eps=1.5)


def test_grid_params_cached_until_the_knots_change():
    """The kernels' view of the grid, (2, d) [first knot; 1 / spacing], is built once and rebuilt after the knots
    move (update_grid, load_state_dict)."""
    layer = KANLinear(5, 3)
    first = layer.grid_params()
    assert layer.grid_params() is first  # cached
    torch.testing.assert_close(first[0], layer.grid[:, 0])
    torch.testing.assert_close(first[1], 1.0 / (layer.grid[:, 1] - layer.grid[:, 0]))
    layer.update_grid(torch.rand(100, 5) * 4 - 2, grid_eps=1.0)  # uniform knots on the data span
    moved = layer.grid_params()
    assert moved is not first
    torch.testing.assert_close(moved[1], 1.0 / (layer.grid[:, 1] - layer.grid[:, 0]))
    other = KANLinear(5, 3, grid_range=(-3.0, 3.0))
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer.grid_params(), other.grid_params())


def test_faster_kan_recompute_form_equals_reference_and_saves_only_the_normalised_input():
    """FasterKANLinear.recompute_forward (the basis under torch.utils.checkpoint) gives the reference path's output
    and gradients, and keeps for the backward a fraction of what the reference keeps (no (M, d K) basis)."""
    torch.manual_seed(0)
    layer = FasterKANLinear(16, 12, num_grids=8, bias=True).double()
    x = torch.randn(4, 32, 16, dtype=torch.float64)
    saved = {}

    def run(fn, name):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = fn(xi)
        saved[name] = sum(sizes)
        y.pow(2).sum().backward()
        return y.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]

    ref = run(layer, 'reference')
    rec = run(layer.recompute_forward, 'recompute')
    assert torch.allclose(ref[0], rec[0], rtol=0, atol=1e-12) and torch.allclose(ref[1], rec[1], atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ref[2], rec[2]))
    basis_bytes = 4 * 32 * 16 * 8 * 8  # (M, d K) float64
    assert saved['reference'] >= basis_bytes and saved['recompute'] < saved['reference'] / 3, saved


def test_faster_kan_takes_the_recompute_form_only_when_compiled_auto_asks(monkeypatch):
    """Where the kernels would run (fused_path True), 'auto' under torch.compile takes recompute_forward when the
    layer's compiled_auto_form is 'recompute' (the default), and the kernels otherwise; eager and 'fused' never take
    it. The compiled gradients equal the reference path's."""
    import vision_kan.layers.kan_linear as kl
    calls = []
    monkeypatch.setattr(kl, 'fused_path', lambda layer, x: True)
    monkeypatch.setattr(kl.FasterKANLinear, 'fused_forward', lambda self, x: calls.append('kernels') or x[..., :12] * 0)
    torch.manual_seed(0)
    layer = FasterKANLinear(16, 12)
    x = torch.randn(2, 5, 16)
    assert layer.compiled_auto_form == 'recompute'  # the class default (measured: README, issue 14)
    layer(x)  # eager: the kernels
    y = torch.compile(layer, backend='aot_eager', fullgraph=True)(x.requires_grad_(True))
    assert calls == ['kernels'], calls  # compiled: the recompute form, not the kernels
    y.pow(2).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    with monkeypatch.context() as m:
        m.setattr(kl, 'fused_path', lambda layer, x: False)
        layer(x.detach()).pow(2).sum().backward()  # the reference path
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, [p.grad for p in layer.parameters()]))
    torch._dynamo.reset()
    for form, backend in (('fused', 'auto'), ('recompute', 'fused')):
        layer.compiled_auto_form, layer.kernel_backend = form, backend
        torch.compile(layer, backend='aot_eager', fullgraph=True)(x.detach())
        torch._dynamo.reset()
    assert calls == ['kernels'] * 3, calls


def _compiled_backward_ops(net: nn.Module, x: torch.Tensor):
    """The call_function targets of `net`'s compiled backward graph (AOT autograd, min-cut partitioner, as inductor
    partitions) and the bytes the forward saves for it."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    got = {}

    def bw(g, inputs):
        got['ops'] = [str(n.target) for n in g.graph.nodes if n.op == 'call_function']
        got['saved'] = sum(n.meta['val'].numel() * n.meta['val'].element_size() for n in g.graph.nodes
                           if n.op == 'placeholder' and isinstance(n.meta.get('val'), torch.Tensor))
        return make_boxed_func(g.forward)

    def backend(gm, inputs):
        return aot_module_simplified(gm, inputs, fw_compiler=lambda g, i: make_boxed_func(g.forward),
                                     bw_compiler=bw, partition_fn=min_cut_rematerialization_partition)
    torch._dynamo.reset()
    torch.compile(net, backend=backend, fullgraph=True)(x).sum().backward()
    torch._dynamo.reset()
    return got['ops'], got['saved']


def test_faster_kan_compiled_recompute_form_recomputes_the_basis_not_the_matmul(monkeypatch):
    """Two FasterKAN layers compiled (the recompute form, the default, where the kernels would run): the backward
    graph holds exactly the reference's matmuls (the next layer's LayerNorm backward reads the first layer's output; a
    plain checkpoint recomputed that output's whole GEMM there), recomputes the basis (its tanh), and the forward
    saves under half the reference's bytes."""
    import vision_kan.layers.kan_linear as kl
    torch.manual_seed(0)
    net = nn.Sequential(FasterKANLinear(16, 48), FasterKANLinear(48, 12))
    x = torch.randn(64, 16, requires_grad=True)
    ref_ops, ref_saved = _compiled_backward_ops(net, x)  # fused_path False on the CPU: the reference path
    monkeypatch.setattr(kl, 'fused_path', lambda layer, x: True)
    rec_ops, rec_saved = _compiled_backward_ops(net, x)
    matmuls = lambda ops: sorted(o for o in ops if o in ('aten.mm.default', 'aten.addmm.default'))  # noqa: E731
    assert matmuls(ref_ops) and matmuls(rec_ops) == matmuls(ref_ops), (matmuls(rec_ops), matmuls(ref_ops))
    assert 'aten.tanh.default' in rec_ops and 'aten.tanh.default' not in ref_ops
    assert rec_saved < ref_saved / 2, (rec_saved, ref_saved)
