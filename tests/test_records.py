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


def test_an_image_key_is_the_same_wherever_the_dataset_lives():
    key = records.image_key
    assert key("/kaggle/tmp/a1/visa/visa_pytorch/candle/test/bad/012.JPG", "candle", "visa") == "candle/test/bad/012.JPG"
    assert key("/scratch/b2/visa_pytorch/candle/test/bad/012.JPG", "candle", "visa") == "candle/test/bad/012.JPG"
    assert key("/kaggle/input/mvtec-ad/bottle/test/broken_large/000.png", "bottle", "mvtec_ad") \
        == key("datasets/mvtec_ad/bottle/test/broken_large/000.png", "bottle", "mvtec_ad") \
        == "bottle/test/broken_large/000.png"
    assert key(r"D:\data\mvtec\bottle\test\good\001.png", "bottle", "mvtec_ad") == "bottle/test/good/001.png"
    assert key("/home/me/own/widget/defect/d001.png", "widget", "folder") == "widget/defect/d001.png"
    assert key("/x/test/test/good/1.png", "test", "mvtec_ad") == "test/test/good/1.png"  # a category named like a split
    assert key("/data/c1/0.png", "c1", None) == "c1/0.png"  # unknown layout: from the category folder on
    assert key("/elsewhere/0.png", "c1", "demo") == "/elsewhere/0.png"  # no category folder: the path itself


def test_protocols_come_from_the_record_its_config_or_its_threshold_method():
    fields = records.protocols_of
    assert fields(sample(protocol="study_replay", pixel_protocol="original", split={"val_source": "test_half"})) == {
        "protocol": "study_replay", "val_source": "test_half", "pixel_protocol": "original"}
    # a config whose evaluation section omits a key ran its default (keys at their defaults are not written)
    assert fields(sample(config={"evaluation": {"pixel_protocol": "original"}, "dataset": {"val_source": "test"}})) == {
        "protocol": "honest", "val_source": "test", "pixel_protocol": "original"}
    older = sample(config={}, metrics={"threshold_method": "anomalib F1AdaptiveThreshold on the test set (anomalib's "
                                                           "same_as_test)", "ci_method": "BCa ... at each mask's original size"})
    assert fields(older) == {"protocol": "study_replay", "val_source": "test", "pixel_protocol": "original"}
    assert set(fields({"status": "ok"}).values()) == {records.NOT_RECORDED}
    frame = records.records_frame([sample(), {"status": "ok", "model": "m"}])
    assert frame["protocol"].tolist() == [records.NOT_RECORDED] * 2 and "val_source" in frame
    assert records.is_replay("honest", "test") and records.is_replay("study_replay", "train")
    assert not records.is_replay("honest", "train")
