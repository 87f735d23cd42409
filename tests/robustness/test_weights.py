"""Hostile and broken weight files: pickled code, tampered safetensors, wrong dtypes, another architecture, hash
mismatches and size lies from the server.

A weight file must never run code: each pickle payload below would write a marker file when unpickled, and every
test asserts that the marker was never written.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medzoo.encoders import create_encoder
from medzoo.zoo.download import DownloadError, IntegrityError, cache_path, download
from medzoo.zoo.export import WEIGHTS_FILE, read_export_dir, write_export_dir
from medzoo.zoo.medicalnet import from_medicalnet, load_medicalnet
from medzoo.zoo.spec import FileSpec
from medzoo.zoo.state import UnsafeWeightsError, load_state_with_report, read_weights
from tests.helpers import TINY_WIDTHS
from tests.robustness.tally import case

CATEGORY = "weights"
PAYLOADS = ["open", "system", "exec", "eval", "write_text", "copyfile"]


class _Payload:
    """Unpickling this object calls ``self.how`` with arguments that create ``self.marker``."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, str(marker)

    def __reduce__(self):  # noqa: D105
        m = self.marker
        if self.how == "open":
            return builtins.open, (m, "w")
        if self.how == "system":
            return os.system, (f"touch {m}",)
        if self.how == "exec":
            return builtins.exec, (f"open({m!r}, 'w').write('pwned')",)
        if self.how == "eval":
            return builtins.eval, (f"open({m!r}, 'w')",)
        if self.how == "write_text":
            return Path.write_text, (Path(m), "pwned")
        return shutil.copyfile, (__file__, m)


def _write_payload(path: Path, how: str, marker: Path, container: str, legacy: bool) -> None:
    evil = _Payload(how, marker)
    obj = {"conv1.weight": torch.zeros(2, 1, 3, 3, 3), "evil": evil}
    if container == "state_dict":
        obj = {"state_dict": obj, "epoch": 3}
    elif container == "list":
        obj = [torch.ones(1), evil]
    if container == "raw-pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


@given(how=st.sampled_from(PAYLOADS), container=st.sampled_from(["flat", "state_dict", "list", "raw-pickle"]),
       legacy=st.booleans(), suffix=st.sampled_from([".pt", ".pth", ".bin", ".ckpt"]),
       entry=st.sampled_from(["read_weights", "load_medicalnet", "from_medicalnet"]))
