"""The GR-KAN rational kernels alone: launch-parameter sweep against the memory floor, GELU and the compiled form.

    python benchmarks/bench_rational.py                   # ViT-tiny shapes, batch 256: 50,432 tokens x 768 / 192
    python benchmarks/bench_rational.py --tokens 8192 --quick

Per shape (tokens x width, 8 groups; the 768-wide rational reads fc1's bf16 output, the 192-wide one LayerNorm's
fp32 output under autocast) it prints, in GPU ms (triton.testing.do_bench, median):
* the floors: one elementwise pass with the same bytes (forward: read x, write y; backward: read x and dy, write dx)
  and GELU's forward / backward (what DeiT's block pays at the same place);
* every forward and backward launch configuration (rational_triton.forced_launch; `{}`: the library's), checked
  against the reference;
* fwd + bwd through autograd: the fused kernels eager and under torch.compile (the triton_op), and the plain-torch
  form in fp32 under torch.compile (what backend 'auto' took under compile before the triton_op).
"""
import argparse
import itertools

import torch
import triton

from vision_kan.layers.grkan import rational
from vision_kan.layers.kernels import rational_triton as rt


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode='median')


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()


def sweep(m: int, d: int, dtype: torch.dtype, quick: bool) -> None:
    torch.manual_seed(0)
    g = 8
    x = (torch.randn(m, d, device='cuda') * 1.5).to(dtype)
    dy = torch.randn(m, d, device='cuda').to(torch.bfloat16 if dtype == torch.float32 else dtype)
    a = (torch.randn(g, 6, device='cuda') * 0.5)
    b = (torch.randn(g, 4, device='cuda') * 0.5)
    out_dtype = torch.bfloat16
    gb_fwd = (x.element_size() + 2) * m * d / 1e9
    gb_bwd = (2 * x.element_size() + dy.element_size()) * m * d / 1e9
    print(f'\n## {m} x {d}, x {str(dtype)[6:]}, {g} groups: forward moves {gb_fwd * 1e3:.0f} MB, backward '
          f'{gb_bwd * 1e3:.0f} MB', flush=True)
    y_out = torch.empty(m, d, device='cuda', dtype=out_dtype)
    dx_out = torch.empty_like(x)
    rows = [('floor: copy x -> y (forward bytes)', bench(lambda: y_out.copy_(x))),
            ('floor: dx = x * dy (backward bytes)', bench(lambda: torch.mul(x, dy, out=dx_out))),
            ('GELU forward (torch)', bench(lambda: torch.nn.functional.gelu(x.to(out_dtype)))),
            ('GELU backward (aten)', bench(lambda: torch.ops.aten.gelu_backward(dy, x)))]
    for label, ms in rows:
        print(f'  {label:<58s} {ms:7.3f} ms {(gb_bwd if "backward" in label else gb_fwd) / ms:7.0f} GB/s/1e3')

    xr = x.float().requires_grad_()
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    y_ref = rational(xr, ar, br)
    y_ref.backward(dy.float())
    ref_grads = (xr.grad, ar.grad, br.grad)

    fwd_grid = [{}] + [dict(BLOCK_M=bm, BLOCK_D=bd, num_warps=w) for bm, bd, w in
                itertools.product((16, 32, 64), (128, 256), (4, 8))]
    # the running sums kept per row (FOLD_ROWS False): tile and warps; folded per tile (True): one row of each
    bwd_grid = [{}] + [dict(BLOCK_M=bm, BLOCK_D=bd, FOLD_ROWS=False, STAGES=1, num_warps=w, per_sm=4) for bm, bd, w in
                itertools.product((4, 8, 16), (64, 128, 256), (2, 4, 8))]
    bwd_grid += [dict(BLOCK_M=8, BLOCK_D=128, FOLD_ROWS=False, STAGES=s, num_warps=4, per_sm=p) for s, p in
                 ((1, 2), (1, 8), (1, 16), (2, 4))]
    bwd_grid += [dict(BLOCK_M=32, BLOCK_D=128, FOLD_ROWS=True, STAGES=1, num_warps=4, per_sm=4)]
    if quick:
        fwd_grid, bwd_grid = fwd_grid[:2], bwd_grid[:2] + bwd_grid[-1:]
    results = []
    for kernel, grid in (('fwd', fwd_grid), ('bwd', bwd_grid)):
        for cfg in grid:
            try:
                with rt.forced_launch(kernel, **cfg):
                    if kernel == 'fwd':
                        err = rel_err(rt._fwd(x, a, b, out_dtype), y_ref)
                        ms = bench(lambda: rt._fwd(x, a, b, out_dtype))
                    else:
                        got = rt._bwd(dy, x, a, b)
                        err = max(rel_err(o, r) for o, r in zip(got, ref_grads))
                        ms = bench(lambda: rt._bwd(dy, x, a, b))
            except Exception as exc:  # a configuration that does not compile or fit
                print(f'  {kernel} {cfg}: failed: {type(exc).__name__}: {str(exc)[:120]}')
                continue
            gb = gb_fwd if kernel == 'fwd' else gb_bwd
            results.append((kernel, ms, cfg))
            print(f'  {kernel} {str(cfg):<100s} {ms:7.3f} ms {gb / ms:6.0f} GB/s/1e3  max rel err {err:.1e}',
                  flush=True)
    for kernel in ('fwd', 'bwd'):
        ms, cfg = min((r[1], str(r[2])) for r in results if r[0] == kernel)
        default = [r[1] for r in results if r[0] == kernel and r[2] == {}]  # {}: the library's launch
        print(f'  best {kernel}: {ms:.3f} ms {cfg}' + (f' (default {default[0]:.3f} ms)' if default else ''))

    def fwd_bwd(fn):
        xi, ai, bi = x.clone().requires_grad_(), a.clone().requires_grad_(), b.clone().requires_grad_()
        return lambda: torch.autograd.grad(fn(xi, ai, bi), (xi, ai, bi), dy)

    # the plain-torch form in fp32 under inductor: what backend 'auto' took under compile before the triton_op
    compiled = torch.compile(lambda xi, ai, bi: rational(xi.float(), ai, bi).to(out_dtype))
    fused = lambda xi, ai, bi: rt.rational_call(xi, ai, bi, out_dtype)  # noqa: E731
    print(f'  fwd+bwd, fused kernels (default launch)          {bench(fwd_bwd(fused)):7.3f} ms')
    print(f'  fwd+bwd, plain torch (fp32) under torch.compile  {bench(fwd_bwd(compiled)):7.3f} ms')
    print(f'  fwd+bwd, fused triton_op under torch.compile     {bench(fwd_bwd(torch.compile(fused))):7.3f} ms')


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--tokens', type=int, default=256 * 197)
    p.add_argument('--quick', action='store_true', help='a few configurations only (a smoke test)')
    args = p.parse_args()
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}')
    sweep(args.tokens, 768, torch.bfloat16, args.quick)
    sweep(args.tokens, 192, torch.float32, args.quick)


if __name__ == '__main__':
    main()
