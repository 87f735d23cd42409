"""Bombs through ``medzoo predict`` / ``medzoo list`` and ``resolve``: a deflated ``.pt`` record (~1000:1), config
widths over small weights, an added head over the parameter budget, a catalog of nested YAML aliases. Each is refused
before allocating; the slow test measures the peak memory of a child process running each at full size."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from medzoo.cli.main import main
from medzoo.zoo import preflight
from medzoo.zoo.resolver import resolve
from medzoo.zoo.state import read_weights
from tests.robustness.attack_kit import alias_bomb_catalog, deflate_bomb_pt, peak_of
from tests.robustness.tally import case, note
from tests.robustness.zoo_kit import TASKS, cxr_model, edit_meta, edit_yaml, export, noisy_png, predict

PEAK_LIMIT_MB = 1024


@pytest.fixture
def image(tmp_path) -> str:
    return noisy_png(tmp_path)


# ----------------------------------------------------------------------------------------------------- D5
# The fast tests use bombs a regression would survive (hundreds of MB); the peak-memory tests (slow) use the full
# sizes, in a child whose address space is limited.
BOMB_NUMEL, SMALL_BOMB_NUMEL = 300 << 20, 64 << 20  # 1.2 GiB / 256 MiB of float32 zeros, ~1.2 MB / 0.3 MB on disk
HUGE_DECODER, SMALL_DECODER = [16384, 8192, 4096, 2048, 1024], [256, 128, 64, 32, 16]  # 4.8 G / 1.4 M parameters


def _bomb(tmp_path_factory, numel: int) -> Path:
    path = deflate_bomb_pt(tmp_path_factory.mktemp("bomb") / "bomb.pt", numel)
    with zipfile.ZipFile(path) as zf:  # the bomb is real: its record declares 4 bytes per element in ~1/1000
        assert sum(i.file_size for i in zf.infolist()) > 4 * numel
    assert path.stat().st_size < 4 * numel / 900
    return path


@pytest.fixture(scope="module")
def pt_bomb(tmp_path_factory) -> Path:
    return _bomb(tmp_path_factory, BOMB_NUMEL)


@pytest.fixture(scope="module")
def small_pt_bomb(tmp_path_factory) -> Path:
    return _bomb(tmp_path_factory, SMALL_BOMB_NUMEL)


def widths_bomb(tmp_path: Path, width: int = 2048) -> Path:
    """A hostile export whose config.yaml, metadata.json and config hash all agree on widths ``width``: only the
    shapes the safetensors header declares still contradict them."""
    exp = export(tmp_path / "widths")
    edit_yaml(exp / "config.yaml", lambda c: c["encoder"].update(widths=[width] * 4))
    edit_meta(exp, lambda m: m["architecture"].update(widths=[width] * 4), rehash_config=True)
    return exp


def huge_head(tmp_path: Path, decoder: list[int] = HUGE_DECODER) -> Path:
    """A consistent export that adds a segmentation head the weights do not hold."""
    exp = export(tmp_path / "head")
    seg = {"type": "segmentation", "level": "image", "labels": ["no", "yes"], "decoder_channels": decoder}
    edit_yaml(exp / "config.yaml", lambda c: c["tasks"].update(big=seg))
    edit_meta(exp, lambda m: m["tasks"].update(big={"type": "segmentation", "level": "image", "labels": ["no", "yes"],
                                                       "head": "segmentation"}), rehash_config=True)
    return exp


PT_BOMB = "deflated .pt bomb, ~1000:1 (256 MiB in-process, 1.2 GiB in a child): read_weights, predict ckpt:"
WIDTHS = "config widths over 8/16/32/64 weights, config and metadata consistent (128 in-process, 2048 in a child)"
HEAD = "an added head the weights lack, over the parameter budget (4.8 G parameters in a child)"
ALIASES = "user catalog of nested YAML aliases (K = 120 in-process, K = 400 / 14 KB in a child)"


def test_deflated_pt_bomb_refused_before_allocating(small_pt_bomb, image, tmp_path, capsys):
    note("weights", PT_BOMB, "fixed: torch inflated the record (2.6 GB peak); now the declared member sizes are "
                             "checked first")
    with case("weights", PT_BOMB):
        with pytest.raises(ValueError, match=rf"declare {4 * SMALL_BOMB_NUMEL // 1000:,},\d{{3}} bytes uncompressed"):
            read_weights(small_pt_bomb)
    with case("weights", PT_BOMB):
        code, err = predict(f"ckpt:{small_pt_bomb}", image, tmp_path / "o", capsys)
        assert code == 2
        assert "refused before loading" in err


def test_widths_edit_is_refused_before_building(tmp_path):
    note("weights", WIDTHS, "fixed: 5.9 GB allocated and 37 s spent building before the architecture check; now a "
                            "meta-device build is compared with the weights' shapes, under a parameter budget")
    with case("weights", WIDTHS):
        with pytest.raises(ValueError) as err:
            resolve(widths_bomb(tmp_path, 128))
        assert "encoder.conv1.weight (128, 1, 7, 7, 7) (weights (8, 1, 7, 7, 7))" in str(err.value)


def test_huge_new_head_is_refused_by_the_parameter_budget(tmp_path, monkeypatch):
    """The budget, scaled down with the head: the real one (600 M) is tested in a child below."""
    with case("weights", HEAD):
        monkeypatch.setattr(preflight, "MAX_MODEL_PARAMETERS", 1_000_000)  # the export alone: 279,036
        with pytest.raises(ValueError, match="model of 1,704,926 parameters, over the budget of 1,000,000"):
            resolve(huge_head(tmp_path, SMALL_DECODER))


def test_checkpoint_with_edited_widths_is_refused_before_building(tmp_path, image, capsys):
    with case("weights", "training checkpoint whose stored config says widths [128]*4 over 8/16/32/64 weights"):
        ckpt = tmp_path / "w.pt"
        torch.save({"model": cxr_model().state_dict(), "config": yaml.safe_dump({"model": {
            "encoder": {"name": "resnet10", "widths": [128] * 4}, "tasks": TASKS}})}, ckpt)
        code, err = predict(f"ckpt:{ckpt}", image, tmp_path / "o", capsys)
        assert code == 2
        assert "shapes differ from the weights'" in err


def test_yaml_alias_catalog_is_refused(tmp_path, capsys):
    note("config", ALIASES, "fixed: `medzoo list` reached 2.4 GB at K = 400 (~K**3 growth); now the alias-expanded "
                            "node count is capped while composing")
    with case("config", ALIASES):
        bomb = alias_bomb_catalog(Path(os.environ["MEDZOO_HOME"]) / "catalogs" / "bomb.yaml", 120)
        assert main(["list"]) == 2
        assert f"{bomb}: not valid YAML: expands to more than 1,000,000 nodes" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("attack", [PT_BOMB, WIDTHS, HEAD, ALIASES])
def test_bomb_peak_memory_of_a_child_stays_under_1_gb(attack, pt_bomb, tmp_path):
    """Each bomb through the interface a user calls, in a child process whose peak RSS is measured."""
    env, cli = {}, "import sys\nfrom medzoo.cli.main import main\nsys.exit(main({}))"
    if attack == PT_BOMB:
        code = cli.format(["-q", "predict", "--model", f"ckpt:{pt_bomb}", str(pt_bomb), "--out", str(tmp_path / "o")])
        expected = "refused before loading"
    elif attack == WIDTHS:
        code, expected = f"from medzoo.zoo.resolver import resolve\nresolve({str(widths_bomb(tmp_path))!r})", \
            "shapes differ from the weights'"
    elif attack == HEAD:
        code, expected = f"from medzoo.zoo.resolver import resolve\nresolve({str(huge_head(tmp_path))!r})", \
            "over the budget"
    else:
        assert alias_bomb_catalog(tmp_path / "home" / "catalogs" / "bomb.yaml", 400).stat().st_size < 20_000
        code, expected, env = cli.format(["list"]), "expands to more than", {"MEDZOO_HOME": str(tmp_path / "home")}
    with case("weights" if attack != ALIASES else "config", f"{attack}: peak memory of a child process < 1 GB"):
        rc, out, err, peak = peak_of(code, env=env)
        assert rc != 0
        assert expected in err
        assert peak < PEAK_LIMIT_MB
