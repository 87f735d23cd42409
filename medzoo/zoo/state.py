"""Safe reading of weight files, prefix stripping, stem adaptation and loading with a report.

Weights are read only from safetensors or with ``torch.load(weights_only=True)``: a pickle that carries code is
refused before anything in it runs. A torch zip archive whose members declare far more bytes than the file holds
(deflated records: torch reads them, and a 1 MB file then inflates to GBs) is refused before anything is allocated,
and a tensor holding NaN or infinity is refused when it would be loaded into a model, naming the tensors.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from medzoo.zoo.report import LoadReport

__all__ = ["NonFiniteWeightsError", "UnsafeWeightsError", "adapt_input_conv", "check_archive", "check_finite",
           "load_state_with_report", "read_weights", "strip_prefixes", "unwrap_state_dict"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: A torch archive may declare at most this many uncompressed bytes beyond twice its size on disk: torch itself
#: stores records uncompressed, so only a re-zipped (or hostile) file comes near it.
ARCHIVE_SLACK_BYTES = 16 << 20


class UnsafeWeightsError(ValueError):
    """A weight file holds pickled objects other than tensors and plain containers, so it was not loaded."""


class NonFiniteWeightsError(ValueError):
    """Tensors hold NaN or infinity; a model built from them would give NaN (or saturated) outputs."""


def check_archive(path: str | Path) -> None:
    """Refuse a zip-format torch file whose members declare more bytes than its size can honestly hold.

    The sum of the members' declared uncompressed sizes must stay within ``2 x file size + ARCHIVE_SLACK_BYTES``:
    ``torch.save`` stores records uncompressed, while a deflated record of zeros expands about 1000-fold.

    Raises:
        ValueError: the declared size exceeds the budget (nothing was decompressed or allocated).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return  # the legacy format: torch checks each storage's size against the bytes that follow it
    actual = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a readable torch weight file (corrupt zip archive: {exc})") from None
    if declared > 2 * actual + ARCHIVE_SLACK_BYTES:
        raise ValueError(f"{path}: its zip members declare {declared:,} bytes uncompressed in a {actual:,}-byte file "
                         "(compressed records expand that much when loaded); refused before loading. torch.save "
                         "writes records uncompressed: re-save the weights with torch.save or use safetensors")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse floating-point tensors holding NaN or infinity, naming them (the first five and how many in all).

    Raises:
        NonFiniteWeightsError: some tensor is not finite.

    Example:
        >>> check_finite({"w": torch.ones(2)}, "w.pt")  # finite: nothing happens
    """
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
           and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteWeightsError(f"{source}: {len(bad)} tensor(s) hold NaN or infinity: {bad[:5]}{more}; refusing "
                                    "to load weights that make every output NaN (or saturated)")


def read_weights(path: str | Path) -> dict:
    """Read a weight file without running code from it.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)`` on the
    CPU, which refuses pickled code (``__reduce__`` payloads) before executing it.

    Args:
        path: the file.

    Returns:
        The loaded object (a dict of tensors, or a checkpoint dict holding one).

    Raises:
        FileNotFoundError: no such file.
        UnsafeWeightsError: the pickle holds something other than tensors and plain containers.
        ValueError: the file is truncated, corrupt, not a weight file, or a zip archive declaring far more bytes
            than it holds (see :func:`check_archive`).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "w.pt"); torch.save({"w": torch.ones(2)}, p)
        >>> read_weights(p)["w"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
            raise ValueError(f"{path}: not a valid safetensors file ({exc})") from exc
    check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeWeightsError(
            f"{path}: refused to load: the pickle holds objects other than tensors ({_first_line(exc)}). medzoo "
            "only loads weights with torch.load(weights_only=True) or safetensors; re-save trusted weights as a plain "
            "state dict or convert them with `medzoo convert`."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        reason = _first_line(exc)
        raise ValueError(f"{path}: not a readable torch weight file (truncated or corrupt?): {reason}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unwrap_state_dict(obj: object, source: str = "<weights>") -> dict[str, torch.Tensor]:
    """Return the tensor mapping of a loaded file: the object itself, or its ``state_dict`` / ``model`` entry.

    Non-tensor values in a state dict are an error naming the key.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: state dict entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, expected a tensor")
    return dict(obj)


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict:
    """Remove leading wrapper prefixes (``module.`` from DataParallel, ``_orig_mod.`` from torch.compile).

    Example:
        >>> sorted(strip_prefixes({"module.conv1.weight": 1, "module._orig_mod.fc.bias": 2}))
        ['conv1.weight', 'fc.bias']
    """
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a stem convolution ``[O, I, *k]`` to ``in_channels`` inputs.

    From 1 channel: repeat and divide by ``in_channels``, so that a C-channel input whose channels are all equal gives
    the same output as the 1-channel original. To 1 channel: sum over channels. Otherwise: repeat cyclically and
    rescale by ``I / in_channels``.

    Example:
        >>> adapt_input_conv(torch.ones(2, 1, 3, 3, 3), 3).shape
        torch.Size([2, 3, 3, 3, 3])
    """
    source_channels = weight.shape[1]
    if in_channels == source_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // source_channels)
    repeated = weight.repeat(1, reps, *([1] * (weight.dim() - 2)))[:, :in_channels]
    return repeated * (source_channels / in_channels)


def load_state_with_report(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                           stem_key: str = "conv1.weight", strict: bool = True, key_prefix: str = "") -> LoadReport:
    """Copy ``state`` into ``module`` by name and report every key.

    Tensors load when names and shapes match. The stem (``stem_key``) is adapted when only its input channels
    differ. Missing ``num_batches_tracked`` buffers are tolerated (reported as missing). Any other shape mismatch,
    or (with ``strict``) a missing parameter, is an error naming the key and both shapes; a NaN or infinite tensor
    that would be loaded is an error naming it (with ``key_prefix``, the module's name in the model, prepended).
    """
    report = LoadReport(source=source)
    own = module.state_dict()
    check_finite({key_prefix + k: v for k, v in state.items() if k in own}, source)
    new: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            report.missing.append(key)
            continue
        value = state[key]
        if target.is_floating_point() and not value.is_floating_point():
            raise ValueError(f"{source}: {key!r} has dtype {value.dtype} in the file, the model expects a "
                             f"floating-point tensor ({target.dtype}); refusing to cast")
        if value.shape != target.shape:
            if key == stem_key and value.shape[:1] + value.shape[2:] == target.shape[:1] + target.shape[2:]:
                value = adapt_input_conv(value, target.shape[1])
                report.adapted[key] = f"input channels {state[key].shape[1]} -> {target.shape[1]}"
            else:
                raise ValueError(f"{source}: {key!r} has shape {tuple(value.shape)} in the file, "
                                 f"the model expects {tuple(target.shape)}")
        else:
            report.loaded.append(key)
        new[key] = value.to(dtype=target.dtype)
    report.unexpected = [k for k in state if k not in own]
    hard_missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if strict and hard_missing:
        raise ValueError(f"{source}: missing {len(hard_missing)} key(s) the model needs, e.g. {hard_missing[:3]}")
    module.load_state_dict(new, strict=False)  # every key is accounted for in the report above
    return report
