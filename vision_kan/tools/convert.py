"""Convert a published KAT, torch-conv-kan VGG-KAGN or Vision-KAN checkpoint into a vision_kan checkpoint.

    python -m vision_kan.tools.convert kat_tiny_patch16_224_1f3ad3b2....pth out/kat_tiny
    python -m vision_kan.tools.convert vgg_kagn_bn11_v4/model.safetensors out/vgg_kagn_bn11_v4
    python -m vision_kan.tools.convert VisionKAN_best.pth out/visionkan --model-kwargs '{"num_heads": 3}'

The family is told from the keys, the size from the shapes (ViT heads: embed dim / 64 unless --model-kwargs says).
DST (a directory) receives model.pth, the checkpoint main.py's --finetune and the tools (compare, quantize,
plot_kan) read (its config names the model, e.g. vit_grkan_tiny.kat_in1k, so they rebuild the published
architecture), and model.safetensors, the weights alone for timm's `pretrained_cfg_overlay=dict(file=...)` and
torch.hub. The conversion is exact: each family's `checkpoint_filter_fn` (vision_kan.models), tested against
outputs of the original code. A file of another family, a truncated file or a missing key: one line, exit code 2.
"""
import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch

from ..models import vgg_kan, vit_grkan, vit_kan
from ..models._published import PublishedWeightsError, unwrap_state_dict
from ..train.checkpoint import SAFETENSORS_NAME, save_atomic, save_model_safetensors
from ..train.errors import CheckpointError, ConfigError, run_cli

__all__ = ['read_published', 'infer_model', 'convert', 'main']

_VIT_SIZES = {192: 'tiny', 384: 'small', 768: 'base'}
_FAMILIES = {  # family -> a key only its checkpoints have
    'kat': 'blocks.0.mlp.act1.weight_numerator',
    'vision_kan': 'blocks.0.kan.layers.0.spline_linear.weight',
    'vgg_kagn': 'features.0.poly_weights',
}
_FILTERS = {'kat': vit_grkan.checkpoint_filter_fn, 'vision_kan': vit_kan.visionkan_filter_fn,
            'vgg_kagn': vgg_kan.checkpoint_filter_fn}
_EVAL = {  # family -> (input size, eval crop ratio) of its published evaluation
    'kat': (224, 0.875), 'vision_kan': (224, 1.0), 'vgg_kagn': (224, 0.875),
}


