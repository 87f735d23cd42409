"""What a medzoo MONAI bundle does to its input before the network, and what the input must be.

:func:`bundle_preprocessing` writes the steps of medzoo's own pipeline (:func:`medzoo.data.pipeline.transform_specs`)
for an input kind as MONAI config entries, less the steps that change the grid; :func:`input_note` says what an
input file must hold (``medzoo_input`` in ``metadata.json``, the bundle's ``docs/README.md``); :func:`sample_input`
is the bundle's example file.

Example:
    >>> from medzoo.data.presets import cxr_contract
    >>> [s["_target_"] for s in bundle_preprocessing(cxr_contract(size=None), "image")]
    ['scripts.medzoo_io.ScaleToUnitd', 'ScaleIntensityRanged']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medzoo.data.contract import BACKGROUNDS, Preprocessing
from medzoo.data.pipeline import transform_specs

__all__ = ["IO_MODULE", "bundle_preprocessing", "input_note", "sample_input"]

#: The module of the bundle's own transforms (``scripts/medzoo_io.py``, a copy of :mod:`medzoo.zoo._bundle_io`).
IO_MODULE = "scripts.medzoo_io."


#: Pipeline steps that change the grid or the layout, which a bundle leaves to the user (its README says so).
_GRID_STEPS = frozenset({"ToMetaTensord", "Orientationd", "Spacingd", "Transposed", "ForegroundCropd", "SquareCropd",
                         "ResizeToSized", "SpatialPadd", "ResizeWithPadOrCropd", "FlattenSeriesd", "UnflattenSeriesd"})
_NORMALISE_MODES = ("zscore", "zscore_nonzero", "minmax")


def _fixed(value: Any, choices: Sequence[str], what: str) -> str:
    """``value`` as one of our own strings (a contract's text never reaches the config)."""
    if value not in choices:
        raise ValueError(f"preprocessing {what}: {value!r} has no MONAI bundle form; known: {list(choices)}")
    return choices[list(choices).index(value)]


def _bundle_step(name: str, s: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle form (key ``image``) of one step of :func:`medzoo.data.pipeline.transform_specs`."""
    key = {"keys": ["image"]}
    if name == "ScaleToUnitd":  # channel first in a bundle, series included
        return {"_target_": IO_MODULE + "ScaleToUnitd", **key, "rescale": bool(s["rescale"]),
                "channels": int(s["channels"])}
    if name == "ScaleIntensityRanged":
        ranges = {k: float(s[k]) for k in ("a_min", "a_max", "b_min", "b_max")}
        return {"_target_": "ScaleIntensityRanged", **key, **ranges, "clip": bool(s["clip"])}
    if name == "ThresholdIntensityd":  # the window's clip before zscore / minmax
        return {"_target_": "ThresholdIntensityd", **key, "threshold": float(s["threshold"]),
                "above": bool(s["above"]), "cval": float(s["cval"])}
    if name == "NormaliseIntensityd":
        return {"_target_": IO_MODULE + "NormaliseIntensityd", **key,
                "mode": _fixed(s["mode"], _NORMALISE_MODES, "mode"),
                "background": _fixed(s["background"], BACKGROUNDS, "background")}
    if name == "MapUnitd" and s["mode"] == "linear":  # x * (hi - lo) + lo, as medzoo's MapUnitd computes it
        lo, hi = (float(v) for v in s["value_range"])
        return {"_target_": "ScaleIntensityRanged", **key, "a_min": 0.0, "a_max": 1.0, "b_min": lo, "b_max": hi,
                "clip": False}
    if name == "MapUnitd" and s["mode"] == "meanstd":  # (x - mean[c]) / std[c]
        mean, std = [float(v) for v in s["mean"]], [float(v) for v in s["std"]]
        one = len(mean) == 1
        return {"_target_": "NormalizeIntensityd", **key, "subtrahend": mean[0] if one else mean,
                "divisor": std[0] if one else std, "channel_wise": not one}
    raise ValueError(f"preprocessing step {name} ({dict(s)}) has no MONAI bundle form")


def bundle_preprocessing(contract: Preprocessing | None, kind: str) -> list[dict[str, Any]]:
    """MONAI transforms (config form, key ``image``) for the steps of medzoo's own pipeline for ``kind`` inputs.

    The steps are those of :func:`medzoo.data.pipeline.transform_specs` (stage ``predict``), in their order, less
    the ones that change the grid (:data:`_GRID_STEPS`): rescale by the file's maximum value, channels and the
    intensity normalisation. Each is written here with MONAI's own transform or the copy in ``scripts/medzoo_io.py``;
    only numbers and fixed names enter it, and a step with no bundle form is refused.

    Raises:
        ValueError: a step of the pipeline that a bundle cannot run.
    """
    if contract is None:
        return []
    steps = []
    for spec in transform_specs(contract, "predict", kind):
        name = spec["_target_"].rsplit(".", 1)[-1]
        if name not in _GRID_STEPS:
            steps.append(_bundle_step(name, spec))
    return steps


_LAYOUT = {"volume": "[C, *spatial] in the contract's axes", "image": "[C, H, W]", "series": "[C, N, H, W] (N slices)"}


def input_note(pre: Preprocessing | None, kind: str) -> dict[str, str]:
    """What a bundle's input file must hold (``metadata.json`` ``medzoo_input`` and ``docs/README.md``)."""
    if pre is None:
        return {"file": f"NAME.npz holding `image` {_LAYOUT[kind]}, float32",
                "intensity": "the weights record no preprocessing contract: `image` reaches the network unchanged",
                "geometry": "as the network was trained (unknown)"}
    if pre.rescale == "max_value":
        scale = ("`image` is divided by the file's maximum value: the .npz's `max_value` entry when it has one "
                 "(a 12-bit DICOM stored as uint16: 4095), else by the dtype it is stored in: uint8 / 255, "
                 "uint16 / 65535 (any other dtype without `max_value` is refused); so store the pixels as read")
    else:
        scale = "`image` holds raw intensities (HU for CT), read as float32"
    crop = pre.crop if pre.crop != "none" and pre.crop_predict else None  # as medzoo predicts
    spacing = list(pre.spacing) if pre.spacing is not None else None
    grid = [f"axes {pre.axes}"] + [f"{k} {v}" for k, v in (("orientation", pre.orientation), ("spacing", spacing),
                                                          ("crop", crop)) if v is not None]
    if pre.size_mode == "resize":
        grid.append(f"resized ({pre.resize}) to {list(pre.input_size)}")
    return {"file": f"NAME.npz holding `image` {_LAYOUT[kind]}",
            "intensity": f"{scale}; the config then runs medzoo's intensity steps for this contract (normalisation "
                         f"{pre.normalisation!r})",
            "geometry": "not in the bundle: give `image` on the network's grid (" + ", ".join(grid) + ")"}


def sample_input(module: nn.Module, example: Sequence[Tensor], contract: Preprocessing | None) -> np.ndarray:
    """One raw input ``[C, *spatial]`` (series ``[C, N, H, W]``) as a user's file holds it: uint8 pixels under a
    ``rescale: max_value`` contract, else float32 inside the contract's intensity window (when it has one)."""
    x = example[0][0]
    if getattr(module, "input_kind", None) == "series":
        x = x.transpose(0, 1)
    g = torch.Generator().manual_seed(0)
    if contract is not None and contract.rescale == "max_value":
        return torch.randint(0, 256, tuple(x.shape), generator=g).numpy().astype(np.uint8)
    window = contract.intensity_window if contract is not None else None
    if window is not None:
        x = float(window[0]) + torch.rand(x.shape, generator=g) * (float(window[1]) - float(window[0]))
    return x.detach().cpu().numpy().astype(np.float32)
