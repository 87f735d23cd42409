"""``medzoo demo``: pretrain one encoder on several tasks, publish it to a local zoo, and show what it buys.

The pipeline, in ``out`` (every step reuses what a previous run of the same profile finished):

1. ``corpus/``: the synthetic corpus (:func:`medzoo.data.synth.write_synthetic_corpus`).
2. ``pretrain/``: one shared encoder trained on CT lung/lesion segmentation (3-D volumes), COVIDx-CT patient
   classification (series of CT slices) and ChestX-ray14 findings (2-D CXRs).
3. ``zoo/``: the encoder exported (:func:`medzoo.zoo.publish.export_model`), published into ``zoo/catalogs/`` with
   its sha256 (a ``file://`` URL), and loaded back by name through the catalog (download cache and hash check);
   ``$MEDZOO_HOME`` points at ``zoo/`` while the demo runs and is restored afterwards.
4. ``experiment/``: the held-out task (lung segmentation on the Montgomery-style CXRs; lungs are seen in the
   pretraining CXRs and CTs) fine-tuned from scratch, from the zoo weights and with the zoo encoder frozen, at
   several training-data fractions and seeds (:func:`medzoo.experiment.run_experiment`).
5. ``report.md`` with the table and the plots.

Example:
    >>> result = run_demo("medzoo-demo", profile="quick")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DemoProfile", "DemoResult", "PROFILES", "ZOO_NAME", "run_demo", "pretrain_config", "finetune_config"]

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
    pretrain_steps: int = 1000
    finetune_steps: int = 30
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    seeds: int = 3
    eval_points: int = 4
    pretrain_lr: float = 0.003
    finetune_lr: float = 0.001


PROFILES = {
    "full": DemoProfile(),
    "quick": DemoProfile(pretrain_steps=300, finetune_steps=30, fractions=(0.1, 1.0), seeds=1, eval_points=3),
    # Tests only: the whole pipeline in seconds (numbers meaningless).
    "tiny": DemoProfile(corpus="tiny", cxr_px=32, ct_patch=16, slice_px=32, pretrain_steps=2, finetune_steps=2,
                        fractions=(0.5, 1.0), seeds=1, eval_points=1),
}


@dataclass
class DemoResult:
    """What :func:`run_demo` gives back."""

    out: str
    table: str
    report: str
    plots: list[str]
    summary: list[dict[str, Any]]
    pretrain_metrics: dict[str, float]
    zoo: dict[str, Any]
    claim: dict[str, Any]
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
    data = [{"name": "montgomery", "kind": "montgomery", "root": "montgomery/MontgomerySet",
             "tasks": {"mask": "lung"}, "transform": {"preset": "cxr", "size": [p.cxr_px]},
             "split": {"fractions": {"train": 0.6, "val": 0.1, "test": 0.3}}, "batch_size": 4}]
    return {"data_root": str(corpus),
            "model": {"encoder": _encoder(p),
                      "tasks": {"lung": {"type": "segmentation", "level": "image", "labels": ["background", "lung"],
                                         "decoder_channels": [32, 16, 8, 8, 8]}}},
            "data": data,
            "train": {"epochs": 100000, "max_steps": p.finetune_steps, "lr": p.finetune_lr, "seed": 0, "device": "cpu",
                      "eval_every": 100000},
            "output": {"dir": "unused", "tensorboard": False, "log_images": False}}


def experiment_config(p: DemoProfile, corpus: Path, out: Path, seeds: int) -> dict[str, Any]:
    """The demo's matrix: scratch / zoo weights / frozen zoo encoder x fractions x seeds on the held-out task."""
    zoo = f"zoo:{ZOO_NAME}"
    return {"name": "demo: lung segmentation on held-out CXRs", "output": str(out),
            "run": finetune_config(p, corpus),
            "tasks": {"lung_seg": {"metric": "test/lung/dice/lung"}},
            "inits": {"scratch": {"source": "scratch"}, "zoo": {"source": zoo, "parts": ["encoder"]},
                      "zoo_frozen": {"source": zoo, "parts": ["encoder"], "freeze_encoder": True}},
            "fractions": list(p.fractions), "seeds": list(range(seeds)), "split_seed": 0,
            "eval_points": p.eval_points}


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


