"""DDP on CPU with two gloo processes under ``torchrun``: one answer on every rank.

One launch (``ddp_worker.py``) runs several short jobs; each test below reads what every rank wrote:

- the validation metrics of both ranks are identical and equal ``medzoo evaluate`` of the same checkpoint (batch norm
  left in training mode, so each rank's running statistics drift apart; the validation batches split unevenly);
- ``patience=1`` ends both ranks at the same step, and so does ``train.max_minutes``;
- a NaN loss on rank 1 alone stops both ranks with a one-line error at the same step (no rank hangs);
- a crash and resume in the same processes gives the weights of an unbroken run (the SIGKILL version is the slow
  test below, launched through ``medzoo train --nproc-per-node 2``);
- two ranks with batch B give the weights of one process with batch 2B.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medzoo.cli.main import main as cli
from medzoo.train.trainer import fit
from medzoo.zoo.checkpoint import load_checkpoint
from tests.train.train_fixtures import run_config, write_config

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
TWO_BATCH = {"max_steps": 3, "epochs": 3, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "norm_eval": True,
             "scheduler": {"name": "none"}}


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]


def _metrics_config(corpus: Path, out: Path) -> dict:
    """Two datasets; the validation split of nih has 3 batches (2 on rank 0, 1 on rank 1), shenzhen's 1 (rank 0)."""
    cfg = run_config(corpus, out, ["nih", "shenzhen"], max_steps=None, epochs=6, best_metric="val/loss",
                     best_mode="min", early_stopping={"metric": "val/loss", "mode": "min", "patience": 1,
                                                      "min_delta": 100.0})
    for d in cfg["data"]:
        d["split"] = {"official": False, "fractions": {"train": 0.5, "val": 0.3, "test": 0.2}}
        d["eval_batch_size"] = 3
    return cfg


def _resume_config(corpus: Path, out: Path) -> dict:
    cfg = run_config(corpus, out, ["nih", "shenzhen"], max_steps=6, epochs=3, sampling="proportional", lr=3e-3,
                     scheduler={"name": "cosine", "warmup_steps": 2})
    cfg["model"]["tasks"]["findings"]["dropout"] = 0.3  # each rank draws its own masks: its RNG must come back
    cfg["output"]["checkpoint_every"] = 1
    return cfg


def _read(out: Path, name: str) -> list[dict]:
    return [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]


