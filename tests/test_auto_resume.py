"""--auto-resume under torchrun --max-restarts: a worker SIGKILLed mid-epoch makes torchrun restart the job, which
continues from output_dir/checkpoint.pth and ends with the parameters of an uninterrupted run (2 gloo processes,
CPU, deterministic fp32), every file of the output dir kept."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import main
import torch

from conftest import TINY_VIT, common_args
from vision_kan.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

# rank 1 of the first attempt kills itself (SIGKILL: no clean-up, no exception) at the second step of epoch 2
_RANK_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import main

class KilledAtStep:
    def __init__(self, loader, step):
        self.loader, self.step = loader, step
    def __len__(self):
        return len(self.loader)
    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.step:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

first_attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') == '0'
if {kill} and first_attempt and os.environ['RANK'] == '1':
    train_one_epoch = main.train_one_epoch
    def dying_in_epoch_2(*, epoch, data_loader, **kwargs):
        if epoch == 1:
            data_loader = KilledAtStep(data_loader, 1)
        return train_one_epoch(epoch=epoch, data_loader=data_loader, **kwargs)
    main.train_one_epoch = dying_in_epoch_2
sys.exit(main.main(sys.argv[1:]))
"""


def _torchrun(tmp_path: Path, data: Path, name: str, kill: bool) -> subprocess.Popen:
    script = tmp_path / f'{name}.py'
    script.write_text(textwrap.dedent(_RANK_SCRIPT.format(repo=str(REPO), kill=kill)))
    flags = common_args(data, tmp_path / name, *TINY_VIT, '--epochs', '3', '--batch-size', '4', '--lr', '1.0e-2',
                        '--no-scale-lr', '--model-ema', '--model-ema-decay', '0.9', '--grid-update-epochs', '1',
                        '--auto-resume')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '--max-restarts=1',
           '--monitor-interval=0.2', str(script), *flags]
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _rows(out: Path):
    return [json.loads(line) for line in (out / 'log.txt').read_text().splitlines()]


def test_torchrun_restart_after_sigkill_ends_like_an_uninterrupted_run(image_folder, tmp_path):
    jobs = {'straight': _torchrun(tmp_path, image_folder, 'straight', kill=False),
            'killed': _torchrun(tmp_path, image_folder, 'killed', kill=True)}
    results = {name: (job.communicate(timeout=240), job.returncode) for name, job in jobs.items()}
    for name, ((stdout, stderr), rc) in results.items():
        assert rc == 0, (name, stderr[-12000:])
    (killed_out, killed_err), _ = results['killed']
    assert 'exitcode: -9' in killed_err  # torchrun saw the worker die of SIGKILL ...
    assert f'continuing from {tmp_path / "killed" / "checkpoint.pth"}' in killed_out  # ... and restarted the job
    assert 'resumed from' in killed_out and 'at epoch 2' in killed_out
    assert 'resumed from' not in results['straight'][0][0]

    straight, killed = load_checkpoint(tmp_path / 'straight' / 'checkpoint.pth'), \
        load_checkpoint(tmp_path / 'killed' / 'checkpoint.pth')
    assert straight['epoch'] == killed['epoch'] == 2
    for part in ('model', 'model_ema'):
        assert straight[part].keys() == killed[part].keys()
        for k in straight[part]:
            torch.testing.assert_close(killed[part][k], straight[part][k], rtol=0, atol=0, msg=f'{part} {k}')
    # nothing lost: every epoch's log row (epoch 1 from the first attempt), the same numbers as the straight run,
    # both attempts' TensorBoard files, best.pth and the config
    a, b = _rows(tmp_path / 'straight'), _rows(tmp_path / 'killed')
    assert [r['epoch'] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ('train_loss', 'test_loss', 'test_acc1', 'ema_acc1'):
            assert ra[key] == rb[key], (ra['epoch'], key)
    assert sorted(p.name for p in (tmp_path / 'killed').iterdir()) == \
        ['best.pth', 'checkpoint.pth', 'config.yaml', 'log.txt', 'model.safetensors', 'tensorboard']
    assert len(list((tmp_path / 'killed' / 'tensorboard').glob('events.out.tfevents.*'))) == 2
    assert main.parse_args(['--config', str(tmp_path / 'killed' / 'config.yaml')]).auto_resume
