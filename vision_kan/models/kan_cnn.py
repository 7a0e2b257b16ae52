"""The 4-layer KAN-CNN and its plain CNN twin: the KAN-vs-CNN ImageNet comparison's pair of models.

KAN: Kolmogorov-Arnold Networks (Liu et al., 2024) - https://arxiv.org/abs/2404.19756

Both models have the same skeleton: four convolutions 3 -> 64 -> 128 -> 256 -> 512 with kernels 7, 3, 3, 3, each
of stride 2 (224 px -> 14 px maps; 32 px -> 2 px), a norm after each, global average pooling and a classifier.
They differ only where the KAN does:

* `kan_cnn4`: every conv is a conv-KAN layer (B-spline by default, `conv_type=` picks another family) whose basis
  is its nonlinearity; the classifier is a KAN layer (KANLinear; `head_type='fasterkan'` for RSWAF).
* `kan_cnn4_twin`: nn.Conv2d -> BatchNorm -> ReLU, and a linear classifier.

Compare the two trained by main.py with `python -m vision_kan.tools.compare --checkpoints A/best.pth B/best.pth
--data-path VAL`.
"""
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._conv_kan_common import NormArg, PooledCNN, conv_kan_layer, pooled_cnn_cfg, resolve_norm

__all__ = ['KANCNN']

_WIDTHS = (64, 128, 256, 512)
_KERNELS = (7, 3, 3, 3)


class ConvNormAct(nn.Module):
    """The twin's layer: nn.Conv2d (no bias) -> norm -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, norm_layer, act_layer):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2,
                              bias=norm_layer is None)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class KANCNN(PooledCNN):
    """A plain stack of strided conv layers (KAN or classic), global pool, classifier.

    Args:
        widths: output channels of the conv layers.
        kernels: kernel size of each layer (padding k // 2).
        strides: stride of each layer.
        kan: True for conv-KAN layers, False for nn.Conv2d -> norm -> act (the twin).
        conv_type: conv-KAN family when kan=True (a key of CONV_KAN_FAMILIES).
        conv_kwargs: keywords of the conv-KAN family (grid_size, degree, dropout, act_layer, ...).
        act_layer: the twin's activation (unused by KAN layers, whose nonlinearity is their basis).
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none (pooled features out).
        norm_layer: norm after each conv (None, 'batchnorm2d', 'instancenorm2d', a timm norm name, a class).
        global_pool: timm pool type of the head.
        drop_rate: dropout before the classifier.
        head_type: 'linear' or a KAN layer name ('kan', 'fasterkan', 'grkan').
        head_kwargs: keywords of a KAN classifier.
    """

    def __init__(
            self,
            widths: Sequence[int] = _WIDTHS,
            kernels: Sequence[int] = _KERNELS,
            strides: Sequence[int] = (2, 2, 2, 2),
            kan: bool = True,
            conv_type: str = 'kan',
            conv_kwargs: Optional[Dict[str, Any]] = None,
            act_layer: type = nn.ReLU,
            in_chans: int = 3,
            num_classes: int = 1000,
            norm_layer: NormArg = 'batchnorm2d',
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            head_type: str = 'kan',
            head_kwargs: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if not (len(widths) == len(kernels) == len(strides)) or not widths:
            raise ValueError(f'KANCNN: widths, kernels and strides must have the same non-zero length, got '
                             f'{widths!r}, {kernels!r}, {strides!r}')
        self.num_classes, self.kan = num_classes, kan
        self.grad_checkpointing = False
        if kan:
            conv = conv_kan_layer(conv_type, norm_layer, owner='KANCNN', **(conv_kwargs or {}))
        else:
            norm = resolve_norm(norm_layer, 'KANCNN')

        layers: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        chs, reduction = in_chans, 1
        for i, (w, k, s) in enumerate(zip(widths, kernels, strides)):
            if kan:
                layers.append(conv(chs, w, k, stride=s, padding=k // 2))  # (B, chs, H, W) -> (B, w, H/s, W/s)
            else:
                layers.append(ConvNormAct(chs, w, k, s, norm, act_layer))
            chs, reduction = w, reduction * s
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'layers.{i}'))
        self.layers = nn.Sequential(*layers)
        self.set_head(chs, num_classes, global_pool, drop_rate, head_type, head_kwargs)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^layers\.0', blocks=r'^layers\.(\d+)')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(self.layers, x)  # (B, C, H, W) -> (B, 512, H/16, W/16)


def _create_kan_cnn(variant: str, pretrained: bool = False, **kwargs) -> KANCNN:
    return build_model_with_cfg(
        KANCNN, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=kwargs.pop('out_indices', (0, 1, 2, 3))),
        **kwargs,
    )


def _cfg(first_conv: str = 'layers.0', **kwargs) -> Dict[str, Any]:
    return pooled_cnn_cfg(first_conv, **{'pool_size': (14, 14), **kwargs})


default_cfgs = generate_default_cfgs({
    'kan_cnn4.untrained': _cfg(),
    'kan_cnn4_twin.untrained': _cfg(first_conv='layers.0.conv'),
})


@register_model
def kan_cnn4(pretrained: bool = False, **kwargs) -> KANCNN:
    """4 B-spline KAN convs 3-64-128-256-512 (kernels 7-3-3-3, stride 2) + BatchNorm, avg pool, KANLinear head."""
    model_args = dict(kan=True, conv_type='kan', head_type='kan')
    return _create_kan_cnn('kan_cnn4', pretrained, **dict(model_args, **kwargs))


@register_model
def kan_cnn4_twin(pretrained: bool = False, **kwargs) -> KANCNN:
    """The plain twin of kan_cnn4: Conv2d + BatchNorm + ReLU in the same shape, linear head."""
    model_args = dict(kan=False, head_type='linear')
    return _create_kan_cnn('kan_cnn4_twin', pretrained, **dict(model_args, **kwargs))
