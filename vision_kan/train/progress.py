"""What the user watches during an epoch: a tqdm bar on a terminal (loss, lr, img/s, ETA), or, when output goes to a
file or a pipe, one printed line (with the ETA) every `print_freq` steps and always one at the end of the loop (also
when the loop has fewer steps than print_freq, or ends before its announced total)."""
import datetime
import sys
import time
from typing import Dict, Optional, TextIO

from tqdm import tqdm

__all__ = ['Progress', 'format_values']


def format_values(values: Dict[str, float]) -> str:
    """{'loss': 1.23, 'lr': 5e-4, 'img/s': 812.3} -> 'loss 1.2300 lr 5.00e-04 img/s 812'."""
    parts = []
    for k, v in values.items():
        if k == 'lr':
            parts.append(f'{k} {v:.2e}')
        elif k.endswith('/s'):
            parts.append(f'{k} {v:.0f}')
        else:
            parts.append(f'{k} {v:.4f}')
    return ' '.join(parts)


class Progress:
    """Progress of one loop of `total` steps.

    Args:
        total: steps in the loop.
        desc: prefix, e.g. 'Epoch 3/300'.
        enabled: False on ranks other than 0 (they print nothing).
        print_freq: steps between printed lines when the stream is not a terminal.
        stream: where to write; by default a tqdm bar on stderr when that is a terminal, else lines on stdout
            (so stderr carries only warnings and errors in logs).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, print_freq: int = 50,
                 stream: Optional[TextIO] = None):
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.print_freq = max(1, print_freq)
        if stream is None:
            stream = sys.stderr if sys.stderr.isatty() else sys.stdout
        self.stream = stream
        self.step = 0
        self.printed_step = 0  # the step of the last printed line
        self.values: Dict[str, float] = {}
        self.start = time.perf_counter()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True, leave=True)

    def update(self, values: Dict[str, float]) -> None:
        """One step done; `values` are shown next to the bar."""
        self.step += 1
        self.values = values
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(format_values(values), refresh=False)
            self.bar.update(1)
        elif self.step % self.print_freq == 0 or self.step == self.total:
            self._print_line()

    def _print_line(self) -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.step * max(0, self.total - self.step)
        width = len(str(self.total))
        print(f'{self.desc} [{self.step:>{width}}/{self.total}] {format_values(self.values)} '
              f'eta {datetime.timedelta(seconds=int(eta))}', file=self.stream, flush=True)
        self.printed_step = self.step

    def close(self) -> None:
        """End of the loop: closes the bar, or prints the last line if the last step has not been printed."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.step > self.printed_step:
            self._print_line()
