"""Class activation maps: CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017), 2D and 3D, and series.

- **CAM** for a head that reads the global average of the last encoder map through one linear layer (every vector
  head here): ``M_k = sum_c w_kc A_c`` on the last map ``A [C, *s]``, with ``w`` the head's weight row for label
  ``k`` (no bias), then upsampled to the input size. Its spatial mean plus the bias is the logit.
- **Grad-CAM** for any head (vector or dense): ``ReLU(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of
  ``d score / d A_c``; the score is the label's logit (vector heads) or the sum of its logits over the output map,
  optionally inside a region (dense heads).
- **Series** (a COVIDx-CT patient): one map per slice, plus the aggregator's slice weights when it has them. CAM per
  slice uses the head's weights on each slice's last map (for aggregators that keep the feature size: mean,
  attention); Grad-CAM differentiates the patient-level logit through the aggregator into every slice.

Maps are raw (not normalised); use :func:`medzoo.metrics.localization.minmax_normalize` for [0, 1].

Images run through the same encoder modules as volumes, so ``monai.visualize.GradCAM`` hooked on the encoder's last
layer sees image maps too, and on an image task gives the same map as :func:`grad_cam`. The functions here are not
built on it because MONAI's CAM classes read one logits tensor and one activation per forward, while a
``MultiTaskModel`` returns a dict of tasks, a dense head is scored over a region of its output map, and a series runs
the encoder in several packed calls whose maps (one per slice) are gathered here.

Example:
    >>> import torch, medzoo
    >>> model = medzoo.create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...     "tasks": {"cls": {"type": "multilabel", "level": "image", "labels": ["a", "b"]}}})
    >>> explain(model, torch.rand(1, 1, 32, 32), "cls", "b").maps.shape
    torch.Size([1, 32, 32])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Explanation", "cam", "explain", "grad_cam", "output_channel", "series_explanation"]


@dataclass
class Explanation:
    """Heatmaps for one task and label.

    Attributes:
        maps: ``[B, *spatial]`` at the input size (images, volumes) or ``[N, H, W]`` per slice (series, B = 1).
        label: the explained label name; ``index`` its output channel.
        method: ``cam`` or ``gradcam``.
        slice_weights: ``[N]`` aggregator weights for series with an attention aggregator, else None.
        score: the explained logit (vector heads; B = 1) or summed logits (dense heads).
    """

    maps: Tensor
    label: str
    index: int
    method: str
    slice_weights: Tensor | None = None
    score: float | None = None


def output_channel(head: nn.Module, label: str | int | None, logits: Tensor | None = None) -> int:
    """The output channel of ``label`` (a name or an index); None picks the highest logit of the first item.

    Raises:
        KeyError: an unknown label name, listing the head's labels.
    """
    names = list(head.label_names)
    if label is None:
        if logits is None:
            raise ValueError("output_channel needs logits to pick the top label")
        flat = logits[0].reshape(len(names), -1).mean(dim=1) if logits.dim() > 2 else logits[0]
        return int(flat.argmax())
    if isinstance(label, int) or (isinstance(label, str) and label.isdigit() and label not in names):
        i = int(label)
        if not 0 <= i < len(names):
            raise KeyError(f"label index {i} out of range; the task has {len(names)} labels {names}")
        return i
    if label not in names:
        raise KeyError(f"unknown label {label!r}; the task's labels are {names}")
    return names.index(label)


@contextlib.contextmanager
def _capture_last_maps(encoder: nn.Module, keep_grad: bool) -> Iterator[list[Tensor]]:
    """Record the encoder's last map of every call (in call order); with ``keep_grad`` retain their gradients."""
    maps: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: list[Tensor]) -> None:
        last = output[-1]
        if keep_grad:
            last.retain_grad()
        maps.append(last)

    handle = encoder.register_forward_hook(hook)
    try:
        yield maps
    finally:
        handle.remove()


