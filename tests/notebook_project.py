"""A copy of this project as a user has it (pyproject.toml, params/, notebooks/) with the demo data, for
tests that open the notebooks where JupyterLab starts their kernels: in notebooks/."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vadbench.data.demo import DemoSpec, build_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
#: One fast run (PaDiM on the demo's brick), as the notebook's default parameters name it.
RUN = {"model": "padim", "dataset": "demo", "category": "brick", "seed": 0}


def copy_project(dest: Path, train: int = 12) -> Path:
    """pyproject.toml, params/ and notebooks/ of this checkout under dest, with a small demo dataset
    (`train` normal crops of brick) at the default demo root outputs/data/demo."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for folder in ("params", "notebooks"):
        shutil.copytree(ROOT / folder, dest / folder)
    build_demo_dataset(dest / "outputs/data/demo", DemoSpec(
        categories=("brick",), n_train=train, n_test_good=4, n_test_defect=4))
    demo = yaml.safe_load((dest / "params/experiments/demo.yaml").read_text())
    demo["evaluation"] = {**demo.get("evaluation", {}), "timing_warmup": 1, "timing_iterations": 2}
    (dest / "params/experiments/demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    return dest
