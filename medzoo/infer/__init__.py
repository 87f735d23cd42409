"""Inference: prediction (sliding window, writers), explanations (CAM, Grad-CAM) and localisation metrics.

Heavy modules are imported lazily, so ``import medzoo.infer`` stays cheap.

Example:
    >>> from medzoo.infer import Predictor  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# ``cam`` and ``explain`` are submodule names, so their functions are not re-exported here.
__all__ = ["Ensemble", "Predictor", "combine_outputs", "explain_input", "grad_cam", "predict_inputs", "resolve_model"]

_LAZY = {
    "Ensemble": "medzoo.infer.ensemble", "combine_outputs": "medzoo.infer.ensemble",
    "Predictor": "medzoo.infer.predict", "predict_inputs": "medzoo.infer.predict",
    "resolve_model": "medzoo.infer.predict", "grad_cam": "medzoo.infer.cam",
    "explain_input": "medzoo.infer.explain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medzoo.infer' has no attribute {name!r}")
