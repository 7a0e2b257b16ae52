"""A timeline of the --data-process producer on one GPU, for finding where its start-up goes: spawn, the first
batch, ten batches, an epoch left early, a second epoch, close. With --trace N both processes dump every thread's
stack every N seconds (faulthandler), so a stall shows where it waits.

    python benchmarks/data_process_check.py --trace 20        # makes 4,096 ImageNet-shaped JPEGs in /tmp/vk_dp_check

Why it exists: on 2 x H200 (2026-11-28) the data process gave 0.80x / 0.91x synthetic on the timed steps of
bench_data_pipeline.py (deit_tiny / vit_grkan_tiny, 224 px) but each of those runs spent ~165 s more in its
epoch than the thread rows, outside the timed steps; on the CPU the producer's first batch comes after ~5 s.
What it found (H100, 2026-11-28): phases A and B each waited 162 s while the producer's DataLoader spawned its 14
workers one after another (a spawned process hands spawn on to its children); phase C, without workers, had its
first batch after 1.5 s. The producer's loader now forks its workers.
One guess it tests: main.py's start-up check (data.check_gpu_backend) decodes a probe JPEG with nvjpeg in the
trainer, so two processes hold a hardware-decoder handle on one GPU. Phase A starts a producer while this process
has not touched nvjpeg; phase B decodes a probe here first (as main.py does), then starts a second producer;
phase C is B with no DataLoader workers in the producer (nothing forked from a process that holds a CUDA context).
With --trace the producer also prints its milestones (started, device ready, loader built, each early batch) and
each epoch's batch times (making, waiting to hand over).
"""
import argparse
import faulthandler
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

T0 = time.time()


def say(*parts) -> None:
    print(f'[{time.time() - T0:7.2f} s]', *parts, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='/tmp/vk_dp_check')
    p.add_argument('--images', type=int, default=4096)
    p.add_argument('--workers', type=int, default=14)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--trace', type=float, default=0, help='dump stacks every N seconds (0: off)')
    a = p.parse_args()
    if a.trace:
        os.environ['VISION_KAN_DATA_PROCESS_TRACE'] = str(a.trace)
        faulthandler.dump_traceback_later(a.trace, repeat=True)
    from bench_data_pipeline import make_jpegs
    from vision_kan.train.data import DataConfig, TransformConfig, build_data
    device = torch.device('cuda', 0) if torch.cuda.is_available() else torch.device('cpu')
    data = make_jpegs(Path(a.root) / 'jpeg224', a.images, 10, (500, 375), os.cpu_count() or 1)
    say('jpegs ready', data)
    import vision_kan.train.data as data_module
    cfg = DataConfig(data_path=str(data), data_backend='gpu', batch_size=a.batch_size, num_workers=a.workers,
                     repeated_aug=False, data_process=True, device=device.type)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    phases = (('A', False, a.workers), ('B', True, a.workers), ('C', True, 0))
    for phase, parent_probe, workers in phases:
        cfg.num_workers = workers
        real_check = data_module.check_gpu_backend
        if parent_probe:
            real_check(cfg, device)
            say(phase, 'this process decoded a probe JPEG (nvjpeg)')
        else:
            data_module.check_gpu_backend = lambda *args: None  # this process never calls nvjpeg in phase A
        try:
            loader = build_data(cfg, TransformConfig(input_size=224), device, 1, 0)[3]
        finally:
            data_module.check_gpu_backend = real_check
        say(phase, 'built', type(loader).__name__, len(loader), 'batches an epoch')
        it = iter(loader)
        for k in range(10):
            x, _ = next(it)
            sync()
            say(phase, 'batch', k, tuple(x.shape))
        it.close()
        say(phase, 'epoch left early (drained)')
        it = iter(loader)
        for k in range(3):
            next(it)
            sync()
            say(phase, 'second epoch, batch', k)
        it.close()
        loader.close()
        say(phase, 'closed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
