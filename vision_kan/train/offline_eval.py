"""Rebuild a model from a main.py checkpoint and evaluate it on one ImageFolder, outside the training loop.

Shared by the command-line tools (vision_kan.tools.compare, .quantize, .plot_kan).
"""
import io
import os
import platform
import time
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .checkpoint import load_checkpoint, load_model_state, model_state_from
from .data import TransformConfig, build_transform, load_rgb_image
from .errors import CheckpointError, ConfigError, DataError
from .model_factory import create_model

__all__ = ['model_from_checkpoint', 'imagefolder_loader', 'evaluate_model', 'model_size_mb', 'device_description']


def model_size_mb(model: nn.Module) -> float:
    """Size of the model's state_dict as torch.save writes it, in MB (2^20 bytes)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 2 ** 20


def device_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (torch {torch.__version__})'
    return f'CPU {platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})'


def _num_classes_from_state(model_name: str, state: Dict[str, torch.Tensor]) -> Optional[int]:
    """Outputs of the classifier in a state dict: dim 0 of the first tensor under the model's classifier prefix
    (nn.Linear weight, KAN layers' base/spline/poly weight: all (num_classes, ...) and registered first)."""
    import timm
    try:
        classifier = timm.models.get_pretrained_cfg(model_name).classifier
    except Exception:  # a model without a pretrained cfg
        classifier = 'head'
    prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    for key, value in state.items():
        if any(key.startswith(p + '.') for p in prefixes) and getattr(value, 'dim', lambda: 0)() >= 1:
            return int(value.shape[0])
    return None


def model_from_checkpoint(
        path: str,
        model_name: Optional[str] = None,
        num_classes: Optional[int] = None,
        use_ema: bool = False,
        what: str = '--checkpoint',
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a model from a main.py checkpoint and load its weights (CPU, eval mode).

    The model name and keywords come from the checkpoint's `config` (main.py's arguments); `model_name` overrides
    it (needed for a bare state dict). num_classes: given, else the checkpoint's, else read off the classifier.

    Returns:
        (model, info) with info = {'model', 'model_kwargs', 'input_size', 'eval_crop_ratio', 'num_classes',
        'epoch'}; input_size is None when the checkpoint does not say.
    """
    ckpt = load_checkpoint(path, what)
    config = ckpt.get('config') if isinstance(ckpt.get('config'), dict) else {}
    name = model_name or config.get('model')
    if not name:
        raise CheckpointError(f'{what}: {path} records no model name (not written by main.py?); pass --model NAME')
    state = model_state_from(ckpt, ('model_ema', 'model') if use_ema else ('model', 'state_dict'))
    if use_ema and ckpt.get('model_ema') is None:
        raise CheckpointError(f'{what}: {path} holds no EMA weights (trained with --no-model-ema)')
    kwargs = dict(config.get('model_kwargs') or {})
    n = num_classes or ckpt.get('num_classes') or config.get('num_classes') or _num_classes_from_state(name, state)
    if n is None:
        raise CheckpointError(f'{what}: cannot tell the number of classes of {path}')
    input_size = config.get('input_size')
    build = dict(kwargs, num_classes=int(n))
    if input_size:
        build['img_size'] = int(input_size)
    model = create_model(name, flag=f'{what} {path}: model', log=lambda *a, **k: None, **build)
    load_model_state(model, state, path, name, what=what)
    model.eval()
    info = {'model': name, 'model_kwargs': kwargs, 'input_size': input_size,
            'eval_crop_ratio': float(config.get('eval_crop_ratio', 0.875)), 'num_classes': int(n),
            'epoch': ckpt.get('epoch')}
    return model, info


def imagefolder_loader(root: str, input_size: int, eval_crop_ratio: float = 0.875, batch_size: int = 64,
                       num_workers: int = 0, what: str = '--data-path') -> DataLoader:
    """main.py's eval transform (resize to input_size / crop ratio, centre crop, normalise) over one ImageFolder."""
    if batch_size < 1:
        raise ConfigError(f'--batch-size {batch_size}: must be >= 1')
    if num_workers < 0:
        raise ConfigError(f'--num-workers {num_workers}: must be >= 0')
    if not os.path.isdir(root):
        raise DataError(f'{what}: folder {root} does not exist')
    tf = build_transform(False, TransformConfig(input_size=int(input_size), eval_crop_ratio=eval_crop_ratio))
    try:
        ds = ImageFolder(root, transform=tf, loader=load_rgb_image)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or class folders without images
        raise DataError(f'{what}: {root} is not an ImageFolder (one sub-folder of images per class): '
                        f'{str(e).splitlines()[0]}') from None
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (%) over the loader, and the time it took.

    Returns:
        {'loss', 'acc1', 'acc5', 'n', 'seconds', 'img_per_s'}; acc5 is top-min(5, classes).
    """
    model.eval()
    loss_sum, hits1, hits5, n = 0.0, 0, 0, 0
    start = time.perf_counter()
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images).float()  # (B, classes)
        if logits.shape[1] <= int(targets.max()):
            raise DataError(f'the model has {logits.shape[1]} classes, the data has at least {int(targets.max()) + 1}')
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])  # (B, k)
        loss_sum += F.cross_entropy(logits, targets, reduction='sum').item()
        hits1 += int(top[:, 0].sum())
        hits5 += int(top.sum())
        n += len(targets)
    seconds = time.perf_counter() - start
    n_safe = max(n, 1)
    return {'loss': loss_sum / n_safe, 'acc1': 100.0 * hits1 / n_safe, 'acc5': 100.0 * hits5 / n_safe, 'n': n,
            'seconds': seconds, 'img_per_s': n / max(seconds, 1e-9)}
