"""The report's answer with its noise: each model's dataset mean with a 95 % interval, and every comparison
(model vs model, experiment vs experiment) as a paired difference with its interval, its p-value and two
verdicts: at 95 % each, and after Holm's correction over all the comparisons the answer makes.

Image AUROC intervals are recomputed here from each run's `scores.csv` (vadbench.report.pairing: images by key),
RESAMPLES resamples. One resample draws, in each category, the test images (stratified by label, the same
draws for every seed and for both sides of a comparison, which scored the same images) and the seeds (with
replacement, as many as the category ran, separately for each side: training is its own source of noise);
its value is the mean over categories of the mean over drawn seeds of AUROC on the drawn images. The
interval is BCa (jackknife: one image left out at a time); a mean's is widened to contain the score interval
(vadbench.stats.score_interval), and a difference's ends take in, as independent errors, the score interval's
reach of each category whose AUROC is exactly 0 or 1, where resampling cannot move it: a perfect score keeps a width set
by the test set, and comparisons away from the edges keep the paired bootstrap's power.
A difference's p-value is the smallest 1 − level at which its interval excludes 0. Pixel metrics' dataset
intervals combine the runs' own intervals as independent normal errors, plus the spread over seeds (a stated
approximation). Never imports torch.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vadbench import stats
from vadbench.records import GROUP, PROTOCOLS, is_replay
from vadbench.report.frames import is_ok, with_columns
from vadbench.report.pairing import Cell, paired, scored_cells

RESAMPLES = 5000
LEVEL = stats.LEVEL
SIDE = ("experiment", "model", *PROTOCOLS)
MEANS_COLUMNS = (*GROUP, "replay", "n_categories", "n_seeds", "image_auroc", "image_auroc_ci_low",
                 "image_auroc_ci_high", "pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high", "note")
DIFFERENCE_COLUMNS = ("dataset", "a", "b", "n_categories", "n_images", "metric", "value_a", "value_b", "delta",
                      "ci_low", "ci_high", "p_value", "verdict", "p_holm", "verdict_holm", "replay", "note",
                      *(f"{c}_a" for c in SIDE), *(f"{c}_b" for c in SIDE))
NOT_COMPARED = "not compared"


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by the names it is for, so that the same images get the same draws in every table."""
    return np.random.default_rng(zlib.crc32("\x1f".join(map(str, parts)).encode()))


@dataclass(frozen=True)
class Resampled:
    """One model × category's image AUROC: the estimate (mean over seeds), its resamples and its jackknife."""

    estimate: float
    boot: np.ndarray  # (resamples,)
    jack: np.ndarray  # (images,) the mean over seeds with each image left out
    n_pos: int
    n_neg: int


class Resampler:
    """Resampled cells, each computed once: draws depend on the category and its images (by key), so a mean and
    every comparison on the same images share them."""

    def __init__(self, resamples: int = RESAMPLES) -> None:
        self.resamples = resamples
        self._done: dict[tuple, Resampled] = {}

    def __call__(self, who: tuple, category: object, cell: Cell) -> Resampled:
        digest = hashlib.sha1("\n".join(cell.keys).encode()).hexdigest()
        if (who, category, digest) not in self._done:
            self._done[(who, category, digest)] = self._resample(who, category, digest, cell)
        return self._done[(who, category, digest)]

    def _resample(self, who: tuple, category: object, digest: str, cell: Cell) -> Resampled:
        images = stats.stratified_indices(cell.labels, self.resamples, _rng("images", category, digest))
        counts = stats.resample_counts(images, len(cell.labels))
        n_seeds = len(cell.scores)
        drawn = _rng("seeds", *who, category).integers(0, n_seeds, size=(self.resamples, n_seeds))
        seed_share = stats.resample_counts(drawn, n_seeds) / n_seeds
        per_seed = np.stack([stats.weighted_aurocs(cell.labels, s, counts) for s in cell.scores], axis=1)
        estimate = float(np.mean([stats.auroc_from_scores(cell.labels, s) for s in cell.scores]))
        jack = np.mean([stats.jackknife_aurocs(cell.labels, s) for s in cell.scores], axis=0)
        return Resampled(estimate, (per_seed * seed_share).sum(axis=1), jack, cell.n_pos, cell.n_neg)


