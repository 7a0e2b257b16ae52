"""A ring of batch buffers shared once between a producer process and the trainer (--data-process).

Why: a CUDA tensor sent through a torch.multiprocessing queue carries an IPC memory handle that the receiver opens,
and closes again when it frees the tensor: host work on the trainer's thread for every batch. On an H200
(2026-11-28, benchmarks/ipc_receive_probe.py, 256 x 3 x 224^2 fp32 batches beside a 35 ms step) taking a batch that
way and freeing it behind a copy (data_process._Handoff) cost the trainer 4.2 ms a batch (median; 90th percentile
12.5), a slot of a shared ring 0.45 ms; the real 224 px trainer waited 4.5-4.8 ms a step for its batches while its
producers sat on full queues. Through the ring (DeiT-tiny, 3 producers, same H200, two A/B rounds) it waits 0.26 ms
a step (3.9 / 6.0 before) and trains at 6,283 / 6,198 img/s against 5,966 / 5,997. Only a slot number crosses:

    producer (its own stream)                         trainer (the training stream)
    slots: `count` x (images, labels) like the first batch, one 'filled' event each  -- sent once -->
                                                      <-- its own 'consumed' event per slot, once --
    take a free slot k; wait for consumed[k];
    copy the batch into slot k; record filled[k]  -- k -->
                                                      wait for filled[k]; clone slot k (its own batch);
                                                      record consumed[k]
                                                      <-- k (free again) --
On the CPU the slots are shared memory, the copies synchronous and there are no events. A batch that does not fit
the slots (another shape or dtype, a CPU tensor on CUDA) goes the plain way (data_process: 'batch').
"""
import queue
from typing import Any, Callable, List, Optional, Tuple

import torch

Batch = Tuple[torch.Tensor, torch.Tensor]


class SlotWriter:
    """The producer's side. `freed`: the queue on which the trainer returns slot numbers (its events first)."""

    def __init__(self, count: int, freed: Any):
        self.count, self.freed = count, freed
        self.images: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []
        self.filled: Optional[List[torch.cuda.Event]] = None
        self.consumed: Optional[List[torch.cuda.Event]] = None
        self.free: List[int] = []
        self.heard_back = False  # the trainer's first message (its events) read

    def fits(self, images: torch.Tensor, labels: torch.Tensor) -> bool:
        if not self.images:
            return images.device.type == labels.device.type
        return all(t.shape == s.shape and t.dtype == s.dtype and t.device == s.device
                   for t, s in ((images, self.images[0]), (labels, self.labels[0])))

    def allocate(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[str, Any, Any]:
        """The slots, shaped like this batch; returns the message that shares them (send it before any slot)."""
        cuda = images.is_cuda

        def like(t: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(t) if cuda else torch.empty_like(t).share_memory_()
        self.images = [like(images) for _ in range(self.count)]
        self.labels = [like(labels) for _ in range(self.count)]
        self.filled = [torch.cuda.Event(interprocess=True) for _ in range(self.count)] if cuda else None
        self.free = list(range(self.count))
        return 'slots', (self.images, self.labels), self.filled

    def write(self, images: torch.Tensor, labels: torch.Tensor, keep_waiting: Callable[[], bool],
              poll_s: float) -> Optional[int]:
        """Copy the batch into a free slot (waiting for one while keep_waiting()); its number, or None if told to
        stop first. On CUDA the copy is queued on the current stream after the trainer's clone of the slot."""
        while not self.free:
            try:
                item = self.freed.get(timeout=poll_s)
            except queue.Empty:
                if not keep_waiting():
                    return None
                continue
            if self.heard_back:
                self.free.append(item)
            else:
                self.consumed, self.heard_back = item, True
        k = self.free.pop(0)
        stream = torch.cuda.current_stream() if self.filled is not None else None
        if stream is not None and self.consumed is not None:
            stream.wait_event(self.consumed[k])  # a no-op before the trainer first records it
        self.images[k].copy_(images, non_blocking=True)  # on the CPU: a plain (synchronous) copy
        self.labels[k].copy_(labels, non_blocking=True)
        if stream is not None:
            self.filled[k].record(stream)  # type: ignore[index]
        return k


class SlotReader:
    """The trainer's side of one producer's ring, built from its 'slots' message."""

    def __init__(self, shared: Tuple[List[torch.Tensor], List[torch.Tensor]],
                 filled: Optional[List[torch.cuda.Event]], freed: Any):
        self.images, self.labels = shared
        self.filled, self.freed = filled, freed
        self.consumed = [torch.cuda.Event(interprocess=True) for _ in self.images] if filled is not None else None
        freed.put(self.consumed)  # the producer reads this before any slot number

    def take(self, k: int) -> Batch:
        """Own copies of slot k (queued on the current stream on CUDA); the slot goes back to the producer."""
        stream = torch.cuda.current_stream(self.images[k].device) if self.filled is not None else None
        if stream is not None:
            stream.wait_event(self.filled[k])  # type: ignore[index]
        own = self.images[k].clone(), self.labels[k].clone()
        if stream is not None:
            self.consumed[k].record(stream)  # type: ignore[index]
        self.freed.put(k)
        return own

    def skip(self, k: int) -> None:
        """Give slot k back unread (an epoch drained after a loop left early)."""
        self.freed.put(k)
