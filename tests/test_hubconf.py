"""hubconf.py: torch.hub.load(repo_dir, NAME, source="local") builds medzoo encoders and zoo models, offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from medzoo.encoders import ResNetEncoder, list_encoders
from medzoo.models import create_model
from medzoo.zoo.publish import export_model

REPO = str(Path(__file__).resolve().parents[1])
W = (8, 16, 32, 64)


def _entry_points() -> list[str]:
    """What torch.hub.list reports for a local repo: the public callables of hubconf.py."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", Path(REPO) / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dependencies == ["torch", "monai"]
    return sorted(f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_"))


def test_one_entry_point_per_encoder_plus_zoo():
    assert _entry_points() == sorted([*list_encoders(), "zoo"])


def test_hub_load_builds_the_encoder():
    enc = torch.hub.load(REPO, "resnet18", source="local", widths=W, in_channels=2, output_stride=16)
    assert isinstance(enc, ResNetEncoder)
    assert enc.architecture()["depth"] == 18
    assert enc.in_channels == 2
    assert enc.output_stride == 16
    assert enc(torch.zeros(1, 2, 16, 32, 32))[-1].shape == (1, 64, 1, 2, 2)


def test_hub_load_with_weights_and_zoo(tmp_path):
    torch.manual_seed(2)
    model = create_model({"encoder": {"name": "resnet10", "widths": list(W)},
                          "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}})
    exp = export_model(model.eval(), tmp_path / "exp", name="tiny.hub")
    enc = torch.hub.load(REPO, "resnet10", source="local", weights=str(exp), widths=W)
    assert enc.load_report.ok
    assert enc.load_report.ignored["heads.cls.fc.weight"] == "heads not requested (parts)"
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in enc.state_dict().items())
    again = torch.hub.load(REPO, "zoo", str(exp), source="local")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x)["cls"], model.eval()(x)["cls"])
