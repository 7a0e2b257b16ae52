"""Conv-KAN layers: every family in 1/2/3-d against an independent fp64 reference, gradients, groups, half
precision, memory, and the torch-conv-kan defects (each with a test that fails on the defect)."""
import functools
import inspect
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import interpolate, special
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vision_kan.layers import conv_basis, conv_basis_poly, kan_conv, kan_conv_families
from vision_kan.layers.conv_basis import WAVELETS, BSplineBasis, ConvBasis, RBFBasis, ReLUKANBasis, WaveletBasis
from vision_kan.layers.conv_basis_poly import BernsteinBasis, ChebyshevBasis, GramBasis, JacobiBasis, LegendreBasis
from vision_kan.layers.kan_conv import BasisKANConv
from vision_kan.layers.kan_conv_families import CONV_KAN_FAMILIES, BottleNeckKAGNConvNd

FAMILIES = sorted(CONV_KAN_FAMILIES)
F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# Independent fp64 reference: the basis from scipy / closed formulas, the conv as a direct sum over kernel offsets
# ----------------------------------------------------------------------------------------------------------------

def _silu(x):
    return x * special.expit(x)


def _col(p, x):
    """(C,) numpy column -> broadcast against (B, C, *S)."""
    return p.reshape(1, -1, *([1] * (x.ndim - 2)))


def _gram(t, w, degree):
    polys = [np.ones_like(t), t]
    for n in range(1, degree):
        polys.append(t * polys[n] - w[n - 1] * n * n / (4.0 * n * n - 1.0) * polys[n - 1])
    return polys[:degree + 1]


def _wavelet(kind, z):
    g = np.exp(-0.5 * z * z)
    if kind == 'mexican_hat':
        return 2.0 / (np.sqrt(3.0) * np.pi ** 0.25) * (1.0 - z * z) * g
    if kind == 'morlet':
        return np.cos(5.0 * z) * g
    if kind == 'dog':
        return -z * g
    if kind == 'shannon':
        return 2.0 * np.sinc(2.0 * z) - np.sinc(z)
    raise AssertionError(kind)


def ref_basis(layer, x):
    """The layer's basis functions written out independently: x (B, C, *S) numpy -> (B, C, K, *S)."""
    b = layer.basis
    name = type(b).__name__
    if name == 'BSplineBasis':
        (lo, hi), g, k = b.grid_range, b.grid_size, b.spline_order
        t = lo + (hi - lo) / g * np.arange(-k, g + k + 1)
        funcs = [np.nan_to_num(interpolate.BSpline.basis_element(t[j:j + k + 2], extrapolate=False)(x))
                 for j in range(g + k)]
    elif name == 'RBFBasis':
        grid = np.linspace(*b.grid_range, b.num_functions)
        funcs = [np.exp(-((x - gj) / b.denominator) ** 2) for gj in grid]
    elif name == 'LegendreBasis':
        funcs = [special.eval_legendre(n, np.tanh(x)) for n in range(b.degree + 1)]
    elif name == 'ChebyshevBasis':
        funcs = [special.eval_chebyt(n, np.tanh(x)) for n in range(b.degree + 1)]
    elif name == 'JacobiBasis':
        funcs = [special.eval_jacobi(n, b.alpha, b.beta, np.tanh(x)) for n in range(b.degree + 1)]
    elif name == 'GramBasis':
        funcs = [_silu(p) for p in _gram(np.tanh(x), b.beta_weights.detach().double().numpy(), b.degree)]
    elif name == 'BernsteinBasis':
        s, n = special.expit(x), b.degree
        funcs = [math.comb(n, j) * s ** j * (1 - s) ** (n - j) for j in range(n + 1)]
    elif name == 'ReLUKANBasis':
        lo_, hi_ = b.phase_low.detach().double().numpy(), b.phase_high.detach().double().numpy()
        funcs = [(b.r * np.maximum(x - _col(lo_[:, j], x), 0) * np.maximum(_col(hi_[:, j], x) - x, 0)) ** 2
                 for j in range(b.num_functions)]
    elif name == 'WaveletBasis':
        tau, ls = b.translation.detach().double().numpy(), b.log_scale.detach().double().numpy()
        funcs = [_wavelet(b.wavelet_type, (x - _col(tau[:, j], x)) / np.exp(_col(ls[:, j], x)))
                 for j in range(b.num_functions)]
    else:
        raise AssertionError(name)
    return np.stack(funcs, axis=2)


