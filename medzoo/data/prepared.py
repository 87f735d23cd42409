"""A prepared, memory-mappable cache: decode and preprocess once, then read arrays with ``np.load(mmap_mode="r")``.

Layout of ``out_dir``::

    index.json                      # format, fingerprint, label names, and per sample: id, files, labels, meta
    parts/part-00000/000000.image.npy
    parts/part-00000/000000.mask.npy   # only for records with a mask
    parts/part-00000/part.json         # the part's sample entries (index.json is assembled from these)

Writing is atomic: everything is built in a sibling staging folder ``.<name>.partial``; each part is written to
``part-XXXXX.tmp`` and renamed when complete; ``index.json`` is written last and the staging folder is renamed to
``out_dir``. A killed run leaves ``out_dir`` untouched; re-running reuses the finished parts (when the
fingerprint of manifest, transform and options is unchanged) and a finished cache is returned at once.

The cache is keyed on content, not names: besides the records and options, ``index.json`` holds
:func:`~medzoo.data.fingerprint.records_fingerprint` (every image and mask's size and mtime, each listing's sha256).
A cache of the same dataset (kind, root, split) and options whose records or files changed since it was built (an
image overwritten in place, a relabelled listing) is rebuilt, with a warning; a cache of another dataset or other
options is replaced only with ``overwrite``. A write that fails (a full disk) names the file, and removes the
unfinished part.

:class:`PreparedDataset` gives the same sample dicts as :class:`~medzoo.data.dataset.ManifestDataset` with the
same (deterministic) transform; with ``dtype="float32"`` the tensors are equal, with ``"uint8"`` (images in
[0, 1] stored as round(255 x)) within 1/510. Training augmentations go on top (``PreparedDataset(transform=...)``).

Example:
    >>> import numpy as np, tempfile, os
    >>> from medzoo.data.imageio import write_png
    >>> from medzoo.data.manifest import Manifest, Record
    >>> from medzoo.data.transforms import cxr_preset
    >>> d = tempfile.mkdtemp()
    >>> _ = write_png(os.path.join(d, "a.png"), np.full((32, 32), 51, np.uint8))
    >>> m = Manifest("demo", d, [Record("a", "p", os.path.join(d, "a.png"), {"tb": 1})], {"tb": ["tb"]})
    >>> out = prepare(m, os.path.join(d, "cache"), transform=cxr_preset(train=False, size=16))
    >>> s = PreparedDataset(out)[0]
    >>> tuple(s["image"].shape), round(float(s["image"][0, 0, 0]), 3), float(s["label.tb"])
    ((1, 16, 16), 0.2, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medzoo.data.budget import MAX_VOLUME_BYTES, check_budget
from medzoo.data.dataset import ManifestDataset, finalize_sample
from medzoo.data.fingerprint import records_fingerprint
from medzoo.data.manifest import DatasetFormatError, Manifest
from medzoo.data.transforms import set_sample_seed
from medzoo.utils.atomic import atomic_write, naming_path

__all__ = ["prepare", "PreparedDataset", "describe_transform", "FORMAT_VERSION"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_DTYPES = ("float32", "uint8")


def describe_transform(t: Any) -> str:
    """A stable text description of a transform (class names and simple parameters), for the fingerprint."""
    if t is None:
        return "None"
    inner = getattr(t, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return f"{type(t).__name__}[{', '.join(describe_transform(x) for x in inner)}]"
    simple = (int, float, str, bool, type(None))
    params = {k: v for k, v in sorted(vars(t).items()) if not k.startswith("_") and k != "R"
              and (isinstance(v, simple) or (isinstance(v, (tuple, list)) and all(isinstance(x, simple) for x in v)))}
    return f"{type(t).__name__}{params}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, (os.PathLike, Path)):
        return str(x)
    return x if isinstance(x, (int, str, bool, type(None))) else repr(x)


def _setup(manifest: Manifest | Sequence, options: dict[str, Any]) -> str:
    """Which cache this is, whatever the files hold: the options and the dataset (kind, root, split), or for a plain
    list of records their ids."""
    if isinstance(manifest, Manifest):
        which: Any = [manifest.kind, str(manifest.root), manifest.split]
    else:
        which = sorted(str(r.id) for r in manifest)
    return hashlib.sha256(json.dumps([_jsonable(options), which], sort_keys=True).encode()).hexdigest()


def _fingerprint(manifest: Manifest | Sequence, options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(_jsonable(options), sort_keys=True).encode())
    for r in manifest:
        row = [r.id, r.patient_id, r.image, r.labels, r.meta]
        h.update(json.dumps(_jsonable(row), sort_keys=True, default=repr).encode())
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


def _store_image(arr: torch.Tensor, dtype: str) -> np.ndarray:
    a = arr.numpy()
    if dtype == "uint8":
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    return a.astype(np.float32, copy=False)


def _identity(sample: Any) -> Any:
    return sample


def _store_mask(mask: torch.Tensor) -> np.ndarray:
    m = mask.numpy()
    if np.all(m == np.round(m)) and m.min(initial=0) >= 0 and m.max(initial=0) <= 255:
        return m.astype(np.uint8)  # label maps: 4x smaller, exact
    return m.astype(np.float32)


@dataclass
class _Failure:
    """A sample that could not be read, passed back from a DataLoader worker as data (see :class:`_Guarded`)."""

    path: str
    reason: str
    line: int | None


class _Guarded(Dataset):
    """Returns a :class:`_Failure` for an unreadable sample instead of raising.

    A worker's exception reaches the main process as a RuntimeError holding the worker's whole traceback; passed
    as data, it is raised again in the main process as the one-line DatasetFormatError it was.
    """

    def __init__(self, ds: ManifestDataset, indices: range) -> None:
        self.ds, self.indices = ds, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[self.indices[i]]
        except DatasetFormatError as err:
            return _Failure(err.path, err.reason, err.line)


def _write_part(ds: ManifestDataset, indices: range, part_dir: Path, dtype: str, workers: int) -> list[dict]:
    tmp = part_dir.with_name(part_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        entries = _fill_part(ds, indices, tmp, part_dir.name, dtype, workers)
        _write_json(tmp / "part.json", entries)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # after a full disk: give the space back
        raise
    os.replace(tmp, part_dir)
    return entries


def _save(path: Path, arr: np.ndarray) -> None:
    with naming_path(path):
        np.save(path, arr)


def _fill_part(ds: ManifestDataset, indices: range, tmp: Path, part: str, dtype: str, workers: int) -> list[dict]:
    loader = torch.utils.data.DataLoader(_Guarded(ds, indices), batch_size=None, num_workers=workers,
                                         collate_fn=_identity)
    entries, seg_key = [], f"label.{ds.mask_task}"
    for i, sample in zip(indices, loader):
        if isinstance(sample, _Failure):
            raise DatasetFormatError(sample.path, sample.reason, sample.line)
        rel = f"parts/{part}/{i:06d}"
        _save(tmp / f"{i:06d}.image.npy", _store_image(sample["image"], dtype))
        entry: dict[str, Any] = {"index": i, "image": f"{rel}.image.npy", "mask": None, "labels": {}}
        if seg_key in sample:
            _save(tmp / f"{i:06d}.mask.npy", _store_mask(sample[seg_key]))
            entry["mask"] = f"{rel}.mask.npy"
        for key, value in sample.items():
            if key.startswith("label.") and key != seg_key:
                entry["labels"][key[6:]] = {"shape": list(value.shape), "values": _jsonable(value.flatten())}
        entry["meta"] = _jsonable(sample["meta"])
        entries.append(entry)
    return entries


def _read_index(path: Path) -> dict[str, Any]:
    """Parse ``index.json``; a corrupt one raises a ValueError naming it."""
    try:
        index = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: corrupt prepared-cache index ({exc}); re-run prepare with overwrite=True "
                         "(--overwrite)") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path}: corrupt prepared-cache index (a JSON {type(index).__name__}, expected an object)")
    return index


def _cache_state(out: Path, keys: dict[str, str]) -> str:
    """``"fresh"``: a finished cache of these records, options and file contents; ``"stale"``: a cache of this
    dataset and options (``keys["setup"]``) whose records or files changed since; ``"other"``: anything else."""
    index = out / "index.json"
    if not index.exists():
        return "other"
    try:
        found = _read_index(index)
    except ValueError:
        return "other"  # a corrupt index is no finished cache: rebuilt with overwrite, else FileExistsError
    if all(found.get(k) == v for k, v in keys.items()):
        return "fresh"
    return "stale" if found.get("setup") == keys["setup"] else "other"


def prepare(manifest: Manifest | Sequence, out_dir: str | os.PathLike, *, transform: Callable | None = None,
            slice_size: tuple[int, int] | None = None, tasks: Sequence[str] | None = None, dtype: str = "float32",
            part_size: int = 64, workers: int = 0, overwrite: bool = False, mask_task: str = "seg",
            progress: bool = False) -> Path:
    """Decode, preprocess and store every record of ``manifest`` as memory-mappable ``.npy`` arrays.

    Args:
        manifest: the records (a Manifest keeps its kind and label names in the index).
        out_dir: the cache folder (created atomically).
        transform: a deterministic preset, e.g. ``cxr_preset(train=False)``; augmentations belong on the
            :class:`PreparedDataset`, not here.
        slice_size: resize 2-D images / series slices before the transform (as in ``ManifestDataset``).
        tasks: the tasks to keep (default: all).
        dtype: ``"float32"`` (exact) or ``"uint8"`` (images in [0, 1] quantised to 1/255; 4x smaller).
        part_size: samples per part (the unit that a re-run skips when already written).
        workers: DataLoader workers used to decode.
        overwrite: replace an existing cache built from other inputs (otherwise that is an error).
        mask_task: as in ``ManifestDataset``.
        progress: show a tqdm bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        FileExistsError: ``out_dir`` holds a different cache (or other files) and ``overwrite`` is False.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    out = Path(out_dir)
    ds = ManifestDataset(manifest, transform=transform, tasks=tasks, slice_size=slice_size, mask_task=mask_task)
    options = {"version": FORMAT_VERSION, "transform": describe_transform(transform), "slice_size": slice_size,
               "tasks": ds.tasks, "dtype": dtype, "part_size": part_size, "mask_task": mask_task}
    keys = {"setup": _setup(manifest, options), "fingerprint": _fingerprint(manifest, options),
            "inputs": records_fingerprint(manifest)}
    state = _cache_state(out, keys)
    if state == "fresh":
        log.info("prepared cache %s is up to date (%d samples)", out, len(ds))
        return out
    if state == "stale":
        log.warning("prepared cache %s: its records or input files changed since it was built (labels, sizes, "
                    "times or listing contents differ); rebuilding it", out)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and holds another cache or other files; pass overwrite=True "
                              f"(--overwrite) to replace it")
    staging = _staging(out, " ".join(keys.values()))
    entries = _write_parts(ds, staging, dtype, part_size, workers, progress)
    names = dict(getattr(manifest, "label_names", {}) or {})
    index = {"format": "medzoo-prepared", "version": FORMAT_VERSION, **keys, "dtype": dtype,
             "kind": getattr(manifest, "kind", None),
             "label_names": {t: names.get(t) for t in ds.tasks},
             "tasks": ds.tasks, "mask_task": mask_task, "options": _jsonable(options), "samples": entries}
    _write_json(staging / "index.json", index)
    _swap_in(staging, out)
    log.info("prepared %d samples into %s", len(entries), out)
    return out


