"""Exports against the eager model: TorchScript, ONNX in onnxruntime, and `medzoo export` on a training checkpoint.

One ONNX export runs by default (it is slow): the CLI export of a series checkpoint, checked at several batch sizes,
slice counts and spatial sizes, and copied alone into another folder. The image, volume, encoder-only and
external-data ONNX exports are `slow`; their TorchScript twins run by default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from medzoo.cli import export_cmd
from medzoo.config import to_dict
from medzoo.models import create_model
from medzoo.zoo.bundle import is_bundle_dir
from medzoo.zoo.formats import EncoderExport, ExportModule, example_input, export_onnx, export_torchscript, run_onnx
from tests.helpers import stats_model

W = [8, 16, 32, 64]
SERIES = {"encoder": {"name": "resnet10", "widths": W}, "aggregator": {"name": "attention"},
          "tasks": {"covid": {"type": "classification", "level": "series", "labels": ["normal", "pneumonia", "covid"]},
                    "lesion": {"type": "multilabel", "level": "slice", "labels": ["ggo", "consolidation"]}}}
IMAGE = {"encoder": {"name": "resnet18", "widths": W},
         "tasks": {"seg": {"type": "segmentation", "level": "image", "labels": ["bg", "lung"]},
                   "cxr": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"]}}}
VOLUME = {"encoder": {"name": "resnet10", "widths": W, "output_stride": 8},
          "tasks": {"seg": {"type": "medicalnet_seg", "level": "volume", "labels": ["bg", "organ"]},
                    "cls": {"type": "classification", "level": "volume", "labels": ["no", "yes"]}}}


def _series(b: int, n: int, seed: int, size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 1, *size, generator=g)
    pad = torch.zeros(b, n, dtype=torch.bool)
    pad[0, n // 2 + 1:] = True  # the first series is shorter
    return x, pad


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _checkpoint(model: torch.nn.Module, path) -> None:
    run_config = {"model": to_dict(model.config)}
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {},
                "step": 10, "epoch": 1, "best": 0.9, "config": yaml.safe_dump(run_config), "versions": {}}, path)


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """A training checkpoint (saved by the checkpoint contract) exported with every format, under umask 022."""
    root = tmp_path_factory.mktemp("cli")
    model = stats_model(SERIES)
    _checkpoint(model, root / "best.pt")
    out = root / "export"
    old = os.umask(0o022)
    try:
        code = _cli(["export", str(root / "best.pt"), "--out", str(out), "--format",
                     "safetensors,torchscript,onnx,bundle", "--input-size", "32,32", "--name", "tiny.covid",
                     "--license", "MIT"])
    finally:
        os.umask(old)
    assert code == 0
    return model, out


def _assert_outputs(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for task in want:
        torch.testing.assert_close(got[task], want[task], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("b, n, size", [(2, 3, (32, 32)), (3, 6, (48, 40)), (1, 1, (64, 32))])
def test_onnx_matches_eager_at_other_batch_slice_and_spatial_sizes(cli_export, b, n, size):
    model, out = cli_export
    x, pad = _series(b, n, seed=b * 10 + n, size=size)
    with torch.no_grad():
        want = model(x, pad_mask=pad)
    got = run_onnx(out / "model.onnx", x, pad)
    _assert_outputs(got, want)
    assert torch.all(got["lesion"][pad] == 0)


def test_onnx_file_copied_alone_runs_and_nothing_hidden_is_left(cli_export, tmp_path):
    model, out = cli_export
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(out / "model.onnx", alone)
    x, pad = _series(2, 4, seed=11)
    with torch.no_grad():
        want = model(x, pad_mask=pad)
    _assert_outputs(run_onnx(alone, x, pad), want)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_onnx_checker_passes_and_inputs_outputs_are_named_and_dynamic(cli_export):
    import onnx

    _, out = cli_export
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == ["covid", "lesion"]
    assert [i.name for i in proto.graph.input] == ["image", "pad_mask"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2] == 1  # channels are fixed by the weights
    assert all(isinstance(d, str) and d for i, d in enumerate(dims) if i != 2), dims
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


@pytest.mark.parametrize("b, n, size", [(1, 2, (32, 32)), (4, 5, (40, 56))])
def test_torchscript_returns_a_dict_equal_to_eager(cli_export, b, n, size):
    model, out = cli_export
    extra = {"metadata.json": "", "task_names.json": ""}
    ts = torch.jit.load(str(out / "model.ts"), _extra_files=extra)
    assert json.loads(extra["task_names.json"]) == ["covid", "lesion"]
    assert json.loads(extra["metadata.json"])["name"] == "tiny.covid"
    x, pad = _series(b, n, seed=7 + n, size=size)
    with torch.no_grad():
        got, want = ts(x, pad), model(x, pad_mask=pad)
    assert isinstance(got, dict)
    _assert_outputs(got, want)


def test_torchscript_pins_no_device(cli_export):
    """A device read while tracing becomes a constant: the file would then run on the exporting device only."""
    _, out = cli_export
    for path in [out / "model.ts", *sorted(out.glob("bundle/*/models/model.ts"))]:
        graph = str(torch.jit.load(str(path)).inlined_graph)
        assert [line for line in graph.splitlines() if ": Device = prim::Constant" in line] == [], path


def test_create_model_on_the_cli_export_is_exact(cli_export):
    model, out = cli_export
    again = create_model(out).eval()
    sa, sb = model.state_dict(), again.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x, pad = _series(2, 4, seed=1)
    with torch.no_grad():
        assert torch.equal(again(x, pad_mask=pad)["covid"], model(x, pad_mask=pad)["covid"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tasks"]["covid"]["labels"] == ["normal", "pneumonia", "covid"]
    assert meta["source"] == "training checkpoint best.pt"
    assert meta["license"] == "MIT"


def test_cli_writes_every_format_and_one_bundle_per_task(cli_export):
    _, out = cli_export
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.yaml", "metadata.json", "README.md",
                                               "model.ts", "model.onnx", "bundle"}
    assert sorted(p.name for p in (out / "bundle").iterdir()) == ["covid", "lesion"]
    assert all(is_bundle_dir(p) for p in (out / "bundle").iterdir())


def test_export_folders_and_files_follow_the_umask(cli_export):
    _, out = cli_export
    modes = {p.relative_to(out).as_posix(): (p.is_dir(), p.stat().st_mode & 0o777) for p in [out, *out.rglob("*")]}
    wrong = {k: oct(m) for k, (d, m) in modes.items() if m != (0o755 if d else 0o644)}
    assert wrong == {}
    assert modes["bundle/covid/models/model.pt"] == (False, 0o644)


def test_a_stricter_umask_is_followed_too(tmp_path):
    model = stats_model(IMAGE)
    example = example_input(ExportModule(model), batch=1, spatial=(32, 32))
    old = os.umask(0o027)
    try:
        path = export_torchscript(ExportModule(model), tmp_path / "sub" / "model.ts", example)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o640, 0o750)


@pytest.mark.parametrize("cfg, spatial, other", [(IMAGE, (64, 64), (40, 56)), (VOLUME, (16, 32, 32), (12, 24, 40))])
def test_torchscript_image_and_volume_models_at_another_size(cfg, spatial, other, tmp_path):
    model = stats_model(cfg)
    module = ExportModule(model)
    ts = torch.jit.load(str(export_torchscript(module, tmp_path / "m.ts", example_input(module, spatial=spatial))))
    x = torch.randn(3, 1, *other)
    with torch.no_grad():
        _assert_outputs(ts(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("cfg, spatial, others", [
    (IMAGE, (64, 64), [(1, 40, 56), (3, 33, 47)]), (VOLUME, (16, 32, 32), [(1, 12, 24, 40), (3, 9, 20, 27)])])
def test_onnx_image_and_volume_models_are_dynamic_and_self_contained(cfg, spatial, others, tmp_path):
    model = stats_model(cfg)
    module = ExportModule(model)
    path = export_onnx(module, tmp_path / "a" / "model.onnx", example_input(module, spatial=spatial))
    alone = tmp_path / "b" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    for shape in others:
        x = torch.randn(shape[0], 1, *shape[1:])
        with torch.no_grad():
            _assert_outputs(run_onnx(alone, x), model(x))


def _encoder_export(model, tmp_path, fmt: str):
    _checkpoint(model, tmp_path / "full.pt")
    out = tmp_path / "enc"
    assert _cli(["export", str(tmp_path / "full.pt"), "--out", str(out), "--parts", "encoder", "--format",
                 f"safetensors,{fmt}", "--input-size", "16,32,32"]) == 0
    return out


def test_cli_encoder_only_torchscript_holds_the_encoder_alone(tmp_path):
    model = stats_model(VOLUME)
    out = _encoder_export(model, tmp_path, "torchscript")
    ts = torch.jit.load(str(out / "model.ts"))
    assert not [k for k in ts.state_dict() if "heads" in k]
    x = torch.randn(2, 1, 12, 24, 40)
    with torch.no_grad():
        got, want = ts(x), model.encoder(x)
    assert list(got) == model.encoder.feature_info.module_name()
    for value, expected in zip(got.values(), want):
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)


def test_cli_encoder_only_refuses_a_bundle_and_an_unknown_format(tmp_path):
    model = stats_model(VOLUME)
    _checkpoint(model, tmp_path / "full.pt")
    with pytest.raises(ValueError, match="bundle serves a task"):
        _cli(["export", str(tmp_path / "full.pt"), "--out", str(tmp_path / "e"), "--parts", "encoder", "--format",
              "bundle"])
    with pytest.raises(ValueError, match="unknown"):
        _cli(["export", str(tmp_path / "full.pt"), "--out", str(tmp_path / "f"), "--format", "tflite"])


@pytest.mark.slow
def test_cli_encoder_only_onnx_holds_the_encoder_alone(tmp_path):
    import onnx

    model = stats_model(VOLUME)
    out = _encoder_export(model, tmp_path, "onnx")
    proto = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in proto.graph.output] == model.encoder.feature_info.module_name()
    assert not [t.name for t in proto.graph.initializer if "heads" in t.name]
    x = torch.randn(1, 1, 12, 24, 40)
    with torch.no_grad():
        want = dict(zip(model.encoder.feature_info.module_name(), model.encoder(x)))
    _assert_outputs(run_onnx(out / "model.onnx", x), want)


@pytest.mark.slow
def test_onnx_external_data_has_its_documented_name_and_is_published(tmp_path, medzoo_home):
    from medzoo.zoo.download import download_all
    from medzoo.zoo.publish import export_model, publish

    model = stats_model(IMAGE)
    exp = export_model(model, tmp_path / "exp", name="tiny.ext")
    module = ExportModule(model)
    export_onnx(module, exp / "model.onnx", example_input(module, spatial=(32, 32)), external_data=True)
    assert (exp / "model.onnx.data").is_file()
    spec = publish(exp, "tiny.ext", exp.as_uri() + "/")
    assert {f.name for f in spec.files} >= {"model.onnx", "model.onnx.data"}
    paths = download_all("tiny.ext", progress=False)
    cached = next(p for p in paths if p.name == "model.onnx")
    assert (cached.parent / "model.onnx.data").is_file()
    x = torch.randn(2, 1, 40, 48)
    with torch.no_grad():
        _assert_outputs(run_onnx(cached, x), model(x))


def test_publish_carries_the_onnx_and_torchscript_files(cli_export, medzoo_home):
    from medzoo.zoo.download import download_all
    from medzoo.zoo.export import sha256_file
    from medzoo.zoo.publish import publish

    model, out = cli_export
    spec = publish(out, "tiny.covid", out.as_uri() + "/")
    files = {f.name: f for f in spec.files}
    assert set(files) == {"model.safetensors", "config.yaml", "model.onnx", "model.ts"}
    assert (files["model.onnx"].format, files["model.onnx"].sha256) == ("onnx", sha256_file(out / "model.onnx"))
    cached = {p.name: p for p in download_all("tiny.covid", progress=False)}
    x, pad = _series(2, 3, seed=4)
    with torch.no_grad():
        _assert_outputs(run_onnx(cached["model.onnx"], x, pad), model(x, pad_mask=pad))


def test_export_module_refuses_mixed_input_kinds_and_bad_names():
    model = stats_model({"encoder": {"name": "resnet10", "widths": W},
                    "tasks": {"a": {"type": "classification", "level": "image", "labels": ["x", "y"]},
                              "b": {"type": "classification", "level": "volume", "labels": ["x", "y"]}}})
    assert ExportModule(model).task_names == ("a",)
    assert ExportModule(model, ["b"]).input_kind == "volume"
    with pytest.raises(ValueError, match="one input kind"):
        ExportModule(model, ["a", "b"])
    with pytest.raises(ValueError, match="unknown"):
        ExportModule(model, ["c"])
    model.heads["$x"] = model.heads.pop("a")  # a name no config would have let through
    model.task_levels["$x"] = model.task_levels.pop("a")
    with pytest.raises(ValueError, match=r"tasks\.\$x: .*not a valid name"):
        ExportModule(model, ["$x"])


def test_encoder_export_names_the_selected_stages():
    from medzoo.encoders import create_encoder

    enc = create_encoder("resnet10", widths=W, out_indices=(2, 4)).eval()
    module = EncoderExport(enc, "image")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        got, want = module(x), enc(x)
    assert list(got) == ["layer2", "layer4"]
    np.testing.assert_allclose(got["layer4"].numpy(), want[-1].numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_readme_export_table_commands_run_as_written(tmp_path):
    """Each format's check command in README's export table, run on a volume model exported as README shows."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Exports", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    commands = {row.split("|")[1].strip(): re.findall(r'`(python -c "[^"]*")`', row) for row in rows}
    checked = {name: cmds for name, cmds in commands.items() if cmds}
    assert sorted(checked) == ["`model.onnx`", "`model.safetensors`, `config.yaml`, `metadata.json`", "`model.ts`"]
    model = stats_model(VOLUME)
    _checkpoint(model, tmp_path / "best.pt")
    assert _cli(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "exp"), "--format",
                 "safetensors,torchscript,onnx", "--input-size", "16,32,32"]) == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in [c for cmds in checked.values() for c in cmds]:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, command
