"""Writing checkpoints: atomic writes keep the previous file, what is written reads back, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml

import medzoo.train.checkpoint as ckpt_mod
from medzoo.train.checkpoint import capture_rng, restore_rng, save_checkpoint
from medzoo.zoo.checkpoint import load_checkpoint


def _state(value: float, model: dict | None = None) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value), "config": yaml.safe_dump({"model": model})}


def test_round_trip(tmp_path):
    p = save_checkpoint(tmp_path / "sub" / "last.pt", _state(2.0))
    out = load_checkpoint(p)
    assert out["step"] == 2
    assert torch.equal(out["model"]["w"], torch.full((3,), 2.0))
    assert not (tmp_path / "sub" / "last.pt.tmp").exists()


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    save_checkpoint(p, _state(1.0))

    def broken_save(obj, f):  # writes half a file, then the disk "fills up"
        f.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(p, _state(5.0))
    assert load_checkpoint(p)["step"] == 1  # the previous good checkpoint is intact
    assert not (tmp_path / "last.pt.tmp").exists()


def test_rng_round_trip_survives_weights_only(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    state = capture_rng()
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    save_checkpoint(tmp_path / "r.pt", {"model": {}, "rng": state})
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert got == expected
