"""The alignment network and stage without training: identity at initialisation and the warp convention."""

from __future__ import annotations

import torch

from medzoo.models.align import AlignNet, warp


def test_identity_at_initialisation_and_warp_convention():
    x = torch.rand(2, 1, 40, 40)
    net = AlignNet(size=32)
    torch.testing.assert_close(net(x), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).expand(2, 2, 3))
    torch.testing.assert_close(warp(x, net(x)), x, atol=1e-5, rtol=0)
    # a shift by one pixel (2 / W in normalised units): out[:, j] = x[:, j + 1]
    shift = torch.tensor([[[1.0, 0, 2 / 40], [0, 1.0, 0]]]).expand(2, 2, 3)
    torch.testing.assert_close(warp(x, shift)[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
