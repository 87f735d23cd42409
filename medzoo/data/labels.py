"""The harmonised chest X-ray pathology vocabulary, and relabelling of ``findings`` vectors into it.

Each dataset keeps its own label spelling in ``label_names["findings"]``. :data:`CXR_VOCABULARY` is the union
of the findings of NIH ChestX-ray14 (14), CheXpert/MIMIC (14), VinDr-CXR (14 + "No finding") and the common
PadChest terms, under one canonical name each. :data:`SYNONYMS` lists, explicitly, every dataset spelling that
maps to a canonical name. Matching is case-insensitive and treats ``_`` as a space, so ``Pleural_Thickening``
(NIH), ``Pleural Thickening`` and ``pleural thickening`` (PadChest) meet. Notable mappings:

=====================  ==================================================================================
canonical              dataset spellings
=====================  ==================================================================================
Effusion               NIH ``Effusion``; CheXpert/MIMIC ``Pleural Effusion``; VinDr ``Pleural effusion``;
                       PadChest ``pleural effusion``
Infiltration           NIH ``Infiltration``; NIH BBox ``Infiltrate``; VinDr ``Infiltration``; PadChest
                       ``infiltrates``
Pleural Thickening     NIH ``Pleural_Thickening``; VinDr ``Pleural thickening``; PadChest ``pleural thickening``
Fibrosis               NIH ``Fibrosis``; VinDr ``Pulmonary fibrosis``; PadChest ``pulmonary fibrosis``
Hernia                 NIH ``Hernia``; PadChest ``hiatal hernia``
Edema                  NIH/CheXpert ``Edema``; PadChest ``pulmonary edema``
No Finding             CheXpert ``No Finding``; VinDr ``No finding``; PadChest ``normal``
Nodule/Mass            VinDr ``Nodule/Mass`` (NIH and CheXpert keep ``Nodule`` and ``Mass`` apart)
=====================  ==================================================================================

:func:`relabel` reorders a manifest's ``findings`` vectors into a vocabulary: a label the dataset lacks is NaN,
never 0, so a loss masks it rather than learning a false negative. Where several dataset labels stand for one
name, the name is 1 if any of them is 1, 0 only if all of them are 0, else NaN. Beyond synonyms:

- **PadChest hyponyms.** In a ``padchest`` manifest each term also stands for its vocabulary parents
  (:mod:`medzoo.data.padchest_terms`): ``loculated pleural effusion`` gives ``Effusion = 1``, ``normal`` alone
  gives 0 for every mapped name, and a name is never 0 while a term of its family is present.
- **Unions** (:data:`UNIONS`). ``Nodule/Mass`` is ``Nodule`` or ``Mass``: a dataset with the two (NIH) gives it
  from them, and a dataset with only the union (VinDr) gives ``Nodule = Mass = 0`` where the union is 0.
- **No Finding** of datasets that label every finding exhaustively but have no such column (NIH, VinDr, RSNA)
  comes from the readers' ``meta["no_finding"]``: 1 when the image has none of the dataset's findings, else 0.

Example:
    >>> canonical_label("Pleural_Thickening"), canonical_label("pleural effusion")
    ('Pleural Thickening', 'Effusion')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medzoo.data.manifest import Manifest, Record
from medzoo.data.padchest_terms import padchest_term, padchest_vocabulary

__all__ = ["CXR_VOCABULARY", "SYNONYMS", "canonical_label", "relabel"]

log = logging.getLogger(__name__)

#: canonical name -> every dataset spelling of it (the canonical spelling itself is implied).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Effusion": ("Pleural Effusion", "Pleural effusion", "pleural effusion"),
    "Infiltration": ("Infiltrate", "infiltrates"),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
    "Consolidation": ("consolidation",),
    "Edema": ("pulmonary edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("Pulmonary fibrosis", "pulmonary fibrosis"),
    "Pleural Thickening": ("Pleural_Thickening", "Pleural thickening", "pleural thickening"),
    "Hernia": ("hiatal hernia",),
    "Enlarged Cardiomediastinum": (),
    "Lung Opacity": (),
    "Lung Lesion": (),
    "Pleural Other": (),
    "Fracture": ("fracture",),
    "Support Devices": (),
    "Aortic Enlargement": ("Aortic enlargement",),
    "Calcification": (),
    "ILD": ("interstitial lung disease",),
    "Nodule/Mass": (),
    "Other Lesion": ("Other lesion",),
    "No Finding": ("No finding", "normal"),
}

#: The harmonised CXR vocabulary (canonical names, in a fixed order: NIH 14 first, then the rest).
CXR_VOCABULARY: list[str] = list(SYNONYMS)


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


_LOOKUP: dict[str, str] = {_key(s): canon for canon, spellings in SYNONYMS.items() for s in (canon, *spellings)}


def canonical_label(name: str) -> str | None:
    """The canonical vocabulary name of a dataset label, or None when the vocabulary has no such finding."""
    return _LOOKUP.get(_key(name))


#: A vocabulary name that is exactly "any of" others: derived from them when the dataset lacks it, and a 0 for it
#: makes each of them 0.
UNIONS: dict[str, tuple[str, ...]] = {"Nodule/Mass": ("Nodule", "Mass")}
NO_FINDING = "No Finding"


def _combine(values: np.ndarray) -> float:
    """Several dataset labels behind one name: 1 if any is 1, 0 if all are 0, else NaN (unknown)."""
    if np.any(values == 1):
        return 1.0
    if len(values) and np.all(values == 0):
        return 0.0
    return float("nan")


def _targets(name: str, padchest: bool) -> list[str]:
    """The canonical names a dataset label stands for (PadChest terms also stand for their vocabulary parents)."""
    out = [c] if (c := canonical_label(name)) else []
    term = padchest_term(name) if padchest else None
    if term is not None:
        out += [v for v in padchest_vocabulary(term) if v not in out]
    return out


@dataclass
class _Slot:
    """Where one vocabulary entry takes its value from."""

    members: list[int]  # dataset labels it stands for (a 1 among them is positive)
    negative_from: list[int]  # dataset labels of a union that contains it: a 0 there makes it 0
    meta_no_finding: bool  # read ``meta["no_finding"]`` (readers of exhaustively labelled datasets set it)


def _plan(source: Sequence[str], vocabulary: Sequence[str], unmapped: str, padchest: bool) -> list[_Slot]:
    targets = [_targets(name, padchest) for name in source]

    def members(canon: str | None) -> list[int]:
        return [j for j, t in enumerate(targets) if canon in t]

    plan, used = [], set()
    for v in vocabulary:
        canon = canonical_label(v) or _key(v)
        own = members(canon)
        for part in UNIONS.get(canon, ()) if not own else ():
            own += [j for j in members(part) if j not in own]
        negative = [j for union, parts in UNIONS.items() if canon in parts for j in members(union)]
        plan.append(_Slot(own, negative, canon == NO_FINDING and not own))
        used.update(own + negative)
    dropped = [name for j, name in enumerate(source) if j not in used]
    if dropped and unmapped == "error":
        raise ValueError(f"labels {dropped} have no place in the vocabulary {list(vocabulary)}")
    if dropped:
        log.info("relabel: dropping labels not in the vocabulary: %s", dropped)
    return plan


def _value(slot: _Slot, src: np.ndarray, meta: dict) -> float:
    value = _combine(src[slot.members])
    if np.isnan(value) and slot.negative_from and np.all(src[slot.negative_from] == 0):
        return 0.0
    if slot.meta_no_finding:
        return float(meta.get("no_finding", np.nan))
    return value


def relabel(manifest: Manifest, vocabulary: Sequence[str] = CXR_VOCABULARY, *, task: str = "findings",
            unmapped: str = "drop") -> Manifest:
    """Map each record's ``task`` vector into ``vocabulary`` order; labels the dataset lacks become NaN.

    See the module docstring for how synonyms, PadChest hyponyms, unions and ``meta["no_finding"]`` combine.

    Args:
        manifest: a manifest with a multilabel ``task``.
        vocabulary: target label names (canonical names or any known spelling); default :data:`CXR_VOCABULARY`.
        task: the multilabel task to map.
        unmapped: ``"drop"`` (log and drop dataset labels the vocabulary lacks) or ``"error"``.

    Returns:
        A new manifest: ``label_names[task] == list(vocabulary)`` and vectors of shape ``[len(vocabulary)]``;
        other tasks, meta and ``skipped`` are kept.

    Example:
        >>> from medzoo.data.manifest import Record, Manifest
        >>> m = Manifest("x", ".", [Record("a", "p", "a.png", {"findings": np.array([1.0, 0.0])})],
        ...              {"findings": ["Effusion", "Pleural_Thickening"]})
        >>> relabel(m, ["Pleural Effusion", "Pleural Thickening", "Edema"])[0].labels["findings"]
        array([ 1.,  0., nan], dtype=float32)
    """
    if unmapped not in ("drop", "error"):
        raise ValueError(f"unmapped must be 'drop' or 'error', got {unmapped!r}")
    if task not in manifest.label_names:
        raise KeyError(f"manifest {manifest.kind!r} has no task {task!r}; it has {manifest.tasks}")
    plan = _plan(manifest.label_names[task], vocabulary, unmapped, padchest=manifest.kind == "padchest")
    records = []
    for rec in manifest:
        src = np.asarray(rec.labels.get(task, np.full(len(manifest.label_names[task]), np.nan)), dtype=np.float32)
        vec = np.array([_value(slot, src, rec.meta) for slot in plan], dtype=np.float32)
        records.append(Record(rec.id, rec.patient_id, rec.image, {**rec.labels, task: vec}, dict(rec.meta)))
    label_names = {**manifest.label_names, task: list(vocabulary)}
    return Manifest(manifest.kind, manifest.root, records, label_names, manifest.split, list(manifest.skipped))
