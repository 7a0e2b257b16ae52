"""The GPU data backends: every loader yields (images, labels) already on the device, so the engine cannot tell
them from the pil backend's loader.

    decode:   workers read file bytes (and decode on the CPU what nvjpeg should not take, image_bytes.py); the main
              process decodes the batch with nvjpeg and applies the batched GpuTransform (--data-backend gpu)
    resident: the whole (small, one-size) data set decoded once into a uint8 (N, 3, H, W) tensor on the device,
              batches gathered by index and augmented there (--data-on-gpu)
    synthetic: random normalised images and labels made on the device: no read, no decode, no augmentation, the
              ceiling the other two are measured against (--synthetic-data)

All three draw their indices from the pil backend's samplers (DistributedSampler, RepeatedAugSampler, ShardSampler),
so DDP shards and the data order of a resumed run are the pil backend's. The augmentations draw from a generator
seeded per batch by (seed, rank, epoch, batch number), so a resumed epoch repeats the uninterrupted run's
augmentations too. On CUDA the next batches are decoded and augmented by a background thread on a stream of their
own (`prefetch` batches ahead) while the model trains on the current one.
"""
import itertools
import math
import queue
import sys
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from .errors import DataError
from .image_bytes import bytes_tensor, decode_jpegs, decode_on_cpu, nvjpeg_decodable, read_file_bytes

__all__ = ['EncodedImageFolder', 'EncodedBatch', 'collate_encoded', 'DecodeLoader', 'ResidentDataset',
           'ResidentLoader', 'augment_group', 'load_resident', 'prefetch_on_device', 'batch_generator',
           'build_gpu_data', 'decode_train_loader', 'resident_train_loader']

Transform = Callable[..., torch.Tensor]  # GpuTransform: (list of uint8 (3, H_i, W_i) | uint8 (B, 3, H, W)) -> float


def batch_generator(seed: int, rank: int, epoch: int, batch: int) -> torch.Generator:
    """The augmentations' generator for one batch (its number in the epoch) of one epoch of one rank, a function of
    (seed, rank, epoch, batch) only, so that the batches are the same however an epoch's batches are shared among
    producers (--data-processes). A CPU generator: the GpuTransform draws its per-sample choices on the host (no
    device sync). Python's hash of a tuple of ints does not depend on PYTHONHASHSEED."""
    g = torch.Generator()
    g.manual_seed(hash((seed, rank, epoch, batch, 17)) % 2 ** 63)
    return g


def prefetch_on_device(source: Iterable[Any], produce: Callable[[Any], Tuple[torch.Tensor, ...]],
                       device: torch.device, depth: int = 2,
                       threaded: Optional[bool] = None) -> Iterator[Tuple[torch.Tensor, ...]]:
    """produce(item) for each item of source, in order. Threaded (the default on CUDA): a background thread runs it,
    up to `depth` results ahead, on a side stream whose work the consumer's stream waits for before a result is
    handed over; an exception there is raised in the consumer; closing the iterator stops the thread. Else inline
    (threaded=True on the CPU runs the same thread logic without streams: the tests)."""
    if threaded is None:
        threaded = device.type == 'cuda'
    if not threaded or depth < 1:
        for item in source:
            yield produce(item)
        return
    cuda = device.type == 'cuda'
    results: 'queue.Queue[Any]' = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                results.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        stream = torch.cuda.Stream(device) if cuda else None
        try:
            with (torch.cuda.device(device) if cuda else nullcontext()), \
                    (torch.cuda.stream(stream) if cuda else nullcontext()):
                for item in source:
                    out = produce(item)
                    ready = None
                    if cuda:
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    if not put((out, ready)):
                        return
            put(done)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
            put(e)

    thread = threading.Thread(target=work, name='gpu-data-prefetch', daemon=True)
    thread.start()
    try:
        while True:
            got = results.get()
            if got is done:
                return
            if isinstance(got, BaseException):
                raise got
            out, ready = got
            if cuda:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(ready)
                for t in _tensors(out):
                    t.record_stream(consumer)  # the allocator must not reuse them before the consumer is done
            yield out
    finally:
        stop.set()
        thread.join()


