"""Vision Transformers with group-rational KAN (GR-KAN) MLPs, the block of KAT.

Kolmogorov-Arnold Transformer (Yang & Wang, 2024) - https://arxiv.org/abs/2409.10594

Each block's MLP is rational (identity init) -> fc1 -> rational (swish init) -> fc2, rationals of orders (5, 4)
shared within 8 channel groups; mlp_ratio 4, so the parameter count is DeiT's plus 160 rational coefficients a
block. On CUDA the rationals run as one fused Triton kernel each way (vision_kan.layers.kernels.rational_triton).

Published weights: the `.kat_in1k` / `.kat_vitft_in1k` tags are KAT's ImageNet checkpoints (github.com/Adamdad/kat),
converted by `checkpoint_filter_fn`. KAT's released kernels (rational_kat_cu, CUDA and Triton) divide by
Q = 1 + sum_j |b_j| |x|^j rather than the paper's 1 + |sum_j b_j x^j|, so these tags build the rationals with
`rational_denominator='sum_abs'` (reference torch path; the fused kernel computes the paper's form).
"""
import re
from typing import Any, Dict

import torch
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter_fn

from vision_kan.layers import GroupRational

from ._published import PublishedWeightsError, check_converted, require_keys, tag_model_args, unwrap_state_dict
from .vit_kan import _DEIT_SHAPES, _cfg, _create_vit_kan

__all__ = ['checkpoint_filter_fn']

_ACT_RE = re.compile(r'^blocks\.(\d+)\.mlp\.act([12])\.(weight_numerator|weight_denominator)$')


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """KAT (Adamdad/kat, katransformer.KATVisionTransformer) checkpoint -> vit_grkan_* state dict.

    KAT's MLP is act1 -> fc1 -> act2 -> fc2 with KAT_Group rationals: mlp.act{j}.weight_numerator (1, 6), shared
    by every group, and weight_denominator (groups, 4). Ours keeps each rational inside its linear layer,
    mlp.fc{j}.rational, with one numerator row per group: the shared row is repeated. Everything else is timm's
    ViT under the same names. A vision_kan state dict passes as is. The model must divide like KAT's kernels
    (`rational_denominator='sum_abs'`, what the `.kat_*` tags build).
    """
    family = 'KAT checkpoint'
    state = unwrap_state_dict(state_dict, family)
    if 'blocks.0.mlp.fc1.rational.weight_numerator' in state:  # already ours
        return check_converted(state, model, 'vision_kan checkpoint')
    require_keys(state, ('patch_embed.proj.weight', 'blocks.0.mlp.act1.weight_numerator',
                         'blocks.0.mlp.act1.weight_denominator'), family, 'a KAT (ViT with GR-KAN MLPs) state dict')
    for name, m in model.named_modules():
        if isinstance(m, GroupRational) and m.denominator != 'sum_abs':
            raise PublishedWeightsError(
                f"KAT checkpoint: {name} divides by 1 + |sum b_j x^j|, KAT's kernels by 1 + sum |b_j||x|^j: build "
                f"vit_grkan_*.kat_in1k or pass kan_kwargs=dict(rational_denominator='sum_abs')")
    out = {}
    for k, v in state.items():
        m = _ACT_RE.match(k)
        if not m:
            out[k] = v
            continue
        if m[3] == 'weight_numerator':  # (1, m + 1) shared -> (groups, m + 1), groups = the denominator's rows
            den = state.get(f'blocks.{m[1]}.mlp.act{m[2]}.weight_denominator')
            groups = den.shape[0] if den is not None else v.shape[0]
            v = v.reshape(-1, v.shape[-1]).expand(groups, -1).clone() if v.shape[0] != groups else v
        out[f'blocks.{m[1]}.mlp.fc{m[2]}.rational.{m[3]}'] = v
    out = vit_filter_fn(out, model)  # timm's: resamples pos_embed for another image size
    return check_converted(out, model, family)


