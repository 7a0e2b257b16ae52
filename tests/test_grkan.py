"""GR-KAN: the rational function, its init fits, the fused Triton kernel against the reference."""
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn.functional as F

import vision_kan  # noqa: F401
from vision_kan.layers import GRKANLinear, GroupRational, KANMlp, fit_rational, rational

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _direct(x, a, b):
    """P(x) / (1 + |sum_j b_j x^j|) written with explicit powers, per channel group."""
    g = a.shape[0]
    out = torch.empty_like(x)
    size = x.shape[-1] // g
    for k in range(g):
        xs = x[..., k * size:(k + 1) * size]
        p = sum(a[k, j] * xs ** j for j in range(a.shape[1]))
        q = 1 + sum(b[k, j] * xs ** (j + 1) for j in range(b.shape[1])).abs()
        out[..., k * size:(k + 1) * size] = p / q
    return out


def test_rational_matches_direct_formula():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(3, 5, 12, dtype=torch.float64) * 2
    torch.testing.assert_close(rational(x, a, b), _direct(x, a, b))


def test_rational_gradcheck():
    torch.manual_seed(0)
    layer = GroupRational(8, groups=2).double()
    with torch.no_grad():
        layer.weight_numerator.normal_()
        layer.weight_denominator.normal_()
    sign = torch.randint(0, 2, (4, 8)) * 2 - 1
    x = (sign * (0.2 + torch.rand(4, 8))).double().requires_grad_()  # away from the |.| kink at x = 0
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradcheck(lambda a, b: rational(x.detach(), a, b), (
        layer.weight_numerator.detach().clone().requires_grad_(),
        layer.weight_denominator.detach().clone().requires_grad_()))


def test_inits_identity_and_swish():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)[:, None].expand(-1, 8)
    assert torch.equal(GroupRational(8, init='identity').double()(x), x)
    err = (GroupRational(8, init='swish').double()(x) - F.silu(x)).abs().max()
    assert err < 1e-6  # the README's 8.7e-7 (measured 8.74e-7)
    assert fit_rational('swish') is fit_rational('swish')  # fitted once, cached as plain floats
    with pytest.raises(ValueError, match='init must be one of'):
        GroupRational(8, init='relu')
    with pytest.raises(ValueError, match='divisible by groups'):
        GroupRational(10, groups=8)


def test_grkan_mlp_order_and_params():
    mlp = KANMlp(16, 64, kan_type='grkan')
    assert isinstance(mlp.fc1, GRKANLinear) and mlp.fc1.rational.init == 'identity'
    assert mlp.fc2.rational.init == 'swish'
    deit = timm.create_model('deit_tiny_patch16_224')
    kat = timm.create_model('vit_grkan_tiny')
    extra = sum(p.numel() for p in kat.parameters()) - sum(p.numel() for p in deit.parameters())
    assert extra == 12 * 2 * 8 * (6 + 4)  # DeiT's parameters plus the rational coefficients


def test_grkan_layer_wrong_dim():
    with pytest.raises(ValueError, match='in_features=16'):
        GRKANLinear(16, 8)(torch.randn(2, 8))


