"""Reading checkpoints: corrupt/truncated files fail clearly, pickled code is refused, the model is rebuilt."""

from __future__ import annotations

import pytest
import torch
import yaml

from medzoo.models import create_model
from medzoo.train.checkpoint import save_checkpoint
from medzoo.zoo.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_weights, model_from_checkpoint

MODEL = {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
         "tasks": {"tb": {"type": "classification", "level": "image", "num_classes": 2}}}


def _state(value: float, model: dict | None = None) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value), "config": yaml.safe_dump({"model": model})}


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    p = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt.*truncated or corrupt"):
        load_checkpoint(p)
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"last\.pt"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="'model' state dict"):
        load_checkpoint(tmp_path / "plain.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)


def test_model_from_checkpoint_and_partial_init(tmp_path):
    model = create_model(MODEL)
    for prm in model.parameters():
        prm.data.normal_()
    p = save_checkpoint(tmp_path / "best.pt", {"model": model.state_dict(), "config": yaml.safe_dump({"model": MODEL})})
    rebuilt, cfg = model_from_checkpoint(p)
    assert cfg["model"] == MODEL
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k

    fresh = create_model(MODEL)
    head_before = fresh.heads["tb"].fc.weight.clone()
    report = load_checkpoint_weights(fresh, p, parts=["encoder"])
    assert torch.equal(fresh.encoder.conv1.weight, model.encoder.conv1.weight)
    assert torch.equal(fresh.heads["tb"].fc.weight, head_before)
    assert "encoder.conv1.weight" in report.loaded
    assert "heads.tb.fc.weight" in report.ignored

    bad = dict(MODEL, tasks={"tb": {"type": "classification", "level": "image", "num_classes": 5}})
    p2 = save_checkpoint(tmp_path / "bad.pt", {"model": model.state_dict(), "config": yaml.safe_dump({"model": bad})})
    with pytest.raises(CheckpointError, match=r"bad\.pt \(its stored config\): .*shapes differ from the weights'"):
        model_from_checkpoint(p2)
