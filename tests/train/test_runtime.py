"""Execution options: DataLoader settings, persistent workers that still see each pass's epoch, channels-last and
torch.compile giving the fp32 weights, the evaluation shards, and the torchrun command of ``--nproc-per-node``."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import Dataset

from medzoo.cli.main import build_parser
from medzoo.cli.train_cmd import torchrun_command
from medzoo.train.config import TrainConfig
from medzoo.train.evaluate import _Batches
from medzoo.train.runtime import default_workers, loader_kwargs
from medzoo.train.sampling import BatchPlan, MultiLoader
from medzoo.train.trainer import Trainer
from tests.train.train_fixtures import run_config


def test_loader_kwargs_defaults_and_overrides():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert loader_kwargs(TrainConfig(), cpu) == {"num_workers": 0, "pin_memory": False}
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(cuda, 1) == max(0, min(4, cpus - 1))  # a core stays with the training loop
    on_gpu = loader_kwargs(TrainConfig(), cuda)
    assert on_gpu["pin_memory"] is True
    assert on_gpu["num_workers"] == default_workers(cuda, 1)
    kw = loader_kwargs(TrainConfig(num_workers=3, prefetch_factor=4, persistent_workers=False, pin_memory=True), cpu)
    assert kw == {"num_workers": 3, "pin_memory": True, "persistent_workers": False, "prefetch_factor": 4}


class _EpochEcho(Dataset):
    """Item ``i`` is ``[i, epoch]`` (what the augmentation seed sees) and the pid of the process that read it."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.tensor([float(i), float(self.epoch)]), "pid": os.getpid()}


def _collate(samples: list[dict]) -> dict:
    return {"image": torch.stack([s["image"] for s in samples]), "pid": [s["pid"] for s in samples]}


def _batches(loader: MultiLoader, epoch: int, start: int = 0) -> tuple[list, set]:
    out, pids = [], set()
    for i, b in loader.epoch(epoch, start):
        out.append((i, b["image"].tolist()))
        pids.update(b["pid"])
    return out, pids


def test_persistent_workers_give_the_main_process_batches():
    sizes = [MultiLoader.batches_per_pass(9, 2), MultiLoader.batches_per_pass(5, 2)]
    plan = BatchPlan(sizes, "temperature", temperature=4.0, seed=2)  # draws past a dataset's pass: new passes
    main = MultiLoader([_EpochEcho(9), _EpochEcho(5)], [2, 2], plan, seed=5, collate_fn=_collate)
    pooled = MultiLoader([_EpochEcho(9), _EpochEcho(5)], [2, 2], plan, seed=5, collate_fn=_collate, num_workers=2,
                         persistent_workers=True)
    seen = []
    for epoch in (0, 1, 2):
        expected, main_pids = _batches(main, epoch)
        got, pids = _batches(pooled, epoch)
        assert got == expected, epoch
        assert main_pids == {os.getpid()}
        assert os.getpid() not in pids
        seen.append(pids)
    assert len(set().union(*seen)) <= 4  # 2 workers per dataset served every pass of every epoch: none restarted
    assert {e for _, rows in expected for _, e in rows} != {0.0}  # the epoch tag reached the dataset
    assert _batches(pooled, 1, 3)[0] == _batches(main, 1)[0][3:]  # a mid-epoch resume


@pytest.mark.parametrize(("n", "batch", "world"), [(0, 2, 2), (1, 3, 2), (7, 3, 2), (8, 3, 3), (10, 4, 3), (5, 1, 4)])
def test_evaluation_shards_hold_every_batch_once(n, batch, world):
    sequential = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    shards = [_Batches(n, batch, r, world) for r in range(world)]
    merged = sorted((i, b) for s in shards for i, b in zip(s.index, s.batches))
    assert [b for _, b in merged] == sequential
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


SGD = {"max_steps": 2, "optimizer": "sgd", "lr": 0.05}  # Adam's first steps are ~lr * sign(g): tiny g, any sign


def _same_step(corpus, tmp_path, **option) -> Trainer:
    """One training step of a plain Trainer and of one with ``option``, on the same batch: same loss and weights."""
    plain = Trainer(run_config(corpus, tmp_path / "a", ["nih"], **SGD))
    other = Trainer(run_config(corpus, tmp_path / "b", ["nih"], **SGD, **option))
    start = {k: v.detach().clone() for k, v in plain.model.state_dict().items()}
    batch = next(iter(plain.loader.epoch(0)))
    assert other.train_step([batch]) == pytest.approx(plain.train_step([batch]), rel=1e-5)
    reference = plain.model.state_dict()
    for key, value in other.model.state_dict().items():
        if not value.is_floating_point():
            assert torch.equal(value, reference[key]), key
            continue
        # Fused kernels sum in another order: compare the update itself, to 0.1 % of its largest element.
        want, got = reference[key] - start[key], value - start[key]
        assert (got - want).abs().max() <= 1e-3 * want.abs().max() + 1e-8, key
    assert other.step == 1
    return other


def test_channels_last_gives_the_same_step(corpus, tmp_path):
    tr = _same_step(corpus, tmp_path, channels_last=True)
    conv = next(p for p in tr.model.parameters() if p.dim() == 5 and p.shape[1] > 1)  # C = 1: both layouts agree
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    assert not conv.is_contiguous()


@pytest.mark.slow
def test_compile_gives_the_same_step(corpus, tmp_path):
    tr = _same_step(corpus, tmp_path, compile=True)  # about a minute of compilation on 2 cores
    assert tr.net is not tr.model  # the step called the compiled module


def test_nproc_per_node_wraps_torchrun():
    args = build_parser().parse_args(["-v", "finetune", "-c", "run.yaml", "--set", "train.lr=0.1", "--init",
                                      "zoo:x", "--parts", "encoder", "--resume", "--nproc-per-node", "4",
                                      "--device", "cpu"])
    cmd = torchrun_command(args)
    launcher, child = cmd[:cmd.index("medzoo.cli.main") + 1], cmd[cmd.index("medzoo.cli.main") + 1:]
    assert launcher[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
                            "medzoo.cli.main"]
    assert child == ["-v", "finetune", "-c", "run.yaml", "--set", "train.lr=0.1", "--init", "zoo:x", "--parts",
                     "encoder", "--resume", "--device", "cpu"]
    assert build_parser().parse_args(child).nproc_per_node == 1  # the child does not launch again
