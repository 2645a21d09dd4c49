"""Kaggle shards offline: folder contents, the code wheel, the CLI's dry run and refusals, the kernel's own run path.

No test here touches a service: push, status and pull against the Kaggle stand-in through the real client are in
tests/test_kaggle_loop.py.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml
from PIL import Image

from vadbench import records
from vadbench.cli import main as cli_main
from vadbench.errors import ConfigError, KaggleSetupError
from vadbench.launch import execute, parameters
from vadbench.launch.kaggle import push, rules
from vadbench.launch.kaggle.kernel import layout, session

ROOT = Path(__file__).resolve().parents[1]
DUMMY_KEY = "dummy-kaggle-key-7f3a9c51e2"


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A project dir with the shipped demo params and Kaggle params, and a dummy key in the environment."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", DUMMY_KEY)
    return tmp_path


DEMO = "params/experiments/demo.yaml"
KPARAMS = "params/kaggle/kaggle.yaml"


def code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_dry_run_writes_one_valid_kernel_folder_per_model_and_dataset(project):
    shards = push.push(DEMO, "outputs/kaggle", KPARAMS, dry_run=True)
    models = ["draem", "efficientad_s", "patchcore", "padim"]
    assert [s.slug[:-9] for s in shards] == [f"vadbench-demo-{m.replace('_', '-')}-demo" for m in models]
    assert [s.slug for s in push.push(DEMO, "outputs/kaggle", KPARAMS, dry_run=True)] == [s.slug for s in shards]
    manifest = json.loads((project / "outputs/kaggle/demo/shards.json").read_text())
    assert [s["kernel_id"] for s in manifest["shards"]] == [f"tester/{s.slug}" for s in shards]
    exp_text = (project / DEMO).read_text()
    for shard in shards:
        folder = Path(shard.folder)
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert meta["id"] == f"tester/{shard.slug}" and rules.slugify(meta["title"]) == shard.slug
        assert len(shard.slug) <= 50 and len(shard.slug.split("-")[-1]) == 8
        assert (meta["kernel_type"], meta["language"], meta["enable_gpu"], meta["enable_internet"]) == \
            ("notebook", "python", True, True)
        assert meta["machine_shape"] == "NvidiaTeslaT4" and meta["is_private"] is True
        assert meta["dataset_sources"] == ["tester/vadbench-code", "your-kaggle-username/vadbench-demo-data"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(["kernel-metadata.json", meta["code_file"]])
        nb = nbformat.read(folder / meta["code_file"], as_version=4)
        nbformat.validate(nb)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        for stmt in ast.parse(params.source).body:  # literals only, one annotated assignment each
            assert isinstance(stmt, ast.AnnAssign), ast.dump(stmt)
            ast.literal_eval(stmt.value)
        injected = nb.cells[nb.cells.index(params) + 1]  # the shard's values, set the papermill way
        assert injected.metadata["tags"] == ["injected-parameters"]
        values = {}
        exec(injected.source, {}, values)  # what the kernel runs
        assert values == dict(nb.metadata.papermill.parameters)  # and what papermill remembers
        assert values["experiment_yaml"] == exp_text and values["experiment_path"] == DEMO
        model = models[shards.index(shard)]
        assert values["runs"] == [[model, "demo", c, 0] for c in ("brick", "grass", "gravel")]
        assert values["mounts"]["outputs/data/demo"] == "your-kaggle-username/vadbench-demo-data/demo"
        for source in code_cells(nb):  # no def/class, and the run goes through runner.run_experiment
            tree = ast.parse(source)
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert any("session.run_shard(" in s for s in code_cells(nb))
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_code_dataset_holds_an_installable_wheel_of_this_checkout(project, tmp_path):
    push.push(DEMO, "outputs/kaggle", KPARAMS, dry_run=True)
    code = project / "outputs/kaggle/code"
    assert json.loads((code / "dataset-metadata.json").read_text())["id"] == "tester/vadbench-code"
    assert (code / "train_evaluate.ipynb").read_bytes() == (ROOT / "notebooks/train_evaluate.ipynb").read_bytes()
    wheel = next(code.glob("vadbench-*-py3-none-any.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("vadbench/launch/runner.py") == (ROOT / "src/vadbench/launch/runner.py").read_bytes()
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (target / "vadbench/launch/kaggle/kernel/session.py").is_file()
    assert list(target.glob("vadbench-*.dist-info/METADATA"))


def test_shard_keys_accelerator_and_errors(project):
    shards = push.push(DEMO, "outputs/kaggle", KPARAMS, shard_by=["model", "dataset", "category"],
                              accelerator="NvidiaTeslaP100", dry_run=True)
    assert len(shards) == 4 * 3 and all(len(s.runs) == 1 and len(s.slug) <= 50 for s in shards)
    meta = json.loads((Path(shards[0].folder) / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "NvidiaTeslaP100"
    with pytest.raises(ConfigError, match="--shard-by 'gpu' is not one of"):
        push.push(DEMO, "outputs/kaggle", KPARAMS, shard_by=["gpu"], dry_run=True)
    spec = yaml.safe_load((project / KPARAMS).read_text())
    del spec["mounts"]["outputs/data/demo_penalty"]  # penalty images: fetched in the kernel (internet on) ...
    (project / "k.yaml").write_text(yaml.safe_dump(spec))
    fetching = push.push(DEMO, "outputs/kaggle", "k.yaml", dry_run=True)
    nb = nbformat.read(Path(fetching[1].folder) / f"{fetching[1].slug}.ipynb", as_version=4)
    assert parameters.values(nb)["fetch"] == ['imagenette:outputs/data/demo_penalty']
    (project / "k.yaml").write_text(yaml.safe_dump({**spec, "fetch_inputs": False}))  # ... unless fetching is off
    with pytest.raises(KaggleSetupError, match="outputs/data/demo_penalty: not on Kaggle; mount it, or "
                       "turn on enable_internet and fetch_inputs"):
        push.push(DEMO, "outputs/kaggle", "k.yaml", dry_run=True)
    del spec["mounts"]["outputs/data/demo"]  # a dataset must be mounted
    (project / "k.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(KaggleSetupError, match="outputs/data/demo: not on Kaggle; mount it "):
        push.push(DEMO, "outputs/kaggle", "k.yaml", dry_run=True)
    with pytest.raises(KaggleSetupError, match="accelerator 'T4' is not a Kaggle machine shape"):
        push.push(DEMO, "outputs/kaggle", KPARAMS, accelerator="T4", dry_run=True)
    (project / "bad.yaml").write_text("accelerator: T4\ngpu: true\n")
    with pytest.raises(ConfigError, match="unknown key 'gpu'"):
        push.push(DEMO, "outputs/kaggle", "bad.yaml", dry_run=True)


def test_cli_dry_run(project, capsys):
    assert cli_main(["kaggle", "push", DEMO, "--dry-run", "--accelerator", "NvidiaL4"]) == 0
    metas = sorted((project / "outputs/kaggle/demo/kernels").glob("*/kernel-metadata.json"))
    assert len(metas) == 4 and json.loads(metas[0].read_text())["machine_shape"] == "NvidiaL4"


def test_cli_drive_refuses_the_shipped_placeholder_and_hours_prints_the_table(project, capsys):
    assert cli_main(["kaggle", "drive", DEMO]) == 2  # the real boundary, never reached: refused by name first
    err = capsys.readouterr().err
    assert "nothing uploaded: mount outputs/data/demo -> your-kaggle-username/vadbench-demo-data/demo" in err
    assert "kaggle upload-data" in err
    states = {e["state"] for e in json.loads((project / "outputs/kaggle/demo/shards.json").read_text())["shards"]}
    assert states == {"written"}
    assert cli_main(["kaggle", "hours", DEMO]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| experiment | shard | runs |") and len(table) == 2 + 4
    assert table[2] == "| demo | draem × demo | 3 | 8 steps, batch 4 | 24 | 3,450 s |"  # 41,400 s x 2 workers / 24


def test_importing_vadbench_kaggle_modules_does_not_import_kaggle():
    modules = ("vadbench.launch.kaggle.push, vadbench.launch.kaggle.pull, vadbench.launch.kaggle.api, "
               "vadbench.launch.kaggle.kernel.session, vadbench.launch.kaggle.rehearse, vadbench.cli, "
               "vadbench.launch.kaggle.drive, vadbench.launch.kaggle.upload, vadbench.launch.kaggle.hours, "
               "vadbench.launch.kaggle.manifest, vadbench.launch.kaggle.datasets")
    code = f"import sys, {modules}; print('kaggle' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KAGGLE_KEY": DUMMY_KEY, "KAGGLE_USERNAME": "tester"})
    assert done.stdout.strip() == "False", done.stderr


STAND_IN = '''
import pathlib
from vadbench import config, records
run = config.find_run(config.load_experiment(experiment), model, dataset, category, seed)
root = pathlib.Path(run.dataset.root)
assert (root / category / "train/good/x.png").is_file(), root
records.write_record(records.run_dir(output_dir, run.experiment, run.model.name, run.dataset.name, run.category, run.seed),
                     {"status": "ok", "error": None, "experiment": run.experiment, "model": run.model.name,
                      "dataset": run.dataset.name, "category": run.category, "seed": run.seed,
                      "config_hash": run.config_hash, "config": run.config(), "data_seen": str(root.resolve())})
'''


def test_kernel_side_prepares_mounts_and_runs_only_its_shard(tmp_path, monkeypatch):
    """What the shard notebook does on Kaggle, against a fake /kaggle/input, with a stand-in train_evaluate.

    The shard checks only its own runs: another category's missing folder and another model's missing
    penalty images do not stop it."""
    inputs = tmp_path / "input"
    for category in ("brick", "grass"):
        (inputs / "vadbench-demo-data/demo" / category / "train/good").mkdir(parents=True)
        (inputs / "vadbench-demo-data/demo" / category / "test/good").mkdir(parents=True)
        for i in range(5):  # enough for a held-out image
            Image.new("RGB", (8, 8)).save(inputs / "vadbench-demo-data/demo" / category / f"train/good/x{i or ''}.png")
    code = inputs / "vadbench-code"
    code.mkdir()
    real = nbformat.read(ROOT / "notebooks/train_evaluate.ipynb", as_version=4)
    params = next(c for c in real.cells if "parameters" in c.metadata.get("tags", []))
    fake = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(STAND_IN)])
    fake.metadata = real.metadata
    nbformat.write(fake, code / execute.NOTEBOOK)
    exp = {"name": "k", "datasets": [{"name": "demo", "kind": "demo", "root": "outputs/data/demo",
                                      "categories": ["brick", "grass", "gravel"]}],  # gravel: not on disk
           "models": [{"name": "draem", "kind": "draem", "image_size": 64, "train": {"max_steps": 1, "batch_size": 2},
                       "params": {"anomaly_source": "perlin"}},
                      {"name": "ead", "kind": "efficientad", "image_size": 256, "train": {"max_steps": 1, "batch_size": 1},
                       "params": {"teacher": "random", "imagenet_dir": "nowhere"}}]}  # another shard's missing input
    monkeypatch.chdir(tmp_path)
    for var in ("VADBENCH_NOTEBOOKS", "VADBENCH_GIT_COMMIT"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # restored after the test
    work = layout.prepare_project(str(tmp_path / "work"), code, "params/experiments/k.yaml", yaml.safe_dump(exp),
                                 {"outputs/data/demo": "someone/vadbench-demo-data/demo"}, "abc123", input_root=inputs)
    assert Path.cwd() == work and (work / "outputs/data/demo").resolve() == (inputs / "vadbench-demo-data/demo").resolve()
    summary = session.run_shard("params/experiments/k.yaml", [["draem", "demo", "grass", 0]],
                                      str(tmp_path / "working/runs"))
    assert list(summary["category"]) == ["grass"] and list(summary["status"]) == ["ok"]
    record = records.read_record(tmp_path / "working/runs/k/draem/demo/grass/seed0")
    assert record["data_seen"] == str((inputs / "vadbench-demo-data/demo").resolve())
    assert record["config"]["dataset"]["root"] == "outputs/data/demo"  # same config (and hash) as a local run


TIMED_STAND_IN = '''
import time
from vadbench import config, records
began = time.time()
time.sleep(3)
run = config.find_run(config.load_experiment(experiment), model, dataset, category, seed)
records.write_record(records.run_dir(output_dir, run.experiment, run.model.name, run.dataset.name, run.category, run.seed),
                     {"status": "ok", "error": None, "experiment": run.experiment, "model": run.model.name,
                      "dataset": run.dataset.name, "category": run.category, "seed": run.seed,
                      "config_hash": run.config_hash, "config": run.config(), "began": began, "ended": time.time()})
'''


def test_two_workers_keep_the_deadline(tmp_path, monkeypatch):
    """workers: 2 runs two runs at once and still asks the deadline before each: with 10 s, the first two start
    together; each takes over 3 s, so the third (its steps x the measured time per step) would end too late."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    real = nbformat.read(ROOT / "notebooks/train_evaluate.ipynb", as_version=4)
    params = next(c for c in real.cells if "parameters" in c.metadata.get("tags", []))
    stand_in = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(TIMED_STAND_IN)])
    stand_in.metadata = real.metadata
    nbformat.write(stand_in, notebooks / execute.NOTEBOOK)
    for category in ("brick", "grass", "gravel"):
        for split in ("train/good", "test/good"):
            (tmp_path / "data" / category / split).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8)).save(tmp_path / "data" / category / f"train/good/x{i}.png")
    exp = {"name": "w", "device": "cpu", "datasets": [{"name": "demo", "kind": "demo", "root": "data",
                                                       "categories": ["brick", "grass", "gravel"]}],
           "models": [{"name": "draem", "kind": "draem", "image_size": 64, "train": {"max_steps": 2, "batch_size": 2},
                       "params": {"anomaly_source": "perlin"}}]}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(exp))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VADBENCH_NOTEBOOKS", str(notebooks))
    runs = [["draem", "demo", c, 0] for c in ("brick", "grass", "gravel")]
    from vadbench.config import load_experiment
    from vadbench.launch import runner

    runner.preflight(load_experiment("w.yaml"))  # the checks' imports (torch, anomalib) before the clock starts
    summary = session.run_shard("w.yaml", runs, str(tmp_path / "working/runs"), workers=2, deadline_s=10.0)
    state = json.loads((tmp_path / "working" / records.SHARD_STATUS_FILE).read_text())
    assert sorted(state["finished"]) == ["draem demo/brick seed0", "draem demo/grass seed0"]
    assert state["deferred"] == ["draem demo/gravel seed0"] and state["failed"] == []
    assert state["seconds_per_step"] > 1.5  # over 3 s for 2 steps
    done = [records.read_record(tmp_path / f"working/runs/w/draem/demo/{c}/seed0") for c in ("brick", "grass")]
    assert max(r["began"] for r in done) < min(r["ended"] for r in done)  # the two ran at the same time
    assert list(summary["status"]) == ["ok", "ok", "deferred"]


