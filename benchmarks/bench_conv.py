"""Speed and memory of every conv-KAN family against nn.Conv2d and torch-conv-kan's layers, measured in one run.

    python benchmarks/bench_conv.py --torch-conv-kan ../torch-conv-kan   # GPU: bf16 autocast, 64->64, 3x3, 56x56, b32
    python benchmarks/bench_conv.py --backend reference                  # the unfused basis, for comparison
    python benchmarks/bench_conv.py --check-fp16                         # + fp16 finiteness of every family
    python benchmarks/bench_conv.py --profile kagn --torch-conv-kan ../torch-conv-kan   # + top kernels of one family
    python benchmarks/bench_conv.py --device cpu --batch 8 --size 28 --threads 1 --timer process   # CPU, fp32

For each layer: forward + backward of one batch (parameter and input gradients, as in training), median of --reps
timed samples after --warmup, each sample --steps back-to-back steps between two CUDA synchronisations (1, the
default: every step alone; more: the host queues the next step while the GPU runs, as in training) per step; layers
timed round-robin so background load hits every layer alike. "GPU ms" is the kernel time per step from
torch.profiler (the sum of every kernel's duration): where wall time is well above it, the step is bound by the
host issuing the work. Memory (CUDA only) is each layer's working memory: the allocator's peak during one
forward + backward above what is alive before it (input, upstream gradient, parameters; the peak is reset once they
are made and nothing else is alive) minus the outputs that must exist after it (y, the input gradient and the
parameter gradients). With --torch-conv-kan PATH (a checkout of IvanDrokin/torch-conv-kan, never vendored here)
its layer of each family (its defaults, norms included) is timed and measured the same way in the same run, and the
table gives ours / its.

Targets (issue 17): time <= 0.5x torch-conv-kan's, and <= 3x nn.Conv2d for the polynomial families.
"""
import argparse
import datetime
import gc
import platform
import statistics
import sys
import time
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from vision_kan.layers import kernels
from vision_kan.layers.kan_conv_families import CONV_KAN_FAMILIES

LABELS = {
    'kan': 'KAN (B-spline, G=5, k=3)', 'fastkan': 'FastKAN (RBF, 8)', 'kaln': 'KALN (Legendre, deg 3)',
    'kacn': 'KACN (Chebyshev, deg 3)', 'kagn': 'KAGN (Gram, deg 3)', 'kajn': 'KAJN (Jacobi, deg 3)',
    'kabn': 'KABN (Bernstein, deg 3)', 'relukan': 'ReLU-KAN (G=5, k=3)', 'wavkan': 'WavKAN (Mexican hat, 4)',
    'bottleneck_kagn': 'Bottleneck KAGN (deg 3)',
}
POLYNOMIAL = ('kaln', 'kacn', 'kagn', 'kajn', 'kabn', 'bottleneck_kagn')  # the <= 3x nn.Conv2d target
NORMS = {'none': None, 'instance': nn.InstanceNorm2d, 'batch': nn.BatchNorm2d}
CLOCKS = {'wall': time.perf_counter, 'process': time.process_time}
# torch-conv-kan's 2-d layer of each family, for --torch-conv-kan (its defaults, norms included)
TCK_LAYERS = {
    'kan': 'KANConv2DLayer', 'fastkan': 'FastKANConv2DLayer', 'kaln': 'KALNConv2DLayer', 'kacn': 'KACNConv2DLayer',
    'kagn': 'KAGNConv2DLayer', 'kajn': 'KAJNConv2DLayer', 'kabn': 'KABNConv2DLayer', 'relukan': 'ReLUKANConv2DLayer',
    'wavkan': 'WavKANConv2DLayer', 'bottleneck_kagn': 'BottleNeckKAGNConv2DLayer',
}


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class Step:
    """One training-style forward + backward of a layer: gradients of the parameters and of x, freshly allocated.
    The upstream gradient is made on the first call and kept (it counts as an input)."""

    def __init__(self, layer: nn.Module, x: torch.Tensor, amp: Optional[torch.dtype]):
        self.layer, self.x, self.amp, self.grad = layer, x, amp, None

    def __call__(self) -> None:
        self.layer.zero_grad(set_to_none=True)
        self.x.grad = None
        with torch.autocast(self.x.device.type, dtype=self.amp, enabled=self.amp is not None):
            y = self.layer(self.x)
        if self.grad is None:
            self.grad = torch.randn_like(y)
        y.backward(self.grad)

    def output_bytes(self) -> int:
        """Bytes of what a step leaves behind: y (shaped like the upstream gradient), x.grad, parameter grads."""
        grads = [self.x.grad] + [p.grad for p in self.layer.parameters()]
        return sum(t.numel() * t.element_size() for t in [self.grad] + grads if t is not None)


