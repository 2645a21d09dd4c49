"""Report tables, figures and the HTML build, checked against values computed here by hand."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from statistics import fmean

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vadbench.cli import main as cli_main  # noqa: E402
from vadbench.records import METRICS, load_records, records_frame, run_dir, write_record  # noqa: E402
from vadbench.report import build, figures, tables  # noqa: E402
from vadbench.report.markdown import COLUMNS as MARKDOWN_COLUMNS

EXPERIMENT = "bench"
MODELS = ("draem", "efficientad_s")
DATASETS = {"dsA": ("a1", "a2", "a3"), "dsB": ("b1", "b2")}
FAILED = ("efficientad_s", "dsB", "b2")  # this run failed: excluded from every mean
SPARSE = ("draem", "dsA", "a3")  # this record lacks pixel_aupro, model_img_per_s, model_latency_ms_median
ERROR = "RuntimeError: CUDA out of memory (boom)"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "summary.ipynb"


def metric_value(model: str, dataset: str, category: str, metric: str) -> float:
    """Distinct, known metric values in (0, 1)."""
    m, d = MODELS.index(model), list(DATASETS).index(dataset)
    c, k = DATASETS[dataset].index(category), METRICS.index(metric)
    return round(0.40 + 0.11 * m + 0.07 * d + 0.05 * c + 0.013 * k, 6)


def timing_value(model: str, dataset: str, category: str) -> dict[str, float]:
    m, d = MODELS.index(model), list(DATASETS).index(dataset)
    c = DATASETS[dataset].index(category)
    images = 20 + 7 * c + 5 * d + 3 * m
    seconds = 1.5 + 0.75 * c + 0.5 * d + 2.25 * m
    return {
        "fit_seconds": 30.0 + 10 * c + m,
        "test_images": images,
        "test_seconds": seconds,
        "pipeline_img_per_s": images / seconds,
        "pipeline_batch_size": 8,
        "model_latency_ms_median": 4.0 + c + 10 * m,
        "model_latency_ms_p90": 5.0 + c + 10 * m,
        "model_img_per_s": 100.0 + 10 * c + 50 * d + 300 * m,
        "harness_ms_per_image": 0.5 + 0.25 * c + m,
    }


def make_runs(root: Path) -> dict[tuple[str, str, str], dict]:
    """Write the records; return the ok runs' metrics and timing as plain dicts (the truth)."""
    truth = {}
    for model in MODELS:
        for dataset, categories in DATASETS.items():
            for category in categories:
                key = (model, dataset, category)
                record = {
                    "status": "ok", "error": None, "experiment": EXPERIMENT, "model": model,
                    "model_class": "Draem" if model == "draem" else "EfficientAd",
                    "dataset": dataset, "dataset_kind": "demo", "category": category, "seed": 0,
                    "image_size": 64, "config_hash": "0123456789abcdef", "config": {"x": 1},
                    "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:01:00Z",
                    "metrics": {m: metric_value(model, dataset, category, m) for m in METRICS},
                    "timing": timing_value(model, dataset, category),
                    "environment": {"device": "cpu", "device_name": "test cpu", "torch_version": "2.10"},
                }
                if key == FAILED:
                    record.update(status="failed", error=ERROR,
                                  metrics={"image_auroc": 0.0},  # must never enter a mean
                                  timing={"fit_seconds": 5.0, "test_images": 1000, "test_seconds": 1.0})
                else:
                    if key == SPARSE:
                        del record["metrics"]["pixel_aupro"]
                        for field in ("model_img_per_s", "model_latency_ms_median"):
                            del record["timing"][field]
                    truth[key] = {**record["metrics"], **record["timing"]}
                write_record(run_dir(root, EXPERIMENT, model, dataset, category, 0), record)
    return truth


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    truth = make_runs(root)
    return root, truth, records_frame(load_records(root))


def expected_comparison(truth):
    rows = {}
    for model in MODELS:
        for dataset in DATASETS:
            keys = [k for k in truth if k[:2] == (model, dataset)]
            row = {"n_categories": len(keys)}
            for metric in METRICS:
                values = [truth[k][metric] for k in keys if metric in truth[k]]
                row[metric] = fmean(values)
            images = sum(truth[k]["test_images"] for k in keys)
            seconds = sum(truth[k]["test_seconds"] for k in keys)
            row.update(test_images=images, test_seconds=seconds, s_per_img=seconds / images,
                       img_per_s=images / seconds,
                       model_img_per_s=fmean(truth[k]["model_img_per_s"] for k in keys
                                             if "model_img_per_s" in truth[k]))
            rows[(EXPERIMENT, dataset, model)] = row
    return rows


