"""Compare two or more checkpoints written by main.py on one validation folder: params, size, loss, top-1, top-5.

    python -m vision_kan.tools.compare --checkpoints output/kan_cnn4/best.pth output/kan_cnn4_twin/best.pth \
        --data-path data/cifar10/val --output-dir output/compare

--data-path is one ImageFolder (one sub-folder of images per class), e.g. the val/ folder of a main.py data set.
Each model is rebuilt from the `config` main.py stores in its checkpoints (model name, --model-kwargs, input size,
eval crop) and evaluated with main.py's eval transform. The first checkpoint is the reference: the differences
are (each other model) - (first). Writes compare.json and bar charts (compare_<metric>.png, compare_overview.png)
to --output-dir and prints the tables as markdown. Problems in the input: one line on stderr, exit code 2.

The helpers that rebuild and evaluate a checkpoint live in vision_kan.train.offline_eval, shared by every tool.
"""
import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..train.config import ArgumentParser
from ..train.errors import DataError, UserInputError, run_cli
from ..train.model_factory import count_params
from ..train.offline_eval import (
    device_description, evaluate_model, imagefolder_loader, model_from_checkpoint, model_size_mb,
)

__all__ = ['compare', 'main']

METRICS = (  # key, label, format
    ('params_m', 'params (M)', '{:.3f}'),
    ('size_mb', 'size (MB)', '{:.2f}'),
    ('loss', 'loss', '{:.4f}'),
    ('acc1', 'top-1 (%)', '{:.2f}'),
    ('acc5', 'top-5 (%)', '{:.2f}'),
)


def _labels(infos: Sequence[Dict[str, Any]], paths: Sequence[str], names: Optional[Sequence[str]]) -> List[str]:
    if names:
        return list(names)
    labels = [info['model'] for info in infos]
    if len(set(labels)) < len(labels):  # the same model twice: tell them apart by their run folder
        labels = [f'{lab} ({Path(p).resolve().parent.name})' for lab, p in zip(labels, paths)]
    if len(set(labels)) < len(labels):
        labels = [f'{lab} #{i + 1}' for i, lab in enumerate(labels)]
    return labels


def compare(
        checkpoints: Sequence[str],
        data_path: str,
        output_dir: str,
        names: Optional[Sequence[str]] = None,
        models: Optional[Sequence[str]] = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str = '',
        use_ema: bool = False,
        log=print,
) -> Dict[str, Any]:
    """Evaluate every checkpoint on data_path, write compare.json and the bar charts; returns the JSON dict."""
    if len(checkpoints) < 2:
        raise UserInputError(f'--checkpoints: give two or more checkpoint files, got {len(checkpoints)}')
    if names and len(names) != len(checkpoints):
        raise UserInputError(f'--names: give one name per checkpoint ({len(checkpoints)}), got {len(names)}')
    if models and len(models) not in (1, len(checkpoints)):
        raise UserInputError(f'--model: give one model name, or one per checkpoint ({len(checkpoints)}), '
                             f'got {len(models)}')
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if not os.path.isdir(data_path):
        raise DataError(f'--data-path: folder {data_path} does not exist')
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f'--output-dir {out} cannot be created: {e.strerror or e}') from None

    rows, infos = [], []
    for i, path in enumerate(checkpoints):
        name = (models[0] if len(models) == 1 else models[i]) if models else None
        model, info = model_from_checkpoint(path, name, use_ema=use_ema, what='--checkpoints')
        size = info['input_size'] or model.pretrained_cfg.get('input_size', (3, 224, 224))[-1]
        loader = imagefolder_loader(data_path, size, info['eval_crop_ratio'], batch_size, num_workers)
        if len(loader.dataset.classes) != info['num_classes']:
            raise DataError(f'--data-path: {data_path} has {len(loader.dataset.classes)} classes, {path} was '
                            f'trained on {info["num_classes"]}')
        stats = evaluate_model(model.to(dev), loader, dev)
        rows.append({'checkpoint': str(path), 'model': info['model'], 'model_kwargs': info['model_kwargs'],
                     'epochs_trained': info['epoch'] + 1 if isinstance(info['epoch'], int) else None,
                     'input_size': int(size), 'params': count_params(model, trainable_only=False),
                     'params_m': count_params(model, trainable_only=False) / 1e6, 'size_mb': model_size_mb(model),
                     **stats})
        infos.append(info)
        log(f'{path}: {info["model"]} top-1 {stats["acc1"]:.2f} top-5 {stats["acc5"]:.2f} loss {stats["loss"]:.4f} '
            f'({stats["n"]} images, {stats["seconds"]:.1f} s)')
    for row, label in zip(rows, _labels(infos, checkpoints, names)):
        row['name'] = label

    ref = rows[0]
    diffs = [{'name': r['name'], 'reference': ref['name'],
              **{key: r[key] - ref[key] for key, _, _ in METRICS}} for r in rows[1:]]
    report = {
        'date': datetime.date.today().isoformat(), 'device': device_description(dev),
        'data_path': str(data_path), 'num_images': rows[0]['n'], 'reference': ref['name'],
        'models': rows, 'differences': diffs,
    }
    with open(out / 'compare.json', 'w') as f:
        json.dump(report, f, indent=2)
    pngs = _plot(rows, out)
    log('\n' + markdown_tables(report))
    log(f'\nwrote {out / "compare.json"} and {", ".join(str(p) for p in pngs)}')
    return report