FUSED_CHECK = textwrap.dedent('''
    import torch
    from vision_kan.layers import GRKANLinear, GroupRational, rational
    from vision_kan.layers.kernels import backend, fused_path
    from vision_kan.layers.kernels.rational_triton import forced_launch, rational_fused
    torch.manual_seed(0)
    # the last two rows: the backward with its sums folded over each tile's rows, large tiles, 2 pipeline stages
    for (m, d, g, dtype, tol, bwd) in [(37, 24, 8, torch.float32, 1e-5, {}), (70, 256, 8, torch.float32, 1e-5, {}),
                                       (5, 16, 2, torch.float16, 2e-2, {}), (9, 32, 4, torch.bfloat16, 1e-2, {}),
                                       (70, 256, 8, torch.float32, 1e-5, dict(FOLD_ROWS=True, BLOCK_M=32, STAGES=2)),
                                       (9, 32, 4, torch.bfloat16, 1e-2, dict(FOLD_ROWS=True, BLOCK_M=64))]:
        a = torch.randn(g, 6) * 0.5
        b = torch.randn(g, 4) * 0.5
        x = (torch.randn(3, m, d) * 1.5).to(dtype)
        dy = torch.randn(3, m, d).to(dtype)
        refs, outs = [], []
        for fn in (rational, rational_fused):
            xi, ai, bi = x.clone().requires_grad_(), a.clone().requires_grad_(), b.clone().requires_grad_()
            y = fn(xi.float() if fn is rational else xi, ai, bi)
            with forced_launch('bwd', **bwd):
                y.backward(dy.float() if fn is rational else dy)
            (refs if fn is rational else outs).append([y.float(), xi.grad.float(), ai.grad, bi.grad])
        for name, r, o in zip(['y', 'dx', 'da', 'db'], refs[0], outs[0]):
            err = ((o - r).abs().max() / r.abs().max().clamp_min(1e-6)).item()
            print(m, d, g, dtype, name, err)
            assert err < tol, (m, d, name, err)
    x = torch.randn(4, 16)
    assert fused_path(GroupRational(16, kernel_backend='fused'), x)
    assert not fused_path(GroupRational(16, num_order=3, kernel_backend='fused'), x)  # orders without a kernel
    assert not fused_path(GroupRational(16, kernel_backend='reference'), x)

    # the custom ops: schema, fake kernels, autograd registration (opcheck), fp32 and a bf16 output dtype
    a = (torch.randn(4, 6) * 0.5).requires_grad_()
    b = (torch.randn(4, 4) * 0.5).requires_grad_()
    xo = torch.randn(5, 3, 16, requires_grad=True)
    torch.library.opcheck(torch.ops.vision_kan.rational_fwd.default, (xo, a, b))
    torch.library.opcheck(torch.ops.vision_kan.rational_fwd.default, (xo, a, b, torch.bfloat16))
    torch.library.opcheck(torch.ops.vision_kan.rational_bwd.default, (torch.randn(5, 3, 16), xo.detach(),
                                                                       a.detach(), b.detach()))  # (dx, partials)

    # the module under backend('fused'): eager and torch.compile(fullgraph) with the custom ops in the graph,
    # against the reference; bf16 autocast emits bf16 from the rational (the matmul reads it without a cast)
    torch.manual_seed(1)
    layer = GRKANLinear(16, 12, groups=4, rational_init='swish')
    with torch.no_grad():
        layer.rational.weight_numerator.add_(0.1 * torch.randn(4, 6))
        layer.rational.weight_denominator.add_(0.1 * torch.randn(4, 4))
    x = torch.randn(2, 7, 16)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm.code)
        return torch._dynamo.lookup_backend('aot_eager')(gm, example_inputs)

    def run(fn, name, amp):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with backend(layer, name), torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            y = fn(xi)
        y.float().sum().backward()
        return [y.detach().float(), xi.grad.float()] + [p.grad.float() for p in layer.parameters()]

    ref = run(layer, 'reference', False)
    for label, got, tol in (('eager', run(layer, 'fused', False), 1e-5),
                            ('compiled', run(torch.compile(layer, fullgraph=True, backend=recording_backend),
                                             'fused', False), 1e-5),
                            ('bf16', run(layer, 'fused', True), 1e-2)):
        for r, o in zip(ref, got):
            err = ((o - r).norm() / r.norm()).item()
            print(label, err)
            assert err < tol, (label, err)
    assert any('vision_kan.rational_fwd' in g for g in graphs), 'custom op not in the compiled graph'
    with backend(layer, 'fused'), torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer.rational(x).dtype == torch.bfloat16
    print('FUSED_OK')
''')


def test_fused_rational_matches_reference_under_triton_interpreter():
    pytest.importorskip('triton', reason='Triton is not installed: the fused path cannot run at all')
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, '-c', FUSED_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and 'FUSED_OK' in proc.stdout, proc.stdout + proc.stderr


def test_compiled_auto_takes_the_fused_rational(monkeypatch):
    """Under torch.compile with backend 'auto' (where the fused path applies) GroupRational takes the fused rational
    (the triton_op, measured faster than inductor's plain-torch form), with the autocast dtype out. The kernels need
    a GPU or the interpreter, so a stand-in with the same signature records the calls here (the op itself under
    compile: test_fused_rational_matches_reference_under_triton_interpreter)."""
    from vision_kan.layers import grkan, kernels
    monkeypatch.setattr(kernels.dispatch, '_backend_wants_fused', lambda name, x: name != 'reference')  # as on a GPU
    calls = []

    def stand_in(x, a, b, out_dtype):
        calls.append(out_dtype)
        return rational(x.float(), a, b).to(out_dtype)

    monkeypatch.setattr(grkan, 'rational_call', stand_in)
    torch.manual_seed(0)
    layer = GRKANLinear(16, 12, groups=4, rational_init='swish')
    x = torch.randn(2, 7, 16)
    with kernels.backend(layer, 'auto'):
        got = torch.compile(layer, fullgraph=True, backend='eager')(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert torch.compile(layer.rational, fullgraph=True, backend='eager')(x).dtype == torch.bfloat16
    assert calls[0] == torch.float32 and calls[-1] == torch.bfloat16
    with kernels.backend(layer, 'reference'):
        torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-6)