def _model_args(size: str, **kwargs):
    return dict(patch_size=16, mlp_ratio=4.0, qkv_bias=True, **_DEIT_SHAPES[size], **kwargs)


_KAT_URL = 'https://huggingface.co/adamdad/kat_pretained/resolve/main/'
_KAT_ARGS = dict(kan_kwargs=dict(rational_denominator='sum_abs'))
# tag -> the architecture options its checkpoint needs; a variant's first tag is its default (_published)
_PUBLISHED = {f'vit_grkan_{size}.{tag}': _KAT_ARGS for size in ('tiny', 'small', 'base')
              for tag in ('kat_in1k', 'kat_vitft_in1k')}


def _kat_cfg(file: str, top1: str, setup: str) -> Dict[str, Any]:
    # KAT's own cfg (katransformer.default_cfgs): 224 px, crop 0.875, bicubic, ImageNet mean/std
    return _cfg(url=_KAT_URL + file, license='mit', origin_url='https://github.com/Adamdad/kat',
                paper_ids='arXiv:2409.10594',
                notes=(f'KAT (github.com/Adamdad/kat, README "Model Checkpoints"): ImageNet-1k top-1 {top1}, {setup}',))


default_cfgs = generate_default_cfgs({
    'vit_grkan_tiny.kat_in1k': _kat_cfg(
        'kat_tiny_patch16_224_1f3ad3b2e69821f3d412f2924cf159a0e266f142d739cb68f68f796f5a0fe289.pth', '74.6',
        'from scratch'),
    'vit_grkan_tiny.kat_vitft_in1k': _kat_cfg(
        'kat_tiny_patch16_224-finetune_64f124d003803e4a7e1aba1ba23500ace359b544e8a5f0110993f25052e402fb.pth', '75.7',
        'initialised from ViT'),
    'vit_grkan_tiny.untrained': _cfg(),
    'vit_grkan_small.kat_in1k': _kat_cfg(
        'kat_small_patch16_224_32487885cf13d2c14e461c9016fac8ad43f7c769171f132530941e930aeb5fe2.pth', '81.2',
        'from scratch'),
    'vit_grkan_small.kat_vitft_in1k': _kat_cfg(
        'kat_small_patch_224-finetune_3ae087a4c28e2993468eb377d5151350c52c80b2a70cc48ceec63d1328ba58e0.pth', '82.0',
        'initialised from ViT'),
    'vit_grkan_small.untrained': _cfg(),
    'vit_grkan_base.kat_in1k': _kat_cfg(
        'kat_base_patch16_224_abff874d925d756d15cde97303f772a3460ddbd44b9c53fb9ce5cf15be230fb6.pth', '82.3',
        'from scratch'),
    'vit_grkan_base.kat_vitft_in1k': _kat_cfg(
        'kat_base_patch16_224-finetune_440bf1ead9dd8ecab642078cfb60ae542f1fa33ca65517260501e02c011e38f2.pth', '82.8',
        'initialised from ViT'),
    'vit_grkan_base.untrained': _cfg(),
})


def _create(variant: str, size: str, pretrained: bool, kwargs: Dict[str, Any]) -> VisionTransformer:
    kwargs = tag_model_args(variant, pretrained, kwargs, _PUBLISHED)
    return _create_vit_kan(variant, 'grkan', pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                           **dict(_model_args(size), **kwargs))


@register_model
def vit_grkan_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Tiny/16 (DeiT-Ti shape) with GR-KAN MLPs (KAT-T)."""
    return _create('vit_grkan_tiny', 'tiny', pretrained, kwargs)


@register_model
def vit_grkan_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small/16 (DeiT-S shape) with GR-KAN MLPs (KAT-S)."""
    return _create('vit_grkan_small', 'small', pretrained, kwargs)


@register_model
def vit_grkan_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Base/16 (DeiT-B shape) with GR-KAN MLPs (KAT-B)."""
    return _create('vit_grkan_base', 'base', pretrained, kwargs)
