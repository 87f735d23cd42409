"""CAM equals the analytical weighted sum; Grad-CAM against hand-written autograd; series maps and weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from medzoo.infer.cam import cam, explain, grad_cam, series_explanation


def _up(m, size):
    mode = "trilinear" if m.dim() == 4 else "bilinear"
    return F.interpolate(m[:, None], size=size, mode=mode, align_corners=False)[:, 0]


@pytest.mark.parametrize("task,shape", [("findings", (2, 1, 64, 48)), ("grade", (1, 1, 32, 32, 32))])
def test_cam_is_the_weighted_sum_of_last_maps(cxr, seg3d, task, shape):
    model = cxr if task == "findings" else seg3d
    x = torch.rand(shape)
    label = 1
    got = cam(model, x, task, label)
    with torch.no_grad():
        a = model.encoder(x)[-1]
    w, bias = model.heads[task].fc.weight[label], model.heads[task].fc.bias[label]
    raw = (a * w.view(1, -1, *([1] * (a.dim() - 2)))).sum(1)
    torch.testing.assert_close(got.maps, _up(raw, shape[2:]), rtol=1e-5, atol=1e-6)
    assert not got.maps.requires_grad
    # CAM's spatial mean plus the bias is the label's logit (global average pooling + linear).
    with torch.no_grad():
        logits = model(x, tasks=[task])[task][:, label]
    torch.testing.assert_close(raw.flatten(1).mean(1) + bias, logits, rtol=1e-5, atol=1e-5)
    assert got.label == model.heads[task].label_names[label] and got.method == "cam"


def test_gradcam_of_pooled_linear_head_is_relu_cam_over_cells(cxr):
    model = copy.deepcopy(cxr)
    with torch.no_grad():  # mixed-sign weights so that the ReLU matters
        model.heads["findings"].fc.weight.copy_(torch.linspace(-1, 1, 64).repeat(3, 1))
    x = torch.rand(1, 1, 64, 64)
    g = grad_cam(model, x, "findings", "c")
    with torch.no_grad():
        a = model.encoder(x)[-1]
    n = a[0, 0].numel()
    raw = torch.relu((a * model.heads["findings"].fc.weight[2].view(1, -1, 1, 1)).sum(1)) / n
    assert raw.max() > 0 and (raw == 0).any()
    torch.testing.assert_close(g.maps, _up(raw, (64, 64)), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_dense_3d_matches_autograd(seg3d):
    x = torch.rand(1, 1, 32, 32, 32)
    got = grad_cam(seg3d, x, "seg", 1)
    feats = seg3d.encoder(x)
    logits = seg3d.heads["seg"](feats, (32, 32, 32))
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), feats[-1])
    ref = torch.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * feats[-1]).sum(1)).detach()
    torch.testing.assert_close(got.maps, _up(ref, (32, 32, 32)), rtol=1e-4, atol=1e-6)
    assert got.maps.shape == (1, 32, 32, 32)


def test_series_cam_slices_and_weights(series_model):
    x = torch.rand(1, 4, 1, 32, 32)
    pad = torch.zeros(1, 4, dtype=torch.bool)
    e = series_explanation(series_model, x, "covid_ct", "covid", method="cam")
    with torch.no_grad():
        a = series_model.encoder(x[0])[-1]  # [N, F, h, w]
        weights = series_model.slice_weights(x, pad)[0]
        logit = series_model(x, pad_mask=pad)["covid_ct"][0, 2]
    fc = series_model.heads["covid_ct"].fc
    raw = (a * fc.weight[2].view(1, -1, 1, 1)).sum(1)
    torch.testing.assert_close(e.maps, _up(raw, (32, 32)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e.slice_weights, weights)
    # attention MIL is a weighted mean of slice features: sum_n a_n mean(CAM_n) + b is the patient logit
    torch.testing.assert_close((weights * raw.flatten(1).mean(1)).sum() + fc.bias[2], logit, rtol=1e-4, atol=1e-5)
    g = explain(series_model, x, "covid_ct", "covid", "gradcam")
    assert g.maps.shape == (4, 32, 32) and (g.maps >= 0).all()


def test_bad_requests(seg3d, cxr):
    with pytest.raises(ValueError, match="pooled-linear.*Grad-CAM"):
        cam(seg3d, torch.rand(1, 1, 16, 16, 16), "seg", 0)
    with pytest.raises(KeyError, match="unknown label 'z'.*'a', 'b', 'c'"):
        cam(cxr, torch.rand(1, 1, 32, 32), "findings", "z")
    with pytest.raises(ValueError, match="method must be"):
        explain(cxr, torch.rand(1, 1, 32, 32), "findings", "a", "lime")


def test_explain_series_folder_writes_slices_and_weights(series_model, tmp_path):
    import json

    import numpy as np

    from medzoo.data.imageio import write_png
    from medzoo.infer.explain import explain_input, write_explanation

    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(tmp_path / "pt" / f"s{i}.png", (rng.random((24, 20)) * 255).astype(np.uint8))
    res = explain_input([series_model], tmp_path / "pt", "covid_ct", "covid", "cam", preprocessing=["series"])
    assert res.heatmap.shape == (3, 24, 20)
    files = write_explanation(res, tmp_path / "out")
    names = sorted(f.name for f in files)
    assert names == ["pt_covid_ct_covid_cam.json"] + [f"pt_covid_ct_covid_cam_slice{i:03d}.png" for i in range(3)]
    summary = json.loads((tmp_path / "out" / "pt_covid_ct_covid_cam.json").read_text())
    assert len(summary["slice_weights"]) == 3 and abs(sum(summary["slice_weights"]) - 1) < 1e-5
