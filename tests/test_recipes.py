"""The papers' recipes as runs apply them: learning rates read back from records, DRÆM's smoothed image score
against a hand computation, the official choices and the provenance line in records, the dry run's schedules.

One tiny training pass per model (demo crops, CPU): DRÆM with every official choice for 10 epochs of one batch here,
and in test_recipes_efficientad.py EfficientAD for 5 steps with the paper's per-step drop and with anomalib's
per-epoch one, and for 2 epochs with the paper's drop placed by the steps those epochs hold.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import ndimage

from replicas import build_mvtec_ad
from vadbench import config, records, registry
from vadbench.data import cache, datamodules
from vadbench.data.demo import DemoSpec, build_anomaly_source, build_demo_dataset, build_penalty_images
from vadbench.errors import ConfigError
from vadbench.launch import runner
from vadbench.models import build, draem, provenance
from vadbench.run import evaluate

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[1]
DRAEM_OFFICIAL = {"anomaly_source": "data/source", "lr_schedule": "official", "score_smoothing": 21,
                  "rotation_probability": 0.3, "beta": [0.2, 1.0], "weight_init": "official"}
EXPERIMENT = {
    "name": "recipes", "seeds": [0], "device": "cpu",
    "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}],
    "models": [
        # 3 training images, batch 4: one step per epoch, so step n is epoch n
        {"name": "draem_official", "kind": "draem", "image_size": 64, "train": {"max_epochs": 10, "batch_size": 4},
         "params": DRAEM_OFFICIAL},
        {"name": "efficientad_paper", "kind": "efficientad", "image_size": 256, "train": {"max_steps": 5, "batch_size": 1},
         "params": {"teacher": "random", "imagenet_dir": "data/penalty", "lr_schedule": "paper"}},
        {"name": "efficientad_anomalib", "kind": "efficientad", "image_size": 256,
         "train": {"max_steps": 5, "batch_size": 1}, "params": {"teacher": "random", "imagenet_dir": "data/penalty"}},
        {"name": "efficientad_epochs", "kind": "efficientad", "image_size": 256, "train": {"max_epochs": 2, "batch_size": 1},
         "params": {"teacher": "random", "imagenet_dir": "data/penalty", "lr_schedule": "paper"}},
    ],
    "evaluation": {"val_ratio": 0.25, "eval_batch_size": 4, "timing_warmup": 1, "timing_iterations": 2,
                   "figure_images": 2},
}


def train_recipes(root: Path, names: tuple[str, ...]) -> dict:
    """The named models of EXPERIMENT trained and scored through train_and_evaluate and saved under root; per
    model its record, run, built module and run folder (and "root")."""
    build_demo_dataset(root / "data/demo", DemoSpec(categories=("brick",), crop=64, n_train=4,
                                                                        n_test_good=3, n_test_defect=3))
    build_penalty_images(root / "data/penalty", n=4)
    build_anomaly_source(root / "data/source", n=4, size=64)
    (root / "recipes.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    built, done = {}, {}
    build_model = build.build_model

    def keep(spec, seed):
        built[spec.name] = build_model(spec, seed)
        return built[spec.name]

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(build, "build_model", keep)
        for run in config.expand_runs(config.load_experiment("recipes.yaml")):
            if run.model.name not in names:
                continue
            out = root / "runs" / run.model.name
            evaluate.save_result(evaluate.train_and_evaluate(run, out), out)
            done[run.model.name] = (records.read_record(out), run, built[run.model.name].module, out)
    return {"root": root, **done}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """DRÆM with every official choice, trained and scored (EfficientAD's runs: test_recipes_efficientad.py)."""
    return train_recipes(tmp_path_factory.mktemp("recipes"), ("draem_official",))


def rates(record: dict) -> list[tuple[int, int, float]]:
    return [(e["step"], e["epoch"], e["lr"]) for e in record["training"]["learning_rates"]]


def test_draem_official_schedule_drops_at_80_and_90_percent_of_the_epochs(finished):
    record = finished["draem_official"][0]
    assert record["training"]["epochs_run"] == 10 and record["training"]["steps_run"] == 10
    assert rates(record) == [(0, 0, pytest.approx(1e-4)), (8, 8, pytest.approx(2e-5)), (9, 9, pytest.approx(4e-6))]
    assert record["training"]["lr_schedule"] == ("official: Adam lr 0.0001, x0.2 from epoch 8 and again from epoch 9 of "
                                                 "10 (train_DRAEM.py's 80 % / 90 %, stepped per epoch)")


def test_draem_records_its_choices_and_provenance(finished):
    training = finished["draem_official"][0]["training"]
    assert training["image_score"] == "max of the 21x21 mean-filtered mask map (official test_DRAEM.py)"
    assert training["normal_rotation"] == "p 0.3, uniform in [-90, 90] degrees"
    assert training["blend_opacity"] == "[0.2, 1]"
    assert training["weight_init"] == "official: conv N(0, 0.02), batch norm N(1, 0.02)"
    assert training["provenance"] == ("anomaly source: dir:data/source (4 images) (the paper: DTD's 5,640 textures); "
                                      "no pretrained weights")
    assert finished["draem_official"][0]["config"]["model_params"]["score_smoothing"] == 21


def test_draem_scores_images_from_the_mean_filtered_map(finished):
    """scores.csv holds, per test image, the max of its mask map after a 21x21 mean filter (zero padding counted),
    computed here again with scipy from the trained model's own map."""
    record, run, module, out = finished["draem_official"]
    scores = pd.read_csv(out / records.SCORES_FILE).set_index("path")["score"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished["root"])
        datamodule = datamodules.build_datamodule(run, run.model.train.batch_size)
        cache.warm(datamodule, module.pre_processor.transform)  # as the run did: the same split and images
        loader = datamodule.test_dataloader()
        hand, raw, seen = {}, {}, 0
        with torch.inference_mode():
            for batch in loader:
                maps = module.model(module.pre_processor(batch.image)).anomaly_map.numpy()
                for path, amap in zip(batch.image_path, maps, strict=True):
                    hand[str(path)] = ndimage.uniform_filter(amap.astype(np.float64), 21, mode="constant").max()
                    raw[str(path)] = amap.max()
                seen += len(batch.image_path)
    assert seen == len(scores) == 6
    assert [scores[p] for p in hand] == pytest.approx(list(hand.values()), rel=1e-5)
    assert not np.allclose([scores[p] for p in raw], list(raw.values()), rtol=1e-3)  # not anomalib's raw max


def test_smoothing_hook_and_rotation_do_what_the_official_code_does():
    amap = torch.rand(2, 40, 40)
    expected = [ndimage.uniform_filter(m.double().numpy(), 5, mode="constant").max() for m in amap]
    assert draem.smoothed_max(amap, 5).tolist() == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    images = torch.ones(4, 3, 32, 32)
    assert draem.rotate_some(images, 0.0, 90.0) is images
    rotated = draem.rotate_some(images, 1.0, 90.0)
    assert (rotated[:, :, 0, 0] == 0).all() and (rotated[:, :, 16, 16] == 1).all()  # black corners, centre kept


def test_draem_choices_are_checked_when_params_load(tmp_path):
    for params, needle in (({"score_smoothing": 20}, "score_smoothing: 20 is not an odd window"),
                           ({"rotation_probability": 1.5}, "rotation_probability: 1.5 is not a probability"),
                           ({"beta": [0.5, 0.2]}, "beta: (0.5, 0.2) is not an opacity range"),
                           ({"lr_schedule": "paper"}, "lr_schedule: 'paper' is not one of ['anomalib', 'official']")):
        exp = {**EXPERIMENT, "models": [{**EXPERIMENT["models"][0], "params": params}]}
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            config.load_experiment(tmp_path / "e.yaml")


def test_penalty_set_is_told_apart_by_its_class_folders(tmp_path):
    imagenette = [tmp_path / wnid / "x.JPEG" for wnid in sorted(provenance.IMAGENETTE_CLASSES)]
    assert provenance.penalty_set(tmp_path, imagenette).startswith("penalty images: Imagenette (10 of ImageNet's")
    imagenet = [tmp_path / f"n{i:08d}" / "x.JPEG" for i in range(1000)]
    assert provenance.penalty_set(tmp_path, imagenet).startswith("penalty images: ImageNet (1,000 classes), 1,000 images")


def test_paper_recipes_dry_run_lists_its_schedules_and_split(tmp_path, monkeypatch, caplog):
    build_mvtec_ad(tmp_path / "mvtec")
    monkeypatch.setenv(registry.info("mvtec_ad").env_var, str(tmp_path / "mvtec"))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    runner.run_experiment(PROJECT / "params/experiments/paper_recipes.yaml", "out", dry_run=True)
    assert ("draem_paper: learning rate official: Adam lr 0.0001, x0.2 from epoch 560 and again from epoch 630 of "
            "700 (train_DRAEM.py's 80 % / 90 %, stepped per epoch)") in caplog.text
    for name in ("efficientad_s_paper", "efficientad_m_paper"):
        assert (f"{name}: learning rate paper: Adam lr 0.0001, weight decay 1e-05, x0.1 from step 66,500 of 70,000 "
                "(StepLR stepped per step)") in caplog.text
    assert "efficientad_s_paper mvtec_ad/bottle seed0  root=" in caplog.text
    assert "train=189 val=20 test=83 " in caplog.text  # bottle's 209 training images: 20 (10 %, rounded down) held out
