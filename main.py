"""Train and evaluate vision_kan (and any timm) models the way DeiT trains DeiT.

    python main.py                                        # the embedded demo: KAN on bundled 8x8 digits, CPU, ~1 min
    python main.py --model vit_kan_tiny --data-path /data/imagenet               # one process
    torchrun --nproc_per_node=8 main.py --config deit_configs/vit_kan_tiny_imagenet.yaml --data-path /data/imagenet
    torchrun --nproc_per_node=2 main.py --config deit_configs/vit_kan_tiny_cifar10.yaml --data-path data/cifar10 \
        --device cpu                                      # CPU, gloo
    python main.py --eval --resume output/vit_kan_tiny/best.pth --data-path /data/imagenet   # val/ is enough
    torchrun --nproc_per_node=8 --max-restarts=3 main.py --config R.yaml --data-path /data/imagenet --auto-resume
    python main.py --finetune base.pth --input-size 384 --model vit_kan_tiny --data-path /data/other

Data: --data-path holds train/ and val/, one folder of images per class (ImageNet layout). A recipe (--config) is
a YAML file whose keys are the flags' dest names; flags given on the command line override it. The output dir
receives config.yaml, log.txt (one JSON line per epoch), tensorboard/, checkpoint.pth and best.pth.
Problems in the input (paths, recipe, data, checkpoints, a NaN loss) end with one line on stderr and exit code 2.
"""
import argparse
import datetime
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import vision_kan  # noqa: F401  (registers the models in timm)
from engine import autocast, evaluate, train_one_epoch
from vision_kan.train import checkpoint as ckpt_io
from vision_kan.train.config import (
    ArgumentParser, ParseKwargs, explicit_dests, load_config, preparse, save_config,
)
from vision_kan.train.data import (ERASE_MODES, DataConfig, TransformConfig, build_eval_data,
                                   build_grid_sample_loader, build_transform)
from vision_kan.train.data import build_data as build_backend_data
from vision_kan.train.distributed import (
    DistInfo, all_gather_object, barrier, cleanup_distributed, init_distributed, state_digest,
)
from vision_kan.train.ema import KanModelEma, kan_buffer_names
from vision_kan.train.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, UserInputError
from vision_kan.train.kan_training import (
    GridUpdateSchedule, grid_layers, outermost_modules_with, scheduled_grid_update,
)
from vision_kan.train.losses import AuxiliaryLoss, DistillationLoss, KanRegularizedLoss, build_base_criterion
from vision_kan.train.model_factory import check_model_name, count_gflops, count_params, create_model, create_teacher
from vision_kan.train.run_log import RunLog, results_table

