"""medzoo.zoo.load / load_pretrained: spec-driven building, reports, adaptation and refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from medzoo.config import to_dict
from medzoo.models import create_model
from medzoo.zoo.catalog import add_entry
from medzoo.zoo.export import sha256_file
from medzoo.zoo.loading import load_pretrained, spec_model_config
from medzoo.zoo.publish import export_model
from medzoo.zoo.resolver import load, resolve
from medzoo.zoo.spec import WeightsSpec
from medzoo.zoo.state import UnsafeWeightsError
from tests.helpers import randomize_bn

W = [8, 16, 32, 64]
SERIES_CFG = {
    "encoder": {"name": "resnet10", "widths": W},
    "tasks": {"covid": {"type": "classification", "level": "series", "labels": ["normal", "pneumonia", "covid"]},
              "severity": {"type": "regression", "level": "series", "outputs": {"geographic": [0, 8], "raw": None}},
              "findings": {"type": "multilabel", "level": "series", "labels": ["a", "b"],
                           "thresholds": {"a": 0.3, "b": 0.7}}},
    "aggregator": {"name": "attention"},
}


def _trained(cfg: dict, seed: int = 1) -> torch.nn.Module:
    """A model whose BN statistics are not the defaults (so a forgotten buffer shows)."""
    torch.manual_seed(seed)
    return randomize_bn(create_model(cfg), seed)


@pytest.fixture(scope="module")
def series_export(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """(model, full export dir, encoder-only export dir)."""
    root = tmp_path_factory.mktemp("exports")
    model = _trained(SERIES_CFG)
    pre = {"modality": ["CT"], "normalisation": "window", "intensity_window": [-1000, 400], "input_size": [32, 32]}
    full = export_model(model, root / "full", name="tiny.series", preprocessing=pre, license="MIT")
    enc = export_model(model, root / "enc", name="tiny.encoder", parts="encoder")
    return model, full, enc


def _series_input(b: int = 2, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(b, n, 1, 32, 32)
    pad = torch.zeros(b, n, dtype=torch.bool)
    pad[-1, -1] = True
    return x, pad


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_export_dir_gives_the_exact_model(series_export):
    model, full, _ = series_export
    loaded, pre = load(full)
    _assert_same(model, loaded)
    assert loaded.load_report.ok
    assert not loaded.load_report.adapted
    assert not loaded.load_report.ignored
    assert pre["image"].intensity_window == (-1000.0, 400.0)
    assert pre["image"].modality == ("CT",)
    # non-persistent head state (thresholds, ranges) comes from the spec, not the weights
    torch.testing.assert_close(loaded.heads["findings"].thresholds, torch.tensor([0.3, 0.7]))
    assert loaded.heads["severity"].bounded.tolist() == [True, False]
    x, pad = _series_input()
    with torch.no_grad():
        want, got = model(x, pad_mask=pad), loaded(x, pad_mask=pad)
    for t in want:
        assert torch.equal(want[t], got[t]), t
    assert model.predict(x, pad)["findings"]["pred"].tolist() == loaded.predict(x, pad)["findings"]["pred"].tolist()


def test_create_model_on_the_export_dir_is_exact(series_export):
    model, full, _ = series_export
    _assert_same(model, create_model(full))


def test_spec_alone_builds_the_same_heads(series_export):
    """Without config.yaml, the spec's tasks give the head sizes, labels, thresholds and ranges."""
    _, full, _ = series_export
    spec = WeightsSpec.from_dict(json.loads((full / "metadata.json").read_text()))
    cfg = spec_model_config(spec)
    cfg["aggregator"] = {"name": "attention"}
    built = create_model(cfg)
    assert {t: h.label_names for t, h in built.heads.items()} == {
        "covid": ("normal", "pneumonia", "covid"), "severity": ("geographic", "raw"), "findings": ("a", "b")}
    assert built.heads["severity"].bounded.tolist() == [True, False]
    torch.testing.assert_close(built.heads["findings"].thresholds, torch.tensor([0.3, 0.7]))


