"""Vision Transformers whose MLPs are Kolmogorov-Arnold Networks.

KAN: Kolmogorov-Arnold Networks (Liu et al., 2024) - https://arxiv.org/abs/2404.19756
Vision-KAN (FasterKAN MLP in DeiT) - https://github.com/chenziwenhaoshuai/Vision-KAN
DeiT: Data-efficient Image Transformers (Touvron et al., 2021) - https://arxiv.org/abs/2012.12877

timm's `VisionTransformer` with `mlp_layer=KANMlp`: the KAN layers replace the MLP (nothing of timm's MLP stays
behind), every other part is timm's. Default hidden width = embed dim (mlp_ratio 1, Vision-KAN's shape).

Published weights: `vit_fasterkan_tiny.visionkan_in1k` is Vision-KAN's ImageNet checkpoint (`visionkan_filter_fn`
converts it). Its architecture differs from our default in four places the tag selects: no qkv bias, no KAN bias,
the blocks' LayerNorms at eps 1e-5 (the final norm 1e-6), and the RSWAF width h = 0.33 instead of the grid spacing.
"""
import math
import re
from functools import partial
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Block, VisionTransformer, checkpoint_filter_fn

from vision_kan.layers import FasterKANLinear, kan_mlp_layer

from ._published import (
    PublishedWeightsError, build_published, check_converted, require_keys, requested_tag, tag_model_args,
    unwrap_state_dict,
)

__all__ = ['visionkan_filter_fn']

_DEIT_SHAPES = {
    'tiny': dict(embed_dim=192, depth=12, num_heads=3),
    'small': dict(embed_dim=384, depth=12, num_heads=6),
    'base': dict(embed_dim=768, depth=12, num_heads=12),
}


def _block_with_norm(block_norm_layer: Callable[[int], nn.Module], **kwargs) -> Block:
    """timm's Block with its own norm layer (the model's `norm_layer` then only reaches the final norm)."""
    return Block(**dict(kwargs, norm_layer=block_norm_layer))


def _mlp_with_bias(mlp_layer: Callable[..., nn.Module], mlp_bias: bool, **kwargs) -> nn.Module:
    """The MLP with its own bias setting (timm passes the model's `proj_bias`, shared with the attention)."""
    return mlp_layer(**dict(kwargs, bias=mlp_bias))


def _create_vit_kan(
        variant: str,
        kan_type: str,
        pretrained: bool = False,
        distilled: bool = False,
        kan_kwargs: Optional[Dict[str, Any]] = None,
        pretrained_filter_fn: Callable = checkpoint_filter_fn,
        block_norm_eps: Optional[float] = None,
        mlp_bias: Optional[bool] = None,
        **kwargs,
):
    """Build a KAN-ViT. `kan_kwargs` go to the KAN layers (grid_size, spline_order, num_grids, ...);
    `block_norm_eps` gives the blocks' LayerNorms an eps of their own (Vision-KAN: 1e-5, its final norm 1e-6);
    `mlp_bias` sets the KAN layers' bias apart from the attention's (Vision-KAN: False)."""
    out_indices = kwargs.pop('out_indices', 3)
    kwargs.setdefault('mlp_layer', kan_mlp_layer(kan_type, **(kan_kwargs or {})))
    if mlp_bias is not None:
        kwargs['mlp_layer'] = partial(_mlp_with_bias, kwargs['mlp_layer'], mlp_bias)
    if block_norm_eps is not None:
        kwargs.setdefault('block_fn', partial(_block_with_norm, partial(nn.LayerNorm, eps=block_norm_eps)))
    manual = _MANUAL_DOWNLOAD.get(f'{variant}.{requested_tag(variant, pretrained, kwargs, _MANUAL_DOWNLOAD)}')
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    if pretrained and manual and not (overlay.get('file') or overlay.get('state_dict')):
        raise PublishedWeightsError(manual)
    return build_published(lambda: build_model_with_cfg(
        VisionTransformerDistilled if distilled else VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=pretrained_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    ), variant, pretrained, 'its pretrained cfg (url / Hugging Face hub)', overlay)


