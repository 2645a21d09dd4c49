"""pixel_protocol: original — MVTec AD's official protocol (maps upsampled to each mask's original size) against
an independent computation on the full-resolution arrays (scikit-learn AUROC and F1, anomalib's AU-PRO)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from vadbench.run import original
from vadbench.run.metrics import aupro

ORIGINAL = (60, 76)  # height, width of the images and masks on disk
INPUT = (16, 16)  # the model's map size


def replica(tmp_path, n=8, seed=0):
    rng = np.random.default_rng(seed)
    images, masks, maps = [], [], []
    for i in range(n):
        image = tmp_path / f"{i}.png"
        Image.new("RGB", ORIGINAL[::-1]).save(image)
        mask_path = ""
        if i % 2:  # defective: one or two blobs at full resolution
            mask = np.zeros(ORIGINAL, np.uint8)
            mask[10 + i:25 + i, 5:30] = 255
            if i % 3 == 0:
                mask[40:55, 50:70] = 255
            mask_path = str(tmp_path / f"{i}_mask.png")
            Image.fromarray(mask).save(mask_path)
        images.append(str(image))
        masks.append(mask_path)
        maps.append(rng.normal(0, 1, INPUT).astype(np.float32) + (1.5 if i % 2 else 0.0))
    return np.stack(maps), images, masks


def full_resolution(maps, masks):
    up = F.interpolate(torch.from_numpy(maps)[:, None], size=ORIGINAL, mode="bilinear", align_corners=False)[:, 0]
    truth = np.stack([np.asarray(Image.open(m)) > 0 if m else np.zeros(ORIGINAL, bool) for m in masks])
    return up.numpy(), truth


def test_original_protocol_matches_a_full_resolution_computation(tmp_path):
    maps, images, masks = replica(tmp_path)
    threshold = 1.0
    ours = original.original_metrics(original.accumulate(maps, images, masks, threshold))
    full, truth = full_resolution(maps, masks)
    assert ours["pixel_auroc"] == pytest.approx(roc_auc_score(truth.ravel(), full.ravel()), abs=1e-3)
    assert ours["pixel_f1"] == pytest.approx(f1_score(truth.ravel(), full.ravel() > threshold), abs=1e-12)
    precision, recall, _ = precision_recall_curve(truth.ravel(), full.ravel())
    assert ours["pixel_f1_max"] == pytest.approx(np.nanmax(2 * precision * recall / (precision + recall)), abs=1e-3)
    exact = aupro(torch.from_numpy(truth), torch.from_numpy(full))  # anomalib's AU-PRO on the full arrays
    assert ours["pixel_aupro"] == pytest.approx(exact, abs=2e-3)
    assert full.shape[1:] == ORIGINAL and maps.shape[1:] == INPUT  # really upsampled, not at input size


def test_good_images_count_at_their_own_size(tmp_path):
    maps, images, masks = replica(tmp_path, n=2)
    counts = original.accumulate(maps, images, masks, 0.0)
    assert counts.neg[0].sum() == ORIGINAL[0] * ORIGINAL[1] and counts.pos[0].sum() == 0
    assert counts.regions.shape[0] == 1  # image 1: one 8-connected region


@pytest.mark.perf
def test_cost_per_megapixel_image(tmp_path):
    """The protocol's cost at MVTec's largest size (1024 px masks): reported by the closing note, bounded here."""
    rng = np.random.default_rng(0)
    mask = np.zeros((1024, 1024), np.uint8)
    mask[300:500, 300:600] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.new("RGB", (1024, 1024)).save(tmp_path / "i.png")
    maps = rng.normal(0, 1, (4, 256, 256)).astype(np.float32)
    start = time.perf_counter()
    original.accumulate(maps, [str(tmp_path / "i.png")] * 4, [str(tmp_path / "m.png")] * 4, 0.5)
    per_image = (time.perf_counter() - start) / 4
    print(f"original protocol: {per_image * 1e3:.0f} ms per 1024 x 1024 image")
    assert per_image < 5.0


@pytest.mark.parametrize("tie", ["clipped", "quantised"])
def test_tied_maps_keep_their_bins_and_record_the_binning_error(tmp_path, tie):
    """Maps with ties (most pixels at one floor value, or values on a 0.25 grid): the bin edges stay apart, the binned
    metrics match a full-resolution computation closely, and the record's binning error is a real bound on it."""
    from vadbench import stats

    maps, images, masks = replica(tmp_path)
    maps = (np.maximum(maps, np.quantile(maps, 0.9)) if tie == "clipped" else np.round(maps * 4) / 4).astype(np.float32)
    counts = original.accumulate(maps, images, masks, 1.0)
    assert counts.edges is not None and len(counts.edges) > original.FULLRES_BINS / 3  # no collapse onto the ties
    ours = original.original_metrics(counts)
    full, truth = full_resolution(maps, masks)
    exact_auroc = roc_auc_score(truth.ravel(), full.ravel())
    assert ours["pixel_auroc"] == pytest.approx(exact_auroc, abs=5e-5)
    assert ours["pixel_aupro"] == pytest.approx(aupro(torch.from_numpy(truth), torch.from_numpy(full)), abs=5e-5)
    labels = np.array([i % 2 for i in range(len(maps))])
    recorded = stats.intervals(labels, maps.max(axis=(1, 2)), 0.5, counts, seed=0, resamples=50,
                               exact_pixel_auroc=ours["pixel_auroc"])  # what the run passes: the binned value
    assert abs(ours["pixel_auroc"] - exact_auroc) <= recorded["ci_pixel_binning_error"] < 1e-3
    assert "bounded by the pixel pairs sharing a bin" in recorded["ci_method"]
