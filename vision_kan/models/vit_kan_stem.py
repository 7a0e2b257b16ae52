"""KAN-ViTs whose patch embedding is a small conv-KAN stem instead of one patch-sized linear projection.

Early Convolutions Help Transformers See Better (Xiao et al., 2021) - https://arxiv.org/abs/2106.14881
torch-conv-kan (Gram KAN convolutions) - https://github.com/IvanDrokin/torch-conv-kan

The stem strides to the patch size: patch = 2^k * r (r odd) gives k 3x3 stride-2 conv-KAN layers (each with
BatchNorm; widths embed_dim / 2^(k-1), ..., embed_dim / 2, embed_dim, at least 16) and a final r x r stride-r
nn.Conv2d projection to embed_dim (1x1 when r = 1), as in Xiao et al.'s convolutional stem. An odd patch size gets
one stride-1 KAN conv of embed_dim / 4 channels. The stem is timm's `embed_layer`, so img_size / patch_size / dynamic_img_size work as for
any ViT:

    timm.create_model('vit_kan_tiny_kagnstem', img_size=32, patch_size=4, num_classes=10)  # 2 KAN convs, 8x8 grid
    timm.create_model('vit_kan_tiny_kagnstem', stem_conv='kacn', stem_kwargs=dict(degree=4))
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from timm.layers import PatchEmbed, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from ._conv_kan_common import NormArg, conv_kan_layer
from .vit_kan import _DEIT_SHAPES, _cfg, _create_vit_kan

__all__ = ['ConvKanPatchEmbed']


def _split_patch(patch: int) -> Tuple[int, int]:
    """patch = 2^k * r with r odd -> (k, r)."""
    k = 0
    while patch % 2 == 0:
        patch, k = patch // 2, k + 1
    return k, patch


class ConvKanPatchEmbed(PatchEmbed):
    """timm's PatchEmbed with `proj` a conv-KAN stem striding to the patch size. (B, C, H, W) -> (B, N, D).

    Args (besides timm PatchEmbed's img_size, patch_size, in_chans, embed_dim, norm_layer, flatten, output_fmt,
    bias, strict_img_size, dynamic_img_pad):
        stem_conv: conv-KAN family of the stem layers (a key of CONV_KAN_FAMILIES).
        stem_chs: widths of the KAN layers, one per layer; default embed_dim / 2^(k-1) ... embed_dim (>= 16).
        stem_norm: norm after each KAN layer.
        stem_kwargs: keywords of the conv-KAN family (degree, grid_size, ...).
    """

    def __init__(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            norm_layer: Optional[type] = None,
            flatten: bool = True,
            output_fmt: Optional[str] = None,
            bias: bool = True,
            strict_img_size: bool = True,
            dynamic_img_pad: bool = False,
            stem_conv: str = 'kagn',
            stem_chs: Optional[Sequence[int]] = None,
            stem_norm: NormArg = 'batchnorm2d',
            stem_kwargs: Optional[Dict[str, Any]] = None,
            device=None,
            dtype=None,
    ):
        patch = to_2tuple(patch_size)
        if patch[0] != patch[1] or patch[0] < 1:
            raise ValueError(f'ConvKanPatchEmbed: patch_size must be one positive size (square), got {patch_size!r}')
        super().__init__(img_size, patch, in_chans, embed_dim, norm_layer, flatten, output_fmt, bias,
                         strict_img_size, dynamic_img_pad, device=device, dtype=dtype)
        k, r = _split_patch(patch[0])
        strides = [2] * k if k > 0 else [1]
        if stem_chs is None:  # doubling up to embed_dim; an odd patch's one stride-1 layer at embed_dim / 4
            stem_chs = [max(16, embed_dim // 2 ** (k - 1 - i)) for i in range(k)] if k else [max(16, embed_dim // 4)]
        if len(stem_chs) != len(strides) or any(int(c) < 1 for c in stem_chs):
            raise ValueError(f'ConvKanPatchEmbed: stem_chs must hold {len(strides)} positive widths for patch size '
                             f'{patch[0]}, got {stem_chs!r}')
        conv = conv_kan_layer(stem_conv, stem_norm, owner='ConvKanPatchEmbed', **(stem_kwargs or {}))
        layers: List[nn.Module] = []
        chs = in_chans
        for w, s in zip(stem_chs, strides):
            layers.append(conv(chs, int(w), 3, stride=s, padding=1))  # (B, chs, H, W) -> (B, w, H/s, W/s)
            chs = int(w)
        # r x r stride-r projection to the tokens: (B, chs, H/2^k, W/2^k) -> (B, D, H/p, W/p)
        layers.append(nn.Conv2d(chs, embed_dim, kernel_size=r, stride=r, bias=bias, device=device, dtype=dtype))
        if device is not None or dtype is not None:
            layers = [m.to(device=device, dtype=dtype) for m in layers]
        self.proj = nn.Sequential(*layers)  # replaces PatchEmbed's single patch-sized conv

    def set_input_size(self, img_size=None, patch_size=None) -> None:
        """A new img_size is fine (the stem is convolutional); a new patch size would need another stem."""
        if patch_size is not None and to_2tuple(patch_size) != self.patch_size:
            raise ValueError(f'ConvKanPatchEmbed: the conv-KAN stem is built for patch_size {self.patch_size}; '
                             f'build a new model for patch_size {patch_size!r}')
        super().set_input_size(img_size=img_size)


def _create_vit_kan_stem(variant: str, kan_type: str, pretrained: bool = False, stem_conv: str = 'kagn',
                         stem_chs: Optional[Sequence[int]] = None, stem_norm: NormArg = 'batchnorm2d',
                         stem_kwargs: Optional[Dict[str, Any]] = None, **kwargs) -> VisionTransformer:
    """A KAN-ViT (vit_kan's builder) whose embed_layer is a ConvKanPatchEmbed with these stem arguments."""
    kwargs.setdefault('embed_layer', partial(ConvKanPatchEmbed, stem_conv=stem_conv, stem_chs=stem_chs,
                                             stem_norm=stem_norm, stem_kwargs=stem_kwargs))
    return _create_vit_kan(variant, kan_type, pretrained, **kwargs)


def _model_args(size: str, **kwargs) -> Dict[str, Any]:
    # DeiT shape, patch 16, qkv bias on, hidden width = embed dim (vit_kan's shape)
    return dict(patch_size=16, mlp_ratio=1.0, qkv_bias=True, **_DEIT_SHAPES[size], **kwargs)


_STEM_CFG = dict(first_conv='patch_embed.proj.0')

default_cfgs = generate_default_cfgs({
    'vit_kan_tiny_kagnstem.untrained': _cfg(**_STEM_CFG),
    'vit_fasterkan_tiny_kagnstem.untrained': _cfg(**_STEM_CFG),
    'vit_fasterkan_tiny_kacnstem.untrained': _cfg(**_STEM_CFG),
})


@register_model
def vit_kan_tiny_kagnstem(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """vit_kan_tiny (B-spline KAN MLPs) with a Gram conv-KAN stem: 4 stride-2 KAGN convs 24-48-96-192, 1x1 proj."""
    return _create_vit_kan_stem('vit_kan_tiny_kagnstem', 'kan', pretrained, **dict(_model_args('tiny'), **kwargs))


@register_model
def vit_fasterkan_tiny_kagnstem(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """vit_fasterkan_tiny (RSWAF KAN MLPs) with a Gram conv-KAN stem."""
    model_args = _model_args('tiny')
    return _create_vit_kan_stem('vit_fasterkan_tiny_kagnstem', 'fasterkan', pretrained, **dict(model_args, **kwargs))


@register_model
def vit_fasterkan_tiny_kacnstem(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """vit_fasterkan_tiny with a Chebyshev (KACN) conv-KAN stem."""
    model_args = dict(_model_args('tiny'), stem_conv='kacn')
    return _create_vit_kan_stem('vit_fasterkan_tiny_kacnstem', 'fasterkan', pretrained, **dict(model_args, **kwargs))