DEMO_CONFIG = Path(__file__).resolve().parent / 'deit_configs' / 'demo_digits.yaml'
AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def get_args_parser() -> argparse.ArgumentParser:
    """DeiT's flags and defaults (dashed; booleans as --x/--no-x), plus the KAN and run-control flags. Every flag has
    a help line; --help shows each default (the recipe's, when --config is given)."""
    bool_flag = argparse.BooleanOptionalAction
    p = ArgumentParser('main.py', allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description='DeiT-style training of vision_kan / timm models. The defaults shown are '
                                   "argparse's, or the recipe's with --config (main.py --config R --help).")
    p.add_argument('--config', default=None, help='YAML recipe; keys are the dest names below')
    p.add_argument('--demo', action=bool_flag, default=False,
                   help='write the bundled 8x8 digits into --data-path when it is missing (`python main.py` alone)')
    g = p.add_argument_group('run')
    g.add_argument('--batch-size', type=int, default=64, help='images per process and step')
    g.add_argument('--epochs', type=int, default=300, help='training epochs (the schedule adds --cooldown-epochs)')
    g.add_argument('--data-path', default='', help='folder with train/ and val/ ImageFolders (--eval: val/ alone)')
    g.add_argument('--output-dir', default='', help="where the run's files go; empty: output/<model>")
    g.add_argument('--overwrite', action=bool_flag, default=False, help='start afresh in a dir holding a checkpoint')
    g.add_argument('--device', default=None, choices=['cuda', 'cpu'], help='unset: cuda when one is visible, else cpu')
    g.add_argument('--seed', type=int, default=0, help='seeds the init, the augmentations (+ rank), the data order')
    g.add_argument('--resume', default='', help='checkpoint to continue from (or to evaluate with --eval)')
    g.add_argument('--auto-resume', action=bool_flag, default=False,
                   help='continue from <output-dir>/checkpoint.pth when it exists, else start (or take --resume); '
                        'for torchrun --max-restarts')
    g.add_argument('--eval', action=bool_flag, default=False,
                   help="only evaluate the --resume (or --finetune) weights on val/; the model is built from the "
                        "checkpoint's config (flags given on the command line win)")
    g.add_argument('--quantize', default='none', choices=['none', 'int8'],
                   help='with --eval: also evaluate an int8 copy on the CPU (vision_kan.tools.quantize), sizes in MB')
    g.add_argument('--num-workers', type=int, default=10, help='DataLoader worker processes per training process')
    g.add_argument('--data-backend', default='pil', choices=['pil', 'gpu'],
                   help="pil: decode + augment in CPU workers; gpu: workers read bytes, nvjpeg decodes and the "
                        "augmentations run batched on the GPU (with --device cpu: batched on the CPU)")
    g.add_argument('--data-on-gpu', action=bool_flag, default=False,
                   help='decode the data set once into device memory (small sets of one image size, e.g. CIFAR) '
                        'and augment there')
    g.add_argument('--data-process', action=bool_flag, default=False,
                   help='gpu backends: make the training batches in a process of their own, so that their host work '
                        'runs beside the training loop instead of sharing its GIL (opt-in: see the README)')
    g.add_argument('--data-processes', type=int, default=1,
                   help='with --data-process: producer processes per training process; they take turns at the '
                        "epoch's batches (the same batches as one) and share --num-workers")
    g.add_argument('--data-on-gpu-group', type=int, default=0,
                   help='with --data-on-gpu: training batches augmented per call (same batches whatever the count; '
                        'fewer launches a batch). 0: automatic, up to 16 while their output stays within 64 MiB')
    g.add_argument('--synthetic-data', action=bool_flag, default=False,
                   help='random images and labels made on the device (no read/decode/augment): the speed ceiling')
    g.add_argument('--synthetic-classes', type=int, default=1000, help='--synthetic-data without --data-path')
    g.add_argument('--synthetic-images', type=int, default=None,
                   help='--synthetic-data without --data-path: train images (val: 1/25); default ImageNet-1k\'s')
    g.add_argument('--cpu-threads', type=int, default=0, help='torch intra-op threads (0: torch default)')
    g.add_argument('--pin-mem', action=bool_flag, default=True, help='pinned host memory for the batches (CUDA)')
    g.add_argument('--print-state-hash', action=argparse.BooleanOptionalAction, default=False,
                   help='at the end every rank prints digests of its parameters and KAN grids (replica check)')
    g.add_argument('--print-freq', type=int, default=50,
                   help='steps between progress lines when not on a terminal (and always one at the end of a loop)')
    g.add_argument('--compile', action=bool_flag, default=False,
                   help='torch.compile the model for training (evaluation stays eager); KAN-ViTs compile whole')
    g.add_argument('--compile-backend', default='inductor', help='torch.compile backend (torch._dynamo.list_backends)')
    g.add_argument('--compile-mode', default=None, choices=['default', 'reduce-overhead', 'max-autotune'],
                   help='torch.compile mode; reduce-overhead replays CUDA graphs (small images: fewer launches)')
    g.add_argument('--amp', action=bool_flag, default=False, help='mixed precision (autocast)')
    g.add_argument('--amp-dtype', default='float16', choices=sorted(AMP_DTYPES),
                   help='float16 uses a GradScaler; bfloat16 needs none')
    g = p.add_argument_group('model')
    g.add_argument('--model', default='vit_kan_tiny', help='any timm model name')
    g.add_argument('--input-size', type=int, default=224, help='image side in pixels (the model img_size)')
    g.add_argument('--drop', type=float, default=0.0, help='dropout rate')
    g.add_argument('--drop-path', type=float, default=0.1, help='stochastic depth rate')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                   help='extra timm.create_model keywords: patch_size=4 hidden_dims=[64]')
    g.add_argument('--finetune', default='', help='initialise from a checkpoint (pos-embed resampled, head reset)')
    g.add_argument('--model-ema', action=bool_flag, default=True, help='keep an EMA copy of the weights (evaluated)')
    g.add_argument('--model-ema-decay', type=float, default=0.99996, help='EMA decay per update')
    g.add_argument('--model-ema-force-cpu', action=bool_flag, default=False,
                   help='keep the EMA on the CPU (not evaluated)')
    g.add_argument('--model-ema-warmup', action=bool_flag, default=False, help="timm's EMA decay warm-up")
    g = p.add_argument_group('optimizer and schedule')
    g.add_argument('--opt', default='adamw', help='timm optimizer name (create_optimizer_v2)')
    g.add_argument('--opt-eps', type=float, default=1e-8, help='optimizer epsilon')
    g.add_argument('--opt-betas', type=float, nargs='+', default=None, help="optimizer betas (unset: the optimizer's)")
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs,
                   help="more keywords for the optimizer's constructor (as timm's train.py), e.g. fused=True: torch's "
                        'AdamW / Adam / SGD update every parameter in one fused kernel, no per-tensor host work')
    g.add_argument('--clip-grad', type=float, default=None, help='gradient clipping value (unset: no clipping)')
    g.add_argument('--clip-mode', default='norm', choices=['norm', 'value', 'agc'], help='how --clip-grad clips')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum')
    g.add_argument('--weight-decay', type=float, default=0.05, help='weight decay')
    g.add_argument('--lr', type=float, default=5e-4, help='for a global batch of 512 (see --scale-lr)')
    g.add_argument('--scale-lr', action=bool_flag, default=True, help='lr x global batch / 512 (DeiT)')
    g.add_argument('--sched', default='cosine', help='timm scheduler name (create_scheduler_v2)')
    g.add_argument('--sched-on-updates', action=bool_flag, default=False, help='step the schedule every update')
    g.add_argument('--lr-noise', type=float, nargs='+', default=None, help='epoch fraction(s) where lr noise is on')
    g.add_argument('--lr-noise-pct', type=float, default=0.67, help='lr noise limit (fraction)')
    g.add_argument('--lr-noise-std', type=float, default=1.0, help='lr noise standard deviation')
    g.add_argument('--warmup-lr', type=float, default=1e-6, help='lr at the start of the warm-up')
    g.add_argument('--min-lr', type=float, default=1e-5, help='lower bound of the schedule')
    g.add_argument('--decay-epochs', type=float, default=30, help='epochs between decays (step schedules)')
    g.add_argument('--warmup-epochs', type=int, default=5, help='linear warm-up epochs')
    g.add_argument('--cooldown-epochs', type=int, default=0, help='trained after --epochs at --min-lr')
    g.add_argument('--patience-epochs', type=int, default=10, help='plateau schedule patience')
    g.add_argument('--decay-rate', type=float, default=0.1, help='lr factor per decay (step schedules)')
    g = p.add_argument_group('augmentation')
    g.add_argument('--color-jitter', type=float, default=0.3, help='colour jitter strength (0: off)')
    g.add_argument('--aa', default='rand-m9-mstd0.5-inc1', help="timm auto-augment policy; 'none' for none")
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    g.add_argument('--three-augment', action=bool_flag, default=False,
                   help="DeiT III's ThreeAugment as the whole train transform (replaces RandAugment and erasing)")
    g.add_argument('--bce-loss', action=bool_flag, default=False,
                   help='binary cross-entropy (DeiT III): mixed targets made binary; mixup then takes no smoothing')
    g.add_argument('--train-interpolation', default='bicubic', help='resize interpolation of the train crop')
    g.add_argument('--repeated-aug', action=bool_flag, default=True, help='3 repeats, when distributed')
    g.add_argument('--train-crop', default='rrc', choices=['rrc', 'pad'],
                   help="'rrc': random-resized crop; 'pad': DeiT's CIFAR crop")
    g.add_argument('--crop-pad', type=int, default=4, help="padding of --train-crop pad")
    g.add_argument('--scale', type=float, nargs=2, default=[0.08, 1.0], help='random-resized crop area range')
    g.add_argument('--ratio', type=float, nargs=2, default=[3.0 / 4.0, 4.0 / 3.0],
                   help='random-resized crop aspect range')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--vflip', type=float, default=0.0, help='vertical flip probability')
    g.add_argument('--reprob', type=float, default=0.25, help='random erasing probability')
    g.add_argument('--remode', default='pixel', help='random erasing fill mode')
    g.add_argument('--recount', type=int, default=1, help='random erasing count')
    g.add_argument('--eval-crop-ratio', type=float, default=0.875, help='eval: resize to input/ratio, centre crop')
    g.add_argument('--mixup', type=float, default=0.8, help='mixup alpha (0: off)')
    g.add_argument('--cutmix', type=float, default=1.0, help='cutmix alpha (0: off)')
    g.add_argument('--cutmix-minmax', type=float, nargs=2, default=None,
                   help='cutmix box ratio range (overrides alpha)')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixup or cutmix per batch')
    g.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix instead of mixup')
    g.add_argument('--mixup-mode', default='batch', choices=['batch', 'pair', 'elem'], help='what one mix covers')
    g = p.add_argument_group('distillation')
    g.add_argument('--teacher-model', default='regnety_160', help='teacher: any timm model name')
    g.add_argument('--teacher-path', default='', help="checkpoint with the teacher's weights")
    g.add_argument('--teacher-pretrained', action=bool_flag, default=False, help="download through timm")
    g.add_argument('--teacher-random-init', action=bool_flag, default=False, help='untrained teacher (tests)')
    g.add_argument('--distillation-type', default='none', choices=['none', 'soft', 'hard'],
                   help='DeiT distillation through the distillation token (a *_distilled model)')
    g.add_argument('--distillation-alpha', type=float, default=0.5, help='weight of the distillation term')
    g.add_argument('--distillation-tau', type=float, default=1.0, help='temperature of soft distillation')
    g = p.add_argument_group('KAN')
    g.add_argument('--kan-reg-weight', type=float, default=0.0, help='x sum of regularization_loss()')
    g.add_argument('--moe-aux-weight', type=float, default=0.01,
                   help="x sum of the MoE layers' load-balancing auxiliary_loss() (models without them: unused)")
    g.add_argument('--grid-update-epochs', type=int, nargs='*', default=[], help='after these epochs (1-based)')
    g.add_argument('--grid-update-every', type=int, default=0, help='and every N epochs (0: off)')
    g.add_argument('--grid-update-until', type=int, default=None, help='no periodic update after this epoch')
    g.add_argument('--grid-update-images', type=int, default=256, help='training images seen by an update')
    g.add_argument('--grid-update-tokens', type=int, default=4096, help='input rows kept per layer')
    g.add_argument('--grid-update-margin', type=float, default=0.01, help='margin around the data span (update_grid)')
    g.add_argument('--grid-update-eps', type=float, default=None,
                   help="knots: 0 data quantiles .. 1 uniform over the data span (keeps the fused kernels); "
                        "unset: each layer's grid_eps (0.02, efficient-KAN)")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Recipe (the demo's for an empty argv or --demo) as defaults, command line on top, then cross-flag checks."""
    parser = get_args_parser()
    demo = not argv or '--demo' in argv  # the demo's recipe unless another one is given
    config = preparse(argv) or (str(DEMO_CONFIG) if demo else None)
    if config:
        parser.set_defaults(**load_config(config, parser))
    args = parser.parse_args(list(argv))
    args.config = config
    if not args.data_path and not args.synthetic_data:
        raise ConfigError('--data-path is required (a folder with train/ and val/); `python main.py` runs the demo')
    if args.eval and not (args.resume or args.finetune):
        raise ConfigError('--eval needs weights to evaluate: --resume CHECKPOINT (a main.py checkpoint: the model is '
                          'built from its config) or --finetune CHECKPOINT')
    for flag, path in (('--resume', args.resume), ('--finetune', args.finetune)):
        if not path:  # else: exists, readable, weights, checked before any data or model is built (cheaply)
            continue
        if flag == '--finetune':  # a checkpoint or a .safetensors file
            ckpt_io.check_weights_file(path, flag)
            continue
        ckpt = ckpt_io.load_checkpoint(path, flag, mmap=True)  # tensors mapped, not read
        if args.eval:
            _adopt_checkpoint_config(args, ckpt, explicit_dests(parser, argv))
    check_model_name(args.model)
    if args.distillation_type != 'none':
        check_model_name(args.teacher_model, '--teacher-model')
    if args.batch_size < 1 or args.epochs < 1:
        raise ConfigError(f'--batch-size and --epochs must be >= 1, got {args.batch_size} and {args.epochs}')
    mixup_active = not args.eval and (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None)
    if args.bce_loss and mixup_active and args.smoothing > 0:
        raise ConfigError(f'--bce-loss with mixup/cutmix binarises the mixed targets, so --smoothing {args.smoothing} '
                          f'would make every class a target: use --smoothing 0 (as DeiT III) or --mixup 0 --cutmix 0')
    if mixup_active and args.mixup_mode == 'batch' and args.batch_size % 2:
        raise ConfigError(f'--batch-size {args.batch_size}: mixup/cutmix needs an even batch (or --mixup 0 --cutmix 0)')
    if args.grid_update_eps is not None and not 0.0 <= args.grid_update_eps <= 1.0:
        raise ConfigError(f'--grid-update-eps must be in [0, 1], got {args.grid_update_eps}')
    if args.compile:
        import torch._dynamo
        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.compile_backend not in backends:
            raise ConfigError(f'--compile-backend {args.compile_backend!r} is not a torch.compile backend: inductor '
                              f'(default), aot_eager, eager, cudagraphs, ... (torch._dynamo.list_backends())')
    if args.auto_resume and (args.eval or args.overwrite):
        raise ConfigError(f'--auto-resume continues a training run: it does not go with '
                          f'{"--eval" if args.eval else "--overwrite"}')
    if args.quantize != 'none' and not args.eval:
        raise ConfigError(f'--quantize {args.quantize} works with --eval (quantized evaluation, not training)')
    _check_values(args)
    if not args.eval:
        _check_optimisation(args)
    return args


def _prob(v: float) -> bool:
    return 0.0 <= v <= 1.0


# flag values timm or torch would refuse with a traceback mid-run (or take silently and train nonsense): each checked
# before anything is read, one line naming the flag
_VALUE_CHECKS = (
    ('num_workers', lambda v: v >= 0, '>= 0'),
    ('drop', lambda v: 0.0 <= v < 1.0, 'in [0, 1)'),
    ('drop_path', lambda v: 0.0 <= v < 1.0, 'in [0, 1)'),
    ('smoothing', lambda v: 0.0 <= v < 1.0, 'in [0, 1)'),
    ('model_ema_decay', _prob, 'in [0, 1]'),
    ('weight_decay', lambda v: v >= 0.0, '>= 0'),
    ('clip_grad', lambda v: v is None or v > 0.0, '> 0 (leave it unset for no clipping)'),
    ('warmup_epochs', lambda v: v >= 0, '>= 0'),
    ('cooldown_epochs', lambda v: v >= 0, '>= 0'),
    ('patience_epochs', lambda v: v >= 0, '>= 0'),
    ('decay_epochs', lambda v: v > 0, '> 0'),
    ('min_lr', lambda v: v >= 0.0, '>= 0'),
    ('warmup_lr', lambda v: v >= 0.0, '>= 0'),
    ('cpu_threads', lambda v: v >= 0, '>= 0 (0: torch default)'),
    ('grid_update_every', lambda v: v >= 0, '>= 0 (0: off)'),
    ('print_freq', lambda v: v >= 1, '>= 1'),
    ('color_jitter', lambda v: v is None or v >= 0.0, '>= 0 (0: off)'),
    ('hflip', _prob, 'a probability in [0, 1]'),
    ('vflip', _prob, 'a probability in [0, 1]'),
    ('reprob', _prob, 'a probability in [0, 1]'),
    ('recount', lambda v: v >= 1, '>= 1'),
    ('mixup', lambda v: v >= 0.0, '>= 0 (0: off)'),
    ('cutmix', lambda v: v >= 0.0, '>= 0 (0: off)'),
    ('mixup_prob', _prob, 'a probability in [0, 1]'),
    ('mixup_switch_prob', _prob, 'a probability in [0, 1]'),
    ('eval_crop_ratio', lambda v: 0.0 < v <= 1.0, 'in (0, 1]'),
    ('crop_pad', lambda v: v >= 0, '>= 0'),
    ('distillation_alpha', _prob, 'in [0, 1]'),
    ('distillation_tau', lambda v: v > 0.0, '> 0'),
    ('kan_reg_weight', lambda v: v >= 0.0, '>= 0'),
    ('moe_aux_weight', lambda v: v >= 0.0, '>= 0'),
    ('grid_update_epochs', lambda v: all(e >= 1 for e in v), 'epochs counted from 1'),
    ('grid_update_until', lambda v: v is None or v >= 1, '>= 1 (an epoch, counted from 1)'),
    ('grid_update_images', lambda v: v >= 1, '>= 1'),
    ('grid_update_tokens', lambda v: v >= 1, '>= 1'),
    ('grid_update_margin', lambda v: v >= 0.0, '>= 0'),
    ('scale', lambda v: 0.0 < v[0] <= v[1], 'LOW HIGH with 0 < LOW <= HIGH'),
    ('ratio', lambda v: 0.0 < v[0] <= v[1], 'LOW HIGH with 0 < LOW <= HIGH'),
)


def _check_values(args: argparse.Namespace) -> None:
    """Ranges and names of the regularisation and augmentation flags (_VALUE_CHECKS, --remode,
    --train-interpolation, --aa): one line naming the flag instead of an assertion or a math error inside timm."""
    for dest, ok, want in _VALUE_CHECKS:
        value = getattr(args, dest)
        if not ok(value):
            shown = ' '.join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
            raise ConfigError(f'--{dest.replace("_", "-")} {shown}: must be {want}')
    if args.remode not in ERASE_MODES:
        raise ConfigError(f'--remode {args.remode!r}: random erasing fills with one of {", ".join(ERASE_MODES)}')
    aa = bool(args.aa) and args.aa.lower() != 'none' and not args.three_augment
    # RandAugment's PIL ops resample with the train interpolation: PIL's affine takes only these three
    modes = ('bicubic', 'bilinear', 'nearest', 'random') + (() if aa else ('box', 'hamming', 'lanczos'))
    if args.train_interpolation not in modes:
        raise ConfigError(f'--train-interpolation {args.train_interpolation!r}: one of {", ".join(modes)}'
                          + (' (with --aa)' if aa else ''))
    if aa:
        try:  # timm parses the policy string when the transform is built (no image is read)
            build_transform(True, TransformConfig.from_flags(args))
        except (AssertionError, KeyError, ValueError) as e:
            raise ConfigError(f"--aa {args.aa!r}: timm's create_transform refused it ({type(e).__name__}: {e})") \
                from None


def _check_optimisation(args: argparse.Namespace) -> None:
    """--opt / --opt-kwargs / --sched tried on a stand-in parameter, so that a misspelt name or keyword ends the run
    with one line before any data is read (timm raises ValueError / TypeError for them)."""
    stand_in = nn.Linear(2, 2)
    try:
        optimizer = make_optimizer(args, stand_in, args.lr)
    except (ValueError, TypeError) as e:
        kwargs = ' --opt-kwargs ' + ' '.join(f'{k}={v}' for k, v in args.opt_kwargs.items()) if args.opt_kwargs else ''
        raise ConfigError(f'--opt {args.opt}{kwargs}: {e}') from None
    try:
        scheduler, _ = make_scheduler(args, optimizer, updates_per_epoch=1)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f'--sched {args.sched}: {e}') from None
    if scheduler is None and args.sched != 'none':  # older timm (1.0.25) returns none for a name it does not know
        raise ConfigError(f"--sched {args.sched}: Unknown scheduler '{args.sched}'.")


