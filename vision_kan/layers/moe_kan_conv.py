"""A sparsely gated mixture of conv-KAN experts: each sample goes to its top-k experts, weighted by a gate.

Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer (Shazeer et al., 2017) -
https://arxiv.org/abs/1701.06538 ; torch-conv-kan's MoE conv-KAN - https://github.com/IvanDrokin/torch-conv-kan

    layer = MoEKANConv(64, 64, 3, padding=1, conv_type='kagn', num_experts=8, top_k=2, norm_layer=nn.BatchNorm2d)
    y = layer(x)                                     # (B, 64, H, W)
    loss = task_loss + 1e-2 * layer.auxiliary_loss()  # load balancing (train/losses.AuxiliaryLoss does this)

Gating, per sample (the gate sees the globally pooled input p (B, Cin)):
    H = p W_g + eps * softplus(p W_n),  eps ~ N(0, 1) in training (noisy_gating), 0 otherwise   (B, E)
    G = softmax over the top-k entries of H, 0 elsewhere                                       (B, E)
    y = sum_e G_e expert_e(x), then the layer's norm and activation (shared, after the mixture)
Load-balancing loss (Shazeer's): cv^2(importance) + cv^2(load), importance_e = sum_b G_be, load_e = sum_b
P(H_be stays in the top k when its noise is redrawn) (a smooth estimate, so its gradient reaches the gate columns of
every expert, also those no sample chose); without noise, load_e counts the samples routed to e. cv^2 = var/mean^2.

Experts are conv-KAN layers of any family (`kan_conv_families`) without norm; they start identical
(torch-conv-kan's choice; `identical_init=False` draws each). In eager mode every expert runs on exactly its samples
(an expert with none runs on an empty batch, so every parameter still gets a gradient, zero, as DDP expects); under
torch.compile every expert runs on the whole batch and the gates zero the rest (no data-dependent shapes, no graph
break; the same result, E / k times the expert compute).
"""
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kan_conv_families import CONV_KAN_FAMILIES

