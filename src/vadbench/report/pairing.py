"""Test images by what they are, wherever a run was made: each `ok` run's scores.csv keyed by its images' keys
(vadbench.records.image_key: category, split, defect type and file as the dataset lays them out), the seeds of
one model × category aligned on the images they all scored, and two models (or experiments) paired on the
images both scored. Records made before scores.csv had a `key` column get keys derived from their paths.
Never imports torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vadbench.records import CELL, SCORES_FILE, image_key
from vadbench.report.frames import is_ok, with_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One model × category of a group: the test images all its seeds scored (sorted by key), their labels and
    each seed's scores."""

    keys: np.ndarray  # (images,) str
    labels: np.ndarray  # (images,) 0 good, 1 defect
    scores: np.ndarray  # (seeds, images)
    seeds: tuple
    note: str = ""  # what was left out on the way (seeds sharing too few images)

    @property
    def n_pos(self) -> int:
        return int(self.labels.sum())

    @property
    def n_neg(self) -> int:
        return int((self.labels == 0).sum())

    def usable(self) -> bool:
        """Both classes present: an AUROC exists."""
        return self.n_pos > 0 and self.n_neg > 0

    def subset(self, keys: np.ndarray) -> Cell:
        """The same runs on the given keys (a sorted subset of this cell's keys)."""
        index = np.searchsorted(self.keys, keys)
        return Cell(keys, self.labels[index], self.scores[:, index], self.seeds, self.note)


def read_scores(path: Path, category: object, dataset_kind: object) -> pd.DataFrame | None:
    """A run's scores.csv as key, label, score (one row per key; keys derived from paths where the file has none);
    None when it is missing or unreadable (logged)."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): its run is left out of the intervals", path, exc)
        return None
    if not {"label", "score"} <= set(table.columns) or not ({"key", "path"} & set(table.columns)):
        log.warning("%s lacks label, score or path columns: its run is left out of the intervals", path)
        return None
    if "key" not in table.columns or table["key"].isna().any():
        derived = [image_key(p, category, dataset_kind) for p in table.get("path", pd.Series("", index=table.index))]
        table["key"] = table["key"].fillna(pd.Series(derived, index=table.index)) if "key" in table else derived
    table = table.assign(label=pd.to_numeric(table["label"], errors="coerce"),
                         score=pd.to_numeric(table["score"], errors="coerce"), key=table["key"].astype(str))
    table = table.dropna(subset=["label", "score"]).loc[lambda t: t["label"].isin([0, 1])]
    return table.drop_duplicates("key").sort_values("key", kind="stable").loc[:, ["key", "label", "score"]]


def scored_cells(frame: pd.DataFrame) -> dict[tuple, Cell]:
    """(CELL key: experiment, dataset, model, protocols, category) -> its runs' Cell, from every `ok` run with a
    readable scores.csv; seeds are aligned on the images they all scored (`align_seeds`)."""
    frame = with_columns(frame, (*CELL, "seed", "dataset_kind", "_path"))
    runs = frame.loc[is_ok(frame)].sort_values("seed", kind="stable")
    cells = {}
    for key, sub in runs.groupby(list(CELL), dropna=False, sort=True):
        tables = []
        for _, run in sub.iterrows():
            if not isinstance(run["_path"], str):
                continue
            path = Path(run["_path"]).parent / SCORES_FILE
            table = read_scores(path, run["category"], run["dataset_kind"]) if path.is_file() else None
            if table is not None and len(table):
                tables.append((run["seed"], table))
        cell = align_seeds(tables)
        if cell is not None:
            cells[tuple(key)] = cell
    return cells


def align_seeds(tables: list[tuple[object, pd.DataFrame]]) -> Cell | None:
    """One Cell of a category's runs (lowest seed first): the images every kept seed scored; a seed that would leave
    one class out is left out itself (said in the note). None without a run."""
    if not tables:
        return None
    first_seed, first = tables[0]
    keys = first["key"].to_numpy()
    kept, dropped = [(first_seed, first)], []
    for seed, table in tables[1:]:
        common = np.intersect1d(keys, table["key"].to_numpy())
        labels = first.set_index("key").loc[common, "label"].to_numpy() if len(common) else np.array([])
        if len(common) and 0 < labels.sum() < len(labels):
            keys = common
            kept.append((seed, table))
        else:
            dropped.append(seed)
    keys = np.sort(keys)
    scores = [table.set_index("key").loc[keys, "score"].to_numpy(float) for _, table in kept]
    labels = first.set_index("key").loc[keys, "label"].to_numpy().astype(int)
    note = f"seed(s) {', '.join(map(str, dropped))} share no usable images with seed {first_seed}" if dropped else ""
    lost = len(first) - len(keys)
    if lost and len(kept) > 1:
        note = "; ".join(filter(None, [note, f"{len(keys)} images common to its seeds ({lost} left out)"]))
    return Cell(keys, labels, np.array(scores), tuple(seed for seed, _ in kept), note)


def paired(a: Cell, b: Cell) -> tuple[Cell | None, Cell | None, str]:
    """Both cells on the images both scored with the same label, or (None, None, why) when no such pair of classes
    remains; the third item notes images left out."""
    sizes = (len(a.keys), len(b.keys))
    common = np.intersect1d(a.keys, b.keys)
    if not len(common):
        return None, None, "no test image in common (the runs name different images)"
    a, b = a.subset(common), b.subset(common)
    same = a.labels == b.labels
    if not same.all():
        a, b = a.subset(common[same]), b.subset(common[same])
    if not a.usable():
        return None, None, "the images in common hold one class only"
    used = len(a.keys)
    return a, b, (f"paired on {used} of {sizes[0]} and {sizes[1]} images" if used < max(sizes) else "")
