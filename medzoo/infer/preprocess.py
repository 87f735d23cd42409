"""Apply a model's preprocessing contract to one input, and undo its geometry on the outputs.

The contract is :class:`medzoo.zoo.spec.Preprocessing` (or its dict form from ``metadata.json``): orientation,
spacing, intensity window and normalisation, input size. Volumes are reoriented (exact flips and transposes, via
nibabel's orientation tools) and resampled (trilinear); :meth:`Prepared.to_original` interpolates output maps
back and undoes the reorientation, so masks land on the input's own voxel grid (its affine and shape). Images are
scaled to [0, 1] by their bit depth, made grayscale and resized to ``input_size``.

Example:
    >>> import numpy as np
    >>> prep = prepare_volume(np.zeros((1, 6, 6, 6), np.float32), np.eye(4), {"normalisation": "none"})
    >>> tuple(prep.tensor.shape), prep.to_original(prep.tensor[0]).shape
    ((1, 1, 6, 6, 6), (1, 6, 6, 6))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["Prepared", "contract_dict", "normalise", "prepare_volume", "prepare_image", "prepare_series"]

log = logging.getLogger(__name__)


def contract_dict(pre: Any) -> dict[str, Any]:
    """A contract as a plain dict (accepts a ``Preprocessing`` dataclass, a dict or ``None``)."""
    if pre is None:
        return {"normalisation": "none"}
    if hasattr(pre, "__dataclass_fields__"):
        return {k: getattr(pre, k) for k in pre.__dataclass_fields__}
    return dict(pre)


def normalise(x: np.ndarray, contract: dict[str, Any]) -> np.ndarray:
    """Intensity window then normalisation (``none``, ``zscore``, ``zscore_nonzero``, ``minmax``, ``window``)."""
    x = x.astype(np.float32, copy=False)
    window = contract.get("intensity_window")
    if window is not None:
        x = np.clip(x, window[0], window[1])
    kind = contract.get("normalisation", "none") or "none"
    if kind == "window":
        return (x - window[0]) / (window[1] - window[0])
    if kind == "minmax":
        span = float(x.max() - x.min())
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)
    if kind in ("zscore", "zscore_nonzero"):
        sel = x[x > 0] if kind == "zscore_nonzero" and (x > 0).any() else x
        std = float(sel.std())
        return (x - float(sel.mean())) / (std if std > 0 else 1.0)
    if kind != "none":
        raise ValueError(f"preprocessing.normalisation: unknown {kind!r}; expected none, zscore, zscore_nonzero, "
                         "minmax or window")
    return x


def _check_range(x: np.ndarray, contract: dict[str, Any], name: str) -> None:
    """Warn when the network input leaves the contract's ``value_range`` (the weights never saw such inputs)."""
    rng = contract.get("value_range")
    if rng is not None and (x.min() < rng[0] - 1e-3 or x.max() > rng[1] + 1e-3):
        log.warning("%s: preprocessed values span [%.3g, %.3g], outside the model's expected range [%.3g, %.3g]; "
                    "check the input's modality and units", name, x.min(), x.max(), rng[0], rng[1])


