"""Exact resume: a training subprocess killed with SIGKILL after checkpoint k and resumed ends with the same weights
(within 1e-6 on CPU) as an uninterrupted run with the same seed (augmentation, dropout, two datasets, an epoch
boundary with evaluation in between)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

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


def _config(corpus: Path, out: Path, path: Path) -> Path:
    cfg = run_config(corpus, out, ["nih", "shenzhen"], max_steps=9, epochs=3, sampling="proportional", lr=3e-3,
                     scheduler={"name": "cosine", "warmup_steps": 2})
    cfg["model"]["tasks"]["findings"]["dropout"] = 0.3
    cfg["output"]["checkpoint_every"] = 1
    return write_config(cfg, path)


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
    assert killed["step"] == KILL_AT - 1 and not (tmp_path / "crash" / "last.pt.tmp").exists()

    resumed = _start(script, crash_cfg, "resume")
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    out, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err

    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert a["step"] == b["step"] == 9 and a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.allclose(value.double(), b["model"][key].double(), rtol=0, atol=1e-6), key
    assert not all(torch.equal(v, killed["model"][k]) for k, v in b["model"].items())  # it did train on
