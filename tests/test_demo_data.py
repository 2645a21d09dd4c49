"""Tests for the offline demo data: layout, exact masks, split hygiene, determinism, caching."""
from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vadbench.data.demo import (
    DEFECT_TYPES,
    DEMO_CATEGORIES,
    TRAIN_ROWS,
    DemoSpec,
    apply_defect,
    available_photos,
    build_anomaly_source,
    build_demo_dataset,
    build_penalty_images,
    clean_crop,
    content_hash,
    defect_counts,
    load_photo,
    read_manifest,
)

SMALL = DemoSpec(crop=64, n_train=6, n_test_good=3, n_test_defect=3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "data"
    return root, build_demo_dataset(root, SMALL)


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _all_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _overlap(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_layout_is_mvtec_like(demo):
    root, manifest = demo
    expected = {"manifest.json"}
    for cat in DEMO_CATEGORIES:
        expected |= {f"{cat}/train/good/{i:03d}.png" for i in range(SMALL.n_train)}
        expected |= {f"{cat}/test/good/{i:03d}.png" for i in range(SMALL.n_test_good)}
        for kind, n in defect_counts(SMALL.n_test_defect).items():
            expected |= {f"{cat}/test/{kind}/{i:03d}.png" for i in range(n)}
            expected |= {f"{cat}/ground_truth/{kind}/{i:03d}_mask.png" for i in range(n)}
    assert set(_all_files(root)) == expected
    assert manifest["counts"]["brick"] == {
        "test/blob": 1, "test/colour": 1, "test/good": 3, "test/scratch": 1, "train/good": 6,
    }
    assert json.loads((root / "manifest.json").read_text())["content_sha256"] == content_hash(root)


def test_defect_counts_split_evenly():
    assert defect_counts(15) == {"scratch": 5, "blob": 5, "colour": 5}
    assert defect_counts(4) == {"scratch": 2, "blob": 1, "colour": 1}


def test_images_match_regenerated_clean_crops_and_masks_are_exact(demo):
    root, manifest = demo
    for cat, records in manifest["crops"].items():
        for rel, rec in records.items():
            img = _read(root / cat / rel)
            clean = clean_crop(cat, rec["box"], rec["rot90"], rec["flip"])
            assert img.shape == (SMALL.crop, SMALL.crop, 3) and img.dtype == np.uint8
            split, kind, name = rel.split("/")
            if kind == "good":
                assert np.array_equal(img, clean), rel
                continue
            mask = _read(root / cat / "ground_truth" / kind / name.replace(".png", "_mask.png"))
            assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}, rel
            # the mask is exactly the set of changed pixels
            assert np.array_equal(mask > 0, (img != clean).any(axis=2)), rel
            assert rec["mask_frac"] == pytest.approx((mask > 0).mean(), abs=1e-4)


def test_good_images_have_no_masks(demo):
    root, _ = demo
    for cat in DEMO_CATEGORIES:
        assert sorted(p.name for p in (root / cat / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)


def test_train_and_test_crops_come_from_disjoint_regions(demo):
    _, manifest = demo
    for _cat, records in manifest["crops"].items():
        train = [r["box"] for f, r in records.items() if f.startswith("train/")]
        test = [r["box"] for f, r in records.items() if f.startswith("test/")]
        assert len(train) == SMALL.n_train and len(test) == SMALL.n_test_good + SMALL.n_test_defect
        assert all(b[2] <= TRAIN_ROWS for b in train) and all(b[0] >= TRAIN_ROWS for b in test)
        assert not any(_overlap(a, b) for a, b in product(train, test))
        assert all(b[2] - b[0] == b[3] - b[1] == SMALL.crop for b in train + test)


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_apply_defect_changes_only_masked_pixels(kind):
    clean = clean_crop("gravel", [320, 0, 448, 128], 0, False)
    donor = clean_crop("grass", [0, 0, 128, 128], 0, False)
    for seed in range(8):
        out, mask = apply_defect(clean, kind, np.random.default_rng(seed), donor)
        assert out.shape == clean.shape and mask.shape == clean.shape[:2]
        assert np.array_equal(out[mask == 0], clean[mask == 0])
        assert (out[mask > 0] != clean[mask > 0]).any(axis=1).all()
        frac = (mask > 0).mean()
        if kind == "scratch":
            ys, xs = np.nonzero(mask)
            assert 0.003 < frac < 0.05 and np.hypot(np.ptp(ys), np.ptp(xs)) > 0.3 * 128
        else:
            assert 0.04 < frac < 0.22, (kind, seed, frac)


def test_apply_defect_rejects_bad_input():
    clean = clean_crop("brick", [0, 0, 64, 64], 0, False)
    with pytest.raises(ValueError):
        apply_defect(clean, "blob", np.random.default_rng(0))
    with pytest.raises(ValueError):
        apply_defect(clean, "dent", np.random.default_rng(0))


def test_build_is_deterministic(demo, tmp_path):
    root, manifest = demo
    again = build_demo_dataset(tmp_path / "other", SMALL)
    assert again["content_sha256"] == manifest["content_sha256"] == content_hash(tmp_path / "other")
    assert again["crops"] == manifest["crops"]


def test_build_is_idempotent_and_rebuilds_on_spec_change(tmp_path):
    root, spec = tmp_path / "d", DemoSpec(categories=("grass",), crop=32, n_train=2, n_test_good=1, n_test_defect=3)
    first = build_demo_dataset(root, spec)
    before = _all_files(root)
    assert build_demo_dataset(root, spec) == first
    assert _all_files(root) == before  # nothing rewritten

    changed = DemoSpec(categories=("grass",), crop=32, n_train=3, n_test_good=1, n_test_defect=3)
    second = build_demo_dataset(root, changed)
    assert second["counts"]["grass"]["train/good"] == 3
    assert second["content_sha256"] == content_hash(root) != first["content_sha256"]
    assert (root / "grass/train/good/002.png").is_file()

    (root / "grass/train/good/002.png").unlink()  # damaged build: hash no longer matches, so rebuild
    assert build_demo_dataset(root, changed)["content_sha256"] == second["content_sha256"]
    assert (root / "grass/train/good/002.png").is_file()


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_demo_dataset(tmp_path / "mine", SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_invalid_spec_is_rejected(tmp_path):
    for bad in (DemoSpec(categories=("astronaut",)), DemoSpec(crop=256), DemoSpec(n_test_defect=0)):
        with pytest.raises(ValueError):
            build_demo_dataset(tmp_path / "x", bad)


def test_anomalib_mvtecad_reads_the_demo(demo):
    from anomalib.data import MVTecAD

    root, _ = demo
    dm = MVTecAD(root=root, category="brick", train_batch_size=2, eval_batch_size=2, num_workers=0)
    dm.setup()
    assert len(dm.train_data) == SMALL.n_train
    assert len(dm.test_data) == SMALL.n_test_good + SMALL.n_test_defect
    samples = dm.test_data.samples
    assert int(samples.label_index.sum()) == SMALL.n_test_defect
    assert samples.loc[samples.label_index == 1, "mask_path"].map(lambda p: Path(p).is_file()).all()
    item = dm.test_data[int(np.flatnonzero(samples.label_index.to_numpy())[0])]
    assert item.gt_mask is not None and bool(item.gt_mask.any())


def test_penalty_images(tmp_path):
    from torchvision.datasets import ImageFolder

    root = build_penalty_images(tmp_path / "pen", n=5, size=48, seed=1)
    files = sorted((root / "photos").glob("*.png"))
    assert [f.name for f in files] == [f"{i:03d}.png" for i in range(5)]
    assert all(Image.open(f).size == (48, 48) and Image.open(f).mode == "RGB" for f in files)
    folder = ImageFolder(root)
    assert folder.classes == ["photos"] and len(folder) == 5
    manifest = read_manifest(root)
    assert not set(manifest["sources"]) & set(DEMO_CATEGORIES)
    before = _all_files(root)
    assert build_penalty_images(root, n=5, size=48, seed=1) == root and _all_files(root) == before
    other = build_penalty_images(tmp_path / "pen2", n=5, size=48, seed=1)
    assert content_hash(other) == manifest["content_sha256"]


def test_anomaly_source(tmp_path):
    root = build_anomaly_source(tmp_path / "src", n=4, size=40)
    files = sorted(root.glob("*.png"))
    assert [f.name for f in files] == [f"{i:03d}.png" for i in range(4)]
    assert all(Image.open(f).size == (40, 40) and Image.open(f).mode == "RGB" for f in files)
    assert not set(read_manifest(root)["sources"]) & set(DEMO_CATEGORIES)
    before = _all_files(root)
    build_anomaly_source(root, n=4, size=40)
    assert _all_files(root) == before
    build_anomaly_source(root, n=3, size=40)
    assert len(list(root.glob("*.png"))) == 3


def test_skimage_photos_load_offline():
    for name in DEMO_CATEGORIES:
        assert load_photo(name).shape == (512, 512)
    assert len(available_photos()) >= 8
