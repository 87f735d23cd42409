"""One pipeline: a preprocessing contract as the MONAI transform chain that training, evaluation and prediction share.

:func:`build_transforms` turns a :class:`~medzoo.data.contract.Preprocessing` into a ``Compose`` over the sample dicts
of :func:`medzoo.data.imageio.load_record` (``image``, optional ``mask``, ``meta``). The stages differ only where they
must:

- ``train``: the contract, then the kind's augmentations (``augment``), with patches centre-cropped or padded to
  ``input_size``;
- ``eval``: the contract alone, patches as in training (what validation and vector tasks see);
- ``predict``: the contract alone; a ``patch`` contract pads a smaller input to ``input_size`` but never crops (the
  predictor slides windows over a larger one), and ``crop_predict: false`` skips the crop.

:func:`prepare` runs the chain on one input and returns a :class:`Prepared`, whose :meth:`Prepared.to_original` maps
network-grid outputs back to the input's own grid through ``Compose.inverse``: MONAI's inverses of its orientation,
spacing, transpose and pad, and those of the contract's own crop and resize steps. One implementation, for every
contract.

Example:
    >>> import numpy as np
    >>> from medzoo.data.presets import ct_contract
    >>> prep = prepare(ct_contract(spacing=None, patch=(8, 8, 8)), np.full((1, 6, 6, 6), -1000, np.float32),
    ...                {"affine": np.eye(4)}, "volume")
    >>> tuple(prep.tensor.shape), prep.to_original(prep.tensor[0]).shape
    ((1, 1, 8, 8, 8), (1, 6, 6, 6))
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import TraceKeys

from medzoo.data.contract import KINDS, Preprocessing
from medzoo.data.contract_ops import IMAGE_KEYS

__all__ = ["DEFAULT_MAX_VOXELS", "STAGES", "Prepared", "build_transforms", "check_voxel_budget", "prepare",
           "transform_specs"]

log = logging.getLogger(__name__)

STAGES = ("train", "eval", "predict")
#: The most voxels a resampled volume may have (512^3 float32 = 512 MiB); checked before resampling.
DEFAULT_MAX_VOXELS = 512 ** 3
_UNIT = ("window", "meanstd", "linear", "minmax")


def _kind(contract: Preprocessing, kind: str | None) -> str:
    kind = kind or ("volume" if contract.dims == 3 else "image")
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {list(KINDS)}")
    if (kind == "volume") != (contract.dims == 3):
        raise ValueError(f"a {contract.axes} contract cannot prepare {kind} inputs (volumes need XYZ or DHW, "
                         "images and slice series HW)")
    return kind


_OPS = "medzoo.data.contract_ops."
_MONAI = "monai.transforms."


def _t(target: str, **kwargs: Any) -> dict[str, Any]:
    """One step as a MONAI bundle config entry (``_target_`` plus keyword arguments, plain data only)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return {"_target_": target, **plain}


def _geometry(c: Preprocessing, stage: str, keys: list[str]) -> list[dict[str, Any]]:
    ts: list[dict[str, Any]] = []
    if c.orientation:
        ts.append(_t(_MONAI + "Orientationd", keys=keys, axcodes=c.orientation, labels=None, allow_missing_keys=True))
    if c.spacing is not None:
        pixdim = c.spacing[::-1] if c.axes == "DHW" else c.spacing  # Spacingd reads the array's (X, Y, Z) axes
        ts.append(_t(_MONAI + "Spacingd", keys=keys, pixdim=list(pixdim), mode=["bilinear", "nearest"],
                     allow_missing_keys=True))
    if c.axes == "DHW":
        ts.append(_t(_MONAI + "Transposed", keys=keys, indices=[0, 3, 2, 1], allow_missing_keys=True))
    if c.crop != "none" and (stage != "predict" or c.crop_predict):
        ts.append(_t(_OPS + ("ForegroundCropd" if c.crop == "foreground" else "SquareCropd"), keys=keys))
    if c.size_mode == "resize":
        ts.append(_t(_OPS + "ResizeToSized", size=list(c.input_size), mode=c.resize or "linear", keys=keys))
    return ts


