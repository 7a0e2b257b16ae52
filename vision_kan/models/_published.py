"""What the model families share to load published checkpoints: tag-selected architecture options, one-line errors.

A published checkpoint may need options our default architecture does not take (KAT's rational denominator,
Vision-KAN's block norms, torch-conv-kan's instance norms). Its pretrained tag carries them:

    timm.create_model('vit_grkan_tiny.kat_in1k')                 # KAT's architecture, random weights
    timm.create_model('vit_grkan_tiny', pretrained=True)         # the default tag (KAT's) and its weights
    timm.create_model('vit_grkan_tiny')                          # our own default architecture

Not a model file: it registers nothing.
"""
import os
import pickle
from typing import Any, Callable, Dict, Mapping, Optional

import torch

__all__ = ['PublishedWeightsError', 'requested_tag', 'tag_model_args', 'build_published', 'unwrap_state_dict',
           'require_keys', 'check_converted']


class PublishedWeightsError(ValueError):
    """A published checkpoint that cannot become this model (wrong family, missing key, unsupported option), or
    published weights that cannot be fetched. The message is one line."""


def _default_tag(variant: str, table: Mapping[str, Any]) -> str:
    return next((k.split('.', 1)[1] for k in table if k.split('.', 1)[0] == variant), '')


def _tag_in_file(variant: str, kwargs: Mapping[str, Any], own_tag: str) -> Optional[str]:
    """The tag a vision_kan .safetensors file records for this variant (main.py and tools.convert write the model
    name into its metadata): a file of our own architecture is loaded as `own_tag`, a converted one as its tag."""
    file = (kwargs.get('pretrained_cfg_overlay') or {}).get('file')
    if not file or not str(file).endswith('.safetensors') or not os.path.isfile(file):
        return None
    try:
        from safetensors import safe_open
        with safe_open(str(file), framework='pt') as f:
            name = (f.metadata() or {}).get('model', '')
    except Exception:  # unreadable: the loader reports it
        return None
    arch, _, tag = name.partition('.')
    return (tag or own_tag) if arch == variant else None


def requested_tag(variant: str, pretrained: bool, kwargs: Mapping[str, Any], table: Mapping[str, Any],
                  own_tag: str = 'untrained') -> Optional[str]:
    """The tag whose architecture to build: named in the model name (timm passes it as `pretrained_cfg`), else,
    when weights are asked for, the one a vision_kan .safetensors file records, else the variant's default (first)
    tag in `table`; None otherwise."""
    cfg = kwargs.get('pretrained_cfg')
    if isinstance(cfg, str):
        return cfg
    if cfg is None and pretrained:
        return _tag_in_file(variant, kwargs, own_tag) or _default_tag(variant, table) or None
    return None


def tag_model_args(variant: str, pretrained: bool, kwargs: Dict[str, Any],
                   table: Mapping[str, Mapping[str, Any]], own_tag: str = 'untrained') -> Dict[str, Any]:
    """kwargs with the architecture options of the requested published tag filled in (the caller's keywords win).

    table: 'variant.tag' -> model keywords; the variant's first entry is its default tag (the one pretrained=True
    loads). A model built without weights and without a tag is our own architecture, and its pretrained_cfg says
    so (`own_tag`), not the published default.
    """
    tag = requested_tag(variant, pretrained, kwargs, table, own_tag)
    if tag is None:
        has_published = bool(_default_tag(variant, table))
        return {**kwargs, 'pretrained_cfg': own_tag} if kwargs.get('pretrained_cfg') is None and has_published \
            else kwargs
    if kwargs.get('pretrained_cfg') is None and _default_tag(variant, table):
        kwargs = {**kwargs, 'pretrained_cfg': tag}
    return {**table.get(f'{variant}.{tag}', {}), **kwargs}


def build_published(build: Callable[[], torch.nn.Module], name: str, pretrained: bool, source: str,
                    overlay: Optional[Mapping[str, Any]] = None):
    """build(), with one PublishedWeightsError line when the weights cannot be had: a download that fails (no
    network, hub unreachable), or a `pretrained_cfg_overlay` file that is missing or unreadable."""
    if not pretrained:
        return build()
    file = (overlay or {}).get('file')
    if file and not os.path.isfile(file):
        raise PublishedWeightsError(f'{name}: weights file {file} does not exist')
    try:
        return build()
    except PublishedWeightsError:
        raise
    except Exception as e:  # urllib / huggingface_hub / httpx / safetensors errors have no common base class
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        unreadable = isinstance(e, (RuntimeError, EOFError, OSError, pickle.UnpicklingError)) or \
            type(e).__name__ == 'SafetensorError'
        if file and unreadable:
            raise PublishedWeightsError(f'{name}: cannot read {file} ({type(e).__name__}): truncated, not a file of '
                                        f'tensors, or a trainer checkpoint holding other objects (convert that with '
                                        f'python -m vision_kan.tools.convert)') from None
        if not _is_download_error(e):
            raise
        raise PublishedWeightsError(
            f'{name}: cannot fetch the published weights from {source} ({type(e).__name__}: {line}); offline, '
            f'download the file and pass pretrained_cfg_overlay=dict(file=PATH)') from None


def _is_download_error(e: BaseException) -> bool:
    if isinstance(e, (OSError, ConnectionError, TimeoutError)):
        return True
    module = type(e).__module__ or ''
    return module.startswith(('urllib', 'http', 'huggingface_hub', 'httpx', 'httpcore', 'requests'))


def unwrap_state_dict(obj: Any, family: str, prefer_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model weights inside a published file: a bare state dict, or under 'state_dict' / 'model' (timm's and
    DeiT's trainers), or their EMA copies when prefer_ema. A 'module.' prefix (DDP) is removed."""
    if not isinstance(obj, Mapping):
        raise PublishedWeightsError(f'{family}: expected a state dict, got a {type(obj).__name__}')
    keys = ('state_dict_ema', 'model_ema', 'state_dict', 'model') if prefer_ema else ('state_dict', 'model')
    for key in keys:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise PublishedWeightsError(f'{family}: expected a state dict of named tensors, found key {k!r}')
        state[k[len('module.'):] if k.startswith('module.') else k] = v
    return state


def require_keys(state: Mapping[str, Any], keys, family: str, what: str) -> None:
    """PublishedWeightsError naming the first absent key."""
    for k in keys:
        if k not in state:
            raise PublishedWeightsError(f'{family}: not {what}: key {k!r} is missing')


def check_converted(state: Dict[str, torch.Tensor], model: torch.nn.Module, family: str,
                    classifier=('head',)) -> Dict[str, torch.Tensor]:
    """PublishedWeightsError (one line) unless `state` has exactly the model's keys and, classifier and position
    embedding aside (timm adapts those), its shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f'{len(missing)} missing (e.g. {missing[0]})' if missing else ''
        what += ('; ' if what else '') + (f'{len(unexpected)} unexpected (e.g. {unexpected[0]})' if unexpected else '')
        raise PublishedWeightsError(f'{family}: the converted checkpoint does not fit the model: {what}')
    skip = tuple(f'{c}.' for c in classifier) + ('pos_embed',)
    for k, v in state.items():
        if not k.startswith(skip) and tuple(v.shape) != tuple(own[k].shape):
            raise PublishedWeightsError(f'{family}: {k} is {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} '
                                        f'in the model (build the model at the checkpoint\'s size)')
    return state