def markdown_tables(report: Dict[str, Any]) -> str:
    """The comparison and the differences against the reference as markdown tables."""
    head = '| model | ' + ' | '.join(label for _, label, _ in METRICS) + ' |'
    lines = [f'{report["num_images"]} images of {report["data_path"]}; {report["device"]}; {report["date"]}', '',
             head, '|---' * (len(METRICS) + 1) + '|']
    for r in report['models']:
        lines.append(f'| {r["name"]} | ' + ' | '.join(fmt.format(r[k]) for k, _, fmt in METRICS) + ' |')
    lines += ['', f'Differences (model - {report["reference"]}):', '',
              '| model | ' + ' | '.join(f'Δ {label}' for _, label, _ in METRICS) + ' |', '|---' * (len(METRICS) + 1) + '|']
    for d in report['differences']:
        lines.append(f'| {d["name"]} | ' + ' | '.join(('+' + fmt if d[k] >= 0 else fmt).format(d[k])
                                                       for k, _, fmt in METRICS) + ' |')
    return '\n'.join(lines)


def _plot(rows: Sequence[Dict[str, Any]], out: Path) -> List[Path]:
    """One bar chart per metric (compare_<metric>.png) and all of them side by side (compare_overview.png)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [r['name'] for r in rows]
    colors = [plt.get_cmap('tab10')(i % 10) for i in range(len(rows))]
    written = []

    def bars(ax, key: str, label: str, fmt: str) -> None:
        values = [r[key] for r in rows]
        drawn = ax.bar(range(len(values)), values, color=colors)
        ax.bar_label(drawn, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), names, rotation=20, ha='right', fontsize=8)
        ax.set_title(label)
        ax.margins(y=0.15)

    for key, label, fmt in METRICS:
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6))
        bars(ax, key, label, fmt)
        fig.tight_layout()
        path = out / f'compare_{key}.png'
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.8))
    for ax, (key, label, fmt) in zip(axes, METRICS):
        bars(ax, key, label, fmt)
    fig.tight_layout()
    path = out / 'compare_overview.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser('python -m vision_kan.tools.compare', description=__doc__.split('\n\n')[0], allow_abbrev=False)
    p.add_argument('--checkpoints', nargs='+', required=True, help='two or more main.py checkpoints (best.pth)')
    p.add_argument('--data-path', required=True, help='one ImageFolder, e.g. DATA/val')
    p.add_argument('--output-dir', default='output/compare')
    p.add_argument('--names', nargs='+', default=None, help='labels, one per checkpoint (default: model names)')
    p.add_argument('--model', nargs='+', default=None,
                   help='model name(s) for checkpoints without main.py config (one, or one per checkpoint)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--num-workers', type=int, default=0)
    p.add_argument('--device', default='', choices=['', 'cpu', 'cuda'], help='default: cuda when available')
    p.add_argument('--ema', action=argparse.BooleanOptionalAction, default=False, help='evaluate the EMA weights')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_cli(lambda: compare(args.checkpoints, args.data_path, args.output_dir, args.names, args.model,
                                   args.batch_size, args.num_workers, args.device, args.ema))


if __name__ == '__main__':
    sys.exit(main())
