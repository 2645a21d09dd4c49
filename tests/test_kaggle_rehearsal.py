"""Rehearsals: the generated Kaggle shard notebook executed here, in a replica of a kernel, on replicas of
the study's datasets (read-only /kaggle/input mounts, /kaggle/working as output, pip without an index)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

import replicas
from vadbench import records
from vadbench.config import expand_runs, load_experiment
from vadbench.launch.kaggle import push, rehearse
from vadbench.launch.runner import run_experiment
from vadbench.registry import MVTEC_AD_COUNTS, VISA_COUNTS

ROOT = Path(__file__).resolve().parents[1]
STUDY = "params/experiments/study_baseline.yaml"
SMOKE = "outputs/kaggle-rehearsal/params/study_baseline.yaml"
MOUNTS = {"datasets/mvtec_ad": "tester/mvtec-ad", "datasets/visa": "tester/visa-raw",
          "datasets/wfdd": "tester/wfdd-data", "datasets/dtd": "tester/dtd-textures"}


@pytest.fixture()
def study(tmp_path, monkeypatch):
    """A project with study_baseline's params and replicas of MVTec AD (bottle), VisA (raw: candle), WFDD, DTD."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    for kind in ("MVTEC_AD", "VISA", "WFDD"):
        monkeypatch.delenv(f"VADBENCH_{kind}_ROOT", raising=False)
    replicas.build_mvtec_like(Path("datasets/mvtec_ad"), {"bottle": MVTEC_AD_COUNTS["bottle"]})
    replicas.build_visa_raw(Path("datasets/visa"), {"candle": VISA_COUNTS["candle"]})
    replicas.build_wfdd(Path("datasets/wfdd"))
    replicas.build_folder(Path("datasets/dtd/images"), categories=("banded",), n_good=6, n_defect=0, masks=False)
    Path("kaggle.yaml").write_text(yaml.safe_dump({"mounts": MOUNTS}))
    return tmp_path


def banner_text(notebook: str) -> str:
    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_rehearsal_of_the_study_shards_and_pull(study):
    kaggle_existed = Path("/kaggle").exists()
    """The DRÆM × WFDD shard of the study, rehearsed and pulled (shards of MVTec AD and raw VisA run the same way in
    the stand-in: tests/test_kaggle_loop.py)."""
    done = rehearse.rehearse(STUDY, "kaggle.yaml", shard="vadbench-study-baseline-draem-wfdd", smoke=True)
    assert [d["shard"][:-9] for d in done] == ["vadbench-study-baseline-draem-wfdd"]
    for summary in done:
        assert summary["ok"] and len(summary["finished"]) == 1 and not summary["failed"] and not summary["deferred"]
        text = banner_text(summary["notebook"])
        assert f"replica/{summary['shard']}/site/vadbench" in text  # the pushed wheel ran, not this checkout
        assert "/kaggle/input/vadbench-code" in text or not summary["namespace"]
    assert Path("/kaggle").exists() == kaggle_existed  # the machine's /kaggle is left as it was

    pulled = rehearse.pull_rehearsal("outputs/runs")
    assert pulled.added == ["study_baseline/draem/wfdd/grey_cloth/seed0"]
    local = {(r.dataset.name, r.category): r.config_hash for r in expand_runs(load_experiment(SMOKE))
             if r.model.name == "draem" and r.dataset.name == "wfdd"}
    for record in records.load_records("outputs/runs"):
        assert record["status"] == "ok" and record["config_hash"] == local[record["dataset"], record["category"]]
        assert record["config"]["dataset"]["root"] == f"datasets/{record['dataset']}"
    again = run_experiment(SMOKE, "outputs/runs", select={("draem", d, c, 0) for d, c in local})
    assert (again.done, again.skipped) == (0, 1)  # a local run of the same budget finds it finished


@pytest.mark.slow
def test_short_deadline_defers_runs_and_push_pending_picks_them_up(study):
    """A deadline too short for both runs of a shard: what is not finished is deferred (how many depends on this
    machine's speed, so the split is read from the kernel's own status), and `push --pending` picks up exactly those."""
    both = ["draem wfdd/grey_cloth seed0", "draem wfdd/grid_cloth seed0"]
    done = rehearse.rehearse(STUDY, "kaggle.yaml", shard="vadbench-study-baseline-draem-wfdd", smoke=True,
                                    deadline_s=30, smoke_categories=2)
    (summary,) = done
    assert summary["ok"] and summary["deferred"] and sorted(summary["finished"] + summary["deferred"]) == both
    assert summary["deferred"] == both[len(summary["finished"]):]  # in grid order: once one is deferred, the rest are
    status = json.loads((Path("outputs/kaggle-rehearsal/study_baseline/downloads") / summary["shard"] /
                         records.SHARD_STATUS_FILE).read_text())
    assert status["deferred"] == summary["deferred"] and status["deadline_s"] == 30
    added = rehearse.pull_rehearsal("outputs/runs").added
    assert added == [f"study_baseline/draem/wfdd/{label.split('/')[1].split()[0]}/seed0" for label in summary["finished"]]
    shards = push.push(SMOKE, "outputs/kaggle", "kaggle.yaml", dry_run=True, pending_in="outputs/runs")
    wfdd = next(s for s in shards if s.slug == summary["shard"])  # the same stable kernel name
    assert [f"{m} {d}/{c} seed{s}" for m, d, c, s in wfdd.runs] == summary["deferred"]


def another_wheel(monkeypatch) -> None:
    """Generate kernels that expect a different wheel than the one in the code dataset."""
    real = push.build_code_folder

    def pushed_elsewhere(*args, **kwargs):
        wheel, _, commit = real(*args, **kwargs)
        return wheel, "0" * 64, commit

    monkeypatch.setattr(push, "build_code_folder", pushed_elsewhere)


def test_a_kernel_with_another_wheel_stops_before_installing_it(study, monkeypatch):
    another_wheel(monkeypatch)
    (summary,) = rehearse.rehearse(STUDY, "kaggle.yaml", shard="vadbench-study-baseline-draem-wfdd", smoke=True)
    assert not summary["ok"] and summary["finished"] == summary["deferred"] == []
    nb = nbformat.read(summary["notebook"], as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and "is not the pushed wheel (sha256" in errors[0]["evalue"]
    assert not list(Path(summary["notebook"]).parent.glob("site/vadbench"))  # nothing was installed


def test_without_unshare_the_inputs_are_read_only_copies(study, monkeypatch):
    another_wheel(monkeypatch)
    monkeypatch.setattr(rehearse.os, "geteuid", lambda: 1000)  # as a user without root
    (summary,) = rehearse.rehearse(STUDY, "kaggle.yaml", shard="vadbench-study-baseline-draem-wfdd", smoke=True)
    assert not summary["namespace"] and not summary["ok"]
    inputs = Path(summary["notebook"]).parent / "kaggle/input"
    assert sorted(p.name for p in inputs.iterdir()) == ["datasets", "dtd-textures", "vadbench-code", "wfdd-data"]
    assert sorted(p.name for p in (inputs / "datasets/tester").iterdir()) == ["dtd-textures", "wfdd-data"]
    assert sorted(p.name for p in (inputs / "datasets/rehearsal").iterdir()) == ["vadbench-code"]  # both layouts
    assert not (inputs / "wfdd-data").stat().st_mode & 0o222  # read-only copies
    errors = [o for c in nbformat.read(summary["notebook"], as_version=4).cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert f"{inputs.resolve()}/vadbench-code/vadbench-0.1.0-py3-none-any.whl is not the pushed wheel" in errors[0]["evalue"]
