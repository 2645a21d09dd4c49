"""`kind: anomalib`: strict class and init_args, offline weights, and zoo models trained and scored for real.

The training test runs the quick models of params/experiments/zoo.yaml for two steps on tiny demo
images, in a process with no hub access and empty weight caches, and checks each record against its
files; test_zoo_slow.py does the rest of the zoo and the models that read the torch hub cache.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from vadbench import config, records
from vadbench.data.demo import DemoSpec, build_anomaly_source, build_demo_dataset
from vadbench.errors import ConfigError, InputMissingError
from vadbench.models import backbones, preflight, zoo

ZOO_FILE = Path(__file__).resolve().parents[1] / "params/experiments/zoo.yaml"
FAST = ("dfm", "fre", "stfpm", "fastflow")
EVALUATION = {"val_ratio": 0.25, "eval_batch_size": 4, "timing_warmup": 1, "timing_iterations": 2,
              "figure_images": 2}
#: Train and score every run of an experiment in one process, as the notebook does (no papermill).
TRAIN = """
import sys
from vadbench import config, records
from vadbench.launch.runner import preflight
from vadbench.run import evaluate
exp = config.load_experiment(sys.argv[1])
preflight(exp)
for run in config.expand_runs(exp):
    out = records.run_dir(sys.argv[2], run.experiment, run.model.name, run.dataset.name, run.category, run.seed)
    evaluate.save_result(evaluate.train_and_evaluate(run, out), out)
"""


def zoo_models(names: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> list[dict]:
    """zoo.yaml's model entries as written, shrunk to test size: 64 px (128 where needed), 2 steps, batch 4."""
    shipped = yaml.safe_load(ZOO_FILE.read_text())["models"]
    chosen = [m for m in shipped if (names is None or m["name"] in names) and m["name"] not in exclude]
    for model in chosen:
        model["image_size"] = 128 if model["params"]["class"] == "Supersimplenet" else 64
        model["train"] = {"batch_size": 4, **({"max_steps": 2} if "max_steps" in model["train"] else {})}
    return chosen


