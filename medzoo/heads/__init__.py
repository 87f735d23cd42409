"""Task heads: segmentation decoders, MedicalNet's seg head, classification, multilabel and regression.

Heads return logits; only ``MultiTaskModel.predict`` (through :meth:`Head.activate`) applies activations.

Example:
    >>> from medzoo.heads import list_heads
    >>> "medicalnet_seg" in list_heads()
    True
"""

from __future__ import annotations

from medzoo.heads.base import (
    HEADS,
    LEVELS,
    FeatureInfo,
    Head,
    HeadArgumentError,
    create_head,
    default_label_names,
    list_heads,
)
from medzoo.heads.localization import POOLINGS, LocalizationHead, mil_pool
from medzoo.heads.medicalnet import MedicalNetSegHead
from medzoo.heads.segmentation import SegmentationHead
from medzoo.heads.vector import ClassificationHead, MultilabelHead, RegressionHead

__all__ = [
    "HEADS",
    "ClassificationHead",
    "MultilabelHead",
    "RegressionHead",
    "SegmentationHead",
    "LEVELS",
    "FeatureInfo",
    "Head",
    "HeadArgumentError",
    "MedicalNetSegHead",
    "create_head",
    "default_label_names",
    "list_heads",
    "LocalizationHead",
    "POOLINGS",
    "mil_pool",
]
