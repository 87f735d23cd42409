"""``Predictor``: run a model on users' files with its own preprocessing contract.

- Volumes (NIfTI, DICOM series) are reoriented, resampled and normalised as the contract says. Dense (segmentation)
  tasks run whole when the volume fits the model's patch (``input_size``) and by sliding windows
  (:func:`monai.inferers.sliding_window_inference`) when it exceeds it; probabilities are then mapped back to the
  input's own voxel grid, so a mask written with the input's affine overlays the input. Vector tasks on volumes see
  the volume resized to ``input_size``.
- Images (PNG, JPEG) are scaled to [0, 1], made grayscale and resized; masks come back at the image's size.
- Slice series (a COVIDx-CT patient folder) run the series-level and slice-level tasks; an image-level model runs
  every slice and reports the mean over slices (plus each slice).

:func:`predict_inputs` runs a predictor (or an :class:`~medzoo.infer.ensemble.Ensemble`) over many inputs, one at a
time (memory stays flat), with a progress bar; one bad input is reported and the rest still run.

Example:
    >>> import medzoo
    >>> model = medzoo.create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...     "tasks": {"cls": {"type": "classification", "level": "image", "num_classes": 2}}})
    >>> out = Predictor(model).predict_array(np.zeros((1, 32, 32), np.uint8), "image", {"max_value": 255.0})
    >>> out["cls"].probs.shape
    (2,)
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm.auto import tqdm

from medzoo.heads import ClassificationHead, MultilabelHead, RegressionHead
from medzoo.infer.inputs import DicomOptions, InputItem, LoadedInput, discover_inputs, load_input
from medzoo.infer.preprocess import Prepared, contract_dict, prepare_image, prepare_series, prepare_volume
from medzoo.infer.writers import (
    check_finite_outputs,
    output_record,
    prediction_rows,
    write_masks,
    write_predictions,
)
from medzoo.models import LEVEL_INPUT
from medzoo.utils.perf import inference_defaults
from medzoo.zoo.resolver import resolve

__all__ = ["Predictor", "TaskOutput", "PredictReport", "predict_inputs", "task_type"]

log = logging.getLogger(__name__)


@dataclass
class TaskOutput:
    """One task's prediction for one input.

    Attributes:
        task: task name; ``type``: classification, multilabel, regression or segmentation.
        labels: label / class / output names.
        probs: ``[K]`` (vector tasks) or ``[K, *spatial]`` on the input's grid (segmentation); None for regression.
        values: ``[K]`` regression outputs.
        thresholds: ``[K]`` multilabel decision thresholds.
        slice_probs: ``[N, K]`` per-slice probabilities (or values) of a series input, when available.
        slice_weights: ``[N]`` aggregator weights of a series input, when the aggregator has them.
    """

    task: str
    type: str
    labels: tuple[str, ...]
    probs: np.ndarray | None = None
    values: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    slice_probs: np.ndarray | None = None
    slice_weights: np.ndarray | None = None

    def decisions(self) -> np.ndarray:
        """Thresholded decisions: one-hot argmax (classification), ``probs >= thresholds`` (multilabel), the label
        map ``[*spatial]`` (segmentation: argmax, or ``probs[0] >= 0.5`` for one class)."""
        if self.type == "classification":
            return (np.arange(len(self.labels)) == int(np.argmax(self.probs))).astype(np.int64)
        if self.type == "multilabel":
            return (self.probs >= self.thresholds).astype(np.int64)
        if self.type == "segmentation":
            return (self.probs[0] >= 0.5).astype(np.uint8) if len(self.labels) == 1 else \
                np.argmax(self.probs, axis=0).astype(np.uint8)
        raise ValueError(f"task {self.task!r}: regression has values, not decisions")


def task_type(head: nn.Module) -> str:
    """``segmentation`` for dense heads, else the head's registered kind of vector output."""
    if getattr(head, "kind", "vector") == "dense":
        return "segmentation"
    for cls, name in ((ClassificationHead, "classification"), (MultilabelHead, "multilabel"),
                      (RegressionHead, "regression")):
        if isinstance(head, cls):
            return name
    raise TypeError(f"unsupported head {type(head).__name__}")


