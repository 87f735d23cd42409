"""Synthetic chest radiograph anatomy: body, lungs, ribs, clavicles, scapulae, vessels, heart, diaphragm, devices.

Densities add up along a ray (bright = dense), as X-ray attenuation does, so the lungs lie under ribs, clavicles,
scapulae, vessels, breast shadows and sometimes ECG leads or a pacemaker, a gastric bubble as dark as lung lies under
the left lung, and a lung is darkest at its centre and nearly as bright as soft tissue at its edges (less air
there). No intensity band separates lung from body: finding the lungs takes their shape and context, which is what
makes lung segmentation a task that needs learning.

Coordinates are normalised as in ``_cxr_draw``: ``y`` 0 (top) to 1, ``x`` 0 (image left = the patient's right) to 1.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["anatomy_density", "expose", "r2"]

Ellipse = tuple[float, float, float, float]


def r2(yy: np.ndarray, xx: np.ndarray, e: Ellipse) -> np.ndarray:
    """Squared normalised radius of every pixel in the ellipse ``e = (cy, cx, ry, rx)`` (<= 1 inside)."""
    cy, cx, ry, rx = e
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def _dome(yy: np.ndarray, xx: np.ndarray, e: Ellipse, amp: float) -> np.ndarray:
    """A thickness profile ``amp * sqrt(1 - r^2)`` inside the ellipse, 0 outside."""
    return amp * np.sqrt(np.clip(1.0 - r2(yy, xx, e), 0.0, None))


def _band(yy: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """A bone-like band around the curve ``y = centre``: marrow plus a brighter cortex at its edges."""
    d = np.abs(yy - centre) / half
    inside = d < 1.0
    return inside * (0.7 + 0.6 * np.clip(d - 0.55, 0.0, None) / 0.45)


def _body(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Soft tissue: the torso (thicker at the centre), shoulders, arms at the sides and the neck."""
    # The body outline does not vary (as in the frame of a positioned PA view); lungs and heart do (sample_chest).
    d = _dome(yy, xx, (0.6, 0.5, 0.56, 0.45), 0.3) + 0.2 * (r2(yy, xx, (0.6, 0.5, 0.56, 0.47)) <= 1)
    for side in (-1.0, 1.0):
        d += _dome(yy, xx, (0.17, 0.5 + side * 0.3, 0.1, 0.17), 0.15)
        arm = (0.55, 0.5 + side * 0.49, 0.4, 0.06)
        d += 0.2 * (r2(yy, xx, arm) <= 1) + _dome(yy, xx, arm, 0.15)
    d += _dome(yy, xx, (0.0, 0.5, 0.14, 0.1), 0.35)
    return d


def _ribs(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, top: float, base: float) -> np.ndarray:
    """Posterior ribs (arches from the spine) and fainter anterior ribs (sloping down towards the midline).

    Ribs run from ``top`` down to the diaphragm at ``base`` and out to the chest wall.
    """
    u = np.abs(xx - 0.5)
    step = (base - top) / 9.5
    tilt = float(rng.uniform(0.9, 1.3))
    out = np.zeros_like(yy)
    for k in range(10):
        y0 = top + k * step
        post = y0 - 0.25 * u + tilt * u**2
        out += 0.1 * _band(yy, post, 0.26 * step) * ((u > 0.04) & (u < 0.44 - 0.1 * (post - 0.5) ** 2))
        ant = y0 + 1.6 * step * (0.44 - u) / 0.32
        out += 0.05 * _band(yy, ant, 0.18 * step) * ((u > 0.12) & (u < 0.44))
    return out * (yy < base + 0.03)


