"""Checks made before a model is built from weights, and after it is loaded for prediction.

* :func:`check_config_against_spec`: the ``config.yaml`` that builds an export (or catalog) model must describe the
  architecture and tasks its ``metadata.json`` spec records: an edited label order or an added task would otherwise
  give a head that the weights do not fill.
* :func:`preflight_model`: the model is first built on the ``meta`` device (no memory), its parameter count is held
  to :data:`MAX_MODEL_PARAMETERS`, and its tensor shapes are compared with those the weight files declare, so that a
  571-byte config edit cannot allocate gigabytes before the architecture check fails.
* :func:`require_complete`: a model loaded to predict, evaluate or explain must have every head filled from the
  weights; a head left at its random initialisation (missing, or dropped because its labels or shape differ) is an
  error naming the heads.

Example:
    >>> preflight_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}, "tasks": {}}, {}, "demo")
    >>> preflight_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}, "tasks": {}},
    ...                 {"encoder.conv1.weight": (16, 1, 7, 7, 7)}, "demo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: demo: the config builds a model whose shapes differ from the weights': encoder.conv1.weight ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from medzoo.models import create_model
from medzoo.zoo.report import LoadReport
from medzoo.zoo.spec import WeightsSpec

__all__ = ["MAX_MODEL_PARAMETERS", "IncompleteModelError", "check_config_against_spec", "preflight_model",
           "require_complete", "weight_shapes"]

#: Largest model built from a config (about 2.4 GB of float32); the largest shipped model has ~280 M parameters.
MAX_MODEL_PARAMETERS = 600_000_000
_STEM_KEYS = ("encoder.conv1.weight", "encoder.features.conv0.weight")  # adapted to in_channels on load


class IncompleteModelError(ValueError):
    """A head of the model was not filled from the weights, so its outputs would be random."""


def _labels(task: Mapping[str, Any]) -> list[str] | int | None:
    """A config task's output names (labels, or regression output names), else its class count."""
    outputs = task.get("outputs")
    if task.get("labels"):
        return [str(x) for x in task["labels"]]
    if outputs:
        return [str(x) for x in (outputs if isinstance(outputs, (list, tuple)) else outputs.keys())]
    return task.get("num_classes")


def check_config_against_spec(config: Mapping[str, Any], spec: WeightsSpec, where: str) -> None:
    """Refuse a model config whose encoder or tasks contradict the weights spec (``metadata.json``).

    Args:
        config: the model config (``config.yaml``) that would build the model.
        spec: the weights spec recorded with the weights.
        where: the config file, for the message.

    Raises:
        ValueError: naming each contradiction (key, the config's value, the spec's value).
    """
    enc, arch = config.get("encoder") or {}, spec.architecture
    diffs = []
    for key, mine, theirs in (("name", enc.get("name"), arch.encoder), ("in_channels", enc.get("in_channels"),
                              arch.in_channels), ("output_stride", enc.get("output_stride"), arch.output_stride)):
        if mine is not None and mine != theirs:
            diffs.append(f"encoder.{key}: {mine!r} here, {theirs!r} in the spec")
    widths = enc.get("widths")
    if widths is not None and arch.widths is not None and list(widths) != list(arch.widths):
        diffs.append(f"encoder.widths: {list(widths)} here, {list(arch.widths)} in the spec")
    if any(p.split(".")[0] == "heads" for p in spec.parts):
        diffs += _task_diffs(config.get("tasks") or {}, spec)
    if diffs:
        raise ValueError(f"{where} contradicts the weights spec of {spec.name!r} (metadata.json): "
                         + "; ".join(diffs) + ". The weights were trained for the spec; restore the config")


def _task_diffs(tasks: Mapping[str, Any], spec: WeightsSpec) -> list[str]:
    diffs = []
    extra, lacking = sorted(set(tasks) - set(spec.tasks)), sorted(set(spec.tasks) - set(tasks))
    if extra:
        diffs.append(f"tasks {extra} are not in the spec, so no weights exist for their heads")
    if lacking:
        diffs.append(f"the spec's tasks {lacking} are missing")
    for name in sorted(set(tasks) & set(spec.tasks)):
        task, want = tasks[name] or {}, spec.tasks[name]
        got = _labels(task)
        if isinstance(got, int) and got != len(want.labels) or isinstance(got, list) and got != list(want.labels):
            diffs.append(f"tasks.{name} labels: {got} here, {list(want.labels)} in the spec")
        if task.get("level") not in (None, want.level):
            diffs.append(f"tasks.{name}.level: {task['level']!r} here, {want.level!r} in the spec")
        if task.get("type") not in (None, want.type, want.head):
            diffs.append(f"tasks.{name}.type: {task['type']!r} here, {want.head or want.type!r} in the spec")
    return diffs


