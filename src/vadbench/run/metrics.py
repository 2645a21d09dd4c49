"""Evaluation metrics of one run: AUROC, AU-PRO and F1 at image and pixel level.

anomalib is the engine: AUROC, F1-max and AU-PRO are anomalib's metric classes (the plain-tensor
``_AUROC``, ``_F1Max`` and ``_AUPRO`` under the ``fields=`` wrappers); F1 at a fixed threshold is
torchmetrics' ``binary_f1_score``. This module only validates inputs, keeps the arrays in place
(``torch.from_numpy``, float32 maps) and maps undefined cases to NaN.

Conventions:

* A value is predicted anomalous when ``value > threshold`` (strictly greater), for images and
  pixels alike, so that with ``image_quantile=1.0`` every held-out normal image is predicted normal.
  The comparison is exact for float32 maps and a float64 threshold (see ``_above``).
* A metric that is undefined on the given data is NaN and a warning is logged: AUROC with one
  class present, F1 / F1-max with no positive ground truth, AU-PRO with no anomalous region or no
  normal pixel.

Corrections to the engine (checked against anomalib 2.7.0 / torchmetrics 1.9.0):

* torchmetrics' ROC (which anomalib's ``AUROC`` builds on) applies a sigmoid to predictions outside
  [0, 1]. On raw scores this saturates in float32 (every score above ~17 becomes 1.0) and turns
  distinct scores into ties, changing the AUROC. AUROC inputs outside [0, 1] are therefore first
  rescaled to [0, 1] by an order-preserving min-max map in float64 (AUROC depends on order only).
  anomalib's ``F1Max`` and ``AUPRO`` do not apply a sigmoid and get the raw values.
* anomalib's ``AUPRO`` matches MVTec AD's official ``compute_pro`` / ``trapezoid_area``: 8-connected
  ground-truth regions (OpenCV default), one curve point per distinct map value, FPR over all normal
  pixels of all images, PRO the mean per-region overlap, linear interpolation at the FPR limit and
  division by the limit (its ``fpr[-1]``, which is the limit itself). No deviation found in the
  computation; it computes in float32 on the host. What it is given differs from MVTec's protocol: the
  maps and masks here are at the model's input size (anomalib resizes the masks). MVTec's full-resolution
  protocol is ``pixel_protocol: original`` (vadbench.run.original).

Memory and time: the engine sorts all pixels three times (AUROC, F1-max, AU-PRO), with int64
indices and float32/int64 copies: measured ~75 bytes per pixel at peak and ~30 s per 20M pixels on
two CPU cores. Maps outside [0, 1] add one float64 copy for the pixel AUROC.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from vadbench.records import METRICS, THRESHOLD_FIELDS

log = logging.getLogger(__name__)

METRIC_KEYS = (*METRICS, *THRESHOLD_FIELDS)  # the keys of compute_metrics' result: a record's `metrics`


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds in raw score / raw map units; anomalous means ``value > threshold``."""

    image: float
    pixel: float
    method: str

    def __post_init__(self) -> None:
        if math.isnan(self.image) or math.isnan(self.pixel):
            raise ValueError(f"thresholds must not be NaN: image={self.image}, pixel={self.pixel}")


def fit_thresholds(
    val_scores: np.ndarray,
    val_maps: np.ndarray,
    image_quantile: float = 1.0,
    pixel_quantile: float = 0.999,
    where: str = "held-out train images",
) -> Thresholds:
    """Thresholds from validation images (held-out NORMAL training images unless `where` says otherwise): the
    given quantiles of the validation image scores and of all validation map pixels (numpy's linear quantile)."""
    for name, q in (("image_quantile", image_quantile), ("pixel_quantile", pixel_quantile)):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {q}")
    scores = _finite_array(val_scores, "val_scores")
    maps = _finite_array(val_maps, "val_maps")
    method = f"quantile(image={float(image_quantile)},pixel={float(pixel_quantile)}) of {where}"
    return Thresholds(
        image=float(np.quantile(scores, image_quantile)),
        pixel=float(np.quantile(maps, pixel_quantile)),
        method=method,
    )


def adaptive_thresholds(labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray,
                        where: str) -> Thresholds:
    """anomalib's adaptive F1 thresholds (its defaults' choice) on validation images: the image threshold that
    maximises image F1, the pixel threshold that maximises F1 over all validation pixels."""
    from anomalib.metrics.threshold.f1_adaptive_threshold import _F1AdaptiveThreshold

    def best(values: np.ndarray, target: np.ndarray) -> float:
        metric = _F1AdaptiveThreshold()
        metric.update(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(-1),
                      torch.from_numpy(np.ascontiguousarray(target).astype(np.int64)).reshape(-1))
        return float(metric.compute())

    image = best(_finite_array(scores, "val_scores"), np.asarray(labels))
    pixel = best(_finite_array(maps, "val_maps"), np.asarray(masks))
    return Thresholds(image=image, pixel=pixel, method=f"anomalib F1AdaptiveThreshold on {where}")


