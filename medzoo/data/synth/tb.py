"""Synthetic TB screening sets in the Montgomery and Shenzhen layouts, with lung masks.

TB images carry upper-zone patchy opacities with a cavity; normal images carry none. The label is the last digit
of the file name (``_1`` TB, ``_0`` normal), as in the NLM sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medzoo.data.imageio import write_png
from medzoo.data.synth._common import CorpusSize, family_rng, write_text
from medzoo.data.synth._cxr_draw import render_chest, sample_chest, tb_lesion, to_uint

__all__ = ["write_montgomery", "write_shenzhen"]


def _tb_image(rng: np.random.Generator, px: int, tb: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    chest = sample_chest(rng, px, px)
    img, right, left = render_chest(chest, rng)
    sides = []
    if tb:
        sides = ["right", "left"] if rng.random() < 0.3 else [("right", "left")[int(rng.integers(2))]]
        for side in sides:
            tb_lesion(img, chest, rng, side)
    return np.clip(img, 0, 1), right, left, sides


def _finding_text(sides: list[str]) -> str:
    if not sides:
        return "normal"
    return ("bilateral" if len(sides) == 2 else sides[0]) + " upper lobe infiltrate with cavity, PTB"


def write_montgomery(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write ``MontgomerySet/{CXR_png,ClinicalReadings,ManualMask/leftMask,ManualMask/rightMask}``.

    Masks keep the image's file name; ``leftMask`` is the patient's left lung (the image's right side). Masks are
    8-bit 0/255 PNGs of the image's size. Returns the ``MontgomerySet`` folder.
    """
    rng = family_rng(seed, "montgomery")
    base = root / "MontgomerySet"
    for i in range(size.tb):
        tb = i % 2 == 1
        name = f"MCUCXR_{i + 1:04d}_{int(tb)}"
        img, right, left, sides = _tb_image(rng, size.cxr_px, tb)
        write_png(base / "CXR_png" / f"{name}.png", to_uint(img))
        write_png(base / "ManualMask" / "leftMask" / f"{name}.png", left.astype(np.uint8) * 255)
        write_png(base / "ManualMask" / "rightMask" / f"{name}.png", right.astype(np.uint8) * 255)
        sex, age = "MF"[int(rng.integers(2))], int(rng.integers(18, 80))
        write_text(base / "ClinicalReadings" / f"{name}.txt",
                   f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{_finding_text(sides)}\n")
    return base


def write_shenzhen(root: Path, seed: int, size: CorpusSize) -> tuple[Path, Path]:
    """Write ``ChinaSet_AllFiles/{CXR_png,ClinicalReadings}`` and community masks ``mask/CHNCXR_####_X_mask.png``.

    Two thirds of the images get a (combined left + right) mask, as in the community mask set.

    Returns:
        ``(ChinaSet_AllFiles folder, mask folder)``.
    """
    rng = family_rng(seed, "shenzhen")
    base, masks = root / "ChinaSet_AllFiles", root / "mask"
    for i in range(size.tb):
        tb = i % 2 == 0
        name = f"CHNCXR_{i + 1:04d}_{int(tb)}"
        img, right, left, sides = _tb_image(rng, size.cxr_px, tb)
        write_png(base / "CXR_png" / f"{name}.png", to_uint(img))
        if i % 3 != 2:
            write_png(masks / f"{name}_mask.png", (right | left).astype(np.uint8) * 255)
        sex, age = ("male", "female")[int(rng.integers(2))], int(rng.integers(18, 80))
        write_text(base / "ClinicalReadings" / f"{name}.txt", f"{sex} {age}yrs\n{_finding_text(sides)}\n")
    return base, masks
