"""Attacks on the weights and configs a model is built from, through ``medzoo predict`` / ``explain`` / ``evaluate``
and ``medzoo list``: edited ``config.yaml`` files, heads the weights lack, NaN weights and outputs, deep YAML, special
files as catalogs and configs, unusable URL schemes, a real full disk. The compression and alias bombs are in
``test_zoo_bombs.py``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medzoo.cli.main import main
from medzoo.models import create_model
from medzoo.zoo.resolver import resolve
from tests.robustness.attack_kit import REPO, small_fs
from tests.robustness.tally import case, note
from tests.robustness.zoo_kit import TASKS, cxr_model, edit_meta, edit_yaml, export, noisy_png, predict
from tests.train.train_fixtures import run_config, write_config


@pytest.fixture
def image(tmp_path) -> str:
    return noisy_png(tmp_path)


# ----------------------------------------------------------------------------------------------------- D2
def test_edited_config_label_order_is_refused_by_the_config_hash(tmp_path, image, capsys):
    note("weights", "export config.yaml edits: swapped labels, extra task, widths (hashed config)",
         "fixed: config.yaml was unhashed and a mismatched head was dropped for a random one, exit 0; now "
         "config.yaml is hashed in metadata.json")
    with case("weights", "export config.yaml edits: swapped labels, extra task, widths (hashed config)"):
        exp = export(tmp_path / "exp")
        assert predict(exp, image, tmp_path / "ok", capsys)[0] == 0  # the untouched export predicts
        edit_yaml(exp / "config.yaml", lambda c: c["tasks"]["findings"].update(labels=["b", "a"]))
        code, err = predict(exp, image, tmp_path / "o", capsys)
        assert code == 2
        assert "config.yaml: sha256 differs from" in err
        assert not (tmp_path / "o" / "predictions.json").exists()
    for edit in (lambda c: c["tasks"].update(pneumothorax={"type": "classification", "level": "image",
                                                              "labels": ["no", "yes"]}),
                 lambda c: c["encoder"].update(widths=[128] * 4)):
        with case("weights", "export config.yaml edits: swapped labels, extra task, widths (hashed config)"):
            exp = export(tmp_path / f"exp{id(edit)}")
            edit_yaml(exp / "config.yaml", edit)
            code, err = predict(exp, image, tmp_path / "o", capsys)
            assert code == 2
            assert "sha256 differs" in err


def test_create_model_from_an_export_checks_the_recorded_hashes(tmp_path):
    """The model card's own recipe, ``medzoo.create_model(folder)``, meets the same config hash."""
    with case("weights", "export config.yaml edits: swapped labels, extra task, widths (hashed config)"):
        exp = export(tmp_path / "exp")
        assert create_model(exp).heads["findings"].label_names == ("a", "b")
        edit_yaml(exp / "config.yaml", lambda c: c["tasks"]["findings"].update(labels=["b", "a"]))
        with pytest.raises(ValueError, match="config.yaml: sha256 differs from"):
            create_model(exp)


@pytest.mark.parametrize("edit, named", [
    (lambda c: c["tasks"]["findings"].update(labels=["b", "a"]), "tasks.findings labels: ['b', 'a'] here"),
    (lambda c: c["tasks"].update(ptx={"type": "classification", "level": "image", "labels": ["no", "yes"]}),
     "tasks ['ptx'] are not in the spec"),
    (lambda c: c["tasks"].pop("lung"), "the spec's tasks ['lung'] are missing"),
    (lambda c: c["encoder"].update(widths=[128] * 4), "encoder.widths: [128, 128, 128, 128] here"),
])
def test_old_export_config_is_cross_checked_against_metadata_before_building(tmp_path, image, capsys, edit, named):
    note("weights", "export without a config hash (older medzoo): config.yaml edits",
         "fixed: the model was built from config.yaml alone; now cross-checked with metadata.json before building")
    with case("weights", "export without a config hash (older medzoo): config.yaml edits"):
        exp = export(tmp_path / "exp")
        edit_meta(exp, lambda m: None, drop_config_hash=True)
        assert predict(exp, image, tmp_path / "ok", capsys)[0] == 0
        edit_yaml(exp / "config.yaml", edit)
        code, err = predict(exp, image, tmp_path / "o", capsys)
        assert code == 2
        assert named in err
        assert "metadata.json" in err


