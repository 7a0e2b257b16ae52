"""The train and eval transforms of `build_transform` (timm's create_transform with DeiT's settings) on batches of
uint8 tensors, for the GPU data backend: decoded JPEGs (a list of (3, H_i, W_i)) or a dataset held on the GPU
((B, 3, H, W)). The same code runs on CPU tensors, which is how the tests compare it with the CPU path.

Train: RandomResizedCrop (timm's sampling rule, bicubic antialiased resize) or CIFAR's zero-padded RandomCrop ->
horizontal/vertical flip -> RandAugment (gpu_randaugment) or colour jitter -> normalise -> random erasing.
Train with three_augment (DeiT III, build_three_augment): RandomResizedCrop, or resize + reflect-padded RandomCrop
-> horizontal flip -> one of grayscale / solarize / blur (gpu_three_augment) -> colour jitter -> normalise.
Eval: resize the shorter side to floor(S / eval_crop_ratio) (bicubic, antialiased) -> centre crop S -> normalise.

Every random choice is per sample and drawn on the CPU (from `generator`), so grouping samples by op needs no
device sync; only the erasing noise is drawn on the device, from a seed taken from `generator`.
`apply_batches` runs several batches' choices in one pass (each batch's output as apply gives it): the launches of
one batch for all of them, where small images make a batch's host time many times its GPU time.

    tf = build_gpu_transform(True, TransformConfig())
    batch = tf([decode_jpeg(b, device='cuda') for b in ...])        # float32 (B, 3, 224, 224) on the GPU
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .data import ERASE_MODES, TransformConfig
from .errors import ConfigError
from .gpu_randaugment import (ENHANCE_KINDS, RandAugmentParams, RandAugmentPolicy, apply_rand_augment, enhance,
                              parse_rand_augment, sample_rand_augment)
from .gpu_resample import ImageBatch, ResampleAxis, resample_boxes, to_device
from .gpu_three_augment import ThreeAugmentParams, apply_three_augment, sample_three_augment

__all__ = ['GpuTransform', 'TransformParams', 'build_gpu_transform', 'cat_params']


@dataclass
class TransformParams:
    """Every random choice for one batch (CPU tensors, first dim B): the debug hook the tests read.

    y, x: per-axis crop + resize + flip. ra: RandAugment choices (None when off). jitter_order (B, 3): the order of
    brightness (0), contrast (1), saturation (2); jitter_factor (B, 3). erase_box (B, count, 4): top, left, h, w, with
    h = 0 for a box not drawn. noise_seed: seed of the device generator that draws the erasing noise. three:
    ThreeAugment's choices (None unless three_augment)."""
    y: ResampleAxis
    x: ResampleAxis
    ra: Optional[RandAugmentParams] = None
    three: Optional[ThreeAugmentParams] = None
    jitter_order: Optional[torch.Tensor] = None
    jitter_factor: Optional[torch.Tensor] = None
    erase_box: Optional[torch.Tensor] = None
    noise_seed: int = 0


def _cat_fields(parts: Sequence[Any]) -> Any:
    """Tensors concatenated along dim 0, dataclasses field by field, None kept, anything else the first's."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts))
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: _cat_fields([getattr(p, f.name) for p in parts])
                              for f in dataclasses.fields(first)})
    return first


def cat_params(params: Sequence[TransformParams]) -> TransformParams:
    """Several batches' choices as one batch's (every per-sample field concatenated in order). noise_seed is the
    first batch's: apply_batches erases per batch, each with its own seed."""
    if not params:
        raise ValueError('cat_params: no params given')
    return _cat_fields(params)


def _randint(high_inclusive: torch.Tensor, g: Optional[torch.Generator]) -> torch.Tensor:
    """Per-element uniform integer in [0, high] (a (B,) tensor of highs)."""
    u = torch.rand(high_inclusive.shape, generator=g, dtype=torch.float64)
    return torch.floor(u * (high_inclusive.double() + 1)).long().clamp(max=high_inclusive)


