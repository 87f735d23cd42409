"""Synthetic CT: phantom volumes in an MSD task folder (plus a DICOM series and MedicalNet lists), and
COVIDx-CT-style slice series whose class depends on the lesion pattern.

Phantom: body (40 HU) with spine (700 HU), two lungs (-850 HU with texture), heart, vessels, and lesions.
MSD labels: 0 background, 1 lung, 2 lesion. COVIDx-CT classes: Normal (vessels only), Pneumonia (dense
dependent consolidation, about 0 HU), COVID-19 (several faint peripheral ground-glass blobs, about -550 HU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medzoo.data._dicom import has_pydicom
from medzoo.data.imageio import write_dicom_series, write_nifti, write_png
from medzoo.data.synth._common import CorpusSize, family_rng, split_patients, write_text

__all__ = ["phantom_volume", "ct_slice", "write_msd", "write_covidx_ct", "MSD_TASK", "COVIDX_CT_CLASSES"]

MSD_TASK = "Task99_SynthLung"
COVIDX_CT_CLASSES = ("Normal", "Pneumonia", "COVID-19")
_CNCB_PREFIX = {0: "Normal", 1: "CP", 2: "NCP"}


def _ellipsoid(grids: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def phantom_volume(rng: np.random.Generator, shape: tuple[int, int, int],
                   n_lesions: int) -> tuple[np.ndarray, np.ndarray]:
    """A chest phantom ``[X, Y, Z]`` in HU (float32) and its label map (uint8: 1 lung, 2 lesion)."""
    g = tuple(((np.arange(n, dtype=np.float32) + 0.5) / n) for n in shape)
    xx, yy, zz = np.meshgrid(*g, indexing="ij")
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731
    hu = np.full(shape, -1000.0, np.float32)
    hu[((xx - 0.5) / 0.44) ** 2 + ((yy - 0.5) / 0.34) ** 2 <= 1.0] = 40.0
    hu[((xx - 0.5) / 0.06) ** 2 + ((yy - 0.8) / 0.06) ** 2 <= 1.0] = 700.0
    lungs = np.zeros(shape, bool)
    for cx in (0.3, 0.7):
        lungs |= _ellipsoid((xx, yy, zz), (cx + j(0.02), 0.48 + j(0.02), 0.5 + j(0.03)),
                            (0.15 + j(0.01), 0.23 + j(0.02), 0.45 + j(0.03)))
    heart = _ellipsoid((xx, yy, zz), (0.54, 0.38, 0.35), (0.12, 0.12, 0.2))
    lungs &= ~heart
    texture = gaussian_filter(rng.normal(0, 1, shape), 1.0).astype(np.float32)
    hu[lungs] = -850.0 + 30.0 * texture[lungs]
    label = lungs.astype(np.uint8)
    idx = np.argwhere(lungs)
    for _ in range(n_lesions):
        c = idx[int(rng.integers(len(idx)))] / np.array(shape)
        r = float(rng.uniform(0.06, 0.12))
        lesion = _ellipsoid((xx, yy, zz), c, (r, r, r * 0.8)) & lungs
        hu[lesion] = 20.0 + 15.0 * texture[lesion]
        label[lesion] = 2
    hu += rng.normal(0, 15, shape).astype(np.float32)
    return np.clip(hu, -1024, 2000).astype(np.float32), label


def write_msd(root: Path, seed: int, size: CorpusSize, dicom: bool = True) -> dict[str, Path]:
    """Write ``Task99_SynthLung`` (imagesTr, labelsTr, imagesTs, dataset.json), MedicalNet list files and, when
    pydicom is importable, volume 0 as a DICOM series in ``dicom/lung_000``.

    Returns:
        ``{"msd": task folder, "medicalnet": folder holding the list files (the data root),
        "dicom": series folder (only when written)}``.
    """
    rng = family_rng(seed, "msd")
    task = root / MSD_TASK
    shape = size.ct_shape
    spacing = (336.0 / shape[0], 336.0 / shape[1], 320.0 / shape[2])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [shape[0] * spacing[0] / 2, shape[1] * spacing[1] / 2, -shape[2] * spacing[2] / 2]
    training, test, mn_train = [], [], []
    for i in range(size.ct_train + size.ct_test):
        hu, label = phantom_volume(rng, shape, int(rng.integers(0, 4)))
        hu_int = np.rint(hu).astype(np.int16)
        name = f"lung_{i:03d}.nii.gz"
        if i < size.ct_train:
            write_nifti(task / "imagesTr" / name, hu_int, affine)
            write_nifti(task / "labelsTr" / name, label, affine)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
            mn_train.append(f"{MSD_TASK}/imagesTr/{name} {MSD_TASK}/labelsTr/{name}")
        else:
            write_nifti(task / "imagesTs" / name, hu_int, affine)
            test.append(f"./imagesTs/{name}")
        if i == 0 and dicom and has_pydicom():
            write_dicom_series(root / "dicom" / "lung_000", hu_int.astype(np.float32), spacing,
                               origin=(-affine[0, 3], -affine[1, 3], affine[2, 3]), series_uid_seed=f"synth-{seed}-0")
    (task / "imagesTr" / "._lung_000.nii.gz").write_bytes(b"\x00\x05\x16\x07macOS resource fork")  # MSD quirk
    meta = {"name": "SynthLung", "description": "Synthetic chest CT phantoms with lung and lesion labels (medzoo)",
            "reference": "medzoo synth", "licence": "CC-BY-SA 4.0", "release": "1.0 synthetic",
            "tensorImageSize": "3D", "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "lung", "2": "lesion"},
            "numTraining": len(training), "numTest": len(test), "training": training, "test": test}
    write_text(task / "dataset.json", json.dumps(meta, indent=4) + "\n")
    write_text(root / "medicalnet_train.txt", "\n".join(mn_train) + "\n")
    write_text(root / "medicalnet_test.txt", "\n".join(f"{MSD_TASK}/{t[2:]}" for t in test) + "\n")
    out = {"msd": task, "medicalnet": root}
    if (root / "dicom" / "lung_000").exists():
        out["dicom"] = root / "dicom" / "lung_000"
    return out


def ct_slice(rng: np.random.Generator, px: int, cls: int, z: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One axial slice (uint8, windowed W1500/L-600) of class ``cls`` at height ``z`` in [0, 1], and its body
    crop box (xmin, ymin, xmax, ymax)."""
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32)
    yy, xx = (yy + 0.5) / px, (xx + 0.5) / px
    cy, cx = 0.5 + float(rng.uniform(-0.05, 0.05)), 0.5 + float(rng.uniform(-0.05, 0.05))
    body = ((xx - cx) / 0.4) ** 2 + ((yy - cy) / 0.3) ** 2 <= 1.0
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    shrink = 1.0 - 0.5 * abs(z - 0.5)
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ((xx - cx - side * 0.19) / (0.14 * shrink)) ** 2 + ((yy - cy + 0.02) / (0.22 * shrink)) ** 2 <= 1
    hu[lungs] = -850.0 + 40.0 * gaussian_filter(rng.normal(0, 1, hu.shape), 1.0)[lungs]
    for _ in range(int(rng.integers(4, 10))):  # vessels: small dense dots, in every class
        pts = np.argwhere(lungs)
        y, x = pts[int(rng.integers(len(pts)))] / px
        hu[((yy - y) ** 2 + (xx - x) ** 2 <= (0.015) ** 2) & lungs] = 30.0
    if cls == 1:  # pneumonia: dense dependent (posterior = bottom of the image) consolidation
        level = cy + float(rng.uniform(-0.05, 0.12))
        dense = lungs & (yy > level)
        if rng.random() < 0.4:  # unilateral
            dense &= (xx < cx) if rng.random() < 0.5 else (xx > cx)
        hu[dense] = 10.0 + 30.0 * rng.standard_normal(int(dense.sum())).astype(np.float32)
    elif cls == 2:  # COVID-19: faint peripheral ground-glass blobs
        for _ in range(int(rng.integers(3, 7))):
            side = (-1, 1)[int(rng.integers(2))]
            ang = float(rng.uniform(-1.2, 1.2))
            y = cy - 0.02 + 0.18 * shrink * np.sin(ang)
            x = cx + side * (0.19 + 0.1 * shrink * np.cos(ang))
            blob = (((yy - y) ** 2 + (xx - x) ** 2) <= (0.05 * shrink) ** 2) & lungs
            hu[blob] = -550.0 + 40.0 * rng.standard_normal(int(blob.sum())).astype(np.float32)
    hu += rng.normal(0, 20, hu.shape).astype(np.float32)
    img = np.rint(np.clip((hu + 1350.0) / 1500.0, 0, 1) * 255).astype(np.uint8)
    ys, xs = np.nonzero(body)
    box = (max(0, int(xs.min()) - 1), max(0, int(ys.min()) - 1), min(px, int(xs.max()) + 2), min(px, int(ys.max()) + 2))
    return img, box


