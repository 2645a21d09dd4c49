"""Datasets: check a root before training, and build anomalib datamodules with a held-out split.

The validation split always comes from the normal TRAINING images (anomalib's `from_train`), so
thresholds and EfficientAD's map normalisation never see a test image.
"""
from __future__ import annotations

import logging
from pathlib import Path

from typing import Any

from vadbench.config import DatasetSpec, RunSpec
from vadbench.errors import DatasetError

log = logging.getLogger(__name__)



FIX_HINT = {
    "demo": "run `vadbench demo-data` (or `make demo-data`) to build it",
    "mvtec_ad": "download MVTec AD and unpack it so that <root>/<category>/train/good exists",
}


def check_category(dataset: DatasetSpec, category: str) -> Path:
    """Raise DatasetError unless the category folder has the MVTec-like layout; return it."""
    root = Path(dataset.root)
    fix = FIX_HINT.get(dataset.kind, "")
    if not root.is_dir():
        raise DatasetError(f"dataset '{dataset.name}': root {root} does not exist; {fix}")
    folder = root / category
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"dataset '{dataset.name}': no category '{category}' in {root} (found: {found}); {fix}")
    for sub in ("train/good", "test/good"):
        if not (folder / sub).is_dir():
            raise DatasetError(f"dataset '{dataset.name}': {folder / sub} is missing: not an MVTec AD layout; {fix}")
    return folder


def build_datamodule(run: RunSpec, train_batch_size: int) -> Any:
    """anomalib's MVTecAD datamodule on the run's category, validation held out from train."""
    from anomalib.data import MVTecAD

    check_category(run.dataset, run.category)
    return MVTecAD(
        root=run.dataset.root,
        category=run.category,
        train_batch_size=train_batch_size,
        eval_batch_size=run.evaluation.eval_batch_size,
        num_workers=run.evaluation.num_workers,
        val_split_mode="from_train",
        val_split_ratio=run.evaluation.val_ratio,
        seed=run.seed,
    )


def split_counts(datamodule: Any) -> dict[str, int]:
    """Image counts of the train / held-out / test subsets after setup."""
    test_labels = datamodule.test_data.samples["label_index"]
    return {
        "train_images": len(datamodule.train_data),
        "val_images": len(datamodule.val_data),
        "test_images_good": int((test_labels == 0).sum()),
        "test_images_defect": int((test_labels == 1).sum()),
    }
