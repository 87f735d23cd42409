"""Small files that declare huge allocations, written fast, and a child-process runner that measures peak memory.

The deflate streams are genuine (every byte of the declared size comes out, every checksum is right) but built
without compressing gigabytes: after ``Z_FULL_FLUSH`` the compressor starts from an empty state, so one compressed
block of fill bytes is byte-identical each time and is repeated; the trailer's CRC-32 / Adler-32 is computed over
the whole expansion.

:func:`spawn` runs an attack in a child and :func:`wait_measured` returns its exit code, output and peak resident
memory: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken by a bare launcher whose only child is the attack
(so it covers the attack and the processes it waited for, such as DataLoader workers). Several run side by side.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[2]
GB = 10**9


def deflated(head: bytes, fill: bytes, count: int, container: str) -> bytes:
    """A ``zlib`` or ``gzip`` stream of ``head`` followed by ``count`` copies of the byte ``fill``."""
    wbits = {"zlib": zlib.MAX_WBITS, "gzip": 16 + zlib.MAX_WBITS}[container]
    co = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = fill * min(count, 1 << 22)
    n, rest = divmod(count, len(block))
    start = co.compress(head) + co.flush(zlib.Z_FULL_FLUSH)
    body = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.compress(fill * rest) + co.flush(zlib.Z_FULL_FLUSH) if rest else b""
    check = zlib.crc32 if container == "gzip" else zlib.adler32
    value = check(head, 0 if container == "gzip" else 1)
    for _ in range(n):
        value = check(block, value)
    value = check(fill * rest, value)
    size = len(head) + count
    trailer = struct.pack("<II", value, size & 0xFFFFFFFF) if container == "gzip" else struct.pack(">I", value)
    return start + body * n + tail + b"\x03\x00" + trailer  # b"\x03\x00": the final, empty fixed-Huffman block


def expanded_size(data: bytes, container: str) -> int:
    """How many bytes ``data`` decompresses to, counted in bounded chunks (zlib checks the trailer at the end)."""
    d = zlib.decompressobj(zlib.MAX_WBITS + (16 if container == "gzip" else 0))
    total, buf = 0, data
    while buf:
        total += len(d.decompress(buf, 1 << 24))
        buf = d.unconsumed_tail
    total += len(d.flush())
    assert d.eof, "the stream does not end"
    return total


def nifti_gz_bomb(path: Path, shape: tuple[int, ...] = (1024, 1024, 1024), extra: int = 0) -> Path:
    """The audit's ``.nii.gz``: a uint8 header declaring ``shape``, then zeros (``extra`` more than declared)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    header.set_sform(np.eye(4), code=1)
    path.write_bytes(deflated(header.binaryblock + b"\0" * 4, b"\0", int(np.prod(shape)) + extra, "gzip"))
    return path


def png_bomb(path: Path, width: int, height: int, mode: str = "RGBA") -> Path:
    """An all-zero 8-bit PNG (``L`` or ``RGBA``): each row is a filter byte 0 and zeros, so the stream is zeros."""
    channels, color_type = {"L": (1, 0), "RGBA": (4, 6)}[mode]
    idat = deflated(b"", b"\0", height * (1 + width * channels), "zlib")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def csv_gz_bomb(path: Path, header: str, newlines: int = 100 << 20) -> Path:
    """A ``.csv.gz`` listing: a header line, then ``newlines`` line breaks (100 MB in about 100 KB)."""
    path.write_bytes(deflated(header.encode() + b"\n", b"\n", newlines, "gzip"))
    return path


def sparse_npy(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A ``.npy`` declaring ``shape`` whose data is a hole: no disk used, yet ``np.load`` maps it whole."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


@dataclass
class Measured:
    """A finished child: exit code, stdout and stderr text, and its peak resident memory in bytes."""

    returncode: int
    stdout: str
    stderr: str
    maxrss: int


# The attack runs as the grandchild of the test, under a bare Python launcher: a child's ru_maxrss starts at the RSS of
# the process that forked it (Linux keeps the pre-exec high-water mark), so forking straight from a test process
# that holds torch would add its few hundred MB to every figure.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def spawn(argv: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python argv...`` (the repository importable) under the launcher; output goes to files under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    with open(out / "stdout", "wb") as so, open(out / "stderr", "wb") as se:
        return subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(out / "maxrss"), sys.executable, *argv],
                                env=full, cwd=out, stdout=so, stderr=se, start_new_session=True)


def wait_measured(proc: subprocess.Popen, out: Path, timeout: float = 300.0) -> Measured:
    """Wait for a :func:`spawn` ed attack (killing its process group after ``timeout`` seconds)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rss = out / "maxrss"
    return Measured(proc.returncode, (out / "stdout").read_text(errors="replace"),
                    (out / "stderr").read_text(errors="replace"),
                    int(rss.read_text()) * 1024 if rss.is_file() else -1)  # ru_maxrss is in KiB on Linux
