"""``MultiTaskModel``: one encoder shared by task heads, for volumes, images and series of slices or slabs."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medzoo.aggregation.base import Aggregator
from medzoo.heads.base import LEVELS
from medzoo.models.series import check_series, encode_series, pool_features

__all__ = ["MultiTaskModel", "LEVEL_INPUT"]

#: The input kind each task level reads.
LEVEL_INPUT = {"volume": "volume", "image": "image", "slice": "series", "series": "series"}
_NDIM = {"volume": (5,), "image": (4,), "series": (5, 6)}
_SHAPES = {"volume": "[B, C, D, H, W]", "image": "[B, C, H, W]", "series": "[B, N, C, H, W] or [B, N, C, d, H, W]"}


def _check_task(name: str, head: nn.Module, level: str, aggregator: nn.Module | None) -> None:
    """Refuse a head/level combination that does not fit, naming the task's config key."""
    key = f"tasks.{name}"
    if not name or "." in name:
        raise ValueError(f"{key}: a task name must be non-empty and contain no '.'")
    if level not in LEVELS:
        raise ValueError(f"{key}.level: unknown level {level!r}; expected one of {list(LEVELS)}")
    kind = getattr(head, "kind", "vector")
    allowed = getattr(head, "levels", LEVELS)
    if kind == "dense" and LEVEL_INPUT[level] == "series":
        raise ValueError(
            f"{key}.level: a dense (segmentation) head cannot serve level {level!r}: series are pooled per item; "
            "use level 'volume' or 'image'"
        )
    if level not in allowed:
        raise ValueError(f"{key}.level: head {type(head).__name__} serves levels {list(allowed)}, not {level!r}")
    if level == "series" and aggregator is None:
        raise ValueError(f"{key}.level: a series-level task needs an aggregator (set the 'aggregator' block)")


