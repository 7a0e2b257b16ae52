"""Host time of the eager KAN layers: what the CPU spends to issue one fc1 + fc2 forward + backward, against DeiT's
Linear-GELU-Linear, and where that time goes (cProfile).

    python benchmarks/kan_host_overhead.py                 # ViT-tiny's MLP shapes, 50,432 and 16,640 tokens
    python benchmarks/kan_host_overhead.py --top 25        # a longer cProfile list

Why: eager vit_kan_tiny trains at 0.49-0.66x DeiT-tiny (H200, seventh and eighth sessions) while its compiled twin
reaches 0.79-0.93x on the same kernels: the eager step waits on the host. A step is host-bound when the host's time
to issue it exceeds the GPU's time to run it; this script prints both per layer pair (README, eighth run).

Host µs: wall time to issue `--calls` iterations back to back with no synchronisation inside, divided by the calls.
GPU µs: CUDA events around the same iterations queued behind a `torch.cuda._sleep` long enough for the host to
issue them all first, so the GPU runs them back to back (without the sleep the events of a host-bound loop measure
the host). host / GPU > 1: the host cannot keep the GPU busy. The kernels are tuned before anything is timed.
The per-op table times single calls the same way (host µs per call, 10 calls: a layer's forward + backward is ~30
launches, and the launch queue blocks the host somewhere past ~1,000 queued).
"""
import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
import torch.nn as nn

from bench_vit import print_tuned_configs
from vision_kan.layers import FasterKANLinear, KANLinear


def deit_mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


def pairs(d: int):
    return (('DeiT MLP Linear-GELU-Linear (ratio 4)', lambda: deit_mlp(d)),
            ('KANLinear pair (d-d-d)', lambda: nn.Sequential(KANLinear(d, d), KANLinear(d, d))),
            ('FasterKANLinear pair (d-d-d)', lambda: nn.Sequential(FasterKANLinear(d, d), FasterKANLinear(d, d))))


def step(net: nn.Module, x: torch.Tensor, dy: torch.Tensor, train: bool) -> None:
    with torch.autocast('cuda', dtype=torch.bfloat16):
        if not train:
            with torch.no_grad():
                net(x)
            return
        y = net(x)
    y.backward(dy)


def host_and_gpu_us(fn, calls: int, rounds: int = 5, sleep_ms: float = 150.0):
    """(host µs, GPU µs) per call, medians over rounds; the GPU sleeps sleep_ms first (see the module docstring)."""
    hosts, gpus = [], []
    for _ in range(rounds):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(int(sleep_ms * 1e-3 * CLOCK_HZ))
        t0 = time.perf_counter()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        hosts.append((time.perf_counter() - t0) * 1e6 / calls)
        torch.cuda.synchronize()
        gpus.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(hosts), statistics.median(gpus)


CLOCK_HZ = 2.0e9  # _sleep counts GPU cycles; at a lower clock it sleeps longer, which is harmless


def op_rows(tokens: int, d: int, slots: int = 9):
    """(name, fn) of single ops the eager KAN path issues, at fc1's shapes (M = tokens, J = slots, N = D = d)."""
    from vision_kan.layers.kernels import triton_kan  # noqa: PLC0415
    bf = torch.bfloat16
    x = torch.randn(tokens, d, device='cuda')
    a = torch.randn(tokens, slots * d, device='cuda', dtype=bf)
    w = torch.randn(d, slots * d, device='cuda', dtype=bf)
    w3 = torch.randn(slots, d, d, device='cuda', dtype=bf)
    g = torch.randn(tokens, d, device='cuda', dtype=bf)
    bias = torch.randn(d, device='cuda', dtype=bf)
    params = torch.randn(2, d, device='cuda')
    lin = nn.Linear(d, d).cuda()
    xs = torch.randn(256, d, device='cuda')
    return [
        ('torch.empty (M, d) bf16', lambda: torch.empty(tokens, d, device='cuda', dtype=bf)),
        ('x.to(bf16) (M, d)', lambda: x.to(bf)),
        ('torch.mm (M, J d) @ (J d, d)', lambda: torch.mm(a, w.t())),
        ('torch.addmm, bias', lambda: torch.addmm(bias, a, w.t())),
        ('torch.mm, out_dtype fp32 (dW form)', lambda: torch.mm(g.t(), a, out_dtype=torch.float32)),
        ('F.linear, 256 rows, under autocast', lambda: _autocast(lin, xs)),
        ('(J, N, D) -> (N, J D) copy', lambda: triton_kan._flat_weight(w3)),
        ('triton _expand_kernel launch', lambda: triton_kan._expand(x, params, slots, bf, 0, 1, 1.0, 32, 128, 4)),
    ] + kan_layer_rows(x, g)


