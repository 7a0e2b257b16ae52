"""Training criteria. Every criterion the engine sees is called as criterion(inputs, outputs, targets), so
distillation and the KAN penalty are wrappers and the engine has no special case for either (as in DeiT).
"""
from typing import Iterable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .kan_training import kan_regularization

__all__ = ['build_base_criterion', 'DistillationLoss', 'KanRegularizedLoss', 'AuxiliaryLoss']

Outputs = Union[torch.Tensor, tuple]


def build_base_criterion(mixup_active: bool, smoothing: float, bce: bool = False) -> nn.Module:
    """DeiT's choice: soft-target CE under mixup/cutmix (the smoothing is already in the mixed targets), else
    label-smoothing CE, else plain CE.

    bce (DeiT III's --bce-loss): one sigmoid per class. Under mixup/cutmix the mixed targets are made binary, 1 for
    every class with a share of the image (DeiT's `targets.gt(0.0)`); the Mixup must then carry no label smoothing,
    or every class would pass the threshold. Without mixup, timm's BinaryCrossEntropy smooths the one-hot targets.
    """
    if bce:
        return BinaryCrossEntropy(smoothing=0.0, target_threshold=0.0) if mixup_active else \
            BinaryCrossEntropy(smoothing=smoothing)
    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


class DistillationLoss(nn.Module):
    """base criterion on the class token's output, plus (for 'soft' / 'hard') a distillation term on the
    distillation token's output against a frozen teacher (DeiT, Touvron et al. 2021):

        soft: (1 - alpha) * base + alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student_dist / tau))
        hard: (1 - alpha) * base + alpha * CE(student_dist, argmax teacher)

    The KL is averaged per image ('batchmean', Hinton et al.); DeiT's code divides the summed KL by
    batch * classes instead, which makes its soft term num_classes times smaller.

    Args:
        base_criterion: loss(outputs, targets).
        teacher: frozen model in eval mode, or None for 'none'.
        distillation_type: 'none', 'soft' or 'hard'.
        alpha: weight of the distillation term.
        tau: softmax temperature of the soft term.
    """

    def __init__(self, base_criterion: nn.Module, teacher: Optional[nn.Module], distillation_type: str = 'none',
                 alpha: float = 0.5, tau: float = 1.0):
        super().__init__()
        if distillation_type not in ('none', 'soft', 'hard'):
            raise ValueError(f"--distillation-type must be 'none', 'soft' or 'hard', got {distillation_type!r}")
        if distillation_type != 'none' and teacher is None:
            raise ValueError(f'--distillation-type {distillation_type} needs a teacher model')
        self.base_criterion = base_criterion
        self.teacher = teacher
        self.distillation_type = distillation_type
        self.alpha = alpha
        self.tau = tau

    def forward(self, inputs: torch.Tensor, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        outputs_kd = None
        if not isinstance(outputs, torch.Tensor):
            outputs, outputs_kd = outputs  # (B, C) class token, (B, C) distillation token
        base_loss = self.base_criterion(outputs, targets)
        if self.distillation_type == 'none':
            return base_loss
        if outputs_kd is None:
            raise ValueError('distillation needs a model returning (cls, dist) logits in training: use a *_distilled '
                             'model (set_distilled_training(True))')
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.distillation_type == 'soft':
            t = self.tau
            kd = F.kl_div(F.log_softmax(outputs_kd / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                          reduction='batchmean', log_target=True) * (t * t)
        else:
            kd = F.cross_entropy(outputs_kd, teacher_logits.argmax(dim=1))
        return base_loss * (1 - self.alpha) + kd * self.alpha


class KanRegularizedLoss(nn.Module):
    """criterion(inputs, outputs, targets) + weight * sum of regularization_loss() over the given KAN modules.

    Args:
        criterion: the wrapped (inputs, outputs, targets) criterion.
        kan_modules: the KAN layers of the unwrapped model (kan_training.outermost_modules_with).
        weight: --kan-reg-weight.
    """

    def __init__(self, criterion: nn.Module, kan_modules: Iterable[nn.Module], weight: float):
        super().__init__()
        self.criterion = criterion
        self.kan_modules = list(kan_modules)  # plain list: not registered as submodules, not in state_dict
        self.weight = weight
        if not self.kan_modules:
            raise ValueError('--kan-reg-weight > 0 but the model has no layer with regularization_loss()')

    def forward(self, inputs: torch.Tensor, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(inputs, outputs, targets) + self.weight * kan_regularization(self.kan_modules)


class AuxiliaryLoss(nn.Module):
    """criterion(inputs, outputs, targets) + weight * sum of auxiliary_loss() over the given modules: the losses a
    layer computes in its forward, e.g. the load balancing of a mixture of experts (layers.MoEKANConv). The sum's mean
    over the steps since the last `pop_mean()` is kept for the log (this rank's steps).

    Args:
        criterion: the wrapped (inputs, outputs, targets) criterion.
        aux_modules: the modules with auxiliary_loss() of the unwrapped model (kan_training.outermost_modules_with).
        weight: --moe-aux-weight.
    """

    def __init__(self, criterion: nn.Module, aux_modules: Iterable[nn.Module], weight: float):
        super().__init__()
        self.criterion = criterion
        self.aux_modules = list(aux_modules)  # plain list: not registered as submodules, not in state_dict
        self.weight = weight
        if not self.aux_modules:
            raise ValueError('AuxiliaryLoss: the model has no layer with auxiliary_loss()')
        self._sum: Optional[torch.Tensor] = None
        self._steps = 0

    def forward(self, inputs: torch.Tensor, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        aux = torch.stack([m.auxiliary_loss().float() for m in self.aux_modules]).sum()
        self._sum = aux.detach() if self._sum is None else self._sum + aux.detach()  # no host sync per step
        self._steps += 1
        return self.criterion(inputs, outputs, targets) + self.weight * aux

    def pop_mean(self) -> Optional[float]:
        """Mean of the (unweighted) auxiliary sum over the steps since the last call; None if there were none."""
        mean = None if self._sum is None else self._sum.item() / self._steps
        self._sum, self._steps = None, 0
        return mean
