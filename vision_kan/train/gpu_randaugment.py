"""timm's RandAugment ('rand-m9-mstd0.5-inc1' and the other 'rand-...' strings) on a batch of uint8 tensors, every
sample its own ops and magnitudes, for the GPU data backend (the same code runs on CPU tensors).

The policy is parsed by timm itself (`rand_augment_transform`): the op list, layers, probability, magnitude and its
std/max. Per sample and layer: an op drawn uniformly (or by timm's weights, without replacement), applied with the
op's probability, magnitude ~ N(m, mstd) clipped to [0, mmax or 10], and a random sign for the signed ops; the
magnitude becomes the op's argument by timm's level functions (re-written on tensors, tested against timm's).

A layer runs as three batched groups, as each sample has one op per layer:
- geometric (Rotate, ShearX/Y, TranslateX/Y[Rel]): one per-sample affine map and one bicubic `grid_sample`; a point
  that falls outside the image takes the fill colour (timm's img_mean), as PIL's `Image.transform` does;
- look-up tables (AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd): one (3, 256) table per sample
  built from its histogram or argument, one `gather`;
- enhance (Color, Contrast, Brightness, Sharpness): PIL's ImageEnhance blend with a per-sample factor.
Every layer is planned on the CPU first (rows per family, affine maps, argument tables, factors), all of it sent in
two pinned copies per batch (indices, numbers), then run: no per-image op and no device sync. Images stay uint8
between ops, as the PIL images of the CPU path do. Against timm's PIL ops (tested): the arguments are identical,
tables and enhance ops within 1 level (most exact), the geometric ops within 1 level on average and 6 at most
(grid_sample's bicubic kernel is a = -0.75, PIL's a = -0.5).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.data.auto_augment import rand_augment_transform

from .errors import ConfigError
from .gpu_resample import Upload

__all__ = ['RandAugmentPolicy', 'RandAugmentParams', 'parse_rand_augment', 'sample_rand_augment', 'apply_rand_augment',
           'apply_ops', 'op_argument', 'op_arguments', 'enhance', 'gray_pil', 'ENHANCE_KINDS', 'SUPPORTED_OPS']

_GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'TranslateXRel', 'TranslateYRel')
_LUT = ('AutoContrast', 'Equalize', 'Invert', 'Posterize', 'PosterizeIncreasing', 'PosterizeOriginal', 'Solarize',
        'SolarizeIncreasing', 'SolarizeAdd')
_ENHANCE = ('Color', 'ColorIncreasing', 'Contrast', 'ContrastIncreasing', 'Brightness', 'BrightnessIncreasing',
            'Sharpness', 'SharpnessIncreasing')
SUPPORTED_OPS = _GEOMETRIC + _LUT + _ENHANCE


@dataclass
class RandAugmentPolicy:
    """What timm's RandAugment object holds, as plain fields."""
    op_names: Tuple[str, ...]
    num_layers: int
    prob: float
    magnitude: float
    magnitude_std: float
    magnitude_max: float
    choice_weights: Optional[torch.Tensor]  # (num_ops,) or None: uniform with replacement
    translate_const: float
    translate_pct: float
    fill: Tuple[int, int, int]


@dataclass
class RandAugmentParams:
    """Per-sample choices, each (B, num_layers) on the CPU: op index into policy.op_names, whether it is applied,
    the clipped magnitude and the sign (+1/-1) that signed ops use."""
    op: torch.Tensor
    applied: torch.Tensor
    magnitude: torch.Tensor
    sign: torch.Tensor


def parse_rand_augment(aa: str, input_size: int, mean: Sequence[float]) -> RandAugmentPolicy:
    """The policy timm's create_transform builds for `aa` (translate_const and fill as timm derives them)."""
    if not aa.startswith('rand'):
        raise ConfigError(f"--aa {aa!r} is not supported by the GPU backend (only timm's 'rand-...' RandAugment)")
    fill = tuple(min(255, round(255 * m)) for m in mean)
    try:
        ra = rand_augment_transform(aa, dict(translate_const=int(input_size * 0.45), img_mean=fill))
    except (AssertionError, ValueError, KeyError) as e:
        raise ConfigError(f'--aa {aa!r}: not a RandAugment string timm accepts ({e})') from None
    names = tuple(op.name for op in ra.ops)
    unsupported = sorted(set(names) - set(SUPPORTED_OPS))
    if unsupported:
        raise ConfigError(f'--aa {aa!r}: op(s) {", ".join(unsupported)} are not supported by the GPU backend')
    op0 = ra.ops[0]
    weights = None if ra.choice_weights is None else torch.as_tensor(ra.choice_weights, dtype=torch.float64)
    return RandAugmentPolicy(
        op_names=names, num_layers=ra.num_layers, prob=op0.prob, magnitude=float(op0.magnitude),
        magnitude_std=float(op0.magnitude_std), magnitude_max=float(op0.magnitude_max or 10.0),
        choice_weights=weights, translate_const=float(op0.hparams['translate_const']),
        translate_pct=float(op0.hparams.get('translate_pct', 0.45)), fill=fill)


