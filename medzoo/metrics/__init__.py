"""Metrics as pure functions: AUROC with bootstrap CIs, classification, regression, segmentation overlap and
heatmap localisation. Everyone may import them: they depend on numpy, scipy and torch only, never on the rest of
medzoo.

Missing targets are NaN and are left out per label; an undefined metric (0/0, a single class present) is NaN.

Example:
    >>> import numpy as np
    >>> from medzoo.metrics import auroc
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
"""

from __future__ import annotations

from medzoo.metrics.auroc import AurocCI, auroc, auroc_bootstrap_ci, mean_auroc
from medzoo.metrics.classification import (
    PatientPredictions,
    aggregate_by_patient,
    binary_metrics,
    classification_metrics,
    confusion_matrix,
    one_hot_targets,
)
from medzoo.metrics.regression import mae, r2_score, regression_metrics
from medzoo.metrics.segmentation import dice_per_class, iou_per_class

__all__ = ["AurocCI", "PatientPredictions", "aggregate_by_patient", "auroc", "auroc_bootstrap_ci", "binary_metrics",
           "classification_metrics", "confusion_matrix", "dice_per_class", "iou_per_class", "mae", "mean_auroc",
           "one_hot_targets", "r2_score", "regression_metrics"]