class MultiTaskModel(nn.Module):
    """One shared encoder, task heads keyed by task name, and an optional slice aggregator.

    Each task declares the level it predicts at: ``volume`` (``[B, C, D, H, W]``), ``image`` (``[B, C, H, W]``,
    the encoder's 2D path), ``slice`` (one prediction per item of a series, ``[B, N, K]``) or ``series`` (one
    prediction per aggregated series, ``[B, K]``). A series is ``[B, N, C, H, W]`` (slices) or
    ``[B, N, C, d, H, W]`` (slabs) with ``pad_mask [B, N]`` (True = padding).

    ``forward`` returns logits only; :meth:`predict` applies activations and thresholds.

    Args:
        encoder: a medzoo encoder (``forward(x) -> list of 5 maps``, ``out_channels``).
        heads: task name -> head (see :mod:`medzoo.heads`).
        aggregator: a :class:`~medzoo.aggregation.Aggregator` (``[B, N, F] -> [B, F_out]``); required for
            series-level tasks.
        levels: task name -> level (default ``volume`` for every task).
        max_items_per_chunk: series items per encoder call.
        checkpoint_chunks: activation checkpointing per chunk of series items while training.
        series_mode: ``"packed"`` (encode valid items only) or ``"dense"`` (encode all B*N items, no data-dependent
            indexing: the path exports trace). Both give the same outputs in eval mode.

    Example:
        >>> import torch
        >>> from medzoo.encoders import create_encoder
        >>> from medzoo.heads import ClassificationHead
        >>> enc = create_encoder("resnet10", widths=(8, 16, 32, 64))
        >>> model = MultiTaskModel(enc, {"cls": ClassificationHead(64, num_classes=3)}, levels={"cls": "image"})
        >>> model(torch.zeros(2, 1, 32, 32))["cls"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        encoder: nn.Module,
        heads: Mapping[str, nn.Module],
        aggregator: Aggregator | None = None,
        *,
        levels: Mapping[str, str] | None = None,
        max_items_per_chunk: int = 64,
        checkpoint_chunks: bool = False,
        series_mode: str = "packed",
    ) -> None:
        super().__init__()
        levels = dict(levels or {})
        unknown = sorted(set(levels) - set(heads))
        if unknown:
            raise ValueError(f"levels given for tasks without a head: {unknown}; tasks are {sorted(heads)}")
        if max_items_per_chunk < 1:
            raise ValueError(f"series.max_items_per_chunk must be >= 1, got {max_items_per_chunk}")
        if aggregator is not None and not isinstance(aggregator, Aggregator):
            raise TypeError(f"aggregator must be a medzoo.aggregation.Aggregator (subclass it and implement "
                            f"aggregate(x, valid)), got {type(aggregator).__name__}")
        self.task_levels = {name: levels.get(name, "volume") for name in heads}
        for name, head in heads.items():
            _check_task(name, head, self.task_levels[name], aggregator)
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.aggregator = aggregator
        self.max_items_per_chunk = int(max_items_per_chunk)
        self.checkpoint_chunks = bool(checkpoint_chunks)
        if series_mode not in ("packed", "dense"):
            raise ValueError(f"series_mode must be 'packed' or 'dense', got {series_mode!r}")
        self.series_mode = series_mode
        self._encoder_frozen = False

    # ----------------------------------------------------------------------------------------------- routing
    @property
    def tasks(self) -> list[str]:
        """Task names, in head order."""
        return list(self.heads.keys())

    def input_kind(self, x: Tensor, pad_mask: Tensor | None = None, tasks: Sequence[str] | None = None) -> str:
        """``volume``, ``image`` or ``series``; rank never decides, as ``[B, C, D, H, W]`` and ``[B, N, C, H, W]`` are
        both 5-D.

        A ``pad_mask`` or a requested series/slice-level task makes the input a series. Otherwise a 4-D input is an
        image, a 6-D one a series of slabs, and a 5-D one a volume unless the model has no volume-level task but
        has series ones.
        """
        if tasks is not None:
            if not list(tasks):
                raise ValueError(f"tasks is empty; give task names from {self.tasks} or None for all")
            kinds = {LEVEL_INPUT[self.task_levels[t]] for t in self._check_names(tasks)}
            if len(kinds) > 1:
                by_task = {t: self.task_levels[t] for t in tasks}
                raise ValueError(f"tasks {by_task} read different input kinds {sorted(kinds)}; run them separately")
            return kinds.pop()
        if pad_mask is not None or x.dim() == 6:
            return "series"
        if x.dim() == 4:
            return "image"
        present = {LEVEL_INPUT[lv] for lv in self.task_levels.values()}
        return "series" if x.dim() == 5 and "volume" not in present and "series" in present else "volume"

    def _check_names(self, tasks: Iterable[str]) -> list[str]:
        names = list(tasks)
        for t in names:
            if t not in self.heads:
                close = difflib.get_close_matches(t, self.tasks, n=3)
                hint = f" Did you mean {close}?" if close else ""
                raise KeyError(f"unknown task {t!r}.{hint} Tasks: {self.tasks}")
        return names

    def _route(self, x: Tensor, pad_mask: Tensor | None, tasks: Sequence[str] | None) -> tuple[str, list[str]]:
        kind = self.input_kind(x, pad_mask, tasks)
        if x.dim() not in _NDIM[kind]:
            raise ValueError(f"{kind} input must be {_SHAPES[kind]}, got shape {tuple(x.shape)}")
        if pad_mask is not None and kind != "series":
            raise ValueError(f"pad_mask is for series input, but the requested tasks read {kind} input")
        names = self._check_names(tasks) if tasks is not None else [
            t for t, lv in self.task_levels.items() if LEVEL_INPUT[lv] == kind
        ]
        if not names:
            raise ValueError(
                f"no task of this model reads {kind} input {tuple(x.shape)}; task levels: {self.task_levels}"
            )
        return kind, names

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self, x: Tensor, pad_mask: Tensor | None = None, tasks: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Logits per task.

        Args:
            x: ``[B, C, D, H, W]``, ``[B, C, H, W]``, ``[B, N, C, H, W]`` or ``[B, N, C, d, H, W]``.
            pad_mask: ``[B, N]`` bool for series (True = padding).
            tasks: the tasks to run (default: those whose level matches the input kind).

        Returns:
            ``{task: logits}``: dense ``[B, K, *spatial]``, vector ``[B, K]``, slice-level ``[B, N, K]``
            (zeros at padded positions).
        """
        kind, names = self._route(x, pad_mask, tasks)
        if kind == "series":
            return self._forward_series(x, pad_mask, names)[0]
        feats = self.encoder(x)
        pooled = pool_features(feats[-1])
        return {t: self._run_head(t, feats, pooled, x.shape[2:]) for t in names}

    def _run_head(self, task: str, feats: list[Tensor], pooled: Tensor, size: Sequence[int]) -> Tensor:
        head = self.heads[task]
        return head(feats, tuple(size)) if getattr(head, "kind", "vector") == "dense" else head(pooled)

    def encode_series(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Per-item pooled features ``[B, N, F]`` of a series (zeros at padding); see :mod:`medzoo.models.series`."""
        return self._encode_items(x, check_series(x, pad_mask))

    def _encode_items(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """:meth:`encode_series` for a mask :func:`check_series` already accepted."""
        return encode_series(
            self.encoder, x, pad_mask, max_items_per_chunk=self.max_items_per_chunk,
            checkpoint=self.checkpoint_chunks and self.training, mode=self.series_mode, validate=False,
        )

    def forward_series(
        self, x: Tensor, pad_mask: Tensor | None = None, tasks: Sequence[str] | None = None
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Series logits per task and the aggregator's slice weights, from one encoding of the series.

        Args:
            x: ``[B, N, C, H, W]`` or ``[B, N, C, d, H, W]``.
            pad_mask: ``[B, N]`` bool, True = padding.
            tasks: series- or slice-level tasks (default: all of them).

        Returns:
            ``({task: logits}, weights)`` as :meth:`forward`, with ``weights [B, N]`` from aggregators that have
            them (attention), else None (also when no requested task is series-level).
        """
        pad_mask = pad_mask if pad_mask is not None else torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        _, names = self._route(x, pad_mask, tasks)  # a mask makes the input a series, or names the mismatch
        return self._forward_series(x, pad_mask, names)

    def _forward_series(
        self, x: Tensor, pad_mask: Tensor | None, names: list[str]
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        pad_mask = check_series(x, pad_mask)  # the one check of this batch's mask: nothing below repeats it
        items = self._encode_items(x, pad_mask)
        bag = weights = None
        if any(self.task_levels[t] == "series" for t in names):
            bag, weights = self.aggregator(items, pad_mask, return_weights=True, validate=False)
        out = {}
        for t in names:
            if self.task_levels[t] == "series":
                out[t] = self.heads[t](bag)
            else:
                out[t] = self.heads[t](items).masked_fill(pad_mask.unsqueeze(-1), 0.0)
        return out, weights

    def slice_logits(
        self, x: Tensor, pad_mask: Tensor | None = None, tasks: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Series-level heads applied to each item's pooled features (the slice level of a patient-level task):
        ``{task: [B, N, K]}``.

        Gives slice-level predictions of a patient-level task, for slice metrics; needs an aggregator whose
        ``out_features`` equals the encoder's feature size (mean, max, attention). Padded positions are zero.
        """
        names = self._check_names(tasks) if tasks is not None else [
            t for t, lv in self.task_levels.items() if lv == "series"
        ]
        bad = [t for t in names if self.task_levels[t] != "series"]
        if bad or not names:
            raise ValueError(f"slice_logits needs series-level tasks; got {names} with levels {self.task_levels}")
        feature_dim = getattr(self.encoder, "feature_dim", None)
        for t in names:
            fc = getattr(self.heads[t], "fc", None)
            if fc is not None and feature_dim is not None and fc.in_features != feature_dim:
                raise ValueError(
                    f"slice_logits: task {t!r} reads {fc.in_features} aggregated features, but items have "
                    f"{feature_dim}; use an aggregator that keeps the feature size (mean, max, attention)"
                )
        pad_mask = check_series(x, pad_mask)
        items = self._encode_items(x, pad_mask)
        return {t: self.heads[t](items).masked_fill(pad_mask.unsqueeze(-1), 0.0) for t in names}

    def slice_weights(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor | None:
        """The aggregator's per-item weights ``[B, N]`` (which slices drove the decision), or ``None``."""
        if self.aggregator is None:
            raise ValueError("this model has no aggregator")
        pad_mask = check_series(x, pad_mask)
        return self.aggregator(self._encode_items(x, pad_mask), pad_mask, return_weights=True, validate=False)[1]

    # ----------------------------------------------------------------------------------------------- predict
    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def predict(
        self, x: Tensor, pad_mask: Tensor | None = None, tasks: Sequence[str] | None = None
    ) -> dict[str, dict[str, Tensor]]:
        """Activated predictions per task, in eval mode without gradients (the mode is restored afterwards).

        Returns:
            ``{task: head.activate(logits)}``: ``probs``/``pred`` for classification, multilabel (with thresholds)
            and segmentation (resized to the input size), ``values`` for regression.
        """
        with self._eval_mode():
            logits = self(x, pad_mask=pad_mask, tasks=tasks)
        kind = self.input_kind(x, pad_mask, tasks)
        size = tuple(x.shape[2:]) if kind != "series" else None
        return {t: self.heads[t].activate(v, size) for t, v in logits.items()}

    # ----------------------------------------------------------------------------------------------- training
    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, and its norm statistics stay fixed (eval mode)."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self._encoder_frozen = True
        self.encoder.eval()

    def unfreeze_encoder(self) -> None:
        """Undo :meth:`freeze_encoder`; the encoder follows the model's train/eval mode again."""
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self._encoder_frozen = False
        self.encoder.train(self.training)

    @property
    def encoder_frozen(self) -> bool:
        """Whether :meth:`freeze_encoder` is in effect."""
        return self._encoder_frozen

    def train(self, mode: bool = True) -> MultiTaskModel:
        """Set train/eval mode; a frozen encoder stays in eval mode so its BN statistics do not move."""
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    def param_groups(self, lr: float, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
        """Optimizer groups: the encoder at ``lr``, heads and aggregator at ``lr * head_lr_mult``.

        Frozen encoder parameters are included (optimizers skip parameters without gradients), so unfreezing later
        needs no new optimizer.

        Example:
            >>> # torch.optim.SGD(model.param_groups(1e-3, head_lr_mult=100), momentum=0.9)
        """
        new = [p for name, p in self.named_parameters() if not name.startswith("encoder.")]
        return [
            {"name": "encoder", "params": list(self.encoder.parameters()), "lr": lr},
            {"name": "heads", "params": new, "lr": lr * head_lr_mult},
        ]
