"""KAL-Net: a Kolmogorov-Arnold network of Legendre-polynomial layers over the flattened image (TorchKAN's KAL_Net).

TorchKAN (KAL-Net, 97.8% on MNIST as published) - https://github.com/1ssb/torchkan
KAN: Kolmogorov-Arnold Networks (Liu et al., 2024) - https://arxiv.org/abs/2404.19756

A KALN layer (`vision_kan.layers.KALNLinear`) maps (B, d) -> (B, d'):

    y = SiLU(LayerNorm(W_b . SiLU(x) + W_p . [P_0(t), ..., P_n(t)])),   t = tanh(x)

with P_j the Legendre polynomials of each input feature, by Bonnet's recurrence. TorchKAN
rescales x to [-1, 1] by the min and max of the whole batch, so a sample's output depends on the rest of its
batch (and eval differs from train); tanh squashes each value on its own instead. The classifier is a KALN layer
without the LayerNorm and SiLU (logits).

Small images only (MNIST 28x28, the 8x8 digits): the first layer sees in_chans * img_size**2 inputs.
"""
from typing import Any, Dict, Optional, Sequence, Union

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from vision_kan.layers import KALNLinear

from ._flat_kan import FlatKANClassifier, digits_cfg, to_2tuple

__all__ = ['KALNet']


class KALNet(FlatKANClassifier):
    """Flatten -> KALN layers (hidden_dims) -> dropout -> KALN classifier.

    Args:
        img_size: input height/width (int or pair); fixed, the first layer's width depends on it.
        in_chans: input channels.
        num_classes: classifier outputs; 0 leaves the head as Identity (features out).
        hidden_dims: widths of the hidden KALN layers.
        degree: Legendre degree of every layer.
        drop_rate: dropout before the classifier.
        global_pool: accepted for timm API compatibility; only '' or None (there is nothing to pool).
    """

    family = 'kan_kalnet'

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 28,
            in_chans: int = 1,
            num_classes: int = 10,
            hidden_dims: Sequence[int] = (256,),
            degree: int = 3,
            drop_rate: float = 0.0,
            global_pool: Optional[str] = None,
    ):
        super().__init__()
        self.check_global_pool(global_pool)
        if not hidden_dims or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f'kan_kalnet: hidden_dims must be a non-empty list of positive widths, got '
                             f'{hidden_dims!r}')
        if not isinstance(degree, int) or degree < 0:
            raise ValueError(f'kan_kalnet: degree must be an integer >= 0, got {degree!r}')
        self.img_size, self.in_chans, self.degree = to_2tuple(img_size), in_chans, degree
        self.num_classes = num_classes
        self.grad_checkpointing = False
        widths = [in_chans * self.img_size[0] * self.img_size[1], *[int(h) for h in hidden_dims]]
        self.layers = nn.Sequential(*[KALNLinear(a, b, degree) for a, b in zip(widths, widths[1:])])
        self.num_features = self.head_hidden_size = widths[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return KALNLinear(self.num_features, num_classes, self.degree, norm_act=False)



def _create_kalnet(variant: str, pretrained: bool = False, **kwargs) -> KALNet:
    return build_model_with_cfg(KALNet, variant, pretrained, **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return digits_cfg('layers.0', **kwargs)


default_cfgs = generate_default_cfgs({
    'kan_kalnet.untrained': _cfg(),
    'kan_kalnet_digits.untrained': _cfg(input_size=(1, 8, 8)),
})


@register_model
def kan_kalnet(pretrained: bool = False, **kwargs) -> KALNet:
    """KAL-Net [784, 256, 10] for 28x28 grey digits (TorchKAN's MNIST shape), Legendre degree 3."""
    model_args = dict(img_size=28, in_chans=1, hidden_dims=(256,), degree=3)
    return _create_kalnet('kan_kalnet', pretrained, **dict(model_args, **kwargs))


@register_model
def kan_kalnet_digits(pretrained: bool = False, **kwargs) -> KALNet:
    """KAL-Net [64, 64, 10] for the 8x8 digits of the embedded demo."""
    model_args = dict(img_size=8, in_chans=1, hidden_dims=(64,), degree=3)
    return _create_kalnet('kan_kalnet_digits', pretrained, **dict(model_args, **kwargs))
