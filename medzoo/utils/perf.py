"""The CPU inference defaults that the ``roofline`` benchmark measured as wins, as functions to call.

Measured with ``python tools/bench.py roofline --quick`` (docs/BENCHMARKS.md; resnet18, 1x1x32x64x64, eval, 2 cores
shared with other jobs, interleaved against fp32 ``torch.no_grad``; figures from four runs, noisy). Adopted:
BatchNorm folded into the convolutions (1.06-1.19x, max abs difference 3e-6; it removes every BatchNorm pass, about
10% of the forward's CPU time in a profile) and ``torch.inference_mode`` (1.03-1.35x, identical outputs; it skips
autograd bookkeeping). Measured and *not* adopted: channels_last_3d (0.70-0.76x, slower), oneDNN off (0.74-1.08x),
flushing denormals (0.96-1.13x, within the noise floor of a control run, 0.94x), fewer threads (faster only while
the machine is oversubscribed); ``torch.compile`` stays opt-in (about 70 s for the first call on 2 cores, about 1.1x
after, identical outputs). Never bf16 on CPU.

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

import copy
from contextlib import AbstractContextManager

import torch
from torch import nn

from medzoo.utils.fuse import fuse_bn

__all__ = ["inference_defaults", "inference_context"]


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
