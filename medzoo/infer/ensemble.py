"""Ensembles (Wehbe et al. 2020): average the members' probabilities per task, optionally weighted.

Only tasks present in every member, with the same output type, are kept, and within a task only the labels every
member predicts (in the first member's order). A classification task restricted to fewer classes than a member has
is renormalised so its probabilities sum to 1. Multilabel thresholds are the weighted mean of the members'.
Segmentation probabilities are averaged voxel-wise on the input's grid (each member maps back with its own
preprocessing contract first). Regression values are averaged. No shared task is an error.

Example:
    >>> import numpy as np
    >>> from medzoo.infer.predict import TaskOutput
    >>> a = {"cls": TaskOutput("cls", "classification", ("x", "y"), probs=np.array([0.2, 0.8]))}
    >>> b = {"cls": TaskOutput("cls", "classification", ("x", "y"), probs=np.array([0.6, 0.4]))}
    >>> combine_outputs([a, b])["cls"].probs.round(6).tolist()
    [0.4, 0.6]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medzoo.infer.predict import Predictor, TaskOutput

__all__ = ["Ensemble", "EnsembleError", "combine_outputs", "shared_tasks"]

log = logging.getLogger(__name__)


class EnsembleError(ValueError):
    """The members share no task (or no label of a task), or the weights do not fit."""


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray([float(v) for v in weights], dtype=np.float64)
    if len(w) != n:
        raise EnsembleError(f"{len(w)} weights for {n} ensemble members; give one weight per --model")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise EnsembleError(f"ensemble weights must be finite and >= 0 with a positive sum, got {w.tolist()}")
    return w / w.sum()


def shared_tasks(members: Sequence[Mapping[str, tuple[str, tuple[str, ...]]]]) -> dict[str, tuple[str, ...]]:
    """Tasks (with a common type) and their common labels across members.

    Args:
        members: per member, ``{task: (type, labels)}``.

    Returns:
        ``{task: common labels in the first member's order}``.

    Raises:
        EnsembleError: no task is shared, naming each member's tasks.
    """
    first = members[0]
    out = {}
    for task, (kind, labels) in first.items():
        if not all(task in m and m[task][0] == kind for m in members[1:]):
            continue
        common = [lab for lab in labels if all(lab in m[task][1] for m in members[1:])]
        if common:
            out[task] = tuple(common)
        else:
            log.warning("ensemble: task %r has no label common to all members; it is left out", task)
    if not out:
        listing = "; ".join(f"member {i}: {sorted(f'{t} ({k})' for t, (k, _) in m.items())}"
                            for i, m in enumerate(members))
        raise EnsembleError(f"the ensemble members share no task with a common type and label ({listing})")
    return out


def _pick(o: TaskOutput, labels: tuple[str, ...], attr: str) -> np.ndarray | None:
    v = getattr(o, attr)
    if v is None:
        return None
    idx = [o.labels.index(lab) for lab in labels]
    return v[idx] if attr != "slice_probs" else v[:, idx]


def combine_outputs(outputs: Sequence[Mapping[str, TaskOutput]],
                    weights: Sequence[float] | None = None) -> dict[str, TaskOutput]:
    """Weighted mean of the members' outputs for one input, over shared tasks and labels.

    Args:
        outputs: per member, ``{task: TaskOutput}`` for the same input.
        weights: one per member (normalised to sum 1); default equal.

    Raises:
        EnsembleError: nothing shared, or bad weights.
    """
    if not outputs:
        raise EnsembleError("an ensemble needs at least one member")
    w = _weights(weights, len(outputs))
    common = shared_tasks([{t: (o.type, o.labels) for t, o in m.items()} for m in outputs])
    combined = {}
    for task, labels in common.items():
        members = [m[task] for m in outputs]
        fields: dict[str, Any] = {}
        for attr in ("probs", "values", "thresholds", "slice_probs"):
            parts = [_pick(o, labels, attr) for o in members]
            if all(p is not None for p in parts):
                shapes = {p.shape for p in parts}
                if len(shapes) > 1:
                    raise EnsembleError(f"task {task!r}: members give {attr} of different shapes {sorted(shapes)}")
                fields[attr] = sum(wi * p for wi, p in zip(w, parts))
        kind = members[0].type
        if kind == "classification" and len(labels) < len(members[0].labels):
            fields["probs"] = fields["probs"] / fields["probs"].sum(axis=0, keepdims=True)
            fields.pop("slice_probs", None)
        combined[task] = TaskOutput(task, kind, labels, **fields)
    return combined


class Ensemble:
    """Several predictors on the same inputs, combined with :func:`combine_outputs`.

    Each member applies its own preprocessing contract, so models trained on different spacings or sizes
    can be ensembled; outputs are compared on the input's grid.

    Args:
        members: :class:`~medzoo.infer.predict.Predictor` objects.
        weights: one per member (default equal).

    Example:
        >>> # Ensemble([Predictor.from_ref("a"), Predictor.from_ref("b")], weights=[2, 1])
    """

    def __init__(self, members: Sequence[Predictor], weights: Sequence[float] | None = None) -> None:
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        self.members = list(members)
        self.weights = _weights(weights, len(self.members))
        self.tasks = shared_tasks([
            {t: (p._output(t).type, p._output(t).labels) for t in p.tasks} for p in self.members
        ])

    def predict_loaded(self, loaded: Any) -> dict[str, TaskOutput]:
        """Every member's prediction on one read input, averaged."""
        return combine_outputs([m.predict_loaded(loaded) for m in self.members], self.weights)

    def batchable(self, item: Any) -> bool:
        """Whether every member runs ``item`` in batches (see :meth:`Predictor.batchable`)."""
        return all(m.batchable(item) for m in self.members)

    def prepare_input(self, loaded: Any) -> tuple[Any, ...]:
        """Each member's prepared input (members may have different contracts)."""
        return tuple(m.prepare_input(loaded) for m in self.members)

    def predict_prepared(self, preps: Sequence[tuple[Any, ...]]) -> list[dict[str, TaskOutput]]:
        """Each member's batched predictions (:meth:`Predictor.predict_prepared`), averaged per input."""
        per_member = [m.predict_prepared([p[j] for p in preps]) for j, m in enumerate(self.members)]
        return [combine_outputs([outs[i] for outs in per_member], self.weights) for i in range(len(preps))]

    def predict_array(self, array: np.ndarray, kind: str, meta: dict[str, Any] | None = None) -> dict[str, TaskOutput]:
        """As :meth:`Predictor.predict_array`, averaged over members."""
        return combine_outputs([m.predict_array(array, kind, meta) for m in self.members], self.weights)
