"""How fast main.py's training loader delivers batches, without a model: the recipe's train transforms, its batch
size, for several worker counts. Tells whether a run's img/s is bound by the data pipeline or by the step.

    python benchmarks/loader_throughput.py --data-path /root/cifar10 --workers 8,14
    python benchmarks/loader_throughput.py --config deit_configs/vit_kan_tiny_imagenet.yaml --data-path /data/imagenet

Prints one markdown row per worker count: the seconds to the first batch (worker start-up, the cost main.py pays at
every epoch) and the images per second over the next --batches batches (pinned memory as main.py uses on a GPU).
"""
import argparse
import sys
import time
from pathlib import Path
from typing import List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from main import parse_args  # noqa: E402  (main.py reads the recipe)
from vision_kan.train.data import TransformConfig, build_datasets, build_loaders, build_transform  # noqa: E402
from vision_kan.train.errors import UserInputError, run_cli  # noqa: E402


def measure(loader, batches: int) -> List[float]:
    """[seconds to the first batch, images/s over the next `batches` batches]."""
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        try:
            samples, _ = next(it)
        except StopIteration:
            break
        images += samples.shape[0]
    return [first, images / (time.perf_counter() - start)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='deit_configs/cifar10_short.yaml', help='the recipe whose transforms to use')
    p.add_argument('--data-path', required=True)
    p.add_argument('--workers', default='8', help='comma list of DataLoader worker counts')
    p.add_argument('--batch-size', type=int, default=0, help='default: the recipe\'s')
    p.add_argument('--batches', type=int, default=100, help='timed batches after the first')
    p.add_argument('--pin-mem', action=argparse.BooleanOptionalAction, default=torch.cuda.is_available())
    a = p.parse_args(argv)
    return run_cli(lambda: report(a))


def report(a: argparse.Namespace) -> None:
    try:
        workers = [int(w) for w in a.workers.split(',') if w.strip()]
    except ValueError:
        workers = []
    if not workers or min(workers) < 0:
        raise UserInputError(f'--workers must be a comma list of counts >= 0, got {a.workers!r}')
    args = parse_args(['--config', a.config, '--data-path', a.data_path])
    batch = a.batch_size or args.batch_size
    tcfg = TransformConfig.from_flags(args)
    train_set, val_set, _ = build_datasets(a.data_path, build_transform(True, tcfg), build_transform(False, tcfg))
    rows = []
    for n in workers:
        loader, _ = build_loaders(train_set, val_set, batch, n, a.pin_mem, 1, 0, False, args.seed)
        rows.append([n, *measure(loader, a.batches)])
    print(f'# {a.config}: {args.input_size} px, batch {batch}, {len(train_set)} train images, pin_memory {a.pin_mem}, '
          f'{torch.get_num_threads()} torch threads in the main process')
    print('| workers | first batch s | img/s |')
    print('|---|---|---|')
    for n, first, speed in rows:
        print(f'| {n} | {first:.2f} | {speed:.0f} |')

if __name__ == '__main__':
    sys.exit(main())