_VISIONKAN_RE = re.compile(r'^blocks\.(\d+)\.kan\.layers\.([01])\.(layernorm\.weight|layernorm\.bias|rbf\.grid|'
                           r'spline_linear\.weight)$')
_VISIONKAN_KEYS = {'layernorm.weight': 'norm.weight', 'layernorm.bias': 'norm.bias', 'rbf.grid': 'grid',
                   'spline_linear.weight': 'weight'}
VISIONKAN_RSWAF_H = 0.33  # Vision-KAN's ReflectionalSwitchFunction denominator


def visionkan_filter_fn(state_dict: Dict[str, Any], model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """Vision-KAN (chenziwenhaoshuai/Vision-KAN, models_kan.VisionKAN) checkpoint -> vit_fasterkan_* state dict.

    Each block's `kan` = FasterKAN([d, h, d]): layers.j.{layernorm, rbf.grid, spline_linear} become mlp.fc{j+1}.
    {norm, grid, weight}; the (d' , d * K) spline weight keeps its layout (input-major, grid-minor, as our basis
    is flattened). The block's unused timm MLP (`blocks.i.mlp.*`) is dropped. A vision_kan state dict passes as is.
    The model must compute Vision-KAN's function: RSWAF h = 0.33, block norms at eps 1e-5 (`.visionkan_in1k`).
    """
    family = 'Vision-KAN checkpoint'
    state = unwrap_state_dict(state_dict, family)
    if 'blocks.0.mlp.fc1.grid' in state:  # already ours (a model.safetensors written by vision_kan)
        return check_converted(state, model, 'vision_kan checkpoint')
    require_keys(state, ('patch_embed.proj.weight', 'blocks.0.kan.layers.0.spline_linear.weight'), family,
                 'a Vision-KAN (ViT with FasterKAN blocks) state dict')
    _check_visionkan_model(model)
    out = {}
    for k, v in state.items():
        m = _VISIONKAN_RE.match(k)
        if m:
            out[f'blocks.{m[1]}.mlp.fc{int(m[2]) + 1}.{_VISIONKAN_KEYS[m[3]]}'] = v
        elif not re.match(r'^blocks\.\d+\.(mlp|kan)\.', k):  # the dead timm MLP, any other KAN key: not ours
            out[k] = v
    out = checkpoint_filter_fn(out, model)  # timm's: resamples pos_embed for another image size
    return check_converted(out, model, family)


def _check_visionkan_model(model: nn.Module) -> None:
    """One line naming what differs when the model does not compute Vision-KAN's function."""
    for name, m in model.named_modules():
        if isinstance(m, FasterKANLinear) and not math.isclose(m.inv_h, 1.0 / VISIONKAN_RSWAF_H, rel_tol=1e-12):
            raise PublishedWeightsError(
                f'Vision-KAN checkpoint: {name} has RSWAF width h={1.0 / m.inv_h:.4g}, Vision-KAN uses '
                f'{VISIONKAN_RSWAF_H}: build vit_fasterkan_*.visionkan_in1k or pass kan_kwargs=dict(denominator=0.33)')
    for i, blk in enumerate(getattr(model, 'blocks', [])):
        eps = getattr(blk.norm1, 'eps', None)
        if eps != 1e-5:
            raise PublishedWeightsError(
                f'Vision-KAN checkpoint: blocks.{i}.norm1 has eps {eps}, Vision-KAN\'s block norms use 1e-5: build '
                f'vit_fasterkan_*.visionkan_in1k or pass block_norm_eps=1e-5')


def _model_args(size: str, **kwargs) -> Dict[str, Any]:
    # patch 16, qkv bias on (DeiT), hidden width = embed dim
    return dict(patch_size=16, mlp_ratio=1.0, qkv_bias=True, **_DEIT_SHAPES[size], **kwargs)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'fixed_input_size': True,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'apache-2.0',
        **kwargs,
    }


