"""Run an experiment matrix (task x init x data fraction x seed), resumably, and write its tables and plots.

Each cell is one training run (:func:`medzoo.train.fit`) in ``<output>/cells/<cell-id>/run`` whose outcome is written
atomically to ``<output>/cells/<cell-id>/result.json`` (the reported metric, every final metric, the validation
history, the run config's sha256). A cell whose ``result.json`` exists for the same run config is skipped; a cell
cut short continues from its ``last.pt``; a cell whose config changed is run again (with a warning). Afterwards
``results.csv`` (one row per cell), ``results.md`` (mean ± std over seeds per init x fraction) and the plots are
written from the ``result.json`` files.

Example:
    >>> from medzoo.experiment import load_experiment_config, run_experiment
    >>> result = run_experiment(load_experiment_config("configs/transfer/lung_seg.yaml"))  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medzoo.experiment.config import ExperimentConfig, TaskVariant, load_experiment_config

__all__ = ["Cell", "ExperimentResult", "cell_run_config", "list_cells", "run_experiment"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Cell:
    """One run of the matrix."""

    task: str
    init: str
    fraction: float
    seed: int

    @property
    def id(self) -> str:
        """The folder name, e.g. ``lung_seg-scratch-f0.1-s0``."""
        return f"{self.task}-{self.init}-f{self.fraction:g}-s{self.seed}"


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` gives back: the rows read from every ``result.json`` and the files written."""

    output: str
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    table: str
    files: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def list_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell, task-major, then init, fraction, seed (the order they run in)."""
    return [Cell(t, i, float(f), int(s)) for t in cfg.tasks for i in cfg.inits for f in cfg.fractions
            for s in cfg.seeds]


def _base_run(cfg: ExperimentConfig) -> Any:
    if isinstance(cfg.run, str):
        path = Path(cfg.run)
        return path if path.is_absolute() else Path(cfg.base_dir) / path
    return copy.deepcopy(cfg.run)


def cell_run_config(cfg: ExperimentConfig, cell: Cell, run_dir: str | os.PathLike) -> Any:
    """The :class:`~medzoo.train.config.RunConfig` of one cell: the base run with the task's overrides, the init,
    the fraction on every training dataset, the seed, the shared split seed and ``output.dir = run_dir``.

    Raises:
        ConfigError: the base run config or a task override is invalid (the message names the key).
    """
    from medzoo.train.config import InitConfig, load_run_config, validate

    task: TaskVariant = cfg.tasks[cell.task]
    init = cfg.inits[cell.init]
    run = load_run_config(_base_run(cfg), task.set)
    run.train.seed, run.output.dir = cell.seed, str(run_dir)
    for d in run.data:
        if d.train:
            d.fraction = cell.fraction
        if cfg.split_seed is not None and d.split.seed is None:
            d.split.seed = cfg.split_seed
    run.init = InitConfig(init.source, list(init.parts) if init.parts else None)
    if init.freeze_encoder:
        run.train.freeze_encoder_epochs = run.train.epochs
    return validate(run)


def _spread_evals(points: int) -> Callable[[Any], None]:
    """A callback that sets ``eval_every`` so that a run evaluates about ``points`` times, evenly over its steps."""

    def on_train_start(trainer: Any) -> None:
        epochs = math.ceil(trainer.total_steps / trainer.steps_per_epoch)
        trainer.cfg.train.eval_every = max(1, math.ceil(epochs / points))

    return on_train_start


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON write (temp file + ``os.replace``), so a killed run never leaves half a result."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    os.replace(tmp, path)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s); the cell runs again", path, err)
        return None
    return data if isinstance(data, dict) else None


def _run_cell(cfg: ExperimentConfig, cell: Cell, out: Path, fit_fn: Callable[..., Any]) -> tuple[dict, bool]:
    """Run (or reuse) one cell; returns ``(result dict, ran)``."""
    from medzoo.train.config import run_config_yaml

    cell_dir = out / "cells" / cell.id
    run_cfg = cell_run_config(cfg, cell, cell_dir / "run")
    sha = hashlib.sha256(run_config_yaml(run_cfg).encode()).hexdigest()
    done = _read_result(cell_dir / RESULT_FILE)
    if done is not None and done.get("config_sha256") == sha:
        return done, False
    if done is not None or ((cell_dir / "run").exists() and not _same_config(cell_dir / "run", run_cfg)):
        log.warning("cell %s: its run config changed since it ran; running it again", cell.id)
        shutil.rmtree(cell_dir / "run", ignore_errors=True)
    cell_dir.mkdir(parents=True, exist_ok=True)
    callbacks = {"on_train_start": [_spread_evals(cfg.eval_points)]} if cfg.eval_points else None
    res = fit_fn(run_cfg, resume=True, quiet=True, callbacks=callbacks)
    task = cfg.tasks[cell.task]
    if task.metric not in res.metrics:
        raise KeyError(f"tasks.{cell.task}.metric: {task.metric!r} is not among the run's metrics "
                       f"{sorted(res.metrics)}")
    row = {"cell": cell.id, "task": cell.task, "init": cell.init, "fraction": cell.fraction, "seed": cell.seed,
           "metric": task.metric, "mode": task.mode, "value": float(res.metrics[task.metric]), "steps": res.step,
           "seconds": round(float(res.seconds), 3), "config_sha256": sha, "metrics": res.metrics,
           "history": res.history}
    _write_json(cell_dir / RESULT_FILE, row)
    return row, True


def _same_config(run_dir: Path, run_cfg: Any) -> bool:
    from medzoo.train.config import run_config_yaml

    path = run_dir / "config.yaml"
    return not path.is_file() or path.read_text(encoding="utf-8") == run_config_yaml(run_cfg)


def _progress(total: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc="cells", unit="cell", disable=disable, leave=False)


def run_experiment(cfg: ExperimentConfig | str | Path | dict, overrides: Sequence[str] = (), *,
                   output: str | os.PathLike | None = None, fit_fn: Callable[..., Any] | None = None,
                   progress: bool | None = None, plots: bool = True) -> ExperimentResult:
    """Run every cell of the matrix that has no result yet, then write ``results.csv``, ``results.md`` and plots.

    Args:
        cfg: the experiment (or a YAML path / mapping, loaded with ``overrides``).
        overrides: dotted ``--set`` overrides of the experiment config.
        output: the experiment folder (default: ``cfg.output``).
        fit_fn: the trainer, ``fit(run_config, *, resume, quiet, callbacks) -> TrainResult`` (default
            :func:`medzoo.train.fit`).
        progress: a progress bar over cells (default: when stderr is a terminal).
        plots: write the PNG plots.

    Returns:
        The :class:`ExperimentResult` (rows, summary, the plain table, file paths, cells run and skipped).

    Raises:
        ConfigError: an invalid experiment or run config. KeyError: a task metric the runs do not report.
    """
    from medzoo.experiment import report

    if not isinstance(cfg, ExperimentConfig) or overrides:
        cfg = load_experiment_config(cfg, overrides)
    if fit_fn is None:
        from medzoo.train import fit as fit_fn
    out = Path(output if output is not None else cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ran, skipped = [], []
    cells = list_cells(cfg)
    with _progress(len(cells), progress) as bar:
        for cell in cells:
            bar.set_postfix_str(cell.id)
            _, did_run = _run_cell(cfg, cell, out, fit_fn)
            (ran if did_run else skipped).append(cell.id)
            bar.update()
    # The tables hold what the result files say, whether a cell ran now or earlier.
    rows = [_read_result(out / "cells" / c.id / RESULT_FILE) for c in cells]
    if any(r is None for r in rows):
        raise RuntimeError(f"{out}: a cell's {RESULT_FILE} is missing after the run")
    log.info("experiment %s: %d cells run, %d reused from %s", cfg.name, len(ran), len(skipped), out)
    files = report.write_results(out, rows, title=cfg.name, plots=plots)
    summary = report.summarise(rows)
    return ExperimentResult(str(out), rows, summary, report.format_table(summary), files, ran, skipped)
