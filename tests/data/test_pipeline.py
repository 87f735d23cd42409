"""The one pipeline: each contract step checked against numpy/scipy written out here, the stages, the inverse
mapping back to the input's grid, noise seeded from the input, and the voxel budget."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage

from medzoo.data.contract import Preprocessing
from medzoo.data.imageio import load_gray, write_png
from medzoo.data.pipeline import build_transforms, check_voxel_budget, prepare, transform_specs
from medzoo.data.presets import ct_contract, imagenet_contract, medicalnet_contract, txv_contract
from medzoo.data.transforms import set_sample_seed


def _affine(spacing, origin=(0.0, 0.0, 0.0), flip=(1, 1, 1)):
    a = np.diag([s * f for s, f in zip(spacing, flip)] + [1.0])
    a[:3, 3] = origin
    return a


def _world(affine, shape):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return ((np.asarray(affine)[:3, :3] @ ijk.T).T + np.asarray(affine)[:3, 3]).reshape(*shape, 3)


def test_ct_contract_is_window_then_pad_and_predict_never_crops():
    vol = np.random.default_rng(0).uniform(-1200, 600, (1, 10, 12, 20)).astype(np.float32)
    c = ct_contract(spacing=None, orientation=None, patch=(16, 16, 16))
    window = np.clip((vol[0] + 1000) / 1400, 0, 1)
    ev = prepare(c, vol, {"affine": np.eye(4)}, "volume", stage="eval").tensor[0, 0].numpy()
    assert ev.shape == (16, 16, 16)  # the training patch: padded on x/y, centre-cropped on z
    np.testing.assert_allclose(ev[3:13, 2:14, :], window[:, :, 2:18], atol=1e-6)
    assert float(np.abs(ev[:3]).max()) == 0.0  # pad value 0 = the window's low end (air)
    pr = prepare(c, vol, {"affine": np.eye(4)}, "volume").tensor[0, 0].numpy()
    assert pr.shape == (16, 16, 20)  # padded to the patch, never cropped: sliding windows cover the rest
    np.testing.assert_allclose(pr[3:13, 2:14, :], window, atol=1e-6)


def test_inverse_maps_back_exactly_through_orientation_spacing_and_pad():
    """A linear function of world coordinates, sampled on the network grid and mapped back, is the same function
    on the input grid: the inverse is geometrically exact (linear interpolation keeps linear functions)."""
    aff = _affine((1.5, 2.0, 3.0), (40.0, 30.0, -20.0), flip=(-1, -1, 1))  # LPS storage
    shape = (20, 14, 9)
    c = ct_contract(spacing=(2.5, 2.5, 2.5), patch=(16, 16, 16))
    prep = prepare(c, np.zeros((1, *shape), np.float32) - 1000, {"affine": aff}, "volume")
    net = prep.image
    coef = np.array([0.3, -1.1, 0.7])
    f_net = torch.from_numpy((_world(net.affine.numpy(), net.shape[1:]) @ coef).astype(np.float32))
    back = prep.to_original(f_net[None])[0]
    truth = _world(aff, shape) @ coef
    assert back.shape == shape
    np.testing.assert_allclose(back[2:-2, 2:-2, 2:-2], truth[2:-2, 2:-2, 2:-2], atol=1e-3)


def test_a_pickled_prepared_travels_light_and_maps_back_the_same():
    """What a DataLoader worker sends: no Compose and no MetaTensor cross, the transform is rebuilt from the recipe
    (new transform ids, which the inverse then does not check), and the mapping back equals the original's."""
    aff = _affine((1.5, 2.0, 3.0), (40.0, 30.0, -20.0), flip=(-1, -1, 1))
    c = ct_contract(spacing=(2.5, 2.5, 2.5), patch=(16, 16, 16))
    prep = prepare(c, np.zeros((1, 20, 14, 9), np.float32) - 1000, {"affine": aff}, "volume")
    moved = pickle.loads(pickle.dumps(prep))
    assert moved.transform is None
    assert moved.image is None
    torch.testing.assert_close(moved.tensor, prep.tensor, rtol=0, atol=0)
    maps = torch.rand(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    want = prep.to_original(maps)  # the sender keeps its own ids and transform
    np.testing.assert_array_equal(moved.to_original(maps), want)
    assert want.shape == (2, 20, 14, 9)


def test_medicalnet_predict_steps_equal_its_published_code():
    """brains18.py test path, written out: transpose [X, Y, Z] -> [Z, Y, X], zoom(order=0) to the input size,
    z-score over voxels > 0, zero voxels -> 0 (``background: zero``); no crop at test time."""
    rng = np.random.default_rng(1)
    vol = np.zeros((30, 26, 11), np.float32)
    vol[4:25, 3:22, 2:10] = rng.uniform(1, 500, (21, 19, 8))
    c = medicalnet_contract((14, 28, 28), background="zero")
    got = prepare(c, vol[None], {"affine": _affine((0.8, 0.8, 3.0))}, "volume").tensor[0, 0].numpy()
    data = vol.transpose(2, 1, 0)
    data = ndimage.zoom(data, [14 / 11, 28 / 26, 28 / 30], order=0)
    pixels = data[data > 0]
    ref = (data - pixels.mean()) / pixels.std()
    ref[data == 0] = 0.0
    assert got.shape == (14, 28, 28)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_medicalnet_training_crops_to_the_box_its_code_slices():
    vol = np.zeros((12, 10, 8), np.float32)
    vol[3:9, 2:7, 1:6] = np.arange(6 * 5 * 5, dtype=np.float32).reshape(6, 5, 5) + 1
    c = medicalnet_contract((5, 6, 7), background="zero")
    got = build_transforms(c, "eval", "volume")({"image": vol[None], "meta": {"affine": np.eye(4)}})["image"]
    data = vol.transpose(2, 1, 0)
    nz = np.array(np.where(data != data[0, 0, 0]))
    (z0, y0, x0), (z1, y1, x1) = nz.min(axis=1), nz.max(axis=1)
    crop = data[z0:z1, y0:y1, x0:x1]  # MedicalNet's slices stop one short of the box's far edge
    zoomed = ndimage.zoom(crop, [5 / crop.shape[0], 6 / crop.shape[1], 7 / crop.shape[2]], order=0)
    px = zoomed[zoomed > 0]
    np.testing.assert_allclose(got[0].numpy(), (zoomed - px.mean()) / px.std(), atol=1e-5)


def test_background_noise_is_standard_normal_seeded_from_the_input():
    vol = np.zeros((1, 40, 40, 20), np.float32)
    vol[0, 10:30, 10:30, 5:15] = np.random.default_rng(2).uniform(1, 9, (20, 20, 10))
    c = medicalnet_contract((20, 40, 40))

    def run(v):
        return prepare(c, v, {"affine": np.eye(4)}, "volume").tensor[0, 0].numpy()

    a, b = run(vol), run(vol)
    zero = prepare(c.replace(background="zero"), vol, {"affine": np.eye(4)}, "volume").tensor[0, 0].numpy()
    bg = vol[0].transpose(2, 1, 0) == 0
    np.testing.assert_array_equal(a, b)  # the same input draws the same noise: a run is deterministic
    np.testing.assert_array_equal(a[~bg], zero[~bg])  # only the zero voxels change
    noise = a[bg]
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1.0) < 0.05  # N(0, 1), 28000 draws
    other = vol.copy()
    other[0, 15, 15, 7] += 1.0
    assert not np.allclose(run(other)[bg], noise)  # seeded from the input


