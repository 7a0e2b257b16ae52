"""VGG-KAN: VGG stage layouts whose every convolution is a Kolmogorov-Arnold convolution.

Very Deep Convolutional Networks (Simonyan & Zisserman, 2014) - https://arxiv.org/abs/1409.1556
torch-conv-kan (VGG-KAN, its v2/v4 layouts, the bottleneck Gram conv) - https://github.com/IvanDrokin/torch-conv-kan

The layouts are torch-conv-kan's: VGG 11/13/16/19 at a quarter of VGG's widths, times `width_scale` (2 gives the
widths of its ImageNet models, the default here). 'v2' adds a sixth group of two convs after a fifth pool, 'v4'
the same with twice the width. Every 3x3 conv is a conv-KAN layer of the family `conv_type` followed by a norm
(BatchNorm by default; torch-conv-kan used InstanceNorm: `norm_layer='instancenorm2d'`); the head is a global
average pool, dropout and a linear (or KAN) classifier.

Names: `vggkan{11,13,16,19}_{family}[_bn][_v2|_v4]`. `_bn` is torch-conv-kan's "BN" = the *bottleneck* Gram conv
(1x1 squeeze -> Gram conv -> 1x1 expand, plus the base conv), not batch norm. Any other combination by keywords:

    timm.create_model('vggkan11_kagn', layout='vgg13v4', conv_type='kajn', conv_kwargs=dict(degree=4))
    timm.create_model('vggkan11_kagn', features_only=True, out_indices=(2, 3, 4))   # stage feature maps
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._conv_kan_common import NormArg, PooledCNN, PooledHead, conv_kan_layer, pooled_cnn_cfg, stage_attention

__all__ = ['VGGKAN', 'VGG_KAN_LAYOUTS']


def _with_v2(groups: Tuple[Tuple[int, ...], ...], last: int) -> Tuple[Tuple[int, ...], ...]:
    return groups + ((last, last),)


# conv widths per group (before width_scale); a 2x2 max pool stands between consecutive groups
_V1 = {
    'vgg11': ((16,), (32,), (64, 64), (128, 128), (128, 128)),
    'vgg13': ((16, 16), (32, 32), (64, 64), (128, 128), (128, 128)),
    'vgg16': ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128), (128, 128, 128)),
    'vgg19': ((16, 16), (32, 32), (64, 64, 64, 64), (128, 128, 128, 128), (128, 128, 128, 128)),
}
VGG_KAN_LAYOUTS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    **_V1,
    **{f'{k}v2': _with_v2(v, 128) for k, v in _V1.items()},
    **{f'{k}v4': _with_v2(v, 256) for k, v in _V1.items()},
}


class VGGKAN(PooledCNN):
    """VGG of conv-KAN layers: stages of 3x3 KAN convs (stage i > 0 opens with a 2x2 max pool), pooled head.

    Stage i outputs width_scale * layout[i][-1] channels at stride 2^i; `feature_info` lists every stage.

    Args:
        layout: a key of VGG_KAN_LAYOUTS ('vgg11', 'vgg11v2', 'vgg11v4', ..., 'vgg19v4').
        conv_type: conv-KAN family, a key of vision_kan.layers.kan_conv_families.CONV_KAN_FAMILIES.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none (pooled features out).
        width_scale: multiplies every layout width.
        norm_layer: norm after every conv (None, 'batchnorm2d', 'instancenorm2d', a timm norm name or a class).
        conv_kwargs: the family's keywords (degree, grid_size, num_grids, dropout, act_layer, dim_reduction, ...).
        global_pool: timm pool type of the head.
        drop_rate: dropout before the classifier.
        head_type: 'linear' or a KAN layer name ('kan', 'fasterkan', 'grkan') for the classifier.
        head_kwargs: keywords of a KAN classifier.
        attn_type: None, 'self_attention' or 'focal': a KAN attention block at the end of the stages attn_stages.
        attn_stages: stage indices (negative from the end) that get the attention block.
        attn_kwargs: the block's keywords (num_heads, focal_level, conv_type, conv_kwargs, ...).
    """

    def __init__(
            self,
            layout: str = 'vgg11',
            conv_type: str = 'kagn',
            in_chans: int = 3,
            num_classes: int = 1000,
            width_scale: float = 2.0,
            norm_layer: NormArg = 'batchnorm2d',
            conv_kwargs: Optional[Dict[str, Any]] = None,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            head_type: str = 'linear',
            head_kwargs: Optional[Dict[str, Any]] = None,
            attn_type: Optional[str] = None,
            attn_stages: Tuple[int, ...] = (-1,),
            attn_kwargs: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if layout not in VGG_KAN_LAYOUTS:
            raise ValueError(f'VGGKAN: layout must be one of {sorted(VGG_KAN_LAYOUTS)}, got {layout!r}')
        if not width_scale > 0:
            raise ValueError(f'VGGKAN: width_scale must be > 0, got {width_scale!r}')
        conv = conv_kan_layer(conv_type, norm_layer, owner='VGGKAN', **(conv_kwargs or {}))
        attention = stage_attention(attn_type, attn_stages, len(VGG_KAN_LAYOUTS[layout]), conv_type, 'VGGKAN',
                                    **(attn_kwargs or {}))
        self.num_classes, self.layout, self.conv_type = num_classes, layout, conv_type
        self.grad_checkpointing = False

        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        chs = in_chans
        for i, widths in enumerate(VGG_KAN_LAYOUTS[layout]):
            layers: List[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if i > 0 else []
            for w in widths:
                out = max(1, int(round(w * width_scale)))
                layers.append(conv(chs, out, 3, padding=1))  # (B, chs, H, W) -> (B, out, H, W)
                chs = out
            block = attention(i, chs)
            if block is not None:
                layers.append(block)
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=chs, reduction=2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        self.head = PooledHead(chs, num_classes, global_pool, drop_rate, head_type, head_kwargs)
        self.head_hidden_size = self.head.num_features

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(self.stages, x)  # (B, C, H, W) -> (B, num_features, H / 2^(stages-1), ...)


def _create_vgg_kan(variant: str, pretrained: bool = False, **kwargs) -> VGGKAN:
    layout = kwargs.get('layout', 'vgg11')
    num_stages = len(VGG_KAN_LAYOUTS.get(layout, ()))
    out_indices = kwargs.pop('out_indices', tuple(range(num_stages)))  # every stage, stride 1 to 2^(n-1)
    return build_model_with_cfg(
        VGGKAN, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return pooled_cnn_cfg('stages.0.0', **{'pool_size': (14, 14), **kwargs})


default_cfgs = generate_default_cfgs({
    'vggkan11_kagn.untrained': _cfg(),
    'vggkan13_kagn.untrained': _cfg(),
    'vggkan16_kagn.untrained': _cfg(),
    'vggkan19_kagn.untrained': _cfg(),
    'vggkan11_kagn_v2.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kagn_v4.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kagn_bn.untrained': _cfg(),
    'vggkan11_kagn_bn_v4.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kacn.untrained': _cfg(),
    'vggkan16_kacn.untrained': _cfg(),
    'vggkan11_kaln.untrained': _cfg(),
    'vggkan11_fastkan.untrained': _cfg(),
    'vggkan11_kan.untrained': _cfg(),
})


@register_model
def vggkan11_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Gram (KAGN) convs, degree 3."""
    model_args = dict(layout='vgg11', conv_type='kagn')
    return _create_vgg_kan('vggkan11_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan13_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-13 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg13', conv_type='kagn')
    return _create_vgg_kan('vggkan13_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan16_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-16 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg16', conv_type='kagn')
    return _create_vgg_kan('vggkan16_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan19_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-19 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg19', conv_type='kagn')
    return _create_vgg_kan('vggkan19_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_v2(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v2 layout (a sixth group of two 256-wide convs), Gram convs: torch-conv-kan's ImageNet VGG-KAGN-11v2
    shape: degree 5."""
    model_args = dict(layout='vgg11v2', conv_type='kagn', conv_kwargs=dict(degree=5))
    return _create_vgg_kan('vggkan11_kagn_v2', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_v4(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v4 layout (a sixth group of two 512-wide convs), Gram convs."""
    model_args = dict(layout='vgg11v4', conv_type='kagn')
    return _create_vgg_kan('vggkan11_kagn_v4', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_bn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, bottleneck Gram convs (squeeze by 8)."""
    model_args = dict(layout='vgg11', conv_type='bottleneck_kagn', conv_kwargs=dict(dim_reduction=8))
    return _create_vgg_kan('vggkan11_kagn_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_bn_v4(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v4 layout, bottleneck Gram convs of degree 5 squeezing by 8: torch-conv-kan's VGG-KAGN-BN-11v4
    (7.25M parameters, ImageNet top-1 68.5 as published)."""
    model_args = dict(layout='vgg11v4', conv_type='bottleneck_kagn', conv_kwargs=dict(degree=5, dim_reduction=8))
    return _create_vgg_kan('vggkan11_kagn_bn_v4', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kacn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Chebyshev (KACN) convs."""
    model_args = dict(layout='vgg11', conv_type='kacn')
    return _create_vgg_kan('vggkan11_kacn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan16_kacn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-16 layout, Chebyshev (KACN) convs."""
    model_args = dict(layout='vgg16', conv_type='kacn')
    return _create_vgg_kan('vggkan16_kacn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kaln(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Legendre (KALN) convs."""
    model_args = dict(layout='vgg11', conv_type='kaln')
    return _create_vgg_kan('vggkan11_kaln', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_fastkan(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, FastKAN (Gaussian RBF) convs."""
    model_args = dict(layout='vgg11', conv_type='fastkan')
    return _create_vgg_kan('vggkan11_fastkan', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kan(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, B-spline KAN convs."""
    model_args = dict(layout='vgg11', conv_type='kan')
    return _create_vgg_kan('vggkan11_kan', pretrained, **dict(model_args, **kwargs))
