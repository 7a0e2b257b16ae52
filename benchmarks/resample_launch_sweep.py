"""GPU time of the Triton crop + resize (gpu_resample_triton) under other launch shapes than `_LAUNCH`, on a DeiT
train batch (256 RandomResizedCrops of 500x375 uint8 images to 224 px); each output checked equal to the default's.

With tmp laid out by columns ((B 3, box width, S)), the vertical pass stores, for each box column, a run of BLOCK_I
output rows: 16 float32 (64 bytes) at the default shape, half a 128-byte line. Taller tiles make longer runs.

    python benchmarks/resample_launch_sweep.py             # needs CUDA; prints one table
"""
import argparse
import itertools
import sys

import torch

from kan_host_overhead import host_and_gpu_us


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--reps', type=int, default=20)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('resample_launch_sweep.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    from vision_kan.train import gpu_resample_triton as grt
    from vision_kan.train.data import TransformConfig
    from vision_kan.train.gpu_augment import GpuTransform
    dev = torch.device('cuda')
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.randint(0, 256, (a.batch, 3, 375, 500), dtype=torch.uint8, generator=g, device=dev)
    p = GpuTransform(True, TransformConfig()).sample_params([(375, 500)] * a.batch, torch.Generator().manual_seed(0))
    default = {k: dict(v) for k, v in grt._LAUNCH.items()}

    def run() -> torch.Tensor:
        return grt.resample_boxes_fused(images, p.y, p.x, 224, out_dtype=torch.uint8)

    def gpu_ms() -> float:  # reps calls queued behind a 100 ms `_sleep`: the events time the GPU, not the host
        return host_and_gpu_us(run, a.reps, rounds=1, sleep_ms=100.0)[1] / 1e3

    want = run()
    rows = []
    for (bi, bx, wv), (hi, hj) in itertools.product(
            [(16, 128, 4), (32, 64, 4), (32, 128, 4), (64, 32, 4), (64, 64, 4), (128, 32, 4)],
            [(32, 32), (64, 32)]):
        grt._LAUNCH['vertical'] = {'BLOCK_I': bi, 'BLOCK_X': bx, 'num_warps': wv}
        grt._LAUNCH['horizontal'] = {'BLOCK_I': hi, 'BLOCK_J': hj, 'num_warps': 4}
        equal = torch.equal(run(), want)
        rows.append((bi, bx, wv, hi, hj, gpu_ms(), equal))
    grt._LAUNCH.update(default)
    base = rows[0][5]
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch}, 500x375 -> 224 px, '
          f'{a.reps} reps queued behind a sleep (GPU ms)')
    print('\n| vertical BLOCK_I x BLOCK_X, warps | horizontal BLOCK_I x BLOCK_J | GPU ms a batch | × first row | '
          'output equal |\n|---|---|---|---|---|')
    for bi, bx, wv, hi, hj, ms, equal in rows:
        print(f'| {bi} x {bx}, {wv} | {hi} x {hj} | {ms:.3f} | {ms / base:.2f} | {equal} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
