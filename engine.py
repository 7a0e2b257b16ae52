"""The training loop and the evaluation loop (DeiT's engine.py): explicit keyword arguments, averaged metrics out.

    stats = train_one_epoch(model=model, criterion=criterion, data_loader=loader, optimizer=optimizer,
                            device=device, epoch=epoch, num_epochs=num_epochs)
    stats = evaluate(model=model_without_ddp, data_loader=val_loader, device=device)
"""
import math
import time
from typing import Any, Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import dispatch_clip_grad, unwrap_model

from vision_kan.train.distributed import all_reduce_sum
from vision_kan.train.errors import NonFiniteLossError
from vision_kan.train.progress import Progress

__all__ = ['train_one_epoch', 'evaluate', 'autocast']


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """Autocast to amp_dtype (float16 / bfloat16) on device, or a disabled context for full precision."""
    return torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def _global_mean(loss: torch.Tensor, world_size: int) -> float:
    """The batch loss averaged over ranks: every rank sees the same number, so a NaN stops all of them together."""
    t = all_reduce_sum(loss.detach().float().reshape(1).clone())
    return t.item() / world_size


def train_one_epoch(
        *,
        model: nn.Module,
        criterion: Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor],
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        epoch: int,
        num_epochs: int,
        world_size: int = 1,
        mixup_fn: Optional[Callable] = None,
        model_ema: Optional[Any] = None,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        amp_dtype: Optional[torch.dtype] = None,
        clip_grad: Optional[float] = None,
        clip_mode: str = 'norm',
        lr_scheduler: Optional[Any] = None,
        show_progress: bool = True,
        print_freq: int = 50,
) -> Dict[str, float]:
    """One pass over data_loader; returns {'loss', 'lr', 'img_per_s', 'time'} averaged over the epoch.

    Args:
        model: the model being trained (DDP-wrapped when distributed).
        criterion: criterion(inputs, outputs, targets) -> scalar (distillation and KAN penalty are wrappers).
        epoch: 0-based; with len(data_loader) it gives the update count passed to the EMA and the scheduler.
        world_size: processes in the job (for the global loss and images/s).
        mixup_fn: timm Mixup (or None): mixes inputs and turns targets into soft targets.
        model_ema: KanModelEma / ModelEmaV3 updated after every step, or None.
        grad_scaler: torch.amp.GradScaler for float16, None otherwise.
        amp_dtype: torch.float16 / torch.bfloat16 autocast, None for full precision.
        clip_grad: gradient clipping value, None for none; clip_mode: 'norm', 'value' or 'agc'.
        lr_scheduler: timm scheduler; step_update() runs after every step (a no-op for per-epoch schedules).
        show_progress: False on ranks other than 0.
    Raises:
        NonFiniteLossError: the loss is NaN or infinite (before any update with it).
    """
    model.train()
    steps = len(data_loader)  # type: ignore[arg-type]
    progress = Progress(steps, f'Epoch {epoch + 1}/{num_epochs}', enabled=show_progress, print_freq=print_freq)
    loss_total = lr_total = 0.0
    images = 0
    start = time.perf_counter()
    for step, (samples, targets) in enumerate(data_loader):
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            samples, targets = mixup_fn(samples, targets)

        with autocast(device, amp_dtype):
            outputs = model(samples)
            loss = criterion(samples, outputs, targets)
        loss_value = _global_mean(loss, world_size)
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f'training loss is {loss_value} at epoch {epoch + 1}, step {step + 1}: stopped '
                                     f'before updating with it (try a lower --lr, --clip-grad, or bfloat16 AMP)')

        optimizer.zero_grad(set_to_none=True)
        if grad_scaler is not None:  # float16: scale the loss so small gradients survive, unscale before clipping
            grad_scaler.scale(loss).backward()
            if clip_grad is not None:
                grad_scaler.unscale_(optimizer)
                dispatch_clip_grad(model.parameters(), clip_grad, mode=clip_mode)
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            loss.backward()
            if clip_grad is not None:
                dispatch_clip_grad(model.parameters(), clip_grad, mode=clip_mode)
            optimizer.step()

        lr = optimizer.param_groups[0]['lr']
        num_updates = epoch * steps + step + 1
        if model_ema is not None:
            model_ema.update(unwrap_model(model), step=num_updates)
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates)

        loss_total += loss_value
        lr_total += lr
        images += samples.shape[0] * world_size
        progress.update({'loss': loss_total / (step + 1), 'lr': lr,
                         'img/s': images / (time.perf_counter() - start)})
    progress.close()
    elapsed = time.perf_counter() - start
    return {'loss': loss_total / steps, 'lr': lr_total / steps, 'img_per_s': images / elapsed, 'time': elapsed}


@torch.no_grad()
def evaluate(
        *,
        model: nn.Module,
        data_loader: Iterable,
        device: torch.device,
        amp_dtype: Optional[torch.dtype] = None,
        show_progress: bool = True,
        desc: str = 'Eval',
        print_freq: int = 50,
) -> Dict[str, float]:
    """Cross-entropy, top-1 and top-5 accuracy (%) over the whole set: per-rank sums reduced once, so the numbers
    are exact (no padded duplicates). Pass the unwrapped model: shards may differ in length by one batch.

    Returns:
        {'loss', 'acc1', 'acc5', 'n'}; acc5 is top-min(5, classes).
    """
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    progress = Progress(len(data_loader), desc, enabled=show_progress, print_freq=print_freq)  # type: ignore
    for images, targets in data_loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)  # (B, C)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        hits = top.eq(targets[:, None])  # (B, k), at most one True per row
        sums += torch.stack([F.cross_entropy(logits, targets, reduction='sum').double(),
                             hits[:, 0].sum().double(), hits.sum().double(),
                             torch.tensor(float(len(targets)), dtype=torch.float64, device=device)])
        progress.update({'acc1': 100.0 * sums[1].item() / max(1.0, sums[3].item())})
    progress.close()
    all_reduce_sum(sums)
    n = max(1.0, sums[3].item())
    return {'loss': sums[0].item() / n, 'acc1': 100.0 * sums[1].item() / n, 'acc5': 100.0 * sums[2].item() / n,
            'n': int(sums[3].item())}
