"""`vadbench kaggle notebook`: one run as a notebook for Kaggle's editor, checked as generated and executed in a
local replica of a Kaggle session (read-only /kaggle/input, /kaggle/working as output)."""
from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from vadbench import config, records
from vadbench.cli import main as cli_main
from vadbench.data.demo import DemoSpec, build_demo_dataset
from vadbench.launch import parameters
from vadbench.launch.kaggle import rehearse

ROOT = Path(__file__).resolve().parents[1]
RUN = ("padim", "demo", "brick", 0)


def generate(out: Path) -> Path:
    assert cli_main(["kaggle", "notebook", "params/experiments/demo.yaml", "--model", "padim", "--dataset", "demo",
                     "--category", "brick", "--dir", str(out)]) == 0
    [path] = (out / "editor").glob("*.ipynb")
    return path


@pytest.fixture()
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")


def test_editor_notebook_is_the_shard_install_then_the_run(at_root, tmp_path):
    nb = nbformat.read(generate(tmp_path / "k"), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1  # one parameters cell: the shard template's, literals only
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.AnnAssign) and isinstance(ast.literal_eval(stmt.value), (str, int, float, bool, list, dict))
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and nb.cells.index(injected[0]) == nb.cells.index(tagged[0]) + 1
    template = nbformat.read(ROOT / "notebooks/kaggle_shard.ipynb", as_version=4)
    install = next(c.source for c in template.cells if c.cell_type == "code" and "-m\", \"pip\"" in c.source)
    assert install in [c.source for c in nb.cells]
    run_nb = nbformat.read(ROOT / "notebooks/train_evaluate.ipynb", as_version=4)
    tail = nb.cells[-len(run_nb.cells) - 1:]  # train_evaluate's cells, with papermill's cell after its parameters
    run_values = next(c for c in tail if 'model = "padim"' in c.source)
    assert tail.index(run_values) == next(i for i, c in enumerate(run_nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    assert 'output_dir = "/kaggle/working/runs"' in run_values.source and not run_values.metadata.get("tags")
    assert [c.source for c in tail if c is not run_values] == [c.source for c in run_nb.cells]
    assert "`tester/vadbench-code`, `your-kaggle-username/vadbench-demo-data` (Add data)" in nb.cells[0].source
    assert (tmp_path / "k/code" / parameters.values(nb)["wheel"]).is_file()


def test_editor_notebook_for_a_run_not_in_the_grid_names_the_choices(at_root, tmp_path, capsys):
    code = cli_main(["kaggle", "notebook", "params/experiments/demo.yaml", "--model", "nope", "--dataset", "demo",
                     "--category", "brick", "--dir", str(tmp_path)])
    assert code == 2 and "no run model='nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="the replica needs root and unshare")
def test_editor_notebook_runs_in_a_kaggle_replica(at_root, tmp_path):
    """Run All of the generated notebook in the rehearsal's Kaggle replica: the install cell resolves against this
    environment (pip --no-index, the wheel into a scratch folder), inputs are read-only mounts, and the record
    lands in /kaggle/working with the config hash of the same run at home."""
    notebook = nbformat.read(generate(tmp_path / "k"), as_version=4)
    demo = tmp_path / "demo"
    build_demo_dataset(demo, DemoSpec(categories=("brick",), n_train=10, n_test_good=4,
                                                          n_test_defect=4))
    base, working = tmp_path / "replica", tmp_path / "working"
    working.mkdir()
    notebook = parameters.parameterize(notebook, {
        "work_dir": str(base / "project"), "scratch_dir": str(base / "scratch"), "site_dir": str(base / "site"),
        "pip_options": ["--no-index"], "require_gpu": False})
    base.mkdir()
    nbformat.write(notebook, base / "kernel.ipynb")
    binds = [(tmp_path / "k/code", "vadbench-code"), (demo, "vadbench-demo-data/demo")]
    done = rehearse.execute_in_replica(base / "kernel.ipynb", base / "executed.ipynb", binds, working, base,
                                              namespace=True)
    assert done.returncode == 0, done.stderr[-4000:]
    record = records.read_record(records.run_dir(working / "runs", "demo", *RUN))
    run = config.find_run(config.load_experiment(ROOT / "params/experiments/demo.yaml"), *RUN)
    assert (record["status"], record["config_hash"]) == ("ok", run.config_hash)  # the same run as at home
    assert record["environment"]["project_root"] == str((base / "project").resolve())
