"""EfficientAD's recipes as runs apply them (test_recipes.py holds DRÆM's, in a file of its own so that the two
train at once under `pytest -n`): the paper's per-step drop for 5 steps, anomalib's per-epoch one, the paper's drop
placed by the steps 2 epochs hold, and the provenance line of a paper run.
"""
from __future__ import annotations

import pytest

from test_recipes import rates, train_recipes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """The three EfficientAD runs of test_recipes.EXPERIMENT, trained and scored."""
    return train_recipes(tmp_path_factory.mktemp("recipes_efficientad"),
                         ("efficientad_paper", "efficientad_anomalib", "efficientad_epochs"))


def test_efficientad_paper_schedule_drops_at_95_percent_of_the_steps(finished):
    record = finished["efficientad_paper"][0]
    assert record["training"]["steps_run"] == 5
    (first, _, lr0), (drop, _, lr1) = rates(record)[0], rates(record)[1]
    assert (first, lr0) == (0, pytest.approx(1e-4)) and (drop, lr1) == (4, pytest.approx(1e-5))  # int(0.95 * 5)
    assert len(rates(record)) == 2  # the drop is the last step: nothing after it
    assert record["training"]["lr_schedule"].startswith("paper: Adam lr 0.0001, weight decay 1e-05, x0.1 from step 4 of 5")


def test_efficientad_paper_schedule_counts_the_steps_of_the_epochs_when_only_epochs_are_given(finished):
    record = finished["efficientad_epochs"][0]  # 2 epochs of 3 images: 6 steps, the drop at int(0.95 * 6) = 5
    assert record["training"]["steps_run"] == 6
    assert rates(record) == [(0, 0, pytest.approx(1e-4)), (5, 1, pytest.approx(1e-5))]
    assert "x0.1 from 95 % of the run's steps (epochs x batches per epoch" in record["training"]["lr_schedule"]


def test_efficientad_anomalib_schedule_never_drops(finished):
    """anomalib steps its StepLR per epoch: 5 steps over 3 images are 2 epochs, and the drop waits for epoch 4."""
    record = finished["efficientad_anomalib"][0]
    assert [(s, lr) for s, _, lr in rates(record)] == [(0, pytest.approx(1e-4)), (4, pytest.approx(1e-4))]
    assert rates(record)[-1][1] == 1  # the last step, in the 2nd epoch
    assert "stepped per epoch" in record["training"]["lr_schedule"]
    assert "lr_schedule" not in record["config"]["model_params"]  # left at its default: out of the config hash


def test_efficientad_records_its_provenance(finished):
    ead = finished["efficientad_paper"][0]["training"]
    assert ead["provenance"] == ("penalty images: no ImageNet class folders (a stand-in), 4 images in data/penalty "
                                 "(the paper: ImageNet); teacher: random (not pretrained; the paper's is distilled from "
                                 "WideResNet-101 on ImageNet)")
