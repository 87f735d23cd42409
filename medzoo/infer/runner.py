"""``predict_inputs``: a predictor over a listing at dataset scale: batched, prefetched, sharded, resumable.

- **Batches.** Images for a model with image-level tasks are read and put through the model's contract by a
  :class:`torch.utils.data.DataLoader` (``num_workers`` processes read ahead while the model runs) and reach the
  model ``batch_size`` at a time (inputs whose prepared tensors differ in shape run as separate batches). Volumes and
  slice series keep their own path: read in the main process one at a time (sliding windows, inverse resampling),
  in listing order between the image batches.
- **Shards.** ``shard=(K, N)`` runs every N-th input from the K-th (:func:`~medzoo.infer.inputs.shard_items`), after
  ids are made unique over the whole listing, so N processes or machines can share one output folder; their tables
  are ``predictions-K-of-N.*``.
- **Tables as it goes.** Each finished input is appended to ``predictions.csv`` and ``predictions.jsonl``
  (:class:`~medzoo.infer.sink.PredictionSink`) after its masks are written atomically; ``predictions.json`` is written
  at the end. A failure to write an output (a full disk) stops the run with an error naming the file; what finished
  stays on disk.
- **Resume.** ``resume=True`` skips inputs whose record and masks are complete, and runs the rest.

One bad input is reported (logged and listed in ``errors``) and the others still run.

Example:
    >>> # predict_inputs(Predictor.from_ref("export_dir"), ["listing.csv"], "out", batch_size=16, num_workers=2)
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medzoo.infer.inputs import DicomOptions, InputItem, discover_inputs, load_input, shard_items
from medzoo.infer.sink import PredictionSink, table_stem
from medzoo.infer.writers import check_finite_outputs, output_record, write_masks

__all__ = ["PredictReport", "Ready", "plan_batches", "predict_inputs", "ready_batches"]

log = logging.getLogger(__name__)


@dataclass
class PredictReport:
    """What :func:`predict_inputs` did: this run's per-input records, ``(where, message)`` errors, and how many
    inputs an earlier run had already completed (``resume``)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


@dataclass
class Ready:
    """One input as the loader hands it over: prepared (batchable inputs), failed, or still to read (the others)."""

    item: InputItem
    meta: dict[str, Any] = field(default_factory=dict)
    prepared: Any = None
    error: str | None = None


class _InputSet(Dataset):
    """Reads and prepares batchable inputs (in DataLoader workers); the others are handed over unread."""

    def __init__(self, items: Sequence[InputItem], flags: Sequence[bool], predictor: Any) -> None:
        self.items, self.flags, self.predictor = list(items), list(flags), predictor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Ready:
        item = self.items[i]
        if not self.flags[i]:
            return Ready(item)
        try:
            loaded = load_input(item)
            return Ready(item, loaded.meta, self.predictor.prepare_input(loaded))
        except Exception as err:  # noqa: BLE001  (reported for this input; the batch's others still run)
            return Ready(item, error=f"{type(err).__name__}: {err}")


