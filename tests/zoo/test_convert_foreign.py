"""`medzoo convert imagenet|torchxrayvision` export folders, and catalog entries of both formats loaded end to end."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import medzoo.zoo
from medzoo.cli.main import main
from medzoo.zoo.txv import TXV_WEIGHTS, txv_outputs
from tests.zoo import txv_standin
from tests.zoo.resnet2d_reference import randomised

CATALOG = Path(__file__).resolve().parents[2] / "weights" / "catalog.yaml"
UNPINNED = CATALOG.with_name("catalog-unpinned.yaml")
pytestmark = pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code:UserWarning")


def _entry(catalog: Path, name: str) -> dict:
    return copy.deepcopy(next(e for e in yaml.safe_load(catalog.read_text())["entries"] if e["name"] == name))


def _user_catalog(tmp_path: Path, monkeypatch, entry: dict, path: Path, *, pin: str = "full") -> None:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    f = entry["files"][0]
    f.update(url=path.as_uri(), mirrors=[], size=len(data) if pin == "full" else None,
             sha256=sha if pin == "full" else None)
    if pin == "prefix":
        f["sha256_prefix"] = sha[:8]
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"schema": 1, "entries": [entry]}, sort_keys=False))
    monkeypatch.setenv("MEDZOO_CATALOG", str(cat))


def test_convert_imagenet_cli_writes_an_export_that_loads_exactly(tmp_path, capsys):
    ref = randomised(18, seed=2, widths=(8, 16, 32, 64))
    path = tmp_path / "resnet18-12345678.pth"
    torch.save(ref.state_dict(), path)
    out = tmp_path / "export"
    assert main(["convert", "imagenet", str(path), "--out", str(out), "--in-channels", "1"]) == 0
    assert "meanstd" in capsys.readouterr().out
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["preprocessing"]["mean"] == [0.449]
    assert meta["architecture"]["shortcut"] == "B"
    assert "inflation centre" in meta["notes"]
    model, pre = medzoo.zoo.load(out)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], ref(x.repeat(1, 3, 1, 1))[-1], rtol=1e-5, atol=1e-5)
    assert pre["image"].normalisation == "meanstd"


def test_convert_torchxrayvision_cli_writes_an_export_that_loads_exactly(tmp_path):
    names, ops = TXV_WEIGHTS["densenet121-res224-chex"]["labels"], TXV_WEIGHTS["densenet121-res224-chex"]["op_threshs"]
    with txv_standin.installed():
        ref = txv_standin.randomise(txv_standin.DenseNet(pathologies=names, op_threshs=torch.tensor(ops)), seed=4)
        torch.save(ref, tmp_path / "chex.pt")
    out = tmp_path / "export"
    assert main(["convert", "torchxrayvision", str(tmp_path / "chex.pt"), "--out", str(out)]) == 0
    model, pre = medzoo.zoo.load(out)
    kept = [i for i, (n, t) in enumerate(zip(names, ops)) if n and not math.isnan(t)]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(txv_outputs(model, x), ref(x)[:, kept], rtol=1e-5, atol=1e-6)
    assert (pre["image"].normalisation, pre["image"].value_range) == ("linear", (-1024.0, 1024.0))


def test_shipped_txv_entry_loads_a_release_style_file(tmp_path, monkeypatch):
    """A full-size DenseNet-121 pickled like TXV's releases (no names, no thresholds in the file), loaded by the
    shipped catalog entry's name: labels and op_threshs come from the entry, outputs equal TXV's."""
    with txv_standin.installed():
        ref = txv_standin.randomise(txv_standin.DenseNet(growth_rate=32, block_config=(6, 12, 24, 16),
                                                         num_init_features=64, bn_size=4), seed=9, weight_std=None)
        torch.save(ref, tmp_path / "release.pt")
    _user_catalog(tmp_path, monkeypatch, _entry(CATALOG, "densenet121-res224-all"), tmp_path / "release.pt")
    model, pre = medzoo.zoo.load("densenet121-res224-all")
    entry = TXV_WEIGHTS["densenet121-res224-all"]
    ref.op_threshs = torch.tensor(entry["op_threshs"])  # what TXV sets from model_urls after loading
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(txv_outputs(model, x), ref(x), rtol=1e-5, atol=1e-6)
    assert list(model.heads["findings"].label_names) == list(entry["labels"])
    assert pre["image"].input_size == (224, 224)
    assert model.load_report.ok


def test_prefix_pinned_imagenet_entry_downloads_records_and_loads(tmp_path, monkeypatch):
    ref = randomised(18, seed=6, widths=(8, 16, 32, 64))
    path = tmp_path / "resnet18-local.pth"
    torch.save(ref.state_dict(), path)
    entry = _entry(UNPINNED, "resnet18.imagenet1k-v1")
    entry["architecture"]["widths"] = [8, 16, 32, 64]
    _user_catalog(tmp_path, monkeypatch, entry, path, pin="prefix")
    model, _ = medzoo.zoo.load("resnet18.imagenet1k-v1")  # no allow_unpinned: the prefix is checked
    from medzoo.zoo.download import read_pins

    assert read_pins()[path.as_uri()]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], ref(x)[-1], rtol=1e-5, atol=1e-5)
    assert model.load_report.inflation == "centre"
