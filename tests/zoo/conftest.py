"""Fixtures for the zoo tests: an isolated MEDZOO_HOME and a local HTTP server with failure switches."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


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


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A fresh local HTTP server (new switches, empty request log) serving ``tmp_path/served``."""
    root = tmp_path / "served"
    root.mkdir()
    server = LocalServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def medzoo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MEDZOO_HOME; MEDZOO_OFFLINE and MEDZOO_CATALOG unset."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDZOO_HOME", str(home))
    monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)
    monkeypatch.delenv("MEDZOO_CATALOG", raising=False)
    return home
