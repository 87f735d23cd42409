"""Tools of the attack tests: hostile files built cheaply, peak memory of a child process, a real small disk.

* :func:`deflate_bomb_pt`: a torch checkpoint whose tensor record is deflated (torch reads that): ~1/1000 of the
  bytes it expands to.
* :func:`alias_bomb_catalog`: a catalog whose ``metrics`` nest YAML aliases (K keys referring K times each).
* :func:`peak_of`: runs Python code in a grandchild and returns its exit code, output and peak RSS
  (``resource.getrusage(RUSAGE_CHILDREN)`` of a wrapper that ran nothing else).
* :func:`small_fs`: a real tmpfs of a few KB (root only; the tests that need it skip elsewhere).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
_BLOCK = 1 << 22  # 4 MiB of zeros, deflated once and repeated


def _deflated_zeros(nbytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``nbytes`` zeros and its CRC-32. Each block ends with a full flush, which resets the
    window, so copies of one block concatenate into a valid stream: a 1 GB stream costs a few KB to build."""
    assert nbytes % _BLOCK == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(_BLOCK)) + comp.flush(zlib.Z_FULL_FLUSH)
    crc, zero = 0, bytes(_BLOCK)
    for _ in range(nbytes // _BLOCK):
        crc = zlib.crc32(zero, crc)
    return block * (nbytes // _BLOCK) + b"\x03\x00", crc  # 03 00: an empty final block


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive of ``(name, payload, method, crc, uncompressed size)`` members (sizes < 4 GiB: no zip64)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, payload, method, crc, usize in members:
        offset, raw = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), usize,
                              len(raw), 0) + raw + payload)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload),
                                  usize, len(raw), 0, 0, 0, 0, 0, offset) + raw)
    cd = central.getvalue()
    return out.getvalue() + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd),
                                             out.tell(), 0)


def deflate_bomb_pt(path: Path, numel: int, extra: dict | None = None) -> Path:
    """``torch.save({"w": zeros(numel), **extra})`` with the tensor's record deflated; ``numel`` a multiple of 2**20.

    torch reads deflated records as it reads stored ones, so loading the file allocates ``4 * numel`` bytes.
    """
    marker = 123457  # an element count whose BININT encoding occurs nowhere else in the pickle
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(marker), **(extra or {})}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    old, new = b"J" + struct.pack("<i", marker), b"J" + struct.pack("<i", numel)
    members = []
    for info in src.infolist():
        data = src.read(info)
        if info.filename.endswith("data.pkl"):
            assert data.count(old) == 2  # the storage's element count and the tensor's size
            data = data.replace(old, new)
        if info.filename.endswith("/data/0"):
            stream, crc = _deflated_zeros(numel * 4)
            members.append((info.filename, stream, zipfile.ZIP_DEFLATED, crc, numel * 4))
        else:
            members.append((info.filename, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    path.write_bytes(_zip(members))
    return path


def alias_bomb_catalog(path: Path, k: int) -> Path:
    """A one-entry catalog whose ``metrics`` nest YAML aliases three mappings deep (the most ``metrics`` allows):
    K keys, each the same K keys, each K numbers: ~K**3 values once expanded, a few bytes per alias on disk."""
    leaf = "&l0 {" + ", ".join(f"m{i}: 1" for i in range(k)) + "}"
    mid = "&l1 {a0: " + leaf + "".join(f", a{i}: *l0" for i in range(1, k)) + "}"
    top = "{b0: " + mid + "".join(f", b{i}: *l1" for i in range(1, k)) + "}"
    lines = ["schema: 1", "entries:", "  - name: bomb.demo", "    version: '1'",
             "    architecture: {encoder: resnet10, widths: [8, 16, 32, 64]}", "    parts: [encoder]",
             "    files: [{url: w.safetensors, sha256: null, format: safetensors}]",
             "    license: MIT", "    source: https://example.org", "    citation: none", "    metrics: " + top]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


_WRAPPER = """
import resource, subprocess, sys
cap = int(sys.argv[3])
limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
p = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True, timeout=float(sys.argv[2]),
                   preexec_fn=limit)
sys.stdout.write(p.stdout)
sys.stderr.write(p.stderr)
print(f"\\nPEAK_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} RC={p.returncode}")
"""


def peak_of(code: str, *, timeout: float = 120.0, env: dict | None = None,
            address_space_gb: float = 4.0) -> tuple[int, str, str, float]:
    """Run ``code`` in a fresh interpreter (a grandchild, so that this test process's other children do not count);
    returns ``(exit code, stdout, stderr, peak resident memory in MB)``.

    The grandchild's address space is limited to ``address_space_gb``, so that a regression fails the test with a
    MemoryError instead of exhausting a shared machine.
    """
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    cap = str(int(address_space_gb * (1 << 30)))
    p = subprocess.run([sys.executable, "-c", _WRAPPER, code, str(timeout), cap], capture_output=True, text=True,
                       env=full_env, cwd=REPO, timeout=timeout + 30)
    tail = p.stdout.rsplit("PEAK_KB=", 1)
    assert len(tail) == 2, p.stderr[-2000:]
    peak_kb, rc = tail[1].split()
    return int(rc.removeprefix("RC=")), tail[0], p.stderr, int(peak_kb) / 1024


def mount_works() -> bool:
    """Whether this process may mount a tmpfs (root, and a kernel and sandbox that allow it)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and Path("/proc/filesystems").is_file() \
        and "tmpfs" in Path("/proc/filesystems").read_text()


@contextlib.contextmanager
def small_fs(where: Path, size: str = "64k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` for the block (skips the test when mounting is not possible)."""
    where.mkdir(parents=True, exist_ok=True)
    if not mount_works():
        pytest.skip("a real full disk needs a tmpfs mount (root); not available here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