def plan_batches(flags: Sequence[bool], batch_size: int) -> list[list[int]]:
    """Index batches in listing order: runs of batchable inputs cut at ``batch_size``; every other input alone.

    Example:
        >>> plan_batches([True, True, True, False, True], 2)
        [[0, 1], [2], [3], [4]]
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    batches: list[list[int]] = []
    for i, batchable in enumerate(flags):
        if batchable and batches and flags[batches[-1][0]] and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def ready_batches(items: Sequence[InputItem], predictor: Any, batch_size: int = 1,
                  num_workers: int = 0) -> Iterator[list[Ready]]:
    """Batches of :class:`Ready` inputs, read ahead by ``num_workers`` processes (none when there is at most one
    batch of images: starting workers would cost more than it saves)."""
    batchable = getattr(predictor, "batchable", None)
    flags = [bool(batchable and batchable(it)) for it in items]
    batches = plan_batches(flags, batch_size)
    workers = num_workers if sum(flags[b[0]] for b in batches) > 1 else 0
    loader = DataLoader(_InputSet(items, flags, predictor), batch_sampler=batches, collate_fn=list,
                        num_workers=workers, prefetch_factor=2 if workers else None)
    yield from loader


def predict_inputs(predictor: Any, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   progress: bool | None = None, dicom: DicomOptions | None = None, batch_size: int = 1,
                   num_workers: int = 0, shard: tuple[int, int] | None = None,
                   resume: bool = False) -> PredictReport:
    """Predict on every input, appending ``predictions.csv``/``.jsonl`` as inputs finish and writing masks under
    ``out_dir/masks`` (``{id}_{task}.nii.gz`` for volumes, ``.png`` for images), then ``predictions.json``.

    Args:
        predictor: a :class:`~medzoo.infer.predict.Predictor` or an :class:`~medzoo.infer.ensemble.Ensemble`.
        inputs: files, folders or listings (see :mod:`medzoo.infer.inputs`).
        out_dir: created if needed.
        progress: a tqdm bar over inputs (default: when stderr is a terminal).
        dicom: how to read DICOM inputs (series choice, uneven slices).
        batch_size: images per forward pass.
        num_workers: DataLoader processes reading and preparing images ahead of the model.
        shard: ``(K, N)``: run only shard K of N (from 1).
        resume: skip inputs an earlier run in ``out_dir`` completed.

    Returns:
        A :class:`PredictReport`.

    Raises:
        OSError: an output could not be written (a full disk), naming the file; every input finished before it is
            in the tables.
    """
    out = Path(out_dir)
    items, errors = discover_inputs(inputs, dicom)
    items = shard_items(items, *shard) if shard is not None else items
    report = PredictReport(errors=list(errors))
    for where, msg in errors:
        log.error("skipped %s: %s", where, msg)
    sink = PredictionSink(out, resume=resume, stem=table_stem(shard))
    todo = [it for it in items if not sink.is_done(it.id, it.path)]
    report.skipped = len(items) - len(todo)
    try:
        with tqdm(total=len(todo), desc="predict", unit="input", disable=_no_bar(progress)) as bar:
            for batch in ready_batches(todo, predictor, batch_size, num_workers):
                for ready, result in _run(predictor, batch):
                    _commit(ready, result, out, sink, report)
                bar.update(len(batch))
    except OSError as err:
        if err.errno is None:
            raise
        raise type(err)(err.errno, f"{err.strerror}; the {len(sink.records)} input(s) finished before it are in "
                                   f"{sink.jsonl_path.name}: fix the cause (free space) and run again with --resume",
                        err.filename) from err
    finally:
        sink.close()
    sink.finish(report.errors)
    return report


def _run(predictor: Any, batch: list[Ready]) -> list[tuple[Ready, Any]]:
    """``(ready, outputs or the exception)`` per input of a batch."""
    if batch[0].prepared is None and batch[0].error is None:  # a volume or series: read and run on its own
        ready = batch[0]
        try:
            loaded = load_input(ready.item)
            ready.meta = loaded.meta
            return [(ready, predictor.predict_loaded(loaded))]
        except Exception as err:  # noqa: BLE001  (one bad input is reported; the others still run)
            return [(ready, err)]
    good = [r for r in batch if r.error is None]
    try:
        outputs = predictor.predict_prepared([r.prepared for r in good]) if good else []
    except Exception:  # noqa: BLE001  (one at a time, so that only the input that fails is reported)
        outputs = [_one(predictor, r) for r in good]
    results = dict(zip(map(id, good), outputs))
    return [(r, results[id(r)] if r.error is None else r.error) for r in batch]


def _one(predictor: Any, ready: Ready) -> Any:
    try:
        return predictor.predict_prepared([ready.prepared])[0]
    except Exception as err:  # noqa: BLE001
        return err


def _commit(ready: Ready, result: Any, out: Path, sink: PredictionSink, report: PredictReport) -> None:
    """Write one input's masks and records; an input error is reported, an output error (OSError) stops the run."""
    item = ready.item
    if isinstance(result, (Exception, str)):
        _fail(item, result, report)
        return
    try:
        check_finite_outputs(result, item.source)
        files = write_masks(out / "masks", item, result, ready.meta)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001  (one bad input is reported; the others still run)
        _fail(item, err, report)
        return
    record = output_record(item, result, files)
    sink.append(record)
    report.records.append(record)
    if len(report.records) % 100 == 0:  # a full collection costs ~0.2 s; memory stays flat without one per input
        gc.collect()


def _fail(item: InputItem, err: Exception | str, report: PredictReport) -> None:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    log.error("%s: %s", item.source, msg)
    report.errors.append((item.source, msg))


def _no_bar(progress: bool | None) -> bool:
    if progress is None:
        return not sys.stderr.isatty()
    return not progress
