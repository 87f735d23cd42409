"""MONAI bundles of an image, a volume and a series model, checked with MONAI's own tools.

One bundle per kind is written once (module fixture). MONAI's ``verify_metadata`` (offline, against the schema copy
medzoo ships), ``verify_net_in_out`` and the inference workflow run in-process on all three; the same commands run
as ``python -m monai.bundle ...`` subprocesses in the `slow` twin, and once by default on the image bundle, whose
labels, description, license and metrics carry MONAI syntax (``$`` code, ``@`` references, ``%`` macros).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medzoo.data.contract import contract_for, parse_preprocessing
from medzoo.zoo.bundle import (
    SCHEMA_URL,
    TaskNetwork,
    _postprocessing,
    bundle_inference_config,
    schema_file,
    write_bundle,
)
from medzoo.zoo.bundle_inputs import bundle_preprocessing
from medzoo.zoo.export import sha256_file
from medzoo.zoo.formats import ExportModule, example_input
from medzoo.zoo.publish import model_metadata
from tests.helpers import stats_model

W = [8, 16, 32, 64]
PAYLOAD = "$__import__('pathlib').Path('PWNED').touch()"
SYNTAX = ("$", "@", "%")
KINDS = {
    "volume": ({"encoder": {"name": "resnet10", "widths": W},
                "tasks": {"organs": {"type": "segmentation", "level": "volume", "labels": ["bg", "liver", "spleen"]},
                          "tumour": {"type": "classification", "level": "volume", "labels": ["no", "yes"]}}},
               "organs", {"modality": ["CT"], "normalisation": "window", "intensity_window": [-200, 300],
                          "value_range": [0, 1]}, {"spatial": (16, 32, 32)}, {}),
    "image": ({"encoder": {"name": "resnet18", "widths": W},
               "tasks": {"cxr": {"type": "multilabel", "level": "image",
                                 "labels": [PAYLOAD, "@network_def", "%bundle_root", "effusion"]}}},
              "cxr", {"modality": ["CXR"], "normalisation": "linear", "intensity_window": [0, 255],
                      "value_range": [-1024, 1024]}, {"spatial": (32, 32)},
              {"description": "$import this", "license": PAYLOAD, "source": "@device", "citation": "%imports",
               "metrics": {"val": {"_target_": "builtins.open", "file": "PWNED_TARGET", "mode": "w"}}}),
    "series": ({"encoder": {"name": "resnet10", "widths": W}, "aggregator": {"name": "attention"},
                "tasks": {"covid": {"type": "classification", "level": "series",
                                    "labels": ["normal", "pneumonia", "covid"]}}},
               "covid", {"series": {"modality": ["CT"], "axes": "HW", "rescale": "max_value",
                                    "normalisation": "window", "intensity_window": [0.2, 0.7]}},
               {"spatial": (32, 32), "slices": 3}, {}),
}
#: The maximum value of a file by the dtype its pixels are stored in (8-bit and 16-bit PNG).
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """kind -> (model, bundle folder, preprocessing contract, task)."""
    out = {}
    for kind, (cfg, task, contract, shape, extra) in KINDS.items():
        model = stats_model(cfg)
        meta = model_metadata(model, name=f"tiny.{kind}", preprocessing=contract, **extra)
        example = example_input(ExportModule(model, [task]), **shape)
        path = write_bundle(model, tmp_path_factory.mktemp(kind) / task, metadata=meta, task=task, example=example)
        out[kind] = (model, path, contract, task)
    return out


def _expected(kind: str, model: torch.nn.Module, raw: np.ndarray) -> np.ndarray:
    """What the bundle must save for a raw input, computed here: the contract written out, the eager model, then
    softmax (classes) or sigmoid (multilabel)."""
    if kind == "volume":
        x = (np.clip(raw, -200, 300) + 200) / 500
    elif kind == "image":  # the flat CXR contract: 8-bit window [0, 255] = [0, 1] of the file's maximum value
        x = np.clip(raw / MAX_VALUE[raw.dtype], 0, 1) * 2048 - 1024
    else:
        x = (np.clip(raw / MAX_VALUE[raw.dtype], 0.2, 0.7) - 0.2) / 0.5
    x = torch.from_numpy(x.astype(np.float32))[None]
    with torch.no_grad():
        logits = model(x.transpose(1, 2) if kind == "series" else x)[KINDS[kind][1]][0]
    return (torch.sigmoid(logits) if kind == "image" else torch.softmax(logits, dim=0)).numpy()


def _another(raw: np.ndarray) -> np.ndarray:
    """A second input: 8-bit pixels become other 16-bit ones (the 65535 path), raw intensities are shifted."""
    if raw.dtype == np.uint8:
        return raw.astype(np.uint16) * 200 + 7
    return raw * 0.5 + 3.0


@contextlib.contextmanager
def _bundle_imports():
    """MONAI imports the bundle's ``scripts`` package from its root; forget it afterwards."""
    path = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = path
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]


