"""Series (variable-length multi-slice) encoding.

A batch of series is ``x [B, N, C, H, W]`` (slices, encoded with the encoder's 2D path) or ``x [B, N, C, d, H, W]``
(slabs, 3D), with ``pad_mask [B, N]`` (bool, True = padding, PyTorch's convention). Only the valid items are
encoded: they are packed into as few encoder calls as ``max_items_per_chunk`` allows, pooled per item, and
scattered back to ``[B, N, F]`` (zeros at padded positions). Padded items never reach the encoder, so in training
mode they cannot leak into batch-norm statistics either, and the result of a series does not depend on what it is
batched with (in eval mode).

``mode="dense"`` encodes all ``B * N`` items instead (the MILModel way); it is what exports use (no data-dependent
indexing to trace), and the benchmark's baseline.

The padding mask is validated once per batch (:func:`check_series`): :func:`encode_series` does it when called
directly, and ``MultiTaskModel`` does it at its boundary and passes ``validate=False`` below.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from medzoo.aggregation.base import check_pad_mask

__all__ = ["check_series", "encode_series", "pool_features", "scatter_items"]

Encoder = Callable[[Tensor], Sequence[Tensor]]


def pool_features(fmap: Tensor) -> Tensor:
    """Global average pooling of a feature map ``[B, F, *spatial] -> [B, F]``."""
    return fmap.flatten(2).mean(dim=-1)


def check_series(x: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Validate a series batch and return its ``pad_mask`` on ``x``'s device (all False when ``None``).

    Raises:
        ValueError: wrong ranks or shapes, or a series with no valid item (see
            :func:`medzoo.aggregation.check_pad_mask`).
        TypeError: a mask that is not bool.
    """
    if x.dim() not in (5, 6):
        raise ValueError(
            "a series input must be [B, N, C, H, W] (slices) or [B, N, C, d, H, W] (slabs), "
            f"got shape {tuple(x.shape)}"
        )
    return check_pad_mask(pad_mask, x.shape[:2], x.device)


@contextlib.contextmanager
def _restored_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer (BN running statistics) after the block: a checkpointed chunk recomputed in backward
    must not update them a second time. Works for any encoder that updates its buffers in place."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _encode_pooled(encoder: Encoder, flat: Tensor, index: Tensor, checkpoint: bool) -> Tensor:
    """Gather items ``flat[index]``, encode them in one call and pool the last map to ``[M, F]``.

    With ``checkpoint``, the gather runs inside the checkpointed function, so that only the index is kept for the
    recomputation in backward, not a copy of the chunk.
    """
    if not (checkpoint and torch.is_grad_enabled()):
        return pool_features(encoder(flat.index_select(0, index))[-1])
    calls = [0]

    def run(idx: Tensor) -> Tensor:
        calls[0] += 1
        # The second call is the recomputation during backward: it must not update BN statistics again.
        recompute = calls[0] > 1 and isinstance(encoder, nn.Module)
        with _restored_buffers(encoder) if recompute else contextlib.nullcontext():
            return pool_features(encoder(flat.index_select(0, idx))[-1])

    return _checkpoint(run, index, use_reentrant=False)


def scatter_items(values: Tensor, index: Tensor, batch_shape: Sequence[int]) -> Tensor:
    """Place per-item rows ``values [M, F]`` at flat positions ``index [M]`` of a zero ``[B, N, F]`` tensor."""
    b, n = batch_shape
    out = values.new_zeros(b * n, *values.shape[1:])
    return out.index_copy(0, index, values).view(b, n, *values.shape[1:])


def encode_series(
    encoder: Encoder,
    x: Tensor,
    pad_mask: Tensor | None = None,
    *,
    max_items_per_chunk: int = 64,
    checkpoint: bool = False,
    mode: str = "packed",
    validate: bool = True,
) -> Tensor:
    """Encode a batch of series into per-item pooled features.

    Args:
        encoder: callable returning the feature list for ``[M, C, H, W]`` or ``[M, C, d, H, W]``.
        x: ``[B, N, C, H, W]`` or ``[B, N, C, d, H, W]``.
        pad_mask: ``[B, N]`` bool, True = padding; ``None`` means every item is valid.
        max_items_per_chunk: at most this many items go through the encoder in one call.
        checkpoint: recompute each chunk's activations in backward (bounded training memory); BN running
            statistics are updated once, as without checkpointing.
        mode: ``"packed"`` encodes valid items only; ``"dense"`` encodes all ``B * N`` items.
        validate: check ``x`` and ``pad_mask`` (:func:`check_series`); False when the caller already did and
            passes the checked mask.

    Returns:
        ``[B, N, F]`` pooled features, zero at padded positions.

    Example:
        >>> import torch
        >>> enc = lambda t: [t.flatten(2).mean(-1, keepdim=True)]
        >>> encode_series(enc, torch.ones(2, 3, 4, 8, 8), torch.tensor([[False] * 3, [False, True, True]])).shape
        torch.Size([2, 3, 4])
    """
    if max_items_per_chunk < 1:
        raise ValueError(f"max_items_per_chunk must be >= 1, got {max_items_per_chunk}")
    if mode not in ("packed", "dense"):
        raise ValueError(f"mode must be 'packed' or 'dense', got {mode!r}")
    if validate or pad_mask is None:
        pad_mask = check_series(x, pad_mask)
    flat = x.flatten(0, 1)  # a view: no copy of the input
    if mode == "packed":
        index = (~pad_mask).flatten().nonzero().flatten()
    else:
        index = torch.arange(flat.shape[0], device=x.device)
    n_calls = math.ceil(index.numel() / max_items_per_chunk)  # as few calls as allowed, balanced sizes
    # Gather each chunk just before encoding it, so that packing copies one chunk of input at a time. Slices share
    # one set of sliced 2D weights across chunks, except when a checkpointed chunk is recomputed in backward.
    reuse = getattr(encoder, "reuse_2d_weights", None)
    shared = reuse is not None and x.dim() == 5 and not (checkpoint and torch.is_grad_enabled())
    with reuse() if shared else contextlib.nullcontext():
        pooled = torch.cat([_encode_pooled(encoder, flat, idx, checkpoint) for idx in index.tensor_split(n_calls)])
    out = scatter_items(pooled, index, x.shape[:2])
    return out.masked_fill(pad_mask.unsqueeze(-1), 0.0) if mode == "dense" else out