_VISIONKAN_URL = 'https://pan.baidu.com/s/117ox7oh6zzXLwPMmQ6od1Q?pwd=y1vw'
# tag -> the architecture options its checkpoint needs (see _published.tag_model_args)
_PUBLISHED = {
    'vit_fasterkan_tiny.visionkan_in1k': dict(qkv_bias=False, block_norm_eps=1e-5, mlp_bias=False,
                                              kan_kwargs=dict(denominator=VISIONKAN_RSWAF_H)),
}
_MANUAL_DOWNLOAD = {
    'vit_fasterkan_tiny.visionkan_in1k': (
        f'vit_fasterkan_tiny.visionkan_in1k: Vision-KAN publishes this checkpoint only on Baidu pan ({_VISIONKAN_URL}'
        f'), which timm cannot download: fetch it, then pass pretrained_cfg_overlay=dict(file=PATH) or run '
        f'python -m vision_kan.tools.convert PATH OUT_DIR'),
}

default_cfgs = generate_default_cfgs({
    'vit_fasterkan_tiny.visionkan_in1k': _cfg(
        crop_pct=1.0, origin_url=_VISIONKAN_URL,
        notes=('Vision-KAN (github.com/chenziwenhaoshuai/Vision-KAN, README): ImageNet-1k top-1 64.87, top-5 86.14, '
               'KAN hidden dim 192, epoch 346 (stopped); eval crop ratio 1.0 (its --eval-crop-ratio default)',)),
    'vit_kan_tiny.untrained': _cfg(),
    'vit_kan_small.untrained': _cfg(),
    'vit_kan_base.untrained': _cfg(),
    'vit_fasterkan_tiny.untrained': _cfg(),
    'vit_fasterkan_small.untrained': _cfg(),
    'vit_fasterkan_base.untrained': _cfg(),
    'vit_kan_tiny_distilled.untrained': _cfg(classifier=('head', 'head_dist')),
    'vit_fasterkan_tiny_distilled.untrained': _cfg(classifier=('head', 'head_dist')),
})


@register_model
def vit_kan_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Tiny/16 (DeiT-Ti shape) with B-spline KAN MLPs, hidden 192."""
    return _create_vit_kan('vit_kan_tiny', 'kan', pretrained, **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_kan_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small/16 (DeiT-S shape) with B-spline KAN MLPs, hidden 384."""
    return _create_vit_kan('vit_kan_small', 'kan', pretrained, **dict(_model_args('small'), **kwargs))


@register_model
def vit_kan_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Base/16 (DeiT-B shape) with B-spline KAN MLPs, hidden 768."""
    return _create_vit_kan('vit_kan_base', 'kan', pretrained, **dict(_model_args('base'), **kwargs))


@register_model
def vit_fasterkan_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Tiny/16 with FasterKAN (RSWAF) MLPs, hidden 192: Vision-KAN's block without its dead MLP."""
    kwargs = tag_model_args('vit_fasterkan_tiny', pretrained, kwargs, _PUBLISHED)
    return _create_vit_kan('vit_fasterkan_tiny', 'fasterkan', pretrained, pretrained_filter_fn=visionkan_filter_fn,
                           **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_fasterkan_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small/16 with FasterKAN (RSWAF) MLPs, hidden 384."""
    return _create_vit_kan('vit_fasterkan_small', 'fasterkan', pretrained, pretrained_filter_fn=visionkan_filter_fn,
                           **dict(_model_args('small'), **kwargs))


@register_model
def vit_fasterkan_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Base/16 with FasterKAN (RSWAF) MLPs, hidden 768."""
    return _create_vit_kan('vit_fasterkan_base', 'fasterkan', pretrained, pretrained_filter_fn=visionkan_filter_fn,
                           **dict(_model_args('base'), **kwargs))


@register_model
def vit_kan_tiny_distilled(pretrained: bool = False, **kwargs) -> VisionTransformerDistilled:
    """vit_kan_tiny with DeiT's distillation token and head."""
    return _create_vit_kan(
        'vit_kan_tiny_distilled', 'kan', pretrained, distilled=True, **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_fasterkan_tiny_distilled(pretrained: bool = False, **kwargs) -> VisionTransformerDistilled:
    """vit_fasterkan_tiny with DeiT's distillation token and head."""
    return _create_vit_kan(
        'vit_fasterkan_tiny_distilled', 'fasterkan', pretrained, distilled=True, **dict(_model_args('tiny'), **kwargs))
