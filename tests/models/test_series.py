"""Packed, chunked series encoding: equal to unchunked, dense and per-item encoding; checkpointing; errors."""

from __future__ import annotations

import copy

import pytest
import torch

from medzoo.encoders import create_encoder
from medzoo.models.series import check_series, encode_series

TINY = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = create_encoder("resnet10", widths=TINY)
    # non-trivial BN statistics, so eval mode is not the identity on normalisation
    with torch.no_grad():
        enc.train()
        for _ in range(2):
            enc(torch.randn(8, 1, 32, 32) * 2 + 0.5)
    return enc.eval()


def _batch(lengths, n=None, size=32, slab=None):
    n = n or max(lengths)
    shape = (len(lengths), n, 1, size, size) if slab is None else (len(lengths), n, 1, slab, size, size)
    x = torch.randn(*shape)
    pad = torch.tensor([[i >= length for i in range(n)] for length in lengths])
    return x, pad


def _per_item(encoder, x, pad):
    out = torch.zeros(*x.shape[:2], encoder.feature_dim)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            if not pad[b, i]:
                out[b, i] = encoder(x[b, i : i + 1])[-1].flatten(2).mean(-1)[0]
    return out


@pytest.fixture(scope="module")
def reference(encoder):
    torch.manual_seed(3)
    x, pad = _batch([5, 2, 7])
    with torch.no_grad():
        return x, pad, _per_item(encoder, x, pad)


@pytest.mark.parametrize("chunk", [1, 3, 4, 100])
def test_packed_chunked_equals_per_item_and_dense(encoder, reference, chunk):
    x, pad, ref = reference
    with torch.no_grad():
        packed = encode_series(encoder, x, pad, max_items_per_chunk=chunk)
        dense = encode_series(encoder, x, pad, max_items_per_chunk=chunk, mode="dense")
    assert packed.shape == (3, 7, encoder.feature_dim)
    torch.testing.assert_close(packed, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=1e-5)
    assert (packed[pad] == 0).all()


def test_padded_items_are_never_encoded(encoder):
    x, pad = _batch([3, 1])
    x[pad] = float("nan")
    seen = []

    def enc(t):
        seen.append(t.shape[0])
        assert torch.isfinite(t).all()
        return encoder(t)

    with torch.no_grad():
        out = encode_series(enc, x, pad, max_items_per_chunk=2)
    assert torch.isfinite(out).all()
    assert sum(seen) == 4
    assert max(seen) <= 2


def test_chunk_calls_are_balanced_and_bounded():
    calls = []

    def enc(t):
        calls.append(t.shape[0])
        return [t.flatten(2).mean(-1, keepdim=True)]

    x, pad = _batch([10, 3], size=4)
    encode_series(enc, x, pad, max_items_per_chunk=5)
    assert calls == [5, 4, 4]  # 13 valid items, at most 5 per call, 3 calls
    calls.clear()
    encode_series(enc, x, pad, max_items_per_chunk=64)
    assert calls == [13]


def test_slabs_take_the_3d_path(encoder):
    x, pad = _batch([2, 1], size=16, slab=4)
    with torch.no_grad():
        out = encode_series(encoder, x, pad)
        ref = encoder(x[0, :2])[-1].flatten(2).mean(-1)
    torch.testing.assert_close(out[0, :2], ref, atol=1e-5, rtol=1e-5)


def test_checkpointing_matches_plain_training_step(encoder):
    x, pad = _batch([4, 2, 3])
    results = []
    for ckpt in (False, True):
        enc = copy.deepcopy(encoder).train()
        out = encode_series(enc, x, pad, max_items_per_chunk=3, checkpoint=ckpt)
        (out.square().sum()).backward()
        grads = [p.grad.clone() for p in enc.parameters()]
        buffers = [b.clone() for b in enc.buffers()]
        results.append((out.detach(), grads, buffers))
    (o0, g0, b0), (o1, g1, b1) = results
    torch.testing.assert_close(o0, o1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(b0, b1):  # BN running statistics updated exactly once per chunk
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(b0, encoder.buffers()))


def test_errors():
    x, pad = _batch([2, 3])
    with pytest.raises(ValueError, match=r"batch index 1 has no valid slice"):
        check_series(x, torch.tensor([[False, True, True], [True, True, True]]))
    with pytest.raises(TypeError, match="bool"):
        check_series(x, pad.long())
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        check_series(x, pad[:, :2])
    with pytest.raises(ValueError, match="series input"):
        check_series(torch.zeros(2, 3, 4, 5), None)
    with pytest.raises(ValueError, match="max_items_per_chunk"):
        encode_series(lambda t: [t], x, pad, max_items_per_chunk=0)
    assert not check_series(x, None).any()
