"""Load: 1,000 small inputs with bad ones mixed in, read through ``load_record`` and a ManifestDataset + DataLoader.

Every good input must give its own output (each image encodes its index, checked exactly), every bad one a
DatasetFormatError naming the file and the listing line it came from, and the process's resident memory must stay
flat (measured from /proc/self/statm after a warm-up). The 1,000-input runs are slow; each has a smoke twin on the
first 100 inputs (every kind of bad input included), without the memory check, which needs the long run.

``medzoo predict`` is not on main yet; when it lands the same corpus goes through it (see the report).
"""

from __future__ import annotations

import gc
import importlib
import os

import numpy as np
import pytest
import torch

from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import write_nifti, write_png
from medzoo.data.manifest import DatasetFormatError, Record
from medzoo.data.record_io import load_record
from medzoo.data.transforms import cxr_preset
from tests.helpers import build_model
from tests.robustness.tally import case

CATEGORY = "load"
N = 1000
SMOKE = 100  # the first 100 inputs hold six bad ones, one of each kind
BAD_KINDS = ["zero-byte", "truncated", "missing", "not-an-image", "nan-nifti", "wrong-suffix"]

#: Images scaled by their maximum value, nothing else: the load tests measure the loop, not resizing.
AS_READ = {"modality": ["CXR"], "axes": "HW", "rescale": "max_value"}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module",
                params=[pytest.param(SMOKE, id="smoke"), pytest.param(N, id="full", marks=pytest.mark.slow)])
