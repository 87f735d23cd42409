"""How a run executes on its device: precision, memory format, compilation, batch-norm sync, cuDNN and DataLoader
settings (``train.precision``, ``channels_last``, ``compile``, ``sync_bn``, ``deterministic``, ``num_workers``...).

None of these changes the maths of an fp32 run. The GPU-only options fail at start-up with one line on a CPU
device rather than running slowly or not at all: autocast in bf16 on a CPU is many times slower than fp32, fp16
autocast needs CUDA kernels, and SyncBatchNorm runs on GPUs only.

Example:
    >>> import torch
    >>> from medzoo.train.config import TrainConfig
    >>> loader_kwargs(TrainConfig(), torch.device("cpu"))
    {'num_workers': 0, 'pin_memory': False}
    >>> loader_kwargs(TrainConfig(num_workers=2, prefetch_factor=4), torch.device("cpu"))["prefetch_factor"]
    4
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from medzoo.config import ConfigError
from medzoo.train.config import TrainConfig

__all__ = ["autocast", "check_execution", "configure_backends", "default_workers", "grad_scaler", "loader_kwargs",
           "to_memory_format", "wrap_model"]

log = logging.getLogger(__name__)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_execution(t: TrainConfig, device: torch.device) -> None:
    """Refuse the options that ``device`` cannot run.

    Raises:
        ConfigError: ``precision`` bf16/fp16, or ``sync_bn``, on a non-CUDA device; bf16 on a GPU without it.
    """
    if t.precision != "fp32" and device.type != "cuda":
        raise ConfigError(f"train.precision: {t.precision} runs on CUDA only (on {device.type} autocast is many "
                          "times slower than fp32, or unsupported); use train.precision=fp32")
    if t.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 or fp32")
    if t.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn: SyncBatchNorm runs on CUDA only; on CPU, batch-norm statistics are made "
                          "consistent by broadcasting rank 0's before every evaluation and checkpoint (or set "
                          "train.norm_eval=true)")


def configure_backends(t: TrainConfig, device: torch.device) -> None:
    """cuDNN autotuning (``benchmark``) on CUDA, unless ``deterministic`` asks for reproducible kernels."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
        torch.backends.cudnn.deterministic = t.deterministic


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=precision == "fp16")


def default_workers(device: torch.device, world: int = 1) -> int:
    """DataLoader workers per process when ``num_workers`` is null.

    On CUDA: this process's share of the CPUs, less one for the training loop itself, at most 4 (the cores are
    otherwise idle while the GPU computes). On a CPU device: 0, since the training step's own threads already use
    every core and workers would compete with them (set ``num_workers`` when decoding dominates, e.g. PNG or NIfTI
    without a prepared cache).
    """
    if device.type != "cuda":
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return max(0, min(4, cpus // max(1, local) - 1))


def loader_kwargs(t: TrainConfig, device: torch.device, world: int = 1) -> dict[str, object]:
    """DataLoader arguments from the config: workers (persistent, with a prefetch depth) and pinned memory."""
    workers = default_workers(device, world) if t.num_workers is None else t.num_workers
    out: dict[str, object] = {"num_workers": workers,
                              "pin_memory": device.type == "cuda" if t.pin_memory is None else t.pin_memory}
    if workers > 0:
        out["persistent_workers"] = t.persistent_workers
        if t.prefetch_factor is not None:
            out["prefetch_factor"] = t.prefetch_factor
    return out


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in channels-last layout (``channels_last`` for 4-D, ``channels_last_3d`` for 5-D) when asked."""
    if not channels_last or x.dim() not in (4, 5):
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


def wrap_model(model: nn.Module, t: TrainConfig, device: torch.device, world: int,
               find_unused: bool) -> tuple[nn.Module, nn.Module]:
    """``(model, net)``: the model (batch norm made synchronous when ``sync_bn`` under DDP; channels-last weights)
    and the module the training step calls (DDP around it when ``world > 1``, compiled when ``compile``)."""
    if t.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if t.channels_last:
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = to_memory_format(tensor.data, True)
    net: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
    if t.compile:
        net = torch.compile(net)
    return model, net
