"""The report's answer with its noise: each model's dataset mean with a 95 % interval, and every comparison
(model vs model, experiment vs experiment) as a paired difference with its interval and a verdict.

Image AUROC intervals are recomputed here from each run's own `scores.csv` (BCa bootstrap: test images
resampled within each category, stratified by label; the same draws for both sides of a comparison, as
they scored the same images). A dataset mean's interval resamples every category at once; its jackknife
leaves out one image at a time. Pixel metrics' dataset intervals combine the runs' own intervals as
independent normal errors (a stated approximation). Never imports torch.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vadbench import stats
from vadbench.records import GROUP, SCORES_FILE
from vadbench.report.frames import is_ok, with_columns

RESAMPLES = stats.RESAMPLES
Cell = tuple[np.ndarray, np.ndarray]  # labels, scores of one category's test images


def run_scores(frame: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """(experiment, dataset, model, category) -> the lowest seed's scores.csv (ok runs that have one)."""
    frame = with_columns(frame, (*GROUP, "category", "seed", "_path"))
    runs = frame.loc[is_ok(frame)].sort_values("seed", kind="stable").drop_duplicates([*GROUP, "category"])
    found = {}
    for _, run in runs.iterrows():
        path = Path(str(run["_path"])).parent / SCORES_FILE
        if isinstance(run["_path"], str) and path.is_file():
            found[(run["experiment"], run["dataset"], run["model"], run["category"])] = pd.read_csv(path)
    return found


def _draws(cells: list[np.ndarray], seed: int) -> list[np.ndarray]:
    return [stats.stratified_indices(labels, RESAMPLES, np.random.default_rng(seed + i)) for i, labels in enumerate(cells)]


def _mean_auroc(cells: list[Cell], draws: list[np.ndarray]) -> np.ndarray:
    """The mean over categories of image AUROC on each resample."""
    per_cell = [[stats.auroc_from_scores(y[i], s[i]) for i in d] for (y, s), d in zip(cells, draws, strict=True)]
    return np.mean(np.array(per_cell), axis=0)


def _jackknife_mean(cells: list[Cell]) -> np.ndarray:
    """The mean over categories of image AUROC with each test image left out once."""
    full = [stats.auroc_from_scores(y, s) for y, s in cells]
    values = []
    for c, (y, s) in enumerate(cells):
        keep = np.ones(len(y), bool)
        for i in range(len(y)):
            keep[i] = False
            values.append(np.mean(full[:c] + [stats.auroc_from_scores(y[keep], s[keep])] + full[c + 1:]))
            keep[i] = True
    return np.array(values)


def mean_interval(cells: list[Cell], seed: int = 0) -> tuple[float, float, float]:
    """(mean image AUROC over the categories, 95 % interval)."""
    estimate = float(np.mean([stats.auroc_from_scores(y, s) for y, s in cells]))
    boot = _mean_auroc(cells, _draws([y for y, _ in cells], seed))
    return (estimate, *stats.bca_interval(boot, estimate, _jackknife_mean(cells)))


def paired_interval(a: list[Cell], b: list[Cell], seed: int = 0) -> tuple[float, float, float]:
    """(mean AUROC of b minus a, 95 % interval), both resampled with the same image draws."""
    draws = _draws([y for y, _ in a], seed)
    boot = _mean_auroc(b, draws) - _mean_auroc(a, draws)
    estimate = float(np.mean([stats.auroc_from_scores(*cb) - stats.auroc_from_scores(*ca) for ca, cb in zip(a, b)]))
    jack = _jackknife_mean(b) - _jackknife_mean(a)
    return (estimate, *stats.bca_interval(boot, estimate, jack))


def verdict(low: float, high: float, a: str, b: str) -> str:
    """`b higher`, `a higher`, or `within noise` when the interval of b − a covers 0."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "within noise"
    return f"{b} higher" if low > 0 else f"{a} higher"


def _aligned(sa: pd.DataFrame, sb: pd.DataFrame) -> tuple[Cell, Cell]:
    """Both runs' scores on the test images they share (by path)."""
    both = sa.merge(sb, on="path", suffixes=("_a", "_b"))
    labels = both["label_a"].to_numpy().astype(int)
    return (labels, both["score_a"].to_numpy(float)), (labels, both["score_b"].to_numpy(float))


MEANS_COLUMNS = (*GROUP, "n_categories", "image_auroc", "image_auroc_ci_low", "image_auroc_ci_high",
                 "pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high")
DIFFERENCE_COLUMNS = ("dataset", "a", "b", "n_categories", "metric", "value_a", "value_b", "delta", "ci_low",
                      "ci_high", "verdict", "experiment_a", "model_a", "experiment_b", "model_b")


def _pixel_mean(frame: pd.DataFrame, key: tuple) -> tuple[float, float, float]:
    """Mean pixel AUROC over the group's categories, with the runs' intervals combined as independent normal errors."""
    frame = with_columns(frame, ("pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high", "seed"))
    rows = frame.loc[is_ok(frame) & (frame[list(GROUP)] == pd.Series(key, index=list(GROUP))).all(axis=1)]
    rows = rows.sort_values("seed", kind="stable").drop_duplicates("category").dropna(subset=["pixel_auroc"])
    if rows.empty:
        return math.nan, math.nan, math.nan
    mean = float(rows["pixel_auroc"].astype(float).mean())
    se = (rows["pixel_auroc_ci_high"].astype(float) - rows["pixel_auroc_ci_low"].astype(float)) / (2 * 1.96)
    if se.isna().any():  # a run without its interval (recorded before intervals existed): no combined interval
        return mean, math.nan, math.nan
    half = 1.96 * math.sqrt(float((se**2).sum())) / len(rows)
    return mean, mean - half, mean + half


