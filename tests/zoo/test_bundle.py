"""MONAI bundle export: MONAI's layout, and monai.bundle loads and runs it with outputs equal to eager."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from medzoo.models import create_model
from medzoo.zoo.bundle import write_bundle
from medzoo.zoo.export import sha256_file
from medzoo.zoo.publish import model_metadata

W = [8, 16, 32, 64]
CFG = {"encoder": {"name": "resnet10", "widths": W},
       "tasks": {"organs": {"type": "segmentation", "level": "volume", "labels": ["bg", "liver", "spleen"]},
                 "tumour": {"type": "classification", "level": "volume", "labels": ["no", "yes"]}}}
SIZE = (16, 32, 32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(5)
    model = create_model(CFG).eval()
    meta = model_metadata(model, name="tiny.ct", license="Apache-2.0", description="tiny CT model",
                          preprocessing={"modality": ["CT"], "normalisation": "window",
                                         "intensity_window": [-200, 300], "value_range": [0, 1]})
    out = write_bundle(model, tmp_path_factory.mktemp("b") / "tiny_ct", metadata=meta,
                       example=(torch.randn(1, 1, *SIZE),))
    inputs = tmp_path_factory.mktemp("inputs")
    cases = {}
    for i in range(2):
        x = torch.rand(1, *SIZE)
        np.savez(inputs / f"case{i}.npz", image=x.numpy())
        cases[f"case{i}"] = x
    return model, out, inputs, cases


def test_bundle_layout_and_metadata(bundle):
    _, out, _, _ = bundle
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md",
                "large_files.yml", "LICENSE", "scripts/medzoo_io.py"):
        assert (out / rel).is_file(), rel
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["spatial_shape"] == list(SIZE)
    assert fmt["inputs"]["image"]["value_range"] == [0, 1] and fmt["inputs"]["image"]["modality"] == "CT"
    assert fmt["outputs"]["organs"]["channel_def"] == {"0": "bg", "1": "liver", "2": "spleen"}
    assert meta["medzoo_spec"]["name"] == "tiny.ct" and meta["version"] == "1.0.0"
    large = yaml.safe_load((out / "large_files.yml").read_text())["large_files"]
    assert large == [{"path": "models/model.ts", "url": (out / "models" / "model.ts").resolve().as_uri(),
                      "hash_val": sha256_file(out / "models" / "model.ts"), "hash_type": "sha256"}]
    config = json.loads((out / "configs" / "inference.json").read_text())
    assert config["network_def"].startswith("$torch.jit.load(") and config["evaluator"]["network"] == "@network"
    assert config["task_names"] == ["organs", "tumour"]


def test_monai_config_workflow_runs_the_bundle(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    model, out, inputs, cases = bundle
    wf = ConfigWorkflow(config_file=str(out / "configs" / "inference.json"), workflow_type="infer",
                        meta_file=str(out / "configs" / "metadata.json"), bundle_root=str(out),
                        dataset_dir=str(inputs), output_dir=str(tmp_path / "pred"))
    wf.initialize()
    assert wf.run() == [2]
    assert wf.check_properties() == []  # every required MONAI infer property is defined
    wf.finalize()
    for name, x in cases.items():
        got = np.load(tmp_path / "pred" / f"{name}.npz")
        with torch.no_grad():
            want = model(x[None])
        assert got["organs"].shape == (3, *SIZE)
        for task in ("organs", "tumour"):
            np.testing.assert_allclose(got[task], want[task][0].numpy(), atol=1e-4, rtol=1e-4)


def test_monai_config_parser_builds_the_network(bundle):
    from monai.bundle import ConfigParser

    model, out, _, cases = bundle
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    parser["bundle_root"] = str(out)
    net = parser.get_parsed_content("network")
    with torch.no_grad():
        got, want = net(cases["case0"][None]), model(cases["case0"][None])
    torch.testing.assert_close(got[1], want["tumour"], atol=1e-4, rtol=1e-4)


def test_write_bundle_refuses_an_existing_folder(bundle):
    model, out, _, _ = bundle
    with pytest.raises(FileExistsError, match="already exists"):
        write_bundle(model, out, metadata={"name": "x"})


@pytest.mark.slow
def test_monai_bundle_cli_runs_the_bundle(bundle, tmp_path):
    model, out, inputs, cases = bundle
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(out / "configs" / "inference.json"),
           "--bundle_root", str(out), "--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "cli")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    got = np.load(tmp_path / "cli" / "case1.npz")
    with torch.no_grad():
        want = model(cases["case1"][None])
    np.testing.assert_allclose(got["tumour"], want["tumour"][0].numpy(), atol=1e-4, rtol=1e-4)
