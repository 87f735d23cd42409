"""A hash recorded by ``download --allow-unpinned`` pins the entry: load and resolve need no flag afterwards, and the
recorded hash still rejects a changed file."""

from __future__ import annotations

import pytest
import torch

from medzoo.cli.main import main
from medzoo.models import create_model
from medzoo.zoo.catalog import add_entry
from medzoo.zoo.download import IntegrityError, UnpinnedError, read_pins
from medzoo.zoo.publish import export_model, publish
from medzoo.zoo.resolver import load, resolve
from medzoo.zoo.spec import WeightsSpec
from tests.helpers import TINY_WIDTHS

CFG = {"encoder": {"name": "resnet10", "widths": TINY_WIDTHS},
       "tasks": {"cxr": {"type": "classification", "level": "image", "labels": ["no", "yes"]}}}


@pytest.fixture()
def unpinned(tmp_path, medzoo_home):
    """An export served from a file:// folder and a catalog entry for it that pins no sha256."""
    torch.manual_seed(0)
    model = create_model(CFG).eval()
    exp = export_model(model, tmp_path / "served", name="tiny.pin")
    entry = publish(exp, "tiny.pin", exp.as_uri() + "/", catalog=tmp_path / "pinned.yaml").to_dict()
    for f in entry["files"]:
        f["sha256"], f["size"] = None, None
    catalog = add_entry(tmp_path / "unpinned.yaml", WeightsSpec.from_dict(entry))
    return model, exp, catalog


def test_load_honours_the_pin_download_recorded(unpinned):
    model, exp, catalog = unpinned
    with pytest.raises(UnpinnedError):
        load("tiny.pin", catalog=str(catalog))
    assert main(["download", "tiny.pin", "--allow-unpinned", "--catalog", str(catalog)]) == 0
    assert (exp / "model.safetensors").as_uri() in read_pins()
    loaded, _ = load("tiny.pin", catalog=str(catalog))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert resolve("tiny.pin", catalog=str(catalog)).spec.name == "tiny.pin"


def test_the_recorded_pin_still_rejects_a_changed_file(unpinned, medzoo_home):
    _, exp, catalog = unpinned
    assert main(["download", "tiny.pin", "--allow-unpinned", "--catalog", str(catalog)]) == 0
    for cached in medzoo_home.rglob("model.safetensors"):
        cached.unlink()
    data = bytearray((exp / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (exp / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load("tiny.pin", catalog=str(catalog))