def ref_conv(feats, weight, stride, padding, dilation, groups):
    """Direct sum: y[b, o, p] = sum over kernel offsets, channels c of o's group and functions k of
    weight[o, c, k, off] * feats[b, c, k, p * stride - padding + off * dilation] (0 outside the input)."""
    bsz, cin, nk = feats.shape[:3]
    size, ksize, cout = feats.shape[3:], weight.shape[3:], weight.shape[0]
    out_size = [(s + 2 * p - d * (k - 1) - 1) // st + 1
                for s, k, st, p, d in zip(size, ksize, stride, padding, dilation)]
    out = np.zeros((bsz, cout, *out_size))
    cg, og = cin // groups, cout // groups
    for off in itertools.product(*[range(k) for k in ksize]):
        idx = [np.arange(n) * st - p + o * d for n, st, p, o, d in zip(out_size, stride, padding, off, dilation)]
        valid = functools.reduce(np.multiply.outer, [((i >= 0) & (i < s)).astype(float) for i, s in zip(idx, size)])
        gathered = feats[(slice(None),) * 3 + np.ix_(*[np.clip(i, 0, s - 1) for i, s in zip(idx, size)])] * valid
        for g in range(groups):
            w = weight[(slice(g * og, (g + 1) * og), slice(None), slice(None)) + off]  # (og, cg, K)
            out[:, g * og:(g + 1) * og] += np.einsum('bck...,ock->bo...', gathered[:, g * cg:(g + 1) * cg], w)
    return out


def ref_layer(layer, x):
    """Reference output of a layer (no norm, no act) for x (B, C, *S) numpy fp64."""
    geom = (layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, BottleNeckKAGNConvNd):
        base = ref_conv(_silu(x)[:, :, None], layer.base_weight.detach().double().numpy()[:, :, None], *geom)
        sq = ref_conv(x[:, :, None], layer.squeeze_weight.detach().double().numpy()[:, :, None],
                      (1,) * x.ndim, (0,) * x.ndim, (1,) * x.ndim, layer.groups)
        inner = ref_layer(layer.inner, sq)
        ex = ref_conv(inner[:, :, None], layer.expand_weight.detach().double().numpy()[:, :, None],
                      (1,) * x.ndim, (0,) * x.ndim, (1,) * x.ndim, layer.groups)
        return base + ex
    feats, weights = [ref_basis(layer, x)], [layer.basis_weight.detach().double().numpy()]
    if layer.base_act is not None:
        feats.insert(0, _silu(x)[:, :, None])
        weights.insert(0, layer.base_weight.detach().double().numpy()[:, :, None])
    return ref_conv(np.concatenate(feats, 2), np.concatenate(weights, 2), *geom)


def _perturb(layer, seed=1):
    """Move the learnable basis parameters off their initial values so the reference checks them too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith(('beta_weights', 'phase_low', 'phase_high', 'translation', 'log_scale')):
                p.add_(0.2 * (torch.rand(p.shape, generator=gen, dtype=p.dtype) - 0.5))
    return layer


def make(family, cin=2, cout=3, kernel=3, ndim=2, **kwargs):
    torch.manual_seed(0)
    return _perturb(CONV_KAN_FAMILIES[family](cin, cout, kernel, ndim=ndim, **kwargs).double())


def _input(cin, size, ndim, bsz=2, scale=1.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(bsz, cin, *(size,) * ndim, generator=gen, dtype=F64)


@pytest.mark.parametrize('ndim', [1, 2, 3])
@pytest.mark.parametrize('family', FAMILIES)
def test_reference_every_family_and_dim(family, ndim):
    layer = make(family, ndim=ndim, padding=1)
    x = _input(2, 5, ndim)
    y = layer(x)
    assert y.shape == (2, 3) + (5,) * ndim
    np.testing.assert_allclose(y.detach().numpy(), ref_layer(layer, x.numpy()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('family', FAMILIES)
def test_reference_stride_padding_dilation_groups(family):
    layer = make(family, cin=4, cout=6, kernel=(3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=2,
                 bias=False)
    x = _input(4, 7, 2)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref_layer(layer, x.numpy()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('wavelet', ['mexican_hat', 'morlet', 'dog', 'shannon'])
def test_reference_wavelets(wavelet):
    layer = make('wavkan', wavelet_type=wavelet, num_wavelets=3, padding=1)
    x = _input(2, 5, 2)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref_layer(layer, x.numpy()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('kwargs', [dict(spline_order=2, grid_size=4), dict(spline_order=1, grid_range=(-2, 1))])
def test_reference_bspline_other_orders(kwargs):
    """Non-cubic orders take basis.py's Cox-de Boor recursion instead of the closed form."""
    layer = make('kan', padding=1, **kwargs)
    x = _input(2, 5, 2)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref_layer(layer, x.numpy()), rtol=1e-10, atol=1e-10)


