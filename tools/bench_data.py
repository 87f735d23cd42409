"""Data-loading benchmark: the prepared cache against decoding every epoch, and the default CT pipeline against
a MedicalNet-style loader (``scipy.ndimage.zoom`` in ``__getitem__``).

Sets are synthetic but realistic in size (decoding cost grows with the real sizes): 1024x1024 8-bit PNG chest X-rays and
gzipped NIfTI CT volumes of 256x256x128 int16. Throughput is samples/s through a ``DataLoader`` with 2 workers
(persistent, warmed up). A and B epochs are interleaved, alternating which goes first, for at least 11 repeats; the
ratio is the median of the per-repeat ratios B/A.

Run: ``python tools/bench_data.py [--quick]``; ``tools/bench.py data`` calls :func:`bench_data`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medzoo.data.collate import collate
from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import write_nifti, write_png
from medzoo.data.manifest import Manifest, Record
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.transforms import ct_preset, cxr_preset

__all__ = ["bench_data", "MedicalNetStyleDataset"]

log = logging.getLogger("bench_data")
CT_SHAPE, CT_SPACING, CT_PATCH = (256, 256, 128), (0.8, 0.8, 2.5), (96, 96, 96)


def _cxr_set(root: Path, n: int) -> Manifest:
    from scipy.ndimage import zoom

    from medzoo.data.synth._cxr_draw import FINDINGS, draw_findings, to_uint

    rng, names, recs = np.random.default_rng(0), list(FINDINGS), []
    for i in range(n):
        img, _, _, _ = draw_findings([names[i % len(names)]], rng, 256, 256)
        big = zoom(img, 4, order=1) + rng.normal(0, 0.02, (1024, 1024)).astype(np.float32)
        write_png(root / f"{i:08d}_000.png", to_uint(big))
        recs.append(Record(f"{i:08d}_000.png", str(i), str(root / f"{i:08d}_000.png"), {"findings": [i % 2, 0.0]}))
    return Manifest("bench-cxr", root, recs, {"findings": ["A", "B"]})


def _ct_set(root: Path, n: int) -> Manifest:
    from scipy.ndimage import zoom

    from medzoo.data.synth.ct import phantom_volume

    rng, recs = np.random.default_rng(0), []
    affine = np.diag([-CT_SPACING[0], -CT_SPACING[1], CT_SPACING[2], 1.0])
    for i in range(n):
        hu, _ = phantom_volume(rng, (64, 64, 32), 2)
        big = zoom(hu, 4, order=1) + rng.normal(0, 20, CT_SHAPE).astype(np.float32)
        write_nifti(root / f"ct_{i:03d}.nii.gz", np.rint(big).astype(np.int16), affine, compresslevel=1)
        recs.append(Record(f"ct_{i:03d}", str(i), str(root / f"ct_{i:03d}.nii.gz"), {"covid": i % 3}))
    return Manifest("bench-ct", root, recs, {"covid": ["Normal", "Pneumonia", "COVID-19"]})


class MedicalNetStyleDataset(Dataset):
    """A MedicalNet-style loader: nibabel to float64, crop to the non-background range, nearest ``zoom`` to the
    input size in ``__getitem__``, z-normalise over foreground voxels and fill background with N(0, 1)."""

    def __init__(self, manifest: Manifest, size: tuple[int, int, int]) -> None:
        self.records, self.size = list(manifest), size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import nibabel as nib
        from scipy.ndimage import zoom

        data = nib.load(self.records[index].image).get_fdata()
        fg = data > data.min()
        lo, hi = np.argwhere(fg).min(0), np.argwhere(fg).max(0) + 1
        data = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        data = zoom(data, [t / s for t, s in zip(self.size, data.shape)], order=0)
        pixels = data[data > 0] if (data > 0).any() else data
        out = (data - pixels.mean()) / (pixels.std() + 1e-8)
        noise = np.random.default_rng(index).normal(0, 1, out.shape)
        out[data == 0] = noise[data == 0]
        return {"image": torch.from_numpy(out.astype(np.float32))[None], "meta": {}}


def _loader(ds: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, num_workers=2, persistent_workers=True, collate_fn=collate)


def _epoch(loader: DataLoader) -> float:
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - t0)


def _interleaved(loaders: list[DataLoader], repeats: int) -> list[list[float]]:
    """Samples/s per loader and repeat; each repeat runs every loader once, in an order rotated per repeat."""
    for loader in loaders:  # warm-up: start workers, fill the page cache
        _epoch(loader)
    out: list[list[float]] = [[] for _ in loaders]
    for r in range(repeats):
        order = list(range(len(loaders)))
        order = order[r % len(order):] + order[:r % len(order)]
        for k in order:
            out[k].append(_epoch(loaders[k]))
    return out


def _row(name: str, a: str, b: str, ta: list[float], tb: list[float], target: float, n: int) -> dict[str, Any]:
    ratio = statistics.median(y / x for x, y in zip(ta, tb))
    row = {"suite": "data", "name": name, "ratio": round(ratio, 2), "target": target, "met": ratio >= target,
           "a": a, "b": b, "a_samples_per_s": round(statistics.median(ta), 2),
           "b_samples_per_s": round(statistics.median(tb), 2), "repeats": len(ta), "samples": n}
    log.info("%s", row)
    return row


def bench_data(quick: bool = True, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Measure loader throughput; returns rows ``{suite, name, ratio, target, met, a, b, *_samples_per_s, ...}``.

    Args:
        quick: fewer samples (CXR 24, CT 2) instead of (CXR 96, CT 8); repeats stay at 11.
        workdir: where to write the synthetic sets (default: a temporary folder, removed afterwards).
    """
    repeats, n_cxr, n_ct = 11, (24 if quick else 96), (2 if quick else 8)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="medzoo-bench-data-"))
    rows = []
    try:
        cxr = _cxr_set(tmp / "cxr", n_cxr)
        t_cxr = cxr_preset(train=False, size=224)
        cxr_cache = prepare(cxr, tmp / "cxr-cache", transform=t_cxr, overwrite=True)
        ta, tb = _interleaved([_loader(ManifestDataset(cxr, t_cxr), 8), _loader(PreparedDataset(cxr_cache), 8)],
                              repeats)
        rows.append(_row("cxr 1024px PNG: prepared cache vs decode every epoch", "decode", "prepared", ta, tb,
                         5.0, n_cxr))
        ct = _ct_set(tmp / "ct", n_ct)
        t_ct = ct_preset(train=False, spacing=(1.5, 1.5, 1.5), patch=CT_PATCH)
        ct_cache = prepare(ct, tmp / "ct-cache", transform=t_ct, overwrite=True)
        ta, tb, tm = _interleaved([_loader(ManifestDataset(ct, t_ct), 1), _loader(PreparedDataset(ct_cache), 1),
                                   _loader(MedicalNetStyleDataset(ct, CT_PATCH), 1)], repeats)
        rows.append(_row("ct 256x256x128 nii.gz: prepared cache vs decode every epoch", "decode", "prepared", ta, tb,
                         5.0, n_ct))
        rows.append(_row("ct default pipeline (resample to 1.5 mm) vs MedicalNet-style zoom loader",
                         "medicalnet-style", "medzoo ct_preset", tm, ta, 1.0, n_ct))
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the rows as a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rows = bench_data(quick=args.quick)
    print(f"{'benchmark':<78} {'A/s':>8} {'B/s':>8} {'ratio':>6} {'target':>6}")
    for r in rows:
        print(f"{r['name']:<78} {r['a_samples_per_s']:>8} {r['b_samples_per_s']:>8} {r['ratio']:>6} "
              f"{'>=' + str(r['target']):>6}{'' if r['met'] else '  (not met)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
