"""Suite ``predict``: memory and time of CT segmentation by sliding windows against one whole-volume pass.

Model: resnet18 encoder (full widths) with the U-Net ``segmentation`` head, 2 classes, eval mode, no gradients,
on the CPU. Every measurement runs in a fresh subprocess, so the peak resident set size (``ru_maxrss``) belongs to
that run alone. ``net MB`` is the peak minus the resident size just before inference (model and input already
built), i.e. what inference itself added.

- memory: a 256^3 volume, one pass vs sliding windows (96^3 patch, overlap 0.25, one window per call);
- time: sliding windows at three volume sizes (128^3, 192^3, 256^3), with time per voxel relative to the smallest;
  time follows the number of windows (overlapping windows recompute shared voxels), reported with it.

``quick`` uses a 96^3 volume with a 48^3 patch and sizes 48^3, 72^3, 96^3; its rows say so.

Example:
    >>> # from tools.bench_predict import bench_predict; bench_predict(quick=True)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"volume": 256, "patch": 96, "sizes": (128, 192, 256)}
QUICK = {"volume": 96, "patch": 48, "sizes": (48, 72, 96)}


def _child(spec: dict) -> dict:
    """Run one measurement (inside the subprocess) and return its figures."""
    import resource

    import torch

    import medzoo
    from medzoo.infer.predict import Predictor

    torch.manual_seed(0)
    model = medzoo.create_model({"encoder": {"name": "resnet18"},
                                 "tasks": {"seg": {"type": "segmentation", "level": "volume", "num_classes": 2}}})
    n = spec["size"]
    x = torch.rand(1, 1, n, n, n)
    patch = (spec["patch"],) * 3 if spec["mode"] == "sliding" else None
    predictor = Predictor(model, patch_size=patch, overlap=0.25, sw_batch_size=1)
    # ru_maxrss survives exec (a child of a large benchmark driver would report the driver's peak), so read the
    # process's own high-water mark from /proc after resetting it; getrusage is the fallback off Linux.
    base_kb = _reset_peak_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    logits = predictor.dense_logits(x, ["seg"])["seg"]
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert tuple(logits.shape) == (1, 2, n, n, n)
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "net_mb": (peak_kb - base_kb) / 1024}


def _status_kb(key: str) -> int:
    """A ``/proc/self/status`` figure in kB (0 where /proc is not available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_kb() -> int:
    """Reset the high-water mark (VmHWM) to the current RSS and return it (0 where unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0
    return _status_kb("VmRSS")


def _windows(size: int, patch: int, overlap: float = 0.25) -> int:
    """Windows ``sliding_window_inference`` runs on a cube (scan interval ``int(patch * (1 - overlap))``)."""
    if size <= patch:
        return 1
    step = max(int(patch * (1 - overlap)), 1)
    return (math.ceil((size - patch) / step) + 1) ** 3


def _measure(mode: str, size: int, patch: int) -> dict:
    spec = json.dumps({"mode": mode, "size": size, "patch": patch})
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tools.bench_predict", "--child", spec], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_predict child {spec} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_predict(quick: bool = False) -> list[dict]:
    """Rows: peak memory of one pass vs sliding windows, and sliding-window time at three sizes."""
    cfg = QUICK if quick else FULL
    tag = " (quick: smaller sizes)" if quick else ""
    n, patch = cfg["volume"], cfg["patch"]
    single, sliding = _measure("single", n, patch), _measure("sliding", n, patch)
    common = {"suite": "predict", "model": "resnet18 + U-Net seg, 2 classes, CPU", "patch": f"{patch}^3"}
    rows = [{**common, "name": f"peak RSS, {n}^3 volume: one pass / sliding window{tag}",
             "ratio": round(single["net_mb"] / max(sliding["net_mb"], 1e-6), 2), "target": "> 1",
             "single peak MB": round(single["peak_mb"]), "single net MB": round(single["net_mb"]),
             "sliding peak MB": round(sliding["peak_mb"]), "sliding net MB": round(sliding["net_mb"]),
             "single s": round(single["seconds"], 2), "sliding s": round(sliding["seconds"], 2)}]
    first = None
    for size in cfg["sizes"]:
        m = sliding if size == n else _measure("sliding", size, patch)
        per_voxel = m["seconds"] / size**3
        first = first or per_voxel
        rows.append({**common, "name": f"sliding-window time, {size}^3{tag}", "ratio": round(per_voxel / first, 2),
                     "target": "report (time per voxel vs the smallest size)", "seconds": round(m["seconds"], 2),
                     "windows": _windows(size, patch), "s per window": round(m["seconds"] / _windows(size, patch), 2),
                     "peak MB": round(m["peak_mb"]), "net MB": round(m["net_mb"])})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
    else:
        for row in bench_predict(quick="--quick" in sys.argv):
            print(row)
