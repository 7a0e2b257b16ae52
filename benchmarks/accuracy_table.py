"""Markdown accuracy table from main.py run folders (config.yaml + log.txt), with params and GFLOPs of each model.

    python benchmarks/accuracy_table.py output/cifar10_accuracy/*

Top-1/top-5 are the last epoch's validation figures (and the best top-1 over the run); img/s the mean training
throughput over the epochs after the first (compile/warm-up excluded). GFLOPs at the run's input size in
fvcore's convention (one multiply-add counts one, as DeiT's tables do), attention through timm's plain path;
elementwise work (activations, the GR-KAN rationals, the KAN basis) is not counted.
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import yaml

import vision_kan  # noqa: F401
from vision_kan.train.errors import UserInputError, error_line, run_cli
from vision_kan.train.model_factory import count_macs


def read_run(run: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The merged config and the per-epoch rows of one main.py run folder."""
    try:
        cfg = yaml.safe_load((run / 'config.yaml').read_text())
        rows = [json.loads(line) for line in (run / 'log.txt').read_text().splitlines() if line.strip()]
    except OSError as e:
        raise UserInputError(f'{run}: {e.strerror or e}: {e.filename} (a main.py run folder has config.yaml and '
                             f'log.txt)') from e
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserInputError(f'{run}: unreadable config.yaml or log.txt: {error_line(e)}') from e
    if not rows:
        raise UserInputError(f'{run}: log.txt has no finished epoch')
    return cfg, rows


def table_row(cfg: Dict[str, Any], rows: List[Dict[str, Any]], num_classes: int) -> str:
    last = rows[-1]
    speed = [r['train_img_per_s'] for r in rows[1:]] or [rows[0]['train_img_per_s']]
    model = timm.create_model(cfg['model'], num_classes=num_classes, img_size=cfg['input_size'],
                              **(cfg.get('model_kwargs') or {}))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    macs = count_macs(model, (3, cfg['input_size'], cfg['input_size']))[0]
    return (f"| {cfg['model']} | {last['epoch']} | {last['test_acc1']:.2f} | {last['test_acc5']:.2f} | "
            f"{max(r['test_acc1'] for r in rows):.2f} | {params:.2f} | {macs:.3f} | "
            f"{sum(speed) / len(speed):.0f} |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+', type=Path)
    parser.add_argument('--num-classes', type=int, default=10, help='of the data set (params count the head)')
    args = parser.parse_args(argv)
    logging.getLogger('fvcore').setLevel(logging.ERROR)
    return run_cli(lambda: print_table(args.runs, args.num_classes))


def print_table(run_dirs: List[Path], num_classes: int) -> None:
    runs = [read_run(run) for run in run_dirs]  # all read before printing: no half table
    print('| model | epochs | top-1 | top-5 | best top-1 | params (M) | GFLOPs (fvcore) | train img/s |')
    print('|---|---|---|---|---|---|---|---|')
    for cfg, rows in runs:
        print(table_row(cfg, rows, num_classes))


if __name__ == '__main__':
    sys.exit(main())
