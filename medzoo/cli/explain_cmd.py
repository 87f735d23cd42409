"""``medzoo explain --model M INPUT --task T [--label L] --out DIR [--method cam|gradcam]``: heatmaps.

Images give a PNG overlay; volumes a NIfTI heatmap in the input's space plus a mid-slice montage; slice series a
PNG per slice and the aggregator's slice weights. ``--model`` may repeat: the normalised heatmaps are averaged. The
input goes through each model's preprocessing contract; a model without one needs ``--preprocessing NAME|FILE``.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import logging

from medzoo.cli.predict_cmd import add_dicom_options, add_preprocessing_option, dicom_options, preprocessing_options

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` subcommand."""
    p = subparsers.add_parser("explain", help="CAM / Grad-CAM heatmaps for one input")
    p.add_argument("--model", action="append", required=True, metavar="MODEL",
                   help="zoo name, export dir or checkpoint (repeatable: heatmaps are averaged)")
    p.add_argument("input", metavar="INPUT", help="NIfTI, DICOM folder or file, PNG/JPEG, or slice-series folder")
    p.add_argument("--task", required=True, help="the task to explain")
    p.add_argument("--label", default=None, help="label name or index (default: the top-scoring label)")
    p.add_argument("--method", choices=["cam", "gradcam"], default="gradcam", help="default gradcam")
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity in overlays (default 0.4)")
    p.add_argument("--out", required=True, help="output folder")
    add_preprocessing_option(p)
    add_dicom_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Explain the input and list the files written."""
    from medzoo.infer.explain import explain_input, write_explanation
    from medzoo.zoo import resolve
    from medzoo.zoo.preprocessing import NoContractError

    resolved = [resolve(ref) for ref in args.model]
    given = preprocessing_options(args, len(resolved))
    pres = [g if g is not None else (r.preprocessing or None) for g, r in zip(given, resolved)]
    for ref, g, r in zip(args.model, given, resolved):
        if g is not None and r.preprocessing:
            log.warning("%s: --preprocessing %s replaces the contract its weights were trained with", ref, g)
        if g is None and not r.preprocessing:
            raise NoContractError(f"{ref}: the model declares no preprocessing contract; pass --preprocessing "
                                  "NAME|FILE (presets ct, cxr, series, medicalnet, imagenet, txv, none)")
    result = explain_input([r.model for r in resolved], args.input, args.task, args.label, args.method, pres,
                           dicom_options(args))
    files = write_explanation(result, args.out, alpha=args.alpha)
    print(f"{args.method} of {args.task}/{result.label} for {result.loaded.item.id}:")
    for f in files:
        print(f"  {f}")
    if result.slice_weights is not None:
        top = sorted(range(len(result.slice_weights)), key=lambda i: -result.slice_weights[i])[:5]
        print("  top slices by aggregator weight: " + ", ".join(f"{i} ({result.slice_weights[i]:.3f})" for i in top))
    return 0
