"""Reading training checkpoints: safe loads, the stored run config, and the model a checkpoint holds.

A checkpoint is the dict the Trainer saves (:mod:`medzoo.train.checkpoint` writes it): the model's state dict under
``model``, optimizer/scheduler/scaler states, RNG states, counters, and the run config as a YAML *string* under
``config`` whose ``model`` key is the ``ModelConfig`` dict, and under ``preprocessing`` the contract of every input
kind the run trained on (``{kind: contract dict}``; checkpoints written before contracts were recorded get them
derived from their run config's transform presets). It is read with ``torch.load(weights_only=True)``, so a
file carrying pickled code is refused before any of it runs, and a truncated or corrupt file raises
:class:`CheckpointError` naming the file.

The zoo reads checkpoints (training only writes them), so that every model reference, a checkpoint included, is
resolved in one place (:func:`medzoo.zoo.resolve`).

Example:
    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "last.pt")
    >>> torch.save({"model": {"w": torch.ones(2)}, "step": 3}, p)
    >>> load_checkpoint(p)["step"]
    3
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from medzoo.config import safe_load_yaml
from medzoo.data.contract import Preprocessing, SpecError, parse_preprocessing
from medzoo.data.presets import contracts_from_run
from medzoo.models import MultiTaskModel, create_model
from medzoo.zoo.preflight import preflight_model
from medzoo.zoo.report import LoadReport
from medzoo.zoo.state import (
    check_archive,
    check_finite,
    load_state_with_report,
    read_weights,
    strip_prefixes,
    unwrap_state_dict,
)

__all__ = ["CheckpointError", "checkpoint_config", "checkpoint_preprocessing", "load_checkpoint",
           "load_checkpoint_weights", "model_from_checkpoint"]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or lacks what is needed; the message names the file."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        CheckpointError: no such file, a truncated or corrupt file, a file holding pickled code, or something
            that is not a checkpoint dict with a ``model`` state dict; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        check_archive(path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain data "
                              f"({_first_line(err)})") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/zip errors for damaged files
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt?): {_first_line(err)}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), Mapping):
        keys = f" with keys {sorted(obj)}" if isinstance(obj, dict) else ""
        raise CheckpointError(f"{path}: not a medzoo training checkpoint (expected a dict with a 'model' state dict, "
                              f"got {type(obj).__name__}{keys})")
    return obj


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def checkpoint_config(ckpt: Mapping[str, Any], source: str = "<checkpoint>") -> dict[str, Any]:
    """The run config dict stored in a checkpoint (its ``config`` YAML string).

    Raises:
        CheckpointError: no config, or one that is not a YAML mapping with a ``model`` key.
    """
    text = ckpt.get("config")
    if not isinstance(text, str):
        raise CheckpointError(f"{source}: the checkpoint holds no 'config' YAML string; it cannot rebuild a model")
    try:
        cfg = safe_load_yaml(text)
    except yaml.YAMLError as err:
        raise CheckpointError(f"{source}: the stored config is not valid YAML ({err})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{source}: the stored config has no 'model' mapping")
    return cfg


def checkpoint_preprocessing(ckpt: Mapping[str, Any], cfg: Mapping[str, Any],
                             source: str = "<checkpoint>") -> dict[str, Preprocessing]:
    """``{kind: contract}`` a checkpoint's run trained with: the recorded ``preprocessing``, or (older checkpoints)
    the contracts of its run config's transform presets.

    Raises:
        CheckpointError: a recorded contract or a config preset that does not validate.
    """
    try:
        if "preprocessing" in ckpt:
            return parse_preprocessing(ckpt["preprocessing"], f"{source}: preprocessing")
        contracts = contracts_from_run(cfg)
    except SpecError as err:
        raise CheckpointError(f"{source}: {err}") from None
    log.info("%s records no preprocessing; derived %s from its run config", source, sorted(contracts))
    return contracts


def model_from_checkpoint(path: str | os.PathLike) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint (``create_model(config["model"])``) and load its weights strictly.

    The model carries the contracts its run trained with in ``model.preprocessing``
    (:func:`checkpoint_preprocessing`), so that exports record them.

    Args:
        path: a checkpoint written by the Trainer (``last.pt`` or ``best.pt``).

    Returns:
        ``(model, run_config_dict)``; the model is in eval mode.

    Raises:
        CheckpointError: an unreadable checkpoint, or weights that do not fit the stored model config.

    Example:
        >>> model, cfg = model_from_checkpoint("runs/x/best.pt")  # doctest: +SKIP
    """
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, str(path))
    state = ckpt["model"]
    try:
        preflight_model(cfg["model"], {k: v.shape for k, v in state.items() if isinstance(v, torch.Tensor)},
                        f"{path} (its stored config)")
        check_finite(state, str(path))
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    model = create_model(cfg["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the stored model config: {_first_line(err)}") from None
    model.eval()
    model.preprocessing = checkpoint_preprocessing(ckpt, cfg, str(path))
    return model, cfg


def load_checkpoint_weights(model: torch.nn.Module, path: str | os.PathLike, parts: Sequence[str] | None = None,
                            *, strict: bool = False) -> Any:
    """Initialise ``model`` (or some of its parts) from a checkpoint's weights, with a LoadReport.

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel`.
        path: a training checkpoint, an export's ``model.safetensors`` or a plain state dict file.
        parts: submodule names to load (``["encoder"]``); None loads everything whose name matches.
        strict: refuse a load where model keys of the selected parts are missing from the file.

    Returns:
        The :class:`~medzoo.zoo.report.LoadReport` (also logged). File keys outside ``parts`` are listed as ignored.
    """
    path = Path(path)
    if path.is_dir():  # an export directory
        path = path / "model.safetensors"
    raw = None
    if path.suffix != ".safetensors":
        try:
            raw = load_checkpoint(path)["model"]
        except CheckpointError:
            raw = None  # not a training checkpoint: read it as a plain weight file below
    state = strip_prefixes(unwrap_state_dict(raw if raw is not None else read_weights(path), str(path)))
    if not parts:
        return load_state_with_report(model, state, source=str(path), strict=strict).log(log)
    report = LoadReport(source=str(path))
    for part in parts:
        sub = getattr(model, part, None)
        if not isinstance(sub, torch.nn.Module):
            raise ValueError(f"init.parts: the model has no part {part!r}; parts are encoder, heads, aggregator")
        prefix = part + "."
        part_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        r = load_state_with_report(sub, part_state, source=str(path), strict=strict)
        report.loaded += [prefix + k for k in r.loaded]
        report.adapted.update({prefix + k: v for k, v in r.adapted.items()})
        report.missing += [prefix + k for k in r.missing]
        report.unexpected += [prefix + k for k in r.unexpected]
    report.ignored = {k: f"outside the selected parts {list(parts)}" for k in state
                      if not any(k.startswith(p + ".") for p in parts)}
    return report.log(log)
