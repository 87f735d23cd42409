"""TorchXRayVision (TXV) weights imported safely onto medzoo's DenseNet-121 and ResNet-50 baselines.

TXV's DenseNet files are whole pickled ``torchxrayvision.models.DenseNet`` modules; its ResNet-50 file is a state
dict of a torchvision ResNet-50 with a 1-channel stem. Both are read by :func:`medzoo.zoo.safe_pickle.load_restricted`
(an allow-listed unpickler: TXV is never imported and no global outside the list is ever called).

What a TXV model computes, and how medzoo reproduces it:

* DenseNet: ``features`` (with ``norm5``), ReLU, global average pooling, ``classifier`` (18 outputs). medzoo's
  :class:`~medzoo.encoders.DenseNetEncoder` has the same layers (MONAI names them ``...denselayerN.layers.conv1``;
  the ``layers.`` step is inserted here) and its pooled feature feeds a multilabel head.
* ResNet-50: a torchvision ResNet-50; imported like ImageNet weights (:mod:`medzoo.zoo.imagenet`, centre inflation),
  so the encoder's 2D path computes TXV's network.
* Outputs: with calibrated operating points ``op_threshs`` TXV returns ``op_norm(sigmoid(logits))``: a probability
  ``p`` below its threshold ``t`` maps to ``p / (2 t)``, otherwise to ``1 - (1 - p) / (2 (1 - t))``, so ``t`` maps to
  0.5; outputs without a threshold (NaN) are the constant 0.5. medzoo's head keeps the named outputs that have a
  threshold, with ``thresholds = op_threshs``; its decision ``p >= t`` equals TXV's ``output >= 0.5``, and
  :func:`txv_calibrate` / :func:`txv_outputs` give TXV's numbers.

The input contract (:func:`txv_preprocessing`): one channel, 224x224 (512x512 for the ResNet), intensities mapped
linearly from ``[0, maxval]`` to ``[-1024, 1024]``, centre-cropped to a square before resizing.

Example (not run here):
    >>> model = from_torchxrayvision("nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-"
    ...                              "sc15-seed0-best.pt")  # doctest: +SKIP
    >>> txv_outputs(model, torch.zeros(1, 1, 224, 224)).shape  # doctest: +SKIP
    torch.Size([1, 18])
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from medzoo.data.presets import txv_contract
from medzoo.encoders import DenseNetEncoder
from medzoo.heads import MultilabelHead
from medzoo.models.multitask import MultiTaskModel
from medzoo.zoo.imagenet import detect_resnet2d, imagenet_encoder, load_resnet2d_state
from medzoo.zoo.report import LoadReport
from medzoo.zoo.safe_pickle import ModuleRecord, load_restricted
from medzoo.zoo.state import load_state_with_report, strip_prefixes
from medzoo.zoo.txv_table import TXV_WEIGHTS

__all__ = ["TXV_WEIGHTS", "TXVWeights", "from_torchxrayvision", "load_txv_file", "load_txv_into",
           "read_torchxrayvision", "txv_calibrate", "txv_outputs", "txv_preprocessing"]

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+\.)(?!layers\.)")
_DENSE = re.compile(r"^features\.denseblock(\d)\.denselayer(\d+)\.")


@dataclass
class TXVWeights:
    """What a TXV file holds.

    Attributes:
        state_dict: TXV key names (``features.*`` and ``classifier.*``, or torchvision ResNet keys with ``fc.*``).
        kind: ``"densenet"`` or ``"resnet"``.
        pathologies: the output names, in output order (``""`` for an output the weights were not trained on).
        op_threshs: calibrated operating points, one per output (NaN where none), or ``None``.
        resolution: the input size the weights were trained at (224 or 512).
        source: the file (or a description).
        class_name: the pickled class (``torchxrayvision.models.DenseNet``), ``None`` for a state-dict file.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    pathologies: tuple[str, ...]
    op_threshs: tuple[float, ...] | None
    resolution: int
    source: str
    class_name: str | None = None

    @property
    def rows(self) -> list[int]:
        """Indices of the outputs medzoo keeps: named, and calibrated when thresholds are known."""
        ops = self.op_threshs
        return [i for i, name in enumerate(self.pathologies) if name and (ops is None or math.isfinite(ops[i]))]

    @property
    def labels(self) -> list[str]:
        return [self.pathologies[i] for i in self.rows]

    @property
    def thresholds(self) -> dict[str, float] | None:
        return None if self.op_threshs is None else {self.pathologies[i]: self.op_threshs[i] for i in self.rows}


def _floats(v: Any) -> tuple[float, ...] | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        v = v.flatten().tolist()
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) for x in v):
        raise ValueError(f"op_threshs must be a list of numbers, got {type(v).__name__}")
    return tuple(float(x) for x in v)


