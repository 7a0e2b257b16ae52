"""Which GPU JPEG decoder can feed a 224 px training step: torchvision's nvjpeg (the gpu backend's today) against
NVIDIA nvImageCodec (`nvidia-nvimgcodec-cu13`, with the hardware JPEG engines of A100/H100/H200), on the same
ImageNet-shaped files. Prints one table: img/s of each decoder alone, the process CPU seconds it spends per
1,000 images (host-bound or not), the kernel ms a batch torch.profiler sees on the SMs (the hardware JPEG engines'
work is not a kernel), and how much it slows a bf16 GEMM loop running beside it on the same GPU: in a thread of
the same process (streams: the kernels can run side by side) and in another process (contexts time-slice the SMs:
what a data process's decoder does to the training step).

    pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg              # the nvImageCodec rows (CUDA 13 builds of torch)
    python benchmarks/jpeg_decoder_probe.py                     # 3,072 generated 500x375 JPEGs in /tmp/vk_probe
    python benchmarks/jpeg_decoder_probe.py --processes 1,2,4   # torchvision's decoder in N processes at once

torchvision's decoder holds one process-wide lock, so one process decodes one batch at a time; --processes says
whether the GPU's JPEG engines decode more when N processes (each its own decoder) share them: the summed img/s.

Why it exists: on 2 x H200 (2026-11-28) the gpu backend's nvjpeg stage alone decoded 7,311 img/s while
DeiT-tiny's synthetic step runs at 7,706 img/s, so no scheduling of the other stages reaches 0.9x synthetic.
Rows whose decoder is not installed print why and the others still run.
"""
import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def gemm_rate(stop: threading.Event, out: Dict[str, float], stream: torch.cuda.Stream) -> None:
    """bf16 4096^3 GEMMs on their own stream until stop; out['tflops'] = the rate over that time."""
    a = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
    n, t = 0, time.perf_counter()
    with torch.cuda.stream(stream):
        while not stop.is_set():
            for _ in range(8):
                a @ b
            stream.synchronize()
            n += 8
    out['tflops'] = n * 2 * 4096 ** 3 / (time.perf_counter() - t) / 1e12


def gemm_in_process(seconds: float, start: 'mp.synchronize.Event', out: 'mp.Queue') -> None:
    """A process of its own: bf16 4096^3 GEMMs for `seconds` after `start` is set; puts the TFLOP/s."""
    torch.cuda.set_device(0)
    a = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
    for _ in range(8):
        a @ b
    torch.cuda.synchronize()
    out.put('ready')
    start.wait()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(8):
            a @ b
        torch.cuda.synchronize()
        n += 8
    out.put(n * 2 * 4096 ** 3 / (time.perf_counter() - t) / 1e12)


def gemm_other_process(decode: Optional[Callable[[List[bytes]], None]], batches: List[List[bytes]],
                       seconds: float = 3.0) -> float:
    """TFLOP/s of a GEMM loop in another process while this one decodes the batches over and over (None: alone)."""
    ctx = mp.get_context('spawn')
    start, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=gemm_in_process, args=(seconds, start, out))
    proc.start()
    if out.get(timeout=300) != 'ready':
        raise RuntimeError('the GEMM process did not start')
    start.set()
    t = time.perf_counter()
    while decode is not None and time.perf_counter() - t < seconds:
        for b in batches:
            decode(b)
        torch.cuda.synchronize()
    tflops = out.get(timeout=300)
    proc.join()
    return tflops


