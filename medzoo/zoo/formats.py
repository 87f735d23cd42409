"""TorchScript and ONNX exports of a :class:`~medzoo.models.MultiTaskModel` (traced: scripting fails on MONAI's
shortcut-A partial; ONNX through the dynamo exporter).

Both formats run an :class:`ExportModule`: the model's tasks of one input kind, returning a tuple of logits in a fixed
task order (``module.task_names``). A series model exports its dense path: every one of the ``B * N`` items is
encoded, then the aggregator pools with the padding mask; padding invariance keeps the outputs equal to the eager
(packed) path. Image and series inputs run the encoder's 2D path through a materialised 2D twin of the 3D network
(centre depth slice of each kernel, the same norm statistics), which tracing and ``torch.export`` can follow.

* TorchScript uses tracing (scripting fails on MONAI's shortcut-A partial); the weights spec is embedded as the
  extra file ``metadata.json``.
* ONNX uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``), with a dynamic batch
  size and, for series, a dynamic slice count. Spatial sizes are those of the example input.

Example:
    >>> import torch
    >>> from medzoo.models import create_model
    >>> model = create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...                       "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}})
    >>> module = ExportModule(model.eval())
    >>> module.task_names, module.input_kind, module(torch.zeros(1, 1, 32, 32))[0].shape
    (('cls',), 'image', torch.Size([1, 2]))
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medzoo.models.multitask import LEVEL_INPUT
from medzoo.models.series import pool_features

__all__ = ["ExportModule", "example_input", "export_torchscript", "export_onnx", "run_onnx", "TS_FILE", "ONNX_FILE"]

log = logging.getLogger(__name__)

TS_FILE, ONNX_FILE = "model.ts", "model.onnx"
_DEFAULT_SIZE = {"volume": (32, 32, 32), "image": (64, 64), "series": (64, 64)}


class _ShortcutA(nn.Module):
    """MONAI's shortcut 'A' (a parameter-free strided avg-pool, then zero channels) without ``Tensor.data``, which
    ``torch.export`` would freeze into a constant. Numerically identical."""

    def __init__(self, planes: int, stride: int, spatial_dims: int) -> None:
        super().__init__()
        self.planes = int(planes)
        self.pool = (nn.AvgPool3d if spatial_dims == 3 else nn.AvgPool2d)(kernel_size=1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(x)
        pad = [0, 0] * (out.dim() - 2) + [0, self.planes - out.shape[1]]
        return nn.functional.pad(out, pad)


def _exportable(net: nn.Module) -> nn.Module:
    """Replace shortcut-'A' partials by :class:`_ShortcutA` modules (in place); returns ``net``."""
    for block in net.modules():
        ds = getattr(block, "downsample", None)
        if isinstance(ds, partial):
            kw = ds.keywords
            block.downsample = _ShortcutA(kw["planes"], kw["stride"], kw.get("spatial_dims", 3))
    return net


def _materialise_2d(encoder: nn.Module) -> nn.Module:
    """A real 2D network equal to the encoder's 2D path: centre depth slice of each 3D kernel, same buffers."""
    twin = copy.deepcopy(encoder._twin2d).to_empty(device=next(encoder.parameters()).device)
    state = {k: (p[:, :, p.shape[2] // 2] if p.dim() == 5 else p).detach().clone()
             for k, p in encoder.named_parameters()}
    state.update({k: b.detach().clone() for k, b in encoder.named_buffers()})
    twin.load_state_dict(state, strict=True)
    for mine, theirs in zip(encoder.modules(), twin.modules()):
        theirs.training = mine.training
    return _exportable(twin)


class ExportModule(nn.Module):
    """The model's tasks of one input kind as a tuple of logits, for tracing and ONNX export.

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` (put it in eval mode first).
        tasks: the tasks to export, in output order (default: every task of the model's first input kind).

    Shapes:
        volume ``x [B, C, D, H, W]``, image ``x [B, C, H, W]``, series ``x [B, N, C, H, W]`` with
        ``pad_mask [B, N]`` (bool, True = padding) -> one logits tensor per task, as ``model(x)[task]``.
    """

    def __init__(self, model: nn.Module, tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        levels = dict(model.task_levels)
        if tasks is None:
            first = LEVEL_INPUT[next(iter(levels.values()))] if levels else None
            tasks = [t for t, lv in levels.items() if LEVEL_INPUT[lv] == first]
        unknown = [t for t in tasks if t not in levels]
        if not tasks or unknown:
            raise ValueError(f"tasks to export: unknown {unknown} or none given; the model's tasks are {levels}")
        kinds = {LEVEL_INPUT[levels[t]] for t in tasks}
        if len(kinds) != 1:
            raise ValueError(f"exported tasks must read one input kind, got { {t: levels[t] for t in tasks} }")
        self.input_kind = kinds.pop()
        self.task_names = tuple(tasks)
        self.levels = tuple(levels[t] for t in tasks)
        self.in_channels = int(getattr(model.encoder, "in_channels", 1))
        # A copy (shortcut 'A' made exportable); series of slabs run in 3D, images and slices in 2D.
        self.encoder = _exportable(copy.deepcopy(model.encoder)) if self.input_kind != "image" else None
        self.encoder2d = _materialise_2d(model.encoder) if self.input_kind != "volume" else None
        self.heads = nn.ModuleList([model.heads[t] for t in tasks])
        self.dense = tuple(getattr(model.heads[t], "kind", "vector") == "dense" for t in tasks)
        self.aggregator = model.aggregator if "series" in self.levels else None

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """Logits per task, in ``task_names`` order."""
        if self.input_kind == "series":
            return self._series(x, pad_mask)
        feats = self.encoder(x) if self.encoder2d is None else self.encoder2d(x)
        pooled = pool_features(feats[-1])
        size = tuple(x.shape[2:])
        return tuple(head(feats, size) if dense else head(pooled) for head, dense in zip(self.heads, self.dense))

    def _series(self, x: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, ...]:
        b, n = x.shape[0], x.shape[1]
        if pad_mask is None:
            pad_mask = torch.zeros(b, n, dtype=torch.bool, device=x.device)
        flat = x.flatten(0, 1)
        net = self.encoder2d if flat.dim() == 4 else self.encoder
        items = pool_features(net(flat)[-1])
        items = items.reshape(b, n, items.shape[-1]).masked_fill(pad_mask.unsqueeze(-1), 0.0)
        bag = self.aggregator(items, pad_mask) if self.aggregator is not None else None
        out = []
        for head, level in zip(self.heads, self.levels):
            out.append(head(bag) if level == "series" else head(items).masked_fill(pad_mask.unsqueeze(-1), 0.0))
        return tuple(out)


def example_input(module: ExportModule, *, batch: int = 2, slices: int = 3, in_channels: int | None = None,
                  spatial: Sequence[int] | None = None) -> tuple[Tensor, ...]:
    """A random example input for ``module``: ``(x,)`` or ``(x, pad_mask)`` for series (last item padded)."""
    c = in_channels or module.in_channels
    size = tuple(spatial or _DEFAULT_SIZE[module.input_kind])
    if module.input_kind != "series":
        return (torch.randn(batch, c, *size),)
    pad_mask = torch.zeros(batch, slices, dtype=torch.bool)
    if slices > 1:
        pad_mask[-1, -1] = True
    return torch.randn(batch, slices, c, *size), pad_mask


def export_torchscript(module: ExportModule, path: str | os.PathLike, example: tuple[Tensor, ...],
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Trace ``module`` on ``example`` and save it (with ``metadata.json`` as an extra file) to ``path``.

    Example:
        >>> ts = torch.jit.load("model.ts", _extra_files={"metadata.json": ""})  # doctest: +SKIP
    """
    path = Path(path)
    module = module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False, strict=False)
    extra = {"metadata.json": json.dumps(dict(metadata or {})),
             "task_names.json": json.dumps(list(module.task_names))}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.jit.save(traced, str(tmp), _extra_files=extra)
    os.replace(tmp, path)
    log.info("wrote TorchScript %s (tasks %s)", path, list(module.task_names))
    return path


def export_onnx(module: ExportModule, path: str | os.PathLike, example: tuple[Tensor, ...], *,
                opset: int | None = None) -> Path:
    """Export ``module`` to ONNX with the dynamo exporter: dynamic batch (and slice count for series).

    Inputs are named ``image`` (and ``pad_mask``), outputs by task name.
    """
    path = Path(path)
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = ["image"] + (["pad_mask"] if module.input_kind == "series" else [])
    if module.input_kind == "series":
        slices = torch.export.Dim("slices", min=1, max=65536)
        dynamic = {"x": {0: batch, 1: slices}, "pad_mask": {0: batch, 1: slices}}
    else:
        dynamic = {"x": {0: batch}, "pad_mask": None}
    if len(example) == 1:
        example = (example[0], None)
    tmp = path.with_name(f".{path.name}.tmp")
    kwargs = {"opset_version": opset} if opset else {}
    torch.onnx.export(module, example, str(tmp), dynamo=True, input_names=names,
                      output_names=list(module.task_names), dynamic_shapes=dynamic, verbose=False, **kwargs)
    os.replace(tmp, path)
    log.info("wrote ONNX %s (inputs %s, outputs %s)", path, names, list(module.task_names))
    return path


def run_onnx(path: str | os.PathLike, x: Tensor, pad_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Run an exported ONNX file with onnxruntime on the CPU; returns ``{task: logits}``."""
    import onnxruntime as ort  # the optional [onnx] extra: imported only when an ONNX file is run

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"image": x.detach().cpu().numpy()}
    if pad_mask is not None:
        feed["pad_mask"] = pad_mask.detach().cpu().numpy()
    names = [o.name for o in session.get_outputs()]
    return {n: torch.from_numpy(v) for n, v in zip(names, session.run(names, feed))}
