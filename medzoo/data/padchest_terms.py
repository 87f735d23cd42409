"""The 193 PadChest label terms (174 radiographic findings + 19 differential diagnoses) and where each belongs.

PadChest's ``Labels`` column holds these terms, spelled as in the released CSV
(``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv``). Each term has:

- its **PadChest parents**: the broader terms above it in PadChest's own hierarchical taxonomy (for example
  ``laminar atelectasis`` -> ``atelectasis``, ``hydropneumothorax`` -> ``pleural effusion`` and ``pneumothorax``);
- its **vocabulary parents**: the names of :data:`medzoo.data.labels.CXR_VOCABULARY` it is an instance of, or
  none. A term inherits the vocabulary parents of its PadChest ancestors, so ``callus rib fracture`` ->
  ``rib fracture`` -> ``fracture`` gives ``Fracture``.

A vocabulary name is mapped only when every PadChest term that implies it is in its family: otherwise an image
with the unmapped hyponym would read as a negative. So ``Lung Opacity``, ``Enlarged Cardiomediastinum``,
``Aortic Enlargement``, ``Calcification`` and the other broad CheXpert/VinDr labels stay unmapped (NaN after
:func:`~medzoo.data.labels.relabel`). Look-alikes are not hyponyms: ``pseudonodule``, ``nipple shadow`` and
``end on vessel`` are not ``Nodule``; ``pericardial effusion`` is not a pleural ``Effusion``;
``subcutaneous emphysema`` is not ``Emphysema``.

Example:
    >>> len(PADCHEST_LABELS), padchest_ancestors("callus rib fracture")
    (193, ('rib fracture', 'fracture'))
    >>> padchest_vocabulary("loculated fissural effusion")
    ('Effusion',)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["PadChestTerm", "PADCHEST_TERMS", "PADCHEST_LABELS", "padchest_term", "padchest_ancestors",
           "padchest_vocabulary"]


@dataclass(frozen=True)
class PadChestTerm:
    """One PadChest label term.

    Attributes:
        term: the spelling in the CSV's ``Labels`` lists.
        kind: ``"finding"`` or ``"diagnosis"``.
        parents: the direct PadChest parent terms.
        vocabulary: the direct :data:`~medzoo.data.labels.CXR_VOCABULARY` parents (ancestors add theirs).
    """

    term: str
    kind: str
    parents: tuple[str, ...]
    vocabulary: tuple[str, ...]


# (term, PadChest parents, vocabulary parents); findings then diagnoses, each sorted case-insensitively.
_FINDINGS = (
    ("abnormal foreign body", (), ()),
    ("abscess", (), ()),
    ("adenopathy", ("hilar enlargement",), ()),
    ("air bronchogram", ("consolidation",), ()),
    ("air fluid level", (), ()),
    ("air trapping", (), ()),
    ("alveolar pattern", ("infiltrates",), ()),
    ("aortic aneurysm", ("mediastinal enlargement",), ()),
    ("aortic atheromatosis", (), ()),
    ("aortic button enlargement", ("aortic elongation",), ()),
    ("aortic elongation", (), ()),
    ("aortic endoprosthesis", ("endoprosthesis",), ()),
    ("apical pleural thickening", ("pleural thickening",), ()),
    ("artificial aortic heart valve", ("artificial heart valve",), ()),
    ("artificial heart valve", (), ("Support Devices",)),
    ("artificial mitral heart valve", ("artificial heart valve",), ()),
    ("ascendent aortic elongation", ("aortic elongation", "mediastinal enlargement"), ()),
    ("atelectasis", (), ("Atelectasis",)),
    ("atelectasis basal", ("atelectasis",), ()),
    ("axial hyperostosis", (), ()),
    ("azygoesophageal recess shift", (), ()),
    ("azygos lobe", (), ()),
    ("blastic bone lesion", ("sclerotic bone lesion",), ()),
    ("bone cement", ("surgery",), ()),
    ("breast mass", ("mass",), ()),
    ("bronchiectasis", (), ()),
    ("bronchovascular markings", (), ()),
    ("bullas", (), ()),
    ("calcified adenopathy", ("calcified densities", "adenopathy"), ()),
    ("calcified densities", (), ()),
    ("calcified fibroadenoma", ("calcified densities",), ()),
    ("calcified granuloma", ("calcified densities", "granuloma"), ()),
    ("calcified mediastinal adenopathy", ("calcified densities",), ()),
    ("calcified pleural plaques", ("calcified densities", "pleural plaques"), ()),
    ("calcified pleural thickening", ("calcified densities", "pleural thickening"), ()),
    ("callus rib fracture", ("rib fracture",), ()),
    ("cardiomegaly", (), ("Cardiomegaly",)),
    ("catheter", (), ("Support Devices",)),
    ("cavitation", (), ()),
    ("central vascular redistribution", ("vascular redistribution",), ()),
    ("central venous catheter", ("catheter",), ()),
    ("central venous catheter via jugular vein", ("central venous catheter",), ()),
    ("central venous catheter via subclavian vein", ("central venous catheter",), ()),
    ("central venous catheter via umbilical vein", ("central venous catheter",), ()),
    ("cervical rib", ("thoracic cage deformation",), ()),
    ("chest drain tube", (), ("Support Devices",)),
    ("Chilaiditi sign", (), ()),
    ("chronic changes", (), ()),
    ("clavicle fracture", ("fracture",), ()),
    ("consolidation", ("infiltrates",), ("Consolidation",)),
    ("costochondral junction hypertrophy", (), ()),
    ("costophrenic angle blunting", (), ()),
    ("cyst", (), ()),
    ("dai", ("electrical device",), ()),
    ("descendent aortic elongation", ("aortic elongation", "mediastinal enlargement"), ()),
    ("dextrocardia", (), ()),
    ("diaphragmatic eventration", (), ()),
    ("double J stent", (), ("Support Devices",)),
    ("dual chamber device", ("electrical device",), ()),
    ("electrical device", (), ("Support Devices",)),
    ("empyema", ("pleural effusion",), ()),
    ("end on vessel", ("pseudonodule",), ()),
    ("endoprosthesis", ("surgery",), ("Support Devices",)),
    ("endotracheal tube", (), ("Support Devices",)),
    ("esophagic dilatation", (), ()),
    ("exclude", (), ()),
    ("external foreign body", (), ()),
    ("fibrotic band", (), ()),
    ("fissure thickening", (), ()),
    ("flattened diaphragm", (), ()),
    ("fracture", (), ("Fracture",)),
    ("gastrostomy tube", (), ("Support Devices",)),
    ("goiter", ("mediastinal enlargement",), ()),
    ("granuloma", (), ()),
    ("ground glass pattern", ("infiltrates",), ()),
    ("gynecomastia", (), ()),
    ("heart valve calcified", ("calcified densities",), ()),
    ("hemidiaphragm elevation", (), ()),
    ("hiatal hernia", ("mediastinal enlargement",), ("Hernia",)),
    ("hilar congestion", (), ()),
    ("hilar enlargement", (), ()),
    ("humeral fracture", ("fracture",), ()),
    ("humeral prosthesis", ("prosthesis",), ("Support Devices",)),
    ("hydropneumothorax", ("pleural effusion", "pneumothorax"), ()),
    ("hyperinflated lung", (), ()),
    ("hypoexpansion", (), ()),
    ("hypoexpansion basal", (), ()),
    ("increased density", (), ()),
    ("infiltrates", (), ("Infiltration",)),
    ("interstitial pattern", ("infiltrates",), ()),
    ("kerley lines", (), ()),
    ("kyphosis", ("thoracic cage deformation",), ()),
    ("laminar atelectasis", ("atelectasis",), ()),
    ("lipomatosis", (), ()),
    ("lobar atelectasis", ("atelectasis",), ()),
    ("loculated fissural effusion", ("fissure thickening", "pleural effusion"), ()),
    ("loculated pleural effusion", ("pleural effusion",), ()),
    ("lung vascular paucity", (), ()),
    ("lytic bone lesion", (), ()),
    ("major fissure thickening", ("fissure thickening",), ()),
    ("mammary prosthesis", ("prosthesis",), ()),
    ("mass", (), ("Mass",)),
    ("mastectomy", ("surgery breast",), ()),
    ("mediastinal enlargement", (), ()),
    ("mediastinal mass", ("mediastinal enlargement", "mass"), ()),
    ("mediastinal shift", (), ()),
    ("mediastinic lipomatosis", (), ()),
    ("metal", ("surgery",), ()),
    ("miliary opacities", ("infiltrates",), ()),
    ("minor fissure thickening", ("fissure thickening",), ()),
    ("multiple nodules", ("nodule",), ()),
    ("nephrostomy tube", (), ("Support Devices",)),
    ("nipple shadow", ("pseudonodule",), ()),
    ("nodule", (), ("Nodule",)),
    ("non axial articular degenerative changes", (), ()),
    ("normal", (), ("No Finding",)),
    ("NSG tube", (), ("Support Devices",)),
    ("obesity", (), ()),
    ("osteopenia", (), ()),
    ("osteoporosis", (), ()),
    ("osteosynthesis material", ("surgery",), ("Support Devices",)),
    ("pacemaker", ("electrical device",), ()),
    ("pectum carinatum", ("thoracic cage deformation",), ()),
    ("pectum excavatum", ("thoracic cage deformation",), ()),
    ("pericardial effusion", (), ()),
    ("pleural effusion", (), ("Effusion",)),
    ("pleural mass", ("mass",), ()),
    ("pleural plaques", (), ()),
    ("pleural thickening", (), ("Pleural Thickening",)),
    ("pneumomediastinum", (), ()),
    ("pneumoperitoneo", (), ()),
    ("pneumothorax", (), ("Pneumothorax",)),
    ("prosthesis", ("surgery",), ()),
    ("pseudonodule", (), ()),
    ("pulmonary artery enlargement", ("hilar enlargement",), ()),
    ("pulmonary mass", ("mass",), ()),
    ("reservoir central venous catheter", ("central venous catheter",), ()),
    ("reticular interstitial pattern", ("interstitial pattern",), ()),
    ("reticulonodular interstitial pattern", ("interstitial pattern",), ()),
    ("rib fracture", ("fracture",), ()),
    ("right sided aortic arch", (), ()),
    ("round atelectasis", ("atelectasis",), ()),
    ("sclerotic bone lesion", (), ()),
    ("scoliosis", ("thoracic cage deformation",), ()),
    ("segmental atelectasis", ("atelectasis",), ()),
    ("single chamber device", ("electrical device",), ()),
    ("soft tissue mass", ("mass",), ()),
    ("sternoclavicular junction hypertrophy", (), ()),
    ("sternotomy", ("surgery",), ()),
    ("subacromial space narrowing", (), ()),
    ("subcutaneous emphysema", (), ()),
    ("suboptimal study", (), ()),
    ("superior mediastinal enlargement", ("mediastinal enlargement",), ()),
    ("supra aortic elongation", ("aortic elongation", "mediastinal enlargement"), ()),
    ("surgery", (), ()),
    ("surgery breast", ("surgery",), ()),
    ("surgery heart", ("surgery",), ()),
    ("surgery humeral", ("surgery",), ()),
    ("surgery lung", ("surgery",), ()),
    ("surgery neck", ("surgery",), ()),
    ("suture material", ("surgery",), ()),
    ("thoracic cage deformation", (), ()),
    ("total atelectasis", ("atelectasis",), ()),
    ("tracheal shift", (), ()),
    ("tracheostomy tube", (), ("Support Devices",)),
    ("unchanged", (), ()),
    ("vascular hilar enlargement", ("hilar enlargement",), ()),
    ("vascular redistribution", (), ()),
    ("ventriculoperitoneal drain tube", (), ("Support Devices",)),
    ("vertebral anterior compression", ("vertebral degenerative changes",), ()),
    ("vertebral compression", ("vertebral degenerative changes",), ()),
    ("vertebral degenerative changes", (), ()),
    ("vertebral fracture", ("fracture",), ()),
    ("volume loss", (), ()),
)
_DIAGNOSES = (
    ("asbestosis signs", ("pulmonary fibrosis",), ()),
    ("atypical pneumonia", ("pneumonia",), ()),
    ("bone metastasis", (), ()),
    ("COPD signs", (), ()),
    ("emphysema", (), ("Emphysema",)),
    ("heart insufficiency", (), ()),
    ("lepidic adenocarcinoma", (), ()),
    ("lung metastasis", (), ()),
    ("lymphangitis carcinomatosa", (), ()),
    ("pneumonia", (), ("Pneumonia",)),
    ("post radiotherapy changes", ("pulmonary fibrosis",), ()),
    ("pulmonary artery hypertension", ("pulmonary hypertension",), ()),
    ("pulmonary edema", (), ("Edema",)),
    ("pulmonary fibrosis", (), ("Fibrosis",)),
    ("pulmonary hypertension", (), ()),
    ("pulmonary venous hypertension", ("pulmonary hypertension",), ()),
    ("respiratory distress", (), ()),
    ("tuberculosis", (), ()),
    ("tuberculosis sequelae", ("tuberculosis",), ()),
)

#: All 193 terms: 174 findings then 19 diagnoses.
PADCHEST_TERMS: tuple[PadChestTerm, ...] = tuple(
    [PadChestTerm(t, "finding", p, v) for t, p, v in _FINDINGS]
    + [PadChestTerm(t, "diagnosis", p, v) for t, p, v in _DIAGNOSES]
)
#: The term names, in :data:`PADCHEST_TERMS` order (``label_space="padchest"``).
PADCHEST_LABELS: list[str] = [t.term for t in PADCHEST_TERMS]
_BY_NAME = {t.term: t for t in PADCHEST_TERMS}


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower()


_BY_KEY = {_key(t.term): t.term for t in PADCHEST_TERMS}


def padchest_term(name: str) -> str | None:
    """The table spelling of a PadChest term (matching ignores case and repeated spaces), or None if unknown."""
    return _BY_KEY.get(_key(name))


@functools.cache
def padchest_ancestors(term: str) -> tuple[str, ...]:
    """Every PadChest term above ``term`` in the taxonomy, nearest first (empty for a top-level term)."""
    out: list[str] = []
    for parent in _BY_NAME[term].parents:
        for t in (parent, *padchest_ancestors(parent)):
            if t not in out:
                out.append(t)
    return tuple(out)


@functools.cache
def padchest_vocabulary(term: str) -> tuple[str, ...]:
    """The vocabulary names ``term`` is an instance of: its own and those of its PadChest ancestors."""
    out: list[str] = []
    for t in (term, *padchest_ancestors(term)):
        out += [v for v in _BY_NAME[t].vocabulary if v not in out]
    return tuple(out)
