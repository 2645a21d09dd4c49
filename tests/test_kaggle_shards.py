"""Kaggle pushes of the study's own files, the strict service's refusals, --pending, status, logs, and the
kernel's pieces that need no training (deadline, VisA scratch root, fetched-input checks, GPU stop)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from kaggle_fake import FakeKaggle, owned_params
from vadbench import records
from vadbench.config import expand_runs, load_experiment
from vadbench.errors import InputMissingError, KaggleSetupError
from vadbench.launch.kaggle import pull, push
from vadbench.launch.kaggle.api import KaggleApiError, SessionLimitError
from vadbench.launch.kaggle.kernel import inputs, layout, session
from vadbench.launch.kaggle.manifest import load_manifests

ROOT = Path(__file__).resolve().parents[1]
UPLOADS = {"mvtec_ad": "mvtec-ad", "visa": "visa-20220922", "wfdd": "wfdd-dataset"}  # params/kaggle/kaggle.yaml
STUDY = ["study_baseline", "study_undersample", "study_wfdd_tuned", "paper_recipes"]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", "dummy-key")
    return tmp_path


@pytest.mark.parametrize("name", STUDY)
def test_study_files_push_unedited_with_short_unique_names(project, name):
    path = f"params/experiments/{name}.yaml"
    text = (project / path).read_text()
    shards = push.push(path, "outputs/kaggle", "params/kaggle/kaggle.yaml", shard_by=["model", "dataset", "category"],
                              dry_run=True)
    assert (project / path).read_text() == text
    exp = load_experiment(path)
    assert sum(len(s.runs) for s in shards) == len(expand_runs(exp))
    slugs = [s.slug for s in shards]
    assert len(set(slugs)) == len(slugs) and all(5 <= len(s) <= 50 for s in slugs)
    for shard in shards:
        meta = json.loads((Path(shard.folder) / "kernel-metadata.json").read_text())
        params = (Path(shard.folder) / meta["code_file"]).read_text()
        dataset = shard.runs[0][1]
        assert meta["dataset_sources"][1:] == [f"your-kaggle-username/{UPLOADS[dataset]}"]  # only its own data
        model = next(m for m in exp.models if m.name == shard.runs[0][0])
        if model.kind == "efficientad":  # not mounted, internet on: fetched in the kernel
            assert "imagenette:datasets/imagenette" in params and f"teacher:{model.settings.model_size}" in params
        else:
            assert "dtd:datasets/dtd/images" in params
    kparams, mounted = owned_params("params/kaggle/kaggle.yaml", "k.yaml")
    fake = FakeKaggle(existing=mounted)
    push.push(path, "outputs/kaggle", kparams, api=fake, poll_s=0)
    manifest = load_manifests("outputs/kaggle", exp.name)[0]
    assert [p[0] for p in fake.pushed] == [s["kernel_id"] for s in manifest["shards"]][:2]  # 2 GPU sessions at once
    assert all(p[3]["dataset_sources"][0] == "tester/vadbench-code/1" for p in fake.pushed)
    shown = len(manifest["shards"])
    assert [s["state"] for s in manifest["shards"]] == ["pushed"] * min(2, shown) + ["written"] * max(0, shown - 2)
    assert all("Maximum batch GPU session count of 2 reached" in s["message"] for s in manifest["shards"][2:])


def test_strict_service_refuses_what_kaggle_refuses(project):
    demo, kparams = "params/experiments/demo.yaml", "params/kaggle/kaggle.yaml"
    kparams, mounted = owned_params(kparams, "own.yaml")
    with pytest.raises(KaggleSetupError, match="owner 'tester' is not the authenticated user 'someone-else'"):
        push.push(demo, "outputs/kaggle", kparams, api=FakeKaggle(user="someone-else", existing=mounted), poll_s=0)
    spec = yaml.safe_load((project / kparams).read_text())
    for bad, message in (({"code_dataset": "code"}, "dataset slug 'code'"),
                         ({"kernel_prefix": "x" * 60}, None),
                         ({"accelerator": "NvidiaTeslaV100"}, "not a Kaggle machine shape")):
        (project / "k.yaml").write_text(yaml.safe_dump({**spec, **bad}))
        if message is None:  # a long prefix is cut: names stay within 50 characters
            assert all(len(s.slug) <= 50 for s in push.push(demo, "outputs/kaggle", "k.yaml", dry_run=True))
            continue
        with pytest.raises(KaggleSetupError, match=message):
            push.push(demo, "outputs/kaggle", "k.yaml", dry_run=True)
    fake = FakeKaggle(existing=mounted, gpu_sessions=3)
    push.push(demo, "outputs/kaggle", kparams, api=fake, poll_s=0)
    waiting = [e for e in load_manifests("outputs/kaggle")[0]["shards"] if e["state"] == "written"]
    folder = Path(waiting[0]["folder"])  # the fourth shard: refused at the session limit, not pushed
    meta_path = folder / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    with pytest.raises(SessionLimitError, match="Maximum batch GPU session count of 3 reached"):
        fake.push_kernel(folder, "NvidiaTeslaT4", 60)
    fake.gpu_sessions = 4
    with pytest.raises(KaggleApiError, match="accelerator 'T4'"):
        fake.push_kernel(folder, "T4", 60)
    meta_path.write_text(json.dumps({**meta, "title": "Another title"}))
    with pytest.raises(KaggleApiError, match="does not resolve"):
        fake.push_kernel(folder, "NvidiaTeslaT4", 60)
    meta_path.write_text(json.dumps({**meta, "docker_image_pinning_type": "newest"}))
    with pytest.raises(KaggleApiError, match="docker_image_pinning_type must be one of"):
        fake.push_kernel(folder, "NvidiaTeslaT4", 60)
    meta_path.write_text(json.dumps({**meta, "dataset_sources": ["tester/vadbench-code/7"]}))
    saved = fake.push_kernel(folder, "NvidiaTeslaT4", 60)  # saved and started without the source, as Kaggle does
    assert saved.invalid == "invalid dataset sources: ['tester/vadbench-code/7']"
    while fake.kernel_status(meta["id"])[0] in ("queued", "running"):
        pass
    assert fake.kernel_status(meta["id"]) == ("error", "dataset tester/vadbench-code/7 is not attached")
    code = project / "outputs/kaggle/code/dataset-metadata.json"
    code.write_text(json.dumps({**json.loads(code.read_text()), "licenses": [{"name": "Apache-2.0"}]}))
    with pytest.raises(KaggleApiError, match="unknown license"):
        fake.version_dataset(code.parent, "notes")


def test_pending_status_counts_and_logs(project):
    demo, kparams = "params/experiments/demo.yaml", "params/kaggle/kaggle.yaml"
    runs = {r.label: r for r in expand_runs(load_experiment(demo))}
    done = [label for label in runs if label.startswith("draem")] + ["padim demo/brick seed0"]
    for label in done:  # finished: an ok record and its executed notebook
        run = runs[label]
        folder = records.run_dir("outputs/runs", run.experiment, run.model.name, run.dataset.name, run.category,
                                 run.seed)
        records.write_record(folder, {"status": "ok", "config_hash": run.config_hash, "experiment": run.experiment})
        (folder / records.NOTEBOOK_FILE).write_text('{"cells": []}')
    kparams, mounted = owned_params(kparams, "k.yaml")
    fake = FakeKaggle(existing=mounted, gpu_sessions=4)
    first = push.push(demo, "outputs/kaggle", kparams, api=fake, poll_s=0)
    for shard in first:
        fake.states[shard.kernel_id] = "complete"
    shards = push.push(demo, "outputs/kaggle", kparams, api=fake, pending_in="outputs/runs", poll_s=0)
    assert [p[0] for p in fake.pushed[4:]] == [s.kernel_id for s in shards]  # ended ones, pushed again
    listed = [s["slug"] for s in load_manifests("outputs/kaggle")[0]["shards"]]
    assert sorted(listed) == sorted(s.slug for s in first)  # the finished DRAEM shard stays listed for status/pull
    pushed = sorted(f"{m} {d}/{c} seed{s}" for shard in shards for m, d, c, s in shard.runs)
    assert pushed == sorted(set(runs) - set(done))
    assert not any(s.slug.startswith("vadbench-demo-draem") for s in shards)  # nothing left to run there
    padim = next(s for s in shards if s.slug.startswith("vadbench-demo-padim"))
    status_file = project / "outputs/kaggle/demo/downloads" / padim.slug / records.SHARD_STATUS_FILE
    status_file.parent.mkdir(parents=True)
    status_file.write_text(json.dumps({"finished": ["a"], "failed": [], "deferred": ["b", "c"]}))
    rows = {r[0]: r[3] for r in pull.status("outputs/kaggle", api=fake)}
    assert rows[padim.kernel_id] == {"finished": 1, "failed": 0, "deferred": 2}
    fake.logs[padim.kernel_id] = "[1/2] padim demo/grass seed0 starting"
    assert pull.logs(padim.slug, "outputs/kaggle", api=fake) == "[1/2] padim demo/grass seed0 starting"
    with pytest.raises(KaggleSetupError, match="no shard 'nope'"):
        pull.logs("nope", "outputs/kaggle", api=fake)


def _finish(run, out: Path) -> None:
    """A finished run's folder: an ok record and its executed notebook."""
    folder = records.run_dir(out, run.experiment, run.model.name, run.dataset.name, run.category, run.seed)
    records.write_record(folder, {"status": "ok", "config_hash": run.config_hash})
    (folder / records.NOTEBOOK_FILE).write_text('{"cells": []}')


