"""Order-aware slice aggregators: a Transformer encoder and a bidirectional LSTM.

Both see the valid slices of a series in their order, with the padding removed, wherever it sits in ``pad_mask``:
a series gives the same output alone or batched and padded. Neither is invariant to the order of the slices (the
Transformer through its positional encoding, the LSTM by construction), and neither returns slice weights.

- ``transformer``: ``nn.TransformerEncoder`` (pre-norm, GELU) with ``src_key_padding_mask``. A slice's position is
  its rank among the valid slices of its series (0, 1, ...), encoded as sinusoids (default), a learned table, or
  not at all. Pooling: ``"mean"`` (default) is the masked mean of the encoder outputs over the valid slices;
  ``"cls"`` prepends a learned CLS token and returns its output.
- ``lstm``: a bidirectional ``nn.LSTM`` run over a ``PackedSequence`` built with
  ``pack_padded_sequence(..., enforce_sorted=False)``, so padded steps are never computed. Pooling: ``"last"``
  (default) concatenates the top layer's final forward and backward hidden states; ``"mean"`` is the masked mean of
  the per-slice outputs. ``out_features = 2 * hidden_size``. Packing depends on the data (the lengths), so this
  one cannot go through ``torch.export``; the other aggregators export with dynamic ``B`` and ``N``.

Example:
    >>> import torch
    >>> from medzoo.aggregation import create_aggregator
    >>> x, pad = torch.randn(2, 6, 8), torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    >>> create_aggregator("transformer", 8, nhead=2).eval()(x, pad).shape
    torch.Size([2, 8])
    >>> create_aggregator("lstm", 8, hidden_size=4)(x, pad).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medzoo.aggregation.base import AGGREGATORS, Aggregator, compact_valid, masked_mean, zero_padding

__all__ = ["LSTMAggregator", "TransformerAggregator", "sinusoidal_encoding"]

_POSITIONAL = ("sinusoidal", "learned", "none")


def sinusoidal_encoding(
    positions: Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Sinusoidal position encoding (Vaswani et al. 2017) of integer ``positions [...]`` -> ``[..., dim]``.

    Channel ``2i`` holds ``sin(p / base^(2i/dim))`` and channel ``2i+1`` the matching cosine; any length works.

    Example:
        >>> sinusoidal_encoding(torch.arange(3), 4).shape
        torch.Size([3, 4])
    """
    freqs = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=dtype) * (-math.log(base) / dim))
    angles = positions.to(dtype).unsqueeze(-1) * freqs
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)[..., :dim]


