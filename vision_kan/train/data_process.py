"""The GPU backends' training batches made in a process of their own (--data-process, opt-in).

Why: in one process the loader's host work (collating, the nvjpeg call, ~300 small augmentation ops a batch planned
on the CPU) and the training loop's (eager dispatch of a step) share one GIL, so their host times add up instead of
overlapping: the loader in a thread trained deit_tiny at 224 px at 0.60x synthetic (H200, 2026-11-28), in this
process at 0.80x (vit_grkan_tiny 0.59x -> 0.91x). The batches cross through a ring of buffers that each producer
shares once (batch_slots: per batch a slot number, one device copy in the parent); a batch of another shape crosses
as tensors of its own through torch.multiprocessing (on CUDA an IPC handle and an event; _Handoff says how it is
taken in).
Opt-in: it is not faster in every measured row yet (README, "GPU data backends"). Its workers are forked
(gpu_data.decode_train_loader): spawned, as a spawned process's children are by default, 14 of them took 162 s to
start (benchmarks/data_process_check.py found it).

    parent (training)                                 producer k of N (spawned once per rank, lives for the run)
    sampler.set_epoch(e); iter(loader)  -- (e, indices, batch numbers) -->  the in-process loader over the indices
                                                             of batches k, k + N, ...: decode in a thread, augment
                                                             on its main thread
                <-- ('slots', buffers, events) once per producer (batch_slots) --
                <-- ('slot', k) or ('batch', images, labels) per batch, then ('end',) --   (at most `depth` waiting)
                -- slot k free again, once the parent's copy of it has run -->
    the parent reads batch b from producer b % N, so the order is the sampler's
    a loop left early: the cancel event, then the parent drains every producer up to its ('end',)
    an error there: ('error', exception) then ('end',); raised here as the same exception (CorruptImageError ...)

Why N (--data-processes): torchvision's nvjpeg decoder holds a process-wide lock and its host side runs for the
whole call, so one producer decodes one batch at a time; on an H200 (2026-11-28, benchmarks/jpeg_decoder_probe.py
--processes) the GPU's JPEG engines decoded 16,243 img/s for one process, 21,079 for two and 30,229 for four.

The sampler stays in the parent (set_epoch, DDP shards, resume), so the batches are those of the loader run in the
parent, augmentations included (each batch's generator is a function of (seed, rank, epoch, batch number)). The
producers die with the parent (PR_SET_PDEATHSIG on Linux, and a check of its parent on every queue wait).
"""
import atexit
import collections
import ctypes
import os
import queue
import signal
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as torch_mp
from torch.utils.data import BatchSampler

from .batch_slots import SlotReader, SlotWriter

__all__ = ['ProcessLoader', 'EpochIndices']

_POLL_S = 1.0  # queue waits are cut into polls of this length, checking that the other side is alive