def _tensors(out: Any) -> Iterator[torch.Tensor]:
    """The tensors of a result: a tensor, or tuples / lists of them (a decoded batch is a list of images)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for item in out:
            yield from _tensors(item)


class EncodedImageFolder(Dataset):
    """An ImageFolder's files for the decode backend: item i is (uint8 tensor, encoded, label, i), where `encoded`
    tells JPEG bytes for nvjpeg (only when gpu_decode) from a uint8 (3, H, W) image decoded in the worker."""

    def __init__(self, samples: Sequence[Tuple[str, int]], classes: List[str], gpu_decode: bool,
                 device: torch.device = torch.device('cpu'), train_transform: Optional[Transform] = None,
                 num_workers: int = 0):
        self.samples = list(samples)
        self.targets = [t for _, t in self.samples]
        self.classes = classes
        self.gpu_decode = gpu_decode
        self.device, self.train_transform, self.num_workers = device, train_transform, num_workers

    def subset_loader(self, indices: List[int], batch_size: int, seed: int) -> 'DecodeLoader':
        """Train-augmented batches of these images in this order (the KAN grid update's sample)."""
        return DecodeLoader(self, indices, batch_size, False, self.device, self.train_transform,  # type: ignore
                            min(self.num_workers, 4), False, seed, 0, True, prefetch=0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, bool, int, int]:
        path, label = self.samples[index]
        data = read_file_bytes(path)
        if self.gpu_decode and nvjpeg_decodable(data):
            return bytes_tensor(data), True, label, index
        return decode_on_cpu(bytes_tensor(data), path), False, label, index


@dataclass
class EncodedBatch:
    """One batch from the workers, in two flat buffers (one shared-memory transfer each, not one per image).

    jpeg_bytes: uint8 (sum n_j,) JPEG files back to back; jpeg_offsets (k + 1,); jpeg_slots (k,) batch positions.
    pixels: uint8 (sum 3 H_m W_m,) images decoded on the CPU; pixel_shapes (m, 3); pixel_slots (m,).
    labels, indices: int64 (B,).
    """
    jpeg_bytes: torch.Tensor
    jpeg_offsets: torch.Tensor
    jpeg_slots: torch.Tensor
    pixels: torch.Tensor
    pixel_shapes: torch.Tensor
    pixel_slots: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def pin_memory(self) -> 'EncodedBatch':
        """Pin the decoded pixels (copied to the GPU as they are); nvjpeg stages the JPEG bytes itself."""
        self.pixels = self.pixels.pin_memory()
        return self

    def jpegs(self) -> List[torch.Tensor]:
        o = self.jpeg_offsets.tolist()
        return [self.jpeg_bytes[o[j]:o[j + 1]] for j in range(len(o) - 1)]

    def images(self, pixels: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """The decoded images as (3, H, W) views of `pixels` (the buffer, or its copy on a device)."""
        pixels = self.pixels if pixels is None else pixels
        out, start = [], 0
        for c, h, w in self.pixel_shapes.tolist():
            out.append(pixels[start:start + c * h * w].view(c, h, w))
            start += c * h * w
        return out


def collate_encoded(items: Sequence[Tuple[torch.Tensor, bool, int, int]]) -> EncodedBatch:
    """Runs in the worker: the batch's tensors concatenated into the two buffers of an EncodedBatch."""
    jpeg = [(s, t) for s, (t, enc, _, _) in enumerate(items) if enc]
    pix = [(s, t) for s, (t, enc, _, _) in enumerate(items) if not enc]
    sizes = [t.numel() for _, t in jpeg]
    offsets = torch.zeros(len(jpeg) + 1, dtype=torch.int64)
    if sizes:
        offsets[1:] = torch.tensor(sizes).cumsum(0)
    empty = torch.empty(0, dtype=torch.uint8)
    return EncodedBatch(
        jpeg_bytes=torch.cat([t for _, t in jpeg]) if jpeg else empty, jpeg_offsets=offsets,
        jpeg_slots=torch.tensor([s for s, _ in jpeg], dtype=torch.int64),
        pixels=torch.cat([t.reshape(-1) for _, t in pix]) if pix else empty,
        pixel_shapes=torch.tensor([list(t.shape) for _, t in pix], dtype=torch.int64).reshape(-1, 3),
        pixel_slots=torch.tensor([s for s, _ in pix], dtype=torch.int64),
        labels=torch.tensor([label for _, _, label, _ in items], dtype=torch.int64),
        indices=torch.tensor([i for _, _, _, i in items], dtype=torch.int64))


def decode_batch(batch: EncodedBatch, dataset: EncodedImageFolder, device: torch.device) -> List[torch.Tensor]:
    """The batch's images as uint8 (3, H_i, W_i) tensors on device, in batch order: JPEG bytes through nvjpeg in one
    call, the CPU-decoded images in one host-to-device copy."""
    images: List[Optional[torch.Tensor]] = [None] * len(batch.labels)
    if len(batch.jpeg_slots):
        paths = [dataset.samples[i][0] for i in batch.indices[batch.jpeg_slots].tolist()]
        for slot, img in zip(batch.jpeg_slots.tolist(), decode_jpegs(batch.jpegs(), paths, device)):
            images[slot] = img
    if len(batch.pixel_slots):
        on_device = batch.pixels.to(device, non_blocking=True)
        for slot, img in zip(batch.pixel_slots.tolist(), batch.images(on_device)):
            images[slot] = img
    return images  # type: ignore[return-value]


class _DeviceLoader:
    """Common part of the three loaders: len, the sampler main.py calls set_epoch on, and iteration through
    prefetch_on_device with the epoch's generator (None for evaluation)."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool, device: torch.device,
                 transform: Optional[Transform], seed: int, rank: int, random: bool, prefetch: int):
        self.sampler = sampler
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.device = device
        self.transform = transform
        self.seed, self.rank, self.random = seed, rank, random
        self.prefetch = prefetch

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _generators(self) -> Iterator[Optional[torch.Generator]]:
        """One generator per batch, in batch order (None for evaluation). The batch numbers are the sampler's
        `batch_ids` where it has them (a data process's share of an epoch: data_process.EpochIndices), else 0, 1, ..."""
        epoch = getattr(self.sampler, 'epoch', 0)
        ids = getattr(self.sampler, 'batch_ids', None)
        for batch in (itertools.count() if ids is None else ids):
            yield batch_generator(self.seed, self.rank, epoch, batch) if self.random else None

    def _source(self) -> Iterable[Any]:
        raise NotImplementedError

    def _produce(self, item: Any, generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        generators = self._generators()
        return prefetch_on_device(self._source(), lambda item: self._produce(item, next(generators)), self.device,
                                  self.prefetch)


class DecodeLoader(_DeviceLoader):
    """--data-backend gpu: workers read bytes, the main process decodes (nvjpeg) and augments (GpuTransform).

    Threaded (prefetch > 0), decode and augmentation run in the background thread; with augment_here, only the
    decode does, and the augmentations run in the iterating thread (the data process's main thread, whose only other
    work is handing batches over), so that the two stages' host work overlaps."""

    def __init__(self, dataset: EncodedImageFolder, sampler: Iterable[int], batch_size: int, drop_last: bool,
                 device: torch.device, transform: Transform, num_workers: int, pin_memory: bool, seed: int,
                 rank: int, random: bool, prefetch: int = 2, worker_init_fn: Optional[Callable[[int], None]] = None,
                 augment_here: bool = False, worker_start: Optional[str] = None):
        super().__init__(sampler, batch_size, drop_last, device, transform, seed, rank, random, prefetch)
        self.dataset = dataset
        self.augment_here = augment_here
        self.loader = DataLoader(dataset, batch_sampler=self.batch_sampler, num_workers=num_workers,
                                 collate_fn=collate_encoded, pin_memory=pin_memory, worker_init_fn=worker_init_fn,
                                 persistent_workers=num_workers > 0,
                                 multiprocessing_context=worker_start if num_workers > 0 else None)

    def _source(self) -> Iterable[EncodedBatch]:
        return self.loader

    def close(self) -> None:
        """Stop the persistent workers now (the data process leaves by os._exit, which skips the DataLoader's own
        shutdown and leaves its queues' semaphores to the resource tracker's warning)."""
        workers = getattr(self.loader, '_iterator', None)  # DataLoader keeps its persistent iterator there
        if workers is not None and hasattr(workers, '_shutdown_workers'):
            workers._shutdown_workers()
        self.loader._iterator = None

    def _produce(self, batch: EncodedBatch, generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, ...]:
        images = decode_batch(batch, self.dataset, self.device)
        return self.transform(images, generator=generator), batch.labels.to(self.device, non_blocking=True)

    def _decode(self, batch: EncodedBatch) -> Tuple[List[torch.Tensor], torch.Tensor]:
        return decode_batch(batch, self.dataset, self.device), batch.labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if not self.augment_here:
            return super().__iter__()
        return self._augment_here()

    def _augment_here(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        generators = self._generators()
        decoded = prefetch_on_device(self.loader, self._decode, self.device, self.prefetch)
        try:
            for images, labels in decoded:
                yield self.transform(images, generator=next(generators)), labels
        finally:
            decoded.close()


class ResidentDataset:
    """A data set held on the device: images uint8 (N, 3, H, W), labels int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: List[str],
                 train_transform: Optional[Transform] = None):
        self.images, self.labels, self.classes = images, labels, classes
        self.targets = labels
        self.train_transform = train_transform

    def __len__(self) -> int:
        return len(self.labels)

    def subset_loader(self, indices: List[int], batch_size: int, seed: int) -> 'ResidentLoader':
        """Train-augmented batches of these images in this order (the KAN grid update's sample)."""
        return ResidentLoader(self, indices, batch_size, False, self.train_transform, seed, 0, True,  # type: ignore
                              prefetch=0)


# --data-on-gpu augments this many bytes of float32 output per call at most (augment_batches 0: automatic)
GROUP_BYTES = 64 * 2 ** 20
MAX_GROUP = 16


def augment_group(batch_size: int, out_size: int, augment_batches: int = 0) -> int:
    """Batches the resident loader augments per call: `augment_batches` if given, else as many as fit GROUP_BYTES
    of float32 output, between 1 and MAX_GROUP (CIFAR at 32 px, batch 256: 3 MiB a batch, so 16; 224 px: 1).
    Why 16: the CIFAR recipe's augmentation alone (RandAugment, erasing) took 10.4 / 4.0 / 2.2 ms of host a batch at
    1 / 4 / 16 batches a call, for ~0.55 ms of GPU work (H200, 2026-11-28, resident_loader_overlap.py): ~740 device
    ops a call plus ~33 a batch."""
    if augment_batches > 0:
        return augment_batches
    per_batch = batch_size * 3 * out_size * out_size * 4
    return max(1, min(MAX_GROUP, GROUP_BYTES // max(per_batch, 1)))


class ResidentLoader(_DeviceLoader):
    """--data-on-gpu: batches gathered by index from a ResidentDataset and augmented on the device.

    group > 1 (training): `group` consecutive batches gathered and augmented in one call (GpuTransform.apply_batches),
    each with its own generator, so every batch is what group 1 makes of it. At 32 px a batch's augmentation is
    ~9 ms of host work for ~0.6 ms of GPU work (H200), and that host work shares the interpreter lock with the
    training loop: one call per group divides it by `group`."""

    def __init__(self, dataset: ResidentDataset, sampler: Iterable[int], batch_size: int, drop_last: bool,
                 transform: Transform, seed: int, rank: int, random: bool, prefetch: int = 2, group: int = 1):
        super().__init__(sampler, batch_size, drop_last, dataset.images.device, transform, seed, rank, random,
                         prefetch)
        self.dataset = dataset
        self.group = group if random and hasattr(transform, 'apply_batches') else 1

    def _source(self) -> Iterable[List[int]]:
        return self.batch_sampler

    def _produce(self, indices: List[int], generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, ...]:
        idx = torch.tensor(indices, dtype=torch.int64).to(self.device, non_blocking=True)
        images = self.dataset.images.index_select(0, idx)  # (B, 3, H, W) uint8
        return self.transform(images, generator=generator), self.dataset.labels.index_select(0, idx)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self.group <= 1:
            return super().__iter__()
        return self._grouped()

    def _grouped(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        generators = self._generators()
        batches = iter(self.batch_sampler)
        groups = iter(lambda: list(itertools.islice(batches, self.group)), [])  # lists of up to `group` batches
        made = prefetch_on_device(groups, lambda group: self._produce_group(group, generators), self.device,
                                  self.prefetch)
        try:
            for outputs in made:
                yield from outputs
        finally:
            made.close()

    def _produce_group(self, group: List[List[int]], generators: Iterator[Optional[torch.Generator]]
                       ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        sizes = [len(indices) for indices in group]
        idx = torch.tensor([i for indices in group for i in indices], dtype=torch.int64).to(self.device,
                                                                                            non_blocking=True)
        images = self.dataset.images.index_select(0, idx)  # (sum B, 3, H, W) uint8
        hw = tuple(images.shape[2:])
        params = [self.transform.sample_params([hw] * n, next(generators)) for n in sizes]
        outputs = self.transform.apply_batches(images, params)
        return list(zip(outputs, self.dataset.labels.index_select(0, idx).split(sizes)))


def load_resident(samples: Sequence[Tuple[str, int]], classes: List[str], device: torch.device, num_workers: int,
                  flag: str = '--data-on-gpu') -> ResidentDataset:
    """Decode every file once (CPU decoders in DataLoader workers) into a uint8 (N, 3, H, W) tensor on device.
    Raises DataError naming a file whose size differs from the first file's, or when the set does not fit."""
    folder = EncodedImageFolder(samples, classes, gpu_decode=False)
    loader = DataLoader(folder, batch_size=512, shuffle=False, num_workers=num_workers, collate_fn=collate_encoded)
    images: Optional[torch.Tensor] = None
    first_path, shape = samples[0][0], None
    for batch in loader:
        shapes = batch.pixel_shapes
        if shape is None:
            shape = tuple(shapes[0].tolist())
            _check_fits(len(samples), shape, device, flag)
            images = torch.empty((len(samples), *shape), dtype=torch.uint8, device=device)
        odd = (shapes != torch.tensor(shape)).any(dim=1).nonzero()
        if len(odd):
            path = samples[int(batch.indices[odd[0, 0]])][0]
            h, w = shapes[odd[0, 0], 1:].tolist()
            raise DataError(f'{flag}: {path} is {w}x{h} pixels, not {shape[2]}x{shape[1]} like {first_path}: '
                            f'the resident data set needs one image size (resize the files, or use --data-backend '
                            f'gpu without {flag})')
        idx = batch.indices.to(device)
        images.index_copy_(0, idx, batch.pixels.view(-1, *shape).to(device))  # type: ignore[union-attr]
    labels = torch.tensor([t for _, t in samples], dtype=torch.int64, device=device)
    return ResidentDataset(images, labels, classes)  # type: ignore[arg-type]


def decode_train_loader(sampler: Iterable[int], samples: Sequence[Tuple[str, int]], classes: List[str],
                        transform: Transform, batch_size: int, num_workers: int, pin_memory: bool,
                        device: torch.device, seed: int, rank: int,
                        worker_init_fn: Optional[Callable[[int], None]] = None) -> DecodeLoader:
    """The data process's training loader of the decode backend (data_process.ProcessLoader builds it there):
    decode in a background thread, augmentation in the iterating thread.

    Its workers are forked (on Linux), as the in-process loader's are: a process started by spawn hands the spawn
    method on to its own children, and 14 spawned workers, each importing torch and unpickling the sample list
    before the next starts, took 162 s to start (H100, 4,096 files, 2026-11-28). The workers only read files, so
    forking after the producer has made its CUDA context is safe (they never touch CUDA)."""
    dataset = EncodedImageFolder(samples, classes, device.type == 'cuda', device, transform, num_workers)
    worker_start = 'fork' if sys.platform.startswith('linux') else None
    return DecodeLoader(dataset, sampler, batch_size, True, device, transform, num_workers, pin_memory, seed, rank,
                        True, worker_init_fn=worker_init_fn, augment_here=True, worker_start=worker_start)


def resident_train_loader(sampler: Iterable[int], images: torch.Tensor, labels: torch.Tensor, classes: List[str],
                          transform: Transform, batch_size: int, seed: int, rank: int, group: int = 1
                          ) -> ResidentLoader:
    """The data process's training loader of the resident backend: the parent's device tensors (shared, not
    copied), gathered and augmented inline, `group` batches per call."""
    return ResidentLoader(ResidentDataset(images, labels, classes), sampler, batch_size, True, transform, seed, rank,
                          True, prefetch=0, group=group)


def build_gpu_data(train_folder: Any, val_folder: Any, resident: bool, train_transform: Transform,
                   eval_transform: Transform, batch_size: int, num_workers: int, pin_memory: bool,
                   device: torch.device, world_size: int, rank: int, repeated_aug: bool, seed: int,
                   make_train_sampler: Callable[..., Any], eval_sampler: Callable[..., Any],
                   worker_init_fn: Optional[Callable[[int], None]] = None,
                   data_process: bool = False, data_processes: int = 1,
                   augment_batches: int = 0) -> Tuple[Any, Any, Any, Any]:
    """(train_set, val_set, train_loader, val_loader) of the decode backend, or of the resident one.

    train_folder, val_folder: the pil backend's ImageFolders (their checks already ran); their samples are used.
    make_train_sampler(dataset, world_size, rank, repeated_aug, seed) and eval_sampler(dataset, world_size, rank):
    the pil backend's samplers. data_process: the training batches are made in a process of their own
    (data_process.ProcessLoader), by `data_processes` producers that share the epoch's batches and the workers;
    evaluation and the KAN grid update's sample stay in this process. augment_batches: the resident training
    loader's batches per augmentation call (`augment_group`; 0: automatic).
    """
    from .data_process import ProcessLoader
    eval_batch = max(1, int(1.5 * batch_size))
    if resident:
        train_set = load_resident(train_folder.samples, train_folder.classes, device, num_workers)
        train_set.train_transform = train_transform
        val_set = load_resident(val_folder.samples, val_folder.classes, device, num_workers)
        sampler = make_train_sampler(train_set, world_size, rank, repeated_aug, seed)
        group = augment_group(batch_size, getattr(train_transform, 'size', 0), augment_batches)
        if data_process:
            make = partial(resident_train_loader, images=train_set.images, labels=train_set.labels,
                           classes=train_set.classes, transform=train_transform, batch_size=batch_size, seed=seed,
                           rank=rank, group=group)
            train_loader: Any = ProcessLoader(make, sampler, batch_size, True, device, processes=data_processes)
        else:
            train_loader = ResidentLoader(train_set, sampler, batch_size, True, train_transform, seed, rank, True,
                                          group=group)
        val_loader: _DeviceLoader = ResidentLoader(val_set, eval_sampler(val_set, world_size, rank), eval_batch,
                                                   False, eval_transform, seed, rank, False)
        return train_set, val_set, train_loader, val_loader
    gpu_decode = device.type == 'cuda'
    train_set = EncodedImageFolder(train_folder.samples, train_folder.classes, gpu_decode, device, train_transform,
                                   num_workers)
    val_set = EncodedImageFolder(val_folder.samples, val_folder.classes, gpu_decode, device)
    sampler = make_train_sampler(train_set, world_size, rank, repeated_aug, seed)
    if data_process:  # the workers (file reads) shared among the producers
        make = partial(decode_train_loader, samples=train_set.samples, classes=train_set.classes,
                       transform=train_transform, batch_size=batch_size,
                       num_workers=-(-num_workers // data_processes), pin_memory=pin_memory, device=device, seed=seed,
                       rank=rank, worker_init_fn=worker_init_fn)
        train_loader = ProcessLoader(make, sampler, batch_size, True, device, processes=data_processes)
    else:
        train_loader = DecodeLoader(train_set, sampler, batch_size, True, device, train_transform, num_workers,
                                    pin_memory, seed, rank, True, worker_init_fn=worker_init_fn)
    val_loader = DecodeLoader(val_set, eval_sampler(val_set, world_size, rank), eval_batch, False, device,
                              eval_transform, num_workers, pin_memory, seed, rank, False,
                              worker_init_fn=worker_init_fn)
    return train_set, val_set, train_loader, val_loader


def build_gpu_eval_data(val_folder: Any, resident: bool, eval_transform: Transform, batch_size: int,
                        num_workers: int, pin_memory: bool, device: torch.device, world_size: int, rank: int,
                        seed: int, eval_sampler: Callable[..., Any],
                        worker_init_fn: Optional[Callable[[int], None]] = None) -> Tuple[Any, Any]:
    """(val_set, val_loader) alone, as build_gpu_data makes them (--eval: no train/ needed)."""
    eval_batch = max(1, int(1.5 * batch_size))
    if resident:
        val_set = load_resident(val_folder.samples, val_folder.classes, device, num_workers)
        return val_set, ResidentLoader(val_set, eval_sampler(val_set, world_size, rank), eval_batch, False,
                                       eval_transform, seed, rank, False)
    val_set = EncodedImageFolder(val_folder.samples, val_folder.classes, device.type == 'cuda', device)
    return val_set, DecodeLoader(val_set, eval_sampler(val_set, world_size, rank), eval_batch, False, device,
                                 eval_transform, num_workers, pin_memory, seed, rank, False,
                                 worker_init_fn=worker_init_fn)


def _check_fits(n: int, shape: Tuple[int, ...], device: torch.device, flag: str) -> None:
    """A resident set may take half of the device's free memory at most."""
    need = n * math.prod(shape)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        if need > free // 2:
            raise DataError(f'{flag}: {n} images of {shape[2]}x{shape[1]} need {need / 2 ** 30:.1f} GiB on '
                            f'{device}, more than half of its {free / 2 ** 30:.1f} GiB free; use --data-backend gpu '
                            f'without {flag}')
