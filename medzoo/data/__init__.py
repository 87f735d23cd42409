"""Datasets: readers for the public CT and CXR formats, label harmonisation and patient-level splits.

Importing this package loads only the standard library and numpy (no torch, no image decoders).

Example:
    >>> from medzoo.data import open_dataset, patient_split, relabel, CXR_VOCABULARY
    >>> m = open_dataset("nih-cxr14", "/data/ChestX-ray14")  # doctest: +SKIP
    >>> parts = patient_split(m, seed=0)  # official test list kept, val carved out of train_val  # doctest: +SKIP
    >>> train = relabel(parts["train"], CXR_VOCABULARY)  # doctest: +SKIP
"""

from __future__ import annotations

from medzoo.data.labels import CXR_VOCABULARY, SYNONYMS, canonical_label, relabel
from medzoo.data.manifest import DatasetFormatError, Manifest, Record, SkippedRecord
from medzoo.data.readers import list_datasets, open_dataset
from medzoo.data.splits import check_leakage, patient_split
from medzoo.utils.lazy import lazy_attach

__all__ = [
    "open_dataset",
    "list_datasets",
    "Manifest",
    "Record",
    "SkippedRecord",
    "DatasetFormatError",
    "relabel",
    "canonical_label",
    "CXR_VOCABULARY",
    "SYNONYMS",
    "check_leakage",
    "patient_split",
]

# Torch/image-decoder parts load lazily, so importing medzoo.data stays light.
_LAZY = {
    "ManifestDataset": "medzoo.data.dataset",
    "collate": "medzoo.data.collate",
    "PreparedDataset": "medzoo.data.prepared",
    "prepare": "medzoo.data.prepared",
    "load_record": "medzoo.data.imageio",
    "read_image": "medzoo.data.imageio",
    "write_synthetic_corpus": "medzoo.data.synth",
}
__all__ += list(_LAZY)

__getattr__, __dir__ = lazy_attach(__name__, _LAZY, eager=__all__)