class EpochIndices:
    """The producer's stand-in for the parent's sampler: the indices of this producer's batches of this epoch, the
    epoch's number and those batches' numbers in the epoch (the augmentation generators' seeds read both)."""

    def __init__(self) -> None:
        self.indices: List[int] = []
        self.epoch = 0
        self.batch_ids: Optional[List[int]] = None  # None: 0, 1, ... (a loader built outside a producer)

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
             freed: Any, slots: int, cancel: Any, parent_pid: int) -> None:
    """The producer's main loop: one command (epoch, indices) per epoch, None to stop."""
    _die_with_parent()
    trace = os.environ.get('VISION_KAN_DATA_PROCESS_TRACE')
    if trace:  # debugging (benchmarks/data_process_check.py): milestones, each epoch's batch times, and (N > 0)
        import faulthandler  # every thread's stack every N seconds
        if float(trace) > 0:
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

    ring = SlotWriter(slots, freed)
    sent = 0
    while alive():
        try:
            command = commands.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if command is None:
            break
        order.epoch, order.indices, order.batch_ids = command
        mark(f'epoch {order.epoch}: {len(order.indices)} indices, {len(order.batch_ids)} batches')
        batches = iter(loader)
        make_ms: List[float] = []  # per batch: waiting for the loader (decode + augmentation issue) ...
        put_ms: List[float] = []  # ... and for room in the queue (the parent not taking batches as fast)
        try:
            t = time.perf_counter()
            for images, labels in batches:
                made = time.perf_counter()
                make_ms.append((made - t) * 1e3)
                if sent < 2:
                    mark(f'batch {sent} made')
                if cancel.is_set():
                    break
                if slots and ring.fits(images, labels):
                    if not ring.images and not put(ring.allocate(images, labels)):
                        break
                    k = ring.write(images, labels, lambda: alive() and not cancel.is_set(), _POLL_S)
                    if k is None or not put(('slot', k, None)):
                        break
                elif not put(('batch', images, labels)):
                    break
                del images, labels
                if sent < 2:
                    mark(f'batch {sent} handed over')
                sent += 1
                t = time.perf_counter()
                put_ms.append((t - made) * 1e3)
                if device.type == 'cuda' and sent % 16 == 0:
                    torch.cuda.ipc_collect()  # free the blocks of plain batches that the parent has released
        except BaseException as e:  # noqa: BLE001  (handed to the parent, raised there)
            put(('error', _picklable(e), None))
        finally:
            # an epoch left early: stop its prefetch thread now, so that the next epoch's iterator resets the
            # persistent workers from a quiet state
            getattr(batches, 'close', lambda: None)()
        if trace and make_ms:
            mark(f'epoch {order.epoch}: {len(make_ms)} batches; ms a batch, median / max: making '
                 f'{statistics.median(make_ms):.1f} / {max(make_ms):.1f} (the first {make_ms[0]:.1f}), waiting to hand '
                 f'over {statistics.median(put_ms or [0.0]):.1f} / {max(put_ms or [0.0]):.1f}')
        put(('end', None, None))
    getattr(loader, 'close', lambda: None)()  # the decode backend's DataLoader workers
    # leave without the interpreter's teardown: freeing CUDA blocks that carry stream events (record_stream) while
    # the driver unloads aborts with 'driver shutting down'
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _Producer:
    """One spawned producer with its queues: commands in, results out (at most `depth` waiting), slot numbers
    back (batch_slots: depth + 2 slots, so that it never waits for one while the queue has room; 0: no ring)."""

    def __init__(self, ctx: Any, make_loader: Callable[[EpochIndices], Any], device: torch.device, depth: int,
                 slots: bool, cancel: Any, name: str):
        self.commands = ctx.Queue()
        self.results = ctx.Queue(maxsize=depth)
        self.freed = ctx.Queue()
        self.slots: Optional[SlotReader] = None  # from the producer's first 'slots' message
        self.pending = False  # an epoch was started and its ('end',) not yet read
        self.process = ctx.Process(target=_produce, name=name,
                                   args=(make_loader, device, self.commands, self.results, self.freed,
                                         depth + 2 if slots else 0, cancel, os.getpid()))
        self.process.start()

    def get(self) -> Tuple[str, Any, Any]:
        """The next ('batch' | 'slot' | 'error' | 'end', ...) message; a 'slots' message is taken in on the way."""
        while True:
            try:
                kind, a, c = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f'the data process (--data-process) exited with code '
                                       f'{self.process.exitcode} before its batches were made') from None
                continue
            if kind != 'slots':
                return kind, a, c
            self.slots = SlotReader(a, c, self.freed)

    def stop(self) -> None:
        """The stop command, the results emptied meanwhile so that a producer blocked on a full queue sees it, then
        terminate() if it has not ended within ~10 s."""
        self.slots = None  # the trainer's view of the slots goes before the producer that owns them
        try:
            self.commands.put(None)
            for _ in range(100):
                if not self.process.is_alive():
                    break
                try:
                    self.results.get(timeout=0.1)
                except queue.Empty:
                    pass
        except (OSError, ValueError):
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


class _Handoff:
    """The trainer's side of a CUDA batch from a producer: copied into the trainer's own memory on the training
    stream, the received tensors freed once that copy has run, inside a stream with nothing queued.

    Why: torch frees a CUDA tensor received from another process with a cudaStreamSynchronize of the current stream
    (its IPC deleter: the producer may reuse the memory at once). Freed on the training stream, as the engine's
    loop drops the last batch, that is a full wait every step: the host can no longer queue step n + 1 while the GPU
    runs step n. DeiT-tiny at 224 px (H200, 2026-11-28) trained at 0.73x --synthetic-data with that wait. The copy
    costs the training stream one pass over the batch (256 x 3 x 224 x 224 fp32: 154 MB read and written; its time
    not measured alone) and holds the received batches a little longer, until their copies have run.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.idle = torch.cuda.Stream(device) if self.cuda else None
        self.pending: 'collections.deque[Tuple[Tuple[torch.Tensor, ...], torch.cuda.Event]]' = collections.deque()

    def take(self, *received: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Own copies of `received` (queued on the current stream), after releasing the batches already copied."""
        if not self.cuda or not any(t.is_cuda for t in received):
            return received
        own = tuple(t.clone() for t in received)
        copied = torch.cuda.Event()
        copied.record()
        self.pending.append((received, copied))
        self.release()
        return own

    def release(self, every: bool = False) -> None:
        """Free the received tensors whose copy has run (every one, waiting for the copies, with every=True)."""
        if not self.pending:
            return
        with torch.cuda.stream(self.idle):  # the IPC deleter's stream sync returns at once here
            while self.pending and (every or self.pending[0][1].query()):
                received, copied = self.pending.popleft()
                copied.synchronize()
                del received