def assert_csv_matches(path: Path, table: pd.DataFrame) -> None:
    """A CSV table equals the in-memory one (an empty text cell reads back as NaN)."""
    text = ["missing_categories", "partial_metrics"]
    read = pd.read_csv(path)
    read[text] = read[text].fillna("")
    pd.testing.assert_frame_equal(read, table, check_dtype=False)


def test_per_category_table(runs):
    _, truth, frame = runs
    table = tables.per_category_table(frame)
    assert list(table.columns) == list(tables.PER_CATEGORY_COLUMNS)
    assert len(table) == len(truth) == 9  # 10 runs, the failed one left out
    assert FAILED not in set(zip(table["model"], table["dataset"], table["category"]))
    for _, row in table.iterrows():
        expected = truth[(row["model"], row["dataset"], row["category"])]
        for metric in METRICS:
            if metric in expected:
                assert row[metric] == pytest.approx(expected[metric])
        assert row["test_images"] == expected["test_images"]
        assert row["test_seconds"] == pytest.approx(expected["test_seconds"])
        assert row["s_per_img"] == pytest.approx(expected["test_seconds"] / expected["test_images"])
        assert row["pipeline_img_per_s"] == pytest.approx(expected["test_images"] / expected["test_seconds"])
        assert row["fit_seconds"] == pytest.approx(expected["fit_seconds"])
    sparse = table.set_index(["model", "dataset", "category"]).loc[SPARSE]
    # missing fields are NaN, never zero
    assert math.isnan(sparse["pixel_aupro"])
    assert math.isnan(sparse["model_img_per_s"])
    assert math.isnan(sparse["model_latency_ms_median"])
    assert sparse["image_auroc"] == pytest.approx(truth[SPARSE]["image_auroc"])


def test_comparison_table(runs):
    _, truth, frame = runs
    table = tables.comparison_table(frame)
    assert list(table.columns) == list(tables.COMPARISON_COLUMNS)
    expected = expected_comparison(truth)
    assert len(table) == len(expected) == 4
    for _, row in table.iterrows():
        want = expected[(row["experiment"], row["dataset"], row["model"])]
        assert row["n_categories"] == want["n_categories"]
        for column in (*METRICS, "test_images", "test_seconds", "s_per_img", "img_per_s", "model_img_per_s"):
            assert row[column] == pytest.approx(want[column]), column
    by = table.set_index(["dataset", "model"])
    # the failed run (image_auroc 0.0, 1000 images in 1 s) is nowhere in the numbers
    eff_b = by.loc[("dsB", "efficientad_s")]
    assert eff_b["n_categories"] == 1 and eff_b["n_runs"] == 1
    assert eff_b["image_auroc"] == pytest.approx(truth[("efficientad_s", "dsB", "b1")]["image_auroc"])
    assert eff_b["test_images"] == truth[("efficientad_s", "dsB", "b1")]["test_images"]
    # img/s is total images / total seconds, not the mean of the per-run rates
    keys = [("draem", "dsA", c) for c in DATASETS["dsA"]]
    mean_of_rates = fmean(truth[k]["test_images"] / truth[k]["test_seconds"] for k in keys)
    assert by.loc[("dsA", "draem"), "img_per_s"] != pytest.approx(mean_of_rates)
    # a mean over fewer categories than the other model is marked
    assert bool(eff_b["incomplete"]) and eff_b["missing_categories"] == "b2"
    assert not by.loc[("dsB", "draem"), "incomplete"]
    assert not by.loc[("dsA", "draem"), "incomplete"] and not by.loc[("dsA", "efficientad_s"), "incomplete"]
    # pixel_aupro of draem/dsA is over the two categories that have it, and says so
    assert by.loc[("dsA", "draem"), "partial_metrics"] == "pixel_aupro"
    assert by.loc[("dsA", "efficientad_s"), "partial_metrics"] == ""