def read_published(path: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict in a published file (.pth / .pt / .bin pickles of tensors, or .safetensors).

    Trainer checkpoints are unwrapped ('model' / 'state_dict'; their EMA copies with use_ema). A DeiT-style
    checkpoint's argparse.Namespace of settings is allowed; any other object is refused (weights_only load).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f'convert: {path} does not exist')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            obj = load_file(path, device='cpu')
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated zip / safetensors header, a foreign pickle, not a weights file at all
        raise CheckpointError(f'convert: cannot read {path}: truncated, or not a PyTorch / safetensors file of '
                              f'tensors ({type(e).__name__})') from None
    try:
        return unwrap_state_dict(obj, f'convert: {path}', prefer_ema=use_ema)
    except PublishedWeightsError as e:
        raise CheckpointError(str(e)) from None


def _family(state: Dict[str, Any], path: str) -> str:
    for family, key in _FAMILIES.items():
        if key in state:
            return family
    if any(k.startswith(('stages.', 'blocks.0.mlp.fc1.')) for k in state):
        raise CheckpointError(f'convert: {path} is a vision_kan state dict already: load it with --finetune or '
                              f'timm pretrained_cfg_overlay=dict(file=...)')
    example = next(iter(state), '(none)')
    raise CheckpointError(f'convert: {path} is not a KAT, torch-conv-kan VGG-KAGN or Vision-KAN checkpoint (none of '
                          f'their keys; first key {example!r})')


def _vit_args(state: Dict[str, torch.Tensor], hidden_key: str, default_ratio: float) -> Tuple[str, Dict[str, Any]]:
    """(size, keywords that differ from vit_*_{size}) read off the shapes."""
    for key in ('patch_embed.proj.weight', 'pos_embed', hidden_key):
        if key not in state:
            raise CheckpointError(f'convert: not a complete ViT checkpoint: key {key!r} is missing')
    embed, _, patch, _ = state['patch_embed.proj.weight'].shape  # (D, 3, p, p)
    side = math.isqrt(state['pos_embed'].shape[1] - 1)  # class token + side^2 patches
    depth = 1 + max(int(k.split('.')[1]) for k in state if k.startswith('blocks.'))
    size = _VIT_SIZES.get(embed, 'tiny')
    kwargs: Dict[str, Any] = {}
    if size == 'tiny' and embed != 192:
        kwargs.update(embed_dim=embed, num_heads=max(1, embed // 64))
    if patch != 16:
        kwargs['patch_size'] = patch
    if side * patch != 224:
        kwargs['img_size'] = side * patch
    if depth != 12:
        kwargs['depth'] = depth
    ratio = state[hidden_key].shape[0] / embed
    if ratio != default_ratio:
        kwargs['mlp_ratio'] = ratio
    if 'head.weight' in state:
        kwargs['num_classes'] = state['head.weight'].shape[0]
    return size, kwargs


def _vgg_args(state: Dict[str, torch.Tensor]) -> Tuple[str, Dict[str, Any]]:
    """The model of a torch-conv-kan VGG: a published tag when the shapes are one, else explicit keywords."""
    indices = sorted({int(k.split('.')[1]) for k in state if k.startswith('features.') and k.endswith('beta_weights')})
    stages, last = [], None
    for i in indices:  # a gap in the indices of `features` is a max pool: a new stage
        width = state.get(f'features.{i}.base_conv.0.weight', torch.empty(0)).shape[0]
        if last is None or i != last + 1:
            stages.append([])
        stages[-1].append(int(width))
        last = i
    bottleneck = 'features.0.inner_proj.0.weight' in state
    degree = state['features.0.beta_weights'].numel() - 1
    norm = 'batchnorm2d' if 'features.0.layer_norm.0.running_mean' in state else 'instancenorm2d'
    num_classes = state['classifier.1.weight'].shape[0] if 'classifier.1.weight' in state else 1000
    doubled = {name: [[2 * w for w in s] for s in widths] for name, widths in vgg_kan.VGG_KAN_LAYOUTS.items()}
    published = {('vgg11v2', False, 5, 'instancenorm2d'): 'vggkan11_kagn_v2.tck_in1k',
                 ('vgg11v4', False, 5, 'instancenorm2d'): 'vggkan11_kagn_v4.tck_in1k',
                 ('vgg11v4', True, 5, 'batchnorm2d'): 'vggkan11_kagn_bn_v4.tck_in1k'}
    for (layout, bn, deg, nrm), name in published.items():
        if doubled[layout] == stages and (bn, deg, nrm) == (bottleneck, degree, norm):
            return name, dict(num_classes=num_classes)
    conv_kwargs: Dict[str, Any] = dict(degree=degree, **(dict(dim_reduction=8) if bottleneck else {}))
    return ('vggkan11_kagn_bn' if bottleneck else 'vggkan11_kagn'), dict(
        layout=stages, width_scale=1, norm_layer=norm, conv_kwargs=conv_kwargs, num_classes=num_classes)


def infer_model(state: Dict[str, torch.Tensor], path: str = 'checkpoint') -> Tuple[str, str, Dict[str, Any]]:
    """(family, timm model name, keywords) of the vision_kan model that holds this published state dict."""
    family = _family(state, path)
    if family == 'kat':
        size, kwargs = _vit_args(state, 'blocks.0.mlp.fc1.weight', 4.0)
        return family, f'vit_grkan_{size}.kat_in1k', kwargs
    if family == 'vision_kan':
        size, kwargs = _vit_args(state, 'blocks.0.kan.layers.0.spline_linear.weight', 1.0)
        if size == 'tiny':
            return family, 'vit_fasterkan_tiny.visionkan_in1k', kwargs
        return family, f'vit_fasterkan_{size}', {**vit_kan._PUBLISHED['vit_fasterkan_tiny.visionkan_in1k'], **kwargs}
    return family, *_vgg_args(state)


def convert(src: str, dst: str, model: Optional[str] = None, model_kwargs: Optional[Dict[str, Any]] = None,
            use_ema: bool = False) -> Tuple[Path, Path]:
    """Convert `src` into DST/model.pth (main.py's checkpoint layout) and DST/model.safetensors.

    model / model_kwargs override what is read off the shapes. Returns the two paths. Raises CheckpointError (a
    ValueError) for a file of another family, a truncated file, a missing key or a shape that does not fit.
    """
    state = read_published(src, use_ema)
    family, name, kwargs = infer_model(state, src)
    name = model or name
    kwargs = {**kwargs, **(model_kwargs or {})}
    try:
        net = timm.create_model(name, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f'convert: cannot build {name} with {kwargs}: {str(e).splitlines()[0]}') from None
    try:
        converted = _FILTERS[family](state, net)
    except PublishedWeightsError as e:
        raise CheckpointError(f'convert: {src}: {e}') from None
    net.load_state_dict(converted, strict=True)
    image_size, crop = _EVAL[family]
    config = dict(model=name, model_kwargs={k: v for k, v in kwargs.items() if k not in ('num_classes', 'img_size')},
                  num_classes=getattr(net, 'num_classes', None), input_size=kwargs.get('img_size', image_size),
                  eval_crop_ratio=crop, converted_from=os.path.basename(src), family=family)
    out = Path(dst)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f'convert: cannot create {dst}: {e.strerror}') from None
    payload = {'model': net.state_dict(), 'optimizer': None, 'scaler': None, 'model_ema': None, 'epoch': None,
               'max_accuracy': None, 'num_classes': config['num_classes'], 'config': config, 'rng': None}
    ckpt_path, st_path = out / 'model.pth', out / SAFETENSORS_NAME
    save_atomic(payload, ckpt_path)
    save_model_safetensors(net, st_path, metadata={'model': name, 'converted_from': config['converted_from']})
    return ckpt_path, st_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('src', help='the published file (.pth, .pt, .bin or .safetensors)')
    p.add_argument('dst', help='output directory: model.pth and model.safetensors')
    p.add_argument('--model', default=None, help='timm name (with tag) instead of the one read off the shapes')
    p.add_argument('--model-kwargs', default='{}', help='JSON keywords for the model, over those read off the shapes')
    p.add_argument('--ema', action='store_true', help='take the EMA weights of a trainer checkpoint')
    args = p.parse_args(argv)

    def body():
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as e:
            raise ConfigError(f'--model-kwargs: not JSON ({e.msg})') from None
        if not isinstance(kwargs, dict):
            raise ConfigError('--model-kwargs: expected a JSON object')
        ckpt_path, st_path = convert(args.src, args.dst, args.model, kwargs, args.ema)
        config = torch.load(ckpt_path, map_location='cpu', weights_only=True)['config']
        print(f'{args.src} -> {ckpt_path}, {st_path}: {config["model"]} {config["model_kwargs"] or ""}'.rstrip())

    return run_cli(body)


if __name__ == '__main__':
    raise SystemExit(main())
