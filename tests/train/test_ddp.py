"""DDP on CPU: two gloo processes with batch B give the weights of one process with batch 2B (batch norm in
eval mode, since SyncBatchNorm does not run on CPU; fully labelled data; losses normalised by the global count of
valid labels)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medzoo.zoo.checkpoint import load_checkpoint
from tests.train.train_fixtures import run_config

TRAIN = {"max_steps": 3, "epochs": 3, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "norm_eval": True,
         "scheduler": {"name": "none"}}


def _worker(rank: int, corpus: str, out: str, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        from medzoo.train.trainer import fit

        fit(run_config(Path(corpus), Path(out), ["nih"], **TRAIN))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_with_double_batch(corpus, tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(corpus), str(tmp_path / "ddp"), str(tmp_path / "rdzv")), nprocs=2, join=True)
    single = run_config(corpus, tmp_path / "single", ["nih"], **TRAIN)
    single["data"][0]["batch_size"] *= 2
    from medzoo.train.trainer import fit

    res = fit(single)
    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert res.step == a["step"] == b["step"] == 3
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-4, atol=1e-5), key
    from medzoo.models import create_model

    torch.manual_seed(0)  # the seeded initialisation: the weights must have moved from it
    init = create_model(single["model"]).state_dict()
    moved = max(float((a["model"][k] - init[k]).abs().max()) for k in init if init[k].is_floating_point())
    assert moved > 1e-3