def test_pickle_payload_never_runs(how: str, container: str, legacy: bool, suffix: str, entry: str,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("pickle")
    marker, path = d / "PWNED", d / f"weights{suffix}"
    _write_payload(path, how, marker, container, legacy)
    assert not marker.exists()
    with case(CATEGORY, "pickle payloads (__reduce__ writing a file) in .pt/.pth/.bin/.ckpt"):
        with pytest.raises(UnsafeWeightsError) as info:
            if entry == "read_weights":
                read_weights(path)
            elif entry == "load_medicalnet":
                load_medicalnet(create_encoder("resnet10", widths=TINY_WIDTHS), path)
            else:
                from_medicalnet(path)
        assert str(path) in str(info.value)
        assert not marker.exists(), f"{how} payload ran"


def _safetensors(tensors: dict[str, torch.Tensor], tmp: Path) -> tuple[dict, bytes]:
    from safetensors.torch import save_file

    save_file(tensors, str(tmp))
    data = tmp.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _pack(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


HEADER_EDITS = ["dtype", "shape", "offsets", "drop_entry", "junk_json", "length_field", "metadata", "extra_entry"]


@given(edit=st.sampled_from(HEADER_EDITS), dtype=st.sampled_from(["F64", "F16", "I8", "BOOL", "U64", "XX", "", "F32"]),
       dims=st.lists(st.integers(-2, 10**6), max_size=4), a=st.integers(-5, 10**7), b=st.integers(-5, 10**7))
def test_tampered_safetensors_header(edit: str, dtype: str, dims: list[int], a: int, b: int,
                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("st")
    original = {"conv1.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), "bn.bias": torch.ones(5)}
    header, body = _safetensors(original, d / "ok.safetensors")
    entry = header["conv1.weight"]
    raw: bytes | None = None
    if edit == "dtype":
        entry["dtype"] = dtype
    elif edit == "shape":
        entry["shape"] = dims
    elif edit == "offsets":
        entry["data_offsets"] = [a, b]
    elif edit == "drop_entry":
        del header["bn.bias"]
    elif edit == "extra_entry":
        header["ghost"] = {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}
    elif edit == "metadata":
        header["__metadata__"] = {"format": dims}
    raw = _pack(header, body)
    if edit == "junk_json":
        raw = raw[:8] + b"[" + raw[9:] if a % 2 else raw[:20] + b"\xff" + raw[21:]
    elif edit == "length_field":
        raw = struct.pack("<Q", max(0, a) * 1000 + 1) + raw[8:]
    path = d / "t.safetensors"
    path.write_bytes(raw)
    with case(CATEGORY, "safetensors with a tampered header (dtype, shape, offsets, length, JSON)"):
        try:
            got = read_weights(path)
        except ValueError as err:
            assert str(path) in str(err)
            return
        # Whatever loads is exactly what the header declares, inside the file (or the untouched original).
        for key, t in got.items():
            assert list(t.shape) == header[key]["shape"]
            start, end = header[key]["data_offsets"]
            assert 0 <= start <= end <= len(body) and end - start == t.numel() * t.element_size()


def test_integer_weights_are_not_cast_into_a_float_model(tmp_path: Path) -> None:
    """Regression: int64 (or bool) tensors for float parameters were silently cast by load_state_with_report."""
    enc = create_encoder("resnet10", widths=TINY_WIDTHS)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    state["layer1.0.conv1.weight"] = torch.ones_like(state["layer1.0.conv1.weight"], dtype=torch.int64)
    with case(CATEGORY, "wrong dtypes: integer / bool tensors for float parameters"):
        with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*int64"):
            load_state_with_report(enc, state, source="ints.safetensors")
        state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].bool()
        with pytest.raises(ValueError, match="bool"):
            load_state_with_report(enc, state, source="bools.safetensors")
    with case(CATEGORY, "float16 / float64 weights load as float32 (documented adaptation)"):
        state = {k: (v.double() if v.is_floating_point() else v) for k, v in enc.state_dict().items()}
        load_state_with_report(create_encoder("resnet10", widths=TINY_WIDTHS), state, source="f64")


@pytest.mark.parametrize("file_arch,model_arch", [("resnet18", "resnet10"), ("resnet10", "resnet34"),
                                                  ("resnet50", "resnet18"), ("resnet10", "resnet10-wide")])
def test_checkpoint_for_another_architecture(file_arch: str, model_arch: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(create_encoder(file_arch, widths=TINY_WIDTHS).state_dict(), str(tmp_path / "w.safetensors"))
    widths = (16, 32, 64, 128) if model_arch.endswith("-wide") else TINY_WIDTHS
    model = create_encoder(model_arch.removesuffix("-wide"), widths=widths)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with case(CATEGORY, "a checkpoint for another architecture (depth, block, widths)"):
        with pytest.raises(ValueError, match="architecture mismatch") as info:
            load_medicalnet(model, tmp_path / "w.safetensors")
        assert str(tmp_path / "w.safetensors") in str(info.value)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "model changed by a failed load"
    with case(CATEGORY, "a checkpoint for another architecture (depth, block, widths)"):
        with pytest.raises(ValueError, match="has shape|missing"):
            load_state_with_report(model, read_weights(tmp_path / "w.safetensors"), source="w.safetensors")


def test_state_dict_of_something_else(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, tmp_path / "mlp.pt")
    torch.save({"conv1.weight": "not a tensor"}, tmp_path / "str.pt")
    with case(CATEGORY, "a checkpoint for another architecture (depth, block, widths)"):
        with pytest.raises(ValueError, match="not a MedicalNet"):
            from_medicalnet(tmp_path / "mlp.pt")
        with pytest.raises(ValueError, match="'conv1.weight' is a str"):
            from_medicalnet(tmp_path / "str.pt")


def test_export_dir_hash_mismatch(tmp_path: Path) -> None:
    out = write_export_dir(tmp_path / "exp", state_dict={"w": torch.arange(6.0)}, config={"a": 1},
                           metadata={"name": "x", "parts": ["all"]}, validate=False)
    data = bytearray((out / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01  # one bit of the last float
    (out / WEIGHTS_FILE).write_bytes(bytes(data))
    with case(CATEGORY, "hash mismatch (export folder, download, cached copy)"):
        with pytest.raises(ValueError, match="sha256"):
            read_export_dir(out)


def _pinned(url: str, data: bytes, **kw) -> FileSpec:
    return FileSpec(url=url, sha256=hashlib.sha256(data).hexdigest(), size=len(data), format="safetensors", **kw)


DATA = bytes(range(256)) * 97


def test_download_hash_mismatch_leaves_nothing(http_server) -> None:
    url = http_server.add("w.bin", DATA[:-1] + b"\x00")
    spec = _pinned(url, DATA)
    dest = cache_path(None, spec)
    with case(CATEGORY, "hash mismatch (export folder, download, cached copy)"):
        with pytest.raises(IntegrityError, match="sha256"):
            download(spec, progress=False)
        assert not dest.exists() and not list(dest.parent.glob("w.bin.part*"))


def test_tampered_cached_copy_is_fetched_again(http_server) -> None:
    spec = _pinned(http_server.add("w.bin", DATA), DATA)
    path = download(spec, progress=False)
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0xFF
    path.write_bytes(bytes(raw))  # same size: only the hash tells
    with case(CATEGORY, "hash mismatch (export folder, download, cached copy)"):
        assert download(spec, progress=False).read_bytes() == DATA
        assert http_server.count("w.bin") == 2


@pytest.mark.parametrize("lie", ["declares_more", "declares_less", "catalog_smaller", "no_length_sends_more"])
def test_size_lie_from_the_server(lie: str, http_server) -> None:
    body = DATA + (b"extra" * 100 if lie == "no_length_sends_more" else b"")
    url = http_server.add("w.bin", body)
    spec = _pinned(url, DATA)
    if lie == "declares_more":
        http_server.switches.declared_length = len(DATA) + 4096
    elif lie == "declares_less":
        http_server.switches.declared_length = len(DATA) - 4096
    elif lie == "catalog_smaller":
        spec = FileSpec(url=url, sha256=spec.sha256, size=len(DATA) - 10, format="safetensors")
    else:
        http_server.switches.omit_length = True
    dest = cache_path(None, spec)
    with case(CATEGORY, "size lies from the server (Content-Length, body, catalog)"):
        with pytest.raises(DownloadError) as info:
            download(spec, progress=False, retries=2)
        assert "bytes" in str(info.value)
        assert not dest.exists(), "a file that failed its size check was kept"
        assert not list(dest.parent.glob("w.bin.part")), "bytes that failed a check were kept for resuming"


@pytest.fixture(scope="module")
def medicalnet_state() -> dict[str, torch.Tensor]:
    return create_encoder("resnet10", widths=TINY_WIDTHS, output_stride=8).state_dict()


@given(op=st.sampled_from(["delete", "reshape", "scalar", "int", "half"]), pick=st.integers(0, 10_000),
       dims=st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_damaged_medicalnet_state(op: str, pick: int, dims: list[int], medicalnet_state: dict,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """One tensor deleted, reshaped, made 0-d or retyped: a ValueError naming the file, or a complete load."""
    state = dict(medicalnet_state)
    key = sorted(state)[pick % len(state)]
    if op == "delete":
        del state[key]
    elif op == "reshape":
        state[key] = torch.zeros(*dims)
    elif op == "scalar":
        state[key] = torch.tensor(1.0)
    elif op == "int":
        state[key] = state[key].to(torch.int32)
    else:
        state[key] = state[key].half()
    path = tmp_path_factory.mktemp("mn") / "w.pt"
    torch.save(state, path)
    with case(CATEGORY, "MedicalNet checkpoint with one tensor deleted / reshaped / 0-d / retyped"):
        try:
            model = from_medicalnet(path)
        except ValueError as err:
            assert str(path) in str(err)
            return
        loaded = model.encoder.state_dict()
        for k, v in state.items():
            if k in loaded and v.is_floating_point():
                torch.testing.assert_close(loaded[k], v.to(loaded[k].dtype), rtol=0, atol=0)


def test_medicalnet_missing_stage_key_regression(medicalnet_state: dict, tmp_path: Path) -> None:
    """Regression: a missing layer4.0.conv1.weight raised KeyError; a 0-d layer3.0.conv1.weight IndexError."""
    for key, value in (("layer4.0.conv1.weight", None), ("layer3.0.conv1.weight", torch.tensor(1.0))):
        state = dict(medicalnet_state)
        if value is None:
            del state[key]
        else:
            state[key] = value
        torch.save(state, tmp_path / "w.pt")
        with case(CATEGORY, "MedicalNet checkpoint with one tensor deleted / reshaped / 0-d / retyped"):
            with pytest.raises(ValueError, match=key.replace(".", r"\.")):
                from_medicalnet(tmp_path / "w.pt")
