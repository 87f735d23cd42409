"""A small synthetic corpus written in the exact on-disk formats of the public datasets, with learnable signal.

``write_synthetic_corpus(out_dir)`` writes (folder -> the ``open_dataset`` kind that reads it):

- ``ct/Task99_SynthLung`` -> ``msd``: CT phantoms (NIfTI, labels 1 lung, 2 lesion), ``dataset.json``;
  ``ct/medicalnet_{train,test}.txt`` -> ``medicalnet-list`` (data root ``ct``); ``ct/dicom/lung_000`` a DICOM
  series of volume 0 (when pydicom is importable).
- ``covidx-ct`` -> ``covidx-ct``: PNG slice series + ``{train,val,test}_COVIDx_CT-3A.txt`` with crop boxes;
  Normal / Pneumonia / COVID-19 differ by lesion pattern.
- ``nih`` -> ``nih-cxr14``: PNGs + ``Data_Entry_2017_v2020.csv``, split lists, ``BBox_List_2017.csv``; the 14
  findings are drawn at known places.
- ``chexpert/CheXpert-v1.0-small`` -> ``chexpert``; ``covidx-cxr`` -> ``covidx-cxr``; ``vindr`` -> ``vindr-cxr``
  (Kaggle ``train.csv`` with per-radiologist boxes, DICOM images; only when pydicom is importable).
- ``montgomery/MontgomerySet`` -> ``montgomery``; ``shenzhen/ChinaSet_AllFiles`` -> ``shenzhen`` (community
  masks in ``shenzhen/mask``).
- ``severity`` -> ``covid-severity``: CXRs with lung masks and both severity scales.
- ``rsna`` -> ``rsna-pneumonia`` (Kaggle box and detailed-class CSVs over DICOM images; only when pydicom is
  importable); ``tbx11k`` -> ``tbx11k`` (COCO-style JSON with TB boxes).

The corpus is reproducible: the same seed and size give byte-identical files. Each family draws from its own
seeded generator.

Example:
    >>> import tempfile
    >>> paths = write_synthetic_corpus(tempfile.mkdtemp(), seed=0, size="tiny")
    >>> sorted(paths)[:3]
    ['chexpert', 'covid-severity', 'covidx-ct']
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from medzoo.data.synth._common import SIZES, CorpusSize, write_text
from medzoo.data.synth.ct import write_covidx_ct, write_msd
from medzoo.data.synth.cxr import write_chexpert, write_covidx_cxr, write_nih
from medzoo.data.synth.rsna import write_rsna
from medzoo.data.synth.severity import write_severity
from medzoo.data.synth.tb import write_montgomery, write_shenzhen
from medzoo.data.synth.tbx11k import write_tbx11k
from medzoo.data.synth.vindr import write_vindr

__all__ = ["write_synthetic_corpus", "SIZES", "CorpusSize", "CORPUS_VERSION"]

log = logging.getLogger(__name__)
CORPUS_VERSION = 2  # 2: radiograph-like CXR anatomy (ribs, clavicles, devices, exposure)


def write_synthetic_corpus(out_dir: str | os.PathLike, seed: int = 0, size: str = "small",
                           dicom: bool = True) -> dict[str, Path]:
    """Write the synthetic corpus.

    Args:
        out_dir: destination folder (created; existing files of the corpus are overwritten).
        seed: base seed; every family derives its own generator from it.
        size: ``"small"`` (about 200 NIH CXRs at 96 px, 40 CT volumes 48x48x32, 60 COVIDx-CT patients;
            a few seconds) or ``"tiny"`` (for tests).
        dicom: also write the DICOM series and the VinDr-CXR and RSNA sets (skipped when pydicom is not installed).

    Returns:
        Dataset kind (or a descriptive name) -> the folder or file to open: ``msd``, ``medicalnet-list``,
        ``dicom-series`` (when written), ``covidx-ct``, ``nih-cxr14``, ``chexpert``, ``covidx-cxr``,
        ``vindr-cxr`` (when written), ``montgomery``, ``shenzhen``, ``shenzhen-masks``, ``covid-severity``,
        ``severity-cohen-csv``, ``severity-covidnet-s-csv``, ``severity-with-masks-csv``, ``rsna-pneumonia``
        (when written), ``tbx11k``.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    cfg, out = SIZES[size], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths: dict[str, Path] = {}
    ct = write_msd(out / "ct", seed, cfg, dicom=dicom)
    paths["msd"], paths["medicalnet-list"] = ct["msd"], ct["medicalnet"]
    if "dicom" in ct:
        paths["dicom-series"] = ct["dicom"]
    paths["covidx-ct"] = write_covidx_ct(out / "covidx-ct", seed, cfg)
    paths["nih-cxr14"] = write_nih(out / "nih", seed, cfg)
    paths["chexpert"] = write_chexpert(out / "chexpert", seed, cfg)
    paths["covidx-cxr"] = write_covidx_cxr(out / "covidx-cxr", seed, cfg)
    vindr = write_vindr(out / "vindr", seed, cfg) if dicom else None
    if vindr is not None:
        paths["vindr-cxr"] = vindr
    paths["montgomery"] = write_montgomery(out / "montgomery", seed, cfg)
    paths["shenzhen"], paths["shenzhen-masks"] = write_shenzhen(out / "shenzhen", seed, cfg)
    sev = write_severity(out / "severity", seed, cfg)
    paths["covid-severity"], paths["severity-cohen-csv"] = sev["root"], sev["cohen"]
    paths["severity-covidnet-s-csv"], paths["severity-with-masks-csv"] = sev["covidnet_s"], sev["with_masks"]
    rsna = write_rsna(out / "rsna", seed, cfg) if dicom else None
    if rsna is not None:
        paths["rsna-pneumonia"] = rsna
    paths["tbx11k"] = write_tbx11k(out / "tbx11k", seed, cfg)
    manifest = {"format": "medzoo-synthetic-corpus", "version": CORPUS_VERSION, "seed": seed, "size": size,
                "paths": {k: str(v.relative_to(out)) for k, v in sorted(paths.items())}}
    write_text(out / "corpus.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("wrote the %s synthetic corpus (seed %d) to %s in %.1f s", size, seed, out, time.perf_counter() - t0)
    return paths
