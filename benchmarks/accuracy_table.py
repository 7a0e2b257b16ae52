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
from pathlib import Path

import timm
import yaml

import vision_kan  # noqa: F401
from vision_kan.model_factory import count_macs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+', type=Path)
    args = parser.parse_args()
    logging.getLogger('fvcore').setLevel(logging.ERROR)
    print('| model | epochs | top-1 | top-5 | best top-1 | params (M) | GFLOPs (fvcore) | train img/s |')
    print('|---|---|---|---|---|---|---|---|')
    for run in args.runs:
        cfg = yaml.safe_load((run / 'config.yaml').read_text())
        rows = [json.loads(line) for line in (run / 'log.txt').read_text().splitlines() if line.strip()]
        last = rows[-1]
        speed = [r['train_img_per_s'] for r in rows[1:]] or [rows[0]['train_img_per_s']]
        model = timm.create_model(cfg['model'], num_classes=10, img_size=cfg['input_size'],
                                  **(cfg.get('model_kwargs') or {}))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        macs = count_macs(model, (3, cfg['input_size'], cfg['input_size']))[0]
        print(f"| {cfg['model']} | {last['epoch']} | {last['test_acc1']:.2f} | {last['test_acc5']:.2f} | "
              f"{max(r['test_acc1'] for r in rows):.2f} | {params:.2f} | {macs:.3f} | "
              f"{sum(speed) / len(speed):.0f} |")


if __name__ == '__main__':
    main()