def sample_rand_augment(policy: RandAugmentPolicy, batch: int, generator: torch.Generator) -> RandAugmentParams:
    """Draw every sample's ops, as timm's RandAugment.__call__ and AugmentOp.__call__ do per image."""
    shape = (batch, policy.num_layers)
    n_ops = len(policy.op_names)
    if policy.choice_weights is None:
        op = torch.randint(0, n_ops, shape, generator=generator)
    else:
        op = torch.multinomial(policy.choice_weights.expand(batch, -1), policy.num_layers, replacement=False,
                               generator=generator)
    applied = torch.rand(shape, generator=generator, dtype=torch.float64) < policy.prob
    if math.isinf(policy.magnitude_std):
        magnitude = torch.rand(shape, generator=generator, dtype=torch.float64) * policy.magnitude
    else:
        magnitude = policy.magnitude + policy.magnitude_std * torch.randn(shape, generator=generator,
                                                                          dtype=torch.float64)
    magnitude = magnitude.clamp(0.0, policy.magnitude_max)
    sign = torch.where(torch.rand(shape, generator=generator) > 0.5, -1.0, 1.0).double()
    return RandAugmentParams(op=op, applied=applied, magnitude=magnitude, sign=sign)


_INF = float('inf')


def _level_table(policy: RandAugmentPolicy) -> torch.Tensor:
    """(len(SUPPORTED_OPS), 7) float64: timm's LEVEL_TO_ARG as numbers. With level = magnitude / 10, an op's
    argument is max(base + mult * min(floor?(scale * level * sign?), cap), minimum)."""
    #       scale, signed, floor, cap, base, mult, minimum
    rows = {'Rotate': (30.0, 1, 0, _INF, 0.0, 1.0, -_INF),
            'ShearX': (0.3, 1, 0, _INF, 0.0, 1.0, -_INF), 'ShearY': (0.3, 1, 0, _INF, 0.0, 1.0, -_INF),
            'TranslateX': (policy.translate_const, 1, 0, _INF, 0.0, 1.0, -_INF),
            'TranslateY': (policy.translate_const, 1, 0, _INF, 0.0, 1.0, -_INF),
            'TranslateXRel': (policy.translate_pct, 1, 0, _INF, 0.0, 1.0, -_INF),
            'TranslateYRel': (policy.translate_pct, 1, 0, _INF, 0.0, 1.0, -_INF),
            'Posterize': (4.0, 0, 1, _INF, 0.0, 1.0, -_INF),                            # bits kept
            'PosterizeIncreasing': (4.0, 0, 1, _INF, 4.0, -1.0, -_INF),
            'PosterizeOriginal': (4.0, 0, 1, _INF, 4.0, 1.0, -_INF),
            'Solarize': (256.0, 0, 1, 256.0, 0.0, 1.0, -_INF),                         # threshold
            'SolarizeIncreasing': (256.0, 0, 1, 256.0, 256.0, -1.0, -_INF),
            'SolarizeAdd': (110.0, 0, 1, 128.0, 0.0, 1.0, -_INF)}
    for name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):                     # enhance factor
        rows[name] = (1.8, 0, 0, _INF, 0.1, 1.0, -_INF)
        rows[name + 'Increasing'] = (0.9, 1, 0, _INF, 1.0, 1.0, 0.1)
    none = (0.0, 0, 0, _INF, 0.0, 1.0, -_INF)                                           # AutoContrast, Equalize, Invert
    return torch.tensor([rows.get(name, none) for name in SUPPORTED_OPS], dtype=torch.float64)


