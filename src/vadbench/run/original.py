"""Pixel metrics by MVTec AD's official protocol (`pixel_protocol: original`): each test image's anomaly map is
upsampled bilinearly to its ground-truth mask's original size, and pixel AUROC, F1, F1-max and AU-PRO
(8-connected regions, FPR up to 0.3) are computed at that full resolution.

Memory stays bounded: images are streamed one at a time into sufficient statistics: per image, its normal
and anomalous pixels counted in bins of the map value (edges: FULLRES_BINS quantiles of the input-size
maps, with the pixel threshold as an edge), and per ground-truth region, its pixels counted in the same bins.
Metrics follow from sums; AUROC, F1-max and AU-PRO are exact up to ties within a bin, F1 at the threshold
is exact; the per-image counts also give the bootstrap intervals (vadbench.stats).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from vadbench import stats

FULLRES_BINS = 10_000
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)  # MVTec's compute_pro labels regions with OpenCV's default (8)


@dataclass
class FullResolution:
    """Per-image and per-region bin counts at full resolution, and the bin index of the pixel threshold."""

    neg: np.ndarray  # (images, bins) normal pixels
    pos: np.ndarray  # (images, bins) anomalous pixels
    regions: np.ndarray  # (regions, bins) pixels of each 8-connected ground-truth region
    at: int


def bin_edges(maps: np.ndarray, threshold: float, bins: int = FULLRES_BINS) -> np.ndarray:
    flat = np.asarray(maps, dtype=np.float32).reshape(-1)
    inner = np.quantile(flat[:: max(1, flat.size // 4_000_000)], np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(np.r_[inner, threshold].astype(np.float64))


def original_mask(image_path: str, mask_path: str | float | None) -> np.ndarray:
    """The ground-truth mask at its original size (all normal, at the image's size, for a good image)."""
    if isinstance(mask_path, str) and mask_path:
        return np.asarray(Image.open(mask_path).convert("L")) > 0
    with Image.open(image_path) as image:
        return np.zeros((image.height, image.width), dtype=bool)


def accumulate(maps: np.ndarray, image_paths: list[str], mask_paths: list, threshold: float) -> FullResolution:
    """Stream every test image: upsample its map to its mask's original size, count pixels per bin."""
    edges = bin_edges(maps, threshold)
    k = len(edges) + 1
    neg, pos, regions = np.zeros((len(maps), k), np.int64), np.zeros((len(maps), k), np.int64), []
    for i, (amap, image_path, mask_path) in enumerate(zip(maps, image_paths, mask_paths, strict=True)):
        mask = original_mask(image_path, mask_path)
        full = F.interpolate(torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None],
                             size=mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        index = np.searchsorted(edges, full.astype(np.float64).ravel(), side="left").reshape(mask.shape)
        neg[i] = np.bincount(index[~mask], minlength=k)
        pos[i] = np.bincount(index[mask], minlength=k)
        labelled, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
        regions += [np.bincount(index[labelled == r], minlength=k) for r in range(1, n + 1)]
    regions_array = np.array(regions, dtype=np.int64).reshape(-1, k)
    return FullResolution(neg, pos, regions_array, int(np.searchsorted(edges, threshold, side="left")))


def aupro(neg: np.ndarray, regions: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under PRO over FPR in [0, fpr_limit], divided by fpr_limit, from bin counts (ascending bins)."""
    if regions.size == 0 or neg.sum() == 0:
        return math.nan
    fpr = np.r_[np.cumsum(neg[::-1])[::-1] / neg.sum(), 0.0][::-1]  # predicted: bins at and above each cut
    overlap = np.cumsum(regions[:, ::-1], axis=1)[:, ::-1] / regions.sum(axis=1, keepdims=True)
    pro = np.r_[overlap.mean(axis=0), 0.0][::-1]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # the curve's value at the limit, linearly interpolated
        j = int(np.argmax(fpr > fpr_limit))
        y_limit = pro[j - 1] + (pro[j] - pro[j - 1]) * (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_limit]
    return float(np.trapezoid(y, x) / fpr_limit)


def original_metrics(full: FullResolution) -> dict[str, float]:
    """pixel_auroc, pixel_f1, pixel_f1_max and pixel_aupro at full resolution."""
    summed = stats.histogram_metrics(full.neg.sum(axis=0, keepdims=True), full.pos.sum(axis=0, keepdims=True), full.at)
    return {**{name: float(values[0]) for name, values in summed.items()},
            "pixel_aupro": aupro(full.neg.sum(axis=0), full.regions)}


def mask_paths_of(dataset, image_paths: list[str]) -> list:
    """Each scored image's ground-truth mask path, from the anomalib dataset's samples (empty for good images)."""
    samples = dataset.samples.set_index("image_path")["mask_path"]
    return [samples.get(path, "") for path in image_paths]
