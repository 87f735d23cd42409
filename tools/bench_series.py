"""Series encoding benchmark: packed chunked encoding vs a per-patient loop vs padded dense encoding.

Two figures (targets set from a measurement on this machine):

1. **Speed.** A batch of 8 series of mixed lengths (4-64 slices of 64x64, one channel), resnet18 at widths
   (8, 16, 32, 64), mean aggregation and a 3-class head. Three ways to encode the same batch:
   ``packed`` (valid slices only, in chunks of at most 64, :func:`medzoo.models.series.encode_series`), ``loop`` (one
   encoder call per patient) and ``dense`` (all B*N slices, padding included, in one call: MONAI MILModel's way).
   In eval mode the three give the same outputs (checked). Timed for inference and for a training step
   (forward, loss, backward), with the methods interleaved and their order rotated each repeat (>= 11 repeats);
   the speedup is the ratio of median times. Targets: >= 1.3x over the loop and >= 1.5x over dense.
2. **Memory.** Peak resident memory of one series (B = 1) as N grows 16..256 at a fixed chunk of 16 slices
   (N >= chunk, so every chunk is full), each N in a fresh subprocess, measured from just before the step
   (after the model and input exist, so net of the input bytes), by resetting the kernel's high-water mark
   (``/proc/self/clear_refs``, Linux). Modes: inference, training step with per-chunk checkpointing, and
   training without it (for contrast: it keeps every chunk's activations for backward, so it grows with N).
   Target: flat within 20% for inference and checkpointed training. Checkpointed training keeps a small
   autograd/checkpoint bookkeeping per chunk (about 0.18 MB, independent of the slice size), so it grows
   slowly with N / chunk; slice data and activations do not accumulate.

Run: ``python tools/bench_series.py [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medzoo.encoders import create_encoder  # noqa: E402
from medzoo.models.series import encode_series, pool_features  # noqa: E402

__all__ = ["bench_series", "bench_speed", "bench_memory"]

WIDTHS = (8, 16, 32, 64)
LENGTHS = (4, 64, 9, 40, 17, 52, 25, 33)  # 8 series, 4-64 slices, 244 valid of 512 padded
SIZE = 64
CHUNK = 64


def _setup(seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    enc = create_encoder("resnet18", widths=WIDTHS)
    head = nn.Linear(enc.feature_dim, 3)
    n = max(LENGTHS)
    x = torch.randn(len(LENGTHS), n, 1, SIZE, SIZE)
    pad = torch.tensor([[i >= length for i in range(n)] for length in LENGTHS])
    return enc, head, x, pad


def _mean(items: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    valid = (~pad).unsqueeze(-1).to(items)
    return (items * valid).sum(1) / valid.sum(1)


def _packed(enc, head, x, pad):
    return head(_mean(encode_series(enc, x, pad, max_items_per_chunk=CHUNK), pad))


def _dense(enc, head, x, pad):
    return head(_mean(encode_series(enc, x, pad, max_items_per_chunk=x.shape[0] * x.shape[1], mode="dense"), pad))


def _loop(enc, head, x, pad):
    lengths = (~pad).sum(1).tolist()
    return head(torch.stack([pool_features(enc(x[b, :n])[-1]).mean(0) for b, n in enumerate(lengths)]))


METHODS = {"packed": _packed, "loop": _loop, "dense": _dense}


def _step(fn, enc, head, x, pad, train: bool) -> float:
    y = torch.arange(x.shape[0]) % 3
    t0 = time.perf_counter()
    if train:
        enc.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(fn(enc, head, x, pad), y).backward()
    else:
        with torch.no_grad():
            fn(enc, head, x, pad)
    return time.perf_counter() - t0


def bench_speed(repeats: int = 11) -> list[dict[str, Any]]:
    """Median times of packed / loop / dense for inference and a training step, and the speedups of packed."""
    enc, head, x, pad = _setup()
    enc.eval()
    with torch.no_grad():
        outs = {name: fn(enc, head, x, pad) for name, fn in METHODS.items()}
    max_diff = max(float((outs[k] - outs["packed"]).abs().max()) for k in outs)
    if max_diff > 1e-4:
        raise RuntimeError(f"packed, loop and dense disagree in eval mode (max difference {max_diff:.2e})")
    rows = []
    names = list(METHODS)
    for phase, train in (("inference", False), ("train_step", True)):
        enc.train(train)
        times: dict[str, list[float]] = {k: [] for k in names}
        for name in names:  # warm-up
            _step(METHODS[name], enc, head, x, pad, train)
        for r in range(repeats):
            for name in names[r % 3:] + names[: r % 3]:  # interleaved, order rotated
                times[name].append(_step(METHODS[name], enc, head, x, pad, train))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({
            "figure": "speed", "phase": phase, "repeats": repeats, "threads": torch.get_num_threads(),
            "packed_s": med["packed"], "loop_s": med["loop"], "dense_s": med["dense"],
            "speedup_vs_loop": med["loop"] / med["packed"], "speedup_vs_dense": med["dense"] / med["packed"],
            "target_vs_loop": 1.3, "target_vs_dense": 1.5, "eval_max_abs_diff": max_diff,
            "reason": ("dense runs all 512 items in one encoder call, packed 244 items in 4 calls at the default "
                       "max_items_per_chunk=64 (the memory bound); backward convolutions are less efficient per "
                       "item at 61 items than at 512, so the training-step gain stays below the 2.1x item ratio")
            if train else "",
        })
    return rows


def _memory_child(n: int, mode: str, chunk: int) -> dict[str, Any]:
    """Runs in a fresh process: peak RSS growth of one step on one series of ``n`` slices."""
    torch.manual_seed(0)
    enc = create_encoder("resnet18", widths=WIDTHS)
    head = nn.Linear(enc.feature_dim, 3)
    x = torch.randn(1, n, 1, SIZE, SIZE)
    pad = torch.zeros(1, n, dtype=torch.bool)
    enc.train(mode != "inference")

    def step() -> None:
        with torch.set_grad_enabled(mode != "inference"):
            items = encode_series(enc, x, pad, max_items_per_chunk=chunk, checkpoint=mode == "train_checkpoint")
            out = head(_mean(items, pad))
            if mode != "inference":
                out.sum().backward()

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    step()
    return {"n": n, "mode": mode, "peak_net_mb": (_status_kb("VmHWM") - before) / 1024,
            "input_mb": x.numel() * x.element_size() / 2**20}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _child_env() -> dict[str, str]:
    # Large blocks are mmapped and unmapped on free (no dynamic threshold, no arena caching), so resident memory
    # follows live tensors; one thread keeps per-thread scratch buffers out of the figure.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="16384", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    return env


def bench_memory(ns: tuple[int, ...], modes: tuple[str, ...], chunk: int = 16) -> list[dict[str, Any]]:
    """Peak memory per N (fresh subprocess each) and, per mode, max/min ratio across N."""
    rows = []
    for mode in modes:
        per_n = []
        for n in ns:
            cmd = [sys.executable, __file__, "--memory-child", str(n), mode, str(chunk)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_child_env())
            per_n.append(json.loads(res.stdout.strip().splitlines()[-1]))
        peaks = [r["peak_net_mb"] for r in per_n]
        rows.append({
            "figure": "memory", "mode": mode, "chunk": chunk, "ns": list(ns), "peak_net_mb": peaks,
            "input_mb": [r["input_mb"] for r in per_n], "max_over_min": max(peaks) / max(min(peaks), 1e-9),
            "target_max_over_min": 1.2 if mode != "train" else None,
        })
    return rows


def bench_series(quick: bool = False) -> list[dict[str, Any]]:
    """Both figures; ``quick`` runs 11 repeats and N in (16, 64, 256), full runs 21 repeats and 16..256."""
    rows = bench_speed(repeats=11 if quick else 21)
    ns = (16, 64, 256) if quick else (16, 32, 64, 128, 256)
    modes = ("inference", "train_checkpoint") if quick else ("inference", "train_checkpoint", "train")
    return rows + bench_memory(ns, modes)


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["figure"] == "speed":
            print(f"speed  {r['phase']:<11} packed {r['packed_s'] * 1e3:7.1f} ms  loop {r['loop_s'] * 1e3:7.1f} ms  "
                  f"dense {r['dense_s'] * 1e3:7.1f} ms  x{r['speedup_vs_loop']:.2f} vs loop (>= 1.3)  "
                  f"x{r['speedup_vs_dense']:.2f} vs dense (>= 1.5)  [{r['repeats']} repeats, {r['threads']} threads]")
        else:
            peaks = "  ".join(f"N={n}: {p:.1f}" for n, p in zip(r["ns"], r["peak_net_mb"]))
            print(f"memory {r['mode']:<16} chunk {r['chunk']}  peak MB {peaks}  max/min {r['max_over_min']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and N values")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--threads", type=int, help="torch threads for the speed figure (default: torch's)")
    parser.add_argument("--memory-child", nargs=3, metavar=("N", "MODE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        n, mode, chunk = args.memory_child
        print(json.dumps(_memory_child(int(n), mode, int(chunk))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_series(quick=args.quick)
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