def test_load_pretrained_encoder_only_report(series_export):
    model, _, enc = series_export
    target = create_model({"encoder": {"name": "resnet10", "widths": W},
                           "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["no", "yes"]}}})
    head_before = target.heads["tb"].fc.weight.clone()
    report = load_pretrained(target, enc)
    enc_keys = [f"encoder.{k}" for k in model.encoder.state_dict()]
    assert sorted(report.loaded) == sorted(enc_keys)
    assert sorted(report.missing) == ["heads.tb.fc.bias", "heads.tb.fc.weight"]
    assert not report.unexpected
    assert not report.ignored
    assert not report.adapted
    assert target.load_report is report
    _assert_same(model.encoder, target.encoder)
    assert torch.equal(target.heads["tb"].fc.weight, head_before)


def test_load_pretrained_drops_mismatched_heads_by_name(series_export):
    model, full, _ = series_export
    target = create_model({"encoder": {"name": "resnet10", "widths": W}, "aggregator": {"name": "attention"},
                           "tasks": {"covid": {"type": "classification", "level": "series",
                                               "labels": ["normal", "covid"]},
                                     "findings": {"type": "multilabel", "level": "series", "labels": ["a", "b"]}}})
    covid_before = target.heads["covid"].fc.weight.clone()
    report = load_pretrained(target, full, parts="all")
    assert report.ignored["heads.covid.fc.weight"].startswith("labels differ")
    assert report.ignored["heads.severity.fc.weight"] == "the model has no head 'severity'"
    assert "heads.findings.fc.weight" in report.loaded
    assert "aggregator.attention_v.weight" in report.loaded
    assert {"heads.covid.fc.weight", "heads.covid.fc.bias"} <= set(report.missing)
    assert torch.equal(target.heads["covid"].fc.weight, covid_before)
    assert torch.equal(target.heads["findings"].fc.weight, model.heads["findings"].fc.weight)
    assert "heads.covid" in str(report) or "heads.*" in str(report)


def test_load_pretrained_adapts_in_channels_and_reports_geometry(series_export):
    model, _, enc = series_export
    target = create_model({"encoder": {"name": "resnet10", "widths": W, "in_channels": 3, "output_stride": 16},
                           "tasks": {}}).eval()
    report = load_pretrained(target, enc)
    assert report.adapted["encoder.conv1.weight"] == "input channels 1 -> 3"
    assert "output_stride 32 (trained) -> 16" in report.adapted["<geometry>"]
    # a 3-channel input whose channels are equal gives what the 1-channel original gives on one channel
    source = create_model({"encoder": {"name": "resnet10", "widths": W, "output_stride": 16}, "tasks": {}}).eval()
    source.encoder.load_state_dict(model.encoder.state_dict())
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target.encoder(x.repeat(1, 3, 1, 1, 1))[-1], source.encoder(x)[-1])


@pytest.mark.parametrize("encoder, widths", [("resnet18", W), ("resnet10", [8, 16, 32, 32])])
def test_architecture_mismatch_is_an_error(series_export, encoder, widths):
    _, _, enc = series_export
    target = create_model({"encoder": {"name": encoder, "widths": widths}, "tasks": {}})
    with pytest.raises(ValueError, match="architecture mismatch"):
        load_pretrained(target, enc)


def test_requests_that_contradict_the_spec_are_errors(series_export):
    _, full, _ = series_export
    with pytest.raises(ValueError, match=r"tasks.covid.num_classes: .* 3 outputs"):
        load(full, tasks={"covid": {"num_classes": 5}})
    with pytest.raises(ValueError, match="num_classes needs exactly one task"):
        load(full, num_classes=3)
    with pytest.raises(ValueError, match=r"tasks.covid.labels"):
        load(full, tasks={"covid": {"labels": ["x", "y", "z"]}})
    with pytest.raises(ValueError, match="widths=.* contradicts"):
        load(full, widths=[8, 16, 32, 32])
    with pytest.raises(TypeError, match="unexpected argument"):
        load(full, colour="blue")
    model, _ = load(full, tasks={"covid": {"num_classes": 3}})  # agreeing with the spec is fine
    assert model.tasks == ["covid"]
    single, _ = load(full, tasks=["covid"], num_classes=3)
    assert single.heads["covid"].num_outputs == 3


def test_load_adapts_in_channels_and_adds_new_heads(series_export):
    _, full, _ = series_export
    model, _ = load(full, parts=["encoder"], in_channels=2, output_stride=8,
                    tasks={"tb": {"type": "classification", "level": "image", "labels": ["no", "yes"]}})
    assert model.encoder.in_channels == 2
    assert model.encoder.output_stride == 8
    assert model.tasks == ["tb"]
    assert "encoder.conv1.weight" in model.load_report.adapted
    assert "<geometry>" in model.load_report.adapted
    assert model.load_report.ignored["heads.covid.fc.weight"] == "heads not requested (parts)"
    assert sorted(model.load_report.missing) == ["heads.tb.fc.bias", "heads.tb.fc.weight"]


def test_major_version_difference_warns(series_export, tmp_path):
    _, full, _ = series_export
    copy = shutil.copytree(full, tmp_path / "old")
    meta = json.loads((copy / "metadata.json").read_text())
    meta["versions"]["torch"] = "1.13.1"
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"made with torch 1.13.1, running torch \S+ \(major version differs\)"):
        load(copy)


