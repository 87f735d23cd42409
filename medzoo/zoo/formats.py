"""TorchScript and ONNX exports of a :class:`~medzoo.models.MultiTaskModel` or of its encoder alone.

Both formats run an :class:`ExportModule` (the model's tasks of one input kind, returning ``{task: logits}``) or an
:class:`EncoderExport` (the encoder's feature maps, ``{stage module name: map}``). Images and series of slices run
the encoder as ordinary 2D layers (:meth:`~medzoo.encoders.resnet.ResNetEncoder.to_2d`: the centre depth slice of
each kernel), so the files hold 2D kernels only. A series model exports its dense path: every one of the ``B * N``
items is encoded, then the aggregator pools with the padding mask; padding invariance keeps the outputs equal to the
eager (packed) path.

* TorchScript is traced (scripting fails on MONAI's ResNet), returns ``Dict[str, Tensor]`` and carries the
  extra files ``metadata.json`` and ``task_names.json`` (the output names, in order).
* ONNX goes through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``). Batch,
  slice count and every spatial size are dynamic; the inputs are ``image`` (and ``pad_mask``), the outputs are
  named by task (or stage). The file is self-contained: weights live inside ``model.onnx``, except for a model over
  torch's single-file threshold (1.5 GiB, below protobuf's 2 GiB limit), whose weights go to ``model.onnx.data``
  beside it. ``onnx.checker`` runs on every file written.

Example:
    >>> import torch
    >>> from medzoo.models import create_model
    >>> model = create_model({"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
    ...                       "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}})
    >>> module = ExportModule(model.eval())
    >>> module.task_names, module.input_kind, module(torch.zeros(1, 1, 32, 32))["cls"].shape
    (('cls',), 'image', torch.Size([1, 2]))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medzoo.config import check_name
from medzoo.models.multitask import LEVEL_INPUT
from medzoo.models.series import pool_features
from medzoo.zoo.export import apply_umask

__all__ = ["ExportModule", "EncoderExport", "example_input", "export_torchscript", "export_onnx", "run_onnx",
           "onnx_files", "TS_FILE", "ONNX_FILE", "ONNX_DATA_SUFFIX"]

log = logging.getLogger(__name__)

TS_FILE, ONNX_FILE = "model.ts", "model.onnx"
#: Suffix of the ONNX external-data file (``model.onnx.data``), written only for models too large for one file.
ONNX_DATA_SUFFIX = ".data"
_DEFAULT_SIZE = {"volume": (32, 32, 32), "image": (64, 64), "series": (64, 64)}
_MAX_DIM = 1 << 16


def _encoder_for(encoder: nn.Module, input_kind: str, slabs: bool = False) -> nn.Module:
    """The encoder as it runs on ``input_kind``: 3D for volumes and slabs, ordinary 2D layers for images."""
    if input_kind == "volume" or slabs:
        return encoder
    return encoder.to_2d() if hasattr(encoder, "to_2d") else encoder  # a 2D-only encoder (DenseNet) runs as is


class ExportModule(nn.Module):
    """The model's tasks of one input kind as ``{task: logits}``, for tracing and ONNX export.

    Args:
        model: a :class:`~medzoo.models.MultiTaskModel` (put it in eval mode first).
        tasks: the tasks to export, in output order (default: every task of the model's first input kind).
        slabs: a series model reads series of 3D slabs ``[B, N, C, d, H, W]`` instead of slices.

    Shapes:
        volume ``x [B, C, D, H, W]``, image ``x [B, C, H, W]``, series ``x [B, N, C, H, W]`` with
        ``pad_mask [B, N]`` (bool, True = padding) -> one logits tensor per task, as ``model(x)[task]``.

    Raises:
        ValueError: an unknown task, tasks of more than one input kind, or a task name that is not a valid name.
    """

    def __init__(self, model: nn.Module, tasks: Sequence[str] | None = None, *, slabs: bool = False) -> None:
        super().__init__()
        levels = dict(model.task_levels)
        if tasks is None:
            first = LEVEL_INPUT[next(iter(levels.values()))] if levels else None
            tasks = [t for t, lv in levels.items() if LEVEL_INPUT[lv] == first]
        unknown = [t for t in tasks if t not in levels]
        if not tasks or unknown:
            raise ValueError(f"tasks to export: unknown {unknown} or none given; the model's tasks are {levels}")
        for task in tasks:
            check_name(task, f"tasks.{task}")  # names become output names and keys in exported configs
        kinds = {LEVEL_INPUT[levels[t]] for t in tasks}
        if len(kinds) != 1:
            raise ValueError(f"exported tasks must read one input kind, got { {t: levels[t] for t in tasks} }")
        self.input_kind = kinds.pop()
        self.task_names = tuple(tasks)
        self.levels = tuple(levels[t] for t in tasks)
        self.in_channels = int(getattr(model.encoder, "in_channels", 1))
        self.reduction = int(getattr(model.encoder, "output_stride", 32))
        self.encoder = _encoder_for(model.encoder, self.input_kind, slabs)
        self.heads = nn.ModuleDict({t: model.heads[t] for t in tasks})
        self.dense = tuple(getattr(model.heads[t], "kind", "vector") == "dense" for t in tasks)
        self.aggregator = model.aggregator if "series" in self.levels else None

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Logits per task, in ``task_names`` order."""
        if self.input_kind == "series":
            return self._series(x, pad_mask)
        feats = self.encoder(x)
        pooled = pool_features(feats[-1])
        size = tuple(x.shape[2:])
        return {t: self.heads[t](feats, size) if dense else self.heads[t](pooled)
                for t, dense in zip(self.task_names, self.dense)}

    def _series(self, x: Tensor, pad_mask: Tensor | None) -> dict[str, Tensor]:
        b, n = x.shape[0], x.shape[1]
        if pad_mask is None:  # new_zeros follows x's device at run time; device=x.device would trace as a constant
            pad_mask = x.new_zeros((b, n), dtype=torch.bool)
        items = pool_features(self.encoder(x.flatten(0, 1))[-1])
        items = items.reshape(b, n, items.shape[-1]).masked_fill(pad_mask.unsqueeze(-1), 0.0)
        bag = self.aggregator(items, pad_mask) if self.aggregator is not None else None
        out = {}
        for task, level in zip(self.task_names, self.levels):
            head = self.heads[task]
            out[task] = head(bag) if level == "series" else head(items).masked_fill(pad_mask.unsqueeze(-1), 0.0)
        return out


class EncoderExport(nn.Module):
    """The encoder alone, as ``{stage module name: feature map}`` (``feature_info`` names, e.g. ``layer4``).

    Args:
        encoder: a medzoo encoder.
        input_kind: ``"volume"`` (``[B, C, D, H, W]``) or ``"image"`` (``[B, C, H, W]``, 2D layers).
    """

    def __init__(self, encoder: nn.Module, input_kind: str = "volume") -> None:
        super().__init__()
        if input_kind not in ("volume", "image"):
            raise ValueError(f"an encoder export reads 'volume' or 'image' input, got {input_kind!r}")
        self.input_kind = input_kind
        self.in_channels = int(getattr(encoder, "in_channels", 1))
        self.task_names = tuple(encoder.feature_info.module_name())  # the selected stages, as the encoder returns
        self.encoder = _encoder_for(encoder, input_kind)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> dict[str, Tensor]:
        """The selected stages' maps, shallow to deep."""
        return dict(zip(self.task_names, self.encoder(x)))


def example_input(module: nn.Module, *, batch: int = 2, slices: int = 3, in_channels: int | None = None,
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


def export_torchscript(module: nn.Module, path: str | os.PathLike, example: tuple[Tensor, ...],
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Trace ``module`` on ``example`` and save it to ``path``; the traced module returns ``Dict[str, Tensor]``.

    Example:
        >>> ts = torch.jit.load("model.ts", _extra_files={"metadata.json": ""})  # doctest: +SKIP
    """
    path = Path(path)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks read as constants while tracing; the exports are compared with the eager model instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False, strict=False)
    extra = {"metadata.json": json.dumps(dict(metadata or {})),
             "task_names.json": json.dumps(list(module.task_names))}
    _save_in_place(path, lambda staged: torch.jit.save(traced, str(staged), _extra_files=extra))
    log.info("wrote TorchScript %s (outputs %s)", path, list(module.task_names))
    return path


def _save_in_place(path: Path, save: Any) -> list[Path]:
    """Call ``save(staged)`` for a file of ``path``'s name in a staging folder beside it, then move what it wrote
    (the file and any ``<name>.data``) into place. The final name matters: TorchScript names its archive after
    the file, and ONNX records the name of its data file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save(staging / path.name)
        written = onnx_files(staging / path.name)
        apply_umask(*written)
        for stale in onnx_files(path)[1:]:
            stale.unlink()
        for file in written[::-1]:  # a data file first: the main file never points at a missing one
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [path.parent / f.name for f in written]


def _dynamic_shapes(module: nn.Module, example: tuple[Tensor, ...]) -> tuple[dict[str, Any], list[str]]:
    """``torch.export`` dims for every axis the network allows to vary, and the input names."""
    dim = torch.export.Dim
    batch = dim("batch", min=1, max=_MAX_DIM)
    spatial_names = ("depth", "height", "width")[-(example[0].dim() - (3 if module.input_kind == "series" else 2)):]
    if module.input_kind == "series":
        slices = dim("slices", min=1, max=_MAX_DIM)
        x_dims = {0: batch, 1: slices, **{3 + i: dim(n, min=2, max=_MAX_DIM) for i, n in enumerate(spatial_names)}}
        return {"x": x_dims, "pad_mask": {0: batch, 1: slices}}, ["image", "pad_mask"]
    x_dims = {0: batch, **{2 + i: dim(n, min=2, max=_MAX_DIM) for i, n in enumerate(spatial_names)}}
    return {"x": x_dims, "pad_mask": None}, ["image"]


def _general_example(module: nn.Module, example: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
    """An example whose batch and slice count are >= 2: ``torch.export`` would fix any axis of size 0 or 1."""
    x, pad_mask = example[0], (example[1] if len(example) > 1 else None)
    if x.shape[0] < 2:
        x = x.repeat(2, *([1] * (x.dim() - 1)))
        pad_mask = pad_mask.repeat(2, 1) if pad_mask is not None else None
    if module.input_kind == "series":
        if x.shape[1] < 2:
            x = x.repeat(1, 2, *([1] * (x.dim() - 2)))
            pad_mask = pad_mask.repeat(1, 2) if pad_mask is not None else None
        if pad_mask is None:
            pad_mask = torch.zeros(x.shape[:2], dtype=torch.bool)
    return x, pad_mask


def onnx_files(path: str | os.PathLike) -> list[Path]:
    """The files an ONNX export consists of: ``model.onnx`` and, for a large model, ``model.onnx.data``."""
    path = Path(path)
    data = path.with_name(path.name + ONNX_DATA_SUFFIX)
    return [path, data] if data.is_file() else [path]


def export_onnx(module: nn.Module, path: str | os.PathLike, example: tuple[Tensor, ...], *,
                opset: int | None = None, external_data: bool | None = None) -> Path:
    """Export ``module`` to ONNX (dynamo exporter) with dynamic batch, slice count and spatial sizes.

    Args:
        module: an :class:`ExportModule` or :class:`EncoderExport`.
        path: the ``.onnx`` file to write.
        example: the example input (:func:`example_input`).
        opset: the ONNX opset (default: the exporter's).
        external_data: store the weights in ``<path>.data`` beside the file; ``None`` (default) does so only for a
            model over torch's single-file threshold (1.5 GiB).

    Returns:
        ``path``; :func:`onnx_files` lists it with its data file, if any.
    """
    import onnx  # the optional [onnx] extra: imported only when an ONNX file is written

    path = Path(path)
    module = module.eval()
    dynamic, names = _dynamic_shapes(module, example)
    kwargs = {"opset_version": opset} if opset else {}
    program = torch.onnx.export(module, _general_example(module, example), None, dynamo=True, input_names=names,
                                output_names=list(module.task_names), dynamic_shapes=dynamic, verbose=False,
                                **kwargs)

    def save(staged: Path) -> None:
        program.save(str(staged), external_data=external_data)
        onnx.checker.check_model(str(staged), full_check=True)

    _save_in_place(path, save)
    log.info("wrote ONNX %s (inputs %s, outputs %s)", path, names, list(module.task_names))
    return path


def run_onnx(path: str | os.PathLike, x: Tensor, pad_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Run an exported ONNX file with onnxruntime on the CPU; returns ``{output name: tensor}``."""
    import onnxruntime as ort  # the optional [onnx] extra: imported only when an ONNX file is run

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"image": x.detach().cpu().numpy()}
    if "pad_mask" in [i.name for i in session.get_inputs()]:
        mask = pad_mask if pad_mask is not None else torch.zeros(x.shape[:2], dtype=torch.bool)
        feed["pad_mask"] = mask.detach().cpu().numpy()
    names = [o.name for o in session.get_outputs()]
    return {n: torch.from_numpy(v) for n, v in zip(names, session.run(names, feed))}
