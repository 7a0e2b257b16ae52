"""Speed and memory of the KAN-ViTs against their DeiT-tiny twin, measured in one run.

    python benchmarks/bench_vit.py                                   # GPU: bf16 autocast, 224 px, batch 256
    python benchmarks/bench_vit.py --device cpu --batch-size 8 --steps 3 --tokens 2048 --modes eager

    python benchmarks/bench_vit.py --modes eager --backends fused --no-layers      # fused eager rows only

Prints markdown tables (run order: kernels, layers, models, so a cut-off run still says the most):
  * kernels (CUDA, fused backend): time of each fused kernel (forward, input grad, weight grad) at the ViT-tiny
    layer shapes, its TFLOP/s, its GPU time alone (CUDA-graph replay: no host launch time), and cuBLAS on a dense
    GEMM of the same size (the matmul the kernel replaces);
  * layers: fc1 + fc2 of one ViT-tiny block (tokens x 192 -> hidden -> 192), forward + backward, against nn.Linear,
    for each KAN backend, with the fused path's largest error against the reference path (output and every
    gradient, same dtype/autocast): max |fused - ref| and that over max |ref|;
  * whole models: params, GMACs (fvcore convention: one multiply-add = one "flop"), train img/s (forward, backward,
    AdamW step), infer img/s, peak train memory, each also as a ratio to DeiT-tiny in the same mode.
  * with --profile, two more model columns from torch.profiler over 3 training steps: the host's CPU time per
    step (every op's own CPU time, all threads) and the GPU's kernel time per step. Host time near the wall time
    per step (batch / train img/s) and GPU time well below it: the step is bound by the host (Python, dispatch,
    launches), not by the kernels, as in small-image runs (--img-size 32 --patch-size 4).
With --rounds R (> 1) the model rows of a mode are all built and warmed first, then timed in R interleaved rounds
(each row --steps steps per round), and each KAN row also prints its ratio to the baseline per round: these machines
drift (compiled DeiT-tiny ran at 8,861-14,206 img/s in three calls on one GPU kind, NOTES.md), and rows timed in the
same round share the drift. Train img/s is then the median over the rounds.
Modes: `eager` and `compiled` (torch.compile of the whole model), crossed with the KAN backends `reference` (plain
torch) and `fused` (Triton kernels, vision_kan.layers.kernels). Ratios compare with DeiT-tiny in the same mode
(eager to eager, compiled to compiled); DeiT-tiny has no KAN layer, so its row does not depend on the backend.
"""
import argparse
import contextlib
import datetime
import statistics
import time
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn as nn

import vision_kan  # noqa: F401  registers the models
from vision_kan.layers import FasterKANLinear, GRKANLinear, GroupRational, KANLinear, kernels
from vision_kan.train.model_factory import count_macs

BASELINE = 'deit_tiny_patch16_224'
DEFAULT_MODELS = [BASELINE, 'vit_grkan_tiny', 'vit_fasterkan_tiny', 'vit_kan_tiny', 'vit_kan_tiny@mlp_ratio=4']


def parse_model(spec: str):
    """'vit_kan_tiny@mlp_ratio=4' -> ('vit_kan_tiny', {'mlp_ratio': 4.0})."""
    name, _, rest = spec.partition('@')
    kwargs = {}
    for item in filter(None, rest.split(',')):
        key, value = item.split('=')
        kwargs[key] = float(value) if '.' in value or key == 'mlp_ratio' else int(value)
    return name, kwargs


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(fn: Callable[[], None], device: torch.device, own_bytes: Optional[int] = None) -> Optional[float]:
    """Peak allocated GiB during one call (CUDA only). own_bytes: what the measured thing holds between calls
    (parameters, optimizer state, inputs); given, the memory allocated before the call beyond it (other rows alive at
    the same time, --rounds) is not counted."""
    if device.type != 'cuda':
        return None
    synchronize(device)
    others = 0 if own_bytes is None else max(torch.cuda.memory_allocated(device) - own_bytes, 0)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - others) / 2 ** 30


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


# kernels.BACKENDS plus two measurement knobs: 'auto-recompute' / 'auto-fused' are 'auto' with every FasterKANLinear's
# compiled_auto_form set to 'recompute' (the default: under torch.compile the plain-torch form, basis recomputed in the
# backward) / 'fused' (the kernels under torch.compile too)
BENCH_BACKENDS = tuple(kernels.BACKENDS) + ('auto-recompute', 'auto-fused')


