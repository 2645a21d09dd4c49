"""vadbench.metrics against independent computations (sklearn, scipy, numpy, hand-worked cases)."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from vadbench.run.metrics import METRIC_KEYS, Thresholds, compute_metrics, fit_thresholds

THRESH = Thresholds(image=0.5, pixel=0.5, method="test")


def make_case(seed: int, n: int = 6, size: int = 24, scale: float = 1.0, shift: float = 0.0):
    """Random blob masks (smoothed noise, so regions touch diagonally at times) and noisy maps."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 1.5, 1.5))
    masks = (noise > np.quantile(noise, 0.85)) & labels[:, None, None].astype(bool)
    maps = (0.6 * masks + rng.random((n, size, size))).astype(np.float32) * scale + shift
    scores = maps.reshape(n, -1).max(axis=1) + rng.normal(scale=0.3 * scale, size=n)
    return labels, scores, masks, maps


def reference_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """MVTec AD's AU-PRO written out: at every distinct map value t (anomalous: map >= t), FPR over
    normal pixels and PRO = mean overlap of 8-connected regions; trapezoid to `limit`, / limit."""
    def frac_at_least(values: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return 1.0 - np.searchsorted(np.sort(values), ts, side="left") / values.size

    ts = np.unique(maps)[::-1].astype(np.float64)
    overlaps = []
    for mask, amap in zip(masks, maps):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        overlaps += [frac_at_least(amap[lab == k].astype(np.float64), ts) for k in range(1, n + 1)]
    fpr = np.append(0.0, frac_at_least(maps[~masks].astype(np.float64), ts))
    pro = np.append(0.0, np.mean(overlaps, axis=0))
    j = int(np.argmax(fpr > limit))  # first point past the limit (fpr reaches 1 at the end)
    p_lim = pro[j - 1] + (pro[j] - pro[j - 1]) * (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    xs, ys = np.append(fpr[:j], limit), np.append(pro[:j], p_lim)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / limit)


def sklearn_f1_max(target: np.ndarray, preds: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(target.ravel(), preds.ravel())
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)
    return float(f1.max())


def test_returns_exactly_the_documented_keys_and_copies_thresholds():
    labels, scores, masks, maps = make_case(0)
    th = Thresholds(image=1.25, pixel=0.75, method="quantile(image=1.0,pixel=0.999) of held-out train images")
    out = compute_metrics(labels, scores, masks, maps, th)
    assert tuple(out) == METRIC_KEYS
    assert set(out) == {
        "image_auroc", "pixel_auroc", "pixel_aupro", "image_f1", "pixel_f1", "image_f1_max",
        "pixel_f1_max", "image_f1_baseline", "image_threshold", "pixel_threshold", "threshold_method",
    }
    assert (out["image_threshold"], out["pixel_threshold"]) == (1.25, 0.75)
    assert out["threshold_method"] == th.method
    assert all(isinstance(out[k], float) for k in METRIC_KEYS if k != "threshold_method")


@pytest.mark.parametrize("seed,scale,shift", [(1, 1.0, 0.0), (2, 1.0, 0.0), (3, 1000.0, -500.0)])
def test_auroc_and_f1_match_sklearn(seed, scale, shift):
    labels, scores, masks, maps = make_case(seed, scale=scale, shift=shift)
    th = Thresholds(image=float(np.median(scores)), pixel=0.9 * scale + shift, method="test")
    out = compute_metrics(labels, scores, masks, maps, th)
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert out["image_f1"] == pytest.approx(f1_score(labels, scores > th.image), abs=1e-6)
    assert out["pixel_f1"] == pytest.approx(f1_score(masks.ravel(), maps.ravel() > th.pixel), abs=1e-6)
    # anomalib's F1Max adds 1e-10 to the denominator: far below the tolerance
    assert out["image_f1_max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)
    assert out["pixel_f1_max"] == pytest.approx(sklearn_f1_max(masks, maps), abs=1e-6)


@pytest.mark.parametrize("seed,limit", [(4, 0.3), (5, 0.3), (6, 0.3), (7, 0.1)])
def test_aupro_matches_independent_reference(seed, limit):
    # anomalib's AUPRO sweeps every distinct map value (no binning), so only float32 rounding
    # separates it from the float64 reference: tolerance 1e-5.
    labels, scores, masks, maps = make_case(seed)
    out = compute_metrics(labels, scores, masks, maps, THRESH, aupro_fpr_limit=limit)
    expected = reference_aupro(masks, maps, limit)
    assert 0.05 < expected < 0.999  # a non-trivial case
    assert out["pixel_aupro"] == pytest.approx(expected, abs=1e-5)


def test_aupro_averages_over_regions_not_pixels():
    # One big region found, one small region missed: PRO = 0.5 on the flat part, whereas the
    # pixel-weighted TPR would be 16/17. Map: big region 1.0, everything else 0.
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:5, 1:5] = True   # 16 pixels
    masks[1, 7, 7] = True       # 1 pixel
    maps = np.zeros((2, 10, 10), np.float32)
    maps[0, 1:5, 1:5] = 1.0
    out = compute_metrics(np.array([1, 1]), np.array([1.0, 0.0]), masks, maps, THRESH)
    # curve: (0,0) -> (0,0.5) at t=1 -> (1,1) at t=0; area to 0.3 = 0.3*(0.5+0.65)/2, / 0.3
    assert out["pixel_aupro"] == pytest.approx((0.5 + 0.65) / 2, abs=1e-6)
    assert out["pixel_aupro"] == pytest.approx(reference_aupro(masks, maps), abs=1e-6)


def test_aupro_uses_8_connectivity_like_mvtec():
    # A diagonal pair is ONE region under 8-connectivity (MVTec's 3x3 structure), two under 4.
    # Found at FPR 0: one pixel of the pair and all of a separate 2-pixel region.
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 2, 2] = masks[0, 3, 3] = True
    masks[0, 0, 0:2] = True
    maps = np.zeros((1, 6, 6), np.float32)
    maps[0, 2, 2] = maps[0, 0, 0] = maps[0, 0, 1] = 1.0
    out = compute_metrics(np.array([1]), np.array([1.0]), masks, maps, THRESH)
    # 8-conn: PRO 0.75 at FPR 0, 0.825 at 0.3 -> (0.75+0.825)/2; 4-conn would give 2/3 -> 0.7167
    assert out["pixel_aupro"] == pytest.approx((0.75 + 0.825) / 2, abs=1e-6)


