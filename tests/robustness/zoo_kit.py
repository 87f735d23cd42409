"""Tools of the zoo attack tests: a tiny CXR model exported as a user would, the edits an attacker makes to its
``config.yaml`` and ``metadata.json``, a test image, and ``medzoo predict`` run in process.

* :func:`cxr_model` / :func:`export`: resnet10 (widths 8/16/32/64) with a multilabel and a segmentation head, and
  its export folder (``cxr.demo``).
* :func:`edit_yaml` / :func:`edit_meta`: rewrite the export's config or metadata (optionally re-hashing the config,
  or dropping its hash as an older medzoo wrote it).
* :func:`noisy_png`: a 40x40 random 8-bit PNG (the ``image`` fixture of the test modules returns it).
* :func:`predict`: ``medzoo -q predict`` with one model and one image; returns the exit code and stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from medzoo.cli.main import main
from medzoo.data.imageio import write_png
from medzoo.models import create_model
from medzoo.zoo.download import sha256_file
from medzoo.zoo.publish import export_model

TASKS = {"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b"]},
         "lung": {"type": "segmentation", "level": "image", "labels": ["background", "lung"]}}
PRE = {"modality": ["CXR"], "normalisation": "none", "input_size": [32, 32]}


def cxr_model(**tasks: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}, "tasks": {**TASKS, **tasks}})


def export(where: Path, model: torch.nn.Module | None = None) -> Path:
    return export_model(model if model is not None else cxr_model(), where, name="cxr.demo", preprocessing=PRE)


def edit_yaml(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_meta(exp: Path, fn, *, rehash_config: bool = False, drop_config_hash: bool = False) -> None:
    """Edit metadata.json as an attacker (or an older medzoo, without the config hash) would."""
    meta = json.loads((exp / "metadata.json").read_text())
    fn(meta)
    if drop_config_hash:
        meta["files"] = [f for f in meta["files"] if f["url"] != "config.yaml"]
    if rehash_config:
        for f in meta["files"]:
            if f["url"] == "config.yaml":
                f.update(sha256=sha256_file(exp / "config.yaml"), size=(exp / "config.yaml").stat().st_size)
    (exp / "metadata.json").write_text(json.dumps(meta, indent=2))


def noisy_png(tmp_path: Path) -> str:
    """``tmp_path/img.png``: 40x40 random 8-bit pixels (seed 0)."""
    rng = np.random.default_rng(0)
    return str(write_png(tmp_path / "img.png", (rng.random((40, 40)) * 255).astype(np.uint8)))


def predict(exp: Path | str, image: str, out: Path, capsys) -> tuple[int, str]:
    code = main(["-q", "predict", "--model", str(exp), image, "--out", str(out)])
    return code, capsys.readouterr().err
