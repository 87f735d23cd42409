"""From file to logit: a tiny CT segmentation model trained with the HU-window preset and a spacing, exported, and run
by ``medzoo predict`` sees the exact tensor its training pipeline makes of the same file, through the export and
through the checkpoint, in the file's own orientation or another (LPS); and its Dice through ``predict`` matches
``medzoo evaluate``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medzoo.cli.main import main
from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import write_nifti
from medzoo.data.manifest import Record
from medzoo.data.presets import ct_contract
from medzoo.data.record_io import load_record
from medzoo.data.synth.ct import phantom_volume
from medzoo.evaluation.checkpoint import evaluate_checkpoint
from medzoo.infer.inputs import classify_path, load_input
from medzoo.infer.predict import Predictor
from medzoo.train import fit
from medzoo.train.config import load_run_config
from medzoo.train.data import build_datasets
from medzoo.zoo import resolve, transforms_for
from medzoo.zoo.checkpoint import load_checkpoint, model_from_checkpoint
from medzoo.zoo.publish import export_model

SHAPE, SPACING = (24, 24, 16), (14.0, 14.0, 20.0)
CONTRACT = {"hu_window": [-1000, 400], "spacing": [16, 16, 20], "orientation": "RAS"}
SPLIT = {"official": False, "fractions": {"train": 0.5, "val": 0.17, "test": 0.33}}


def _ras_affine() -> np.ndarray:
    a = np.diag([*SPACING, 1.0])
    a[:3, 3] = [-168.0, -168.0, -160.0]
    return a


def _lps(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same volume stored LPS: x and y reversed, the affine reversing them back (same world positions)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [arr.shape[0] - 1, arr.shape[1] - 1]
    return np.ascontiguousarray(arr[::-1, ::-1, :]), affine @ flip


def _write_task(root: Path, n: int) -> Path:
    rng, task, training = np.random.default_rng(0), root / "Task99_SynthLung", []
    for i in range(n):
        hu, label = phantom_volume(rng, SHAPE, int(rng.integers(0, 3)))
        name = f"lung_{i:03d}.nii.gz"
        write_nifti(task / "imagesTr" / name, np.rint(hu).astype(np.int16), _ras_affine())
        write_nifti(task / "labelsTr" / name, label, _ras_affine())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "tiny", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "lung", "2": "lesion"},
            "numTraining": n, "training": training, "test": []}
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    hu, label = phantom_volume(rng, SHAPE, 2)  # held out: a test file in RAS and its LPS copy
    held = root / "held"
    write_nifti(held / "ras.nii.gz", np.rint(hu).astype(np.int16), _ras_affine())
    write_nifti(held / "ras_label.nii.gz", label, _ras_affine())
    for name, arr in (("lps.nii.gz", np.rint(hu).astype(np.int16)), ("lps_label.nii.gz", label)):
        flipped, affine = _lps(arr, _ras_affine())
        write_nifti(held / name, flipped, affine)
    return held


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    """(run config mapping, checkpoint, export dir, held-out folder): 35 steps, test lung Dice about 0.88."""
    root = tmp_path_factory.mktemp("fidelity")
    held = _write_task(root, 10)
    cfg = {"data_root": str(root),
           "model": {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
                     "tasks": {"ct_seg": {"type": "segmentation", "level": "volume",
                                          "labels": ["background", "lung", "lesion"],
                                          "decoder_channels": [16, 16, 8, 8, 8]}}},
           "data": [{"name": "msd", "kind": "msd", "root": "Task99_SynthLung", "options": {"split": "training"},
                     "tasks": {"segmentation": "ct_seg"}, "split": SPLIT, "batch_size": 2,
                     "transform": {"preset": "ct", "size": [24, 24, 16], "augment": False, "options": CONTRACT}}],
           "train": {"epochs": 1000, "max_steps": 35, "lr": 0.01, "seed": 0, "device": "cpu", "eval_every": 1000},
           "output": {"dir": str(root / "run"), "tensorboard": False}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and far faster on a busy machine
    try:
        fit(cfg, quiet=True)
    finally:
        torch.set_num_threads(threads)
    ckpt = root / "run" / "last.pt"
    assert main(["-q", "export", str(ckpt), "--out", str(root / "export")]) == 0
    return cfg, ckpt, root / "export", held


def _train_tensor(cfg: dict, path: Path) -> torch.Tensor:
    """What the run's training pipeline (the transform its validation split uses) makes of ``path``."""
    model, _ = model_from_checkpoint(Path(cfg["output"]["dir"]) / "last.pt")
    transform = build_datasets(load_run_config(cfg), model)[0].splits["val"].transform
    rec = Record(path.name, "p", str(path), meta={"mask": str(path).replace(".nii.gz", "_label.nii.gz")})
    return ManifestDataset([rec], transform, tasks=[], mask_task="seg")[0]["image"][None]


