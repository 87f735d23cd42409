"""``medzoo demo``: pretrain one encoder on several tasks, publish it to a local zoo, and measure what it buys.

The pipeline, in ``out`` (every step reuses what a previous run of the same profile finished; a step whose marker a
killed run left torn, or whose inputs were written again, is done again):

1. ``corpus/``: the synthetic corpus (:func:`medzoo.data.synth.write_synthetic_corpus`).
2. ``pretrain/``: one shared encoder trained on CT lung/lesion segmentation (3-D volumes), COVIDx-CT patient
   classification (series of CT slices) and ChestX-ray14 findings (2-D CXRs with ribs, clavicles, devices).
3. ``zoo/``: the encoder exported (:func:`medzoo.zoo.publish.export_model`), published into ``zoo/catalogs/`` with
   its sha256 (a ``file://`` URL), and loaded back by name through the catalog (download cache and hash check);
   ``$MEDZOO_HOME`` points at ``zoo/`` while the demo runs and is restored afterwards.
4. ``experiment/``: the held-out task, lung segmentation on the Montgomery-style CXRs (lungs are what pretraining
   saw in the CTs and behind the findings), at several training-data fractions and seeds: fine-tuned from scratch
   and from the zoo weights, against rows that train no network: a threshold + connected-components pipeline and
   closed-form linear probes on the frozen zoo encoder and on a random one (:func:`medzoo.experiment.run_experiment`).
   Each seed draws its own training subset; differences are paired by seed, with 95% t intervals.
5. ``report.md`` with the tables, the generated sentences, the plots and the timing.

Every job runs on one torch thread with deterministic algorithms, and jobs run side by side in worker processes, so
the tables are the same bytes whatever ``OMP_NUM_THREADS``, the core count or the worker count.

Example:
    >>> result = run_demo("medzoo-demo", profile="quick")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from medzoo.data.synth import CORPUS_VERSION, SIZES
from medzoo.data.synth.ct import write_covidx_ct, write_msd
from medzoo.data.synth.cxr import write_nih
from medzoo.data.synth.tb import write_montgomery
from medzoo.experiment import demo_report
from medzoo.experiment.config import load_experiment_config
from medzoo.experiment.parallel import JobPool, busy_warning, default_workers
from medzoo.experiment.runner import Progress, cell_source, collect, list_cells, submit_cells, wait_cells
from medzoo.train import fit
from medzoo.train.config import load_run_config, run_config_yaml
from medzoo.utils.atomic import atomic_write
from medzoo.zoo.checkpoint import model_from_checkpoint
from medzoo.zoo.export import sha256_file
from medzoo.zoo.publish import export_model, publish
from medzoo.zoo.resolver import load

__all__ = ["DemoProfile", "DemoResult", "PROFILES", "ZOO_NAME", "run_demo", "pretrain_config", "finetune_config",
           "experiment_config"]

log = logging.getLogger(__name__)

ZOO_NAME = "demo.resnet10.multitask"
_NIH_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


@dataclass(frozen=True)
class DemoProfile:
    """How big the demo is: corpus size, image sizes, widths, steps, fractions and seeds."""

    corpus: str = "small"
    widths: tuple[int, ...] = (8, 16, 32, 64)
    cxr_px: int = 64
    ct_patch: int = 24
    slice_px: int = 48
    pretrain_steps: int = 600
    finetune_steps: int = 60
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    seeds: int = 5
    eval_points: int = 4
    pretrain_lr: float = 0.003
    finetune_lr: float = 0.001
    random_probe: bool = True


PROFILES = {
    "full": DemoProfile(),
    "quick": DemoProfile(pretrain_steps=150, finetune_steps=40, fractions=(0.1, 1.0), seeds=3, eval_points=3,
                         random_probe=False),
    # Tests only: the whole pipeline in seconds; 10 steps at a high rate so that the Dice values are not all zero.
    "tiny": DemoProfile(corpus="tiny", cxr_px=32, ct_patch=16, slice_px=32, pretrain_steps=2, finetune_steps=10,
                        finetune_lr=0.01, fractions=(0.5, 1.0), seeds=2, eval_points=1),
}


@dataclass
class DemoResult:
    """What :func:`run_demo` gives back."""

    out: str
    table: str
    paired_table: str
    claims: list[str]
    report: str
    plots: list[str]
    summary: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    pretrain_metrics: dict[str, float]
    zoo: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _encoder(p: DemoProfile) -> dict[str, Any]:
    # Group norm: CT volumes, CT slices and CXRs share the encoder, and batch-norm statistics mixed over such
    # different inputs would misfit each of them at evaluation time.
    return {"name": "resnet10", "widths": list(p.widths), "options": {"norm": ["group", {"num_groups": 8}]}}


def pretrain_config(p: DemoProfile, corpus: Path, out: Path) -> dict[str, Any]:
    """The multi-task pretraining run: CT segmentation + COVIDx-CT series + CXR multilabel on one encoder."""
    spacing = [10.5 * 32 / p.ct_patch, 10.5 * 32 / p.ct_patch, 10.0 * 32 / p.ct_patch]  # the whole phantom
    tasks = {"ct_seg": {"type": "segmentation", "level": "volume", "labels": ["background", "lung", "lesion"],
                        "decoder_channels": [16, 8, 8, 8, 8]},
             "covid_ct": {"type": "classification", "level": "series", "labels": ["normal", "pneumonia", "covid19"]},
             "findings": {"type": "multilabel", "level": "image", "labels": _NIH_LABELS}}
    data = [{"name": "msd", "kind": "msd", "root": "ct/Task99_SynthLung", "options": {"split": "training"},
             "tasks": {"segmentation": "ct_seg"}, "batch_size": 2,
             "transform": {"preset": "ct", "size": [p.ct_patch] * 3, "options": {"spacing": spacing}}},
            {"name": "covidx_ct", "kind": "covidx-ct", "root": "covidx-ct", "options": {"level": "series"},
             "tasks": {"covid": "covid_ct"}, "slice_size": [p.slice_px] * 2, "transform": {"preset": "series"},
             "batch_size": 2},
            {"name": "nih", "kind": "nih-cxr14", "root": "nih", "tasks": {"findings": "findings"},
             "transform": {"preset": "cxr", "size": [p.cxr_px]}, "batch_size": 8}]
    return {"data_root": str(corpus),
            "model": {"encoder": _encoder(p), "tasks": tasks,
                      "aggregator": {"name": "attention", "options": {"hidden_features": 32}}},
            "data": data,
            "train": {"epochs": 100000, "max_steps": p.pretrain_steps, "lr": p.pretrain_lr, "weight_decay": 1e-4,
                      "scheduler": {"name": "cosine", "warmup_steps": min(10, p.pretrain_steps)},
                      "sampling": "round_robin", "eval_every": 100000, "seed": 0, "device": "cpu"},
            "output": {"dir": str(out), "tensorboard": False, "log_images": False}}


def finetune_config(p: DemoProfile, corpus: Path) -> dict[str, Any]:
    """The held-out task's base run: 2-D lung segmentation on the Montgomery-style CXRs, a fixed step budget."""
    # No augmentation: a run costs half as much (the random affine is most of a step's data time), and both
    # inits see exactly the same pixels, so the comparison isolates the starting weights.
    data = [{"name": "montgomery", "kind": "montgomery", "root": "montgomery/MontgomerySet",
             "tasks": {"mask": "lung"}, "transform": {"preset": "cxr", "size": [p.cxr_px], "augment": False},
             "split": {"fractions": {"train": 0.6, "val": 0.1, "test": 0.3}}, "batch_size": 4}]
    return {"data_root": str(corpus),
            "model": {"encoder": _encoder(p),
                      "tasks": {"lung": {"type": "segmentation", "level": "image", "labels": ["background", "lung"],
                                         "decoder_channels": [32, 16, 8, 8, 8]}}},
            "data": data,
            "train": {"epochs": 100000, "max_steps": p.finetune_steps, "lr": p.finetune_lr, "seed": 0, "device": "cpu",
                      "eval_every": 100000},
            # At low fractions an epoch is one batch: a last.pt per epoch would write a checkpoint every step.
            "output": {"dir": "unused", "tensorboard": False, "log_images": False, "last_every_epoch": False}}


