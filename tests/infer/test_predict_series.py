"""The predictor's series path: one encoding of the series gives the patient prediction and the slice weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medzoo.infer.predict import Predictor


@pytest.mark.parametrize("fuse", [True, False])
def test_series_prediction_encodes_the_series_once_with_unchanged_outputs(series_model, fuse):
    predictor = Predictor(series_model, preprocessing="series", fuse=fuse)
    slices = np.random.default_rng(6).random((5, 1, 24, 24)).astype(np.float32)
    calls: list[int] = []
    handle = predictor.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = predictor.predict_array(slices, "series", {"max_value": 1.0})["covid_ct"]
    finally:
        handle.remove()
    assert len(calls) == 1
    x, pad = torch.from_numpy(slices)[None], torch.zeros(1, 5, dtype=torch.bool)
    ref = series_model.predict(x, pad_mask=pad)["covid_ct"]["probs"][0].numpy()
    with torch.no_grad():
        weights = series_model.slice_weights(x, pad)[0].numpy()
    np.testing.assert_allclose(out.probs, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.slice_weights, weights, rtol=1e-5, atol=1e-6)
