"""Starting weights of a run: ``scratch``, ``zoo:NAME``, ``medicalnet:PATH`` or ``ckpt:PATH`` (``init:`` config).

Every source is a model reference, loaded into the freshly built model by :func:`medzoo.zoo.load_pretrained`, which
returns and logs a :class:`~medzoo.zoo.report.LoadReport`. ``parts`` selects submodules (``encoder``, ``heads``,
``aggregator``). By default zoo weights load the encoder (a catalog entry's heads rarely match a new run's tasks),
while MedicalNet files and training checkpoints load everything that fits (a MedicalNet segmentation head goes into
a ``medicalnet_seg`` head when the model has one; a checkpoint is usually the same model continued).

Example:
    >>> from medzoo.train.config import InitConfig
    >>> apply_init(None, InitConfig("scratch")) is None
    True
"""

from __future__ import annotations

import logging

from torch import nn

from medzoo.config import ConfigError
from medzoo.train.config import InitConfig
from medzoo.zoo.loading import load_pretrained
from medzoo.zoo.report import LoadReport

__all__ = ["apply_init"]

log = logging.getLogger(__name__)

#: The parts each kind of source loads when ``init.parts`` is not given.
DEFAULT_PARTS = {"zoo": ["encoder"], "medicalnet": ["all"], "ckpt": ["all"]}


def apply_init(model: nn.Module | None, init: InitConfig) -> LoadReport | None:
    """Load the configured starting weights into ``model``.

    Returns:
        The LoadReport, or None for ``scratch``.

    Raises:
        ConfigError: an unknown source kind, naming ``init.source``.
    """
    kind = init.source.partition(":")[0]
    if kind == "scratch":
        return None
    if kind not in DEFAULT_PARTS:
        raise ConfigError(f"init.source: unknown kind {kind!r}; expected scratch, zoo:NAME, medicalnet:PATH or "
                          "ckpt:PATH")
    return load_pretrained(model, init.source, parts=list(init.parts or DEFAULT_PARTS[kind]))
