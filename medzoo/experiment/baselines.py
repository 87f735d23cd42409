"""Reference points for a segmentation matrix that train no network: a tuned threshold and a linear probe.

- :func:`fit_threshold` / :func:`predict_threshold`: the classical pipeline a reviewer would try first on lung
  fields: per-image contrast stretch (optional), Gaussian smoothing (optional), an intensity band, removal of the
  components that touch the image border, the largest ``keep`` components, holes filled. Its parameters are chosen
  by a grid search that maximises mean Dice on the training images only.
- :func:`fit_probe` / :func:`predict_probe`: a linear probe on frozen encoder features, as linear-probe evaluations
  do: every feature map upsampled to the input size, standardised with training statistics, and one closed-form
  ridge regression per pixel onto the mask (float64; no step budget or learning rate to under-train it).

Both are deterministic (no randomness, float64 solves) and independent of the thread count when torch runs on one
thread, as the experiment runner arranges for every cell.

Example:
    >>> import numpy as np
    >>> imgs = np.full((2, 16, 16), 0.8, np.float32); imgs[:, 4:12, 3:7] = 0.2; imgs[:, 4:12, 9:13] = 0.2
    >>> masks = imgs < 0.5
    >>> params = fit_threshold(imgs, masks)
    >>> bool((predict_threshold(imgs, params) == masks).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NORMS = ("none", "percentile", "otsu")

__all__ = ["NORMS", "ThresholdParams", "fit_probe", "fit_threshold", "mean_dice", "otsu_threshold", "predict_probe",
           "predict_threshold", "run_baseline"]


@dataclass(frozen=True)
class ThresholdParams:
    """One setting of the threshold pipeline: ``lo <= intensity <= hi`` after the normalisation and blur.

    ``norm``: ``none``; ``percentile`` (each image's 2nd-98th percentile to [0, 1]); ``otsu`` (each image divided by
    twice its Otsu threshold, so 0.5 is that image's Otsu level).
    """

    lo: float
    hi: float
    norm: str = "none"
    sigma: float = 0.0
    keep: int = 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return asdict(self)


def mean_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over images of ``2|P∩T| / (|P|+|T|)`` (images with an empty target are skipped, as the metrics do).

    Args:
        pred, target: boolean ``[N, H, W]``.
    """
    p, t = pred.reshape(len(pred), -1), target.reshape(len(target), -1)
    inter, total = (p & t).sum(1), p.sum(1) + t.sum(1)
    keep = t.sum(1) > 0
    return float(np.mean(2.0 * inter[keep] / np.maximum(total[keep], 1))) if keep.any() else float("nan")


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of one image: the cut of its histogram that maximises the between-class variance."""
    hist, edges = np.histogram(image, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][int(np.argmax(between[:-1]))])


def _prepare(images: np.ndarray, norm: str, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float64)
    if norm == "percentile":
        lo, hi = np.percentile(x.reshape(len(x), -1), [2, 98], axis=1)
        x = np.clip((x - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None], 0.0, 1.0)
    elif norm == "otsu":
        x = np.clip(x / np.array([2 * max(otsu_threshold(im), 1e-6) for im in x])[:, None, None], 0.0, 1.0)
    elif norm != "none":
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if sigma > 0:
        x = np.stack([gaussian_filter(im, sigma) for im in x])
    return x


_PLANE = np.zeros((3, 3, 3), bool)
_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # 4-connectivity within each image, none across images


def _border_labels(lab: np.ndarray) -> np.ndarray:
    """Labels of ``[N, H, W]`` components that touch an image border."""
    return np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(),
                                     lab[:, :, -1].ravel()]))


def _segment(x: np.ndarray, lo: float, hi: float, keep: int) -> np.ndarray:
    """Band ``[lo, hi]``, drop border-touching components, keep the ``keep`` largest per image, fill holes.

    Args:
        x: ``[N, H, W]`` prepared intensities. Returns ``[N, H, W]`` bool.
    """
    from scipy.ndimage import label

    lab, n = label((x >= lo) & (x <= hi), structure=_PLANE)
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.int64)
    sizes[0] = 0
    sizes[_border_labels(lab)] = 0
    image_of = np.zeros(n + 1, np.int64)
    image_of[lab.ravel()] = np.repeat(np.arange(len(x)), x[0].size)
    order = np.lexsort((np.arange(n + 1), -sizes, image_of))  # per image: largest first, ties by label
    rank = np.empty(n + 1, np.int64)
    rank[order] = np.arange(n + 1) - np.searchsorted(image_of[order], image_of[order], side="left")
    chosen = ((rank < keep) & (sizes > 0))[lab]
    holes, m = label(~chosen, structure=_PLANE)  # background pieces that do not reach the border are holes
    inner = np.ones(m + 1, bool)
    inner[0] = False
    inner[_border_labels(holes)] = False
    return chosen | inner[holes]


def predict_threshold(images: np.ndarray, params: ThresholdParams) -> np.ndarray:
    """Masks ``[N, H, W]`` bool of ``images`` ``[N, H, W]`` (intensities in [0, 1]) with fitted ``params``."""
    return _segment(_prepare(images, params.norm, params.sigma), params.lo, params.hi, params.keep)


def _search(x: np.ndarray, masks: np.ndarray, los: Sequence[float], his: Sequence[float], keep: int
            ) -> tuple[float, float, float]:
    best = (-1.0, 0.0, 1.0)
    for lo in los:
        for hi in his:
            if hi > lo:
                score = mean_dice(_segment(x, lo, hi, keep), masks)
                if score > best[0] + 1e-12:
                    best = (score, float(lo), float(hi))
    return best


def fit_threshold(images: np.ndarray, masks: np.ndarray, keep: int = 2) -> ThresholdParams:
    """Choose the threshold pipeline's parameters that maximise mean Dice on ``images`` / ``masks``.

    A coarse grid over every normalisation (:data:`NORMS`), blur (0 or 1 px) and upper edge (every 0.05, lower edge
    0), then, for the best of those, the lower edge (0 to 0.2 every 0.05) with the upper edge refined (every
    0.0125). Ties keep the first setting found, so the result is deterministic.

    Args:
        images: ``[N, H, W]`` intensities in [0, 1] (the model's input after its evaluation transform).
        masks: ``[N, H, W]`` bool targets.
        keep: components kept (2: two lungs).

    Returns:
        The best :class:`ThresholdParams`.
    """
    masks = masks.astype(bool)
    his = np.round(np.arange(0.05, 1.0001, 0.05), 4)
    best = (-1.0, 0.0, 1.0, ("none", 0.0))
    for key in ((norm, sigma) for norm in NORMS for sigma in (0.0, 1.0)):
        score, lo, hi = _search(_prepare(images, *key), masks, (0.0,), his, keep)
        if score > best[0] + 1e-12:
            best = (score, lo, hi, key)
    score, lo, hi, key = best
    fine_lo = np.round(np.arange(0.0, 0.2001, 0.05), 4)
    fine_hi = np.round(np.arange(hi - 0.025, min(1.0, hi + 0.025) + 1e-9, 0.0125), 4)
    _, lo, hi = max((score, lo, hi), _search(_prepare(images, *key), masks, fine_lo, fine_hi, keep),
                    key=lambda b: b[0])
    return ThresholdParams(lo, hi, key[0], key[1], keep)


def _features(encoder: Any, images: np.ndarray) -> Any:
    """Every encoder feature map, upsampled bilinearly to the input size and concatenated: ``[N, C, H, W]``."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images, dtype=torch.float32)[:, None]
    with torch.no_grad():
        maps = encoder(x)
    size = tuple(images.shape[-2:])
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], 1)


