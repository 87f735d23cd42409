"""Conversion of foreign checkpoints into medzoo export directories.

Example (not run here):
    >>> convert_medicalnet("pretrain/resnet_10_23dataset.pth", "zoo/resnet10_mn23")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medzoo.zoo.export import write_export_dir
from medzoo.zoo.medicalnet import from_medicalnet

__all__ = ["convert_medicalnet", "medicalnet_metadata"]

# MedicalNet's preprocessing (setting.py / datasets/brains18.py): resize to a target size, z-score over voxels > 0.
MEDICALNET_PREPROCESSING = {
    "modality": ["CT", "MR"], "normalisation": "zscore_nonzero", "intensity_window": None,
    "input_size": [56, 448, 448], "resize": "nearest", "spacing": None, "orientation": None,
    "notes": "crop to the non-background box, resize (scipy.ndimage.zoom order 0) to input_size, z-score over "
             "voxels > 0; training fills zero voxels with N(0,1) noise",
}


def medicalnet_metadata(model: Any, name: str, source: str) -> dict[str, Any]:
    """The weights spec of a converted MedicalNet model."""
    arch = model.encoder.architecture()
    tasks = {t: {"type": "segmentation", "head": "medicalnet_seg", "level": "volume",
                 "labels": list(h.label_names)} for t, h in model.heads.items()}
    return {
        "name": name, "version": "1", "description": f"MedicalNet weights converted from {Path(source).name}",
        "architecture": arch, "parts": ["encoder"] + (["heads"] if tasks else []), "tasks": tasks,
        "preprocessing": MEDICALNET_PREPROCESSING, "license": "MIT", "source": str(source),
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
    enc = model.encoder.architecture()
    encoder_cfg = {"name": enc["encoder"], "in_channels": enc["in_channels"], "output_stride": output_stride,
                   "widths": enc["widths"], "options": {"shortcut": enc["shortcut"],
                                                        "bias_downsample": enc["bias_downsample"]}}
    config = {"encoder": encoder_cfg, "tasks": {t: {"type": "medicalnet_seg", "level": "volume",
                                                    "labels": spec["labels"]} for t, spec in meta["tasks"].items()}}
    state = model.state_dict() if len(model.heads) else model.encoder.state_dict()
    return write_export_dir(out_dir, state_dict=state, config=config, metadata=meta, overwrite=overwrite)