def _shoulder_girdle(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clavicles across the lung apices and the scapulae over the lateral upper lungs."""
    out = np.zeros_like(yy)
    u = np.abs(xx - 0.5)
    height = float(rng.uniform(0.13, 0.19))
    rise = float(rng.uniform(0.05, 0.2))
    clav = height + 0.04 - rise * (u - 0.05) + 0.5 * (u - 0.22) ** 2
    out += 0.14 * _band(yy, clav, 0.016) * ((u > 0.04) & (u < 0.38))
    if rng.random() < 0.7:
        for side in (-1.0, 1.0):
            e = (0.33 + float(rng.uniform(-0.03, 0.03)), 0.5 + side * float(rng.uniform(0.35, 0.41)), 0.15, 0.07)
            out += 0.07 * (r2(yy, xx, e) <= 1) + _dome(yy, xx, e, 0.04)
    return out


def _blob(out: np.ndarray, y: float, x: float, width: float, amp: float, combine: str = "add") -> None:
    """Add (or take the maximum with) ``amp * exp(-d^2 / 2 width^2)`` around ``(y, x)``, inside a 4-width window."""
    h, w = out.shape
    r0, r1 = max(0, int((y - 4 * width) * h)), min(h, int((y + 4 * width) * h) + 2)
    c0, c1 = max(0, int((x - 4 * width) * w)), min(w, int((x + 4 * width) * w) + 2)
    if r0 >= r1 or c0 >= c1:
        return
    gy = ((np.arange(r0, r1) + 0.5) / h - y)[:, None]
    gx = ((np.arange(c0, c1) + 0.5) / w - x)[None, :]
    b = amp * np.exp(-(gy**2 + gx**2) / (2 * width**2))
    if combine == "add":
        out[r0:r1, c0:c1] += b
    else:
        np.maximum(out[r0:r1, c0:c1], b, out=out[r0:r1, c0:c1])


def _vessels(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, hila: list[tuple[float, float, float]]
             ) -> np.ndarray:
    """Pulmonary vessels: random walks out of each hilum, thinner and fainter with distance."""
    out = np.zeros_like(yy)
    for y0, x0, lateral in hila:
        for _ in range(5):
            angle = float(rng.uniform(-1.2, 1.2)) + (np.pi if lateral < 0 else 0.0)
            y, x, amp, width = y0, x0, 0.07, 0.012
            for _ in range(8):
                angle += float(rng.uniform(-0.35, 0.35))
                y, x = y + 0.03 * np.sin(angle), x + 0.03 * np.cos(angle)
                _blob(out, y, x, width, amp)
                amp, width = amp * 0.8, max(0.005, width * 0.85)
    return out


def _curve(yy: np.ndarray, xx: np.ndarray, pts: np.ndarray, width: float) -> np.ndarray:
    """A thin bright line through the points ``pts`` ``[K, 2]`` (y, x), as a chain of small blobs."""
    t = np.linspace(0.0, 1.0, 40)
    k = len(pts) - 1
    out = np.zeros_like(yy)
    for s in t:  # piecewise-linear path
        i = min(int(s * k), k - 1)
        f = s * k - i
        y, x = pts[i] * (1 - f) + pts[i + 1] * f
        _blob(out, float(y), float(x), width, 1.0, combine="max")
    return out


def _devices(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ECG electrodes with leads, a pacemaker with its lead, or a nasogastric tube (each in some images)."""
    out = np.zeros_like(yy)
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(2, 5))):
            y, x = float(rng.uniform(0.15, 0.8)), float(rng.uniform(0.15, 0.85))
            ring = r2(yy, xx, (y, x, 0.022, 0.022))
            out += 0.5 * (ring <= 1) + 0.2 * ((ring <= 1) & (ring > 0.5))
            end = (float(rng.uniform(-0.05, 0.2)), float(rng.choice([-0.05, 1.05])))
            mid = ((y + end[0]) / 2 + float(rng.uniform(-0.1, 0.1)), (x + end[1]) / 2 + float(rng.uniform(-0.1, 0.1)))
            out += 0.35 * _curve(yy, xx, np.array([(y, x), mid, end]), 0.005)
    if rng.random() < 0.1:
        y, x = float(rng.uniform(0.16, 0.24)), float(rng.uniform(0.7, 0.8))
        out += 0.6 * ((np.abs(yy - y) < 0.03) & (np.abs(xx - x) < 0.04))
        pts = np.array([(y, x), (0.3, 0.6), (0.5, 0.52), (0.66, 0.5 + float(rng.uniform(0.0, 0.1)))])
        out += 0.4 * _curve(yy, xx, pts, 0.006)
    if rng.random() < 0.1:
        pts = np.array([(0.0, 0.5), (0.4, 0.5 + float(rng.uniform(-0.02, 0.02))), (0.8, 0.62)])
        out += 0.3 * _curve(yy, xx, pts, 0.007)
    return out


