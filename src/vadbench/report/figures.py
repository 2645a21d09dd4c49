"""The report's figures from run records: metrics per category, accuracy against speed, experiment deltas,
and the qualitative grids of each run's own anomaly-map figure. Never imports torch or anomalib."""
from __future__ import annotations

import base64
import html as html_text
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from vadbench.records import FIGURE_FILE, IDENTITY, METRICS, PROTOCOLS
from vadbench.report import breakdowns
from vadbench.report.frames import is_ok, protocol_tag, with_columns
from vadbench.report.tables import comparison_table, per_category_table

METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "pixel AUPRO (FPR ≤ 0.3)",
    "image_f1": "image F1 (fitted threshold)",
    "pixel_f1": "pixel F1 (fitted threshold)",
    "image_f1_max": "image F1 max (test, optimistic)",
    "pixel_f1_max": "pixel F1 max (test, optimistic)",
    "image_f1_baseline": "image F1, all-anomalous baseline",
}

def _empty_figure(message: str) -> Figure:
    fig = Figure(figsize=(6, 1.5), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _panel_labels(table: pd.DataFrame) -> pd.Series:
    """'dataset', or 'experiment / dataset' when there is more than one experiment, then its protocols
    ('· honest · train · input', REPLAY first for a replay)."""
    dataset = table["dataset"].astype("string").fillna("?")
    if table["experiment"].nunique(dropna=False) > 1:
        dataset = table["experiment"].astype("string").fillna("?") + " / " + dataset
    tags = [protocol_tag(*row, short=True) for row in table[list(PROTOCOLS)].itertuples(index=False)]
    return dataset + pd.Series([f" · {t}" for t in tags], index=table.index, dtype="string")


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
    :func:`breakdowns.experiment_deltas`): one row of panels per metric, one column per
    experiment pair × dataset, categories on x, models side by side, zero line drawn."""
    deltas = breakdowns.experiment_deltas(per_category_table(frame), baseline)
    deltas = deltas.loc[deltas["metric"].isin(DELTA_FIGURE_METRICS) & (deltas["category"] != breakdowns.MEAN_LABEL)]
    if deltas.empty:
        return _empty_figure("no experiment deltas: no two experiments share a model and dataset")
    tags = {side: [protocol_tag(*r, short=True) for r in deltas[[f"{p}_{side}" for p in PROTOCOLS]]
                   .itertuples(index=False)] for side in "ab"}
    sides = [a if a == b else f"a: {a}\nb: {b}" for a, b in zip(tags["a"], tags["b"])]
    deltas = deltas.assign(panel=deltas["experiment_b"] + " − " + deltas["experiment_a"] + "\n"
                           + deltas["dataset"].astype(str) + "\n" + pd.Series(sides, index=deltas.index),
                           model=deltas["model"].astype(str), category=deltas["category"].astype(str))
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




def forest_figure(differences: pd.DataFrame) -> Figure:
    """Every paired difference of the answer (vadbench.report.uncertainty.answer_differences), one row each: b − a of
    mean image AUROC with its 95 % interval and the zero line; filled where beyond noise after Holm's correction,
    open where only at 95 % each, grey within noise; a pair without shared images says why instead. Each row names
    its dataset, its sides ([replay] marked) and its protocols."""
    if differences.empty:
        return _empty_figure("no comparisons: one model and one experiment per dataset")
    rows = differences.reset_index(drop=True)
    fig = Figure(figsize=(11, 0.55 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    labels = []
    for y, row in rows.iterrows():
        tags = {protocol_tag(*(row[f"{p}_{s}"] for p in PROTOCOLS), short=True) for s in "ab"}
        labels.append(f"{row['dataset']} · {_pair(str(row['a']), str(row['b']))}\n" + " vs ".join(sorted(tags)))
        if pd.isna(row["delta"]):
            ax.text(0, -y, f"not compared: {row['note']}", ha="center", va="center", fontsize=8, color="0.3")
            continue
        holm = row["verdict_holm"] not in ("within noise",)
        color = "C3" if holm else "C1" if row["verdict"] != "within noise" else "0.45"
        ax.plot([row["ci_low"], row["ci_high"]], [-y, -y], color=color, linewidth=2)
        ax.plot(row["delta"], -y, "o", markersize=7, color=color, markerfacecolor=color if holm else "white")
    ax.axvline(0, color="black", linewidth=0.9)
    ax.set_yticks([-y for y in range(len(rows))], labels, fontsize=8)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_xlabel("b − a, mean image AUROC over the categories both ran (95 % interval, paired on the same images)")
    compared = int(rows["p_value"].notna().sum())
    ax.set_title(f"{compared} comparisons · filled: beyond noise after Holm's correction over all {compared} · "
                 "open: at 95 % each only · grey: within noise", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _pair(a: str, b: str) -> str:
    """'context: b − a' where both labels share their 'context: ' (an experiment, or a model), else 'b − a'."""
    context_a, _, name_a = a.partition(": ")
    context_b, _, name_b = b.partition(": ")
    return f"{context_a}: {name_b} − {name_a}" if name_a and context_a == context_b else f"{b} − {a}"


def qualitative_grids(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Per experiment × dataset: (title, HTML table) with one row per category and one column per
    model, each cell the run's own anomaly-map figure (image, ground truth, heat map, predicted
    mask for a good image and one per defect type), embedded as base64 PNG; the lowest seed of
    each `ok` run is shown. A run without the figure gets a 'no figure' cell."""
    frame = with_columns(frame, (*IDENTITY, *PROTOCOLS, "status", "_path"))
    runs = frame.loc[is_ok(frame)].sort_values(list(IDENTITY), na_position="last", kind="stable")
    grids = []
    for (experiment, dataset, *protocols), sub in runs.groupby(["experiment", "dataset", *PROTOCOLS], dropna=False,
                                                               sort=True):
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
        grids.append((f"{_label(experiment)} / {_label(dataset)} — {protocol_tag(*protocols)}", table))
    return grids


def _label(value: Any) -> str:
    """A table key as text; a missing one as '?'."""
    return "?" if pd.isna(value) else str(value)


def _figure_cell(record_path: Any) -> str:
    if record_path is None:
        return "no run"
    if not isinstance(record_path, str):
        return "no figure (record path unknown)"
    png = Path(record_path).parent / FIGURE_FILE
    if not png.is_file():
        return f"no figure ({html_text.escape(FIGURE_FILE)} missing)"
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html_text.escape(str(png.parent))}" src="data:image/png;base64,{data}">'
