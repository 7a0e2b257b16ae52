"""Would NVIDIA DALI feed a 224 px DeiT-tiny step at >= 0.9x synthetic, where the gpu backend does not (issue 13)?

The gpu backend's producers run in other processes, so without MPS their ~5.7 ms of kernels a batch time-slice with
the training step (README, fifth run); in a thread of the trainer they share its interpreter lock instead. DALI
runs its pipeline in the trainer's process, on its own C++ threads and CUDA stream: neither. This probe measures,
on one GPU, in one process:

  * the DALI pipeline alone (img/s): external source of JPEG bytes -> fused decode + RandomResizedCrop on the GPU
    (`fn.decoders.image_random_crop`, device 'mixed', DeiT's scale / ratio) -> bicubic antialiased resize -> flip ->
    RandAugment (`nvidia.dali.auto_aug.rand_augment`, n 2, m 9: DALI's op set, not timm's 'rand-m9-mstd0.5-inc1')
    -> normalise to float CHW; random erasing is not in it;
  * the training step (timm model, bf16 autocast, AdamW, batch 256) on synthetic device tensors;
  * the same step fed by the pipeline (`DALIGenericIterator`), and its ratio to synthetic.

    pip install nvidia-dali-cuda130        # CUDA 13 builds of torch (cuda120 for CUDA 12); ~260 MB with its deps
    python benchmarks/dali_probe.py                                   # GPU: 4,096 generated 500x375 JPEGs
    python benchmarks/dali_probe.py --compile                         # the compiled step, against its own synthetic
    python benchmarks/dali_probe.py --device cpu --images 32 --batch-size 8 --size 32 --steps 2 --warmup 1

Not a data backend: a decision probe. Its RandAugment differs from DeiT's policy and it has no erasing, so its rate
is an upper bound for a DALI backend that matches the recipe.
"""
import argparse
import io
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vision_kan  # noqa: E402,F401  registers the models

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def make_jpegs(n: int, h: int, w: int, seed: int = 0) -> List[np.ndarray]:
    """n JPEG files (quality 90) as uint8 byte arrays: a random 8x8 colour field upsampled plus noise, like photos."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        field = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode='bicubic', align_corners=False)
        img = ((field + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)[0] * 255).to(torch.uint8)
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, 'JPEG', quality=90)
        out.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    return out


class JpegBatches:
    """DALI external source: batches of (JPEG bytes, label) cycling over the files forever."""

    def __init__(self, files: List[np.ndarray], batch_size: int, classes: int):
        self.files, self.batch_size, self.classes, self.pos = files, batch_size, classes, 0

    def __iter__(self) -> 'JpegBatches':
        return self

    def __next__(self) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        idx = [(self.pos + k) % len(self.files) for k in range(self.batch_size)]
        self.pos = (self.pos + self.batch_size) % len(self.files)
        return [self.files[i] for i in idx], [np.array([i % self.classes], dtype=np.int64) for i in idx]


def build_pipeline(source: JpegBatches, size: int, batch_size: int, threads: int, gpu: bool):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug import rand_augment

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=0 if gpu else None,
                  enable_conditionals=True, prefetch_queue_depth=2)
    def deit_train():
        jpegs, labels = fn.external_source(source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64])
        images = fn.decoders.image_random_crop(jpegs, device='mixed' if gpu else 'cpu', output_type=types.RGB,
                                               random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                               num_attempts=10)
        images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_CUBIC, antialias=True)
        images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
        images = rand_augment.rand_augment(images, n=2, m=9)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout='CHW', mean=MEAN, std=STD)
        return images, (labels.gpu() if gpu else labels)

    pipe = deit_train()
    pipe.build()
    return pipe


def dali_batches(pipe) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    from nvidia.dali.plugin.pytorch import DALIGenericIterator
    for out in DALIGenericIterator([pipe], ['images', 'labels']):
        yield out[0]['images'], out[0]['labels'].view(-1)


def rate(step, batches: Iterator, warmup: int, steps: int, batch_size: int, sync) -> float:
    """img/s of step(batch) over `steps` batches after `warmup`."""
    for _ in range(warmup):
        step(*next(batches))
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    sync()
    return steps * batch_size / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda')
    p.add_argument('--model', default='deit_tiny_patch16_224')
    p.add_argument('--images', type=int, default=4096, help='generated 500x375 JPEGs (cycled)')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--threads', type=int, default=8, help="DALI's CPU threads")
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--steps', type=int, default=40)
    p.add_argument('--compile', action='store_true', help='torch.compile the model (both rows)')
    args = p.parse_args()
    # DALI's rand_augment still calls operators by their old experimental names: one warning each, not ours
    warnings.filterwarnings('ignore', message='This operator was moved out from the experimental phase')
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        print('dali_probe: NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)', file=sys.stderr)
        return 2
    device = torch.device(args.device)
    gpu = device.type == 'cuda'
    sync = (lambda: torch.cuda.synchronize(device)) if gpu else (lambda: None)
    files = make_jpegs(args.images, 375, 500)

    pipe = build_pipeline(JpegBatches(files, args.batch_size, args.classes), args.size, args.batch_size,
                          args.threads, gpu)
    alone = rate(lambda x, y: None, dali_batches(pipe), args.warmup, args.steps, args.batch_size, sync)

    model = timm.create_model(args.model, num_classes=args.classes, img_size=args.size).to(device).train()
    net = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with amp:
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    synthetic = rate(step, iter(lambda: (x, y), None), args.warmup, args.steps, args.batch_size, sync)
    fed = rate(step, dali_batches(pipe), args.warmup, args.steps, args.batch_size, sync)
    name = torch.cuda.get_device_name(device) if gpu else 'CPU'
    import nvidia.dali as dali
    print(f'# {name}, torch {torch.__version__}, DALI {dali.__version__}, {args.model}, batch {args.batch_size}, '
          f'{args.size} px, {"compiled" if args.compile else "eager"}, {args.threads} DALI threads, '
          f'{args.steps} timed steps after {args.warmup}')
    print('| what | img/s | x synthetic |\n|---|---|---|')
    print(f'| DALI pipeline alone (decode + RRC + flip + RandAugment + normalise) | {alone:,.0f} | |')
    print(f'| training step, synthetic tensors | {synthetic:,.0f} | 1.00 |')
    print(f'| training step fed by the DALI pipeline (same process) | {fed:,.0f} | {fed / synthetic:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
