"""Export round trips: eager vs TorchScript and ONNX (onnxruntime), and `medzoo export` on a training checkpoint.

One ONNX export only (it is slow): the CLI export of a series checkpoint, checked at two batch sizes and two slice
counts. TorchScript is checked for series, image and volume models (shortcut A and B).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import yaml

from medzoo.cli import export_cmd
from medzoo.config import to_dict
from medzoo.models import create_model
from medzoo.zoo.formats import ExportModule, example_input, export_torchscript, run_onnx
from tests.helpers import randomize_bn

W = [8, 16, 32, 64]
SERIES = {"encoder": {"name": "resnet10", "widths": W}, "aggregator": {"name": "attention"},
          "tasks": {"covid": {"type": "classification", "level": "series", "labels": ["normal", "pneumonia", "covid"]},
                    "lesion": {"type": "multilabel", "level": "slice", "labels": ["ggo", "consolidation"]}}}


def _model(cfg: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(create_model(cfg), seed)


def _series(b: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 1, 32, 32, generator=g)
    pad = torch.zeros(b, n, dtype=torch.bool)
    pad[0, n // 2 + 1:] = True  # the first series is shorter
    return x, pad


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """A training checkpoint (saved by the checkpoint contract) exported with every format."""
    root = tmp_path_factory.mktemp("cli")
    model = _model(SERIES)
    ckpt = root / "best.pt"
    run_config = {"model": to_dict(model.config)}
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {},
                "step": 10, "epoch": 1, "best": 0.9, "config": yaml.safe_dump(run_config), "versions": {}}, ckpt)
    out = root / "export"
    code = _cli(["export", str(ckpt), "--out", str(out), "--format", "safetensors,torchscript,onnx,bundle",
                 "--input-size", "32,32", "--name", "tiny.covid", "--license", "MIT"])
    assert code == 0
    return model, out


@pytest.mark.parametrize("b, n", [(2, 3), (3, 6)])
def test_onnx_matches_eager_for_two_batch_sizes_and_slice_counts(cli_export, b, n):
    model, out = cli_export
    x, pad = _series(b, n, seed=b * 10 + n)
    got = run_onnx(out / "model.onnx", x, pad)
    with torch.no_grad():
        want = model(x, pad_mask=pad)
    assert set(got) == {"covid", "lesion"}
    for task in want:
        torch.testing.assert_close(got[task], want[task], atol=1e-4, rtol=1e-4)
    assert torch.all(got["lesion"][pad] == 0)


@pytest.mark.parametrize("b, n", [(1, 2), (4, 5)])
def test_torchscript_matches_eager(cli_export, b, n):
    model, out = cli_export
    extra = {"metadata.json": "", "task_names.json": ""}
    ts = torch.jit.load(str(out / "model.ts"), _extra_files=extra)
    names = json.loads(extra["task_names.json"])
    assert names == ["covid", "lesion"] and json.loads(extra["metadata.json"])["name"] == "tiny.covid"
    x, pad = _series(b, n, seed=7 + n)
    with torch.no_grad():
        got, want = ts(x, pad), model(x, pad_mask=pad)
    for task, value in zip(names, got):
        torch.testing.assert_close(value, want[task], atol=1e-4, rtol=1e-4)


def test_create_model_on_the_cli_export_is_exact(cli_export):
    model, out = cli_export
    again = create_model(out).eval()
    sa, sb = model.state_dict(), again.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x, pad = _series(2, 4, seed=1)
    with torch.no_grad():
        assert torch.equal(again(x, pad_mask=pad)["covid"], model(x, pad_mask=pad)["covid"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tasks"]["covid"]["labels"] == ["normal", "pneumonia", "covid"]
    assert meta["source"] == "training checkpoint best.pt"
    assert meta["license"] == "MIT"
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.yaml", "metadata.json", "README.md",
                                                "model.ts", "model.onnx", "bundle"}


def test_cli_bundle_runs_with_monai(cli_export, tmp_path):
    from monai.bundle import ConfigWorkflow

    model, out = cli_export
    x, pad = _series(1, 5, seed=3)
    np.savez(tmp_path / "case.npz", image=x[0].numpy(), pad_mask=pad[0].numpy())
    bundle = out / "bundle"
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="infer",
                        meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
                        dataset_dir=str(tmp_path), output_dir=str(tmp_path / "out"))
    wf.initialize()
    wf.run()
    wf.finalize()
    got = np.load(tmp_path / "out" / "case.npz")
    with torch.no_grad():
        want = model(x, pad_mask=pad)
    for task in want:
        np.testing.assert_allclose(got[task], want[task][0].numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cfg, spatial", [
    ({"encoder": {"name": "resnet18", "widths": W},
      "tasks": {"seg": {"type": "segmentation", "level": "image", "labels": ["bg", "lung"]},
                "cxr": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"]}}}, (32, 32)),
    ({"encoder": {"name": "resnet10", "widths": W, "output_stride": 8},
      "tasks": {"seg": {"type": "medicalnet_seg", "level": "volume", "labels": ["bg", "organ"]},
                "cls": {"type": "classification", "level": "volume", "labels": ["no", "yes"]}}}, (16, 32, 32)),
])
def test_torchscript_image_and_volume_models(cfg, spatial, tmp_path):
    model = _model(cfg)
    module = ExportModule(model)
    path = export_torchscript(module, tmp_path / "m.ts", example_input(module, batch=1, spatial=spatial))
    ts = torch.jit.load(str(path))
    x = torch.randn(3, 1, *spatial)
    with torch.no_grad():
        got, want = ts(x), model(x)
    for task, value in zip(module.task_names, got):
        torch.testing.assert_close(value, want[task], atol=1e-4, rtol=1e-4)


def test_export_module_refuses_mixed_input_kinds():
    model = _model({"encoder": {"name": "resnet10", "widths": W},
                    "tasks": {"a": {"type": "classification", "level": "image", "labels": ["x", "y"]},
                              "b": {"type": "classification", "level": "volume", "labels": ["x", "y"]}}})
    assert ExportModule(model).task_names == ("a",)
    assert ExportModule(model, ["b"]).input_kind == "volume"
    with pytest.raises(ValueError, match="one input kind"):
        ExportModule(model, ["a", "b"])
    with pytest.raises(ValueError, match="unknown"):
        ExportModule(model, ["c"])


def test_cli_encoder_only_export_refuses_task_formats(tmp_path):
    model = _model({"encoder": {"name": "resnet10", "widths": W}, "tasks": {}})
    ckpt = tmp_path / "enc.pt"
    torch.save({"model": model.state_dict(), "config": yaml.safe_dump({"model": to_dict(model.config)})}, ckpt)
    with pytest.raises(ValueError, match="no heads"):
        _cli(["export", str(ckpt), "--out", str(tmp_path / "e"), "--parts", "encoder", "--format", "torchscript"])
    with pytest.raises(ValueError, match="unknown"):
        _cli(["export", str(ckpt), "--out", str(tmp_path / "f"), "--format", "tflite"])
