"""Export a model to an export directory, and publish an export directory as a catalog entry.

``export_model`` turns a :class:`~medzoo.models.MultiTaskModel` into the weights spec (architecture, parts, tasks with
labels, thresholds and ranges, preprocessing) and hands it to :func:`medzoo.zoo.export.write_export_dir`, the one writer
of export directories. An encoder-only export keeps bare encoder key names (``conv1.weight``), as MONAI's and
MedicalNet's own files do, so that it loads into either.

``publish`` reads an export directory and adds a catalog entry whose files (the weights and ``config.yaml``, plus
``model.ts``, ``model.onnx`` and its ``model.onnx.data`` when the export has them) carry the sha256 and size computed
here, at ``URL/<file>``; :func:`medzoo.zoo.load` then rebuilds the exact model, and ``download_all`` fetches every
file into one folder, where the ONNX file finds its data.

Example:
    >>> import tempfile
    >>> from medzoo.models import create_model
    >>> model = create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...                       "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}})
    >>> d = export_model(model, tempfile.mkdtemp() + "/exp", name="tiny.demo")
    >>> spec = publish(d, "tiny.demo", d.as_uri() + "/", catalog=d.parent / "catalog.yaml")
    >>> [f.part for f in spec.files]
    ['all', 'config']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medzoo.config import to_dict
from medzoo.data.contract import parse_preprocessing, preprocessing_to_dict
from medzoo.heads.base import HEADS
from medzoo.zoo.cache import cache_root
from medzoo.zoo.catalog import add_entry
from medzoo.zoo.export import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, is_export_dir, sha256_file, write_export_dir
from medzoo.zoo.formats import ONNX_FILE, TS_FILE, onnx_files
from medzoo.zoo.spec import WeightsSpec

__all__ = ["export_model", "model_metadata", "task_spec", "publish", "EXPORT_PARTS"]

log = logging.getLogger(__name__)

EXPORT_PARTS = ("encoder", "all")
_SPEC_TYPE = {"classification": "classification", "multilabel": "multilabel", "regression": "regression",
              "segmentation": "segmentation", "medicalnet_seg": "segmentation"}


def task_spec(head: torch.nn.Module, head_type: str, level: str) -> dict[str, Any]:
    """The :class:`~medzoo.zoo.spec.TaskSpec` dict of one head: type, labels, level, thresholds, ranges, head."""
    kind = _SPEC_TYPE.get(head_type)
    if kind is None:
        raise ValueError(f"head type {head_type!r} has no weights-spec task type; known: {sorted(_SPEC_TYPE)}")
    out: dict[str, Any] = {"type": kind, "labels": list(head.label_names), "level": level, "head": head_type}
    if kind == "multilabel":
        out["thresholds"] = {lab: float(t) for lab, t in zip(head.label_names, head.thresholds.tolist())}
    if kind == "regression":
        lows, spans, bounded = head.low.tolist(), head.span.tolist(), head.bounded.tolist()
        ranges = {lab: [lo, lo + sp] for lab, lo, sp, b in zip(head.label_names, lows, spans, bounded) if b}
        out["ranges"] = ranges or None
    return out


def model_metadata(model: Any, *, name: str, parts: str = "all", version: str = "1",
                   preprocessing: Mapping[str, Any] | None = None, license: str = "unknown",
                   source: str = "local export", citation: str = "none", description: str | None = None,
                   metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The weights spec of ``model`` (a dict that :class:`WeightsSpec` validates once files are filled in).

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` built by ``create_model`` (it has ``model.config``).
        name: the entry name (lowercase dotted words).
        parts: ``"encoder"`` (the encoder only) or ``"all"`` (encoder, heads and aggregator).
        preprocessing: ``{kind: contract}`` (or one contract); default: ``model.preprocessing``.
        version, license, source, citation, description, metrics: spec fields.
    """
    if parts not in EXPORT_PARTS:
        raise ValueError(f"parts must be one of {list(EXPORT_PARTS)}, got {parts!r}")
    config = getattr(model, "config", None)
    tasks = {}
    if parts == "all":
        types = {t: c.type for t, c in config.tasks.items()} if config is not None else {}
        for task, head in model.heads.items():
            head_type = types.get(task) or _guess_type(head)
            tasks[task] = task_spec(head, head_type, model.task_levels[task])
    spec_parts = ["encoder"]
    if parts == "all":
        spec_parts += ["aggregator"] if model.aggregator is not None else []
        spec_parts += ["heads"] if tasks else []
    meta = {"name": name, "version": version, "description": description,
            "architecture": model.encoder.architecture(), "parts": spec_parts, "tasks": tasks,
            "preprocessing": _contracts(model, preprocessing), "metrics": dict(metrics or {}),
            "license": license, "source": source, "citation": citation}
    return {k: v for k, v in meta.items() if v is not None}