class GpuTransform:
    """A batched transform: __call__(images, generator) -> float32 (B, 3, S, S), normalised, on the images' device.

    `sample_params` draws the choices and `apply` runs them, so a test can read or fix the choices."""

    def __init__(self, is_train: bool, cfg: TransformConfig):
        self.is_train, self.cfg, self.size = is_train, cfg, int(cfg.input_size)
        self.policy: Optional[RandAugmentPolicy] = None
        self.jitter = 0.0
        if not is_train:
            return
        if cfg.train_crop not in ('rrc', 'pad'):
            raise ConfigError(f"train_crop must be 'rrc' or 'pad', got {cfg.train_crop!r}")
        if cfg.three_augment:  # DeiT III: no RandAugment, no erasing, no vertical flip; bicubic whatever is set
            self.jitter = cfg.color_jitter if cfg.color_jitter and cfg.color_jitter > 0 else 0.0
            return
        if cfg.reprob > 0 and cfg.remode not in ERASE_MODES:
            raise ConfigError(f'--remode {cfg.remode!r}: the GPU backend knows {", ".join(ERASE_MODES)}')
        if cfg.train_interpolation != 'bicubic':
            raise ConfigError(f'--train-interpolation {cfg.train_interpolation!r}: the GPU backend resizes bicubic')
        aa = cfg.aa if cfg.aa and cfg.aa.lower() != 'none' else None
        if aa:
            self.policy = parse_rand_augment(aa, self.size, IMAGENET_DEFAULT_MEAN)
        self.jitter = cfg.color_jitter if (cfg.color_jitter and cfg.color_jitter > 0 and not aa) else 0.0

    # ------------------------------------------------------------------------------------------------ sampling
    def sample_params(self, sizes: List[Tuple[int, int]], generator: Optional[torch.Generator] = None
                      ) -> TransformParams:
        """Draw the batch's choices for images of these (H, W) sizes."""
        g = generator
        hw = torch.tensor(sizes, dtype=torch.long).view(-1, 2)
        h, w = hw[:, 0], hw[:, 1]
        if not self.is_train:
            y, x = self._eval_axes(h, w)
            return TransformParams(y=y, x=x)
        n, cfg, three = len(sizes), self.cfg, self.cfg.three_augment
        if cfg.train_crop == 'rrc':
            top, left, ch, cw = self._rrc_boxes(h, w, g)
            no_flip = torch.zeros(n, dtype=torch.bool)
            y = ResampleAxis(top, ch, torch.full_like(ch, self.size), torch.zeros_like(ch), no_flip)
            x = ResampleAxis(left, cw, torch.full_like(cw, self.size), torch.zeros_like(cw), no_flip.clone())
        elif three:
            y, x = self._reflect_crop_axes(h, w, g)
        else:
            y, x = self._pad_crop_axis(h, g), self._pad_crop_axis(w, g)
        x.flip = torch.rand(n, generator=g) < cfg.hflip if cfg.hflip > 0 else x.flip
        y.flip = torch.rand(n, generator=g) < cfg.vflip if cfg.vflip > 0 and not three else y.flip
        p = TransformParams(y=y, x=x)
        if three:
            p.three = sample_three_augment(n, g)
        if self.policy is not None:
            p.ra = sample_rand_augment(self.policy, n, g)
        if self.jitter > 0:
            p.jitter_order = torch.argsort(torch.rand(n, 3, generator=g), dim=1)
            lo = max(0.0, 1.0 - self.jitter)
            p.jitter_factor = lo + (1.0 + self.jitter - lo) * torch.rand(n, 3, generator=g, dtype=torch.float64)
        if cfg.reprob > 0 and not three:
            p.erase_box = self._erase_boxes(n, g)
        p.noise_seed = int(torch.randint(0, 2 ** 62, (1,), generator=g))
        return p

    def _short_side_resize(self, h: torch.Tensor, w: torch.Tensor, short_size: int):
        """torchvision Resize(short_size) of (H, W): the shorter side -> short_size, the longer -> int(size * long /
        short). Returns the resized (H, W)."""
        short, long = torch.minimum(h, w), torch.maximum(h, w)
        new_long = torch.floor(short_size * long.double() / short.double()).long()
        return (torch.where(h <= w, torch.full_like(h, short_size), new_long),
                torch.where(h <= w, new_long, torch.full_like(w, short_size)))

    def _eval_axes(self, h: torch.Tensor, w: torch.Tensor) -> Tuple[ResampleAxis, ResampleAxis]:
        """torchvision Resize(floor(S / crop_pct)) of the shorter side (longer: int(size * long / short)), then
        CenterCrop(S): top = round((len - S) / 2), or zero padding when the resized side is shorter than S."""
        axes = []
        scale_size = math.floor(self.size / self.cfg.eval_crop_ratio)
        for length, resized in zip((h, w), self._short_side_resize(h, w, scale_size)):
            gap = resized - self.size
            offset = torch.where(gap >= 0, torch.round(gap.double() / 2.0).long(), -((-gap) // 2))
            axes.append(ResampleAxis(torch.zeros_like(length), length, resized, offset,
                                     torch.zeros(len(length), dtype=torch.bool)))
        return axes[0], axes[1]

    def _rrc_boxes(self, h: torch.Tensor, w: torch.Tensor, g: Optional[torch.Generator]):
        """timm's RandomResizedCropAndInterpolation.get_params per sample: 10 tries of area ~ U(scale) * H * W and
        log-aspect ~ U(log ratio), the first that fits wins; else the centre crop clipped to the ratio range."""
        n, (s0, s1), (r0, r1) = len(h), self.cfg.scale, self.cfg.ratio
        hf, wf = h.double()[:, None], w.double()[:, None]
        area = hf * wf * (s0 + (s1 - s0) * torch.rand(n, 10, generator=g, dtype=torch.float64))
        log_r0, log_r1 = math.log(r0), math.log(r1)
        aspect = torch.exp(log_r0 + (log_r1 - log_r0) * torch.rand(n, 10, generator=g, dtype=torch.float64))
        tw, th = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
        fits = (tw <= wf) & (th <= hf) & (tw > 0) & (th > 0)
        first = fits.int().argmax(1, keepdim=True)
        found = fits.any(1)
        cw, ch = tw.gather(1, first)[:, 0].long(), th.gather(1, first)[:, 0].long()
        top, left = _randint(h - ch, g), _randint(w - cw, g)
        in_ratio = w.double() / h.double()
        rmin, rmax = min(r0, r1), max(r0, r1)
        fb_w = torch.where(in_ratio > rmax, torch.round(h.double() * rmax).long(), w)
        fb_h = torch.where(in_ratio < rmin, torch.round(w.double() / rmin).long(), h)
        ch, cw = torch.where(found, ch, fb_h), torch.where(found, cw, fb_w)
        top = torch.where(found, top, (h - ch) // 2)
        left = torch.where(found, left, (w - cw) // 2)
        return top, left, ch, cw

    def _pad_crop_axis(self, length: torch.Tensor, g: Optional[torch.Generator]) -> ResampleAxis:
        """torchvision RandomCrop(S, padding=crop_pad), zero fill: offset ~ U{0 .. len + 2 pad - S} - pad."""
        pad = int(self.cfg.crop_pad)
        room = length + 2 * pad - self.size
        if (room < 0).any():
            raise ValueError(f'an image of side {int(length.min())} padded by {pad} is smaller than the crop '
                             f'{self.size}')
        offset = _randint(room, g) - pad
        return ResampleAxis(torch.zeros_like(length), length, length.clone(), offset,
                            torch.zeros(len(length), dtype=torch.bool))

    def _reflect_crop_axes(self, h: torch.Tensor, w: torch.Tensor, g: Optional[torch.Generator]):
        """ThreeAugment's 'pad' crop: Resize(S) of the shorter side (bicubic), then RandomCrop(S, padding=crop_pad,
        padding_mode='reflect'): offset ~ U{0 .. resized + 2 pad - S} - pad, mirrored at the resized image's edges."""
        pad = int(self.cfg.crop_pad)
        axes = []
        for length, resized in zip((h, w), self._short_side_resize(h, w, self.size)):
            if pad >= int(resized.min()):
                raise ValueError(f'reflect padding {pad} needs images larger than {pad} px after the resize')
            offset = _randint(resized + 2 * pad - self.size, g) - pad
            no, yes = torch.zeros(len(length), dtype=torch.bool), torch.ones(len(length), dtype=torch.bool)
            axes.append(ResampleAxis(torch.zeros_like(length), length, resized, offset, flip=no, reflect=yes))
        return axes[0], axes[1]

    def _erase_boxes(self, n: int, g: Optional[torch.Generator]) -> torch.Tensor:
        """timm's RandomErasing._erase per sample: with prob reprob, count ~ U{1..recount} boxes of area
        U(0.02, 1/3) * S^2 / count and log-aspect U(log 0.3, log 1/0.3), 10 tries each (h < S and w < S)."""
        cfg, s, max_count = self.cfg, self.size, max(1, int(self.cfg.recount))
        erase = torch.rand(n, generator=g, dtype=torch.float64) < cfg.reprob
        count = torch.randint(1, max_count + 1, (n,), generator=g) if max_count > 1 else torch.ones(n, dtype=torch.long)
        shape = (n, max_count, 10)
        area = (0.02 + (1 / 3 - 0.02) * torch.rand(shape, generator=g, dtype=torch.float64)) * s * s
        area = area / count.double().view(n, 1, 1)
        la = math.log(0.3)
        aspect = torch.exp(la + (-la - la) * torch.rand(shape, generator=g, dtype=torch.float64))
        bh, bw = torch.round(torch.sqrt(area * aspect)).long(), torch.round(torch.sqrt(area / aspect)).long()
        fits = (bw < s) & (bh < s)
        first = fits.int().argmax(-1, keepdim=True)
        bh, bw = bh.gather(-1, first)[..., 0], bw.gather(-1, first)[..., 0]              # (n, max_count)
        drawn = fits.any(-1) & erase[:, None] & (torch.arange(max_count)[None] < count[:, None])
        top, left = _randint(s - bh, g), _randint(s - bw, g)
        bh = torch.where(drawn, bh, torch.zeros_like(bh))
        return torch.stack([top, left, bh, bw], -1)

    # ------------------------------------------------------------------------------------------------ applying
    def apply(self, images: ImageBatch, params: TransformParams, erase: bool = True) -> torch.Tensor:
        """Run the drawn choices: uint8 images -> float32 (B, 3, S, S) normalised (erase=False: all but the
        random erasing)."""
        x = resample_boxes(images, params.y, params.x, self.size, out_dtype=torch.uint8)
        if params.ra is not None:
            x = apply_rand_augment(x, self.policy, params.ra)
        if params.three is not None:
            x = apply_three_augment(x, params.three, self.size)
        if params.jitter_order is not None:
            # torchvision ColorJitter on PIL: brightness, contrast, saturation are ImageEnhance's Brightness, Contrast,
            # Color; each sample applies them in its own order
            kinds = torch.tensor([ENHANCE_KINDS.index(k) for k in ('Brightness', 'Contrast', 'Color')])
            for pos in range(3):
                order = params.jitter_order[:, pos]
                x = enhance(x, kinds[order], params.jitter_factor.gather(1, order[:, None])[:, 0])
        # (x / 255 - mean) / std as shift + x * scale: one pass over the batch (addcmul promotes the uint8 to fp32;
        # it replaced a mul and an add_, two passes, ~0.29 ms a 224 px batch of 256 on an H200)
        mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
        scale, shift = to_device(torch.stack([1.0 / (255.0 * std), -mean / std]), x.device).view(2, 1, 3, 1, 1)
        out = torch.addcmul(shift, x, scale)
        if erase and params.erase_box is not None:
            out = self._erase(out, params.erase_box, [params.noise_seed], [len(out)])
        return out

    def apply_batches(self, images: ImageBatch, params: Sequence[TransformParams]) -> List[torch.Tensor]:
        """apply() of consecutive batches in one pass: images (sum of the B_k, 3, H, W) (or their list), params[k]
        batch k's choices -> batch k's output, as apply(images_k, params[k]) gives it: every op acts per sample
        and the erasing noise is drawn per batch from its own seed. The host issues one batch's launches for all
        of them."""
        sizes = [len(p.y.start) for p in params]
        cat = cat_params(params)
        out = self.apply(images, cat, erase=False)
        if cat.erase_box is not None:
            out = self._erase(out, cat.erase_box, [p.noise_seed for p in params], sizes)
        return list(out.split(sizes))

    def _erase(self, out: torch.Tensor, boxes: torch.Tensor, seeds: List[int], sizes: List[int]) -> torch.Tensor:
        """Fill each drawn box with N(0, 1) per pixel ('pixel'), per channel ('rand') or 0 ('const').

        out (sum B_k, 3, S, S): consecutive batches of sizes B_k, boxes (sum B_k, count, 4) their boxes (CPU). Batch
        k's noise comes from a device generator of its own seeded with seeds[k], drawn as if it were erased alone;
        the masks, the where and the index_copy_ run once for all the batches (at 32 px, 16 batches a call: ~40
        device ops instead of ~460)."""
        dev, s = out.device, self.size
        gens = [torch.Generator(device=dev) for _ in seeds]
        for gen, seed in zip(gens, seeds):
            gen.manual_seed(seed)
        batch_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # (sum B_k,) batch k
        rows = torch.arange(s, device=dev).view(1, 1, s, 1)
        for j in range(boxes.shape[1]):
            sel = torch.nonzero(boxes[:, j, 2] > 0)[:, 0]
            if len(sel) == 0:
                continue
            counts = torch.bincount(batch_of[sel], minlength=len(sizes)).tolist()         # boxes j per batch
            packed = to_device(torch.cat([boxes[sel, j].T.reshape(-1), sel]), dev)       # one upload
            top, left, bh, bw, idx = packed.split(len(sel))
            top, left, bh, bw = (v.view(-1, 1, 1, 1) for v in (top, left, bh, bw))
            inside = ((rows >= top) & (rows < top + bh)) & ((rows.transpose(2, 3) >= left) &
                                                            (rows.transpose(2, 3) < left + bw))
            per_box = {'pixel': (3, s, s), 'rand': (3, 1, 1)}.get(self.cfg.remode)
            if per_box:
                fills = [torch.randn((c, *per_box), generator=gen, device=dev) for gen, c in zip(gens, counts) if c]
                fill = fills[0] if len(fills) == 1 else torch.cat(fills)
            else:
                fill = torch.zeros(1, device=dev)
            out.index_copy_(0, idx, torch.where(inside, fill, out.index_select(0, idx)))
        return out

    def __call__(self, images: ImageBatch, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images: list of uint8 (3, H_i, W_i) or uint8 (B, 3, H, W) on one device -> float32 (B, 3, S, S).
        generator: a CPU torch.Generator (the choices are drawn on the CPU), or None for torch's default one."""
        if generator is not None and generator.device.type != 'cpu':
            raise ValueError(f'generator must be a CPU torch.Generator, got one on {generator.device}')
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
                raise ValueError(f'expected uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}')
            sizes = [tuple(images.shape[2:])] * images.shape[0]
        else:
            if not images or any(im.dim() != 3 or im.shape[0] != 3 or im.dtype != torch.uint8 for im in images):
                raise ValueError('expected a non-empty list of uint8 (3, H, W) tensors')
            sizes = [tuple(im.shape[1:]) for im in images]
        return self.apply(images, self.sample_params(sizes, generator))


def build_gpu_transform(is_train: bool, cfg: TransformConfig) -> GpuTransform:
    """The GPU backend's counterpart of data.build_transform(is_train, cfg); raises ConfigError for settings it does
    not support (an --aa other than timm's 'rand-...', a train interpolation other than bicubic)."""
    return GpuTransform(is_train, cfg)
