"""The report's tables on a small study with known values: two experiments (one with two seeds),
two models, two datasets, a failed run, a missing category, a mixed config and reference numbers.
Every expected number is computed here from the values written into the records."""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from statistics import fmean, stdev

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

import chromium  # noqa: E402
from vadbench.records import METRICS, load_records, records_frame, run_dir, write_record  # noqa: E402
from vadbench.report import breakdowns, build, export, figures, tables  # noqa: E402

SEEDS = {"base": (0, 1), "half": (0,)}
MODELS = {"draem": ("draem", ""), "efficientad_s": ("efficientad", "small")}
DATASETS = {"dsA": ("mvtec_ad", ("carpet", "grid")), "dsB": ("demo", ("c1", "c2", "c3"))}
FAILED = ("base", "draem", "dsB", "c2", 1)  # failed: in no table but the failed-runs list
MISSING = ("half", "efficientad_s", "dsB", "c3")  # never run: that mean covers fewer categories
MIXED = ("half", "dsA", "draem")  # its grid run used another beta
ERROR = "RuntimeError: CUDA out of memory"
PROTOCOL = {"base": ("honest", "train", "input"), "half": ("study_replay", "test", "original")}  # half: a replay
REFERENCE = {
    "references": [
        {"citation": "DRAEM paper", "model_kind": "draem", "dataset_kind": "mvtec_ad", "dataset_label": "MVTec AD",
         "mean": {"image_auroc": 0.98, "pixel_auroc": 0.973}, "categories": {"carpet": {"image_auroc": 0.97}}},
        {"citation": "EfficientAD paper", "model_kind": "efficientad", "model_size": "small",
         "dataset_kind": "mvtec_ad", "mean": {"image_auroc": 0.988, "model_latency_ms_median": 2.2}},
        {"citation": "EfficientAD paper", "model_kind": "efficientad", "model_size": "medium",
         "dataset_kind": "mvtec_ad", "mean": {"image_auroc": 0.991}},
    ]
}
GROUP = ("experiment", "dataset", "model")


def value(exp: str, model: str, dataset: str, category: str, seed: int, metric: str) -> float:
    i = (list(SEEDS).index(exp), list(MODELS).index(model), list(DATASETS).index(dataset))
    c = DATASETS[dataset][1].index(category)
    return round(0.30 + 0.10 * i[0] + 0.13 * i[1] + 0.05 * i[2] + 0.04 * c + 0.031 * seed
                 + 0.011 * METRICS.index(metric), 6)


def timing(exp: str, model: str, dataset: str, category: str, seed: int) -> dict[str, float]:
    c = DATASETS[dataset][1].index(category)
    m = list(MODELS).index(model)
    images = 15 + 10 * c + 5 * m + 2 * seed
    seconds = 2.0 + 1.25 * c + 3.5 * m + 0.5 * seed + (0.25 if exp == "half" else 0.0)
    return {"test_images": images, "test_seconds": seconds, "pipeline_img_per_s": images / seconds,
            "model_latency_ms_median": 10.0 + c + 20 * m + seed, "model_img_per_s": 50.0 + 5 * c + 100 * m - seed,
            "fit_seconds": 60.0 + c}


def cells():
    for exp, seeds in SEEDS.items():
        for model, (dataset, (_kind, categories)) in itertools.product(MODELS, DATASETS.items()):
            for category, seed in itertools.product(categories, seeds):
                if (exp, model, dataset, category) != MISSING:
                    yield exp, model, dataset, category, seed


