"""A demo-scale `vadbench run` (papermill, anomalib PaDiM at 64 px, 1 epoch) on a synthetic replica of each
real dataset layout: MVTec AD (toothbrush), raw VisA (capsules, converted to the 1cls split on the
run) and WFDD (grey_cloth, JPEG, undersampled). Checks the records' split and train counts.

The MVTec AD and VisA replicas are scaled down (20 train / 4 good / 6 defect images) so that scoring
stays cheap on a CPU; the run's processes see matching expected counts through a `sitecustomize`
on their PYTHONPATH (the strict count check itself is tested in test_datasets.py at full size)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import inprocess
import replicas
from vadbench import records

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "layouts",
    "seeds": [0],
    "datasets": [
        {"name": "mvtec_ad", "kind": "mvtec_ad", "root": "data/mvtec_ad", "categories": ["toothbrush"]},
        {"name": "visa", "kind": "visa", "root": "data/visa", "categories": ["capsules"]},
        {"name": "wfdd", "kind": "wfdd", "root": "data/wfdd", "categories": ["grey_cloth"], "train_ratio": 0.5},
    ],
    "models": [{"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 16},
                "params": {"backbone": "mobilenet_v2", "n_features": 50}}],
    "evaluation": {"val_ratio": 0.2, "eval_batch_size": 16, "timing_warmup": 1, "timing_iterations": 1,
                   "figure_images": 2},
}
SCALED = (20, 4, 6)
SITECUSTOMIZE = f"""from vadbench import registry
registry.MVTEC_AD_COUNTS["toothbrush"] = {SCALED}
registry.VISA_COUNTS["capsules"] = {SCALED}
"""
# (available after the hold-out, trained on, held out, test good, test defect)
EXPECTED = {
    "mvtec_ad/toothbrush": (16, 16, 4, 4, 6),
    "visa/capsules": (16, 16, 4, 4, 6),
    "wfdd/grey_cloth": (8, 4, 2, 3, 4),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layouts")
    replicas.build_mvtec_like(root / "data/mvtec_ad", {"toothbrush": SCALED})
    replicas.build_visa_raw(root / "data/visa", {"capsules": SCALED})
    replicas.build_wfdd(root / "data/wfdd")
    (root / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    (root / "patch").mkdir()
    (root / "patch/sitecustomize.py").write_text(SITECUSTOMIZE)
    env = inprocess.subprocess_env(root / "engine")  # the CLI's own process runs the notebooks (no kernel each)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "patch"), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "vadbench.cli", "run", "exp.yaml", "--output", "runs"], cwd=root,
                          capture_output=True, text=True, timeout=1500, env={**env, "PYTHONUNBUFFERED": "1"})
    print(done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("cell", sorted(EXPECTED))
def test_records_carry_split_and_train_counts(finished, cell):
    record = records.read_record(finished / "runs/layouts/padim" / cell / "seed0")
    assert record["status"] == "ok"
    split = record["split"]
    got = (split["train_images_available"], split["train_images"], split["val_images"],
           split["test_images_good"], split["test_images_defect"])
    assert got == EXPECTED[cell]
    assert split["val_source"] == "train" and split["val_ratio"] == 0.2 and split["split_seed"] == 0
    assert split["train_ratio"] == (0.5 if cell.startswith("wfdd") else 1.0)
    scores = pd.read_csv(finished / "runs/layouts/padim" / cell / "seed0/scores.csv")
    assert len(scores) == split["test_images_good"] + split["test_images_defect"] == record["timing"]["test_images"]
    assert scores["label"].sum() == split["test_images_defect"]
    assert record["training"]["steps_run"] == 1  # one epoch of one batch
    assert 0.0 <= record["metrics"]["pixel_auroc"] <= 1.0  # masks were read (VisA's ids binarised, WFDD's JPEG pairs)


def test_visa_was_converted_with_the_official_split(finished):
    converted = finished / "data/visa/visa_pytorch/capsules"
    counts = [len(list((converted / sub).iterdir())) for sub in ("train/good", "test/good", "test/bad", "ground_truth/bad")]
    assert counts == [20, 4, 6, 6]
    scores = pd.read_csv(finished / "runs/layouts/padim/visa/capsules/seed0/scores.csv")
    assert all("/visa_pytorch/capsules/test/" in p for p in scores["path"])
    assert all(k.startswith(("capsules/test/good/", "capsules/test/bad/")) for k in scores["key"])  # the root left out
