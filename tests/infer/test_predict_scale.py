"""``predict_inputs`` at dataset scale: batched and prefetched images equal the per-file loop, shards partition a
listing, tables grow as inputs finish, and ``resume`` completes an interrupted run with an unbroken run's results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medzoo.cli.main import main
from medzoo.data.imageio import write_nifti
from medzoo.infer.inputs import discover_inputs, parse_shard, shard_items
from medzoo.infer.predict import Predictor, predict_inputs
from medzoo.infer.runner import plan_batches
from tests.helpers import CXR_PRE, build_model, write_tiny_export
from tests.infer.scale_kit import (
    SEG_TASKS,
    assert_same_predictions,
    csv_rows,
    jsonl_records,
    write_images,
    write_listing,
)


@pytest.fixture(scope="module")
def seg2d():
    return build_model(SEG_TASKS, seed=3)


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    """7 images of mixed sizes, a broken PNG (4th row) and a NIfTI the image model has no task for (6th row)."""
    images = write_images(tmp_path / "img", 7)
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_nifti(tmp_path / "img" / "vol.nii.gz", np.zeros((8, 8, 8), np.int16), np.eye(4))
    rows = [*images[:3], tmp_path / "img" / "broken.png", *images[3:5], tmp_path / "img" / "vol.nii.gz", *images[5:]]
    return write_listing(tmp_path / "list.csv", rows)


def _run(model, listing: Path, out: Path, **kw):
    return predict_inputs(Predictor(model, preprocessing=CXR_PRE), [listing], out, progress=False, **kw)


def test_batched_prefetched_images_equal_the_per_file_loop(seg2d, listing: Path, tmp_path: Path) -> None:
    loop = _run(seg2d, listing, tmp_path / "loop", batch_size=1, num_workers=0)
    batched = _run(seg2d, listing, tmp_path / "batched", batch_size=3, num_workers=2)
    assert len(loop.records) == 7
    assert [r["id"] for r in batched.records] == [r["id"] for r in loop.records]  # listing order kept
    for a, b in zip(loop.records, batched.records):
        assert_same_predictions(a, b, tmp_path / "loop", tmp_path / "batched")
    assert [w for w, _ in batched.errors] == [w for w, _ in loop.errors]
    assert [w.rsplit(":", 1)[1] for w, _ in batched.errors] == ["5", "8"]  # the broken PNG and the volume
    assert jsonl_records(tmp_path / "batched") == batched.records
    saved = json.loads((tmp_path / "batched" / "predictions.json").read_text())
    assert saved["predictions"] == batched.records
    assert len(saved["errors"]) == 2


def test_batches_keep_listing_order_and_cut_at_the_batch_size() -> None:
    flags = [True] * 5 + [False] + [True] * 2
    assert plan_batches(flags, 2) == [[0, 1], [2, 3], [4], [5], [6, 7]]
    assert plan_batches(flags, 8) == [[0, 1, 2, 3, 4], [5], [6, 7]]
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        plan_batches(flags, 0)


def test_shards_cover_the_listing_once_and_equal_the_whole_run(seg2d, listing: Path, tmp_path: Path) -> None:
    whole = _run(seg2d, listing, tmp_path / "whole", batch_size=4)
    shards = [_run(seg2d, listing, tmp_path / "shared", batch_size=4, shard=(k, 3)) for k in (1, 2, 3)]
    ids = [r["id"] for s in shards for r in s.records]
    assert sorted(ids) == sorted(r["id"] for r in whole.records)  # every input in exactly one shard
    assert len(ids) == len(set(ids))
    by_id = {r["id"]: r for r in whole.records}
    for k, s in enumerate(shards, 1):
        assert jsonl_records(tmp_path / "shared", f"predictions-{k}-of-3") == s.records
        for r in s.records:
            assert_same_predictions(by_id[r["id"]], r, tmp_path / "whole", tmp_path / "shared")


def test_shard_split_is_deterministic_and_ids_are_fixed_before_it(tmp_path: Path) -> None:
    a, b = write_images(tmp_path / "a", 3), write_images(tmp_path / "b", 3)  # the same file names twice
    items, _ = discover_inputs([*a, *b])
    parts = [shard_items(items, k, 4) for k in range(1, 5)]
    assert [it.id for p in parts for it in p] == [it.id for k in range(4) for it in items[k::4]]
    assert sorted(it.id for p in parts for it in p) == sorted(it.id for it in items)
    assert len({it.id for it in items}) == 6  # duplicates got distinct ids over the whole listing
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="expected K/N"):
            parse_shard(bad)


class _Killed(BaseException):
    """Stands in for SIGKILL in-process: not an Exception, so nothing in predict catches it."""


class _DiesAfter:
    """A predictor that runs normally for ``n`` batches, then dies."""

    def __init__(self, predictor: Predictor, n: int) -> None:
        self.predictor, self.n = predictor, n

    def __getattr__(self, name: str):
        return getattr(self.predictor, name)

    def predict_prepared(self, preps):
        if self.n == 0:
            raise _Killed
        self.n -= 1
        return self.predictor.predict_prepared(preps)


def test_interrupted_run_keeps_finished_inputs_and_resume_completes_it(seg2d, listing: Path, tmp_path: Path) -> None:
    """In-process twin of the SIGKILL test in tests/robustness: records are on disk as inputs finish."""
    whole = _run(seg2d, listing, tmp_path / "whole", batch_size=2)
    out = tmp_path / "out"
    with pytest.raises(_Killed):
        predict_inputs(_DiesAfter(Predictor(seg2d, preprocessing=CXR_PRE), 2), [listing], out, batch_size=2,
                       progress=False)
    done = jsonl_records(out)
    assert [r["id"] for r in done] == [r["id"] for r in whole.records[:3]]  # 2 batches: 2 images, then 1 + broken
    assert {row["input"] for row in csv_rows(out)} == {r["id"] for r in done}
    assert not (out / "predictions.json").exists()
    with open(out / "predictions.jsonl", "ab") as fh:  # as if killed inside the next write
        fh.write(b'{"id": "img03", "pa')
    resumed = _run(seg2d, listing, out, batch_size=2, resume=True)
    assert resumed.skipped == 3
    assert [r["id"] for r in resumed.records] == [r["id"] for r in whole.records[3:]]
    final = jsonl_records(out)
    assert [r["id"] for r in final] == [r["id"] for r in whole.records]
    for a, b in zip(whole.records, final):
        assert_same_predictions(a, b, tmp_path / "whole", out)
    assert len(csv_rows(out)) == len(csv_rows(tmp_path / "whole"))


def test_resume_reruns_an_input_whose_mask_is_missing(seg2d, listing: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(seg2d, listing, out, batch_size=4)
    lost = first.records[1]
    (out / "masks" / Path(lost["tasks"]["lung"]["mask"]).name).unlink()
    again = _run(seg2d, listing, out, batch_size=4, resume=True)
    assert [r["id"] for r in again.records] == [lost["id"]]
    assert sorted(r["id"] for r in jsonl_records(out)) == sorted(r["id"] for r in first.records)


def test_cli_batch_shard_and_resume_flags(tmp_path: Path, capsys) -> None:
    export = write_tiny_export(tmp_path, "seg", SEG_TASKS)
    images = write_images(tmp_path / "img", 4)
    args = ["-q", "predict", "--model", export, *map(str, images), "--out", str(tmp_path / "o")]
    assert main([*args, "--batch-size", "3", "--num-workers", "0", "--shard", "2/2"]) == 0
    assert [r["id"] for r in jsonl_records(tmp_path / "o", "predictions-2-of-2")] == ["img01", "img03"]
    assert main([*args, "--resume", "--shard", "2/2"]) == 0
    assert "0 input(s) predicted, 2 already complete" in capsys.readouterr().out
    assert main([*args, "--shard", "3/2"]) == 2
    assert "--shard '3/2': expected K/N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--batch-size", "0"])


def test_cli_threads_sets_the_models_torch_threads_for_the_run_only(tmp_path: Path, monkeypatch) -> None:
    import medzoo.infer.predict as predict_mod

    seen, real = [], predict_mod.predict_inputs

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    monkeypatch.setattr(predict_mod, "predict_inputs", spy)
    export = write_tiny_export(tmp_path, "seg", SEG_TASKS)
    images = write_images(tmp_path / "img", 2)
    args = ["-q", "predict", "--model", export, *map(str, images), "--out", str(tmp_path / "o"), "--num-workers", "0"]
    before = torch.get_num_threads()
    want = before + 1  # differs from whatever the test process runs with
    assert main([*args, "--threads", str(want)]) == 0
    assert seen == [want]
    assert len(jsonl_records(tmp_path / "o")) == 2
    assert torch.get_num_threads() == before
    with pytest.raises(SystemExit):
        main([*args, "--threads", "0"])
