"""Teacher distillation: a tiny teacher distilled offline in seconds loads in anomalib's EfficientAd
through anomalib's own loading code, and matches its backbone's features better than a random PDN."""
from __future__ import annotations

import json

import pytest
import torch

from vadbench import config
from vadbench.data.demo import build_penalty_images
from vadbench.errors import InputMissingError
from vadbench.models import distill
from vadbench.models.teacher import cached_teacher_path, resolve, settings_of, teacher_key

TINY = dict(backbone="mobilenet_v2", model_size="small", steps=30, batch_size=8, crop=64, image_size=256, lr=1e-3,
            seed=0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return build_penalty_images(tmp_path_factory.mktemp("photos") / "penalty", n=16, size=256)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    settings = distill.DistillSettings(images=str(photos), **TINY)
    return settings, out, distill.distil_teacher(settings, out)


def heldout_loss(pdn, settings, seed: int = 123, batches: int = 6) -> float:
    """Mean distillation loss on fresh augmented crops (another seed than training), targets normalised
    with the training's own per-channel statistics (distill.setup reproduces them from settings.seed)."""
    fixed = distill.setup(settings)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        losses = [float(distill.distillation_loss(pdn, fixed.target, distill.sample_batch(fixed.images, fixed.aug, 8, gen),
                                                  fixed.mean, fixed.std)) for _ in range(batches)]
    return sum(losses) / len(losses)


def test_anomalib_loads_the_distilled_teacher(teacher, tmp_path, monkeypatch):
    from anomalib.models import EfficientAd
    from anomalib.models.image.efficient_ad import lightning_model

    settings, out, record = teacher
    weights = tmp_path / "efficientad_pretrained_weights"
    weights.mkdir()
    (weights / "pretrained_teacher_small.pth").write_bytes(out.read_bytes())
    monkeypatch.setattr(lightning_model, "get_pretrained_weights_dir", lambda: tmp_path)
    model = EfficientAd(model_size="small", evaluator=False, visualizer=False, post_processor=False)
    model.prepare_pretrained_model()  # anomalib's own code: strict load of pretrained_teacher_small.pth
    saved = torch.load(out, weights_only=True)
    for key, value in model.model.teacher.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert record["backbone"] == "mobilenet_v2" and record["steps"] == 30 and record["n_images"] == 16
    assert json.loads(distill.sidecar_path(out).read_text())["final_loss"] == record["final_loss"]


def test_distilled_teacher_matches_backbone_better_than_random(teacher):
    settings, out, _ = teacher
    trained = distill.make_pdn("small", settings.out_channels)
    trained.load_state_dict(torch.load(out, weights_only=True))
    torch.manual_seed(7)
    random_pdn = distill.make_pdn("small", settings.out_channels)
    trained_loss, random_loss = heldout_loss(trained.eval(), settings), heldout_loss(random_pdn.eval(), settings)
    # A fresh PDN's outputs are near zero, i.e. about as good as predicting each channel's mean.
    assert trained_loss < 0.95 * random_loss, (trained_loss, random_loss)


def test_record_names_a_distilled_teacher(teacher):
    _, out, record = teacher
    params = config.EfficientAdParams(teacher=str(out))
    path, label = resolve(params, seed=0)
    assert path == out
    assert label.startswith(f"distilled:mobilenet_v2 ({out};") and f"final loss {record['final_loss']:.4f}" in label


def test_missing_distilled_teacher_names_the_command(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("VADBENCH_CACHE", str(tmp_path / "cache"))
    params = config.EfficientAdParams(teacher="distilled", distill=config.DistillParams(images=str(photos), steps=3))
    with pytest.raises(InputMissingError) as err:
        resolve(params, seed=0)
    message = str(err.value)
    assert "vadbench run" in message and "vadbench distill-teacher --backbone mobilenet_v2" in message
    assert f"--images {photos}" in message and "--steps 3" in message
    expected = cached_teacher_path(settings_of(params))
    assert str(expected) in message and expected.parent == tmp_path / "cache" / "teachers"


def test_cache_key_follows_settings_and_images(photos, tmp_path):
    base = distill.DistillSettings(images=str(photos), **TINY)
    assert teacher_key(base) == teacher_key(distill.DistillSettings(images=str(photos), **TINY))
    assert teacher_key(base) != teacher_key(distill.DistillSettings(images=str(photos), **{**TINY, "steps": 41}))
    extra = tmp_path / "more"
    extra.mkdir()
    for f in distill.training_images(photos):
        (extra / f.name).write_bytes(f.read_bytes())
    more = distill.DistillSettings(images=str(extra), **TINY)
    key = teacher_key(more)
    (extra / "new.png").write_bytes(distill.training_images(photos)[0].read_bytes())
    assert teacher_key(more) != key
