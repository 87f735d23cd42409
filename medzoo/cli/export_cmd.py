"""``medzoo export CKPT --out DIR`` and ``medzoo publish DIR --name NAME --url URL``.

``export`` always writes the export directory (``model.safetensors``, ``config.yaml``, ``metadata.json``, model card)
through :func:`medzoo.zoo.export.write_export_dir`, then the extra formats inside it: ``model.ts`` (TorchScript),
``model.onnx`` and ``bundle/<task>/`` (one MONAI bundle per task). With ``--parts encoder`` TorchScript and ONNX hold
the encoder alone (its feature maps by stage name). Each extra format is run once on an example input and compared
with the eager model; the table shows the largest difference.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_export", "run_publish", "FORMATS"]

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "torchscript", "onnx", "bundle")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``publish`` subcommands."""
    p = subparsers.add_parser("export", help="export a checkpoint as safetensors (+ TorchScript, ONNX, MONAI bundle)")
    p.add_argument("ckpt", help="a training checkpoint (.pt), an export directory or another model reference")
    p.add_argument("--out", required=True, help="the export directory to write")
    p.add_argument("--parts", choices=("encoder", "all"), default="all", help="the encoder only, or everything")
    p.add_argument("--format", default="safetensors",
                   help=f"comma-separated formats from {', '.join(FORMATS)} (safetensors is always written)")
    p.add_argument("--name", default=None, help="entry name for the metadata (default: from --out)")
    p.add_argument("--weights-version", default=None, help="weights version (default: the source's, else 1)")
    p.add_argument("--license", default=None, help="license of the weights (default: the source's, else unknown)")
    p.add_argument("--description", default=None, help="one line on what the weights are")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks for torchscript/onnx/bundle (one input kind; one bundle per task)")
    p.add_argument("--input-size", default=None,
                   help="spatial size of the example input, e.g. 32,64,64 (default: the preprocessing input_size); "
                        "with --parts encoder, two sizes export the image path, three the volume path")
    p.add_argument("--slices", type=int, default=3, help="slices in the example input of a series model")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out folder that is a medzoo export (or empty); others are refused")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("publish", help="add an export directory to a catalog (sha256 and size computed)")
    p.add_argument("dir", help="the export directory")
    p.add_argument("--name", required=True, help="catalog entry name, e.g. resnet18.mytask")
    p.add_argument("--url", required=True, help="folder url the export's files are served from (or file://...)")
    p.add_argument("--catalog", default=None,
                   help="catalog YAML to add to (default: $MEDZOO_HOME/catalogs/published.yaml)")
    p.add_argument("--version", default=None, help="entry version (default: the export's)")
    p.add_argument("--mirror", action="append", default=[], help="mirror folder url (repeatable)")
    p.add_argument("--replace", action="store_true", help="replace an entry of the same name")
    p.set_defaults(func=run_publish)


def _read_source(ref: str) -> tuple[Any, dict[str, Any]]:
    """``(model, metadata fields to keep)`` of a training checkpoint or an export directory."""
    from medzoo.zoo import resolve

    resolved = resolve(ref)
    if resolved.spec is None:
        what = "MedicalNet file" if resolved.kind == "medicalnet" else "training checkpoint"
        return resolved.model, {"source": f"{what} {Path(resolved.source).name}"}
    spec = resolved.spec.to_dict()
    keep = ("version", "preprocessing", "license", "source", "citation", "description", "metrics")
    return resolved.model, {k: spec[k] for k in keep if spec.get(k)}


def _entry_name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    name = re.sub(r"[^a-z0-9_.\-]+", "-", Path(args.out).name.lower()).strip("-.") or "export"
    return name if name[0].isalnum() else "m" + name


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--format: unknown {bad}; choose from {list(FORMATS)}")
    return formats


def _spatial(meta: dict[str, Any], args: argparse.Namespace, module_kind: str) -> tuple[int, ...]:
    from medzoo.data.contract import contract_for, parse_preprocessing

    if args.input_size:
        return tuple(int(s) for s in args.input_size.split(","))
    contract = contract_for(parse_preprocessing(meta.get("preprocessing")), module_kind)
    return tuple(contract.input_size or ()) if contract is not None else ()


def _example(module: Any, meta: dict[str, Any], args: argparse.Namespace) -> tuple:
    from medzoo.zoo.formats import example_input

    dims = 3 if module.input_kind == "volume" else 2
    size = _spatial(meta, args, module.input_kind)
    if size and len(size) != dims:
        if args.input_size:
            raise ValueError(f"--input-size: a {module.input_kind} model needs {dims} sizes, got {args.input_size}")
        size = ()
    return example_input(module, batch=2, slices=max(2, args.slices), spatial=size or None)


def _encoder_kind(encoder: Any, meta: dict[str, Any], args: argparse.Namespace) -> str:
    """What an encoder-only export reads: images for a 2-D-only encoder; else as many sizes as ``--input-size``
    gives; else images when the recorded contract names no volume; else volumes."""
    from medzoo.data.contract import parse_preprocessing

    if getattr(encoder, "spatial_dims", 3) == 2:
        return "image"
    if args.input_size:
        return "image" if len(args.input_size.split(",")) == 2 else "volume"
    kinds = set(parse_preprocessing(meta.get("preprocessing")))
    return "image" if kinds and "volume" not in kinds else "volume"