def experiment_config(p: DemoProfile, corpus: Path, out: Path, seeds: int) -> dict[str, Any]:
    """The demo's matrix: baselines and scratch / zoo fine-tuning x fractions x seeds on the held-out task."""
    zoo = f"zoo:{ZOO_NAME}"
    return {"name": "demo: lung segmentation on held-out CXRs", "output": str(out),
            "run": finetune_config(p, corpus),
            "tasks": {"lung_seg": {"metric": "test/lung/dice/lung"}},
            "baselines": {"threshold": {"kind": "threshold"},
                          **({"random_probe": {"kind": "probe", "source": "scratch"}} if p.random_probe else {}),
                          "zoo_probe": {"kind": "probe", "source": zoo}},
            "inits": {"scratch": {"source": "scratch"}, "zoo": {"source": zoo, "parts": ["encoder"]}},
            "fractions": list(p.fractions), "seeds": list(range(seeds)), "split_seed": 0, "subsets": "per_seed",
            "reference": "scratch", "eval_points": p.eval_points}


@contextlib.contextmanager
def _medzoo_home(path: Path) -> Iterator[None]:
    """Point ``$MEDZOO_HOME`` (catalogs and download cache) at ``path`` for the demo; restore it afterwards."""
    old = os.environ.get("MEDZOO_HOME")
    os.environ["MEDZOO_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MEDZOO_HOME", None)
        else:
            os.environ["MEDZOO_HOME"] = old