def test_tampered_export_is_refused(series_export, tmp_path):
    _, full, _ = series_export
    copy = shutil.copytree(full, tmp_path / "bad")
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 differs"):
        load(copy)


class _Payload:
    """Unpickling this would create ``path`` (it must never happen)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_pickle_payload_is_refused_on_the_zoo_load_path(tmp_path, medzoo_home):
    marker = tmp_path / "payload-ran"
    bad = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(8, 1, 7, 7, 7), "evil": _Payload(str(marker))}, bad)
    spec = WeightsSpec.from_dict({
        "name": "evil.pickle", "version": "1", "architecture": {"encoder": "resnet10", "widths": W},
        "parts": ["encoder"], "license": "MIT", "source": "test", "citation": "none",
        "files": [{"url": bad.as_uri(), "sha256": sha256_file(bad), "size": bad.stat().st_size,
                   "format": "torch-state-dict", "part": "encoder"}]})
    catalog = add_entry(tmp_path / "catalog.yaml", spec)
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        load("evil.pickle", catalog=catalog)
    model = create_model({"encoder": {"name": "resnet10", "widths": W}, "tasks": {}})
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(model, "evil.pickle", catalog=catalog)
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(model, bad)
    assert not marker.exists()


def test_medicalnet_format_entry_loads_through_the_converter(tmp_path, medzoo_home):
    source = create_model({"encoder": {"name": "resnet10", "widths": W, "output_stride": 8}, "tasks": {}}).encoder
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    spec = WeightsSpec.from_dict({
        "name": "tiny.medicalnet", "version": "1",
        "architecture": {"encoder": "resnet10", "widths": W, "output_stride": 8, "shortcut": "B"},
        "parts": ["encoder"], "license": "MIT", "source": "test", "citation": "none",
        "files": [{"url": str(path), "sha256": sha256_file(path), "size": path.stat().st_size,
                   "format": "medicalnet-pth", "part": "encoder"}]})
    catalog = add_entry(tmp_path / "catalog.yaml", spec)
    model, _ = load("tiny.medicalnet", catalog=catalog)
    _assert_same(source, model.encoder)
    assert model.encoder.output_stride == 8
    assert model.load_report.ok
    target = create_model({"encoder": {"name": "resnet10", "widths": W, "in_channels": 2}, "tasks": {}})
    report = load_pretrained(target, "tiny.medicalnet", catalog=catalog)
    assert "encoder.conv1.weight" in report.adapted
    assert "<geometry>" in report.adapted


def test_resolve_makes_every_kind_of_reference_into_the_same_model(series_export, tmp_path):
    model, full, _ = series_export
    ckpt = tmp_path / "last.pt"
    run_config = {"model": to_dict(model.config), "train": {"max_steps": 2}}
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {},
                "rng": {"torch": torch.get_rng_state()}, "step": 2, "epoch": 0, "best": 0.5,
                "config": yaml.safe_dump(run_config), "versions": {"torch": str(torch.__version__)}}, ckpt)
    for ref in (str(ckpt), f"ckpt:{ckpt}", str(full)):
        _assert_same(model, resolve(ref).model)
    enc = create_model({"encoder": {"name": "resnet10", "widths": W, "output_stride": 8}, "tasks": {}}).encoder
    pth = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, pth)
    _assert_same(enc, resolve(f"medicalnet:{pth}").model.encoder)


def test_medzoo_zoo_load_is_the_function_after_every_zoo_module_is_imported(series_export):
    import importlib
    import pkgutil

    import medzoo.zoo

    for info in pkgutil.iter_modules(medzoo.zoo.__path__):
        importlib.import_module(f"medzoo.zoo.{info.name}")  # binds each submodule's name on the package
    model, full, _ = series_export
    loaded, pre = medzoo.zoo.load(full)
    _assert_same(model, loaded)
    assert pre["image"].modality == ("CT",)  # 2-D slices: an image contract, which series inputs use
