"""Vector heads: they read a pooled feature ``[..., F]`` and return logits ``[..., K]``.

The leading dims are free, so the same head serves ``[B, F]`` (a volume, an image, an aggregated series) and
``[B, N, F]`` (per-slice predictions of a series).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from medzoo.heads.base import HEADS, Head, HeadArgumentError, _resolve_labels

__all__ = ["ClassificationHead", "MultilabelHead", "RegressionHead"]


class _LinearHead(Head):
    """Dropout + Linear, shared by the vector heads."""

    kind: ClassVar[str] = "vector"

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise HeadArgumentError("dropout", f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., F] -> [..., K]`` logits."""
        return self.fc(self.dropout(x))


@HEADS.register("classification")
class ClassificationHead(_LinearHead):
    """Single-label classification over ``num_classes`` exclusive classes (softmax in ``predict`` only).

    Args:
        in_features: size of the pooled feature.
        num_classes: number of classes K (required unless ``labels`` is given).
        labels: class names (length K).
        dropout: dropout before the linear layer.

    Example:
        >>> import torch
        >>> head = ClassificationHead(64, num_classes=3, labels=["normal", "pneumonia", "covid"])
        >>> head(torch.zeros(2, 64)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, in_features: int, num_classes: int | None = None, labels: Sequence[str] | None = None,
        dropout: float = 0.0,
    ) -> None:
        label_names = _resolve_labels(num_classes, labels, "classification head")
        super().__init__(in_features, len(label_names), dropout)
        self.label_names = label_names

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``{"probs": softmax over the last dim, "pred": argmax (long)}``."""
        probs = logits.softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}


def _thresholds(thresholds: float | Sequence[float] | Mapping[str, float] | None, labels: tuple[str, ...]) -> Tensor:
    """Per-label thresholds from one float, a list (one per label) or a label -> value mapping (others 0.5)."""
    if thresholds is None:
        return torch.full((len(labels),), 0.5)
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(labels))
        if unknown:
            raise HeadArgumentError("thresholds", f"multilabel head: thresholds for unknown labels {unknown}; "
                                    f"labels are {list(labels)}")
        return torch.tensor([float(thresholds.get(lab, 0.5)) for lab in labels])
    if isinstance(thresholds, (int, float)):
        return torch.full((len(labels),), float(thresholds))
    values = [float(t) for t in thresholds]
    if len(values) != len(labels):
        raise HeadArgumentError("thresholds", f"multilabel head: {len(values)} thresholds for {len(labels)} labels")
    return torch.tensor(values)


@HEADS.register("multilabel")
class MultilabelHead(_LinearHead):
    """Independent binary labels (sigmoid and thresholds in ``predict`` only).

    Args:
        in_features: size of the pooled feature.
        labels: label names (required), for example the 14 ChestX-ray14 findings.
        num_classes: optional; must equal ``len(labels)``.
        thresholds: decision thresholds: one float, one per label, or ``{label: value}`` (default 0.5).
        dropout: dropout before the linear layer.

    Example:
        >>> import torch
        >>> head = MultilabelHead(64, labels=["effusion", "nodule"], thresholds={"nodule": 0.3})
        >>> head.activate(torch.zeros(1, 2))["pred"]
        tensor([[1, 1]])
    """

    def __init__(
        self, in_features: int, labels: Sequence[str] | None = None, num_classes: int | None = None,
        thresholds: float | Sequence[float] | Mapping[str, float] | None = None, dropout: float = 0.0,
    ) -> None:
        if labels is None:
            raise HeadArgumentError("labels", "multilabel head: labels (the label names) are required")
        label_names = _resolve_labels(num_classes, labels, "multilabel head")
        super().__init__(in_features, len(label_names), dropout)
        self.label_names = label_names
        self.register_buffer("thresholds", _thresholds(thresholds, label_names), persistent=False)

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``{"probs": sigmoid, "pred": probs >= thresholds (long)}``."""
        probs = logits.sigmoid()
        return {"probs": probs, "pred": (probs >= self.thresholds.to(probs)).long()}


def _ranges(outputs: Sequence[str] | Mapping[str, Sequence[float] | None]) -> tuple[tuple[str, ...], Tensor, Tensor]:
    """Names, lower bounds and spans of the regression outputs (no range -> identity scaling)."""
    items = list(outputs.items()) if isinstance(outputs, Mapping) else [(name, None) for name in outputs]
    if not items:
        raise HeadArgumentError("outputs", "regression head: outputs must name at least one output")
    names, lows, spans = [], [], []
    for name, rng in items:
        if rng is None:
            lo, hi = 0.0, 1.0
        else:
            if len(rng) != 2 or float(rng[1]) <= float(rng[0]):
                raise HeadArgumentError(
                    "outputs", f"regression head: output {name!r} needs a range [low, high] with high > low, got {rng}"
                )
            lo, hi = float(rng[0]), float(rng[1])
        names.append(str(name))
        lows.append(lo)
        spans.append(hi - lo)
    return tuple(names), torch.tensor(lows), torch.tensor(spans)


@HEADS.register("regression")
class RegressionHead(_LinearHead):
    """Named continuous outputs with target scaling.

    The head predicts each output in normalised units: ``raw = (y - low) / (high - low)``, so that targets of
    different ranges (severity ``geographic`` 0-8, ``opacity`` 0-6) weigh alike in the loss. Use
    :meth:`scale_targets` on targets before the loss; ``predict`` maps back with :meth:`unscale` and clamps to
    the range.

    Args:
        in_features: size of the pooled feature.
        outputs: output names, or ``{name: [low, high]}`` (a name mapped to ``None`` is left unscaled, unclamped).
        dropout: dropout before the linear layer.

    Example:
        >>> import torch
        >>> head = RegressionHead(64, outputs={"geographic": [0, 8], "opacity": [0, 6]})
        >>> head.unscale(torch.tensor([[0.5, 1.0]]))
        tensor([[4., 6.]])
    """

    def __init__(
        self, in_features: int, outputs: Sequence[str] | Mapping[str, Sequence[float] | None] | None = None,
        dropout: float = 0.0,
    ) -> None:
        if outputs is None:
            raise HeadArgumentError("outputs", "regression head: outputs (names, optionally with ranges) are required")
        names, lows, spans = _ranges(outputs)
        super().__init__(in_features, len(names), dropout)
        self.label_names = names
        bounded = [not (isinstance(outputs, Mapping) and outputs[n] is None) for n in names]
        self.register_buffer("low", lows, persistent=False)
        self.register_buffer("span", spans, persistent=False)
        self.register_buffer("bounded", torch.tensor(bounded), persistent=False)

    def scale_targets(self, y: Tensor) -> Tensor:
        """Targets ``[..., K]`` in their own units -> normalised units (what the logits predict)."""
        return (y - self.low.to(y)) / self.span.to(y)

    def unscale(self, raw: Tensor) -> Tensor:
        """Normalised predictions ``[..., K]`` -> the outputs' own units."""
        return raw * self.span.to(raw) + self.low.to(raw)

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``{"values": unscaled predictions, clamped to [low, high] for outputs with a range}``."""
        values = self.unscale(logits)
        clamped = torch.minimum(torch.maximum(values, self.low.to(values)), (self.low + self.span).to(values))
        return {"values": torch.where(self.bounded, clamped, values)}