def test_comparison_means_over_categories_then_seeds(tmp_path):
    """Unequal seeds per category: the mean is over categories of the per-category seed means."""
    for category, seed, value, images, seconds in [("c1", 0, 0.2, 10, 2.0), ("c1", 1, 0.4, 30, 4.0),
                                                   ("c2", 0, 0.9, 20, 10.0)]:
        write_record(run_dir(tmp_path, "e", "m", "d", category, seed), {
            "status": "ok", "experiment": "e", "model": "m", "dataset": "d", "category": category,
            "seed": seed, "metrics": {"image_auroc": value},
            "timing": {"test_images": images, "test_seconds": seconds}})
    row = tables.comparison_table(records_frame(load_records(tmp_path))).iloc[0]
    assert row["image_auroc"] == pytest.approx(((0.2 + 0.4) / 2 + 0.9) / 2)
    assert row["n_categories"] == 2 and row["n_runs"] == 3
    assert row["test_images"] == 60 and row["test_seconds"] == pytest.approx(16.0)
    assert row["img_per_s"] == pytest.approx(60 / 16.0)
    assert row["s_per_img"] == pytest.approx(16.0 / 60)


def test_failed_runs(runs):
    _, _, frame = runs
    table = tables.failed_runs(frame)
    assert list(table.columns) == list(tables.FAILED_COLUMNS)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["model"], row["dataset"], row["category"]) == FAILED
    assert row["status"] == "failed" and row["error"] == ERROR
    assert Path(row["run_dir"]).name == "seed0" and Path(row["run_dir"]).parent.name == "b2"


def test_records_without_optional_fields(tmp_path):
    """Foreign records with only identity, status and one metric: nothing crashes, nothing is zero."""
    for model, value in (("m1", 0.7), ("m2", 0.6)):
        write_record(run_dir(tmp_path, "e", model, "d", "c", 0), {
            "status": "ok", "experiment": "e", "model": model, "dataset": "d", "category": "c",
            "seed": 0, "metrics": {"image_auroc": value}})
    frame = records_frame(load_records(tmp_path))
    per_category = tables.per_category_table(frame)
    assert per_category["image_auroc"].tolist() == pytest.approx([0.7, 0.6])
    for column in ("pixel_aupro", "test_images", "test_seconds", "s_per_img", "pipeline_img_per_s",
                   "model_img_per_s", "fit_seconds"):
        assert per_category[column].isna().all(), column
    comparison = tables.comparison_table(frame)
    for column in ("pixel_auroc", "test_images", "test_seconds", "s_per_img", "img_per_s", "model_img_per_s"):
        assert comparison[column].isna().all(), column  # not 0 from an empty sum
    assert tables.failed_runs(frame).empty
    assert len(tables.environment_table(frame)) == 2
    for fig in (figures.metric_figure(frame), figures.speed_figure(frame)):
        fig.canvas.draw()
    written = tables.save_tables(tables.report_tables_for(frame), tmp_path / "out")
    assert pd.read_csv(written["comparison"])["test_images"].isna().all()


def test_records_without_identity_fields(tmp_path):
    """A foreign record lacking experiment/category/seed still lands in every table."""
    write_record(tmp_path / "x", {"status": "ok", "model": "m", "dataset": "d", "metrics": {"image_auroc": 0.8},
                                  "timing": {"test_images": 10, "test_seconds": 2.0}})
    write_record(tmp_path / "y", {"model": "m", "dataset": "d", "category": "c"})  # no status: not ok
    frame = records_frame(load_records(tmp_path))
    row = tables.comparison_table(frame).iloc[0]
    assert row["image_auroc"] == pytest.approx(0.8) and row["img_per_s"] == pytest.approx(5.0)
    assert row["n_categories"] == 1 and not row["incomplete"]
    assert tables.failed_runs(frame)["category"].tolist() == ["c"]
    figures.metric_figure(frame).canvas.draw()
    figures.speed_figure(frame).canvas.draw()


def test_all_runs_failed(tmp_path):
    write_record(run_dir(tmp_path, "e", "m", "d", "c", 0), {
        "status": "failed", "error": "ValueError: x", "experiment": "e", "model": "m", "dataset": "d",
        "category": "c", "seed": 0})
    frame = records_frame(load_records(tmp_path))
    assert tables.per_category_table(frame).empty
    assert tables.comparison_table(frame).empty
    assert tables.failed_runs(frame)["error"].tolist() == ["ValueError: x"]
    for fig in (figures.metric_figure(frame), figures.speed_figure(frame)):
        fig.canvas.draw()


