"""KANMlp: a drop-in `mlp_layer` for timm's ViT blocks whose two linear layers are KAN layers."""
from functools import partial
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from .grkan import GRKANLinear
from .kan_linear import FasterKANLinear, KANLinear

__all__ = ['KANMlp', 'KAN_LAYERS', 'kan_mlp_layer']

KAN_LAYERS = {
    'kan': KANLinear,  # efficient-KAN B-spline
    'fasterkan': FasterKANLinear,  # RSWAF
    'grkan': GRKANLinear,  # KAT's group-rational layer: rational -> linear
}
# keywords for the second layer only: KAT starts the first rational as identity, the second as swish
_FC2_KWARGS = {'grkan': dict(rational_init='swish')}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class KANMlp(nn.Module):
    """fc1 (KAN) -> drop -> norm -> fc2 (KAN) -> drop, with timm `Mlp`'s whole signature.

    A KAN layer carries its own nonlinearity, so `act_layer` is accepted and unused; `bias` adds a bias to the
    KAN layers; `hidden_features` is the width that is built. Extra keywords go to the KAN layer constructor
    (e.g. grid_size, spline_order, num_grids).
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: Optional[int] = None,
            out_features: Optional[int] = None,
            act_layer: Optional[type] = None,
            norm_layer: Optional[type] = None,
            bias: Union[bool, Tuple[bool, bool]] = True,
            drop: Union[float, Tuple[float, float]] = 0.0,
            use_conv: bool = False,
            device=None,
            dtype=None,
            kan_type: str = 'kan',
            **kan_kwargs,
    ):
        super().__init__()
        if kan_type not in KAN_LAYERS:
            raise ValueError(f'KANMlp: kan_type must be one of {sorted(KAN_LAYERS)}, got {kan_type!r}')
        if use_conv:
            raise ValueError('KANMlp: use_conv=True is not supported; KAN layers act on the last (channel) dim')
        dd = {'device': device, 'dtype': dtype}
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias, drop = _pair(bias), _pair(drop)
        layer = KAN_LAYERS[kan_type]
        self.kan_type = kan_type
        self.fc1 = layer(in_features, hidden_features, bias=bias[0], **kan_kwargs, **dd)
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features, **dd) if norm_layer is not None else nn.Identity()
        fc2_kwargs = dict(_FC2_KWARGS.get(kan_type, {}), **kan_kwargs)
        self.fc2 = layer(hidden_features, out_features, bias=bias[1], **fc2_kwargs, **dd)
        self.drop2 = nn.Dropout(drop[1])

    def init_weights(self) -> None:
        """Called by timm's ViT init after it has visited the children: restore the KAN init."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.fc1(x))  # (B, N, D) -> (B, N, H)
        return self.drop2(self.fc2(self.norm(x)))  # (B, N, H) -> (B, N, D)


def kan_mlp_layer(kan_type: str, **kan_kwargs):
    """`mlp_layer` factory for timm blocks: kan_mlp_layer('fasterkan', num_grids=8)."""
    return partial(KANMlp, kan_type=kan_type, **kan_kwargs)
