"""The demo's CT segmentation scored two ways: ``medzoo evaluate`` (the network grid of the training pipeline) and
``medzoo predict`` (masks on each volume's own grid, against its own label file), through the checkpoint and an export.

It runs (or reuses) the demo's synthetic corpus and multi-task pretraining in ``--out`` (the same folders as
``medzoo demo --out``), then prints the lung Dice of both on the test split. The two differ only by the grid the
Dice is counted on: the predict masks are the network's probabilities mapped back through the inverse of the
pipeline, so the gap is the resolution the resampling to the model's spacing loses.

Usage:
    python tools/predict_vs_evaluate.py --out medzoo-demo [--profile full|quick|tiny]
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medzoo.evaluation.checkpoint import evaluate_checkpoint
from medzoo.experiment.demo import PROFILES, _corpus, _pretrain, pretrain_config
from medzoo.infer.inputs import classify_path, load_input
from medzoo.infer.predict import Predictor
from medzoo.train.config import load_run_config
from medzoo.train.data import build_datasets
from medzoo.zoo import resolve
from medzoo.zoo.publish import export_model


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / max(int(pred.sum() + gt.sum()), 1))


def predict_dice(ref: str | Path, records: list, label: int = 1, preprocessing: str | None = None) -> list[float]:
    """Per test volume, the Dice of ``label`` between ``predict``'s mask (input grid) and the volume's label file."""
    predictor = Predictor.from_ref(ref, tasks=["ct_seg"], preprocessing=preprocessing)
    out = []
    for r in records:
        mask = predictor.predict_loaded(load_input(classify_path(r.image)))["ct_seg"].decisions()
        out.append(_dice(mask == label, np.asarray(nib.load(r.meta["mask"]).dataobj) == label))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="medzoo-demo", help="the demo folder (corpus/ and pretrain/ are reused)")
    ap.add_argument("--profile", default="full", choices=sorted(PROFILES))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out, profile = Path(args.out), PROFILES[args.profile]
    t = time.perf_counter()
    corpus, _ = _corpus(profile, out)
    _pretrain(profile, corpus, out, progress=False)
    cfg = load_run_config(pretrain_config(profile, corpus, out / "pretrain"))
    ckpt = out / "pretrain" / "last.pt"
    evaluated = evaluate_checkpoint(cfg, ckpt)["test/ct_seg/dice/lung"]
    resolved = resolve(ckpt)
    records = build_datasets(cfg, resolved.model, resolved.preprocessing)[0].splits["test"].records
    through_ckpt = predict_dice(ckpt, records)
    as_read = predict_dice(ckpt, records, preprocessing="none")
    with tempfile.TemporaryDirectory() as tmp:
        export = export_model(resolved.model, Path(tmp) / "export", name="demo.ct")
        through_export = predict_dice(export, records)
    print(f"machine: {platform.processor() or platform.machine()}, profile {args.profile}, "
          f"{len(records)} test volumes, {time.perf_counter() - t:.0f} s")
    print(f"lung Dice  evaluate (network grid): {evaluated:.3f}")
    print(f"lung Dice  predict, checkpoint (input grid): {np.mean(through_ckpt):.3f}")
    print(f"lung Dice  predict, export (input grid): {np.mean(through_export):.3f}")
    print(f"lung Dice  predict, inputs as read (--preprocessing none, what predict did before): {np.mean(as_read):.3f}")


if __name__ == "__main__":
    main()
