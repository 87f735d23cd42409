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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medzoo.config import ConfigError, ModelConfig, check_name, load_config, to_dict
from medzoo.data.contract import SpecError
from medzoo.data.presets import PRESETS, preset_contract

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
_PRESETS = ("none", *PRESETS)
_INIT_KINDS = ("scratch", "zoo", "medicalnet", "ckpt")
_PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class SplitConfig:
    """Patient-level split of one dataset (:func:`medzoo.data.patient_split`)."""

    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    official: bool = True
    stratify: str | None = None
    seed: int | None = None


@dataclass
class TransformConfig:
    """A named preprocessing contract (:mod:`medzoo.data.presets`: ``ct``, ``cxr``, ``series``, ``medicalnet``,
    ``imagenet``, ``txv``, or ``none`` for inputs as read); checkpoints record the contract it stands for.

    ``size``: CT patch ``[D, H, W]`` (MedicalNet: its resize target), or the 2-D ``[H, W]`` (one int for square) of
    CXR images and series slices. ``options``: the preset's arguments (``hu_window``, ``spacing``, ``orientation``,
    ``intensity_range``, ``background``) or any contract field. ``augment``: training augmentations on the training
    split. With ``preset: none`` a dataset inherits the contract of ``init.source`` weights that declare one.
    """

    preset: str = "none"
    size: list[int] | None = None
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """One dataset: where it is, which tasks it labels (dataset task -> model task), how it is batched.

    ``fraction`` keeps that share of the training patients, drawn with ``fraction_seed`` (default: the split seed),
    so an experiment can draw a new subset per seed while every seed keeps the same test set.
    """

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
    fraction_seed: int | None = None
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
    """Optimisation, schedule and execution of a run.

    ``norm_eval`` keeps batch-norm layers in eval mode while training (small-batch fine-tuning). ``best_metric``
    defaults to ``val/loss`` (mode ``min``). ``max_minutes`` ends training after that much wall time (a resume
    continues it).

    Execution (none of it changes the maths in fp32): ``precision`` ``fp32``, ``bf16`` or ``fp16`` (autocast, plus
    a gradient scaler for fp16; CUDA only); ``channels_last`` memory format; ``compile`` with ``torch.compile``;
    ``sync_bn`` (SyncBatchNorm across DDP ranks, CUDA only); ``deterministic`` (on CUDA: deterministic cuDNN kernels
    instead of ``cudnn.benchmark`` autotuning); DataLoader ``num_workers`` (None: on CUDA up to 4 per process,
    leaving a core for the training loop; on CPU 0, as the step's threads use every core), ``pin_memory`` (None: on
    CUDA), ``persistent_workers`` and ``prefetch_factor`` (None: torch's 2).
    """

    epochs: int = 1
    max_steps: int | None = None
    max_minutes: float | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    head_lr_mult: float = 1.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    freeze_encoder_epochs: int = 0
    grad_accum: int = 1
    clip_grad: float | None = None
    norm_eval: bool = False
    sampling: str = "proportional"
    temperature: float = 2.0
    loss: dict[str, LossConfig] = field(default_factory=dict)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    best_metric: str | None = None
    best_mode: str = "max"
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool = True
    prefetch_factor: int | None = None


@dataclass
class OutputConfig:
    """The run folder (``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.json``, ``tb/``).

    ``last_every_epoch``: save ``last.pt`` at every epoch end (a killed run resumes there); False saves it when
    training ends only, for many short runs whose epochs are a batch or two long.
    """

    dir: str = "runs/run"
    tensorboard: bool = True
    checkpoint_every: int = 0
    log_images: bool = True
    last_every_epoch: bool = True


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
        try:
            preset_contract(d.transform.preset, d.transform.size, d.transform.options, f"{key}.transform")
        except SpecError as err:
            raise ConfigError(str(err)) from None
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


def _ranges(t: TrainConfig) -> list[tuple[str, Any, str, Callable[[float], bool]]]:
    """``(key, value, expected, test)`` of every bounded number of ``train``; None means "off" where allowed."""
    s, es = t.scheduler, t.early_stopping
    return [
        ("train.epochs", t.epochs, ">= 1", lambda v: v >= 1),
        ("train.max_steps", t.max_steps, ">= 1 or null", lambda v: v >= 1),
        ("train.max_minutes", t.max_minutes, "> 0 or null", lambda v: v > 0),
        ("train.lr", t.lr, "> 0", lambda v: v > 0),
        ("train.weight_decay", t.weight_decay, ">= 0", lambda v: v >= 0),
        ("train.momentum", t.momentum, "in [0, 1)", lambda v: 0 <= v < 1),
        ("train.head_lr_mult", t.head_lr_mult, ">= 0", lambda v: v >= 0),
        # a negative max_norm flips the gradient's sign (gradient ascent)
        ("train.clip_grad", t.clip_grad, "> 0 or null", lambda v: v > 0),
        ("train.grad_accum", t.grad_accum, ">= 1", lambda v: v >= 1),
        ("train.eval_every", t.eval_every, ">= 1", lambda v: v >= 1),
        ("train.freeze_encoder_epochs", t.freeze_encoder_epochs, ">= 0", lambda v: v >= 0),
        ("train.temperature", t.temperature, "> 0", lambda v: v > 0),
        ("train.scheduler.warmup_steps", s.warmup_steps, ">= 0", lambda v: v >= 0),
        # below 0 the late learning rates turn negative; above 1 the "decay" grows the rate
        ("train.scheduler.min_lr_ratio", s.min_lr_ratio, "in [0, 1]", lambda v: 0 <= v <= 1),
        ("train.scheduler.gamma", s.gamma, "in (0, 1]", lambda v: 0 < v <= 1),
        # patience counts evaluations without improvement; 0 would stop at the first evaluation
        ("train.early_stopping.patience", es.patience, ">= 1", lambda v: v >= 1),
        ("train.early_stopping.min_delta", es.min_delta, ">= 0", lambda v: v >= 0),
        ("train.num_workers", t.num_workers, ">= 0 or null", lambda v: v >= 0),
        ("train.prefetch_factor", t.prefetch_factor, ">= 1 or null", lambda v: v >= 1),
        *((f"train.loss.{task}.weight", lc.weight, ">= 0", lambda v: v >= 0) for task, lc in t.loss.items()),
    ]


def _check_ranges(t: TrainConfig) -> None:
    for key, value, expected, ok in _ranges(t):
        if value is None and "null" in expected:
            continue
        if value is None or not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{key}: must be {expected}, got {value}")


def _check_train(cfg: RunConfig) -> None:
    t = cfg.train
    _one_of("train.optimizer", t.optimizer, _OPTIMIZERS)
    _one_of("train.scheduler.name", t.scheduler.name, _SCHEDULES)
    _one_of("train.sampling", t.sampling, _SAMPLING)
    _one_of("train.early_stopping.mode", t.early_stopping.mode, ("min", "max"))
    _one_of("train.best_mode", t.best_mode, ("min", "max"))
    _one_of("train.precision", t.precision, _PRECISIONS)
    _check_ranges(t)
    if cfg.output.checkpoint_every < 0:
        raise ConfigError(f"output.checkpoint_every: must be >= 0 (0: at epoch ends only), got "
                          f"{cfg.output.checkpoint_every}")
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