class Predictor:
    """Run one model on inputs.

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel`.
        preprocessing: the input contract (``Preprocessing`` or dict); default: ``metadata["preprocessing"]``,
            else none (intensities as read; images scaled to [0, 1]).
        metadata: the model's metadata (``metadata.json``).
        patch_size: sliding-window size ``(D, H, W)``; default: the contract's ``input_size``, else whole volumes.
        overlap: sliding-window overlap fraction.
        sw_batch_size: windows per forward call.
        blend: ``constant`` or ``gaussian`` weighting of overlapping windows.
        tasks: restrict to these tasks.
        device: where the model runs.
        fuse: fold eval-mode BatchNorm into the convolutions (on a copy of the model) for speed.
    """

    def __init__(self, model: nn.Module, *, preprocessing: Any = None, metadata: dict[str, Any] | None = None,
                 patch_size: Sequence[int] | None = None, overlap: float = 0.25, sw_batch_size: int = 1,
                 blend: str = "constant", tasks: Sequence[str] | None = None, device: str = "cpu",
                 fuse: bool = True) -> None:
        # By default BatchNorm is folded into the convolutions, on a copy (the caller's model is untouched): the
        # adopted inference default (docs/BENCHMARKS.md, roofline suite), equal to the unfused model within 1e-5.
        self.model = inference_defaults(model.to(device)) if fuse else model.to(device).eval()
        self.metadata = metadata or {}
        pre = preprocessing if preprocessing is not None else self.metadata.get("preprocessing")
        self.contract = contract_dict(pre)
        size = patch_size if patch_size is not None else self.contract.get("input_size")
        self.patch_size = tuple(int(s) for s in size) if size is not None and len(size) == 3 else None
        self.overlap, self.sw_batch_size, self.blend = float(overlap), int(sw_batch_size), blend
        self.tasks = list(tasks) if tasks is not None else list(model.tasks)
        unknown = [t for t in self.tasks if t not in model.tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; the model's tasks are {list(model.tasks)}")
        self.device = torch.device(device)
        self.in_channels = int(getattr(model.encoder, "in_channels", 1) or 1)

    @classmethod
    def from_ref(cls, ref: str | Path, **kw: Any) -> Predictor:
        """Resolve ``ref`` with :func:`medzoo.zoo.resolve` and build a predictor on it, with the preprocessing
        contract and metadata its weights carry."""
        resolved = resolve(ref)
        meta = resolved.spec.to_dict() if resolved.spec is not None else {}
        return cls(resolved.model, preprocessing=resolved.preprocessing, metadata=meta, **kw)

    def _tasks_for(self, kind: str) -> list[str]:
        return [t for t in self.tasks if LEVEL_INPUT[self.model.task_levels[t]] == kind]

    # ------------------------------------------------------------------------------------------------ running
    def predict_loaded(self, loaded: LoadedInput) -> dict[str, TaskOutput]:
        """Predictions for one read input (see :func:`~medzoo.infer.inputs.load_input`)."""
        return self.predict_array(loaded.array, loaded.item.kind, loaded.meta, loaded.item.id)

    def predict_array(self, array: np.ndarray, kind: str, meta: dict[str, Any] | None = None,
                      name: str = "input") -> dict[str, TaskOutput]:
        """Predictions for a channel-first array of ``kind`` ``volume``, ``image`` or ``series``."""
        meta = meta or {}
        if kind == "volume":
            prep = prepare_volume(array, meta.get("affine", np.eye(4)), self.contract, name)
            return self._run_volume(prep)
        if kind == "image" and not self._tasks_for("image") and self._tasks_for("series"):
            kind, array = "series", np.asarray(array)[None]
        if kind == "image":
            prep = prepare_image(array, meta, self.contract, self.in_channels, name)
            return self._run_plain(prep, self._require("image"))
        if kind == "series":
            prep = prepare_series(array, meta, self.contract, self.in_channels, name)
            return self._run_series(prep)
        raise ValueError(f"unknown input kind {kind!r}; expected volume, image or series")

    def _require(self, kind: str) -> list[str]:
        tasks = self._tasks_for(kind)
        if not tasks:
            levels = {t: self.model.task_levels[t] for t in self.tasks}
            raise ValueError(f"the model has no task for {kind} input (task levels: {levels})")
        return tasks

    def _dense(self, task: str) -> bool:
        return getattr(self.model.heads[task], "kind", "vector") == "dense"

    def _run_volume(self, prep: Prepared) -> dict[str, TaskOutput]:
        tasks = self._require("volume")
        x = prep.tensor.to(self.device)
        out: dict[str, TaskOutput] = {}
        dense = [t for t in tasks if self._dense(t)]
        if dense:
            logits = self.dense_logits(x, dense)
            for t in dense:
                probs = self.model.heads[t].activate(logits[t], tuple(x.shape[2:]))["probs"][0]
                out[t] = self._output(t, probs=prep.to_original(probs))
        vector = [t for t in tasks if not self._dense(t)]
        if vector:
            if self.patch_size is not None and tuple(x.shape[2:]) != self.patch_size:
                x = nn.functional.interpolate(x, size=self.patch_size, mode="trilinear", align_corners=False)
            out.update(self._vector_outputs(x, vector))
        return out

    def dense_logits(self, x: torch.Tensor, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Logits of dense tasks for ``x [1, C, D, H, W]``: one pass when the volume fits the patch, else sliding
        windows (``sliding_window_inference`` with this predictor's patch, overlap, batch and blend)."""
        tasks = list(tasks)
        with torch.no_grad():
            if self.patch_size is None or all(s <= p for s, p in zip(x.shape[2:], self.patch_size)):
                return self.model(x, tasks=tasks)
            return sliding_window_inference(
                x, roi_size=self.patch_size, sw_batch_size=self.sw_batch_size,
                predictor=lambda w: self.model(w, tasks=tasks), overlap=self.overlap, mode=self.blend,
            )

    def _run_plain(self, prep: Prepared, tasks: list[str]) -> dict[str, TaskOutput]:
        x = prep.tensor.to(self.device)
        out = {}
        dense = [t for t in tasks if self._dense(t)]
        if dense:
            with torch.no_grad():
                logits = self.model(x, tasks=dense)
            for t in dense:
                probs = self.model.heads[t].activate(logits[t], tuple(x.shape[2:]))["probs"][0]
                out[t] = self._output(t, probs=prep.to_original(probs))
        out.update(self._vector_outputs(x, [t for t in tasks if not self._dense(t)]))
        return out

    def _vector_outputs(self, x: torch.Tensor, tasks: list[str]) -> dict[str, TaskOutput]:
        if not tasks:
            return {}
        act = self.model.predict(x, tasks=tasks)
        return {t: self._output(t, **_vector_fields(act[t], 0)) for t in tasks}

    def _run_series(self, prep: Prepared) -> dict[str, TaskOutput]:
        x = prep.tensor.to(self.device)
        tasks = self._tasks_for("series")
        if not tasks:  # an image-level model: every slice, then the mean over slices
            slices = x[0]
            act = self.model.predict(slices, tasks=[t for t in self._require("image") if not self._dense(t)])
            return {t: self._output(t, **_mean_over_slices(a)) for t, a in act.items()}
        with torch.no_grad():  # one encoding gives the logits and the aggregator's slice weights
            logits, w = self.model.forward_series(x, torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device), tasks)
        act = {t: self.model.heads[t].activate(v, None) for t, v in logits.items()}
        weights = None if w is None else w[0].cpu().numpy()
        out = {}
        for t in tasks:
            if self.model.task_levels[t] == "slice":
                out[t] = self._output(t, **_mean_over_slices({k: v[0] for k, v in act[t].items()}))
            else:
                out[t] = self._output(t, slice_weights=weights, **_vector_fields(act[t], 0))
        return out

    def _output(self, task: str, **fields: Any) -> TaskOutput:
        head = self.model.heads[task]
        kind = task_type(head)
        thr = getattr(head, "thresholds", None) if kind == "multilabel" else None
        return TaskOutput(task, kind, tuple(head.label_names),
                          thresholds=None if thr is None else thr.cpu().numpy().astype(np.float64), **fields)


def _vector_fields(act: dict[str, torch.Tensor], i: int) -> dict[str, np.ndarray]:
    if "values" in act:
        return {"values": act["values"][i].cpu().numpy().astype(np.float64)}
    return {"probs": act["probs"][i].cpu().numpy().astype(np.float64)}


def _mean_over_slices(act: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    key = "values" if "values" in act else "probs"
    per = act[key].cpu().numpy().astype(np.float64)
    return {key: per.mean(axis=0), "slice_probs": per}


@dataclass
class PredictReport:
    """What :func:`predict_inputs` did: output rows, per-input records, and ``(where, message)`` errors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def predict_inputs(predictor: Any, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   progress: bool | None = None, dicom: DicomOptions | None = None) -> PredictReport:
    """Predict on every input and write ``predictions.csv``, ``predictions.json`` and masks under ``out_dir``.

    Args:
        predictor: a :class:`Predictor` or an :class:`~medzoo.infer.ensemble.Ensemble` (``predict_loaded``).
        inputs: files, folders or listings (see :mod:`medzoo.infer.inputs`).
        out_dir: created if needed; masks go to ``out_dir/masks/{id}_{task}.nii.gz`` (volumes) or ``.png``.
        progress: a tqdm bar over inputs (default: when stderr is a terminal).
        dicom: how to read DICOM inputs (series choice, uneven slices).

    Returns:
        A :class:`PredictReport`; a failed input is logged and listed in ``errors``, the rest still run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, errors = discover_inputs(inputs, dicom)
    report = PredictReport(errors=list(errors))
    for where, msg in errors:
        log.error("skipped %s: %s", where, msg)
    for item in tqdm(items, desc="predict", unit="input", disable=_no_bar(progress)):
        try:
            record = _predict_one(predictor, item, out)
        except Exception as err:  # noqa: BLE001  (one bad input is reported; the others still run)
            log.error("%s: %s: %s", item.source, type(err).__name__, err)
            report.errors.append((item.source, f"{type(err).__name__}: {err}"))
            continue
        report.records.append(record)
        report.rows.extend(prediction_rows(record))
        if len(report.records) % 100 == 0:  # a full collection costs ~0.2 s; memory stays flat without one per input
            gc.collect()
    write_predictions(out, report.rows, report.records, report.errors)
    return report


def _predict_one(predictor: Any, item: InputItem, out: Path) -> dict[str, Any]:
    loaded = load_input(item)
    outputs = predictor.predict_loaded(loaded)
    check_finite_outputs(outputs, item.source)
    files = write_masks(out / "masks", item, outputs, loaded.meta)
    return output_record(item, outputs, files)


def _no_bar(progress: bool | None) -> bool:
    if progress is None:
        return not sys.stderr.isatty()
    return not progress
