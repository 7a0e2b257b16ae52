"""KAN-MLP: a stack of KAN layers over the flattened image, the classic KAN classifier (e.g. [64, 64, 10]).

KAN: Kolmogorov-Arnold Networks (Liu et al., 2024) - https://arxiv.org/abs/2404.19756
efficient-KAN (the B-spline KANLinear) - https://github.com/Blealtan/efficient-kan

Small images only (MNIST, the 8x8 digits of the embedded demo): the first layer sees every pixel of every channel,
in_chans * img_size**2 inputs. A KAN layer carries its own nonlinearity, so layers follow each other directly.
"""
from typing import Any, Dict, Optional, Sequence, Union

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from vision_kan.layers import KAN_LAYERS

from ._flat_kan import FlatKANClassifier, digits_cfg, to_2tuple

__all__ = ['KANMLPNet']


class KANMLPNet(FlatKANClassifier):
    """Flatten -> KAN layers (hidden_dims) -> dropout -> KAN classifier.

    Args:
        img_size: input height/width (int or pair); fixed, the first layer's width depends on it.
        in_chans: input channels.
        num_classes: classifier outputs; 0 leaves the head as Identity (features out).
        hidden_dims: widths of the hidden KAN layers, e.g. (64,) gives [C*H*W, 64, num_classes].
        kan_type: KAN layer family, a key of vision_kan.layers.KAN_LAYERS ('kan' B-spline, 'fasterkan' RSWAF).
        drop_rate: dropout before the classifier.
        kan_kwargs: keywords for every KAN layer (grid_size, spline_order, grid_range, num_grids, ...).
        global_pool: accepted for timm API compatibility; only '' or None (there is nothing to pool).
    """

    family = 'kan_mlp'

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 8,
            in_chans: int = 3,
            num_classes: int = 10,
            hidden_dims: Sequence[int] = (64,),
            kan_type: str = 'kan',
            drop_rate: float = 0.0,
            kan_kwargs: Optional[Dict[str, Any]] = None,
            global_pool: Optional[str] = None,
    ):
        super().__init__()
        if kan_type not in KAN_LAYERS:
            raise ValueError(f'kan_mlp: kan_type must be one of {sorted(KAN_LAYERS)}, got {kan_type!r}')
        self.check_global_pool(global_pool)
        if not hidden_dims or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f'kan_mlp: hidden_dims must be a non-empty list of positive widths, got {hidden_dims!r}')
        self.img_size = to_2tuple(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.kan_type = kan_type
        self.kan_kwargs = dict(kan_kwargs or {})
        self.grad_checkpointing = False
        layer = KAN_LAYERS[kan_type]

        widths = [in_chans * self.img_size[0] * self.img_size[1], *[int(h) for h in hidden_dims]]
        self.layers = nn.Sequential(*[layer(w_in, w_out, **self.kan_kwargs) for w_in, w_out in zip(widths, widths[1:])])
        self.num_features = self.head_hidden_size = widths[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        layer = KAN_LAYERS[self.kan_type]
        return layer(self.num_features, num_classes, **self.kan_kwargs) if num_classes > 0 else nn.Identity()



def _create_kan_mlp(variant: str, pretrained: bool = False, **kwargs) -> KANMLPNet:
    return build_model_with_cfg(KANMLPNet, variant, pretrained, **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:  # the 8x8 RGB digits of the demo
    return digits_cfg('layers.0', **{'input_size': (3, 8, 8), 'mean': IMAGENET_DEFAULT_MEAN,
                                     'std': IMAGENET_DEFAULT_STD, **kwargs})


default_cfgs = generate_default_cfgs({
    'kan_mlp.untrained': _cfg(),
})


@register_model
def kan_mlp(pretrained: bool = False, **kwargs) -> KANMLPNet:
    """B-spline KAN [in_chans*H*W, 64, num_classes] for 8x8 images (the embedded demo's digits)."""
    model_args = dict(img_size=8, hidden_dims=(64,), kan_type='kan')
    return _create_kan_mlp('kan_mlp', pretrained, **dict(model_args, **kwargs))
