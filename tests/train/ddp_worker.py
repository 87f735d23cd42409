"""Run by ``torchrun`` in the DDP tests: every rank runs the jobs of a JSON spec and writes what it saw.

``python -m torch.distributed.run --nproc-per-node 2 tests/train/ddp_worker.py SPEC.json``. Each job is
``{"name", "kind", "config"}``; each rank writes ``<out>/<name>.rank<r>.json``:

- ``plain``: ``fit(config)``; the result (step, epoch, stopped_early, history, metrics);
- ``crash_resume``: ``fit`` with a callback that raises on every rank after step ``crash_at`` (the checkpoint of
  that step is not written), then ``fit(config, resume=True)`` in the same processes;
- ``nan_on_rank1``: after step 1, rank 1 alone sets its copy of one head weight to NaN; the error each rank raises;
- ``hang``: prints ``READY <pid>`` after step ``crash_at`` and sleeps (the test SIGKILLs the process).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist


class _Crash(Exception):
    pass


def _result(res) -> dict:
    return {"step": res.step, "epoch": res.epoch, "stopped_early": res.stopped_early, "stop_reason": res.stop_reason,
            "history": res.history, "metrics": res.metrics}


def _crash_at(step: int):
    def fn(trainer) -> None:
        if trainer.step == step:
            raise _Crash(f"crash after step {step}")
    return fn


def _poison(trainer) -> None:
    if trainer.step == 1 and trainer.rank == 1:
        with torch.no_grad():
            next(iter(trainer.model.heads.parameters())).fill_(float("nan"))


def _hang(step: int):
    def fn(trainer) -> None:
        if trainer.step == step:
            os.write(1, f"READY {os.getpid()}\n".encode())  # one write: two ranks' lines never interleave
            time.sleep(600)
    return fn


def run_job(job: dict, out: Path, rank: int) -> dict:
    from medzoo.train.trainer import NonFiniteLoss, fit

    cfg, kind = job["config"], job["kind"]
    if kind == "plain":
        return _result(fit(cfg))
    if kind == "crash_resume":
        try:
            fit(cfg, callbacks={"on_step_end": [_crash_at(job["crash_at"])]})
        except _Crash:
            pass
        return _result(fit(cfg, resume=True))
    if kind == "nan_on_rank1":
        try:
            fit(cfg, callbacks={"on_step_end": [_poison]})
        except NonFiniteLoss as err:
            return {"error": str(err)}
        return {"error": None}
    if kind == "hang":
        return _result(fit(cfg, callbacks={"on_step_end": [_hang(job["crash_at"])]}))
    raise ValueError(f"unknown job kind {kind!r}")


def main() -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    from medzoo.train import distributed

    distributed.init_distributed("cpu")
    rank = dist.get_rank()
    for job in spec["jobs"]:
        result = run_job(job, out, rank)
        (out / f"{job['name']}.rank{rank}.json").write_text(json.dumps(result))
    distributed.exit_rank(0)  # a barrier, then exit without finalising: see its docstring


if __name__ == "__main__":
    main()