def test_training_noise_comes_from_the_per_sample_seed():
    vol = np.zeros((1, 16, 16, 8), np.float32)
    vol[0, 4:12, 4:12, 2:6] = np.random.default_rng(6).uniform(1, 5, (8, 8, 4))
    vol[0, 6:9, 6:9, 3:5] = 0.0  # zero voxels inside the training crop: they get noise
    t = build_transforms(medicalnet_contract((8, 16, 16)), "train", "volume", augment=False)

    def draw(epoch):
        set_sample_seed(t, 0, epoch, 3)
        return t({"image": vol, "meta": {"affine": np.eye(4)}})["image"].numpy()

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.allclose(draw(1), draw(2))


def test_txv_contract_square_crop_resize_and_range():
    img = np.random.default_rng(3).integers(0, 256, (1, 60, 40)).astype(np.uint8)
    got = prepare(txv_contract(32), img, {"max_value": 255.0}, "image").tensor[0].numpy()
    square = torch.from_numpy(img[:, 10:50, :].astype(np.float32) / 255.0)[None]
    resized = torch.nn.functional.interpolate(square, size=(32, 32), mode="bilinear", align_corners=False,
                                              antialias=True)[0].numpy()
    np.testing.assert_allclose(got, resized * 2048 - 1024, atol=1e-3)


