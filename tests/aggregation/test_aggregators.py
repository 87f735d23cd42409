"""One base tester for every registered slice aggregator (STYLE rule 11), plus per-family reference checks.

Every test in ``TestAggregatorContract`` runs for each name in ``list_aggregators()`` and for a few non-default
configurations, so a newly registered aggregator is tested against the contract without new code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medzoo.aggregation import Aggregator, create_aggregator, list_aggregators

F = 8
EXPECTED = {"mean", "max", "attention", "gated_attention", "transformer", "lstm"}
WEIGHTED = {"attention", "gated_attention"}
ORDER_FREE = {"mean", "max", "attention", "gated_attention"}
ORDER_AWARE = {"transformer", "lstm"}

# Each case: (test id, registry name, builder kwargs). Defaults for every registered name, plus variants.
CASES = [(name, name, {}) for name in list_aggregators()] + [
    ("attention-hidden4-dropout", "attention", {"hidden_features": 4, "dropout": 0.5}),
    ("transformer-learned-cls", "transformer", {"positional": "learned", "pool": "cls", "max_len": 16}),
    ("transformer-nopos-dmodel16", "transformer", {"positional": "none", "d_model": 16, "nhead": 2}),
    ("lstm-mean-2layers", "lstm", {"pool": "mean", "num_layers": 2, "hidden_size": 5}),
]
CASE_IDS = [case[0] for case in CASES]


def is_order_free(name: str, kwargs: dict) -> bool:
    """A transformer without positional encoding is a set function too (self-attention is permutation-equivariant)."""
    return name in ORDER_FREE or (name == "transformer" and kwargs.get("positional") == "none")


def build(name: str, kwargs: dict, seed: int = 0, dtype: torch.dtype = torch.float32) -> Aggregator:
    torch.manual_seed(seed)
    return create_aggregator(name, F, **kwargs).to(dtype)


def lengths_mask(lengths: list[int], n: int) -> torch.Tensor:
    """pad_mask [B, n] with True after each series' length."""
    return torch.arange(n).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)


def fill_padding(x: torch.Tensor, pad: torch.Tensor, junk: str) -> torch.Tensor:
    """Return x with its padded slices replaced by junk: random large values, NaN or +/-Inf."""
    x = x.clone()
    if junk == "random":
        x[pad] = torch.randn_like(x[pad]) * 1e4
    elif junk == "nan":
        x[pad] = float("nan")
    else:
        x[pad] = torch.where(torch.rand_like(x[pad]) > 0.5, float("inf"), float("-inf"))
    return x


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    return request.param


