"""Named preprocessing contracts: the training presets (``ct``, ``cxr``, ``series``) and the foreign ones
(``medicalnet``, ``imagenet``, ``txv``), plus ``none`` (inputs as read, stated on purpose).

A run config's ``transform: {preset, size, options}`` names one of these; :func:`preset_contract` makes it the
:class:`~medzoo.data.contract.Preprocessing` that training applies and its checkpoint records. ``medzoo predict
--preprocessing NAME|FILE`` reads :func:`load_preprocessing`.

Example:
    >>> preset_contract("ct", size=[32, 32, 32], options={"spacing": [2, 2, 2]}).input_size
    (32, 32, 32)
    >>> sorted(load_preprocessing("medicalnet"))
    ['volume']
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medzoo.data.contract import Preprocessing, SpecError, parse_preprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "contracts_from_run", "ct_contract", "cxr_contract",
           "imagenet_contract", "input_kind", "load_preprocessing", "medicalnet_contract", "none_contract",
           "preset_contract", "series_contract", "txv_contract"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _triple(v: float | Sequence[float] | None) -> list[float] | None:
    """``v`` per axis of a volume: one number (or a list of one) repeats."""
    if v is None:
        return None
    v = [v] if isinstance(v, (int, float)) else list(v)
    return [float(x) for x in (v * 3 if len(v) == 1 else v)]


def ct_contract(hu_window: Sequence[float] = (-1000.0, 400.0), spacing: float | Sequence[float] | None = 1.5,
                patch: int | Sequence[int] | None = 96, orientation: str | None = "RAS") -> Preprocessing:
    """CT volumes: reorient, resample to ``spacing`` mm, HU window to [0, 1], ``patch``-sized training crops."""
    return Preprocessing.from_dict({
        "modality": ["CT"], "axes": "XYZ", "orientation": orientation, "spacing": _triple(spacing),
        "normalisation": "window", "intensity_window": list(hu_window),
        "input_size": None if patch is None else [int(p) for p in _triple(patch)], "size_mode": "patch"})


def _hw(size: int | Sequence[int] | None) -> list[int] | None:
    """``size`` per axis of an image: one number (or a list of one) repeats."""
    if size is None:
        return None
    size = [size] if isinstance(size, int) else list(size)
    return [int(s) for s in (size * 2 if len(size) == 1 else size)]


def cxr_contract(size: int | Sequence[int] | None = 224,
                 intensity_range: Sequence[float] = (0.0, 1.0)) -> Preprocessing:
    """Chest X-rays: [0, 1] by the file's maximum value, grey, resized to ``size``, then onto ``intensity_range``."""
    lo, hi = (float(v) for v in intensity_range)
    intensity = ({"normalisation": "window"} if (lo, hi) == (0.0, 1.0)
                 else {"normalisation": "linear", "value_range": [lo, hi]})
    sized = {"input_size": _hw(size), "size_mode": "resize", "resize": "linear"} if size is not None else {}
    return Preprocessing.from_dict({"modality": ["CXR"], "axes": "HW", "rescale": "max_value",
                                    "intensity_window": [0.0, 1.0], **intensity, **sized})


def series_contract(size: int | Sequence[int] | None = None) -> Preprocessing:
    """CT slice series (PNG/JPEG slices): every slice as :func:`cxr_contract` does an image."""
    return cxr_contract(size).replace(modality=["CT"])


def medicalnet_contract(input_size: int | Sequence[int] = (56, 448, 448), background: str = "noise") -> Preprocessing:
    """MedicalNet (Med3D): ``[X, Y, Z] -> [Z, Y, X]`` (``DHW``), training crop to the non-background box, nearest
    resize to ``input_size`` (``scipy.ndimage.zoom(order=0)``), z-score over voxels > 0, zero voxels -> N(0, 1)."""
    return Preprocessing.from_dict({
        "modality": ["CT", "MR"], "axes": "DHW", "normalisation": "zscore_nonzero", "background": background,
        "crop": "foreground", "crop_predict": False, "input_size": [int(s) for s in _triple(input_size)],
        "size_mode": "resize", "resize": "nearest",
        "notes": "MedicalNet's datasets/brains18.py and test.py: training crops to the box of voxels that differ "
                 "from volume[0,0,0] (end exclusive, as its code slices), testing resizes the whole volume; "
                 "input_size [56, 448, 448] is its transfer demo's; the network is fully convolutional"})