def image_scores(model: str, category: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of a run's 12 good and 14 defective test images: efficientad_s separates them better."""
    labels = np.r_[np.zeros(12, int), np.ones(14, int)]
    rng = np.random.default_rng(list(MODELS).index(model) * 100 + sum(map(ord, category)) + 7 * seed)
    return labels, rng.normal(labels * (0.8 + 1.6 * list(MODELS).index(model)), 1.0)


def write_scores(directory: Path, root: Path, exp: str, model: str, dataset: str, category: str, seed: int) -> None:
    """scores.csv with the image paths under a root of its own per experiment (as runs made on different machines)."""
    labels, scores = image_scores(model, category, seed)
    paths = [f"{root}/{exp}-machine/{dataset}/{category}/test/{'defect' if y else 'good'}/{i:03d}.png"
             for i, y in enumerate(labels)]
    pd.DataFrame({"path": paths, "label": labels, "score": scores}).to_csv(directory / "scores.csv", index=False)


def make_study(root: Path) -> dict:
    """Write params, references and records; return the ok runs' values by (exp, model, dataset, category, seed)."""
    (root / "refs.yaml").write_text(yaml.safe_dump(REFERENCE))
    for exp in SEEDS:
        (root / f"{exp}.yaml").write_text(yaml.safe_dump({"name": exp, "references": [str(root / "refs.yaml")]}))
    truth = {}
    for exp, model, dataset, category, seed in cells():
        kind, size = MODELS[model]
        beta = [0.2, 1.0] if (exp, dataset, model) == MIXED and category == "grid" else [0.1, 1.0]
        config = {"experiment": exp, "category": category, "seed": seed,
                  "model": {"name": model, "kind": kind},
                  "model_params": {"model_size": size} if size else {"beta": beta},
                  "dataset": {"name": dataset, "kind": DATASETS[dataset][0]}}
        protocol, val_source, pixel_protocol = PROTOCOL[exp]
        record = {"status": "ok", "error": None, "experiment": exp, "model": model, "dataset": dataset,
                  "dataset_kind": DATASETS[dataset][0], "category": category, "seed": seed,
                  "protocol": protocol, "pixel_protocol": pixel_protocol, "split": {"val_source": val_source},
                  "params_file": str(root / f"{exp}.yaml"), "config": config,
                  "metrics": {m: value(exp, model, dataset, category, seed, m) for m in METRICS},
                  "timing": timing(exp, model, dataset, category, seed)}
        directory = run_dir(root / "runs", exp, model, dataset, category, seed)
        if (exp, model, dataset, category, seed) == FAILED:
            record.update(status="failed", error=ERROR, metrics={"image_auroc": 0.0})
        else:
            truth[(exp, model, dataset, category, seed)] = {**record["metrics"], **record["timing"]}
            directory.mkdir(parents=True, exist_ok=True)
            write_scores(directory, root, exp, model, dataset, category, seed)
            shade = (40 * list(MODELS).index(model) + 60, 120, 30 * seed + 90)
            directory.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (80, 60), shade).save(directory / "anomaly_maps.png")
        write_record(directory, record)
    return truth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    truth = make_study(root)
    frame = records_frame(load_records(root / "runs"))
    results = tables.report_tables_for(frame, [root / "refs.yaml"], baseline="base")
    return root, truth, frame, results


def seed_values(truth, exp, model, dataset, category, field):
    return [v[field] for k, v in truth.items() if k[:4] == (exp, model, dataset, category) and field in v]


def cell_mean(truth, exp, model, dataset, category, field):
    values = seed_values(truth, exp, model, dataset, category, field)
    return fmean(values) if values else math.nan


def categories_of(truth, exp, model, dataset):
    return sorted({k[3] for k in truth if k[:3] == (exp, model, dataset)})


def approx(want):
    return pytest.approx(want, rel=1e-9, abs=1e-12)


def test_category_results_mean_std_seeds(study):
    _, truth, _, results = study
    table = results["category_results"]
    assert list(table.columns) == list(breakdowns.RESULT_COLUMNS)
    assert len(table) == len({k[:4] for k in truth}) == 19
    for _, row in table.iterrows():
        key = (row["experiment"], row["model"], row["dataset"], row["category"])
        assert row["n_seeds"] == len(seed_values(truth, *key, "image_auroc"))
        for metric in METRICS:
            values = seed_values(truth, *key, metric)
            assert row[metric] == approx(fmean(values)), (key, metric)
            if len(values) > 1:
                assert row[f"{metric}_std"] == approx(stdev(values))
            else:
                assert math.isnan(row[f"{metric}_std"])
    failed = table.set_index(["experiment", "model", "dataset", "category"]).loc[FAILED[:4]]
    assert failed["n_seeds"] == 1  # the failed seed is not counted
    text = breakdowns.mean_std_text(table)
    row = text.loc[(table["experiment"] == "base") & (table["category"] == "carpet") & (table["model"] == "draem")]
    values = seed_values(truth, "base", "draem", "dsA", "carpet", "image_auroc")
    assert row["image_auroc"].item() == f"{fmean(values):.3f} ± {stdev(values):.3f}"


