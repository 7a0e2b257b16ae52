"""Vision Transformers whose MLPs are Kolmogorov-Arnold Networks.

KAN: Kolmogorov-Arnold Networks (Liu et al., 2024) - https://arxiv.org/abs/2404.19756
Vision-KAN (FasterKAN MLP in DeiT) - https://github.com/chenziwenhaoshuai/Vision-KAN
DeiT: Data-efficient Image Transformers (Touvron et al., 2021) - https://arxiv.org/abs/2012.12877

timm's `VisionTransformer` with `mlp_layer=KANMlp`: the KAN layers replace the MLP (nothing of timm's MLP stays
behind), every other part is timm's. Default hidden width = embed dim (mlp_ratio 1, Vision-KAN's shape).
"""
from typing import Any, Dict, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vision_kan.layers import kan_mlp_layer

__all__ = []

_DEIT_SHAPES = {
    'tiny': dict(embed_dim=192, depth=12, num_heads=3),
    'small': dict(embed_dim=384, depth=12, num_heads=6),
    'base': dict(embed_dim=768, depth=12, num_heads=12),
}


def _create_vit_kan(
        variant: str,
        kan_type: str,
        pretrained: bool = False,
        distilled: bool = False,
        kan_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs,
):
    """Build a KAN-ViT. `kan_kwargs` go to the KAN layers (grid_size, spline_order, num_grids, ...)."""
    out_indices = kwargs.pop('out_indices', 3)
    kwargs.setdefault('mlp_layer', kan_mlp_layer(kan_type, **(kan_kwargs or {})))
    return build_model_with_cfg(
        VisionTransformerDistilled if distilled else VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


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


default_cfgs = generate_default_cfgs({
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
    return _create_vit_kan('vit_fasterkan_tiny', 'fasterkan', pretrained, **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_fasterkan_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small/16 with FasterKAN (RSWAF) MLPs, hidden 384."""
    return _create_vit_kan('vit_fasterkan_small', 'fasterkan', pretrained, **dict(_model_args('small'), **kwargs))


@register_model
def vit_fasterkan_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Base/16 with FasterKAN (RSWAF) MLPs, hidden 768."""
    return _create_vit_kan('vit_fasterkan_base', 'fasterkan', pretrained, **dict(_model_args('base'), **kwargs))


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
