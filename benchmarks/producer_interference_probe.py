"""What each kind of a data producer's GPU work costs a training step on the same GPU.

Why: with the slot ring (eleventh run, H200) the 224 px trainer no longer waits for batches, yet beside 3 producers
its step takes 40.5-41 ms against 32-33 ms alone: ~8 ms a step, where a batch's work measured alone is ~3.6 ms of SM
time (decode's conversion kernel + the augmentation) and ~1.3 ms of host-to-device copy. Time-slicing alone would add
about the GPU time. Which work costs the rest: the copies, the decode, the augmentation's many small kernels?

The bare DeiT-tiny train step (bf16 autocast, AdamW, the loss read after the forward as engine.py does) runs beside
--producers processes; together they do one batch of one kind of work per trainer step (producer k takes steps k,
k + N, ...: the pace of the real pipeline, whose producers are held back by their queues), and each waits for its
work to finish before the next:

  none       no producers (the step alone)
  sleep      one spinning kernel of the pipeline's GPU ms (pure time-slicing of the same GPU time, one kernel)
  copy       the host-to-device copy of a batch's JPEG bytes (pinned), nothing else
  decode     torchvision's batched nvjpeg decode of --batch generated 500x375 JPEGs (copy + hardware decode + kernel)
  augment    DeiT's train transform (RRC, flip, RandAugment, erasing) on a batch decoded once
  pipeline   decode + augment, as a producer does

Each work's GPU time alone (torch.profiler: kernels and copies summed, on an idle GPU) is printed beside the step
time it adds; "added / GPU ms" near 1 says time-slicing alone, well above 1 says the switches or the copies cost
more than their own time.

    python benchmarks/producer_interference_probe.py                   # needs CUDA; prints one table
    python benchmarks/producer_interference_probe.py --works none,decode,pipeline --producers 2 --rounds 3
"""
import argparse
import multiprocessing as mp
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from gpu_augment_speed import kernel_ms, synthetic_photos
from host_load_probe import make_step
from ipc_receive_probe import sleep_cycles_per_ms
from vision_kan.train.data import TransformConfig
from vision_kan.train.gpu_augment import build_gpu_transform

WORKS = ('none', 'sleep', 'copy', 'decode', 'augment', 'pipeline')


def make_work(kind: str, jpegs: List[torch.Tensor], size: int, sleep_cycles: int) -> Callable[[], object]:
    """One batch of `kind` on the current CUDA device (built once; the call queues it)."""
    if kind == 'sleep':
        return lambda: torch.cuda._sleep(sleep_cycles)
    if kind == 'copy':
        pinned = torch.cat([j for j in jpegs]).pin_memory()
        return lambda: pinned.to('cuda', non_blocking=True)
    if kind == 'decode':
        return lambda: decode_jpeg(jpegs, device='cuda')
    tf = build_gpu_transform(True, TransformConfig(input_size=size))  # DeiT's train recipe
    gen = torch.Generator().manual_seed(0)
    if kind == 'augment':
        decoded = decode_jpeg(jpegs, device='cuda')
        return lambda: tf(decoded, gen)
    if kind == 'pipeline':
        return lambda: tf(decode_jpeg(jpegs, device='cuda'), gen)
    raise ValueError(kind)


def produce(kind: str, k: int, n: int, jpegs: List[torch.Tensor], size: int, sleep_cycles: int,
            steps_done: 'mp.sharedctypes.Synchronized', ready: 'mp.synchronize.Semaphore',
            stop: 'mp.synchronize.Event') -> None:
    """Producer k of n: one batch of work when the trainer reaches step k, k + n, ... (waits for its work)."""
    torch.cuda.set_device(0)
    work = make_work(kind, jpegs, size, sleep_cycles)
    work()
    torch.cuda.synchronize()
    ready.release()
    turn = k
    while not stop.is_set():
        if steps_done.value < turn:
            time.sleep(2e-4)
            continue
        work()
        torch.cuda.synchronize()
        turn += n


