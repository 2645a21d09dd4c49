"""The rest of the zoo trained and scored for real (minutes on 2 cores), the torch-hub-cache models, and the zoo report.

The hub-cache models (Cfa, UniNet, Csflow) read torchvision weights from the torch hub cache; here the
cache holds randomly initialised state dicts under torchvision's file names, so the test shows that
exactly those files are read and nothing is fetched, not what pretrained weights would score.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from test_zoo import FAST, check_record, check_weights, train_tiny, zoo_models
from vadbench import records

pytestmark = pytest.mark.slow

#: Hub-cache models at test size: (name, class, init_args, image size, architecture in the cache).
HUB = [("cfa", "Cfa", {"backbone": "resnet18"}, 64, "resnet18"),
       ("uninet", "UniNet", {}, 64, "wide_resnet50_2"),
       ("csflow", "Csflow", {}, 128, "efficientnet_b5")]


def fake_hub(torch_home: Path) -> dict[str, Path]:
    """torchvision's weight files of the HUB architectures, randomly initialised, in a torch hub cache."""
    import torch
    import torchvision

    from vadbench.models import backbones

    files = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))  # where the training process looks
        for *_, arch in HUB:
            path = files[arch] = backbones.hub_file(arch)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return files


@pytest.fixture(scope="module")
def slow_runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("zoo_slow")
    torch_home = root / "torch"
    files = fake_hub(torch_home)
    hub = [{"name": name, "kind": "anomalib", "image_size": size, "train": {"max_steps": 1, "batch_size": 2},
            "params": {"class": cls, "init_args": args}} for name, cls, args, size, _ in HUB]
    runs = train_tiny(root, "rest", zoo_models(exclude=FAST) + hub, torch_home)
    assert sorted(p for p in torch_home.rglob("*") if p.is_file()) == sorted(files.values()), "something was fetched"
    return runs, files


@pytest.mark.parametrize("name", [m["name"] for m in zoo_models(exclude=FAST)])
def test_the_rest_of_the_zoo_trains_and_scores_offline(slow_runs, name):
    model = next(m for m in zoo_models(exclude=FAST) if m["name"] == name)
    record = check_record(slow_runs[0] / "zoo" / name / "demo/brick/seed0", model["params"]["class"])
    check_weights(record)


@pytest.mark.parametrize("name,cls,arch", [(n, c, a) for n, c, _, _, a in HUB])
def test_hub_cache_models_read_the_cached_file(slow_runs, name, cls, arch):
    runs, files = slow_runs
    record = check_record(runs / "zoo" / name / "demo/brick/seed0", cls)
    assert record["training"]["backbone"] == f"pretrained:{arch} ({files[arch]})"


def test_glass_records_its_anomaly_source(slow_runs):
    record = records.read_record(slow_runs[0] / "zoo/glass/demo/brick/seed0")
    assert record["training"]["input_paths"] == {"anomaly_source_path": "data/source"}


def test_zoo_report_renders(slow_runs, tmp_path):
    from vadbench.report.build import build_report
    from vadbench.report.markdown import results_markdown

    runs, _ = slow_runs
    paths = build_report(runs, tmp_path / "report", pdf=False)
    per_category = pd.read_csv(paths["per_category"])
    names = sorted(m["name"] for m in zoo_models(exclude=FAST)) + sorted(n for n, *_ in HUB)
    assert sorted(per_category["model"]) == sorted(names)
    html = paths["html"].read_text(encoding="utf-8")
    assert all(name in html for name in names) and "Failed runs" in html
    stfpm_free = results_markdown(runs)
    cflow = records.read_record(runs / "zoo/cflow/demo/brick/seed0")
    row = next(line for line in stfpm_free.splitlines() if line.startswith("| cflow |"))
    assert f"{cflow['timing']['fit_seconds']:.3f}" in row  # fit seconds come from the record
