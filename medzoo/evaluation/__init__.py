"""Evaluation: a model (or an ensemble) on a run config's datasets, its metric and AUROC tables with bootstrap CIs
(over patients by default), the CheXNet layout, COVIDx-CT at slice, series and patient level, and heatmaps against
dataset boxes.

It sits above training and inference: it rebuilds models through the zoo, reads datasets as training does, and
explains models as inference does. Names load on first use.

Example:
    >>> from medzoo.evaluation import evaluate_checkpoint  # doctest: +SKIP
    >>> evaluate_checkpoint("configs/experiments/tb.yaml", "runs/tb/best.pt")["test/tb/auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["auroc_ci_table", "bootstrap_tables", "chexnet_report", "chexnet_table", "covidx_ct_tables",
           "ensemble_metrics", "ensemble_predictions", "evaluate_checkpoint", "format_chexnet_table",
           "localization_tables", "metrics_rows", "patient_keys", "score_heatmaps", "write_tables"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "evaluate_checkpoint": "medzoo.evaluation.checkpoint", "ensemble_metrics": "medzoo.evaluation.checkpoint",
    "ensemble_predictions": "medzoo.evaluation.checkpoint", "metrics_rows": "medzoo.evaluation.checkpoint",
    "auroc_ci_table": "medzoo.evaluation.tables", "bootstrap_tables": "medzoo.evaluation.tables",
    "covidx_ct_tables": "medzoo.evaluation.tables", "write_tables": "medzoo.evaluation.tables",
    "patient_keys": "medzoo.evaluation.tables",
    "chexnet_report": "medzoo.evaluation.chexnet", "chexnet_table": "medzoo.evaluation.chexnet",
    "format_chexnet_table": "medzoo.evaluation.chexnet",
    "localization_tables": "medzoo.evaluation.heatmaps", "score_heatmaps": "medzoo.evaluation.heatmaps",
})
