"""KANvolver: two conv + max-pool stages, then KAN layers on a monomial expansion of the features (TorchKAN).

TorchKAN (KANvolver, ~99.5% on MNIST as published) - https://github.com/1ssb/torchkan

    image (B, C, H, W) -> [conv3x3 -> ReLU -> maxpool2] x 2 -> flatten (B, 32 * H/4 * W/4)
        -> monomial KAN layers (hidden_dims) -> monomial KAN classifier

A monomial KAN layer (`vision_kan.layers.MonomialKANLinear`) maps (B, d) -> (B, d'):

    y = SiLU(LayerNorm(W_b . x + W_p . [t, t^2, ..., t^n])),   t = tanh(x)

(the constant t^0 is the bias). TorchKAN rescales x by the batch's min and max before the powers, which makes a
sample's output depend on its batch; tanh bounds each value on its own instead, so the powers stay in [-1, 1].
The classifier has no LayerNorm / SiLU (logits).
"""
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from vision_kan.layers import MonomialKANLinear

from ._flat_kan import FlatKANClassifier, digits_cfg, to_2tuple

__all__ = ['KANvolver']


class KANvolver(FlatKANClassifier):
    """Conv feature extractor (two conv3x3 -> ReLU -> maxpool2 stages) + monomial KAN layers.

    Args:
        img_size: input height/width (int or pair); fixed, the first KAN layer's width depends on it.
        in_chans: input channels.
        num_classes: classifier outputs; 0 leaves the head as Identity (features out).
        conv_chs: channels of the two conv stages.
        hidden_dims: widths of the hidden monomial KAN layers.
        order: highest power of the monomial expansion.
        drop_rate: dropout before the classifier.
        global_pool: accepted for timm API compatibility; only '' or None (the features are flattened).
    """

    family = 'kanvolver'
    stem_pattern = r'^features'

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 28,
            in_chans: int = 1,
            num_classes: int = 10,
            conv_chs: Sequence[int] = (16, 32),
            hidden_dims: Sequence[int] = (256,),
            order: int = 3,
            drop_rate: float = 0.0,
            global_pool: Optional[str] = None,
    ):
        super().__init__()
        self.check_global_pool(global_pool)
        if len(conv_chs) != 2 or any(int(c) < 1 for c in conv_chs):
            raise ValueError(f'kanvolver: conv_chs must be two positive widths, got {conv_chs!r}')
        if not hidden_dims or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f'kanvolver: hidden_dims must be a non-empty list of positive widths, got '
                             f'{hidden_dims!r}')
        self.img_size, self.in_chans, self.order = to_2tuple(img_size), in_chans, order
        h, w = self.img_size[0] // 4, self.img_size[1] // 4  # two 2x2 max pools
        if h < 1 or w < 1:
            raise ValueError(f'kanvolver: img_size must be at least 4, got {img_size!r}')
        self.num_classes = num_classes
        self.grad_checkpointing = False
        c1, c2 = int(conv_chs[0]), int(conv_chs[1])
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, C, H, W) -> (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (B, c2, H/4, W/4)
        )
        widths = [c2 * h * w, *[int(d) for d in hidden_dims]]
        self.layers = nn.Sequential(*[MonomialKANLinear(a, b, order) for a, b in zip(widths, widths[1:])])
        self.num_features = self.head_hidden_size = widths[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return MonomialKANLinear(self.num_features, num_classes, self.order, norm_act=False)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)  # (B, C, H, W) -> (B, c2 * H/4 * W/4)



def _create_kanvolver(variant: str, pretrained: bool = False, **kwargs) -> KANvolver:
    return build_model_with_cfg(KANvolver, variant, pretrained, **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return digits_cfg('features.0', **kwargs)


default_cfgs = generate_default_cfgs({
    'kanvolver.untrained': _cfg(),
    'kanvolver_digits.untrained': _cfg(input_size=(1, 8, 8)),
})


@register_model
def kanvolver(pretrained: bool = False, **kwargs) -> KANvolver:
    """KANvolver for 28x28 grey digits: convs 16-32, monomial KAN [1568, 256, 10] of order 3."""
    model_args = dict(img_size=28, in_chans=1, conv_chs=(16, 32), hidden_dims=(256,), order=3)
    return _create_kanvolver('kanvolver', pretrained, **dict(model_args, **kwargs))


@register_model
def kanvolver_digits(pretrained: bool = False, **kwargs) -> KANvolver:
    """KANvolver for the 8x8 digits of the embedded demo: convs 16-32, monomial KAN [128, 64, 10]."""
    model_args = dict(img_size=8, in_chans=1, conv_chs=(16, 32), hidden_dims=(64,), order=3)
    return _create_kanvolver('kanvolver_digits', pretrained, **dict(model_args, **kwargs))
