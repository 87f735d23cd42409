"""Listings: a UTF-8 byte-order mark in a predict listing (Excel's "CSV UTF-8"), and special files (a FIFO,
``/dev/zero``) where a dataset listing is expected.

Before: the BOM stuck to the first header name, so an ``id,path`` listing lost its ids silently (outputs named after
the file stems) and a ``path`` listing fed its header row to predict as an input. A FIFO listing hung the reader, and
``/dev/zero`` grew it to 1.5 GB in 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medzoo.cli.main import main
from medzoo.data import open_dataset
from medzoo.data.imageio import write_png
from medzoo.data.manifest import DatasetFormatError
from medzoo.infer.inputs import discover_inputs
from tests.robustness.exports import tiny_export
from tests.robustness.tally import case, note

CATEGORY = "listings"
BOM = "\ufeff"


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    return [write_png(tmp_path / f"img{i}.png", (rng.random((40, 40)) * 255).astype(np.uint8)) for i in range(2)]


@pytest.mark.parametrize("header", ["id,path", "path,id"])
def test_bom_listing_keeps_its_id_column(images: list[Path], tmp_path: Path, header: str) -> None:
    listing = tmp_path / "list.csv"
    rows = [f"case{i},{p.name}" if header == "id,path" else f"{p.name},case{i}" for i, p in enumerate(images)]
    listing.write_text(BOM + "\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")  # as Excel writes it
    note(CATEGORY, "UTF-8 BOM", "read as utf-8-sig, like the dataset readers: the first header keeps its name")
    with case(CATEGORY, f"UTF-8 BOM + CRLF listing, header {header}"):
        items, errors = discover_inputs([listing])
        assert errors == []
        assert [i.id for i in items] == ["case0", "case1"]


def test_bom_listing_without_id_reads_no_header_as_input(images: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(BOM + "path\n" + "".join(f"{p.name}\n" for p in images), encoding="utf-8")
    with case(CATEGORY, "UTF-8 BOM listing, header path"):
        items, errors = discover_inputs([listing])
        assert errors == []
        assert [Path(i.path).name for i in items] == ["img0.png", "img1.png"]


def test_predict_names_outputs_from_a_bom_listing(images: list[Path], tmp_path: Path) -> None:
    """Through ``medzoo predict``: the ids of the BOM listing name the predictions, and every input runs."""
    listing = tmp_path / "list.csv"
    listing.write_text(BOM + "id,path\n" + "".join(f"case{i},{p.name}\n" for i, p in enumerate(images)),
                       encoding="utf-8")
    with case(CATEGORY, "UTF-8 BOM listing through `medzoo predict`"):
        rc = main(["-q", "predict", "--model", str(tiny_export(tmp_path, "cxr")), str(listing), "--out",
                   str(tmp_path / "out")])
        assert rc == 0
        records = json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]
        assert sorted(r["id"] for r in records) == ["case0", "case1"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom", "folder"])
def test_special_file_as_dataset_listing_is_refused(corpus: dict[str, Path], tmp_path: Path, special: str) -> None:
    """``Data_Entry_2017_v2020.csv`` replaced by a FIFO (nobody writes to it), a link to an endless device, or a
    folder: a one-line error naming it, at once (the timeout catches a hang)."""
    root = shutil.copytree(corpus["nih-cxr14"], tmp_path / "nih")
    listing = root / "Data_Entry_2017_v2020.csv"
    listing.unlink()
    if special == "fifo":
        os.mkfifo(listing)
    elif special == "folder":
        listing.mkdir()
    else:
        listing.symlink_to(special)
    note(CATEGORY, "special file", "refused before reading: not a regular file")
    with case(CATEGORY, f"special file as a dataset listing: {special}"):
        with pytest.raises(DatasetFormatError, match="Data_Entry_2017_v2020.csv"):
            open_dataset("nih-cxr14", root)
