"""The runner of a medzoo-exported MONAI bundle, copied into it as ``scripts/medzoo_io.py``.

It needs only torch, numpy and MONAI (never medzoo), so that the bundle runs wherever MONAI does. Its transforms are
the steps of medzoo's preprocessing pipeline that MONAI has no transform for, with the same arithmetic:

- :func:`load_weights` loads ``models/model.pt`` (a state dict) into the network, strictly;
- :class:`ScaleToUnitd` divides by the file's maximum value (:func:`max_value`: the ``.npz``'s own ``max_value``
  entry, else its integer dtype's: uint8 255, uint16 65535), averages RGB to grey and replicates grey to the
  network's channels;
- :class:`NormaliseIntensityd` is ``zscore`` / ``zscore_nonzero`` (statistics over voxels > 0, MedicalNet's recipe;
  MONAI's ``nonzero`` would also count negative voxels) / ``minmax`` in float64, with ``zscore_nonzero``'s
  background (``noise`` N(0, 1) seeded from the input's bytes, ``zero`` or ``keep``);
- :class:`Runner` runs the network over the dataloader and writes ``<output_dir>/<name>.npz`` holding ``pred``.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

#: Integer dtypes whose maximum value a file without a ``max_value`` entry is divided by (PNG/JPEG bit depths).
DTYPE_MAX = {"uint8": 255.0, "uint16": 65535.0}


def load_weights(network: torch.nn.Module, path: str, device: Any) -> torch.nn.Module:
    """``network`` with the state dict at ``path`` loaded strictly (tensors only), on ``device``, in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.to(device).eval()


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(np.asarray(x))


def _stored(source: str) -> tuple[str | None, float | None]:
    """The dtype of ``image`` as stored in the ``.npz`` at ``source`` (read from its header: MONAI's reader turns
    uint16 into int32) and the file's ``max_value`` entry; ``(None, None)`` when ``source`` is no ``.npz``."""
    if not (source.endswith(".npz") and os.path.isfile(source)):
        return None, None
    with zipfile.ZipFile(source) as archive, archive.open("image.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        dtype = str(read(f)[2])
    with np.load(source, allow_pickle=False) as npz:
        value = float(npz["max_value"]) if "max_value" in npz.files else None
    if value is not None and not value > 0:
        raise ValueError(f"{source}: max_value must be > 0, got {value}")
    return dtype, value


def max_value(x: Any) -> float:
    """The maximum value of the file ``x`` was read from: the ``.npz``'s ``max_value`` entry (a 12-bit DICOM stored
    as uint16: 4095), else by the stored dtype of ``image`` (uint8: 255, uint16: 65535).

    Raises:
        ValueError: any other dtype without a ``max_value`` entry, naming the file.
    """
    source = str(getattr(x, "meta", {}).get("filename_or_obj") or "input")
    dtype, value = _stored(source)
    if value is not None:
        return value
    dtype = dtype or str(_plain(x).dtype).replace("torch.", "")
    if dtype not in DTYPE_MAX:
        raise ValueError(f"{source}: the model divides inputs by the file's maximum value; store `image` as uint8 "
                         f"(255) or uint16 (65535), or add a `max_value` entry to the .npz; got dtype {dtype}")
    return DTYPE_MAX[dtype]


class ScaleToUnitd(MapTransform):
    """``[C, *spatial]`` -> float32: divided by :func:`max_value` when ``rescale``; 3 channels (RGB) averaged to
    grey; grey replicated to ``channels``."""

    def __init__(self, keys: Sequence[Hashable], rescale: bool = True, channels: int = 1,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rescale, self.channels = bool(rescale), int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scale = max_value(d[key]) if self.rescale else 1.0
            x = _plain(d[key]).float() / scale
            if x.shape[0] == 3:
                x = x.mean(dim=0, keepdim=True)
            if self.channels != x.shape[0]:
                if x.shape[0] != 1:
                    raise ValueError(f"{getattr(d[key], 'meta', {}).get('filename_or_obj', key)}: the model takes "
                                     f"{self.channels} channel(s), the image has {x.shape[0]}")
                x = x.repeat_interleave(self.channels, dim=0)
            d[key] = x
        return d


def input_seed(x: torch.Tensor) -> int:
    """A 64-bit seed from the sha256 of ``x``'s float32 bytes: the same input always draws the same noise."""
    return int.from_bytes(hashlib.sha256(x.detach().cpu().float().numpy().tobytes()).digest()[:8], "little")


class NormaliseIntensityd(MapTransform):
    """``zscore`` (all voxels), ``zscore_nonzero`` (voxels > 0, all when none is) or ``minmax``, statistics in
    float64 (population std; 0 counts as 1). ``zscore_nonzero`` then sets the voxels that were exactly 0 to
    ``background``: ``noise`` N(0, 1) from ``numpy.random.default_rng(input_seed(x))``, ``zero``, or ``keep``."""

    def __init__(self, keys: Sequence[Hashable], mode: str = "zscore", background: str = "keep",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mode, self.background = mode, background

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised float32 ``x`` (any shape)."""
        v = x.double()
        if self.mode == "minmax":
            span = float(v.max() - v.min())
            return ((v - v.min()) / span if span > 0 else torch.zeros_like(v)).float()
        sel = v[v > 0] if self.mode == "zscore_nonzero" and bool((v > 0).any()) else v.reshape(-1)
        mean, std = float(sel.mean()), float(sel.std(unbiased=False))
        out = (v - mean) / (std if std > 0 else 1.0)
        if self.mode == "zscore_nonzero" and self.background != "keep":
            fill = torch.zeros_like(out) if self.background == "zero" else torch.from_numpy(
                np.random.default_rng(input_seed(x)).standard_normal(tuple(x.shape)))
            out = torch.where(v == 0, fill, out)
        return out.float()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(_plain(d[key]).float())
        return d


class Runner:
    """Run ``inferer(image, network)`` over ``dataloader``; save ``<output_dir>/<name>.npz`` (``pred``) per item.

    ``postprocessing`` (a dict transform on ``{"pred": tensor}``) turns each item's logits into what is saved.
    """

    def __init__(self, device: Any, dataloader: Any, network: torch.nn.Module, inferer: Callable,
                 output_dir: str, postprocessing: Callable | None = None) -> None:
        self.device, self.dataloader, self.network, self.inferer = device, dataloader, network, inferer
        self.output_dir, self.postprocessing = str(output_dir), postprocessing

    def run(self) -> int:
        """Returns the number of items written."""
        os.makedirs(self.output_dir, exist_ok=True)
        count = 0
        with torch.no_grad():
            for batch in self.dataloader:
                preds = self.inferer(torch.as_tensor(batch["image"]).to(self.device), self.network)
                for name, pred in zip(batch["name"], preds):
                    item = {"pred": pred}
                    if self.postprocessing is not None:
                        item = self.postprocessing(item)
                    out = np.asarray(torch.as_tensor(item["pred"]).detach().cpu())
                    np.savez(os.path.join(self.output_dir, f"{os.path.basename(name)}.npz"), pred=out)
                    count += 1
        return count
