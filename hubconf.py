"""torch.hub entry points: ``torch.hub.load(repo_dir, "resnet18", source="local")`` builds a medzoo encoder.

One entry point per registered encoder name (``resnet10`` ... ``resnet200``, ``densenet121``), taking
``create_encoder``'s keyword arguments plus ``weights`` (a catalog name, an export directory or ``medicalnet:PATH``
whose encoder is loaded, with the report in ``encoder.load_report``), and ``zoo(name, **kw)``, which returns the
model of any model reference (``medzoo.zoo.load``). Nothing here touches the network unless
``weights`` names an entry that is not cached yet.

Example:
    >>> import torch  # doctest: +SKIP
    >>> enc = torch.hub.load(".", "resnet18", source="local", widths=(8, 16, 32, 64))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch.hub.list lists every public callable, so keep typing names out of the namespace
    from typing import Any

dependencies = ["torch", "monai"]

__all__ = ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200", "densenet121", "zoo"]


def _encoder(name: str, weights: str | None, kwargs: dict[str, Any]) -> Any:
    # Imports stay inside the entry points: torch.hub.list() would list every imported callable as a model.
    from medzoo.encoders import create_encoder
    from medzoo.zoo.loading import load_pretrained

    encoder = create_encoder(name, **kwargs)
    if weights is not None:
        load_pretrained(encoder, weights, parts=["encoder"])
    return encoder


def resnet10(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-10 encoder (``create_encoder("resnet10", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet10", weights, kwargs)


def resnet18(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-18 encoder (``create_encoder("resnet18", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet18", weights, kwargs)


def resnet34(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-34 encoder (``create_encoder("resnet34", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet34", weights, kwargs)


def resnet50(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-50 encoder (``create_encoder("resnet50", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet50", weights, kwargs)


def resnet101(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-101 encoder (``create_encoder("resnet101", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet101", weights, kwargs)


def resnet152(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-152 encoder (``create_encoder("resnet152", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet152", weights, kwargs)


def resnet200(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo ResNet-200 encoder (``create_encoder("resnet200", **kwargs)``), optionally with ``weights`` loaded."""
    return _encoder("resnet200", weights, kwargs)


def densenet121(weights: str | None = None, **kwargs: Any) -> Any:
    """medzoo 2D DenseNet-121 encoder (``create_encoder("densenet121", **kwargs)``), optionally with ``weights``."""
    return _encoder("densenet121", weights, kwargs)


def zoo(name: str, **kwargs: Any) -> Any:
    """The model of a model reference: a catalog entry, an export directory, ``ckpt:PATH`` or ``medicalnet:PATH``
    (``medzoo.zoo.load(name, **kwargs)[0]``)."""
    from medzoo.zoo.resolver import load

    return load(name, **kwargs)[0]
