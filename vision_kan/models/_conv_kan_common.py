"""What the conv-KAN CNN families share: the conv family chosen by name, the norm chosen by name, the pooled head.

    conv = conv_kan_layer('kagn', norm_layer='batchnorm2d', degree=3)
    layer = conv(64, 128, kernel_size=3, stride=1, padding=1)      # KAGNConvNd(ndim=2) + BatchNorm2d + SiLU
    head = PooledHead(512, num_classes=10, head_type='kan')       # avg pool -> dropout -> KANLinear

Not a model file: it registers nothing (timm files models under their module's basename).
"""
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, get_norm_layer
from timm.models import checkpoint_seq

from vision_kan.layers import KAN_LAYERS
from vision_kan.layers.kan_attention import KAN_ATTENTION_BLOCKS
from vision_kan.layers.kan_conv_families import CONV_KAN_FAMILIES
from vision_kan.layers.moe_kan_conv import MoEKANConv

__all__ = ['CONV_TYPES', 'HEAD_TYPES', 'ATTN_TYPES', 'conv_kan_layer', 'moe_conv_kan_layer', 'stage_attention',
           'resolve_norm', 'PooledHead', 'PooledCNN', 'pooled_cnn_cfg']

CONV_TYPES = tuple(sorted(CONV_KAN_FAMILIES))
HEAD_TYPES = ('linear',) + tuple(sorted(KAN_LAYERS))
ATTN_TYPES = tuple(sorted(KAN_ATTENTION_BLOCKS))

# torch-conv-kan follows the norm of its Gram, Legendre and bottleneck-Gram convs with SiLU; the other families end
# on the norm (their basis is the nonlinearity). `act_layer=` in conv_kwargs overrides this.
_FAMILY_ACT = {'kagn': nn.SiLU, 'kaln': nn.SiLU, 'bottleneck_kagn': nn.SiLU}

NormArg = Union[None, str, Callable[[int], nn.Module]]


def resolve_norm(norm_layer: NormArg, owner: str) -> Optional[Callable[[int], nn.Module]]:
    """None / '' -> no norm; 'instancenorm2d' -> affine InstanceNorm2d; other strings by timm's norm names
    ('batchnorm2d', 'groupnorm', 'layernorm2d', ...); a class or callable taking num_channels is kept."""
    if norm_layer is None or norm_layer == '':
        return None
    if isinstance(norm_layer, str):
        key = norm_layer.replace('_', '').lower()
        if key in ('instancenorm', 'instancenorm2d'):
            return partial(nn.InstanceNorm2d, affine=True)
        try:
            return get_norm_layer(key)
        except KeyError:
            raise ValueError(f"{owner}: norm_layer must be None, 'instancenorm2d' or a timm norm name such as "
                             f"'batchnorm2d' or 'groupnorm', got {norm_layer!r}") from None
    if callable(norm_layer):
        return norm_layer
    raise ValueError(f'{owner}: norm_layer must be None, a string or a callable, got {norm_layer!r}')


def conv_kan_layer(conv_type: str, norm_layer: NormArg = 'batchnorm2d', owner: str = 'conv_kan_layer',
                   **conv_kwargs: Any) -> Callable[..., nn.Module]:
    """A factory `(in_ch, out_ch, kernel_size, stride=1, padding=0, ...) -> 2-d conv-KAN layer (+ norm, act)`.

    Args:
        conv_type: a key of CONV_KAN_FAMILIES ('kagn', 'kacn', 'kaln', 'kan', 'fastkan', 'bottleneck_kagn', ...).
        norm_layer: the norm after each conv (see `resolve_norm`).
        owner: the model name used in error messages.
        conv_kwargs: the family's own keywords (degree, grid_size, num_grids, dropout, act_layer, ...).
    """
    if conv_type not in CONV_KAN_FAMILIES:
        raise ValueError(f'{owner}: conv_type must be one of {list(CONV_TYPES)}, got {conv_type!r}')
    kwargs: Dict[str, Any] = dict(ndim=2, norm_layer=resolve_norm(norm_layer, owner))
    if conv_type in _FAMILY_ACT:
        kwargs['act_layer'] = _FAMILY_ACT[conv_type]
    kwargs.update(conv_kwargs)
    return partial(CONV_KAN_FAMILIES[conv_type], **kwargs)


