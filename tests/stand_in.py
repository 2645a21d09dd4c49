"""A working dir for runner/launcher tests: a tiny dataset layout, an experiment file and a stand-in
train_evaluate notebook (the real parameters cell, then the given code instead of training)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import yaml
from PIL import Image

import inprocess
from vadbench.launch.execute import ENGINE_ENV, NOTEBOOK
from vadbench.paths import notebooks_dir

CATEGORIES = ["a", "broken", "c"]
IMAGES = {"train/good": 5, "test/good": 2}  # tiny PNGs: enough for the split minimums and the decode check


def make_project(tmp_path: Path, monkeypatch, code: str, kernel: bool = False, **experiment) -> Path:
    """Lay out the project, point the runner at the stand-in notebook and chdir into it.

    kernel: run the notebooks in a real Jupyter kernel (default: in this process, `inprocess`)."""
    for category in CATEGORIES:
        for sub, n in IMAGES.items():
            (tmp_path / "data" / category / sub).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 90, 120)).save(tmp_path / "data" / category / sub / f"{i:03d}.png")
    exp = {"name": "t", "seeds": [0], **experiment,
           "datasets": [{"name": "d", "kind": "demo", "root": "data", "categories": list(CATEGORIES)}],
           "models": [{"name": "dr", "kind": "draem", "image_size": 64,
                       "train": {"max_steps": 1, "batch_size": 2}, "params": {"anomaly_source": "perlin"}}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    real = nbformat.read(notebooks_dir() / NOTEBOOK, as_version=4)
    params = next(c for c in real.cells if "parameters" in c.metadata.get("tags", []))
    fake = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(code)])
    fake.metadata = real.metadata
    nbformat.write(fake, nb_dir / NOTEBOOK)
    monkeypatch.setenv("VADBENCH_NOTEBOOKS", str(nb_dir))
    monkeypatch.setenv("VADBENCH_ACTIVE_DIR", str(tmp_path / "active-runs"))
    if not kernel:
        monkeypatch.setenv(ENGINE_ENV, inprocess.NAME)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stand_in_code(fields: str = "", before: str = "", after: str = "", log: bool = True, broken: bool = True) -> str:
    """The stand-in notebook's code: find its run, optionally log it to executions.log and fail on category
    'broken', then write an ok record (with `fields`, Python dict items text, added); `before`/`after` run
    around the record."""
    lines = ["import os, pathlib, time", "from vadbench import config, records",
             "run = config.find_run(config.load_experiment(experiment), model, dataset, category, seed)",
             "d = records.run_dir(output_dir, run.experiment, run.model.name, run.dataset.name, run.category, run.seed)"]
    if log:
        lines += ['with open("executions.log", "a") as fh:', '    fh.write(run.label + "\\n")']
    lines += [before] if before else []
    if broken:
        lines += ['if category == "broken":', '    raise RuntimeError("deliberate failure in " + run.label)']
    lines += ['records.write_record(d, {"status": "ok", "error": None, "experiment": run.experiment, '
              '"model": run.model.name, "dataset": run.dataset.name, "category": run.category, "seed": run.seed, '
              f'"config_hash": run.config_hash, "config": run.config(){", " + fields if fields else ""}}})']
    lines += [after] if after else []
    return "\n".join(lines) + "\n"


def executions(project: Path) -> list[str]:
    """The runs the stand-in notebook executed in a project, in order."""
    log = project / "executions.log"
    return log.read_text().splitlines() if log.exists() else []
