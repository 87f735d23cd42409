"""Loading weights: building the model a weights spec describes, and loading parts of weights into a model.

* :func:`build_from_weights` builds the model a catalog entry or export directory describes (head sizes and labels
  come from the spec), downloads and verifies its files and loads them. Arguments that contradict the spec are
  errors; ``in_channels`` and ``output_stride`` are adapted and reported, because the weights still fit.
  :func:`medzoo.zoo.resolve` (and :func:`medzoo.zoo.load`) call it for ``zoo`` and ``export`` references.
* :func:`load_pretrained` loads parts of a catalog entry, an export directory, a MedicalNet file, a training
  checkpoint (``ckpt:PATH``) or a weight file into an existing model: an architecture mismatch (depth, block,
  shortcut, widths) is an error; the stem is adapted to the model's ``in_channels``; a different ``output_stride`` is
  reported as a geometry change; heads are matched by name, and a head whose size or labels differ is dropped by
  name, with a report.

Weights are read with safetensors or ``torch.load(weights_only=True)`` only, so no file can run code; MedicalNet
files go through :mod:`medzoo.zoo.medicalnet`, torchvision ImageNet files through :mod:`medzoo.zoo.imagenet` and
TorchXRayVision files through :mod:`medzoo.zoo.txv` (an allow-listed unpickler). Encoder-only files hold bare encoder
keys (``conv1.weight``), as MONAI's and MedicalNet's own files do, so that they load into either.

Example:
    >>> from medzoo.models import create_model
    >>> model = create_model({"encoder": {"name": "resnet18", "in_channels": 1}, "tasks": {}})
    >>> report = load_pretrained(model, "resnet18.medicalnet23")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medzoo.config import ConfigError, read_text_file, safe_load_yaml
from medzoo.models import MultiTaskModel, create_model
from medzoo.zoo.apply_weights import load_parts
from medzoo.zoo.catalog import get_entry
from medzoo.zoo.checkpoint import load_checkpoint_weights
from medzoo.zoo.download import download
from medzoo.zoo.export import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, runtime_versions, sha256_file
from medzoo.zoo.preflight import check_config_against_spec, preflight_model, weight_shapes
from medzoo.zoo.references import ModelRef, parse_ref
from medzoo.zoo.report import LoadReport
from medzoo.zoo.spec import FileSpec, TaskSpec, WeightsSpec

__all__ = ["ALL_PARTS", "WEIGHT_FORMATS", "build_from_weights", "check_versions", "load_pretrained",
           "spec_model_config"]

log = logging.getLogger(__name__)

WEIGHT_FORMATS = ("safetensors", "torch-state-dict", "medicalnet-pth", "torchvision-resnet", "torchxrayvision")
ALL_PARTS = ("encoder", "aggregator", "heads")
_FIXED_TASK_KEYS = ("type", "level", "num_classes", "labels", "outputs", "decoder_channels")
_DOWNLOAD_KW = ("catalog", "cache_dir", "offline", "progress")
_DEFAULT_HEAD = {"classification": "classification", "multilabel": "multilabel", "regression": "regression",
                 "segmentation": "segmentation"}


@dataclass
class _Source:
    """A resolved weights reference: its spec (if any), model config (if any) and weight files."""

    name: str
    spec: WeightsSpec | None
    config: dict[str, Any] | None
    files: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, format, part)


# ----------------------------------------------------------------------------------------------- resolving
def _source(ref: ModelRef, *, allow_unpinned: bool, opts: Mapping[str, Any]) -> _Source:
    """Find the spec, config and (verified, downloaded) weight files of a parsed reference."""
    if ref.kind == "zoo":
        return _from_catalog(ref.target, allow_unpinned, opts)
    if ref.kind == "export":
        return _from_export_dir(Path(ref.target))
    if ref.kind == "medicalnet":
        return _Source(ref.text, None, None, [(Path(ref.target), "medicalnet-pth", "encoder")])
    path = Path(ref.target)
    if not path.is_file():
        raise FileNotFoundError(f"{ref.text}: no such weight file")
    fmt = "safetensors" if path.suffix == ".safetensors" else "torch-state-dict"
    return _Source(str(path), None, None, [(path, fmt, "unknown")])


def _from_export_dir(path: Path) -> _Source:
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: export directory without {METADATA_FILE} (the weights spec)")
    try:
        meta = json.loads(read_text_file(meta_path, what="export metadata"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None
    spec = WeightsSpec.from_dict(meta, where=str(meta_path))
    weights = next((f for f in spec.files if f.name == WEIGHTS_FILE), None)
    if weights is None:
        raise ValueError(f"{meta_path}: key 'files': no entry for {WEIGHTS_FILE}")
    _check_sha(path / WEIGHTS_FILE, weights, meta_path)
    recorded = next((f for f in spec.files if f.name == CONFIG_FILE), None)
    if recorded is not None:  # exports made before config.yaml was hashed carry no entry: the cross-check remains
        _check_sha(path / CONFIG_FILE, recorded, meta_path)
    config = _read_config(path / CONFIG_FILE)
    check_config_against_spec(config, spec, str(path / CONFIG_FILE))  # before anything is built from it
    return _Source(str(path), spec, config, [(path / WEIGHTS_FILE, "safetensors", weights.part)])


def _check_sha(path: Path, recorded: FileSpec, meta_path: Path) -> None:
    if recorded.sha256 is not None and sha256_file(path) != recorded.sha256:
        raise ValueError(f"{path}: sha256 differs from {meta_path} ({recorded.sha256}); the export was changed or "
                         "corrupted")


def _read_config(path: Path) -> dict[str, Any]:
    """A model config file: a regular file, capped in size, nesting and alias expansion; errors name it."""
    try:
        config = safe_load_yaml(read_text_file(path, what="model config")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    return config


def _from_catalog(name: str, allow_unpinned: bool, opts: Mapping[str, Any]) -> _Source:
    spec = get_entry(name, catalog=opts.get("catalog"))
    dl = {k: opts[k] for k in ("cache_dir", "offline", "progress") if k in opts}
    files, config = [], None
    for f in spec.files:
        if f.format in WEIGHT_FORMATS:
            files.append((download(spec, part=f.part, allow_unpinned=allow_unpinned, **dl), f.format, f.part))
        elif f.part == "config":
            path = download(spec, part="config", allow_unpinned=allow_unpinned, **dl)
            config = _read_config(path)
            check_config_against_spec(config, spec, f"{name} ({path})")
    if not files:
        raise ValueError(f"weights {name!r}: no file of format {list(WEIGHT_FORMATS)} in the catalog entry")
    return _Source(name, spec, config, files)


# ----------------------------------------------------------------------------------------------- spec -> config
def _task_config(name: str, task: TaskSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": task.head or _DEFAULT_HEAD[task.type], "level": task.level}
    if task.type == "regression":
        ranges = task.ranges or {}
        out["outputs"] = {lab: list(ranges[lab]) if lab in ranges else None for lab in task.labels}
    else:
        out["labels"] = list(task.labels)
    if task.type == "multilabel" and task.thresholds:
        out["thresholds"] = dict(task.thresholds)
    return out


def spec_model_config(spec: WeightsSpec) -> dict[str, Any]:
    """A model config dict (``create_model`` input) built from a spec's architecture and tasks.

    Example:
        >>> from medzoo.zoo.catalog import get_entry
        >>> spec_model_config(get_entry("resnet18.medicalnet23"))["encoder"]["output_stride"]
        8
    """
    arch = spec.architecture
    options = {k: v for k, v in (("shortcut", arch.shortcut), ("bias_downsample", arch.bias_downsample))
               if v is not None}
    encoder = {"name": arch.encoder, "in_channels": arch.in_channels, "output_stride": arch.output_stride,
               "widths": list(arch.widths) if arch.widths else None, "options": options}
    return {"encoder": encoder, "tasks": {t: _task_config(t, s) for t, s in spec.tasks.items()}}


def _normalise_parts(parts: str | Sequence[str] | None, spec: WeightsSpec | None, default: Sequence[str]) -> set[str]:
    parts = list(default) if parts is None else ([parts] if isinstance(parts, str) else list(parts))
    have = set(spec.parts) if spec is not None else set(ALL_PARTS)
    out: set[str] = set()
    for p in parts:
        if p == "all":
            out |= {q for q in ALL_PARTS if q in have or (q == "heads" and any(h.startswith("heads.") for h in have))}
            continue
        head, _, task = p.partition(".")
        if head not in ALL_PARTS or (task and head != "heads"):
            raise ValueError(f"parts: expected 'encoder', 'heads', 'heads.<task>', 'aggregator' or 'all', got {p!r}")
        if spec is not None and p not in have and head not in have:
            raise ValueError(f"weights {spec.name!r} hold parts {sorted(have)}, not {p!r}")
        out.add(p)
    return out


def _merge_task(name: str, spec_cfg: Mapping[str, Any], request: Mapping[str, Any], who: str) -> dict[str, Any]:
    """The spec's task config with the request applied; a request that changes the head's shape is an error."""
    request = dict(request)
    if "num_classes" in request and request["num_classes"] is not None:
        names = spec_cfg.get("labels") or spec_cfg.get("outputs")
        size = len(names) if names else spec_cfg.get("num_classes")
        if int(request.pop("num_classes")) != size:
            raise ValueError(f"tasks.{name}.num_classes: weights {who!r} define {size} outputs "
                             f"{list(names or [])} for task {name!r}; a "
                             "different head size contradicts the spec (load only the encoder with parts=['encoder']"
                             " and name the new task differently)")
    out = dict(spec_cfg)
    for key, value in request.items():
        if key in _FIXED_TASK_KEYS and key in spec_cfg and value is not None and value != spec_cfg[key]:
            raise ValueError(f"tasks.{name}.{key}: weights {who!r} define {spec_cfg[key]!r}, the request "
                             f"{value!r} contradicts the spec")
        out[key] = value
    return out


def _select_tasks(spec_tasks: dict[str, dict], tasks: Any, heads_loaded: bool, who: str) -> dict[str, dict]:
    if tasks is None:
        return dict(spec_tasks) if heads_loaded else {}
    if isinstance(tasks, str) or (isinstance(tasks, Sequence) and not isinstance(tasks, Mapping)):
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [t for t in names if t not in spec_tasks]
        if unknown:
            raise KeyError(f"tasks {unknown} are not in weights {who!r}; its tasks are {sorted(spec_tasks)} (pass a "
                           "mapping task -> config to add new heads)")
        return {t: spec_tasks[t] for t in names}
    if not isinstance(tasks, Mapping):
        raise TypeError(f"tasks must be None, a list of task names or a mapping task -> config, got {tasks!r}")
    out = {}
    for name, request in tasks.items():
        request = dict(request or {})
        out[name] = _merge_task(name, spec_tasks[name], request, who) if name in spec_tasks else request
    return out


def _apply_kwargs(config: dict[str, Any], kw: dict[str, Any], who: str) -> dict[str, Any]:
    """Apply ``load(**kw)``: adapt in_channels/output_stride, refuse encoder changes that contradict the spec."""
    encoder = dict(config.get("encoder") or {})
    for key in ("in_channels", "output_stride"):
        if kw.get(key) is not None:
            encoder[key] = kw.pop(key)
    for key, target in (("encoder", "name"), ("widths", "widths")):
        value = kw.pop(key, None)
        current = encoder.get(target)
        if value is not None and (list(value) if key == "widths" else value) != current:
            raise ValueError(f"{key}={value!r} contradicts weights {who!r}, built for {target} {current!r}")
    for key in ("shortcut", "bias_downsample"):
        value = kw.pop(key, None)
        current = (encoder.get("options") or {}).get(key)
        if value is not None and current is not None and value != current:
            raise ValueError(f"{key}={value!r} contradicts weights {who!r}, built with {key} {current!r}")
    if kw:
        raise TypeError(f"load() got unexpected argument(s) {sorted(kw)}; accepted: parts, tasks, num_classes, "
                        f"aggregator, in_channels, output_stride, encoder, widths, shortcut, bias_downsample, "
                        f"allow_unpinned, {', '.join(_DOWNLOAD_KW)}")
    return {**config, "encoder": encoder}


def _build_config(src: _Source, parts: set[str], tasks: Any, kw: dict[str, Any]) -> dict[str, Any]:
    base = copy.deepcopy(src.config) if src.config else (spec_model_config(src.spec) if src.spec else None)
    if base is None:
        raise ValueError(f"{src.name}: a weight file alone does not say how to build the model; use an export "
                         "directory or catalog entry, or build the model and call load_pretrained()")
    heads_loaded = any(p.split(".")[0] == "heads" for p in parts)
    spec_tasks = base.get("tasks") or {}
    num_classes = kw.pop("num_classes", None)
    if num_classes is not None:
        chosen = list(tasks) if tasks is not None else list(spec_tasks)
        if len(chosen) != 1:
            raise ValueError(f"num_classes needs exactly one task; weights {src.name!r} have tasks {sorted(chosen)}"
                             " (use tasks={name: {'num_classes': ...}})")
        tasks = {chosen[0]: {**dict((tasks or {}).get(chosen[0], {}) if isinstance(tasks, Mapping) else {}),
                             "num_classes": num_classes}}
    selected = _select_tasks(spec_tasks, tasks, heads_loaded, src.name)
    aggregator = kw.pop("aggregator", None)
    if isinstance(aggregator, str):
        aggregator = {"name": aggregator}
    if aggregator is not None and "aggregator" in parts and base.get("aggregator") not in (None, aggregator):
        raise ValueError(f"aggregator={aggregator!r} contradicts weights {src.name!r}, which hold the aggregator "
                         f"{base['aggregator']!r} (pass parts without 'aggregator' to replace it)")
    if aggregator is None and "aggregator" not in parts and not any(
            c.get("level") == "series" for c in selected.values()):
        base["aggregator"] = None
    elif aggregator is not None:
        base["aggregator"] = aggregator
    config = _apply_kwargs(base, kw, src.name)
    config["tasks"] = selected
    return config


# ----------------------------------------------------------------------------------------------- versions
def check_versions(recorded: Mapping[str, str], source: str) -> list[str]:
    """Warn (``UserWarning``) for each of medzoo/torch/monai whose major version differs from the recorded one."""
    now = runtime_versions()
    msgs = []
    for pkg in ("medzoo", "torch", "monai"):
        old, new = recorded.get(pkg), now.get(pkg)
        if old and new and old.split(".")[0] != new.split(".")[0]:
            msgs.append(f"{source}: made with {pkg} {old}, running {pkg} {new} (major version differs); check the "
                        "outputs before trusting them")
    for msg in msgs:
        warnings.warn(msg, UserWarning, stacklevel=3)
    return msgs


# ----------------------------------------------------------------------------------------------- public API
def build_from_weights(
    ref: ModelRef, *, parts: str | Sequence[str] | None = None, tasks: Any = None, allow_unpinned: bool = False,
    **kw: Any,
) -> tuple[MultiTaskModel, WeightsSpec | None, LoadReport]:
    """Build the model a catalog entry or export directory describes and load its weights.

    Args:
        ref: a parsed ``zoo`` or ``export`` reference (:func:`~medzoo.zoo.references.parse_ref`).
        parts: the parts to load (default: all the weights hold): ``encoder``, ``heads``, ``heads.<task>``,
            ``aggregator`` or ``all``.
        tasks: ``None`` (the spec's tasks, when heads are loaded), a list of the spec's task names, or a mapping
            task -> config: a spec task's size, labels, type and level come from the spec (a different request is an
            error); other names add new heads (freshly initialised, reported as missing).
        allow_unpinned: download files whose sha256 the catalog does not pin (see :mod:`medzoo.zoo.download`).
        **kw: ``in_channels`` / ``output_stride`` (adapted and reported), ``num_classes`` (single-task weights;
            must agree with the spec), ``aggregator``, ``encoder``/``widths``/``shortcut`` (must agree), and
            ``catalog``, ``cache_dir``, ``offline``, ``progress`` for the download.

    Returns:
        ``(model in eval mode, the weights spec or None, the LoadReport)``.

    Raises:
        ValueError: a reference that holds weights without saying how to build their model (a plain weight file,
            ``medicalnet:`` and ``ckpt:`` are built by :func:`medzoo.zoo.resolve`), or a request that contradicts
            the spec.
    """
    opts = {k: kw.pop(k) for k in _DOWNLOAD_KW if k in kw}
    src = _source(ref, allow_unpinned=allow_unpinned, opts=opts)
    wanted = _normalise_parts(parts, src.spec, src.spec.parts if src.spec else ALL_PARTS)
    config = _build_config(src, wanted, tasks, kw)
    loaded = tuple(f"{p.split('.')[0]}." for p in wanted)  # shapes of parts left out may differ on purpose
    preflight_model(config, {k: v for k, v in weight_shapes(src.files).items() if k.startswith(loaded)}, src.name)
    model = create_model(config)
    if src.spec is not None:
        check_versions(src.spec.versions, src.name)
    report = load_parts(model, src.files, src.spec, wanted, src.name)
    return model.eval(), src.spec, report


def load_pretrained(model: Any, ref: str | os.PathLike, parts: str | Sequence[str] = ("encoder",), *,
                    allow_unpinned: bool = False, **opts: Any) -> LoadReport:
    """Load parts of a model reference into ``model``; returns the report (also kept as ``model.load_report``).

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` (or a bare encoder, for ``parts=['encoder']``).
        ref: a catalog name, an export directory, a ``.safetensors`` / ``.pt`` file, ``medicalnet:PATH``, or
            ``ckpt:PATH`` (a training checkpoint, loaded by submodule name: no architecture check, so that a run can
            continue from any checkpoint whose keys fit).
        parts: ``encoder`` (default), ``heads``, ``heads.<task>``, ``aggregator`` or ``all``.
        allow_unpinned: download files whose sha256 the catalog does not pin.
        **opts: ``catalog``, ``cache_dir``, ``offline``, ``progress``.

    Raises:
        ValueError: an architecture mismatch (depth, block, shortcut, widths), or parts the weights do not hold.

    Example:
        >>> report = load_pretrained(model, "resnet18.medicalnet23", parts=["encoder"])  # doctest: +SKIP
        >>> report.adapted  # doctest: +SKIP
        {'<geometry>': 'output_stride 8 (trained) -> 32: same weights, different strides/dilations'}
    """
    bad = sorted(set(opts) - set(_DOWNLOAD_KW))
    if bad:
        raise TypeError(f"load_pretrained() got unexpected argument(s) {bad}; accepted: {list(_DOWNLOAD_KW)}")
    parsed = parse_ref(ref)
    if parsed.kind == "checkpoint":
        names = [parts] if isinstance(parts, str) else list(parts)
        report = load_checkpoint_weights(model, parsed.target, parts=None if "all" in names else names)
    else:
        src = _source(parsed, allow_unpinned=allow_unpinned, opts=opts)
        wanted = _normalise_parts(parts, src.spec, ("encoder",))
        if src.spec is not None:
            check_versions(src.spec.versions, src.name)
        report = load_parts(model, src.files, src.spec, wanted, src.name)
    model.load_report = report  # hubconf and users read it from the model they loaded into
    return report