@dataclass
class Prepared:
    """A network-ready tensor plus what is needed to map outputs back to the input's grid.

    Attributes:
        tensor: ``[1, C, D, H, W]`` (volume), ``[1, C, H, W]`` (image) or ``[1, N, C, H, W]`` (series).
        original_shape: the input's spatial shape.
        oriented_shape: the spatial shape after reorientation, before resampling.
        inverse_ornt: nibabel orientation that undoes the reorientation (``None`` when not reoriented).
    """

    tensor: torch.Tensor
    original_shape: tuple[int, ...]
    oriented_shape: tuple[int, ...] = ()
    inverse_ornt: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_original(self, maps: torch.Tensor, mode: str = "linear") -> np.ndarray:
        """Resize channel-first maps ``[K, *spatial]`` on the network grid to the input grid ``[K, *original]``.

        ``mode="linear"`` interpolates (probabilities, heatmaps); ``"nearest"`` keeps label values.
        """
        target = self.oriented_shape or self.original_shape
        m = maps.detach().float()
        if tuple(m.shape[1:]) != tuple(target):
            interp = {"linear": "trilinear" if m.dim() == 4 else "bilinear", "nearest": "nearest-exact"}[mode]
            kw = {"align_corners": False} if mode == "linear" else {}
            m = F.interpolate(m[None], size=tuple(target), mode=interp, **kw)[0]
        out = m.cpu().numpy()
        if self.inverse_ornt is not None:
            import nibabel.orientations as nio

            out = np.stack([nio.apply_orientation(c, self.inverse_ornt) for c in out])
        return np.ascontiguousarray(out)


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def prepare_volume(array: np.ndarray, affine: np.ndarray, contract: Any, name: str = "input") -> Prepared:
    """``[C, X, Y, Z]`` -> ``[1, C, D, H, W]`` float32: orientation, spacing, window and normalisation.

    The volume keeps its size otherwise: a volume larger than the model's patch is handled by sliding windows.
    """
    import nibabel.orientations as nio

    c = contract_dict(contract)
    arr, shape = np.asarray(array, dtype=np.float32), tuple(int(s) for s in array.shape[1:])
    inverse, spacing = None, _voxel_sizes(affine)
    if c.get("orientation"):
        start = nio.io_orientation(affine)
        xform = nio.ornt_transform(start, nio.axcodes2ornt(tuple(c["orientation"])))
        arr = np.stack([nio.apply_orientation(ch, xform) for ch in arr])
        inverse = nio.ornt_transform(nio.axcodes2ornt(tuple(c["orientation"])), start)
        spacing = _voxel_sizes(affine @ nio.inv_ornt_aff(xform, shape))
    oriented = tuple(arr.shape[1:])
    if c.get("window_check", True) and c.get("intensity_window") is not None and arr.max() <= 1.0 + 1e-6:
        log.warning("%s: values lie in [%.3g, %.3g] but the model windows raw intensities %s (HU for CT); "
                    "the input looks already normalised", name, arr.min(), arr.max(), list(c["intensity_window"]))
    arr = normalise(arr, c)
    t = torch.from_numpy(np.ascontiguousarray(arr))[None]
    target = c.get("spacing")
    if target is not None:
        size = [max(1, int(round(n * s / float(ts)))) for n, s, ts in zip(oriented, spacing, target)]
        if tuple(size) != oriented:
            t = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
    _check_range(arr, c, name)
    return Prepared(t, shape, oriented, inverse, {"spacing": tuple(float(s) for s in spacing)})


def _gray_unit(arr: np.ndarray, max_value: float | None, in_channels: int) -> np.ndarray:
    x = np.asarray(arr, dtype=np.float32)
    if max_value:
        x = x / float(max_value)
    if x.shape[-3] != in_channels:
        if in_channels != 1:
            raise ValueError(f"the model takes {in_channels} channels, the input has {x.shape[-3]}")
        x = x.mean(axis=-3, keepdims=True)
    return x


def prepare_image(array: np.ndarray, meta: dict[str, Any], contract: Any, in_channels: int = 1,
                  name: str = "input") -> Prepared:
    """``[C, H, W]`` -> ``[1, C', H', W']``: [0, 1] by bit depth, grayscale, resize to ``input_size``, normalise."""
    from medzoo.data.imageio import resize_2d

    c = contract_dict(contract)
    shape = tuple(int(s) for s in array.shape[1:])
    x = _gray_unit(array, meta.get("max_value"), in_channels)
    size = c.get("input_size")
    if size is not None:
        x = resize_2d(x, tuple(int(v) for v in size[-2:]))
    x = normalise(x, c)
    _check_range(x, c, name)
    return Prepared(torch.from_numpy(np.ascontiguousarray(x))[None], shape)


def prepare_series(array: np.ndarray, meta: dict[str, Any], contract: Any, in_channels: int = 1,
                   name: str = "input") -> Prepared:
    """``[N, C, H, W]`` -> ``[1, N, C', H', W']`` with the image steps applied to every slice."""
    from medzoo.data.imageio import resize_2d

    c = contract_dict(contract)
    size = c.get("input_size")
    slices = []
    for s in array:
        x = _gray_unit(s, meta.get("max_value"), in_channels)
        slices.append(resize_2d(x, tuple(int(v) for v in size[-2:])) if size is not None else x)
    x = normalise(np.stack(slices), c)
    _check_range(x, c, name)
    return Prepared(torch.from_numpy(np.ascontiguousarray(x))[None], tuple(int(s) for s in array.shape[2:]))
