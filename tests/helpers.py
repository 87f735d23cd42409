"""Plain helpers shared by the test packages: tiny models, random BatchNorm statistics, tiny exports, a local HTTP
server. Fixtures built on them live in ``tests/conftest.py``; no test module imports another test module.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import medzoo
from medzoo.config import to_dict
from medzoo.zoo.export import write_export_dir

TINY_WIDTHS = (8, 16, 32, 64)
CXR_TASKS = {"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b"]}}
CXR_PRE = {"modality": ["CXR"], "normalisation": "none", "input_size": [32, 32]}
#: One ResNet per block type: basic (with the parameter-free shortcut A) and bottleneck (shortcut B).
REPRESENTATIVE_ENCODERS = ("resnet18", "resnet50")


def representatives(names: Any, keep: tuple[str, ...] = REPRESENTATIVE_ENCODERS) -> list[Any]:
    """``names`` as pytest parameters: the ``keep`` ones run by default, the others are marked ``slow``.

    For checks repeated over every encoder depth: the default run keeps one encoder per block type.
    """
    return [n if n in keep else pytest.param(n, marks=pytest.mark.slow) for n in names]


# ------------------------------------------------------------------------------------------------------ models
def tiny_config(tasks: dict[str, Any], aggregator: dict[str, Any] | None = None,
                name: str = "resnet10") -> dict[str, Any]:
    """A model config with tiny widths: ``tasks`` as in a model YAML, an optional aggregator block."""
    cfg: dict[str, Any] = {"encoder": {"name": name, "widths": list(TINY_WIDTHS)}, "tasks": copy.deepcopy(tasks)}
    if aggregator is not None:
        cfg["aggregator"] = copy.deepcopy(aggregator)
    return cfg


def build_model(tasks: dict[str, Any], aggregator: dict[str, Any] | None = None, name: str = "resnet10",
                seed: int = 0) -> nn.Module:
    """:func:`tiny_config` built with ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    return medzoo.create_model(tiny_config(tasks, aggregator, name)).eval()


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters; return the model in eval mode.

    Means and shifts in [-0.5, 0.5), variances and scales in [0.5, 1.5): far enough from the defaults (0, 1) that a
    forgotten buffer, a wrong fold or the wrong normalisation statistics change the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def stats_model(cfg: Any, seed: int = 0) -> nn.Module:
    """``create_model(cfg)`` drawn with ``seed``, with random BatchNorm statistics (:func:`randomize_bn`), in eval
    mode: a lost buffer shows in any comparison."""
    torch.manual_seed(seed)
    return randomize_bn(medzoo.create_model(cfg), seed)


def count_bn(model: nn.Module) -> int:
    """The number of BatchNorm modules left in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _spec_tasks(model: nn.Module) -> dict[str, Any]:
    out = {}
    for t, head in model.heads.items():
        kind = "segmentation" if head.kind == "dense" else "multilabel"
        out[t] = {"type": kind, "labels": list(head.label_names), "level": model.task_levels[t]}
        if kind == "multilabel":
            out[t]["thresholds"] = dict(zip(head.label_names, head.thresholds.tolist()))
    return out


def write_tiny_export(root: Path, name: str, tasks: dict[str, Any], seed: int = 0,
                      preprocessing: dict[str, Any] | None = CXR_PRE) -> str:
    """A valid export directory ``root/name`` of a tiny model (its metadata passes WeightsSpec, as loading requires).

    ``tasks`` are multilabel or segmentation tasks; ``preprocessing`` is the recorded contract (None: none recorded).
    """
    model = build_model(tasks, seed=seed)
    meta = {"name": name, "version": "1", "parts": ["encoder", "heads"],
            **({"preprocessing": preprocessing} if preprocessing is not None else {}),
            "architecture": {"encoder": "resnet10", "widths": list(TINY_WIDTHS)}, "tasks": _spec_tasks(model),
            "license": "MIT", "source": "https://example.org/tests", "citation": "none"}
    return str(write_export_dir(Path(root) / name, state_dict=model.state_dict(), config=to_dict(model.config),
                                metadata=meta))


# ------------------------------------------------------------------------------------------------- metrics
def pair_auc(s: Any, t: Any) -> float:
    """AUROC written out by counting positive/negative pairs (ties count 1/2); NaN targets dropped, NaN without
    both classes."""
    s, t = np.asarray(s, float), np.asarray(t, float)
    keep = ~np.isnan(t)
    s, t = s[keep], t[keep]
    pos, neg = s[t == 1], s[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def check_bootstrap_ci(ci: Any, reps: np.ndarray, scores: np.ndarray, targets: np.ndarray) -> None:
    """``ci`` (an ``auroc_bootstrap_ci`` result) equals the percentile CIs of replicate AUROCs ``reps [B, L]``
    computed independently: per label, NaN replicates dropped; for the mean, the mean of each replicate's labels."""
    for j in range(reps.shape[1]):
        col = reps[~np.isnan(reps[:, j]), j]
        assert ci.lower[j] == pytest.approx(np.percentile(col, 2.5), rel=1e-12)
        assert ci.upper[j] == pytest.approx(np.percentile(col, 97.5), rel=1e-12)
        assert ci.auroc[j] == pytest.approx(pair_auc(scores[:, j], targets[:, j]), rel=1e-12)
    means = np.array([np.mean(r[~np.isnan(r)]) for r in reps])
    assert ci.mean_lower == pytest.approx(np.percentile(means, 2.5), rel=1e-12)
    assert ci.mean_upper == pytest.approx(np.percentile(means, 97.5), rel=1e-12)


