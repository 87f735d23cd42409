"""The zoo: weight loading with reports, MedicalNet / ImageNet / TorchXRayVision import, export, catalog, downloads.

Names resolve lazily so that ``import medzoo.zoo`` stays cheap.

Example:
    >>> from medzoo import zoo
    >>> callable(zoo.load_medicalnet)
    True
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LoadReport", "load_medicalnet", "from_medicalnet", "detect_architecture", "read_weights",
           "UnsafeWeightsError", "write_export_dir", "read_export_dir", "WeightsSpec", "get_entry", "list_entries",
           "add_entry", "download", "load", "load_pretrained", "load_model", "export_model", "publish",
           "load_imagenet", "from_imagenet", "read_torchxrayvision", "from_torchxrayvision"]

_LAZY = {
    "LoadReport": "medzoo.zoo.report",
    "load_medicalnet": "medzoo.zoo.medicalnet",
    "from_medicalnet": "medzoo.zoo.medicalnet",
    "detect_architecture": "medzoo.zoo.medicalnet",
    "read_weights": "medzoo.zoo.state",
    "UnsafeWeightsError": "medzoo.zoo.state",
    "write_export_dir": "medzoo.zoo.export",
    "read_export_dir": "medzoo.zoo.export",
    "WeightsSpec": "medzoo.zoo.spec",
    "get_entry": "medzoo.zoo.catalog",
    "list_entries": "medzoo.zoo.catalog",
    "add_entry": "medzoo.zoo.catalog",
    "download": "medzoo.zoo.download",
    "load": "medzoo.zoo.load",
    "load_pretrained": "medzoo.zoo.load",
    "load_model": "medzoo.zoo.load",
    "export_model": "medzoo.zoo.publish",
    "publish": "medzoo.zoo.publish",
    "load_imagenet": "medzoo.zoo.imagenet",
    "from_imagenet": "medzoo.zoo.imagenet",
    "read_torchxrayvision": "medzoo.zoo.txv",
    "from_torchxrayvision": "medzoo.zoo.txv",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medzoo.zoo' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
