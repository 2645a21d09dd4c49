"""DRÆM's anomaly source is counted as anomalib's generator reads it (lower-case suffixes only)."""
from __future__ import annotations

import pytest
from PIL import Image

from vadbench.config import ModelSpec, TrainSpec
from vadbench.errors import InputMissingError
from vadbench.models import build, preflight


def draem(source: str) -> ModelSpec:
    return ModelSpec(name="draem", kind="draem", image_size=64, train=TrainSpec(max_steps=1, batch_size=2),
                     params={"anomaly_source": source})


def test_upper_case_suffixes_are_refused_not_silently_perlin(tmp_path):
    for i in range(3):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(tmp_path / f"t{i}.JPG", format="JPEG")
    with pytest.raises(InputMissingError, match=r"generator reads no file there.*lower case.*\.JPG to \.jpg"):
        preflight.check_inputs(draem(str(tmp_path)))


def test_the_record_counts_the_generators_own_list(tmp_path):
    for name in ("a.jpg", "b.png", "sub/c.jpeg", "skip.JPG"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16)).save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    built = build.build_model(draem(str(tmp_path)), seed=0)
    assert built.facts["anomaly_source"] == f"dir:{tmp_path} (3 images)"  # skip.JPG is not read by anomalib
    assert len(built.module.augmenter.anomaly_source_paths) == 3
