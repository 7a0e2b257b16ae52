"""Published checkpoints (KAT, torch-conv-kan VGG-KAGN, Vision-KAN) load into vision_kan models and compute what
the original code computes; the convert tool; model.safetensors from main.py. No network.

The golden fixtures (tests/fixtures/, made by make_fixtures.py from the original repositories, commits in
manifest.json) hold each original model's state dict at a tiny size, an input and the original's output.
"""
import argparse
import json
import urllib.error
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import main
import vision_kan  # noqa: F401  (registers the models in timm)
from conftest import TINY_VIT, common_args, make_image_folder
from vision_kan.models import vgg_kan, vit_grkan, vit_kan
from vision_kan.layers import GroupRational
from vision_kan.models._published import PublishedWeightsError
from vision_kan.tools import convert as convert_tool
from vision_kan.train.checkpoint import load_checkpoint, load_model_weights
from vision_kan.train.offline_eval import model_from_checkpoint

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
REPO = FIXTURES.parents[1]
MANIFEST = json.loads((FIXTURES / 'manifest.json').read_text())

_VIT = dict(img_size=32, patch_size=8, depth=2, num_classes=10)
_VGG = dict(layout=((4,), (8,), (8, 8)), width_scale=1, num_classes=10)
# fixture family -> (file, tagged model, untagged model, tiny keywords, filter); keywords from make_fixtures.py
FAMILIES = {
    'kat': ('kat_tiny.pth', 'vit_grkan_tiny.kat_in1k', 'vit_grkan_tiny',
            dict(_VIT, embed_dim=32, num_heads=2), vit_grkan.checkpoint_filter_fn),
    'vision_kan': ('visionkan_tiny.pth', 'vit_fasterkan_tiny.visionkan_in1k', 'vit_fasterkan_tiny',
                   dict(_VIT, embed_dim=24, num_heads=3, mlp_ratio=16 / 24), vit_kan.visionkan_filter_fn),
    'vgg_kagn': ('vgg_kagn_tiny.safetensors', 'vggkan11_kagn_v2.tck_in1k', 'vggkan11_kagn_v2', _VGG,
                 vgg_kan.checkpoint_filter_fn),
    'vgg_kagn_bn': ('vgg_kagn_bn_tiny.safetensors', 'vggkan11_kagn_bn_v4.tck_in1k', 'vggkan11_kagn_bn_v4', _VGG,
                    vgg_kan.checkpoint_filter_fn),
}


def _original(file: str):
    path = FIXTURES / file
    state = load_file(str(path)) if file.endswith('.safetensors') else torch.load(path, weights_only=True)
    io = load_file(str(FIXTURES / f'{path.stem}_io.safetensors'))
    return state, io['input'], io['output']


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).abs().max() / ref.abs().max()).item()


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_fixtures_are_small_and_recorded():
    assert sum(p.stat().st_size for p in FIXTURES.iterdir() if p.suffix in ('.pth', '.safetensors')) < 1_000_000
    for family, (file, *_rest) in FAMILIES.items():
        assert MANIFEST['families'][family]['file'] == file
    assert all('@' in url and len(url.split('@')[1]) == 40 for url in MANIFEST['sources'].values())


@pytest.mark.parametrize('family', list(FAMILIES))
def test_filter_reproduces_the_original_output(family):
    file, tagged, _, kwargs, filter_fn = FAMILIES[family]
    state, x, ref = _original(file)
    model = timm.create_model(tagged, **kwargs)
    model.load_state_dict(filter_fn(state, model), strict=True)
    assert _rel(_out(model, x), ref) <= 1e-5


