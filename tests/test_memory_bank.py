"""PatchCore and PaDiM on the offline MobileNetV2 backbone, through `vadbench run` and the real notebook."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from vadbench import records
from vadbench.data.demo import DemoSpec, build_demo_dataset

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "bank",
    "seeds": [0],
    "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}],
    "models": [
        {"name": "patchcore", "kind": "patchcore", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 4},
         "params": {"backbone": "mobilenet_v2", "layers": ["features.6", "features.13"]}},
        {"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 4},
         "params": {"backbone": "mobilenet_v2", "n_features": 50}},
    ],
    "evaluation": {"val_ratio": 0.25, "eval_batch_size": 4, "timing_warmup": 1, "timing_iterations": 2},
}


def vadbench(cwd, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vadbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(done.stderr[-4000:])
    return done


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    build_demo_dataset(root / "data/demo", DemoSpec(categories=("brick",), crop=64, n_train=8,
                                                                        n_test_good=3, n_test_defect=3))
    (root / "bank.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    done = vadbench(root, "run", "bank.yaml", "--output", "runs")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("model,cls", [("patchcore", "Patchcore"), ("padim", "Padim")])
def test_memory_bank_runs_offline(finished, model, cls):
    run_dir = finished / "runs/bank" / model / "demo/brick/seed0"
    record = records.read_record(run_dir)
    assert record["status"] == "ok" and record["model_class"] == cls
    training = record["training"]
    assert training["backbone"].startswith("mobilenet_v2 (") and "mobilenet_v2-b0353104.pth" in training["backbone"]
    assert training["epochs_run"] == 1 and record["split"]["train_images"] == 6
    scores = pd.read_csv(run_dir / "scores.csv")
    assert record["metrics"]["image_auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-6)
    assert scores["score"].nunique() > 1  # a fitted memory bank, not a constant


def test_patchcore_kernel_gets_the_malloc_setting(finished):
    patchcore = records.read_record(finished / "runs/bank/patchcore/demo/brick/seed0")
    assert patchcore["training"]["malloc_mmap_threshold"] == "1048576"
    padim = records.read_record(finished / "runs/bank/padim/demo/brick/seed0")
    assert "malloc_mmap_threshold" not in padim["training"]
