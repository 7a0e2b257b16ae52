"""The timm API shared by the digit-scale models (kan_mlp, KAL-Net, KANvolver): an input flattened to (B, d),
KAN layers to (B, num_features), dropout, a classifier. Registers no models."""
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models import checkpoint_seq

__all__ = ['FlatKANClassifier', 'digits_cfg', 'to_2tuple']


def digits_cfg(first_conv: str, url: str = '', **kwargs) -> Dict[str, Any]:
    """timm pretrained cfg of a digit-scale model: 10 classes, 28x28 grey by default, fixed input size."""
    return {
        'url': url,
        'num_classes': 10, 'input_size': (1, 28, 28), 'pool_size': None,
        'crop_pct': 1.0, 'interpolation': 'bilinear', 'fixed_input_size': True,
        'mean': (0.5,), 'std': (0.5,),
        'first_conv': first_conv, 'classifier': 'head',
        'license': 'apache-2.0',
        **kwargs,
    }


def to_2tuple(v: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class FlatKANClassifier(nn.Module):
    """Base of the flat classifiers. Subclasses set `self.layers`, `self.head_drop`, `self.head`,
    `self.num_features`, `self.grad_checkpointing`, and define `_classifier(num_classes)`; `flatten` may run a
    convolutional stem first."""

    family = ''  # the model name in error messages
    stem_pattern = r'^layers\.0'

    def check_global_pool(self, global_pool: Optional[str]) -> None:
        if global_pool:
            raise ValueError(f'{self.family}: global_pool must be empty (the features are flattened), '
                             f'got {global_pool!r}')

    def _classifier(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=self.stem_pattern, blocks=r'^layers\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.check_global_pool(global_pool)
        self.num_classes = num_classes
        self.head = self._classifier(num_classes)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # (B, C, H, W) -> (B, C*H*W)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.layers, x)
        return self.layers(x)  # (B, num_features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
