"""MONAI dict-transform presets per modality, and per-sample seeding of their randomness.

Presets take the sample dicts of :func:`medzoo.data.imageio.load_record` (keys ``image``, optional ``mask``,
``meta``) and return the same keys, with ``image`` a float32 tensor:

- :func:`ct_preset`: ``[1, X, Y, Z]`` HU volume -> orientation, spacing resample, HU window to [0, 1], crop or pad
  to ``patch`` (image and mask alike). Training adds flips, small affine and intensity jitter.
- :func:`cxr_preset`: ``[1 or 3, H, W]`` PNG/JPEG -> grayscale [0, 1] (divided by the file's max value, 255 or
  65535), resized to ``size``. Training adds a small affine (no flips: a CXR has a left and a right) and gamma.
- :func:`series_preset`: ``[N, C, H, W]`` slice series -> grayscale [0, 1], optional resize; training applies the
  *same* random affine to every slice of a series.

Randomness is seeded per sample from (seed, epoch, index) with :func:`set_sample_seed`, so an
augmented sample does not depend on DataLoader workers or on what was drawn before it.

Example:
    >>> import numpy as np
    >>> t = cxr_preset(train=False, size=16)
    >>> out = t({"image": np.full((1, 32, 32), 255, np.uint8), "meta": {"max_value": 255.0}})
    >>> tuple(out["image"].shape), float(out["image"].max())
    ((1, 16, 16), 1.0)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandScaleIntensityd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from medzoo.data.imageio import resize_2d

__all__ = ["ct_preset", "cxr_preset", "series_preset", "set_sample_seed", "sample_seed", "IMAGE_KEYS"]

IMAGE_KEYS = ("image", "mask")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


def set_sample_seed(transform: Any, seed: int, epoch: int, index: int) -> None:
    """Seed every random transform inside ``transform`` for one sample (no-op for deterministic transforms).

    Example:
        >>> t = cxr_preset(train=True, size=8)
        >>> set_sample_seed(t, seed=0, epoch=1, index=5)
    """
    if isinstance(transform, Randomizable):
        transform.set_random_state(seed=sample_seed(seed, epoch, index))


class ToMetaTensord(MapTransform):
    """Wrap ``image``/``mask`` as float32 MetaTensors carrying ``meta["affine"]`` (needed by orientation/spacing)."""

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
    """Divide ``image`` by the file's maximum value (``meta["max_value"]``: 255, 65535...) and average RGB to gray.

    Images without ``max_value`` (already float) are divided by 1.
    """

    def __init__(self, keys: Sequence[Hashable] = ("image",), gray: bool = True) -> None:
        super().__init__(keys)
        self.gray = gray

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        scale = float(d.get("meta", {}).get("max_value") or 1.0)
        for key in self.key_iterator(d):
            img = torch.as_tensor(np.asarray(d[key], dtype=np.float32)) / scale
            channel_dim = 1 if img.ndim == 4 else 0  # [N, C, H, W] series or [C, H, W]
            if self.gray and img.shape[channel_dim] == 3:
                img = img.mean(dim=channel_dim, keepdim=True)
            d[key] = img
        return d


class Resize2Dd(MapTransform):
    """Resize the last two axes to ``size``: bilinear with antialiasing for ``image``, nearest for ``mask``."""

    def __init__(self, size: tuple[int, int], keys: Sequence[Hashable] = IMAGE_KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = np.asarray(d[key], dtype=np.float32)
            lead = x.shape[:-2]
            flat = x.reshape(-1, *x.shape[-2:])
            out = resize_2d(flat, self.size, nearest=(key == "mask"))
            d[key] = torch.as_tensor(out.reshape(*lead, *self.size))
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


class Clampd(MapTransform):
    """Clamp ``image`` to [lo, hi] (keeps augmented intensities in the preset's range)."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0, keys: Sequence[Hashable] = ("image",)) -> None:
        super().__init__(keys)
        self.lo, self.hi = lo, hi

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.clamp(torch.as_tensor(d[key]), self.lo, self.hi)
        return d


def ct_preset(train: bool, hu_window: tuple[float, float] = (-1000.0, 400.0),
              spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5),
              patch: tuple[int, int, int] | None = (96, 96, 96), orientation: str | None = "RAS") -> Compose:
    """CT volume preset: ``[1, X, Y, Z]`` HU -> ``[1, *patch]`` float32 in [0, 1] (mask resampled nearest).

    Args:
        train: add augmentations (random flips on every axis, small rotation/scale, intensity scale, noise).
        hu_window: (low, high) HU mapped to (0, 1), clipped.
        spacing: target voxel size in mm (None keeps the file's spacing).
        patch: output spatial size, centre crop or zero pad (None keeps the resampled size).
        orientation: axis codes such as ``"RAS"`` (None keeps the file's orientation).

    Returns:
        A MONAI ``Compose`` over dicts with ``image``, optional ``mask`` and ``meta`` (``meta["affine"]`` used).

    Example:
        >>> import numpy as np
        >>> t = ct_preset(train=False, spacing=None, patch=(8, 8, 8))
        >>> t({"image": np.zeros((1, 10, 6, 8)), "meta": {"affine": np.eye(4)}})["image"].shape
        torch.Size([1, 8, 8, 8])
    """
    keys = list(IMAGE_KEYS)
    ts: list[Any] = [ToMetaTensord(keys)]
    if orientation:
        ts.append(Orientationd(keys, axcodes=orientation, labels=None, allow_missing_keys=True))
    if spacing is not None:
        ts.append(Spacingd(keys, pixdim=spacing, mode=("bilinear", "nearest"), allow_missing_keys=True))
    ts.append(ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0,
                                   clip=True))
    if patch is not None:
        ts.append(ResizeWithPadOrCropd(keys, spatial_size=patch, allow_missing_keys=True))
    if train:
        ts += [RandFlipd(keys, prob=0.5, spatial_axis=axis, allow_missing_keys=True) for axis in range(3)]
        ts += [RandAffined(keys, prob=0.5, rotate_range=(0.1, 0.1, 0.1), scale_range=(0.1, 0.1, 0.1),
                           mode=("bilinear", "nearest"), padding_mode="zeros", allow_missing_keys=True),
               RandScaleIntensityd("image", factors=0.1, prob=0.5),
               RandGaussianNoised("image", prob=0.3, std=0.02), Clampd()]
    return Compose(ts)


