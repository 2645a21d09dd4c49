"""Report: tables and figures from run records, and the executed summary notebook as HTML.

Everything here is computed from the records alone (see docs/records.md). This module must not
import torch or anomalib: a report builds on a laptop that has neither.

Rules the tables follow:

* only runs with status ``ok`` enter per-category rows, means and speed totals; every other run is
  listed by :func:`failed_runs` with its error and is never averaged in;
* a field missing from a record is NaN (empty), never zero; derived values (s/img, img/s) are NaN
  when an input is missing or zero;
* a model whose mean covers fewer categories than another model on the same experiment × dataset
  is marked ``incomplete`` in the comparison table.
"""
from __future__ import annotations

import base64
import html as html_text
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from vadbench import export, references, report_tables
from vadbench.errors import ReportError
from vadbench.records import IDENTITY, METRICS, load_records, records_frame

log = logging.getLogger(__name__)

TIMING = (
    "test_images", "test_seconds", "s_per_img", "pipeline_img_per_s",
    "model_latency_ms_median", "model_img_per_s", "fit_seconds",
)
PER_CATEGORY_COLUMNS = (*IDENTITY, *METRICS, *TIMING)
GROUP = ("experiment", "dataset", "model")
COMPARISON_COLUMNS = (
    *GROUP, "n_categories", "n_runs", "incomplete", "missing_categories", *METRICS, "partial_metrics",
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
}
FIGURE_FILES = ("metrics", "speed", "deltas")  # out_dir/figures/<name>.png, saved by the notebook
NOTEBOOK_NAME = "summary.ipynb"
METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "pixel AUPRO (FPR ≤ 0.3)",
    "image_f1": "image F1 (threshold from train)",
    "pixel_f1": "pixel F1 (threshold from train)",
    "image_f1_max": "image F1 max (test, optimistic)",
    "pixel_f1_max": "pixel F1 max (test, optimistic)",
    "image_f1_baseline": "image F1, all-anomalous baseline",
}


# --------------------------------------------------------------------------------------------
# tables


def load_frame(runs_dir: Path | str) -> pd.DataFrame:
    """Tidy frame (records.records_frame) of every record under ``runs_dir``.

    Raises FileNotFoundError when there is none, so an empty report is never produced silently.
    """
    runs_dir = Path(runs_dir)
    records = load_records(runs_dir) if runs_dir.is_dir() else []
    if not records:
        raise ReportError(f"no run records (*/record.json) under {runs_dir}: nothing to report; "
                          "run `vadbench run params/experiments/<experiment>.yaml` first or pass --runs")
    log.info("read %d records from %s", len(records), runs_dir)
    return records_frame(records)


def _with_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Copy of `frame` that has every column; a missing column is all-NaN, never zero."""
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = np.nan
    return frame


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


def _is_ok(frame: pd.DataFrame) -> pd.Series:
    status = frame["status"] if "status" in frame.columns else pd.Series(pd.NA, index=frame.index)
    return status.astype("string").eq("ok").fillna(False).astype(bool)


def per_category_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per `ok` run: identity, every metric, and timing (missing fields stay NaN).

    ``s_per_img`` is ``test_seconds / test_images``; ``pipeline_img_per_s`` is the recorded value,
    or ``test_images / test_seconds`` (its definition) when a record lacks it but has both inputs.
    """
    frame = _with_columns(frame, (*IDENTITY, "status", *METRICS, *TIMING))
    table = frame.loc[_is_ok(frame)].copy()
    _numeric(table, (*METRICS, *TIMING))
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
    were made from different configs (see :func:`report_tables.config_check`).
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
    mixed = report_tables.config_check(frame).set_index(list(GROUP))["mixed"]
    table["mixed_configs"] = [bool(mixed.get(key, False)) for key in zip(*(table[g] for g in GROUP))]
    return table.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def failed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Every run whose status is not ``ok``, with its error; these never enter a mean."""
    frame = _with_columns(frame, (*IDENTITY, "status", "error", "finished_at"))
    table = frame.loc[~_is_ok(frame)].copy()
    if "_path" in table.columns:
        table["run_dir"] = [str(Path(p).parent) if isinstance(p, str) else np.nan for p in table["_path"]]
    else:
        table["run_dir"] = np.nan
    table = table.loc[:, list(FAILED_COLUMNS)]
    return table.sort_values(list(IDENTITY), na_position="last", kind="stable").reset_index(drop=True)


def environment_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model: the devices and versions its `ok` runs ran with."""
    frame = _with_columns(frame, (*IDENTITY, "status", *ENVIRONMENT_FIELDS))
    runs = frame.loc[_is_ok(frame)]
    columns = [*GROUP, *ENVIRONMENT_FIELDS]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    table = runs.groupby(list(GROUP), dropna=False, sort=True)[list(ENVIRONMENT_FIELDS)].agg(
        lambda s: ", ".join(sorted({str(v) for v in s.dropna()})))
    return table.reset_index().loc[:, columns]