def imagenet_contract(in_channels: int = 3, size: int | Sequence[int] = 224) -> Preprocessing:
    """ImageNet weights on a grey image: replicated to 3 channels and normalised per channel (exact), or, with one
    channel (the RGB stem summed), normalised with the channel averages of ImageNet's mean/std (approximate)."""
    if in_channels == 3:
        mean, std, how = list(IMAGENET_MEAN), list(IMAGENET_STD), "grey replicated to RGB, ImageNet mean/std"
    else:
        mean, std = [round(sum(IMAGENET_MEAN) / 3, 3)], [round(sum(IMAGENET_STD) / 3, 3)]
        how = "RGB stem summed; grey normalised with ImageNet's channel-average mean/std (an approximation)"
    return Preprocessing.from_dict({
        "modality": ["CT", "MR", "CXR"], "axes": "HW", "rescale": "max_value", "channels": in_channels,
        "normalisation": "meanstd", "intensity_window": [0.0, 1.0], "mean": mean, "std": std,
        "input_size": _hw(size), "size_mode": "resize", "resize": "linear",
        "notes": f"{how}; for CT choose an HU window first; ImageNet trained on 224x224 crops (resize 256, crop 224)"})


def txv_contract(resolution: int | Sequence[int] = 224) -> Preprocessing:
    """TorchXRayVision: grey, [0, max value] -> [-1024, 1024], centre square crop, resize to ``resolution``."""
    return Preprocessing.from_dict({
        "modality": ["CXR"], "axes": "HW", "rescale": "max_value", "normalisation": "linear",
        "intensity_window": [0.0, 1.0], "value_range": [-1024.0, 1024.0], "crop": "square",
        "input_size": _hw(resolution), "size_mode": "resize", "resize": "linear",
        "notes": "xrv.datasets.normalize (maxval 255 or 65535), XRayCenterCrop, XRayResizer (skimage antialiased "
                 "resize; here torch's antialiased bilinear)"})


def none_contract(dims: int = 3) -> Preprocessing:
    """Inputs exactly as read: no reorientation, resampling, resize or intensity change."""
    return Preprocessing.from_dict({"modality": ["any"], "axes": "XYZ" if dims == 3 else "HW",
                                    "notes": "inputs as read (chosen explicitly)"})


#: name -> (the input kinds it serves, factory).
PRESETS: dict[str, tuple[tuple[str, ...], Callable[..., Preprocessing]]] = {
    "ct": (("volume",), ct_contract), "cxr": (("image",), cxr_contract), "series": (("series",), series_contract),
    "medicalnet": (("volume",), medicalnet_contract), "imagenet": (("image",), imagenet_contract),
    "txv": (("image",), txv_contract),
}
_SIZE_ARG = {"ct": "patch", "cxr": "size", "series": "size", "medicalnet": "input_size", "imagenet": "size",
             "txv": "resolution"}


