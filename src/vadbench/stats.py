"""Statistics shared by a run and the report (numpy only): rank AUROC, F1-max, and 95 % intervals.

A run's metrics get intervals here: resample test images (stratified by label), recompute, and
take BCa percentiles (bias-corrected and accelerated, the acceleration from a leave-one-image-out
jackknife): `<metric>_ci_low` / `<metric>_ci_high` in the record, the method in `ci_method`. Plain
percentiles under-cover at MVTec's test sizes (about 90 % for a nominal 95 % on 90 images); BCa reaches
the nominal coverage (tests/test_uncertainty.py simulates it) except at the edges: a perfect AUROC
resamples to 1 every time. So an AUROC interval is widened, where it must be, to contain the score interval
(`score_interval`: Newcombe's method 5, a Wilson-type inversion of the Hanley-McNeil variance), which keeps a
width set by the test set's size at 0 and 1 (docs/report.md shows the coverage simulation).

Image AUROC on many resamples at once comes from per-image resample counts and the matrix of normal ×
anomalous pairs (`weighted_aurocs`). Pixel metrics resample whole images with their maps, through per-image
sufficient statistics: each image's normal and anomalous pixel counts in HIST_BINS bins of the map value
(`bin_edges`) and its counts above the pixel threshold; a resample sums the rows of its images, so 1,000
resamples cost one matrix product instead of 1,000 passes over every pixel; AU-PRO resamples each image's
8-connected regions with it, through per-region counts in the same bins. Pixel AUROC and F1-max from
histograms are exact up to ties within a bin (`ci_pixel_binning_error`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import ndimage

RESAMPLES = 1000
LEVEL = 0.95
HIST_BINS = 1000
METHOD = (f"BCa bootstrap, {RESAMPLES} resamples of test images stratified by label, seeded by the run; "
          "image AUROC widened to contain Newcombe's score interval")


def auroc_from_scores(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with midranks for ties; NaN with one class."""
    pos = labels.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def f1_max_from_scores(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over thresholds (predict `score >= t` at each distinct score); NaN without positives."""
    pos = labels.astype(bool)
    if not pos.any():
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    s, hit = scores[order], pos[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each distinct score: predict it and above
    tp = np.cumsum(hit)[last]
    fp = np.cumsum(~hit)[last]
    return float(np.max(2 * tp / (tp + fp + pos.sum())))


def f1_at(labels: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((labels & predicted).sum())
    denominator = float(labels.sum() + predicted.sum())
    return 2 * tp / denominator if labels.any() else math.nan


def stratified_indices(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) image indices, each resample drawing as many normal and anomalous images as the test set."""
    groups = [np.flatnonzero(labels == value) for value in (0, 1)]
    parts = [g[rng.integers(0, len(g), size=(resamples, len(g)))] for g in groups if len(g)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((resamples, 0), dtype=np.int64)


def resample_counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n) how often each image is drawn in each resample of `stratified_indices`."""
    rows = np.repeat(np.arange(len(draws)), draws.shape[1])
    return np.bincount(rows * n + draws.ravel(), minlength=len(draws) * n).reshape(len(draws), n).astype(float)


def pair_matrix(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(anomalous, normal) 1 where the anomalous image scores higher, 0.5 on a tie, else 0."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def weighted_aurocs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each resample given its per-image counts (resamples × N): the weighted share of ordered pairs."""
    labels = np.asarray(labels).astype(int)
    pos, neg = weights[:, labels == 1], weights[:, labels == 0]
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return np.full(len(weights), math.nan)
    pairs = pair_matrix(labels, np.asarray(scores, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((pos @ pairs) * neg).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def jackknife_aurocs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC with each image left out once (image order); NaN where that leaves one class."""
    labels = np.asarray(labels).astype(int)
    pairs = pair_matrix(labels, np.asarray(scores, dtype=np.float64))
    p, q = pairs.shape
    out = np.full(len(labels), math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[labels == 1] = (pairs.sum() - pairs.sum(axis=1)) / ((p - 1) * q)
        out[labels == 0] = (pairs.sum() - pairs.sum(axis=0)) / (p * (q - 1))
    return out


def bca_interval(boot: np.ndarray, theta: float, jack: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The `level` BCa interval of bootstrap values around the estimate theta, given its jackknife values."""
    boot, jack = boot[np.isfinite(boot)], jack[np.isfinite(jack)]
    if len(boot) == 0 or not math.isfinite(theta):
        return math.nan, math.nan
    unit = NormalDist()
    below = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / len(boot)
    z0 = unit.inv_cdf(min(max(below, 0.5 / len(boot)), 1 - 0.5 / len(boot)))
    spread = jack.mean() - jack if len(jack) else np.zeros(1)
    denominator = 6 * float((spread**2).sum()) ** 1.5
    a = float((spread**3).sum()) / denominator if denominator > 0 else 0.0
    quantiles = []
    for tail in ((1 - level) / 2, 1 - (1 - level) / 2):
        z = unit.inv_cdf(tail)
        quantiles.append(100 * unit.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    low, high = np.percentile(boot, quantiles)
    return float(low), float(high)


def _newcombe_variance(auroc: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Hanley and McNeil's variance of an AUROC with both class sizes replaced by N* = (n_pos + n_neg)/2 - 1
    (Newcombe 2006, method 5)."""
    middle = (n_pos + n_neg) / 2 - 1
    return auroc * (1 - auroc) / (n_pos * n_neg) * (1 + (middle - 1) * ((1 - auroc) / (2 - auroc) + auroc / (1 + auroc)))


def score_interval(aurocs, n_pos, n_neg, level: float = LEVEL) -> tuple[float, float]:
    """The score interval of the mean of independent AUROCs (one per category): the values whose distance from the
    estimate is z standard errors when every category is moved by the same amount d, the standard error taken at the
    moved values (Newcombe's method 5 for one AUROC). Keeps a width set by the test set's size at 0 and 1."""
    values, n_pos, n_neg = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (aurocs, n_pos, n_neg))
    if len(values) == 0 or not np.isfinite(values).all() or (n_pos < 1).any() or (n_neg < 1).any():
        return math.nan, math.nan
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    bounds = []
    for sign in (-1.0, 1.0):
        def gap(d: np.ndarray, sign: float = sign) -> np.ndarray:
            moved = np.clip(values[None, :] + sign * d[:, None], 0.0, 1.0)
            return d - z * np.sqrt(_newcombe_variance(moved, n_pos, n_neg).sum(axis=1)) / len(values)

        grid = np.linspace(0.0, 1.0, 401)
        first = int(np.argmax(gap(grid) > 0))  # the first move beyond z standard errors (gap(1) = 1 > 0)
        low, high = grid[max(first - 1, 0)], grid[first]
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if gap(np.array([mid]))[0] <= 0 else (low, mid)
        bounds.append(float(np.clip(values + sign * low, 0.0, 1.0).mean()))
    return bounds[0], bounds[1]


def widened(interval: tuple[float, float], floor: tuple[float, float]) -> tuple[float, float]:
    """The interval stretched to contain `floor` (the score interval) where that is wider; NaN parts are ignored."""
    lows = [v for v in (interval[0], floor[0]) if math.isfinite(v)]
    highs = [v for v in (interval[1], floor[1]) if math.isfinite(v)]
    return (min(lows) if lows else math.nan), (max(highs) if highs else math.nan)


def _jackknife(labels: np.ndarray, scores: np.ndarray, statistic) -> np.ndarray:
    keep = np.ones(len(labels), bool)
    values = []
    for i in range(len(labels)):
        keep[i] = False
        values.append(statistic(labels[keep], scores[keep]))
        keep[i] = True
    return np.array(values)


def image_intervals(labels: np.ndarray, scores: np.ndarray, threshold: float, seed: int,
                    resamples: int = RESAMPLES) -> dict[str, float]:
    """Intervals of image_auroc (BCa widened to the score interval), image_f1 (at the fitted threshold) and
    image_f1_max."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    draws = stratified_indices(labels, resamples, np.random.default_rng(seed))
    auroc = auroc_from_scores(labels, scores)
    boot = weighted_aurocs(labels, scores, resample_counts(draws, len(labels)))
    interval = bca_interval(boot, auroc, jackknife_aurocs(labels, scores))
    floor = score_interval([auroc], [int(labels.sum())], [int((labels == 0).sum())])
    out = dict(zip(("image_auroc_ci_low", "image_auroc_ci_high"), widened(interval, floor)))
    statistics = {"image_f1_max": f1_max_from_scores, "image_f1": lambda y, s: f1_at(y.astype(bool), s > threshold)}
    for name, statistic in statistics.items():
        boot = np.array([statistic(labels[idx], scores[idx]) for idx in draws])
        interval = bca_interval(boot, statistic(labels, scores), _jackknife(labels, scores, statistic))
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval
    return {key: out[key] for key in (f"{m}_ci_{side}" for m in ("image_auroc", "image_f1_max", "image_f1")
                                      for side in ("low", "high"))}


@dataclass
class PixelCounts:
    """Sufficient statistics of the test pixels: per image, normal and anomalous pixels per bin of the map value
    (bins ascending), per 8-connected ground-truth region its pixels per bin, and the pixel threshold's bin."""

    neg: np.ndarray  # (images, bins)
    pos: np.ndarray  # (images, bins)
    regions: np.ndarray  # (regions, bins)
    region_image: np.ndarray  # (regions,) the image each region belongs to
    at: int  # bins above this one are predicted anomalous
    full_size: bool = False  # counted at each mask's original size, where no exact pixel AUROC is computed
    edges: np.ndarray | None = None  # the bin edges (bin k holds values in (edges[k-1], edges[k]])


def bin_edges(maps: np.ndarray, threshold: float, bins: int = HIST_BINS) -> np.ndarray:
    """Bin edges of the map values (from at most ~4M samples) with the pixel threshold as an edge: a third at
    quantiles of the values, a third spread over the distinct values and a third evenly over their range (where an
    upsampled map puts values between them), so that ties (maps clipped at 0, quantised maps) cannot collapse the
    edges; a value that holds more than a bin's share of the pixels gets a bin of its own, 8 float32 steps either
    side (an upsampled map repeats it up to rounding)."""
    flat = np.asarray(maps, dtype=np.float32).reshape(-1)
    sample = flat[:: max(1, flat.size // 4_000_000)]
    values, counts = np.unique(sample, return_counts=True)
    share = bins // 3
    by_mass = np.quantile(sample, np.linspace(0, 1, share + 1)[1:-1])
    by_value = values[np.unique(np.linspace(0, len(values) - 1, share + 1).round().astype(int))]
    by_range = np.linspace(values[0], values[-1], bins - 2 * share + 1) if len(values) else values
    inner = np.r_[by_mass, by_value, by_range]
    heavy = values[counts > len(sample) / bins].astype(np.float64)
    step = 8 * np.spacing(np.abs(heavy).astype(np.float32)).astype(np.float64)
    return np.unique(np.r_[inner.astype(np.float64), heavy - step, heavy + step, np.float64(np.float32(threshold))])


def binning_bound(neg: np.ndarray, pos: np.ndarray, edges: np.ndarray | None = None) -> float:
    """The most the pixel AUROC of summed histograms can differ from the exact one: half the share of anomalous ×
    normal pixel pairs that share a bin (a histogram counts each such pair as a tie), leaving out the bins of one
    tied value (`bin_edges`: at most 16 float32 steps wide), whose pixels differ by rounding only."""
    pairs = float(neg.sum()) * float(pos.sum())
    if pairs <= 0:
        return math.nan
    shared = neg.astype(float) * pos
    if edges is not None and len(edges) > 1:
        width = np.diff(edges)
        narrow = width <= 16 * np.spacing(np.abs(edges[1:]).astype(np.float32)).astype(np.float64) * 1.0001
        shared[1:-1][narrow] = 0.0
    return 0.5 * float(shared.sum()) / pairs


def count_image(mask: np.ndarray, amap: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """One image's normal and anomalous pixel counts per bin, and each of its regions' (8-connected) counts."""
    k = len(edges) + 1
    index = np.searchsorted(edges, np.asarray(amap, dtype=np.float64), side="left")  # v <= edge: at or below
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    regions = [np.bincount(index[labelled == r], minlength=k) for r in range(1, n + 1)]
    return np.bincount(index[~mask], minlength=k), np.bincount(index[mask], minlength=k), regions


def collect(pairs, edges: np.ndarray, threshold: float) -> PixelCounts:
    """PixelCounts of (mask, map) pairs, streamed one image at a time."""
    neg, pos, regions, owner = [], [], [], []
    for i, (mask, amap) in enumerate(pairs):
        n_row, p_row, image_regions = count_image(np.asarray(mask, dtype=bool), amap, edges)
        neg.append(n_row)
        pos.append(p_row)
        regions += image_regions
        owner += [i] * len(image_regions)
    k = len(edges) + 1
    return PixelCounts(np.array(neg, np.int64).reshape(-1, k), np.array(pos, np.int64).reshape(-1, k),
                       np.array(regions, np.int64).reshape(-1, k), np.array(owner, np.int64),
                       int(np.searchsorted(edges, threshold, side="left")), edges=edges)


def pixel_statistics(masks: np.ndarray, maps: np.ndarray, threshold: float, bins: int = HIST_BINS) -> PixelCounts:
    """PixelCounts of maps and masks of the same size (`pixel_protocol: input`)."""
    return collect(zip(masks, maps, strict=True), bin_edges(maps, threshold, bins), threshold)


def aupro_from_counts(neg: np.ndarray, regions: np.ndarray, weights: np.ndarray | None = None,
                      fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve for FPR in [0, fpr_limit] / fpr_limit, from summed normal-pixel counts (K,) and
    per-region counts (R × K), regions weighted (how often each is drawn); NaN without a region."""
    weights = np.ones(len(regions)) if weights is None else weights
    if len(regions) == 0 or weights.sum() == 0 or neg.sum() == 0:
        return math.nan
    fpr = np.r_[np.cumsum(neg[::-1])[::-1] / neg.sum(), 0.0][::-1]  # cut below each bin, from the top down
    overlap = np.cumsum(regions[:, ::-1], axis=1)[:, ::-1] / regions.sum(axis=1, keepdims=True)
    pro = np.r_[weights @ overlap / weights.sum(), 0.0][::-1]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # the curve at the limit, linearly interpolated
        j = int(np.argmax(fpr > fpr_limit))
        y_limit = pro[j - 1] + (pro[j] - pro[j - 1]) * (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_limit]
    return float(np.trapezoid(y, x) / fpr_limit)


def histogram_metrics(neg: np.ndarray, pos: np.ndarray, at: int) -> dict[str, np.ndarray]:
    """Pixel AUROC, F1 at the threshold and F1-max of summed histograms (rows: resamples; bins ascending)."""
    n_neg, n_pos = neg.sum(axis=1).astype(float), pos.sum(axis=1).astype(float)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]  # predicted anomalous: this bin and above
        fp = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
        f1 = 2 * tp / (tp + fp + n_pos[:, None])
        above_tp, above_fp = (tp[:, at + 1], fp[:, at + 1]) if at + 1 < tp.shape[1] else (0 * n_pos, 0 * n_pos)
        f1_at_threshold = 2 * above_tp / (above_tp + above_fp + n_pos)
    undefined = (n_pos == 0) | (n_neg == 0)
    return {"pixel_auroc": np.where(undefined, np.nan, auroc),
            "pixel_f1": np.where(n_pos == 0, np.nan, f1_at_threshold),
            "pixel_f1_max": np.where(n_pos == 0, np.nan, np.nanmax(f1, axis=1))}


def intervals(labels: np.ndarray, scores: np.ndarray, image_threshold: float, counts: PixelCounts, seed: int,
              exact_pixel_auroc: float = math.nan, resamples: int = RESAMPLES,
              pixel_note: str = "") -> dict[str, float | str]:
    """Every metric's interval (record fields `<metric>_ci_low/_ci_high`), the method, and the binning error:
    |histogram - exact| pixel AUROC where the exact value at the counts' size is given, else `binning_bound`."""
    labels = np.asarray(labels).astype(int)
    out: dict[str, float | str] = image_intervals(labels, scores, image_threshold, seed, resamples)
    draws = stratified_indices(labels, resamples, np.random.default_rng(seed + 1))
    weights = np.zeros((resamples, len(labels)))
    np.add.at(weights, (np.repeat(np.arange(resamples), draws.shape[1]), draws.ravel()), 1)
    boot = histogram_metrics(weights @ counts.neg, weights @ counts.pos, counts.at)
    total_neg, total_pos = counts.neg.sum(axis=0, keepdims=True), counts.pos.sum(axis=0, keepdims=True)
    full = histogram_metrics(total_neg, total_pos, counts.at)
    jack = histogram_metrics(total_neg - counts.neg, total_pos - counts.pos, counts.at)  # leave one image out
    boot["pixel_aupro"] = np.array([aupro_from_counts(w @ counts.neg, counts.regions, w[counts.region_image])
                                    for w in weights])
    full["pixel_aupro"] = np.array([aupro_from_counts(total_neg[0], counts.regions)])
    jack["pixel_aupro"] = np.array([aupro_from_counts(total_neg[0] - counts.neg[i], counts.regions,
                                                      (counts.region_image != i).astype(float))
                                    for i in range(len(labels))])
    for name, values in boot.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bca_interval(values, float(full[name][0]), jack[name])
    measured = not counts.full_size and math.isfinite(exact_pixel_auroc)
    out["ci_pixel_binning_error"] = (abs(float(full["pixel_auroc"][0]) - exact_pixel_auroc) if measured
                                     else binning_bound(total_neg[0], total_pos[0], counts.edges))
    out["ci_method"] = (METHOD + f"; pixel metrics from per-image {counts.neg.shape[1] - 1}-edge histograms"
                        f"{pixel_note} (AU-PRO from per-region ones); binning error "
                        + ("measured against the exact pixel AUROC" if measured else "bounded by the pixel pairs "
                           "sharing a bin (no exact value at this size)"))
    return out
