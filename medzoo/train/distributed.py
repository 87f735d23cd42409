"""torch.distributed helpers: DDP via ``torchrun`` (nccl on CUDA, gloo on CPU); only rank 0 writes.

Under ``torchrun`` the environment holds ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed`
starts the process group from it. A group that is already initialised (``torch.multiprocessing`` tests) is used
as it is.

Example:
    >>> world_size(), rank(), is_main()
    (1, 0, True)
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from medzoo.utils.device import local_rank

__all__ = ["init_distributed", "is_distributed", "is_main", "local_rank", "rank", "world_size", "barrier"]

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without DDP)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files, logs metrics and shows progress."""
    return rank() == 0


def init_distributed(device: str = "auto") -> None:
    """Start the process group when launched by torchrun with ``WORLD_SIZE > 1`` (no-op otherwise)."""
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    log.info("DDP: rank %d of %d (%s)", rank(), world_size(), backend)


def barrier() -> None:
    """Wait for every rank (no-op without DDP)."""
    if is_distributed():
        dist.barrier()