_FAMILIES = ("msd", "covidx-ct", "nih", "montgomery")  # what the demo reads, in the public datasets' layouts


def _family_job(family: str, corpus: Path, size: str) -> str:
    """Write one family of the synthetic corpus (each has its own seeded generator, so they can run in parallel)."""
    cfg = SIZES[size]
    writers = {"msd": lambda: write_msd(corpus / "ct", 0, cfg, dicom=False),
               "covidx-ct": lambda: write_covidx_ct(corpus / "covidx-ct", 0, cfg),
               "nih": lambda: write_nih(corpus / "nih", 0, cfg),
               "montgomery": lambda: write_montgomery(corpus / "montgomery", 0, cfg)}
    writers[family]()
    return family


def _corpus(p: DemoProfile, out: Path, pool: Any) -> tuple[Path, bool]:
    """The families of the synthetic corpus the demo uses (seed 0), written side by side; reused when present."""
    corpus = out / "corpus"
    manifest = corpus / "demo-corpus.json"
    want = {"format": "medzoo-demo-corpus", "version": CORPUS_VERSION, "seed": 0, "size": p.corpus,
            "families": list(_FAMILIES)}
    if _read_json(manifest, "corpus") == want:
        log.info("corpus: reusing %s", corpus)
        return corpus, True
    for fut in [pool.submit(_family_job, f, corpus, p.corpus) for f in _FAMILIES]:
        fut.result()
    atomic_write(manifest, json.dumps(want, indent=2) + "\n")
    return corpus, False


def _read_json(path: Path, step: str) -> Any:
    """The JSON in ``path``; None when it is missing or torn (a run killed while writing it: the step is redone)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("%s: unreadable (%s), probably cut short by a killed run; redoing the %s step", path, err, step)
        return None


def _pretrain_job(cfg: Any) -> tuple[dict[str, float], float]:
    """Pretrain; returns the final metrics and the job's CPU seconds."""
    cpu = time.process_time()
    return fit(cfg, resume=True, quiet=True).metrics, time.process_time() - cpu


