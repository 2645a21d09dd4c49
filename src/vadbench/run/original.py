"""Pixel metrics by MVTec AD's official protocol (`pixel_protocol: original`): each test image's anomaly map is
upsampled bilinearly to its ground-truth mask's original size, and pixel AUROC, F1, F1-max and AU-PRO
(8-connected regions, FPR up to 0.3) are computed at that full resolution.

Memory stays bounded: images are streamed one at a time into vadbench.stats.PixelCounts: per image, its
normal and anomalous pixels counted in bins of the map value (FULLRES_BINS edges from the input-size maps by
vadbench.stats.bin_edges, which keeps its edges apart where maps have ties, with the pixel threshold as an edge),
and per ground-truth region its pixels in the same bins. Metrics follow from sums; AUROC, F1-max and AU-PRO are
exact up to ties within a bin, F1 at the threshold is exact; the per-image counts also give the bootstrap
intervals (vadbench.stats). No exact full-size pixel AUROC is computed, so the record's `ci_pixel_binning_error`
is the most the bins can be off (vadbench.stats.binning_bound).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vadbench import stats

FULLRES_BINS = 10_000


def original_mask(image_path: str, mask_path: str | float | None) -> np.ndarray:
    """The ground-truth mask at its original size (all normal, at the image's size, for a good image)."""
    if isinstance(mask_path, str) and mask_path:
        return np.asarray(Image.open(mask_path).convert("L")) > 0
    with Image.open(image_path) as image:
        return np.zeros((image.height, image.width), dtype=bool)


def _full_size(maps: np.ndarray, image_paths: list[str], mask_paths: list):
    """(mask, map) at each mask's original size, one image at a time."""
    for amap, image_path, mask_path in zip(maps, image_paths, mask_paths, strict=True):
        mask = original_mask(image_path, mask_path)
        full = F.interpolate(torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None],
                             size=mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        yield mask, full


def accumulate(maps: np.ndarray, image_paths: list[str], mask_paths: list, threshold: float) -> stats.PixelCounts:
    """Stream every test image: upsample its map to its mask's original size, count pixels per bin."""
    edges = stats.bin_edges(maps, threshold, FULLRES_BINS)
    counts = stats.collect(_full_size(maps, image_paths, mask_paths), edges, threshold)
    return dataclasses.replace(counts, full_size=True)


def original_metrics(counts: stats.PixelCounts) -> dict[str, float]:
    """pixel_auroc, pixel_f1, pixel_f1_max and pixel_aupro at full resolution."""
    summed = stats.histogram_metrics(counts.neg.sum(axis=0, keepdims=True), counts.pos.sum(axis=0, keepdims=True),
                                     counts.at)
    return {**{name: float(values[0]) for name, values in summed.items()},
            "pixel_aupro": stats.aupro_from_counts(counts.neg.sum(axis=0), counts.regions)}


def mask_paths_of(dataset, image_paths: list[str]) -> list:
    """Each scored image's ground-truth mask path, from the anomalib dataset's samples (empty for good images)."""
    samples = dataset.samples.set_index("image_path")["mask_path"]
    return [samples.get(path, "") for path in image_paths]
