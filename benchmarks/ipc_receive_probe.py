"""What receiving a CUDA batch from another process costs the training loop, without the data pipeline.

Why: with `--data-process` at 224 px the loop waits 6-9 ms a step for its batches (H200, tenth run) although the
producers were often blocked on a full queue; so the wait may be the receive itself (unpickling CUDA tensors: an IPC
memory handle and an event opened per batch) rather than production. Here a producer process puts fresh CUDA
batches (batch x 3 x size x size fp32 and int64 labels, like the gpu backend's) into a torch.multiprocessing queue as
fast as the queue takes them, so a `get` never waits for production; the parent times each `get` and then a "step"
(GPU work of --gpu-ms queued on the training stream by `torch.cuda._sleep`, host work of --host-ms spun) with the
batch released in one of two ways:

  drop:     the received tensors dropped on the training stream (torch's IPC deleter syncs the stream each time);
  handoff:  data_process._Handoff (copy on the training stream, received tensors freed behind it on an idle stream);
  ring:     a prototype of the alternative: the producer shares --depth + 1 batch slots and an interprocess event
            for each once; per batch only a slot number crosses (the parent waits on the slot's event on the GPU,
            copies the slot and records an event of its own that the producer's stream waits on before refilling);
  local:    no producer, the batch made in this process (the step alone).

Measured (H200, 2026-11-28, benchmarks/results/eleventh_session_h200_2026-11-28/): get ms, median, drop 0.68-0.74,
handoff 0.90 / 1.16 / 4.19 in three step shapes, ring 0.33-0.45; so data_process now uses the ring (batch_slots).

    python benchmarks/ipc_receive_probe.py                     # needs CUDA; prints one table
    python benchmarks/ipc_receive_probe.py --size 32 --gpu-ms 5 --host-ms 20
"""
import argparse
import multiprocessing as mp
import queue
import statistics
import sys
import time
from typing import Dict, List

import torch
import torch.multiprocessing as torch_mp

from vision_kan.train.data_process import _Handoff


def produce(batch: int, size: int, out: 'mp.Queue', stop: 'mp.synchronize.Event') -> None:
    torch.cuda.set_device(0)
    while not stop.is_set():
        images = torch.empty(batch, 3, size, size, device='cuda').uniform_()  # a fresh block, as a transform's output
        labels = torch.randint(0, 1000, (batch,), device='cuda')
        while not stop.is_set():
            try:
                out.put((images, labels), timeout=0.5)
                break
            except queue.Full:
                continue
        del images, labels
        torch.cuda.ipc_collect()


def produce_ring(batch: int, size: int, slots: int, out: 'mp.Queue', free: 'mp.Queue',
                 stop: 'mp.synchronize.Event') -> None:
    """The ring producer: sends its slots and their 'filled' events once, takes the parent's 'consumed' events
    back, then fills whichever slot the parent frees and sends its number."""
    torch.cuda.set_device(0)
    images = [torch.empty(batch, 3, size, size, device='cuda') for _ in range(slots)]
    labels = [torch.empty(batch, dtype=torch.long, device='cuda') for _ in range(slots)]
    filled = [torch.cuda.Event(interprocess=True) for _ in range(slots)]
    out.put(('slots', images, labels, filled))
    consumed = free.get(timeout=60)  # the parent's events, then slot numbers
    stream = torch.cuda.current_stream()
    while not stop.is_set():
        try:
            k = free.get(timeout=0.5)
        except queue.Empty:
            continue
        stream.wait_event(consumed[k])  # the parent's copy of this slot has run (a no-op before its first record)
        images[k].uniform_()
        labels[k].random_(0, 1000)
        filled[k].record(stream)
        out.put(k)


def sleep_cycles_per_ms() -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / start.elapsed_time(end)


def spin(ms: float) -> None:
    end = time.perf_counter() + ms * 1e-3
    while time.perf_counter() < end:
        pass


