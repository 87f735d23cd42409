"""The preprocessing contract: validation naming the key, the earlier flat format migrated, presets, YAML files."""

from __future__ import annotations

import pytest
import yaml

from medzoo.data.contract import Preprocessing, SpecError, contract_for, migrate_legacy, parse_preprocessing
from medzoo.data.presets import (
    contracts_from_run,
    ct_contract,
    cxr_contract,
    load_preprocessing,
    medicalnet_contract,
    preset_contract,
    txv_contract,
)

CT = {"modality": ["CT"], "axes": "XYZ", "orientation": "RAS", "spacing": [1.5, 1.5, 2.0], "normalisation": "window",
      "intensity_window": [-1000, 400], "input_size": [32, 32, 32]}


def test_round_trip_states_every_field():
    c = Preprocessing.from_dict(CT)
    d = c.to_dict()
    assert Preprocessing.from_dict(d) == c
    assert set(d) == set(Preprocessing.__dataclass_fields__)  # stated explicitly, defaults included
    assert (c.dims, c.size_mode, c.output_range) == (3, "patch", (0.0, 1.0))


@pytest.mark.parametrize("change, key, words", [
    ({"axes": "ZYX"}, "axes", "expected one of"),
    ({"orientation": "RAR"}, "orientation", "one of L/R, A/P and S/I"),
    ({"spacing": [1.5, 1.5]}, "spacing", "list of 3 items"),
    ({"spacing": [1.5, 0, 1]}, "spacing[1]", "number > 0"),
    ({"normalisation": "linear"}, "value_range", "maps intensity_window onto value_range"),
    ({"background": "noise"}, "background", "only normalisation 'zscore_nonzero'"),
    ({"crop": "square"}, "crop", "crops 2-D images"),
    ({"size_mode": "resize", "input_size": None}, "input_size", "resizes to input_size"),
    ({"resize": "nearest"}, "resize", "only used with size_mode 'resize'"),
    ({"intensity_window": [400, -1000]}, "intensity_window", "low < high"),
    ({"windoww": 1}, "<root>", "unknown key(s) ['windoww']"),
])
def test_invalid_contracts_name_the_key(change, key, words):
    with pytest.raises(SpecError, match=rf"entry x: key '{key}'.*{words}".replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        Preprocessing.from_dict({**CT, **change}, "entry x")


def test_legacy_medicalnet_contract_becomes_medicalnets_steps():
    old = {"modality": ["CT", "MR"], "normalisation": "zscore_nonzero", "intensity_window": None,
           "input_size": [56, 448, 448], "resize": "nearest", "spacing": None, "orientation": None}
    c = Preprocessing.from_dict(old)
    assert c.axes == "DHW"
    assert (c.background, c.crop, c.crop_predict) == ("noise", "foreground", False)
    assert (c.size_mode, c.resize) == ("resize", "nearest")


def test_legacy_2d_contract_reads_images_scaled_by_their_maximum():
    old = {"modality": ["CXR"], "normalisation": "linear", "intensity_window": [0, 255], "value_range": [-1024, 1024],
           "input_size": [224, 224], "resize": "bilinear"}
    new = migrate_legacy(old)
    assert (new["axes"], new["rescale"]) == ("HW", "max_value")
    assert new["intensity_window"] == [0.0, 1.0]  # [0, 255] of an 8-bit image is [0, 1] after rescale
    assert (new["size_mode"], new["resize"]) == ("resize", "linear")


def test_legacy_3d_contract_keeps_the_array_axes_and_its_patch():
    c = Preprocessing.from_dict({"modality": "CT", "normalisation": "window", "intensity_window": [-1000, 400],
                                 "input_size": [32, 64, 64], "value_range": [0, 1]})
    assert (c.axes, c.size_mode, c.input_size) == ("XYZ", "patch", (32, 64, 64))
    assert c.value_range is None  # a range check then; the window guarantees [0, 1] now


def test_parse_keyed_and_flat_forms():
    keyed = parse_preprocessing({"volume": CT, "image": cxr_contract(64).to_dict()})
    assert sorted(keyed) == ["image", "volume"]
    assert parse_preprocessing(cxr_contract(64).to_dict()) == {"image": cxr_contract(64)}
    assert parse_preprocessing(None) == {}


def test_an_image_contract_serves_slice_series():
    contracts = {"image": cxr_contract(32)}
    assert contract_for(contracts, "series") == cxr_contract(32)
    assert contract_for(contracts, "volume") is None


def test_presets_by_name_and_yaml_files(tmp_path):
    assert load_preprocessing("medicalnet") == {"volume": medicalnet_contract()}
    assert sorted(load_preprocessing("none")) == ["image", "series", "volume"]
    flat = tmp_path / "c.yaml"
    flat.write_text(yaml.safe_dump(CT))
    assert load_preprocessing(flat) == {"volume": Preprocessing.from_dict(CT)}
    keyed = tmp_path / "k.yaml"
    keyed.write_text(yaml.safe_dump({"preprocessing": {"image": txv_contract().to_dict()}}))
    assert load_preprocessing(keyed) == {"image": txv_contract()}
    with pytest.raises(FileNotFoundError, match="'ctt': neither a preset"):
        load_preprocessing("ctt")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CT, "axes": "XY"}))
    with pytest.raises(SpecError, match="bad.yaml: key 'axes'"):
        load_preprocessing(bad)


def test_training_preset_options_are_contract_fields():
    c = preset_contract("ct", [16], {"spacing": [2, 2, 3], "hu_window": [-100, 200], "orientation": "LPS"})
    assert c == ct_contract((-100, 200), (2, 2, 3), 16, "LPS")
    assert c.input_size == (16, 16, 16)
    assert preset_contract("medicalnet", [14, 28, 28], {"background": "zero"}).background == "zero"
    assert preset_contract("cxr", [32], {"intensity_range": [-1, 1]}).value_range == (-1.0, 1.0)
    with pytest.raises(SpecError, match=r"data\[2\].transform.options: unknown option\(s\) \['spacingg'\]"):
        preset_contract("ct", None, {"spacingg": 1}, "data[2].transform")


def test_contracts_derived_from_a_stored_run_config():
    """Checkpoints written before contracts were recorded: their run config's presets, slice_size folded in."""
    run = {"model": {"tasks": {"seg": {"level": "volume"}, "covid": {"level": "series"}, "f": {"level": "image"}}},
           "data": [{"tasks": {"m": "seg"}, "transform": {"preset": "ct", "size": [24], "options": {"spacing": 2}}},
                    {"tasks": {"c": "covid"}, "slice_size": [40, 40], "transform": {"preset": "series"}},
                    {"tasks": {"x": "f"}}]}
    got = contracts_from_run(run)
    assert got["volume"] == ct_contract(spacing=2, patch=24)
    assert got["series"].input_size == (40, 40)
    assert got["image"].normalisation == "none" and got["image"].axes == "HW"  # preset none: as read, stated