def preset_contract(preset: str, size: Sequence[int] | int | None = None,
                    options: Mapping[str, Any] | None = None, where: str = "transform",
                    kind: str = "volume") -> Preprocessing:
    """The contract a named preset with ``size`` and ``options`` stands for (a run config's ``transform``).

    ``options`` are the preset's own arguments (``hu_window``, ``spacing``, ``orientation``, ``intensity_range``,
    ``background``...) or any contract field, which then overrides the preset's value. ``none`` is the as-read
    contract of ``kind``.

    Raises:
        SpecError: an unknown preset or option, or a contract that does not validate; naming ``where``.
    """
    if preset == "none":
        if options:
            raise SpecError(f"{where}.options: preset 'none' takes no options, got {sorted(options)}")
        return none_contract(3 if kind == "volume" else 2)
    if preset not in PRESETS:
        raise SpecError(f"{where}.preset: unknown preset {preset!r}; expected one of {['none', *PRESETS]}")
    factory = PRESETS[preset][1]
    params = set(inspect.signature(factory).parameters)
    options = dict(options or {})
    kwargs = {k: options.pop(k) for k in list(options) if k in params}
    if size is not None:
        kwargs[_SIZE_ARG[preset]] = size
    fields = set(Preprocessing.__dataclass_fields__)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise SpecError(f"{where}.options: unknown option(s) {unknown} for preset {preset!r}; its arguments are "
                        f"{sorted(params)}, or any contract field {sorted(fields)}")
    try:
        contract = factory(**kwargs)
        return contract.replace(**options) if options else contract
    except (SpecError, TypeError, ValueError) as err:
        raise SpecError(f"{where} (preset {preset!r}): {err}") from None


def load_preprocessing(ref: str | os.PathLike | Mapping[str, Any]) -> dict[str, Preprocessing]:
    """``{kind: contract}`` of a named preset (``ct``, ``cxr``, ``series``, ``medicalnet``, ``imagenet``, ``txv``,
    ``none``), a YAML file holding one contract or ``{kind: contract}``, or such a mapping.

    Raises:
        FileNotFoundError: neither a preset name nor an existing file.
        SpecError: a file whose contract does not validate, naming the file and key.
    """
    if isinstance(ref, Mapping):
        return parse_preprocessing(ref, "preprocessing")
    text = str(ref)
    if text == "none":
        return {"volume": none_contract(3), "image": none_contract(2), "series": none_contract(2)}
    if text in PRESETS:
        kinds, factory = PRESETS[text]
        return {kind: factory() for kind in kinds}
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"preprocessing {text!r}: neither a preset ({', '.join(['none', *PRESETS])}) nor a "
                                "YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, Mapping) and "preprocessing" in data and len(data) == 1:
        data = data["preprocessing"]
    contracts = parse_preprocessing(data, str(path))
    if not contracts:
        raise SpecError(f"{path}: holds no contract")
    return contracts


def input_kind(levels: Sequence[str]) -> str:
    """The input kind of a dataset whose tasks run at ``levels`` (``series``/``slice`` > ``volume`` > ``image``)."""
    levels = set(levels)
    return "series" if levels & {"series", "slice"} else ("volume" if "volume" in levels else "image")


def contracts_from_run(run: Mapping[str, Any]) -> dict[str, Preprocessing]:
    """``{kind: contract}`` of a run config (a plain mapping, as stored in checkpoints): each dataset's preset, with
    its ``slice_size`` (slices resized before the transform) folded in. The first dataset of a kind wins; a later one
    with another contract is logged."""
    tasks = (run.get("model") or {}).get("tasks") or {}
    out: dict[str, Preprocessing] = {}
    for i, d in enumerate(run.get("data") or []):
        kind = input_kind([(tasks.get(t) or {}).get("level", "image") for t in (d.get("tasks") or {}).values()])
        t = d.get("transform") or {}
        contract = preset_contract(t.get("preset", "none"), t.get("size"), t.get("options"), f"data[{i}].transform",
                                   kind)
        contract = with_slice_size(contract, d.get("slice_size"), kind)
        if kind in out and out[kind] != contract:
            log.warning("data[%d] (%s) reads %s inputs with another preprocessing than an earlier dataset; the "
                        "model records the first", i, d.get("name") or d.get("kind"), kind)
            continue
        out.setdefault(kind, contract)
    return out


def with_slice_size(contract: Preprocessing, slice_size: Sequence[int] | int | None, kind: str) -> Preprocessing:
    """``contract`` with a dataset's ``slice_size`` as its 2-D ``input_size`` (when the preset names no size)."""
    if slice_size is None or kind == "volume" or contract.input_size is not None or contract.dims != 2:
        return contract
    return contract.replace(input_size=_hw(slice_size), size_mode="resize", resize="linear")
