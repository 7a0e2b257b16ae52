"""The CNN zoo beyond the registry sweep: feature maps, layouts, published shapes, stems, digit-scale KANs."""
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from scipy.special import eval_legendre

import vision_kan
from vision_kan.layers import KANLinear
from vision_kan.layers.kan_conv import BasisKANConv
from vision_kan.layers import KALNLinear, MonomialKANLinear
from vision_kan.models.reskanet import KANBasicBlock, KANBottleneck
from vision_kan.models.vit_kan_stem import ConvKanPatchEmbed


def test_families_are_listed_and_named_apart_from_timm():
    vgg, res = timm.list_models('vgg*kan*'), timm.list_models('reskanet*')
    assert {'vggkan11_kagn', 'vggkan11_kagn_bn_v4', 'vggkan16_kacn', 'vggkan19_kagn'} <= set(vgg)
    assert {f'reskanet{d}_kagn' for d in (18, 34, 50, 101, 152)} | {'reskanet50_kagn_bn'} <= set(res)
    ours = set(vision_kan.list_models())
    assert set(vgg) | set(res) | {'kan_cnn4', 'kan_cnn4_twin', 'kan_kalnet', 'kanvolver', 'vit_kan_tiny_kagnstem',
                                  'vit_fasterkan_tiny_kagnstem'} <= ours


