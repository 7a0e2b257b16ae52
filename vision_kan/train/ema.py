"""timm's ModelEmaV3, except that the buffers of KAN layers (knot grids) are copied, never averaged.

ModelEmaV3 lerps every floating-point entry of the state dict, buffers included. A KAN grid is not a quantity to
average: a lerp between two knot vectors is a third grid on which neither model's coefficients mean anything.
Other buffers (BatchNorm statistics) keep timm's behaviour. After a grid update the EMA's KAN layers are moved
onto the new knots with their own refit (vision_kan.train.kan_training.update_kan_grids), so the copy below is then a
no-op that only guards against drift.
"""
from typing import List, Set

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3

from .kan_training import outermost_modules_with

__all__ = ['KanModelEma', 'kan_buffer_names']


def kan_buffer_names(model: nn.Module) -> Set[str]:
    """State-dict keys of buffers owned by KAN layers (modules with update_grid or regularization_loss)."""
    names: Set[str] = set()
    for method in ('update_grid', 'regularization_loss'):
        for prefix, module in outermost_modules_with(model, method):
            for buf_name, _ in module.named_buffers():
                names.add(f'{prefix}.{buf_name}' if prefix else buf_name)
    return names


class KanModelEma(ModelEmaV3):
    """ModelEmaV3 whose update copies KAN-layer buffers and lerps everything else (same arguments)."""

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self.copy_keys = kan_buffer_names(self.module)

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        ema_lerp: List[torch.Tensor] = []
        model_lerp: List[torch.Tensor] = []
        model_sd = model.state_dict()
        for key, ema_v in self.module.state_dict().items():
            model_v = model_sd[key].to(device=ema_v.device)
            if ema_v.is_floating_point() and key not in self.copy_keys:
                ema_lerp.append(ema_v)
                model_lerp.append(model_v)
            else:
                ema_v.copy_(model_v)
        # our own lerp (timm's private helpers differ between releases): ema += (1 - decay) * (model - ema)
        weight = 1. - decay
        pairs = list(zip(ema_lerp, model_lerp))
        if self.foreach:  # one multi-tensor kernel for the pairs of equal dtype, a loop for the rest
            same = [(e, m) for e, m in pairs if e.dtype == m.dtype]
            if same:
                torch._foreach_lerp_([e for e, _ in same], [m for _, m in same], weight=weight)
            pairs = [(e, m) for e, m in pairs if e.dtype != m.dtype]
        for ema_v, model_v in pairs:
            ema_v.lerp_(model_v.to(ema_v.dtype), weight)
