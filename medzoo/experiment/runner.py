"""Run an experiment matrix (task x init or baseline x data fraction x seed), resumably and in parallel, and write its
tables, paired statistics and plots.

Each cell is one training run (:func:`medzoo.train.fit`) or one baseline fit (:mod:`medzoo.experiment.baselines`)
in ``<output>/cells/<cell-id>/``, whose outcome is written atomically to ``result.json`` (the reported metric, every
final metric, the validation history, the sha256 of what defines the cell). That definition is the resolved run
config plus the *content* of the cell's starting weights and data (:mod:`medzoo.experiment.fingerprint`), so a cell
is reused only when its inputs are the same bytes: replacing ``init.pt``, re-publishing a ``zoo:`` name or editing an
image runs it again (with a warning), and a training cell cut short continues from its ``last.pt`` only under the
definition it started with. Cells run side by side in single-thread worker processes
(:class:`~medzoo.experiment.parallel.JobPool`), so every number is the same whatever the thread or worker count.
Afterwards ``results.csv`` (one row per cell), ``results.md`` (mean ± std, paired differences against the reference
init with 95% CIs, a sentence generated from them) and the plots are written from the ``result.json`` files.

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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medzoo.experiment import report
from medzoo.experiment.baselines import run_baseline
from medzoo.experiment.config import ExperimentConfig, TaskVariant, load_experiment_config
from medzoo.experiment.fingerprint import cell_inputs
from medzoo.experiment.parallel import JobPool, busy_warning, default_workers
from medzoo.train import fit
from medzoo.train.config import InitConfig, load_run_config, run_config_yaml, validate
from medzoo.utils.atomic import atomic_write, naming_path

__all__ = ["Cell", "ExperimentResult", "Progress", "cell_run_config", "cell_source", "collect", "list_cells",
           "run_experiment", "submit_cells"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
STARTED_FILE = "definition.sha256"
BASELINE_VERSION = 1  # bump when a baseline's algorithm changes, so finished baseline cells run again


@dataclass(frozen=True)
class Cell:
    """One run of the matrix (``init`` names an init or a baseline)."""

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
    paired: list[dict[str, Any]] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)


def list_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell, task-major, then baseline / init (baselines first), fraction, seed."""
    return [Cell(t, i, float(f), int(s)) for t in cfg.tasks for i in [*cfg.baselines, *cfg.inits]
            for f in cfg.fractions for s in cfg.seeds]


def cell_source(cfg: ExperimentConfig, cell: Cell) -> str:
    """The weights a cell starts from (``scratch``, ``zoo:NAME``...); a threshold baseline needs none."""
    if cell.init in cfg.baselines:
        b = cfg.baselines[cell.init]
        return "scratch" if b.kind == "threshold" else b.source
    return cfg.inits[cell.init].source


def _base_run(cfg: ExperimentConfig) -> Any:
    if isinstance(cfg.run, str):
        path = Path(cfg.run)
        return path if path.is_absolute() else Path(cfg.base_dir) / path
    return copy.deepcopy(cfg.run)


def cell_run_config(cfg: ExperimentConfig, cell: Cell, run_dir: str | os.PathLike) -> Any:
    """The :class:`~medzoo.train.config.RunConfig` of one cell: the base run with the task's and the init's
    overrides, the init, the fraction and its subset seed on every training dataset, the seed, the shared split
    seed and ``output.dir = run_dir``.

    Raises:
        ConfigError: the base run config or an override is invalid (the message names the key).
    """
    task: TaskVariant = cfg.tasks[cell.task]
    init = cfg.inits.get(cell.init)
    run = load_run_config(_base_run(cfg), [*task.set, *(init.set if init else [])])
    run.train.seed, run.output.dir = cell.seed, str(run_dir)
    for d in run.data:
        if d.train:
            d.fraction = cell.fraction
            if cfg.subsets == "per_seed":
                d.fraction_seed = cell.seed
        if cfg.split_seed is not None and d.split.seed is None:
            d.split.seed = cfg.split_seed
    if init is not None:
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
    """Atomic JSON write (temp file + ``os.replace``), so a killed run never leaves half a result; a failed write
    (a full disk) names the file and leaves no temp file."""
    atomic_write(path, json.dumps(data, indent=2, default=float))


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s); the cell runs again", path, err)
        return None
    return data if isinstance(data, dict) else None