def test_perfect_maps_and_scores_give_ones():
    labels, _, masks, _ = make_case(8)
    maps = masks.astype(np.float32)
    scores = labels + 0.1
    out = compute_metrics(labels, scores, masks, maps, Thresholds(0.5, 0.5, "test"))
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1", "pixel_f1",
                "image_f1_max", "pixel_f1_max"):
        assert out[key] == pytest.approx(1.0, abs=1e-6), key


def test_raw_scores_far_outside_unit_interval():
    # torchmetrics would sigmoid these (all -> 1.0 in float32, all tied, AUROC 0.5);
    # AUROC depends on order only, so the answer must be sklearn's.
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([20.0, 21.0, 22.0, 23.0, 24.0, 25.0])
    masks = np.zeros((6, 4, 4), bool)
    masks[labels == 1, 1:3, 1:3] = True
    maps = (masks * 50.0 + 100.0 + np.arange(16).reshape(4, 4) / 100).astype(np.float32)
    maps[0, 0, 0] = -300.0  # negative values too
    out = compute_metrics(labels, scores, masks, maps, Thresholds(21.5, 120.0, "test"))
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert out["image_auroc"] == pytest.approx(8 / 9)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert out["image_f1_max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)
    assert out["image_f1"] == pytest.approx(f1_score(labels, scores > 21.5))


def test_f1_at_threshold_hand_computed_strictly_greater():
    # scores > 0.5 -> predicted [0,0,0,1,0]: TP=1, FP=0, FN=2 -> F1 = 2/(2+0+2) = 0.5
    # (with >= it would be [0,1,1,1,0]: TP=2, FP=1, FN=1 -> 2/3)
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.5, 0.7, 0.2])
    masks = np.zeros((5, 2, 2), bool)
    masks[2:, 0, 0] = True
    maps = np.zeros((5, 2, 2), np.float32)
    maps[:, 0, 0] = scores  # pixel (0,0) mirrors the image case; the 15 other pixels are 0 and normal
    out = compute_metrics(labels, scores, masks, maps, Thresholds(0.5, 0.5, "test"))
    assert out["image_f1"] == pytest.approx(0.5)
    assert out["pixel_f1"] == pytest.approx(0.5)
    # best threshold keeps 0.5 and above: TP=2, FP=1, FN=1 -> 2/3; or everything >= 0.2: TP=3, FP=1 -> 6/7
    assert out["image_f1_max"] == pytest.approx(6 / 7)


def test_pixel_f1_threshold_between_float32_values_is_exact():
    # A float64 threshold just below a float32 map value: the value is above it (numpy float64
    # says so); rounding the threshold to the nearest float32 would wrongly make them equal.
    v = np.float32(0.1)
    masks = np.zeros((1, 2, 2), bool)
    masks[0, 0, :] = True
    maps = np.array([[[v, 0.0], [0.0, 0.0]]], np.float32)
    for th in (float(v) - 1e-12, float(v) + 1e-12, float(v)):
        out = compute_metrics(np.array([1]), np.array([1.0]), masks, maps, Thresholds(0.5, th, "test"))
        expected = f1_score(masks.ravel(), maps.ravel().astype(np.float64) > th)
        assert out["pixel_f1"] == pytest.approx(expected), th


