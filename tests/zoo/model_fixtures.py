"""Tiny models for the export tests."""

from __future__ import annotations

import torch

from medzoo.models import create_model


def stats_model(cfg: dict, seed: int = 0) -> torch.nn.Module:
    """``create_model(cfg)`` in eval mode, with BN statistics that are not the defaults (so a lost buffer shows)."""
    torch.manual_seed(seed)
    model = create_model(cfg)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return model.eval()
