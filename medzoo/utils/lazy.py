"""One helper for package faces whose public names load on first use (PEP 562 module ``__getattr__``).

A package lists ``name -> module`` and its subpackages; nothing is imported until a name is asked for, so
``import medzoo`` and ``import medzoo.data`` stay cheap (no torch, no image decoders) and have no side effects.

Example:
    >>> __getattr__, __dir__ = lazy_attach("medzoo", {"load_config": "medzoo.config"})
    >>> __getattr__("load_config").__name__
    'load_config'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_attach"]


def lazy_attach(package: str, names: Mapping[str, str], submodules: Sequence[str] = (),
                eager: Sequence[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> the module that defines it under the same name.
        submodules: subpackages (or modules) of ``package`` that ``package.<name>`` imports on first use.
        eager: names the package defines itself, listed by ``dir()`` beside the lazy ones.

    Raises:
        AttributeError (from ``__getattr__``): a name the package does not have, naming the package.
    """
    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*names, *submodules, *eager})

    return __getattr__, __dir__
