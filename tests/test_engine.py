"""Engine building blocks on their own: samplers, recipe validation, EMA of KAN grids, grid-update orchestration,
losses, atomic checkpoints, fine-tune loading, corrupt images. CPU, generated data, seconds."""
import copy
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, TensorDataset

import main
import vision_kan  # noqa: F401
import vision_kan.models.kan_mlp  # noqa: F401
from vision_kan.train.checkpoint import (
    get_rng_state, load_checkpoint, load_finetune_state, load_model_state, save_atomic, set_rng_state,
)
from vision_kan.train.config import load_config, save_config
from vision_kan.train.data import build_datasets, build_loaders, build_transform, TransformConfig
from vision_kan.train.ema import KanModelEma, kan_buffer_names
from vision_kan.train.errors import CheckpointError, ConfigError, CorruptImageError, DataError
from vision_kan.train.kan_training import grid_update_due, outermost_modules_with, update_kan_grids
from vision_kan.train.losses import DistillationLoss, KanRegularizedLoss, build_base_criterion
from vision_kan.train.samplers import RepeatedAugSampler, ShardSampler

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- samplers

@pytest.mark.parametrize('n, world', [(1, 2), (5, 2), (7, 3), (300, 8), (2, 8)])
def test_repeated_aug_sampler_never_empty_and_deals_repeats(n, world):
    samplers = [RepeatedAugSampler(range(n), world, r, num_repeats=3, seed=1) for r in range(world)]
    for s in samplers:
        s.set_epoch(4)
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == len(s) == -(-n // world) > 0 for p, s in zip(per_rank, samplers))
    assert all(0 <= i < n for p in per_rank for i in p)
    # a new epoch reshuffles, the same epoch repeats exactly
    samplers[0].set_epoch(4)
    assert list(samplers[0]) == per_rank[0]
    if n >= world * 2:
        # the copies of one image go to different ranks at the same position
        firsts = [p[0] for p in per_rank]
        assert len(set(firsts[:3])) == 1
        samplers[0].set_epoch(5)
        assert list(samplers[0]) != per_rank[0]


def test_small_data_set_gives_every_rank_full_steps_with_repeats():
    # DeiT's sampler keeps floor(n / 256) * 256 / world indices per rank: none at all for 200 images on 2 ranks
    n, world = 200, 2
    samplers = [RepeatedAugSampler(range(n), world, r, num_repeats=3, seed=0) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert [len(p) for p in per_rank] == [100, 100]
    # the 200 draws are the first ceil(200 / 3) = 67 images of the epoch's permutation, 3 copies each (the last 2)
    counts = sorted(Counter(i for p in per_rank for i in p).values())
    assert len(counts) == 67 and counts == [2] + [3] * 66
    assert all(len(DataLoader(range(n), batch_size=32, sampler=s, drop_last=True)) == 3 for s in samplers)


def test_shard_sampler_covers_each_index_once():
    shards = [list(ShardSampler(range(11), 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


# ---------------------------------------------------------------- recipes

def _parser():
    return main.get_args_parser()


@pytest.mark.parametrize('text, fragment', [
    ('lr: 5e-4\n', "write 5.0e-4"),
    ('learning_rate: 5.0e-4\n', "unknown key 'learning_rate' (keys are flag names with underscores); did you mean "
                                 "'lr' (--lr)?"),
    ('num_epochs: 3\n', "did you mean 'epochs' (--epochs)?"),
    ('drop_path_rate: 0.1\n', "did you mean 'drop_path' (--drop-path)?"),
    ('wd: 0.1\n', "did you mean 'weight_decay' (--weight-decay)?"),
    ('grid_update_epoch: [1]\n', "did you mean 'grid_update_epochs' (--grid-update-epochs)?"),
    ('batch-size: 8\n', "did you mean 'batch_size'"),
    ('model_ema: 1\n', "'model_ema' must be a bool"),
    ('batch_size: 8.5\n', "'batch_size' must be an int"),
    ('scale: [0.5]\n', "'scale' must have 2 values"),
    ('distillation_type: medium\n', "not one of"),
    ('epochs: null\n', "cannot be null"),
    ('- lr\n', 'must hold a mapping'),
    ('lr: [1\n', 'not valid YAML'),
])
def test_recipe_validation_errors(tmp_path, text, fragment):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match='.*') as info:
        load_config(str(path), _parser())
    assert fragment in str(info.value) and '\n' not in str(info.value)


def test_recipe_types_are_widened_and_saved_config_round_trips(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('lr: 1\ngrid_update_epochs: [1, 3]\nclip_grad: null\nmodel_kwargs: {patch_size: 4}\n'
                    'repeated_aug: false\nscale: [0.5, 1]\n')
    cfg = load_config(str(path), _parser())
    assert cfg['lr'] == 1.0 and isinstance(cfg['lr'], float) and cfg['scale'] == [0.5, 1.0]
    args = main.parse_args(['--config', str(path), '--data-path', 'x', '--lr', '0.25', '--model-kwargs', 'depth=2'])
    assert args.lr == 0.25  # command line over the recipe
    assert args.model_kwargs == {'patch_size': 4, 'depth': 2}  # merged over the recipe's dict
    assert args.repeated_aug is False and args.grid_update_epochs == [1, 3]
    save_config(args, tmp_path / 'saved.yaml')
    again = main.parse_args(['--config', str(tmp_path / 'saved.yaml')])
    assert {k: v for k, v in vars(again).items() if k != 'config'} == \
        {k: v for k, v in vars(args).items() if k != 'config'}


def test_every_config_in_deit_configs_is_valid():
    paths = sorted((REPO / 'deit_configs').glob('*.yaml'))
    assert len(paths) >= 5
    for path in paths:
        args = main.parse_args(['--config', str(path), '--data-path', 'x'])
        timm.create_model(args.model, num_classes=10, img_size=args.input_size, **args.model_kwargs)


# ---------------------------------------------------------------- EMA and grids

def _kan_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model('kan_mlp', img_size=4, in_chans=1, hidden_dims=(6,), num_classes=3)


def test_ema_copies_kan_grids_and_averages_parameters():
    model = _kan_model()
    ema = KanModelEma(model, decay=0.5)
    assert 'layers.0.grid' in ema.copy_keys and 'head.grid' in ema.copy_keys
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.layers[0].update_grid(torch.randn(64, 16) * 3)  # new knots on the live model
    old_ema = {k: v.clone() for k, v in ema.module.state_dict().items()}
    ema.update(model)
    live = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if k.endswith('grid'):
            assert torch.equal(v, live[k]), k  # copied
        else:
            torch.testing.assert_close(v, 0.5 * old_ema[k] + 0.5 * live[k])  # averaged
    # timm's ModelEmaV3 alone would average the knots
    plain = ModelEmaV3(_kan_model(), decay=0.5)
    plain.update(model)
    assert not torch.equal(plain.module.layers[0].grid, model.layers[0].grid)


def test_ema_matches_timm_v3_without_kan_layers_and_follows_reassigned_buffers():
    """The cached state slots (no state_dict() a step) give timm's ModelEmaV3 update exactly, BatchNorm statistics
    and the integer counter included, and read a buffer that was reassigned after the first update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    ours, timms = KanModelEma(model, decay=0.8), ModelEmaV3(model, decay=0.8)
    assert not ours.copy_keys
    for step in range(3):
        model.train()
        model(torch.randn(8, 4)).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
        if step == 1:
            model[1].running_mean = torch.full((3,), 5.0)  # a new tensor object in the same slot
        ours.update(model)
        timms.update(model)
        for (k, a), b in zip(ours.module.state_dict().items(), timms.module.state_dict().values()):
            assert torch.equal(a, b), (step, k)
    assert ours.module[1].num_batches_tracked.item() == 3
    with pytest.raises(ValueError, match='state entries differ'):
        ours.update(nn.Sequential(nn.Linear(4, 3)))


def test_kan_buffer_names_picks_up_any_layer_with_regularization_loss():
    class ConvKANish(nn.Module):  # a conv-KAN layer of another family: penalty, own buffer, no update_grid
        def __init__(self):
            super().__init__()
            self.register_buffer('grid', torch.linspace(-1, 1, 5))
            self.w = nn.Parameter(torch.ones(2))

        def regularization_loss(self):
            return self.w.abs().sum()

    net = nn.Sequential(ConvKANish(), nn.BatchNorm1d(2))
    assert kan_buffer_names(net) == {'0.grid'}


def test_grid_update_moves_live_and_ema_onto_same_knots_and_keeps_functions():
    torch.manual_seed(0)
    model = _kan_model()
    ema = KanModelEma(model, decay=0.9)
    with torch.no_grad():  # the EMA has drifted from the live model
        for p in ema.module.parameters():
            p.mul_(0.9)
    images = torch.randn(40, 1, 4, 4) * 2.5  # inputs well outside the initial grid [-1, 1]
    loader = DataLoader(TensorDataset(images, torch.zeros(40, dtype=torch.long)), batch_size=10)
    model.eval()
    ema.module.eval()
    with torch.no_grad():
        live_before, ema_before = model(images), ema.module(images)
    n = update_kan_grids(model, loader, torch.device('cpu'), max_tokens=4096, ema_model=ema.module)
    assert n == 2
    for name in ('layers.0', 'head'):
        live_grid = dict(model.named_modules())[name].grid
        assert torch.equal(dict(ema.module.named_modules())[name].grid, live_grid)
    assert model.layers[0].grid.min() < -2.0  # knots followed the data
    with torch.no_grad():
        torch.testing.assert_close(model(images), live_before, atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(ema.module(images), ema_before, atol=2e-3, rtol=1e-3)
    assert model.training is False  # restored as it was


def test_uniform_grid_update_keeps_knots_uniform_for_the_fused_kernels():
    torch.manual_seed(0)
    model = _kan_model()
    ema = KanModelEma(model, decay=0.9)
    images = torch.randn(40, 1, 4, 4) * 2.5
    loader = DataLoader(TensorDataset(images, torch.zeros(40, dtype=torch.long)), batch_size=10)
    update_kan_grids(model, loader, torch.device('cpu'), ema_model=ema.module, grid_eps=1.0)
    for name in ('layers.0', 'head'):
        live, shadow = dict(model.named_modules())[name], dict(ema.module.named_modules())[name]
        assert live.grid_uniform and shadow.grid_uniform and torch.equal(live.grid, shadow.grid)


def test_grid_update_schedule():
    assert grid_update_due(10, epochs=[10, 20])
    assert not grid_update_due(11, epochs=[10, 20])
    assert [e for e in range(1, 13) if grid_update_due(e, every=4, until=8)] == [4, 8]
    assert not grid_update_due(3)


def test_kan_penalty_is_summed_once_per_outermost_layer():
    model = _kan_model()
    mods = [m for _, m in outermost_modules_with(model, 'regularization_loss')]
    assert len(mods) == 2
    base = lambda inputs, outputs, targets: F.cross_entropy(outputs, targets)  # noqa: E731
    crit = KanRegularizedLoss(base, mods, weight=0.1)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    out = model(x)
    penalty = model.layers[0].regularization_loss() + model.head.regularization_loss()
    expected = F.cross_entropy(out, y) + 0.1 * penalty
    torch.testing.assert_close(crit(x, out, y), expected)
    with pytest.raises(ValueError, match='kan-reg-weight'):
        KanRegularizedLoss(base, [], 0.1)


# ---------------------------------------------------------------- distillation

def test_distillation_losses():
    torch.manual_seed(0)
    teacher = nn.Linear(5, 4)
    x, y = torch.randn(6, 5), torch.randint(0, 4, (6,))
    cls = torch.randn(6, 4)
    with torch.no_grad():
        t = teacher(x)
    soft = DistillationLoss(nn.CrossEntropyLoss(), teacher, 'soft', alpha=0.5, tau=2.0)
    # a student whose distillation head equals the teacher: KL = 0
    torch.testing.assert_close(soft(x, (cls, t.clone()), y), 0.5 * F.cross_entropy(cls, y))
    kd = torch.randn(6, 4)
    kl = F.kl_div(F.log_softmax(kd / 2, 1), F.softmax(t / 2, 1), reduction='sum') / 6 * 4
    torch.testing.assert_close(soft(x, (cls, kd), y), 0.5 * F.cross_entropy(cls, y) + 0.5 * kl)
    hard = DistillationLoss(nn.CrossEntropyLoss(), teacher, 'hard', alpha=0.5)
    torch.testing.assert_close(hard(x, (cls, kd), y),
                               0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(kd, t.argmax(1)))
    none = DistillationLoss(nn.CrossEntropyLoss(), None, 'none')
    torch.testing.assert_close(none(x, cls, y), F.cross_entropy(cls, y))
    with pytest.raises(ValueError, match='distilled'):
        soft(x, cls, y)


def test_bce_loss_binarises_mixed_targets_and_smooths_hard_ones():
    from timm.data import Mixup
    torch.manual_seed(0)
    logits, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    # no mixup: one-hot targets smoothed to (1 - s + s/K, s/K), one sigmoid per class
    smooth = torch.full((4, 5), 0.1 / 5).scatter_(1, y[:, None], 0.9 + 0.1 / 5)
    torch.testing.assert_close(build_base_criterion(False, 0.1, bce=True)(logits, y),
                               F.binary_cross_entropy_with_logits(logits, smooth))
    # mixup: every class with a share of the mixed image is a target (DeiT III's targets.gt(0.0))
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=5)
    _, soft = mix(torch.randn(4, 3, 8, 8), y)
    binary = (soft > 0).float()
    assert ((binary.sum(1) == 2) | (binary.sum(1) == 1)).all() and (soft < 1).any()
    torch.testing.assert_close(build_base_criterion(True, 0.0, bce=True)(logits, soft),
                               F.binary_cross_entropy_with_logits(logits, binary))


# ---------------------------------------------------------------- checkpoints

def test_save_atomic_survives_kill_9_mid_save(tmp_path):
    path = tmp_path / 'checkpoint.pth'
    save_atomic({'epoch': 1, 'w': torch.arange(5.0)}, path)
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(REPO)!r})
        from vision_kan.train.checkpoint import save_atomic
        class Slow:  # pickling it stalls the save half-way through writing the temporary file
            def __reduce__(self):
                print('writing', flush=True)
                time.sleep(60)
                return (int, (0,))
        save_atomic({{'epoch': 2, 'w': torch.zeros(100000), 'slow': Slow()}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'writing'
        assert list(tmp_path.glob('.checkpoint.pth.tmp-*'))  # the save is under way, in its temporary file
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(path)
    assert ckpt['epoch'] == 1 and torch.equal(ckpt['w'], torch.arange(5.0))
    save_atomic({'epoch': 3}, path)  # the next save clears the stale temporary file
    assert load_checkpoint(path)['epoch'] == 3
    assert not list(tmp_path.glob('.checkpoint.pth.tmp-*'))


def test_save_atomic_failure_keeps_previous(tmp_path):
    path = tmp_path / 'c.pth'
    save_atomic({'epoch': 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError):
        save_atomic({'epoch': 2, 'x': Boom()}, path)
    assert load_checkpoint(path)['epoch'] == 1 and os.listdir(tmp_path) == ['c.pth']


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path):
    import random

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_atomic({'rng': [get_rng_state()]}, tmp_path / 'r.pth')
    a = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(load_checkpoint(tmp_path / 'r.pth')['rng'][0])
    b = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_mismatched_checkpoint_is_one_line(tmp_path):
    state = _kan_model().state_dict()
    other = timm.create_model('kan_mlp', img_size=4, in_chans=1, hidden_dims=(7,), num_classes=3)
    with pytest.raises(CheckpointError) as info:
        load_model_state(other, state, 'x.pth', 'kan_mlp')
    msg = str(info.value)
    assert 'does not match model kan_mlp' in msg and 'shape mismatch' in msg and '\n' not in msg
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot read .*junk.pth: not a PyTorch checkpoint'):
        load_checkpoint(tmp_path / 'junk.pth')


@pytest.mark.parametrize('cut', ['half', 'tail', 'empty'])
def test_truncated_checkpoint_says_damaged_or_truncated(tmp_path, cut):
    torch.save({'model': _kan_model().state_dict(), 'epoch': 3}, tmp_path / 'full.pth')
    data = (tmp_path / 'full.pth').read_bytes()
    part = {'half': data[:len(data) // 2], 'tail': data[:-8], 'empty': b''}[cut]
    (tmp_path / 'cut.pth').write_bytes(part)
    for mmap in (False, True):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / 'cut.pth', '--resume', mmap=mmap)
        msg = str(info.value)
        assert msg.startswith(f'--resume: cannot read {tmp_path / "cut.pth"}: ') and '\n' not in msg
        assert ('is empty (0 bytes)' if cut == 'empty' else f'damaged or truncated ({len(part)} bytes') in msg, msg
    assert load_checkpoint(tmp_path / 'full.pth', mmap=True)['epoch'] == 3


# ---------------------------------------------------------------- progress

def test_piped_progress_prints_a_line_per_loop_even_when_shorter_than_print_freq():
    import io
    from vision_kan.train.progress import Progress
    for total, steps, lines in ((3, 3, 1), (120, 120, 3), (5, 3, 1), (100, 100, 2)):
        stream = io.StringIO()  # not a terminal: printed lines, no bar
        progress = Progress(total, 'Epoch 1/2', print_freq=50, stream=stream)
        for _ in range(steps):
            progress.update({'loss': 1.0})
        progress.close()
        printed = stream.getvalue().splitlines()
        assert len(printed) == lines, (total, steps, printed)
        assert printed[-1].startswith(f'Epoch 1/2 [{steps:>{len(str(total))}}/{total}] loss 1.0000')


def test_finetune_resamples_pos_embed_and_resets_head():
    kw = dict(patch_size=8, depth=1, embed_dim=16, num_heads=2)
    src = timm.create_model('vit_kan_tiny', img_size=16, num_classes=5, **kw)
    dst = timm.create_model('vit_kan_tiny', img_size=32, num_classes=2, **kw)
    head_before = dst.head.weight.clone()
    logs = []
    load_finetune_state(dst, src.state_dict(), 'src.pth', 'vit_kan_tiny', log=logs.append)
    assert dst.pos_embed.shape == (1, 17, 16)
    assert torch.equal(dst.head.weight, head_before)  # fresh head kept
    assert torch.equal(dst.blocks[0].mlp.fc1.spline_weight, src.blocks[0].mlp.fc1.spline_weight)
    assert torch.equal(dst.cls_token, src.cls_token)
    assert any('position embedding' in m for m in logs)
    with pytest.raises(CheckpointError, match='--finetune'):
        load_finetune_state(timm.create_model('vit_kan_tiny', img_size=16, num_classes=5, patch_size=8, depth=1,
                                              embed_dim=24, num_heads=2), src.state_dict(), 's.pth', 'x')


# ---------------------------------------------------------------- data

def test_corrupt_image_names_the_file_even_through_a_worker(image_folder):
    bad = image_folder / 'train' / 'class_1' / '2.png'
    bad.write_bytes(b'\x89PNG truncated')
    tf = build_transform(False, TransformConfig(input_size=16, eval_crop_ratio=1.0))
    train, val, n = build_datasets(str(image_folder), tf, tf)
    assert n == 3
    index = train.samples.index((str(bad), 1))
    with pytest.raises(CorruptImageError, match=str(bad)):
        train[index]
    loader = DataLoader(torch.utils.data.Subset(train, [index]), num_workers=1)
    with pytest.raises(CorruptImageError) as info:
        next(iter(loader))
    assert main._one_line(info.value).startswith(f'corrupt image file {bad}')


def test_loaders_reject_a_batch_larger_than_the_data(image_folder):
    tf = build_transform(False, TransformConfig(input_size=16))
    train, val, _ = build_datasets(str(image_folder), tf, tf)
    with pytest.raises(DataError, match='--batch-size 25'):
        build_loaders(train, val, 25, 0, False, 1, 0, True, 0)
    loader, _ = build_loaders(train, val, 24, 0, False, 1, 0, True, 0)
    assert len(loader) == 1


def test_train_and_val_classes_must_agree(image_folder):
    (image_folder / 'val' / 'class_9').mkdir()
    Path(image_folder / 'val' / 'class_0' / '0.png').rename(image_folder / 'val' / 'class_9' / '0.png')
    tf = build_transform(False, TransformConfig(input_size=16))
    with pytest.raises(DataError, match='different class folders'):
        build_datasets(str(image_folder), tf, tf)


def test_pad_crop_and_rrc_transforms_give_the_input_size():
    from PIL import Image
    img = Image.new('RGB', (40, 30))
    for crop in ('rrc', 'pad'):
        tf = build_transform(True, TransformConfig(input_size=32, train_crop=crop))
        assert tf(img).shape == (3, 32, 32)
    assert build_transform(False, TransformConfig(input_size=32, eval_crop_ratio=1.0))(img).shape == (3, 32, 32)


def test_three_augment_applies_one_of_three_to_a_colour_image():
    from PIL import Image
    torch.manual_seed(0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for crop in ('rrc', 'pad'):
        tf = build_transform(True, TransformConfig(input_size=32, train_crop=crop, three_augment=True, color_jitter=0))
        assert not any('RandAugment' in type(t).__name__ or 'Erasing' in type(t).__name__ for t in tf.transforms)
        outs = [tf(img) * std + mean for _ in range(60)]
        assert all(o.shape == (3, 32, 32) for o in outs)
        grey = sum(bool(torch.allclose(o[0], o[1], atol=1e-6) and torch.allclose(o[1], o[2], atol=1e-6)) for o in outs)
        assert 5 < grey < 40  # about a third grayscale: the choice is made per image


def test_randaugment_posterize_at_top_magnitude_works_with_current_pillow():
    from PIL import Image
    from timm.data.auto_augment import AugmentOp
    tf = build_transform(True, TransformConfig(input_size=16, aa='rand-m9-mstd0.5-inc1'))
    rand_aug = next(t for t in tf.transforms if hasattr(t, 'ops'))
    op = next(o for o in rand_aug.ops if isinstance(o, AugmentOp) and o.name == 'PosterizeIncreasing')
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # 4 - 4 = 0 bits kept: Pillow 13 raises on timm's own op
    out = op(Image.new('RGB', (16, 16), (200, 100, 50)))
    assert out.getextrema() == ((0, 0), (0, 0), (0, 0))  # black, as older Pillow gave


def test_state_digest_sees_every_bit_of_parameters_and_grids():
    from vision_kan.train.distributed import state_digest
    from vision_kan.train.ema import kan_buffer_names
    model = _kan_model()
    keys = sorted(kan_buffer_names(model))
    before = state_digest(model, keys)
    assert keys and before == state_digest(copy.deepcopy(model), keys)
    with torch.no_grad():
        model.layers[0].grid[0, 0] = torch.nextafter(model.layers[0].grid[0, 0], torch.tensor(0.0))  # one ulp
    after = state_digest(model, keys)
    assert after['buffers'] != before['buffers'] and after['params'] == before['params']
