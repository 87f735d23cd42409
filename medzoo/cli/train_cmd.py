"""``medzoo train``, ``medzoo finetune`` and ``medzoo evaluate``: thin commands over :mod:`medzoo.train`.

Example:
    medzoo train -c configs/experiments/pretrain_multitask.yaml --set data_root=data/synth --set train.epochs=2
    medzoo train -c configs/experiments/pretrain_multitask.yaml --resume
    medzoo train -c configs/experiments/pretrain_multitask.yaml --nproc-per-node 2   # DDP on this machine
    medzoo finetune -c configs/experiments/finetune_tb.yaml --init ckpt:runs/pretrain_multitask/best.pt --parts encoder
    medzoo evaluate -c configs/experiments/finetune_tb.yaml --checkpoint runs/finetune_tb/best.pt --out eval/
    medzoo evaluate -c configs/experiments/pretrain_multitask.yaml --model runs/a/best.pt --model runs/b/best.pt \
        --bootstrap 1000 --localization nih-cxr14 --localization-root data/nih --out eval/

``evaluate`` with several ``--model``/``--checkpoint`` evaluates their ensemble: probabilities averaged per task
over the tasks and labels all members share (segmentation tasks are scored per model only). ``--bootstrap N``
adds AUROC tables with 95% CIs (CheXNet layout; COVIDx-CT at slice and patient level); ``--localization`` scores
CAM / Grad-CAM heatmaps against dataset boxes (IoU/Dice at top-k, IoBB hit rates, pointing game). ``--out``
gets metrics.csv/json and every table as .md, .csv and .json.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Library modules are imported inside the commands: ``medzoo --help`` must not pay for torch and MONAI.

__all__ = ["add_parser", "run_train", "run_finetune", "run_evaluate", "format_table", "torchrun_command"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="run config YAML (configs/experiments/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. train.max_steps=2 (repeatable)")


def _training(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``finetune``."""
    p.add_argument("--resume", action="store_true", help="continue from <output.dir>/last.pt")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue even though the config differs from the checkpoint's")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (same as --set train.device=...)")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="train with N DDP processes on this machine (wraps torchrun --standalone; nccl on CUDA, "
                        "gloo on CPU). Several machines: run torchrun yourself (README, 'Scaling out')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(subparsers: Any) -> None:
    """Add the ``train``, ``finetune`` and ``evaluate`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("train", help="train a model as a run config says", description=__doc__,
                              formatter_class=fmt)
    _common(p)
    _training(p)
    p.set_defaults(func=run_train)
    p = subparsers.add_parser("finetune", help="train from pretrained weights", description=__doc__,
                              formatter_class=fmt)
    _common(p)
    p.add_argument("--init", required=True, help="zoo:NAME | medicalnet:PATH | ckpt:PATH | scratch")
    p.add_argument("--parts", nargs="+", default=None, help="parts to initialise (encoder, heads, aggregator)")
    _training(p)
    p.set_defaults(func=run_finetune)
    p = subparsers.add_parser("evaluate", help="metrics of a checkpoint on a config's datasets",
                              description=__doc__, formatter_class=fmt)
    _common(p)
    p.add_argument("--model", "--checkpoint", dest="models", action="append", required=True, metavar="PATH",
                   help="a Trainer checkpoint (best.pt / last.pt) or export folder; repeat for an ensemble")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", default=None, help="folder for metrics.csv/json and the tables (.md, .csv, .json)")
    p.add_argument("--table", choices=["chexnet"], default=None,
                   help="also print per-class AUROC (95%% bootstrap CI) beside published CheXNet / Wang et al. values")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for --table")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="AUROC 95%% CIs from N bootstrap draws")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--bootstrap-unit", default="patient", choices=["patient", "image"],
                   help="what a bootstrap draw resamples: whole patients (default) or single images")
    p.add_argument("--localization", default=None, choices=["nih-cxr14", "vindr-cxr"],
                   help="score heatmaps against this dataset's boxes")
    p.add_argument("--localization-root", default=None, metavar="DIR", help="the boxed dataset's folder")
    p.add_argument("--localization-task", default="findings", help="the multilabel task to explain")
    p.add_argument("--method", default="gradcam", choices=["cam", "gradcam"], help="heatmap method")
    p.add_argument("--top-k-ties", default="include", choices=["include", "random", "first"],
                   help="top-k cells tied with the k-th value: keep all (default), draw at random, or raster order")
    p.set_defaults(func=run_evaluate)


def format_table(metrics: dict[str, float]) -> str:
    """A plain text table of ``split/task/metric`` values."""
    from medzoo.evaluation.checkpoint import metrics_rows
    from medzoo.utils.tables import render

    return render(["split", "task", "metric", "value"], metrics_rows(metrics), digits=4)


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """The ``torchrun --standalone`` command line that runs this ``train``/``finetune`` in ``--nproc-per-node``
    processes (the same options, less ``--nproc-per-node``)."""
    child = ["-v"] * int(getattr(args, "verbose", 0) or 0) + [args.command, "-c", str(args.config)]
    for item in args.overrides:
        child += ["--set", item]
    if args.command == "finetune":
        child += ["--init", args.init] + (["--parts", *args.parts] if args.parts else [])
    for flag in ("resume", "force", "quiet"):
        child += [f"--{flag}"] if getattr(args, flag) else []
    child += ["--device", args.device] if args.device else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}",
            "-m", "medzoo.cli.main", *child]


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    if args.nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    if args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:  # not yet inside torchrun
        return subprocess.run(torchrun_command(args), check=False).returncode
    from medzoo.train import distributed
    from medzoo.train.trainer import fit

    device = [f"train.device={args.device}"] if args.device else []
    try:
        result = fit(args.config, [*args.overrides, *extra, *device], resume=args.resume, force=args.force,
                     quiet=bool(args.quiet))
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    if distributed.rank() == 0:  # every rank holds the same result; rank 0 reports it
        print(f"finished: step {result.step}, epoch {result.epoch}, {result.seconds:.1f} s; run folder "
              f"{result.run_dir}")
        if result.best:
            print(f"best {result.best['metric']} = {result.best['value']:.4f} at step {result.best['step']}")
        if result.metrics:
            print(format_table(result.metrics))
    if distributed.is_distributed():
        distributed.exit_rank(0)  # a torchrun process: see exit_rank for why it skips finalisation
    distributed.shutdown()
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``medzoo train``."""
    return _train(args, [])