def _corpus(p: DemoProfile, out: Path) -> tuple[Path, bool]:
    from medzoo.data.synth import write_synthetic_corpus

    corpus = out / "corpus"
    manifest = corpus / "corpus.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text(encoding="utf-8"))
        if info.get("seed") == 0 and info.get("size") == p.corpus:
            log.info("corpus: reusing %s", corpus)
            return corpus, True
    write_synthetic_corpus(corpus, seed=0, size=p.corpus, dicom=False)
    return corpus, False


def _pretrain(p: DemoProfile, corpus: Path, out: Path, progress: bool) -> tuple[dict[str, float], bool]:
    from medzoo.train import fit
    from medzoo.train.config import load_run_config, run_config_yaml

    run_dir = out / "pretrain"
    cfg = load_run_config(pretrain_config(p, corpus, run_dir))
    same = (run_dir / "config.yaml").is_file() and (run_dir / "config.yaml").read_text() == run_config_yaml(cfg)
    if same and (run_dir / "result.json").is_file():
        log.info("pretraining: reusing %s", run_dir)
        return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))["metrics"], True
    if not same and run_dir.exists():
        import shutil

        log.warning("pretraining: %s holds a run of another config; training again", run_dir)
        shutil.rmtree(run_dir)
    return fit(cfg, resume=True, quiet=not progress).metrics, False


def _publish(out: Path) -> dict[str, Any]:
    """Export the pretrained encoder, publish it into ``zoo/catalogs/demo.yaml`` and load it back by name."""
    import torch

    from medzoo.zoo.checkpoint import model_from_checkpoint
    from medzoo.zoo.export import sha256_file
    from medzoo.zoo.publish import export_model, publish
    from medzoo.zoo.resolver import load

    ckpt = out / "pretrain" / "last.pt"
    export_dir, marker = out / "zoo" / "exports" / ZOO_NAME, out / "zoo" / "export.json"
    ckpt_sha = sha256_file(ckpt)
    done = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    reused = done.get("checkpoint_sha256") == ckpt_sha
    if not reused:
        model, _ = model_from_checkpoint(ckpt)
        export_model(model, export_dir, name=ZOO_NAME, parts="encoder", overwrite=True,
                     description="medzoo demo: resnet10 encoder pretrained on synthetic CT segmentation, "
                                 "COVIDx-CT series and CXR findings", source="medzoo demo", license="CC0-1.0")
        spec = publish(export_dir, ZOO_NAME, export_dir.resolve().as_uri() + "/",
                       catalog=out / "zoo" / "catalogs" / "demo.yaml", replace=True)
        done = {"checkpoint_sha256": ckpt_sha, "name": ZOO_NAME, "sha256": spec.files[0].sha256,
                "catalog": str(out / "zoo" / "catalogs" / "demo.yaml"), "url": spec.files[0].url}
        marker.write_text(json.dumps(done, indent=2), encoding="utf-8")
    loaded, _ = load(ZOO_NAME, parts="encoder")  # through the catalog: copy to the cache, verify the sha256
    got = loaded.encoder.state_dict()
    for key, value in model_from_checkpoint(ckpt)[0].encoder.state_dict().items():
        if key not in got or not torch.equal(value, got[key]):
            raise RuntimeError(f"zoo entry {ZOO_NAME}: tensor {key} differs from the pretrained checkpoint {ckpt}")
    log.info("zoo: %s published in %s and loaded back by name", ZOO_NAME, done["catalog"])
    return {**done, "reused": reused}


