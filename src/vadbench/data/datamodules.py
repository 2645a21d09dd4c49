"""Datasets: check a root before training, and build anomalib datamodules with a held-out split.

The validation split comes from the normal TRAINING images (anomalib's `from_train`), so thresholds
and EfficientAD's map normalisation never see a test image; `evaluation.val_source: test` selects
anomalib's default (validation = test set) for comparison with studies that used it, and is recorded.
`train_ratio` then trains on a seeded subset of the remaining normal training images.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadbench.config import MIN_TRAIN_IMAGES, DatasetSpec, RunSpec
from vadbench.data import cache
from vadbench.data import checks as layouts
from vadbench.data.images import images_in
from vadbench.data.registry import DATASET_KINDS, info
from vadbench.errors import DatasetError

log = logging.getLogger(__name__)

FOLDER_TEST_RATIO = 0.2  # share of good/ held out as normal test images when a folder has no test_good/
#: Our val_source -> anomalib's val_split_mode (test_half: anomalib's label-aware, seeded split of the test set).
VAL_SPLIT_MODES = {"train": "from_train", "test": "same_as_test", "test_half": "from_test"}
FIX_HINT = {kind: info(kind).unpack for kind in DATASET_KINDS}


def check_category(dataset: DatasetSpec, category: str) -> Path:
    """Raise DatasetError unless the category is present and valid; return its folder."""
    validate_category(dataset, category)
    return Path(dataset.root) / category


def validate_category(dataset: DatasetSpec, category: str) -> layouts.CategoryCheck | None:
    """Validate one category, raising DatasetError on the first problem; the check (None for the demo).

    Real datasets are fully validated (layout, masks, counts, readability); the demo, built by our
    own code, is checked for its folders only.
    """
    root = Path(dataset.root)
    if not root.is_dir():
        raise DatasetError(f"dataset '{dataset.name}': root {root} does not exist; {FIX_HINT[dataset.kind]} "
                           f"(`vadbench data where {dataset.kind}`)")
    if dataset.kind != "demo":
        check = layouts.check_category(dataset.kind, root, category)
        if check.errors:
            more = f" (and {len(check.errors) - 1} more: `vadbench data check {dataset.kind} --root {root}`)" \
                if len(check.errors) > 1 else ""
            raise DatasetError(f"dataset '{dataset.name}' ({dataset.kind}) category '{category}': {check.errors[0]}{more}")
        return check
    wrong = layouts.diagnose_root(info("demo"), root, category)
    if wrong:
        raise DatasetError(f"dataset '{dataset.name}': {wrong}")
    folder = root / category
    for sub in ("train/good", "test/good"):
        if not (folder / sub).is_dir():
            raise DatasetError(f"dataset '{dataset.name}': {folder / sub} is missing: not an MVTec AD layout; "
                               f"{FIX_HINT['demo']}")
    check = layouts.check_demo_category(root, category)
    if check.errors:
        more = f" (and {len(check.errors) - 1} more: `vadbench data check demo --root {root}`)" \
            if len(check.errors) > 1 else ""
        raise DatasetError(f"dataset '{dataset.name}' category '{category}': {check.errors[0]}{more}")
    return None


# ---- split planning (the same arithmetic as anomalib's random_split, so preflight can check it) -------

def _split_sizes(n: int, ratio: float) -> tuple[int, int]:
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
               check: layouts.CategoryCheck | None = None) -> SplitPlan:
    """The train / held-out counts a run of this category will get; DatasetError when the split leaves no training image.

    check: the category's validation result (None: count the demo's train/good folder).
    """
    if check is not None and check.counts is not None:
        n = check.counts[0]
        if dataset.kind == "folder" and check.counts[1] == 0:
            n = _split_sizes(n, FOLDER_TEST_RATIO)[0]
    else:
        n = len(images_in(Path(dataset.root) / category / "train" / "good"))
    kept, val = _split_sizes(n, val_ratio) if val_source == "train" else (n, 0)  # test sources hold out no train image
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


def _test_count(check: layouts.CategoryCheck | None) -> int | None:
    """Test images of a checked category (good + defect), None without counts."""
    if check is None or check.counts is None:
        return None
    return check.counts[1] + check.counts[2]


def _validation_from_test(check: layouts.CategoryCheck, val_source: str) -> tuple[int, int]:
    """(validation, tested) images when validation comes from the test set: all of it (`test`, tested too), or
    anomalib's label-aware half (`test_half`: per label, the floor half is validation, the rest tested)."""
    good, defect = check.counts[1], check.counts[2]
    if val_source == "test":
        return good + defect, good + defect
    tested = _split_sizes(good, 0.5)[0] + _split_sizes(defect, 0.5)[0]
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


# ---- datamodules ----------------------------------------------------------------------------------

