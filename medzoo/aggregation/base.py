"""The aggregator contract, its registry and the masking helpers every aggregator shares.

An aggregator turns a padded batch of per-slice features into one vector per series:

- input ``x [B, N, F]`` (``F == in_features``) and ``pad_mask [B, N]`` (bool, True = padding, PyTorch's
  convention) or ``None`` (every slice valid);
- output ``z [B, out_features]``, in the dtype of ``x``;
- ``return_weights=True`` returns ``(z, weights)``: ``weights [B, N]`` for attention aggregators (a softmax over the
  valid slices, exactly 0 at padding) and ``None`` for the others. There are no other tuple outputs.

Padded positions may hold anything, NaN and Inf included: they are replaced with ``masked_fill`` before any
arithmetic, so they never reach the output and get exactly zero gradient. A series whose slices are all padding
raises a ``ValueError`` naming its batch index (the check is skipped while tracing or exporting, where it would be a
data-dependent branch). :func:`check_pad_mask` is that check; ``MultiTaskModel`` runs it once per series batch and
calls the aggregator with ``validate=False``, while a direct call validates.

Example:
    >>> import torch
    >>> from medzoo.aggregation import create_aggregator
    >>> agg = create_aggregator("attention", 8)
    >>> x = torch.randn(2, 5, 8)
    >>> pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    >>> z, w = agg(x, pad, return_weights=True)
    >>> tuple(z.shape), tuple(w.shape)
    ((2, 8), (2, 5))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medzoo.registry import Registry

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "check_pad_mask",
    "compact_valid",
    "create_aggregator",
    "list_aggregators",
    "masked_mean",
    "zero_padding",
]

AGGREGATORS = Registry("aggregator")


def create_aggregator(name: str, in_features: int, **kwargs: Any) -> Aggregator:
    """Build a registered aggregator.

    Args:
        name: a name from :func:`list_aggregators` (``mean``, ``max``, ``attention``, ``gated_attention``,
            ``transformer``, ``lstm``).
        in_features: the per-slice feature size ``F``.
        **kwargs: options of that aggregator's class.

    Returns:
        The aggregator; its ``out_features`` is the size of the pooled vector.

    Raises:
        KeyError: unknown name (the message lists the valid ones).

    Example:
        >>> create_aggregator("mean", 16).out_features
        16
    """
    return AGGREGATORS.get(name)(in_features, **kwargs)


def list_aggregators(pattern: str = "*") -> list[str]:
    """Sorted names of the registered aggregators that match a shell-style ``pattern``.

    Example:
        >>> "gated_attention" in list_aggregators()
        True
    """
    return AGGREGATORS.list(pattern)


def zero_padding(x: Tensor, valid: Tensor) -> Tensor:
    """Return ``x [B, N, F]`` with padded slices set to 0 (``valid [B, N]``, True = keep).

    ``masked_fill`` (not a multiplication) keeps NaN/Inf junk out and gives padded positions exactly zero gradient.
    """
    return x.masked_fill(~valid.unsqueeze(-1), 0.0)


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x [B, N, F]`` over the valid slices (``valid [B, N]``) -> ``[B, F]``."""
    count = valid.sum(dim=1, keepdim=True).to(x.dtype)
    return zero_padding(x, valid).sum(dim=1) / count


