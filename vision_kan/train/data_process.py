"""The GPU backends' training batches made in a process of their own (--data-process, opt-in).

Why: in one process the loader's host work (collating, the nvjpeg call, ~300 small augmentation ops a batch planned
on the CPU) and the training loop's (eager dispatch of a step) share one GIL, so their host times add up instead of
overlapping: the loader in a thread trained deit_tiny at 224 px at 0.60x synthetic (H200, 2026-11-28), in this
process at 0.80x (vit_grkan_tiny 0.59x -> 0.91x). The batches cross as tensors through torch.multiprocessing (on
CUDA an IPC handle and an event: no copy, and the training stream waits for the producer's kernels).
Opt-in: it is not faster in every measured row yet (README, "GPU data backends"). Its workers are forked
(gpu_data.decode_train_loader): spawned, as a spawned process's children are by default, 14 of them took 162 s to
start (benchmarks/data_process_check.py found it).

    parent (training)                                 producer (spawned once per rank, lives for the run)
    sampler.set_epoch(e); iter(loader)  -- (e, indices) -->  the in-process loader over these indices:
                                                             decode in a thread, augment on its main thread
                <-- ('batch', images, labels) x len(loader), then ('end',) --   (at most `depth` waiting)
    a loop left early: the cancel event, then the parent drains up to ('end',)
    an error there: ('error', exception) then ('end',); raised here as the same exception (CorruptImageError ...)

The sampler stays in the parent (set_epoch, DDP shards, resume), so the batches are those of the loader run in the
parent, augmentations included (the generator is a function of (seed, rank, epoch)). The producer dies with the
parent (PR_SET_PDEATHSIG on Linux, and a check of its parent on every queue wait).
"""
import atexit
import ctypes
import os
import queue
import signal
import sys
import traceback
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as torch_mp
from torch.utils.data import BatchSampler

__all__ = ['ProcessLoader', 'EpochIndices']

_POLL_S = 1.0  # queue waits are cut into polls of this length, checking that the other side is alive


class EpochIndices:
    """The producer's stand-in for the parent's sampler: this epoch's indices and its number (the augmentation
    generator's seed reads `epoch`)."""

    def __init__(self) -> None:
        self.indices: List[int] = []
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (a killed trainer leaves no producer)."""
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _picklable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling (our DataError/CorruptImageError do), else a RuntimeError
    carrying its type, message and traceback."""
    import pickle
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        text = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
        return RuntimeError(f'in the data process: {type(error).__name__}: {error}\n{text}')


def _produce(make_loader: Callable[[EpochIndices], Any], device: torch.device, commands: Any, results: Any,
             cancel: Any, parent_pid: int) -> None:
    """The producer's main loop: one command (epoch, indices) per epoch, None to stop."""
    _die_with_parent()
    trace = os.environ.get('VISION_KAN_DATA_PROCESS_TRACE')
    if trace:  # debugging (benchmarks/data_process_check.py): milestones, and every thread's stack every N seconds
        import faulthandler
        import time
        faulthandler.dump_traceback_later(float(trace), repeat=True)
        started = time.time()

        def mark(what: str) -> None:
            print(f'[data process {os.getpid()}, {time.time() - started:7.2f} s] {what}', file=sys.stderr, flush=True)
    else:
        def mark(what: str) -> None:
            pass
    mark('started')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)
    mark(f'{device} ready')
    order = EpochIndices()
    loader = make_loader(order)
    mark('loader built')

    def alive() -> bool:
        return os.getppid() == parent_pid

    def put(item: Tuple[str, Any, Any]) -> bool:
        while alive():
            try:
                results.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    sent = 0
    while alive():
        try:
            command = commands.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if command is None:
            break
        order.epoch, order.indices = command
        mark(f'epoch {order.epoch}: {len(order.indices)} indices')
        batches = iter(loader)
        try:
            for images, labels in batches:
                if sent < 2:
                    mark(f'batch {sent} made')
                if cancel.is_set() or not put(('batch', images, labels)):
                    break
                del images, labels
                if sent < 2:
                    mark(f'batch {sent} handed over')
                sent += 1
                if device.type == 'cuda' and sent % 16 == 0:
                    torch.cuda.ipc_collect()  # free the blocks the parent has released
        except BaseException as e:  # noqa: BLE001  (handed to the parent, raised there)
            put(('error', _picklable(e), None))
        finally:
            # an epoch left early: stop its prefetch thread now, so that the next epoch's iterator resets the
            # persistent workers from a quiet state
            getattr(batches, 'close', lambda: None)()
        put(('end', None, None))
    getattr(loader, 'close', lambda: None)()  # the decode backend's DataLoader workers
    # leave without the interpreter's teardown: freeing CUDA blocks that carry stream events (record_stream) while
    # the driver unloads aborts with 'driver shutting down'
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class ProcessLoader:
    """A loader whose batches a spawned process makes: len(), `.sampler` (the parent's, set_epoch is called on it)
    and iteration, like the in-process loader that make_loader builds.

    make_loader(sampler) -> loader: a picklable callable (a module-level function or a functools.partial of one)
    that builds, in the producer, the in-process loader over `sampler` (an EpochIndices). depth: batches made ahead.
    """

    def __init__(self, make_loader: Callable[[EpochIndices], Any], sampler: Sequence[int], batch_size: int,
                 drop_last: bool, device: torch.device, depth: int = 3):
        self.make_loader, self.sampler, self.device, self.depth = make_loader, sampler, device, depth
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self._ctx = torch_mp.get_context('spawn')
        self._process: Optional[Any] = None
        self._pending = False  # an epoch was started and its ('end',) not yet read

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _start(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._commands = self._ctx.Queue()
        self._results = self._ctx.Queue(maxsize=self.depth)
        self._cancel = self._ctx.Event()
        self._process = self._ctx.Process(
            target=_produce, name='vision-kan-data',
            args=(self.make_loader, self.device, self._commands, self._results, self._cancel, os.getpid()))
        self._process.start()
        self._pending = False
        atexit.register(self.close)  # a producer left running would keep the interpreter from exiting

    def _get(self) -> Tuple[str, Any, Any]:
        while True:
            try:
                return self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    self._process = None
                    raise RuntimeError(f'the data process (--data-process) exited with code {code} '
                                       f'before its batches were made') from None

    def _drain(self) -> None:
        """Read up to the running epoch's ('end',), the producer told to stop early."""
        if not self._pending or self._process is None:
            self._pending = False
            return
        self._cancel.set()
        try:
            while self._get()[0] != 'end':
                pass
        finally:
            self._pending = False
            self._cancel.clear()

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        self._start()
        self._drain()
        indices = list(self.sampler)
        self._commands.put((int(getattr(self.sampler, 'epoch', 0)), indices))
        self._pending = True
        try:
            while True:
                kind, a, b = self._get()
                if kind == 'batch':
                    yield a, b
                    del a, b
                elif kind == 'error':
                    raise a
                else:
                    self._pending = False
                    return
        finally:
            self._drain()

    def close(self) -> None:
        """Stop the producer (called at exit too): the stop command, the results emptied meanwhile so that a producer
        blocked on a full queue sees it, then terminate() if it has not ended within ~10 s."""
        atexit.unregister(self.close)  # a closed loader need not be kept alive until exit
        process, self._process = self._process, None
        self._pending = False
        if process is None:
            return
        try:
            self._cancel.set()
            self._commands.put(None)
            for _ in range(100):
                if not process.is_alive():
                    break
                try:
                    self._results.get(timeout=0.1)
                except queue.Empty:
                    pass
        except (OSError, ValueError):
            pass
        process.join(timeout=1)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