def timed_steps(step: Callable[[], None], steps_done: 'mp.sharedctypes.Synchronized', warmup: int,
                steps: int) -> float:
    """Wall ms a step over `steps` after `warmup`, counting every step for the producers' pace."""
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        step()
        steps_done.value += 1
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / steps


def run(kind: str, a, step: Callable[[], None], jpegs: List[torch.Tensor], sleep_cycles: int) -> float:
    ctx = mp.get_context('spawn')
    steps_done = ctx.Value('q', 0, lock=False)
    ready, stop = ctx.Semaphore(0), ctx.Event()
    n = 0 if kind == 'none' else a.producers
    procs = [ctx.Process(target=produce, args=(kind, k, n, jpegs, a.size, sleep_cycles, steps_done, ready, stop),
                         daemon=True) for k in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError(f'a {kind} producer did not start within 300 s')
    try:
        return timed_steps(step, steps_done, a.warmup, a.steps)
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--works', default=','.join(WORKS), help=f'comma list of {", ".join(WORKS)}')
    ap.add_argument('--producers', type=int, default=3)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--rounds', type=int, default=2, help='interleaved rounds (the median is printed)')
    a = ap.parse_args(argv)
    works = [w for w in a.works.split(',') if w]
    unknown = sorted(set(works) - set(WORKS))
    if unknown or a.producers < 1:
        print(f'producer_interference_probe.py: unknown --works {unknown} or --producers < 1', file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print('producer_interference_probe.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    jpegs = [encode_jpeg(p, quality=90) for p in synthetic_photos(a.batch, 375, 500)]
    dev = torch.device('cuda')

    # each work's GPU time alone: kernels and copies (torch.profiler), and the sleep kernel's cycles a ms
    gpu: Dict[str, Tuple[float, float]] = {}
    for kind in ('copy', 'decode', 'augment', 'pipeline'):
        if kind in works or (kind == 'pipeline' and 'sleep' in works):
            total, per_name = kernel_ms(make_work(kind, jpegs, a.size, 0), dev, 5)
            copies = sum(ms for name, ms in per_name.items() if name.startswith('Memcpy'))
            gpu[kind] = (total - copies, copies)
    sleep_ms = sum(gpu.get('pipeline', (3.6, 0.0)))
    gpu['sleep'] = (sleep_ms, 0.0)
    gpu['none'] = (0.0, 0.0)
    sleep_cycles = int(sleep_ms * sleep_cycles_per_ms())

    step = make_step(a.size, a.batch, dev, read_loss=True)  # the loss read after the forward, as engine.py
    times: Dict[str, List[float]] = {w: [] for w in works}
    for r in range(a.rounds):
        for kind in works:
            times[kind].append(run(kind, a, step, jpegs, sleep_cycles))
            print(f'# round {r + 1}: {kind} {times[kind][-1]:.2f} ms a step', flush=True)
    print(f'\n{torch.cuda.get_device_name()}, torch {torch.__version__}, DeiT-tiny train step (bf16, AdamW, loss read '
          f'after the forward), batch {a.batch}, {a.size} px, {a.producers} producers doing one batch of work per '
          f'step together, {a.steps} steps after {a.warmup}, median of {a.rounds} interleaved rounds\n')
    print('| work a step | its GPU ms alone: kernels + copies | step ms | × alone | step ms added | added ÷ GPU ms |')
    print('|---|---|---|---|---|---|')
    alone = statistics.median(times['none']) if 'none' in times else None
    for kind in works:
        ms = statistics.median(times[kind])
        kern, copy = gpu[kind]
        ratio = f'{ms / alone:.2f}' if alone else '—'
        added = f'{ms - alone:.2f}' if alone else '—'
        per = f'{(ms - alone) / (kern + copy):.2f}' if alone and kern + copy > 0 else '—'
        print(f'| {kind} | {kern:.2f} + {copy:.2f} | {ms:.2f} | {ratio} | {added} | {per} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
