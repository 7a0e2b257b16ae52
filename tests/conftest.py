"""Shared fixtures for the engine tests: tiny generated ImageNet-layout folders and the tiny model flags."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

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


def run_interpreter_worker(test_file: str) -> Dict[str, Dict[str, float]]:
    """Run `test_file` as a script under Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before Triton is
    imported, so in a process of its own) and return the JSON report its last stdout line holds."""
    repo = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(p for p in (str(repo), os.environ.get('PYTHONPATH', '')) if p)
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(Path(test_file).resolve())], env=env, cwd=str(repo),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'interpreter worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}'
    return json.loads(proc.stdout.strip().splitlines()[-1])
