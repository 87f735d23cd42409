"""The training presets, which are preprocessing contracts, and per-sample seeding of their randomness.

A preset is a named contract (:mod:`medzoo.data.presets`) built into MONAI transforms by the one pipeline
(:func:`medzoo.data.pipeline.build_transforms`); the contract a run trained with is what its checkpoint records and
what ``medzoo predict`` applies. Presets take the sample dicts of :func:`medzoo.data.imageio.load_record` (keys
``image``, optional ``mask``, ``meta``) and return the same keys, with ``image`` a float32 tensor:

- :func:`ct_preset`: ``[1, X, Y, Z]`` HU volume -> orientation, spacing resample, HU window to [0, 1], crop or pad
  to ``patch`` (image and mask alike). Training adds flips, small affine and intensity jitter.
- :func:`cxr_preset`: ``[1 or 3, H, W]`` PNG/JPEG/DICOM -> grayscale [0, 1] (divided by the file's max value, 255,
  65535 or a DICOM's ``2**BitsStored - 1``), resized to ``size``. Training adds a small affine (no flips: a CXR has a
  left and a right) and gamma.
- :func:`series_preset`: ``[N, C, H, W]`` slice series -> grayscale [0, 1], optional resize; training applies the
  *same* random affine to every slice of a series.

Randomness is seeded per sample from (seed, epoch, index) with :func:`set_sample_seed`, so an augmented sample does
not depend on DataLoader workers or on what was drawn before it.

Example:
    >>> import numpy as np
    >>> t = cxr_preset(train=False, size=16)
    >>> out = t({"image": np.full((1, 32, 32), 255, np.uint8), "meta": {"max_value": 255.0}})
    >>> tuple(out["image"].shape), float(out["image"].max())
    ((1, 16, 16), 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, Randomizable

from medzoo.data.contract_ops import IMAGE_KEYS
from medzoo.data.pipeline import build_transforms
from medzoo.data.presets import ct_contract, cxr_contract, series_contract

__all__ = ["IMAGE_KEYS", "ct_preset", "cxr_preset", "sample_seed", "series_preset", "set_sample_seed"]


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


def _stage(train: bool) -> str:
    return "train" if train else "eval"


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
    return build_transforms(ct_contract(hu_window, spacing, patch, orientation), _stage(train), "volume")


def cxr_preset(train: bool, size: int | Sequence[int] = 224,
               intensity_range: tuple[float, float] = (0.0, 1.0)) -> Compose:
    """Chest X-ray preset: ``[1 or 3, H, W]`` -> ``[1, size, size]`` float32 in ``intensity_range``.

    Args:
        train: add a small random affine (rotation 0.1 rad, scale 10%, shift 5%) and gamma jitter.
        size: output size (an int for square).
        intensity_range: output range (images are first scaled to [0, 1] by the file's max value).

    Returns:
        A MONAI ``Compose``; a ``mask`` key, when present, is resized nearest and warped with the image.
    """
    return build_transforms(cxr_contract(size, intensity_range), _stage(train), "image")


def series_preset(train: bool, size: int | Sequence[int] | None = None) -> Compose:
    """Slice-series preset: ``[N, C, H, W]`` -> ``[N, 1, H', W']`` float32 in [0, 1].

    Args:
        train: add one random affine and gamma per series, the same for all its slices.
        size: resize every slice to it (None keeps the size; ``load_record(slice_size=...)`` may have resized).

    Returns:
        A MONAI ``Compose``.
    """
    return build_transforms(series_contract(size), _stage(train), "series")
