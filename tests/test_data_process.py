"""--data-process on the CPU: the producer process gives the batches of the in-process loader (order, labels and
augmentations, two epochs, decode and resident backends), survives a loop left early, hands a bad file's error over
as the same exception, reports a dead producer instead of hanging, and dies with its parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import main
from conftest import make_image_folder
from vision_kan.train.data import DataConfig, TransformConfig, build_data
from vision_kan.train.data_process import EpochIndices, ProcessLoader
from vision_kan.train.errors import ConfigError, CorruptImageError

CPU = torch.device('cpu')
TCFG = TransformConfig(input_size=16, aa='rand-m9-mstd0.5-inc1', reprob=0.25, train_crop='rrc')
ROOT = Path(__file__).resolve().parents[1]


def _cfg(data: Path, **kw) -> DataConfig:
    base = dict(data_path=str(data), batch_size=4, num_workers=0, seed=3, device='cpu', repeated_aug=False,
                data_backend='gpu')
    base.update(kw)
    return DataConfig(**base)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(p, q) for (x, p), (y, q) in zip(a, b))


@pytest.mark.parametrize('resident,processes', [(False, 1), (True, 1), (False, 3)],
                         ids=['decode', 'resident', 'decode-3-processes'])
def test_process_gives_the_in_process_batches(tmp_path, resident, processes):
    """Also with 3 producers taking turns at the 6 batches (and sharing the 2 workers): the same batches, in order."""
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=2, size=20)
    workers = 0 if resident else 2  # the decode loader's persistent workers, reset after an epoch left early
    here = build_data(_cfg(data, data_on_gpu=resident, num_workers=workers), TCFG, CPU, 1, 0)[3]
    there = build_data(_cfg(data, data_on_gpu=resident, data_process=True, data_processes=processes,
                            num_workers=workers), TCFG, CPU, 1, 0)[3]
    assert isinstance(there, ProcessLoader) and not isinstance(here, ProcessLoader)
    assert there.processes == processes
    try:
        assert len(there) == len(here) == 6
        for epoch in (0, 1):
            here.sampler.set_epoch(epoch)
            there.sampler.set_epoch(epoch)
            expected = list(here)
            assert _same(list(there), expected), epoch
        for _ in range(2):
            it = iter(there)  # a loop left early (a cut benchmark epoch, an exception in the step) ...
            next(it)
            next(it)
            it.close()
            assert _same(list(there), expected)  # ... and the next epoch is whole, from its first batch
        producers = [p.process for p in there._producers]
        assert len(producers) == processes and all(p.is_alive() for p in producers)
    finally:
        there.close()
    assert not any(p.is_alive() for p in producers)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='the fork start method is the Linux choice')
@pytest.mark.skipif(not torch.cuda.is_available(), reason='the CUDA hand-over (IPC tensors, _Handoff) needs a GPU')
def test_process_gives_the_in_process_batches_on_the_gpu(tmp_path):
    """The batches cross as CUDA IPC tensors, are copied into the trainer's memory (_Handoff) and the received ones
    freed behind the copies: the same batches as the in-process loader's, two epochs, and none left pending."""
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=2, size=20)
    cuda = torch.device('cuda')  # no index: the producer takes the current device's
    here = build_data(_cfg(data, device='cuda', num_workers=2), TCFG, cuda, 1, 0)[3]
    there = build_data(_cfg(data, device='cuda', data_process=True, num_workers=2), TCFG, cuda, 1, 0)[3]
    try:
        for epoch in (0, 1):
            here.sampler.set_epoch(epoch)
            there.sampler.set_epoch(epoch)
            expected = [(x.clone(), y.clone()) for x, y in here]
            got = []
            for x, y in there:
                assert x.is_cuda and y.is_cuda
                got.append((x.clone(), y.clone()))
            assert _same(got, expected), epoch
    finally:
        there.close()


class _NumberedBatches:
    """A producer's loader (module level: spawned producers unpickle it by name) whose batch b of epoch e is filled
    with 100 e + b; batch 7 has 3 rows where the others have 4 (it cannot use the ring's slots)."""

    def __init__(self, order: EpochIndices):
        self.order = order

    def __iter__(self):
        for b in self.order.batch_ids:
            rows = 3 if b == 7 else 4
            yield torch.full((rows, 2), 100.0 * self.order.epoch + b), torch.full((rows,), b)


class _Epochs(list):
    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


@pytest.mark.parametrize('slots', [True, False], ids=['ring', 'plain'])
def test_batches_cross_through_the_ring_in_order_and_an_odd_one_the_plain_way(slots):
    """12 batches from 2 producers with depth 1 (3 slots each): every slot is written several times, the trainer's
    batches stay its own after the slot is refilled, batch 7 (another shape) crosses the plain way, and an epoch
    left early returns its drained slots (else the next epoch would wait for a free slot forever)."""
    sampler = _Epochs(range(48))
    loader = ProcessLoader(_NumberedBatches, sampler, 4, True, CPU, depth=1, processes=2, slots=slots)

    def hung(*_):
        raise TimeoutError('the loader waited 90 s for a batch: a slot never given back?')
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(90)
    try:
        for epoch in (0, 1, 2):
            sampler.set_epoch(epoch)
            got = list(loader)  # held until the end of the epoch: a slot refilled under a batch would change it
            assert [x.shape[0] for x, _ in got] == [3 if b == 7 else 4 for b in range(12)]
            for b, (x, y) in enumerate(got):
                assert torch.equal(x, torch.full_like(x, 100.0 * epoch + b)) and torch.equal(y, torch.full_like(y, b))
            it = iter(loader)
            next(it)
            it.close()
        assert all((p.slots is not None) == slots for p in loader._producers)
        if slots:
            assert all(len(p.slots.images) == 3 for p in loader._producers)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        loader.close()