def set_bench_backend(model: nn.Module, name: str) -> nn.Module:
    """kernels.set_backend, and for 'auto-recompute' / 'auto-fused' the FasterKAN layers' compiled form (on the
    instances: rows compiled side by side keep their own)."""
    if name not in ('auto-recompute', 'auto-fused'):
        return kernels.set_backend(model, name)
    kernels.set_backend(model, 'auto')
    for m in model.modules():
        if hasattr(m, 'compiled_auto_form'):
            m.compiled_auto_form = name.split('-')[1]
    return model


def build_model_row(spec: str, args, device: torch.device, mode: str, macs_cache: Dict[str, float],
                    backend: str) -> Dict:
    """A model row ready to time: its train and infer step closures (model, optimizer and input held by them),
    params and GMACs, with the model's KAN layers on `backend` (kernels.set_backend)."""
    name, kwargs = parse_model(spec)
    if args.patch_size:
        kwargs.setdefault('patch_size', args.patch_size)
    model = set_bench_backend(timm.create_model(name, img_size=args.img_size, **kwargs), backend)
    row = {'params': sum(p.numel() for p in model.parameters()) / 1e6}
    if args.macs and spec not in macs_cache:
        macs_cache[spec] = count_macs(model, (3, args.img_size, args.img_size))[0]
    row['gmacs'] = macs_cache.get(spec)
    model = model.to(device).train()
    net = torch.compile(model, mode=args.compile_mode) if mode == 'compiled' else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    target = torch.randint(0, 1000, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=args.amp_dtype) if args.amp_dtype else contextlib.nullcontext()

    def train_step():
        with autocast:
            loss = nn.functional.cross_entropy(net(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step():
        with torch.no_grad(), autocast:
            net(x)

    def own_bytes() -> int:  # held between steps: parameters, AdamW's state, the batch (grads are set to None)
        states = [v for state in opt.state.values() for v in state.values()]
        return _tensor_bytes(list(model.parameters()) + list(model.buffers()) + states + [x, target])

    row.update(train_step=train_step, infer_step=infer_step, model=model, own_bytes=own_bytes)
    row['graphs'] = mode == 'compiled' and 'reduce-overhead' in (args.compile_mode or '')
    return row


def measure_row(row: Dict, args, device: torch.device, train_times: Optional[List[float]] = None) -> None:
    """Fill row's train / mem / infer (and host_ms, gpu_ms with --profile). train_times: seconds per step already
    measured (the interleaved rounds), else timed here."""
    try:
        if row['graphs'] and device.type == 'cuda':  # CUDA graphs: the pool is allocated while recording (warm-up)
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        interleaved = train_times is not None  # other rows alive: their memory is not this row's
        if train_times is None:
            train_times = [time_it(row['train_step'], device, args.warmup, args.steps)]
        row['train'] = args.batch_size / statistics.median(train_times)
        if row['graphs'] and device.type == 'cuda':
            row['mem'] = torch.cuda.max_memory_allocated(device) / 2 ** 30  # warm-up and timed steps
        else:
            row['mem'] = peak_memory(row['train_step'], device, row['own_bytes']() if interleaved else None)
        if args.profile:
            row['host_ms'], row['gpu_ms'] = profile_step(row['train_step'], device)
        row['model'].eval()  # the last measurement: the row is released after it
        row['infer'] = args.batch_size / time_it(row['infer_step'], device, args.warmup, args.steps)
    except torch.OutOfMemoryError:
        row.update(train=None, mem=None, infer=None, note='out of memory')
    except Exception as exc:  # a failing row must not lose the rest of a device run
        row.update(train=None, mem=None, infer=None, note=f'failed: {type(exc).__name__}: {str(exc)[:200]}')


def release_row(row: Dict, device: torch.device) -> None:
    """Drop the row's model, optimizer and inputs (held by its step closures)."""
    for key in ('train_step', 'infer_step', 'model', 'own_bytes'):
        row.pop(key, None)
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def bench_model(spec: str, args, device: torch.device, mode: str, macs_cache: Dict[str, float],
                backend: str) -> Dict[str, float]:
    """One row of the model table, built, timed and released."""
    row = build_model_row(spec, args, device, mode, macs_cache, backend)
    measure_row(row, args, device)
    release_row(row, device)
    return row


def bench_models_interleaved(runs, args, device: torch.device, mode: str, macs_cache: Dict[str, float]) -> List[Dict]:
    """Every row of one mode built and warmed first, then timed in `args.rounds` rounds, each row once per round
    (args.steps steps): a drift of the machine (clocks, a neighbour) moves all rows of a round alike, so the
    per-round ratio to the baseline (row 0) is steadier than rows timed minutes apart. Each row gets 'train' from its
    median step time and 'round_ratios': its train rate over the baseline's, per round."""
    rows = []
    for spec, backend_name in runs:
        kan_backend = 'reference' if backend_name == '—' else backend_name
        started = time.perf_counter()
        row = build_model_row(spec, args, device, mode, macs_cache, kan_backend)
        try:
            for _ in range(args.warmup):  # compiles (a graph per row: rows do not share dynamo's cache entries)
                row['train_step']()
            synchronize(device)
        except Exception as exc:
            row['note'] = f'failed: {type(exc).__name__}: {str(exc)[:200]}'
        # progress as it comes (a run cut by a timeout still says how far it got and what each row cost to build)
        print(f'# {mode} {spec} {backend_name}: built and warmed in {time.perf_counter() - started:.0f} s',
              flush=True)
        rows.append(row)
    times: List[List[float]] = [[] for _ in rows]
    for r in range(args.rounds):
        for k, row in enumerate(rows):
            if 'note' not in row:
                try:
                    times[k].append(time_it(row['train_step'], device, 1, args.steps))
                    print(f'# {mode} round {r + 1}: {runs[k][0]} {runs[k][1]} '
                          f'{args.batch_size / times[k][-1]:.0f} img/s', flush=True)
                except Exception as exc:
                    row['note'] = f'failed: {type(exc).__name__}: {str(exc)[:200]}'
    for k, row in enumerate(rows):
        if 'note' in row or not times[k]:
            row.update(train=None, mem=None, infer=None)
        else:
            if times[0] and len(times[0]) == len(times[k]):
                row['round_ratios'] = [t0 / t for t0, t in zip(times[0], times[k])]
            measure_row(row, args, device, train_times=times[k])
    for row in rows:
        release_row(row, device)
    return rows


def profile_step(fn: Callable[[], None], device: torch.device, steps: int = 3):
    """(host CPU ms, GPU kernel ms) per call of fn, from torch.profiler: the self CPU time of every CPU event, and
    the time of the device's kernel (and copy) events only: an op's device time is its kernels', so summing both
    counted each kernel twice (the 2026-11-28 32 px table's GPU column did)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        synchronize(device)
    events = [e for e in prof.key_averages() if 'synchronize' not in e.key.lower()]  # not the final wait
    host = sum(e.self_cpu_time_total for e in events if e.device_type == DeviceType.CPU) / steps / 1e3
    if device.type != 'cuda':
        return host, None
    return host, sum(e.self_device_time_total for e in kernel_events(events)) / steps / 1e3


def kernel_events(events) -> list:
    """The device's kernel (and copy) events of a profile's key_averages(): an op's device time is its kernels', and
    user annotations (the optimizer's record_function, compiled-graph calls) also show on the GPU timeline."""
    from torch.autograd import DeviceType
    return [e for e in events if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0 and
            not e.key.startswith(('Optimizer.', '## ', 'ProfilerStep'))]


def print_tuned_configs() -> None:
    """The fused kernels' configurations the autotuner chose in this process, one line each."""
    from vision_kan.layers.kernels import triton_kan
    print('\nkernel configurations chosen (kernel, kind, dtype, M bucket, N, D[, gpu time]) -> config:')
    for key, cfg in triton_kan.tuned_configs().items():
        print(f'  {key} -> {cfg}')


LAYER_DIM = 192


def layer_pairs() -> Dict[str, Callable[[], nn.Module]]:
    """fc1 + fc2 of one ViT-tiny block, tokens x 192 -> hidden -> 192."""
    dim = LAYER_DIM
    return {
        'nn.Linear (mlp_ratio 4)': lambda: nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
        'nn.Linear (hidden 192)': lambda: nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)),
        'FasterKANLinear (hidden 192)': lambda: nn.Sequential(FasterKANLinear(dim, dim), FasterKANLinear(dim, dim)),
        'KANLinear (hidden 192)': lambda: nn.Sequential(KANLinear(dim, dim), KANLinear(dim, dim)),
        'KANLinear (hidden 768)': lambda: nn.Sequential(KANLinear(dim, 4 * dim), KANLinear(4 * dim, dim)),
        'GRKANLinear (hidden 768)': lambda: nn.Sequential(GRKANLinear(dim, 4 * dim),
                                                          GRKANLinear(4 * dim, dim, rational_init='swish')),
    }


def _has_kan(module: nn.Module) -> bool:
    return any(isinstance(m, (KANLinear, FasterKANLinear, GroupRational)) for m in module.modules())


def _amp(args, device: torch.device):
    return torch.autocast(device.type, dtype=args.amp_dtype) if args.amp_dtype else contextlib.nullcontext()


def bench_layers(args, device: torch.device, mode: str, backends: List[str]) -> List[Dict]:
    """fc1 + fc2 of one ViT-tiny block on (tokens, 192), forward + backward, per KAN backend."""
    rows = []
    for label, make in layer_pairs().items():
        for name in backends if _has_kan(make()) else ['—']:
            torch.manual_seed(0)
            layer = set_bench_backend(make().to(device), name if name != '—' else 'reference')
            if mode == 'compiled':
                torch._dynamo.reset()  # one compile per row: else the 9th row hits dynamo's recompile limit
            net = torch.compile(layer) if mode == 'compiled' else layer
            x = torch.randn(args.tokens, LAYER_DIM, device=device, requires_grad=True)

            def step():
                with _amp(args, device):
                    y = net(x)
                y.float().sum().backward()

            row = dict(layer=label, backend=name, ms=None, mem=None)
            try:
                row.update(ms=1e3 * time_it(step, device, args.warmup, args.steps), mem=peak_memory(step, device))
            except torch.OutOfMemoryError:
                row['note'] = 'out of memory'
            except Exception as exc:
                row['note'] = f'failed: {type(exc).__name__}: {str(exc)[:200]}'
            rows.append(row)
            del net, layer, x
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    return rows


def layer_errors(make: Callable[[], nn.Module], args, device: torch.device) -> Dict[str, float]:
    """Largest difference, fused against reference path, over the output and every gradient (x and parameters),
    one forward + backward at the benchmark's dtype/autocast: {'abs': max |d|, 'rel': max |d| / max |ref|}."""
    torch.manual_seed(0)
    layer = make().to(device)
    x = torch.randn(args.tokens, LAYER_DIM, device=device)
    grad = torch.randn(args.tokens, LAYER_DIM, device=device)
    out = {}
    for name in ('reference', 'fused'):
        layer.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        with kernels.backend(layer, name), _amp(args, device):
            y = layer(xx)
        (y.float() * grad).sum().backward()
        out[name] = [y.detach().float(), xx.grad.float()] + [p.grad.float() for p in layer.parameters()]
    diffs = [((f - r).abs().max().item(), r.abs().max().item()) for f, r in zip(out['fused'], out['reference'])]
    return {'abs': max(d for d, _ in diffs), 'rel': max(d / max(m, 1e-30) for d, m in diffs)}


EXPAND_TILES = [(32, 128, 4), (64, 64, 4), (128, 64, 8), (16, 256, 4)]  # (BM, BD, warps) of _expand_kernel


def bench_kernels(args, device: torch.device) -> List[Dict]:
    """Each fused kernel alone at the ViT-tiny layer shapes (M = tokens), against cuBLAS on the dense GEMM it
    replaces: (M, J*d) @ (J*d, d') for the forward and the input grad, (d', M) @ (M, J*d) for the weight grad."""
    from triton.testing import do_bench
    ops = torch.ops.vision_kan
    dt = args.amp_dtype or torch.float32
    m = args.tokens
    spline, rswaf = ('B-spline+SiLU', kernels.KIND_BSPLINE, 9), ('RSWAF', kernels.KIND_RSWAF, 8)
    shapes = [spline + (192, 192), spline + (192, 768), spline + (768, 192), rswaf + (192, 192)]
    rows = []
    for label, kind, j, d, n in shapes:
        x32 = torch.randn(m, d, device=device)
        x = x32.to(dt)
        w = (torch.randn(j, n, d, device=device) / (j * d) ** 0.5).to(dt)
        g = torch.randn(m, n, device=device, dtype=dt)
        if kind == kernels.KIND_BSPLINE:
            params = torch.stack([torch.full((d,), -2.2, device=device), torch.full((d,), 2.5, device=device)])
        else:
            params = torch.linspace(-2, 2, j, device=device)
        inv_h = 1.75
        a = torch.randn(m, j * d, device=device, dtype=dt)  # the materialised basis a GEMM would read
        b = torch.randn(j * d, n, device=device, dtype=dt)
        flops = 2.0 * m * j * d * n
        from vision_kan.layers.kernels import triton_kan

        def forced(kernel, config, fn):  # one variant, whatever the autotuner picked for the plain row
            def run():
                with triton_kan.forced_config(kernel, config):
                    return fn()
            return run
        fwd = lambda: ops.basis_linear(x, w, params, None, kind, inv_h)  # noqa: E731
        dw = lambda: ops.basis_linear_dw(g, x, w, params, kind, inv_h)  # noqa: E731
        dx = lambda: ops.basis_linear_dx(g, x, w, params, kind, inv_h)  # noqa: E731
        timings = {
            'forward': (fwd, lambda: a @ b),
            'forward, fused kernel only': (forced('fwd', triton_kan._FWD_CONFIGS[0], fwd), lambda: a @ b),
            'forward, basis + cuBLAS only': (forced('fwd', ('g', 32, 128, 1 << 26, 4), fwd), lambda: a @ b),
            'input grad': (dx, lambda: g @ b.t()),
            'input grad, cuBLAS + reduce only': (forced('dx', ('g', 32, 128, 1 << 27, 4), dx), lambda: g @ b.t()),
            'weight grad': (dw, lambda: g.t() @ a),
            'weight grad, fused kernel only': (forced('dw', triton_kan._DW_CONFIGS[0], dw), lambda: g.t() @ a),
            'weight grad, basis + cuBLAS only': (forced('dw', ('g', 32, 128, 1 << 26, 4, 1), dw), lambda: g.t() @ a),
            'weight grad, basis + cuBLAS in dW dtype': (forced('dw', ('g', 32, 128, 1 << 27, 4, 0), dw),
                                                        lambda: g.t() @ a),
            # the layers pass LayerNorm's fp32 output unrounded (numerics): the cost of reading x in fp32
            'forward, x fp32': (lambda: ops.basis_linear(x32, w, params, None, kind, inv_h), lambda: a @ b),
            'input grad, x fp32': (lambda: ops.basis_linear_dx(g, x32, w, params, kind, inv_h), lambda: g @ b.t()),
        }
        # the basis + cuBLAS form split in two: the expansion alone (whole M at once, per tile shape), whose time
        # plus the cuBLAS column is that form's floor
        first = 1 if kind == kernels.KIND_BSPLINE else 0
        for bm, bd, warps in EXPAND_TILES:
            timings[f'basis expansion alone, tile {bm}x{bd}, {warps} warps'] = (
                lambda bm=bm, bd=bd, warps=warps: triton_kan._expand(x, params, j, dt, kind, first, inv_h, bm, bd,
                                                                      warps), lambda: a @ b)
        for what, (fused, gemm) in timings.items():
            try:
                fused()  # compile + tune outside the timing
                ms = do_bench(fused, warmup=25, rep=100, return_mode='median')
                ms_gemm = do_bench(gemm, warmup=25, rep=100, return_mode='median')
                rows.append(dict(kernel=f'{label} {what}', shape=f'M={m} d={d} d\'={n} J={j}', ms=ms,
                                 tflops=flops / ms / 1e9, gemm_ms=ms_gemm, gemm_tflops=flops / ms_gemm / 1e9,
                                 gpu_ms=_gpu_ms(fused)))
            except Exception as exc:
                rows.append(dict(kernel=f'{label} {what}', shape=f'd={d} d\'={n}', ms=None, tflops=None,
                                 gemm_ms=None, gemm_tflops=None, note=f'failed: {type(exc).__name__}: {str(exc)[:300]}'))
        del x, x32, w, g, a, b
    return rows


def _gpu_ms(fn) -> Optional[float]:
    """fn's GPU time alone (CUDA-graph replay, median ms), or None where fn cannot be captured. The wall-clock ms
    beside it also counts the host's launches: the basis + cuBLAS forms issue several torch calls each, and on a slow
    host their wall time was twice their GPU time (NOTES.md, sixth session)."""
    from triton.testing import do_bench_cudagraph
    try:
        return do_bench_cudagraph(fn, rep=100, return_mode='median')
    except Exception:
        return None


def profile_cells(row: Dict, args) -> str:
    """' wall ms per step | host ms | GPU ms |' of a model row."""
    step = None if not row.get('train') else 1e3 * args.batch_size / row['train']
    return f" {fmt(step, '.1f')} | {fmt(row.get('host_ms'), '.1f')} | {fmt(row.get('gpu_ms'), '.1f')} |"


def fmt(v, spec='.2f', missing='—'):
    return missing if v is None else format(v, spec)


def ratio(v, base):
    return None if v is None or not base else v / base


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS)
    parser.add_argument('--baseline', default=BASELINE,
                        help='the ratio row (run first): e.g. deit_base_patch16_224 for the base KAN-ViTs')
    parser.add_argument('--modes', default='eager,compiled', help='comma list of eager, compiled')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--patch-size', type=int, default=0, help='every ViT\'s patch size (default: the model\'s)')
    parser.add_argument('--profile', action=argparse.BooleanOptionalAction, default=False,
                        help='host CPU and GPU kernel ms per training step (torch.profiler) in the model table')
    parser.add_argument('--tokens', type=int, default=256 * 197, help='tokens for the layer table')
    parser.add_argument('--amp-dtype', default='bfloat16', choices=['bfloat16', 'float16', 'none'])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--rounds', type=int, default=1,
                        help='> 1: build and warm every model row of a mode first, then time them in this many '
                             'interleaved rounds (--steps each); prints the per-round ratios to the baseline')
    parser.add_argument('--macs', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument('--layers', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument('--backends', default='auto,reference',
                        help='comma list of KAN backends: auto (the default path), fused, reference, and '
                             "auto-recompute / auto-fused (auto with FasterKAN's compiled form set to the recompute "
                             'form, the default, or to the kernels)')
    parser.add_argument('--compile-mode', default=None,
                        help="torch.compile mode of the compiled model rows, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument('--layer-modes', default=None, help='modes of the layer table (default: --modes)')
    parser.add_argument('--gemm-variants', action=argparse.BooleanOptionalAction, default=True,
                        help="let the autotuner pick the basis + cuBLAS variants (--no-gemm-variants: fused kernels "
                             "only, the A/B)")
    parser.add_argument('--kernels', action=argparse.BooleanOptionalAction, default=True,
                        help='per-kernel table (CUDA with the fused backend only)')
    args = parser.parse_args()
    device = torch.device(args.device)
    args.amp_dtype = None if args.amp_dtype == 'none' or device.type == 'cpu' else getattr(torch, args.amp_dtype)
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    layer_modes = [m.strip() for m in (args.layer_modes or args.modes).split(',') if m.strip()]
    backends = [b.strip() for b in args.backends.split(',') if b.strip()]
    for b in backends:
        if b not in BENCH_BACKENDS:
            parser.error(f'--backends: each must be one of {BENCH_BACKENDS}, got {b!r}')

    if not args.gemm_variants and device.type == 'cuda':
        from vision_kan.layers.kernels import triton_kan
        triton_kan.set_gemm_variants(False)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'absent'
    print(f'# {name}, torch {torch.__version__}, triton {triton_version}, timm {timm.__version__}, '
          f'{datetime.date.today()}, batch {args.batch_size}, {args.img_size} px, compile mode {args.compile_mode}'
          f'{f", patch {args.patch_size}" if args.patch_size else ""}, autocast {args.amp_dtype}'
          f'{"" if args.gemm_variants else ", fused kernels only (--no-gemm-variants)"}',
          flush=True)

    if args.kernels and device.type == 'cuda' and set(backends) - {'reference'}:
        print(f'\n| fused kernel | shape | ms | TFLOP/s | GPU ms (CUDA graph) | cuBLAS same-size GEMM ms | TFLOP/s |')
        print('|---|---|---|---|---|---|---|')
        for r in bench_kernels(args, device):
            print(f"| {r['kernel']} | {r['shape']} | {fmt(r['ms'], '.3f')} | {fmt(r['tflops'], '.0f')} | "
                  f"{fmt(r.get('gpu_ms'), '.3f')} | {fmt(r['gemm_ms'], '.3f')} | {fmt(r['gemm_tflops'], '.0f')} |"
                  f"{' ' + r.get('note', '')}",
                  flush=True)

    if args.layers:
        errors = {}
        if set(backends) - {'reference'} and 'reference' in backends:
            for label, make in layer_pairs().items():
                if _has_kan(make()):
                    try:
                        errors[label] = layer_errors(make, args, device)
                    except Exception as exc:
                        print(f'<!-- {label}: error check failed: {type(exc).__name__}: {str(exc)[:300]} -->')
        print(f'\n| layer: fc1+fc2, {args.tokens} tokens, fwd+bwd | backend | mode | ms | × nn.Linear (hidden 192) '
              '| peak GiB | fused vs ref: max abs err | max rel err |')
        print('|---|---|---|---|---|---|---|---|')
        for mode in layer_modes:
            rows = bench_layers(args, device, mode, backends)
            base = next((r['ms'] for r in rows if r['layer'] == 'nn.Linear (hidden 192)'), None)
            for r in rows:
                err = errors.get(r['layer'], {}) if r['backend'] != 'reference' else {}
                print(f"| {r['layer']} | {r['backend']} | {mode} | {fmt(r['ms'])} | {fmt(ratio(r['ms'], base))} | "
                      f"{fmt(r['mem'])} | {fmt(err.get('abs'), '.2e')} | {fmt(err.get('rel'), '.2e')} |"
                      f"{' ' + r['note'] if 'note' in r else ''}", flush=True)

    extra = ' step ms | host ms | GPU ms |' if args.profile else ''
    print(f'\n| model | backend | mode | params (M) | GMACs | train img/s | × | infer img/s | × | peak GiB | × |{extra}')
    print('|---|---|---|---|---|---|---|---|---|---|---|' + '---|' * (3 if args.profile else 0))
    macs_cache: Dict[str, float] = {}
    for mode in modes:
        base = None
        runs = [(args.baseline, '—')] if args.baseline in args.models else []
        runs += [(spec, b) for b in backends for spec in args.models if spec != args.baseline]
        if args.rounds > 1:
            if mode == 'compiled':
                torch._dynamo.reset()
                # every row's graphs live at once (train and eval per model): more than dynamo's default limit of
                # cache entries per code object (the rows share timm's forward code)
                torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(runs))
            rows = bench_models_interleaved(runs, args, device, mode, macs_cache)
        else:
            rows = None
        for k, (spec, backend_name) in enumerate(runs):
            if rows is None:
                row = bench_model(spec, args, device, mode, macs_cache, 'reference' if backend_name == '—'
                                  else backend_name)
                if mode == 'compiled':
                    torch._dynamo.reset()  # a fresh compile per row: no cache shared between backends
            else:
                row = rows[k]
            base = row if spec == args.baseline else base
            b = base or {}
            rounds = (' × per round: ' + ' '.join(f'{r:.2f}' for r in row['round_ratios'])
                      if row.get('round_ratios') and spec != args.baseline else '')
            print(f"| {spec} | {backend_name} | {mode} | {row['params']:.2f} | {fmt(row['gmacs'])} | "
                  f"{fmt(row['train'], '.0f')} | {fmt(ratio(row['train'], b.get('train')))} | "
                  f"{fmt(row['infer'], '.0f')} | {fmt(ratio(row['infer'], b.get('infer')))} | {fmt(row['mem'])} | "
                  f"{fmt(ratio(row['mem'], b.get('mem')))} |{profile_cells(row, args) if args.profile else ''}"
                  f"{' ' + row['note'] if 'note' in row else ''}{rounds}", flush=True)

    if set(backends) - {'reference'} and device.type == 'cuda':
        print_tuned_configs()


if __name__ == '__main__':
    main()