def _series_names(rng, size: CorpusSize) -> list[tuple[str, str, int]]:
    """(patient id, scan prefix, class) per scan; about 10% of patients have two scans, some use STOIC naming."""
    scans = []
    for p in range(size.series):
        cls = p % 3
        n_scans = 2 if rng.random() < 0.1 else 1
        for s in range(n_scans):
            if cls != 1 and p % 7 == 6:
                scans.append((f"STOIC-{1000 + p}", f"STOIC-{1000 + p}", cls))  # one scan, other naming
                break
            pid = f"{_CNCB_PREFIX[cls]}_{100 + p}"
            scans.append((pid, f"{pid}_{2000 + 3 * p + s}", cls))
    return scans


def write_covidx_ct(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write ``3A_images/*.png`` and ``{train,val,test}_COVIDx_CT-3A.txt`` (``filename class xmin ymin xmax ymax``).

    Slices are named ``{CP|NCP|Normal}_{patient}_{scan}_{slice:04d}.png`` (CNCB) or ``STOIC-{pid}-{slice:04d}.png``;
    slice sizes differ between patients; splits are patient-disjoint (70/15/15).
    """
    rng = family_rng(seed, "covidx-ct")
    scans = _series_names(rng, size)
    patients = sorted({s[0] for s in scans})
    groups = dict(zip(("train", "val", "test"), split_patients(rng, patients, (0.7, 0.15, 0.15))))
    lines: dict[str, list[str]] = {k: [] for k in groups}
    for pid, prefix, cls in scans:
        split = next(k for k, v in groups.items() if pid in v)
        px = int(rng.choice(size.slice_px))
        n = int(rng.integers(size.slices[0], size.slices[1] + 1))
        first = int(rng.integers(10, 40))
        sep = "-" if prefix.startswith("STOIC") else "_"
        for k in range(n):
            img, box = ct_slice(rng, px, cls, (k + 0.5) / n)
            name = f"{prefix}{sep}{first + k:04d}.png"
            write_png(root / "3A_images" / name, img)
            lines[split].append(f"{name} {cls} {box[0]} {box[1]} {box[2]} {box[3]}")
    for split, rows in lines.items():
        write_text(root / f"{split}_COVIDx_CT-3A.txt", "\n".join(rows) + "\n")
    return root
