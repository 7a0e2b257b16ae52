"""Sweep over every registered vision_kan model, plus the KAN-ViT specifics."""
import os
import types

import pytest
import timm
import torch

import vision_kan
from vision_kan.layers import FasterKANLinear, KANLinear, KANMlp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_MODELS = vision_kan.list_models()
VIT_MODELS = [n for n in ALL_MODELS if n.startswith('vit_')]
SMALL = dict(img_size=32, patch_size=16)  # 4 patches: fast on CPU, full width and depth


def _kan_layers(model):
    return [m for m in model.modules() if isinstance(m, (KANLinear, FasterKANLinear))]


def test_registry_lists_every_family():
    assert set(timm.list_models('*kan*')) >= set(ALL_MODELS)
    for name in ['vit_kan_tiny', 'vit_kan_small', 'vit_kan_base',
                 'vit_fasterkan_tiny', 'vit_fasterkan_small', 'vit_fasterkan_base']:
        assert name in ALL_MODELS


def test_names_never_reuse_a_timm_name():
    ours = set(ALL_MODELS)
    theirs = set()
    for module in timm.list_modules():
        if module not in vision_kan.models.MODEL_MODULES:
            theirs.update(timm.list_models(module=module))
    assert not ours & theirs


@pytest.mark.parametrize('name', ALL_MODELS)
def test_model_sweep(name):
    torch.manual_seed(0)
    kwargs = dict(SMALL) if name in VIT_MODELS else {}
    model = timm.create_model(name, num_classes=5, **kwargs)
    cfg = model.pretrained_cfg
    # ViTs are built at 32 px; other fixed-size models (flattening heads) at their size; CNNs at 32 px
    size = 32 if name in VIT_MODELS or not cfg.get('fixed_input_size', False) else cfg['input_size'][-1]
    x = torch.randn(2, cfg['input_size'][0], size, size)

    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 5) and torch.isfinite(out).all()

    # backward reaches every parameter: no dead parameters (Vision-KAN left timm's MLP unused in every block)
    model.train()
    if hasattr(model, 'set_distilled_training'):
        model.set_distilled_training(True)
    out = model(x)
    loss = sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'parameters without gradient: {missing[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    if hasattr(model, 'set_distilled_training'):
        model.set_distilled_training(False)

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert model.forward_head(feats).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize('name', ['vit_kan_tiny', 'vit_fasterkan_tiny'])
def test_state_dict_round_trip_keeps_grids(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, img_size=32, patch_size=8, depth=2).eval()
    layers = [m for m in _kan_layers(model) if hasattr(m, 'update_grid')]
    for layer in layers:  # move the knots on data the layer could see
        layer.update_grid(torch.rand(256, layer.in_features) * 3 - 1.5)
    fresh = timm.create_model(name, num_classes=3, img_size=32, patch_size=8, depth=2).eval()
    fresh.load_state_dict(model.state_dict())
    for a, b in zip(_kan_layers(model), _kan_layers(fresh)):
        assert torch.equal(a.grid, b.grid)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_deit_shapes_hidden_size_and_qkv_bias():
    for name, dim, heads in [('vit_kan_tiny', 192, 3), ('vit_fasterkan_small', 384, 6)]:
        model = timm.create_model(name, img_size=32)
        assert model.embed_dim == dim and len(model.blocks) == 12
        block = model.blocks[0]
        assert block.attn.num_heads == heads and block.attn.qkv.bias is not None
        assert isinstance(block.mlp, KANMlp) and block.mlp.fc1.out_features == dim  # mlp_ratio 1 by default
    model = timm.create_model('vit_kan_tiny', img_size=32, mlp_ratio=4)
    assert model.blocks[0].mlp.fc1.out_features == 768 and model.blocks[0].mlp.fc2.in_features == 768


def test_parameter_counts_have_no_dead_mlp():
    """vit_fasterkan_tiny = DeiT-tiny without its MLPs + 12 blocks of two FasterKAN layers (LayerNorm, linear, bias)."""
    deit = timm.create_model('deit_tiny_patch16_224')
    kan = timm.create_model('vit_fasterkan_tiny')
    mlp = sum(p.numel() for p in deit.blocks[0].mlp.parameters())
    per_layer = 2 * 192 + 192 * 8 * 192 + 192
    expected = sum(p.numel() for p in deit.parameters()) - 12 * mlp + 12 * 2 * per_layer
    assert sum(p.numel() for p in kan.parameters()) == expected


def test_drop_path_reaches_every_block_and_overrides():
    model = timm.create_model('vit_kan_tiny', img_size=64, patch_size=8, num_classes=7, drop_path_rate=0.2)
    probs = [getattr(b.drop_path2, 'drop_prob', 0.0) for b in model.blocks]
    assert probs[0] == 0.0 and all(p > 0 for p in probs[1:]) and abs(probs[-1] - 0.2) < 1e-6
    assert model.patch_embed.patch_size == (8, 8) and model.num_classes == 7
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_pretrained_cfg_filled():
    cfg = timm.create_model('vit_kan_tiny').pretrained_cfg
    assert cfg['input_size'] == (3, 224, 224) and cfg['crop_pct'] == 0.875
    assert cfg['mean'] == timm.data.IMAGENET_DEFAULT_MEAN and cfg['std'] == timm.data.IMAGENET_DEFAULT_STD


def test_kan_init_survives_timm_vit_init():
    """timm's ViT init overwrites every nn.Linear with trunc_normal(0.02); the KAN layers keep their own init."""
    torch.manual_seed(0)
    model = timm.create_model('vit_fasterkan_tiny', img_size=32)
    bound = 1 / (192 * 8) ** 0.5  # FasterKANLinear's uniform init: |w| <= 0.0255, timm's would reach ~0.04
    for block in model.blocks:
        w = block.mlp.fc1.weight
        assert w.abs().max() <= bound and abs(w.std().item() - bound / 3 ** 0.5) < 0.1 * bound
    model = timm.create_model('vit_kan_tiny', img_size=32)
    scaler = model.blocks[3].mlp.fc2.spline_scaler
    assert scaler.abs().max() <= 1 / 192 ** 0.5 + 1e-6 and scaler.std() > 0.02  # kaiming-uniform, fan_in 192


def test_hub_local_load():
    model = torch.hub.load(REPO_ROOT, 'vit_kan_tiny', source='local', num_classes=10, img_size=32, patch_size=4)
    assert model.num_classes == 10
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_hub_has_every_model():
    import importlib.util
    spec = importlib.util.spec_from_file_location('hubconf', os.path.join(REPO_ROOT, 'hubconf.py'))
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if not n.startswith('_') and callable(getattr(hubconf, n))}
    assert entries == set(ALL_MODELS)  # one entrypoint per registered model, nothing else
    built = []
    hubconf._timm = types.SimpleNamespace(create_model=lambda name, **kw: built.append((name, kw)) or name)
    for name in ALL_MODELS:  # each entrypoint builds its own model with the caller's keywords
        assert getattr(hubconf, name)(num_classes=7) == name
    assert built == [(name, {'pretrained': False, 'num_classes': 7}) for name in ALL_MODELS]
