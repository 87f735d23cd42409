"""Bootstrap resampling units: rows, or clusters of rows (a cluster bootstrap).

Images of one patient are correlated (NIH ChestX-ray14 has 3.64 images per patient; a CT series has many slices),
so resampling images treats them as independent evidence and gives intervals that are too narrow. A cluster
bootstrap draws whole clusters (patients) with replacement and keeps every row of each drawn cluster.

Example:
    >>> import numpy as np
    >>> units = ResamplingUnits.of(["p1", "p1", "p2"])
    >>> units.n_units, units.clustered
    (2, True)
    >>> units.draw(np.random.default_rng(0)).tolist()  # clusters drawn: p2, p2 (rows 0-1 are p1, row 2 is p2)
    [2, 2]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ResamplingUnits"]


@dataclass(frozen=True)
class ResamplingUnits:
    """What one bootstrap replicate draws: ``n_units`` rows, or ``n_units`` clusters of rows.

    Clusters are numbered in order of their first row. Replicate rows are drawn from a
    :class:`numpy.random.Generator` as ``g = rng.integers(0, n_units, size=n_units)``, then every row of cluster
    ``g[0]`` (in row order), every row of ``g[1]``, and so on. With one row per cluster this is exactly the row
    bootstrap, draw for draw.

    Attributes:
        n_rows: N, the rows of the data.
        n_units: the rows (no clusters) or the distinct clusters.
        clustered: whether clusters are resampled.
        order: ``[N]`` row indices sorted by cluster (stable); ``starts`` / ``sizes``: ``[n_units]`` each cluster's
            first position in ``order`` and its row count (empty arrays without clusters).
    """

    n_rows: int
    n_units: int
    clustered: bool
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, groups: Sequence[Hashable] | None, n_rows: int | None = None) -> ResamplingUnits:
        """Units from the cluster key of each row (any hashable: a patient id, a ``(dataset, patient)`` pair), or
        rows when ``groups`` is None (then ``n_rows`` is required).

        Raises:
            ValueError: ``groups`` and ``n_rows`` disagree, or neither gives the row count.
        """
        if groups is None:
            if n_rows is None:
                raise ValueError("ResamplingUnits.of: give the cluster key of each row, or n_rows for rows")
            empty = np.empty(0, dtype=np.int64)
            return cls(int(n_rows), int(n_rows), False, empty, empty, empty)
        keys = list(groups)
        if n_rows is not None and len(keys) != n_rows:
            raise ValueError(f"groups must give one cluster key per row: {len(keys)} keys for {n_rows} rows")
        index: dict[Hashable, int] = {}
        cluster = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
        order = np.argsort(cluster, kind="stable")
        sizes = np.bincount(cluster, minlength=len(index))
        starts = np.cumsum(sizes) - sizes
        return cls(len(keys), len(index), True, order, starts, sizes)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Row indices of one replicate: ``[N]`` for rows; for clusters, as many rows as the drawn clusters hold."""
        if not self.clustered:
            return rng.integers(0, self.n_rows, size=self.n_rows)
        if self.n_units == 0:
            return np.empty(0, dtype=np.int64)
        g = rng.integers(0, self.n_units, size=self.n_units)
        sizes = self.sizes[g]
        ends = np.cumsum(sizes)
        offsets = np.repeat(self.starts[g] - (ends - sizes), sizes)
        return self.order[np.arange(int(ends[-1])) + offsets]