def _predict(ref: Path, inputs: list[Path], out: Path, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``medzoo predict`` and return, per input, the network input and ``ct_seg`` logits it computed."""
    seen, real = [], Predictor.dense_logits

    def spy(self, x, tasks):
        logits = real(self, x, tasks)
        seen.append((x.detach().clone(), logits["ct_seg"].detach().clone()))
        return logits

    monkeypatch.setattr(Predictor, "dense_logits", spy)
    assert main(["-q", "predict", "--model", str(ref), *map(str, inputs), "--out", str(out)]) == 0
    return seen


def test_checkpoint_records_the_contract_training_used(ct_run, tmp_path):
    cfg, ckpt, export, _ = ct_run
    recorded = load_checkpoint(ckpt)["preprocessing"]
    expected = ct_contract(CONTRACT["hu_window"], CONTRACT["spacing"], (24, 24, 16), "RAS")
    assert recorded == {"volume": expected.to_dict()}
    assert json.loads((export / "metadata.json").read_text())["preprocessing"] == {"volume": expected.to_dict()}
    assert resolve(ckpt).preprocessing == {"volume": expected}  # every reference kind resolves with its contract
    assert resolve(export).preprocessing == {"volume": expected}
    old = {k: v for k, v in load_checkpoint(ckpt).items() if k != "preprocessing"}  # written before contracts
    torch.save(old, tmp_path / "old.pt")
    assert resolve(tmp_path / "old.pt").preprocessing == {"volume": expected}  # derived from its run config


@pytest.mark.parametrize("which", ["export", "checkpoint"])
def test_predict_feeds_the_training_pipelines_tensor(ct_run, which, tmp_path, monkeypatch):
    cfg, ckpt, export, held = ct_run
    ref = export if which == "export" else ckpt
    ((x, logits),) = _predict(ref, [held / "ras.nii.gz"], tmp_path / "out", monkeypatch)
    train_x = _train_tensor(cfg, held / "ras.nii.gz")
    torch.testing.assert_close(x, train_x, rtol=0, atol=1e-6)
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        expected = model(train_x, tasks=["ct_seg"])["ct_seg"].softmax(1)
    torch.testing.assert_close(logits.softmax(1), expected, rtol=0, atol=1e-5)
    mask = nib.load(tmp_path / "out" / "masks" / "ras_ct_seg.nii.gz")
    assert mask.shape == SHAPE
    np.testing.assert_allclose(mask.affine, _ras_affine(), atol=1e-6)


def test_an_lps_copy_gets_the_same_probabilities_and_its_mask_overlays_its_label(ct_run, tmp_path, monkeypatch):
    cfg, ckpt, export, held = ct_run
    (ras_x, ras_logits), (lps_x, lps_logits) = _predict(export, [held / "ras.nii.gz", held / "lps.nii.gz"],
                                                        tmp_path / "out", monkeypatch)
    torch.testing.assert_close(lps_x, _train_tensor(cfg, held / "lps.nii.gz"), rtol=0, atol=1e-6)
    torch.testing.assert_close(lps_x, ras_x, rtol=0, atol=1e-6)  # RAS reorientation: one tensor for both files
    torch.testing.assert_close(lps_logits.softmax(1), ras_logits.softmax(1), rtol=0, atol=1e-5)
    masks = {n: np.asarray(nib.load(tmp_path / "out" / "masks" / f"{n}_ct_seg.nii.gz").dataobj) for n in ("ras", "lps")}
    np.testing.assert_array_equal(masks["lps"], masks["ras"][::-1, ::-1, :])  # the same voxels, in the LPS grid
    label = np.asarray(nib.load(held / "lps_label.nii.gz").dataobj)
    lung_pred, lung = masks["lps"] == 1, label == 1
    dice = 2 * (lung_pred & lung).sum() / (lung_pred.sum() + lung.sum())
    assert dice > 0.6  # the mask lies on the lungs of the LPS file, in the LPS file's own grid


def test_dice_through_predict_matches_evaluate(ct_run):
    """The demo's measurement at test size: mean lung Dice of ``predict``'s masks against each test volume's label
    file (input grid) is within 0.02 of ``evaluate``'s (training pipeline's grid)."""
    cfg, ckpt, export, _ = ct_run
    evaluated = evaluate_checkpoint(cfg, ckpt)["test/ct_seg/dice/lung"]
    records = build_datasets(load_run_config(cfg), model_from_checkpoint(ckpt)[0])[0].splits["test"].records
    predictor, dices = Predictor.from_ref(export), []
    for r in records:
        mask = predictor.predict_loaded(load_input(classify_path(r.image)))["ct_seg"].decisions() == 1
        lung = np.asarray(nib.load(r.meta["mask"]).dataobj) == 1
        dices.append(2 * (mask & lung).sum() / (mask.sum() + lung.sum()))
    assert len(records) >= 3
    assert evaluated > 0.7  # a model that segments: the comparison means something
    assert abs(float(np.mean(dices)) - evaluated) < 0.02


def test_transforms_for_is_the_training_pipeline(ct_run, tmp_path):
    """``medzoo.zoo.transforms_for`` of the checkpoint or the export: the chain training validated with."""
    cfg, ckpt, export, held = ct_run
    sample = load_record(Record("ras", "p", str(held / "ras.nii.gz")))
    expected = _train_tensor(cfg, held / "ras.nii.gz")[0]
    for ref in (ckpt, export, model_from_checkpoint(ckpt)[0]):
        got = transforms_for(ref, stage="eval")(dict(sample))["image"]
        torch.testing.assert_close(torch.as_tensor(got.as_tensor()), expected, rtol=0, atol=0)
    # exporting a model read from a checkpoint records its contract without being told (the demo's publish path)
    out = export_model(model_from_checkpoint(ckpt)[0], tmp_path / "exp", name="demo.ct", parts="encoder")
    assert json.loads((out / "metadata.json").read_text())["preprocessing"].keys() == {"volume"}


def test_evaluate_reads_the_models_contract(ct_run, caplog):
    """A config whose preset differs from what the model was trained with is evaluated with the model's contract."""
    cfg, ckpt, _, _ = ct_run
    other = json.loads(json.dumps(cfg))
    other["data"][0]["transform"]["options"]["spacing"] = [7, 7, 10]
    with caplog.at_level("WARNING", logger="medzoo.train.data"):
        got = evaluate_checkpoint(other, ckpt)
    assert "differs from the preprocessing the model was trained with" in caplog.text
    assert got["test/ct_seg/dice/lung"] == evaluate_checkpoint(cfg, ckpt)["test/ct_seg/dice/lung"]