def time_it(fn: Callable[[], None], device: torch.device, steps: int = 1,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call of `steps` calls run back to back (clock: wall time, or time.process_time for CPU seconds on
    a busy machine)."""
    synchronize(device)
    start = clock()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (clock() - start) / steps


def kernel_time(step: 'Step', device: torch.device, steps: int = 5) -> Optional[float]:
    """Seconds of GPU kernel time per step (torch.profiler, every CUDA kernel's duration summed), None on CPU."""
    if device.type != 'cuda':
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile as run_profile
    synchronize(device)
    with run_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    total_us = sum(e.self_device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return total_us * 1e-6 / steps


def working_memory(step: Step, device: torch.device) -> Optional[float]:
    """Peak bytes of one step above its inputs and outputs (CUDA allocator), None on other devices."""
    if device.type != 'cuda':
        return None
    step.layer.zero_grad(set_to_none=True)
    step.x.grad = None
    gc.collect()
    torch.cuda.empty_cache()
    synchronize(device)
    before = torch.cuda.memory_allocated(device)  # x, upstream gradient, parameters (+ buffers)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before - step.output_bytes())


def build(name: str, channels: int, norm: Optional[type], act: Optional[type], tck=None) -> nn.Module:
    """'conv', a family name, or 'tck:<family>' (torch-conv-kan's layer from the --torch-conv-kan checkout)."""
    if name == 'conv':
        return nn.Conv2d(channels, channels, 3, padding=1)
    if name.startswith('tck:'):
        return getattr(tck, TCK_LAYERS[name[4:]])(channels, channels, 3, padding=1)
    return CONV_KAN_FAMILIES[name](channels, channels, 3, padding=1, ndim=2, norm_layer=norm, act_layer=act)


def make_step(name: str, args, device: torch.device, amp: Optional[torch.dtype], tck=None) -> Step:
    norm, act = NORMS[args.norm], (nn.SiLU if args.act == 'silu' else None)
    torch.manual_seed(0)
    layer = kernels.set_backend(build(name, args.channels, norm, act, tck), args.backend).to(device)
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    if args.channels_last:  # the input (and nn.Conv2d's weight); conv-KAN weights are 5-d, their layers adapt
        x = x.contiguous(memory_format=torch.channels_last)
        if isinstance(layer, nn.Conv2d):
            layer = layer.to(memory_format=torch.channels_last)
    return Step(layer, x.requires_grad_(True), amp)


def measure(names, args, device: torch.device, amp: Optional[torch.dtype], tck=None) -> Dict[str, dict]:
    """Times round-robin, then the working memory of each layer alone on the device. A layer whose forward or
    backward raises gets an 'error' row."""
    steps, failed = {}, {}
    for name in names:
        try:
            steps[name] = make_step(name, args, device, amp, tck)
            for _ in range(max(args.warmup, 1)):  # cuDNN autotuning, torch.compile of the fused basis
                steps[name]()
        except Exception as e:  # noqa: BLE001 - reported in the table (torch-conv-kan's KABN backward fails)
            failed[name] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:60]}')
            steps.pop(name, None)
    times = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(time_it(step, device, args.steps, CLOCKS[args.timer]))
    rows = {}
    for name, step in steps.items():
        gpu = kernel_time(step, device)
        rows[name] = dict(ms=statistics.median(times[name]) * 1e3, gpu_ms=None if gpu is None else gpu * 1e3,
                          params=sum(p.numel() for p in step.layer.parameters()))
    names_ok = list(steps)
    del steps
    for name in names_ok:
        step = make_step(name, args, device, amp, tck)
        step()  # warm: cuDNN autotuning, lazy allocations
        memory = working_memory(step, device)
        rows[name]['mib'] = None if memory is None else memory / 2 ** 20
        del step
        print(f'{name}: {rows[name]}', file=sys.stderr)
    return {name: rows[name] if name in rows else failed[name] for name in names}


def profile(name: str, args, device: torch.device, amp: Optional[torch.dtype], tck=None) -> str:
    """torch.profiler's kernel table of 3 steps of one layer (after warm-up): what bounds its time."""
    from torch.profiler import ProfilerActivity, profile as run_profile
    step = make_step(name, args, device, amp, tck)
    for _ in range(max(args.warmup, 1)):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with run_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        synchronize(device)
    key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70)


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'CPU'


