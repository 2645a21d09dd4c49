"""The report's main tables from run records: per run, comparison per experiment × dataset × model, failed runs,
environment, published references beside ours, the overview text; writing them as CSV.

Everything here is computed from the records alone (see docs/records.md). This module must not
import torch or anomalib: a report builds on a laptop that has neither.

Rules the tables follow:

* only runs with status ``ok`` enter per-category rows, means and speed totals; every other run is
  listed by :func:`failed_runs` with its error and is never averaged in;
* a field missing from a record is NaN (empty), never zero; derived values (s/img, img/s) are NaN
  when an input is missing or zero;
* a model whose mean covers fewer categories than another model on the same experiment × dataset
  is marked ``incomplete`` in the comparison table;
* every results table carries the runs' ``protocol``, ``val_source`` and ``pixel_protocol`` (records.PROTOCOLS, part
  of every group key, so runs of different protocols are never averaged together) and ``replay``: true for a
  replay of a study's protocol (thresholds fitted on test images), whose F1 numbers are optimistic.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vadbench.errors import ReportError
from vadbench.records import GROUP, IDENTITY, INTERVALS, METRICS, PROTOCOLS, is_replay, load_all, records_frame
from vadbench.report import breakdowns, references
from vadbench.report.frames import is_ok, protocol_tag, with_columns
from vadbench.report.speed import SPEED_GROUP, like_with_like, speed_summary
from vadbench.report.uncertainty import answer_tables

log = logging.getLogger(__name__)

TIMING = (
    "test_images", "test_seconds", "s_per_img", "pipeline_img_per_s",
    "model_latency_ms_median", "model_img_per_s", "harness_ms_per_image", "fit_seconds",
)
PER_CATEGORY_COLUMNS = (*IDENTITY, *PROTOCOLS, "replay", *METRICS, *INTERVALS, *TIMING)
COMPARISON_COLUMNS = (
    *GROUP, "replay", "n_categories", "n_runs", "incomplete", "missing_categories", *METRICS, "partial_metrics",
    "test_images", "test_seconds", "s_per_img", "img_per_s", "model_img_per_s", "mixed_configs",
)
FAILED_COLUMNS = (*IDENTITY, "status", "error", "finished_at", "run_dir")
ENVIRONMENT_FIELDS = (
    "device", "device_name", "torch_version", "anomalib_version", "vadbench_version", "git_commit",
)
TABLE_FILES = {
    "per_category": "per_category.csv",
    "comparison": "comparison.csv",
    "failed_runs": "failed_runs.csv",
    "category_results": "category_results.csv",
    "category_speed": "category_speed.csv",
    "seeds": "seeds.csv",
    "experiment_deltas": "experiment_deltas.csv",
    "config_check": "config_check.csv",
    "references": "references.csv",
    "speed": "speed.csv",
    "answer_means": "answer_means.csv",
    "answer_differences": "answer_differences.csv",
    "study_claims": "study_claims.csv",
}
# --------------------------------------------------------------------------------------------
# tables


def load_frame(runs_dir: Path | str) -> pd.DataFrame:
    """Tidy frame (records.records_frame) of every record under ``runs_dir``.

    Raises FileNotFoundError when there is none, so an empty report is never produced silently.
    """
    runs_dir = Path(runs_dir)
    records, unreadable = load_all(runs_dir) if runs_dir.is_dir() else ([], [])
    if not records:
        raise ReportError(f"no run records (*/record.json) under {runs_dir}: nothing to report; "
                          "run `vadbench run params/experiments/<experiment>.yaml` first or pass --runs")
    log.info("read %d records from %s (%d unreadable)", len(records), runs_dir, len(unreadable))
    # an unreadable record counts and is listed like a failed run (status `unreadable`), never averaged
    return records_frame([*records, *({"status": "unreadable", "error": why, "_path": path} for path, why in unreadable)])


def _numeric(frame: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Coerce columns to float; None and non-numbers become NaN."""
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _ratio(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator (scalars or Series), NaN where either is missing or the
    denominator is not positive."""
    if isinstance(denominator, pd.Series):
        return (numerator / denominator.where(denominator > 0)).astype(float)
    if pd.isna(numerator) or pd.isna(denominator) or denominator <= 0:
        return np.nan
    return float(numerator) / float(denominator)


def per_category_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per `ok` run: identity, every metric, and timing (missing fields stay NaN).

    ``s_per_img`` is ``test_seconds / test_images``; ``pipeline_img_per_s`` is the recorded value,
    or ``test_images / test_seconds`` (its definition) when a record lacks it but has both inputs.
    """
    frame = with_columns(frame, (*IDENTITY, *PROTOCOLS, "status", *METRICS, *INTERVALS, *TIMING))
    table = frame.loc[is_ok(frame)].copy()
    _numeric(table, (*METRICS, *INTERVALS, *TIMING))
    table["replay"] = [is_replay(p, v) for p, v in zip(table["protocol"], table["val_source"])]
    table["s_per_img"] = _ratio(table["test_seconds"], table["test_images"])
    table["pipeline_img_per_s"] = table["pipeline_img_per_s"].fillna(
        _ratio(table["test_images"], table["test_seconds"]))
    table = table.loc[:, list(PER_CATEGORY_COLUMNS)]
    return table.sort_values(list(IDENTITY), na_position="last", kind="stable").reset_index(drop=True)


def comparison_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model over `ok` runs.

    Metrics: mean over categories of the per-category mean over seeds (equal to the plain mean
    when every category has the same seeds); NaN values are skipped, and a metric whose mean covers
    fewer categories than ``n_categories`` is named in ``partial_metrics``.

    Speed: ``test_images`` and ``test_seconds`` are totals over the runs that recorded both;
    ``s_per_img`` = total seconds / total images and ``img_per_s`` = total images / total seconds
    (not a mean of per-run rates); ``model_img_per_s`` is the mean over runs.

    ``incomplete`` is True when another model on the same experiment × dataset has a category this
    one lacks (listed in ``missing_categories``). ``mixed_configs`` is True when the group's runs
    were made from different configs (see :func:`breakdowns.config_check`).
    """
    runs = per_category_table(frame)
    if runs.empty:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    group = list(GROUP)
    rows = []
    for key, sub in runs.groupby(group, dropna=False, sort=True):
        per_category = sub.groupby("category", dropna=False)[list(METRICS)].mean()  # over seeds
        metric_means, metric_counts = per_category.mean(), per_category.count()  # over categories
        timed = sub.dropna(subset=["test_images", "test_seconds"])
        images = timed["test_images"].sum() if len(timed) else np.nan
        seconds = timed["test_seconds"].sum() if len(timed) else np.nan
        categories = set(sub["category"].dropna())
        n_categories = len(per_category)
        partial = [m for m in METRICS if 0 < metric_counts[m] < n_categories]
        rows.append({
            **dict(zip(group, key)),
            "replay": is_replay(sub["protocol"].iloc[0], sub["val_source"].iloc[0]),
            "n_categories": n_categories,
            "n_runs": len(sub),
            "_categories": categories,
            **{m: metric_means[m] for m in METRICS},
            "partial_metrics": ", ".join(partial),
            "test_images": images,
            "test_seconds": seconds,
            "s_per_img": _ratio(seconds, images),
            "img_per_s": _ratio(images, seconds),
            "model_img_per_s": sub["model_img_per_s"].mean(),
        })
    table = pd.DataFrame(rows)
    pairs = [tuple(None if pd.isna(v) else str(v) for v in pair) for pair in zip(table["experiment"], table["dataset"])]
    union: dict[tuple, set] = {}
    for pair, categories in zip(pairs, table["_categories"]):
        union.setdefault(pair, set()).update(categories)
    missing = [sorted(union[pair] - own) for pair, own in zip(pairs, table["_categories"])]
    table["missing_categories"] = [", ".join(m) for m in missing]
    table["incomplete"] = [bool(m) for m in missing]
    table["n_categories"] = table["n_categories"].astype(int)
    table["n_runs"] = table["n_runs"].astype(int)
    mixed = breakdowns.config_check(frame).set_index(list(GROUP))["mixed"]
    table["mixed_configs"] = [bool(mixed.get(key, False)) for key in zip(*(table[g] for g in GROUP))]
    return table.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def failed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Every run whose status is not ``ok``, with its error; these never enter a mean."""
    frame = with_columns(frame, (*IDENTITY, "status", "error", "finished_at"))
    table = frame.loc[~is_ok(frame)].copy()
    if "_path" in table.columns:
        table["run_dir"] = [str(Path(p).parent) if isinstance(p, str) else np.nan for p in table["_path"]]
    else:
        table["run_dir"] = np.nan
    table = table.loc[:, list(FAILED_COLUMNS)]
    return table.sort_values(list(IDENTITY), na_position="last", kind="stable").reset_index(drop=True)


def environment_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model: the devices and versions its `ok` runs ran with."""
    frame = with_columns(frame, (*IDENTITY, "status", *ENVIRONMENT_FIELDS))
    runs = frame.loc[is_ok(frame)]
    columns = [*GROUP, *ENVIRONMENT_FIELDS]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    table = runs.groupby(list(GROUP), dropna=False, sort=True)[list(ENVIRONMENT_FIELDS)].agg(
        lambda s: ", ".join(sorted({str(v) for v in s.dropna()})))
    return table.reset_index().loc[:, columns]


REFERENCE_TABLE_COLUMNS = (
    *GROUP, "replay", "category", "source", "external", "reference_dataset", "same_dataset",
    "image_auroc", "image_f1", "pixel_auroc", "pixel_f1", "pixel_aupro",
    "model_latency_ms_median", "model_img_per_s", "note",
)


def reference_table(frame: pd.DataFrame, reference_paths: list[Path | str] = ()) -> pd.DataFrame:
    """Our means beside published ones, per experiment × dataset × model.

    For each of our groups: our row (``external`` False, category ``(mean)``), then every reference
    for the same model kind (and EfficientAD size) marked ``external`` True, with the dataset it was
    measured on; ``same_dataset`` says whether that is our dataset kind. Where the dataset kind
    matches and a reference has per-category numbers, our per-category rows and those follow.
    """
    columns = list(REFERENCE_TABLE_COLUMNS)
    refs = references.references_frame(list(reference_paths))
    if refs.empty:
        return pd.DataFrame(columns=columns)
    runs = per_category_table(frame)
    comparison = comparison_table(frame).set_index(list(GROUP))
    cells = breakdowns.category_results(runs).set_index([*GROUP, "category"])
    speed = like_with_like(frame).set_index(list(SPEED_GROUP))
    rows = []
    for _, ident in references.model_identity(frame.loc[is_ok(frame)]).iterrows():
        key = tuple(ident[g] for g in GROUP)
        matches = refs.loc[(refs["model_kind"] == ident["model_kind"])
                           & refs["model_size"].isin(["", ident["model_size"]])]
        if matches.empty or key not in comparison.index:
            continue
        replay = is_replay(ident["protocol"], ident["val_source"])
        ours = {**dict(zip(GROUP, key)), "replay": replay, "external": False, "reference_dataset": ident["dataset_kind"],
                "source": f"vadbench ({key[0]}{', replay: thresholds fitted on test images' if replay else ''})",
                "same_dataset": True, "note": ""}
        mean = comparison.loc[key]
        rows.append({**ours, "category": references.MEAN, **{m: mean[m] for m in METRICS},
                     **_comparable_speed(speed, key[:3]), "note": f"mean over our {mean['n_categories']} categories; "
                     + _speed_note(speed, key[:3])})
        for _, ref in matches.iterrows():
            same = ref["dataset_kind"] == ident["dataset_kind"]
            if ref["category"] != references.MEAN and not (same and (*key, ref["category"]) in cells.index):
                continue
            if ref["category"] != references.MEAN:
                ours_cell = cells.loc[(*key, ref["category"])]
                rows.append({**ours, "category": ref["category"], **{m: ours_cell[m] for m in METRICS}})
            label = ref["dataset_label"] or ref["dataset_kind"]
            rows.append({**dict(zip(GROUP, key)), "replay": False, "category": ref["category"], "source": ref["source"],
                         "external": True, "reference_dataset": label, "same_dataset": bool(same),
                         "note": ref["note"], **{f: ref[f] for f in references.REFERENCE_FIELDS}})
    return pd.DataFrame(rows).reindex(columns=columns).drop_duplicates().reset_index(drop=True)


def _comparable_speed(speed: pd.DataFrame, key: tuple) -> dict[str, float]:
    """Our fp16 batch-1 latency and fp16 batch-16 throughput (like the papers' figures), NaN without GPU rows."""
    if key not in speed.index:
        return {"model_latency_ms_median": np.nan, "model_img_per_s": np.nan}
    return {"model_latency_ms_median": speed.loc[key, "latency_ms"], "model_img_per_s": speed.loc[key, "img_per_s"]}


def _speed_note(speed: pd.DataFrame, key: tuple) -> str:
    if key in speed.index:
        return f"speed: fp16, latency at batch 1, throughput at batch 16, on {speed.loc[key, 'device_name']}"
    return "speed: no fp16 speed rows in our records (CPU runs only); CPU timings are not comparable, see Speed"


def report_tables_for(frame: pd.DataFrame, reference_paths: list[Path | str] = (),
                      baseline: str | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, by its TABLE_FILES name."""
    runs = per_category_table(frame)
    answer = answer_tables(frame)
    return {
        "per_category": runs,
        "comparison": comparison_table(frame),
        "failed_runs": failed_runs(frame),
        "category_results": breakdowns.category_results(runs),
        "category_speed": breakdowns.category_speed(runs),
        "seeds": breakdowns.seed_summary(runs),
        "experiment_deltas": breakdowns.experiment_deltas(runs, baseline),
        "config_check": breakdowns.config_check(frame),
        "references": beside_our_interval(reference_table(frame, reference_paths), answer["answer_means"]),
        "speed": speed_summary(frame),
        **answer,
    }


def beside_our_interval(refs: pd.DataFrame, means: pd.DataFrame) -> pd.DataFrame:
    """External mean rows gain `image_auroc_vs_ours`: inside our 95 % interval (within noise), above or below it."""
    refs = refs.assign(image_auroc_vs_ours="")
    if refs.empty or means.empty:
        return refs
    ours = means.set_index(list(GROUP))
    for i, row in refs.iterrows():
        key = tuple(row[g] for g in GROUP)
        if not row["external"] or row["category"] != references.MEAN or key not in ours.index \
                or pd.isna(row["image_auroc"]) or pd.isna(ours.loc[key, "image_auroc_ci_low"]):
            continue
        low, high = ours.loc[key, "image_auroc_ci_low"], ours.loc[key, "image_auroc_ci_high"]
        refs.loc[i, "image_auroc_vs_ours"] = ("within noise" if low <= row["image_auroc"] <= high
                                              else "above ours" if row["image_auroc"] > high else "below ours")
    return refs


def save_tables(tables: dict[str, pd.DataFrame], out_dir: Path | str) -> dict[str, Path]:
    """Write tables (as from :func:`report_tables_for`) to ``out_dir/tables/<TABLE_FILES name>``."""
    tables_dir = Path(out_dir) / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables.items():
        path = tables_dir / TABLE_FILES[name]
        table.to_csv(path, index=False)
        paths[name] = path
    log.info("wrote %d tables to %s", len(paths), tables_dir)
    return paths


def runs_overview(frame: pd.DataFrame) -> str:
    """Markdown: how many runs by status, which experiments, models and datasets, and warnings
    for failed runs, mixed configs and means over fewer categories."""
    frame = with_columns(frame, (*IDENTITY, *PROTOCOLS, "status"))
    status = frame["status"].astype("string").fillna("(none)").value_counts().to_dict()
    names = {c: ", ".join(sorted(frame[c].dropna().astype(str).unique())) or "?"
             for c in ("experiment", "model", "dataset")}
    lines = [f"**{len(frame)} run records**: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())) + ".",
             f"Experiments: {names['experiment']}. Models: {names['model']}. Datasets: {names['dataset']}."]
    ok = frame.loc[is_ok(frame)]
    tags = pd.Series([protocol_tag(*row) for row in ok[list(PROTOCOLS)].itertuples(index=False)], dtype=object)
    if len(tags):
        lines.append("Protocols (protocol · where thresholds were fitted · pixel protocol): "
                     + "; ".join(f"{tag} ({n} runs)" for tag, n in sorted(tags.value_counts().items())) + ".")
    if tags.str.startswith("REPLAY").any():
        lines.append("⚠ REPLAY rows replay a study's protocol (thresholds fitted on test images): their F1 numbers are "
                     "optimistic; they are marked REPLAY / [replay] in every table and figure, never averaged with others.")
    failed = int((~is_ok(frame)).sum())
    if failed:
        lines.append(f"⚠ {failed} run(s) did not finish `ok`: listed under *Failed runs*, never averaged in.")
    for key, sub in ok.groupby(["experiment", "dataset", "model"], dropna=False, sort=True):
        if len(sub[list(PROTOCOLS)].drop_duplicates()) > 1:
            lines.append(f"⚠ {' / '.join(map(str, key))}: runs under different protocols, shown apart, never averaged.")
    comparison = comparison_table(frame)
    for _, row in comparison.loc[comparison["mixed_configs"]].iterrows():
        lines.append(f"⚠ {row['experiment']} / {row['dataset']} / {row['model']}: runs from different configs "
                     "(see *Mixed configurations*).")
    for _, row in comparison.loc[comparison["incomplete"]].iterrows():
        n = row["n_categories"]
        lines.append(f"⚠ {row['experiment']} / {row['dataset']} / {row['model']}: mean over {n} "
                     f"categor{'y' if n == 1 else 'ies'}, lacks {row['missing_categories']}; not comparable as if equal.")
    return "\n\n".join(lines)
