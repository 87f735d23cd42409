"""Utilities for inference and export: BatchNorm folding and the measured CPU inference defaults.

Example:
    >>> from medzoo.utils import fuse_bn, inference_defaults
    >>> callable(fuse_bn) and callable(inference_defaults)
    True
"""

from __future__ import annotations

from medzoo.utils.fuse import find_conv_bn_pairs, fold_conv_bn, fuse_bn
from medzoo.utils.perf import inference_context, inference_defaults

__all__ = ["find_conv_bn_pairs", "fold_conv_bn", "fuse_bn", "inference_context", "inference_defaults"]
