"""timm's ModelEmaV3, except that the buffers of KAN layers (knot grids) are copied, never averaged.

ModelEmaV3 lerps every floating-point entry of the state dict, buffers included. A KAN grid is not a quantity to
average: a lerp between two knot vectors is a third grid on which neither model's coefficients mean anything.
Other buffers (BatchNorm statistics) keep timm's behaviour. After a grid update the EMA's KAN layers are moved
onto the new knots with their own refit (vision_kan.train.kan_training.update_kan_grids), so the copy below is then a
no-op that only guards against drift.
"""
import weakref
from typing import Dict, List, Set, Tuple

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


Slot = Tuple[nn.Module, str, str]  # (owning module, '_parameters' or '_buffers', attribute name)


def _state_slots(model: nn.Module) -> Dict[str, Slot]:
    """{state-dict key: slot} of model's parameters and persistent buffers, in state_dict order. A slot names where
    the tensor lives, not the tensor: read each step (_read), it follows a reassigned buffer (`.to()`, a refit)."""
    slots: Dict[str, Slot] = {}
    for prefix, module in model.named_modules():
        dot = f'{prefix}.' if prefix else ''
        for name, value in module._parameters.items():
            if value is not None:
                slots[dot + name] = (module, '_parameters', name)
        for name, value in module._buffers.items():
            if value is not None and name not in module._non_persistent_buffers_set:
                slots[dot + name] = (module, '_buffers', name)
    return slots


def _read(slots: List[Slot]) -> List[torch.Tensor]:
    return [getattr(module, where)[name] for module, where, name in slots]


class KanModelEma(ModelEmaV3):
    """ModelEmaV3 whose update copies KAN-layer buffers and lerps everything else (same arguments)."""

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self.copy_keys = kan_buffer_names(self.module)
        self._plan_of = None  # weak reference to the model the slots below were matched with (an id can be reused)
        self._lerp_slots: Tuple[List[Slot], List[Slot]] = ([], [])  # (EMA's, model's)
        self._copy_slots: Tuple[List[Slot], List[Slot]] = ([], [])

    def _plan(self, model: nn.Module) -> None:
        """Match the EMA's state entries with the model's once per model: two state_dict() calls a step cost ~1 ms
        of host time (vit_kan_tiny, 224 entries), which a host-bound step (32 px) waits for."""
        ema_slots, model_slots = _state_slots(self.module), _state_slots(model)
        if list(ema_slots) != list(model_slots):
            raise ValueError('KanModelEma.update: the model\'s state entries differ from the EMA copy\'s')
        lerp: Tuple[List[Slot], List[Slot]] = ([], [])
        copy: Tuple[List[Slot], List[Slot]] = ([], [])
        for key, slot in ema_slots.items():
            ema_v = getattr(slot[0], slot[1])[slot[2]]
            target = lerp if ema_v.is_floating_point() and key not in self.copy_keys else copy
            target[0].append(slot)
            target[1].append(model_slots[key])
        self._lerp_slots, self._copy_slots, self._plan_of = lerp, copy, weakref.ref(model)

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        if self._plan_of is None or self._plan_of() is not model:
            self._plan(model)
        ema_lerp = _read(self._lerp_slots[0])
        model_lerp = [m.to(device=e.device) for e, m in zip(ema_lerp, _read(self._lerp_slots[1]))]
        for ema_v, model_v in zip(_read(self._copy_slots[0]), _read(self._copy_slots[1])):
            ema_v.copy_(model_v.to(device=ema_v.device))
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
