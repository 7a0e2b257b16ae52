"""Building the student and the teacher from timm's registry by name, and counting what was built."""
import dataclasses
import difflib
import inspect
import typing
import warnings
from typing import Any, Dict, FrozenSet, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

from .checkpoint import load_checkpoint, load_model_state, model_state_from
from .errors import CheckpointError, ConfigError

__all__ = ['check_model_name', 'model_class', 'constructor_keywords', 'create_model', 'create_teacher',
           'count_params', 'count_gflops']

# keywords main.py passes to every model; a model whose constructor does not take one is built without it
OPTIONAL_KWARGS = ('img_size', 'drop_path_rate')


def check_model_name(name: str, flag: str = '--model') -> None:
    """ConfigError (with close matches) unless timm knows the name."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise ConfigError(f'{flag}: unknown model {name!r} (see timm.list_models() / vision_kan.list_models()){hint}')


def model_class(name: str, **kwargs) -> type:
    """The class timm's entrypoint `name` builds with these keywords (timm's entrypoints take **kwargs and hand them
    to the class, so their own signature does not say). Learnt from a skeleton built on the meta device (no memory,
    no weights); a model whose init needs real values (GR-KAN fits its rationals) is built on the CPU instead. The
    random number generator is left as it was. Bad keywords raise what the model raises (TypeError, ValueError)."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device('meta'):
            return type(timm.create_model(name, **kwargs))
    except (TypeError, ValueError, AssertionError, ArithmeticError):
        raise  # the keywords themselves (patch_size=0 divides by zero): the same on any device
    except Exception:  # noqa: BLE001 - the meta device cannot run this model's init
        with torch.random.fork_rng(devices=[]):
            return type(timm.create_model(name, **kwargs))


def constructor_keywords(cls: type) -> FrozenSet[str]:
    """The keyword names cls(...) takes: the named parameters of its __init__ and, where that also takes **kwargs,
    of what they go on to: the base class's __init__ (super().__init__(**kwargs), e.g. timm's distilled ViTs) and the
    fields of a config dataclass parameter (timm's NaFlexVit). nn.Module's own __init__ takes none."""
    names = set()
    for klass in cls.__mro__:
        if klass is nn.Module or klass is object:
            break
        if '__init__' not in vars(klass):
            continue
        params = list(_signature(klass.__init__).parameters.values())[1:]  # without self
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
        for p in params:
            for hint in (p.annotation, *typing.get_args(p.annotation)):  # a dataclass or Optional[dataclass]
                if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                    names.update(f.name for f in dataclasses.fields(hint))
    return frozenset(names)


def _signature(fn) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)  # annotations as types, also under `from __future__`
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: keep it as text
        return inspect.signature(fn)


def create_model(name: str, flag: str = '--model', pretrained: bool = False, log=print, **kwargs) -> nn.Module:
    """timm.create_model(name, **kwargs); img_size / drop_path_rate are left out for models whose class does not take
    them (a CNN has no img_size), read from the class's signature. Bad keywords become a ConfigError."""
    check_model_name(name, flag)
    try:
        given = {k: v for k, v in kwargs.items() if k not in OPTIONAL_KWARGS}
        taken = constructor_keywords(model_class(name, **given))
        for key in OPTIONAL_KWARGS:
            if key in kwargs and key not in taken:
                value = kwargs.pop(key)
                if key == 'drop_path_rate' and value:
                    log(f'note: {name} has no drop path; --drop-path {value} is not used')
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise ConfigError(f'{flag} {name}: {e}') from None
    except (ValueError, AssertionError, ArithmeticError) as e:  # ArithmeticError: e.g. patch_size=0
        raise ConfigError(f'{flag} {name} with {kwargs}: {type(e).__name__}: {e}' if isinstance(e, ArithmeticError)
                          else f'{flag} {name} with {kwargs}: {e}') from None


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