@pytest.fixture
def headless_export(tmp_path) -> Path:
    """metadata.json and config.yaml agree on a task ``tb`` (Shenzhen's labels) whose head the weights lack."""
    exp = export(tmp_path / "exp")
    tb = {"type": "classification", "level": "image", "labels": ["normal", "tb"]}
    edit_yaml(exp / "config.yaml", lambda c: c["tasks"].update(tb=tb))
    edit_meta(exp, lambda m: m["tasks"].update(tb={**tb, "head": "classification"}), rehash_config=True)
    return exp


def test_head_missing_from_the_weights_is_refused_by_predict_and_explain(headless_export, image, tmp_path, capsys):
    note("weights", "a head the weights lack (config and metadata agree): predict, explain, evaluate",
         "fixed: predicted from a randomly initialised head, exit 0; now refused naming the head")
    with case("weights", "a head the weights lack (config and metadata agree): predict, explain, evaluate"):
        code, err = predict(headless_export, image, tmp_path / "o", capsys)
        assert code == 2
        assert "heads.tb: not in the weights" in err
    with case("weights", "a head the weights lack (config and metadata agree): predict, explain, evaluate"):
        code = main(["-q", "explain", "--model", str(headless_export), image, "--task", "tb", "--out",
                     str(tmp_path / "x")])
        assert code == 2
        assert "heads would run untrained" in capsys.readouterr().err


def test_head_missing_from_the_weights_is_refused_by_evaluate(headless_export, corpus, tmp_path, capsys):
    """Shenzhen's test split through the export's ``tb`` head: before the fix, metrics of a random head, exit 0."""
    with case("weights", "a head the weights lack (config and metadata agree): predict, explain, evaluate"):
        run = run_config(corpus["shenzhen"].parents[1], tmp_path / "run", ["shenzhen"])
        cfg = write_config(run, tmp_path / "r.yaml")
        code = main(["evaluate", "-c", str(cfg), "--checkpoint", str(headless_export)])
        assert code == 2
        assert "heads.tb: not in the weights" in capsys.readouterr().err


def test_new_heads_are_still_allowed_when_asked_for(headless_export):
    """Fine-tuning asks for new heads on purpose (``tasks=``): that load stays allowed, and reports the head."""
    r = resolve(headless_export, tasks=["findings", "lung", "tb"])
    assert "heads.tb.fc.weight" in r.report.missing


# ---------------------------------------------------------------------------------------------------- D13
def _nan_everywhere(model: torch.nn.Module) -> None:
    for v in model.state_dict().values():
        if v.is_floating_point():
            v.fill_(float("nan"))


