"""Drawing synthetic chest X-rays: a jittered chest anatomy (``_cxr_anatomy``) plus findings drawn at known places.

Coordinates are normalised: ``y`` runs 0 (top) to 1 (bottom), ``x`` 0 (image left = the patient's right, PA view)
to 1. Every finding function edits the image in place and returns the box it drew in, as normalised
``(x0, y0, x1, y1)``. Intensities are in [0, 1] (bright = dense), converted to 8- or 16-bit by the writers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medzoo.data.synth._cxr_anatomy import anatomy_density, expose, r2

__all__ = ["Chest", "sample_chest", "render_chest", "FINDINGS", "draw_findings", "to_uint", "Box", "ground_glass",
           "tb_lesion"]

Box = tuple[float, float, float, float]


@dataclass
class Chest:
    """Geometry of one synthetic chest: per lung (cy, cx, ry, rx), heart (cy, cx, ry, rx), lung brightness."""

    right: tuple[float, float, float, float]  # patient's right lung = image left
    left: tuple[float, float, float, float]
    heart: tuple[float, float, float, float]
    lung_level: float = 0.16
    h: int = 128
    w: int = 128

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (yy, xx) pixel-centre coordinates, each ``[h, w]``."""
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        return (yy + 0.5) / self.h, (xx + 0.5) / self.w

    def lung(self, side: str) -> tuple[float, float, float, float]:
        """The (cy, cx, ry, rx) of ``"left"`` or ``"right"``."""
        return self.left if side == "left" else self.right


def ellipse(yy: np.ndarray, xx: np.ndarray, e: tuple[float, float, float, float], angle: float = 0.0) -> np.ndarray:
    """Boolean mask of the ellipse ``e = (cy, cx, ry, rx)``, rotated by ``angle`` radians."""
    cy, cx, ry, rx = e
    dy, dx = yy - cy, xx - cx
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (dy / ry) ** 2 + (dx / rx) ** 2 <= 1.0


def blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """A smooth round blob, 1 at the centre, about 0 beyond 1.5 r."""
    return np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.6 * r) ** 2))).astype(np.float32)


def sample_chest(rng: np.random.Generator, h: int, w: int, cardiomegaly: bool = False,
                 emphysema: bool = False) -> Chest:
    """A chest with jittered lungs and heart (an enlarged heart for cardiomegaly, big dark lungs for emphysema)."""
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731
    grow = 1.12 if emphysema else 1.0
    right = (0.46 + j(0.02), 0.31 + j(0.02), (0.28 + j(0.02)) * grow, (0.14 + j(0.01)) * grow)
    left = (0.46 + j(0.02), 0.69 + j(0.02), (0.27 + j(0.02)) * grow, (0.13 + j(0.01)) * grow)
    hr = 0.2 + j(0.01) if cardiomegaly else 0.12 + j(0.01)
    heart = (0.63 + j(0.015), 0.54 + j(0.015), 0.14 + j(0.01), hr)
    return Chest(right, left, heart, lung_level=0.08 if emphysema else 0.16 + j(0.02), h=h, w=w)


