"""--synthetic-data: random normalised images and labels made once on the device, batched by the pil backend's
samplers. No file is read, nothing is decoded or augmented: the ceiling a data pipeline is measured against (timm's
benchmark has the same idea). Shapes and classes are the data set's (--data-path) or ImageNet-1k's.
"""
from typing import Iterable, List, Optional, Tuple

import torch

from .gpu_data import _DeviceLoader

__all__ = ['SyntheticDataset', 'SyntheticLoader']

IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


class SyntheticDataset:
    """--synthetic-data: `size` labels drawn once from (seed) and a pool of random normalised float32 images
    (pool, 3, S, S), all on the device. No file is read."""

    def __init__(self, size: int, num_classes: int, image_size: int, device: torch.device, seed: int,
                 pool: int = 256):
        g = torch.Generator(device=device).manual_seed(seed + 424242)
        self.labels = torch.randint(num_classes, (size,), generator=g, device=device)
        self.pool = torch.randn(min(pool, size), 3, image_size, image_size, generator=g, device=device)
        self.classes = [f'class_{c}' for c in range(num_classes)]
        self.targets = self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def subset_loader(self, indices: List[int], batch_size: int, seed: int) -> 'SyntheticLoader':
        """Batches of these indices (the KAN grid update's sample)."""
        return SyntheticLoader(self, indices, batch_size, False, seed, 0)


class SyntheticLoader(_DeviceLoader):
    """Batches of the pool's images (a fresh tensor each step: mixup works in place) with the sampled labels."""

    def __init__(self, dataset: SyntheticDataset, sampler: Iterable[int], batch_size: int, drop_last: bool,
                 seed: int, rank: int):
        super().__init__(sampler, batch_size, drop_last, dataset.labels.device, None, seed, rank, False, 0)
        self.dataset = dataset

    def _source(self) -> Iterable[List[int]]:
        return self.batch_sampler

    def _produce(self, indices: List[int], generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, ...]:
        idx = torch.tensor(indices, dtype=torch.int64).to(self.device, non_blocking=True)
        pool = self.dataset.pool
        return pool.index_select(0, idx % len(pool)), self.dataset.labels.index_select(0, idx)

