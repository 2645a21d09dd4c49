"""The study's protocol replayed beside ours on one fast run: validation on the test set, anomalib's adaptive
F1 thresholds, and records that say so."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from vadbench import config, records
from vadbench.data.demo import DemoSpec, build_demo_dataset
from vadbench.run import evaluate

pytestmark = pytest.mark.slow


def experiment(root, protocol: str, val_source: str, pixel_protocol: str = "input") -> config.RunSpec:
    exp = {"name": f"{protocol}-{pixel_protocol}", "device": "cpu",
           "datasets": [{"name": "demo", "kind": "demo", "root": str(root / "demo"), "categories": ["brick"],
                         "val_source": val_source}],
           "models": [{"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 8},
                       "params": {"backbone": "mobilenet_v2", "layers": ["features.3", "features.6"], "n_features": 20}}],
           "evaluation": {"protocol": protocol, "pixel_protocol": pixel_protocol, "eval_batch_size": 8,
                          "timing_warmup": 0, "timing_iterations": 1}}
    path = root / f"{protocol}-{pixel_protocol}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return config.expand_runs(config.load_experiment(path))[0]


def test_replay_beside_honest(tmp_path):
    build_demo_dataset(tmp_path / "demo", DemoSpec(categories=("brick",), crop=96, n_train=10,
                                                                      n_test_good=6, n_test_defect=6))
    results = {}
    for protocol, val_source in (("honest", "train"), ("study_replay", "test")):
        run = experiment(tmp_path, protocol, val_source)
        out = tmp_path / "runs" / protocol
        evaluate.save_result(evaluate.train_and_evaluate(run, out), out)
        results[protocol] = (records.read_record(out), run)
    honest, replay = results["honest"][0], results["study_replay"][0]
    assert (honest["protocol"], replay["protocol"]) == ("honest", "study_replay")
    assert honest["metrics"]["threshold_method"].endswith("of held-out train images")
    assert replay["metrics"]["threshold_method"] == "anomalib F1AdaptiveThreshold on the test set (anomalib's same_as_test)"
    assert replay["split"]["val_images"] == replay["split"]["test_images_good"] + replay["split"]["test_images_defect"]
    assert replay["split"]["val_source"] == "test" and honest["split"]["val_source"] == "train"
    # validation = test: the replay's image threshold is the F1-best one on its own test scores (leak and all)
    import pandas as pd

    scores = pd.read_csv(tmp_path / "runs/study_replay/scores.csv")
    labels, values = scores["label"].to_numpy().astype(bool), scores["score"].to_numpy()
    f1 = [2 * np.sum((values >= t) & labels) / (np.sum(values >= t) + labels.sum()) for t in np.unique(values)]
    assert replay["metrics"]["image_threshold"] == pytest.approx(np.unique(values)[int(np.argmax(f1))], rel=1e-6)
    assert replay["config_hash"] != honest["config_hash"]


def test_pixel_protocol_original_is_recorded_and_used(tmp_path):
    build_demo_dataset(tmp_path / "demo", DemoSpec(categories=("brick",), crop=96, n_train=10,
                                                                      n_test_good=4, n_test_defect=4))
    run = experiment(tmp_path, "honest", "train", pixel_protocol="original")  # 96-px masks, 64-px maps
    out = tmp_path / "runs"
    evaluate.save_result(evaluate.train_and_evaluate(run, out), out)
    record = records.read_record(out)
    assert record["pixel_protocol"] == "original" and "at each mask's original size" in record["metrics"]["ci_method"]
    for key in ("pixel_auroc", "pixel_f1", "pixel_f1_max", "pixel_aupro"):
        assert 0.0 <= record["metrics"][key] <= 1.0, key
    assert run.config()["evaluation"]["pixel_protocol"] == "original"
