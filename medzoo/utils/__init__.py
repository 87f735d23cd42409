"""Small utilities every floor may use: the torch device, BatchNorm folding, the CPU inference defaults, the one
table renderer and the lazy package faces.

Names load on first use, so that ``import medzoo`` (which uses :mod:`medzoo.utils.lazy`) stays torch-free.

Example:
    >>> from medzoo.utils import fuse_bn, inference_defaults
    >>> callable(fuse_bn) and callable(inference_defaults)
    True
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["find_conv_bn_pairs", "fold_conv_bn", "fuse_bn", "inference_context", "inference_defaults", "lazy_attach",
           "render", "resolve_device", "torch_threads"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "find_conv_bn_pairs": "medzoo.utils.fuse", "fold_conv_bn": "medzoo.utils.fuse", "fuse_bn": "medzoo.utils.fuse",
    "inference_context": "medzoo.utils.perf", "inference_defaults": "medzoo.utils.perf",
    "torch_threads": "medzoo.utils.perf",
    "render": "medzoo.utils.tables", "resolve_device": "medzoo.utils.device",
}, eager=["lazy_attach"])