def test_bias_norm_act_applied_in_order():
    torch.manual_seed(0)
    plain = kan_conv_families.KAGNConv2d(2, 3, 3, padding=1).double()
    full = kan_conv_families.KAGNConv2d(2, 3, 3, padding=1, bias=True, norm_layer=nn.BatchNorm2d,
                                        act_layer=nn.SiLU).double()
    full.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        full.bias.uniform_(-1, 1)
    full.eval()
    x = _input(2, 5, 2)
    expected = nn.functional.silu(full.norm(plain(x) + full.bias.view(1, -1, 1, 1)))
    torch.testing.assert_close(full(x), expected)


# ----------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------

def _gradcheck(layer, x, fast_mode=True):
    names = [n for n, p in layer.named_parameters() if p.requires_grad]
    params = [p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters() if p.requires_grad]

    def fn(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), *params), eps=1e-6, atol=1e-6, rtol=1e-5,
                                    fast_mode=fast_mode)


@pytest.mark.parametrize('family', FAMILIES)
def test_gradcheck_fp64_2d(family):
    layer = make(family, cin=2, cout=2, padding=1, groups=2)
    _gradcheck(layer, _input(2, 4, 2, bsz=1, scale=1.2), fast_mode=family not in ('kagn', 'wavkan', 'kacn'))


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('ndim', [1, 3])
def test_gradcheck_fp64_1d_3d(family, ndim):
    layer = make(family, cin=2, cout=2, kernel=2, ndim=ndim, stride=2 if ndim == 1 else 1, padding=1)
    _gradcheck(layer, _input(2, 5 if ndim == 1 else 3, ndim, bsz=1, scale=1.2))


@pytest.mark.parametrize('basis', [
    LegendreBasis(4), ChebyshevBasis(5), JacobiBasis(4, 0.5, 2.0), GramBasis(4), GramBasis(1), RBFBasis(6),
    BernsteinBasis(4), BernsteinBasis(1), BSplineBasis(5, 3), BSplineBasis(4, 2, (-2, 1)), BSplineBasis(3, 1),
    ReLUKANBasis(3, 4, 2, (-2, 2))] + [WaveletBasis(3, w, 3, (-2, 2)) for w in sorted(WAVELETS)])
def test_analytic_vjp_equals_autograd(basis):
    """The analytic vjps agree with autograd through `functions` (ConvBasis.vjp: all at once for recurrences,
    one function at a time otherwise)."""
    basis = basis.double()
    with torch.no_grad():
        for p in basis.parameters():
            p.add_(torch.rand(p.shape, dtype=F64) * 0.6 - 0.3)
    x = torch.cat([_input(3, 4, 2) * 2, torch.full((1, 3, 4, 4), 0.0, dtype=F64)])  # 0: sinc's removable point
    grad = torch.randn(x.shape[0], x.shape[1], basis.num_functions, *x.shape[2:], dtype=F64)
    needs = [True] * len(basis.tensors())
    gx, gt = basis.vjp(x, grad, basis.tensors(), needs)
    gx_ref, gt_ref = ConvBasis.vjp(basis, x, grad, basis.tensors(), needs)
    torch.testing.assert_close(gx, gx_ref)
    for a, b, t in zip(gt, gt_ref, basis.tensors()):
        torch.testing.assert_close(a, b if b is not None else torch.zeros_like(t))  # None: unused (GramBasis(1))