def cxr_preset(train: bool, size: int | tuple[int, int] = 224,
               intensity_range: tuple[float, float] = (0.0, 1.0)) -> Compose:
    """Chest X-ray preset: ``[1 or 3, H, W]`` -> ``[1, size, size]`` float32 in ``intensity_range``.

    Args:
        train: add a small random affine (rotation 0.1 rad, scale 10%, shift 5%) and gamma jitter.
        size: output size (an int for square).
        intensity_range: output range (images are first scaled to [0, 1] by the file's max value).

    Returns:
        A MONAI ``Compose``; a ``mask`` key, when present, is resized nearest and warped with the image.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    ts: list[Any] = [ScaleToUnitd(), Resize2Dd(hw)]
    if train:
        keys = list(IMAGE_KEYS)
        shift = (0.05 * hw[0], 0.05 * hw[1])
        ts += [RandAffined(keys, prob=0.7, rotate_range=0.1, scale_range=(0.1, 0.1), translate_range=shift,
                           mode=("bilinear", "nearest"), padding_mode="zeros", allow_missing_keys=True),
               RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25)), Clampd()]
    lo, hi = intensity_range
    if (lo, hi) != (0.0, 1.0):
        ts.append(ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=lo, b_max=hi))
    return Compose(ts)


def series_preset(train: bool, size: int | tuple[int, int] | None = None) -> Compose:
    """Slice-series preset: ``[N, C, H, W]`` -> ``[N, 1, H', W']`` float32 in [0, 1].

    Args:
        train: add one random affine and gamma per series, the same for all its slices.
        size: resize every slice to it (None keeps the size; ``load_record(slice_size=...)`` may have resized).

    Returns:
        A MONAI ``Compose``.
    """
    ts: list[Any] = [ScaleToUnitd()]
    if size is not None:
        ts.append(Resize2Dd((size, size) if isinstance(size, int) else tuple(size), keys=("image",)))
    if train:
        ts += [FlattenSeriesd(),
               RandAffined("image", prob=0.7, rotate_range=0.1, scale_range=(0.1, 0.1), padding_mode="zeros"),
               RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25)), Clampd(), UnflattenSeriesd()]
    return Compose(ts)