@pytest.mark.parametrize('family', list(FAMILIES))
def test_timm_pretrained_from_the_published_file(family):
    """The untagged name with pretrained=True takes the default (published) tag, its architecture and filter."""
    file, tagged, untagged, kwargs, _ = FAMILIES[family]
    _, x, ref = _original(file)
    overlay = dict(file=str(FIXTURES / file), num_classes=10)
    model = timm.create_model(untagged, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    assert model.pretrained_cfg['tag'] == tagged.split('.')[1]
    assert _rel(_out(model, x), ref) <= 1e-5


def test_published_cfgs_point_at_the_published_files():
    cfg = timm.models.get_pretrained_cfg('vit_grkan_tiny.kat_in1k')
    assert cfg.url.endswith('kat_tiny_patch16_224_1f3ad3b2e69821f3d412f2924cf159a0e266f142d739cb68f68f796f5a0fe289.pth')
    assert (cfg.interpolation, cfg.crop_pct, cfg.mean) == ('bicubic', 0.875, (0.485, 0.456, 0.406))
    assert timm.models.get_pretrained_cfg('vggkan11_kagn_bn_v4.tck_in1k').hf_hub_id == 'brivangl/vgg_kagn_bn11_v4'
    assert timm.models.get_pretrained_cfg('vggkan11_kagn_v2.tck_in1k').interpolation == 'bilinear'
    assert timm.models.get_pretrained_cfg('vit_fasterkan_tiny.visionkan_in1k').crop_pct == 1.0
    # without weights and without a tag: our own architecture, and its cfg says so
    plain = timm.create_model('vit_grkan_tiny', img_size=32)
    assert plain.pretrained_cfg['tag'] == 'untrained' and plain.blocks[0].mlp.fc1.rational.denominator == 'abs_sum'


@pytest.mark.parametrize('family, fragment', [
    ('kat', "rational_denominator='sum_abs'"),
    ('vision_kan', 'denominator=0.33'),
    ('vgg_kagn', "norm_layer='instancenorm2d'"),
])
def test_our_default_architecture_refuses_in_one_line(family, fragment):
    file, _, untagged, kwargs, filter_fn = FAMILIES[family]
    state, _, _ = _original(file)
    model = timm.create_model(untagged, **kwargs)  # no tag: our own denominator / RSWAF width / norm
    with pytest.raises(ValueError) as e:
        filter_fn(state, model)
    assert fragment in str(e.value) and '\n' not in str(e.value)


def test_wrong_family_and_missing_key_raise_value_error():
    kat, _, _ = _original('kat_tiny.pth')
    vgg, _, _ = _original('vgg_kagn_tiny.safetensors')
    vit = timm.create_model('vit_grkan_tiny.kat_in1k', **FAMILIES['kat'][3])
    with pytest.raises(ValueError, match='not a KAT'):
        vit_grkan.checkpoint_filter_fn(vgg, vit)
    with pytest.raises(ValueError, match='not a torch-conv-kan|not a VGG-KAGN'):
        vgg_kan.checkpoint_filter_fn(kat, timm.create_model('vggkan11_kagn_v2.tck_in1k', **_VGG))
    partial = {k: v for k, v in kat.items() if k != 'blocks.1.mlp.act2.weight_denominator'}
    with pytest.raises(PublishedWeightsError, match='missing'):
        vit_grkan.checkpoint_filter_fn(partial, vit)
    partial = {k: v for k, v in vgg.items() if k != 'features.5.poly_weights'}
    with pytest.raises(ValueError, match="features.5.poly_weights' is missing"):
        vgg_kan.checkpoint_filter_fn(partial, timm.create_model('vggkan11_kagn_v2.tck_in1k', **_VGG))


def test_no_network_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(timm.models._builder, 'load_state_dict_from_url', offline)
    monkeypatch.setattr(timm.models._builder, 'load_state_dict_from_hf', offline)
    for name in ('vit_grkan_tiny', 'vggkan11_kagn_bn_v4', 'vit_fasterkan_tiny'):
        with pytest.raises(PublishedWeightsError) as e:
            timm.create_model(name, pretrained=True)
        assert '\n' not in str(e.value) and 'pretrained_cfg_overlay=dict(file=PATH)' in str(e.value)
    assert 'pan.baidu.com' in str(e.value)  # Vision-KAN: published only where timm cannot download


@pytest.mark.parametrize('family, kwargs', [('kat', {'num_heads': 2}), ('vgg_kagn_bn', {})])
def test_convert_gives_a_checkpoint_and_safetensors_with_the_original_output(family, kwargs, tmp_path):
    file, _, untagged, model_kwargs, _ = FAMILIES[family]
    _, x, ref = _original(file)
    ckpt_path, st_path = convert_tool.convert(str(FIXTURES / file), str(tmp_path / 'out'), model_kwargs=kwargs)
    model, info = model_from_checkpoint(str(ckpt_path))  # what compare / quantize / plot_kan use
    assert _rel(_out(model, x), ref) <= 1e-5 and info['num_classes'] == 10
    assert load_checkpoint(ckpt_path)['model'].keys() == load_model_weights(st_path).keys()
    # the safetensors file through timm's loader, and through the hub entry point
    overlay = dict(file=str(st_path), num_classes=10)
    built = timm.create_model(info['model'], pretrained=True, pretrained_cfg_overlay=overlay,
                              **dict(info['model_kwargs'], **model_kwargs))
    assert _rel(_out(built, x), ref) <= 1e-5
    hub = torch.hub.load(str(REPO), untagged, source='local', weights=str(st_path), **model_kwargs)
    assert _rel(_out(hub, x), ref) <= 1e-5


def test_convert_reads_a_deit_style_training_checkpoint(tmp_path):
    """Vision-KAN publishes DeiT main.py's checkpoint: model, model_ema, optimizer and an argparse.Namespace."""
    state, x, ref = _original('visionkan_tiny.pth')
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in state['model'].items()}
    src = tmp_path / 'checkpoint.pth'
    torch.save({'model': state['model'], 'model_ema': ema, 'optimizer': {'state': {}, 'param_groups': []},
                'epoch': 345, 'args': argparse.Namespace(model='deit_tiny_patch16_224_KAN', hdim_kan=16)}, src)
    kwargs = {'num_heads': 3}
    model, _ = model_from_checkpoint(str(convert_tool.convert(str(src), str(tmp_path / 'a'), model_kwargs=kwargs)[0]))
    assert _rel(_out(model, x), ref) <= 1e-5  # the evaluated weights ('model'), not the EMA
    model, _ = model_from_checkpoint(str(convert_tool.convert(str(src), str(tmp_path / 'b'), model_kwargs=kwargs,
                                                              use_ema=True)[0]))
    assert _rel(_out(model, x), ref) > 1e-2


