"""The one writer (and reader) of export directories.

An export directory holds ``model.safetensors`` (weights), ``config.yaml`` (what rebuilds the model),
``metadata.json`` (the weights spec: architecture, parts, tasks, preprocessing, files with sha256, versions) and
``README.md`` (a model card). It is written into a temporary folder beside the target and renamed into place, so a
crash never leaves a half-written export that looks complete. Its folders and files get the permissions the umask
gives new ones (0755 / 0644 under the usual 022), so a published folder is readable by others; ``overwrite``
replaces only a folder that is an export already, or an empty one.

Example:
    >>> import tempfile, torch
    >>> d = write_export_dir(tempfile.mkdtemp() + "/exp", state_dict={"w": torch.ones(2)},
    ...                      config={"encoder": {"name": "resnet10"}}, metadata={"name": "demo", "parts": ["encoder"]},
    ...                      validate=False)
    >>> state, config, meta = read_export_dir(d)
    >>> state["w"].tolist(), meta["files"][0]["url"]
    ([1.0, 1.0], 'model.safetensors')
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import monai
import torch
import yaml
from safetensors.torch import load_file, save

from medzoo.utils.jsonio import dumps_strict
from medzoo.version import __version__
from medzoo.zoo.download import sha256_file  # one hashing routine for the zoo
from medzoo.zoo.spec import WeightsSpec

__all__ = ["WEIGHTS_FILE", "CONFIG_FILE", "METADATA_FILE", "CARD_FILE", "write_export_dir", "read_export_dir",
           "sha256_file", "runtime_versions", "is_export_dir", "apply_umask", "check_replaceable", "replace_dir"]

log = logging.getLogger(__name__)

WEIGHTS_FILE, CONFIG_FILE, METADATA_FILE, CARD_FILE = "model.safetensors", "config.yaml", "metadata.json", "README.md"


def runtime_versions() -> dict[str, str]:
    """Versions of medzoo, torch and monai, recorded in every export."""
    return {"medzoo": __version__, "torch": torch.__version__.split("+")[0], "monai": monai.__version__}


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder holding an export's weights and config."""
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file()


def apply_umask(*paths: str | Path) -> None:
    """Give ``paths`` (and everything below a folder) the permissions the umask gives new files and folders.

    Temporary folders and some writers create private (0700 / 0600) entries; an export is meant to be shared.
    """
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it; restored at once
    os.umask(mask)
    for top in map(Path, paths):
        entries = [top, *top.rglob("*")] if top.is_dir() else [top]
        for entry in entries:
            if not entry.is_symlink():
                entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


def check_replaceable(path: str | Path, recognised: Callable[[Path], bool], what: str) -> None:
    """Raise ``FileExistsError`` unless ``path`` is an empty folder or ``recognised(path)``.

    ``--force`` replaces an earlier export; it must never delete a folder that holds anything else.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and (recognised(path) or not any(path.iterdir())):
        return
    raise FileExistsError(f"{path}: exists and is not {what} or an empty folder, so overwrite/--force leaves it "
                          "alone; choose another output path or remove it yourself")


def write_export_dir(out_dir: str | Path, *, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                     metadata: dict[str, Any], model_card: str | None = None, overwrite: bool = False,
                     validate: bool = True) -> Path:
    """Write an export directory atomically.

    Args:
        out_dir: the target folder; it must not exist unless ``overwrite``.
        state_dict: the weights (encoder-only exports keep bare encoder key names, as MONAI's and MedicalNet's
            files do).
        config: the model config that rebuilds the model (``create_model(out_dir)``).
        metadata: the weights spec; ``files`` (sha256 and size of the weights and of ``config.yaml``, so that an
            edited config is refused like edited weights) and ``versions`` are filled in here.
        model_card: README text; a card is generated from the metadata when None.
        overwrite: replace an existing export folder (or an empty folder); any other folder is refused.
        validate: check the metadata against :class:`medzoo.zoo.spec.WeightsSpec` before writing.

    Returns:
        The export folder.

    Raises:
        OSError: a write failed (a full disk included); the message names the export folder.
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists (pass overwrite=True / --force to replace it)")
        check_replaceable(out, is_export_dir, "a medzoo export folder (model.safetensors and config.yaml)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        # Serialised in memory, then written: safetensors' own writer reports a full disk as a SafetensorError.
        (tmp / WEIGHTS_FILE).write_bytes(save(tensors, metadata={"format": "pt"}))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        meta = dict(metadata)
        part = "encoder" if list(meta.get("parts", [])) == ["encoder"] else "all"
        meta["files"] = [_file_entry(tmp / WEIGHTS_FILE, "safetensors", part),
                         _file_entry(tmp / CONFIG_FILE, "yaml", "config")]
        meta.setdefault("versions", runtime_versions())
        if validate:
            WeightsSpec.from_dict(meta, where=str(out / METADATA_FILE))  # exports and the catalog share one schema
        (tmp / METADATA_FILE).write_text(dumps_strict(meta, flag=None, indent=2, sort_keys=False) + "\n")
        (tmp / CARD_FILE).write_text(model_card if model_card is not None else model_card_text(meta))
        apply_umask(tmp)
        replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing the export)", str(out)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote export %s (%d tensors)", out, len(state_dict))
    return out


