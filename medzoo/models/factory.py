"""``create_model``: build a :class:`MultiTaskModel` from a config (dict, YAML path, dataclass or export dir)."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from medzoo.aggregation import create_aggregator
from medzoo.config import ConfigError, ModelConfig, TaskConfig, check_name, load_config
from medzoo.encoders import create_encoder
from medzoo.heads.base import HEADS, FeatureInfo, HeadArgumentError
from medzoo.models.multitask import MultiTaskModel, _check_task

__all__ = ["create_model", "build_heads"]

logger = logging.getLogger(__name__)

_HEAD_ARGS = ("num_classes", "labels", "outputs", "thresholds", "decoder_channels", "dropout")


def _resolve(cfg: Any, overrides: Sequence[str]) -> tuple[ModelConfig, Path | None]:
    """The typed config and, for an export directory, the directory."""
    if isinstance(cfg, (str, Path)) and Path(cfg).is_dir():
        export_dir = Path(cfg)
        if not (export_dir / "config.yaml").is_file():
            raise ConfigError(f"{export_dir}: an export directory must contain config.yaml")
        _check_recorded_hashes(export_dir)
        return load_config(export_dir / "config.yaml", overrides), export_dir
    return load_config(cfg, overrides), None


def _check_recorded_hashes(export_dir: Path) -> None:
    """The export's files must have the sha256 its ``metadata.json`` records: an edited ``config.yaml`` would rename
    the labels of trained heads, or build heads the weights do not fit."""
    try:
        files = json.loads((export_dir / "metadata.json").read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError):
        return  # no (readable) metadata: an export written by hand; the strict weight load below still applies
    for entry in files:
        name, want = (entry.get("url"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
        if name in ("config.yaml", "model.safetensors") and want and (export_dir / name).is_file():
            h = hashlib.sha256()
            with open(export_dir / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != want:
                raise ConfigError(f"{export_dir / name}: sha256 differs from {export_dir / 'metadata.json'} ({want}); "
                                  "the export was changed or corrupted")


def _build_encoder(cfg: ModelConfig) -> nn.Module:
    enc = cfg.encoder
    if "out_indices" in enc.options:
        raise ConfigError("encoder.options.out_indices: task heads read all five encoder maps; select stages only "
                          "on an encoder used alone (medzoo.create_encoder(..., out_indices=...))")
    try:
        return create_encoder(
            enc.name, in_channels=enc.in_channels, output_stride=enc.output_stride, widths=enc.widths, **enc.options
        )
    except KeyError as err:
        raise ConfigError(f"encoder.name: {err.args[0] if err.args else err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"encoder: {err}") from None


def _build_aggregator(cfg: ModelConfig, in_features: int) -> nn.Module | None:
    if cfg.aggregator is None:
        return None

    try:
        return create_aggregator(cfg.aggregator.name, in_features, **cfg.aggregator.options)
    except KeyError as err:
        raise ConfigError(f"aggregator.name: {err.args[0] if err.args else err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"aggregator.options: {err}") from None


def _head_kwargs(name: str, task: TaskConfig, head_cls: type) -> dict[str, Any]:
    """The task's head arguments, refusing those the head type does not take."""
    accepted = inspect.signature(head_cls.__init__).parameters
    kwargs = {}
    for arg in _HEAD_ARGS:
        value = getattr(task, arg)
        if value is None:
            continue
        if arg not in accepted:
            raise ConfigError(f"tasks.{name}.{arg}: not an argument of head type {task.type!r}")
        kwargs[arg] = value
    return kwargs


def build_heads(
    tasks: Mapping[str, TaskConfig], encoder: nn.Module, aggregator: nn.Module | None
) -> dict[str, nn.Module]:
    """Build one head per task on ``encoder`` (and ``aggregator`` for series-level tasks).

    Raises:
        ConfigError: an invalid task name, an unknown head type, a head that does not fit its level, a missing or
            invalid head argument; the message names the key (``tasks.<task>.<field>``).
    """
    heads = {}
    for name, task in tasks.items():
        check_name(name, f"tasks.{name}")
        if task.type not in HEADS:
            raise ConfigError(f"tasks.{name}.type: {HEADS._unknown_message(task.type)}")
        head_cls = HEADS.get(task.type)
        try:
            _check_task(name, head_cls, task.level, aggregator)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        in_features = aggregator.out_features if task.level == "series" else encoder.out_channels[-1]
        info = FeatureInfo(
            channels=tuple(encoder.out_channels), reductions=tuple(encoder.reductions),
            output_stride=int(encoder.output_stride), in_features=int(in_features),
            spatial_dims=3 if task.level == "volume" else 2,
        )
        try:
            heads[name] = head_cls.from_features(info, **_head_kwargs(name, task, head_cls))
        except HeadArgumentError as err:
            raise ConfigError(f"tasks.{name}.{err.arg}: {err}") from None
        except ValueError as err:
            raise ConfigError(f"tasks.{name}: {err}") from None
    return heads


def create_model(cfg: Any, overrides: Sequence[str] = ()) -> MultiTaskModel:
    """Build a :class:`MultiTaskModel` from a config.

    Args:
        cfg: a mapping, a YAML path, a :class:`~medzoo.config.ModelConfig`, or an export directory (its
            ``config.yaml``; its ``model.safetensors`` is loaded strictly when present).
        overrides: dotted ``KEY=VALUE`` overrides (``encoder.widths=[8,16,32,64]``).

    Returns:
        The model, with the resolved config as ``model.config``.

    Raises:
        ConfigError: any invalid config, naming the key.

    Example:
        >>> model = create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
        ...                       "tasks": {"cxr": {"type": "multilabel", "level": "image", "labels": ["a", "b"]}}})
        >>> model.tasks
        ['cxr']
    """
    config, export_dir = _resolve(cfg, overrides)
    encoder = _build_encoder(config)
    aggregator = _build_aggregator(config, encoder.out_channels[-1])
    heads = build_heads(config.tasks, encoder, aggregator)
    model = MultiTaskModel(
        encoder, heads, aggregator, levels={n: t.level for n, t in config.tasks.items()},
        max_items_per_chunk=config.series.max_items_per_chunk, checkpoint_chunks=config.series.checkpoint,
    )
    model.config = config
    if export_dir is not None and (export_dir / "model.safetensors").is_file():
        state = load_file(str(export_dir / "model.safetensors"))
        if not any(k.startswith(("encoder.", "heads.", "aggregator.")) for k in state):
            model.encoder.load_state_dict(state, strict=True)  # encoder-only export: bare keys, as MONAI's
        else:
            model.load_state_dict(state, strict=True)
        logger.info("loaded %s", export_dir / "model.safetensors")
    return model
