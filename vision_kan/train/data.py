"""Data for the engine: ImageNet-layout folders (root/train/<class>/*.png, root/val/<class>/*.png), timm transforms,
and loaders with DeiT's samplers. `build_data` picks the backend: this file's pil loaders, or the GPU ones
(gpu_data.py: nvjpeg decode or a set held on the device; synthetic_data.py), all on the same samplers.

Problems in the data are raised as `DataError` / `CorruptImageError` with the offending path in the message.
"""
import os
import random
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

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

from .errors import ConfigError, CorruptImageError, DataError
from .samplers import RepeatedAugSampler, ShardSampler

__all__ = [
    'TransformConfig', 'build_transform', 'build_three_augment', 'build_datasets', 'build_loaders', 'build_grid_sample_loader',
    'load_rgb_image', 'DataConfig', 'build_data', 'train_sampler', 'ERASE_MODES',
]


def load_rgb_image(path: str) -> Image.Image:
    """ImageFolder's loader, but an undecodable file raises CorruptImageError naming it."""
    try:
        with open(path, 'rb') as f:
            img = Image.open(f)
            return img.convert('RGB')  # convert() forces the full decode, so truncated files fail here
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f'corrupt image file {path}: {e}') from None


ERASE_MODES = ('pixel', 'rand', 'const')  # timm RandomErasing's fills (--remode)


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


def train_sampler(train_set: Dataset, world_size: int, rank: int, repeated_aug: bool, seed: int):
    """Every backend's training sampler: DeiT's repeated augmentation when distributed (and asked), else an
    ordinary shuffled distributed sampler; both a function of (seed, epoch, rank)."""
    if repeated_aug and world_size > 1:
        return RepeatedAugSampler(train_set, world_size, rank, shuffle=True, num_repeats=3, seed=seed)
    return DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed)


def _check_steps(steps: int, batch_size: int, per_rank: int, total: int, world_size: int) -> None:
    if steps == 0:
        raise DataError(f'--batch-size {batch_size} is larger than the {per_rank} training images each of '
                        f'the {world_size} process(es) gets per epoch ({total} in all): no full batch, '
                        f'no step; lower --batch-size')


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
    sampler = train_sampler(train_set, world_size, rank, repeated_aug, seed)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_seed_worker)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
    _check_steps(len(train_loader), batch_size, len(sampler), len(train_set), world_size)
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
    if hasattr(train_set, 'subset_loader'):  # a GPU backend's data set: batches on its device, augmented there
        return train_set.subset_loader(_grid_sample_indices(len(train_set), num_images, world_size, rank, seed, epoch),
                                       batch_size, seed + 7919 * (epoch + 1))
    mine = _grid_sample_indices(len(train_set), num_images, world_size, rank, seed, epoch)
    return DataLoader(Subset(train_set, mine), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=_seed_worker)


