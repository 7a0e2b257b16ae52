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
    assert err < 1e-4
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
    from vision_kan.layers import rational
    from vision_kan.layers.kernels import backend
    from vision_kan.layers.kernels.rational_triton import rational_fused, fused_rational_applies
    torch.manual_seed(0)
    for (m, d, g, dtype, tol) in [(37, 24, 8, torch.float32, 1e-5), (70, 256, 8, torch.float32, 1e-5),
                                  (5, 16, 2, torch.float16, 2e-2)]:
        a = torch.randn(g, 6) * 0.5
        b = torch.randn(g, 4) * 0.5
        x = (torch.randn(3, m, d) * 1.5).to(dtype)
        dy = torch.randn(3, m, d).to(dtype)
        refs, outs = [], []
        for fn in (rational, rational_fused):
            xi, ai, bi = x.clone().requires_grad_(), a.clone().requires_grad_(), b.clone().requires_grad_()
            y = fn(xi.float() if fn is rational else xi, ai, bi)
            y.backward(dy.float() if fn is rational else dy)
            (refs if fn is rational else outs).append([y.float(), xi.grad.float(), ai.grad, bi.grad])
        for name, r, o in zip(['y', 'dx', 'da', 'db'], refs[0], outs[0]):
            err = ((o - r).abs().max() / r.abs().max().clamp_min(1e-6)).item()
            print(m, d, g, dtype, name, err)
            assert err < tol, (m, d, name, err)
    x = torch.randn(4, 16)
    with backend('fused'):
        assert fused_rational_applies(x, torch.zeros(8, 6), torch.zeros(8, 4))
    with backend('reference'):
        assert not fused_rational_applies(x, torch.zeros(8, 6), torch.zeros(8, 4))
    print('FUSED_OK')
''')


def test_fused_rational_matches_reference_under_triton_interpreter():
    pytest.importorskip('triton', reason='Triton is not installed: the fused path cannot run at all')
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, '-c', FUSED_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and 'FUSED_OK' in proc.stdout, proc.stdout + proc.stderr
