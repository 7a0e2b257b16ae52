"""VGG-KAN: VGG stage layouts whose every convolution is a Kolmogorov-Arnold convolution.

Very Deep Convolutional Networks (Simonyan & Zisserman, 2014) - https://arxiv.org/abs/1409.1556
torch-conv-kan (VGG-KAN, its v2/v4 layouts, the bottleneck Gram conv) - https://github.com/IvanDrokin/torch-conv-kan

The layouts are torch-conv-kan's: VGG 11/13/16/19 at a quarter of VGG's widths, times `width_scale` (2 gives the
widths of its ImageNet models, the default here). 'v2' adds a sixth group of two convs after a fifth pool, 'v4'
the same with twice the width. Every 3x3 conv is a conv-KAN layer of the family `conv_type` followed by a norm
(BatchNorm by default; torch-conv-kan used InstanceNorm: `norm_layer='instancenorm2d'`); the head is a global
average pool, dropout and a linear (or KAN) classifier.

Names: `vggkan{11,13,16,19}_{family}[_bn][_v2|_v4]`. `_bn` is torch-conv-kan's "BN" = the *bottleneck* Gram conv
(1x1 squeeze -> Gram conv -> 1x1 expand, plus the base conv), not batch norm. Any other combination by keywords:

    timm.create_model('vggkan11_kagn', layout='vgg13v4', conv_type='kajn', conv_kwargs=dict(degree=4))
    timm.create_model('vggkan11_kagn', layout=((8,), (16, 16)), width_scale=1)       # any layout: widths per stage
    timm.create_model('vggkan11_kagn', features_only=True, out_indices=(2, 3, 4))   # stage feature maps

Published weights (`checkpoint_filter_fn` converts them): torch-conv-kan's ImageNet VGG-KAGN-11v2, -11v4 and
VGG-KAGN-BN-11v4 on the Hugging Face hub, as the `.tck_in1k` tags of vggkan11_kagn_v2, vggkan11_kagn_v4 and
vggkan11_kagn_bn_v4. The first two use affine InstanceNorm2d and degree 5, which their tags select.
Their training-time dropout (after tanh) and noise injection (bottleneck) are not reproduced: ours is
channel dropout of the conv input (`conv_kwargs=dict(dropout=p)`); evaluation is the same function.
"""
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from vision_kan.layers.kan_conv_families import BottleNeckKAGNConvNd, KAGNConvNd

from ._conv_kan_common import NormArg, PooledCNN, conv_kan_layer, pooled_cnn_cfg, stage_attention
from ._published import (
    PublishedWeightsError, build_published, check_converted, require_keys, tag_model_args, unwrap_state_dict,
)

__all__ = ['VGGKAN', 'VGG_KAN_LAYOUTS', 'checkpoint_filter_fn']


def _with_v2(groups: Tuple[Tuple[int, ...], ...], last: int) -> Tuple[Tuple[int, ...], ...]:
    return groups + ((last, last),)


# conv widths per group (before width_scale); a 2x2 max pool stands between consecutive groups
_V1 = {
    'vgg11': ((16,), (32,), (64, 64), (128, 128), (128, 128)),
    'vgg13': ((16, 16), (32, 32), (64, 64), (128, 128), (128, 128)),
    'vgg16': ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128), (128, 128, 128)),
    'vgg19': ((16, 16), (32, 32), (64, 64, 64, 64), (128, 128, 128, 128), (128, 128, 128, 128)),
}
VGG_KAN_LAYOUTS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    **_V1,
    **{f'{k}v2': _with_v2(v, 128) for k, v in _V1.items()},
    **{f'{k}v4': _with_v2(v, 256) for k, v in _V1.items()},
}