def _module(model: Any, meta: dict[str, Any], formats: list[str], args: argparse.Namespace) -> Any:
    """What the extra formats export: the encoder alone (``--parts encoder``, or no heads) or the tasks."""
    from medzoo.zoo import formats as fmt

    if args.parts == "encoder" or not len(model.heads):
        if "bundle" in formats:
            raise ValueError("--format bundle: a MONAI bundle serves a task, and this export has none (--parts "
                             "encoder, or a model without heads); export with --parts all")
        return fmt.EncoderExport(model.encoder, _encoder_kind(model.encoder, meta, args))
    module = fmt.ExportModule(model.eval(), args.tasks.split(",") if args.tasks else None)
    left = [t for t in model.tasks if t not in module.task_names]
    if left:
        log.warning("tasks %s read another input kind and are not in the extra formats (use --tasks)", left)
    return module


def _max_diff(eager: dict, got: dict) -> float:
    return max(float((eager[n] - got[n]).abs().max()) for n in eager)


def _extra_formats(model: Any, out: Path, formats: list[str], meta: dict, args: argparse.Namespace) -> list[list]:
    import torch

    from medzoo.zoo import formats as fmt

    module = _module(model.eval(), meta, formats, args)
    example = _example(module, meta, args)
    with torch.no_grad():
        if isinstance(module, fmt.EncoderExport):
            eager = dict(zip(module.task_names, model.encoder(example[0])))
        else:
            eager = model(example[0], pad_mask=example[1] if len(example) > 1 else None,
                          tasks=list(module.task_names))
    rows = []
    if "torchscript" in formats:
        path = fmt.export_torchscript(module, out / fmt.TS_FILE, example, metadata=meta)
        with torch.no_grad():
            rows.append(["torchscript", path, _max_diff(eager, torch.jit.load(str(path))(*example))])
    if "onnx" in formats:
        path = fmt.export_onnx(module, out / fmt.ONNX_FILE, example)
        rows += [["onnx", path, _max_diff(eager, fmt.run_onnx(path, *example))]]
        rows += [["onnx data", p, None] for p in fmt.onnx_files(path)[1:]]
    if "bundle" in formats:
        rows += _bundles(model, out / "bundle", module, example, meta)
    return rows


def _bundles(model: Any, root: Path, module: Any, example: tuple, meta: dict) -> list[list]:
    """One MONAI bundle per task, ``bundle/<task>/``; each checked by running its network on the example."""
    import torch

    from medzoo.zoo.bundle import write_bundle

    rows = []
    series = module.input_kind == "series"
    with torch.no_grad():  # a bundle network reads one unpadded series per item
        eager = model(example[0], tasks=list(module.task_names))
    for task, level in zip(module.task_names, module.levels):
        path = write_bundle(model, root / task, metadata=meta, task=task, example=example, overwrite=True)
        with torch.no_grad():
            got = torch.jit.load(str(path / "models" / "model.ts"))(example[0].transpose(1, 2) if series else
                                                                      example[0])
        got = got.transpose(1, 2) if level == "slice" else got
        rows.append([f"bundle {task}", path, _max_diff({task: eager[task]}, {task: got})])
    return rows


def run_export(args: argparse.Namespace) -> int:
    """Write the export directory, then the requested extra formats; print a table of what was written."""
    import json

    from medzoo.cli.zoo_cmd import _human
    from medzoo.utils.tables import render
    from medzoo.zoo.publish import export_model

    formats = _formats(args.format)
    model, extra = _read_source(args.ckpt)
    for key in ("license", "description"):
        if getattr(args, key):
            extra[key] = getattr(args, key)
    if args.weights_version:
        extra["version"] = args.weights_version
    out = export_model(model, args.out, name=_entry_name(args), parts=args.parts, overwrite=args.force, **extra)
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    rows = [["safetensors", out / "model.safetensors", None]]
    extras = [f for f in formats if f != "safetensors"]
    if extras:
        rows += _extra_formats(model, out, extras, meta, args)
    table = [[f, str(p), _human(_size(p)), "-" if d is None else f"{d:.2e}"] for f, p, d in rows]
    print(render(["format", "path", "size", "max |diff| vs eager"], table))
    return 0


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_publish(args: argparse.Namespace) -> int:
    """Add the catalog entry and print its files."""
    from medzoo.cli.zoo_cmd import _human
    from medzoo.utils.tables import render
    from medzoo.zoo.publish import publish

    spec = publish(args.dir, args.name, args.url, catalog=args.catalog, version=args.version,
                   mirrors=tuple(args.mirror), replace=args.replace)
    print(f"published {spec.name} {spec.version} ({', '.join(spec.parts)})")
    print(render(["file", "part", "size", "sha256", "url"],
                 [[f.name, f.part, _human(f.size), f.sha256, f.url] for f in spec.files]))
    return 0
