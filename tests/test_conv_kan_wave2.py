"""Conv-KAN wave 2: KAN self-attention and focal modulation (1/2/3-d), the mixture of conv-KAN experts and its
load-balancing loss, DenseKANet and the MoE / attention variants, the fused (compiled) basis against the reference.

Each block is checked against a plain fp64 computation written out here from its sub-layers (the conv-KAN layers
themselves are checked against an independent reference in test_kan_conv.py) and by fp64 gradcheck."""
import math

import pytest
import timm
import torch
import torch.nn as nn

import main
import vision_kan
from conftest import common_args
from vision_kan.layers import kernels
from vision_kan.layers.kan_attention import KANFocalModulation, KANSelfAttention
from vision_kan.layers.kan_conv_families import CONV_KAN_FAMILIES
from vision_kan.layers.kernels import conv_basis_fused
from vision_kan.layers.moe_kan_conv import MoEKANConv, cv_squared
from vision_kan.train.losses import AuxiliaryLoss

F64 = torch.float64


def _x(channels, size, ndim, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *([size] * ndim), generator=g, dtype=F64)


def _gradcheck(module, x):
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = [p.detach().clone().requires_grad_(True) for n, p in module.named_parameters() if p.requires_grad]

    def fn(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), *params), eps=1e-6, atol=1e-6, rtol=1e-5,
                                    fast_mode=True)


# ----------------------------------------------------------------------------------------------------------------
# Self-attention and focal modulation
# ----------------------------------------------------------------------------------------------------------------

def _attention_reference(block, x):
    """norm(x + gamma * outer(softmax(q k^T / sqrt(d)) v)), q, k, v the thirds of the qkv conv, heads by channel."""
    b, spatial, h = x.shape[0], x.shape[2:], block.num_heads
    z = block.inner_proj(x)
    q, k, v = block.qkv(z).reshape(b, 3, block.dims, -1).unbind(1)  # (B, D, N) each
    d = block.dims // h
    out = torch.empty_like(q)
    for i in range(b):
        for head in range(h):
            rows = slice(head * d, (head + 1) * d)
            scores = q[i, rows].T @ k[i, rows] / math.sqrt(d)  # (N, N)
            out[i, rows] = (torch.softmax(scores, dim=-1) @ v[i, rows].T).T  # (D/h, N)
    att = block.outer_proj(out.reshape(b, block.dims, *spatial))
    return block.norm(x + block.gamma * att)


def _focal_reference(block, x):
    c, levels = block.channels, block.focal_level
    proj = block.f(x)
    q, ctx, gates = proj[:, :c], proj[:, c:2 * c], proj[:, 2 * c:]
    total = torch.zeros_like(q)
    for level in range(levels):
        ctx = block.focal_layers[level](ctx)
        total = total + ctx * gates[:, level:level + 1]
    dims = tuple(range(2, x.dim()))
    total = total + total.mean(dims, keepdim=True) * gates[:, levels:levels + 1]
    total = total / (levels + 1)
    return x + block.gamma * block.proj(block.norm(q * block.h(total)))


@pytest.mark.parametrize('ndim', [1, 2, 3])
@pytest.mark.parametrize('kwargs', [dict(num_heads=2), dict(inner_channels=4, conv_type='kacn')])
def test_self_attention_matches_reference(ndim, kwargs):
    torch.manual_seed(0)
    block = KANSelfAttention(6 if 'inner_channels' not in kwargs else 6, ndim=ndim, gamma_init=0.7,
                             **kwargs).double().eval()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    x = _x(6, 4 if ndim < 3 else 3, ndim)
    expected = _attention_reference(block, x)
    torch.testing.assert_close(block(x), expected)
    block.fused_attn = False  # the explicit path (FLOP counters) is the same function
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == x.shape


@pytest.mark.parametrize('ndim', [1, 2, 3])
def test_focal_modulation_matches_reference(ndim):
    torch.manual_seed(0)
    block = KANFocalModulation(4, ndim=ndim, focal_level=2, gamma_init=0.5).double().eval()
    x = _x(4, 5 if ndim < 3 else 3, ndim)
    torch.testing.assert_close(block(x), _focal_reference(block, x))


@pytest.mark.parametrize('block', [
    KANSelfAttention(4, ndim=2, num_heads=2, gamma_init=0.8, norm_layer=nn.Identity, kernel_size=1),
    KANFocalModulation(2, ndim=1, focal_level=1, gamma_init=0.8, post_norm=False, conv_type='kaln'),
], ids=['self_attention', 'focal'])
def test_attention_blocks_gradcheck(block):
    torch.manual_seed(0)
    _gradcheck(block.double(), _x(block.channels, 3, block.ndim, batch=1))


