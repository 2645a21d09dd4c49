"""The Kaggle loop a user lives in, against the stand-in with the real, unpatched kaggle client: `vadbench kaggle
upload-data`, `drive` (interrupted with Ctrl-C, then again), `status`, `push`, `pull`, `logs`, then `vadbench
report`; every command in its own process, in the environment `wire.client_env` gives (nothing patched)."""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import shutil
import signal
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

import replicas
from kaggle_standin import events, kernel_folder, most_at_once, standin, wait_for
from vadbench import records
from vadbench.config import expand_runs, load_experiment
from vadbench.launch import parameters
from vadbench.launch.kaggle import manifest, rehearse
from vadbench.registry import MVTEC_AD_COUNTS, VISA_COUNTS

ROOT = Path(__file__).resolve().parents[1]
REPLICA = pytest.mark.skipif(not rehearse.can_namespace(), reason="the replica's mounts need root and unshare")
#: The test's Kaggle params: the stand-in's image has the packages already; polls at the stand-in's pace.
KPARAMS = {"pip_packages": [], "no_deps_packages": [], "poll_s": 1, "poll_max_s": 2, "dataset_wait_s": 60}
KEY = "dummy-standin-key"  # the client's API key in these tests (kaggle_standin.client_environment)


def loop_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project with an experiment of PaDiM and PatchCore at the rehearsal's smoke budget on an MVTec AD replica
    outside the project (an absolute root: toothbrush, its published counts) and a raw VisA replica inside it
    (cashew); (the project, the MVTec AD root)."""
    project, mvtec = tmp_path / "project", tmp_path / "elsewhere" / "mvtec_ad"
    replicas.build_mvtec_like(mvtec, {"toothbrush": MVTEC_AD_COUNTS["toothbrush"]})
    replicas.build_visa_raw(project / "datasets/visa", {"cashew": VISA_COUNTS["cashew"]})
    demo = yaml.safe_load((ROOT / "params/experiments/demo.yaml").read_text())
    models = {m["name"]: m for m in demo["models"]}
    base = {"name": "loop", "seeds": [0], "models": [models["padim"], models["patchcore"]],
            "datasets": [{"name": "mvtec_ad", "kind": "mvtec_ad", "root": str(mvtec), "categories": ["toothbrush"]},
                         {"name": "visa", "kind": "visa", "root": "datasets/visa", "categories": ["cashew"]}]}
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(base))
    rehearse.smoke_params(tmp_path / "loop.yaml", project)
    (project / "k.yaml").write_text(yaml.safe_dump(KPARAMS))
    return project, mvtec


def manifest_states(project: Path, experiment: str = "loop") -> dict[str, str]:
    found = manifest.load(project / "outputs/kaggle" / experiment)
    return {e["slug"]: e["state"] for e in found["shards"]} if found else {}


def log_lines(done, *needles: str) -> list[str]:
    """The lines of a command's output holding every needle."""
    return [line for line in (done.stdout + done.stderr).splitlines() if all(n in line for n in needles)]


