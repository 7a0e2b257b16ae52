"""main.py end to end on generated ImageFolders: a training run and what it leaves, exact resume, distillation,
fine-tune, eval, AMP, the bad inputs (exit 2, one line on stderr, files intact), 2-process DDP through torchrun,
and the embedded demo (shortened)."""
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

import main
from conftest import TINY_VIT, common_args, make_image_folder
from vision_kan.train.checkpoint import load_checkpoint
from vision_kan.layers.basis import uniform_knots

REPO = Path(__file__).resolve().parents[1]


def _log(out: Path):
    return [json.loads(line) for line in (out / 'log.txt').read_text().splitlines()]


def _digest(root: Path):
    """Bytes of every file under root (to prove nothing was changed)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith('error: ')
    return err[0]


# ---------------------------------------------------------------- a training run

def test_short_training_run_leaves_everything(image_folder, tmp_path, capsys):
    out = tmp_path / 'run'
    rc = main.main(common_args(image_folder, out, *TINY_VIT, '--epochs', '2', '--batch-size', '8', '--lr', '5.0e-3',
                               '--no-scale-lr', '--model-ema', '--model-ema-decay', '0.9', '--grid-update-every', '1',
                               '--kan-reg-weight', '1.0e-4'))
    assert rc == 0
    printed = capsys.readouterr().out
    assert 'params' in printed and 'GFLOPs' in printed and 'val acc1' in printed
    assert 'KAN grids of 4 layers re-placed' in printed
    rows = _log(out)
    assert [r['epoch'] for r in rows] == [1, 2]
    for r in rows:
        for key in ('train_loss', 'train_lr', 'train_img_per_s', 'test_loss', 'test_acc1', 'test_acc5', 'ema_acc1'):
            assert isinstance(r[key], float) and r[key] == r[key], key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / 'tensorboard'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'train/img_per_s', 'test/loss', 'test/acc1', 'test/acc5', 'ema/acc1'} <= tags
    assert [e.step for e in events.Scalars('test/acc1')] == [1, 2]
    ckpt = load_checkpoint(out / 'checkpoint.pth')
    assert ckpt['epoch'] == 1 and ckpt['model_ema'] is not None and len(ckpt['rng']) == 1
    assert ckpt['num_classes'] == 3
    assert (out / 'best.pth').is_file()
    grid = ckpt['model']['blocks.0.mlp.fc1.grid']
    assert not torch.allclose(grid, uniform_knots(grid.shape[0], 5, 3))  # the grid update reached the checkpoint
    torch.testing.assert_close(ckpt['model_ema']['blocks.0.mlp.fc1.grid'], grid, rtol=0, atol=0)
    # the saved config is the merged recipe and runs again as --config
    args = main.parse_args(['--config', str(out / 'config.yaml')])
    assert args.epochs == 2 and args.model_kwargs['embed_dim'] == 32 and args.kan_reg_weight == 1.0e-4


def test_resume_continues_exactly(image_folder, tmp_path, monkeypatch):
    # every source of randomness on: mixup/cutmix (numpy), RandAugment (random), erasing and crops (torch),
    # EMA, a grid update after each epoch, a per-update schedule with warmup
    flags = [*TINY_VIT, '--epochs', '3', '--batch-size', '8', '--lr', '1.0e-2', '--no-scale-lr', '--sched-on-updates',
             '--warmup-epochs', '1', '--model-ema', '--model-ema-decay', '0.9', '--grid-update-every', '1',
             '--mixup', '0.8', '--cutmix', '1.0', '--aa', 'rand-m9-mstd0.5-inc1', '--reprob', '0.25']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert main.main(common_args(image_folder, straight, *flags)) == 0

    log_epoch = main.RunLog.log_epoch

    def killed_after_first_epoch(self, row):
        log_epoch(self, row)
        if row['epoch'] == 1:
            raise KeyboardInterrupt  # the job dies between epochs

    monkeypatch.setattr(main.RunLog, 'log_epoch', killed_after_first_epoch)
    assert main.main(common_args(image_folder, resumed, *flags)) == 130
    monkeypatch.setattr(main.RunLog, 'log_epoch', log_epoch)
    assert main.main(common_args(image_folder, resumed, *flags, '--resume', str(resumed / 'checkpoint.pth'))) == 0

    a, b = _log(straight), _log(resumed)
    assert [r['epoch'] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ('train_loss', 'train_lr', 'test_loss', 'test_acc1', 'ema_acc1'):
            assert abs(ra[key] - rb[key]) <= 1e-6, (ra['epoch'], key, ra[key], rb[key])
    ca, cb = load_checkpoint(straight / 'checkpoint.pth'), load_checkpoint(resumed / 'checkpoint.pth')
    for part in ('model', 'model_ema'):
        for k in ca[part]:
            torch.testing.assert_close(ca[part][k], cb[part][k], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the other modes

@register_model
def class0_teacher_test(pretrained: bool = False, num_classes: int = 3, **kwargs) -> nn.Module:
    """A teacher whose answer is class 0 for every image: logits (4, 0, 0, ...)."""

    class Class0(nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = nn.Parameter(torch.tensor([4.0] + [0.0] * (num_classes - 1)))

        def forward(self, x):
            return self.logits.expand(x.shape[0], -1)

    return Class0()


def _dist_head_p0(out: Path, data: Path) -> float:
    """Mean softmax probability of class 0 from the distillation head of out/checkpoint.pth on the val images."""
    student = timm.create_model('vit_kan_tiny_distilled', num_classes=3, img_size=16, patch_size=8, depth=2,
                                embed_dim=32, num_heads=2)
    student.load_state_dict(load_checkpoint(out / 'checkpoint.pth')['model'])
    from vision_kan.train.data import TransformConfig, build_transform
    tf = build_transform(False, TransformConfig(input_size=16))
    from torchvision.datasets import ImageFolder
    x = torch.stack([img for img, _ in ImageFolder(str(data / 'val'), transform=tf)])
    with torch.no_grad():
        feats = student.eval().forward_features(x)  # (B, 2 + N, C): class token, distillation token, patches
        return student.head_dist(feats[:, 1]).softmax(-1)[:, 0].mean().item()


@pytest.mark.parametrize('kind', ['soft', 'hard'])
def test_distillation_pulls_the_dist_head_to_the_teacher(image_folder, tmp_path, monkeypatch, kind):
    built = []  # the criterion main.py builds
    build = main.build_criterion
    monkeypatch.setattr(main, 'build_criterion', lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    student = ['--model', 'vit_kan_tiny_distilled', '--input-size', '16', '--model-kwargs', 'patch_size=8', 'depth=2',
               'embed_dim=32', 'num_heads=2', '--batch-size', '8', '--smoothing', '0', '--lr', '1.0e-2',
               '--no-scale-lr', '--teacher-model', 'class0_teacher_test', '--teacher-random-init',
               '--distillation-type', kind, '--distillation-alpha', '0.5', '--distillation-tau', '2.0']
    before = tmp_path / 'before'
    assert main.main(common_args(image_folder, before, *student, '--epochs', '1', '--lr', '0')) == 0  # untrained
    assert main.main(common_args(image_folder, tmp_path / kind, *student, '--epochs', '3')) == 0
    assert 'head_dist.weight' in load_checkpoint(tmp_path / kind / 'checkpoint.pth')['model']
    # the teacher (always class 0) pulled the distillation head: p(class 0) from ~1/3 to most of the mass
    p0_before, p0_after = _dist_head_p0(before, image_folder), _dist_head_p0(tmp_path / kind, image_folder)
    assert p0_before < 0.5 and p0_after > 0.8, (p0_before, p0_after)
    # the criterion trained with: (1 - alpha) CE on the class head + alpha x the teacher term, not plain CE
    criterion, _ = built[-1]
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
    cls, dist = torch.randn(4, 3), torch.randn(4, 3)
    ce = F.cross_entropy(cls, y)
    teacher = torch.tensor([4.0, 0.0, 0.0]).expand(4, 3)
    if kind == 'hard':
        term = F.cross_entropy(dist, torch.zeros(4, dtype=torch.long))
    else:  # tau^2 KL(teacher / tau || student / tau), averaged per image
        term = 4.0 * F.kl_div(F.log_softmax(dist / 2, 1), F.log_softmax(teacher / 2, 1), reduction='batchmean',
                              log_target=True)
    value = criterion(x, (cls, dist), y)
    torch.testing.assert_close(value, 0.5 * ce + 0.5 * term)
    assert abs(value.item() - ce.item()) > 0.05


def test_eval_with_only_val_builds_the_model_from_the_checkpoint(image_folder, tmp_path, capsys):
    assert main.main(common_args(image_folder, tmp_path / 'run', *TINY_VIT, '--epochs', '1', '--batch-size', '8')) == 0
    trained = _log(tmp_path / 'run')[0]
    for p in sorted((image_folder / 'train').rglob('*'), reverse=True):  # val/ alone is left
        p.unlink() if p.is_file() else p.rmdir()
    (image_folder / 'train').rmdir()
    capsys.readouterr()
    # no --model, --input-size or --model-kwargs: they come from the checkpoint's config; batch 7 and 64 pass (no
    # training-side checks: mixup's even batch, a batch larger than the training data)
    for batch in ('7', '64'):
        assert main.main(['--eval', '--resume', str(tmp_path / 'run' / 'best.pth'), '--data-path', str(image_folder),
                          '--device', 'cpu', '--num-workers', '0', '--batch-size', batch, '--mixup', '0.8']) == 0
        printed = capsys.readouterr().out
        assert "in vit_kan_tiny (input size 16, model kwargs {'patch_size': 8, 'depth': 2" in printed
        assert f'Accuracy on 12 val images: acc1 {trained["test_acc1"]:.2f}' in printed
        assert f'loss {trained["test_loss"]:.4f}' in printed
    # a flag on the command line wins over the checkpoint's config (and a mismatch is the usual one-line error)
    assert main.main(['--eval', '--resume', str(tmp_path / 'run' / 'best.pth'), '--data-path', str(image_folder),
                      '--device', 'cpu', '--num-workers', '0', '--model-kwargs', 'embed_dim=48']) == 2
    assert 'does not match model vit_kan_tiny' in _one_error_line(capsys)


def test_help_shows_every_flag_with_help_and_the_recipe_defaults(capsys):
    parser = main.get_args_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    device = next(a for a in parser._actions if a.dest == 'device')
    assert '' not in device.choices and device.default is None
    with pytest.raises(SystemExit) as info:
        main.parse_args(['--config', str(main.DEMO_CONFIG), '--help'])
    assert info.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert 'images per process and step (default: 32)' in text  # the demo recipe's, not argparse's 64
    assert '--model MODEL any timm model name (default: kan_mlp)' in text
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith('--')]
    assert all(f in text for f in flags)
    assert text.count('(default: ') >= len([a for a in parser._actions if a.dest != 'help'])


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_amp_runs_on_cpu(image_folder, tmp_path, monkeypatch, dtype):
    seen = []  # the dtype of the classifier's output in every training forward
    build = main.build_model

    def probed(*args, **kwargs):
        model = build(*args, **kwargs)
        model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
        return model

    monkeypatch.setattr(main, 'build_model', probed)
    assert main.main(common_args(image_folder, tmp_path / dtype, *TINY_VIT, '--epochs', '1', '--batch-size', '8',
                                 '--amp', '--amp-dtype', dtype, '--clip-grad', '1.0')) == 0
    assert seen == [getattr(torch, dtype)] * 3  # 24 images, batch 8: autocast in effect in each of the 3 steps
    loss = _log(tmp_path / dtype)[0]['train_loss']
    assert loss == loss and abs(loss) != float('inf')
    scaler = load_checkpoint(tmp_path / dtype / 'checkpoint.pth')['scaler']
    if dtype == 'float16':  # GradScaler.update ran in each of the 3 steps: a good step counts in the growth
        # tracker, an overflow halves the scale from its initial 2^16 (measured: one overflow, then 2 good steps)
        assert scaler is not None
        assert scaler['_growth_tracker'] + round(math.log2(65536.0 / scaler['scale'])) == 3, scaler
    else:
        assert scaler is None  # bfloat16 needs none


def test_bce_loss_trains_with_mixup(image_folder, tmp_path):
    assert main.main(common_args(image_folder, tmp_path / 'bce', *TINY_VIT, '--epochs', '1', '--batch-size', '8',
                                 '--bce-loss', '--mixup', '0.8', '--cutmix', '1.0', '--smoothing', '0')) == 0
    loss = _log(tmp_path / 'bce')[0]['train_loss']
    assert 0.4 < loss < 0.9  # per-class sigmoid BCE starts near ln 2 = 0.69; the 3-class CE would start near 1.10


def test_three_augment_run(image_folder, tmp_path):
    assert main.main(common_args(image_folder, tmp_path / 'three', *TINY_VIT, '--epochs', '1', '--batch-size', '8',
                                 '--three-augment', '--train-crop', 'pad')) == 0
    assert main.parse_args(['--config', str(tmp_path / 'three' / 'config.yaml')]).three_augment


def test_embedded_demo_shortened(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(['--demo', '--epochs', '3']) == 0
    out = tmp_path / 'output' / 'demo_digits'
    assert (tmp_path / 'output' / 'digits' / 'train' / '9').is_dir()
    rows = _log(out)
    assert rows[-1]['test_acc1'] >= 90.0  # 3 of the demo's 15 epochs (the full demo reaches about 98)
    assert 'best val acc1' in capsys.readouterr().out
    assert main.main(['--demo', '--epochs', '1']) == 0  # runs again over its own output (overwrite: true)


# ---------------------------------------------------------------- bad input

@register_model
def nan_after_four_steps_test(pretrained: bool = False, num_classes: int = 3, **kwargs) -> nn.Module:
    """A linear classifier whose output turns NaN from its 5th training forward (24 images, batch 8: epoch 2)."""

    class NaNAfter(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 16 * 16, num_classes)
            self.register_buffer('calls', torch.zeros((), dtype=torch.long))

        def forward(self, x):
            if self.training:
                self.calls += 1
            y = self.fc(x.flatten(1))
            return y * float('nan') if self.calls > 4 else y

    return NaNAfter()


def _bad_data(root: Path, kind: str) -> Path:
    data = make_image_folder(root / kind)
    if kind == 'empty_class':
        for p in (data / 'train' / 'class_1').iterdir():
            p.unlink()
    elif kind == 'corrupt':
        (data / 'train' / 'class_2' / '3.png').write_bytes(b'definitely not a png')
    return data


# the bad-input cases that are only flags added to the resumed run
FLAG_CASES = {
    'unknown_model': ['--model', 'vit_kan_tinny'],
    'batch_too_large': ['--batch-size', '64'],
    'cli_type': ['--epochs', 'x'],
    'grid_eps': ['--grid-update-eps', '2'],
    'compile_backend': ['--compile', '--compile-backend', 'inductr'],
    'unknown_opt': ['--opt', 'adamww'],
    'opt_kwargs': ['--opt-kwargs', 'fusd=True'],
    'unknown_sched': ['--sched', 'cosin'],
    'patch_size_0': ['--model-kwargs', 'patch_size=0'],
    'drop_path': ['--drop-path', '1.5'],
    'min_lr': ['--min-lr', '-1'],
    'grid_tokens': ['--grid-update-epochs', '1', '--grid-update-tokens', '0'],
    'scale': ['--scale', '1.0', '0.5'],
    'remode': ['--remode', 'weird'],
    'aa': ['--aa', 'autoaug'],
    'interpolation': ['--aa', 'rand-m9-mstd0.5-inc1', '--train-interpolation', 'lanczos'],
    'bce_smoothing': ['--bce-loss', '--mixup', '0.8', '--smoothing', '0.1'],
}


@pytest.mark.parametrize('case, fragment', [
    ('missing_data', 'does not exist'),
    ('empty_class', 'class_1 has no images'),
    ('corrupt', 'corrupt image file'),
    ('unknown_model', "unknown model 'vit_kan_tinny'"),
    ('unknown_key', "unknown key 'learning_rate'"),
    ('typed_value', "must be a float, got the string '5e-4'"),
    ('mismatch', 'does not match model kan_mlp'),
    ('unwritable', 'cannot be written'),
    ('batch_too_large', '--batch-size 64 is larger than'),
    ('cli_type', "argument --epochs: invalid int value: 'x'"),
    ('grid_eps', '--grid-update-eps must be in [0, 1], got 2.0'),
    ('compile_backend', "--compile-backend 'inductr' is not a torch.compile backend"),
    ('unknown_opt', '--opt adamww: Optimizer adamww not found'),
    ('opt_kwargs', "--opt adamw --opt-kwargs fusd=True: AdamW.__init__() got an unexpected keyword argument 'fusd'"),
    ('unknown_sched', "--sched cosin: Unknown scheduler 'cosin'"),
    ('drop_path', '--drop-path 1.5: must be in [0, 1)'),
    ('min_lr', '--min-lr -1.0: must be >= 0'),
    ('grid_tokens', '--grid-update-tokens 0: must be >= 1'),
    ('patch_size_0', "'num_heads': 2}: ZeroDivisionError: integer division or modulo by zero"),
    ('scale', '--scale 1.0 0.5: must be LOW HIGH with 0 < LOW <= HIGH'),
    ('remode', "--remode 'weird': random erasing fills with one of pixel, rand, const"),
    ('aa', "--aa 'autoaug': timm's create_transform refused it (AssertionError: Unknown AA policy autoaug)"),
    ('interpolation', "--train-interpolation 'lanczos': one of bicubic, bilinear, nearest, random (with --aa)"),
    ('bce_smoothing', '--bce-loss with mixup/cutmix binarises the mixed targets'),
    ('no_teacher_weights', '--teacher-path'),
    ('not_distilled', 'has no distillation token'),
    ('nan', 'training loss is nan at epoch 2, step 2'),
    ('eval_no_weights', '--eval needs weights to evaluate: --resume CHECKPOINT'),
    ('eval_other_classes', 'val has 2 class folders, the model in'),
    ('resume_truncated', 'is damaged or truncated'),
    ('finetune_missing', '--finetune: checkpoint file'),
])
def test_bad_input_exits_2_with_one_line_and_keeps_files(tmp_path, capsys, case, fragment):
    previous = tmp_path / 'previous'  # an earlier run's files, sitting where the bad run points
    data = _bad_data(tmp_path, 'good')
    model = ['--model', 'kan_mlp', '--input-size', '16'] if case == 'mismatch' else TINY_VIT
    flags = ['--epochs', '1', '--batch-size', '8']
    assert main.main(common_args(data, previous, *TINY_VIT, *flags)) == 0
    capsys.readouterr()
    before = _digest(previous)

    out, extra = previous, ['--resume', str(previous / 'checkpoint.pth'), '--epochs', '2']
    if case == 'missing_data':
        data = tmp_path / 'nowhere'
    elif case in ('empty_class', 'corrupt'):
        data = _bad_data(tmp_path, case)
    elif case in FLAG_CASES:
        extra += FLAG_CASES[case]
    elif case in ('unknown_key', 'typed_value'):
        (tmp_path / 'r.yaml').write_text('learning_rate: 5.0e-4\n' if case == 'unknown_key' else 'lr: 5e-4\n')
        extra += ['--config', str(tmp_path / 'r.yaml')]
    elif case == 'unwritable':
        (tmp_path / 'a_file').write_text('x')
        out, extra = tmp_path / 'a_file' / 'run', []
    elif case in ('no_teacher_weights', 'not_distilled'):
        extra += ['--distillation-type', 'soft', '--teacher-model', 'kan_mlp']
        if case == 'no_teacher_weights':
            extra += ['--model', 'vit_kan_tiny_distilled']
    elif case == 'nan':
        out, extra = tmp_path / 'nan', ['--model', 'nan_after_four_steps_test', '--epochs', '3']
    elif case == 'eval_no_weights':
        extra = ['--eval']
    elif case == 'eval_other_classes':
        data = make_image_folder(tmp_path / 'two_classes', num_classes=2)
        extra += ['--eval']
    elif case in ('resume_truncated', 'finetune_missing'):  # checked before the data (which is missing too)
        cut = (previous / 'checkpoint.pth').read_bytes()[:4096]
        (tmp_path / 'cut.pth').write_bytes(cut)
        data = tmp_path / 'nowhere'
        extra = ['--resume', str(tmp_path / 'cut.pth')] if case == 'resume_truncated' else \
            ['--finetune', str(tmp_path / 'none.pth')]
    rc = main.main(common_args(data, out, *model, *flags, *extra))
    assert rc == 2
    line = _one_error_line(capsys)
    assert fragment in line, line
    assert _digest(previous) == before  # nothing already written was lost or changed
    if case == 'nan':  # the run stopped in epoch 2: epoch 1's checkpoint is there and loads
        assert 'checkpoint.pth (the last good state) is untouched' in line
        assert load_checkpoint(out / 'checkpoint.pth')['epoch'] == 0 and len(_log(out)) == 1


def test_compiled_training_matches_eager(image_folder, tmp_path):
    # aot_eager runs dynamo + AOT autograd (what inductor builds on) without generating code: the compiled training
    # step must give the eager losses, also after a grid update changed the KAN buffers between the epochs
    flags = [*TINY_VIT, '--epochs', '2', '--batch-size', '8', '--grid-update-every', '1', '--model-ema',
             '--model-ema-decay', '0.9']
    from torch._dynamo.utils import counters
    assert main.main(common_args(image_folder, tmp_path / 'eager', *flags)) == 0
    counters.clear()
    assert main.main(common_args(image_folder, tmp_path / 'compiled', *flags, '--compile',
                                 '--compile-backend', 'aot_eager')) == 0
    assert counters['stats']['unique_graphs'] >= 1 and not counters['graph_break']  # compiled whole, no fallback
    eager, compiled = _log(tmp_path / 'eager'), _log(tmp_path / 'compiled')
    for key in ('train_loss', 'test_loss', 'ema_acc1'):
        assert [r[key] for r in compiled] == pytest.approx([r[key] for r in eager], rel=1e-4), key
    state = load_checkpoint(tmp_path / 'compiled' / 'checkpoint.pth')['model']
    assert not any(k.startswith('_orig_mod') for k in state)  # the checkpoint holds the plain model's keys
    assert state.keys() == load_checkpoint(tmp_path / 'eager' / 'checkpoint.pth')['model'].keys()


def test_auto_resume_starts_then_continues_then_has_nothing_to_do(image_folder, tmp_path, capsys):
    flags = common_args(image_folder, tmp_path / 'run', *TINY_VIT, '--batch-size', '8', '--auto-resume')
    assert main.main([*flags, '--epochs', '1']) == 0  # no checkpoint yet: starts
    assert main.main([*flags, '--epochs', '2']) == 0  # continues from run/checkpoint.pth
    assert 'resumed from' in capsys.readouterr().out and [r['epoch'] for r in _log(tmp_path / 'run')] == [1, 2]
    before = _digest(tmp_path / 'run')
    assert main.main([*flags, '--epochs', '2']) == 0  # a restart after the last epoch: exit 0, nothing touched
    assert 'already finished 2 of 2 epochs; nothing to do' in capsys.readouterr().out
    assert _digest(tmp_path / 'run') == before
    assert main.main([*flags, '--epochs', '2', '--overwrite']) == 2
    assert '--auto-resume continues a training run: it does not go with --overwrite' in _one_error_line(capsys)


def test_fresh_run_refuses_to_overwrite_a_checkpoint(image_folder, tmp_path, capsys):
    flags = common_args(image_folder, tmp_path / 'run', *TINY_VIT, '--epochs', '1', '--batch-size', '8')
    assert main.main(flags) == 0
    before = _digest(tmp_path / 'run')
    capsys.readouterr()
    assert main.main(flags) == 2
    assert '--overwrite' in _one_error_line(capsys)
    assert _digest(tmp_path / 'run') == before


def test_cli_process_exit_code_and_single_stderr_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / 'main.py'), '--data-path', str(tmp_path / 'none'),
                           '--device', 'cpu'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f'error: --data-path: {tmp_path / "none"} does not exist']


# ---------------------------------------------------------------- DDP

_RANK_SCRIPT = """
import hashlib, json, os, sys
sys.path.insert(0, {repo!r})
import main
states = []
evaluate = main.evaluate
def recording_evaluate(*, model, **kwargs):  # called after each epoch's grid update, for the model and its EMA
    states.append({{k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
                   for k, v in model.state_dict().items()}})
    return evaluate(model=model, **kwargs)
