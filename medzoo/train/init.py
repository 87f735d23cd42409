"""Starting weights of a run: ``scratch``, ``zoo:NAME``, ``medicalnet:PATH`` or ``ckpt:PATH`` (``init:`` config).

Every load returns and logs a :class:`~medzoo.zoo.report.LoadReport`. ``parts`` selects submodules (``encoder``,
``heads``, ``aggregator``); zoo and MedicalNet weights default to the encoder.

Example:
    >>> from medzoo.train.config import InitConfig
    >>> apply_init(None, InitConfig("scratch")) is None
    True
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from torch import nn

from medzoo.config import ConfigError
from medzoo.train.config import InitConfig

__all__ = ["apply_init"]

log = logging.getLogger(__name__)


def apply_init(model: nn.Module | None, init: InitConfig) -> Any:
    """Load the configured starting weights into ``model``.

    Returns:
        The LoadReport, or None for ``scratch``.

    Raises:
        ConfigError: an unknown source, or ``zoo:`` without the zoo loader (naming ``init.source``).
    """
    kind, _, arg = init.source.partition(":")
    if kind == "scratch":
        return None
    if kind == "zoo":
        try:
            load = importlib.import_module("medzoo.zoo.load")
        except ModuleNotFoundError as err:
            raise ConfigError(f"init.source: {init.source!r} needs medzoo.zoo.load, which this install lacks") from err
        return load.load_pretrained(model, arg, parts=list(init.parts or ["encoder"]))
    if kind == "medicalnet":
        from medzoo.zoo.medicalnet import load_medicalnet

        return load_medicalnet(model, arg)
    if kind == "ckpt":
        from medzoo.train.checkpoint import load_checkpoint_weights

        return load_checkpoint_weights(model, arg, parts=init.parts)
    raise ConfigError(f"init.source: unknown kind {kind!r}; expected scratch, zoo:NAME, medicalnet:PATH or ckpt:PATH")
