"""How a run's images are split: anomalib's random_split arithmetic, the hold-out, undersampling, and the counts.

The same arithmetic as anomalib's `random_split`, so that a preflight can tell, before any training, how many
images each run will train on and hold out, and refuse a split that leaves a model too few.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadbench.config import MIN_TRAIN_IMAGES, DatasetSpec
from vadbench.data.checks import CategoryCheck
from vadbench.data.images import images_in
from vadbench.errors import DatasetError

FOLDER_TEST_RATIO = 0.2  # share of good/ held out as normal test images when a folder has no test_good/


def split_sizes(n: int, ratio: float) -> tuple[int, int]:
    """(kept, held out) sizes of anomalib's random_split(n, ratio): floors, remainder to the first subset."""
    sizes = [math.floor(n * (1 - ratio)), math.floor(n * ratio)]
    for i in range(n - sum(sizes)):
        sizes[i % 2] += 1
    return sizes[0], sizes[1]


def undersampled_count(n: int, train_ratio: float) -> int:
    """How many of n normal training images a train_ratio keeps (floor; 0 is an error upstream)."""
    return n if train_ratio >= 1.0 else math.floor(n * train_ratio + 1e-9)


@dataclass(frozen=True)
class SplitPlan:
    """Image counts a run will use, computed from the normal training images found on disk."""

    val_images: int  # images held out for thresholds / map normalisation (from train, or from test)
    available: int  # normal training images left after the hold-out (before undersampling)
    train_images: int  # after the validation hold-out and undersampling
    test_images: int | None = None  # images scored (None when the check does not count them)


def plan_split(dataset: DatasetSpec, category: str, val_ratio: float, val_source: str,
               check: CategoryCheck | None = None) -> SplitPlan:
    """The train / held-out counts a run of this category will get; DatasetError when the split leaves no training image.

    check: the category's validation result (None: count the demo's train/good folder).
    """
    if check is not None and check.counts is not None:
        n = check.counts[0]
        if dataset.kind == "folder" and check.counts[1] == 0:
            n = split_sizes(n, FOLDER_TEST_RATIO)[0]
    else:
        n = len(images_in(Path(dataset.root) / category / "train" / "good"))
    kept, val = split_sizes(n, val_ratio) if val_source == "train" else (n, 0)  # test sources hold out no train image
    test = _test_count(check)
    if val_source != "train" and test is not None:
        val, test = _validation_from_test(check, val_source)
    train = undersampled_count(kept, dataset.train_ratio)
    if train == 0 and n > 0:  # n == 0 is a layout error, reported by the check
        raise DatasetError(
            f"dataset '{dataset.name}' category '{category}': no training image left ({n} normal images, "
            f"{val} held out for validation, train_ratio {dataset.train_ratio} of {kept} keeps 0); "
            f"raise datasets[{dataset.name}].train_ratio or lower evaluation.val_ratio")
    return SplitPlan(val_images=val, available=kept, train_images=train, test_images=test)


def _test_count(check: CategoryCheck | None) -> int | None:
    """Test images of a checked category (good + defect), None without counts."""
    if check is None or check.counts is None:
        return None
    return check.counts[1] + check.counts[2]


def _validation_from_test(check: CategoryCheck, val_source: str) -> tuple[int, int]:
    """(validation, tested) images when validation comes from the test set: all of it (`test`, tested too), or
    anomalib's label-aware half (`test_half`: per label, the floor half is validation, the rest tested)."""
    good, defect = check.counts[1], check.counts[2]
    if val_source == "test":
        return good + defect, good + defect
    tested = split_sizes(good, 0.5)[0] + split_sizes(defect, 0.5)[0]
    return good + defect - tested, tested


def check_minimums(dataset: DatasetSpec, category: str, plan: SplitPlan, models: list, val_source: str) -> None:
    """DatasetError unless the split leaves each model its minimum of training images and one held-out image."""
    fix = f"raise datasets[{dataset.name}].train_ratio, lower evaluation.val_ratio, or add training images"
    where = f"dataset '{dataset.name}' category '{category}'"
    for model in models:
        needed = MIN_TRAIN_IMAGES.get(model.kind, 1)
        if plan.train_images < needed:
            raise DatasetError(f"{where}: {plan.train_images} training image(s) left after the hold-out and "
                               f"train_ratio {dataset.train_ratio}, but {model.name} ({model.kind}) needs at least "
                               f"{needed}; {fix}")
    if val_source == "train" and plan.val_images < 1:
        raise DatasetError(f"{where}: no normal training image held out for thresholds (evaluation.val_ratio "
                           f"too small for {plan.val_images + plan.available} images); raise evaluation.val_ratio")


def split_counts(datamodule: Any) -> dict[str, int]:
    """Image counts of the train / held-out / test subsets after setup."""
    test_labels = datamodule.test_data.samples["label_index"]
    return {
        "train_images_available": int(getattr(datamodule, "train_available", len(datamodule.train_data))),
        "train_images": len(datamodule.train_data),
        "val_images": len(datamodule.val_data),
        "test_images_good": int((test_labels == 0).sum()),
        "test_images_defect": int((test_labels == 1).sum()),
    }
