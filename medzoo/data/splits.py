"""Patient-level, stratified, seeded splits, the official splits where a dataset has them, and a leakage guard.

:func:`patient_split` never puts one patient's records in two splits. With ``official=True`` (default) and a
manifest whose records carry ``meta["official_split"]`` (NIH lists, CheXpert train/valid, MIMIC, COVIDx files,
MSD), those splits are kept: the official test split is ``test`` and an official validation split is ``val``;
whatever the official split lacks is carved out of the training pool by patient, in the ratio of ``fractions``
(NIH: ``val`` from ``train_val``; a manifest read with ``split="train"``: ``val`` and ``test``). CheXpert's
``valid`` (its test set is hidden) becomes ``test``. MSD's official test cases have no labels: read
``split="training"`` to split labelled cases only. Otherwise patients are shuffled with ``seed`` and cut by
``fractions``, stratum by stratum when ``stratify`` names a task.

Example:
    >>> from medzoo.data.manifest import Record, Manifest
    >>> recs = [Record(f"r{i}", f"p{i // 2}", f"{i}.png", {"tb": i % 2}) for i in range(20)]
    >>> parts = patient_split(Manifest("demo", ".", recs, {"tb": ["normal", "tb"]}), seed=1)
    >>> sorted(parts), sum(len(m) for m in parts.values())
    (['test', 'train', 'val'], 20)
    >>> check_leakage(parts)  # no patient in two splits: returns None
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from medzoo.data.manifest import Manifest, Record

__all__ = ["patient_split", "check_leakage", "DEFAULT_FRACTIONS"]

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLITS = ("train", "val", "test")
_TRAIN_LIKE = {"train", "train_val", "training"}
_VAL_LIKE = {"val", "valid", "validate", "validation"}


def _check_fractions(fractions: Mapping[str, float] | None) -> dict[str, float]:
    fr = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    unknown = set(fr) - set(SPLITS)
    if unknown:
        raise ValueError(f"fractions keys must be among {SPLITS}, got {sorted(unknown)}")
    if any(not (v >= 0) for v in fr.values()) or not math.isclose(sum(fr.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fr}")
    return {s: float(fr.get(s, 0.0)) for s in SPLITS}


def _is_binary_vector(values: list[Any]) -> bool:
    return all(np.all(np.isnan(v) | (v == 0) | (v == 1)) for v in values)


def _strata(groups: dict[str, list[Record]], task: str | None) -> dict[str, str]:
    """patient -> stratum key for ``task`` (one stratum when None)."""
    if task is None:
        return {p: "" for p in groups}
    values = {p: [r.labels.get(task, math.nan) for r in recs] for p, recs in groups.items()}
    first = next(iter(values.values()))[0] if values else 0
    if np.ndim(first) == 0:  # class task: the patient's most common class
        def mode(vals: list[Any]) -> str:
            known = [int(v) for v in vals if not (isinstance(v, float) and math.isnan(v))]
            return str(max(Counter(known).items(), key=lambda kv: (kv[1], kv[0]))[0]) if known else "nan"
        return {p: mode(v) for p, v in values.items()}
    vecs = {p: np.stack([np.asarray(x, dtype=np.float64) for x in v]) for p, v in values.items()}
    if _is_binary_vector(list(vecs.values())):  # multilabel: the patient's rarest positive label
        pos = {p: np.nan_to_num(v, nan=0.0).max(axis=0) > 0 for p, v in vecs.items()}
        counts = np.sum(list(pos.values()), axis=0)
        return {p: str(int(np.argmin(np.where(m, counts, np.inf)))) if m.any() else "none" for p, m in pos.items()}
    score = {p: float(np.nanmean(v[:, 0])) if not np.all(np.isnan(v[:, 0])) else math.nan for p, v in vecs.items()}
    known = sorted(s for s in score.values() if not math.isnan(s))
    edges = np.quantile(known, [0.25, 0.5, 0.75]) if known else []
    return {p: "nan" if math.isnan(s) else str(int(np.searchsorted(edges, s))) for p, s in score.items()}


def _allocate(n: int, fractions: dict[str, float], carry: dict[str, float]) -> dict[str, int]:
    """Largest-remainder counts for one stratum, carrying rounding over to the next stratum."""
    exact = {s: n * f + carry[s] for s, f in fractions.items()}
    counts = {s: max(0, math.floor(x)) for s, x in exact.items()}
    order = sorted(fractions, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))
    i = 0
    while sum(counts.values()) < n:
        s = order[i % len(order)]
        if fractions[s] > 0:
            counts[s] += 1
        i += 1
    while sum(counts.values()) > n:
        s = max(counts, key=lambda k: (counts[k] - n * fractions[k], k))
        counts[s] -= 1
    for s in fractions:
        carry[s] = exact[s] - counts[s]
    return counts


def _split_records(records: list[Record], fractions: dict[str, float], seed: int, task: str | None
                   ) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.patient_id, []).append(r)
    strata = _strata(groups, task)
    rng = np.random.default_rng(seed)
    carry = {s: 0.0 for s in fractions}
    assign: dict[str, str] = {}
    for key in sorted(set(strata.values())):
        patients = sorted(p for p, k in strata.items() if k == key)
        patients = [patients[i] for i in rng.permutation(len(patients))]
        counts, start = _allocate(len(patients), fractions, carry), 0
        for s in SPLITS:
            if s in counts:
                for p in patients[start:start + counts[s]]:
                    assign[p] = s
                start += counts[s]
    out: dict[str, list[Record]] = {s: [] for s in fractions}
    for r in records:
        out[assign[r.patient_id]].append(r)
    return out


def _official(records: list[Record], fractions: dict[str, float], seed: int, task: str | None
              ) -> dict[str, list[Record]]:
    names = {r.meta["official_split"] for r in records}
    unknown = names - _TRAIN_LIKE - _VAL_LIKE - {"test"}
    if unknown:
        raise ValueError(f"unknown official split name(s) {sorted(unknown)}")
    test_names = {"test"} if "test" in names else names & _VAL_LIKE  # CheXpert: valid is the test set
    val_names = names & _VAL_LIKE if "test" in names else set()
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    pool = []
    for r in records:
        name = r.meta["official_split"]
        if name in test_names:
            out["test"].append(r)
        elif name in val_names:
            out["val"].append(r)
        else:
            pool.append(r)
    carve = ["train"] + [s for s, given in (("val", val_names), ("test", test_names)) if not given]
    total = sum(fractions[s] for s in carve)
    if pool:
        if fractions["train"] <= 0:
            raise ValueError("fractions give nothing to train, but the official split has a training pool")
        out.update(_split_records(pool, {s: fractions[s] / total for s in carve}, seed, task))
    return out


def patient_split(manifest: Manifest, fractions: Mapping[str, float] | None = None, seed: int = 0,
                  stratify: str | None = None, *, official: bool = True) -> dict[str, Manifest]:
    """Split a manifest into ``train`` / ``val`` / ``test`` by patient, deterministically for a seed.

    Args:
        manifest: the dataset.
        fractions: split -> fraction of patients (default 0.7 / 0.1 / 0.2); keys among train, val, test.
        seed: shuffling seed; the same seed and manifest always give the same split.
        stratify: a task name to stratify on (class: the patient's most common class; multilabel: the patient's
            rarest positive label; regression: quartile of the first value), or None.
        official: use the dataset's official split where every record has ``meta["official_split"]``.

    Returns:
        ``{"train": Manifest, "val": Manifest, "test": Manifest}``; records keep their file order.

    Raises:
        ValueError: bad fractions, an unknown ``stratify`` task, or official splits that share a patient.
    """
    fr = _check_fractions(fractions)
    if stratify is not None and stratify not in manifest.label_names:
        raise ValueError(f"cannot stratify on {stratify!r}: manifest {manifest.kind!r} has tasks {manifest.tasks}")
    records = list(manifest)
    use_official = official and bool(records) and all("official_split" in r.meta for r in records)
    if use_official:
        parts = _official(records, fr, seed, stratify)
        names = sorted({r.meta["official_split"] for r in records})
        log.info("%s: using the official split (%s)", manifest.kind, ", ".join(names))
    else:
        parts = _split_records(records, fr, seed, stratify)
    out = {s: manifest.subset(parts.get(s, []), split=s) for s in SPLITS}
    check_leakage(out)
    return out


def check_leakage(*manifests: Manifest | Mapping[str, Manifest]) -> None:
    """Raise if any patient appears in two of the given splits.

    Args:
        *manifests: manifests (named by their ``split``, else by position), or one mapping name -> manifest.
            Patients are compared as (kind, patient id), so different datasets never collide.

    Raises:
        ValueError: naming the two splits and the shared patient ids (up to 10).

    Example:
        >>> from medzoo.data.manifest import Record, Manifest
        >>> a = Manifest("x", ".", [Record("1", "p1", "1.png")], split="train")
        >>> b = Manifest("x", ".", [Record("2", "p1", "2.png")], split="test")
        >>> check_leakage(a, b)
        Traceback (most recent call last):
        ...
        ValueError: patient leakage: 1 patient(s) in both 'train' and 'test': p1
    """
    named: list[tuple[str, Manifest]] = []
    for i, m in enumerate(manifests):
        if isinstance(m, Mapping):
            named.extend((str(k), v) for k, v in m.items())
        else:
            named.append((m.split or f"manifest {i}", m))
    seen = [(name, {(m.kind, r.patient_id) for r in m}) for name, m in named]
    for i, (name_a, pats_a) in enumerate(seen):
        for name_b, pats_b in seen[i + 1:]:
            shared = sorted(pid for _, pid in pats_a & pats_b)
            if shared:
                more = f" (and {len(shared) - 10} more)" if len(shared) > 10 else ""
                raise ValueError(f"patient leakage: {len(shared)} patient(s) in both {name_a!r} and {name_b!r}: "
                                 f"{', '.join(shared[:10])}{more}")