def run(mode: str, a, cycles_per_ms: float) -> Dict[str, float]:
    ctx = torch_mp.get_context('spawn')
    stop = ctx.Event()
    q = ctx.Queue(maxsize=a.depth)
    proc = None
    free = ctx.Queue()
    if mode in ('drop', 'handoff'):
        proc = ctx.Process(target=produce, args=(a.batch, a.size, q, stop), daemon=True)
        proc.start()
    elif mode == 'ring':
        slots = a.depth + 1
        proc = ctx.Process(target=produce_ring, args=(a.batch, a.size, slots, q, free, stop), daemon=True)
        proc.start()
        _, ring_images, ring_labels, filled = q.get(timeout=120)
        consumed = [torch.cuda.Event(interprocess=True) for _ in range(slots)]
        free.put(consumed)
        for k in range(slots):
            free.put(k)
    handoff = _Handoff(torch.device('cuda', 0)) if mode == 'handoff' else None
    gets: List[float] = []
    local = torch.empty(a.batch, 3, a.size, a.size, device='cuda')
    t0 = None
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        t = time.perf_counter()
        if mode == 'local':
            images = local.uniform_()
        elif mode == 'ring':
            k = q.get(timeout=60)
            torch.cuda.current_stream().wait_event(filled[k])
            images, labels = ring_images[k].clone(), ring_labels[k].clone()
            consumed[k].record()
            free.put(k)
        else:
            images, labels = q.get(timeout=60)
            if handoff is not None:
                images, labels = handoff.take(images, labels)
        if i >= a.warmup:
            gets.append((time.perf_counter() - t) * 1e3)
        images.mul_(2)  # the step reads its batch ...
        torch.cuda._sleep(int(a.gpu_ms * cycles_per_ms))  # ... and keeps the GPU busy
        spin(a.host_ms)
        images = labels = None  # 'drop': torch's IPC deleter runs here, on the training stream
    torch.cuda.synchronize()
    step = (time.perf_counter() - t0) * 1e3 / a.steps
    if handoff is not None:
        handoff.release(every=True)
    stop.set()
    if proc is not None:
        while True:  # empty the queue so that the producer's put returns and it sees stop
            try:
                q.get(timeout=0.5)
            except queue.Empty:
                break
        proc.join(timeout=10)
    gets.sort()
    return {'get': statistics.median(gets), 'get90': gets[int(0.9 * (len(gets) - 1))], 'step': step}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--gpu-ms', type=float, default=30.0, help="the step's GPU time (DeiT-tiny 224 px: ~30)")
    ap.add_argument('--host-ms', type=float, default=25.0, help="the step's host time (DeiT-tiny 224 px: ~26)")
    ap.add_argument('--depth', type=int, default=3, help='batches waiting in the queue (data_process: 3)')
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--modes', default='local,drop,handoff,ring')
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('ipc_receive_probe.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    modes = [m for m in a.modes.split(',') if m]
    unknown = set(modes) - {'local', 'drop', 'handoff', 'ring'}
    if unknown:
        print(f'ipc_receive_probe.py: unknown --modes {sorted(unknown)}', file=sys.stderr)
        return 2
    cycles = sleep_cycles_per_ms()
    rows = {m: run(m, a, cycles) for m in modes}
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch} x 3 x {a.size}^2 fp32, step: '
          f'{a.gpu_ms} ms GPU + {a.host_ms} ms host, queue depth {a.depth}, {a.steps} steps\n')
    print('| batch from | get ms, median | get ms, 90th pct | loop ms a step | x local |')
    print('|---|---|---|---|---|')
    base = rows.get('local', {}).get('step')
    for m, r in rows.items():
        ratio = f'{r["step"] / base:.2f}' if base else '—'
        print(f'| {m} | {r["get"]:.2f} | {r["get90"]:.2f} | {r["step"]:.2f} | {ratio} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