def test_gram_unit_weights_are_monic_legendre():
    t = np.linspace(-0.99, 0.99, 41)
    x = torch.tensor(np.arctanh(t)).view(1, 1, -1)
    basis = GramBasis(5).double()
    values = [v.detach().view(-1).numpy() for v in basis.functions(x, basis.tensors())]
    for n, v in enumerate(values):
        monic = special.eval_legendre(n, t) * 2 ** n * math.factorial(n) ** 2 / math.factorial(2 * n)
        np.testing.assert_allclose(v, _silu(monic), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('family', ['kagn', 'wavkan', 'kacn', 'kan', 'bottleneck_kagn'])
def test_batch_chunks_give_the_same_result(family, monkeypatch):
    """The basis is evaluated in batch slices (kan_conv.CHUNK_ELEMENTS): 3 slices equal 1."""
    layer = make(family, padding=1)
    x = _input(2, 5, 2, bsz=5).requires_grad_(True)
    grad = torch.randn(5, 3, 5, 5, dtype=F64)

    def run():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = layer(x)
        y.backward(grad)
        return [y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    whole = run()
    monkeypatch.setattr(kan_conv, 'CHUNK_ELEMENTS', x[0].numel() * 2)  # slices of 2, 2 and 1 samples
    assert len(kan_conv._batch_chunks(x)) == 3
    for a, b in zip(run(), whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Groups: one grouped conv, never a loop of modules
# ----------------------------------------------------------------------------------------------------------------

_OUT_SLICED = ('base_weight', 'basis_weight', 'bias', 'expand_weight')
_IN_SLICED = ('phase_low', 'phase_high', 'translation', 'log_scale')
_INNER_SLICED = ('squeeze_weight', 'inner.basis_weight')


def _slice_for(name, g, groups, layer):
    if name in _INNER_SLICED:
        m = layer.inner_channels
        return slice(g * m, (g + 1) * m)
    if name.endswith(_IN_SLICED):
        n = layer.in_channels // groups
        return slice(g * n, (g + 1) * n)
    if name.endswith(_OUT_SLICED):
        n = layer.out_channels // groups
        return slice(g * n, (g + 1) * n)
    return slice(None)  # shared (Gram beta)


@pytest.mark.parametrize('family', FAMILIES)
def test_groups_equal_separate_layers_on_split_channels(family):
    groups, cin, cout = 2, 4, 6
    grouped = make(family, cin=cin, cout=cout, padding=1, groups=groups, bias=True)
    x = _input(cin, 5, 2)
    parts = []
    for g in range(groups):
        single = make(family, cin=cin // groups, cout=cout // groups, padding=1, bias=True)
        state = {n: t[_slice_for(n, g, groups, grouped)] for n, t in grouped.state_dict().items()}
        single.load_state_dict(state)
        parts.append(single(x[:, g * cin // groups:(g + 1) * cin // groups]))
    torch.testing.assert_close(grouped(x), torch.cat(parts, 1), rtol=1e-12, atol=1e-12)


class _CountOps(TorchDispatchMode):
    """Counts aten ops and tracks the largest storage any op returns."""

    def __init__(self):
        super().__init__()
        self.counts, self.max_bytes = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.counts[func.overloadpacket.__name__] = self.counts.get(func.overloadpacket.__name__, 0) + 1
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.max_bytes = max(self.max_bytes, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize('family', FAMILIES)
def test_groups_are_one_conv_not_a_module_loop(family):
    layer = CONV_KAN_FAMILIES[family](8, 8, 3, padding=1, groups=4)
    assert not any(isinstance(m, (nn.ModuleList, nn.ModuleDict)) for m in layer.modules())
    ungrouped = CONV_KAN_FAMILIES[family](8, 8, 3, padding=1, groups=1)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in ungrouped.named_parameters()]
    with _CountOps() as ops:
        layer(torch.randn(2, 8, 6, 6))
    expected = 4 if family == 'bottleneck_kagn' else 1  # squeeze, Gram conv, expand, base conv
    assert ops.counts.get('convolution') == expected


# ----------------------------------------------------------------------------------------------------------------
# Half precision: finite everywhere, Chebyshev near |t| = 1
# ----------------------------------------------------------------------------------------------------------------

def _all_finite(dtype):
    """Every finite value of a 16-bit float type, both signs (fp16: 63488 values, bf16: 65280)."""
    top = 0x7C00 if dtype == torch.float16 else 0x7F80  # bit pattern of +inf
    pos = torch.arange(0, top, dtype=torch.int32).to(torch.int16).view(dtype)
    return torch.cat([pos, -pos])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('family', FAMILIES)
def test_half_forward_backward_finite_on_every_value(family, dtype):
    """The basis branch is finite on every finite 16-bit input (the base branch is a plain conv of SiLU(x), which
    can overflow fp16 like nn.Conv1d would for |x| near 65504, so it is off here and checked below)."""
    torch.manual_seed(0)
    layer = CONV_KAN_FAMILIES[family](1, 2, 1, ndim=1, base_activation=None).to(dtype)
    x = _all_finite(dtype).view(1, 1, -1).requires_grad_(True)
    y = layer(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('family', FAMILIES)
def test_half_full_layer_close_to_fp32(family, dtype):
    torch.manual_seed(0)
    layer = CONV_KAN_FAMILIES[family](3, 4, 3, padding=1)
    x = torch.cat([torch.linspace(-8, 8, 156), torch.tensor([-1e3, -4.5, -1.0, 1.0, 4.5, 1e3])]).view(1, 3, 6, 9)
    ref = layer(x)
    y = layer.to(dtype)(x.to(dtype))
    assert torch.isfinite(y).all()
    # error of each output against fp32, relative to |ref| + the median |ref| (so that the outputs of the +-1e3
    # inputs do not hide the error of the small ones), in units of the type's epsilon: measured (CPU, 2026-11-28) at
    # most 1.44 in fp16 (KAJN) and 1.13 in bf16 over the families; bound 2.5
    ref = ref.detach()
    err = ((y.float() - ref).abs() / (ref.abs() + ref.abs().median())).max().item() / torch.finfo(dtype).eps
    assert err <= 2.5, (family, dtype, err)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_chebyshev_near_one_is_finite_and_exact(dtype):
    """torch-conv-kan clamps tanh(x) to 1 - 1e-7, which rounds to 1 in fp16 and gives acos' infinite slope (NaN);
    the recurrence has T_n(+-1) = (+-1)^n exactly and a finite gradient everywhere."""
    assert '.acos(' not in inspect.getsource(conv_basis_poly)
    edge = torch.tensor([0.999, 1.0, 1.001, 3.0, 4.5, 10.0, 100.0, 60000.0])
    x = torch.cat([edge, -edge]).to(dtype).view(1, 1, -1)
    basis = ChebyshevBasis(4)
    values = torch.stack(list(basis.functions(x.float(), ())), 0)
    t = torch.tanh(x.double())
    expected = torch.stack([torch.cos(n * torch.acos(t)) for n in range(5)]).float()
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-5)
    layer = kan_conv_families.KACNConv1d(1, 2, 1).to(dtype)
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(xg.grad).all()


def test_autocast_bf16_cpu():
    torch.manual_seed(0)
    layer = kan_conv_families.KAGNConv2d(4, 5, 3, padding=1)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    ref = layer(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    # measured 4.8e-3 of the largest output (0.95), 0.64 bf16 epsilons (CPU, 2026-11-28); bound: 2 epsilons
    assert (y.float() - ref).abs().max() <= 2 * torch.finfo(torch.bfloat16).eps * ref.abs().max()
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.basis_weight.grad.dtype == torch.float32
    assert torch.isfinite(layer.basis.beta_weights.grad).all()


# ----------------------------------------------------------------------------------------------------------------
# Memory: the features are never saved, and no (B, Cout, Cin, *S) tensor exists (WavKAN's defect)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('family', FAMILIES)
def test_only_x_is_saved_for_backward(family):
    """Autograd keeps x (and the small weights), never the (B, Cin * (K + 1), *S) features."""
    layer = CONV_KAN_FAMILIES[family](32, 32, 3, padding=1)
    x = torch.randn(3, 32, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x).sum()
    activations = [t.numel() for t in saved if t.dim() == 4 and t.shape[0] == 3 and t.shape[2:] == x.shape[2:]]
    if family == 'bottleneck_kagn':  # x for the squeeze and base convs, z for the Gram conv and the expand
        z = x.numel() * layer.inner_channels // 32
        assert sorted(activations) == sorted([x.numel()] * 2 + [z] * 2)
    else:
        assert activations == [x.numel()]
    n_params = sum(p.numel() for p in layer.parameters())
    assert sum(t.numel() for t in saved) - sum(activations) <= n_params


@pytest.mark.parametrize('family', FAMILIES)
def test_no_tensor_larger_than_the_features(family):
    """Largest storage made in forward + backward: the (B, Cin * (K + 1), *S) features or the output. WavKAN's
    published layer makes (B, Cout, Cin, *S), Cin = 8 times the output and 32 / (K + 1) times the features."""
    cin, cout, bsz, size = 8, 32, 2, 16
    layer = CONV_KAN_FAMILIES[family](cin, cout, 3, padding=1)
    x = torch.randn(bsz, cin, size, size, requires_grad=True)
    k = max(layer.num_functions, getattr(getattr(layer, 'inner', None), 'num_functions', 0)) + 1
    with _CountOps() as ops:
        layer(x).sum().backward()
    assert ops.counts['convolution_backward'] >= 1  # the mode saw the backward too
    pixels = bsz * size * size * 4  # bytes of one fp32 channel
    assert ops.max_bytes <= max(cin * k, cout) * pixels
    assert max(cin * k, cout) * 3 <= cout * cin
    assert x.grad is not None


# ----------------------------------------------------------------------------------------------------------------
# The other torch-conv-kan defects
# ----------------------------------------------------------------------------------------------------------------

def test_bernstein_is_a_varying_partition_of_unity():
    """torch-conv-kan's Bernstein basis is constant 1 (its layer is a plain conv)."""
    x = torch.linspace(-6, 6, 101, dtype=F64).view(1, 1, -1)
    basis = BernsteinBasis(4)
    values = torch.stack(list(basis.functions(x, ())), 0)  # (5, 1, 1, 101)
    torch.testing.assert_close(values.sum(0), torch.ones_like(x))
    assert (values >= 0).all()
    assert (values.amax(-1) - values.amin(-1) > 0.3).all()  # every function varies with x
    assert values[0, 0, 0, 0] > 0.99 and values[-1, 0, 0, -1] > 0.99  # B_0 at s -> 0, B_n at s -> 1
    layer = kan_conv_families.KABNConv1d(1, 1, 1, base_activation=None).double()
    y = [layer(torch.full((1, 1, 1), v, dtype=F64)).item() for v in (-2.0, 0.0, 2.0)]
    assert abs(y[0] - 2 * y[1] + y[2]) > 1e-4  # not affine in x, so not a plain conv


def test_no_caches_on_methods_taking_tensors():
    """torch-conv-kan puts lru_cache on methods taking tensors (keys on tensor identity, keeps tensors alive)."""
    for module in (conv_basis, conv_basis_poly, kan_conv, kan_conv_families):
        source = inspect.getsource(module)
        assert 'lru_cache' not in source and 'functools.cache' not in source and '@cache' not in source
    for cls in CONV_KAN_FAMILIES.values():
        layer = cls(2, 2, 1)
        for m in layer.modules():
            for name in dir(type(m)):
                assert not hasattr(getattr(type(m), name, None), 'cache_info'), (type(m).__name__, name)


@pytest.mark.parametrize('family', FAMILIES)
def test_regularization_scaled_by_its_own_coefficient(family):
    """L1 term scaled by l1 and L2 term by l2 (torch-conv-kan scaled its L1 penalty by the L2 coefficient)."""
    layer = CONV_KAN_FAMILIES[family](2, 3, 3)
    w = (layer.inner if family == 'bottleneck_kagn' else layer).basis_weight
    l1, l2 = w.abs().sum(), w.square().sum()
    assert not torch.isclose(l1, l2)
    torch.testing.assert_close(layer.regularization_loss(l1=0.3, l2=0.0), 0.3 * l1)
    torch.testing.assert_close(layer.regularization_loss(l1=0.0, l2=0.7), 0.7 * l2)
    torch.testing.assert_close(layer.regularization_loss(l1=0.3, l2=0.7), 0.3 * l1 + 0.7 * l2)
    layer.regularization_loss(l1=1.0, l2=1.0).backward()
    torch.testing.assert_close(w.grad, torch.sign(w) + 2 * w)


# ----------------------------------------------------------------------------------------------------------------
# Shapes, API, errors
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ndim', [1, 2, 3])
@pytest.mark.parametrize('geom', [
    dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=4, stride=3, padding=2, dilation=2),
    dict(kernel_size=3, padding='same', dilation=2), dict(kernel_size=2, padding='valid')])
def test_shapes_match_torch_conv(geom, ndim):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim](4, 6, groups=2, **geom)
    x = torch.randn(2, 4, *(9, 7, 8)[:ndim])
    for family in ('kagn', 'bottleneck_kagn', 'kan'):
        layer = CONV_KAN_FAMILIES[family](4, 6, groups=2, ndim=ndim, **geom)
        assert layer(x).shape == conv(x).shape


def test_public_names_fixed_dims_and_reset():
    for name in kan_conv_families.__all__[:-1]:
        cls = getattr(kan_conv_families, name)
        assert issubclass(cls, BasisKANConv)
        if name[-2:] in ('1d', '2d', '3d'):
            ndim = int(name[-2])
            layer = cls(2, 2, 3, padding=1)
            assert layer.ndim == ndim and layer(torch.randn(1, 2, *(5,) * ndim)).shape == (1, 2) + (5,) * ndim
            with pytest.raises(ValueError, match='ndim is fixed'):
                cls(2, 2, 3, ndim=(ndim % 3) + 1)
    layer = kan_conv_families.WavKANConv2d(3, 4, 3)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    layer.reset_parameters()
    torch.testing.assert_close(layer.basis.translation, before['basis.translation'])
    torch.testing.assert_close(layer.basis.log_scale, before['basis.log_scale'])
    assert layer.basis_weight.abs().max() <= 1 / math.sqrt(3 * 9 * 4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(cls='kagn', in_channels=4, out_channels=6, groups=4), 'divisible by groups'),
    (dict(cls='kagn', ndim=4), 'ndim must be 1, 2 or 3'),
    (dict(cls='wavkan', wavelet_type='haar'), 'wavelet_type must be one of'),
    (dict(cls='kajn', alpha=-1.5), 'alpha and beta must be > -1'),
    (dict(cls='kagn', padding='same', stride=2), "padding='same'"),
    (dict(cls='kagn', dropout=1.0), 'dropout must be in'),
    (dict(cls='kan', grid_range=(1, -1)), 'grid_range'),
    (dict(cls='kagn', base_activation=nn.PReLU), 'parameter-free'),
])
def test_errors_name_the_argument(kwargs, match):
    kwargs = dict(dict(in_channels=2, out_channels=2, kernel_size=3), **kwargs)
    cls = CONV_KAN_FAMILIES[kwargs.pop('cls')]
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
    with pytest.raises(ValueError, match=r'input must be \(B, 2'):
        CONV_KAN_FAMILIES['kagn'](2, 2, 3)(torch.randn(1, 3, 5, 5))


def test_meta_device():
    """timm can build models on the meta device; layers must construct and run there."""
    for cls in CONV_KAN_FAMILIES.values():
        layer = cls(4, 6, 3, padding=1, device='meta')
        assert layer(torch.empty(2, 4, 5, 5, device='meta')).shape == (2, 6, 5, 5)


def test_dropout_in_training_only():
    layer = kan_conv_families.KALNConv2d(4, 4, 3, padding=1, dropout=0.5)
    twin = kan_conv_families.KALNConv2d(4, 4, 3, padding=1, dropout=0.0)  # the same weights, no dropout at all
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 6, 6)
    torch.manual_seed(0)
    # eval: dropout is off, so the layer computes exactly its dropout-free twin's function
    torch.testing.assert_close(layer.eval()(x), twin.eval()(x), rtol=0, atol=0)
    # training: dropout is on (output differs from the twin's, and a fresh mask each call)
    a, b, plain = layer.train()(x), layer(x), twin.train()(x)
    assert not torch.allclose(a, plain) and not torch.allclose(a, b)