def _nan_safe(value):
    """NaN as a string, so that == compares it (NaN != NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    return value


@pytest.fixture(scope="module")
def launch(corpus, tmp_path_factory) -> Path:
    """One torchrun launch of 2 gloo ranks running every job; returns the folder of the runs and results."""
    out = tmp_path_factory.mktemp("ddp")
    nan_cfg = run_config(corpus, out / "nan", ["nih"], max_steps=4)
    timed = run_config(corpus, out / "timed", ["nih"], max_steps=None, epochs=50, max_minutes=1e-9)
    jobs = [{"name": "metrics", "kind": "plain", "config": _metrics_config(corpus, out / "metrics")},
            {"name": "ref", "kind": "plain", "config": _resume_config(corpus, out / "ref")},
            {"name": "crash", "kind": "crash_resume", "crash_at": 4, "config": _resume_config(corpus, out / "crash")},
            {"name": "nan", "kind": "nan_on_rank1", "config": nan_cfg},
            {"name": "timed", "kind": "plain", "config": timed},
            {"name": "batch", "kind": "plain", "config": run_config(corpus, out / "batch", ["nih"], **TWO_BATCH)}]
    spec = out / "spec.json"
    spec.write_text(json.dumps({"out": str(out), "jobs": jobs}))
    proc = subprocess.run(_torchrun(str(WORKER), str(spec)), env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _evaluate(config: dict, checkpoint: Path, split: str, out: Path) -> dict[str, float]:
    path = write_config(config, out.with_suffix(".yaml"))
    assert cli(["evaluate", "-c", str(path), "--checkpoint", str(checkpoint), "--split", split, "--out",
                str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("nonfinite", None)  # the strict JSON writer's list of the keys it wrote as null
    return metrics


def _assert_equal_metrics(got: dict[str, float], expected: dict[str, float]) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if value is None or math.isnan(value):
            assert got[key] is None or math.isnan(got[key]), key
        else:
            assert abs(got[key] - value) <= 1e-6, (key, got[key], value)


def test_ranks_report_identical_metrics_equal_to_evaluate(launch, corpus):
    r0, r1 = _read(launch, "metrics")
    assert _nan_safe(r0) == _nan_safe(r1)  # history (every validation), test metrics, step, stop: one answer
    assert r0["stopped_early"]
    assert r0["stop_reason"] == "early_stopping"
    assert r0["step"] == r1["step"] == r0["history"][-1]["step"]  # both ranks left at the 2nd evaluation
    assert len(r0["history"]) == 2
    run = launch / "metrics"
    best = load_checkpoint(run / "best.pt")["best"]
    at_best = next(h for h in r0["history"] if h["step"] == best["step"])
    cfg = _metrics_config(corpus, run)
    val = _evaluate(cfg, run / "best.pt", "val", launch / "eval_val")
    _assert_equal_metrics({k: v for k, v in at_best.items() if k.startswith("val/")}, val)
    test = _evaluate(cfg, run / "last.pt", "test", launch / "eval_test")
    _assert_equal_metrics({k: v for k, v in r0["metrics"].items() if k.startswith("test/")}, test)
    finite = [k for k, v in val.items() if v is not None and math.isfinite(v)]
    assert {"val/loss", "val/findings/mean_auroc", "val/tb/accuracy"} <= set(finite)


def test_nan_loss_on_one_rank_stops_both_at_the_same_step(launch):
    r0, r1 = _read(launch, "nan")
    assert r1["error"].startswith("optimizer step 2: the training loss is not finite on dataset 'nih'")
    assert r0["error"].startswith("optimizer step 2: the training loss is not finite on another rank")
    assert "\n" not in r0["error"]
    assert "\n" not in r1["error"]


def test_max_minutes_ends_both_ranks_at_the_same_step(launch):
    r0, r1 = _read(launch, "timed")
    assert r0["step"] == r1["step"] == 1  # rank 0's clock decided after the first step; rank 1 followed
    assert r0["stop_reason"] == r1["stop_reason"] == "max_minutes"
    assert load_checkpoint(launch / "timed" / "last.pt")["step"] == 1


def test_crash_and_resume_in_ddp_matches_unbroken_run(launch):
    a, b = load_checkpoint(launch / "ref" / "last.pt"), load_checkpoint(launch / "crash" / "last.pt")
    assert a["step"] == b["step"] == 6
    assert len(b["rng_ranks"]) == 2
    for key, value in a["model"].items():
        assert torch.allclose(value.double(), b["model"][key].double(), rtol=0, atol=1e-6), key
    assert _nan_safe(_read(launch, "ref")[0]["history"]) == _nan_safe(_read(launch, "crash")[1]["history"])


def test_two_ranks_equal_one_process_with_double_batch(launch, corpus, tmp_path):
    """Batch norm in eval mode (norm_eval), fully labelled data; losses normalised by the global count of labels."""
    single = run_config(corpus, tmp_path / "single", ["nih"], **TWO_BATCH)
    single["data"][0]["batch_size"] *= 2
    res = fit(single)
    a, b = load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(launch / "batch" / "last.pt")
    assert res.step == a["step"] == b["step"] == 3
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-4, atol=1e-5), key
    from medzoo.models import create_model

    torch.manual_seed(0)  # the seeded initialisation: the weights must have moved from it
    init = create_model(single["model"]).state_dict()
    moved = max(float((a["model"][k] - init[k]).abs().max()) for k in init if init[k].is_floating_point())
    assert moved > 1e-3


def test_shutdown_leaves_through_a_barrier_only_after_a_finished_run(tmp_path, monkeypatch):
    """A finished run leaves through a barrier (no rank leaves while another still needs it); a failed rank leaves
    at once, since the others may be inside another collective."""
    import torch.distributed as dist

    from medzoo.train import distributed

    calls: list[str] = []
    barrier, destroy = dist.barrier, dist.destroy_process_group
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (calls.append("barrier"), barrier(*a, **k))[1])
    monkeypatch.setattr(dist, "destroy_process_group",
                        lambda *a, **k: (calls.append("destroy"), destroy(*a, **k))[1])
    for wait, expected in ((True, ["barrier", "destroy"]), (False, ["destroy"])):
        calls.clear()
        dist.init_process_group("gloo", init_method=(tmp_path / f"store-{wait}").as_uri(), rank=0, world_size=1)
        distributed.shutdown(wait=wait)
        assert calls == expected
        assert not dist.is_initialized()
    distributed.shutdown()  # no process group: nothing to leave
    assert calls == ["destroy"]


EXIT_RANK = """
import logging, sys
import torch.distributed as dist
from medzoo.train import distributed
dist.init_process_group("gloo", init_method=sys.argv[1], rank=0, world_size=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
sys.stdout.write("finished: step 6")  # no newline: left in the buffer until flushed
logging.getLogger("medzoo").info("logged last")
distributed.exit_rank(3)
print("never reached")
"""


def test_exit_rank_flushes_and_exits_with_its_code_without_finalising(tmp_path):
    """``exit_rank`` ends a torchrun process without interpreter finalisation (where gloo's threads, freeing the last
    collectives' tensors, aborted 4 of 34 finished two-rank runs here): the buffered output still arrives, and the
    exit code is the one given."""
    proc = subprocess.run([sys.executable, "-c", EXIT_RANK, (tmp_path / "store").as_uri()], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "finished: step 6"
    assert "logged last" in proc.stderr


def _ready_pids(proc: subprocess.Popen, n: int, deadline: float) -> list[int]:
    pids: list[int] = []
    while len(pids) < n and time.time() < deadline and proc.poll() is None:
        pids += [int(pid) for pid in re.findall(r"READY (\d+)", proc.stdout.readline())]
    return pids


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_and_resume_under_ddp_matches_unbroken_run(corpus, tmp_path):
    """Both ranks SIGKILLed mid-run (after step 4; last.pt holds step 3), resumed with ``medzoo train
    --nproc-per-node 2 --resume``; the unbroken run is launched the same way."""
    ref_cfg = write_config(_resume_config(corpus, tmp_path / "ref"), tmp_path / "ref.yaml")
    crash = _resume_config(corpus, tmp_path / "crash")
    crash_cfg = write_config(crash, tmp_path / "crash.yaml")
    medzoo = [sys.executable, "-m", "medzoo.cli.main", "train", "--nproc-per-node", "2", "--quiet", "-c"]
    ref = subprocess.Popen([*medzoo, str(ref_cfg)], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"out": str(tmp_path), "jobs": [{"name": "hang", "kind": "hang", "crash_at": 4,
                                                                 "config": crash}]}))
    hang = subprocess.Popen(_torchrun(str(WORKER), str(spec)), env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pids = _ready_pids(hang, 2, time.time() + 300)
    assert len(pids) == 2, hang.stderr.read() if hang.poll() is not None else "no READY lines"
    for pid in pids:  # a real kill -9 of both workers: no handler, no cleanup
        os.kill(pid, signal.SIGKILL)
    hang.kill()
    hang.wait(60)
    killed = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert killed["step"] == 3
    assert not (tmp_path / "crash" / "last.pt.tmp").exists()

    resumed = subprocess.run([*medzoo, str(crash_cfg), "--resume"], env=_env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "finished: step 6" in resumed.stdout  # rank 0 reports; rank 1 stays quiet
    assert resumed.stdout.count("finished:") == 1
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-4000:]
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "crash" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.allclose(value.double(), b["model"][key].double(), rtol=0, atol=1e-6), key
    assert not all(torch.equal(v, killed["model"][k]) for k, v in b["model"].items())  # it did train on
