"""DenseKANet: DenseNet-BC layouts whose every dense-layer convolution is a Kolmogorov-Arnold convolution.

Densely Connected Convolutional Networks (Huang et al., 2016) - https://arxiv.org/abs/1608.06993
torch-conv-kan (DenseKANet, its bottleneck Gram conv) - https://github.com/IvanDrokin/torch-conv-kan

DenseNet-121/161/169/201 block counts and growth rates. Each dense layer is a 1x1 KAN conv to bn_size * growth
channels then a 3x3 KAN conv to growth channels (each with its norm and, for the Gram and Legendre families, a SiLU),
whose output is concatenated to the layer's input. The stem is a 7x7 stride-2 KAN conv and a 3x3 stride-2 max pool;
between dense blocks a transition (norm, SELU, plain 1x1 conv halving the channels, 2x2 average pool) as in
torch-conv-kan; the head is a global average pool, dropout and a linear (or KAN) classifier.

Names: `densekanet{121,161,169,201}_kagn`, `densekanet121_kagn_bn` (bottleneck Gram convs, torch-conv-kan's "BN",
not batch norm) and `densekanet121_kagn_focal` (a KAN focal-modulation block ends the last dense block). Any family,
depth and block by keywords:

    timm.create_model('densekanet121_kagn', conv_type='kacn', growth_rate=16)
    timm.create_model('densekanet201_kagn', conv_type='bottleneck_kagn', conv_kwargs=dict(dim_reduction=8))  # 201 BN
    timm.create_model('densekanet121_kagn', attn_type='focal', attn_stages=(2, 3))   # focal modulation, 2 stages
    timm.create_model('densekanet121_kagn', features_only=True)                      # 5 feature maps
"""
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._conv_kan_common import NormArg, PooledCNN, conv_kan_layer, pooled_cnn_cfg, resolve_norm, \
    stage_attention

__all__ = ['DenseKANet', 'DenseKANLayer', 'DenseKANBlock', 'DenseTransition']

ConvFactory = Callable[..., nn.Module]


