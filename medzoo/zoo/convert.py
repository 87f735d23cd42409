"""Conversion of foreign checkpoints (MedicalNet, torchvision ImageNet, TorchXRayVision) into export directories.

Example (not run here):
    >>> convert_medicalnet("pretrain/resnet_10_23dataset.pth", "zoo/resnet10_mn23")  # doctest: +SKIP
    >>> convert_imagenet("resnet50-0676ba61.pth", "zoo/resnet50_in1k", in_channels=1)  # doctest: +SKIP
    >>> convert_torchxrayvision("densenet121-res224-all.pt", "zoo/txv_all")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medzoo.data.presets import medicalnet_contract
from medzoo.zoo.export import write_export_dir
from medzoo.zoo.imagenet import from_imagenet, imagenet_preprocessing
from medzoo.zoo.medicalnet import from_medicalnet
from medzoo.zoo.txv import from_torchxrayvision, txv_preprocessing

__all__ = ["convert_imagenet", "convert_medicalnet", "convert_torchxrayvision", "medicalnet_metadata"]


def medicalnet_metadata(model: Any, name: str, source: str) -> dict[str, Any]:
    """The weights spec of a converted MedicalNet model."""
    arch = model.encoder.architecture()
    tasks = {t: {"type": "segmentation", "head": "medicalnet_seg", "level": "volume",
                 "labels": list(h.label_names)} for t, h in model.heads.items()}
    return {
        "name": name, "version": "1", "description": f"MedicalNet weights converted from {Path(source).name}",
        "architecture": arch, "parts": ["encoder"] + (["heads"] if tasks else []), "tasks": tasks,
        "preprocessing": medicalnet_contract().to_dict(), "license": "MIT", "source": str(source),
        "citation": "Chen S, Ma K, Zheng Y. Med3D: Transfer Learning for 3D Medical Image Analysis. "
                    "arXiv:1904.00625, 2019.",
        "notes": "converted from a MedicalNet checkpoint (format medicalnet-pth)",
    }


def convert_medicalnet(path: str | Path, out_dir: str | Path, *, name: str | None = None, output_stride: int = 8,
                       overwrite: bool = False) -> Path:
    """Convert a MedicalNet checkpoint into an export directory (safetensors + config + metadata + card).

    A backbone-only file becomes an encoder-only export with MONAI/MedicalNet key names (``conv1.weight``, ...);
    a file with ``conv_seg`` becomes a whole-model export (``encoder.*``, ``heads.seg.*``).
    """
    model = from_medicalnet(path, output_stride=output_stride)
    name = name or Path(path).name.split(".")[0]
    meta = medicalnet_metadata(model, name, str(path))
    config = {"encoder": _encoder_config(model), "tasks": {t: {"type": "medicalnet_seg", "level": "volume",
                                                    "labels": spec["labels"]} for t, spec in meta["tasks"].items()}}
    state = model.state_dict() if len(model.heads) else model.encoder.state_dict()
    return write_export_dir(out_dir, state_dict=state, config=config, metadata=meta, overwrite=overwrite)


def _encoder_config(model: Any) -> dict[str, Any]:
    enc = model.encoder.architecture()
    if enc.get("block") == "dense":
        options = {k: enc[k] for k in ("init_features", "growth_rate", "block_config", "bn_size")}
        return {"name": enc["encoder"], "in_channels": enc["in_channels"], "output_stride": 32, "widths": None,
                "options": options}
    options = {"shortcut": enc["shortcut"], "bias_downsample": enc["bias_downsample"]}
    return {"name": enc["encoder"], "in_channels": enc["in_channels"], "output_stride": enc["output_stride"],
            "widths": enc["widths"], "options": options}


def convert_imagenet(path: str | Path, out_dir: str | Path, *, name: str | None = None, inflate: str = "centre",
                     in_channels: int = 3, output_stride: int = 32, overwrite: bool = False) -> Path:
    """Convert a torchvision ImageNet ResNet file into an encoder-only export with inflated 3D kernels.

    The stem is adapted to ``in_channels`` (summed for 1); the metadata records the inflation and the grey-image
    preprocessing contract (:func:`medzoo.zoo.imagenet.imagenet_preprocessing`).
    """
    model = from_imagenet(path, inflate=inflate, in_channels=in_channels, output_stride=output_stride)
    meta = {
        "name": name or Path(path).name.split(".")[0].lower(), "version": "1",
        "description": f"torchvision ImageNet weights from {Path(path).name}, 2D kernels inflated to 3D ({inflate})",
        "architecture": model.encoder.architecture(), "parts": ["encoder"], "tasks": {},
        "preprocessing": imagenet_preprocessing(in_channels), "license": "BSD-3-Clause", "source": str(path),
        "citation": "He K, Zhang X, Ren S, Sun J. Deep Residual Learning for Image Recognition. CVPR 2016.",
        "notes": f"converted from a torchvision ResNet state dict; inflation {inflate}; "
                 f"{model.load_report.summary()}",
    }
    config = {"encoder": _encoder_config(model), "tasks": {}}
    return write_export_dir(out_dir, state_dict=model.encoder.state_dict(), config=config, metadata=meta,
                            overwrite=overwrite)


def convert_torchxrayvision(path: str | Path, out_dir: str | Path, *, weights: str | None = None,
                            name: str | None = None, task: str = "findings", overwrite: bool = False) -> Path:
    """Convert a TorchXRayVision file (read safely) into a whole-model export: encoder plus a multilabel head.

    The head holds TXV's named, calibrated outputs with their ``op_threshs`` as thresholds (0.5 when the file and
    the known weights give none); ``weights`` names the TXV weights when the file name does not.
    """
    model = from_torchxrayvision(path, weights=weights, task=task)
    w, head = model.txv, model.heads[task]
    labels = list(head.label_names)
    spec_task = {"type": "multilabel", "level": "image", "labels": labels,
                 "thresholds": dict(zip(labels, head.thresholds.tolist()))}
    arch = model.encoder.architecture()
    meta = {
        "name": name or (weights or Path(path).name.split(".")[0]).lower(), "version": "1",
        "description": f"TorchXRayVision weights from {Path(path).name}",
        "architecture": {k: arch[k] for k in ("encoder", "in_channels", "output_stride")}
        | ({} if arch.get("block") == "dense" else {k: arch[k] for k in ("widths", "shortcut", "bias_downsample")}),
        "parts": ["encoder", "heads"], "tasks": {task: spec_task}, "preprocessing": txv_preprocessing(w.resolution),
        "license": "Apache-2.0", "source": str(path),
        "citation": "Cohen JP et al. TorchXRayVision: A library of chest X-ray datasets and models. MIDL 2022.",
        "notes": f"converted from {w.class_name or 'a state dict'}; "
                 + ("uncalibrated (no op_threshs known), thresholds 0.5; " if w.op_threshs is None else "")
                 + model.load_report.summary(),
    }
    config = {"encoder": _encoder_config(model), "tasks": {task: dict(spec_task)}}
    return write_export_dir(out_dir, state_dict=model.state_dict(), config=config, metadata=meta, overwrite=overwrite)