def _staging(out: Path, key: str) -> Path:
    """The staging folder, keeping the finished parts of a cut run of the same records, options and contents."""
    staging = out.with_name(f".{out.name}.partial")
    stamp = staging / "fingerprint"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(staging)
    (staging / "parts").mkdir(parents=True, exist_ok=True)
    atomic_write(stamp, key)
    return staging


def _write_parts(ds: ManifestDataset, staging: Path, dtype: str, part_size: int, workers: int,
                 progress: bool) -> list[dict]:
    n = len(ds)
    starts = range(0, n, part_size)
    entries: list[dict] = []
    bar = tqdm(total=n, desc="prepare", unit="sample", disable=not progress)
    for p, start in enumerate(starts):
        part_dir = staging / "parts" / f"part-{p:05d}"
        indices = range(start, min(start + part_size, n))
        if (part_dir / "part.json").exists():
            entries += json.loads((part_dir / "part.json").read_text())
            log.debug("reusing finished part %s", part_dir.name)
        else:
            entries += _write_part(ds, indices, part_dir, dtype, workers)
        bar.update(len(indices))
    bar.close()
    return entries


def _swap_in(staging: Path, out: Path) -> None:
    (staging / "fingerprint").unlink()
    if out.exists():
        trash = out.with_name(f".{out.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


class PreparedDataset(Dataset):
    """Samples from a cache written by :func:`prepare` (arrays memory-mapped, copied per access).

    Args:
        out_dir: the cache folder.
        transform: optional augmentation applied to ``{"image", "mask", "meta"}`` after loading, seeded per
            sample from (seed, epoch, index) like ``ManifestDataset``.
        seed: base augmentation seed.

    Raises:
        FileNotFoundError: no finished cache (``index.json``) in ``out_dir``.
    """

    def __init__(self, out_dir: str | os.PathLike, transform: Callable | None = None, seed: int = 0) -> None:
        self.root = Path(out_dir)
        index_path = self.root / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path}: no prepared cache here (run `medzoo prepare` first)")
        self.index = _read_index(index_path)
        if self.index.get("format") != "medzoo-prepared" or self.index.get("version") != FORMAT_VERSION:
            raise ValueError(f"{index_path}: not a medzoo prepared cache of version {FORMAT_VERSION}")
        self.samples: list[dict] = self.index["samples"]
        self.tasks: list[str] = list(self.index["tasks"])
        self.label_names: dict[str, Any] = self.index["label_names"]
        self.mask_task: str = self.index["mask_task"]
        self.transform, self.seed, self.epoch = transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used in the per-sample augmentation seed."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _array(self, rel: str) -> np.ndarray:
        path = self.root / rel
        try:
            mapped = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise
        except (ValueError, EOFError, OSError) as exc:  # cut or corrupt .npy (numpy names no file)
            raise ValueError(f"{path}: corrupt prepared-cache array ({type(exc).__name__}: {exc}); re-run "
                             "prepare with overwrite=True (--overwrite)") from None
        # A sparse file maps without using disk, so the copy below is the first real allocation: check it first.
        check_budget(path, MAX_VOLUME_BYTES, mapped.nbytes, f"array {mapped.shape} x {mapped.dtype}")
        return np.array(mapped)  # copy out of the read-only map

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.samples[index]
        image = self._array(entry["image"])
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
        sample: dict[str, Any] = {"image": torch.from_numpy(image), "meta": dict(entry["meta"])}
        if entry.get("mask"):
            sample["mask"] = torch.from_numpy(self._array(entry["mask"]).astype(np.float32))
        if self.transform is not None:
            set_sample_seed(self.transform, self.seed, self.epoch, index)
            sample = self.transform(sample)
        labels = {task: _label_value(v) for task, v in entry["labels"].items()}
        return finalize_sample(sample, labels, self.tasks, self.mask_task)


def _label_value(stored: dict[str, Any]) -> Any:
    values = np.array([np.nan if v is None else v for v in stored["values"]], dtype=np.float32)
    return values.reshape(stored["shape"]) if stored["shape"] else float(values[0])
