"""inference_defaults / inference_context: the adopted speed-ups leave outputs unchanged."""

from __future__ import annotations

import torch
from torch import nn

from medzoo.utils import inference_context, inference_defaults
from tests.helpers import count_bn


def test_inference_defaults_outputs_unchanged_volume(random_bn_model):
    model = random_bn_model
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        ref = model(x)["cls"]
    fast = inference_defaults(model)
    with inference_context():
        out = fast(x)["cls"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert fast is not model
    assert count_bn(model) > 0
    assert count_bn(fast) == 0
    assert not fast.training


def test_inference_context_is_inference_mode_and_no_fuse_option(random_bn_model):
    model = random_bn_model.train()
    same = inference_defaults(model, fuse=False)
    assert not same.training
    assert model.training
    assert count_bn(same) == count_bn(model)
    with inference_context():
        y = same.encoder(torch.randn(1, 1, 16, 16, 16))[-1]
    assert y.is_inference(), "inference tensors inside, grad mode restored after"
    assert torch.is_grad_enabled(), "inference tensors inside, grad mode restored after"


def test_predict_through_fused_model_matches(random_bn_model):
    model = random_bn_model
    x = torch.randn(2, 1, 16, 32, 32)
    ref = model.predict(x)["cls"]["probs"]
    out = inference_defaults(model).predict(x)["cls"]["probs"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert isinstance(model.encoder.bn1, nn.BatchNorm3d)
