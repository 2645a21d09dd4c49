"""A working dir for runner/launcher tests: a tiny dataset layout, an experiment file and a stand-in
train_evaluate notebook (the real parameters cell, then the given code instead of training)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import yaml
from PIL import Image

from vadbench.launch.execute import NOTEBOOK
from vadbench.paths import notebooks_dir

CATEGORIES = ["a", "broken", "c"]
IMAGES = {"train/good": 5, "test/good": 2}  # tiny PNGs: enough for the split minimums and the decode check


def make_project(tmp_path: Path, monkeypatch, code: str, **experiment) -> Path:
    """Lay out the project, point the runner at the stand-in notebook and chdir into it."""
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
    monkeypatch.chdir(tmp_path)
    return tmp_path
