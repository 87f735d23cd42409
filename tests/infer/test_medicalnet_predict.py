"""``medzoo predict`` on a MedicalNet checkpoint against MedicalNet's own test path, written out here from its
published steps (``datasets/brains18.py``, ``test.py``), on an anisotropic ``[X, Y, Z]`` NIfTI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from medzoo.cli.main import main
from medzoo.data.imageio import write_nifti
from medzoo.data.presets import medicalnet_contract
from medzoo.encoders import create_encoder
from medzoo.heads.medicalnet import MedicalNetSegHead
from medzoo.train.config import load_run_config
from medzoo.train.data import data_contract, init_preprocessing
from medzoo.zoo import resolve
from medzoo.zoo.medicalnet import from_medicalnet

INPUT_SIZE = (14, 28, 28)  # MedicalNet's CI size (input_D, input_H, input_W)


def _checkpoint(path: Path) -> Path:
    """A MedicalNet ``train.py`` checkpoint: ``{'state_dict': {'module.' + key}}`` with the ``conv_seg`` head."""
    torch.manual_seed(3)
    enc = create_encoder("resnet10", output_stride=8, widths=(8, 16, 32, 64), shortcut="B", bias_downsample=False)
    head = MedicalNetSegHead(enc.feature_dim, 2)
    with torch.no_grad():
        for module in (*enc.modules(), *head.modules()):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        # Two classes that split a volume: class 1 where a projection of the features, orthogonal to their mean
        # direction, is positive (a random head would call everything class 0).
        enc.eval(), head.eval()
        feats = torch.nn.Sequential(*list(head)[:6])(enc(torch.randn(2, 1, *INPUT_SIZE))[-1]).mean(dim=(0, 2, 3, 4))
        w = head[6].weight[0, :, 0, 0, 0].clone()
        w -= (w @ feats) / (feats @ feats) * feats
        head[6].weight[0, :, 0, 0, 0], head[6].weight[1, :, 0, 0, 0] = -w, w
    state = {"module." + k: v for k, v in enc.state_dict().items()}
    state.update({"module.conv_seg." + k: v for k, v in head.state_dict().items()})
    torch.save({"state_dict": state, "ecpoch": 3, "batch_id": 0}, path)
    return path


def _volume(path: Path) -> Path:
    """An MR-like head [X, Y, Z] = 40 x 34 x 12 at 0.9 x 0.9 x 4 mm: zero background, structured foreground."""
    x, y, z = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 34), np.linspace(-1, 1, 12), indexing="ij")
    head = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.95) ** 2 <= 1
    vol = np.where(head, 300 + 200 * x + 120 * np.sin(5 * y) + 80 * z, 0.0)
    vol[head & ((x - 0.3) ** 2 + y ** 2 < 0.05)] = 0.0  # a zero hole inside: background noise there too
    return write_nifti(path, np.rint(vol).astype(np.int16), np.diag([0.9, 0.9, 4.0, 1.0]))


def medicalnet_test_path(volume_path: Path, model: torch.nn.Module) -> np.ndarray:
    """MedicalNet's test path, step by step; the mask comes back in the file's ``[X, Y, Z]``."""
    data = np.asarray(nib.load(volume_path).get_fdata())
    data = data.transpose(2, 1, 0)  # its files are stored DHW (D the slice axis): "transposed from WHD to DHW"
    depth, height, width = data.shape
    data = ndimage.zoom(data, [INPUT_SIZE[0] / depth, INPUT_SIZE[1] / height, INPUT_SIZE[2] / width], order=0)
    pixels = data[data > 0]
    out = (data - pixels.mean()) / pixels.std()
    # N(0, 1) for the zero voxels; seeded, as the contract documents, from the sha256 of the resized float32 volume
    seed = int.from_bytes(hashlib.sha256(data.astype(np.float32).tobytes()).digest()[:8], "little")
    out_random = np.random.default_rng(seed).standard_normal(data.shape)
    out[data == 0] = out_random[data == 0]
    with torch.no_grad():
        probs = model(torch.from_numpy(out[None, None].astype(np.float32)))["seg"].softmax(1)[0].numpy()
    _, mask_d, mask_h, mask_w = probs.shape
    mask = ndimage.zoom(probs, [1, depth / mask_d, height / mask_h, width / mask_w], order=1)
    return np.argmax(mask, axis=0).transpose(2, 1, 0)


@pytest.fixture(scope="module")
def medicalnet_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("medicalnet")
    ckpt, vol = _checkpoint(root / "resnet_10_ft.pth"), _volume(root / "head.nii.gz")
    contract = root / "medicalnet.yaml"
    contract.write_text(yaml.safe_dump({"volume": medicalnet_contract(INPUT_SIZE).to_dict()}))
    return ckpt, vol, contract


def test_predict_agrees_with_medicalnets_test_path(medicalnet_case, tmp_path):
    ckpt, vol, contract = medicalnet_case
    assert main(["-q", "predict", "--model", f"medicalnet:{ckpt}", "--preprocessing", str(contract), str(vol),
                 "--out", str(tmp_path)]) == 0
    got = np.asarray(nib.load(tmp_path / "masks" / "head_seg.nii.gz").dataobj)
    ref = medicalnet_test_path(vol, from_medicalnet(ckpt).eval())
    assert got.shape == ref.shape == (40, 34, 12)
    assert 0.05 < ref.mean() < 0.95  # both classes present: agreement is not a constant map's
    assert (got == ref).mean() >= 0.99


def test_the_network_reads_slices_along_d(medicalnet_case, tmp_path):
    """The contract's transpose matters: MedicalNet's network fed [X, Y, Z] as [D, H, W] (what predict did before)
    disagrees with its own test path on this volume."""
    ckpt, vol, _ = medicalnet_case
    model = from_medicalnet(ckpt).eval()
    ref = medicalnet_test_path(vol, model)
    data = np.asarray(nib.load(vol).get_fdata())  # not transposed
    x = ndimage.zoom(data, [s / n for s, n in zip(INPUT_SIZE, data.shape)], order=0)
    x = (x - x[x > 0].mean()) / x[x > 0].std()
    with torch.no_grad():
        probs = model(torch.from_numpy(x[None, None].astype(np.float32)))["seg"].softmax(1)[0].numpy()
    wrong = np.argmax(ndimage.zoom(probs, [1, *(n / p for n, p in zip(data.shape, probs.shape[1:]))], order=1), 0)
    assert (wrong == ref).mean() < 0.95


def test_medicalnet_references_carry_its_contract_and_fine_tuning_uses_it(medicalnet_case, caplog):
    ckpt, _, _ = medicalnet_case
    assert init_preprocessing(f"medicalnet:{ckpt}") == {"volume": medicalnet_contract()}
    assert resolve(f"medicalnet:{ckpt}").preprocessing == {"volume": medicalnet_contract()}
    assert init_preprocessing("zoo:resnet10.medicalnet23") == {"volume": medicalnet_contract()}
    run = {"model": {"encoder": {"name": "resnet10", "output_stride": 8},
                     "tasks": {"seg": {"type": "medicalnet_seg", "level": "volume", "num_classes": 2}}},
           "data": [{"kind": "msd", "root": "x", "tasks": {"segmentation": "seg"}}],
           "init": {"source": f"medicalnet:{ckpt}"}}
    inherited = init_preprocessing(f"medicalnet:{ckpt}")
    assert data_contract(load_run_config(run), 0, inherited) == medicalnet_contract()  # preset none: inherited
    run["data"][0]["transform"] = {"preset": "ct", "size": [16]}
    with caplog.at_level("WARNING", logger="medzoo.train.data"):
        contract = data_contract(load_run_config(run), 0, inherited)
    assert contract.normalisation == "window"  # the config's override is used...
    assert "overrides the preprocessing the initial weights" in caplog.text  # ...and said
    caplog.clear()
    run["data"][0]["transform"] = {"preset": "medicalnet", "size": list(INPUT_SIZE)}
    with caplog.at_level("WARNING", logger="medzoo.train.data"):
        assert data_contract(load_run_config(run), 0, inherited).input_size == INPUT_SIZE
    assert "overrides" in caplog.text  # another input size is another contract
