"""A localisation head for multilabel chest X-ray tasks: per-class patch logits plus multiple-instance pooling.

The head follows Li et al. 2018 ("Thoracic disease identification and localization with limited supervision"):
the last encoder map ``[B, C, h, w]`` is cut into its ``h x w`` cells ("patches"), a 1x1 convolution gives each
patch one logit per class, and the image-level prediction of class ``k`` pools the patch probabilities of class
``k``. ``forward`` returns the patch logits ``[B, K, h, w]``; only :meth:`LocalizationHead.activate` (called by
``MultiTaskModel.predict``) applies sigmoids.

MIL pooling (:func:`mil_pool`, chosen with ``pooling``), from patch logits ``x_j`` to one image logit:

- ``"noisy_or"`` (Li et al. 2018; the default): an image is positive when at least one patch is,
  ``P = 1 - prod_j (1 - sigmoid(x_j))``. It is computed in log space, ``log(1 - P) = sum_j logsigmoid(-x_j)``, and
  returned as the logit ``log P - log(1 - P)``, so the BCE on it is exact and stable.
- ``"lse"`` (log-sum-exp, Wang et al. 2017): ``(1 / r) log(mean_j exp(r x_j))`` over logits; ``r -> inf`` is max
  pooling, ``r -> 0`` mean pooling.
- ``"max"``: the largest patch logit.

Example:
    >>> import torch
    >>> head = LocalizationHead(64, labels=("Nodule", "Effusion"))
    >>> logits = head([torch.zeros(2, 64, 12, 12)])
    >>> logits.shape, head.pool(logits).shape
    (torch.Size([2, 2, 12, 12]), torch.Size([2, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medzoo.heads.base import HEADS, FeatureInfo, Head, HeadArgumentError, _resolve_labels
from medzoo.heads.vector import _thresholds

__all__ = ["LocalizationHead", "mil_pool", "POOLINGS"]

POOLINGS = ("noisy_or", "lse", "max")


def _noisy_or_logit(flat: Tensor) -> Tensor:
    """Noisy-OR of patch probabilities, as a logit; ``flat`` is ``[..., P]`` patch logits."""
    log_not = F.logsigmoid(-flat).sum(dim=-1)  # log(1 - P) <= 0
    # P > 0 keeps log(P) finite; expm1 stays exact for tiny |log_not|, so only an exact 0 needs the clamp
    log_not = log_not.clamp(max=-torch.finfo(flat.dtype).tiny)
    return torch.log(-torch.expm1(log_not)) - log_not


def mil_pool(patch_logits: Tensor, pooling: str = "noisy_or", r: float = 5.0) -> Tensor:
    """Pool patch logits ``[B, K, h, w]`` (or ``[B, K, P]``) into image logits ``[B, K]``.

    Args:
        patch_logits: per-class patch logits.
        pooling: ``"noisy_or"``, ``"lse"`` or ``"max"`` (see the module docstring).
        r: sharpness of ``"lse"``.

    Example:
        >>> x = torch.tensor([[[0.0, 0.0]]])  # two patches with p = 0.5: noisy-OR P = 0.75, logit log 3
        >>> round(mil_pool(x).item(), 6) == round(math.log(3), 6)
        True
    """
    if patch_logits.dim() < 3:
        raise ValueError(f"patch_logits must be [B, K, h, w] or [B, K, P], got shape {tuple(patch_logits.shape)}")
    flat = patch_logits.flatten(2)
    if pooling == "noisy_or":
        return _noisy_or_logit(flat)
    if pooling == "lse":
        if r <= 0:
            raise ValueError(f"lse pooling needs r > 0, got {r}")
        return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r
    if pooling == "max":
        return flat.amax(dim=-1)
    raise ValueError(f"unknown MIL pooling {pooling!r}; expected one of {POOLINGS}")


@HEADS.register("localization")
class LocalizationHead(Head):
    """Per-class patch logits over the last encoder map, with MIL pooling to image-level predictions.

    Args:
        in_channels: channels of the last encoder map.
        num_classes: number of findings (or give ``labels``).
        labels: finding names (length ``num_classes``).
        pooling: MIL pooling, one of :data:`POOLINGS`.
        r: sharpness of ``"lse"`` pooling.
        hidden: optional width of a 3x3 conv + ReLU before the 1x1 classifier (0: the classifier reads the map).
        thresholds: image-level decision threshold(s): a float, one per label, or a label -> value mapping.
        prior: initial patch probability (bias of the 1x1 conv); small values keep the noisy-OR of many patches
            from starting saturated.

    Shapes:
        ``forward(feats)``: ``feats[-1]`` ``[B, C, h, w]`` -> patch logits ``[B, K, h, w]``.
    """

    kind: ClassVar[str] = "dense"
    levels: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, in_channels: int, num_classes: int | None = None, labels: Sequence[str] | None = None,
                 pooling: str = "noisy_or", r: float = 5.0, hidden: int = 0,
                 thresholds: float | Sequence[float] | Mapping[str, float] | None = None,
                 prior: float = 0.01) -> None:
        super().__init__()
        self.label_names = _resolve_labels(num_classes, labels, "localization head")
        if pooling not in POOLINGS:
            raise HeadArgumentError("pooling", f"localization head: pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0 < prior < 1:
            raise HeadArgumentError("prior", f"localization head: prior must lie in (0, 1), got {prior}")
        self.pooling, self.r = pooling, float(r)
        k = len(self.label_names)
        self.pre = (nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
                    if hidden > 0 else nn.Identity())
        self.classifier = nn.Conv2d(hidden if hidden > 0 else in_channels, k, kernel_size=1)
        nn.init.constant_(self.classifier.bias, math.log(prior / (1 - prior)))
        self.register_buffer("thresholds", _thresholds(thresholds, self.label_names), persistent=False)

    @classmethod
    def from_features(cls, info: FeatureInfo, **kwargs: Any) -> LocalizationHead:
        """Build on the last encoder map (2D tasks only)."""
        if info.spatial_dims != 2:
            raise ValueError("the localization head serves image-level (2D) tasks only")
        return cls(info.channels[-1], **kwargs)

    def forward(self, feats: Sequence[Tensor], input_size: Sequence[int] | None = None) -> Tensor:
        """Patch logits ``[B, K, h, w]`` from ``feats[-1]``; ``input_size`` is unused."""
        x = feats[-1]
        if x.dim() != 4:
            raise ValueError(f"localization head needs a 2D map [B, C, h, w], got shape {tuple(x.shape)}")
        return self.classifier(self.pre(x))

    def pool(self, patch_logits: Tensor) -> Tensor:
        """Image logits ``[B, K]`` by this head's MIL pooling."""
        return mil_pool(patch_logits, self.pooling, self.r)

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Probabilities from patch logits ``[B, K, h, w]``.

        Returns:
            ``probs`` ``[B, K]`` (image level), ``pred`` ``[B, K]`` (long, ``probs >= threshold``), ``patch_probs``
            ``[B, K, h, w]`` and ``heatmap`` ``[B, K, *input_size]`` (patch probabilities resized bilinearly; the
            patch map itself when ``input_size`` is None).
        """
        probs = self.pool(logits).sigmoid()
        patch = logits.sigmoid()
        heat = patch
        if input_size is not None and tuple(input_size) != tuple(patch.shape[2:]):
            heat = F.interpolate(patch, size=tuple(input_size), mode="bilinear", align_corners=False)
        pred = (probs >= self.thresholds.to(probs.device)).long()
        return {"probs": probs, "pred": pred, "patch_probs": patch, "heatmap": heat}