def test_a_dataset_root_outside_the_project_is_linked_where_the_params_name_it(tmp_path, monkeypatch):
    """An absolute root (`root: /data/...` in the params) is a mount key and is mounted at that path, and a run reads
    it there; a folder already there is used only when it holds the mounted dataset's files (a replica on the machine
    with the data), else an error."""
    inputs = tmp_path / "input"
    source = inputs / "vadbench-demo-data/demo"
    for category in ("brick", "grass"):
        (source / category / "test/good").mkdir(parents=True)
        (source / category / "train/good").mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8)).save(source / category / f"train/good/x{i or ''}.png")
    code = inputs / "vadbench-code"
    code.mkdir()
    real = nbformat.read(ROOT / "notebooks/train_evaluate.ipynb", as_version=4)
    params = next(c for c in real.cells if "parameters" in c.metadata.get("tags", []))
    stand_in = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(STAND_IN)])
    stand_in.metadata = real.metadata
    nbformat.write(stand_in, code / execute.NOTEBOOK)
    monkeypatch.chdir(tmp_path)
    for var in ("VADBENCH_NOTEBOOKS", "VADBENCH_GIT_COMMIT"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    outside = tmp_path / "elsewhere/data/demo"  # not in the project
    exp = {"name": "a", "datasets": [{"name": "demo", "kind": "demo", "root": str(outside),
                                      "categories": ["brick", "grass"]}],
           "models": [{"name": "draem", "kind": "draem", "image_size": 64, "train": {"max_steps": 1, "batch_size": 2},
                       "params": {"anomaly_source": "perlin"}}]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(exp))
    (tmp_path / "k.yaml").write_text(yaml.safe_dump({"mounts": {str(outside): "tester/vadbench-demo-data/demo"}}))
    from vadbench.config import expand_runs, load_experiment
    from vadbench.launch.kaggle.shards import shard_inputs
    from vadbench.launch.kaggle.spec import load_kaggle_spec

    got = shard_inputs(expand_runs(load_experiment("a.yaml")), load_kaggle_spec("k.yaml"))
    assert got.mounts == {str(outside): "tester/vadbench-demo-data/demo"}  # a valid mount key

    def prepare(work: str) -> Path:
        return layout.prepare_project(str(tmp_path / work), code, "params/experiments/a.yaml", yaml.safe_dump(exp),
                                      got.mounts, "abc", input_root=inputs)

    prepare("w1")
    assert outside.is_symlink() and outside.resolve() == source.resolve()
    made = outside.lstat().st_mtime_ns
    time.sleep(0.05)
    prepare("w1b")  # a second kernel of a replica on this machine: the link it may be reading through is kept
    assert outside.lstat().st_mtime_ns == made
    session.run_shard("params/experiments/a.yaml", [["draem", "demo", "grass", 0]], str(tmp_path / "working/runs"))
    record = records.read_record(tmp_path / "working/runs/a/draem/demo/grass/seed0")
    assert record["status"] == "ok" and record["data_seen"] == str(source.resolve())
    assert record["config"]["dataset"]["root"] == str(outside)  # the params' root: the config hash of a local run
    outside.unlink()
    shutil.copytree(source, outside)  # the same files already there: used as they are
    prepare("w2")
    assert not outside.is_symlink()
    (outside / "brick/train/good/x.png").write_bytes(b"another image")
    with pytest.raises(KaggleSetupError, match="exists in this kernel and is not the mounted dataset"):
        prepare("w3")
    assert (outside / "brick/train/good/x.png").read_bytes() == b"another image"  # never touched
