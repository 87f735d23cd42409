"""The zoo: every model reference becomes a model here (:func:`resolve`), with weight loading and its reports,
MedicalNet / ImageNet / TorchXRayVision import, training-checkpoint reading, export, the catalog and verified downloads.

Names resolve lazily so that ``import medzoo.zoo`` stays cheap.

Example:
    >>> from medzoo import zoo
    >>> callable(zoo.resolve) and callable(zoo.load) and callable(zoo.load_medicalnet)
    True
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["LoadReport", "ModelRef", "ResolvedModel", "UnsafeWeightsError", "WeightsSpec", "add_entry",
           "detect_architecture", "export_model", "from_imagenet", "from_medicalnet", "from_torchxrayvision",
           "get_entry", "list_entries", "load", "load_imagenet", "load_medicalnet", "load_pretrained", "parse_ref",
           "read_export_dir", "read_torchxrayvision", "read_weights", "resolve", "write_export_dir"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "LoadReport": "medzoo.zoo.report",
    "ModelRef": "medzoo.zoo.references", "parse_ref": "medzoo.zoo.references",
    "ResolvedModel": "medzoo.zoo.resolver", "resolve": "medzoo.zoo.resolver", "load": "medzoo.zoo.resolver",
    "load_pretrained": "medzoo.zoo.loading",
    "load_medicalnet": "medzoo.zoo.medicalnet", "from_medicalnet": "medzoo.zoo.medicalnet",
    "detect_architecture": "medzoo.zoo.medicalnet",
    "read_weights": "medzoo.zoo.state", "UnsafeWeightsError": "medzoo.zoo.state",
    "write_export_dir": "medzoo.zoo.export", "read_export_dir": "medzoo.zoo.export",
    "WeightsSpec": "medzoo.zoo.spec",
    "get_entry": "medzoo.zoo.catalog", "list_entries": "medzoo.zoo.catalog", "add_entry": "medzoo.zoo.catalog",
    "export_model": "medzoo.zoo.publish",
    "load_imagenet": "medzoo.zoo.imagenet", "from_imagenet": "medzoo.zoo.imagenet",
    "read_torchxrayvision": "medzoo.zoo.txv", "from_torchxrayvision": "medzoo.zoo.txv",
})
