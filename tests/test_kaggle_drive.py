"""`vadbench kaggle drive` against the strict fake service, for what the stand-in (tests/test_kaggle_loop.py) would
need real sessions of minutes to show: runs deferred at a kernel's deadline pushed again, a session that made no
progress not pushed again, a finished run whose record did not come pushed again, SIGINT inside a push, the weekly
quota estimated where the service reports none, and drive's polling schedule (a clock of its own, no waiting). The
fake's sessions write records as a kernel does (no notebook runs).
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import nbformat
import pytest

from kaggle_fake import FakeKaggle, finishing_sessions, owned_params
from vadbench import records
from vadbench.config import expand_runs, load_experiment
from vadbench.errors import KaggleSetupError
from vadbench.launch import parameters
from vadbench.launch.kaggle import drive, manifest

ROOT = Path(__file__).resolve().parents[1]
DEMO, KPARAMS = "params/experiments/demo.yaml", "params/kaggle/kaggle.yaml"


@pytest.fixture()
def project(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", "dummy-key")
    return tmp_path


class Clock:
    """drive's clock and sleep: sleeping moves the time on; `stop_at` raises KeyboardInterrupt at that sleep."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.now, self.sleeps, self.stop_at = 1.7e9, [], stop_at

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.stop_at is not None and len(self.sleeps) == self.stop_at:
            raise KeyboardInterrupt
        self.now += seconds


def run_drive(fake: FakeKaggle, kparams: str, clock: Clock | None = None, params: str = DEMO) -> drive.DriveResult:
    clock = clock or Clock()
    return drive.drive(params, "outputs/kaggle", kparams, api=fake, sleep=clock.sleep, clock=clock)


def finished_runs(params: str = DEMO) -> list[str]:
    return [r.label for r in expand_runs(load_experiment(params)) if records.is_finished(
        records.run_dir("outputs/runs", r.experiment, r.model.name, r.dataset.name, r.category, r.seed), r.config_hash)]


def shard_states() -> dict[str, str]:
    return {e["slug"]: e["state"] for e in manifest.load(Path("outputs/kaggle/demo"))["shards"]}


def test_deferred_runs_go_out_again_and_a_session_without_progress_does_not(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions(defer={"vadbench-demo-draem": 1},
                                                                   empty=("vadbench-demo-padim",)))
    clock = Clock()
    result = run_drive(fake, kparams, clock)
    assert clock.sleeps[:2] == [1.0, 60] and max(clock.sleeps) <= 900  # the code dataset processed, then poll_s
    assert fake.busy_peak == 2 and fake.refused == []  # the deferred run's session too, within the 2 sessions
    draem = [p for p in fake.pushed if "-draem-" in p[0]]
    assert len(draem) == 2  # 3 runs, then the one deferred at the deadline, in the same kernel
    efficientad = next(p[0] for p in fake.pushed if "-efficientad-" in p[0])  # ended in the same poll as DRAEM's
    assert fake.downloads.count(draem[0][0]) == 2 and fake.downloads.count(efficientad) == 1  # each session once
    second = nbformat.read(Path(manifest.load(Path("outputs/kaggle/demo"))["shards"][0]["folder"]) /
                           draem[1][3]["code_file"], as_version=4)
    assert parameters.values(second)["runs"] == [["draem", "demo", "gravel", 0]]
    padim = next(slug for slug in shard_states() if "-padim-" in slug)
    assert len([p for p in fake.pushed if "-padim-" in p[0]]) == 1  # errored with nothing done: not pushed again
    assert result.exit_code == 1 and list(result.left) == [padim] and "none added by the last session" in \
        result.left[padim]
    assert len(finished_runs()) == 9 and shard_states()[padim] == "error"


def test_ctrl_c_during_a_push_keeps_the_push_on_record(project):
    """SIGINT arriving while the service takes a push: the push is recorded first, then the interrupt stops drive."""
    kparams, mounted = owned_params(KPARAMS, "k.yaml")

    class Interrupted(FakeKaggle):
        def push_kernel(self, folder, accelerator, timeout_s):
            done = super().push_kernel(folder, accelerator, timeout_s)
            if len(self.pushed) == 2:
                signal.raise_signal(signal.SIGINT)
            return done

    fake = Interrupted(existing=mounted, session=finishing_sessions())
    with pytest.raises(KeyboardInterrupt):
        run_drive(fake, kparams)
    assert sorted(shard_states().values()) == ["pushed", "pushed", "written", "written"]
    assert run_drive(fake, kparams).exit_code == 0  # the fake fails a test pushing a kernel while it runs
    assert len(fake.pushed) == 4 and len(finished_runs()) == 12


def test_the_weekly_quota_estimated_where_the_service_reports_none(project):
    """(The quota the service reports: tests/test_kaggle_loop.py.)"""
    kparams, mounted = owned_params(KPARAMS, "q.yaml", weekly_gpu_hours=1.0, deadline_s=3000, poll_s=1200,
                                    poll_max_s=1200)
    fake = FakeKaggle(existing=mounted, session=finishing_sessions())  # no quota answer: estimated
    result = run_drive(fake, kparams)
    assert len(fake.pushed) == 1 and len(result.complete) == 1 and len(result.left) == 3
    assert "0.3 h used of 1.0 h, 0.0 h held by running shards, 0.7 h left (estimated from this experiment's " \
           "kernel run times" in result.quota_stop and "needs about 0.8 h" in result.quota_stop
    assert all("quota" in why for why in result.left.values())


def test_pull_names_a_finished_run_whose_record_did_not_come(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions(drop=("padim demo/brick seed0",)))
    result = run_drive(fake, kparams)
    assert result.exit_code == 1 and any(m.endswith(": padim demo/brick seed0") for m in result.missing)
    assert "padim demo/brick seed0" not in finished_runs()
    assert len([p for p in fake.pushed if "-padim-" in p[0]]) == 2  # brick went out again, came back without a record


def test_one_drive_or_push_of_an_experiment_at_a_time(project):
    kparams, _ = owned_params(KPARAMS, "k.yaml")
    with manifest.driving(Path("outputs/kaggle/demo")):  # the lock is taken before the service is asked anything
        with pytest.raises(KaggleSetupError, match="another `vadbench kaggle push` or `drive` of demo is running"):
            drive.drive(DEMO, "outputs/kaggle", kparams)  # the real boundary, never reached


def test_data_where_says_upload_data_and_never_a_kaggle_input_root():
    from vadbench.registry import DATASET_KINDS, where_text

    for kind in DATASET_KINDS:
        text = where_text(kind)
        assert "/kaggle/input" not in text and f"vadbench kaggle upload-data {kind} " in text