def _upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """``[B, *s] -> [B, *size]`` (bilinear / trilinear, align_corners False)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    mode = "trilinear" if maps.dim() == 4 else "bilinear"
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


def _linear_weight(head: nn.Module, task: str) -> nn.Linear:
    fc = getattr(head, "fc", None)
    if getattr(head, "kind", "vector") == "dense" or not isinstance(fc, nn.Linear):
        raise ValueError(f"CAM needs a pooled-linear head; task {task!r} has {type(head).__name__}: use Grad-CAM")
    return fc


def _weighted_sum(weight: Tensor, fmap: Tensor) -> Tensor:
    """``sum_c w_c A_c``: ``[C]`` x ``[B, C, *s] -> [B, *s]``."""
    return torch.einsum("c,bc...->b...", weight, fmap)


def cam(model: nn.Module, x: Tensor, task: str, label: str | int | None = None) -> Explanation:
    """CAM of an image or volume task: the label's weighted sum of the last maps, upsampled to the input size.

    Args:
        model: a MultiTaskModel (eval mode is used and restored).
        x: ``[B, C, H, W]`` or ``[B, C, D, H, W]``.
        task: a vector task at level ``image`` or ``volume``.
        label: a label name or index; None = the top logit of the first item.

    Returns:
        :class:`Explanation` with ``maps [B, *x.shape[2:]]``.
    """
    head = model.heads[task]
    fc = _linear_weight(head, task)
    with _eval(model), torch.no_grad(), _capture_last_maps(model.encoder, False) as maps:
        logits = model(x, tasks=[task])[task]
    k = output_channel(head, label, logits)
    raw = _weighted_sum(fc.weight[k].detach(), maps[-1])
    return Explanation(_upsample(raw, x.shape[2:]), head.label_names[k], k, "cam", score=float(logits[0, k]))


def _score(head: nn.Module, logits: Tensor, k: int, region: Tensor | None) -> Tensor:
    if getattr(head, "kind", "vector") != "dense":
        return logits[:, k].sum()
    chan = logits[:, k]
    if region is not None:
        region = region.to(chan)
        if tuple(region.shape[-chan.dim() + 1:]) != tuple(chan.shape[1:]):
            region = _upsample(region.reshape(1, *region.shape[-chan.dim() + 1:]), chan.shape[1:])
        chan = chan * region
    return chan.sum()


def grad_cam(model: nn.Module, x: Tensor, task: str, label: str | int | None = None,
             region: Tensor | None = None) -> Explanation:
    """Grad-CAM of an image or volume task, for any head.

    Args:
        model: a MultiTaskModel (eval mode is used and restored; parameters are not changed).
        x: ``[B, C, H, W]`` or ``[B, C, D, H, W]``.
        task: any task reading this input.
        label: a label name or index; None = the top logit of the first item.
        region: dense heads only: a ``[*spatial]`` weight map restricting the score to a region.

    Returns:
        :class:`Explanation` with ``maps [B, *x.shape[2:]]`` (>= 0).
    """
    head = model.heads[task]
    x = x.detach().clone().requires_grad_(True)
    with _eval(model), torch.enable_grad(), _capture_last_maps(model.encoder, True) as maps:
        logits = model(x, tasks=[task])[task]
        k = output_channel(head, label, logits.detach())
        score = _score(head, logits, k, region)
        score.backward()
    a = maps[-1]
    alpha = a.grad.flatten(2).mean(dim=-1)  # [B, C]
    raw = F.relu(torch.einsum("bc,bc...->b...", alpha, a.detach()))
    model.zero_grad(set_to_none=True)
    return Explanation(_upsample(raw, x.shape[2:]), head.label_names[k], k, "gradcam", score=float(score.detach()))


def series_explanation(model: nn.Module, x: Tensor, task: str, label: str | int | None = None,
                       method: str = "gradcam") -> Explanation:
    """Per-slice maps and the aggregator's slice weights for a series-level (or slice-level) task.

    Args:
        model: a MultiTaskModel with an aggregator.
        x: ``[1, N, C, H, W]`` (one series, no padding).
        task: a ``series`` or ``slice`` task.
        label: a label name or index; None = the top logit.
        method: ``cam`` (aggregators that keep the feature size) or ``gradcam``.

    Returns:
        :class:`Explanation` with ``maps [N, H, W]`` and ``slice_weights [N]`` (None without attention).
    """
    if x.dim() != 5 or x.shape[0] != 1:
        raise ValueError(f"series explanations take one series [1, N, C, H, W], got {tuple(x.shape)}")
    head, pad = model.heads[task], torch.zeros(x.shape[:2], dtype=torch.bool)
    keep = method == "gradcam"
    with _eval(model), torch.set_grad_enabled(keep), _capture_last_maps(model.encoder, keep) as maps:
        logits = model(x, pad_mask=pad, tasks=[task])[task]
        scores = logits if logits.dim() == 2 else logits[0]  # slice level: [N, K]
        k = output_channel(head, label, scores.mean(dim=0, keepdim=True).detach())
        if keep:
            scores[:, k].sum().backward()
    a = torch.cat(maps)  # [N, C, h, w] in slice order (one series, no padding)
    if keep:
        alpha = torch.cat([m.grad for m in maps]).flatten(2).mean(dim=-1)
        raw = F.relu(torch.einsum("nc,nc...->n...", alpha, a.detach()))
        model.zero_grad(set_to_none=True)
    else:
        raw = _weighted_sum(_linear_weight(head, task).weight[k].detach(), a.detach())
    weights = None
    if model.aggregator is not None:
        with _eval(model), torch.no_grad():
            w = model.slice_weights(x.detach(), pad)
        weights = None if w is None else w[0]
    return Explanation(_upsample(raw, x.shape[-2:]), head.label_names[k], k, method, weights,
                       score=float(scores[:, k].detach().sum()))


def explain(model: nn.Module, x: Tensor, task: str, label: str | int | None = None, method: str = "gradcam",
            region: Tensor | None = None) -> Explanation:
    """CAM or Grad-CAM for whatever the task reads: images, volumes (``[B, C, ...]``) or one series.

    Raises:
        ValueError: an unknown method, or CAM on a head that is not pooled-linear.
    """
    if method not in ("cam", "gradcam"):
        raise ValueError(f"method must be 'cam' or 'gradcam', got {method!r}")
    if model.task_levels[task] in ("series", "slice"):
        return series_explanation(model, x, task, label, method)
    return cam(model, x, task, label) if method == "cam" else grad_cam(model, x, task, label, region)


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
