"""Bootstrap intervals: the resampled statistics against independent computations, and the intervals' coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from vadbench import stats
from vadbench.run.metrics import aupro


def test_auroc_and_f1_max_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # many ties
    assert stats.auroc_from_scores(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.nanmax(2 * precision * recall / (precision + recall))
    assert stats.f1_max_from_scores(labels, scores) == pytest.approx(best, abs=1e-12)


def test_pixel_histograms_give_the_full_data_metrics():
    rng = np.random.default_rng(2)
    masks = rng.random((30, 32, 32)) < 0.1
    maps = (rng.normal(0, 1, masks.shape) + 1.2 * masks).astype(np.float32)
    threshold = 1.0
    counts = stats.pixel_statistics(masks, maps, threshold)
    full = stats.histogram_metrics(counts.neg.sum(axis=0, keepdims=True), counts.pos.sum(axis=0, keepdims=True), counts.at)
    assert full["pixel_auroc"][0] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-3)
    assert full["pixel_f1"][0] == pytest.approx(f1_score(masks.ravel(), maps.ravel() > threshold), abs=1e-12)
    precision, recall, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    assert full["pixel_f1_max"][0] == pytest.approx(np.nanmax(2 * precision * recall / (precision + recall)), abs=2e-3)
    exact = aupro(torch.from_numpy(masks), torch.from_numpy(maps))  # anomalib's AU-PRO (MVTec's compute_pro)
    assert stats.aupro_from_counts(counts.neg.sum(axis=0), counts.regions) == pytest.approx(exact, abs=2e-3)


def test_intervals_hold_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(20, int), np.ones(40, int)]
    scores = rng.normal(labels * 1.5, 1.0)
    masks = (rng.random((60, 16, 16)) < 0.05) & (labels[:, None, None] == 1)
    maps = rng.normal(0, 1, masks.shape).astype(np.float32) + masks
    counts = stats.pixel_statistics(masks, maps, 1.0)
    first = stats.intervals(labels, scores, 0.7, counts, seed=5, exact_pixel_auroc=0.7)
    assert first == stats.intervals(labels, scores, 0.7, counts, seed=5, exact_pixel_auroc=0.7)
    auroc = roc_auc_score(labels, scores)
    assert first["image_auroc_ci_low"] < auroc < first["image_auroc_ci_high"]
    for metric in ("image_f1", "image_f1_max", "pixel_auroc", "pixel_f1", "pixel_f1_max", "pixel_aupro"):
        assert first[f"{metric}_ci_low"] <= first[f"{metric}_ci_high"], metric
    estimate = stats.aupro_from_counts(counts.neg.sum(axis=0), counts.regions)
    assert first["pixel_aupro_ci_low"] <= estimate <= first["pixel_aupro_ci_high"]
    assert "1000 resamples" in first["ci_method"] and "AU-PRO from per-region" in first["ci_method"]


def test_a_single_class_has_no_interval():
    out = stats.image_intervals(np.zeros(10, int), np.arange(10.0), 5.0, seed=0, resamples=50)
    assert math.isnan(out["image_auroc_ci_low"]) and math.isnan(out["image_f1_ci_high"])


def test_95_percent_intervals_cover_the_true_auroc_in_at_least_93_percent_of_test_sets():
    """200 simulated test sets (binormal scores, 30 normal and 60 defective images, as small as MVTec's) with a
    known AUROC of Φ(d/√2); the run's interval must cover it in at least 93 % of them."""
    d = 1.3
    truth = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2026)
    covered = 0
    for trial in range(200):
        labels = np.r_[np.zeros(30, int), np.ones(60, int)]
        scores = rng.normal(labels * d, 1.0)
        out = stats.image_intervals(labels, scores, 0.5, seed=trial)
        covered += out["image_auroc_ci_low"] <= truth <= out["image_auroc_ci_high"]
    assert covered / 200 >= 0.93, covered


def test_a_perfect_score_on_15_plus_15_images_keeps_an_honest_interval():
    """A perfect image AUROC on 15 + 15 test images: the lower bound sits below 1, and over 300 simulated test sets
    with a true AUROC of 0.983 (a quarter of them perfect) the intervals cover it at least 93 % of the time."""
    labels = np.r_[np.zeros(15, int), np.ones(15, int)]
    perfect = stats.image_intervals(labels, labels * 3.0 + np.linspace(0, 0.1, 30), 0.5, seed=0)
    assert perfect["image_auroc_ci_high"] == 1.0 and perfect["image_auroc_ci_low"] < 0.9
    truth, d = 0.983, math.sqrt(2) * norm.ppf(0.983)
    rng = np.random.default_rng(21)
    covered = perfect_sets = 0
    for trial in range(300):
        scores = rng.normal(labels * d, 1.0)
        perfect_sets += stats.auroc_from_scores(labels, scores) == 1.0
        out = stats.image_intervals(labels, scores, 0.5, seed=trial, resamples=500)
        covered += out["image_auroc_ci_low"] <= truth <= out["image_auroc_ci_high"]
    assert perfect_sets > 40  # the edge is really exercised
    assert covered / 300 >= 0.93, covered


def test_the_score_interval_is_newcombes_method_5():
    """Solved by hand: the Wilson-type bound A of a perfect AUROC satisfies (1 - A)^2 = z^2 V(A), V from Hanley and
    McNeil with both class sizes replaced by N* = (m + n)/2 - 1; zero mirrors one."""
    low, high = stats.score_interval([1.0], [15], [15])
    n_star, z = 14, norm.ppf(0.975)
    variance = low * (1 - low) / 225 * (1 + (n_star - 1) * ((1 - low) / (2 - low) + low / (1 + low)))
    assert (1 - low) ** 2 == pytest.approx(z**2 * variance, rel=1e-6) and high == 1.0
    assert stats.score_interval([0.0], [15], [15]) == pytest.approx((0.0, 1 - low))
    assert stats.score_interval([0.9, 0.9], [15, 15], [15, 15])[0] > stats.score_interval([0.9], [15], [15])[0]  # two = narrower


def test_resampled_aurocs_match_the_direct_computation():
    rng = np.random.default_rng(8)
    labels = np.r_[np.zeros(25, int), np.ones(35, int)]
    scores = np.round(rng.normal(labels, 1.0), 1)  # ties
    draws = stats.stratified_indices(labels, 50, rng)
    direct = [stats.auroc_from_scores(labels[i], scores[i]) for i in draws]
    assert stats.weighted_aurocs(labels, scores, stats.resample_counts(draws, len(labels))) == pytest.approx(direct, abs=1e-12)
    keep = [np.arange(60) != i for i in range(60)]
    assert stats.jackknife_aurocs(labels, scores) == pytest.approx([stats.auroc_from_scores(labels[k], scores[k]) for k in keep])
    assert stats.stratified_indices(np.zeros(0, int), 7, rng).shape == (7, 0)  # no image: no crash