def check_fp16(device: torch.device, backend: str) -> str:
    """fp16 weights + input (no autocast) and fp16 autocast: forward and input gradient finite for every family on
    values from -1e3 to 1e3, including the points where tanh rounds to +-1 in fp16 (|x| >= 4.5)."""
    values = torch.cat([torch.linspace(-1e3, 1e3, 2000), torch.linspace(-6, 6, 4000),
                        torch.tensor([-4.5, -1.0, 1.0, 4.5, 0.0, -0.9995, 0.9995, 8.0])])
    x0 = values[:8 * 750].view(2, 3, 25, 40).to(device)  # 6000 values
    lines = ['| family | fp16 forward finite | fp16 input grad finite | fp16 autocast forward finite |',
             '|---|---|---|---|']
    for name in CONV_KAN_FAMILIES:
        torch.manual_seed(0)
        layer = CONV_KAN_FAMILIES[name](3, 4, 3, padding=1, kernel_backend=backend).to(device)
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


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b <= 0 else a / b


def table(rows: Dict[str, dict]) -> str:
    """Markdown: every layer's time and working memory, as multiples of nn.Conv2d and (for our families, when
    torch-conv-kan was measured) of its layer, with the targets."""
    base = rows['conv']
    compare = any(n.startswith('tck:') for n in rows)
    head = '| layer | params | fwd+bwd ms | time x conv | GPU ms | working MiB |'
    sep = '|---|---|---|---|---|---|'
    if compare:
        head += ' time x torch-conv-kan | GPU time x torch-conv-kan | memory x torch-conv-kan | targets met |'
        sep += '---|---|---|---|'
    lines = [head, sep]
    for name, r in rows.items():
        if 'error' in r:
            lines.append(f"| {label(name)} | | fails: {r['error']} | | | |" + (' | | | |' if compare else ''))
            continue
        t = r['ms'] / base['ms']
        line = (f"| {label(name)} | {r['params']:,} | {r['ms']:.2f} | {t:.2f} | {fmt(r['gpu_ms'])} | "
                f"{fmt(r['mib'], 1)} |")
        if compare and not name.startswith('tck:') and name != 'conv':
            ref = rows.get(f'tck:{name}', {})
            if 'error' in ref:
                line += ' theirs fails | theirs fails | theirs fails | works (theirs fails) |'
            else:
                tt, mm = _ratio(r['ms'], ref.get('ms')), _ratio(r['mib'], ref.get('mib'))
                gg = _ratio(r['gpu_ms'], ref.get('gpu_ms'))
                ok_time = tt is not None and tt <= 0.5 and (name not in POLYNOMIAL or t <= 3.0)
                goal = 'time <= 0.5x, <= 3x conv' if name in POLYNOMIAL else 'time <= 0.5x'
                line += f" {fmt(tt)} | {fmt(gg)} | {fmt(mm)} | {'yes' if ok_time else 'no'} ({goal}) |"
        elif compare:
            line += ' | | | |'
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
    p.add_argument('--backend', choices=kernels.BACKENDS, default='auto',
                   help="basis path of our layers: auto (fused on CUDA), reference, fused")
    p.add_argument('--channels-last', action='store_true', help='NHWC input and weights for every layer')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--reps', type=int, default=10)
    p.add_argument('--steps', type=int, default=1, help='back-to-back steps per timed sample')
    p.add_argument('--check-fp16', action='store_true', help='also print the fp16 finiteness table')
    p.add_argument('--timer', choices=sorted(CLOCKS), default='wall',
                   help='wall time, or process CPU time (CPU runs on a machine shared with other jobs)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU runs)')
    p.add_argument('--torch-conv-kan', default=None, metavar='PATH',
                   help='a checkout of torch-conv-kan: also time and measure its layers in the same run')
    p.add_argument('--profile', nargs='*', default=[], metavar='FAMILY',
                   help="also print the kernel profile of these families (ours, and torch-conv-kan's if given)")
    args = p.parse_args(argv)
    unknown = [f for f in args.families + args.profile if f not in CONV_KAN_FAMILIES]
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
          f'{"channels_last" if args.channels_last else "NCHW"}, backend {args.backend}, '
          f'norm {args.norm}, act {args.act}, median of {args.reps} samples of {args.steps} steps, '
          f'{args.timer} clock\n')
    print(table(rows))
    if args.check_fp16:
        print('\nfp16 check (values -1e3..1e3 incl. |x| >= 4.5 where tanh rounds to 1):\n')
        print(check_fp16(device, args.backend))
    for family in args.profile:
        for which in [family] + ([f'tck:{family}'] if tck is not None else []):
            print(f'\nprofile of {label(which)} (3 steps):\n')
            print(profile(which, args, device, amp, tck))
    return 0


if __name__ == '__main__':
    sys.exit(main())
