"""medzoo: a MedicalNet-style model zoo for medical imaging.

Public names are resolved lazily, so ``import medzoo`` stays cheap and has no side effects.

Example:
    >>> import medzoo
    >>> enc = medzoo.create_encoder("resnet10", widths=(8, 16, 32, 64))
    >>> enc.out_channels
    (8, 8, 16, 32, 64)
"""

from __future__ import annotations

import importlib
from typing import Any

from medzoo.version import __version__

__all__ = ["__version__", "create_encoder", "create_model", "list_encoders", "load_config", "zoo"]

_LAZY = {
    "create_encoder": ("medzoo.encoders", "create_encoder"),
    "list_encoders": ("medzoo.encoders", "list_encoders"),
    "create_model": ("medzoo.models", "create_model"),
    "load_config": ("medzoo.config", "load_config"),
    "zoo": ("medzoo.zoo", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medzoo' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted(__all__)
