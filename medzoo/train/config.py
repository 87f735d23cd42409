"""Run configs: the typed schema of a training / fine-tuning run, on top of :mod:`medzoo.config`.

A run config is YAML with five blocks: ``model`` (a :class:`~medzoo.config.ModelConfig`), ``data`` (a list of
datasets, each feeding some model tasks), ``train`` (optimisation, losses, schedule, early stopping), ``output``
(run folder, TensorBoard, checkpoints) and ``init`` (where the starting weights come from). Composition
(``defaults:``), dotted ``--set`` overrides and strict keys come from :func:`medzoo.config.load_config`; an unknown
key is an error naming the dotted key (``train.optimiser`` -> "Did you mean 'train.optimizer'?").

Each dataset maps its own task names to model task keys (COVIDx-CXR and COVIDx-CT would otherwise both be ``covid``),
e.g. ``{covid: covid_ct}``. For a dense
(segmentation) model task the source is the record's mask, whatever the key (``mask`` or the reader's task name).

Example:
    >>> cfg = load_run_config({"model": {"tasks": {"tb": {"type": "classification", "num_classes": 2,
    ...                                                  "level": "image"}}},
    ...                        "data": [{"kind": "shenzhen", "root": "/data/sz", "tasks": {"tb": "tb"}}]},
    ...                       ["train.max_steps=2"])
    >>> cfg.train.max_steps, cfg.data[0].batch_size
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medzoo.config import ConfigError, ModelConfig, check_name, load_config, to_dict

__all__ = [
    "DataConfig",
    "EarlyStoppingConfig",
    "InitConfig",
    "LossConfig",
    "OutputConfig",
    "RunConfig",
    "SchedulerConfig",
    "SplitConfig",
    "TrainConfig",
    "TransformConfig",
    "load_run_config",
    "run_config_yaml",
]

_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULES = ("cosine", "exponential", "none")
_SAMPLING = ("round_robin", "proportional", "temperature")
_PRESETS = ("none", "ct", "cxr", "series")
_INIT_KINDS = ("scratch", "zoo", "medicalnet", "ckpt")


@dataclass
class SplitConfig:
    """Patient-level split of one dataset (:func:`medzoo.data.patient_split`)."""

    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    official: bool = True
    stratify: str | None = None
    seed: int | None = None


@dataclass
class TransformConfig:
    """A preset of :mod:`medzoo.data.transforms` (``ct``, ``cxr``, ``series`` or ``none``).

    ``size``: CT patch ``[D, H, W]``, or the 2-D ``[H, W]`` (one int for square) of CXR images and series slices.
    ``options``: further preset arguments (``hu_window``, ``spacing``, ``orientation``). ``augment``: training
    augmentations on the training split.
    """

    preset: str = "none"
    size: list[int] | None = None
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """One dataset: where it is, which tasks it labels (dataset task -> model task), how it is batched."""

    kind: str
    root: str
    tasks: dict[str, str]
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    ignore_labels: list[str] = field(default_factory=list)
    batch_size: int = 2
    eval_batch_size: int | None = None
    fraction: float = 1.0
    cache: str | None = None
    slice_size: list[int] | None = None
    train: bool = True


@dataclass
class LossConfig:
    """A registered loss (:data:`medzoo.train.losses.LOSSES`) with options and a weight in the total loss."""

    type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class SchedulerConfig:
    """Linear warm-up over ``warmup_steps``, then ``cosine`` decay to ``min_lr_ratio``, ``exponential`` or none."""

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    gamma: float = 0.999


@dataclass
class EarlyStoppingConfig:
    """Stop when ``metric`` has not improved (``mode`` min/max) for ``patience`` evaluations; None = off."""

    metric: str | None = None
    mode: str = "max"
    patience: int = 5
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation and schedule of a run.

    ``norm_eval`` keeps batch-norm layers in eval mode while training (small-batch fine-tuning; DDP on CPU, where
    SyncBatchNorm does not run). ``amp`` applies on CUDA only. ``best_metric`` defaults to ``val/loss`` (mode ``min``).
    """

    epochs: int = 1
    max_steps: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    head_lr_mult: float = 1.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    freeze_encoder_epochs: int = 0
    grad_accum: int = 1
    clip_grad: float | None = None
    amp: bool = False
    norm_eval: bool = False
    sampling: str = "proportional"
    temperature: float = 2.0
    loss: dict[str, LossConfig] = field(default_factory=dict)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    best_metric: str | None = None
    best_mode: str = "max"
    eval_every: int = 1
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    deterministic: bool = True


@dataclass
class OutputConfig:
    """The run folder (``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.json``, ``tb/``)."""

    dir: str = "runs/run"
    tensorboard: bool = True
    checkpoint_every: int = 0
    log_images: bool = True


