"""anomalib datamodules for a run: its dataset kind, held-out split, undersampling and image loading.

The validation split comes from the normal TRAINING images (anomalib's `from_train`), so thresholds
and EfficientAD's map normalisation never see a test image; `evaluation.val_source: test` selects
anomalib's default (validation = test set) for comparison with studies that used it, and is recorded.
`train_ratio` then trains on a seeded subset of the remaining normal training images.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vadbench.config import DatasetSpec, RunSpec
from vadbench.data import cache
from vadbench.data.checks import require_category
from vadbench.data.images import images_in
from vadbench.data.splits import FOLDER_TEST_RATIO, undersampled_count
from vadbench.data.visa import prepare_visa
from vadbench.errors import DatasetError

log = logging.getLogger(__name__)

#: Our val_source -> anomalib's val_split_mode (test_half: anomalib's label-aware, seeded split of the test set).
VAL_SPLIT_MODES = {"train": "from_train", "test": "same_as_test", "test_half": "from_test"}


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
    require_category(run.dataset, run.category)
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
