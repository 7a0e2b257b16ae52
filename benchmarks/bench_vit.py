"""Speed and memory of the KAN-ViTs against their DeiT-tiny twin, measured in one run.

    python benchmarks/bench_vit.py                                   # GPU: bf16 autocast, 224 px, batch 256
    python benchmarks/bench_vit.py --device cpu --batch-size 8 --steps 3 --tokens 2048 --modes eager

Prints two markdown tables:
  * whole models: params, GMACs (fvcore convention: one multiply-add = one "flop"), train img/s (forward, backward,
    AdamW step), infer img/s, peak train memory, each also as a ratio to DeiT-tiny in the same mode;
  * layers: fc1 + fc2 of one ViT-tiny block (tokens x 192 -> hidden -> 192), forward + backward, against nn.Linear.
Modes: `eager` and `compiled` (torch.compile of the whole model). Compare rows only within a mode.
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
from vision_kan.layers import FasterKANLinear, KANLinear

BASELINE = 'deit_tiny_patch16_224'
DEFAULT_MODELS = [BASELINE, 'vit_fasterkan_tiny', 'vit_kan_tiny', 'vit_kan_tiny@mlp_ratio=4']


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


def peak_memory(fn: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak allocated GiB during one call (CUDA only)."""
    if device.type != 'cuda':
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 30


def count_macs(model: nn.Module, img_size: int) -> Optional[float]:
    """GMACs of one image (fvcore if installed, else torch's FlopCounterMode / 2), attention matmuls included."""
    x = torch.randn(1, 3, img_size, img_size)
    model = model.eval()
    # fvcore does not see inside scaled_dot_product_attention: count the plain attention path
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')}
    for m in fused:
        m.fused_attn = False
    try:
        from fvcore.nn import FlopCountAnalysis
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total() / 1e9
    except ImportError:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() / 2e9
    finally:
        for m, flag in fused.items():
            m.fused_attn = flag


def bench_model(spec: str, args, device: torch.device, mode: str) -> Dict[str, float]:
    name, kwargs = parse_model(spec)
    model = timm.create_model(name, img_size=args.img_size, **kwargs)
    row = {'params': sum(p.numel() for p in model.parameters()) / 1e6}
    row['gmacs'] = count_macs(model, args.img_size) if args.macs else None
    model = model.to(device).train()
    net = torch.compile(model) if mode == 'compiled' else model
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

    try:
        row['train'] = args.batch_size / time_it(train_step, device, args.warmup, args.steps)
        row['mem'] = peak_memory(train_step, device)
        model.eval()
        row['infer'] = args.batch_size / time_it(infer_step, device, args.warmup, args.steps)
    except torch.OutOfMemoryError:
        row.update(train=None, mem=None, infer=None, note='out of memory')
    del net, model, opt
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return row


def bench_layers(args, device: torch.device, mode: str) -> List[Dict]:
    """fc1 + fc2 of one ViT-tiny block on (tokens, 192), forward + backward."""
    dim = 192
    pairs = {
        'nn.Linear (mlp_ratio 4)': lambda: nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
        'nn.Linear (hidden 192)': lambda: nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)),
        'FasterKANLinear (hidden 192)': lambda: nn.Sequential(FasterKANLinear(dim, dim), FasterKANLinear(dim, dim)),
        'KANLinear (hidden 192)': lambda: nn.Sequential(KANLinear(dim, dim), KANLinear(dim, dim)),
        'KANLinear (hidden 768)': lambda: nn.Sequential(KANLinear(dim, 4 * dim), KANLinear(4 * dim, dim)),
    }
    autocast = torch.autocast(device.type, dtype=args.amp_dtype) if args.amp_dtype else contextlib.nullcontext()
    rows = []
    for label, make in pairs.items():
        layer = make().to(device)
        net = torch.compile(layer) if mode == 'compiled' else layer
        x = torch.randn(args.tokens, dim, device=device, requires_grad=True)

        def step():
            with autocast:
                y = net(x)
            y.float().sum().backward()

        try:
            rows.append(dict(layer=label, ms=1e3 * time_it(step, device, args.warmup, args.steps),
                             mem=peak_memory(step, device)))
        except torch.OutOfMemoryError:
            rows.append(dict(layer=label, ms=None, mem=None))
        del net, layer
    return rows


def fmt(v, spec='.2f', missing='—'):
    return missing if v is None else format(v, spec)


def ratio(v, base):
    return None if v is None or not base else v / base


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS)
    parser.add_argument('--modes', default='eager,compiled', help='comma list of eager, compiled')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--tokens', type=int, default=256 * 197, help='tokens for the layer table')
    parser.add_argument('--amp-dtype', default='bfloat16', choices=['bfloat16', 'float16', 'none'])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--macs', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument('--layers', action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    args.amp_dtype = None if args.amp_dtype == 'none' or device.type == 'cpu' else getattr(torch, args.amp_dtype)
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]

    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'# {name}, torch {torch.__version__}, timm {timm.__version__}, {datetime.date.today()}, '
          f'batch {args.batch_size}, {args.img_size} px, autocast {args.amp_dtype}')
    print('\n| model | mode | params (M) | GMACs | train img/s | × | infer img/s | × | peak GiB | × |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for mode in modes:
        base = None
        for spec in args.models:
            row = bench_model(spec, args, device, mode)
            base = row if spec == BASELINE else base
            b = base or {}
            print(f"| {spec} | {mode} | {row['params']:.2f} | {fmt(row['gmacs'])} | {fmt(row['train'], '.0f')} | "
                  f"{fmt(ratio(row['train'], b.get('train')))} | {fmt(row['infer'], '.0f')} | "
                  f"{fmt(ratio(row['infer'], b.get('infer')))} | {fmt(row['mem'])} | "
                  f"{fmt(ratio(row['mem'], b.get('mem')))} |{' ' + row['note'] if 'note' in row else ''}", flush=True)

    if args.layers:
        print(f'\n| layer: fc1+fc2, {args.tokens} tokens, fwd+bwd | mode | ms | × nn.Linear (hidden 192) | peak GiB |')
        print('|---|---|---|---|---|')
        for mode in modes:
            rows = bench_layers(args, device, mode)
            base = rows[1]['ms']
            for r in rows:
                print(f"| {r['layer']} | {mode} | {fmt(r['ms'])} | {fmt(ratio(r['ms'], base))} | {fmt(r['mem'])} |",
                      flush=True)


if __name__ == '__main__':
    main()
