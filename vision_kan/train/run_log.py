"""What a run leaves behind besides checkpoints: one JSON line per epoch in log.txt, TensorBoard scalars, and the
table printed at the end. Only rank 0 makes a RunLog that writes."""
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ['RunLog', 'results_table']


class RunLog:
    """log.txt (appended, one JSON object per epoch) and TensorBoard event files under output_dir/tensorboard.

    Args:
        output_dir: the run's folder; None makes a RunLog that only keeps rows in memory (ranks > 0).
        fresh: a new run (not a resume): its first row replaces log.txt and the old TensorBoard event files
            (only reached with --overwrite when a previous run is there).
    """

    def __init__(self, output_dir: Optional[Path], fresh: bool = True):
        self.output_dir = output_dir
        self.fresh = fresh
        self.rows: List[Dict[str, Any]] = []
        self.writer = None  # made with the first row: a run that fails before finishing an epoch writes nothing

    def log_epoch(self, row: Dict[str, Any]) -> None:
        """row: {'epoch': 1-based, 'train_loss', 'train_lr', 'train_img_per_s', 'test_loss', 'test_acc1', ...}."""
        self.rows.append(row)
        if self.output_dir is None:
            return
        first = self.writer is None
        if first:
            from torch.utils.tensorboard import SummaryWriter
            if self.fresh:
                for old in (self.output_dir / 'tensorboard').glob('events.out.tfevents.*'):
                    old.unlink()
            self.writer = SummaryWriter(log_dir=str(self.output_dir / 'tensorboard'))
        with open(self.output_dir / 'log.txt', 'w' if first and self.fresh else 'a') as f:
            f.write(json.dumps(row) + '\n')
            f.flush()
            os.fsync(f.fileno())
        for key, value in row.items():
            if key.split('_')[0] in ('train', 'test', 'ema') and isinstance(value, (int, float)):
                split, _, name = key.partition('_')  # 'train_loss' -> train/loss, 'test_acc1' -> test/acc1
                self.writer.add_scalar(f'{split}/{name}', value, row['epoch'])
        self.writer.add_scalar('train/epoch_time', row['epoch_time'], row['epoch'])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# (row key, column title, format)
_COLUMNS = (
    ('epoch', 'epoch', '{:d}'), ('train_loss', 'train loss', '{:.4f}'), ('train_lr', 'lr', '{:.2e}'),
    ('test_loss', 'val loss', '{:.4f}'), ('test_acc1', 'val acc1', '{:.2f}'), ('test_acc5', 'val acc5', '{:.2f}'),
    ('ema_acc1', 'ema acc1', '{:.2f}'), ('train_img_per_s', 'img/s', '{:.0f}'), ('epoch_time', 'time s', '{:.1f}'),
)


def results_table(rows: List[Dict[str, Any]], max_rows: int = 20) -> str:
    """A plain-text table of the epoch rows (the last max_rows of them)."""
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    shown = rows[-max_rows:]
    cells = [[fmt.format(r[key]) if r.get(key) is not None else '-' for key, _, fmt in cols] for r in shown]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (_, title, _) in enumerate(cols)]
    lines = ['  '.join(title.rjust(w) for (_, title, _), w in zip(cols, widths))]
    lines.append('  '.join('-' * w for w in widths))
    lines += ['  '.join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    if len(rows) > max_rows:
        lines.insert(2, f'({len(rows) - max_rows} earlier epochs in log.txt)')
    return '\n'.join(lines)
