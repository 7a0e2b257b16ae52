"""Data for the engine: ImageNet-layout folders (root/train/<class>/*.png, root/val/<class>/*.png), timm transforms,
and loaders with DeiT's samplers.

Problems in the data are raised as `DataError` / `CorruptImageError` with the offending path in the message.
"""
import os
import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import AugmentOp
from timm.data.auto_augment import posterize as timm_posterize
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .errors import CorruptImageError, DataError
from .samplers import RepeatedAugSampler, ShardSampler

__all__ = [
    'TransformConfig', 'build_transform', 'build_three_augment', 'build_datasets', 'build_loaders', 'build_grid_sample_loader',
    'load_rgb_image',
]


def load_rgb_image(path: str) -> Image.Image:
    """ImageFolder's loader, but an undecodable file raises CorruptImageError naming it."""
    try:
        with open(path, 'rb') as f:
            img = Image.open(f)
            return img.convert('RGB')  # convert() forces the full decode, so truncated files fail here
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f'corrupt image file {path}: {e}') from None


@dataclass
class TransformConfig:
    """The augmentation flags that reach timm's `create_transform` (DeiT's defaults)."""
    input_size: int = 224
    train_crop: str = 'rrc'  # 'rrc': RandomResizedCrop(scale, ratio); 'pad': RandomCrop(input_size, crop_pad)
    crop_pad: int = 4
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.3
    aa: Optional[str] = 'rand-m9-mstd0.5-inc1'
    train_interpolation: str = 'bicubic'
    reprob: float = 0.25
    remode: str = 'pixel'
    recount: int = 1
    eval_crop_ratio: float = 0.875
    three_augment: bool = False  # DeiT III: crop, flip, one of grayscale/solarize/blur, jitter (no RandAugment)

    @classmethod
    def from_flags(cls, flags: Any) -> 'TransformConfig':
        """The fields found on an argparse namespace (main.py's flags); lists become tuples."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(flags).items()
                      if k in cls.__dataclass_fields__})


def _posterize_any_bits(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, with 0 bits giving the black image older Pillow gave: Pillow >= 13 rejects bits < 1, which
    timm 1.0's RandAugment ('...-inc1', DeiT's policy) asks for at its top magnitude."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize(transform) -> None:
    """Route the posterize ops of timm's RandAugment / AutoAugment / AugMix in this transform (only) through
    _posterize_any_bits."""
    for t in getattr(transform, 'transforms', []):
        ops = list(getattr(t, 'ops', []))
        for sub in getattr(t, 'policy', []):
            ops.extend(sub)
        for op in ops:
            if isinstance(op, AugmentOp) and op.aug_fn is timm_posterize:
                op.aug_fn = _posterize_any_bits


def build_transform(is_train: bool, cfg: TransformConfig):
    """timm's train transform (crop, flip, RandAugment, jitter, normalise, random erasing) or its eval transform
    (resize to input_size / eval_crop_ratio, centre crop)."""
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    if not is_train:
        return create_transform(cfg.input_size, is_training=False, interpolation='bicubic',
                                crop_pct=cfg.eval_crop_ratio, mean=mean, std=std)
    if cfg.three_augment:
        return build_three_augment(cfg)
    aa = cfg.aa if cfg.aa and cfg.aa.lower() != 'none' else None
    tf = create_transform(
        cfg.input_size, is_training=True, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), hflip=cfg.hflip,
        vflip=cfg.vflip, color_jitter=cfg.color_jitter if cfg.color_jitter > 0 else None, auto_augment=aa,
        interpolation=cfg.train_interpolation, re_prob=cfg.reprob, re_mode=cfg.remode, re_count=cfg.recount,
        mean=mean, std=std)
    _patch_posterize(tf)
    if cfg.train_crop == 'pad':
        # DeiT's small-image recipe (CIFAR, 32 px): the random-resized crop becomes a padded random crop
        tf.transforms[0] = transforms.RandomCrop(cfg.input_size, padding=cfg.crop_pad)
    elif cfg.train_crop != 'rrc':
        raise ValueError(f"train_crop must be 'rrc' or 'pad', got {cfg.train_crop!r}")
    return tf


def build_three_augment(cfg: TransformConfig) -> transforms.Compose:
    """DeiT III's ThreeAugment, the whole train transform (no RandAugment, no random erasing):

        crop ('rrc': random-resized crop; 'pad': resize + reflect-padded random crop) -> horizontal flip
        -> one of {grayscale, solarize at 128, Gaussian blur sigma 0.1-2} -> colour jitter -> tensor, normalise
    """
    if cfg.train_crop == 'pad':
        crop = [transforms.Resize(cfg.input_size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.RandomCrop(cfg.input_size, padding=cfg.crop_pad, padding_mode='reflect')]
    elif cfg.train_crop == 'rrc':
        crop = [transforms.RandomResizedCrop(cfg.input_size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                                             interpolation=transforms.InterpolationMode.BICUBIC)]
    else:
        raise ValueError(f"train_crop must be 'rrc' or 'pad', got {cfg.train_crop!r}")
    blur_kernel = 2 * int(0.05 * cfg.input_size) + 1  # odd; ~10 % of the image, 23 px at 224 (sigma up to 2)
    one_of_three = transforms.RandomChoice([
        transforms.Grayscale(num_output_channels=3),
        transforms.RandomSolarize(threshold=128, p=1.0),
        transforms.GaussianBlur(max(3, blur_kernel), sigma=(0.1, 2.0)),
    ])
    jitter = [transforms.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter)] if cfg.color_jitter else []
    return transforms.Compose([
        *crop, transforms.RandomHorizontalFlip(cfg.hflip), one_of_three, *jitter,
        transforms.ToTensor(), transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


def _image_folder(root: str, transform) -> ImageFolder:
    if not os.path.isdir(root):
        raise DataError(f'--data-path: folder {root} does not exist (expected ImageNet layout: train/ and val/ '
                        f'with one sub-folder of images per class)')
    try:
        ds = ImageFolder(root, transform=transform, loader=load_rgb_image, allow_empty=True)
    except FileNotFoundError as e:  # no class folders at all
        raise DataError(f'--data-path: {root}: {e}') from None
    counts = np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(ds.classes))
    empty = [ds.classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f'--data-path: class folder {os.path.join(root, empty[0])} has no images'
                        f'{f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""}; '
                        f'supported extensions: {", ".join(IMG_EXTENSIONS)}')
    return ds


def build_datasets(data_path: str, train_transform, eval_transform) -> Tuple[ImageFolder, ImageFolder, int]:
    """ImageFolders of data_path/train and data_path/val -> (train, val, num_classes). Class lists must agree."""
    if not os.path.isdir(data_path):
        raise DataError(f'--data-path: {data_path} does not exist')
    train = _image_folder(os.path.join(data_path, 'train'), train_transform)
    val = _image_folder(os.path.join(data_path, 'val'), eval_transform)
    if val.classes != train.classes:
        extra = sorted(set(val.classes) ^ set(train.classes))
        raise DataError(f'--data-path: train/ and val/ of {data_path} have different class folders '
                        f'(differing: {", ".join(extra[:5])})')
    return train, val, len(train.classes)


def _seed_worker(worker_id: int) -> None:
    """numpy and random in each worker follow torch's per-worker seed (itself drawn from the main RNG)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_loaders(
        train_set: Dataset,
        val_set: Dataset,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        world_size: int,
        rank: int,
        repeated_aug: bool,
        seed: int,
) -> Tuple[DataLoader, DataLoader]:
    """Train loader (shuffled, drop_last, repeated augmentation when distributed as in DeiT) and eval loader
    (exact shards, batch 1.5x). Raises DataError when the train loader would have no step at all."""
    if repeated_aug and world_size > 1:
        train_sampler = RepeatedAugSampler(train_set, world_size, rank, shuffle=True, num_repeats=3, seed=seed)
    else:
        train_sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_seed_worker)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=train_sampler, drop_last=True, **common)
    if len(train_loader) == 0:
        raise DataError(f'--batch-size {batch_size} is larger than the {len(train_sampler)} training images each of '
                        f'the {world_size} process(es) gets per epoch ({len(train_set)} in all): no full batch, '
                        f'no step; lower --batch-size')
    val_loader = DataLoader(val_set, batch_size=max(1, int(1.5 * batch_size)),
                            sampler=ShardSampler(val_set, world_size, rank), drop_last=False, **common)
    return train_loader, val_loader


def build_grid_sample_loader(
        train_set: Dataset,
        num_images: int,
        batch_size: int,
        num_workers: int,
        world_size: int,
        rank: int,
        seed: int,
        epoch: int,
) -> DataLoader:
    """A few training images (train transforms, no mixup) for a KAN grid update: num_images in all, the same
    count on every rank, drawn from (seed, epoch) so a resumed run picks the same ones."""
    g = torch.Generator()
    g.manual_seed(seed + 7919 * (epoch + 1))
    order = torch.randperm(len(train_set), generator=g)
    per_rank = max(1, min(num_images, len(train_set)) // world_size)
    if len(order) < per_rank * world_size:  # fewer images than ranks: reuse
        order = order.repeat(per_rank * world_size // len(order) + 1)
    mine: Sequence[int] = order[rank * per_rank:(rank + 1) * per_rank].tolist()
    return DataLoader(Subset(train_set, mine), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=_seed_worker)
