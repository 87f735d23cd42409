"""TBX11K (Liu et al., CVPR 2020): COCO-style JSON annotations with TB boxes over 512 x 512 PNGs.

Layout under ``root``: ``imgs/{health,sick,tb,test,extra}/...png`` and ``annotations/json/*.json``. A JSON file
has ``images`` (``id``, ``file_name`` relative to ``imgs/``, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox = [x, y, w, h]`` in image pixels) and ``categories``; the box categories are
``ActiveTuberculosis`` (1), ``ObsoletePulmonaryTuberculosis`` (2, latent TB) and ``PulmonaryTuberculosis``
(3, TB of unknown activity). Splits read ``{prefix}_train.json`` and ``{prefix}_val.json`` (``prefix="TBX11K"``:
the TBX11K images only; ``"all"`` adds the extra TB sets) and ``all_test.json`` (no labels: they are withheld).

The image category comes from the first folder of ``file_name``: ``health`` (healthy), ``sick`` (sick but not
TB) or ``tb``. Labels:

- ``tb``: int over ``["normal", "tb"]`` (the Montgomery/Shenzhen task; here index 0 is "not TB": healthy or sick);
- ``tbx11k``: int over :data:`TBX11K_CLASSES`;
- ``tb_type``: float vector over :data:`TB_CATEGORIES`, 1 for a category with a box, else 0; NaN for a ``tb``
  image without any box (its type is unknown).

An image in another folder (``test/``, ``extra/``) has NaN labels (``meta["labelled"] = False``) unless it has
boxes, which make it TB. A box on a ``health`` or ``sick`` image is a contradiction and an error. TBX11K has no
patient ids, so each image is its own patient (``patient_id == id``, the ``file_name``). ``meta``: ``boxes``
(``{"label", "box": (x, y, w, h)}``, the NIH box convention), ``size`` (width, height), ``official_split``,
``labelled`` and ``source`` (the JSON file; ``line`` is None).

Example:
    >>> m = open_dataset("tbx11k", "/data/TBX11K", split="val")  # doctest: +SKIP
    >>> m.label_names["tbx11k"]  # doctest: +SKIP
    ['healthy', 'sick_but_no_tb', 'tb']
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import drop_duplicate_ids, make_manifest, require_file, resolve_path
from medzoo.data.readers._registry import DATASETS
from medzoo.data.readers.tb import TB_CLASSES

__all__ = ["TB_CATEGORIES", "TBX11K_CLASSES", "read_tbx11k"]

log = logging.getLogger(__name__)

#: The box categories, in COCO ``category_id`` order (1, 2, 3).
TB_CATEGORIES = ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
#: The image categories, from the image folder.
TBX11K_CLASSES = ["healthy", "sick_but_no_tb", "tb"]
_FOLDERS = {"health": 0, "sick": 1, "tb": 2}
SPLITS = ("train", "val", "test")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(path, f"cannot read file ({e})") from None
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, f"invalid JSON ({e.msg})", e.lineno) from None
    except RecursionError:
        raise DatasetFormatError(path, "invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(path, "expected a COCO-style object with an 'images' list")
    return data


def _categories(data: dict, path: Path) -> dict[int, str]:
    out = {}
    for k, cat in enumerate(data.get("categories") or []):
        name = cat.get("name") if isinstance(cat, dict) else None
        if name not in TB_CATEGORIES or not isinstance(cat.get("id"), int):
            raise DatasetFormatError(path, f"categories[{k}]: expected an id and a name among {TB_CATEGORIES}, "
                                     f"got {cat!r}")
        out[cat["id"]] = name
    return out


def _boxes(data: dict, path: Path, categories: dict[int, str], errors: ErrorCollector) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for k, ann in enumerate(data.get("annotations") or []):
        try:
            box = ann.get("bbox") if isinstance(ann, dict) else None
            ok = (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                  and all(math.isfinite(v) for v in box) and box[2] > 0 and box[3] > 0)
            if not ok or ann.get("category_id") not in categories or not isinstance(ann.get("image_id"), (int, str)):
                raise DatasetFormatError(path, f"annotations[{k}]: expected an image_id, a category_id among "
                                         f"{sorted(categories)} and bbox [x, y, w, h] with w, h > 0, got {ann!r}")
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        out.setdefault(ann.get("image_id"), []).append(
            {"label": categories[ann["category_id"]], "box": tuple(float(v) for v in box), "source": (str(path), None)})
    return out


def _labels(folder: str, boxes: list[dict]) -> tuple[dict[str, Any], bool]:
    """(labels, labelled) of one image from its folder and boxes."""
    cls = _FOLDERS.get(folder)
    if cls is None and not boxes:
        return {"tb": math.nan, "tbx11k": math.nan, "tb_type": np.full(3, np.nan, dtype=np.float32)}, False
    tb_type = np.array([float(any(b["label"] == c for b in boxes)) for c in TB_CATEGORIES], dtype=np.float32)
    if cls == 2 and not boxes:
        tb_type[:] = np.nan
    tb = 1 if boxes or cls == 2 else 0
    return {"tb": tb, "tbx11k": 2 if boxes else cls, "tb_type": tb_type}, True


def _record(img: Any, k: int, path: Path, root: Path, boxes: dict[Any, list[dict]], split: str) -> Record:
    name = img.get("file_name") if isinstance(img, dict) else None
    if not isinstance(name, str) or not name.strip() or not isinstance(img.get("id"), (int, str)):
        raise DatasetFormatError(path, f"images[{k}]: expected an id and a file_name, got {img!r}")
    name = name.strip().replace("\\", "/")
    image = require_file(resolve_path(root / "imgs", name, path, None), path, None)
    own = boxes.get(img.get("id"), [])
    folder = name.split("/", 1)[0]
    if own and folder in ("health", "sick"):
        raise DatasetFormatError(path, f"images[{k}] ({name}) is in the {folder!r} folder but has TB boxes")
    labels, labelled = _labels(folder, own)
    meta = {"source": (str(path), None), "boxes": own, "size": (img.get("width"), img.get("height")),
            "official_split": split, "labelled": labelled}
    return Record(id=name, patient_id=name, image=image, labels=labels, meta=meta)


def _read_file(path: Path, root: Path, split: str, errors: ErrorCollector) -> list[Record]:
    data = _json(path)
    boxes = _boxes(data, path, _categories(data, path), errors)
    out = []
    for k, img in enumerate(data["images"]):
        try:
            out.append(_record(img, k, path, root, boxes, split))
        except DatasetFormatError as e:
            errors.handle(e)
    return out


@DATASETS.register("tbx11k")
def read_tbx11k(root: Path, *, split: str | None, errors: ErrorCollector, prefix: str = "TBX11K") -> Manifest:
    """Read TBX11K under ``root`` (the folder holding ``imgs/`` and ``annotations/``).

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` or None for train and val.
        errors: the error policy.
        prefix: ``"TBX11K"`` (the TBX11K images) or ``"all"`` (plus the extra TB sets) for train and val.
    """
    if split not in (None, *SPLITS):
        raise ValueError(f"tbx11k: unknown split {split!r}; expected one of {list(SPLITS)} or None")
    if prefix not in ("TBX11K", "all"):
        raise ValueError(f"tbx11k: prefix must be 'TBX11K' or 'all', got {prefix!r}")
    folder = root / "annotations" / "json"
    records: list[Record] = []
    for name in [split] if split else ["train", "val"]:
        path = folder / ("all_test.json" if name == "test" else f"{prefix}_{name}.json")
        records += _read_file(path, root, name, errors)
    unlabelled = sum(not r.meta["labelled"] for r in records)
    if unlabelled:
        log.info("tbx11k: %d image(s) outside health/, sick/ and tb/ without boxes have NaN labels", unlabelled)
    label_names = {"tb": list(TB_CLASSES), "tbx11k": list(TBX11K_CLASSES), "tb_type": list(TB_CATEGORIES)}
    records = drop_duplicate_ids(records, errors)
    return make_manifest("tbx11k", root, records, label_names, split, errors, {"tb_type"})
