"""The zoo: every model reference becomes a model here (:func:`resolve`), with weight loading and its reports,
MedicalNet / ImageNet / TorchXRayVision import, training-checkpoint reading, export, the catalog and verified downloads,
and the preprocessing every model reference expects (:func:`transforms_for`).

Names resolve lazily so that ``import medzoo.zoo`` stays cheap.

Example:
    >>> from medzoo import zoo
    >>> callable(zoo.resolve) and callable(zoo.load) and callable(zoo.load_medicalnet)
    True
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["add_entry", "detect_architecture", "export_model", "FlexUNetResNet", "from_imagenet", "from_medicalnet",
           "from_torchxrayvision", "get_entry", "list_entries", "load", "load_imagenet", "load_medicalnet",
           "load_pretrained", "LoadReport", "ModelRef", "parse_ref", "Preprocessing", "preprocessing_of",
           "read_export_dir", "read_torchxrayvision", "read_weights", "register_flexible_unet_backbone",
           "register_flexible_unet_backbones", "resolve", "ResolvedModel", "transforms_for", "UnsafeWeightsError",
           "WeightsSpec", "write_export_dir"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "LoadReport": "medzoo.zoo.report",
    "ModelRef": "medzoo.zoo.references", "parse_ref": "medzoo.zoo.references",
    "ResolvedModel": "medzoo.zoo.resolver", "resolve": "medzoo.zoo.resolver", "load": "medzoo.zoo.resolver",
    "load_pretrained": "medzoo.zoo.loading",
    "load_medicalnet": "medzoo.zoo.medicalnet", "from_medicalnet": "medzoo.zoo.medicalnet",
    "detect_architecture": "medzoo.zoo.medicalnet",
    "read_weights": "medzoo.zoo.state", "UnsafeWeightsError": "medzoo.zoo.state",
    "write_export_dir": "medzoo.zoo.export", "read_export_dir": "medzoo.zoo.export",
    "WeightsSpec": "medzoo.zoo.spec", "Preprocessing": "medzoo.zoo.spec",
    "transforms_for": "medzoo.zoo.preprocessing", "preprocessing_of": "medzoo.zoo.preprocessing",
    "get_entry": "medzoo.zoo.catalog", "list_entries": "medzoo.zoo.catalog", "add_entry": "medzoo.zoo.catalog",
    "export_model": "medzoo.zoo.publish",
    "load_imagenet": "medzoo.zoo.imagenet", "from_imagenet": "medzoo.zoo.imagenet",
    "read_torchxrayvision": "medzoo.zoo.txv", "from_torchxrayvision": "medzoo.zoo.txv",
    "FlexUNetResNet": "medzoo.zoo.flexible_unet", "register_flexible_unet_backbone": "medzoo.zoo.flexible_unet",
    "register_flexible_unet_backbones": "medzoo.zoo.flexible_unet",
})