def _pretrain_state(p: DemoProfile, corpus: Path, out: Path,
                    corpus_reused: bool) -> tuple[Any, dict[str, float] | None]:
    """The pretraining run config, and its metrics when a finished run of the same config on the same corpus files
    is in ``out`` (a corpus written again means pretraining again)."""
    run_dir = out / "pretrain"
    cfg = load_run_config(pretrain_config(p, corpus, run_dir))
    same = corpus_reused and (run_dir / "config.yaml").is_file() and \
        (run_dir / "config.yaml").read_text() == run_config_yaml(cfg)
    result = _read_json(run_dir / "result.json", "pretraining") if same else None
    if isinstance(result, dict) and isinstance(result.get("metrics"), dict):
        log.info("pretraining: reusing %s", run_dir)
        return cfg, result["metrics"]
    if not same and run_dir.exists():
        log.warning("pretraining: %s holds a run of another config or corpus; training again", run_dir)
        shutil.rmtree(run_dir)
    return cfg, None


def _publish(out: Path) -> dict[str, Any]:
    """Export the pretrained encoder, publish it into ``zoo/catalogs/demo.yaml`` and load it back by name.

    A previous run's publication is reused when it was made from the same checkpoint and still loads back equal to
    it; a torn ``export.json``, catalog or export folder (a killed run) is published again.
    """
    ckpt, marker = out / "pretrain" / "last.pt", out / "zoo" / "export.json"
    ckpt_sha = sha256_file(ckpt)
    done = _read_json(marker, "publish") or {}
    reused = isinstance(done, dict) and done.get("checkpoint_sha256") == ckpt_sha
    if reused:
        try:
            _load_back(ckpt)
        except Exception as err:  # noqa: BLE001  (whatever keeps it from loading, the cure is to publish again)
            log.warning("zoo: %s no longer loads back (%s); publishing it again", ZOO_NAME, err)
            reused = False
    if not reused:
        done = _export_and_publish(out, ckpt, ckpt_sha)
        _load_back(ckpt)
    log.info("zoo: %s published in %s and loaded back by name", ZOO_NAME, done["catalog"])
    return {**done, "reused": reused}


def _export_and_publish(out: Path, ckpt: Path, ckpt_sha: str) -> dict[str, Any]:
    export_dir, catalog = out / "zoo" / "exports" / ZOO_NAME, out / "zoo" / "catalogs" / "demo.yaml"
    model, _ = model_from_checkpoint(ckpt)
    export_model(model, export_dir, name=ZOO_NAME, parts="encoder", overwrite=True,
                 description="medzoo demo: resnet10 encoder pretrained on synthetic CT segmentation, "
                             "COVIDx-CT series and CXR findings", source="medzoo demo", license="CC0-1.0")
    catalog.unlink(missing_ok=True)  # the demo's own catalog, holding only this entry (a torn one would not parse)
    spec = publish(export_dir, ZOO_NAME, export_dir.resolve().as_uri() + "/", catalog=catalog, replace=True)
    done = {"checkpoint_sha256": ckpt_sha, "name": ZOO_NAME, "sha256": spec.files[0].sha256,
            "catalog": str(catalog), "url": spec.files[0].url}
    atomic_write(out / "zoo" / "export.json", json.dumps(done, indent=2))
    return done


def _load_back(ckpt: Path) -> None:
    """Load the entry by name (catalog, download cache, sha256 check); its encoder must equal the checkpoint's."""
    loaded, _ = load(ZOO_NAME, parts="encoder")
    got = loaded.encoder.state_dict()
    for key, value in model_from_checkpoint(ckpt)[0].encoder.state_dict().items():
        if key not in got or not torch.equal(value, got[key]):
            raise RuntimeError(f"zoo entry {ZOO_NAME}: tensor {key} differs from the pretrained checkpoint {ckpt}")


