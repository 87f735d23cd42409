"""A bundle's preprocessing, step by step: each contract's chain as MONAI's parser builds it from the bundle config,
on a file as stored, against the contract written out with numpy and against medzoo's own pipeline."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from medzoo.data.contract import Preprocessing
from medzoo.data.pipeline import prepare
from medzoo.zoo.bundle import bundle_inference_config
from medzoo.zoo.bundle_inputs import bundle_preprocessing
from tests.zoo.test_bundle import MAX_VALUE, _bundle_imports


def _numpy_contract(raw: np.ndarray, c: Preprocessing, kind: str) -> np.ndarray:
    """medzoo's preprocessing contract for ``kind`` (less geometry) written out with numpy, on ``raw [C, *spatial]``
    as the file stores it."""
    x = raw.astype(np.float32)
    if c.rescale == "max_value":  # the file's maximum value: 255 (8-bit), 65535 (16-bit)
        x = x / np.float32(MAX_VALUE[raw.dtype])
    if kind != "volume" or c.rescale == "max_value":  # RGB -> grey, grey -> the network's channels
        x = x.mean(axis=0, keepdims=True) if x.shape[0] == 3 else x
        x = np.repeat(x, 1 if kind == "series" else c.channels, axis=0) if x.shape[0] == 1 else x
    v, norm = x.astype(np.float64), c.normalisation
    if norm in ("window", "linear", "meanstd"):
        lo, hi = c.intensity_window
        v = (np.clip(v, lo, hi) - lo) / (hi - lo)
    if norm == "linear":
        v = c.value_range[0] + v * (c.value_range[1] - c.value_range[0])
    if norm == "meanstd":
        shape = (-1,) + (1,) * (v.ndim - 1)
        v = (v - np.array(c.mean).reshape(shape)) / np.array(c.std).reshape(shape)
    if norm in ("minmax", "zscore", "zscore_nonzero") and c.intensity_window is not None:  # a clip first
        v = np.clip(v, *c.intensity_window)
        x = v.astype(np.float32)
    if norm == "minmax":
        v = (v - v.min()) / (v.max() - v.min())
    if norm in ("zscore", "zscore_nonzero"):
        sel = v[v > 0] if norm == "zscore_nonzero" else v
        z = (v - sel.mean()) / sel.std()
        if c.background == "zero":
            z = np.where(v == 0, 0.0, z)
        if c.background == "noise":  # N(0, 1) seeded by the sha256 of the input's float32 bytes
            seed = int.from_bytes(hashlib.sha256(x.tobytes()).digest()[:8], "little")
            z = np.where(v == 0, np.random.default_rng(seed).standard_normal(v.shape), z)
        v = z
    return v


def _raw(kind: str, dtype: str, channels: int = 1) -> np.ndarray:
    """A raw file's pixels ``[C, *spatial]``: integers over the dtype's range, or intensities with zeros (CT/MR)."""
    rng = np.random.default_rng(1)
    shape = (channels, 3, 6, 7) if kind != "image" else (channels, 6, 7)
    if dtype in ("uint8", "uint16"):
        return rng.integers(0, int(MAX_VALUE[np.dtype(dtype)]) + 1, size=shape).astype(dtype)
    return np.where(rng.random(shape) < 0.3, 0.0, rng.normal(50, 300, size=shape)).astype(dtype)


_CT = {"modality": ["CT"], "axes": "XYZ"}
_CXR = {"modality": ["CXR"], "axes": "HW", "rescale": "max_value"}
STEP_CASES = {  # id: (kind, contract, stored dtype, channels of the file)
    "none": ("volume", _CT, "float32", 1),
    "window": ("volume", {**_CT, "normalisation": "window", "intensity_window": [-200, 300]}, "float32", 1),
    "zscore-windowed": ("volume", {**_CT, "normalisation": "zscore", "intensity_window": [-500, 500]}, "float32", 1),
    "zscore_nonzero-keep": ("volume", {**_CT, "normalisation": "zscore_nonzero"}, "float32", 1),
    "zscore_nonzero-zero": ("volume", {**_CT, "normalisation": "zscore_nonzero", "background": "zero"}, "float32", 1),
    "zscore_nonzero-noise": ("volume", {"modality": ["CT"], "axes": "DHW", "normalisation": "zscore_nonzero",
                                        "background": "noise"}, "float32", 1),
    "minmax": ("volume", {**_CT, "normalisation": "minmax"}, "float64", 1),
    "volume-rescaled": ("volume", {**_CT, "rescale": "max_value", "normalisation": "window",
                                   "intensity_window": [0.1, 0.6]}, "uint16", 1),
    "linear-8bit": ("image", {**_CXR, "normalisation": "linear", "intensity_window": [0, 1],
                              "value_range": [-1024, 1024]}, "uint8", 1),
    "window-16bit": ("image", {**_CXR, "normalisation": "window", "intensity_window": [0.2, 0.8]}, "uint16", 1),
    "meanstd-grey-to-rgb": ("image", {**_CXR, "channels": 3, "normalisation": "meanstd", "intensity_window": [0, 1],
                                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "uint8", 1),
    "meanstd-rgb-file": ("image", {**_CXR, "channels": 3, "normalisation": "meanstd", "intensity_window": [0, 1],
                                   "mean": [0.45], "std": [0.226]}, "uint8", 3),
    "zscore-image": ("image", {**_CXR, "normalisation": "zscore"}, "uint16", 1),
    "series-window": ("series", {**_CXR, "modality": ["CT"], "normalisation": "window",
                                 "intensity_window": [0.25, 0.75]}, "uint8", 1),
}


@pytest.fixture
def bundle_chain(tmp_path):
    """``(contract, kind) -> Compose``: a bundle config's ``preprocessing`` as MONAI's parser builds it, with the
    bundle's ``scripts/medzoo_io.py``."""
    from monai.bundle import ConfigParser

    import medzoo.zoo._bundle_io as io_module

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "medzoo_io.py").write_text(Path(io_module.__file__).read_text())

    def build(contract: Preprocessing, kind: str):
        parser = ConfigParser(bundle_inference_config(bundle_preprocessing(contract, kind), []))
        sys.path.insert(0, str(tmp_path))
        return parser.get_parsed_content("preprocessing")

    with _bundle_imports():
        yield build


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_bundle_preprocessing_is_the_contract(case, bundle_chain, tmp_path):
    kind, spec, dtype, channels = STEP_CASES[case]
    contract = Preprocessing.from_dict(spec)
    raw = _raw(kind, dtype, channels)
    np.savez(tmp_path / "x.npz", image=raw)
    got = np.asarray(bundle_chain(contract, kind)({"image": str(tmp_path / "x.npz")})["image"])
    np.testing.assert_allclose(got, _numpy_contract(raw, contract, kind), atol=1e-5, rtol=1e-5)
    # and medzoo's own pipeline on the same pixels as it reads them: a series [N, C, H, W], a DHW volume [C, X, Y, Z]
    pixels = raw.swapaxes(0, 1) if kind == "series" else raw.transpose(0, 3, 2, 1) if contract.axes == "DHW" else raw
    ours = prepare(contract, pixels, {"max_value": MAX_VALUE.get(raw.dtype)}, kind).tensor[0].numpy()
    np.testing.assert_allclose(got, ours.swapaxes(0, 1) if kind == "series" else ours, atol=1e-5, rtol=1e-5)


def test_a_max_value_entry_overrides_the_dtype_and_other_dtypes_are_refused(bundle_chain, tmp_path):
    contract = Preprocessing.from_dict({**_CXR, "normalisation": "window", "intensity_window": [0, 1]})
    pre = bundle_chain(contract, "image")
    raw = np.arange(42, dtype=np.uint16).reshape(1, 6, 7) * 97  # a 12-bit DICOM's pixels (0..3977)
    np.savez(tmp_path / "dicom.npz", image=raw, max_value=4095)
    got = np.asarray(pre({"image": str(tmp_path / "dicom.npz")})["image"])
    np.testing.assert_allclose(got, raw / 4095, atol=1e-6)
    np.savez(tmp_path / "float.npz", image=raw.astype(np.float32))
    with pytest.raises(RuntimeError) as err:  # MONAI's Compose wraps the transform's error
        pre({"image": str(tmp_path / "float.npz")})
    assert isinstance(err.value.__cause__, ValueError)
    assert re.search(r"float\.npz: .*uint8 \(255\) or uint16 \(65535\).*got dtype float32", str(err.value.__cause__))
