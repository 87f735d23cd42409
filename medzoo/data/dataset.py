"""A torch Dataset over a Manifest: sample dicts with fixed keys.

Each sample is a dict:

- ``image``: float32 tensor, ``[C, *spatial]`` for an image or volume, ``[N, C, H, W]`` for a slice series;
- ``label.<task>``: float32 tensor per task, NaN when unknown (not 0, which is a label): a scalar for class and binary
  tasks (the class index as a float), ``[K]`` for multilabel and regression vectors;
- ``label.<mask_task>`` (default ``label.seg``): the segmentation mask ``[1, *spatial]`` when the record has one;
- ``meta``: a dict (``id``, ``patient_id``, ``series``, ``source``, ``spacing``...).

``pad_mask`` is added by :func:`medzoo.data.collate.collate` for series batches.

Example:
    >>> import numpy as np, tempfile, os
    >>> from medzoo.data.imageio import write_png
    >>> from medzoo.data.manifest import Manifest, Record
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> _ = write_png(p, np.zeros((8, 8), np.uint8))
    >>> m = Manifest("demo", ".", [Record("a", "p", p, {"tb": 1})], {"tb": ["tb"]})
    >>> s = ManifestDataset(m)[0]
    >>> sorted(s), float(s["label.tb"])
    (['image', 'label.tb', 'meta'], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medzoo.data.imageio import NonFinitePolicy
from medzoo.data.manifest import Manifest, Record
from medzoo.data.record_io import load_record
from medzoo.data.transforms import set_sample_seed

__all__ = ["ManifestDataset", "label_tensor", "finalize_sample"]


def label_tensor(value: Any) -> torch.Tensor:
    """A label value as a float32 tensor: None/NaN -> NaN scalar, numbers -> scalar, sequences -> vector."""
    if value is None:
        return torch.tensor(float("nan"))
    if isinstance(value, (int, float, np.integer, np.floating, bool)):
        v = float(value)
        return torch.tensor(v if not math.isnan(v) else float("nan"))
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


def _plain(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)  # read-only (memory-mapped) arrays: copy, torch needs writable memory
    t = torch.as_tensor(x)
    if hasattr(t, "as_tensor"):  # MONAI MetaTensor -> plain tensor, so collate and pickling stay cheap
        t = t.as_tensor()
    return t.to(torch.float32).contiguous()


def finalize_sample(sample: dict[str, Any], labels: dict[str, Any], tasks: Sequence[str],
                    mask_task: str) -> dict[str, Any]:
    """Turn a (transformed) ``load_record`` dict into the fixed-key sample (tensors, ``label.*``, ``meta``)."""
    out: dict[str, Any] = {"image": _plain(sample["image"])}
    for task in tasks:
        out[f"label.{task}"] = label_tensor(labels.get(task))
    if sample.get("mask") is not None:
        out[f"label.{mask_task}"] = _plain(sample["mask"])
    out["meta"] = sample.get("meta", {})
    return out


class ManifestDataset(Dataset):
    """Reads and transforms a manifest's records on every access.

    Args:
        manifest: the records.
        transform: a callable on the ``load_record`` dict (a preset from :mod:`medzoo.data.transforms`), or None.
        tasks: tasks whose labels to return (default: all of ``manifest.label_names``); a record lacking one
            gets NaN.
        slice_size: (H, W) every 2-D image or series slice is resized to before the transform (slices of one
            series may differ in size, and a batch needs one).
        seed: base seed of the per-sample augmentation seed (seed, epoch, index); see :meth:`set_epoch`.
            Call ``set_epoch`` before each epoch's DataLoader iterator starts; with ``persistent_workers=True``
            the workers keep the epoch they started with.
        mask_task: key suffix for the segmentation mask (``label.<mask_task>``).
        nonfinite: NaN/Inf policy for image files (see :func:`medzoo.data.imageio.read_image`).
    """

    def __init__(self, manifest: Manifest | Sequence[Record], transform: Callable | None = None,
                 tasks: Sequence[str] | None = None, slice_size: tuple[int, int] | None = None, seed: int = 0,
                 mask_task: str = "seg", nonfinite: NonFinitePolicy = "error") -> None:
        self.records = list(manifest)
        names = getattr(manifest, "label_names", {}) or {}
        self.tasks = list(tasks) if tasks is not None else list(names)
        self.transform, self.slice_size, self.seed, self.epoch = transform, slice_size, int(seed), 0
        self.mask_task, self.nonfinite = mask_task, nonfinite

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used in the per-sample augmentation seed."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> dict[str, Any]:
        """The untransformed ``load_record`` dict of record ``index`` (numpy arrays)."""
        return load_record(self.records[index], slice_size=self.slice_size, nonfinite=self.nonfinite)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        sample = self.load(index)
        if self.transform is not None:
            set_sample_seed(self.transform, self.seed, self.epoch, index)
            sample = self.transform(sample)
        return finalize_sample(sample, rec.labels, self.tasks, self.mask_task)