def fit_probe(encoder: Any, images: np.ndarray, masks: np.ndarray, ridge: float = 1e-3, stride: int = 2
              ) -> dict[str, Any]:
    """A closed-form per-pixel linear probe on frozen ``encoder`` features.

    Args:
        encoder: a frozen encoder in eval mode (``encoder(x [N, 1, H, W]) -> list of [N, C_i, h_i, w_i]``).
        images: ``[N, H, W]`` training inputs; masks: ``[N, H, W]`` bool targets.
        ridge: the L2 penalty relative to the mean feature variance (1 after standardisation).
        stride: fit on every ``stride``-th pixel row and column (neighbouring pixels add little; predictions are
            made at every pixel).

    Returns:
        ``{"mean", "std", "weight"}`` float64 tensors (``weight`` ``[C + 1]``, the last entry the bias).
    """
    import torch

    f = _features(encoder, images).double()[:, :, ::stride, ::stride]
    flat = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    z = torch.cat([(flat - mean) / std, torch.ones(len(flat), 1, dtype=torch.float64)], 1)
    y = torch.as_tensor(masks[:, ::stride, ::stride].reshape(-1), dtype=torch.float64)
    gram = z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, z.T @ y)
    return {"mean": mean, "std": std, "weight": weight}


def predict_probe(encoder: Any, images: np.ndarray, probe: dict[str, Any]) -> np.ndarray:
    """Masks ``[N, H, W]`` bool from a :func:`fit_probe` probe (the regression output above 0.5)."""

    f = _features(encoder, images).double()
    z = (f.permute(0, 2, 3, 1) - probe["mean"]) / probe["std"]
    out = z @ probe["weight"][:-1] + probe["weight"][-1]
    return (out > 0.5).numpy()