def _mean_parts(parts: list[Resampled]) -> tuple[float, np.ndarray, np.ndarray]:
    """The mean over categories: estimate, resamples, and jackknife (one image of one category left out)."""
    estimates = np.array([p.estimate for p in parts])
    jack = np.concatenate([(estimates.sum() - p.estimate + p.jack) / len(parts) for p in parts])
    return float(estimates.mean()), np.mean([p.boot for p in parts], axis=0), jack


def _mean_bounds(parts: list[Resampled], level: float) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """(estimate, BCa interval, score interval) of the mean over categories."""
    estimate, boot, jack = _mean_parts(parts)
    floor = stats.score_interval([p.estimate for p in parts], [p.n_pos for p in parts], [p.n_neg for p in parts], level)
    return estimate, stats.bca_interval(boot, estimate, jack, level), floor


def mean_interval(parts: list[Resampled], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean image AUROC over the categories, interval): BCa widened to the score interval."""
    estimate, bca, floor = _mean_bounds(parts, level)
    return (estimate, *stats.widened(bca, floor))


def _edge_reach(parts: list[Resampled], level: float) -> tuple[float, float]:
    """How far the mean could move down and up beyond what resampling sees: each category whose AUROC sits at 1
    (or 0), where every resample repeats it, reaches as far as its score interval, as independent errors."""
    down, up = [0.0], [0.0]
    for p in parts:
        if p.estimate in (0.0, 1.0):
            low, high = stats.score_interval([p.estimate], [p.n_pos], [p.n_neg], level)
            (down if p.estimate == 1.0 else up).append(high - low)
    return math.hypot(*down) / len(parts), math.hypot(*up) / len(parts)


def difference_interval(a: list[Resampled], b: list[Resampled], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean of b minus mean of a, interval): the paired BCa interval, each end's distance from the estimate
    combined with the reach of the categories at 0 or 1 (`_edge_reach`; none away from the edges) as independent
    errors (in quadrature)."""
    (est_a, boot_a, jack_a), (est_b, boot_b, jack_b) = _mean_parts(a), _mean_parts(b)
    delta = est_b - est_a
    low, high = stats.bca_interval(boot_b - boot_a, delta, jack_b - jack_a, level)
    (down_a, up_a), (down_b, up_b) = _edge_reach(a, level), _edge_reach(b, level)
    return delta, delta - math.hypot(delta - low, down_b, up_a), delta + math.hypot(high - delta, up_b, down_a)


def p_value(interval_at: Callable[[float], tuple[float, float]], floor: float = 1e-6) -> float:
    """The smallest 1 − level at which the interval excludes 0 (two-sided; `floor` when it excludes 0 even there)."""
    def excludes(alpha: float) -> bool:
        low, high = interval_at(1 - alpha)
        return math.isfinite(low) and math.isfinite(high) and not low <= 0 <= high

    if not excludes(0.999):
        return 1.0
    if excludes(floor):
        return floor
    inside, outside = math.log(floor), math.log(0.999)
    for _ in range(24):
        mid = (inside + outside) / 2
        inside, outside = (inside, mid) if excludes(math.exp(mid)) else (mid, outside)
    return math.exp(outside)


def holm(p: np.ndarray | pd.Series) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN, not counted): the family-wise error over all of them."""
    p = np.asarray(p, dtype=float)
    out, finite = np.full(len(p), math.nan), np.isfinite(p)
    m = int(finite.sum())
    order = np.argsort(p[finite], kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[finite][order] * (m - np.arange(m))))
    values = np.empty(m)
    values[order] = adjusted
    out[finite] = values
    return out


def verdict(low: float, high: float, a: str, b: str) -> str:
    """`b higher`, `a higher`, or `within noise` when the interval of b − a covers 0."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "within noise"
    return f"{b} higher" if low > 0 else f"{a} higher"


