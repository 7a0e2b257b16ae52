"""Command line and YAML recipes for main.py.

A recipe is a YAML mapping whose keys are the flags' dest names (`batch_size`, `drop_path`, ...). Its values are
checked against the flag they stand for (type, list length, choices): an unknown key or a wrongly typed value is a
ConfigError, never silently read. The recipe sets the defaults and the command line overrides it; the merged result
is written beside the run as config.yaml, which is itself a valid recipe.
"""
import argparse
import difflib
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from .errors import ConfigError

__all__ = ['ArgumentParser', 'ParseKwargs', 'load_config', 'validate_config', 'save_config', 'preparse',
           'explicit_dests', 'suggest_key', 'KEY_ALIASES']

# names other trainers (timm's train.py, DeiT, Lightning, HF Trainer) use for a flag of main.py -> its dest name
KEY_ALIASES = {
    'learning_rate': 'lr', 'base_lr': 'lr', 'lr_base': 'lr', 'blr': 'lr', 'wd': 'weight_decay',
    'bs': 'batch_size', 'batch': 'batch_size', 'per_device_train_batch_size': 'batch_size',
    'num_epochs': 'epochs', 'max_epochs': 'epochs', 'num_train_epochs': 'epochs', 'epoch': 'epochs',
    'optimizer': 'opt', 'optim': 'opt', 'scheduler': 'sched', 'lr_scheduler': 'sched', 'lr_schedule': 'sched',
    'warmup': 'warmup_epochs', 'warmup_lr_init': 'warmup_lr', 'lr_min': 'min_lr', 'eta_min': 'min_lr',
    'label_smoothing': 'smoothing', 'dropout': 'drop', 'drop_rate': 'drop', 'drop_path_rate': 'drop_path',
    'img_size': 'input_size', 'image_size': 'input_size', 'resolution': 'input_size',
    'data': 'data_path', 'data_dir': 'data_path', 'dataset_path': 'data_path', 'output': 'output_dir',
    'out_dir': 'output_dir', 'output_path': 'output_dir', 'workers': 'num_workers', 'ema': 'model_ema',
    'ema_decay': 'model_ema_decay', 'grad_clip': 'clip_grad', 'max_grad_norm': 'clip_grad',
    'clip_grad_norm': 'clip_grad', 'gradient_clip_val': 'clip_grad', 'checkpoint': 'resume',
    'resume_from': 'resume', 'pretrained': 'finetune', 'auto_augment': 'aa', 'autoaugment': 'aa',
    'randaugment': 'aa', 're_prob': 'reprob', 'random_erasing': 'reprob', 'mixup_alpha': 'mixup',
    'cutmix_alpha': 'cutmix', 'fp16': 'amp', 'mixed_precision': 'amp', 'betas': 'opt_betas', 'eps': 'opt_eps',
    'teacher': 'teacher_model', 'distillation': 'distillation_type', 'arch': 'model', 'model_name': 'model',
    'crop_pct': 'eval_crop_ratio', 'kwargs': 'model_kwargs',
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error raises ConfigError (one line, exit 2 in main) instead of printing usage."""

    def error(self, message: str):
        raise ConfigError(message)


def suggest_key(key: str, dests: Sequence[str]) -> Optional[str]:
    """The dest a mistyped or foreign key most likely means: a known alias (learning_rate -> lr), else the closest
    spelling; None when nothing is close."""
    norm = str(key).strip().lstrip('-').replace('-', '_').lower()
    if norm in dests:
        return norm
    alias = KEY_ALIASES.get(norm)
    if alias in dests:
        return alias
    close = difflib.get_close_matches(norm, list(dests), n=1)
    return close[0] if close else None


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set:
    """The dest names set on the command line itself (not by a default or a recipe)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(list(argv))))
    finally:
        for a, default in saved:
            a.default = default


