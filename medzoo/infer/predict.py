"""``Predictor``: run a model on users' files with the preprocessing contract its weights were trained with.

Every input goes through the one pipeline (:func:`medzoo.data.pipeline.prepare`, the chain training used) for its
kind's contract; a model without a contract for the input's kind is refused (:class:`~medzoo.zoo.preprocessing.
NoContractError`) unless one is given (``preprocessing=``, ``medzoo predict --preprocessing NAME|FILE``).

- Volumes (NIfTI, DICOM series): dense (segmentation) tasks run whole when the prepared volume fits the model's patch
  (a ``patch`` contract's ``input_size``) and by sliding windows (:func:`monai.inferers.sliding_window_inference`)
  when it exceeds it; probabilities are mapped back to the input's own voxel grid through the inverse of the
  pipeline, so a mask written with the input's affine overlays the input. Vector tasks see what training's
  validation saw (the ``eval`` stage: centre crop or pad to ``input_size``). A volume whose resampling would exceed
  ``max_voxels`` is refused before resampling.
- Images (PNG, JPEG, CR/DX DICOM): as the contract says (for medzoo's CXR models: [0, 1] by the file's maximum
  value, grey, resized); masks come back at the image's size.
- Slice series (a COVIDx-CT patient folder) run the series-level and slice-level tasks; an image-level model runs
  every slice and reports the mean over slices (plus each slice).

:func:`predict_inputs` (:mod:`medzoo.infer.runner`) runs a predictor (or an :class:`~medzoo.infer.ensemble.Ensemble`)
over many inputs: images in batches (:meth:`Predictor.prepare_input` in DataLoader workers, then
:meth:`Predictor.predict_prepared`), volumes and series one at a time; one bad input is reported and the rest still
run.

Example:
    >>> import medzoo
    >>> model = medzoo.create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...     "tasks": {"cls": {"type": "classification", "level": "image", "num_classes": 2}}})
    >>> out = Predictor(model, preprocessing="cxr").predict_array(np.zeros((1, 32, 32), np.uint8), "image",
    ...                                                          {"max_value": 255.0})
    >>> out["cls"].probs.shape
    (2,)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medzoo.data.contract import Preprocessing, parse_preprocessing
from medzoo.data.pipeline import DEFAULT_MAX_VOXELS, Prepared, prepare
from medzoo.heads import ClassificationHead, MultilabelHead, RegressionHead
from medzoo.infer.inputs import InputItem, LoadedInput
from medzoo.models import LEVEL_INPUT
from medzoo.utils.perf import inference_defaults
from medzoo.zoo.preprocessing import NoContractError, contracts_of, require_contract
from medzoo.zoo.resolver import resolve

__all__ = ["NoContractError", "Predictor", "TaskOutput", "PredictReport", "predict_inputs", "task_type"]

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
        preprocessing: ``{kind: contract}``, one contract, a preset name (``ct``, ``cxr``, ``medicalnet``...,
            ``none`` for inputs as read) or a YAML file; default: ``metadata["preprocessing"]``, else
            ``model.preprocessing`` (set by :func:`medzoo.zoo.resolve`).
        metadata: the model's metadata (``metadata.json``).
        patch_size: sliding-window size ``(D, H, W)``; default: a ``patch`` contract's ``input_size``, else whole
            volumes.
        overlap: sliding-window overlap fraction.
        sw_batch_size: windows per forward call.
        blend: ``constant`` or ``gaussian`` weighting of overlapping windows.
        tasks: restrict to these tasks.
        device: where the model runs.
        fuse: fold eval-mode BatchNorm into the convolutions (on a copy of the model) for speed.
        max_voxels: refuse a volume whose resampling would exceed this many voxels (checked before resampling).

    Raises:
        NoContractError: no contract given and the model declares none.
    """

    def __init__(self, model: nn.Module, *, preprocessing: Any = None, metadata: dict[str, Any] | None = None,
                 patch_size: Sequence[int] | None = None, overlap: float = 0.25, sw_batch_size: int = 1,
                 blend: str = "constant", tasks: Sequence[str] | None = None, device: str = "cpu",
                 fuse: bool = True, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
        self.metadata = metadata or {}
        if preprocessing is not None:
            self.contracts = contracts_of(preprocessing)
        elif self.metadata.get("preprocessing"):
            self.contracts = parse_preprocessing(self.metadata["preprocessing"])
        else:
            self.contracts = dict(getattr(model, "preprocessing", None) or {})
        if not self.contracts:
            raise NoContractError("the model declares no preprocessing contract, and none was given; it would see "
                                  "inputs unlike those it was trained on. Pass preprocessing= (medzoo predict "
                                  "--preprocessing NAME|FILE; presets ct, cxr, series, medicalnet, imagenet, txv, "
                                  "none)")
        # By default BatchNorm is folded into the convolutions, on a copy (the caller's model is untouched): the
        # adopted inference default (docs/BENCHMARKS.md, roofline suite), equal to the unfused model within 1e-5.
        self.model = inference_defaults(model.to(device)) if fuse else model.to(device).eval()
        volume = self.contracts.get("volume")
        size = patch_size if patch_size is not None else (
            volume.input_size if volume is not None and volume.size_mode == "patch" else None)
        self.patch_size = tuple(int(s) for s in size) if size is not None and len(size) == 3 else None
        self.overlap, self.sw_batch_size, self.blend = float(overlap), int(sw_batch_size), blend
        self.max_voxels = int(max_voxels)
        self.tasks = list(tasks) if tasks is not None else list(model.tasks)
        unknown = [t for t in self.tasks if t not in model.tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; the model's tasks are {list(model.tasks)}")
        self.device = torch.device(device)
        self.in_channels = int(getattr(model.encoder, "in_channels", 1) or 1)

    @classmethod
    def from_ref(cls, ref: str | Path, preprocessing: Any = None, **kw: Any) -> Predictor:
        """Resolve ``ref`` with :func:`medzoo.zoo.resolve` and build a predictor on it, with the preprocessing
        contract its weights carry (``preprocessing`` overrides it, with a warning when the weights have one)."""
        resolved = resolve(ref)
        meta = resolved.spec.to_dict() if resolved.spec is not None else {}
        if preprocessing is not None and resolved.preprocessing:
            log.warning("%s: the given preprocessing %s replaces the contract its weights were trained with (%s)",
                        ref, preprocessing, ", ".join(sorted(resolved.preprocessing)))
        contracts = preprocessing if preprocessing is not None else resolved.preprocessing
        try:
            return cls(resolved.model, preprocessing=contracts or None, metadata={**meta, "preprocessing": None},
                       **kw)
        except NoContractError as err:
            raise NoContractError(f"{ref}: {err}") from None

    def contract(self, kind: str) -> Preprocessing:
        """The contract for ``kind`` inputs (an image contract serves series slices and vice versa).

        Raises:
            NoContractError: the model has none for ``kind``.
        """
        return require_contract(self.contracts, kind, "the model")

    def _tasks_for(self, kind: str) -> list[str]:
        return [t for t in self.tasks if LEVEL_INPUT[self.model.task_levels[t]] == kind]

    # ------------------------------------------------------------------------------------------------ running
    def predict_loaded(self, loaded: LoadedInput) -> dict[str, TaskOutput]:
        """Predictions for one read input (see :func:`~medzoo.infer.inputs.load_input`)."""
        return self.predict_array(loaded.array, loaded.item.kind, loaded.meta, loaded.item.id)

    def batchable(self, item: InputItem) -> bool:
        """Whether ``item`` takes the batched path: an image, for a model with image-level tasks."""
        return item.kind == "image" and bool(self._tasks_for("image"))

    def prepare_input(self, loaded: LoadedInput) -> Prepared:
        """A batchable input through the image contract; it may cross a process boundary (DataLoader workers), as
        :class:`~medzoo.data.pipeline.Prepared` pickles light."""
        return self.prepare(loaded.array, "image", loaded.meta, loaded.item.id)

    def predict_prepared(self, preps: Sequence[Prepared]) -> list[dict[str, TaskOutput]]:
        """Predictions for prepared images (:meth:`prepare_input`), run in batches of equal-shape tensors
        (``[B, C, H, W]``); each output is on its own input's grid, as :meth:`predict_array` gives it."""
        tasks = self._require("image")
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, prep in enumerate(preps):
            groups.setdefault(tuple(prep.tensor.shape), []).append(i)
        out: list[dict[str, TaskOutput]] = [{} for _ in preps]
        for idx in groups.values():
            x = torch.cat([preps[i].tensor for i in idx]).to(self.device)
            for i, result in zip(idx, self._run_plain(x, [preps[i] for i in idx], tasks)):
                out[i] = result
        return out

    def prepare(self, array: np.ndarray, kind: str, meta: dict[str, Any] | None = None, name: str = "input",
                stage: str = "predict") -> Prepared:
        """``array`` through the pipeline of this model's contract for ``kind`` (see :func:`prepare`)."""
        return prepare(self.contract(kind), array, meta, kind, stage, name, self.max_voxels)

    def predict_array(self, array: np.ndarray, kind: str, meta: dict[str, Any] | None = None,
                      name: str = "input") -> dict[str, TaskOutput]:
        """Predictions for a channel-first array of ``kind`` ``volume``, ``image`` or ``series``."""
        meta = meta or {}
        if kind == "volume":
            return self._run_volume(array, meta, name)
        if kind == "image" and not self._tasks_for("image") and self._tasks_for("series"):
            kind, array = "series", np.asarray(array)[None]
        if kind == "image":
            prep = self.prepare(array, "image", meta, name)
            return self._run_plain(prep.tensor.to(self.device), [prep], self._require("image"))[0]
        if kind == "series":
            return self._run_series(self.prepare(array, "series", meta, name))
        raise ValueError(f"unknown input kind {kind!r}; expected volume, image or series")

    def _require(self, kind: str) -> list[str]:
        tasks = self._tasks_for(kind)
        if not tasks:
            levels = {t: self.model.task_levels[t] for t in self.tasks}
            raise ValueError(f"the model has no task for {kind} input (task levels: {levels})")
        return tasks

    def _dense(self, task: str) -> bool:
        return getattr(self.model.heads[task], "kind", "vector") == "dense"

    def _run_volume(self, array: np.ndarray, meta: dict[str, Any], name: str) -> dict[str, TaskOutput]:
        tasks = self._require("volume")
        out: dict[str, TaskOutput] = {}
        dense = [t for t in tasks if self._dense(t)]
        if dense:
            prep = self.prepare(array, "volume", meta, name)
            x = prep.tensor.to(self.device)
            logits = self.dense_logits(x, dense)
            for t in dense:
                out[t] = self._output(t, probs=self._on_input_grid(t, logits[t], prep, "volume"))
        vector = [t for t in tasks if not self._dense(t)]
        if vector:
            x = self.prepare(array, "volume", meta, name, stage="eval").tensor.to(self.device)
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

    def _run_plain(self, x: torch.Tensor, preps: Sequence[Prepared], tasks: list[str]) -> list[dict[str, TaskOutput]]:
        """Outputs per item of a batch ``x [B, C, *spatial]`` stacked from ``preps``: one encoder pass serves every
        task (dense and vector heads alike)."""
        with torch.no_grad():
            logits = self.model(x, tasks=tasks)
        out: list[dict[str, TaskOutput]] = [{} for _ in preps]
        for t in tasks:
            if self._dense(t):
                for i, prep in enumerate(preps):
                    out[i][t] = self._output(t, probs=self._on_input_grid(t, logits[t][i:i + 1], prep, "image"))
                continue
            act = self.model.heads[t].activate(logits[t], None)
            for i, o in enumerate(out):
                o[t] = self._output(t, **_vector_fields(act, i))
        return out

    def _on_input_grid(self, task: str, logits: torch.Tensor, prep: Prepared, kind: str) -> np.ndarray:
        """Probabilities ``[K, *input spatial]`` of dense logits, through the inverse of the pipeline. Under a
        ``resize`` contract they go straight from the head's grid to the input's (one interpolation, as
        MedicalNet's test code zooms its probabilities); otherwise they are first brought to the network input's."""
        size = None if self.contract(kind).size_mode == "resize" else tuple(prep.tensor.shape[2:])
        return prep.to_original(self.model.heads[task].activate(logits, size)["probs"][0])

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


# The dataset-scale loop lives in its own module; re-exported here, where users have always imported it.
from medzoo.infer.runner import PredictReport, predict_inputs  # noqa: E402
