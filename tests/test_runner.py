"""Runner: grid execution through papermill, skip, --force, failure recording, bad-input errors.

These use a stand-in train_evaluate notebook (same parameters, no training) so that the runner's
own behaviour is tested in seconds; test_pipeline.py executes the real notebook.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from stand_in import executions, make_project, stand_in_code
from vadbench import records
from vadbench.errors import DatasetError
from vadbench.launch import execute, runner

STAND_IN = stand_in_code()


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A working dir with a tiny dataset layout, an experiment file and the stand-in notebook."""
    return make_project(tmp_path, monkeypatch, STAND_IN)


def test_failed_run_is_recorded_and_batch_goes_on(project):
    result = runner.run_experiment("exp.yaml", "out")
    assert result.exit_code == 1 and result.done == 2 and result.failed == ["dr d/broken seed0"]
    assert executions(project) == ["dr d/a seed0", "dr d/broken seed0", "dr d/c seed0"]
    failed = records.read_record(project / "out/t/dr/d/broken/seed0")
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: deliberate failure in dr d/broken seed0"
    assert failed["config"]["category"] == "broken"
    assert (project / "out/t/dr/d/broken/seed0/train_evaluate.ipynb").is_file()  # executed notebook kept
    ok = records.read_record(project / "out/t/dr/d/c/seed0")
    assert ok["status"] == "ok"
    executed = nbformat.read(project / "out/t/dr/d/c/seed0/train_evaluate.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_rerun_skips_finished_and_retries_failed_then_force(project):
    runner.run_experiment("exp.yaml", "out")
    again = runner.run_experiment("exp.yaml", "out")
    assert (again.skipped, again.done, len(again.failed)) == (2, 0, 1)
    assert executions(project)[3:] == ["dr d/broken seed0"]
    forced = runner.run_experiment("exp.yaml", "out", force=True)
    assert forced.skipped == 0 and len(executions(project)) == 4 + 3


def test_changed_config_reruns(project):
    runner.run_experiment("exp.yaml", "out")
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["models"][0]["train"]["max_steps"] = 2
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))
    result = runner.run_experiment("exp.yaml", "out")
    assert result.skipped == 0 and result.done == 2


def test_dry_run_executes_nothing(project, caplog):
    caplog.set_level(logging.INFO)
    result = runner.run_experiment("exp.yaml", "out", dry_run=True)
    assert result.total == 3 and executions(project) == []
    assert "[2/3] dr d/broken seed0" in caplog.text


def test_missing_category_fails_before_any_run(project):
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["datasets"][0]["categories"].append("zzz")
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(DatasetError, match=r"no category 'zzz' in data \(found: \['a', 'broken', 'c'\]\)"):
        runner.run_experiment("exp.yaml", "out")
    assert executions(project) == []


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vadbench.cli", *args], cwd=project, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("edit, needle", [
    ({"datasets": [{"name": "d", "kind": "demo", "root": "nowhere", "categories": ["a"]}]},
     "root nowhere does not exist; run `vadbench demo-data`"),
    ({"models": [{"name": "x", "kind": "unet", "train": {"max_steps": 1}}]}, "'unet' is not one of"),
    ({"models": [{"name": "ea", "kind": "efficientad", "train": {"max_steps": 1, "batch_size": 1},
                  "params": {"teacher": "nowhere/t.pth", "imagenet_dir": "data"}}]},
     "EfficientAD teacher weights nowhere/t.pth not found"),
    ({"models": [{"name": "ea", "kind": "efficientad", "train": {"max_steps": 1, "batch_size": 1},
                  "params": {"teacher": "random", "imagenet_dir": "nowhere"}}]},
     "EfficientAD penalty images: nowhere is missing"),
    ({"typo_key": 1}, "unknown key 'typo_key'"),
])
def test_cli_bad_input_is_one_clear_line(project, edit, needle):
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp.update(edit)
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))
    done = cli(project, "run", "exp.yaml", "--output", "out")
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("vadbench: error:")] != []
    assert executions(project) == []


def test_kernel_env_is_set_for_patchcore_only_and_restored(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with execute.kernel_env("patchcore"):
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    with execute.kernel_env("efficientad"):
        assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    with execute.kernel_env("patchcore"):
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "4096"
