"""The KAN-specific parts of training: the regularisation sum and the scheduled grid update.

KAN layers are found by duck typing, so any layer family works: `regularization_loss()` for the penalty,
`update_grid(x, margin=..., grid=None)` with x of shape (..., in_features) for the grid update (KANLinear).

Grid update across DDP replicas: every rank hooks the inputs of each KAN layer on a few of its own training
images, the samples are all-gathered (every rank refits on the same global sample), and rank 0's resulting
layer state (grid, spline_weight, spline_scaler, ...) is broadcast, so replicas stay bit-identical whatever the
floating-point order of the refit. The EMA copy adopts the live model's new knots and refits its own coefficients
on its own inputs (`update_grid(x_ema, grid=live.grid)`): averaging grids, or coefficients that belong to other
knots, would not give a meaningful function. Optimizer moments of the refitted coefficients are kept as they are.
"""
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from .distributed import all_gather_cat, broadcast_state

__all__ = ['outermost_modules_with', 'kan_regularization', 'grid_update_due', 'grid_layers', 'collect_layer_inputs',
           'update_kan_grids', 'GridUpdateSchedule', 'scheduled_grid_update']


def outermost_modules_with(model: nn.Module, method: str) -> List[Tuple[str, nn.Module]]:
    """(name, module) of modules defining a callable `method`, skipping those inside one already taken (a container
    that sums its children's penalties is counted once)."""
    found: List[Tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if not callable(getattr(m, method, None)):
            continue
        if any(p == '' or name.startswith(p + '.') for p, _ in found):
            continue
        found.append((name, m))
    return found


def kan_regularization(modules: Iterable[nn.Module]) -> torch.Tensor:
    """Sum of regularization_loss() (efficient-KAN: L1 + entropy of the spline coefficients) over modules."""
    terms = [m.regularization_loss() for m in modules]
    if not terms:
        raise ValueError('--kan-reg-weight > 0 but the model has no layer with regularization_loss()')
    return torch.stack([t.float() for t in terms]).sum()


def grid_update_due(epochs_done: int, epochs: Sequence[int] = (), every: int = 0, until: Optional[int] = None) -> bool:
    """True when a grid update runs after `epochs_done` finished epochs (counted from 1).

    Args:
        epochs: explicit list (--grid-update-epochs 1 10 20).
        every: also every N epochs (--grid-update-every); 0 = off.
        until: no periodic update after this many epochs (--grid-update-until); None = no limit.
    """
    if epochs_done in set(epochs):
        return True
    return every > 0 and epochs_done % every == 0 and (until is None or epochs_done <= until)


def grid_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """name -> module for KAN layers with update_grid and an in_features width (KANLinear-like)."""
    return {n: m for n, m in outermost_modules_with(model, 'update_grid') if hasattr(m, 'in_features')}


@torch.no_grad()
def collect_layer_inputs(
        model: nn.Module,
        layers: Dict[str, nn.Module],
        loader: Iterable,
        device: torch.device,
        max_tokens: int,
        generator: torch.Generator,
        autocast: Optional[ContextManager] = None,
) -> Dict[str, torch.Tensor]:
    """Forward the loader's images through model (eval mode) and keep, per layer, a random subsample of the rows its
    input holds: (..., d) inputs -> (<= max_tokens, d) float32 on device."""
    num_batches = max(1, len(loader))  # type: ignore[arg-type]
    per_batch = math.ceil(max_tokens / num_batches)
    kept: Dict[str, List[torch.Tensor]] = {n: [] for n in layers}

    def hook_for(name: str, width: int):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if x.shape[-1] != width:
                raise ValueError(f'grid update: layer {name} got inputs of shape {tuple(x.shape)}; update_grid needs '
                                 f'(..., in_features={width})')
            x = x.reshape(-1, width)  # (M, d), every leading position is a sample
            pick = torch.randperm(x.shape[0], generator=generator)[:per_batch].to(x.device)
            kept[name].append(x[pick].float())
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n, m.in_features)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for images, _ in loader:
            with autocast or nullcontext():
                model(images.to(device, non_blocking=True))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: torch.cat(v)[:max_tokens] for n, v in kept.items()}


