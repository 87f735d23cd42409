"""Read torch files that pickle whole modules, without running anything from them.

TorchXRayVision (and much research code) saves ``torch.save(model)``: the pickle names the model's classes, and a
plain ``torch.load`` imports them and may run any other global the file names (``os.system`` included).
:func:`load_restricted` reads such a file with an unpickler whose only globals are:

* data: ``collections.OrderedDict``, ``builtins.set``, torch's tensor and parameter rebuild functions (replaced by
  inert records) and the typed storage classes (``torch.FloatStorage`` ...);
* module classes on an allow-list (:data:`MODULE_CLASSES`: torch.nn layers, TorchXRayVision's and torchvision's
  model classes). Each becomes an inert :class:`ModuleRecord` that only collects ``_parameters``, ``_buffers``,
  ``_modules`` and plain attributes; the real class is never imported.

Any other global is refused with :class:`UnsafePickleError` before it is called. Tensors are rebuilt from the raw
storage bytes, bounds-checked against their storage. Both torch formats are read: the zip archive (torch >= 1.6)
and the legacy stream (magic number, protocol, sys info, pickle, storage keys, raw storages).

Example:
    >>> import io, os, tempfile, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "m.pt"); torch.save(torch.nn.Linear(2, 1), p)
    >>> rec = load_restricted(p)
    >>> rec.qualname, sorted(rec.state_dict())
    ('torch.nn.modules.linear.Linear', ['bias', 'weight'])
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from medzoo.zoo.state import UnsafeWeightsError, check_archive

__all__ = ["MODULE_CLASSES", "ModuleRecord", "UnsafePickleError", "load_restricted"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy serialization magic number
_NN = "torch.nn.modules."
MODULE_CLASSES: dict[str, frozenset[str]] = {
    _NN + "container": frozenset({"Sequential", "ModuleList", "ModuleDict"}),
    _NN + "conv": frozenset({"Conv1d", "Conv2d", "Conv3d"}),
    _NN + "batchnorm": frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}),
    _NN + "activation": frozenset({"ReLU", "Sigmoid", "Softmax"}),
    _NN + "pooling": frozenset({"MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "MaxPool3d", "AvgPool3d"}),
    _NN + "linear": frozenset({"Linear", "Identity"}),
    _NN + "dropout": frozenset({"Dropout"}),
    _NN + "upsampling": frozenset({"Upsample"}),
    "torchxrayvision.models": frozenset({"DenseNet", "ResNet", "_DenseLayer", "_DenseBlock", "_Transition"}),
    "torchvision.models.resnet": frozenset({"ResNet", "BasicBlock", "Bottleneck"}),
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_PLAIN = (str, int, float, bool, type(None), bytes)


class UnsafePickleError(UnsafeWeightsError):
    """The file names a global outside the allow-list (or is malformed); nothing from it was run."""


class _Inert:
    """Objects the unpickler builds itself: no state can be set on them from the file."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to set state on a {type(self).__name__}; refused")


class _StorageRef(_Inert):
    """A typed storage: a flat tensor (filled later in the legacy format)."""

    __slots__ = ("flat",)

    def __init__(self, dtype: torch.dtype, numel: int) -> None:
        self.flat = torch.empty(numel, dtype=dtype)