def test_write_tables(runs, tmp_path):
    _, truth, frame = runs
    paths = tables.save_tables(tables.report_tables_for(frame), tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == tables.TABLE_FILES
    assert all(p.parent == tmp_path / "out" / "tables" for p in paths.values())
    assert len(pd.read_csv(paths["per_category"])) == len(truth)
    assert pd.read_csv(paths["failed_runs"])["error"].tolist() == [ERROR]
    assert_csv_matches(paths["comparison"], tables.comparison_table(frame))


def test_metric_figure_draws_the_values(runs):
    _, truth, frame = runs
    fig = figures.metric_figure(frame)
    metrics = list(METRICS)  # every metric has values here
    assert len(fig.axes) == len(metrics) * len(DATASETS)
    for i, metric in enumerate(metrics):
        for j, dataset in enumerate(sorted(DATASETS)):
            ax = fig.axes[i * len(DATASETS) + j]
            heights = sorted(p.get_height() for p in ax.patches if not math.isnan(p.get_height()))
            want = sorted(v[metric] for k, v in truth.items() if k[1] == dataset and metric in v)
            assert heights == pytest.approx(want), (metric, dataset)  # no zero bar for a missing value
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(MODELS)


def test_speed_figure_points(runs):
    _, truth, frame = runs
    fig = figures.speed_figure(frame)
    expected = expected_comparison(truth)
    pipeline_ax, model_ax = fig.axes[:2]
    for ax, column in ((pipeline_ax, "img_per_s"), (model_ax, "model_img_per_s")):
        points = sorted(tuple(map(float, p)) for c in ax.collections for p in c.get_offsets())
        want = sorted((row[column], row["image_auroc"]) for row in expected.values())
        assert len(points) == len(want) == 4
        for got, expect in zip(points, want):
            assert got == pytest.approx(expect)
        assert ax.get_xscale() == "log"


def test_report_imports_no_torch():
    code = ("import sys, vadbench.report; "
            "bad = [m for m in ('torch', 'anomalib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_notebook_is_commit_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in cell.source.splitlines())
    headings = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("## Per-category results", "## Comparison", "## Speed", "## Failed runs"):
        assert heading in headings


def test_build_report_without_records(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="no run records"):
        build.build_report(tmp_path / "runs", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no run records"):
        build.build_report(tmp_path / "missing", tmp_path / "out")


def test_build_report(runs, tmp_path):
    root, truth, frame = runs
    out = tmp_path / "report"
    paths = build.build_report(root, out)
    assert paths["html"] == out / "summary.html" and paths["notebook"] == out / "summary.ipynb"
    for name in ("html", "notebook", *tables.TABLE_FILES, "metrics_figure", "speed_figure"):
        assert paths[name].is_file(), name

    executed = nbformat.read(paths["notebook"], as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]

    html = paths["html"].read_text(encoding="utf-8")
    for heading in ("Per-category results", "Comparison", "Speed", "Failed runs"):
        assert heading in html
    assert html.count("data:image/png;base64,") >= 2  # metric and speed figures, embedded
    assert ERROR.replace("(", "").split(":")[0] in html and "CUDA out of memory" in html
    # outputs only: no code cells, no parameters cell, no input prompts
    for code in ("tables.per_category_table(frame)", "import logging", "runs_dir: str", "display("):
        assert code not in html, code
    code_cells = re.findall(r'class="(jp-Cell jp-CodeCell[^"]*)"', html)
    assert len(code_cells) >= 10 and all("jp-mod-noInput" in c for c in code_cells)
    assert 'class="highlight' not in html and "In&nbsp;[" not in html
    assert "<table" in html and "dataframe" in html

    assert_csv_matches(paths["comparison"], tables.comparison_table(frame))
    assert len(pd.read_csv(paths["per_category"])) == len(truth)
    assert pd.read_csv(paths["failed_runs"])["error"].tolist() == [ERROR]


def test_markdown_results_are_generated_from_the_records(runs, tmp_path):
    root, truth, _ = runs
    out = tmp_path / "docs" / "results.md"
    assert cli_main(["report", "--runs", str(root), "--markdown", str(out)]) == 0
    text = out.read_text()
    assert "do not edit by hand" in text and "Measured 2025-01-01T00:00:00Z to 2025-01-01T00:01:00Z on test cpu" in text
    for dataset, categories in DATASETS.items():
        section = text.split(f"## {EXPERIMENT} / {dataset}")[1].split("## ")[0]
        for model in MODELS:
            ok = [c for c in categories if (model, dataset, c) != FAILED]
            mean = sum(truth[(model, dataset, c)]["image_auroc"] for c in ok) / len(ok)
            row = next(line for line in section.splitlines() if line.startswith(f"| {model} |"))
            assert row.split(" | ")[1:3] == [str(len(ok)), f"{mean:.3f}"]
            harness = sum(truth[(model, dataset, c)]["harness_ms_per_image"] for c in ok) / len(ok)
            assert row.split(" | ")[MARKDOWN_COLUMNS.index("harness_ms_per_image")] == f"{harness:.3f}"
