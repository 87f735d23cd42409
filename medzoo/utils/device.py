"""Picking the torch device from a config string, with one-line errors for devices this machine lacks.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import os

import torch

__all__ = ["DeviceError", "local_rank", "resolve_device"]


class DeviceError(ValueError):
    """A device name this build or machine cannot provide (a ``ValueError``: the CLI prints it as one line)."""


def local_rank() -> int:
    """The device index on this node (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _check_cuda(dev: torch.device, name: str) -> None:
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES)")
        raise DeviceError(f"device {name!r}: {why} (torch {torch.__version__}); use 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def resolve_device(name: str) -> torch.device:
    """``auto`` is this process's CUDA device (``cuda:$LOCAL_RANK``, so each torchrun rank gets its own GPU) when
    CUDA is available, else the CPU; any other name must be a device this machine has.

    Raises:
        DeviceError: an unknown device name, CUDA on a build or machine without it, a CUDA index past the device
            count, or an unavailable MPS device; the message is one line naming the device.

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {name!r} is not a device name; expected cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        _check_cuda(dev, name)
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name!r}: MPS is not available on this machine; use 'cpu' or 'auto'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name!r}: medzoo runs on cpu, cuda or mps")
    return dev
