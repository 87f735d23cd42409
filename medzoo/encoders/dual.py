"""Layers that run a 3D network on images too: one module tree, one set of 3D weights, 2D kernels for 4-D input.

A CT volume ``[B, C, D, H, W]`` and a CXR or CT slice ``[B, C, H, W]`` go through the *same* modules. Each layer
below is a subclass of its 3D PyTorch layer (so ``isinstance``, state dict keys and shapes are unchanged and
MedicalNet / MONAI weights load by name) whose forward, given a 4-D input, runs the 2D operation:

- :class:`DualConv3d`: ``conv2d`` with the centre depth slice of the 3D kernel (a view, so gradients reach the
  3D weight). It is what the 3D convolution computes on a depth-1 input whenever the depth padding is
  ``dilation * (k - 1) / 2``: every other depth tap then only meets zero padding. :func:`make_dual` checks that.
- :class:`DualBatchNorm3d`, :class:`DualInstanceNorm3d`: the same statistics over ``(B, H, W)`` / ``(H, W)`` as over
  ``(B, 1, H, W)`` / ``(1, H, W)``, with the same buffers (running statistics update in place on both paths).
- :class:`DualMaxPool3d`: ``max_pool2d`` with the in-plane kernel, stride, padding and dilation.
- :class:`ShortcutA`: the parameter-free residual shortcut of ResNet type A (strided subsampling, zero channels),
  written for any number of spatial axes.

``GroupNorm``, ``SyncBatchNorm`` and element-wise activations need no change. Because the module that runs is the
module users see, forward and backward hooks, ``torch.func.functional_call`` and ``monai.visualize`` work on images
as on volumes. :func:`plain_2d` converts a copy into ordinary 2D layers for export formats that should store 2D
kernels only.

Example:
    >>> import torch
    >>> net = make_dual(torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4)))
    >>> x = torch.randn(2, 1, 8, 8)
    >>> bool(torch.allclose(net(x), net(x.unsqueeze(2)).squeeze(2), atol=1e-6))
    True
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["DualConv3d", "DualBatchNorm3d", "DualInstanceNorm3d", "DualMaxPool3d", "ShortcutA", "make_dual",
           "plain_2d", "shared_2d_kernels"]


class DualConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs ``conv2d`` with the centre depth slice of its kernel on ``[B, C, H, W]`` input."""

    _kernel_2d: Tensor | None = None  # set by :func:`shared_2d_kernels` for the duration of a block

    def weight_2d(self) -> Tensor:
        """The centre depth slice ``[C_out, C_in / groups, kh, kw]`` of the kernel (a view of ``weight``)."""
        if self._kernel_2d is not None:
            return self._kernel_2d
        return self.weight[:, :, self.kernel_size[0] // 2]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        return F.conv2d(x, self.weight_2d(), self.bias, self.stride[1:], self.padding[1:], self.dilation[1:],
                        self.groups)


class DualBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` that also accepts ``[B, C, H, W]`` (statistics over the batch and the plane)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(f"expected a 4-D or 5-D input, got a {x.dim()}-D input of shape {tuple(x.shape)}")


class DualInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that also accepts ``[B, C, H, W]`` (statistics over each item's plane)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        use_batch_stats = self.training or not self.track_running_stats
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch_stats,
                               self.momentum if self.momentum is not None else 0.0, self.eps)


class DualMaxPool3d(nn.MaxPool3d):
    """``nn.MaxPool3d`` that runs ``max_pool2d`` with the in-plane geometry on ``[B, C, H, W]`` input."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        k, s, p, d = (_triple(v)[1:] for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        return F.max_pool2d(x, k, s, p, d, ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class ShortcutA(nn.Module):
    """ResNet shortcut type A: subsample by ``stride`` and append zero channels up to ``planes``.

    Numerically MONAI's and MedicalNet's ``_downsample_basic_block`` (an average pool of kernel 1 is a strided
    subsampling), including its detached identity: no gradient flows through this shortcut, as in the networks the
    MedicalNet weights were trained with.

    Shapes: ``[B, C, *s] -> [B, planes, *ceil(s / stride)]`` for any number of spatial axes.
    """

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes, self.stride = int(planes), int(stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.dim() - 2)]
        return F.pad(x.detach(), [0, 0] * (x.dim() - 2) + [0, self.planes - x.shape[1]])

    def extra_repr(self) -> str:
        return f"planes={self.planes}, stride={self.stride}"


_DUAL: dict[type, type] = {nn.Conv3d: DualConv3d, nn.BatchNorm3d: DualBatchNorm3d,
                           nn.InstanceNorm3d: DualInstanceNorm3d, nn.MaxPool3d: DualMaxPool3d}
_DIM_BOUND = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.modules.pooling._MaxPoolNd,
              nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
              nn.modules.pooling._AdaptiveMaxPoolNd, nn.LayerNorm)


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _check_depth_geometry(name: str, conv: nn.Conv3d) -> None:
    k, p, d = conv.kernel_size[0], conv.padding[0], conv.dilation[0]
    if conv.padding_mode != "zeros" or k % 2 == 0 or p != d * (k - 1) // 2:
        raise ValueError(f"{name}: a depth-1 input meets more than the centre tap of this kernel (kernel {k}, "
                         f"padding {p}, dilation {d}, padding_mode {conv.padding_mode!r}); the 2D path needs an odd "
                         "kernel with zero padding dilation * (kernel - 1) / 2 along depth")


def make_dual(net: nn.Module) -> nn.Module:
    """Turn the 3D layers of ``net`` into their dual subclasses, in place (parameters are kept); returns ``net``.

    Raises:
        ValueError: a layer that has no 2D path (names the module), or a convolution whose depth geometry would make
            the 2D path differ from the 3D network on depth-1 input.
    """
    for name, module in net.named_modules():
        dual = _DUAL.get(type(module))
        if dual is DualConv3d:
            _check_depth_geometry(name, module)
        if dual is not None:
            module.__class__ = dual  # a subclass with no state of its own: weights, buffers and hooks are kept
        elif isinstance(module, _DIM_BOUND) and type(module) not in _DUAL.values() \
                and not isinstance(module, (nn.GroupNorm, nn.SyncBatchNorm)):
            raise ValueError(f"{name or type(net).__name__}: {type(module).__name__} has no 2D path; use batch, "
                             "instance or group norm and MONAI's conv/pool layers")
    return net


def plain_2d(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in ordinary 2D layers (``Conv2d`` with the centre slices, ``BatchNorm2d``, ...).

    It computes what ``net`` computes on ``[B, C, H, W]`` input, with copies of the parameters and buffers and the
    same train/eval flags; for exports that should hold 2D kernels only.
    """
    out = copy.deepcopy(net)
    for name, module in list(out.named_modules()):
        new = _to_2d(module)
        if new is None:
            continue
        new.train(module.training)
        if not name:
            return new
        parent, _, key = name.rpartition(".")
        out.get_submodule(parent)._modules[key] = new
    return out


def _to_2d(m: nn.Module) -> nn.Module | None:
    if isinstance(m, DualConv3d):
        conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size[1:], m.stride[1:], m.padding[1:],
                         m.dilation[1:], m.groups, m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
        state = {"weight": m.weight_2d().detach().clone()}
        if m.bias is not None:
            state["bias"] = m.bias.detach().clone()
        conv.load_state_dict(state)
        conv.requires_grad_(m.weight.requires_grad)
        return conv
    if isinstance(m, (DualBatchNorm3d, DualInstanceNorm3d)):
        kind = nn.BatchNorm2d if isinstance(m, DualBatchNorm3d) else nn.InstanceNorm2d
        norm = kind(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        norm.load_state_dict(m.state_dict())
        tensors = list(m.state_dict().values())
        return norm.to(tensors[0].device) if tensors else norm
    if isinstance(m, DualMaxPool3d):
        k, s, p, d = (_triple(v)[1:] for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        return nn.MaxPool2d(k, s, p, d, return_indices=m.return_indices, ceil_mode=m.ceil_mode)
    return None


@contextlib.contextmanager
def shared_2d_kernels(net: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`DualConv3d` of ``net`` slices its kernel once, not once per image call.

    The slices are taken on entry (contiguous copies, connected to the 3D weights for autograd when gradients are
    enabled), so calls inside the block skip the per-call slicing and copy. Do not change the weights inside the
    block, and do not use it around activation-checkpointed calls whose recompute runs after the block.
    """
    convs = [m for m in net.modules() if isinstance(m, DualConv3d) and m._kernel_2d is None]
    try:
        for conv in convs:
            conv._kernel_2d = conv.weight_2d().contiguous()
        yield
    finally:
        for conv in convs:
            conv._kernel_2d = None