def _contracts(model: Any, preprocessing: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The contracts to record: the ones given, else the ones the model carries (``model.preprocessing``, set by
    :func:`medzoo.zoo.resolve` and by reading a training checkpoint), so that every export records what its weights
    were trained on."""
    contracts = parse_preprocessing(preprocessing if preprocessing else getattr(model, "preprocessing", None))
    return preprocessing_to_dict(contracts) or None


def _guess_type(head: torch.nn.Module) -> str:
    for type_name in HEADS.list():
        if type(head) is HEADS.get(type_name):
            return type_name
    raise ValueError(f"head {type(head).__name__} is not a registered head type")


def export_model(model: Any, out_dir: str | os.PathLike, *, name: str, parts: str = "all",
                 overwrite: bool = False, **meta: Any) -> Path:
    """Write ``model`` as an export directory (``model.safetensors``, ``config.yaml``, ``metadata.json``, card).

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` built by ``create_model``.
        out_dir: the target folder (must not exist unless ``overwrite``).
        name: the entry name recorded in the metadata.
        parts: ``"encoder"`` (bare encoder keys, no heads in the config) or ``"all"``.
        overwrite: replace an existing folder.
        **meta: further :func:`model_metadata` fields (version, preprocessing, license, ...).

    Returns:
        The export folder; ``create_model(folder)`` (``"all"``) or ``medzoo.zoo.load(folder)`` rebuilds the model.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("export_model needs a model built by create_model (model.config holds its config)")
    metadata = model_metadata(model, name=name, parts=parts, **meta)
    config_dict = to_dict(config)
    if parts == "encoder":
        config_dict = {**config_dict, "tasks": {}, "aggregator": None}
        state = model.encoder.state_dict()
    else:
        state = model.state_dict()
    return write_export_dir(out_dir, state_dict=state, config=config_dict, metadata=metadata, overwrite=overwrite)


def _file_url(base: str, filename: str) -> str:
    if base.endswith("/" + WEIGHTS_FILE):
        base = base[: -len(WEIGHTS_FILE)]
    return base + ("" if base.endswith("/") else "/") + filename


def publish(export_dir: str | os.PathLike, name: str, url: str, *, catalog: str | os.PathLike | None = None,
            version: str | None = None, mirrors: tuple[str, ...] = (), replace: bool = False) -> WeightsSpec:
    """Add a catalog entry for an export directory, with the sha256 and size computed from its files.

    Args:
        export_dir: a folder written by :func:`export_model` / ``medzoo export``.
        name: the catalog entry name.
        url: the folder the export's files are (or will be) served from (``https://host/zoo/NAME/``,
            ``file:///...``); a url ending in ``model.safetensors`` names the weights file itself. The weights are at
            ``URL/model.safetensors``, the config at ``URL/config.yaml``, exported formats beside them.
        catalog: the catalog YAML to add to (default: ``$MEDZOO_HOME/catalogs/published.yaml``, read by every
            catalog lookup).
        version: the entry version (default: the export's).
        mirrors: further folder urls, tried in order.
        replace: replace an entry of the same name.

    Returns:
        The validated :class:`WeightsSpec` that was added.
    """
    folder = Path(export_dir)
    if not is_export_dir(folder) or not (folder / METADATA_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not an export directory (expected {WEIGHTS_FILE}, {CONFIG_FILE} and "
                                f"{METADATA_FILE}); write one with `medzoo export`")
    meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    recorded = next((f for f in meta.get("files", []) if f.get("url") == WEIGHTS_FILE), {})
    held = recorded.get("part", "all")
    extras = [(p.name, "onnx", held) for p in onnx_files(folder / ONNX_FILE)] if (folder / ONNX_FILE).is_file() else []
    extras += [(TS_FILE, "torchscript", held)] if (folder / TS_FILE).is_file() else []
    files = []
    for filename, fmt, part in ((WEIGHTS_FILE, "safetensors", held), (CONFIG_FILE, "yaml", "config"), *extras):
        path = folder / filename
        sha = sha256_file(path)
        if filename == WEIGHTS_FILE and recorded.get("sha256") not in (None, sha):
            raise ValueError(f"{path}: sha256 {sha} differs from {folder / METADATA_FILE} ({recorded['sha256']}); "
                             "the export was changed after it was written")
        files.append({"url": _file_url(url, filename), "sha256": sha, "size": path.stat().st_size, "format": fmt,
                      "part": part, "mirrors": [_file_url(m, filename) for m in mirrors]})
    entry = {**meta, "name": name, "files": files}
    if version is not None:
        entry["version"] = version
    spec = WeightsSpec.from_dict(entry, where=f"publish {folder}")
    target = Path(catalog) if catalog is not None else cache_root() / "catalogs" / "published.yaml"
    add_entry(target, spec, replace=replace)
    log.info("published %s as %r in %s", folder, name, target)
    return spec