@pytest.mark.parametrize('name, kwargs, size', [
    ('vggkan11_kagn', {}, 32),  # 5 stages, stride 1..16
    ('vggkan11_kagn_bn_v4', {}, 64),  # 6 stages, stride 1..32
    ('reskanet18_kagn', {}, 64),  # stem + 4 stages, stride 2..32
    ('reskanet50_kagn_bn', dict(out_indices=(1, 3, 4)), 64),
    ('reskanet18_kacn', dict(stem_type='small'), 16),  # stride-1 stem, no pool
    ('kan_cnn4', dict(widths=(8, 8, 16, 16)), 32),
    ('kan_cnn4_twin', {}, 32),
])
def test_features_only_matches_feature_info(name, kwargs, size):
    torch.manual_seed(0)
    model = timm.create_model(name, features_only=True, **kwargs).eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 3, size, size))
    info = model.feature_info
    assert len(feats) == len(info.channels()) == len(info.reduction())
    for f, chs, red in zip(feats, info.channels(), info.reduction()):
        assert f.shape == (2, chs, size // red, size // red)
    if 'out_indices' in kwargs:
        assert len(feats) == len(kwargs['out_indices'])


def test_full_model_feature_info_agrees_with_forward_features():
    model = timm.create_model('vggkan11_kagn_v4', num_classes=3).eval()
    last = model.feature_info[-1]
    with torch.no_grad():
        f = model.forward_features(torch.randn(1, 3, 64, 64))
    assert f.shape == (1, model.num_features, 64 // last['reduction'], 64 // last['reduction'])
    assert last['num_chs'] == model.num_features == 512  # v4: 256 * width_scale 2


def test_vgg_kagn_bn_11v4_has_the_published_parameter_count():
    """torch-conv-kan's VGG-KAGN-BN-11v4 (degree 5, squeeze by 8, widths x2): 7.25M parameters on ImageNet."""
    model = timm.create_model('vggkan11_kagn_bn_v4')
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 7.25


def test_conv_family_and_layout_by_keywords():
    model = timm.create_model('vggkan11_kagn', layout='vgg13v2', conv_type='kajn', conv_kwargs=dict(degree=2),
                              width_scale=0.5, norm_layer='instancenorm2d', num_classes=4)
    convs = [m for m in model.modules() if isinstance(m, BasisKANConv)]
    assert len(convs) == 12 and all(type(c).__name__ == 'KAJNConvNd' and c.num_functions == 3 for c in convs)
    assert isinstance(convs[0].norm, nn.InstanceNorm2d) and convs[0].out_channels == 8
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    with pytest.raises(ValueError, match='conv_type'):
        timm.create_model('vggkan11_kagn', conv_type='nope')
    with pytest.raises(ValueError, match='layout'):
        timm.create_model('vggkan11_kagn', layout='vgg12')
    with pytest.raises(ValueError, match='norm_layer'):
        timm.create_model('reskanet18_kagn', norm_layer='nonorm')


def test_reskanet_layouts_blocks_and_identity_start():
    for name, block, counts in [('reskanet34_kagn', KANBasicBlock, (3, 4, 6, 3)),
                                ('reskanet152_kagn', KANBottleneck, (3, 8, 36, 3))]:
        model = timm.create_model(name)
        assert tuple(len(s) for s in model.stages) == counts
        assert all(isinstance(b, block) for s in model.stages for b in s)
    # the last norm of each block starts at zero: a block without a shortcut conv starts as the identity
    model = timm.create_model('reskanet18_kagn', num_classes=2).eval()
    block = model.stages[0][1]
    assert block.downsample is None
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model('reskanet18_kagn', num_classes=3, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    convs = [m for m in model.stages.modules() if isinstance(m, BasisKANConv)]
    calls = []
    for m in convs:
        m.register_forward_hook(lambda *_: calls.append(1))
    grads, forwards = [], []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        calls.clear()
        model(x).square().sum().backward()
        forwards.append(len(calls))
        grads.append([p.grad.clone() for p in model.parameters()])
    # engaged: KAN convs of the checkpointed stages run again in the backward (recomputation; measured: 20 calls
    # without, 36 with timm's checkpoint_seq); without checkpointing each runs once
    assert forwards[0] == len(convs) and len(convs) < forwards[1] <= 2 * len(convs), forwards
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_kan_cnn_and_its_twin_share_the_skeleton():
    kan, twin = timm.create_model('kan_cnn4', num_classes=10), timm.create_model('kan_cnn4_twin', num_classes=10)
    assert kan.feature_info == twin.feature_info
    assert [f['num_chs'] for f in kan.feature_info] == [64, 128, 256, 512]
    assert [c.kernel_size for c in kan.layers] == [(7, 7), (3, 3), (3, 3), (3, 3)]
    assert [m.conv.kernel_size for m in twin.layers] == [(7, 7), (3, 3), (3, 3), (3, 3)]
    assert isinstance(kan.head.fc, KANLinear) and type(twin.head.fc) is nn.Linear
    assert all(isinstance(m.norm, nn.BatchNorm2d) for m in twin.layers)
    assert not any(isinstance(m, BasisKANConv) for m in twin.modules())


@pytest.mark.parametrize('patch, img, n_kan', [(16, 32, 4), (4, 32, 2), (12, 48, 2), (7, 21, 1)])
def test_kagn_stem_strides_to_any_patch_size(patch, img, n_kan):
    model = timm.create_model('vit_fasterkan_tiny_kagnstem', img_size=img, patch_size=patch, depth=1,
                              num_classes=3).eval()
    stem = model.patch_embed
    assert isinstance(stem, ConvKanPatchEmbed) and stem.grid_size == (img // patch, img // patch)
    assert sum(isinstance(m, BasisKANConv) for m in stem.proj) == n_kan
    with torch.no_grad():
        tokens = stem(torch.randn(2, 3, img, img))
        assert tokens.shape == (2, (img // patch) ** 2, 192)
        assert model(torch.randn(2, 3, img, img)).shape == (2, 3)


def test_stem_takes_new_image_sizes_but_not_new_patch_sizes():
    model = timm.create_model('vit_kan_tiny_kagnstem', img_size=32, patch_size=8, depth=1, dynamic_img_size=True)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 64)).shape == (1, 1000)
    model.set_input_size(img_size=64)
    assert model.patch_embed.grid_size == (8, 8) and model.pos_embed.shape[1] == 65
    with pytest.raises(ValueError, match='patch_size'):
        model.set_input_size(patch_size=4)


def test_kaln_layer_is_legendre_of_tanh():
    layer = KALNLinear(3, 2, degree=4)
    x = torch.linspace(-3, 3, 50, dtype=torch.float64)[:, None].expand(-1, 3)
    expected = np.stack([eval_legendre(j, np.tanh(x.numpy())) for j in range(5)], -1)
    np.testing.assert_allclose(layer.legendre(x).numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name, size', [('kan_kalnet', 28), ('kanvolver', 28), ('kan_kalnet_digits', 8),
                                        ('kanvolver_digits', 8)])
def test_digit_models_are_batch_independent_and_take_in_chans(name, size):
    """TorchKAN rescales by the batch min/max, so a sample's output depends on its batch; ours must not."""
    torch.manual_seed(0)
    model = timm.create_model(name, in_chans=3, num_classes=10).eval()
    x = torch.randn(5, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:2], model(x[:2]))
    assert any(isinstance(m, (KALNLinear, MonomialKANLinear)) for m in model.modules())
    assert timm.create_model(name).pretrained_cfg['input_size'] == (1, size, size)