main.evaluate = recording_evaluate
rc = main.main(sys.argv[1:])
with open(os.path.join({out!r}, 'rank' + os.environ['RANK'] + '.json'), 'w') as f:
    json.dump({{'rc': rc, 'states': states}}, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_process_gloo_keeps_replicas_identical(image_folder, tmp_path):
    script = tmp_path / 'rank_script.py'
    script.write_text(textwrap.dedent(_RANK_SCRIPT.format(repo=str(REPO), out=str(tmp_path))))
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
           str(script), *common_args(image_folder, out, *TINY_VIT, '--epochs', '2', '--batch-size', '4',
                                     '--lr', '1.0e-2', '--no-scale-lr', '--grid-update-epochs', '1', '--model-ema',
                                     '--model-ema-decay', '0.9', '--kan-reg-weight', '1.0e-3',
                                     '--print-state-hash')]
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert ranks[0]['rc'] == ranks[1]['rc'] == 0
    assert len(ranks[0]['states']) == 4  # 2 epochs x (model, EMA)
    assert ranks[0]['states'] == ranks[1]['states']  # every parameter and grid, bit for bit, on both ranks
    assert 'KAN grids of 4 layers re-placed' in proc.stdout
    digests = sorted(line.split(': ', 1) for line in proc.stdout.splitlines() if line.startswith('state rank'))
    assert [rank for rank, _ in digests] == ['state rank 0/2 ema', 'state rank 0/2 model',
                                             'state rank 1/2 ema', 'state rank 1/2 model']
    assert digests[0][1] == digests[2][1] and digests[1][1] == digests[3][1]  # the printed replica check agrees
    ckpt = load_checkpoint(out / 'checkpoint.pth')
    assert len(ckpt['rng']) == 2  # both ranks' RNG states, for an exact resume
    grid = ckpt['model']['blocks.1.mlp.fc2.grid']
    assert not torch.allclose(grid, uniform_knots(grid.shape[0], 5, 3))
    assert not (out / 'rank1').exists() and sorted(p.name for p in out.iterdir()) == \
        ['best.pth', 'checkpoint.pth', 'config.yaml', 'log.txt', 'model.safetensors', 'tensorboard']


def test_opt_kwargs_reach_the_optimizer(tmp_path):
    """--opt-kwargs fused=True (command line or recipe) reaches torch's AdamW, whose fused step then runs; without it
    the optimizer is timm's default AdamW (not fused)."""
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('opt_kwargs: {fused: true}\n')
    layer = nn.Linear(4, 4)
    for argv, fused in ((['--opt-kwargs', 'fused=True'], True), (['--config', str(recipe)], True), ([], None)):
        args = main.parse_args(['--synthetic-data', *argv])
        opt = main.build_optimisation(args, layer, 1, 10, None, torch.device('cpu')).optimizer
        assert isinstance(opt, torch.optim.AdamW) and opt.defaults['fused'] is fused
        layer(torch.randn(2, 4)).sum().backward()
        before = layer.weight.detach().clone()
        opt.step()
        opt.zero_grad()
        assert not torch.equal(before, layer.weight)
