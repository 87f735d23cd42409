"""Prediction tables written as inputs finish, so a killed run keeps every finished input and ``--resume`` completes it.

:class:`PredictionSink` appends each finished input to two tables under the output folder:

- ``predictions.jsonl``: one strict-JSON record per line (the record of ``predictions.json``);
- ``predictions.csv``: that record's rows (:data:`~medzoo.infer.writers.CSV_COLUMNS`, RFC 4180: CRLF line ends,
  so a carriage return inside a file name is quoted and never splits a row).

An input is committed in this order: its masks (each written atomically), its CSV rows, then its JSONL line; so a
JSONL line is the proof that the input is complete. Both files are flushed after each input (a SIGKILL loses at most
the input being written). A failed append (a full disk) cuts both files back to their last complete input and raises
an ``OSError`` naming the file. :meth:`PredictionSink.finish` writes ``predictions.json`` (every committed record plus
the inputs that failed) atomically.

With ``resume=True`` the tables of an earlier run are read back: its committed records whose masks are all on disk
are kept (and their inputs skipped), a torn last line or orphan CSV rows are dropped, and both tables are rewritten
from the kept records before new inputs are appended.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> sink = PredictionSink(out)
    >>> sink.append({"id": "a", "path": "a.png", "kind": "image", "source": "a.png", "tasks": {}})
    >>> sink.finish([])[1].name, PredictionSink(out, resume=True).is_done("a", "a.png")
    ('predictions.json', True)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medzoo.infer.writers import CSV_COLUMNS, prediction_rows
from medzoo.utils.atomic import atomic_write, naming_path
from medzoo.utils.jsonio import dumps_strict

__all__ = ["PredictionSink", "csv_text", "table_stem"]

log = logging.getLogger(__name__)


def table_stem(shard: tuple[int, int] | None = None) -> str:
    """``predictions``, or ``predictions-K-of-N`` for shard K of N (shards can share one output folder)."""
    return "predictions" if shard is None else f"predictions-{shard[0]}-of-{shard[1]}"


def csv_text(rows: Sequence[dict[str, Any]], header: bool = False) -> str:
    """``rows`` as RFC 4180 CSV text (CRLF line ends: the csv module quotes a field holding CR only then)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _mask_files(record: dict[str, Any], masks: Path) -> list[Path]:
    """The mask files a record names, looked up in ``masks`` (the record may hold a path relative to another cwd)."""
    return [masks / Path(e["mask"]).name for e in record.get("tasks", {}).values() if e.get("mask")]


def _sweep_temp_files(folder: Path) -> None:
    """Remove the temp files (``.NAME.tmpPID``) that a killed run's atomic writes left, unless their process is
    still running here (another shard writing into the same folder)."""
    for tmp in folder.glob(".*.tmp*") if folder.is_dir() else ():
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a killed run", tmp)
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class PredictionSink:
    """Append-as-you-go prediction tables (see the module docstring).

    Args:
        out: the output folder (created if needed).
        resume: keep the complete records of an earlier run (else the tables start empty).
        stem: the tables' file stem (:func:`table_stem`).
    """

    def __init__(self, out: str | Path, *, resume: bool = False, stem: str = "predictions") -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.jsonl_path = self.out / f"{stem}.csv", self.out / f"{stem}.jsonl"
        self.json_path = self.out / f"{stem}.json"
        self.records: list[dict[str, Any]] = self._recover() if resume else []
        self._done = {(r["id"], r["path"]) for r in self.records}
        atomic_write(self.csv_path, csv_text([row for r in self.records for row in prediction_rows(r)], header=True))
        atomic_write(self.jsonl_path, "".join(dumps_strict(r) + "\n" for r in self.records))
        # Unbuffered: every byte is in the kernel when append() returns (a SIGKILL keeps it), and a failed write
        # leaves no buffered tail that a later flush or close would add after the cut.
        self._csv = open(self.csv_path, "ab", buffering=0)  # noqa: SIM115  (closed by finish/close)
        self._jsonl = open(self.jsonl_path, "ab", buffering=0)  # noqa: SIM115

    def _recover(self) -> list[dict[str, Any]]:
        """The earlier run's committed records whose masks are all on disk."""
        masks = self.out / "masks"
        _sweep_temp_files(masks)
        if not self.jsonl_path.exists():
            return []
        kept = []
        with naming_path(self.jsonl_path):
            data = self.jsonl_path.read_bytes()
        for line_no, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # only the last line can be torn: the run was killed while writing it
                log.warning("%s:%d: torn record dropped; its input runs again", self.jsonl_path, line_no)
                continue
            missing = [p for p in _mask_files(record, masks) if not p.is_file()]
            if missing:
                log.warning("%s: mask %s missing; the input runs again", record.get("id"), missing[0])
                continue
            kept.append(record)
        log.info("resuming: %d input(s) already complete in %s", len(kept), self.jsonl_path)
        return kept

    def is_done(self, item_id: str, path: str) -> bool:
        """Whether an input (its id and path) is already committed."""
        return (item_id, path) in self._done

    def append(self, record: dict[str, Any]) -> None:
        """Commit one finished input: its CSV rows, then its JSONL line, each flushed.

        Raises:
            OSError: a write failed (a full disk); both tables are cut back to the last complete input and the error
                names the file.
        """
        ends = (os.fstat(self._csv.fileno()).st_size, os.fstat(self._jsonl.fileno()).st_size)
        try:
            for fh, path, text in ((self._csv, self.csv_path, csv_text(prediction_rows(record))),
                                   (self._jsonl, self.jsonl_path, dumps_strict(record) + "\n")):
                data = memoryview(text.encode("utf-8"))
                with naming_path(path):
                    while data:
                        data = data[fh.write(data):]
        except OSError:
            self._cut_back(*ends)
            raise
        self.records.append(record)
        self._done.add((record["id"], record["path"]))

    def _cut_back(self, csv_end: int, jsonl_end: int) -> None:
        for fh, end in ((self._csv, csv_end), (self._jsonl, jsonl_end)):
            try:
                os.ftruncate(fh.fileno(), end)
            except OSError as err:  # truncating frees space, so this is rare; a resume drops a torn line anyway
                log.error("could not cut %s back to its last complete input: %s", fh.name, err)

    def finish(self, errors: Sequence[tuple[str, str]]) -> tuple[Path, Path]:
        """Close the tables and write ``predictions.json``: every committed record, and the inputs that failed."""
        self.close()
        payload = {"predictions": self.records, "errors": [{"input": w, "error": m} for w, m in errors]}
        atomic_write(self.json_path, dumps_strict(payload, indent=2))  # strict JSON: a bare NaN fails parsers
        return self.csv_path, self.json_path

    def close(self) -> None:
        """Close the table files (idempotent)."""
        for fh in (self._csv, self._jsonl):
            try:
                fh.close()
            except OSError as err:
                log.error("closing %s: %s", fh.name, err)
