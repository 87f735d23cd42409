"""Slice aggregators: pool a padded batch of per-slice features ``[B, N, F]`` to one vector per series ``[B, F_out]``.

Registered names (:func:`list_aggregators`): ``mean``, ``max`` (COVNet), ``attention`` and ``gated_attention``
(Ilse et al. 2018, with slice weights), ``transformer`` and ``lstm`` (order-aware). The contract is in
:mod:`medzoo.aggregation.base`.

Example:
    >>> import torch
    >>> from medzoo.aggregation import create_aggregator
    >>> agg = create_aggregator("max", 8)
    >>> agg(torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool)).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from medzoo.aggregation.attention import AttentionMIL
from medzoo.aggregation.base import AGGREGATORS, Aggregator, create_aggregator, list_aggregators
from medzoo.aggregation.pooling import MaxAggregator, MeanAggregator
from medzoo.aggregation.sequence import LSTMAggregator, TransformerAggregator

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "AttentionMIL",
    "LSTMAggregator",
    "MaxAggregator",
    "MeanAggregator",
    "TransformerAggregator",
    "create_aggregator",
    "list_aggregators",
]
