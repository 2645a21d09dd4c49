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

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

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
    "test_images", "test_seconds", "s_per_img", "img_per_s", "model_img_per_s",
)
FAILED_COLUMNS = (*IDENTITY, "status", "error", "finished_at", "run_dir")
ENVIRONMENT_FIELDS = (
    "device", "device_name", "torch_version", "anomalib_version", "vadbench_version", "git_commit",
)
TABLE_FILES = {
    "per_category": "per_category.csv",
    "comparison": "comparison.csv",
    "failed_runs": "failed_runs.csv",
}
FIGURE_FILES = ("metrics", "speed")  # out_dir/figures/<name>.png, saved by the notebook
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
    one lacks (listed in ``missing_categories``).
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


def write_tables(frame: pd.DataFrame, out_dir: Path | str) -> dict[str, Path]:
    """Write per_category.csv, comparison.csv and failed_runs.csv under ``out_dir/tables``."""
    tables_dir = Path(out_dir) / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    builders = {"per_category": per_category_table, "comparison": comparison_table, "failed_runs": failed_runs}
    paths = {}
    for name, builder in builders.items():
        path = tables_dir / TABLE_FILES[name]
        builder(frame).to_csv(path, index=False)
        paths[name] = path
    log.info("wrote %d tables to %s", len(paths), tables_dir)
    return paths


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
                 timeout_s: int = 600) -> dict[str, Path]:
    """Execute the summary notebook with papermill and export it as self-contained HTML.

    Writes ``out_dir/summary.ipynb`` (executed), ``out_dir/summary.html`` (outputs only, figures
    embedded as base64 PNG) and ``out_dir/tables/*.csv`` (written by the notebook).
    Raises FileNotFoundError when ``runs_dir`` holds no readable record.
    """
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    frame = load_frame(runs_dir)  # fails early and clearly when there is nothing to report

    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    notebook = Path(notebook) if notebook is not None else default_notebook()
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / NOTEBOOK_NAME
    log.info("report on %d records from %s -> %s", len(frame), runs_dir, out_dir)
    papermill.execute_notebook(
        str(notebook), str(executed),
        parameters={"runs_dir": str(runs_dir), "out_dir": str(out_dir)},
        kernel_name="python3", cwd=str(out_dir), progress_bar=False, log_output=False,
        execution_timeout=timeout_s,
    )
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = out_dir / "summary.html"
    html.write_text(body, encoding="utf-8")
    paths = {"html": html, "notebook": executed}
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
