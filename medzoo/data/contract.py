"""The preprocessing contract: what a model's input must look like, typed, complete and stated explicitly.

One :class:`Preprocessing` describes one input kind (``volume``, ``image`` or ``series``). A model maps each kind it
reads to its contract (``{"volume": Preprocessing(...), "image": ...}``); a training checkpoint records the contracts
its run used, an export writes them to ``metadata.json``, a catalog entry declares them, and
:func:`medzoo.data.pipeline.build_transforms` turns a contract into the one MONAI transform chain that training,
evaluation and prediction share. The steps, in the order they run:

1. ``rescale``: ``max_value`` divides by the file's maximum value (255, 65535, DICOM ``2**BitsStored - 1``), giving
   [0, 1]; ``channels``: RGB is averaged to grey, then replicated to ``channels``.
2. ``orientation`` (axis codes such as ``RAS``) and ``spacing`` (mm per axis of the network input), volumes only.
3. ``axes``: the network input's axis order. ``XYZ``: the array axes after reorientation (MONAI's convention, medzoo's
   CT models); ``DHW``: D is the slice axis, ``[X, Y, Z] -> [Z, Y, X]`` (MedicalNet); ``HW`` for 2-D images.
4. ``crop``: ``foreground`` (the box of voxels that differ from ``volume[0, 0, 0]``, as MedicalNet's training code
   cuts it, its end index exclusive) or ``square`` (centre square, TorchXRayVision). ``crop_predict: false`` crops in
   training only (MedicalNet's test code resizes the whole volume).
5. ``size_mode: resize``: the (cropped) input is resized to ``input_size`` (``resize: nearest`` is
   ``scipy.ndimage.zoom(order=0)``, ``linear`` bi/trilinear with antialiasing when 2-D shrinks).
6. intensity: ``intensity_window`` clips; ``normalisation`` is ``none``, ``window`` (window -> [0, 1]), ``zscore``,
   ``zscore_nonzero`` (statistics over voxels > 0; ``background`` then fills voxels that are 0 with ``noise`` N(0, 1)
   seeded from the input, ``zero``, or ``keep`` their z-score), ``minmax``, ``meanstd`` (window -> [0, 1], then
   ``(x - mean[c]) / std[c]``) or ``linear`` (window -> ``value_range``).
7. ``size_mode: patch``: the model was trained on ``input_size`` patches (centre crop or zero pad); prediction pads a
   smaller input to it and slides windows of it over a larger one.

A contract without ``axes`` is the earlier flat format; :func:`migrate_legacy` reads it (documented in
``docs/PREPROCESSING.md``).

Example:
    >>> c = Preprocessing.from_dict({"modality": ["CT"], "axes": "XYZ", "orientation": "RAS",
    ...                              "spacing": [1.5, 1.5, 1.5], "normalisation": "window",
    ...                              "intensity_window": [-1000, 400], "input_size": [96, 96, 96]})
    >>> c.dims, c.size_mode, c.output_range
    (3, 'patch', (0.0, 1.0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medzoo.utils.spec_checks import SpecError, _bool, _Ctx, _int, _mapping, _mean_std, _num, _plain, _seq, _str

__all__ = ["AXES", "BACKGROUNDS", "CROPS", "KINDS", "NORMALISATIONS", "RESCALES", "RESIZES", "SIZE_MODES",
           "Preprocessing", "SpecError", "contract_for", "migrate_legacy", "parse_preprocessing",
           "preprocessing_to_dict"]

KINDS = ("volume", "image", "series")
AXES = ("XYZ", "DHW", "HW")
NORMALISATIONS = ("none", "window", "zscore", "zscore_nonzero", "minmax", "meanstd", "linear")
RESCALES = ("none", "max_value")
BACKGROUNDS = ("keep", "noise", "zero")
CROPS = ("none", "foreground", "square")
SIZE_MODES = ("patch", "resize")
RESIZES = ("linear", "nearest")
_AXCODES = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclass(frozen=True)
class Preprocessing:
    """The input contract of one input kind (see the module docstring for the order of the steps).

    Attributes:
        modality: imaging modalities, e.g. ``("CT",)`` or ``("CXR",)``.
        axes: ``XYZ`` or ``DHW`` (3-D; D is the slice axis) or ``HW`` (2-D).
        normalisation: one of :data:`NORMALISATIONS`.
        orientation: axis codes (``RAS``) the volume is reoriented to; ``None`` keeps the file's.
        spacing: mm per axis of the network input (``axes`` order); ``None`` keeps the file's.
        rescale: ``max_value`` (divide by the file's maximum value) or ``none``.
        channels: input channels of the network; grey images are replicated to it.
        intensity_window: ``(low, high)`` clip (HU for CT; [0, 1] after ``rescale``).
        value_range: ``linear`` only: the ``(low, high)`` the window maps onto.
        mean, std: ``meanstd`` only: per-channel statistics (one value, or one per channel).
        background: ``zscore_nonzero`` only: ``noise``, ``zero`` or ``keep`` for voxels that are 0.
        crop: ``none``, ``foreground`` or ``square``; ``crop_predict``: crop at prediction time too.
        input_size: spatial size (``axes`` order) the model was trained at.
        size_mode: ``patch`` (crop/pad, sliding windows) or ``resize`` (the whole input resized to ``input_size``).
        resize: ``linear`` or ``nearest`` (``size_mode: resize`` only).
        notes: free text.
    """

    modality: tuple[str, ...]
    axes: str
    normalisation: str = "none"
    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    rescale: str = "none"
    channels: int = 1
    intensity_window: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    background: str = "keep"
    crop: str = "none"
    crop_predict: bool = True
    input_size: tuple[int, ...] | None = None
    size_mode: str = "patch"
    resize: str | None = None
    notes: str | None = None

    @property
    def dims(self) -> int:
        """2 for ``HW`` contracts, 3 for volumes."""
        return 2 if self.axes == "HW" else 3

    @property
    def output_range(self) -> tuple[float, float] | None:
        """The range of the network input the contract guarantees, when it bounds one."""
        if self.normalisation == "window":
            return (0.0, 1.0)
        if self.normalisation == "linear":
            return self.value_range
        return None

    @classmethod
    def from_dict(cls, d: Any, ctx: _Ctx | str = "preprocessing") -> Preprocessing:
        """Validate ``d`` (migrating the earlier flat format, see :func:`migrate_legacy`) into a contract.

        Raises:
            SpecError: naming the entry and key of the first problem.
        """
        ctx = _Ctx(ctx) if isinstance(ctx, str) else ctx
        if isinstance(d, Mapping) and "axes" not in d:
            d = migrate_legacy(_mapping(dict(d), ctx, _LEGACY_KEYS, {"modality", "normalisation"}), ctx)
        d = _mapping(d, ctx, {f.name for f in dataclasses.fields(cls)}, {"modality", "axes"})
        axes = _str(d["axes"], ctx.sub("axes"), choices=AXES)
        dims = 2 if axes == "HW" else 3
        norm = _str(d.get("normalisation", "none"), ctx.sub("normalisation"), choices=NORMALISATIONS)
        modality = (d["modality"],) if isinstance(d["modality"], str) else d["modality"]
        out = cls(
            modality=_seq(modality, ctx.sub("modality"), lambda x, c: _str(x, c)), axes=axes, normalisation=norm,
            orientation=_orientation(d.get("orientation"), dims, ctx.sub("orientation")),
            spacing=_sizes(d.get("spacing"), dims, ctx.sub("spacing"), _positive),
            rescale=_str(d.get("rescale", "none"), ctx.sub("rescale"), choices=RESCALES),
            channels=_int(d.get("channels", 1), ctx.sub("channels"), minimum=1),
            intensity_window=_window(d, norm, ctx), value_range=_value_range(d, norm, ctx),
            background=_str(d.get("background", "keep"), ctx.sub("background"), choices=BACKGROUNDS),
            crop=_str(d.get("crop", "none"), ctx.sub("crop"), choices=CROPS),
            crop_predict=_bool(d.get("crop_predict", True), ctx.sub("crop_predict")) is not False,
            input_size=_sizes(d.get("input_size"), dims, ctx.sub("input_size"), lambda x, c: _int(x, c, minimum=1)),
            size_mode=_str(d.get("size_mode", "patch"), ctx.sub("size_mode"), choices=SIZE_MODES),
            resize=_str(d.get("resize"), ctx.sub("resize"), choices=RESIZES, optional=True),
            notes=_str(d.get("notes"), ctx.sub("notes"), optional=True), **_stats(d, norm, ctx),
        )
        return out._checked(ctx)

    def _checked(self, ctx: _Ctx) -> Preprocessing:
        if self.background != "keep" and self.normalisation != "zscore_nonzero":
            raise ctx.sub("background").fail(f"only normalisation 'zscore_nonzero' fills a background, this "
                                             f"contract's is {self.normalisation!r}")
        if self.crop == "square" and self.dims != 2:
            raise ctx.sub("crop").fail("'square' crops 2-D images; a volume contract (axes XYZ/DHW) cannot use it")
        if self.size_mode == "resize" and self.input_size is None:
            raise ctx.sub("input_size").fail("size_mode 'resize' resizes to input_size; give it")
        if self.resize is not None and self.size_mode != "resize":
            raise ctx.sub("resize").fail("an interpolation is only used with size_mode 'resize'")
        if self.mean is not None and len(self.mean) not in (1, self.channels):
            raise ctx.sub("mean").fail(f"expected 1 or {self.channels} (channels) values, got {len(self.mean)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every field stated (``from_dict(c.to_dict()) == c``)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> Preprocessing:
        """A validated copy with some fields changed (unknown fields are a :class:`SpecError`)."""
        return Preprocessing.from_dict({**self.to_dict(), **_plain(changes)}, "preprocessing")


def _positive(x: Any, ctx: _Ctx) -> float:
    v = _num(x, ctx)
    if v <= 0:
        raise ctx.fail(f"expected a number > 0, got {x!r}")
    return v


def _sizes(v: Any, dims: int, ctx: _Ctx, item: Any) -> tuple | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v] * dims
    return _seq(v, ctx, item, length=dims, optional=True)


def _orientation(v: Any, dims: int, ctx: _Ctx) -> str | None:
    code = _str(v, ctx, optional=True)
    if code is None:
        return None
    if dims != 3:
        raise ctx.fail("only volumes are reoriented; a 2-D contract (axes HW) takes no orientation")
    if len(code) != 3 or any(sum(c in pair for c in code.upper()) != 1 for pair in _AXCODES):
        raise ctx.fail(f"expected three axis codes, one of L/R, A/P and S/I each (e.g. 'RAS'), got {code!r}")
    return code.upper()


def _window(d: Mapping, norm: str, ctx: _Ctx) -> tuple[float, float] | None:
    window = _seq(d.get("intensity_window"), ctx.sub("intensity_window"), _num, length=2, optional=True)
    if norm in ("window", "meanstd", "linear") and window is None:
        raise ctx.sub("intensity_window").fail(f"normalisation {norm!r} needs an intensity_window [low, high]")
    if window is not None and not window[0] < window[1]:
        raise ctx.sub("intensity_window").fail(f"expected low < high, got {list(window)}")
    return window


def _value_range(d: Mapping, norm: str, ctx: _Ctx) -> tuple[float, float] | None:
    rng = _seq(d.get("value_range"), ctx.sub("value_range"), _num, length=2, optional=True)
    if norm == "linear" and rng is None:
        raise ctx.sub("value_range").fail("normalisation 'linear' maps intensity_window onto value_range; give it")
    if norm != "linear" and rng is not None:
        raise ctx.sub("value_range").fail(f"only normalisation 'linear' takes a value_range, this one is {norm!r}")
    return rng


def _stats(d: Mapping, norm: str, ctx: _Ctx) -> dict[str, Any]:
    mean, std = _mean_std(dict(d), norm, ctx)
    return {"mean": mean, "std": std}


# ------------------------------------------------------------------------------------------------- legacy format
_LEGACY_KEYS = {"modality", "normalisation", "spacing", "orientation", "intensity_window", "input_size", "resize",
                "value_range", "notes", "mean", "std"}


def migrate_legacy(d: Mapping[str, Any], ctx: _Ctx | str = "preprocessing") -> dict[str, Any]:
    """The earlier flat contract (no ``axes``) in today's fields, with the meaning earlier releases gave it.

    - dims come from ``input_size`` / ``spacing``, else 2-D for a ``CXR``-only modality; 2-D contracts read images
      scaled by their maximum value (``rescale: max_value``), so a window ``[0, 255]`` becomes ``[0, 1]``, and they
      were resized to ``input_size`` (``size_mode: resize``, ``linear``);
    - a 3-D ``zscore_nonzero`` contract resized ``nearest`` is MedicalNet's: axes ``DHW``, foreground crop in
      training, N(0, 1) background;
    - other 3-D contracts keep the array's axes (``XYZ``); ``input_size`` was the sliding-window patch, unless a
      ``resize`` was named;
    - ``value_range`` is kept for ``linear`` only (elsewhere it was a range check, now derived).
    """
    ctx = _Ctx(ctx) if isinstance(ctx, str) else ctx
    d = dict(d)
    modality = (d["modality"],) if isinstance(d["modality"], str) else tuple(d["modality"])
    sized = next((d[k] for k in ("input_size", "spacing") if isinstance(d.get(k), (list, tuple))), None)
    dims = len(sized) if sized is not None else (2 if set(modality) == {"CXR"} else 3)
    if dims not in (2, 3):
        raise ctx.sub("input_size").fail(f"expected 2 or 3 sizes, got {sized!r}")
    norm = d.get("normalisation") or "none"
    out = {k: v for k, v in d.items() if k != "value_range" or norm == "linear"}
    out["normalisation"] = norm
    if dims == 2:
        window = d.get("intensity_window")
        if window is not None and [float(v) for v in window] == [0.0, 255.0]:
            out["intensity_window"] = [0.0, 1.0]
        out.update(axes="HW", rescale="max_value", channels=len(d["mean"]) if d.get("mean") else 1)
        if d.get("input_size") is not None:
            out.update(size_mode="resize", resize="nearest" if d.get("resize") == "nearest" else "linear")
        else:
            out.pop("resize", None)
        return out
    if norm == "zscore_nonzero" and d.get("resize") == "nearest" and d.get("input_size") is not None:
        out.update(axes="DHW", background="noise", crop="foreground", crop_predict=False, size_mode="resize")
        return out
    out["axes"] = "XYZ"
    if d.get("resize") and d.get("input_size") is not None:
        out.update(size_mode="resize", resize="nearest" if d["resize"] == "nearest" else "linear")
    else:
        out.pop("resize", None)
    return out


# ------------------------------------------------------------------------------------------------- kind -> contract
def _is_keyed(d: Any) -> bool:
    return isinstance(d, Mapping) and bool(d) and set(d) <= set(KINDS) and all(
        isinstance(v, (Mapping, Preprocessing)) for v in d.values())


def parse_preprocessing(d: Any, ctx: _Ctx | str = "preprocessing") -> dict[str, Preprocessing]:
    """``{kind: Preprocessing}`` from a kind-keyed mapping (of dicts or contracts), or from one contract (its kind:
    ``volume`` for 3-D, ``image`` for 2-D). ``None`` or an empty mapping is no contract (``{}``).

    Example:
        >>> sorted(parse_preprocessing({"modality": "CXR", "axes": "HW", "input_size": [64, 64],
        ...                             "size_mode": "resize"}))
        ['image']
    """
    ctx = _Ctx(ctx) if isinstance(ctx, str) else ctx
    if d is None or (isinstance(d, Mapping) and not d):
        return {}
    if isinstance(d, Preprocessing):
        return {"volume" if d.dims == 3 else "image": d}
    if _is_keyed(d):
        return {kind: v if isinstance(v, Preprocessing) else Preprocessing.from_dict(v, ctx.sub(kind))
                for kind, v in d.items()}
    if not isinstance(d, Mapping):
        raise ctx.fail(f"expected a contract mapping or {{kind: contract}} with kinds {list(KINDS)}, got {d!r}")
    contract = Preprocessing.from_dict(d, ctx)
    return {"volume" if contract.dims == 3 else "image": contract}


def preprocessing_to_dict(contracts: Mapping[str, Preprocessing] | None) -> dict[str, Any]:
    """Plain ``{kind: contract dict}`` (``{}`` for none)."""
    return {kind: c.to_dict() for kind, c in (contracts or {}).items()}


def contract_for(contracts: Mapping[str, Preprocessing] | None, kind: str) -> Preprocessing | None:
    """The contract for ``kind``; an image contract serves a slice series and vice versa (both are 2-D slices)."""
    contracts = contracts or {}
    if kind in contracts:
        return contracts[kind]
    twin = {"image": "series", "series": "image"}.get(kind)
    return contracts.get(twin) if twin else None
