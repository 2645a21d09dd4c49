"""Strict params loading: unknown keys, wrong types and bad values fail with the key and file named."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vadbench import config
from vadbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "t",
    "seeds": [0, 1],
    "datasets": [{"name": "d", "kind": "demo", "root": "data", "categories": ["a", "b"]}],
    "models": [
        {"name": "dr", "kind": "draem", "image_size": 64, "train": {"max_steps": 2, "batch_size": 2},
         "params": {"anomaly_source": "perlin", "beta": [0.1, 1.0]}},
        {"name": "ea", "kind": "efficientad", "train": {"max_steps": 2, "batch_size": 1},
         "params": {"teacher": "random", "imagenet_dir": "pen", "lr": 1}},
    ],
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def mutated(path: list, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def test_every_shipped_experiment_loads():
    files = sorted((ROOT / "params" / "experiments").glob("*.yaml"))
    assert files, "no experiment files shipped"
    for path in files:
        exp = config.load_experiment(path)
        assert config.expand_runs(exp)


def test_valid_file_types_and_grid(tmp_path):
    exp = config.load_experiment(write(tmp_path, BASE))
    ea = exp.models[1].settings
    assert isinstance(ea.lr, float) and ea.lr == 1.0          # int accepted for float
    assert exp.models[0].settings.beta == (0.1, 1.0)     # list accepted for tuple
    runs = config.expand_runs(exp)
    assert len(runs) == 2 * 1 * 2 * 2
    assert [(r.model.name, r.category, r.seed) for r in runs[:4]] == [
        ("dr", "a", 0), ("dr", "a", 1), ("dr", "b", 0), ("dr", "b", 1)]
    assert len({r.config_hash for r in runs}) == len(runs)


def test_hash_changes_with_params_and_is_stable(tmp_path):
    h1 = config.expand_runs(config.load_experiment(write(tmp_path, BASE)))[0].config_hash
    h2 = config.expand_runs(config.load_experiment(write(tmp_path, BASE)))[0].config_hash
    changed = mutated(["models", 0, "train", "max_steps"], 3)
    h3 = config.expand_runs(config.load_experiment(write(tmp_path, changed)))[0].config_hash
    assert h1 == h2 != h3


@pytest.mark.parametrize("path, value, needle", [
    (["colour"], 1, "unknown key 'colour'"),
    (["models", 0, "params", "dtd"], "x", "unknown key 'models[dr].params.dtd'"),
    (["models", 1, "params", "lr"], "fast", "models[ea].params.lr: expected float, got str"),
    (["models", 0, "image_size"], 64.5, "models[0].image_size: expected int"),
    (["models", 0, "image_size"], True, "expected int, got bool"),
    (["models", 0, "kind"], "fastflow", "'fastflow' is not one of ['draem', 'efficientad', 'patchcore', 'padim', 'anomalib']"),
    (["models", 1, "params", "model_size"], "s", "'s' is not one of ['small', 'medium']"),
    (["seeds"], 0, "seeds: expected a list"),
    (["evaluation"], {"val_ratio": 1.5}, "val_ratio must lie strictly between 0 and 1"),
    (["models", 1, "train", "batch_size"], 4, "EfficientAD trains with batch size 1"),
    (["models", 0, "train"], {"batch_size": 2}, "set max_steps or max_epochs"),
    (["datasets", 0, "categories"], [], "categories is empty"),
])
def test_bad_values_name_key_and_file(tmp_path, path, value, needle):
    target = write(tmp_path, mutated(path, value))
    with pytest.raises(ConfigError) as err:
        config.load_experiment(target)
    assert needle in str(err.value)
    assert str(target) in str(err.value)


def test_missing_required_key_and_duplicates(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    del data["datasets"][0]["categories"]  # root is optional: it may come from $VADBENCH_<KIND>_ROOT
    with pytest.raises(ConfigError, match=r"missing required key 'datasets\[0\].categories'"):
        config.load_experiment(write(tmp_path, data))
    data = mutated(["models", 1, "name"], "dr")
    with pytest.raises(ConfigError, match="duplicate names"):
        config.load_experiment(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such params file"):
        config.load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_experiment(bad)


def test_find_run_lists_choices(tmp_path):
    exp = config.load_experiment(write(tmp_path, BASE))
    assert config.find_run(exp, "ea", "d", "b", 1).label == "ea d/b seed1"
    with pytest.raises(ConfigError, match=r"models: \['dr', 'ea'\]"):
        config.find_run(exp, "nope", "d", "a", 0)


def test_distill_needs_a_distilled_teacher(tmp_path):
    exp = {"name": "x", "datasets": [{"name": "d", "kind": "demo", "root": "r", "categories": ["a"]}],
           "models": [{"name": "e", "kind": "efficientad", "train": {"max_steps": 1, "batch_size": 1},
                       "params": {"teacher": "random", "distill": {"steps": 5}}}]}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match="distill is set but teacher is 'random'"):
        config.load_experiment(path)
    exp["models"][0]["params"]["teacher"] = "distilled"
    exp["models"][0]["params"]["distill"]["stepz"] = 5
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match=r"unknown key 'models\[e\].params.distill.stepz'"):
        config.load_experiment(path)
    del exp["models"][0]["params"]["distill"]["stepz"]
    path.write_text(yaml.safe_dump(exp))
    params = config.load_experiment(path).models[0].settings
    assert params.distill.steps == 5 and params.distill.backbone == "mobilenet_v2"
