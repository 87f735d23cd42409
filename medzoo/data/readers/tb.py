"""NLM tuberculosis sets: Montgomery County (``MontgomerySet``) and Shenzhen (``ChinaSet_AllFiles``).

Both are listed by folder: ``CXR_png/{MCUCXR|CHNCXR}_####_{0|1}.png``, where the last digit is the TB label
(``_0`` normal, ``_1`` TB). ``labels["tb"]`` is that int over ``label_names["tb"] == ["normal", "tb"]``.
Hidden files (``._*``) and non-PNG files (``Thumbs.db``) are ignored; a PNG that does not follow the naming is
an error naming the file.

Masks go to ``meta["mask"]`` as a list of paths to merge with OR:

- Montgomery: ``ManualMask/leftMask/<name>`` and ``ManualMask/rightMask/<name>`` (same file name as the image).
  When the ``ManualMask`` folder exists, both masks must exist for every image.
- Shenzhen: the community set's one combined ``<stem>_mask.png`` per image, for a subset of images, looked up in
  ``mask_dir`` (default ``mask/`` or ``masks/`` next to ``CXR_png``, or under ``root``). Images without one have
  no ``mask`` key.

``root`` may be the set folder itself or its parent. ``meta["source"]`` is ``(image path, None)``.

Example:
    >>> m = open_dataset("montgomery", "/data/MontgomerySet")  # doctest: +SKIP
    >>> m[0].labels["tb"], len(m[0].meta["mask"])  # doctest: +SKIP
    (0, 2)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import make_manifest
from medzoo.data.readers._registry import DATASETS

__all__ = ["read_montgomery", "read_shenzhen", "TB_CLASSES"]

TB_CLASSES = ["normal", "tb"]


def _set_dir(root: Path, name: str) -> Path:
    if (root / "CXR_png").is_dir():
        return root
    if (root / name / "CXR_png").is_dir():
        return root / name
    raise DatasetFormatError(root, f"no CXR_png folder in {root} or {root / name}")


def _images(set_dir: Path, prefix: str, errors: ErrorCollector) -> list[tuple[str, int]]:
    pattern = re.compile(rf"^({prefix}_\d+)_([01])\.png$")
    folder = set_dir / "CXR_png"
    out = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or not name.lower().endswith(".png"):
            continue
        match = pattern.match(name)
        if match is None:
            errors.handle(DatasetFormatError(folder / name, f"unexpected image name; expected {prefix}_####_0.png "
                                             f"or {prefix}_####_1.png (last digit = TB label)"))
            continue
        out.append((name, int(match.group(2))))
    return out


def _record(set_dir: Path, name: str, tb: int, masks: list[str] | None) -> Record:
    path = os.path.abspath(set_dir / "CXR_png" / name)
    stem = name[: -len(".png")]
    meta: dict = {"source": (path, None)}
    if masks is not None:
        meta["mask"] = masks
    return Record(id=stem, patient_id=stem.rsplit("_", 1)[0], image=path, labels={"tb": tb}, meta=meta)


@DATASETS.register("montgomery")
def read_montgomery(root: Path, *, split: str | None, errors: ErrorCollector, masks: bool = True) -> Manifest:
    """Read the Montgomery County set.

    Args:
        root: ``MontgomerySet`` or its parent.
        split: no official split; must be None.
        errors: the error policy.
        masks: attach the left and right lung masks when ``ManualMask`` exists.
    """
    if split is not None:
        raise ValueError("montgomery has no official split; use medzoo.data.patient_split")
    set_dir = _set_dir(root, "MontgomerySet")
    mask_root = set_dir / "ManualMask"
    use_masks = masks and mask_root.is_dir()
    records = []
    for name, tb in _images(set_dir, "MCUCXR", errors):
        paths = [os.path.abspath(mask_root / side / name) for side in ("leftMask", "rightMask")] if use_masks else None
        missing = [p for p in paths or [] if not os.path.exists(p)]
        if missing:
            errors.handle(DatasetFormatError(set_dir / "CXR_png" / name, f"lung mask not found: {missing[0]}"))
            continue
        records.append(_record(set_dir, name, tb, paths))
    return make_manifest("montgomery", root, records, {"tb": list(TB_CLASSES)}, None, errors)


def _shenzhen_mask_dirs(root: Path, set_dir: Path, mask_dir: str | None) -> list[Path]:
    if mask_dir is not None:
        folder = root / mask_dir
        if not folder.is_dir():
            raise DatasetFormatError(folder, "mask folder not found")
        return [folder]
    return [d for d in (set_dir / "mask", set_dir / "masks", root / "mask", root / "masks") if d.is_dir()]


@DATASETS.register("shenzhen")
def read_shenzhen(root: Path, *, split: str | None, errors: ErrorCollector, mask_dir: str | None = None) -> Manifest:
    """Read the Shenzhen set.

    Args:
        root: ``ChinaSet_AllFiles`` or its parent.
        split: no official split; must be None.
        errors: the error policy.
        mask_dir: folder (relative to ``root``) of ``CHNCXR_####_{0|1}_mask.png`` community masks.
    """
    if split is not None:
        raise ValueError("shenzhen has no official split; use medzoo.data.patient_split")
    set_dir = _set_dir(root, "ChinaSet_AllFiles")
    folders = _shenzhen_mask_dirs(root, set_dir, mask_dir)
    records = []
    for name, tb in _images(set_dir, "CHNCXR", errors):
        mask_name = name[: -len(".png")] + "_mask.png"
        found = next((os.path.abspath(f / mask_name) for f in folders if (f / mask_name).exists()), None)
        records.append(_record(set_dir, name, tb, [found] if found else None))
    return make_manifest("shenzhen", root, records, {"tb": list(TB_CLASSES)}, None, errors)