def _pixel_mean(frame: pd.DataFrame, key: tuple) -> tuple[float, float, float]:
    """Mean pixel AUROC over the group's categories (of the mean over seeds), with the runs' intervals combined as
    independent normal errors; a category's error adds the spread of its seeds (its images are shared by them)."""
    frame = with_columns(frame, ("pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high", "seed"))
    rows = frame.loc[is_ok(frame) & (frame[list(GROUP)].astype(str) == pd.Series(key, index=list(GROUP)).astype(str))
                     .all(axis=1)].dropna(subset=["pixel_auroc"])
    if rows.empty:
        return math.nan, math.nan, math.nan
    values = rows.assign(se=(rows["pixel_auroc_ci_high"].astype(float) - rows["pixel_auroc_ci_low"].astype(float))
                         / (2 * 1.96), pixel_auroc=rows["pixel_auroc"].astype(float))
    per_category = values.groupby("category", dropna=False).agg(
        mean=("pixel_auroc", "mean"), spread=("pixel_auroc", "var"), n=("pixel_auroc", "size"),
        se2=("se", lambda s: (s**2).mean()), missing=("se", lambda s: s.isna().any()))
    mean = float(per_category["mean"].mean())
    if per_category["missing"].any():  # a run without its interval (recorded before intervals existed)
        return mean, math.nan, math.nan
    variance = per_category["se2"] + per_category["spread"].fillna(0.0) / per_category["n"]
    half = 1.96 * math.sqrt(float(variance.sum())) / len(per_category)
    return mean, mean - half, mean + half


def _by_group(cells: dict[tuple, Cell]) -> dict[tuple, dict[object, Cell]]:
    groups: dict[tuple, dict[object, Cell]] = {}
    for (*group, category), cell in sorted(cells.items(), key=lambda item: tuple(map(str, item[0]))):
        groups.setdefault(tuple(group), {})[category] = cell
    return groups