def kernel_ms(decode: Callable[[List[bytes]], None], batches: List[List[bytes]]) -> float:
    """Summed CUDA kernel durations a batch under torch.profiler (memory copies and the JPEG engines not included)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for b in batches:
            decode(b)
        torch.cuda.synchronize()
    names = ('memcpy', 'memset')
    total = sum(e.time_range.end - e.time_range.start for e in prof.events()  # µs
                if e.device_type == DeviceType.CUDA and not any(k in e.name.lower() for k in names))
    return total / 1e3 / len(batches)


def timed(decode: Callable[[List[bytes]], None], batches: List[List[bytes]], repeat: int) -> Dict[str, float]:
    decode(batches[0])  # handles, first allocations
    torch.cuda.synchronize()
    cpu, t = time.process_time(), time.perf_counter()
    images = 0
    for _ in range(repeat):
        for b in batches:
            decode(b)
            images += len(b)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    return {'img/s': images / wall, 'cpu s / 1k img': (time.process_time() - cpu) / images * 1000}


def beside_gemm(decode: Callable[[List[bytes]], None], batches: List[List[bytes]], repeat: int,
                alone_tflops: float) -> float:
    """GEMM TFLOP/s while decoding, as a fraction of the GEMM alone."""
    stop, out = threading.Event(), {}
    worker = threading.Thread(target=gemm_rate, args=(stop, out, torch.cuda.Stream()))
    worker.start()
    time.sleep(0.5)
    timed(decode, batches, repeat)
    stop.set()
    worker.join()
    return out['tflops'] / alone_tflops


def torchvision_decoder(device: torch.device) -> Callable[[List[bytes]], None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    def run(batch: List[bytes]) -> None:
        decode_jpeg([torch.frombuffer(bytearray(x), dtype=torch.uint8) for x in batch], mode=ImageReadMode.RGB,
                    device=device)
    return run


def nvimgcodec_decoder(kind: Optional[str], roi: bool) -> Callable[[List[bytes]], None]:
    from nvidia import nvimgcodec
    backends = None if kind is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))]
    decoder = nvimgcodec.Decoder(device_id=torch.cuda.current_device(), backends=backends)
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB,
                                    allow_any_depth=False, sample_format=nvimgcodec.SampleFormat.P_RGB)
    g = torch.Generator().manual_seed(0)

    def run(batch: List[bytes]) -> None:
        streams = [nvimgcodec.CodeStream(x) for x in batch]
        if roi:  # a centred crop of a random area in [0.08, 1] (RandomResizedCrop's mean is ~0.54)
            cut = []
            for s in streams:
                f = float(torch.empty(1).uniform_(0.08, 1.0, generator=g)) ** 0.5
                h, w = max(1, int(s.height * f)), max(1, int(s.width * f))
                y, x = (s.height - h) // 2, (s.width - w) // 2
                cut.append(s.get_sub_code_stream(region=nvimgcodec.Region(y, x, y + h, x + w)))
            streams = cut
        out = decoder.decode(streams, params=params, cuda_stream=torch.cuda.current_stream().cuda_stream)
        if any(o is None for o in out):
            raise RuntimeError('nvimgcodec returned None for an image')
        [torch.as_tensor(o, device='cuda') for o in out]  # zero-copy views (__cuda_array_interface__), (3, H, W)
    return run


def _decode_in_process(batches: List[List[bytes]], repeat: int, start: 'mp.synchronize.Barrier', out: 'mp.Queue'
                       ) -> None:
    """One process of --processes: warm its decoder, wait for the others, decode every batch `repeat` times."""
    device = torch.device('cuda', 0)
    torch.cuda.set_device(device)
    decode = torchvision_decoder(device)
    decode(batches[0])
    torch.cuda.synchronize()
    start.wait()
    t = time.perf_counter()
    for _ in range(repeat):
        for b in batches:
            decode(b)
    torch.cuda.synchronize()
    out.put((sum(len(b) for b in batches) * repeat, time.perf_counter() - t))


def processes_table(batches: List[List[bytes]], repeat: int, counts: List[int]) -> None:
    """torchvision's decoder in N processes at once: summed img/s, and per process."""
    ctx = mp.get_context('spawn')
    print('| processes | img/s, all | img/s per process |\n|---|---|---|', flush=True)
    for n in counts:
        start, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_decode_in_process, args=(batches, repeat, start, out)) for _ in range(n)]
        for pr in procs:
            pr.start()
        done = [out.get(timeout=600) for _ in procs]
        for pr in procs:
            pr.join()
        images, slowest = sum(d[0] for d in done), max(d[1] for d in done)
        print(f'| {n} | {images / slowest:,.0f} | {images / slowest / n:,.0f} |', flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='/tmp/vk_probe')
    p.add_argument('--images', type=int, default=3072)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--processes', default='', help='comma-separated process counts: only the processes table')
    a = p.parse_args()
    from bench_data_pipeline import make_jpegs
    root = make_jpegs(Path(a.root), a.images, 10, (500, 375), os.cpu_count() or 1)
    files = sorted((root / 'train').rglob('*.jpg'))[:a.images]
    data = [f.read_bytes() for f in files]
    batches = [data[i:i + a.batch_size] for i in range(0, len(data) - a.batch_size + 1, a.batch_size)]
    if a.processes:
        print(f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {len(files)} files 500x375, '
              f'batch {a.batch_size}, {os.cpu_count()} CPUs', flush=True)
        processes_table(batches, a.repeat, [int(n) for n in a.processes.split(',')])
        return 0
    device = torch.device('cuda', 0)
    torch.cuda.set_device(device)
    stop, out = threading.Event(), {}
    worker = threading.Thread(target=gemm_rate, args=(stop, out, torch.cuda.Stream()))
    worker.start()
    time.sleep(3.0)
    stop.set()
    worker.join()
    alone = out['tflops']
    print(f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {len(files)} files 500x375, '
          f'batch {a.batch_size}, {os.cpu_count()} CPUs; bf16 GEMM alone {alone:.0f} TFLOP/s', flush=True)
    rows = [('torchvision decode_jpeg (nvjpeg)', lambda: torchvision_decoder(device)),
            ('nvimgcodec, default backends', lambda: nvimgcodec_decoder(None, False)),
            ('nvimgcodec, HW_GPU_ONLY', lambda: nvimgcodec_decoder('HW_GPU_ONLY', False)),
            ('nvimgcodec, GPU_ONLY', lambda: nvimgcodec_decoder('GPU_ONLY', False)),
            ('nvimgcodec, HYBRID_CPU_GPU', lambda: nvimgcodec_decoder('HYBRID_CPU_GPU', False)),
            ('nvimgcodec, HW_GPU_ONLY, crop region', lambda: nvimgcodec_decoder('HW_GPU_ONLY', True)),
            ('nvimgcodec, default, crop region', lambda: nvimgcodec_decoder(None, True))]
    alone_other = gemm_other_process(None, batches)
    print(f'bf16 GEMM alone in another process: {alone_other:.0f} TFLOP/s', flush=True)
    print('| decoder | img/s | CPU s / 1k img | SM kernel ms a batch | GEMM beside it (thread), x alone | '
          'GEMM in another process, x alone |\n|---|---|---|---|---|---|', flush=True)
    for name, make in rows:
        try:
            decode = make()
            r = timed(decode, batches, a.repeat)
            ms = kernel_ms(decode, batches)
            share = beside_gemm(decode, batches, a.repeat, alone)
            other = gemm_other_process(decode, batches) / alone_other
            print(f"| {name} | {r['img/s']:,.0f} | {r['cpu s / 1k img']:.2f} | {ms:.2f} | {share:.2f} | "
                  f"{other:.2f} |", flush=True)
        except Exception as e:  # noqa: BLE001  (a missing package or an unsupported backend: say so, go on)
            print(f'| {name} | failed: {type(e).__name__}: {str(e)[:160]} | | | | |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
