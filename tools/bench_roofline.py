"""Suite ``roofline``: how close the encoder forward gets to the machine's own limit, then the cheap wins.

Part 1, roofline. The encoder's FLOPs are counted analytically from the convolution shapes, with forward hooks:
``2 * C_in * C_out * prod(kernel) * prod(output size) * batch / groups`` per convolution (multiply and add counted
as two, padding taps included). Excluded: BatchNorm, ReLU, max-pooling, residual additions, the parameter-free
shortcut-A downsampling (average pool + zero channels) and bias additions, all memory-bound and small beside the
convolutions. The machine's limit is the GFLOP/s of a large fp32 matmul (2048 x 2048, ``2 n^3`` FLOPs) measured
interleaved with the encoder in the same run. ``ratio`` = encoder GFLOP/s / matmul GFLOP/s (eval mode, no_grad,
batch 1, full widths) for resnet10/18/50 at two 3D input sizes.

Part 2, cheap wins for CPU inference (resnet18, eval, batch 1): each candidate timed interleaved with the default
(fp32, contiguous tensors, ``torch.no_grad``, torch's default thread count, oneDNN on). ``ratio`` = default time /
candidate time (above 1: faster), with the largest absolute difference of the layer4 output in the row. A control
row times the default against itself: its distance from 1 is the noise floor of the run. Candidates:
1 thread vs the default (each in its own process), channels_last_3d, oneDNN (``torch.backends.mkldnn``) off,
flushing denormals, ``inference_mode``, BatchNorm folded into the convolutions (:func:`medzoo.utils.fuse_bn`),
the combination that :func:`medzoo.utils.inference_defaults` adopts, and (full run only: it compiles for minutes)
``torch.compile``.
No bf16 anywhere: this CPU has no bf16 hardware.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from tools.benchlib import interleaved

MATMUL_N = 2048
#: candidates adopted by ``medzoo.utils.inference_defaults`` (see the module docstring of medzoo.utils.perf)
ADOPTED = {"BN folded into convs (fuse_bn)", "inference_mode", "inference_defaults (fuse_bn + inference_mode)"}


NOTES = {
    "1 thread vs default (separate processes)": "above 1 means one thread beat the default; on an oversubscribed "
    "machine (load average above the core count) OpenMP's second thread waits at barriers for a descheduled peer. "
    "Not adopted: on a dedicated machine more threads win; set torch.set_num_threads to the cores you own",
    "control: default vs itself": "the noise floor of this run: a ratio this far from 1 is noise",
    "BN folded into convs (fuse_bn)": "removes every BatchNorm pass (about 10% of the forward's CPU time in a profile)",
}


def count_conv_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of every convolution of one forward of ``model`` on ``x`` (see the module docstring)."""
    total = 0

    def hook(conv: nn.modules.conv._ConvNd, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * conv.in_channels * conv.out_channels * math.prod(conv.kernel_size) * out.numel() \
            // (conv.groups * conv.out_channels)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _roofline_rows(quick: bool, repeats: int) -> list[dict]:
    from medzoo.encoders import create_encoder

    sizes = [(1, 1, 32, 64, 64), (1, 1, 48, 96, 96)] if quick else [(1, 1, 64, 128, 128), (1, 1, 96, 192, 192)]
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    mm_flops = 2 * MATMUL_N**3
    rows = []
    for name in ("resnet10", "resnet18", "resnet50"):
        torch.manual_seed(0)
        enc = create_encoder(name).eval()
        for shape in sizes:
            x = torch.randn(shape)
            flops = count_conv_flops(enc, x)

            def forward(enc: nn.Module = enc, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    enc(x)

            t = interleaved(lambda: a @ b, forward, repeats=repeats)
            enc_gf, mm_gf = flops / t["b_s"] / 1e9, mm_flops / t["a_s"] / 1e9
            rows.append({"suite": "roofline", "name": f"{name} forward {'x'.join(map(str, shape))}: "
                         "encoder / matmul GFLOP/s", "ratio": enc_gf / mm_gf, "target": "report",
                         "GFLOP": flops / 1e9, "encoder GFLOP/s": enc_gf, "matmul GFLOP/s": mm_gf,
                         "encoder s": t["b_s"], "repeats": repeats, "threads": torch.get_num_threads()})
    return rows


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the TF32 notice that ``torch.backends.mkldnn.flags`` prints on CPU-only builds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _thread_worker(conn, threads: int, shape: tuple[int, ...]) -> None:  # runs in a spawned process
    torch.set_num_threads(threads)
    from medzoo.encoders import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("resnet18").eval()
    x = torch.randn(shape)
    with torch.no_grad():
        out = enc(x)[-1]
    conn.send(out)
    while conn.recv():
        t0 = time.perf_counter()
        with torch.no_grad():
            enc(x)
        conn.send(time.perf_counter() - t0)


def _threads_timing(shape: tuple[int, ...], threads: int, repeats: int) -> tuple[dict[str, float], float]:
    """Default thread count vs ``threads``, each in its own process (a thread-pool change inside one process
    slows the calls after it), timed alternately; returns the timing and the largest output difference."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for n in (torch.get_num_threads(), threads):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_thread_worker, args=(theirs, n, shape), daemon=True)
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    try:
        outs = [p.recv() for p in pipes]
        times: list[list[float]] = [[], []]
        for i in range(repeats + 1):
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                pipes[k].send(True)
                t = pipes[k].recv()
                if i > 0:  # the first round is warm-up
                    times[k].append(t)
    finally:
        for p, proc in zip(pipes, procs):
            p.send(False)
            proc.join(timeout=30)
    ratios = [b / a for a, b in zip(*times)]
    timing = {"a_s": statistics.median(times[0]), "b_s": statistics.median(times[1]),
              "ratio_b_over_a": statistics.median(ratios), "repeats": repeats}
    return timing, float((outs[0] - outs[1]).abs().max())


@contextmanager
def _flush_denormal() -> Iterator[None]:
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _runner(model: Callable, x: torch.Tensor, ctx: Callable = torch.no_grad) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with ctx():
            out = model(x)
        return out[-1] if isinstance(out, (list, tuple)) else out
    return run


def _candidates(enc: nn.Module, x: torch.Tensor, quick: bool) -> dict[str, Callable[[], torch.Tensor]]:
    from medzoo.utils import fuse_bn, inference_context, inference_defaults

    cl = _clone(enc).to(memory_format=torch.channels_last_3d)
    fused = fuse_bn(enc)
    best = inference_defaults(enc)
    cands = {
        "channels_last_3d (model + input)": _runner(cl, x.contiguous(memory_format=torch.channels_last_3d)),
        "oneDNN off (torch.backends.mkldnn)": _runner(
            enc, x, lambda: _nested(torch.no_grad(), _quiet(), torch.backends.mkldnn.flags(enabled=False))),
        "flush denormals": _runner(enc, x, lambda: _nested(torch.no_grad(), _flush_denormal())),
        "inference_mode": _runner(enc, x, torch.inference_mode),
        "BN folded into convs (fuse_bn)": _runner(fused, x),
        "inference_defaults (fuse_bn + inference_mode)": _runner(best, x, inference_context),
    }
    if not quick:
        cands["torch.compile (inductor)"] = _compiled(enc, x)
    return cands


@contextmanager
def _nested(*ctxs) -> Iterator[None]:
    for c in ctxs:
        c.__enter__()
    try:
        yield
    finally:
        for c in reversed(ctxs):
            c.__exit__(None, None, None)


def _clone(enc: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(enc)


_COMPILE_SECONDS: list[float] = []


def _compiled(enc: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    compiled = torch.compile(_clone(enc))
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    _COMPILE_SECONDS.append(time.perf_counter() - t0)
    return _runner(compiled, x)


def _wins_rows(quick: bool, repeats: int) -> list[dict]:
    from medzoo.encoders import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("resnet18").eval()
    shape = (1, 1, 32, 64, 64)
    x = torch.randn(shape)
    default = _runner(enc, x)
    ref = default()
    rows = []
    cands = {"control: default vs itself": _runner(enc, x), "1 thread vs default (separate processes)": default,
             **_candidates(enc, x, quick)}
    for name, fn in cands.items():
        if fn is default:
            t, diff = _threads_timing(shape, 1, repeats)
        else:
            diff = float((fn().float() - ref).abs().max())
            t = interleaved(default, fn, repeats=repeats)
        note = NOTES.get(name, "")
        if name.startswith("torch.compile"):
            note = f"first call (compile) {_COMPILE_SECONDS[-1]:.0f} s"
        rows.append({"suite": "roofline", "name": f"cheap win: {name}", "ratio": 1.0 / t["ratio_b_over_a"],
                     "target": "report", "default s": t["a_s"], "candidate s": t["b_s"], "max abs diff": diff,
                     "adopted": "yes" if name in ADOPTED else "no", "input": "resnet18 " + "x".join(map(str, shape)),
                     "repeats": repeats, "threads": torch.get_num_threads(), "note": note})
    return rows


def bench_roofline(quick: bool = False) -> list[dict]:
    """Rows: the roofline fraction for resnet10/18/50 at two sizes, then the cheap-wins ratios (11 repeats)."""
    repeats = 11
    return _roofline_rows(quick, repeats) + _wins_rows(quick, repeats)