def compact_valid(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Move each series' valid slices to the front, keeping their order.

    Args:
        x: features ``[B, N, F]``.
        valid: ``[B, N]`` bool, True = valid slice.

    Returns:
        ``(x_compact [B, N, F], lengths [B])``: row ``b`` holds its ``lengths[b]`` valid slices first, in their
        original order, then the padded ones.
    """
    order = torch.argsort((~valid).to(torch.int32), dim=1, stable=True)
    x_compact = x.gather(1, order.unsqueeze(-1).expand_as(x))
    return x_compact, valid.sum(dim=1)


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def check_pad_mask(pad_mask: Tensor | None, batch_shape: Sequence[int], device: torch.device,
                   name: str = "series") -> Tensor:
    """Validate a series padding mask and return it on ``device`` (all False when ``None``).

    Args:
        pad_mask: ``[B, N]`` bool, True = padding, or None.
        batch_shape: the expected ``(B, N)``.
        device: where the mask is returned.
        name: who checks, for the messages.

    Raises:
        TypeError: a mask that is not bool.
        ValueError: a mask of another shape, or a series whose slices are all padding (not checked while tracing or
            exporting, where it would be a data-dependent branch).

    Example:
        >>> check_pad_mask(None, (2, 3), torch.device("cpu")).shape
        torch.Size([2, 3])
    """
    batch_shape = tuple(batch_shape)  # sizes stay symbolic under torch.export
    if pad_mask is None:
        return torch.zeros(batch_shape, dtype=torch.bool, device=device)  # eager only: tracing passes a mask
    if pad_mask.dtype != torch.bool:
        raise TypeError(f"{name}: pad_mask must be a bool tensor (True = padding), got {pad_mask.dtype}")
    if tuple(pad_mask.shape) != batch_shape:
        raise ValueError(f"{name}: pad_mask has shape {tuple(pad_mask.shape)}, expected [B, N] = {batch_shape}")
    # Moved only when needed: a traced .to(device) would pin the exporting machine's device into the graph.
    pad_mask = pad_mask if pad_mask.device == device else pad_mask.to(device)
    if not _is_exporting():
        empty = pad_mask.all(dim=1).nonzero().flatten().tolist()
        if empty:
            where = f"index {empty[0]}" if len(empty) == 1 else f"indices {', '.join(map(str, empty))}"
            raise ValueError(f"{name}: the series at batch {where} has no valid slice (pad_mask row all True); "
                             "every series needs at least one slice")
    return pad_mask


class Aggregator(nn.Module):
    """Base class: validates the inputs, then calls :meth:`aggregate` on the valid-slice mask.

    Subclasses set ``in_features`` and ``out_features`` and implement :meth:`aggregate`; the class attribute
    ``has_weights`` says whether it returns slice weights.

    Args:
        in_features: per-slice feature size ``F``.
        out_features: size of the pooled vector.
    """

    has_weights: ClassVar[bool] = False

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if int(in_features) < 1:
            raise ValueError(f"{type(self).__name__}: in_features must be a positive int, got {in_features!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)

    def forward(
        self, x: Tensor, pad_mask: Tensor | None = None, return_weights: bool = False, *, validate: bool = True
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Aggregate a padded batch of slice features.

        Args:
            x: ``[B, N, F]`` slice features; padded positions may hold any value.
            pad_mask: ``[B, N]`` bool, True = padding; ``None`` means every slice is valid.
            return_weights: also return the ``[B, N]`` slice weights (``None`` for aggregators without).
            validate: check ``x`` and ``pad_mask`` (:func:`check_pad_mask`); False for callers that already did,
                such as ``MultiTaskModel``.

        Returns:
            ``z [B, out_features]``, or ``(z, weights)`` when ``return_weights`` is True.
        """
        if validate:
            self._check_features(x)
            pad_mask = check_pad_mask(pad_mask, x.shape[:2], x.device, type(self).__name__)
        elif pad_mask is None:
            pad_mask = x.new_zeros(x.shape[:2], dtype=torch.bool)
        z, weights = self.aggregate(x, ~pad_mask)
        return (z, weights) if return_weights else z

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Pool ``x [B, N, F]`` over the slices where ``valid [B, N]`` is True -> ``(z [B, F_out], weights)``."""
        raise NotImplementedError

    def _check_features(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.ndim != 3:
            raise ValueError(f"{name}: expected x of shape [B, N, F], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected floating-point x, got {x.dtype}")
        if x.shape[2] != self.in_features:
            raise ValueError(f"{name}: x has {x.shape[2]} features per slice (last dim), expected {self.in_features}")
        if x.shape[1] == 0:
            raise ValueError(f"{name}: x has no slices (N = 0)")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
