"""Top GPU kernels of one ViT training step (torch.profiler), per model / KAN backend / mode.

    python benchmarks/profile_vit_step.py --models vit_grkan_tiny vit_kan_tiny --modes eager,compiled

bf16 autocast, AdamW step, the same step as benchmarks/bench_vit.py (`--infer`: the forward alone, eval mode). Prints, per row, the step's wall ms, host
(CPU self) ms and GPU kernel ms, then the --top kernels by GPU time with their share of the step's GPU time.
"""
import argparse
import statistics
import time

import timm
import torch
import torch.nn as nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import vision_kan  # noqa: F401  registers the models
from bench_vit import kernel_events
from vision_kan.layers import kernels


def profile_row(name: str, mode: str, backend: str, args) -> None:
    torch.manual_seed(0)
    kw = {'patch_size': args.patch_size} if args.patch_size else {}
    model = kernels.set_backend(timm.create_model(name, img_size=args.img_size, **kw), backend).cuda()
    model.train(not args.infer)
    net = torch.compile(model, mode=args.compile_mode) if mode == 'compiled' else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device='cuda')
    target = torch.randint(0, 1000, (args.batch_size,), device='cuda')

    def train_step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            net(x)

    step = infer_step if args.infer else train_step

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    before = torch.cuda.memory_stats()
    t0 = time.perf_counter()
    start.record()
    for _ in range(args.steps):
        step()
    end.record()
    issued = 1e3 * (time.perf_counter() - t0) / args.steps  # host ms to issue a step (it may block on the GPU)
    torch.cuda.synchronize()
    wall = start.elapsed_time(end) / args.steps  # back to back: the host may run ahead of the GPU
    after = torch.cuda.memory_stats()
    allocator = {k: after.get(k, 0) - before.get(k, 0) for k in ('num_device_alloc', 'num_device_free',
                                                                  'num_alloc_retries', 'num_sync_all_streams')}
    synced = []
    for _ in range(args.steps):  # bench_vit's timing: each step waited for, the median
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        synced.append(1e3 * (time.perf_counter() - t0))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if 'synchronize' not in e.key.lower()]
    host_events = [(e.self_cpu_time_total / 3e3, e.count // 3, e.key) for e in events
                   if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0]
    kernels_ = [(e.self_device_time_total / 3e3, e.count // 3, e.key) for e in kernel_events(events)]
    host, gpu = sum(h[0] for h in host_events), sum(k[0] for k in kernels_)
    print(f'\n## {name} | backend {backend} | {mode}{" | inference" if args.infer else ""} | step {wall:.2f} ms '
          f'(synced {statistics.median(synced):.2f}) | host {host:.1f} ms | GPU kernels {gpu:.2f} ms | '
          f'kernels/step {sum(k[1] for k in kernels_)}', flush=True)
    print(f'  back to back: host issued a step in {issued:.2f} ms; allocator events over {args.steps} steps: '
          + ', '.join(f'{k} {v}' for k, v in allocator.items()))
    for ms, count, key in sorted(kernels_, reverse=True)[:args.top]:
        print(f'  {ms:7.3f} ms {100 * ms / gpu:5.1f}% x{count:<4d} {key[:110]}')
    if args.top_host:
        print('  -- host (self CPU ms a step, under the profiler):')
        for ms, count, key in sorted(host_events, reverse=True)[:args.top_host]:
            print(f'  {ms:7.3f} ms x{count:<5d} {key[:110]}')
    del net, model, opt
    torch._dynamo.reset()
    torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--models', nargs='+', default=['deit_tiny_patch16_224', 'vit_grkan_tiny', 'vit_kan_tiny'])
    p.add_argument('--modes', default='eager,compiled')
    p.add_argument('--backends', default='fused')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--patch-size', type=int, default=0)
    p.add_argument('--compile-mode', default=None)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--top', type=int, default=12)
    p.add_argument('--top-host', type=int, default=0, help='also the N ops with the most host (self CPU) time')
    p.add_argument('--infer', action='store_true', help='forward only, eval mode, no_grad (bench_vit\'s infer rows)')
    args = p.parse_args()
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size}, {args.img_size} px')
    for backend in args.backends.split(','):
        for mode in args.modes.split(','):
            for name in args.models:
                try:
                    profile_row(name, mode, backend, args)
                except Exception as exc:  # keep the rest of the run
                    print(f'## {name} {backend} {mode}: failed: {type(exc).__name__}: {str(exc)[:300]}')


if __name__ == '__main__':
    main()
