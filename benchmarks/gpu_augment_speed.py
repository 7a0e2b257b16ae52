"""Speed of the GPU backend's batched augmentations (vision_kan.train.gpu_augment) in images per second.

Synthetic ImageNet-shaped photos (500x375, JPEG quality 90, made here) are decoded on the device in one batched
`torchvision.io.decode_jpeg` call, then each transform runs on the batch; the CPU path (timm's PIL transforms, one
process, one thread) is timed on the same images for scale. Also checks that the transform never synchronises the
device (torch.cuda.set_sync_debug_mode('error')).

    python benchmarks/gpu_augment_speed.py                       # CUDA: batch 256, 224 px and CIFAR's 32 px
    python benchmarks/gpu_augment_speed.py --device cpu --batch 8 --reps 1 --size 64
    python benchmarks/gpu_augment_speed.py --profile 8          # + host ms and GPU kernel ms per batch, top kernels
    python benchmarks/gpu_augment_speed.py --resample auto,matmul   # each transform with either crop + resize form

Wall ms (synchronised) is what a lone loader gets; host ms (calls queued without waiting) and GPU kernel ms (the
sum of the kernels' durations in torch.profiler) say which side bounds it, and the kernel ms is what the
augmentations take from a training step that shares the GPU.
"""
from collections import defaultdict
import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg

from vision_kan.train.data import TransformConfig, build_transform
from vision_kan.train import gpu_resample
from vision_kan.train.gpu_augment import build_gpu_transform


def synthetic_photos(n: int, h: int, w: int, seed: int = 0) -> List[torch.Tensor]:
    """uint8 (3, h, w) images: a random 8x8 colour field upsampled, plus noise (JPEG-compressible like photos)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        field = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode='bicubic', align_corners=False)
        out.append(((field + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)[0] * 255).to(torch.uint8))
    return out


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median seconds of fn() over reps, after one warm-up, with the device synchronised around each."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def host_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Mean host ms per call with the calls queued back to back (no sync between them)."""
    fn()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t0) / reps
    torch.cuda.synchronize(device)
    return host * 1e3


