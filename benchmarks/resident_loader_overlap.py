"""Why a 32 px step fed by --data-on-gpu is slower than one fed synthetic tensors: the training step alone, beside
the resident loader's prefetch thread (one batch or a group per augmentation call), after it (inline), and the
loader alone.

A DeiT-tiny 32 px / patch 4 step (bf16 autocast, timm Mixup/CutMix, AdamW; the CIFAR recipe's augmentations:
padded crop, flip, RandAugment m9-mstd0.5-inc1, erasing 0.25) is host-bound, so any host time the loader's thread
takes from it (the interpreter lock) lengthens the step; its GPU work (~0.6 ms a batch) does not matter.

    python benchmarks/resident_loader_overlap.py                    # prints one table; needs CUDA
    python benchmarks/resident_loader_overlap.py --no-sync-rows --compile --groups 4 16
    python benchmarks/resident_loader_overlap.py --switch-ms 0.2 0.5   # also under shorter interpreter switch intervals

Rows: the step with and without main.py's per-step `loss.item()` (--no-sync-rows: only with it), fed synthetic
tensors, the resident loader in its thread and inline, for each --groups count; then the loader alone.
"""
import argparse
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Tuple

import torch

from vision_kan.train.data import TransformConfig
from vision_kan.train.gpu_augment import GpuTransform
from vision_kan.train.gpu_data import ResidentDataset, ResidentLoader


def make_step(num_classes: int, device: torch.device, sync: bool,
              compile: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """sync: read the loss on the host after the forward, as engine.train_one_epoch does (its finiteness check)."""
    import timm
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    model = timm.create_model('deit_tiny_patch16_224', img_size=32, patch_size=4, num_classes=num_classes,
                              drop_path_rate=0.1).to(device)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    forward = torch.compile(model) if compile else model
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=num_classes)
    loss_fn = SoftTargetCrossEntropy()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = mixup(x, y)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = loss_fn(forward(x), y)
        if sync:
            loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step: Callable, batches: Iterator[Tuple[torch.Tensor, torch.Tensor]], warmup: int, steps: int
               ) -> float:
    """ms a step over `steps` after `warmup`."""
    for _ in range(warmup):
        step(*next(batches))
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t) / steps


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--images', type=int, default=16384)
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--warmup', type=int, default=10)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--groups', type=int, nargs='+', default=[1, 4, 16], help='batches per augmentation call')
    ap.add_argument('--compile', action='store_true', help='torch.compile the model (default mode)')
    ap.add_argument('--no-sync-rows', action='store_true', help='only the steps that read the loss (as main.py)')
    ap.add_argument('--switch-ms', type=float, nargs='*', default=[],
                    help="sys.setswitchinterval values (ms) tried with each group (Python's default: 5 ms)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('resident_loader_overlap.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    device = torch.device('cuda')
    classes = 100
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8, generator=g, device=device)
    labels = torch.randint(0, classes, (a.images,), generator=g, device=device)
    data = ResidentDataset(images, labels, [str(c) for c in range(classes)])
    tcfg = TransformConfig(input_size=32, train_crop='pad', crop_pad=4, color_jitter=0.3,
                           aa='rand-m9-mstd0.5-inc1', reprob=0.25)
    transform = GpuTransform(True, tcfg)
    step_free = None if a.no_sync_rows else make_step(classes, device, False, a.compile)
    step_sync = make_step(classes, device, True, a.compile)
    pool = torch.randn(a.batch_size, 3, 32, 32, device=device)
    n = a.warmup + a.steps

    def synthetic() -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield pool.clone(), labels[:a.batch_size]

    def resident(group: int, prefetch: int = 2) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        sampler = torch.randperm(a.images).tolist()
        return iter(ResidentLoader(data, sampler, a.batch_size, True, transform, 0, 0, True, prefetch=prefetch,
                                   group=group))

    def loader_alone(group: int) -> float:
        it = resident(group, prefetch=0)
        for _ in range(4):
            next(it)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - t) / n

    def with_switch(step: Callable, seconds: float, make: Callable[[], Iterator]) -> float:
        old = sys.getswitchinterval()
        sys.setswitchinterval(seconds)
        try:
            return time_steps(step, make(), a.warmup, a.steps)
        finally:
            sys.setswitchinterval(old)

    rows: Dict[str, List[float]] = {}
    cases: List[Tuple[str, Callable[[], float]]] = []
    for sync_name, step in (('', step_free), ('loss.item() a step, ', step_sync)):
        if step is None:
            continue
        cases += [
            (f'{sync_name}synthetic (inline)', lambda step=step: time_steps(step, synthetic(), a.warmup, a.steps))]
        for group in a.groups:
            cases.append((f'{sync_name}resident, {group} a call, thread',
                          lambda step=step, group=group: time_steps(step, resident(group), a.warmup, a.steps)))
            cases.append((f'{sync_name}resident, {group} a call, inline (serial)',
                          lambda step=step, group=group: time_steps(step, resident(group, 0), a.warmup, a.steps)))
            for ms in a.switch_ms:
                cases.append((f'{sync_name}resident, {group} a call, thread, switch interval {ms} ms',
                              lambda step=step, group=group, ms=ms: with_switch(step, ms / 1e3,
                                                                                lambda: resident(group))))
    cases += [(f'loader alone, {group} a call (no step)', lambda group=group: loader_alone(group))
              for group in a.groups]
    for _ in range(a.rounds):
        for name, run in cases:
            rows.setdefault(name, []).append(run())

    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch_size}, {a.steps} steps after '
          f'{a.warmup}, {a.rounds} rounds; DeiT-tiny 32 px / patch 4, bf16, '
          f'{"compiled" if a.compile else "eager"}')
    print('\n| case | ms a step (each round) | median ÷ synthetic median (same step) |\n|---|---|---|')
    for name, ms in rows.items():
        base = rows.get(('loss.item() a step, ' if name.startswith('loss') else '') + 'synthetic (inline)')
        ratio = f'{statistics.median(ms) / statistics.median(base):.2f}' if base and 'alone' not in name else ''
        print(f'| {name} | {" / ".join(f"{m:.2f}" for m in ms)} | {ratio} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
