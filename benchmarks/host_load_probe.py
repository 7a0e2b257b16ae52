"""How much a training step slows when the host's other cores are busy (as a data pipeline's processes keep them).

Why: at 224 px the gpu backend's producers cost DeiT-tiny more than their GPU time explains (0.76x synthetic against a
time-slice bound of 0.91; context_switch_probe.py found the context switches cheap). The step's host thread is the
other suspect: if it is near the step's length, cores busy elsewhere (lower all-core boost clocks, shared caches and
memory bandwidth, the scheduler moving the thread) stretch it. This probe runs the bare DeiT-tiny train step
(bf16 autocast, AdamW) beside N pure-Python spinning processes and prints, per N, the step's wall ms, its host issue
ms (one step issued after a sync, until the call returns) and the cores' mean clock; optionally with the trainer
pinned to core 0 and the spinners kept off it.

    python benchmarks/host_load_probe.py                     # needs CUDA; prints one table
    python benchmarks/host_load_probe.py --spinners 0,8,15 --sizes 224 --rounds 3
"""
import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

import timm
import torch


def spin(stop: 'mp.synchronize.Event', cores: Optional[List[int]]) -> None:
    if cores:
        os.sched_setaffinity(0, cores)
    x = 0
    while not stop.is_set():
        for _ in range(10000):
            x += 1


def mean_mhz() -> Optional[float]:
    try:
        with open('/proc/cpuinfo') as f:
            mhz = [float(line.split(':')[1]) for line in f if line.startswith('cpu MHz')]
        return sum(mhz) / len(mhz) if mhz else None
    except OSError:
        return None


def make_step(size: int, batch: int, device: torch.device, read_loss: bool = False):
    """DeiT-tiny's train step on fixed random data (read_loss: the loss read after the forward, as engine.py's NaN
    check does: a sync each step)."""
    patch = 16 if size >= 128 else 4
    model = timm.create_model('deit_tiny_patch16_224', img_size=size, patch_size=patch, num_classes=1000).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        if read_loss:
            loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure(step, steps: int) -> Tuple[float, float, Optional[float]]:
    """(wall ms a step over `steps` back to back, median host issue ms of one step after a sync, mean MHz)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    mhz = mean_mhz()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) * 1e3 / steps
    issue = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        issue.append((time.perf_counter() - t) * 1e3)
    torch.cuda.synchronize()
    return wall, statistics.median(issue), mhz


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--spinners', default='0,4,8,14', help='comma list of busy processes beside the step')
    ap.add_argument('--sizes', default='224,32', help='comma list of image sizes (patch 16 at 224, 4 at 32)')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--pin', action=argparse.BooleanOptionalAction, default=True,
                    help='also rows with the trainer on core 0 and the spinners on the other cores')
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('host_load_probe.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    dev = torch.device('cuda')
    spinners = [int(s) for s in a.spinners.split(',')]
    sizes = [int(s) for s in a.sizes.split(',')]
    all_cores = sorted(os.sched_getaffinity(0))
    pins = [False, True] if a.pin and len(all_cores) > 1 else [False]
    steps = {size: make_step(size, a.batch, dev) for size in sizes}
    ctx = mp.get_context('spawn')
    rows: Dict[Tuple[int, int, bool], List[Tuple[float, float, Optional[float]]]] = {}
    for _ in range(a.rounds):
        for pin in pins:
            for n in spinners:
                stop = ctx.Event()
                others = all_cores[1:] if pin else None
                procs = [ctx.Process(target=spin, args=(stop, others), daemon=True) for _ in range(n)]
                for p in procs:
                    p.start()
                os.sched_setaffinity(0, all_cores[:1] if pin else all_cores)
                time.sleep(1.5 if n else 0.2)  # the spinners started and spinning
                for size in sizes:
                    rows.setdefault((size, n, pin), []).append(measure(steps[size], a.steps))
                stop.set()
                for p in procs:
                    p.join()
                os.sched_setaffinity(0, all_cores)
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, {len(all_cores)} cores, DeiT-tiny train step '
          f'(bf16 autocast, AdamW), batch {a.batch}, {a.steps} steps, median of {a.rounds} interleaved rounds\n')
    print('| size | trainer pinned to core 0 | spinning processes | step wall ms | × no spinners | host issue ms '
          '| × no spinners | mean core MHz |')
    print('|---|---|---|---|---|---|---|---|')
    for size in sizes:
        for pin in pins:
            base = None
            for n in spinners:
                got = rows[(size, n, pin)]
                wall = statistics.median(g[0] for g in got)
                issue = statistics.median(g[1] for g in got)
                mhz = [g[2] for g in got if g[2]]
                if base is None:
                    base = (wall, issue)
                print(f'| {size} px | {"yes" if pin else "no"} | {n} | {wall:.2f} | {wall / base[0]:.2f} | '
                      f'{issue:.2f} | {issue / base[1]:.2f} | {statistics.median(mhz) if mhz else float("nan"):.0f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