__all__ = ['MoEKANConv', 'cv_squared']


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation var(x) / mean(x)^2 of a 1-d tensor (0 for a single element)."""
    if x.numel() < 2:
        return x.new_zeros(())
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return x.var() / (x.mean() ** 2 + eps)


class MoEKANConv(nn.Module):
    """Top-k gated mixture of conv-KAN experts with a load-balancing auxiliary loss.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as in nn.ConvNd (every expert).
        conv_type: expert family, a key of CONV_KAN_FAMILIES.
        num_experts: E.
        top_k: experts per sample, 1 <= k <= E.
        noisy_gating: add learned-scale Gaussian noise to the gate logits in training.
        ndim: 1, 2 or 3.
        norm_layer: norm after the mixture, called with out_channels (e.g. nn.BatchNorm2d).
        act_layer: activation class after the norm.
        identical_init: experts start as copies of the first.
        conv_kwargs: the family's keywords (degree, grid_size, dropout, ...).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, *, conv_type: str = 'kagn', num_experts: int = 8, top_k: int = 2,
                 noisy_gating: bool = True, ndim: int = 2, norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 act_layer: Optional[Callable[[], nn.Module]] = None, identical_init: bool = True,
                 **conv_kwargs: Any):
        super().__init__()
        owner = 'MoEKANConv'
        if conv_type not in CONV_KAN_FAMILIES:
            raise ValueError(f'{owner}: conv_type must be one of {sorted(CONV_KAN_FAMILIES)}, got {conv_type!r}')
        if not (isinstance(num_experts, int) and num_experts >= 1):
            raise ValueError(f'{owner}: num_experts must be an integer >= 1, got {num_experts!r}')
        if not (isinstance(top_k, int) and 1 <= top_k <= num_experts):
            raise ValueError(f'{owner}: top_k must be an integer in [1, num_experts={num_experts}], got {top_k!r}')
        family = CONV_KAN_FAMILIES[conv_type]
        self.in_channels, self.out_channels, self.ndim = in_channels, out_channels, ndim
        self.num_experts, self.top_k, self.noisy_gating = num_experts, top_k, noisy_gating
        self.experts = nn.ModuleList(
            family(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, ndim=ndim,
                   **conv_kwargs) for _ in range(num_experts))
        if identical_init:
            for expert in self.experts[1:]:
                expert.load_state_dict(self.experts[0].state_dict())
        self.w_gate = nn.Parameter(torch.zeros(in_channels, num_experts))  # (Cin, E), zero: uniform start
        self.w_noise = nn.Parameter(torch.zeros(in_channels, num_experts))
        self.norm = norm_layer(out_channels) if norm_layer is not None else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()
        self._aux_loss: Optional[torch.Tensor] = None

    def gate(self, x: torch.Tensor):
        """x (B, Cin, *S) -> gates (B, E) (k nonzero per row, summing to 1) and the load-balancing loss (scalar)."""
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 for half inputs (fp64 stays fp64)
        pooled = x.to(dtype).mean(dim=tuple(range(2, x.dim())))  # (B, Cin)
        clean = pooled @ self.w_gate.to(dtype)  # (B, E)
        noisy = self.noisy_gating and self.training
        if noisy:
            noise_std = F.softplus(pooled @ self.w_noise.to(dtype)) + 1e-2
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        k, num = self.top_k, self.num_experts
        top_values, top_index = logits.topk(min(k + 1, num), dim=1)  # (B, k+1)
        gates = torch.zeros_like(logits).scatter(1, top_index[:, :k], top_values[:, :k].softmax(dim=1))
        importance = gates.sum(0)  # (E,)
        if noisy and k < num:
            # P(expert e is in the top k when only its own noise is redrawn): compare its clean logit with the k-th
            # largest of the others (the (k+1)-th noisy value if e is in, the k-th if it is out)
            in_top = logits >= top_values[:, k - 1:k]
            threshold = torch.where(in_top, top_values[:, k:k + 1], top_values[:, k - 1:k])  # (B, E)
            load = torch.special.ndtr((clean - threshold) / noise_std).sum(0)  # (E,)
        else:
            load = (gates > 0).float().sum(0)
        return gates, cv_squared(importance) + cv_squared(load)

    def auxiliary_loss(self) -> torch.Tensor:
        """The load-balancing loss of the last forward (0 before the first)."""
        if self._aux_loss is None:
            return self.w_gate.new_zeros(())
        return self._aux_loss

    def regularization_loss(self, l1: float = 1.0, l2: float = 0.0) -> torch.Tensor:
        """Sum of the experts' conv-KAN penalties."""
        return torch.stack([e.regularization_loss(l1, l2) for e in self.experts]).sum()

    def _mix_sparse(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        routed = (gates > 0).t()  # (E, B)
        pairs = routed.nonzero()  # (B * k, 2): (expert, sample), grouped by expert
        counts = routed.sum(1).tolist()  # samples per expert: the one host sync of the dispatch
        out = None
        for e, (expert, rows) in enumerate(zip(self.experts, pairs[:, 1].split(counts))):
            y = expert(x.index_select(0, rows))  # (n_e, Cout, *S'); n_e may be 0
            y = y * gates[rows, e].to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
            if out is None:
                out = y.new_zeros(x.shape[0], *y.shape[1:])
            out = out.index_add(0, rows, y)
        return out

    def _mix_dense(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        out = 0
        for e, expert in enumerate(self.experts):
            y = expert(x)
            out = out + y * gates[:, e].to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates, aux = self.gate(x)
        self._aux_loss = aux
        mix = self._mix_dense if torch.compiler.is_compiling() else self._mix_sparse
        return self.act(self.norm(mix(x, gates)))

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}, top_k={self.top_k}, noisy_gating={self.noisy_gating}'