def mixed(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], dict[int, str]]:
    """1,000 records (100 for the smoke runs): every 17th is bad (a rotating kind of bad), the others 24x24 PNGs
    filled with ``i % 251``."""
    d = tmp_path_factory.mktemp("load")
    records, bad = [], {}
    good_png = write_png(d / "template.png", np.zeros((24, 24), np.uint8)).read_bytes()
    for i in range(request.param):
        path = d / f"img_{i:04d}.png"
        if i % 17 == 5:
            kind = BAD_KINDS[(i // 17) % len(BAD_KINDS)]
            bad[i] = kind
            if kind == "zero-byte":
                path.write_bytes(b"")
            elif kind == "truncated":
                path.write_bytes(good_png[: len(good_png) // 2])
            elif kind == "not-an-image":
                path.write_bytes(b"Image Index,Finding Labels\n")
            elif kind == "nan-nifti":
                path = write_nifti(d / f"img_{i:04d}.nii.gz", np.full((4, 4, 4), np.nan, np.float32), np.eye(4))
            elif kind == "wrong-suffix":
                path = d / f"img_{i:04d}.tiff"
                path.write_bytes(good_png)
        else:
            write_png(path, np.full((24, 24), i % 251, np.uint8))
        records.append(Record(f"r{i}", f"p{i}", str(path), {"tb": i % 2}, {"source": ("list.csv", i + 2)}))
    return records, bad


def _check_bad(err: DatasetFormatError, rec: Record, i: int) -> None:
    assert err.path == rec.image, err
    assert f"list.csv:{i + 2}" in str(err), err
    assert rec.image in str(err), err


def test_load_record_over_1000_mixed_inputs(mixed: tuple[list[Record], dict[int, str]]) -> None:
    records, bad = mixed
    outputs, errors, rss = {}, {}, []
    label = f"load_record over {len(records)} inputs: each good one read exactly, each bad one reported"
    for i, rec in enumerate(records):
        with case(CATEGORY, label):
            try:
                sample = load_record(rec)
            except DatasetFormatError as err:
                assert i in bad, f"good input {i} failed: {err}"
                _check_bad(err, rec, i)
                errors[i] = str(err)
            else:
                assert i not in bad, f"bad input {i} ({bad.get(i)}) gave an output"
                assert sample["image"].shape == (1, 24, 24)
                assert np.all(sample["image"] == i % 251)
                outputs[i] = sample["meta"]["id"]
        if i % 100 == 99:
            gc.collect()
            rss.append(_rss_mib())
    assert len(outputs) + len(errors) == len(records)
    assert set(errors) == set(bad)
    if len(records) == N:
        with case(CATEGORY, f"load_record over {N} inputs: resident memory flat (< 8 MiB growth after 200)"):
            assert rss[-1] - rss[1] < 8.0, f"RSS grew from {rss[1]:.1f} to {rss[-1]:.1f} MiB: {rss}"


class _Reporting(torch.utils.data.Dataset):
    """Wraps a ManifestDataset so that a bad sample becomes a reported error instead of ending the epoch."""

    def __init__(self, ds: ManifestDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        try:
            return i, self.ds[i]["image"], None
        except DatasetFormatError as err:
            return i, None, err


def test_dataloader_epoch_over_1000_mixed_inputs(mixed: tuple[list[Record], dict[int, str]]) -> None:
    records, bad = mixed
    ds = _Reporting(ManifestDataset(records, transform=cxr_preset(False, size=16)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    seen, rss = set(), []
    for i, image, err in loader:
        with case(CATEGORY, f"DataLoader epoch over {len(records)} inputs (CXR preset): good -> tensor, bad -> error"):
            seen.add(i)
            if err is not None:
                assert i in bad
                _check_bad(err, records[i], i)
            else:
                assert i not in bad
                assert tuple(image.shape) == (1, 16, 16)
                np.testing.assert_allclose(image.numpy(), (i % 251) / 255.0, atol=1e-6)
        if i % 100 == 99:
            gc.collect()
            rss.append(_rss_mib())
    assert seen == set(range(len(records)))
    if len(records) == N:
        with case(CATEGORY, f"DataLoader epoch over {N} inputs: resident memory flat (< 8 MiB growth after 200)"):
            assert rss[-1] - rss[1] < 8.0, f"RSS grew from {rss[1]:.1f} to {rss[-1]:.1f} MiB: {rss}"


class _RssProbe:
    """Wraps a predictor; samples resident memory every 100 inputs."""

    def __init__(self, predictor) -> None:
        self.predictor, self.calls, self.rss = predictor, 0, []

    def predict_loaded(self, loaded):
        out = self.predictor.predict_loaded(loaded)
        self.calls += 1
        if self.calls % 100 == 0:
            gc.collect()
            self.rss.append(_rss_mib())
        return out


def _tiny_model():
    return build_model({"tb": {"type": "classification", "level": "image", "num_classes": 2}})


class _GcCounter:
    def __init__(self) -> None:
        self.calls = 0

    def collect(self, *args) -> int:
        self.calls += 1
        return 0


def test_predict_over_1000_mixed_inputs(mixed: tuple[list[Record], dict[int, str]], tmp_path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    predict = pytest.importorskip("medzoo.infer.predict", reason="medzoo predict is not on main yet")
    records, bad = mixed
    listing = tmp_path / "inputs.csv"
    listing.write_text("id,path\n" + "".join(f"r{i},{rec.image}\n" for i, rec in enumerate(records)))
    probe = _RssProbe(predict.Predictor(_tiny_model(), preprocessing=AS_READ))
    report = predict.predict_inputs(probe, [listing], tmp_path / "out", progress=False)
    good = {f"r{i}" for i in range(len(records)) if i not in bad}
    with case(CATEGORY, f"medzoo predict over {len(records)} inputs: each good one predicted, each bad one reported"):
        got = {r["id"] for r in report.records}
        assert got == good, (sorted(good - got)[:5], sorted(got - good)[:5])
        for i in bad:
            name = os.path.basename(records[i].image)
            assert any(name in where or name in msg for where, msg in report.errors), f"{name} ({bad[i]}) unreported"
        assert len(report.errors) == len(bad), report.errors[:3]
    if len(records) == N:
        with case(CATEGORY, f"medzoo predict over {N} inputs: resident memory flat (< 8 MiB growth after 200)"):
            assert probe.rss[-1] - probe.rss[1] < 8.0, f"RSS {probe.rss}"


def test_predict_does_not_collect_garbage_per_input(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    predict = pytest.importorskip("medzoo.infer.predict", reason="medzoo predict is not on main yet")
    counter = _GcCounter()
    monkeypatch.setattr(importlib.import_module("medzoo.infer.runner"), "gc", counter)
    paths = [str(write_png(tmp_path / f"{i}.png", np.full((16, 16), i, np.uint8))) for i in range(40)]
    report = predict.predict_inputs(predict.Predictor(_tiny_model(), preprocessing=AS_READ), paths, tmp_path / "out",
                                    progress=False)
    assert len(report.records) == 40
    assert counter.calls <= 2, f"gc.collect() ran {counter.calls} times for 40 inputs"