@pytest.mark.slow
@REPLICA
def test_a_four_shard_experiment_goes_from_upload_to_report_through_ctrl_c(tmp_path):
    """upload-data prints the mounts lines drive uses (one dataset outside the project); drive pushes 2 of the 4
    shards and is stopped by SIGINT; status lists the 2 never pushed; push alone is refused the third session and
    says so; once the 2 sessions end, pull brings them home while listing the 2 never pushed; drive again pushes only
    those 2 and pulls them; the report pairs every model pair's images on both datasets. The stand-in's log: never
    more than 2 GPU sessions, every kernel pushed once, one refusal (push's)."""
    project, mvtec = loop_project(tmp_path)
    kaggle_existed = Path("/kaggle").exists()
    with standin(tmp_path, processing_s=0.1, queue_s=0.1) as (service, client):
        client = dataclasses.replace(client, cwd=project)
        uploads = [client.start_vadbench(tmp_path / f"upload-{kind}", "kaggle", "upload-data", kind, root, "--slug",
                                         slug, "--categories", category, "--kaggle-params", "k.yaml")
                   for kind, root, slug, category in (("mvtec_ad", str(mvtec), "mvtec-toothbrush", "toothbrush"),
                                                      ("visa", "datasets/visa", "visa-cashew", "cashew"))]
        assert [upload.wait(timeout=300) for upload in uploads] == [0, 0]  # both at once, as a user may
        printed = [(tmp_path / f"upload-{kind}.out").read_text().splitlines() for kind in ("mvtec_ad", "visa")]
        assert [lines[0] for lines in printed] == ["mounts:", "mounts:"]
        mounts = [line for lines in printed for line in lines[1:]]
        assert mounts == [f"  {mvtec}: tester/mvtec-toothbrush", "  datasets/visa: tester/visa-cashew"]
        with (project / "k.yaml").open("a") as params:  # the printed lines, as the user pastes them
            params.write("mounts:\n" + "\n".join(mounts) + "\n")
        mvtec.rename(mvtec.with_name("uploaded"))  # a kernel on Kaggle has no such folder: only the mounted copy

        drive = client.start_vadbench(tmp_path / "drive1", "kaggle", "drive", "loop.yaml", "--kaggle-params",
                                      "k.yaml")
        wait_for(lambda: sorted(manifest_states(project).values()).count("written") == 2
                 and len([e for e in events(tmp_path) if e["event"] == "pushed"]) == 2, timeout_s=120)
        drive.send_signal(signal.SIGINT)  # Ctrl-C while the first two shards run
        assert drive.wait(timeout=60) == 130
        first = (tmp_path / "drive1.err").read_text()
        assert "drive interrupted: every push and pull so far is in outputs/kaggle/<experiment>/shards.json" in first
        assert "shard  " in first and "last pull (finished/failed/deferred)" in first  # the progress table
        states = manifest_states(project)
        waiting = sorted(slug for slug, state in states.items() if state == "written")
        running = sorted(set(states) - set(waiting))
        assert len(waiting) == 2 and all("-patchcore-" in slug for slug in waiting)

        listed = client.vadbench("kaggle", "status")
        assert listed.returncode == 0 and all(log_lines(listed, slug, "never pushed") for slug in waiting)
        assert all(log_lines(listed, slug, "queued") or log_lines(listed, slug, "running") for slug in running)
        pushed = client.vadbench("kaggle", "push", "loop.yaml", "--kaggle-params", "k.yaml")
        assert pushed.returncode == 0 and "Traceback" not in pushed.stderr, pushed.stderr
        assert log_lines(pushed, "2 shard(s) not pushed: Kaggle refused kernel", "Maximum batch GPU session count of "
                         "2 reached", "`vadbench kaggle push loop.yaml` again pushes only those")

        wait_for(lambda: len([e for e in events(tmp_path) if e["event"] == "finished"]) == 2, timeout_s=600,
                 every_s=1)
        pulled = client.vadbench("kaggle", "pull")
        assert pulled.returncode == 0, pulled.stderr
        assert log_lines(pulled, "pull: 2 added, 0 already there, 0 conflicts, 0 kernels not finished, 2 never pushed, "
                         "0 finished runs without a record")
        assert all(log_lines(pulled, "never pushed: tester/" + slug, "(waiting", f"Kaggle refused kernel {waiting[0]}: "
                             "Maximum batch GPU session count of 2 reached") for slug in waiting)  # on record

        again = client.vadbench("kaggle", "drive", "loop.yaml", "--kaggle-params", "k.yaml")
        assert again.returncode == 0, again.stderr[-3000:]
        assert log_lines(again, "drive of loop: 4 shard(s) complete, 0 not")
        done = client.vadbench("kaggle", "drive", "loop.yaml", "--kaggle-params", "k.yaml")  # nothing left to do
        assert done.returncode == 0 and log_lines(done, "drive of loop: 4 shard(s) complete, 0 not")
        assert not log_lines(done, "pushed ") and not log_lines(done, "pulled ")  # no session pulled twice
        log = client.vadbench("kaggle", "logs", running[0]).stdout
        assert "[1/1] padim mvtec_ad/toothbrush seed0 starting" in log and "gpu           none" in log  # on the CPU
        assert f"mounted {mvtec} -> /kaggle/input/datasets/tester/mvtec-toothbrush" in log  # the absolute root
        assert f"/{running[0]}/v1/replica/site/vadbench" in log  # the pushed wheel ran, not this checkout

        kept = service.world.kernels[("tester", running[0])].versions[0].text  # the notebook as the service keeps it

        # Chromium's PDF print fails under a TMPDIR as long as the client's here (its sockets' paths): the machine's
        reporter = dataclasses.replace(client, env={k: v for k, v in client.env.items() if k != "TMPDIR"})
        report = reporter.vadbench("report", "--runs", "outputs/runs", "--out", "outputs/report")
        assert report.returncode == 0, report.stderr[-3000:]
        local = (project / "outputs/runs/loop/padim/visa/cashew/seed0/record.json")
        edited = {**json.loads(local.read_text()), "note": "edited here"}
        local.write_text(json.dumps(edited))
        clash = client.vadbench("kaggle", "pull")
        assert clash.returncode == 1 and log_lines(clash, "pull: 0 added, 3 already there, 1 conflicts")
        assert log_lines(clash, "conflict, local record kept: loop/padim/visa/cashew/seed0")
        assert json.loads(local.read_text()) == edited
    log = events(tmp_path)
    check_the_service_saw(log, project, mvtec, waiting)
    assert Path("/kaggle").exists() or not kaggle_existed  # two replicas at once never removed the machine's /kaggle
    # (whether one made here is gone again: tests/test_kaggle_standin_runs.py; here another user may make one meanwhile)
    assert "require_gpu = True" in kept  # the service keeps the notebook as pushed (it ran on the CPU all the same)

    exp = load_experiment(project / "loop.yaml")
    assert all(records.is_finished(records.run_dir(project / "outputs/runs", r.experiment, r.model.name,
                                                   r.dataset.name, r.category, r.seed), r.config_hash)
               for r in expand_runs(exp))  # each record has the config hash of the same run made here
    assert not (project / "datasets/visa/visa_pytorch").exists()  # the uploaded VisA, read-only, converted in scratch:
    assert list((tmp_path / "standin/kernels/tester").glob("*-visa-*/v1/replica/scratch/visa/*/visa_pytorch/cashew"))
    mvtec_record = records.read_record(project / "outputs/runs/loop/padim/mvtec_ad/toothbrush/seed0")
    assert mvtec_record["config"]["dataset"]["root"] == str(mvtec)  # read from the absolute root, mounted there
    with (project / "outputs/report/tables/answer_differences.csv").open() as fh:
        compared = {(r["dataset"], r["model_a"], r["model_b"], r["n_images"], r["verdict"] != "not compared")
                    for r in csv.DictReader(fh)}
    assert compared == {("mvtec_ad", "padim", "patchcore", "42", True), ("visa", "padim", "patchcore", "150", True)}
    no_key_in([*(project / "outputs").rglob("*"), *(tmp_path / "standin/blobs").iterdir(),
               *(tmp_path / "standin/kernels").glob("*/*/v*/*.ipynb")])  # what was kept here, and sent


