"""End to end, for real: demo data -> `vadbench run` (papermill, anomalib DRÆM and EfficientAD) -> records -> `vadbench report`.

Tiny budgets (a few training steps on a few 64-px crops) keep this to a few minutes on 2 CPU cores;
it checks that the files agree with each other, not that the models are good.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score, roc_auc_score

from vadbench import records
from vadbench.data.demo import DemoSpec, build_anomaly_source, build_demo_dataset, build_penalty_images

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "tiny",
    "seeds": [0],
    "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}],
    "models": [
        {"name": "draem", "kind": "draem", "image_size": 64, "train": {"max_steps": 2, "batch_size": 2},
         "params": {"anomaly_source": "data/source"}},
        {"name": "efficientad_s", "kind": "efficientad", "image_size": 256, "train": {"max_steps": 2, "batch_size": 1},
         "params": {"model_size": "small", "teacher": "random", "imagenet_dir": "data/penalty"}},
    ],
    "evaluation": {"val_ratio": 0.25, "eval_batch_size": 4, "timing_warmup": 1, "timing_iterations": 2},
}


def vadbench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "vadbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200, env=env)
    print(done.stderr[-4000:])
    return done


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    build_demo_dataset(root / "data/demo", DemoSpec(categories=("brick",), crop=64, n_train=8,
                                                                        n_test_good=3, n_test_defect=3))
    build_penalty_images(root / "data/penalty", n=4)
    build_anomaly_source(root / "data/source", n=4, size=64)
    (root / "tiny.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    done = vadbench(root, "run", "tiny.yaml", "--output", "runs")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("model", ["draem", "efficientad_s"])
def test_run_files_agree(finished, model):
    run_dir = finished / "runs/tiny" / model / "demo/brick/seed0"
    record = records.read_record(run_dir)
    assert record["status"] == "ok" and record["error"] is None
    scores = pd.read_csv(run_dir / "scores.csv")
    assert list(scores.columns) == ["path", "key", "label", "defect_type", "score", "predicted"]
    assert all(key == "brick/test/" + "/".join(path.split("/")[-2:]) for path, key in zip(scores["path"], scores["key"]))
    split, timing, metrics = record["split"], record["timing"], record["metrics"]
    assert (split["train_images"], split["val_images"]) == (6, 2) and split["val_source"] == "train"
    assert len(scores) == timing["test_images"] == split["test_images_good"] + split["test_images_defect"] == 6
    assert sorted(scores["defect_type"].unique()) == ["blob", "colour", "good", "scratch"]
    assert (scores["label"] == (scores["defect_type"] != "good")).all()
    # The record's image metrics are those of its own scores.csv, recomputed independently.
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-6)
    assert metrics["image_f1"] == pytest.approx(f1_score(scores["label"], scores["predicted"]), abs=1e-6)
    assert (scores["predicted"] == (scores["score"] > metrics["image_threshold"])).all()
    assert metrics["image_f1_baseline"] == pytest.approx(2 * 3 / (3 + 6))
    for key in ("pixel_auroc", "pixel_aupro", "pixel_f1", "pixel_f1_max", "image_f1_max"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert timing["pipeline_img_per_s"] == pytest.approx(timing["test_images"] / timing["test_seconds"])
    assert timing["model_latency_ms_p90"] >= timing["model_latency_ms_median"] > 0
    assert timing["model_img_per_s"] > 0 and timing["fit_seconds"] > 0
    assert 0 < timing["test_model_seconds"] < timing["test_seconds"]  # forward passes timed within the pass
    assert record["config"]["evaluation"]["image_cache"] is True  # every image read from the cache, built up front
    assert timing["image_cache_images"] == split["train_images"] + split["val_images"] + timing["test_images"]
    assert 0 <= timing["image_cache_decoded"] <= timing["image_cache_images"] and timing["image_cache_seconds"] > 0
    assert timing["harness_ms_per_image"] == pytest.approx(
        (timing["test_seconds"] - timing["test_model_seconds"]) / timing["test_images"] * 1e3)
    assert all(timing[f"peak_mem_mb_{phase}"] > 0 for phase in ("training", "scoring", "timing"))
    for key in ("image_auroc", "image_f1", "pixel_auroc", "pixel_f1", "pixel_aupro"):  # intervals beside estimates
        assert metrics[f"{key}_ci_low"] <= metrics[key] + 1e-9 and metrics[key] <= metrics[f"{key}_ci_high"] + 1e-9, key
    assert metrics["ci_method"].startswith("BCa bootstrap, 1000 resamples")
    assert record["training"]["steps_run"] == 2
    assert record["environment"]["device"] == "cpu" and record["environment"]["anomalib_version"] == "2.7.0"
    assert record["config"]["model"]["name"] == model
    executed = nbformat.read(run_dir / "train_evaluate.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no anomaly-map figure in the notebook"
    assert (run_dir / "anomaly_maps.png").stat().st_size > 1000


def test_models_record_their_outside_inputs(finished):
    draem = records.read_record(finished / "runs/tiny/draem/demo/brick/seed0")
    assert draem["training"]["anomaly_source"] == "dir:data/source (4 images)"
    ead = records.read_record(finished / "runs/tiny/efficientad_s/demo/brick/seed0")
    assert ead["training"]["teacher"].startswith("random (seed 0)")


def test_rerun_skips_and_report_builds(finished):
    again = vadbench(finished, "run", "tiny.yaml", "--output", "runs")
    assert again.returncode == 0
    assert again.stderr.count("finished with the same config, skipped") == 2
    done = vadbench(finished, "report", "--runs", "runs", "--out", "report")
    assert done.returncode == 0, done.stderr[-3000:]
    per_category = pd.read_csv(finished / "report/tables/per_category.csv")
    assert sorted(per_category["model"]) == ["draem", "efficientad_s"]
    for model in ("draem", "efficientad_s"):
        record = records.read_record(finished / "runs/tiny" / model / "demo/brick/seed0")
        row = per_category.set_index("model").loc[model]
        assert math.isclose(row["image_auroc"], record["metrics"]["image_auroc"], abs_tol=1e-9)
    comparison = pd.read_csv(finished / "report/tables/comparison.csv")
    assert len(comparison) == 2
    html = (finished / "report/summary.html").read_text()
    assert "efficientad_s" in html and "draem" in html and "data:image/png;base64" in html
