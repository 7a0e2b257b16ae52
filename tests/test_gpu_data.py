"""The GPU data backends on the CPU: routing of files to nvjpeg or the CPU decoders, bad files, backend selection,
the same labels/order and DDP shards as the pil backend, the resident and synthetic sets, and main.py end to end
with --data-backend gpu --device cpu (decode on the CPU, augment in batches there)."""
import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image

import main
from conftest import TINY_VIT, common_args, make_image_folder
from vision_kan.train.data import DataConfig, TransformConfig, build_data, build_grid_sample_loader, load_rgb_image
from vision_kan.train.errors import ConfigError, CorruptImageError, DataError
from vision_kan.train.gpu_data import EncodedImageFolder, collate_encoded, decode_batch
from vision_kan.train.image_bytes import decode_jpegs, nvjpeg_decodable

CPU = torch.device('cpu')


def _image(seed: int = 0, size=(24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _files(d: Path) -> Dict[str, Path]:
    """One file of each kind the decode backend routes."""
    d.mkdir(parents=True, exist_ok=True)
    img = _image()
    made = {}
    for name, mode, kw in (('baseline.jpg', 'RGB', dict(quality=90)), ('gray.jpg', 'L', {}),
                           ('cmyk.jpg', 'CMYK', {}), ('progressive.jpg', 'RGB', dict(progressive=True)),
                           ('png.jpg', 'RGB', {})):  # a PNG named .jpg, as ImageNet has one
        img.convert(mode).save(d / name, 'PNG' if name.startswith('png') else 'JPEG', **kw)
        made[name] = d / name
    good = made['baseline.jpg'].read_bytes()
    made['truncated.jpg'] = d / 'truncated.jpg'
    made['truncated.jpg'].write_bytes(good[:len(good) // 2])
    return made


def test_nvjpeg_takes_only_baseline_ycbcr_jpegs(tmp_path):
    f = _files(tmp_path)
    routed = {name: nvjpeg_decodable(bytearray(p.read_bytes())) for name, p in f.items()}
    assert routed == {'baseline.jpg': True, 'gray.jpg': False, 'cmyk.jpg': False, 'progressive.jpg': False,
                      'png.jpg': False, 'truncated.jpg': False}


def test_fallbacks_decode_like_pil_and_bad_files_raise_the_pil_error(tmp_path):
    f = _files(tmp_path)
    good = [n for n in f if n != 'truncated.jpg']
    ds = EncodedImageFolder([(str(f[n]), 0) for n in good], ['c'], gpu_decode=True)
    batch = collate_encoded([ds[i] for i in range(len(ds))])
    assert batch.jpeg_slots.tolist() == [0] and batch.pixel_slots.tolist() == [1, 2, 3, 4]
    for name, img in zip(good, decode_batch(batch, ds, CPU)):  # the main process's decode, device='cpu'
        ref = torch.from_numpy(np.asarray(load_rgb_image(str(f[name]))).copy()).permute(2, 0, 1)
        assert img.dtype == torch.uint8 and torch.equal(img, ref), name
    with pytest.raises(CorruptImageError) as pil_error:
        load_rgb_image(str(f['truncated.jpg']))
    with pytest.raises(CorruptImageError) as ours:
        EncodedImageFolder([(str(f['truncated.jpg']), 0)], ['c'], gpu_decode=True)[0]
    assert str(ours.value) == str(pil_error.value) and 'truncated.jpg' in str(ours.value)
    # scan data replaced by garbage but an EOI at the end: nvjpeg would decode it to noise without an error, so the
    # worker's check of the scan bytes sends it to the CPU decoders, which raise the pil backend's error
    data = bytearray(f['baseline.jpg'].read_bytes())
    scan = data.index(b'\xff\xda') + 14  # past the start-of-scan header of a 3-component scan
    data[scan:-2] = (b'\xff\xc0\x00\x11' * len(data))[:len(data) - 2 - scan]  # SOF markers in the scan: unreadable
    bad = tmp_path / 'garbage.jpg'
    bad.write_bytes(bytes(data))
    assert not nvjpeg_decodable(data)
    with pytest.raises(CorruptImageError) as pil_error:
        load_rgb_image(str(bad))
    with pytest.raises(CorruptImageError) as ours:
        EncodedImageFolder([(str(bad), 0)], ['c'], gpu_decode=True)[0]
    assert str(ours.value) == str(pil_error.value) and 'garbage.jpg' in str(ours.value)
    # random bytes as the scan (what a damaged file holds): misplaced markers among them
    rng = np.random.default_rng(0)
    noisy = bytearray(f['baseline.jpg'].read_bytes())
    noisy[scan:-2] = rng.integers(0, 256, len(noisy) - 2 - scan, dtype=np.uint8).tobytes()
    assert not nvjpeg_decodable(noisy)
    # a batch the batched decoder rejects still goes image by image, naming the file that no decoder reads
    ok = torch.frombuffer(bytearray(f['baseline.jpg'].read_bytes()), dtype=torch.uint8)
    with pytest.raises(CorruptImageError, match='garbage.jpg'):
        decode_jpegs([ok, torch.frombuffer(data, dtype=torch.uint8)], ['ok.jpg', str(bad)], CPU)


def test_scan_check_passes_real_baseline_jpegs(tmp_path):
    """The scan-byte check must not send valid JPEGs to the CPU: restart markers, fill bytes before the EOI, many
    sizes and qualities (PIL's encoder, restart intervals from 0 to 4 MCU rows)."""
    from PIL import Image
    rng = np.random.default_rng(1)
    for k in range(24):
        h, w = int(rng.integers(8, 200)), int(rng.integers(8, 200))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        path = tmp_path / f'{k}.jpg'
        img.save(path, 'JPEG', quality=int(rng.integers(30, 100)), restart_marker_rows=int(rng.integers(0, 5)))
        data = bytearray(path.read_bytes())
        assert nvjpeg_decodable(data), (k, h, w)
        assert nvjpeg_decodable(bytearray(data[:-2] + b'\xff\xff\xd9'))  # a fill byte before the EOI


def _cfg(data: Path, **kw) -> DataConfig:
    base = dict(data_path=str(data), batch_size=4, num_workers=0, seed=3, device='cpu', repeated_aug=False)
    base.update(kw)
    return DataConfig(**base)


TCFG = TransformConfig(input_size=16, aa='rand-m9-mstd0.5-inc1', reprob=0.25, train_crop='rrc')


def test_decode_backend_gives_pil_labels_order_and_close_eval_images(tmp_path):
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=4, size=20)
    pil = build_data(_cfg(data), TCFG, CPU, 1, 0)
    gpu = build_data(_cfg(data, data_backend='gpu'), TCFG, CPU, 1, 0)
    assert pil[2] == gpu[2] == 3 and len(pil[3]) == len(gpu[3]) == 6
    for epoch in (0, 1):
        pil[3].sampler.set_epoch(epoch)
        gpu[3].sampler.set_epoch(epoch)
        pil_labels = [y.tolist() for _, y in pil[3]]
        gpu_batches = list(gpu[3])
        assert pil_labels == [y.tolist() for _, y in gpu_batches]
        assert all(x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 for x, _ in gpu_batches)
        again = list(gpu[3])  # same epoch: the same augmentations (a resumed epoch repeats them)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(gpu_batches, again))
    for (xp, yp), (xg, yg) in zip(pil[4], gpu[4]):  # eval: resize + centre crop
        assert torch.equal(yp, yg) and xp.shape == xg.shape
        assert (xp - xg).abs().mean() < 0.05


def test_two_ranks_cover_every_sample_once(tmp_path):
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=3, size=20)
    seen, val_seen = [], []
    for rank in (0, 1):
        _, _, _, train, val = build_data(_cfg(data, data_backend='gpu'), TCFG, CPU, 2, rank)
        train.sampler.set_epoch(4)
        seen += [i for b in train.loader for i in b.indices.tolist()]
        val_seen += [i for b in val.loader for i in b.indices.tolist()]
    assert sorted(seen) == list(range(24)) and sorted(val_seen) == list(range(9))
    resident = [build_data(_cfg(data, data_on_gpu=True), TCFG, CPU, 2, r)[3] for r in (0, 1)]
    assert sorted(i for loader in resident for i in loader.sampler) == list(range(24))


def test_resident_set_holds_the_decoded_files_and_rejects_other_sizes(tmp_path):
    data = make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=5, val_per_class=2, size=12)
    train_set, val_set, n, train, val = build_data(_cfg(data, data_on_gpu=True), TCFG, CPU, 1, 0)
    assert train_set.images.shape == (10, 3, 12, 12) and train_set.images.dtype == torch.uint8 and n == 2
    for i in (0, 7):
        path, label = build_data(_cfg(data), TCFG, CPU, 1, 0)[0].samples[i]
        ref = torch.from_numpy(np.asarray(load_rgb_image(path)).copy()).permute(2, 0, 1)
        assert torch.equal(train_set.images[i], ref) and int(train_set.labels[i]) == label
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64 and int(y.max()) < 2
    grid = build_grid_sample_loader(train_set, 6, 4, 0, 1, 0, 0, 1)
    assert [len(b[1]) for b in grid] == [4, 2]
    odd = data / 'train' / 'class_1' / 'odd.png'
    _image(1, (13, 12)).save(odd)
    with pytest.raises(DataError, match='odd.png is 13x12 pixels'):
        build_data(_cfg(data, data_on_gpu=True), TCFG, CPU, 1, 0)


def test_resident_loader_groups_make_the_same_batches(tmp_path):
    """--data-on-gpu augmenting 3 batches per call (and 0: automatic) gives the batches, labels and order that one
    batch per call gives, bit for bit, the last group short; the count is checked where it is set."""
    from vision_kan.train.gpu_data import ResidentLoader, augment_group
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=10, val_per_class=2, size=12)
    batches = {}
    for group in (1, 3, 0):
        train_set, _, _, train, _ = build_data(_cfg(data, data_on_gpu=True, data_on_gpu_group=group), TCFG, CPU, 1, 0)
        train.sampler.set_epoch(1)
        assert isinstance(train, ResidentLoader) and len(train) == 7
        batches[group] = list(train)
        assert train.group == (group or augment_group(4, 16))
    assert [len(y) for _, y in batches[1]] == [4] * 7
    for group in (3, 0):
        assert len(batches[group]) == 7
        for (x1, y1), (xg, yg) in zip(batches[1], batches[group]):
            assert torch.equal(x1, xg) and torch.equal(y1, yg)
    assert augment_group(256, 32) == 16 and augment_group(256, 64) == 5 and augment_group(256, 224) == 1
    assert augment_group(256, 224, 2) == 2
    with pytest.raises(ConfigError, match='only with --data-on-gpu'):
        build_data(_cfg(data, data_backend='gpu', data_on_gpu_group=2), TCFG, CPU, 1, 0)
    with pytest.raises(ConfigError, match='at least 1'):
        build_data(_cfg(data, data_on_gpu=True, data_on_gpu_group=-1), TCFG, CPU, 1, 0)


