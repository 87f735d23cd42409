"""Export one task of a model as a MONAI bundle that MONAI's own ``monai.bundle`` tools verify, load and run.

Layout (MONAI's bundle specification), one bundle per task::

    <task>/
      LICENSE
      configs/metadata.json     MONAI metadata: schema, versions, network_data_format (input ``image``, output
                                ``pred``), what an input file must hold (``medzoo_input``) and the medzoo weights
                                spec under ``medzoo_spec``
      configs/inference.json    MONAI config syntax (``_target_``, ``@ref``, ``$expr``): every expression in it is
                                written here; no text from the weights or the user is ever one. Its
                                ``preprocessing`` is medzoo's pipeline for the input kind less geometry
                                (:func:`medzoo.zoo.bundle_inputs.bundle_preprocessing`)
      configs/logging.conf      Python logging config (MONAI reads it when present)
      models/model.ts           the network, traced: ``net(image) -> logits`` of the task (channel first)
      models/model.pt           its state dict (``torch.load(weights_only=True)``), loaded into ``network_def``
      scripts/medzoo_io.py      the runner and the pipeline steps MONAI lacks (torch, numpy and MONAI only)
      sample/sample.npz         an example input stored as a file holds it (uint8 pixels when the contract divides
                                by the file's maximum value); ``monai.bundle run`` reads ``sample/`` by default
      docs/README.md
      large_files.yml           only when a hosting url is given: relative path, url, sha256

The network (:class:`TaskNetwork`) takes ``image`` as MONAI networks do, channel first with a batch axis: a volume
``[B, C, D, H, W]``, an image ``[B, C, H, W]``, or a series of slices ``[B, C, N, H, W]`` (the slice axis first
among the spatial ones). It returns ``[B, K, *spatial]`` (dense), ``[B, K]`` (vector) or ``[B, K, N]`` (per slice).
Every string that comes from the weights or the user (labels, description, license, ...) is written as data: text
that would start with ``$`` (code), ``@`` (a reference) or ``%`` (a macro), and keys MONAI would instantiate
(``_target_``), get a leading space. Task names are valid names (:func:`medzoo.config.check_name`) or refused.

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
from torch import Tensor, nn

from medzoo.config import check_name
from medzoo.data.contract import Preprocessing, contract_for, parse_preprocessing
from medzoo.utils.resources import package_file
from medzoo.zoo.bundle_inputs import IO_MODULE, bundle_preprocessing, input_note, sample_input
from medzoo.zoo.export import apply_umask, check_replaceable, replace_dir, runtime_versions, sha256_file
from medzoo.zoo.formats import ExportModule, example_input, export_torchscript

__all__ = ["TaskNetwork", "write_bundle", "bundle_inference_config", "bundle_metadata", "is_bundle_dir",
           "schema_file", "data_only", "SCHEMA_URL"]

log = logging.getLogger(__name__)

#: The metadata schema MONAI's model zoo uses; medzoo ships a copy (:func:`schema_file`) for offline checks.
SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")
_SYNTAX_PREFIXES = ("$", "@", "%")
_RESERVED_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
_ACTIVATION = {"classification": {"softmax": True}, "segmentation": {"softmax": True}, "multilabel": {"sigmoid": True}}


def schema_file() -> Path:
    """The shipped copy of the MONAI metadata schema named by :data:`SCHEMA_URL`."""
    return package_file("zoo", "schemas", SCHEMA_URL.rsplit("/", 1)[-1])


def data_only(value: Any) -> Any:
    """``value`` with every string made plain data for MONAI's config parser (see the module docstring)."""
    if isinstance(value, str):
        return " " + value if value.startswith(_SYNTAX_PREFIXES) else value
    if isinstance(value, Mapping):
        return {(" " + str(k) if str(k).startswith(_SYNTAX_PREFIXES) or str(k) in _RESERVED_KEYS else str(k)):
                data_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [data_only(v) for v in value]
    return value


class TaskNetwork(nn.Module):
    """One task of an :class:`~medzoo.zoo.formats.ExportModule` as a MONAI network: ``net(image) -> tensor``.

    Shapes:
        ``image``: volume ``[B, C, D, H, W]``, image ``[B, C, H, W]`` or series ``[B, C, N, H, W]`` (no padding)
        -> dense ``[B, K, *spatial]``, vector ``[B, K]`` or per slice ``[B, K, N]``.
    """

    def __init__(self, module: ExportModule) -> None:
        super().__init__()
        if len(module.task_names) != 1:
            raise ValueError(f"a bundle network serves one task, got {list(module.task_names)}")
        self.module, self.task, self.task_names = module, module.task_names[0], module.task_names
        self.series = module.input_kind == "series"
        self.per_slice = module.levels[0] == "slice"

    def forward(self, image: Tensor) -> Tensor:
        if not self.series:
            return self.module(image)[self.task]
        out = self.module(image.transpose(1, 2))[self.task]
        return out.transpose(1, 2) if self.per_slice else out


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a MONAI bundle's config, metadata and TorchScript network."""
    p = Path(path)
    return all((p / rel).is_file() for rel in ("configs/inference.json", "configs/metadata.json", "models/model.ts"))


def _postprocessing(task_type: str) -> list[dict[str, Any]]:
    """Logits -> what the bundle saves: softmax (classes), sigmoid (multilabel), unchanged (regression)."""
    act = _ACTIVATION.get(task_type)
    return [{"_target_": "Activationsd", "keys": ["pred"], **act}] if act else []


def bundle_inference_config(preprocessing: Sequence[Mapping[str, Any]],
                            postprocessing: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The MONAI inference config of a medzoo bundle; every ``$`` / ``@`` string in it is written here."""
    # Files are read as stored when a step divides by their maximum value (it reads the dtype), else as float32.
    raw = any(t.get("_target_") == IO_MODULE + "ScaleToUnitd" and t.get("rescale") for t in preprocessing)
    load = [{"_target_": "LoadImaged", "keys": ["image"], "reader": "NumpyReader", "npz_keys": ["image"],
             "image_only": True, "dtype": None if raw else "float32"}]
    to_net = [{"_target_": "EnsureTyped", "keys": ["image"], "dtype": "$torch.float32", "track_meta": False}]
    item = "{'image': f, 'name': os.path.basename(f)[:-4]}"
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$os.path.join(@bundle_root, 'sample')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "datalist": "$[" + item + " for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.npz')))]",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location='cpu')",
        "network": {"_target_": "scripts.medzoo_io.load_weights", "network": "@network_def",
                    "path": "$os.path.join(@bundle_root, 'models', 'model.pt')", "device": "@device"},
        "preprocessing": {"_target_": "Compose", "transforms": load + [dict(t) for t in preprocessing] + to_net},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [dict(t) for t in postprocessing]},
        "evaluator": {"_target_": "scripts.medzoo_io.Runner", "device": "@device", "dataloader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "output_dir": "@output_dir",
                      "postprocessing": "@postprocessing"},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "finalize": [],
    }


def _contract(spec: Mapping[str, Any], kind: str) -> Preprocessing | None:
    """The spec's preprocessing contract for inputs of ``kind`` (None when it records none)."""
    return contract_for(parse_preprocessing(spec.get("preprocessing")), kind)


def _semver(version: str) -> str:
    parts = version.split(".")
    return ".".join((parts + ["0", "0"])[:3]) if all(p.isdigit() for p in parts) else version


def _network_io(spec: Mapping[str, Any], module: ExportModule, example: Sequence[Tensor]) -> dict[str, Any]:
    """``network_data_format``: the input ``image`` and the output ``pred`` (logits) / post-processed ``pred``."""
    pre, task = _contract(spec, module.input_kind), module.task_names[0]
    t = (spec.get("tasks") or {}).get(task, {})
    labels, kind = list(t.get("labels", [])), t.get("type", "classification")
    step = f"{module.reduction}*n"  # sizes whose every feature map aligns with the input grid
    dims = example[0].dim() - 2 - (1 if module.input_kind == "series" else 0)
    spatial = (["*"] if module.input_kind == "series" else []) + [step] * dims
    modality = pre.modality if pre is not None else ("unknown",)
    raw_ct = "CT" in modality and pre.rescale == "none"
    image = {"type": "image", "format": "hounsfield" if raw_ct else "magnitude",
             "modality": "/".join(modality), "num_channels": module.in_channels, "spatial_shape": spatial,
             "dtype": "float32", "value_range": list(pre.output_range or []) if pre is not None else [],
             "is_patch_data": False, "channel_def": {str(i): f"channel {i}" for i in range(module.in_channels)}}
    dense = module.dense[0]
    out_spatial = spatial if dense else (["*"] if module.levels[0] == "slice" else [])
    pred = {"type": "image" if dense else "logits", "format": "segmentation" if dense else kind,
            "num_channels": len(labels), "spatial_shape": out_spatial, "dtype": "float32", "value_range": [],
            "is_patch_data": False, "channel_def": {str(i): lab for i, lab in enumerate(labels)}}
    post = dict(pred, type="image" if dense else ("probabilities" if kind in _ACTIVATION else "values"),
                value_range=[0, 1] if kind in _ACTIVATION else [])
    return {"inputs": {"image": image}, "outputs": {"pred": pred}, "post_processed_outputs": {"pred": post}}


def bundle_metadata(spec: Mapping[str, Any], module: ExportModule, example: Sequence[Tensor]) -> dict[str, Any]:
    """MONAI ``metadata.json`` of the bundle of ``module``'s one task (weights and user text made data-only)."""
    versions = runtime_versions()
    task = module.task_names[0]
    kind = (spec.get("tasks") or {}).get(task, {}).get("type", "?")
    version = _semver(str(spec.get("version", "1")))
    meta = {
        "schema": SCHEMA_URL, "version": version, "changelog": {version: "exported by medzoo"},
        "monai_version": versions["monai"], "pytorch_version": versions["torch"], "numpy_version": np.__version__,
        "required_packages_version": {}, "exported_by": f"medzoo {versions['medzoo']}",
        "name": f"{spec.get('name', 'medzoo model')} {task}", "task": f"{task}: {kind} at the {module.levels[0]} level",
        "description": spec.get("description") or f"medzoo export of {spec.get('name', 'a model')}, task {task}",
        "authors": "medzoo export", "copyright": f"license: {spec.get('license', 'unknown')}",
        "intended_use": "research; check the preprocessing contract in medzoo_spec", "data_type": "numpy",
        "references": [str(spec.get("citation", "none"))], "network_data_format": _network_io(spec, module, example),
        "medzoo_task": task, "medzoo_input": input_note(_contract(spec, module.input_kind), module.input_kind),
        "medzoo_spec": dict(spec), "platform": platform.platform(),
    }
    return data_only(meta)


def write_bundle(model: nn.Module, out_dir: str | os.PathLike, *, metadata: Mapping[str, Any],
                 task: str | None = None, example: Sequence[Tensor] | None = None, url: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write the MONAI bundle of one task of ``model`` (in a temp folder, then renamed into place).

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel`.
        out_dir: the bundle folder.
        metadata: the medzoo weights spec (the export's ``metadata.json``).
        task: the task (default: the model's only task).
        example: an example model input to trace with (default: :func:`medzoo.zoo.formats.example_input`); series
            inputs are ``[B, N, C, H, W]`` as the model takes them.
        url: the folder ``models/`` will be hosted at, for ``large_files.yml`` (none is written without it).
        overwrite: replace an existing bundle folder (or an empty folder); any other folder is refused.

    Raises:
        ValueError: no task chosen for a model with several, or a task name (of the model or the metadata) that is
            not a valid name.
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists (pass overwrite=True / --force to replace it)")
        check_replaceable(out, is_bundle_dir, "a MONAI bundle")
    if task is None and len(model.tasks) != 1:
        raise ValueError(f"a bundle holds one task; choose one of {list(model.tasks)} (task=...)")
    for name in [*model.tasks, *(metadata.get("tasks") or {})]:
        check_name(name, f"tasks.{name}")  # no task name reaches a bundle file unless it is a plain name
    module = ExportModule(model.eval(), [task or model.tasks[0]])
    network = TaskNetwork(module).eval()
    example = tuple(example) if example is not None else example_input(module)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_contents(tmp, network, module, example, metadata, url)
        apply_umask(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote MONAI bundle %s (task %s)", out, module.task_names[0])
    return out


def _write_contents(tmp: Path, network: TaskNetwork, module: ExportModule, example: Sequence[Tensor],
                    spec: Mapping[str, Any], url: str | None) -> None:
    for sub in ("configs", "models", "docs", "scripts", "sample"):
        (tmp / sub).mkdir()
    meta = bundle_metadata(spec, module, example)
    net_input = example[0][:1].transpose(1, 2) if module.input_kind == "series" else example[0][:1]
    traced = torch.jit.load(str(export_torchscript(network, tmp / "models" / "model.ts", (net_input,), metadata=meta)))
    # network_def is the traced network: model.pt holds its state dict (buffers the eager modules keep out included)
    torch.save({k: v.detach().cpu().clone() for k, v in traced.state_dict().items()}, tmp / "models" / "model.pt")
    contract = _contract(spec, module.input_kind)
    if contract is None:  # medzoo's own predict refuses such weights; a bundle says so and feeds inputs unchanged
        log.warning("%s: the weights record no preprocessing contract for %s inputs; the bundle feeds `image` to the "
                    "network unchanged (docs/README.md says so)", spec.get("name", "model"), module.input_kind)
    kind = (spec.get("tasks") or {}).get(module.task_names[0], {}).get("type", "")
    config = bundle_inference_config(bundle_preprocessing(contract, module.input_kind), _postprocessing(kind))
    (tmp / "configs" / "inference.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "configs" / "logging.conf").write_text(_LOGGING_CONF)
    (tmp / "scripts" / "__init__.py").write_text("")
    (tmp / "scripts" / "medzoo_io.py").write_text(Path(__file__).with_name("_bundle_io.py").read_text())
    np.savez(tmp / "sample" / "sample.npz", image=sample_input(module, example, contract))
    (tmp / "LICENSE").write_text(f"{data_only(str(spec.get('license', 'unknown')))}\n\n"
                                 f"Source: {data_only(str(spec.get('source', '')))}\n")
    (tmp / "docs" / "README.md").write_text(_readme(meta, module))
    if url:
        base = url if url.endswith("/") else url + "/"
        large = [{"path": f"models/{name}", "url": f"{base}{name}", "hash_val": sha256_file(tmp / "models" / name),
                  "hash_type": "sha256"} for name in ("model.pt", "model.ts")]
        (tmp / "large_files.yml").write_text(yaml.safe_dump({"large_files": large}, sort_keys=False))


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


def _readme(meta: Mapping[str, Any], module: ExportModule) -> str:
    raw = meta["medzoo_input"]
    return "\n".join([
        f"# {meta['name']} (MONAI bundle exported by medzoo)", "", meta["description"], "",
        f"Task `{module.task_names[0]}`: {meta['task']}. The network (`models/model.ts`, weights also in",
        "`models/model.pt`) returns logits; the inference config saves them after `postprocessing`.", "",
        "## Inputs", "", f"- File: {raw['file']}.", f"- Intensity: {raw['intensity']}.",
        f"- Geometry: {raw['geometry']}.", "",
        "The same text is `medzoo_input` in `configs/metadata.json`; the full contract is",
        "`medzoo_spec.preprocessing` there.", "",
        "## Run", "", "Put one `.npz` per input in a folder, then, in this folder:", "", "```",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir INPUTS --output_dir OUTPUTS",
        "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json \\",
        "    --config_file configs/inference.json", "```", "",
        "Each input `NAME.npz` gives `OUTPUTS/NAME.npz` holding `pred`. Without `--dataset_dir` it reads `sample/`.",
        "",
    ])