# what builds the model: with --eval --resume these come from the checkpoint's saved config unless given on the
# command line (num_classes comes from the checkpoint itself)
EVAL_MODEL_KEYS = ('model', 'input_size', 'model_kwargs')


def _adopt_checkpoint_config(args: argparse.Namespace, ckpt: Dict[str, Any], explicit: set) -> None:
    """--eval --resume: build the model the checkpoint was trained as (model, input_size, model_kwargs from its
    config), flags given on the command line kept; a checkpoint without a config leaves the flags as they are."""
    config = ckpt.get('config') if isinstance(ckpt.get('config'), dict) else {}
    taken = {k: config[k] for k in EVAL_MODEL_KEYS if k in config and k not in explicit}
    for key, value in taken.items():
        setattr(args, key, dict(value) if key == 'model_kwargs' else value)
    args.eval_num_classes = ckpt.get('num_classes')


def _seed_all(seed: int) -> None:
    import random
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _output_dir(args: argparse.Namespace) -> Path:
    return Path(args.output_dir or Path('output') / args.model)


def _apply_auto_resume(args: argparse.Namespace, log: Callable) -> None:
    """--auto-resume: resume from output_dir/checkpoint.pth when a previous attempt left one (every rank reads the
    same file: only rank 0 writes it, atomically, after each epoch)."""
    last = _output_dir(args) / 'checkpoint.pth'
    if args.auto_resume and last.is_file():
        ckpt_io.load_checkpoint(last, '--auto-resume', mmap=True)  # readable, a checkpoint (tensors mapped, not read)
        log(f'--auto-resume: continuing from {last}')
        args.resume = str(last)