class _Undersampling:
    """Mixin for an anomalib datamodule: after the validation split, keep a seeded train subset."""

    train_ratio: float = 1.0
    train_available: int = 0

    def _create_val_split(self) -> None:
        super()._create_val_split()  # type: ignore[misc]
        self.train_available = len(self.train_data)
        keep = undersampled_count(self.train_available, self.train_ratio)
        if keep == 0:
            raise DatasetError(f"train_ratio {self.train_ratio} of {self.train_available} normal images keeps none; "
                               "raise the dataset's train_ratio")
        if keep < self.train_available:
            import numpy as np

            order = np.random.default_rng(self.seed).permutation(self.train_available)
            self.train_data = self.train_data.subsample(sorted(order[:keep].tolist()))


class _Loading:
    """Mixin for an anomalib datamodule: its dataloaders read through the image cache (vadbench.data.cache) when
    `image_cache` is on, and pin host memory for a CUDA device; otherwise anomalib's own dataloaders."""

    image_cache: bool = False
    pin_memory: bool = False

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(dataset=cache.cached(dataset) if self.image_cache else dataset, shuffle=shuffle,
                          batch_size=batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          collate_fn=self.external_collate_fn or dataset.collate_fn)

    def train_dataloader(self) -> Any:
        return self._loader(self.train_data, self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_data, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader(self.test_data, self.eval_batch_size, shuffle=False)


def _undersampling(cls: type) -> type:
    """`cls` with the undersampling and loading mixins (same name, for anomalib's logs)."""
    return type(cls.__name__, (_Undersampling, _Loading, cls), {})


def build_datamodule(run: RunSpec, train_batch_size: int, pin_memory: bool = False) -> Any:
    """The anomalib datamodule of the run's dataset and category, with the run's split and loading settings.

    pin_memory: page-locked batches (for a CUDA device)."""
    check_category(run.dataset, run.category)
    common = {
        "train_batch_size": train_batch_size,
        "eval_batch_size": run.evaluation.eval_batch_size,
        "num_workers": run.evaluation.num_workers,
        "val_split_mode": VAL_SPLIT_MODES[run.val_source],
        "val_split_ratio": 0.5 if run.val_source == "test_half" else run.evaluation.val_ratio,
        "seed": run.seed,
    }
    cls, kwargs = _datamodule_class(run.dataset, run.category)
    module = _undersampling(cls)(**kwargs, **common)
    module.train_ratio = run.dataset.train_ratio
    module.image_cache, module.pin_memory = run.evaluation.image_cache, pin_memory
    return module


def _datamodule_class(dataset: DatasetSpec, category: str) -> tuple[type, dict[str, Any]]:
    """The anomalib datamodule class for a dataset kind and its own arguments."""
    root = Path(dataset.root)
    if dataset.kind == "visa":
        from anomalib.data import Visa

        prepare_visa(root)
        return Visa, {"root": root, "category": category}
    if dataset.kind == "wfdd":
        from vadbench.data.wfdd import Wfdd

        return Wfdd, {"root": root, "category": category}
    if dataset.kind == "folder":
        from anomalib.data import Folder

        folder = root / category
        return Folder, {
            "name": category, "root": folder, "normal_dir": "good", "abnormal_dir": "defect",
            "mask_dir": "mask" if (folder / "mask").is_dir() else None,
            "normal_test_dir": "test_good" if images_in(folder / "test_good") else None,
            "test_split_mode": "from_dir", "test_split_ratio": FOLDER_TEST_RATIO,
        }
    from anomalib.data import MVTecAD

    return MVTecAD, {"root": root, "category": category}


def prepare_visa(root: Path) -> None:
    """Convert raw VisA to anomalib's 1cls split under <root>/visa_pytorch, never downloading.

    anomalib's `Visa.prepare_data` downloads when `<root>/<category>` is missing; we convert only after
    finding split_csv/1cls.csv and the raw folder of every category it lists, and skip when each of
    those categories is converted already.
    """
    from anomalib.data import Visa

    split_csv = root / layouts.VISA_SPLIT_CSV
    if not split_csv.is_file() and (root / layouts.VISA_CONVERTED).is_dir():
        return  # an already-converted upload (only visa_pytorch/): nothing to convert
    if not split_csv.is_file():
        raise DatasetError(f"VisA at {root}: {split_csv} is missing; {info('visa').unpack}")
    listed = sorted({row["object"] for row in layouts.read_split_csv(split_csv)})
    if listed and all((root / layouts.VISA_CONVERTED / c).is_dir() for c in listed):
        return
    for category in listed:
        if not (root / category / "Data" / "Images").is_dir():
            raise DatasetError(f"VisA at {root}: {root / category / 'Data/Images'} is missing, cannot convert the "
                               f"1cls split; {info('visa').unpack}")
    with _exclusive(root / ".vadbench-visa-convert.lock"):  # parallel runs of other categories wait here
        if all((root / layouts.VISA_CONVERTED / c).is_dir() for c in listed):
            return
        log.info("converting VisA at %s to the 1cls split in %s", root, root / layouts.VISA_CONVERTED)
        Visa(root=root, category=listed[0]).apply_cls1_split()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory file lock (POSIX); without fcntl (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