class _StorageType(_Inert):
    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _TensorRef(_Inert):
    """A tensor view of a storage; :meth:`tensor` materialises it."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, _StorageRef):
            raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, expected a storage")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or min(stride, default=0) < 0:
            raise UnsafePickleError(f"malformed tensor: offset {offset!r}, size {size}, stride {stride}")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
        if last >= storage.flat.numel():
            raise UnsafePickleError(f"tensor of size {size} at offset {offset} overruns its storage of "
                                    f"{storage.flat.numel()} elements")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def tensor(self) -> torch.Tensor:
        return torch.as_strided(self.storage.flat, self.size, self.stride, self.offset).clone()


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and x >= 0 for x in v):
        raise UnsafePickleError(f"malformed tensor {what} {v!r}")
    return tuple(v)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"parameter rebuilt from a {type(data).__name__}, expected a tensor")
    return data


class ModuleRecord:
    """An inert stand-in for a pickled ``nn.Module``.

    Attributes:
        qualname: the pickled class (``module.Class``), e.g. ``torchxrayvision.models.DenseNet``.
        parameters, buffers: name -> tensor (``None`` entries dropped).
        children: name -> :class:`ModuleRecord`.
        attributes: the other plain attributes (str, numbers, bools, None, and lists/tuples of them, tensors).
    """

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.qualname}: module state is a {type(state).__name__}, expected a dict")
        self.parameters = _tensors(state.get("_parameters"), self.qualname)
        self.buffers = _tensors(state.get("_buffers"), self.qualname)
        children = state.get("_modules") or {}
        if not isinstance(children, dict) or not all(isinstance(m, (ModuleRecord, type(None)))
                                                     for m in children.values()):
            raise UnsafePickleError(f"{self.qualname}: _modules must map names to modules")
        self.children = {str(k): m for k, m in children.items() if m is not None}
        self.attributes = {k: v for k, v in state.items() if not k.startswith("_") and _is_plain(v)}

    def _finish(self, active: frozenset[int] = frozenset()) -> None:
        """Materialise tensors once every storage is filled (the legacy format reads storages after the pickle)."""
        if id(self) in active:
            raise UnsafePickleError(f"{self.qualname}: the module graph has a cycle")
        if self.__dict__.get("_done"):
            return  # a submodule shared by two parents is finished once
        self._done = True
        self.parameters = {k: v.tensor() for k, v in self.__dict__.get("parameters", {}).items()}
        self.buffers = {k: v.tensor() for k, v in self.__dict__.get("buffers", {}).items()}
        self.attributes = {k: _plain(v) for k, v in self.__dict__.get("attributes", {}).items()}
        self.children = self.__dict__.get("children", {})
        for child in self.children.values():
            child._finish(active | {id(self)})

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this module and its children, with dotted names (as ``nn.Module``)."""
        out = {prefix + k: v for k, v in {**self.parameters, **self.buffers}.items()}
        for name, child in self.children.items():
            out.update(child.state_dict(f"{prefix}{name}."))
        return out


def _tensors(d: Any, owner: str) -> dict[str, torch.Tensor]:
    if d is None:
        return {}
    if not isinstance(d, dict) or not all(isinstance(v, (_TensorRef, type(None))) for v in d.values()):
        raise UnsafePickleError(f"{owner}: parameters/buffers must map names to tensors")
    return {str(k): v for k, v in d.items() if v is not None}


def _is_plain(v: Any) -> bool:
    return isinstance(v, (*_PLAIN, _TensorRef)) or (isinstance(v, (list, tuple)) and all(map(_is_plain, v)))


def _plain(v: Any) -> Any:
    if isinstance(v, _TensorRef):
        return v.tensor()
    return type(v)(map(_plain, v)) if isinstance(v, (list, tuple)) else v


_RECORD_CLASSES: dict[tuple[str, str], type] = {}


def _record_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _RECORD_CLASSES:
        _RECORD_CLASSES[key] = type(name, (ModuleRecord,), {"qualname": f"{module}.{name}"})
    return _RECORD_CLASSES[key]


_DATA_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # protocol 2 names Python 3 builtins the Python 2 way
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """The allow-listed unpickler; ``storage`` turns a persistent id into a :class:`_StorageRef`."""

    def __init__(self, file: BinaryIO, source: str, storage: Any = None) -> None:
        super().__init__(file)
        self.source, self.storage = source, storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DATA_GLOBALS:
            return _DATA_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if name in MODULE_CLASSES.get(module, ()):
            return _record_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refused to load: the pickle references the global '{module}.{name}', which is not a "
            "tensor, a plain container or an allow-listed module class (nothing from the file was run)")

    def persistent_load(self, pid: Any) -> Any:
        if self.storage is not None and isinstance(pid, tuple) and pid and pid[0] == "storage":
            return self.storage(pid)
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module" and isinstance(pid[1], type):
            return pid[1]  # legacy format: a module class (already resolved through find_class) and its source
        raise UnsafePickleError(f"{self.source}: unexpected persistent id {str(pid)[:80]!r}")


