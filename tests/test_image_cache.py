"""The decoded, resized image cache: the same items as anomalib's own dataset code (up to uint8 rounding), built
once per image size, invalidated by a changed file, usable read-only, skipped for random augmentations."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.models import Padim
from PIL import Image

import replicas
from vadbench.config import DatasetSpec, EvaluationSpec, ModelSpec, RunSpec, TrainSpec
from vadbench.data import cache, datamodules

ROUNDING = 0.5 / 255 + 1e-6  # the cache keeps images as uint8


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory) -> Path:
    """MVTec AD's toothbrush at its real counts, as 96-px PNGs (resized to 64 px by the model's pre-processor)."""
    return replicas.build_mvtec_like(tmp_path_factory.mktemp("mvtec"), {"toothbrush": (60, 12, 30)}, size=96)


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(cache.IMAGE_CACHE_ENV, str(tmp_path / "images"))
    return tmp_path / "images"


def datamodule(root: Path, kind: str = "mvtec_ad", category: str = "toothbrush", image_cache: bool = True):
    model = ModelSpec(name="m", kind="padim", image_size=64, train=TrainSpec(max_epochs=1, batch_size=4))
    ds = DatasetSpec(name=kind, kind=kind, categories=[category], root=str(root))
    run = RunSpec("t", "f", model, ds, category, 0, "cpu", EvaluationSpec(eval_batch_size=5, image_cache=image_cache))
    return datamodules.build_datamodule(run, 4)


def transform(size: int = 64):
    return Padim.configure_pre_processor(image_size=(size, size)).transform


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.npy"))


def test_cached_items_are_anomalibs_items(mvtec, folder):
    module = datamodule(mvtec)
    facts = cache.warm(module, transform())
    assert facts["image_cache_images"] == facts["image_cache_decoded"] == 102 == len(files(folder))
    for name in cache.SUBSETS:
        subset = getattr(module, f"{name}_data")
        view = cache.cached(subset)
        assert isinstance(view, cache.CachedDataset) and len(view) == len(subset)
        for i in range(len(subset)):
            ours, theirs = view[i], subset[i]  # anomalib's own __getitem__: decode, Resize
            assert ours.image.shape == theirs.image.shape == (3, 64, 64)
            assert (ours.image - theirs.image).abs().max().item() <= ROUNDING
            assert torch.equal(ours.gt_mask, theirs.gt_mask.bool()) and int(ours.gt_label) == int(theirs.gt_label)
            assert (ours.image_path, ours.mask_path) == (theirs.image_path, theirs.mask_path)
    assert any(view[i].gt_mask.any() for i in range(len(view)))  # defect masks survived, resized as anomalib does
    again = cache.warm(datamodule(mvtec), transform())
    assert (again["image_cache_images"], again["image_cache_decoded"]) == (102, 0)


def test_dataloaders_read_the_cache_and_batch_like_anomalib(mvtec, folder):
    module = datamodule(mvtec)
    cache.warm(module, transform())
    loader = module.test_dataloader()
    assert isinstance(loader.dataset, cache.CachedDataset) and loader.batch_size == 5
    ours = next(iter(loader))
    theirs = module.test_data.collate_fn([module.test_data[i] for i in range(5)])
    assert type(ours) is type(theirs) and ours.image.shape == theirs.image.shape == (5, 3, 64, 64)
    assert (ours.image - theirs.image).abs().max().item() <= ROUNDING
    assert torch.equal(ours.gt_mask, theirs.gt_mask) and torch.equal(ours.gt_label, theirs.gt_label)
    uncached = datamodule(mvtec, image_cache=False)
    uncached.setup("fit")
    assert uncached.test_dataloader().dataset is uncached.test_data


def test_a_changed_file_or_another_size_is_a_miss(mvtec, folder, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(mvtec, root)
    cache.warm(datamodule(root), transform())
    changed = sorted((root / "toothbrush/test/crack").glob("*.png"))[0]
    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(changed)
    module = datamodule(root)
    assert cache.warm(module, transform())["image_cache_decoded"] == 1
    view = cache.cached(module.test_data)
    item = view[list(module.test_data.samples.image_path).index(str(changed))]
    assert item.image.min().item() == pytest.approx(200 / 255)
    assert cache.warm(datamodule(root), transform(32))["image_cache_decoded"] == 102


def test_a_cut_short_cache_file_is_decoded_again(mvtec, folder):
    module = datamodule(mvtec)
    cache.warm(module, transform())
    victim = files(folder)[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert cache.warm(datamodule(mvtec), transform())["image_cache_decoded"] == 1
    assert np.load(victim).shape == (64, 64, 4)


def test_an_unwritable_cache_folder_warns_once_and_still_serves(mvtec, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.IMAGE_CACHE_ENV, str(blocker / "images"))
    module = datamodule(mvtec)
    with caplog.at_level(logging.WARNING, logger="vadbench.data.cache"):
        cache.warm(module, transform())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be written" in warnings[0] and cache.IMAGE_CACHE_ENV in warnings[0]
    item, theirs = cache.cached(module.val_data)[0], module.val_data[0]  # decoded each time, as anomalib does
    assert (item.image - theirs.image).abs().max().item() <= ROUNDING


def test_random_augmentations_are_not_cached(mvtec, folder):
    from torchvision.transforms.v2 import Compose, RandomHorizontalFlip, Resize

    module = datamodule(mvtec)
    module.setup("fit")
    module.train_data.augmentations = Compose([RandomHorizontalFlip(), Resize((64, 64))])
    assert cache.cached(module.train_data) is module.train_data
    assert cache.resize_settings(Resize((64, 64)))["size"] == [64, 64] and cache.resize_settings(None) == {}


def test_a_dataset_without_masks_keeps_none(tmp_path, folder):
    root = replicas.build_folder(tmp_path / "folder", masks=False)
    module = datamodule(root, kind="folder", category="widget")
    cache.warm(module, transform())
    view = cache.cached(module.test_data)
    assert all(view[i].gt_mask is None and module.test_data[i].gt_mask is None for i in range(len(view)))
    assert sorted(int(view[i].gt_label) for i in range(len(view))) == sorted(module.test_data.samples.label_index)


@pytest.mark.perf
def test_reading_the_cache_is_much_cheaper_than_decoding(tmp_path, folder):
    """512-px PNGs resized to 64 px: decoding and resizing cost several times a cached read (measured: ~50x at 1024 px)."""
    import time

    root = replicas.build_mvtec_like(tmp_path / "big", {"toothbrush": (60, 12, 30)}, size=512)
    module = datamodule(root)
    cache.warm(module, transform())
    subset, view = module.test_data, cache.cached(module.test_data)

    def seconds(dataset) -> float:
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        return time.perf_counter() - start

    assert seconds(subset) > 3 * seconds(view)
