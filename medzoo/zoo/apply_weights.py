"""Loading the parts of weight files into a model, by name, with a :class:`~medzoo.zoo.report.LoadReport`.

The rules, so that weights load exactly or say why, key by key: the encoder's depth, block, shortcut and widths must
match (an error names both, since other weights cannot mean the same features); the stem is adapted to the model's
``in_channels``; a different ``output_stride`` is reported as a geometry change; heads and the aggregator are matched
by name and loaded when their keys, shapes (and, with a spec, labels) agree, else dropped by name with the reason.
Every key ends up in exactly one list of the report. ImageNet (``torchvision-resnet``) and TorchXRayVision files go
through :mod:`medzoo.zoo.imagenet` and :mod:`medzoo.zoo.txv`.

Example:
    >>> from medzoo.models import create_model
    >>> from medzoo.zoo.publish import export_model
    >>> import tempfile
    >>> model = create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}, "tasks": {}})
    >>> d = export_model(model, tempfile.mkdtemp() + "/e", name="tiny.enc", parts="encoder")
    >>> report = load_parts(model, [(d / "model.safetensors", "safetensors", "encoder")], None, {"encoder"}, "e")
    >>> report.ok, len(report.loaded) == len(model.state_dict())
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from medzoo.encoders import DenseNetEncoder
from medzoo.zoo.imagenet import load_imagenet
from medzoo.zoo.medicalnet import detect_architecture, find_encoder, load_medicalnet
from medzoo.zoo.report import LoadReport
from medzoo.zoo.spec import WeightsSpec
from medzoo.zoo.state import check_finite, load_state_with_report, read_weights, strip_prefixes, unwrap_state_dict
from medzoo.zoo.txv import load_txv_file

__all__ = ["load_parts"]

_ARCH_FIELDS = ("depth", "block", "shortcut", "widths")


def _read_state(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError for anything that is not a safetensors file
            raise ValueError(f"{path}: not a valid safetensors file ({exc})") from exc
    return strip_prefixes(unwrap_state_dict(read_weights(path), source=str(path)))


def _full_names(state: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """Model-level key names: an encoder-only file's bare keys get the ``encoder.`` prefix."""
    model_level = any(k.startswith(("encoder.", "heads.", "aggregator.")) for k in state)
    if part == "encoder" or (part == "unknown" and not model_level):
        return {f"encoder.{k}": v for k, v in state.items()}
    return state


def _check_architecture(model: Any, spec: WeightsSpec | None, enc_state: dict, source: str) -> None:
    mine = find_encoder(model).architecture()
    theirs = detect_architecture(enc_state, source)
    diffs = [f for f in _ARCH_FIELDS if list(_as_list(theirs[f])) != list(_as_list(mine[f]))]
    if diffs:
        name = spec.architecture.encoder if spec else f"resnet{theirs['depth']}"
        raise ValueError(
            f"{source}: architecture mismatch ({', '.join(diffs)}): the weights are {name} (depth {theirs['depth']}, "
            f"{theirs['block']} blocks, shortcut {theirs['shortcut']}, widths {theirs['widths']}); the model's "
            f"encoder is {mine['encoder']} (depth {mine['depth']}, {mine['block']} blocks, shortcut {mine['shortcut']}"
            f", widths {mine['widths']})")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _load_encoder(model: Any, enc_state: dict, spec: WeightsSpec | None, report: LoadReport, source: str) -> None:
    dense = getattr(model, "encoder", model)
    if isinstance(dense, DenseNetEncoder):  # no ResNet contract to compare; shapes are checked key by key below
        encoder, stem = dense, "features.conv0.weight"
    else:
        encoder, stem = find_encoder(model), "conv1.weight"
        _check_architecture(model, spec, enc_state, source)
    prefix = "" if encoder is model else "encoder."
    sub = load_state_with_report(encoder, enc_state, source=source, stem_key=stem, strict=True, key_prefix=prefix)
    report.loaded += [prefix + k for k in sub.loaded]
    report.adapted.update({prefix + k: v for k, v in sub.adapted.items()})
    report.missing += [prefix + k for k in sub.missing]
    report.unexpected += [prefix + k for k in sub.unexpected]
    trained = spec.architecture.output_stride if spec is not None else None
    if trained is not None and trained != encoder.output_stride:
        report.adapted["<geometry>"] = (f"output_stride {trained} (trained) -> {encoder.output_stride}: same weights,"
                                        " different strides/dilations")


def _load_module(module: Any, state: dict, prefix: str, report: LoadReport, why_drop: str | None) -> None:
    """Load ``state`` (keys relative to ``module``) when every shape matches, else drop it by name with a reason."""
    own = module.state_dict() if module is not None else {}
    if why_drop is None and set(own) != set(state):
        extra, lacking = sorted(set(state) - set(own)), sorted(set(own) - set(state))
        why_drop = f"the model's {prefix.rstrip('.')} differs: file-only keys {extra}, model-only keys {lacking}"
    if why_drop is None:
        bad = [k for k in state if own[k].shape != state[k].shape]
        if bad:
            k = bad[0]
            why_drop = f"shape {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model ({prefix}{k})"
    if why_drop is not None:
        report.ignored.update({prefix + k: why_drop for k in state})
        return  # the model's own keys are reported as missing by _report_fresh_heads
    check_finite({prefix + k: v for k, v in state.items()}, report.source)
    report.loaded += [prefix + k for k in state]
    module.load_state_dict(state, strict=True)


