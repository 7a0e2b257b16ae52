"""Speed and memory of every conv-KAN family against nn.Conv2d, measured in one run.

    python benchmarks/bench_conv.py                          # GPU: bf16 autocast, 64->64, 3x3, 56x56, batch 32
    python benchmarks/bench_conv.py --check-fp16             # ... and an fp16 finiteness table for every family
    python benchmarks/bench_conv.py --device cpu --batch 8 --size 28 --threads 1 --timer process   # CPU, fp32
    python benchmarks/bench_conv.py --torch-conv-kan ../torch-conv-kan --norm instance --act silu  # + its layers

For each layer: forward + backward of one batch (parameter and input gradients, as in training), median of
--reps timed repetitions after --warmup (CUDA synchronised; layers timed round-robin), and peak memory of one
forward + backward (torch.cuda.max_memory_allocated; on CPU the peak of torch.profiler's memory timeline), each alone
on the device. Both are also given as
multiples of nn.Conv2d(64, 64, 3, padding=1) in the same run. Peak memory counts everything alive: input,
parameters, activations, gradients. The torch-conv-kan columns are its figures from ANCHORS.md (H100, bf16
autocast, same shapes, with its default norms), so they compare only with a GPU bf16 run of this script.
"""
import argparse
import datetime
import platform
import statistics
import sys
import time
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from vision_kan.layers.kan_conv_families import CONV_KAN_FAMILIES

# torch-conv-kan on the H100 (ANCHORS.md): (time x conv, memory x conv); None: its backward fails
TORCH_CONV_KAN = {
    'kan': (17.3, 23), 'fastkan': (3.7, 10.4), 'kaln': (5.0, 34), 'kacn': (2.1, 5.8), 'kagn': (3.5, 34),
    'kajn': (3.4, 34), 'kabn': None, 'relukan': (5.1, 12.4), 'wavkan': (58.7, 110), 'bottleneck_kagn': (4.5, 5.4),
}
LABELS = {
    'kan': 'KAN (B-spline, G=5, k=3)', 'fastkan': 'FastKAN (RBF, 8)', 'kaln': 'KALN (Legendre, deg 3)',
    'kacn': 'KACN (Chebyshev, deg 3)', 'kagn': 'KAGN (Gram, deg 3)', 'kajn': 'KAJN (Jacobi, deg 3)',
    'kabn': 'KABN (Bernstein, deg 3)', 'relukan': 'ReLU-KAN (G=5, k=3)', 'wavkan': 'WavKAN (Mexican hat, 4)',
    'bottleneck_kagn': 'Bottleneck KAGN (deg 3)',
}
NORMS = {'none': None, 'instance': nn.InstanceNorm2d, 'batch': nn.BatchNorm2d}
CLOCKS = {'wall': time.perf_counter, 'process': time.process_time}


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, warmup: int, reps: int,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds per call (clock: wall time, or time.process_time for CPU seconds on a busy machine)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        synchronize(device)
        times.append(clock() - start)
    return statistics.median(times)