def _torch_threads() -> int:
    return torch.get_num_threads()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (the workers, once joined)."""
    try:
        import resource  # a Unix-only module
    except ImportError:  # not on Windows
        return float("nan")
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _resolve(profile: str | DemoProfile, seeds: int | None) -> tuple[str, DemoProfile]:
    name = profile if isinstance(profile, str) else "custom"
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
        profile = PROFILES[profile]
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        profile = replace(profile, seeds=seeds)
    return name, profile


def _matrix(p: DemoProfile, corpus: Path, out: Path, pool: Any, bar: Any, exp_cfg: Any,
            pre_cfg: Any, pre: dict[str, float] | None, clock: dict[str, float]) -> tuple[dict, dict, list, list]:
    """Pretraining and every cell: cells that need no zoo weights run beside the pretraining; the rest after it."""
    t = time.perf_counter()
    pre_future = None if pre is not None else pool.submit(_pretrain_job, pre_cfg)
    if pre_future is not None:
        pre_future.add_done_callback(lambda f: bar.finished("pretraining", "" if f.exception() else "done"))
    cells = list_cells(exp_cfg)
    later = [c for c in cells if cell_source(exp_cfg, c).startswith("zoo:")]
    futures = submit_cells(exp_cfg, [c for c in cells if c not in later], out / "experiment", pool, bar)
    if pre_future is not None:
        pre, clock["pretraining, CPU"] = pre_future.result()
        clock["pretraining done, wall"] = time.perf_counter() - t
    zoo = _publish(out)
    futures.update(submit_cells(exp_cfg, later, out / "experiment", pool, bar))
    ran, skipped = wait_cells(futures)
    return pre, zoo, ran, skipped


def run_demo(out: str | os.PathLike = "medzoo-demo", profile: str | DemoProfile = "full", *,
             seeds: int | None = None, progress: bool | None = None, workers: int | None = None) -> DemoResult:
    """Run (or resume) the whole demo in ``out``.

    Args:
        out: the demo folder (created).
        profile: ``"full"``, ``"quick"``, ``"tiny"`` (tests) or a :class:`DemoProfile`.
        seeds: seeds per cell (default: the profile's).
        progress: a progress bar (default: when stderr is a terminal); a log line per finished job always.
        workers: single-thread worker processes (default: the usable cores); the numbers do not depend on it.

    Returns:
        The :class:`DemoResult` (tables, paired differences, generated claims, report and plot paths, seconds).
    """
    name, profile = _resolve(profile, seeds)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    busy = busy_warning()
    if busy is not None:
        log.warning("%s", busy)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    exp_cfg = load_experiment_config(experiment_config(profile, out / "corpus", out / "experiment", profile.seeds))
    workers = workers or default_workers(len(list_cells(exp_cfg)))
    with _medzoo_home(out / "zoo"), JobPool(workers) as pool:
        corpus, corpus_reused = _corpus(profile, out, pool)
        seconds["corpus, wall"] = time.perf_counter() - t0
        pre_cfg, pre = _pretrain_state(profile, corpus, out, corpus_reused)
        jobs = len(list_cells(exp_cfg)) + (pre is None)
        log.info("demo (%s profile): %d jobs on %d single-thread worker(s)", name, jobs, workers)
        bar = Progress(jobs, progress, desc="demo")
        try:
            pre, zoo, ran, skipped = _matrix(profile, corpus, out, pool, bar, exp_cfg, pre_cfg, pre, seconds)
        finally:
            bar.close()
        exp = collect(exp_cfg, out / "experiment", ran=ran, skipped=skipped)
    seconds["total, wall"] = time.perf_counter() - t0
    seconds["cells, CPU"] = sum(r.get("cpu_seconds", 0.0) for r in exp.rows if r["cell"] in set(exp.ran))
    seconds["all processes, CPU"] = _cpu_seconds()
    run = {"profile": name, "settings": asdict(profile), "workers": workers, "load_average": load,
           "torch_threads_outside_jobs": _torch_threads(),
           "busy": busy, "reused": {"corpus": corpus_reused, "cells": len(exp.skipped)}, "seconds": seconds}
    report = demo_report.write_report(out, exp, pre, zoo, run)
    atomic_write(out / "demo.json", json.dumps({**run, "zoo": zoo, "claims": exp.claims}, indent=2))
    plots = [v for k, v in exp.files.items() if k.split(":")[0] in ("fraction", "paired", "curves")]
    return DemoResult(str(out), exp.table, demo_report.paired_text(exp), exp.claims, str(report), plots,
                      exp.summary, exp.paired, pre, zoo, seconds)