def _head_mismatch(model: Any, task: str, spec: WeightsSpec | None, wanted: set[str]) -> str | None:
    if "heads" not in wanted and f"heads.{task}" not in wanted:
        return "heads not requested (parts)"
    heads = getattr(model, "heads", {})
    if task not in heads:
        return f"the model has no head {task!r}"
    if spec is not None and task in spec.tasks:
        labels = list(spec.tasks[task].labels)
        mine = list(getattr(heads[task], "label_names", labels))
        if labels != mine:
            return f"labels differ: weights {labels}, model {mine}"
    return None


def load_parts(model: Any, files: Sequence[tuple[Path, str, str]], spec: WeightsSpec | None, wanted: set[str],
               source: str) -> LoadReport:
    """Load the ``wanted`` parts of weight ``files`` (``(path, format, part)``) into ``model``; returns the report.

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` or a bare encoder.
        files: the weight files with their spec format (``safetensors``, ``torch-state-dict``, ``medicalnet-pth``)
            and part (``encoder`` files hold bare encoder keys; ``unknown`` = decide from the keys).
        spec: the weights spec (architecture, task labels) or ``None``.
        wanted: normalised parts: ``encoder``, ``aggregator``, ``heads``, ``heads.<task>``.
        source: the name the report carries.
    """
    report = LoadReport(source=source)
    for path, fmt, part in files:
        if fmt == "medicalnet-pth":
            _load_medicalnet(model, path, wanted, report)
            continue
        if fmt in ("torchvision-resnet", "torchxrayvision"):
            _merge(report, _load_foreign(model, path, fmt, spec, wanted))
            continue
        state = _full_names(_read_state(path, fmt), part)
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if enc and "encoder" in wanted:
            _load_encoder(model, enc, spec, report, str(path))
        elif enc:
            report.ignored.update({f"encoder.{k}": "encoder not requested (parts)" for k in enc})
        agg = {k[len("aggregator."):]: v for k, v in state.items() if k.startswith("aggregator.")}
        if agg:
            module = getattr(model, "aggregator", None)
            why = ("aggregator not requested (parts)" if "aggregator" not in wanted
                   else None if module is not None else "the model has no aggregator")
            _load_module(module if why is None else None, agg, "aggregator.", report, why)
        for task in sorted({k.split(".")[1] for k in state if k.startswith("heads.")}):
            sub = {k[len(f"heads.{task}."):]: v for k, v in state.items() if k.startswith(f"heads.{task}.")}
            why = _head_mismatch(model, task, spec, wanted)
            _load_module(model.heads[task] if why is None else None, sub, f"heads.{task}.", report, why)
        other = [k for k in state if not k.startswith(("encoder.", "aggregator.", "heads."))]
        report.unexpected += other
    _report_fresh_heads(model, report)
    return report.log()


def _report_fresh_heads(model: Any, report: LoadReport) -> None:
    """Model parameters that no file touched (new heads) are listed as missing."""
    seen = set(report.loaded) | set(report.adapted) | set(report.missing)
    for key in getattr(model, "state_dict", dict)():
        if key.startswith(("heads.", "aggregator.")) and key not in seen:
            report.missing.append(key)


def _load_medicalnet(model: Any, path: Path, wanted: set[str], report: LoadReport) -> None:
    if "encoder" not in wanted:
        raise ValueError(f"{path}: a MedicalNet file holds an encoder; request parts=['encoder'] (or 'all')")
    heads = any(p.split(".")[0] == "heads" for p in wanted)
    target = model if heads else find_encoder(model)
    sub = load_medicalnet(target, path)
    prefix = "" if target is model else "encoder."

    def fix(k: str) -> str:
        return k if k.startswith(("heads.", "conv_seg.", "<")) else prefix + k

    report.loaded += [fix(k) for k in sub.loaded]
    report.adapted.update({fix(k): v for k, v in sub.adapted.items()})
    report.ignored.update(sub.ignored)
    report.missing += [fix(k) for k in sub.missing]
    report.unexpected += sub.unexpected


def _load_foreign(model: Any, path: Path, fmt: str, spec: WeightsSpec | None, wanted: set[str]) -> LoadReport:
    """ImageNet (inflated into the encoder) and TorchXRayVision files, through their importers."""
    if "encoder" not in wanted:
        raise ValueError(f"{path}: a {fmt} file holds an encoder; request parts=['encoder'] (or 'all')")
    if fmt == "torchvision-resnet":
        return load_imagenet(model, path)
    return load_txv_file(model, path, spec, heads=any(p.split(".")[0] == "heads" for p in wanted))


def _merge(report: LoadReport, sub: LoadReport) -> None:
    report.loaded += sub.loaded
    report.adapted.update(sub.adapted)
    report.ignored.update(sub.ignored)
    report.missing += sub.missing
    report.unexpected += sub.unexpected
    report.inflation = report.inflation or sub.inflation
