"""ResKANet: ResNet layouts whose every convolution is a Kolmogorov-Arnold convolution.

Deep Residual Learning for Image Recognition (He et al., 2015) - https://arxiv.org/abs/1512.03385
torch-conv-kan (ResKANet) - https://github.com/IvanDrokin/torch-conv-kan

ResNet-18/34 (basic blocks: two 3x3 KAN convs) and ResNet-50/101/152 (bottleneck blocks: 1x1, 3x3, 1x1 KAN convs,
expansion 4, stride on the 3x3) with torch-conv-kan's widths: a 16-channel stem and stages of 8/16/32/64 planes,
all times `width_scale`. Each KAN conv carries its norm (BatchNorm by default) and, for the Gram and Legendre
families, a SiLU; a shortcut that changes shape is a strided 1x1 KAN conv; nothing follows the residual sum (the
KAN convs are the nonlinearity). The last norm of every block starts at zero, so each block starts as identity.

Names: `reskanet{18,34,50,101,152}_{family}[_bn][_moe|_sa]`, `_bn` = bottleneck Gram convs (torch-conv-kan's "BN",
not batch norm), `_moe` = every block's 3x3 conv after the first is a mixture of conv-KAN experts (`MoEKANConv`, its
load-balancing loss reaches the objective through train/losses.AuxiliaryLoss), `_sa` = a KAN self-attention block
ends the last stage. Other combinations by keywords:

    timm.create_model('reskanet18_kagn', conv_type='kajn', width_scale=2, stem_type='small')  # 32 px images
    timm.create_model('reskanet50_kagn', features_only=True)                                 # 5 feature maps
    timm.create_model('reskanet18_kagn', moe_experts=4, moe_top_k=1, attn_type='focal')      # MoE + focal modulation
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._conv_kan_common import NormArg, PooledCNN, conv_kan_layer, moe_conv_kan_layer, pooled_cnn_cfg, \
    stage_attention

__all__ = ['ResKANet', 'KANBasicBlock', 'KANBottleneck']

ConvFactory = Callable[..., nn.Module]


def _zero_last_norm(conv: nn.Module) -> None:
    norm = getattr(conv, 'norm', None)
    if getattr(norm, 'weight', None) is not None:
        nn.init.zeros_(norm.weight)


class KANBasicBlock(nn.Module):
    """3x3 KAN conv (stride) -> 3x3 KAN conv, plus the shortcut. (B, C, H, W) -> (B, planes, H/s, W/s).
    conv3x3 (default conv) makes the second 3x3 conv, e.g. a mixture of experts."""
    expansion = 1

    def __init__(self, in_chs: int, planes: int, conv: ConvFactory, stride: int = 1, drop_path: float = 0.0,
                 conv3x3: Optional[ConvFactory] = None):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = conv(in_chs, planes, 3, stride=stride, padding=1)
        self.conv2 = (conv3x3 or conv)(planes, out_chs, 3, padding=1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = conv(in_chs, out_chs, 1, stride=stride) if stride != 1 or in_chs != out_chs else None

    def zero_init_last(self) -> None:
        _zero_last_norm(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(self.conv2(self.conv1(x))) + shortcut


class KANBottleneck(nn.Module):
    """1x1 KAN conv -> 3x3 KAN conv (stride) -> 1x1 KAN conv to 4 * planes, plus the shortcut.
    conv3x3 (default conv) makes the 3x3 conv, e.g. a mixture of experts."""
    expansion = 4

    def __init__(self, in_chs: int, planes: int, conv: ConvFactory, stride: int = 1, drop_path: float = 0.0,
                 conv3x3: Optional[ConvFactory] = None):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = conv(in_chs, planes, 1)
        self.conv2 = (conv3x3 or conv)(planes, planes, 3, stride=stride, padding=1)
        self.conv3 = conv(planes, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = conv(in_chs, out_chs, 1, stride=stride) if stride != 1 or in_chs != out_chs else None

    def zero_init_last(self) -> None:
        _zero_last_norm(self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(self.conv3(self.conv2(self.conv1(x)))) + shortcut


_BLOCKS: Dict[str, Type[nn.Module]] = {'basic': KANBasicBlock, 'bottleneck': KANBottleneck}


class ResKANet(PooledCNN):
    """ResNet of conv-KAN layers: KAN stem (+ max pool), four stages of residual KAN blocks, pooled head.

    Args:
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        block: 'basic' (two 3x3 convs) or 'bottleneck' (1x1, 3x3, 1x1, expansion 4).
        conv_type: conv-KAN family, a key of vision_kan.layers.kan_conv_families.CONV_KAN_FAMILIES.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none (pooled features out).
        width_scale: multiplies the stem width (16) and the stage planes (8, 16, 32, 64).
        stem_type: 'imagenet' (7x7 stride-2 KAN conv, 3x3 stride-2 max pool) or 'small' (3x3 stride-1 KAN conv,
            no pool: torch-conv-kan's 32 px variants).
        norm_layer: norm inside every KAN conv (None, 'batchnorm2d', 'instancenorm2d', a timm norm name, a class).
        conv_kwargs: the family's keywords (degree, grid_size, dropout, act_layer, dim_reduction, ...).
        global_pool: timm pool type of the head.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        zero_init_last: start every block's last norm at zero (blocks start as identity).
        moe_experts: > 0 makes the 3x3 conv of every block after the first a mixture of this many conv-KAN experts.
        moe_top_k: experts per sample.
        moe_kwargs: MoEKANConv's other keywords (noisy_gating, identical_init).
        attn_type: None, 'self_attention' or 'focal': a KAN attention block at the end of the stages attn_stages.
        attn_stages: stage indices (negative from the end) that get the attention block.
        attn_kwargs: the block's keywords (num_heads, focal_level, conv_type, conv_kwargs, ...).
        head_type: 'linear' or a KAN layer name ('kan', 'fasterkan', 'grkan') for the classifier.
        head_kwargs: keywords of a KAN classifier.
    """

    def __init__(
            self,
            layers: Sequence[int] = (2, 2, 2, 2),
            block: str = 'basic',
            conv_type: str = 'kagn',
            in_chans: int = 3,
            num_classes: int = 1000,
            width_scale: float = 1.0,
            stem_type: str = 'imagenet',
            norm_layer: NormArg = 'batchnorm2d',
            conv_kwargs: Optional[Dict[str, Any]] = None,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            zero_init_last: bool = True,
            moe_experts: int = 0,
            moe_top_k: int = 2,
            moe_kwargs: Optional[Dict[str, Any]] = None,
            attn_type: Optional[str] = None,
            attn_stages: Sequence[int] = (-1,),
            attn_kwargs: Optional[Dict[str, Any]] = None,
            head_type: str = 'linear',
            head_kwargs: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f'ResKANet: block must be one of {sorted(_BLOCKS)}, got {block!r}')
        if stem_type not in ('imagenet', 'small'):
            raise ValueError(f"ResKANet: stem_type must be 'imagenet' or 'small', got {stem_type!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f'ResKANet: layers must be 4 positive block counts, got {layers!r}')
        if not width_scale > 0:
            raise ValueError(f'ResKANet: width_scale must be > 0, got {width_scale!r}')
        conv = conv_kan_layer(conv_type, norm_layer, owner='ResKANet', **(conv_kwargs or {}))
        moe_conv = moe_conv_kan_layer(conv_type, norm_layer, moe_experts, moe_top_k, owner='ResKANet',
                                      **dict(conv_kwargs or {}, **(moe_kwargs or {}))) if moe_experts > 0 else None
        attention = stage_attention(attn_type, attn_stages, 4, conv_type, 'ResKANet', **(attn_kwargs or {}))
        block_cls = _BLOCKS[block]
        self.num_classes, self.conv_type = num_classes, conv_type
        self.grad_checkpointing = False

        def width(w: int) -> int:
            return max(1, int(round(w * width_scale)))

        stem_chs = width(16)
        if stem_type == 'imagenet':
            self.stem = conv(in_chans, stem_chs, 7, stride=2, padding=3)  # (B, 3, H, W) -> (B, 16s, H/2, W/2)
            self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            stem_stride = 2
        else:
            self.stem = conv(in_chans, stem_chs, 3, padding=1)
            self.stem_pool = nn.Identity()
            stem_stride = 1
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=stem_chs, reduction=stem_stride, module='stem')]

        total = sum(int(n) for n in layers)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, chs, reduction, k = [], stem_chs, stem_stride * (2 if stem_type == 'imagenet' else 1), 0
        for i, (planes, n) in enumerate(zip((8, 16, 32, 64), layers)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for j in range(int(n)):
                conv3x3 = moe_conv if k > 0 else None  # the first block stays plain (it sees the stem)
                blocks.append(block_cls(chs, width(planes), conv, stride if j == 0 else 1, dpr[k], conv3x3))
                chs, k = width(planes) * block_cls.expansion, k + 1
            block = attention(i, chs)
            if block is not None:
                blocks.append(block)
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.set_head(chs, num_classes, global_pool, drop_rate, head_type, head_kwargs)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (KANBasicBlock, KANBottleneck)):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.stem(x))  # (B, C, H, W) -> (B, 16s, H/4, W/4) for the ImageNet stem
        return self.run_stages(self.stages, x)  # -> (B, num_features, H/32, W/32)


def _create_reskanet(variant: str, pretrained: bool = False, **kwargs) -> ResKANet:
    return build_model_with_cfg(
        ResKANet, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=kwargs.pop('out_indices', (0, 1, 2, 3, 4))),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return pooled_cnn_cfg('stem', **kwargs)


default_cfgs = generate_default_cfgs({
    'reskanet18_kagn.untrained': _cfg(),
    'reskanet34_kagn.untrained': _cfg(),
    'reskanet50_kagn.untrained': _cfg(),
    'reskanet101_kagn.untrained': _cfg(),
    'reskanet152_kagn.untrained': _cfg(),
    'reskanet50_kagn_bn.untrained': _cfg(),
    'reskanet18_kacn.untrained': _cfg(),
    'reskanet18_kaln.untrained': _cfg(),
    'reskanet18_fastkan.untrained': _cfg(),
    'reskanet18_kan.untrained': _cfg(),
    'reskanet18_kagn_moe.untrained': _cfg(),
    'reskanet18_kagn_sa.untrained': _cfg(),
})


@register_model
def reskanet18_kagn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout (basic blocks 2-2-2-2), Gram (KAGN) convs."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kagn')
    return _create_reskanet('reskanet18_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet34_kagn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-34 layout (basic blocks 3-4-6-3), Gram (KAGN) convs."""
    model_args = dict(layers=(3, 4, 6, 3), block='basic', conv_type='kagn')
    return _create_reskanet('reskanet34_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet50_kagn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-50 layout (bottlenecks 3-4-6-3), Gram (KAGN) convs."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', conv_type='kagn')
    return _create_reskanet('reskanet50_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet101_kagn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-101 layout (bottlenecks 3-4-23-3), Gram (KAGN) convs."""
    model_args = dict(layers=(3, 4, 23, 3), block='bottleneck', conv_type='kagn')
    return _create_reskanet('reskanet101_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet152_kagn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-152 layout (bottlenecks 3-8-36-3), Gram (KAGN) convs."""
    model_args = dict(layers=(3, 8, 36, 3), block='bottleneck', conv_type='kagn')
    return _create_reskanet('reskanet152_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet50_kagn_bn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-50 layout, bottleneck Gram convs (squeeze by 8): torch-conv-kan's ResKAGNet-BN-50 shape."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', conv_type='bottleneck_kagn',
                      conv_kwargs=dict(dim_reduction=8))
    return _create_reskanet('reskanet50_kagn_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_kacn(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, Chebyshev (KACN) convs."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kacn')
    return _create_reskanet('reskanet18_kacn', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_kaln(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, Legendre (KALN) convs."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kaln')
    return _create_reskanet('reskanet18_kaln', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_fastkan(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, FastKAN (Gaussian RBF) convs."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='fastkan')
    return _create_reskanet('reskanet18_fastkan', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_kan(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, B-spline KAN convs."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kan')
    return _create_reskanet('reskanet18_kan', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_kagn_moe(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, Gram convs; the second 3x3 conv of blocks 2-8 is a mixture of 8 Gram-conv experts, top-2
    (torch-conv-kan's MoE setting)."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kagn', moe_experts=8, moe_top_k=2)
    return _create_reskanet('reskanet18_kagn_moe', pretrained, **dict(model_args, **kwargs))


@register_model
def reskanet18_kagn_sa(pretrained: bool = False, **kwargs) -> ResKANet:
    """ResNet-18 layout, Gram convs, a KAN self-attention block (Gram q/k/v conv, 3x3, 1 head) ending the last
    stage."""
    model_args = dict(layers=(2, 2, 2, 2), block='basic', conv_type='kagn', attn_type='self_attention')
    return _create_reskanet('reskanet18_kagn_sa', pretrained, **dict(model_args, **kwargs))
