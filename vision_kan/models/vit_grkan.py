"""Vision Transformers with group-rational KAN (GR-KAN) MLPs, the block of KAT.

Kolmogorov-Arnold Transformer (Yang & Wang, 2024) - https://arxiv.org/abs/2409.10594

Each block's MLP is rational (identity init) -> fc1 -> rational (swish init) -> fc2, rationals of orders (5, 4)
shared within 8 channel groups; mlp_ratio 4, so the parameter count is DeiT's plus 160 rational coefficients a
block. On CUDA the rationals run as one fused Triton kernel each way (vision_kan.layers.kernels.rational_triton).
"""
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from .vit_kan import _DEIT_SHAPES, _cfg, _create_vit_kan

__all__ = []


def _model_args(size: str, **kwargs):
    return dict(patch_size=16, mlp_ratio=4.0, qkv_bias=True, **_DEIT_SHAPES[size], **kwargs)


default_cfgs = generate_default_cfgs({
    'vit_grkan_tiny.untrained': _cfg(),
    'vit_grkan_small.untrained': _cfg(),
    'vit_grkan_base.untrained': _cfg(),
})


@register_model
def vit_grkan_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Tiny/16 (DeiT-Ti shape) with GR-KAN MLPs (KAT-T)."""
    return _create_vit_kan('vit_grkan_tiny', 'grkan', pretrained, **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_grkan_small(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small/16 (DeiT-S shape) with GR-KAN MLPs (KAT-S)."""
    return _create_vit_kan('vit_grkan_small', 'grkan', pretrained, **dict(_model_args('small'), **kwargs))


@register_model
def vit_grkan_base(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Base/16 (DeiT-B shape) with GR-KAN MLPs (KAT-B)."""
    return _create_vit_kan('vit_grkan_base', 'grkan', pretrained, **dict(_model_args('base'), **kwargs))
