"""One dataset per batch (its samples share a format and label space, so they stack): a seeded plan of which dataset
each batch of an epoch comes from.

An epoch has as many batches as one pass over every dataset (``sum(sizes)``). The plan chooses *between batches*:

- ``round_robin``: datasets in turn (0, 1, 2, 0, 1, 2, ...), skipping those whose share is used up, so each gives
  exactly its own number of batches;
- ``proportional``: a seeded shuffle of that same multiset, i.e. dataset ``i`` with probability ``n_i / sum(n)``;
- ``temperature``: independent draws with probability ``n_i^(1/T) / sum_j n_j^(1/T)`` (T = 1 is proportional,
  large T approaches uniform); a dataset drawn more often than it has batches starts a new pass.

Each dataset is read through its own sampler (:class:`ShardSampler`: a seeded shuffle per (epoch, pass), sharded
over DDP ranks like ``DistributedSampler``, and able to start at an offset), so that a resumed run rebuilds the exact
position from (epoch, batch index) without touching any global RNG.

Example:
    >>> BatchPlan([3, 1], "round_robin").epoch(0)
    [0, 1, 0, 0]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ["BatchPlan", "ShardSampler", "MultiLoader"]

MODES = ("round_robin", "proportional", "temperature")


class BatchPlan:
    """Which dataset each batch of an epoch comes from, deterministically for (seed, epoch).

    Args:
        sizes: batches per pass of each dataset (>= 1).
        mode: ``round_robin``, ``proportional`` or ``temperature``.
        temperature: T for ``temperature`` sampling.
        seed: base seed.
    """

    def __init__(self, sizes: Sequence[int], mode: str = "proportional", temperature: float = 2.0,
                 seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"sampling must be one of {MODES}, got {mode!r}")
        if not sizes or any(int(n) < 1 for n in sizes):
            raise ValueError(f"every dataset needs at least one batch, got batches per dataset {list(sizes)}")
        self.sizes, self.mode, self.temperature, self.seed = [int(n) for n in sizes], mode, float(temperature), seed

    def __len__(self) -> int:
        return sum(self.sizes)

    def probabilities(self) -> np.ndarray:
        """The chance of each dataset per batch (round robin: its share of the epoch)."""
        n = np.asarray(self.sizes, dtype=np.float64)
        w = n ** (1.0 / self.temperature) if self.mode == "temperature" else n
        return w / w.sum()

    def epoch(self, epoch: int) -> list[int]:
        """The dataset index of every batch of ``epoch``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), int(epoch), 104729]))
        if self.mode == "round_robin":
            left, plan = list(self.sizes), []
            while len(plan) < len(self):
                for i in range(len(left)):
                    if left[i]:
                        plan.append(i)
                        left[i] -= 1
            return plan
        if self.mode == "proportional":
            plan = np.repeat(np.arange(len(self.sizes)), self.sizes)
            return rng.permutation(plan).tolist()
        return rng.choice(len(self.sizes), size=len(self), p=self.probabilities()).tolist()


class ShardSampler(Sampler[int]):
    """A ``DistributedSampler`` (seeded shuffle, one shard per rank) that can skip its first ``start`` indices."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                        drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Select the shuffle of ``epoch`` and skip its first ``start`` indices."""
        self.inner.set_epoch(int(epoch))
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start)


class _Tagged(Dataset):
    """Reads ``(epoch tag, index)`` items: the augmentation epoch travels with each index, so that persistent
    workers, which keep the copy of the dataset they started with, still see each pass's epoch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        tag, index = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(tag)  # the augmentation seed is (seed, tag, index)
        return self.dataset[index]


class _TaggedSampler(Sampler[tuple[int, int]]):
    """A :class:`ShardSampler` whose indices carry the current pass's epoch tag, cut at ``limit`` indices (the
    batches the pass uses: no worker prefetches a batch that would be thrown away)."""

    def __init__(self, inner: ShardSampler) -> None:
        self.inner, self.tag, self.limit = inner, 0, None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.tag, i) for i in itertools.islice(self.inner, self.limit))

    def __len__(self) -> int:
        return len(self.inner) if self.limit is None else min(self.limit, len(self.inner))


class MultiLoader:
    """Per-dataset DataLoaders driven by a :class:`BatchPlan`; yields ``(dataset index, batch)``.

    Each dataset has one DataLoader for the life of the MultiLoader, so ``persistent_workers`` keeps its workers
    across passes and epochs; a pass only moves its sampler (epoch, offset) and its epoch tag.

    Args:
        datasets: the training datasets.
        batch_sizes: per-rank batch size of each.
        plan: the batch plan (its ``sizes`` must be the batches per pass computed by :meth:`batches_per_pass`).
        seed: base seed of the per-dataset shuffles.
        rank, world_size: the DDP shard.
        loader_kwargs: DataLoader arguments (``collate_fn``, ``num_workers``, ``pin_memory``...).
    """

    def __init__(self, datasets: Sequence[Dataset], batch_sizes: Sequence[int], plan: BatchPlan, seed: int,
                 rank: int = 0, world_size: int = 1, **loader_kwargs: Any) -> None:
        self.datasets, self.batch_sizes, self.plan, self.seed = list(datasets), list(batch_sizes), plan, seed
        self.samplers = [ShardSampler(ds, True, seed + 1009 * i, rank, world_size) for i, ds in enumerate(datasets)]
        self.tagged = [_TaggedSampler(s) for s in self.samplers]
        self.loader_kwargs = loader_kwargs
        self.loaders: dict[int, DataLoader] = {}

    @staticmethod
    def batches_per_pass(n: int, batch_size: int, world_size: int = 1) -> int:
        """Full batches per rank in one pass over ``n`` samples (at least 1: a tiny dataset gives a short one)."""
        per_rank = -(-n // world_size)
        return max(1, per_rank // batch_size)

    def _dataloader(self, i: int) -> DataLoader:
        if i not in self.loaders:
            gen = torch.Generator().manual_seed(self.seed + 31 * i)  # keeps the global RNG untouched
            self.loaders[i] = DataLoader(_Tagged(self.datasets[i]), batch_size=self.batch_sizes[i],
                                         sampler=self.tagged[i], generator=gen,
                                         drop_last=len(self.samplers[i].inner) >= self.batch_sizes[i],
                                         **self.loader_kwargs)
        return self.loaders[i]

    def _loader(self, i: int, epoch: int, consumed: int) -> Iterator:
        """Dataset ``i``'s batches from its ``consumed``-th batch of ``epoch`` on (new passes as needed)."""
        per_pass = self.plan.sizes[i]
        pass_id, offset = divmod(consumed, per_pass)
        loader = self._dataloader(i)
        while True:
            tag = epoch * 10007 + pass_id
            self.samplers[i].set_position(tag, offset * self.batch_sizes[i])
            self.tagged[i].tag, self.tagged[i].limit = tag, (per_pass - offset) * self.batch_sizes[i]
            yield from loader
            pass_id, offset = pass_id + 1, 0

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, dict]]:
        """Batches ``start, start + 1, ...`` of ``epoch`` as ``(dataset index, batch)``."""
        order = self.plan.epoch(epoch)
        consumed = [order[:start].count(i) for i in range(len(self.datasets))]
        iters: dict[int, Iterator] = {}
        for i in order[start:]:
            if i not in iters:
                iters[i] = self._loader(i, epoch, consumed[i])
            yield i, next(iters[i])