def test_attention_blocks_start_as_identity_and_every_parameter_learns():
    torch.manual_seed(0)
    x = _x(4, 5, 2).float()
    focal = KANFocalModulation(4)
    torch.testing.assert_close(focal(x), x)  # gamma = 0
    for block in (KANSelfAttention(4, num_heads=2, gamma_init=1.0), KANFocalModulation(4, gamma_init=1.0)):
        block(x).square().sum().backward()
        dead = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, dead


def test_attention_blocks_reject_bad_arguments():
    with pytest.raises(ValueError, match='num_heads'):
        KANSelfAttention(6, num_heads=4)
    with pytest.raises(ValueError, match='conv_type'):
        KANFocalModulation(4, conv_type='nope')
    with pytest.raises(ValueError, match='odd'):
        KANFocalModulation(4, focal_window=2)
    with pytest.raises(ValueError, match='attn_type'):
        timm.create_model('reskanet18_kagn', attn_type='cross')
    with pytest.raises(ValueError, match='attn_stages'):
        timm.create_model('vggkan11_kagn', attn_type='focal', attn_stages=(7,))


# ----------------------------------------------------------------------------------------------------------------
# Mixture of conv-KAN experts
# ----------------------------------------------------------------------------------------------------------------

def _moe(**kwargs):
    torch.manual_seed(0)
    args = dict(conv_type='kagn', num_experts=4, top_k=2, identical_init=False, norm_layer=nn.BatchNorm2d)
    args.update(kwargs)
    layer = MoEKANConv(3, 5, 3, padding=1, **args).double()
    with torch.no_grad():
        layer.w_gate.normal_(0, 2.0)
        layer.w_noise.normal_(0, 0.5)
    return layer


def test_moe_matches_dense_reference_and_gates_are_top_k():
    layer = _moe().eval()
    x = _x(3, 5, 2, batch=6)
    gates, _ = layer.gate(x)
    assert ((gates > 0).sum(1) == 2).all() and torch.allclose(gates.sum(1), torch.ones(6, dtype=F64))
    pooled = x.mean((2, 3))
    logits = pooled @ layer.w_gate
    top = logits.topk(2, dim=1)
    expected_gates = torch.zeros_like(logits).scatter(1, top.indices, torch.softmax(top.values, 1))
    torch.testing.assert_close(gates, expected_gates)
    mixed = sum(expected_gates[:, e].view(-1, 1, 1, 1) * layer.experts[e](x) for e in range(4))
    torch.testing.assert_close(layer(x), layer.norm(mixed))


def test_moe_compiled_without_graph_break_equals_eager():
    layer = _moe().eval()
    x = _x(3, 5, 2, batch=4)
    compiled = torch.compile(layer, backend='eager', fullgraph=True)  # dense mixture: no data-dependent shapes
    torch.testing.assert_close(compiled(x), layer(x))


def test_moe_gradcheck_eval():
    layer = _moe(norm_layer=None, num_experts=3, top_k=1).eval()
    _gradcheck(layer, _x(3, 3, 2, batch=3))


def test_load_balancing_loss_reaches_every_experts_gate_weights():
    layer = _moe(num_experts=6, top_k=1).train()
    x = _x(3, 5, 2, batch=4)
    layer(x)
    loss = layer.auxiliary_loss()
    assert loss.ndim == 0 and loss > 0
    grad_gate, grad_noise = torch.autograd.grad(loss, [layer.w_gate, layer.w_noise])
    # 4 samples, top-1 of 6: at least 2 experts get no sample, yet their gate columns get a gradient (the load's
    # smooth estimate); importance alone would reach only the chosen ones
    assert (grad_gate.abs().sum(0) > 0).all() and (grad_noise.abs().sum(0) > 0).all()