def _run_workflow(out: Path, dataset_dir: Path, output_dir: Path) -> list:
    from monai.bundle import ConfigWorkflow

    with _bundle_imports():
        wf = ConfigWorkflow(config_file=str(out / "configs" / "inference.json"), workflow_type="infer",
                            meta_file=str(out / "configs" / "metadata.json"), logging_file=False,
                            bundle_root=str(out), dataset_dir=str(dataset_dir), output_dir=str(output_dir))
        wf.initialize()
        count = wf.run()
        assert wf.check_properties() == []  # every required MONAI infer property is defined
        wf.finalize()
    return count


@pytest.mark.parametrize("kind", list(KINDS))
def test_bundle_layout(bundles, kind):
    _, out, _, _ = bundles[kind]
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/logging.conf", "models/model.ts",
                "models/model.pt", "docs/README.md", "LICENSE", "scripts/medzoo_io.py", "sample/sample.npz"):
        assert (out / rel).is_file(), rel
    assert not (out / "large_files.yml").exists()  # written only with a hosting url


@pytest.mark.parametrize("kind", list(KINDS))
def test_model_pt_is_the_state_dict_of_network_def(bundles, kind):
    _, out, _, _ = bundles[kind]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    net = torch.jit.load(str(out / "models" / "model.ts"))
    assert sorted(state) == sorted(net.state_dict())
    with torch.no_grad():
        for value in net.parameters():
            value.zero_()
    net.load_state_dict(state, strict=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("kind", list(KINDS))
def test_verify_metadata_passes_offline_against_the_shipped_schema(bundles, kind, tmp_path):
    from monai.bundle import verify_metadata

    _, out, _, _ = bundles[kind]
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["schema"] == SCHEMA_URL
    verify_metadata(meta_file=str(out / "configs" / "metadata.json"), filepath=str(schema_file()))
    del meta["network_data_format"]  # the check can fail: a required field is gone
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "m.json"), filepath=str(schema_file()))


@pytest.mark.parametrize("kind", list(KINDS))
def test_verify_net_in_out_passes(bundles, kind):
    from monai.bundle import verify_net_in_out

    _, out, _, _ = bundles[kind]
    for n, any_size in ((1, 1), (2, 3)):
        verify_net_in_out(net_id="network_def", meta_file=str(out / "configs" / "metadata.json"),
                          config_file=str(out / "configs" / "inference.json"), bundle_root=str(out), n=n,
                          any=any_size, device="cpu")


@pytest.mark.parametrize("kind", list(KINDS))
def test_bundle_workflow_runs_the_sample_and_matches_eager(bundles, kind, tmp_path):
    model, out, _, _ = bundles[kind]
    raw = np.load(out / "sample" / "sample.npz")["image"]
    other = _another(raw)
    np.savez(tmp_path / "other.npz", image=other)
    assert _run_workflow(out, out / "sample", tmp_path / "pred") == [1]  # the run expressions' results
    assert _run_workflow(out, tmp_path, tmp_path / "pred") == [1]
    for name, array in (("sample", raw), ("other", other)):
        got = np.load(tmp_path / "pred" / f"{name}.npz")["pred"]
        np.testing.assert_allclose(got, _expected(kind, model, array), atol=1e-4, rtol=1e-4)


