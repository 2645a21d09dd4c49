"""Records: atomic write, round-trip, flattening into tidy rows, finished-run detection."""
from __future__ import annotations

import json
import math
import os

import pytest

from vadbench import records


def sample(**overrides) -> dict:
    record = {
        "status": "ok", "error": None, "experiment": "e", "model": "m", "dataset": "d", "category": "c",
        "seed": 0, "config_hash": "abc", "config": {"x": 1},
        "metrics": {"image_auroc": 0.9, "pixel_auroc": 0.8},
        "timing": {"test_images": 10, "test_seconds": 2.0},
        "split": {"train_images": 5}, "training": {"steps_run": 3}, "environment": {"device": "cpu"},
    }
    record.update(overrides)
    return record


def test_round_trip_and_schema_version(tmp_path):
    directory = records.run_dir(tmp_path, "e", "m", "d", "c", 0)
    path = records.write_record(directory, sample())
    assert path == tmp_path / "e/m/d/c/seed0/record.json"
    back = records.read_record(directory)
    assert back["schema_version"] == records.SCHEMA_VERSION
    assert back["metrics"] == {"image_auroc": 0.9, "pixel_auroc": 0.8}
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    records.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        records.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]  # no temp file left behind


def test_numpy_values_serialise(tmp_path):
    import numpy as np

    records.write_json_atomic(tmp_path / "n.json", {"v": np.float32(0.5), "i": np.int64(3)})
    assert json.loads((tmp_path / "n.json").read_text()) == {"v": 0.5, "i": 3}


def test_flatten_and_frame_keep_missing_as_nan(tmp_path):
    records.write_record(records.run_dir(tmp_path, "e", "m", "d", "c", 0), sample())
    old = sample(category="c2")
    del old["metrics"]["pixel_auroc"]
    records.write_record(records.run_dir(tmp_path, "e", "m", "d", "c2", 0), old)
    frame = records.records_frame(records.load_records(tmp_path)).set_index("category")
    assert frame.loc["c", "pixel_auroc"] == 0.8
    assert math.isnan(frame.loc["c2", "pixel_auroc"])
    assert frame.loc["c", "steps_run"] == 3 and frame.loc["c", "device"] == "cpu"
    assert json.loads(frame.loc["c", "config"]) == {"x": 1}


def test_unreadable_record_is_skipped(tmp_path, caplog):
    records.write_record(records.run_dir(tmp_path, "e", "m", "d", "c", 0), sample())
    bad = records.run_dir(tmp_path, "e", "m", "d", "bad", 0)
    bad.mkdir(parents=True)
    (bad / "record.json").write_text("{ half a fi")
    assert [r["category"] for r in records.load_records(tmp_path)] == ["c"]
    assert "skipping unreadable record" in caplog.text


def test_is_finished_needs_ok_status_and_same_hash(tmp_path):
    directory = tmp_path / "run"
    assert not records.is_finished(directory, "abc")
    records.write_record(directory, sample())
    (directory / records.NOTEBOOK_FILE).write_text('{"cells": [], "metadata": {}}')
    assert records.is_finished(directory, "abc")
    assert not records.is_finished(directory, "other")
    records.write_record(directory, sample(status="failed"))
    assert not records.is_finished(directory, "abc")
