"""Exact resume: a training subprocess killed with SIGKILL after checkpoint k and resumed ends with the same weights
(within 1e-6 on CPU) as an uninterrupted run with the same seed (augmentation, dropout, two datasets, an epoch
boundary with evaluation in between). That test is slow (three processes, nine steps); its smoke twin stops a
two-step run in process after checkpoint 1 and resumes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from medzoo.train.trainer import Trainer
from medzoo.zoo.checkpoint import load_checkpoint
from tests.train.train_fixtures import run_config, write_config

ROOT = Path(__file__).resolve().parents[2]
KILL_AT = 4  # the run hangs in step 4's callback; last.pt then holds step 3

SCRIPT = textwrap.dedent(f"""
    import sys, time
    import torch
    torch.set_num_threads(1)
    from medzoo.train.trainer import Trainer

    def hang(trainer):
        if sys.argv[2] == "crash" and trainer.step == {KILL_AT}:
            print("READY", flush=True)
            time.sleep(600)

    Trainer(sys.argv[1], resume=sys.argv[2] == "resume", quiet=True, callbacks={{"on_step_end": [hang]}}).fit()
""")


def _start(script: Path, cfg: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(script), str(cfg), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _config(corpus: Path, out: Path, path: Path, max_steps: int = 9, epochs: int = 3) -> Path:
    cfg = run_config(corpus, out, ["nih", "shenzhen"], max_steps=max_steps, epochs=epochs, sampling="proportional",
                     lr=3e-3, scheduler={"name": "cosine", "warmup_steps": 2})
    cfg["model"]["tasks"]["findings"]["dropout"] = 0.3
    cfg["output"]["checkpoint_every"] = 1
    return write_config(cfg, path)


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(corpus, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    ref_cfg = _config(corpus, tmp_path / "ref", tmp_path / "ref.yaml")
    crash_cfg = _config(corpus, tmp_path / "crash", tmp_path / "crash.yaml")
    ref = _start(script, ref_cfg, "plain")
    crash = _start(script, crash_cfg, "crash")
    deadline = time.time() + 240
    line = ""
    while time.time() < deadline and crash.poll() is None:
        line = crash.stdout.readline()
        if "READY" in line:
            break
    assert "READY" in line, crash.stderr.read() if crash.poll() is not None else "no READY line"
    os.kill(crash.pid, signal.SIGKILL)  # a real kill -9: no handler, no cleanup
    crash.wait(30)
    assert crash.returncode == -signal.SIGKILL
    killed = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert killed["step"] == KILL_AT - 1
    assert not (tmp_path / "crash" / "last.pt.tmp").exists()

    resumed = _start(script, crash_cfg, "resume")
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    out, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err

    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert a["step"] == b["step"] == 9
    assert a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.allclose(value.double(), b["model"][key].double(), rtol=0, atol=1e-6), key
    assert not all(torch.equal(v, killed["model"][k]) for k, v in b["model"].items())  # it did train on


class _Stop(Exception):
    """Ends a run abruptly from a callback: nothing after it is saved, as after a kill."""


def test_two_step_run_stopped_after_checkpoint_one_resumes_to_the_uninterrupted_weights(corpus, tmp_path):
    def stop(trainer: Trainer) -> None:
        if trainer.step == 2:  # step 2's callback runs before its checkpoint: last.pt holds step 1
            raise _Stop

    Trainer(_config(corpus, tmp_path / "ref", tmp_path / "ref.yaml", 2, 1), quiet=True).fit()
    crash_cfg = _config(corpus, tmp_path / "crash", tmp_path / "crash.yaml", 2, 1)
    with pytest.raises(_Stop):
        Trainer(crash_cfg, quiet=True, callbacks={"on_step_end": [stop]}).fit()
    stopped = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert stopped["step"] == 1
    Trainer(crash_cfg, resume=True, quiet=True).fit()
    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert a["step"] == 2
    assert b["step"] == 2
    for key, value in a["model"].items():
        assert torch.allclose(value.double(), b["model"][key].double(), rtol=0, atol=1e-6), key
    assert not all(torch.equal(v, stopped["model"][k]) for k, v in b["model"].items())  # it did train on