def test_series_bundle_slices_are_the_first_spatial_axis_and_slice_outputs_channel_first():
    model = stats_model({"encoder": {"name": "resnet10", "widths": W}, "aggregator": {"name": "mean"},
                    "tasks": {"lesion": {"type": "multilabel", "level": "slice", "labels": ["ggo", "cons"]}}})
    net = TaskNetwork(ExportModule(model, ["lesion"]))
    x = torch.randn(2, 5, 1, 32, 32)
    with torch.no_grad():
        got, want = net(x.transpose(1, 2)), model(x)["lesion"]
    assert got.shape == (2, 2, 5)
    torch.testing.assert_close(got, want.transpose(1, 2), atol=1e-5, rtol=1e-5)


def _strings(obj, out: list[str]) -> list[str]:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.append(str(k))
            _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)
    return out


def test_no_bundle_file_holds_weight_or_user_text_as_monai_syntax(bundles):
    model, out, contract, task = bundles["image"]
    config = json.loads((out / "configs" / "inference.json").read_text())
    typed = contract_for(parse_preprocessing(contract), "image")
    assert config == bundle_inference_config(bundle_preprocessing(typed, "image"), _postprocessing("multilabel"))
    extra = {"metadata.json": ""}
    torch.jit.load(str(out / "models" / "model.ts"), _extra_files=extra)
    for name, text in (("metadata.json", (out / "configs" / "metadata.json").read_text()),
                       ("model.ts metadata", extra["metadata.json"])):
        strings = _strings(json.loads(text), [])
        assert [s for s in strings if s.startswith(SYNTAX)] == [], name
        assert "_target_" not in strings, name
        assert " " + PAYLOAD in strings, name  # kept, as data
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["0"] == " " + PAYLOAD


def test_monai_parses_the_crafted_text_as_data(bundles):
    from monai.bundle import ConfigParser

    _, out, _, _ = bundles["image"]
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    parser.read_meta(str(out / "configs" / "metadata.json"))
    meta = parser.get_parsed_content("_meta_")
    assert meta["description"] == " $import this"
    assert meta["medzoo_spec"]["license"] == " " + PAYLOAD
    assert meta["medzoo_spec"]["metrics"]["val"][" _target_"] == "builtins.open"
    assert not Path("PWNED").exists()


def test_monai_bundle_run_cli_on_the_crafted_bundle_runs_no_code(bundles, tmp_path):
    """The real command line, in the bundle folder with its relative paths, on the bundle's own sample."""
    model, out, _, _ = bundles["image"]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--output_dir", str(tmp_path / "cli")]
    done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Beautiful is better than ugly" not in done.stdout + done.stderr  # `$import this` never ran
    assert sorted(p.name for p in out.rglob("PWNED*")) == []
    got = np.load(tmp_path / "cli" / "sample.npz")["pred"]
    raw = np.load(out / "sample" / "sample.npz")["image"]
    np.testing.assert_allclose(got, _expected("image", model, raw), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_monai_bundle_cli_verifies_and_runs_each_kind(bundles, kind, tmp_path):
    model, out, _, _ = bundles[kind]
    commands = [["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema_file())],
                ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                 "configs/inference.json", "--device", "cpu"],
                ["run", "--config_file", "configs/inference.json", "--output_dir", str(tmp_path / "cli")]]
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=out, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (args[0], done.stderr[-2000:])
    got = np.load(tmp_path / "cli" / "sample.npz")["pred"]
    raw = np.load(out / "sample" / "sample.npz")["image"]
    np.testing.assert_allclose(got, _expected(kind, model, raw), atol=1e-4, rtol=1e-4)


def test_large_files_hold_relative_paths_and_the_hosting_url(bundles, tmp_path):
    model, _, contract, task = bundles["volume"]
    meta = model_metadata(model, name="tiny.volume", preprocessing=contract)
    out = write_bundle(model, tmp_path / "hosted", metadata=meta, task=task, url="https://example.org/zoo/ct")
    large = yaml.safe_load((out / "large_files.yml").read_text())["large_files"]
    assert large == [{"path": f"models/{n}", "url": f"https://example.org/zoo/ct/{n}",
                      "hash_val": sha256_file(out / "models" / n), "hash_type": "sha256"}
                     for n in ("model.pt", "model.ts")]
    texts = [p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".yml", ".md", ".conf", "")
             and p.is_file()]
    assert [t for t in texts if str(tmp_path) in t or "file://" in t] == []