def test_kat_denominator_is_its_kernels_formula():
    torch.manual_seed(0)
    layer = GroupRational(16, groups=4, denominator='sum_abs').double()
    with torch.no_grad():
        layer.weight_numerator.normal_()
        layer.weight_denominator.normal_()
    x = torch.randn(3, 16, dtype=torch.float64) * 2
    a, b = layer.weight_numerator.repeat_interleave(4, 0), layer.weight_denominator.repeat_interleave(4, 0)  # (16, .)
    p = sum(a[:, j] * x ** j for j in range(6))
    q = 1 + sum(b[:, j - 1].abs() * x.abs() ** j for j in range(1, 5))
    torch.testing.assert_close(layer(x), p / q, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match='denominator'):
        GroupRational(16, denominator='kat')


def test_convert_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes((FIXTURES / 'kat_tiny.pth').read_bytes()[:4000])
    kat, _, _ = _original('kat_tiny.pth')
    missing = tmp_path / 'missing.pth'
    torch.save({k: v for k, v in kat.items() if k != 'blocks.0.mlp.fc2.weight'}, missing)
    cases = [(str(truncated), 'truncated'), (str(FIXTURES / 'kat_tiny_io.safetensors'), 'not a KAT'),
             (str(missing), 'missing'), (str(tmp_path / 'absent.pth'), 'does not exist')]
    for src, fragment in cases:
        dst = tmp_path / 'dst'
        assert convert_tool.main([src, str(dst), '--model-kwargs', '{"num_heads": 2}']) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith('error: ') and fragment in err[0], err
        assert not (dst / 'model.pth').exists() and not (dst / 'model.safetensors').exists()
    with pytest.raises(ValueError):
        convert_tool.convert(str(truncated), str(tmp_path / 'dst'))
    # the same files through timm's loader: one-line ValueErrors too
    for file, fragment in ((truncated, 'truncated'), (tmp_path / 'absent.pth', 'does not exist')):
        with pytest.raises(ValueError, match=fragment) as e:
            timm.create_model('vit_grkan_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(file)),
                              **FAMILIES['kat'][3])
        assert '\n' not in str(e.value)