def answer_means(frame: pd.DataFrame, scores: dict[tuple, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per experiment × dataset × model: mean image AUROC (interval from scores.csv) and mean pixel AUROC."""
    scores = run_scores(frame) if scores is None else scores
    groups: dict[tuple, list[Cell]] = {}
    for (*key, _), table in sorted(scores.items(), key=lambda item: tuple(map(str, item[0]))):
        groups.setdefault(tuple(key), []).append((table["label"].to_numpy().astype(int), table["score"].to_numpy(float)))
    rows = []
    for key, cells in groups.items():
        rows.append({**dict(zip(GROUP, key)), "n_categories": len(cells), **dict(zip(
            ("image_auroc", "image_auroc_ci_low", "image_auroc_ci_high"), mean_interval(cells))), **dict(zip(
            ("pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high"), _pixel_mean(frame, key)))})
    return pd.DataFrame(rows, columns=list(MEANS_COLUMNS))


def answer_differences(frame: pd.DataFrame, scores: dict[tuple, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every model pair within an experiment × dataset, and every experiment pair for one model × dataset:
    b − a of mean image AUROC over the categories both ran, paired on their shared test images."""
    scores = run_scores(frame) if scores is None else scores
    sides: dict[tuple, dict[str, pd.DataFrame]] = {}
    for (experiment, dataset, model, category), table in scores.items():
        sides.setdefault((dataset, experiment, model), {})[category] = table
    rows = []
    for (dataset_a, exp_a, model_a), (dataset_b, exp_b, model_b) in itertools.combinations(sorted(sides), 2):
        if dataset_a != dataset_b or (exp_a != exp_b and model_a != model_b):
            continue
        common = sorted(set(sides[(dataset_a, exp_a, model_a)]) & set(sides[(dataset_b, exp_b, model_b)]))
        if not common:
            continue
        pairs = [_aligned(sides[(dataset_a, exp_a, model_a)][c], sides[(dataset_b, exp_b, model_b)][c]) for c in common]
        a_cells, b_cells = [p[0] for p in pairs], [p[1] for p in pairs]
        delta, low, high = paired_interval(a_cells, b_cells)
        name_a, name_b = (model_a, model_b) if exp_a == exp_b else (exp_a, exp_b)
        label = (f"{exp_a}: " if exp_a == exp_b else f"{model_a}: ")
        value_a = float(np.mean([stats.auroc_from_scores(*c) for c in a_cells]))
        rows.append({"dataset": dataset_a, "a": label + name_a, "b": label + name_b, "n_categories": len(common),
                     "metric": "image_auroc", "value_a": value_a, "value_b": value_a + delta, "delta": delta,
                     "ci_low": low, "ci_high": high, "verdict": verdict(low, high, name_a, name_b),
                     "experiment_a": exp_a, "model_a": model_a, "experiment_b": exp_b, "model_b": model_b})
    return pd.DataFrame(rows, columns=list(DIFFERENCE_COLUMNS))


#: The replaced study's conclusions on image AUROC: (claim, dataset, experiment a, model a, experiment b,
#: model b, what b - a must show: "b higher", "a higher", or a largest allowed relative loss of b).
STUDY_CLAIMS = (
    ("EfficientAD beats DRÆM on MVTec AD", "mvtec_ad", "study_baseline", "draem", "study_baseline", "efficientad_s",
     "b higher"),
    ("EfficientAD beats DRÆM on VisA", "visa", "study_baseline", "draem", "study_baseline", "efficientad_s",
     "b higher"),
    ("On WFDD DRÆM leads image AUROC", "wfdd", "study_baseline", "draem", "study_baseline", "efficientad_s",
     "a higher"),
    *((f"Undersampling costs EfficientAD at most ~5 % on {d}", d, "study_baseline", "efficientad_s",
       "study_undersample", "efficientad_s", 0.05) for d in ("mvtec_ad", "visa", "wfdd")),
)
CLAIM_COLUMNS = ("claim", "dataset", "delta", "ci_low", "ci_high", "check")


def study_claims(differences: pd.DataFrame) -> pd.DataFrame:
    """Each of the study's conclusions checked on the user's records: supported, contradicted, within noise, or not run."""
    rows = []
    for claim, dataset, exp_a, model_a, exp_b, model_b, expect in STUDY_CLAIMS:
        found = differences.loc[(differences["dataset"] == dataset) & (differences["experiment_a"] == exp_a)
                                & (differences["model_a"] == model_a) & (differences["experiment_b"] == exp_b)
                                & (differences["model_b"] == model_b)] if len(differences) else differences
        if found.empty:
            rows.append({"claim": claim, "dataset": dataset, "check": f"not run ({exp_a} / {exp_b} records needed)"})
            continue
        row = found.iloc[0]
        rows.append({"claim": claim, "dataset": dataset, "delta": row["delta"], "ci_low": row["ci_low"],
                     "ci_high": row["ci_high"], "check": _check(row, expect)})
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def _check(row: pd.Series, expect: str | float) -> str:
    if isinstance(expect, float):  # b may lose at most `expect` of a's value
        floor = -expect * row["value_a"]
        return "supported" if row["ci_low"] >= floor else "contradicted" if row["ci_high"] < floor else "within noise"
    if row["verdict"] == "within noise":
        return "within noise"
    winner = row["model_b"] if row["delta"] > 0 else row["model_a"]
    wanted = row["model_b"] if expect == "b higher" else row["model_a"]
    return "supported" if winner == wanted else "contradicted"


def answer_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The answer's tables, by their TABLE_FILES names."""
    scores = run_scores(frame)
    differences = answer_differences(frame, scores)
    return {"answer_means": answer_means(frame, scores), "answer_differences": differences,
            "study_claims": study_claims(differences)}