@dataclass
class InitConfig:
    """Starting weights: ``scratch``, ``zoo:NAME``, ``medicalnet:PATH`` or ``ckpt:PATH``, for ``parts``."""

    source: str = "scratch"
    parts: list[str] | None = None


@dataclass
class RunConfig:
    """A whole run; ``load_run_config`` builds it from YAML with overrides.

    ``data_root``: the folder relative ``data[].root`` paths start from (``--set data_root=/data/synth``).
    """

    model: ModelConfig
    data: list[DataConfig]
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data_root: str = "."


# ------------------------------------------------------------------------------------------------- checks
def _one_of(key: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise ConfigError(f"{key}: {value!r} is not one of {list(options)}")


def _check_data(cfg: RunConfig) -> None:
    if not cfg.data:
        raise ConfigError("data: give at least one dataset")
    names = []
    for i, d in enumerate(cfg.data):
        key = f"data[{i}]"
        _one_of(f"{key}.transform.preset", d.transform.preset, _PRESETS)
        if not d.tasks:
            raise ConfigError(f"{key}.tasks: map at least one dataset task to a model task")
        for src, dst in d.tasks.items():
            check_name(src, f"{key}.tasks.{src}")  # a dataset's label space, named like the tasks it feeds
            if dst not in cfg.model.tasks:
                raise ConfigError(f"{key}.tasks.{src}: {dst!r} is not a model task; model tasks: "
                                  f"{sorted(cfg.model.tasks)}")
        if d.batch_size < 1 or (d.eval_batch_size is not None and d.eval_batch_size < 1):
            raise ConfigError(f"{key}.batch_size: must be >= 1")
        if not 0.0 < d.fraction <= 1.0:
            raise ConfigError(f"{key}.fraction: must be in (0, 1], got {d.fraction}")
        names.append(d.name or d.kind)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"data: dataset names {dup} repeat; give each entry a distinct 'name'")


def _check_train(cfg: RunConfig) -> None:
    t = cfg.train
    _one_of("train.optimizer", t.optimizer, _OPTIMIZERS)
    _one_of("train.scheduler.name", t.scheduler.name, _SCHEDULES)
    _one_of("train.sampling", t.sampling, _SAMPLING)
    _one_of("train.early_stopping.mode", t.early_stopping.mode, ("min", "max"))
    _one_of("train.best_mode", t.best_mode, ("min", "max"))
    for key, value, low in (("train.epochs", t.epochs, 1), ("train.grad_accum", t.grad_accum, 1),
                            ("train.eval_every", t.eval_every, 1), ("train.freeze_encoder_epochs",
                                                                    t.freeze_encoder_epochs, 0)):
        if value < low:
            raise ConfigError(f"{key}: must be >= {low}, got {value}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"train.max_steps: must be >= 1 (or null), got {t.max_steps}")
    if t.lr <= 0 or t.temperature <= 0:
        raise ConfigError("train.lr and train.temperature must be > 0")
    for task in t.loss:
        if task not in cfg.model.tasks:
            raise ConfigError(f"train.loss.{task}: not a model task; model tasks: {sorted(cfg.model.tasks)}")


def _check_init(cfg: RunConfig) -> None:
    src = cfg.init.source
    kind, _, arg = src.partition(":")
    _one_of("init.source", kind, _INIT_KINDS)
    if kind != "scratch" and not arg:
        raise ConfigError(f"init.source: {src!r} needs a target, e.g. zoo:NAME, medicalnet:PATH or ckpt:PATH")
    for part in cfg.init.parts or []:
        _one_of("init.parts", part, ("encoder", "heads", "aggregator"))


def validate(cfg: RunConfig) -> RunConfig:
    """Check the cross-field rules a dataclass cannot express; errors name the dotted key."""
    _check_data(cfg)
    _check_train(cfg)
    _check_init(cfg)
    return cfg


def load_run_config(src: str | Path | Mapping[str, Any] | RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
    """Load and validate a run config (YAML path with ``defaults:``, mapping, or RunConfig) with overrides.

    Relative ``data[].root``/``cache`` and ``output.dir`` paths stay as written (relative to the working folder).

    Raises:
        ConfigError: an unknown or missing key, a wrong type or an invalid value; the message names the dotted key
            (and the file).
    """
    cfg = load_config(src, overrides, schema=RunConfig)
    try:
        return validate(cfg)
    except ConfigError as err:
        where = f"{src}: " if isinstance(src, (str, Path)) else ""
        raise ConfigError(f"{where}{err}") from None


def run_config_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML text (stored in every checkpoint and as ``config.yaml`` in the run folder)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
