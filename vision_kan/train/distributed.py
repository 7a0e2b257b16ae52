"""Process-group set-up from torchrun's environment, and the few collectives the engine needs.

    torchrun --nproc_per_node=8 main.py ...     # sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT

NCCL when training on CUDA, gloo on CPU. Every helper is a no-op in a single process.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ConfigError

__all__ = ['DistInfo', 'init_distributed', 'cleanup_distributed', 'all_reduce_sum', 'all_gather_cat',
           'broadcast_state', 'barrier', 'all_gather_object', 'state_digest']


@dataclass
class DistInfo:
    """Where this process stands: rank, world size, the device it trains on."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> DistInfo:
    """Read torchrun's variables and start the process group (NCCL on CUDA, gloo on CPU).

    Args:
        device: 'cuda', 'cpu', or None (or '') for CUDA when available.
        env: the environment to read (os.environ when None; a dict in tests).
    """
    env = os.environ if env is None else env
    kind = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if kind not in ('cuda', 'cpu'):
        raise ConfigError(f"--device must be 'cuda', 'cpu' or empty, got {device!r}")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda: no CUDA device is visible; use --device cpu')
    world_size = int(env.get('WORLD_SIZE', 1))
    rank = int(env.get('RANK', 0))
    local_rank = int(env.get('LOCAL_RANK', 0))
    if kind == 'cuda':
        torch.cuda.set_device(local_rank)
        dev = torch.device('cuda', local_rank)
    else:
        dev = torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        backend = 'nccl' if kind == 'cuda' else 'gloo'
        restarted = int(env.get('TORCHELASTIC_RESTART_COUNT', 0)) > 0
        init = dict(store=_attempt_store(env, rank, world_size)) if restarted else dict(init_method='env://')
        dist.init_process_group(backend=backend, world_size=world_size, rank=rank,
                                device_id=dev if kind == 'cuda' else None, **init)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _attempt_store(env: Mapping[str, str], rank: int, world_size: int) -> dist.Store:
    """The env:// store (MASTER_ADDR:MASTER_PORT) under a prefix naming torchrun's restart attempt (used only after
    a restart: a first attempt takes plain env://, whose process group torch 2.6's gloo also tears down cleanly).

    Under `torchrun --max-restarts` the elastic agent's store outlives a failed attempt, and the process group's
    keys (gloo's listening addresses, NCCL's unique id) would be read from the attempt that died: rank 1 connects to
    the dead rank 0 and fails with 'connection refused' whenever its new rank 0 is slower to publish.
    """
    url = f'tcp://{env["MASTER_ADDR"]}:{env["MASTER_PORT"]}?rank={rank}&world_size={world_size}'
    store, _, _ = next(dist.rendezvous(url))
    return dist.PrefixStore(f'vision_kan/attempt_{env.get("TORCHELASTIC_RESTART_COUNT", "0")}/', store)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns t)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """(M, ...) on each rank -> (world * M, ...), rank order. Every rank must pass the same shape."""
    if not _active():
        return t
    parts: List[torch.Tensor] = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer with rank src's copy, bit for bit."""
    if not _active():
        return
    for t in module.state_dict(keep_vars=True).values():
        dist.broadcast(t.data, src=src)


def all_gather_object(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a one-element list in a single process)."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def state_digest(module: nn.Module, buffer_keys: Sequence[str]) -> Dict[str, str]:
    """Short SHA-256 digests of a module's parameters and of the named buffers (e.g. KAN grids), bit for bit, so
    ranks can print them and a reader can compare replicas: {'params': '3f2a...', 'buffers': '9c1e...'}."""
    state = module.state_dict()
    params = {n for n, _ in module.named_parameters()}
    out = {}
    for label, keys in (('params', sorted(k for k in state if k in params)), ('buffers', sorted(buffer_keys))):
        h = hashlib.sha256()
        for k in keys:
            h.update(k.encode())
            h.update(state[k].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        out[label] = h.hexdigest()[:16]
    return out
