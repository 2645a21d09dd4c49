"""How often the intervals cover the truth, and what the report's 5,000 resamples cost (not a test; run by hand).

    python benchmarks/interval_coverage.py [--trials 400] [--cost]

Coverage: simulated test sets (binormal scores: normal images N(0, 1), defective N(d, 1), so the true AUROC is
Φ(d/√2)), each given the intervals the project reports and, beside them, plain BCa: a run's image AUROC
(vadbench.stats.image_intervals, 1,000 resamples), a dataset mean over categories and a paired difference of two
models on the same images (vadbench.report.uncertainty, 2,000 resamples here; the report uses 5,000). Prints a
Markdown table: coverage of the true value, mean width, and for differences how often 0 is excluded.
Cost: the report's answer (answer_means and answer_differences) on MVTec-sized studies (4 models × 15 categories at
MVTec AD's test counts with 1 and 3 seeds, 10 models: 45 comparisons) at 1,000 and 5,000 resamples, seconds on
this machine.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
from scipy.stats import norm

from vadbench import stats
from vadbench.records import CELL
from vadbench.report import uncertainty
from vadbench.report.pairing import Cell

#: MVTec AD's test sets (good, defective) per category.
MVTEC_TEST = ((20, 63), (58, 92), (23, 109), (28, 89), (21, 57), (40, 70), (32, 92), (22, 93), (26, 141),
              (41, 119), (33, 84), (12, 30), (60, 40), (19, 60), (32, 119))


def separation(auroc: float) -> float:
    return math.sqrt(2) * norm.ppf(auroc)


def cell(labels: np.ndarray, scores: np.ndarray) -> Cell:
    scores = np.atleast_2d(scores)
    return Cell(np.array([f"{i:05d}" for i in range(len(labels))]), labels, scores, tuple(range(len(scores))))


def run_coverage(n_good: int, n_bad: int, truth: float, trials: int, rng: np.random.Generator) -> dict:
    labels, d = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)], separation(truth)
    hits = {"reported": 0, "bca": 0}
    width = {"reported": 0.0, "bca": 0.0}
    perfect = 0
    for trial in range(trials):
        scores = rng.normal(labels * d, 1.0)
        auroc = stats.auroc_from_scores(labels, scores)
        perfect += auroc in (0.0, 1.0)
        reported = stats.image_intervals(labels, scores, 0.0, seed=trial)
        low, high = reported["image_auroc_ci_low"], reported["image_auroc_ci_high"]
        draws = stats.stratified_indices(labels, stats.RESAMPLES, np.random.default_rng(trial))
        boot = stats.weighted_aurocs(labels, scores, stats.resample_counts(draws, len(labels)))
        bca = stats.bca_interval(boot, auroc, stats.jackknife_aurocs(labels, scores))
        for name, (lo, hi) in (("reported", (low, high)), ("bca", bca)):
            hits[name] += lo <= truth <= hi
            width[name] += hi - lo
    return {"what": f"a run's AUROC, {n_good} + {n_bad} images", "truth": f"{truth}", "at 0 or 1": perfect / trials,
            **{f"coverage {k}": hits[k] / trials for k in hits}, **{f"width {k}": width[k] / trials for k in width}}


def pair_coverage(n_good: int, n_bad: int, k: int, truth_a: float, truth_b: float, trials: int,
                  rng: np.random.Generator, resamples: int = 2000) -> list[dict]:
    """A mean over k categories (model a) and the paired difference b − a, scores correlated through the images."""
    labels, da, db = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)], separation(truth_a), separation(truth_b)
    found = {key: 0.0 for key in ("mean reported", "mean bca", "diff reported", "diff bca", "w mean reported",
                                   "w mean bca", "w diff reported", "w diff bca", "s diff reported", "s diff bca",
                                   "edge")}
    for _ in range(trials):
        resampler, parts_a, parts_b = uncertainty.Resampler(resamples), [], []
        for c in range(k):
            image = rng.normal(0, 1, len(labels))  # what makes an image hard for both models
            a = labels * da + 0.75 * image + math.sqrt(1 - 0.75**2) * rng.normal(0, 1, len(labels))
            b = labels * db + 0.75 * image + math.sqrt(1 - 0.75**2) * rng.normal(0, 1, len(labels))
            parts_a.append(resampler(("a",), c, cell(labels, a)))
            parts_b.append(resampler(("b",), c, cell(labels, b)))
        found["edge"] += any(p.estimate in (0.0, 1.0) for p in parts_a + parts_b)
        estimate, boot, jack = uncertainty._mean_parts(parts_a)
        intervals = {"mean reported": uncertainty.mean_interval(parts_a)[1:],
                     "mean bca": stats.bca_interval(boot, estimate, jack)}
        (ea, ba, ja), (eb, bb, jb) = uncertainty._mean_parts(parts_a), uncertainty._mean_parts(parts_b)
        intervals["diff reported"] = uncertainty.difference_interval(parts_a, parts_b)[1:]
        intervals["diff bca"] = stats.bca_interval(bb - ba, eb - ea, jb - ja)
        for name, (low, high) in intervals.items():
            truth = truth_a if name.startswith("mean") else truth_b - truth_a
            found[name] += low <= truth <= high
            found[f"w {name}"] += high - low
            if name.startswith("diff"):
                found[f"s {name}"] += not low <= 0 <= high
    share = {key: value / trials for key, value in found.items()}
    where = f"{k} categories of {n_good} + {n_bad} images"
    return [{"what": f"a mean over {where}", "truth": f"{truth_a}", "at 0 or 1": share["edge"],
             "coverage reported": share["mean reported"], "coverage bca": share["mean bca"],
             "width reported": share["w mean reported"], "width bca": share["w mean bca"]},
            {"what": f"a paired difference, {where}", "truth": f"{truth_b} − {truth_a}", "at 0 or 1": share["edge"],
             "coverage reported": share["diff reported"], "coverage bca": share["diff bca"],
             "width reported": share["w diff reported"], "width bca": share["w diff bca"],
             "0 excluded reported": share["s diff reported"], "0 excluded bca": share["s diff bca"]}]


def coverage_table(trials: int) -> pd.DataFrame:
    rng = np.random.default_rng(2026)
    rows = [run_coverage(15, 15, 0.983, trials, rng), run_coverage(15, 15, 0.9, trials, rng),
            run_coverage(30, 60, 0.821, trials, rng), run_coverage(20, 60, 0.99, trials, rng)]
    pair_trials = max(trials // 3, 50)
    rows += pair_coverage(15, 15, 3, 0.983, 0.95, pair_trials, rng)
    rows += pair_coverage(20, 60, 5, 0.99, 0.97, pair_trials, rng)
    rows += pair_coverage(30, 60, 3, 0.85, 0.80, pair_trials, rng)
    return pd.DataFrame(rows)


def study_frame(n_models: int, n_seeds: int) -> tuple[pd.DataFrame, dict]:
    """Cells of an MVTec-sized study (no files needed: the answer's functions take cells)."""
    rng, cells, rows = np.random.default_rng(0), {}, []
    for m in range(n_models):
        for c, (good, bad) in enumerate(MVTEC_TEST):
            labels = np.r_[np.zeros(good, int), np.ones(bad, int)]
            scores = np.stack([rng.normal(labels * (1.5 + 0.3 * m), 1.0) for _ in range(n_seeds)])
            key = ("cost", "mvtec_ad", f"model{m}", "honest", "train", "input", f"c{c:02d}")
            cells[key] = cell(labels, scores)
            rows += [dict(zip(CELL, key), status="ok", seed=s) for s in range(n_seeds)]
    return pd.DataFrame(rows), cells


def cost_table() -> pd.DataFrame:
    rows = []
    for n_models, n_seeds in ((4, 1), (4, 3), (10, 1)):
        frame, cells = study_frame(n_models, n_seeds)
        for resamples in (1000, 5000):
            start = time.perf_counter()
            resampler = uncertainty.Resampler(resamples)
            means = uncertainty.answer_means(frame, cells, resampler)
            differences = uncertainty.answer_differences(frame, cells, resampler)
            rows.append({"study": f"{n_models} models × 15 MVTec AD categories, {n_seeds} seed(s)", "resamples": resamples,
                         "means": len(means), "comparisons": len(differences),
                         "seconds": round(time.perf_counter() - start, 1)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--cost", action="store_true", help="measure the answer's cost instead")
    args = parser.parse_args()
    table = cost_table() if args.cost else coverage_table(args.trials)
    print(markdown(table))


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table, numbers to 3 decimals, missing ones empty."""
    def text(value: object) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(text(v) for v in row) + " |" for row in table.itertuples(index=False)])


if __name__ == "__main__":
    main()
