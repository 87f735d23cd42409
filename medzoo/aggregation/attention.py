"""Attention-based multiple-instance pooling (Ilse, Tomczak and Welling, ICML 2018), for padded batches.

For a bag ``H = [h_1 .. h_N]`` of slice features:

- ``attention``: ``a_k = softmax_k(w^T tanh(V h_k))``;
- ``gated_attention``: ``a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))``;
- output ``z = sum_k a_k h_k`` (``out_features == in_features``).

The paper runs one bag at a time. Here a batch of bags of different lengths is padded; the attention logits of
padded slices are set to ``-inf`` before the softmax, so their weights are exactly 0 and a bag gives the same
output alone or batched. With ``B = 1`` and no padding this is the paper's pooling operator. The weights
(``return_weights=True``) say which slices drove the decision.

Example:
    >>> import torch
    >>> from medzoo.aggregation import create_aggregator
    >>> agg = create_aggregator("gated_attention", 8, hidden_features=16)
    >>> z, w = agg(torch.randn(2, 4, 8), return_weights=True)
    >>> tuple(z.shape), bool(torch.allclose(w.sum(1), torch.ones(2)))
    ((2, 8), True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medzoo.aggregation.base import AGGREGATORS, Aggregator, zero_padding

__all__ = ["AttentionMIL"]


class AttentionMIL(Aggregator):
    """Attention MIL pooling, optionally gated.

    Args:
        in_features: per-slice feature size ``F`` (also ``out_features``).
        hidden_features: size ``D`` of the attention network's hidden layer (128 in the paper).
        gated: use the gated variant (an extra ``sigmoid(U h)`` gate).
        dropout: dropout on the hidden attention activations (training only).

    Example:
        >>> import torch
        >>> agg = AttentionMIL(8, hidden_features=4)
        >>> z, w = agg(torch.randn(1, 3, 8), return_weights=True)
        >>> tuple(w.shape)
        (1, 3)
    """

    has_weights = True

    def __init__(self, in_features: int, hidden_features: int = 128, gated: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_features, in_features)
        if int(hidden_features) < 1:
            raise ValueError(f"AttentionMIL: hidden_features must be a positive int, got {hidden_features!r}")
        self.gated = bool(gated)
        self.attention_v = nn.Linear(in_features, hidden_features)
        self.attention_u = nn.Linear(in_features, hidden_features) if self.gated else None
        self.attention_w = nn.Linear(hidden_features, 1)
        self.dropout = nn.Dropout(dropout)

    def attention_logits(self, h: Tensor) -> Tensor:
        """Unnormalised attention scores ``[B, N]`` of slice features ``h [B, N, F]`` (no masking)."""
        hidden = torch.tanh(self.attention_v(h))
        if self.attention_u is not None:
            hidden = hidden * torch.sigmoid(self.attention_u(h))
        return self.attention_w(self.dropout(hidden)).squeeze(-1)

    def aggregate(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, N, F]``, ``valid [B, N]`` -> ``(z [B, F], weights [B, N])``; weights are 0 at padding."""
        h = zero_padding(x, valid)
        logits = self.attention_logits(h).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        z = torch.bmm(weights.unsqueeze(1), h).squeeze(1)
        return z, weights

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gated={self.gated}"


@AGGREGATORS.register("attention")
def attention(in_features: int, **kwargs: object) -> AttentionMIL:
    """Attention MIL pooling (Ilse et al. 2018)."""
    return AttentionMIL(in_features, gated=False, **kwargs)


@AGGREGATORS.register("gated_attention")
def gated_attention(in_features: int, **kwargs: object) -> AttentionMIL:
    """Gated attention MIL pooling (Ilse et al. 2018)."""
    return AttentionMIL(in_features, gated=True, **kwargs)
