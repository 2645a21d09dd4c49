"""The report's answer: dataset means with intervals and paired differences with verdicts, from records and scores.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from vadbench import records, stats
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

    group = {"experiment": "e", "dataset": "d", "model": "m", "protocol": "honest", "val_source": "train",
             "pixel_protocol": "input"}
    refs = pd.DataFrame([{**group, "category": "(mean)", "external": True, "image_auroc": v} for v in (0.50, 0.80, 0.99)]
                        + [{**group, "category": "(mean)", "external": False, "image_auroc": 0.8}])
    means = pd.DataFrame([{**group, "image_auroc": 0.8, "image_auroc_ci_low": 0.7, "image_auroc_ci_high": 0.9}])
    placed = beside_our_interval(refs, means)["image_auroc_vs_ours"].tolist()
    assert placed == ["below ours", "within noise", "above ours", ""]


def write_scores(folder, paths, labels, scores, key=True):
    table = pd.DataFrame({"path": paths, "label": labels, "defect_type": "x", "score": scores, "predicted": 0})
    if key:  # as runs write it now; without it (records made before) the report derives keys from the paths
        table.insert(1, "key", [records.image_key(p, p.split("/")[-4], "visa") for p in paths])
    table.to_csv(folder / "scores.csv", index=False)


def write_visa_run(root, model, paths, labels, scores, key=True, seed=0, category="candle"):
    folder = run_dir(root, "exp", model, "visa", category, seed)
    folder.mkdir(parents=True)
    write_scores(folder, paths, labels, scores, key)
    write_record(folder, {"status": "ok", "experiment": "exp", "model": model, "dataset": "visa", "dataset_kind": "visa",
                          "category": category, "seed": seed, "protocol": "honest", "pixel_protocol": "input",
                          "split": {"val_source": "train"}, "metrics": {"image_auroc": roc_auc_score(labels, scores)}})
    return folder


def visa_paths(root: str, n_good=20, n_bad=25, category="candle"):
    return ([f"{root}/visa_pytorch/{category}/test/good/{i:04d}.JPG" for i in range(n_good)]
            + [f"{root}/visa_pytorch/{category}/test/bad/{i:03d}.JPG" for i in range(n_bad)])


def test_runs_made_under_different_roots_pair_on_their_images(tmp_path):
    """Two Kaggle shards converted VisA in their own scratch folders: scores.csv names each image by two paths. The
    comparison pairs them by key, and a run folder copied with its paths rewritten under another root (and without
    a key column, like records made before) pairs with the original."""
    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(20, int), np.ones(25, int)]
    weak, strong = rng.normal(labels * 0.5, 1.0), rng.normal(labels * 2.0, 1.0)
    write_visa_run(tmp_path, "padim", visa_paths("/kaggle/tmp/shard-a/visa"), labels, weak)
    write_visa_run(tmp_path, "draem", visa_paths("/kaggle/tmp/shard-b/visa"), labels, strong)
    moved = visa_paths("/home/me/datasets/VisA_20220922")  # the padim run copied, its paths under another root
    order = rng.permutation(len(labels))  # and in another order
    write_visa_run(tmp_path, "padim_copy", [moved[i] for i in order], labels[order], weak[order], key=False)
    frame = records_frame(load_records(tmp_path))
    tables = uncertainty.answer_tables(frame, resamples=500)
    diffs = tables["answer_differences"].set_index(["a", "b"])
    real = diffs.loc[("exp: draem", "exp: padim")]
    assert real["n_images"] == len(labels) and real["note"] == ""
    assert real["delta"] == pytest.approx(roc_auc_score(labels, weak) - roc_auc_score(labels, strong))
    assert real["ci_high"] < 0 and real["verdict"] == "draem higher"
    copy = diffs.loc[("exp: padim", "exp: padim_copy")]
    assert copy["n_images"] == len(labels) and copy["delta"] == 0 and copy["verdict"] == "within noise"


def test_runs_sharing_no_image_say_why_and_the_report_goes_on(tmp_path):
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(20, int), np.ones(25, int)]
    write_visa_run(tmp_path, "padim", visa_paths("/a/visa"), labels, rng.normal(labels, 1.0))
    other = [p.replace(".JPG", "_other.JPG") for p in visa_paths("/b/visa")]  # other images altogether
    write_visa_run(tmp_path, "draem", other, labels, rng.normal(labels, 1.0))
    write_visa_run(tmp_path, "draem", visa_paths("/a/visa", category="pcb1"), labels, rng.normal(labels, 1.0),
                   category="pcb1")  # a category only one model ran
    frame = records_frame(load_records(tmp_path))
    tables = uncertainty.answer_tables(frame, resamples=200)
    (row,) = tables["answer_differences"].to_dict("records")
    assert row["verdict"] == row["verdict_holm"] == "not compared" and np.isnan(row["delta"])
    assert row["note"] == "candle: no test image in common (the runs name different images)"
    assert tables["answer_means"]["image_auroc"].notna().all()  # each model's own mean is still there
    from vadbench.report import figures, views

    figures.forest_figure(tables["answer_differences"]).canvas.draw()
    html = views.show(views.answer_view(tables["answer_differences"]))._repr_html_()
    assert "not\u00a0compared" in html and "no test image in common" in html  # short cells kept on one line
    assert "0 comparisons" in views.comparisons_text(tables["answer_differences"])
    assert "1 pair(s) could not be compared" in views.comparisons_text(tables["answer_differences"])


def test_several_seeds_enter_the_interval(tmp_path):
    """Two seeds that disagree: the estimate is their mean and the interval, which resamples seeds too, is wider
    than either seed's alone."""
    rng = np.random.default_rng(6)
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    noise = rng.normal(0, 1.0, len(labels))
    seeds = {0: labels * 0.4 + noise, 1: labels * 2.5 + noise}
    for seed, scores in seeds.items():
        write_visa_run(tmp_path / "both", "m", visa_paths("/d", 30, 30), labels, scores, seed=seed)
        write_visa_run(tmp_path / f"only{seed}", "m", visa_paths("/d", 30, 30), labels, scores, seed=seed)
    both, *alone = (uncertainty.answer_means(records_frame(load_records(tmp_path / name))).iloc[0]
                    for name in ("both", "only0", "only1"))
    assert both["n_seeds"] == 2 and alone[0]["n_seeds"] == 1
    assert both["image_auroc"] == pytest.approx(np.mean([roc_auc_score(labels, s) for s in seeds.values()]))
    width = both["image_auroc_ci_high"] - both["image_auroc_ci_low"]
    assert all(width > one["image_auroc_ci_high"] - one["image_auroc_ci_low"] for one in alone)
    assert both["image_auroc_ci_low"] < roc_auc_score(labels, seeds[0]) < roc_auc_score(labels, seeds[1]) \
        < both["image_auroc_ci_high"]  # the interval spans both seeds' values: training noise is in it