def test_category_speed_totals(study):
    _, truth, _, results = study
    table = results["category_speed"]
    assert list(table.columns) == list(breakdowns.SPEED_COLUMNS)
    for _, row in table.iterrows():
        key = (row["experiment"], row["model"], row["dataset"], row["category"])
        images = sum(seed_values(truth, *key, "test_images"))
        seconds = sum(seed_values(truth, *key, "test_seconds"))
        assert (row["test_images"], row["test_seconds"]) == (images, approx(seconds))
        assert row["s_per_img"] == approx(seconds / images)
        assert row["img_per_s"] == approx(images / seconds)
        assert row["model_latency_ms_median"] == approx(fmean(seed_values(truth, *key, "model_latency_ms_median")))
        assert row["model_img_per_s"] == approx(fmean(seed_values(truth, *key, "model_img_per_s")))


def test_comparison_means_totals_and_flags(study):
    _, truth, _, results = study
    table = results["comparison"].set_index(list(GROUP))
    assert len(table) == 8
    for (exp, dataset, model), row in table.iterrows():
        categories = categories_of(truth, exp, model, dataset)
        assert row["n_categories"] == len(categories)
        for metric in METRICS:
            want = fmean(cell_mean(truth, exp, model, dataset, c, metric) for c in categories)
            assert row[metric] == approx(want), (exp, dataset, model, metric)
        runs = [v for k, v in truth.items() if k[:3] == (exp, model, dataset)]
        images, seconds = sum(v["test_images"] for v in runs), sum(v["test_seconds"] for v in runs)
        assert row["test_images"] == images and row["test_seconds"] == approx(seconds)
        assert row["s_per_img"] == approx(seconds / images) and row["img_per_s"] == approx(images / seconds)
        assert bool(row["incomplete"]) == ((exp, model, dataset) == MISSING[:3])
        assert bool(row["mixed_configs"]) == ((exp, dataset, model) == MIXED)
    assert table.loc[("half", "dsB", "efficientad_s"), "missing_categories"] == "c3"
    assert results["failed_runs"]["error"].tolist() == [ERROR]


def test_seed_summary(study):
    _, truth, _, results = study
    table = results["seeds"].set_index(list(GROUP))
    for (exp, dataset, model), row in table.iterrows():
        seeds = sorted({k[4] for k in truth if k[:3] == (exp, model, dataset)})
        assert row["n_seeds"] == len(seeds) == len(SEEDS[exp])
        assert row["seeds"] == ", ".join(map(str, seeds))
        for metric in ("image_auroc", "pixel_aupro"):
            per_seed = [fmean(v[metric] for k, v in truth.items() if k[:3] == (exp, model, dataset) and k[4] == s)
                        for s in seeds]
            assert row[metric] == approx(fmean(per_seed))
            if len(seeds) > 1:
                assert row[f"{metric}_std"] == approx(stdev(per_seed))
            else:
                assert math.isnan(row[f"{metric}_std"])


def test_experiment_deltas(study):
    _, truth, _, results = study
    deltas = results["experiment_deltas"]
    assert set(zip(deltas["experiment_a"], deltas["experiment_b"])) == {("base", "half")}
    by = deltas.set_index(["dataset", "model", "category", "metric"])
    for model, dataset in itertools.product(MODELS, DATASETS):
        common = sorted(set(categories_of(truth, "base", model, dataset)) & set(categories_of(truth, "half", model, dataset)))
        for metric in ("image_auroc", "pixel_f1", "img_per_s"):
            a, b = [], []
            for category in common:
                if metric == "img_per_s":
                    pair = [sum(seed_values(truth, e, model, dataset, category, "test_images"))
                            / sum(seed_values(truth, e, model, dataset, category, "test_seconds")) for e in ("base", "half")]
                else:
                    pair = [cell_mean(truth, e, model, dataset, category, metric) for e in ("base", "half")]
                row = by.loc[(dataset, model, category, metric)]
                assert (row["value_a"], row["value_b"]) == (approx(pair[0]), approx(pair[1]))
                assert row["delta"] == approx(pair[1] - pair[0])
                a.append(pair[0])
                b.append(pair[1])
            mean = by.loc[(dataset, model, breakdowns.MEAN_LABEL, metric)]
            assert mean["n_categories"] == len(common)
            assert mean["delta"] == approx(fmean(b) - fmean(a))
    assert by.loc[("dsB", "efficientad_s", breakdowns.MEAN_LABEL, "image_auroc"), "n_categories"] == 2
    view = breakdowns.delta_view(deltas)
    assert len(view) == 4 and ("image_auroc", "delta") in view.columns