def anatomy_density(yy: np.ndarray, xx: np.ndarray, right: Ellipse, left: Ellipse, heart: Ellipse,
                    lung_depth: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The summed density of one chest before exposure, and the heart mask.

    Args:
        yy, xx: normalised pixel-centre grids ``[h, w]``.
        right, left, heart: the lung and heart ellipses ``(cy, cx, ry, rx)``.
        lung_depth: how much air darkens a lung at its centre (larger: darker lungs, e.g. emphysema).
        rng: the image's generator.

    Returns:
        ``(density [h, w] float32, heart mask [h, w] bool)``.
    """
    d = _body(yy, xx)
    hila = []
    for e, lateral in ((right, -1.0), (left, 1.0)):
        inside = np.clip(1.0 - r2(yy, xx, e), 0.0, None)
        d -= lung_depth * (0.3 + 0.7 * np.sqrt(inside)) * (inside > 0)
        hila.append((e[0] - 0.02, e[1] - lateral * 0.5 * e[3], lateral))
        bottom = e[0] + e[2] * np.sqrt(np.clip(1 - ((xx - e[1]) / e[3]) ** 2, 0, None))
        below = (yy > bottom) & (np.abs(xx - e[1]) < e[3] * 1.05) & (yy < 0.95)
        d += (0.12 if lateral < 0 else 0.06) * below  # liver under the right lung, spleen / stomach on the left
    if rng.random() < 0.7:  # gastric air bubble under the left hemidiaphragm, as dark as lung
        cy, cx, ry, rx = left
        bubble = (cy + ry + float(rng.uniform(0.03, 0.05)), cx + float(rng.uniform(-0.02, 0.04)),
                  float(rng.uniform(0.025, 0.045)), float(rng.uniform(0.04, 0.07)))
        d -= 0.8 * lung_depth * (r2(yy, xx, bubble) <= 1)
    d += _ribs(yy, xx, rng, min(right[0] - right[2], left[0] - left[2]) - 0.02,
               max(right[0] + right[2], left[0] + left[2]))
    d += _shoulder_girdle(yy, xx, rng)
    d += _vessels(yy, xx, rng, hila)
    if rng.random() < 0.5:  # breast shadows over the lower lateral lungs
        for side in (-1.0, 1.0):
            d += _dome(yy, xx, (0.7, 0.5 + side * 0.27, 0.13, 0.17), float(rng.uniform(0.06, 0.14)))
    spine = (np.abs(xx - 0.5) < 0.045) & (yy > 0.08)
    d += 0.28 * spine + 0.04 * spine * (np.sin(yy * 2 * np.pi * 14) > 0.3)
    d -= 0.15 * ((np.abs(xx - 0.5) < 0.016) & (yy > 0.05) & (yy < 0.36))  # trachea
    heart_mask = r2(yy, xx, heart) <= 1
    d += 0.15 * heart_mask + _dome(yy, xx, heart, 0.2)
    d += _devices(yy, xx, rng)
    return d.astype(np.float32), heart_mask


def expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector response of one image: densities clipped to [0, 1], a little blur, correlated and white noise.

    No per-image gain or gamma: an intensity-matching aligner (``medzoo align``) would trade such changes for a zoom.
    """
    img = gaussian_filter(np.clip(density, 0.0, 1.0), 0.6) + gaussian_filter(rng.normal(0, 0.03, density.shape), 1.5)
    return (img + rng.normal(0, 0.008, density.shape)).astype(np.float32)