def check_the_service_saw(log: list[dict], project: Path, mvtec: Path, waiting: list[str]) -> None:
    """What the stand-in's log says of the loop: uploads, pushes, sessions."""
    assert most_at_once(log) == 2  # two sessions at once, never three
    pushes = [e for e in log if e["event"] == "pushed"]
    assert collections.Counter(e["kernel"] for e in pushes) == {e["kernel"]: 1 for e in pushes} and len(pushes) == 4
    assert [e["kernel"] for e in log if e["event"] == "refused"] == [f"tester/{waiting[0]}"]  # push's, not drive's
    assert {e["status"] for e in log if e["event"] == "finished"} == {"complete"}
    for push in pushes:
        assert (push["gpu"], push["machine_shape"], push["timeout_s"], push["pinning"]) == (True, "NvidiaTeslaT4",
                                                                                            43200, "original")
        assert push["sources"][0] == "tester/vadbench-code/1" and push["invalid_sources"] == []
        assert push["sources"][1:] == ["tester/mvtec-toothbrush" if "-mvtec-ad-" in push["kernel"]
                                       else "tester/visa-cashew"]
    created = {e["dataset"]: sorted(e["files"]) for e in log if e["event"] == "dataset_created"}
    assert created["tester/mvtec-toothbrush"] == ["toothbrush.zip"]  # sub-folders zipped (dir mode zip)
    assert created["tester/visa-cashew"] == ["cashew.zip", "split_csv.zip"]
    found = manifest.load(project / "outputs/kaggle/loop")
    assert created["tester/vadbench-code"] == sorted([found["code"]["wheel"], "train_evaluate.ipynb"])
    assert not [e for e in log if e["event"] == "dataset_versioned"]  # the code once: the same wheel is not sent again
    shards = found["shards"]
    for entry in shards:
        history = [state for state, _ in entry["history"]]
        assert history[-1] == "complete" and history.count("pushed") == 1 and "running" in history
        assert len(entry["sessions"]) == 1 and entry["sessions"][0]["code_version"] == 1
        assert entry["sessions"][0]["image_pin"] == "original" and entry["pulled"]
    mvtec_shard = next(e for e in shards if e["slug"].startswith("vadbench-loop-padim-mvtec-ad"))
    notebook = nbformat.read(project / mvtec_shard["folder"] / f"{mvtec_shard['slug']}.ipynb", as_version=4)
    assert parameters.values(notebook)["mounts"] == {str(mvtec): "tester/mvtec-toothbrush"}