def weight_shapes(files: Sequence[tuple[Path, str, str]]) -> dict[str, tuple[int, ...]]:
    """Model-level key -> shape of every tensor in the safetensors ``files`` (``(path, format, part)``), read from
    their headers only (no tensor data); other formats are skipped."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path, fmt, part in files:
        if fmt != "safetensors":
            continue
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own SafetensorError for a bad header
            raise ValueError(f"{path}: not a valid safetensors file ({exc})") from None
        model_level = any(k.startswith(("encoder.", "heads.", "aggregator.")) for k in found)
        bare = part == "encoder" or (part == "unknown" and not model_level)
        shapes.update({("encoder." + k if bare else k): v for k, v in found.items()})
    return shapes


def preflight_model(config: Any, shapes: Mapping[str, Sequence[int]], source: str, *,
                    max_parameters: int | None = None) -> None:
    """Build ``config`` on the meta device and refuse it before any memory is spent on it.

    Args:
        config: what :func:`~medzoo.models.create_model` takes.
        shapes: model-level key -> shape the weights hold (keys the model lacks are ignored, and so are stem
            channels, which loading adapts).
        source: named in the messages.
        max_parameters: the parameter budget (default: :data:`MAX_MODEL_PARAMETERS`, read at each call).

    Raises:
        ValueError: more parameters than the budget, or a tensor whose shape differs from the weights'.
    """
    with torch.device("meta"):
        meta = create_model(config)
    own = meta.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(shapes[k])) for k, v in own.items() if k in shapes
                  and tuple(v.shape) != tuple(shapes[k])
                  and not (k in _STEM_KEYS and _same_but_channels(v.shape, shapes[k]))]
    if mismatched:
        shown = ", ".join(f"{k} {mine} (weights {theirs})" for k, mine, theirs in mismatched[:3])
        raise ValueError(f"{source}: the config builds a model whose shapes differ from the weights': {shown}"
                         f"{f' and {len(mismatched) - 3} more' if len(mismatched) > 3 else ''}; refused before "
                         "building it")
    count = sum(p.numel() for p in meta.parameters())
    max_parameters = MAX_MODEL_PARAMETERS if max_parameters is None else max_parameters
    if count > max_parameters:
        raise ValueError(f"{source}: the config builds a model of {count:,} parameters, over the budget of "
                         f"{max_parameters:,} (preflight.MAX_MODEL_PARAMETERS); refused before building it")


def _same_but_channels(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and a[0] == b[0] and tuple(a[2:]) == tuple(b[2:])


def require_complete(report: LoadReport, source: str) -> None:
    """Refuse a load that left heads (or the aggregator) at their random initialisation, naming them and why.

    Raises:
        IncompleteModelError: some ``heads.<task>`` or ``aggregator`` parameter was missing from the weights, or
            the weights' tensors for it were dropped (different labels or shapes).
    """
    untrained: dict[str, str] = {}
    for key in report.missing:
        if key.startswith(("heads.", "aggregator.")) and not key.endswith("num_batches_tracked"):
            part = ".".join(key.split(".")[:2]) if key.startswith("heads.") else "aggregator"
            untrained.setdefault(part, "not in the weights")
    for key, why in report.ignored.items():
        if key.startswith(("heads.", "aggregator.")):
            part = ".".join(key.split(".")[:2]) if key.startswith("heads.") else "aggregator"
            untrained[part] = f"the weights' tensors were dropped: {why}"
    if untrained:
        shown = "; ".join(f"{part}: {why}" for part, why in sorted(untrained.items()))
        raise IncompleteModelError(f"{source}: refusing a model whose heads would run untrained (randomly "
                                   f"initialised): {shown}. Load it with parts=['encoder'] or tasks=... to "
                                   "fine-tune new heads")