class TestAggregatorContract:
    """The contract of ``medzoo.aggregation.base``, checked on every registered aggregator."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_shape_and_dtype(self, case, dtype):
        _, name, kwargs = case
        agg = build(name, kwargs, dtype=dtype).eval()
        x = torch.randn(3, 6, F, dtype=dtype)
        pad = lengths_mask([6, 2, 4], 6)
        z = agg(x, pad)
        assert isinstance(z, torch.Tensor)
        assert z.shape == (3, agg.out_features)
        assert z.dtype == dtype
        assert torch.isfinite(z).all()
        assert agg(x).shape == (3, agg.out_features)  # pad_mask=None: every slice valid

    def test_return_weights(self, case):
        _, name, kwargs = case
        agg = build(name, kwargs).eval()
        x, pad = torch.randn(3, 6, F), lengths_mask([6, 1, 3], 6)
        out = agg(x, pad, return_weights=True)
        assert isinstance(out, tuple)
        assert len(out) == 2
        z, weights = out
        torch.testing.assert_close(z, agg(x, pad), rtol=0, atol=0)
        assert agg.has_weights == (name in WEIGHTED)
        if name not in WEIGHTED:
            assert weights is None
            return
        assert weights.shape == (3, 6)
        assert weights.dtype == x.dtype
        assert (weights[pad] == 0).all(), "padded slices must get exactly zero weight"
        assert (weights[~pad] > 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(3), rtol=0, atol=1e-6)
        torch.testing.assert_close(z, torch.einsum("bn,bnf->bf", weights, x.masked_fill(pad[..., None], 0)))

    @pytest.mark.parametrize("junk", ["random", "nan", "inf"])
    def test_padding_invariance(self, case, junk):
        """A series alone == the same series batched with longer ones and padded with junk (eval mode)."""
        _, name, kwargs = case
        agg = build(name, kwargs).eval()
        torch.manual_seed(1)
        short, long = torch.randn(1, 3, F), torch.randn(1, 9, F)
        batch = torch.cat([long, torch.cat([short, torch.randn(1, 6, F)], dim=1)])
        pad = lengths_mask([9, 3], 9)
        batch = fill_padding(batch, pad, junk)
        with torch.no_grad():
            z_batch, w_batch = agg(batch, pad, return_weights=True)
            z_short, w_short = agg(short, return_weights=True)
            z_long = agg(long, torch.zeros(1, 9, dtype=torch.bool))
        assert torch.isfinite(z_batch).all()
        torch.testing.assert_close(z_batch[1:], z_short, rtol=0, atol=1e-5)
        torch.testing.assert_close(z_batch[:1], z_long, rtol=0, atol=1e-5)
        if w_batch is not None:
            torch.testing.assert_close(w_batch[1, :3], w_short[0], rtol=0, atol=1e-6)
            assert (w_batch[1, 3:] == 0).all()

    def test_padding_anywhere(self, case):
        """Padding interleaved with the slices gives the output of the valid slices alone, in their order."""
        _, name, kwargs = case
        agg = build(name, kwargs).eval()
        torch.manual_seed(2)
        x = torch.randn(2, 7, F)
        pad = torch.tensor([[True, False, True, False, False, True, False], [False] * 6 + [True]])
        x = fill_padding(x, pad, "nan")
        with torch.no_grad():
            z = agg(x, pad)
            z0 = agg(x[:1, ~pad[0]])
            z1 = agg(x[1:, ~pad[1]])
        torch.testing.assert_close(z, torch.cat([z0, z1]), rtol=0, atol=1e-5)

    def test_permutation(self, case):
        """mean/max/attention kinds ignore slice order (padding included); order-aware ones must not."""
        _, name, kwargs = case
        agg = build(name, kwargs).eval()
        torch.manual_seed(3)
        x, pad = torch.randn(2, 6, F), lengths_mask([6, 4], 6)
        perm = torch.tensor([4, 0, 5, 2, 1, 3])
        with torch.no_grad():
            z, w = agg(x, pad, return_weights=True)
            z_perm, w_perm = agg(x[:, perm], pad[:, perm], return_weights=True)
        if is_order_free(name, kwargs):
            torch.testing.assert_close(z_perm, z, rtol=0, atol=1e-5)
            if w is not None:
                torch.testing.assert_close(w_perm, w[:, perm], rtol=0, atol=1e-6)
        else:
            assert name in ORDER_AWARE, f"declare whether {name!r} is order-free in this test module"
            assert (z_perm - z).abs().max() > 1e-4, f"{name} should depend on slice order"

    def test_gradients(self, case):
        """Padded slices (holding NaN) get exactly zero gradient; valid ones get nonzero, finite gradient."""
        _, name, kwargs = case
        agg = build(name, kwargs).train()
        torch.manual_seed(4)
        pad = lengths_mask([5, 2, 4], 5)
        x = fill_padding(torch.randn(3, 5, F), pad, "nan").requires_grad_(True)
        z = agg(x, pad)
        (z * torch.randn_like(z)).sum().backward()
        assert (x.grad[pad] == 0).all(), "gradient leaked into padded slices"
        assert torch.isfinite(x.grad).all()
        if name == "max":  # only each feature's winning slice gets gradient
            winners = torch.where(pad[..., None], float("-inf"), x.detach()).argmax(dim=1)  # [B, F]
            hit = torch.zeros_like(x.grad, dtype=torch.bool).scatter_(1, winners.unsqueeze(1), True)
            assert (x.grad[hit] != 0).all()
            assert (x.grad[~hit] == 0).all()
        else:
            per_slice = x.grad.abs().sum(dim=-1)  # [B, N]
            assert (per_slice[~pad] > 0).all(), "every valid slice should receive gradient"
        for pname, param in agg.named_parameters():
            assert param.grad is None or torch.isfinite(param.grad).all(), pname

    def test_single_slice(self, case):
        _, name, kwargs = case
        agg = build(name, kwargs).eval()
        x = torch.randn(2, 1, F)
        z, w = agg(x, torch.zeros(2, 1, dtype=torch.bool), return_weights=True)
        assert z.shape == (2, agg.out_features)
        assert torch.isfinite(z).all()
        if name in {"mean", "max"} or name in WEIGHTED:
            torch.testing.assert_close(z, x[:, 0])  # one slice: pooling returns it
        if w is not None:
            torch.testing.assert_close(w, torch.ones(2, 1))

    def test_all_padding_row_raises(self, case):
        _, name, kwargs = case
        agg = build(name, kwargs)
        pad = lengths_mask([3, 0, 2], 3)
        with pytest.raises(ValueError, match=r"batch index 1 has no valid slice"):
            agg(torch.randn(3, 3, F), pad)
        pad = torch.ones(2, 3, dtype=torch.bool)
        with pytest.raises(ValueError, match=r"batch indices 0, 1 "):
            agg(torch.randn(2, 3, F), pad)

    def test_bad_inputs(self, case):
        _, name, kwargs = case
        agg = build(name, kwargs)
        with pytest.raises(ValueError, match=r"\[B, N, F\]"):
            agg(torch.randn(4, F))
        with pytest.raises(ValueError, match=rf"expected {F}"):
            agg(torch.randn(2, 3, F + 1))
        with pytest.raises(TypeError, match="bool"):
            agg(torch.randn(2, 3, F), torch.zeros(2, 3, dtype=torch.long))
        with pytest.raises(ValueError, match="pad_mask has shape"):
            agg(torch.randn(2, 3, F), torch.zeros(2, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"no slices \(N = 0\)"):
            agg(torch.randn(2, 0, F))
        with pytest.raises(TypeError, match="floating-point"):
            agg(torch.ones(2, 3, F, dtype=torch.long))


# ---------------------------------------------------------------- registry


def test_registry_lists_every_contract_name():
    assert EXPECTED <= set(list_aggregators())
    assert set(list_aggregators()) == ORDER_FREE | ORDER_AWARE, "classify new aggregators in this test module"


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="Did you mean 'attention'.*Valid names: .*gated_attention"):
        create_aggregator("atention", F)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="nhead=3 must divide d_model=8"):
        create_aggregator("transformer", F, nhead=3)
    with pytest.raises(ValueError, match="pool='max'"):
        create_aggregator("transformer", F, pool="max")
    with pytest.raises(ValueError, match="positional='rope'"):
        create_aggregator("transformer", F, positional="rope")
    with pytest.raises(ValueError, match="pool='cls'"):
        create_aggregator("lstm", F, pool="cls")
    with pytest.raises(TypeError, match="gated"):
        create_aggregator("attention", F, gated=True)


def test_learned_positions_reject_long_series():
    agg = create_aggregator("transformer", F, positional="learned", max_len=4)
    with pytest.raises(ValueError, match="N=5 exceeds max_len=4"):
        agg(torch.randn(1, 5, F))


# ---------------------------------------------------------------- reference computations in numpy


def _ragged_batch(seed: int = 5) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    lengths = [7, 1, 4, 2]
    x = rng.normal(size=(4, 7, F))
    pad = np.arange(7)[None, :] >= np.array(lengths)[:, None]
    x[pad] = np.nan
    return x, pad, lengths


@pytest.mark.parametrize("name", ["mean", "max"])
def test_mean_max_match_numpy(name):
    x, pad, lengths = _ragged_batch()
    expected = np.stack([getattr(np, name)(x[b, :n], axis=0) for b, n in enumerate(lengths)])
    z = create_aggregator(name, F)(torch.from_numpy(x), torch.from_numpy(pad))
    assert z.dtype == torch.float64
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["attention", "gated_attention"])
def test_attention_matches_ilse_formula(name):
    """a = softmax_k(w^T tanh(V h_k) [* sigm(U h_k)]) over each bag's own slices; z = sum_k a_k h_k."""
    x, pad, lengths = _ragged_batch(6)
    agg = build(name, {"hidden_features": 5}, dtype=torch.float64).eval()
    z, w = agg(torch.from_numpy(x), torch.from_numpy(pad), return_weights=True)
    params = {k: v.detach().numpy() for k, v in agg.state_dict().items()}
    for b, n in enumerate(lengths):
        h = x[b, :n]
        hidden = np.tanh(h @ params["attention_v.weight"].T + params["attention_v.bias"])
        if name == "gated_attention":
            hidden = hidden / (1 + np.exp(-(h @ params["attention_u.weight"].T + params["attention_u.bias"])))
        scores = hidden @ params["attention_w.weight"][0] + params["attention_w.bias"][0]
        a = np.exp(scores - scores.max())
        a /= a.sum()
        np.testing.assert_allclose(w[b, :n].detach().numpy(), a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(z[b].detach().numpy(), a @ h, rtol=1e-10, atol=1e-12)


def test_lstm_last_matches_unpacked_lstm():
    """The packed bidirectional LSTM equals running the module's nn.LSTM on each series' valid slices alone."""
    x, pad, lengths = _ragged_batch(7)
    agg = build("lstm", {"hidden_size": 3}, dtype=torch.float64).eval()
    z = agg(torch.from_numpy(x), torch.from_numpy(pad))
    assert z.shape == (4, 6)
    for b, n in enumerate(lengths):
        out, (h_n, _) = agg.lstm(torch.from_numpy(x[b : b + 1, :n]))
        # forward state after the last slice, backward state after (reading back to) the first slice
        torch.testing.assert_close(z[b, :3], out[0, -1, :3], rtol=0, atol=1e-12)
        torch.testing.assert_close(z[b, 3:], out[0, 0, 3:], rtol=0, atol=1e-12)
        torch.testing.assert_close(z[b], torch.cat([h_n[0, 0], h_n[1, 0]]), rtol=0, atol=1e-12)


def test_transformer_mean_pool_matches_direct_encoder():
    """Mean pooling = mean over slices of the encoder run on the series alone, with sinusoidal positions 0..n-1."""
    x, pad, lengths = _ragged_batch(8)
    agg = build("transformer", {"nhead": 2}, dtype=torch.float64).eval()
    z = agg(torch.from_numpy(x), torch.from_numpy(pad))
    for b, n in enumerate(lengths):
        pos = np.arange(n)[:, None] / 10000.0 ** (np.arange(0, F, 2)[None, :] / F)
        pe = np.stack([np.sin(pos), np.cos(pos)], axis=-1).reshape(n, F)
        h = torch.from_numpy(x[b : b + 1, :n] + pe)
        expected = agg.encoder(h).mean(dim=1)[0]
        torch.testing.assert_close(z[b], expected, rtol=0, atol=1e-10)


# ------------------------------------------------------ export (the masked dense path: nothing data-dependent)


@pytest.mark.parametrize("name", sorted(set(list_aggregators()) - {"lstm"}))
def test_torch_export_with_dynamic_batch_and_length(name):
    """torch.export with dynamic B and N reproduces eager outputs at other shapes (lstm's packing cannot export)."""
    from torch.export import Dim, export

    agg = build(name, {}).eval()
    x, pad = torch.randn(2, 5, F), lengths_mask([5, 3], 5)
    dims = {0: Dim("B"), 1: Dim("N")}
    program = export(agg, (x, pad), dynamic_shapes={"x": dims, "pad_mask": dims})
    pad2 = lengths_mask([2, 7, 4], 7)
    x2 = fill_padding(torch.randn(3, 7, F), pad2, "nan")
    torch.testing.assert_close(program.module()(x2, pad2), agg(x2, pad2), rtol=0, atol=1e-6)