class ProcessLoader:
    """A loader whose batches spawned processes make: len(), `.sampler` (the parent's, set_epoch is called on it)
    and iteration, like the in-process loader that make_loader builds.

    make_loader(sampler) -> loader: a picklable callable (a module-level function or a functools.partial of one)
    that builds, in a producer, the in-process loader over `sampler` (an EpochIndices). depth: batches made ahead
    by each producer. processes: producers; producer k makes batches k, k + processes, ... of each epoch (its
    EpochIndices holds their indices and numbers) and the parent reads them back in order. The augmentations'
    generator is a function of the batch number (gpu_data.batch_generator), so any count gives the same batches.
    slots: batches cross through a ring of buffers shared once (batch_slots); False: each batch as tensors of its
    own (an IPC handle per batch on CUDA, taken in by _Handoff), the way of the batches that do not fit the ring.
    """

    def __init__(self, make_loader: Callable[[EpochIndices], Any], sampler: Sequence[int], batch_size: int,
                 drop_last: bool, device: torch.device, depth: int = 3, processes: int = 1, slots: bool = True):
        if processes < 1:
            raise ValueError(f'processes must be at least 1, got {processes}')
        if device.type == 'cuda' and device.index is None:  # the producer's set_device needs an index
            device = torch.device('cuda', torch.cuda.current_device())
        self.make_loader, self.sampler, self.device, self.depth = make_loader, sampler, device, depth
        self.processes, self.slots = processes, slots
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self._ctx = torch_mp.get_context('spawn')
        self._producers: List[_Producer] = []
        self._cancel: Any = None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _start(self) -> None:
        if self._producers and all(p.process.is_alive() for p in self._producers):
            return
        for p in self._producers:  # one of them died: start afresh
            p.stop()
        self._cancel = self._ctx.Event()
        self._producers = [_Producer(self._ctx, self.make_loader, self.device, self.depth, self.slots, self._cancel,
                                     f'vision-kan-data-{k}') for k in range(self.processes)]
        atexit.register(self.close)  # a producer left running would keep the interpreter from exiting

    def _drain(self) -> None:
        """Read up to each running epoch's ('end',), the producers told to stop early."""
        if not any(p.pending for p in self._producers):
            return
        self._cancel.set()
        try:
            for p in self._producers:
                while p.pending:
                    kind, a, _ = p.get()
                    if kind == 'slot':
                        p.slots.skip(a)  # type: ignore[union-attr]
                    p.pending = kind != 'end'
        finally:
            for p in self._producers:
                p.pending = False
            self._cancel.clear()

    def _shares(self) -> List[Tuple[List[int], List[int]]]:
        """(indices, batch numbers) of each producer for this epoch: batch b goes to producer b % processes."""
        indices, size, n = list(self.sampler), self.batch_size, len(self)
        shares = []
        for k in range(self.processes):
            ids = list(range(k, n, self.processes))
            shares.append(([i for b in ids for i in indices[b * size:(b + 1) * size]], ids))
        return shares

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        self._start()
        self._drain()
        epoch = int(getattr(self.sampler, 'epoch', 0))
        for p, (indices, ids) in zip(self._producers, self._shares()):
            p.commands.put((epoch, indices, ids))
            p.pending = True
        handoff = _Handoff(self.device)
        try:
            for b in range(len(self)):
                p = self._producers[b % self.processes]
                kind, a, c = p.get()
                if kind == 'error':
                    raise a
                if kind == 'slot':
                    images, labels = p.slots.take(a)  # type: ignore[union-attr]
                elif kind == 'batch':
                    images, labels = handoff.take(a, c)
                    del a, c  # the received tensors live on in handoff.pending only
                else:
                    raise RuntimeError(f'the data process ended its epoch after {b} of {len(self)} batches')
                yield images, labels
                del images, labels
            for p in self._producers:
                kind, a, _ = p.get()
                if kind == 'error':
                    raise a
                p.pending = kind != 'end'
        finally:
            handoff.release(every=True)
            self._drain()

    def close(self) -> None:
        """Stop the producers (called at exit too)."""
        atexit.unregister(self.close)  # a closed loader need not be kept alive until exit
        producers, self._producers = self._producers, []
        if self._cancel is not None and producers:
            try:
                self._cancel.set()
            except (OSError, ValueError):
                pass
        for p in producers:
            p.stop()
