"""The CPU inference defaults that the ``roofline`` benchmark measured as wins (BatchNorm folded into the
convolutions, ``torch.inference_mode``), as functions to call; the figures, and what was measured and not adopted, are
in docs/BENCHMARKS.md.

Use:

    model = inference_defaults(model)        # eval mode, BatchNorm folded (a copy; the original is untouched)
    with inference_context():
        out = model(x)

Example:
    >>> import torch
    >>> from medzoo.encoders import create_encoder
    >>> enc = create_encoder("resnet10", widths=(8, 16, 32, 64)).eval()
    >>> fast = inference_defaults(enc)
    >>> x = torch.randn(1, 1, 16, 32, 32)
    >>> with inference_context():
    ...     bool(torch.allclose(fast(x)[-1], enc(x)[-1], atol=1e-5))
    True
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn

from medzoo.utils.fuse import fuse_bn

__all__ = ["inference_defaults", "inference_context", "torch_threads"]


def inference_defaults(model: nn.Module, *, fuse: bool = True, inplace: bool = False) -> nn.Module:
    """``model`` ready for CPU/GPU inference: eval mode and, by default, BatchNorm folded into the convolutions.

    Call it once after loading weights (not per batch). The result is for inference only; save the original's
    state dict, not the fused one (see :func:`medzoo.utils.fuse_bn`).

    Args:
        model: an encoder, a :class:`~medzoo.models.MultiTaskModel` or any module.
        fuse: fold eval-mode BatchNorm into the preceding convolutions.
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The model in eval mode (a copy unless ``inplace``).
    """
    if fuse:
        return fuse_bn(model, inplace=inplace)
    if not inplace:
        model = copy.deepcopy(model)
    return model.eval()


def inference_context() -> AbstractContextManager:
    """The gradient context for inference: ``torch.inference_mode()`` (cheaper than ``no_grad``).

    Tensors made inside cannot enter autograd later; use ``torch.no_grad()`` where outputs must be trained on.
    """
    return torch.inference_mode()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (unchanged for None), restored after it.

    DataLoader workers run one thread each whatever this says, so ``n`` = cores minus workers gives them cores of
    their own.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
