"""Shared pieces of the dataset-scale predict tests: a tiny image model with a mask and a vector task, PNG inputs of
mixed sizes, and readers for the tables and masks a run leaves (used by tests/infer and tests/robustness)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data.imageio import read_image, write_png

SEG_TASKS = {"lung": {"type": "segmentation", "level": "image", "num_classes": 2},
             "tb": {"type": "multilabel", "level": "image", "labels": ["tb", "effusion"]}}
SIZES = [(40, 40), (50, 36), (32, 32), (44, 60), (36, 36)]


def write_images(folder: Path, n: int, prefix: str = "img") -> list[Path]:
    """``n`` random 8-bit PNGs of mixed sizes (so the resize contract has real work and masks differ in shape)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_png(folder / f"{prefix}{i:02d}.png",
                      rng.integers(0, 256, SIZES[i % len(SIZES)], dtype=np.uint8)) for i in range(n)]


def write_listing(path: Path, images: list[Path], ids: list[str] | None = None) -> Path:
    """An ``id,path`` listing (ids default to the file stems)."""
    ids = ids or [p.stem for p in images]
    path.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in zip(ids, images)))
    return path


def jsonl_records(out: Path, stem: str = "predictions") -> list[dict[str, Any]]:
    """Every line of ``stem.jsonl`` parsed (a torn line fails the test)."""
    text = (out / f"{stem}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def csv_rows(out: Path, stem: str = "predictions") -> list[dict[str, str]]:
    """``stem.csv`` read as the csv module documents (``newline=""``, so quoted CR/LF stay inside fields)."""
    with open(out / f"{stem}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def mask_of(out: Path, record: dict[str, Any], task: str = "lung") -> np.ndarray:
    """The mask a record names, read from ``out/masks``."""
    return read_image(out / "masks" / Path(record["tasks"][task]["mask"]).name)[0][0]


def assert_same_predictions(a: dict[str, Any], b: dict[str, Any], out_a: Path, out_b: Path) -> None:
    """Two records of one input agree: probabilities to float tolerance, masks and voxel counts exactly."""
    assert a["id"] == b["id"]
    np.testing.assert_allclose(list(a["tasks"]["tb"]["probabilities"].values()),
                               list(b["tasks"]["tb"]["probabilities"].values()), rtol=0, atol=1e-6)
    assert a["tasks"]["lung"]["voxels"] == b["tasks"]["lung"]["voxels"]
    np.testing.assert_array_equal(mask_of(out_a, a), mask_of(out_b, b))
