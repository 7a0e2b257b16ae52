"""Shared fixtures for the engine tests: tiny generated ImageNet-layout folders and the tiny model flags."""
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

# a 2-block ViT-KAN at 16 px: 4 patches of 8x8, 32 dims (seconds per epoch on a CPU)
TINY_VIT = ['--model', 'vit_kan_tiny', '--input-size', '16',
            '--model-kwargs', 'patch_size=8', 'depth=2', 'embed_dim=32', 'num_heads=2']
# everything that would make a tiny CPU run slow or noisy off
QUIET = ['--device', 'cpu', '--num-workers', '0', '--cpu-threads', '1', '--no-model-ema', '--print-freq', '1000',
         '--aa', 'none', '--reprob', '0', '--mixup', '0', '--cutmix', '0', '--warmup-epochs', '0']


def make_image_folder(root: Path, num_classes: int = 3, train_per_class: int = 8, val_per_class: int = 4,
                      size: int = 16, seed: int = 0) -> Path:
    """root/{train,val}/class_i/*.png with class-dependent mean brightness (learnable), random noise on top."""
    rng = np.random.default_rng(seed)
    for split, count in (('train', train_per_class), ('val', val_per_class)):
        for c in range(num_classes):
            d = root / split / f'class_{c}'
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 40 + 170 * c / max(1, num_classes - 1)
                img = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f'{i}.png')
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / 'data')


def common_args(data: Path, out: Path, *extra: str) -> List[str]:
    return ['--data-path', str(data), '--output-dir', str(out), *QUIET, *extra]