def answer_means(frame: pd.DataFrame, cells: dict[tuple, Cell] | None = None,
                 resampler: Resampler | None = None) -> pd.DataFrame:
    """Per experiment × dataset × model × protocols: mean image AUROC (interval from scores.csv, seeds and images
    resampled) and mean pixel AUROC."""
    cells = scored_cells(frame) if cells is None else cells
    resampler = resampler or Resampler()
    rows = []
    for group, by_category in _by_group(cells).items():
        usable = {c: cell for c, cell in by_category.items() if cell.usable()}
        notes = [f"{c}: one class only, left out" for c in by_category if c not in usable]
        notes += [f"{c}: {cell.note}" for c, cell in usable.items() if cell.note]
        key = dict(zip(GROUP, group))
        image = mean_interval([resampler(group, c, cell) for c, cell in usable.items()]) if usable else (math.nan,) * 3
        rows.append({**key, "replay": is_replay(key["protocol"], key["val_source"]), "n_categories": len(usable),
                     "n_seeds": max((len(cell.seeds) for cell in usable.values()), default=0),
                     **dict(zip(("image_auroc", "image_auroc_ci_low", "image_auroc_ci_high"), image)),
                     **dict(zip(("pixel_auroc", "pixel_auroc_ci_low", "pixel_auroc_ci_high"), _pixel_mean(frame, group))),
                     "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=list(MEANS_COLUMNS))


def _names(a: dict, b: dict) -> tuple[str, str, str, str]:
    """Short names of the two sides (what differs between them) and their labels ('context: name', replay marked)."""
    if a["experiment"] == b["experiment"] and a["model"] == b["model"]:
        context, name_a, name_b = f"{a['experiment']}: {a['model']}", *(
            f"{s['protocol']}, {s['val_source']}, {s['pixel_protocol']}" for s in (a, b))
    elif a["experiment"] == b["experiment"]:
        context, name_a, name_b = str(a["experiment"]), str(a["model"]), str(b["model"])
    else:
        context, name_a, name_b = str(a["model"]), str(a["experiment"]), str(b["experiment"])
    labels = [f"{context}: {name}" + (" [replay]" if is_replay(s["protocol"], s["val_source"]) else "")
              for name, s in ((name_a, a), (name_b, b))]
    return name_a, name_b, labels[0], labels[1]


def _difference_row(a: dict, b: dict, cells_a: dict, cells_b: dict, resampler: Resampler) -> dict:
    ga, gb = tuple(a[g] for g in GROUP), tuple(b[g] for g in GROUP)
    common = sorted(set(cells_a) & set(cells_b), key=str)
    notes, parts_a, parts_b, n_images = [], [], [], 0
    for category in common:
        pa, pb, note = paired(cells_a[category], cells_b[category])
        if note:
            notes.append(f"{category}: {note}")
        if pa is not None and pb is not None:
            parts_a.append(resampler(ga, category, pa))
            parts_b.append(resampler(gb, category, pb))
            n_images += len(pa.keys)
    name_a, name_b, label_a, label_b = _names(a, b)
    row = {"dataset": a["dataset"], "a": label_a, "b": label_b, "n_categories": len(parts_a), "n_images": n_images,
           "metric": "image_auroc", "replay": is_replay(a["protocol"], a["val_source"])
           or is_replay(b["protocol"], b["val_source"]), "note": "; ".join(notes) if common else "no category in common",
           **{f"{c}_a": a[c] for c in SIDE}, **{f"{c}_b": b[c] for c in SIDE}}
    if not parts_a:
        return {**row, "verdict": NOT_COMPARED}
    delta, low, high = difference_interval(parts_a, parts_b)
    value_a = float(np.mean([p.estimate for p in parts_a]))
    return {**row, "value_a": value_a, "value_b": value_a + delta, "delta": delta, "ci_low": low, "ci_high": high,
            "p_value": p_value(lambda level: difference_interval(parts_a, parts_b, level)[1:]),
            "verdict": verdict(low, high, name_a, name_b)}


def answer_differences(frame: pd.DataFrame, cells: dict[tuple, Cell] | None = None,
                       resampler: Resampler | None = None) -> pd.DataFrame:
    """Every model pair within an experiment × dataset, and every experiment pair for one model × dataset (and runs
    of one model and experiment under different protocols): b − a of mean image AUROC over the categories both ran,
    paired on the test images both scored; a pair that shares none is a row saying why. Holm's correction runs over
    every row compared."""
    cells = scored_cells(frame) if cells is None else cells
    resampler = resampler or Resampler()
    groups = _by_group(cells)
    rows = []
    for ga, gb in itertools.combinations(sorted(groups, key=lambda g: tuple(map(str, g))), 2):
        a, b = dict(zip(GROUP, ga)), dict(zip(GROUP, gb))
        if a["dataset"] != b["dataset"] or (a["experiment"] != b["experiment"] and a["model"] != b["model"]):
            continue
        rows.append(_difference_row(a, b, groups[ga], groups[gb], resampler))
    table = pd.DataFrame(rows, columns=list(DIFFERENCE_COLUMNS))
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    table["verdict_holm"] = [
        NOT_COMPARED if v == NOT_COMPARED else "within noise" if v == "within noise" or not p < 1 - LEVEL
        else v for v, p in zip(table["verdict"], table["p_holm"])]
    return table.loc[:, list(DIFFERENCE_COLUMNS)]


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
    """Each of the study's conclusions checked on the user's records (each a single planned comparison, at 95 %):
    supported, contradicted, within noise, not compared (with why), or not run."""
    rows = []
    for claim, dataset, exp_a, model_a, exp_b, model_b, expect in STUDY_CLAIMS:
        found = differences.loc[(differences["dataset"] == dataset) & (differences["experiment_a"] == exp_a)
                                & (differences["model_a"] == model_a) & (differences["experiment_b"] == exp_b)
                                & (differences["model_b"] == model_b)] if len(differences) else differences
        if found.empty:
            rows.append({"claim": claim, "dataset": dataset, "check": f"not run ({exp_a} / {exp_b} records needed)"})
            continue
        row = found.iloc[0]
        check = f"{NOT_COMPARED}: {row['note']}" if row["verdict"] == NOT_COMPARED else _check(row, expect)
        rows.append({"claim": claim, "dataset": dataset, "delta": row["delta"], "ci_low": row["ci_low"],
                     "ci_high": row["ci_high"], "check": check})
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


def answer_tables(frame: pd.DataFrame, resamples: int = RESAMPLES) -> dict[str, pd.DataFrame]:
    """The answer's tables, by their TABLE_FILES names."""
    cells, resampler = scored_cells(frame), Resampler(resamples)
    differences = answer_differences(frame, cells, resampler)
    return {"answer_means": answer_means(frame, cells, resampler), "answer_differences": differences,
            "study_claims": study_claims(differences)}