def render_chest(chest: Chest, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a radiograph of the chest: overlapping anatomy and devices (see ``_cxr_anatomy``), then the exposure.

    Returns:
        ``(image [h, w] float32, right_lung_mask, left_lung_mask)``; lung masks are the lung ellipses less the heart.
    """
    yy, xx = chest.grid()
    density, heart = anatomy_density(yy, xx, chest.right, chest.left, chest.heart, 0.46 - chest.lung_level, rng)
    img = expose(density, rng)
    right, left = ((r2(yy, xx, e) <= 1) & ~heart for e in (chest.right, chest.left))
    return img, right, left


def _lung_point(chest: Chest, side: str, rng: np.random.Generator, fy: tuple[float, float],
                fx: tuple[float, float]) -> tuple[float, float]:
    """A point in a lung at fractions (fy of height, fx of width from medial to lateral) of its ellipse."""
    cy, cx, ry, rx = chest.lung(side)
    y = cy - ry + 2 * ry * rng.uniform(*fy)
    lateral = -1.0 if side == "right" else 1.0
    x = cx + lateral * rx * (2 * rng.uniform(*fx) - 1) * 0.8
    return float(y), float(x)


def _box_of(mask: np.ndarray, chest: Chest) -> Box:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (xs.min() / chest.w, ys.min() / chest.h, (xs.max() + 1) / chest.w, (ys.max() + 1) / chest.h)


def _add_blob(img, chest, rng, side, fy, fx, r, amp) -> Box:
    yy, xx = chest.grid()
    y, x = _lung_point(chest, side, rng, fy, fx)
    b = blob(yy, xx, y, x, r)
    img += amp * b
    return _box_of(b > 0.1, chest)


def nodule(img, chest, rng, side) -> Box:
    return _add_blob(img, chest, rng, side, (0.2, 0.7), (0.3, 0.8), 0.035, 0.5)


def mass(img, chest, rng, side) -> Box:
    return _add_blob(img, chest, rng, side, (0.25, 0.65), (0.3, 0.7), 0.08, 0.45)


def consolidation(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    y, x = _lung_point(chest, side, rng, (0.45, 0.7), (0.3, 0.7))
    region = ellipse(yy, xx, (y, x, 0.07, 0.06), angle=float(rng.uniform(-0.5, 0.5)))
    region &= ellipse(yy, xx, chest.lung(side))
    img[region] = np.maximum(img[region], 0.55)
    return _box_of(region, chest)


def pneumonia(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    y, x = _lung_point(chest, side, rng, (0.6, 0.85), (0.3, 0.7))
    patch = blob(yy, xx, y, x, 0.09) * (0.6 + 0.4 * gaussian_filter(rng.random(img.shape), 1.0))
    patch *= ellipse(yy, xx, chest.lung(side))
    img += 0.35 * patch.astype(np.float32)
    return _box_of(patch > 0.25, chest)


def infiltration(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    haze = np.zeros_like(img)
    y0, x0 = _lung_point(chest, side, rng, (0.35, 0.6), (0.3, 0.7))
    for _ in range(4):
        haze += blob(yy, xx, y0 + rng.uniform(-0.06, 0.06), x0 + rng.uniform(-0.04, 0.04), 0.04)
    haze = np.clip(haze, 0, 1) * ellipse(yy, xx, chest.lung(side))
    img += 0.2 * haze
    return _box_of(haze > 0.3, chest)


def atelectasis(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    y, x = _lung_point(chest, side, rng, (0.6, 0.8), (0.4, 0.6))
    band = ellipse(yy, xx, (y, x, 0.018, 0.09), angle=float(rng.uniform(-0.4, 0.4))) & ellipse(yy, xx, chest.lung(side))
    img[band] += 0.35
    return _box_of(band, chest)


def effusion(img, chest, rng, side) -> Box:
    """Fluid at the costophrenic angle: lung below a meniscus that rises laterally becomes soft-tissue bright."""
    yy, xx = chest.grid()
    cy, cx, ry, rx = chest.lung(side)
    lateral = (xx - cx) / rx * (-1.0 if side == "right" else 1.0)
    level = cy + ry * rng.uniform(0.35, 0.6) - 0.06 * lateral
    fluid = ellipse(yy, xx, chest.lung(side)) & (yy > level)
    img[fluid] = 0.6 + 0.02 * rng.standard_normal(int(fluid.sum())).astype(np.float32)
    return _box_of(fluid, chest)


def pneumothorax(img, chest, rng, side) -> Box:
    """Apical-lateral air without lung markings, bounded by a thin bright pleural line."""
    yy, xx = chest.grid()
    cy, cx, ry, rx = chest.lung(side)
    shift = 0.3 * rx * (1.0 if side == "right" else -1.0)
    inner = ellipse(yy, xx, (cy + 0.15 * ry, cx + shift, 0.8 * ry, 0.65 * rx))
    air = ellipse(yy, xx, chest.lung(side)) & ~inner & (yy < cy + 0.3 * ry)
    img[air] = 0.03
    line = ellipse(yy, xx, (cy + 0.15 * ry, cx + shift, 0.8 * ry + 0.01, 0.65 * rx + 0.01)) & ~inner
    img[line & (yy < cy + 0.3 * ry)] += 0.25
    return _box_of(air, chest)


def cardiomegaly(img, chest, rng, side) -> Box:
    """Drawn by ``sample_chest(cardiomegaly=True)``; the box is the heart's."""
    cy, cx, ry, rx = chest.heart
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def edema(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    lungs = ellipse(yy, xx, chest.right) | ellipse(yy, xx, chest.left)
    haze = (blob(yy, xx, 0.5, 0.36, 0.16) + blob(yy, xx, 0.5, 0.64, 0.16)) * lungs
    img += 0.22 * haze
    return _box_of(haze > 0.3, chest)


def emphysema(img, chest, rng, side) -> Box:
    """Drawn by ``sample_chest(emphysema=True)`` (large, dark lungs); the box covers both lungs."""
    yy, xx = chest.grid()
    return _box_of(ellipse(yy, xx, chest.right) | ellipse(yy, xx, chest.left), chest)


def fibrosis(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    lung = ellipse(yy, xx, chest.lung(side))
    region = lung & (yy > chest.lung(side)[0])
    region &= ~ellipse(yy, xx, chest.heart)
    net = (np.abs(np.sin(yy * 90 + rng.uniform(0, 6))) < 0.3) | (np.abs(np.sin(xx * 80 + rng.uniform(0, 6))) < 0.3)
    img[region & net] += 0.25
    return _box_of(region, chest)


def pleural_thickening(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    e = chest.lung(side)
    rim = ellipse(yy, xx, e) & ~ellipse(yy, xx, (e[0], e[1], e[2] - 0.02, e[3] - 0.025))
    rim &= (yy < e[0] + 0.5 * e[2])
    img[rim] = np.maximum(img[rim] + 0.25, 0.6)  # dense soft tissue along the pleura, over whatever lies beneath
    return _box_of(rim, chest)


def hernia(img, chest, rng, side) -> Box:
    yy, xx = chest.grid()
    cy, cx, ry, _ = chest.heart
    sac = ellipse(yy, xx, (cy + 0.6 * ry, cx - 0.02, 0.06, 0.07))
    img[sac] = 0.66
    img[ellipse(yy, xx, (cy + 0.6 * ry - 0.01, cx - 0.02, 0.02, 0.03))] = 0.1  # gas bubble
    return _box_of(sac, chest)


def ground_glass(img, chest, rng, side, quarters: int, level: int) -> Box:
    """COVID-style peripheral ground-glass opacity over the lowest ``quarters``/4 of a lung, density ``level`` 0-3."""
    if quarters <= 0 or level <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    yy, xx = chest.grid()
    cy, cx, ry, rx = chest.lung(side)
    lung = ellipse(yy, xx, chest.lung(side))
    region = lung & (yy > cy + ry - 2 * ry * quarters / 4.0)
    lateral = np.clip(np.abs(xx - cx) / rx, 0, 1)
    texture = 0.7 + 0.3 * gaussian_filter(rng.random(img.shape), 1.2) + 0.3 * lateral
    img[region] += (0.075 * level * texture[region]).astype(np.float32)
    return _box_of(region, chest)


def tb_lesion(img, chest, rng, side) -> Box:
    """Tuberculosis-like upper-zone patchy opacity with a cavity (a dark centre in a bright ring)."""
    yy, xx = chest.grid()
    y, x = _lung_point(chest, side, rng, (0.12, 0.35), (0.3, 0.8))
    patch = blob(yy, xx, y, x, 0.09) * (0.6 + 0.4 * gaussian_filter(rng.random(img.shape), 1.0))
    patch *= ellipse(yy, xx, chest.lung(side))
    img += 0.35 * patch.astype(np.float32)
    cavity = ellipse(yy, xx, (y, x, 0.025, 0.025))
    img[cavity] = chest.lung_level * 0.5
    return _box_of(patch > 0.25, chest)


FINDINGS: dict[str, Callable[..., Box]] = {
    "Atelectasis": atelectasis, "Cardiomegaly": cardiomegaly, "Effusion": effusion, "Infiltration": infiltration,
    "Mass": mass, "Nodule": nodule, "Pneumonia": pneumonia, "Pneumothorax": pneumothorax,
    "Consolidation": consolidation, "Edema": edema, "Emphysema": emphysema, "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening, "Hernia": hernia,
}


def draw_findings(findings: list[str], rng: np.random.Generator, h: int, w: int,
                  ) -> tuple[np.ndarray, dict[str, Box], np.ndarray, np.ndarray]:
    """Render a chest with ``findings`` (NIH names). Returns ``(image, boxes, right_mask, left_mask)``."""
    chest = sample_chest(rng, h, w, cardiomegaly="Cardiomegaly" in findings, emphysema="Emphysema" in findings)
    img, right, left = render_chest(chest, rng)
    boxes = {}
    for name in findings:
        side = "right" if rng.random() < 0.5 else "left"
        boxes[name] = FINDINGS[name](img, chest, rng, side)
    return np.clip(img, 0.0, 1.0), boxes, right, left


def to_uint(img: np.ndarray, bits: int = 8) -> np.ndarray:
    """[0, 1] float -> uint8 or uint16."""
    top = 2**bits - 1
    return np.rint(np.clip(img, 0, 1) * top).astype(np.uint8 if bits == 8 else np.uint16)
