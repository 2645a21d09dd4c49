"""What a Kaggle shard notebook (notebooks/kaggle_shard.ipynb) calls once vadbench is installed there.

`prepare` lays out a project directory whose relative paths are those of the params file: the
experiment file, notebooks/train_evaluate.ipynb, and a symlink per mount into /kaggle/input, so the
runs' configs (and config hashes) are those of the same runs on your machine. `run_shard` then runs
the shard's runs with `vadbench.launch.runner.run_experiment`: the same papermill/train_evaluate path.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from vadbench import records
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.runner import run_experiment

log = logging.getLogger(__name__)
KAGGLE_INPUT = Path("/kaggle/input")


def find_input(name: str, input_root: Path = KAGGLE_INPUT) -> Path:
    """The folder of an attached Kaggle dataset (`owner/slug` or `slug`), at most three levels down."""
    slug = name.split("/")[-1]
    for pattern in (slug, f"*/{slug}", f"*/*/{slug}"):
        found = sorted(p for p in input_root.glob(pattern) if p.is_dir())
        if found:
            return found[0]
    raise FileNotFoundError(f"dataset {name!r} is not attached under {input_root}; add it to the kernel's data")


def prepare(work_dir: str, code_dir: Path, experiment_path: str, experiment_yaml: str, mounts: dict[str, str],
            git_commit: str, input_root: Path = KAGGLE_INPUT) -> Path:
    """Build the project directory, chdir into it and set the env papermill kernels inherit."""
    root = Path(work_dir)
    (root / experiment_path).parent.mkdir(parents=True, exist_ok=True)
    (root / experiment_path).write_text(experiment_yaml, encoding="utf-8")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(code_dir) / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    for local, target in mounts.items():
        parts = target.split("/")  # owner/slug[/sub/dir]
        source = find_input("/".join(parts[:2]), input_root).joinpath(*parts[2:])
        link = root / local
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(source, target_is_directory=True)
        log.info("mounted %s -> %s", local, source)
    os.environ.update({"VADBENCH_NOTEBOOKS": str(root / "notebooks"), "VADBENCH_GIT_COMMIT": git_commit,
                       "TQDM_DISABLE": "1"})
    os.chdir(root)
    return root


def run_shard(experiment_path: str, runs: list, output_dir: str, workers: int = 1) -> pd.DataFrame:
    """Run this shard's runs and return one row per run (status, image AUROC, error)."""
    select = {(m, d, c, int(s)) for m, d, c, s in runs}
    result = run_experiment(experiment_path, output_dir, workers=workers, select=select)
    log.info("shard: %d done, %d skipped, %d failed", result.done, result.skipped, len(result.failed or []))
    rows = [{"model": r.get("model"), "category": r.get("category"), "seed": r.get("seed"), "status": r.get("status"),
             "image_auroc": (r.get("metrics") or {}).get("image_auroc"), "error": r.get("error")}
            for r in records.load_records(output_dir)]
    return pd.DataFrame(rows)