def test_config_check_names_the_difference(study):
    _, _, _, results = study
    check = results["config_check"].set_index(list(GROUP))
    assert check["mixed"].sum() == 1 and bool(check.loc[MIXED, "mixed"])
    assert check.loc[MIXED, "n_configs"] == 2
    assert check.loc[MIXED, "differing_keys"] == "model_params.beta"


def test_references_beside_ours(study):
    _, truth, _, results = study
    refs = results["references"]
    draem = refs.loc[(refs["experiment"] == "base") & (refs["dataset"] == "dsA") & (refs["model"] == "draem")]
    ours_mean = draem.loc[~draem["external"] & (draem["category"] == "(mean)")]
    want = fmean(cell_mean(truth, "base", "draem", "dsA", c, "image_auroc") for c in ("carpet", "grid"))
    assert ours_mean["image_auroc"].item() == approx(want)
    external = draem.loc[draem["external"].astype(bool)]
    assert sorted(zip(external["category"], external["image_auroc"])) == [("(mean)", 0.98), ("carpet", 0.97)]
    assert external["same_dataset"].all() and (external["source"] == "DRAEM paper").all()
    carpet = draem.loc[~draem["external"] & (draem["category"] == "carpet"), "image_auroc"].item()
    assert carpet == approx(cell_mean(truth, "base", "draem", "dsA", "carpet", "image_auroc"))
    # on the demo-kind dataset the MVTec numbers appear only as means, marked not the same dataset
    eff_b = refs.loc[(refs["experiment"] == "base") & (refs["dataset"] == "dsB") & (refs["model"] == "efficientad_s")]
    ext = eff_b.loc[eff_b["external"].astype(bool)]
    assert ext["image_auroc"].tolist() == [0.988] and not ext["same_dataset"].any()  # the medium one is not matched
    assert ext["model_latency_ms_median"].tolist() == [2.2]


def test_written_csvs_equal_the_tables(study, tmp_path):
    root, _, frame, results = study
    paths = tables.save_tables(results, tmp_path)
    assert {name: path.name for name, path in paths.items()} == tables.TABLE_FILES
    for name in ("category_results", "category_speed", "seeds", "experiment_deltas"):
        pd.testing.assert_frame_equal(pd.read_csv(paths[name]), results[name], check_dtype=False, atol=1e-12)


def test_the_answer_on_seeds_images_and_protocols(study, tmp_path):
    """Means average each category's seeds; runs scored under other roots pair on their images; an experiment pair
    crossing protocols says so and marks the replay; the CSVs carry the protocol columns."""
    from sklearn.metrics import roc_auc_score

    _, truth, _, results = study
    means = results["answer_means"].set_index(list(GROUP))
    for (exp, dataset, model), row in means.reset_index().set_index(list(GROUP)).iterrows():
        categories = categories_of(truth, exp, model, dataset)
        seeds = {c: sorted(k[4] for k in truth if k[:4] == (exp, model, dataset, c)) for c in categories}
        want = fmean(fmean(roc_auc_score(*image_scores(model, c, s)) for s in seeds[c]) for c in categories)
        assert row["image_auroc"] == approx(want) and row["n_categories"] == len(categories)
        assert row["image_auroc_ci_low"] < row["image_auroc"] < row["image_auroc_ci_high"]
        assert row["n_seeds"] == len(SEEDS[exp]) and bool(row["replay"]) == (exp == "half")
        assert tuple(row[["protocol", "val_source", "pixel_protocol"]]) == PROTOCOL[exp]
    diffs = results["answer_differences"]
    assert len(diffs) == 8 and diffs["p_value"].notna().all() and (diffs["p_holm"] >= diffs["p_value"]).all()
    cross = diffs.loc[diffs["experiment_a"] != diffs["experiment_b"]]
    assert len(cross) == 4 and cross["replay"].all() and cross["b"].str.endswith("[replay]").all()
    assert (cross["protocol_a"] == "honest").all() and (cross["protocol_b"] == "study_replay").all()
    dsa = cross.loc[(cross["dataset"] == "dsA") & (cross["model_a"] == "draem")].iloc[0]
    assert dsa["n_images"] == 2 * 26 and dsa["note"] == ""  # base-machine and half-machine paths, the same images
    paths = tables.save_tables(results, tmp_path)
    for name in ("per_category", "answer_means", "category_results", "comparison", "references"):
        written = pd.read_csv(paths[name])
        assert {"protocol", "val_source", "pixel_protocol", "replay"} <= set(written.columns), name
    per_category = pd.read_csv(paths["per_category"])
    assert per_category.loc[per_category["experiment"] == "half", "replay"].all()
    refs = results["references"]
    assert refs.loc[~refs["external"].astype(bool) & (refs["experiment"] == "half"), "replay"].all()