def _claim(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the zoo init beats scratch (mean over seeds) at the lowest data fraction."""
    low = min(s["fraction"] for s in summary)
    at = {s["init"]: s for s in summary if s["fraction"] == low}
    scratch, zoo = at["scratch"]["mean"], at["zoo"]["mean"]
    return {"fraction": low, "scratch": scratch, "zoo": zoo, "seeds": at["zoo"]["n"], "holds": bool(zoo > scratch),
            "metric": at["zoo"]["metric"]}


def _report(out: Path, p: DemoProfile, name: str, exp: Any, pre: dict[str, float], zoo: dict[str, Any],
            claim: dict[str, Any], seconds: dict[str, float], reused: dict[str, bool]) -> Path:
    from medzoo.experiment.report import markdown_table

    keys = ("test/ct_seg/mean_dice", "test/covid_ct/accuracy", "test/covid_ct/auroc", "test/findings/mean_auroc")
    verdict = "beats" if claim["holds"] else "does NOT beat"
    lines = [
        "# medzoo demo report", "",
        f"Profile `{name}`: {p.corpus} synthetic corpus, resnet10 widths {list(p.widths)}, CXRs at {p.cxr_px} px; "
        f"{p.pretrain_steps} pretraining steps; {p.finetune_steps} fine-tuning steps per run; "
        f"{len(exp.summary[0]['values'])} seed(s) per cell.", "",
        "## 1. Pretraining (one encoder, three tasks)", "",
        "| test metric | value |", "|---|---:|", *[f"| `{k}` | {pre[k]:.3f} |" for k in keys if k in pre], "",
        "## 2. Zoo", "",
        f"Encoder exported and published as `{zoo['name']}` in `{zoo['catalog']}` (sha256 `{zoo['sha256']}`), "
        "then loaded back by name through the catalog.", "",
        "## 3. Held-out task: CXR lung segmentation (Montgomery-style set)", "",
        f"Test Dice of the lung class, mean ± std over seeds (`{claim['metric']}`). Every run trains for the "
        "same number of steps; `zoo_frozen` trains the decoder only.", "",
        markdown_table(exp.summary, "lung_seg"), "",
        f"At the lowest fraction ({claim['fraction']:g}), the zoo initialisation {verdict} scratch: "
        f"{claim['zoo']:.3f} vs {claim['scratch']:.3f} (mean over {claim['seeds']} seed(s)).", "",
        "![metric vs data fraction](experiment/fraction_lung_seg.png)", "",
        "![learning curves](experiment/curves_lung_seg.png)", "",
        "## Timing of this run", "", "| step | seconds |", "|---|---:|",
        *[f"| {k}{' (reused)' if reused.get(k) else ''} | {v:.1f} |" for k, v in seconds.items()], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_demo(out: str | os.PathLike = "medzoo-demo", profile: str | DemoProfile = "full", *,
             seeds: int | None = None, progress: bool | None = None) -> DemoResult:
    """Run (or resume) the whole demo in ``out``.

    Args:
        out: the demo folder (created).
        profile: ``"full"``, ``"quick"``, ``"tiny"`` (tests) or a :class:`DemoProfile`.
        seeds: seeds per cell (default: the profile's).
        progress: progress bars (default: when stderr is a terminal).

    Returns:
        The :class:`DemoResult` (the plain table, report and plot paths, the claim check, seconds per step).
    """
    import sys

    from medzoo.experiment.runner import run_experiment

    name = profile if isinstance(profile, str) else "custom"
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
        profile = PROFILES[profile]
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        profile = replace(profile, seeds=seeds)
    show = sys.stderr.isatty() if progress is None else progress
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}
    with _medzoo_home(out / "zoo"):
        t = time.perf_counter()
        corpus, reused["corpus"] = _corpus(profile, out)
        seconds["corpus"] = time.perf_counter() - t
        pre, reused["pretrain"] = _pretrain(profile, corpus, out, show)
        seconds["pretrain"] = time.perf_counter() - t - seconds["corpus"]
        zoo = _publish(out)
        reused["export + publish + load"] = zoo["reused"]
        seconds["export + publish + load"] = time.perf_counter() - t - sum(seconds.values())
        exp = run_experiment(experiment_config(profile, corpus, out / "experiment", profile.seeds), progress=show)
        seconds["fine-tuning matrix"] = time.perf_counter() - t - sum(seconds.values())
        reused["fine-tuning matrix"] = not exp.ran
    claim = _claim(exp.summary)
    seconds["total"] = time.perf_counter() - t
    report = _report(out, profile, name, exp, pre, zoo, claim, seconds, reused)
    (out / "demo.json").write_text(json.dumps({"profile": asdict(profile), "claim": claim, "zoo": zoo,
                                               "seconds": seconds, "reused": reused}, indent=2), encoding="utf-8")
    plots = [v for k, v in exp.files.items() if k.startswith(("fraction:", "curves:"))]
    return DemoResult(str(out), exp.table, str(report), plots, exp.summary, pre, zoo, claim, seconds)