def test_expert_without_samples_gives_no_nans_and_zero_gradients():
    layer = _moe(num_experts=4, top_k=1).eval()
    with torch.no_grad():
        layer.w_gate.zero_()
        layer.w_gate[:, 0] = 5.0  # positive inputs below: every sample picks expert 0
    x = _x(3, 5, 2, batch=3).abs() + 0.5
    gates, aux = layer.gate(x)
    assert (gates[:, 0] == 1).all() and torch.isfinite(aux)
    y = layer(x)
    (y.sum() + layer.auxiliary_loss()).backward()
    assert torch.isfinite(y).all()
    for e in (1, 2, 3):
        for name, p in layer.experts[e].named_parameters():
            assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p.grad)), (e, name)
    assert [n for n, p in layer.named_parameters() if p.grad is None] == ['w_noise']  # no noise in eval
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_cv_squared_and_auxiliary_loss_wrapper():
    assert cv_squared(torch.tensor([2.0])) == 0 and cv_squared(torch.tensor([1.0, 1.0])) == 0
    assert torch.isclose(cv_squared(torch.tensor([1.0, 3.0])), torch.tensor(2.0 / 4.0))
    layer = _moe().float().train()
    criterion = AuxiliaryLoss(lambda i, o, t: (o - t).square().mean(), [layer], weight=0.5)
    x = torch.randn(4, 3, 5, 5)
    y = layer(x)
    loss = criterion(x, y, torch.zeros_like(y))
    torch.testing.assert_close(loss, y.square().mean() + 0.5 * layer.auxiliary_loss())
    assert criterion.pop_mean() == pytest.approx(layer.auxiliary_loss().item()) and criterion.pop_mean() is None
    with pytest.raises(ValueError, match='auxiliary_loss'):
        AuxiliaryLoss(criterion, [], 1.0)


def test_main_adds_and_logs_the_moe_loss(image_folder, tmp_path):
    out = tmp_path / 'moe'
    flags = ['--model', 'reskanet18_kagn_moe', '--input-size', '16', '--epochs', '1', '--batch-size', '8',
             '--model-kwargs', 'width_scale=0.5', 'stem_type=small', 'moe_experts=2', 'moe_top_k=1']
    assert main.main(common_args(image_folder, out, *flags)) == 0
    row = [line for line in (out / 'log.txt').read_text().splitlines() if line.strip()][-1]
    import json
    value = json.loads(row)['train_moe_aux_loss']
    assert isinstance(value, float) and math.isfinite(value) and value >= 0


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

WAVE2_MODELS = ['densekanet121_kagn', 'densekanet161_kagn', 'densekanet169_kagn', 'densekanet201_kagn',
                'densekanet121_kagn_bn', 'densekanet121_kagn_focal', 'reskanet18_kagn_moe', 'reskanet18_kagn_sa']
TINY_DENSE = dict(block_config=(1, 2, 1, 1), growth_rate=4, num_init_features=8, bn_size=2)


def test_new_models_are_registered_and_swept():
    assert set(timm.list_models('densekanet*')) == {n for n in WAVE2_MODELS if n.startswith('densekanet')}
    assert set(WAVE2_MODELS) <= set(vision_kan.list_models())  # test_models.py sweeps vision_kan.list_models()
    import hubconf
    assert all(callable(getattr(hubconf, n, None)) for n in WAVE2_MODELS)


def test_densenet_layouts_and_bottleneck_convs():
    """DenseNet-121/201 block counts, the channel arithmetic (growth, halving transitions), the bottleneck
    Gram convs of _bn; built at tiny widths (growth 2) to stay fast."""
    tiny = dict(num_classes=0, growth_rate=2, num_init_features=4, bn_size=1)
    for name, blocks in [('densekanet121_kagn', (6, 12, 24, 16)), ('densekanet201_kagn', (6, 12, 48, 32))]:
        model = timm.create_model(name, **tiny)
        assert tuple(len(stage[-1]) for stage in model.stages) == blocks
        chs = 4
        for i, n in enumerate(blocks):
            chs = (chs // 2 if i else chs) + n * 2
        assert model.num_features == chs == model.feature_info[-1]['num_chs']
    model = timm.create_model('densekanet121_kagn_bn', **tiny)
    kinds = {type(m).__name__ for m in model.stages.modules() if hasattr(m, 'basis_weight')}
    assert kinds == {'BottleNeckKAGNConvNd', 'KAGNConvNd'}  # the bottleneck conv and its inner Gram conv
    assert type(model.stem).__name__ == 'BottleNeckKAGNConvNd' and model.pretrained_cfg['url'] == ''


@pytest.mark.parametrize('name, kwargs', [
    ('densekanet121_kagn', dict(TINY_DENSE)),
    ('densekanet121_kagn_focal', dict(TINY_DENSE)),
    ('reskanet18_kagn_moe', dict(width_scale=0.5, moe_experts=2)),
    ('reskanet18_kagn_sa', dict(width_scale=0.5, layers=(1, 1, 1, 1))),
])
def test_features_only_and_gradient_checkpointing(name, kwargs):
    torch.manual_seed(0)
    feats = timm.create_model(name, features_only=True, **kwargs).eval()
    with torch.no_grad():
        maps = feats(torch.randn(2, 3, 64, 64))
    assert len(maps) == 5
    for f, chs, red in zip(maps, feats.feature_info.channels(), feats.feature_info.reduction()):
        assert f.shape == (2, chs, 64 // red, 64 // red)

    model = timm.create_model(name, num_classes=3, **kwargs).eval()  # eval: MoE gates without noise
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    y.sum().backward()
    plain = [p.grad for p in model.parameters()]  # MoE's w_noise: None (no gate noise in eval)
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), y)
    model(x).sum().backward()
    for a, (n, b) in zip(plain, model.named_parameters()):
        assert (a is None) == (b.grad is None) and (a is not None or n.endswith('w_noise')), n
        if a is not None:
            torch.testing.assert_close(b.grad, a)


