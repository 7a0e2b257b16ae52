"""Can the GPU backend's train augmentation reach the GPU as one CUDA graph a batch instead of ~150 launches?

Why: a data producer in another process gives the GPU each batch's kernels one by one, as its Python issues them;
if each arrival costs the training step a context switch (`context_switch_probe.py` measures that), one submission
a batch would cost it two. The transform is already free of device syncs (gpu_augment_speed.py checks), so it may
be capturable as it is: this probe captures `GpuTransform.apply` for one batch of decoded 500x375 JPEGs, replays it,
and says per transform whether the capture worked (else the error), whether the replay equals the eager output, the
host ms of eager issue against capture + instantiate (paid for every batch: the choices change), and the GPU ms.

    python benchmarks/augment_graph_probe.py              # needs CUDA; prints one table
"""
import argparse
import sys
from typing import List

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from gpu_augment_speed import synthetic_photos
from kan_host_overhead import host_and_gpu_us
from vision_kan.train.data import TransformConfig
from vision_kan.train.gpu_augment import build_gpu_transform


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--reps', type=int, default=5)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print('augment_graph_probe.py: needs a CUDA GPU', file=sys.stderr)
        return 2
    dev = torch.device('cuda')
    jpegs = [encode_jpeg(p, quality=90) for p in synthetic_photos(a.batch, 375, 500)]
    images = decode_jpeg(jpegs, device=dev)
    sizes = [tuple(im.shape[1:]) for im in images]
    cases = [('crop + flip + normalise', TransformConfig(aa='none', color_jitter=0.0, reprob=0.0)),
             ('DeiT train without erasing', TransformConfig(reprob=0.0)),
             ('DeiT train (RandAugment, erasing 0.25)', TransformConfig()),
             ('CIFAR 32 px (pad crop, RandAugment, erasing)', TransformConfig(input_size=32, train_crop='pad'))]
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch} of 500x375, {a.reps} reps')
    print('\n| transform | eager host ms | eager GPU ms | capture + instantiate host ms | replay host ms | '
          'replay GPU ms | replay == eager |\n|---|---|---|---|---|---|---|')
    for name, cfg in cases:
        tf = build_gpu_transform(True, cfg)
        batch = images if cfg.input_size != 32 else torch.stack([im[:, :32, :32] for im in images])
        shapes = sizes if cfg.input_size != 32 else [(32, 32)] * a.batch
        p = tf.sample_params(shapes, torch.Generator().manual_seed(0))
        eager = tf.apply(batch, p)  # also the warm-up: Triton compiles, cuBLAS handles, before any capture
        # (host µs, GPU µs) of one call, medians over reps, queued behind a 50 ms `_sleep` (longer than its ~10 ms
        # of issue: the events then time the GPU alone)
        e_host, e_gpu = (v / 1e3 for v in host_and_gpu_us(lambda: tf.apply(batch, p), 1, a.reps, sleep_ms=50.0))
        stream = torch.cuda.Stream()
        graphs: List[torch.cuda.CUDAGraph] = []
        outs: List[torch.Tensor] = []

        def capture() -> None:
            graph = torch.cuda.CUDAGraph()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.graph(graph, stream=stream):
                outs.append(tf.apply(batch, p))
            graphs.append(graph)
        try:
            c_host = host_and_gpu_us(capture, 1, a.reps, sleep_ms=0.0)[0] / 1e3  # capture synchronises: no sleep
        except Exception as e:  # noqa: BLE001  what fails to capture is the finding
            print(f'| {name} | {e_host:.2f} | {e_gpu:.3f} | capture failed: {type(e).__name__}: '
                  f'{" ".join(str(e).split())[:200]} | | | |', flush=True)
            continue
        graph = graphs[-1]
        graph.replay()
        torch.cuda.synchronize()
        equal = torch.equal(outs[-1], eager)
        r_host, r_gpu = (v / 1e3 for v in host_and_gpu_us(graph.replay, 1, a.reps, sleep_ms=50.0))
        print(f'| {name} | {e_host:.2f} | {e_gpu:.3f} | {c_host:.2f} | {r_host:.3f} | {r_gpu:.3f} | {equal} |',
              flush=True)
        graphs.clear()  # their memory pools go before the next transform
        outs.clear()
    return 0


if __name__ == '__main__':
    sys.exit(main())