def _from_record(obj: Any) -> tuple[dict, tuple[str, ...] | None, tuple[float, ...] | None, str]:
    """State dict, pathologies, op_threshs and class name of a pickled TXV module."""
    inner = obj.children.get("model") if obj.qualname.endswith(".ResNet") else None
    state = (inner or obj).state_dict()
    ops = obj.buffers.get("op_threshs", obj.attributes.get("op_threshs"))
    state.pop("op_threshs", None)
    names = obj.attributes.get("targets", obj.attributes.get("pathologies"))
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{obj.qualname}: pathologies must be a list of strings, got {names!r}")
    return state, tuple(names) if names else None, _floats(ops), obj.qualname


def read_torchxrayvision(path: str | Path, *, weights: str | None = None) -> TXVWeights:
    """Read a TXV weight file without importing TXV or running code from the file.

    Args:
        path: a TXV ``.pt`` file (a pickled DenseNet module, or the ResNet-50 state dict), zip or legacy format.
        weights: the TXV weights name (``densenet121-res224-all`` ...); its published labels and ``op_threshs``
            fill in what the file does not hold (TXV's released DenseNet files store neither). Default: looked up
            by the file name.

    Raises:
        medzoo.zoo.safe_pickle.UnsafePickleError: the file names a global outside the allow-list.
        ValueError: not a TXV DenseNet or ResNet, or labels and outputs that disagree.
    """
    obj = load_restricted(path)
    if isinstance(obj, ModuleRecord):
        state, names, ops, cls = _from_record(obj)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, names, cls = strip_prefixes(obj, ("module.", "model.")), None, None
        ops = _floats(state.pop("op_threshs", None))  # a TXV DenseNet's state_dict() carries it as a buffer
    else:
        raise ValueError(f"{path}: expected a pickled TorchXRayVision model or a state dict, got {type(obj).__name__}")
    kind = "densenet" if "features.conv0.weight" in state else "resnet" if "conv1.weight" in state else None
    if kind is None:
        raise ValueError(f"{path}: neither a TXV DenseNet (features.conv0.weight) nor a ResNet (conv1.weight)")
    entry = TXV_WEIGHTS.get(weights or "") or next(
        (e for e in TXV_WEIGHTS.values() if e["file"] == Path(path).name), None)
    if weights and weights not in TXV_WEIGHTS:
        raise ValueError(f"unknown TorchXRayVision weights {weights!r}; known: {sorted(TXV_WEIGHTS)}")
    names = names if names is not None else (tuple(entry["labels"]) if entry else None)
    ops = ops if ops is not None else (tuple(entry["op_threshs"]) if entry else None)
    n_out = int(state["classifier.weight" if kind == "densenet" else "fc.weight"].shape[0])
    if names is None:
        raise ValueError(f"{path}: the file names no pathologies; pass weights= one of {sorted(TXV_WEIGHTS)}")
    for what, v in (("pathologies", names), ("op_threshs", ops)):
        if v is not None and len(v) != n_out:
            raise ValueError(f"{path}: {len(v)} {what} for a classifier of {n_out} outputs")
    resolution = entry["resolution"] if entry else (224 if kind == "densenet" else 512)
    return TXVWeights(state, kind, tuple(names), ops, resolution, str(path), cls)