def _intensity(c: Preprocessing, stage: str) -> list[dict[str, Any]]:
    if c.normalisation in ("window", "meanstd", "linear"):
        lo, hi = c.intensity_window
        return [_t(_MONAI + "ScaleIntensityRanged", keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0,
                   clip=True)]
    if c.normalisation in ("zscore", "zscore_nonzero", "minmax"):
        clip = [] if c.intensity_window is None else [  # the window clips before the statistics, as documented
            _t(_MONAI + "ThresholdIntensityd", keys="image", threshold=c.intensity_window[1], above=False,
               cval=c.intensity_window[1]),
            _t(_MONAI + "ThresholdIntensityd", keys="image", threshold=c.intensity_window[0], above=True,
               cval=c.intensity_window[0])]
        return clip + [_t(_OPS + "NormaliseIntensityd", mode=c.normalisation, background=c.background,
                          seed_from_input=stage != "train")]
    return []


def _augment(c: Preprocessing, kind: str, keys: list[str]) -> list[dict[str, Any]]:
    unit = c.normalisation in _UNIT
    if kind == "volume":
        ts = [_t(_MONAI + "RandFlipd", keys=keys, prob=0.5, spatial_axis=axis, allow_missing_keys=True)
              for axis in range(3)]
        ts += [_t(_MONAI + "RandAffined", keys=keys, prob=0.5, rotate_range=[0.1] * 3, scale_range=[0.1] * 3,
                  mode=["bilinear", "nearest"], padding_mode="zeros", allow_missing_keys=True),
               _t(_MONAI + "RandScaleIntensityd", keys="image", factors=0.1, prob=0.5),
               _t(_MONAI + "RandGaussianNoised", keys="image", prob=0.3, std=0.02)]
        return ts + ([_t(_OPS + "Clampd")] if unit else [])
    size = c.input_size
    if kind == "series":
        ts = [_t(_MONAI + "RandAffined", keys="image", prob=0.7, rotate_range=0.1, scale_range=[0.1, 0.1],
                 padding_mode="zeros")]
    else:
        shift = [0.05 * size[0], 0.05 * size[1]] if size is not None else None
        ts = [_t(_MONAI + "RandAffined", keys=keys, prob=0.7, rotate_range=0.1, scale_range=[0.1, 0.1],
                 translate_range=shift, mode=["bilinear", "nearest"], padding_mode="zeros", allow_missing_keys=True)]
    return ts + ([_t(_MONAI + "RandAdjustContrastd", keys="image", prob=0.3, gamma=[0.8, 1.25]), _t(_OPS + "Clampd")]
                 if unit else [])