def op_arguments(codes: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor,
                 policy: RandAugmentPolicy) -> torch.Tensor:
    """timm's LEVEL_TO_ARG on float64 tensors: for ops `codes` (indices into SUPPORTED_OPS), the degrees, bits,
    threshold, factor, shear or pixels (translate 'Rel' ops: the fraction of the image size). Same float operations
    in the same order as timm, so the results are identical."""
    scale, signed, floor, cap, base, mult, minimum = _level_table(policy)[codes].unbind(-1)
    v = scale * (magnitude / 10.0)
    v = torch.where(signed > 0, v * sign, v)
    v = torch.where(floor > 0, torch.floor(v), v)
    return torch.maximum(base + mult * torch.minimum(v, cap), minimum)


def op_argument(name: str, magnitude: torch.Tensor, sign: torch.Tensor, policy: RandAugmentPolicy) -> torch.Tensor:
    """op_arguments for one op name."""
    return op_arguments(torch.full(magnitude.shape, SUPPORTED_OPS.index(name)), magnitude, sign, policy)


# ---------------------------------------------------------------------------------------------------- geometric
def _affine_thetas(kind: torch.Tensor, a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(n, 2, 3) float64 for F.affine_grid: PIL's inverse affine maps, (xs, ys) = M (x, y, 1) in pixels with pixel
    centres at +0.5, moved to [-1, 1] units; kind indexes _GEOMETRIC. Rotate turns counter-clockwise about the image
    centre; shears are about the corner (0, 0), as in timm."""
    n = len(kind)
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    t = torch.deg2rad(-a)
    c, s, cx, cy = torch.cos(t), torch.sin(t), w / 2.0, h / 2.0
    rot = torch.stack([torch.stack([c, s, cx - c * cx - s * cy], -1),
                       torch.stack([-s, c, cy + s * cx - c * cy], -1)], 1)
    m[:, :2] = torch.where((kind == 0).view(n, 1, 1), rot, m[:, :2])
    m[:, 0, 1] = torch.where(kind == 1, a, m[:, 0, 1])                                 # ShearX: xs = x + a y
    m[:, 1, 0] = torch.where(kind == 2, a, m[:, 1, 0])                                 # ShearY: ys = a x + y
    m[:, 0, 2] = torch.where(kind == 3, a, torch.where(kind == 5, a * w, m[:, 0, 2]))  # TranslateX[Rel]
    m[:, 1, 2] = torch.where(kind == 4, a, torch.where(kind == 6, a * h, m[:, 1, 2]))  # TranslateY[Rel]
    to_unit = torch.tensor([[2.0 / w, 0, -1], [0, 2.0 / h, -1], [0, 0, 1]], dtype=torch.float64)  # pixels -> [-1, 1]
    return (to_unit @ m @ torch.linalg.inv(to_unit))[:, :2]


def _geometric(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """x: uint8 (n, 3, H, W), theta (n, 2, 3) and fill (3,) on the device -> one bicubic grid_sample with clamped
    taps; an output pixel whose source point lies outside the image takes the fill colour (PIL's transform)."""
    n, _, h, w = x.shape
    grid = F.affine_grid(theta.float(), [n, 3, h, w], align_corners=False)            # (n, H, W, 2)
    inside = ((grid >= -1) & (grid < 1)).all(-1, keepdim=True).permute(0, 3, 1, 2)      # source in [0, W) x [0, H)
    out = F.grid_sample(x.float(), grid, mode='bicubic', padding_mode='border', align_corners=False)
    return torch.where(inside, out, fill.float().view(1, 3, 1, 1)).round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------- tables
def _histogram(x: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> int64 (n, 3, 256) per-channel histograms, one scatter_add (bincount would sync the
    device to size its output)."""
    n = x.shape[0]
    bins = (x.view(n, 3, -1).long() + torch.arange(n * 3, device=x.device).view(n, 3, 1) * 256).view(-1)
    hist = torch.zeros(n * 3 * 256, dtype=torch.long, device=x.device)
    return hist.scatter_add_(0, bins, torch.ones_like(bins)).view(n, 3, 256)


def _autocontrast_lut(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast (cutoff 0) per channel of uint8 (n, 3, H, W): [lo, hi] -> [0, 255] by
    ix = int(ix * scale + offset), identity where the channel is flat. Returns float64 (n, 3, 256)."""
    i = torch.arange(256, device=x.device, dtype=torch.float64)
    lo = x.amin((2, 3)).double()[..., None]                                             # (n, 3, 1)
    hi = x.amax((2, 3)).double()[..., None]
    scale = 255.0 / (hi - lo).clamp(min=1)
    stretched = torch.trunc(i * scale + (-lo * scale)).clamp(0, 255)
    return torch.where(hi > lo, stretched, i)


def _equalize_lut(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize per channel of uint8 (n, 3, H, W): step = (pixels - count of the top value) // 255,
    lut[i] = (step // 2 + pixels below i) // step; identity where step is 0. Returns float64 (n, 3, 256)."""
    hist = _histogram(x)
    top = 255 - torch.flip(hist > 0, [-1]).long().argmax(-1, keepdim=True)              # highest value present
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, top)) // 255
    below = torch.cumsum(hist, -1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    return torch.where(step > 0, lut, torch.arange(256, device=hist.device)).double()


def _argument_luts(kind: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """(n, 256) float64 tables of the ops that need no histogram (kind indexes _LUT): Invert, Posterize* (0 bits
    -> black), Solarize* (inverted from the threshold up), SolarizeAdd (below 128 raised); identity otherwise."""
    i = torch.arange(256, dtype=torch.float64)[None]                                    # (1, 256)
    a, k = a.view(-1, 1), kind.view(-1, 1)
    keep_mask = (256 - torch.pow(2.0, 8 - a.clamp(0, 8))).long()
    lut = torch.where(k == _LUT.index('Invert'), 255 - i, i)
    lut = torch.where((k >= 3) & (k <= 5), torch.bitwise_and(i.long(), keep_mask).double(), lut)  # Posterize*
    lut = torch.where((k == 6) | (k == 7), torch.where(i < a, i, 255 - i), lut)                   # Solarize*
    return torch.where(k == 8, torch.where(i < 128, (i + a).clamp(max=255), i), lut)              # SolarizeAdd


def _lut(x: torch.Tensor, lut: torch.Tensor, autocontrast: Optional[torch.Tensor],
         equalize: Optional[torch.Tensor]) -> torch.Tensor:
    """x: uint8 (n, 3, H, W) through per-sample tables: lut (n, 256) on the device from _argument_luts, and the
    rows `autocontrast` / `equalize` (device indices into x, or None) get tables from their own pixels."""
    n = x.shape[0]
    table = lut.to(torch.uint8)[:, None].expand(n, 3, 256)
    if autocontrast is not None or equalize is not None:
        table = table.contiguous()
        for rows, table_fn in ((autocontrast, _autocontrast_lut), (equalize, _equalize_lut)):
            if rows is not None:
                table.index_copy_(0, rows, table_fn(x.index_select(0, rows)).to(torch.uint8))
    return table.gather(2, x.view(n, 3, -1).long()).view_as(x)


# ---------------------------------------------------------------------------------------------------- enhance
ENHANCE_KINDS = ('Color', 'Contrast', 'Brightness', 'Sharpness')


def gray_pil(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, as int32 (n, 1, H, W)."""
    r, g, b = x.int().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).unsqueeze(1)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3x3, centre 5, others 1, / 13), border pixels kept as they are."""
    k = torch.ones(3, 1, 3, 3, device=x.device)
    k[:, :, 1, 1] = 5.0
    out = x.float()
    return torch.cat([out[:, :, :1], torch.cat([out[:, :, 1:-1, :1], F.conv2d(out, k / 13.0, groups=3).round_(),
                                               out[:, :, 1:-1, -1:]], 3), out[:, :, -1:]], 2)


def _plan_enhance(kind: torch.Tensor, factors: torch.Tensor, up: Upload) -> dict:
    """Upload slots for _enhance: the factors and, per degenerate kind present, its rows."""
    plan = {'factor': up.add(factors)}
    for k, name in enumerate(ENHANCE_KINDS):
        sel = torch.nonzero(kind == k)[:, 0]
        if name != 'Brightness' and len(sel):
            plan[name] = up.add(sel)
    return plan


def _enhance(x: torch.Tensor, plan: dict, sent: List[torch.Tensor]) -> torch.Tensor:
    """PIL's ImageEnhance per sample: out = trunc(clamp(degenerate + f * (x - degenerate))), degenerate: grey image
    (Color), its mean grey (Contrast), black (Brightness), the smoothed image (Sharpness)."""
    degenerate = torch.zeros(x.shape, device=x.device)                                   # Brightness: black
    for name in ('Color', 'Contrast', 'Sharpness'):
        if name not in plan:
            continue
        idx = sent[plan[name]]
        sub = x.index_select(0, idx)
        if name == 'Color':
            deg = gray_pil(sub).float().expand(-1, 3, -1, -1)
        elif name == 'Contrast':
            deg = torch.floor(gray_pil(sub).float().mean((1, 2, 3), keepdim=True) + 0.5).expand_as(sub)
        else:
            deg = _smooth(sub)
        degenerate.index_copy_(0, idx, deg.contiguous())
    f = sent[plan['factor']].float().view(-1, 1, 1, 1)
    return (degenerate + f * (x.float() - degenerate)).clamp_(0, 255).to(torch.uint8)


def enhance(x: torch.Tensor, kind: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance per sample on uint8 (n, 3, H, W): kind (n,) indexes ENHANCE_KINDS, factors (n,), both on
    the CPU (one upload)."""
    up = Upload()
    plan = _plan_enhance(kind, factors, up)
    return _enhance(x, plan, up.send(x.device))


# ---------------------------------------------------------------------------------------------------- driver
_N_GEO, _N_LUT = len(_GEOMETRIC), len(_LUT)


def _plan_layer(codes: torch.Tensor, args: torch.Tensor, h: int, w: int, up: Upload) -> List[Tuple[str, dict]]:
    """What one layer does, as upload slots: per family present, its rows of the batch and its parameters."""
    steps = []
    for family, lo, hi in (('geometric', 0, _N_GEO), ('lut', _N_GEO, _N_GEO + _N_LUT),
                           ('enhance', _N_GEO + _N_LUT, len(SUPPORTED_OPS))):
        sel = torch.nonzero((codes >= lo) & (codes < hi))[:, 0]
        if not len(sel):
            continue
        kind, a = codes[sel] - lo, args[sel]
        plan = {'rows': up.add(sel)}
        if family == 'geometric':
            plan['theta'] = up.add(_affine_thetas(kind, a, h, w))
        elif family == 'lut':
            plan['lut'] = up.add(_argument_luts(kind, a))
            for name, code in (('autocontrast', 0), ('equalize', 1)):
                rows = torch.nonzero(kind == code)[:, 0]
                if len(rows):
                    plan[name] = up.add(rows)
        else:
            plan.update(_plan_enhance(kind // 2, a, up))                                  # (Color, ColorInc, ...)
        steps.append((family, plan))
    return steps


def _run_layer(x: torch.Tensor, steps: List[Tuple[str, dict]], sent: List[torch.Tensor],
               fill: torch.Tensor) -> torch.Tensor:
    """Each family of one layer, batched over its rows, in place on x."""
    for family, plan in steps:
        idx = sent[plan['rows']]
        sub = x.index_select(0, idx)
        if family == 'geometric':
            out = _geometric(sub, sent[plan['theta']].view(-1, 2, 3), fill)
        elif family == 'lut':
            out = _lut(sub, sent[plan['lut']].view(-1, 256), *(sent[plan[k]] if k in plan else None
                                                                 for k in ('autocontrast', 'equalize')))
        else:
            out = _enhance(sub, plan, sent)
        x.index_copy_(0, idx, out)
    return x


def _apply_layers(x: torch.Tensor, codes: torch.Tensor, args: torch.Tensor, fill: Sequence[int]) -> torch.Tensor:
    """codes, args: (B, L) (codes index SUPPORTED_OPS, -1 = none); all layers planned first, one upload, then run."""
    up = Upload()
    fill_slot = up.add(torch.tensor(fill, dtype=torch.float64))
    plans = [_plan_layer(codes[:, k], args[:, k], x.shape[2], x.shape[3], up) for k in range(codes.shape[1])]
    sent = up.send(x.device)
    for steps in plans:
        x = _run_layer(x, steps, sent, sent[fill_slot])
    return x


def apply_ops(x: torch.Tensor, names: Sequence[str], args: torch.Tensor, fill: Sequence[int]) -> torch.Tensor:
    """One named op per sample ('' = none) with its argument (from op_argument): uint8 (B, 3, H, W) -> new tensor."""
    codes = torch.tensor([SUPPORTED_OPS.index(nm) if nm else -1 for nm in names])
    return _apply_layers(x.clone(), codes[:, None], args.double()[:, None], fill)


def apply_rand_augment(x: torch.Tensor, policy: RandAugmentPolicy, params: RandAugmentParams) -> torch.Tensor:
    """x: uint8 (B, 3, S, S) -> the same tensor, each sample through its own layers of ops (in place)."""
    codes = torch.tensor([SUPPORTED_OPS.index(nm) for nm in policy.op_names])[params.op]   # (B, L)
    args = op_arguments(codes, params.magnitude, params.sign, policy)
    return _apply_layers(x, torch.where(params.applied, codes, -1), args, policy.fill)