def _check_choice(owner: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {key}={value!r} is not one of {', '.join(map(repr, choices))}")


class TransformerAggregator(Aggregator):
    """Transformer encoder over the slices, then pooling (masked mean by default, or a CLS token).

    Args:
        in_features: per-slice feature size ``F``.
        d_model: the Transformer width and ``out_features``; default ``in_features``. A linear projection maps
            ``F`` to ``d_model`` when they differ (a smaller ``d_model`` is much cheaper for 2048-d features).
        nhead: attention heads; must divide ``d_model``.
        num_layers: encoder layers.
        dim_feedforward: hidden size of each layer's MLP; default ``2 * d_model``.
        dropout: dropout inside the encoder layers (training only).
        positional: ``"sinusoidal"``, ``"learned"`` (a table of ``max_len`` positions) or ``"none"``.
        max_len: the longest series a ``"learned"`` encoding accepts.
        pool: ``"mean"`` (masked mean of the outputs over valid slices) or ``"cls"`` (output of a learned token).

    Example:
        >>> agg = TransformerAggregator(16, d_model=8, nhead=2, pool="cls")
        >>> agg(torch.randn(3, 5, 16)).shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        in_features: int,
        d_model: int | None = None,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        positional: str = "sinusoidal",
        max_len: int = 1024,
        pool: str = "mean",
    ) -> None:
        d_model = int(d_model or in_features)
        super().__init__(in_features, d_model)
        _check_choice("TransformerAggregator", "positional", positional, _POSITIONAL)
        _check_choice("TransformerAggregator", "pool", pool, ("mean", "cls"))
        if d_model % nhead:
            raise ValueError(f"TransformerAggregator: nhead={nhead} must divide d_model={d_model}")
        self.positional, self.pool, self.max_len = positional, pool, int(max_len)
        self.proj = nn.Linear(in_features, d_model) if d_model != in_features else nn.Identity()
        self.pos_table = nn.Embedding(self.max_len, d_model) if positional == "learned" else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        ff = dim_feedforward or 2 * d_model
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        if self.pos_table is not None:
            nn.init.normal_(self.pos_table.weight, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def _position_encoding(self, valid: Tensor, dtype: torch.dtype) -> Tensor | None:
        """Encoding ``[B, N, d_model]`` of each slice's rank among the valid slices of its series."""
        if self.positional == "none":
            return None
        if self.pos_table is not None and valid.shape[1] > self.max_len:
            raise ValueError(
                f"TransformerAggregator: series length N={valid.shape[1]} exceeds max_len={self.max_len} of the "
                "learned positional encoding; raise max_len or use positional='sinusoidal'"
            )
        rank = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        if self.pos_table is not None:
            return self.pos_table(rank).to(dtype)
        return sinusoidal_encoding(rank, self.out_features, dtype=dtype)

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, None]:
        """``x [B, N, F]``, ``valid [B, N]`` -> ``(z [B, d_model], None)``."""
        h = self.proj(zero_padding(x, valid))
        pos = self._position_encoding(valid, h.dtype)
        if pos is not None:
            h = h + pos
        pad = ~valid
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.to(h.dtype).expand(h.shape[0], -1, -1), h], dim=1)
            pad = torch.cat([pad.new_zeros(pad.shape[0], 1), pad], dim=1)
        out = self.encoder(h, src_key_padding_mask=pad)
        if self.cls_token is not None:
            return out[:, 0], None
        return masked_mean(out, valid), None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, positional={self.positional!r}, pool={self.pool!r}"


class LSTMAggregator(Aggregator):
    """Bidirectional LSTM over the valid slices (packed, so padded steps are skipped), then pooling.

    Args:
        in_features: per-slice feature size ``F``.
        hidden_size: LSTM hidden size per direction; default ``in_features``. ``out_features = 2 * hidden_size``.
        num_layers: stacked LSTM layers.
        dropout: dropout between stacked layers (only with ``num_layers > 1``, training only).
        pool: ``"last"`` (concatenated final forward and backward hidden states of the top layer) or ``"mean"``
            (masked mean of the per-slice outputs).

    Example:
        >>> agg = LSTMAggregator(8, hidden_size=3)
        >>> agg(torch.randn(2, 5, 8)).shape
        torch.Size([2, 6])
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        pool: str = "last",
    ) -> None:
        hidden_size = int(hidden_size or in_features)
        super().__init__(in_features, 2 * hidden_size)
        _check_choice("LSTMAggregator", "pool", pool, ("last", "mean"))
        self.pool = pool
        self.lstm = nn.LSTM(
            in_features,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, None]:
        """``x [B, N, F]``, ``valid [B, N]`` -> ``(z [B, 2 * hidden_size], None)``."""
        h, lengths = compact_valid(zero_padding(x, valid), valid)
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.pool == "last":
            return torch.cat([h_n[-2], h_n[-1]], dim=-1), None
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        steps = torch.arange(x.shape[1], device=x.device)
        return masked_mean(out, steps.unsqueeze(0) < lengths.unsqueeze(1)), None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool!r}"


@AGGREGATORS.register("transformer")
def transformer(in_features: int, **kwargs: object) -> TransformerAggregator:
    """Transformer encoder over slices with positional encoding and a padding mask."""
    return TransformerAggregator(in_features, **kwargs)


@AGGREGATORS.register("lstm")
def lstm(in_features: int, **kwargs: object) -> LSTMAggregator:
    """Bidirectional LSTM over packed slice sequences."""
    return LSTMAggregator(in_features, **kwargs)
