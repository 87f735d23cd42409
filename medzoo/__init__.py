"""medzoo: a MedicalNet-style model zoo for medical imaging.

Public names and subpackages are resolved lazily, so ``import medzoo`` stays cheap and has no side effects, and
``medzoo.data`` (or any other subpackage) works without a separate import.

Example:
    >>> import medzoo
    >>> enc = medzoo.create_encoder("resnet10", widths=(8, 16, 32, 64))
    >>> enc.out_channels
    (8, 8, 16, 32, 64)
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach
from medzoo.version import __version__

__all__ = ["__version__", "create_encoder", "create_model", "list_encoders", "load_config", "zoo"]

SUBPACKAGES = ("aggregation", "cli", "config", "data", "encoders", "evaluation", "experiment", "heads", "infer",
               "metrics", "models", "registry", "train", "utils", "zoo")

__getattr__, __dir__ = lazy_attach(__name__, {
    "create_encoder": "medzoo.encoders", "list_encoders": "medzoo.encoders", "create_model": "medzoo.models",
    "load_config": "medzoo.config",
}, submodules=SUBPACKAGES, eager=__all__)
