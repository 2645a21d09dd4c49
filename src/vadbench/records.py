"""The run record, the contract between a run and the report: schema names, building, atomic write, read, tidy rows.

The field list lives in docs/records.md. This module must not import torch or anomalib: the
report reads records on machines that have neither.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
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
SHARD_STATUS_FILE = "shard_status.json"  # a Kaggle shard's finished/failed/deferred runs, beside its runs root
NOTEBOOK_FILE = "train_evaluate.ipynb"  # the executed notebook; a run folder without a readable one is not finished
SCORES_FILE = "scores.csv"
FIGURE_FILE = "anomaly_maps.png"  # the run's anomaly-map figure, shown by the report's qualitative grids
SECTIONS = ("metrics", "timing", "split", "training", "environment")
IDENTITY = ("experiment", "model", "dataset", "category", "seed")
#: How a run's numbers were made, shown beside every result: thresholds' `protocol`, where they were fitted
#: (`val_source`) and the pixel metrics' `pixel_protocol`. Runs that differ in one are never averaged together.
PROTOCOLS = ("protocol", "val_source", "pixel_protocol")
NOT_RECORDED = "not recorded"  # a protocol field a record neither carries nor implies
GROUP = ("experiment", "dataset", "model", *PROTOCOLS)  # the rows of the report's comparison: means over categories
CELL = (*GROUP, "category")  # one cell of the grid, over seeds
#: The metric numbers of a record's `metrics` section, in the order a reader scans them (each F1 beside its
#: all-anomalous baseline); the section also holds THRESHOLD_FIELDS.
METRICS = (
    "image_auroc", "image_f1", "image_f1_baseline", "image_f1_max",
    "pixel_auroc", "pixel_f1", "pixel_f1_max", "pixel_aupro",
)
THRESHOLD_FIELDS = ("image_threshold", "pixel_threshold", "threshold_method")
#: Each metric's 95 % interval in a record's `metrics` (all but the baseline, which has no noise of its own).
INTERVALS = tuple(f"{m}_ci_{side}" for m in METRICS if m != "image_f1_baseline" for side in ("low", "high"))
STATUSES = ("ok", "failed")


class RecordError(ValueError):
    """A record file holds JSON that is not a run record (not an object, unknown status, identity missing)."""


def now() -> str:
    """UTC timestamp of records (seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def minutes_between(start: str | None, end: str | None) -> float | None:
    """Minutes from one record timestamp to another; None when either is missing or unreadable."""
    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() / 60
    except (TypeError, ValueError):
        return None


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
    """Write strict JSON so that readers see either the old file or the whole new one (NaN and ±inf become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = strict_json(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """A copy of `value` where every NaN or infinite float (numpy scalars included) is None."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    """Read one record (a `record.json` path or its run directory).

    Raises OSError, json.JSONDecodeError, or RecordError when the JSON is not a run record.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    check_record(record, path)
    record.setdefault("_path", str(path))
    return record


def check_record(record: Any, path: Path | str) -> None:
    """RecordError unless `record` fits the schema: a JSON object whose status (when present, as in foreign or older
    records) is `ok` or `failed`, whose identity fields are plain values and whose sections are objects."""
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a record must be a JSON object, found {type(record).__name__}")
    if "status" in record and record["status"] not in STATUSES:
        raise RecordError(f"{path}: status {record['status']!r} is not one of {list(STATUSES)}")
    wrong = [key for key in IDENTITY if isinstance(record.get(key), (dict, list))]
    wrong += [key for key in (*SECTIONS, "config") if record.get(key) is not None and not isinstance(record[key], dict)]
    if wrong:
        raise RecordError(f"{path}: field(s) {wrong} of the wrong type (identity fields are plain values, "
                          "sections are objects)")


def find_records(root: Path | str) -> list[Path]:
    """All `record.json` files below a runs root, sorted; folders whose name starts with '.' (runs in progress,
    locks, runs being replaced) are left out."""
    root = Path(root)
    return sorted(p for p in root.rglob(RECORD_FILE)
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def load_records(root: Path | str) -> list[dict[str, Any]]:
    """Read every record below a root; unreadable files are logged and skipped (see `load_all`)."""
    return load_all(root)[0]


def load_all(root: Path | str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Every record below a root, and the unreadable ones as (path, why), each logged as a warning."""
    records, unreadable = [], []
    for path in find_records(root):
        try:
            records.append(read_record(path))
        except (OSError, ValueError) as exc:  # JSONDecodeError and RecordError are ValueErrors
            log.warning("skipping unreadable record %s: %s", path, exc)
            unreadable.append((str(path), f"{type(exc).__name__}: {exc}"))
    return records, unreadable


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
    """Tidy table, one row per run; missing optional fields are NaN, never zero; the PROTOCOLS always filled
    (see `protocols_of`)."""
    records = list(records)
    rows = [{**flatten(r), **protocols_of(r)} for r in records]
    frame = pd.DataFrame(rows)
    for column in (*IDENTITY, "status", *PROTOCOLS):
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


#: Where thresholds were fitted, as `threshold_method` names it (vadbench.run.evaluate.VAL_NAMES).
_VAL_SOURCE_WORDS = (("held-out train images", "train"), ("half of the test set", "test_half"),
                     ("the test set", "test"))


def protocols_of(record: dict[str, Any]) -> dict[str, str]:
    """The record's PROTOCOLS: its own fields; else its config (where a key left at its default is not written, so
    a config without it ran the default: honest, train, input); else what `threshold_method` and `ci_method` say;
    else NOT_RECORDED."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    evaluation = config.get("evaluation") if isinstance(config.get("evaluation"), dict) else None
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    method, ci = str(metrics.get("threshold_method") or ""), str(metrics.get("ci_method") or "")
    found = {"protocol": record.get("protocol"), "pixel_protocol": record.get("pixel_protocol"),
             "val_source": (record.get("split") or {}).get("val_source") if isinstance(record.get("split"), dict) else None}
    if evaluation is not None:
        found["protocol"] = found["protocol"] or evaluation.get("protocol", "honest")
        found["val_source"] = found["val_source"] or dataset.get("val_source") or evaluation.get("val_source", "train")
        found["pixel_protocol"] = found["pixel_protocol"] or evaluation.get("pixel_protocol", "input")
    if not found["protocol"] and method:
        found["protocol"] = "study_replay" if "F1AdaptiveThreshold" in method else "honest" if "quantile(" in method else None
    if not found["val_source"]:
        found["val_source"] = next((value for words, value in _VAL_SOURCE_WORDS if words in method), None)
    if not found["pixel_protocol"] and ci:
        found["pixel_protocol"] = "original" if "original size" in ci else "input"
    return {key: str(value) if value else NOT_RECORDED for key, value in found.items()}


def is_replay(protocol: Any, val_source: Any) -> bool:
    """A replay of a study's protocol: thresholds fitted on test images, or anomalib's adaptive F1 thresholds."""
    return protocol == "study_replay" or val_source in ("test", "test_half")


#: Path components of an image's key below the dataset root: <category>/<split>/<defect type>/<file> (MVTec AD,
#: VisA converted, WFDD, demo); a `folder` dataset has no split folder: <category>/<good|defect|test_good>/<file>.
KEY_DEPTH = {"folder": 3}
DEFAULT_KEY_DEPTH = 4


def image_key(path: str, category: Any, dataset_kind: Any = None) -> str:
    """A test image's identity wherever its dataset root lives: its path from the category folder on, as the
    dataset lays it out ('bottle/test/broken_large/000.png'); the path itself when no category folder is in it."""
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p]
    depth = KEY_DEPTH.get(str(dataset_kind), DEFAULT_KEY_DEPTH)
    category = str(category)
    if len(parts) >= depth and parts[-depth] == category:
        return "/".join(parts[-depth:])
    inside = [i for i, part in enumerate(parts[:-1]) if part == category]
    return "/".join(parts[inside[-1]:]) if inside else str(path)


def is_finished(directory: Path | str, config_hash: str) -> bool:
    """True when the run directory holds an `ok` record made from the same config and a readable executed notebook."""
    directory = Path(directory)
    try:
        record = read_record(directory / RECORD_FILE)
    except (OSError, ValueError):
        return False
    if record.get("status") != "ok" or record.get("config_hash") != config_hash:
        return False
    return notebook_readable(directory / NOTEBOOK_FILE)


def notebook_readable(path: Path) -> bool:
    """True when `path` is a non-empty JSON notebook (an object with cells)."""
    try:
        with open(path, encoding="utf-8") as fh:
            notebook = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(notebook, dict) and isinstance(notebook.get("cells"), list)