def kan_layer_rows(x: torch.Tensor, g: torch.Tensor):
    """The pieces of one eager KANLinear forward + backward (no_grad where a piece is not autograd's), in order."""
    from vision_kan.layers.kernels import KIND_BSPLINE, basis_linear_call, fused_path, ops, triton_kan  # noqa
    d = x.shape[1]
    layer = KANLinear(d, d, bias=False).cuda()
    bf = torch.bfloat16
    with torch.no_grad():
        w = torch.cat([layer.base_weight.unsqueeze(0), layer.scaled_spline_weight().permute(2, 0, 1)], 0).to(bf)
    params = layer.grid_params()
    xg = x.detach().clone().requires_grad_()

    def weight_prep():
        spline = layer.scaled_spline_weight().permute(2, 0, 1)
        return torch.cat([layer.base_weight.unsqueeze(0), spline], 0).to(bf)

    def fwd_bwd_op():
        y = basis_linear_call(xg, w, params, None, KIND_BSPLINE, 1.0)
        y.backward(g)

    def layer_fwd_bwd():
        with torch.autocast('cuda', dtype=bf):
            y = layer(xg)
        y.backward(g)

    def nograd(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    return [
        ('KANLinear: fused_path(layer, x)', lambda: fused_path(layer, x)),
        ('KANLinear: grid_params() (cached)', layer.grid_params),
        ('KANLinear: weight prep, no_grad (mul, permute, cat, to)', nograd(weight_prep)),
        ('KANLinear: weight prep, autograd', weight_prep),
        ('triton_kan.fwd (tuned)', lambda: triton_kan.fwd(x, w, params, None, 0, 1, 1.0)),
        ('triton_kan.dx (tuned)', lambda: triton_kan.dx(g, x, w, params, 0, 1, 1.0)),
        ('triton_kan.dw (tuned)', lambda: triton_kan.dw(g, x, params, w.shape[0], 0, 1, 1.0, bf)),
        ('basis_linear_call fwd, no_grad', nograd(lambda: basis_linear_call(x, w, params, None, KIND_BSPLINE, 1.0))),
        ('basis_linear_call fwd + backward', fwd_bwd_op),
        ('KANLinear fwd, no_grad, autocast', nograd(lambda: _autocast(layer, x))),
        ('KANLinear fwd + backward, autocast', layer_fwd_bwd),
    ]


def _autocast(lin: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast('cuda', dtype=torch.bfloat16):
        return lin(x)


def cprofile_lines(fn, calls: int, top: int) -> str:
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats('tottime').print_stats(top)
    return '\n'.join(line for line in out.getvalue().splitlines() if line.strip())


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--dim', type=int, default=192)
    p.add_argument('--tokens', type=int, nargs='+', default=[256 * 197, 256 * 65])
    p.add_argument('--calls', type=int, default=20)
    p.add_argument('--ops-only', action='store_true', help='only the per-op table')
    p.add_argument('--top', type=int, default=18, help='cProfile functions listed per KAN pair (by own time)')
    args = p.parse_args()
    import triton  # noqa: PLC0415
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, bf16 autocast, '
          f'd={args.dim}, {args.calls} calls per round, medians of 5 rounds')
    print('| layers | tokens | fwd host µs | fwd GPU µs | fwd+bwd host µs | fwd+bwd GPU µs | host / GPU (fwd+bwd) |')
    print('|---|---|---|---|---|---|---|')
    profiles = []
    for name, make in () if args.ops_only else pairs(args.dim):
        torch.manual_seed(0)
        net = make().cuda()
        for tokens in args.tokens:
            x = torch.randn(tokens, args.dim, device='cuda', requires_grad=True)
            dy = torch.randn(tokens, args.dim, device='cuda', dtype=torch.bfloat16)
            for _ in range(3):  # tunes the kernels of this shape, warms the allocator
                step(net, x, dy, True)
                step(net, x, dy, False)
            fh, fg = host_and_gpu_us(lambda: step(net, x, dy, False), args.calls)
            th, tg = host_and_gpu_us(lambda: step(net, x, dy, True), args.calls)
            print(f'| {name} | {tokens} | {fh:.0f} | {fg:.0f} | {th:.0f} | {tg:.0f} | {th / tg:.2f} |', flush=True)
            if tokens == args.tokens[0] and 'KAN' in name:
                profiles.append(f'## {name}, {tokens} tokens, fwd + bwd, cProfile by own time '
                                f'({args.calls} calls)\n' + cprofile_lines(lambda: step(net, x, dy, True),
                                                                          args.calls, args.top))
    print(f'\n| op ({args.tokens[0]} tokens) | host µs per call | GPU µs per call |')
    print('|---|---|---|')
    for name, fn in op_rows(args.tokens[0], args.dim):
        fn()
        host, gpu = host_and_gpu_us(fn, 10, sleep_ms=300.0)
        print(f'| {name} | {host:.1f} | {gpu:.1f} |', flush=True)
    for text in profiles:
        print('\n' + text)
    print_tuned_configs()


if __name__ == '__main__':
    main()
