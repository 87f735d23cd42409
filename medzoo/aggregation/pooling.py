"""Parameter-free pooling over slices: masked mean and masked max (COVNet).

Both keep the feature size (``out_features == in_features``), are invariant to the order of the slices and to
padding, and return no slice weights.

Example:
    >>> import torch
    >>> from medzoo.aggregation import create_aggregator
    >>> x = torch.tensor([[[1.0], [3.0], [float("nan")]]])
    >>> pad = torch.tensor([[False, False, True]])
    >>> create_aggregator("mean", 1)(x, pad), create_aggregator("max", 1)(x, pad)
    (tensor([[2.]]), tensor([[3.]]))
"""

from __future__ import annotations

from torch import Tensor

from medzoo.aggregation.base import AGGREGATORS, Aggregator, masked_mean

__all__ = ["MaxAggregator", "MeanAggregator"]


class MeanAggregator(Aggregator):
    """Mean of the valid slices' features: ``z_b = (1 / n_b) * sum_{k valid} x_bk``.

    Args:
        in_features: per-slice feature size ``F`` (also ``out_features``).

    Example:
        >>> import torch
        >>> MeanAggregator(4)(torch.ones(2, 3, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_features: int) -> None:
        super().__init__(in_features, in_features)

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, None]:
        """``x [B, N, F]``, ``valid [B, N]`` -> ``(z [B, F], None)``."""
        return masked_mean(x, valid), None


class MaxAggregator(Aggregator):
    """Per-feature maximum over the valid slices, as COVNet pools its per-slice ResNet features.

    Padded slices are set to ``-inf`` before the max, so they never win. The gradient goes to the slice that holds
    each feature's maximum (split evenly between exact ties).

    Args:
        in_features: per-slice feature size ``F`` (also ``out_features``).

    Example:
        >>> import torch
        >>> MaxAggregator(4)(torch.ones(2, 3, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_features: int) -> None:
        super().__init__(in_features, in_features)

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, None]:
        """``x [B, N, F]``, ``valid [B, N]`` -> ``(z [B, F], None)``."""
        return x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1), None


@AGGREGATORS.register("mean")
def mean(in_features: int, **kwargs: object) -> MeanAggregator:
    """Masked mean over slices."""
    return MeanAggregator(in_features, **kwargs)


@AGGREGATORS.register("max")
def max_(in_features: int, **kwargs: object) -> MaxAggregator:
    """Masked max over slices (COVNet)."""
    return MaxAggregator(in_features, **kwargs)