REFERENCE_TABLE_COLUMNS = (
    *GROUP, "category", "source", "external", "reference_dataset", "same_dataset",
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
    cells = report_tables.category_results(runs).set_index([*GROUP, "category"])
    latency = runs.groupby(list(GROUP), dropna=False)["model_latency_ms_median"].mean()
    rows = []
    for _, ident in references.model_identity(frame.loc[_is_ok(frame)]).iterrows():
        key = tuple(ident[g] for g in GROUP)
        matches = refs.loc[(refs["model_kind"] == ident["model_kind"])
                           & refs["model_size"].isin(["", ident["model_size"]])]
        if matches.empty or key not in comparison.index:
            continue
        ours = {**dict(zip(GROUP, key)), "source": f"vadbench ({key[0]})", "external": False,
                "reference_dataset": ident["dataset_kind"], "same_dataset": True, "note": "",
                "model_latency_ms_median": latency.get(key, np.nan)}
        mean = comparison.loc[key]
        rows.append({**ours, "category": references.MEAN, **{m: mean[m] for m in METRICS},
                     "model_img_per_s": mean["model_img_per_s"],
                     "note": f"mean over our {mean['n_categories']} categories"})
        for _, ref in matches.iterrows():
            same = ref["dataset_kind"] == ident["dataset_kind"]
            if ref["category"] != references.MEAN and not (same and (*key, ref["category"]) in cells.index):
                continue
            if ref["category"] != references.MEAN:
                ours_cell = cells.loc[(*key, ref["category"])]
                rows.append({**ours, "category": ref["category"], **{m: ours_cell[m] for m in METRICS},
                             "model_latency_ms_median": np.nan})
            label = ref["dataset_label"] or ref["dataset_kind"]
            rows.append({**dict(zip(GROUP, key)), "category": ref["category"], "source": ref["source"],
                         "external": True, "reference_dataset": label, "same_dataset": bool(same),
                         "note": ref["note"], **{f: ref[f] for f in references.REFERENCE_FIELDS}})
    return pd.DataFrame(rows).reindex(columns=columns).drop_duplicates().reset_index(drop=True)


def report_tables_for(frame: pd.DataFrame, reference_paths: list[Path | str] = (),
                      baseline: str | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, by its TABLE_FILES name."""
    runs = per_category_table(frame)
    return {
        "per_category": runs,
        "comparison": comparison_table(frame),
        "failed_runs": failed_runs(frame),
        "category_results": report_tables.category_results(runs),
        "category_speed": report_tables.category_speed(runs),
        "seeds": report_tables.seed_summary(runs),
        "experiment_deltas": report_tables.experiment_deltas(runs, baseline),
        "config_check": report_tables.config_check(frame),
        "references": reference_table(frame, reference_paths),
    }


def write_tables(frame: pd.DataFrame, out_dir: Path | str, reference_paths: list[Path | str] = (),
                 baseline: str | None = None) -> dict[str, Path]:
    """Write every table of TABLE_FILES as CSV under ``out_dir/tables``."""
    return save_tables(report_tables_for(frame, reference_paths, baseline), out_dir)


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
    frame = _with_columns(frame, (*IDENTITY, "status"))
    status = frame["status"].astype("string").fillna("(none)").value_counts().to_dict()
    names = {c: ", ".join(sorted(frame[c].dropna().astype(str).unique())) or "?"
             for c in ("experiment", "model", "dataset")}
    lines = [f"**{len(frame)} run records**: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())) + ".",
             f"Experiments: {names['experiment']}. Models: {names['model']}. Datasets: {names['dataset']}."]
    failed = int((~_is_ok(frame)).sum())
    if failed:
        lines.append(f"⚠ {failed} run(s) did not finish `ok`: listed under *Failed runs*, never averaged in.")
    comparison = comparison_table(frame)
    for _, row in comparison.loc[comparison["mixed_configs"]].iterrows():
        lines.append(f"⚠ {row['experiment']} / {row['dataset']} / {row['model']}: runs from different configs "
                     "(see *Mixed configurations*).")
    for _, row in comparison.loc[comparison["incomplete"]].iterrows():
        n = row["n_categories"]
        lines.append(f"⚠ {row['experiment']} / {row['dataset']} / {row['model']}: mean over {n} "
                     f"categor{'y' if n == 1 else 'ies'}, lacks {row['missing_categories']}; not comparable as if equal.")
    return "\n\n".join(lines)


def by_group(table: pd.DataFrame, keys: tuple[str, ...] = GROUP) -> list[tuple[str, pd.DataFrame]]:
    """The table split per experiment × dataset × model: ('experiment / dataset / model', rows
    without the key columns, indexed by category or else model where there is one), in sorted order, for
    display one group at a time."""
    if table.empty:
        return []
    parts = []
    for key, sub in table.groupby(list(keys), dropna=False, sort=True):
        title = " / ".join("?" if pd.isna(k) else str(k) for k in key)
        sub = sub.drop(columns=list(keys))
        index = next((c for c in ("category", "model") if c in sub.columns), None)
        parts.append((title, sub.set_index(index) if index else sub.reset_index(drop=True)))
    return parts


# --------------------------------------------------------------------------------------------
# figures


def _empty_figure(message: str) -> Figure:
    fig = Figure(figsize=(6, 1.5), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _panel_labels(table: pd.DataFrame) -> pd.Series:
    """'dataset', or 'experiment / dataset' when there is more than one experiment."""
    dataset = table["dataset"].astype("string").fillna("?")
    if table["experiment"].nunique(dropna=False) > 1:
        return table["experiment"].astype("string").fillna("?") + " / " + dataset
    return dataset


def metric_figure(frame: pd.DataFrame) -> Figure:
    """Bar chart per metric (rows) and dataset (columns): categories on x, models side by side.

    Bars are means over seeds with the standard deviation as error bar; a missing value draws no
    bar (not a zero bar). Metrics without any value are left out.
    """
    runs = per_category_table(frame)
    metrics = [m for m in METRICS if runs[m].notna().any()]
    if runs.empty or not metrics:
        return _empty_figure("no metrics: no ok runs")
    runs = runs.assign(panel=_panel_labels(runs), model=runs["model"].astype("string").fillna("?"),
                       category=runs["category"].astype("string").fillna("?"))
    panels = sorted(runs["panel"].unique())
    models = sorted(runs["model"].unique())
    palette = dict(zip(models, sns.color_palette(n_colors=len(models))))
    widths = [max(2, runs.loc[runs["panel"] == p, "category"].nunique()) for p in panels]
    fig = Figure(figsize=(1.0 * sum(widths) + 1.5 * len(panels) + 1.5, 2.3 * len(metrics)),
                 layout="constrained")
    axes = fig.subplots(len(metrics), len(panels), squeeze=False, sharey="row",
                        gridspec_kw={"width_ratios": widths})
    for i, metric in enumerate(metrics):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            sub = runs.loc[runs["panel"] == panel]
            order = sorted(sub["category"].unique())
            data = sub.dropna(subset=[metric])
            if data.empty:
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
            else:
                sns.barplot(data=data, x="category", y=metric, hue="model", order=order, hue_order=models,
                            palette=palette, errorbar="sd", ax=ax, legend=False)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric) if j == 0 else "", fontsize=8)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            if i == 0:
                ax.set_title(panel)
    handles = [Patch(color=palette[m], label=m) for m in models]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(models), frameon=False)
    return fig


_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def speed_figure(frame: pd.DataFrame) -> Figure:
    """Mean image AUROC against end-to-end pipeline img/s (left) and pure model img/s (right),
    one point per experiment × dataset × model; x on a log scale. Missing values draw no point."""
    table = comparison_table(frame)
    if table.empty:
        return _empty_figure("no speed figures: no ok runs")
    style = "dataset" if table["experiment"].nunique(dropna=False) <= 1 else "experiment / dataset"
    table = table.assign(**{style: _panel_labels(table)}, model=table["model"].astype("string").fillna("?"))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = [("img_per_s", "pipeline img/s (end to end: load, pre-process, forward, maps)"),
              ("model_img_per_s", "model img/s (forward only, on-device batch)")]
    for ax, (column, label) in zip(axes, panels):
        data = table.dropna(subset=[column, "image_auroc"])
        data = data.loc[data[column] > 0]
        if data.empty:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.scatterplot(data=data, x=column, y="image_auroc", hue="model", style=style, s=90, ax=ax,
                            hue_order=sorted(table["model"].unique()), style_order=sorted(table[style].unique()),
                            legend=ax is axes[-1])
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(_PLAIN)
            ax.xaxis.set_minor_formatter(_PLAIN)
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("image AUROC (mean over categories)")
        ax.grid(True, which="both", alpha=0.3)
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


DELTA_FIGURE_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1")


def delta_figure(frame: pd.DataFrame, baseline: str | None = None) -> Figure:
    """Per-category differences between experiments (b minus a; see
    :func:`report_tables.experiment_deltas`): one row of panels per metric, one column per
    experiment pair × dataset, categories on x, models side by side, zero line drawn."""
    deltas = report_tables.experiment_deltas(per_category_table(frame), baseline)
    deltas = deltas.loc[deltas["metric"].isin(DELTA_FIGURE_METRICS) & (deltas["category"] != report_tables.MEAN_LABEL)]
    if deltas.empty:
        return _empty_figure("no experiment deltas: no two experiments share a model and dataset")
    deltas = deltas.assign(panel=deltas["experiment_b"] + " − " + deltas["experiment_a"] + "\n"
                           + deltas["dataset"].astype(str), model=deltas["model"].astype(str),
                           category=deltas["category"].astype(str))
    metrics = [m for m in DELTA_FIGURE_METRICS if (deltas["metric"] == m).any()]
    panels = sorted(deltas["panel"].unique())
    models = sorted(deltas["model"].unique())
    palette = dict(zip(models, sns.color_palette(n_colors=len(models))))
    widths = [max(2, deltas.loc[deltas["panel"] == p, "category"].nunique()) for p in panels]
    fig = Figure(figsize=(1.0 * sum(widths) + 1.5 * len(panels) + 1.5, 2.3 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(panels), squeeze=False, sharey="row", gridspec_kw={"width_ratios": widths})
    for i, metric in enumerate(metrics):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            data = deltas.loc[(deltas["panel"] == panel) & (deltas["metric"] == metric)]
            if data.empty:
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            else:
                sns.barplot(data=data, x="category", y="delta", hue="model", hue_order=models, palette=palette,
                            order=sorted(data["category"].unique()), errorbar=None, ax=ax, legend=False)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlabel("")
            ax.set_ylabel(f"Δ {METRIC_LABELS.get(metric, metric)}" if j == 0 else "", fontsize=8)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            if i == 0:
                ax.set_title(panel, fontsize=9)
    fig.legend(handles=[Patch(color=palette[m], label=m) for m in models], loc="outside upper center",
               ncols=len(models), frameon=False)
    return fig


QUALITATIVE_FILE = "anomaly_maps.png"


def qualitative_grids(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Per experiment × dataset: (title, HTML table) with one row per category and one column per
    model, each cell the run's own anomaly-map figure (image, ground truth, heat map, predicted
    mask for a good image and one per defect type), embedded as base64 PNG; the lowest seed of
    each `ok` run is shown. A run without the figure gets a 'no figure' cell."""
    frame = _with_columns(frame, (*IDENTITY, "status", "_path"))
    runs = frame.loc[_is_ok(frame)].sort_values(list(IDENTITY), na_position="last", kind="stable")
    grids = []
    for (experiment, dataset), sub in runs.groupby(["experiment", "dataset"], dropna=False, sort=True):
        first = sub.drop_duplicates(["model", "category"])
        cells = {(_label(r["model"]), _label(r["category"])): r["_path"] for _, r in first.iterrows()}
        models = sorted({m for m, _ in cells})
        header = "".join(f"<th>{html_text.escape(m)}</th>" for m in models)
        body = []
        for category in sorted({c for _, c in cells}):
            row = "".join(f"<td>{_figure_cell(cells.get((m, category)))}</td>" for m in models)
            body.append(f"<tr><th>{html_text.escape(category)}</th>{row}</tr>")
        table = (f'<table class="vadbench-grid"><thead><tr><th>category</th>{header}</tr></thead>'
                 f"<tbody>{''.join(body)}</tbody></table>")
        grids.append((f"{_label(experiment)} / {_label(dataset)}", table))
    return grids


def _label(value: Any) -> str:
    """A table key as text; a missing one as '?'."""
    return "?" if pd.isna(value) else str(value)


def _figure_cell(record_path: Any) -> str:
    if record_path is None:
        return "no run"
    if not isinstance(record_path, str):
        return "no figure (record path unknown)"
    png = Path(record_path).parent / QUALITATIVE_FILE
    if not png.is_file():
        return f"no figure ({html_text.escape(QUALITATIVE_FILE)} missing)"
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html_text.escape(str(png.parent))}" src="data:image/png;base64,{data}">'


# --------------------------------------------------------------------------------------------
# report


def default_notebook() -> Path:
    """notebooks/summary.ipynb of the source checkout (src/vadbench/../../notebooks), else of the cwd."""
    candidates = [
        Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK_NAME,
        Path.cwd() / "notebooks" / NOTEBOOK_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"summary notebook not found (looked in {', '.join(map(str, candidates))}); pass notebook=PATH")


def build_report(runs_dir: Path | str, out_dir: Path | str, notebook: Path | str | None = None,
                 timeout_s: int = 600, pdf: bool = True, baseline: str | None = None) -> dict[str, Path]:
    """Execute the summary notebook with papermill; export it to self-contained HTML and, with
    Chromium present, to PDF.

    Writes ``out_dir/summary.ipynb`` (executed), ``out_dir/summary.html`` (outputs only, figures
    embedded, nothing fetched from the network), ``out_dir/summary.pdf`` (Chromium's print of
    the HTML; skipped with a warning when Chromium is absent) and ``out_dir/tables/*.csv``.
    Reference numbers come from the files the records' params files name (``references:``),
    resolved against the current directory. Raises ReportError when ``runs_dir`` holds no record.
    """
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    frame = load_frame(runs_dir)  # fails early and clearly when there is nothing to report
    reference_paths = [str(p.resolve()) for p in references.reference_files(frame)]

    import papermill

    notebook = Path(notebook) if notebook is not None else default_notebook()
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / NOTEBOOK_NAME
    log.info("report on %d records from %s -> %s", len(frame), runs_dir, out_dir)
    papermill.execute_notebook(
        str(notebook), str(executed),
        parameters={"runs_dir": str(runs_dir), "out_dir": str(out_dir), "reference_files": reference_paths,
                    "baseline_experiment": baseline or ""},
        kernel_name="python3", cwd=str(out_dir), progress_bar=False, log_output=False,
        execution_timeout=timeout_s,
    )
    html = export.export_html(executed, out_dir / "summary.html")
    paths = {"html": html, "notebook": executed}
    if pdf:
        paths.update(_write_pdf(html, out_dir / "summary.pdf"))
    for name, filename in TABLE_FILES.items():
        path = out_dir / "tables" / filename
        if not path.is_file():
            raise FileNotFoundError(f"the summary notebook did not write {path}")
        paths[name] = path
    for name in FIGURE_FILES:
        path = out_dir / "figures" / f"{name}.png"
        if path.is_file():
            paths[f"{name}_figure"] = path
    log.info("wrote %s", html)
    return paths


def _write_pdf(html: Path, pdf: Path) -> dict[str, Path]:
    """Print the HTML to PDF when Chromium is there; otherwise say so and write none."""
    if export.find_chromium() is None:
        pdf.unlink(missing_ok=True)  # never leave a stale PDF beside a new HTML
        log.warning("no PDF: Chromium not found; %s (the HTML report is complete)", export.INSTALL_HINT)
        return {}
    export.print_pdf(html, pdf)
    log.info("wrote %s (%d pages)", pdf, export.pdf_pages(pdf))
    return {"pdf": pdf}