def test_image_f1_baseline_formula():
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0])  # d=3, N=10
    rng = np.random.default_rng(9)
    masks = np.zeros((10, 4, 4), bool)
    masks[labels == 1, 0, 0] = True
    out = compute_metrics(labels, rng.random(10), masks, rng.random((10, 4, 4)), THRESH)
    assert out["image_f1_baseline"] == pytest.approx(2 * 3 / (3 + 10))
    assert out["image_f1_baseline"] == pytest.approx(f1_score(labels, np.ones(10)))


def test_fit_thresholds_are_numpy_quantiles_of_what_it_is_given():
    rng = np.random.default_rng(10)
    val_scores = rng.normal(size=17)
    val_maps = rng.gamma(2.0, size=(5, 32, 32)).astype(np.float32)
    th = fit_thresholds(val_scores, val_maps)
    assert th.image == pytest.approx(val_scores.max())
    assert th.pixel == pytest.approx(float(np.quantile(val_maps.ravel(), 0.999)), rel=1e-6)
    assert th.method == "quantile(image=1.0,pixel=0.999) of held-out train images"
    th2 = fit_thresholds(val_scores, val_maps, image_quantile=0.9, pixel_quantile=0.5)
    assert th2.image == pytest.approx(np.quantile(val_scores, 0.9))
    assert th2.pixel == pytest.approx(np.median(val_maps), rel=1e-6)
    assert "image=0.9" in th2.method and "pixel=0.5" in th2.method
    # with image quantile 1.0 no held-out normal image is predicted anomalous (> threshold)
    assert not (val_scores > th.image).any()


def test_fit_thresholds_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_thresholds(np.array([]), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError):
        fit_thresholds(np.array([1.0, np.nan]), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError):
        fit_thresholds(np.array([1.0]), np.zeros((1, 2, 2)), image_quantile=1.5)


def test_one_class_gives_nan_and_warns(caplog):
    rng = np.random.default_rng(11)
    labels = np.zeros(4, int)
    masks = np.zeros((4, 8, 8), bool)
    with caplog.at_level(logging.WARNING, logger="vadbench.metrics"):
        out = compute_metrics(labels, rng.random(4), masks, rng.random((4, 8, 8)), THRESH)
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1", "pixel_f1",
                "image_f1_max", "pixel_f1_max", "image_f1_baseline"):
        assert math.isnan(out[key]), key
    assert "image_auroc" in caplog.text and "pixel_aupro" in caplog.text


def test_all_defective_images_nan_auroc_but_f1_defined():
    labels = np.ones(3, int)
    rng = np.random.default_rng(12)
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 2:4, 2:4] = True
    scores = np.array([0.2, 0.7, 0.9])
    out = compute_metrics(labels, scores, masks, rng.random((3, 8, 8)), THRESH)
    assert math.isnan(out["image_auroc"])
    assert out["image_f1"] == pytest.approx(f1_score(labels, scores > 0.5))
    assert out["image_f1_baseline"] == pytest.approx(1.0)
    assert not math.isnan(out["pixel_aupro"])


def test_bad_inputs_raise():
    labels, scores, masks, maps = make_case(13)
    bad_maps = maps.copy()
    bad_maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        compute_metrics(labels, scores, masks, bad_maps, THRESH)
    with pytest.raises(ValueError):
        compute_metrics(labels, scores, masks, maps[:, :-1], THRESH)
    with pytest.raises(ValueError):
        compute_metrics(labels + 1, scores, masks, maps, THRESH)
    with pytest.raises(ValueError):
        Thresholds(math.nan, 0.5, "test")


def test_replay_thresholds_are_anomalibs_adaptive_f1_thresholds():
    """study_replay's thresholds: the value that maximises F1 of `score >= t` on the validation images, as
    anomalib's F1AdaptiveThreshold (its default) picks it; checked by brute force over every candidate."""
    from vadbench.run.metrics import adaptive_thresholds

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 60)
    scores = rng.normal(labels * 1.2, 1.0)
    masks = rng.random((6, 8, 8)) < 0.2
    maps = (rng.normal(0, 1, masks.shape) + masks).astype(np.float32)

    def brute(values, target):
        f1 = [(2 * np.sum((values >= t) & target)) / (np.sum(values >= t) + np.sum(target)) for t in np.unique(values)]
        return float(np.unique(values)[int(np.argmax(f1))])

    found = adaptive_thresholds(labels, scores, masks, maps, "the test set")
    assert found.image == pytest.approx(brute(scores, labels.astype(bool)), abs=1e-6)
    assert found.pixel == pytest.approx(brute(maps.ravel(), masks.ravel()), abs=1e-6)
    assert found.method == "anomalib F1AdaptiveThreshold on the test set"
