"""``medzoo predict --model M [--model M2 ...] INPUT... --out DIR``: predictions, masks and ensembles on files.

Images run in batches (``--batch-size``), read and prepared ahead of the model by DataLoader workers
(``--num-workers``; ``--threads`` sets the model's torch threads on the CPU); volumes and DICOM series run one at a
time. ``--shard K/N`` runs every N-th input from the K-th, so N processes or machines can share a listing and one
``--out`` (tables ``predictions-K-of-N.*``). Each finished input is appended to ``predictions.csv`` and
``predictions.jsonl`` at once, and its masks are written atomically, so a killed run keeps what finished and
``--resume`` runs only the rest.

``--model`` is repeatable, as in ``evaluate`` and ``explain`` (no positional model, so inputs are never mistaken
for models); several models form an ensemble that averages probabilities over the tasks and labels they share
(``--weights`` for a weighted mean). Each model applies the preprocessing contract its weights were trained with; a
model without one is refused unless ``--preprocessing NAME|FILE`` gives it (once for every model, or once per
``--model``; it replaces a model's own contract, with a warning). ``--series`` and ``--uneven-slices`` say how a
DICOM folder is read. Writes ``predictions.csv``, ``predictions.jsonl``, ``predictions.json`` and ``masks/`` under
``--out``. The exit code is 0 when every input ran, 1 when some failed (the others still ran), 2 when the run stopped
(an output could not be written: the error names the file).

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run", "add_dicom_options", "add_preprocessing_option", "dicom_options",
           "preprocessing_options"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser("predict", help="run a model (or an ensemble) on NIfTI, DICOM, PNG/JPEG or listings")
    p.add_argument("--model", action="append", required=True, metavar="MODEL",
                   help="zoo name, export dir or checkpoint; repeat for an ensemble")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="NIfTI, DICOM series folder or file, PNG/JPEG, slice-series folder, or a CSV/TXT listing")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one ensemble weight per --model")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks")
    p.add_argument("--patch", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="sliding-window size (default: the model's input_size)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    p.add_argument("--sw-batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--blend", choices=["constant", "gaussian"], default="constant", help="window blending")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default 8)")
    p.add_argument("--num-workers", type=_non_negative, default=2,
                   help="processes reading and preparing images ahead of the model (default 2; 0: none)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch threads for the model on the CPU (default: torch's, one per core); cores minus "
                        "--num-workers leaves the workers cores of their own")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="run shard K of N (from 1): every N-th input from the K-th; tables predictions-K-of-N.*")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete outputs of an earlier run in --out and predict only the other inputs")
    p.add_argument("--max-voxels", type=int, default=512 ** 3,
                   help="refuse a volume whose resampling would exceed this many voxels (default 512^3)")
    add_preprocessing_option(p)
    add_dicom_options(p)
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def add_preprocessing_option(p: argparse.ArgumentParser) -> None:
    """``--preprocessing NAME|FILE``: the input contract of a model whose weights declare none."""
    p.add_argument("--preprocessing", action="append", default=None, metavar="NAME|FILE",
                   help="input contract for a model that declares none (or to replace its own): a preset (ct, cxr, "
                        "series, medicalnet, imagenet, txv, none) or a YAML file (docs/PREPROCESSING.md); once for "
                        "every --model or once per --model")


def preprocessing_options(args: argparse.Namespace, n_models: int) -> list[Any]:
    """One ``--preprocessing`` value (or None) per ``--model``."""
    given = args.preprocessing or []
    if len(given) not in (0, 1, n_models):
        raise ValueError(f"--preprocessing given {len(given)} times for {n_models} --model; give it once (for every "
                         "model) or once per model")
    return [given[0] if len(given) == 1 else (given[i] if given else None) for i in range(n_models)]


def add_dicom_options(p: argparse.ArgumentParser) -> None:
    """``--series`` and ``--uneven-slices``: how a DICOM folder becomes one volume."""
    p.add_argument("--series", default=None, metavar="UID",
                   help="DICOM: the SeriesInstanceUID (or SeriesNumber) to read from a folder holding several series")
    p.add_argument("--uneven-slices", choices=["error", "resample"], default="error",
                   help="DICOM: refuse a missing slice or uneven slice spacing (default), or resample the slices "
                        "onto a uniform grid with a warning")


def dicom_options(args: argparse.Namespace) -> Any:
    """The :class:`~medzoo.data._dicom.DicomOptions` that the DICOM flags ask for."""
    from medzoo.data._dicom import DicomOptions

    return DicomOptions(series=args.series, uneven=args.uneven_slices)


def run(args: argparse.Namespace) -> int:
    """Build the predictor(s), run every input and print a summary table."""
    from medzoo.infer.ensemble import Ensemble
    from medzoo.infer.inputs import parse_shard
    from medzoo.infer.predict import Predictor, predict_inputs
    from medzoo.utils.perf import torch_threads

    kw = {"patch_size": args.patch, "overlap": args.overlap, "sw_batch_size": args.sw_batch_size,
          "blend": args.blend, "device": args.device, "tasks": args.tasks, "max_voxels": args.max_voxels}
    shard = parse_shard(args.shard) if args.shard else None
    pres = preprocessing_options(args, len(args.model))
    members = [Predictor.from_ref(ref, preprocessing=pre, **kw) for ref, pre in zip(args.model, pres)]
    if args.weights is not None and len(args.weights) != len(members):
        raise ValueError(f"--weights has {len(args.weights)} values for {len(members)} --model")
    predictor = members[0] if len(members) == 1 else Ensemble(members, args.weights)
    quiet = getattr(args, "quiet", False)
    with torch_threads(args.threads):
        report = predict_inputs(predictor, args.inputs, args.out, progress=None if not quiet else False,
                                dicom=dicom_options(args), batch_size=args.batch_size, num_workers=args.num_workers,
                                shard=shard, resume=args.resume)
    done = f", {report.skipped} already complete" if args.resume else ""
    print(f"{len(report.records)} input(s) predicted{done}, {len(report.errors)} failed -> {args.out}")
    for rec in report.records:
        for task, entry in rec["tasks"].items():
            print(f"  {rec['id']:<24} {task:<16} {_summary(entry)}")
    for where, msg in report.errors:
        print(f"  FAILED {where}: {msg}", file=sys.stderr)
    return 1 if report.errors else 0


def _summary(entry: dict) -> str:
    if entry["type"] == "segmentation":
        return f"mask {entry['mask']}"
    if entry["type"] == "regression":
        return ", ".join(f"{k}={v:.3g}" for k, v in entry["values"].items())
    if entry["type"] == "classification":
        return f"{entry['prediction']} (p={entry['probabilities'][entry['prediction']]:.3f})"
    positive = [k for k, v in entry["decisions"].items() if v]
    return "positive: " + (", ".join(positive) if positive else "none")
