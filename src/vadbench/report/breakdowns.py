"""The report's per-category, speed, seed, experiment-delta and config-check tables.

Each function takes the per-run table of :func:`vadbench.report.tables.per_category_table` (``ok`` runs
only, one row per run, missing fields NaN) or, for the config check, the records frame. Like the
report, this module never imports torch or anomalib.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import numpy as np
import pandas as pd

from vadbench.records import CELL, GROUP, INTERVALS, PROTOCOLS, is_replay
from vadbench.records import METRICS as RESULT_METRICS
from vadbench.report.frames import protocol_tag

RESULT_COLUMNS = (*CELL, "replay", "n_seeds", *RESULT_METRICS, *(f"{m}_std" for m in RESULT_METRICS), *INTERVALS)
SPEED_COLUMNS = (
    *CELL, "n_runs", "test_images", "test_seconds", "s_per_img", "img_per_s",
    "model_latency_ms_median", "model_img_per_s", "harness_ms_per_image", "fit_seconds",
)
SEED_COLUMNS = (*GROUP, "n_seeds", "seeds", *RESULT_METRICS, *(f"{m}_std" for m in RESULT_METRICS))
DELTA_METRICS = (*RESULT_METRICS, "img_per_s")
DELTA_COLUMNS = ("experiment_a", "experiment_b", "dataset", "model", "category", "n_categories",
                 "metric", "value_a", "value_b", "delta", *(f"{p}_{side}" for side in "ab" for p in PROTOCOLS),
                 "replay")
MEAN_LABEL = "(mean)"  # the category label of a delta row averaged over the categories both share
CONFIG_COLUMNS = (*GROUP, "n_runs", "n_configs", "mixed", "differing_keys")
RUN_ONLY_KEYS = ("category", "seed")  # config keys that differ between the runs of one group by design


def _ratio(numerator: float, denominator: float) -> float:
    if pd.isna(numerator) or pd.isna(denominator) or denominator <= 0:
        return np.nan
    return float(numerator) / float(denominator)


def _groups(table: pd.DataFrame, keys: tuple[str, ...]):
    return table.groupby(list(keys), dropna=False, sort=True)


def category_results(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model × protocols × category: each metric's mean over seeds, its standard
    deviation (sample, ddof 1; NaN for one seed), ``n_seeds``, and for one seed the run's own intervals."""
    if runs.empty:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    grouped = _groups(runs, CELL)[list(RESULT_METRICS)]
    table = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std"))
    table.insert(0, "n_seeds", _groups(runs, CELL).size())
    intervals = _groups(runs.reindex(columns=[*CELL, *INTERVALS]), CELL)[list(INTERVALS)].first()
    table = table.join(intervals.where(table["n_seeds"] == 1, axis=0)).reset_index()
    table["replay"] = [is_replay(p, v) for p, v in zip(table["protocol"], table["val_source"])]
    return table.loc[:, list(RESULT_COLUMNS)]


