"""Files shipped inside the package: the run and model configs (``configs/``) and the weights catalog
(``weights/catalog.yaml``), read through :mod:`importlib.resources`.

In the repository they live at the top level (``configs/``, ``weights/``) and the package reaches them through the
links ``medzoo/configs`` and ``medzoo/weights``; a wheel (and so any regular or ``--user`` install) carries real
copies at the same places inside the package. Either way the package never looks outside itself.

Example:
    >>> (config_dir("models") / "tb.yaml").is_file()
    True
    >>> catalog_file().name
    'catalog.yaml'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["catalog_file", "config_dir", "package_file"]


def package_file(*parts: str) -> Path:
    """The path of a file or folder shipped inside the ``medzoo`` package (the package is installed unzipped)."""
    return Path(str(files("medzoo").joinpath(*parts)))


def config_dir(kind: str) -> Path:
    """The shipped config folder of ``kind``: ``experiments``, ``models``, ``transfer``, ``align`` or
    ``weak_localization``.

    Raises:
        FileNotFoundError: no such shipped folder, listing the ones there are.
    """
    folder = package_file("configs", kind)
    if not folder.is_dir():
        have = sorted(p.name for p in package_file("configs").iterdir() if p.is_dir())
        raise FileNotFoundError(f"no shipped config folder {kind!r} in {folder.parent}; there are {have}")
    return folder


def catalog_file() -> Path:
    """The packaged weights catalog, ``weights/catalog.yaml``."""
    return package_file("weights", "catalog.yaml")