def load_restricted(path: str | Path) -> Any:
    """Unpickle a torch file (zip or legacy format) with the allow-list; returns records, dicts and tensors.

    Returns:
        The saved object: a :class:`ModuleRecord` for a pickled module, a dict of tensors for a state dict (nested
        dicts, lists and plain values are returned as they are, with tensors materialised).

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: a global outside the allow-list, or a malformed tensor or storage.
        ValueError: not a torch file, truncated, or big-endian.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    check_archive(path)
    try:
        return _materialise(_load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path))
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable torch file (truncated or corrupt?): {exc}") from None


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.tensor()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(_materialise, obj))
    if isinstance(obj, ModuleRecord):
        obj._finish()
        return obj
    if isinstance(obj, _PLAIN):
        return obj
    raise UnsafePickleError(f"unexpected object of type {type(obj).__name__} in the file")


def _storage_pid(pid: tuple, source: str) -> tuple[_StorageType, str, int]:
    if len(pid) < 5 or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0:
        raise UnsafePickleError(f"{source}: malformed storage record {str(pid)[:80]!r}")
    return pid[1], str(pid[2]), pid[4]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """A member's bytes, refusing sizes no deflate stream can reach (a zip bomb); torch stores members uncompressed."""
    if info.file_size > 1100 * max(info.compress_size, 1):
        raise UnsafePickleError(f"{path}: member {info.filename} claims {info.file_size} bytes from "
                                f"{info.compress_size} compressed (refused)")
    return zf.read(info)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise ValueError(f"{path}: a torch zip file holds one data.pkl, found {pkls}")
        root = pkls[0][: -len("data.pkl")]
        if root + "byteorder" in zf.namelist() and zf.read(root + "byteorder").strip() != b"little":
            raise ValueError(f"{path}: big-endian torch files are not supported")
        storages: dict[str, _StorageRef] = {}

        def storage(pid: tuple) -> _StorageRef:
            kind, key, numel = _storage_pid(pid, str(path))
            if key not in storages:
                info = zf.getinfo(f"{root}data/{key}")
                nbytes = numel * torch.empty((), dtype=kind.dtype).element_size()
                if info.file_size != nbytes:
                    raise UnsafePickleError(f"{path}: storage {key} holds {info.file_size} bytes, expected {nbytes}")
                ref = _StorageRef(kind.dtype, numel)
                if numel:
                    ref.flat.copy_(torch.frombuffer(bytearray(_read_member(zf, info, path)), dtype=kind.dtype))
                storages[key] = ref
            return storages[key]

        data = _read_member(zf, zf.getinfo(pkls[0]), path)
        return _Unpickler(io.BytesIO(data), str(path), storage).load()


def _load_legacy(path: Path) -> Any:
    size = path.stat().st_size
    with open(path, "rb") as f:
        plain = lambda: _Unpickler(f, str(path)).load()  # noqa: E731  (no storages, no module classes needed)
        if plain() != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch file (neither a zip archive nor the legacy magic number)")
        plain()  # protocol version
        info = plain()
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise ValueError(f"{path}: big-endian or malformed legacy torch file")
        roots: dict[str, _StorageRef] = {}

        def storage(pid: tuple) -> _StorageRef:
            kind, key, numel = _storage_pid(pid, str(path))
            if numel * torch.empty((), dtype=kind.dtype).element_size() > size:
                raise UnsafePickleError(f"{path}: storage {key} claims {numel} elements, more than the file holds")
            roots.setdefault(key, _StorageRef(kind.dtype, numel))
            view = pid[5] if len(pid) > 5 else None
            if view is None:
                return roots[key]
            if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(x, int) for x in view[1:])
                    and 0 <= view[1] and view[1] + view[2] <= numel and view[2] >= 0):
                raise UnsafePickleError(f"{path}: malformed storage view {view!r}")
            _, offset, vsize = view
            sub = _StorageRef.__new__(_StorageRef)
            sub.flat = roots[key].flat[offset: offset + vsize]
            return sub

        obj = _Unpickler(f, str(path), storage).load()
        keys = plain()
        if not isinstance(keys, list):
            raise UnsafePickleError(f"{path}: the storage key list is a {type(keys).__name__}")
        for key in keys:
            _read_raw(f, roots.get(str(key)), str(key), path)
    return obj


def _read_raw(f: BinaryIO, ref: _StorageRef | None, key: str, path: Path) -> None:
    """One legacy storage: an int64 element count, then the raw little-endian bytes."""
    if ref is None:
        raise UnsafePickleError(f"{path}: storage key {key!r} was never referenced by a tensor")
    (numel,) = struct.unpack("<q", f.read(8))
    if numel != ref.flat.numel():
        raise UnsafePickleError(f"{path}: storage {key} holds {numel} elements, expected {ref.flat.numel()}")
    data = f.read(numel * ref.flat.element_size())
    if len(data) != numel * ref.flat.element_size():
        raise ValueError(f"{path}: truncated in storage {key}")
    if numel:
        ref.flat.copy_(torch.frombuffer(bytearray(data), dtype=ref.flat.dtype))