def txv_calibrate(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """TXV's operating-point normalisation of sigmoid outputs ``[B, K]`` with thresholds ``[K]`` (NaN -> 0.5).

    Example:
        >>> txv_calibrate(torch.tensor([[0.1, 0.1, 0.9]]), torch.tensor([0.2, 0.1, float("nan")])).tolist()
        [[0.25, 0.5, 0.5]]
    """
    t = thresholds.to(probs).expand_as(probs)
    low = probs / (2 * t)
    high = 1 - (1 - probs) / (2 * (1 - t))
    return torch.where(torch.isnan(t), torch.full_like(probs, 0.5), torch.where(probs < t, low, high))


def txv_outputs(model: nn.Module, x: torch.Tensor, task: str = "findings") -> torch.Tensor:
    """TXV's outputs ``[B, K]`` for images ``[B, 1, H, W]``: calibrated with the head's thresholds (eval mode)."""
    head = model.heads[task]
    with model._eval_mode():
        logits = model(x, tasks=[task])[task]
    return txv_calibrate(logits.sigmoid(), head.thresholds)


def _densenet_config(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    counts = [0, 0, 0, 0]
    for key in state:
        m = _DENSE.match(key)
        if m and 1 <= int(m.group(1)) <= 4:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)))
    try:
        growth = int(state["features.denseblock1.denselayer1.conv2.weight"].shape[0])
        bottleneck = int(state["features.denseblock1.denselayer1.conv1.weight"].shape[0])
    except KeyError as exc:
        raise ValueError(f"{source}: not a TXV DenseNet: missing {exc}") from None
    conv0 = state["features.conv0.weight"]
    return {"in_channels": int(conv0.shape[1]), "init_features": int(conv0.shape[0]), "growth_rate": growth,
            "bn_size": bottleneck // growth, "block_config": tuple(counts)}


def _build(w: TXVWeights, task: str) -> nn.Module:
    if w.kind == "densenet":
        encoder = DenseNetEncoder(**_densenet_config(w.state_dict, w.source))
    else:
        arch = detect_resnet2d(w.state_dict, w.source)
        encoder = imagenet_encoder(arch["depth"], in_channels=arch["in_channels"], widths=tuple(arch["widths"]))
    head = MultilabelHead(encoder.feature_dim, labels=w.labels, thresholds=w.thresholds)
    return MultiTaskModel(encoder, {task: head}, levels={task: "image"})


def from_torchxrayvision(path_or_weights: str | Path | TXVWeights, *, weights: str | None = None,
                         task: str = "findings") -> nn.Module:
    """Build medzoo's DenseNet-121 (or ResNet-50) model for a TXV file and load it; returns the model (eval mode).

    The model has one multilabel image-level head ``task`` whose labels are TXV's named, calibrated outputs and
    whose thresholds are their ``op_threshs``; ``model.load_report`` and ``model.txv`` (:class:`TXVWeights`) say
    what was loaded.
    """
    w = path_or_weights if isinstance(path_or_weights, TXVWeights) else read_torchxrayvision(
        path_or_weights, weights=weights)
    model = _build(w, task)
    model.load_report = load_txv_into(model, w, heads=True).log()
    model.txv = w
    return model.eval()


def _encoder_state(w: TXVWeights) -> dict[str, torch.Tensor]:
    if w.kind == "resnet":
        return w.state_dict
    return {_LAYER.sub(r"\1layers.", k): v for k, v in w.state_dict.items() if not k.startswith("classifier.")}


def load_txv_into(model: nn.Module, w: TXVWeights, *, heads: bool = True) -> LoadReport:
    """Load TXV weights into a model's encoder and (``heads``) into every multilabel head whose labels TXV has.

    Head rows are picked by label name from TXV's classifier; outputs the head does not name are reported as
    ignored. Raises ``ValueError`` for an encoder whose architecture differs from the file.
    """
    clf = "classifier." if w.kind == "densenet" else "fc."
    if w.kind == "resnet":
        sub = load_resnet2d_state(model.encoder, w.state_dict, source=w.source, head_prefix=clf,
                                  head_reason="TXV classifier, mapped to heads by label")
    else:
        sub = load_state_with_report(model.encoder, _encoder_state(w), source=w.source,
                                     stem_key="features.conv0.weight")
    report = LoadReport(source=w.source, loaded=[f"encoder.{k}" for k in sub.loaded],
                        adapted={k if k.startswith("<") else f"encoder.{k}": v for k, v in sub.adapted.items()},
                        missing=[f"encoder.{k}" for k in sub.missing], unexpected=list(sub.unexpected),
                        inflation=sub.inflation)
    used: set[int] = set()
    for name, head in getattr(model, "heads", {}).items():
        if heads and _load_head(name, head, w, clf, report):
            used.update(w.pathologies.index(label) for label in head.label_names)
        else:
            report.missing += [f"heads.{name}.{k}" for k in head.state_dict()]
    dropped = [f"{w.pathologies[i] or '(unnamed)'} ({i})" for i in range(len(w.pathologies)) if i not in used]
    if dropped:
        report.ignored[f"{clf}weight/bias rows"] = f"outputs no head uses: {', '.join(dropped)}"
    return report


def load_txv_file(model: nn.Module, path: str | Path, spec: Any = None, *, heads: bool = True) -> LoadReport:
    """Load a TXV file into a model built from a catalog entry (the entry's name picks TXV's published labels)."""
    name = getattr(spec, "name", None)
    w = read_torchxrayvision(path, weights=name if name in TXV_WEIGHTS else None)
    return load_txv_into(model, w, heads=heads)


def _load_head(name: str, head: nn.Module, w: TXVWeights, clf: str, report: LoadReport) -> bool:
    labels = list(getattr(head, "label_names", ()))
    fc = getattr(head, "fc", None)
    if not labels or fc is None or any(label not in w.pathologies for label in labels):
        return False
    rows = torch.tensor([w.pathologies.index(label) for label in labels])
    with torch.no_grad():
        fc.weight.copy_(w.state_dict[clf + "weight"][rows])
        fc.bias.copy_(w.state_dict[clf + "bias"][rows])
    why = f"rows {rows.tolist()} of TXV's {clf}weight/bias (by label)"
    report.adapted.update({f"heads.{name}.fc.weight": why, f"heads.{name}.fc.bias": why})
    if w.op_threshs is not None and hasattr(head, "thresholds"):
        mine = head.thresholds.tolist()
        theirs = [w.op_threshs[w.pathologies.index(label)] for label in labels]
        if any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(mine, theirs)):
            log.warning("head %r thresholds %s differ from TXV's op_threshs %s", name, mine, theirs)
    return True


def txv_preprocessing(resolution: int = 224) -> dict[str, Any]:
    """TXV's input contract as a ``preprocessing`` mapping: grey, [0, max value] -> [-1024, 1024], centre square
    crop, resize to ``resolution``."""
    return txv_contract(resolution).to_dict()
