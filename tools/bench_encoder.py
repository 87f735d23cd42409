"""Suite ``encoder``: the 2D path against the 3D path on depth-1 input (resnet18, 8x1x224x224).

Both run the same encoder and weights; the 3D path gets ``x.unsqueeze(2)``. A training step is forward + backward
of a scalar loss over all five maps, with gradients zeroed between steps.
"""

from __future__ import annotations

import torch

from tools.benchlib import interleaved

TARGET_TRAIN = 1.8


def bench_encoder(quick: bool = False) -> list[dict]:
    """Rows: training-step and inference speedups of the 2D path over the 3D path on depth 1."""
    from medzoo.encoders import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("resnet18")
    x = torch.randn(8, 1, 224, 224)
    x3 = x.unsqueeze(2)
    repeats = 5 if quick else 11

    def train_step(inp: torch.Tensor):
        def run() -> None:
            enc.zero_grad(set_to_none=True)
            sum(f.mean() for f in enc(inp)).backward()
        return run

    def infer(inp: torch.Tensor):
        def run() -> None:
            with torch.inference_mode():
                enc(inp)
        return run

    enc.train()
    t = interleaved(train_step(x), train_step(x3), repeats=repeats)
    enc.eval()
    i = interleaved(infer(x), infer(x3), repeats=repeats)
    common = {"suite": "encoder", "model": "resnet18", "input": "8x1x224x224", "repeats": repeats}
    return [
        {**common, "name": "train step 2D path vs 3D on depth 1", "2D s": t["a_s"], "3D s": t["b_s"],
         "ratio": t["ratio_b_over_a"], "target": f">= {TARGET_TRAIN}"},
        {**common, "name": "inference 2D path vs 3D on depth 1", "2D s": i["a_s"], "3D s": i["b_s"],
         "ratio": i["ratio_b_over_a"], "target": "report"},
    ]
