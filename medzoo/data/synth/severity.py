"""Synthetic COVID severity set: CXRs with lung masks and both severity scales.

Each lung gets a ground-glass region over its lowest ``e`` quarters (geographic extent e in 0..4) with density
``o`` in 0..3. The files follow the two public scales, which must not be mixed:

- ``covid-severity-scores.csv`` (Cohen et al.): 5 ``## `` comment lines, then
  ``filename,geographic_mean,opacity_mean``; geographic 0-8, opacity 0-6; means of 3 simulated raters.
- ``severity_annotations.csv`` (COVIDNet-S): ``filename,Geographic,Opacity,Sum,Product,patientid,dataset,age,sex,
  view,location,finding``; geographic 0-8 and **opacity 0-8** (0-4 per lung); a few rows are unscored (blank).
- ``severity_with_masks.csv``: ``path,mask,patientid,geographic_mean,opacity_mean`` (Cohen scale) for the generic
  CSV reader, with combined lung masks in ``masks/``; ``masks/leftMask`` and ``masks/rightMask`` hold the
  Montgomery-style per-lung masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medzoo.data.imageio import write_png
from medzoo.data.synth._common import CorpusSize, family_rng, write_text
from medzoo.data.synth._cxr_draw import ground_glass, render_chest, sample_chest, to_uint

__all__ = ["write_severity", "COHEN_HEADER", "COVIDNET_S_HEADER"]

COHEN_HEADER = "filename,geographic_mean,opacity_mean"
COVIDNET_S_HEADER = "filename,Geographic,Opacity,Sum,Product,patientid,dataset,age,sex,view,location,finding"
_COMMENTS = [
    "## Synthetic COVID-19 severity scores written by medzoo synth (not patient data).",
    "## Geographic extent: 0-4 per lung, summed over both lungs (0-8).",
    "## Opacity: 0-3 per lung, summed over both lungs (0-6).",
    "## Each value is the mean of 3 simulated raters.",
    "## Images are in ../images/ and lung masks in ../masks/.",
]


def _raters(rng: np.random.Generator, truth: float, top: float) -> float:
    votes = np.clip(truth + rng.choice([-1, 0, 1], size=3, p=[0.15, 0.7, 0.15]), 0, top)
    return float(np.round(votes.mean(), 4))


def _fmt(v: float) -> str:
    return f"{v:.4g}" if v != int(v) else f"{v:.1f}"


def write_severity(root: Path, seed: int, size: CorpusSize) -> dict[str, Path]:
    """Write images, masks and the three CSVs; returns their paths (keys: root, cohen, covidnet_s, with_masks)."""
    rng = family_rng(seed, "severity")
    cohen, covidnet, combined = [*_COMMENTS, COHEN_HEADER], [COVIDNET_S_HEADER], [
        "path,mask,patientid,geographic_mean,opacity_mean"]
    for i in range(size.severity):
        name, pid = f"sev_{i:04d}.png", f"sevpatient{i // 2:04d}"
        chest = sample_chest(rng, size.cxr_px, size.cxr_px)
        img, right, left = render_chest(chest, rng)
        extent = [int(rng.integers(0, 5)) for _ in range(2)]
        density = [int(rng.integers(1, 4)) if e > 0 else 0 for e in extent]
        for side, e, o in zip(("right", "left"), extent, density):
            ground_glass(img, chest, rng, side, e, o)
        write_png(root / "images" / name, to_uint(np.clip(img, 0, 1)))
        write_png(root / "masks" / name.replace(".png", "_mask.png"), (right | left).astype(np.uint8) * 255)
        write_png(root / "masks" / "leftMask" / name, left.astype(np.uint8) * 255)
        write_png(root / "masks" / "rightMask" / name, right.astype(np.uint8) * 255)
        geo, opa = _raters(rng, sum(extent), 8), _raters(rng, sum(density), 6)
        cohen.append(f"{name},{_fmt(geo)},{_fmt(opa)}")
        combined.append(f"images/{name},masks/{name.replace('.png', '_mask.png')},{pid},{_fmt(geo)},{_fmt(opa)}")
        age, sex = int(rng.integers(20, 90)), "MF"[int(rng.integers(2))]
        if i % 20 == 19:  # unscored rows exist in the real file
            covidnet.append(f"{name},,,,,{pid},cohen,{age},{sex},PA,synthetic,COVID-19")
            continue
        geo_s = _raters(rng, sum(extent), 8)
        opa_s = _raters(rng, sum(round(o * 4 / 3) for o in density), 8)  # 0-4 per lung on this scale
        covidnet.append(f"{name},{_fmt(geo_s)},{_fmt(opa_s)},{_fmt(geo_s + opa_s)},{_fmt(round(geo_s * opa_s, 4))},"
                        f"{pid},cohen,{age},{sex},PA,synthetic,COVID-19")
    paths = {"root": root, "cohen": root / "annotations" / "covid-severity-scores.csv",
             "covidnet_s": root / "annotations" / "severity_annotations.csv",
             "with_masks": root / "severity_with_masks.csv"}
    write_text(paths["cohen"], "\n".join(cohen) + "\n")
    write_text(paths["covidnet_s"], "\n".join(covidnet) + "\n")
    write_text(paths["with_masks"], "\n".join(combined) + "\n")
    return paths
