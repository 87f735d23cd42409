"""Inference: prediction (sliding window, writers), ensembles and explanations (CAM, Grad-CAM).

Heavy modules are imported lazily, so ``import medzoo.infer`` stays cheap.

Example:
    >>> from medzoo.infer import Predictor  # doctest: +SKIP
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

# ``cam`` and ``explain`` are submodule names, so their functions are not re-exported here.
__all__ = ["Ensemble", "Predictor", "combine_outputs", "explain_input", "grad_cam", "predict_inputs"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "Ensemble": "medzoo.infer.ensemble", "combine_outputs": "medzoo.infer.ensemble",
    "Predictor": "medzoo.infer.predict", "predict_inputs": "medzoo.infer.predict",
    "grad_cam": "medzoo.infer.cam", "explain_input": "medzoo.infer.explain",
})