def test_compile_without_graph_break():
    """A DenseKANet with focal modulation traced whole, and the self-attention block (MoE: its own test)."""
    torch.manual_seed(0)
    dense = timm.create_model('densekanet121_kagn_focal', num_classes=3, block_config=(1, 1), growth_rate=4,
                              num_init_features=8, bn_size=1, attn_kwargs=dict(focal_level=1)).eval()
    attention = KANSelfAttention(4, num_heads=2, gamma_init=1.0).eval()
    for model, x in ((dense, torch.randn(2, 3, 32, 32)), (attention, torch.randn(2, 4, 5, 5))):
        compiled = torch.compile(model, backend='eager', fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
        compiled(x).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_attention_and_moe_by_model_argument():
    vgg = timm.create_model('vggkan11_kagn', num_classes=2, width_scale=0.25, attn_type='self_attention',
                            attn_stages=(-2, -1))
    assert sum(isinstance(m, KANSelfAttention) for m in vgg.modules()) == 2
    res = timm.create_model('reskanet18_kagn', num_classes=2, width_scale=0.5, attn_type='focal', moe_experts=3,
                            moe_top_k=1)
    assert sum(isinstance(m, KANFocalModulation) for m in res.modules()) == 1
    assert sum(isinstance(m, MoEKANConv) for m in res.modules()) == 7  # the second 3x3 conv of blocks 2-8
    dense = timm.create_model('densekanet121_kagn', num_classes=2, attn_type='self_attention', attn_stages=(0, 3),
                              **TINY_DENSE)
    assert sum(isinstance(m, KANSelfAttention) for m in dense.modules()) == 2
    for model in (vgg, res, dense):
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


# ----------------------------------------------------------------------------------------------------------------
# The fused (compiled) basis against the reference
# ----------------------------------------------------------------------------------------------------------------

def _fused_vs_reference(family, backend, monkeypatch):
    monkeypatch.setitem(conv_basis_fused.COMPILE_OPTIONS, 'backend', backend)
    torch.manual_seed(0)
    layer = CONV_KAN_FAMILIES[family](3, 4, 3, padding=1, groups=1).double()
    with torch.no_grad():
        for p in layer.basis.parameters() if layer.basis is not None else ():
            p.add_(torch.rand_like(p) * 0.2)
    x = _x(3, 5, 2) * 1.5
    results = {}
    for name in ('reference', 'fused'):
        xx = x.clone().requires_grad_(True)
        layer.zero_grad()
        with kernels.backend(layer, name):
            y = layer(xx)
            y.backward(torch.cos(y))
        results[name] = [y.detach(), xx.grad] + [p.grad.clone() for p in layer.parameters()]
    for got, want in zip(results['fused'], results['reference']):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('family', ['kan', 'fastkan', 'kaln', 'kagn', 'kabn', 'relukan', 'wavkan', 'bottleneck_kagn'])
def test_fused_basis_graph_matches_reference(family, monkeypatch):
    """The functions torch.compile fuses (the stacked `functions` and the analytic vjp) equal the reference path,
    through AOTAutograd's graph (no code generation: fast). Every basis class once (KACN, KAJN share KALN's)."""
    _fused_vs_reference(family, 'aot_eager', monkeypatch)


def test_fused_basis_inductor_code_matches_reference(monkeypatch):
    """Inductor's generated code (C++ on CPU; on CUDA the same graph becomes Triton) for the Gram basis."""
    _fused_vs_reference('kagn', 'inductor', monkeypatch)


def test_fused_path_only_where_it_applies(monkeypatch):
    x = torch.zeros(1, 1, 2, 2)
    assert not conv_basis_fused.applies(x, nn.SiLU(), 'auto')  # 'auto' on CPU: the reference path
    assert conv_basis_fused.applies(x, nn.SiLU(), 'fused') and conv_basis_fused.applies(x, None, 'fused')
    assert not conv_basis_fused.applies(x, nn.GELU(), 'fused')  # its vjp needs autograd: reference path
    assert not conv_basis_fused.applies(x, nn.SiLU(), 'reference')