def test_a_safetensors_file_of_our_own_architecture_loads_as_ours(tmp_path):
    """pretrained=True would build KAT's rationals; a vision_kan file records which architecture it holds."""
    from vision_kan.train.checkpoint import save_model_safetensors
    kwargs = FAMILIES['kat'][3]
    ours = timm.create_model('vit_grkan_tiny', **kwargs).eval()
    save_model_safetensors(ours, tmp_path / 'model.safetensors', metadata={'model': 'vit_grkan_tiny'})
    overlay = dict(file=str(tmp_path / 'model.safetensors'), num_classes=10)
    loaded = timm.create_model('vit_grkan_tiny', pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    assert loaded.blocks[0].mlp.fc1.rational.denominator == 'abs_sum' and loaded.pretrained_cfg['tag'] == 'untrained'
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_out(loaded, x), _out(ours, x), rtol=0, atol=0)


def test_main_writes_model_safetensors_and_finetune_reads_it(tmp_path, capsys):
    data = make_image_folder(tmp_path / 'data')
    src = tmp_path / 'src'
    assert main.main(common_args(data, src, *TINY_VIT, '--epochs', '1', '--batch-size', '8', '--model-ema',
                                 '--model-ema-decay', '0.5')) == 0
    weights = load_file(str(src / 'model.safetensors'))
    best = load_checkpoint(src / 'best.pth')
    assert weights.keys() == best['model_ema'].keys()
    for k, v in weights.items():  # the EMA weights, grids included
        torch.testing.assert_close(v, best['model_ema'][k], rtol=0, atol=0)
    # --finetune from the safetensors file, and from a converted published checkpoint with a tagged model
    assert main.main(common_args(data, tmp_path / 'ft', *TINY_VIT, '--epochs', '1', '--batch-size', '8',
                                 '--finetune', str(src / 'model.safetensors'))) == 0
    ckpt_path, _ = convert_tool.convert(str(FIXTURES / 'kat_tiny.pth'), str(tmp_path / 'kat'),
                                        model_kwargs={'num_heads': 2})
    kat = ['--model', 'vit_grkan_tiny.kat_in1k', '--input-size', '32', '--model-kwargs', 'patch_size=8', 'depth=2',
           'embed_dim=32', 'num_heads=2']
    assert main.main(common_args(data, tmp_path / 'ft_kat', *kat, '--epochs', '1', '--batch-size', '8',
                                 '--finetune', str(ckpt_path))) == 0
    assert 'head.weight reset' in capsys.readouterr().out  # 10 published classes -> 3 here
    cut = tmp_path / 'cut.safetensors'  # a truncated weights file: one line, exit 2, before anything is built
    cut.write_bytes((src / 'model.safetensors').read_bytes()[:100])
    assert main.main(common_args(data, tmp_path / 'ft_cut', *TINY_VIT, '--finetune', str(cut))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'not a complete safetensors file' in err and not (tmp_path / 'ft_cut').exists()
