"""Picking the torch device from a config string.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import os

import torch

__all__ = ["local_rank", "resolve_device"]


def local_rank() -> int:
    """The device index on this node (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str) -> torch.device:
    """``auto`` is this process's CUDA device (``cuda:$LOCAL_RANK``, so each torchrun rank gets its own GPU) when
    CUDA is available, else the CPU; any other name is passed to :class:`torch.device`.

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
