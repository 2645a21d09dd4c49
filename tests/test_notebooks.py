"""The notebooks as users open them: the kernel starts in notebooks/ (JupyterLab does that), paths resolve
against the project root, training shows progress, and a Run All gives the runner's record."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import papermill
import pytest

import inprocess
from notebook_project import RUN, copy_project
from vadbench import config, paths, records
from vadbench.errors import ProjectRootError
from vadbench.launch import execute
from vadbench.run import progress

# ---- the project root --------------------------------------------------------------------------


def test_root_is_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "vadbench"\n')
    assert paths.find_project_root(root / "notebooks") == root.resolve()
    monkeypatch.chdir(root / "notebooks")
    assert paths.use_project_root() == root.resolve() and Path.cwd() == root.resolve()


def test_root_from_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    assert paths.find_project_root(Path(paths.__file__).parent) == tmp_path.resolve()
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(ProjectRootError, match=r"\$VADBENCH_ROOT=.*missing is not a folder"):
        paths.find_project_root()


def test_no_root_is_one_error_that_says_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')  # not ours
    (tmp_path / "deep").mkdir()
    with pytest.raises(ProjectRootError, match=r"no vadbench project at .*deep or above it.*set VADBENCH_ROOT="):
        paths.find_project_root(tmp_path / "deep")


def test_runner_kernels_get_the_runners_folder_as_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    with execute.kernel_env("padim"):
        assert paths.find_project_root() == tmp_path.resolve()
        assert (paths.os.environ["VADBENCH_PROGRESS"], paths.os.environ["TQDM_DISABLE"]) == ("lines", "1")
    assert paths.ROOT_ENV not in paths.os.environ and "VADBENCH_PROGRESS" not in paths.os.environ


# ---- progress ----------------------------------------------------------------------------------


def test_progress_lines_at_each_tenth_with_an_estimate(caplog, monkeypatch):
    now = [0.0]  # one second per step
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.INFO, logger=progress.__name__)
    bar = progress.Progress("training m", 20, "steps", mode="lines")
    for _ in range(20):
        now[0] += 1.0
        bar.update()
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "training m: 2/20 steps, 0m02s elapsed, about 0m18s left"
    assert len(lines) == 10 and lines[-1] == "training m: 20/20 steps, 0m20s elapsed, about 0m00s left (done)"


def test_progress_bar_writes_to_stderr(capsys):
    bar = progress.Progress("scoring x", 4, "images", mode="bar")
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert "scoring x" in err and "4/4" in err


def test_progress_off_shows_nothing(capsys, caplog):
    bar = progress.Progress("x", 3, "steps", mode="off")
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == "" and caplog.records == []


# ---- Run All from notebooks/, as JupyterLab starts the kernel ----------------------------------


def outputs_text(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                     for c in cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_run_all_from_the_notebooks_folder_equals_the_runners_record(tmp_path, monkeypatch):
    project = copy_project(tmp_path / "proj")
    for var in (paths.ROOT_ENV, "TQDM_DISABLE", "VADBENCH_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    executed = tmp_path / "interactive.ipynb"
    papermill.execute_notebook(str(project / "notebooks/train_evaluate.ipynb"), str(executed),
                               kernel_name="python3", cwd=str(project / "notebooks"), progress_bar=False)
    interactive = records.read_record(records.run_dir(project / "outputs/runs", "demo", *RUN.values()))

    monkeypatch.chdir(project)  # what `vadbench run` does, from the project folder
    run = config.find_run(config.load_experiment("params/experiments/demo.yaml"), *RUN.values())
    directory = records.run_dir(project / "outputs/runner", "demo", *RUN.values())
    assert execute.execute_run(run, "params/experiments/demo.yaml", Path("outputs/runner"), directory) == "ok"
    batch = records.read_record(directory)

    assert interactive["status"] == batch["status"] == "ok"
    assert interactive["config_hash"] == batch["config_hash"] == run.config_hash
    assert interactive["environment"]["project_root"] == batch["environment"]["project_root"] == str(project.resolve())
    for name, value in batch["metrics"].items():
        other = interactive["metrics"][name]
        assert other == value or (isinstance(value, float) and math.isclose(other, value, rel_tol=1e-6)), name
    shown = outputs_text(executed)  # the interactive run shows a bar; the batch writes plain lines
    assert "training padim demo/brick seed0" in shown and "scoring test images" in shown
    cells = json.loads(executed.read_text())["cells"]
    tables = "".join("".join(o.get("data", {}).get("text/html", "")) for c in cells for o in c.get("outputs", []))
    assert "harness_ms_per_image" in tables and "pipeline_img_per_s" in tables  # both speeds, side by side
    logged = outputs_text(directory / execute.NOTEBOOK)
    assert re.search(r"training padim demo/brick seed0: (\d+)/\1 steps, \S+ elapsed, about \S+ left \(done\)", logged)
    assert "scoring test images: 8/8 images" in logged and "\r" not in logged


@pytest.mark.slow
def test_summary_run_all_from_the_notebooks_folder(tmp_path, monkeypatch):
    project = copy_project(tmp_path / "proj", train=8)
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    monkeypatch.chdir(project)
    monkeypatch.setenv(execute.ENGINE_ENV, inprocess.NAME)  # the run only feeds the summary, whose kernel is real
    run = config.find_run(config.load_experiment("params/experiments/demo.yaml"), *RUN.values())
    assert execute.execute_run(run, "params/experiments/demo.yaml", Path("outputs/runs"),
                               records.run_dir("outputs/runs", "demo", *RUN.values())) == "ok"
    papermill.execute_notebook(str(project / "notebooks/summary.ipynb"), str(tmp_path / "summary.ipynb"),
                               kernel_name="python3", cwd=str(project / "notebooks"), progress_bar=False)
    comparison = (project / "outputs/report/tables/comparison.csv").read_text()
    assert "padim" in comparison and (project / "outputs/report/figures/metrics.png").is_file()
