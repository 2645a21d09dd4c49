"""`vadbench kaggle notebook`: one run as a notebook for Kaggle's editor, checked as generated and executed in a
local replica of a Kaggle session (read-only /kaggle/input, /kaggle/working as output)."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vadbench import config, records
from vadbench.cli import main as cli_main
from vadbench.data import demo as demo_data

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
        assert isinstance(stmt, ast.AnnAssign) and isinstance(ast.literal_eval(stmt.value), (str, int, list, dict))
    template = nbformat.read(ROOT / "notebooks/kaggle_shard.ipynb", as_version=4)
    install = next(c.source for c in template.cells if c.cell_type == "code" and "-m\", \"pip\"" in c.source)
    assert install in [c.source for c in nb.cells]
    run_nb = nbformat.read(ROOT / "notebooks/train_evaluate.ipynb", as_version=4)
    tail = nb.cells[-len(run_nb.cells):]
    for ours, theirs in zip(tail, run_nb.cells, strict=True):
        if "parameters" in theirs.metadata.get("tags", []):
            assert "model: str = 'padim'" in ours.source and "output_dir: str = '/kaggle/working/runs'" in ours.source
        else:
            assert ours.source == theirs.source
    assert "`tester/vadbench-code`, `your-kaggle-username/vadbench-demo-data` (Add data)" in nb.cells[0].source
    wheel = next(ast.literal_eval(s.value) for s in ast.parse(tagged[0].source).body if s.target.id == "wheel")
    assert (tmp_path / "k/code" / wheel).is_file()


def test_editor_notebook_for_a_run_not_in_the_grid_names_the_choices(at_root, tmp_path, capsys):
    code = cli_main(["kaggle", "notebook", "params/experiments/demo.yaml", "--model", "nope", "--dataset", "demo",
                     "--category", "brick", "--dir", str(tmp_path)])
    assert code == 2 and "no run model='nope'" in capsys.readouterr().err


REPLICA = """set -e
mount -t tmpfs tmpfs /kaggle
mkdir -p /kaggle/input/vadbench-code /kaggle/input/vadbench-demo-data /kaggle/working
for name in vadbench-code vadbench-demo-data; do
  mount --bind "$INPUTS/$name" "/kaggle/input/$name"
  mount -o remount,bind,ro "/kaggle/input/$name"
done
mount --bind "$WORKING" /kaggle/working
cd /kaggle/working
! touch /kaggle/input/vadbench-code/probe 2>/dev/null  # read-only as on Kaggle, even for root
exec "$PYTHON" -m papermill "$NOTEBOOK" "$WORKING/executed.ipynb" --cwd /kaggle/working
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="the replica needs root and unshare")
def test_editor_notebook_runs_in_a_kaggle_replica(at_root, tmp_path):
    """Run All of the generated notebook: the install cell resolves against this environment (pip dry run, no
    index: nothing is downloaded or installed), inputs are read-only, the record lands in /kaggle/working."""
    notebook = generate(tmp_path / "k")
    inputs, working = tmp_path / "input", tmp_path / "working"
    shutil.copytree(tmp_path / "k/code", inputs / "vadbench-code")
    demo_data.build_demo_dataset(inputs / "vadbench-demo-data/demo", demo_data.DemoSpec(
        categories=("brick",), n_train=10, n_test_good=4, n_test_defect=4))
    for sub in ("demo_anomaly_source", "demo_penalty"):
        (inputs / "vadbench-demo-data" / sub).mkdir()
    working.mkdir()
    Path("/kaggle").mkdir(exist_ok=True)  # an empty mount point; the replica mounts a tmpfs over it privately
    env = {**os.environ, "INPUTS": str(inputs), "WORKING": str(working), "PYTHON": sys.executable,
           "NOTEBOOK": str(notebook), "PIP_DRY_RUN": "1", "PIP_NO_INDEX": "1", "VADBENCH_PROGRESS": "lines"}
    env.pop("VADBENCH_ROOT", None)
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", REPLICA], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    record = records.read_record(records.run_dir(working / "runs", "demo", *RUN))
    run = config.find_run(config.load_experiment(ROOT / "params/experiments/demo.yaml"), *RUN)
    assert (record["status"], record["config_hash"]) == ("ok", run.config_hash)  # the same run as at home
    assert record["environment"]["project_root"] == "/tmp/vadbench"
    assert not any((inputs / "vadbench-code").glob("probe"))
