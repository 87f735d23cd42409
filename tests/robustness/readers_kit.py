"""Shared pieces of the dataset-reader attacks (``test_readers_fuzz.py``: mutated listing lines;
``test_readers_files.py``: dataset.json, folder names and whole-file damage): the listing file of each reader
(:data:`TARGETS`), where it lies in the tiny corpus, and the checks every :class:`DatasetFormatError` must pass
(it names an existing file of the dataset, and a line inside it).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.data import open_dataset
from medzoo.data.manifest import DatasetFormatError, Manifest

CATEGORY = "readers"


@dataclass
class Target:
    """One listing file of one reader, and how its lines are laid out.

    ``options`` are the reader's keyword arguments. CheXpert, MIMIC-CXR and PadChest read ``views="*"``: by default
    they keep frontal views only, so a mutated (blank, junk) view cell would leave the image out by design, which
    the fuzzer could not tell from a silent drop. ``view_field`` is the view column of those listings.
    """

    kind: str
    root_key: str
    listing: str  # relative to the corpus root of ``root_key`` (or "" when the root is the listing itself)
    delim: str
    path_field: int
    label_field: int
    options: dict = field(default_factory=dict)
    view_field: int | None = None


ALL_VIEWS = {"views": "*"}


TARGETS = {
    "nih-cxr14/Data_Entry": Target("nih-cxr14", "nih-cxr14", "Data_Entry_2017_v2020.csv", ",", 0, 1),
    "nih-cxr14/BBox_List": Target("nih-cxr14", "nih-cxr14", "BBox_List_2017.csv", ",", 0, 1),
    "nih-cxr14/train_val_list": Target("nih-cxr14", "nih-cxr14", "train_val_list.txt", " ", 0, 0),
    "chexpert/train.csv": Target("chexpert", "chexpert", "train.csv", ",", 0, 6, ALL_VIEWS, view_field=4),
    "mimic-cxr-jpg/metadata": Target("mimic-cxr-jpg", "mimic-cxr-jpg", "mimic-cxr-2.0.0-metadata.csv", ",", 0, 4,
                                     ALL_VIEWS, view_field=4),
    "mimic-cxr-jpg/chexpert.csv.gz": Target("mimic-cxr-jpg", "mimic-cxr-jpg", "mimic-cxr-2.0.0-chexpert.csv.gz", ",",
                                            1, 3, ALL_VIEWS),
    "padchest": Target("padchest", "padchest", "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", ",", 0, 8,
                       ALL_VIEWS, view_field=6),
    "vindr-cxr/train.csv": Target("vindr-cxr", "vindr-cxr", "train.csv", ",", 0, 1),
    "covidx-cxr": Target("covidx-cxr", "covidx-cxr", "train_COVIDx9A.txt", " ", 1, 2),
    "covidx-ct/slice": Target("covidx-ct", "covidx-ct", "train_COVIDx_CT-3A.txt", " ", 0, 1),
    "covidx-ct/series": Target("covidx-ct", "covidx-ct", "train_COVIDx_CT-3A.txt", " ", 0, 1, {"level": "series"}),
    "covid-severity": Target("covid-severity", "covid-severity", "annotations/covid-severity-scores.csv", ",", 0, 1),
    "medicalnet-list": Target("medicalnet-list", "medicalnet-list", "medicalnet_train.txt", " ", 0, 1),
    "nifti-folder/csv": Target("nifti-folder", "nifti-folder", "", ",", 0, 1),
    "csv/regression": Target("csv", "severity-with-masks-csv", "", ",", 0, 3,
                             {"image_col": "path", "label_cols": ["geographic_mean", "opacity_mean"],
                              "task": "severity", "type": "regression", "patient_col": "patientid",
                              "mask_col": "mask"}),
}


def reader_root(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    if target.kind == "medicalnet-list":
        return root / target.listing
    return root


def listing_of(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    return root / target.listing if target.listing else root


def read_text_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def check_error(err: DatasetFormatError, dataset_dir: Path) -> None:
    """The error names an existing file of the dataset (and a line inside it when it gives one)."""
    assert err.path and err.path in str(err), err
    p = Path(err.path)
    assert p.exists(), f"error names a file that does not exist: {err}"
    assert os.path.commonpath([os.path.abspath(p), os.path.abspath(dataset_dir)]) == os.path.abspath(dataset_dir), err
    if err.line is not None and p.is_file():
        n_lines = len(read_text_bytes(p).split(b"\n"))
        assert 1 <= err.line <= n_lines, f"line {err.line} outside {p} ({n_lines} lines): {err}"


def open_reader(target: Target, root: Path, on_error: str) -> Manifest | DatasetFormatError:
    try:
        return open_dataset(target.kind, root, on_error=on_error, **target.options)
    except DatasetFormatError as err:
        return err