class DenseKANLayer(nn.Module):
    """1x1 KAN conv to bn_size * growth, 3x3 KAN conv to growth: (B, C, H, W) -> (B, growth, H, W)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int, conv: ConvFactory):
        super().__init__()
        self.conv1 = conv(in_chs, bn_size * growth_rate, 1)
        self.conv2 = conv(bn_size * growth_rate, growth_rate, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class DenseKANBlock(nn.ModuleDict):
    """num_layers dense layers, each seeing the concatenation of the block input and every earlier layer's output:
    (B, C, H, W) -> (B, C + num_layers * growth, H, W)."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int, conv: ConvFactory):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f'denselayer{i + 1}', DenseKANLayer(in_chs + i * growth_rate, growth_rate, bn_size, conv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseTransition(nn.Sequential):
    """norm -> SELU -> 1x1 conv (C -> out_chs) -> 2x2 average pool: (B, C, H, W) -> (B, out_chs, H/2, W/2)."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.norm = norm_layer(in_chs)
        self.act = nn.SELU()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseKANet(PooledCNN):
    """DenseNet-BC of conv-KAN layers: KAN stem (+ max pool), dense blocks joined by transitions, pooled head.

    Stage i is (transition for i > 0) + dense block i (+ an attention block when chosen); `feature_info` lists the
    stem and every stage (strides 2, 4, 8, 16, 32 with the max pool).

    Args:
        block_config: dense layers per block, e.g. (6, 12, 24, 16) for DenseNet-121.
        growth_rate: channels each dense layer adds (k in the paper).
        num_init_features: stem width.
        bn_size: the 1x1 conv's width is bn_size * growth_rate.
        compression: a transition keeps int(C * compression) channels.
        conv_type: conv-KAN family, a key of vision_kan.layers.kan_conv_families.CONV_KAN_FAMILIES.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none (pooled features out).
        stem_pool: the 3x3 stride-2 max pool after the stem (False: torch-conv-kan's use_first_maxpool=False).
        norm_layer: norm inside every KAN conv and in the transitions.
        conv_kwargs: the family's keywords (degree, grid_size, dropout, act_layer, dim_reduction, ...).
        attn_type: None, 'self_attention' or 'focal': a KAN attention block at the end of the stages attn_stages.
        attn_stages: stage indices (negative from the end) that get the attention block.
        attn_kwargs: the block's keywords (num_heads, focal_level, conv_type, conv_kwargs, ...).
        global_pool: timm pool type of the head.
        drop_rate: dropout before the classifier.
        head_type: 'linear' or a KAN layer name ('kan', 'fasterkan', 'grkan') for the classifier.
        head_kwargs: keywords of a KAN classifier.
    """

    def __init__(
            self,
            block_config: Sequence[int] = (6, 12, 24, 16),
            growth_rate: int = 32,
            num_init_features: int = 64,
            bn_size: int = 4,
            compression: float = 0.5,
            conv_type: str = 'kagn',
            in_chans: int = 3,
            num_classes: int = 1000,
            stem_pool: bool = True,
            norm_layer: NormArg = 'batchnorm2d',
            conv_kwargs: Optional[Dict[str, Any]] = None,
            attn_type: Optional[str] = None,
            attn_stages: Sequence[int] = (-1,),
            attn_kwargs: Optional[Dict[str, Any]] = None,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            head_type: str = 'linear',
            head_kwargs: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if len(block_config) < 1 or any(int(n) < 1 for n in block_config):
            raise ValueError(f'DenseKANet: block_config must be positive layer counts, got {block_config!r}')
        for name, value in (('growth_rate', growth_rate), ('num_init_features', num_init_features),
                            ('bn_size', bn_size)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f'DenseKANet: {name} must be an integer >= 1, got {value!r}')
        if not 0 < compression <= 1:
            raise ValueError(f'DenseKANet: compression must be in (0, 1], got {compression!r}')
        conv = conv_kan_layer(conv_type, norm_layer, owner='DenseKANet', **(conv_kwargs or {}))
        norm = resolve_norm(norm_layer, 'DenseKANet') or nn.BatchNorm2d
        attention = stage_attention(attn_type, attn_stages, len(block_config), conv_type, 'DenseKANet',
                                    **(attn_kwargs or {}))
        self.num_classes, self.conv_type = num_classes, conv_type
        self.grad_checkpointing = False

        self.stem = conv(in_chans, num_init_features, 7, stride=2, padding=3)  # (B, 3, H, W) -> (B, F, H/2, W/2)
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=num_init_features, reduction=2, module='stem')]
        stages, chs, reduction = [], num_init_features, 4 if stem_pool else 2
        for i, num_layers in enumerate(block_config):
            layers: List[nn.Module] = []
            if i > 0:
                out = max(1, int(chs * compression))
                layers.append(DenseTransition(chs, out, norm))
                chs, reduction = out, reduction * 2
            layers.append(DenseKANBlock(int(num_layers), chs, growth_rate, bn_size, conv))
            chs += int(num_layers) * growth_rate
            block = attention(i, chs)
            if block is not None:
                layers.append(block)
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.set_head(chs, num_classes, global_pool, drop_rate, head_type, head_kwargs)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.stem(x))  # (B, C, H, W) -> (B, F, H/4, W/4)
        return self.run_stages(self.stages, x)  # -> (B, num_features, H/32, W/32)


def _create_densekanet(variant: str, pretrained: bool = False, **kwargs) -> DenseKANet:
    num_stages = len(kwargs.get('block_config', (6, 12, 24, 16)))
    out_indices = kwargs.pop('out_indices', tuple(range(num_stages + 1)))  # the stem and every stage
    return build_model_with_cfg(
        DenseKANet, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return pooled_cnn_cfg('stem', **kwargs)


default_cfgs = generate_default_cfgs({
    'densekanet121_kagn.untrained': _cfg(),
    'densekanet161_kagn.untrained': _cfg(),
    'densekanet169_kagn.untrained': _cfg(),
    'densekanet201_kagn.untrained': _cfg(),
    'densekanet121_kagn_bn.untrained': _cfg(),
    'densekanet121_kagn_focal.untrained': _cfg(),
})

# DenseNet layouts: dense layers per block and growth rate
_DENSE_121 = dict(block_config=(6, 12, 24, 16), growth_rate=32)
_DENSE_161 = dict(block_config=(6, 12, 36, 24), growth_rate=48)
_DENSE_169 = dict(block_config=(6, 12, 32, 32), growth_rate=32)
_DENSE_201 = dict(block_config=(6, 12, 48, 32), growth_rate=32)
_BOTTLENECK = dict(conv_type='bottleneck_kagn', conv_kwargs=dict(dim_reduction=8))


@register_model
def densekanet121_kagn(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-121 layout (6-12-24-16, growth 32), Gram (KAGN) convs, degree 3."""
    model_args = dict(_DENSE_121, conv_type='kagn')
    return _create_densekanet('densekanet121_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet161_kagn(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-161 layout (6-12-36-24, growth 48), Gram (KAGN) convs."""
    model_args = dict(_DENSE_161, conv_type='kagn')
    return _create_densekanet('densekanet161_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet169_kagn(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-169 layout (6-12-32-32, growth 32), Gram (KAGN) convs."""
    model_args = dict(_DENSE_169, conv_type='kagn')
    return _create_densekanet('densekanet169_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet201_kagn(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-201 layout (6-12-48-32, growth 32), Gram (KAGN) convs."""
    model_args = dict(_DENSE_201, conv_type='kagn')
    return _create_densekanet('densekanet201_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet121_kagn_bn(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-121 layout, bottleneck Gram convs (squeeze by 8): torch-conv-kan's densekagnet121bn shape."""
    model_args = dict(_DENSE_121, **_BOTTLENECK)
    return _create_densekanet('densekanet121_kagn_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def densekanet121_kagn_focal(pretrained: bool = False, **kwargs) -> DenseKANet:
    """DenseNet-121 layout, Gram convs, a KAN focal-modulation block (2 levels, Gram convs) ending the last dense
    block."""
    model_args = dict(_DENSE_121, conv_type='kagn', attn_type='focal', attn_stages=(-1,))
    return _create_densekanet('densekanet121_kagn_focal', pretrained, **dict(model_args, **kwargs))