class VGGKAN(PooledCNN):
    """VGG of conv-KAN layers: stages of 3x3 KAN convs (stage i > 0 opens with a 2x2 max pool), pooled head.

    Stage i outputs width_scale * layout[i][-1] channels at stride 2^i; `feature_info` lists every stage.

    Args:
        layout: a key of VGG_KAN_LAYOUTS ('vgg11', 'vgg11v2', 'vgg11v4', ..., 'vgg19v4'), or the conv widths of each
            stage, e.g. ((16,), (32,), (64, 64)).
        conv_type: conv-KAN family, a key of vision_kan.layers.kan_conv_families.CONV_KAN_FAMILIES.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none (pooled features out).
        width_scale: multiplies every layout width.
        norm_layer: norm after every conv (None, 'batchnorm2d', 'instancenorm2d', a timm norm name or a class).
        conv_kwargs: the family's keywords (degree, grid_size, num_grids, dropout, act_layer, dim_reduction, ...).
        global_pool: timm pool type of the head.
        drop_rate: dropout before the classifier.
        head_type: 'linear' or a KAN layer name ('kan', 'fasterkan', 'grkan') for the classifier.
        head_kwargs: keywords of a KAN classifier.
        attn_type: None, 'self_attention' or 'focal': a KAN attention block at the end of the stages attn_stages.
        attn_stages: stage indices (negative from the end) that get the attention block.
        attn_kwargs: the block's keywords (num_heads, focal_level, conv_type, conv_kwargs, ...).
    """

    def __init__(
            self,
            layout: Union[str, Sequence[Sequence[int]]] = 'vgg11',
            conv_type: str = 'kagn',
            in_chans: int = 3,
            num_classes: int = 1000,
            width_scale: float = 2.0,
            norm_layer: NormArg = 'batchnorm2d',
            conv_kwargs: Optional[Dict[str, Any]] = None,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            head_type: str = 'linear',
            head_kwargs: Optional[Dict[str, Any]] = None,
            attn_type: Optional[str] = None,
            attn_stages: Tuple[int, ...] = (-1,),
            attn_kwargs: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        stage_widths = _stage_widths(layout)
        if not width_scale > 0:
            raise ValueError(f'VGGKAN: width_scale must be > 0, got {width_scale!r}')
        conv = conv_kan_layer(conv_type, norm_layer, owner='VGGKAN', **(conv_kwargs or {}))
        attention = stage_attention(attn_type, attn_stages, len(stage_widths), conv_type, 'VGGKAN',
                                    **(attn_kwargs or {}))
        self.num_classes, self.layout, self.conv_type = num_classes, layout, conv_type
        self.grad_checkpointing = False

        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        chs = in_chans
        for i, widths in enumerate(stage_widths):
            layers: List[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if i > 0 else []
            for w in widths:
                out = max(1, int(round(w * width_scale)))
                layers.append(conv(chs, out, 3, padding=1))  # (B, chs, H, W) -> (B, out, H, W)
                chs = out
            block = attention(i, chs)
            if block is not None:
                layers.append(block)
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=chs, reduction=2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.set_head(chs, num_classes, global_pool, drop_rate, head_type, head_kwargs)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(self.stages, x)  # (B, C, H, W) -> (B, num_features, H / 2^(stages-1), ...)


def _stage_widths(layout: Union[str, Sequence[Sequence[int]]]) -> Tuple[Tuple[int, ...], ...]:
    if isinstance(layout, str):
        if layout not in VGG_KAN_LAYOUTS:
            raise ValueError(f'VGGKAN: layout must be one of {sorted(VGG_KAN_LAYOUTS)} or widths per stage, '
                             f'got {layout!r}')
        return VGG_KAN_LAYOUTS[layout]
    try:
        widths = tuple(tuple(int(w) for w in stage) for stage in layout)
    except (TypeError, ValueError):
        widths = ()
    if not widths or not all(stage and all(w >= 1 for w in stage) for stage in widths):
        raise ValueError(f'VGGKAN: a custom layout is a sequence of stages, each a non-empty sequence of conv widths '
                         f'>= 1, got {layout!r}')
    return widths


_CONV_RE = re.compile(r'^features\.(\d+)\.')


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: VGGKAN) -> Dict[str, torch.Tensor]:
    """torch-conv-kan VGG-KAGN / VGG-KAGN-BN checkpoint (models.vggkan.VGGKAGN / VGGKAGN_BN, 'Linear' head,
    expected_feature_shape (1, 1), groups 1) -> VGGKAN state dict.

    Its `features` list holds convs and max pools; convs are matched to ours in order. Per conv:
    base_conv.0 -> base_weight; poly_weights (1, Cout, (D + 1) * Cin, k, k), degree-major inputs (its Gram basis is
    concatenated one degree after another) -> basis_weight (Cout, Cin, D + 1, k, k); beta_weights (D + 1,) with
    beta_n = w_n (2n+1) n^2 (4n^2-1) / (n+1)^2 -> ours (D - 1,) with beta_n = w'_n n^2 / (4n^2-1); layer_norm.0 ->
    norm. The bottleneck conv adds inner_proj.0 -> squeeze_weight, out_proj.0 -> expand_weight, and its Gram conv
    is `inner`. classifier.1 -> head.fc. A vision_kan state dict passes as is.
    """
    family = 'torch-conv-kan VGG checkpoint'
    state = unwrap_state_dict(state_dict, family)
    if 'stages.0.0.base_weight' in state:  # already ours
        return check_converted(state, model, 'vision_kan checkpoint', classifier=('head.fc',))
    require_keys(state, ('features.0.poly_weights', 'features.0.beta_weights', 'features.0.base_conv.0.weight',
                         'classifier.1.weight'), family, "a VGG-KAGN state dict (with torch-conv-kan's Linear head)")
    theirs = sorted({int(m[1]) for k in state for m in [_CONV_RE.match(k)] if m})
    ours = [(n, m) for n, m in model.named_modules() if re.fullmatch(r'stages\.\d+\.\d+', n)
            and isinstance(m, (KAGNConvNd, BottleNeckKAGNConvNd))]
    if len(theirs) != len(ours):
        raise PublishedWeightsError(f'{family}: {len(theirs)} KAGN convs in the checkpoint, {len(ours)} in the model '
                                    f'(build the same layout)')
    out: Dict[str, torch.Tensor] = {}
    for index, (name, conv) in zip(theirs, ours):
        out.update(_convert_conv(state, f'features.{index}.', conv, f'{name}.', family))
    require_keys(state, ('classifier.1.bias',), family, 'a complete checkpoint')
    out['head.fc.weight'], out['head.fc.bias'] = state['classifier.1.weight'], state['classifier.1.bias']
    if out['head.fc.weight'].shape[1] != model.num_features:
        raise PublishedWeightsError(f'{family}: its classifier takes {out["head.fc.weight"].shape[1]} features, the '
                                    f'last conv gives {model.num_features} (only expected_feature_shape (1, 1) maps to '
                                    f'a global average pool)')
    return check_converted(out, model, family, classifier=('head.fc',))


def _gram_weight(poly: torch.Tensor, degree: int) -> torch.Tensor:
    """(1, Cout, (D + 1) * Cin, *k), index d * Cin + c  ->  (Cout, Cin, D + 1, *k)."""
    w = poly[0]
    return w.reshape(w.shape[0], degree + 1, -1, *w.shape[2:]).transpose(1, 2).contiguous()


def _gram_betas(w: torch.Tensor) -> torch.Tensor:
    """torch-conv-kan's beta weights (D + 1,) -> ours (D - 1,): the same beta_n for n = 1 .. D - 1."""
    n = torch.arange(1, max(w.numel() - 2, 0) + 1, dtype=torch.float64)
    theirs = (2 * n + 1) * n ** 2 / ((n + 1) ** 2 / (4 * n ** 2 - 1))  # ((m+n)(m-n)n^2) / (m^2 / (4n^2-1)), m = n+1
    ours = n ** 2 / (4 * n ** 2 - 1)
    return (w[1:w.numel() - 1].double() * theirs / ours).to(w.dtype)


def _convert_conv(state, src: str, conv: nn.Module, dst: str, family: str) -> Dict[str, torch.Tensor]:
    bottleneck = f'{src}inner_proj.0.weight' in state
    needed = ['poly_weights', 'beta_weights', 'base_conv.0.weight', 'layer_norm.0.weight', 'layer_norm.0.bias']
    require_keys(state, [src + k for k in needed + (['out_proj.0.weight'] if bottleneck else [])], family,
                 'a complete checkpoint')
    if bottleneck != isinstance(conv, BottleNeckKAGNConvNd):
        kinds = ('bottleneck KAGN', 'KAGN')
        raise PublishedWeightsError(f'{family}: {src[:-1]} is a {kinds[not bottleneck]} conv, {dst[:-1]} a '
                                    f'{kinds[bottleneck]} conv (vggkan11_kagn_bn* holds the bottleneck convs)')
    if f'{src}base_conv.1.weight' in state:
        raise PublishedWeightsError(f'{family}: {src[:-1]} has groups > 1, which VGGKAN does not build')
    beta = state[f'{src}beta_weights']
    degree = beta.numel() - 1
    gram = conv.inner if bottleneck else conv
    if gram.basis.degree != degree:
        raise PublishedWeightsError(f'{family}: {src[:-1]} has Gram degree {degree}, the model {gram.basis.degree} '
                                    f'(conv_kwargs=dict(degree={degree}))')
    has_stats = f'{src}layer_norm.0.running_mean' in state
    is_bn = isinstance(conv.norm, nn.modules.batchnorm._BatchNorm)
    if has_stats != is_bn or (not has_stats and not isinstance(conv.norm, nn.InstanceNorm2d)):
        theirs = 'BatchNorm2d' if has_stats else 'affine InstanceNorm2d'
        raise PublishedWeightsError(f'{family}: {src[:-1]} is followed by {theirs}, {dst[:-1]} by '
                                    f'{type(conv.norm).__name__} (norm_layer=' +
                                    ("'batchnorm2d')" if has_stats else "'instancenorm2d')"))
    gram_dst = f'{dst}inner.' if bottleneck else dst
    out = {f'{dst}base_weight': state[f'{src}base_conv.0.weight'],
           f'{gram_dst}basis_weight': _gram_weight(state[f'{src}poly_weights'], degree),
           f'{gram_dst}basis.beta_weights': _gram_betas(beta)}
    if bottleneck:
        out[f'{dst}squeeze_weight'] = state[f'{src}inner_proj.0.weight']
        out[f'{dst}expand_weight'] = state[f'{src}out_proj.0.weight']
    for k in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'):
        if f'{src}layer_norm.0.{k}' in state:
            out[f'{dst}norm.{k}'] = state[f'{src}layer_norm.0.{k}']
    return out


def _create_vgg_kan(variant: str, pretrained: bool = False, **kwargs) -> VGGKAN:
    kwargs = tag_model_args(variant, pretrained, kwargs, _PUBLISHED)
    layout = kwargs.get('layout', 'vgg11')
    num_stages = len(VGG_KAN_LAYOUTS.get(layout, ())) if isinstance(layout, str) else len(tuple(layout))
    out_indices = kwargs.pop('out_indices', tuple(range(num_stages)))  # every stage, stride 1 to 2^(n-1)
    return build_published(lambda: build_model_with_cfg(
        VGGKAN, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    ), variant, pretrained, 'the Hugging Face hub', kwargs.get('pretrained_cfg_overlay'))


def _cfg(**kwargs) -> Dict[str, Any]:
    return pooled_cnn_cfg('stages.0.0', **{'pool_size': (14, 14), **kwargs})


def _tck_cfg(hf_hub_id: str, top1: str, name: str) -> Dict[str, Any]:
    # torch-conv-kan's validation transform: Resize(256) (bilinear), CenterCrop(224), ImageNet mean/std
    return _cfg(hf_hub_id=hf_hub_id, pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, license='mit',
                origin_url='https://github.com/IvanDrokin/torch-conv-kan', paper_ids='arXiv:2407.01092',
                notes=(f'torch-conv-kan (README "Model Zoo", reports/imagenet1k-vggs.md): {name}, ImageNet-1k '
                       f'validation top-1 {top1}',))


_IN_DEGREE5 = dict(norm_layer='instancenorm2d', conv_kwargs=dict(degree=5))
# tag -> the architecture options its checkpoint needs; a variant's first tag is its default (_published)
_PUBLISHED = {
    'vggkan11_kagn_v2.tck_in1k': _IN_DEGREE5,
    'vggkan11_kagn_v4.tck_in1k': _IN_DEGREE5,
    'vggkan11_kagn_bn_v4.tck_in1k': dict(conv_kwargs=dict(degree=5, dim_reduction=8)),  # the default architecture
}

default_cfgs = generate_default_cfgs({
    'vggkan11_kagn_v2.tck_in1k': _tck_cfg('brivangl/vgg_kagn11_v2', '59.1', 'VGG KAGN 11v2'),
    'vggkan11_kagn_v4.tck_in1k': _tck_cfg('brivangl/vgg_kagn11_v4', '61.17', 'VGG KAGN 11v4'),
    'vggkan11_kagn_bn_v4.tck_in1k': _tck_cfg('brivangl/vgg_kagn_bn11_v4', '68.5', 'VGG KAGN BN 11v4'),
    'vggkan11_kagn.untrained': _cfg(),
    'vggkan13_kagn.untrained': _cfg(),
    'vggkan16_kagn.untrained': _cfg(),
    'vggkan19_kagn.untrained': _cfg(),
    'vggkan11_kagn_v2.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kagn_v4.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kagn_bn.untrained': _cfg(),
    'vggkan11_kagn_bn_v4.untrained': _cfg(pool_size=(7, 7)),
    'vggkan11_kacn.untrained': _cfg(),
    'vggkan16_kacn.untrained': _cfg(),
    'vggkan11_kaln.untrained': _cfg(),
    'vggkan11_fastkan.untrained': _cfg(),
    'vggkan11_kan.untrained': _cfg(),
})


@register_model
def vggkan11_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Gram (KAGN) convs, degree 3."""
    model_args = dict(layout='vgg11', conv_type='kagn')
    return _create_vgg_kan('vggkan11_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan13_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-13 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg13', conv_type='kagn')
    return _create_vgg_kan('vggkan13_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan16_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-16 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg16', conv_type='kagn')
    return _create_vgg_kan('vggkan16_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan19_kagn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-19 layout, Gram (KAGN) convs."""
    model_args = dict(layout='vgg19', conv_type='kagn')
    return _create_vgg_kan('vggkan19_kagn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_v2(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v2 layout (a sixth group of two 256-wide convs), Gram convs: torch-conv-kan's ImageNet VGG-KAGN-11v2
    shape: degree 5."""
    model_args = dict(layout='vgg11v2', conv_type='kagn', conv_kwargs=dict(degree=5))
    return _create_vgg_kan('vggkan11_kagn_v2', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_v4(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v4 layout (a sixth group of two 512-wide convs), Gram convs."""
    model_args = dict(layout='vgg11v4', conv_type='kagn')
    return _create_vgg_kan('vggkan11_kagn_v4', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_bn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, bottleneck Gram convs (squeeze by 8)."""
    model_args = dict(layout='vgg11', conv_type='bottleneck_kagn', conv_kwargs=dict(dim_reduction=8))
    return _create_vgg_kan('vggkan11_kagn_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kagn_bn_v4(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 v4 layout, bottleneck Gram convs of degree 5 squeezing by 8: torch-conv-kan's VGG-KAGN-BN-11v4
    (7.25M parameters, ImageNet top-1 68.5 as published)."""
    model_args = dict(layout='vgg11v4', conv_type='bottleneck_kagn', conv_kwargs=dict(degree=5, dim_reduction=8))
    return _create_vgg_kan('vggkan11_kagn_bn_v4', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kacn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Chebyshev (KACN) convs."""
    model_args = dict(layout='vgg11', conv_type='kacn')
    return _create_vgg_kan('vggkan11_kacn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan16_kacn(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-16 layout, Chebyshev (KACN) convs."""
    model_args = dict(layout='vgg16', conv_type='kacn')
    return _create_vgg_kan('vggkan16_kacn', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kaln(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, Legendre (KALN) convs."""
    model_args = dict(layout='vgg11', conv_type='kaln')
    return _create_vgg_kan('vggkan11_kaln', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_fastkan(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, FastKAN (Gaussian RBF) convs."""
    model_args = dict(layout='vgg11', conv_type='fastkan')
    return _create_vgg_kan('vggkan11_fastkan', pretrained, **dict(model_args, **kwargs))


@register_model
def vggkan11_kan(pretrained: bool = False, **kwargs) -> VGGKAN:
    """VGG-11 layout, B-spline KAN convs."""
    model_args = dict(layout='vgg11', conv_type='kan')
    return _create_vgg_kan('vggkan11_kan', pretrained, **dict(model_args, **kwargs))