def _split_arrays(bundle: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[N, H, W]`` and boolean masks of one split, through the evaluation transform (no augmentation)."""
    import copy

    from medzoo.train.data import MASK_KEY, build_transform

    ds = copy.copy(bundle.splits[split])
    ds.transform = build_transform(bundle.contract, bundle.input_kind, False)
    images, masks = [], []
    for i in range(len(ds)):
        sample = ds[i]
        images.append(np.asarray(sample["image"], dtype=np.float32)[0])
        masks.append(np.asarray(sample[f"label.{MASK_KEY}"])[0] > 0.5)
    return np.stack(images), np.stack(masks)


def _seg_task(run_cfg: Any) -> tuple[str, str]:
    """The run's one 2-D two-class segmentation task: ``(task name, foreground label)``."""
    from medzoo.config import ConfigError

    seg = [(n, t) for n, t in run_cfg.model.tasks.items() if t.type == "segmentation" and t.level == "image"]
    if len(seg) != 1 or len(seg[0][1].labels or []) != 2:
        raise ConfigError("baselines: the run needs exactly one 2-D segmentation task with two labels "
                          f"(background, foreground); it has {[n for n, _ in seg] or 'none'}")
    return seg[0][0], seg[0][1].labels[1]


def run_baseline(kind: str, run_cfg: Any, source: str = "scratch", parts: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """Fit a baseline on the training split of ``run_cfg`` (its fraction and subset) and score val and test.

    Args:
        kind: ``threshold`` or ``probe``.
        run_cfg: the cell's :class:`~medzoo.train.config.RunConfig` (data, split, fraction, transform, seed).
        source, parts: for ``probe``, the frozen encoder's weights (``init.source`` syntax).

    Returns:
        ``{"metrics": {"val/<task>/dice/<label>", "test/...", "test/<task>/mean_dice", ...}, "params": ...,
        "n_train", "n_test"}``.
    """
    import torch

    from medzoo.models import create_model
    from medzoo.train.config import InitConfig
    from medzoo.train.data import build_datasets
    from medzoo.train.init import apply_init

    task, label = _seg_task(run_cfg)
    torch.manual_seed(run_cfg.train.seed)  # the random encoder of a scratch probe
    model = create_model(run_cfg.model)
    bundle = build_datasets(run_cfg, model)[0]
    x_train, m_train = _split_arrays(bundle, "train")
    if kind == "threshold":
        params = fit_threshold(x_train, m_train)
        predict, described = (lambda x: predict_threshold(x, params)), params.to_dict()
    else:
        apply_init(model, InitConfig(source, list(parts or ["encoder"])))
        encoder = model.encoder.eval()
        probe = fit_probe(encoder, x_train, m_train)
        predict, described = (lambda x: predict_probe(encoder, x, probe)), {"source": source, "features": int(
            probe["weight"].numel() - 1)}
    metrics: dict[str, float] = {}
    counts = {"n_train": len(x_train)}
    for split in ("val", "test"):
        if split in bundle.splits:
            x, m = _split_arrays(bundle, split)
            dice = mean_dice(predict(x), m)
            metrics[f"{split}/{task}/dice/{label}"] = metrics[f"{split}/{task}/mean_dice"] = dice
            counts[f"n_{split}"] = len(x)
    return {"metrics": metrics, "params": described, **counts}
