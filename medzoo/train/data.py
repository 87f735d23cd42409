"""From ``data:`` config entries to split datasets whose labels are mapped, by name, onto the model's tasks.

For each entry: read the manifest (:func:`medzoo.data.open_dataset`), split it by patient, keep ``fraction`` of the
training patients, build the pipeline of its preprocessing contract (:func:`data_contract`: the ``transform`` preset,
or the initial weights' contract) and a :class:`~medzoo.data.dataset.ManifestDataset` per split (or a
prepared cache). :class:`TaskMapping` turns a batch's ``label.<dataset task>`` keys into model-task targets:

- class labels are re-indexed by class name (``COVID-19`` -> the head's ``covid19``; names compare case-insensitively
  without punctuation, and CXR findings through :func:`medzoo.data.canonical_label`);
- multilabel and regression vectors are reordered to the head's label order (a label the dataset lacks is NaN);
- a dense (segmentation) task takes the record's mask.

A batch label without a mapping is an error (a silently dropped label would train the wrong task).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medzoo.config import ConfigError
from medzoo.data import open_dataset, patient_split
from medzoo.data.contract import Preprocessing, contract_for, preprocessing_to_dict
from medzoo.data.dataset import ManifestDataset, label_tensor
from medzoo.data.labels import canonical_label
from medzoo.data.pipeline import build_transforms
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.presets import input_kind, preset_contract, with_slice_size
from medzoo.train.config import DataConfig, RunConfig
from medzoo.zoo.preprocessing import preprocessing_of

__all__ = ["DatasetBundle", "TaskMapping", "build_datasets", "build_transform", "data_contract", "data_kind",
           "init_preprocessing", "label_index", "recorded_preprocessing"]

log = logging.getLogger(__name__)
MASK_KEY = "mask"


def _norm(name: str) -> str:
    canon = canonical_label(str(name))
    return re.sub(r"[^0-9a-z]", "", (canon or str(name)).lower())


def label_index(source: Sequence[str], target: Sequence[str], key: str, ignore: Sequence[str] = (),
                allow_missing: bool = True) -> list[int]:
    """For each target label, the index of the same-named source label (-1 when the source lacks it).

    Raises:
        ConfigError: a source label with no target (unless listed in ``ignore``), or (``allow_missing=False``) a
            target the source lacks; the message names ``key``.
    """
    unnamed = any(all(re.fullmatch(r"class_\d+", n) for n in names) for names in (source, target))
    if unnamed and len(source) == len(target):
        return list(range(len(target)))  # the head has no names: take the dataset's order
    pos = {_norm(s): i for i, s in enumerate(source)}
    index = [pos.get(_norm(t), -1) for t in target]
    covered = {_norm(t) for t in target} | {_norm(s) for s in ignore}
    unmapped = [s for s in source if _norm(s) not in covered]
    if unmapped:
        raise ConfigError(f"{key}: dataset labels {unmapped} have no place in the head's labels {list(target)}; add "
                          f"them to the head or list them in ignore_labels")
    if not allow_missing and -1 in index:
        raise ConfigError(f"{key}: the head's classes {[t for t, i in zip(target, index) if i < 0]} are not among "
                          f"the dataset's classes {list(source)}")
    return index


@dataclass
class TaskMapping:
    """How one dataset's batch labels become model-task targets.

    Attributes:
        sources: batch label key suffix (dataset task, or ``mask``) -> model task.
        kinds: model task -> ``class``, ``vector``, ``regression`` or ``dense``.
        index: model task -> source index per head label (vector, regression) or head class per dataset class.
    """

    sources: dict[str, str]
    kinds: dict[str, str]
    index: dict[str, list[int]] = field(default_factory=dict)
    heads: dict[str, nn.Module] = field(default_factory=dict)

    def targets(self, batch: Mapping[str, Any], dataset: str) -> dict[str, Tensor]:
        """``{model task: target}`` from a batch's ``label.*`` keys.

        Raises:
            KeyError: a batch label that the dataset's ``tasks`` mapping does not name.
        """
        out = {}
        for key, value in batch.items():
            if not key.startswith("label."):
                continue
            src = key[len("label."):]
            if src not in self.sources:
                raise KeyError(f"dataset {dataset!r}: batch label {src!r} is not mapped to a model task; "
                               f"mapped: {sorted(self.sources)}")
            task = self.sources[src]
            out[task] = self._convert(task, value)
        return out

    def _convert(self, task: str, y: Tensor) -> Tensor:
        kind, index = self.kinds[task], self.index.get(task)
        if kind == "dense" or index is None:
            return y
        if kind == "class":
            table = torch.tensor([float(i) for i in index] + [math.nan])
            valid = ~torch.isnan(y)
            pos = torch.where(valid, y, torch.full_like(y, len(index))).long().clamp(0, len(index))
            return table[pos].to(y.dtype)
        cols = torch.tensor(index)
        picked = y[..., cols.clamp_min(0)]
        picked = torch.where(cols >= 0, picked, torch.full_like(picked, math.nan))
        if kind == "regression":
            picked = self.heads[task].scale_targets(picked)
        return picked


@dataclass
class DatasetBundle:
    """One configured dataset: its name, config, split datasets, task mapping and preprocessing contract.

    ``slice_labels``: record id -> per-slice classes (COVIDx-CT series), for slice-level metrics.
    """

    name: str
    config: DataConfig
    splits: dict[str, Dataset]
    mapping: TaskMapping
    input_kind: str = "image"
    slice_labels: dict[str, list] = field(default_factory=dict)
    contract: Preprocessing | None = None


def init_preprocessing(source: str) -> dict[str, Preprocessing]:
    """``{kind: contract}`` the starting weights of ``init.source`` were trained with (``{}`` for scratch, or when
    the reference declares none)."""
    if source.partition(":")[0] == "scratch":
        return {}
    try:
        return preprocessing_of(source)
    except (FileNotFoundError, KeyError, ValueError) as err:  # init itself reports an unusable source
        log.debug("init.source %s: no preprocessing read (%s)", source, err)
        return {}


def data_kind(cfg: RunConfig, d: DataConfig) -> str:
    """The input kind a dataset feeds (from the levels of the model tasks it labels)."""
    return input_kind([cfg.model.tasks[t].level for t in d.tasks.values()])


def data_contract(cfg: RunConfig, i: int, inherited: Mapping[str, Preprocessing] | None = None) -> Preprocessing:
    """The contract dataset ``i`` is read with: its ``transform`` preset, or, with ``preset: none``, the contract
    of the initial weights for its kind (MedicalNet's for ``medicalnet:``); a preset that differs from the initial
    weights' contract is used, with a warning."""
    d = cfg.data[i]
    kind, t = data_kind(cfg, d), d.transform
    where = f"data[{i}].transform"
    mine = with_slice_size(preset_contract(t.preset, t.size, t.options, where, kind), d.slice_size, kind)
    theirs = contract_for(inherited, kind)
    if theirs is None:
        return mine
    if t.preset == "none":
        log.info("%s: no preset; using the preprocessing %s was trained with", where, cfg.init.source)
        return with_slice_size(theirs, d.slice_size, kind)
    if mine != theirs:
        log.warning("%s (preset %s) overrides the preprocessing the initial weights %s were trained with (%s); the "
                    "weights will see inputs unlike their training data", where, t.preset, cfg.init.source,
                    _describe(theirs))
    return mine


def _describe(c: Preprocessing) -> str:
    return ", ".join(f"{k} {v}" for k, v in (("axes", c.axes), ("normalisation", c.normalisation),
                                             ("input_size", list(c.input_size or [])), ("spacing", c.spacing))
                     if v not in (None, []))


def recorded_preprocessing(bundles: Sequence[DatasetBundle]) -> dict[str, Any]:
    """The ``{kind: contract dict}`` a checkpoint records: per input kind, the contract of its first training
    dataset (else of its first dataset)."""
    out: dict[str, Preprocessing] = {}
    for b in sorted(bundles, key=lambda b: not b.config.train):
        if b.contract is not None:
            out.setdefault(b.input_kind, b.contract)
    return preprocessing_to_dict(out)


def build_transform(contract: Preprocessing, kind: str, train: bool, augment: bool = True) -> Any:
    """The pipeline of ``contract`` for training (``train``: augmented when ``augment``) or evaluation."""
    return build_transforms(contract, "train" if train else "eval", kind, augment)


def _head_kind(head: nn.Module, task_type: str) -> str:
    if getattr(head, "kind", "vector") == "dense":
        return "dense"
    return {"classification": "class", "regression": "regression"}.get(task_type, "vector")


def _mapping(i: int, d: DataConfig, manifest: Any, model: nn.Module, cfg: RunConfig) -> TaskMapping:
    sources, kinds, index, heads = {}, {}, {}, {}
    for src, task in d.tasks.items():
        key = f"data[{i}].tasks.{src}"
        head = model.heads[task]
        kind = _head_kind(head, cfg.model.tasks[task].type)
        kinds[task], heads[task] = kind, head
        if kind == "dense":
            sources[MASK_KEY] = task
            continue
        if src not in manifest.label_names:
            raise ConfigError(f"{key}: dataset {d.kind!r} has no task {src!r}; its tasks: {manifest.tasks}"
                              + (" (a mask feeds only a segmentation task)" if src == MASK_KEY else ""))
        sources[src] = task
        names = manifest.label_names[src]
        if kind == "class":  # dataset class i -> head class index[i]
            index[task] = label_index(head.label_names, names, key, allow_missing=False)
        else:  # head label j <- dataset column index[j]
            index[task] = label_index(names, head.label_names, key, d.ignore_labels)
    return TaskMapping(sources, kinds, index, heads)


def _subsample(manifest: Any, fraction: float, seed: int) -> Any:
    """Keep ``fraction`` of the patients (at least one), chosen with ``seed``; records keep their order."""
    if fraction >= 1.0:
        return manifest
    patients = sorted(manifest.patients())
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    keep = set(rng.permutation(patients)[: max(1, math.ceil(fraction * len(patients)))].tolist())
    return manifest.subset([r for r in manifest if r.patient_id in keep])


def _without_masks(manifest: Any) -> Any:
    if not any("mask" in r.meta for r in manifest):
        return manifest
    return manifest.subset([replace(r, meta={k: v for k, v in r.meta.items() if k != "mask"}) for r in manifest])


def _size(size: Sequence[int] | None, n: int) -> tuple[int, ...] | None:
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    return size * n if len(size) == 1 else size


def _dataset(d: DataConfig, part: Any, split: str, tasks: list[str], seed: int, contract: Preprocessing,
             kind: str) -> Dataset:
    slice_size = _size(d.slice_size, 2)
    if d.cache:
        out = prepare(part, Path(d.cache) / split, transform=build_transform(contract, kind, False),
                      slice_size=slice_size, tasks=tasks, mask_task=MASK_KEY)
        return PreparedDataset(out, seed=seed)
    transform = build_transform(contract, kind, split == "train", d.transform.augment)
    return ManifestDataset(part, transform, tasks=tasks, slice_size=slice_size, seed=seed, mask_task=MASK_KEY)


def _require_labels(i: int, name: str, part: Any, sources: Mapping[str, str]) -> None:
    """A task with no labelled training sample trains its head on nothing (every target masked, loss 0)."""
    for src, task in sources.items():
        if src == MASK_KEY:
            labelled = any(r.meta.get(MASK_KEY) for r in part)
        else:
            labelled = any(bool(torch.isfinite(label_tensor(r.labels.get(src))).any()) for r in part)
        if not labelled:
            raise ConfigError(f"data[{i}] ({name}): task {src!r} (model task {task!r}) has no labelled sample among "
                              f"the {len(part)} training records (every {src!r} label is blank); check the label "
                              f"column, or remove {src!r} from data[{i}].tasks")


def _contracts(cfg: RunConfig, model_contracts: Mapping[str, Preprocessing] | None) -> list[Preprocessing]:
    """Per dataset, the contract it is read with: the run's (:func:`data_contract`), or, when evaluating a model
    that records its own (``model_contracts``), the model's for that kind (a config that differs is logged)."""
    inherited = init_preprocessing(cfg.init.source) if model_contracts is None else {}
    out = []
    for i, d in enumerate(cfg.data):
        mine = data_contract(cfg, i, inherited)
        theirs = contract_for(model_contracts, data_kind(cfg, d))
        if theirs is not None and theirs != mine:
            log.warning("data[%d].transform differs from the preprocessing the model was trained with (%s); "
                        "evaluating with the model's", i, _describe(theirs))
        out.append(theirs if theirs is not None else mine)
    return out


def build_datasets(cfg: RunConfig, model: nn.Module,
                   preprocessing: Mapping[str, Preprocessing] | None = None) -> list[DatasetBundle]:
    """Read, split, subsample and wrap every configured dataset.

    Args:
        cfg: the run config.
        model: the model whose heads the labels are mapped onto.
        preprocessing: ``{kind: contract}`` the model was trained with (evaluation of a trained model); None
            (training) reads each dataset with its preset (:func:`data_contract`).

    Raises:
        ConfigError: an unreadable dataset, a mapping to a task the dataset lacks, labels that do not match the
            head's labels by name, or a task without any labelled training sample; the message names ``data[i]...``.
    """
    bundles = []
    contracts = _contracts(cfg, preprocessing)
    for i, d in enumerate(cfg.data):
        try:
            manifest = open_dataset(d.kind, Path(cfg.data_root).expanduser() / d.root, **d.options)
        except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
            raise ConfigError(f"data[{i}] ({d.kind} at {d.root}, data_root {cfg.data_root}): {err}") from err
        mapping = _mapping(i, d, manifest, model, cfg)
        seed = cfg.train.seed if d.split.seed is None else d.split.seed
        try:
            parts = patient_split(manifest, d.split.fractions, seed=seed, stratify=d.split.stratify,
                                  official=d.split.official)
        except ValueError as err:
            raise ConfigError(f"data[{i}].split: {err}") from err
        parts["train"] = _subsample(parts["train"], d.fraction, seed if d.fraction_seed is None else d.fraction_seed)
        if d.train and len(parts.get("train", [])):
            _require_labels(i, d.name or d.kind, parts["train"], mapping.sources)
        if MASK_KEY not in mapping.sources:  # no segmentation task reads the masks: do not load them
            parts = {s: _without_masks(m) for s, m in parts.items()}
        tasks = [s for s in mapping.sources if s != MASK_KEY]
        kind = data_kind(cfg, d)
        splits = {s: _dataset(d, m, s, tasks, cfg.train.seed, contracts[i], kind) for s, m in parts.items()
                  if len(m)}
        name = d.name or d.kind
        log.info("dataset %s: %s", name, ", ".join(f"{s} {len(m)}" for s, m in parts.items()))
        slice_labels = {r.id: list(r.meta["slice_labels"]) for r in manifest if "slice_labels" in r.meta}
        bundles.append(DatasetBundle(name, d, splits, mapping, kind, slice_labels, contracts[i]))
    return bundles