def peak_memory(fn: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak bytes alive during one call: the CUDA allocator's peak, or the CPU profiler's memory timeline."""
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return float(torch.cuda.max_memory_allocated(device))
    try:  # the timeline's builder is private API: report 'not measured' if it moves
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action, MemoryProfile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        current = peak = 0
        for _, action, _, size in MemoryProfile(prof.profiler.kineto_results).timeline:
            if action in (Action.PREEXISTING, Action.CREATE):
                current += size
            elif action == Action.DESTROY:
                current -= size
            peak = max(peak, current)
        return float(peak)
    except Exception as e:  # noqa: BLE001 - any failure here only loses the memory column
        print(f'memory not measured on CPU: {e}', file=sys.stderr)
        return None


# torch-conv-kan's 2-d layer of each family, for --torch-conv-kan (its defaults, norms included)
TCK_LAYERS = {
    'kan': 'KANConv2DLayer', 'fastkan': 'FastKANConv2DLayer', 'kaln': 'KALNConv2DLayer', 'kacn': 'KACNConv2DLayer',
    'kagn': 'KAGNConv2DLayer', 'kajn': 'KAJNConv2DLayer', 'kabn': 'KABNConv2DLayer', 'relukan': 'ReLUKANConv2DLayer',
    'wavkan': 'WavKANConv2DLayer', 'bottleneck_kagn': 'BottleNeckKAGNConv2DLayer',
}


def build(name: str, channels: int, norm: Optional[type], act: Optional[type], tck=None) -> nn.Module:
    """'conv', a family name, or 'tck:<family>' (torch-conv-kan's layer from the --torch-conv-kan checkout)."""
    if name == 'conv':
        return nn.Conv2d(channels, channels, 3, padding=1)
    if name.startswith('tck:'):
        return getattr(tck, TCK_LAYERS[name[4:]])(channels, channels, 3, padding=1)
    return CONV_KAN_FAMILIES[name](channels, channels, 3, padding=1, ndim=2, norm_layer=norm, act_layer=act)


def step_fn(layer: nn.Module, x: torch.Tensor, amp: Optional[torch.dtype]) -> Callable[[], None]:
    """One training-style forward + backward: gradients of the parameters and of x, freshly allocated."""
    grad = None

    def step():
        nonlocal grad
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            y = layer(x)
        if grad is None:
            grad = torch.randn_like(y)
        y.backward(grad)
    return step


def measure(names, args, device: torch.device, amp: Optional[torch.dtype], tck=None) -> Dict[str, dict]:
    """Times round-robin (one step of each layer per round, so background load hits every layer alike), then peak
    memory of each layer alone on the device. A layer whose forward or backward raises gets an 'error' row."""
    norm, act = NORMS[args.norm], (nn.SiLU if args.act == 'silu' else None)

    def make(name):
        torch.manual_seed(0)
        layer = build(name, args.channels, norm, act, tck).to(device)
        x = torch.randn(args.batch, args.channels, args.size, args.size, device=device, requires_grad=True)
        return layer, step_fn(layer, x, amp)

    steps, failed = {}, {}
    for name in names:
        try:
            steps[name] = make(name)
            for _ in range(max(args.warmup, 1)):
                steps[name][1]()
        except Exception as e:  # noqa: BLE001 - reported in the table (torch-conv-kan's KABN backward fails)
            failed[name] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:60]}')
            steps.pop(name, None)
    order, names = list(names), [n for n in names if n not in failed]
    times = {name: [] for name in names}
    for _ in range(args.reps):
        for name, (_, step) in steps.items():
            times[name].append(time_it(step, device, 0, 1, CLOCKS[args.timer]))
    rows = {name: dict(ms=statistics.median(times[name]) * 1e3, params=sum(p.numel() for p in layer.parameters()))
            for name, (layer, _) in steps.items()}
    del steps
    for name in names:
        layer, step = make(name)
        step()  # warm: cudnn autotuning, lazy allocations
        layer.zero_grad(set_to_none=True)
        memory = peak_memory(step, device)
        rows[name]['mib'] = None if memory is None else memory / 2 ** 20
        del layer, step
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        print(f'{name}: {rows[name]}', file=sys.stderr)
    return {name: rows[name] if name in rows else failed[name] for name in order}


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'CPU'


def check_fp16(device: torch.device) -> str:
    """fp16 weights + input (no autocast) and fp16 autocast: forward and input gradient finite for every family on
    values from -1e3 to 1e3, including the points where tanh rounds to +-1 in fp16 (|x| >= 4.5)."""
    values = torch.cat([torch.linspace(-1e3, 1e3, 2000), torch.linspace(-6, 6, 4000),
                        torch.tensor([-4.5, -1.0, 1.0, 4.5, 0.0, -0.9995, 0.9995, 8.0])])
    x0 = values[:8 * 750].view(2, 3, 25, 40).to(device)  # 6000 values
    lines = ['| family | fp16 forward finite | fp16 input grad finite | fp16 autocast forward finite |',
             '|---|---|---|---|']
    for name in CONV_KAN_FAMILIES:
        torch.manual_seed(0)
        layer = CONV_KAN_FAMILIES[name](3, 4, 3, padding=1).to(device)
        with torch.autocast(device.type, dtype=torch.float16):
            auto = bool(torch.isfinite(layer(x0)).all())
        half = layer.half()
        x = x0.half().requires_grad_(True)
        y = half(x)
        y.float().sum().backward()
        lines.append(f'| {name} | {bool(torch.isfinite(y).all())} | {bool(torch.isfinite(x.grad).all())} | {auto} |')
    return '\n'.join(lines)


def fmt(v: Optional[float], digits: int = 2) -> str:
    return 'not measured' if v is None else f'{v:.{digits}f}'


def label(name: str) -> str:
    if name == 'conv':
        return 'nn.Conv2d'
    if name.startswith('tck:'):
        return f'torch-conv-kan {TCK_LAYERS[name[4:]]}'
    return LABELS[name]


