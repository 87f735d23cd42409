"""The steps of a preprocessing contract that MONAI has no transform for, as MONAI dict transforms.

Geometric steps (foreground and square crops, resize to ``input_size``) are MONAI ``InvertibleTransform``s: they
record what they did on the ``MetaTensor`` (``applied_operations``), so that ``Compose.inverse`` maps a prediction
back through them exactly as through MONAI's own ``Orientationd``/``Spacingd``/``SpatialPadd``. Intensity steps are
not inverted. Every step accepts plain tensors too (slice series, which are never inverted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable
from monai.utils import TraceKeys
from scipy import ndimage
from torch.nn import functional as F

__all__ = ["Clampd", "FlattenSeriesd", "ForegroundCropd", "MapUnitd", "NormaliseIntensityd", "ResizeToSized",
           "ScaleToUnitd", "SquareCropd", "ToMetaTensord", "UnflattenSeriesd", "input_seed"]

IMAGE_KEYS = ("image", "mask")


def _rewrap(out: torch.Tensor, like: Any) -> torch.Tensor:
    """``out`` with the metadata and applied operations of ``like`` when that is a MetaTensor."""
    if isinstance(like, MetaTensor):
        res = MetaTensor(out, meta=dict(like.meta))
        res.applied_operations = list(like.applied_operations)
        return res
    return out


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


class ToMetaTensord(MapTransform):
    """Wrap ``image``/``mask`` as float32 MetaTensors carrying ``meta["affine"]`` (orientation and spacing read it)."""

    def __init__(self, keys: Sequence[Hashable] = IMAGE_KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        affine = d.get("meta", {}).get("affine")
        for key in self.key_iterator(d):
            arr = torch.as_tensor(np.asarray(d[key], dtype=np.float32))
            d[key] = MetaTensor(arr, affine=torch.as_tensor(affine)) if affine is not None else MetaTensor(arr)
        return d


class ScaleToUnitd(MapTransform):
    """Divide ``image`` by the file's maximum value (``meta["max_value"]``: 255, 65535, DICOM ``2**BitsStored - 1``)
    when ``rescale``; average RGB to grey; replicate grey to ``channels``. ``[C, H, W]`` or ``[N, C, H, W]``."""

    def __init__(self, rescale: bool = True, channels: int = 1, series: bool = False,
                 keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)
        self.rescale, self.channels, self.series = rescale, int(channels), series

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        meta = d.get("meta", {})
        scale = float(meta.get("max_value") or 1.0) if self.rescale else 1.0
        for key in self.key_iterator(d):
            img = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(np.asarray(d[key], np.float32))
            img = img.float() / scale
            cdim = 1 if self.series else 0  # series [N, C, H, W]
            if img.shape[cdim] == 3:
                img = img.mean(dim=cdim, keepdim=True)
            if self.channels != img.shape[cdim]:
                if img.shape[cdim] != 1:
                    raise ValueError(f"{meta.get('filename', 'input')}: the model takes {self.channels} channel(s), "
                                     f"the image has {img.shape[cdim]}")
                img = img.repeat_interleave(self.channels, dim=cdim)
            d[key] = img
        return d


class _Geometric(MapTransform, InvertibleTransform):
    """A spatial step that records ``{"shape": before}`` (plus its own info) and undoes itself on predictions."""

    def _record(self, d: dict, key: Hashable, before: Any, **info: Any) -> None:
        if isinstance(d[key], MetaTensor):
            extra = {"shape": [int(s) for s in before.shape[1:]], "affine": before.affine.tolist(), **info}
            self.push_transform(d[key], extra_info=extra)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            op = self.pop_transform(d[key])
            info = op[TraceKeys.EXTRA_INFO]
            out = self._undo(_plain(d[key]).float(), info)
            res = _rewrap(out, d[key])
            if isinstance(res, MetaTensor):
                res.affine = torch.as_tensor(info["affine"], dtype=torch.float64)
            d[key] = res
        return d

    def _undo(self, x: torch.Tensor, info: dict) -> torch.Tensor:
        raise NotImplementedError


def _pad_back(x: torch.Tensor, box: Sequence[Sequence[int]], shape: Sequence[int]) -> torch.Tensor:
    """Put ``x [K, *box sizes]`` at ``box`` inside zeros of ``[K, *shape]``."""
    out = x.new_zeros((x.shape[0], *shape))
    out[(slice(None), *(slice(lo, hi) for lo, hi in box))] = x
    return out


class _Cropd(_Geometric):
    """Crop ``image`` (and ``mask``) to a box computed from the image; undone by zero padding."""

    def __init__(self, keys: Sequence[Hashable] = IMAGE_KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def box(self, img: torch.Tensor) -> list[tuple[int, int]]:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = self.box(_plain(d["image"]))
        for key in self.key_iterator(d):
            before = d[key]
            d[key] = before[(slice(None), *(slice(lo, hi) for lo, hi in box))]
            if isinstance(d[key], MetaTensor):
                d[key] = _rewrap(d[key].as_tensor().clone(), before)
            self._record(d, key, before, box=[list(b) for b in box])
        return d

    def _undo(self, x: torch.Tensor, info: dict) -> torch.Tensor:
        return _pad_back(x, info["box"], info["shape"])


class ForegroundCropd(_Cropd):
    """MedicalNet's crop: the box of voxels that differ from ``volume[0, 0, 0]`` (channel 0), end index exclusive as
    its ``volume[min:max]`` slices; an axis with a single such index keeps that one voxel."""

    def box(self, img: torch.Tensor) -> list[tuple[int, int]]:
        x = img[0]
        idx = torch.nonzero(x != x.reshape(-1)[0])
        if idx.numel() == 0:
            return [(0, int(n)) for n in x.shape]
        lo, hi = idx.min(dim=0).values.tolist(), idx.max(dim=0).values.tolist()
        return [(a, b if b > a else a + 1) for a, b in zip(lo, hi)]


class SquareCropd(_Cropd):
    """TorchXRayVision's ``XRayCenterCrop``: the centred square of side ``min(H, W)``."""

    def box(self, img: torch.Tensor) -> list[tuple[int, int]]:
        h, w = (int(s) for s in img.shape[-2:])
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return [(top, top + side), (left, left + side)]


