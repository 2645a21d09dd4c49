"""A batch never lies about what it finished: real `vadbench run` batches interrupted with SIGINT (as Ctrl-C
sends it, to the whole process group) at the moments that used to leave a lying run folder, and two real
batches started at once on one output.

The stand-in notebook writes its record, then sleeps STAND_IN_SLEEP seconds (the time papermill would
spend saving the notebook), so a signal lands after the record and before the run is complete.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import inprocess
from stand_in import executions, make_project, stand_in_code
from vadbench import records

STAND_IN = stand_in_code('"environment": {"device": "cpu"}', broken=False, before=(
    "from ipykernel.connect import get_connection_file\n"
    "try:\n    connection = get_connection_file()\nexcept RuntimeError:  # no kernel: run in the batch's process\n"
    "    connection = None\n"
    'if connection:\n    with open("connection_files.log", "a") as fh:\n        fh.write(connection + "\\n")'),
    after='time.sleep(float(os.environ.get("STAND_IN_SLEEP", "0")))')


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """Categories a and c (no failing one), seeds 0 and 1."""
    root = make_project(tmp_path, monkeypatch, STAND_IN, kernel=True, seeds=[0, 1])  # interrupts reach a kernel
    exp = yaml.safe_load((root / "exp.yaml").read_text())
    exp["datasets"][0]["categories"] = ["a", "c"]
    (root / "exp.yaml").write_text(yaml.safe_dump(exp))
    return root


def start_batch(project: Path, *args: str, sleep: float = 0, kernel: bool = True) -> subprocess.Popen:
    """A real `vadbench run` in its own process group (so a signal reaches it and its kernel, like Ctrl-C);
    kernel=False: its notebooks run in its own process (`inprocess`)."""
    env = os.environ if kernel else inprocess.subprocess_env(project / "engine")
    return subprocess.Popen([sys.executable, "-m", "vadbench.cli", "run", "exp.yaml", "--output", "out", *args],
                            cwd=project, env={**env, "STAND_IN_SLEEP": str(sleep)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """Ctrl-C's default action in the batch, as in a terminal: a shell starting tests in the background (as a CI
    runner may) leaves SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def interrupt(batch: subprocess.Popen) -> str:
    """SIGINT to the batch's process group; its stderr once it has exited."""
    os.killpg(batch.pid, signal.SIGINT)
    _, stderr = batch.communicate(timeout=300)
    assert batch.returncode != 0, stderr
    return stderr


def finish(project: Path, *args: str) -> subprocess.CompletedProcess:
    """A `vadbench run` left to its end, its notebooks run in its own process (what is checked is the batch's)."""
    done = subprocess.run([sys.executable, "-m", "vadbench.cli", "run", "exp.yaml", "--output", "out", *args],
                          cwd=project, capture_output=True, text=True, timeout=600,
                          env=inprocess.subprocess_env(project / "engine"))
    assert done.returncode == 0, done.stderr
    return done


RUN_A = Path("out/t/dr/d/a/seed0")


def test_sigint_after_the_record_leaves_no_finished_looking_run(project):
    """Finding 1: SIGINT 2 s after the record was written used to leave an ok record beside a 0-byte notebook."""
    batch = start_batch(project, sleep=60)
    wait_for(lambda: list((project / "out").rglob(records.RECORD_FILE)), "the first record")
    time.sleep(2)
    stderr = interrupt(batch)
    assert stderr.splitlines()[-1].startswith("vadbench: interrupted")
    run_a = project / RUN_A
    assert not run_a.exists() and records.find_records(project / "out") == []
    assert sorted(p.name for p in run_a.parent.iterdir()) == []  # no staging folder, no lock left
    connection = Path(executions_file(project, "connection_files.log")[0])
    assert connection.is_relative_to(project / RUN_A.parent) and not connection.exists()  # not in /tmp, and gone
    finish(project)
    assert executions(project).count("dr d/a seed0") == 2  # redone, not skipped
    assert records.is_finished(run_a, records.read_record(run_a)["config_hash"])


def executions_file(project: Path, name: str) -> list[str]:
    return (project / name).read_text().splitlines()


def test_sigint_during_force_keeps_the_old_run(project):
    """Finding 2: SIGINT during a --force rerun used to leave the old ok record beside a half-executed notebook."""
    finish(project)
    run_a = project / RUN_A
    before = {name: (run_a / name).read_bytes() for name in (records.RECORD_FILE, records.NOTEBOOK_FILE)}
    batch = start_batch(project, "--force", sleep=60)
    wait_for(lambda: len(executions(project)) == 5, "the forced run to start")
    time.sleep(1)
    interrupt(batch)
    after = {name: (run_a / name).read_bytes() for name in before}
    assert after == before  # the old run, complete, untouched
    assert sorted(p.name for p in run_a.parent.iterdir()) == ["seed0", "seed1"]
    again = finish(project)
    assert len(executions(project)) == 5 and "4 skipped" in again.stderr


def test_two_batches_at_once_run_each_run_once(project):
    """Finding 3: two batches of one experiment into one output used to both train every run."""
    first, second = start_batch(project, sleep=4, kernel=False), start_batch(project, sleep=4, kernel=False)
    outs = [batch.communicate(timeout=300) for batch in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outs
    runs = executions(project)
    assert sorted(runs) == sorted({*runs}) and len(runs) == 4  # each run executed by one batch only
    logs = outs[0][1] + outs[1][1]
    assert "skipped, another batch is running it (pid" in logs and "on host" in logs
    found = [records.read_record(p) for p in records.find_records(project / "out")]
    assert len(found) == 4
    assert all(isinstance(r["environment"]["machine_shared"], bool) for r in found)
    assert any(r["environment"]["machine_shared"] and r["environment"]["concurrent_runs"] >= 1 for r in found)


def test_a_lone_run_is_recorded_as_not_shared(project):
    finish(project)
    found = [records.read_record(p) for p in records.find_records(project / "out")]
    assert [r["environment"]["machine_shared"] for r in found] == [False] * 4
    assert json.loads((project / RUN_A / records.RECORD_FILE).read_text())["environment"]["concurrent_runs"] == 0
