"""Training img/s of main.py with each data backend, as a ratio to --synthetic-data (the ceiling): pil (CPU workers),
gpu (nvjpeg + batched GPU augmentations, in a thread and, --data-process, in a process of their own) and, at the
CIFAR shape, gpu with --data-on-gpu.

    python benchmarks/bench_data_pipeline.py                        # makes its JPEGs in /tmp/vk_bench_data
    python benchmarks/bench_data_pipeline.py --models deit_tiny_patch16_224 --sizes 224 --steps 20 --warmup 5
    torchrun --nproc_per_node=2 benchmarks/bench_data_pipeline.py --sizes 224 --backends synthetic,gpu-process  # all ranks

The script writes synthetic ImageNet-shaped JPEGs itself (500x375, quality 90, smooth colour fields plus noise,
~100 KB each) and a 32x32 set for the CIFAR shape. Each measurement is a real `main.run` (recipe
deit_configs/vit_kan_tiny_imagenet.yaml at 224 px, vit_kan_tiny_cifar10.yaml at 32 px with patch 4; batch 256, bf16)
whose training loader is cut to --warmup + --steps steps: img/s is timed over the last --steps steps (every step
ends in a device sync, the engine's loss.item()), evaluation is cut to one batch. --rounds R runs every backend R
times, interleaved, each ratio against the same round's synthetic run. Prints one markdown table, then the
gpu backend's stages alone (file reads in workers, nvjpeg decode, augmentations) at each size.
"""
import argparse
import gc
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main  # noqa: E402
from vision_kan.train.data import DataConfig, TransformConfig, build_data  # noqa: E402
from vision_kan.train.distributed import barrier, init_distributed  # noqa: E402

RECIPES = {224: 'deit_configs/vit_kan_tiny_imagenet.yaml', 32: 'deit_configs/vit_kan_tiny_cifar10.yaml'}
SHAPES = {224: (500, 375), 32: (32, 32)}  # (width, height) of the generated files
BACKENDS = [  # (key for --backends, row name, main.py flags); the resident rows at 32 px only
    ('synthetic', 'synthetic', ['--synthetic-data']),
    ('pil', 'pil', []),
    ('gpu', 'gpu', ['--data-backend', 'gpu']),
    ('gpu-process', 'gpu, --data-process', ['--data-backend', 'gpu', '--data-process']),
    ('gpu-process2', 'gpu, --data-process, 2 producers', ['--data-backend', 'gpu', '--data-process',
                                                          '--data-processes', '2']),
    ('gpu-process3', 'gpu, --data-process, 3 producers', ['--data-backend', 'gpu', '--data-process',
                                                          '--data-processes', '3']),
    ('gpu-process4', 'gpu, --data-process, 4 producers', ['--data-backend', 'gpu', '--data-process',
                                                          '--data-processes', '4']),
    # the same producers without RandAugment and erasing: what the recipe's heaviest GPU work costs the step
    ('gpu-process3-crop', 'gpu, --data-process, 3 producers, crop + flip only (no RandAugment, jitter, erasing)',
     ['--data-backend', 'gpu', '--data-process', '--data-processes', '3', '--aa', 'none', '--color-jitter', '0',
      '--reprob', '0']),
    ('resident', 'gpu, --data-on-gpu', ['--data-backend', 'gpu', '--data-on-gpu']),
    ('resident-group1', 'gpu, --data-on-gpu, one batch a call', ['--data-backend', 'gpu', '--data-on-gpu',
                                                                 '--data-on-gpu-group', '1']),
    ('resident-group4', 'gpu, --data-on-gpu, 4 batches a call', ['--data-backend', 'gpu', '--data-on-gpu',
                                                                 '--data-on-gpu-group', '4']),
    ('resident-process', 'gpu, --data-on-gpu --data-process', ['--data-backend', 'gpu', '--data-on-gpu',
                                                                '--data-process']),
]