def category_speed(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model × category: test images and seconds summed over the runs
    (seeds) that recorded both, s/img = seconds / images, img/s = images / seconds (end to end),
    and the model's own latency and throughput (mean over runs)."""
    rows = []
    for key, sub in _groups(runs, CELL):
        timed = sub.dropna(subset=["test_images", "test_seconds"])
        images = timed["test_images"].sum() if len(timed) else np.nan
        seconds = timed["test_seconds"].sum() if len(timed) else np.nan
        rows.append({**dict(zip(CELL, key)), "n_runs": len(sub), "test_images": images, "test_seconds": seconds,
                     "s_per_img": _ratio(seconds, images), "img_per_s": _ratio(images, seconds),
                     "model_latency_ms_median": sub["model_latency_ms_median"].mean(),
                     "model_img_per_s": sub["model_img_per_s"].mean(),
                     "harness_ms_per_image": sub["harness_ms_per_image"].mean(),
                     "fit_seconds": sub["fit_seconds"].mean()})
    return pd.DataFrame(rows, columns=list(SPEED_COLUMNS))


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model: for each seed the mean over categories, then the mean and
    standard deviation of those over seeds, with ``n_seeds`` and the seed list."""
    rows = []
    for key, sub in _groups(runs, GROUP):
        per_seed = sub.groupby("seed", dropna=False)[list(RESULT_METRICS)].mean()
        seeds = ", ".join(str(int(s)) if not pd.isna(s) else "?" for s in per_seed.index)
        rows.append({**dict(zip(GROUP, key)), "n_seeds": len(per_seed), "seeds": seeds,
                     **per_seed.mean().to_dict(), **per_seed.std(ddof=1).add_suffix("_std").to_dict()})
    return pd.DataFrame(rows, columns=list(SEED_COLUMNS))


def experiment_deltas(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Experiment b minus experiment a, per dataset × model × category and metric (seed means).

    Pairs: (baseline, every other experiment) when ``baseline`` names one, else every pair in name
    order. Only models and datasets both experiments ran are compared; the ``(mean)`` row of a
    metric averages the categories where both have a value (``n_categories`` says how many).
    """
    cells = category_results(runs).set_index(list(CELL))
    speed = category_speed(runs).set_index(list(CELL))["img_per_s"]
    cells = cells.join(speed).reset_index()
    experiments = sorted({e for e in runs["experiment"].dropna().astype(str)})
    if baseline in experiments:
        pairs = [(baseline, e) for e in experiments if e != baseline]
    else:
        pairs = list(itertools.combinations(experiments, 2))
    sides = {key: sub.set_index("category") for key, sub in cells.groupby(list(GROUP), dropna=False, sort=True)}
    rows = []
    for a, b in pairs:
        for key_a, key_b in itertools.product(sorted(k for k in sides if k[0] == a), sorted(k for k in sides if k[0] == b)):
            if key_a[1:3] == key_b[1:3]:  # the same dataset and model, under any protocols (each side says its own)
                rows += _delta_rows(key_a, key_b, sides[key_a], sides[key_b])
    return pd.DataFrame(rows, columns=list(DELTA_COLUMNS))


def _delta_rows(key_a: tuple, key_b: tuple, left: pd.DataFrame, right: pd.DataFrame) -> list[dict]:
    common = sorted(set(left.index) & set(right.index), key=str)
    side_a, side_b = dict(zip(GROUP, key_a)), dict(zip(GROUP, key_b))
    protocols = {**{f"{p}_a": side_a[p] for p in PROTOCOLS}, **{f"{p}_b": side_b[p] for p in PROTOCOLS},
                 "replay": is_replay(side_a["protocol"], side_a["val_source"])
                 or is_replay(side_b["protocol"], side_b["val_source"])}
    rows = []
    for metric in DELTA_METRICS:
        both = pd.DataFrame({"a": left.loc[common, metric], "b": right.loc[common, metric]}).dropna()
        base = {"experiment_a": key_a[0], "experiment_b": key_b[0], "dataset": key_a[1], "model": key_a[2],
                "metric": metric, **protocols}
        for category, row in both.iterrows():
            rows.append({**base, "category": category, "n_categories": 1,
                         "value_a": row["a"], "value_b": row["b"], "delta": row["b"] - row["a"]})
        if len(both):
            mean_a, mean_b = both["a"].mean(), both["b"].mean()
            rows.append({**base, "category": MEAN_LABEL, "n_categories": len(both),
                         "value_a": mean_a, "value_b": mean_b, "delta": mean_b - mean_a})
    return rows


def config_check(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model over ``ok`` runs: how many distinct configs its runs have,
    ignoring the fields that differ per run by design (category, seed). ``mixed`` is True when
    there is more than one; ``differing_keys`` names the config keys that differ. Records without
    a config are not counted."""
    frame = frame.copy()
    for column in (*GROUP, "status", "config"):
        if column not in frame.columns:
            frame[column] = np.nan
    ok = frame.loc[frame["status"].astype("string").eq("ok").fillna(False).astype(bool)]
    rows = []
    for key, sub in _groups(ok, GROUP):
        configs = [_flat_config(c) for c in sub["config"] if isinstance(c, str)]
        hashes = {hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest() for c in configs}
        keys = sorted({k for c in configs for k in c})
        differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
        rows.append({**dict(zip(GROUP, key)), "n_runs": len(sub), "n_configs": len(hashes),
                     "mixed": len(hashes) > 1, "differing_keys": ", ".join(differing)})
    return pd.DataFrame(rows, columns=list(CONFIG_COLUMNS))


def _flat_config(text: str) -> dict[str, Any]:
    """A record's config (JSON text) as dotted keys, without the per-run fields."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        return {"<unreadable config>": text}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS} if isinstance(config, dict) else config)
    return flat


def mean_std_text(table: pd.DataFrame, metrics: tuple[str, ...] = RESULT_METRICS, digits: int = 3) -> pd.DataFrame:
    """For display: each metric as 'mean ± std' where a std exists (several seeds), else 'value [low, high]' where
    the run's interval exists, else the value; the *_std and interval columns are dropped. Empty cells stay empty."""
    drop = [c for m in metrics for c in (f"{m}_std", f"{m}_ci_low", f"{m}_ci_high") if c in table.columns]
    shown = table.drop(columns=drop)
    missing = pd.Series(np.nan, index=table.index)
    for metric in metrics:
        std, low, high = (table.get(f"{metric}{suffix}", missing) for suffix in ("_std", "_ci_low", "_ci_high"))
        shown[metric] = [
            "" if pd.isna(m) else f"{m:.{digits}f} ± {s:.{digits}f}" if not pd.isna(s)
            else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if not (pd.isna(lo) or pd.isna(hi))
            else f"{m:.{digits}f}"
            for m, s, lo, hi in zip(table[metric], std, low, high)
        ]
    return shown


DELTA_VIEW_METRICS = ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro", "img_per_s")


def delta_view(deltas: pd.DataFrame, metrics: tuple[str, ...] = DELTA_VIEW_METRICS,
               mean_only: bool = True) -> pd.DataFrame:
    """For display: one row per experiment pair × dataset × model (× category), each side's protocols, and for
    each metric the value of a, of b and b − a side by side (two-level columns, no index)."""
    rows = deltas.loc[deltas["metric"].isin(metrics)]
    if mean_only:
        rows = rows.loc[rows["category"] == MEAN_LABEL]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(**{f"protocols_{side}": [protocol_tag(*r) for r in rows[[f"{p}_{side}" for p in PROTOCOLS]]
                                                .itertuples(index=False)] for side in "ab"})
    index = ["experiment_a", "experiment_b", "dataset", "model", "category", "protocols_a", "protocols_b"]
    wide = rows.pivot_table(index=index, columns="metric", values=["value_a", "value_b", "delta"],
                            aggfunc="first", dropna=False)
    wide = wide.swaplevel(0, 1, axis=1)
    order = [(m, v) for m in metrics if m in rows["metric"].unique() for v in ("value_a", "value_b", "delta")]
    wide = wide.loc[:, order].dropna(how="all")
    wide.insert(0, ("", "n_categories"), rows.groupby(index, dropna=False)["n_categories"].max())
    wide.index = wide.index.set_names(index)
    flat = wide.reset_index()
    flat.columns = pd.MultiIndex.from_tuples([("", c[0]) if c[0] in index else c for c in flat.columns])
    return flat
