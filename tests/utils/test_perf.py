"""inference_defaults / inference_context: the adopted speed-ups leave outputs unchanged."""

from __future__ import annotations

import torch
from torch import nn

from medzoo.encoders import create_encoder
from medzoo.heads import ClassificationHead
from medzoo.models import MultiTaskModel
from medzoo.utils import inference_context, inference_defaults
from tests.conftest import TINY_WIDTHS
from tests.utils.test_fuse import _n_bn, _randomize_bn


def _model() -> MultiTaskModel:
    enc = create_encoder("resnet18", widths=TINY_WIDTHS)
    model = MultiTaskModel(enc, {"cls": ClassificationHead(64, num_classes=2)})
    return _randomize_bn(model)


def test_inference_defaults_outputs_unchanged_volume():
    model = _model()
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        ref = model(x)["cls"]
    fast = inference_defaults(model)
    with inference_context():
        out = fast(x)["cls"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert fast is not model and _n_bn(model) > 0 and _n_bn(fast) == 0 and not fast.training


def test_inference_context_is_inference_mode_and_no_fuse_option():
    model = _model().train()
    same = inference_defaults(model, fuse=False)
    assert not same.training and model.training and _n_bn(same) == _n_bn(model)
    with inference_context():
        y = same.encoder(torch.randn(1, 1, 16, 16, 16))[-1]
    assert y.is_inference() and torch.is_grad_enabled(), "inference tensors inside, grad mode restored after"


def test_predict_through_fused_model_matches():
    model = _model()
    x = torch.randn(2, 1, 16, 32, 32)
    ref = model.predict(x)["cls"]["probs"]
    out = inference_defaults(model).predict(x)["cls"]["probs"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert isinstance(model.encoder.bn1, nn.BatchNorm3d)