def _write_one(job: Tuple[str, int, int, int]) -> None:
    from PIL import Image
    path, seed, w, h = job
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    noisy = np.asarray(low).astype(np.int16) + rng.normal(0, 16, (h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, 'JPEG', quality=90)


def make_jpegs(root: Path, images: int, classes: int, size: Tuple[int, int], procs: int) -> Path:
    """root/{train,val}/class_i/*.jpg: `images` train files over `classes` folders, 2 val files per class.
    Kept when root/.done says it holds the same set."""
    stamp = f'{images} {classes} {size}'
    if (root / '.done').is_file() and (root / '.done').read_text() == stamp:
        return root
    jobs = []
    for split, count in (('train', images), ('val', 2 * classes)):
        for c in range(classes):
            (root / split / f'class_{c:03d}').mkdir(parents=True, exist_ok=True)
        for i in range(count):
            c = i % classes
            jobs.append((str(root / split / f'class_{c:03d}' / f'{i:06d}.jpg'), hash((split, i)) % 2 ** 31, *size))
    with mp.get_context('fork').Pool(procs) as pool:
        pool.map(_write_one, jobs, chunksize=64)
    (root / '.done').write_text(stamp)
    return root


class TimedSteps:
    """A loader cut to warmup + steps batches; t0/t1 bracket the last `steps` training steps."""

    def __init__(self, loader: Any, warmup: int, steps: int, device: torch.device, profile_steps: int = 0):
        self.loader, self.warmup, self.steps, self.device = loader, warmup, steps, device
        self.profile_steps = profile_steps if device.type == 'cuda' else 0
        self.sampler = loader.sampler
        self.t0 = self.t1 = self.wait_s = 0.0
        self.gpu_profile: Dict[str, float] = {}

    def __len__(self) -> int:
        return self.warmup + self.steps + self.profile_steps

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def close(self) -> None:  # main.run closes its loaders: the data process's producer ends
        if hasattr(self.loader, 'close'):
            self.loader.close()

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        try:
            for k in range(self.warmup + self.steps):
                if k == self.warmup:  # the engine's loss.item() ended step k - 1
                    self._sync()
                    self.t0 = time.perf_counter()
                t = time.perf_counter()
                batch = next(it)
                if k >= self.warmup:  # the training loop's wait for its next batch
                    self.wait_s += time.perf_counter() - t
                yield batch
            self._sync()
            self.t1 = time.perf_counter()
            if self.profile_steps:  # after the timed steps: the profiler slows what it watches
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(self.profile_steps):
                        yield next(it)
                    self._sync()
                self.gpu_profile = gpu_busy(prof, self.profile_steps)
        finally:
            if hasattr(it, 'close'):
                it.close()


def gpu_busy(prof: Any, steps: int) -> Dict[str, float]:
    """This process's GPU timeline per step, from a torch.profiler run over `steps` training steps: ms of kernel
    time summed, ms in which at least one of its kernels or copies ran (the union), and the span from the first
    to the last. Another process's kernels (a data producer) are not in it: if they time-slice the GPU with this
    one, this process's kernels take longer than with synthetic data (the GPU time of each kernel includes the time
    it was switched out); if the trainer waits for data, the span grows with idle gaps instead."""
    from torch.autograd import DeviceType
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start)
    if not spans:
        return {}
    busy, cur_lo, cur_hi = 0.0, spans[0][0], spans[0][1]
    for lo, hi in spans[1:]:
        if lo > cur_hi:
            busy, cur_lo = busy + cur_hi - cur_lo, lo
        cur_hi = max(cur_hi, hi)
    busy += cur_hi - cur_lo
    kernels = sum(hi - lo for lo, hi in spans)
    span = spans[-1][1] - spans[0][0]
    return {'kernel ms': kernels / steps / 1e3, 'busy ms': busy / steps / 1e3, 'span ms': span / steps / 1e3}