def _prepare_output_dir(args: argparse.Namespace) -> Path:
    """Create the output dir and prove it writable; refuse to start afresh over another run's checkpoint."""
    out = _output_dir(args)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix='.write-test-'):
            pass
    except OSError as e:
        raise ConfigError(f'--output-dir {out} cannot be written: {e.strerror or e}') from None
    if (out / 'checkpoint.pth').exists() and not args.resume and not args.overwrite:
        raise ConfigError(f'--output-dir {out} already holds checkpoint.pth: continue with --resume '
                          f'{out / "checkpoint.pth"} (or --auto-resume), start over with --overwrite, or pick another '
                          f'--output-dir')
    return out


def _resume(path: str, model, optimizer, grad_scaler, model_ema, model_name: str):
    """Load everything for an exact continuation; returns (start_epoch, max_accuracy, rng state list or None)."""
    ckpt = ckpt_io.load_checkpoint(path)
    ckpt_io.load_model_state(model, ckpt_io.model_state_from(ckpt, ('model',)), path, model_name)
    if optimizer is None:  # --eval
        return 0, 0.0, None
    missing = [k for k in ('optimizer', 'epoch') if ckpt.get(k) is None]
    if missing:
        raise CheckpointError(f'--resume: {path} holds model weights only (no {", ".join(missing)}); use --finetune')
    try:
        optimizer.load_state_dict(ckpt['optimizer'])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f'--resume: optimizer state in {path} does not fit this run (--opt / model changed?): '
                              f'{e}') from None
    if grad_scaler is not None and ckpt.get('scaler') is not None:
        grad_scaler.load_state_dict(ckpt['scaler'])
    if model_ema is not None:
        state = ckpt.get('model_ema') or ckpt['model']
        ckpt_io.load_model_state(model_ema.module, state, path, model_name)
    return ckpt['epoch'] + 1, float(ckpt.get('max_accuracy', 0.0)), ckpt.get('rng')


