"""GR-KAN on the GPU: fused Triton rational, eager and under torch.compile (the triton_op), against the plain-torch
reference (forward and every gradient, fp32 and bf16), and the rational alone fwd+bwd time at the ViT-tiny fc2
shape (tokens x 768).

    python benchmarks/grkan_gpu_check.py
"""
import statistics
import time

import torch

from vision_kan.layers import rational
from vision_kan.layers.kernels.rational_triton import rational_fused


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    torch.manual_seed(0)
    dev = 'cuda'
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}')
    # the triton_op under torch.compile: inductor traces into the kernels (wrap_triton) and launches them itself
    compiled_fused = torch.compile(rational_fused, fullgraph=True)
    print('| path | dtype | tokens x D | out max rel err | dx | da | db |')
    print('|---|---|---|---|---|---|---|')
    for dtype in (torch.float32, torch.bfloat16):
        for m, d in ((50432, 768), (1000, 200)):
            a = (torch.randn(8, 6, device=dev) * 0.5).requires_grad_()
            b = (torch.randn(8, 4, device=dev) * 0.5).requires_grad_()
            x = (torch.randn(m, d, device=dev) * 1.5).to(dtype).requires_grad_()
            dy = torch.randn(m, d, device=dev).to(dtype)
            res = []
            for fn in (rational, rational_fused, compiled_fused):
                for t in (x, a, b):
                    t.grad = None
                xin = x.float() if fn is rational else x
                y = fn(xin, a, b)
                y.backward(dy.float() if fn is rational else dy)
                res.append([y.detach().float(), x.grad.float(), a.grad.clone(), b.grad.clone()])
            for label, out in (('fused', res[1]), ('fused, compiled', res[2])):
                errs = [((o - r).abs().max() / r.abs().max()).item() for r, o in zip(res[0], out)]
                print(f'| {label} | {dtype} | {m} x {d} | ' + ' | '.join(f'{e:.1e}' for e in errs) + ' |')
    print('\n| rational, 50432 x 768, fwd+bwd | dtype | ms |')
    print('|---|---|---|')
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(8, 6, device=dev, requires_grad=True)
        b = torch.randn(8, 4, device=dev, requires_grad=True)
        x = torch.randn(50432, 768, device=dev, dtype=dtype, requires_grad=True)
        for name, fn in (('reference eager', rational), ('reference compiled', torch.compile(rational)),
                         ('fused', rational_fused)):
            print(f'| {name} | {dtype} | {timed(lambda: fn(x, a, b).sum().backward()):.3f} |', flush=True)


if __name__ == '__main__':
    main()