def _file_entry(path: Path, fmt: str, part: str) -> dict[str, Any]:
    return {"url": path.name, "sha256": sha256_file(path), "size": path.stat().st_size, "format": fmt, "part": part}


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing what is there (checked by the caller)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_export_dir(path: str | Path, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read ``(state_dict, config, metadata)`` from an export folder, checking the weights' sha256 by default."""
    p = Path(path)
    if not is_export_dir(p):
        raise FileNotFoundError(f"{p}: not an export directory (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
    meta = _parse(p / METADATA_FILE, json.loads) if (p / METADATA_FILE).is_file() else {}
    if verify:
        files = meta.get("files") if isinstance(meta.get("files"), list) else []
        for name in (WEIGHTS_FILE, CONFIG_FILE):  # exports made before config.yaml was hashed list the weights only
            expected = next((f.get("sha256") for f in files if isinstance(f, dict) and f.get("url") == name), None)
            actual = sha256_file(p / name)
            if expected and expected != actual:
                raise ValueError(f"{p / name}: sha256 {actual} does not match metadata.json ({expected})")
    config = _parse(p / CONFIG_FILE, yaml.safe_load, empty_ok=True)
    try:
        state = load_file(str(p / WEIGHTS_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for a bad header
        raise ValueError(f"{p / WEIGHTS_FILE}: not a valid safetensors file ({exc})") from None
    return state, config, meta


def _parse(path: Path, loads: Any, empty_ok: bool = False) -> dict:
    """Parse a JSON / YAML file of an export into a dict; corrupt content is a ValueError naming the file."""
    try:
        obj = loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot parse ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if obj is None and empty_ok:
        return {}
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(obj).__name__}")
    return obj


def model_card_text(meta: dict[str, Any]) -> str:
    """A README model card generated from the metadata."""
    arch = meta.get("architecture", {})
    lines = [f"# {meta.get('name', 'medzoo model')}", "", meta.get("description", ""), "", "## Architecture", ""]
    lines += [f"- {k}: {v}" for k, v in arch.items()]
    lines += ["", f"Parts: {', '.join(meta.get('parts', []))}", "", "## Tasks", ""]
    for task, spec in (meta.get("tasks") or {}).items():
        lines.append(f"- `{task}`: {spec.get('type', '?')}, labels {spec.get('labels', spec.get('num_classes', '-'))}")
    lines += ["", "## Preprocessing", "", "```", yaml.safe_dump(meta.get("preprocessing", {})).strip(), "```", ""]
    lines += ["## License and source", "", f"- license: {meta.get('license', 'unknown')}",
              f"- source: {meta.get('source', 'unknown')}", "", "## How to load", "", "```python", "import medzoo",
              "model = medzoo.create_model('path/to/this/folder')", "```", ""]
    return "\n".join(lines)