# ---------------------------------------------------------------- the steps of a run, in the order run() takes them

@dataclass
class RunData:
    """The datasets and loaders of a run (built in one place, build_data); --eval has no training side."""
    train_set: Optional[Dataset]
    val_set: Dataset
    num_classes: int
    train_loader: Optional[DataLoader]
    val_loader: DataLoader

    def close(self) -> None:
        """Stop what the loaders run besides this process (the --data-process producer)."""
        for loader in (self.train_loader, self.val_loader):
            if hasattr(loader, 'close'):
                loader.close()


def build_data(args: argparse.Namespace, dist_info: DistInfo) -> RunData:
    """The datasets and loaders from the chosen backend (pil, gpu, data on the GPU, synthetic) with DeiT's samplers;
    with --eval only val/ (no train/ needed, no training batch-size check)."""
    tcfg = TransformConfig.from_flags(args)
    data_cfg = DataConfig.from_flags(args)
    if args.eval:
        val_set, num_classes, val_loader = build_eval_data(data_cfg, tcfg, dist_info.device, dist_info.world_size,
                                                           dist_info.rank)
        return RunData(None, val_set, num_classes, None, val_loader)
    return RunData(*build_backend_data(data_cfg, tcfg, dist_info.device, dist_info.world_size, dist_info.rank))


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device, log: Callable) -> nn.Module:
    """timm.create_model from the flags, fine-tune weights (--finetune) loaded, on device."""
    model = create_model(args.model, num_classes=num_classes, drop_rate=args.drop, drop_path_rate=args.drop_path,
                         img_size=args.input_size, log=log, **args.model_kwargs)
    if args.finetune:
        weights = ckpt_io.load_model_weights(args.finetune, '--finetune')  # a checkpoint or a .safetensors file
        ckpt_io.load_finetune_state(model, weights, args.finetune, args.model, log=log)
    return model.to(device)


@dataclass
class Optimisation:
    """What updates the weights: optimizer, schedule (with the epochs it runs, cooldown included), fp16 loss scaler,
    EMA copy."""
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    num_epochs: int
    lr: float
    grad_scaler: Optional[torch.amp.GradScaler]
    model_ema: Optional[KanModelEma]


def make_optimizer(args: argparse.Namespace, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """timm's create_optimizer_v2 from --opt, --weight-decay, --momentum, --opt-eps, --opt-betas, --opt-kwargs."""
    opt_kwargs = {'eps': args.opt_eps} if args.opt_eps is not None else {}
    if args.opt_betas:
        opt_kwargs['betas'] = tuple(args.opt_betas)
    opt_kwargs.update(args.opt_kwargs)
    return create_optimizer_v2(model, opt=args.opt, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
                               **opt_kwargs)


def make_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """(scheduler, epochs with cooldown) from timm's create_scheduler_v2 and the schedule flags."""
    return create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        cooldown_epochs=args.cooldown_epochs, patience_epochs=args.patience_epochs, decay_rate=args.decay_rate,
        min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs, noise=args.lr_noise,
        noise_pct=args.lr_noise_pct, noise_std=args.lr_noise_std, noise_seed=args.seed,
        step_on_epochs=not args.sched_on_updates, updates_per_epoch=updates_per_epoch)


