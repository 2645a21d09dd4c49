"""Published reference numbers (external: papers, other tools), read from params/references/*.yaml.

An experiment file names the reference files it wants beside its results (``references:``); the
report finds them through each record's ``params_file``. Values are fractions in [0, 1] for
metrics (a paper's 98.0 % is written 0.980), milliseconds and images per second for speed. Loading
is strict like the experiment params: an unknown key or metric is an error naming the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vadbench.errors import ConfigError
from vadbench.records import GROUP, METRICS
from vadbench.report.frames import json_dict
from vadbench.strict import load_yaml

log = logging.getLogger(__name__)

SPEED_FIELDS = ("model_latency_ms_median", "model_img_per_s")
REFERENCE_FIELDS = (*METRICS, *SPEED_FIELDS)
REFERENCE_COLUMNS = ("source", "model_kind", "model_size", "dataset_kind", "dataset_label", "category",
                     "note", *REFERENCE_FIELDS)
MEAN = "(mean)"


@dataclass(frozen=True)
class Reference:
    """One published result: a model (kind and, for EfficientAD, size) on a dataset kind."""

    citation: str  # where the numbers come from (paper, table, tool version)
    model_kind: str
    dataset_kind: str
    dataset_label: str = ""
    model_size: str = ""
    note: str = ""
    mean: dict[str, float] = field(default_factory=dict)
    categories: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceFile:
    references: list[Reference]
    description: str = ""


def load_reference_file(path: Path | str) -> list[Reference]:
    """Read and validate one reference file."""
    return load_yaml(path, ReferenceFile, "reference file (see params/references/)", _check_file).references


def _check_file(parsed: ReferenceFile) -> None:
    for i, ref in enumerate(parsed.references):
        _check_values(ref.mean, f"references[{i}].mean")
        for category, values in ref.categories.items():
            _check_values(values, f"references[{i}].categories.{category}")


def _check_values(values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of metric: value")
    for key, value in values.items():
        if key not in REFERENCE_FIELDS:
            raise ConfigError(f"unknown metric {where}.{key}; allowed: {list(REFERENCE_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        if key in METRICS and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{key}: {value} is not a fraction in [0, 1] (write 98.0 % as 0.980)")


def references_frame(paths: list[Path | str]) -> pd.DataFrame:
    """Every reference of the files, one row per reference × category (``(mean)`` for the mean)."""
    rows = []
    for path in dict.fromkeys(str(p) for p in paths):
        for ref in load_reference_file(path):
            base = {"source": ref.citation, "model_kind": ref.model_kind, "model_size": ref.model_size,
                    "dataset_kind": ref.dataset_kind, "dataset_label": ref.dataset_label, "note": ref.note}
            if ref.mean:
                rows.append({**base, "category": MEAN, **ref.mean})
            rows += [{**base, "category": c, **values} for c, values in ref.categories.items()]
    return pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))


def reference_files(frame: pd.DataFrame, base: Path | str | None = None) -> list[Path]:
    """The reference files named (``references:``) by the params files of the records.

    Params and reference paths are relative to ``base`` (default: the current directory, where
    `vadbench` runs). A params file that is gone or unreadable is skipped with a warning.
    """
    base = Path(base) if base is not None else Path.cwd()
    found: list[Path] = []
    column = frame["params_file"] if "params_file" in frame.columns else pd.Series(dtype=object)
    for params_file in sorted({p for p in column.dropna().astype(str)}):
        path = Path(params_file) if Path(params_file).is_absolute() else base / params_file
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            log.warning("params file %s unreadable (%s): its reference numbers are not shown", path, exc)
            continue
        for name in data.get("references") or []:
            ref = Path(name) if Path(name).is_absolute() else base / name
            if ref not in found:
                found.append(ref)
    return found


def model_identity(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model × protocols (records.GROUP): model kind, model size and dataset kind, from
    each record's config (the model class when a record has no config)."""
    rows = []
    for _, row in frame.iterrows():
        config = json_dict(row.get("config"))
        model = config.get("model") or {}
        model_class = row.get("model_class")
        kind = model.get("kind") or (model_class.lower() if isinstance(model_class, str) else "")
        size = (config.get("model_params") or {}).get("model_size", "") if kind == "efficientad" else ""
        dataset_kind = row.get("dataset_kind")
        rows.append({**{g: row.get(g) for g in GROUP}, "model_kind": kind, "model_size": size or "",
                     "dataset_kind": dataset_kind if isinstance(dataset_kind, str) else ""})
    table = pd.DataFrame(rows, columns=[*GROUP, "model_kind", "model_size", "dataset_kind"])
    return table.drop_duplicates(list(GROUP)).reset_index(drop=True)