def moe_conv_kan_layer(conv_type: str, norm_layer: NormArg = 'batchnorm2d', num_experts: int = 8, top_k: int = 2,
                       owner: str = 'moe_conv_kan_layer', **conv_kwargs: Any) -> Callable[..., nn.Module]:
    """`conv_kan_layer`'s factory for a mixture of conv-KAN experts (`MoEKANConv`): the same call signature, the
    family's norm and activation applied once after the mixture. conv_kwargs may hold noisy_gating, identical_init
    and the family's keywords."""
    if conv_type not in CONV_KAN_FAMILIES:
        raise ValueError(f'{owner}: conv_type must be one of {list(CONV_TYPES)}, got {conv_type!r}')
    kwargs: Dict[str, Any] = dict(conv_type=conv_type, num_experts=num_experts, top_k=top_k, ndim=2,
                                  norm_layer=resolve_norm(norm_layer, owner), act_layer=_FAMILY_ACT.get(conv_type))
    kwargs.update(conv_kwargs)
    return partial(MoEKANConv, **kwargs)


def stage_attention(attn_type: Optional[str], attn_stages: Sequence[int], num_stages: int, conv_type: str,
                    owner: str, **attn_kwargs: Any) -> Callable[[int, int], Optional[nn.Module]]:
    """`(stage index, channels) -> attention block or None`: the block (`KAN_ATTENTION_BLOCKS[attn_type]`, 2-d, the
    model's conv family unless attn_kwargs names another) that ends each stage listed in attn_stages (negative
    indices count from the end); None everywhere when attn_type is None."""
    if attn_type is None:
        return lambda stage, channels: None
    if attn_type not in KAN_ATTENTION_BLOCKS:
        raise ValueError(f'{owner}: attn_type must be None or one of {list(ATTN_TYPES)}, got {attn_type!r}')
    chosen = set()
    for s in attn_stages:
        if not isinstance(s, int) or not -num_stages <= s < num_stages:
            raise ValueError(f'{owner}: attn_stages must be stage indices in [-{num_stages}, {num_stages}), '
                             f'got {tuple(attn_stages)!r}')
        chosen.add(s % num_stages)
    kwargs = {'conv_type': conv_type, 'ndim': 2, **attn_kwargs}

    def make(stage: int, channels: int) -> Optional[nn.Module]:
        return KAN_ATTENTION_BLOCKS[attn_type](channels, **kwargs) if stage in chosen else None
    return make


class PooledHead(nn.Module):
    """Global pool -> flatten -> dropout -> classifier, the classifier a linear layer or a KAN layer.

    Args:
        in_features: channels of the feature map (B, C, H, W).
        num_classes: outputs; 0 leaves the classifier as Identity (pooled features out).
        pool_type: timm's global pool ('avg', 'max', 'avgmax', 'catavgmax', ...; '' keeps the map, then the
            classifier must be Identity).
        drop_rate: dropout before the classifier.
        head_type: 'linear' or a key of vision_kan.layers.KAN_LAYERS ('kan', 'fasterkan', 'grkan').
        head_kwargs: keywords for a KAN classifier (grid_size, num_grids, ...).
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.0,
                 head_type: str = 'linear', head_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f'head_type must be one of {list(HEAD_TYPES)}, got {head_type!r}')
        self.in_features, self.head_type = in_features, head_type
        self.head_kwargs = dict(head_kwargs or {})
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        self.num_features = in_features * self.global_pool.feat_mult()  # pooled width (pre-logits)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if not self.global_pool.pool_type:
            raise ValueError('a classifier needs a global pool; pool_type="" works only with num_classes=0')
        if self.head_type == 'linear':
            return nn.Linear(self.num_features, num_classes)
        return KAN_LAYERS[self.head_type](self.num_features, num_classes, **self.head_kwargs)

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
            self.num_features = self.in_features * self.global_pool.feat_mult()
        self.fc = self._classifier(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))  # (B, C, H, W) -> (B, C * feat_mult)
        return x if pre_logits else self.fc(x)


class PooledCNN(nn.Module):
    """The timm API of a CNN ending in a `PooledHead` (`self.head`): subclasses call `set_head`, set
    `self.grad_checkpointing`, and define `forward_features` (with `run_stages` for checkpointing) and
    `group_matcher`."""

    def set_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float, head_type: str,
                 head_kwargs: Optional[Dict[str, Any]]) -> None:
        """The classifier over the last stage's num_features channels, and the sizes timm reads off the model."""
        self.num_features = num_features
        self.head = PooledHead(num_features, num_classes, global_pool, drop_rate, head_type, head_kwargs)
        self.head_hidden_size = self.head.num_features

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def run_stages(self, stages: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """stages(x), with activation checkpointing per stage when enabled."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stages, x)
        return stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def pooled_cnn_cfg(first_conv: str, pool_size=(7, 7), url: str = '', **kwargs) -> Dict[str, Any]:
    """timm pretrained cfg of an ImageNet-scale pooled CNN (224 px, bicubic, crop 0.875, any input size)."""
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': pool_size,
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': first_conv, 'classifier': 'head.fc',
        'license': 'apache-2.0',
        **kwargs,
    }
