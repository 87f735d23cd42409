"""Experiment configs: a matrix of training runs (task x init x data fraction x seed) over one base run config.

An experiment YAML names a base run config (``run``: a :class:`~medzoo.train.config.RunConfig` mapping, or the path of
a run config YAML relative to the experiment file), the task variants (each with its ``--set`` overrides and the
metric that scores it), the initialisations, the training-data fractions and the seeds::

    name: transfer_lung_seg
    output: runs/transfer_lung_seg
    run: {model: ..., data: [...], train: ...}      # or run: finetune.yaml
    tasks:
      lung_seg: {metric: test/lung/dice/lung}
    inits:
      scratch: {source: scratch}
      pretrained: {source: "zoo:my.encoder"}
      frozen: {source: "zoo:my.encoder", freeze_encoder: true, set: ["train.head_lr_mult=30"]}
    baselines:                                        # reference rows that train no network
      threshold: {kind: threshold}
      probe: {kind: probe, source: "zoo:my.encoder"}
    fractions: [0.1, 0.3, 1.0]
    seeds: [0, 1, 2, 3, 4]
    reference: scratch                                # paired differences are taken against it

Every cell keeps the same patient split (``split_seed``, used where a dataset's ``split.seed`` is unset), so the
cells of a task share one test set. The fraction applies to every training dataset (:attr:`DataConfig.fraction`);
with ``subsets: per_seed`` (the default) each seed draws its own training patients at each fraction, so the seeds
vary the training subset as well as the weight initialisation, the batch order and the augmentation; ``fixed``
keeps one draw per fraction (from the split seed). Cells of the same fraction and seed share the subset, which is
what makes the differences between inits paired.

Example:
    >>> cfg = load_experiment_config({"run": {"model": {}, "data": []}, "tasks": {"t": {"metric": "test/t/auroc"}}},
    ...                              ["seeds=[0, 1]"])
    >>> cfg.seeds, list(cfg.inits)
    ([0, 1], ['scratch'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medzoo.config import ConfigError, load_config

__all__ = ["BASELINE_KINDS", "BaselineVariant", "ExperimentConfig", "InitVariant", "TaskVariant",
           "load_experiment_config"]

BASELINE_KINDS = ("threshold", "probe")
SUBSETS = ("per_seed", "fixed")


@dataclass
class InitVariant:
    """One initialisation: ``source`` as in ``init.source`` (scratch, zoo:NAME, ckpt:PATH, medicalnet:PATH).

    ``freeze_encoder``: keep the encoder frozen for the whole run (only heads train). A head trained from a random
    start for a short budget at the encoder's learning rate stays near its random projection, so give a frozen init
    a head budget that converges, e.g. ``set: ["train.head_lr_mult=30"]``, or use a ``probe`` baseline.
    ``set``: dotted overrides of this init's run config (``train.lr=0.003``), applied after the task's.
    """

    source: str = "scratch"
    parts: list[str] | None = None
    freeze_encoder: bool = False
    set: list[str] = field(default_factory=list)


@dataclass
class BaselineVariant:
    """A reference row that trains no network, scored on the same test set as the inits (segmentation tasks).

    ``kind``: ``threshold`` (an intensity band + connected components, tuned on the cell's training images) or
    ``probe`` (a closed-form linear probe on the frozen encoder of ``source``, e.g. ``zoo:NAME`` or ``scratch``).
    """

    kind: str
    source: str = "scratch"
    parts: list[str] | None = None


@dataclass
class TaskVariant:
    """One task of the matrix: overrides on the base run config and the metric (``test/<task>/<metric>``) it reports.

    ``mode``: whether a larger (``max``) or smaller (``min``) metric is better (used by the claim checks).
    """

    metric: str
    set: list[str] = field(default_factory=list)
    mode: str = "max"


@dataclass
class ExperimentConfig:
    """The whole matrix; ``load_experiment_config`` builds it from YAML with overrides.

    ``eval_points``: validation evaluations per cell, spread evenly over its steps (the learning curves); 0 keeps the
    run config's ``train.eval_every``. ``reference``: the init every other row is compared with, seed by seed
    (``auto``: ``scratch`` when there is such an init; None: no paired differences). ``subsets``: ``per_seed`` or
    ``fixed`` (see the module docstring).
    """

    run: Any
    tasks: dict[str, TaskVariant]
    name: str = "experiment"
    output: str = "runs/experiment"
    inits: dict[str, InitVariant] = field(default_factory=lambda: {"scratch": InitVariant()})
    baselines: dict[str, BaselineVariant] = field(default_factory=dict)
    fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    split_seed: int | None = 0
    subsets: str = "per_seed"
    reference: str | None = "auto"
    eval_points: int = 4
    base_dir: str = "."


def _check(cfg: ExperimentConfig) -> ExperimentConfig:
    if not isinstance(cfg.run, (str, Mapping)):
        raise ConfigError(f"run: expected a run config mapping or a YAML path, got {type(cfg.run).__name__}")
    for key, items in (("tasks", cfg.tasks), ("inits", cfg.inits), ("fractions", cfg.fractions),
                       ("seeds", cfg.seeds)):
        if not items:
            raise ConfigError(f"{key}: give at least one")
    for f in cfg.fractions:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"fractions: {f} is not in (0, 1]")
    for key, values in (("fractions", cfg.fractions), ("seeds", cfg.seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{key}: {values} repeats a value")
    for name, task in cfg.tasks.items():
        if task.mode not in ("max", "min"):
            raise ConfigError(f"tasks.{name}.mode: {task.mode!r} is not one of ['max', 'min']")
        if not task.metric.startswith(("test/", "val/")):
            raise ConfigError(f"tasks.{name}.metric: {task.metric!r} should be a result metric like "
                              "'test/<task>/<metric>'")
    for name in [*cfg.tasks, *cfg.inits, *cfg.baselines]:
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise ConfigError(f"task/init name {name!r}: use letters, digits, '-', '_' or '.' (it names folders)")
    if set(cfg.inits) & set(cfg.baselines):
        raise ConfigError(f"baselines: {sorted(set(cfg.inits) & set(cfg.baselines))} is also an init name")
    for name, b in cfg.baselines.items():
        if b.kind not in BASELINE_KINDS:
            raise ConfigError(f"baselines.{name}.kind: {b.kind!r} is not one of {list(BASELINE_KINDS)}")
    if cfg.subsets not in SUBSETS:
        raise ConfigError(f"subsets: {cfg.subsets!r} is not one of {list(SUBSETS)}")
    if cfg.reference == "auto":
        cfg.reference = "scratch" if "scratch" in cfg.inits else None
    if cfg.reference is not None and cfg.reference not in cfg.inits:
        raise ConfigError(f"reference: {cfg.reference!r} is not among the inits {list(cfg.inits)}")
    if cfg.eval_points < 0:
        raise ConfigError(f"eval_points: must be >= 0, got {cfg.eval_points}")
    return cfg


def load_experiment_config(src: str | Path | Mapping[str, Any] | ExperimentConfig,
                           overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and check an experiment config (YAML path, mapping or instance) with dotted ``--set`` overrides.

    A relative ``run`` path is resolved against the experiment file's folder (``base_dir``).

    Raises:
        ConfigError: an unknown or missing key, a wrong type or an invalid value; the message names the key (and
            the file).
    """
    cfg = load_config(src, overrides, schema=ExperimentConfig)
    if isinstance(src, (str, Path)):
        cfg.base_dir = str(Path(src).resolve().parent)
    try:
        return _check(cfg)
    except ConfigError as err:
        where = f"{src}: " if isinstance(src, (str, Path)) else ""
        raise ConfigError(f"{where}{err}") from None
