"""The run record, the contract between a run and the report: schema names, building, atomic write, read, tidy rows.

The field list lives in docs/records.md. This module must not import torch or anomalib: the
report reads records on machines that have neither.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from vadbench.config import RunSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
SCORES_FILE = "scores.csv"
FIGURE_FILE = "anomaly_maps.png"  # the run's anomaly-map figure, shown by the report's qualitative grids
SECTIONS = ("metrics", "timing", "split", "training", "environment")
IDENTITY = ("experiment", "model", "dataset", "category", "seed")
GROUP = ("experiment", "dataset", "model")  # the rows of the report's comparison: means over categories
CELL = (*GROUP, "category")  # one cell of the grid, over seeds
#: The metric numbers of a record's `metrics` section, in the order a reader scans them (each F1 beside its
#: all-anomalous baseline); the section also holds THRESHOLD_FIELDS.
METRICS = (
    "image_auroc", "image_f1", "image_f1_baseline", "image_f1_max",
    "pixel_auroc", "pixel_f1", "pixel_f1_max", "pixel_aupro",
)
THRESHOLD_FIELDS = ("image_threshold", "pixel_threshold", "threshold_method")


def now() -> str:
    """UTC timestamp of records (seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def identity(run: RunSpec) -> dict[str, Any]:
    """The identity fields of a run's record, and its config and config hash."""
    return {"experiment": run.experiment, "model": run.model.name, "dataset": run.dataset.name,
            "dataset_kind": run.dataset.kind, "category": run.category, "seed": run.seed,
            "image_size": run.model.image_size, "params_file": run.params_file,
            "config_hash": run.config_hash, "config": run.config()}


def failed_record(run: RunSpec, error: str, started: str, stage: str | None = None,
                  oom_batch_size: int | None = None) -> dict[str, Any]:
    """A `failed` record: identity, the error, and where it failed (stage; the batch size of an out-of-memory)."""
    record: dict[str, Any] = {"status": "failed", "error": error, **identity(run)}
    if stage is not None:
        record["failed_stage"] = stage
    if oom_batch_size is not None:
        record["oom_stage"], record["oom_batch_size"] = stage, oom_batch_size
    return {**record, "started_at": started, "finished_at": now()}


def run_dir(root: Path | str, experiment: str, model: str, dataset: str, category: str, seed: int) -> Path:
    """Directory of one run under the runs root."""
    return Path(root) / experiment / model / dataset / category / f"seed{seed}"


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    """Serialise numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_record(directory: Path | str, record: dict[str, Any]) -> Path:
    """Write `record.json` atomically into a run directory and return its path."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(directory) / RECORD_FILE
    write_json_atomic(path, record)
    return path


def read_record(path: Path | str) -> dict[str, Any]:
    """Read one record (a `record.json` path or its run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    record.setdefault("_path", str(path))
    return record


def find_records(root: Path | str) -> list[Path]:
    """All `record.json` files below a runs root, sorted."""
    return sorted(Path(root).rglob(RECORD_FILE))


def load_records(root: Path | str) -> list[dict[str, Any]]:
    """Read every record below a root; unreadable files are logged and skipped."""
    records = []
    for path in find_records(root):
        try:
            records.append(read_record(path))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable record %s: %s", path, exc)
    return records


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row: identity fields, then each section's fields lifted to the top level."""
    row: dict[str, Any] = {k: v for k, v in record.items() if k not in SECTIONS and k not in ("config", "speed")}
    for section in SECTIONS:
        values = record.get(section) or {}
        for key, value in values.items():
            row[key] = value
    if "config" in record:
        row["config"] = json.dumps(record["config"], sort_keys=True)
    if record.get("speed"):  # the GPU-grade rows stay one JSON column: vadbench.report.speed unfolds them
        row["speed"] = json.dumps(record["speed"])
    return row


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tidy table, one row per run; missing optional fields are NaN, never zero."""
    rows = [flatten(r) for r in records]
    frame = pd.DataFrame(rows)
    for column in (*IDENTITY, "status"):
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


def is_finished(directory: Path | str, config_hash: str) -> bool:
    """True when the run directory holds an `ok` record made from the same config."""
    path = Path(directory) / RECORD_FILE
    if not path.is_file():
        return False
    try:
        record = read_record(path)
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("status") == "ok" and record.get("config_hash") == config_hash