def no_key_in(paths: list[Path]) -> None:
    """The API key is in none of these files (wheels opened)."""
    files = [p for p in paths if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                data = b"".join(zf.read(n) for n in zf.namelist())
        assert KEY.encode() not in data, path


def owned(project: Path, name: str, dataset: str, **changes) -> str:
    """The shipped Kaggle params with its demo mounts on `tester/<dataset>`, with changes; its file name."""
    spec = yaml.safe_load((project / "params/kaggle/kaggle.yaml").read_text())
    spec["mounts"] = {k: v.replace("your-kaggle-username/vadbench-demo-data", f"tester/{dataset}")
                      for k, v in spec["mounts"].items() if "vadbench-demo-data" in v}
    (project / name).write_text(yaml.safe_dump({**spec, **changes}))
    return name


def test_drive_refuses_before_anything_is_uploaded_and_cpu_kernels_are_cpu_sessions(tmp_path):
    """Through the real client, each stopped before any upload: the shipped placeholder (by name), a dataset the
    service answers 403 for (read as unknown), an owner who is not the account, a weekly GPU quota that does not fit
    the next shard (the service's own figures). Then enable_gpu: false pushes CPU sessions, outside the GPU limit."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "params", project / "params")
    given = tmp_path / "given-data"
    given.mkdir()
    (given / "readme.txt").write_text("any files")
    demo = "params/experiments/demo.yaml"
    with standin(tmp_path, datasets={"tester/vadbench-demo-data": given}, quota_hours=10, queue_s=600) as (_, client):
        client = dataclasses.replace(client, cwd=project)
        placeholder = client.vadbench("kaggle", "drive", demo)
        assert placeholder.returncode == 2 and log_lines(
            placeholder, "vadbench: error: nothing uploaded: mount outputs/data/demo -> your-kaggle-username/vadbench-"
            "demo-data/demo", "'your-kaggle-username' is the shipped placeholder owner", "kaggle upload-data")
        unknown = client.vadbench("kaggle", "drive", demo, "--kaggle-params", owned(project, "u.yaml", "not-uploaded"))
        assert unknown.returncode == 2 and log_lines(unknown, "nothing uploaded: mount outputs/data/demo -> tester/not-"
                                                     "uploaded/demo", "Kaggle does not know tester/not-uploaded (a "
                                                     "wrong slug, or another account's private dataset)", "upload-data")
        mine = owned(project, "k.yaml", "vadbench-demo-data", owner="tester")
        other = client.vadbench("kaggle", "drive", demo, "--kaggle-params", mine, user="someone-else")
        assert other.returncode == 2 and log_lines(other, "owner 'tester' is not the authenticated user "
                                                   "'someone-else' (the code dataset and kernels are created under "
                                                   "your account)")
        quota = client.vadbench("kaggle", "drive", demo, "--kaggle-params", mine)
        assert quota.returncode == 1 and log_lines(
            quota, "weekly GPU quota: 0.0 h used of 10.0 h, 0.0 h held by running shards, 10.0 h left (as Kaggle "
            "reports it; resets ", "needs about 11.5 h by its estimate: not started")  # no step time measured yet
        assert all(log_lines(quota, slug, "not started: the weekly GPU quota left does not fit it")
                   for slug in manifest_states(project, "demo"))
        assert [e["event"] for e in events(tmp_path)] == ["dataset_given", "serving"]  # nothing uploaded or pushed

        cpu = client.vadbench("kaggle", "push", demo, "--kaggle-params", owned(project, "c.yaml", "vadbench-demo-data",
                                                                               enable_gpu=False))
        assert cpu.returncode == 0, cpu.stderr
    pushes = [e for e in events(tmp_path) if e["event"] == "pushed"]
    assert [(e["gpu"], e["machine_shape"]) for e in pushes] == [(False, "")] * 4  # no third-session refusal
    assert [e["event"] for e in events(tmp_path)].count("refused") == 0


def test_upload_data_refuses_a_broken_dataset_and_a_failed_version_stops_the_wait(tmp_path):
    """upload-data checks the dataset first (nothing uploaded when it fails), stages links and the metadata (the root
    is never written), and a version the service fails to process stops the wait at once; drive then names it. A code
    dataset still processing after dataset_wait_s stops push before any kernel."""
    root = replicas.build_mvtec_like(tmp_path / "elsewhere/mvtec_ad", {"toothbrush": MVTEC_AD_COUNTS["toothbrush"]})
    (root / "notes.zip").write_bytes(b"not a zip archive")  # the service cannot unpack it: the version fails
    project = tmp_path / "project"
    shutil.copytree(ROOT / "params", project / "params")
    given = tmp_path / "given"
    given.mkdir()
    with standin(tmp_path, datasets={"tester/vadbench-demo-data": given}) as (service, client):
        client = dataclasses.replace(client, cwd=project)
        upload = ("kaggle", "upload-data", "mvtec_ad", str(root), "--slug", "mvtec-replica", "--wait-s", "600")
        broken = client.vadbench(*upload, "--categories", "toothbrush", "bottle")
        assert broken.returncode == 2 and log_lines(broken, "vadbench: error:", "bottle")
        assert [e["event"] for e in events(tmp_path)] == ["dataset_given", "serving"]
        started = time.monotonic()
        failed = client.vadbench(*upload, "--categories", "toothbrush")
        assert failed.returncode == 2 and log_lines(failed, "vadbench: error: Kaggle could not process dataset "
                                                    "tester/mvtec-replica: the new version is failed; upload it again")
        assert time.monotonic() - started < 60  # at once, not after --wait-s
        staged = project / "outputs/kaggle/uploads/mvtec-replica"
        assert json.loads((staged / "dataset-metadata.json").read_text()) == {
            "title": "mvtec-replica", "id": "tester/mvtec-replica", "licenses": [{"name": "other"}], "isPrivate": True}
        assert (staged / "toothbrush").resolve() == root / "toothbrush" and not (root / "dataset-metadata.json").exists()
        exp = {"name": "outside", "seeds": [0], "datasets": [{"name": "mvtec_ad", "kind": "mvtec_ad", "root": str(root),
                                                              "categories": ["toothbrush"]}],
               "models": [{"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_steps": 1}}]}
        (project / "outside.yaml").write_text(yaml.safe_dump(exp))
        (project / "k.yaml").write_text(f"mounts:\n  {root}: tester/mvtec-replica\n")
        named = client.vadbench("kaggle", "drive", "outside.yaml", "--kaggle-params", "k.yaml")
        assert named.returncode == 2 and log_lines(named, f"mount {root} -> tester/mvtec-replica: tester/mvtec-replica "
                                                   "is failed on Kaggle; upload it again")
        service.processing_s = 60.0  # the service takes its time with the next upload (the code dataset)
        slow = client.vadbench("kaggle", "push", "params/experiments/demo.yaml", "--kaggle-params",
                               owned(project, "w.yaml", "vadbench-demo-data", dataset_wait_s=2))
        assert slow.returncode == 2 and log_lines(slow, "dataset tester/vadbench-code not ready after 2 s (status "
                                                  "blobs_received, version 0); raise dataset_wait_s")
    log = events(tmp_path)
    assert [(e["event"], e.get("dataset")) for e in log if e["event"].startswith("dataset_")][1:] == [
        ("dataset_created", "tester/mvtec-replica"), ("dataset_failed", "tester/mvtec-replica"),
        ("dataset_created", "tester/vadbench-code")]
    assert sorted(next(e for e in log if e["event"] == "dataset_created")["files"]) == ["notes.zip", "toothbrush.zip"]
    assert not [e for e in log if e["event"] in ("pushed", "refused")]  # no kernel against a code version not ready


SESSION = """
import json, pathlib
for rel, text in json.loads({files!r}).items():
    path = pathlib.Path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
"""


def test_a_paged_output_is_pulled_whole_and_a_missing_record_is_named(tmp_path):
    """A shard of 9 runs whose session left 27 files: `vadbench kaggle pull` gets every page (20 files a page) through
    the real client, merges the 8 records that came and names the finished run whose record did not. The session is
    a script pushed with the client under the shard's kernel id, writing what a shard's session writes."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "params", project / "params")
    exp = yaml.safe_load((project / "params/experiments/demo.yaml").read_text())
    exp.update(name="paged", seeds=[0, 1, 2], models=[m for m in exp["models"] if m["name"] == "padim"])
    (project / "paged.yaml").write_text(yaml.safe_dump(exp))
    with standin(tmp_path) as (service, client):
        client = dataclasses.replace(client, cwd=project)
        kparams = owned(project, "k.yaml", "vadbench-demo-data")
        assert client.vadbench("kaggle", "push", "paged.yaml", "--kaggle-params", kparams, "--dry-run").returncode == 0
        entry = manifest.load(project / "outputs/kaggle/paged")["shards"][0]
        runs = expand_runs(load_experiment(project / "paged.yaml"))
        assert len(runs) == len(entry["runs"]) == 9
        files = {}
        for run in runs:
            folder = records.run_dir(Path("runs"), run.experiment, run.model.name, run.dataset.name, run.category,
                                     run.seed)
            record = {"status": "ok", "error": None, "experiment": run.experiment, "model": run.model.name,
                      "dataset": run.dataset.name, "category": run.category, "seed": run.seed,
                      "config_hash": run.config_hash, "config": run.config(), "metrics": {"image_auroc": 0.75}}
            if run.label != "padim demo/gravel seed2":  # listed finished below, its record lost
                files[str(folder / records.RECORD_FILE)] = json.dumps(record)
            files[str(folder / records.SCORES_FILE)] = "key,label,score\nbrick/test/good/0.png,0,0.1\n"
            files[str(folder / records.NOTEBOOK_FILE)] = '{"cells": []}'
        files[records.SHARD_STATUS_FILE] = json.dumps({"finished": [r.label for r in runs], "failed": [],
                                                       "deferred": []})
        folder = kernel_folder(tmp_path / "session", entry["kernel_id"], SESSION.format(files=json.dumps(files)))
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(folder)).stdout
        wait_for(lambda: "COMPLETE" in client.cli("kernels", "status", entry["kernel_id"]).stdout, timeout_s=60)
        pulled = client.vadbench("kaggle", "pull")
    assert pulled.returncode == 1 and log_lines(pulled, "pull: 8 added, 0 already there, 0 conflicts, 0 kernels not "
                                                "finished, 0 never pushed, 1 finished runs without a record")
    assert log_lines(pulled, f"{entry['kernel_id']}: padim demo/gravel seed2 finished in the kernel but its record is "
                     "not in the outputs")
    downloads = project / "outputs/kaggle/paged/downloads" / entry["slug"]
    got = sorted(p.relative_to(downloads).as_posix() for p in downloads.rglob("*") if p.is_file())
    assert len(got) == 27 + 1 and f"{entry['slug']}.log" in got  # 27 outputs in 2 pages, and the log
    assert set(got) - {f"{entry['slug']}.log"} == set(files)
    finished = next(e for e in events(tmp_path) if e["event"] == "finished")
    assert finished["outputs"] == 27 and finished["status"] == "complete"
    merged = [r for r in runs if records.is_finished(records.run_dir(project / "outputs/runs", r.experiment,
                                                                     r.model.name, r.dataset.name, r.category,
                                                                     r.seed), r.config_hash)]
    assert len(merged) == 8