def test_readers_see_formatted_cells_and_titles(study):
    from vadbench.report import views

    _, _, _, results = study
    means = results["answer_means"]
    html = views.show(means)._repr_html_().replace("\u00a0", " ")  # numbers keep together: non-breaking spaces
    first = means.iloc[0]
    cell = f"{first['image_auroc']:.3f} [{first['image_auroc_ci_low']:.3f}, {first['image_auroc_ci_high']:.3f}]"
    assert cell in html and "image AUROC" in html and "thresholds from" in html and "held-out train images" in html
    assert "image_auroc_ci_low" not in html and "<th></th>" not in html  # no raw names, no index column
    assert "REPLAY" in views.show(results["per_category"])._repr_html_()
    titles = [title for title, _ in views.by_group(results["category_results"])]
    assert titles[0] == "base / dsA / draem — honest · thresholds: held-out train images · pixels: input size"
    assert titles[-1].startswith("half / dsB / efficientad_s — REPLAY · study_replay · thresholds: the test set")
    fig = figures.forest_figure(results["answer_differences"])
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(rows) == 8 and all(" − " in r for r in rows) and any("REPLAY" in r for r in rows)
    assert any(line.get_xdata()[0] == 0 for line in fig.axes[0].get_lines())  # the zero line


def test_figures_draw(study):
    _, truth, frame, _ = study
    fig = figures.delta_figure(frame, "base")
    heights = sorted(round(p.get_height(), 9) for ax in fig.axes for p in ax.patches if not np.isnan(p.get_height()))
    assert len(heights) == 4 * 9  # 4 metrics × (draem 5 + efficientad 4 common categories)
    grids = figures.qualitative_grids(frame)
    assert [title.split(" — ")[0] for title, _ in grids] == ["base / dsA", "base / dsB", "half / dsA", "half / dsB"]
    assert [title.split(" — ")[1].startswith("REPLAY") for title, _ in grids] == [False, False, True, True]
    assert grids[1][1].count("data:image/png;base64,") == 6  # 3 categories × 2 models
    assert "no run" in grids[3][1]  # efficientad_s never ran c3 in half


def test_no_reference_files():
    empty = tables.reference_table(records_frame([{"status": "ok", "model": "m", "dataset": "d"}]), [])
    assert empty.empty and list(empty.columns) == list(tables.REFERENCE_TABLE_COLUMNS)


def test_external_references_detected():
    page = ('<script src="https://cdn.x/require.js"></script><link rel="stylesheet" href="//fonts.x/a.css">'
            '<img src="data:image/png;base64,AAAA"><script type="module">import m from "https://cdn.x/m.mjs"</script>')
    found = export.external_references(page)
    assert len(found) == 3 and not any("data:image" in f for f in found)


def chromium_or_skip() -> None:
    if export.find_chromium() is not None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("Chromium is missing on CI: `make report-deps` (apt-get install chromium) must run first")
    pytest.skip("Chromium not installed (make report-deps); the HTML/PDF rendering check needs it")


@pytest.fixture(scope="module")
def built(study):
    chromium_or_skip()
    root, _, _, _ = study
    return build.build_report(root / "runs", root / "report", baseline="base")


def test_html_is_self_contained_and_renders(built, study):
    html = built["html"].read_text(encoding="utf-8")
    assert export.external_references(html) == []
    assert "<script src=" not in html and "cdnjs" not in html
    for heading in ("Per-category results", "Per-category speed", "Comparison", "Seeds", "Experiment vs experiment",
                    "Published reference numbers (external)", "Qualitative examples", "Failed runs",
                    "Mixed configurations", ERROR, "8 comparisons", "after Holm", "REPLAY", "thresholds from"):
        assert heading in html, heading
    assert re.search(r"0\.\d{3}\s\[0\.\d{3},\s0\.\d{3}\]", html)  # estimate [low, high]
    assert "image_auroc_ci_low" not in html and "image_f1_baseline" not in html  # human titles, not raw names
    rendered = chromium.check_rendered(built["html"])
    # differences, metrics, speed and delta figures + 19 qualitative cells (5 × 2 models per experiment, minus one)
    assert rendered["images"] == 4 + 19 and rendered["broken"] == 0
    assert rendered["tables"] >= 8 * 2 + 6 and rendered["height"] > 3000
    shot = chromium.screenshot(built["html"], built["html"].with_name("screenshot.png"))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1400)
    assert (pixels < 200).mean() > 0.01 and pixels.std() > 10  # text and tables, not a blank page


