"""ManifestDataset samples and collate: series padding, pad_mask, NaN for missing labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from medzoo.data.collate import collate
from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import write_png
from medzoo.data.manifest import Manifest, Record
from medzoo.data.transforms import series_preset


def test_collate_pads_series_and_marks_padding():
    a = {"image": torch.full((2, 1, 4, 4), 1.0), "label.covid": torch.tensor(2.0), "meta": {"series": True}}
    b = {"image": torch.full((4, 1, 4, 4), 2.0), "label.covid": torch.tensor(0.0), "meta": {"series": True}}
    c = {"image": torch.full((1, 1, 4, 4), 3.0), "meta": {"series": True}}
    batch = collate([a, b, c])
    assert batch["image"].shape == (3, 4, 1, 4, 4)
    assert batch["pad_mask"].tolist() == [[False, False, True, True], [False] * 4, [False, True, True, True]]
    assert (batch["image"][0, 2:] == 0).all()
    assert (batch["image"][0, :2] == 1).all()
    assert (batch["image"][2, 0] == 3).all()
    assert (batch["image"][2, 1:] == 0).all()
    lab = batch["label.covid"]
    assert lab.dtype == torch.float32
    assert lab[:2].tolist() == [2.0, 0.0]
    assert math.isnan(lab[2].item())
    assert [m["series"] for m in batch["meta"]] == [True, True, True]


def test_collate_vector_labels_nan_rows_and_errors():
    a = {"image": torch.zeros(1, 4, 4), "label.findings": torch.tensor([1.0, float("nan"), 0.0]), "meta": {}}
    b = {"image": torch.zeros(1, 4, 4), "label.tb": torch.tensor(1.0), "meta": {}}
    batch = collate([a, b])
    assert "pad_mask" not in batch
    assert batch["image"].shape == (2, 1, 4, 4)
    f = batch["label.findings"]
    assert f.shape == (2, 3)
    assert f[0, 0] == 1
    assert f[0, 2] == 0
    assert torch.isnan(f[0, 1])
    assert torch.isnan(f[1]).all()
    assert torch.isnan(batch["label.tb"][0])
    assert batch["label.tb"][1] == 1
    c = {"image": torch.zeros(1, 4, 4), "label.findings": torch.tensor(float("nan")), "meta": {}}
    assert torch.isnan(collate([c, a])["label.findings"][0]).all()
    assert collate([c, a])["label.findings"].shape == (2, 3)
    with pytest.raises(ValueError, match="different shapes"):
        collate([a, {"image": torch.zeros(1, 5, 4), "meta": {}}])
    with pytest.raises(ValueError, match="mixes"):
        collate([a, {"image": torch.zeros(2, 1, 4, 4), "meta": {"series": True}}])


def test_manifest_dataset_series_through_dataloader(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for pid, n in [("a", 3), ("b", 5)]:
        paths = []
        for i in range(n):
            write_png(tmp_path / f"{pid}-{i:04d}.png", rng.integers(0, 255, (20, 18)).astype(np.uint8))
            paths.append(str(tmp_path / f"{pid}-{i:04d}.png"))
        records.append(Record(pid, pid, paths, {"covid": 1 if pid == "a" else float("nan")},
                              {"bboxes": [(1, 2, 17, 19)] * n, "source": ("split.txt", 1)}))
    m = Manifest("covidx-ct", tmp_path, records, {"covid": ["Normal", "Pneumonia", "COVID-19"]})
    ds = ManifestDataset(m, transform=series_preset(train=False), slice_size=(8, 8))
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert batch["image"].shape == (2, 5, 1, 8, 8)
    assert batch["image"].dtype == torch.float32
    assert batch["pad_mask"].sum(1).tolist() == [2, 0]
    assert batch["label.covid"][0] == 1
    assert torch.isnan(batch["label.covid"][1])
    assert batch["meta"][0]["id"] == "a"
    assert batch["meta"][0]["source"] == ("split.txt", 1)
    assert 0 <= batch["image"].min()
    assert batch["image"].max() <= 1


def test_manifest_dataset_mask_and_tasks(tmp_path):
    write_png(tmp_path / "i.png", np.full((8, 8), 128, np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5] = 255
    write_png(tmp_path / "m.png", mask)
    rec = Record("i", "p", str(tmp_path / "i.png"), {"findings": np.array([1.0, np.nan])},
                 {"mask": str(tmp_path / "m.png")})
    m = Manifest("x", tmp_path, [rec], {"findings": ["A", "B"], "tb": ["tb"]})
    s = ManifestDataset(m)[0]
    assert set(s) == {"image", "label.findings", "label.tb", "label.seg", "meta"}
    assert s["label.seg"].shape == (1, 8, 8)
    assert s["label.seg"].sum() == 24
    assert torch.isnan(s["label.tb"])
    assert s["label.findings"][0] == 1
    assert torch.isnan(s["label.findings"][1])
    assert ManifestDataset(m, tasks=["findings"], mask_task="lung")[0].keys() >= {"label.lung", "label.findings"}


@settings(deadline=None, derandomize=True, max_examples=40)
@given(st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5))
def test_collate_padding_keeps_every_slice(lengths):
    samples = [{"image": torch.randn(n, 1, 3, 2), "label.x": torch.tensor(float(i)), "meta": {"series": True}}
               for i, n in enumerate(lengths)]
    batch = collate(samples)
    assert batch["image"].shape == (len(lengths), max(lengths), 1, 3, 2)
    for i, (s, n) in enumerate(zip(samples, lengths)):
        torch.testing.assert_close(batch["image"][i, :n], s["image"])
        assert (batch["image"][i, n:] == 0).all()
        assert batch["pad_mask"][i].tolist() == [False] * n + [True] * (max(lengths) - n)
    assert batch["label.x"].tolist() == [float(i) for i in range(len(lengths))]
