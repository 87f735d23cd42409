"""The evaluation collectors against independent computations: MONAI's DiceMetric, a rank-based AUROC in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from medzoo.heads import ClassificationHead, MultilabelHead
from medzoo.heads.segmentation import SegmentationHead
from medzoo.train.evaluate import _Collector


def _rank_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_dense_collector_matches_monai_dice():
    g = torch.Generator().manual_seed(0)
    head = SegmentationHead((8, 8, 16, 32, 64), num_classes=3, spatial_dims=2)
    col = _Collector(head, "dense")
    logits = torch.randn(4, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (4, 1, 8, 8), generator=g).float()
    col.add(logits[:2], target[:2])
    col.add(logits[2:], target[2:])
    res = col.result()
    pred = torch.nn.functional.one_hot(logits.argmax(1), 3).movedim(-1, 1)
    ref = torch.nn.functional.one_hot(target[:, 0].long(), 3).movedim(-1, 1)
    monai = DiceMetric(include_background=True, reduction="mean_batch")
    monai(pred, ref)
    expected = monai.aggregate().numpy()
    got = np.array([res["dice/class_0"], res["dice/class_1"], res["dice/class_2"]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert res["mean_dice"] == pytest.approx(float(expected[1:].mean()), rel=1e-6)  # foreground classes


def test_vector_collectors_match_rank_auroc():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(40, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 2, size=(40, 3)), dtype=torch.float32)
    y[::7, 1] = float("nan")
    col = _Collector(MultilabelHead(8, labels=["a", "b", "c"]), "vector")
    col.add(logits, y)
    res = col.result()
    s = torch.sigmoid(logits).numpy()
    for j, name in enumerate("abc"):
        keep = ~np.isnan(y[:, j].numpy())
        assert abs(res[f"auroc/{name}"] - _rank_auroc(s[keep, j], y[keep, j].numpy())) < 1e-12
    binary = _Collector(ClassificationHead(8, num_classes=2), "class")
    yc = torch.tensor(rng.integers(0, 2, size=40), dtype=torch.float32)
    binary.add(logits[:, :2], yc)
    out = binary.result()
    p1 = torch.softmax(logits[:, :2], -1)[:, 1].numpy()
    assert abs(out["auroc"] - _rank_auroc(p1, yc.numpy())) < 1e-12
    assert out["accuracy"] == pytest.approx(float(((p1 > 0.5) == (yc.numpy() == 1)).mean()))