def build_optimisation(args: argparse.Namespace, model: nn.Module, world: int, updates_per_epoch: int,
                       amp_dtype: Optional[torch.dtype], device: torch.device) -> Optimisation:
    """timm's optimizer and scheduler from the flags (lr scaled by the global batch / 512 as DeiT does), the fp16
    GradScaler, the EMA. model: the unwrapped model (after DDP's broadcast, so the EMA starts equal on every rank)."""
    lr = args.lr * args.batch_size * world / 512.0 if args.scale_lr else args.lr
    optimizer = make_optimizer(args, model, lr)
    lr_scheduler, num_epochs = make_scheduler(args, optimizer, updates_per_epoch)
    grad_scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    model_ema = None
    if args.model_ema:
        model_ema = KanModelEma(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                                device=torch.device('cpu') if args.model_ema_force_cpu else None)
    return Optimisation(optimizer, lr_scheduler, num_epochs, lr, grad_scaler, model_ema)


def build_criterion(args: argparse.Namespace, model: nn.Module, num_classes: int,
                    device: torch.device) -> Tuple[nn.Module, Optional[Mixup]]:
    """(criterion, mixup_fn): the base loss (mixup / smoothing / BCE), wrapped by distillation against a frozen
    teacher and by the KAN penalty, so the engine calls criterion(inputs, outputs, targets) whatever is on."""
    teacher = None
    if args.distillation_type != 'none':
        if not hasattr(model, 'set_distilled_training'):
            raise ConfigError(f'--distillation-type {args.distillation_type}: {args.model} has no distillation token; '
                              f'use a *_distilled model')
        model.set_distilled_training(True)
        teacher = create_teacher(args.teacher_model, num_classes, args.teacher_path, args.teacher_pretrained,
                                 args.teacher_random_init, model_kwargs={'img_size': args.input_size}).to(device)
    mixup_fn = None
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                         prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=num_classes)
    criterion = DistillationLoss(build_base_criterion(mixup_fn is not None, args.smoothing, args.bce_loss), teacher,
                                 args.distillation_type, args.distillation_alpha, args.distillation_tau)
    if args.kan_reg_weight > 0:
        kan_modules = [m for _, m in outermost_modules_with(model, 'regularization_loss')]
        criterion = KanRegularizedLoss(criterion, kan_modules, args.kan_reg_weight)
    aux_modules = [m for _, m in outermost_modules_with(model, 'auxiliary_loss')]
    if aux_modules and args.moe_aux_weight > 0:  # e.g. a mixture of experts' load balancing (layers.MoEKANConv)
        criterion = AuxiliaryLoss(criterion, aux_modules, args.moe_aux_weight)
    return criterion, mixup_fn


def resume_training(args: argparse.Namespace, model: nn.Module, opt: Optimisation, dist_info: DistInfo,
                    updates_per_epoch: int, log: Callable) -> Tuple[int, float]:
    """(start_epoch, max_accuracy): --resume's model, optimizer, scaler, EMA and RNG states loaded and the schedule
    moved to where the uninterrupted run stands; (0, 0.0) and per-rank seeds for a fresh start."""
    if not args.resume:
        _seed_all(args.seed + dist_info.rank)  # different augmentations on each rank
        return 0, 0.0
    start_epoch, max_accuracy, rng = _resume(args.resume, model, opt.optimizer, opt.grad_scaler, opt.model_ema,
                                             args.model)
    if rng is not None and len(rng) == dist_info.world_size:
        ckpt_io.set_rng_state(rng[dist_info.rank])
    else:
        log(f'note: {args.resume} has RNG states for {len(rng or [])} process(es), not {dist_info.world_size}: '
            f'reseeding')
        _seed_all(args.seed + 1000 * start_epoch + dist_info.rank)
    # timm's schedules are functions of the epoch / update, rebuilt from the flags (so --epochs may be raised on
    # resume): move to where the uninterrupted run stands at the start of start_epoch
    if opt.lr_scheduler is not None and args.sched_on_updates:
        opt.lr_scheduler.step_update(start_epoch * updates_per_epoch)
    elif opt.lr_scheduler is not None:
        opt.lr_scheduler.step(start_epoch)
    if start_epoch >= opt.num_epochs and args.auto_resume:  # a restart after the last epoch was saved
        log(f'--auto-resume: {args.resume} already finished {start_epoch} of {opt.num_epochs} epochs; nothing to do')
        return start_epoch, max_accuracy
    if start_epoch >= opt.num_epochs:
        raise ConfigError(f'--resume: {args.resume} already finished {start_epoch} of {opt.num_epochs} epochs; '
                          f'raise --epochs to train on')
    log(f'resumed from {args.resume} at epoch {start_epoch + 1}')
    return start_epoch, max_accuracy


def save_checkpoints(out: Path, payload: Dict[str, Any], improved: bool, best_weights: nn.Module,
                     model_name: str) -> None:
    """The one place a run writes checkpoints (rank 0): checkpoint.pth every epoch; when val acc1 improved, best.pth
    and model.safetensors (best_weights: the EMA model when EMA is on, else the model); each atomically (a kill
    mid-save leaves the previous file)."""
    ckpt_io.save_atomic(payload, out / 'checkpoint.pth')
    if improved:
        ckpt_io.save_atomic(payload, out / 'best.pth')
        ckpt_io.save_model_safetensors(best_weights, out / ckpt_io.SAFETENSORS_NAME, metadata={'model': model_name})


def _check_eval_classes(args: argparse.Namespace, data: RunData) -> None:
    """--eval --resume: val/ must hold the classes the checkpoint's model was trained on."""
    trained = getattr(args, 'eval_num_classes', None)
    if trained is not None and trained != data.num_classes:
        raise DataError(f'--eval: {args.data_path}/val has {data.num_classes} class folders, the model in '
                        f'{args.resume} was trained on {trained} classes')


