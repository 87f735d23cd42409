"""Model references: the strings a user passes to name a model, and how each one is told apart.

- ``zoo``: ``NAME`` or ``zoo:NAME``, a catalog entry (``medzoo list``), downloaded and verified;
- ``export``: ``DIR``, an export directory (``model.safetensors`` + ``config.yaml`` + ``metadata.json``);
- ``checkpoint``: ``ckpt:PATH``, a training checkpoint (``best.pt`` / ``last.pt``);
- ``medicalnet``: ``medicalnet:PATH``, a MedicalNet (Med3D) ``.pth`` file;
- ``file``: ``PATH`` of an existing file, a training checkpoint or a plain weight file.

A bare path that does not exist is an error (it never falls through to a catalog lookup when it names a folder).
:func:`medzoo.zoo.resolve` turns a reference into a model; :func:`medzoo.zoo.load_pretrained` loads one into an
existing model.

Example:
    >>> parse_ref("zoo:resnet18.medicalnet23")
    ModelRef(kind='zoo', target='resnet18.medicalnet23', text='zoo:resnet18.medicalnet23')
    >>> parse_ref("medicalnet:pretrain/resnet_18.pth").kind
    'medicalnet'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medzoo.zoo.export import is_export_dir

__all__ = ["REF_KINDS", "ModelRef", "parse_ref"]

REF_KINDS = ("zoo", "export", "checkpoint", "medicalnet", "file")
_PREFIXES = {"zoo:": "zoo", "ckpt:": "checkpoint", "medicalnet:": "medicalnet"}


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference.

    Attributes:
        kind: one of :data:`REF_KINDS`.
        target: the catalog name or the path (prefix removed, ``~`` expanded for paths).
        text: the reference as given.
    """

    kind: str
    target: str
    text: str


def parse_ref(ref: str | os.PathLike) -> ModelRef:
    """Tell which kind of model reference ``ref`` is (see the module docstring).

    Raises:
        FileNotFoundError: a path-like reference (with a folder separator) that names nothing usable.
        ValueError: an empty reference or a prefix without a target.
    """
    text = os.fspath(ref)
    if not text.strip():
        raise ValueError("empty model reference; expected a catalog name, an export directory, ckpt:PATH, "
                         "medicalnet:PATH or a weight file")
    for prefix, kind in _PREFIXES.items():
        if text.startswith(prefix):
            target = text[len(prefix):]
            if not target:
                raise ValueError(f"model reference {text!r}: {prefix} needs a target, e.g. {prefix}NAME_OR_PATH")
            return ModelRef(kind, target if kind == "zoo" else str(Path(target).expanduser()), text)
    path = Path(text).expanduser()
    if is_export_dir(path):
        return ModelRef("export", str(path), text)
    if path.is_file():
        return ModelRef("file", str(path), text)
    if path.exists() or os.sep in text:
        raise FileNotFoundError(f"{text}: not an export directory (model.safetensors + config.yaml) or a weight file")
    return ModelRef("zoo", text, text)
