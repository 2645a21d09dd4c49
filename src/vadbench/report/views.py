"""How the report's tables read in HTML and PDF: numbers to 3 decimals, an estimate and its interval in one cell
('0.933 [0.837, 0.978]'), human column titles, no index column, one group at a time under a title that names
its protocols, replay rows marked. tables/*.csv keep the raw columns; this is the reader's view only.
Never imports torch.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vadbench.records import GROUP, PROTOCOLS
from vadbench.report.frames import PIXELS_AT, THRESHOLDS_FROM, protocol_tag

DIGITS = 3
SHORT = 28  # a text cell this short stays on one line
PANEL = ("experiment", "dataset", *PROTOCOLS)  # one table per experiment × dataset × protocols, a row per model
TITLES = {
    "val_source": "thresholds from", "pixel_protocol": "pixel protocol", "replay": "replay",
    "n_categories": "categories", "n_seeds": "seeds", "n_runs": "runs", "n_images": "images", "n_configs": "configs",
    "image_auroc": "image AUROC", "image_f1": "image F1", "image_f1_baseline": "image F1, all called anomalous",
    "image_f1_max": "image F1 max (test, optimistic)", "pixel_auroc": "pixel AUROC", "pixel_f1": "pixel F1",
    "pixel_f1_max": "pixel F1 max (test, optimistic)", "pixel_aupro": "pixel AU-PRO (FPR ≤ 0.3)",
    "value_a": "a's mean", "value_b": "b's mean", "delta": "b − a [95 % interval]", "p_value": "p", "p_holm": "p, Holm",
    "verdict": "verdict at 95 % each", "verdict_holm": "verdict after Holm", "test_images": "test images",
    "test_seconds": "test s", "s_per_img": "s / image", "img_per_s": "img/s (end to end)",
    "pipeline_img_per_s": "img/s (end to end)", "model_img_per_s": "model img/s",
    "model_latency_ms_median": "model latency, ms", "harness_ms_per_image": "harness ms / image",
    "fit_seconds": "training s", "missing_categories": "missing categories", "partial_metrics": "partial metrics",
    "mixed_configs": "mixed configs", "differing_keys": "differing keys", "reference_dataset": "measured on",
    "same_dataset": "same dataset", "image_auroc_vs_ours": "vs our interval", "run_dir": "run folder",
    "finished_at": "finished", "latency_ms_median": "latency, ms", "experiment_a": "experiment a",
    "experiment_b": "experiment b", "protocols_a": "protocols a", "protocols_b": "protocols b",
}
COUNTS = ("n_categories", "n_seeds", "n_runs", "n_images", "n_configs", "test_images", "seed", "batch_size")
WORDS = {"val_source": THRESHOLDS_FROM, "pixel_protocol": PIXELS_AT}
_NUMBER = re.compile(r"^-?[\d.]+( ± [\d.]+| \[-?[\d.]+, -?[\d.]+\])$")


@dataclass(frozen=True)
class Shown:
    """A formatted table that notebooks display as HTML without its index (`frame` is what it shows)."""

    frame: pd.DataFrame

    def _repr_html_(self) -> str:
        """The table without index; a number's cell ('0.933 [0.837, 0.978]', '0.316 ± 0.022') and a short text
        (a label, a verdict) never break across lines (non-breaking spaces), long texts wrap."""
        frame = self.frame.map(lambda v: v.replace(" ", "\u00a0") if isinstance(v, str)
                               and (len(v) <= SHORT or _NUMBER.match(v)) else v)
        return frame.to_html(index=False, na_rep="", escape=True, classes="vadbench-table")


def title(column: Any) -> str:
    """A column's title for readers ('image_auroc' -> 'image AUROC'); two-level columns joined with ' · '."""
    if isinstance(column, tuple):
        return " · ".join(title(c) for c in column if c != "")
    return TITLES.get(str(column), str(column).replace("_", " "))


