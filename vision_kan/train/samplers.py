"""Samplers for the engine: DeiT's repeated augmentation without its empty epochs, and exact sharded evaluation.

Both are deterministic functions of (seed, epoch, rank), so a resumed run draws the same order as a straight one.
"""
import math
from typing import Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ['RepeatedAugSampler', 'ShardSampler']


class RepeatedAugSampler(Sampler[int]):
    """Repeated augmentation (Hoffer et al., 2020; DeiT): each image is drawn `num_repeats` times per epoch and the
    copies go to different processes, so one step sees several augmentations of the same image.

    An epoch gives each rank ceil(n / world) indices, the length of an ordinary distributed epoch: the repeats cost
    distinct images per epoch, not steps. DeiT's version rounds the epoch down to a multiple of 256 images and
    yields nothing at all on a data set smaller than that; this one never yields an empty epoch for n >= 1.

    Args:
        dataset: anything with len().
        num_replicas: world size.
        rank: this process's rank.
        shuffle: draw a new permutation each epoch (from seed + epoch).
        num_repeats: copies of each image per epoch (DeiT: 3).
        seed: shared by all ranks.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 num_repeats: int = 3, seed: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'RepeatedAugSampler: rank must be in [0, {num_replicas}), got {rank}')
        if num_repeats < 1:
            raise ValueError(f'RepeatedAugSampler: num_repeats must be >= 1, got {num_repeats}')
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        n = len(dataset)
        self.num_samples = math.ceil(n / num_replicas)  # per rank and epoch
        self.total_size = math.ceil(n * num_repeats / num_replicas) * num_replicas  # repeated list, padded

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        # (n,) -> (n * r,): copies of one image sit next to each other, so striding by rank deals them out to
        # different ranks
        indices = order.repeat_interleave(self.num_repeats)
        pad = self.total_size - len(indices)
        if pad > 0:
            indices = torch.cat([indices, indices.repeat(math.ceil(pad / len(indices)))[:pad]])
        mine = indices[self.rank:self.total_size:self.num_replicas]  # (total_size / world,)
        return iter(mine[:self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ShardSampler(Sampler[int]):
    """Evaluation shards: rank r takes indices r, r + world, ...; no padding, so summed counts are exact.

    Ranks may get one index more or less; evaluate() forwards the unwrapped model (no collective per step) and
    reduces sums once at the end, so uneven shards are fine.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'ShardSampler: rank must be in [0, {num_replicas}), got {rank}')
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))