def evaluate_only(args: argparse.Namespace, model: nn.Module, data: RunData, dist_info: DistInfo,
                  amp_dtype: Optional[torch.dtype], log: Callable) -> int:
    """--eval: top-1/top-5 of the --resume weights on val/ (and of an int8 copy with --quantize int8); writes
    nothing."""
    if args.resume:
        _resume(args.resume, model, None, None, None, args.model)
        log(f'--eval: weights of {args.resume} in {args.model} (input size {args.input_size}, model kwargs '
            f'{args.model_kwargs or "none"})')
    stats = evaluate(model=model, data_loader=data.val_loader, device=dist_info.device, amp_dtype=amp_dtype,
                     show_progress=dist_info.is_main, print_freq=args.print_freq)
    log(f'Accuracy on {stats["n"]} val images: acc1 {stats["acc1"]:.2f} acc5 {stats["acc5"]:.2f} '
        f'loss {stats["loss"]:.4f}')
    if args.quantize == 'int8':
        if dist_info.distributed:
            raise ConfigError('--quantize int8 evaluates on the CPU in one process; run without torchrun')
        from vision_kan.tools.quantize import describe, quantize_int8
        qmodel, report = quantize_int8(model)
        qstats = evaluate(model=qmodel, data_loader=data.val_loader, device=torch.device('cpu'), amp_dtype=None,
                          show_progress=dist_info.is_main, desc='Eval int8', print_freq=args.print_freq)
        log(describe(report))
        log(f'int8 (CPU) on {qstats["n"]} val images: acc1 {qstats["acc1"]:.2f} '
            f'({qstats["acc1"] - stats["acc1"]:+.2f}) acc5 {qstats["acc5"]:.2f} loss {qstats["loss"]:.4f}')
    return 0


def _grid_schedule(args: argparse.Namespace, model: nn.Module, log: Callable) -> GridUpdateSchedule:
    """The flags' grid-update schedule, switched off (with a note) for a model without updatable KAN grids."""
    schedule = GridUpdateSchedule.from_flags(args)
    if schedule.active and not grid_layers(model):
        log(f'note: {args.model} has no KAN layer with update_grid (FasterKAN grids are fixed): no grid update')
        return GridUpdateSchedule()
    return schedule


def train(args: argparse.Namespace, dist_info: DistInfo, data: RunData, model: nn.Module,
          model_without_ddp: nn.Module, opt: Optimisation, criterion: nn.Module, mixup_fn: Optional[Mixup],
          start_epoch: int, max_accuracy: float, out: Optional[Path], log: Callable) -> float:
    """The epoch loop: train, grid update when scheduled, evaluate (model and EMA), checkpoint, log. Returns the best
    val acc1."""
    device, is_main, amp_dtype = dist_info.device, dist_info.is_main, _amp_dtype(args)
    ema = opt.model_ema.module if opt.model_ema is not None else None
    schedule = _grid_schedule(args, model_without_ddp, log)
    n_params = count_params(model_without_ddp)
    run_log = RunLog(out if is_main else None, fresh=not args.resume)
    engine_kwargs = dict(model=model, criterion=criterion, data_loader=data.train_loader, optimizer=opt.optimizer,
                         device=device, num_epochs=opt.num_epochs, world_size=dist_info.world_size, mixup_fn=mixup_fn,
                         model_ema=opt.model_ema, grad_scaler=opt.grad_scaler, amp_dtype=amp_dtype,
                         clip_grad=args.clip_grad, clip_mode=args.clip_mode, lr_scheduler=opt.lr_scheduler,
                         show_progress=is_main, print_freq=args.print_freq)
    eval_kwargs = dict(data_loader=data.val_loader, device=device, amp_dtype=amp_dtype, show_progress=is_main,
                       print_freq=args.print_freq)
    start_time = time.time()
    for epoch in range(start_epoch, opt.num_epochs):
        epoch_start = time.time()
        data.train_loader.sampler.set_epoch(epoch)
        train_stats = _train_epoch(epoch, engine_kwargs, out, is_main)
        if isinstance(criterion, AuxiliaryLoss):  # the MoE load-balancing loss, unweighted, into the epoch's log row
            train_stats['moe_aux_loss'] = criterion.pop_mean()
        n = scheduled_grid_update(model_without_ddp, epoch, schedule, lambda images: build_grid_sample_loader(
            data.train_set, images, args.batch_size, args.num_workers, dist_info.world_size, dist_info.rank,
            args.seed, epoch), device, args.seed, ema, autocast(device, amp_dtype))
        if n:
            log(f'epoch {epoch + 1}: KAN grids of {n} layers re-placed on the data')
        test_stats = evaluate(model=model_without_ddp, **eval_kwargs)
        ema_stats = None
        if ema is not None and not args.model_ema_force_cpu:
            ema_stats = evaluate(model=ema, desc='Eval EMA', **eval_kwargs)
        if opt.lr_scheduler is not None:
            opt.lr_scheduler.step(epoch + 1, test_stats['acc1'])
        improved = test_stats['acc1'] > max_accuracy
        max_accuracy = max(max_accuracy, test_stats['acc1'])

        rng = all_gather_object(ckpt_io.get_rng_state())  # every rank's, so a resume continues each one
        if is_main:
            save_checkpoints(out, ckpt_io.checkpoint_payload(model_without_ddp, opt.optimizer, opt.grad_scaler,
                                                             opt.model_ema, epoch, max_accuracy, vars(args), rng),
                             improved, opt.model_ema.module if opt.model_ema is not None else model_without_ddp,
                             args.model)
            if epoch == start_epoch:  # the first write of this run comes after its first good epoch
                save_config(args, out / 'config.yaml')
        run_log.log_epoch({'epoch': epoch + 1, **{f'train_{k}': v for k, v in train_stats.items() if k != 'time'},
                           **{f'test_{k}': v for k, v in test_stats.items() if k != 'n'},
                           'ema_acc1': ema_stats['acc1'] if ema_stats else None, 'n_parameters': n_params,
                           'epoch_time': time.time() - epoch_start})
        log(f'epoch {epoch + 1}/{opt.num_epochs}: train loss {train_stats["loss"]:.4f} | val acc1 '
            f'{test_stats["acc1"]:.2f} acc5 {test_stats["acc5"]:.2f} loss {test_stats["loss"]:.4f} | '
            f'best {max_accuracy:.2f}')
    run_log.close()
    total = datetime.timedelta(seconds=int(time.time() - start_time))
    log('\n' + results_table(run_log.rows))
    log(f'\nbest val acc1 {max_accuracy:.2f} | training time {total} | {out}: checkpoint.pth, best.pth, log.txt, '
        f'config.yaml, tensorboard/')
    return max_accuracy


