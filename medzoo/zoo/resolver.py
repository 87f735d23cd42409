"""The one door from a model reference to a model: :func:`resolve` (and :func:`load`, its tuple form).

Every command and library function that takes a model reference (``medzoo predict``, ``explain``, ``evaluate``,
``export``, the recipes, a run's ``init.source``) resolves it here, so that a catalog name, an export directory, a
training checkpoint and a MedicalNet file mean the same thing everywhere (the kinds are listed in
:mod:`medzoo.zoo.references`). The answer carries what the weights say about themselves: their spec, their
preprocessing contract, and the report of what was loaded.

Example:
    >>> import tempfile, medzoo
    >>> from medzoo.zoo.publish import export_model
    >>> model = medzoo.create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...     "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}})
    >>> out = export_model(model, tempfile.mkdtemp() + "/tiny", name="tiny.cls")
    >>> r = resolve(out)
    >>> r.kind, r.spec.name, r.report.ok
    ('export', 'tiny.cls', True)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medzoo.models import MultiTaskModel
from medzoo.zoo.checkpoint import model_from_checkpoint
from medzoo.zoo.loading import build_from_weights
from medzoo.zoo.medicalnet import from_medicalnet
from medzoo.zoo.preflight import require_complete
from medzoo.zoo.references import parse_ref
from medzoo.zoo.report import LoadReport
from medzoo.zoo.spec import Preprocessing, WeightsSpec

__all__ = ["ResolvedModel", "load", "resolve"]

_PARTIAL = {"parts", "tasks", "num_classes"}  # options that ask for new or fewer heads on purpose

log = logging.getLogger(__name__)


@dataclass
class ResolvedModel:
    """A model reference made into a model.

    Attributes:
        model: the :class:`~medzoo.models.MultiTaskModel`, in eval mode.
        kind: the reference's kind (``zoo``, ``export``, ``checkpoint``, ``medicalnet`` or ``file``).
        source: the catalog name or the path it came from.
        spec: the weights spec (catalog entry or export ``metadata.json``); None for checkpoints and MedicalNet files.
        preprocessing: input kind -> the contract the weights were trained with (the spec's, the one a checkpoint
            recorded, MedicalNet's); empty when the weights declare none. Also ``model.preprocessing``.
        report: what was loaded, adapted, ignored and missing.
        config: the run config stored in a training checkpoint (None for other kinds).
    """

    model: MultiTaskModel
    kind: str
    source: str
    spec: WeightsSpec | None = None
    preprocessing: dict[str, Preprocessing] = field(default_factory=dict)
    report: LoadReport | None = None
    config: dict[str, Any] | None = None


def _from_checkpoint(path: str, opts: dict[str, Any]) -> tuple[MultiTaskModel, LoadReport, dict[str, Any]]:
    if opts:
        raise TypeError(f"{path}: a training checkpoint rebuilds its own model; options {sorted(opts)} do not apply")
    if Path(path).suffix == ".safetensors":
        raise ValueError(f"{path}: a weight file alone does not say how to build the model; use an export directory, "
                         "a catalog entry or a training checkpoint, or build the model and call load_pretrained()")
    model, config = model_from_checkpoint(path)
    report = LoadReport(source=path, loaded=list(model.state_dict()))
    return model, report, config


def resolve(ref: str | os.PathLike, **opts: Any) -> ResolvedModel:
    """Make a model reference into a model.

    Args:
        ref: ``NAME`` / ``zoo:NAME`` (catalog entry), an export directory, ``ckpt:PATH`` or a checkpoint file,
            ``medicalnet:PATH``.
        **opts: for catalog entries and export directories the options of
            :func:`~medzoo.zoo.loading.build_from_weights` (``parts``, ``tasks``, ``in_channels``,
            ``allow_unpinned``, ``catalog``, ``offline``...); for MedicalNet files those of
            :func:`~medzoo.zoo.medicalnet.from_medicalnet` (``output_stride``, ``seg_task``, encoder options);
            none for checkpoints.

    Returns:
        A :class:`ResolvedModel`. Its report is also ``model.load_report``.

    Raises:
        FileNotFoundError: a path that names nothing usable.
        CheckpointError: an unreadable checkpoint, or a file that is not one.
        ValueError: a weight file that cannot say how to build its model, or options that contradict the weights.
        IncompleteModelError: without ``parts``/``tasks``/``num_classes``, a head (or the aggregator) that the
            weights did not fill: missing from them, or dropped because its labels or shapes differ.

    Example:
        >>> r = resolve("resnet18.medicalnet23", allow_unpinned=True)  # doctest: +SKIP
        >>> r.model.encoder.output_stride, r.preprocessing["volume"].axes  # doctest: +SKIP
    """
    parsed = parse_ref(ref)
    spec, config = None, None
    if parsed.kind in ("zoo", "export"):
        model, spec, report = build_from_weights(parsed, **opts)
        if not _PARTIAL & set(opts):  # a model as published must be whole: a random head would predict silently
            require_complete(report, parsed.text)
    elif parsed.kind == "medicalnet":
        model = from_medicalnet(parsed.target, **opts).eval()
        report = model.load_report
    else:
        model, report, config = _from_checkpoint(parsed.target, opts)
    model.load_report = report  # users read the report from the model (README, hubconf)
    contracts = dict(spec.preprocessing) if spec is not None else dict(getattr(model, "preprocessing", None) or {})
    model.preprocessing = _fit_channels(contracts, model, parsed.text)
    return ResolvedModel(model, parsed.kind, parsed.target, spec, model.preprocessing, report, config)


def _fit_channels(contracts: dict[str, Preprocessing], model: MultiTaskModel, who: str) -> dict[str, Preprocessing]:
    """Contracts whose ``channels`` match the loaded stem (``in_channels`` may be adapted at load time): a grey
    image feeds a 1-channel stem directly, and per-channel statistics become their average."""
    in_ch = int(getattr(model.encoder, "in_channels", 1) or 1)
    out = {}
    for kind, c in contracts.items():
        if c.dims == 2 and c.channels != in_ch:
            stats = {}
            if c.mean is not None and len(c.mean) not in (1, in_ch):
                stats = {"mean": [round(sum(c.mean) / len(c.mean), 3)], "std": [round(sum(c.std) / len(c.std), 3)]}
            log.info("%s: %s contract for %d channels, the model's stem takes %d; channels adapted%s", who, kind,
                     c.channels, in_ch, " (mean/std averaged)" if stats else "")
            c = c.replace(channels=in_ch, **stats)
        out[kind] = c
    return out


def load(ref: str | os.PathLike, **opts: Any) -> tuple[MultiTaskModel, dict[str, Preprocessing]]:
    """``(model, {kind: preprocessing contract})`` of a model reference: :func:`resolve` as a tuple.

    The model carries the :class:`~medzoo.zoo.report.LoadReport` as ``model.load_report``.

    Example:
        >>> model, pre = load("resnet18.medicalnet23", allow_unpinned=True)  # doctest: +SKIP
        >>> model.encoder(torch.zeros(1, 1, 32, 64, 64))[-1].shape  # doctest: +SKIP
    """
    resolved = resolve(ref, **opts)
    return resolved.model, resolved.preprocessing