def test_deadline_estimates_each_run_by_its_training_steps(tmp_path):
    """study_baseline's DRAEM trains 30 epochs at batch 32: bottle 180 steps (209 train images, 168 after the 20 %
    hold-out: 6 batches), hazelnut 300 (391: 313), toothbrush 60 (60: 48: 2 batches)."""
    from vadbench.launch.steps import run_steps

    exp = load_experiment(ROOT / "params/experiments/study_baseline.yaml")
    runs = {r.category: r for r in expand_runs(exp) if r.model.name == "draem" and r.dataset.name == "mvtec_ad"}
    assert [run_steps(runs[c], 0.2) for c in ("bottle", "hazelnut", "toothbrush")] == [180, 300, 60]
    out, status = tmp_path / "working/runs", tmp_path / "working/shard_status.json"
    gate = session.Deadline(0.0, 500.0, 0.0, status, out, val_ratio=0.2)
    assert gate(runs["bottle"], 1, 4, now=0.0) and gate(runs["cable"], 2, 4, now=0.0)  # two workers, nothing measured
    _finish(runs["bottle"], out)
    gate.done(runs["bottle"], now=180.0)  # 180 s for 180 steps: 1 s a step
    assert gate.seconds_per_step == 1.0 and gate.estimate(runs["hazelnut"]) == pytest.approx(360.0)
    assert not gate(runs["hazelnut"], 3, 4, now=180.0)  # 320 s left: 300 steps would not end in time
    assert gate(runs["toothbrush"], 4, 4, now=180.0)  # 60 steps (72 s) do; the longest run x 1.2 would say 216 s
    gate.done(runs["cable"], now=200.0)  # no record: failed, and not measured
    assert gate.seconds_per_step == 1.0
    gate.close(250.0)
    state = json.loads(status.read_text())
    assert state["finished"] == [runs["bottle"].label] and state["failed"] == [runs["cable"].label, runs["toothbrush"].label]
    assert state["deferred"] == [runs["hazelnut"].label] and state["seconds_per_step"] == 1.0


