"""Training the aligner: losses, recovery of known affines, the trained stage and the CLI.

Stated tolerance (test_recovers_known_transforms): synthetic chests (anatomy jittered as in the synthetic corpus)
are rotated by up to 10 degrees, scaled by up to 10 % and shifted by up to 10 % of the half-side (normalised
units); on held-out chests the residual transform ``A @ theta`` must be within 5 degrees (max) / 2.5 degrees
(mean) of rotation, 5 % of scale and 0.08 / 0.03 (max / mean) of shift, and every image must end closer to the
reference than it started.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medzoo.data.imageio import write_png
from medzoo.data.synth._cxr_draw import draw_findings
from medzoo.encoders import create_encoder
from medzoo.models.align import AlignmentStage, AlignNet, random_affine, warp
from medzoo.train.align import AlignTrainConfig, alignment_losses, train_alignment

PX = 48


def _chests(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([draw_findings([], rng, PX, PX)[0] for _ in range(n)]))[:, None]


def _homog(theta: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, bottom], dim=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: with two, these many small ops run ~20x slower on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(_one_thread):
    torch.manual_seed(0)
    reference = _chests(8, 123).mean(0, keepdim=True)
    moving = warp(_chests(32, 1), random_affine(32, generator=torch.Generator().manual_seed(5)))
    encoder = create_encoder("resnet10", widths=(8, 16, 32, 64))
    net = train_alignment(moving, reference, encoder=encoder, steps=150, batch_size=16, perceptual_weight=0.1)
    return net, reference, encoder


def test_losses_consistency_and_frozen_perceptual():
    torch.manual_seed(1)
    enc = create_encoder("resnet10", widths=(8, 16, 32, 64)).train()
    ref, x = torch.rand(1, 1, 32, 32), torch.rand(3, 1, 32, 32)
    net = AlignNet(size=32)
    train_alignment(x, ref, encoder=enc, steps=1, batch_size=2, net=net)
    assert not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    out = alignment_losses(x, ref, enc, levels=(1, 2), perceptual_weight=0.5)
    assert out["consistency"].item() == pytest.approx(((x - ref) ** 2).mean().item(), rel=1e-6)
    fx, fr = enc(x), enc(ref.expand(3, -1, -1, -1))
    expected = 0.5 * (((fx[1] - fr[1]) ** 2).mean() + ((fx[2] - fr[2]) ** 2).mean())
    assert out["perceptual"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["consistency"].item() + 0.5 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="matching the reference"):
        train_alignment(torch.rand(2, 1, 16, 16), ref, steps=1)


def test_recovers_known_transforms(trained):
    net, reference, _ = trained
    test = _chests(16, 99)
    A = random_affine(16, generator=torch.Generator().manual_seed(77))
    moving = warp(test, A)
    with torch.no_grad():
        theta = net(moving)
        aligned = warp(moving, theta)
    before = ((moving - reference) ** 2).mean(dim=(1, 2, 3))
    after = ((aligned - reference) ** 2).mean(dim=(1, 2, 3))
    assert (after < before).all()
    assert after.mean() < 0.5 * before.mean()
    residual = _homog(A) @ _homog(theta)  # aligned(p) = chest(A theta p): ideally the identity
    rot = torch.rad2deg(torch.atan2(residual[:, 1, 0], residual[:, 0, 0])).abs()
    scale = torch.det(residual[:, :2, :2]).sqrt()
    shift = residual[:, :2, 2].abs()
    applied = torch.rad2deg(torch.atan2(A[:, 1, 0], A[:, 0, 0])).abs()
    assert applied.max() > 7  # the test does apply sizeable rotations
    assert rot.max() < 5 and rot.mean() < 2.5, rot
    assert (scale - 1).abs().max() < 0.05, scale
    assert shift.max() < 0.08 and shift.mean() < 0.03, shift


def test_stage_save_load_round_trip(trained, tmp_path):
    net, reference, _ = trained
    stage = AlignmentStage(net, reference)
    path = stage.save(tmp_path / "align.safetensors")
    write_png(tmp_path / "ref.png", np.rint(reference[0, 0].numpy() * 255).astype(np.uint8))
    loaded = AlignmentStage.load(path, tmp_path / "ref.png")
    x = warp(_chests(2, 7), random_affine(2, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(loaded.net(x), net(x).detach())
    assert loaded(x).shape == (2, 1, PX, PX)
    torch.testing.assert_close(loaded.reference, reference, atol=1 / 255, rtol=0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        AlignmentStage.load(tmp_path / "bad.safetensors", reference)


def test_cli_aligns_a_folder(trained, tmp_path, capsys):
    from medzoo.cli import align_cmd

    net, reference, _ = trained
    weights = AlignmentStage(net, reference).save(tmp_path / "w.safetensors")
    write_png(tmp_path / "ref.png", np.rint(reference[0, 0].numpy() * 255).astype(np.uint8))
    moving = warp(_chests(3, 11), random_affine(3, generator=torch.Generator().manual_seed(4)))
    for i in range(3):
        write_png(tmp_path / "in" / f"cxr{i}.png", np.rint(moving[i, 0].clamp(0, 1).numpy() * 255).astype(np.uint8))
    parser = argparse.ArgumentParser()
    align_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", str(tmp_path / "in"), "--weights", str(weights), "--reference",
                              str(tmp_path / "ref.png"), "--out", str(tmp_path / "out"), "--quiet"])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cxr0.png", "cxr1.png", "cxr2.png"]
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == 3
    assert all(float(after) < float(before) for _, before, after in rows)
    args = parser.parse_args(["align", str(tmp_path / "in"), "--reference", str(tmp_path / "ref.png"),
                              "--out", str(tmp_path / "o2")])
    with pytest.raises(SystemExit, match="--weights"):
        args.func(args)
    assert math.isfinite(float(rows[0][1]))


def test_cli_trains_from_a_config(tmp_path):
    import yaml

    from medzoo.cli import align_cmd
    from medzoo.config import ConfigError, from_dict

    shipped = Path(__file__).resolve().parents[2] / "configs" / "align" / "cxr.yaml"
    data = yaml.safe_load(shipped.read_text())
    assert from_dict(AlignTrainConfig, data).reference == "mean"
    with pytest.raises(ConfigError, match="stepz"):
        from_dict(AlignTrainConfig, {**data, "stepz": 3})
    for i, img in enumerate(_chests(4, 21)):
        write_png(tmp_path / "imgs" / f"c{i}.png", np.rint(img[0].numpy() * 255).astype(np.uint8))
    cfg = {**data, "images": str(tmp_path / "imgs"), "out": str(tmp_path / "w" / "a.safetensors"), "steps": 2,
           "batch_size": 2, "image_size": 32, "max_images": 3}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    parser = argparse.ArgumentParser()
    align_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["align", "--train", "-c", str(tmp_path / "a.yaml")])
    assert args.func(args) == 0
    stage = AlignmentStage.load(tmp_path / "w" / "a.safetensors", tmp_path / "w" / "a.reference.png")
    assert stage.reference.shape == (1, 1, 32, 32)
    args = parser.parse_args(["align", "--train", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="--out"):
        args.func(args)