def _grid_sample_indices(n: int, num_images: int, world_size: int, rank: int, seed: int, epoch: int) -> List[int]:
    g = torch.Generator()
    g.manual_seed(seed + 7919 * (epoch + 1))
    order = torch.randperm(n, generator=g)
    per_rank = max(1, min(num_images, n) // world_size)
    if len(order) < per_rank * world_size:  # fewer images than ranks: reuse
        order = order.repeat(per_rank * world_size // len(order) + 1)
    return order[rank * per_rank:(rank + 1) * per_rank].tolist()


@dataclass
class DataConfig:
    """Where the batches come from (main.py's data flags; field names are their dest names)."""
    data_path: str = ''
    data_backend: str = 'pil'  # 'pil': PIL decode + timm transforms in workers; 'gpu': nvjpeg + GpuTransform
    data_on_gpu: bool = False  # the decoded data set held on the device (small sets of one image size)
    synthetic_data: bool = False  # random tensors on the device: no read, decode or augmentation
    synthetic_classes: int = 1000  # without --data-path
    synthetic_images: Optional[int] = None  # train images without --data-path (default ImageNet-1k's)
    data_process: bool = False  # gpu backends: training batches made in a process of their own (opt-in for now)
    data_processes: int = 1  # with data_process: how many such processes share each rank's batches
    data_on_gpu_group: int = 0  # with data_on_gpu: training batches augmented per call (0: automatic)
    batch_size: int = 64
    num_workers: int = 10
    pin_mem: bool = True
    repeated_aug: bool = True
    seed: int = 0
    device: str = ''  # the --device flag as given: '' (CUDA when available), 'cuda' or 'cpu'

    @classmethod
    def from_flags(cls, flags: Any) -> 'DataConfig':
        return cls(**{k: v for k, v in vars(flags).items() if k in cls.__dataclass_fields__})

    @property
    def on_gpu_backend(self) -> bool:
        return self.data_backend == 'gpu' or self.data_on_gpu


def build_data(cfg: DataConfig, tcfg: TransformConfig, device: torch.device, world_size: int, rank: int):
    """The data of a run, from any backend: (train_set, val_set, num_classes, train_loader, val_loader).

    Every loader has len(), a `.sampler` with set_epoch (training), and yields (images, labels) batches: on the CPU
    for the pil backend (the engine moves them), already on `device` for the others. Raises DataError / ConfigError
    for bad data or flags that do not fit (gpu backend without CUDA, --data-on-gpu with --synthetic-data).
    """
    if cfg.data_backend not in ('pil', 'gpu'):
        raise ConfigError(f"--data-backend must be 'pil' or 'gpu', got {cfg.data_backend!r}")
    if cfg.data_process and (cfg.synthetic_data or not cfg.on_gpu_backend):
        raise ConfigError('--data-process makes the batches of --data-backend gpu or --data-on-gpu; drop it '
                          '(or add one of those)')
    if cfg.data_processes < 1 or (cfg.data_processes > 1 and not cfg.data_process):
        raise ConfigError(f'--data-processes {cfg.data_processes}: a count of at least 1, and above 1 only with '
                          '--data-process')
    if cfg.data_on_gpu_group < 0 or (cfg.data_on_gpu_group > 0 and not cfg.data_on_gpu):
        raise ConfigError(f'--data-on-gpu-group {cfg.data_on_gpu_group}: a count of at least 1 (0: automatic), '
                          'and only with --data-on-gpu')
    if cfg.synthetic_data:
        if cfg.data_on_gpu:
            raise ConfigError('--synthetic-data makes its batches on the device: drop --data-on-gpu')
        return _build_synthetic(cfg, tcfg, device, world_size, rank)
    if not cfg.on_gpu_backend:
        train_set, val_set, num_classes = build_datasets(cfg.data_path, build_transform(True, tcfg),
                                                         build_transform(False, tcfg))
        train_loader, val_loader = build_loaders(train_set, val_set, cfg.batch_size, cfg.num_workers,
                                                 cfg.pin_mem and device.type == 'cuda', world_size, rank,
                                                 cfg.repeated_aug, cfg.seed)
        return train_set, val_set, num_classes, train_loader, val_loader
    check_gpu_backend(cfg, device)
    from .gpu_augment import build_gpu_transform
    from .gpu_data import build_gpu_data
    train_folder, val_folder, num_classes = build_datasets(cfg.data_path, None, None)
    train_set, val_set, train_loader, val_loader = build_gpu_data(
        train_folder, val_folder, cfg.data_on_gpu, build_gpu_transform(True, tcfg), build_gpu_transform(False, tcfg),
        cfg.batch_size, cfg.num_workers, cfg.pin_mem and device.type == 'cuda', device, world_size, rank,
        cfg.repeated_aug, cfg.seed, train_sampler, ShardSampler, _seed_worker,
        data_process=cfg.data_process, data_processes=cfg.data_processes, augment_batches=cfg.data_on_gpu_group)
    _check_steps(len(train_loader), cfg.batch_size, len(train_loader.sampler), len(train_set), world_size)
    return train_set, val_set, num_classes, train_loader, val_loader


def build_eval_data(cfg: DataConfig, tcfg: TransformConfig, device: torch.device, world_size: int, rank: int):
    """--eval's data, from the pil or a GPU backend: (val_set, num_classes, val_loader) of data_path/val alone (no
    train/ needed), with exact eval shards. Synthetic data has nothing to evaluate: ConfigError."""
    if cfg.data_backend not in ('pil', 'gpu'):
        raise ConfigError(f"--data-backend must be 'pil' or 'gpu', got {cfg.data_backend!r}")
    if cfg.synthetic_data:
        raise ConfigError('--eval measures accuracy on real images: drop --synthetic-data')
    if not os.path.isdir(cfg.data_path):
        raise DataError(f'--data-path: {cfg.data_path} does not exist')
    val_root = os.path.join(cfg.data_path, 'val')
    pin = cfg.pin_mem and device.type == 'cuda'
    if not cfg.on_gpu_backend:
        val_set = _image_folder(val_root, build_transform(False, tcfg))
        val_loader = DataLoader(val_set, batch_size=max(1, int(1.5 * cfg.batch_size)), num_workers=cfg.num_workers,
                                pin_memory=pin, sampler=ShardSampler(val_set, world_size, rank),
                                worker_init_fn=_seed_worker)
        return val_set, len(val_set.classes), val_loader
    check_gpu_backend(cfg, device)
    from .gpu_augment import build_gpu_transform
    from .gpu_data import build_gpu_eval_data
    val_folder = _image_folder(val_root, None)
    val_set, val_loader = build_gpu_eval_data(
        val_folder, cfg.data_on_gpu, build_gpu_transform(False, tcfg), cfg.batch_size, cfg.num_workers, pin, device,
        world_size, rank, cfg.seed, ShardSampler, _seed_worker)
    return val_set, len(val_folder.classes), val_loader


def check_gpu_backend(cfg: DataConfig, device: torch.device) -> None:
    """The gpu backend runs on CUDA (nvjpeg), or on the CPU only when --device cpu asks for it (decode on the CPU,
    augment in batches there: tests and debugging). Raises DataError when this torchvision cannot decode JPEG on
    the device."""
    flag = '--data-on-gpu' if cfg.data_on_gpu else '--data-backend gpu'
    if device.type != 'cuda':
        if cfg.device != 'cpu':
            raise ConfigError(f'{flag} needs a CUDA device and none is visible; use --data-backend pil, or add '
                              f'--device cpu to decode and augment in batches on the CPU')
        return
    if cfg.data_on_gpu:
        return  # decoded on the CPU once
    import torchvision
    from torchvision.io import decode_jpeg, encode_jpeg
    probe = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
    try:
        decode_jpeg([probe], device=device)
    except RuntimeError as e:
        raise DataError(f'{flag}: torchvision {torchvision.__version__} cannot decode JPEG on {device} '
                        f'({str(e).strip().splitlines()[-1]}); use --data-backend pil') from None


def _build_synthetic(cfg: DataConfig, tcfg: TransformConfig, device: torch.device, world_size: int, rank: int):
    """Synthetic sets with the data set's sizes and classes (--data-path), else ImageNet-1k's or --synthetic-*."""
    from .synthetic_data import IMAGENET_TRAIN, IMAGENET_VAL, SyntheticDataset, SyntheticLoader
    if cfg.data_path:
        train_folder, val_folder, num_classes = build_datasets(cfg.data_path, None, None)
        n_train, n_val = len(train_folder), len(val_folder)
    else:
        num_classes = cfg.synthetic_classes
        n_train = cfg.synthetic_images or IMAGENET_TRAIN
        n_val = max(1, n_train // 25) if cfg.synthetic_images else IMAGENET_VAL
    if num_classes < 1 or n_train < 1:
        raise ConfigError(f'--synthetic-classes and --synthetic-images must be >= 1, got {num_classes}, {n_train}')
    train_set = SyntheticDataset(n_train, num_classes, tcfg.input_size, device, cfg.seed)
    val_set = SyntheticDataset(n_val, num_classes, tcfg.input_size, device, cfg.seed + 1)
    sampler = train_sampler(train_set, world_size, rank, cfg.repeated_aug, cfg.seed)  # type: ignore[arg-type]
    train_loader = SyntheticLoader(train_set, sampler, cfg.batch_size, True, cfg.seed, rank)
    val_loader = SyntheticLoader(val_set, ShardSampler(val_set, world_size, rank), max(1, int(1.5 * cfg.batch_size)),
                                 False, cfg.seed, rank)
    _check_steps(len(train_loader), cfg.batch_size, len(sampler), n_train, world_size)
    return train_set, val_set, num_classes, train_loader, val_loader
