"""Export a model as a MONAI bundle that MONAI's own ``monai.bundle`` tools load and run.

Layout (MONAI's bundle specification)::

    bundle/
      LICENSE
      configs/metadata.json     MONAI metadata (versions, network_data_format) + the medzoo weights spec
      configs/inference.json    MONAI config syntax (_target_, @ref, $expr: MONAI requires it; no such string comes
                                from user or weight text)
      configs/logging.conf      Python logging config (MONAI reads it when present)
      models/model.ts           the traced network (tuple of logits, in the task order of the metadata)
      scripts/medzoo_io.py      the small runner the inference config instantiates
      docs/README.md
      large_files.yml           path, url, hash_val (sha256), hash_type

The inference config reads every ``*.npz`` in ``dataset_dir`` (arrays ``image`` and, for series, ``pad_mask``: one
already preprocessed network input each, without a batch axis), runs the network through MONAI's ``SimpleInferer``
and writes ``<output_dir>/<name>.npz`` with one logits array per task. It defines the infer properties MONAI checks
(``bundle_root``, ``device``, ``dataset_dir``, ``dataset``, ``evaluator``, ``network_def``, ``inferer``)::

    python -m monai.bundle run --config_file bundle/configs/inference.json --bundle_root bundle \\
        --dataset_dir inputs --output_dir outputs

Example:
    >>> from monai.bundle import ConfigWorkflow  # doctest: +SKIP
    >>> wf = ConfigWorkflow(config_file="b/configs/inference.json", workflow_type="infer",  # doctest: +SKIP
    ...                     bundle_root="b", dataset_dir="in", output_dir="out")
    >>> wf.initialize(); wf.run(); wf.finalize()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from medzoo.data.contract import contract_for, parse_preprocessing
from medzoo.zoo.export import runtime_versions, sha256_file
from medzoo.zoo.formats import ExportModule, example_input, export_torchscript

__all__ = ["write_bundle", "bundle_inference_config", "bundle_metadata"]

log = logging.getLogger(__name__)

_RUNNER = '''"""Runner for the medzoo-exported MONAI bundle: network over a dataloader, one .npz of logits per input."""

from __future__ import annotations

import os

import numpy as np
import torch


class Runner:
    """Run ``inferer(image, network, *extra)`` over ``dataloader``; save ``<output_dir>/<name>.npz`` per item."""

    def __init__(self, device, dataloader, network, inferer, output_dir, task_names, extra_keys=()):
        self.device, self.dataloader, self.network, self.inferer = device, dataloader, network, inferer
        self.output_dir, self.task_names, self.extra_keys = str(output_dir), list(task_names), list(extra_keys)

    def run(self):
        """Returns the number of items written."""
        os.makedirs(self.output_dir, exist_ok=True)
        count = 0
        with torch.no_grad():
            for batch in self.dataloader:
                image = torch.as_tensor(batch["image"]).to(self.device)
                extra = [torch.as_tensor(batch[k]).to(self.device) for k in self.extra_keys]
                preds = self.inferer(image, self.network, *extra)
                preds = preds if isinstance(preds, (tuple, list)) else (preds,)
                for i, name in enumerate(batch["name"]):
                    arrays = {t: p[i].detach().cpu().numpy() for t, p in zip(self.task_names, preds)}
                    np.savez(os.path.join(self.output_dir, f"{name}.npz"), **arrays)
                    count += 1
        return count
'''


_LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def bundle_inference_config(task_names: Sequence[str], series: bool) -> dict[str, Any]:
    """The MONAI inference config (``_target_`` / ``@`` / ``$`` syntax) of a medzoo bundle."""
    keys = ["image", "pad_mask"] if series else ["image"]
    load = [{"_target_": "LoadImaged", "keys": [k], "reader": "NumpyReader", "npz_keys": [k], "image_only": True,
             "dtype": None} for k in keys]
    types = [{"_target_": "EnsureTyped", "keys": ["image"], "dtype": "$torch.float32", "track_meta": False}]
    if series:
        types.append({"_target_": "EnsureTyped", "keys": ["pad_mask"], "dtype": "$torch.bool", "track_meta": False})
    item = "{" + ", ".join(f"'{k}': f" for k in keys) + ", 'name': os.path.basename(f)[:-4]}"
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$os.path.join(@bundle_root, 'sample')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "task_names": list(task_names),
        "datalist": "$[" + item + " for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.npz')))]",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device)",
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": load + types},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "evaluator": {"_target_": "scripts.medzoo_io.Runner", "device": "@device", "dataloader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "output_dir": "@output_dir",
                      "task_names": "@task_names", "extra_keys": keys[1:]},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "finalize": [],
    }


def _semver(version: str) -> str:
    parts = version.split(".")
    return ".".join((parts + ["0", "0"])[:3]) if all(p.isdigit() for p in parts) else version


def bundle_metadata(spec: Mapping[str, Any], module: ExportModule, example: Sequence[torch.Tensor]) -> dict[str, Any]:
    """MONAI ``metadata.json`` for the bundle; the medzoo weights spec is kept under ``medzoo_spec``."""
    versions = runtime_versions()
    pre = contract_for(parse_preprocessing(spec.get("preprocessing")), module.input_kind)
    x = example[0]
    series = module.input_kind == "series"
    image = {"type": "series" if series else "image", "format": "magnitude",
             "modality": "/".join(pre.modality if pre else ["unknown"]), "num_channels": module.in_channels,
             "spatial_shape": list(x.shape[3:] if series else x.shape[2:]), "dtype": "float32",
             "value_range": list((pre.output_range if pre else None) or []), "is_patch_data": False,
             "channel_def": {str(i): f"channel {i}" for i in range(module.in_channels)}}
    inputs = {"image": image}
    if series:
        inputs["pad_mask"] = {"type": "tuples", "format": "labels", "num_channels": 1, "spatial_shape": ["*"],
                              "dtype": "bool", "value_range": [0, 1], "is_patch_data": False,
                              "channel_def": {"0": "True = padded slice"}}
    outputs = {}
    for task in module.task_names:
        t = (spec.get("tasks") or {}).get(task, {})
        dense = t.get("type") == "segmentation"
        outputs[task] = {"type": "image" if dense else "probabilities", "format": "segmentation" if dense else
                         ("labels" if t.get("type") in ("multilabel", "regression") else "classes"),
                         "num_channels": len(t.get("labels", [])), "spatial_shape": list(x.shape[2:]) if dense else [],
                         "dtype": "float32", "value_range": [], "is_patch_data": False,
                         "channel_def": {str(i): lab for i, lab in enumerate(t.get("labels", []))},
                         "notes": "raw logits; softmax (classification, segmentation) or sigmoid (multilabel)"}
    version = _semver(str(spec.get("version", "1")))
    return {
        "version": version, "changelog": {version: "exported by medzoo"},
        "monai_version": versions["monai"], "pytorch_version": versions["torch"],
        "numpy_version": np.__version__, "required_packages_version": {},
        "exported_by": f"medzoo {versions['medzoo']}", "name": spec.get("name", "medzoo model"),
        "task": ", ".join(f"{t}: {(spec.get('tasks') or {}).get(t, {}).get('type', '?')}" for t in module.task_names),
        "description": spec.get("description") or f"medzoo export of {spec.get('name', 'a model')}",
        "authors": "medzoo export", "copyright": f"license: {spec.get('license', 'unknown')}",
        "intended_use": "research; check the preprocessing contract in medzoo_spec", "data_type": "numpy",
        "references": [spec.get("citation", "none")], "network_data_format": {"inputs": inputs, "outputs": outputs},
        "medzoo_spec": dict(spec), "platform": platform.platform(),
    }


def write_bundle(model: torch.nn.Module, out_dir: str | os.PathLike, *, metadata: Mapping[str, Any],
                 tasks: Sequence[str] | None = None, example: Sequence[torch.Tensor] | None = None,
                 url: str | None = None, overwrite: bool = False) -> Path:
    """Write a MONAI bundle folder for ``model`` (written to a temp folder, then renamed into place).

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel`.
        out_dir: the bundle folder.
        metadata: the medzoo weights spec (the export's ``metadata.json``).
        tasks: the tasks to export (one input kind; default: those of the model's first task's kind).
        example: the example input to trace with (default: :func:`medzoo.zoo.formats.example_input`).
        url: where ``models/model.ts`` will be hosted, for ``large_files.yml`` (default: its ``file://`` url).
        overwrite: replace an existing folder.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --force to replace it)")
    module = ExportModule(model.eval(), tasks)
    example = tuple(example) if example is not None else example_input(module)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for sub in ("configs", "models", "docs", "scripts"):
            (tmp / sub).mkdir()
        meta = bundle_metadata(metadata, module, example)
        export_torchscript(module, tmp / "models" / "model.ts", example, metadata=meta)
        config = bundle_inference_config(module.task_names, module.input_kind == "series")
        (tmp / "configs" / "inference.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "configs" / "logging.conf").write_text(_LOGGING_CONF)
        (tmp / "scripts" / "__init__.py").write_text("")
        (tmp / "scripts" / "medzoo_io.py").write_text(_RUNNER)
        (tmp / "LICENSE").write_text(f"{metadata.get('license', 'unknown')}\n\nSource: {metadata.get('source', '')}\n")
        (tmp / "docs" / "README.md").write_text(_readme(meta, module))
        final_url = url or (out.resolve() / "models" / "model.ts").as_uri()
        large = {"large_files": [{"path": "models/model.ts", "url": final_url,
                                  "hash_val": sha256_file(tmp / "models" / "model.ts"), "hash_type": "sha256"}]}
        (tmp / "large_files.yml").write_text(yaml.safe_dump(large, sort_keys=False))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote MONAI bundle %s (tasks %s)", out, list(module.task_names))
    return out


def _readme(meta: Mapping[str, Any], module: ExportModule) -> str:
    inputs = "`image` [C, *spatial]" + (" and `pad_mask` [N] (bool, True = padding)" if module.input_kind == "series"
                                        else "")
    return "\n".join([
        f"# {meta['name']} (MONAI bundle exported by medzoo)", "", meta["description"], "",
        f"Tasks (outputs of `models/model.ts`, in this order): {', '.join(module.task_names)}. Outputs are logits.", "",
        "## Run", "", f"Put one `.npz` per input in a folder, holding {inputs} (already preprocessed; see",
        "`medzoo_spec.preprocessing` in `configs/metadata.json`), then:", "", "```",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\",
        "    --dataset_dir INPUTS --output_dir OUTPUTS", "```", "",
        "Each input `NAME.npz` gives `OUTPUTS/NAME.npz` with one logits array per task.", "",
    ])