def test_holm_adjusts_as_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 × 0.005, 3 × 0.01, 2 × 0.03, then max(0.06, 1 × 0.04)
    assert uncertainty.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(uncertainty.holm(p)[4])


def test_p_values_agree_with_the_intervals_and_holm_counts_every_comparison(study):
    frame, _ = study
    diffs = uncertainty.answer_differences(frame)
    assert len(diffs) == 3 and diffs["p_value"].notna().all()
    for _, row in diffs.iterrows():
        assert (row["p_value"] < 0.05) == (not row["ci_low"] <= 0 <= row["ci_high"])
        assert row["p_holm"] >= row["p_value"]
        if row["p_holm"] >= 0.05:
            assert row["verdict_holm"] == "within noise"
    real = diffs.set_index(["a", "b"]).loc[("exp: strong", "exp: weak")]
    assert real["p_holm"] == pytest.approx(min(1.0, 3 * real["p_value"]), rel=1e-9) or real["p_value"] <= 1e-6


def test_a_perfect_mean_keeps_a_width_set_by_the_test_set(tmp_path):
    labels = np.r_[np.zeros(15, int), np.ones(15, int)]
    write_visa_run(tmp_path, "perfect", visa_paths("/d", 15, 15), labels, labels * 10.0)
    write_visa_run(tmp_path, "twin", visa_paths("/d", 15, 15), labels, labels * 20.0)
    tables = uncertainty.answer_tables(records_frame(load_records(tmp_path)), resamples=500)
    mean = tables["answer_means"].iloc[0]
    assert mean["image_auroc"] == mean["image_auroc_ci_high"] == 1.0
    assert mean["image_auroc_ci_low"] == pytest.approx(stats.score_interval([1.0], [15], [15])[0])
    assert mean["image_auroc_ci_low"] < 0.9
    (diff,) = tables["answer_differences"].to_dict("records")  # both perfect: a difference of 0 is not certain
    assert diff["delta"] == 0 and diff["ci_low"] < -0.05 and diff["ci_high"] > 0.05


def test_the_answer_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, vadbench.report.pairing, vadbench.report.uncertainty, vadbench.report.views; "
            "bad = [m for m in ('torch', 'anomalib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