class FirstBatches:
    """The evaluation loader cut to n batches (the benchmark times training only)."""

    def __init__(self, loader: Any, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def close(self) -> None:
        if hasattr(self.loader, 'close'):
            self.loader.close()

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        try:
            for _ in range(len(self)):
                yield next(it)
        finally:
            if hasattr(it, 'close'):
                it.close()


def train_img_per_s(argv: List[str], warmup: int, steps: int, profile_steps: int = 0) -> float:
    """Run main.run with these flags, the training loader cut to warmup + steps batches; img/s of the last steps.
    profile_steps: that many more steps under torch.profiler after them, their GPU timeline printed (gpu_busy)."""
    timed: Dict[str, TimedSteps] = {}
    real_build = main.build_backend_data  # what main.build_data calls for a training run

    def cut_build_data(cfg, tcfg, device, world, rank):
        train_set, val_set, n, train_loader, val_loader = real_build(cfg, tcfg, device, world, rank)
        timed['train'] = TimedSteps(train_loader, warmup, steps, device, profile_steps)
        return train_set, val_set, n, timed['train'], FirstBatches(val_loader, 1)

    args = main.parse_args(argv)
    main.build_backend_data = cut_build_data
    try:
        main.run(args, init_distributed(args.device))
    finally:
        main.build_backend_data = real_build
        gc.collect()  # the run's loaders and their worker processes go before the next run
    t = timed['train']
    print(f'# training loop: {1e3 * (t.t1 - t.t0) / steps:.2f} ms a step, of which {1e3 * t.wait_s / steps:.2f} ms '
          'waiting for the next batch', flush=True)
    if t.gpu_profile:
        print('# trainer GPU timeline per step over ' + str(t.profile_steps) + ' profiled steps: ' +
              ', '.join(f'{k} {v:.2f}' for k, v in t.gpu_profile.items()), flush=True)
    speed = torch.tensor([steps * args.batch_size / (t.t1 - t.t0)], dtype=torch.float64)
    if dist.is_initialized():  # under torchrun: every rank's images
        speed = speed.to(torch.device('cuda', torch.cuda.current_device()) if args.device == 'cuda' else 'cpu')
        dist.all_reduce(speed)
    return float(speed)


def _loader_rate(loader: Any, batches: int, batch_size: int, untimed: int, sync: Any, ahead: int) -> float:
    """img/s of a whole loader without a model: `untimed` batches (start-up), then `ahead` more taken at once (the
    batches the loader had made ahead while this process waited: a thread's prefetch, each producer's queue), then
    `batches` timed, which the loader makes while they are taken. Without that drain the timed batches were partly
    made before the clock started: three producers (4 ahead each) showed 37,824 img/s over 6 batches (H200,
    2026-11-28), the queues and not the loader."""
    whole = iter(loader)
    for _ in range(untimed + ahead):
        next(whole)
    sync()
    t = time.perf_counter()
    for _ in range(batches):
        next(whole)
    sync()
    rate = batches * batch_size / (time.perf_counter() - t)
    whole.close()
    return rate


def stage_rates(argv: List[str], batches: int) -> Dict[str, float]:
    """The gpu backend's stages alone, img/s: workers reading bytes; nvjpeg decode of those batches; the train
    GpuTransform on the decoded batches; the whole loader without a model, in a thread of this process and in 1, 2
    and 3 data processes."""
    from vision_kan.train.gpu_data import decode_batch
    args = main.parse_args(argv + ['--no-data-process'])
    device = init_distributed(args.device).device
    _, _, _, loader, _ = build_data(DataConfig.from_flags(args), TransformConfig.from_flags(args), device, 1, 0)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    out: Dict[str, float] = {}
    it = iter(loader.loader)
    next(it)  # worker start-up
    t, got = time.perf_counter(), []
    for _ in range(batches):
        got.append(next(it))
    out['read (workers)'] = batches * args.batch_size / (time.perf_counter() - t)
    decode_batch(got[0], loader.dataset, device)
    sync()
    t, decoded = time.perf_counter(), []
    for b in got:
        decoded.append(decode_batch(b, loader.dataset, device))
    sync()
    out['nvjpeg decode'] = batches * args.batch_size / (time.perf_counter() - t)
    g = torch.Generator().manual_seed(0)
    loader.transform(decoded[0], generator=g)
    sync()
    t = time.perf_counter()
    for d in decoded:
        loader.transform(d, generator=g)
    sync()
    out['augment'] = batches * args.batch_size / (time.perf_counter() - t)
    # the thread prefetches 2 batches (gpu_data.prefetch_on_device); a producer keeps `depth` in its queue and one
    # in hand
    out['whole loader, thread'] = _loader_rate(loader, batches, args.batch_size, 1, sync, ahead=2)
    for n in (1, 2, 3):
        args = main.parse_args(argv + ['--data-process', '--data-processes', str(n)])
        _, _, _, loader, _ = build_data(DataConfig.from_flags(args), TransformConfig.from_flags(args), device, 1, 0)
        ahead = n * (getattr(loader, 'depth', 3) + 1)
        out[f'whole loader, {n} data process{"es" if n > 1 else ""}'] = _loader_rate(loader, batches,
                                                                                 args.batch_size, 2 * n, sync, ahead)
        loader.close()
    return out


def main_cli(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default=str(Path(tempfile.gettempdir()) / 'vk_bench_data'))
    p.add_argument('--models', default='deit_tiny_patch16_224,vit_grkan_tiny')
    p.add_argument('--sizes', default='224,32')
    p.add_argument('--images', type=int, default=12288, help='generated train files per size')
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--workers', type=int, default=14, help='DataLoader workers (pil decodes there; gpu reads)')
    p.add_argument('--warmup', type=int, default=10, help='untimed steps (worker start-up, autotuning)')
    p.add_argument('--steps', type=int, default=25, help='timed steps')
    p.add_argument('--rounds', type=int, default=1,
                   help='runs of every backend, interleaved (A B A B ...); the table gives the median img/s and the '
                        "median of the per-round ratios to synthetic (these machines' host speed drifts by +-15 %%)")
    p.add_argument('--stage-batches', type=int, default=12, help='batches for the stage table (0: none)')
    p.add_argument('--backends', default='', help='comma list of BACKENDS keys to run (default: all; synthetic '
                   'first: the ratios divide by it)')
    p.add_argument('--device', default='cuda')
    p.add_argument('--amp-dtype', default='bfloat16')
    p.add_argument('--main-flags', default='', help="more main.py flags for every row, e.g. '--compile'")
    p.add_argument('--profile-steps', type=int, default=0,
                   help='CUDA: this many more steps after the timed ones under torch.profiler; prints the '
                        "trainer's GPU kernel, busy and span ms per step (the files must hold these batches too)")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(',')]
    world = init_distributed(a.device)  # under torchrun: each rank trains on its shard, img/s summed over ranks
    if a.rounds < 1 or (a.backends and 'synthetic' not in a.backends.split(',')):
        p.error(f'--rounds must be >= 1 (got {a.rounds}) and --backends must include synthetic (the ratios divide '
                f'by it), got {a.backends!r}')
    per_rank = a.images // world.world_size // a.batch_size  # one epoch's batches on a rank
    if a.warmup + a.steps + a.profile_steps > per_rank:
        p.error(f'--warmup {a.warmup} + --steps {a.steps} + --profile-steps {a.profile_steps} batches need more than '
                f'one epoch: --images {a.images} make {per_rank} batches of {a.batch_size} a rank')
    say = print if world.is_main else (lambda *args, **kw: None)
    rows, stages = [], {}
    for size in sizes:
        if world.is_main:
            data = make_jpegs(Path(a.root) / f'jpeg{size}', a.images, a.classes, SHAPES[size], mp.cpu_count())
        barrier()
        data = Path(a.root) / f'jpeg{size}'
        backends = [(key, name, flags) for key, name, flags in BACKENDS
                    if (size == 32 or 'resident' not in key) and (not a.backends or key in a.backends.split(','))]
        for model in a.models.split(','):
            common = ['--config', RECIPES[size], '--model', model, '--data-path', str(data), '--batch-size',
                      str(a.batch_size), '--num-workers', str(a.workers), '--epochs', '1', '--warmup-epochs', '0',
                      '--amp', '--amp-dtype', a.amp_dtype, '--device', a.device, '--print-freq', '100000',
                      '--output-dir', str(Path(a.root) / 'runs' / f'{model}_{size}'), '--overwrite']
            if size == 32:
                common += ['--model-kwargs', 'patch_size=4']
            common += a.main_flags.split()
            speeds: Dict[str, List[float]] = {name: [] for _, name, _ in backends}
            for r in range(a.rounds):  # every backend once a round, in order: the host's drift hits them alike
                for _, name, flags in backends:
                    try:
                        speed = train_img_per_s(common + flags, a.warmup, a.steps, a.profile_steps)
                    except Exception as e:  # noqa: BLE001  one failing row must not lose the others
                        say(f'# {model} {size}px {name}: failed: {type(e).__name__}: {e}', flush=True)
                        speed = float('nan')
                    speeds[name].append(speed)
                    say(f'# {model} {size}px {name}, round {r + 1}: {speed:.0f} img/s', flush=True)
            for _, name, _ in backends:  # img/s: the median round; ratios: to the same round's synthetic row
                ratios = [s / base for s, base in zip(speeds[name], speeds['synthetic'])]
                rows.append((model, size, name, float(np.median(speeds[name])), float(np.median(ratios)), ratios))
        if a.stage_batches and world.world_size == 1:
            stages[size] = stage_rates(common + ['--data-backend', 'gpu'], a.stage_batches)
    if not world.is_main:
        return 0
    dev = torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'
    print(f'\n{dev} x {world.world_size}, torch {torch.__version__}, batch {a.batch_size} per GPU, {a.amp_dtype}, '
          f'{a.workers} workers per GPU, {a.steps} timed steps after {a.warmup}, {a.rounds} round(s)')
    rounds = a.rounds > 1
    print('\n| model | input | GPUs | data backend | train img/s | x synthetic |' + (' x per round |' if rounds else '')
          + '\n|---|---|---|---|---|---|' + ('---|' if rounds else ''))
    for model, size, name, speed, ratio, ratios in rows:
        each = (' ' + ' '.join(f'{x:.2f}' for x in ratios) + ' |') if rounds else ''
        print(f'| {model} | {size} px | {world.world_size} | {name} | {speed:,.0f} | {ratio:.2f} |{each}')
    if stages:
        names = list(next(iter(stages.values())))
        print('\n| gpu backend stage alone, img/s | ' + ' | '.join(f'{s} px' for s in stages) + ' |')
        print('|---|' + '---|' * len(stages))
        for n in names:
            print(f'| {n} | ' + ' | '.join(f'{stages[s][n]:,.0f}' for s in stages) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main_cli())