def test_nan_weights_are_refused_naming_the_tensors(tmp_path, image, capsys):
    note("weights", "NaN / Inf weights: export (all NaN, one head tensor Inf), ckpt:",
         "fixed: all-NaN weights gave 'positive: none' and background masks, exit 0; now refused at load, naming "
         "the tensors")
    with case("weights", "NaN / Inf weights: export (all NaN, one head tensor Inf), ckpt:"):
        model = cxr_model()
        _nan_everywhere(model)
        code, err = predict(export(tmp_path / "nan", model), image, tmp_path / "o", capsys)
        assert code == 2
        assert "hold NaN or infinity" in err
        assert "encoder.conv1.weight" in err
    with case("weights", "NaN / Inf weights: export (all NaN, one head tensor Inf), ckpt:"):
        model = cxr_model()
        model.heads["findings"].fc.bias.data[1] = float("inf")
        code, err = predict(export(tmp_path / "inf", model), image, tmp_path / "o2", capsys)
        assert code == 2
        assert "['heads.findings.fc.bias']" in err
    with case("weights", "NaN / Inf weights: export (all NaN, one head tensor Inf), ckpt:"):
        model = cxr_model()
        model.encoder.layer1[0].conv1.weight.data[0, 0, 0, 0, 0] = float("nan")
        ckpt = tmp_path / "nan.pt"
        torch.save({"model": model.state_dict(), "config": yaml.safe_dump({"model": {
            "encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}, "tasks": TASKS}})}, ckpt)
        code, err = predict(f"ckpt:{ckpt}", image, tmp_path / "o3", capsys)
        assert code == 2
        assert "encoder.layer1.0.conv1.weight" in err


def test_nonfinite_outputs_are_errors_and_predictions_json_is_strict(tmp_path, image, capsys):
    """Finite weights can still give NaN outputs: a BatchNorm running variance of exactly -eps divides by zero."""
    note("weights", "finite weights, NaN outputs (BatchNorm running_var = -eps)",
         "fixed: NaN probabilities became negative decisions and background masks, and predictions.json held bare "
         "NaN; now the input fails, naming the tasks, and every JSON is strict")
    with case("weights", "finite weights, NaN outputs (BatchNorm running_var = -eps)"):
        model = cxr_model()
        model.encoder.bn1.running_var.fill_(-model.encoder.bn1.eps)
        code, err = predict(export(tmp_path / "exp", model), image, tmp_path / "o", capsys)
        assert code == 1  # the input failed; the run reports it
        assert "NaN or infinite outputs" in err
        assert "findings probs ['a', 'b']" in err
        text = (tmp_path / "o" / "predictions.json").read_text()
        payload = json.loads(text, parse_constant=_refuse)  # strict: NaN/Infinity tokens raise
        assert payload["predictions"] == []
        assert len(payload["errors"]) == 1


def _refuse(token: str) -> None:
    raise ValueError(f"non-strict JSON token {token}")


def test_nan_ensemble_weight_is_refused(tmp_path, image, capsys):
    with case("weights", "ensemble --weights 1 nan"):
        exp = export(tmp_path / "exp")
        code = main(["-q", "predict", image, "--model", str(exp), "--model", str(exp), "--out", str(tmp_path / "o"),
                     "--weights", "1", "nan"])
        assert code == 2
        assert "must be finite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- D18
DEEP = "[" * 20000 + "]" * 20000


def test_deep_yaml_errors_name_the_file_or_override(tmp_path, capsys, monkeypatch):
    note("config", "YAML nested 20,000 deep: config file, --set value, user catalog",
         "fixed: 'maximum recursion depth exceeded', naming nothing; now the file (or override) and line")
    with case("config", "YAML nested 20,000 deep: config file, --set value, user catalog"):
        cfg = tmp_path / "deep.yaml"
        cfg.write_text("model: " + DEEP + "\n")
        assert main(["train", "-c", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert f"{cfg}: line 1" in err
        assert "nested deeper than 64 levels" in err
    with case("config", "YAML nested 20,000 deep: config file, --set value, user catalog"):
        cfg = write_config({"model": {"tasks": {}}}, tmp_path / "ok.yaml")
        assert main(["train", "-c", str(cfg), "--set", f"model.encoder.options={DEEP}"]) == 2
        assert "override 'model.encoder.options=[[[" in capsys.readouterr().err
    with case("config", "YAML nested 20,000 deep: config file, --set value, user catalog"):
        home = Path(os.environ["MEDZOO_HOME"])
        (home / "catalogs").mkdir(parents=True)
        (home / "catalogs" / "deep.yaml").write_text("entries: " + DEEP + "\n")
        assert main(["list"]) == 2
        assert f"{home / 'catalogs' / 'deep.yaml'}: not valid YAML: nested deeper" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- D19
def _in_thread(fn, fifo: Path, seconds: float = 60.0) -> Any:
    """Run ``fn`` in a thread; if it is still blocked after ``seconds`` (a FIFO opened for reading waits for a
    writer), open the FIFO for writing to release it and fail."""
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(value=fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        with open(fifo, "wb"):
            pass
        worker.join(10)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    return result.get("value")


def test_fifo_and_dev_zero_as_catalogs_are_refused_before_reading(tmp_path, capsys):
    note("config", "FIFO / symlink to /dev/zero as a catalog or config file",
         "fixed: a FIFO hung `medzoo list`, /dev/zero grew to 1.6 GB in 4 s; now regular files only, size-capped")
    home = Path(os.environ["MEDZOO_HOME"])
    (home / "catalogs").mkdir(parents=True)
    fifo = home / "catalogs" / "pipe.yaml"
    os.mkfifo(fifo)
    with case("config", "FIFO / symlink to /dev/zero as a catalog or config file"):
        assert _in_thread(lambda: main(["list"]), fifo) == 2
        assert f"{fifo}: cannot read weights catalog: not a regular file (a FIFO)" in capsys.readouterr().err
    fifo.unlink()
    cfg_fifo = tmp_path / "run.yaml"
    os.mkfifo(cfg_fifo)
    with case("config", "FIFO / symlink to /dev/zero as a catalog or config file"):
        assert _in_thread(lambda: main(["train", "-c", str(cfg_fifo)]), cfg_fifo) == 2
        assert f"{cfg_fifo}: cannot read config file: not a regular file (a FIFO)" in capsys.readouterr().err
    zero = home / "catalogs" / "zero.yaml"
    zero.symlink_to("/dev/zero")
    for catalog in (None, "/dev/zero"):  # a user catalog linked to /dev/zero; /dev/zero as --catalog
        with case("config", "FIFO / symlink to /dev/zero as a catalog or config file"):
            done = _capped_load_catalog(catalog, home)
            assert done.returncode == 2
            assert "cannot read weights catalog: not a regular file (a character device)" in done.stderr


def _capped_load_catalog(catalog: str | None, home: Path) -> subprocess.CompletedProcess:
    """``load_catalog`` in a child under a 1 GB address-space limit (/dev/zero never ends: a regression would grow
    until the limit, not take the test runner down)."""
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from medzoo.zoo.catalog import CatalogError, load_catalog\n"
            f"try:\n    load_catalog({catalog!r})\nexcept CatalogError as e:\n    sys.exit(str(e))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDZOO_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return subprocess.CompletedProcess(done.args, 2 if done.returncode == 1 else done.returncode, done.stdout,
                                       done.stderr)


@pytest.mark.parametrize("url", ["data:application/octet-stream;base64,AAAA", "javascript:alert(1)",
                                 "ftp:127.0.0.1:18766/x", "gopher:x", "w\nx.safetensors", "w\x00.safetensors"])
def test_catalog_urls_without_slashes_are_checked_against_the_allow_list(tmp_path, capsys, url):
    note("config", "catalog urls data:, javascript:, ftp:host/x without '//'; NUL or newline in a name",
         "fixed: accepted as 'plain paths', failing only at download; now refused when the catalog is read")
    with case("config", "catalog urls data:, javascript:, ftp:host/x without '//'; NUL or newline in a name"):
        cat = tmp_path / "cat.yaml"
        entry = {"name": "bad.url", "version": "1", "architecture": {"encoder": "resnet10"}, "parts": ["encoder"],
                 "files": [{"url": url, "sha256": None, "format": "safetensors"}], "license": "MIT",
                 "source": "https://example.org", "citation": "none"}
        cat.write_text(yaml.safe_dump({"schema": 1, "entries": [entry]}))
        assert main(["list", "--catalog", str(cat)]) == 2
        err = capsys.readouterr().err
        assert f"{cat}:" in err
        assert "files[0].url" in err


# ---------------------------------------------------------------------------------------------- D18 ENOSPC
def test_real_full_disk_while_exporting_names_the_export(tmp_path, capsys):
    note("faults", "real full disk (64 KB tmpfs) during `medzoo export`",
         "fixed: safetensors reported 'Error while serializing: I/O error' with a traceback, naming no file; now "
         "one line naming the export folder, and no temporary folder is left")
    with case("faults", "real full disk (64 KB tmpfs) during `medzoo export`"):
        src = export(tmp_path / "src")
        with small_fs(tmp_path / "disk", "64k") as disk:
            out = disk / "exp"
            assert main(["-q", "export", str(src), "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1
            assert f"[Errno {errno.ENOSPC}]" in err[0]
            assert str(out) in err[0]
            assert sorted(p.name for p in disk.iterdir()) == []
