"""Shared pieces of the fault tests (``test_faults.py``: SIGKILL and corrupt leftovers; ``test_faults_enospc.py``:
a patched full disk): the tally category, a 128 KiB download payload, a folder snapshot, a small export folder and a
1M-parameter checkpoint state."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from medzoo.zoo.export import write_export_dir

CATEGORY = "faults"
DATA = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative path -> bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def small_export(out: Path, overwrite: bool = False) -> Path:
    """An export folder of two tensors (4096 + 3 floats), unvalidated."""
    return write_export_dir(out, state_dict={"w": torch.arange(4096.0), "b": torch.ones(3)}, config={"n": 1},
                            metadata={"name": "x", "parts": ["all"]}, validate=False, overwrite=overwrite)


def ckpt_state(step: int) -> dict:
    """A training-checkpoint state whose 1M weights are drawn from ``step`` (so a torn or stale one is told apart)."""
    g = torch.Generator().manual_seed(step)
    return {"model": {"w": torch.randn(1_000_000, generator=g)}, "step": step, "epoch": 0, "config": "model: {}"}