def _zoom(x: torch.Tensor, size: Sequence[int], order: int) -> torch.Tensor:
    """``scipy.ndimage.zoom`` of every channel of ``x [C, *spatial]`` to ``size`` (MedicalNet's resize)."""
    arr = x.detach().cpu().numpy()
    scale = [t / s for t, s in zip(size, arr.shape[1:])]
    return torch.from_numpy(np.stack([ndimage.zoom(c, scale, order=order) for c in arr]))


def _interp(x: torch.Tensor, size: Sequence[int], nearest: bool) -> torch.Tensor:
    """Torch resize of ``x [C, *spatial]``: (bi/tri)linear, antialiased when 2-D, or ``nearest-exact``."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    if nearest:
        return F.interpolate(x[None].float(), size=tuple(size), mode="nearest-exact")[0]
    mode = "bilinear" if x.dim() == 3 else "trilinear"
    return F.interpolate(x[None].float(), size=tuple(size), mode=mode, align_corners=False,
                         antialias=x.dim() == 3)[0]


class ResizeToSized(_Geometric):
    """Resize ``image`` and ``mask`` to ``size``: ``nearest`` is ``scipy.ndimage.zoom(order=0)`` for both,
    ``linear`` is (bi/tri)linear for the image and ``nearest-exact`` for the mask. Predictions are resized back
    linearly: ``zoom(order=1)`` (MedicalNet's test code) or the torch interpolation."""

    def __init__(self, size: Sequence[int], mode: str = "linear", keys: Sequence[Hashable] = IMAGE_KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.size, self.mode = tuple(int(s) for s in size), mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            before = d[key]
            x = _plain(before).float()
            if tuple(x.shape[1:]) == self.size:
                out = x
            else:
                out = _zoom(x, self.size, 0) if self.mode == "nearest" else _interp(x, self.size, key == "mask")
            d[key] = _rewrap(out, before)
            self._record(d, key, before)
        return d

    def _undo(self, x: torch.Tensor, info: dict) -> torch.Tensor:
        shape = info["shape"]
        if list(x.shape[1:]) == list(shape):
            return x
        return _zoom(x, shape, 1) if self.mode == "nearest" else _interp(x, shape, False)


def input_seed(x: torch.Tensor) -> int:
    """A 64-bit seed from the sha256 of ``x``'s float32 bytes: the same input always draws the same noise."""
    return int.from_bytes(hashlib.sha256(x.detach().cpu().float().numpy().tobytes()).digest()[:8], "little")


class NormaliseIntensityd(Randomizable, MapTransform):
    """``zscore``, ``zscore_nonzero`` (mean/std over voxels > 0, in float64 like numpy) or ``minmax`` of ``image``.

    For ``zscore_nonzero`` the voxels that were exactly 0 become ``background``: ``noise`` N(0, 1), ``zero``, or
    ``keep`` (their z-score). The noise comes from this transform's random state when ``seed_from_input`` is False
    (training: seeded per sample by :func:`~medzoo.data.transforms.set_sample_seed`), else from
    :func:`input_seed` of the volume (evaluation and prediction: a run is deterministic).
    """

    def __init__(self, mode: str, background: str = "keep", seed_from_input: bool = True,
                 keys: Sequence[Hashable] = ("image",)) -> None:
        MapTransform.__init__(self, keys)
        self.mode, self.background, self.seed_from_input = mode, background, seed_from_input

    def randomize(self, data: Any = None) -> None:  # the draw happens in __call__, shaped like the image
        pass

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        v = x.double()
        if self.mode == "minmax":
            span = float(v.max() - v.min())
            return ((v - v.min()) / span if span > 0 else torch.zeros_like(v)).float()
        sel = v[v > 0] if self.mode == "zscore_nonzero" and bool((v > 0).any()) else v.reshape(-1)
        mean, std = float(sel.mean()), float(sel.std(unbiased=False))
        out = (v - mean) / (std if std > 0 else 1.0)
        if self.mode == "zscore_nonzero" and self.background != "keep":
            zero = v == 0
            if self.background == "zero":
                fill = torch.zeros_like(out)
            else:
                rng = np.random.default_rng(input_seed(x)) if self.seed_from_input else self.R
                fill = torch.from_numpy(rng.standard_normal(tuple(x.shape)))
            out = torch.where(zero, fill, out)
        return out.float()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _rewrap(self._apply(_plain(d[key])), d[key])
        return d


class MapUnitd(MapTransform):
    """Map [0, 1] intensities: ``linear`` onto ``value_range``, or ``meanstd``: ``(x - mean[c]) / std[c]``."""

    def __init__(self, mode: str, value_range: Sequence[float] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)
        self.mode, self.value_range, self.mean, self.std = mode, value_range, mean, std

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = _plain(d[key]).float()
            if self.mode == "linear":
                lo, hi = self.value_range
                out = x * (hi - lo) + lo
            else:
                shape = (-1,) + (1,) * (x.dim() - 1)
                out = (x - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)
            d[key] = _rewrap(out, d[key])
        return d


class Clampd(MapTransform):
    """Clamp ``image`` to [lo, hi] (keeps augmented intensities in the contract's range)."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)
        self.lo, self.hi = lo, hi

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.clamp(torch.as_tensor(d[key]), self.lo, self.hi)
        return d


class FlattenSeriesd(MapTransform):
    """``[N, C, H, W]`` -> ``[N*C, H, W]`` so that 2-D transforms treat slices as channels (same warp for all)."""

    def __init__(self, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            d[f"_{key}_nc"] = tuple(x.shape[:2])
            d[key] = x.reshape(-1, *x.shape[2:])
        return d


class UnflattenSeriesd(MapTransform):
    """Inverse of :class:`FlattenSeriesd`."""

    def __init__(self, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            n, c = d.pop(f"_{key}_nc")
            d[key] = torch.as_tensor(d[key]).reshape(n, c, *d[key].shape[-2:])
        return d
