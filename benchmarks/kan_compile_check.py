"""KAN layers under torch.compile on the GPU: the fused triton_ops against the plain-torch reference, and their time.

    python benchmarks/kan_compile_check.py            # fc1 + fc2 of a ViT-tiny block, 50,432 tokens, bf16 autocast
    python benchmarks/kan_compile_check.py --dtype fp32   # no autocast: issue 14's fp32 bound (<= 1e-5 relative)

Per layer pair (KANLinear 192 -> 192 -> 192, FasterKANLinear the same): max relative error of the output and every
gradient, compiled fused (backend 'auto') against eager reference, and the worst of them for eager fused; then fwd + bwd ms (CUDA events, median of 20) of
eager fused, compiled fused and compiled reference: the dispatch rule asks compiled fused <= compiled reference.
For FasterKAN, "compiled fused" is backend 'auto' with compiled_auto_form 'fused' (the kernels), and a column more
times the compiled recompute form (compiled_auto_form 'recompute', FasterKAN's compiled default: the reference with
its basis recomputed in the backward); each compiled form's peak memory for one fwd + bwd.
With --profile, each compiled form's kernels (torch.profiler, GPU µs per fwd + bwd, largest first) follow the table.
"""
import argparse
import statistics

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

from vision_kan.layers import FasterKANLinear, KANLinear
from vision_kan.layers import kernels
from bench_vit import kernel_events, print_tuned_configs


AMP = {'dtype': torch.bfloat16}  # autocast dtype of every run, None: plain fp32 (--dtype)


def run(net: nn.Module, x: torch.Tensor, dy: torch.Tensor):
    for p in net.parameters():
        p.grad = None
    xi = x.clone().requires_grad_()
    with torch.autocast('cuda', dtype=AMP['dtype'], enabled=AMP['dtype'] is not None):
        y = net(xi)
    y.backward(dy)
    return [y.detach().float(), xi.grad.float()] + [p.grad.float() for p in net.parameters()]


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mib(fn) -> float:
    """Peak device memory of one fn() above what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2 ** 20


def kernel_table(title: str, fn, steps: int = 5, top: int = 12) -> str:
    """The `top` kernels of fn() by GPU time, µs per call, from torch.profiler over `steps` calls."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    events = sorted(kernel_events(prof.key_averages()), key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in events) / steps
    lines = [f'{title}: {total:.0f} µs of kernels a call']
    lines += [f'  {e.self_device_time_total / steps:8.1f} µs  x{e.count // steps:<3d} {e.key[:100]}' for e in events[:top]]
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--tokens', type=int, default=256 * 197)
    p.add_argument('--profile', action='store_true', help='also list each compiled form\'s kernels')
    p.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'],
                   help='autocast dtype (fp32: no autocast, fp32 kernels)')
    args = p.parse_args()
    AMP['dtype'] = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': None}[args.dtype]
    label = 'fp32, no autocast' if AMP['dtype'] is None else f'{args.dtype} autocast'
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.tokens} tokens, {label}, '
          f'TF32 matmuls {torch.backends.cuda.matmul.allow_tf32}')
    print('| layers | y | dx | worst parameter grad | eager fused, worst of all | eager fused ms | compiled fused ms | '
          'compiled reference ms | compiled recompute ms | peak MiB, compiled fused / reference / recompute |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    profiles = []
    for name, make in (('KANLinear 192-192-192', lambda: nn.Sequential(KANLinear(192, 192), KANLinear(192, 192))),
                       ('FasterKANLinear 192-192-192',
                        lambda: nn.Sequential(FasterKANLinear(192, 192), FasterKANLinear(192, 192)))):
        torch.manual_seed(0)
        net = make().cuda()
        x = torch.randn(args.tokens, 192, device='cuda')
        dy = torch.randn(args.tokens, 192, device='cuda', dtype=AMP['dtype'] or torch.float32)
        with kernels.backend(net, 'reference'):
            ref = run(net, x, dy)
        eager_got = run(net, x, dy)  # eager fused (the autograd.Function over the kernels)
        eager_worst = max(((o - r).abs().max() / r.abs().max()).item() for r, o in zip(ref, eager_got))
        forms = [m for m in net.modules() if hasattr(m, 'compiled_auto_form')]
        for m in forms:  # FasterKAN's compiled default is the recompute form: this column times the kernels
            m.compiled_auto_form = 'fused'
        compiled = torch.compile(net, fullgraph=True)
        got = run(compiled, x, dy)
        errs = [((o - r).abs().max() / r.abs().max()).item() for r, o in zip(ref, got)]
        eager_ms = timed(lambda: run(net, x, dy))
        fused_ms = timed(lambda: run(compiled, x, dy))
        peaks = [peak_mib(lambda: run(compiled, x, dy))]
        if args.profile:
            profiles.append(kernel_table(f'{name}, compiled fused', lambda: run(compiled, x, dy)))
        torch._dynamo.reset()
        with kernels.backend(net, 'reference'):
            ref_compiled = torch.compile(net, fullgraph=True)
            ref_ms = timed(lambda: run(ref_compiled, x, dy))
            peaks.append(peak_mib(lambda: run(ref_compiled, x, dy)))
            if args.profile:
                profiles.append(kernel_table(f'{name}, compiled reference', lambda: run(ref_compiled, x, dy)))
        torch._dynamo.reset()
        rec_ms, rec_err = '—', ''
        if forms:  # FasterKAN: backend 'auto' under compile taking the recompute form (basis recomputed in backward)
            for m in forms:
                m.compiled_auto_form = 'recompute'
            rec_compiled = torch.compile(net, fullgraph=True)
            rec = run(rec_compiled, x, dy)
            worst = max(((o - r).abs().max() / r.abs().max()).item() for r, o in zip(ref, rec))
            rec_ms, rec_err = f'{timed(lambda: run(rec_compiled, x, dy)):.3f}', f' (max rel {worst:.1e})'
            peaks.append(peak_mib(lambda: run(rec_compiled, x, dy)))
            if args.profile:
                profiles.append(kernel_table(f'{name}, compiled recompute', lambda: run(rec_compiled, x, dy)))
            for m in forms:
                del m.compiled_auto_form  # back to the class default
            torch._dynamo.reset()
        print(f'| {name} | {errs[0]:.1e} | {errs[1]:.1e} | {max(errs[2:]):.1e} | {eager_worst:.1e} | {eager_ms:.3f} | '
              f'{fused_ms:.3f} | {ref_ms:.3f} | {rec_ms}{rec_err} | {" / ".join(f"{v:.0f}" for v in peaks)} |',
              flush=True)
    for table in profiles:
        print('\n' + table)
    print_tuned_configs()


if __name__ == '__main__':
    main()
