"""Shared helpers of the synthetic corpus writers: seeded generators per family, sizes, text files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["family_rng", "CorpusSize", "SIZES", "write_text", "split_patients"]


def family_rng(seed: int, family: str) -> np.random.Generator:
    """An independent generator per (seed, family), so one family's size never changes another's content."""
    key = int.from_bytes(hashlib.sha256(family.encode()).digest()[:4], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


@dataclass(frozen=True)
class CorpusSize:
    """How much of each family to write."""

    cxr_px: int  # side of the CXR PNG/JPEG images
    nih: int  # NIH ChestX-ray14 images
    chexpert: int  # CheXpert train studies (valid gets a quarter)
    covidx_cxr: int  # COVIDx CXR images
    tb: int  # per TB set (Montgomery, Shenzhen)
    severity: int  # severity-scored CXRs
    ct_shape: tuple[int, int, int]  # CT phantom voxels (X, Y, Z)
    ct_train: int  # MSD training volumes
    ct_test: int  # MSD test volumes
    series: int  # COVIDx-CT patients
    slice_px: tuple[int, ...]  # slice sizes used in COVIDx-CT (each patient picks one)
    slices: tuple[int, int]  # min, max slices per series


SIZES = {
    "small": CorpusSize(cxr_px=96, nih=200, chexpert=48, covidx_cxr=60, tb=60, severity=80, ct_shape=(48, 48, 32),
                        ct_train=32, ct_test=8, series=60, slice_px=(56, 64, 72), slices=(4, 10)),
    "tiny": CorpusSize(cxr_px=48, nih=28, chexpert=8, covidx_cxr=9, tb=8, severity=8, ct_shape=(24, 24, 16),
                       ct_train=4, ct_test=2, series=9, slice_px=(32, 40), slices=(2, 4)),
}


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text with ``\\n`` line ends (reproducible across platforms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def split_patients(rng: np.random.Generator, patients: list, fractions: tuple[float, ...]) -> list[list]:
    """Shuffle and cut ``patients`` into len(fractions) groups (every group non-empty when possible)."""
    order = [patients[i] for i in rng.permutation(len(patients))]
    n = len(order)
    cuts = np.cumsum([max(1, int(round(f * n))) for f in fractions[:-1]])
    cuts = [min(int(c), n - (len(fractions) - 1 - k)) for k, c in enumerate(cuts)]
    groups, start = [], 0
    for c in [*cuts, n]:
        groups.append(order[start:c])
        start = c
    return groups