def transform_specs(contract: Preprocessing, stage: str = "predict", kind: str | None = None,
                    augment: bool = True) -> list[dict[str, Any]]:
    """The chain of :func:`build_transforms` as MONAI bundle config entries (``{"_target_": ..., **kwargs}``,
    plain data), for ``configs/*.json`` of a bundle: ``ConfigParser`` builds the same transforms from them."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {list(STAGES)}")
    kind = _kind(contract, kind)
    keys = list(IMAGE_KEYS)
    ts: list[dict[str, Any]] = []
    if kind == "series":
        ts += [_t(_OPS + "ScaleToUnitd", rescale=contract.rescale == "max_value", channels=1, series=True),
               _t(_OPS + "FlattenSeriesd")]
    else:
        ts.append(_t(_OPS + "ToMetaTensord", keys=keys))
        if kind == "image" or contract.rescale == "max_value":
            ts.append(_t(_OPS + "ScaleToUnitd", rescale=contract.rescale == "max_value", channels=contract.channels))
    ts += _geometry(contract, stage, keys)
    ts += _intensity(contract, stage)
    if contract.size_mode == "patch" and contract.input_size is not None:
        size = list(contract.input_size)
        ts.append(_t(_MONAI + "SpatialPadd", keys=keys, spatial_size=size, allow_missing_keys=True)
                  if stage == "predict" else
                  _t(_MONAI + "ResizeWithPadOrCropd", keys=keys, spatial_size=size, allow_missing_keys=True))
    if stage == "train" and augment:
        ts += _augment(contract, kind, keys)
    if contract.normalisation in ("meanstd", "linear"):
        ts.append(_t(_OPS + "MapUnitd", mode=contract.normalisation, value_range=contract.value_range,
                     mean=contract.mean, std=contract.std))
    if kind == "series":
        ts.append(_t(_OPS + "UnflattenSeriesd"))
    return ts


def _instantiate(spec: dict[str, Any]) -> Any:
    module, name = spec["_target_"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**{k: v for k, v in spec.items() if k != "_target_"})


def build_transforms(contract: Preprocessing, stage: str = "predict", kind: str | None = None,
                     augment: bool = True) -> Compose:
    """The MONAI chain of ``contract`` for ``stage`` and input ``kind`` (default: ``volume`` for 3-D contracts,
    ``image`` for 2-D).

    Args:
        contract: the preprocessing contract.
        stage: ``train`` (with augmentations), ``eval`` or ``predict`` (see the module docstring).
        kind: ``volume`` (``[C, X, Y, Z]`` in), ``image`` (``[C, H, W]``) or ``series`` (``[N, C, H, W]``).
        augment: with ``train``, add the kind's augmentations (flips, small affine, intensity jitter).

    Returns:
        A ``Compose`` over sample dicts; ``image`` comes out float32 ``[C, *input spatial]`` (a MetaTensor that
        records the invertible steps), or ``[N, C', H', W']`` for a series. Its steps are those
        :func:`transform_specs` lists.
    """
    return Compose([_instantiate(spec) for spec in transform_specs(contract, stage, kind, augment)])


def check_voxel_budget(contract: Preprocessing, shape: tuple[int, ...], affine: Any, name: str,
                       max_voxels: int = DEFAULT_MAX_VOXELS) -> int:
    """Refuse an input that ``contract`` would resample into more than ``max_voxels`` voxels, before resampling.

    The count is the input's physical extent (shape times voxel sizes from ``affine``) over the contract's voxel
    volume; reorientation does not change it.

    Returns:
        The estimated voxel count.

    Raises:
        ValueError: over the budget, naming the input, its voxel sizes and the estimate.
    """
    if contract.spacing is None:
        return int(np.prod(shape))
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    extent = [n * s for n, s in zip(shape, sizes)]
    estimate = math.ceil(math.prod(extent) / math.prod(contract.spacing))
    if estimate > max_voxels:
        raise ValueError(f"{name}: resampling {list(shape)} voxels of {np.round(sizes, 4).tolist()} mm to the "
                         f"model's {list(contract.spacing)} mm would make about {estimate:,} voxels, over the limit "
                         f"of {max_voxels:,}; check the file's voxel sizes (header), or raise max_voxels")
    return estimate


def _check_window(arr: np.ndarray, contract: Preprocessing, name: str) -> None:
    """Warn when a contract that windows raw intensities (HU for CT) gets values that look already normalised."""
    if contract.rescale == "none" and contract.normalisation in ("window", "linear", "meanstd") and arr.size \
            and float(np.nanmax(arr)) <= 1.0 + 1e-6 and contract.intensity_window[1] > 1.0:
        log.warning("%s: values lie in [%.3g, %.3g] but the model windows raw intensities %s (HU for CT); the input "
                    "looks already normalised", name, float(np.nanmin(arr)), float(np.nanmax(arr)),
                    list(contract.intensity_window))


@dataclass
class Prepared:
    """A network-ready tensor, and the chain that made it (to map outputs back to the input's grid).

    Pickled for another process (DataLoader workers hand prepared images to the model's process), it travels light:
    the transform as the recipe that rebuilds it, and the image as its affine and recorded operations, with their
    transform ids cleared (the other process's copies of the transforms have other ids). Unpickling a ``Compose``
    and a ``MetaTensor`` per image cost the model's process about 1 ms of an image's share of a CPU forward pass.

    Attributes:
        tensor: ``[1, C, *spatial]`` (volume, image) or ``[1, N, C, H, W]`` (series).
        transform: the ``Compose`` that produced it (after pickling, rebuilt from ``recipe`` when first needed).
        image: the transformed image with its recorded operations (None for a series, and after pickling).
        original_shape: the input's spatial shape.
        recipe: ``(contract, stage, kind)``: what :func:`build_transforms` rebuilds ``transform`` from.
    """

    tensor: torch.Tensor
    transform: Compose | None
    image: MetaTensor | None
    original_shape: tuple[int, ...]
    recipe: tuple[Preprocessing, str, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.recipe is not None:
            state["transform"] = None
        if isinstance(self.image, MetaTensor):
            ops = [{**op, TraceKeys.ID: TraceKeys.NONE} for op in self.image.applied_operations]
            state["image"], state["_trace"] = None, (self.image.affine.numpy().copy(), ops)  # bytes, not shared memory
        return state

    def _geometry(self) -> tuple[torch.Tensor, list[dict[str, Any]]] | None:
        """The network grid's affine and the recorded operations, from the image or from the pickled trace."""
        if self.image is not None:
            return self.image.affine, self.image.applied_operations
        trace = self.__dict__.get("_trace")
        return None if trace is None else (torch.as_tensor(trace[0]), trace[1])

    def to_original(self, maps: torch.Tensor) -> np.ndarray:
        """``[K, *network spatial]`` maps (probabilities, heatmaps) -> ``[K, *original]`` on the input's grid,
        through the inverse of every geometric step (linear interpolation where a step resampled)."""
        geometry = self._geometry()
        if geometry is None:
            raise ValueError("a slice series is not mapped back; its outputs are per slice")
        affine, ops = geometry
        if not ops:  # no geometric step: the network grid is the input's
            return np.ascontiguousarray(maps.detach().float().cpu().numpy())
        if self.transform is None:
            self.transform = build_transforms(*self.recipe)
        pred = MetaTensor(maps.detach().float().cpu(), affine=affine.clone())
        pred.applied_operations = copy.deepcopy(ops)
        out = self.transform.inverse({"image": pred})["image"]
        arr = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
        return np.ascontiguousarray(arr.numpy())


def prepare(contract: Preprocessing, array: np.ndarray, meta: dict[str, Any] | None, kind: str,
            stage: str = "predict", name: str = "input", max_voxels: int = DEFAULT_MAX_VOXELS) -> Prepared:
    """Run ``contract``'s chain on one read input (``[C, X, Y, Z]``, ``[C, H, W]`` or ``[N, C, H, W]`` with its
    reader ``meta``: ``affine``, ``max_value``).

    Raises:
        ValueError: a volume whose resampling would exceed ``max_voxels``, or a contract of another kind.
    """
    meta = dict(meta or {})
    kind = _kind(contract, kind)
    if kind == "volume":
        meta.setdefault("affine", np.eye(4))
        check_voxel_budget(contract, tuple(int(s) for s in array.shape[1:]), meta["affine"], name, max_voxels)
    _check_window(np.asarray(array), contract, name)
    transform = build_transforms(contract, stage, kind)
    out = transform({"image": array, "meta": {**meta, "filename": meta.get("filename", name)}})["image"]
    image = out if isinstance(out, MetaTensor) and kind != "series" else None
    x = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
    shape = tuple(int(s) for s in (array.shape[1:] if kind != "series" else array.shape[2:]))
    return Prepared(x.float().contiguous()[None], transform, image, shape, (contract, stage, kind))
