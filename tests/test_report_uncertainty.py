"""The report's answer: dataset means with intervals and paired differences with verdicts, from records and scores.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vadbench.records import load_records, records_frame, run_dir, write_record
from vadbench.report import uncertainty

CATEGORIES = ("c1", "c2")


def write_run(root, experiment, model, category, labels, scores, pixel=(0.8, 0.75, 0.85), dataset="ds"):
    folder = run_dir(root, experiment, model, dataset, category, 0)
    folder.mkdir(parents=True)
    paths = [f"/data/{category}/{i}.png" for i in range(len(labels))]
    pd.DataFrame({"path": paths, "label": labels, "defect_type": "x", "score": scores,
                  "predicted": 0}).to_csv(folder / "scores.csv", index=False)
    write_record(folder, {"status": "ok", "experiment": experiment, "model": model, "dataset": dataset,
                          "category": category, "seed": 0,
                          "metrics": {"image_auroc": roc_auc_score(labels, scores), "pixel_auroc": pixel[0],
                                      "pixel_auroc_ci_low": pixel[1], "pixel_auroc_ci_high": pixel[2]}})


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for category in CATEGORIES:
        labels = np.r_[np.zeros(30, int), np.ones(40, int)]
        noisy = rng.normal(labels * 0.6, 1.0)  # AUROC around 0.66
        sharp = labels * 5.0 + rng.normal(0, 0.1, len(labels))  # AUROC 1
        for model, scores in (("weak", noisy), ("strong", sharp), ("twin", noisy.copy())):
            write_run(tmp_path, "exp", model, category, labels, scores)
            truth[(model, category)] = roc_auc_score(labels, scores)
    return records_frame(load_records(tmp_path)), truth


def test_dataset_means_with_intervals(study):
    frame, truth = study
    means = uncertainty.answer_means(frame).set_index("model")
    weak = means.loc["weak"]
    assert weak["image_auroc"] == pytest.approx(np.mean([truth[("weak", c)] for c in CATEGORIES]))
    assert weak["image_auroc_ci_low"] < weak["image_auroc"] < weak["image_auroc_ci_high"]
    assert weak["image_auroc_ci_high"] - weak["image_auroc_ci_low"] > 0.05  # 70 images per category: wide
    # pixel: runs' intervals (half-width 0.05 each, i.e. se 0.0255) combine to 1.96 * sqrt(2) * 0.0255 / 2
    assert weak["pixel_auroc_ci_high"] - weak["pixel_auroc"] == pytest.approx(1.96 * np.sqrt(2) * (0.05 / 1.96) / 2)
    older = frame.copy()
    older.loc[older["model"] == "weak", "pixel_auroc_ci_low"] = np.nan  # a record from before intervals
    assert np.isnan(uncertainty.answer_means(older).set_index("model").loc["weak", "pixel_auroc_ci_low"])


def test_differences_say_which_are_real(study):
    frame, truth = study
    diffs = uncertainty.answer_differences(frame).set_index(["a", "b"])
    real = diffs.loc[("exp: strong", "exp: weak")]  # sorted names: a = strong, b = weak
    assert real["delta"] == pytest.approx(np.mean([truth[("weak", c)] - truth[("strong", c)] for c in CATEGORIES]))
    assert real["ci_high"] < 0 and real["verdict"] == "strong higher"
    same = diffs.loc[("exp: twin", "exp: weak")]  # identical scores: a difference of exactly 0
    assert same["delta"] == 0 and same["verdict"] == "within noise"


def test_the_studys_conclusions_are_checked_on_the_records(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(30, int), np.ones(40, int)]
    weak, sharp = rng.normal(labels * 0.3, 1.0), labels * 5.0 + rng.normal(0, 0.1, len(labels))
    for dataset in ("mvtec_ad", "wfdd"):
        for category in CATEGORIES:
            write_run(tmp_path, "study_baseline", "draem", category, labels, weak, dataset=dataset)
            write_run(tmp_path, "study_baseline", "efficientad_s", category, labels, sharp, dataset=dataset)
            write_run(tmp_path, "study_undersample", "efficientad_s", category, labels, sharp, dataset=dataset)
    tables = uncertainty.answer_tables(records_frame(load_records(tmp_path)))
    claims = tables["study_claims"].set_index("claim")["check"]
    assert claims["EfficientAD beats DRÆM on MVTec AD"] == "supported"
    assert claims["On WFDD DRÆM leads image AUROC"] == "contradicted"  # here EfficientAD leads, beyond noise
    assert claims["EfficientAD beats DRÆM on VisA"].startswith("not run")
    assert claims["Undersampling costs EfficientAD at most ~5 % on mvtec_ad"] == "supported"  # no loss at all


def test_external_numbers_are_placed_against_our_interval():
    from vadbench.report.tables import beside_our_interval

    refs = pd.DataFrame([{"experiment": "e", "dataset": "d", "model": "m", "category": "(mean)", "external": True,
                          "image_auroc": v} for v in (0.50, 0.80, 0.99)]
                        + [{"experiment": "e", "dataset": "d", "model": "m", "category": "(mean)", "external": False,
                            "image_auroc": 0.8}])
    means = pd.DataFrame([{"experiment": "e", "dataset": "d", "model": "m", "image_auroc": 0.8,
                           "image_auroc_ci_low": 0.7, "image_auroc_ci_high": 0.9}])
    placed = beside_our_interval(refs, means)["image_auroc_vs_ours"].tolist()
    assert placed == ["below ours", "within noise", "above ours", ""]