def _train_epoch(epoch: int, engine_kwargs: Dict[str, Any], out: Optional[Path], is_main: bool) -> Dict[str, float]:
    """engine.train_one_epoch; a NaN loss names the last good checkpoint (left untouched) in its message."""
    try:
        return train_one_epoch(epoch=epoch, **engine_kwargs)
    except NonFiniteLossError as e:
        if not is_main:
            raise
        last = out / 'checkpoint.pth'
        kept = f'{last} (the last good state) is untouched' if last.exists() else 'no checkpoint was written'
        raise NonFiniteLossError(f'{e}; {kept}') from None


def _amp_dtype(args: argparse.Namespace) -> Optional[torch.dtype]:
    return AMP_DTYPES[args.amp_dtype] if args.amp else None


def _print_state_hashes(dist_info: DistInfo, model: nn.Module, model_ema: Optional[KanModelEma]) -> None:
    """--print-state-hash, on every rank: equal digests mean bit-identical replicas."""
    for label, m in (('model', model), ('ema', model_ema.module if model_ema is not None else None)):
        if m is not None:
            d = state_digest(m, sorted(kan_buffer_names(m)))
            print(f'state rank {dist_info.rank}/{dist_info.world_size} {label}: params {d["params"]} '
                  f'kan-grids {d["buffers"]}', flush=True)


def run(args: argparse.Namespace, dist_info: DistInfo) -> int:
    """Set up, build data / model / optimisation / criterion, resume, then train (or only evaluate with --eval)."""
    device, is_main, world = dist_info.device, dist_info.is_main, dist_info.world_size
    if args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
    log = print if is_main else (lambda *a, **k: None)
    _apply_auto_resume(args, log)
    out = _prepare_output_dir(args) if is_main and not args.eval else None
    if args.demo and is_main and not Path(args.data_path, 'train').is_dir():
        from vision_kan.train.demo_data import write_digits_imagefolder
        counts = write_digits_imagefolder(args.data_path)
        log(f'demo: wrote scikit-learn digits to {args.data_path} ({counts["train"]} train / {counts["val"]} val)')
    barrier()
    _seed_all(args.seed)  # same init on every rank (DDP broadcasts rank 0's anyway)

    data = build_data(args, dist_info)
    try:
        return _run_on(args, dist_info, data, out, log)
    finally:
        data.close()


def _run_on(args: argparse.Namespace, dist_info: DistInfo, data: RunData, out: Optional[Path], log) -> int:
    """run() once the data is built: the model, then evaluation alone or training."""
    device, is_main, world = dist_info.device, dist_info.is_main, dist_info.world_size
    if args.eval:
        _check_eval_classes(args, data)
    model = build_model(args, data.num_classes, device, log)
    n_params = count_params(model)
    gflops = count_gflops(model, (3, args.input_size, args.input_size), device) if is_main else None
    images = f'{len(data.train_set)} train / ' if data.train_set is not None else ''
    log(f'model {args.model}: {n_params / 1e6:.3f}M params, '
        f'{f"{gflops:.4f}" if gflops is not None else "n/a"} GFLOPs (fvcore) | {data.num_classes} classes | '
        f'{images}{len(data.val_set)} val images | {world} process(es) on {device.type}')
    if args.eval:
        return evaluate_only(args, model, data, dist_info, _amp_dtype(args), log)

    criterion, mixup_fn = build_criterion(args, model, data.num_classes, device)
    model_without_ddp = model
    if dist_info.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)
    if args.compile:  # after DDP, as timm's train.py does: the DDP optimizer splits the graph at bucket boundaries
        model = torch.compile(model, backend=args.compile_backend, mode=args.compile_mode)
    opt = build_optimisation(args, model_without_ddp, world, len(data.train_loader), _amp_dtype(args), device)
    start_epoch, max_accuracy = resume_training(args, model_without_ddp, opt, dist_info, len(data.train_loader), log)

    if start_epoch >= opt.num_epochs:  # --auto-resume after the last epoch: nothing left to train
        return 0
    log(f'lr {opt.lr:.3e} ({args.lr:.2e} x {args.batch_size}x{world}/512)' if args.scale_lr else f'lr {opt.lr:.3e}')
    log(f'training {opt.num_epochs} epochs from epoch {start_epoch + 1} -> {out}')
    train(args, dist_info, data, model, model_without_ddp, opt, criterion, mixup_fn, start_epoch, max_accuracy, out,
          log)
    if args.print_state_hash:
        _print_state_hashes(dist_info, model_without_ddp, opt.model_ema)
    return 0


def _one_line(e: BaseException) -> str:
    """The user-facing line of an error; DataLoader workers wrap the original message in a traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    last = lines[-1]
    prefix = next((ln for ln in lines if ln.startswith('Caught ')), None)
    if prefix and ': ' in last:  # 'vision_kan.train.errors.CorruptImageError: corrupt image file ...'
        return last.split(': ', 1)[1]
    return ' '.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code (2 for problems in the input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    dist_info = None
    try:
        args = parse_args(argv)
        dist_info = init_distributed(args.device)
        code = run(args, dist_info)
        barrier()  # every rank is done: nothing in flight when the process group is torn down (torch 2.6's gloo
        return code  # could deadlock in its destructor on a collective still being released)
    except (UserInputError, KeyboardInterrupt) as e:
        if isinstance(e, KeyboardInterrupt):
            print('interrupted; the last checkpoint is intact', file=sys.stderr)
            return 130
        where = f' (rank {dist_info.rank})' if dist_info is not None and dist_info.distributed else ''
        print(f'error{where}: {_one_line(e)}', file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()


if __name__ == '__main__':
    sys.exit(main())
