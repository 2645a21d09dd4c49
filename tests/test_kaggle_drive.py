"""`vadbench kaggle drive` and `push` against the strict fake service: two GPU sessions at once, a preflight
before any upload, deferred runs pushed again, Ctrl-C then drive again, the weekly quota, a shard never
pushed in `status` and `pull`. The fake's sessions write records as a kernel does (no notebook runs)."""
from __future__ import annotations

import json
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
from vadbench.launch.kaggle import drive, manifest, pull, push

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


def test_drive_runs_every_shard_two_sessions_at_a_time(project, caplog):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions())
    clock = Clock()
    caplog.set_level("INFO")
    result = run_drive(fake, kparams, clock)
    assert result.exit_code == 0 and len(result.complete) == 4 and not result.left
    assert fake.busy_peak == 2 and fake.refused == []  # never a third session asked for
    assert len(fake.pushed) == 4 and len({p[0] for p in fake.pushed}) == 4
    assert [(u[0], u[1]) for u in fake.uploads] == [("tester/vadbench-code", "skip")]  # the code, once
    assert sorted(finished_runs()) == sorted(r.label for r in expand_runs(load_experiment(DEMO)))
    history = [[h[0] for h in e["history"]] for e in manifest.load(Path("outputs/kaggle/demo"))["shards"]]
    assert all(h == ["written", "pushed", "queued", "running", "complete"] for h in history)
    assert clock.sleeps[:2] == [10.0, 60] and max(clock.sleeps) <= 900  # the code dataset processed, then poll_s
    assert "shard" in caplog.text and "last pull (finished/failed/deferred)" in caplog.text  # the progress table


def test_deferred_runs_go_out_again_and_a_session_without_progress_does_not(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions(defer={"vadbench-demo-draem": 1},
                                                                   empty=("vadbench-demo-padim",)))
    result = run_drive(fake, kparams)
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


def test_ctrl_c_then_drive_again_finishes_without_redoing_a_shard(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions())
    with pytest.raises(KeyboardInterrupt):
        run_drive(fake, kparams, Clock(stop_at=5))  # two shards pulled, two just pushed
    states = shard_states()
    assert sorted(states.values()) == ["complete", "complete", "pushed", "pushed"]
    pulled_once = [slug for slug, state in states.items() if state == "complete"]
    result = run_drive(fake, kparams)
    assert result.exit_code == 0 and len(result.complete) == 4
    assert sorted(p[0] for p in fake.pushed) == sorted({p[0] for p in fake.pushed}) and len(fake.pushed) == 4
    assert all(fake.downloads.count(f"tester/{slug}") == 1 for slug in pulled_once)
    assert len(fake.uploads) == 1 and len(finished_runs()) == 12


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


def test_placeholder_and_unknown_datasets_are_refused_before_any_upload(project):
    fake = FakeKaggle(session=finishing_sessions())
    with pytest.raises(KaggleSetupError, match=r"nothing uploaded: mount outputs/data/demo -> "
                       r"your-kaggle-username/vadbench-demo-data/demo, .*'your-kaggle-username' is the shipped placeholder"):
        run_drive(fake, KPARAMS)
    assert fake.asked == [] and fake.uploads == [] and fake.pushed == []  # refused by name, nothing asked or sent
    kparams, _ = owned_params(KPARAMS, "k.yaml")
    unknown = FakeKaggle()  # the service does not know the data (it answers 403/404)
    with pytest.raises(KaggleSetupError, match="Kaggle does not know tester/vadbench-demo-data") as refused:
        run_drive(unknown, kparams)
    assert "upload-data" in str(refused.value) and unknown.uploads == [] and unknown.pushed == []
    failed = FakeKaggle(existing=("tester/vadbench-demo-data",))
    failed.dataset_state["tester/vadbench-demo-data"] = ["failed"]
    with pytest.raises(KaggleSetupError, match="tester/vadbench-demo-data is failed on Kaggle"):
        run_drive(failed, kparams)
    assert failed.uploads == [] and failed.pushed == []


def test_push_alone_stops_at_the_session_limit_and_status_and_pull_go_on(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions())
    push.push(DEMO, "outputs/kaggle", kparams, api=fake, poll_s=0)  # no traceback at the limit
    assert len(fake.pushed) == 2 and len(fake.refused) == 1
    waiting = [slug for slug, state in shard_states().items() if state == "written"]
    assert len(waiting) == 2
    rows = {kernel.split("/")[1]: (state, message) for kernel, state, message, _ in pull.status("outputs/kaggle",
                                                                                                 api=fake)}
    assert all(rows[slug][0] == "never pushed" and "Maximum batch GPU session count of 2" in rows[slug][1]
               for slug in waiting)
    assert sorted(state for state, _ in rows.values()) == ["never pushed", "never pushed", "queued", "queued"]
    for kernel in {p[0] for p in fake.pushed}:
        fake.kernel_status(kernel), fake.kernel_status(kernel)  # running, then complete
    result = pull.pull("outputs/kaggle", "outputs/runs", api=fake)
    assert len(result.never_pushed) == 2 and len(result.added) == 6 and result.exit_code == 0
    push.push(DEMO, "outputs/kaggle", kparams, api=fake, poll_s=0)  # only the two not pushed
    assert sorted(p[0].split("/")[1] for p in fake.pushed[2:]) == sorted(waiting) and len(fake.pushed) == 4