def table(rows: Dict[str, dict], compare: bool) -> str:
    """Markdown table; compare adds torch-conv-kan's H100 multiples from ANCHORS.md and whether half is reached."""
    base = rows['conv']
    head = '| layer | params | fwd+bwd ms | time x conv | peak MiB | memory x conv |'
    sep = '|---|---|---|---|---|---|'
    if compare:
        head += ' torch-conv-kan time x / memory x (ANCHORS.md) | target (half) met |'
        sep += '---|---|'
    lines = [head, sep]
    for name, r in rows.items():
        if 'error' in r:
            lines.append(f"| {label(name)} | | fails: {r['error']} | | | |" + (' | |' if compare else ''))
            continue
        t = r['ms'] / base['ms']
        m = None if r['mib'] is None or base['mib'] is None else r['mib'] / base['mib']
        line = f"| {label(name)} | {r['params']:,} | {r['ms']:.2f} | {t:.2f} | {fmt(r['mib'], 1)} | {fmt(m)} |"
        if compare and name in TORCH_CONV_KAN:
            ref = TORCH_CONV_KAN[name]
            if ref is None:
                line += ' backward fails | yes (works) |'
            else:
                ok = t <= ref[0] / 2 and m is not None and m <= ref[1] / 2
                line += f' {ref[0]} / {ref[1]} | {"yes" if ok else "no"} (time {t / ref[0]:.2f}, memory ' \
                        f'{fmt(None if m is None else m / ref[1])} of its multiples) |'
        elif compare:
            line += ' | |'
        lines.append(line)
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=56)
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--amp', choices=['auto', 'none', 'bf16', 'fp16'], default='auto',
                   help='autocast dtype (auto: bf16 on CUDA, none on CPU)')
    p.add_argument('--norm', choices=sorted(NORMS), default='none', help='norm_layer of every KAN layer')
    p.add_argument('--act', choices=['none', 'silu'], default='none', help='act_layer of every KAN layer')
    p.add_argument('--families', nargs='+', default=list(CONV_KAN_FAMILIES), metavar='FAMILY')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--reps', type=int, default=10)
    p.add_argument('--check-fp16', action='store_true', help='also print the fp16 finiteness table')
    p.add_argument('--timer', choices=sorted(CLOCKS), default='wall',
                   help='wall time, or process CPU time (CPU runs on a machine shared with other jobs)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU runs)')
    p.add_argument('--torch-conv-kan', default=None, metavar='PATH',
                   help="a checkout of torch-conv-kan: also time its layers (its defaults) in the same run")
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in CONV_KAN_FAMILIES]
    if unknown:
        print(f'bench_conv: unknown families {unknown}; choose from {sorted(CONV_KAN_FAMILIES)}', file=sys.stderr)
        return 2
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        print(f'bench_conv: device {args.device!r} is not usable: {e}', file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    amp = {'auto': torch.bfloat16 if device.type == 'cuda' else None, 'none': None, 'bf16': torch.bfloat16,
           'fp16': torch.float16}[args.amp]
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    names, tck = ['conv'] + args.families, None
    if args.torch_conv_kan:
        try:
            sys.path.insert(0, args.torch_conv_kan)
            import kan_convs as tck  # noqa: E402 - the user's checkout, never vendored here
        except ImportError as e:
            print(f'bench_conv: cannot import kan_convs from {args.torch_conv_kan!r}: {e}', file=sys.stderr)
            return 2
        names = ['conv'] + [n for f in args.families for n in (f, f'tck:{f}')]
    rows = measure(names, args, device, amp, tck)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_name()
    print(f'Device: {name} ({device.type}, {torch.get_num_threads()} CPU threads), '
          f'date {datetime.date.today().isoformat()}, torch {torch.__version__}, '
          f'autocast {amp if amp is not None else "off (fp32)"}, batch {args.batch}, '
          f'{args.channels}->{args.channels} channels, 3x3, padding 1, {args.size}x{args.size}, '
          f'norm {args.norm}, act {args.act}, median of {args.reps} reps, {args.timer} clock\n')
    compare = (device.type == 'cuda' and amp == torch.bfloat16 and args.batch == 32 and args.size == 56
               and args.channels == 64)
    print(table(rows, compare))
    if args.check_fp16:
        print('\nfp16 check (values -1e3..1e3 incl. |x| >= 4.5 where tanh rounds to 1):\n')
        print(check_fp16(device))
    return 0


if __name__ == '__main__':
    sys.exit(main())