def train_tiny(root: Path, name: str, models_: list[dict], torch_home: Path) -> Path:
    """Build tiny demo data under root, train and score `models_` on it offline; the runs folder."""
    if not (root / "data/demo").is_dir():
        build_demo_dataset(root / "data/demo", DemoSpec(
            categories=("brick",), crop=64, n_train=8, n_test_good=3, n_test_defect=3))
        build_anomaly_source(root / "data/source", n=4, size=64)
    for model in models_:
        if "anomaly_source_path" in model["params"].get("init_args", {}):
            model["params"]["init_args"]["anomaly_source_path"] = "data/source"
    experiment = {"name": "zoo", "seeds": [0], "evaluation": EVALUATION, "models": models_,
                  "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}]}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(experiment))
    (root / "hf").mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "TORCH_HOME": str(torch_home)}
    done = subprocess.run([sys.executable, "-c", TRAIN, f"{name}.yaml", "runs"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    assert list((root / "hf").rglob("*")) == [], "something was fetched into the Hugging Face cache"
    return root / "runs"


def check_record(run_dir: Path, class_name: str) -> dict:
    """The record of an ok run agrees with its scores.csv and says what the model was."""
    record = records.read_record(run_dir)
    assert record["status"] == "ok" and record["error"] is None, record.get("error")
    assert record["model_class"] == class_name and record["config"]["model"]["params"]["class"] == class_name
    scores = pd.read_csv(run_dir / records.SCORES_FILE)
    metrics, timing, split = record["metrics"], record["timing"], record["split"]
    assert len(scores) == timing["test_images"] == 6
    assert (split["val_source"], split["val_images"], split["train_images"]) == ("train", 2, 6)
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-6)
    # scores.csv holds float32 scores as text: a score equal to the threshold may read back a hair above it
    clear = ~np.isclose(scores["score"], metrics["image_threshold"], rtol=1e-6, atol=0.0)
    assert (scores["predicted"] == (scores["score"] > metrics["image_threshold"]))[clear].all()
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["pixel_aupro"] <= 1.0
    assert timing["fit_seconds"] > 0 and timing["model_img_per_s"] > 0 and timing["model_params"] > 0
    assert timing["pipeline_img_per_s"] == pytest.approx(timing["test_images"] / timing["test_seconds"])
    assert record["training"]["steps_run"] >= 1
    assert (run_dir / records.FIGURE_FILE).stat().st_size > 1000
    return record


def check_weights(record: dict) -> None:
    """training.backbone names the local backbone file, or says prominently that the weights are random."""
    entry = zoo.CATALOG[record["model_class"]]
    backbone = record["training"]["backbone"]
    if entry.weights == "backbone":
        assert backbone == f"mobilenet_v2 ({backbones.mobilenet_v2_weights()})"
    elif entry.weights == "random":
        assert backbone.startswith("random resnet18 (pre_trained: false, seed 0) - not the paper's pretrained")
        assert record["config"]["model"]["params"]["init_args"].get("pre_trained") is None  # we set it, not params


@pytest.fixture(scope="module")
def fast_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    torch_home = root / "torch"
    torch_home.mkdir()
    runs = train_tiny(root, "fast", zoo_models(FAST), torch_home)
    assert list(torch_home.rglob("*")) == [], "something was fetched into the torch hub cache"
    return runs


@pytest.mark.parametrize("name", FAST)
def test_quick_zoo_models_train_and_score_offline(fast_runs, name):
    model = next(m for m in zoo_models(FAST) if m["name"] == name)
    record = check_record(fast_runs / "zoo" / name / "demo/brick/seed0", model["params"]["class"])
    check_weights(record)


def test_trainer_defaults_come_from_anomalib_and_train_overrides_them(fast_runs):
    dfm = records.read_record(fast_runs / "zoo/dfm/demo/brick/seed0")  # train sets no length: anomalib's one epoch
    assert dfm["training"]["trainer_arguments"]["max_epochs"] == 1 and dfm["training"]["epochs_run"] == 1
    assert dfm["training"]["max_epochs"] == -1 and dfm["training"]["steps_run"] == 2  # 6 images, batch 4
    stfpm = records.read_record(fast_runs / "zoo/stfpm/demo/brick/seed0")
    assert stfpm["training"]["steps_run"] == 2 and stfpm["training"]["trainer_arguments"]["gradient_clip_val"] == 0


# ---- strict params, without training ------------------------------------------------------------

def spec(class_name: str, init_args: dict | None = None, train: dict | None = None) -> config.ModelSpec:
    params = {"class": class_name, **({"init_args": init_args} if init_args is not None else {})}
    return config.build(config.ModelSpec, {"name": "m", "kind": "anomalib", "params": params,
                                           "train": train or {"max_steps": 1}}, "models[m]")


def test_unknown_class_lists_anomalib_exports():
    with pytest.raises(ConfigError, match=r"anomalib has no image model 'FastFlow'; anomalib 2\.7\.0 exports: .*Fastflow"):
        preflight.check_inputs(spec("FastFlow"))


def test_unknown_argument_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        preflight.check_inputs(spec("Stfpm", {"flow_steps": 4}))
    assert str(err.value) == ("models[m].params.init_args: Stfpm takes no argument 'flow_steps'; "
                              "allowed: ['backbone', 'layers']")
    with pytest.raises(ConfigError, match=r"Fastflow takes no argument 'evaluator'; allowed: \['backbone', "
                                          r"'conv3x3_only', 'flow_steps', 'hidden_ratio', 'pre_trained'\]"):
        preflight.check_inputs(spec("Fastflow", {"evaluator": True}))  # evaluation is ours


@pytest.mark.parametrize("class_name,needle", [
    ("Dinomaly", "'Dinomaly' cannot run here: needs a pretrained foundation-model backbone (DINOv2 ViT)"),
    ("VlmAd", "'VlmAd' cannot run here: a vision-language model"),
    ("Ganomaly", "'Ganomaly' cannot run here: scores images only (its output has no anomaly map)"),
    ("Draem", "'Draem' cannot run here: has its own kind with offline inputs: use `kind: draem`"),
])
def test_refused_models_say_why(class_name, needle):
    with pytest.raises(ConfigError) as err:
        preflight.check_inputs(spec(class_name))
    assert needle in str(err.value) and "Runnable offline: Cfa, Cflow, Csflow, Dfm" in str(err.value)


def test_pretrained_true_is_refused_where_the_local_backbone_is_used():
    """Models given a local backbone module are pretrained already; timm-backbone models read pre_trained: true from the
    Hugging Face cache (test_backbone_weights.py)."""
    with pytest.raises(ConfigError, match="pre_trained: true would download Cflow's weights from a hub; vadbench "
                                          r"never downloads. Leave it out \(the local backbone is pretrained\)"):
        preflight.check_inputs(spec("Cflow", {"pre_trained": True}))


def test_training_length_is_required_where_anomalib_sets_none():
    with pytest.raises(ConfigError, match=r"models\[m\].train: anomalib sets no training length for Stfpm; "
                                          "set max_steps or max_epochs"):
        preflight.check_inputs(spec("Stfpm", train={"batch_size": 4}))
    preflight.check_inputs(spec("Dfm", train={"batch_size": 4}))  # anomalib trains Dfm for one epoch


def test_class_is_spelt_class_and_params_are_typed_at_load():
    def model(params: dict) -> config.ModelSpec:
        return config.build(config.ModelSpec, {"name": "m", "kind": "anomalib", "params": params}, "m")

    with pytest.raises(ConfigError, match=r"unknown key 'models\[m\].params.class_name'; allowed here: "
                                          r"\['class', 'init_args'\]"):
        model({"class_name": "Dfm"})
    with pytest.raises(ConfigError, match=r"missing required key 'models\[m\].params.class'"):
        model({"init_args": {}})
    typed = spec("Fre", {"layer": "features.13"}).settings
    assert typed == config.AnomalibParams(class_name="Fre", init_args={"layer": "features.13"})


def test_missing_input_path_and_hub_file_are_errors_not_downloads(tmp_path, monkeypatch):
    with pytest.raises(InputMissingError, match=f"Glass: {tmp_path / 'dtd'} does not exist"):
        preflight.check_inputs(spec("Glass", {"anomaly_source_path": str(tmp_path / "dtd")}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputMissingError, match=r"Csflow loads torchvision's efficientnet_b5 ImageNet weights, and "
                                                f"{tmp_path}/hub/checkpoints/efficientnet_b5_lukemelas-1a07897c.pth "
                                                r"is missing; .* `vadbench fetch-backbone efficientnet_b5`"):
        preflight.check_inputs(spec("Csflow"))


def test_catalogue_covers_every_anomalib_image_model():
    import anomalib.models.image as image_models

    assert sorted(zoo.CATALOG) == sorted(image_models.__all__)
    for name, entry in zoo.CATALOG.items():
        allowed = zoo.allowed_args(zoo.model_class(name))
        if entry.weights == "backbone":
            assert "backbone" in allowed and entry.layers, name
        if entry.weights == "random":
            assert {"backbone", "pre_trained"} <= set(allowed), name
        if entry.weights == "hub":
            assert entry.hub_arch or entry.hub_arg in allowed, name


def test_docs_table_names_each_model_with_its_route():
    routes = {"backbone": "local backbone", "random": "random weights", "hub": "torch hub cache", "refused": "refused"}
    rows = [line.split(" | ") for line in (ZOO_FILE.parents[2] / "docs/models.md").read_text().splitlines()
            if line.startswith("| ") and line.count(" | ") == 2]
    listed = {name.strip("| "): route for names, route, _ in rows for name in names.split(", ")}
    assert {name: listed.get(name) for name in zoo.CATALOG} == {n: routes[e.weights] for n, e in zoo.CATALOG.items()}


def test_existing_kinds_keep_their_config_hash(tmp_path):
    """Records written before `kind: anomalib` existed stay finished: these hashes predate it. They predate the image
    cache too, so they hold for `image_cache: false` (what those runs did); cached runs (the default) hash anew."""
    exp = {"name": "h", "datasets": [{"name": "d", "kind": "demo", "root": "data", "categories": ["brick"]}],
           "evaluation": {"image_cache": False},
           "models": [{"name": "dr", "kind": "draem", "train": {"max_steps": 2}},
                      {"name": "ea", "kind": "efficientad", "train": {"max_steps": 2, "batch_size": 1},
                       "params": {"teacher": "random"}},
                      {"name": "pc", "kind": "patchcore", "train": {"max_epochs": 1}},
                      {"name": "pd", "kind": "padim", "train": {"max_epochs": 1}, "params": {"n_features": 50}}]}
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(exp))
    hashes = {r.model.name: r.config_hash for r in config.expand_runs(config.load_experiment(tmp_path / "h.yaml"))}
    assert hashes == {"dr": "eef0879c15537cea", "ea": "d95e62077ea6d412", "pc": "d3da47ad2d7c3bae",
                      "pd": "06c8c1c54c4fb71e"}
    del exp["evaluation"]
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(exp))
    cached = {r.model.name: r for r in config.expand_runs(config.load_experiment(tmp_path / "h.yaml"))}
    assert cached["pd"].config()["evaluation"]["image_cache"] is True
    assert not set(hashes.values()) & {r.config_hash for r in cached.values()}