# ------------------------------------------------------------------------------------------------- HTTP server
@dataclasses.dataclass
class ServerSwitches:
    """How the test server misbehaves. Each switch applies to every request unless it says otherwise.

    Attributes:
        drop_after: send only this many body bytes (Content-Length still declares the full body), then close.
        drop_times: how many requests ``drop_after`` applies to (then it serves normally).
        ignore_range: answer a Range request with 200 and the whole file.
        declared_length: send this Content-Length instead of the true one (a size lie); body unchanged.
        omit_length: send no Content-Length (the body ends when the connection closes).
        chunk_delay: seconds to sleep after each 4 KiB chunk (to make transfers overlap).
        validators: send an ETag (a hostile or minimal server sends none).
        etag: the ETag to send instead of one derived from the content.
        trickle: send the body one byte at a time, sleeping this long between bytes (a slowloris server).
        redirect: answer every request with ``302 Location: <redirect>``.
        replace_after: ``(n, data)``: from the request after the n-th on, the file holds ``data`` (it changed).
    """

    drop_after: int | None = None
    drop_times: int = 1
    ignore_range: bool = False
    declared_length: int | None = None
    omit_length: bool = False
    chunk_delay: float = 0.0
    validators: bool = True
    etag: str | None = None
    trickle: float = 0.0
    redirect: str | None = None
    replace_after: tuple[int, bytes] | None = None


@dataclasses.dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0


class LocalServer:
    """A threaded ``http.server`` on 127.0.0.1 serving ``root``, recording every request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.switches = ServerSwitches()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._drops = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/name``; returns its url."""
        (self.root / name).write_bytes(data)
        return self.url(name)

    def count(self, name: str) -> int:
        """How many GET requests asked for ``/name``."""
        return sum(r.path == "/" + name for r in self.requests)

    def take_drop(self) -> bool:
        with self._lock:
            if self.switches.drop_after is None or self._drops >= self.switches.drop_times:
                return False
            self._drops += 1
            return True


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802
            rec = Request(self.path, {k: v for k, v in self.headers.items()})
            server.requests.append(rec)
            sw = server.switches
            if sw.redirect is not None:
                rec.status = 302
                self.send_response(302)
                self.send_header("Location", sw.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = server.root / self.path.lstrip("/")
            if sw.replace_after is not None and server.count(self.path.lstrip("/")) > sw.replace_after[0]:
                path.write_bytes(sw.replace_after[1])
            if not path.is_file():
                rec.status = 404
                self.send_error(404)
                return
            data = path.read_bytes()
            start = self._range_start(len(data), rec)
            if start is None:
                return
            body = data[start:]
            self.send_response(rec.status)
            if rec.status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if not sw.omit_length:
                self.send_header("Content-Length", str(sw.declared_length or len(body)))
            if sw.validators:
                self.send_header("ETag", sw.etag or f'"{hashlib.sha256(data).hexdigest()[:16]}"')
            self.end_headers()
            if server.take_drop():
                body = body[: sw.drop_after]
            self._send_body(body, rec)

        def _range_start(self, n: int, rec: Request) -> int | None:
            rng = self.headers.get("Range")
            if not rng or server.switches.ignore_range:
                rec.status = 200
                return 0
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= n:
                rec.status = 416
                self.send_error(416)
                return None
            rec.status = 206
            return start

        def _send_body(self, body: bytes, rec: Request) -> None:
            step = 1 if server.switches.trickle else 4096
            for i in range(0, len(body), step):
                try:
                    self.wfile.write(body[i : i + step])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                rec.body_bytes += len(body[i : i + step])
                if server.switches.chunk_delay or server.switches.trickle:
                    time.sleep(server.switches.chunk_delay or server.switches.trickle)
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def serve(root: Path, tls: Any = None) -> Iterator[LocalServer]:
    """A started :class:`LocalServer` on 127.0.0.1 serving ``root`` (created), shut down on exit; ``tls``: an
    ``ssl.SSLContext`` to serve https with."""
    root.mkdir(parents=True, exist_ok=True)
    server = LocalServer(root)
    if tls is not None:
        server.httpd.socket = tls.wrap_socket(server.httpd.socket, server_side=True)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
