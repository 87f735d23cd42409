"""``MultiTaskModel`` (one encoder, task heads, optional slice aggregator), series encoding and ``create_model``.

Example:
    >>> from medzoo.models import MultiTaskModel
    >>> MultiTaskModel.__name__
    'MultiTaskModel'
"""

from __future__ import annotations

from medzoo.models.factory import build_heads, create_model
from medzoo.models.multitask import LEVEL_INPUT, MultiTaskModel
from medzoo.models.series import encode_series, pool_features

__all__ = ["LEVEL_INPUT", "MultiTaskModel", "build_heads", "create_model", "encode_series", "pool_features"]
