"""The GPU data backend's CUDA-only paths, checked on a GPU machine (the CPU tests cover the rest):

1. decode: nvjpeg against PIL on generated JPEGs (pixel differences), and the CPU fallbacks on CUDA for a
   grayscale, a CMYK, a progressive JPEG and a PNG; a truncated JPEG and a JPEG whose scan data is garbage give the
   pil backend's CorruptImageError naming the file, never a decoder crash.
2. main.py trains 2 epochs on generated JPEGs with each backend (pil, gpu, gpu --data-on-gpu, --synthetic-data).
3. the pil-trained checkpoint evaluated through the pil and the gpu backend: top-1 must agree within 0.1.

    python benchmarks/gpu_data_check.py --root /tmp/vk_gpu_check      # prints a table; exit 1 on a failed check
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vision_kan.train.errors import CorruptImageError  # noqa: E402
from vision_kan.train.gpu_data import EncodedImageFolder, collate_encoded, decode_batch  # noqa: E402
from vision_kan.train.image_bytes import decode_jpegs  # noqa: E402

SMALL_VIT = ['--model', 'deit_tiny_patch16_224', '--input-size', '64', '--model-kwargs', 'patch_size=8']


def make_data(root: Path, classes: int = 10, train: int = 300, val: int = 100, size=(96, 80)) -> Path:
    """root/{train,val}/class_i/*.jpg: a class is a hue field with a class-dependent stripe frequency, noisy
    enough that a 2-epoch model is far from 100 %."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for split, count in (('train', train), ('val', val)):
        for c in range(classes):
            d = root / split / f'class_{c}'
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                phase = rng.uniform(0, 2 * np.pi)
                stripes = np.sin(xx * (0.1 + 0.05 * c) + yy * 0.03 * (c % 3) + phase)[..., None]
                colour = np.array([40 + 20 * c, 200 - 15 * c, 120 + 10 * (c % 4)])
                img = colour + 50 * stripes + rng.normal(0, 60, (h, w, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f'{i}.jpg', quality=90)
    return root


def check_decode(root: Path, device: torch.device) -> List[str]:
    """Rows of the decode table; raises AssertionError on a failed check."""
    rows = []
    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((120, 90),
                                                                                                Image.BICUBIC))
    img = Image.fromarray(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))
    d = root / 'decode' / 'c'
    d.mkdir(parents=True, exist_ok=True)
    files = {'baseline.jpg': dict(fmt='JPEG', quality=90), 'gray.jpg': dict(mode='L', fmt='JPEG'),
             'cmyk.jpg': dict(mode='CMYK', fmt='JPEG'), 'progressive.jpg': dict(fmt='JPEG', progressive=True),
             'png.png': dict(fmt='PNG')}
    for name, how in files.items():
        how = dict(how)
        mode, fmt = how.pop('mode', 'RGB'), how.pop('fmt')
        img.convert(mode).save(d / name, fmt, **how)
    samples = [(str(d / n), 0) for n in files]
    ds = EncodedImageFolder(samples, ['c'], gpu_decode=True, device=device)
    batch = collate_encoded([ds[i] for i in range(len(ds))])
    out = decode_batch(batch, ds, device)
    for (path, _), im, enc in zip(samples, out, [bool(s in batch.jpeg_slots.tolist()) for s in range(len(ds))]):
        ref = torch.from_numpy(np.asarray(Image.open(path).convert('RGB')).copy()).permute(2, 0, 1)
        diff = (im.cpu().int() - ref.int()).abs()
        assert im.device.type == device.type and im.shape == ref.shape, (path, im.shape, ref.shape)
        rows.append(f'| {Path(path).name} | {"nvjpeg" if enc else "CPU fallback"} | {diff.float().mean():.2f} | '
                    f'{int(diff.max())} |')
    good = (d / 'baseline.jpg').read_bytes()
    bad = {'truncated.jpg': good[:len(good) // 2],
           'garbage_scan.jpg': good[:good.index(b'\xff\xda') + 14] + b'\xff\xc0\x00\x11' * 64 + b'\xff\xd9'}
    for name, data in bad.items():
        (d / name).write_bytes(data)
        try:
            ds = EncodedImageFolder([(str(d / name), 0)], ['c'], gpu_decode=True, device=device)
            decode_batch(collate_encoded([ds[0]]), ds, device)
            result = 'decoded without an error (the decoder did not check the scan data)'
        except CorruptImageError as e:
            assert str(d / name) in str(e), e
            result = f'CorruptImageError: {e}'
        rows.append(f'| {name} | {result} | | |')
    enc = [torch.frombuffer(bytearray(good), dtype=torch.uint8)] * 3
    assert len(decode_jpegs(enc, ['a', 'b', 'c'], device)) == 3
    return rows


def run_main(args: List[str]) -> dict:
    proc = subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'main.py {" ".join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return {'stdout': proc.stdout}


def main_cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='/tmp/vk_gpu_check')
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--val-per-class', type=int, default=300,
                   help='val images a class (10 classes): 0.1 of top-1 is 3 images at 300 (it was 1 at 100)')
    a = p.parse_args()
    root = Path(a.root)
    device = torch.device('cuda')
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}')
    print('\n| file | decoder | mean abs diff vs PIL | max |\n|---|---|---|---|')
    print('\n'.join(check_decode(root, device)))
    data = make_data(root / f'data_val{a.val_per_class}', val=a.val_per_class)
    common = ['--data-path', str(data), *SMALL_VIT, '--batch-size', '128', '--epochs', str(a.epochs),
              '--warmup-epochs', '0', '--lr', '2.0e-3', '--amp', '--amp-dtype', 'bfloat16', '--num-workers', '8',
              '--print-freq', '100000', '--overwrite', '--eval-crop-ratio', '0.875']
    print('\n| backend | final train loss | val top-1 | train img/s (last epoch) |\n|---|---|---|---|')
    for name, flags in (('pil', []), ('gpu', ['--data-backend', 'gpu']),
                        ('gpu --data-on-gpu', ['--data-backend', 'gpu', '--data-on-gpu']),
                        ('--synthetic-data', ['--synthetic-data'])):
        out = root / 'runs' / name.replace(' ', '_').strip('-')
        run_main(common + flags + ['--output-dir', str(out)])
        last = [json.loads(line) for line in (out / 'log.txt').read_text().splitlines() if line.strip()][-1]
        print(f'| {name} | {last["train_loss"]:.4f} | {last["test_acc1"]:.2f} | {last["train_img_per_s"]:.0f} |',
              flush=True)
    ckpt = root / 'runs' / 'pil' / 'checkpoint.pth'
    acc = {}
    for name, flags in (('pil', []), ('gpu', ['--data-backend', 'gpu'])):
        text = run_main(common + flags + ['--eval', '--resume', str(ckpt)])['stdout']
        line = [ln for ln in text.splitlines() if ln.startswith('Accuracy on')][-1]
        acc[name] = float(line.split('acc1 ')[1].split()[0])
        print(f'eval of {ckpt.name} through {name}: {line}')
    ok = abs(acc['pil'] - acc['gpu']) <= 0.1
    print(f'top-1 pil {acc["pil"]:.2f} vs gpu {acc["gpu"]:.2f} on {10 * a.val_per_class} val images: '
          f'{"within" if ok else "NOT within"} 0.1')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main_cli())