def test_write_bundle_replaces_only_a_bundle_or_an_empty_folder(bundles, tmp_path):
    model, out, contract, task = bundles["volume"]
    meta = model_metadata(model, name="tiny.volume", preprocessing=contract)
    with pytest.raises(FileExistsError, match="already exists"):
        write_bundle(model, out, metadata=meta, task=task)
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a MONAI bundle"):
        write_bundle(model, precious, metadata=meta, task=task, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    first = write_bundle(model, tmp_path / "empty", metadata=meta, task=task, overwrite=True)
    assert write_bundle(model, first, metadata=meta, task=task, overwrite=True) == first


def test_a_bundle_serves_one_chosen_task(bundles, tmp_path):
    model, _, _, _ = bundles["volume"]
    with pytest.raises(ValueError, match="one task"):
        write_bundle(model, tmp_path / "b", metadata={"name": "x"})


def test_the_shipped_schema_is_the_published_file():
    data = schema_file().read_bytes()
    # sha256 of https://project-monai.github.io/schema/meta_schema_20240725.json (= the 0.8.1 release asset)
    assert hashlib.sha256(data).hexdigest() == "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"
    assert "network_data_format" in json.loads(data)["required"]


def test_the_sample_is_stored_as_the_contract_reads_files(bundles):
    assert np.load(bundles["image"][1] / "sample" / "sample.npz")["image"].dtype == np.uint8
    assert np.load(bundles["series"][1] / "sample" / "sample.npz")["image"].dtype == np.uint8
    assert np.load(bundles["volume"][1] / "sample" / "sample.npz")["image"].dtype == np.float32


def test_metadata_and_readme_say_how_the_maximum_value_is_found(bundles):
    _, out, _, _ = bundles["series"]
    raw = json.loads((out / "configs" / "metadata.json").read_text())["medzoo_input"]
    assert "uint8 / 255, uint16 / 65535" in raw["intensity"]
    assert "`max_value` entry" in raw["intensity"]
    assert raw["geometry"].startswith("not in the bundle")
    readme = (out / "docs" / "README.md").read_text()
    assert f"- Intensity: {raw['intensity']}." in readme


def test_weights_without_a_contract_give_a_bundle_that_says_so(bundles, tmp_path, caplog):
    model, _, _, task = bundles["volume"]
    meta = model_metadata(model, name="tiny.volume")
    assert "preprocessing" not in meta
    with caplog.at_level("WARNING", logger="medzoo.zoo.bundle"):
        out = write_bundle(model, tmp_path / "raw", metadata=meta, task=task)
    assert "no preprocessing contract for volume inputs" in caplog.text
    config = json.loads((out / "configs" / "inference.json").read_text())
    assert [t["_target_"] for t in config["preprocessing"]["transforms"]] == ["LoadImaged", "EnsureTyped"]
    raw = json.loads((out / "configs" / "metadata.json").read_text())["medzoo_input"]
    assert "no preprocessing contract" in raw["intensity"]


@pytest.mark.parametrize("bits", [8, 16])
def test_bundle_output_equals_medzoo_predictor_on_the_same_png(bundles, bits, tmp_path):
    """An image contract with ``rescale: max_value``: the bundle on the PNG's pixels as stored == ``Predictor``."""
    from medzoo.data.imageio import write_png
    from medzoo.infer.inputs import discover_inputs, load_input
    from medzoo.infer.predict import Predictor

    model, out, contract, task = bundles["image"]
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    write_png(tmp_path / "cxr.png", rng.integers(0, 2 ** bits, size=(1, 32, 32)).astype(dtype))
    items, bad = discover_inputs([tmp_path / "cxr.png"])
    loaded = load_input(items[0])
    want = Predictor(model, preprocessing=contract).predict_loaded(loaded)[task].probs
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "cxr.npz", image=loaded.array)
    _run_workflow(out, tmp_path / "in", tmp_path / "pred")
    got = np.load(tmp_path / "pred" / "cxr.npz")["pred"]
    assert loaded.array.dtype == dtype
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_readme_bundle_commands_run_as_written(bundles, tmp_path):
    import os

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Exports", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)[-1].replace("\\\n", " ")
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("python -m monai")]
    assert [c.split()[3] for c in commands] == ["verify_metadata", "verify_net_in_out", "run"]
    _, out, _, _ = bundles["series"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=out, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert (out / "preds" / "sample.npz").is_file()
