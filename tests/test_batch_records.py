"""Records and outputs never lie: a record that is not a run record is unreadable (listed, counted, redone),
no bare NaN in JSON, an unwritable output is one error line, an unwritable run folder fails that run only,
a run lock held elsewhere is respected and a dead one taken over."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from stand_in import executions, make_project, stand_in_code
from vadbench import locks, records
from vadbench.launch import runner, staging
from vadbench.report import tables

STAND_IN = stand_in_code('"metrics": {"image_auroc": 0.5, "pixel_auroc": float("nan")}')


@pytest.fixture()
def project(tmp_path, monkeypatch):
    return make_project(tmp_path, monkeypatch, STAND_IN)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vadbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


RUN_A = Path("out/t/dr/d/a/seed0")


@pytest.mark.parametrize("content", ["[]", '"ok"', '{"status": "done"}', '{"status": "ok", "metrics": [0.9]}',
                                     '{"status": "ok", "model": ["dr"]}'])
def test_a_record_that_is_not_a_run_record_is_unreadable_listed_and_redone(project, content):
    """Finding 6: valid JSON that is not an object crashed `run` and `report` (AttributeError)."""
    runner.run_experiment("exp.yaml", "out")
    (project / RUN_A / records.RECORD_FILE).write_text(content)
    with pytest.raises(records.RecordError, match=str(project / RUN_A / records.RECORD_FILE)):
        records.read_record(project / RUN_A)
    frame = tables.load_frame(project / "out")
    headline = tables.runs_overview(frame).splitlines()[0]
    assert headline == "**3 run records**: 1 failed, 1 ok, 1 unreadable."  # finding 9: counted, not hidden
    listed = tables.failed_runs(frame)
    assert list(listed["status"]) == ["failed", "unreadable"]
    assert listed["run_dir"].iloc[1] == str(project / RUN_A)
    again = runner.run_experiment("exp.yaml", "out")
    assert executions(project)[3:] == ["dr d/a seed0", "dr d/broken seed0"] and again.skipped == 1
    assert records.read_record(project / RUN_A)["status"] == "ok"


def test_an_empty_notebook_is_not_finished_whatever_the_record_says(project):
    runner.run_experiment("exp.yaml", "out")
    (project / RUN_A / records.NOTEBOOK_FILE).write_bytes(b"")
    assert not records.is_finished(project / RUN_A, records.read_record(project / RUN_A)["config_hash"])
    runner.run_experiment("exp.yaml", "out")
    assert executions(project).count("dr d/a seed0") == 2


def test_records_are_strict_json_with_null_for_nan(project):
    """Finding 9: records wrote bare NaN, which strict JSON readers (jq) reject."""
    import numpy as np

    runner.run_experiment("exp.yaml", "out")
    text = (project / RUN_A / records.RECORD_FILE).read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the record"))
    assert strict["metrics"] == {"image_auroc": 0.5, "pixel_auroc": None}
    records.write_json_atomic(project / "n.json", {"v": [np.float32("nan"), np.float64("inf"), 1.5]})
    assert (project / "n.json").read_text().split() == ["{", '"v":', "[", "null,", "null,", "1.5", "]", "}"]


@pytest.mark.parametrize("output", ["afile/runs", "/proc/vadbench-out"])
def test_unwritable_output_is_one_error_line_before_anything_starts(project, output):
    """Finding 8: an --output that cannot be written ended in a 74-line traceback."""
    (project / "afile").write_text("a file, not a folder")
    done = cli(project, "run", "exp.yaml", "--output", output)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"vadbench: error: --output {output} cannot be written (")
    assert executions(project) == []


def test_any_oserror_is_one_line_naming_the_path(project):
    (project / "afile").write_text("a file, not a folder")
    done = cli(project, "demo-data", "--root", "afile/demo")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("vadbench: error: ") and "afile/demo" in done.stderr


def test_a_run_folder_that_cannot_be_written_fails_that_run_and_the_batch_goes_on(project, caplog):
    """Finding 8: writing the failed record of an unwritable run folder raised and stopped the batch."""
    caplog.set_level(logging.INFO)
    (project / "out/t/dr/d").mkdir(parents=True)
    (project / "out/t/dr/d/a").write_text("a file where the category folder goes")
    result = runner.run_experiment("exp.yaml", "out")
    assert result.failed == ["dr d/a seed0", "dr d/broken seed0"] and result.done == 1
    assert f"dr d/a seed0 failed: its run folder {Path('out/t/dr/d/a/seed0')} cannot be written" in caplog.text
    assert "failed: dr d/a seed0" in caplog.text  # the batch's closing list
    assert records.read_record(project / "out/t/dr/d/c/seed0")["status"] == "ok"


def test_a_run_locked_by_another_process_is_skipped_and_said(project, caplog):
    caplog.set_level(logging.INFO)
    held = locks.RunLock(project / RUN_A, "other batch")
    assert held.acquire()
    try:
        result = runner.run_experiment("exp.yaml", "out")
    finally:
        held.release()
    assert result.locked == ["dr d/a seed0"] and "dr d/a seed0" not in executions(project)
    assert f"dr d/a seed0: skipped, another batch is running it (pid {locks._me()['pid']} on host" in caplog.text
    assert not (project / "out/t/dr/d/a/.seed0.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(project, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = project / "out/t/dr/d/a/.seed0.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": "somewhere", "since": "earlier"}))
    result = runner.run_experiment("exp.yaml", "out")
    assert result.done == 2 and "dr d/a seed0" in executions(project)
    assert f"taking over the lock {lock.relative_to(project)} left by pid {int(dead.stdout)} on host somewhere" in caplog.text


def test_a_swap_cut_short_is_put_back(tmp_path):
    run_dir = tmp_path / "seed0"
    aside = tmp_path / ".seed0.old-123"
    aside.mkdir()
    (aside / "record.json").write_text("{}")
    (tmp_path / ".seed0.partial-456").mkdir()
    staging.recover(run_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0"] and (run_dir / "record.json").is_file()