def test_trace_prints_each_epochs_batch_times(tmp_path, monkeypatch, capfd):
    """VISION_KAN_DATA_PROCESS_TRACE=0 (milestones without stack dumps): after each epoch the producer says how long
    its batches took to make and to hand over (the question a slow --data-process run asks first)."""
    import re
    data = make_image_folder(tmp_path / 'data', num_classes=3, train_per_class=8, val_per_class=2, size=20)
    monkeypatch.setenv('VISION_KAN_DATA_PROCESS_TRACE', '0')
    there = build_data(_cfg(data, data_process=True), TCFG, CPU, 1, 0)[3]
    try:
        assert len(list(there)) == 6
    finally:
        there.close()
    err = capfd.readouterr().err
    assert re.search(r'epoch 0: 6 batches; ms a batch, median / max: making [\d.]+ / [\d.]+ \(the first [\d.]+\), '
                     r'waiting to hand over [\d.]+ / [\d.]+', err), err
    assert 'Timeout' not in err  # no stack dumps with 0


def test_producer_loader_forks_its_workers_and_stops_them_on_close(tmp_path):
    # In a spawned process the default start method is spawn: 14 spawned workers, each importing torch and
    # unpickling the sample list in turn, took 162 s to start on an H100 host. The producer's loader forks them.
    data = make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=4, val_per_class=1, size=20)
    there = build_data(_cfg(data, data_process=True, num_workers=2), TCFG, CPU, 1, 0)[3]
    order = EpochIndices()
    order.indices = list(range(8))
    loader = there.make_loader(order)  # what the producer builds
    assert loader.loader.multiprocessing_context.get_start_method() == 'fork'
    assert len(list(loader)) == 2
    workers = [w for w in loader.loader._iterator._workers]
    assert workers and all(w.is_alive() for w in workers)
    loader.close()
    assert loader.loader._iterator is None and not any(w.is_alive() for w in workers)


def test_bad_file_raises_the_same_error_and_a_dead_producer_is_reported(tmp_path):
    data = make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=4, val_per_class=1, size=20)
    bad = data / 'train' / 'class_1' / '2.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
    loader = build_data(_cfg(data, data_process=True), TCFG, CPU, 1, 0)[3]
    try:
        with pytest.raises(CorruptImageError, match=str(bad)):
            list(loader)
        bad.unlink()  # the producer survives the error: the next epoch reads the files again
        make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=4, val_per_class=1, size=20)
        assert len(list(loader)) == 2
        os.kill(loader._producers[0].process.pid, signal.SIGKILL)
        t = time.time()
        with pytest.raises(RuntimeError, match='data process .*exited with code -9'):
            list(loader)
        assert time.time() - t < 30
    finally:
        loader.close()


def test_producer_dies_with_its_parent(tmp_path):
    """A trainer killed with SIGKILL leaves no producer behind (PR_SET_PDEATHSIG)."""
    data = make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=4, val_per_class=1, size=20)
    script = textwrap.dedent(f'''
        import os, sys, torch
        sys.path[:0] = [{str(ROOT)!r}]
        from vision_kan.train.data import DataConfig, TransformConfig, build_data
        if __name__ == '__main__':
            cfg = DataConfig(data_path={str(data)!r}, batch_size=2, num_workers=0, device='cpu', repeated_aug=False,
                             data_backend='gpu', data_process=True)
            loader = build_data(cfg, TransformConfig(input_size=16), torch.device('cpu'), 1, 0)[3]
            next(iter(loader))
            print(loader._producers[0].process.pid, flush=True)
            os.kill(os.getpid(), 9)
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    pid = int(out.stdout.split()[-1])
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f'the producer {pid} outlived its parent')


def test_data_process_without_a_gpu_backend_is_a_config_error(tmp_path, capsys):
    data = make_image_folder(tmp_path / 'data', num_classes=2, train_per_class=4, val_per_class=1, size=20)
    with pytest.raises(ConfigError, match='--data-process'):
        build_data(_cfg(data, data_backend='pil', data_process=True), TCFG, CPU, 1, 0)
    code = main.main(['--data-path', str(data), '--device', 'cpu', '--data-process', '--output-dir',
                      str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and '--data-process' in err[0], err
    for extra in (['--data-processes', '2'], ['--data-process', '--data-processes', '0']):
        code = main.main(['--data-path', str(data), '--device', 'cpu', '--data-backend', 'gpu', '--output-dir',
                          str(tmp_path / 'out')] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and '--data-processes' in err[0], (extra, err)
