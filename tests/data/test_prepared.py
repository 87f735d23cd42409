"""Prepared cache: cached samples equal uncached ones; atomic, resumable writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import medzoo.data.dataset as dataset_mod
from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import write_nifti, write_png
from medzoo.data.manifest import Manifest, Record
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.transforms import ct_preset, cxr_preset, series_preset


def _cxr_manifest(tmp_path, n=5, bits=8):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        dtype = np.uint8 if bits == 8 else np.uint16
        write_png(tmp_path / f"{i:08d}_000.png", rng.integers(0, 2**bits - 1, (24, 20)).astype(dtype))
        mask = np.zeros((24, 20), np.uint8)
        mask[4 + i: 18, 3:15] = 255
        write_png(tmp_path / f"m{i}.png", mask)
        labels = {"findings": np.array([i % 2, np.nan, 1.0]), "tb": i % 2 if i != 2 else float("nan")}
        recs.append(Record(f"{i:08d}_000.png", str(i), str(tmp_path / f"{i:08d}_000.png"), labels,
                           {"mask": str(tmp_path / f"m{i}.png"), "source": ("Data_Entry_2017_v2020.csv", i + 2)}))
    return Manifest("nih-cxr14", tmp_path, recs, {"findings": ["A", "B", "C"], "tb": ["tb"]})


def _assert_same(a: dict, b: dict, atol=1e-6):
    keys = {k for k in a if k != "meta"}
    assert keys == {k for k in b if k != "meta"}
    for k in keys:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype == torch.float32, k
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, equal_nan=True)


def test_cached_equals_uncached_cxr(tmp_path):
    m = _cxr_manifest(tmp_path, bits=16)
    t = cxr_preset(train=False, size=16)
    out = prepare(m, tmp_path / "cache", transform=t, part_size=2)
    cached, plain = PreparedDataset(out), ManifestDataset(m, transform=t)
    assert len(cached) == len(plain) == 5
    assert cached.label_names["findings"] == ["A", "B", "C"]
    for i in range(5):
        _assert_same(cached[i], plain[i])
    assert cached[0]["meta"]["id"] == "00000000_000.png"
    assert cached[0]["meta"]["series"] is False
    arr = np.load(out / json.loads((out / "index.json").read_text())["samples"][0]["image"], mmap_mode="r")
    assert isinstance(arr, np.memmap)
    assert arr.dtype == np.float32


def test_cached_equals_uncached_ct_and_series(tmp_path):
    rng = np.random.default_rng(1)
    recs = []
    for i in range(3):
        write_nifti(tmp_path / f"v{i}.nii.gz", rng.integers(-1100, 500, (10, 9, 6)).astype(np.int16),
                    np.diag([2.0, 2.0, 3.0, 1.0]))
        write_nifti(tmp_path / f"l{i}.nii.gz", rng.integers(0, 3, (10, 9, 6)).astype(np.uint8),
                    np.diag([2.0, 2.0, 3.0, 1.0]))
        recs.append(Record(f"v{i}", f"v{i}", str(tmp_path / f"v{i}.nii.gz"), {},
                           {"mask": str(tmp_path / f"l{i}.nii.gz")}))
    m = Manifest("msd", tmp_path, recs, {})
    t = ct_preset(train=False, spacing=(3.0, 3.0, 3.0), patch=(8, 8, 8))
    out = prepare(m, tmp_path / "ct", transform=t)
    for i in range(3):
        _assert_same(PreparedDataset(out)[i], ManifestDataset(m, transform=t)[i])
    series = []
    for i, n in enumerate([2, 4]):
        paths = []
        for k in range(n):
            write_png(tmp_path / f"NCP_{i}_1_{k:04d}.png", rng.integers(0, 255, (20 + k, 22)).astype(np.uint8))
            paths.append(str(tmp_path / f"NCP_{i}_1_{k:04d}.png"))
        series.append(Record(f"NCP_{i}_1", f"NCP_{i}", paths, {"covid": 2}, {"bbox": (1, 1, 20, 19)}))
    ms = Manifest("covidx-ct", tmp_path, series, {"covid": ["Normal", "Pneumonia", "COVID-19"]})
    st = series_preset(train=False)
    out = prepare(ms, tmp_path / "series", transform=st, slice_size=(8, 8))
    for i in range(2):
        a, b = PreparedDataset(out)[i], ManifestDataset(ms, transform=st, slice_size=(8, 8))[i]
        _assert_same(a, b)
        assert a["meta"]["series"] is True
        assert a["image"].shape[0] == [2, 4][i]


def test_uint8_cache_and_augmentation_on_top(tmp_path):
    m = _cxr_manifest(tmp_path)
    t = cxr_preset(train=False, size=16)
    out = prepare(m, tmp_path / "u8", transform=t, dtype="uint8")
    for i in range(3):
        _assert_same(PreparedDataset(out)[i], ManifestDataset(m, transform=t)[i], atol=0.5 / 255 + 1e-6)
    aug = cxr_preset(train=True, size=16)
    ds = PreparedDataset(out, transform=aug, seed=3)
    ds.set_epoch(2)
    a = ds[1]["image"]
    torch.testing.assert_close(ds[0]["image"], ds[0]["image"])
    torch.testing.assert_close(ds[1]["image"], a)


def test_prepare_crash_then_rerun_skips_finished_parts(tmp_path, monkeypatch):
    m = _cxr_manifest(tmp_path)
    t = cxr_preset(train=False, size=12)
    reference = prepare(m, tmp_path / "ref", transform=t, part_size=2)
    real_load = dataset_mod.load_record
    calls: list[str] = []

    def flaky(record, **kw):
        calls.append(record.id)
        if record.id.startswith("00000003"):
            raise RuntimeError("simulated crash")
        return real_load(record, **kw)

    monkeypatch.setattr(dataset_mod, "load_record", flaky)
    out = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(m, out, transform=t, part_size=2)
    assert not out.exists()  # nothing half-written is visible as a cache
    staging = tmp_path / ".cache.partial"
    assert (staging / "parts" / "part-00000" / "part.json").exists()
    assert not (staging / "parts" / "part-00001").exists()

    def counting(record, **kw):
        calls.append(record.id)
        return real_load(record, **kw)

    monkeypatch.setattr(dataset_mod, "load_record", counting)
    calls.clear()
    prepare(m, out, transform=t, part_size=2)
    assert sorted(calls) == [f"{i:08d}_000.png" for i in (2, 3, 4)]  # part 0 (records 0, 1) was reused
    assert not staging.exists()
    calls.clear()
    prepare(m, out, transform=t, part_size=2)
    assert calls == []  # a finished cache is returned at once
    ref_index, new_index = (json.loads((d / "index.json").read_text()) for d in (reference, out))
    assert ref_index["samples"] == new_index["samples"]
    for i in range(5):
        _assert_same(PreparedDataset(out)[i], PreparedDataset(reference)[i], atol=0)


def test_prepare_refuses_to_clobber_other_cache(tmp_path):
    m = _cxr_manifest(tmp_path, n=2)
    out = prepare(m, tmp_path / "c", transform=cxr_preset(train=False, size=8))
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(m, out, transform=cxr_preset(train=False, size=10))
    prepare(m, out, transform=cxr_preset(train=False, size=10), overwrite=True)
    assert PreparedDataset(out)[0]["image"].shape == (1, 10, 10)
    with pytest.raises(FileNotFoundError, match="index.json"):
        PreparedDataset(tmp_path / "nothing")


def test_prepare_cli_uses_open_dataset(tmp_path, monkeypatch, capsys):
    import argparse

    import medzoo.data
    from medzoo.cli import prepare_cmd

    m = _cxr_manifest(tmp_path, n=3)
    seen = {}

    def fake_open_dataset(kind, root, **options):
        seen.update(kind=kind, root=root, **options)
        return m

    monkeypatch.setattr(medzoo.data, "open_dataset", fake_open_dataset, raising=False)
    parser = argparse.ArgumentParser()
    prepare_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "nih-cxr14", str(tmp_path), "--out", str(tmp_path / "cache"), "--size", "16",
                              "--split", "test", "--option", "view=PA"])
    assert args.func(args) == 0
    assert seen == {"kind": "nih-cxr14", "root": str(tmp_path), "split": "test", "view": "PA"}
    assert "nih-cxr14" in capsys.readouterr().out
    ds = PreparedDataset(tmp_path / "cache")
    _assert_same(ds[1], ManifestDataset(m, transform=cxr_preset(train=False, size=16))[1])