def test_synthetic_shapes_and_classes(tmp_path):
    data = make_image_folder(tmp_path / 'data', num_classes=4, train_per_class=3, val_per_class=2, size=12)
    train_set, val_set, n, train, val = build_data(_cfg(data, synthetic_data=True), TCFG, CPU, 1, 0)
    assert (n, len(train_set), len(val_set)) == (4, 12, 8)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and int(y.max()) < 4
    _, _, n, train, val = build_data(_cfg('', synthetic_data=True, synthetic_classes=7, synthetic_images=50),
                                     TCFG, CPU, 1, 0)
    assert n == 7 and len(train) == 12 and sum(len(y) for _, y in val) == 2


@pytest.mark.parametrize('flags, fragment', [
    (['--data-backend', 'gpu'], '--data-backend gpu needs a CUDA device'),
    (['--data-on-gpu'], '--data-on-gpu needs a CUDA device'),
    (['--synthetic-data', '--data-on-gpu', '--device', 'cpu'], 'drop --data-on-gpu'),
    (['--data-backend', 'gpu', '--data-on-gpu-group', '2', '--device', 'cpu'], 'only with --data-on-gpu'),
])
def test_gpu_backend_without_cuda_exits_2_with_one_line(image_folder, tmp_path, capsys, monkeypatch, flags,
                                                        fragment):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    args = [a for a in common_args(image_folder, tmp_path / 'out', *TINY_VIT, '--epochs', '1') if a != '--device']
    args.remove('cpu')  # no --device: CUDA when available, and there is none
    assert main.main(args + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_main_trains_with_the_gpu_backends_on_cpu(tmp_path, capsys):
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=2, size=16)
    for i, p in enumerate(sorted((data / 'train').rglob('*.png'))[::2]):  # half the files as JPEG
        Image.open(p).convert('L' if i % 3 == 0 else 'RGB').save(p.with_suffix('.jpg'), quality=90)
        p.unlink()
    base = common_args(data, tmp_path / 'out', *TINY_VIT, '--epochs', '1', '--batch-size', '4', '--overwrite',
                       '--grid-update-epochs', '1', '--mixup', '0.8', '--cutmix', '1.0', '--aa',
                       'rand-m9-mstd0.5-inc1', '--reprob', '0.25')
    for flags in (['--data-backend', 'gpu'], ['--data-backend', 'gpu', '--num-workers', '1'],
                  ['--data-on-gpu'], ['--synthetic-data']):
        assert main.main(base + flags) == 0, capsys.readouterr().err
        assert 'KAN grids of' in capsys.readouterr().out
    bad = data / 'train' / 'class_0' / 'zz_truncated.jpg'
    good = next((data / 'train' / 'class_0').glob('*.jpg')).read_bytes()
    bad.write_bytes(good[:len(good) // 2])
    assert main.main(base + ['--data-backend', 'gpu', '--num-workers', '1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'corrupt image file' in err[0] and 'zz_truncated.jpg' in err[0], err


def test_eval_with_only_val_gives_the_same_top1_through_every_backend(tmp_path, capsys):
    """--eval --resume on a folder with val/ alone: pil, gpu (decode + batched eval transform) and --data-on-gpu
    rebuild the model from the checkpoint and report the same top-1 (CPU: the gpu backends run batched there)."""
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=6, size=16)
    assert main.main(common_args(data, tmp_path / 'run', *TINY_VIT, '--epochs', '6', '--batch-size', '4', '--lr',
                                 '1.0e-2', '--no-scale-lr', '--smoothing', '0')) == 0  # far from chance (loss ln 3)
    capsys.readouterr()
    only_val = tmp_path / 'only_val'
    only_val.mkdir()
    (data / 'val').rename(only_val / 'val')  # no train/ beside it
    acc, loss = {}, {}
    for name, flags in (('pil', []), ('gpu', ['--data-backend', 'gpu']), ('resident', ['--data-on-gpu'])):
        argv = ['--eval', '--resume', str(tmp_path / 'run' / 'best.pth'), '--data-path', str(only_val), '--device',
                'cpu', '--num-workers', '0', *flags]
        assert main.main(argv) == 0, capsys.readouterr().err
        line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('Accuracy on')][0]
        acc[name] = float(line.split('acc1 ')[1].split()[0])
        loss[name] = float(line.split('loss ')[1].split()[0])
        assert 'Accuracy on 18 val images' in line
    # the same weights through two resize implementations: <= 1 image apart, losses within 2 %
    assert abs(acc['gpu'] - acc['pil']) <= 100 / 18 + 1e-6 and abs(loss['gpu'] - loss['pil']) < 0.02 * loss['pil']
    assert (acc['resident'], loss['resident']) == (acc['gpu'], loss['gpu']), (acc, loss)
    assert loss['pil'] < 0.9, loss  # trained weights were evaluated, not a fresh model (ln 3 = 1.10)


def test_prefetch_thread_keeps_order_raises_and_stops():
    """The background-thread logic of the CUDA path (run here on the CPU, without streams)."""
    import threading
    from vision_kan.train.gpu_data import prefetch_on_device

    def square(i):
        return (torch.tensor([i * i]),)
    out = [int(x[0]) for x, in prefetch_on_device(range(20), square, CPU, 2, threaded=True)]
    assert out == [i * i for i in range(20)]

    def fail_at_5(i):
        if i == 5:
            raise CorruptImageError('corrupt image file x.jpg: bad')
        return square(i)
    got = []
    with pytest.raises(CorruptImageError, match='x.jpg'):
        for x, in prefetch_on_device(range(20), fail_at_5, CPU, 2, threaded=True):
            got.append(int(x[0]))
    assert got == [0, 1, 4, 9, 16]
    def prefetchers():
        return [t for t in threading.enumerate() if t.name == 'gpu-data-prefetch']
    assert not prefetchers()
    it = prefetch_on_device(iter(range(10 ** 6)), square, CPU, 2, threaded=True)
    next(it)
    assert len(prefetchers()) == 1
    it.close()  # a loop left early (the benchmark's cut epochs): the thread ends
    assert not prefetchers()  # (not a global thread count: other tests' threads may end meanwhile)


def test_gpu_backend_resume_continues_exactly(image_folder, tmp_path, monkeypatch):
    """2 epochs straight == 1 epoch, killed, resumed: the same sampler order and the same augmentations
    (generators from (seed, rank, epoch, batch)), mixup and RandAugment and erasing on."""
    flags = [*TINY_VIT, '--epochs', '2', '--batch-size', '8', '--warmup-epochs', '0', '--data-backend', 'gpu',
             '--mixup', '0.8', '--cutmix', '1.0', '--aa', 'rand-m9-mstd0.5-inc1', '--reprob', '0.25']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert main.main(common_args(image_folder, straight, *flags)) == 0
    log_epoch = main.RunLog.log_epoch

    def killed_after_first_epoch(self, row):
        log_epoch(self, row)
        if row['epoch'] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(main.RunLog, 'log_epoch', killed_after_first_epoch)
    assert main.main(common_args(image_folder, resumed, *flags)) == 130
    monkeypatch.setattr(main.RunLog, 'log_epoch', log_epoch)
    assert main.main(common_args(image_folder, resumed, *flags, '--resume', str(resumed / 'checkpoint.pth'))) == 0
    logs = [[json.loads(line) for line in (d / 'log.txt').read_text().splitlines() if line.strip()]
            for d in (straight, resumed)]
    assert [r['epoch'] for r in logs[1]] == [1, 2]
    for ra, rb in zip(*logs):
        assert abs(ra['train_loss'] - rb['train_loss']) <= 1e-6 and abs(ra['test_loss'] - rb['test_loss']) <= 1e-6