def interval_text(value: Any, low: Any, high: Any, digits: int = DIGITS) -> str:
    """'0.933 [0.837, 0.978]'; the value alone without an interval; '' without a value."""
    if _missing(value):
        return ""
    if _missing(low) or _missing(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """Each `<m>` beside `<m>_ci_low` / `<m>_ci_high` (and `delta` beside `ci_low` / `ci_high`) as one text cell."""
    table = table.copy()
    pairs = [(c, f"{c}_ci_low", f"{c}_ci_high") for c in table.columns if f"{c}_ci_low" in table.columns]
    if {"delta", "ci_low", "ci_high"} <= set(table.columns):
        pairs.append(("delta", "ci_low", "ci_high"))
    for value, low, high in pairs:
        table[value] = [interval_text(v, lo, hi) for v, lo, hi in zip(table[value], table[low], table[high])]
    return table.drop(columns=[c for _, low, high in pairs for c in (low, high) if c in table.columns])


def _cell(column: Any, value: Any) -> Any:
    name = column[-1] if isinstance(column, tuple) else column
    if _missing(value):
        return ""
    if name == "replay":
        return "REPLAY" if value is True or value == "True" else ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if name in WORDS:
        return WORDS[name].get(str(value), value)
    if name in ("p_value", "p_holm") and isinstance(value, float):
        return f"{value:.2g}" if value >= 1e-4 else "< 1e-4"
    if isinstance(value, float) and (name in COUNTS or str(name).startswith("n_")) and value.is_integer():
        return str(int(value))
    return f"{value:.{DIGITS}f}" if isinstance(value, float) else value


def show(table: pd.DataFrame, drop: tuple[str, ...] = (), titles: dict[str, str] | None = None) -> Shown:
    """The table as readers see it: intervals joined, numbers to 3 decimals, words for protocol values, human
    titles, no index."""
    table = with_intervals(table.drop(columns=[c for c in drop if c in table.columns]))
    shown = pd.DataFrame({c: [_cell(c, v) for v in table[c]] for c in table.columns}, index=range(len(table)))
    names = {**TITLES, **(titles or {})}
    shown.columns = [names.get(c, title(c)) if not isinstance(c, tuple) else title(c) for c in table.columns]
    return Shown(shown)


def by_group(table: pd.DataFrame, keys: tuple[str, ...] = GROUP) -> list[tuple[str, pd.DataFrame]]:
    """The table split per key (by default experiment × dataset × model × protocols): ('experiment / dataset / model
    — its protocols', its rows without the key columns), in sorted order, for display one group at a time."""
    if table.empty:
        return []
    parts = []
    for key, sub in table.groupby(list(keys), dropna=False, sort=True):
        values = dict(zip(keys, key))
        name = " / ".join("?" if _missing(values[k]) else str(values[k]) for k in keys if k not in PROTOCOLS)
        if set(PROTOCOLS) <= set(keys):
            name += " — " + protocol_tag(*(values[p] for p in PROTOCOLS))
        parts.append((name, sub.drop(columns=list(keys)).reset_index(drop=True)))
    return parts


def heading(text: str) -> str:
    """A group's title as bold HTML (escaped)."""
    return f"<p><b>{html.escape(text)}</b></p>"


def answer_view(differences: pd.DataFrame) -> pd.DataFrame:
    """The comparisons for readers: both sides' protocols in one column (`protocols`: one tag where they agree,
    'a: …; b: …' where not), the raw side columns left out; `by_group(view, ("dataset", "protocols"))` splits it."""
    if differences.empty:
        return differences
    sides = [[protocol_tag(*r) for r in differences[[f"{p}_{s}" for p in PROTOCOLS]].itertuples(index=False)]
             for s in "ab"]
    protocols = [a if a == b else f"a: {a}; b: {b}" for a, b in zip(*sides)]
    sides_columns = [f"{c}_{s}" for c in ("experiment", "model", *PROTOCOLS) for s in "ab"]
    view = differences.drop(columns=[c for c in [*sides_columns, "metric"] if c in differences.columns])
    return view.assign(protocols=protocols)


def comparisons_text(differences: pd.DataFrame) -> str:
    """Markdown: how many comparisons the answer makes, how many are beyond noise at 95 % each and after Holm's
    correction over all of them, and how many could not be compared."""
    if differences.empty:
        return "One model and one experiment per dataset: nothing to compare."
    compared = differences.loc[differences["p_value"].notna()]
    beyond = int((compared["verdict"] != "within noise").sum())
    holm = int((compared["verdict_holm"] != "within noise").sum())
    text = (f"**{len(compared)} comparisons.** {beyond} beyond noise at 95 % each; {holm} after Holm's correction "
            f"over all {len(compared)} (family-wise error 5 %).")
    skipped = len(differences) - len(compared)
    return text + (f" {skipped} pair(s) could not be compared (see their note)." if skipped else "")


def with_answer_intervals(comparison: pd.DataFrame, means: pd.DataFrame) -> pd.DataFrame:
    """The comparison table with the answer's intervals of mean image and pixel AUROC beside those means."""
    columns = [f"{m}_ci_{s}" for m in ("image_auroc", "pixel_auroc") for s in ("low", "high")]
    if comparison.empty or means.empty:
        return comparison
    keyed = means.loc[:, [*GROUP, *columns]].astype({g: str for g in GROUP})
    merged = comparison.astype({g: str for g in GROUP}).merge(keyed, on=list(GROUP), how="left")
    merged[list(GROUP)] = comparison[list(GROUP)].to_numpy()
    return merged


def references_view(refs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The references table for readers and its notes: an external row's protocol columns say 'published' (its group
    columns name the row of ours it sits beside); columns empty in every row left out; each source is a numbered
    note ('[1]') listed below the table with what it says, so the table stays narrow."""
    if refs.empty:
        return refs, ""
    external = refs["external"].astype(bool)
    view = refs.assign(**{p: refs[p].where(~external, "published") for p in PROTOCOLS})
    texts = [f"{source}: {note}" if isinstance(note, str) and note else str(source)
             for source, note in zip(view["source"], view["note"])]
    numbers = {text: i + 1 for i, text in enumerate(dict.fromkeys(texts))}
    view = view.drop(columns=["source", "note"]).dropna(axis=1, how="all")
    view.insert(0, "source", [f"[{numbers[t]}]" for t in texts])
    return view, "\n".join(f"{i}. {html.escape(text)}" for text, i in numbers.items())