def test_the_weekly_quota_stops_drive_with_hours_used_and_left(project):
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    fake = FakeKaggle(existing=mounted, session=finishing_sessions())
    fake.quota_h = (29.5, 30.0)  # as the service reports it
    result = run_drive(fake, kparams)
    assert fake.pushed == [] and fake.uploads == [] and result.exit_code == 1
    assert "29.5 h used of 30.0 h" in result.quota_stop and "0.5 h left (as Kaggle reports it)" in result.quota_stop
    assert "needs about 11.5 h" in result.quota_stop  # no step time measured: up to its deadline

    kparams, _ = owned_params(KPARAMS, "q.yaml", weekly_gpu_hours=1.0, deadline_s=3000, poll_s=1200, poll_max_s=1200)
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
    kparams, mounted = owned_params(KPARAMS, "k.yaml")
    with manifest.driving(Path("outputs/kaggle/demo")):
        with pytest.raises(KaggleSetupError, match="another `vadbench kaggle push` or `drive` of demo is running"):
            run_drive(FakeKaggle(existing=mounted), kparams)


def test_upload_data_checks_zips_waits_and_its_mounts_line_is_what_drive_uses(project, tmp_path):
    """A replica of MVTec AD outside the project (an absolute root): checked, uploaded with dir_mode zip (its
    category folder would be skipped otherwise), waited for; the printed entry mounts it in a drive."""
    import yaml

    import replicas
    from vadbench.errors import DatasetError
    from vadbench.launch.kaggle import upload
    from vadbench.launch.kaggle.api import KaggleApiError
    from vadbench.registry import MVTEC_AD_COUNTS

    root = replicas.build_mvtec_like(tmp_path / "elsewhere/mvtec_ad", {"bottle": MVTEC_AD_COUNTS["bottle"]})
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")
    fake = FakeKaggle(session=finishing_sessions())
    with pytest.raises(DatasetError, match="bottle"):  # a broken dataset is never uploaded
        upload.upload_data("mvtec_ad", root, "mvtec-ad-replica", KPARAMS, categories=["bottle", "cable"], api=fake,
                           poll_s=0)
    assert fake.uploads == []
    entry = upload.upload_data("mvtec_ad", root, "mvtec-ad-replica", KPARAMS, categories=["bottle"], api=fake,
                               poll_s=0)
    assert entry == f"{root}: tester/mvtec-ad-replica"
    assert fake.uploads == [("tester/mvtec-ad-replica", "zip", ["bottle", "license.txt"])]
    staged = Path("outputs/kaggle/uploads/mvtec-ad-replica")
    assert json.loads((staged / "dataset-metadata.json").read_text())["licenses"] == [{"name": "other"}]
    assert (staged / "bottle").resolve() == root / "bottle" and not (root / "dataset-metadata.json").exists()
    fake.fail_next.add("tester/mvtec-ad-replica")
    with pytest.raises(KaggleApiError, match="the new version is failed"):  # at once, not after --wait-s
        upload.upload_data("mvtec_ad", root, "mvtec-ad-replica", KPARAMS, categories=["bottle"], api=fake, poll_s=0)

    exp = yaml.safe_load((ROOT / "params/experiments/demo.yaml").read_text())
    exp.update(name="outside", datasets=[{"name": "mvtec_ad", "kind": "mvtec_ad", "root": str(root),
                                          "categories": ["bottle"]}],
               models=[m for m in exp["models"] if m["name"] == "padim"])
    Path("outside.yaml").write_text(yaml.safe_dump(exp))
    Path("k.yaml").write_text(f"mounts:\n  {entry}\n")  # the printed line, as the user pastes it
    fake.dataset_state["tester/mvtec-ad-replica"] = ["ready"]
    result = run_drive(fake, "k.yaml", params="outside.yaml")
    assert result.exit_code == 0 and fake.pushed[0][3]["dataset_sources"][1:] == ["tester/mvtec-ad-replica"]
    nb = nbformat.read(Path(manifest.load(Path("outputs/kaggle/outside"))["shards"][0]["folder"]) /
                       fake.pushed[0][3]["code_file"], as_version=4)
    assert parameters.values(nb)["mounts"] == {str(root): "tester/mvtec-ad-replica"}
    assert finished_runs("outside.yaml") == ["padim mvtec_ad/bottle seed0"]


def test_data_where_says_upload_data_and_never_a_kaggle_input_root():
    from vadbench.registry import DATASET_KINDS, where_text

    for kind in DATASET_KINDS:
        text = where_text(kind)
        assert "/kaggle/input" not in text and f"vadbench kaggle upload-data {kind} " in text
