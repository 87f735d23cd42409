"""Writing training checkpoints: atomic writes and RNG state capture (reading them is the zoo's job).

A checkpoint is a dict saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``, which refuses
pickled code, so it holds only tensors, numbers, strings, lists and dicts. Keys:

- ``model``: the model's state dict; ``optimizer``, ``scheduler``, ``scaler``: their state dicts (or None);
- ``rng``: RNG states as tensors and lists (:func:`capture_rng` / :func:`restore_rng`);
- ``step`` (optimizer steps done), ``epoch`` (epochs finished), ``best`` (``{"metric", "value", "step"}`` or None);
- ``config``: the full run config as a YAML *string*, whose top-level ``model`` key is the ``ModelConfig`` dict;
- ``preprocessing``: ``{input kind: contract dict}``, the exact preprocessing each input kind was trained with
  (:func:`medzoo.train.data.recorded_preprocessing`), which exports, ``predict`` and ``explain`` apply;
- ``versions``: medzoo, torch and monai versions.

Writes go to ``<name>.tmp`` first, are flushed to disk, and replace the target with ``os.replace``: the previous
checkpoint stays readable until the new one is complete. :mod:`medzoo.zoo.checkpoint` reads them back.

Example:
    >>> import tempfile, os, torch
    >>> from medzoo.zoo.checkpoint import load_checkpoint
    >>> p = os.path.join(tempfile.mkdtemp(), "last.pt")
    >>> _ = save_checkpoint(p, {"model": {"w": torch.ones(2)}, "step": 3})
    >>> load_checkpoint(p)["step"]
    3
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_KEYS", "capture_rng", "restore_rng", "save_checkpoint"]

log = logging.getLogger(__name__)

#: The keys a full training checkpoint holds.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "step", "epoch", "best", "config",
                   "preprocessing", "versions")


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (the rename) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: ``<path>.tmp``, fsync, then ``os.replace``.

    The previous file at ``path`` is untouched until the new one is complete; a failed write removes the temp file
    and re-raises.

    Args:
        path: the checkpoint file (its folder is created).
        state: tensors, numbers, strings, lists and dicts only (it must load with ``weights_only=True``).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        buf = io.BytesIO()  # serialise first, so a full disk raises OSError naming the file, not a torch enforce
        torch.save(dict(state), buf)
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    log.debug("saved checkpoint %s", path)
    return path


# ------------------------------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """The states of Python's ``random``, numpy's global generator, torch's CPU (and CUDA) generators.

    Returns:
        A dict of tensors, ints and lists that loads with ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