def _gather_same_count(x: torch.Tensor) -> torch.Tensor:
    """All-gather (M_rank, d) samples after cutting every rank to the smallest M."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    m = torch.tensor([x.shape[0]], device=x.device)
    dist.all_reduce(m, op=dist.ReduceOp.MIN)
    return all_gather_cat(x[:int(m.item())])


def _refresh(layers: Iterable[nn.Module]) -> None:
    """Let layers re-derive Python-side state from their (broadcast) buffers, e.g. KANLinear.grid_uniform."""
    for m in layers:
        m.load_state_dict(m.state_dict())


@torch.no_grad()
def update_kan_grids(
        model: nn.Module,
        loader: Iterable,
        device: torch.device,
        max_tokens: int = 4096,
        seed: int = 0,
        margin: float = 0.01,
        ema_model: Optional[nn.Module] = None,
        autocast: Optional[ContextManager] = None,
        grid_eps: Optional[float] = None,
) -> int:
    """Re-place every KAN grid on the data (see the module docstring) and return how many layers were updated.

    Args:
        model: the unwrapped model (not the DDP wrapper: the forward must not trigger collectives).
        loader: this rank's sample images (build_grid_sample_loader).
        device: where the model lives.
        max_tokens: input rows kept per layer in all (split over ranks), e.g. 4096.
        seed: seeds the row subsampling (combined with the rank).
        margin: passed to update_grid.
        ema_model: the EMA copy (ModelEmaV3.module) to move onto the same knots, or None.
        autocast: the training autocast context, or None.
        grid_eps: knot placement passed to update_grid (None: each layer's own; 1.0: uniform over the data span,
            which keeps the fused kernels).
    """
    layers = grid_layers(model)
    if not layers:
        return 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    per_rank = math.ceil(max_tokens / world)

    g = torch.Generator()
    g.manual_seed(seed * 1009 + rank)
    xs = collect_layer_inputs(model, layers, loader, device, per_rank, g, autocast)
    for name, layer in layers.items():
        layer.update_grid(_gather_same_count(xs[name]), margin=margin, grid_eps=grid_eps)
    broadcast_state(model)
    _refresh(layers.values())

    if ema_model is not None:
        ema_named = dict(ema_model.named_modules())
        ema_layers = {n: ema_named[n] for n in layers}
        ema_device = next(ema_model.parameters()).device  # the CPU with --model-ema-force-cpu
        xs = collect_layer_inputs(ema_model, ema_layers, loader, ema_device, per_rank, g,
                                  autocast if ema_device == device else None)
        for name, layer in ema_layers.items():
            x = _gather_same_count(xs[name].to(device)).to(ema_device)  # gathered where the backend can
            layer.update_grid(x, margin=margin, grid=layers[name].grid)
        broadcast_state(ema_model)
        _refresh(ema_layers.values())
    return len(layers)


@dataclass(frozen=True)
class GridUpdateSchedule:
    """When and how main.py re-places the KAN grids (the --grid-update-* flags).

    epochs: after these epochs (1-based); every: and every N epochs (0: off); until: no periodic update after this
    epoch; images: training images seen by an update; tokens: input rows kept per layer; margin, eps: passed to
    update_grid (eps None: each layer's own grid_eps).
    """
    epochs: Tuple[int, ...] = ()
    every: int = 0
    until: Optional[int] = None
    images: int = 256
    tokens: int = 4096
    margin: float = 0.01
    eps: Optional[float] = None

    @classmethod
    def from_flags(cls, flags: Any) -> 'GridUpdateSchedule':
        """From main.py's namespace: grid_update_epochs, grid_update_every, ... -> epochs, every, ..."""
        return cls(epochs=tuple(flags.grid_update_epochs), every=flags.grid_update_every,
                   until=flags.grid_update_until, images=flags.grid_update_images, tokens=flags.grid_update_tokens,
                   margin=flags.grid_update_margin, eps=flags.grid_update_eps)

    @property
    def active(self) -> bool:
        return bool(self.epochs) or self.every > 0

    def due(self, epochs_done: int) -> bool:
        return self.active and grid_update_due(epochs_done, self.epochs, self.every, self.until)


def scheduled_grid_update(
        model: nn.Module,
        epoch: int,
        schedule: GridUpdateSchedule,
        sample_loader: Callable[[int], Iterable],
        device: torch.device,
        seed: int = 0,
        ema_model: Optional[nn.Module] = None,
        autocast: Optional[ContextManager] = None,
) -> int:
    """After 0-based `epoch`: update_kan_grids when the schedule says so; returns how many layers were updated (0 when
    no update was due). sample_loader(images) builds this rank's loader of that many sample images (only when due).
    """
    if not schedule.due(epoch + 1):
        return 0
    return update_kan_grids(model, sample_loader(schedule.images), device, schedule.tokens, seed + epoch,
                            schedule.margin, ema_model, autocast, schedule.eps)