def test_imagenet_contract_replicates_grey_and_normalises_per_channel():
    img = np.full((1, 16, 16), 200, np.uint16)
    got = prepare(imagenet_contract(3, 8), img, {"max_value": 4095.0}, "image").tensor[0]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for ch in range(3):
        np.testing.assert_allclose(got[ch].numpy(), (200 / 4095 - mean[ch]) / std[ch], atol=1e-5)


def test_image_outputs_map_back_to_the_image_size():
    img = np.random.default_rng(4).integers(0, 256, (1, 50, 30)).astype(np.uint8)
    prep = prepare(txv_contract(16), img, {"max_value": 255.0}, "image")
    back = prep.to_original(torch.ones(2, 16, 16))
    assert back.shape == (2, 50, 30)
    np.testing.assert_allclose(back[:, 10:40, :], 1.0, atol=1e-6)  # the centre square, resized back
    assert float(np.abs(back[:, :10]).max()) == 0.0  # outside the crop: nothing predicted


def test_voxel_budget_is_checked_before_resampling():
    c = ct_contract(spacing=(0.1, 0.1, 0.1), patch=None)
    with pytest.raises(ValueError, match=r"scan7: resampling \[10, 10, 10\] voxels of \[100.0, 100.0, 100.0\] mm"):
        prepare(c, np.zeros((1, 10, 10, 10), np.float32), {"affine": _affine((100.0, 100.0, 100.0))}, "volume",
                name="scan7")  # 1e12 voxels: refused at once, nothing is allocated
    assert check_voxel_budget(c, (10, 10, 10), _affine((1.0, 1.0, 1.0)), "ok") == 1_000_000


def test_a_3d_contract_cannot_prepare_images():
    with pytest.raises(ValueError, match="XYZ contract cannot prepare image inputs"):
        prepare(ct_contract(), np.zeros((1, 8, 8), np.float32), {}, "image")


def test_load_gray_scales_dicom_radiographs_by_their_bits_like_predict(tmp_path):
    pytest.importorskip("pydicom")
    from tests.data.dicom_fixtures import write_radiograph

    raw = np.random.default_rng(5).integers(100, 3000, (20, 24)).astype(np.uint16)  # 12 bits, far from 4095
    path = write_radiograph(tmp_path / "cr.dcm", raw, bits=12)
    np.testing.assert_allclose(load_gray(path)[0].numpy(), raw / 4095.0, atol=1e-6)
    as_predicted = Preprocessing.from_dict({"modality": "CXR", "axes": "HW", "rescale": "max_value"})
    from medzoo.data.imageio import read_image

    arr, meta = read_image(path)
    np.testing.assert_allclose(prepare(as_predicted, arr, meta, "image").tensor[0, 0].numpy(),
                               load_gray(path)[0].numpy(), atol=1e-6)
    png = write_png(tmp_path / "x.png", (raw // 16).astype(np.uint8))
    np.testing.assert_allclose(load_gray(png)[0].numpy(), (raw // 16) / 255.0, atol=1e-6)


@pytest.mark.parametrize("contract", [ct_contract(spacing=2.0, patch=8), medicalnet_contract((6, 8, 8), "zero")])
def test_transform_specs_build_the_same_chain_through_monais_config_parser(contract):
    """The chain as bundle config entries (plain JSON): MONAI's ConfigParser builds the same transforms."""
    from monai.bundle import ConfigParser

    specs = json.loads(json.dumps(transform_specs(contract, "predict")))
    chain = ConfigParser({"pre": {"_target_": "Compose", "transforms": specs}}).get_parsed_content("pre")
    vol = np.random.default_rng(7).uniform(-500, 500, (1, 12, 10, 9)).astype(np.float32)
    sample = {"image": vol, "meta": {"affine": _affine((1.5, 1.5, 2.5))}}
    got = chain(dict(sample))["image"]
    expected = build_transforms(contract, "predict")(dict(sample))["image"]
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), rtol=0, atol=0)
