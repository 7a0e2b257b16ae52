"""Checkpoints: atomic writes, safe loads, RNG state, and model loading with one-line mismatch errors.

A save writes a temporary file in the target's directory, fsyncs it and renames it over the target
(`os.replace` is atomic on POSIX), so a crash or `kill -9` mid-save leaves the previous checkpoint as it was.
Loads use `torch.load(weights_only=True)`: checkpoints hold only tensors and plain Python values.
"""
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed

from .errors import CheckpointError

__all__ = ['save_atomic', 'write_atomic', 'load_checkpoint', 'get_rng_state', 'set_rng_state', 'load_model_state',
           'load_finetune_state', 'model_state_from', 'checkpoint_payload']

PathLike = Union[str, Path]
_TMP_TAG = '.tmp-'


def save_atomic(obj: Any, path: PathLike) -> None:
    """torch.save(obj) to path through a fsynced temporary file in the same directory and os.replace."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_atomic(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """write(f) into a temporary file beside path, fsync it, os.replace it onto path, fsync the directory: a kill
    at any point leaves either the old file or the new one, never a half-written path."""
    path = Path(path)
    for stale in path.parent.glob(f'.{path.name}{_TMP_TAG}*'):  # left behind by a killed save
        stale.unlink(missing_ok=True)
    tmp = path.parent / f'.{path.name}{_TMP_TAG}{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _unreadable_reason(path: PathLike, error: Exception) -> str:
    """Why torch.load failed, in the user's terms: empty, damaged/truncated, arbitrary objects, or not torch's."""
    size = os.path.getsize(path)
    if size == 0:
        return 'the file is empty (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head != b'PK\x03\x04' and head[:1] != b'\x80':  # neither torch's zip format nor a pickle
        return f'not a PyTorch checkpoint ({type(error).__name__})'
    if isinstance(error, pickle.UnpicklingError) and 'weights_only' in str(error).lower().replace(' ', '_'):
        return 'it holds Python objects other than tensors and plain values (refused by weights_only loading)'
    if head == b'PK\x03\x04' and not zipfile.is_zipfile(path):  # torch's zip format without its end: cut short
        return f'the file is damaged or truncated ({size} bytes: the end of the archive is missing; an interrupted ' \
               f'copy or download?)'
    return f'the file is damaged or truncated ({size} bytes; {type(error).__name__})'  # does not read through


def load_checkpoint(path: PathLike, what: str = '--resume', mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint on the CPU (weights only). Raises CheckpointError naming the flag, the file and what is
    wrong with it (missing, empty, damaged/truncated, not a checkpoint).

    mmap: map the tensors instead of reading them (cheap: for checking a file and reading its config up front).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f'{what}: checkpoint file {path} does not exist')
    if not os.access(path, os.R_OK):
        raise CheckpointError(f'{what}: checkpoint file {path} cannot be read (permissions)')
    try:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not mmap or 'mmap' not in str(e):
                raise
            ckpt = torch.load(path, map_location='cpu', weights_only=True)  # the legacy format cannot be mapped
    except Exception as e:  # a truncated zip, a pickle of arbitrary objects, not a torch file at all
        raise CheckpointError(f'{what}: cannot read {path}: {_unreadable_reason(path, e)}') from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{what}: {path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    return ckpt


def get_rng_state() -> Dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, numpy, random) as tensors and plain values."""
    np_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        'random': random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['random']
    random.setstate((version, tuple(internal), gauss))


def model_state_from(ckpt: Dict[str, Any], keys: Sequence[str] = ('model', 'state_dict', 'model_ema')) -> Dict:
    """The model state dict inside a checkpoint (ours, timm's, DeiT's) or the checkpoint itself."""
    for k in keys:
        if k in ckpt and isinstance(ckpt[k], dict):
            return ckpt[k]
    return ckpt


def _mismatch_summary(model: nn.Module, state: Dict[str, torch.Tensor]) -> List[str]:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
              if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, items in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', shapes)):
        if items:
            parts.append(f'{len(items)} {label} (e.g. {items[0]})')
    return parts


def load_model_state(model: nn.Module, state: Dict[str, torch.Tensor], path: PathLike, model_name: str,
                     what: str = '--resume') -> None:
    """Strict load; a mismatch becomes one CheckpointError line naming the file, the model and what differs."""
    parts = _mismatch_summary(model, state)
    if parts:
        raise CheckpointError(f'{what}: checkpoint {path} does not match model {model_name}: {"; ".join(parts)}')
    model.load_state_dict(state, strict=True)