def _finite_array(values: np.ndarray, name: str) -> np.ndarray:
    """The values as an array; raises if empty or not all finite."""
    arr = np.asarray(values)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    maps: np.ndarray,
    thresholds: Thresholds,
    aupro_fpr_limit: float = 0.3,
) -> dict[str, float | str]:
    """All test metrics of one run, keyed as in ``METRIC_KEYS`` (see docs/records.md).

    labels (N,) int 0/1; scores (N,) float raw image scores; masks (N,H,W) bool ground truth;
    maps (N,H,W) float anomaly maps at the mask resolution (evaluated in float32).
    """
    labels_t, scores_t, masks_t, maps_t = _as_tensors(labels, scores, masks, maps)
    metrics: dict[str, float | str] = {
        "image_auroc": auroc(labels_t, scores_t, "image_auroc"),
        "pixel_auroc": auroc(masks_t, maps_t, "pixel_auroc"),
        "pixel_aupro": aupro(masks_t, maps_t, aupro_fpr_limit),
        "image_f1": f1_at_threshold(labels_t, scores_t, thresholds.image, "image_f1"),
        "pixel_f1": f1_at_threshold(masks_t, maps_t, thresholds.pixel, "pixel_f1"),
        "image_f1_max": f1_max(labels_t, scores_t, "image_f1_max"),
        "pixel_f1_max": f1_max(masks_t, maps_t, "pixel_f1_max"),
        "image_f1_baseline": f1_baseline(labels_t),
        "image_threshold": float(thresholds.image),
        "pixel_threshold": float(thresholds.pixel),
        "threshold_method": thresholds.method,
    }
    return {key: metrics[key] for key in METRIC_KEYS}


def _as_tensors(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes and values; return CPU tensors sharing memory with the arrays where possible."""
    labels = np.asarray(labels)
    scores = _finite_array(np.asarray(scores, dtype=np.float64), "scores")
    masks = np.asarray(masks)
    maps = _finite_array(np.asarray(maps, dtype=np.float32), "maps")
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must both be (N,), got {labels.shape} and {scores.shape}")
    if masks.ndim != 3 or maps.shape != masks.shape or masks.shape[0] != labels.shape[0]:
        raise ValueError(f"masks and maps must both be (N,H,W) with N={labels.shape[0]}, "
                         f"got {masks.shape} and {maps.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (defect)")
    if masks.dtype != np.bool_:
        masks = masks != 0
    return (
        torch.from_numpy(labels.astype(np.bool_)),
        torch.from_numpy(scores),
        torch.from_numpy(np.ascontiguousarray(masks)),
        torch.from_numpy(np.ascontiguousarray(maps)),
    )


def _undefined(name: str, why: str) -> float:
    """NaN for a metric that the data does not define, with a warning."""
    log.warning("%s is undefined (%s); recording NaN", name, why)
    return math.nan


def auroc(target: torch.Tensor, preds: torch.Tensor, name: str = "auroc") -> float:
    """Area under the ROC curve (anomalib ``_AUROC``); NaN unless both classes are present."""
    from anomalib.metrics.auroc import _AUROC

    n_pos = int(target.sum())
    if n_pos == 0 or n_pos == target.numel():
        return _undefined(name, "only one class in the ground truth")
    metric = _AUROC(validate_args=False)
    metric.update(_to_unit_interval(preds), target)
    return float(metric.compute())


def _to_unit_interval(values: torch.Tensor) -> torch.Tensor:
    """The values unchanged if in [0, 1], else min-max rescaled in float64 (order-preserving).

    torchmetrics' ROC would otherwise apply a sigmoid, which saturates and creates ties.
    """
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return values
    span = hi - lo
    out = values.to(torch.float64, copy=True).sub_(lo)
    return out.div_(span) if span > 0 else out


def f1_max(target: torch.Tensor, preds: torch.Tensor, name: str = "f1_max") -> float:
    """Best F1 over all thresholds on these data (anomalib ``_F1Max``); NaN with no positives."""
    from anomalib.metrics.f1_score import _F1Max

    if not bool(target.any()):
        return _undefined(name, "no positive ground truth")
    metric = _F1Max()
    metric.update(preds, target)
    return float(metric.compute())


def f1_at_threshold(target: torch.Tensor, preds: torch.Tensor, threshold: float, name: str = "f1") -> float:
    """F1 of predicting ``preds > threshold`` (torchmetrics); NaN with no positive ground truth."""
    from torchmetrics.functional.classification import binary_f1_score

    if not bool(target.any()):
        return _undefined(name, "no positive ground truth")
    return float(binary_f1_score(_above(preds, threshold), target, validate_args=False))


def _above(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """``values > threshold`` exactly, also for float32 values and a float64 threshold.

    torch would round the threshold to the nearest float32 and could flip values equal to it;
    rounding it down instead keeps the strict comparison exact.
    """
    if values.dtype != torch.float32:
        return values > threshold
    t32 = np.float32(threshold)
    if float(t32) > threshold:  # compare in float64
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return values > torch.tensor(t32)


def f1_baseline(labels: torch.Tensor) -> float:
    """F1 of calling every image anomalous: 2d/(d+N) for d defective of N; NaN if d = 0."""
    d, n = int(labels.sum()), labels.numel()
    if d == 0:
        return _undefined("image_f1_baseline", "no defective images")
    return 2.0 * d / (d + n)


def aupro(masks: torch.Tensor, maps: torch.Tensor, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve for FPR in [0, fpr_limit], divided by fpr_limit (anomalib ``_AUPRO``).

    NaN unless there is at least one anomalous and one normal pixel.
    """
    from anomalib.metrics.aupro import _AUPRO

    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"aupro_fpr_limit must lie in (0, 1], got {fpr_limit}")
    n_pos = int(masks.sum())
    if n_pos == 0 or n_pos == masks.numel():
        return _undefined("pixel_aupro", "no anomalous region or no normal pixel")
    metric = _AUPRO(fpr_limit=fpr_limit)
    metric.update(maps, masks)
    return float(metric.compute())