def _definition_sha(cfg: ExperimentConfig, cell: Cell, run_cfg: Any) -> str:
    """sha256 of the resolved run config and of the content of the cell's weights and data (not their names)."""
    text = run_config_yaml(run_cfg)
    if cell.init in cfg.baselines:
        text += json.dumps({"baseline": asdict(cfg.baselines[cell.init]), "version": BASELINE_VERSION})
    text += json.dumps(cell_inputs(run_cfg, cell_source(cfg, cell)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _fit_cell(cfg: ExperimentConfig, cell: Cell, run_cfg: Any, fit_fn: Callable[..., Any] | None) -> dict[str, Any]:
    fit_fn = fit if fit_fn is None else fit_fn
    callbacks = {"on_train_start": [_spread_evals(cfg.eval_points)]} if cfg.eval_points else None
    res = fit_fn(run_cfg, resume=True, quiet=True, callbacks=callbacks)
    return {"kind": "init", "metrics": res.metrics, "history": res.history, "steps": res.step,
            "seconds": round(float(res.seconds), 3)}


def _baseline_cell(cfg: ExperimentConfig, cell: Cell, run_cfg: Any) -> dict[str, Any]:
    b = cfg.baselines[cell.init]
    t = time.perf_counter()
    out = run_baseline(b.kind, run_cfg, b.source, b.parts)
    return {"kind": "baseline", "metrics": out["metrics"], "history": [], "steps": 0,
            "seconds": round(time.perf_counter() - t, 3), "params": out["params"],
            **{k: v for k, v in out.items() if k.startswith("n_")}}


def _run_cell(cfg: ExperimentConfig, cell: Cell, out: Path, fit_fn: Callable[..., Any] | None = None
              ) -> tuple[dict[str, Any], bool]:
    """Run (or reuse) one cell; returns ``(result dict, ran)``. Runs inside a pinned job."""
    cell_dir = out / "cells" / cell.id
    run_cfg = cell_run_config(cfg, cell, cell_dir / "run")
    sha = _definition_sha(cfg, cell, run_cfg)
    done = _read_result(cell_dir / RESULT_FILE)
    if done is not None and done.get("config_sha256") == sha:
        return done, False
    started = cell_dir / STARTED_FILE  # the definition a cut-short run in run/ was started under
    if done is not None or ((cell_dir / "run").exists() and _read_text(started) != sha):
        log.warning("cell %s: its config, weights or data changed since it ran; running it again", cell.id)
        shutil.rmtree(cell_dir / "run", ignore_errors=True)
    cell_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(started, sha)
    cpu = time.process_time()
    outcome = _baseline_cell(cfg, cell, run_cfg) if cell.init in cfg.baselines else _fit_cell(cfg, cell, run_cfg,
                                                                                                fit_fn)
    task = cfg.tasks[cell.task]
    if task.metric not in outcome["metrics"]:
        raise KeyError(f"tasks.{cell.task}.metric: {task.metric!r} is not among the metrics of cell {cell.id} "
                       f"{sorted(outcome['metrics'])}")
    row = {"cell": cell.id, "task": cell.task, "init": cell.init, "fraction": cell.fraction, "seed": cell.seed,
           "metric": task.metric, "mode": task.mode, "value": float(outcome["metrics"][task.metric]),
           "config_sha256": sha, "cpu_seconds": round(time.process_time() - cpu, 3), **outcome}
    _write_json(cell_dir / RESULT_FILE, row)
    return row, True


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


class Progress:
    """Counts finished jobs; logs one line per job (value, seconds, elapsed, time left) and drives a tqdm bar."""

    def __init__(self, total: int, enabled: bool | None = None, desc: str = "cells") -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self._lock = threading.Lock()
        self.bar = tqdm(total=total, desc=desc, unit="job", leave=False,
                        disable=not sys.stderr.isatty() if enabled is None else not enabled)

    def finished(self, name: str, detail: str = "") -> None:
        """Record one finished job (called from any thread)."""
        with self._lock:
            self.done += 1
            elapsed = time.perf_counter() - self.start
            left = elapsed / self.done * (self.total - self.done)
            log.info("[%d/%d] %s%s; %.0f s elapsed, about %.0f s left", self.done, self.total, name,
                     f": {detail}" if detail else "", elapsed, left)
            self.bar.set_postfix_str(name)
            self.bar.update()

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _cell_job(cfg: ExperimentConfig, cell: Cell, out: Path, fit_fn: Callable[..., Any] | None) -> tuple[dict, bool]:
    return _run_cell(cfg, cell, out, fit_fn)


def submit_cells(cfg: ExperimentConfig, cells: Iterable[Cell], out: Path, pool: JobPool,
                 progress: Progress | None = None, fit_fn: Callable[..., Any] | None = None) -> dict[Cell, Future]:
    """Submit cells to ``pool``; each future gives ``(result dict, ran)``. ``progress`` hears of each one done."""
    def report(fut: Future, cell: Cell) -> None:
        if fut.exception() is not None:
            progress.finished(cell.id, f"failed ({fut.exception()})")
            return
        row, did_run = fut.result()
        progress.finished(cell.id, f"{row['value']:.4f}" + ("" if did_run else " (reused)"))

    futures = {}
    for cell in cells:
        futures[cell] = fut = pool.submit(_cell_job, cfg, cell, out, fit_fn)
        if progress is not None:
            fut.add_done_callback(lambda f, c=cell: report(f, c))
    return futures


def wait_cells(futures: dict[Cell, Future]) -> tuple[list[str], list[str]]:
    """Wait for every future (raising the first error); returns the ids of the cells run and reused."""
    ran, skipped = [], []
    for cell, fut in futures.items():
        _, did_run = fut.result()
        (ran if did_run else skipped).append(cell.id)
    return ran, skipped


def collect(cfg: ExperimentConfig, out: Path, *, plots: bool = True, ran: Sequence[str] = (),
            skipped: Sequence[str] = ()) -> ExperimentResult:
    """Read every cell's ``result.json`` and write ``results.csv``, ``results.md`` and the plots."""
    cells = list_cells(cfg)
    rows = [_read_result(out / "cells" / c.id / RESULT_FILE) for c in cells]
    missing = [c.id for c, r in zip(cells, rows) if r is None]
    if missing:
        raise RuntimeError(f"{out}: no {RESULT_FILE} for cell(s) {missing}")
    with naming_path(out):  # a write that fails on a full disk names no file: name the folder at least
        files = report.write_results(out, rows, title=cfg.name, reference=cfg.reference, plots=plots)
    summary = report.summarise(rows)
    paired = report.paired_differences(rows, cfg.reference) if cfg.reference else []
    return ExperimentResult(str(out), rows, summary, report.format_table(summary), files, list(ran), list(skipped),
                            paired, report.claims(rows, paired))


def run_experiment(cfg: ExperimentConfig | str | Path | dict, overrides: Sequence[str] = (), *,
                   output: str | os.PathLike | None = None, fit_fn: Callable[..., Any] | None = None,
                   progress: bool | None = None, plots: bool = True, workers: int | None = None) -> ExperimentResult:
    """Run every cell of the matrix that has no result yet, then write ``results.csv``, ``results.md`` and plots.

    Args:
        cfg: the experiment (or a YAML path / mapping, loaded with ``overrides``).
        overrides: dotted ``--set`` overrides of the experiment config.
        output: the experiment folder (default: ``cfg.output``).
        fit_fn: the trainer, ``fit(run_config, *, resume, quiet, callbacks) -> TrainResult`` (default
            :func:`medzoo.train.fit`); a custom one runs in this process (one worker).
        progress: a progress bar over cells (default: when stderr is a terminal); a log line per cell always.
        plots: write the PNG plots.
        workers: single-thread worker processes (default: the usable cores, at most one per cell); the numbers do
            not depend on it.

    Returns:
        The :class:`ExperimentResult` (rows, summary, the plain table, paired differences, claims, file paths).

    Raises:
        ConfigError: an invalid experiment or run config. KeyError: a task metric the runs do not report.
    """
    if not isinstance(cfg, ExperimentConfig) or overrides:
        cfg = load_experiment_config(cfg, overrides)
    out = Path(output if output is not None else cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cells = list_cells(cfg)
    workers = 1 if fit_fn is not None else (workers or default_workers(len(cells)))
    if (busy := busy_warning()) is not None:
        log.warning("%s", busy)
    bar = Progress(len(cells), progress)
    try:
        with JobPool(workers) as pool:
            ran, skipped = wait_cells(submit_cells(cfg, cells, out, pool, bar, fit_fn))
    finally:
        bar.close()
    log.info("experiment %s: %d cells run, %d reused from %s", cfg.name, len(ran), len(skipped), out)
    return collect(cfg, out, plots=plots, ran=ran, skipped=skipped)
