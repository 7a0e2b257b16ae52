"""Building the student and the teacher from timm's registry by name, and counting what was built."""
import difflib
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from .checkpoint import load_checkpoint, load_model_state, model_state_from
from .errors import CheckpointError, ConfigError

__all__ = ['check_model_name', 'create_model', 'create_teacher', 'count_params', 'count_gflops']

# keywords main.py passes to every model; a model whose constructor does not take one is built without it
_OPTIONAL_KWARGS = ('img_size', 'drop_path_rate')


def check_model_name(name: str, flag: str = '--model') -> None:
    """ConfigError (with close matches) unless timm knows the name."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise ConfigError(f'{flag}: unknown model {name!r} (see timm.list_models() / vision_kan.list_models()){hint}')


def create_model(name: str, flag: str = '--model', pretrained: bool = False, log=print, **kwargs) -> nn.Module:
    """timm.create_model(name, **kwargs); img_size / drop_path_rate are dropped for models that do not take them
    (a CNN has no img_size) unless the user put them in --model-kwargs. Bad keywords become a ConfigError."""
    check_model_name(name, flag)
    kwargs = dict(kwargs)
    droppable = [k for k in _OPTIONAL_KWARGS if k in kwargs]
    while True:
        try:
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as e:
            culprit = next((k for k in droppable if f"'{k}'" in str(e)), None)
            if culprit is None:
                raise ConfigError(f'{flag} {name}: {e}') from None
            droppable.remove(culprit)
            value = kwargs.pop(culprit)
            if culprit == 'drop_path_rate' and value:
                log(f'note: {name} has no drop path; --drop-path {value} is not used')
        except (ValueError, AssertionError) as e:
            raise ConfigError(f'{flag} {name} with {kwargs}: {e}') from None


def create_teacher(
        name: str,
        num_classes: int,
        checkpoint_path: str = '',
        pretrained: bool = False,
        random_init: bool = False,
        model_kwargs: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """A frozen teacher in eval mode: weights from checkpoint_path, or timm's pretrained download, or (only when
    asked for explicitly, for smoke tests) a random init."""
    if not (checkpoint_path or pretrained or random_init):
        raise ConfigError(f'distillation needs the weights of teacher {name}: pass --teacher-path CHECKPOINT, or '
                          f'--teacher-pretrained to download them through timm (or --teacher-random-init for a test)')
    try:
        teacher = create_model(name, flag='--teacher-model', pretrained=pretrained and not checkpoint_path,
                               num_classes=num_classes, **(model_kwargs or {}))
    except (OSError, RuntimeError) as e:  # download failed
        raise CheckpointError(f'--teacher-pretrained: cannot get weights for {name}: {str(e).splitlines()[0]}; '
                              f'pass --teacher-path') from None
    if checkpoint_path:
        ckpt = load_checkpoint(checkpoint_path, '--teacher-path')
        load_model_state(teacher, model_state_from(ckpt), checkpoint_path, name, what='--teacher-path')
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter elements: the trainable ones (requires_grad: what the optimizer updates, main.py's log)
    by default; every parameter, frozen ones included, with trainable_only=False (the model's size: compare,
    quantize). Buffers (e.g. KAN grids) are not parameters and never counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: Sequence[int], device: torch.device = torch.device('cpu')
               ) -> Tuple[Optional[float], str]:
    """(GMACs of one image, counter) in fvcore's convention (multiply-adds of matmuls/convs; KAN basis element-wise
    ops are not counted): fvcore, or torch's FlopCounterMode / 2 where fvcore is missing or cannot trace the model
    (conv-KAN layers); (None, 'none') when neither can count. Attention is counted through timm's plain path."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_size, device=device)
    # neither counter sees inside scaled_dot_product_attention: count timm's plain attention path
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')}
    for m in fused:
        m.fused_attn = False
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # fvcore's import trips torch.jit deprecation warnings
            try:
                from fvcore.nn import FlopCountAnalysis
                counter = FlopCountAnalysis(model, x)
                counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                return counter.total() / 1e9, 'fvcore'
            except Exception:
                from torch.utils.flop_counter import FlopCounterMode
                flops = FlopCounterMode(display=False)
                with flops:
                    model(x)
                return flops.get_total_flops() / 2e9, 'torch'
    except Exception:  # a counting failure must never stop training
        return None, 'none'
    finally:
        for m, flag in fused.items():
            m.fused_attn = flag
        model.train(was_training)


def count_gflops(model: nn.Module, input_size: Sequence[int], device: torch.device) -> Optional[float]:
    """GMACs of one image ('GFLOPs' in fvcore's convention), None when it cannot be counted."""
    return count_macs(model, input_size, device)[0]