class ParseKwargs(argparse.Action):
    """--model-kwargs patch_size=4 hidden_dims=[64]: values through YAML; merged over the recipe's dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest, None) or {})
        for item in values:
            key, sep, raw = item.partition('=')
            if not sep or not key:
                raise ConfigError(f'{option_string}: expected key=value, got {item!r}')
            merged[key] = yaml.safe_load(raw)
        setattr(namespace, self.dest, merged)


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return 'bool'
    if isinstance(action, ParseKwargs):
        return 'dict'
    return {float: 'float', int: 'int'}.get(action.type, 'str')


def _scalar(value: Any, kind: str, key: str) -> Any:
    if kind == 'bool' and isinstance(value, bool):
        return value
    if kind == 'int' and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == 'float' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == 'str' and isinstance(value, str):
        return value
    if kind == 'dict' and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict(value)
    hint = ''
    if kind == 'float' and isinstance(value, str):
        hint = ' (YAML reads a number without a dot, like 5e-4, as a string: write 5.0e-4)'
    shown = f'the string {value!r}' if isinstance(value, str) else f'{value!r} ({type(value).__name__})'
    article = 'an' if kind == 'int' else 'a'
    raise ConfigError(f'config key {key!r} must be {article} {kind}, got {shown}{hint}')


def _check_value(action: argparse.Action, value: Any) -> Any:
    key, kind = action.dest, _kind(action)
    if value is None:
        if action.default is None:
            return None
        raise ConfigError(f'config key {key!r} cannot be null (default {action.default!r})')
    nargs = None if kind in ('bool', 'dict') else action.nargs  # BooleanOptionalAction: nargs=0; kwargs: one dict
    if nargs in ('+', '*') or isinstance(nargs, int):
        if not isinstance(value, (list, tuple)):
            value = [value] if nargs in ('+', '*') else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'config key {key!r} must be a list of {nargs} {kind}s, got {value!r}')
        if isinstance(nargs, int) and len(value) != nargs:
            raise ConfigError(f'config key {key!r} must have {nargs} values, got {len(value)}: {value!r}')
        if nargs == '+' and not value:
            raise ConfigError(f'config key {key!r} needs at least one value')
        value = [_scalar(v, kind, key) for v in value]
        items = value
    else:
        value = _scalar(value, kind, key)
        items = [value]
    if action.choices is not None:
        bad = [v for v in items if v not in action.choices]
        if bad:
            raise ConfigError(f'config key {key!r}: {bad[0]!r} is not one of {list(action.choices)}')
    return value


def validate_config(cfg: Dict[str, Any], parser: argparse.ArgumentParser, source: str = 'config',
                    skip: Sequence[str] = ('config', 'help')) -> Dict[str, Any]:
    """Check a recipe against the parser's flags; returns it with ints widened to floats where floats are due."""
    actions = {a.dest: a for a in parser._actions if a.dest not in skip}
    out = {}
    for key, value in cfg.items():
        if key not in actions:
            close = suggest_key(key, list(actions))
            hint = f"; did you mean {close!r} (--{close.replace('_', '-')})?" if close else ''
            raise ConfigError(f'{source}: unknown key {key!r} (keys are flag names with underscores){hint}')
        try:
            out[key] = _check_value(actions[key], value)
        except ConfigError as e:
            raise ConfigError(f'{source}: {e}') from None
    return out


def load_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read and validate a YAML recipe."""
    if not os.path.isfile(path):
        raise ConfigError(f'--config: file {path} does not exist')
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f'--config: {path} is not valid YAML: {" ".join(str(e).split())}') from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f'--config: {path} must hold a mapping of flag names to values, got {type(cfg).__name__}')
    return validate_config(cfg, parser, source=f'config {path}')


def save_config(args: argparse.Namespace, path: Path, skip: Sequence[str] = ('config',)) -> None:
    """Write the merged run configuration (a valid recipe) atomically."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(vars(args).items()) if k not in skip}
    tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'w') as f:
            yaml.safe_dump(cfg, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def preparse(argv: Sequence[str], config_flag: str = '--config') -> Optional[str]:
    """The --config value in argv, if any (before the full parse, so the recipe can set defaults)."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument(config_flag, default=None)
    known, _ = pre.parse_known_args(list(argv))
    return known.config