def test_deadline_without_step_counts_uses_the_longest_run(tmp_path):
    exp = load_experiment(ROOT / "params/experiments/study_baseline.yaml")
    wfdd = [r for r in expand_runs(exp) if r.model.name == "draem" and r.dataset.name == "wfdd"]  # counts unpublished
    out = tmp_path / "working/runs"
    gate = session.Deadline(0.0, 100.0, 20.0, tmp_path / "working/shard_status.json", out)
    assert gate.estimate(wfdd[0]) == 20.0 and gate(wfdd[0], 1, 3, now=0.0)  # run_estimate_s before any run ended
    _finish(wfdd[0], out)
    gate.done(wfdd[0], now=30.0)
    assert gate.seconds_per_step is None and gate.estimate(wfdd[1]) == pytest.approx(36.0)
    assert gate(wfdd[1], 2, 3, now=60.0) and not gate(wfdd[2], 3, 3, now=70.0)  # 40 s left, then 30 s: 36 s needed


def test_visa_from_a_read_only_input_gets_a_scratch_root(tmp_path):
    from replicas import build_visa_raw

    source = build_visa_raw(tmp_path / "input/visa", {"candle": (4, 2, 2)})
    for path in [source, *source.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    root = layout.writable_visa(source, tmp_path / "scratch/visa")
    assert root == tmp_path / "scratch/visa" and (root / "candle/Data/Images/Normal").stat().st_mode & 0o200
    assert (root / "split_csv/1cls.csv").read_bytes() == (source / "split_csv/1cls.csv").read_bytes()
    (root / "candle/Data/Images/Normal/0000.JPG").unlink()  # a second call (same session) does not copy again
    assert layout.writable_visa(source, root) == root and not (root / "candle/Data/Images/Normal/0000.JPG").exists()
    converted = tmp_path / "input/visa-converted/visa_pytorch/candle/train/good"
    converted.mkdir(parents=True)
    os.chmod(tmp_path / "input/visa-converted", 0o555)
    assert layout.writable_visa(tmp_path / "input/visa-converted", tmp_path / "s2") == tmp_path / "input/visa-converted"


def test_fetched_inputs_are_verified(tmp_path, monkeypatch):
    from replicas import build_folder

    folder = build_folder(tmp_path / "dtd", categories=("banded",), n_good=5, n_defect=0, masks=False)
    monkeypatch.setitem(inputs.EXPECTED_IMAGES, "dtd", 5)
    facts = inputs.verify_images(folder, "dtd", "https://example/dtd.tar.gz")
    assert facts["images"] == 5 and facts["source"] == "https://example/dtd.tar.gz"
    monkeypatch.setitem(inputs.EXPECTED_IMAGES, "dtd", 5640)
    with pytest.raises(InputMissingError, match="5 images, expected at least 5640 .an empty or partial download"):
        inputs.verify_images(folder, "dtd", "x")
    teacher = tmp_path / "pretrained_teacher_small.pth"
    torch.save({"w": torch.ones(2)}, teacher)
    facts = inputs.verify_teacher(teacher, "anomalib release")
    assert facts["tensors"] == 1 and len(facts["sha256"]) == 64
    teacher.write_bytes(b"truncated")
    with pytest.raises(InputMissingError, match="does not load"):
        inputs.verify_teacher(teacher, "x")


def test_fetch_uses_anomalibs_downloader_and_links_the_folder(tmp_path, monkeypatch):
    """No network: anomalib's download_and_extract is replaced by one that unpacks a small DTD-shaped tree."""
    from anomalib.data import utils as data_utils

    from replicas import build_folder

    calls = []

    def fake_download(root, info):
        calls.append(info.url)
        build_folder(Path(root) / "dtd/images", categories=("banded",), n_good=3, n_defect=0, masks=False)

    monkeypatch.setattr(data_utils, "download_and_extract", fake_download)
    monkeypatch.setitem(inputs.EXPECTED_IMAGES, "dtd", 3)
    monkeypatch.chdir(tmp_path)
    facts = inputs.fetch_inputs(["dtd:datasets/dtd/images"], tmp_path / "scratch")
    assert calls == ["https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"]
    assert Path("datasets/dtd/images").resolve() == (tmp_path / "scratch/fetched/dtd/dtd/images").resolve()
    assert facts[0]["images"] == 3
    inputs.fetch_inputs(["dtd:datasets/dtd/images"], tmp_path / "scratch")  # present: not fetched again
    assert len(calls) == 1


def test_banner_stops_when_a_gpu_was_asked_for_and_torch_sees_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import sys
    import types

    monkeypatch.setitem(sys.modules, "vadbench._build", types.SimpleNamespace(BUILD_COMMIT="abc"))
    facts = session.banner(require_gpu=False)
    assert facts["gpu"] == "none" and facts["commit"] == "abc" and facts["torch"] == torch.__version__
    with pytest.raises(KaggleSetupError, match="asked for a GPU but torch sees none"):
        session.banner(require_gpu=True)


def test_the_docs_hours_table_is_the_commands_output():
    """docs/kaggle-and-clusters.md includes `vadbench kaggle hours` verbatim (never typed by hand): the comment above
    the table names the command."""
    from vadbench.launch.kaggle.hours import hours_table
    from vadbench.launch.kaggle.spec import load_kaggle_spec

    lines = (ROOT / "docs/kaggle-and-clusters.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("<!-- vadbench kaggle hours "))
    files = lines[at].removeprefix("<!-- vadbench kaggle hours ").removesuffix(" -->").split()
    table = lines[at + 1:at + 1 + next(i for i, line in enumerate(lines[at + 1:]) if not line.startswith("|"))]
    expected = hours_table([ROOT / f for f in files], load_kaggle_spec(ROOT / "params/kaggle/kaggle.yaml"),
                           ["model", "dataset"])
    assert "\n".join(table) == expected
    baseline = next(line for line in table if line.startswith("| study_baseline | draem × mvtec_ad "))
    assert "| 30 epochs, batch 32 | 2,910 |" in baseline  # 30 epochs x 97 batches of 32 over the 15 categories
