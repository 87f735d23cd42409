"""The runner of a medzoo-exported MONAI bundle, copied into it as ``scripts/medzoo_io.py``.

It needs only torch, numpy and MONAI (never medzoo), so that the bundle runs wherever MONAI does:

- :func:`load_weights` loads ``models/model.pt`` (a state dict) into the network, strictly;
- :class:`ZScorePositived` is medzoo's ``zscore_nonzero`` normalisation (statistics over voxels > 0, MedicalNet's
  recipe; MONAI's ``nonzero`` would also count negative voxels);
- :class:`Runner` runs the network over the dataloader and writes ``<output_dir>/<name>.npz`` holding ``pred``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform


def load_weights(network: torch.nn.Module, path: str, device: Any) -> torch.nn.Module:
    """``network`` with the state dict at ``path`` loaded strictly (tensors only), on ``device``, in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.to(device).eval()


class ZScorePositived(MapTransform):
    """``(x - mean) / std`` with the statistics of the voxels > 0 (of all voxels when none is; std 0 counts as 1)."""

    def __init__(self, keys: Sequence[Hashable], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key]).float()
            sel = x[x > 0] if bool((x > 0).any()) else x.reshape(-1)
            std = float(sel.std(unbiased=False))
            d[key] = (x - float(sel.mean())) / (std if std > 0 else 1.0)
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