def run_finetune(args: argparse.Namespace) -> int:
    """``medzoo finetune``: ``train`` with ``init.source`` (and ``init.parts``) set from the command line."""
    extra = [f"init.source={args.init}"]
    if args.parts:
        extra.append(f"init.parts=[{', '.join(args.parts)}]")
    return _train(args, extra)


def _evaluate_models(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and predictions of one model, or of the ensemble of several."""
    from medzoo.evaluation.checkpoint import ensemble_metrics, ensemble_predictions, evaluate_checkpoint
    from medzoo.train.config import load_run_config

    run = load_run_config(args.config, args.overrides)
    members = [evaluate_checkpoint(run, ref, args.split, return_predictions=True) for ref in args.models]
    if len(members) == 1:
        return members[0]
    preds = ensemble_predictions([p for _, p in members])
    metrics = ensemble_metrics(preds, args.split)
    left_out = sorted({k.split("/")[1] for k in members[0][0] if k.count("/") >= 2} - set(preds))
    if left_out:
        print(f"note: task(s) {left_out} are not in the ensemble (not shared, or segmentation: voxel maps are "
              "not kept); evaluate them per model")
    return metrics, preds


def _tables(args: argparse.Namespace, preds: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    from medzoo.evaluation.heatmaps import localization_tables
    from medzoo.evaluation.tables import bootstrap_tables

    tables: dict[str, list[dict[str, Any]]] = {}
    if args.bootstrap:
        tables.update(bootstrap_tables(preds, n_boot=args.bootstrap, seed=args.seed, unit=args.bootstrap_unit))
        if not tables:
            print("note: --bootstrap: no classification or multilabel task to tabulate")
    if args.localization:
        tables.update(localization_tables(args.config, args.models, args.localization, args.localization_root,
                                          args.localization_task, args.method, overrides=args.overrides,
                                          ties=args.top_k_ties))
    return tables


def _write_metrics(out: Path, metrics: dict[str, float]) -> None:
    from medzoo.evaluation.checkpoint import metrics_rows
    from medzoo.utils.jsonio import dumps_strict

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(dumps_strict(metrics, indent=2, sort_keys=True), encoding="utf-8")
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "task", "metric", "value"])
        writer.writerows(metrics_rows(metrics))


def run_evaluate(args: argparse.Namespace) -> int:
    """``medzoo evaluate``: print the metrics table and any ``--bootstrap`` / ``--localization`` tables; write
    them (CSV, JSON, markdown) with ``--out``."""
    from medzoo.evaluation.chexnet import chexnet_report, format_chexnet_table
    from medzoo.evaluation.tables import write_table, write_tables
    from medzoo.train.config import load_run_config
    from medzoo.utils.tables import render_records

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0 draws, got {args.bootstrap}")
    if bool(args.localization_root) != bool(args.localization):
        raise ValueError("--localization nih-cxr14|vindr-cxr and --localization-root DIR (the dataset folder with "
                         "its boxes) go together")
    metrics, preds = _evaluate_models(args)
    print(format_table(metrics))
    if args.table == "chexnet":
        run = load_run_config(args.config, args.overrides)
        rows, text = chexnet_report(run, args.models[0], split=args.split, n_boot=args.n_boot,
                                    unit=args.bootstrap_unit)
        print(f"\n{text}")
        if args.out:
            write_table(rows, Path(args.out) / "chexnet_table.csv")
    tables = _tables(args, preds)
    markdown = {name: format_chexnet_table(rows) if name.endswith("_auroc_ci")
                else render_records(rows, style="markdown", digits=3) + "\n" for name, rows in tables.items()}
    for name, body in markdown.items():
        print(f"\n{name}\n{body}", end="")
    if args.out:
        out = Path(args.out)
        _write_metrics(out, metrics)
        written = write_tables(tables, out, formats=("csv", "json"))
        for name, body in markdown.items():
            (out / f"{name}.md").write_text(body, encoding="utf-8")
            written.append(out / f"{name}.md")
        print(f"wrote {out / 'metrics.csv'}, {out / 'metrics.json'} and {len(written)} table file(s) in {out}")
    return 0
