"""The preprocessing a model reference expects, and the transforms that apply it (torchvision's
``weights.transforms()``).

:func:`transforms_for` takes a model reference, a resolved model, a model, a contract or ``{kind: contract}`` and
returns the MONAI chain of :func:`medzoo.data.pipeline.build_transforms`: the same chain that training applied
(``stage="train"`` / ``"eval"``) and that ``medzoo predict`` applies (``"predict"``). :func:`preprocessing_of` reads
the contracts a reference declares without loading its weights where it can (catalog entries, export directories).

Example:
    >>> t = transforms_for("resnet10.medicalnet23", stage="predict")
    >>> [type(s).__name__ for s in t.transforms]
    ['ToMetaTensord', 'Transposed', 'ResizeToSized', 'NormaliseIntensityd']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.transforms import Compose
from torch import nn

from medzoo.data.contract import Preprocessing, contract_for, parse_preprocessing
from medzoo.data.pipeline import build_transforms
from medzoo.data.presets import PRESETS, load_preprocessing, medicalnet_contract
from medzoo.zoo.catalog import get_entry
from medzoo.zoo.checkpoint import checkpoint_config, checkpoint_preprocessing, load_checkpoint
from medzoo.zoo.export import METADATA_FILE
from medzoo.zoo.references import parse_ref

__all__ = ["NoContractError", "contracts_of", "preprocessing_of", "require_contract", "transforms_for"]

log = logging.getLogger(__name__)


class NoContractError(ValueError):
    """A model declares no preprocessing for an input kind, and none was given: it would see inputs it never saw."""


def preprocessing_of(ref: str | os.PathLike, **opts: Any) -> dict[str, Preprocessing]:
    """``{kind: contract}`` a model reference declares: a catalog entry's or export's spec, a checkpoint's record
    (or its run config's presets), MedicalNet's contract for ``medicalnet:`` files, ``{}`` for a bare weight file.

    Args:
        ref: a model reference (see :mod:`medzoo.zoo.references`).
        **opts: ``catalog`` for catalog names.
    """
    parsed = parse_ref(ref)
    if parsed.kind == "zoo":
        return dict(get_entry(parsed.target, catalog=opts.get("catalog")).preprocessing)
    if parsed.kind == "export":
        meta_path = Path(parsed.target) / METADATA_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        return parse_preprocessing(meta.get("preprocessing"), f"{meta_path}: preprocessing")
    if parsed.kind == "medicalnet":
        return {"volume": medicalnet_contract()}
    if Path(parsed.target).suffix == ".safetensors":
        return {}
    ckpt = load_checkpoint(parsed.target)
    return checkpoint_preprocessing(ckpt, checkpoint_config(ckpt, parsed.target), parsed.target)


def contracts_of(source: Any) -> dict[str, Preprocessing]:
    """``{kind: contract}`` of a model reference, resolved model, model, contract, mapping, preset name or YAML file."""
    if isinstance(source, Preprocessing):
        return {"volume" if source.dims == 3 else "image": source}
    if isinstance(source, nn.Module):
        return dict(getattr(source, "preprocessing", None) or {})
    if hasattr(source, "model") and hasattr(source, "preprocessing"):  # a ResolvedModel
        return dict(source.preprocessing or {})
    if isinstance(source, Mapping):
        if all(isinstance(v, Preprocessing) for v in source.values()):
            return dict(source)
        return load_preprocessing(source)
    text = str(source)
    if text in PRESETS or text == "none" or Path(text).suffix.lower() in (".yaml", ".yml"):
        return load_preprocessing(text)
    return preprocessing_of(source)


def require_contract(contracts: Mapping[str, Preprocessing] | None, kind: str, who: str) -> Preprocessing:
    """The contract for ``kind``, or a :class:`NoContractError` that says how to give one."""
    contract = contract_for(contracts, kind)
    if contract is not None:
        return contract
    have = f"it declares one for {sorted(contracts)} only" if contracts else "it declares none"
    raise NoContractError(f"{who}: no preprocessing contract for {kind} inputs ({have}); the model would see "
                          f"inputs unlike those it was trained on. Pass --preprocessing NAME|FILE (presets: "
                          f"{', '.join(['none', *PRESETS])}; a YAML file holds a contract, see docs/PREPROCESSING.md)")


def transforms_for(source: Any, stage: str = "predict", kind: str | None = None, augment: bool = True) -> Compose:
    """The MONAI transform chain of a model's preprocessing contract.

    Args:
        source: a model reference (catalog name, export directory, ``ckpt:PATH`` / checkpoint file,
            ``medicalnet:PATH``), a :class:`~medzoo.zoo.resolver.ResolvedModel`, a model carrying
            ``model.preprocessing``, a :class:`~medzoo.data.contract.Preprocessing`, ``{kind: contract}``, or a
            preset name.
        stage: ``train`` (augmented), ``eval`` (training's validation) or ``predict``.
        kind: ``volume``, ``image`` or ``series``; needed when the model declares several kinds.
        augment: with ``train``, add the augmentations.

    Returns:
        A ``Compose`` over ``load_record`` sample dicts (``image``, optional ``mask``, ``meta``).

    Raises:
        NoContractError: the source declares no contract (for ``kind``).
    """
    contracts = contracts_of(source)
    if kind is None:
        if len(contracts) != 1:
            raise ValueError(f"{source}: pass kind=, one of {sorted(contracts)}" if contracts
                             else f"{source}: no preprocessing contract")
        kind = next(iter(contracts))
    return build_transforms(require_contract(contracts, kind, str(source)), stage, kind, augment)