def test_pdf_has_the_report(built):
    from pypdf import PdfReader

    pdf = built["pdf"]
    assert pdf == pdf.with_name("summary.pdf") and export.pdf_pages(pdf) >= 3
    text = " ".join(page.extract_text() for page in PdfReader(str(pdf)).pages)
    for words in ("Per-category results", "Comparison", "external", "Failed runs", "REPLAY", "comparisons"):
        assert words in text, words
    assert re.search(r"0\.\d{3}\s\[0\.\d{3},\s0\.\d{3}\]", text)


def test_reference_file_is_strict(tmp_path):
    from vadbench.errors import ConfigError
    from vadbench.report.references import load_reference_file

    good = {"citation": "x", "model_kind": "draem", "dataset_kind": "mvtec_ad", "mean": {"image_auroc": 0.9}}
    for change, message in (({"mean": {"image_auroc": 98.0}}, "not a fraction"),
                            ({"mean": {"img_auroc": 0.9}}, "unknown metric references\\[0\\].mean.img_auroc"),
                            ({"paper": "y"}, "unknown key 'references\\[0\\].paper'")):
        path = tmp_path / "refs.yaml"
        path.write_text(yaml.safe_dump({"references": [{**good, **change}]}))
        with pytest.raises(ConfigError, match=message):
            load_reference_file(path)


def test_demo_params_name_the_published_references():
    from vadbench.config import load_experiment
    from vadbench.report.references import references_frame

    root = Path(__file__).resolve().parents[1]
    experiment = load_experiment(root / "params/experiments/demo.yaml")
    refs = references_frame([root / path for path in experiment.references])
    draem = refs.loc[(refs["model_kind"] == "draem") & (refs["category"] == "(mean)")]
    assert draem["image_auroc"].tolist() == [0.98]  # the paper's 98.0 %


def test_pdf_under_a_long_temporary_folder(tmp_path, monkeypatch):
    """A long $TMPDIR (a test's, a CI job's) once made Chromium abort: its socket path grew past the Unix limit."""
    if export.find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing on CI: `make report-deps` must run first")
        pytest.skip("Chromium not installed (make report-deps)")
    long_tmp = tmp_path / ("t" * 60) / ("m" * 40)
    long_tmp.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.setattr(export.tempfile, "tempdir", None)  # tempfile reads $TMPDIR afresh
    html = tmp_path / "page.html"
    html.write_text("<html><body><h1>vadbench</h1></body></html>")
    assert export.pdf_pages(export.print_pdf(html, tmp_path / "page.pdf", timeout_s=120)) == 1


def test_no_pdf_without_chromium(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(export.CHROMIUM_ENV, str(tmp_path / "no-such-chromium"))
    assert export.find_chromium() is None
    (tmp_path / "summary.pdf").write_bytes(b"stale")
    html = tmp_path / "summary.html"
    html.write_text("<html><body>x</body></html>")
    assert build._write_pdf(html, tmp_path / "summary.pdf") == {}
    assert not (tmp_path / "summary.pdf").exists() and "Chromium not found" in caplog.text


def test_foreign_records_through_every_table_and_figure(tmp_path):
    """Records lacking identity, config, timing and figures: every table and figure still builds."""
    write_record(tmp_path / "x", {"status": "ok", "model": "m", "dataset": "d", "metrics": {"image_auroc": 0.5}})
    write_record(run_dir(tmp_path, "e", "m", "d", "c", 0), {
        "status": "ok", "experiment": "e", "model": "m", "dataset": "d", "category": "c", "seed": 0,
        "metrics": {"image_auroc": 0.7}})
    frame = records_frame(load_records(tmp_path))
    results = tables.report_tables_for(frame, [], None)
    assert results["category_results"]["image_auroc"].tolist() == [0.7, 0.5]
    assert results["category_speed"]["test_images"].isna().all()  # never 0
    assert results["experiment_deltas"].empty and results["references"].empty
    assert not results["config_check"]["mixed"].any()
    grids = {title.split(" — ")[0]: grid for title, grid in figures.qualitative_grids(frame)}
    assert "no figure (anomaly_maps.png missing)" in grids["e / d"]
    figures.delta_figure(frame).canvas.draw()
    assert "2 run records" in tables.runs_overview(frame)
