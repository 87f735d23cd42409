"""Fuzzing every dataset reader: each mutated listing gives records or a DatasetFormatError naming file and line.

One hypothesis example mutates one line of a realistic listing (the tiny synthetic corpus, or the MIMIC / PadChest
fixtures): a dropped or extra field, a replaced field (unknown labels, numbers out of range, junk text), a ``..`` or
absolute path, non-UTF-8 bytes, a truncated or duplicated line, or an empty file. Then:

- ``on_error="raise"`` returns a manifest or raises :class:`DatasetFormatError` whose message names an existing
  file of the dataset (and a line inside it); never another exception type;
- ``on_error="skip"`` does the same, and when it returns, nothing is dropped silently: a record missing against
  the clean read means ``manifest.skipped`` lists something; a clean raise-mode read means no skips and the same
  records; a raise-mode error is the first skipped entry.

MSD ``dataset.json`` and folder-name fuzzing, and the whole-file regressions, are in ``test_readers_files.py``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from medzoo.data import open_dataset
from medzoo.data.manifest import DatasetFormatError, Manifest
from tests.robustness.readers_kit import CATEGORY, TARGETS, Target
from tests.robustness.readers_kit import check_error as _check_error
from tests.robustness.readers_kit import listing_of as _listing
from tests.robustness.readers_kit import open_reader as _open
from tests.robustness.readers_kit import read_text_bytes as _read_text_bytes
from tests.robustness.readers_kit import reader_root as _root
from tests.robustness.tally import case, outcome

JUNK = ["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1", "2", "-1.0", "1.0", "0", "9", "Bogus Finding",
        "No Finding|Mass", "['x'", "[1, 2]", "{'a'}", "../x.png", "..", ".", "/", "\x00", "ü", '"', "'", "|",
        "\U0001d518nicode", "a" * 300, "１２", "  1.0  ", "TRUE", "None"]
TEXT = st.one_of(st.sampled_from(JUNK), st.text(st.characters(blacklist_characters="\n\r",
                                                              blacklist_categories=("Cs",)), max_size=12))
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x82", b"\x80abc", b"\xed\xa0\x80"]
OPS = ["drop_field", "add_field", "replace_field", "label", "escape", "absolute", "non_utf8", "truncate",
       "duplicate", "swap_delim", "empty_file", "header_only"]


def _write_text_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _mutate_line(line: bytes, op: str, target: Target, text: str, pos: int, k: int) -> bytes:
    if op == "non_utf8":
        cut = pos % (len(line) + 1)
        return line[:cut] + BAD_BYTES[k % len(BAD_BYTES)] + line[cut:]
    if op == "truncate":
        return line[: max(1, pos % max(1, len(line)))]
    s = line.decode("utf-8")
    fields = s.split(target.delim)
    i = pos % len(fields)
    if op == "drop_field" and len(fields) > 1:
        del fields[i]
    elif op == "add_field":
        fields.insert(i, text)
    elif op == "replace_field":
        fields[i] = text
    elif op == "label":
        fields[min(target.label_field, len(fields) - 1)] = text
    elif op == "escape":
        j = min(target.path_field, len(fields) - 1)
        fields[j] = "../" * (1 + k % 4) + os.path.basename(fields[j] or "x.png")
    elif op == "absolute":
        j = min(target.path_field, len(fields) - 1)
        fields[j] = "/etc/" + os.path.basename(fields[j] or "x.png")
    elif op == "swap_delim":
        return s.replace(target.delim, ";" if k % 2 else "\t", 1).encode("utf-8")
    return target.delim.join(fields).encode("utf-8")


def _mutate(data: bytes, op: str, target: Target, line_pick: int, text: str, pos: int, k: int) -> tuple[bytes, int]:
    """The mutated file and the 1-based mutated line (0 for whole-file mutations)."""
    if op == "empty_file":
        return b"", 0
    lines = data.split(b"\n")
    body = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(b"#")]
    if op == "header_only":
        return b"\n".join(lines[: body[0] + 1]) + b"\n", 0
    idx = body[line_pick % len(body)]
    new = _mutate_line(lines[idx], op, target, text, pos, k)
    if not new.strip() or new.lstrip().startswith(b"#"):
        new = b"x" + new  # a blank or comment line is not a record; keep the case a record line
    if op == "duplicate":
        lines.insert(idx, lines[idx])
    else:
        lines[idx] = new
    return b"\n".join(lines), idx + 1


def _dataset_dir(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    return root.parent if root.is_file() or target.kind == "chexpert" else root


def _ids(m: Manifest) -> set[str]:
    return {r.id for r in m}


@pytest.fixture(scope="module")
def baselines(corpus: dict[str, Path]) -> dict[str, set[str]]:
    out = {}
    for name, target in TARGETS.items():
        m = open_dataset(target.kind, _root(target, corpus), on_error="skip", **target.options)
        assert len(m) > 0 and not m.skipped, (name, m.skipped)
        out[name] = _ids(m)
    return out


def _check_modes(name: str, target: Target, corpus: dict[str, Path], base_ids: set[str] | None) -> None:
    root, ddir = _root(target, corpus), _dataset_dir(target, corpus)
    strict = _open(target, root, "raise")
    lenient = _open(target, root, "skip")
    what = f"{name}: one mutated line / empty file"
    outcome(CATEGORY, what, "read" if isinstance(strict, Manifest) else
            "skipped" if isinstance(lenient, Manifest) else "file-level error")
    if isinstance(strict, DatasetFormatError):
        _check_error(strict, ddir)
    if isinstance(lenient, DatasetFormatError):
        _check_error(lenient, ddir)
        assert isinstance(strict, DatasetFormatError), f"{name}: skip mode raised where raise mode read: {lenient}"
        return
    for s in lenient.skipped:
        _check_error(DatasetFormatError(s.path, s.reason, s.line), ddir)
    if isinstance(strict, Manifest):
        assert not lenient.skipped and _ids(lenient) == _ids(strict), name
    else:
        assert lenient.skipped, f"{name}: raise mode failed ({strict}) but skip mode skipped nothing"
        first = lenient.skipped[0]
        assert (first.path, first.line) == (strict.path, strict.line), (first, strict)
    dropped = base_ids - _ids(lenient) if base_ids is not None else set()
    assert not dropped or lenient.skipped, f"{name}: records {sorted(dropped)[:3]} vanished without a skip entry"


@pytest.mark.parametrize("name", sorted(TARGETS))
@given(op=st.sampled_from(OPS), line_pick=st.integers(0, 10_000), text=TEXT, pos=st.integers(0, 10_000),
       k=st.integers(0, 100))
def test_reader_mutations(name: str, op: str, line_pick: int, text: str, pos: int, k: int,
                          corpus: dict[str, Path], baselines: dict[str, set[str]]) -> None:
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    mutated, _ = _mutate(_read_text_bytes(listing), op, target, line_pick, text, pos, k)
    assume(mutated != _read_text_bytes(listing))
    with case(CATEGORY, f"{name}: one mutated line / empty file"):
        try:
            _write_text_bytes(listing, mutated)
            _check_modes(name, target, corpus, baselines[name] if op != "header_only" else None)
        finally:
            listing.write_bytes(original)


@pytest.mark.parametrize("name, value", [("chexpert/train.csv", ""), ("chexpert/train.csv", "LL"),
                                         ("mimic-cxr-jpg/metadata", ""), ("mimic-cxr-jpg/metadata", "LATERAL"),
                                         ("padchest", ""), ("padchest", "L")])
def test_mutated_view_cell_is_read_not_dropped(name: str, value: str, corpus: dict[str, Path],
                                               baselines: dict[str, set[str]]) -> None:
    """Regression: the frontal-only default left out an image whose view cell was blanked, and the fuzzer counted
    it as a silent drop. With ``views="*"`` every record stays; the default does filter the mutated row, which is
    why the target needs the option."""
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    lines = original.split(b"\n")
    row = next(i for i, ln in enumerate(lines) if i > 0 and ln.strip()
               and ln.split(b",")[target.view_field] in (b"PA", b"AP"))
    fields = lines[row].split(b",")
    fields[target.view_field] = value.encode()
    lines[row] = b",".join(fields)
    frontal = len(open_dataset(target.kind, _root(target, corpus), on_error="skip"))
    with case(CATEGORY, f"{name}: one mutated line / empty file"):
        try:
            listing.write_bytes(b"\n".join(lines))
            _check_modes(name, target, corpus, baselines[name])
            assert _ids(open_dataset(target.kind, _root(target, corpus), **target.options)) == baselines[name]
            assert len(open_dataset(target.kind, _root(target, corpus), on_error="skip")) == frontal - 1
        finally:
            listing.write_bytes(original)
