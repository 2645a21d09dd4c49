"""Checks decode and params ranges hold: a truncated JPEG and a non-ASCII path are refused before training,
naming the file and the fix; decode results are cached per file; image size, training images and YAML
exponents are checked up front."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from replicas import build_wfdd
from stand_in import make_project
from vadbench import config
from vadbench.data import checks, images
from vadbench.errors import ConfigError, DatasetError
from vadbench.launch import runner


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vadbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def truncate_a_jpeg(root: Path) -> Path:
    """Replace one training image by a real JPEG cut short, as an interrupted copy leaves it."""
    path = root / "grey_cloth/train/good/003.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(path) as im:
        assert im.size == (24, 24)  # the header still reads: a header check passes it
    return path


def test_truncated_jpeg_is_named_by_data_check_and_the_pre_run_check(tmp_path):
    """Finding 4: a truncated JPEG passed `data check` and failed the run while scoring, naming no file."""
    root = build_wfdd(tmp_path / "wfdd")
    bad = truncate_a_jpeg(root)
    done = cli(tmp_path, "data", "check", "wfdd", "--root", str(root))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("vadbench: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "truncated" in errors[0]
    spec = config.DatasetSpec(name="w", kind="wfdd", categories=["grey_cloth"], root=str(root))
    with pytest.raises(DatasetError, match=rf"1 unreadable image\(s\) .*: {bad} \(OSError: image file is truncated"):
        checks.require_category(spec, "grey_cloth")


def test_every_bad_file_is_named(tmp_path):
    root = build_wfdd(tmp_path / "wfdd")
    bad = [root / "grey_cloth/train/good" / f"00{i}.jpg" for i in range(5)]
    for path in bad:
        path.write_bytes(path.read_bytes()[:200])
    problems = checks.check_dataset("wfdd", root, ["grey_cloth"]).problems
    assert problems == ["grey_cloth: 5 unreadable image(s) (not a valid image file; re-copy them): "
                        + ", ".join(f"{p} ({images.decode(p).error})" for p in bad)]


def test_decode_results_are_cached_per_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VADBENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = build_wfdd(tmp_path / "wfdd")
    assert checks.check_dataset("wfdd", root, ["grey_cloth"]).ok
    assert len(list((tmp_path / "cache/image-checks").glob("*.json"))) == 1
    decoded = []
    real = images.decode
    monkeypatch.setattr(images, "decode", lambda path: decoded.append(path) or real(path))
    assert checks.check_dataset("wfdd", root, ["grey_cloth"]).ok
    assert decoded == []  # nothing decoded twice
    changed = truncate_a_jpeg(root)
    os.utime(changed, ns=(1, 1))  # a new size and mtime: decoded again
    assert not checks.check_dataset("wfdd", root, ["grey_cloth"]).ok
    assert decoded == [changed]


def test_non_ascii_paths_are_refused_up_front_like_anomalib_does(tmp_path):
    """Finding 5: a non-ASCII path passed `data check`, then anomalib refused it once the run had started."""
    from anomalib.data.utils.path import validate_path

    root = build_wfdd(tmp_path / "catégorie été" / "wfdd")
    link = tmp_path / "ascii_link"
    link.symlink_to(root)
    plain = build_wfdd(tmp_path / "plain")

    def anomalib_takes(path: Path) -> bool:
        try:  # the root as anomalib's datasets validate it, then an image path built from it, as its validators do
            validate_path(next(validate_path(path).rglob("*.jpg")))
            return True
        except ValueError:
            return False

    for path in (root, link, plain):
        assert checks.check_dataset("wfdd", path, ["grey_cloth"]).ok == anomalib_takes(path), path
    for given in (root, link):  # anomalib resolves the symlink, and so does the check
        problems = checks.check_dataset("wfdd", given, ["grey_cloth"]).problems
        assert len(problems) == 1 and "non-ASCII" in problems[0] and "move or rename the dataset" in problems[0]
    done = cli(tmp_path, "data", "check", "wfdd", "--root", str(root), "--categories", "grey_cloth")
    assert done.returncode == 2 and "anomalib refuses" in done.stderr.splitlines()[-1]
    moved = root.rename(tmp_path / "wfdd_ascii")  # the fix the message names
    assert checks.check_dataset("wfdd", moved, ["grey_cloth"]).ok
    (moved / "grey_cloth/train/good/été.jpg").write_bytes((moved / "grey_cloth/train/good/000.jpg").read_bytes())
    problems = checks.check_dataset("wfdd", moved, ["grey_cloth"]).problems
    assert problems == [f"grey_cloth: 1 file(s) whose names anomalib refuses (non-ASCII characters): rename them "
                        f"to ASCII: {moved / 'grey_cloth/train/good/été.jpg'}"]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    return make_project(tmp_path, monkeypatch, "pass")


def edit_model(project: Path, **fields) -> None:
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["models"][0].update(fields)
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))


@pytest.mark.parametrize("size", [0, -5, 16])
def test_image_size_below_the_model_minimum_is_refused(project, size):
    """Finding 7: image_size 0 or -5 was accepted by params and --dry-run; every run then failed."""
    edit_model(project, image_size=size)
    with pytest.raises(ConfigError, match=rf"image_size: {size} is below draem's minimum of 32 px"):
        config.load_experiment("exp.yaml")
    done = cli(project, "run", "exp.yaml", "--dry-run")
    assert done.returncode == 2 and "below draem's minimum" in done.stderr.splitlines()[-1]


def test_efficientad_below_256_is_refused(project):
    edit_model(project, name="ea", kind="efficientad", image_size=128, train={"max_steps": 1, "batch_size": 1},
               params={"teacher": "random"})
    with pytest.raises(ConfigError, match="image_size: 128 is below efficientad's minimum of 256 px"):
        config.load_experiment("exp.yaml")


def test_too_few_training_images_are_refused_per_model(project):
    """Finding 9: a train_ratio leaving one training image passed and PaDiM failed every seed with NaN."""
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["datasets"][0]["train_ratio"] = 0.25  # 5 normal images: 1 held out, 4 left, 1 kept
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert runner.run_experiment("exp.yaml", "out", dry_run=True).total == 3  # DRÆM trains on one image
    edit_model(project, name="pa", kind="padim", image_size=64, train={"max_epochs": 1}, params={})
    for dry_run in (True, False):
        with pytest.raises(DatasetError, match=r"1 training image\(s\) left .* but pa \(padim\) needs at least 2"):
            runner.run_experiment("exp.yaml", "out", dry_run=dry_run)


@pytest.mark.parametrize("written, fix", [("1.0e6", "1.0e+6"), ("1e-4", "1.0e-4"), ("5E3", "5.0e+3")])
def test_yaml_exponent_read_as_text_names_the_fix(project, written, fix):
    """Finding 9: `lr: 1.0e6` is read as a string by PyYAML; the error now says how to write it."""
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["models"][0]["params"]["sspcab_lambda"] = 0.123456
    text = yaml.safe_dump(exp).replace("0.123456", written)
    (project / "exp.yaml").write_text(text)
    with pytest.raises(ConfigError, match=rf"sspcab_lambda: '{written}' is read as text by YAML.*write {re.escape(fix)}$"):
        config.load_experiment("exp.yaml")
    (project / "exp.yaml").write_text(text.replace(written, fix))
    assert config.load_experiment("exp.yaml").models[0].settings.sspcab_lambda == float(fix)
