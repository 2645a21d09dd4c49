"""The study's protocol replayed beside ours on one fast run: validation on the test set, anomalib's adaptive
F1 thresholds, and records that say so."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from vadbench import config, records
from vadbench.data import demo as demo_data
from vadbench.run import evaluate

pytestmark = pytest.mark.slow


def experiment(root, protocol: str, val_source: str) -> config.RunSpec:
    exp = {"name": protocol, "device": "cpu",
           "datasets": [{"name": "demo", "kind": "demo", "root": str(root / "demo"), "categories": ["brick"],
                         "val_source": val_source}],
           "models": [{"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 8},
                       "params": {"backbone": "mobilenet_v2", "layers": ["features.3", "features.6"], "n_features": 20}}],
           "evaluation": {"protocol": protocol, "eval_batch_size": 8, "timing_warmup": 0, "timing_iterations": 1}}
    path = root / f"{protocol}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return config.expand_runs(config.load_experiment(path))[0]


def test_replay_beside_honest(tmp_path):
    demo_data.build_demo_dataset(tmp_path / "demo", demo_data.DemoSpec(categories=("brick",), crop=64, n_train=10,
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
