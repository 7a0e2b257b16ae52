"""What a data producer in another process costs a training step on the same GPU, by how its kernels arrive.

The 224 px gpu backend's producers (data processes) give each batch ~3.6 ms of SM work (H200), which time-slicing
alone would turn into a 0.91x ratio for DeiT-tiny; 0.76x is measured. The hypothesis: a producer whose Python issues
its ~150 small kernels one by one (tens of µs of host between them) makes the GPU switch contexts once or twice per
kernel, and each switch costs more than the kernel. This probe measures it without the data pipeline: a "trainer"
process runs bf16 GEMMs and reports TFLOP/s; a "producer" process gives it the same kernels each batch period:

  trickle: K elementwise kernels, each issued after a host gap (as the augmentations' Python issues them);
  burst:   the same K kernels captured once in a CUDA graph and replayed once a period (one submission);
  sleep:   one spinning kernel (`torch.cuda._sleep`) as long as the K kernels together (SM time in one piece).

    python benchmarks/context_switch_probe.py                       # needs CUDA; prints one table
    python benchmarks/context_switch_probe.py --kernels 150 --gap-us 60 --period-ms 17.6

"time-slice bound" is what the trainer would keep if the producer's GPU time were simply taken from it:
1 - producer GPU ms / period ms. A trickle row far below it and a burst row near it say the switches are the cost.
"""
import argparse
import multiprocessing as mp
import sys
import time
from typing import Optional

import torch

from jpeg_decoder_probe import gemm_in_process  # the "trainer": bf16 GEMMs in a process of its own, TFLOP/s


def _spin(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def producer(mode: str, seconds: float, kernels: int, gap_us: float, period_ms: float, numel: int,
             start: 'mp.synchronize.Event', out: 'mp.Queue') -> None:
    """Gives the GPU `kernels` elementwise kernels a period, as `mode` says, for `seconds` after `start` is set; puts
    'ready' when set up, then the GPU ms of one period's kernels (timed alone before the start)."""
    torch.cuda.set_device(0)
    stream = torch.cuda.Stream()
    x = torch.zeros(numel, device='cuda')

    def work() -> None:
        for _ in range(kernels):
            x.add_(1.0)

    with torch.cuda.stream(stream):
        for _ in range(3):
            work()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        torch.cuda.synchronize()
        gpu_ms = start.elapsed_time(end)
        graph: Optional[torch.cuda.CUDAGraph] = None
        if mode == 'burst':
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                work()
            graph.replay()
            torch.cuda.synchronize()
        cycles = int(gpu_ms * 1e-3 * 1.98e9)  # _sleep counts SM clock cycles (H100/H200 boost ~1.98 GHz)
        out.put('ready')
        start.wait()
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            began = time.perf_counter()
            if mode == 'trickle':
                for _ in range(kernels):
                    x.add_(1.0)
                    _spin(gap_us)
            elif mode == 'burst':
                graph.replay()
            elif mode == 'sleep':
                torch.cuda._sleep(cycles)
            rest = period_ms * 1e-3 - (time.perf_counter() - began)
            if rest > 0:
                time.sleep(rest)
        torch.cuda.synchronize()
    out.put(gpu_ms)


def run(mode: Optional[str], a: argparse.Namespace) -> tuple:
    """(trainer TFLOP/s, producer GPU ms a period or None) of one run: both processes set up, then started at once."""
    ctx = mp.get_context('spawn')
    start, gemm_out, prod_out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [(ctx.Process(target=gemm_in_process, args=(a.seconds, start, gemm_out)), gemm_out)]
    if mode is not None:
        procs.append((ctx.Process(target=producer, args=(mode, a.seconds, a.kernels, a.gap_us, a.period_ms, a.numel,
                                                         start, prod_out)), prod_out))
    for p, _ in procs:
        p.start()
    for _, out in procs:
        if out.get(timeout=600) != 'ready':
            raise RuntimeError('a probe process did not start')
    start.set()
    got = [out.get(timeout=600) for _, out in procs]
    for p, _ in procs:
        p.join()
    return got[0], (got[1] if mode is not None else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--kernels', type=int, default=150, help='producer kernels a period')
    ap.add_argument('--gap-us', type=float, default=60.0, help='trickle: host µs between two kernels')
    ap.add_argument('--period-ms', type=float, default=17.6,
                    help='one batch a period (2 producers feeding a 35.2 ms step: 17.6)')
    ap.add_argument('--numel', type=int, default=1 << 23, help='elements of the tensor each kernel adds to')
    ap.add_argument('--seconds', type=float, default=4.0)
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('context_switch_probe.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    print(f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}; producer: {a.kernels} kernels of '
          f'{a.numel:,} fp32 elements a {a.period_ms} ms period, trickle gap {a.gap_us} µs; {a.seconds} s a run')
    print('\n| producer | trainer TFLOP/s (each round) | x alone | producer GPU ms a period | time-slice bound |'
          '\n|---|---|---|---|---|')
    alone = [run(None, a)[0] for _ in range(a.rounds)]
    base = sorted(alone)[len(alone) // 2]
    print(f'| none | {" / ".join(f"{x:.0f}" for x in alone)} | 1.00 | | |', flush=True)
    for mode in ('trickle', 'burst', 'sleep'):
        got = [run(mode, a) for _ in range(a.rounds)]
        tflops = [g[0] for g in got]
        gpu_ms = got[-1][1]
        mid = sorted(tflops)[len(tflops) // 2]
        print(f'| {mode} | {" / ".join(f"{x:.0f}" for x in tflops)} | {mid / base:.2f} | {gpu_ms:.2f} | '
              f'{1 - gpu_ms / a.period_ms:.2f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
