"""WFDD (Woven Fabric Defect Detection, released with GLASS, ECCV 2024) for anomalib; it has no datamodule.

The release is MVTec-like (the GLASS authors load it with their MVTec loader):
`<cat>/train/good`, `<cat>/test/{good,<defect>}`, `<cat>/ground_truth/<defect>/`. Unlike anomalib's
MVTecAD reader, this one accepts PNG and JPEG images, and pairs each defect image with its mask by
file stem (`<name>.png` or `<name>_mask.png`) instead of by sort order; `data.checks` checks that
every defect image has one.
"""
from __future__ import annotations

from pathlib import Path

from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName, Split
from pandas import DataFrame

from vadbench.data.checks import mask_for
from vadbench.data.images import images_in


def make_samples(category_dir: Path, split: Split | str) -> DataFrame:
    """anomalib's samples table (path, split, label, image_path, mask_path, label_index) for one split."""
    split = split.value if isinstance(split, Split) else split
    rows = []
    for label_dir in sorted(p for p in (category_dir / split).iterdir() if p.is_dir()):
        normal = label_dir.name == "good"
        for image in images_in(label_dir):
            truth = category_dir / "ground_truth" / label_dir.name
            mask = "" if normal or split == "train" else str(mask_for(image, truth) or "")
            rows.append((str(category_dir), split, label_dir.name, str(image), mask,
                         int(LabelName.NORMAL if normal else LabelName.ABNORMAL)))
    samples = DataFrame(rows, columns=["path", "split", "label", "image_path", "mask_path", "label_index"])
    if samples.empty:
        raise RuntimeError(f"no image in {category_dir / split}")
    samples.attrs["task"] = "segmentation"
    return samples


class WfddDataset(AnomalibDataset):
    """One WFDD category and split."""

    def __init__(self, root: Path | str, category: str, split: Split | str, augmentations=None) -> None:
        super().__init__(augmentations=augmentations)
        self.category = category
        self.split = split
        self.samples = make_samples(Path(root) / category, split)


class Wfdd(AnomalibDataModule):
    """WFDD datamodule: train and test folders as released (never downloads)."""

    def __init__(self, root: Path | str, category: str, test_split_mode: str = "from_dir", **kwargs) -> None:
        super().__init__(test_split_mode=test_split_mode, **kwargs)
        self.root = Path(root)
        self.category = category

    def _setup(self, _stage: str | None = None) -> None:
        self.train_data = WfddDataset(self.root, self.category, Split.TRAIN)
        self.test_data = WfddDataset(self.root, self.category, Split.TEST)