def kernel_ms(fn: Callable[[], object], device: torch.device, reps: int) -> Tuple[float, Dict[str, float]]:
    """GPU ms per call: the summed durations of the device events (kernels and copies) torch.profiler records,
    and the same per kernel name."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize(device)
    per_name: Dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            per_name[e.name] += e.time_range.elapsed_us() / 1e3 / reps
    return sum(per_name.values()), per_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--size', type=int, default=224, help='train/eval output side (DeiT: 224)')
    ap.add_argument('--reps', type=int, default=10)
    ap.add_argument('--cpu-images', type=int, default=64, help='images timed through the CPU (PIL) path')
    ap.add_argument('--profile', type=int, default=0, metavar='K',
                    help='CUDA: also host ms and GPU kernel ms per batch, and the top K kernels of each row')
    ap.add_argument('--resample', default='auto',
                    help="comma list of gpu_resample.RESAMPLE_METHOD values to run the transforms with: 'auto' (the "
                         "Triton passes on CUDA) and/or 'matmul'")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'device: {name}; torch {torch.__version__}; batch {args.batch}; {args.reps} reps (median)')

    photos = synthetic_photos(args.batch, 375, 500)
    jpegs = [encode_jpeg(p, quality=90) for p in photos]
    decoded = decode_jpeg(jpegs, device=device)
    stacked = torch.stack(decoded)
    cifar = torch.stack(synthetic_photos(args.batch, 32, 32, seed=1)).to(device)
    deit = TransformConfig(input_size=args.size)
    rows = [('decode_jpeg, batched (500x375)', lambda: decode_jpeg(jpegs, device=device))]
    if device.type == 'cuda':  # nvjpeg copies the bytes to the device itself: from pinned memory, does it go faster?
        pinned = [j.pin_memory() for j in jpegs]
        rows.append(('decode_jpeg, batched, bytes in pinned memory', lambda: decode_jpeg(pinned, device=device)))
    cases = [
        ('train crop+flip+normalise (aa none, reprob 0)',
         TransformConfig(input_size=args.size, aa='none', color_jitter=0.0, reprob=0.0), True, decoded),
        ('train DeiT (RRC, flip, RandAugment m9-mstd0.5-inc1, erasing 0.25), list', deit, True, decoded),
        ('train DeiT, (B, 3, 375, 500) tensor', deit, True, stacked),
        ('train colour jitter 0.3 instead of RandAugment', TransformConfig(input_size=args.size, aa='none'), True,
         decoded),
        ('train ThreeAugment (DeiT III: RRC, flip, grey/solarize/blur, jitter)',
         TransformConfig(input_size=args.size, three_augment=True), True, decoded),
        ('eval (resize 256 + centre crop)', deit, False, decoded),
        ('train CIFAR 32 px (pad crop, flip, RandAugment, erasing), tensor',
         TransformConfig(input_size=32, train_crop='pad'), True, cifar),
    ]
    gen = torch.Generator().manual_seed(0)
    methods = [m.strip() for m in args.resample.split(',') if m.strip()]

    def with_method(method, fn):
        def run():
            gpu_resample.RESAMPLE_METHOD = method
            try:
                return fn()
            finally:
                gpu_resample.RESAMPLE_METHOD = 'auto'
        return run
    for label, cfg, is_train, images in cases:
        tf = build_gpu_transform(is_train, cfg)
        for method in methods:
            tag = f', resample {method}' if len(methods) > 1 else ''
            rows.append((label + tag, with_method(method, lambda tf=tf, images=images: tf(images, gen))))
    if device.type == 'cuda' and 'auto' in methods:
        # the two crop + resize forms on DeiT's train crops of these images: uint8 outputs, float32 matmuls
        tf = build_gpu_transform(True, deit)
        params = tf.sample_params([tuple(im.shape[1:]) for im in decoded], torch.Generator().manual_seed(1))
        a = gpu_resample.resample_boxes(decoded, params.y, params.x, args.size, out_dtype=torch.uint8)
        b = gpu_resample.resample_boxes(decoded, params.y, params.x, args.size, dtype=torch.float32,
                                        out_dtype=torch.uint8)
        d = (a.int() - b.int()).abs()
        print(f'crop + resize, Triton passes against float32 matmuls (uint8, {args.batch} DeiT train crops): '
              f'max |diff| {int(d.max())}, equal {100 * float((d == 0).float().mean()):.3f} % of pixels')
    print(f'| {"step":72s} | ms / batch | img/s |')
    print(f'|{"-" * 74}|-----------:|------:|')
    for label, fn in rows:
        sec = timed(fn, device, args.reps)
        print(f'| {label:72s} | {sec * 1e3:10.2f} | {args.batch / sec:7.0f} |')

    if args.profile and device.type == 'cuda':
        tops = []
        print(f'\n| {"step":72s} | wall ms | host ms | GPU kernel ms |')
        print(f'|{"-" * 74}|--------:|--------:|--------------:|')
        for label, fn in rows:
            wall, host = timed(fn, device, args.reps) * 1e3, host_ms(fn, device, args.reps)
            gpu, per_name = kernel_ms(fn, device, args.reps)
            print(f'| {label:72s} | {wall:7.2f} | {host:7.2f} | {gpu:13.2f} |')
            tops.append((label, sorted(per_name.items(), key=lambda kv: -kv[1])[:args.profile]))
        for label, top in tops:
            print(f'\n{label}: top kernels, ms per batch')
            for name, ms in top:
                print(f'  {ms:7.3f}  {name[:110]}')

    if device.type == 'cuda':
        tf = build_gpu_transform(True, deit)
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode('error')
        try:
            tf(decoded, gen)
            tf(stacked, gen)
            build_gpu_transform(False, deit)(decoded)
            print('device syncs inside the transforms: none (sync debug mode "error" raised nothing)')
        except RuntimeError as e:
            print(f'device syncs inside the transforms: YES ({str(e).splitlines()[0]})')
        finally:
            torch.cuda.set_sync_debug_mode('default')

    torch.set_num_threads(1)
    pil = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in photos[:args.cpu_images]]
    cpu_tf = build_transform(True, deit)
    sec = timed(lambda: [cpu_tf(im) for im in pil], torch.device('cpu'), 1)
    print(f'CPU path (timm PIL transforms, DeiT train, 1 thread, decoded images): {len(pil) / sec:.0f} img/s')


if __name__ == '__main__':
    main()