def load_finetune_state(model: nn.Module, state: Dict[str, torch.Tensor], path: PathLike, model_name: str,
                        log=print) -> None:
    """Fine-tune start: resample an absolute position embedding to the model's grid, drop classifier weights whose
    shape differs (the head is reset: it keeps this model's fresh init), load the rest; anything else that does
    not match is a CheckpointError.
    """
    state = dict(state)
    own = model.state_dict()
    pos = state.get('pos_embed')
    if pos is not None and 'pos_embed' in own and pos.shape != own['pos_embed'].shape:
        prefix = 0 if getattr(model, 'no_embed_class', False) else getattr(model, 'num_prefix_tokens', 1)
        grid = list(model.patch_embed.grid_size)
        state['pos_embed'] = resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=prefix)
        log(f'finetune: position embedding {tuple(pos.shape)} resampled to {tuple(state["pos_embed"].shape)}')
    classifier = getattr(model, 'pretrained_cfg', {}).get('classifier', 'head')
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    for key in list(state):
        if any(key.startswith(h + '.') for h in heads) and key in own and state[key].shape != own[key].shape:
            log(f'finetune: {key} reset ({tuple(state[key].shape)} in the checkpoint, {tuple(own[key].shape)} here)')
            state[key] = own[key]  # keep the model's own fresh init: the head is reset
    load_model_state(model, state, path, model_name, what='--finetune')


def checkpoint_payload(
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        grad_scaler: Optional[Any],
        model_ema: Optional[nn.Module],
        epoch: int,
        max_accuracy: float,
        config: Dict[str, Any],
        rng: List[Dict[str, Any]],
) -> Dict[str, Any]:
    """What checkpoint.pth holds; entries that do not apply are None (a run without EMA saves fine). No scheduler
    state: timm's schedules are functions of the epoch, rebuilt from the flags on resume."""
    return {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'scaler': grad_scaler.state_dict() if grad_scaler is not None else None,
        'model_ema': model_ema.module.state_dict() if model_ema is not None else None,
        'epoch': epoch,
        'max_accuracy': max_accuracy,
        'num_classes': getattr(model, 'num_classes', None),  # with config's model/model_kwargs: enough to rebuild
        'config': config,
        'rng': rng,
    }


# --- safetensors: the weights alone, in the format timm, torch.hub and the Hugging Face hub read ------------------

__all__ += ['SAFETENSORS_NAME', 'save_model_safetensors', 'load_model_weights', 'check_weights_file']

SAFETENSORS_NAME = 'model.safetensors'


def save_model_safetensors(model: nn.Module, path: PathLike, metadata: Optional[Dict[str, str]] = None) -> None:
    """model.state_dict() (parameters and buffers: KAN grids included) as a .safetensors file, written atomically
    like `save_atomic`. Tensors are copied to the CPU one by one, so shared storage is never an error."""
    from safetensors.torch import save
    tensors = {k: v.detach().to('cpu', copy=True).contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={'format': 'pt', **(metadata or {})})
    write_atomic(path, lambda f: f.write(data))


def load_model_weights(path: PathLike, what: str = '--finetune') -> Dict[str, torch.Tensor]:
    """The model state dict in a .safetensors file or in a checkpoint (`model_state_from`). CheckpointError names
    the flag and the file when it is missing or unreadable."""
    if not str(path).endswith('.safetensors'):
        return model_state_from(load_checkpoint(path, what))
    if not os.path.isfile(path):
        raise CheckpointError(f'{what}: weights file {path} does not exist')
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device='cpu')
    except Exception as e:  # safetensors raises its own SafetensorError for a truncated or foreign file
        raise CheckpointError(f'{what}: cannot read {path}: not a complete safetensors file ({type(e).__name__})') \
            from None


def check_weights_file(path: PathLike, what: str = '--finetune') -> None:
    """Up front, cheaply: a .safetensors file whose header reads, or a readable checkpoint (tensors mapped, not
    read). CheckpointError names the flag and the file otherwise."""
    if not str(path).endswith('.safetensors'):
        load_checkpoint(path, what, mmap=True)
        return
    if not os.path.isfile(path):
        raise CheckpointError(f'{what}: weights file {path} does not exist')
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            f.keys()
    except Exception as e:  # SafetensorError for a truncated or foreign file
        raise CheckpointError(f'{what}: cannot read {path}: not a complete safetensors file ({type(e).__name__})') \
            from None
